//! Admission: how much of the server one token may hold at once — requests to agents waiting for
//! their replies, and open event streams — so that one caller (a viewer's script in a loop, a
//! dashboard left open in 50 tabs) cannot take every slot and starve the others. Over a bound, the
//! caller gets `429 busy` at once, never a queue. See `docs/security.md` § "Hostile clients".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use zedops_proto::{ErrorBody, ErrorCode};

use crate::auth::Principal;

/// The bounds; `zedops serve` sets them from its flags.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests to agents one token may have waiting for replies.
    pub requests_per_token: usize,
    /// Event streams one token may hold open.
    pub streams_per_token: usize,
    /// Event streams the server holds open, all tokens together.
    pub streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            requests_per_token: 64,
            streams_per_token: 32,
            streams: 1024,
        }
    }
}

/// Counted slots of one kind, per token and in total.
pub struct Slots {
    what: &'static str,
    per_token: usize,
    total: usize,
    held: Mutex<Held>,
}

/// Slots held now: per token (entries go when their count reaches zero, so there are at most
/// `Slots::total` entries), and their sum.
#[derive(Default)]
struct Held {
    by_token: HashMap<String, usize>,
    sum: usize,
}

/// One slot, given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    who: String,
}

impl Slots {
    pub fn new(what: &'static str, per_token: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            what,
            per_token: per_token.max(1),
            total: total.max(1),
            held: Mutex::new(Held::default()),
        })
    }

    /// A slot for `caller`, or `busy`. Without authentication every caller is the same anonymous
    /// principal, so only the total applies.
    pub fn take(self: &Arc<Self>, caller: &Principal) -> Result<Slot, ErrorBody> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.sum >= self.total {
            return Err(busy(format!(
                "this server already holds {} {}; retry shortly",
                self.total, self.what
            )));
        }
        let mine = held.by_token.get(&caller.name).copied().unwrap_or(0);
        if caller.authenticated && mine >= self.per_token {
            return Err(busy(format!(
                "token {} already holds {} {} (the limit per token); wait for one to finish, or use another token",
                caller.name, self.per_token, self.what
            )));
        }
        held.by_token.insert(caller.name.clone(), mine + 1);
        held.sum += 1;
        Ok(Slot {
            slots: self.clone(),
            who: caller.name.clone(),
        })
    }

    /// Slots held now, all tokens together.
    pub fn in_use(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).sum
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.by_token.get_mut(&self.who) {
            *n -= 1;
            if *n == 0 {
                held.by_token.remove(&self.who);
            }
            held.sum -= 1;
        }
    }
}

fn busy(message: String) -> ErrorBody {
    ErrorBody::new(ErrorCode::Busy, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn who(name: &str, authenticated: bool) -> Principal {
        Principal {
            name: name.into(),
            role: Role::Viewer,
            authenticated,
        }
    }

    #[test]
    fn one_token_cannot_take_every_slot() {
        let slots = Slots::new("requests", 2, 3);
        let (a, b) = (who("a", true), who("b", true));
        let first = slots.take(&a).unwrap();
        let _second = slots.take(&a).unwrap();
        let refused = slots.take(&a).err().unwrap();
        assert_eq!(refused.code, ErrorCode::Busy);
        assert!(refused.message.contains("token a"), "{}", refused.message);
        let _other = slots.take(&b).unwrap();
        assert_eq!(slots.take(&b).err().unwrap().code, ErrorCode::Busy);
        drop(first);
        assert!(slots.take(&a).is_ok());
        assert_eq!(slots.in_use(), 2);
    }

    #[test]
    fn slots_come_back_and_entries_go() {
        let slots = Slots::new("streams", 1, 10);
        for _ in 0..100 {
            let _s = slots.take(&who("a", true)).unwrap();
        }
        assert_eq!(slots.in_use(), 0);
        assert!(slots.held.lock().unwrap().by_token.is_empty());
    }

    #[test]
    fn without_authentication_only_the_total_applies() {
        let slots = Slots::new("requests", 1, 2);
        let anon = who("anonymous", false);
        let _a = slots.take(&anon).unwrap();
        let _b = slots.take(&anon).unwrap();
        assert_eq!(slots.take(&anon).err().unwrap().code, ErrorCode::Busy);
    }
}
