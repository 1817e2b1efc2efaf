//! One fleet size on one broker, step by step.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::AsyncClient;
use zedops_proto::topics;
use zedops_tests::cluster::Cluster;
use zedops_tests::procs::Mosquitto;

use crate::http::{Conn, Target};
use crate::procs::{self, Proc, Usage};
use crate::stats::fmt_dur;

use super::probe::*;
use super::sim::*;
use super::*;

/// Everything measured for one fleet size and one broker.
pub(super) struct Run {
    pub(super) broker: &'static str,
    pub(super) profile: Profile,
    pub(super) n: usize,
    pub(super) connect: Option<Duration>,
    pub(super) first: Option<ApiStart>,
    pub(super) restart: Option<ApiStart>,
    pub(super) agents_list: Option<(Duration, usize, usize)>,
    pub(super) retained: Option<(Duration, u64)>,
    pub(super) blast: Option<(Duration, u64, u64, u64)>,
    pub(super) broker_rss: u64,
    pub(super) broker_hwm: u64,
    pub(super) broker_fds: usize,
    pub(super) broker_cpu: f64,
    /// Per broker process (one, or a cluster's nodes in order): RSS, peak RSS, CPU share
    /// during the blast.
    pub(super) broker_procs: Vec<(u64, u64, f64)>,
    pub(super) bench_cpu: f64,
    pub(super) blast_expected: u64,
    pub(super) api_rss_idle: u64,
    pub(super) api_hwm: u64,
    pub(super) bench_rss: u64,
    pub(super) errors: u64,
    pub(super) dropped: u64,
    pub(super) failure: Option<String>,
    pub(super) last_error: Option<String>,
    /// Cluster only: a node killed → every agent it held reconnected elsewhere, and their
    /// republished state acknowledged; (which node, agents, time, time until the API had heard
    /// from each of them since the kill).
    pub(super) node_kill: Option<(Kill, usize, Option<Duration>, Option<Duration>)>,
}

impl Run {
    pub(super) fn label(&self) -> String {
        match self.profile {
            Profile::Full => self.broker.to_owned(),
            Profile::Lean => format!("{}, agents with --no-container-topics", self.broker),
            Profile::FullEveryResync => {
                format!("{}, agents answering every resync (before)", self.broker)
            }
        }
    }
}

pub(super) enum BrokerProc {
    Embedded(Proc),
    Mosquitto {
        _guard: Mosquitto,
        pid: u32,
    },
    /// Three rmqtt nodes; resources are reported per node and summed.
    Cluster {
        _guard: Cluster,
        pids: Vec<u32>,
    },
}

impl BrokerProc {
    pub(super) fn pids(&self) -> Vec<u32> {
        match self {
            BrokerProc::Embedded(p) => vec![p.pid()],
            BrokerProc::Mosquitto { pid, .. } => vec![*pid],
            BrokerProc::Cluster { pids, .. } => pids.clone(),
        }
    }
}

/// Where the broker's clients connect: the simulated agents (spread over the nodes) and the API
/// (and the retained-delivery subscriber), on the last node of a cluster.
pub(super) struct Addrs {
    agents: Vec<SocketAddr>,
    api: SocketAddr,
}

pub(super) async fn one_run(
    kind: &'static str,
    profile: Profile,
    n: usize,
    sims: &[Arc<SimAgent>],
    quick: bool,
    kill: Kill,
) -> Run {
    let mut r = Run {
        broker: kind,
        profile,
        n,
        connect: None,
        first: None,
        restart: None,
        agents_list: None,
        retained: None,
        blast: None,
        broker_rss: 0,
        broker_hwm: 0,
        broker_fds: 0,
        broker_cpu: 0.0,
        broker_procs: Vec::new(),
        bench_cpu: 0.0,
        blast_expected: 0,
        api_rss_idle: 0,
        api_hwm: 0,
        bench_rss: 0,
        errors: 0,
        dropped: 0,
        failure: None,
        last_error: None,
        node_kill: None,
    };
    if let Err(e) = one_run_inner(&mut r, (kind, profile, n), sims, quick, kill).await {
        r.failure = Some(format!("{e:#}"));
    }
    r
}

