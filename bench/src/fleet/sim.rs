//! Simulated agents: what `zedops agent` does on the wire, with a simulated container runtime.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

use zedops_proto::client::Backoff;
use zedops_proto::failover::Failover;
use zedops_proto::BrokerUrl;

use super::probe::bench_options;

use super::*;

/// Counters shared by every simulated agent.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) connacks: AtomicU64,
    /// Simulated agents connected right now.
    pub(super) connected: std::sync::atomic::AtomicI64,
    /// Connections lost after a CONNACK (or refused): a sign that something broke.
    pub(super) errors: AtomicU64,
    /// Publishes queued (status, snapshot, per-container).
    pub(super) published: AtomicU64,
    /// PUBACKs received for them.
    pub(super) acked: AtomicU64,
    /// Publishes delivered to the simulated agents (their own per-container topics, resync).
    pub(super) received: AtomicU64,
    pub(super) received_bytes: AtomicU64,
    /// Publishes dropped because the client's queue was full.
    pub(super) dropped: AtomicU64,
    pub(super) last_error: std::sync::Mutex<Option<String>>,
    /// Connection errors by message, with the seconds since the fleet started of the first one.
    pub(super) error_kinds: std::sync::Mutex<std::collections::BTreeMap<String, (u64, f64)>>,
    pub(super) started: std::sync::OnceLock<Instant>,
}

