//! One client connection through the front end: its CONNECT (with a deadline), authentication,
//! the client's link to rumqttd's router ([`super::link`]), then two relays — client → router
//! with the identity's ACLs and the client's keep-alive, and router → client in the client's
//! protocol version — and at the end its Last Will ([`super::wills`]) when it went without a
//! DISCONNECT.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::v5::{self, ConnectReturnCode};
use rumqttc::v5::mqttbytes::QoS;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::link::{LinkIoError, LinkReceiver, LinkSender};
use super::routes::ClientRoutes;
use super::sessions::Claim;
use super::subs::{Decision, Subscriptions};
use super::wire::{self, Packet, Version, WireError};
use super::Shared;
use crate::acl::Identity;

/// How long a client has to send its CONNECT after the connection (and TLS) is up.
pub(crate) const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// How long a write to a client may block (a client that stops reading is dropped).
const WRITE_DEADLINE: Duration = Duration::from_secs(30);
/// Denied publishes and subscriptions logged at `warn` per connection; later ones at `debug`.
const LOGGED_DENIALS: u32 = 3;
/// Packets the front end itself sends a client (answers, commands) waiting to be written.
const LOCAL_QUEUE: usize = 64;
/// The keep-alive given a client that asks for none (0): MQTT 5 clients are told so in the
/// CONNACK (Server Keep Alive); a silent MQTT 3.1.1 client is closed after 1.5 times it as well.
pub(crate) const DEFAULT_KEEP_ALIVE_S: u16 = 60;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("no CONNECT within {0:?}")]
    NoConnect(Duration),
    #[error("the first packet was not a CONNECT")]
    NotConnect,
    #[error("a second CONNECT on one connection")]
    SecondConnect,
    #[error("nothing from the client within 1.5 times its keep-alive ({0:?})")]
    KeepAlive(Duration),
    #[error("writing to the client took longer than {0:?}")]
    WriteStalled(Duration),
    #[error("{0}")]
    Link(#[from] LinkIoError),
}

/// Serves one client until either side closes.
pub(crate) async fn serve<S>(stream: S, peer: SocketAddr, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(e) = run(stream, peer, &shared).await {
        match e {
            ConnError::Io(_) => tracing::debug!(%peer, error = %e, "MQTT client connection ended"),
            e => tracing::info!(%peer, error = %e, "MQTT client connection closed"),
        }
    }
}

/// A client's CONNECT, once it may go on.
struct Admitted {
    version: Version,
    connect: v5::Connect,
    will: Option<v5::LastWill>,
    identity: Identity,
    /// The client id the broker gave a client that sent none.
    assigned: Option<String>,
}

async fn run<S>(stream: S, peer: SocketAddr, shared: &Shared) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(4096);
    let Some(admitted) = admit(&mut cr, &mut cw, &mut buf, peer, shared).await? else {
        return Ok(());
    };
    let client_id = admitted.assigned.clone();
    let client_id = client_id.unwrap_or_else(|| admitted.connect.client_id.clone());
    let claim = shared.sessions.claim(&client_id);
    let r = connected(cr, buf, &mut cw, admitted, &client_id, &claim, shared).await;
    shared.sessions.release(&client_id, &claim);
    r
}