/// The steps of the module's documentation (`super`), in order; each records into `r`.
async fn one_run_inner(
    r: &mut Run,
    (kind, profile, n): (&'static str, Profile, usize),
    sims: &[Arc<SimAgent>],
    quick: bool,
    kill: Kill,
) -> anyhow::Result<()> {
    eprintln!("[fleet] {kind}: {n} simulated agents × {CONTAINERS} containers ({profile:?})");
    let (mut broker, addrs) = start_broker(kind).await?;
    let bpids = broker.pids();
    // 1. Connect the fleet.
    let fleet = SimFleet::start(n, &addrs.agents, sims, profile);
    let c = fleet.counters.clone();
    connect(r, &c, quick).await?;
    // 2. The API: first start, stop, start again.
    let (api, http) = api_starts(r, addrs.api).await?;
    // 3. Retained delivery to a new subscriber with the API's filters (2N messages).
    let sub = Subscriber::start(addrs.api).await?;
    retained(r, &sub).await?;
    // 4. Blast: every simulated agent republishes its 27 messages at once.
    blast(r, &c, &sub, &bpids).await?;
    sub.task.abort();
    // 5. Resources, per broker process and summed over them.
    let cpus = std::mem::take(&mut r.broker_procs);
    for (i, &p) in bpids.iter().enumerate() {
        let bu = Usage::of(p);
        r.broker_rss += bu.rss;
        r.broker_hwm += bu.hwm;
        r.broker_fds += procs::fd_count(p);
        let cpu = cpus.get(i).map_or(0.0, |c| c.2);
        r.broker_procs.push((bu.rss, bu.hwm, cpu));
    }
    r.bench_rss = Usage::of(std::process::id()).rss;
    r.errors = c.errors.load(Ordering::Relaxed);
    r.dropped = c.dropped.load(Ordering::Relaxed);
    r.last_error = Some(c.error_summary()).filter(|s| !s.is_empty());
    // 6. Cluster only: a node killed under the fleet.
    if let BrokerProc::Cluster { _guard, .. } = &mut broker {
        let held: Vec<&str> = (kill.node()..n)
            .step_by(3)
            .map(|i| sims[i].name.as_str())
            .collect();
        node_kill(r, _guard, &c, (kill, http, &held)).await;
    }
    drop(api);
    fleet.stop();
    drop(broker);
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// The broker as its own process (or processes): ours (`zedops` with only the broker), Mosquitto,
/// or a three-node rmqtt cluster (`zedops_tests::cluster`).
async fn start_broker(kind: &str) -> anyhow::Result<(BrokerProc, Addrs)> {
    let one = |a: SocketAddr| Addrs {
        agents: vec![a],
        api: a,
    };
    if kind == "embedded" {
        let (p, a) = procs::spawn_broker()?;
        return Ok((BrokerProc::Embedded(p), one(a)));
    }
    if kind == "cluster" {
        let before: Vec<u32> = procs::pids_named(zedops_tests::cluster::RMQTT_BIN);
        let cluster = Cluster::start(3, None).await?;
        let pids = procs::pids_named(zedops_tests::cluster::RMQTT_BIN)
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        let agents: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.mqtt).collect();
        let api = *agents.last().context("no node")?;
        let guard = BrokerProc::Cluster {
            _guard: cluster,
            pids,
        };
        return Ok((guard, Addrs { agents, api }));
    }
    let before: Vec<u32> = procs::pids_named("mosquitto");
    let m = Mosquitto::start().await?;
    let pid = procs::pids_named("mosquitto")
        .into_iter()
        .find(|p| !before.contains(p))
        .context("cannot find the new mosquitto process")?;
    let a = m.addr;
    Ok((BrokerProc::Mosquitto { _guard: m, pid }, one(a)))
}

/// Step 1: waits until every simulated agent is connected and every publish acknowledged.
async fn connect(r: &mut Run, c: &Counters, quick: bool) -> anyhow::Result<()> {
    let (kind, n) = (r.broker, r.n);
    let expected_pubs = (n * r.profile.pubs_per_agent()) as u64;
    // The embedded broker's first connection of a fleet grows with the square of its size
    // (~170 s for 5000 full agents on 2 cores, docs/benchmarks.md §6); the API restart (what the
    // target is about) can only be measured once the whole fleet is there.
    // ZEDOPS_BENCH_BOOT_S overrides the limit.
    let limit = Duration::from_secs(
        std::env::var("ZEDOPS_BENCH_BOOT_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(match (quick, r.profile) {
                (true, _) => 30,
                (false, Profile::Full | Profile::FullEveryResync) => 300,
                (false, Profile::Lean) => 150,
            }),
    );
    let t0 = Instant::now();
    let mut shown = 0;
    r.connect = wait_until(limit, || {
        let s = t0.elapsed().as_secs() / 10;
        if s > shown {
            shown = s;
            eprintln!(
                "[fleet] {kind}: {} s: {} of {n} connected, {} of {expected_pubs} publishes acknowledged, {} connection errors",
                s * 10,
                c.connected.load(Ordering::Relaxed),
                c.acked.load(Ordering::Relaxed),
                c.errors.load(Ordering::Relaxed)
            );
        }
        c.connected.load(Ordering::Relaxed) >= n as i64
            && c.acked.load(Ordering::Relaxed) >= expected_pubs
    })
    .await;
    if r.connect.is_none() {
        bail!(
            "the fleet did not connect and publish within {limit:?}: {} of {n} connected ({} CONNACKs), {} of {expected_pubs} publishes acknowledged, {} connection errors (last: {:?})",
            c.connected.load(Ordering::Relaxed),
            c.connacks.load(Ordering::Relaxed),
            c.acked.load(Ordering::Relaxed),
            c.errors.load(Ordering::Relaxed),
            c.error_summary()
        );
    }
    eprintln!(
        "[fleet] {kind}: {n} connected and published in {}",
        fmt_dur(r.connect.unwrap_or_default())
    );
    Ok(())
}

