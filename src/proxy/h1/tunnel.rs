//! An upgraded connection (WebSocket): after the upstream's `101`, bytes
//! both ways until either side closes, silence in both directions lasts the
//! Route's idle timeout, or a drain starts.
//!
//! Each direction reads into the thread's scratch buffer and writes at once;
//! what a side does not take is kept, and that direction is not read again
//! until it has been taken. An idle tunnel holds no buffer.

use super::io::Deadline;
use super::{with_scratch, READ_MAX};
use crate::proxy::access::Observer;
use crate::proxy::EndpointLoad;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::futures::OwnedNotified;
use tokio::time::Instant;

/// One direction of a tunnel.
#[derive(Default)]
struct Half {
    /// Read but not yet written.
    pending: Vec<u8>,
    /// The reading side closed: the writing side has been (or is to be) shut.
    closed: bool,
    shut: bool,
}

pub(in crate::proxy) struct Tunnel {
    upstream: TcpStream,
    /// Client to upstream, and upstream to client.
    up: Half,
    down: Half,
    idle: Option<Duration>,
    last: Instant,
    drain_wait: Option<Pin<Box<OwnedNotified>>>,
    bytes: u64,
    observer: Option<Observer>,
    _load: EndpointLoad,
}

impl Tunnel {
    /// A tunnel over `upstream`, with the bytes each side sent ahead of it.
    pub fn new(
        upstream: TcpStream,
        to_upstream: Vec<u8>,
        to_client: Vec<u8>,
        idle: Option<Duration>,
        drain: &crate::proxy::DrainSignal,
        observer: Observer,
        load: EndpointLoad,
    ) -> Self {
        let mut wait = Box::pin(drain.notified());
        wait.as_mut().enable();
        let drain_wait = (!drain.started()).then_some(wait);
        Tunnel {
            upstream,
            up: Half {
                pending: to_upstream,
                ..Half::default()
            },
            down: Half {
                pending: to_client,
                ..Half::default()
            },
            idle,
            last: Instant::now(),
            drain_wait,
            bytes: 0,
            observer: Some(observer),
            _load: load,
        }
    }

    /// Runs the tunnel to its end; the client connection closes after it.
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(mut self: Box<Self>, io: &mut S) {
        let mut timer = Deadline::default();
        let outcome = std::future::poll_fn(|cx| self.poll(cx, io, &mut timer)).await;
        if let Some(observer) = self.observer.take() {
            observer.finish(self.bytes, 0, outcome);
        }
    }

    fn poll<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut S,
        timer: &mut Deadline,
    ) -> Poll<&'static str> {
        loop {
            let mut moved = false;
            match step(cx, &mut *io, &mut self.upstream, &mut self.up) {
                Poll::Ready(Ok(n)) => {
                    moved = true;
                    self.bytes += n as u64;
                }
                Poll::Ready(Err(())) => return Poll::Ready("client_gone"),
                Poll::Pending => {}
            }
            match step(cx, &mut self.upstream, &mut *io, &mut self.down) {
                Poll::Ready(Ok(n)) => {
                    moved = true;
                    self.bytes += n as u64;
                }
                Poll::Ready(Err(())) => return Poll::Ready("upstream_error"),
                Poll::Pending => {}
            }
            if self.up.shut && self.down.shut {
                return Poll::Ready("complete");
            }
            if moved {
                self.last = Instant::now();
                continue;
            }
            if let Some(wait) = &mut self.drain_wait {
                if wait.as_mut().poll(cx).is_ready() {
                    return Poll::Ready("drain");
                }
            } else {
                return Poll::Ready("drain");
            }
            if let Some(idle) = self.idle {
                if timer.poll(cx, self.last + idle).is_ready() {
                    if let Some(o) = &self.observer {
                        o.metrics.upstream_error(crate::metrics::UpstreamError::IdleTimeout);
                    }
                    return Poll::Ready("idle_timeout");
                }
            }
            return Poll::Pending;
        }
    }
}

/// Moves what `from` has to `to`: pending bytes first, then one read.
/// `Ready(Ok(n))`: n bytes moved (0: the direction was closed now);
/// `Ready(Err)`: a side failed.
fn step<R, W>(cx: &mut Context<'_>, from: &mut R, to: &mut W, half: &mut Half) -> Poll<Result<usize, ()>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if !half.pending.is_empty() {
        match Pin::new(&mut *to).poll_write(cx, &half.pending) {
            Poll::Ready(Ok(n)) if n > 0 => {
                half.pending.drain(..n);
                if half.pending.is_empty() {
                    half.pending = Vec::new();
                }
                return match Pin::new(&mut *to).poll_flush(cx) {
                    Poll::Ready(Err(_)) => Poll::Ready(Err(())),
                    _ => Poll::Ready(Ok(n)),
                };
            }
            Poll::Ready(_) => return Poll::Ready(Err(())),
            Poll::Pending => return Poll::Pending,
        }
    }
    if half.closed {
        if half.shut {
            return Poll::Pending;
        }
        // Pass the close on: the other side may still answer.
        return match Pin::new(&mut *to).poll_shutdown(cx) {
            Poll::Ready(_) => {
                half.shut = true;
                Poll::Ready(Ok(0))
            }
            Poll::Pending => Poll::Pending,
        };
    }
    with_scratch(|buf| {
        let mut rb = ReadBuf::new(&mut buf[..READ_MAX]);
        match Pin::new(&mut *from).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Err(())),
            Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                half.closed = true;
                Poll::Ready(Ok(0))
            }
            Poll::Ready(Ok(())) => {
                let data = rb.filled();
                let n = data.len();
                match Pin::new(&mut *to).poll_write(cx, data) {
                    Poll::Ready(Ok(w)) if w > 0 => {
                        half.pending.extend_from_slice(&data[w..]);
                        let _ = Pin::new(&mut *to).poll_flush(cx);
                        Poll::Ready(Ok(n))
                    }
                    Poll::Ready(_) => Poll::Ready(Err(())),
                    Poll::Pending => {
                        half.pending.extend_from_slice(data);
                        Poll::Ready(Ok(n))
                    }
                }
            }
        }
    })
}
