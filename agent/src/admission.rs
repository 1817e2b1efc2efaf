//! Request admission: how many requests run at once. Reads (ping, lists, inspect, logs) and
//! container actions have separate slots, so a caller flooding the agent with slow reads (say,
//! `logs?tail=10000` in a loop) never makes a `stop` wait: actions never queue behind reads.
//! Waiting for a slot counts against the request's deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Admission {
    reads: Arc<Semaphore>,
    actions: Arc<Semaphore>,
}

impl Admission {
    pub fn new(reads: usize, actions: usize) -> Self {
        Self {
            reads: Arc::new(Semaphore::new(reads.max(1))),
            actions: Arc::new(Semaphore::new(actions.max(1))),
        }
    }

    /// A slot for op `op`, waiting at most `wait` (forever with `None`); `None` when none came.
    pub async fn enter(&self, op: &str, wait: Option<Duration>) -> Option<OwnedSemaphorePermit> {
        let pool = if zedops_proto::actions::changes_state(op) {
            &self.actions
        } else {
            &self.reads
        };
        let acquire = pool.clone().acquire_owned();
        match wait {
            Some(w) => tokio::time::timeout(w, acquire).await.ok()?.ok(),
            None => acquire.await.ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zedops_proto::ops::{ContainerLogs, ContainerStop, ContainersList, Op};

    #[tokio::test]
    async fn actions_do_not_wait_behind_reads() {
        let adm = Admission::new(2, 1);
        let short = Some(Duration::from_millis(50));
        let _r1 = adm.enter(ContainerLogs::NAME, short).await.unwrap();
        let _r2 = adm.enter(ContainersList::NAME, short).await.unwrap();
        // Every read slot is taken: another read waits out its deadline…
        assert!(adm.enter(ContainerLogs::NAME, short).await.is_none());
        // …while an action runs at once.
        let stop = adm.enter(ContainerStop::NAME, short).await;
        assert!(stop.is_some());
        assert!(adm.enter(ContainerStop::NAME, short).await.is_none());
        drop(stop);
        assert!(adm.enter(ContainerStop::NAME, short).await.is_some());
    }
}
