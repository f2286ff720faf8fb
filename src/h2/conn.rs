//! The server side of one HTTP/2 connection, as a state machine: bytes
//! from the client in, [`Event`]s and bytes for the client out.
//!
//! What it keeps, and why so little: a connection is mostly idle, so while
//! it waits it owns no buffer. [`Connection::receive`] consumes whole frames
//! only and leaves an incomplete one to the shell, which gives it again
//! with more bytes after it; frames to send go to an output vector that the
//! shell drains and frees. Only a header block split over HEADERS and
//! CONTINUATION frames is buffered here, between its frames, and bounded.
//! A stream is a small struct in a vector sorted by id: a stream is in it
//! from its request head until its response ends (or a reset); an odd id
//! at most the highest seen and not in it is closed, and forgotten.
//!
//! Flow control. Outbound: the connection's and each stream's send window,
//! from the client's SETTINGS and WINDOW_UPDATEs; [`Connection::send_data`]
//! takes what they allow and [`Event::WindowOpened`] says when a window that
//! was spent grows again. Inbound: each stream may receive
//! `initial_window_size` bytes not yet given back by
//! [`Connection::release`]; the connection's window is given back as DATA
//! arrives, since the streams' windows already bound what is held: at most
//! `max_concurrent_streams × initial_window_size` of request body.
//!
//! Limits against hostile clients, each a constant below: the size of a
//! header block ([`HEADER_BLOCK_SLACK`]), resets of streams whose response
//! has not started ([`RESET_BUDGET`], CVE-2023-44487), control frames
//! queued for a client that does not read ([`MAX_QUEUED_CONTROL`]), and
//! frames that carry nothing ([`EMPTY_FRAME_BUDGET`]).

use super::frame::{
    self, flag, kind, setting, ErrorCode, FrameHeader, PayloadError, DEFAULT_WINDOW, HEADER_LEN,
    MAX_ALLOWED_FRAME_SIZE, MAX_FRAME_SIZE, MAX_WINDOW, PREFACE,
};
use super::hpack_out;
use super::request::{HeadBuilder, HeadError, Section};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};

/// How much larger than `max_header_list_size` a header block may be,
/// compressed, across HEADERS and CONTINUATION frames (16 KiB): HPACK can
/// make a block somewhat larger than the list it decodes to (literal
/// lengths, table size updates), so a block within this slack is decoded
/// and a list too large is answered 431; a larger block is a connection
/// error ENHANCE_YOUR_CALM, since it cannot be skipped without losing the
/// HPACK state. This is what bounds a CONTINUATION flood (CVE-2024-27316).
pub const HEADER_BLOCK_SLACK: usize = 16 * 1024;

/// Streams the client may reset before their response has started, beyond
/// those paid back by responses that did start (100): more is a rapid
/// reset attack (CVE-2023-44487), each reset having cost an upstream
/// request, and ends the connection with ENHANCE_YOUR_CALM. Stream errors
/// the client provokes (a malformed head, DATA on a closed stream) count
/// the same. A reset after the response started costs nothing extra (an
/// event stream closed by its reader), so it is not counted.
pub const RESET_BUDGET: u32 = 100;

/// Bytes of control frames answering the client (SETTINGS and PING ACKs,
/// RST_STREAMs, WINDOW_UPDATEs) that may wait in the output (64 KiB): a
/// client that sends PINGs or SETTINGS without reading the answers would
/// otherwise grow the output without bound (CVE-2019-9512, -9515). More is
/// a connection error ENHANCE_YOUR_CALM.
pub const MAX_QUEUED_CONTROL: usize = 64 * 1024;

/// Frames in a row that carry nothing, DATA without data and without
/// END_STREAM, HEADERS or CONTINUATION with an empty fragment and without
/// END_HEADERS (100): each costs work and moves nothing (CVE-2019-9518).
/// A DATA frame with data or a complete header block starts the count over.
pub const EMPTY_FRAME_BUDGET: u32 = 100;

/// Streams ssegate reset (or ended while the client was still sending)
/// whose late frames are ignored rather than answered as frames on a
/// closed stream (RFC 9113, 5.1, "closed"): the last 8. Frames the client
/// had in flight when it saw the RST_STREAM are expected and harmless; a
/// HEADERS (trailers) among them would otherwise be a connection error.
const RECENT_RESETS: usize = 8;

/// The HPACK dynamic table size ssegate lets the client use: the protocol's
/// default (SETTINGS_HEADER_TABLE_SIZE, not announced). A size update
/// above it is a COMPRESSION_ERROR (RFC 7541, 6.3).
const HPACK_TABLE_SIZE: usize = 4096;

/// The payload of ssegate's PINGs: one is outstanding at a time, so a
/// constant tells its ACK from others.
const PING_PAYLOAD: [u8; 8] = *b"ssegate\0";

/// What ssegate announces in its SETTINGS, and the limits it holds the
/// client to.
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    /// SETTINGS_MAX_CONCURRENT_STREAMS: streams the client may have open.
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE: how much request body a stream may
    /// send before ssegate gives credit back ([`Connection::release`]).
    pub initial_window_size: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE: the largest request head (decoded,
    /// as RFC 9113 counts it: name + value + 32 per field). A larger one is
    /// answered with [`Event::HeadTooLarge`].
    pub max_header_list_size: u32,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_concurrent_streams: 128,
            initial_window_size: 65_535,
            max_header_list_size: 64 * 1024,
        }
    }
}

