//! Payloads agents publish and return: status, snapshots, containers, events.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Docker's container states, plus `unknown` for anything a newer engine may add.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "lowercase")
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
    #[serde(other)]
    Unknown,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Restarting => "restarting",
            Self::Removing => "removing",
            Self::Exited => "exited",
            Self::Dead => "dead",
            Self::Unknown => "unknown",
        }
    }

    /// Whether the container has live processes (running, paused or restarting): what
    /// `docker ps` without `-a` lists, and what stop and kill apply to.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Paused | Self::Restarting)
    }

    /// Parses Docker's spelling; anything else is `Unknown`.
    pub fn from_docker(s: &str) -> Self {
        match s {
            "created" => Self::Created,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "restarting" => Self::Restarting,
            "removing" => Self::Removing,
            "exited" => Self::Exited,
            "dead" => Self::Dead,
            _ => Self::Unknown,
        }
    }
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A published port.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub private_port: u16,
    pub public_port: Option<u16>,
    pub protocol: String,
    pub ip: Option<String>,
}

/// One container as `docker ps -a` shows it.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub short_id: String,
    /// Docker name without the leading `/`.
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub command: String,
    pub state: ContainerState,
    /// Docker's human text, e.g. "Up 5 minutes".
    pub status: String,
    /// `healthy`, `unhealthy` or `starting` when the container has a health check.
    pub health: Option<String>,
    pub created_at: DateTime<Utc>,
    pub ports: Vec<Port>,
    pub labels: BTreeMap<String, String>,
}

/// A mount of an inspected container.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub kind: String,
    pub source: Option<String>,
    pub destination: String,
    pub read_write: bool,
}

/// A network an inspected container is attached to.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    pub name: String,
    pub ip_address: Option<String>,
}

/// The result of `container.inspect`: the list row plus detail. Environment *names* only: values
/// hold secrets and never leave the host.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerDetail {
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", oai(flatten))]
    pub container: Container,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i64>,
    pub restart_count: i64,
    pub mounts: Vec<Mount>,
    pub networks: Vec<NetworkAttachment>,
    pub env_names: Vec<String>,
}

#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "lowercase")
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    Online,
    Offline,
}

#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "lowercase")
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DockerAvailability {
    Available,
    Unavailable,
}

/// What the agent knows of its Docker engine.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerStatus {
    pub state: DockerAvailability,
    pub version: Option<String>,
    pub api_version: Option<String>,
    /// Why Docker is unavailable, as a sentence.
    pub error: Option<String>,
}

impl DockerStatus {
    pub fn unavailable(error: impl Into<String>) -> Self {
        Self {
            state: DockerAvailability::Unavailable,
            version: None,
            api_version: None,
            error: Some(error.into()),
        }
    }
}

#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub total: u32,
    pub running: u32,
    pub paused: u32,
    pub stopped: u32,
}

impl Counts {
    pub fn of(containers: &[Container]) -> Self {
        let mut c = Counts {
            total: containers.len() as u32,
            ..Counts::default()
        };
        for k in containers {
            match k.state {
                ContainerState::Running | ContainerState::Restarting => c.running += 1,
                ContainerState::Paused => c.paused += 1,
                _ => c.stopped += 1,
            }
        }
        c
    }
}

/// Retained on `agents/{agent}/status`; the Last Will is the same with `state: offline`.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub agent: String,
    pub state: AgentState,
    pub version: String,
    pub hostname: String,
    pub docker: DockerStatus,
    pub started_at: DateTime<Utc>,
    pub counts: Counts,
    /// When this status was published (for the Last Will: when the session began).
    pub updated_at: DateTime<Utc>,
    /// The operator-defined actions this agent serves (`docs/actions.md`). Read leniently: an
    /// action this version cannot read (a newer agent's) is left out, not the whole status.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::defined::lenient_actions"
    )]
    #[cfg_attr(feature = "openapi", oai(default))]
    pub actions: Vec<crate::defined::DefinedAction>,
}

