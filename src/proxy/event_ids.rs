//! The last event id of a Server-Sent Events stream, as a client that
//! received the same bytes would know it.
//!
//! An EventSource sets its "last event ID buffer" when it reads an `id`
//! field, and takes it as the stream's last event id when an event is
//! dispatched, at the blank line that ends it (even an event with no
//! `data`). A resumed request must carry exactly that id: the one a client
//! that received every whole event so far would send. So the id is
//! committed only at a blank line, and [`EventIds::rewind`] forgets an
//! event cut before its end, whose `id` line the client never saw.
//!
//! Field parsing follows the HTML standard: lines end with `\n`, `\r\n` or
//! `\r`; a line `id` or `id:value` (one leading space of the value is
//! dropped) sets the buffer; a value containing NUL is ignored. An id
//! longer than [`MAX_ID_LEN`], or with a control byte (which no header
//! field may carry), is not kept: the stream's position is then unknown
//! until the next id that fits, and it is not resumed meanwhile.

/// Longest event id ssegate keeps for a resume.
pub const MAX_ID_LEN: usize = 1024;

/// What the id buffer holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Id {
    /// No id yet, or the empty id (which resets it): nothing to resume from.
    #[default]
    None,
    Known(Vec<u8>),
    /// An id too long to keep.
    TooLong,
}

/// Where the parser stands in the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Line {
    /// At the start of a line.
    #[default]
    Start,
    /// Read `matched` bytes of `id` (1 or 2) so far.
    Name { matched: u8 },
    /// Just after `id:`: one space may follow and is dropped.
    ValueStart,
    /// Reading an id value into `value`.
    Value,
    /// Inside an id value longer than [`MAX_ID_LEN`].
    ValueTooLong,
    /// Inside a line that is not an `id` field.
    Other,
}

/// Tracks the committed last event id of a stream, fed chunk by chunk.
#[derive(Debug, Default)]
pub struct EventIds {
    line: Line,
    /// The previous byte was a `\r`: a `\n` now only completes its line end.
    after_cr: bool,
    /// The current line has bytes (a blank line dispatches).
    line_has_bytes: bool,
    /// The value of the `id` line being read.
    value: Vec<u8>,
    /// The last event ID buffer.
    buffer: Id,
    /// The id as of the last dispatch: what a client holds.
    committed: Id,
}

