//! HTTP/2 frames (RFC 9113, 4 and 6): the 9-byte frame header parsed and
//! written, the payloads of each type checked and written.
//!
//! Nothing here keeps state: a frame is parsed from a slice that holds all
//! of it (the connection never asks for a frame before its last byte has
//! arrived) and written by appending to the connection's output. What a
//! frame means for the connection is decided in [`super::conn`]; this file
//! only knows the wire layout, and answers a layout violation with the
//! error code RFC 9113 names for it.

/// The frame header: length (24 bits), type, flags, stream id (31 bits).
pub const HEADER_LEN: usize = 9;

/// The largest frame payload ssegate accepts: the protocol's initial
/// SETTINGS_MAX_FRAME_SIZE, which ssegate never raises. So the shell never
/// holds more than [`HEADER_LEN`] + this (16,393 bytes) of an incomplete
/// frame, and a larger frame is refused from its header alone.
pub const MAX_FRAME_SIZE: u32 = 16_384;

/// The largest SETTINGS_MAX_FRAME_SIZE a peer may announce (2^24-1).
pub const MAX_ALLOWED_FRAME_SIZE: u32 = (1 << 24) - 1;

/// The largest a flow-control window may grow (2^31-1, RFC 9113, 6.9.1).
pub const MAX_WINDOW: i64 = (1 << 31) - 1;

/// Every flow-control window's size until SETTINGS or WINDOW_UPDATE say
/// otherwise (RFC 9113, 6.9.2).
pub const DEFAULT_WINDOW: u32 = 65_535;

/// What the client sends first (RFC 9113, 3.4), before its SETTINGS.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113, 6). Any other type is unknown and ignored.
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags; each has a meaning only for the types that define it, and
/// the others are ignored (RFC 9113, 4.1).
pub mod flag {
    /// DATA, HEADERS: the sender's last frame on the stream.
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING: an acknowledgement.
    pub const ACK: u8 = 0x1;
    /// HEADERS, CONTINUATION: the header block ends with this frame.
    pub const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS: a pad length byte leads and padding follows.
    pub const PADDED: u8 = 0x8;
    /// HEADERS: a stream dependency and weight follow (RFC 7540 priority).
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS parameters (RFC 9113, 6.5.2; RFC 8441; RFC 9218).
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    pub const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
    pub const NO_RFC7540_PRIORITIES: u16 = 0x9;
}

/// Error codes of RST_STREAM and GOAWAY (RFC 9113, 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NoError,
    ProtocolError,
    InternalError,
    FlowControlError,
    SettingsTimeout,
    StreamClosed,
    FrameSizeError,
    RefusedStream,
    Cancel,
    CompressionError,
    ConnectError,
    EnhanceYourCalm,
    InadequateSecurity,
    Http11Required,
    /// A code this implementation does not know (treated as INTERNAL_ERROR).
    Other(u32),
}

impl ErrorCode {
    pub fn from_u32(code: u32) -> Self {
        match code {
            0x0 => ErrorCode::NoError,
            0x1 => ErrorCode::ProtocolError,
            0x2 => ErrorCode::InternalError,
            0x3 => ErrorCode::FlowControlError,
            0x4 => ErrorCode::SettingsTimeout,
            0x5 => ErrorCode::StreamClosed,
            0x6 => ErrorCode::FrameSizeError,
            0x7 => ErrorCode::RefusedStream,
            0x8 => ErrorCode::Cancel,
            0x9 => ErrorCode::CompressionError,
            0xa => ErrorCode::ConnectError,
            0xb => ErrorCode::EnhanceYourCalm,
            0xc => ErrorCode::InadequateSecurity,
            0xd => ErrorCode::Http11Required,
            other => ErrorCode::Other(other),
        }
    }

    pub fn as_u32(self) -> u32 {
        match self {
            ErrorCode::NoError => 0x0,
            ErrorCode::ProtocolError => 0x1,
            ErrorCode::InternalError => 0x2,
            ErrorCode::FlowControlError => 0x3,
            ErrorCode::SettingsTimeout => 0x4,
            ErrorCode::StreamClosed => 0x5,
            ErrorCode::FrameSizeError => 0x6,
            ErrorCode::RefusedStream => 0x7,
            ErrorCode::Cancel => 0x8,
            ErrorCode::CompressionError => 0x9,
            ErrorCode::ConnectError => 0xa,
            ErrorCode::EnhanceYourCalm => 0xb,
            ErrorCode::InadequateSecurity => 0xc,
            ErrorCode::Http11Required => 0xd,
            ErrorCode::Other(code) => code,
        }
    }
}

