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
//! through the agent's op registry, as MQTT requests do. Anything else is ignored. Containers
//! labelled `zedops.protect=true` take no command from Home Assistant, and the agent's own
//! container is never stopped or restarted from it. Each command's outcome is published (not retained) as a
//! [`Reply`] on `…/containers/{name}/set/result` and logged as the audit record
//! (`source = "mqtt"`).
//!
//! - this module: [`HaConfig`], the labels, and [`Ha`], the runtime (discovery publishing,
//!   leftovers, Home Assistant's birth message, `/set` commands);
//! - [`discovery`]: the discovery topics and configs, pure;
//! - [`actions`]: buttons and last-result sensors of operator-defined actions marked `ha`;
//! - `commands`: parsing `/set` payloads, the rules, execution and its audit;
//! - `own`: finding the agent's own container.

pub mod actions;
mod commands;
pub mod discovery;
mod own;

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

use commands::{audit, execute, publish_result};
pub use commands::{parse_command, Ignored, COMMANDS};
pub use discovery::{
    discovery_config, discovery_topic, node_id, object_id, sanitize, unique_id, Entity,
};
pub use own::OwnContainer;

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
    /// A CPU and a memory sensor per container, fed by the agent's stats (`--ha-stats`).
    pub stats: bool,
}

impl Default for HaConfig {
    fn default() -> Self {
        Self {
            discovery_prefix: DEFAULT_DISCOVERY_PREFIX.to_owned(),
            own_container: None,
            stats: false,
        }
    }
}

/// A discovery prefix that is not a plain topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Home Assistant discovery prefix {0:?} is invalid: use topic levels without wildcards, e.g. homeassistant")]
pub struct InvalidPrefix(pub String);

impl HaConfig {
    /// A configuration with this discovery prefix, validated.
    pub fn new(discovery_prefix: impl Into<String>) -> Result<Self, InvalidPrefix> {
        let c = Self {
            discovery_prefix: discovery_prefix.into(),
            ..Self::default()
        };
        c.validate()?;
        Ok(c)
    }

    /// The prefix must be a plain topic (one or more non-empty levels, no wildcards).
    pub fn validate(&self) -> Result<(), InvalidPrefix> {
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
            Err(InvalidPrefix(p.clone()))
        }
    }
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
    /// Operator-defined actions with a button, by name (`actions`).
    buttons: std::collections::BTreeMap<String, zedops_proto::defined::DefinedAction>,
    /// When Home Assistant's last `online` made this agent republish: each one costs a Docker
    /// list and a republish of every config and state, so they are throttled.
    last_birth: Option<std::time::Instant>,
    /// A CPU and a memory sensor per container (`--ha-stats`).
    stats: bool,
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
            buttons: Default::default(),
            last_birth: None,
            stats: cfg.stats,
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
            topics::shared(
                &format!("{group}-ha-run"),
                &topics::action_runs_of(&self.agent),
            ),
            topics::shared(&format!("{group}-ha-birth"), &self.birth_topic()),
            format!("{}/+/{}/+/config", self.prefix, node_id(&self.agent)),
        ]
    }

    /// Publishes the discovery configs of every exposed container (after a CONNACK, and when Home
    /// Assistant comes online), and removes those of containers that are gone.
    pub fn publish_all(&mut self, current: Option<&[Container]>) {
        // Action buttons need no container list (host actions work while Docker is down).
        self.announce_actions();
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

    /// The entities of each container: the three, and the sensors with `--ha-stats`.
    fn entities(&self) -> Vec<Entity> {
        let usage = if self.stats { &Entity::USAGE[..] } else { &[] };
        Entity::ALL.iter().chain(usage).copied().collect()
    }

    fn announce(&mut self, name: &str) {
        for e in self.entities() {
            let topic = discovery_topic(&self.prefix, &self.agent, name, e);
            let payload =
                serde_json::to_vec(&discovery_config(&self.agent, name, e)).unwrap_or_default();
            self.send(topic.clone(), payload);
            self.topics.insert(topic);
        }
    }

    /// Empty retained configs: Home Assistant removes the entities.
    fn remove(&mut self, name: &str) {
        for e in Entity::ALL.into_iter().chain(Entity::USAGE) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_validation() {
        assert!(HaConfig::new("homeassistant").is_ok());
        assert!(HaConfig::new("ha/test").is_ok());
        for bad in ["", "/x", "x/", "a//b", "a/+", "#", "$SYS"] {
            assert!(HaConfig::new(bad).is_err(), "{bad}");
        }
    }

    pub(super) fn container(name: &str, id: &str) -> Container {
        serde_json::from_value(json!({
            "id": id, "short_id": &id[..12], "name": name, "image": "i", "image_id": "sha256:1",
            "command": "sh", "state": "running", "status": "Up", "health": null,
            "created_at": "2026-01-10T02:25:00Z", "ports": [], "labels": {}
        }))
        .unwrap()
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
