//! The front end's way into rumqttd's router: one in-process link per client
//! (`rumqttd::local`), no socket. MQTT 5 bytes are the common language: the front end encodes
//! what a client sent with rumqttc's codec, rumqttd's own decoder turns it into the router's
//! packets, and what the router sends back is encoded with rumqttd's encoder for the front end to
//! read. A client costs the broker's process one descriptor (its socket), not three.
//!
//! A link has no keep-alive and no Last Will at the router: the front end keeps the client's
//! keep-alive ([`super::conn`]) and publishes its will ([`super::wills`]).

use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5;
use rumqttd::local::{LinkBuilder, LinkError, LinkRx, LinkTx};
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{Packet as RouterPacket, Protocol};
use rumqttd::Notification;

use super::wire::{self, Packet, Version, WireError};

/// How long the router may take to take a new connection (a fleet connecting at once keeps it
/// busy for a while; agents wait 30 s for a CONNACK too).
pub(crate) const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(30);

/// How long a client's packets may wait for room in the router's channel before the client is
/// disconnected (the router is stuck or hopelessly behind).
pub(crate) const ROOM_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkIoError {
    #[error("the broker's router did not take the connection within {0:?}")]
    Timeout(Duration),
    #[error("the broker's router took no packet for {0:?}")]
    Busy(Duration),
    #[error("the broker's router refused the connection: {0}")]
    Refused(String),
    #[error("the broker's router closed the connection")]
    Closed,
    #[error("the broker's router cannot read a packet: {0}")]
    Decode(String),
    #[error("{0}")]
    Wire(#[from] WireError),
}

impl From<LinkError> for LinkIoError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Recv(_) | LinkError::Send(_) | LinkError::TrySend(_) => Self::Closed,
            e => Self::Refused(e.to_string()),
        }
    }
}

/// Opens a link: `(client_id, clean_start)`; blocks until the router answers.
type OpenFn =
    dyn Fn(&str, bool) -> Result<(LinkTx, LinkRx, Notification), LinkIoError> + Send + Sync;

/// Is the router's event channel full (a send would block the thread)?
type FullFn = dyn Fn() -> bool + Send + Sync;

/// rumqttd's router, running on a thread of its own, and the way to open links to it.
#[derive(Clone)]
pub(crate) struct Router {
    open: Arc<OpenFn>,
    full: Arc<FullFn>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Router")
    }
}

impl Router {
    /// Starts `router` on its thread.
    pub(crate) fn spawn(router: rumqttd::Router) -> Self {
        let tx = router.spawn();
        let probe = tx.clone();
        let open = move |client_id: &str, clean: bool| {
            LinkBuilder::new(client_id, tx.clone())
                .clean_session(clean)
                .dynamic_filters(true)
                .build()
                .map_err(LinkIoError::from)
        };
        Self {
            open: Arc::new(open),
            full: Arc::new(move || probe.is_full()),
        }
    }

    /// A new link for `client_id`, its two halves, and the router's CONNACK. The router takes
    /// over the session of an earlier link with the same client id (that link is closed).
    pub(crate) async fn open(
        &self,
        client_id: &str,
        clean: bool,
    ) -> Result<(LinkSender, LinkReceiver, v5::ConnAck), LinkIoError> {
        // The builder waits for the router on a blocking channel: not on the front end's thread.
        let open = self.open.clone();
        let id = client_id.to_owned();
        let (done, built) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            if let Err(Ok((mut tx, ..))) = done.send(open(&id, clean)) {
                // Nobody waits for this link any more: close it at the router at once.
                let _ = now(tx.send(disconnect_packet()));
            }
        });
        let built = match tokio::time::timeout(HANDSHAKE_DEADLINE, built).await {
            Ok(Ok(b)) => b?,
            Ok(Err(_)) => return Err(LinkIoError::Closed),
            Err(_) => return Err(LinkIoError::Timeout(HANDSHAKE_DEADLINE)),
        };
        let (tx, rx, ack) = built;
        let mut bytes = BytesMut::new();
        let wake = encode(ack, &mut bytes)?;
        match wire::read(Version::V5, &mut bytes, zedops_proto::MAX_PACKET_BYTES)? {
            Some(Packet::ConnAck(ack)) => Ok((
                LinkSender {
                    tx,
                    open: true,
                    full: self.full.clone(),
                },
                LinkReceiver { rx, wake },
                ack,
            )),
            _ => Err(LinkIoError::Refused("no CONNACK".into())),
        }
    }
}

fn disconnect_packet() -> RouterPacket {
    RouterPacket::Disconnect(
        rumqttd::protocol::Disconnect {
            reason_code: rumqttd::protocol::DisconnectReasonCode::NormalDisconnection,
        },
        None,
    )
}

/// The client → router half.
pub(crate) struct LinkSender {
    tx: LinkTx,
    /// False once the router has forgotten this link (after a DISCONNECT either way): nothing may
    /// be sent with its id any more, which the router may already have given to another link.
    open: bool,
    full: Arc<FullFn>,
}

impl LinkSender {
    /// Hands the MQTT 5 packets in `bytes` (whole packets, as the front end encoded them) to the
    /// router, consuming them. A DISCONNECT among them ends the link.
    pub(crate) async fn send(&mut self, bytes: &mut BytesMut) -> Result<(), LinkIoError> {
        if !self.open {
            bytes.clear();
            return Err(LinkIoError::Closed);
        }
        let mut packets = Vec::new();
        while !bytes.is_empty() {
            let p = decode(bytes)?;
            self.open &= !matches!(p, RouterPacket::Disconnect(..));
            packets.push(p);
        }
        self.hand_over(packets).await
    }

