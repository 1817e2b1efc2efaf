//! Containers: lists (cached and live), search, inspect, actions, logs (whole or followed).

use std::sync::Arc;

use chrono::Utc;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;
use zedops_proto::ops::{
    ActionResult, CommandResult, ContainerArgs, ContainerExec, ContainerInspect, ContainerLogs,
    ContainersList, ExecArgs, ListArgs, Logs, LogsArgs, Op,
};
use zedops_proto::{Action, ActionRequest, Container, ContainerDetail};

use zedops_proto::stream::LogEvent;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::store::AuditRecord;
use crate::State;

use super::schemas::*;
use super::streamed::{self, Streamed};
use super::*;

pub struct ContainersApi {
    pub state: Arc<State>,
}

// Operations take their parameters as arguments (that is how poem-openapi documents them).
#[allow(clippy::too_many_arguments)]
#[OpenApi]
impl ContainersApi {
    /// List an agent's containers
    ///
    /// From the cache (the agent's latest snapshot) unless `live=true`, which asks the agent.
    /// `all=false` leaves out containers that are not running.
    #[oai(
        path = "/api/v1/agents/:agent/containers",
        method = "get",
        tag = "Tag::Containers",
        operation_id = "list_containers"
    )]
    async fn list_containers(
        &self,
        auth: Caller,
        /// Agent name.
        #[oai(validator(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))]
        agent: Path<String>,
        /// Ask the agent now instead of using the cache.
        live: Query<Option<bool>>,
        /// Include stopped containers (default true).
        all: Query<Option<bool>>,
        /// Deadline of a live request in seconds (default 10, at most 300).
        #[oai(validator(minimum(value = "1"), maximum(value = "300")))]
        timeout_s: Query<Option<u32>>,
    ) -> ApiResult<ContainerListing> {
        auth.0.require(Role::Viewer)?;
        let name = agent_name(&agent)?;
        let all = all.0.unwrap_or(true);
        let entry = known(&self.state, &name)?;
        let keep = |c: &Container| all || c.state.is_active();
        if !live.0.unwrap_or(false) {
            if let Some(snap) = &entry.snapshot {
                return Ok(Json(ContainerListing {
                    agent: name.to_string(),
                    agent_online: entry.online(),
                    live: false,
                    taken_at: Some(snap.taken_at),
                    containers: snap
                        .containers
                        .iter()
                        .filter(|c| keep(c))
                        .cloned()
                        .collect(),
                }));
            }
        }
        let d = deadline(timeout_s.0, READ_TIMEOUT_S)?;
        let list = self
            .state
            .ask::<ContainersList>(&auth.0, name.as_str(), &ListArgs { all }, d)
            .await?;
        Ok(Json(ContainerListing {
            agent: name.to_string(),
            agent_online: true,
            live: true,
            taken_at: None,
            containers: list.containers,
        }))
    }

    /// Search containers across the fleet
    ///
    /// Containers from every agent's cached snapshot whose name contains `name` (case-insensitive),
    /// or equals it with `exact=true`. Each row names its agent.
    #[oai(
        path = "/api/v1/containers",
        method = "get",
        tag = "Tag::Containers",
        operation_id = "search_containers"
    )]
    async fn search_containers(
        &self,
        auth: Caller,
        /// Part of a container name; empty or absent lists every container.
        name: Query<Option<String>>,
        /// Match the whole name exactly.
        exact: Query<Option<bool>>,
    ) -> ApiResult<Vec<FleetContainer>> {
        auth.0.require(Role::Viewer)?;
        let needle = name.0.unwrap_or_default();
        let exact = exact.0.unwrap_or(false);
        let lower = needle.to_lowercase();
        let rows = self.state.fleet.find(|c| {
            if exact {
                c.name == needle
            } else {
                lower.is_empty() || c.name.to_lowercase().contains(&lower)
            }
        });
        Ok(Json(
            rows.into_iter()
                .map(|(agent, agent_online, container)| FleetContainer {
                    agent,
                    agent_online,
                    container,
                })
                .collect(),
        ))
    }

    /// Inspect a container
    ///
    /// Asks the agent now. Environment variable names only, never their values.
    #[oai(
        path = "/api/v1/agents/:agent/containers/:container",
        method = "get",
        tag = "Tag::Containers",
        operation_id = "inspect_container"
    )]
    async fn inspect_container(
        &self,
        auth: Caller,
        /// Agent name.
        #[oai(validator(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))]
        agent: Path<String>,
        /// Container name or unique ID prefix (at least 4 hex digits).
        #[oai(validator(pattern = "^/?[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$"))]
        container: Path<String>,
        /// Deadline in seconds (default 10, at most 300).
        #[oai(validator(minimum(value = "1"), maximum(value = "300")))]
        timeout_s: Query<Option<u32>>,
    ) -> ApiResult<ContainerDetail> {
        auth.0.require(Role::Viewer)?;
        let name = agent_name(&agent)?;
        let c = container_ref(&container)?;
        let d = deadline(timeout_s.0, READ_TIMEOUT_S)?;
        let r = self
            .state
            .ask::<ContainerInspect>(&auth.0, name.as_str(), &ContainerArgs { container: c }, d)
            .await?;
        Ok(Json(r))
    }

    /// Act on a container
    ///
    /// `{action}` is one of `start`, `stop`, `restart`, `kill`, `pause` or `unpause`. The result
    /// says whether anything changed: starting a running container is `changed: false`, not an error.
    #[oai(
        path = "/api/v1/agents/:agent/containers/:container/:action",
        method = "post",
        tag = "Tag::Containers",
        operation_id = "container_action"
    )]
    async fn container_action(
        &self,
        auth: Caller,
        /// Agent name.
        #[oai(validator(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))]
        agent: Path<String>,
        /// Container name or unique ID prefix (at least 4 hex digits).
        #[oai(validator(pattern = "^/?[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$"))]
        container: Path<String>,
        /// A row of the action table (`GET /api/v1/container-actions`).
        action: Path<Action>,
        /// Seconds between SIGTERM and SIGKILL for stop and restart (default 10, at most 300).
        #[oai(validator(minimum(value = "0"), maximum(value = "300")))]
        grace_s: Query<Option<u32>>,
        /// Signal for kill (default SIGKILL).
        #[oai(validator(pattern = "^(?:[A-Z][A-Z0-9+-]{0,15}|[1-9]|[1-5][0-9]|6[0-4])$"))]
        signal: Query<Option<String>>,
        /// Deadline in seconds (default 30, at most 300).
        #[oai(validator(minimum(value = "1"), maximum(value = "300")))]
        timeout_s: Query<Option<u32>>,
    ) -> ApiResult<ActionResult> {
        auth.0.require(Role::Operator)?;
        let name = agent_name(&agent)?;
        let c = container_ref(&container)?;
        let action = action.0;
        let d = deadline(timeout_s.0, ACTION_TIMEOUT_S)?;
        let req = ActionRequest {
            action,
            container: c.clone(),
            grace_s: grace_s.0,
            signal: signal.0,
        };
        let payload = req.to_payload()?;
        let _slot = self.state.requests.take(&auth.0)?;
        let result = self
            .state
            .requester
            .call_op::<ActionResult>(name.as_str(), action.op_name(), payload, d)
            .await;
        let _ = self.state.events.send(FleetEvent {
            kind: EventKind::Action,
            agent: name.to_string(),
            time: Utc::now(),
            state: result
                .as_ref()
                .ok()
                .map(|r| r.container.state.as_str().to_owned()),
            container: Some(
                result
                    .as_ref()
                    .map(|r| r.container.name.clone())
                    .unwrap_or_else(|_| c.to_string()),
            ),
            container_id: result.as_ref().ok().map(|r| r.container.id.clone()),
            action: Some(action.as_str().to_owned()),
            ok: Some(result.is_ok()),
            error: result.as_ref().err().cloned(),
        });
        self.state
            .audit(
                AuditRecord::http(auth.0.name.clone(), action.op_name().to_owned())
                    .agent(Some(name.to_string()))
                    .container(Some(c.to_string()))
                    .outcome(
                        result
                            .as_ref()
                            .map(|_| "ok".to_owned())
                            .unwrap_or_else(|e| e.code.as_str().to_owned()),
                    )
                    .message(result.as_ref().err().map(|e| e.message.clone())),
            )
            .await;
        Ok(Json(result?))
    }

    /// Read or follow a container's logs
    ///
    /// The last `tail` lines (default 100, at most 10 000), stdout and stderr apart, as Docker
    /// keeps them; `since` keeps only lines since then (a duration back from now such as `10m`
    /// or `1h30m`, or an RFC 3339 time), and without `tail` means every line since then (at
    /// most 2 MiB of them, the newest, `truncated` beyond). Needs the `operator` role: logs
    /// often hold secrets.
    ///
    /// With `follow=true`, Server-Sent Events instead, like `docker logs -f`: the lines asked
    /// for, then new ones as they come, in chunks (`event: lines`, a `LogChunk`), until the
    /// container stops or the client goes away; the last event (`event: end`) says why the
    /// stream ended. With `since` and no `tail`, a follow starts with every line since then.
    /// The agent reads the container's output only as fast as the client reads the stream.
    #[oai(
        path = "/api/v1/agents/:agent/containers/:container/logs",
        method = "get",
        tag = "Tag::Containers",
        operation_id = "container_logs"
    )]
    async fn container_logs(
        &self,
        auth: Caller,
        /// Agent name.
        #[oai(validator(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))]
        agent: Path<String>,
        /// Container name or unique ID prefix (at least 4 hex digits).
        #[oai(validator(pattern = "^/?[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$"))]
        container: Path<String>,
        /// Number of lines from the end (default 100, at most 10 000).
        #[oai(validator(minimum(value = "0"), maximum(value = "10000")))]
        tail: Query<Option<u32>>,
        /// Prefix each line with Docker's timestamp.
        timestamps: Query<Option<bool>>,
        /// Keep the stream open and send new lines as they come (Server-Sent Events).
        follow: Query<Option<bool>>,
        /// Only lines since then: a duration back from now (`10m`, `1h30m`, `45s`, `2d`) or an
        /// RFC 3339 time.
        // zedops_proto::since::PATTERN (api/src/routes/mod.rs tests that they agree).
        #[oai(validator(
            max_length = 40,
            pattern = r"^(([0-9]{1,10}[smhd]){1,4}|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$"
        ))]
        since: Query<Option<String>>,
        /// Deadline in seconds (default 10, at most 300); for a follow, of its start.
        #[oai(validator(minimum(value = "1"), maximum(value = "300")))]
        timeout_s: Query<Option<u32>>,
    ) -> Result<Streamed<Logs, LogEvent>, ApiError> {
        // Logs often hold secrets (tokens printed at start-up, connection strings): an
        // operator's right, not a viewer's (issue 14, item 13).
        auth.0.require(Role::Operator)?;
        let name = agent_name(&agent)?;
        let c = container_ref(&container)?;
        let d = deadline(timeout_s.0, READ_TIMEOUT_S)?;
        let args = LogsArgs {
            container: c,
            tail: tail.0,
            timestamps: timestamps.0.unwrap_or(false),
            follow: follow.0.unwrap_or(false),
            since: since.0,
            window: None,
            lease_s: None,
        };
        args.tail()?;
        args.since_unix(Utc::now())?;
        if args.follow {
            let op = ContainerLogs::NAME;
            return streamed::open(&self.state, &auth.0, name.as_str(), op, &args, d).await;
        }
        let r = self
            .state
            .ask::<ContainerLogs>(&auth.0, name.as_str(), &args, d)
            .await?;
        Ok(Streamed::Whole(Json(r)))
    }

    /// Run a command in a container
    ///
    /// One non-interactive command (`cmd` is the program and its arguments, never run through a
    /// shell; no stdin, no TTY), as `docker exec` runs it. The answer is `200` with its exit code,
    /// stdout and stderr (64 KiB each at most, `truncated` beyond) whatever the exit code; at
    /// `timeout_s` the command is killed and `timed_out` is true. Needs the `operator` role.
    #[oai(
        path = "/api/v1/agents/:agent/containers/:container/exec",
        method = "post",
        tag = "Tag::Containers",
        operation_id = "container_exec"
    )]
    async fn container_exec(
        &self,
        auth: Caller,
        /// Agent name.
        #[oai(validator(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))]
        agent: Path<String>,
        /// Container name or unique ID prefix (at least 4 hex digits).
        #[oai(validator(pattern = "^/?[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$"))]
        container: Path<String>,
        body: Json<ExecRequest>,
    ) -> ApiResult<CommandResult> {
        auth.0.require(Role::Operator)?;
        let name = agent_name(&agent)?;
        let c = container_ref(&container)?;
        let req = body.0;
        let args = ExecArgs {
            container: c.clone(),
            cmd: req.cmd,
            workdir: req.workdir,
            user: req.user,
            env: req.env,
            timeout_s: req.timeout_s,
        };
        // Checked here too, so that a bad request never reaches the agent.
        let run_for = args.check()?;
        let _slot = self.state.requests.take(&auth.0)?;
        let result = self
            .state
            .requester
            .call::<ContainerExec>(name.as_str(), &args, run_for + COMMAND_SLACK)
            .await;
        // The command line is audited, the environment is not (it may carry secrets).
        self.state
            .audit(
                AuditRecord::http(auth.0.name.clone(), ContainerExec::NAME)
                    .agent(Some(name.to_string()))
                    .container(Some(c.to_string()))
                    .outcome(command_outcome(&result))
                    .message(Some(format!("{:?}", args.cmd))),
            )
            .await;
        Ok(Json(result?))
    }

    /// List the container actions
    ///
    /// Every action `POST /api/v1/agents/{agent}/containers/{container}/{action}` takes: its
    /// name, the op that carries it to the agent, a summary, its parameter, the container states
    /// it is offered in, and whether it can stop a container. The dashboard draws its buttons
    /// from this list.
    #[oai(
        path = "/api/v1/container-actions",
        method = "get",
        tag = "Tag::Containers",
        operation_id = "list_container_actions"
    )]
    async fn list_container_actions(&self, auth: Caller) -> ApiResult<Vec<ActionInfo>> {
        auth.0.require(Role::Viewer)?;
        Ok(Json(
            zedops_proto::ACTIONS.iter().map(ActionInfo::from).collect(),
        ))
    }
}
