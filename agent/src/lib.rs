//! The zedops agent: controls the local Docker engine and serves it over MQTT 5.
//!
//! # Layout
//! - [`docker`]: the bollard driver (connect, negotiate, resolve references, actions, conversion).
//! - [`handlers`]: the op registry; one handler per op of `zedops_proto::ops`.
//! - [`session`]: the MQTT session (Last Will, reconnect with backoff, resubscribe), the main loop
//!   (event-driven republish, periodic resync) and request execution (expiry, duplicates).
//! - [`publisher`]: retained status, snapshot and per-container topics; events.
//! - [`dedup`]: the bounded cache that answers a repeated correlation id without running it twice.
//!
//! Entry point: [`run`] with an [`AgentConfig`] and a shutdown future (the caller owns shutdown).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod dedup;
pub mod docker;
pub mod handlers;
pub mod publisher;
pub mod session;

use std::time::Duration;

pub use docker::DockerTarget;
pub use handlers::Registry;
use zedops_proto::{AgentName, BrokerUrl};

/// Configuration of one agent. Flags > environment > defaults (see the CLI's `agent` command).
#[derive(Clone)]
pub struct AgentConfig {
    pub name: AgentName,
    pub broker: BrokerUrl,
    pub docker: DockerTarget,
    /// MQTT username and password, when the broker requires them.
    pub credentials: Option<(String, String)>,
    /// Full republish interval, in case a Docker event was missed (default 60 s).
    pub resync_interval: Duration,
    /// Longest wait between reconnection attempts (default 10 s).
    pub reconnect_max: Duration,
    pub keep_alive: Duration,
    /// Requests executed at once; more wait (against their deadline).
    pub max_concurrent_requests: usize,
    /// Handlers to serve instead of the v1 set.
    pub registry: Option<Registry>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials are never printed.
        f.debug_struct("AgentConfig")
            .field("name", &self.name)
            .field("broker", &self.broker.to_string())
            .field("docker", &self.docker.describe())
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .field("resync_interval", &self.resync_interval)
            .field("reconnect_max", &self.reconnect_max)
            .finish()
    }
}

impl AgentConfig {
    pub fn new(name: AgentName, broker: BrokerUrl) -> Self {
        Self {
            name,
            broker,
            docker: DockerTarget::default(),
            credentials: None,
            resync_interval: Duration::from_secs(60),
            reconnect_max: Duration::from_secs(10),
            keep_alive: Duration::from_secs(15),
            max_concurrent_requests: 32,
            registry: None,
        }
    }

    /// The MQTT client id: the agent's name, so that one agent has one session.
    pub fn client_id(&self) -> String {
        format!("zedops-agent-{}", self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Config(String),
}

/// Runs the agent until `shutdown` completes; then publishes `offline` and disconnects.
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    session::run(config, shutdown).await
}
