//! The HTTP/1.1 chunked transfer coding (RFC 9112 section 7.1): a strict,
//! incremental decoder that works in place, and the pieces to encode it.
//!
//! Disagreeing with the peer or the upstream about where a chunked body ends
//! is how requests get smuggled, so the decoder refuses anything outside the
//! grammar instead of guessing what was meant: a bare LF or a CR without its
//! LF, whitespace not followed by `;`, a size with a sign, `0x` or more than
//! [`MAX_SIZE_DIGITS`] digits, a chunk's data not followed by exactly CRLF,
//! a malformed extension or trailer field, an obs-fold. Extensions and
//! trailer fields are checked and dropped, never forwarded.
//!
//! One decoder lives in every open stream, so its state is a few counters
//! and a state byte: lines are validated byte by byte as they pass, never
//! buffered, and input that ends mid-line needs no carrying over.

/// Most hex digits in a chunk size, leading zeros included: 16 digits hold
/// any `u64`, and no real sender needs more.
pub const MAX_SIZE_DIGITS: u8 = 16;
/// Largest chunk size accepted (2^62): it fits an `i64`/`off_t`, so a size
/// never wraps when code downstream adds or converts it.
pub const MAX_CHUNK_SIZE: u64 = 1 << 62;
/// Most bytes in a chunk-size line, the size digits and extensions, not
/// counting its CRLF.
pub const MAX_SIZE_LINE: u16 = 4096;
/// Most bytes in the trailer section, every line's CRLF and the final empty
/// line included.
pub const MAX_TRAILERS: u16 = 16 * 1024;

/// The CRLF after a chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";
/// The last chunk with an empty trailer section: the end of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Why a chunked body was refused. Once one is returned the decoder stays
/// failed: the connection cannot be resynchronised and must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    #[error("chunk size is not 1*HEXDIG followed by `;` or CRLF")]
    BadSize,
    #[error("chunk size has more than 16 hex digits or exceeds 2^62")]
    SizeOverflow,
    #[error("chunk-size line longer than 4096 bytes")]
    LineTooLong,
    #[error("bare CR or LF, or a chunk's data not followed by CRLF")]
    BadLineEnd,
    #[error("malformed chunk extension")]
    BadExtension,
    #[error("trailer section longer than 16384 bytes")]
    TrailersTooLong,
    #[error("malformed trailer field line")]
    BadTrailer,
}

/// What one [`ChunkedDecoder::decode_in_place`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Payload bytes now at buf[..payload] (moved to the front of the buffer).
    pub payload: usize,
    /// Input bytes used; buf[consumed..input_len] is untouched input that follows the body
    /// (only non-empty once `done`: the next pipelined message).
    pub consumed: usize,
    /// The last chunk and the trailer section have been read: the body is complete.
    pub done: bool,
}

/// Where the decoder stands. `Size` to `SizeLf` are the chunk-size line,
/// `Trailer*` and `FinalLf` the trailer section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// In the size digits (`digits` of them so far, none at a line start).
    #[default]
    Size,
    /// After the size or an extension value: CR, `;` or BWS may follow.
    AfterValue,
    /// In BWS that must lead to a `;`.
    BwsBeforeSemi,
    /// After `;`, in BWS before the extension name.
    ExtNameStart,
    ExtName,
    /// In BWS after an extension name, which must lead to `=`, `;`.
    ExtNameBws,
    /// After `=`, in BWS before the value.
    ExtValueStart,
    ExtValueToken,
    ExtQuoted,
    /// After a backslash in a quoted string.
    ExtQuotedPair,
    /// After the size line's CR.
    SizeLf,
    /// In a chunk's data, `remaining` bytes to go.
    Data,
    /// After a chunk's data: its CR.
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    TrailerName,
    TrailerValue,
    /// After a trailer line's CR.
    TrailerLf,
    /// After the final empty line's CR.
    FinalLf,
    Done,
    Failed(ChunkedError),
}

