//! Publishes what the agent knows: retained status, the retained snapshot, retained per-container
//! topics (only those that changed, an empty payload for a destroyed container) and events.
//!
//! Publishes use `try_publish`: state is republished in full after every CONNACK, so a publish
//! dropped while the connection is down loses nothing, and the agent never blocks on a dead broker.
//! Retained state is not even queued while the connection is down (`set_connected`): rumqttc would
//! send what it queued ahead of the next connection's SUBSCRIBEs, and an `online` status would
//! reach the API before the broker routes requests to the agent again.

use std::collections::{BTreeSet, HashMap};

use crate::retained::Record;
use chrono::{DateTime, Utc};
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::AsyncClient;
use tracing::{debug, warn};
use zedops_proto::sign::{KeyPair, Signed};
use zedops_proto::{
    topics, AgentState, AgentStatus, Container, ContainerEvent, Counts, DockerStatus, Snapshot,
};

pub struct Publisher {
    client: AsyncClient,
    /// Signs every publish when the agent is enrolled.
    key: Option<KeyPair>,
    agent: String,
    hostname: String,
    started_at: DateTime<Utc>,
    seq: u64,
    /// The per-container payloads last published, by name.
    published: HashMap<String, Container>,
    /// The latest successful list, if any.
    current: Option<Vec<Container>>,
    /// Whether per-container topics are published at all (`AgentConfig::container_topics`).
    container_topics: bool,
    /// Where the names of the retained per-container topics are remembered across runs.
    record: Option<Record>,
    /// Names an earlier run left retained that are still to be cleared (when no longer listed).
    leftover: BTreeSet<String>,
    /// Whether the broker connection is up: leftovers are cleared only then, as a publish made
    /// while it is down is dropped.
    connected: bool,
    /// The operator-defined actions advertised in the status (`crate::actions`).
    actions: Vec<zedops_proto::defined::DefinedAction>,
}

/// How much of the state [`Publisher::update`] publishes again when nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Republish {
    /// Only what changed.
    Changes,
    /// Status and snapshot, and the per-container topics that changed: `fleet/resync` and the
    /// periodic resync. Unchanged per-container topics are retained already.
    Snapshot,
    /// Everything, per-container topics included: after every CONNACK (the broker may have
    /// lost them) and Home Assistant's birth message.
    Everything,
}

impl Publisher {
    pub fn new(
        client: AsyncClient,
        agent: &str,
        hostname: &str,
        started_at: DateTime<Utc>,
        key: Option<KeyPair>,
        container_topics: bool,
        record: Option<Record>,
    ) -> Self {
        let leftover = record.as_ref().map(Record::load).unwrap_or_default();
        Self {
            client,
            key,
            agent: agent.to_owned(),
            hostname: hostname.to_owned(),
            started_at,
            seq: 0,
            published: HashMap::new(),
            current: None,
            container_topics,
            record,
            leftover,
            connected: false,
            actions: Vec::new(),
        }
    }

    /// The actions the next status advertises; true when they changed (the caller publishes).
    pub fn set_actions(&mut self, actions: Vec<zedops_proto::defined::DefinedAction>) -> bool {
        let changed = self.actions != actions;
        self.actions = actions;
        changed
    }

    /// Whether the broker connection is up and its subscriptions answered: retained state is
    /// published only then (`send_state`).
    pub fn set_connected(&mut self, up: bool) {
        self.connected = up;
    }

    /// The status payload; also used for the Last Will (with `Offline`).
    pub fn status(&self, state: AgentState, docker: DockerStatus) -> AgentStatus {
        status_payload(
            &self.agent,
            &self.hostname,
            self.started_at,
            (state, docker),
            self.counts(),
            self.actions.clone(),
        )
    }

    fn counts(&self) -> Counts {
        self.current.as_deref().map(Counts::of).unwrap_or_default()
    }

