//! Home Assistant integration through MQTT discovery (`docs/home-assistant.md`). Opt-in per agent
//! (`--ha`).
//!
//! Per container not labelled `zedops.ha=false`, three entities, each with its own retained
//! discovery config (per-entity discovery, which every Home Assistant version understands):
//!
//! | platform | entity | state | command |
//! |---|---|---|---|
//! | `switch` | running ⇄ stopped | the per-container topic, `state == running` → `ON` | `start` / `stop` on `…/containers/{name}/set` |
//! | `button` | restart | — | `restart` on the same `/set` topic |
//! | `sensor` | Docker's state (`running`, `exited`, …) | the per-container topic | — |
//!
//! Discovery topic: `{prefix}/{platform}/zedops_{agent}/{object_id}/config` (the optional
//! `node_id` level of Home Assistant's scheme is `zedops_{agent}`, so one agent's configs are one
//! exact subscription filter and leftovers of an earlier run can be found and removed). All the
//! agent's entities belong to one device per agent, whose availability is the agent's retained
//! status topic (its Last Will says `offline`); an agent that lost Docker is unavailable too.
//!
//! Commands on `…/containers/{name}/set` (`start`, `stop`, `restart`, case-insensitive) run
//! through [`handlers::act`], the code path of API requests. Anything else is ignored. Containers
//! labelled `zedops.protect=true` take no command from Home Assistant, and the agent's own
//! container is never stopped or restarted from it. Each command's outcome is published (not retained) as a
//! [`Reply`] on `…/containers/{name}/set/result` and logged as the audit record
//! (`source = "mqtt"`).

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;

use rumqttc::v5::mqttbytes::v5::Publish;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::AsyncClient;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};
use zedops_proto::ops::ActionResult;
use zedops_proto::{
    topics, Action, ActionRequest, Container, ContainerRef, ErrorBody, ErrorCode, Reply,
};

use crate::handlers::{Ctx, Registry};

/// Home Assistant's default discovery prefix.
pub const DEFAULT_DISCOVERY_PREFIX: &str = "homeassistant";
/// `zedops.ha=false` hides a container from Home Assistant.
pub const LABEL_HA: &str = "zedops.ha";
/// `zedops.protect=true`: Home Assistant may not start, stop or restart the container.
pub const LABEL_PROTECT: &str = "zedops.protect";
/// Longest command payload considered; longer ones are ignored unread.
pub const MAX_COMMAND_BYTES: usize = 64;
/// Commands executed at once; more are refused (visibly) until one finishes.
const MAX_INFLIGHT: usize = 8;
/// Leftover configs remembered while the container list is not known yet.
const MAX_SUSPECTS: usize = 4096;
/// The `origin` block's support URL (the workspace's `repository`).
const SUPPORT_URL: &str = "https://example.invalid/zedops";

/// What `--ha` configures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// Home Assistant's discovery prefix (default `homeassistant`); HA's birth message is expected
    /// on `{prefix}/status`.
    pub discovery_prefix: String,
    /// The agent's own container (name or ID prefix of ≥ 12 hex digits) when detection from
    /// `/proc/self/cgroup`, `/proc/self/mountinfo` and `HOSTNAME` cannot find it. `None`: detect.
    pub own_container: Option<String>,
}

impl Default for HaConfig {
    fn default() -> Self {
        Self {
            discovery_prefix: DEFAULT_DISCOVERY_PREFIX.to_owned(),
            own_container: None,
        }
    }
}

impl HaConfig {
    /// A configuration with this discovery prefix, validated.
    pub fn new(discovery_prefix: impl Into<String>) -> Result<Self, String> {
        let c = Self {
            discovery_prefix: discovery_prefix.into(),
            own_container: None,
        };
        c.validate()?;
        Ok(c)
    }

