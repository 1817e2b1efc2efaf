//! Which broker a client tries next, and when (feature `client`; `docs/operations.md` §
//! "Failover"). The agent and the API both take several broker URLs: they connect to the first,
//! and each failed attempt moves them to the next one, round and round. The first retry after a
//! connection that was up is lost waits a random part of [`SCATTER`], so that the agents of a
//! broker node that died do not all arrive at the next node in the same instant.

use std::time::Duration;

use crate::client::Backoff;
use crate::BrokerUrl;

/// The first retry after a lost connection waits a uniformly random time up to this long.
pub const SCATTER: Duration = Duration::from_millis(1500);

/// The brokers a client may use, the one it uses now, and its reconnect delays.
#[derive(Debug, Clone)]
pub struct Failover {
    urls: Vec<BrokerUrl>,
    at: usize,
    backoff: Backoff,
    /// The last attempt reached a CONNACK: the next failure is a lost connection.
    connected: bool,
}

impl Failover {
    /// `first`, then `rest` in order; `backoff` spaces the attempts that fail.
    pub fn new(first: BrokerUrl, rest: Vec<BrokerUrl>, backoff: Backoff) -> Self {
        let mut urls = vec![first];
        urls.extend(rest);
        Self {
            urls,
            at: 0,
            backoff,
            connected: false,
        }
    }

    /// The broker to connect to now.
    pub fn current(&self) -> &BrokerUrl {
        &self.urls[self.at]
    }

    /// Every broker, in order.
    pub fn urls(&self) -> &[BrokerUrl] {
        &self.urls
    }

    /// A CONNACK: the delays start over.
    pub fn connected(&mut self) {
        self.backoff.reset();
        self.connected = true;
    }

    /// A failure (an attempt, or the connection that was up). Returns how long to wait, and
    /// whether the client must now connect to another broker ([`Failover::current`] changed).
    /// A lost connection is retried once on the same broker (a blip, a broker restarting) after
    /// a scattered wait; a failed attempt moves on to the next broker.
    pub fn failed(&mut self) -> (Duration, bool) {
        if std::mem::take(&mut self.connected) {
            return (SCATTER.mul_f64(rand::random_range(0.0..1.0)), false);
        }
        let delay = self.backoff.next_delay();
        if self.urls.len() == 1 {
            return (delay, false);
        }
        self.at = (self.at + 1) % self.urls.len();
        (delay, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str) -> BrokerUrl {
        BrokerUrl {
            host: host.into(),
            port: 1883,
            tls: false,
        }
    }

    fn failover() -> Failover {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        Failover::new(url("a"), vec![url("b"), url("c")], backoff)
    }

    #[test]
    fn failed_attempts_go_round_the_brokers() {
        let mut f = failover();
        let mut seen = vec![f.current().host.clone()];
        for _ in 0..4 {
            let (_, moved) = f.failed();
            assert!(moved);
            seen.push(f.current().host.clone());
        }
        assert_eq!(seen, ["a", "b", "c", "a", "b"]);
    }

    #[test]
    fn a_lost_connection_is_retried_in_place_after_a_scattered_wait() {
        let mut f = failover();
        f.failed();
        f.connected();
        let (wait, moved) = f.failed();
        assert!(!moved && wait <= SCATTER);
        assert_eq!(f.current().host, "b");
        let (wait, moved) = f.failed();
        assert!(moved && wait <= Duration::from_millis(125), "{wait:?}");
        assert_eq!(f.current().host, "c");
    }

    #[test]
    fn scattered_waits_spread() {
        let waits: Vec<Duration> = (0..50)
            .map(|_| {
                let mut f = failover();
                f.connected();
                f.failed().0
            })
            .collect();
        let (min, max) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
        assert!(*max - *min > SCATTER / 2, "{min:?}..{max:?}");
    }

    #[test]
    fn one_broker_never_moves() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut f = Failover::new(url("a"), Vec::new(), backoff);
        assert!(!f.failed().1);
        assert_eq!(f.current().host, "a");
    }
}