/// A frame's 9-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length (24 bits).
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    /// The stream id, the reserved bit dropped (RFC 9113, 4.1: ignored on
    /// receipt).
    pub stream: u32,
}

impl FrameHeader {
    /// The header at the start of `input`, or None if fewer than 9 bytes
    /// have arrived.
    pub fn parse(input: &[u8]) -> Option<FrameHeader> {
        let b: &[u8; HEADER_LEN] = input.get(..HEADER_LEN)?.try_into().ok()?;
        Some(FrameHeader {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        })
    }

    /// The header's 9 bytes. `len` must fit 24 bits; every caller passes
    /// at most the peer's max frame size, which is below 2^24.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let len = self.len.min(MAX_ALLOWED_FRAME_SIZE).to_be_bytes();
        let stream = (self.stream & 0x7fff_ffff).to_be_bytes();
        [
            len[1], len[2], len[3], self.kind, self.flags, stream[0], stream[1], stream[2], stream[3],
        ]
    }

    /// Appends the header.
    pub fn write(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    pub fn has(self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A layout violation in a frame's payload: the code RFC 9113 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadError {
    pub code: ErrorCode,
    pub reason: &'static str,
}

const fn bad(code: ErrorCode, reason: &'static str) -> PayloadError {
    PayloadError { code, reason }
}

/// A DATA payload without its padding (RFC 9113, 6.1). A pad length that
/// reaches the end of the frame is a PROTOCOL_ERROR; a PADDED frame too
/// short to hold the pad length itself is a FRAME_SIZE_ERROR.
pub fn strip_padding(flags: u8, payload: &[u8]) -> Result<&[u8], PayloadError> {
    if flags & flag::PADDED == 0 {
        return Ok(payload);
    }
    let (&pad, rest) = payload
        .split_first()
        .ok_or(bad(ErrorCode::FrameSizeError, "padded frame without a pad length"))?;
    let keep = rest
        .len()
        .checked_sub(usize::from(pad))
        .ok_or(bad(ErrorCode::ProtocolError, "padding longer than the frame"))?;
    Ok(&rest[..keep])
}

/// A stream dependency (RFC 9113, 5.3.2, deprecated): read only to refuse a
/// stream that depends on itself; ssegate does not prioritise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    pub dependency: u32,
    pub exclusive: bool,
    pub weight: u8,
}

impl Priority {
    /// The 5 bytes of a PRIORITY frame or of a HEADERS frame's priority
    /// fields; None when the slice is not exactly 5 bytes.
    pub fn parse(b: &[u8]) -> Option<Priority> {
        let b: &[u8; 5] = b.try_into().ok()?;
        let dep = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        Some(Priority {
            dependency: dep & 0x7fff_ffff,
            exclusive: dep & 0x8000_0000 != 0,
            weight: b[4],
        })
    }
}

/// A HEADERS payload taken apart (RFC 9113, 6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadersPayload<'a> {
    pub priority: Option<Priority>,
    /// The header block fragment, padding removed.
    pub fragment: &'a [u8],
}

/// Takes a HEADERS payload apart: pad length, priority fields, fragment,
/// padding. Padding longer than what remains is a PROTOCOL_ERROR; a
/// payload too short for its pad length or priority fields a
/// FRAME_SIZE_ERROR.
pub fn parse_headers(flags: u8, payload: &[u8]) -> Result<HeadersPayload<'_>, PayloadError> {
    let (pad, mut rest) = if flags & flag::PADDED != 0 {
        let (&pad, rest) = payload
            .split_first()
            .ok_or(bad(ErrorCode::FrameSizeError, "padded HEADERS without a pad length"))?;
        (usize::from(pad), rest)
    } else {
        (0, payload)
    };
    let priority = if flags & flag::PRIORITY != 0 {
        let fields = rest
            .get(..5)
            .ok_or(bad(ErrorCode::FrameSizeError, "HEADERS too short for its priority"))?;
        rest = &rest[5..];
        Priority::parse(fields)
    } else {
        None
    };
    let keep = rest
        .len()
        .checked_sub(pad)
        .ok_or(bad(ErrorCode::ProtocolError, "HEADERS padding longer than the frame"))?;
    Ok(HeadersPayload {
        priority,
        fragment: &rest[..keep],
    })
}

