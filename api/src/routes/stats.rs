//! Resource use (`container.stats`): what `docker stats --no-stream` shows, of every running
//! container of an agent or of one. Viewers may read it.

use std::sync::Arc;

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;
use zedops_proto::ops::{ContainerStats, Op, Stats, StatsArgs};
use zedops_proto::stream::StatsEvent;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::State;

use super::streamed::{self, Streamed};

/// What a stats endpoint answers: one snapshot, or with `stream=true` one per interval.
type StatsAnswer = Result<Streamed<Stats, StatsEvent>, ApiError>;

use super::*;

pub struct StatsApi {
    pub state: Arc<State>,
}

// Operations take their parameters as arguments (that is how poem-openapi documents them).
#[allow(clippy::too_many_arguments)]
#[OpenApi]
impl StatsApi {
    /// Read an agent's container stats
    ///
    /// CPU %, memory (without the page cache) and its limit, network and block I/O, PIDs of
    /// every running container, as `docker stats --no-stream` computes them. The agent reads
    /// the containers at once; each read takes about a second (Docker's two CPU samples).
    ///
    /// With `stream=true`, Server-Sent Events instead: a snapshot (`event: stats`) every
    /// `interval_s` (default 2 s), one Docker sample each after the first, until the client goes away or
    /// the stream ends (`event: end`, with the reason and, when it failed, the error).
    #[oai(
        path = "/api/v1/agents/:agent/stats",
        method = "get",
        tag = "Tag::Containers",
        operation_id = "agent_stats"
    )]
    async fn agent_stats(
        &self,
        auth: Caller,
        /// Agent name.
        #[oai(validator(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))]
        agent: Path<String>,
        /// Keep sending snapshots (Server-Sent Events).
        stream: Query<Option<bool>>,
        /// Seconds between snapshots of a stream (default 2).
        #[oai(validator(minimum(value = "1"), maximum(value = "3600")))]
        interval_s: Query<Option<u32>>,
        /// Deadline in seconds (default 10, at most 300); for a stream, of its start.
        #[oai(validator(minimum(value = "1"), maximum(value = "300")))]
        timeout_s: Query<Option<u32>>,
    ) -> StatsAnswer {
        let how = How {
            stream: stream.0.unwrap_or(false),
            interval_s: interval_s.0,
            timeout_s: timeout_s.0,
        };
        self.read(auth, &agent, None, how).await
    }

    /// Read a container's stats
    #[oai(
        path = "/api/v1/agents/:agent/containers/:container/stats",
        method = "get",
        tag = "Tag::Containers",
        operation_id = "container_stats"
    )]
    async fn container_stats(
        &self,
        auth: Caller,
        /// Agent name.
        #[oai(validator(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))]
        agent: Path<String>,
        /// Container name or unique ID prefix (at least 4 hex digits).
        #[oai(validator(pattern = "^/?[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$"))]
        container: Path<String>,
        /// Keep sending snapshots (Server-Sent Events).
        stream: Query<Option<bool>>,
        /// Seconds between snapshots of a stream (default 2).
        #[oai(validator(minimum(value = "1"), maximum(value = "3600")))]
        interval_s: Query<Option<u32>>,
        /// Deadline in seconds (default 10, at most 300); for a stream, of its start.
        #[oai(validator(minimum(value = "1"), maximum(value = "300")))]
        timeout_s: Query<Option<u32>>,
    ) -> StatsAnswer {
        let how = How {
            stream: stream.0.unwrap_or(false),
            interval_s: interval_s.0,
            timeout_s: timeout_s.0,
        };
        self.read(auth, &agent, Some(&container), how).await
    }
}

/// One snapshot or a stream, and the deadline.
struct How {
    stream: bool,
    interval_s: Option<u32>,
    timeout_s: Option<u32>,
}

impl StatsApi {
    async fn read(
        &self,
        auth: Caller,
        agent: &str,
        container: Option<&str>,
        how: How,
    ) -> StatsAnswer {
        auth.0.require(Role::Viewer)?;
        let name = agent_name(agent)?;
        let args = StatsArgs {
            container: container.map(container_ref).transpose()?,
            stream: how.stream,
            interval_s: how.interval_s,
            ..Default::default()
        };
        let d = deadline(how.timeout_s, READ_TIMEOUT_S)?;
        if how.stream {
            args.interval()?;
            let op = ContainerStats::NAME;
            return streamed::open(&self.state, &auth.0, name.as_str(), op, &args, d).await;
        }
        let r = self
            .state
            .ask::<ContainerStats>(&auth.0, name.as_str(), &args, d)
            .await?;
        Ok(Streamed::Whole(Json(r)))
    }
}
