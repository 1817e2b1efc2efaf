//! One task per request: expiry, size, trust, the duplicate cache, a slot, the handler, and the
//! reply to where the request asked, signed over the request's signature.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::AsyncClient;
use tracing::{info, info_span, warn, Instrument};
use zedops_proto::{ErrorBody, Reply};

use crate::dedup::{Dedup, Seen};
use crate::handlers::{Ctx, Registry};
use zedops_proto::sign::DEADLINE_PROPERTY;

use crate::trust::Trust;

/// Largest request payload accepted.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Window in which a repeated correlation id is answered from cache when the request has no expiry.
const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0)
}

/// What request tasks share.
#[derive(Clone)]
pub(crate) struct Serving {
    pub(crate) client: AsyncClient,
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) dedup: Arc<Mutex<Dedup>>,
    pub(crate) permits: Arc<crate::admission::Admission>,
    pub(crate) trust: Arc<Trust>,
}

/// A request as received: what it asks, its deadlines, where its reply goes.
struct Request {
    p: Publish,
    op: String,
    topic: String,
    received: Instant,
    /// MQTT 5 Message Expiry, and the instant it ends.
    expiry: Option<Duration>,
    deadline: Option<Instant>,
    /// The requester's absolute deadline (Unix ms), for brokers that do not count expiry down.
    abs_deadline: Option<u64>,
    reply_to: ReplyTo,
}

impl Request {
    fn of(p: Publish, op: String) -> Self {
        let received = Instant::now();
        let props = p.properties.clone().unwrap_or_default();
        let expiry = props
            .message_expiry_interval
            .map(|s| Duration::from_secs(s.into()));
        let abs_deadline =
            zedops_proto::sign::user_property(&props.user_properties, DEADLINE_PROPERTY)
                .and_then(|v| v.parse::<u64>().ok());
        Self {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            reply_to: ReplyTo::of(&props),
            deadline: expiry.map(|e| received + e),
            p,
            op,
            received,
            expiry,
            abs_deadline,
        }
    }

    fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d) || self.abs_deadline.is_some_and(|d| now_ms() >= d)
    }

    fn span(&self, agent: &str) -> tracing::Span {
        let correlation = self
            .reply_to
            .correlation
            .as_ref()
            .map(|c| {
                String::from_utf8_lossy(c)
                    .chars()
                    .take(64)
                    .collect::<String>()
            })
            .unwrap_or_default();
        info_span!("request", %agent, op = %self.op, %correlation)
    }

    /// The duplicate cache's key, when the request has correlation data.
    fn dedup_key(&self) -> Option<crate::dedup::Key> {
        self.reply_to.correlation.clone().map(|c| {
            let rt = self.reply_to.topic.as_deref().unwrap_or_default();
            crate::dedup::key(rt, c, &self.topic, &self.p.payload)
        })
    }

    async fn answer(&self, s: &Serving, reply: Bytes) {
        self.reply_to.send(&s.client, reply, &s.trust).await;
    }
}

/// Runs one request on a task of its own.
pub(crate) fn spawn_request(p: Publish, op: String, serving: &Serving) {
    let req = Request::of(p, op);
    let span = req.span(&serving.ctx.agent);
    let serving = serving.clone();
    tokio::spawn(async move { serve(serving, req).await }.instrument(span));
}

async fn serve(s: Serving, req: Request) {
    if req.expiry == Some(Duration::ZERO) || req.expired(Instant::now()) {
        info!("request expired before it could run; not executed");
        return;
    }
    if let Err(e) = check(&s, &req) {
        req.answer(&s, Bytes::from(Reply::failure(e).to_bytes()))
            .await;
        return;
    }
    if crate::streams::is_control(&req.op) {
        if let Some(key) = req.reply_to.stream_key() {
            s.ctx.streams.control(&req.op, &key, &req.p.payload);
        }
        return;
    }
    if crate::streams::wanted(&req.op, &req.p.payload) {
        let sink =
            crate::streams::Sink::new(s.client.clone(), req.reply_to.clone(), s.trust.clone());
        crate::streams::serve(&s.ctx, &req.op, &req.p.payload, sink).await;
        return;
    }
    let key = req.dedup_key();
    if let Some(key) = &key {
        if answered_before(&s, &req, key).await {
            return;
        }
    }
    let Some(reply) = execute(&s, &req).await else {
        return;
    };
    match &reply.error {
        None => info!(elapsed = ?req.received.elapsed(), "ok"),
        Some(e) => info!(code = %e.code, message = %e.message, "failed"),
    }
    let bytes = Bytes::from(reply.to_bytes());
    if let Some(key) = &key {
        if let Ok(mut d) = s.dedup.lock() {
            d.finish(key, bytes.clone());
        }
    }
    req.answer(&s, bytes).await;
}

