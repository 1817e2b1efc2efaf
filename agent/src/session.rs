//! The agent's MQTT 5 session and main loop.
//!
//! Three tasks:
//! - the **poll task** drives rumqttc's event loop, reconnecting with capped exponential backoff and
//!   jitter, and forwards CONNACKs and incoming publishes through a bounded channel (it never awaits
//!   a publish itself: rumqttc deadlocks when the polling task does);
//! - the **Docker monitor** (re)connects to the engine and follows its event stream;
//! - the **main loop** owns the publisher: on every CONNACK it resubscribes (rumqttc does not) and,
//!   once the broker has answered the subscriptions (`subscribing`), republishes everything; it coalesces Docker events into republishes within ~25 ms, resyncs
//!   periodically and on `fleet/resync`, and spawns a task per request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use rand::Rng;
use rumqttc::v5::mqttbytes::v5::{
    LastWill, LastWillProperties, Packet, Publish, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop};
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};
use zedops_proto::topics::{self, Topic};
use zedops_proto::{AgentState, DockerStatus};

use crate::actions::Book;
use crate::dedup::Dedup;
use crate::docker::{self, Driver, DriverControl};
use crate::ha::Ha;
use crate::handlers::{Ctx, PublishRow, Registry};
use crate::publisher::{json, status_payload, Publisher, Republish};
use crate::{AgentConfig, AgentError};
use zedops_proto::client::Backoff;
use zedops_proto::failover::{self, Failover};
use zedops_proto::BrokerUrl;

use crate::events::{container_event, is_lifecycle, lags_behind, MAX_RECHECKS, RECHECK};
use crate::requests::{spawn_request, Serving};
use crate::trust::Trust;
/// User property carrying the requester's absolute deadline (Unix milliseconds). Brokers that do
/// not count Message Expiry down while a message waits (rumqttd) still let the agent tell that a
/// request's deadline has passed.
pub use zedops_proto::sign::DEADLINE_PROPERTY;

/// Time to gather a burst of Docker events before republishing.
const COALESCE: Duration = Duration::from_millis(25);

enum Inbound {
    Connected,
    /// A SUBACK: one reason code per filter of its SUBSCRIBE.
    Subscribed(Vec<SubscribeReasonCode>),
    Disconnected(String),
    Publish(Publish),
    /// The broker refuses the agent's credentials for good (`connection::REFUSALS_FOR_GOOD`).
    Refused(String),
}

enum DockerSignal {
    /// Availability changed (connected, or lost).
    Changed,
    /// A container event.
    Event(bollard::models::EventMessage),
    /// The event stream was re-opened: events may have been missed.
    Resync,
}

