//! A response body from an upstream connection to an HTTP/1.1 client.
//!
//! Each step reads whatever the upstream has ready into the thread's
//! scratch buffer, undoes the upstream's framing in place, counts events,
//! frames the data for the client (a chunk-size line written into the
//! room kept before it) and writes it, all before the step returns. While
//! the stream waits for its next event it holds no buffer at all: two
//! sockets, one timer, and a few hundred bytes of state.
//!
//! Slow clients: what a client does not take at once is kept in `out`, and
//! the upstream is not read again until it is gone; so a stream holds at
//! most one read (64 KiB) plus a chunk's framing beyond the kernel's socket
//! buffers, and the send timeout ends it when the client takes nothing.

use super::{with_scratch, HEADROOM, READ_MAX};
use crate::http1::chunked::{chunk_header, ChunkedDecoder, CHUNK_END, LAST_CHUNK};
use crate::metrics::UpstreamError;
use crate::proxy::access::Observer;
use crate::proxy::sse::EventBoundary;
use crate::proxy::stream_clock::{StreamClock, StreamDue};
use crate::proxy::{EndpointLoad, SseLimits, StreamSlot};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Instant, Sleep};

/// The comment line ssegate sends as a heartbeat, framed as one chunk.
const HEARTBEAT_CHUNK: &[u8] = b"3\r\n:\n\n\r\n";
const HEARTBEAT: &[u8] = b":\n\n";
/// Most bytes a client may send ahead (a pipelined request) while a
/// response streams; past this its connection is not read until the end.
const MAX_READ_AHEAD: usize = 64 * 1024;

/// How the upstream delimits the body.
pub(super) enum Input {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// How the client is told where the body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Output {
    /// The upstream's Content-Length, passed on.
    Length,
    Chunked,
    /// An HTTP/1.0 client: the connection closes after the body.
    UntilClose,
}

/// What is done with the body on its way.
pub(super) enum Shape {
    /// Each read is passed on as it comes.
    Stream,
    /// An event stream: heartbeats, a maximum duration and a drain end it
    /// at an event boundary.
    Events(SseLimits),
    /// Gathered into blocks of up to `capacity` bytes (`proxyBuffering:
    /// Enabled`); `events` says whether its events are counted.
    Coalesce {
        capacity: usize,
        held: Vec<u8>,
        events: bool,
    },
}

/// How a body ended.
pub(super) struct Ended {
    pub outcome: &'static str,
    /// The client's response was framed to its end: the connection may
    /// serve another request.
    pub clean: bool,
    /// The upstream connection, when its response ended cleanly and it may
    /// serve another request.
    pub upstream: Option<TcpStream>,
}

