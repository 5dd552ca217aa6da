//! Server-sent events read from a byte stream as it arrives: the client side of a job's log stream (the CLI's
//! `job log --follow`, the tests). Events end with a blank line; the `event:` line names one (`message` when
//! there is none) and its `data:` lines are joined.

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// Its `event:` name, `message` when it has none.
    pub kind: String,
    /// Its `data:` lines, joined.
    pub data: String,
    /// Its `id:` (the log stream's: the offset after the event), if it has one.
    pub id: Option<String>,
}

/// Collects bytes until whole events are there.
#[derive(Debug, Default)]
pub struct SseReader {
    buffer: Vec<u8>,
}

impl SseReader {
    /// Takes the next bytes of the stream; returns the events they completed, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
            let raw: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&raw);
            let kind = text
                .lines()
                .find_map(|l| l.strip_prefix("event:"))
                .map_or("message", str::trim)
                .to_owned();
            let data = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            let id = text
                .lines()
                .find_map(|l| l.strip_prefix("id:"))
                .map(|id| id.trim().to_owned());
            events.push(SseEvent { kind, data, id });
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_reads_come_out_whole_and_named() {
        let mut reader = SseReader::default();
        assert!(reader.push(b"data: {\"a\"").is_empty());
        let events = reader.push(b":1}\nid: 7\n\nevent: end\ndata:\n\n: keep-alive\n\ndata: x");
        let event = |kind: &str, data: &str, id: Option<&str>| SseEvent {
            kind: kind.into(),
            data: data.into(),
            id: id.map(String::from),
        };
        assert_eq!(
            events,
            [
                event("message", "{\"a\":1}", Some("7")),
                event("end", "", None),
                event("message", "", None),
            ]
        );
        assert_eq!(reader.push(b"\n\n")[0].data, "x");
    }
}
