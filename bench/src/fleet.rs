//! Scenario 6: fleet scale with simulated agents.
//!
//! A simulated agent is a plain MQTT 5 client (rumqttc, as the agent) that does on the wire what
//! `zedops agent` does, with a simulated container runtime: Last Will (offline status, retained);
//! after every CONNACK it subscribes to its request topics and `fleet/resync` (shared-subscription
//! groups of its own, `topics::agent_subscriptions`), and publishes its retained status, snapshot
//! (25 containers) and per-container topics (QoS 1, like the agent); on `fleet/resync` it
//! republishes status and snapshot after a random delay of up to 1 s. Many share this process and
//! its runtime.
//!
//! For each fleet size N, with the broker as its own process and the API as another:
//! 1. connect N simulated agents and let them publish;
//! 2. start the API (`zedops serve --no-auth --broker …`), stop it, start it again, and time each
//!    start until the API shows every agent online and every container (`/metrics`);
//! 3. a subscriber with the API's filters subscribes (retained delivery of 2N messages);
//! 4. blast: every simulated agent republishes at once (27 N publishes) — broker throughput;
//! 5. resident memory and CPU of broker and API.
//!
//! The reference is the same run with Mosquitto as the broker.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use chrono::Utc;
use rand::Rng;
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::Semaphore;
use zedops_proto::{
    topics, AgentState, AgentStatus, Container, ContainerState, Counts, DockerAvailability,
    DockerStatus, Port,
};
use zedops_tests::procs::Mosquitto;

use crate::http::{Conn, Target};
use crate::procs::{self, Proc, Usage};
use crate::stats::{fmt_bytes, fmt_dur, Table};
use crate::Opts;

/// Containers per simulated agent.
pub const CONTAINERS: usize = 25;
/// Seconds a simulated agent waits for its CONNACK. rumqttc's default (and the agent's) is 5 s;
/// during a connection storm rumqttd answers later than that, and the resulting reconnects with
/// the same client id make rumqttd 0.20 panic (see docs/benchmarks.md). 30 s measures the fleet
/// rather than that failure.
const SIM_CONNECT_TIMEOUT: u64 = 30;
/// Outgoing QoS 1 publishes in flight per simulated client.
const SIM_INFLIGHT: u16 = 100;
/// Bench-only topic: every simulated agent republishes everything at once (no jitter).
const BLAST: &str = "zedops-bench/blast";

/// What a simulated agent does on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Exactly what `zedops agent` does: publishes status, snapshot and 25 per-container topics.
    Full,
    /// What `zedops agent --no-container-topics` does: publishes status and snapshot only.
    Lean,
}

impl Profile {
    fn pubs_per_agent(self) -> usize {
        match self {
            Profile::Full => CONTAINERS + 2,
            Profile::Lean => 2,
        }
    }
}

/// Counters shared by every simulated agent.
#[derive(Default)]
struct Counters {
    connacks: AtomicU64,
    /// Simulated agents connected right now.
    connected: std::sync::atomic::AtomicI64,
    /// Connections lost after a CONNACK (or refused): a sign that something broke.
    errors: AtomicU64,
    /// Publishes queued (status, snapshot, per-container).
    published: AtomicU64,
    /// PUBACKs received for them.
    acked: AtomicU64,
    /// Publishes delivered to the simulated agents (their own per-container topics, resync).
    received: AtomicU64,
    received_bytes: AtomicU64,
    /// Publishes dropped because the client's queue was full.
    dropped: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
    /// Connection errors by message, with the seconds since the fleet started of the first one.
    error_kinds: std::sync::Mutex<std::collections::BTreeMap<String, (u64, f64)>>,
    started: std::sync::OnceLock<Instant>,
}

impl Counters {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let at = self
            .started
            .get()
            .map(|s| s.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        if let Ok(mut k) = self.error_kinds.lock() {
            k.entry(e.clone()).or_insert((0, at)).0 += 1;
        }
        if let Ok(mut l) = self.last_error.lock() {
            *l = Some(e);
        }
    }

