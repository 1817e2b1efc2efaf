//! Server-Sent Events framing, as `GET /api/v1/events` sends it. Every reader of that stream (the
//! CLI's `zedops events`, the tests, the benchmarks) splits it with this one parser.

/// Bytes of an event stream not yet split into events.
#[derive(Debug, Default)]
pub struct SseBuffer {
    buf: Vec<u8>,
}

/// One event: its `event:` type (`message` when absent) and its `data:` lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

impl SseBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a chunk as it arrived (it may end anywhere, even inside a character).
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes held that are not yet a complete event: a reader bounds this, so that a stream that
    /// never ends an event cannot grow it without limit.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete event that carries data; keep-alive comments and empty events are
    /// skipped. `None` until more bytes arrive.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        while let Some(i) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.buf.drain(..i + 2).collect();
            let block = String::from_utf8_lossy(&block);
            let mut event = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !data.is_empty() {
                return Some(SseEvent { event, data });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_chunks_and_skips_keep_alives() {
        let stream =
            ": keep-alive\n\nevent: container\ndata: {\"x\":\"é\"}\n\ndata: 2\n\n".as_bytes();
        // Cut inside "data:" and inside the two bytes of "é".
        let e = stream.iter().position(|&b| b == 0xc3).unwrap();
        let mut b = SseBuffer::new();
        b.push(&stream[..20]);
        assert_eq!(b.next_event(), None);
        b.push(&stream[20..e + 1]);
        assert_eq!(b.next_event(), None);
        b.push(&stream[e + 1..]);
        assert_eq!(
            b.next_event(),
            Some(SseEvent {
                event: "container".into(),
                data: "{\"x\":\"é\"}".into()
            })
        );
        assert_eq!(
            b.next_event(),
            Some(SseEvent {
                event: "message".into(),
                data: "2".into()
            })
        );
        assert_eq!(b.next_event(), None);
    }
}
