//! The API's side of end-to-end signatures: it signs requests with the server key and accepts
//! from an agent only what that agent's enrolled key signed (status, snapshots, events, replies).
//! Without a `Security` (no data dir, or an external broker run without enrollment), messages are
//! taken as they come.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rumqttc::v5::mqttbytes::v5::PublishProperties;
use zedops_proto::sign::{KeyPair, PublicKey, Signed, SIG_PROPERTY, TS_PROPERTY};

use crate::store::Store;

/// Most agent keys (and "no such agent" answers) kept in memory.
pub const MAX_CACHED_KEYS: usize = 100_000;

pub struct Security {
    pub key: KeyPair,
    store: Arc<Store>,
    keys: RwLock<HashMap<String, Option<PublicKey>>>,
}

fn prop<'a>(props: Option<&'a PublishProperties>, name: &str) -> Option<&'a str> {
    zedops_proto::sign::user_property(&props?.user_properties, name)
}

impl Security {
    pub fn new(key: KeyPair, store: Arc<Store>) -> Self {
        Self {
            key,
            store,
            keys: RwLock::new(HashMap::new()),
        }
    }

    /// The enrolled public key of `agent` (cached; [`forget`](Self::forget) after changes).
    /// Names that are no valid agent names are refused before any lookup; the cache holds at
    /// most [`MAX_CACHED_KEYS`] entries (unknown names are dropped first when it fills).
    pub fn agent_key(&self, agent: &str) -> Option<PublicKey> {
        if !zedops_proto::names::is_valid_agent_name(agent) {
            return None;
        }
        if let Some(k) = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(agent)
        {
            return k.clone();
        }
        let k = self
            .store
            .agent(agent)
            .and_then(|r| r.public_key)
            .and_then(|h| PublicKey::from_hex(&h));
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= MAX_CACHED_KEYS {
            keys.retain(|_, k| k.is_some());
            if keys.len() >= MAX_CACHED_KEYS {
                keys.clear();
            }
        }
        keys.insert(agent.to_owned(), k.clone());
        k
    }

    pub fn forget(&self, agent: &str) {
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(agent);
    }

    /// The signing time (Unix ms) when the message on `topic` was signed by `agent`'s enrolled
    /// key; `None` when it was not.
    pub fn from_agent(
        &self,
        agent: &str,
        topic: &str,
        props: Option<&PublishProperties>,
        payload: &[u8],
    ) -> Option<u64> {
        self.verify(agent, props, |correlation, ts_ms| {
            Signed::agent_publish(topic, correlation, ts_ms, payload)
        })
    }

    /// True when a reply on `topic` was signed by `agent`'s enrolled key *for the request whose
    /// signature is `request_sig`*: a reply to another (forged) request with the same response
    /// topic and correlation data does not pass.
    pub fn reply_from_agent(
        &self,
        agent: &str,
        topic: &str,
        props: Option<&PublishProperties>,
        payload: &[u8],
        request_sig: Option<&str>,
    ) -> bool {
        self.verify(agent, props, |correlation, ts_ms| {
            Signed::reply(topic, correlation, ts_ms, payload, request_sig)
        })
        .is_some()
    }

    /// The signing time when `agent`'s enrolled key signed what `signed` builds from the
    /// message's correlation data and signing time.
    fn verify<'a>(
        &self,
        agent: &str,
        props: Option<&'a PublishProperties>,
        signed: impl FnOnce(Option<&'a [u8]>, u64) -> Signed<'a>,
    ) -> Option<u64> {
        let key = self.agent_key(agent)?;
        let sig = prop(props, SIG_PROPERTY)?;
        let ts_ms = prop(props, TS_PROPERTY)?.parse::<u64>().ok()?;
        let correlation = props.and_then(|p| p.correlation_data.as_deref());
        key.verify(&signed(correlation, ts_ms), sig)
            .then_some(ts_ms)
    }

    /// The user properties that sign a request.
    pub fn sign_request(&self, what: Signed<'_>) -> Vec<(String, String)> {
        self.key.signature_properties(&what)
    }
}