/// Reads, authenticates and checks the CONNECT; `None` when it was refused (the refusal sent).
async fn admit<R, W>(
    cr: &mut R,
    cw: &mut W,
    buf: &mut BytesMut,
    peer: SocketAddr,
    shared: &Shared,
) -> Result<Option<Admitted>, ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let max = shared.max_packet;
    let first = tokio::time::timeout(CONNECT_DEADLINE, read_connect(cr, buf, max));
    let (version, packet) = first
        .await
        .map_err(|_| ConnError::NoConnect(CONNECT_DEADLINE))??;
    let Packet::Connect(connect, will, login) = packet else {
        return Err(ConnError::NotConnect);
    };
    let client_id = connect.client_id.clone();
    let refuse = |code| async move {
        send(cw, version, &wire::refusal(code), max).await?;
        Ok(None)
    };
    let Some(identity) = shared.authenticate(&client_id, login.as_ref()).await else {
        tracing::info!(%peer, client_id = ?client_id, username = ?login.map(|l| l.username).unwrap_or_default(), "MQTT connection refused: bad credentials");
        return refuse(ConnectReturnCode::BadUserNamePassword).await;
    };
    if let Some(w) = &will {
        let topic = String::from_utf8_lossy(&w.topic);
        if !identity.may_publish(&topic) {
            tracing::info!(%peer, client_id = ?client_id, who = %identity.label(), will = ?topic, "MQTT connection refused: Last Will on a topic it may not publish to");
            return refuse(ConnectReturnCode::NotAuthorized).await;
        }
    }
    // The router refuses these characters in a client id (and an empty id needs a session that
    // ends with the connection): refused here with a CONNACK, not by a closed connection.
    let bad_id = "+#/$".chars().any(|c| client_id.contains(c));
    if bad_id || (client_id.is_empty() && !connect.clean_start) {
        tracing::info!(%peer, client_id = ?client_id, "MQTT connection refused: client id not valid");
        return refuse(ConnectReturnCode::ClientIdentifierNotValid).await;
    }
    let assigned = client_id
        .is_empty()
        .then(|| format!("zedops-auto-{:016x}", rand::random::<u64>()));
    Ok(Some(Admitted {
        version,
        connect,
        will,
        identity,
        assigned,
    }))
}

/// Opens the client's link, relays both ways until one side ends, then closes the link and
/// publishes the will as the way it ended asks.
async fn connected<R, W>(
    cr: R,
    buf: BytesMut,
    cw: &mut W,
    a: Admitted,
    client_id: &str,
    claim: &Claim,
    shared: &Shared,
) -> Result<(), ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (version, max) = (a.version, shared.max_packet);
    let (mut sender, receiver, ack) =
        match shared.router.open(client_id, a.connect.clean_start).await {
            Ok(l) => l,
            Err(e) => {
                let refusal = wire::refusal(ConnectReturnCode::ServerUnavailable);
                let _ = send(cw, version, &refusal, max).await;
                return Err(e.into());
            }
        };
    let keep_alive = match a.connect.keep_alive {
        0 => DEFAULT_KEEP_ALIVE_S,
        k => k,
    };
    let ack = connack(
        ack,
        a.assigned,
        (a.connect.keep_alive == 0).then_some(keep_alive),
    );
    let ended = match send(cw, version, &Packet::ConnAck(ack), max).await {
        Err(e) => Ended::Lost(Some(e)),
        Ok(()) => {
            tracing::debug!(client_id = ?client_id, who = %a.identity.label(), ?version, "MQTT client connected");
            let local = mpsc::channel::<Packet>(LOCAL_QUEUE);
            let routes = ClientRoutes::new(shared.routes.clone(), local.0.clone());
            let subs = Subscriptions::new(routes);
            let session = Session::new(a.identity, client_id.to_owned(), subs, max);
            let limit = Duration::from_millis(u64::from(keep_alive) * 1500);
            let streams = (cr, buf, &mut *cw);
            let link = (&mut sender, receiver);
            both_ways(streams, link, local, version, &session, limit).await
        }
    };
    finish(ended, sender, cw, version, a.will, claim, shared, client_id).await
}

/// Relays client → router and router → client until either ends.
async fn both_ways<R, W>(
    (cr, buf, cw): (R, BytesMut, &mut W),
    (sender, receiver): (&mut LinkSender, LinkReceiver),
    (local_tx, local_rx): (mpsc::Sender<Packet>, mpsc::Receiver<Packet>),
    version: Version,
    session: &Session,
    keep_alive: Duration,
) -> Ended
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let inbound = client_to_router(cr, buf, sender, version, session, local_tx, keep_alive);
    let outbound = router_to_client(receiver, cw, version, session, local_rx);
    tokio::select! {
        r = inbound => r,
        r = outbound => r,
    }
}

