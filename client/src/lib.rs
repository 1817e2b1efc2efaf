//! The Rust client of the zedops HTTP API (`docs/protocol.md` § HTTP API), and the SDK users get.
//! Requests and answers are the spec's own types: `zedops_proto::http` and the payload types of
//! `zedops_proto`, the same Rust types the server derives `openapi/zedops.json` from, so client,
//! server and spec cannot drift apart (`docs/architecture.md` § The Rust client).
//!
//! ```no_run
//! # async fn demo() -> Result<(), zedops_client::ClientError> {
//! use zedops_client::{ActionOptions, Client};
//! let c = Client::new("http://127.0.0.1:8420", Some("zdt_…".into()), None)?;
//! let r = c.act("maestro", "web-1", zedops_proto::Action::Restart, &ActionOptions::default()).await?;
//! println!("{} is {}", r.container.name, r.container.state.as_str());
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`client`]: the connection (server URL, token, CA), one request and its error mapping.
//! - [`endpoints`]: one typed method per operation, with the options of its query.
//! - [`events`]: Server-Sent Event streams as typed events: the live fleet events, followed logs
//!   and stats streams.
//! - [`error`]: [`ClientError`], the one error type of this crate.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod client;
pub mod endpoints;
pub mod error;
pub mod events;

pub use client::Client;
pub use endpoints::{ActionOptions, ListOptions, LogsOptions};
pub use error::ClientError;
pub use events::{EventStream, Sse};
/// The types of requests and answers, re-exported so that users need no other crate.
pub use zedops_proto::http::*;
pub use zedops_proto::ops::{
    ActionResult, CommandResult, ContainerStat, LogChunk, LogLine, Logs, Stats,
};
pub use zedops_proto::stream::{EndReason, LogEvent, StatsEvent, StreamEnd};
pub use zedops_proto::{Action, Container, ContainerDetail, ContainerState, ErrorBody, ErrorCode};
