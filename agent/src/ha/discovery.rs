//! Home Assistant discovery: topics, ids and the config of each entity. Pure, so unit-tested.

use super::*;

/// One of the entities of a container: three always, two more with `--ha-stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    /// `switch`: running ⇄ start/stop.
    Switch,
    /// `button`: restart.
    Restart,
    /// `sensor`: Docker's state.
    State,
    /// `sensor`: CPU % (100 = one core), from the agent's stats topic.
    Cpu,
    /// `sensor`: memory used, MiB, from the agent's stats topic.
    Memory,
}

impl Entity {
    pub const ALL: [Entity; 3] = [Entity::Switch, Entity::Restart, Entity::State];
    /// The sensors of `--ha-stats`.
    pub const USAGE: [Entity; 2] = [Entity::Cpu, Entity::Memory];

    /// Home Assistant's platform (the discovery topic's component level).
    pub fn platform(self) -> &'static str {
        match self {
            Self::Switch => "switch",
            Self::Restart => "button",
            Self::State | Self::Cpu | Self::Memory => "sensor",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Self::Switch => "switch",
            Self::Restart => "restart",
            Self::State => "state",
            Self::Cpu => "cpu",
            Self::Memory => "memory",
        }
    }

    /// The object ID's suffix: none for the first three (their topics predate the sensors and
    /// must not change), the kind for the sensors, which share the `sensor` platform with State.
    fn suffix(self) -> &'static str {
        match self {
            Self::Cpu => "_cpu",
            Self::Memory => "_memory",
            _ => "",
        }
    }
}

/// Keeps `[a-zA-Z0-9_-]`, replaces anything else with `_` (Home Assistant's rule for discovery
/// topic levels and the character set of our unique IDs).
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// 32-bit FNV-1a: stable across versions and platforms (unique IDs must never change).
pub(super) fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The discovery topic's node level: one per agent.
pub fn node_id(agent: &str) -> String {
    format!(
        "{}{}",
        zedops_proto::topics::HA_NODE_PREFIX,
        sanitize(agent)
    )
}

/// The container's part of object and unique IDs: its sanitized name plus a hash of the exact
/// agent and container names, so that names that sanitize alike (`a.b`, `a_b`) or that split
/// differently between agent and container (`home`+`nas_web`, `home_nas`+`web`) never collide.
pub fn object_id(agent: &str, container: &str) -> String {
    let h = fnv1a32(format!("{agent}/{container}").as_bytes());
    format!("{}_{h:08x}", sanitize(container))
}

/// `zedops_{agent}_{container}_{hash}_{switch|restart|state}`.
pub fn unique_id(agent: &str, container: &str, e: Entity) -> String {
    format!(
        "zedops_{}_{}_{}",
        sanitize(agent),
        object_id(agent, container),
        e.kind()
    )
}

/// `{prefix}/{platform}/zedops_{agent}/{object_id}/config`.
pub fn discovery_topic(prefix: &str, agent: &str, container: &str, e: Entity) -> String {
    format!(
        "{prefix}/{}/{}/{}{}/config",
        e.platform(),
        node_id(agent),
        object_id(agent, container),
        e.suffix()
    )
}

/// A value of `container` in the agent's stats: `field` of its row, through `scale`, or `None`
/// (Home Assistant's unknown) when the container is not in the snapshot. Container names are
/// `[a-zA-Z0-9_.-]`, safe inside the quotes.
fn usage_template(container: &str, field: &str, scale: &str) -> String {
    format!(
        "{{% set s = (value_json.stats | default([]) | selectattr('name', 'equalto', '{container}') | list) %}}{{{{ ((s[0].{field}{scale}) | round(1)) if s else 'None' }}}}"
    )
}

/// Available while the agent is online and reaches Docker (its status topic).
const AVAILABILITY_TEMPLATE: &str = "{{ 'online' if value_json is defined and value_json.state == 'online' and value_json.docker.state == 'available' else 'offline' }}";
/// The per-container topic's `state` is Docker's; only `running` is ON.
const SWITCH_TEMPLATE: &str =
    "{{ 'ON' if value_json is defined and value_json.state == 'running' else 'OFF' }}";
const SENSOR_TEMPLATE: &str = "{{ value_json.state if value_json is defined and value_json.state is defined else 'unknown' }}";
const ATTRIBUTES_TEMPLATE: &str = "{{ {'id': value_json.short_id, 'image': value_json.image, 'status': value_json.status, 'health': value_json.health, 'created_at': value_json.created_at} | tojson if value_json is defined and value_json.state is defined else '{}' }}";
/// Every value the sensor's template can render (Docker's states and `unknown`).
const STATES: [&str; 8] = [
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
    "exited",
    "dead",
    "unknown",
];

