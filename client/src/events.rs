//! Server-Sent Event streams read as typed events: the live fleet events (`GET /api/v1/events`),
//! followed logs (`…/logs?follow=true`) and stats streams (`…/stats?stream=true`).

use std::marker::PhantomData;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use zedops_proto::http::FleetEvent;
use zedops_proto::sse::SseBuffer;
use zedops_proto::stream::{LogEvent, StatsEvent};

use crate::client::Client;
use crate::endpoints::{container_path, deadline, query, LogsOptions};
use crate::error::ClientError;

/// Bytes an event may take before the stream is refused as broken: the server's events are a
/// few hundred bytes, a log chunk at most 48 KiB.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// An open event stream. [`Sse::next`] waits for the next event; `None` means the server closed
/// the stream (or it broke: an event over 1 MiB).
pub struct Sse<T> {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    buf: SseBuffer,
    client: Client,
    path: String,
    _event: PhantomData<fn() -> T>,
}

/// The live fleet events.
pub type EventStream = Sse<FleetEvent>;

impl<T> std::fmt::Debug for Sse<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sse")
            .field("server", &self.client.server())
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Opens `GET /api/v1/events`. The stream has no deadline: it lasts until either side ends it.
    pub async fn events(&self) -> Result<EventStream, ClientError> {
        self.open("/api/v1/events".to_owned(), None).await
    }

    /// `GET …/logs?follow=true`: the lines `o` asks for, then new ones as they come, until the
    /// container stops (the last event is [`LogEvent::End`]) or the stream is dropped, which
    /// ends it on the agent.
    pub async fn follow_logs(
        &self,
        agent: &str,
        container: &str,
        o: &LogsOptions,
    ) -> Result<Sse<LogEvent>, ClientError> {
        let q = query(&[
            ("follow", Some("true".to_owned())),
            ("tail", o.tail.map(|t| t.to_string())),
            ("since", o.since.clone()),
            ("timestamps", o.timestamps.then(|| "true".to_owned())),
            ("timeout_s", o.timeout_s.map(|t| t.to_string())),
        ]);
        let path = format!("{}/logs{q}", container_path(agent, container));
        self.open(path, o.timeout_s).await
    }

    /// `GET /api/v1/agents/{agent}/stats?stream=true` (or one container's): a snapshot every
    /// `interval_s` until the stream is dropped.
    pub async fn stats_stream(
        &self,
        agent: &str,
        container: Option<&str>,
        interval_s: Option<u32>,
    ) -> Result<Sse<StatsEvent>, ClientError> {
        let q = query(&[
            ("stream", Some("true".to_owned())),
            ("interval_s", interval_s.map(|i| i.to_string())),
        ]);
        let path = match container {
            Some(c) => format!("{}/stats{q}", container_path(agent, c)),
            None => format!("/api/v1/agents/{}/stats{q}", crate::client::enc(agent)),
        };
        self.open(path, None).await
    }

    /// Opens an event stream at `path`; its start (the answer's headers) has the deadline of a
    /// read whose server-side one is `timeout_s`, its events none.
    async fn open<T>(&self, path: String, timeout_s: Option<u32>) -> Result<Sse<T>, ClientError> {
        let rb = self
            .builder(reqwest::Method::GET, &path, None)
            .header("accept", "text/event-stream");
        let limit = deadline(timeout_s, zedops_proto::http::READ_TIMEOUT_S);
        let resp = tokio::time::timeout(limit, self.send(rb))
            .await
            .map_err(|_| ClientError::Timeout {
                server: self.server().to_owned(),
            })??;
        Ok(Sse {
            body: resp.bytes_stream().boxed(),
            buf: SseBuffer::new(),
            client: self.clone(),
            path,
            _event: PhantomData,
        })
    }
}

impl<T: DeserializeOwned> Sse<T> {
    /// The next event. An event that does not decode as `T` (a newer server's kind) is an
    /// `Err(Decode)` and the stream goes on; a failed connection is an `Err` too.
    pub async fn next(&mut self) -> Option<Result<T, ClientError>> {
        loop {
            if let Some(ev) = self.buf.next_event() {
                return Some(serde_json::from_str(&ev.data).map_err(|e| self.decode(e, &ev.data)));
            }
            if self.buf.pending() > MAX_EVENT_BYTES {
                // Broken beyond repair: this error, then the end of the stream.
                self.buf = SseBuffer::new();
                self.body = futures_util::stream::empty().boxed();
                return Some(Err(
                    self.decode(format!("an event is over {MAX_EVENT_BYTES} bytes"), "")
                ));
            }
            match self.body.next().await? {
                Ok(chunk) => self.buf.push(&chunk),
                Err(e) => return Some(Err(self.client.transport(&e))),
            }
        }
    }

    fn decode(&self, e: impl std::fmt::Display, data: &str) -> ClientError {
        let shown: String = data.chars().take(200).collect();
        ClientError::Decode {
            url: format!("{}{}", self.client.server(), self.path),
            cause: format!("{e} in {shown:?}"),
        }
    }
}
