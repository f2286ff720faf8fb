//! A test client: builds the frames a client sends (request heads
//! HPACK-encoded with `loona_hpack`'s encoder, which keeps its own dynamic
//! table like a real client) and takes apart what the server wrote.

use super::conn::{Connection, ConnectionError, Event, ServerSettings};
use super::frame::{flag, kind, ErrorCode, FrameHeader, HEADER_LEN, PREFACE};

/// One frame as bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    FrameHeader {
        len: payload.len() as u32,
        kind,
        flags,
        stream,
    }
    .write(&mut out);
    out.extend_from_slice(payload);
    out
}

/// The preface and an empty SETTINGS.
pub fn preface() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(settings(&[]));
    out
}

pub fn settings(params: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = params
        .iter()
        .flat_map(|(id, v)| id.to_be_bytes().into_iter().chain(v.to_be_bytes()))
        .collect();
    frame(kind::SETTINGS, 0, 0, &payload)
}

pub fn settings_ack() -> Vec<u8> {
    frame(kind::SETTINGS, flag::ACK, 0, &[])
}

pub fn ping(ack: bool, payload: [u8; 8]) -> Vec<u8> {
    frame(kind::PING, if ack { flag::ACK } else { 0 }, 0, &payload)
}

pub fn data(stream: u32, payload: &[u8], end_stream: bool) -> Vec<u8> {
    frame(
        kind::DATA,
        if end_stream { flag::END_STREAM } else { 0 },
        stream,
        payload,
    )
}

pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(kind::WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(kind::RST_STREAM, 0, stream, &code.to_be_bytes())
}

pub fn goaway(last: u32, code: u32) -> Vec<u8> {
    let mut payload = last.to_be_bytes().to_vec();
    payload.extend(code.to_be_bytes());
    frame(kind::GOAWAY, 0, 0, &payload)
}

pub fn priority(stream: u32, dependency: u32, weight: u8) -> Vec<u8> {
    let mut payload = dependency.to_be_bytes().to_vec();
    payload.push(weight);
    frame(kind::PRIORITY, 0, stream, &payload)
}

/// The request fields of a GET for `path`.
pub fn get(path: &str) -> Vec<(String, String)> {
    request("GET", path)
}

pub fn request(method: &str, path: &str) -> Vec<(String, String)> {
    vec![
        (":method".into(), method.into()),
        (":scheme".into(), "https".into()),
        (":path".into(), path.into()),
        (":authority".into(), "example.com".into()),
    ]
}

/// A client's HPACK encoder.
pub struct Client {
    encoder: loona_hpack::Encoder<'static>,
}

impl Client {
    pub fn new() -> Self {
        Client {
            encoder: loona_hpack::Encoder::new(),
        }
    }

    /// A header block for `fields`.
    pub fn block(&mut self, fields: &[(String, String)]) -> Vec<u8> {
        self.encoder
            .encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    /// A HEADERS frame with END_HEADERS (and END_STREAM if `end_stream`).
    pub fn headers(&mut self, stream: u32, fields: &[(String, String)], end_stream: bool) -> Vec<u8> {
        let block = self.block(fields);
        let flags = flag::END_HEADERS | if end_stream { flag::END_STREAM } else { 0 };
        frame(kind::HEADERS, flags, stream, &block)
    }
}

/// A frame the server wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Out {
    /// The error code of a RST_STREAM, or of a GOAWAY.
    pub fn code(&self) -> u32 {
        let at = if self.kind == kind::GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }

