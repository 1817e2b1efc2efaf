//! The request and response bodies of the endpoints: the types live in `zedops_proto::http`, shared
//! with the Rust client; this module builds them from the fleet cache.

pub use zedops_proto::http::*;
use zedops_proto::{AgentState, Counts};

use crate::cache::{AgentEntry, Change};

impl From<&AgentEntry> for AgentInfo {
    fn from(e: &AgentEntry) -> Self {
        let s = e.status.as_ref();
        AgentInfo {
            name: e.name.clone(),
            online: e.online(),
            state: s.map(|s| s.state).unwrap_or(AgentState::Offline),
            hostname: s.map(|s| s.hostname.clone()),
            version: s.map(|s| s.version.clone()),
            docker: s.map(|s| s.docker.clone()),
            counts: e
                .snapshot
                .as_ref()
                .map(|sn| Counts::of(&sn.containers))
                .or_else(|| s.map(|s| s.counts))
                .unwrap_or_default(),
            started_at: s.map(|s| s.started_at),
            last_seen: e.last_seen,
            snapshot_at: e.snapshot.as_ref().map(|sn| sn.taken_at),
        }
    }
}

/// The live event of a change in the fleet cache.
pub(crate) fn event_of(c: Change) -> FleetEvent {
    match c {
        Change::AgentOnline(a) => FleetEvent {
            state: Some("online".into()),
            ..FleetEvent::new(EventKind::Agent, a)
        },
        Change::AgentOffline(a) => FleetEvent {
            state: Some("offline".into()),
            ..FleetEvent::new(EventKind::Agent, a)
        },
        Change::Container(ev) => FleetEvent {
            time: ev.time,
            state: Some(
                ev.state
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_else(|| "removed".into()),
            ),
            container: Some(ev.name),
            container_id: Some(ev.id),
            action: Some(ev.action),
            ..FleetEvent::new(EventKind::Container, ev.agent)
        },
    }
}
