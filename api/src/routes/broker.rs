//! The broker's authentication and ACL hook (`docs/security.md` § "An external broker"): an
//! external MQTT broker asks this server who may connect and which topics each connection may use,
//! and gets the embedded broker's answer ([`crate::broker_policy`], [`zedops_proto::acl`]).
//!
//! The request shape is the one brokers' HTTP auth plugins send (rmqtt's `rmqtt-auth-http`, EMQX's
//! HTTP authenticator and authorizer): a form or a JSON object with `clientid`, `username`,
//! `password`, and for ACL questions `topic` with `access` (`1` subscribe, `2` publish: rmqtt) or
//! `action` (`subscribe`, `publish`: EMQX). The answer is `200` with
//! `{"result": "allow" | "deny", "superuser": …, "is_superuser": …}`: both plugins read `result`.
//! Off unless `zedops serve --broker-auth-hook` (then 404). The broker shows the hook's secret
//! (`--broker-auth-hook-secret`) as `Authorization: Bearer …` ([`BrokerCaller`]): else 401.
//!
//! What the hook costs: a connection's identity is read from the database once and serves its
//! ACL questions for a few seconds ([`crate::hook_identities`]), and an `allow` for an agent's own
//! status, snapshot, events or stats topic carries `X-Cache` ([`ACL_CACHE`]), so rmqtt asks again
//! about those only after that time or on the next connection.

use std::sync::Arc;

use poem_openapi::payload::{Form, Json};
use poem_openapi::{ApiRequest, ApiResponse, Object, OpenApi};
use zedops_proto::acl::Identity;
use zedops_proto::topics::{self, Topic};
use zedops_proto::ErrorBody;

use crate::auth::BrokerCaller;
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

/// How long, in milliseconds, an external broker may reuse an `allow` for one of an agent's own
/// status, snapshot, events and stats topics within one connection (rmqtt-auth-http reads it
/// from the `X-Cache` header). These are the topics an agent publishes again and again (every
/// resync, every Docker event, every stats interval); a connection has at most four of them, so
/// the broker's cache of them stays small. Per-container topics are not among them: their names
/// come and go with containers, and rmqtt keeps each name it cached until the connection ends.
/// The price: a removed agent's open connection may keep publishing to these four topics for
/// this long (the API ignores what it publishes from the moment of removal).
pub const ACL_CACHE: std::time::Duration = std::time::Duration::from_secs(300);

