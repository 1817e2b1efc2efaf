//! Last Wills. The router's links have none (`super::link`): the front end keeps each client's
//! will from its CONNECT and, when the client goes without a DISCONNECT (or with one asking for
//! its will, reason 0x04), publishes it through a link of its own, after the will's delay unless
//! the client id is connected again by then. A session taken over by a new connection with the
//! same client id publishes no will ([`super::sessions`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5;
use rumqttc::v5::mqttbytes::QoS;
use tokio::sync::mpsc;

use super::link::{LinkIoError, Router};
use super::sessions::Sessions;
use super::wire::{self, Packet, Version};

/// Wills waiting to be handed to the router.
const QUEUE: usize = 1024;
/// How long a closing connection may wait for room in that queue.
const HAND_OVER_WITHIN: Duration = Duration::from_secs(10);
/// Longest will delay honoured; a longer one is cut to this.
const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);
/// Delayed wills waiting at once; beyond this a will is published without its delay.
const MAX_DELAYED: usize = 20_000;
/// Wait before the wills link is opened again after the router closed it.
const REOPEN_AFTER: Duration = Duration::from_millis(200);

/// Where connections hand their wills.
#[derive(Debug)]
pub(crate) struct Wills {
    tx: mpsc::Sender<v5::Publish>,
    sessions: Arc<Sessions>,
    delayed: Arc<AtomicUsize>,
}

impl Wills {
    /// The wills of `sessions`' clients, published through a link to `router` (a task on the
    /// current runtime).
    pub(crate) fn start(router: Router, sessions: Arc<Sessions>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(router, rx));
        Self {
            tx,
            sessions,
            delayed: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// `client_id` went; publishes `will` now or after its delay.
    pub(crate) async fn publish(&self, client_id: &str, will: v5::LastWill) {
        let delay = will
            .properties
            .as_ref()
            .and_then(|p| p.delay_interval)
            .map(|s| Duration::from_secs(u64::from(s)).min(MAX_DELAY))
            .unwrap_or_default();
        let publish = publish_of(will);
        if delay.is_zero() || self.delayed.load(Ordering::Relaxed) >= MAX_DELAYED {
            return self.hand_over(publish).await;
        }
        self.delayed.fetch_add(1, Ordering::Relaxed);
        let (tx, sessions, delayed) =
            (self.tx.clone(), self.sessions.clone(), self.delayed.clone());
        let client_id = client_id.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            delayed.fetch_sub(1, Ordering::Relaxed);
            if !sessions.held(&client_id) {
                let _ = tokio::time::timeout(HAND_OVER_WITHIN, tx.send(publish)).await;
            }
        });
    }

    async fn hand_over(&self, publish: v5::Publish) {
        let sent = tokio::time::timeout(HAND_OVER_WITHIN, self.tx.send(publish)).await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::warn!("a Last Will was not published: the broker's will queue stayed full for {HAND_OVER_WITHIN:?}");
        }
    }
}

/// The PUBLISH a will stands for. QoS 2 is published as QoS 1 (the wills link does not run
/// QoS 2's second round trip); subscribers get at most their own QoS anyway.
fn publish_of(will: v5::LastWill) -> v5::Publish {
    let qos = match will.qos {
        QoS::ExactlyOnce => QoS::AtLeastOnce,
        q => q,
    };
    let properties = will.properties.map(|p| v5::PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        topic_alias: None,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties,
        subscription_identifiers: Vec::new(),
        content_type: p.content_type,
    });
    v5::Publish {
        dup: false,
        qos,
        retain: will.retain,
        topic: will.topic,
        pkid: 0,
        payload: will.message,
        properties,
    }
}

/// Keeps the wills link open and publishes every will handed over.
async fn run(router: Router, mut rx: mpsc::Receiver<v5::Publish>) {
    let mut pkid = 0u16;
    loop {
        let id = format!("zedops-front-wills-{:016x}", rand::random::<u64>());
        match router.open(&id, true).await {
            Ok((mut sender, mut receiver, _)) => {
                let mut sink = BytesMut::new();
                loop {
                    tokio::select! {
                        p = rx.recv() => {
                            let Some(mut p) = p else { return };
                            if p.qos != QoS::AtMostOnce {
                                pkid = pkid.checked_add(1).unwrap_or(1);
                                p.pkid = pkid;
                            }
                            if let Err(e) = send(&mut sender, p).await {
                                tracing::warn!(error = %e, "a Last Will was not published");
                                break;
                            }
                        }
                        // The router's acknowledgements of the wills; nothing to do with them.
                        r = receiver.recv(&mut sink) => {
                            sink.clear();
                            if r.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "the broker cannot open its link for Last Wills"),
        }
        tokio::time::sleep(REOPEN_AFTER).await;
    }
}

async fn send(sender: &mut super::link::LinkSender, p: v5::Publish) -> Result<(), LinkIoError> {
    let mut out = BytesMut::new();
    let max = zedops_proto::MAX_PACKET_BYTES;
    wire::write(Version::V5, &Packet::Publish(p), &mut out, max)?;
    sender.send(&mut out).await
}
