//! The zedops agent: controls the local Docker engine and serves it over MQTT 5.
//!
//! # Layout
//! - [`docker`]: the bollard driver: connect and negotiate, resolve references, reads, actions,
//!   conversion, one error type (`DriverError`); a module each.
//! - [`actions`]: operator-defined actions (TOML files, container labels), their validation and
//!   how they run; `capture` bounds a command's output.
//! - [`handlers`]: the op registry; one handler per op of `zedops_proto::ops`, container actions
//!   from the action table, extensible at run time.
//! - [`connection`]: what the agent says about failed broker connections, and when a refusal
//!   of its credentials is for good.
//! - [`session`]: the MQTT session (Last Will, reconnect with backoff, resubscribe) and the main
//!   loop (event-driven republish, periodic resync); `requests` runs each request (expiry, size,
//!   trust, duplicates, slots, reply), `trust` says whether a request is signed by the server,
//!   `events` interprets Docker's events, `subscribing` holds the state back after a CONNACK
//!   until the broker has answered the subscriptions.
//! - [`publisher`]: retained status, snapshot and per-container topics; events.
//! - [`admission`]: request slots, reads and actions apart (actions never wait behind reads).
//! - [`streams`]: log follows and stats streams: chunks under the requester's credit and lease.
//! - [`usage`]: the running containers' resource use every interval, for `/metrics` and Home
//!   Assistant's sensors (`--ha-stats`).
//! - [`dedup`]: the bounded cache that answers a repeated correlation id without running it twice.
//! - [`ha`]: Home Assistant MQTT discovery and `/set` commands (opt-in, `--ha`).
//!
//! Entry point: [`run`] with an [`AgentConfig`] and a shutdown future (the caller owns shutdown).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod actions;
pub mod admission;
mod capture;
pub mod connection;
pub mod dedup;
pub mod docker;
mod events;
pub mod ha;
pub mod handlers;
pub mod publisher;
mod requests;
pub mod retained;
pub mod session;
pub mod streams;
mod subscribing;
mod trust;
pub mod usage;

use std::time::Duration;

pub use docker::DockerTarget;
pub use ha::HaConfig;
pub use handlers::Registry;
use zedops_proto::{AgentName, BrokerUrl};

/// The keys of an enrolled agent.
#[derive(Clone, Debug)]
pub struct Signing {
    /// The agent's own key (signs status, snapshots, events, replies).
    pub key: zedops_proto::sign::KeyPair,
    /// The server's public key (commands must carry its signature).
    pub server: zedops_proto::sign::PublicKey,
}

/// Configuration of one agent. Flags > environment > defaults (see the CLI's `agent` command).
#[derive(Clone)]
pub struct AgentConfig {
    pub name: AgentName,
    pub broker: BrokerUrl,
    /// More brokers (of one cluster) to move to, in order, when the current one is lost
    /// (`zedops_proto::failover`).
    pub fallback_brokers: Vec<BrokerUrl>,
    pub docker: DockerTarget,
    /// MQTT username and password, when the broker requires them.
    pub credentials: Option<(String, String)>,
    /// Full republish interval, in case a Docker event was missed (default 60 s).
    pub resync_interval: Duration,
    /// Longest wait between reconnection attempts (default 10 s).
    pub reconnect_max: Duration,
    pub keep_alive: Duration,
    /// Reads (ping, lists, inspect, logs) executed at once; more wait (against their deadline).
    pub max_concurrent_requests: usize,
    /// Container actions executed at once, in slots of their own: actions never wait behind reads.
    pub max_concurrent_actions: usize,
    /// More handlers, registered over the v1 set (same name: replaces that op).
    pub registry: Option<Registry>,
    /// End-to-end signatures (set after enrollment): the agent signs what it publishes and
    /// refuses requests not signed by the server, unless `accept_unsigned`.
    pub signing: Option<Signing>,
    /// Accept unsigned requests even with `signing` set (`--accept-unsigned`).
    pub accept_unsigned: bool,
    /// TLS to an `mqtts://` broker: the CA (default the system's roots), a client certificate.
    pub tls: zedops_proto::client::TlsSettings,
    /// Home Assistant MQTT discovery and `/set` commands (`--ha`); `None`: off.
    pub ha: Option<HaConfig>,
    /// Publish one retained topic per container (default). Off (`--no-container-topics`), the
    /// agent publishes status, snapshot and events only: each new per-container topic costs the
    /// embedded broker a match against every subscription filter of the fleet, which is most of
    /// what a large fleet's first connection costs it (docs/benchmarks.md). Home Assistant needs
    /// them.
    pub container_topics: bool,
    /// The agent's state directory (`--state-dir`): where it remembers which per-container topics
    /// it left retained, to clear those of containers removed while it was stopped
    /// ([`retained`]). `None`: nothing is remembered across runs.
    pub state_dir: Option<std::path::PathBuf>,
    /// Action definitions (`--actions FILE`), read before `<state-dir>/actions.d/*.toml`.
    pub action_files: Vec<std::path::PathBuf>,
    /// Publish the running containers' resource use this often (`--ha-stats`, [`usage`]).
    pub stats_interval: Option<Duration>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials are never printed.
        f.debug_struct("AgentConfig")
            .field("name", &self.name)
            .field("broker", &self.broker.to_string())
            .field("fallback_brokers", &self.fallback_brokers)
            .field("docker", &self.docker.describe())
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .field("resync_interval", &self.resync_interval)
            .field("reconnect_max", &self.reconnect_max)
            .field("ha", &self.ha)
            .field("container_topics", &self.container_topics)
            .field("state_dir", &self.state_dir)
            .field("action_files", &self.action_files)
            .field("stats_interval", &self.stats_interval)
            .finish()
    }
}

impl AgentConfig {
    pub fn new(name: AgentName, broker: BrokerUrl) -> Self {
        Self {
            name,
            broker,
            fallback_brokers: Vec::new(),
            docker: DockerTarget::default(),
            credentials: None,
            resync_interval: Duration::from_secs(60),
            reconnect_max: Duration::from_secs(10),
            keep_alive: Duration::from_secs(15),
            max_concurrent_requests: 32,
            max_concurrent_actions: 16,
            registry: None,
            signing: None,
            accept_unsigned: false,
            tls: Default::default(),
            ha: None,
            container_topics: true,
            state_dir: None,
            action_files: Vec::new(),
            stats_interval: None,
        }
    }

    /// The MQTT client id: the agent's name, so that one agent has one session.
    pub fn client_id(&self) -> String {
        zedops_proto::identity::agent_client_id(self.name.as_str())
    }
}

/// Why the agent cannot run: a configuration it refuses before it connects.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    HaPrefix(#[from] ha::InvalidPrefix),
    #[error(
        "Home Assistant (--ha) reads the per-container topics: drop --no-container-topics or --ha"
    )]
    HaNeedsContainerTopics,
    #[error(transparent)]
    Tls(#[from] zedops_proto::client::TlsError),
    /// The broker refused the agent's credentials several times in a row (a removed agent).
    #[error("{0}")]
    Refused(String),
}

/// Runs the agent until `shutdown` completes; then publishes `offline` and disconnects.
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    if let Some(ha) = &config.ha {
        ha.validate()?;
        if !config.container_topics {
            return Err(AgentError::HaNeedsContainerTopics);
        }
    }
    session::run(config, shutdown).await
}