    fn error_summary(&self) -> String {
        self.error_kinds
            .lock()
            .map(|k| {
                k.iter()
                    .map(|(e, (n, at))| format!("{n}× \"{e}\" (first after {at:.1} s)"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }
}

/// What one simulated agent publishes; payloads prepared once.
struct SimAgent {
    name: String,
    containers: Vec<(String, Bytes)>,
    /// The containers as a JSON array, spliced into each snapshot.
    containers_json: String,
    counts: Counts,
    started_at: chrono::DateTime<Utc>,
}

fn hex(rng: &mut impl Rng, n: usize) -> String {
    (0..n)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}

impl SimAgent {
    fn new(i: usize) -> Self {
        let mut rng = rand::rng();
        let name = format!("sim-{i:05}");
        let list: Vec<Container> = (0..CONTAINERS)
            .map(|j| {
                let id = hex(&mut rng, 64);
                Container {
                    short_id: id[..12].to_owned(),
                    id,
                    name: format!("svc-{j:02}"),
                    image: format!("registry.example/team/app-{j:02}:1.{j}.0"),
                    image_id: format!("sha256:{}", hex(&mut rng, 64)),
                    command: "/usr/local/bin/app --config /etc/app/config.toml serve".into(),
                    state: if j % 10 == 9 {
                        ContainerState::Exited
                    } else {
                        ContainerState::Running
                    },
                    status: if j % 10 == 9 {
                        "Exited (0) 2 hours ago".into()
                    } else {
                        "Up 3 hours".into()
                    },
                    health: (j % 3 == 0).then(|| "healthy".to_owned()),
                    created_at: Utc::now() - chrono::Duration::hours(3),
                    ports: vec![Port {
                        private_port: 8080,
                        public_port: Some(18000 + j as u16),
                        protocol: "tcp".into(),
                        ip: Some("0.0.0.0".into()),
                    }],
                    labels: [
                        ("com.docker.compose.project".to_owned(), "stack".to_owned()),
                        (
                            "com.docker.compose.service".to_owned(),
                            format!("svc-{j:02}"),
                        ),
                        (
                            "org.opencontainers.image.version".to_owned(),
                            format!("1.{j}.0"),
                        ),
                    ]
                    .into_iter()
                    .collect(),
                }
            })
            .collect();
        let containers = list
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    Bytes::from(serde_json::to_vec(c).unwrap_or_default()),
                )
            })
            .collect();
        Self {
            containers_json: serde_json::to_string(&list).unwrap_or_default(),
            counts: Counts::of(&list),
            containers,
            name,
            started_at: Utc::now(),
        }
    }

    fn status(&self, state: AgentState) -> Bytes {
        let s = AgentStatus {
            agent: self.name.clone(),
            state,
            version: zedops_proto::VERSION.to_owned(),
            hostname: format!("host-{}", self.name),
            docker: DockerStatus {
                state: DockerAvailability::Available,
                version: Some("20.10.24 (simulated)".into()),
                api_version: Some("1.41".into()),
                error: None,
            },
            started_at: self.started_at,
            counts: self.counts,
            updated_at: Utc::now(),
        };
        Bytes::from(serde_json::to_vec(&s).unwrap_or_default())
    }

    fn snapshot(&self, seq: u64) -> Bytes {
        let taken_at = serde_json::to_string(&Utc::now()).unwrap_or_default();
        Bytes::from(format!(
            "{{\"agent\":\"{}\",\"seq\":{seq},\"taken_at\":{taken_at},\"containers\":{}}}",
            self.name, self.containers_json
        ))
    }

    /// Status, snapshot and (`all`) every per-container topic: the agent publishes all after a
    /// CONNACK, status and snapshot on `fleet/resync`.
    fn publish(&self, client: &AsyncClient, seq: u64, c: &Counters, profile: Profile, all: bool) {
        let send = |topic: String, payload: Bytes| match client.try_publish(
            topic,
            QoS::AtLeastOnce,
            true,
            payload,
        ) {
            Ok(()) => {
                c.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                c.dropped.fetch_add(1, Ordering::Relaxed);
            }
        };
        send(topics::status(&self.name), self.status(AgentState::Online));
        send(topics::snapshot(&self.name), self.snapshot(seq));
        if profile == Profile::Lean || !all {
            return;
        }
        for (n, p) in &self.containers {
            send(topics::container(&self.name, n), p.clone());
        }
    }
}

/// Runs one simulated agent until `stop`.
async fn sim_agent(
    sim: Arc<SimAgent>,
    broker: SocketAddr,
    c: Arc<Counters>,
    gate: Arc<Semaphore>,
    stop: Arc<AtomicBool>,
    profile: Profile,
) {
    let mut opts = MqttOptions::new(
        zedops_proto::identity::agent_client_id(&sim.name),
        broker.ip().to_string(),
        broker.port(),
    );
    opts.set_keep_alive(Duration::from_secs(15));
    opts.set_clean_start(true);
    opts.set_max_packet_size(Some(zedops_proto::MAX_PACKET_BYTES as u32));
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    opts.set_network_options(net);
    // rumqttc 0.25 (v5) times out the TCP connect + CONNACK after MqttOptions' connection timeout
    // (default 5 s, also the agent's); see SIM_CONNECT_TIMEOUT.
    opts.set_connection_timeout(SIM_CONNECT_TIMEOUT);
    // rumqttc 0.25 sizes its outgoing in-flight table by this limit (default u16::MAX: a
    // 65 536-slot Vec<Option<Publish>> written at creation, ~13 MiB resident per client).
    opts.set_outgoing_inflight_upper_limit(SIM_INFLIGHT);
    opts.set_last_will(LastWill::new(
        topics::status(&sim.name),
        sim.status(AgentState::Offline),
        QoS::AtLeastOnce,
        true,
        None,
    ));
    let (client, mut el) = AsyncClient::new(opts, 128);
    let group = format!("zedops-{:016x}", rand::rng().random::<u64>());
    let mut seq = 0u64;
    let mut up = false;
    // At most `gate` connections are being set up at once (the listen backlog is finite).
    let mut permit = gate.clone().acquire_owned().await.ok();
    while !stop.load(Ordering::Relaxed) {
        match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                permit.take();
                c.connacks.fetch_add(1, Ordering::Relaxed);
                if !up {
                    up = true;
                    c.connected.fetch_add(1, Ordering::Relaxed);
                }
                // As the agent subscribes (session.rs), plus the bench-only blast topic (shared
                // as well, so that it adds no work the agent does not cause).
                let blast = topics::shared(&format!("{group}-blast"), BLAST);
                for f in topics::agent_subscriptions(&group, &sim.name)
                    .into_iter()
                    .chain([blast])
                {
                    let _ = client.try_subscribe(f, QoS::AtMostOnce);
                }
                seq += 1;
                sim.publish(&client, seq, &c, profile, true);
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                c.acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                c.received.fetch_add(1, Ordering::Relaxed);
                c.received_bytes
                    .fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                if p.topic.as_ref() == topics::RESYNC.as_bytes() {
                    let delay = Duration::from_millis(rand::rng().random_range(0..1000));
                    let (sim, client, c) = (sim.clone(), client.clone(), c.clone());
                    seq += 1;
                    let s = seq;
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        sim.publish(&client, s, &c, profile, false);
                    });
                } else if p.topic.as_ref() == BLAST.as_bytes() {
                    seq += 1;
                    sim.publish(&client, seq, &c, profile, true);
                }
            }
            Ok(_) => {}
            Err(e) => {
                permit.take();
                if up {
                    up = false;
                    c.connected.fetch_sub(1, Ordering::Relaxed);
                }
                c.error(e.to_string());
                let pause = Duration::from_millis(rand::rng().random_range(500..1500));
                tokio::time::sleep(pause).await;
                permit = gate.clone().acquire_owned().await.ok();
            }
        }
    }
}

