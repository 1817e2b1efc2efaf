//! The embedded broker's way into the broker policy (`zedops_api::broker_policy`): one
//! [`Authenticator`] over the store, with the API's per-process internal login as the service
//! login. An external broker reaches the same policy through the API's HTTP hook.

use std::sync::Arc;

use zedops_api::broker_policy::{identify, ServiceLogin};
use zedops_api::store::Store;
use zedops_broker::Authenticator;
use zedops_proto::identity;

/// The authentication policy of `zedops serve` over its store; `internal_password` is the
/// API's, random per process.
pub fn policy(store: Arc<Store>, internal_password: String) -> Authenticator {
    let service = ServiceLogin {
        username: identity::INTERNAL_USER.to_owned(),
        password: internal_password,
    };
    Authenticator(Arc::new(move |client_id: &str, user: &str, pass: &str| {
        identify(&store, &service, client_id, user, pass)
    }))
}
