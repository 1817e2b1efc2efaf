//! Who am I, health, readiness, metrics.

use std::sync::Arc;

use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, OpenApi};

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::State;

use super::schemas::*;
use super::*;

#[derive(ApiResponse)]
enum Health {
    /// Ready.
    #[oai(status = 200)]
    Ok(PlainText<String>),
    /// Not ready yet: the reason.
    #[oai(status = 503)]
    NotReady(PlainText<String>),
}

pub struct OperationsApi {
    pub state: Arc<State>,
}

// Operations take their parameters as arguments (that is how poem-openapi documents them).
#[allow(clippy::too_many_arguments)]
#[OpenApi]
impl OperationsApi {
    /// Who am I
    ///
    /// The role of the presented token (`viewer`, `operator` or `admin`) and whether this server
    /// requires tokens at all. The dashboard uses it to show only the actions the token allows.
    #[oai(
        path = "/api/v1/whoami",
        method = "get",
        tag = "Tag::Operations",
        operation_id = "whoami"
    )]
    async fn whoami(&self, auth: Caller) -> ApiResult<WhoAmI> {
        Ok(Json(WhoAmI {
            role: auth.0.role,
            auth_required: auth.0.authenticated,
            token_name: auth.0.authenticated.then(|| auth.0.name.clone()),
        }))
    }

    /// Liveness
    ///
    /// 200 while the process serves HTTP.
    #[oai(
        path = "/healthz",
        method = "get",
        tag = "Tag::Operations",
        operation_id = "healthz"
    )]
    async fn healthz(&self) -> PlainText<&'static str> {
        PlainText("ok\n")
    }

    /// Readiness
    ///
    /// 200 once connected to the broker and the fleet cache is warm (retained state received and
    /// agents given time to answer the resync); 503 with the reason otherwise.
    #[oai(
        path = "/readyz",
        method = "get",
        tag = "Tag::Operations",
        operation_id = "readyz"
    )]
    async fn readyz(&self) -> Health {
        match self.state.ready() {
            Ok(()) => Health::Ok(PlainText("ready\n".into())),
            Err(why) => Health::NotReady(PlainText(format!("{why}\n"))),
        }
    }

    /// Prometheus metrics
    ///
    /// Agents online, requests by op and outcome, request latency histogram.
    #[oai(
        path = "/metrics",
        method = "get",
        tag = "Tag::Operations",
        operation_id = "metrics"
    )]
    async fn metrics(&self) -> PlainText<String> {
        PlainText(self.state.render_metrics())
    }
}
