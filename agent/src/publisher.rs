//! Publishes what the agent knows: retained status, the retained snapshot, retained per-container
//! topics (only those that changed, an empty payload for a destroyed container) and events.
//!
//! Publishes use `try_publish`: state is republished in full after every CONNACK, so a publish
//! dropped while the connection is down loses nothing, and the agent never blocks on a dead broker.

use std::collections::HashMap;

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
}

impl Publisher {
    pub fn new(
        client: AsyncClient,
        agent: &str,
        hostname: &str,
        started_at: DateTime<Utc>,
        key: Option<KeyPair>,
        container_topics: bool,
    ) -> Self {
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
        }
    }

    /// The status payload; also used for the Last Will (with `Offline`).
    pub fn status(&self, state: AgentState, docker: DockerStatus) -> AgentStatus {
        status_payload(
            &self.agent,
            &self.hostname,
            self.started_at,
            state,
            docker,
            self.counts(),
        )
    }

    fn counts(&self) -> Counts {
        self.current.as_deref().map(Counts::of).unwrap_or_default()
    }

    /// True when `name` is one of the containers of the latest list; `None` when no list yet.
    pub fn knows(&self, name: &str) -> Option<bool> {
        self.current
            .as_ref()
            .map(|c| c.iter().any(|k| k.name == name))
    }

    pub fn current(&self) -> Option<&[Container]> {
        self.current.as_deref()
    }

    pub fn publish_status(&self, state: AgentState, docker: DockerStatus) {
        let payload = self.status(state, docker);
        self.send(
            topics::status(&self.agent),
            QoS::AtLeastOnce,
            true,
            json(&payload),
        );
    }

    /// Takes a fresh list. Publishes the snapshot when it changed (or `force`), the per-container
    /// topics that changed (all when `force`), and clears destroyed containers. Returns whether
    /// anything changed, so the caller can refresh the status counts.
    pub fn update(&mut self, list: Vec<Container>, force: bool) -> bool {
        let changed = self.current.as_ref() != Some(&list);
        if changed || force {
            self.seq += 1;
            let snap = Snapshot {
                agent: self.agent.clone(),
                seq: self.seq,
                taken_at: Utc::now(),
                containers: list.clone(),
            };
            self.send(
                topics::snapshot(&self.agent),
                QoS::AtLeastOnce,
                true,
                json(&snap),
            );
        }
        if !self.container_topics {
            self.current = Some(list);
            return changed;
        }
        let mut next = HashMap::with_capacity(list.len());
        for c in &list {
            if force || self.published.get(&c.name) != Some(c) {
                self.send(
                    topics::container(&self.agent, &c.name),
                    QoS::AtLeastOnce,
                    true,
                    json(c),
                );
            }
            next.insert(c.name.clone(), c.clone());
        }
        for gone in self.published.keys().filter(|n| !next.contains_key(*n)) {
            self.clear(gone);
        }
        self.published = next;
        self.current = Some(list);
        changed
    }

    /// Removes a retained per-container topic (empty retained payload).
    pub fn clear(&self, name: &str) {
        debug!(container = name, "clearing retained container topic");
        self.send(
            topics::container(&self.agent, name),
            QoS::AtLeastOnce,
            true,
            Vec::new(),
        );
    }

    pub fn publish_event(&self, ev: &ContainerEvent) {
        self.send(
            topics::events(&self.agent),
            QoS::AtMostOnce,
            false,
            json(ev),
        );
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

pub fn status_payload(
    agent: &str,
    hostname: &str,
    started_at: DateTime<Utc>,
    state: AgentState,
    docker: DockerStatus,
    counts: Counts,
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

pub fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Our payload types contain only strings, numbers, maps and times: they always serialize.
    serde_json::to_vec(v).unwrap_or_default()
}
