//! The endpoints (`docs/protocol.md` § HTTP API), with typed schemas. Reads of the fleet come from the cache;
//! inspect, logs, live lists and actions go to the agent through the requester.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{EventStream, Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use tokio_stream::wrappers::BroadcastStream;
use zedops_proto::ops::{
    ActionResult, ContainerArgs, ContainerInspect, ContainerKill, ContainerLogs, ContainerPause,
    ContainerRestart, ContainerStart, ContainerStop, ContainerUnpause, ContainersList, KillArgs,
    ListArgs, Logs, LogsArgs, NoArgs, Ping, Pong, StopArgs,
};
use zedops_proto::{
    Action, AgentName, AgentState, Container, ContainerDetail, ContainerRef, Counts, DockerStatus,
    ErrorBody,
};

use crate::auth::{Caller, Role};
use crate::cache::{AgentEntry, Change};
use crate::error::{ApiError, ApiResult};
use crate::store::AuditRecord;
use crate::State;

/// Default deadline of reads (inspect, logs, live list) and actions, and the largest allowed.
pub const READ_TIMEOUT_S: u32 = 10;
pub const ACTION_TIMEOUT_S: u32 = 30;
pub const MAX_TIMEOUT_S: u32 = 300;

#[derive(Tags)]
enum Tag {
    /// Agents of the fleet.
    Agents,
    /// Containers and actions on them.
    Containers,
    /// Live updates.
    Events,
    /// Health and metrics of this server.
    Operations,
    /// Tokens and the audit log (admin).
    Admin,
}

/// An agent's answer to a ping.
#[derive(Debug, Object)]
pub struct AgentPing {
    /// What the agent answered: its name, version and Docker's state.
    #[oai(flatten)]
    pub pong: Pong,
    /// From sending the request to receiving the reply, as this server measured it.
    pub round_trip_ms: f64,
}

/// One agent, as the fleet cache knows it.
#[derive(Debug, Object)]
pub struct AgentInfo {
    pub name: String,
    /// True when the agent's retained status says online.
    pub online: bool,
    pub state: AgentState,
    pub hostname: Option<String>,
    /// The agent's zedops version.
    pub version: Option<String>,
    pub docker: Option<DockerStatus>,
    pub counts: Counts,
    pub started_at: Option<DateTime<Utc>>,
    /// When this server last heard from the agent.
    pub last_seen: DateTime<Utc>,
    /// When the agent took its latest container snapshot.
    pub snapshot_at: Option<DateTime<Utc>>,
}

impl From<&AgentEntry> for AgentInfo {
    fn from(e: &AgentEntry) -> Self {
        let s = e.status.as_ref();
        AgentInfo {
            name: e.name.clone(),
            online: e.online(),
            state: s.map(|s| s.state).unwrap_or(AgentState::Offline),
            hostname: s.map(|s| s.hostname.clone()),
            version: s.map(|s| s.version.clone()),
            docker: s.map(|s| s.docker.clone()),
            counts: e
                .snapshot
                .as_ref()
                .map(|sn| Counts::of(&sn.containers))
                .or_else(|| s.map(|s| s.counts))
                .unwrap_or_default(),
            started_at: s.map(|s| s.started_at),
            last_seen: e.last_seen,
            snapshot_at: e.snapshot.as_ref().map(|sn| sn.taken_at),
        }
    }
}

/// The containers of one agent.
#[derive(Debug, Object)]
pub struct ContainerListing {
    pub agent: String,
    pub agent_online: bool,
    /// True when the list was asked of the agent now; false when it comes from the cache.
    pub live: bool,
    /// When the list was taken (cached lists only).
    pub taken_at: Option<DateTime<Utc>>,
    pub containers: Vec<Container>,
}

/// A container found by a fleet-wide search, with its agent.
#[derive(Debug, Object)]
pub struct FleetContainer {
    pub agent: String,
    pub agent_online: bool,
    pub container: Container,
}

/// The kinds of live events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum EventKind {
    /// An agent came online or went offline.
    Agent,
    /// A container changed state (Docker event on an agent).
    Container,
    /// An action requested through this API finished.
    Action,
}

