//! The API's MQTT 5 session and its requester.
//!
//! The session subscribes (again after every CONNACK) to every agent's status, snapshot and
//! events, and to this API instance's reply topic; the retained status and snapshots rebuild the
//! fleet. The API never trusts that every retained message arrived: once they had time to arrive
//! ([`fill_gaps`]), it asks the agents whose state is incomplete to republish, and everyone when it
//! knows no agent at all. It does not ask the whole fleet at every CONNACK: 10 000 agents
//! republishing their snapshots while the broker delivers the same retained ones made Mosquitto
//! drop thousands of copies, which took several gap-filling rounds (docs/benchmarks.md).
//!
//! The requester sends a request with Response Topic, Correlation Data, Message Expiry Interval
//! (its deadline) and the absolute deadline as a user property, and waits for the reply with that
//! deadline. The in-flight map is bounded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop};
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, info, warn};
use zedops_proto::ops::Op;
use zedops_proto::topics::{self, Topic};
use zedops_proto::{BrokerUrl, ErrorBody, ErrorCode, Reply};

use crate::cache::{Change, Fleet};
use crate::metrics::Metrics;
use zedops_proto::failover::Failover;

pub use zedops_proto::sign::DEADLINE_PROPERTY;
/// Most requests waiting for a reply at once.
pub const MAX_IN_FLIGHT: usize = 10_000;

/// How the API reaches the broker.
#[derive(Clone)]
pub struct MqttConfig {
    pub broker: BrokerUrl,
    /// More brokers (of one cluster) to move to, in order, when the current one is lost.
    pub fallback_brokers: Vec<BrokerUrl>,
    pub credentials: Option<(String, String)>,
    /// Client id; default `zedops-api-<random>` (one response topic per API instance).
    pub client_id: Option<String>,
    /// TLS to an `mqtts://` broker: the CA (default the system's roots), a client certificate.
    pub tls: zedops_proto::client::TlsSettings,
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConfig")
            .field("broker", &self.broker.to_string())
            .field("fallback_brokers", &self.fallback_brokers)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .field("client_id", &self.client_id)
            .finish()
    }
}

/// Shared by the session task and the HTTP handlers.
pub struct Link {
    pub client: AsyncClient,
    pub client_id: String,
    pub reply_topic: String,
    pub connected: AtomicBool,
    /// Set by [`crate::Api::disconnect`]: the connection's end is expected, not a loss.
    pub closing: AtomicBool,
    /// When the first subscription of this process was made (cache warming starts).
    pub subscribed_at: Mutex<Option<Instant>>,
    /// When the current connection's subscriptions were made (its retained delivery starts).
    pub connected_at: Mutex<Option<Instant>>,
    /// When agent state was last applied (`intake`): the retained delivery is over once it
    /// has been quiet a moment.
    pub state_at: Mutex<Option<Instant>>,
    /// Request id → what is waiting for its reply.
    inflight: Mutex<HashMap<u64, Pending>>,
    /// What was accepted from each agent, by signing time (replay protection).
    pub freshness: crate::freshness::Freshness,
    /// Signing and verification; `None` trusts the broker.
    pub security: Option<Arc<crate::security::Security>>,
    /// Open streams (`crate::streams`).
    pub(crate) streams: crate::streams::Routes,
    next_id: AtomicU64,
}

impl Link {
    /// A link that never connects (for generating the OpenAPI document).
    pub fn detached(client: AsyncClient) -> Self {
        Self {
            client,
            client_id: "detached".into(),
            reply_topic: topics::replies("detached"),
            connected: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            subscribed_at: Mutex::new(None),
            connected_at: Mutex::new(None),
            state_at: Mutex::new(None),
            inflight: Mutex::new(HashMap::new()),
            freshness: Default::default(),
            security: None,
            streams: Default::default(),
            next_id: AtomicU64::new(1),
        }
    }