/// The router's CONNACK, with what the front end adds: the client id it assigned, the
/// keep-alive it gave a client that asked for none.
fn connack(mut ack: v5::ConnAck, assigned: Option<String>, keep_alive: Option<u16>) -> v5::ConnAck {
    if assigned.is_some() || keep_alive.is_some() {
        let props = ack.properties.get_or_insert_with(no_properties);
        props.assigned_client_identifier = assigned;
        props.server_keep_alive = keep_alive;
    }
    ack
}

fn no_properties() -> v5::ConnAckProperties {
    v5::ConnAckProperties {
        session_expiry_interval: None,
        receive_max: None,
        max_qos: None,
        retain_available: None,
        max_packet_size: None,
        assigned_client_identifier: None,
        topic_alias_max: None,
        reason_string: None,
        user_properties: Vec::new(),
        wildcard_subscription_available: None,
        subscription_identifiers_available: None,
        shared_subscription_available: None,
        server_keep_alive: None,
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    }
}

/// How a connection ended.
enum Ended {
    /// The client sent a DISCONNECT, which the router has too; `will`: it asked for its will.
    Disconnected { will: bool },
    /// The client went without one (closed, silent past its keep-alive, stopped reading, sent
    /// what it may not).
    Lost(Option<ConnError>),
    /// The router closed the link: a newer connection took the session over, or it refused
    /// what the client sent.
    Closed,
}

#[allow(clippy::too_many_arguments)]
async fn finish<W: AsyncWrite + Unpin>(
    ended: Ended,
    mut sender: LinkSender,
    cw: &mut W,
    version: Version,
    will: Option<v5::LastWill>,
    claim: &Claim,
    shared: &Shared,
    client_id: &str,
) -> Result<(), ConnError> {
    let taken_over = claim.taken_over();
    let (publish_will, error) = match ended {
        Ended::Disconnected { will } => (will, None),
        Ended::Lost(e) => {
            // After a takeover the router closes this link itself, and its id may be the
            // newcomer's already: nothing more is sent on it.
            if !taken_over {
                sender.close().await;
            }
            (!taken_over, e)
        }
        Ended::Closed => {
            if taken_over && version == Version::V5 {
                let bye = v5::Disconnect::new(v5::DisconnectReasonCode::SessionTakenOver);
                let _ = send(cw, version, &Packet::Disconnect(bye), shared.max_packet).await;
            }
            (!taken_over, None)
        }
    };
    if let (true, Some(will)) = (publish_will, will) {
        shared.wills.publish(client_id, will).await;
    }
    error.map_or(Ok(()), Err)
}

async fn read_connect<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<(Version, Packet), ConnError> {
    loop {
        if let Some(found) = wire::read_connect(buf, max)? {
            return Ok(found);
        }
        buf.reserve(4096);
        if r.read_buf(buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
}

/// Writes a packet to a client in its version, with a deadline.
async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    version: Version,
    packet: &Packet,
    max: usize,
) -> Result<(), ConnError> {
    let mut out = BytesMut::new();
    wire::write(version, packet, &mut out, max)?;
    write_all(w, &out).await
}

async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, out: &[u8]) -> Result<(), ConnError> {
    tokio::time::timeout(WRITE_DEADLINE, w.write_all(out))
        .await
        .map_err(|_| ConnError::WriteStalled(WRITE_DEADLINE))??;
    Ok(())
}

/// What the two relays of one connection share.
struct Session {
    identity: Identity,
    client_id: String,
    subs: Subscriptions,
    denials: std::sync::atomic::AtomicU32,
    /// The largest packet either way ([`Shared::max_packet`]).
    max_packet: usize,
}

impl Session {
    fn new(identity: Identity, client_id: String, subs: Subscriptions, max_packet: usize) -> Self {
        Self {
            identity,
            client_id,
            subs,
            denials: std::sync::atomic::AtomicU32::new(0),
            max_packet,
        }
    }

