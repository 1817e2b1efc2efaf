//! Which broker a client tries next, and when (feature `client`; `docs/operations.md` §
//! "Failover"). The agent and the API both take several broker URLs: they connect to the first,
//! and each failed attempt moves them to the next one, round and round. The first retry after a
//! connection that was up is lost waits a random part of [`SCATTER`], so that the agents of a
//! broker node that died do not all arrive at the next node in the same instant.
//!
//! How long an attempt may wait for its CONNACK depends on what else there is to try
//! ([`Failover::connect_timeout_s`]): with one broker, long (a broker busy with a connection storm
//! answers late, and a client that gives up and comes back makes the storm worse); with several,
//! short at first (a cluster node in the middle of an election accepts the TCP connection and
//! answers nothing, and the next node may be ready), growing with each round of failures.

use std::time::Duration;

use crate::client::Backoff;
use crate::BrokerUrl;

/// The first retry after a lost connection waits a uniformly random time up to this long.
pub const SCATTER: Duration = Duration::from_millis(1500);
/// The handshake deadline of a client with one broker, and the most any attempt waits.
pub const LONE_TIMEOUT_S: u64 = 30;
/// The handshake deadline of a client with other brokers to try, until attempts time out; it
/// doubles with each round's worth of attempts that timed out, up to [`LONE_TIMEOUT_S`].
pub const FIRST_TIMEOUT_S: u64 = 3;

/// The longest wait between two rounds of the brokers when every attempt of the round was
/// refused at once (a CONNACK refusal, a refused TCP connection), not timed out: a cluster that
/// answers "server unavailable" during an election, or the dead node's refused port. The wait is
/// drawn with full jitter up to this (mean ~1 s), so a client is back within ~2 s of the cluster;
/// rounds with a timeout (a broker too busy to answer) keep doubling to the backoff's maximum.
pub const REFUSED_ROUND_CAP: Duration = Duration::from_secs(2);

/// After a reconnect (not its first connection) an agent republishes its status and snapshot at
/// once, and its per-container topics and Home Assistant's discovery after a random wait up to
/// this long. The API reads only status and snapshot, so the fleet is visible as soon as it is
/// back; the 25-odd retained messages per agent that follow are spread out instead of landing on
/// the broker together with the whole fleet's reconnections: on a cluster that lost a node they
/// are still retained on the others, and on a broker that restarted empty they come back within
/// this long.
pub const PER_CONTAINER_SPREAD: Duration = Duration::from_secs(5);

/// What a client does after a failure ([`Failover::retry`]): wait `delay`, then connect to
/// [`Failover::current`] (another broker than before when `moved`) with a handshake deadline of
/// `timeout_s` seconds.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub delay: Duration,
    pub moved: bool,
    pub timeout_s: u64,
}

