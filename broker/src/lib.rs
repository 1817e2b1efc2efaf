//! The embedded MQTT broker: our own front end ([`front`]) before rumqttd's router.
//!
//! Every client connects to the front end, which terminates TLS, authenticates the CONNECT,
//! enforces per-identity topic ACLs ([`acl`]), keeps keep-alives and Last Wills, and bridges MQTT
//! 3.1.1 clients to MQTT 5; each client reaches rumqttd's router through an in-process link, and
//! rumqttd's network server does not run (`docs/architecture.md` says why: three defects of
//! rumqttd 0.20 that any client could reach).
//!
//! rumqttd's own `Broker::start()` blocks, only logs a failed bind, and cannot be stopped. This crate
//! drives rumqttd's public `Router` itself so that:
//! - a listener that cannot bind is an error returned to the caller;
//! - port 0 works, and [`BrokerHandle`] reports the real addresses;
//! - [`BrokerHandle::stop`] closes the listeners and every client connection.
//!
//! Router limits are set for zedops' traffic: packets up to [`zedops_proto::MAX_PACKET_BYTES`]
//! (snapshots of hundreds of containers), and a QoS 0 read budget large enough that a subscriber to
//! `zedops/v1/agents/+/status` receives every retained status of a large fleet (rumqttd truncates
//! retained delivery to that budget; see `docs/architecture.md`).

mod front;
mod tls;

/// The topic policy lives with the contract, shared with the API's hook for external brokers.
pub use zedops_proto::acl;
pub use zedops_proto::acl::Identity;

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;
use std::time::Duration;

use rumqttd::{Router, RouterConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tracing::info;
use zedops_proto::topics;

/// Decides whether a connection may proceed and who it is:
/// `(client_id, username, password) -> Some(identity)`, `None` to refuse.
/// Called once per CONNECT; the CONNACK waits for its answer (a database read).
#[derive(Clone)]
pub struct Authenticator(pub Arc<AuthFn>);

/// `(client_id, username, password) -> who`, when the future resolves.
pub type AuthFn = dyn Fn(&str, &str, &str) -> AuthFuture + Send + Sync;

/// The answer of an [`Authenticator`].
pub type AuthFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Option<Identity>> + Send>>;

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator")
    }
}

/// Configuration of the embedded broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// When set, every connection must authenticate; `None` accepts anonymous clients.
    pub auth: Option<Authenticator>,
    /// MQTT 5 listener (default `0.0.0.0:1883`); port 0 picks a free port.
    pub v5_listen: SocketAddr,
    /// MQTT 3.1.1 listener (default `0.0.0.0:1884`); `None` disables it.
    pub v4_listen: Option<SocketAddr>,
    /// Most simultaneous client connections.
    pub max_connections: usize,
    /// Retained messages (and QoS 0 messages) delivered to one subscription per router pass.
    pub max_outgoing_packet_count: u64,
    /// Serve the listeners over TLS with this certificate chain and key (PEM files). A plain MQTT 5
    /// listener on 127.0.0.1 (ephemeral port, [`BrokerHandle::internal_addr`]) remains for
    /// in-process clients (the API and the local agent), still authenticated.
    pub tls: Option<TlsFiles>,
}

/// PEM files of a TLS server certificate (chain) and its private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            auth: None,
            v5_listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            v4_listen: Some(SocketAddr::from(([0, 0, 0, 0], 1884))),
            max_connections: 20_000,
            max_outgoing_packet_count: 50_000,
            tls: None,
        }
    }
}

impl BrokerConfig {
    /// Both listeners on loopback with ports chosen by the OS; for tests and benchmarks.
    pub fn ephemeral() -> Self {
        Self {
            v5_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            v4_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Self::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot listen for MQTT on {addr}: {source} (is another broker running there? choose another address with --mqtt-listen)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the broker's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Tls(String),
    #[error("the broker's router did not take the command subscriptions within {0:?}")]
    NoCommandFeed(Duration),
}

/// How long the front end's command feed may take to subscribe at start.
const FEED_WITHIN: Duration = Duration::from_secs(10);

/// A running embedded broker. Dropping the handle stops it.
pub struct BrokerHandle {
    v5_addr: SocketAddr,
    v4_addr: Option<SocketAddr>,
    internal_addr: Option<SocketAddr>,
    tls: bool,
    /// One stop signal and one thread per runtime: the front end's, and rumqttd's links'.
    stop: Vec<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for BrokerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerHandle")
            .field("v5_addr", &self.v5_addr)
            .field("v4_addr", &self.v4_addr)
            .finish()
    }
}

impl BrokerHandle {
    /// The address of the MQTT 5 listener, with the real port.
    pub fn v5_addr(&self) -> SocketAddr {
        self.v5_addr
    }

    /// The address of the MQTT 3.1.1 listener, with the real port.
    pub fn v4_addr(&self) -> Option<SocketAddr> {
        self.v4_addr
    }

