//! The embedded broker's sessions over its in-process links to rumqttd's router: Last Wills
//! (lost clients, a DISCONNECT asking for the will, the will delay), a session taken over by a
//! second connection, the client's keep-alive, client ids, and one descriptor per client.
//! Clients here are raw sockets speaking MQTT 5 through rumqttc's codec.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::v5::{self, Packet};
use rumqttc::v5::mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zedops_broker::{start, BrokerConfig, BrokerHandle};

struct Raw {
    s: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn connect(addr: SocketAddr, connect: v5::Connect, will: Option<v5::LastWill>) -> Self {
        let mut raw = Raw {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        };
        raw.send(Packet::Connect(connect, will, None)).await;
        raw
    }

    async fn send(&mut self, p: Packet) {
        let mut out = BytesMut::new();
        p.write(&mut out, None).unwrap();
        self.s.write_all(&out).await.unwrap();
    }

    /// The next packet within `within`; `None` when the broker closed the connection.
    async fn next(&mut self, within: Duration) -> Option<Packet> {
        let next = self.within(within).await;
        next.expect("the broker answered in time")
    }

    async fn within(
        &mut self,
        within: Duration,
    ) -> Result<Option<Packet>, tokio::time::error::Elapsed> {
        tokio::time::timeout(within, async {
            loop {
                if let Ok(p) = Packet::read(&mut self.buf, None) {
                    return Some(p);
                }
                if self.s.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                    return None;
                }
            }
        })
        .await
    }

    async fn connack(&mut self) -> v5::ConnAck {
        match self.next(Duration::from_secs(10)).await {
            Some(Packet::ConnAck(ack)) => ack,
            p => panic!("expected a CONNACK, got {p:?}"),
        }
    }

    /// Connects `id` and reads a successful CONNACK.
    async fn up(addr: SocketAddr, id: &str, keep_alive: u16, will: Option<v5::LastWill>) -> Self {
        let connect = v5::Connect {
            keep_alive,
            client_id: id.into(),
            clean_start: true,
            properties: None,
        };
        let mut raw = Raw::connect(addr, connect, will).await;
        let ack = raw.connack().await;
        assert_eq!(ack.code, v5::ConnectReturnCode::Success, "{ack:?}");
        raw
    }

    /// A subscriber to `filter` at QoS 1, once its SUBACK arrived.
    async fn subscriber(addr: SocketAddr, id: &str, filter: &str) -> Self {
        Raw::subscriber_at(addr, id, filter, QoS::AtLeastOnce).await
    }

    /// A subscriber to `filter` at `qos`, once its SUBACK arrived.
    async fn subscriber_at(addr: SocketAddr, id: &str, filter: &str, qos: QoS) -> Self {
        let mut raw = Raw::up(addr, id, 60, None).await;
        let sub = v5::Subscribe::new(v5::Filter::new(filter, qos), None);
        raw.send(Packet::Subscribe(sub)).await;
        match raw.next(Duration::from_secs(10)).await {
            Some(Packet::SubAck(_)) => raw,
            p => panic!("expected a SUBACK, got {p:?}"),
        }
    }

    /// The payload of the next PUBLISH within `within`, if one comes.
    async fn publish(&mut self, within: Duration) -> Option<Bytes> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.within(left).await {
                Ok(Some(Packet::Publish(p))) => return Some(p.payload),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }
}

fn will(topic: &str, payload: &str, delay_s: Option<u32>) -> v5::LastWill {
    let props = delay_s.map(|d| v5::LastWillProperties {
        delay_interval: Some(d),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    });
    v5::LastWill::new(topic, payload, QoS::AtLeastOnce, false, props)
}

async fn broker() -> (BrokerHandle, SocketAddr) {
    let b = start(BrokerConfig::ephemeral()).await.unwrap();
    let addr = b.v5_addr();
    (b, addr)
}

#[tokio::test]
async fn a_lost_client_leaves_its_will_and_a_clean_disconnect_does_not() {
    let (_b, addr) = broker().await;
    let mut sub = Raw::subscriber(addr, "watcher", "wills/#").await;

    let lost = Raw::up(addr, "lost", 60, Some(will("wills/lost", "gone", None))).await;
    drop(lost);
    let got = sub.publish(Duration::from_secs(5)).await;
    assert_eq!(got.as_deref(), Some(&b"gone"[..]));

    let mut clean = Raw::up(addr, "clean", 60, Some(will("wills/clean", "x", None))).await;
    let bye = v5::Disconnect::new(v5::DisconnectReasonCode::NormalDisconnection);
    clean.send(Packet::Disconnect(bye)).await;
    let n = clean.next(Duration::from_secs(5)).await;
    assert_eq!(n, None, "closed");
    assert_eq!(sub.publish(Duration::from_millis(700)).await, None);

    let mut asks = Raw::up(addr, "asks", 60, Some(will("wills/asks", "asked", None))).await;
    // Reason 0x04 (disconnect with Will Message), no properties, as Mosquitto's clients write
    // it (rumqttc 0.25's encoder leaves a stray byte after this one).
    asks.s.write_all(b"\xe0\x01\x04").await.unwrap();
    let got = sub.publish(Duration::from_secs(5)).await;
    assert_eq!(got.as_deref(), Some(&b"asked"[..]));
}

