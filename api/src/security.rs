//! The API's side of end-to-end signatures: it signs requests with the server key and accepts
//! from an agent only what that agent's enrolled key signed (status, snapshots, events, replies).
//! Without a `Security` (no data dir, or an external broker run without enrollment), messages are
//! taken as they come. Agent keys come from the database through a cache that the async paths
//! fill ([`Security::warm`]) before the synchronous checks read it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::PublishProperties;
use zedops_proto::sign::{KeyPair, PublicKey, Signed, SIG_PROPERTY, TS_PROPERTY};

use crate::store::Store;

/// Most agent keys (and "no such agent" answers) kept in memory.
pub const MAX_CACHED_KEYS: usize = 100_000;
/// How long a key read from the database is used before it is read again.
pub const KEY_TTL: Duration = Duration::from_secs(30);
/// How long a read of a key may take.
pub const KEY_WAIT: Duration = Duration::from_secs(2);

pub struct Security {
    pub key: KeyPair,
    store: Arc<Store>,
    /// Agent keys (or "no such agent") and when they were read.
    keys: RwLock<HashMap<String, (Option<PublicKey>, Instant)>>,
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

    /// The enrolled public key of `agent`, as the cache holds it: [`warm`](Self::warm) first.
    /// Names that are no valid agent names have none.
    pub fn agent_key(&self, agent: &str) -> Option<PublicKey> {
        if !zedops_proto::names::is_valid_agent_name(agent) {
            return None;
        }
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.get(agent).and_then(|(k, _)| k.clone())
    }

    /// Reads `agent`'s key from the database when the cache has none younger than
    /// [`KEY_TTL`] (a replica sees another's enrollments and removals that late at most). The
    /// cache holds at most [`MAX_CACHED_KEYS`] entries (unknown names are dropped first when it
    /// fills). A database that does not answer within [`KEY_WAIT`] leaves the cache as it is.
    pub async fn warm(&self, agent: &str) {
        if !zedops_proto::names::is_valid_agent_name(agent) {
            return;
        }
        let fresh = {
            let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
            keys.get(agent)
                .is_some_and(|(_, at)| at.elapsed() < KEY_TTL)
        };
        if fresh {
            return;
        }
        let Ok(rec) = tokio::time::timeout(KEY_WAIT, self.store.agent(agent)).await else {
            tracing::warn!(
                agent,
                "the database did not answer for an agent's key in time"
            );
            return;
        };
        let k = rec
            .and_then(|r| r.public_key)
            .and_then(|h| PublicKey::from_hex(&h));
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= MAX_CACHED_KEYS {
            keys.retain(|_, (k, _)| k.is_some());
            if keys.len() >= MAX_CACHED_KEYS {
                keys.clear();
            }
        }
        keys.insert(agent.to_owned(), (k, Instant::now()));
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
