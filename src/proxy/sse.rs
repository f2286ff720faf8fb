//! Where a Server-Sent Events byte stream stands: at an event boundary, or
//! inside an event. ssegate may only insert its own lines (heartbeat
//! comments) at a boundary, so that it never splits an upstream event,
//! whichever way the upstream chunks its writes.
//!
//! Lines end with `\n`, `\r\n` or `\r`; an event ends at a blank line. A
//! `\r` whose `\n` has not arrived yet already ends its line: if it ends a
//! blank line, the stream is at a boundary, and a `\n` that follows is just
//! one more blank line, which dispatches nothing.

/// Tracks the line and event state of an SSE stream, fed chunk by chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventBoundary {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// At the start of a line, with no field since the last blank line.
    #[default]
    Boundary,
    /// At the start of a line inside an event.
    LineStart,
    /// Inside a line.
    InLine,
    /// Just after a `\r`; `blank` when it ended an empty line.
    AfterCr { blank: bool },
}

impl EventBoundary {
    /// Advances over `chunk`; returns how many events (blocks of lines
    /// ended by a blank line) it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> usize {
        let mut completed = 0;
        for &b in chunk {
            let before = self.at_boundary();
            self.state = step(self.state, b);
            completed += usize::from(!before && self.at_boundary());
        }
        completed
    }

    /// Advances over `chunk` as [`EventBoundary::feed`] does; also returns
    /// where in `chunk` the last boundary it reached lies (the length of
    /// its whole events), if it reached one.
    pub fn feed_to_boundary(&mut self, chunk: &[u8]) -> (usize, Option<usize>) {
        let mut completed = 0;
        let mut last = None;
        for (i, &b) in chunk.iter().enumerate() {
            let before = self.at_boundary();
            self.state = step(self.state, b);
            if self.at_boundary() {
                completed += usize::from(!before);
                last = Some(i + 1);
            }
        }
        (completed, last)
    }

    /// Whether an extra SSE line may be inserted here without touching an event.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Boundary | State::AfterCr { blank: true })
    }
}

fn step(state: State, b: u8) -> State {
    // A `\n` right after a `\r` completes a CRLF: the line already ended.
    let state = match (state, b) {
        (State::AfterCr { blank: true }, b'\n') => return State::Boundary,
        (State::AfterCr { blank: false }, b'\n') => return State::LineStart,
        (State::AfterCr { blank: true }, _) => State::Boundary,
        (State::AfterCr { blank: false }, _) => State::LineStart,
        (s, _) => s,
    };
    match (state, b) {
        (State::Boundary, b'\n') => State::Boundary,
        (State::Boundary, b'\r') => State::AfterCr { blank: true },
        (State::LineStart, b'\n') => State::Boundary,
        (State::LineStart, b'\r') => State::AfterCr { blank: true },
        (State::InLine, b'\n') => State::LineStart,
        (State::InLine, b'\r') => State::AfterCr { blank: false },
        _ => State::InLine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Boundaries of a whole stream, by a direct reading of the spec: the
    /// byte offsets right after each blank line (and 0).
    fn boundaries_by_spec(stream: &[u8]) -> Vec<usize> {
        let mut out = vec![0];
        let mut i = 0;
        let mut line_start = 0;
        while i < stream.len() {
            let end = match stream[i] {
                b'\r' if stream.get(i + 1) == Some(&b'\n') => Some(i + 2),
                b'\r' | b'\n' => Some(i + 1),
                _ => None,
            };
            if let Some(end) = end {
                let blank = line_start == i;
                if blank {
                    out.push(end);
                    // A lone `\r` ending a blank line is a boundary before its
                    // possible `\n` arrives too.
                    if stream[i] == b'\r' && end == i + 2 {
                        out.push(i + 1);
                    }
                }
                line_start = end;
                i = end;
            } else {
                i += 1;
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn streams() -> Vec<&'static [u8]> {
        vec![
            b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n",
            b"data: one\r\ndata: two\r\n\r\nevent: x\r\ndata: y\r\n\r\n",
            b"data: cr\r\rdata: again\r\r",
            b": comment\n\ndata: mixed\r\n\n\r\ndata: z\r\r\n",
            b"\n\n\r\n\rdata: leading blanks\n\n",
            b"data: no end yet",
        ]
    }

    #[test]
    fn agrees_with_the_spec_at_every_offset() {
        for stream in streams() {
            let expected = boundaries_by_spec(stream);
            let mut tracker = EventBoundary::default();
            let mut got = vec![0];
            for (i, b) in stream.iter().enumerate() {
                tracker.feed(&[*b]);
                if tracker.at_boundary() {
                    got.push(i + 1);
                }
            }
            got.dedup();
            assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(stream));
        }
    }

    #[test]
    fn chunking_never_changes_the_answer() {
        // Every split into two chunks, and every split into three.
        for stream in streams() {
            let mut whole = EventBoundary::default();
            whole.feed(stream);
            for a in 0..=stream.len() {
                for b in a..=stream.len() {
                    let mut t = EventBoundary::default();
                    t.feed(&stream[..a]);
                    t.feed(&stream[a..b]);
                    t.feed(&stream[b..]);
                    assert_eq!(t, whole, "split at {a},{b}");
                }
            }
        }
    }

    #[test]
    fn counts_completed_events_however_chunked() {
        let expected = [2, 2, 2, 3, 1, 0];
        for (stream, want) in streams().into_iter().zip(expected) {
            for split in 0..=stream.len() {
                let mut t = EventBoundary::default();
                let n = t.feed(&stream[..split]) + t.feed(&stream[split..]);
                assert_eq!(n, want, "{:?} split at {split}", String::from_utf8_lossy(stream));
            }
        }
    }

    #[test]
    fn never_a_boundary_inside_an_event() {
        let mut t = EventBoundary::default();
        for part in ["data: x", "\n", "data: y\r", "\n"] {
            t.feed(part.as_bytes());
            assert!(!t.at_boundary(), "after {part:?}");
        }
        t.feed(b"\r");
        assert!(t.at_boundary(), "a CR ending the blank line ends the event");
        t.feed(b"\n");
        assert!(t.at_boundary());
    }
}