    /// The prefix must be a plain topic (one or more non-empty levels, no wildcards).
    pub fn validate(&self) -> Result<(), String> {
        let p = &self.discovery_prefix;
        let ok = !p.is_empty()
            && p.len() <= 200
            && !p.starts_with('$')
            && p.split('/').all(|l| !l.is_empty())
            && !p.contains(['+', '#', '\0'])
            && !p.chars().any(char::is_control);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "Home Assistant discovery prefix {p:?} is invalid: use topic levels without wildcards, e.g. homeassistant"
            ))
        }
    }
}

/// One of the three entities of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    /// `switch`: running ⇄ start/stop.
    Switch,
    /// `button`: restart.
    Restart,
    /// `sensor`: Docker's state.
    State,
}

impl Entity {
    pub const ALL: [Entity; 3] = [Entity::Switch, Entity::Restart, Entity::State];

    /// Home Assistant's platform (the discovery topic's component level).
    pub fn platform(self) -> &'static str {
        match self {
            Self::Switch => "switch",
            Self::Restart => "button",
            Self::State => "sensor",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Self::Switch => "switch",
            Self::Restart => "restart",
            Self::State => "state",
        }
    }
}

/// The actions Home Assistant (or any MQTT client) may send on `…/containers/{name}/set`: rows
/// of the action table (`zedops_proto::ACTIONS`).
pub const COMMANDS: [Action; 3] = [Action::Start, Action::Stop, Action::Restart];

/// Why a `/set` payload was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    TooLarge(usize),
    NotText,
    Unknown(String),
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge(n) => write!(
                f,
                "the payload is {n} bytes; commands are at most {MAX_COMMAND_BYTES}"
            ),
            Self::NotText => f.write_str("the payload is not UTF-8 text"),
            Self::Unknown(w) => write!(f, "{w:?} is not a command: use start, stop or restart"),
        }
    }
}

/// Parses a `/set` payload: `start`, `stop` or `restart`, trimmed, case-insensitive.
pub fn parse_command(payload: &[u8]) -> Result<Action, Ignored> {
    if payload.len() > MAX_COMMAND_BYTES {
        return Err(Ignored::TooLarge(payload.len()));
    }
    let text = std::str::from_utf8(payload).map_err(|_| Ignored::NotText)?;
    let word = text.trim();
    if word.chars().any(char::is_control) {
        return Err(Ignored::NotText);
    }
    let lower = word.to_ascii_lowercase();
    COMMANDS
        .into_iter()
        .find(|a| a.as_str() == lower)
        .ok_or_else(|| Ignored::Unknown(word.chars().take(32).collect()))
}

fn label_is(c: &Container, label: &str, values: &[&str]) -> bool {
    c.labels
        .get(label)
        .is_some_and(|v| values.iter().any(|x| v.trim().eq_ignore_ascii_case(x)))
}

/// False for containers labelled `zedops.ha=false` (or `0`, `no`, `off`).
pub fn is_exposed(c: &Container) -> bool {
    !label_is(c, LABEL_HA, &["false", "0", "no", "off"])
}