/// Retained on `agents/{agent}/containers`: every container, running and stopped.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub agent: String,
    /// Increases with every snapshot an agent process publishes.
    pub seq: u64,
    pub taken_at: DateTime<Utc>,
    pub containers: Vec<Container>,
}

/// Published (not retained) on `agents/{agent}/events` for each Docker container event.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerEvent {
    pub agent: String,
    pub id: String,
    pub name: String,
    /// Docker's action: `start`, `die`, `stop`, `pause`, `destroy`, …
    pub action: String,
    /// The container's state after the event, `None` once it is destroyed.
    pub state: Option<ContainerState>,
    pub time: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Container {
        Container {
            id: "a".repeat(64),
            short_id: "a".repeat(12),
            name: "web-1".into(),
            image: "busybox".into(),
            image_id: "sha256:1".into(),
            command: "sh".into(),
            state: ContainerState::Running,
            status: "Up 1 second".into(),
            health: None,
            created_at: DateTime::parse_from_rfc3339("2026-01-10T02:25:00Z")
                .unwrap()
                .with_timezone(&Utc),
            ports: vec![Port {
                private_port: 80,
                public_port: Some(8080),
                protocol: "tcp".into(),
                ip: Some("0.0.0.0".into()),
            }],
            labels: BTreeMap::from([("a".into(), "b".into())]),
        }
    }

    #[test]
    fn container_round_trip_and_rfc3339() {
        let c = sample();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["created_at"], "2026-01-10T02:25:00Z");
        assert_eq!(json["state"], "running");
        assert_eq!(serde_json::from_value::<Container>(json).unwrap(), c);
    }

    #[test]
    fn detail_flattens() {
        let d = ContainerDetail {
            container: sample(),
            started_at: None,
            finished_at: None,
            exit_code: Some(0),
            restart_count: 2,
            mounts: vec![],
            networks: vec![],
            env_names: vec!["PATH".into()],
        };
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["name"], "web-1");
        assert_eq!(serde_json::from_value::<ContainerDetail>(json).unwrap(), d);
    }

    #[test]
    fn unknown_state_is_tolerated() {
        let s: ContainerState = serde_json::from_str("\"frozen\"").unwrap();
        assert_eq!(s, ContainerState::Unknown);
    }

    #[test]
    fn snapshot_and_status_round_trip() {
        let snap = Snapshot {
            agent: "m".into(),
            seq: 3,
            taken_at: Utc::now(),
            containers: vec![sample()],
        };
        let back: Snapshot = serde_json::from_slice(&serde_json::to_vec(&snap).unwrap()).unwrap();
        assert_eq!(back, snap);
        let st = AgentStatus {
            agent: "m".into(),
            state: AgentState::Online,
            version: "0.1.0".into(),
            hostname: "h".into(),
            docker: DockerStatus::unavailable("socket missing"),
            started_at: Utc::now(),
            counts: Counts::of(&snap.containers),
            updated_at: Utc::now(),
            actions: vec![],
        };
        let back: AgentStatus = serde_json::from_slice(&serde_json::to_vec(&st).unwrap()).unwrap();
        assert_eq!(back, st);
        assert_eq!(back.counts.running, 1);
        // An action of a kind this version does not know is left out, not the status.
        let mut v = serde_json::to_value(&st).unwrap();
        v["actions"] = serde_json::json!([
            {"name": "a", "target": "exec", "container": "c", "role": "operator", "timeout_s": 1, "source": "file"},
            {"name": "b", "target": "teleport", "role": "operator", "timeout_s": 1, "source": "file"}
        ]);
        let back: AgentStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back.actions.len(), 1);
    }

    #[test]
    fn malformed_snapshot_is_an_error() {
        assert!(serde_json::from_str::<Snapshot>("{\"agent\":1}").is_err());
        assert!(serde_json::from_str::<Snapshot>("not json").is_err());
    }
}