    pub fn u32_at(&self, at: usize) -> u32 {
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

/// Takes every frame out of `out`, which must hold whole frames only.
pub fn frames(out: &mut Vec<u8>) -> Vec<Out> {
    let mut frames = Vec::new();
    let mut pos = 0;
    while let Some(h) = FrameHeader::parse(&out[pos..]) {
        let end = pos + HEADER_LEN + h.len as usize;
        assert!(end <= out.len(), "incomplete frame in the output");
        frames.push(Out {
            kind: h.kind,
            flags: h.flags,
            stream: h.stream,
            payload: out[pos + HEADER_LEN..end].to_vec(),
        });
        pos = end;
    }
    assert_eq!(pos, out.len(), "trailing bytes in the output");
    *out = Vec::new();
    frames
}

/// Decodes a response header block (no dynamic table needed, none used).
pub fn decode_block(block: &[u8]) -> Vec<(String, String)> {
    let mut decoder = loona_hpack::Decoder::new();
    decoder
        .decode(block)
        .unwrap()
        .into_iter()
        .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
        .collect()
}

/// Feeds all of `input` at once; every byte must be consumed.
pub fn feed(conn: &mut Connection, input: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    let n = conn.receive(input, &mut events).expect("no connection error");
    assert_eq!(n, input.len(), "whole frames consumed");
    events
}

/// Feeds `input` the way a shell does, in pieces of the given sizes,
/// keeping what was not consumed in front of the next piece.
pub fn feed_split(conn: &mut Connection, input: &[u8], cuts: &[usize]) -> Result<Vec<Event>, ConnectionError> {
    let mut events = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(at, input.len());
        pending.extend_from_slice(&input[at..cut]);
        at = cut;
        let n = conn.receive(&pending, &mut events)?;
        pending.drain(..n);
    }
    assert!(pending.is_empty(), "{} bytes left unconsumed", pending.len());
    Ok(events)
}

/// A connection past the preface and both SETTINGS, output emptied.
pub fn started() -> (Connection, Client) {
    started_with(ServerSettings::default())
}

pub fn started_with(settings: ServerSettings) -> (Connection, Client) {
    let mut conn = Connection::new(settings);
    let mut input = preface();
    input.extend(settings_ack());
    feed(&mut conn, &input);
    let out = frames(conn.output());
    assert_eq!(out.last().map(|f| (f.kind, f.flags)), Some((kind::SETTINGS, flag::ACK)));
    (conn, Client::new())
}

pub fn request_stream(events: &[Event]) -> (u32, &http::request::Parts, bool) {
    match events {
        [Event::Request {
            stream,
            head,
            end_stream,
        }] => (*stream, head, *end_stream),
        other => panic!("expected one request, got {other:?}"),
    }
}

/// Feeds `input`, which must raise a connection error; returns its code,
/// checked against the GOAWAY that ends the output.
pub fn conn_error(conn: &mut Connection, input: &[u8]) -> ErrorCode {
    let mut events = Vec::new();
    let err = conn.receive(input, &mut events).expect_err("a connection error");
    let out = frames(conn.output());
    let last = out.last().expect("a GOAWAY");
    assert_eq!(last.kind, kind::GOAWAY);
    assert_eq!(last.code(), err.code.as_u32());
    // Failed for good: the same error again, nothing more written.
    assert_eq!(conn.receive(b"", &mut events), Err(err.clone()));
    assert!(conn.output().is_empty());
    err.code
}

/// Feeds `input`, which must be consumed without a connection error, and
/// returns the events and the RST_STREAMs written (stream, code).
pub fn feed_rsts(conn: &mut Connection, input: &[u8]) -> (Vec<Event>, Vec<(u32, ErrorCode)>) {
    let events = feed(conn, input);
    let rsts = frames(conn.output())
        .into_iter()
        .filter(|f| f.kind == kind::RST_STREAM)
        .map(|f| (f.stream, ErrorCode::from_u32(f.code())))
        .collect();
    (events, rsts)
}

/// `body` as DATA frames of at most 16,384 bytes, END_STREAM on the last
/// if `end_stream`.
pub fn data_split(stream: u32, body: &[u8], end_stream: bool) -> Vec<u8> {
    let chunks: Vec<&[u8]> = body.chunks(16_384).collect();
    let last = chunks.len().saturating_sub(1);
    chunks
        .iter()
        .enumerate()
        .flat_map(|(i, c)| data(stream, c, end_stream && i == last))
        .collect()
}