pub(crate) async fn run(
    cfg: AgentConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let agent = cfg.name.as_str().to_owned();
    let started_at = Utc::now();
    let host = zedops_proto::client::hostname().unwrap_or_else(|| "unknown".to_owned());

    // Operator-defined actions: the main loop serves them, and the Last Will advertises them too,
    // so that an agent that died still shows what it offers (greyed out) rather than nothing.
    let actions = Arc::new(Book::new(
        cfg.action_files.clone(),
        cfg.state_dir.as_deref(),
    ));
    log_refused(&actions.reload_files());
    let (opts, will) = mqtt_options(&cfg, &agent, &host, started_at, actions.clone())?;
    let backoff = Backoff::new(Duration::from_millis(100), cfg.reconnect_max);
    let brokers = Failover::new(cfg.broker.clone(), cfg.fallback_brokers.clone(), backoff);
    let mut first = opts(&cfg.broker, brokers.connect_timeout_s())?;
    first.set_last_will(will());
    let (client, eventloop) = AsyncClient::new(first, 16 * 1024);
    let (driver, monitor, docker) = start_docker(&agent, &cfg).await;
    let (in_tx, inbound) = mpsc::channel::<Inbound>(1024);
    let (stop_poll_tx, stop_poll_rx) = tokio::sync::oneshot::channel::<()>();
    let poll = tokio::spawn(
        poll_loop(eventloop, in_tx, stop_poll_rx, brokers, (opts, will))
            .instrument(info_span!("mqtt", agent = %agent)),
    );
    // Actions ask the main loop to publish their outcome before they reply (Ctx::published_row).
    let (publish_tx, rows) = mpsc::channel::<PublishRow>(64);
    let mut m = MainLoop::new(
        &cfg,
        &client,
        (&host, started_at),
        driver,
        publish_tx,
        actions,
    );
    info!(agent = %m.agent, broker = %cfg.broker, fallbacks = cfg.fallback_brokers.len(), docker = %cfg.docker.describe(), "agent starting");
    // --ha-stats: snapshots of every running container each interval (usage.rs).
    let (usage_tx, usage) = mpsc::channel(1);
    let sampler = cfg.stats_interval.map(|every| {
        let task = crate::usage::sample_every(m.driver.clone(), every, usage_tx);
        tokio::spawn(task.instrument(info_span!("stats", agent = %agent)))
    });
    let inputs = Inputs {
        inbound,
        docker,
        rows,
        usage,
    };
    m.serve(shutdown, inputs, cfg.resync_interval).await;
    if let Some(s) = &sampler {
        s.abort();
    }
    if let Some(cause) = m.refused.take() {
        monitor.abort();
        let _ = stop_poll_tx.send(());
        return Err(AgentError::Refused(cause));
    }

    info!("shutting down: publishing offline status");
    monitor.abort();
    // Signed like every status: an enrolled agent's unsigned "offline" was dropped by the API,
    // and a clean DISCONNECT fires no Last Will, so the agent stayed "online" (issue 14, item 6).
    m.publisher.publish_status(
        AgentState::Offline,
        DockerStatus::unavailable("the agent stopped, so Docker's state is unknown"),
    );
    let _ = client.try_disconnect();
    // The poll task sends the queued offline status and the DISCONNECT, then ends.
    let _ = stop_poll_tx.send(());
    if tokio::time::timeout(Duration::from_secs(3), poll)
        .await
        .is_err()
    {
        warn!("the broker did not take the offline status within 3 s");
    }
    Ok(())
}

/// The Docker driver and its monitor task, after the first connection attempt had a moment, so
/// that the first status already says whether Docker is there (instead of "not connected yet").
async fn start_docker(
    agent: &str,
    cfg: &AgentConfig,
) -> (
    Driver,
    tokio::task::JoinHandle<()>,
    mpsc::Receiver<DockerSignal>,
) {
    let (driver, control) = docker::driver(agent, cfg.docker.clone());
    let (dock_tx, mut dock_rx) = mpsc::channel::<DockerSignal>(1024);
    let monitor = tokio::spawn(
        docker_monitor(control, dock_tx).instrument(info_span!("docker", agent = %agent)),
    );
    if let Ok(Some(first)) = tokio::time::timeout(Duration::from_secs(3), dock_rx.recv()).await {
        if !matches!(first, DockerSignal::Changed) {
            debug!("unexpected first Docker signal");
        }
    }
    (driver, monitor, dock_rx)
}

/// What wakes the main loop besides its timers.
struct Inputs {
    /// MQTT: connections, requests, resyncs, Home Assistant commands (from the poll task).
    inbound: mpsc::Receiver<Inbound>,
    /// Docker: availability and container events (from the monitor task).
    docker: mpsc::Receiver<DockerSignal>,
    /// Rows that finished actions ask to have published before they reply.
    rows: mpsc::Receiver<PublishRow>,
    /// Stats snapshots to publish (`--ha-stats`; closed without it).
    usage: mpsc::Receiver<zedops_proto::ops::Stats>,
}

/// Signs the Last Will afresh (for each connection).
type WillFn = Box<dyn Fn() -> LastWill + Send>;

/// The agent's MQTT options for a broker and a handshake deadline (seconds).
type OptionsFn = Box<
    dyn Fn(&BrokerUrl, u64) -> Result<rumqttc::v5::MqttOptions, zedops_proto::client::TlsError>
        + Send,
>;

