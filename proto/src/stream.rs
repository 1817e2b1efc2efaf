//! Streams over MQTT 5 request/response (`docs/protocol.md` § Streams).
//!
//! A stream op (`container.logs` with `follow`, `container.stats` with `stream`) is requested
//! like any op. The agent answers with a sequence of messages to the response topic, each with
//! the request's correlation data and a [`StreamMessage`] payload: chunks numbered from 0, then
//! one last message whose `end` says why the stream ended.
//!
//! Flow control: the agent sends chunk `seq` only while `seq < acked + window`, where `acked` is
//! one past the highest `seq` the requester acknowledged on `req/stream.ack`. An ack also renews
//! the stream's lease: with no ack for `lease_s`, the agent ends the stream (`expired`). Acks and
//! cancels (`req/stream.cancel`) name their stream by carrying its response topic and correlation
//! data, and are never answered.

use serde::{Deserialize, Serialize};

use crate::reply::ErrorBody;

/// The op that acknowledges chunks and renews a stream's lease.
pub const ACK_OP: &str = "stream.ack";
/// The op that ends a stream early.
pub const CANCEL_OP: &str = "stream.cancel";

/// Chunks sent before the first ack, and ahead of the last ack, by default and at most.
pub const DEFAULT_WINDOW: u32 = 8;
pub const MAX_WINDOW: u32 = 64;
/// Seconds without an ack after which the agent ends a stream, by default and the bounds.
pub const DEFAULT_LEASE_S: u32 = 30;
pub const MIN_LEASE_S: u32 = 2;
pub const MAX_LEASE_S: u32 = 300;
/// Bytes of data one chunk carries at most (JSON-encoded); far under any broker's packet limit.
pub const MAX_CHUNK_BYTES: usize = 48 * 1024;
/// How long the agent holds a line to batch it with the next ones before it sends a chunk.
pub const BATCH_MS: u64 = 20;
/// Streams an agent serves at once.
pub const MAX_STREAMS: usize = 32;

/// Why a stream ended.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "snake_case")
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The source ended (the container stopped; a stats stream never ends so).
    Eof,
    /// The requester cancelled.
    Cancelled,
    /// The requester stopped renewing its lease.
    Expired,
    /// Something failed; the message's `error` says what.
    Error,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eof => "eof",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Error => "error",
        }
    }
}

/// How a stream ended, as the HTTP API's last Server-Sent Event (`event: end`) says it.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEnd {
    pub reason: EndReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// What a log follow over HTTP sends: chunks of lines (`event: lines`), then its end
/// (`event: end`).
#[cfg_attr(feature = "openapi", derive(poem_openapi::Union))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogEvent {
    Lines(crate::ops::LogChunk),
    End(StreamEnd),
}

/// What a stats stream over HTTP sends: snapshots (`event: stats`), then its end (`event: end`).
#[cfg_attr(feature = "openapi", derive(poem_openapi::Union))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StatsEvent {
    Stats(crate::ops::Stats),
    End(StreamEnd),
}

/// Where a message stands in its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// 0, 1, 2, … per chunk; the end message takes the next number.
    pub seq: u64,
    /// Present on the last message only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<EndReason>,
}

/// One message of a stream: `{"ok": true, "stream": {"seq": 3}, "result": {…}}` for a chunk,
/// `{"ok": true, "stream": {"seq": 9, "end": "eof"}}` at the end, or `ok: false` with `error` when
/// the stream failed. A stream that cannot start is answered with a plain error reply (no
/// `stream`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamMessage {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<Position>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl StreamMessage {
    pub fn chunk(seq: u64, result: serde_json::Value) -> Self {
        Self {
            ok: true,
            stream: Some(Position { seq, end: None }),
            result: Some(result),
            error: None,
        }
    }

    pub fn end(seq: u64, reason: EndReason, error: Option<ErrorBody>) -> Self {
        Self {
            ok: error.is_none(),
            stream: Some(Position {
                seq,
                end: Some(reason),
            }),
            result: None,
            error,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| br#"{"ok":false}"#.to_vec())
    }

    /// The stream's end, when this is its last message: the reason and, for `error` (or a
    /// stream that could not start), the error.
    pub fn ending(&self) -> Option<(EndReason, Option<ErrorBody>)> {
        match (&self.stream, &self.error) {
            (Some(Position { end: Some(r), .. }), e) => Some((*r, e.clone())),
            (_, Some(e)) => Some((EndReason::Error, Some(e.clone()))),
            (None, None) if !self.ok => Some((EndReason::Error, None)),
            _ => None,
        }
    }
}