impl Counters {
    pub(super) fn error(&self, e: String) {
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

    pub(super) fn error_summary(&self) -> String {
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
pub(super) struct SimAgent {
    pub(super) name: String,
    pub(super) containers: Vec<(String, Bytes)>,
    /// The containers as a JSON array, spliced into each snapshot.
    pub(super) containers_json: String,
    pub(super) counts: Counts,
    pub(super) started_at: chrono::DateTime<Utc>,
}

pub(super) fn hex(rng: &mut impl Rng, n: usize) -> String {
    (0..n)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}

impl SimAgent {
    pub(super) fn new(i: usize) -> Self {
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

    pub(super) fn status(&self, state: AgentState) -> Bytes {
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
            actions: Vec::new(),
        };
        Bytes::from(serde_json::to_vec(&s).unwrap_or_default())
    }

    pub(super) fn snapshot(&self, seq: u64) -> Bytes {
        let taken_at = serde_json::to_string(&Utc::now()).unwrap_or_default();
        Bytes::from(format!(
            "{{\"agent\":\"{}\",\"seq\":{seq},\"taken_at\":{taken_at},\"containers\":{}}}",
            self.name, self.containers_json
        ))
    }

    /// Status, snapshot and (`all`) every per-container topic: the agent publishes all after a
    /// CONNACK, status and snapshot on `fleet/resync`.
    pub(super) fn publish(
        &self,
        client: &AsyncClient,
        seq: u64,
        c: &Counters,
        profile: Profile,
        all: bool,
    ) {
        send_retained(
            client,
            c,
            topics::status(&self.name),
            self.status(AgentState::Online),
        );
        send_retained(client, c, topics::snapshot(&self.name), self.snapshot(seq));
        if profile == Profile::Lean || !all {
            return;
        }
        self.publish_containers(client, c);
    }

    /// Every per-container topic (retained, QoS 1).
    pub(super) fn publish_containers(&self, client: &AsyncClient, c: &Counters) {
        for (n, p) in &self.containers {
            send_retained(client, c, topics::container(&self.name, n), p.clone());
        }
    }

    /// The state once a connection's SUBACKs are in, as the agent publishes it
    /// (`agent/src/session.rs`, `publish_state`): everything on the first connection; after a
    /// reconnect status and snapshot at once, the per-container topics after a random wait up to
    /// `failover::PER_CONTAINER_SPREAD` unless the connection (`generation`) is gone by then.
    pub(super) fn publish_state(
        self: &Arc<Self>,
        (client, c): (&AsyncClient, &Arc<Counters>),
        (seq, profile): (u64, Profile),
        reconnect: Option<(Arc<AtomicU64>, u64)>,
    ) {
        let Some((generation, now)) = reconnect else {
            return self.publish(client, seq, c, profile, true);
        };
        self.publish(client, seq, c, profile, false);
        if profile == Profile::Lean {
            return;
        }
        let wait =
            zedops_proto::failover::PER_CONTAINER_SPREAD.mul_f64(rand::random_range(0.0..1.0));
        let (sim, client, c) = (self.clone(), client.clone(), c.clone());
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if generation.load(Ordering::Relaxed) == now {
                sim.publish_containers(&client, &c);
            }
        });
    }
}

/// One retained QoS 1 publish, queued without waiting, counted as published or dropped.
fn send_retained(client: &AsyncClient, c: &Counters, topic: String, payload: Bytes) {
    match client.try_publish(topic, QoS::AtLeastOnce, true, payload) {
        Ok(()) => c.published.fetch_add(1, Ordering::Relaxed),
        Err(_) => c.dropped.fetch_add(1, Ordering::Relaxed),
    };
}

/// Runs one simulated agent until `stop`: connected to `brokers[0]`, moving to the next as the
/// agent does (`zedops_proto::failover`) when it loses its broker.
pub(super) async fn sim_agent(
    sim: Arc<SimAgent>,
    brokers: Vec<SocketAddr>,
    c: Arc<Counters>,
    gate: Arc<Semaphore>,
    stop: Arc<AtomicBool>,
    profile: Profile,
) {
    let mut failover = sim_failover(&brokers);
    let (client, mut el) = AsyncClient::new(sim_options(&sim, failover.current()), 128);
    let group = format!("zedops-{:016x}", rand::rng().random::<u64>());
    let mut seq = 0u64;
    let mut up = false;
    // Connections since the start (the first publishes everything at once), and the current
    // one's number, which a deferred republish checks.
    let mut connections = 0u64;
    let generation = Arc::new(AtomicU64::new(0));
    // SUBACKs still to come since the last CONNACK: the agent publishes its state once they are
    // in (agent/src/subscribing.rs).
    let mut subacks = 0usize;
    // At most `gate` connections are being set up at once (the listen backlog is finite).
    let mut permit = gate.clone().acquire_owned().await.ok();
    while !stop.load(Ordering::Relaxed) {
        match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                permit.take();
                failover.connected();
                connections += 1;
                generation.store(connections, Ordering::Relaxed);
                c.connacks.fetch_add(1, Ordering::Relaxed);
                if !up {
                    up = true;
                    c.connected.fetch_add(1, Ordering::Relaxed);
                }
                // As the agent subscribes (session.rs), plus the bench-only blast topic (shared
                // as well, so that it adds no work the agent does not cause).
                let blast = topics::shared(&format!("{group}-blast"), BLAST);
                subacks = 0;
                for f in topics::agent_subscriptions(&group, &sim.name)
                    .into_iter()
                    .chain([blast])
                {
                    subacks += usize::from(client.try_subscribe(f, QoS::AtMostOnce).is_ok());
                }
                if subacks == 0 {
                    seq += 1;
                    let again = (connections > 1).then(|| (generation.clone(), connections));
                    sim.publish_state((&client, &c), (seq, profile), again);
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) if subacks > 0 => {
                subacks -= 1;
                if subacks == 0 {
                    seq += 1;
                    let again = (connections > 1).then(|| (generation.clone(), connections));
                    sim.publish_state((&client, &c), (seq, profile), again);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                c.acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                c.received.fetch_add(1, Ordering::Relaxed);
                c.received_bytes
                    .fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                if p.topic.as_ref() == topics::RESYNC.as_bytes()
                    && (profile == Profile::FullEveryResync
                        || zedops_proto::resync::asks(&p.payload, &sim.name))
                {
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
                generation.store(0, Ordering::Relaxed);
                if up {
                    up = false;
                    c.connected.fetch_sub(1, Ordering::Relaxed);
                }
                c.error(e.to_string());
                let timed_out = matches!(e, rumqttc::v5::ConnectionError::Timeout(_));
                let next = failover.retry(timed_out);
                if next.moved {
                    el.options = sim_options(&sim, failover.current());
                }
                if brokers.len() > 1 {
                    el.options.set_connection_timeout(next.timeout_s);
                }
                tokio::time::sleep(next.delay).await;
                permit = gate.clone().acquire_owned().await.ok();
            }
        }
    }
}

/// The agent's own failover over `brokers` (its backoff from 100 ms to 10 s).
fn sim_failover(brokers: &[SocketAddr]) -> Failover {
    let url = |a: &SocketAddr| BrokerUrl {
        host: a.ip().to_string(),
        port: a.port(),
        tls: false,
    };
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    Failover::new(
        url(&brokers[0]),
        brokers[1..].iter().map(url).collect(),
        backoff,
    )
}

/// A simulated agent's MQTT options for `broker`, as `zedops agent` sets them.
fn sim_options(sim: &SimAgent, broker: &BrokerUrl) -> MqttOptions {
    let id = zedops_proto::identity::agent_client_id(&sim.name);
    let mut opts = bench_options(id, &broker.host, broker.port, 15);
    opts.set_clean_start(true);
    // rumqttc 0.25 (v5) times out the TCP connect + CONNACK after MqttOptions' connection timeout
    // (default 5 s, also the agent's); see SIM_CONNECT_TIMEOUT.
    opts.set_connection_timeout(SIM_CONNECT_TIMEOUT);
    opts.set_last_will(LastWill::new(
        topics::status(&sim.name),
        sim.status(AgentState::Offline),
        QoS::AtLeastOnce,
        true,
        None,
    ));
    opts
}

pub(super) struct SimFleet {
    pub(super) counters: Arc<Counters>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SimFleet {
    /// `n` simulated agents; agent `i` connects to `brokers[i % len]`, then the others in turn.
    pub(super) fn start(
        n: usize,
        brokers: &[SocketAddr],
        sims: &[Arc<SimAgent>],
        profile: Profile,
    ) -> Self {
        let counters = Arc::new(Counters::default());
        let _ = counters.started.set(Instant::now());
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(Semaphore::new(connect_gate()));
        let tasks = sims[..n]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut own = brokers.to_vec();
                own.rotate_left(i % brokers.len());
                tokio::spawn(sim_agent(
                    s.clone(),
                    own,
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

    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Connections being set up at once (`ZEDOPS_BENCH_CONNECT_GATE`, default 200).
pub(super) fn connect_gate() -> usize {
    std::env::var("ZEDOPS_BENCH_CONNECT_GATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}