/// The ACL hook's answer.
#[derive(ApiResponse)]
pub enum AclAnswer {
    /// The verdict. `X-Cache`: for how many milliseconds the broker may reuse it for this
    /// connection and topic; sent only with an `allow` for an agent's own status, snapshot,
    /// events or stats topic (300000: five minutes).
    #[oai(status = 200)]
    Verdict(Json<BrokerVerdict>, #[oai(header = "X-Cache")] Option<u64>),
}

/// Whether an `allow` of `who` publishing to `topic` may be cached by the broker: an agent's own
/// status, snapshot, events or stats topic.
fn cacheable(who: &Identity, topic: &str) -> bool {
    let Identity::Agent(me) = who else {
        return false;
    };
    matches!(
        topics::parse(topic),
        Some(
            Topic::Status { agent }
                | Topic::Snapshot { agent }
                | Topic::Events { agent }
                | Topic::Stats { agent }
        ) if agent == me
    )
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
    /// `--broker-auth-hook`, 401 without its secret (`--broker-auth-hook-secret`).
    #[oai(
        path = "/api/v1/broker/auth",
        method = "post",
        tag = "Tag::Broker",
        operation_id = "broker_auth"
    )]
    async fn broker_auth(&self, _broker: BrokerCaller, body: AuthBody) -> ApiResult<BrokerVerdict> {
        let q = match body {
            AuthBody::Json(Json(q)) | AuthBody::Form(Form(q)) => q,
        };
        let (store, service) = self.hook()?;
        let who = identify(store, service, &q.clientid, &q.username, &q.password).await;
        self.count_read(service, &q.username);
        match &who {
            Some(w) => self
                .state
                .hook_identities
                .put(&q.clientid, &q.username, w.clone()),
            None => {
                tracing::info!(client_id = %q.clientid, username = %q.username, "broker hook: connection refused")
            }
        }
        self.state.metrics.hook_question("auth", who.is_some());
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
    /// `--broker-auth-hook`, 401 without its secret (`--broker-auth-hook-secret`).
    #[oai(
        path = "/api/v1/broker/acl",
        method = "post",
        tag = "Tag::Broker",
        operation_id = "broker_acl"
    )]
    async fn broker_acl(
        &self,
        _broker: BrokerCaller,
        body: AclBody,
    ) -> Result<AclAnswer, ApiError> {
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
                return Ok(AclAnswer::Verdict(BrokerVerdict::of(false, false), None));
            }
        };
        let who = self
            .identity(store, service, &q.clientid, &q.username)
            .await;
        let allowed = who.as_ref().is_some_and(|w| match publish {
            true => w.may_publish(&q.topic),
            false => w.may_subscribe(&q.topic),
        });
        let what = if publish { "publish" } else { "subscribe" };
        if !allowed {
            tracing::info!(client_id = %q.clientid, username = %q.username, topic = %q.topic, what, "broker hook: refused");
        }
        self.state.metrics.hook_question(what, allowed);
        let cache = who
            .filter(|w| allowed && publish && cacheable(w, &q.topic))
            .map(|_| ACL_CACHE.as_millis() as u64);
        Ok(AclAnswer::Verdict(BrokerVerdict::of(allowed, false), cache))
    }
}

impl BrokerApi {
    /// The connection's identity: as the hook last found it within its TTL, else from the
    /// database.
    async fn identity(
        &self,
        store: &crate::store::Store,
        service: &ServiceLogin,
        client_id: &str,
        user: &str,
    ) -> Option<Identity> {
        let cached = &self.state.hook_identities;
        if let Some(who) = cached.get(client_id, user) {
            return Some(who);
        }
        let who = identity_of(store, service, client_id, user).await;
        self.count_read(service, user);
        if let Some(w) = &who {
            cached.put(client_id, user, w.clone());
        }
        who
    }

    /// Counts the database read of a question about `user` (this server's own login needs none).
    fn count_read(&self, service: &ServiceLogin, user: &str) {
        if user != service.username {
            self.state.metrics.hook_database_read();
        }
    }

    fn hook(&self) -> Result<(&crate::store::Store, &ServiceLogin), ApiError> {
        let off = || {
            ApiError::from(ErrorBody::not_found(
                "this server is not its broker's authentication hook (start it with --broker-auth-hook)",
            ))
        };
        let service = &self.state.broker_hook.get().ok_or_else(off)?.service;
        let store = self.state.store.as_deref().ok_or_else(off)?;
        Ok((store, service))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_agents_own_repeated_state_topics_are_cacheable() {
        let a = Identity::Agent("a".into());
        for t in ["status", "containers", "events", "stats"] {
            assert!(cacheable(&a, &format!("zedops/v1/agents/a/{t}")), "{t}");
            assert!(
                !cacheable(&a, &format!("zedops/v1/agents/b/{t}")),
                "b's {t}"
            );
        }
        // Names that come and go, replies, anything else: asked every time.
        for t in [
            "zedops/v1/agents/a/containers/web",
            "zedops/v1/replies/zedops-cli-1",
            "homeassistant/switch/a/web/config",
        ] {
            assert!(!cacheable(&a, t), "{t}");
        }
        let user = Identity::User {
            name: "ha".into(),
            ha_commands: true,
        };
        assert!(!cacheable(&user, "zedops/v1/agents/a/status"));
        assert!(!cacheable(&Identity::Trusted, "zedops/v1/agents/a/status"));
    }
}
