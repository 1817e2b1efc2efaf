//! MQTT packets on the wire, with rumqttc's codecs (`rumqttc::mqttbytes` for 3.1.1,
//! `rumqttc::v5::mqttbytes` for 5): reading frames out of a buffer, writing them, and turning an
//! MQTT 3.1.1 client's packets into MQTT 5 ones and back. Inside the front end every packet is
//! MQTT 5; only the edge towards a 3.1.1 client speaks 3.1.1, so a publish that carries MQTT 5
//! properties reaches such a client without them (rumqttd 0.20 panics there instead:
//! `protocol/v4/mod.rs`, `unreachable!`).

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{self as m4, v4};
use rumqttc::v5::mqttbytes::{self as m5, v5};

pub use v5::Packet;

/// The protocol a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V4,
    V5,
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("malformed MQTT packet: {0}")]
    Malformed(String),
    #[error("packet of {size} bytes is larger than the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("the MQTT decoder failed on this input")]
    DecoderPanicked,
    #[error("a client may not send {0}")]
    Unexpected(&'static str),
}

/// Reads the first packet of a connection (a CONNECT), learning the client's protocol from it.
/// `Ok(None)`: more bytes are needed.
pub fn read_connect(
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<(Version, Packet)>, WireError> {
    // The MQTT 5 decoder refuses a CONNECT of level 4 with InvalidProtocolLevel(4); the bytes
    // are then read again as MQTT 3.1.1 (the decoder consumes from a copy only).
    let mut probe = buf.clone();
    match guarded(|| v5::Packet::read(&mut probe, Some(max as u32)))? {
        Ok(p) => {
            *buf = probe;
            Ok(Some((Version::V5, p)))
        }
        Err(m5::Error::InvalidProtocolLevel(4)) => {
            Ok(read(Version::V4, buf, max)?.map(|p| (Version::V4, p)))
        }
        Err(e) => from5(e),
    }
}

/// Reads one packet of `version` from the front of `buf`, as MQTT 5. `Ok(None)`: incomplete.
pub fn read(version: Version, buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, WireError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if version == Version::V5 {
        if let Some(short) = short_disconnect(buf) {
            return short.map(Some);
        }
    }
    match version {
        Version::V5 => match guarded(|| v5::Packet::read(buf, Some(max as u32)))? {
            Ok(p) => Ok(Some(p)),
            Err(e) => from5(e),
        },
        Version::V4 => match guarded(|| v4::Packet::read(buf, max))? {
            Ok(p) => up(p).map(Some),
            Err(m4::Error::InsufficientBytes(_)) => Ok(None),
            Err(m4::Error::PayloadSizeLimitExceeded(size)) => {
                Err(WireError::TooLarge { size, max })
            }
            Err(e) => Err(WireError::Malformed(e.to_string())),
        },
    }
}

/// A DISCONNECT of remaining length 0 (normal) or 1 (a reason code, no properties, as
/// Mosquitto sends them), both allowed by MQTT 5, read here: rumqttc 0.25's decoder refuses the
/// first and waits for more bytes after the second.
fn short_disconnect(buf: &mut BytesMut) -> Option<Result<Packet, WireError>> {
    let code = match buf[..] {
        [0xE0, 0, ..] => 0,
        [0xE0, 1, code, ..] => code,
        _ => return None,
    };
    let _ = buf.split_to(2 + usize::from(buf[1]));
    let code =
        v5::DisconnectReasonCode::try_from(code).map_err(|e| WireError::Malformed(e.to_string()));
    Some(code.map(|c| Packet::Disconnect(v5::Disconnect::new(c))))
}

/// rumqttc 0.25 encodes a DISCONNECT with a reason code and no properties as remaining length
/// 1 followed by two bytes (the reason and a property length), a malformed packet that leaves a
/// stray byte: it is written here as reason code and an empty property length.
fn write_disconnect(d: &v5::Disconnect, out: &mut BytesMut) -> bool {
    let empty = d.properties.is_none();
    if empty && d.reason_code != v5::DisconnectReasonCode::NormalDisconnection {
        out.extend_from_slice(&[0xE0, 2, d.reason_code as u8, 0]);
        return true;
    }
    false
}

fn from5<T>(e: m5::Error) -> Result<Option<T>, WireError> {
    match e {
        m5::Error::InsufficientBytes(_) => Ok(None),
        m5::Error::PayloadSizeLimitExceeded { pkt_size, max } => Err(WireError::TooLarge {
            size: pkt_size,
            max: max as usize,
        }),
        e => Err(WireError::Malformed(e.to_string())),
    }
}

/// Appends `p` to `out` in the encoding of `version`. A packet that has no 3.1.1 form (AUTH, a
/// server's DISCONNECT) is left out for a 3.1.1 client: `Ok(false)`.
pub fn write(
    version: Version,
    p: &Packet,
    out: &mut BytesMut,
    max: usize,
) -> Result<bool, WireError> {
    let too_large = || WireError::TooLarge {
        size: p.size(),
        max,
    };
    if let (Version::V5, Packet::Disconnect(d)) = (version, p) {
        if write_disconnect(d, out) {
            return Ok(true);
        }
    }
    match version {
        Version::V5 => p.write(out, Some(max as u32)).map_err(|e| match e {
            m5::Error::OutgoingPacketTooLarge { .. } => too_large(),
            e => WireError::Malformed(e.to_string()),
        })?,
        Version::V4 => match down(p) {
            Some(p4) => p4.write(out, max).map_err(|e| match e {
                m4::Error::OutgoingPacketTooLarge { .. } => too_large(),
                e => WireError::Malformed(e.to_string()),
            })?,
            None => return Ok(false),
        },
    };
    Ok(true)
}

/// Runs a decoder, turning a panic inside it into an error: hostile bytes must never take a
/// broker thread down.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, WireError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| WireError::DecoderPanicked)
}

