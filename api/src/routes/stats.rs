//! Resource use (`container.stats`): what `docker stats --no-stream` shows, of every running
//! container of an agent or of one. Viewers may read it.

use std::sync::Arc;

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;
use zedops_proto::ops::{ContainerStats, Stats, StatsArgs};

use crate::auth::{Caller, Role};
use crate::error::ApiResult;
use crate::State;

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
        /// Deadline in seconds (default 10, at most 300).
        #[oai(validator(minimum(value = "1"), maximum(value = "300")))]
        timeout_s: Query<Option<u32>>,
    ) -> ApiResult<Stats> {
        self.read(auth, &agent, None, timeout_s.0).await
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
        /// Deadline in seconds (default 10, at most 300).
        #[oai(validator(minimum(value = "1"), maximum(value = "300")))]
        timeout_s: Query<Option<u32>>,
    ) -> ApiResult<Stats> {
        self.read(auth, &agent, Some(&container), timeout_s.0).await
    }
}

impl StatsApi {
    async fn read(
        &self,
        auth: Caller,
        agent: &str,
        container: Option<&str>,
        timeout_s: Option<u32>,
    ) -> ApiResult<Stats> {
        auth.0.require(Role::Viewer)?;
        let name = agent_name(agent)?;
        let args = StatsArgs {
            container: container.map(container_ref).transpose()?,
        };
        let d = deadline(timeout_s, READ_TIMEOUT_S)?;
        let r = self
            .state
            .ask::<ContainerStats>(&auth.0, name.as_str(), &args, d)
            .await?;
        Ok(Json(r))
    }
}