/// True for containers labelled `zedops.protect=true` (or `1`, `yes`, `on`).
pub fn is_protected(c: &Container) -> bool {
    label_is(c, LABEL_PROTECT, &["true", "1", "yes", "on"])
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
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The discovery topic's node level: one per agent.
pub fn node_id(agent: &str) -> String {
    format!("zedops_{}", sanitize(agent))
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
        "{prefix}/{}/{}/{}/config",
        e.platform(),
        node_id(agent),
        object_id(agent, container)
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

/// The discovery config of one entity of one container.
pub fn discovery_config(agent: &str, container: &str, e: Entity) -> Value {
    let state_topic = topics::container(agent, container);
    let command_topic = topics::container_set(agent, container);
    let mut cfg = json!({
        "unique_id": unique_id(agent, container, e),
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
    });
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
    };
    if let (Some(map), Value::Object(extra)) = (cfg.as_object_mut(), specific) {
        map.extend(extra);
    }
    cfg
}

/// The agent's own container, best effort: an agent must not let Home Assistant stop the
/// container it runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnContainer {
    /// Container ID prefixes (≥ 12 hex digits; full IDs from cgroup/mountinfo, the short ID from
    /// the host name).
    id_prefixes: Vec<String>,
    /// Configured name or ID prefix.
    configured: Option<String>,
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// 64-hex tokens of a path (`/docker/<id>`, `/system.slice/docker-<id>.scope`, …).
fn full_ids(path: &str) -> impl Iterator<Item = &str> {
    path.split(['/', '-', '.', ':'])
        .filter(|t| t.len() == 64 && is_hex(t))
}

impl OwnContainer {
    /// Detects from this process's `/proc/self/cgroup`, `/proc/self/mountinfo` and host name.
    pub fn detect(configured: Option<&str>) -> Self {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let hostname = std::env::var("HOSTNAME").ok().or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        });
        let mut own = Self::from_sources(&cgroup, &mountinfo, hostname.as_deref());
        own.configured = configured
            .map(|s| s.trim().trim_start_matches('/').to_owned())
            .filter(|s| !s.is_empty());
        own
    }

    /// Pure detection, for tests:
    /// - cgroup (v1, or v2 with the systemd driver): a 64-hex path component;
    /// - mountinfo: Docker bind-mounts `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf` from
    ///   `…/containers/<id>/…` into every container (other lines are ignored: on a host,
    ///   mountinfo lists every container's mounts);
    /// - host name: Docker's default is the 12-hex short ID.
    pub fn from_sources(cgroup: &str, mountinfo: &str, hostname: Option<&str>) -> Self {
        let mut ids: Vec<String> = Vec::new();
        for line in cgroup.lines() {
            let path = line.splitn(3, ':').nth(2).unwrap_or_default();
            ids.extend(full_ids(path).map(str::to_owned));
        }
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(root), Some(point)) = (fields.get(3), fields.get(4)) else {
                continue;
            };
            if matches!(*point, "/etc/hostname" | "/etc/hosts" | "/etc/resolv.conf") {
                let parts: Vec<&str> = root.split('/').collect();
                for w in parts.windows(2) {
                    if w[0] == "containers" && w[1].len() == 64 && is_hex(w[1]) {
                        ids.push(w[1].to_owned());
                    }
                }
            }
        }
        if let Some(h) = hostname.map(str::trim) {
            if h.len() == 12 && is_hex(h) {
                ids.push(h.to_owned());
            }
        }
        ids.sort();
        ids.dedup();
        Self {
            id_prefixes: ids,
            configured: None,
        }
    }

    pub fn matches(&self, c: &Container) -> bool {
        self.id_prefixes
            .iter()
            .any(|p| c.id.starts_with(p.as_str()))
            || self
                .configured
                .as_deref()
                .is_some_and(|s| c.name == s || (s.len() >= 12 && is_hex(s) && c.id.starts_with(s)))
    }

    pub fn is_known(&self) -> bool {
        !self.id_prefixes.is_empty() || self.configured.is_some()
    }
}

/// The Home Assistant side of one agent; owned by the session's main loop.
pub struct Ha {
    client: AsyncClient,
    agent: String,
    prefix: String,
    own: Arc<OwnContainer>,
    /// Names of the containers whose discovery configs are published.
    exposed: BTreeSet<String>,
    /// The discovery topics published (for recognising leftovers of an earlier run).
    topics: HashSet<String>,
    /// Retained configs of ours seen before the container list was known (Docker not listed
    /// yet): judged once it is.
    suspects: HashSet<String>,
    inflight: Arc<Semaphore>,
    /// When Home Assistant's last `online` made this agent republish: each one costs a Docker
    /// list and a republish of every config and state, so they are throttled.
    last_birth: Option<std::time::Instant>,
}