fn qos_up(q: m4::QoS) -> m5::QoS {
    match q {
        m4::QoS::AtMostOnce => m5::QoS::AtMostOnce,
        m4::QoS::AtLeastOnce => m5::QoS::AtLeastOnce,
        m4::QoS::ExactlyOnce => m5::QoS::ExactlyOnce,
    }
}

fn qos_down(q: m5::QoS) -> m4::QoS {
    match q {
        m5::QoS::AtMostOnce => m4::QoS::AtMostOnce,
        m5::QoS::AtLeastOnce => m4::QoS::AtLeastOnce,
        m5::QoS::ExactlyOnce => m4::QoS::ExactlyOnce,
    }
}

/// A 3.1.1 client's packet as MQTT 5. Packets only a server sends are refused.
fn up(p: v4::Packet) -> Result<Packet, WireError> {
    Ok(match p {
        v4::Packet::Connect(c) => Packet::Connect(
            v5::Connect {
                keep_alive: c.keep_alive,
                client_id: c.client_id,
                clean_start: c.clean_session,
                properties: None,
            },
            c.last_will.map(|w| v5::LastWill {
                topic: Bytes::from(w.topic),
                message: w.message,
                qos: qos_up(w.qos),
                retain: w.retain,
                properties: None,
            }),
            c.login.map(|l| v5::Login {
                username: l.username,
                password: l.password,
            }),
        ),
        v4::Packet::Publish(p) => Packet::Publish(v5::Publish {
            dup: p.dup,
            qos: qos_up(p.qos),
            retain: p.retain,
            topic: Bytes::from(p.topic),
            pkid: p.pkid,
            payload: p.payload,
            properties: None,
        }),
        v4::Packet::PubAck(a) => Packet::PubAck(v5::PubAck::new(a.pkid, None)),
        v4::Packet::PubRec(a) => Packet::PubRec(v5::PubRec::new(a.pkid, None)),
        v4::Packet::PubRel(a) => Packet::PubRel(v5::PubRel::new(a.pkid, None)),
        v4::Packet::PubComp(a) => Packet::PubComp(v5::PubComp::new(a.pkid, None)),
        v4::Packet::Subscribe(s) => Packet::Subscribe(v5::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| v5::Filter {
                    path: f.path,
                    qos: qos_up(f.qos),
                    nolocal: false,
                    preserve_retain: false,
                    retain_forward_rule: v5::RetainForwardRule::OnEverySubscribe,
                })
                .collect(),
            properties: None,
        }),
        v4::Packet::Unsubscribe(u) => Packet::Unsubscribe(v5::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
            properties: None,
        }),
        v4::Packet::PingReq => Packet::PingReq(v5::PingReq),
        v4::Packet::Disconnect => Packet::Disconnect(v5::Disconnect::new(
            v5::DisconnectReasonCode::NormalDisconnection,
        )),
        v4::Packet::ConnAck(_) => return Err(WireError::Unexpected("CONNACK")),
        v4::Packet::SubAck(_) => return Err(WireError::Unexpected("SUBACK")),
        v4::Packet::UnsubAck(_) => return Err(WireError::Unexpected("UNSUBACK")),
        v4::Packet::PingResp => return Err(WireError::Unexpected("PINGRESP")),
    })
}