/// What the client did, for the shell to act on, in the order it did it.
#[derive(Debug)]
pub enum Event {
    /// A new request. `end_stream`: it has no body.
    Request {
        stream: u32,
        head: http::request::Parts,
        end_stream: bool,
    },
    /// Request body bytes (padding removed). They count against the
    /// stream's window until given back with [`Connection::release`].
    Data { stream: u32, data: Bytes, end_stream: bool },
    /// The request's body is complete (trailers came; they are not kept).
    BodyEnd { stream: u32 },
    /// The stream is gone: the client reset it, or it broke a rule that
    /// ssegate answered with RST_STREAM. Its response must not be sent.
    Reset { stream: u32, code: ErrorCode },
    /// The request's head was larger than `max_header_list_size`: answer
    /// 431 on this stream (the connection stays usable). Its body, if any,
    /// is dropped here.
    HeadTooLarge { stream: u32 },
    /// The client gave send credit: streams blocked on flow control may
    /// send again (`stream` 0: the connection's window, so all of them).
    WindowOpened { stream: u32 },
    /// The client said GOAWAY: it opens no more streams.
    GoAway,
    /// The client answered a PING of ssegate's ([`Connection::ping`]).
    PingAcked,
}

/// A connection error (RFC 9113, 5.4.1): a GOAWAY with the code is queued
/// in the output; write it, then close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HTTP/2 connection error {code:?}: {reason}")]
pub struct ConnectionError {
    pub code: ErrorCode,
    pub reason: &'static str,
}

fn error(code: ErrorCode, reason: &'static str) -> ConnectionError {
    ConnectionError { code, reason }
}

impl From<PayloadError> for ConnectionError {
    fn from(e: PayloadError) -> Self {
        error(e.code, e.reason)
    }
}

/// Where the connection is in its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the client's 24-byte preface.
    Preface,
    /// The preface came; the next frame must be the client's SETTINGS.
    Settings,
    /// Running.
    Open,
}

/// The client sent END_STREAM (or trailers): no more DATA is expected.
const REMOTE_CLOSED: u8 = 1;
/// ssegate sent a final response head: a client reset costs nothing more.
const RESPONSE_STARTED: u8 = 2;
/// The head was too large: the body is dropped here, not delivered.
const DISCARD_BODY: u8 = 4;

/// One stream whose response has not ended.
#[derive(Debug, Clone)]
struct Stream {
    id: u32,
    /// What ssegate may still send (negative after the client shrank
    /// SETTINGS_INITIAL_WINDOW_SIZE, RFC 9113, 6.9.2).
    send_window: i64,
    /// What the client may still send.
    recv_window: i64,
    /// Credit given back by the shell (and padding) not yet sent as a
    /// WINDOW_UPDATE: sent in batches of half a window.
    recv_released: i64,
    /// Request body bytes still due by its `content-length`.
    content_length: Option<u64>,
    flags: u8,
}

impl Stream {
    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A header block whose END_HEADERS has not come yet.
#[derive(Debug)]
struct PartialBlock {
    stream: u32,
    end_stream: bool,
    self_dependent: bool,
    fragments: Vec<u8>,
}

/// What a stream id is, for a frame that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// In the table, at this index.
    Open(usize),
    /// Never opened (RFC 9113, 5.1, "idle").
    Idle,
    /// Opened, and ended or reset since.
    Closed,
    /// Its frames are dropped: ssegate reset it recently, or it is above
    /// the last stream of ssegate's GOAWAY.
    Ignored,
}

/// The state of one HTTP/2 connection. See the module doc.
pub struct Connection {
    settings: ServerSettings,
    phase: Phase,
    /// Set once a connection error was raised: everything after is refused.
    failed: Option<ConnectionError>,
    output: Vec<u8>,
    decoder: loona_hpack::Decoder<'static>,
    /// Streams whose response has not ended, sorted by id.
    streams: Vec<Stream>,
    /// The highest stream id the client used for a HEADERS.
    highest: u32,
    header_block: Option<PartialBlock>,
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE and MAX_FRAME_SIZE.
    peer_initial_window: u32,
    peer_max_frame: u32,
    conn_send_window: i64,
    conn_recv_window: i64,
    /// DATA received and not yet given back on the connection's window.
    conn_recv_unacked: i64,
    /// Whether the client acknowledged ssegate's SETTINGS: before, it may
    /// use the default stream window (RFC 9113, 6.5.3).
    settings_acked: bool,
    /// The last stream of ssegate's GOAWAY, once sent.
    goaway_last: Option<u32>,
    client_goaway: bool,
    ping_outstanding: bool,
    reset_debt: u32,
    empty_frames: u32,
    /// Bytes of answering control frames possibly still in the output.
    control_unsent: usize,
    /// The output's length when ssegate last looked: less now means the
    /// shell wrote that much.
    output_seen: usize,
    recent_resets: [u32; RECENT_RESETS],
    recent_next: usize,
}

