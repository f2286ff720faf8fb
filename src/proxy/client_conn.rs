//! Client limits ([`ClientLimits`], for both paths), and how HTTP/2
//! connections, which hyper serves, are held to them. (The HTTP/1.1 path,
//! `h1`, keeps its own deadlines, with the same meaning.)
//!
//! hyper keeps a connection as long as the client does: it has no
//! keep-alive idle timeout. So ssegate watches each connection itself, cheaply:
//! [`Watched`] wraps the socket and notes (with one atomic load per read or
//! write) when a request head starts and when writes stall; [`InFlight`]
//! guards count requests between their head and the end of their response
//! body; and [`Watchdog`] keeps a single timer per connection armed for the
//! nearest of these deadlines:
//! - **header timeout**: a new connection, or the first byte of a new head
//!   on a kept-alive one, until the head is complete (slowloris);
//! - **keep-alive timeout**: no request in flight and no byte of a new one;
//! - **send timeout**: the client has taken no response byte for that long
//!   (a reader that stopped reading would otherwise pin its stream, and its
//!   upstream, forever).
//!
//! An open event stream is a request in flight, so neither the header nor
//! the keep-alive timeout ever touches it: only its upstream's silence
//! (`timeouts.idle`) ends it.

use super::normalize::EncodedSlashes;
use futures_util::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

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

/// Why a connection was closed by its watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    Header,
    KeepAlive,
    Send,
}

impl Expired {
    pub fn as_str(self) -> &'static str {
        match self {
            Expired::Header => "header_timeout",
            Expired::KeepAlive => "keepalive_timeout",
            Expired::Send => "send_timeout",
        }
    }
}

/// What a connection's socket, its requests and its watchdog share.
/// Times are milliseconds since the connection started, 0 meaning "none".
pub struct Activity {
    epoch: Instant,
    in_flight: AtomicU32,
    /// Whether a request has been answered on this connection yet.
    served: AtomicBool,
    /// When the connection last became idle (no request in flight).
    idle_since: AtomicU64,
    /// First byte of a head that has not been handed to a request yet.
    head_started: AtomicU64,
    /// First write that could not proceed, with none succeeding since.
    write_blocked: AtomicU64,
    /// The connection speaks HTTP/2 (seen from its preface).
    h2: AtomicBool,
    waker: AtomicWaker,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            served: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            write_blocked: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        })
    }

    /// Milliseconds since the connection started, never 0.
    fn now(&self) -> u64 {
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// A request head is complete: the request is in flight until the
    /// returned guard (kept with its response body) is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        self.head_started.store(0, Relaxed);
        InFlight(self.clone())
    }

    /// The nearest deadline and what it is for, given the limits; `None`
    /// while requests are in flight and the client is taking their bytes.
    fn deadline(&self, limits: &ClientLimits) -> Option<(Instant, Expired)> {
        let ms = |d: Duration| d.as_millis() as u64;
        let mut due = None;
        let blocked = self.write_blocked.load(Relaxed);
        if blocked != 0 {
            due = Some((blocked + ms(limits.send_timeout), Expired::Send));
        }
        if self.in_flight.load(Relaxed) == 0 {
            let h2 = self.h2.load(Relaxed);
            let head = self.head_started.load(Relaxed);
            let idle = if !h2 && head != 0 {
                (head + ms(limits.header_timeout), Expired::Header)
            } else if !h2 && !self.served.load(Relaxed) {
                // A new connection owes a request head from its first moment.
                (ms(limits.header_timeout), Expired::Header)
            } else {
                (
                    self.idle_since.load(Relaxed) + ms(limits.keepalive_timeout),
                    Expired::KeepAlive,
                )
            };
            if due.is_none_or(|(at, _)| idle.0 < at) {
                due = Some(idle);
            }
        }
        due.map(|(at, why)| (self.at(at), why))
    }
}

/// One request in flight on a connection, until its response body is done.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.served.store(true, Relaxed);
        if a.in_flight.fetch_sub(1, Relaxed) == 1 {
            a.idle_since.store(a.now(), Relaxed);
            // For HTTP/2 the body ends on another task: wake the watchdog.
            a.waker.wake();
        }
    }
}

/// A client socket that reports reads and stalled writes to its [`Activity`].
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    first_read: bool,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Watched {
            inner,
            activity,
            first_read: true,
        }
    }

    fn wrote(&self, ok: bool) {
        let blocked = &self.activity.write_blocked;
        if ok {
            if blocked.load(Relaxed) != 0 {
                blocked.store(0, Relaxed);
            }
        } else if blocked.load(Relaxed) == 0 {
            blocked.store(self.activity.now(), Relaxed);
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            let this = &mut *self;
            let a = &this.activity;
            if this.first_read {
                let n = read.len().min(H2_PREFACE.len());
                if read[..n] == H2_PREFACE[..n] {
                    a.h2.store(true, Relaxed);
                }
                this.first_read = false;
            }
            if a.in_flight.load(Relaxed) == 0 && a.head_started.load(Relaxed) == 0 {
                a.head_started.store(a.now(), Relaxed);
            }
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, data);
        self.wrote(res.is_ready());
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(res.is_ready());
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Not a sign of progress: flushing a TCP socket is always ready.
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The one timer of a connection, armed for the nearest deadline.
pub struct Watchdog {
    activity: Arc<Activity>,
    limits: ClientLimits,
    sleep: Pin<Box<Sleep>>,
    armed: Instant,
}

impl Watchdog {
    pub fn new(activity: Arc<Activity>, limits: ClientLimits) -> Self {
        let at = activity
            .deadline(&limits)
            .map_or_else(|| Instant::now() + limits.keepalive_timeout, |(at, _)| at);
        Watchdog {
            activity,
            limits,
            sleep: Box::pin(tokio::time::sleep_until(at)),
            armed: at,
        }
    }

    /// Ready with the reason once a deadline has passed; call after every
    /// poll of the connection, so that what the poll did is seen at once.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Expired> {
        self.activity.waker.register(cx.waker());
        loop {
            let now = Instant::now();
            match self.activity.deadline(&self.limits) {
                Some((at, why)) if at <= now => return Poll::Ready(why),
                Some((at, _)) if at != self.armed => {
                    self.sleep.as_mut().reset(at);
                    self.armed = at;
                }
                Some(_) => {}
                // Nothing due: leave the timer alone (no reset per event on a
                // busy stream) unless it has fired and would fire again.
                None if self.armed <= now => {
                    let far = now + Duration::from_secs(86_400);
                    self.sleep.as_mut().reset(far);
                    self.armed = far;
                }
                None => {}
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}