    /// A fresh request id (the correlation data of a request or stream).
    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Hands a reply (or a stream's chunk) to what waits for it, by its correlation data.
    pub(crate) fn complete(&self, p: &Publish) {
        let Some(correlation) = p
            .properties
            .as_ref()
            .and_then(|pr| pr.correlation_data.as_ref())
        else {
            return;
        };
        let topic = String::from_utf8_lossy(&p.topic);
        let (props, payload) = (p.properties.as_ref(), p.payload.clone());
        let Some(id) = std::str::from_utf8(correlation)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return;
        };
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pending) = inflight.get(&id) else {
            drop(inflight);
            self.streams.deliver(self, &topic, props, id, payload);
            return;
        };
        if let Some(sec) = &self.security {
            let sig = pending.request_sig.as_deref();
            if !sec.reply_from_agent(&pending.agent, &topic, props, &payload, sig) {
                warn!(agent = %pending.agent, "ignoring a reply not signed by the agent that was asked for this request");
                return;
            }
        }
        if let Some(pending) = inflight.remove(&id) {
            let _ = pending.tx.send(payload);
        }
    }
}

/// A request waiting for its reply.
struct Pending {
    /// The agent asked: only its key may sign the reply.
    agent: String,
    /// The request's signature, which the reply's signature must cover.
    request_sig: Option<String>,
    tx: oneshot::Sender<Bytes>,
}

/// Starts the session; returns the link and the task driving it.
pub fn start(
    cfg: MqttConfig,
    fleet: Arc<Fleet>,
    changes: broadcast::Sender<Change>,
    security: Option<Arc<crate::security::Security>>,
) -> (Arc<Link>, tokio::task::JoinHandle<()>) {
    let client_id = cfg
        .client_id
        .clone()
        .unwrap_or_else(|| zedops_proto::identity::api_client_id(rand::random()));
    let options = options_fn(&cfg, &client_id);
    // One client per replica, not a fleet: no herd to spread, and until it is back no agent is
    // visible, so it retries at least every second (a cluster electing a leader refuses everyone
    // for ~5 s; a 5 s cap cost up to 3.4 s more after the nodes took connections again).
    let backoff =
        zedops_proto::client::Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let brokers = Failover::new(cfg.broker.clone(), cfg.fallback_brokers.clone(), backoff);
    let first = options(&cfg.broker, brokers.connect_timeout_s());
    let (client, eventloop) = AsyncClient::new(first, 16 * 1024);
    let link = Arc::new(Link {
        client,
        reply_topic: topics::replies(&client_id),
        client_id,
        connected: AtomicBool::new(false),
        closing: AtomicBool::new(false),
        subscribed_at: Mutex::new(None),
        connected_at: Mutex::new(None),
        state_at: Mutex::new(None),
        inflight: Mutex::new(HashMap::new()),
        freshness: Default::default(),
        security,
        streams: Default::default(),
        next_id: AtomicU64::new(1),
    });
    info!(broker = %cfg.broker, client_id = %link.client_id, "API connecting to the broker");
    let link2 = link.clone();
    // The gap filler lives as long as the session task (aborting that drops this guard).
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let gaps = AbortOnDrop(tokio::spawn(fill_gaps(link.clone(), fleet.clone())));
    let (intake, applier) = crate::intake::start(link.clone(), fleet, changes);
    let applier = AbortOnDrop(applier);
    let task = tokio::spawn(async move {
        let (_gaps, _applier) = (gaps, applier);
        poll((eventloop, brokers, options), link2, intake).await;
    });
    (link, task)
}

/// The API's MQTT options for one of its brokers and a handshake deadline (seconds).
type OptionsFn = Box<dyn Fn(&BrokerUrl, u64) -> rumqttc::v5::MqttOptions + Send>;

