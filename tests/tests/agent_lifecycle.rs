//! The agent's life around failures: Last Will on SIGKILL, `offline` on SIGTERM, broker restarts,
//! Docker going away and coming back, and retained status for a large fleet.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::net::{UnixListener, UnixStream};
use zedops_broker::BrokerConfig;
use zedops_proto::ops::{ContainerList, Pong};
use zedops_proto::{topics, ErrorCode};
use zedops_tests::procs::{spawn_agent_process, InProcAgent, TempDir};
use zedops_tests::{init_logs, unique, TestClient, TestContainer};

async fn wait_state(
    c: &mut TestClient,
    agent: &str,
    state: &str,
    limit: Duration,
) -> anyhow::Result<serde_json::Value> {
    let topic = topics::status(agent);
    let m = c
        .wait_for(&format!("{agent} {state}"), limit, |m| {
            m.topic == topic && m.json()["state"] == state
        })
        .await?;
    Ok(m.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_fires_the_last_will_and_sigterm_publishes_offline() -> anyhow::Result<()> {
    init_logs();
    let broker = zedops_broker::start(BrokerConfig::ephemeral()).await?;
    let mut watcher = TestClient::connect(broker.v5_addr(), &unique("watch")).await?;
    watcher.subscribe(topics::ALL_STATUS).await?;

    // SIGKILL: nothing of ours runs; the broker publishes the Last Will.
    let name = unique("killed");
    let p = spawn_agent_process(&name, broker.v5_addr(), &[])?;
    wait_state(&mut watcher, &name, "online", Duration::from_secs(10)).await?;
    p.signal("KILL")?;
    let will = wait_state(&mut watcher, &name, "offline", Duration::from_secs(5)).await?;
    assert_eq!(will["agent"], name.as_str());
    // It is retained: a client arriving later sees offline.
    let mut late = TestClient::connect(broker.v5_addr(), &unique("late")).await?;
    late.subscribe(&topics::status(&name)).await?;
    let m = late
        .wait_for("retained will", Duration::from_secs(3), |m| m.retain)
        .await?;
    assert_eq!(m.json()["state"], "offline");

    // SIGTERM: the agent publishes offline itself and exits cleanly.
    let name = unique("termed");
    let mut p = spawn_agent_process(&name, broker.v5_addr(), &[])?;
    wait_state(&mut watcher, &name, "online", Duration::from_secs(10)).await?;
    p.signal("TERM")?;
    let st = p.wait_exit(Duration::from_secs(5)).await?;
    assert!(st.success(), "exit status {st}");
    let off = wait_state(&mut watcher, &name, "offline", Duration::from_secs(3)).await?;
    assert!(
        off["docker"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("stopped"),
        "{off}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_comes_back_after_a_broker_restart() -> anyhow::Result<()> {
    init_logs();
    let broker = zedops_broker::start(BrokerConfig::ephemeral()).await?;
    let addr = broker.v5_addr();
    let name = unique("phoenix");
    let web = TestContainer::run(&unique("zt-phoenix"), &unique("phoenix"), &[])?;
    let _p = spawn_agent_process(&name, addr, &["--reconnect-max", "500ms"])?;
    let mut c = TestClient::connect(addr, &unique("w1")).await?;
    c.subscribe(&topics::status(&name)).await?;
    wait_state(&mut c, &name, "online", Duration::from_secs(10)).await?;
    drop(c);

    tokio::task::spawn_blocking(move || broker.stop()).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A new broker on the same address knows nothing: the agent must republish by itself.
    let broker = zedops_broker::start(BrokerConfig {
        v5_listen: addr,
        v4_listen: None,
        ..BrokerConfig::default()
    })
    .await?;
    let mut c = TestClient::connect(broker.v5_addr(), &unique("w2")).await?;
    c.subscribe(&topics::status(&name)).await?;
    c.subscribe(&topics::snapshot(&name)).await?;
    let (status_t, snap_t) = (topics::status(&name), topics::snapshot(&name));
    let (mut online, mut snapshot) = (false, false);
    while !(online && snapshot) {
        let m = c
            .wait_for(
                "status and snapshot on the new broker",
                Duration::from_secs(10),
                |_| true,
            )
            .await?;
        online |= m.topic == status_t && m.json()["state"] == "online";
        snapshot |= m.topic == snap_t;
    }
    // The per-container topics follow within `PER_CONTAINER_SPREAD` of the reconnect (the
    // broker lost them with its restart).
    c.subscribe(&topics::container(&name, &web.name)).await?;
    let spread = zedops_proto::failover::PER_CONTAINER_SPREAD;
    c.wait_for(
        "the container's topic on the new broker",
        spread + Duration::from_secs(5),
        |m| m.topic == topics::container(&name, &web.name) && !m.payload.is_empty(),
    )
    .await?;
    // And it serves requests again (it resubscribed).
    let rt = c.reply_topic();
    c.subscribe(&rt).await?;
    let pong: Pong = c.call(&name, "ping", json!({})).await?;
    assert_eq!(pong.agent, name);
    Ok(())
}

/// A unix-socket proxy in front of the real Docker socket, so a test can take "Docker" away and
/// bring it back without touching the engine other tests use.
struct DockerProxy {
    path: PathBuf,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DockerProxy {
    fn new(path: PathBuf) -> Self {
        Self { path, task: None }
    }

    fn up(&mut self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path)?;
        let real = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
            .unwrap_or_else(|| "/var/run/docker.sock".to_owned());
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let real = real.clone();
                conns.spawn(async move {
                    if let Ok(mut out) = UnixStream::connect(&real).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        }));
        Ok(())
    }

    /// Closes the socket and every proxied connection (the JoinSet is dropped with the task).
    fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_unavailable_is_reported_and_survived() -> anyhow::Result<()> {
    init_logs();
    let dir = TempDir::new("dockerproxy")?;
    let sock = dir.path.join("docker.sock");
    let mut proxy = DockerProxy::new(sock.clone());
    let broker = zedops_broker::start(BrokerConfig::ephemeral()).await?;
    let name = unique("nodocker");
    let host = format!("unix://{}", sock.display());
    let _agent = InProcAgent::start(&name, broker.v5_addr(), |c| c.docker.host = Some(host))?;
    let mut c = TestClient::connect(broker.v5_addr(), &unique("w")).await?;
    let rt = c.reply_topic();
    c.subscribe(&rt).await?;
    c.subscribe(&topics::status(&name)).await?;

    // Down at start: online, Docker unavailable, requests get docker_unavailable.
    let topic = topics::status(&name);
    let st = c
        .wait_for("docker unavailable", Duration::from_secs(10), |m| {
            m.topic == topic && m.json()["docker"]["state"] == "unavailable"
        })
        .await?;
    assert_eq!(st.json()["state"], "online");
    assert!(st.json()["docker"]["error"]
        .as_str()
        .context("error text")?
        .contains(&sock.display().to_string()));
    let r = c
        .request(&name, "containers.list", json!({}), Duration::from_secs(10))
        .await?;
    let err = r.error.context("expected docker_unavailable")?;
    assert_eq!(err.code, ErrorCode::DockerUnavailable);
    assert!(err.message.contains(&name), "{}", err.message);
    let pong: Pong = c.call(&name, "ping", json!({})).await?;
    assert_eq!(
        pong.docker.state,
        zedops_proto::DockerAvailability::Unavailable
    );

    for round in 0..2 {
        // The engine comes (back): the agent notices by itself.
        proxy.up()?;
        c.wait_for(
            &format!("docker available (round {round})"),
            Duration::from_secs(10),
            |m| m.topic == topic && m.json()["docker"]["state"] == "available",
        )
        .await?;
        let list: ContainerList = c.call(&name, "containers.list", json!({})).await?;
        let _ = list;
        // The engine goes away mid-way.
        proxy.down();
        c.wait_for(
            &format!("docker lost (round {round})"),
            Duration::from_secs(10),
            |m| m.topic == topic && m.json()["docker"]["state"] == "unavailable",
        )
        .await?;
        let r = c
            .request(
                &name,
                "container.start",
                json!({"container": "web-1"}),
                Duration::from_secs(10),
            )
            .await?;
        assert_eq!(r.error.context("error")?.code, ErrorCode::DockerUnavailable);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_subscriber_gets_the_retained_status_of_300_agents() -> anyhow::Result<()> {
    init_logs();
    let broker = zedops_broker::start(BrokerConfig::ephemeral()).await?;
    const N: usize = 300;
    let mut sims = Vec::with_capacity(N);
    for i in 0..N {
        // Simulated agents: plain MQTT clients publishing a retained status, as agents do.
        let c = TestClient::connect(broker.v5_addr(), &format!("sim-{i}")).await?;
        let status = json!({
            "agent": format!("sim-{i}"), "state": "online", "version": "0.1.0", "hostname": "h",
            "docker": {"state": "available", "version": "x", "api_version": "1.41", "error": null},
            "started_at": "2026-01-01T00:00:00Z", "counts": {"total": 0, "running": 0, "paused": 0, "stopped": 0},
            "updated_at": "2026-01-01T00:00:00Z"
        });
        c.publish(
            &topics::status(&format!("sim-{i}")),
            true,
            serde_json::to_vec(&status)?,
        )
        .await?;
        sims.push(c);
    }
    // Make sure the broker has every retained message: a live subscriber counts them first.
    tokio::time::sleep(Duration::from_millis(500)).await;

    for attempt in 0..2 {
        let mut late = TestClient::connect(broker.v5_addr(), &unique("late")).await?;
        late.subscribe(topics::ALL_STATUS).await?;
        let mut seen = std::collections::HashSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while seen.len() < N && tokio::time::Instant::now() < deadline {
            for m in late.drain(Duration::from_millis(200)).await {
                if m.retain {
                    seen.insert(m.topic);
                }
            }
        }
        assert_eq!(
            seen.len(),
            N,
            "attempt {attempt}: retained statuses received"
        );
    }
    drop(sims);
    Ok(())
}
