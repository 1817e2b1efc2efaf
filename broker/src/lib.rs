//! The embedded MQTT broker: rumqttd, started in-process with an MQTT 5 listener and an MQTT 3.1.1
//! compatibility listener (rumqttd serves one protocol version per listener).
//!
//! rumqttd's own `Broker::start()` blocks, only logs a failed bind, and cannot be stopped. This crate
//! drives rumqttd's public `Router` and `Server` pieces itself so that:
//! - a listener that cannot bind is an error returned to the caller;
//! - port 0 works, and [`BrokerHandle`] reports the real addresses;
//! - [`BrokerHandle::stop`] closes the listeners and every client connection.
//!
//! Router limits are set for zedops' traffic: packets up to [`zedops_proto::MAX_PACKET_BYTES`]
//! (snapshots of hundreds of containers), and a QoS 0 read budget large enough that a subscriber to
//! `zedops/v1/agents/+/status` receives every retained status of a large fleet (rumqttd truncates
//! retained delivery to that budget; see `docs/architecture.md`).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;
use std::time::Duration;

use rumqttd::protocol::{v4::V4, v5::V5};
use rumqttd::{ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings};
use tokio::sync::oneshot;
use tracing::info;
use zedops_proto::topics;

/// Decides whether a connection may proceed: `(client_id, username, password) -> allowed`.
/// Called once per CONNECT; it must be fast (it runs on the broker's accept path).
#[derive(Clone)]
pub struct Authenticator(pub Arc<AuthFn>);

/// `(client_id, username, password) -> allowed`.
pub type AuthFn = dyn Fn(&str, &str, &str) -> bool + Send + Sync;

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
    #[error("the MQTT listener on {addr} did not come up within {waited:?}")]
    NotListening { addr: SocketAddr, waited: Duration },
    #[error("cannot start the broker's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Tls(String),
}

/// A running embedded broker. Dropping the handle stops it.
pub struct BrokerHandle {
    v5_addr: SocketAddr,
    v4_addr: Option<SocketAddr>,
    internal_addr: Option<SocketAddr>,
    tls: bool,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
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