struct SimFleet {
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SimFleet {
    fn start(n: usize, broker: SocketAddr, sims: &[Arc<SimAgent>], profile: Profile) -> Self {
        let counters = Arc::new(Counters::default());
        let _ = counters.started.set(Instant::now());
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(Semaphore::new(connect_gate()));
        let tasks = sims[..n]
            .iter()
            .map(|s| {
                tokio::spawn(sim_agent(
                    s.clone(),
                    broker,
                    counters.clone(),
                    gate.clone(),
                    stop.clone(),
                    profile,
                ))
            })
            .collect();
        Self {
            counters,
            stop,
            tasks,
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Polls `until` every 20 ms for up to `limit`; returns the time it took.
async fn wait_until(limit: Duration, mut until: impl FnMut() -> bool) -> Option<Duration> {
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
async fn api_counts(http: SocketAddr) -> Option<(u64, u64)> {
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
struct ApiStart {
    /// Spawn → banner printed (process up, listening).
    up: Duration,
    /// Spawn → every agent online.
    agents: Option<Duration>,
    /// Spawn → every agent online and every container known.
    all: Option<Duration>,
    last_seen: (u64, u64),
    usage_at_all: Usage,
}

async fn start_api(
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

/// A subscriber with the API's filters, counting what it receives.
async fn counting_subscriber(
    broker: SocketAddr,
    count: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
) -> anyhow::Result<(AsyncClient, tokio::task::JoinHandle<()>)> {
    let mut opts = MqttOptions::new(
        format!("zedops-bench-counter-{}", std::process::id()),
        broker.ip().to_string(),
        broker.port(),
    );
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_outgoing_inflight_upper_limit(SIM_INFLIGHT);
    opts.set_max_packet_size(Some(zedops_proto::MAX_PACKET_BYTES as u32));
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    opts.set_network_options(net);
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

/// Everything measured for one fleet size and one broker.
struct Run {
    broker: &'static str,
    profile: Profile,
    n: usize,
    connect: Option<Duration>,
    first: Option<ApiStart>,
    restart: Option<ApiStart>,
    agents_list: Option<(Duration, usize, usize)>,
    retained: Option<(Duration, u64)>,
    blast: Option<(Duration, u64, u64, u64)>,
    broker_rss: u64,
    broker_hwm: u64,
    broker_fds: usize,
    broker_cpu: f64,
    bench_cpu: f64,
    blast_expected: u64,
    api_rss_idle: u64,
    api_hwm: u64,
    bench_rss: u64,
    errors: u64,
    dropped: u64,
    failure: Option<String>,
    last_error: Option<String>,
}

impl Run {
    fn label(&self) -> String {
        match self.profile {
            Profile::Full => self.broker.to_owned(),
            Profile::Lean => format!("{}, agents with --no-container-topics", self.broker),
        }
    }
}

enum BrokerProc {
    Embedded(Proc),
    Mosquitto { _guard: Mosquitto, pid: u32 },
}

impl BrokerProc {
    fn pid(&self) -> u32 {
        match self {
            BrokerProc::Embedded(p) => p.pid(),
            BrokerProc::Mosquitto { pid, .. } => *pid,
        }
    }
}

async fn one_run(
    kind: &'static str,
    profile: Profile,
    n: usize,
    sims: &[Arc<SimAgent>],
    quick: bool,
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
        bench_cpu: 0.0,
        blast_expected: 0,
        api_rss_idle: 0,
        api_hwm: 0,
        bench_rss: 0,
        errors: 0,
        dropped: 0,
        failure: None,
        last_error: None,
    };
    if let Err(e) = one_run_inner(&mut r, kind, profile, n, sims, quick).await {
        r.failure = Some(format!("{e:#}"));
    }
    r
}

async fn one_run_inner(
    r: &mut Run,
    kind: &'static str,
    profile: Profile,
    n: usize,
    sims: &[Arc<SimAgent>],
    quick: bool,
) -> anyhow::Result<()> {
    eprintln!("[fleet] {kind}: {n} simulated agents × {CONTAINERS} containers ({profile:?})");
    let (broker, addr) = if kind == "embedded" {
        let (p, a) = procs::spawn_broker()?;
        (BrokerProc::Embedded(p), a)
    } else {
        let before: Vec<u32> = procs::pids_named("mosquitto");
        let m = Mosquitto::start().await?;
        let pid = procs::pids_named("mosquitto")
            .into_iter()
            .find(|p| !before.contains(p))
            .context("cannot find the new mosquitto process")?;
        let a = m.addr;
        (BrokerProc::Mosquitto { _guard: m, pid }, a)
    };
    let bpid = broker.pid();
    let b0 = Usage::of(bpid);
    let expected_pubs = (n * profile.pubs_per_agent()) as u64;

    // 1. Connect the fleet.
    let fleet = SimFleet::start(n, addr, sims, profile);
    let c = fleet.counters.clone();
    // The embedded broker's first connection of a fleet grows with the square of its size
    // (~170 s for 5000 full agents on 2 cores, docs/benchmarks.md §6); the API restart (what the
    // target is about) can only be measured once the whole fleet is there.
    // ZEDOPS_BENCH_BOOT_S overrides the limit.
    let limit = Duration::from_secs(
        std::env::var("ZEDOPS_BENCH_BOOT_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(match (quick, profile) {
                (true, _) => 30,
                (false, Profile::Full) => 300,
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

    // 2. The API: first start, stop, start again.
    let api_limit = Duration::from_secs(if n >= 5000 { 60 } else { 30 });
    let (mut api, _http, first) = start_api(addr, n as u64, api_limit).await?;
    let first_ok = first.all.is_some();
    r.first = Some(first);
    if !first_ok {
        bail!("the API did not show the whole fleet within {api_limit:?} of its first start");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // the first start's resync replies
    api.terminate(Duration::from_secs(10));
    drop(api);
    let (api, http, restart) = start_api(addr, n as u64, api_limit).await?;
    let restart_ok = restart.all.is_some();
    r.restart = Some(restart);
    if !restart_ok {
        bail!("the API did not show the whole fleet within {api_limit:?} of its restart");
    }
    // GET /api/v1/agents at this size.
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

    // 3. Retained delivery to a new subscriber with the API's filters (2N messages).
    let count = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let (sub, sub_task) = counting_subscriber(addr, count.clone(), bytes.clone()).await?;
    let t0 = Instant::now();
    sub.subscribe(topics::ALL_STATUS, QoS::AtMostOnce).await?;
    sub.subscribe(topics::ALL_SNAPSHOTS, QoS::AtMostOnce)
        .await?;
    let want = 2 * n as u64;
    let got = wait_until(Duration::from_secs(15), || {
        count.load(Ordering::Relaxed) >= want
    })
    .await;
    r.retained = Some((
        got.unwrap_or_else(|| t0.elapsed()),
        count.load(Ordering::Relaxed),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 4. Blast: every simulated agent republishes its 27 messages at once.
    let recv0 = c.received.load(Ordering::Relaxed);
    let rbytes0 = c.received_bytes.load(Ordering::Relaxed);
    let acked0 = c.acked.load(Ordering::Relaxed);
    let count0 = count.load(Ordering::Relaxed);
    let bytes0 = bytes.load(Ordering::Relaxed);
    let b1 = Usage::of(bpid);
    let me0 = Usage::of(std::process::id());
    let t0 = Instant::now();
    sub.publish(BLAST, QoS::AtMostOnce, false, Vec::new())
        .await?;
    let blast_in = expected_pubs;
    // Done when every republish is acknowledged and every copy reached the counting subscriber
    // (status and snapshot, 2N) and the blast reached every agent (N): finished when every
    // republish is acknowledged and nothing more arrives for 1 s (or 20 s).
    let total = || {
        (c.acked.load(Ordering::Relaxed) - acked0)
            + (c.received.load(Ordering::Relaxed) - recv0)
            + (count.load(Ordering::Relaxed) - count0)
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
    r.blast_expected = 3 * n as u64;
    let took = last_change.duration_since(t0);
    let me = Usage::of(std::process::id());
    r.bench_cpu = Usage::cpu_share(&me0, &me);
    let b2 = Usage::of(bpid);
    let delivered =
        (c.received.load(Ordering::Relaxed) - recv0) + (count.load(Ordering::Relaxed) - count0);
    let dbytes = (c.received_bytes.load(Ordering::Relaxed) - rbytes0)
        + (bytes.load(Ordering::Relaxed) - bytes0);
    r.blast = Some((
        took,
        c.acked.load(Ordering::Relaxed) - acked0,
        delivered,
        dbytes,
    ));
    r.broker_cpu = Usage::cpu_share(&b1, &b2);
    sub_task.abort();
    let _ = b0;

    let bu = Usage::of(bpid);
    r.broker_rss = bu.rss;
    r.broker_hwm = bu.hwm;
    r.broker_fds = procs::fd_count(bpid);
    r.bench_rss = Usage::of(std::process::id()).rss;
    r.errors = c.errors.load(Ordering::Relaxed);
    r.dropped = c.dropped.load(Ordering::Relaxed);
    r.last_error = Some(c.error_summary()).filter(|s| !s.is_empty());

    drop(api);
    fleet.stop();
    drop(broker);
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

pub async fn run(o: &Opts) -> anyhow::Result<Vec<Table>> {
    let sizes: Vec<usize> = o.fleet_sizes.clone();
    let max = sizes.iter().copied().max().unwrap_or(0);
    let t0 = Instant::now();
    let sims: Vec<Arc<SimAgent>> = (0..max).map(|i| Arc::new(SimAgent::new(i))).collect();
    // The payloads must parse as the API parses them.
    if let Some(s) = sims.first() {
        serde_json::from_slice::<zedops_proto::Snapshot>(&s.snapshot(1))
            .context("simulated snapshot")?;
        serde_json::from_slice::<AgentStatus>(&s.status(AgentState::Online))
            .context("simulated status")?;
    }
    let snap_size = sims.first().map(|s| s.snapshot(1).len()).unwrap_or(0);
    let cont_size = sims
        .first()
        .map(|s| s.containers.iter().map(|(_, b)| b.len()).sum::<usize>() / CONTAINERS.max(1))
        .unwrap_or(0);
    eprintln!(
        "[fleet] prepared {max} simulated agents in {}",
        fmt_dur(t0.elapsed())
    );

    let mut runs = Vec::new();
    for &n in &sizes {
        for kind in o.fleet_brokers.iter().map(String::as_str) {
            let kind: &'static str = if kind == "mosquitto" {
                "mosquitto"
            } else {
                "embedded"
            };
            runs.push(one_run(kind, Profile::Full, n, &sims, o.quick).await);
            // Where the embedded broker cannot take the full profile at this size, also measure the
            // API against it with agents that publish no per-container topics.
            let failed = runs.last().is_some_and(|r| r.failure.is_some());
            if kind == "embedded" && (failed || n >= 5000) {
                runs.push(one_run(kind, Profile::Lean, n, &sims, o.quick).await);
            }
        }
    }

    let mut t = Table::new(
        format!("6a. Fleet scale: API (re)start until every agent and container is visible ({CONTAINERS} containers per agent)"),
        &[
            "agents",
            "broker",
            "fleet connect + publish",
            "API up",
            "API first start → all visible",
            "API restart → all agents online",
            "API restart → all visible",
            "target",
        ],
    );
    let mut t2 = Table::new(
        "6b. Fleet scale: broker throughput and resources",
        &[
            "agents",
            "broker",
            "retained to a new subscriber (2N msgs)",
            "blast: N×27 publishes in",
            "in msg/s",
            "out msg/s (MB/s), delivered/expected",
            "CPU in blast: broker / sim agents",
            "broker RSS (peak)",
            "broker fds",
            "API RSS idle (peak)",
            "API CPU to all visible",
            "GET /api/v1/agents",
        ],
    );
    let o_dur = |d: Option<Duration>| d.map(fmt_dur).unwrap_or_else(|| "—".into());
    for r in &runs {
        let restart_all = r.restart.as_ref().and_then(|s| s.all);
        let target = if r.broker == "mosquitto" {
            "reference".to_owned()
        } else if r.n >= 5000 && r.profile == Profile::Full && r.failure.is_some() {
            "5000 agents ≤ 10 s: MISSED (fleet never fully connected)".into()
        } else if r.n >= 5000 {
            match restart_all {
                Some(d) if d <= Duration::from_secs(10) => "5000 agents ≤ 10 s: ok".into(),
                _ => "5000 agents ≤ 10 s: MISSED".into(),
            }
        } else {
            String::new()
        };
        t.row(vec![
            r.n.to_string(),
            r.label(),
            o_dur(r.connect),
            o_dur(r.restart.as_ref().map(|s| s.up)),
            o_dur(r.first.as_ref().and_then(|s| s.all)),
            o_dur(r.restart.as_ref().and_then(|s| s.agents)),
            o_dur(restart_all),
            target,
        ]);
        let (blast_in, in_rate, out_rate, cpu) = match r.blast {
            Some((d, acked, delivered, bytes)) => {
                let s = d.as_secs_f64().max(1e-9);
                (
                    format!("{} ({} acked)", fmt_dur(d), acked),
                    format!("{:.0}", acked as f64 / s),
                    format!(
                        "{:.0} ({:.1}), {delivered}/{}",
                        delivered as f64 / s,
                        bytes as f64 / s / 1e6,
                        r.blast_expected
                    ),
                    format!(
                        "{:.0} % / {:.0} %",
                        r.broker_cpu * 100.0,
                        r.bench_cpu * 100.0
                    ),
                )
            }
            None => ("—".into(), "—".into(), "—".into(), "—".into()),
        };
        t2.row(vec![
            r.n.to_string(),
            r.label(),
            r.retained
                .map(|(d, got)| format!("{} ({got})", fmt_dur(d)))
                .unwrap_or_else(|| "—".into()),
            blast_in,
            in_rate,
            out_rate,
            cpu,
            format!("{} ({})", fmt_bytes(r.broker_rss), fmt_bytes(r.broker_hwm)),
            r.broker_fds.to_string(),
            format!("{} ({})", fmt_bytes(r.api_rss_idle), fmt_bytes(r.api_hwm)),
            r.restart
                .as_ref()
                .map(|s| format!("{:.2} s", s.usage_at_all.cpu.as_secs_f64()))
                .unwrap_or_else(|| "—".into()),
            r.agents_list
                .map(|(d, listed, size)| {
                    format!(
                        "{} ({listed} agents, {})",
                        fmt_dur(d),
                        fmt_bytes(size as u64)
                    )
                })
                .unwrap_or_else(|| "—".into()),
        ]);
        if let Some(f) = &r.failure {
            let seen = r
                .restart
                .as_ref()
                .or(r.first.as_ref())
                .map(|s| {
                    format!(
                        " (API last saw {} agents online, {} containers)",
                        s.last_seen.0, s.last_seen.1
                    )
                })
                .unwrap_or_default();
            t.note(format!("{} agents, {}: FAILED: {f}{seen}", r.n, r.label()));
        }
        if r.errors > 0 || r.dropped > 0 {
            t.note(format!(
                "{} agents, {}: {} connection errors, {} publishes dropped by full client queues ({})",
                r.n,
                r.label(),
                r.errors,
                r.dropped,
                r.last_error.clone().unwrap_or_default()
            ));
        }
    }
    t.note(format!(
        "Simulated agents: rumqttc MQTT 5 clients in the benchmark process (one runtime, 2 cores shared with broker and API); per agent a {} snapshot and {CONTAINERS} per-container topics of ~{} each, retained, QoS 1. At most 200 connections are being set up at once.",
        fmt_bytes(snap_size as u64),
        fmt_bytes(cont_size as u64)
    ));
    t.note("\"API up\": spawn until `zedops serve --broker …` prints its banner. \"all visible\": /metrics shows zedops_agents_online = N and zedops_containers_known = 25 N (polled every 25 ms). The API rebuilds from retained status and snapshots, then its fleet/resync makes every agent republish within 1 s.");
    t2.note("Blast: a bench-only topic makes every simulated agent republish status, snapshot and 25 per-container topics at once (27 N QoS 1 publishes, acknowledged). Out: copies delivered to one subscriber with the API's filters (2 N) and the blast itself to every agent (N); the API gets another 2 N not counted here (agents no longer subscribe to their own per-container topics). Broker CPU is its process's share of one core during the blast (200 % = both cores).");
    for r in &runs {
        if let Some((_, _, delivered, _)) = r.blast {
            if delivered < r.blast_expected {
                t2.note(format!(
                    "{} agents, {}: {} of {} copies never arrived: QoS 0 deliveries the broker dropped under the burst (every republish was acknowledged, so every agent got the blast).",
                    r.n,
                    r.label(),
                    r.blast_expected - delivered,
                    r.blast_expected
                ));
            }
        }
    }
    t2.note(format!(
        "Benchmark process (simulated agents) RSS, largest seen: {}. Open files limit of this process: {}.",
        fmt_bytes(runs.iter().map(|r| r.bench_rss).max().unwrap_or(0)),
        procs::nofile_limit().map(|n| n.to_string()).unwrap_or_else(|| "?".into())
    ));
    Ok(vec![t, t2])
}

/// Connections being set up at once (`ZEDOPS_BENCH_CONNECT_GATE`, default 200).
fn connect_gate() -> usize {
    std::env::var("ZEDOPS_BENCH_CONNECT_GATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

#[cfg(test)]
mod tests {
    /// rumqttc 0.25 (v5) allocates `vec![None; inflight_limit + 1]` of `Option<Publish>` per client,
    /// with a default limit of u16::MAX: the size of that table is what an MQTT client (agent, API,
    /// simulated agent) holds resident unless the limit is lowered.
    #[test]
    fn default_inflight_table_size() {
        let slot = std::mem::size_of::<Option<rumqttc::v5::mqttbytes::v5::Publish>>();
        let table = slot * (u16::MAX as usize + 1);
        println!("Option<Publish>: {slot} bytes; default in-flight table: {table} bytes");
        assert!(table > 8 * 1024 * 1024, "{table}");
    }
}
