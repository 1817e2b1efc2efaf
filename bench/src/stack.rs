//! The deployment most scenarios measure: `zedops serve --no-auth` (embedded broker + API) as one
//! process, `zedops agent` as another, and a set of test containers on the local Docker engine.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use zedops_tests::{Docker, TestContainer};

use crate::http::Target;
use crate::procs::{self, Banner, Proc};

/// The run label of every container the benchmarks create (`zedops.test.run=zedops-bench`).
pub const RUN_LABEL: &str = "zedops-bench";
pub const AGENT: &str = "bench-agent";

pub struct Stack {
    // Dropped in this order: the agent, then the server, then the containers.
    pub agent: Proc,
    pub serve: Proc,
    pub banner: Banner,
    pub containers: Vec<TestContainer>,
}

impl Stack {
    pub async fn start(n_containers: usize) -> anyhow::Result<Self> {
        remove_leftovers();
        let containers = create_containers(n_containers)?;
        let (serve, banner) = procs::spawn_serve(None, &[])?;
        let mqtt = banner
            .mqtt
            .context("zedops serve printed no MQTT address")?;
        let agent = procs::spawn_agent(AGENT, mqtt)?;
        let s = Self {
            agent,
            serve,
            banner,
            containers,
        };
        s.wait_agent_sees_all(AGENT, Duration::from_secs(30))
            .await?;
        Ok(s)
    }

    pub fn mqtt(&self) -> SocketAddr {
        self.banner.mqtt.unwrap_or(self.banner.http)
    }

    pub fn api(&self) -> Target {
        Target::Tcp(self.banner.http)
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.banner.http)
    }

    pub fn container_names(&self) -> Vec<String> {
        self.containers.iter().map(|c| c.name.clone()).collect()
    }

    /// A typed client of the stack's API (it runs without tokens).
    pub fn client(&self) -> anyhow::Result<zedops_client::Client> {
        Ok(zedops_client::Client::new(&self.base(), None, None)?)
    }

    /// Waits until the API's cached list of `agent` holds every benchmark container.
    pub async fn wait_agent_sees_all(&self, agent: &str, limit: Duration) -> anyhow::Result<()> {
        let want = self.container_names();
        let client = self.client()?;
        let opts = zedops_client::ListOptions::default();
        let start = std::time::Instant::now();
        loop {
            if let Ok(l) = client.containers(agent, &opts).await {
                let has = |w: &String| l.containers.iter().any(|c| &c.name == w);
                if l.agent_online && want.iter().all(has) {
                    return Ok(());
                }
            }
            if start.elapsed() > limit {
                anyhow::bail!(
                    "agent {agent} did not show all {} containers within {limit:?}",
                    want.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Removes containers a previous, interrupted run left behind.
pub fn remove_leftovers() {
    if let Ok(ids) = Docker::run(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=zedops.test.run={RUN_LABEL}"),
    ]) {
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids);
            let _ = Docker::run(&args);
        }
    }
}

/// `n` running test containers `zb-c00`, `zb-c01`, … (the test image exits at once on SIGTERM),
/// created a few at a time.
pub fn create_containers(n: usize) -> anyhow::Result<Vec<TestContainer>> {
    create_containers_named("zb-c", n)
}

/// [`create_containers`] named `{prefix}00`, `{prefix}01`, …
pub fn create_containers_named(prefix: &str, n: usize) -> anyhow::Result<Vec<TestContainer>> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i:02}")).collect();
    let mut out: Vec<TestContainer> = Vec::new();
    for chunk in names.chunks(5) {
        let made: Vec<anyhow::Result<TestContainer>> = std::thread::scope(|s| {
            let hs: Vec<_> = chunk
                .iter()
                .map(|name| s.spawn(move || TestContainer::run(name, RUN_LABEL, &[])))
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("thread panicked")))
                })
                .collect()
        });
        for m in made {
            out.push(m?);
        }
    }
    Ok(out)
}
