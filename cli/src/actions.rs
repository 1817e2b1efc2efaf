//! `zedops actions` and `zedops run` (operator-defined actions, `docs/actions.md`), and how any
//! command's result is shown: its stdout and stderr on ours, its exit code as ours (`exec` too).

use std::collections::BTreeMap;
use std::io::Write;

use zedops_client::Client;
use zedops_proto::http::{FleetAction, RunActionRequest};
use zedops_proto::ops::CommandResult;

use crate::args::{ActionsArgs, ClientOpts, Output, RunArgs};
use crate::exit::{self, Exit};
use crate::output::{print_json, table};

pub async fn list(c: &Client, o: &ClientOpts, a: &ActionsArgs) -> anyhow::Result<()> {
    let listing = c
        .defined_actions(a.agent.as_ref().map(|n| n.as_str()))
        .await?;
    if o.output == Output::Json {
        print_json(&listing.actions);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = listing.actions.iter().map(row).collect();
    let headers = ["AGENT", "ACTION", "TARGET", "PARAMS", "ROLE", "DESCRIPTION"];
    let _ = std::io::stdout()
        .lock()
        .write_all(table(&headers, &rows).as_bytes());
    Ok(())
}

fn row(f: &FleetAction) -> Vec<String> {
    let a = &f.action;
    let target = match &a.container {
        Some(c) => format!("exec {c}"),
        None => "host".to_owned(),
    };
    let params: Vec<String> = a
        .params
        .iter()
        .map(|p| match &p.default {
            Some(d) => format!("[{}={d}]", p.name),
            None => p.name.clone(),
        })
        .collect();
    let agent = if f.online {
        f.agent.clone()
    } else {
        format!("{} (offline)", f.agent)
    };
    vec![
        agent,
        a.name.clone(),
        target,
        params.join(" "),
        a.role.as_str().to_owned(),
        a.description.clone(),
    ]
}

pub async fn run(c: &Client, o: &ClientOpts, a: &RunArgs) -> anyhow::Result<()> {
    let found = find(c, a).await?;
    let mut params = BTreeMap::new();
    for kv in &a.params {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(Exit::usage(format!("-p {kv:?}: use -p NAME=VALUE")).into());
        };
        params.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
    }
    let req = RunActionRequest {
        params,
        timeout_s: crate::args::whole_seconds(a.timeout),
    };
    let default_s = found.action.timeout_s;
    let r = c
        .run_action(&found.agent, &found.action.name, &req, default_s)
        .await?;
    finish(o, &r)
}

/// The action `a` names: on `--agent`, or the one agent of the fleet that has it.
async fn find(c: &Client, a: &RunArgs) -> anyhow::Result<FleetAction> {
    let listing = c
        .defined_actions(a.agent.as_ref().map(|n| n.as_str()))
        .await?;
    let mut matches: Vec<FleetAction> = listing
        .actions
        .into_iter()
        .filter(|f| f.action.name == a.action)
        .collect();
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => {
            let where_ = a
                .agent
                .as_ref()
                .map_or("in the fleet".to_owned(), |n| format!("on agent {n}"));
            Err(Exit::new(
                exit::NOT_FOUND,
                format!(
                    "no action named {} {where_}; `zedops actions` lists them",
                    a.action
                ),
            )
            .into())
        }
        _ => {
            let agents: Vec<String> = matches.iter().map(|f| f.agent.clone()).collect();
            Err(Exit::usage(format!(
                "action {} is on several agents ({}): choose one with --agent",
                a.action,
                agents.join(", ")
            ))
            .into())
        }
    }
}

/// Prints a command's output (or its JSON) and returns its exit code as ours: `0`, the
/// command's own code, or [`exit::TIMEOUT`] when it was killed at its deadline.
pub fn finish(o: &ClientOpts, r: &CommandResult) -> anyhow::Result<()> {
    if o.output == Output::Json {
        print_json(r);
    } else {
        let _ = std::io::stdout().lock().write_all(r.stdout.as_bytes());
        let _ = std::io::stderr().lock().write_all(r.stderr.as_bytes());
    }
    if r.truncated {
        eprintln!("zedops: output beyond the bound (64 KiB per stream) was dropped");
    }
    if r.timed_out {
        let why = format!(
            "the command was killed at its deadline after {} ms",
            r.duration_ms
        );
        return Err(Exit::new(exit::TIMEOUT, why).into());
    }
    match r.exit_code {
        Some(0) => Ok(()),
        // Already printed: carry only the exit code, as `docker exec` does.
        Some(code) => Err(Exit::new(u8::try_from(code & 0xff).unwrap_or(1), String::new()).into()),
        None => Err(Exit::new(exit::ERROR, "no exit code was reported").into()),
    }
}
