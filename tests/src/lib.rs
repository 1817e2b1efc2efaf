//! Shared helpers for the end-to-end tests in `tests/tests/`: real Docker (through the `docker`
//! CLI, an observer independent of our bollard code), real brokers (embedded and Mosquitto), real
//! MQTT clients, and the `zedops` binary.
//!
//! Every container a test creates carries the label `zedops.test=1` and is removed when its guard
//! drops. Tests never use fixed ports.

pub mod api;
pub mod browser;
pub mod cluster;
pub mod docker;
pub mod ha;
pub mod mqtt;
pub mod netns;
pub mod pki;
pub mod postgres;
pub mod procs;
pub mod secured;

use std::time::{Duration, Instant};

pub use docker::{Docker, TestContainer};
pub use mqtt::TestClient;

/// Logs to stderr once per test binary (RUST_LOG to raise it).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,zedops=info")),
        )
        .with_test_writer()
        .try_init();
}

/// A name unique to this test process and call, valid as agent and container name.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if start.elapsed() > limit {
            anyhow::bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free TCP port on loopback (released before return; used only for external programs that
/// cannot report the port they bound). Chosen outside the ephemeral range, like the embedded
/// broker's own port 0.
pub fn free_port() -> u16 {
    zedops_broker::free_port(std::net::Ipv4Addr::LOCALHOST.into())
}