    /// With TLS: the plain loopback MQTT 5 listener for in-process clients.
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.internal_addr
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
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Picks the concrete address for a listener: binds it once to learn the port (and to turn an
/// address in use into an error), then releases it for rumqttd's own bind (rumqttd binds by
/// address; it cannot take a bound socket).
///
/// Port 0 is resolved by [`free_port`], outside the kernel's ephemeral range: a port the kernel
/// hands out for port 0 is also the kind it hands to outgoing connections, and one of those could
/// take it in the moment between this release and rumqttd's bind.
fn reserve(addr: SocketAddr) -> Result<SocketAddr, BrokerError> {
    let addr = if addr.port() == 0 {
        SocketAddr::new(addr.ip(), free_port(addr.ip()))
    } else {
        addr
    };
    let l = StdTcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?;
    l.local_addr()
        .map_err(|source| BrokerError::Bind { addr, source })
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

/// The start-up probe's identity: random per process, accepted besides the authenticator.
struct Probe {
    client_id: String,
    password: String,
}

fn server_settings(
    name: &str,
    listen: SocketAddr,
    auth: Option<&Authenticator>,
    probe: &Arc<Probe>,
    tls: Option<&TlsFiles>,
) -> ServerSettings {
    let mut s = ServerSettings {
        name: name.to_owned(),
        listen,
        tls: tls.map(|t| rumqttd::TlsConfig::Rustls {
            capath: None,
            certpath: t.cert.display().to_string(),
            keypath: t.key.display().to_string(),
        }),
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: zedops_proto::MAX_PACKET_BYTES,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    if let Some(auth) = auth.cloned() {
        let probe = probe.clone();
        s.set_auth_handler(move |client_id: String, user: String, pass: String| {
            let ok = (client_id == probe.client_id && user == probe.client_id && pass == probe.password)
                || (auth.0)(&client_id, &user, &pass);
            if !ok {
                tracing::info!(%client_id, username = %user, "MQTT connection refused: bad credentials");
            }
            std::future::ready(ok)
        });
    }
    s
}

/// Starts the broker and returns once every listener accepts connections.
///
/// A listener asked for port 0 gets a free port; should another process take that port before
/// rumqttd binds it, the start is retried with new ports (a fixed port that is in use is an
/// error at once).
pub async fn start(config: BrokerConfig) -> Result<BrokerHandle, BrokerError> {
    // An address the caller chose (not port 0); the internal listener of a TLS broker is port 0.
    let chosen =
        |a: SocketAddr| a.port() != 0 && (a == config.v5_listen || Some(a) == config.v4_listen);
    let mut attempt = 1;
    loop {
        match start_once(config.clone()).await {
            Err(BrokerError::Bind { addr, source }) if !chosen(addr) && attempt < 4 => {
                tracing::debug!(%addr, error = %source, attempt, "free port taken before the bind; retrying");
                attempt += 1;
            }
            result => return result,
        }
    }
}

async fn start_once(config: BrokerConfig) -> Result<BrokerHandle, BrokerError> {
    let probe = Arc::new(Probe {
        client_id: format!("zedops-broker-probe-{:016x}", rand::random::<u64>()),
        password: format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        ),
    });
    let v5_addr = reserve(config.v5_listen)?;
    let v4_addr = config.v4_listen.map(reserve).transpose()?;

    let router = Router::new(
        0,
        RouterConfig {
            max_connections: config.max_connections,
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
        },
    );
    let router_tx = router.spawn();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .thread_name("zedops-broker")
        .enable_all()
        .build()
        .map_err(BrokerError::Runtime)?;

    if let Some(t) = &config.tls {
        for (what, path) in [("certificate", &t.cert), ("key", &t.key)] {
            if !path.is_file() {
                return Err(BrokerError::Tls(format!(
                    "the TLS {what} file {} does not exist",
                    path.display()
                )));
            }
        }
    }
    let internal_addr = match config.tls {
        Some(_) => Some(reserve(SocketAddr::from(([127, 0, 0, 1], 0)))?),
        None => None,
    };
    // (name, address, v5?, TLS?)
    let mut listeners = vec![("v5", v5_addr, true, config.tls.is_some())];
    if let Some(a) = v4_addr {
        listeners.push(("v4", a, false, config.tls.is_some()));
    }
    if let Some(a) = internal_addr {
        listeners.push(("internal", a, true, false));
    }
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::channel::<(SocketAddr, String)>(4);
    for (name, addr, v5, tls) in &listeners {
        let settings = server_settings(
            name,
            *addr,
            config.auth.as_ref(),
            &probe,
            tls.then_some(()).and(config.tls.as_ref()),
        );
        let failed = failed_tx.clone();
        let addr = *addr;
        if *v5 {
            let mut server = Server::new(settings, router_tx.clone(), V5);
            runtime.spawn(async move {
                if let Err(e) = server.start(LinkType::Remote).await {
                    let _ = failed.send((addr, e.to_string())).await;
                }
            });
        } else {
            let mut server = Server::new(settings, router_tx.clone(), V4);
            runtime.spawn(async move {
                if let Err(e) = server.start(LinkType::Remote).await {
                    let _ = failed.send((addr, e.to_string())).await;
                }
            });
        }
    }
    drop(failed_tx);

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("zedops-broker-owner".into())
        .spawn(move || {
            // The runtime lives on its own thread so that it can be dropped (closing every
            // connection) without blocking the caller's runtime.
            let _ = runtime.block_on(stop_rx);
            runtime.shutdown_timeout(Duration::from_secs(2));
        })
        .map_err(BrokerError::Runtime)?;

    let handle = BrokerHandle {
        v5_addr,
        v4_addr,
        internal_addr,
        tls: config.tls.is_some(),
        stop: Some(stop_tx),
        thread: Some(thread),
    };

    let waited = Duration::from_secs(5);
    for (_, addr, v5, tls) in listeners {
        // A TLS listener cannot be probed with a plain handshake: a bind error shows within
        // moments, so waiting briefly for one is enough.
        let ready = async {
            if tls {
                tokio::time::sleep(Duration::from_millis(300)).await;
            } else {
                wait_listening(addr, v5, &probe).await;
            }
        };
        tokio::select! {
            ok = tokio::time::timeout(waited, ready) => {
                if ok.is_err() {
                    return Err(BrokerError::NotListening { addr, waited });
                }
            }
            Some((addr, reason)) = failed_rx.recv() => {
                return Err(BrokerError::Bind {
                    addr,
                    source: std::io::Error::other(reason),
                });
            }
        }
    }
    info!(mqtt5 = %v5_addr, mqtt311 = ?v4_addr, "embedded MQTT broker listening");
    Ok(handle)
}

/// Waits until the listener completes an MQTT handshake (CONNECT → CONNACK), so rumqttd sees a
/// well-behaved client rather than an aborted connection.
async fn wait_listening(addr: SocketAddr, v5: bool, probe: &Probe) {
    loop {
        if handshake(connect_addr(addr), v5, probe).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn handshake(addr: SocketAddr, v5: bool, probe: &Probe) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let field = |v: &mut Vec<u8>, b: &[u8]| {
        v.extend_from_slice(&(b.len() as u16).to_be_bytes());
        v.extend_from_slice(b);
    };
    // Protocol name, level, flags (username + password + clean start), keep alive 10 s.
    let level = if v5 { 5 } else { 4 };
    let mut var = vec![0, 4, b'M', b'Q', b'T', b'T', level, 0xC2, 0, 10];
    if v5 {
        var.push(0); // no properties
    }
    field(&mut var, probe.client_id.as_bytes());
    field(&mut var, probe.client_id.as_bytes());
    field(&mut var, probe.password.as_bytes());
    let mut pkt = vec![0x10, var.len() as u8];
    pkt.extend_from_slice(&var);
    s.write_all(&pkt).await?;
    let read = async {
        // CONNACK: type, remaining length (one byte: CONNACKs are short), then the rest.
        let mut head = [0u8; 2];
        s.read_exact(&mut head).await?;
        if head[0] != 0x20 || head[1] > 127 {
            return Err(std::io::Error::other("not a CONNACK"));
        }
        let mut rest = vec![0u8; head[1] as usize];
        s.read_exact(&mut rest).await?;
        // Close without DISCONNECT: rumqttd logs a DISCONNECT followed by the close as an error
        // ("connection already gone"), a plain close at info level.
        s.shutdown().await?;
        // Wait for the broker to close its side, so neither side resets the connection.
        let mut sink = [0u8; 64];
        while s.read(&mut sink).await? > 0 {}
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(1), read)
        .await
        .map_err(|_| std::io::Error::other("no CONNACK"))?
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

/// Listener addresses by protocol, for logs and the start-up banner.
pub fn describe(handle: &BrokerHandle) -> HashMap<&'static str, SocketAddr> {
    let mut m = HashMap::from([("mqtt5", handle.v5_addr())]);
    if let Some(a) = handle.v4_addr() {
        m.insert("mqtt311", a);
    }
    m
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
