//! An incremental Server-Sent Events parser: bytes in as they arrive, complete events out. Handles events
//! split across chunks, LF, CRLF and lone CR line ends, multi-line `data`, and comment lines.

/// One dispatched event. `event` is empty when the stream named none (the SSE default, "message").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended on CR: a LF at the start of the next one belongs to that line end.
    skip_lf: bool,
    event: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in chunk {
            if self.skip_lf {
                self.skip_lf = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.end_line(&mut out);
                    self.skip_lf = true;
                }
                _ => self.line.push(b),
            }
        }
        out
    }

    /// The stream ended: an event that lacked its closing blank line is still delivered.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            self.end_line(&mut out);
        }
        self.dispatch(&mut out);
        out
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        let line = String::from_utf8_lossy(&line);
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = value.to_string(),
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        if self.has_data {
            self.has_data = false;
            out.push(SseEvent {
                event,
                data: std::mem::take(&mut self.data),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_split(input: &[u8], at: usize) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let (a, b) = input.split_at(at);
        let mut out = p.push(a);
        out.extend(p.push(b));
        out.extend(p.finish());
        out
    }

    #[test]
    fn every_chunk_boundary_gives_the_same_events() {
        let input = b": hello\r\nevent: message_start\r\ndata: {\"a\":1}\r\n\r\ndata: line1\ndata: line2\n\ndata:[DONE]\r\rdata: tail";
        let want = vec![
            SseEvent {
                event: "message_start".into(),
                data: "{\"a\":1}".into(),
            },
            SseEvent {
                event: String::new(),
                data: "line1\nline2".into(),
            },
            SseEvent {
                event: String::new(),
                data: "[DONE]".into(),
            },
            SseEvent {
                event: String::new(),
                data: "tail".into(),
            },
        ];
        for at in 0..=input.len() {
            assert_eq!(feed_split(input, at), want, "split at {at}");
        }
    }

    #[test]
    fn byte_by_byte_and_utf8_split() {
        let input = "data: héllo ✓\n\n".as_bytes();
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for b in input {
            out.extend(p.push(std::slice::from_ref(b)));
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, "héllo ✓");
    }

    #[test]
    fn comments_and_events_without_data_dispatch_nothing() {
        let mut p = SseParser::new();
        assert!(p.push(b": ping\n\nevent: ping\n\n").is_empty());
        assert!(p.finish().is_empty());
    }
}
