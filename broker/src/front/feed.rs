//! The front end's own connection to rumqttd: one subscription per command shape, with the agent
//! level a wildcard ([`super::routes::upstream_filters`]), whose messages go to the connections
//! that subscribed to them ([`super::routes::Routes::deliver`]). It reconnects when rumqttd
//! closes it (a fresh listener after [`super::upstream`] replaced one), with backoff.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5::{self, Packet, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::routes::{self, Routes};
use super::upstream::{Upstream, UpstreamError};
use super::wire::{self, Version, WireError};

/// The keep-alive the feed asks rumqttd for; a PINGREQ goes every half of it.
const KEEP_ALIVE_S: u16 = 30;
/// How long rumqttd may take to acknowledge the subscription.
const SUBACK_DEADLINE: Duration = Duration::from_secs(10);
/// Shortest wait before a new connection attempt.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
enum FeedError {
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("the broker's router refused the connection: {0:?}")]
    Refused(v5::ConnectReturnCode),
    #[error("the broker's router refused the command subscription {0}: {1:?}")]
    NotSubscribed(String, SubscribeReasonCode),
    #[error("the broker's router did not acknowledge the command subscriptions within {0:?}")]
    NoSubAck(Duration),
    #[error("the broker's router closed the command feed")]
    Closed,
}

/// Keeps the command feed up until the runtime stops; `ready` fires once its first
/// subscription is acknowledged.
pub(crate) async fn run(upstream: Arc<Upstream>, routes: Arc<Routes>, ready: oneshot::Sender<()>) {
    let mut ready = Some(ready);
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut subscribed = false;
        match link(&upstream, &routes, &mut ready, &mut subscribed).await {
            Err(FeedError::Closed) => tracing::info!("the command feed was closed; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "the command feed failed; reconnecting"),
            Ok(()) => {}
        }
        if subscribed {
            backoff = MIN_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn link(
    upstream: &Upstream,
    routes: &Routes,
    ready: &mut Option<oneshot::Sender<()>>,
    subscribed: &mut bool,
) -> Result<(), FeedError> {
    let connect = v5::Connect {
        keep_alive: KEEP_ALIVE_S,
        client_id: format!("zedops-front-commands-{:016x}", rand::random::<u64>()),
        clean_start: true,
        properties: None,
    };
    let (mut s, mut buf, ack) = upstream.connect(connect, None).await?;
    if ack.code != v5::ConnectReturnCode::Success {
        return Err(FeedError::Refused(ack.code));
    }
    let max = zedops_proto::MAX_PACKET_BYTES;
    let filters: Vec<v5::Filter> = routes::upstream_filters()
        .into_iter()
        .map(|(_, f)| v5::Filter::new(f, QoS::AtMostOnce))
        .collect();
    let names: Vec<String> = filters.iter().map(|f| f.path.clone()).collect();
    let mut out = BytesMut::new();
    let subscribe = Packet::Subscribe(v5::Subscribe {
        pkid: 1,
        filters,
        properties: None,
    });
    wire::write(Version::V5, &subscribe, &mut out, max)?;
    s.write_all(&out).await?;
    let acked = tokio::time::timeout(SUBACK_DEADLINE, suback(&mut s, &mut buf, &names));
    acked
        .await
        .map_err(|_| FeedError::NoSubAck(SUBACK_DEADLINE))??;
    *subscribed = true;
    if let Some(r) = ready.take() {
        let _ = r.send(());
    }
    relay(s, buf, routes).await
}

/// Reads up to the SUBACK; every filter must be granted.
async fn suback(s: &mut TcpStream, buf: &mut BytesMut, names: &[String]) -> Result<(), FeedError> {
    loop {
        while let Some(p) = wire::read(Version::V5, buf, zedops_proto::MAX_PACKET_BYTES)? {
            let Packet::SubAck(ack) = p else { continue };
            for (name, code) in names.iter().zip(&ack.return_codes) {
                if !matches!(code, SubscribeReasonCode::Success(_)) {
                    return Err(FeedError::NotSubscribed(name.clone(), *code));
                }
            }
            return Ok(());
        }
        buf.reserve(4096);
        if s.read_buf(buf).await? == 0 {
            return Err(FeedError::Closed);
        }
    }
}

/// Hands every command to [`Routes::deliver`] and keeps the connection alive.
async fn relay(mut s: TcpStream, mut buf: BytesMut, routes: &Routes) -> Result<(), FeedError> {
    let max = zedops_proto::MAX_PACKET_BYTES;
    let mut ping = tokio::time::interval(Duration::from_secs(u64::from(KEEP_ALIVE_S) / 2));
    ping.tick().await;
    let mut ping_bytes = BytesMut::new();
    wire::write(
        Version::V5,
        &Packet::PingReq(v5::PingReq),
        &mut ping_bytes,
        max,
    )?;
    loop {
        while let Some(p) = wire::read(Version::V5, &mut buf, max)? {
            match p {
                Packet::Publish(publish) => {
                    routes.deliver(&publish);
                }
                Packet::Disconnect(_) => return Err(FeedError::Closed),
                _ => {}
            }
        }
        buf.reserve(8192);
        tokio::select! {
            n = s.read_buf(&mut buf) => {
                if n? == 0 {
                    return Err(FeedError::Closed);
                }
            }
            _ = ping.tick() => s.write_all(&ping_bytes).await?,
        }
    }
}