/// Step 2: the API's first start, a stop, and a second start, each until the whole fleet is
/// visible; then `GET /api/v1/agents` at this size and the API's idle memory. Returns the API.
async fn api_starts(r: &mut Run, addr: SocketAddr) -> anyhow::Result<(Proc, SocketAddr)> {
    let n = r.n as u64;
    let api_limit = Duration::from_secs(if n >= 5000 { 60 } else { 30 });
    let (mut api, _http, first) = start_api(addr, n, api_limit).await?;
    let first_ok = first.all.is_some();
    r.first = Some(first);
    if !first_ok {
        bail!("the API did not show the whole fleet within {api_limit:?} of its first start");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // the first start's resync replies
    api.terminate(Duration::from_secs(10));
    drop(api);
    let (api, http, restart) = start_api(addr, n, api_limit).await?;
    let restart_ok = restart.all.is_some();
    r.restart = Some(restart);
    if !restart_ok {
        bail!("the API did not show the whole fleet within {api_limit:?} of its restart");
    }
    if let Ok(mut conn) = Conn::open(&Target::Tcp(http)).await {
        let t0 = Instant::now();
        if let Ok(body) = conn.ok("GET", "/api/v1/agents").await {
            let d = t0.elapsed();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let listed = v.as_array().map(|a| a.len()).unwrap_or(0);
            r.agents_list = Some((d, listed, body.len()));
        }
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let au = api.usage();
    r.api_rss_idle = au.rss;
    r.api_hwm = au.hwm;
    Ok((api, http))
}

/// Step 6 (cluster): kills a node, which holds every third agent (agent `i` starts on node
/// `i % 3`, their names `held`); until each of them has a CONNACK from another node and its
/// republished state is acknowledged (at most 60 s), and, measured beside it, until the API
/// (at `http`, on a node that stays) has heard from each of them since the kill.
async fn node_kill(
    r: &mut Run,
    cluster: &mut Cluster,
    c: &Counters,
    (kill, http, names): (Kill, SocketAddr, &[&str]),
) {
    settle(r.n, c).await;
    let node = kill.node();
    let held = names.len();
    let (connacks0, acked0) = (
        c.connacks.load(Ordering::Relaxed),
        c.acked.load(Ordering::Relaxed),
    );
    let want_acks = (held * r.profile.pubs_per_agent()) as u64;
    let t0 = Instant::now();
    let killed_at = chrono::Utc::now();
    cluster.kill(node);
    let (mut first, mut half, mut all) = (None, None, None);
    let heard = api_heard_from(http, names, killed_at, Duration::from_secs(60));
    let back = wait_until(Duration::from_secs(60), || {
        let again = c.connacks.load(Ordering::Relaxed) - connacks0;
        let mark = |at: &mut Option<Duration>, reached: bool| {
            if reached && at.is_none() {
                *at = Some(t0.elapsed());
            }
        };
        mark(&mut first, again >= 1);
        mark(&mut half, again >= held as u64 / 2);
        mark(&mut all, again >= held as u64);
        again >= held as u64
            && c.connected.load(Ordering::Relaxed) >= r.n as i64
            && c.acked.load(Ordering::Relaxed) - acked0 >= want_acks
    });
    let (back, heard) = tokio::join!(back, heard);
    let at = |d: Option<Duration>| d.map(fmt_dur).unwrap_or_else(|| "-".into());
    eprintln!(
        "[fleet] {}: {} killed; its {held} agents' republished state all acknowledged in {} (CONNACK: first {}, half {}, all {}), heard by the API in {}; connection errors: {}",
        r.broker,
        kill.describe(),
        back.map(fmt_dur).unwrap_or_else(|| format!("more than 60 s (after {:?})", t0.elapsed())),
        at(first),
        at(half),
        at(all),
        heard.map(fmt_dur).unwrap_or_else(|| "more than 60 s".into()),
        c.error_summary()
    );
    r.node_kill = Some((kill, held, back, heard));
}

/// Until the whole fleet is connected and nothing has been acknowledged or received for 2 s
/// (at most 60 s): a node is killed under a quiet fleet, not one still working off the blast.
async fn settle(n: usize, c: &Counters) {
    let seen = || c.acked.load(Ordering::Relaxed) + c.received.load(Ordering::Relaxed);
    let (mut last, mut since) = (seen(), Instant::now());
    let quiet = wait_until(Duration::from_secs(60), || {
        let now = seen();
        if now != last {
            (last, since) = (now, Instant::now());
        }
        c.connected.load(Ordering::Relaxed) >= n as i64 && since.elapsed() >= Duration::from_secs(2)
    })
    .await;
    if quiet.is_none() {
        eprintln!("[fleet] the fleet did not settle within 60 s; killing the node anyway");
    }
}

/// A subscriber that counts what it receives (messages and bytes).
struct Subscriber {
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
    count: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Subscriber {
    async fn start(addr: SocketAddr) -> anyhow::Result<Self> {
        let count = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (client, task) = counting_subscriber(addr, count.clone(), bytes.clone()).await?;
        Ok(Self {
            client,
            task,
            count,
            bytes,
        })
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Step 3: the API's filters subscribed; until the 2N retained messages arrived.
async fn retained(r: &mut Run, sub: &Subscriber) -> anyhow::Result<()> {
    let t0 = Instant::now();
    sub.client
        .subscribe(topics::ALL_STATUS, QoS::AtMostOnce)
        .await?;
    sub.client
        .subscribe(topics::ALL_SNAPSHOTS, QoS::AtMostOnce)
        .await?;
    let want = 2 * r.n as u64;
    let got = wait_until(Duration::from_secs(15), || sub.count() >= want).await;
    r.retained = Some((got.unwrap_or_else(|| t0.elapsed()), sub.count()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// Step 4: every simulated agent republishes at once; until every republish is acknowledged
/// and nothing more arrives for 1 s (or 20 s). Records throughput and the CPU shares.
async fn blast(r: &mut Run, c: &Counters, sub: &Subscriber, bpids: &[u32]) -> anyhow::Result<()> {
    let recv0 = c.received.load(Ordering::Relaxed);
    let rbytes0 = c.received_bytes.load(Ordering::Relaxed);
    let acked0 = c.acked.load(Ordering::Relaxed);
    let count0 = sub.count();
    let bytes0 = sub.bytes.load(Ordering::Relaxed);
    let b1: Vec<Usage> = bpids.iter().map(|&p| Usage::of(p)).collect();
    let me0 = Usage::of(std::process::id());
    let t0 = Instant::now();
    sub.client
        .publish(BLAST, QoS::AtMostOnce, false, Vec::new())
        .await?;
    let blast_in = (r.n * r.profile.pubs_per_agent()) as u64;
    // Acknowledged republishes, copies at the counting subscriber (status and snapshot, 2N) and
    // the blast at every agent (N).
    let total = || {
        (c.acked.load(Ordering::Relaxed) - acked0)
            + (c.received.load(Ordering::Relaxed) - recv0)
            + (sub.count() - count0)
    };
    let mut last = total();
    let mut last_change = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = total();
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if c.acked.load(Ordering::Relaxed) - acked0 >= blast_in
            && last_change.elapsed() >= Duration::from_secs(1)
        {
            break;
        }
    }
    r.blast_expected = 3 * r.n as u64;
    let took = last_change.duration_since(t0);
    r.bench_cpu = Usage::cpu_share(&me0, &Usage::of(std::process::id()));
    let shares: Vec<f64> = (bpids.iter().zip(&b1))
        .map(|(&p, before)| Usage::cpu_share(before, &Usage::of(p)))
        .collect();
    r.broker_cpu = shares.iter().sum();
    // Step 5 adds each process's memory beside its share.
    r.broker_procs = shares.into_iter().map(|c| (0, 0, c)).collect();
    let delivered = (c.received.load(Ordering::Relaxed) - recv0) + (sub.count() - count0);
    let dbytes = (c.received_bytes.load(Ordering::Relaxed) - rbytes0)
        + (sub.bytes.load(Ordering::Relaxed) - bytes0);
    let acked = c.acked.load(Ordering::Relaxed) - acked0;
    r.blast = Some((took, acked, delivered, dbytes));
    Ok(())
}
