//! `action.run`: looks the action up, checks the parameters against its schema (the same check
//! the API made), substitutes them as whole argv elements and runs the command in its container
//! or on the host, killed at the deadline, output bounded.

use zedops_proto::defined::{substitute, RunArgs, Target};
use zedops_proto::ops::{CommandResult, ExecArgs, DEFAULT_OUTPUT_BYTES};
use zedops_proto::{ContainerRef, ErrorBody};

use super::host::run_host;
use crate::handlers::Ctx;

/// Runs the action `a` names.
pub async fn run(ctx: &Ctx, a: RunArgs) -> Result<CommandResult, ErrorBody> {
    let def = ctx.actions.get(&a.action).ok_or_else(|| {
        let names: Vec<String> = ctx.actions.all().into_iter().map(|d| d.info.name).collect();
        let has = if names.is_empty() {
            "it has none".to_owned()
        } else {
            format!("it has {}", names.join(", "))
        };
        ErrorBody::not_found(format!(
            "agent {} has no action named {:?}; {has}",
            ctx.agent, a.action
        ))
    })?;
    let values = def.info.check_params(&a.params)?;
    let deadline = def.info.deadline(a.timeout_s)?;
    let argv = substitute(&def.command, &values);
    match (def.info.target, &def.info.container) {
        (Target::Exec, Some(container)) => {
            let container = ContainerRef::new(container.as_str())
                .map_err(|e| ErrorBody::internal(e.to_string()))?;
            let t = ctx.driver.resolve(&container).await?;
            // By name only: a hex name such as `beef` must not fall back to an ID prefix of
            // another container once its own is gone.
            if t.name != container.as_str().trim_start_matches('/') {
                return Err(ErrorBody::not_found(format!(
                    "action {} runs in container {container}, which is not on agent {}",
                    def.info.name, ctx.agent
                )));
            }
            let args = ExecArgs {
                container,
                cmd: argv,
                workdir: def.workdir.clone(),
                user: def.user.clone(),
                env: def.env.clone(),
                timeout_s: Some(deadline.as_secs().try_into().unwrap_or(u32::MAX)),
            };
            Ok(ctx
                .driver
                .exec(&t, &args, deadline, DEFAULT_OUTPUT_BYTES)
                .await?)
        }
        (Target::Exec, None) => Err(ErrorBody::internal(format!(
            "action {} has no container",
            def.info.name
        ))),
        (Target::Host, _) => Ok(run_host(
            &argv,
            def.workdir.as_deref(),
            &def.env,
            deadline,
            DEFAULT_OUTPUT_BYTES,
        )
        .await),
    }
}