pub(super) struct Pump {
    upstream: Option<TcpStream>,
    input: Input,
    output: Output,
    shape: Shape,
    events: Option<EventBoundary>,
    /// Bytes for the client not written yet: the response head, then
    /// whatever a slow client has not taken.
    out: Vec<u8>,
    /// Body bytes that came with the upstream's response head.
    pending_in: Vec<u8>,
    timers: Timers,
    drain_wait: Option<Pin<Box<OwnedNotified>>>,
    draining: bool,
    /// Set once the last bytes are queued: the outcome, and whether the
    /// client's framing is complete.
    ending: Option<(&'static str, bool)>,
    /// Bytes were written since the last flush.
    unflushed: bool,
    /// The upstream may serve another request once this body is complete.
    upstream_reusable: bool,
    sent: u64,
    events_sent: u64,
    observer: Option<Observer>,
    _slot: Option<StreamSlot>,
    _load: Option<EndpointLoad>,
    /// Where the upstream connection goes back to, if it may.
    endpoint: SocketAddr,
    /// The client connection closes after this body.
    close: bool,
}

/// What a [`Pump`] needs besides the upstream connection.
pub(super) struct PumpParts {
    pub input: Input,
    pub output: Output,
    pub shape: Shape,
    pub head: Vec<u8>,
    pub pending_in: Vec<u8>,
    pub idle: Option<Duration>,
    /// When the response is cut whatever it is doing (an HTTPRoute's
    /// request timeout).
    pub deadline: Option<Instant>,
    pub send_timeout: Duration,
    pub upstream_keep_alive: bool,
    pub observer: Observer,
    pub slot: Option<StreamSlot>,
    pub load: EndpointLoad,
}

impl Pump {
    pub fn new(
        upstream: TcpStream,
        p: PumpParts,
        drain: Option<&crate::proxy::DrainSignal>,
        endpoint: SocketAddr,
        close: bool,
    ) -> Self {
        let sse = match &p.shape {
            Shape::Events(limits) => *limits,
            _ => SseLimits::default(),
        };
        let counts_events = matches!(p.shape, Shape::Events(_) | Shape::Coalesce { events: true, .. });
        // Heartbeats and boundary endings need a framing that can end early.
        let live = matches!(p.shape, Shape::Events(_)) && p.output != Output::Length;
        // A drain ends every event stream at a boundary, a buffered
        // (`Enabled`) one too: its held events go out first.
        let drainable =
            p.output != Output::Length && matches!(p.shape, Shape::Events(_) | Shape::Coalesce { events: true, .. });
        let (drain_wait, draining) = match drain {
            Some(signal) if drainable => {
                let mut wait = Box::pin(signal.notified());
                wait.as_mut().enable();
                (Some(wait), signal.started())
            }
            _ => (None, false),
        };
        Pump {
            upstream: Some(upstream),
            input: p.input,
            output: p.output,
            shape: p.shape,
            events: counts_events.then(EventBoundary::default),
            out: p.head,
            pending_in: p.pending_in,
            timers: Timers::new(
                p.idle,
                if live { sse } else { SseLimits::default() },
                p.deadline,
                p.send_timeout,
            ),
            drain_wait,
            draining,
            ending: None,
            unflushed: false,
            upstream_reusable: p.upstream_keep_alive,
            sent: 0,
            events_sent: 0,
            observer: Some(p.observer),
            _slot: p.slot,
            _load: Some(p.load),
            endpoint,
            close,
        }
    }

    /// Runs the body to its end; returns whether the client connection
    /// may serve another request. The future is a few pointers: the
    /// stream's state is this box.
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        mut self: Box<Self>,
        io: &mut S,
        carry: &mut Vec<u8>,
        metrics: &crate::metrics::Metrics,
    ) -> bool {
        let ended = std::future::poll_fn(|cx| self.poll(cx, io, carry)).await;
        if ended.outcome == "send_timeout" {
            metrics.connection_closed("send_timeout");
        }
        if let Some(up) = ended.upstream {
            super::pool::checkin(self.endpoint, up);
        }
        ended.clean && !self.close
    }

    fn finish(&mut self, outcome: &'static str, clean: bool) -> Ended {
        if let Some(observer) = self.observer.take() {
            observer.finish(self.sent, self.events_sent, outcome);
        }
        let upstream = self
            .upstream
            .take()
            .filter(|_| outcome == "complete" && self.upstream_reusable);
        Ended {
            outcome,
            clean,
            upstream,
        }
    }

    fn fail_upstream(&mut self, why: UpstreamError, outcome: &'static str) -> Ended {
        if let Some(o) = &self.observer {
            o.metrics.upstream_error(why);
        }
        self.finish(outcome, false)
    }

