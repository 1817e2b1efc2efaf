//! The API's side of streams (`zedops_proto::stream`, `docs/protocol.md` § Streams): opens a
//! stream on an agent, takes its chunks in order, and grants credit as its reader consumes them,
//! so a slow HTTP client slows the agent instead of filling memory. While a stream is open its
//! lease is renewed every third of the lease; dropping an [`OpenStream`] (the HTTP client went
//! away, the server stops) cancels it on the agent.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;
use tokio::sync::mpsc;
use tracing::{debug, warn};
use zedops_proto::stream::{self as wire, EndReason, StreamMessage};
use zedops_proto::topics;
use zedops_proto::{ErrorBody, ErrorCode};

use crate::mqtt::{Link, Requester};

/// Streams this server holds open at once (all agents, all clients).
pub const MAX_OPEN: usize = 1_000;
/// The lease the API asks for: an API that dies leaves nothing running on agents past this.
pub const LEASE_S: u32 = 10;
/// The window the API asks for.
pub const WINDOW: u32 = 8;
/// How often a stream whose agent sends nothing checks that the agent is still online.
const LIVENESS_EVERY: Duration = Duration::from_secs(3);

/// An open stream as the MQTT session routes its messages.
pub(crate) struct Route {
    agent: String,
    request_sig: Option<String>,
    tx: mpsc::Sender<Bytes>,
}

/// Open streams by request id.
#[derive(Default)]
pub(crate) struct Routes {
    map: Mutex<HashMap<u64, Route>>,
}

impl Routes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Route>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a message of stream `id` to its reader; false when no such stream is open. A
    /// message not signed by the stream's agent is dropped; so is one beyond the window (an
    /// agent ignoring credit), which its reader then sees as a gap.
    pub(crate) fn deliver(
        &self,
        link: &Link,
        topic: &str,
        props: Option<&PublishProperties>,
        id: u64,
        payload: Bytes,
    ) -> bool {
        let routes = self.lock();
        let Some(route) = routes.get(&id) else {
            return false;
        };
        if let Some(sec) = &link.security {
            let sig = route.request_sig.as_deref();
            if !sec.reply_from_agent(&route.agent, topic, props, &payload, sig) {
                warn!(agent = %route.agent, "ignoring a stream message not signed by its agent");
                return true;
            }
        }
        if route.tx.try_send(payload).is_err() {
            debug!(agent = %route.agent, "stream message beyond the window; dropped");
        }
        true
    }
}

/// What a stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Chunk(serde_json::Value),
    End(EndReason, Option<ErrorBody>),
}

/// A stream open on an agent. [`OpenStream::next`] takes the next chunk and grants credit for
/// it; after the end it returns `None`.
pub struct OpenStream {
    requester: Requester,
    agent: String,
    op: String,
    id: u64,
    rx: mpsc::Receiver<Bytes>,
    /// The first message, taken while the stream started.
    pending: Option<StreamMessage>,
    next_seq: u64,
    ended: bool,
    renew: tokio::task::JoinHandle<()>,
}

impl Requester {
    /// Opens stream op `op` on `agent` (`payload` asks for the stream and sets no `window` or
    /// `lease_s`: the API sets its own). The agent must start within `start`.
    pub async fn stream(
        &self,
        agent: &str,
        op: &str,
        payload: serde_json::Value,
        start: Duration,
    ) -> Result<OpenStream, ErrorBody> {
        self.reachable(agent)?;
        if let Some(sec) = &self.link.security {
            sec.warm(agent).await;
        }
        let mut payload = payload;
        if let Some(o) = payload.as_object_mut() {
            o.insert("window".into(), WINDOW.into());
            o.insert("lease_s".into(), LEASE_S.into());
        }
        let payload = serde_json::to_vec(&payload)
            .map_err(|e| ErrorBody::internal(format!("cannot encode the request: {e}")))?;
        let id = self.link.next_request_id();
        let topic = topics::request(agent, op);
        let (tx, rx) = mpsc::channel(wire::MAX_WINDOW as usize + 2);
        let (props, request_sig) = self.publish_properties(&topic, id, start, &payload);
        {
            let mut routes = self.link.streams.lock();
            if routes.len() >= MAX_OPEN {
                return Err(ErrorBody::new(
                    ErrorCode::Busy,
                    format!("this server already holds {MAX_OPEN} streams; retry later"),
                ));
            }
            let agent = agent.to_owned();
            routes.insert(
                id,
                Route {
                    agent,
                    request_sig,
                    tx,
                },
            );
        }
        let mut s = OpenStream {
            requester: self.clone(),
            agent: agent.to_owned(),
            op: op.to_owned(),
            id,
            rx,
            pending: None,
            next_seq: 0,
            ended: false,
            renew: tokio::spawn(renew(self.clone(), agent.to_owned(), id)),
        };
        let publish =
            self.link
                .client
                .publish_with_properties(topic, QoS::AtMostOnce, false, payload, props);
        match tokio::time::timeout(start, publish).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ErrorBody::internal(format!("cannot send the request: {e}"))),
            Err(_) => return Err(s.start_timeout(start)),
        }
        s.wait_first(start).await?;
        Ok(s)
    }

    /// Sends `stream.ack` (with `seq`: credit; without: only renews) or `stream.cancel` for
    /// stream `id` on `agent`, without waiting.
    fn control(&self, agent: &str, id: u64, op: &str, payload: Vec<u8>) {
        let topic = topics::request(agent, op);
        let (props, _) = self.publish_properties(&topic, id, Duration::from_secs(10), &payload);
        let sent = self.link.client.try_publish_with_properties(
            topic,
            QoS::AtMostOnce,
            false,
            payload,
            props,
        );
        if let Err(e) = sent {
            debug!(error = %e, op, "stream control message dropped");
        }
    }
}

