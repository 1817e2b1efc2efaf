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

use crate::store::{same, Store};

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

/// Who `(client_id, user, pass)` is, or `None` to refuse the connection.
pub async fn identify(
    store: &Store,
    service: &ServiceLogin,
    client_id: &str,
    user: &str,
    pass: &str,
) -> Option<Identity> {
    if user == service.username {
        let ok =
            same(pass, &service.password) && client_id.starts_with(identity::API_CLIENT_PREFIX);
        return ok.then_some(Identity::Trusted);
    }
    if identity::claims_agent(client_id) || store.agent(user).await.is_some() {
        let ok = client_id == identity::agent_client_id(user)
            && store.check_agent_password(user, pass).await;
        return ok.then(|| Identity::Agent(user.to_owned()));
    }
    if identity::claims_api(client_id) {
        return None;
    }
    store
        .check_mqtt_user(user, pass)
        .await
        .map(|u| Identity::User {
            name: u.name,
            ha_commands: u.ha_commands,
        })
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
    if user == service.username {
        return client_id
            .starts_with(identity::API_CLIENT_PREFIX)
            .then_some(Identity::Trusted);
    }
    if identity::claims_agent(client_id) || store.agent(user).await.is_some() {
        let ok = client_id == identity::agent_client_id(user) && store.agent(user).await.is_some();
        return ok.then(|| Identity::Agent(user.to_owned()));
    }
    if identity::claims_api(client_id) {
        return None;
    }
    store.mqtt_user(user).await.map(|u| Identity::User {
        name: u.name,
        ha_commands: u.ha_commands,
    })
}