impl Retry {
    /// `delay` in whole milliseconds, for logs.
    pub fn delay_ms(&self) -> u64 {
        u64::try_from(self.delay.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The brokers a client may use, the one it uses now, and its reconnect delays.
#[derive(Debug, Clone)]
pub struct Failover {
    urls: Vec<BrokerUrl>,
    at: usize,
    backoff: Backoff,
    /// The last attempt reached a CONNACK: the next failure is a lost connection.
    connected: bool,
    /// Failed attempts since the last CONNACK.
    attempts: u32,
    /// Of those, the attempts that timed out ([`Failover::timed_out`]).
    timeouts: u32,
    /// Whether an attempt of the round in progress timed out.
    round_timed_out: bool,
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
            attempts: 0,
            timeouts: 0,
            round_timed_out: false,
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
        self.attempts = 0;
        self.timeouts = 0;
        self.round_timed_out = false;
    }

    /// A failure, as [`Failover::failed`]; `timed_out` when the attempt ran out of time (no
    /// CONNACK within [`Failover::connect_timeout_s`]). What to do next, deadline included.
    pub fn retry(&mut self, timed_out: bool) -> Retry {
        if timed_out {
            self.timeouts = self.timeouts.saturating_add(1);
            self.round_timed_out = true;
        }
        let (delay, moved) = self.failed();
        Retry {
            delay,
            moved,
            timeout_s: self.connect_timeout_s(),
        }
    }

    /// Seconds the next attempt may take until its CONNACK: [`LONE_TIMEOUT_S`] with one broker;
    /// with several, [`FIRST_TIMEOUT_S`] doubled for each round's worth of attempts that timed
    /// out (a quick refusal says nothing about how long a handshake takes).
    pub fn connect_timeout_s(&self) -> u64 {
        let n = self.urls.len() as u32;
        if n == 1 {
            return LONE_TIMEOUT_S;
        }
        let rounds = (self.timeouts / n).min(8);
        (FIRST_TIMEOUT_S << rounds).min(LONE_TIMEOUT_S)
    }

    /// A failure (an attempt, or the connection that was up). Returns how long to wait, and
    /// whether the client must now connect to another broker ([`Failover::current`] changed).
    /// A lost connection is retried once on the same broker (a blip, a broker restarting) after
    /// a scattered wait; a failed attempt moves on to the next broker. Within a round of the
    /// brokers the next one is tried after the backoff's shortest delay; each round that fails
    /// as a whole waits the next, doubled, delay with full jitter — so a cluster that refuses
    /// everyone for a few seconds (an election) does not leave its clients waiting long after
    /// it is back, and the clients of a dead node are spread over the whole interval. A round
    /// refused at once throughout waits at most [`REFUSED_ROUND_CAP`].
    pub fn failed(&mut self) -> (Duration, bool) {
        if std::mem::take(&mut self.connected) {
            return (SCATTER.mul_f64(rand::random_range(0.0..1.0)), false);
        }
        self.attempts = self.attempts.saturating_add(1);
        let n = self.urls.len();
        if n == 1 {
            return (self.backoff.next_delay(), false);
        }
        self.at = (self.at + 1) % n;
        let round_done = self.attempts % n as u32 == 0;
        let delay = if round_done {
            let cap = match std::mem::take(&mut self.round_timed_out) {
                true => None,
                false => Some(REFUSED_ROUND_CAP),
            };
            self.backoff.next_full_jitter(cap)
        } else {
            self.backoff.shortest()
        };
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
    fn delays_stay_short_within_a_round_and_double_per_round() {
        let mut f = failover();
        let waits: Vec<Duration> = (0..9).map(|_| f.failed().0).collect();
        let short = Duration::from_millis(125);
        for (i, w) in waits.iter().enumerate() {
            let round_end = (i + 1) % 3 == 0;
            assert!(round_end || *w <= short, "attempt {i}: {w:?}");
        }
        // The rounds' ends: full jitter over 100, 200, 400 ms (at least the 100 ms minimum).
        let ends = [waits[2], waits[5], waits[8]];
        let bounds = [100, 200, 400].map(Duration::from_millis);
        for (end, bound) in ends.iter().zip(bounds) {
            assert!(
                *end >= Duration::from_millis(100) && *end <= bound,
                "{ends:?}"
            );
        }
    }

    #[test]
    fn rounds_refused_at_once_wait_at_most_the_cap_and_rounds_with_a_timeout_keep_doubling() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut f = Failover::new(url("a"), vec![url("b"), url("c")], backoff);
        // Twenty rounds refused at once: the base is at its 10 s maximum by now, the wait is not.
        let refused: Vec<Duration> = (0..60).map(|_| f.retry(false).delay).collect();
        assert!(
            refused.iter().all(|d| *d <= REFUSED_ROUND_CAP),
            "{refused:?}"
        );
        // Rounds with a timeout: the full base (10 s) again, so waits beyond the cap show up.
        let timed_out: Vec<Duration> = (0..60)
            .map(|i| f.retry(i % 3 == 0).delay)
            .filter(|d| *d > Duration::from_millis(125))
            .collect();
        assert!(
            timed_out.iter().any(|d| *d > REFUSED_ROUND_CAP),
            "{timed_out:?}"
        );
    }

    #[test]
    fn handshake_deadlines_start_short_with_other_brokers_and_grow_per_round() {
        let mut f = failover();
        assert_eq!(f.connect_timeout_s(), FIRST_TIMEOUT_S);
        for _ in 0..6 {
            f.failed(); // refused at once: the deadline stays
        }
        assert_eq!(f.connect_timeout_s(), FIRST_TIMEOUT_S);
        let mut seen = Vec::new();
        for _ in 0..12 {
            seen.push(f.retry(true).timeout_s);
        }
        assert_eq!(seen, [3, 3, 6, 6, 6, 12, 12, 12, 24, 24, 24, 30]);
        f.connected();
        f.failed(); // the lost connection itself is not a failed attempt
        assert_eq!(f.connect_timeout_s(), FIRST_TIMEOUT_S);
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let lone = Failover::new(url("a"), Vec::new(), backoff);
        assert_eq!(lone.connect_timeout_s(), LONE_TIMEOUT_S);
    }

    #[test]
    fn one_broker_never_moves() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut f = Failover::new(url("a"), Vec::new(), backoff);
        assert!(!f.failed().1);
        assert_eq!(f.current().host, "a");
    }
}