/// One Server-Sent Event; the SSE `event:` field is the kind.
#[derive(Debug, Clone, Object)]
pub struct FleetEvent {
    pub kind: EventKind,
    pub agent: String,
    pub time: DateTime<Utc>,
    /// `agent`: online/offline. `container`: the container's new state.
    pub state: Option<String>,
    pub container: Option<String>,
    pub container_id: Option<String>,
    /// `container`: Docker's action (start, die, …). `action`: the action requested.
    pub action: Option<String>,
    /// `action` events: whether it succeeded, and the error when not.
    pub ok: Option<bool>,
    pub error: Option<ErrorBody>,
}

impl FleetEvent {
    fn from_change(c: Change) -> Self {
        let base = |kind, agent: String| FleetEvent {
            kind,
            agent,
            time: Utc::now(),
            state: None,
            container: None,
            container_id: None,
            action: None,
            ok: None,
            error: None,
        };
        match c {
            Change::AgentOnline(a) => FleetEvent {
                state: Some("online".into()),
                ..base(EventKind::Agent, a)
            },
            Change::AgentOffline(a) => FleetEvent {
                state: Some("offline".into()),
                ..base(EventKind::Agent, a)
            },
            Change::Container(ev) => FleetEvent {
                time: ev.time,
                state: Some(
                    ev.state
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_else(|| "removed".into()),
                ),
                container: Some(ev.name),
                container_id: Some(ev.id),
                action: Some(ev.action),
                ..base(EventKind::Container, ev.agent)
            },
        }
    }
}

/// A token as listed (never the secret).
#[derive(Debug, Object)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// The name of a revoked token.
#[derive(Debug, Object)]
pub struct TokenInfoName {
    pub name: String,
}

/// A token to create.
#[derive(Debug, Object)]
pub struct NewToken {
    /// 1-63 characters of a-z, 0-9, '-' or '_'.
    pub name: String,
    pub role: Role,
}

/// A created token: `token` is shown this once.
#[derive(Debug, Object)]
pub struct CreatedToken {
    pub name: String,
    pub role: Role,
    pub token: String,
}

/// An agent to register.
#[derive(Debug, Object)]
pub struct NewAgent {
    /// 1-63 characters of a-z, 0-9, '-' or '_'.
    pub name: String,
    /// Lifetime of the enrollment token in seconds (default 3600).
    pub ttl_s: Option<u32>,
}

