//! The endpoints (`docs/protocol.md` § HTTP API), with typed schemas, one module per tag. Reads of
//! the fleet come from the cache; inspect, logs, live lists and actions go to the agent through
//! the requester.
//!
//! - [`agents`], [`containers`] (and [`stats`]), [`actions`], [`events`], [`admin`],
//!   [`operations`], [`broker`]: the endpoints of each tag.
//! - [`schemas`]: the request and response bodies.

pub mod actions;
pub mod admin;
pub mod agents;
pub mod broker;
pub mod containers;
pub mod events;
pub mod operations;
pub mod schemas;
pub mod stats;
pub mod streamed;

use std::sync::Arc;
use std::time::Duration;

use poem_openapi::Tags;
use zedops_proto::{AgentName, ContainerRef, ErrorBody};

use crate::cache::AgentEntry;
use crate::error::ApiError;
use crate::State;

pub use schemas::*;

pub use zedops_proto::http::{ACTION_TIMEOUT_S, MAX_TIMEOUT_S, READ_TIMEOUT_S};

#[derive(Tags)]
pub(crate) enum Tag {
    /// Agents of the fleet.
    Agents,
    /// Containers and actions on them.
    Containers,
    /// Operator-defined actions (`docs/actions.md`).
    Actions,
    /// Live updates.
    Events,
    /// Health and metrics of this server.
    Operations,
    /// Tokens and the audit log (admin).
    Admin,
    /// The authentication and ACL hook an external MQTT broker asks (`docs/security.md`).
    Broker,
}

/// Every endpoint, as poem-openapi serves a tuple of APIs.
pub type FleetApi = (
    agents::AgentsApi,
    containers::ContainersApi,
    stats::StatsApi,
    actions::ActionsApi,
    events::EventsApi,
    admin::AdminApi,
    operations::OperationsApi,
    broker::BrokerApi,
);

/// The endpoints over `state`.
pub fn api(state: Arc<State>) -> FleetApi {
    (
        agents::AgentsApi {
            state: state.clone(),
        },
        containers::ContainersApi {
            state: state.clone(),
        },
        stats::StatsApi {
            state: state.clone(),
        },
        actions::ActionsApi {
            state: state.clone(),
        },
        events::EventsApi {
            state: state.clone(),
        },
        admin::AdminApi {
            state: state.clone(),
        },
        operations::OperationsApi {
            state: state.clone(),
        },
        broker::BrokerApi { state },
    )
}

/// What a command's request (exec, an operator-defined action) waits beyond the command's own
/// deadline: Docker's calls around it.
pub(crate) const COMMAND_SLACK: Duration = Duration::from_secs(20);

/// A command's outcome as the audit log records it: `exit N` (`exit -` when it was killed), or
/// the error code when it could not run.
pub(crate) fn command_outcome(r: &Result<zedops_proto::ops::CommandResult, ErrorBody>) -> String {
    match r {
        Ok(r) => format!("exit {}", r.exit_code.map_or("-".into(), |c| c.to_string())),
        Err(e) => e.code.as_str().to_owned(),
    }
}

pub(crate) fn agent_name(s: &str) -> Result<AgentName, ApiError> {
    AgentName::new(s).map_err(|e| ApiError::from(ErrorBody::bad_request(e.to_string())))
}

pub(crate) fn container_ref(s: &str) -> Result<ContainerRef, ApiError> {
    ContainerRef::new(s).map_err(|e| ApiError::from(ErrorBody::bad_request(e.to_string())))
}

pub(crate) fn deadline(timeout_s: Option<u32>, default: u32) -> Result<Duration, ApiError> {
    let t = timeout_s.unwrap_or(default);
    if t == 0 || t > MAX_TIMEOUT_S {
        return Err(ErrorBody::bad_request(format!(
            "timeout_s {t} is out of range: use 1 to {MAX_TIMEOUT_S} seconds"
        ))
        .into());
    }
    Ok(Duration::from_secs(t.into()))
}

pub(crate) fn store(state: &State) -> Result<&crate::store::Store, ApiError> {
    state.store.as_deref().ok_or_else(|| {
            ErrorBody::bad_request("this server runs without authentication (no data dir), so it has no tokens or audit log").into()
        })
}

pub(crate) fn known(state: &State, name: &AgentName) -> Result<AgentEntry, ApiError> {
    state.fleet.get(name.as_str()).ok_or_else(|| {
        ErrorBody::not_found(format!("no agent named {name} is known to this server")).into()
    })
}

#[cfg(test)]
mod tests {
    /// The spec's pattern of `since` is `zedops_proto::since::PATTERN` (poem-openapi takes only
    /// literals), so the API refuses nothing the spec allows and the spec hides nothing.
    #[test]
    fn the_since_pattern_is_the_protos() {
        let spec: serde_json::Value = serde_json::from_str(&crate::openapi_json()).unwrap();
        let logs = &spec["paths"]["/api/v1/agents/{agent}/containers/{container}/logs"]["get"];
        let since = logs["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "since")
            .unwrap();
        assert_eq!(since["schema"]["pattern"], zedops_proto::since::PATTERN);
    }
}
