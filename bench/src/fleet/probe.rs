//! What watches a run: the API's counts, its start, a subscriber that counts deliveries.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

use crate::http::{Conn, Target};
use crate::procs::{self, Proc, Usage};

use super::*;

/// Polls `until` every 20 ms for up to `limit`; returns the time it took.
pub(super) async fn wait_until(
    limit: Duration,
    mut until: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if until() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (agents online, containers known) from the API's /metrics; `None` while it does not answer.
pub(super) async fn api_counts(http: SocketAddr) -> Option<(u64, u64)> {
    let mut c = Conn::open(&Target::Tcp(http)).await.ok()?;
    let (st, body) = c.send("GET", "/metrics").await.ok()?;
    if st != 200 {
        return None;
    }
    let text = String::from_utf8_lossy(&body);
    let val = |k: &str| {
        text.lines()
            .find(|l| l.starts_with(k) && l[k.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((
        val("zedops_agents_online")?,
        val("zedops_containers_known")?,
    ))
}

/// One start of the API process, timed until it shows the whole fleet.
pub(super) struct ApiStart {
    /// Spawn → banner printed (process up, listening).
    pub(super) up: Duration,
    /// Spawn → every agent online.
    pub(super) agents: Option<Duration>,
    /// Spawn → every agent online and every container known.
    pub(super) all: Option<Duration>,
    pub(super) last_seen: (u64, u64),
    pub(super) usage_at_all: Usage,
}

pub(super) async fn start_api(
    broker: SocketAddr,
    n: u64,
    limit: Duration,
) -> anyhow::Result<(Proc, SocketAddr, ApiStart)> {
    let t0 = Instant::now();
    let (proc, banner) = procs::spawn_serve(Some(&format!("mqtt://{broker}")), &[])?;
    let up = t0.elapsed();
    let mut agents = None;
    let mut all = None;
    let mut last = (0, 0);
    while t0.elapsed() < limit {
        if let Some((online, containers)) = api_counts(banner.http).await {
            last = (online, containers);
            if online >= n && agents.is_none() {
                agents = Some(t0.elapsed());
            }
            if online >= n && containers >= n * CONTAINERS as u64 {
                all = Some(t0.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let usage_at_all = proc.usage();
    Ok((
        proc,
        banner.http,
        ApiStart {
            up,
            agents,
            all,
            last_seen: last,
            usage_at_all,
        },
    ))
}

/// Until the API at `http` has heard from every agent in `names` since `since` (its
/// `last_seen`, set when the API applies the agent's status or snapshot): the agents are back
/// and visible, their state carried to the API's node. Polls `GET /api/v1/agents` every 500 ms
/// (~0.1 s each at 10 000 agents), at most `limit`.
pub(super) async fn api_heard_from(
    http: SocketAddr,
    names: &[&str],
    since: chrono::DateTime<chrono::Utc>,
    limit: Duration,
) -> Option<Duration> {
    let t0 = Instant::now();
    let wanted: std::collections::HashSet<&str> = names.iter().copied().collect();
    while t0.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(mut conn) = Conn::open(&Target::Tcp(http)).await else {
            continue;
        };
        let Ok(body) = conn.ok("GET", "/api/v1/agents").await else {
            continue;
        };
        let agents: Vec<zedops_proto::http::AgentInfo> =
            serde_json::from_slice(&body).unwrap_or_default();
        let heard = agents
            .iter()
            .filter(|a| wanted.contains(a.name.as_str()) && a.online && a.last_seen > since)
            .count();
        if heard >= wanted.len() {
            return Some(t0.elapsed());
        }
    }
    None
}

/// What every MQTT client of the benchmark sets: `keep_alive_s`, packets up to the contract's
/// limit, `TCP_NODELAY`, and a small in-flight table ([`SIM_INFLIGHT`]).
pub(super) fn bench_options(id: String, host: &str, port: u16, keep_alive_s: u64) -> MqttOptions {
    let mut opts = MqttOptions::new(id, host, port);
    opts.set_keep_alive(Duration::from_secs(keep_alive_s));
    opts.set_max_packet_size(Some(zedops_proto::MAX_PACKET_BYTES as u32));
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    opts.set_network_options(net);
    // rumqttc 0.25 sizes its outgoing in-flight table by this limit (default u16::MAX: a
    // 65 536-slot Vec<Option<Publish>> written at creation, ~13 MiB resident per client).
    opts.set_outgoing_inflight_upper_limit(SIM_INFLIGHT);
    opts
}

/// A subscriber with the API's filters, counting what it receives.
pub(super) async fn counting_subscriber(
    broker: SocketAddr,
    count: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
) -> anyhow::Result<(AsyncClient, tokio::task::JoinHandle<()>)> {
    let id = format!("zedops-bench-counter-{}", std::process::id());
    let opts = bench_options(id, &broker.ip().to_string(), broker.port(), 30);
    let (client, mut el) = AsyncClient::new(opts, 64);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut tx = Some(tx);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(t) = tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    count.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .context("the counting subscriber got no CONNACK")??;
    Ok((client, task))
}