#[tokio::test]
async fn a_delayed_will_waits_and_a_reconnect_within_the_delay_cancels_it() {
    let (_b, addr) = broker().await;
    let mut sub = Raw::subscriber(addr, "watcher", "wills/#").await;

    let back = Raw::up(addr, "back", 60, Some(will("wills/back", "b", Some(2)))).await;
    drop(back);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _again = Raw::up(addr, "back", 60, None).await;

    let away = Raw::up(addr, "away", 60, Some(will("wills/away", "a", Some(1)))).await;
    drop(away);
    let started = std::time::Instant::now();
    let got = sub.publish(Duration::from_secs(5)).await;
    assert_eq!(
        got.as_deref(),
        Some(&b"a"[..]),
        "only the client that stayed away"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sub.publish(Duration::from_millis(2500)).await, None);
}

#[tokio::test]
async fn a_second_connection_takes_the_session_over_without_the_will() {
    let (_b, addr) = broker().await;
    let mut sub = Raw::subscriber(addr, "watcher", "wills/#").await;
    let mut first = Raw::up(addr, "twice", 60, Some(will("wills/twice", "w", None))).await;
    let mut second = Raw::up(addr, "twice", 60, None).await;
    match first.next(Duration::from_secs(5)).await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, v5::DisconnectReasonCode::SessionTakenOver)
        }
        p => panic!("expected DISCONNECT session taken over, got {p:?}"),
    }
    assert_eq!(first.next(Duration::from_secs(5)).await, None, "closed");
    assert_eq!(sub.publish(Duration::from_millis(700)).await, None);

    // The newcomer is fully served: a request answered through the router.
    second.send(Packet::PingReq(v5::PingReq)).await;
    let sub2 = v5::Subscribe::new(v5::Filter::new("t/x", QoS::AtMostOnce), None);
    second.send(Packet::Subscribe(sub2)).await;
    assert!(matches!(
        second.next(Duration::from_secs(5)).await,
        Some(Packet::PingResp(_))
    ));
    assert!(matches!(
        second.next(Duration::from_secs(5)).await,
        Some(Packet::SubAck(_))
    ));
}

#[tokio::test]
async fn a_silent_client_is_closed_after_its_keep_alive_and_leaves_its_will() {
    let (_b, addr) = broker().await;
    let mut sub = Raw::subscriber(addr, "watcher", "wills/#").await;
    let mut silent = Raw::up(addr, "silent", 1, Some(will("wills/silent", "s", None))).await;
    let started = std::time::Instant::now();
    assert_eq!(silent.next(Duration::from_secs(5)).await, None, "closed");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1300) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    let got = sub.publish(Duration::from_secs(5)).await;
    assert_eq!(got.as_deref(), Some(&b"s"[..]));
}

#[tokio::test]
async fn client_ids_are_checked_assigned_and_keep_alive_zero_is_given_one() {
    let (_b, addr) = broker().await;
    let bad = v5::Connect {
        keep_alive: 30,
        client_id: "a/b".into(),
        clean_start: true,
        properties: None,
    };
    let ack = Raw::connect(addr, bad, None).await.connack().await;
    assert_eq!(ack.code, v5::ConnectReturnCode::ClientIdentifierNotValid);

    let anonymous = v5::Connect {
        keep_alive: 0,
        client_id: String::new(),
        clean_start: true,
        properties: None,
    };
    let ack = Raw::connect(addr, anonymous, None).await.connack().await;
    assert_eq!(ack.code, v5::ConnectReturnCode::Success);
    let props = ack.properties.expect("properties");
    assert!(props
        .assigned_client_identifier
        .is_some_and(|id| id.starts_with("zedops-auto-")));
    assert_eq!(props.server_keep_alive, Some(60));
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test]
async fn a_client_costs_the_broker_one_descriptor() {
    let (_b, addr) = broker().await;
    let _warm = Raw::up(addr, "warm", 60, None).await;
    let before = open_descriptors();
    let mut clients = Vec::new();
    for i in 0..200 {
        clients.push(Raw::up(addr, &format!("c{i}"), 60, None).await);
    }
    let per_client = (open_descriptors() - before) as f64 / 200.0;
    // Both ends are in this process: the client's socket and the broker's. With a loopback
    // connection to rumqttd per client (before) it was four.
    assert!(per_client <= 2.1, "{per_client} descriptors per client");
}

/// The front end notifies the router once per batch and not while a notification is pending
/// (`front/link.rs` `hand_over`): thousands of publishes written one by one, then a DISCONNECT,
/// all reach a subscriber in order, and the publisher's link ends cleanly.
#[tokio::test]
async fn publishes_written_one_by_one_all_arrive_in_order() {
    const N: usize = 5000;
    let (_b, addr) = broker().await;
    // At QoS 0: this subscriber sends no PUBACK, and rumqttd holds back QoS 1 deliveries
    // beyond 100 unacknowledged ones.
    let mut sub = Raw::subscriber_at(addr, "sink", "burst/one-by-one", QoS::AtMostOnce).await;
    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(N);
        while got.len() < N {
            match sub.publish(Duration::from_secs(20)).await {
                Some(p) => got.push(p),
                None => break,
            }
        }
        got
    });
    let mut publisher = Raw::up(addr, "burst", 60, None).await;
    for i in 0..N {
        let p = v5::Publish::new("burst/one-by-one", QoS::AtMostOnce, i.to_string(), None);
        publisher.send(Packet::Publish(p)).await;
    }
    publisher
        .send(Packet::Disconnect(v5::Disconnect::new(
            v5::DisconnectReasonCode::NormalDisconnection,
        )))
        .await;
    let got = reader.await.unwrap();
    assert_eq!(got.len(), N, "only {} of {N} publishes arrived", got.len());
    let in_order = got
        .iter()
        .enumerate()
        .all(|(i, p)| p == i.to_string().as_bytes());
    assert!(in_order, "the publishes arrived out of order");
    // The broker closes the publisher's connection after its DISCONNECT.
    assert!(publisher.next(Duration::from_secs(10)).await.is_none());
}
