//! What Docker's events mean for the published state: which events change `docker ps -a`, what
//! state an action leaves a container in, and whether a list taken after an event still lags it.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use zedops_proto::{ContainerEvent, ContainerState};

/// A list taken right after an event that still shows a state the event says is over.
pub(crate) const RECHECK: Duration = Duration::from_millis(30);
pub(crate) const MAX_RECHECKS: u32 = 3;

/// True when the last event of some container says it stopped running, started or paused, but
/// `current` still shows it the old way.
pub(crate) fn lags_behind(
    events: &[bollard::models::EventMessage],
    current: Option<&[zedops_proto::Container]>,
) -> bool {
    let Some(list) = current else { return false };
    let mut last: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for ev in events {
        if let (Some(id), Some(action)) = (
            ev.actor.as_ref().and_then(|a| a.id.as_deref()),
            ev.action.as_deref(),
        ) {
            last.insert(id, action);
        }
    }
    last.iter().any(|(id, action)| {
        let Some(c) = list.iter().find(|c| c.id == *id) else {
            return false;
        };
        match state_after(action) {
            Some(ContainerState::Running) => c.state != ContainerState::Running,
            Some(ContainerState::Paused) => c.state != ContainerState::Paused,
            Some(ContainerState::Exited) => c.state == ContainerState::Running,
            _ => false,
        }
    })
}

/// The state a Docker lifecycle action leaves a container in, when it says.
pub(crate) fn state_after(action: &str) -> Option<ContainerState> {
    match action {
        "start" | "unpause" | "restart" => Some(ContainerState::Running),
        "pause" => Some(ContainerState::Paused),
        "die" | "stop" => Some(ContainerState::Exited),
        "create" => Some(ContainerState::Created),
        _ => None,
    }
}

pub(crate) fn container_event(
    agent: &str,
    ev: &bollard::models::EventMessage,
    current: Option<&[zedops_proto::Container]>,
) -> Option<ContainerEvent> {
    let action = ev.action.clone()?;
    let actor = ev.actor.as_ref()?;
    let id = actor.id.clone()?;
    let name = actor
        .attributes
        .as_ref()
        .and_then(|a| a.get("name").cloned())
        .unwrap_or_else(|| id.chars().take(12).collect());
    let state = if action == "destroy" {
        None
    } else {
        current
            .and_then(|list| list.iter().find(|c| c.id == id))
            .map(|c| c.state)
            .or_else(|| state_after(&action))
    };
    let time = ev
        .time_nano
        .map(|n| Utc.timestamp_nanos(n))
        .or_else(|| ev.time.and_then(|t| Utc.timestamp_opt(t, 0).single()))
        .unwrap_or_else(Utc::now);
    Some(ContainerEvent {
        agent: agent.to_owned(),
        id,
        name,
        action,
        state,
        time,
    })
}

/// Docker events that change what `docker ps -a` shows. `exec_*`, `attach`, `top`… do not.
pub(crate) fn is_lifecycle(action: &str) -> bool {
    !(action.starts_with("exec_")
        || matches!(
            action,
            "attach"
                | "detach"
                | "resize"
                | "top"
                | "copy"
                | "archive-path"
                | "extract-to-dir"
                | "export"
                | "commit"
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_that_lags_an_event_is_noticed() {
        let row = |id: &str, state: &str| -> zedops_proto::Container {
            serde_json::from_value(serde_json::json!({
                "id": id, "short_id": id, "name": id, "image": "i", "image_id": "sha256:1",
                "command": "sh", "state": state, "status": "", "health": null,
                "created_at": "2026-01-10T02:25:00Z", "ports": [], "labels": {}
            }))
            .unwrap()
        };
        let ev = |id: &str, action: &str| bollard::models::EventMessage {
            action: Some(action.into()),
            actor: Some(bollard::models::EventActor {
                id: Some(id.into()),
                attributes: None,
            }),
            ..Default::default()
        };
        let running = [row("a", "running")];
        let exited = [row("a", "exited")];
        assert!(lags_behind(&[ev("a", "die")], Some(&running)));
        assert!(!lags_behind(&[ev("a", "die")], Some(&exited)));
        // Only the last event of a container counts: die then start is a restart.
        assert!(!lags_behind(
            &[ev("a", "die"), ev("a", "start")],
            Some(&running)
        ));
        assert!(lags_behind(&[ev("a", "start")], Some(&exited)));
        // Unknown containers and no list are not a lag.
        assert!(!lags_behind(&[ev("b", "die")], Some(&running)));
        assert!(!lags_behind(&[ev("a", "die")], None));
    }

    #[test]
    fn lifecycle_filter() {
        assert!(is_lifecycle("start"));
        assert!(is_lifecycle("health_status: healthy"));
        assert!(!is_lifecycle("exec_start: sh"));
        assert!(!is_lifecycle("attach"));
    }
}
