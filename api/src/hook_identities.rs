//! Who the broker hook's connections are, kept for a few seconds.
//!
//! An external broker asks the hook once when a client connects (with its password) and then once
//! per publish and per subscription (`routes/broker.rs`). An agent that connects publishes some 27
//! times at once (status, snapshot, a topic per container) and subscribes twice: without this
//! cache each question was one database read. Here the connection's answer serves its ACL
//! questions for [`IDENTITY_TTL`]; after that the database is read again, so a removed agent or
//! MQTT user is refused at most [`IDENTITY_TTL`] after its removal, on every replica.
//!
//! Only identities that exist are kept: a client the database does not know is asked about again,
//! so an agent enrolled a moment ago is never refused on an old answer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zedops_proto::acl::Identity;

/// How long an identity answers ACL questions before the database is read again.
pub const IDENTITY_TTL: Duration = Duration::from_secs(10);
/// Most identities kept (a 10 000-agent fleet connecting at once keeps far fewer within the TTL).
pub const MAX_IDENTITIES: usize = 65_536;

/// (client id, username) → the identity and when it was read.
type Entries = HashMap<(String, String), (Identity, Instant)>;

pub struct HookIdentities {
    ttl: Duration,
    max: usize,
    entries: Mutex<Entries>,
}

impl Default for HookIdentities {
    fn default() -> Self {
        Self::new(IDENTITY_TTL, MAX_IDENTITIES)
    }
}

impl HookIdentities {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The identity of this connection, if read within the TTL.
    pub fn get(&self, client_id: &str, user: &str) -> Option<Identity> {
        let key = (client_id.to_owned(), user.to_owned());
        let entries = self.lock();
        let (who, at) = entries.get(&key)?;
        (at.elapsed() < self.ttl).then(|| who.clone())
    }

    /// Keeps `who` for this connection. When full, expired entries go first; if none has expired,
    /// nothing is kept (the next question reads the database, as it did before this cache).
    pub fn put(&self, client_id: &str, user: &str, who: Identity) {
        let mut entries = self.lock();
        if entries.len() >= self.max {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= self.max {
                return;
            }
        }
        let key = (client_id.to_owned(), user.to_owned());
        entries.insert(key, (who, Instant::now()));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(n: &str) -> Identity {
        Identity::Agent(n.into())
    }

    #[test]
    fn an_identity_answers_for_its_connection_only_and_only_within_the_ttl() {
        let c = HookIdentities::new(Duration::from_millis(50), 10);
        c.put("zedops-agent-a", "a", agent("a"));
        assert_eq!(c.get("zedops-agent-a", "a"), Some(agent("a")));
        assert_eq!(c.get("zedops-agent-a", "b"), None, "another username");
        assert_eq!(c.get("zedops-agent-b", "a"), None, "another client id");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get("zedops-agent-a", "a"), None, "expired");
    }

    #[test]
    fn a_full_cache_makes_room_from_expired_entries_and_else_keeps_nothing_new() {
        let c = HookIdentities::new(Duration::from_millis(50), 2);
        c.put("c1", "u1", agent("1"));
        c.put("c2", "u2", agent("2"));
        c.put("c3", "u3", agent("3"));
        assert_eq!(c.len(), 2, "bounded");
        assert_eq!(c.get("c3", "u3"), None, "nothing new while all are fresh");
        assert_eq!(c.get("c1", "u1"), Some(agent("1")), "the fresh ones stay");
        std::thread::sleep(Duration::from_millis(60));
        c.put("c3", "u3", agent("3"));
        assert_eq!(c.len(), 1, "the expired ones made room");
        assert_eq!(c.get("c3", "u3"), Some(agent("3")));
    }
}