    fn poll<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut S,
        carry: &mut Vec<u8>,
    ) -> Poll<Ended> {
        if !self.pending_in.is_empty() {
            // Body bytes that came with the head go out with it, in one write.
            if let Step::Ended(end) = with_scratch(|buf| self.forward_some(cx, buf, io)) {
                return Poll::Ready(end);
            }
        }
        loop {
            // Queued bytes first: the upstream is not read while the client
            // has not taken what it was given.
            if !self.out.is_empty() {
                match Pin::new(&mut *io).poll_write(cx, &self.out) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        self.unflushed = true;
                        self.out.drain(..n);
                        if self.out.is_empty() {
                            self.out = Vec::new();
                        }
                        self.timers.blocked_since = None;
                        continue;
                    }
                    Poll::Ready(_) => return Poll::Ready(self.finish("client_gone", false)),
                    Poll::Pending => return self.blocked(cx),
                }
            }
            if self.unflushed {
                // TLS keeps written bytes in its own buffer until flushed
                // (plain TCP is always flushed).
                match Pin::new(&mut *io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.unflushed = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(self.finish("client_gone", false)),
                    Poll::Pending => return self.blocked(cx),
                }
            }
            if let Some((outcome, clean)) = self.ending {
                return Poll::Ready(self.finish(outcome, clean));
            }
            match with_scratch(|buf| self.forward_some(cx, buf, io)) {
                Step::Moved => continue,
                Step::Ended(end) => return Poll::Ready(end),
                Step::Waiting => {}
            }
            // The upstream has nothing now: watch the client, the drain and the timers.
            if carry.len() < MAX_READ_AHEAD {
                let gone = with_scratch(|buf| {
                    let room = buf.len().min(MAX_READ_AHEAD - carry.len());
                    let mut rb = ReadBuf::new(&mut buf[..room]);
                    match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                        Poll::Ready(Ok(())) if rb.filled().is_empty() => true,
                        Poll::Ready(Ok(())) => {
                            carry.extend_from_slice(rb.filled());
                            false
                        }
                        Poll::Ready(Err(_)) => true,
                        Poll::Pending => false,
                    }
                });
                if gone {
                    return Poll::Ready(self.finish("client_gone", false));
                }
            }
            let at_boundary = self.events.as_ref().is_none_or(EventBoundary::at_boundary);
            if self.drain_due(cx, at_boundary) {
                self.end_early("drain");
                continue;
            }
            match self.timers.poll_due(cx, at_boundary, Instant::now()) {
                Due::Nothing | Due::Send => return Poll::Pending,
                Due::Heartbeat => {
                    self.out.extend_from_slice(match self.output {
                        Output::Chunked => HEARTBEAT_CHUNK,
                        _ => HEARTBEAT,
                    });
                    if let Some(o) = &self.observer {
                        o.metrics.bytes.inc_by(HEARTBEAT.len() as u64);
                    }
                    self.sent += HEARTBEAT.len() as u64;
                }
                Due::End => self.end_early("max_duration"),
                Due::Idle => return Poll::Ready(self.fail_upstream(UpstreamError::IdleTimeout, "idle_timeout")),
                Due::Deadline => return Poll::Ready(self.fail_upstream(UpstreamError::IdleTimeout, "request_timeout")),
            }
        }
    }

    /// The client takes nothing now: wait, up to the send timeout.
    fn blocked(&mut self, cx: &mut Context<'_>) -> Poll<Ended> {
        let now = Instant::now();
        self.timers.blocked_since.get_or_insert(now);
        if let Due::Send = self.timers.poll_due(cx, false, now) {
            return Poll::Ready(self.finish("send_timeout", false));
        }
        Poll::Pending
    }

    /// Ends the body now, at an event boundary, framed as complete.
    fn end_early(&mut self, outcome: &'static str) {
        if let Shape::Coalesce { held, .. } = &mut self.shape {
            frame_into(&mut self.out, &std::mem::take(held), self.output == Output::Chunked);
        }
        if self.output == Output::Chunked {
            self.out.extend_from_slice(LAST_CHUNK);
        }
        self.upstream_reusable = false;
        self.ending = Some((outcome, self.output == Output::Chunked));
    }

    fn drain_due(&mut self, cx: &mut Context<'_>, at_boundary: bool) -> bool {
        if !self.draining {
            if let Some(wait) = &mut self.drain_wait {
                if wait.as_mut().poll(cx).is_ready() {
                    self.draining = true;
                    self.drain_wait = None;
                }
            }
        }
        self.draining && at_boundary
    }

    /// One read from the upstream (or the bytes that came with its head),
    /// handled and written to the client in the same step.
    fn forward_some<S: AsyncWrite + Unpin>(&mut self, cx: &mut Context<'_>, buf: &mut [u8], io: &mut S) -> Step {
        let data = HEADROOM..HEADROOM + READ_MAX;
        let n = if !self.pending_in.is_empty() {
            let n = self.pending_in.len().min(READ_MAX);
            buf[HEADROOM..HEADROOM + n].copy_from_slice(&self.pending_in[..n]);
            self.pending_in.drain(..n);
            if self.pending_in.is_empty() {
                self.pending_in = Vec::new();
            }
            n
        } else {
            let Some(upstream) = self.upstream.as_mut() else {
                return Step::Waiting;
            };
            let mut rb = ReadBuf::new(&mut buf[data]);
            match Pin::new(upstream).poll_read(cx, &mut rb) {
                Poll::Pending => return Step::Waiting,
                Poll::Ready(Err(_)) => {
                    return Step::Ended(self.fail_upstream(UpstreamError::Failed, "upstream_error"));
                }
                Poll::Ready(Ok(())) => rb.filled().len(),
            }
        };
        if n == 0 {
            // The upstream closed: the end of a body delimited by the close,
            // else a body cut short.
            if !matches!(self.input, Input::UntilClose) {
                return Step::Ended(self.fail_upstream(UpstreamError::Failed, "upstream_error"));
            }
            self.upstream_reusable = false;
            let mut end = HEADROOM;
            if self.output == Output::Chunked {
                buf[end..end + LAST_CHUNK.len()].copy_from_slice(LAST_CHUNK);
                end += LAST_CHUNK.len();
            }
            self.ending = Some(("complete", self.output == Output::Chunked));
            return self.write_from(cx, buf, HEADROOM, end, io);
        }
        let (len, done) = match &mut self.input {
            Input::Length(rest) => {
                let take = (n as u64).min(*rest) as usize;
                *rest -= take as u64;
                if take < n {
                    // More than the length said: the connection is out of step.
                    self.upstream_reusable = false;
                }
                (take, *rest == 0)
            }
            Input::Chunked(decoder) => match decoder.decode_in_place(&mut buf[HEADROOM..HEADROOM + n], n) {
                Ok(p) => {
                    if p.consumed < n {
                        self.upstream_reusable = false;
                    }
                    (p.payload, p.done)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "malformed chunked body from upstream");
                    return Step::Ended(self.fail_upstream(UpstreamError::Failed, "upstream_error"));
                }
            },
            Input::UntilClose => (n, false),
        };
        self.timers.touch();
        let payload = &buf[HEADROOM..HEADROOM + len];
        self.sent += len as u64;
        let mut ending = done.then_some(("complete", true));
        if let Some(o) = &self.observer {
            o.metrics.bytes.inc_by(len as u64);
        }
        if let Some(events) = &mut self.events {
            let completed = events.feed(payload) as u64;
            if completed > 0 {
                self.events_sent += completed;
                if let Some(o) = &self.observer {
                    o.metrics.events.inc_by(completed);
                }
            }
            if ending.is_none()
                && self.output != Output::Length
                && events.at_boundary()
                && match self.shape {
                    Shape::Events(_) => self.draining || self.timers.past_end(),
                    Shape::Coalesce { .. } => self.draining,
                    Shape::Stream => false,
                }
            {
                // This read completes an event after the deadline or during
                // a drain: it is the last.
                ending = Some((if self.draining { "drain" } else { "max_duration" }, true));
                self.upstream_reusable = false;
            }
        }
        if ending.is_some() {
            self.ending = ending;
        }
        let chunked = self.output == Output::Chunked;
        if let Shape::Coalesce { capacity, held, .. } = &mut self.shape {
            // Blocks of at most `capacity`: what does not fit sends the
            // block ahead of it; a read of a block or more passes alone.
            if !held.is_empty() && held.len() + len > *capacity {
                frame_into(&mut self.out, &std::mem::take(held), chunked);
            }
            if len >= *capacity {
                frame_into(&mut self.out, payload, chunked);
            } else if len > 0 {
                if held.capacity() == 0 {
                    held.reserve((*capacity).min(16 * 1024).max(len));
                }
                held.extend_from_slice(payload);
                if held.len() >= *capacity {
                    frame_into(&mut self.out, &std::mem::take(held), chunked);
                }
            }
            if ending.is_some() {
                frame_into(&mut self.out, &std::mem::take(held), chunked);
                if chunked {
                    self.out.extend_from_slice(LAST_CHUNK);
                }
            }
            return Step::Moved;
        }
        let (mut start, mut end) = (HEADROOM, HEADROOM + len);
        if chunked && len > 0 {
            let mut line = [0u8; 18];
            let l = chunk_header(len, &mut line);
            start -= l;
            buf[start..HEADROOM].copy_from_slice(&line[..l]);
            buf[end..end + 2].copy_from_slice(CHUNK_END);
            end += 2;
        }
        if ending.is_some() && chunked {
            buf[end..end + LAST_CHUNK.len()].copy_from_slice(LAST_CHUNK);
            end += LAST_CHUNK.len();
        }
        self.write_from(cx, buf, start, end, io)
    }

    /// Writes `buf[start..end]` to the client, keeping what it does not take.
    fn write_from<S: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        start: usize,
        end: usize,
        io: &mut S,
    ) -> Step {
        if start == end {
            return Step::Moved;
        }
        if !self.out.is_empty() {
            // Behind earlier bytes (the response head): keep the order.
            self.out.extend_from_slice(&buf[start..end]);
            return Step::Moved;
        }
        match Pin::new(&mut *io).poll_write(cx, &buf[start..end]) {
            Poll::Ready(Ok(n)) if n > 0 => {
                self.unflushed = true;
                if start + n < end {
                    self.out.extend_from_slice(&buf[start + n..end]);
                }
                Step::Moved
            }
            Poll::Ready(_) => Step::Ended(self.finish("client_gone", false)),
            Poll::Pending => {
                self.out.extend_from_slice(&buf[start..end]);
                Step::Moved
            }
        }
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        if let Some(observer) = self.observer.take() {
            observer.finish(self.sent, self.events_sent, "client_gone");
        }
    }
}

