//! One stream's flow control: chunk `seq` may go while `seq < acked + window`; an ack moves
//! `acked` and renews the lease; with no ack for the lease the stream has expired.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use zedops_proto::stream::{self as wire, EndReason};

#[derive(Debug, Clone, Copy)]
struct State {
    /// One past the highest chunk acknowledged.
    acked: u64,
    /// The last ack (or the start).
    renewed: Instant,
    cancelled: bool,
}

pub(crate) struct Flow {
    state: watch::Sender<State>,
    window: u64,
    lease: Duration,
}

impl Flow {
    pub(crate) fn new(terms: wire::Flow) -> Self {
        let state = State {
            acked: 0,
            renewed: Instant::now(),
            cancelled: false,
        };
        Self {
            state: watch::Sender::new(state),
            window: terms.window.into(),
            lease: Duration::from_secs(terms.lease_s.into()),
        }
    }

    /// The requester consumed every chunk up to `seq` (if given) and is alive.
    pub(crate) fn ack(&self, seq: Option<u64>) {
        self.state.send_modify(|s| {
            s.renewed = Instant::now();
            if let Some(seq) = seq {
                s.acked = s.acked.max(seq.saturating_add(1));
            }
        });
    }

    pub(crate) fn cancel(&self) {
        self.state.send_modify(|s| s.cancelled = true);
    }

    /// Why the stream must end now, if it must.
    fn ending(&self, s: &State) -> Option<EndReason> {
        if s.cancelled {
            Some(EndReason::Cancelled)
        } else if s.renewed.elapsed() >= self.lease {
            Some(EndReason::Expired)
        } else {
            None
        }
    }

    /// Waits until chunk `seq` may be sent; `Err` when the stream ends first.
    pub(crate) async fn credit(&self, seq: u64) -> Result<(), EndReason> {
        self.wait(|s| seq < s.acked.saturating_add(self.window))
            .await
    }

    /// Resolves when the stream is cancelled or its lease runs out.
    pub(crate) async fn ended(&self) -> EndReason {
        match self.wait(|_| false).await {
            Ok(()) => EndReason::Cancelled,
            Err(r) => r,
        }
    }

    async fn wait(&self, ready: impl Fn(&State) -> bool) -> Result<(), EndReason> {
        let mut rx = self.state.subscribe();
        loop {
            let s = *rx.borrow_and_update();
            if let Some(r) = self.ending(&s) {
                return Err(r);
            }
            if ready(&s) {
                return Ok(());
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep_until(s.renewed + self.lease) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(window: u32, lease_s: u32) -> Flow {
        Flow::new(wire::Flow { window, lease_s })
    }

    #[tokio::test(start_paused = true)]
    async fn credit_follows_acks() {
        let f = flow(2, 30);
        assert!(f.credit(0).await.is_ok());
        assert!(f.credit(1).await.is_ok());
        // Chunk 2 waits for an ack of chunk 0…
        let waiting = tokio::time::timeout(Duration::from_secs(5), f.credit(2)).await;
        assert!(waiting.is_err());
        f.ack(Some(0));
        assert!(f.credit(2).await.is_ok());
        // …and an old ack moves nothing back.
        f.ack(None);
        assert!(f.credit(2).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_runs_out_without_acks() {
        let f = flow(1, 3);
        tokio::time::sleep(Duration::from_secs(2)).await;
        f.ack(None);
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Renewed at 2 s: alive at 4 s, expired at 5 s.
        assert_eq!(f.credit(1).await, Err(EndReason::Expired));
        let f = flow(1, 3);
        f.cancel();
        assert_eq!(f.ended().await, EndReason::Cancelled);
    }
}