/// How to make the agent's MQTT options for any of its brokers, and how to sign its Last Will
/// afresh for each connection. Fails when TLS cannot be set up for one of the brokers.
fn mqtt_options(
    cfg: &AgentConfig,
    agent: &str,
    host: &str,
    started_at: chrono::DateTime<Utc>,
    actions: Arc<Book>,
) -> Result<(OptionsFn, WillFn), AgentError> {
    let (client_id, credentials) = (cfg.client_id(), cfg.credentials.clone());
    let (keep_alive, tls) = (cfg.keep_alive, cfg.tls.clone());
    let options = move |broker: &BrokerUrl, connect_timeout_s: u64| {
        let mut opts = zedops_proto::client::mqtt_options(zedops_proto::client::Connect {
            client_id: client_id.clone(),
            broker,
            credentials: credentials.clone(),
            keep_alive,
            connect_timeout_s,
        });
        zedops_proto::client::set_tls(&mut opts, broker, &tls)?;
        Ok(opts)
    };
    // The first broker's options are made at once by the caller; the others are checked here,
    // so that a TLS set-up that cannot work fails at start, not at the first failover.
    for b in &cfg.fallback_brokers {
        options(b, zedops_proto::failover::FIRST_TIMEOUT_S)?;
    }
    let signing_key = cfg.signing.as_ref().map(|s| s.key.clone());
    let (agent, host) = (agent.to_owned(), host.to_owned());
    let will = move || {
        let offline =
            DockerStatus::unavailable("the agent is offline, so Docker's state is unknown");
        let status = status_payload(
            &agent,
            &host,
            started_at,
            (AgentState::Offline, offline),
            Default::default(),
            actions.advertised(),
        );
        last_will(&agent, &status, signing_key.as_ref())
    };
    Ok((Box::new(options), Box::new(will)))
}

/// What request tasks share: the op registry (v1 and `cfg.registry` over it), the duplicate
/// cache, the request slots and the trust rules.
fn serving(
    cfg: &AgentConfig,
    client: AsyncClient,
    ctx: Arc<Ctx>,
    started_at: chrono::DateTime<Utc>,
) -> Serving {
    let mut registry = Registry::v1();
    if let Some(extra) = cfg.registry.clone() {
        registry.extend(extra);
    }
    Serving {
        client,
        ctx,
        registry: Arc::new(registry),
        dedup: Arc::new(Mutex::new(Dedup::new(4096))),
        permits: Arc::new(crate::admission::Admission::new(
            cfg.max_concurrent_requests,
            cfg.max_concurrent_actions,
        )),
        trust: Arc::new(Trust {
            signing: cfg.signing.clone(),
            accept_unsigned: cfg.accept_unsigned,
            started_ms: u64::try_from(started_at.timestamp_millis()).unwrap_or(0),
        }),
    }
}

/// The main loop's state; one method per kind of thing that wakes it.
struct MainLoop {
    agent: String,
    /// This process's shared-subscription group name.
    group: String,
    driver: Driver,
    publisher: Publisher,
    ha: Option<Ha>,
    serving: Serving,
    connected: bool,
    /// Docker events gathered for the next republish, due at `flush_at`.
    pending_events: Vec<bollard::models::EventMessage>,
    flush_at: Option<tokio::time::Instant>,
    /// Lists taken again because the last still lagged an event.
    rechecks: u32,
    /// A `fleet/resync` answer due (after a random delay, so a fleet does not answer at once).
    resync_at: Option<tokio::time::Instant>,
    /// Operator-defined actions (also in `serving.ctx`).
    actions: Arc<Book>,
    /// The action labels of the containers last read into `actions`.
    action_labels: Option<crate::actions::ActionLabels>,
    /// The snapshot `seq` the actions were last synced with (`None`: sync at the next turn).
    actions_synced: Option<u64>,
    /// Set when the broker refused the agent's credentials for good: the loop ends.
    refused: Option<String>,
    /// Since the last CONNACK, the subscriptions the broker has not answered yet: the state is
    /// published once it has (or at their deadline).
    subscribing: Option<crate::subscribing::Pending>,
    /// Whether a connection was up before: the state of a reconnect goes out in two steps
    /// (`publish_state`).
    was_connected: bool,
    /// When the per-container topics and Home Assistant's discovery go out after a reconnect.
    everything_at: Option<tokio::time::Instant>,
}