/// Renews the lease of stream `id` until aborted (when its [`OpenStream`] is dropped).
async fn renew(r: Requester, agent: String, id: u64) {
    let every = Duration::from_secs(LEASE_S.into()) / 3;
    loop {
        tokio::time::sleep(every).await;
        r.control(&agent, id, wire::ACK_OP, b"{}".to_vec());
    }
}

impl OpenStream {
    fn start_timeout(&self, start: Duration) -> ErrorBody {
        ErrorBody::new(
            ErrorCode::Timeout,
            format!(
                "agent {} did not start {} within {}s",
                self.agent,
                self.op,
                start.as_secs_f32()
            ),
        )
    }

    /// Waits for the stream's first message and keeps it: a refusal is an error here, before any
    /// HTTP response is sent.
    async fn wait_first(&mut self, start: Duration) -> Result<(), ErrorBody> {
        let Ok(Some(first)) = tokio::time::timeout(start, self.rx.recv()).await else {
            return Err(self.start_timeout(start));
        };
        let msg: StreamMessage = serde_json::from_slice(&first).map_err(|e| {
            ErrorBody::internal(format!(
                "agent {} sent a malformed stream message: {e}",
                self.agent
            ))
        })?;
        if msg.stream.is_none() {
            self.ended = true;
            return Err(msg.error.unwrap_or_else(|| {
                ErrorBody::internal(format!("agent {} refused the stream", self.agent))
            }));
        }
        self.pending = Some(msg);
        Ok(())
    }
}

impl OpenStream {
    /// The next chunk (acknowledged, so the agent may send more) or the end; `None` after it.
    pub async fn next(&mut self) -> Option<Item> {
        if self.ended {
            return None;
        }
        let item = match self.pending.take() {
            Some(m) => self.take(m),
            None => self.receive().await,
        };
        if let Item::End(..) = item {
            self.ended = true;
        }
        Some(item)
    }

    /// Waits for the next message; ends the stream when the agent goes offline meanwhile.
    async fn receive(&mut self) -> Item {
        loop {
            match tokio::time::timeout(LIVENESS_EVERY, self.rx.recv()).await {
                Ok(Some(bytes)) => match serde_json::from_slice::<StreamMessage>(&bytes) {
                    Ok(m) => return self.take(m),
                    Err(e) => {
                        let e =
                            format!("agent {} sent a malformed stream message: {e}", self.agent);
                        return Item::End(EndReason::Error, Some(ErrorBody::internal(e)));
                    }
                },
                Ok(None) => return self.failed(ErrorCode::Internal, "the stream was closed"),
                Err(_) => {
                    if let Err(e) = self.requester.reachable(&self.agent) {
                        return Item::End(EndReason::Error, Some(e));
                    }
                }
            }
        }
    }

    /// A message in its place: chunks in order (a gap ends the stream: the broker lost some),
    /// each acknowledged.
    fn take(&mut self, m: StreamMessage) -> Item {
        let seq = m.stream.map(|p| p.seq);
        if let Some((reason, error)) = m.ending() {
            return Item::End(reason, error);
        }
        let Some(seq) = seq else {
            return self.failed(ErrorCode::Internal, "a stream message without its position");
        };
        if seq != self.next_seq {
            let msg = format!(
                "chunks {} to {} were lost on the way from agent {}",
                self.next_seq,
                seq.saturating_sub(1),
                self.agent
            );
            return Item::End(EndReason::Error, Some(ErrorBody::internal(msg)));
        }
        self.next_seq += 1;
        let ack = serde_json::to_vec(&wire::Ack { seq: Some(seq) }).unwrap_or_default();
        self.requester
            .control(&self.agent, self.id, wire::ACK_OP, ack);
        Item::Chunk(m.result.unwrap_or(serde_json::Value::Null))
    }

    fn failed(&self, code: ErrorCode, why: &str) -> Item {
        let msg = format!("stream {} from agent {}: {why}", self.op, self.agent);
        Item::End(EndReason::Error, Some(ErrorBody::new(code, msg)))
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.renew.abort();
        self.requester.link.streams.lock().remove(&self.id);
        if !self.ended && self.requester.link.connected.load(Ordering::SeqCst) {
            self.requester
                .control(&self.agent, self.id, wire::CANCEL_OP, Vec::new());
        }
    }
}