/// The parameters of a SETTINGS payload, in order (RFC 9113, 6.5.1); a
/// length that is not a multiple of 6 is a FRAME_SIZE_ERROR.
pub fn parse_settings(payload: &[u8]) -> Result<impl Iterator<Item = (u16, u32)> + '_, PayloadError> {
    if !payload.len().is_multiple_of(6) {
        return Err(bad(ErrorCode::FrameSizeError, "SETTINGS length not a multiple of 6"));
    }
    Ok(payload.chunks_exact(6).map(|p| {
        (
            u16::from_be_bytes([p[0], p[1]]),
            u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
        )
    }))
}

/// A 4-byte big-endian field (RST_STREAM's code, WINDOW_UPDATE's
/// increment); None when the payload is not exactly 4 bytes.
pub fn parse_u32(payload: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(payload.try_into().ok()?))
}

/// Appends a SETTINGS frame with `params`.
pub fn write_settings(out: &mut Vec<u8>, params: &[(u16, u32)]) {
    let len = u32::try_from(params.len() * 6).unwrap_or(0);
    FrameHeader {
        len,
        kind: kind::SETTINGS,
        flags: 0,
        stream: 0,
    }
    .write(out);
    for &(id, value) in params.iter().take(usize::try_from(len / 6).unwrap_or(0)) {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// Appends an empty SETTINGS frame with ACK.
pub fn write_settings_ack(out: &mut Vec<u8>) {
    FrameHeader {
        len: 0,
        kind: kind::SETTINGS,
        flags: flag::ACK,
        stream: 0,
    }
    .write(out);
}

/// Appends a PING (or its ACK) carrying `payload`.
pub fn write_ping(out: &mut Vec<u8>, ack: bool, payload: [u8; 8]) {
    FrameHeader {
        len: 8,
        kind: kind::PING,
        flags: if ack { flag::ACK } else { 0 },
        stream: 0,
    }
    .write(out);
    out.extend_from_slice(&payload);
}

/// Appends a GOAWAY naming the last stream processed, with `debug` data.
pub fn write_goaway(out: &mut Vec<u8>, last_stream: u32, code: ErrorCode, debug: &[u8]) {
    // Debug data is a courtesy: cut it so the frame always fits the
    // smallest max frame size.
    let debug = &debug[..debug.len().min(256)];
    FrameHeader {
        len: 8 + debug.len() as u32,
        kind: kind::GOAWAY,
        flags: 0,
        stream: 0,
    }
    .write(out);
    out.extend_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(&code.as_u32().to_be_bytes());
    out.extend_from_slice(debug);
}

/// Appends a RST_STREAM.
pub fn write_rst_stream(out: &mut Vec<u8>, stream: u32, code: ErrorCode) {
    FrameHeader {
        len: 4,
        kind: kind::RST_STREAM,
        flags: 0,
        stream,
    }
    .write(out);
    out.extend_from_slice(&code.as_u32().to_be_bytes());
}

/// Appends a WINDOW_UPDATE (`increment` is 1..=2^31-1).
pub fn write_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    FrameHeader {
        len: 4,
        kind: kind::WINDOW_UPDATE,
        flags: 0,
        stream,
    }
    .write(out);
    out.extend_from_slice(&(increment & 0x7fff_ffff).to_be_bytes());
}

/// Appends one DATA frame; `data` must fit the peer's max frame size.
pub fn write_data(out: &mut Vec<u8>, stream: u32, data: &[u8], end_stream: bool) {
    FrameHeader {
        len: data.len() as u32,
        kind: kind::DATA,
        flags: if end_stream { flag::END_STREAM } else { 0 },
        stream,
    }
    .write(out);
    out.extend_from_slice(data);
}

/// Appends a header block as HEADERS and, past `max_frame` bytes,
/// CONTINUATION frames (RFC 9113, 4.3): END_HEADERS on the last,
/// END_STREAM on the HEADERS if `end_stream`.
pub fn write_header_block(out: &mut Vec<u8>, stream: u32, block: &[u8], end_stream: bool, max_frame: usize) {
    let max_frame = max_frame.max(1);
    let mut chunks = block.chunks(max_frame).peekable();
    let first = chunks.next().unwrap_or(&[]);
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if chunks.peek().is_none() {
        flags |= flag::END_HEADERS;
    }
    FrameHeader {
        len: first.len() as u32,
        kind: kind::HEADERS,
        flags,
        stream,
    }
    .write(out);
    out.extend_from_slice(first);
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() { flag::END_HEADERS } else { 0 };
        FrameHeader {
            len: chunk.len() as u32,
            kind: kind::CONTINUATION,
            flags,
            stream,
        }
        .write(out);
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
