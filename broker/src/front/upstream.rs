//! The front end's side of rumqttd: a plain MQTT 5 listener on loopback that only the front end
//! may use (a per-process secret), the CONNECT → CONNACK handshake for each client, and a fresh
//! listener when the current one stops answering handshakes.
//!
//! Why a fresh listener: rumqttd 0.20 keeps per-listener state (its will-handler table) that one
//! failed handshake can poison for good (rumqtt issue #1062, fix PR #1066 unreleased). The front
//! end never lets a handshake fail on rumqttd's side (it always reads the CONNACK before it
//! closes, and caps connections below the router's limit), and should anything else break a
//! listener, new clients are sent to a new one within seconds.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wire::{self, Packet, Version};

/// How long rumqttd may take to answer a CONNECT (a fleet connecting at once keeps it busy for
/// a while; agents wait 30 s for a CONNACK too).
pub(crate) const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(30);
/// How long a new rumqttd listener may take to answer its first handshake.
const READY_WITHIN: Duration = Duration::from_secs(5);
/// At most one new listener this often.
const RESPAWN_EVERY: Duration = Duration::from_secs(2);

/// Starts a rumqttd server on an address; returns once it completes a handshake.
pub(crate) type SpawnFn = dyn Fn(SocketAddr) + Send + Sync;

#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("cannot reach the broker's router: {0}")]
    Io(#[from] std::io::Error),
    #[error("the broker's router did not answer the CONNECT within {0:?}")]
    Timeout(Duration),
    #[error("the broker's router closed the connection before its CONNACK")]
    Closed,
    #[error("{0}")]
    Wire(#[from] wire::WireError),
}

/// Where rumqttd listens for the front end, and how to start another listener.
pub(crate) struct Upstream {
    addr: Mutex<SocketAddr>,
    user: String,
    password: String,
    max_packet: usize,
    spawn: Box<SpawnFn>,
    last_respawn: Mutex<Option<Instant>>,
}

impl Upstream {
    pub(crate) fn new(
        addr: SocketAddr,
        user: String,
        password: String,
        max_packet: usize,
        spawn: Box<SpawnFn>,
    ) -> Self {
        Self {
            addr: Mutex::new(addr),
            user,
            password,
            max_packet,
            spawn,
            last_respawn: Mutex::new(None),
        }
    }

    fn current(&self) -> SocketAddr {
        *self.addr.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a connection to rumqttd for a client: the client's CONNECT (with the front end's
    /// credentials), then rumqttd's CONNACK. Bytes rumqttd sent after the CONNACK stay in the
    /// returned buffer.
    pub(crate) async fn connect(
        &self,
        connect: v5::Connect,
        will: Option<v5::LastWill>,
    ) -> Result<(TcpStream, BytesMut, v5::ConnAck), UpstreamError> {
        let addr = self.current();
        let r = tokio::time::timeout(HANDSHAKE_DEADLINE, self.handshake(addr, connect, will)).await;
        let r = r.unwrap_or(Err(UpstreamError::Timeout(HANDSHAKE_DEADLINE)));
        // A slow answer is load, not a broken listener; a connection closed before its CONNACK
        // is what a poisoned rumqttd listener does.
        if matches!(r, Err(UpstreamError::Closed)) {
            self.respawn(addr).await;
        }
        r
    }

    async fn handshake(
        &self,
        addr: SocketAddr,
        connect: v5::Connect,
        will: Option<v5::LastWill>,
    ) -> Result<(TcpStream, BytesMut, v5::ConnAck), UpstreamError> {
        let mut s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let login = v5::Login {
            username: self.user.clone(),
            password: self.password.clone(),
        };
        let mut out = BytesMut::new();
        wire::write(
            Version::V5,
            &Packet::Connect(connect, will, Some(login)),
            &mut out,
            self.max_packet,
        )?;
        s.write_all(&out).await?;
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            if let Some(p) = wire::read(Version::V5, &mut buf, self.max_packet)? {
                return match p {
                    Packet::ConnAck(ack) => Ok((s, buf, ack)),
                    _ => Err(UpstreamError::Closed),
                };
            }
            if s.read_buf(&mut buf).await? == 0 {
                return Err(UpstreamError::Closed);
            }
        }
    }

    /// Starts rumqttd's first listener on a free port of `ip`; retried with another port when
    /// another process takes the port between choosing and binding it.
    pub(crate) async fn start(&self, ip: std::net::IpAddr) -> Result<(), crate::BrokerError> {
        let mut tried = SocketAddr::new(ip, 0);
        for _ in 0..4 {
            match self.fresh_listener(ip).await {
                Ok(addr) => {
                    *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = addr;
                    return Ok(());
                }
                Err(addr) => tried = addr,
            }
        }
        Err(crate::BrokerError::NotListening {
            addr: tried,
            waited: READY_WITHIN,
        })
    }

    /// Starts a rumqttd listener on a free port of `ip`: its address once it answers a
    /// handshake (within [`READY_WITHIN`]), else the address that did not.
    async fn fresh_listener(&self, ip: std::net::IpAddr) -> Result<SocketAddr, SocketAddr> {
        let addr = SocketAddr::new(ip, crate::free_port(ip));
        (self.spawn)(addr);
        if self.wait_ready(addr).await {
            Ok(addr)
        } else {
            Err(addr)
        }
    }

    /// Whether rumqttd answers a handshake on `addr` (the front end's own identity).
    async fn probe(&self, addr: SocketAddr) -> bool {
        let connect = v5::Connect {
            keep_alive: 10,
            client_id: format!("zedops-front-probe-{:016x}", rand::random::<u64>()),
            clean_start: true,
            properties: None,
        };
        let hs = tokio::time::timeout(Duration::from_secs(1), self.handshake(addr, connect, None));
        match hs.await {
            Ok(Ok((mut s, _, ack))) => {
                // Close without DISCONNECT and wait for rumqttd to close its side, so neither
                // side resets the connection (rumqttd logs a plain close at info level).
                let _ = s.shutdown().await;
                let mut sink = [0u8; 64];
                let drain = async { while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {} };
                let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
                ack.code == v5::ConnectReturnCode::Success
            }
            _ => false,
        }
    }

    /// Waits until rumqttd answers on `addr`, up to [`READY_WITHIN`].
    async fn wait_ready(&self, addr: SocketAddr) -> bool {
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if self.probe(addr).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// Starts a new rumqttd listener when `failed` is still the current one and it does not
    /// answer a handshake, at most once per [`RESPAWN_EVERY`].
    async fn respawn(&self, failed: SocketAddr) {
        {
            let mut last = self.last_respawn.lock().unwrap_or_else(|e| e.into_inner());
            if self.current() != failed || last.is_some_and(|t| t.elapsed() < RESPAWN_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        if self.probe(failed).await {
            return;
        }
        if let Ok(next) = self.fresh_listener(failed.ip()).await {
            tracing::warn!(%failed, %next, "the broker's router stopped answering on its listener; new clients use a fresh one");
            *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = next;
        }
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.current())
            .finish()
    }
}
