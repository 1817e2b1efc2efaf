//! A stats stream: a snapshot of one container, or of every running one, every interval. After
//! the first, each snapshot asks Docker for one sample and takes CPU % over the interval.

use std::time::Duration;

use tokio::time::MissedTickBehavior;

use super::{Sink, Stop};
use crate::docker::{Resolved, Sampler};
use crate::handlers::Ctx;

/// Sends a snapshot every `every` until the requester ends the stream or a named container's
/// read fails (it was removed, say).
pub(super) async fn every(
    ctx: &Ctx,
    target: Option<&Resolved>,
    every: Duration,
    sink: &mut Sink,
) -> Result<(), Stop> {
    let mut sampler = Sampler::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            stop = sink.ended() => return Err(stop),
            _ = tick.tick() => {}
        }
        let snapshot = ctx.driver.sample(target, &mut sampler).await?;
        sink.send(&snapshot).await?;
    }
}