/// Appends `data` to `out`, as one chunk when `chunked`.
fn frame_into(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if data.is_empty() {
        return;
    }
    if chunked {
        let mut line = [0u8; 18];
        let l = chunk_header(data.len(), &mut line);
        out.extend_from_slice(&line[..l]);
        out.extend_from_slice(data);
        out.extend_from_slice(CHUNK_END);
    } else {
        out.extend_from_slice(data);
    }
}

enum Step {
    /// Bytes moved (written, or queued for the client).
    Moved,
    /// The upstream has nothing ready.
    Waiting,
    Ended(Ended),
}

enum Due {
    Nothing,
    Heartbeat,
    End,
    Idle,
    Deadline,
    Send,
}

/// The body's deadlines ([`StreamClock`]) and the send timeout, on one
/// timer that is moved only when it fires (a busy stream costs no timer
/// operation per event) or when a nearer deadline appears.
struct Timers {
    /// Created when the body first has to wait: a short answer that is
    /// complete at once never touches the timer wheel.
    sleep: Option<Pin<Box<Sleep>>>,
    clock: StreamClock,
    send_timeout: Duration,
    /// Since when the client has taken nothing.
    blocked_since: Option<Instant>,
}

impl Timers {
    fn new(idle: Option<Duration>, sse: SseLimits, deadline: Option<Instant>, send_timeout: Duration) -> Self {
        Timers {
            sleep: None,
            clock: StreamClock::new(idle, sse, deadline, Instant::now()),
            send_timeout,
            blocked_since: None,
        }
    }

