//! The broker's front end: every MQTT client connects here, never to rumqttd directly.
//!
//! Per connection it terminates TLS (with a handshake deadline, on the connection's own task, so
//! one silent client holds up nobody), reads the CONNECT (with a deadline), authenticates it,
//! and only then opens the client's in-process link to rumqttd's router ([`link`]). From then on
//! it relays packets both ways, decoding each with rumqttc's codecs ([`wire`]): PUBLISH and
//! SUBSCRIBE pass the identity's ACLs ([`crate::acl`]), and a client speaking MQTT 3.1.1 is
//! bridged to MQTT 5 (the router only ever sees MQTT 5). It keeps each client's keep-alive and
//! publishes its Last Will ([`wills`]); [`sessions`] knows which connection holds a client id. Either protocol version is accepted on
//! every listener. An agent's subscription to its own command topics stays here ([`routes`]):
//! the front end receives every command through one connection of its own ([`feed`]) and hands
//! each to the connections that asked, so rumqttd's router holds no filter per agent.

pub(crate) mod conn;
pub(crate) mod feed;
pub(crate) mod link;
pub(crate) mod routes;
pub(crate) mod sessions;
pub(crate) mod subs;
pub(crate) mod wills;
pub(crate) mod wire;

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::Login;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::acl::Identity;
use crate::Authenticator;

/// How long a TLS handshake may take.
pub(crate) const TLS_DEADLINE: Duration = Duration::from_secs(10);

/// What every connection of every listener shares.
pub(crate) struct Shared {
    pub(crate) auth: Option<Authenticator>,
    pub(crate) router: link::Router,
    pub(crate) sessions: Arc<sessions::Sessions>,
    pub(crate) wills: wills::Wills,
    /// Agents' subscriptions to their own command topics, served by the front end ([`routes`]).
    pub(crate) routes: Arc<routes::Routes>,
    pub(crate) max_packet: usize,
    pub(crate) slots: Arc<Semaphore>,
}

impl Shared {
    /// Who the client is, or `None` when it may not connect. Without an authenticator every
    /// client is trusted (`--no-auth`, loopback only).
    pub(crate) async fn authenticate(
        &self,
        client_id: &str,
        login: Option<&Login>,
    ) -> Option<Identity> {
        let Some(auth) = &self.auth else {
            return Some(Identity::Trusted);
        };
        let (user, pass) = login
            .map(|l| (l.username.as_str(), l.password.as_str()))
            .unwrap_or_default();
        (auth.0)(client_id, user, pass).await
    }
}

/// Accepts clients on `listener` until the runtime stops.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let mut refused_full = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment instead of spinning.
                tracing::warn!(error = %e, "MQTT listener cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
            refused_full += 1;
            if refused_full.is_power_of_two() {
                tracing::warn!(%peer, refused = refused_full, "MQTT connection refused: the broker is at its connection limit");
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => conn::serve(stream, peer, shared).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_DEADLINE, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => conn::serve(s, peer, shared).await,
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "MQTT TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::info!(%peer, "MQTT TLS handshake not completed within {TLS_DEADLINE:?}; closed")
                        }
                    }
                }
            }
        });
    }
}
