//! The API's side of end-to-end signatures: it signs requests with the server key and accepts
//! from an agent only what that agent's enrolled key signed (status, snapshots, events, replies).
//! Without a `Security` (no data dir, or an external broker run without enrollment), messages are
//! taken as they come. Agent keys come from the database through a cache ([`crate::key_cache`]) that the
//! async paths fill ([`Security::warm`]) before the synchronous checks read it.

use std::sync::Arc;

use rumqttc::v5::mqttbytes::v5::PublishProperties;
use zedops_proto::sign::{KeyPair, PublicKey, Signed, SIG_PROPERTY, TS_PROPERTY};

use crate::key_cache::KeyCache;
use crate::store::Store;

pub struct Security {
    pub key: KeyPair,
    /// Agent keys from the database (`key_cache.rs` says when it is read).
    keys: Arc<KeyCache>,
}

fn prop<'a>(props: Option<&'a PublishProperties>, name: &str) -> Option<&'a str> {
    zedops_proto::sign::user_property(&props?.user_properties, name)
}

impl Security {
    pub fn new(key: KeyPair, store: Arc<Store>) -> Self {
        Self {
            key,
            keys: Arc::new(KeyCache::new(store)),
        }
    }

    /// The enrolled public key of `agent`, as the cache holds it: [`warm`](Self::warm) first.
    /// Names that are no valid agent names have none.
    pub fn agent_key(&self, agent: &str) -> Option<PublicKey> {
        if !zedops_proto::names::is_valid_agent_name(agent) {
            return None;
        }
        self.keys.get(agent)
    }

    /// Makes `agent`'s key available to the checks below without holding the caller up for
    /// long (`key_cache.rs`).
    pub async fn warm(&self, agent: &str) {
        if zedops_proto::names::is_valid_agent_name(agent) {
            self.keys.warm(agent).await;
        }
    }

    pub fn forget(&self, agent: &str) {
        self.keys.forget(agent);
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