    fn touch(&mut self) {
        self.clock.touch(Instant::now());
    }

    fn past_end(&self) -> bool {
        self.clock.past_end(Instant::now())
    }

    /// The nearest time anything may be due: while the client takes
    /// nothing, only the send timeout.
    fn next_due(&self, at_boundary: bool, now: Instant) -> Instant {
        match self.blocked_since {
            Some(since) => since + self.send_timeout,
            None => self.clock.next_due(at_boundary, now),
        }
    }

    fn poll_due(&mut self, cx: &mut Context<'_>, at_boundary: bool, mut now: Instant) -> Due {
        loop {
            if let Some(since) = self.blocked_since {
                if now >= since + self.send_timeout {
                    return Due::Send;
                }
            } else {
                match self.clock.due(at_boundary, now) {
                    Some(StreamDue::Idle(_)) => return Due::Idle,
                    Some(StreamDue::Deadline) => return Due::Deadline,
                    Some(StreamDue::End) => return Due::End,
                    Some(StreamDue::Heartbeat) => return Due::Heartbeat,
                    None => {}
                }
            }
            let next = self.next_due(at_boundary, now);
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
            let armed = sleep.deadline();
            if next < armed || armed <= now {
                sleep.as_mut().reset(next);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Due::Nothing;
            }
            now = Instant::now();
        }
    }
}