impl MainLoop {
    fn new(
        cfg: &AgentConfig,
        client: &AsyncClient,
        (host, started_at): (&str, chrono::DateTime<Utc>),
        driver: Driver,
        publish: mpsc::Sender<PublishRow>,
        actions: Arc<Book>,
    ) -> Self {
        let agent = cfg.name.as_str().to_owned();
        let ctx = Arc::new(Ctx {
            agent: agent.clone(),
            driver: driver.clone(),
            publish,
            actions: actions.clone(),
            streams: Default::default(),
        });
        let record = cfg.state_dir.as_deref();
        let mut publisher = Publisher::new(
            client.clone(),
            &agent,
            host,
            started_at,
            cfg.signing.as_ref().map(|s| s.key.clone()),
            cfg.container_topics,
            record.map(|d| crate::retained::Record::new(d, &agent)),
        );
        publisher.set_actions(actions.advertised());
        MainLoop {
            // Requests and the fleet resync arrive through shared-subscription groups of this
            // process (topics::agent_subscriptions): random, so no other client joins them by
            // guessing.
            group: format!("zedops-{:016x}", rand::rng().random::<u64>()),
            serving: serving(cfg, client.clone(), ctx, started_at),
            // Home Assistant discovery and `/set` commands (ha/): only with --ha.
            ha: cfg.ha.as_ref().map(|h| Ha::new(client.clone(), &agent, h)),
            agent,
            driver,
            publisher,
            connected: false,
            pending_events: Vec::new(),
            flush_at: None,
            rechecks: 0,
            resync_at: None,
            actions,
            action_labels: None,
            actions_synced: None,
            refused: None,
            subscribing: None,
            was_connected: false,
            everything_at: None,
        }
    }

