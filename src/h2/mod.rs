//! HTTP/2 (RFC 9113) as ssegate serves it: the server side of a
//! connection, pure (no I/O), so that it tests in microseconds and fuzzes.
//!
//! Why not the `h2` crate: it keeps a 16 KiB write buffer and an 8 KiB read
//! buffer for each connection for its whole life, more than HAProxy needs
//! for a whole idle TLS connection. Here, as on ssegate's HTTP/1.1 path, a
//! connection owns no buffer while it waits: the shell (`proxy/h2`) reads
//! into the thread's scratch buffer and hands the bytes to
//! [`Connection::receive`]; only an incomplete frame is kept. Frames to
//! send are appended to [`Connection::output`], which the shell writes at
//! once and frees when it is empty. A stream is a few dozen bytes here:
//! its id, its state and its two flow-control windows.
//!
//! HPACK decoding is `loona_hpack`'s; responses are encoded without the
//! dynamic table (static-table names and literals), so a connection keeps
//! no encoder state at all.
//!
//! By job: [`frame`] parses and writes frame headers and payloads,
//! [`hpack_out`] encodes response heads, [`request`] checks a decoded
//! header list and makes it a request head (RFC 9113, 8.2 and 8.3), and
//! [`conn`] is the connection's state machine: the preface, SETTINGS,
//! streams and their states, flow control both ways, PING, GOAWAY, and the
//! limits that keep a hostile client from making it hold more than a
//! bounded amount.

pub mod conn;
#[cfg(test)]
mod corpus_tests;
pub mod frame;
#[cfg(test)]
mod h2spec_tests;
pub mod hpack_out;
pub mod request;
#[cfg(test)]
mod test_client;

pub use conn::{Connection, ConnectionError, Event, ServerSettings};
pub use frame::ErrorCode;