fn options_fn(cfg: &MqttConfig, client_id: &str) -> OptionsFn {
    let (client_id, credentials, tls) = (
        client_id.to_owned(),
        cfg.credentials.clone(),
        cfg.tls.clone(),
    );
    Box::new(move |broker: &BrokerUrl, connect_timeout_s: u64| {
        let connect = zedops_proto::client::Connect {
            client_id: client_id.clone(),
            broker,
            credentials: credentials.clone(),
            keep_alive: Duration::from_secs(15),
            connect_timeout_s,
        };
        let mut opts = zedops_proto::client::mqtt_options(connect);
        if let Err(e) = zedops_proto::client::set_tls(&mut opts, broker, &tls) {
            warn!(error = %e, %broker, "cannot set up TLS to the broker");
        }
        opts
    })
}

/// While some agents' state arrived only in part (a busy broker drops QoS 0 copies of retained
/// messages and resync replies: docs/benchmarks.md, scenario 6), asks them to republish again,
/// backing off from 3 s to 60 s; the agents' own 60 s resync remains the last resort. The first
/// pass of each connection comes once its retained state has arrived — nothing applied for
/// 500 ms, 1 s after the subscriptions at the earliest and 3 s at the latest (Mosquitto's default
/// queue of 1000 messages a client drops most of 10 000 retained snapshots delivered at once);
/// it asks everyone when no agent is known at all.
async fn fill_gaps(link: Arc<Link>, fleet: Arc<Fleet>) {
    const FIRST: Duration = Duration::from_secs(3);
    const MAX: Duration = Duration::from_secs(60);
    let mut backoff = FIRST;
    let mut last = Instant::now();
    // The connection whose first pass is done (by its `connected_at`).
    let mut passed: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let since = *link.connected_at.lock().unwrap_or_else(|e| e.into_inner());
        let Some(since) = since.filter(|t| retained_arrived(&link, *t, FIRST)) else {
            continue;
        };
        if !link.connected.load(Ordering::SeqCst) {
            continue;
        }
        let first = passed != Some(since);
        if first {
            passed = Some(since);
            backoff = FIRST;
            if fleet.counts().0 == 0 {
                info!("no agent's state arrived; fleet resync requested");
                resync(&link, &[]);
                continue;
            }
        }
        let missing = fleet.incomplete();
        if missing.is_empty() {
            backoff = FIRST;
            continue;
        }
        if !first && last.elapsed() < backoff {
            continue;
        }
        info!(
            agents = missing.len(),
            "some agents' state is incomplete; resync requested of them"
        );
        // Only those agents (up to resync::MAX_NAMED, else everyone): a blast from the whole
        // fleet would be dropped again by the broker that dropped the first.
        resync(&link, &missing);
        last = Instant::now();
        backoff = (backoff * 2).min(MAX);
    }
}

/// Whether the retained state of the connection subscribed at `since` has arrived: nothing
/// applied for 500 ms, at least 1 s after `since`; or `limit` after it anyway.
fn retained_arrived(link: &Link, since: Instant, limit: Duration) -> bool {
    let quiet = link
        .state_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_none_or(|t| t.elapsed() >= Duration::from_millis(500));
    let age = since.elapsed();
    age >= limit || (age >= Duration::from_secs(1) && quiet)
}

/// Publishes `fleet/resync` asking `agents` (everyone when empty) to republish.
fn resync(link: &Link, agents: &[String]) {
    let payload = zedops_proto::resync::payload(agents);
    if let Err(e) = link
        .client
        .try_publish(topics::RESYNC, QoS::AtMostOnce, false, payload)
    {
        warn!(error = %e, "resync broadcast dropped");
    }
}