    /// Serves until `shutdown` completes or an input closes: one branch per kind of wake-up.
    async fn serve(
        &mut self,
        shutdown: impl std::future::Future<Output = ()>,
        mut i: Inputs,
        resync_interval: Duration,
    ) {
        let mut periodic = tokio::time::interval(resync_interval);
        periodic.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        periodic.tick().await;
        let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
        tokio::pin!(shutdown);
        let mut hangup = hangups();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(()) = next_hangup(&mut hangup) => {
                    info!("SIGHUP: reading the action files again");
                    log_refused(&self.actions.reload_files());
                    self.action_labels = None;
                    self.actions_synced = None;
                }
                msg = i.inbound.recv() => {
                    let Some(msg) = msg else { break };
                    if let Inbound::Refused(cause) = msg {
                        self.refused = Some(cause);
                        break;
                    }
                    self.on_inbound(msg).await;
                }
                sig = i.docker.recv() => {
                    let Some(sig) = sig else { break };
                    self.on_docker(sig).await;
                }
                _ = tokio::time::sleep_until(self.flush_at.unwrap_or_else(far)), if self.flush_at.is_some() => {
                    self.flush_events().await;
                }
                Some(first) = i.rows.recv() => self.answer_rows(first, &mut i.rows).await,
                Some(stats) = i.usage.recv() => {
                    if self.connected {
                        self.publisher.publish_stats(&stats);
                    }
                }
                _ = tokio::time::sleep_until(self.resync_at.unwrap_or_else(far)), if self.resync_at.is_some() => {
                    self.resync_at = None;
                    self.refresh(Republish::Snapshot).await;
                }
                _ = periodic.tick() => {
                    self.refresh(Republish::Snapshot).await;
                }
                _ = tokio::time::sleep_until(self.subscribing.as_ref().map_or_else(far, |p| p.by)), if self.subscribing.is_some() => {
                    let missing = self.subscribing.take().map(|p| p.unanswered().join(", "));
                    warn!(filters = ?missing, "no SUBACK from the broker within 5 s; publishing the state anyway");
                    self.publish_state().await;
                }
                _ = tokio::time::sleep_until(self.everything_at.unwrap_or_else(far)), if self.everything_at.is_some() => {
                    self.publish_everything().await;
                }
            }
            // Actions follow the containers' labels (and the files, after SIGHUP).
            self.sync_actions();
            // Home Assistant: discovery follows the container list, whichever branch above
            // refreshed it (new containers appear, destroyed ones are removed). Cheap when
            // unchanged.
            if let Some(h) = &mut self.ha {
                h.sync(self.publisher.current());
            }
        }
    }

    async fn refresh(&mut self, again: Republish) -> bool {
        refresh(&self.driver, &mut self.publisher, again).await
    }

    /// Reads the containers' action labels when they changed, and publishes the status when the
    /// actions served changed.
    fn sync_actions(&mut self) {
        // Cheap on the way of every request: nothing to do unless the list or the files changed.
        let seq = self.publisher.seq();
        if self.actions_synced == Some(seq) {
            return;
        }
        self.actions_synced = Some(seq);
        if let Some(list) = self.publisher.current() {
            let labels = crate::actions::labels_of(list);
            if self.action_labels.as_ref() != Some(&labels) {
                log_refused(&self.actions.set_containers(list));
                self.action_labels = Some(labels);
            }
        }
        let advertised = self.actions.advertised();
        if let Some(h) = &mut self.ha {
            h.sync_actions(&advertised, self.publisher.current());
        }
        let names: Vec<String> = advertised.iter().map(|a| a.name.clone()).collect();
        if self.publisher.set_actions(advertised) {
            info!(actions = ?names, "the actions served changed");
            self.publisher
                .publish_status(AgentState::Online, self.driver.status());
        }
    }

    async fn on_inbound(&mut self, msg: Inbound) {
        match msg {
            Inbound::Connected => self.on_connected().await,
            Inbound::Subscribed(codes) => {
                let done = self
                    .subscribing
                    .as_mut()
                    .is_some_and(|p| p.answered(&codes));
                if done {
                    self.subscribing = None;
                    self.publish_state().await;
                }
            }
            Inbound::Disconnected(reason) => {
                if self.connected {
                    warn!(%reason, "lost the broker; reconnecting");
                }
                self.connected = false;
                self.subscribing = None;
                self.everything_at = None;
                self.publisher.set_connected(false);
            }
            Inbound::Publish(p) => self.on_publish(p).await,
            // Handled in `serve`: the loop ends.
            Inbound::Refused(_) => {}
        }
    }

    /// After every CONNACK: subscribe again (rumqttc does not), and republish everything once
    /// the broker has answered the subscriptions (`Inbound::Subscribed`): the state says the
    /// agent is online, so requests must reach it by then.
    async fn on_connected(&mut self) {
        self.connected = true;
        info!("connected to the broker; subscribing, then publishing state");
        let subs = topics::agent_subscriptions(&self.group, &self.agent);
        // With --ha, also HA's topics (ha/: `/set`, `{prefix}/status`, our configs).
        let ha_subs = self.ha.iter().flat_map(|h| h.subscriptions(&self.group));
        let client = &self.serving.client;
        let mut sent = Vec::new();
        for s in subs.into_iter().chain(ha_subs) {
            match client.try_subscribe(s.clone(), QoS::AtMostOnce) {
                Ok(()) => sent.push(s),
                Err(e) => warn!(filter = %s, error = %e, "subscribe dropped"),
            }
        }
        if sent.is_empty() {
            self.publish_state().await;
        } else {
            self.subscribing = Some(crate::subscribing::Pending::new(sent));
        }
    }

    /// The connection is ready (its subscriptions answered), so retained state goes out from now
    /// on: everything on the agent's first connection; after a reconnect the status and snapshot
    /// at once and the rest after a random wait ([`failover::PER_CONTAINER_SPREAD`]).
    async fn publish_state(&mut self) {
        self.publisher.set_connected(true);
        if !std::mem::replace(&mut self.was_connected, true) {
            return self.publish_everything().await;
        }
        self.refresh(Republish::Snapshot).await;
        let wait = failover::PER_CONTAINER_SPREAD.mul_f64(rand::random_range(0.0..1.0));
        self.everything_at = Some(tokio::time::Instant::now() + wait);
    }

    /// Everything again, per-container topics and Home Assistant's discovery included.
    async fn publish_everything(&mut self) {
        self.everything_at = None;
        self.publisher.set_connected(true);
        self.refresh(Republish::Everything).await;
        if let Some(h) = &mut self.ha {
            h.publish_all(self.publisher.current());
        }
    }

    async fn on_publish(&mut self, p: Publish) {
        let topic = String::from_utf8_lossy(&p.topic).into_owned();
        match topics::parse(&topic) {
            Some(Topic::Request { agent, op }) if agent == self.agent => {
                let op = op.to_owned();
                spawn_request(p, op, &self.serving);
            }
            Some(Topic::Resync) if zedops_proto::resync::asks(&p.payload, &self.agent) => {
                let delay = Duration::from_millis(rand::rng().random_range(0..1000));
                self.resync_at
                    .get_or_insert(tokio::time::Instant::now() + delay);
            }
            // Home Assistant: action buttons on `…/actions/{name}/run`.
            Some(Topic::ActionRun { agent, action }) if agent == self.agent => {
                if let Some(h) = &self.ha {
                    h.press(action, &p, &self.serving.ctx, &self.serving.registry);
                }
            }
            // Home Assistant: commands on `…/containers/{name}/set`.
            Some(Topic::ContainerSet { agent, name }) if agent == self.agent => {
                if let Some(h) = &self.ha {
                    h.command(name, &p, &self.serving.ctx, &self.serving.registry);
                }
            }
            // Home Assistant: its birth message (discovery again, then the states) and leftover
            // discovery configs.
            None if self.ha.is_some() => {
                let current = self.publisher.current();
                if self
                    .ha
                    .as_mut()
                    .is_some_and(|h| h.on_publish(&topic, &p, current))
                {
                    self.refresh(Republish::Everything).await;
                }
            }
            _ => debug!(%topic, "ignoring message"),
        }
    }

    async fn on_docker(&mut self, sig: DockerSignal) {
        match sig {
            DockerSignal::Changed => {
                let status = self.driver.status();
                info!(docker = ?status.state, error = ?status.error, "Docker availability changed");
                let available = status.state == zedops_proto::DockerAvailability::Available;
                if !self.refresh(Republish::Changes).await || available {
                    // The status changed even when the container list did not.
                    self.publisher.publish_status(AgentState::Online, status);
                }
            }
            DockerSignal::Event(ev) => {
                self.pending_events.push(ev);
                self.flush_at
                    .get_or_insert(tokio::time::Instant::now() + COALESCE);
            }
            DockerSignal::Resync => {
                self.refresh(Republish::Changes).await;
            }
        }
    }

    /// Republishes after a burst of Docker events, and publishes the events themselves.
    async fn flush_events(&mut self) {
        self.flush_at = None;
        self.refresh(Republish::Changes).await;
        let behind = lags_behind(&self.pending_events, self.publisher.current());
        for ev in std::mem::take(&mut self.pending_events) {
            if let Some(e) = container_event(&self.agent, &ev, self.publisher.current()) {
                self.publisher.publish_event(&e);
            }
        }
        // Docker can report an event a moment before its list shows the new state: look again
        // shortly rather than leave the old state published until the next event.
        if behind && self.rechecks < MAX_RECHECKS {
            self.rechecks += 1;
            self.flush_at = Some(tokio::time::Instant::now() + RECHECK);
        } else {
            self.rechecks = 0;
        }
    }

    /// Actions waiting for their outcome to be published (`Ctx::published_row`): one list
    /// answers every one waiting by now.
    async fn answer_rows(&mut self, first: PublishRow, rx: &mut mpsc::Receiver<PublishRow>) {
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let listed = self.refresh(Republish::Changes).await;
        for w in waiting {
            let row = listed
                .then(|| {
                    self.publisher
                        .current()?
                        .iter()
                        .find(|c| c.id == w.id)
                        .cloned()
                })
                .flatten();
            let _ = w.reply.send(row);
        }
    }
}

