//! The agent's MQTT 5 session and main loop.
//!
//! Three tasks:
//! - the **poll task** drives rumqttc's event loop, reconnecting with capped exponential backoff and
//!   jitter, and forwards CONNACKs and incoming publishes through a bounded channel (it never awaits
//!   a publish itself: rumqttc deadlocks when the polling task does);
//! - the **Docker monitor** (re)connects to the engine and follows its event stream;
//! - the **main loop** owns the publisher: on every CONNACK it resubscribes (rumqttc does not) and
//!   republishes everything; it coalesces Docker events into republishes within ~25 ms, resyncs
//!   periodically and on `fleet/resync`, and spawns a task per request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use rand::Rng;
use rumqttc::v5::mqttbytes::v5::{LastWill, LastWillProperties, Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};
use zedops_proto::topics::{self, Topic};
use zedops_proto::{AgentState, DockerStatus};

use crate::dedup::Dedup;
use crate::docker::{self, Driver, DriverControl};
use crate::ha::Ha;
use crate::handlers::{Ctx, PublishRow, Registry};
use crate::publisher::{json, status_payload, Publisher, Republish};
use crate::{AgentConfig, AgentError};
use zedops_proto::client::Backoff;

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
    Disconnected(String),
    Publish(Publish),
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

    // Generous connect timeout: a broker busy with a connection storm (a fleet restarting)
    // answers late, and a client that gives up reconnects with the same client id, which makes
    // the storm worse (docs/benchmarks.md).
    let mut opts = zedops_proto::client::mqtt_options(zedops_proto::client::Connect {
        client_id: cfg.client_id(),
        broker: &cfg.broker,
        credentials: cfg.credentials.clone(),
        tls_ca: cfg.tls_ca.as_deref(),
        keep_alive: cfg.keep_alive,
        connect_timeout_s: 30,
    })
    .map_err(AgentError::Config)?;
    let signing_key = cfg.signing.as_ref().map(|s| s.key.clone());
    let will = {
        let (agent, host) = (agent.clone(), host.clone());
        move || last_will(&agent, &host, started_at, signing_key.as_ref())
    };
    opts.set_last_will(will());
    let (client, eventloop) = AsyncClient::new(opts, 16 * 1024);

    let (driver, control) = docker::driver(&agent, cfg.docker.clone());
    let (dock_tx, mut dock_rx) = mpsc::channel::<DockerSignal>(1024);
    let monitor = tokio::spawn(
        docker_monitor(control, dock_tx).instrument(info_span!("docker", agent = %agent)),
    );
    // Give the first Docker attempt a moment before meeting the broker, so the first status
    // already says whether Docker is there (instead of "not connected yet").
    if let Ok(Some(first)) = tokio::time::timeout(Duration::from_secs(3), dock_rx.recv()).await {
        if !matches!(first, DockerSignal::Changed) {
            debug!("unexpected first Docker signal");
        }
    }
    let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(1024);
    let (stop_poll_tx, stop_poll_rx) = tokio::sync::oneshot::channel::<()>();
    let poll = tokio::spawn(
        poll_loop(
            eventloop,
            in_tx,
            stop_poll_rx,
            Backoff::new(Duration::from_millis(100), cfg.reconnect_max),
            Box::new(will),
        )
        .instrument(info_span!("mqtt", agent = %agent)),
    );

    // Actions ask the main loop to publish their outcome before they reply (Ctx::published_row).
    let (publish_tx, mut publish_rx) = mpsc::channel::<PublishRow>(64);
    let ctx = Arc::new(Ctx {
        agent: agent.clone(),
        driver: driver.clone(),
        publish: publish_tx,
    });
    let mut registry = Registry::v1();
    if let Some(extra) = cfg.registry.clone() {
        registry.extend(extra);
    }
    let registry = Arc::new(registry);
    let dedup = Arc::new(Mutex::new(Dedup::new(4096)));
    let permits = Arc::new(crate::admission::Admission::new(
        cfg.max_concurrent_requests,
        cfg.max_concurrent_actions,
    ));
    let mut publisher = Publisher::new(
        client.clone(),
        &agent,
        &host,
        started_at,
        cfg.signing.as_ref().map(|s| s.key.clone()),
        cfg.container_topics,
        cfg.state_dir
            .as_deref()
            .map(|d| crate::retained::Record::new(d, &agent)),
    );
    // Requests and the fleet resync arrive through shared-subscription groups of this process
    // (topics::agent_subscriptions): random, so no other client joins them by guessing.
    let group = format!("zedops-{:016x}", rand::rng().random::<u64>());
    let serving = Serving {
        client: client.clone(),
        ctx: ctx.clone(),
        registry: registry.clone(),
        dedup: dedup.clone(),
        permits: permits.clone(),
        trust: Arc::new(Trust {
            signing: cfg.signing.clone(),
            accept_unsigned: cfg.accept_unsigned,
            started_ms: u64::try_from(started_at.timestamp_millis()).unwrap_or(0),
        }),
    };
    // Home Assistant discovery and `/set` commands (issue 6, ha.rs): only with --ha.
    let mut ha = cfg.ha.as_ref().map(|h| Ha::new(client.clone(), &agent, h));

    let mut connected = false;
    let mut pending_events: Vec<bollard::models::EventMessage> = Vec::new();
    let mut flush_at: Option<tokio::time::Instant> = None;
    let mut rechecks = 0u32;
    let mut resync_at: Option<tokio::time::Instant> = None;
    let mut periodic = tokio::time::interval(cfg.resync_interval);
    periodic.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    periodic.tick().await;
    let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);

    tokio::pin!(shutdown);
    info!(agent = %agent, broker = %cfg.broker, docker = %cfg.docker.describe(), "agent starting");
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            msg = in_rx.recv() => {
                let Some(msg) = msg else { break };
                match msg {
                    Inbound::Connected => {
                        connected = true;
                        publisher.set_connected(true);
                        info!("connected to the broker; subscribing and publishing state");
                        let subs = topics::agent_subscriptions(&group, &agent);
                        // With --ha, also HA's topics (ha.rs: `/set`, `{prefix}/status`, our configs).
                        let ha_subs = ha.iter().flat_map(|h| h.subscriptions(&group));
                        for s in subs.into_iter().chain(ha_subs) {
                            if let Err(e) = client.try_subscribe(s.clone(), QoS::AtMostOnce) {
                                warn!(filter = %s, error = %e, "subscribe dropped");
                            }
                        }
                        refresh(&driver, &mut publisher, Republish::Everything).await;
                        // Home Assistant: every discovery config after every CONNACK.
                        if let Some(h) = &mut ha {
                            h.publish_all(publisher.current());
                        }
                    }
                    Inbound::Disconnected(reason) => {
                        if connected {
                            warn!(%reason, "lost the broker; reconnecting");
                        }
                        connected = false;
                        publisher.set_connected(false);
                    }
                    Inbound::Publish(p) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        match topics::parse(&topic) {
                            Some(Topic::Request { agent: a, op }) if a == agent => {
                                let op = op.to_owned();
                                spawn_request(p, op, &serving);
                            }
                            Some(Topic::Resync) => {
                                let delay = Duration::from_millis(rand::rng().random_range(0..1000));
                                resync_at.get_or_insert(tokio::time::Instant::now() + delay);
                            }
                            // Home Assistant (issue 6, ha.rs): commands on `…/containers/{name}/set`.
                            Some(Topic::ContainerSet { agent: a, name }) if a == agent && ha.is_some() => {
                                if let Some(h) = &ha {
                                    h.command(name, &p, &ctx, &registry);
                                }
                            }
                            // Home Assistant: its birth message (discovery again, then the states)
                            // and leftover discovery configs.
                            None if ha.is_some() => {
                                if ha.as_mut().is_some_and(|h| h.on_publish(&topic, &p, publisher.current())) {
                                    refresh(&driver, &mut publisher, Republish::Everything).await;
                                }
                            }
                            _ => debug!(%topic, "ignoring message"),
                        }
                    }
                }
            }
            sig = dock_rx.recv() => {
                let Some(sig) = sig else { break };
                match sig {
                    DockerSignal::Changed => {
                        let status = driver.status();
                        info!(docker = ?status.state, error = ?status.error, "Docker availability changed");
                        if !refresh(&driver, &mut publisher, Republish::Changes).await || status.state == zedops_proto::DockerAvailability::Available {
                            // The status changed even when the container list did not.
                            publisher.publish_status(AgentState::Online, status);
                        }
                    }
                    DockerSignal::Event(ev) => {
                        pending_events.push(ev);
                        flush_at.get_or_insert(tokio::time::Instant::now() + COALESCE);
                    }
                    DockerSignal::Resync => {
                        refresh(&driver, &mut publisher, Republish::Changes).await;
                    }
                }
            }
            _ = tokio::time::sleep_until(flush_at.unwrap_or_else(far)), if flush_at.is_some() => {
                flush_at = None;
                refresh(&driver, &mut publisher, Republish::Changes).await;
                let behind = lags_behind(&pending_events, publisher.current());
                for ev in pending_events.drain(..) {
                    if let Some(e) = container_event(&agent, &ev, publisher.current()) {
                        publisher.publish_event(&e);
                    }
                }
                // Docker can report an event a moment before its list shows the new state: look
                // again shortly rather than leave the old state published until the next event.
                if behind && rechecks < MAX_RECHECKS {
                    rechecks += 1;
                    flush_at = Some(tokio::time::Instant::now() + RECHECK);
                } else {
                    rechecks = 0;
                }
            }
            Some(first) = publish_rx.recv() => {
                // One list answers every action waiting by now.
                let mut waiting = vec![first];
                while let Ok(more) = publish_rx.try_recv() {
                    waiting.push(more);
                }
                let listed = refresh(&driver, &mut publisher, Republish::Changes).await;
                for w in waiting {
                    let row = listed
                        .then(|| publisher.current()?.iter().find(|c| c.id == w.id).cloned())
                        .flatten();
                    let _ = w.reply.send(row);
                }
            }
            _ = tokio::time::sleep_until(resync_at.unwrap_or_else(far)), if resync_at.is_some() => {
                resync_at = None;
                refresh(&driver, &mut publisher, Republish::Snapshot).await;
            }
            _ = periodic.tick() => {
                refresh(&driver, &mut publisher, Republish::Snapshot).await;
            }
        }
        // Home Assistant (issue 6): discovery follows the container list, whichever branch above
        // refreshed it (new containers appear, destroyed ones are removed). Cheap when unchanged.
        if let Some(h) = &mut ha {
            h.sync(publisher.current());
        }
    }

    info!("shutting down: publishing offline status");
    monitor.abort();
    // Signed like every status: an enrolled agent's unsigned "offline" was dropped by the API,
    // and a clean DISCONNECT fires no Last Will, so the agent stayed "online" (issue 14, item 6).
    publisher.publish_status(
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
    host: &str,
    started_at: chrono::DateTime<Utc>,
    key: Option<&zedops_proto::sign::KeyPair>,
) -> LastWill {
    let will = status_payload(
        agent,
        host,
        started_at,
        AgentState::Offline,
        DockerStatus::unavailable("the agent is offline, so Docker's state is unknown"),
        Default::default(),
    );
    let payload = json(&will);
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

async fn poll_loop(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Inbound>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    mut backoff: Backoff,
    will: Box<dyn Fn() -> LastWill + Send>,
) {
    let mut stopping = false;
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
                backoff.reset();
                if tx.try_send(Inbound::Connected).is_err() {
                    warn!("main loop busy; CONNACK not forwarded");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Err(e) = tx.try_send(Inbound::Publish(p)) {
                    warn!(error = %e, "main loop busy; incoming message dropped");
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
                eventloop.options.set_last_will(will());
                let delay = backoff.next_delay();
                debug!(error = %e, ?delay, "MQTT connection error; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
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
            Err(reason) => {
                if !known_unavailable {
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