/// At most one republish for Home Assistant's birth message this often (issue 14, item 14).
pub const BIRTH_THROTTLE: std::time::Duration = std::time::Duration::from_secs(5);

impl Ha {
    pub fn new(client: AsyncClient, agent: &str, cfg: &HaConfig) -> Self {
        let own = OwnContainer::detect(cfg.own_container.as_deref());
        if own.is_known() {
            info!(own = ?own, "Home Assistant: this agent's own container will refuse stop and restart");
        }
        Self {
            client,
            agent: agent.to_owned(),
            prefix: cfg.discovery_prefix.clone(),
            own: Arc::new(own),
            exposed: BTreeSet::new(),
            topics: HashSet::new(),
            suspects: HashSet::new(),
            inflight: Arc::new(Semaphore::new(MAX_INFLIGHT)),
            last_birth: None,
        }
    }

    /// Home Assistant's birth/last-will topic.
    pub fn birth_topic(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// What the session subscribes to after every CONNACK: the `/set` commands, HA's birth
    /// message, and this agent's own discovery configs (to remove leftovers of an earlier run).
    ///
    /// Commands and the birth message come through shared-subscription groups of this agent
    /// process (`group`, as for requests: `topics::agent_subscriptions`): a retained command is
    /// refused anyway and every CONNACK republishes discovery, so nothing retained is wanted
    /// there, and the broker is spared a scan of its retained messages for each. The configs
    /// subscription is plain on purpose: its retained messages are how leftovers are found.
    pub fn subscriptions(&self, group: &str) -> Vec<String> {
        vec![
            topics::shared(
                &format!("{group}-ha-set"),
                &topics::container_sets_of(&self.agent),
            ),
            topics::shared(&format!("{group}-ha-birth"), &self.birth_topic()),
            format!("{}/+/{}/+/config", self.prefix, node_id(&self.agent)),
        ]
    }

    /// Publishes the discovery configs of every exposed container (after a CONNACK, and when Home
    /// Assistant comes online), and removes those of containers that are gone.
    pub fn publish_all(&mut self, current: Option<&[Container]>) {
        let Some(list) = current else {
            return;
        };
        let names = exposed_names(list);
        let gone: Vec<String> = self.exposed.difference(&names).cloned().collect();
        for name in gone {
            self.remove(&name);
        }
        for name in &names {
            self.announce(name);
        }
        info!(
            containers = names.len(),
            "Home Assistant discovery published"
        );
        self.exposed = names;
        self.clear_suspects();
    }

    /// Follows the container list: announces new containers, removes destroyed ones. Cheap when
    /// nothing changed (the session calls it after every event).
    pub fn sync(&mut self, current: Option<&[Container]>) {
        let Some(list) = current else {
            return;
        };
        let same = list
            .iter()
            .filter(|c| is_exposed(c))
            .map(|c| c.name.as_str())
            .eq(self.exposed.iter().map(String::as_str));
        if same {
            self.clear_suspects();
            return;
        }
        let names = exposed_names(list);
        let gone: Vec<String> = self.exposed.difference(&names).cloned().collect();
        for name in gone {
            debug!(container = %name, "Home Assistant: removing the entities of a container that is gone");
            self.remove(&name);
        }
        let new: Vec<String> = names.difference(&self.exposed).cloned().collect();
        for name in new {
            debug!(container = %name, "Home Assistant: announcing a new container");
            self.announce(&name);
        }
        self.exposed = names;
        self.clear_suspects();
    }

    /// Removes the suspects that this run does not publish.
    fn clear_suspects(&mut self) {
        if self.suspects.is_empty() {
            return;
        }
        for topic in std::mem::take(&mut self.suspects) {
            if !self.topics.contains(&topic) {
                info!(%topic, "Home Assistant: removing a leftover discovery config");
                self.send(topic, Vec::new());
            }
        }
    }

    /// Handles a message the session does not know (`topics::parse` gave `None`). Returns true
    /// when Home Assistant came online: discovery is republished here, and the caller republishes
    /// the states after it.
    pub fn on_publish(&mut self, topic: &str, p: &Publish, current: Option<&[Container]>) -> bool {
        if topic == self.birth_topic() {
            let word = String::from_utf8_lossy(&p.payload);
            if word.trim().eq_ignore_ascii_case("online") {
                let now = std::time::Instant::now();
                if self
                    .last_birth
                    .is_some_and(|t| now.duration_since(t) < BIRTH_THROTTLE)
                {
                    debug!(
                        "Home Assistant online again within {BIRTH_THROTTLE:?}; not republishing"
                    );
                    return false;
                }
                self.last_birth = Some(now);
                info!("Home Assistant is online; republishing discovery and states");
                self.publish_all(current);
                return true;
            }
            debug!(payload = %word.chars().take(32).collect::<String>(), "Home Assistant status");
            return false;
        }
        // A retained config of ours that this run did not publish: a leftover of a container
        // destroyed while the agent was away (or a name now labelled zedops.ha=false).
        if p.retain && !p.payload.is_empty() && self.is_own_config(topic) {
            if current.is_none() {
                // Docker not listed yet: decide when the list arrives (bounded).
                if self.suspects.len() < MAX_SUSPECTS {
                    self.suspects.insert(topic.to_owned());
                }
            } else if !self.topics.contains(topic) {
                info!(%topic, "Home Assistant: removing a leftover discovery config");
                self.send(topic.to_owned(), Vec::new());
            }
            return false;
        }
        debug!(%topic, "ignoring message");
        false
    }

    fn is_own_config(&self, topic: &str) -> bool {
        let Some(rest) = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return false;
        };
        let node = node_id(&self.agent);
        matches!(
            rest.split('/').collect::<Vec<_>>().as_slice(),
            [platform, n, _object, "config"]
                if *n == node && Entity::ALL.iter().any(|e| e.platform() == *platform)
        )
    }