impl Connection {
    /// A connection whose client preface has not arrived yet. ssegate's
    /// SETTINGS are queued in the output at once.
    pub fn new(settings: ServerSettings) -> Self {
        let window = i64::from(settings.initial_window_size).min(MAX_WINDOW);
        let settings = ServerSettings {
            initial_window_size: window as u32,
            ..settings
        };
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_SIZE);
        let mut conn = Connection {
            settings,
            phase: Phase::Preface,
            failed: None,
            output: Vec::new(),
            decoder,
            streams: Vec::new(),
            highest: 0,
            header_block: None,
            peer_initial_window: DEFAULT_WINDOW,
            peer_max_frame: MAX_FRAME_SIZE,
            conn_send_window: i64::from(DEFAULT_WINDOW),
            conn_recv_window: i64::from(DEFAULT_WINDOW),
            conn_recv_unacked: 0,
            settings_acked: false,
            goaway_last: None,
            client_goaway: false,
            ping_outstanding: false,
            reset_debt: 0,
            empty_frames: 0,
            control_unsent: 0,
            output_seen: 0,
            recent_resets: [0; RECENT_RESETS],
            recent_next: 0,
        };
        frame::write_settings(
            &mut conn.output,
            &[
                (setting::MAX_CONCURRENT_STREAMS, settings.max_concurrent_streams),
                (setting::INITIAL_WINDOW_SIZE, settings.initial_window_size),
                (setting::MAX_HEADER_LIST_SIZE, settings.max_header_list_size),
            ],
        );
        // The connection's window starts at 65,535 whatever SETTINGS say;
        // let it hold at least one stream's window.
        let conn_target = conn.conn_recv_target();
        if conn_target > conn.conn_recv_window {
            frame::write_window_update(&mut conn.output, 0, (conn_target - conn.conn_recv_window) as u32);
            conn.conn_recv_window = conn_target;
        }
        conn.output_seen = conn.output.len();
        conn
    }

    /// Takes bytes from the client: the preface, then frames. Returns how
    /// many were consumed; the rest (an incomplete frame) is to be given
    /// again with more bytes after it. Events are appended to `events`.
    pub fn receive(&mut self, input: &[u8], events: &mut Vec<Event>) -> Result<usize, ConnectionError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.sync_output();
        let mut pos = 0;
        if self.phase == Phase::Preface {
            let n = input.len().min(PREFACE.len());
            if input[..n] != PREFACE[..n] {
                return Err(self.fail(error(ErrorCode::ProtocolError, "invalid connection preface")));
            }
            if n < PREFACE.len() {
                return Ok(0);
            }
            pos = n;
            self.phase = Phase::Settings;
        }
        while let Some(header) = input.get(pos..).and_then(FrameHeader::parse) {
            // Refused from the header alone, so the shell never holds more
            // than one frame of our maximum size.
            if header.len > MAX_FRAME_SIZE {
                return Err(self.fail(error(
                    ErrorCode::FrameSizeError,
                    "frame larger than the maximum frame size",
                )));
            }
            let end = pos + HEADER_LEN + header.len as usize;
            let Some(payload) = input.get(pos + HEADER_LEN..end) else {
                break;
            };
            if let Err(e) = self.frame(header, payload, events) {
                return Err(self.fail(e));
            }
            pos = end;
        }
        if let Err(e) = self.credit_connection() {
            return Err(self.fail(e));
        }
        self.output_seen = self.output.len();
        Ok(pos)
    }

    /// Bytes to write to the client, in order. The shell removes what it
    /// wrote (and frees the vector once it is empty).
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    /// Starts the response on `stream`. An informational status (1xx)
    /// may precede the final one and never ends the stream. Ending the
    /// stream while the client is still sending its body resets the body's
    /// side with NO_ERROR (RFC 9113, 8.1): the shell stops expecting DATA
    /// once its response has ended. Nothing happens for a stream that is
    /// gone or whose final head was already sent.
    pub fn send_headers(&mut self, stream: u32, status: StatusCode, headers: &HeaderMap, end_stream: bool) {
        if self.failed.is_some() {
            return;
        }
        let Ok(i) = self.find(stream) else {
            return;
        };
        if self.streams[i].has(RESPONSE_STARTED) {
            return;
        }
        self.sync_output();
        let informational = status.is_informational();
        let end_stream = end_stream && !informational;
        // Encode in place behind a frame header; split into CONTINUATION
        // frames only in the rare case it is larger than one frame.
        let start = self.output.len();
        self.output.extend_from_slice(&[0; HEADER_LEN]);
        hpack_out::encode_response_head(status, headers, &mut self.output);
        let block_len = self.output.len() - start - HEADER_LEN;
        let max_frame = self.peer_max_frame as usize;
        if block_len <= max_frame {
            let header = FrameHeader {
                len: block_len as u32,
                kind: kind::HEADERS,
                flags: flag::END_HEADERS | if end_stream { flag::END_STREAM } else { 0 },
                stream,
            };
            self.output[start..start + HEADER_LEN].copy_from_slice(&header.to_bytes());
        } else {
            let block = self.output.split_off(start + HEADER_LEN);
            self.output.truncate(start);
            frame::write_header_block(&mut self.output, stream, &block, end_stream, max_frame);
        }
        if !informational {
            self.streams[i].flags |= RESPONSE_STARTED;
            self.reset_debt = self.reset_debt.saturating_sub(1);
        }
        if end_stream {
            self.end_local(i);
        }
        self.output_seen = self.output.len();
    }

    /// How many body bytes `stream` may send now (the smaller of its window
    /// and the connection's; 0 when blocked or when the stream is gone).
    pub fn send_capacity(&self, stream: u32) -> usize {
        if self.failed.is_some() {
            return 0;
        }
        match self.find(stream) {
            Ok(i) => self.capacity(i),
            Err(_) => 0,
        }
    }

    fn capacity(&self, i: usize) -> usize {
        let window = self.streams[i].send_window.min(self.conn_send_window).max(0);
        usize::try_from(window).unwrap_or(0)
    }

    /// Queues DATA frames for as much of `data` as the windows allow
    /// (split at the client's max frame size); returns how many bytes
    /// were taken. `end_stream` applies only if all of `data` was taken.
    /// Nothing is taken before the response head was sent.
    pub fn send_data(&mut self, stream: u32, data: &[u8], end_stream: bool) -> usize {
        if self.failed.is_some() {
            return 0;
        }
        let Ok(i) = self.find(stream) else {
            return 0;
        };
        if !self.streams[i].has(RESPONSE_STARTED) {
            return 0;
        }
        self.sync_output();
        let n = data.len().min(self.capacity(i));
        let end = end_stream && n == data.len();
        if n == 0 {
            if end {
                frame::write_data(&mut self.output, stream, &[], true);
            }
        } else {
            let mut chunks = data[..n].chunks(self.peer_max_frame as usize).peekable();
            while let Some(chunk) = chunks.next() {
                frame::write_data(&mut self.output, stream, chunk, end && chunks.peek().is_none());
            }
            self.streams[i].send_window -= n as i64;
            self.conn_send_window -= n as i64;
        }
        if end {
            self.end_local(i);
        }
        self.output_seen = self.output.len();
        n
    }

    /// Resets `stream` (RST_STREAM with `code`); it is forgotten.
    pub fn reset(&mut self, stream: u32, code: ErrorCode) {
        if self.failed.is_some() {
            return;
        }
        let Ok(i) = self.find(stream) else {
            return;
        };
        self.sync_output();
        self.remove(i);
        frame::write_rst_stream(&mut self.output, stream, code);
        self.remember_reset(stream);
        self.output_seen = self.output.len();
    }

    /// Gives `n` bytes of request body credit back to `stream`: a
    /// WINDOW_UPDATE once half the stream's window is due (the connection's
    /// window was given back as the bytes arrived).
    pub fn release(&mut self, stream: u32, n: usize) {
        if self.failed.is_some() {
            return;
        }
        let Ok(i) = self.find(stream) else {
            return;
        };
        self.sync_output();
        let n = i64::try_from(n).unwrap_or(MAX_WINDOW);
        self.give_back(i, n);
        self.output_seen = self.output.len();
    }

    /// Queues a GOAWAY (NO_ERROR, with the last stream accepted): the
    /// client opens no more streams; those open run to their end. HEADERS
    /// for higher streams are ignored from then on (RFC 9113, 6.8).
    pub fn go_away(&mut self) {
        if self.failed.is_some() || self.goaway_last.is_some() {
            return;
        }
        self.sync_output();
        frame::write_goaway(&mut self.output, self.highest, ErrorCode::NoError, b"");
        self.goaway_last = Some(self.highest);
        self.output_seen = self.output.len();
    }

    /// Queues a PING of ssegate's; false if one is already unanswered.
    pub fn ping(&mut self) -> bool {
        if self.failed.is_some() || self.ping_outstanding {
            return false;
        }
        self.sync_output();
        frame::write_ping(&mut self.output, false, PING_PAYLOAD);
        self.ping_outstanding = true;
        self.output_seen = self.output.len();
        true
    }

    /// Streams not yet closed both ways.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Whether the client's preface (and first SETTINGS) has arrived.
    pub fn started(&self) -> bool {
        self.phase == Phase::Open
    }

    // ---- receiving ----------------------------------------------------

    /// One whole frame.
    fn frame(&mut self, h: FrameHeader, payload: &[u8], events: &mut Vec<Event>) -> Result<(), ConnectionError> {
        if let Some(block) = &self.header_block {
            if h.kind != kind::CONTINUATION || h.stream != block.stream {
                return Err(error(
                    ErrorCode::ProtocolError,
                    "frame other than CONTINUATION in a header block",
                ));
            }
        }
        if self.phase == Phase::Settings {
            if h.kind != kind::SETTINGS || h.has(flag::ACK) {
                return Err(error(ErrorCode::ProtocolError, "first frame is not SETTINGS"));
            }
            self.phase = Phase::Open;
        }
        match h.kind {
            kind::DATA => self.on_data(h, payload, events),
            kind::HEADERS => self.on_headers(h, payload, events),
            kind::PRIORITY => self.on_priority(h, payload, events),
            kind::RST_STREAM => self.on_rst_stream(h, payload, events),
            kind::SETTINGS => self.on_settings(h, payload, events),
            kind::PUSH_PROMISE => Err(error(ErrorCode::ProtocolError, "PUSH_PROMISE from a client")),
            kind::PING => self.on_ping(h, payload, events),
            kind::GOAWAY => self.on_goaway(h, payload, events),
            kind::WINDOW_UPDATE => self.on_window_update(h, payload, events),
            kind::CONTINUATION => self.on_continuation(h, payload, events),
            // Unknown types are ignored (RFC 9113, 4.1, 5.5).
            _ => Ok(()),
        }
    }

    fn on_data(&mut self, h: FrameHeader, payload: &[u8], events: &mut Vec<Event>) -> Result<(), ConnectionError> {
        if h.stream == 0 {
            return Err(error(ErrorCode::ProtocolError, "DATA on stream 0"));
        }
        // The whole payload, padding included, counts against the
        // connection's window whatever becomes of the frame.
        let len = i64::from(h.len);
        self.conn_recv_window -= len;
        if self.conn_recv_window < 0 {
            return Err(error(ErrorCode::FlowControlError, "DATA beyond the connection window"));
        }
        self.conn_recv_unacked += len;
        let data = frame::strip_padding(h.flags, payload)?;
        let end_stream = h.has(flag::END_STREAM);
        if data.is_empty() && !end_stream {
            self.empty_frame()?;
        } else if !data.is_empty() {
            self.empty_frames = 0;
        }
        let i = match self.classify(h.stream) {
            Class::Idle => return Err(error(ErrorCode::ProtocolError, "DATA on an idle stream")),
            Class::Ignored => return Ok(()),
            Class::Closed => return self.stream_error(h.stream, ErrorCode::StreamClosed, events),
            Class::Open(i) => i,
        };
        let stream = &mut self.streams[i];
        if stream.has(REMOTE_CLOSED) {
            return self.stream_error(h.stream, ErrorCode::StreamClosed, events);
        }
        stream.recv_window -= len;
        if stream.recv_window < 0 {
            return self.stream_error(h.stream, ErrorCode::FlowControlError, events);
        }
        if end_stream {
            stream.flags |= REMOTE_CLOSED;
        }
        let discard = stream.has(DISCARD_BODY);
        if !discard {
            // RFC 9113, 8.1.1: DATA must add up to the content-length.
            if let Some(remaining) = stream.content_length {
                let got = data.len() as u64;
                if got > remaining || (end_stream && got != remaining) {
                    return self.stream_error(h.stream, ErrorCode::ProtocolError, events);
                }
                stream.content_length = Some(remaining - got);
            }
        }
        // Padding is never delivered, so it is given back here; a dropped
        // body is given back whole.
        let mut give_back = len - data.len() as i64;
        if discard {
            give_back = len;
        } else if !data.is_empty() || end_stream {
            events.push(Event::Data {
                stream: h.stream,
                data: Bytes::copy_from_slice(data),
                end_stream,
            });
        }
        if give_back > 0 {
            let before = self.output.len();
            self.give_back(i, give_back);
            self.count_control(before)?;
        }
        Ok(())
    }

    fn on_headers(&mut self, h: FrameHeader, payload: &[u8], events: &mut Vec<Event>) -> Result<(), ConnectionError> {
        if h.stream == 0 {
            return Err(error(ErrorCode::ProtocolError, "HEADERS on stream 0"));
        }
        if h.stream.is_multiple_of(2) {
            return Err(error(ErrorCode::ProtocolError, "HEADERS on an even stream id"));
        }
        let p = frame::parse_headers(h.flags, payload)?;
        let self_dependent = p.priority.is_some_and(|p| p.dependency == h.stream);
        let end_stream = h.has(flag::END_STREAM);
        if h.has(flag::END_HEADERS) {
            return self.header_block_done(h.stream, end_stream, self_dependent, p.fragment, events);
        }
        if p.fragment.is_empty() {
            self.empty_frame()?;
        }
        if p.fragment.len() > self.max_header_block() {
            return Err(error(ErrorCode::EnhanceYourCalm, "header block too large"));
        }
        self.header_block = Some(PartialBlock {
            stream: h.stream,
            end_stream,
            self_dependent,
            fragments: p.fragment.to_vec(),
        });
        Ok(())
    }

    fn on_continuation(
        &mut self,
        h: FrameHeader,
        payload: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<(), ConnectionError> {
        // frame() has checked that a block in progress is on this stream.
        if self.header_block.is_none() {
            return Err(error(ErrorCode::ProtocolError, "CONTINUATION without a header block"));
        }
        let end_headers = h.has(flag::END_HEADERS);
        if payload.is_empty() && !end_headers {
            self.empty_frame()?;
        }
        let max = self.max_header_block();
        let Some(block) = self.header_block.as_mut() else {
            return Ok(());
        };
        if block.fragments.len() + payload.len() > max {
            return Err(error(ErrorCode::EnhanceYourCalm, "header block too large"));
        }
        block.fragments.extend_from_slice(payload);
        if !end_headers {
            return Ok(());
        }
        let Some(block) = self.header_block.take() else {
            return Ok(());
        };
        self.header_block_done(
            block.stream,
            block.end_stream,
            block.self_dependent,
            &block.fragments,
            events,
        )
    }

    /// The largest header block kept across CONTINUATION frames.
    fn max_header_block(&self) -> usize {
        usize::try_from(self.settings.max_header_list_size)
            .unwrap_or(usize::MAX)
            .saturating_add(HEADER_BLOCK_SLACK)
    }

    /// A complete header block on an odd, non-zero stream id.
    fn header_block_done(
        &mut self,
        id: u32,
        end_stream: bool,
        self_dependent: bool,
        block: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<(), ConnectionError> {
        self.empty_frames = 0;
        match self.classify(id) {
            // Decoded all the same: the HPACK state is the connection's.
            Class::Ignored => self.decode(block, |_, _| {}),
            Class::Closed => {
                // RFC 9113, 5.1: STREAM_CLOSED for a stream that was used;
                // an id below the highest may never have been, and is an
                // unexpected id (5.1.1).
                let code = if id == self.highest {
                    ErrorCode::StreamClosed
                } else {
                    ErrorCode::ProtocolError
                };
                Err(error(code, "HEADERS on a closed stream"))
            }
            Class::Idle => self.open_stream(id, end_stream, self_dependent, block, events),
            Class::Open(i) => self.trailers(i, end_stream, self_dependent, block, events),
        }
    }

    fn open_stream(
        &mut self,
        id: u32,
        end_stream: bool,
        self_dependent: bool,
        block: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<(), ConnectionError> {
        self.highest = id;
        if self_dependent {
            self.decode(block, |_, _| {})?;
            return self.refuse_new_stream(id, ErrorCode::ProtocolError, events);
        }
        if self.streams.len() >= self.settings.max_concurrent_streams as usize {
            // RFC 9113, 5.1.2: refused, so the client may retry it.
            self.decode(block, |_, _| {})?;
            let before = self.output.len();
            frame::write_rst_stream(&mut self.output, id, ErrorCode::RefusedStream);
            self.remember_reset(id);
            return self.count_control(before);
        }
        let mut builder = HeadBuilder::new(Section::Head, self.settings.max_header_list_size);
        self.decode(block, |name, value| builder.field(name, value))?;
        let (flags, content_length, event) = match builder.finish(end_stream) {
            Ok(head) => (
                0,
                head.content_length,
                Event::Request {
                    stream: id,
                    head: head.parts,
                    end_stream,
                },
            ),
            Err(HeadError::TooLarge) => (DISCARD_BODY, None, Event::HeadTooLarge { stream: id }),
            Err(HeadError::Malformed(_)) => return self.refuse_new_stream(id, ErrorCode::ProtocolError, events),
        };
        let recv_window = if self.settings_acked {
            i64::from(self.settings.initial_window_size)
        } else {
            i64::from(DEFAULT_WINDOW)
        };
        // Ids only grow, so pushing keeps the table sorted.
        self.streams.push(Stream {
            id,
            send_window: i64::from(self.peer_initial_window),
            recv_window,
            recv_released: 0,
            content_length,
            flags: flags | if end_stream { REMOTE_CLOSED } else { 0 },
        });
        events.push(event);
        Ok(())
    }

    /// A second header block on an open stream: trailers (RFC 9113, 8.1),
    /// which must end the stream and hold no pseudo-header.
    fn trailers(
        &mut self,
        i: usize,
        end_stream: bool,
        self_dependent: bool,
        block: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<(), ConnectionError> {
        let id = self.streams[i].id;
        let mut builder = HeadBuilder::new(Section::Trailers, self.settings.max_header_list_size);
        self.decode(block, |name, value| builder.field(name, value))?;
        let stream = &self.streams[i];
        if stream.has(REMOTE_CLOSED) {
            return self.stream_error(id, ErrorCode::StreamClosed, events);
        }
        let code = match builder.finish_trailers() {
            _ if self_dependent || !end_stream => Some(ErrorCode::ProtocolError),
            Err(HeadError::TooLarge) => Some(ErrorCode::EnhanceYourCalm),
            Err(HeadError::Malformed(_)) => Some(ErrorCode::ProtocolError),
            Ok(()) if stream.content_length.is_some_and(|n| n != 0) => Some(ErrorCode::ProtocolError),
            Ok(()) => None,
        };
        if let Some(code) = code {
            return self.stream_error(id, code, events);
        }
        let stream = &mut self.streams[i];
        stream.flags |= REMOTE_CLOSED;
        if !stream.has(DISCARD_BODY) {
            events.push(Event::BodyEnd { stream: id });
        }
        Ok(())
    }

    /// Decodes a header block; any HPACK error is a COMPRESSION_ERROR
    /// (RFC 9113, 4.3).
    fn decode(&mut self, block: &[u8], mut field: impl FnMut(&[u8], &[u8])) -> Result<(), ConnectionError> {
        self.decoder
            .decode_with_cb(block, |name, value| field(&name, &value))
            .map_err(|_| error(ErrorCode::CompressionError, "HPACK decoding error"))
    }

    fn on_priority(&mut self, h: FrameHeader, payload: &[u8], events: &mut Vec<Event>) -> Result<(), ConnectionError> {
        if h.stream == 0 {
            return Err(error(ErrorCode::ProtocolError, "PRIORITY on stream 0"));
        }
        let class = self.classify(h.stream);
        let code = match frame::Priority::parse(payload) {
            None => ErrorCode::FrameSizeError,
            Some(p) if p.dependency == h.stream => ErrorCode::ProtocolError,
            // Priorities are not acted on (RFC 9113, 5.3.2).
            Some(_) => return Ok(()),
        };
        match class {
            // No RST_STREAM may name an idle stream (RFC 9113, 6.4).
            Class::Idle => Err(error(code, "invalid PRIORITY on an idle stream")),
            // A stream error in any other state, a closed stream's too: the
            // rules of 5.3.1 and 6.3 know no exception (and the client that
            // breaks them learns it).
            Class::Open(_) | Class::Closed | Class::Ignored => self.stream_error(h.stream, code, events),
        }
    }

    fn on_rst_stream(
        &mut self,
        h: FrameHeader,
        payload: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<(), ConnectionError> {
        let Some(code) = frame::parse_u32(payload) else {
            return Err(error(ErrorCode::FrameSizeError, "RST_STREAM length is not 4"));
        };
        if h.stream == 0 {
            return Err(error(ErrorCode::ProtocolError, "RST_STREAM on stream 0"));
        }
        match self.classify(h.stream) {
            Class::Idle => Err(error(ErrorCode::ProtocolError, "RST_STREAM on an idle stream")),
            Class::Closed | Class::Ignored => Ok(()),
            Class::Open(i) => {
                let stream = self.remove(i);
                events.push(Event::Reset {
                    stream: h.stream,
                    code: ErrorCode::from_u32(code),
                });
                if stream.has(RESPONSE_STARTED) {
                    Ok(())
                } else {
                    self.add_reset_debt()
                }
            }
        }
    }

    fn on_settings(&mut self, h: FrameHeader, payload: &[u8], events: &mut Vec<Event>) -> Result<(), ConnectionError> {
        if h.stream != 0 {
            return Err(error(ErrorCode::ProtocolError, "SETTINGS on a stream"));
        }
        if h.has(flag::ACK) {
            if !payload.is_empty() {
                return Err(error(ErrorCode::FrameSizeError, "SETTINGS ACK with a payload"));
            }
            if !self.settings_acked {
                // Streams opened before the ACK got the default window.
                self.settings_acked = true;
                let delta = i64::from(self.settings.initial_window_size) - i64::from(DEFAULT_WINDOW);
                for stream in &mut self.streams {
                    stream.recv_window += delta;
                }
            }
            return Ok(());
        }
        let mut window = None;
        let mut largest_window = 0;
        for (id, value) in frame::parse_settings(payload)? {
            match id {
                setting::ENABLE_PUSH | setting::ENABLE_CONNECT_PROTOCOL | setting::NO_RFC7540_PRIORITIES
                    if value > 1 =>
                {
                    return Err(error(ErrorCode::ProtocolError, "SETTINGS flag other than 0 or 1"));
                }
                setting::INITIAL_WINDOW_SIZE => {
                    if i64::from(value) > MAX_WINDOW {
                        return Err(error(
                            ErrorCode::FlowControlError,
                            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                        ));
                    }
                    window = Some(value);
                    largest_window = largest_window.max(value);
                }
                setting::MAX_FRAME_SIZE => {
                    if !(MAX_FRAME_SIZE..=MAX_ALLOWED_FRAME_SIZE).contains(&value) {
                        return Err(error(ErrorCode::ProtocolError, "SETTINGS_MAX_FRAME_SIZE out of range"));
                    }
                    self.peer_max_frame = value;
                }
                // The table size concerns an encoder that uses no table;
                // the others a server that does not push or limit itself.
                _ => {}
            }
        }
        if let Some(window) = window {
            // Values apply in order (RFC 9113, 6.5.3): only the last one
            // stays, but no window may have passed 2^31-1 on the way.
            let old = i64::from(self.peer_initial_window);
            let peak = i64::from(largest_window) - old;
            if self.streams.iter().any(|s| s.send_window + peak > MAX_WINDOW) {
                return Err(error(
                    ErrorCode::FlowControlError,
                    "SETTINGS_INITIAL_WINDOW_SIZE overflows a window",
                ));
            }
            let delta = i64::from(window) - old;
            for stream in &mut self.streams {
                let before = stream.send_window;
                stream.send_window += delta;
                if before <= 0 && stream.send_window > 0 {
                    events.push(Event::WindowOpened { stream: stream.id });
                }
            }
            self.peer_initial_window = window;
        }
        let before = self.output.len();
        frame::write_settings_ack(&mut self.output);
        self.count_control(before)
    }

    fn on_ping(&mut self, h: FrameHeader, payload: &[u8], events: &mut Vec<Event>) -> Result<(), ConnectionError> {
        if h.stream != 0 {
            return Err(error(ErrorCode::ProtocolError, "PING on a stream"));
        }
        let Ok(payload) = <[u8; 8]>::try_from(payload) else {
            return Err(error(ErrorCode::FrameSizeError, "PING length is not 8"));
        };
        if h.has(flag::ACK) {
            if self.ping_outstanding && payload == PING_PAYLOAD {
                self.ping_outstanding = false;
                events.push(Event::PingAcked);
            }
            return Ok(());
        }
        let before = self.output.len();
        frame::write_ping(&mut self.output, true, payload);
        self.count_control(before)
    }

    fn on_goaway(&mut self, h: FrameHeader, payload: &[u8], events: &mut Vec<Event>) -> Result<(), ConnectionError> {
        if h.stream != 0 {
            return Err(error(ErrorCode::ProtocolError, "GOAWAY on a stream"));
        }
        if payload.len() < 8 {
            return Err(error(ErrorCode::FrameSizeError, "GOAWAY shorter than 8 bytes"));
        }
        if !self.client_goaway {
            self.client_goaway = true;
            events.push(Event::GoAway);
        }
        Ok(())
    }

    fn on_window_update(
        &mut self,
        h: FrameHeader,
        payload: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<(), ConnectionError> {
        let Some(increment) = frame::parse_u32(payload) else {
            return Err(error(ErrorCode::FrameSizeError, "WINDOW_UPDATE length is not 4"));
        };
        let increment = i64::from(increment & 0x7fff_ffff);
        if h.stream == 0 {
            if increment == 0 {
                return Err(error(ErrorCode::ProtocolError, "WINDOW_UPDATE of 0 on the connection"));
            }
            let before = self.conn_send_window;
            self.conn_send_window += increment;
            if self.conn_send_window > MAX_WINDOW {
                return Err(error(ErrorCode::FlowControlError, "connection window above 2^31-1"));
            }
            if before <= 0 && self.conn_send_window > 0 {
                events.push(Event::WindowOpened { stream: 0 });
            }
            return Ok(());
        }
        let i = match self.classify(h.stream) {
            Class::Idle => return Err(error(ErrorCode::ProtocolError, "WINDOW_UPDATE on an idle stream")),
            Class::Closed | Class::Ignored => return Ok(()),
            Class::Open(i) => i,
        };
        if increment == 0 {
            return self.stream_error(h.stream, ErrorCode::ProtocolError, events);
        }
        let stream = &mut self.streams[i];
        let before = stream.send_window;
        stream.send_window += increment;
        if stream.send_window > MAX_WINDOW {
            return self.stream_error(h.stream, ErrorCode::FlowControlError, events);
        }
        if before <= 0 && stream.send_window > 0 {
            events.push(Event::WindowOpened { stream: h.stream });
        }
        Ok(())
    }

    // ---- streams --------------------------------------------------------

    fn find(&self, id: u32) -> Result<usize, usize> {
        self.streams.binary_search_by_key(&id, |s| s.id)
    }

    fn classify(&self, id: u32) -> Class {
        if let Ok(i) = self.find(id) {
            return Class::Open(i);
        }
        if id.is_multiple_of(2) {
            // ssegate opens no streams (no push), so even ids stay idle.
            return Class::Idle;
        }
        if self.goaway_last.is_some_and(|last| id > last) {
            return Class::Ignored;
        }
        if id > self.highest {
            return Class::Idle;
        }
        if self.recent_resets.contains(&id) {
            return Class::Ignored;
        }
        Class::Closed
    }

    fn remove(&mut self, i: usize) -> Stream {
        let stream = self.streams.remove(i);
        if self.streams.is_empty() {
            // No capacity kept by an idle connection.
            self.streams = Vec::new();
        }
        stream
    }

    /// The response of stream `i` ended: it is forgotten, and if the client
    /// is still sending, told to stop (RFC 9113, 8.1).
    fn end_local(&mut self, i: usize) {
        let stream = self.remove(i);
        if !stream.has(REMOTE_CLOSED) {
            frame::write_rst_stream(&mut self.output, stream.id, ErrorCode::NoError);
            self.remember_reset(stream.id);
        }
    }

    fn remember_reset(&mut self, id: u32) {
        self.recent_resets[self.recent_next] = id;
        self.recent_next = (self.recent_next + 1) % RECENT_RESETS;
    }

    /// A stream error (RFC 9113, 5.4.2): RST_STREAM, the stream forgotten,
    /// the shell told if it knew the stream. Counted in the reset budget.
    /// The late frames of a stream that was open are ignored from then on;
    /// those of a stream already closed are answered again, since nothing
    /// of them can have been in flight.
    fn stream_error(&mut self, id: u32, code: ErrorCode, events: &mut Vec<Event>) -> Result<(), ConnectionError> {
        if let Ok(i) = self.find(id) {
            self.remove(i);
            self.remember_reset(id);
            events.push(Event::Reset { stream: id, code });
        }
        let before = self.output.len();
        frame::write_rst_stream(&mut self.output, id, code);
        self.count_control(before)?;
        self.add_reset_debt()
    }

    /// A stream error on the stream a header block just opened: its body
    /// may be in flight already, so it is ignored.
    fn refuse_new_stream(&mut self, id: u32, code: ErrorCode, events: &mut Vec<Event>) -> Result<(), ConnectionError> {
        self.remember_reset(id);
        self.stream_error(id, code, events)
    }

    fn add_reset_debt(&mut self) -> Result<(), ConnectionError> {
        self.reset_debt += 1;
        if self.reset_debt > RESET_BUDGET {
            return Err(error(ErrorCode::EnhanceYourCalm, "too many streams reset"));
        }
        Ok(())
    }

    fn empty_frame(&mut self) -> Result<(), ConnectionError> {
        self.empty_frames += 1;
        if self.empty_frames > EMPTY_FRAME_BUDGET {
            return Err(error(ErrorCode::EnhanceYourCalm, "too many empty frames"));
        }
        Ok(())
    }

    // ---- inbound flow control -----------------------------------------

    /// The window a stream's credit is restored up to: the default until
    /// the client acknowledged ssegate's SETTINGS.
    fn stream_recv_target(&self) -> i64 {
        if self.settings_acked {
            i64::from(self.settings.initial_window_size)
        } else {
            i64::from(DEFAULT_WINDOW)
        }
    }

    fn conn_recv_target(&self) -> i64 {
        i64::from(self.settings.initial_window_size).max(i64::from(DEFAULT_WINDOW))
    }

    /// Credits `n` bytes back to stream `i`, and sends a WINDOW_UPDATE
    /// once half a window is due. Nothing once the client ended its side.
    fn give_back(&mut self, i: usize, n: i64) {
        let target = self.stream_recv_target();
        let stream = &mut self.streams[i];
        if stream.has(REMOTE_CLOSED) {
            return;
        }
        let room = (target - stream.recv_window - stream.recv_released).max(0);
        stream.recv_released += n.min(room);
        if stream.recv_released > 0 && stream.recv_released >= (target / 2).max(1) {
            frame::write_window_update(&mut self.output, stream.id, stream.recv_released as u32);
            stream.recv_window += stream.recv_released;
            stream.recv_released = 0;
        }
    }

    /// Gives the connection's window back once half of it was used.
    fn credit_connection(&mut self) -> Result<(), ConnectionError> {
        let target = self.conn_recv_target();
        if self.conn_recv_unacked > 0 && self.conn_recv_unacked >= target / 2 {
            let before = self.output.len();
            frame::write_window_update(&mut self.output, 0, self.conn_recv_unacked as u32);
            self.conn_recv_window += self.conn_recv_unacked;
            self.conn_recv_unacked = 0;
            self.count_control(before)?;
        }
        Ok(())
    }

    // ---- output ---------------------------------------------------------

    /// Notes what the shell wrote since ssegate last looked: written bytes
    /// are taken off the control frames' count first, which can only
    /// undercount what is still queued when data frames were written too.
    fn sync_output(&mut self) {
        let len = self.output.len();
        let written = self.output_seen.saturating_sub(len);
        self.control_unsent = self.control_unsent.saturating_sub(written).min(len);
        self.output_seen = len;
    }

    /// Counts the control frames appended since `before` as answering the
    /// client, and fails when too many are waiting for it to read.
    fn count_control(&mut self, before: usize) -> Result<(), ConnectionError> {
        self.control_unsent += self.output.len().saturating_sub(before);
        if self.control_unsent > MAX_QUEUED_CONTROL {
            return Err(error(ErrorCode::EnhanceYourCalm, "client does not read control frames"));
        }
        Ok(())
    }

    /// Raises a connection error: GOAWAY with the last stream processed,
    /// everything dropped.
    fn fail(&mut self, e: ConnectionError) -> ConnectionError {
        let last = self.goaway_last.map_or(self.highest, |l| l.min(self.highest));
        frame::write_goaway(&mut self.output, last, e.code, e.reason.as_bytes());
        self.output_seen = self.output.len();
        self.streams = Vec::new();
        self.header_block = None;
        self.failed = Some(e.clone());
        e
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "conn_limits_tests.rs"]
mod limits_tests;
