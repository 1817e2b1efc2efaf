//! The `fleet/resync` payload (`docs/protocol.md` § Topics). Empty: every agent republishes its
//! status and snapshot. `{"agents": ["a", "b"]}`: only the agents named do — the API filling the
//! gaps a busy broker left (dropped QoS 0 copies) asks just the agents whose state is incomplete,
//! so one round's losses do not cost another blast from the whole fleet, which a busy broker
//! would drop again.

use serde::{Deserialize, Serialize};

/// Most agents one targeted resync names; a larger gap asks the whole fleet (an empty payload).
pub const MAX_NAMED: usize = 1000;

#[derive(Debug, Serialize, Deserialize)]
struct Targeted {
    agents: Vec<String>,
}

/// The payload asking `agents` to republish: empty (everyone) when there are none or more than
/// [`MAX_NAMED`].
pub fn payload(agents: &[String]) -> Vec<u8> {
    if agents.is_empty() || agents.len() > MAX_NAMED {
        return Vec::new();
    }
    let t = Targeted {
        agents: agents.to_vec(),
    };
    serde_json::to_vec(&t).unwrap_or_default()
}

/// Whether a resync with `payload` asks `agent` to republish. An empty payload asks everyone;
/// so does one this version cannot read (only the API may publish here: `crate::acl`), so that
/// nothing newer leaves an agent stale.
pub fn asks(payload: &[u8], agent: &str) -> bool {
    if payload.is_empty() {
        return true;
    }
    match serde_json::from_slice::<Targeted>(payload) {
        Ok(t) => t.agents.iter().any(|a| a == agent),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_targeted_resync_asks_only_the_agents_it_names() {
        let p = payload(&["a".to_owned(), "b".to_owned()]);
        assert!(asks(&p, "a") && asks(&p, "b") && !asks(&p, "c"));
    }

    #[test]
    fn empty_too_many_or_unreadable_asks_everyone() {
        assert!(payload(&[]).is_empty() && asks(&[], "x"));
        let many: Vec<String> = (0..=MAX_NAMED).map(|i| format!("a{i}")).collect();
        assert!(payload(&many).is_empty());
        assert!(asks(b"{not json", "x") && asks(br#"{"v":2}"#, "x"));
    }
}
