//! Which connection holds each client id. A second connection with a client id takes the
//! session over (the router closes the first link): the first connection learns it here, so it
//! neither sends the router anything more under its old link id (which the router may already
//! have given the newcomer) nor publishes its Last Will (the client is evidently there).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One connection's hold on its client id.
#[derive(Debug)]
pub(crate) struct Claim {
    serial: u64,
    taken: Arc<AtomicBool>,
}

impl Claim {
    /// True once a newer connection with the same client id has taken the session over.
    pub(crate) fn taken_over(&self) -> bool {
        self.taken.load(Ordering::Acquire)
    }
}

/// Client id → the connection holding it; at most one entry per connection.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    held: Mutex<HashMap<String, (u64, Arc<AtomicBool>)>>,
    serial: AtomicU64,
}

impl Sessions {
    /// Takes `client_id` for a new connection, telling the connection that held it.
    pub(crate) fn claim(&self, client_id: &str) -> Claim {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let taken = Arc::new(AtomicBool::new(false));
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, old)) = held.insert(client_id.to_owned(), (serial, taken.clone())) {
            old.store(true, Ordering::Release);
        }
        Claim { serial, taken }
    }

    /// Gives `client_id` up, unless a newer connection holds it now.
    pub(crate) fn release(&self, client_id: &str, claim: &Claim) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.get(client_id).is_some_and(|(s, _)| *s == claim.serial) {
            held.remove(client_id);
        }
    }

    /// Whether some connection holds `client_id`.
    pub(crate) fn held(&self, client_id: &str) -> bool {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.contains_key(client_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_takes_over_and_the_first_release_keeps_it() {
        let s = Sessions::default();
        let first = s.claim("a");
        assert!(!first.taken_over());
        let second = s.claim("a");
        assert!(first.taken_over());
        assert!(!second.taken_over());
        s.release("a", &first);
        assert!(s.held("a"), "the newer connection still holds it");
        s.release("a", &second);
        assert!(!s.held("a"));
    }
}