    fn announce(&mut self, name: &str) {
        for e in Entity::ALL {
            let topic = discovery_topic(&self.prefix, &self.agent, name, e);
            let payload =
                serde_json::to_vec(&discovery_config(&self.agent, name, e)).unwrap_or_default();
            self.send(topic.clone(), payload);
            self.topics.insert(topic);
        }
    }

    /// Empty retained configs: Home Assistant removes the entities.
    fn remove(&mut self, name: &str) {
        for e in Entity::ALL {
            let topic = discovery_topic(&self.prefix, &self.agent, name, e);
            self.topics.remove(&topic);
            self.send(topic, Vec::new());
        }
    }

    fn send(&self, topic: String, payload: Vec<u8>) {
        if let Err(e) = self
            .client
            .try_publish(topic.clone(), QoS::AtLeastOnce, true, payload)
        {
            warn!(%topic, error = %e, "discovery publish dropped (it is republished after the next connection)");
        }
    }

    /// A message on `…/containers/{name}/set`. Valid commands run in a task; the outcome goes to
    /// `…/set/result` and to the log. Anything else is ignored (logged) and changes nothing.
    pub fn command(&self, name: &str, p: &Publish, ctx: &Arc<Ctx>, registry: &Arc<Registry>) {
        let agent = self.agent.as_str();
        // The topic segment is validated before anything logs it (no log injection).
        if ContainerRef::new(name).is_err() {
            warn!(source = "mqtt", %agent, container = ?name, "ignoring a /set command for an invalid container name");
            return;
        }
        if p.retain {
            // Delivered from the broker's store, not sent now: running it would repeat it after
            // every reconnection.
            warn!(source = "mqtt", %agent, container = %name, "ignoring a retained /set command: publish commands without the retain flag");
            return;
        }
        let cmd = match parse_command(&p.payload) {
            Ok(c) => c,
            Err(why) => {
                warn!(source = "mqtt", %agent, container = %name, reason = ?why, "ignoring a /set message");
                return;
            }
        };
        let result_topic = topics::container_set_result(agent, name);
        let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
            let e = ErrorBody::conflict(format!(
                "agent {agent} is already running {MAX_INFLIGHT} Home Assistant commands; try again when they finish"
            ));
            audit(agent, name, cmd, &Err(e.clone()));
            publish_result(&self.client, result_topic, Reply::failure(e));
            return;
        };
        let (ctx, own, client) = (ctx.clone(), self.own.clone(), self.client.clone());
        let registry = registry.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            let _permit = permit;
            let agent = ctx.agent.clone();
            let outcome = execute(ctx, &registry, &own, &name, cmd).await;
            audit(&agent, &name, cmd, &outcome);
            publish_result(&client, result_topic, Reply::from_result(outcome));
        });
    }
}

