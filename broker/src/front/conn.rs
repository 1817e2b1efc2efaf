//! One client connection through the front end: its CONNECT (with a deadline), authentication,
//! the connection to rumqttd, then two relays — client → rumqttd with the identity's ACLs, and
//! rumqttd → client in the client's protocol version.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::v5::{self, ConnectReturnCode};
use rumqttc::v5::mqttbytes::QoS;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::routes::ClientRoutes;
use super::subs::{Decision, Subscriptions};
use super::upstream::UpstreamError;
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
    #[error("writing to the client took longer than {0:?}")]
    WriteStalled(Duration),
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
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

async fn run<S>(stream: S, peer: SocketAddr, shared: &Shared) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(stream);
    let max = shared.max_packet;
    let mut buf = BytesMut::with_capacity(4096);
    let first = tokio::time::timeout(CONNECT_DEADLINE, read_connect(&mut cr, &mut buf, max));
    let (version, packet) = first
        .await
        .map_err(|_| ConnError::NoConnect(CONNECT_DEADLINE))??;
    let Packet::Connect(connect, will, login) = packet else {
        return Err(ConnError::NotConnect);
    };
    let client_id = connect.client_id.clone();
    let Some(identity) = shared.authenticate(&client_id, login.as_ref()).await else {
        tracing::info!(%peer, client_id = ?client_id, username = ?login.map(|l| l.username).unwrap_or_default(), "MQTT connection refused: bad credentials");
        let refusal = wire::refusal(ConnectReturnCode::BadUserNamePassword);
        return send(&mut cw, version, &refusal, max).await;
    };
    if let Some(w) = &will {
        let topic = String::from_utf8_lossy(&w.topic);
        if !identity.may_publish(&topic) {
            tracing::info!(%peer, client_id = ?client_id, who = %identity.label(), will = ?topic, "MQTT connection refused: Last Will on a topic it may not publish to");
            let refusal = wire::refusal(ConnectReturnCode::NotAuthorized);
            return send(&mut cw, version, &refusal, max).await;
        }
    }
    let (up, leftover, ack) = match shared.upstream.connect(connect, will).await {
        Ok(r) => r,
        Err(e) => {
            let refusal = wire::refusal(ConnectReturnCode::ServerUnavailable);
            let _ = send(&mut cw, version, &refusal, max).await;
            return Err(e.into());
        }
    };
    let accepted = ack.code == ConnectReturnCode::Success;
    send(&mut cw, version, &Packet::ConnAck(ack), max).await?;
    if !accepted {
        return Ok(());
    }
    tracing::debug!(%peer, client_id = ?client_id, who = %identity.label(), ?version, "MQTT client connected");
    let (local_tx, local_rx) = mpsc::channel::<Packet>(LOCAL_QUEUE);
    let routes = ClientRoutes::new(shared.routes.clone(), local_tx.clone());
    let session = Session::new(identity, client_id, Subscriptions::new(routes));
    let (ur, uw) = up.into_split();
    let inbound = client_to_upstream(cr, buf, uw, version, &session, local_tx, max);
    let outbound = upstream_to_client(ur, leftover, cw, version, &session, local_rx, max);
    // When either side ends, the other is dropped: closing rumqttd's connection without a
    // DISCONNECT (the client vanished) makes rumqttd publish the client's Last Will.
    tokio::select! {
        r = inbound => r,
        r = outbound => r,
    }
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
}

impl Session {
    fn new(identity: Identity, client_id: String, subs: Subscriptions) -> Self {
        Self {
            identity,
            client_id,
            subs,
            denials: std::sync::atomic::AtomicU32::new(0),
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
    /// Forward, and answer the client here at once.
    ForwardAndAnswer(Packet, Box<Packet>),
    Drop,
}

async fn client_to_upstream<R, W>(
    mut cr: R,
    mut buf: BytesMut,
    mut uw: W,
    version: Version,
    session: &Session,
    local: mpsc::Sender<Packet>,
    max: usize,
) -> Result<(), ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut state = Inbound::default();
    let mut out = BytesMut::with_capacity(4096);
    let mut answers = Vec::new();
    loop {
        while let Some(p) = wire::read(version, &mut buf, max)? {
            match judge(p, session, &mut state) {
                Verdict::Forward(p) => {
                    wire::write(Version::V5, &p, &mut out, max)?;
                }
                Verdict::Answer(p) => answers.push(p),
                Verdict::ForwardAndAnswer(p, answer) => {
                    wire::write(Version::V5, &p, &mut out, max)?;
                    answers.push(*answer);
                }
                Verdict::Drop => {}
            }
        }
        if !out.is_empty() {
            write_all(&mut uw, &out).await?;
            out.clear();
        }
        for p in answers.drain(..) {
            if local.send(p).await.is_err() {
                return Ok(());
            }
        }
        buf.reserve(8192);
        if cr.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
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
        // The front end answers a PINGREQ itself, so a client's keepalive does not wait behind a
        // busy router (a fleet connecting at once); it still goes on to rumqttd, whose own
        // keepalive for the link needs it, and rumqttd's PINGRESP is dropped on the way back.
        Packet::PingReq(p) => {
            Verdict::ForwardAndAnswer(Packet::PingReq(p), Box::new(Packet::PingResp(v5::PingResp)))
        }
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

async fn upstream_to_client<R, W>(
    mut ur: R,
    mut buf: BytesMut,
    mut cw: W,
    version: Version,
    session: &Session,
    mut local: mpsc::Receiver<Packet>,
    max: usize,
) -> Result<(), ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut out = BytesMut::with_capacity(4096);
    loop {
        let mut closing = false;
        while let Some(p) = wire::read(Version::V5, &mut buf, max)? {
            closing |= matches!(p, Packet::Disconnect(_));
            if matches!(p, Packet::PingResp(_)) {
                continue; // answered by the front end already
            }
            let p = session.subs.complete(p);
            wire::write(version, &p, &mut out, max)?;
        }
        if !out.is_empty() {
            write_all(&mut cw, &out).await?;
            out.clear();
        }
        if closing {
            return Ok(());
        }
        buf.reserve(8192);
        tokio::select! {
            n = ur.read_buf(&mut buf) => {
                if n? == 0 {
                    return Ok(());
                }
            }
            Some(p) = local.recv() => {
                wire::write(version, &p, &mut out, max)?;
            }
        }
    }
}