/// Arguments of `stream.ack`: every chunk up to and including `seq` was consumed. An ack with
/// the `seq` already acknowledged only renews the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// A stream's flow-control terms, from the request's `window` and `lease_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub window: u32,
    pub lease_s: u32,
}

impl Flow {
    pub fn of(window: Option<u32>, lease_s: Option<u32>) -> Result<Self, ErrorBody> {
        let window = window.unwrap_or(DEFAULT_WINDOW);
        if !(1..=MAX_WINDOW).contains(&window) {
            return Err(ErrorBody::bad_request(format!(
                "window {window} is out of range: use 1 to {MAX_WINDOW} chunks"
            )));
        }
        let lease_s = lease_s.unwrap_or(DEFAULT_LEASE_S);
        if !(MIN_LEASE_S..=MAX_LEASE_S).contains(&lease_s) {
            return Err(ErrorBody::bad_request(format!(
                "lease_s {lease_s} is out of range: use {MIN_LEASE_S} to {MAX_LEASE_S} seconds"
            )));
        }
        Ok(Self { window, lease_s })
    }
}

/// Whether a request asks for a stream: `"follow": true` or `"stream": true` in its arguments.
pub fn wants_stream(payload: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Flags {
        #[serde(default)]
        follow: bool,
        #[serde(default)]
        stream: bool,
    }
    serde_json::from_slice::<Flags>(payload).is_ok_and(|f| f.follow || f.stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::ErrorCode;

    #[test]
    fn messages_and_their_end() {
        let c = StreamMessage::chunk(3, serde_json::json!({"lines": []}));
        let wire = String::from_utf8(c.to_bytes()).unwrap();
        assert_eq!(
            wire,
            r#"{"ok":true,"stream":{"seq":3},"result":{"lines":[]}}"#
        );
        assert_eq!(c.ending(), None);
        let e = StreamMessage::end(4, EndReason::Eof, None);
        assert_eq!(
            String::from_utf8(e.to_bytes()).unwrap(),
            r#"{"ok":true,"stream":{"seq":4,"end":"eof"}}"#
        );
        assert_eq!(e.ending(), Some((EndReason::Eof, None)));
        // A stream that could not start is a plain error reply.
        let refused: StreamMessage =
            serde_json::from_str(r#"{"ok":false,"error":{"code":"busy","message":"m"}}"#).unwrap();
        let (reason, err) = refused.ending().unwrap();
        assert_eq!(reason, EndReason::Error);
        assert_eq!(err.unwrap().code, ErrorCode::Busy);
    }

    #[test]
    fn flow_bounds_and_flags() {
        assert_eq!(
            Flow::of(None, None).unwrap(),
            Flow {
                window: DEFAULT_WINDOW,
                lease_s: DEFAULT_LEASE_S
            }
        );
        assert!(Flow::of(Some(0), None).is_err());
        assert!(Flow::of(Some(65), None).is_err());
        assert!(Flow::of(None, Some(1)).is_err());
        assert!(wants_stream(br#"{"container":"a","follow":true}"#));
        assert!(wants_stream(br#"{"stream":true}"#));
        assert!(!wants_stream(br#"{"container":"a"}"#));
        assert!(!wants_stream(b"not json"));
        assert!(!wants_stream(br#"{"follow":"yes"}"#));
    }
}
