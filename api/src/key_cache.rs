//! Agents' enrolled public keys from the database, cached for the synchronous signature checks
//! of [`crate::security::Security`].
//!
//! The MQTT poll loop warms the cache before each agent message, so a read of the database must
//! never hold it up for long:
//! - a key younger than [`KEY_TTL`] is used as it is;
//! - an older one is still used, and read again in the background (a replica sees another's
//!   enrollments and removals within the TTL and one message);
//! - only an agent seen for the first time is read while the caller waits (at most
//!   [`KEY_WAIT`]);
//! - after a database failure (an error or no answer within [`KEY_WAIT`]) nothing is read for
//!   [`REST_AFTER_FAILURE`] and nothing cached is replaced: keys already known keep working, an
//!   agent whose key is unknown stays unverified until the database answers again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use zedops_proto::sign::PublicKey;

use crate::store::Store;

/// Most agent keys (and "no such agent" answers) kept in memory.
pub const MAX_CACHED_KEYS: usize = 100_000;
/// How long a key read from the database is used before it is read again.
pub const KEY_TTL: Duration = Duration::from_secs(30);
/// How long a read of a key may take.
pub const KEY_WAIT: Duration = Duration::from_secs(2);
/// How long no key is read after the database failed to answer one.
pub const REST_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Most background reads at once.
const MAX_REFRESHING: usize = 256;

pub struct KeyCache {
    store: Arc<Store>,
    ttl: Duration,
    /// Agent keys (or "no such agent") and when they were read.
    keys: RwLock<HashMap<String, (Option<PublicKey>, Instant)>>,
    /// Until when no read is tried (the database failed).
    resting_until: Mutex<Option<Instant>>,
    refreshing: Mutex<HashSet<String>>,
}

impl KeyCache {
    pub fn new(store: Arc<Store>) -> Self {
        Self::with_ttl(store, KEY_TTL)
    }

    /// With another time to live (tests).
    pub fn with_ttl(store: Arc<Store>, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            keys: RwLock::new(HashMap::new()),
            resting_until: Mutex::new(None),
            refreshing: Mutex::new(HashSet::new()),
        }
    }

    /// `agent`'s key as cached, however old.
    pub fn get(&self, agent: &str) -> Option<PublicKey> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.get(agent).and_then(|(k, _)| k.clone())
    }

    pub fn forget(&self, agent: &str) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        keys.remove(agent);
    }

    /// Makes `agent`'s key available to [`get`](Self::get) as the module documentation says.
    pub async fn warm(self: &Arc<Self>, agent: &str) {
        let age = {
            let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
            keys.get(agent).map(|(_, at)| at.elapsed())
        };
        match age {
            Some(a) if a < self.ttl => {}
            _ if self.resting() => {}
            Some(_) => self.refresh_in_background(agent),
            None => self.read(agent).await,
        }
    }

    fn resting(&self) -> bool {
        let until = self.resting_until.lock().unwrap_or_else(|e| e.into_inner());
        until.is_some_and(|t| Instant::now() < t)
    }

    fn refresh_in_background(self: &Arc<Self>, agent: &str) {
        {
            let mut busy = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
            if busy.len() >= MAX_REFRESHING || !busy.insert(agent.to_owned()) {
                return;
            }
        }
        let me = self.clone();
        let agent = agent.to_owned();
        tokio::spawn(async move {
            me.read(&agent).await;
            let mut busy = me.refreshing.lock().unwrap_or_else(|e| e.into_inner());
            busy.remove(&agent);
        });
    }

    /// Reads `agent`'s key; on a failure the cache rests instead.
    async fn read(&self, agent: &str) {
        let failure = match tokio::time::timeout(KEY_WAIT, self.store.agent_record(agent)).await {
            Ok(Ok(rec)) => {
                let key = rec
                    .and_then(|r| r.public_key)
                    .and_then(|h| PublicKey::from_hex(&h));
                self.insert(agent, key);
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {KEY_WAIT:?}"),
        };
        tracing::warn!(agent, error = %failure, "cannot read an agent's key; known keys are used, and the database is asked again in {REST_AFTER_FAILURE:?}");
        let mut until = self.resting_until.lock().unwrap_or_else(|e| e.into_inner());
        *until = Some(Instant::now() + REST_AFTER_FAILURE);
    }

    fn insert(&self, agent: &str, key: Option<PublicKey>) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= MAX_CACHED_KEYS {
            keys.retain(|_, (k, _)| k.is_some());
            if keys.len() >= MAX_CACHED_KEYS {
                keys.clear();
            }
        }
        keys.insert(agent.to_owned(), (key, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use zedops_proto::sign::KeyPair;

    async fn store_with_agent(name: &str, seed: u8) -> (Arc<Store>, PublicKey) {
        let dir = std::env::temp_dir().join(format!(
            "zedops-keycache-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let store = Store::open(None, &dir).await.unwrap();
        let key = KeyPair::from_seed([seed; 32]);
        let (token, _) = store
            .register_agent(name, chrono::Duration::minutes(5), None)
            .await
            .unwrap();
        store.enroll(name, &token, &key.public_hex()).await.unwrap();
        let public = PublicKey::from_hex(&key.public_hex()).unwrap();
        (Arc::new(store), public)
    }

    /// The agents table out of reach: every read of a key fails until it is back.
    async fn break_reads(store: &Store, broken: bool) {
        let sql = if broken {
            "ALTER TABLE agents RENAME TO agents_away"
        } else {
            "ALTER TABLE agents_away RENAME TO agents"
        };
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }

    /// A warm that must come back at once (a hang would hold the MQTT poll loop).
    async fn warm_now(cache: &Arc<KeyCache>, agent: &str) {
        tokio::time::timeout(Duration::from_millis(500), cache.warm(agent))
            .await
            .expect("warm returns without waiting on the database");
    }

    #[tokio::test]
    async fn a_failing_database_keeps_known_keys_and_reads_nothing_for_a_while() {
        let (store, public) = store_with_agent("m", 3).await;
        let cache = Arc::new(KeyCache::with_ttl(store.clone(), Duration::ZERO));
        cache.warm("m").await;
        assert_eq!(cache.get("m"), Some(public.clone()));

        break_reads(&store, true).await;
        // The key is stale (TTL 0): used as it is, read again in the background, which fails.
        warm_now(&cache, "m").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(cache.resting(), "the failed read makes the cache rest");
        assert_eq!(
            cache.get("m"),
            Some(public.clone()),
            "not replaced by the failure"
        );
        // A first sight while resting is not read: unverified, and no wait.
        warm_now(&cache, "newcomer").await;
        assert_eq!(cache.get("newcomer"), None);

        break_reads(&store, false).await;
        *cache.resting_until.lock().unwrap() = None; // the rest is over
        warm_now(&cache, "m").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(cache.get("m"), Some(public));
        assert!(!cache.resting());
    }

    #[tokio::test]
    async fn a_first_sight_with_a_failing_database_is_not_cached_as_unknown() {
        let (store, public) = store_with_agent("m", 4).await;
        let cache = Arc::new(KeyCache::new(store.clone()));
        break_reads(&store, true).await;
        cache.warm("m").await;
        assert_eq!(cache.get("m"), None);
        break_reads(&store, false).await;
        *cache.resting_until.lock().unwrap() = None;
        cache.warm("m").await;
        assert_eq!(
            cache.get("m"),
            Some(public),
            "read once the database answers"
        );
    }
}