/// What every entity's config has: its unique id, availability (the agent's status), the
/// agent's device and the origin.
pub fn common(agent: &str, unique_id: &str) -> Value {
    json!({
        "unique_id": unique_id,
        "availability": [{
            "topic": topics::status(agent),
            "value_template": AVAILABILITY_TEMPLATE,
            "payload_available": "online",
            "payload_not_available": "offline",
        }],
        "device": {
            "identifiers": [node_id(agent)],
            "name": agent,
            "manufacturer": "zedops",
            "model": "Docker host",
            "sw_version": zedops_proto::VERSION,
        },
        "o": {
            "name": "zedops",
            "sw": zedops_proto::VERSION,
            "url": SUPPORT_URL,
        },
    })
}

/// The discovery config of one entity of one container.
pub fn discovery_config(agent: &str, container: &str, e: Entity) -> Value {
    let state_topic = topics::container(agent, container);
    let command_topic = topics::container_set(agent, container);
    let mut cfg = common(agent, &unique_id(agent, container, e));
    let specific = match e {
        Entity::Switch => json!({
            "name": container,
            "icon": "mdi:docker",
            "command_topic": command_topic,
            "payload_on": Action::Start.as_str(),
            "payload_off": Action::Stop.as_str(),
            "state_topic": state_topic,
            "value_template": SWITCH_TEMPLATE,
            "state_on": "ON",
            "state_off": "OFF",
        }),
        Entity::Restart => json!({
            "name": format!("{container} restart"),
            "device_class": "restart",
            "command_topic": command_topic,
            "payload_press": Action::Restart.as_str(),
        }),
        Entity::State => json!({
            "name": format!("{container} state"),
            "icon": "mdi:docker",
            "device_class": "enum",
            "options": STATES,
            "state_topic": state_topic,
            "value_template": SENSOR_TEMPLATE,
            "json_attributes_topic": topics::container(agent, container),
            "json_attributes_template": ATTRIBUTES_TEMPLATE,
        }),
        Entity::Cpu => json!({
            "name": format!("{container} CPU"),
            "icon": "mdi:chip",
            "state_topic": topics::stats(agent),
            "value_template": usage_template(container, "cpu_percent", ""),
            "unit_of_measurement": "%",
            "state_class": "measurement",
        }),
        Entity::Memory => json!({
            "name": format!("{container} memory"),
            "icon": "mdi:memory",
            "device_class": "data_size",
            "state_topic": topics::stats(agent),
            "value_template": usage_template(container, "memory_usage", " / 1048576"),
            "unit_of_measurement": "MiB",
            "state_class": "measurement",
        }),
    };
    if let (Some(map), Value::Object(extra)) = (cfg.as_object_mut(), specific) {
        map.extend(extra);
    }
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sanitized_and_unique() {
        let u = unique_id("maestro", "web.1", Entity::Switch);
        assert!(u.starts_with("zedops_maestro_web_1_"), "{u}");
        assert!(u.ends_with("_switch"));
        assert!(u
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        // Same container name on two agents; names that sanitize alike; agent/container splits.
        let ids: HashSet<String> = [
            ("maestro", "web-1"),
            ("other", "web-1"),
            ("maestro", "web.1"),
            ("maestro", "web_1"),
            ("home", "nas_web"),
            ("home_nas", "web"),
        ]
        .iter()
        .flat_map(|(a, c)| Entity::ALL.map(|e| unique_id(a, c, e)))
        .collect();
        assert_eq!(ids.len(), 18);
        // Stable: unique IDs must never change between versions.
        assert_eq!(object_id("maestro", "web-1"), object_id("maestro", "web-1"));
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(
            discovery_topic("homeassistant", "maestro", "web-1", Entity::Restart),
            format!(
                "homeassistant/button/zedops_maestro/{}/config",
                object_id("maestro", "web-1")
            )
        );
    }

    #[test]
    fn configs_have_what_each_platform_requires() {
        for e in Entity::ALL {
            let c = discovery_config("maestro", "web-1", e);
            assert!(c["unique_id"].is_string());
            assert_eq!(c["device"]["identifiers"][0], "zedops_maestro");
            assert_eq!(c["device"]["manufacturer"], "zedops");
            assert_eq!(c["o"]["name"], "zedops");
            assert_eq!(
                c["availability"][0]["topic"],
                "zedops/v1/agents/maestro/status"
            );
            match e {
                Entity::Switch => {
                    assert_eq!(
                        c["command_topic"],
                        "zedops/v1/agents/maestro/containers/web-1/set"
                    );
                    assert_eq!(
                        c["state_topic"],
                        "zedops/v1/agents/maestro/containers/web-1"
                    );
                    assert_eq!(c["payload_on"], "start");
                    assert_eq!(c["payload_off"], "stop");
                }
                Entity::Restart => assert_eq!(c["payload_press"], "restart"),
                Entity::State | Entity::Cpu | Entity::Memory => {
                    assert!(c["state_topic"].is_string())
                }
            }
        }
    }
}
