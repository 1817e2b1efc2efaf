//! Following a container's output: lines as Docker sends them, batched into chunks of at most
//! [`MAX_CHUNK_BYTES`] or [`BATCH_MS`] of waiting, whichever comes first. While the requester
//! grants no credit, Docker's stream is not read at all.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use zedops_proto::ops::{LogChunk, LogLine};
use zedops_proto::stream::{BATCH_MS, MAX_CHUNK_BYTES};

use super::{Sink, Stop};
use crate::docker::{LogQuery, Resolved};
use crate::handlers::Ctx;

/// Lines waiting to be sent, and when the first of them arrived.
struct Batch {
    container: String,
    lines: Vec<LogLine>,
    bytes: usize,
    since: Option<Instant>,
}

impl Batch {
    fn new(container: &str) -> Self {
        Self {
            container: container.to_owned(),
            lines: Vec::new(),
            bytes: 0,
            since: None,
        }
    }

    /// Adds a line (cut to fit one chunk alone). When it would not fit beside the lines held,
    /// those are handed back first, as the chunk to send now.
    fn push(&mut self, mut line: LogLine) -> Option<LogChunk> {
        let budget = MAX_CHUNK_BYTES - 256;
        while LogLine::encoded_len(&line.stream, &line.text) > budget {
            let keep = line.text.len() / 2;
            let cut = (0..=keep)
                .rev()
                .find(|i| line.text.is_char_boundary(*i))
                .unwrap_or(0);
            line.text.truncate(cut);
        }
        let len = LogLine::encoded_len(&line.stream, &line.text);
        let full = (!self.lines.is_empty() && self.bytes + len > budget).then(|| self.take());
        self.bytes += len;
        self.lines.push(line);
        self.since.get_or_insert_with(Instant::now);
        full
    }

    fn due(&self) -> Option<Instant> {
        self.since.map(|t| t + Duration::from_millis(BATCH_MS))
    }

    fn take(&mut self) -> LogChunk {
        self.bytes = 0;
        self.since = None;
        LogChunk {
            container: self.container.clone(),
            lines: std::mem::take(&mut self.lines),
        }
    }
}

/// Sends `t`'s lines as they come until the container stops (`Ok`), the requester ends the
/// stream, or Docker fails.
pub(super) async fn follow(
    ctx: &Ctx,
    t: &Resolved,
    q: &LogQuery,
    sink: &mut Sink,
) -> Result<(), Stop> {
    let mut lines = ctx.driver.log_lines(t, q, true)?;
    let mut batch = Batch::new(&t.name);
    loop {
        let due = batch.due();
        tokio::select! {
            biased;
            stop = sink.ended() => return Err(stop),
            _ = sleep_until(due), if due.is_some() => sink.send(&batch.take()).await?,
            item = lines.next() => match item {
                None => {
                    if !batch.lines.is_empty() {
                        sink.send(&batch.take()).await?;
                    }
                    return Ok(());
                }
                Some(Err(e)) => return Err(ctx.driver.log_error(e).into()),
                Some(Ok(None)) => {}
                Some(Ok(Some(line))) => {
                    if let Some(full) = batch.push(line) {
                        sink.send(&full).await?;
                    }
                }
            },
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_fill_and_long_lines_are_cut() {
        let mut b = Batch::new("web");
        let line = |n: usize| LogLine {
            stream: "stdout".into(),
            text: "x".repeat(n),
        };
        assert!(b.push(line(10)).is_none());
        assert!(b.due().is_some());
        // A line three chunks long is cut to fit one; beside another, the batch is full.
        assert!(b.push(line(MAX_CHUNK_BYTES * 3)).is_none());
        let full = b.push(line(MAX_CHUNK_BYTES * 3)).unwrap();
        assert_eq!(full.lines.len(), 2);
        assert!(serde_json::to_vec(&full).unwrap().len() <= MAX_CHUNK_BYTES);
        // What made it full starts the next batch.
        assert_eq!(b.lines.len(), 1);
        assert!(serde_json::to_vec(&b.take()).unwrap().len() <= MAX_CHUNK_BYTES);
        assert!(b.due().is_none() && b.lines.is_empty());
        // Control characters cost six bytes each once encoded.
        assert!(b
            .push(LogLine {
                stream: "stderr".into(),
                text: "\u{1}".repeat(MAX_CHUNK_BYTES),
            })
            .is_none());
        assert!(serde_json::to_vec(&b.take()).unwrap().len() <= MAX_CHUNK_BYTES);
    }
}
