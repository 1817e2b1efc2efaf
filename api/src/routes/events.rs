//! Live updates over Server-Sent Events.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use poem_openapi::payload::EventStream;
use poem_openapi::OpenApi;
use tokio_stream::wrappers::BroadcastStream;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::State;

use super::schemas::*;
use super::*;

pub struct EventsApi {
    pub state: Arc<State>,
}

// Operations take their parameters as arguments (that is how poem-openapi documents them).
#[allow(clippy::too_many_arguments)]
#[OpenApi]
impl EventsApi {
    /// Follow live events
    ///
    /// Server-Sent Events: agents going online or offline, container state changes reported by
    /// agents, and results of actions requested through this API. A comment is sent every 15 s to
    /// keep the connection open.
    #[oai(
        path = "/api/v1/events",
        method = "get",
        tag = "Tag::Events",
        operation_id = "events"
    )]
    async fn events(
        &self,
        auth: Caller,
    ) -> Result<EventStream<BoxStream<'static, FleetEvent>>, ApiError> {
        auth.0.require(Role::Viewer)?;
        let slot = self.state.streams.take(&auth.0)?;
        let changes = BroadcastStream::new(self.state.changes.subscribe())
            .filter_map(|c| async move { c.ok().map(event_of) });
        let actions = BroadcastStream::new(self.state.events.subscribe())
            .filter_map(|e| async move { e.ok() });
        let stream = futures_util::stream::select(changes, actions)
            .map(move |e| {
                let _keep = &slot;
                e
            })
            .take_until(self.state.closed());
        Ok(EventStream::new(stream.boxed())
            .keep_alive(Duration::from_secs(15))
            .to_event(|e: FleetEvent| {
                let kind = match e.kind {
                    EventKind::Agent => "agent",
                    EventKind::Container => "container",
                    EventKind::Action => "action",
                };
                let data = poem_openapi::types::ToJSON::to_json_string(&e);
                poem::web::sse::Event::message(data).event_type(kind)
            }))
    }
}