/// Decodes the chunked transfer coding incrementally, in place.
#[derive(Debug, Clone, Default)]
pub struct ChunkedDecoder {
    /// The size being read, then the chunk's data bytes still to come.
    remaining: u64,
    /// Bytes of the current size line, or of the trailer section, so far.
    line: u16,
    /// Hex digits of the current size so far.
    digits: u8,
    state: State,
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `buf[..len]` (input bytes that arrived, in order, after whatever earlier calls consumed).
    /// Moves the payload bytes to the front of `buf` (memmove within the slice, no allocation) and
    /// reports how much payload there is and how much input was consumed. Input that ends mid-line
    /// (e.g. half a chunk-size line) is consumed into the decoder's small internal state, so callers
    /// never need to keep unconsumed bytes except after `done`. Once an error is returned, the
    /// decoder stays failed (every later call returns the same error).
    ///
    /// On an error, payload moved by this call is not reported: the body is refused as a whole.
    /// After `done`, every call returns `Progress { payload: 0, consumed: 0, done: true }`.
    ///
    /// # Panics
    /// If `len > buf.len()`.
    pub fn decode_in_place(&mut self, buf: &mut [u8], len: usize) -> Result<Progress, ChunkedError> {
        let buf = &mut buf[..len];
        let mut pos = 0;
        let mut out = 0;
        while pos < len {
            match self.state {
                State::Done => break,
                State::Failed(e) => return Err(e),
                State::Data => {
                    // The one bulk step: `out <= pos`, so the move never overwrites unread input.
                    let n = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(len - pos);
                    buf.copy_within(pos..pos + n, out);
                    pos += n;
                    out += n;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    if let Err(e) = self.step(buf[pos]) {
                        self.state = State::Failed(e);
                        return Err(e);
                    }
                    pos += 1;
                }
            }
        }
        match self.state {
            State::Failed(e) => Err(e),
            State::Done => Ok(Progress {
                payload: out,
                consumed: pos,
                done: true,
            }),
            _ => Ok(Progress {
                payload: out,
                consumed: pos,
                done: false,
            }),
        }
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes one byte of a size line, a chunk's CRLF or the trailer section.
    fn step(&mut self, b: u8) -> Result<(), ChunkedError> {
        use ChunkedError::*;
        use State::*;
        if matches!(
            self.state,
            Size | AfterValue
                | BwsBeforeSemi
                | ExtNameStart
                | ExtName
                | ExtNameBws
                | ExtValueStart
                | ExtValueToken
                | ExtQuoted
                | ExtQuotedPair
        ) {
            if b == b'\n' {
                return Err(BadLineEnd);
            }
            if b != b'\r' {
                self.line += 1;
                if self.line > MAX_SIZE_LINE {
                    return Err(LineTooLong);
                }
            }
        }
        if matches!(
            self.state,
            TrailerStart | TrailerName | TrailerValue | TrailerLf | FinalLf
        ) {
            self.line += 1;
            if self.line > MAX_TRAILERS {
                return Err(TrailersTooLong);
            }
        }
        self.state = match (self.state, b) {
            (Size, _) if b.is_ascii_hexdigit() => {
                self.digits += 1;
                if self.digits > MAX_SIZE_DIGITS {
                    return Err(SizeOverflow);
                }
                let d = (b as char).to_digit(16).unwrap_or(0);
                self.remaining = (self.remaining << 4) | u64::from(d);
                if self.remaining > MAX_CHUNK_SIZE {
                    return Err(SizeOverflow);
                }
                Size
            }
            (Size, _) if self.digits == 0 => return Err(BadSize),
            (Size, _) => after_value(b).ok_or(BadSize)?,
            (ExtValueToken, _) if is_tchar(b) => ExtValueToken,
            (AfterValue | ExtValueToken, _) => after_value(b).ok_or(BadExtension)?,
            (BwsBeforeSemi, b' ' | b'\t') => BwsBeforeSemi,
            (BwsBeforeSemi, b';') => ExtNameStart,
            (ExtNameStart, b' ' | b'\t') => ExtNameStart,
            (ExtNameStart, _) if is_tchar(b) => ExtName,
            (ExtName, _) if is_tchar(b) => ExtName,
            (ExtName, b'\r') => SizeLf,
            (ExtName, b';') | (ExtNameBws, b';') => ExtNameStart,
            (ExtName | ExtNameBws, b' ' | b'\t') => ExtNameBws,
            (ExtName | ExtNameBws, b'=') => ExtValueStart,
            (ExtValueStart, b' ' | b'\t') => ExtValueStart,
            (ExtValueStart, b'"') => ExtQuoted,
            (ExtValueStart, _) if is_tchar(b) => ExtValueToken,
            (ExtQuoted, b'"') => AfterValue,
            (ExtQuoted, b'\\') => ExtQuotedPair,
            (ExtQuoted, _) if is_qdtext(b) => ExtQuoted,
            (ExtQuotedPair, _) if b == b'\t' || b == b' ' || is_vchar_or_obs(b) => ExtQuoted,
            (BwsBeforeSemi | ExtNameStart | ExtName | ExtNameBws | ExtValueStart | ExtQuoted | ExtQuotedPair, _) => {
                return Err(BadExtension)
            }
            (SizeLf, b'\n') if self.remaining == 0 => {
                self.line = 0;
                TrailerStart
            }
            (SizeLf, b'\n') => Data,
            (SizeLf, _) => return Err(BadLineEnd),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => {
                self.line = 0;
                self.digits = 0;
                Size
            }
            (DataCr | DataLf, _) => return Err(BadLineEnd),
            (TrailerStart, b'\r') => FinalLf,
            // A field name is a token, with no whitespace before its colon
            // (and none at the line start: that would be an obs-fold).
            (TrailerStart | TrailerName, _) if is_tchar(b) => TrailerName,
            (TrailerName, b':') => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, _) if b == b'\t' || b == b' ' || is_vchar_or_obs(b) => TrailerValue,
            (TrailerLf, b'\n') => TrailerStart,
            (FinalLf, b'\n') => Done,
            (TrailerStart | TrailerName | TrailerValue | TrailerLf | FinalLf, _) => return Err(BadTrailer),
            // Data, Done and Failed never reach here: decode_in_place handles them.
            (Data | Done | Failed(_), _) => return Err(BadLineEnd),
        };
        Ok(())
    }
}