fn log_refused(refused: &[crate::actions::Refused]) {
    for r in refused {
        warn!(origin = %r.origin, "action refused: {}", r.message);
    }
}

/// SIGHUP, when this process can receive it.
fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup())
        .map_err(|e| warn!(error = %e, "cannot watch SIGHUP: action files are read at start only"))
        .ok()
}

async fn next_hangup(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Lists containers and publishes what changed, plus the status. Returns false when Docker could
/// not be listed (the last known snapshot stays published).
async fn refresh(driver: &Driver, publisher: &mut Publisher, again: Republish) -> bool {
    let force = again != Republish::Changes;
    match driver.list(true).await {
        Ok(list) => {
            let changed = publisher.update(list, again);
            if changed || force {
                publisher.publish_status(AgentState::Online, driver.status());
            }
            true
        }
        Err(e) => {
            debug!(error = %e, "cannot list containers");
            if force {
                publisher.publish_status(AgentState::Online, driver.status());
            }
            false
        }
    }
}

/// The Last Will: a signed `offline` status. It is signed afresh for every connection, so that
/// the API takes each fired will once and a replay of an old one is no news
/// (`api/src/freshness.rs`).
fn last_will(
    agent: &str,
    will: &zedops_proto::AgentStatus,
    key: Option<&zedops_proto::sign::KeyPair>,
) -> LastWill {
    let payload = json(will);
    let props = key.map(|key| LastWillProperties {
        delay_interval: None,
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: crate::publisher::signature_properties(
            key,
            &topics::status(agent),
            None,
            &payload,
        ),
    });
    LastWill::new(
        topics::status(agent),
        payload,
        QoS::AtLeastOnce,
        true,
        props,
    )
}

/// Drives the MQTT connection: forwards what arrives to the main loop, and on each failure
/// waits and reconnects, to the next of the brokers when `brokers` says so (`failover`).
async fn poll_loop(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Inbound>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    mut brokers: Failover,
    (options, will): (OptionsFn, WillFn),
) {
    let mut stopping = false;
    let mut log = crate::connection::ReconnectLog::default();
    loop {
        let ev = tokio::select! {
            ev = eventloop.poll() => ev,
            _ = &mut stop, if !stopping => {
                // Keep polling until the queued offline status and DISCONNECT are written.
                stopping = true;
                continue;
            }
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                brokers.connected();
                log.connected();
                if tx.try_send(Inbound::Connected).is_err() {
                    warn!("main loop busy; CONNACK not forwarded");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Err(e) = tx.try_send(Inbound::Publish(p)) {
                    warn!(error = %e, "main loop busy; incoming message dropped");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(a))) => {
                if tx.try_send(Inbound::Subscribed(a.return_codes)).is_err() {
                    warn!("main loop busy; SUBACK not forwarded");
                }
            }
            Ok(Event::Incoming(Packet::Disconnect(d))) => {
                warn!(reason = ?d.reason_code, "the broker disconnected us");
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) if stopping => return,
            Ok(_) => {}
            Err(e) => {
                if stopping {
                    return;
                }
                let _ = tx.try_send(Inbound::Disconnected(e.to_string()));
                let failure = crate::connection::describe(&e, &brokers.current().to_string());
                let next = brokers.retry(matches!(e, ConnectionError::Timeout(_)));
                if log.failed(&failure, next.delay) {
                    let _ = tx.send(Inbound::Refused(failure.cause)).await;
                    return;
                }
                if next.moved {
                    match options(brokers.current(), next.timeout_s) {
                        Ok(o) => eventloop.options = o,
                        Err(e) => warn!(error = %e, "cannot set up TLS to the next broker"),
                    }
                    let (in_ms, timeout_s) = (next.delay_ms(), next.timeout_s);
                    info!(broker = %brokers.current(), in_ms, timeout_s, "trying the next broker");
                }
                eventloop.options.set_connection_timeout(next.timeout_s);
                eventloop.options.set_last_will(will());
                tokio::select! {
                    _ = tokio::time::sleep(next.delay) => {}
                    _ = &mut stop => return,
                }
            }
        }
    }
}

async fn docker_monitor(control: DriverControl, tx: mpsc::Sender<DockerSignal>) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
    let mut known_unavailable = false;
    let mut first = true;
    loop {
        match control.connect().await {
            Ok(docker) => {
                backoff.reset();
                if known_unavailable || first {
                    info!(docker = %control.target().describe(), "connected to Docker");
                    known_unavailable = false;
                    first = false;
                    if tx.send(DockerSignal::Changed).await.is_err() {
                        return;
                    }
                } else if tx.send(DockerSignal::Resync).await.is_err() {
                    return;
                }
                let mut events = Box::pin(docker::container_events(&docker));
                loop {
                    match events.next().await {
                        Some(Ok(ev)) => {
                            if ev.action.as_deref().is_some_and(is_lifecycle)
                                && tx.send(DockerSignal::Event(ev)).await.is_err()
                            {
                                return;
                            }
                        }
                        Some(Err(e)) => {
                            debug!(error = %e, "Docker event stream ended");
                            break;
                        }
                        None => break,
                    }
                }
                if !control.ping().await {
                    control.set_unavailable(format!(
                        "lost the connection to Docker at {}",
                        control.target().describe()
                    ));
                    warn!("lost Docker; retrying");
                    known_unavailable = true;
                    if tx.send(DockerSignal::Changed).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                if !known_unavailable {
                    let reason = e.to_string();
                    warn!(%reason, "Docker is unavailable; retrying");
                    control.set_unavailable(reason);
                    known_unavailable = true;
                    first = false;
                    if tx.send(DockerSignal::Changed).await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}
