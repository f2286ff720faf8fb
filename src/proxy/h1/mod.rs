//! ssegate's own HTTP/1.1 path, client side and upstream side.
//!
//! hyper keeps a read and a write buffer for each connection for its whole
//! life, on both sides of the proxy, which is most of what an idle event
//! stream cost (about 34 KiB). Here a connection owns no buffer while it
//! waits: bytes are read into one scratch buffer per thread, handled (the
//! chunked coding undone and redone in place, events counted) and written
//! on in the same step. A buffer of its own is allocated only for what a
//! slow client has not taken yet, and freed once it has. Whatever is
//! already readable from the upstream is taken in one read and leaves in
//! one write, so a burst costs one system call, not one per upstream write.
//!
//! By job: [`conn`] serves a client connection (heads, keep-alive, local
//! replies, the hand-over of cleartext HTTP/2 to hyper), [`exchange`] sends
//! a routed request upstream and reads the answer's head, [`pool`] keeps
//! idle upstream connections per thread, [`pump`] carries a response body
//! (streamed, coalesced, or as an event stream), and [`prefixed`] replays
//! bytes read before a connection turned out to speak HTTP/2 (or past a
//! PROXY protocol header).
//! The pure framing (head parsing, the chunked coding) is in [`crate::http1`].

pub(super) mod body_shell;
pub(super) mod conn;
pub(super) mod exchange;
pub(super) mod io;
pub(super) mod pool;
pub(super) mod prefixed;
pub(super) mod pump;
pub(super) mod resume;
pub(super) mod resume_request;
mod tunnel;
pub(super) mod upstream;

pub(super) use conn::serve;

use std::cell::RefCell;

/// Room kept before the data in the scratch buffer for a chunk-size line.
pub(super) const HEADROOM: usize = 18;
/// Most bytes read from a socket at once.
pub(super) const READ_MAX: usize = 64 * 1024;
/// Room after the data: a chunk's CRLF and the last chunk.
const TAILROOM: usize = 2 + 5;

thread_local! {
    /// The per-thread buffer every read on this path goes through.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; HEADROOM + READ_MAX + TAILROOM].into_boxed_slice());
}

/// Runs `f` with this thread's scratch buffer. Never held across an await:
/// callers read, handle and write within one poll.
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}
