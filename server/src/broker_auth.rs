//! The embedded broker's way into the broker policy (`zedops_api::broker_policy`): one
//! [`Authenticator`] over the store, with the API's per-process internal login as the service
//! login. An external broker reaches the same policy through the API's HTTP hook.

use std::sync::Arc;

use zedops_api::broker_policy::{identify, ServiceLogin};
use zedops_api::store::Store;
use zedops_broker::Authenticator;
use zedops_proto::identity;

/// The authentication policy of `zedops serve` over its store; `internal_password` is the
/// API's, random per process. The database reads run on the caller's runtime (the store's), not
/// on the broker's thread; an answer that takes longer than [`AUTH_WAIT`] refuses the connection.
pub fn policy(store: Arc<Store>, internal_password: String) -> Authenticator {
    let service = Arc::new(ServiceLogin {
        username: identity::INTERNAL_USER.to_owned(),
        password: internal_password,
    });
    let runtime = tokio::runtime::Handle::current();
    Authenticator(Arc::new(move |client_id: &str, user: &str, pass: &str| {
        let (store, service) = (store.clone(), service.clone());
        let (c, u, p) = (client_id.to_owned(), user.to_owned(), pass.to_owned());
        let asked = runtime.spawn(async move {
            tokio::time::timeout(AUTH_WAIT, identify(&store, &service, &c, &u, &p)).await
        });
        Box::pin(async move {
            match asked.await {
                Ok(Ok(who)) => who,
                _ => {
                    tracing::warn!("the database did not answer a broker login in time; refused");
                    None
                }
            }
        })
    }))
}

/// How long a broker login may wait for the database.
pub const AUTH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
