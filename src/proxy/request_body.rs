//! The client's request body on its way upstream.
//!
//! It tells the request's handler how the upload ended, for two reasons:
//! the response-header timeout starts only once the whole request has been
//! sent (a slow upload is not a slow upstream), and a body the client got
//! wrong (malformed chunked framing, or silence longer than the body
//! timeout) is the client's fault, answered 400 or 408, not an upstream
//! failure answered 502.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// How a request body ended, so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    Sending,
    Sent,
    /// The client's framing was wrong, or it went away mid-body.
    Malformed,
    /// The client sent nothing for longer than the body timeout.
    TimedOut,
}

/// Shared between the body (on hyper's client side) and the handler.
#[derive(Default)]
pub struct UploadState {
    outcome: AtomicU8,
    finished: Notify,
}

impl UploadState {
    pub fn outcome(&self) -> Upload {
        match self.outcome.load(Ordering::Acquire) {
            0 => Upload::Sending,
            1 => Upload::Sent,
            2 => Upload::Malformed,
            _ => Upload::TimedOut,
        }
    }

    fn finish(&self, how: Upload) {
        let code = match how {
            Upload::Sending => 0,
            Upload::Sent => 1,
            Upload::Malformed => 2,
            Upload::TimedOut => 3,
        };
        self.outcome.store(code, Ordering::Release);
        self.finished.notify_waiters();
    }

    /// Resolves once the body has ended, however it ended.
    pub async fn finished(&self) {
        let notified = self.finished.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if self.outcome() != Upload::Sending {
            return;
        }
        notified.await;
    }
}

/// The client sent no body bytes for longer than the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("client sent no request body bytes for {0:?}")]
pub struct BodyTimeout(pub Duration);

/// A client's request body with an idle timeout and an outcome.
pub struct ClientBody {
    inner: Incoming,
    state: Arc<UploadState>,
    idle: Duration,
    last: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl ClientBody {
    pub fn new(inner: Incoming, idle: Duration) -> (Self, Arc<UploadState>) {
        let state = Arc::new(UploadState::default());
        let now = Instant::now();
        let body = ClientBody {
            inner,
            state: state.clone(),
            idle,
            last: now,
            sleep: Box::pin(tokio::time::sleep_until(now + idle)),
        };
        (body, state)
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        // Dropped unfinished (the upstream answered early, or failed): wake
        // whoever waits, as "sent" for the purpose of timing the response.
        if self.state.outcome() == Upload::Sending {
            self.state.finish(Upload::Sent);
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = super::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.last = Instant::now();
                if this.inner.is_end_stream() {
                    this.state.finish(Upload::Sent);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.state.finish(Upload::Malformed);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.state.finish(Upload::Sent);
                Poll::Ready(None)
            }
            Poll::Pending => {
                // The timer is moved only when it fires, not per frame.
                loop {
                    if this.sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let due = this.last + this.idle;
                    if Instant::now() >= due {
                        this.state.finish(Upload::TimedOut);
                        return Poll::Ready(Some(Err(BodyTimeout(this.idle).into())));
                    }
                    this.sleep.as_mut().reset(due);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