fn exposed_names(list: &[Container]) -> BTreeSet<String> {
    list.iter()
        .filter(|c| is_exposed(c))
        .map(|c| c.name.clone())
        .collect()
}

/// Looks the container up by exact name (never by ID prefix: the topic names it), applies the
/// Home Assistant rules, then runs the action's op through the registry, as a request would.
async fn execute(
    ctx: Arc<Ctx>,
    registry: &Registry,
    own: &OwnContainer,
    name: &str,
    cmd: Action,
) -> Result<ActionResult, ErrorBody> {
    let agent = ctx.agent.clone();
    let all = ctx.driver.list(true).await?;
    let c = all.iter().find(|c| c.name == name).ok_or_else(|| {
        ErrorBody::not_found(format!("no container named {name} on agent {agent}"))
    })?;
    let forbidden = |why: String| Err(ErrorBody::new(ErrorCode::Forbidden, why));
    if !is_exposed(c) {
        return forbidden(format!(
            "container {name} on agent {agent} is labelled {LABEL_HA}=false: Home Assistant cannot control it"
        ));
    }
    if is_protected(c) {
        return forbidden(format!(
            "container {name} on agent {agent} is labelled {LABEL_PROTECT}=true: Home Assistant may not {} it; use the zedops CLI or API",
            cmd.as_str()
        ));
    }
    if cmd.spec().stops && own.matches(c) {
        return forbidden(format!(
            "container {name} runs agent {agent} itself: Home Assistant may not {} it; use the zedops CLI or docker on the host",
            cmd.as_str()
        ));
    }
    let by_id = ContainerRef::new(c.id.clone()).map_err(|e| ErrorBody::internal(e.to_string()))?;
    let payload = ActionRequest::new(cmd, by_id).to_payload()?;
    registry
        .dispatch(ctx, cmd.op_name(), &payload)
        .await
        .into_result()
}

/// The audit record of a command from MQTT (there is no audit store yet).
fn audit(agent: &str, container: &str, cmd: Action, outcome: &Result<ActionResult, ErrorBody>) {
    match outcome {
        Ok(r) => info!(
            source = "mqtt",
            %agent,
            %container,
            action = cmd.as_str(),
            outcome = if r.changed { "changed" } else { "unchanged" },
            state = %r.container.state,
            "Home Assistant command executed (audited as coming from MQTT)"
        ),
        Err(e) => info!(
            source = "mqtt",
            %agent,
            %container,
            action = cmd.as_str(),
            outcome = %e.code,
            message = %e.message,
            "Home Assistant command refused or failed (audited as coming from MQTT)"
        ),
    }
}

