//! Every MQTT topic of the `zedops/v1` contract, built and parsed in one place.
//!
//! | topic | retained |
//! |---|---|
//! | `zedops/v1/agents/{agent}/status` | yes |
//! | `zedops/v1/agents/{agent}/containers` | yes |
//! | `zedops/v1/agents/{agent}/containers/{name}` | yes |
//! | `zedops/v1/agents/{agent}/containers/{name}/set` | no |
//! | `zedops/v1/agents/{agent}/containers/{name}/set/result` | no |
//! | `zedops/v1/agents/{agent}/actions/{action}/run` | no |
//! | `zedops/v1/agents/{agent}/actions/{action}/result` | yes |
//! | `zedops/v1/agents/{agent}/events` | no |
//! | `zedops/v1/agents/{agent}/req/{op}` | no |
//! | `zedops/v1/replies/{client-id}` | no |
//! | `zedops/v1/fleet/resync` | no |

/// Root of every zedops topic.
pub const ROOT: &str = "zedops/v1";
/// The start of an agent's node level in its Home Assistant discovery topics,
/// `{prefix}/{platform}/zedops_{agent}/{object}/config` (agent names need no escaping there:
/// `[a-z0-9][a-z0-9_-]*`). The broker's ACLs let only that agent write them ([`crate::acl`]).
pub const HA_NODE_PREFIX: &str = "zedops_";
/// Broadcast: every agent republishes status and snapshot after a random delay (≤ 1 s).
pub const RESYNC: &str = "zedops/v1/fleet/resync";
/// Every agent's status (subscription filter).
pub const ALL_STATUS: &str = "zedops/v1/agents/+/status";
/// Every agent's snapshot (subscription filter).
pub const ALL_SNAPSHOTS: &str = "zedops/v1/agents/+/containers";
/// Every agent's events (subscription filter).
pub const ALL_EVENTS: &str = "zedops/v1/agents/+/events";
/// Every agent's resource use, for agents that publish it (`--ha-stats`; subscription filter).
pub const ALL_STATS: &str = "zedops/v1/agents/+/stats";
/// Every agent's per-container topics (subscription filter; not the `/set` topics).
pub const ALL_CONTAINER_TOPICS: &str = "zedops/v1/agents/+/containers/+";

pub fn status(agent: &str) -> String {
    format!("{ROOT}/agents/{agent}/status")
}

pub fn snapshot(agent: &str) -> String {
    format!("{ROOT}/agents/{agent}/containers")
}

pub fn container(agent: &str, name: &str) -> String {
    format!("{ROOT}/agents/{agent}/containers/{name}")
}

/// Filter matching every per-container topic of one agent (not the `/set` topics).
pub fn containers_of(agent: &str) -> String {
    format!("{ROOT}/agents/{agent}/containers/+")
}

pub fn container_set(agent: &str, name: &str) -> String {
    format!("{ROOT}/agents/{agent}/containers/{name}/set")
}

/// Where the agent publishes the outcome of a `/set` command (not retained): a
/// [`Reply`](crate::Reply), e.g. `forbidden` for a protected container.
pub fn container_set_result(agent: &str, name: &str) -> String {
    format!("{ROOT}/agents/{agent}/containers/{name}/set/result")
}

/// Filter matching every `/set` command topic of one agent.
pub fn container_sets_of(agent: &str) -> String {
    format!("{ROOT}/agents/{agent}/containers/+/set")
}

/// Home Assistant's button of an operator-defined action publishes here (any payload).
pub fn action_run(agent: &str, action: &str) -> String {
    format!("{ROOT}/agents/{agent}/actions/{action}/run")
}

/// Filter matching every action button topic of one agent.
pub fn action_runs_of(agent: &str) -> String {
    format!("{ROOT}/agents/{agent}/actions/+/run")
}

/// The last result of an action run from its button (retained; Home Assistant's sensor).
pub fn action_result(agent: &str, action: &str) -> String {
    format!("{ROOT}/agents/{agent}/actions/{action}/result")
}

pub fn events(agent: &str) -> String {
    format!("{ROOT}/agents/{agent}/events")
}

/// The resource use of `agent`'s running containers, every interval (not retained).
pub fn stats(agent: &str) -> String {
    format!("{ROOT}/agents/{agent}/stats")
}

pub fn request(agent: &str, op: &str) -> String {
    format!("{ROOT}/agents/{agent}/req/{op}")
}

/// Filter matching every request topic of one agent.
pub fn requests_of(agent: &str) -> String {
    format!("{ROOT}/agents/{agent}/req/+")
}

