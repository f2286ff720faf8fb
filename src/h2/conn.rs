//! The server side of one HTTP/2 connection, as a state machine: bytes
//! from the client in, [`Event`]s and bytes for the client out.
//!
//! INTERFACE DRAFT: the shell (`src/proxy/h2/`) is written against these
//! signatures; the bodies are being implemented.

use super::frame::ErrorCode;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};

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
    /// 431 on this stream (the connection stays usable).
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

/// The state of one HTTP/2 connection. See the module doc.
pub struct Connection {
    _private: (),
}

impl Connection {
    /// A connection whose client preface has not arrived yet. ssegate's
    /// SETTINGS are queued in the output at once.
    pub fn new(settings: ServerSettings) -> Self {
        let _ = settings;
        todo!()
    }

    /// Takes bytes from the client: the preface, then frames. Returns how
    /// many were consumed; the rest (an incomplete frame) is to be given
    /// again with more bytes after it. Events are appended to `events`.
    pub fn receive(&mut self, input: &[u8], events: &mut Vec<Event>) -> Result<usize, ConnectionError> {
        let _ = (input, events);
        todo!()
    }

    /// Bytes to write to the client, in order. The shell removes what it
    /// wrote (and frees the vector once it is empty).
    pub fn output(&mut self) -> &mut Vec<u8> {
        todo!()
    }

    /// Starts the response on `stream`.
    pub fn send_headers(&mut self, stream: u32, status: StatusCode, headers: &HeaderMap, end_stream: bool) {
        let _ = (stream, status, headers, end_stream);
        todo!()
    }

    /// How many body bytes `stream` may send now (the smaller of its window
    /// and the connection's; 0 when blocked or when the stream is gone).
    pub fn send_capacity(&self, stream: u32) -> usize {
        let _ = stream;
        todo!()
    }

    /// Queues DATA frames for as much of `data` as the windows allow
    /// (split at the client's max frame size); returns how many bytes
    /// were taken. `end_stream` applies only if all of `data` was taken.
    pub fn send_data(&mut self, stream: u32, data: &[u8], end_stream: bool) -> usize {
        let _ = (stream, data, end_stream);
        todo!()
    }

    /// Resets `stream` (RST_STREAM with `code`); it is forgotten.
    pub fn reset(&mut self, stream: u32, code: ErrorCode) {
        let _ = (stream, code);
        todo!()
    }

    /// Gives `n` bytes of request body credit back to `stream` (and the
    /// connection): WINDOW_UPDATE frames.
    pub fn release(&mut self, stream: u32, n: usize) {
        let _ = (stream, n);
        todo!()
    }

    /// Queues a GOAWAY (NO_ERROR, with the last stream accepted): the
    /// client opens no more streams; those open run to their end.
    pub fn go_away(&mut self) {
        todo!()
    }

    /// Queues a PING of ssegate's; false if one is already unanswered.
    pub fn ping(&mut self) -> bool {
        todo!()
    }

    /// Streams not yet closed both ways.
    pub fn open_streams(&self) -> usize {
        todo!()
    }

    /// Whether the client's preface (and first SETTINGS) has arrived.
    pub fn started(&self) -> bool {
        todo!()
    }
}