/// An MQTT 5 packet for a 3.1.1 client: properties and reason codes are left out. `None`: the
/// packet has no 3.1.1 form.
fn down(p: &Packet) -> Option<v4::Packet> {
    Some(match p {
        Packet::ConnAck(c) => v4::Packet::ConnAck(v4::ConnAck::new(
            connack_code_down(c.code),
            c.session_present,
        )),
        Packet::Publish(p) => v4::Packet::Publish(v4::Publish {
            dup: p.dup,
            qos: qos_down(p.qos),
            retain: p.retain,
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            pkid: p.pkid,
            payload: p.payload.clone(),
        }),
        Packet::PubAck(a) => v4::Packet::PubAck(v4::PubAck::new(a.pkid)),
        Packet::PubRec(a) => v4::Packet::PubRec(v4::PubRec::new(a.pkid)),
        Packet::PubRel(a) => v4::Packet::PubRel(v4::PubRel::new(a.pkid)),
        Packet::PubComp(a) => v4::Packet::PubComp(v4::PubComp::new(a.pkid)),
        Packet::SubAck(s) => v4::Packet::SubAck(v4::SubAck {
            pkid: s.pkid,
            return_codes: s
                .return_codes
                .iter()
                .map(|c| match c {
                    v5::SubscribeReasonCode::Success(q) => {
                        v4::SubscribeReasonCode::Success(qos_down(*q))
                    }
                    _ => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        }),
        Packet::UnsubAck(u) => v4::Packet::UnsubAck(v4::UnsubAck::new(u.pkid)),
        Packet::PingResp(_) => v4::Packet::PingResp,
        Packet::PingReq(_) => v4::Packet::PingReq,
        _ => return None,
    })
}

fn connack_code_down(c: v5::ConnectReturnCode) -> v4::ConnectReturnCode {
    use v5::ConnectReturnCode as C5;
    match c {
        C5::Success => v4::ConnectReturnCode::Success,
        C5::UnsupportedProtocolVersion | C5::RefusedProtocolVersion => {
            v4::ConnectReturnCode::RefusedProtocolVersion
        }
        C5::ClientIdentifierNotValid | C5::BadClientId => v4::ConnectReturnCode::BadClientId,
        C5::BadUserNamePassword => v4::ConnectReturnCode::BadUserNamePassword,
        C5::NotAuthorized | C5::Banned => v4::ConnectReturnCode::NotAuthorized,
        _ => v4::ConnectReturnCode::ServiceUnavailable,
    }
}

/// A CONNACK refusing the connection.
pub fn refusal(code: v5::ConnectReturnCode) -> Packet {
    Packet::ConnAck(v5::ConnAck {
        session_present: false,
        code,
        properties: None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn encode4(p: v4::Packet) -> BytesMut {
        let mut b = BytesMut::new();
        p.write(&mut b, 1 << 20).unwrap();
        b
    }

    #[test]
    fn a_311_connect_is_read_as_mqtt5_and_a_publish_with_properties_goes_back_without_them() {
        let mut c = v4::Connect::new("ha");
        c.set_login("u", "p");
        let mut buf = encode4(v4::Packet::Connect(c));
        let (v, p) = read_connect(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(v, Version::V4);
        assert!(buf.is_empty());
        let Packet::Connect(c, _, Some(login)) = p else {
            panic!("{p:?}")
        };
        assert_eq!((c.client_id.as_str(), login.username.as_str()), ("ha", "u"));

        let mut props = v5::PublishProperties::default();
        props
            .user_properties
            .push(("zedops-sig".into(), "x".into()));
        let mut publish = v5::Publish::new("t/1", m5::QoS::AtLeastOnce, "hi", Some(props));
        publish.pkid = 7;
        let mut out = BytesMut::new();
        assert!(write(Version::V4, &Packet::Publish(publish), &mut out, 1 << 20).unwrap());
        let back = v4::Packet::read(&mut out, 1 << 20).unwrap();
        let v4::Packet::Publish(p) = back else {
            panic!("{back:?}")
        };
        assert_eq!(
            (p.topic.as_str(), &p.payload[..], p.pkid),
            ("t/1", &b"hi"[..], 7)
        );
    }

    #[test]
    fn partial_frames_wait_for_more_and_garbage_is_an_error() {
        let c = v4::Connect::new("x");
        let full = encode4(v4::Packet::Connect(c));
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert!(
                read_connect(&mut part, 1 << 20).unwrap().is_none(),
                "cut {cut}"
            );
        }
        let mut junk = BytesMut::from(&b"\x10\x05GARBAGE"[..]);
        assert!(read_connect(&mut junk, 1 << 20).is_err());
        let mut huge = BytesMut::from(&b"\x30\xff\xff\xff\x7f"[..]);
        assert!(matches!(
            read(Version::V5, &mut huge, 1024),
            Err(WireError::TooLarge { .. })
        ));
    }

    #[test]
    fn an_empty_mqtt5_disconnect_is_normal() {
        let mut b = BytesMut::from(&b"\xe0\x00"[..]);
        let p = read(Version::V5, &mut b, 1024).unwrap().unwrap();
        assert!(matches!(p, Packet::Disconnect(_)));
    }

    #[test]
    fn a_disconnect_with_a_reason_reads_in_both_forms_and_is_written_whole() {
        use v5::DisconnectReasonCode as R;
        for bytes in [&b"\xe0\x01\x04"[..], &b"\xe0\x02\x04\x00"[..]] {
            let mut b = BytesMut::from(bytes);
            let p = read(Version::V5, &mut b, 1024).unwrap().unwrap();
            let Packet::Disconnect(d) = p else {
                panic!("{p:?}")
            };
            assert_eq!(d.reason_code, R::DisconnectWithWillMessage);
            assert!(b.is_empty(), "{b:?}");
        }
        let mut out = BytesMut::new();
        let bye = Packet::Disconnect(v5::Disconnect::new(R::SessionTakenOver));
        write(Version::V5, &bye, &mut out, 1024).unwrap();
        assert_eq!(&out[..], b"\xe0\x02\x8e\x00");
    }

    proptest::proptest! {
        /// Any bytes, read as either protocol: a packet, "need more", or an error — never a
        /// panic out of the decoder — and whatever decodes can be written again, in both
        /// versions (what the front end does with every packet it relays).
        #[test]
        fn any_bytes_decode_safely(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let mut b = BytesMut::from(&bytes[..]);
            let _ = read_connect(&mut b, 1 << 16);
            for version in [Version::V4, Version::V5] {
                let mut b = BytesMut::from(&bytes[..]);
                for _ in 0..16 {
                    match read(version, &mut b, 1 << 16) {
                        Ok(Some(p)) => {
                            let mut out = BytesMut::new();
                            for v in [Version::V4, Version::V5] {
                                out.clear();
                                proptest::prop_assert!(write(v, &p, &mut out, 1 << 20).is_ok(), "{p:?}");
                            }
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }

        /// A valid CONNECT followed by random bytes, as a hostile client sends it.
        #[test]
        fn connect_then_garbage(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), v5 in proptest::prelude::any::<bool>()) {
            let mut b = if v5 {
                let c = v5::Connect { keep_alive: 10, client_id: "x".into(), clean_start: true, properties: None };
                let mut out = BytesMut::new();
                Packet::Connect(c, None, None).write(&mut out, None).unwrap();
                out
            } else {
                encode4(v4::Packet::Connect(v4::Connect::new("x")))
            };
            b.extend_from_slice(&tail);
            let (version, _) = read_connect(&mut b, 1 << 16).unwrap().unwrap();
            for _ in 0..16 {
                if !matches!(read(version, &mut b, 1 << 16), Ok(Some(_))) {
                    break;
                }
            }
        }
    }
}