/// After the size or an extension value: the line ends, an extension
/// starts, or BWS leads to one.
fn after_value(b: u8) -> Option<State> {
    match b {
        b'\r' => Some(State::SizeLf),
        b';' => Some(State::ExtNameStart),
        b' ' | b'\t' => Some(State::BwsBeforeSemi),
        _ => None,
    }
}

/// A token character (RFC 9110 section 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_vchar_or_obs(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// A character allowed unescaped in a quoted string (RFC 9110 section 5.6.4).
fn is_qdtext(b: u8) -> bool {
    b == b'\t' || b == b' ' || (is_vchar_or_obs(b) && b != b'"' && b != b'\\')
}

/// Writes the chunk-size line for a chunk of `len` (> 0) payload bytes ("1a\r\n") into `out`,
/// returning how many bytes were written (at most 18). Used to frame data sent on.
///
/// # Panics
/// If `len` is 0: that line would be the last chunk, ending the body early.
pub fn chunk_header(len: usize, out: &mut [u8; 18]) -> usize {
    assert!(len > 0, "a chunk of 0 bytes is the last chunk");
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4) as usize;
    for (i, slot) in out[..digits].iter_mut().enumerate() {
        let nibble = (len >> (4 * (digits - 1 - i))) & 0xf;
        *slot = b"0123456789abcdef"[nibble];
    }
    out[digits..digits + 2].copy_from_slice(CHUNK_END);
    digits + 2
}

#[cfg(test)]
#[path = "chunked_tests.rs"]
mod tests;