/// Drives the API's MQTT session; on each failure waits and reconnects, to the next of the
/// brokers when the failover says so.
async fn poll(
    (mut el, mut brokers, options): (EventLoop, Failover, OptionsFn),
    link: Arc<Link>,
    intake: crate::intake::Intake,
) {
    let mut refused_said: Option<Instant> = None;
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                brokers.connected();
                link.connected.store(true, Ordering::SeqCst);
                // Never await a publish from the polling task: queue without waiting.
                for f in [
                    topics::ALL_STATUS.to_owned(),
                    topics::ALL_SNAPSHOTS.to_owned(),
                    topics::ALL_EVENTS.to_owned(),
                    topics::ALL_STATS.to_owned(),
                    link.reply_topic.clone(),
                ] {
                    if let Err(e) = link.client.try_subscribe(f.clone(), QoS::AtMostOnce) {
                        warn!(filter = %f, error = %e, "subscribe dropped");
                    }
                }
                link.subscribed_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert_with(Instant::now);
                *link.connected_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                info!(broker = %brokers.current(), "API connected to the broker; subscribed to the fleet's state");
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let topic = String::from_utf8_lossy(&p.topic);
                // Agent state and replies go to the intake, in the order they came, so that
                // this task reads the socket as fast as the broker writes (intake.rs).
                match topics::parse(&topic) {
                    Some(Topic::Reply { client_id }) if client_id == link.client_id => {
                        intake.reply(p)
                    }
                    Some(_) => intake.take(p),
                    None => debug!(%topic, "ignoring message"),
                }
            }
            Ok(_) => {}
            Err(e) => {
                if link.closing.load(Ordering::SeqCst) {
                    link.connected.store(false, Ordering::SeqCst);
                    debug!(error = %e, "API disconnected from the broker");
                    return;
                }
                if link.connected.swap(false, Ordering::SeqCst) {
                    warn!(error = %e, "API lost the broker; reconnecting");
                } else if let ConnectionError::ConnectionRefused(code) = &e {
                    // Bad credentials or no right to connect: said, at most every 30 s.
                    if refused_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                        warn!(reason = ?code, "the broker refused the API's connection (with an external broker, check --broker-username and --broker-password); retrying");
                        refused_said = Some(Instant::now());
                    }
                } else {
                    debug!(error = %e, "API cannot reach the broker yet");
                }
                let next = brokers.retry(matches!(e, ConnectionError::Timeout(_)));
                if next.moved {
                    el.options = options(brokers.current(), next.timeout_s);
                    let (in_ms, timeout_s) = (next.delay_ms(), next.timeout_s);
                    info!(broker = %brokers.current(), in_ms, timeout_s, "API trying the next broker");
                }
                el.options.set_connection_timeout(next.timeout_s);
                tokio::time::sleep(next.delay).await;
            }
        }
    }
}

/// Sends requests to agents and waits for their replies.
#[derive(Clone)]
pub struct Requester {
    pub link: Arc<Link>,
    pub fleet: Arc<Fleet>,
    pub metrics: Arc<Metrics>,
}

impl Requester {
    /// Checks that `agent` can be asked right now: known (404) and online (503 at once).
    pub fn reachable(&self, agent: &str) -> Result<(), ErrorBody> {
        let Some(entry) = self.fleet.get(agent) else {
            return Err(ErrorBody::not_found(format!(
                "no agent named {agent} is known to this server"
            )));
        };
        if !entry.online() {
            return Err(ErrorBody::new(
                ErrorCode::AgentOffline,
                format!(
                    "agent {agent} is offline (last seen {})",
                    entry.last_seen.to_rfc3339()
                ),
            ));
        }
        if !self.link.connected.load(Ordering::SeqCst) {
            return Err(ErrorBody::new(
                ErrorCode::AgentOffline,
                format!("this server has lost its MQTT broker connection, so agent {agent} cannot be reached"),
            ));
        }
        Ok(())
    }

    /// Runs op `O` on `agent` with a deadline.
    pub async fn call<O: Op>(
        &self,
        agent: &str,
        args: &O::Args,
        deadline: Duration,
    ) -> Result<O::Output, ErrorBody> {
        let payload = serde_json::to_vec(args)
            .map_err(|e| ErrorBody::internal(format!("cannot encode the request: {e}")))?;
        self.call_op(agent, O::NAME, payload, deadline).await
    }

