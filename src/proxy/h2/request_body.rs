//! A request body that came over HTTP/2, from the connection's task (which
//! reads the DATA frames) to the request's exchange (which sends them
//! upstream), and the flow-control credit back.
//!
//! The connection's task pushes each frame's payload; the exchange takes
//! them as an [`http_body::Body`]. What the exchange took is counted, and
//! the connection gives that much credit back to the client (WINDOW_UPDATE)
//! on its next turn: so a client can never have more body in flight than
//! its stream's window, however slow the upstream.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// What the connection and the exchange share about one request body.
#[derive(Default)]
pub(super) struct Inbox {
    chunks: VecDeque<Bytes>,
    ended: bool,
    /// The client reset the stream mid-body.
    broken: bool,
    /// Bytes taken by the exchange, not yet given back to the client.
    taken: usize,
    /// The exchange waits for more.
    reader: Option<Waker>,
    /// The connection's task, to give credit back.
    connection: Option<Waker>,
}

pub(super) type SharedInbox = Arc<Mutex<Inbox>>;

/// Locks an inbox; a panic elsewhere never leaves one half-updated in a
/// way that matters (each update is a single field), so poisoning is ignored.
fn lock(inbox: &SharedInbox) -> std::sync::MutexGuard<'_, Inbox> {
    inbox.lock().unwrap_or_else(|e| e.into_inner())
}

/// The connection's end of an inbox.
pub(super) fn push(inbox: &SharedInbox, data: Bytes, end: bool, connection: &Waker) {
    let mut i = lock(inbox);
    if !data.is_empty() {
        i.chunks.push_back(data);
    }
    i.ended |= end;
    if i.connection.as_ref().is_none_or(|w| !w.will_wake(connection)) {
        i.connection = Some(connection.clone());
    }
    if let Some(w) = i.reader.take() {
        w.wake();
    }
}

/// The client reset the stream: the body will not complete.
pub(super) fn break_off(inbox: &SharedInbox) {
    let mut i = lock(inbox);
    i.broken = true;
    if let Some(w) = i.reader.take() {
        w.wake();
    }
}

/// Bytes the exchange took since the last call: credit to give back.
pub(super) fn take_consumed(inbox: &SharedInbox) -> usize {
    std::mem::take(&mut lock(inbox).taken)
}

/// The exchange's end: a request body, or none.
pub struct RequestBody {
    inbox: Option<SharedInbox>,
}

impl RequestBody {
    pub(super) fn empty() -> Self {
        RequestBody { inbox: None }
    }

    pub(super) fn from_inbox(inbox: SharedInbox) -> Self {
        RequestBody { inbox: Some(inbox) }
    }
}

/// The client reset its stream before the body was complete.
#[derive(Debug, thiserror::Error)]
#[error("the client reset the stream before its request body was complete")]
pub struct BodyReset;

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyReset;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyReset>>> {
        let Some(inbox) = &self.inbox else {
            return Poll::Ready(None);
        };
        let mut i = lock(inbox);
        if let Some(chunk) = i.chunks.pop_front() {
            i.taken += chunk.len();
            if let Some(w) = &i.connection {
                w.wake_by_ref();
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if i.broken {
            return Poll::Ready(Some(Err(BodyReset)));
        }
        if i.ended {
            return Poll::Ready(None);
        }
        i.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inbox.as_ref().is_none_or(|inbox| {
            let i = lock(inbox);
            i.ended && i.chunks.is_empty()
        })
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
