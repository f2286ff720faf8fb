//! Client limits, from the command line, for both protocols. The HTTP/1.1
//! path (`h1/conn.rs`, `h1/pump.rs`) and the HTTP/2 path (`h2/`) each keep
//! them on their connection's one timer, with the same meaning:
//! - **header timeout**: a new connection, or the first byte of a new head
//!   on a kept-alive one (HTTP/2: the client preface), until it is complete
//!   (slowloris);
//! - **keep-alive timeout**: no request in flight and no byte of a new one;
//! - **send timeout**: the client has taken no response byte for that long
//!   (HTTP/2: the stream whose window stays shut is reset, or the whole
//!   connection when the client reads nothing at all).
//!
//! An open event stream is a request in flight, so neither the header nor
//! the keep-alive timeout ever touches it: only its upstream's silence
//! (`timeouts.idle`) ends it.

use super::normalize::EncodedSlashes;
use std::time::Duration;

/// Client-side limits and timeouts, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// From a connection's start, or a new head's first byte, to its end.
    pub header_timeout: Duration,
    /// An idle connection (no request in flight) is closed after this.
    pub keepalive_timeout: Duration,
    /// A client that takes no response byte for this long is cut off.
    pub send_timeout: Duration,
    /// Longest silence while a client uploads a request body (408 after).
    pub body_timeout: Duration,
    /// Largest request head (request line and headers); more gets 431.
    pub max_head_bytes: usize,
    /// HTTP/2: a PING this often, and the connection closed when its
    /// answer takes longer than `h2_ping_timeout`.
    pub h2_ping_interval: Duration,
    pub h2_ping_timeout: Duration,
    /// Open client connections at most, over every listener.
    pub max_connections: usize,
    /// What to do with `%2F` and `%5C` in request paths.
    pub encoded_slashes: EncodedSlashes,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            max_head_bytes: 64 * 1024,
            h2_ping_interval: Duration::from_secs(60),
            h2_ping_timeout: Duration::from_secs(20),
            max_connections: 10_000,
            encoded_slashes: EncodedSlashes::Reject,
        }
    }
}
