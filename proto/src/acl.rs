//! Who an MQTT connection is, and which topics it may publish to and subscribe to: the one policy
//! with two ways in. The embedded broker's front end (`zedops-broker`) asks these rules about
//! every PUBLISH and every SUBSCRIBE filter before it reaches rumqttd (which has no ACLs of its
//! own); an external broker asks the API's authentication hook (`POST /api/v1/broker/acl`), which
//! asks the same rules. They follow the `zedops/v1` contract ([`crate::topics`]):
//!
//! | identity | may publish | may subscribe |
//! |---|---|---|
//! | trusted (the API, no-auth broker) | everything | everything |
//! | agent `A` | `agents/A/{status,containers,containers/+,events,stats,containers/+/set/result,actions/+/result}`, `replies/…`, and outside `zedops/` only its own Home Assistant discovery configs (`…/zedops_A/{object}/config`) | `agents/A/…`, `fleet/resync`, topics outside `zedops/` (also as `$share/…`) |
//! | MQTT user | `agents/+/req/+` (requests; signatures still apply), `agents/+/containers/+/set` and `agents/+/actions/+/run` only with Home Assistant command rights, topics outside `zedops/`, agents' discovery configs only with Home Assistant command rights | everything except `$share/…` groups under `zedops/` |
//!
//! An agent's discovery configs are `{prefix}/{platform}/zedops_{agent}/{object}/config`
//! ([`crate::topics::HA_NODE_PREFIX`]) whatever the discovery prefix, so the rule needs no
//! setting. A forged config could point Home Assistant's switch for one container at another
//! agent's command topic, and Home Assistant holds command rights: so no other agent, and no MQTT
//! user without those rights itself, may write them. A user with them may (to clear the configs
//! of an agent that no longer runs with `--ha`: docs/home-assistant.md).

use crate::topics::ROOT;

/// Who a connection authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Everything is allowed: the API's own identity, the start-up probe, or any client of a
    /// broker without authentication.
    Trusted,
    /// An enrolled agent, by name.
    Agent(String),
    /// An integration user (`zedops mqtt-user add`). `ha_commands`: may publish Home Assistant
    /// `…/set` commands.
    User { name: String, ha_commands: bool },
}

impl Identity {
    /// A short label for logs.
    pub fn label(&self) -> String {
        match self {
            Identity::Trusted => "trusted".into(),
            Identity::Agent(a) => format!("agent {a}"),
            Identity::User { name, .. } => format!("user {name}"),
        }
    }

    /// May this identity publish to `topic`?
    pub fn may_publish(&self, topic: &str) -> bool {
        let Some(rest) = zedops_rest(topic) else {
            // Outside zedops' namespace: Home Assistant's discovery and birth topics, and
            // whatever else an integration uses.
            if topic.starts_with("zedops/") {
                return false;
            }
            return match self {
                Identity::Trusted => true,
                Identity::Agent(me) => ha_config_node(topic) == Some(me.as_str()),
                Identity::User { ha_commands, .. } => {
                    *ha_commands || ha_config_node(topic).is_none()
                }
            };
        };
        match self {
            Identity::Trusted => true,
            Identity::Agent(me) => agent_may_publish(me, &rest),
            Identity::User { ha_commands, .. } => match rest.as_slice() {
                ["agents", _, "req", _] => true,
                ["agents", _, "containers", _, "set"] => *ha_commands,
                ["agents", _, "actions", _, "run"] => *ha_commands,
                _ => false,
            },
        }
    }

    /// May this identity subscribe to `filter` (possibly `$share/{group}/…`)?
    pub fn may_subscribe(&self, filter: &str) -> bool {
        let (shared, plain) = match filter.strip_prefix("$share/") {
            Some(rest) => match rest.split_once('/') {
                Some((_, f)) => (true, f),
                None => return false,
            },
            None => (false, filter),
        };
        match self {
            Identity::Trusted => true,
            Identity::User { .. } => !(shared && reaches_zedops(plain)),
            Identity::Agent(me) => {
                if !reaches_zedops(plain) {
                    return true;
                }
                let own = format!("{ROOT}/agents/{me}/");
                plain.starts_with(&own) || plain == crate::topics::RESYNC
            }
        }
    }
}

fn agent_may_publish(me: &str, rest: &[&str]) -> bool {
    match rest {
        ["replies", ..] => true,
        ["agents", a, "status" | "containers" | "events" | "stats"] => a == &me,
        ["agents", a, "containers", _] => a == &me,
        ["agents", a, "containers", _, "set", "result"] => a == &me,
        ["agents", a, "actions", _, "result"] => a == &me,
        _ => false,
    }
}

/// The agent whose Home Assistant discovery config `topic` is (`…/zedops_{agent}/{object}/config`,
/// the node level third from the end whatever the prefix), or `None` for any other topic.
fn ha_config_node(topic: &str) -> Option<&str> {
    let levels: Vec<&str> = topic.split('/').collect();
    match levels.as_slice() {
        [_, .., node, _object, "config"] => node.strip_prefix(crate::topics::HA_NODE_PREFIX),
        _ => None,
    }
}

/// The levels after `zedops/v1/`, or `None` when the topic is outside that namespace.
fn zedops_rest(topic: &str) -> Option<Vec<&str>> {
    let rest = topic.strip_prefix(ROOT)?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    Some(rest.strip_prefix('/')?.split('/').collect())
}