/// Size first (verifying a signature over megabytes costs more than refusing them), then trust.
fn check(s: &Serving, req: &Request) -> Result<(), ErrorBody> {
    let len = req.p.payload.len();
    if len > MAX_REQUEST_BYTES {
        return Err(ErrorBody::bad_request(format!(
            "the request is {len} bytes; the limit is {MAX_REQUEST_BYTES}"
        )));
    }
    s.trust
        .check(&req.topic, &req.p, req.abs_deadline)
        .map_err(|why| {
            warn!(%why, "refusing an unauthorized request");
            ErrorBody::new(zedops_proto::ErrorCode::Unauthorized, why.to_string())
        })
}

/// Whether a duplicate was answered (from the cache) or is already running.
async fn answered_before(s: &Serving, req: &Request, key: &crate::dedup::Key) -> bool {
    let window = req
        .expiry
        .unwrap_or(DEFAULT_DEDUP_WINDOW)
        .max(Duration::from_secs(1));
    let seen = match s.dedup.lock() {
        Ok(mut d) => d.check(key, window, req.received),
        Err(_) => Seen::New,
    };
    match seen {
        Seen::New => false,
        Seen::Running => {
            info!("duplicate of a request still running; its reply will answer both");
            true
        }
        Seen::Done(reply) => {
            info!("duplicate of an executed request; answering from cache");
            req.answer(s, reply).await;
            true
        }
    }
}

/// Waits for a slot (against the deadline) and runs the handler; `None` when the deadline passed.
async fn execute(s: &Serving, req: &Request) -> Option<Reply> {
    let wait = req
        .deadline
        .map(|d| d.saturating_duration_since(Instant::now()));
    let Some(_permit) = s.permits.enter(&req.op, wait).await else {
        info!("no free slot before the deadline; not executed");
        return None;
    };
    if req.expired(Instant::now()) {
        info!("request expired while waiting; not executed");
        return None;
    }
    let ctx = s.ctx.clone();
    Some(s.registry.dispatch(ctx, &req.op, &req.p.payload).await)
}

/// Where a request's reply goes: its response topic, its correlation data, and the request's
/// signature, which the reply's signature covers (so the requester accepts only the reply to
/// the request it signed).
#[derive(Clone)]
pub(crate) struct ReplyTo {
    pub(crate) topic: Option<String>,
    pub(crate) correlation: Option<Bytes>,
    request_sig: Option<String>,
}

impl ReplyTo {
    fn of(props: &PublishProperties) -> Self {
        Self {
            topic: props
                .response_topic
                .clone()
                .filter(|t| !t.is_empty() && !t.contains(['+', '#'])),
            correlation: props.correlation_data.clone(),
            request_sig: zedops_proto::sign::user_property(
                &props.user_properties,
                zedops_proto::sign::SIG_PROPERTY,
            )
            .map(str::to_owned),
        }
    }

    /// The stream a request with this response topic and correlation data opens or controls.
    pub(crate) fn stream_key(&self) -> Option<crate::streams::Key> {
        Some((self.topic.clone()?, self.correlation.clone()?))
    }

    pub(crate) async fn send(&self, client: &AsyncClient, reply: Bytes, trust: &Trust) {
        let Some(topic) = self.topic.as_deref() else {
            return;
        };
        let user_properties = match &trust.signing {
            Some(s) => crate::publisher::reply_signature_properties(
                &s.key,
                topic,
                self.correlation.as_deref(),
                &reply,
                self.request_sig.as_deref(),
            ),
            None => Vec::new(),
        };
        let props = PublishProperties {
            user_properties,
            correlation_data: self.correlation.clone(),
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        let publish =
            client.publish_with_properties(topic.to_owned(), QoS::AtMostOnce, false, reply, props);
        match tokio::time::timeout(Duration::from_secs(5), publish).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "could not send the reply"),
            Err(_) => warn!("could not queue the reply within 5 s"),
        }
    }
}