/// A one-time enrollment token (shown once).
#[derive(Debug, Object)]
pub struct Enrollment {
    pub name: String,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// What an agent presents to enroll.
#[derive(Debug, Object)]
pub struct EnrollRequest {
    /// The agent's name.
    #[oai(validator(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))]
    pub name: String,
    /// The one-time enrollment token (`zde_<name>_<secret>_<server key fingerprint>`).
    #[oai(validator(max_length = 256))]
    pub token: String,
    /// The agent's Ed25519 public key, hex.
    #[oai(validator(pattern = "^[0-9a-fA-F]{64}$"))]
    pub public_key: String,
}

/// The agent's permanent credentials.
#[derive(Debug, Object)]
pub struct EnrollResponse {
    pub name: String,
    pub mqtt_username: String,
    pub mqtt_password: String,
    /// The server's Ed25519 public key, hex: commands must carry its signature.
    pub server_public_key: String,
}

/// An MQTT user for an integration (password shown once).
#[derive(Debug, Object)]
pub struct MqttUser {
    pub username: String,
    pub password: String,
    /// Whether the user may publish Home Assistant `…/set` commands.
    pub ha_commands: bool,
}

/// An MQTT user to create.
#[derive(Debug, Object)]
pub struct NewMqttUser {
    pub name: String,
    /// May publish Home Assistant `…/set` commands (start, stop, restart of unprotected
    /// containers of `--ha` agents, unsigned). Default false: the user can read, and send signed
    /// requests only.
    #[oai(default)]
    pub ha_commands: bool,
}

/// The caller's identity.
#[derive(Debug, Object)]
pub struct WhoAmI {
    pub role: Role,
    /// False when this server runs without tokens (every caller is admin).
    pub auth_required: bool,
    pub token_name: Option<String>,
}

#[derive(ApiResponse)]
enum Health {
    /// Ready.
    #[oai(status = 200)]
    Ok(PlainText<String>),
    /// Not ready yet: the reason.
    #[oai(status = 503)]
    NotReady(PlainText<String>),
}

pub struct FleetApi {
    pub state: Arc<State>,
}

fn agent_name(s: &str) -> Result<AgentName, ApiError> {
    AgentName::new(s).map_err(|e| ApiError::from(ErrorBody::bad_request(e.to_string())))
}

fn container_ref(s: &str) -> Result<ContainerRef, ApiError> {
    ContainerRef::new(s).map_err(|e| ApiError::from(ErrorBody::bad_request(e.to_string())))
}

fn deadline(timeout_s: Option<u32>, default: u32) -> Result<Duration, ApiError> {
    let t = timeout_s.unwrap_or(default);
    if t == 0 || t > MAX_TIMEOUT_S {
        return Err(ErrorBody::bad_request(format!(
            "timeout_s {t} is out of range: use 1 to {MAX_TIMEOUT_S} seconds"
        ))
        .into());
    }
    Ok(Duration::from_secs(t.into()))
}

// Operations take their parameters as arguments (that is how poem-openapi documents them).
#[allow(clippy::too_many_arguments)]
#[OpenApi]
impl FleetApi {
    /// List agents
    ///
    /// Every agent the fleet cache knows, online or not, from their retained status.
    #[oai(
        path = "/api/v1/agents",
        method = "get",
        tag = "Tag::Agents",
        operation_id = "list_agents"
    )]
    async fn list_agents(&self, auth: Caller) -> ApiResult<Vec<AgentInfo>> {
        auth.0.require(Role::Viewer)?;
        Ok(Json(
            self.state.fleet.all().iter().map(AgentInfo::from).collect(),
        ))
    }

    /// Get one agent
    #[oai(
        path = "/api/v1/agents/:agent",
        method = "get",
        tag = "Tag::Agents",
        operation_id = "get_agent"
    )]
    async fn get_agent(&self, auth: Caller, agent: Path<String>) -> ApiResult<AgentInfo> {
        auth.0.require(Role::Viewer)?;
        let name = agent_name(&agent)?;
        let e = self.known(&name)?;
        Ok(Json(AgentInfo::from(&e)))
    }

    /// Ping an agent
    ///
    /// Asks the agent now (over MQTT, without touching Docker) and reports how long the answer
    /// took: a quick check that an agent is alive and commands reach it.
    #[oai(
        path = "/api/v1/agents/:agent/ping",
        method = "get",
        tag = "Tag::Agents",
        operation_id = "ping_agent"
    )]
    async fn ping_agent(
        &self,
        auth: Caller,
        /// Agent name.
        agent: Path<String>,
        /// Deadline in seconds (default 10, at most 300).
        timeout_s: Query<Option<u32>>,
    ) -> ApiResult<AgentPing> {
        auth.0.require(Role::Viewer)?;
        let name = agent_name(&agent)?;
        let d = deadline(timeout_s.0, READ_TIMEOUT_S)?;
        let started = std::time::Instant::now();
        let pong = self
            .state
            .ask::<Ping>(&auth.0, name.as_str(), &NoArgs {}, d)
            .await?;
        Ok(Json(AgentPing {
            round_trip_ms: started.elapsed().as_secs_f64() * 1000.0,
            pong,
        }))
    }

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
        agent: Path<String>,
        /// Ask the agent now instead of using the cache.
        live: Query<Option<bool>>,
        /// Include stopped containers (default true).
        all: Query<Option<bool>>,
        /// Deadline of a live request in seconds (default 10, at most 300).
        timeout_s: Query<Option<u32>>,
    ) -> ApiResult<ContainerListing> {
        auth.0.require(Role::Viewer)?;
        let name = agent_name(&agent)?;
        let all = all.0.unwrap_or(true);
        let entry = self.known(&name)?;
        let keep = |c: &Container| {
            all || matches!(
                c.state,
                zedops_proto::ContainerState::Running
                    | zedops_proto::ContainerState::Paused
                    | zedops_proto::ContainerState::Restarting
            )
        };
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
        agent: Path<String>,
        /// Container name or unique ID prefix (at least 4 hex digits).
        container: Path<String>,
        /// Deadline in seconds (default 10, at most 300).
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
        agent: Path<String>,
        /// Container name or unique ID prefix (at least 4 hex digits).
        container: Path<String>,
        /// One of `start`, `stop`, `restart`, `kill`, `pause`, `unpause`.
        action: Path<String>,
        /// Seconds between SIGTERM and SIGKILL for stop and restart (default 10, at most 300).
        grace_s: Query<Option<u32>>,
        /// Signal for kill (default SIGKILL).
        signal: Query<Option<String>>,
        /// Deadline in seconds (default 30, at most 300).
        timeout_s: Query<Option<u32>>,
    ) -> ApiResult<ActionResult> {
        auth.0.require(Role::Operator)?;
        let name = agent_name(&agent)?;
        let c = container_ref(&container)?;
        let action = Action::parse(&action)?;
        let d = deadline(timeout_s.0, ACTION_TIMEOUT_S)?;
        let stop = StopArgs {
            container: c.clone(),
            grace_s: grace_s.0,
        };
        stop.grace()?;
        let _slot = self.state.requests.take(&auth.0)?;
        let r = self.state.requester.clone();
        let a = name.as_str();
        let result = match action {
            Action::Start => {
                r.call::<ContainerStart>(
                    a,
                    &ContainerArgs {
                        container: c.clone(),
                    },
                    d,
                )
                .await
            }
            Action::Stop => r.call::<ContainerStop>(a, &stop, d).await,
            Action::Restart => r.call::<ContainerRestart>(a, &stop, d).await,
            Action::Kill => {
                let k = KillArgs {
                    container: c.clone(),
                    signal: signal.0,
                };
                k.signal()?;
                r.call::<ContainerKill>(a, &k, d).await
            }
            Action::Pause => {
                r.call::<ContainerPause>(
                    a,
                    &ContainerArgs {
                        container: c.clone(),
                    },
                    d,
                )
                .await
            }
            Action::Unpause => {
                r.call::<ContainerUnpause>(
                    a,
                    &ContainerArgs {
                        container: c.clone(),
                    },
                    d,
                )
                .await
            }
        };
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
        self.state.audit(
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
        );
        Ok(Json(result?))
    }

    /// Read a container's logs
    ///
    /// The last `tail` lines (default 100, at most 10 000), stdout and stderr. Needs the
    /// `operator` role: logs often hold secrets.
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
        agent: Path<String>,
        /// Container name or unique ID prefix (at least 4 hex digits).
        container: Path<String>,
        /// Number of lines from the end (default 100, at most 10 000).
        tail: Query<Option<u32>>,
        /// Prefix each line with Docker's timestamp.
        timestamps: Query<Option<bool>>,
        /// Deadline in seconds (default 10, at most 300).
        timeout_s: Query<Option<u32>>,
    ) -> ApiResult<Logs> {
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
        };
        args.tail()?;
        let r = self
            .state
            .ask::<ContainerLogs>(&auth.0, name.as_str(), &args, d)
            .await?;
        Ok(Json(r))
    }

    /// Follow live events
    ///
    /// Server-Sent Events: agents going online or offline, container state changes reported by
    /// agents, and results of actions requested through this API. A comment is sent every 15 s to
    /// keep the connection open.
    #[oai(
        path = "/api/v1/events",
        method = "get",
        tag = "Tag::Events",
        operation_id = "events"
    )]
    async fn events(
        &self,
        auth: Caller,
    ) -> Result<EventStream<BoxStream<'static, FleetEvent>>, ApiError> {
        auth.0.require(Role::Viewer)?;
        let slot = self.state.streams.take(&auth.0)?;
        let changes = BroadcastStream::new(self.state.changes.subscribe())
            .filter_map(|c| async move { c.ok().map(FleetEvent::from_change) });
        let actions = BroadcastStream::new(self.state.events.subscribe())
            .filter_map(|e| async move { e.ok() });
        let stream = futures_util::stream::select(changes, actions)
            .map(move |e| {
                let _keep = &slot;
                e
            })
            .take_until(self.state.closed());
        Ok(EventStream::new(stream.boxed())
            .keep_alive(Duration::from_secs(15))
            .to_event(|e: FleetEvent| {
                let kind = match e.kind {
                    EventKind::Agent => "agent",
                    EventKind::Container => "container",
                    EventKind::Action => "action",
                };
                let data = poem_openapi::types::ToJSON::to_json_string(&e);
                poem::web::sse::Event::message(data).event_type(kind)
            }))
    }

    /// List API tokens
    ///
    /// Names, roles and creation times; never the secrets. Admin only.
    #[oai(
        path = "/api/v1/tokens",
        method = "get",
        tag = "Tag::Admin",
        operation_id = "list_tokens"
    )]
    async fn list_tokens(&self, auth: Caller) -> ApiResult<Vec<TokenInfo>> {
        auth.0.require(Role::Admin)?;
        let store = self.store()?;
        let mut v: Vec<TokenInfo> = store
            .tokens()?
            .into_iter()
            .map(|t| TokenInfo {
                name: t.name,
                role: t.role,
                created_at: t.created_at,
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Json(v))
    }

    /// Create an API token
    ///
    /// Returns the token once; only its hash is stored. Admin only.
    #[oai(
        path = "/api/v1/tokens",
        method = "post",
        tag = "Tag::Admin",
        operation_id = "create_token"
    )]
    async fn create_token(&self, auth: Caller, body: Json<NewToken>) -> ApiResult<CreatedToken> {
        auth.0.require(Role::Admin)?;
        let store = self.store()?;
        let r = store.create_token(&body.name, body.role);
        self.state.audit(
            AuditRecord::http(auth.0.name.clone(), "token.create")
                .outcome(match &r {
                    Ok(_) => "ok",
                    Err(crate::store::StoreError::Invalid(_)) => "bad_request",
                    Err(_) => "internal",
                })
                .message(Some(format!("{} ({})", body.name, body.role.as_str()))),
        );
        let token = r?;
        Ok(Json(CreatedToken {
            name: body.name.clone(),
            role: body.role,
            token,
        }))
    }

    /// Revoke an API token
    ///
    /// The token stops working at once. Admin only.
    #[oai(
        path = "/api/v1/tokens/:name",
        method = "delete",
        tag = "Tag::Admin",
        operation_id = "revoke_token"
    )]
    async fn revoke_token(&self, auth: Caller, name: Path<String>) -> ApiResult<TokenInfoName> {
        auth.0.require(Role::Admin)?;
        let store = self.store()?;
        let removed = store.revoke_token(&name)?;
        self.state.audit(
            AuditRecord::http(auth.0.name.clone(), "token.revoke")
                .outcome(if removed { "ok" } else { "not_found" })
                .message(Some(name.0.clone())),
        );
        if !removed {
            return Err(ErrorBody::not_found(format!("no token named {}", name.0)).into());
        }
        Ok(Json(TokenInfoName { name: name.0 }))
    }

    /// Read the audit log
    ///
    /// Every action (who, what, which agent and container, outcome), newest first. Admin only.
    #[oai(
        path = "/api/v1/audit",
        method = "get",
        tag = "Tag::Admin",
        operation_id = "audit_log"
    )]
    async fn audit_log(
        &self,
        auth: Caller,
        /// Most records to return (default 100, at most 10 000).
        limit: Query<Option<u32>>,
    ) -> ApiResult<Vec<AuditRecord>> {
        auth.0.require(Role::Admin)?;
        let limit = limit.0.unwrap_or(100).min(10_000) as usize;
        let store = self.store()?;
        Ok(Json(store.audit_log(limit)?))
    }

    /// Register an agent
    ///
    /// Creates (or renews) a one-time enrollment token for agent `name`, valid for `ttl_s` seconds
    /// (default 3600). The agent presents it once with `zedops agent --enroll`. Admin only.
    #[oai(
        path = "/api/v1/agents",
        method = "post",
        tag = "Tag::Admin",
        operation_id = "register_agent"
    )]
    async fn register_agent(&self, auth: Caller, body: Json<NewAgent>) -> ApiResult<Enrollment> {
        auth.0.require(Role::Admin)?;
        let store = self.store()?;
        let ttl = body.ttl_s.unwrap_or(3600);
        if !(1..=7 * 86_400).contains(&ttl) {
            return Err(ErrorBody::bad_request("ttl_s must be between 1 second and 7 days").into());
        }
        let fingerprint = self
            .state
            .link
            .security
            .as_ref()
            .map(|s| s.key.public().fingerprint());
        let (token, expires_at) = store.register_agent(
            &body.name,
            chrono::Duration::seconds(ttl.into()),
            fingerprint.as_deref(),
        )?;
        self.state.audit(
            AuditRecord::http(auth.0.name.clone(), "agent.register")
                .agent(Some(body.name.clone()))
                .outcome("ok"),
        );
        Ok(Json(Enrollment {
            name: body.name.clone(),
            token,
            expires_at,
        }))
    }

    /// Remove an agent
    ///
    /// Revokes the agent's credentials: the broker refuses its connections and the API ignores
    /// what it publishes. Admin only.
    #[oai(
        path = "/api/v1/agents/:agent",
        method = "delete",
        tag = "Tag::Admin",
        operation_id = "remove_agent"
    )]
    async fn remove_agent(&self, auth: Caller, agent: Path<String>) -> ApiResult<TokenInfoName> {
        auth.0.require(Role::Admin)?;
        let name = agent_name(&agent)?;
        let store = self.store()?;
        let removed = store.remove_agent(name.as_str())?;
        if let Some(sec) = &self.state.link.security {
            sec.forget(name.as_str());
        }
        self.state.audit(
            AuditRecord::http(auth.0.name.clone(), "agent.remove")
                .agent(Some(name.to_string()))
                .outcome(if removed { "ok" } else { "not_found" }),
        );
        if !removed {
            return Err(
                ErrorBody::not_found(format!("no agent named {name} is registered")).into(),
            );
        }
        self.state.fleet.forget(name.as_str());
        Ok(Json(TokenInfoName {
            name: name.to_string(),
        }))
    }

    /// Enroll an agent
    ///
    /// Exchanges a one-time enrollment token (from `POST /api/v1/agents`) for the agent's
    /// permanent MQTT credentials, and records the agent's public signing key. Needs no bearer
    /// token: the enrollment token is the credential.
    #[oai(
        path = "/api/v1/enroll",
        method = "post",
        tag = "Tag::Admin",
        operation_id = "enroll"
    )]
    async fn enroll(&self, body: Json<EnrollRequest>) -> ApiResult<EnrollResponse> {
        let store = self.store()?;
        let sec = self.state.link.security.as_ref().ok_or_else(|| {
            ApiError::from(ErrorBody::bad_request(
                "this server does not sign commands, so agents cannot enroll",
            ))
        })?;
        let r = store.enroll(&body.name, &body.token, &body.public_key);
        match &r {
            Ok(_) => self.state.audit(
                AuditRecord::http(format!("agent:{}", body.name), "agent.enroll")
                    .agent(Some(body.name.clone()))
                    .outcome("ok"),
            ),
            Err(e) => self.enroll_failed(&body.name, e),
        }
        let creds = r?;
        sec.forget(&body.name);
        Ok(Json(EnrollResponse {
            name: body.name.clone(),
            mqtt_username: creds.mqtt_username,
            mqtt_password: creds.mqtt_password,
            server_public_key: sec.key.public_hex(),
        }))
    }

    /// A failed enrollment: logged (name escaped), and summarised in the audit log at most once
    /// a minute so that junk requests cannot evict real records.
    fn enroll_failed(&self, name: &str, e: &crate::store::EnrollError) {
        tracing::info!(agent = ?name, error = ?e.to_string(), "enrollment refused");
        if let Some(n) = self.state.enroll_failures.failed(std::time::Instant::now()) {
            let who = if zedops_proto::names::is_valid_agent_name(name) {
                format!("agent:{name}")
            } else {
                "agent:(invalid name)".to_owned()
            };
            self.state.audit(
                AuditRecord::http(who, "agent.enroll")
                    .outcome("unauthorized")
                    .message(Some(format!(
                        "{n} failed enrollment(s) since the last record; latest: {e}"
                    ))),
            );
        }
    }

    /// Create an MQTT user
    ///
    /// For integrations such as Home Assistant: returns a password (shown once). Admin only.
    #[oai(
        path = "/api/v1/mqtt-users",
        method = "post",
        tag = "Tag::Admin",
        operation_id = "create_mqtt_user"
    )]
    async fn create_mqtt_user(&self, auth: Caller, body: Json<NewMqttUser>) -> ApiResult<MqttUser> {
        auth.0.require(Role::Admin)?;
        let store = self.store()?;
        let password = store.create_mqtt_user(&body.name, body.ha_commands)?;
        self.state.audit(
            AuditRecord::http(auth.0.name.clone(), "mqtt_user.create")
                .outcome("ok")
                .message(Some(body.name.clone())),
        );
        Ok(Json(MqttUser {
            username: body.name.clone(),
            password,
            ha_commands: body.ha_commands,
        }))
    }

    /// Who am I
    ///
    /// The role of the presented token (`viewer`, `operator` or `admin`) and whether this server
    /// requires tokens at all. The dashboard uses it to show only the actions the token allows.
    #[oai(
        path = "/api/v1/whoami",
        method = "get",
        tag = "Tag::Operations",
        operation_id = "whoami"
    )]
    async fn whoami(&self, auth: Caller) -> ApiResult<WhoAmI> {
        Ok(Json(WhoAmI {
            role: auth.0.role,
            auth_required: auth.0.authenticated,
            token_name: auth.0.authenticated.then(|| auth.0.name.clone()),
        }))
    }

    /// Liveness
    ///
    /// 200 while the process serves HTTP.
    #[oai(
        path = "/healthz",
        method = "get",
        tag = "Tag::Operations",
        operation_id = "healthz"
    )]
    async fn healthz(&self) -> PlainText<&'static str> {
        PlainText("ok\n")
    }

    /// Readiness
    ///
    /// 200 once connected to the broker and the fleet cache is warm (retained state received and
    /// agents given time to answer the resync); 503 with the reason otherwise.
    #[oai(
        path = "/readyz",
        method = "get",
        tag = "Tag::Operations",
        operation_id = "readyz"
    )]
    async fn readyz(&self) -> Health {
        match self.state.ready() {
            Ok(()) => Health::Ok(PlainText("ready\n".into())),
            Err(why) => Health::NotReady(PlainText(format!("{why}\n"))),
        }
    }

    /// Prometheus metrics
    ///
    /// Agents online, requests by op and outcome, request latency histogram.
    #[oai(
        path = "/metrics",
        method = "get",
        tag = "Tag::Operations",
        operation_id = "metrics"
    )]
    async fn metrics(&self) -> PlainText<String> {
        PlainText(self.state.render_metrics())
    }
}

impl FleetApi {
    fn store(&self) -> Result<&crate::store::Store, ApiError> {
        self.state.store.as_deref().ok_or_else(|| {
            ErrorBody::bad_request("this server runs without authentication (no data dir), so it has no tokens or audit log").into()
        })
    }

    fn known(&self, name: &AgentName) -> Result<AgentEntry, ApiError> {
        self.state.fleet.get(name.as_str()).ok_or_else(|| {
            ErrorBody::not_found(format!("no agent named {name} is known to this server")).into()
        })
    }
}
