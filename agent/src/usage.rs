//! `--ha-stats INTERVAL`: a stats snapshot of every running container each interval, handed to
//! the main loop, which publishes it (signed, not retained) on `zedops/v1/agents/{agent}/stats`.
//! The server takes it into `/metrics`; with `--ha`, Home Assistant's CPU and memory sensors read
//! it. After the first snapshot each container is asked for one sample ([`crate::docker::Sampler`]),
//! all of them at once, so the cost per interval is one read per container.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::debug;
use zedops_proto::ops::Stats;

use crate::docker::{Driver, Sampler};

/// Samples every `every` until the main loop goes away. A snapshot the loop has not taken yet
/// is replaced, never queued (the channel holds one).
pub async fn sample_every(driver: Driver, every: Duration, tx: mpsc::Sender<Stats>) {
    let mut sampler = Sampler::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match driver.sample(None, &mut sampler).await {
            Ok(stats) => match tx.try_send(stats) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            },
            Err(e) => debug!(error = %e, "no stats this interval"),
        }
    }
}
