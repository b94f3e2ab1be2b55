//! An incremental `text/event-stream` parser (the WHATWG server-sent events format).
//!
//! Bytes arrive in arbitrary chunks (a line, or an event, may be split anywhere), so the parser
//! keeps the unfinished line and the event being assembled between calls.
//!
//! Memory is bounded whatever the server sends: a line longer than [`MAX_LINE`] is not kept,
//! and an event whose `data` would grow past [`MAX_EVENT_DATA`] is not assembled. Either way
//! the whole event is skipped (its data would be incomplete, so it could only be misread) and
//! counted in [`SseParser::dropped`]; parsing resumes at the blank line that ends it, so the
//! next event arrives intact.

/// The most `data` one event may carry. The local server's largest event is a participants
/// list, a few hundred bytes per participant: a megabyte is thousands of participants.
pub(crate) const MAX_EVENT_DATA: usize = 1 << 20;

/// The longest line kept: a `data:` line holding a whole [`MAX_EVENT_DATA`], plus the field
/// name. A server that never ends a line cannot make the parser buffer more than this.
pub(crate) const MAX_LINE: usize = MAX_EVENT_DATA + 16;

use crate::bounded::reserve_capped;

/// Parses server-sent events from a byte stream.
#[derive(Default)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    /// The current line passed [`MAX_LINE`]: the rest of it is discarded as it arrives.
    line_too_long: bool,
    data: Option<String>,
    /// The event being assembled lost a line or outgrew [`MAX_EVENT_DATA`]: skip it.
    skip_event: bool,
    /// Set after a lone `\r`, so that a `\n` beginning the next chunk is not a second line end.
    after_cr: bool,
    dropped: u64,
}

impl SseParser {
    /// Feeds a chunk; returns the `data` of every event it completes, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            match rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
                Some(end) => {
                    self.append(&rest[..end]);
                    self.after_cr = rest[end] == b'\r';
                    rest = &rest[end + 1..];
                    if let Some(ev) = self.line_done() {
                        events.push(ev);
                    }
                }
                None => {
                    self.append(rest);
                    rest = &[];
                }
            }
        }
        events
    }

    /// How many events were skipped for being over the bounds, since the parser was made.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The bytes held for the unfinished line and event; never more than
    /// `MAX_LINE + MAX_EVENT_DATA`.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.line.capacity() + self.data.as_ref().map_or(0, String::capacity)
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.line_too_long {
            return;
        }
        if self.line.len() + bytes.len() > MAX_LINE {
            self.line_too_long = true;
            // Release the memory now, not when the line finally ends.
            self.line = Vec::new();
            return;
        }
        let want = reserve_capped(self.line.len(), self.line.capacity(), bytes.len(), MAX_LINE);
        self.line.reserve_exact(want);
        self.line.extend_from_slice(bytes);
    }

    fn line_done(&mut self) -> Option<String> {
        let line = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.line_too_long) {
            self.poison();
            return None;
        }
        if line.is_empty() {
            // A blank line dispatches the event; one without data is no event.
            let data = self.data.take();
            if std::mem::take(&mut self.skip_event) {
                self.dropped += 1;
                return None;
            }
            return data;
        }
        if line[0] == b':' || self.skip_event {
            return None; // comment (keep-alive), or part of an event already given up
        }
        let line = String::from_utf8_lossy(&line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(d) if d.len() + 1 + value.len() > MAX_EVENT_DATA => self.poison(),
                Some(d) => {
                    let want =
                        reserve_capped(d.len(), d.capacity(), 1 + value.len(), MAX_EVENT_DATA);
                    d.reserve_exact(want);
                    d.push('\n');
                    d.push_str(value);
                }
                None if value.len() > MAX_EVENT_DATA => self.poison(),
                None => self.data = Some(value.to_owned()),
            }
        }
        // `event`, `id` and `retry` do not matter here: the event kind is in the JSON.
        None
    }

    /// Gives up the event being assembled; it is counted when its blank line comes.
    fn poison(&mut self) {
        self.skip_event = true;
        self.data = None;
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

    #[test]
    fn an_event_of_exactly_the_bound_passes() {
        let mut p = SseParser::default();
        let value = "v".repeat(MAX_EVENT_DATA);
        let got = p.push(format!("data: {value}\n\n").as_bytes());
        assert_eq!(got, vec![value]);
        assert_eq!(p.dropped(), 0);
    }

    #[test]
    fn an_over_long_line_skips_its_event_and_the_next_one_arrives() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: {\"first\":1}\ndata: ").is_empty());
        // 3 MiB of one line, in 64 KiB chunks, never ended by the server for a while.
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..48 {
            assert!(p.push(&chunk).is_empty());
            // The line, never more than its bound, and the event's first (short) data line.
            assert!(p.buffered() <= MAX_LINE + 64, "{} bytes held", p.buffered());
        }
        let got = p.push(b"\ndata: more of it\n\ndata: ok\n\n");
        assert_eq!(got, vec!["ok".to_string()]);
        assert_eq!(p.dropped(), 1);
        assert!(p.buffered() < 1024, "{} bytes still held", p.buffered());
    }

    #[test]
    fn an_event_of_many_short_lines_over_the_bound_is_skipped() {
        let mut p = SseParser::default();
        let line = format!("data: {}\n", "y".repeat(999));
        // 1.5 MB of data in 1500 lines: each line is fine, the event is not.
        for _ in 0..1500 {
            assert!(p.push(line.as_bytes()).is_empty());
            assert!(p.buffered() <= MAX_LINE + MAX_EVENT_DATA);
        }
        assert!(
            p.data.is_none(),
            "the event's data is not kept once it is over"
        );
        let got = p.push(b"\n: comment\ndata: next\n\n");
        assert_eq!(got, vec!["next".to_string()]);
        assert_eq!(p.dropped(), 1);
    }
}