    fn denied(&self, what: &str, topic: &str) {
        let n = self
            .denials
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (who, id) = (self.identity.label(), &self.client_id);
        if n < LOGGED_DENIALS {
            tracing::warn!(client_id = ?id, %who, topic = ?topic, "MQTT {what} refused: not allowed for this identity");
        } else {
            tracing::debug!(client_id = ?id, %who, topic = ?topic, "MQTT {what} refused");
        }
    }
}

/// State of the client → rumqttd direction alone.
#[derive(Default)]
struct Inbound {
    /// Topic aliases the client set (MQTT 5), so aliased publishes are checked too.
    aliases: HashMap<u16, Bytes>,
    /// QoS 2 publishes refused here, whose PUBREL is answered here too (a 3.1.1 client sends
    /// one even after a refusal it cannot see).
    refused_qos2: HashSet<u16>,
}

/// What to do with one packet from the client.
enum Verdict {
    Forward(Packet),
    Answer(Packet),
    /// End the connection: the client broke the protocol.
    Close(ConnError),
    Drop,
}

async fn client_to_router<R>(
    mut cr: R,
    mut buf: BytesMut,
    link: &mut LinkSender,
    version: Version,
    session: &Session,
    local: mpsc::Sender<Packet>,
    keep_alive: Duration,
) -> Ended
where
    R: AsyncRead + Unpin,
{
    let mut state = Inbound::default();
    let mut out = BytesMut::with_capacity(4096);
    let mut answers = Vec::new();
    let max = session.max_packet;
    loop {
        let mut disconnected = None;
        loop {
            let p = match wire::read(version, &mut buf, max) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => return Ended::Lost(Some(e.into())),
            };
            if let Packet::Disconnect(d) = &p {
                let will = d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage;
                disconnected = Some(will);
            }
            let forward = match judge(p, session, &mut state) {
                Verdict::Forward(p) => Some(p),
                Verdict::Answer(p) => {
                    answers.push(p);
                    None
                }
                Verdict::Close(e) => return Ended::Lost(Some(e)),
                Verdict::Drop => None,
            };
            if let Some(p) = forward {
                if let Err(e) = wire::write(Version::V5, &p, &mut out, max) {
                    return Ended::Lost(Some(e.into()));
                }
            }
            if disconnected.is_some() {
                break;
            }
        }
        if !out.is_empty() {
            if let Err(e) = link.send(&mut out).await {
                return router_gone(e);
            }
        }
        if let Some(will) = disconnected {
            return Ended::Disconnected { will };
        }
        for p in answers.drain(..) {
            if local.send(p).await.is_err() {
                return Ended::Lost(None);
            }
        }
        buf.reserve(8192);
        match tokio::time::timeout(keep_alive, cr.read_buf(&mut buf)).await {
            Err(_) => return Ended::Lost(Some(ConnError::KeepAlive(keep_alive))),
            Ok(Err(e)) => return Ended::Lost(Some(e.into())),
            Ok(Ok(0)) => return Ended::Lost(None),
            Ok(Ok(_)) => {}
        }
    }
}

/// The link failed: closed by the router, or a packet the router cannot read (the client's
/// doing; the link is closed for it).
fn router_gone(e: LinkIoError) -> Ended {
    match e {
        LinkIoError::Closed => Ended::Closed,
        e => Ended::Lost(Some(e.into())),
    }
}

