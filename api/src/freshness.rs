//! Replay protection for what agents sign (issue 14, item 5). A signature proves who signed a
//! message, not when it was sent: anyone who kept an old signed status, Last Will or event could
//! publish it again. Per agent, the API accepts only state newer than what it accepted, and
//! bounds how old a signed `online` or event may be.
//!
//! The Last Will is the one message that is legitimately old when it arrives: the agent signs it
//! before each connection, and the broker publishes it when that connection dies. So an
//! `offline` older than the last accepted status is still accepted when it belongs to the agent
//! process whose statuses were accepted (signed no earlier than that process started) and is
//! newer than any will accepted before — each will is taken once. It is refused when it is the
//! will of an earlier process (a replay, or a late will firing after the agent already
//! restarted) or one already taken (a replay while the agent is back online).

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use zedops_proto::AgentState;

/// A signed `online` older than this is not news: a live agent republishes every 60 s and
/// whenever the API asks (`fleet/resync`).
pub const MAX_ONLINE_AGE_MS: u64 = 10 * 60 * 1000;
/// A signed event older than this is not forwarded: events are live, never retained.
pub const MAX_EVENT_AGE_MS: u64 = 60 * 1000;
/// Clock slack between an agent's start and the signing of its Last Will.
const WILL_SLACK_MS: u64 = 5_000;
/// Agents remembered; the table is cleared when full (it is rebuilt from the next messages).
const MAX_AGENTS: usize = 100_000;
/// Events remembered per agent at the newest signing time (several share one millisecond).
const MAX_SAME_MS: usize = 64;

/// What was accepted from one agent, by signing time (Unix ms).
#[derive(Debug, Default, Clone)]
struct Seen {
    status: u64,
    /// When the agent process of the last accepted status started.
    session_start: u64,
    /// The newest Last Will accepted after the status it was older than.
    will: u64,
    snapshot: u64,
    event: u64,
    /// Payload hashes of the events accepted at `event`.
    events_at: Vec<u64>,
}

/// The fields of a status this needs.
#[derive(Deserialize)]
struct StatusHead {
    state: AgentState,
    started_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub struct Freshness {
    seen: Mutex<HashMap<String, Seen>>,
}

impl Freshness {
    fn with<T>(&self, agent: &str, f: impl FnOnce(&mut Seen) -> T) -> T {
        let mut m = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_AGENTS && !m.contains_key(agent) {
            m.clear();
        }
        f(m.entry(agent.to_owned()).or_default())
    }

    /// Whether a status signed at `ts` is accepted; `Err` says why not.
    pub fn status(
        &self,
        agent: &str,
        ts: u64,
        payload: &[u8],
        now: u64,
    ) -> Result<(), &'static str> {
        let Ok(head) = serde_json::from_slice::<StatusHead>(payload) else {
            return Ok(()); // the cache refuses it
        };
        let started = u64::try_from(head.started_at.timestamp_millis()).unwrap_or(0);
        self.with(agent, |s| match head.state {
            AgentState::Online if now.saturating_sub(ts) > MAX_ONLINE_AGE_MS => {
                Err("an 'online' signed more than 10 minutes ago")
            }
            state if ts >= s.status => {
                s.status = ts;
                s.session_start = started;
                if state == AgentState::Offline {
                    s.will = s.will.max(ts);
                }
                Ok(())
            }
            AgentState::Offline if ts + WILL_SLACK_MS < s.session_start => {
                Err("an 'offline' of an earlier agent process (a replayed or late Last Will)")
            }
            AgentState::Offline if ts <= s.will => Err("a Last Will already taken (a replay)"),
            AgentState::Offline => {
                s.will = ts;
                Ok(())
            }
            _ => Err("older than the status already accepted"),
        })
    }

    /// Whether a snapshot signed at `ts` is accepted.
    pub fn snapshot(&self, agent: &str, ts: u64) -> Result<(), &'static str> {
        self.with(agent, |s| {
            if ts < s.snapshot {
                return Err("older than the snapshot already accepted");
            }
            s.snapshot = ts;
            Ok(())
        })
    }

    /// Whether an event signed at `ts` is accepted (each one once).
    pub fn event(
        &self,
        agent: &str,
        ts: u64,
        payload: &[u8],
        now: u64,
    ) -> Result<(), &'static str> {
        if now.saturating_sub(ts) > MAX_EVENT_AGE_MS {
            return Err("an event signed more than a minute ago");
        }
        let h = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            payload.hash(&mut h);
            h.finish()
        };
        self.with(agent, |s| {
            if ts < s.event || (ts == s.event && s.events_at.contains(&h)) {
                return Err("an event already accepted, or older than one");
            }
            if ts > s.event {
                s.event = ts;
                s.events_at.clear();
            }
            if s.events_at.len() < MAX_SAME_MS {
                s.events_at.push(h);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn status(state: &str, started_ms: i64) -> Vec<u8> {
        let started = DateTime::from_timestamp_millis(started_ms).unwrap();
        serde_json::to_vec(&serde_json::json!({"state": state, "started_at": started})).unwrap()
    }

    #[test]
    fn statuses_move_forward_and_wills_belong_to_their_process() {
        let f = Freshness::default();
        let now = 20_000;
        // Process 1 started at 1000 (its will is signed then), online at 2000 and 3000.
        assert!(f
            .status("a", 2000, &status("online", 1000), now - 100)
            .is_ok());
        assert!(f
            .status("a", 3000, &status("online", 1000), now - 100)
            .is_ok());
        assert!(
            f.status("a", 2000, &status("online", 1000), now).is_err(),
            "an old online"
        );
        // Its will (signed at 1001) fires: accepted although older.
        assert!(f.status("a", 1001, &status("offline", 1000), now).is_ok());
        // The process reconnects (a new will signed at 4000, online at 4100); the first will
        // replayed is refused, the new one, when it fires, taken.
        assert!(f
            .status("a", 4100, &status("online", 1000), now - 100)
            .is_ok());
        assert!(f.status("a", 1001, &status("offline", 1000), now).is_err());
        assert!(f.status("a", 4000, &status("offline", 1000), now).is_ok());
        assert!(f.status("a", 4000, &status("offline", 1000), now).is_err());
        // Process 2 starts at 15000.
        assert!(f
            .status("a", 15100, &status("online", 15000), now - 100)
            .is_ok());
        // Process 1's will again (a replay, or late): refused.
        assert!(f.status("a", 1001, &status("offline", 1000), now).is_err());
        // Process 2's clean shutdown (newer): accepted.
        assert!(f.status("a", 16000, &status("offline", 15000), now).is_ok());
        // A stale online, never accepted however new the table.
        let later = now + MAX_ONLINE_AGE_MS;
        assert!(f.status("b", 1, &status("online", 1), later).is_err());
    }

    #[test]
    fn events_once_and_recent() {
        let f = Freshness::default();
        let now = 100_000;
        assert!(f.event("a", now - 10, b"e1", now).is_ok());
        assert!(
            f.event("a", now - 10, b"e2", now).is_ok(),
            "same ms, another event"
        );
        assert!(f.event("a", now - 10, b"e1", now).is_err(), "replayed");
        assert!(f.event("a", now - 20, b"e0", now).is_err(), "older");
        assert!(
            f.event("a", now - MAX_EVENT_AGE_MS - 1, b"x", now).is_err(),
            "stale"
        );
        assert!(f.snapshot("a", 5).is_ok());
        assert!(f.snapshot("a", 4).is_err());
    }
}
