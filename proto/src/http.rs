//! The bodies of the HTTP API (`docs/protocol.md` § HTTP API): what `zedops-api` serves (it derives
//! the OpenAPI schemas from these same types with the `openapi` feature) and what `zedops-client`
//! decodes. One set of types, so the server, its spec and the Rust client cannot drift apart.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ops::Pong;
use crate::{AgentState, Container, ContainerState, Counts, DockerStatus, ErrorBody};

/// Roles of API tokens, ordered by what they allow: `viewer` reads, `operator` also acts on
/// containers, `admin` also manages tokens and agents and reads the audit log.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "lowercase")
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// A role name that is none of `viewer`, `operator`, `admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: use viewer, operator or admin")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Role::Viewer, Role::Operator, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An agent's answer to a ping.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentPing {
    /// What the agent answered: its name, version and Docker's state.
    #[cfg_attr(feature = "openapi", oai(flatten))]
    #[serde(flatten)]
    pub pong: Pong,
    /// From sending the request to receiving the reply, as this server measured it.
    pub round_trip_ms: f64,
}

/// One agent, as the fleet cache knows it.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// The containers of one agent.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetContainer {
    pub agent: String,
    pub agent_online: bool,
    pub container: Container,
}

/// The kinds of live events.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "lowercase")
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// An agent came online or went offline.
    Agent,
    /// A container changed state (Docker event on an agent).
    Container,
    /// An action requested through this API finished.
    Action,
}

/// One Server-Sent Event; the SSE `event:` field is the kind.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// An event of `kind` about `agent`, now, with every optional field empty.
    pub fn new(kind: EventKind, agent: impl Into<String>) -> Self {
        Self {
            kind,
            agent: agent.into(),
            time: Utc::now(),
            state: None,
            container: None,
            container_id: None,
            action: None,
            ok: None,
            error: None,
        }
    }
}

/// A token as listed (never the secret).
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// The name of a revoked token or removed agent.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfoName {
    pub name: String,
}

/// A token to create.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    /// 1-63 characters of a-z, 0-9, '-' or '_', starting with a letter or digit.
    #[cfg_attr(
        feature = "openapi",
        oai(validator(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))
    )]
    pub name: String,
    pub role: Role,
}

/// A created token: `token` is shown this once.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    pub name: String,
    pub role: Role,
    pub token: String,
}

/// An agent to register.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAgent {
    /// 1-63 characters of a-z, 0-9, '-' or '_', starting with a letter or digit.
    #[cfg_attr(
        feature = "openapi",
        oai(validator(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))
    )]
    pub name: String,
    /// Lifetime of the enrollment token in seconds (default 3600, at most 7 days).
    #[cfg_attr(
        feature = "openapi",
        oai(validator(minimum(value = "1"), maximum(value = "604800")))
    )]
    pub ttl_s: Option<u32>,
}

/// A one-time enrollment token (shown once).
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub name: String,
    pub token: String,
    pub expires_at: DateTime<Utc>,
    /// Where the agent enrolls: the server's public URL (`zedops serve --public-url`), which
    /// `zedops agents add` prints in the command to run on the agent's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
}

/// What an agent presents to enroll.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The agent's name.
    #[cfg_attr(
        feature = "openapi",
        oai(validator(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))
    )]
    pub name: String,
    /// The one-time enrollment token (`zde_<name>_<secret>_<server key fingerprint>`).
    #[cfg_attr(feature = "openapi", oai(validator(max_length = 256)))]
    pub token: String,
    /// The agent's Ed25519 public key, hex.
    #[cfg_attr(feature = "openapi", oai(validator(pattern = "^[0-9a-fA-F]{64}$")))]
    pub public_key: String,
}

/// The agent's permanent credentials.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub name: String,
    pub mqtt_username: String,
    pub mqtt_password: String,
    /// The server's Ed25519 public key, hex: commands must carry its signature.
    pub server_public_key: String,
    /// The MQTT brokers the agent connects to, in order (`mqtt://host:port`, `mqtts://…`): the
    /// server's own listener at its public address, or the external broker it uses.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(default))]
    pub brokers: Vec<String>,
}

impl std::fmt::Debug for EnrollResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollResponse")
            .field("name", &self.name)
            .field("mqtt_username", &self.mqtt_username)
            .finish_non_exhaustive()
    }
}

/// An MQTT user for an integration (password shown once).
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttUser {
    pub username: String,
    pub password: String,
    /// Whether the user may publish Home Assistant `…/set` commands.
    pub ha_commands: bool,
}

/// An MQTT user to create.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMqttUser {
    /// 1-63 characters of a-z, 0-9, '-' or '_', starting with a letter or digit, not with
    /// `zedops`.
    #[cfg_attr(
        feature = "openapi",
        oai(validator(
            pattern = "^(?:[a-y0-9]|z(?:$|[a-df-z0-9_-]|e(?:$|[a-ce-z0-9_-]|d(?:$|[a-np-z0-9_-]|o(?:$|[a-oq-z0-9_-]|p(?:$|[a-rt-z0-9_-]))))))[a-z0-9_-]*$",
            max_length = 63
        ))
    )]
    pub name: String,
    /// May publish Home Assistant `…/set` commands (start, stop, restart of unprotected
    /// containers of `--ha` agents, unsigned). Default false: the user can read, and send signed
    /// requests only.
    #[cfg_attr(feature = "openapi", oai(default))]
    #[serde(default)]
    pub ha_commands: bool,
}

