//! Who may connect to the embedded broker, and as which identity (`docs/security.md` § "Broker
//! authentication"): the API inside this process (its per-process password, an API client id),
//! enrolled agents (their password, and only with their own client id), and MQTT users made for
//! integrations. A client id that claims to be an agent or the API is never taken as an MQTT user.

use std::sync::Arc;

use zedops_api::store::Store;
use zedops_broker::{Authenticator, Identity};
use zedops_proto::identity;

/// The authentication policy of `zedops serve` over its store; `internal_password` is the
/// API's, random per process.
pub fn policy(store: Arc<Store>, internal_password: String) -> Authenticator {
    Authenticator(Arc::new(move |client_id: &str, user: &str, pass: &str| {
        identify(&store, &internal_password, client_id, user, pass)
    }))
}

fn identify(
    store: &Store,
    internal_password: &str,
    client_id: &str,
    user: &str,
    pass: &str,
) -> Option<Identity> {
    if user == identity::INTERNAL_USER {
        let ok = pass == internal_password && client_id.starts_with(identity::API_CLIENT_PREFIX);
        return ok.then_some(Identity::Trusted);
    }
    if identity::claims_agent(client_id) || store.agent(user).is_some() {
        let ok =
            client_id == identity::agent_client_id(user) && store.check_agent_password(user, pass);
        return ok.then(|| Identity::Agent(user.to_owned()));
    }
    if identity::claims_api(client_id) {
        return None;
    }
    store.check_mqtt_user(user, pass).map(|u| Identity::User {
        name: u.name,
        ha_commands: u.ha_commands,
    })
}
