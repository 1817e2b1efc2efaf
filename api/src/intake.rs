//! What agents publish (status, snapshot, events, stats), taken off the MQTT session's task: the
//! session hands each message over ([`Intake::take`]) and goes back to reading the socket, and
//! one task verifies and applies them to the fleet cache in order.
//!
//! Replies to the API's requests take the same queue ([`Intake::reply`]): an agent publishes an
//! action's outcome before it replies, and a caller who has the reply must find that outcome
//! applied (`zedops restart web-1` then `zedops ps` shows it running, not the `die` before).
//!
//! Why: checking a signature and parsing a snapshot of 25 containers costs far more than reading
//! it, and while the session task did both, a burst — the retained state of 10 000 agents
//! delivered at once on subscribing — outran it; the broker then held the rest in its queue for
//! this client and Mosquitto dropped thousands of copies (docs/benchmarks.md, scenario 6). The
//! hand-over is bounded ([`QUEUE`] messages): beyond it a message is dropped and counted, as a
//! busy broker would, and the gap filling asks its agent again (`mqtt::fill_gaps`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rumqttc::v5::mqttbytes::v5::Publish;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, warn};
use zedops_proto::topics::{self, Topic};

use crate::cache::{Change, Fleet};
use crate::mqtt::Link;

/// Messages waiting for the applier at most: the retained state of 8192 agents (status and
/// snapshot each), ~130 MB of snapshots of 25 containers.
pub const QUEUE: usize = 16_384;

/// What the session hands over.
enum Item {
    /// Agent state: verified and applied.
    State(Publish),
    /// A reply or a stream's chunk on the API's reply topic: handed to what waits for it.
    Reply(Publish),
}

/// The session's side of the hand-over.
pub struct Intake {
    link: Arc<Link>,
    tx: mpsc::Sender<Item>,
    dropped: Arc<AtomicU64>,
}

impl Intake {
    /// Hands a reply to the applier, behind the state that came before it; when the queue is
    /// full it is handed over at once (out of order rather than lost: a caller is waiting).
    pub fn reply(&self, p: Publish) {
        if let Err(mpsc::error::TrySendError::Full(Item::Reply(p))) =
            self.tx.try_send(Item::Reply(p))
        {
            self.link.complete(&p);
        }
    }

    /// Hands `p` to the applier without waiting; drops it when the queue is full.
    pub fn take(&self, p: Publish) {
        if let Err(mpsc::error::TrySendError::Full(Item::State(p))) =
            self.tx.try_send(Item::State(p))
        {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                let topic = String::from_utf8_lossy(&p.topic);
                warn!(%topic, dropped = n, "agent state arrives faster than it is applied; dropped (its agent is asked again)");
            }
        }
    }
}

/// The intake and the task that applies what it takes (it ends when the intake is dropped).
pub fn start(
    link: Arc<Link>,
    fleet: Arc<Fleet>,
    changes: broadcast::Sender<Change>,
) -> (Intake, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Item>(QUEUE);
    let applier = link.clone();
    let task = tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            match item {
                Item::Reply(p) => applier.complete(&p),
                Item::State(p) => {
                    apply(&applier, &fleet, &changes, &p).await;
                    *applier.state_at.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(std::time::Instant::now());
                }
            }
        }
    });
    let dropped = Arc::default();
    (Intake { link, tx, dropped }, task)
}

/// Verifies (with security on) and applies one message of an agent's state.
async fn apply(link: &Link, fleet: &Fleet, changes: &broadcast::Sender<Change>, p: &Publish) {
    let topic = String::from_utf8_lossy(&p.topic);
    let Some(parsed) = topics::parse(&topic) else {
        return;
    };
    // With security on, state is taken only when its agent signed it: a forged (even retained)
    // status or snapshot changes nothing.
    let mut signed_at = chrono::Utc::now().timestamp_millis().max(0) as u64;
    if let Some(sec) = &link.security {
        if let Some(agent) = state_agent(&parsed) {
            sec.warm(agent).await;
        }
        match admit(sec, &link.freshness, &parsed, &topic, p) {
            Ok(ts) => signed_at = ts,
            Err(why) => {
                debug!(%topic, why, "ignoring agent state");
                return;
            }
        }
    }
    let change = match parsed {
        Topic::Status { agent } => fleet.apply_status(agent, &p.payload),
        Topic::Snapshot { agent } => {
            fleet.apply_snapshot(agent, &p.payload);
            None
        }
        Topic::Events { agent } => fleet.apply_event(agent, &p.payload),
        Topic::Stats { agent } => {
            fleet.usage.apply(agent, signed_at, &p.payload);
            None
        }
        _ => {
            debug!(%topic, "ignoring message");
            None
        }
    };
    if let Some(c) = change {
        let _ = changes.send(c);
    }
}

/// The agent whose signed state (status, snapshot, events, stats) `t` is; `None` for the rest.
fn state_agent<'a>(t: &Topic<'a>) -> Option<&'a str> {
    match t {
        Topic::Status { agent }
        | Topic::Snapshot { agent }
        | Topic::Events { agent }
        | Topic::Stats { agent } => Some(agent),
        _ => None,
    }
}

/// With security on: whether agent state (status, snapshot, event, stats) on `topic` is taken
/// — signed by its agent's enrolled key, and newer than what was taken (no replays; stats are
/// checked by their store, with the signing time returned). Other topics pass (time 0).
fn admit(
    sec: &crate::security::Security,
    freshness: &crate::freshness::Freshness,
    t: &Topic<'_>,
    topic: &str,
    p: &Publish,
) -> Result<u64, &'static str> {
    let Some(agent) = state_agent(t) else {
        return Ok(0);
    };
    let ts = sec
        .from_agent(agent, topic, p.properties.as_ref(), &p.payload)
        .ok_or("not signed by its agent")?;
    let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
    match t {
        Topic::Status { .. } => freshness.status(agent, ts, &p.payload, now),
        Topic::Snapshot { .. } => freshness.snapshot(agent, ts),
        Topic::Stats { .. } => Ok(()),
        _ => freshness.event(agent, ts, &p.payload, now),
    }
    .map(|()| ts)
}