/// An MQTT 5 shared subscription: `$share/{group}/{filter}`. The broker delivers each message
/// to one member of the group and sends no retained messages on subscribe.
pub fn shared(group: &str, filter: &str) -> String {
    format!("$share/{group}/{filter}")
}

/// What an agent subscribes to for requests and the fleet resync, each through a
/// shared-subscription group only it uses (`group` is random per agent process; no `/`, `+`, `#`).
///
/// Neither topic is ever retained, so the agent loses nothing when the broker skips retained
/// messages for these subscriptions, and a broker that scans every retained message on each new
/// subscription (rumqttd 0.20) does not do that once per agent (docs/benchmarks.md §6). Each
/// filter gets a group name of its own: rumqttd keys a group's read position by its name alone.
pub fn agent_subscriptions(group: &str, agent: &str) -> [String; 2] {
    [
        shared(&format!("{group}-req"), &requests_of(agent)),
        shared(&format!("{group}-resync"), RESYNC),
    ]
}

/// The conventional response topic of a requester.
pub fn replies(client_id: &str) -> String {
    format!("{ROOT}/replies/{client_id}")
}

/// A parsed zedops topic. Unknown shapes parse to `None`, never panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic<'a> {
    Status { agent: &'a str },
    Snapshot { agent: &'a str },
    Container { agent: &'a str, name: &'a str },
    ContainerSet { agent: &'a str, name: &'a str },
    ActionRun { agent: &'a str, action: &'a str },
    Events { agent: &'a str },
    Stats { agent: &'a str },
    Request { agent: &'a str, op: &'a str },
    Reply { client_id: &'a str },
    Resync,
}

pub fn parse(topic: &str) -> Option<Topic<'_>> {
    let rest = topic.strip_prefix(ROOT)?.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    // An agent segment that is no valid agent name is no zedops topic: nothing downstream (a
    // database lookup, a cache entry, a log line) ever sees it (issue 14, item 10).
    if let ["agents", agent, ..] = parts.as_slice() {
        if !crate::names::is_valid_agent_name(agent) {
            return None;
        }
    }
    Some(match parts.as_slice() {
        ["agents", agent, "status"] => Topic::Status { agent },
        ["agents", agent, "containers"] => Topic::Snapshot { agent },
        ["agents", agent, "containers", name] => Topic::Container { agent, name },
        ["agents", agent, "containers", name, "set"] => Topic::ContainerSet { agent, name },
        ["agents", agent, "actions", action, "run"] => Topic::ActionRun { agent, action },
        ["agents", agent, "events"] => Topic::Events { agent },
        ["agents", agent, "stats"] => Topic::Stats { agent },
        ["agents", agent, "req", op] => Topic::Request { agent, op },
        ["replies", client_id] => Topic::Reply { client_id },
        ["fleet", "resync"] => Topic::Resync,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(parse(&status("m")), Some(Topic::Status { agent: "m" }));
        assert_eq!(parse(&snapshot("m")), Some(Topic::Snapshot { agent: "m" }));
        assert_eq!(parse(&stats("m")), Some(Topic::Stats { agent: "m" }));
        assert_eq!(
            parse(&container("m", "web-1")),
            Some(Topic::Container {
                agent: "m",
                name: "web-1"
            })
        );
        assert_eq!(
            parse(&container_set("m", "web-1")),
            Some(Topic::ContainerSet {
                agent: "m",
                name: "web-1"
            })
        );
        assert_eq!(parse(&events("m")), Some(Topic::Events { agent: "m" }));
        assert_eq!(
            parse(&action_run("m", "save")),
            Some(Topic::ActionRun {
                agent: "m",
                action: "save"
            })
        );
        assert_eq!(
            parse(&request("m", "ping")),
            Some(Topic::Request {
                agent: "m",
                op: "ping"
            })
        );
        assert_eq!(
            parse(&replies("c1")),
            Some(Topic::Reply { client_id: "c1" })
        );
        assert_eq!(parse(RESYNC), Some(Topic::Resync));
    }

    #[test]
    fn junk_is_none() {
        for t in [
            "",
            "zedops",
            "zedops/v1",
            "zedops/v1/agents//status",
            "zedops/v2/agents/m/status",
            "zedops/v1/agents/m/x",
            "zedops/v1/agents/Bad Name/status",
            "zedops/v1/agents/a\nb/status",
            "zedops/v1/agents/-x/containers",
        ] {
            assert_eq!(parse(t), None, "{t}");
        }
    }
}
