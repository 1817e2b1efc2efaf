//! The live event stream, `GET /api/v1/events`, read as typed [`FleetEvent`]s.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use zedops_proto::http::FleetEvent;
use zedops_proto::sse::SseBuffer;

use crate::client::Client;
use crate::error::ClientError;

/// Bytes an event may take before the stream is refused as broken: the server's events are a
/// few hundred bytes.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// An open event stream. [`EventStream::next`] waits for the next event; `None` means the server
/// closed the stream (or it broke: an event over 1 MiB).
pub struct EventStream {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    buf: SseBuffer,
    client: Client,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("server", &self.client.server())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Opens `GET /api/v1/events`. The stream has no deadline: it lasts until either side ends it.
    pub async fn events(&self) -> Result<EventStream, ClientError> {
        let rb = self
            .builder(reqwest::Method::GET, "/api/v1/events", None)
            .header("accept", "text/event-stream");
        let resp = self.send(rb).await?;
        Ok(EventStream {
            body: resp.bytes_stream().boxed(),
            buf: SseBuffer::new(),
            client: self.clone(),
        })
    }
}

impl EventStream {
    /// The next event. An event that is not a [`FleetEvent`] (a newer server's kind) is an
    /// `Err(Decode)` and the stream goes on; a failed connection is an `Err` too.
    pub async fn next(&mut self) -> Option<Result<FleetEvent, ClientError>> {
        loop {
            if let Some(ev) = self.buf.next_event() {
                return Some(
                    serde_json::from_str(&ev.data).map_err(|e| ClientError::Decode {
                        url: format!("{}/api/v1/events", self.client.server()),
                        cause: format!("{e} in {:?}", ev.data),
                    }),
                );
            }
            if self.buf.pending() > MAX_EVENT_BYTES {
                // Broken beyond repair: this error, then the end of the stream.
                self.buf = SseBuffer::new();
                self.body = futures_util::stream::empty().boxed();
                return Some(Err(ClientError::Decode {
                    url: format!("{}/api/v1/events", self.client.server()),
                    cause: format!("an event is over {MAX_EVENT_BYTES} bytes"),
                }));
            }
            match self.body.next().await? {
                Ok(chunk) => self.buf.push(&chunk),
                Err(e) => return Some(Err(self.client.transport(&e))),
            }
        }
    }
}
