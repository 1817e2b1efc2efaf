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
pub(crate) struct Serving {
    pub(crate) client: AsyncClient,
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) dedup: Arc<Mutex<Dedup>>,
    pub(crate) permits: Arc<crate::admission::Admission>,
    pub(crate) trust: Arc<Trust>,
}

pub(crate) fn spawn_request(p: Publish, op: String, serving: &Serving) {
    let Serving {
        client,
        ctx,
        registry,
        dedup,
        permits,
        trust,
    } = serving;
    let received = Instant::now();
    let props = p.properties.clone().unwrap_or_default();
    let reply_to = ReplyTo::of(&props);
    let correlation = props.correlation_data.clone();
    let expiry = props
        .message_expiry_interval
        .map(|s| Duration::from_secs(s.into()));
    let abs_deadline = zedops_proto::sign::user_property(&props.user_properties, DEADLINE_PROPERTY)
        .and_then(|v| v.parse::<u64>().ok());
    let deadline = expiry.map(|e| received + e);
    let corr_str = correlation
        .as_ref()
        .map(|c| {
            String::from_utf8_lossy(c)
                .chars()
                .take(64)
                .collect::<String>()
        })
        .unwrap_or_default();
    let span = info_span!("request", agent = %ctx.agent, %op, correlation = %corr_str);

    let client = client.clone();
    let ctx = ctx.clone();
    let registry = registry.clone();
    let dedup = dedup.clone();
    let permits = permits.clone();
    let trust = trust.clone();
    tokio::spawn(
        async move {
            let expired = |now: Instant| {
                deadline.is_some_and(|d| now >= d) || abs_deadline.is_some_and(|d| now_ms() >= d)
            };
            if expiry == Some(Duration::ZERO) || expired(Instant::now()) {
                info!("request expired before it could run; not executed");
                return;
            }
            let topic = String::from_utf8_lossy(&p.topic).into_owned();
            // Size first: verifying a signature over megabytes costs more than refusing them.
            if p.payload.len() > MAX_REQUEST_BYTES {
                let reply = Reply::failure(ErrorBody::bad_request(format!(
                    "the request is {} bytes; the limit is {MAX_REQUEST_BYTES}",
                    p.payload.len()
                )));
                let bytes = Bytes::from(reply.to_bytes());
                reply_to.send(&client, bytes, &trust).await;
                return;
            }
            if let Err(why) = trust.check(&topic, &p, abs_deadline) {
                warn!(%why, "refusing an unauthorized request");
                let reply =
                    Reply::failure(ErrorBody::new(zedops_proto::ErrorCode::Unauthorized, why));
                reply_to
                    .send(&client, Bytes::from(reply.to_bytes()), &trust)
                    .await;
                return;
            }
            let key = correlation.clone().map(|c| {
                let rt = reply_to.topic.as_deref().unwrap_or_default();
                crate::dedup::key(rt, c, &topic, &p.payload)
            });
            if let Some(key) = &key {
                let window = expiry
                    .unwrap_or(DEFAULT_DEDUP_WINDOW)
                    .max(Duration::from_secs(1));
                let seen = match dedup.lock() {
                    Ok(mut d) => d.check(key, window, received),
                    Err(_) => Seen::New,
                };
                match seen {
                    Seen::New => {}
                    Seen::Running => {
                        info!("duplicate of a request still running; its reply will answer both");
                        return;
                    }
                    Seen::Done(reply) => {
                        info!("duplicate of an executed request; answering from cache");
                        reply_to.send(&client, reply, &trust).await;
                        return;
                    }
                }
            }
            let reply = {
                // Waiting for a free slot counts against the deadline.
                let wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                let Some(_permit) = permits.enter(&op, wait).await else {
                    info!("no free slot before the deadline; not executed");
                    return;
                };
                if expired(Instant::now()) {
                    info!("request expired while waiting; not executed");
                    return;
                }
                registry.dispatch(ctx, &op, &p.payload).await
            };
            match &reply.error {
                None => info!(elapsed = ?received.elapsed(), "ok"),
                Some(e) => info!(code = %e.code, message = %e.message, "failed"),
            }
            let bytes = Bytes::from(reply.to_bytes());
            if let Some(key) = &key {
                if let Ok(mut d) = dedup.lock() {
                    d.finish(key, bytes.clone());
                }
            }
            reply_to.send(&client, bytes, &trust).await;
        }
        .instrument(span),
    );
}

/// Where a request's reply goes: its response topic, its correlation data, and the request's
/// signature, which the reply's signature covers (so the requester accepts only the reply to
/// the request it signed).
struct ReplyTo {
    topic: Option<String>,
    correlation: Option<Bytes>,
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

    async fn send(&self, client: &AsyncClient, reply: Bytes, trust: &Trust) {
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