fn publish_result(client: &AsyncClient, topic: String, reply: Reply) {
    if let Err(e) = client.try_publish(topic.clone(), QoS::AtMostOnce, false, reply.to_bytes()) {
        warn!(%topic, error = %e, "could not publish the command's result");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse_command(b"start"), Ok(Action::Start));
        assert_eq!(parse_command(b" STOP\n"), Ok(Action::Stop));
        assert_eq!(parse_command(b"Restart"), Ok(Action::Restart));
        assert!(matches!(parse_command(b"kill"), Err(Ignored::Unknown(_))));
        assert!(matches!(parse_command(b""), Err(Ignored::Unknown(_))));
        assert!(matches!(parse_command(b"ON"), Err(Ignored::Unknown(_))));
        assert_eq!(parse_command(b"\xff\xfe\x00"), Err(Ignored::NotText));
        assert_eq!(parse_command(b"st\0op"), Err(Ignored::NotText));
        assert_eq!(
            parse_command(&vec![b'a'; 1 << 20]),
            Err(Ignored::TooLarge(1 << 20))
        );
        assert!(parse_command(
            &[b' '; 60]
                .iter()
                .chain(b"stop")
                .copied()
                .collect::<Vec<_>>()
        )
        .is_ok());
    }

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
                Entity::State => assert!(c["state_topic"].is_string()),
            }
        }
    }

    #[test]
    fn prefix_validation() {
        assert!(HaConfig::new("homeassistant").is_ok());
        assert!(HaConfig::new("ha/test").is_ok());
        for bad in ["", "/x", "x/", "a//b", "a/+", "#", "$SYS"] {
            assert!(HaConfig::new(bad).is_err(), "{bad}");
        }
    }

    fn container(name: &str, id: &str) -> Container {
        serde_json::from_value(json!({
            "id": id, "short_id": &id[..12], "name": name, "image": "i", "image_id": "sha256:1",
            "command": "sh", "state": "running", "status": "Up", "health": null,
            "created_at": "2026-01-10T02:25:00Z", "ports": [], "labels": {}
        }))
        .unwrap()
    }

    #[test]
    fn own_container_detection() {
        let id = "4f1d2c3b".repeat(8);
        let me = container("zedops", &id);
        let other = container("web-1", &"a".repeat(64));

        // cgroup v1
        let v1 = format!("12:memory:/docker/{id}\n11:cpu:/docker/{id}\n");
        let own = OwnContainer::from_sources(&v1, "", None);
        assert!(own.matches(&me) && !own.matches(&other));
        // cgroup v2, systemd driver
        let v2 = format!("0::/system.slice/docker-{id}.scope\n");
        assert!(OwnContainer::from_sources(&v2, "", None).matches(&me));
        // cgroup v2 with a private namespace: mountinfo
        let mi = format!(
            "1 0 8:1 / / rw - overlay overlay rw\n\
             2 1 8:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n"
        );
        let own = OwnContainer::from_sources("0::/\n", &mi, Some("myhost"));
        assert!(own.matches(&me) && !own.matches(&other));
        // On a host, mountinfo lists other containers' mounts: they are not us.
        let host = format!(
            "3 1 0:5 / /var/lib/docker/containers/{id}/mounts/shm rw - tmpfs shm rw\n\
             4 1 0:6 / /var/lib/docker/overlay2/{id}/merged rw - overlay overlay rw\n"
        );
        let own = OwnContainer::from_sources("0::/user.slice/user-1000.slice\n", &host, Some("vm"));
        assert!(!own.is_known() && !own.matches(&me));
        // HOSTNAME = short ID
        let own = OwnContainer::from_sources("0::/\n", "", Some(&id[..12]));
        assert!(own.matches(&me) && !own.matches(&other));
        // Configured by name.
        let own = OwnContainer {
            configured: Some("zedops".into()),
            ..Default::default()
        };
        assert!(own.matches(&me) && !own.matches(&other));
    }

    #[test]
    fn labels() {
        let mut c = container("web-1", &"a".repeat(64));
        assert!(is_exposed(&c) && !is_protected(&c));
        c.labels.insert(LABEL_HA.into(), "False".into());
        c.labels.insert(LABEL_PROTECT.into(), "true".into());
        assert!(!is_exposed(&c) && is_protected(&c));
    }
}