/// Whether a subscription filter can match any topic under `zedops/`.
fn reaches_zedops(filter: &str) -> bool {
    let first = filter.split('/').next().unwrap_or_default();
    matches!(first, "zedops" | "+" | "#")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> Identity {
        Identity::Agent("maestro".into())
    }

    fn user(ha: bool) -> Identity {
        Identity::User {
            name: "ha".into(),
            ha_commands: ha,
        }
    }

    #[test]
    fn agents_publish_only_their_own_state_and_replies() {
        let a = agent();
        for ok in [
            "zedops/v1/agents/maestro/status",
            "zedops/v1/agents/maestro/containers",
            "zedops/v1/agents/maestro/containers/web",
            "zedops/v1/agents/maestro/containers/web/set/result",
            "zedops/v1/agents/maestro/events",
            "zedops/v1/agents/maestro/stats",
            "zedops/v1/replies/zedops-api-1",
            "homeassistant/switch/zedops_maestro/web_0a1b2c3d/config",
            "ha/discovery/button/zedops_maestro/web_0a1b2c3d_restart/config",
        ] {
            assert!(a.may_publish(ok), "{ok}");
        }
        for no in [
            "zedops/v1/agents/other/status",
            "zedops/v1/agents/other/stats",
            "zedops/v1/agents/other/containers/web",
            "zedops/v1/agents/maestro/req/container.stop",
            "zedops/v1/agents/maestro/containers/web/set",
            "zedops/v1/fleet/resync",
            "zedops/v1",
            "zedops/v2/x",
            // Another agent's discovery, and topics outside zedops' that are no discovery of its own.
            "homeassistant/switch/zedops_other/web_0a1b2c3d/config",
            "homeassistant/switch/zedops_maestro2/web_0a1b2c3d/config",
            "homeassistant/switch/x/config",
            "homeassistant/status",
            "zedops_maestro/x/config",
            "anything/else",
        ] {
            assert!(!a.may_publish(no), "{no}");
        }
    }

    #[test]
    fn users_send_requests_and_set_commands_only_with_rights() {
        assert!(user(false).may_publish("zedops/v1/agents/maestro/req/ping"));
        assert!(!user(false).may_publish("zedops/v1/agents/maestro/containers/web/set"));
        assert!(user(true).may_publish("zedops/v1/agents/maestro/containers/web/set"));
        assert!(!user(false).may_publish("zedops/v1/agents/maestro/actions/save/run"));
        assert!(user(true).may_publish("zedops/v1/agents/maestro/actions/save/run"));
        assert!(!user(true).may_publish("zedops/v1/agents/maestro/actions/save/result"));
        assert!(agent().may_publish("zedops/v1/agents/maestro/actions/save/result"));
        assert!(!agent().may_publish("zedops/v1/agents/other/actions/save/result"));
        assert!(!agent().may_publish("zedops/v1/agents/maestro/actions/save/run"));
        assert!(user(true).may_publish("homeassistant/status"));
        assert!(user(false).may_publish("homeassistant/switch/x/config"));
        assert!(user(false).may_publish("home/lights/kitchen"));
        // Only a user with command rights writes an agent's discovery configs (Home Assistant,
        // which has them, would obey a forged one).
        assert!(!user(false).may_publish("homeassistant/switch/zedops_maestro/web_0a1b2c3d/config"));
        assert!(!user(false).may_publish("ha/x/button/zedops_a/action_save_1/config"));
        assert!(user(true).may_publish("homeassistant/switch/zedops_maestro/web_0a1b2c3d/config"));
        assert!(Identity::Trusted.may_publish("homeassistant/switch/zedops_maestro/w/config"));
        for no in [
            "zedops/v1/agents/maestro/status",
            "zedops/v1/agents/maestro/containers",
            "zedops/v1/agents/maestro/events",
            "zedops/v1/fleet/resync",
            "zedops/v1/replies/zedops-api-1",
        ] {
            assert!(!user(true).may_publish(no), "{no}");
        }
    }

    #[test]
    fn subscriptions() {
        let a = agent();
        assert!(a.may_subscribe("$share/g-req/zedops/v1/agents/maestro/req/+"));
        assert!(a.may_subscribe("$share/g-resync/zedops/v1/fleet/resync"));
        assert!(a.may_subscribe("zedops/v1/agents/maestro/containers/+/set"));
        assert!(a.may_subscribe("homeassistant/status"));
        assert!(!a.may_subscribe("$share/g/zedops/v1/agents/other/req/+"));
        assert!(!a.may_subscribe("zedops/v1/replies/#"));
        assert!(!a.may_subscribe("#"));
        assert!(!a.may_subscribe("+/v1/agents/other/req/+"));
        assert!(!a.may_subscribe("$share/nofilter"));
        let u = user(false);
        assert!(u.may_subscribe("#"));
        assert!(u.may_subscribe("zedops/v1/agents/+/status"));
        assert!(!u.may_subscribe("$share/g/zedops/v1/agents/maestro/req/+"));
        assert!(!u.may_subscribe("$share/g/#"));
        assert!(u.may_subscribe("$share/g/homeassistant/status"));
    }
}