/// The caller's identity.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    pub role: Role,
    /// False when this server runs without tokens (every caller is admin).
    pub auth_required: bool,
    pub token_name: Option<String>,
}

/// A container action (a row of the action table, `zedops_proto::ACTIONS`). `param` is what it
/// takes besides the container: `none`, `grace` (the `grace_s` query parameter) or `signal`.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionInfo {
    pub name: crate::Action,
    /// The op on the wire.
    pub op: String,
    pub summary: String,
    pub param: crate::actions::Param,
    /// Whether it can stop a container.
    pub stops: bool,
    /// The container states it is offered in.
    pub applies_to: Vec<ContainerState>,
    /// Whether a user interface asks before sending it.
    pub danger: bool,
}

impl From<&crate::ActionSpec> for ActionInfo {
    fn from(s: &crate::ActionSpec) -> Self {
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

/// One audited action.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub time: DateTime<Utc>,
    /// Token name, or `mqtt` for commands that arrived over MQTT.
    pub who: String,
    /// `http` or `mqtt`.
    pub source: String,
    /// `container.restart`, `token.create`, …
    pub action: String,
    pub agent: Option<String>,
    pub container: Option<String>,
    /// `ok` or an error code.
    pub outcome: String,
    pub message: Option<String>,
}

impl AuditRecord {
    /// A record of `action` by `who` over HTTP, outcome `ok`; refine with the methods below.
    pub fn http(who: impl Into<String>, action: impl Into<String>) -> Self {
        Self {
            seq: 0,
            time: Utc::now(),
            who: who.into(),
            source: "http".into(),
            action: action.into(),
            agent: None,
            container: None,
            outcome: "ok".into(),
            message: None,
        }
    }

    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// The agent concerned (`Option`s are taken as they are).
    pub fn agent(mut self, agent: impl Into<Option<String>>) -> Self {
        self.agent = agent.into();
        self
    }

    pub fn container(mut self, container: impl Into<Option<String>>) -> Self {
        self.container = container.into();
        self
    }

    pub fn outcome(mut self, outcome: impl Into<String>) -> Self {
        self.outcome = outcome.into();
        self
    }

    pub fn message(mut self, message: impl Into<Option<String>>) -> Self {
        self.message = message.into();
        self
    }
}

/// Default deadline in seconds of requests that read from an agent (ping, inspect, logs, live
/// lists), of actions, and the largest a request may ask for with `timeout_s`.
pub const READ_TIMEOUT_S: u32 = 10;
pub const ACTION_TIMEOUT_S: u32 = 30;
pub const MAX_TIMEOUT_S: u32 = 300;

/// A command to run in a container (`POST …/containers/{container}/exec`): no shell, no stdin,
/// no TTY; each element of `cmd` is one argument as it is.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExecRequest {
    /// The program and its arguments (at most 256, each at most 4096 bytes).
    #[cfg_attr(
        feature = "openapi",
        oai(validator(
            min_items = 1,
            max_items = 256,
            max_length = 4096,
            pattern = "^[^\\x00]*$"
        ))
    )]
    pub cmd: Vec<String>,
    /// Working directory inside the container.
    #[cfg_attr(
        feature = "openapi",
        oai(validator(max_length = 4096, pattern = "^[^\\x00]*$"))
    )]
    pub workdir: Option<String>,
    /// User (name or UID[:GID]) to run as.
    #[cfg_attr(
        feature = "openapi",
        oai(validator(max_length = 4096, pattern = "^[^\\x00]*$"))
    )]
    pub user: Option<String>,
    /// Extra environment, `NAME=value` each (at most 64).
    #[cfg_attr(
        feature = "openapi",
        oai(
            default,
            validator(
                max_items = 64,
                max_length = 4096,
                pattern = "^[A-Za-z_][A-Za-z0-9_]*=[^\\x00]*$"
            )
        )
    )]
    #[serde(default)]
    pub env: Vec<String>,
    /// Seconds before the command is killed (default 60, at most 900).
    #[cfg_attr(
        feature = "openapi",
        oai(validator(minimum(value = "1"), maximum(value = "900")))
    )]
    pub timeout_s: Option<u32>,
}

/// One operator-defined action of the fleet (`GET /api/v1/actions`,
/// `GET /api/v1/agents/{agent}/actions`), as its agent advertises it.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetAction {
    pub agent: String,
    /// Whether the agent is online (an offline agent's actions cannot run now).
    pub online: bool,
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", oai(flatten))]
    pub action: crate::defined::DefinedAction,
}

/// Operator-defined actions.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ActionListing {
    pub actions: Vec<FleetAction>,
}

/// The body of `POST /api/v1/agents/{agent}/actions/{action}`.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RunActionRequest {
    /// Values by parameter name (strings, integers or booleans, as each parameter's type takes;
    /// the action's advertised schema says which). Checked before anything is sent to the agent.
    #[cfg_attr(feature = "openapi", oai(default))]
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, serde_json::Value>,
    /// Seconds before the command is killed: at most the action's own timeout (its default).
    #[cfg_attr(
        feature = "openapi",
        oai(validator(minimum(value = "1"), maximum(value = "900")))
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u32>,
}
