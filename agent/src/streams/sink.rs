//! Where a stream's messages go: its response topic, each signed like a reply (over the request's
//! signature), numbered, and sent only as the requester's credit allows.

use std::sync::Arc;

use bytes::Bytes;
use rumqttc::v5::AsyncClient;
use serde::Serialize;
use zedops_proto::stream::{EndReason, StreamMessage};
use zedops_proto::{ErrorBody, Reply};

use super::{Flow, Key, Stop};
use crate::requests::ReplyTo;
use crate::trust::Trust;

pub(crate) struct Sink {
    client: AsyncClient,
    reply_to: ReplyTo,
    trust: Arc<Trust>,
    flow: Option<Arc<Flow>>,
    seq: u64,
}

impl Sink {
    pub(crate) fn new(client: AsyncClient, reply_to: ReplyTo, trust: Arc<Trust>) -> Self {
        Self {
            client,
            reply_to,
            trust,
            flow: None,
            seq: 0,
        }
    }

    /// The stream's key, when its request has a response topic and correlation data.
    pub(crate) fn key(&self) -> Option<Key> {
        self.reply_to.stream_key()
    }

    /// Gives the sink its stream's flow control (once the stream is open).
    pub(crate) fn attach(&mut self, flow: Arc<Flow>) {
        self.flow = Some(flow);
    }

    /// Answers a stream that cannot start with a plain error reply.
    pub(crate) async fn refuse(self, e: ErrorBody) {
        tracing::info!(code = %e.code, message = %e.message, "stream refused");
        let reply = Bytes::from(Reply::failure(e).to_bytes());
        self.reply_to.send(&self.client, reply, &self.trust).await;
    }

    /// Sends the next chunk once there is credit for it.
    pub(crate) async fn send<T: Serialize>(&mut self, chunk: &T) -> Result<(), Stop> {
        if let Some(flow) = &self.flow {
            flow.credit(self.seq).await.map_err(Stop::Ended)?;
        }
        let value = serde_json::to_value(chunk)
            .map_err(|e| Stop::Failed(ErrorBody::internal(format!("cannot encode: {e}"))))?;
        let msg = StreamMessage::chunk(self.seq, value);
        self.seq += 1;
        self.publish(&msg).await;
        Ok(())
    }

    /// Resolves when the requester cancels or stops renewing (never without flow control).
    pub(crate) async fn ended(&self) -> Stop {
        match &self.flow {
            Some(f) => Stop::Ended(f.ended().await),
            None => std::future::pending().await,
        }
    }

    /// The last message.
    pub(crate) async fn finish(&mut self, reason: EndReason, error: Option<ErrorBody>) {
        let msg = StreamMessage::end(self.seq, reason, error);
        self.publish(&msg).await;
    }

    async fn publish(&self, msg: &StreamMessage) {
        let bytes = Bytes::from(msg.to_bytes());
        self.reply_to.send(&self.client, bytes, &self.trust).await;
    }
}