    /// Runs the op named `op` with encoded arguments on `agent` with a deadline; its result
    /// decodes as `T`.
    pub async fn call_op<T: serde::de::DeserializeOwned>(
        &self,
        agent: &str,
        op: &str,
        payload: Vec<u8>,
        deadline: Duration,
    ) -> Result<T, ErrorBody> {
        let started = Instant::now();
        let result = self.call_inner::<T>(agent, op, payload, deadline).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        self.metrics.record(op, outcome, started.elapsed());
        result
    }

    /// The properties of request `id` to `topic`: where to reply, its correlation data, its
    /// expiry and absolute deadline, and with security on the server's signature (returned too:
    /// the reply must cover it).
    pub(crate) fn publish_properties(
        &self,
        topic: &str,
        id: u64,
        deadline: Duration,
        payload: &[u8],
    ) -> (PublishProperties, Option<String>) {
        let correlation = Bytes::from(id.to_string());
        let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let deadline_ms = now_ms + deadline.as_millis() as u64;
        let mut user_properties = vec![(DEADLINE_PROPERTY.to_owned(), deadline_ms.to_string())];
        let mut sig = None;
        if let Some(sec) = &self.link.security {
            let signature = sec.sign_request(zedops_proto::sign::Signed {
                topic,
                response_topic: Some(&self.link.reply_topic),
                correlation: Some(&correlation),
                deadline_ms: Some(deadline_ms),
                ts_ms: now_ms,
                payload,
                request_sig: None,
            });
            sig = zedops_proto::sign::user_property(&signature, zedops_proto::sign::SIG_PROPERTY)
                .map(str::to_owned);
            user_properties.extend(signature);
        }
        let props = PublishProperties {
            response_topic: Some(self.link.reply_topic.clone()),
            correlation_data: Some(correlation),
            message_expiry_interval: Some(deadline.as_secs().max(1) as u32),
            user_properties,
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        (props, sig)
    }

    async fn call_inner<T: serde::de::DeserializeOwned>(
        &self,
        agent: &str,
        op: &str,
        payload: Vec<u8>,
        deadline: Duration,
    ) -> Result<T, ErrorBody> {
        self.reachable(agent)?;
        // The reply is checked against the agent's key: have it at hand.
        if let Some(sec) = &self.link.security {
            sec.warm(agent).await;
        }
        let id = self.link.next_request_id();
        let topic = topics::request(agent, op);
        let (props, request_sig) = self.publish_properties(&topic, id, deadline, &payload);
        let (tx, rx) = oneshot::channel();
        {
            let mut inflight = self.link.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if inflight.len() >= MAX_IN_FLIGHT {
                return Err(ErrorBody::internal(format!(
                    "this server already has {MAX_IN_FLIGHT} requests in flight; retry shortly"
                )));
            }
            let pending = Pending {
                agent: agent.to_owned(),
                request_sig,
                tx,
            };
            inflight.insert(id, pending);
        }
        let guard = InflightGuard {
            link: &self.link,
            id,
        };
        let timeout_err = || {
            ErrorBody::new(
                ErrorCode::Timeout,
                format!(
                    "agent {agent} did not answer {op} within {}s",
                    deadline.as_secs_f32()
                ),
            )
        };
        let publish =
            self.link
                .client
                .publish_with_properties(topic, QoS::AtMostOnce, false, payload, props);
        match tokio::time::timeout(deadline, publish).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ErrorBody::internal(format!("cannot send the request: {e}"))),
            Err(_) => return Err(timeout_err()),
        }
        let reply = match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) | Err(_) => return Err(timeout_err()),
        };
        drop(guard);
        Reply::decode::<T>(&reply)
    }
}

/// Removes an abandoned request (timeout, client gone) from the in-flight map.
struct InflightGuard<'a> {
    link: &'a Link,
    id: u64,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.link
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}