    /// Where a client on this host reaches the broker without TLS, if anywhere.
    pub fn local_plain_addr(&self) -> Option<SocketAddr> {
        match (self.internal_addr, self.tls) {
            (Some(a), _) => Some(a),
            (None, false) => Some(connect_addr(self.v5_addr)),
            (None, true) => None,
        }
    }

    /// True when the public listeners use TLS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Stops accepting, closes every client connection and waits for the broker's threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        for stop in self.stop.drain(..) {
            let _ = stop.send(());
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A TCP port on `ip` that was free a moment ago, chosen at random below the kernel's ephemeral
/// range (`net.ipv4.ip_local_port_range`) so that neither outgoing connections nor other
/// "port 0" listeners are likely to take it before the caller binds it. Falls back to a port the
/// kernel picks when none is found.
pub fn free_port(ip: std::net::IpAddr) -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOW: u16 = 20000;
    if ephemeral_low > LOW + 1000 {
        for _ in 0..64 {
            let port = rand::random_range(LOW..ephemeral_low);
            if StdTcpListener::bind((ip, port)).is_ok() {
                return port;
            }
        }
    }
    StdTcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Binds a front-end listener (held from here on: no window for another process to take it).
fn bind(addr: SocketAddr) -> Result<StdTcpListener, BrokerError> {
    let l = StdTcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?;
    l.set_nonblocking(true)
        .map_err(|source| BrokerError::Bind { addr, source })?;
    Ok(l)
}

fn local_addr(l: &StdTcpListener, addr: SocketAddr) -> Result<SocketAddr, BrokerError> {
    l.local_addr()
        .map_err(|source| BrokerError::Bind { addr, source })
}

/// Starts the broker and returns once every listener accepts connections.
pub async fn start(config: BrokerConfig) -> Result<BrokerHandle, BrokerError> {
    let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
    let (listeners, addrs) = bind_listeners(&config, tls.is_some())?;
    // Two threads: rumqttd's router, and the front end's connections (a single-threaded
    // runtime, with a few blocking threads on which new links wait for the router).
    let runtime = front_runtime()?;
    let front = Front {
        router: front::link::Router::spawn(Router::new(0, router_config(&config))),
        auth: config.auth.clone(),
        max_connections: config.max_connections,
        listeners,
        acceptor: tls.map(tokio_rustls::TlsAcceptor::from),
    };
    let (stop_tx, ready_rx, thread) = front.spawn(runtime)?;
    let mut handle = BrokerHandle {
        v5_addr: addrs[0],
        v4_addr: config.v4_listen.map(|_| addrs[1]),
        internal_addr: config.tls.as_ref().map(|_| addrs[addrs.len() - 1]),
        tls: config.tls.is_some(),
        stop: vec![stop_tx],
        threads: vec![thread],
    };
    let ready = match ready_rx.await {
        Ok(r) => r,
        Err(_) => Err(BrokerError::Runtime(std::io::Error::other(
            "the broker's thread ended during start",
        ))),
    };
    if let Err(e) = ready {
        handle.shutdown();
        return Err(e);
    }
    info!(mqtt5 = %handle.v5_addr, mqtt311 = ?handle.v4_addr, "embedded MQTT broker listening");
    Ok(handle)
}

/// A bound listener and whether it speaks TLS.
type Listener = (std::net::TcpListener, bool);

/// The public listeners (MQTT 5, and 3.1.1 when asked), then with TLS a plain one on loopback;
/// with their real addresses (port 0 resolved).
fn bind_listeners(
    config: &BrokerConfig,
    tls: bool,
) -> Result<(Vec<Listener>, Vec<SocketAddr>), BrokerError> {
    let mut wanted = vec![(config.v5_listen, tls)];
    if let Some(a) = config.v4_listen {
        wanted.push((a, tls));
    }
    if tls {
        wanted.push((SocketAddr::from(([127, 0, 0, 1], 0)), false));
    }
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for (a, tls) in wanted {
        let l = bind(a)?;
        addrs.push(local_addr(&l, a)?);
        listeners.push((l, tls));
    }
    Ok((listeners, addrs))
}

/// The front end, ready to run on its own runtime.
struct Front {
    router: front::link::Router,
    auth: Option<Authenticator>,
    max_connections: usize,
    listeners: Vec<Listener>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
}

type Spawned = (
    oneshot::Sender<()>,
    oneshot::Receiver<Result<(), BrokerError>>,
    std::thread::JoinHandle<()>,
);

impl Front {
    /// Runs the front end on `runtime`, on a thread of its own so that the runtime can be
    /// dropped (closing every connection) without blocking the caller's. Returns the stop
    /// signal, whether it started, and the thread.
    fn spawn(self, runtime: tokio::runtime::Runtime) -> Result<Spawned, BrokerError> {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), BrokerError>>();
        let thread = std::thread::Builder::new()
            .name("zedops-broker-front-owner".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let shared = Arc::new(self.shared());
                    let ready = start_feed(&shared).await;
                    let ok = ready.is_ok();
                    if ok {
                        self.accept(shared);
                    }
                    let _ = ready_tx.send(ready);
                    if ok {
                        let _ = stop_rx.await;
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(2));
            })
            .map_err(BrokerError::Runtime)?;
        Ok((stop_tx, ready_rx, thread))
    }

