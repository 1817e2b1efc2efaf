//! Operator-defined actions (`docs/actions.md`): the fleet's, one agent's, and running one.
//! What an action takes and which role it needs come from its agent's signed status (the
//! cache); parameters are checked against that schema here, so a request out of schema is `400`
//! and never reaches the agent, which checks them again.

use std::sync::Arc;

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;
use zedops_proto::defined::{DefinedAction, RunArgs};
use zedops_proto::http::{ActionListing, EventKind, FleetAction, FleetEvent, RunActionRequest};
use zedops_proto::ops::{ActionRun, CommandResult, Op};
use zedops_proto::ErrorBody;

use crate::auth::{Caller, Role};
use crate::cache::AgentEntry;
use crate::error::{ApiError, ApiResult};
use crate::store::AuditRecord;
use crate::State;

use super::*;

pub struct ActionsApi {
    pub state: Arc<State>,
}

// Operations take their parameters as arguments (that is how poem-openapi documents them).
#[allow(clippy::too_many_arguments)]
#[OpenApi]
impl ActionsApi {
    /// List the fleet's actions
    ///
    /// Every operator-defined action every known agent advertises: its name, description,
    /// target (`exec` in a container, or `host`), parameters with their schema, the role it
    /// needs, whether the dashboard asks first (`confirm`) and whether Home Assistant has a
    /// button for it.
    #[oai(
        path = "/api/v1/actions",
        method = "get",
        tag = "Tag::Actions",
        operation_id = "list_fleet_actions"
    )]
    async fn list_fleet_actions(&self, auth: Caller) -> ApiResult<ActionListing> {
        auth.0.require(Role::Viewer)?;
        let mut agents = self.state.fleet.all();
        agents.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Json(ActionListing {
            actions: agents.iter().flat_map(actions_of).collect(),
        }))
    }

    /// List an agent's actions
    #[oai(
        path = "/api/v1/agents/:agent/actions",
        method = "get",
        tag = "Tag::Actions",
        operation_id = "list_agent_actions"
    )]
    async fn list_agent_actions(
        &self,
        auth: Caller,
        /// Agent name.
        #[oai(validator(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))]
        agent: Path<String>,
    ) -> ApiResult<ActionListing> {
        auth.0.require(Role::Viewer)?;
        let entry = known(&self.state, &agent_name(&agent)?)?;
        Ok(Json(ActionListing {
            actions: actions_of(&entry),
        }))
    }

    /// Run an action
    ///
    /// Runs the agent's action `action` with `params`, checked against its schema first (`400`
    /// naming the parameter). Needs the role the action names (`operator` unless `admin`). The
    /// answer is `200` with the command's exit code, stdout and stderr (64 KiB each at most,
    /// `truncated` beyond) whatever the exit code; at its deadline the command is killed and
    /// `timed_out` is true. Audited with its parameters.
    #[oai(
        path = "/api/v1/agents/:agent/actions/:action",
        method = "post",
        tag = "Tag::Actions",
        operation_id = "run_action"
    )]
    async fn run_action(
        &self,
        auth: Caller,
        /// Agent name.
        #[oai(validator(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))]
        agent: Path<String>,
        /// Action name.
        #[oai(validator(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))]
        action: Path<String>,
        body: Json<RunActionRequest>,
    ) -> ApiResult<CommandResult> {
        auth.0.require(Role::Operator)?;
        let name = agent_name(&agent)?;
        let def = advertised(&known(&self.state, &name)?, &action)?;
        // Never below operator, whatever an agent advertises.
        auth.0.require(def.role.max(Role::Operator))?;
        let req = body.0;
        def.check_params(&req.params).map_err(ErrorBody::from)?;
        let run_for = def.deadline(req.timeout_s)?;
        let args = RunArgs {
            action: def.name.clone(),
            params: req.params,
            timeout_s: req.timeout_s,
        };
        let _slot = self.state.requests.take(&auth.0)?;
        let result = self
            .state
            .requester
            .call::<ActionRun>(name.as_str(), &args, run_for + COMMAND_SLACK)
            .await;
        // On the event stream too (`zedops events`, the dashboard): ok when it ran and exited 0.
        let _ = self.state.events.send(FleetEvent {
            container: def.container.clone(),
            action: Some(format!("run {}", def.name)),
            ok: Some(matches!(&result, Ok(r) if r.exit_code == Some(0))),
            error: result.as_ref().err().cloned(),
            ..FleetEvent::new(EventKind::Action, name.as_str())
        });
        self.state
            .audit(
                AuditRecord::http(auth.0.name.clone(), ActionRun::NAME)
                    .agent(Some(name.to_string()))
                    .container(def.container.clone())
                    .outcome(command_outcome(&result))
                    .message(Some(format!(
                        "{} {}",
                        def.name,
                        serde_json::to_string(&args.params).unwrap_or_default()
                    ))),
            )
            .await;
        Ok(Json(result?))
    }
}

/// The actions an agent's status advertises.
fn actions_of(entry: &AgentEntry) -> Vec<FleetAction> {
    let online = entry.online();
    entry
        .status
        .iter()
        .flat_map(|s| &s.actions)
        .map(|a| FleetAction {
            agent: entry.name.clone(),
            online,
            action: a.clone(),
        })
        .collect()
}

/// The advertised action `name` of the agent; `404` naming those it has.
fn advertised(entry: &AgentEntry, name: &str) -> Result<DefinedAction, ApiError> {
    let all = actions_of(entry);
    if let Some(a) = all.iter().find(|a| a.action.name == name) {
        return Ok(a.action.clone());
    }
    let names: Vec<&str> = all.iter().map(|a| a.action.name.as_str()).collect();
    let has = if names.is_empty() {
        "it advertises none".to_owned()
    } else {
        format!("it has {}", names.join(", "))
    };
    Err(ErrorBody::not_found(format!(
        "agent {} has no action named {name:?}; {has}",
        entry.name
    ))
    .into())
}
