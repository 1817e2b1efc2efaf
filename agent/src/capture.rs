//! Bounded output of a command (`container.exec`, operator-defined actions): the first `max`
//! bytes of a stream, and whether more came. The rest is read and dropped, so the command never
//! blocks on a full pipe. Also the command's duration as its result reports it.

pub(crate) struct Capture {
    bytes: Vec<u8>,
    max: usize,
    pub(crate) truncated: bool,
}

impl Capture {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            bytes: Vec::new(),
            max,
            truncated: false,
        }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) {
        let room = self.max.saturating_sub(self.bytes.len());
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
        self.truncated |= chunk.len() > room;
    }

    /// The output as text, invalid UTF-8 replaced.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Milliseconds since `started`, as `CommandResult::duration_ms`.
pub(crate) fn elapsed_ms(started: std::time::Instant) -> u64 {
    started.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
}
