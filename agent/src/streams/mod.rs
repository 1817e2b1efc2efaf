//! Streams (`zedops_proto::stream`, `docs/protocol.md` § Streams): `container.logs` with `follow`
//! and `container.stats` with `stream`, answered by numbered chunks under the requester's flow
//! control.
//!
//! - this module: the table of open streams (bounded by [`MAX_STREAMS`]), acks and cancels, and
//!   serving one stream from its request to its last message;
//! - [`flow`]: one stream's credit and lease;
//! - [`sink`]: sending chunks as credit allows, and the end message;
//! - [`logs`]: following a container's output, lines batched into chunks;
//! - [`stats`]: a stats snapshot every interval.

mod flow;
mod logs;
mod sink;
mod stats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tracing::{debug, info};
use zedops_proto::ops::{self, LogsArgs, Op, StatsArgs};
use zedops_proto::stream::{self as wire, EndReason, MAX_STREAMS};
use zedops_proto::ErrorBody;

use crate::docker::{DriverError, LogQuery, Resolved};
use crate::handlers::Ctx;

pub(crate) use flow::Flow;
pub(crate) use sink::Sink;

/// What identifies a stream: the response topic and correlation data of its request.
pub(crate) type Key = (String, Bytes);

/// Why a stream handler stopped before its source ended.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Cancelled or expired.
    Ended(EndReason),
    Failed(ErrorBody),
}

impl From<DriverError> for Stop {
    fn from(e: DriverError) -> Self {
        Self::Failed(e.into())
    }
}

/// The streams an agent serves now.
#[derive(Default)]
pub struct Streams {
    open: Mutex<HashMap<Key, Arc<Flow>>>,
}

impl Streams {
    /// How many streams are open.
    pub fn active(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Flow>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a stream under `key`: `busy` past [`MAX_STREAMS`], `conflict` when one with this
    /// key is open.
    fn open(self: &Arc<Self>, key: Key, flow: wire::Flow) -> Result<Opened, ErrorBody> {
        let mut open = self.lock();
        if open.len() >= MAX_STREAMS {
            return Err(ErrorBody::new(
                zedops_proto::ErrorCode::Busy,
                format!("this agent already serves {MAX_STREAMS} streams; end one or retry later"),
            ));
        }
        if open.contains_key(&key) {
            return Err(ErrorBody::conflict(
                "a stream with this response topic and correlation data is already open",
            ));
        }
        let f = Arc::new(Flow::new(flow));
        open.insert(key.clone(), f.clone());
        Ok(Opened {
            streams: self.clone(),
            key,
            flow: f,
        })
    }

    /// An ack or cancel of the stream `key` (unknown streams are ignored: acks are never
    /// answered).
    pub(crate) fn control(&self, op: &str, key: &Key, payload: &[u8]) {
        let Some(flow) = self.lock().get(key).cloned() else {
            debug!(op, "control message for no open stream; ignored");
            return;
        };
        if op == wire::CANCEL_OP {
            flow.cancel();
            return;
        }
        let payload: &[u8] = if payload.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            payload
        };
        match serde_json::from_slice::<wire::Ack>(payload) {
            Ok(a) => flow.ack(a.seq),
            Err(e) => debug!(error = %e, "malformed stream ack; ignored"),
        }
    }
}

/// An open stream's place in the table; dropping it closes the stream.
struct Opened {
    streams: Arc<Streams>,
    key: Key,
    flow: Arc<Flow>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.streams.lock().remove(&self.key);
    }
}

/// Whether `op` is a stream-control op (`stream.ack`, `stream.cancel`).
pub(crate) fn is_control(op: &str) -> bool {
    op == wire::ACK_OP || op == wire::CANCEL_OP
}

/// Whether the request asks for a stream this agent serves.
pub(crate) fn wanted(op: &str, payload: &[u8]) -> bool {
    (op == ops::ContainerLogs::NAME || op == ops::ContainerStats::NAME)
        && wire::wants_stream(payload)
}

/// Which lines a `container.logs` request asks for.
pub fn log_query(a: &LogsArgs) -> Result<LogQuery, ErrorBody> {
    Ok(LogQuery {
        tail: a.docker_tail()?,
        since: a.since_unix(chrono::Utc::now())?,
        timestamps: a.timestamps,
    })
}

/// A stream request, checked and resolved, ready to run.
enum Job {
    Logs(Resolved, LogQuery),
    Stats(Option<Resolved>, std::time::Duration),
}

/// Checks a stream request's arguments and resolves its container.
async fn prepare(ctx: &Ctx, op: &str, payload: &[u8]) -> Result<(Job, wire::Flow), ErrorBody> {
    if op == ops::ContainerLogs::NAME {
        let a = ops::parse_args::<ops::ContainerLogs>(payload)?;
        let flow = wire::Flow::of(a.window, a.lease_s)?;
        let q = log_query(&a)?;
        let t = ctx.driver.resolve(&a.container).await?;
        return Ok((Job::Logs(t, q), flow));
    }
    let a: StatsArgs = ops::parse_args::<ops::ContainerStats>(payload)?;
    let flow = wire::Flow::of(a.window, a.lease_s)?;
    let interval = a.interval()?;
    let t = match &a.container {
        Some(c) => Some(ctx.driver.resolve(c).await?),
        None => None,
    };
    Ok((Job::Stats(t, interval), flow))
}

/// Serves one stream: a plain error reply when it cannot start, else chunks and the end.
pub(crate) async fn serve(ctx: &Arc<Ctx>, op: &str, payload: &[u8], mut sink: Sink) {
    let Some(key) = sink.key() else {
        let e = ErrorBody::bad_request("a stream needs a response topic and correlation data");
        sink.refuse(e).await;
        return;
    };
    let opened = match prepare(ctx, op, payload).await {
        Ok((job, flow)) => ctx.streams.open(key, flow).map(|o| (job, o)),
        Err(e) => Err(e),
    };
    let (job, opened) = match opened {
        Ok(v) => v,
        Err(e) => return sink.refuse(e).await,
    };
    sink.attach(opened.flow.clone());
    info!(active = ctx.streams.active(), "stream started");
    let outcome = match job {
        Job::Logs(t, q) => logs::follow(ctx, &t, &q, &mut sink).await,
        Job::Stats(t, every) => stats::every(ctx, t.as_ref(), every, &mut sink).await,
    };
    let (reason, error) = match outcome {
        Ok(()) => (EndReason::Eof, None),
        Err(Stop::Ended(r)) => (r, None),
        Err(Stop::Failed(e)) => (EndReason::Error, Some(e)),
    };
    sink.finish(reason, error).await;
    drop(opened);
    info!(
        reason = reason.as_str(),
        active = ctx.streams.active(),
        "stream ended"
    );
}
