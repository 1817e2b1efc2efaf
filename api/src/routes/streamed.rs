//! Answers that are either one JSON body or, when the request asked to follow, a stream of
//! Server-Sent Events relayed from an agent's stream (`crate::streams`): one operation, two media
//! types under `200`, both in the OpenAPI document.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use poem::web::sse::Event;
use poem::IntoResponse;
use poem_openapi::payload::{EventStream, Json};
use poem_openapi::registry::{MetaResponses, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::ApiResponse;
use zedops_proto::stream::{EndReason, StreamEnd};

use crate::admission::Slot;
use crate::streams::{Item, OpenStream};
use crate::State;

/// How often an idle stream sends a comment, so a client that went away is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// `W` as JSON, or a stream of `E` events.
pub enum Streamed<W, E: 'static> {
    Whole(Json<W>),
    Events(EventStream<BoxStream<'static, E>>),
}

impl<W, E> ApiResponse for Streamed<W, E>
where
    W: ToJSON + Send,
    E: Type + ToJSON + Send + 'static,
{
    fn meta() -> MetaResponses {
        let mut whole = Json::<W>::meta();
        let events = EventStream::<BoxStream<'static, E>>::meta();
        if let Some(first) = whole.responses.first_mut() {
            first.description =
                "The whole answer (JSON), or with follow/stream, Server-Sent Events";
            for r in events.responses {
                first.content.extend(r.content);
            }
        }
        whole
    }

    fn register(registry: &mut Registry) {
        Json::<W>::register(registry);
        EventStream::<BoxStream<'static, E>>::register(registry);
    }
}

impl<W, E> IntoResponse for Streamed<W, E>
where
    W: ToJSON + Send,
    E: Type + ToJSON + Send + 'static,
{
    fn into_response(self) -> poem::Response {
        match self {
            Self::Whole(j) => j.into_response(),
            Self::Events(e) => e.into_response(),
        }
    }
}

/// How a stream's chunks become events: the chunk's type, and the event name it goes by.
pub trait Relay: Sized + Type + ToJSON + Send + 'static {
    /// The event of a chunk (`None`: the agent sent something else, which ends the stream).
    fn chunk(value: serde_json::Value) -> Option<Self>;
    fn end(end: StreamEnd) -> Self;
    /// The SSE event type.
    fn kind(&self) -> &'static str;
}

/// Relays `open` as Server-Sent Events until it ends, the client goes away (dropping the
/// stream cancels it on the agent) or the server stops. `slot` is held as long.
pub fn relay<W, E: Relay>(state: &Arc<State>, open: OpenStream, slot: Slot) -> Streamed<W, E> {
    let events = futures_util::stream::unfold(Some(open), |s| async move {
        let mut s = s?;
        let end = |reason, error| E::end(StreamEnd { reason, error });
        match s.next().await? {
            Item::Chunk(v) => match E::chunk(v) {
                Some(e) => Some((e, Some(s))),
                None => {
                    let error =
                        zedops_proto::ErrorBody::internal("the agent sent a malformed chunk");
                    Some((end(EndReason::Error, Some(error)), None))
                }
            },
            Item::End(reason, error) => Some((end(reason, error), None)),
        }
    })
    .map(move |e| {
        let _held = &slot;
        e
    })
    .take_until(state.closed());
    Streamed::Events(
        EventStream::new(events.boxed())
            .keep_alive(KEEP_ALIVE)
            .to_event(|e: E| Event::message(e.to_json_string()).event_type(e.kind())),
    )
}

impl Relay for zedops_proto::stream::LogEvent {
    fn chunk(value: serde_json::Value) -> Option<Self> {
        serde_json::from_value(value).ok().map(Self::Lines)
    }
    fn end(end: StreamEnd) -> Self {
        Self::End(end)
    }
    fn kind(&self) -> &'static str {
        match self {
            Self::Lines(_) => "lines",
            Self::End(_) => "end",
        }
    }
}

impl Relay for zedops_proto::stream::StatsEvent {
    fn chunk(value: serde_json::Value) -> Option<Self> {
        serde_json::from_value(value).ok().map(Self::Stats)
    }
    fn end(end: StreamEnd) -> Self {
        Self::End(end)
    }
    fn kind(&self) -> &'static str {
        match self {
            Self::Stats(_) => "stats",
            Self::End(_) => "end",
        }
    }
}

/// Opens stream op `op` on `agent` for `caller` and relays it; the caller holds one of its
/// stream slots (the ones event streams take) while it lasts.
pub async fn open<W, E: Relay>(
    state: &Arc<State>,
    caller: &crate::auth::Principal,
    agent: &str,
    op: &str,
    args: &impl serde::Serialize,
    start: Duration,
) -> Result<Streamed<W, E>, crate::error::ApiError> {
    let slot = state.streams.take(caller)?;
    let args = serde_json::to_value(args)
        .map_err(|e| zedops_proto::ErrorBody::internal(format!("cannot encode: {e}")))?;
    let open = state.requester.stream(agent, op, args, start).await?;
    Ok(relay(state, open, slot))
}
