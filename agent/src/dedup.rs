//! Safe retries: a request whose correlation data was already executed within its expiry window is
//! answered from the cached reply, not run twice. Bounded: at most `capacity` entries, expired ones
//! dropped first, then the oldest. Every operation is amortised O(1): eviction only looks at the
//! front of the arrival queue (it once scanned the whole cache per request, which was most of the
//! agent's CPU time under load).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Who asked and what: response topic, correlation data, and the SHA-256 of the request topic and
/// payload — a reused correlation for a different request is a new request, not a duplicate
/// (issue 14, item 15).
pub type Key = (String, Bytes, [u8; 32]);

/// The key of a request.
pub fn key(response_topic: &str, correlation: Bytes, topic: &str, payload: &[u8]) -> Key {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((topic.len() as u64).to_be_bytes());
    h.update(topic.as_bytes());
    h.update(payload);
    (response_topic.to_owned(), correlation, h.finalize().into())
}

#[derive(Debug)]
enum Entry {
    Running { expires: Instant },
    Done { reply: Bytes, expires: Instant },
}

impl Entry {
    fn expires(&self) -> Instant {
        match self {
            Entry::Running { expires } | Entry::Done { expires, .. } => *expires,
        }
    }
}

/// What to do with an incoming request.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// First time: execute it.
    New,
    /// Being executed right now: its reply will go to the same response topic.
    Running,
    /// Executed already: send this reply again.
    Done(Bytes),
}

#[derive(Debug)]
pub struct Dedup {
    entries: HashMap<Key, Entry>,
    /// Arrival order with each arrival's expiry; an entry whose key was recorded again later has a
    /// stale expiry here and is skipped when it reaches the front.
    order: VecDeque<(Key, Instant)>,
    capacity: usize,
}

impl Dedup {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records the request (when new) and says what to do with it.
    pub fn check(&mut self, key: &Key, window: Duration, now: Instant) -> Seen {
        if let Some(e) = self.entries.get(key) {
            if e.expires() > now {
                return match e {
                    Entry::Running { .. } => Seen::Running,
                    Entry::Done { reply, .. } => Seen::Done(reply.clone()),
                };
            }
        }
        self.evict(now);
        let expires = now + window;
        self.order.push_back((key.clone(), expires));
        self.entries.insert(key.clone(), Entry::Running { expires });
        Seen::New
    }

    /// Stores the reply of an executed request for the rest of its window.
    pub fn finish(&mut self, key: &Key, reply: Bytes) {
        if let Some(e) = self.entries.get_mut(key) {
            let expires = e.expires();
            *e = Entry::Done { reply, expires };
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops arrivals from the front while they are expired, superseded, or the cache is full.
    fn evict(&mut self, now: Instant) {
        while let Some((key, expires)) = self.order.front() {
            let current = self.entries.get(key).map(Entry::expires);
            let superseded = current != Some(*expires);
            let full = self.entries.len() >= self.capacity || self.order.len() >= 2 * self.capacity;
            if !superseded && *expires > now && !full {
                break;
            }
            if !superseded {
                self.entries.remove(key);
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: &str) -> Key {
        super::key("r", Bytes::from(c.to_owned()), "t/ping", b"{}")
    }

    #[test]
    fn a_reused_correlation_for_another_request_is_new() {
        let mut d = Dedup::new(8);
        let (now, w) = (Instant::now(), Duration::from_secs(30));
        let corr = Bytes::from_static(b"same");
        let stop = super::key(
            "r",
            corr.clone(),
            "t/container.stop",
            br#"{"container":"a"}"#,
        );
        let other = super::key(
            "r",
            corr.clone(),
            "t/container.stop",
            br#"{"container":"b"}"#,
        );
        let ping = super::key("r", corr, "t/ping", br#"{"container":"a"}"#);
        assert_eq!(d.check(&stop, w, now), Seen::New);
        d.finish(&stop, Bytes::from_static(b"stopped a"));
        assert_eq!(d.check(&other, w, now), Seen::New);
        assert_eq!(d.check(&ping, w, now), Seen::New);
        assert_eq!(
            d.check(&stop, w, now),
            Seen::Done(Bytes::from_static(b"stopped a"))
        );
    }

    #[test]
    fn duplicate_is_answered_from_cache() {
        let mut d = Dedup::new(8);
        let now = Instant::now();
        let w = Duration::from_secs(30);
        assert_eq!(d.check(&key("a"), w, now), Seen::New);
        assert_eq!(d.check(&key("a"), w, now), Seen::Running);
        d.finish(&key("a"), Bytes::from_static(b"reply"));
        assert_eq!(
            d.check(&key("a"), w, now),
            Seen::Done(Bytes::from_static(b"reply"))
        );
        // After the window the same correlation data is a new request.
        assert_eq!(
            d.check(&key("a"), w, now + w + Duration::from_secs(1)),
            Seen::New
        );
    }

    #[test]
    fn expired_entries_leave_and_renewed_keys_survive() {
        let mut d = Dedup::new(100);
        let now = Instant::now();
        let short = Duration::from_secs(1);
        assert_eq!(d.check(&key("a"), short, now), Seen::New);
        assert_eq!(d.check(&key("b"), short, now), Seen::New);
        // "a" expires and is asked again with a long window: its old arrival is stale.
        let later = now + Duration::from_secs(2);
        assert_eq!(
            d.check(&key("a"), Duration::from_secs(60), later),
            Seen::New
        );
        assert_eq!(d.len(), 1, "b expired and left");
        assert_eq!(
            d.check(&key("a"), Duration::from_secs(60), later),
            Seen::Running
        );
        assert_eq!(d.order.len(), 1);
    }

    #[test]
    fn bounded() {
        let mut d = Dedup::new(4);
        let now = Instant::now();
        for i in 0..100 {
            d.check(&key(&i.to_string()), Duration::from_secs(60), now);
        }
        assert!(d.len() <= 4);
        assert!(d.order.len() <= 8, "the arrival queue stays bounded too");
        // The newest survive.
        assert_eq!(
            d.check(&key("99"), Duration::from_secs(60), now),
            Seen::Running
        );
    }
}