fn judge(p: Packet, session: &Session, state: &mut Inbound) -> Verdict {
    match p {
        Packet::Publish(mut publish) => {
            let alias = publish.properties.as_ref().and_then(|p| p.topic_alias);
            if let Some(a) = alias {
                if publish.topic.is_empty() {
                    publish.topic = state.aliases.get(&a).cloned().unwrap_or_default();
                } else if state.aliases.len() < usize::from(u16::MAX) {
                    state.aliases.insert(a, publish.topic.clone());
                }
                // rumqttd is sent the full topic: its alias table never has to agree with ours.
                if let Some(props) = publish.properties.as_mut() {
                    props.topic_alias = None;
                }
            }
            let topic = String::from_utf8_lossy(&publish.topic);
            if !topic.is_empty() && session.identity.may_publish(&topic) {
                return Verdict::Forward(Packet::Publish(publish));
            }
            session.denied("publish", &topic);
            refuse_publish(&publish, state)
        }
        Packet::PubRel(rel) if state.refused_qos2.remove(&rel.pkid) => {
            Verdict::Answer(Packet::PubComp(v5::PubComp::new(rel.pkid, None)))
        }
        Packet::Subscribe(sub) => {
            let denied = |f: &str| session.denied("subscription", f);
            decided(session.subs.subscribe(sub, &session.identity, denied))
        }
        Packet::Unsubscribe(unsub) => decided(session.subs.unsubscribe(unsub)),
        // The front end keeps the client's keep-alive (the router's links have none) and
        // answers a PINGREQ itself, so it never waits behind a busy router.
        Packet::PingReq(_) => Verdict::Answer(Packet::PingResp(v5::PingResp)),
        Packet::Connect(..) => Verdict::Close(ConnError::SecondConnect),
        Packet::Auth(_) => Verdict::Drop,
        p => Verdict::Forward(p),
    }
}

fn refuse_publish(publish: &v5::Publish, state: &mut Inbound) -> Verdict {
    match publish.qos {
        QoS::AtMostOnce => Verdict::Drop,
        QoS::AtLeastOnce => {
            let mut ack = v5::PubAck::new(publish.pkid, None);
            ack.reason = v5::PubAckReason::NotAuthorized;
            Verdict::Answer(Packet::PubAck(ack))
        }
        QoS::ExactlyOnce => {
            let mut rec = v5::PubRec::new(publish.pkid, None);
            rec.reason = v5::PubRecReason::NotAuthorized;
            state.refused_qos2.insert(publish.pkid);
            Verdict::Answer(Packet::PubRec(rec))
        }
    }
}

fn decided(d: Decision) -> Verdict {
    match d {
        Decision::Forward(p) => Verdict::Forward(p),
        Decision::Answer(p) => Verdict::Answer(p),
    }
}

async fn router_to_client<W>(
    mut link: LinkReceiver,
    cw: &mut W,
    version: Version,
    session: &Session,
    mut local: mpsc::Receiver<Packet>,
) -> Ended
where
    W: AsyncWrite + Unpin,
{
    let max = session.max_packet;
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = BytesMut::with_capacity(4096);
    loop {
        let mut closed = false;
        tokio::select! {
            r = link.recv(&mut buf) => match r {
                Ok(()) => {}
                Err(LinkIoError::Closed) => closed = true,
                Err(e) => return Ended::Lost(Some(e.into())),
            },
            Some(p) = local.recv() => {
                if let Err(e) = wire::write(version, &p, &mut out, max) {
                    return Ended::Lost(Some(e.into()));
                }
            }
        }
        match relay(&mut buf, &mut out, version, session) {
            Ok(disconnect) => closed |= disconnect,
            Err(e) => return Ended::Lost(Some(e)),
        }
        if !out.is_empty() {
            if let Err(e) = write_all(cw, &out).await {
                return Ended::Lost(Some(e));
            }
            out.clear();
        }
        if closed {
            return Ended::Closed;
        }
    }
}

/// Turns what the router sent (MQTT 5 bytes in `buf`) into the client's packets in `out`;
/// true when the router sent a DISCONNECT (it has closed the link).
fn relay(
    buf: &mut BytesMut,
    out: &mut BytesMut,
    version: Version,
    session: &Session,
) -> Result<bool, ConnError> {
    let max = session.max_packet;
    let mut disconnect = false;
    while let Some(p) = wire::read(Version::V5, buf, max)? {
        disconnect |= matches!(p, Packet::Disconnect(_));
        let p = session.subs.complete(p);
        wire::write(version, &p, out, max)?;
    }
    Ok(disconnect)
}
