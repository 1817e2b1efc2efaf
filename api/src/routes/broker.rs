//! The broker's authentication and ACL hook (`docs/security.md` § "An external broker"): an
//! external MQTT broker asks this server who may connect and which topics each connection may use,
//! and gets the embedded broker's answer ([`crate::broker_policy`], [`zedops_proto::acl`]).
//!
//! The request shape is the one brokers' HTTP auth plugins send (rmqtt's `rmqtt-auth-http`, EMQX's
//! HTTP authenticator and authorizer): a form or a JSON object with `clientid`, `username`,
//! `password`, and for ACL questions `topic` with `access` (`1` subscribe, `2` publish: rmqtt) or
//! `action` (`subscribe`, `publish`: EMQX). The answer is `200` with
//! `{"result": "allow" | "deny", "superuser": …, "is_superuser": …}`: both plugins read `result`.
//! Off unless `zedops serve --broker-auth-hook` (then 404).

use std::sync::Arc;

use poem_openapi::payload::{Form, Json};
use poem_openapi::{ApiRequest, Object, OpenApi};
use zedops_proto::acl::Identity;
use zedops_proto::ErrorBody;

use crate::broker_policy::{identify, identity_of, ServiceLogin};
use crate::error::{ApiError, ApiResult};
use crate::State;

use super::Tag;

/// A connection's credentials, as the broker forwards them.
#[derive(Debug, Object, serde::Deserialize)]
pub struct BrokerAuthQuestion {
    pub clientid: String,
    #[oai(default)]
    #[serde(default)]
    pub username: String,
    #[oai(default)]
    #[serde(default)]
    pub password: String,
}

/// A connection's publish or subscribe, as the broker forwards it.
#[derive(Debug, Object, serde::Deserialize)]
pub struct BrokerAclQuestion {
    pub clientid: String,
    #[oai(default)]
    #[serde(default)]
    pub username: String,
    /// The topic of a publish, or the filter of a subscription (`$share/…` included).
    pub topic: String,
    /// `1`: subscribe, `2`: publish (rmqtt's `%A`).
    #[oai(validator(pattern = "^[12]$"))]
    pub access: Option<String>,
    /// `subscribe` or `publish` (EMQX's `${action}`).
    #[oai(validator(pattern = "^(subscribe|publish)$"))]
    pub action: Option<String>,
}

#[derive(ApiRequest)]
pub enum AuthBody {
    Json(Json<BrokerAuthQuestion>),
    Form(Form<BrokerAuthQuestion>),
}

#[derive(ApiRequest)]
pub enum AclBody {
    Json(Json<BrokerAclQuestion>),
    Form(Form<BrokerAclQuestion>),
}

/// The hook's answer.
#[derive(Debug, Object)]
pub struct BrokerVerdict {
    /// `allow` or `deny`.
    pub result: String,
    /// The connection may use every topic (this server's own login): rmqtt's name.
    pub superuser: bool,
    /// The same, by EMQX's name.
    pub is_superuser: bool,
}

impl BrokerVerdict {
    fn of(allowed: bool, superuser: bool) -> Json<Self> {
        let result = if allowed { "allow" } else { "deny" };
        Json(Self {
            result: result.into(),
            superuser: allowed && superuser,
            is_superuser: allowed && superuser,
        })
    }
}

pub struct BrokerApi {
    pub state: Arc<State>,
}

#[OpenApi]
impl BrokerApi {
    /// Broker authentication hook
    ///
    /// For an external MQTT broker: may this connection log in? `allow` for this server's own
    /// login (`--broker-username`), enrolled agents with their own client id and password, and
    /// MQTT users (`zedops mqtt-user add`). Answers 404 unless the server runs with
    /// `--broker-auth-hook`.
    #[oai(
        path = "/api/v1/broker/auth",
        method = "post",
        tag = "Tag::Broker",
        operation_id = "broker_auth"
    )]
    async fn broker_auth(&self, body: AuthBody) -> ApiResult<BrokerVerdict> {
        let q = match body {
            AuthBody::Json(Json(q)) | AuthBody::Form(Form(q)) => q,
        };
        let (store, service) = self.hook()?;
        let who = identify(store, service, &q.clientid, &q.username, &q.password).await;
        if who.is_none() {
            tracing::info!(client_id = %q.clientid, username = %q.username, "broker hook: connection refused");
        }
        Ok(BrokerVerdict::of(
            who.is_some(),
            who == Some(Identity::Trusted),
        ))
    }

    /// Broker ACL hook
    ///
    /// For an external MQTT broker: may this connection publish to this topic, or subscribe to
    /// this filter? The same rules as the embedded broker's: an agent publishes only its own
    /// state and subscribes only to its own requests; MQTT users read, send requests, and send
    /// Home Assistant commands only with that right. Answers 404 unless the server runs with
    /// `--broker-auth-hook`.
    #[oai(
        path = "/api/v1/broker/acl",
        method = "post",
        tag = "Tag::Broker",
        operation_id = "broker_acl"
    )]
    async fn broker_acl(&self, body: AclBody) -> ApiResult<BrokerVerdict> {
        let q = match body {
            AclBody::Json(Json(q)) | AclBody::Form(Form(q)) => q,
        };
        let (store, service) = self.hook()?;
        let publish = match (q.access.as_deref(), q.action.as_deref()) {
            (Some("2"), _) | (_, Some("publish")) => true,
            (Some("1"), _) | (_, Some("subscribe")) => false,
            _ => {
                // A question the hook cannot read is answered no.
                tracing::warn!(client_id = %q.clientid, "broker hook: an ACL question without access (1 subscribe, 2 publish) or action (subscribe, publish); check the broker's hook configuration");
                return Ok(BrokerVerdict::of(false, false));
            }
        };
        let who = identity_of(store, service, &q.clientid, &q.username).await;
        let allowed = who.as_ref().is_some_and(|w| match publish {
            true => w.may_publish(&q.topic),
            false => w.may_subscribe(&q.topic),
        });
        if !allowed {
            let what = if publish { "publish" } else { "subscribe" };
            tracing::info!(client_id = %q.clientid, username = %q.username, topic = %q.topic, what, "broker hook: refused");
        }
        Ok(BrokerVerdict::of(allowed, false))
    }
}

impl BrokerApi {
    fn hook(&self) -> Result<(&crate::store::Store, &ServiceLogin), ApiError> {
        let off = || {
            ApiError::from(ErrorBody::not_found(
                "this server is not its broker's authentication hook (start it with --broker-auth-hook)",
            ))
        };
        let service = self.state.broker_hook.get().ok_or_else(off)?;
        let store = self.state.store.as_deref().ok_or_else(off)?;
        Ok((store, service))
    }
}