impl EventIds {
    /// Reads `chunk`.
    pub fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    self.end_line();
                }
                _ => self.byte(b),
            }
        }
    }

    fn byte(&mut self, b: u8) {
        self.line_has_bytes = true;
        self.line = match (self.line, b) {
            (Line::Start, b'i') => Line::Name { matched: 1 },
            (Line::Name { matched: 1 }, b'd') => Line::Name { matched: 2 },
            (Line::Name { matched: 2 }, b':') => {
                self.value.clear();
                Line::ValueStart
            }
            (Line::ValueStart, b' ') => Line::Value,
            // A value with NUL is ignored: the line is no field at all.
            (Line::ValueStart | Line::Value | Line::ValueTooLong, 0) => Line::Other,
            // A control byte cannot go into a `Last-Event-ID` field: the
            // id is kept as unknown, as a too long one is.
            (Line::ValueStart | Line::Value, b)
                if self.value.len() >= MAX_ID_LEN || (b < 0x20 && b != b'\t') || b == 0x7f =>
            {
                self.value = Vec::new();
                Line::ValueTooLong
            }
            (Line::ValueStart | Line::Value, b) => {
                self.value.push(b);
                Line::Value
            }
            (Line::ValueTooLong, _) => Line::ValueTooLong,
            _ => Line::Other,
        };
    }

    fn end_line(&mut self) {
        match self.line {
            // `id` alone is the field with an empty value: it resets.
            Line::Name { matched: 2 } => self.buffer = Id::None,
            Line::ValueStart | Line::Value if self.value.is_empty() => self.buffer = Id::None,
            Line::ValueStart | Line::Value => self.buffer = Id::Known(std::mem::take(&mut self.value)),
            Line::ValueTooLong => self.buffer = Id::TooLong,
            // A blank line: the event is dispatched.
            _ if !self.line_has_bytes => self.committed.clone_from(&self.buffer),
            _ => {}
        }
        self.line = Line::Start;
        self.line_has_bytes = false;
        self.value.clear();
    }

    /// Starts from `id` as the client's last event id (the one it sent when
    /// it reconnected), as if an event with it had been received; an id a
    /// stream could not carry (too long, a control byte, empty) is ignored.
    pub fn seed(&mut self, id: &[u8]) {
        let usable =
            !id.is_empty() && id.len() <= MAX_ID_LEN && id.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
        if usable {
            self.buffer = Id::Known(id.to_vec());
            self.committed = Id::Known(id.to_vec());
        }
    }

    /// The stream was cut inside an event: forget what the client never
    /// received, and read the next stream from a line's start.
    pub fn rewind(&mut self) {
        self.buffer.clone_from(&self.committed);
        self.line = Line::Start;
        self.after_cr = false;
        self.line_has_bytes = false;
        self.value = Vec::new();
    }

    /// The id to resume from: the last one committed, when it is known and
    /// not empty.
    pub fn last(&self) -> Option<&[u8]> {
        match &self.committed {
            Id::Known(v) => Some(v),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_after(chunks: &[&[u8]]) -> Option<Vec<u8>> {
        let mut ids = EventIds::default();
        for c in chunks {
            ids.feed(c);
        }
        ids.last().map(<[u8]>::to_vec)
    }

    /// The id by a direct reading of the spec over the whole stream: lines
    /// split, fields parsed, the buffer taken at each blank line.
    fn last_by_spec(stream: &[u8]) -> Option<Vec<u8>> {
        let mut lines = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < stream.len() {
            match stream[i] {
                b'\r' if stream.get(i + 1) == Some(&b'\n') => {
                    lines.push(&stream[start..i]);
                    i += 2;
                    start = i;
                }
                b'\r' | b'\n' => {
                    lines.push(&stream[start..i]);
                    i += 1;
                    start = i;
                }
                _ => i += 1,
            }
        }
        // `None`: no id field yet; `Some(None)`: an id too long to keep.
        type Seen = Option<Option<Vec<u8>>>;
        let (mut buffer, mut committed): (Seen, Seen) = (None, None);
        for line in lines {
            if line.is_empty() {
                committed = buffer.clone();
                continue;
            }
            let (name, value) = match line.iter().position(|&b| b == b':') {
                Some(p) => {
                    let v = &line[p + 1..];
                    (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (line, &b""[..]),
            };
            if name == b"id" && !value.contains(&0) {
                let unusable = value.len() > MAX_ID_LEN || value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f);
                buffer = Some(if unusable { None } else { Some(value.to_vec()) });
            }
        }
        committed.flatten().filter(|v| !v.is_empty())
    }

    fn streams() -> Vec<Vec<u8>> {
        let long = [b"id: ".to_vec(), vec![b'x'; MAX_ID_LEN + 1], b"\n\n".to_vec()].concat();
        let fits = [b"id:".to_vec(), vec![b'y'; MAX_ID_LEN], b"\r\n\r\n".to_vec()].concat();
        vec![
            b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n".to_vec(),
            b"id: 1\ndata: a\n\nid: 2\ndata: b".to_vec(),
            b"id:7\r\n\r\nid\r\n\r\n".to_vec(),
            b"id: 3\r\rdata: x\r\r".to_vec(),
            b"id:  two spaces\n\n".to_vec(),
            b"id: nul\0here\n\nid: 9\n\n".to_vec(),
            b"id: 4\n\nid: a\0\n\n".to_vec(),
            b"ids: no\nidx\n: id: comment\n\n".to_vec(),
            b"data: x\nid: 5\n\nretry: 10\n\n".to_vec(),
            b"id: 6\n\n\r\n\rid: 7\r\n".to_vec(),
            [long.clone(), b"id: 8\n\n".to_vec()].concat(),
            [b"id: 1\n\n".to_vec(), long].concat(),
            fits,
            b"id: 1\n\nid: a\x01b\n\n".to_vec(),
            b"id: 1\n\nid: a\x7f\n\nid: tab\there\n\n".to_vec(),
        ]
    }

    #[test]
    fn agrees_with_the_spec_at_every_split() {
        for stream in streams() {
            let expected = last_by_spec(&stream);
            assert_eq!(
                last_after(&[&stream]),
                expected,
                "{:?}",
                String::from_utf8_lossy(&stream)
            );
            for a in 0..=stream.len() {
                assert_eq!(
                    last_after(&[&stream[..a], &stream[a..]]),
                    expected,
                    "split at {a} of {:?}",
                    String::from_utf8_lossy(&stream)
                );
            }
        }
    }

    #[test]
    fn an_id_counts_only_once_its_event_ends() {
        let mut ids = EventIds::default();
        ids.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n");
        assert_eq!(ids.last(), Some(&b"1"[..]));
        ids.feed(b"\n");
        assert_eq!(ids.last(), Some(&b"2"[..]));
    }

    #[test]
    fn a_rewind_forgets_the_cut_event() {
        let mut ids = EventIds::default();
        ids.feed(b"id: 1\n\nid: 2\ndata: half");
        ids.rewind();
        // The next stream's first event has no id of its own: the client
        // would keep 1, and so does the tracker.
        ids.feed(b"data: next\n\n");
        assert_eq!(ids.last(), Some(&b"1"[..]));
    }

    #[test]
    fn a_seed_stands_until_the_stream_carries_an_id() {
        let mut ids = EventIds::default();
        ids.seed(b"41");
        ids.feed(b"data: no id yet\n\nid: 4");
        ids.rewind();
        assert_eq!(
            ids.last(),
            Some(&b"41"[..]),
            "the client's own id, the cut event forgotten"
        );
        ids.feed(b"id: 42\n\n");
        assert_eq!(ids.last(), Some(&b"42"[..]));
        let mut unusable = EventIds::default();
        unusable.seed(b"bad\x01id");
        assert_eq!(unusable.last(), None, "an id no header may carry is not taken");
    }

    #[test]
    fn a_rewind_starts_a_fresh_line() {
        let mut ids = EventIds::default();
        ids.feed(b"id: 1\n\ni");
        ids.rewind();
        ids.feed(b"d: 3\n\n");
        // `d: 3` is a line of its own, not the end of `id: 3`.
        assert_eq!(ids.last(), Some(&b"1"[..]));
    }
}