    /// What every connection shares; starts the wills' task on the current runtime.
    fn shared(&self) -> front::Shared {
        let sessions = Arc::new(front::sessions::Sessions::default());
        front::Shared {
            auth: self.auth.clone(),
            router: self.router.clone(),
            wills: front::wills::Wills::start(self.router.clone(), sessions.clone()),
            sessions,
            routes: Arc::new(front::routes::Routes::default()),
            max_packet: zedops_proto::MAX_PACKET_BYTES,
            slots: Arc::new(tokio::sync::Semaphore::new(self.max_connections)),
        }
    }

    /// An accept loop per listener, on the current runtime.
    fn accept(self, shared: Arc<front::Shared>) {
        for (l, tls) in self.listeners {
            match TcpListener::from_std(l) {
                Ok(l) => {
                    let acceptor = tls.then(|| self.acceptor.clone()).flatten();
                    tokio::spawn(front::accept_loop(l, acceptor, shared.clone()));
                }
                Err(e) => tracing::warn!(error = %e, "MQTT listener lost"),
            }
        }
    }
}

/// Starts the command feed ([`front::feed`]) and waits until its subscription is taken.
async fn start_feed(shared: &front::Shared) -> Result<(), BrokerError> {
    let (fed, subscribed) = oneshot::channel();
    let routes = shared.routes.clone();
    tokio::spawn(front::feed::run(shared.router.clone(), routes, fed));
    match tokio::time::timeout(FEED_WITHIN, subscribed).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(BrokerError::NoCommandFeed(FEED_WITHIN)),
    }
}

/// Links waiting for the router at once, each on a blocking thread.
const LINK_OPENERS: usize = 8;

fn front_runtime() -> Result<tokio::runtime::Runtime, BrokerError> {
    tokio::runtime::Builder::new_current_thread()
        .thread_name("zedops-broker-front")
        .max_blocking_threads(LINK_OPENERS)
        .enable_all()
        .build()
        .map_err(BrokerError::Runtime)
}

fn router_config(config: &BrokerConfig) -> RouterConfig {
    RouterConfig {
        // Above the front end's own limit, so the router never refuses a connection the front
        // end let through (a refusal there is one way rumqttd 0.20 poisons its listener).
        max_connections: config.max_connections + 64,
        max_outgoing_packet_count: config.max_outgoing_packet_count,
        // Segments are in-memory commit logs per subscription filter; small segments bound memory.
        max_segment_size: 4 * 1024 * 1024,
        max_segment_count: 4,
        custom_segment: None,
        // rumqttd 0.20 remembers which filters a topic matches only once some filter has
        // matched it; a topic nobody subscribes to is matched against every filter of the
        // fleet (one per agent) on every publish. These filters exist from the start so that
        // every state topic of the contract is matched once, whether or not the API (or Home
        // Assistant) is subscribed yet (docs/benchmarks.md §6). Each holds at most
        // max_segment_count segments, like any subscription.
        initialized_filters: Some(
            [
                topics::ALL_STATUS,
                topics::ALL_SNAPSHOTS,
                topics::ALL_EVENTS,
                topics::ALL_CONTAINER_TOPICS,
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        // Agents take requests through shared-subscription groups of their own (one member
        // each). rumqttd's default (round robin) reads such a group one message at a time
        // and never moves its read position past a message that expired in the broker, so
        // one request with Message Expiry 0 stopped all later requests to that agent;
        // sticky reads a batch and moves past it.
        shared_subscriptions_strategy: rumqttd::Strategy::Sticky,
    }
}

/// The address to connect to: an unspecified listen address is reached through loopback.
fn connect_addr(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    a
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn port_zero_reports_real_ports_and_stop_closes() {
        let b = start(BrokerConfig::ephemeral()).await.unwrap();
        let a5 = b.v5_addr();
        assert_ne!(a5.port(), 0);
        assert_ne!(b.v4_addr().unwrap().port(), 0);
        tokio::net::TcpStream::connect(a5).await.unwrap();
        tokio::task::spawn_blocking(move || b.stop()).await.unwrap();
        assert!(tokio::net::TcpStream::connect(a5).await.is_err());
    }

    #[test]
    fn free_ports_are_below_the_ephemeral_range() {
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(32768);
        for _ in 0..20 {
            let port = free_port(std::net::Ipv4Addr::LOCALHOST.into());
            assert!(
                port != 0 && (low <= 21000 || port < low),
                "{port} (ephemeral from {low})"
            );
            StdTcpListener::bind(("127.0.0.1", port)).expect("the port is free");
        }
    }

    #[tokio::test]
    async fn address_in_use_is_an_error() {
        let taken = StdTcpListener::bind("127.0.0.1:0").unwrap();
        let cfg = BrokerConfig {
            v5_listen: taken.local_addr().unwrap(),
            v4_listen: None,
            ..BrokerConfig::default()
        };
        let err = start(cfg).await.unwrap_err();
        assert!(err.to_string().contains("cannot listen"), "{err}");
    }
}
