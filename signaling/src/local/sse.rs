//! An incremental `text/event-stream` parser (the WHATWG server-sent events format).
//!
//! Bytes arrive in arbitrary chunks (a line, or an event, may be split anywhere), so the parser
//! keeps the unfinished line and the event being assembled between calls.

/// Parses server-sent events from a byte stream.
#[derive(Default)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
    /// Set after a lone `\r`, so that a `\n` beginning the next chunk is not a second line end.
    after_cr: bool,
}

/// Lines longer than this are cut: a server that never ends a line must not exhaust memory.
const MAX_LINE: usize = 1 << 20;

impl SseParser {
    /// Feeds a chunk; returns the `data` of every event it completes, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &b in chunk {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(ev) = self.line_done(&line) {
                        events.push(ev);
                    }
                }
                _ => {
                    self.after_cr = false;
                    if self.line.len() < MAX_LINE {
                        self.line.push(b);
                    }
                }
            }
        }
        events
    }

    fn line_done(&mut self, line: &[u8]) -> Option<String> {
        if line.is_empty() {
            // A blank line dispatches the event; one without data is no event.
            return self.data.take();
        }
        if line[0] == b':' {
            return None; // comment (keep-alive)
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
        // `event`, `id` and `retry` do not matter here: the event kind is in the JSON.
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let stream = b": keep-alive\n\nevent: update\ndata: {\"a\":\r\ndata: 1}\r\n\r\ndata:x\n\n";
        let want = vec!["{\"a\":\n1}".to_string(), "x".to_string()];
        for split in 0..stream.len() {
            let mut p = SseParser::default();
            let mut got = p.push(&stream[..split]);
            got.extend(p.push(&stream[split..]));
            assert_eq!(got, want, "split at {split}");
        }
        // Byte by byte, too.
        let mut p = SseParser::default();
        let got: Vec<String> = stream.iter().flat_map(|b| p.push(&[*b])).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn an_unterminated_event_is_not_dispatched() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: half").is_empty());
        assert!(p.push(b"\n").is_empty());
        assert_eq!(p.push(b"\n"), vec!["half".to_string()]);
    }
}