    /// Increases with every snapshot published (so whenever the list changed).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn current(&self) -> Option<&[Container]> {
        self.current.as_deref()
    }

    /// The status, retained. An `online` one only while connected (`send_state`); the `offline`
    /// of a stopping agent is queued whatever the connection, in case it comes back in time.
    pub fn publish_status(&self, state: AgentState, docker: DockerStatus) {
        let offline = state == AgentState::Offline;
        let payload = json(&self.status(state, docker));
        let topic = topics::status(&self.agent);
        match offline {
            true => self.send(topic, QoS::AtLeastOnce, true, payload),
            false => self.send_state(topic, payload),
        }
    }

    /// Takes a fresh list. Publishes the snapshot when it changed (or when `again` asks for it),
    /// the per-container topics that changed (all with [`Republish::Everything`]), and clears the
    /// topics of destroyed containers, including those an earlier run left (see
    /// [`crate::retained`]). Returns whether the list changed, so the caller can refresh the
    /// status counts.
    pub fn update(&mut self, list: Vec<Container>, again: Republish) -> bool {
        let changed = self.current.as_ref() != Some(&list);
        if changed || again != Republish::Changes {
            self.seq += 1;
            let snap = Snapshot {
                agent: self.agent.clone(),
                seq: self.seq,
                taken_at: Utc::now(),
                containers: list.clone(),
            };
            self.send_state(topics::snapshot(&self.agent), json(&snap));
        }
        if !self.container_topics {
            // Topics an earlier run with per-container topics left: none is published now.
            if self.connected && !self.leftover.is_empty() {
                for gone in &self.leftover {
                    self.clear(gone);
                }
                self.leftover.clear();
                self.remember();
            }
            self.current = Some(list);
            return changed;
        }
        let all = again == Republish::Everything;
        let mut next = HashMap::with_capacity(list.len());
        for c in &list {
            if all || self.published.get(&c.name) != Some(c) {
                self.send_state(topics::container(&self.agent, &c.name), json(c));
            }
            next.insert(c.name.clone(), c.clone());
        }
        let mut names_changed = self.published.len() != next.len();
        let gone: Vec<String> = (self.published.keys())
            .filter(|n| !next.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            // Not connected: cleared after the next connection, as an earlier run's leftovers.
            if self.connected {
                self.clear(&name);
            } else {
                self.leftover.insert(name);
            }
            names_changed = true;
        }
        if self.connected && !self.leftover.is_empty() {
            for gone in self.leftover.iter().filter(|n| !next.contains_key(*n)) {
                self.clear(gone);
            }
            self.leftover.clear();
            names_changed = true;
        }
        self.published = next;
        self.current = Some(list);
        if names_changed {
            self.remember();
        }
        changed
    }

    /// Writes the names of the retained per-container topics (and leftovers not yet cleared) to
    /// the record; a failure is logged, not fatal.
    fn remember(&self) {
        let Some(r) = &self.record else { return };
        let names = self
            .published
            .keys()
            .chain(self.leftover.iter())
            .cloned()
            .collect();
        if let Err(e) = r.save(names) {
            warn!(error = %e, "cannot record the retained container topics; topics of containers removed while the agent is stopped will stay retained");
        }
    }

    /// Removes a retained per-container topic (empty retained payload).
    pub fn clear(&self, name: &str) {
        debug!(container = name, "clearing retained container topic");
        self.send_state(topics::container(&self.agent, name), Vec::new());
    }

    pub fn publish_event(&self, ev: &ContainerEvent) {
        self.send(
            topics::events(&self.agent),
            QoS::AtMostOnce,
            false,
            json(ev),
        );
    }

    /// Resource use (`--ha-stats`): signed like state, not retained (it is stale at once).
    pub fn publish_stats(&self, stats: &zedops_proto::ops::Stats) {
        self.send(
            topics::stats(&self.agent),
            QoS::AtMostOnce,
            false,
            json(stats),
        );
    }

    /// Retained state (QoS 1): only while connected. Dropped otherwise: the next connection
    /// republishes everything once its subscriptions are answered.
    fn send_state(&self, topic: String, payload: Vec<u8>) {
        if !self.connected {
            debug!(%topic, "not connected: published after the next connection");
            return;
        }
        self.send(topic, QoS::AtLeastOnce, true, payload);
    }

    fn send(&self, topic: String, qos: QoS, retain: bool, payload: Vec<u8>) {
        let r = match &self.key {
            Some(key) => {
                let props = PublishProperties {
                    user_properties: signature_properties(key, &topic, None, &payload),
                    ..Default::default()
                };
                self.client
                    .try_publish_with_properties(topic.clone(), qos, retain, payload, props)
            }
            None => self.client.try_publish(topic.clone(), qos, retain, payload),
        };
        if let Err(e) = r {
            warn!(%topic, error = %e, "publish dropped (it is republished after the next connection)");
        }
    }
}

/// A status of `agent`, now; `state` with what it knows of Docker.
pub fn status_payload(
    agent: &str,
    hostname: &str,
    started_at: DateTime<Utc>,
    (state, docker): (AgentState, DockerStatus),
    counts: Counts,
    actions: Vec<zedops_proto::defined::DefinedAction>,
) -> AgentStatus {
    AgentStatus {
        agent: agent.to_owned(),
        state,
        version: zedops_proto::VERSION.to_owned(),
        hostname: hostname.to_owned(),
        docker,
        started_at,
        counts,
        updated_at: Utc::now(),
        actions,
    }
}

/// The user properties that sign a publish of the agent (`zedops-sig`, `zedops-ts`).
pub fn signature_properties(
    key: &KeyPair,
    topic: &str,
    correlation: Option<&[u8]>,
    payload: &[u8],
) -> Vec<(String, String)> {
    let ts_ms = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
    key.signature_properties(&Signed::agent_publish(topic, correlation, ts_ms, payload))
}

/// The user properties that sign a reply: like [`signature_properties`], also covering the
/// signature of the request answered (`None` for an unsigned request).
pub fn reply_signature_properties(
    key: &KeyPair,
    topic: &str,
    correlation: Option<&[u8]>,
    payload: &[u8],
    request_sig: Option<&str>,
) -> Vec<(String, String)> {
    let ts_ms = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
    key.signature_properties(&Signed::reply(
        topic,
        correlation,
        ts_ms,
        payload,
        request_sig,
    ))
}

pub fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Our payload types contain only strings, numbers, maps and times: they always serialize.
    serde_json::to_vec(v).unwrap_or_default()
}