    /// Ends the link at the router (the client vanished); nothing more is sent on it.
    pub(crate) async fn close(&mut self) {
        if std::mem::replace(&mut self.open, false) {
            let _ = self.hand_over(vec![disconnect_packet()]).await;
        }
    }

    /// Appends `packets` to the link's buffer at the router and notifies the router, at most
    /// once, and not at all while a notification is pending. The router takes the whole buffer
    /// on each notification and this link is the buffer's only writer, so a buffer that is not
    /// empty has a notification on its way, which carries these packets too: one event in the
    /// router's channel per link at most, and none after the DISCONNECT that made the router
    /// forget the link (rumqttd logs an ERROR "no-connection id … is already gone" for that).
    ///
    /// rumqttd 0.20's `LinkTx::send` is async in name only: it notifies with a blocking send on
    /// the router's bounded channel (1000 events), and its non-blocking notify is crate-private.
    /// A full channel would block the front end's only thread, every client with it; so this
    /// first waits for room without blocking (the send can then block only for the moment
    /// another client's notification takes the last slot).
    async fn hand_over(&mut self, mut packets: Vec<RouterPacket>) -> Result<(), LinkIoError> {
        let Some(last) = packets.pop() else {
            return Ok(());
        };
        {
            let mut buffer = self.tx.buffer();
            if !buffer.is_empty() {
                buffer.extend(packets);
                buffer.push_back(last);
                return Ok(());
            }
        }
        // Nothing is pushed before there is room: a client given up on here leaves the
        // buffer empty, as the rule above needs.
        room(&*self.full, ROOM_DEADLINE).await?;
        self.tx.buffer().extend(packets);
        self.tx.send(last).await?;
        Ok(())
    }
}

/// The router → client half.
pub(crate) struct LinkReceiver {
    rx: LinkRx,
    /// The router paused this link (its outgoing buffer was full); it waits to be told once what
    /// it sent has been written.
    wake: bool,
}

impl LinkReceiver {
    /// Waits for what the router sends and appends it to `out` as MQTT 5 bytes: at least one
    /// notification, then every one already there. `Err(Closed)`: the router closed the link.
    pub(crate) async fn recv(&mut self, out: &mut BytesMut) -> Result<(), LinkIoError> {
        // Cleared only once the wake is sent: this future is dropped whenever the connection's
        // own answers are ready first (`select!`), and a wake lost there would pause the link
        // for good. The wake waits for room in the router's channel (asynchronously, unlike a
        // send), at most ROOM_DEADLINE.
        if self.wake {
            match tokio::time::timeout(ROOM_DEADLINE, self.rx.wake()).await {
                Ok(woken) => woken?,
                Err(_) => return Err(LinkIoError::Busy(ROOM_DEADLINE)),
            }
            self.wake = false;
        }
        let first = self.rx.next().await?;
        self.push(first, out)?;
        while let Some(next) = now(self.rx.next()) {
            self.push(next?, out)?;
        }
        Ok(())
    }

    fn push(&mut self, n: Option<Notification>, out: &mut BytesMut) -> Result<(), LinkIoError> {
        if let Some(n) = n {
            self.wake |= encode(n, out)?;
        }
        Ok(())
    }
}

/// Appends a notification's packet to `out`; true when it asks the link to wake the router.
fn encode(n: Notification, out: &mut BytesMut) -> Result<bool, LinkIoError> {
    let packet: Option<RouterPacket> = n.into();
    let Some(packet) = packet else {
        return Ok(true);
    };
    let written = wire::guarded(|| V5.write(packet, out))?;
    written.map_err(|e| LinkIoError::Decode(format!("{e:?}")))?;
    Ok(false)
}

/// Reads one whole packet off the front of `bytes` with rumqttd's decoder.
fn decode(bytes: &mut BytesMut) -> Result<RouterPacket, LinkIoError> {
    let max = zedops_proto::MAX_PACKET_BYTES;
    let read = wire::guarded(|| V5.read_mut(bytes, max))?;
    read.map_err(|e| {
        bytes.clear();
        LinkIoError::Decode(format!("{e:?}"))
    })
}

/// Returns once `full()` is false, polling without blocking the thread: a few yields to the
/// runtime, then every millisecond; `Err(Busy)` if it is still full after `deadline`.
async fn room(full: &FullFn, deadline: Duration) -> Result<(), LinkIoError> {
    let started = tokio::time::Instant::now();
    let mut polls = 0u32;
    while full() {
        if started.elapsed() >= deadline {
            return Err(LinkIoError::Busy(deadline));
        }
        polls += 1;
        if polls <= 16 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(())
}

/// The output of `f` if it is ready at once; `None` (and `f` dropped) if it would wait.
fn now<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_full_router_is_waited_for_without_blocking_then_given_up() {
        let t = tokio::time::Instant::now();
        let waited = room(&|| true, Duration::from_secs(30)).await;
        assert!(matches!(waited, Err(LinkIoError::Busy(d)) if d == Duration::from_secs(30)));
        assert!(t.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn room_is_taken_as_soon_as_the_router_has_some() {
        let checks = Arc::new(AtomicU32::new(0));
        let seen = checks.clone();
        // Full for the first 40 looks (past the yields, into the sleeps), then room.
        let full = move || seen.fetch_add(1, Ordering::Relaxed) < 40;
        let other = tokio::spawn(async { 7 });
        assert!(room(&full, Duration::from_secs(30)).await.is_ok());
        assert_eq!(checks.load(Ordering::Relaxed), 41);
        // The thread was not blocked meanwhile: another task ran to completion.
        assert!(other.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_router_costs_no_wait() {
        let t = tokio::time::Instant::now();
        assert!(room(&|| false, Duration::from_secs(30)).await.is_ok());
        assert_eq!(t.elapsed(), Duration::ZERO);
    }
}
