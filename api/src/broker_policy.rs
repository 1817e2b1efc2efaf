//! Who may connect to the fleet's broker, and as which identity (`docs/security.md` § "Broker
//! authentication"): the server's own login (the API, and nothing else may use it), enrolled
//! agents (their password, and only with their own client id), and MQTT users made for
//! integrations. A client id that claims to be an agent or the API is never taken as an MQTT user.
//!
//! One policy, two ways in: the embedded broker calls [`identify`] for each CONNECT
//! (`zedops-server`'s `broker_auth`), an external broker asks the HTTP hook
//! ([`crate::routes::broker`]), which calls [`identify`] and [`identity_of`]. What each identity may
//! publish and subscribe to is [`zedops_proto::acl`].

use zedops_proto::acl::Identity;
use zedops_proto::identity;

use crate::store::{proves, same, Store};

/// The server's own broker login: the embedded broker's internal user with its per-process
/// password, or for an external broker what `--broker-username` and `--broker-password` name.
#[derive(Clone)]
pub struct ServiceLogin {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for ServiceLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceLogin")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What the broker hook answers with ([`crate::Api::serve_broker_hook`]): this server's own login,
/// and the secret the broker's auth plugin sends as `Authorization: Bearer …` (kept as its
/// SHA-256, compared in constant time), so that nobody but the broker can ask the hook, whose
/// answers would otherwise test passwords at HTTP speed.
#[derive(Clone)]
pub struct BrokerHook {
    pub service: ServiceLogin,
    pub secret_hash: String,
}

impl BrokerHook {
    pub fn new(service: ServiceLogin, secret: &str) -> Self {
        Self {
            service,
            secret_hash: crate::store::hash_secret(secret),
        }
    }
}

impl std::fmt::Debug for BrokerHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerHook")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// Who `(client_id, user, pass)` is, or `None` to refuse the connection.
pub async fn identify(
    store: &Store,
    service: &ServiceLogin,
    client_id: &str,
    user: &str,
    pass: &str,
) -> Option<Identity> {
    resolve(store, service, client_id, user, Some(pass)).await
}

/// Who a connection that [`identify`] let in is, from its client id and username alone: what an
/// external broker's ACL question carries (it authenticated the connection before). `None`
/// when no such identity exists (any more): every topic is refused.
pub async fn identity_of(
    store: &Store,
    service: &ServiceLogin,
    client_id: &str,
    user: &str,
) -> Option<Identity> {
    resolve(store, service, client_id, user, None).await
}

/// The one resolution behind both: with `pass`, the password must prove the identity too.
/// One database read per question (the agent's record, else the MQTT user's).
async fn resolve(
    store: &Store,
    service: &ServiceLogin,
    client_id: &str,
    user: &str,
    pass: Option<&str>,
) -> Option<Identity> {
    // Without a password to check (an ACL question), the identity stands as it is.
    let shown = |hash: Option<&str>| pass.is_none_or(|p| hash.is_some_and(|h| proves(h, p)));
    if user == service.username {
        let ok = pass.is_none_or(|p| same(p, &service.password))
            && client_id.starts_with(identity::API_CLIENT_PREFIX);
        return ok.then_some(Identity::Trusted);
    }
    let agent = store.agent(user).await;
    if identity::claims_agent(client_id) || agent.is_some() {
        let ok = client_id == identity::agent_client_id(user)
            && agent.is_some_and(|r| shown(r.mqtt_password_hash.as_deref()));
        return ok.then(|| Identity::Agent(user.to_owned()));
    }
    if identity::claims_api(client_id) {
        return None;
    }
    let u = store.mqtt_user(user).await?;
    shown(Some(&u.password_hash)).then_some(Identity::User {
        name: u.name,
        ha_commands: u.ha_commands,
    })
}
