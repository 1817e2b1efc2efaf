//! The request and response bodies of the endpoints.

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use zedops_proto::ops::Pong;
use zedops_proto::{AgentState, Container, Counts, DockerStatus, ErrorBody};

use crate::auth::Role;
use crate::cache::{AgentEntry, Change};

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
    pub(crate) fn from_change(c: Change) -> Self {
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

/// A container action (a row of the action table, `zedops_proto::ACTIONS`). `param` is what it
/// takes besides the container: `none`, `grace` (the `grace_s` query parameter) or `signal`.
#[derive(Debug, Object)]
pub struct ActionInfo {
    pub name: zedops_proto::Action,
    /// The op on the wire.
    pub op: String,
    pub summary: String,
    pub param: zedops_proto::actions::Param,
    /// Whether it can stop a container.
    pub stops: bool,
    /// The container states it is offered in.
    pub applies_to: Vec<zedops_proto::ContainerState>,
    /// Whether a user interface asks before sending it.
    pub danger: bool,
}

impl From<&zedops_proto::ActionSpec> for ActionInfo {
    fn from(s: &zedops_proto::ActionSpec) -> Self {
        Self {
            name: s.action,
            op: s.op.to_owned(),
            summary: s.summary.to_owned(),
            param: s.param,
            stops: s.stops,
            applies_to: s.applies_to.to_vec(),
            danger: s.danger,
        }
    }
}
