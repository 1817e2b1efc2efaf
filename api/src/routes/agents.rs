//! The agents of the fleet: list, one, ping; and (admin) register and remove, which share their
//! paths (poem-openapi serves one path from one API of the tuple).

use std::sync::Arc;

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;
use zedops_proto::ops::{NoArgs, Ping};

use crate::auth::{Caller, Role};
use crate::error::ApiResult;
use crate::store::AuditRecord;
use crate::State;

use super::schemas::*;
use super::*;

pub struct AgentsApi {
    pub state: Arc<State>,
}

// Operations take their parameters as arguments (that is how poem-openapi documents them).
#[allow(clippy::too_many_arguments)]
#[OpenApi]
impl AgentsApi {
    /// List agents
    ///
    /// Every agent the fleet cache knows, online or not, from their retained status.
    #[oai(
        path = "/api/v1/agents",
        method = "get",
        tag = "Tag::Agents",
        operation_id = "list_agents"
    )]
    async fn list_agents(&self, auth: Caller) -> ApiResult<Vec<AgentInfo>> {
        auth.0.require(Role::Viewer)?;
        Ok(Json(
            self.state.fleet.all().iter().map(AgentInfo::from).collect(),
        ))
    }

    /// Get one agent
    #[oai(
        path = "/api/v1/agents/:agent",
        method = "get",
        tag = "Tag::Agents",
        operation_id = "get_agent"
    )]
    async fn get_agent(
        &self,
        auth: Caller,
        /// Agent name.
        #[oai(validator(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))]
        agent: Path<String>,
    ) -> ApiResult<AgentInfo> {
        auth.0.require(Role::Viewer)?;
        let name = agent_name(&agent)?;
        let e = known(&self.state, &name)?;
        Ok(Json(AgentInfo::from(&e)))
    }

    /// Ping an agent
    ///
    /// Asks the agent now (over MQTT, without touching Docker) and reports how long the answer
    /// took: a quick check that an agent is alive and commands reach it.
    #[oai(
        path = "/api/v1/agents/:agent/ping",
        method = "get",
        tag = "Tag::Agents",
        operation_id = "ping_agent"
    )]
    async fn ping_agent(
        &self,
        auth: Caller,
        /// Agent name.
        #[oai(validator(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))]
        agent: Path<String>,
        /// Deadline in seconds (default 10, at most 300).
        #[oai(validator(minimum(value = "1"), maximum(value = "300")))]
        timeout_s: Query<Option<u32>>,
    ) -> ApiResult<AgentPing> {
        auth.0.require(Role::Viewer)?;
        let name = agent_name(&agent)?;
        let d = deadline(timeout_s.0, READ_TIMEOUT_S)?;
        let started = std::time::Instant::now();
        let pong = self
            .state
            .ask::<Ping>(&auth.0, name.as_str(), &NoArgs {}, d)
            .await?;
        Ok(Json(AgentPing {
            round_trip_ms: started.elapsed().as_secs_f64() * 1000.0,
            pong,
        }))
    }

    /// Register an agent
    ///
    /// Creates (or renews) a one-time enrollment token for agent `name`, valid for `ttl_s` seconds
    /// (default 3600). The agent presents it once with `zedops agent --enroll`. Admin only.
    #[oai(
        path = "/api/v1/agents",
        method = "post",
        tag = "Tag::Admin",
        operation_id = "register_agent"
    )]
    async fn register_agent(&self, auth: Caller, body: Json<NewAgent>) -> ApiResult<Enrollment> {
        auth.0.require(Role::Admin)?;
        let store = store(&self.state)?;
        let ttl = body.ttl_s.unwrap_or(3600);
        if !(1..=7 * 86_400).contains(&ttl) {
            return Err(ErrorBody::bad_request("ttl_s must be between 1 second and 7 days").into());
        }
        let fingerprint = self
            .state
            .link
            .security
            .as_ref()
            .map(|s| s.key.public().fingerprint());
        let (token, expires_at) = store
            .register_agent(
                &body.name,
                chrono::Duration::seconds(ttl.into()),
                fingerprint.as_deref(),
            )
            .await?;
        self.state
            .audit(
                AuditRecord::http(auth.0.name.clone(), "agent.register")
                    .agent(Some(body.name.clone()))
                    .outcome("ok"),
            )
            .await;
        Ok(Json(Enrollment {
            name: body.name.clone(),
            token,
            expires_at,
            server_url: self.state.advertised.get().server_url,
        }))
    }

    /// Remove an agent
    ///
    /// Revokes the agent's credentials: the broker refuses its connections and the API ignores
    /// what it publishes. Admin only.
    #[oai(
        path = "/api/v1/agents/:agent",
        method = "delete",
        tag = "Tag::Admin",
        operation_id = "remove_agent"
    )]
    async fn remove_agent(
        &self,
        auth: Caller,
        /// Agent name.
        #[oai(validator(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))]
        agent: Path<String>,
    ) -> ApiResult<TokenInfoName> {
        auth.0.require(Role::Admin)?;
        let name = agent_name(&agent)?;
        let store = store(&self.state)?;
        let removed = store.remove_agent(name.as_str()).await?;
        if let Some(sec) = &self.state.link.security {
            sec.forget(name.as_str());
        }
        self.state
            .audit(
                AuditRecord::http(auth.0.name.clone(), "agent.remove")
                    .agent(Some(name.to_string()))
                    .outcome(if removed { "ok" } else { "not_found" }),
            )
            .await;
        if !removed {
            return Err(
                ErrorBody::not_found(format!("no agent named {name} is registered")).into(),
            );
        }
        self.state.fleet.forget(name.as_str());
        Ok(Json(TokenInfoName {
            name: name.to_string(),
        }))
    }
}
