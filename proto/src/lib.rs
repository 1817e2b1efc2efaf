//! The zedops wire contract, shared by the agent, the API and the CLI so that they cannot drift apart
//! (the original system's worst bugs were IDs and subjects spelled differently in each part).
//!
//! # Layout
//! - [`names`]: agent names and container references, validated once at every edge.
//! - [`topics`]: builders and a parser for every MQTT topic under `zedops/v1/`.
//! - [`model`]: the payloads agents publish (`AgentStatus`, `Snapshot`, `Container`, `ContainerEvent`).
//! - [`ops`]: the request/response operations; each op type names its argument and result types.
//! - [`actions`]: the table of container actions that every surface is driven by.
//! - [`defined`]: operator-defined actions as agents advertise them, and their parameter checks.
//! - [`http`]: the request and response bodies of the HTTP API, shared by the server and the Rust
//!   client (`zedops-client`).
//! - [`reply`]: the reply envelope and the error codes, with their HTTP status.
//! - [`acl`]: who an MQTT connection is and which topics it may use (both brokers' policy).
//! - [`identity`]: the MQTT client ids and internal username the broker's authentication relies on.
//! - [`enrollment`]: enrollment tokens (agent name, secret, server-key fingerprint).
//! - [`sign`]: Ed25519 signatures of requests, replies and agent state, in MQTT user properties.
//! - [`since`]: the `since` of log reads: a duration back or an RFC 3339 time.
//! - [`sse`]: the Server-Sent Events wire format the API writes and clients read.
//! - [`stream`]: streams over MQTT 5 request/response (chunks, flow control, the end).
//! - [`url`]: broker URLs (`mqtt://`, `mqtts://`) and lists of them.
//! - [`client`] (feature `client`): what every zedops MQTT client sets up the same way — options,
//!   TLS, reconnect backoff, the host name.
//! - [`failover`] (feature `client`): which of several brokers a client tries next, and when.
//!
//! Nothing in this crate does I/O, except [`client`]'s reading of the CA bundle and host name.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod acl;
pub mod actions;
#[cfg(feature = "client")]
pub mod client;
pub mod defined;
pub mod enrollment;
#[cfg(feature = "client")]
pub mod failover;
pub mod http;
pub mod identity;
pub mod model;
pub mod names;
pub mod ops;
pub mod reply;
pub mod resync;
pub mod sign;
pub mod since;
pub mod sse;
pub mod stream;
pub mod topics;
pub mod url;

pub use actions::{Action, ActionRequest, ActionSpec, ACTIONS};
pub use model::*;
pub use names::{AgentName, ContainerRef, NameError};
pub use reply::{ErrorBody, ErrorCode, Reply};
pub use url::{BrokerList, BrokerUrl};

/// The version of this crate, which agents report in their status.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Most bytes one reply may carry; larger results (logs) are truncated to fit, since MQTT clients and
/// brokers refuse packets over their maximum size.
pub const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// Largest MQTT packet our clients accept and the embedded broker forwards. A snapshot of a few
/// hundred containers is a few hundred KiB; logs are bounded by [`MAX_REPLY_BYTES`].
pub const MAX_PACKET_BYTES: usize = 8 * 1024 * 1024;

/// The most QoS 1 publishes a zedops MQTT client keeps unacknowledged. rumqttc sizes a table for
/// the broker's Receive Maximum (65 535 for rumqttd) up front — 13.5 MiB per client — unless
/// capped; more than this many in flight gains nothing on one connection.
pub const MQTT_OUTGOING_INFLIGHT: u16 = 100;
