//! The API's side of end-to-end signatures: it signs requests with the server key and accepts
//! from an agent only what that agent's enrolled key signed (status, snapshots, events, replies).
//! Without a `Security` (no data dir, or an external broker run without enrollment), messages are
//! taken as they come.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rumqttc::v5::mqttbytes::v5::PublishProperties;
use zedops_proto::sign::{KeyPair, PublicKey, Signed, SIG_PROPERTY, TS_PROPERTY};

use crate::store::Store;

pub struct Security {
    pub key: KeyPair,
    store: Arc<Store>,
    keys: RwLock<HashMap<String, Option<PublicKey>>>,
}

fn prop<'a>(props: Option<&'a PublishProperties>, name: &str) -> Option<&'a str> {
    props?
        .user_properties
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
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
    pub fn agent_key(&self, agent: &str) -> Option<PublicKey> {
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
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(agent.to_owned(), k.clone());
        k
    }

    pub fn forget(&self, agent: &str) {
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(agent);
    }

    /// True when the message on `topic` was signed by `agent`'s enrolled key.
    pub fn from_agent(
        &self,
        agent: &str,
        topic: &str,
        props: Option<&PublishProperties>,
        payload: &[u8],
    ) -> bool {
        let Some(key) = self.agent_key(agent) else {
            return false;
        };
        let (Some(sig), Some(ts)) = (prop(props, SIG_PROPERTY), prop(props, TS_PROPERTY)) else {
            return false;
        };
        let Ok(ts_ms) = ts.parse::<u64>() else {
            return false;
        };
        let correlation = props.and_then(|p| p.correlation_data.as_deref());
        key.verify(
            &Signed::agent_publish(topic, correlation, ts_ms, payload),
            sig,
        )
    }

    /// The user properties that sign a request.
    pub fn sign_request(&self, what: Signed<'_>) -> Vec<(String, String)> {
        self.key.signature_properties(&what)
    }
}
