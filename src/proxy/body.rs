//! Response bodies: upstream bodies streamed or coalesced, and local replies.
//!
//! Streaming hands each upstream frame on untouched, so the `Bytes` the
//! upstream connection produced is the one written to the client: no copy.
//! Coalescing copies small frames into one buffer of at most `bufferSize`.
//!
//! Read-ahead bound: the body is only polled when the client connection can
//! take more, so a slow client holds at most `bufferSize` in the coalescing
//! buffer plus one upstream frame, on top of hyper's own write buffer
//! (about 400 KiB at most) and the kernel's socket buffers.

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

use super::sse::EventBoundary;
use super::stream_clock::{StreamClock, StreamDue};
pub use super::stream_engine::{BodyMode, SseLimits};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The upstream sent nothing for longer than the Route's idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {0:?} (idle timeout)")]
pub struct IdleTimeout(pub Duration);

/// The body of every response the proxy sends.
pub enum ProxyBody {
    /// A reply made by ssegate itself, such as an error page.
    Local(Option<Bytes>),
    Upstream(Box<UpstreamBody>),
}

impl ProxyBody {
    pub fn text(text: impl Into<Bytes>) -> Self {
        ProxyBody::Local(Some(text.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Upstream(body) => body.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local(data) => data.is_none(),
            ProxyBody::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            ProxyBody::Upstream(body) => body.size_hint(),
        }
    }
}

/// Coalescing state for buffered mode.
struct Coalescer {
    buf: BytesMut,
    capacity: usize,
    /// A frame held back while the buffer ahead of it is flushed.
    held: Option<Frame<Bytes>>,
}

/// The body's deadlines ([`StreamClock`]) on one lazily armed timer.
///
/// Receiving a frame only records the time; the timer is re-armed when it
/// fires early, so a busy stream costs no timer operation per event.
struct Timers {
    clock: StreamClock,
    sleep: Pin<Box<Sleep>>,
}

/// What the timers ask for when they fire.
enum Due {
    Nothing,
    Heartbeat,
    End,
    IdleTimeout(Duration),
    Deadline,
}

impl Timers {
    fn new(idle: Option<Duration>, sse: SseLimits, deadline: Option<Instant>) -> Option<Self> {
        let now = Instant::now();
        let clock = StreamClock::new(idle, sse, deadline, now);
        if clock.is_unset() {
            return None;
        }
        let first = clock.next_due(true, now);
        Some(Timers {
            clock,
            sleep: Box::pin(tokio::time::sleep_until(first)),
        })
    }

    fn touch(&mut self) {
        self.clock.touch(Instant::now());
    }

    fn past_end(&self) -> bool {
        self.clock.past_end(Instant::now())
    }

    /// Polls the timer. `at_boundary` says whether a heartbeat may go out now.
    fn poll_due(&mut self, cx: &mut Context<'_>, at_boundary: bool) -> Due {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Due::Nothing;
            }
            let now = Instant::now();
            match self.clock.due(at_boundary, now) {
                Some(StreamDue::Idle(limit)) => return Due::IdleTimeout(limit),
                Some(StreamDue::Deadline) => return Due::Deadline,
                Some(StreamDue::End) => return Due::End,
                Some(StreamDue::Heartbeat) => {
                    let next = self.clock.next_due(true, now);
                    self.sleep.as_mut().reset(next);
                    return Due::Heartbeat;
                }
                None => {
                    // Fired early (activity moved the deadlines) or mid-event: re-arm.
                    let next = self.clock.next_due(at_boundary, now);
                    self.sleep.as_mut().reset(next);
                }
            }
        }
    }
}

/// Tells open event streams that ssegate is draining: each ends at its
/// next event boundary.
#[derive(Default)]
pub struct DrainSignal {
    started: std::sync::atomic::AtomicBool,
    notify: std::sync::Arc<tokio::sync::Notify>,
}

impl DrainSignal {
    pub fn start(&self) {
        self.started.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn started(&self) -> bool {
        self.started.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves when a drain starts (enable it before checking [`started`](Self::started)).
    pub fn notified(&self) -> tokio::sync::futures::OwnedNotified {
        self.notify.clone().notified_owned()
    }
}

/// The comment line ssegate sends as a heartbeat.
const HEARTBEAT: &[u8] = b":\n\n";

/// An upstream response body on its way to the client.
pub struct UpstreamBody {
    inner: Incoming,
    coalesce: Option<Coalescer>,
    timers: Option<Timers>,
    /// Set for event streams with heartbeats or a maximum duration.
    events: Option<EventBoundary>,
    /// Ended by ssegate at an event boundary (maximum duration reached).
    finished: bool,
    /// The Route's stream place, given back when this body is dropped.
    slot: Option<super::StreamSlot>,
    /// Counts this response on its endpoint until it is dropped.
    load: Option<super::EndpointLoad>,
    /// Wakes this stream when a drain starts.
    drain_wait: Option<Pin<Box<tokio::sync::futures::OwnedNotified>>>,
    /// A drain has started: end at the next event boundary.
    draining: bool,
    /// Bytes handed to the client so far.
    pub sent: u64,
    /// Events completed so far (event streams only).
    events_sent: u64,
    /// How the body ended, once it has; `client_gone` when dropped before.
    outcome: Option<&'static str>,
    observer: Option<super::access::Observer>,
    /// The endpoint that answered, for the access log.
    pub endpoint: Option<std::net::SocketAddr>,
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some(observer) = self.observer.take() {
            // hyper stops polling a body that says it has ended, so the end
            // may not have been seen by poll.
            let outcome = match self.outcome {
                Some(o) => o,
                None if self.is_end_stream() => "complete",
                None => "client_gone",
            };
            observer.finish(self.sent, self.events_sent, outcome);
        }
    }
}

impl UpstreamBody {
    /// A body sent as `mode` says, ended after `idle` without upstream data.
    /// `deadline`: when the response is cut whatever it is doing (an
    /// HTTPRoute's request timeout).
    pub fn new(inner: Incoming, mode: BodyMode, idle: Option<Duration>, deadline: Option<Instant>) -> Self {
        let (buffer, sse) = match mode {
            BodyMode::Stream => (None, SseLimits::default()),
            BodyMode::EventStream(limits) => (None, limits),
            BodyMode::Coalesce { capacity, .. } => (Some(capacity), SseLimits::default()),
        };
        let is_sse = mode.is_event_stream();
        UpstreamBody {
            inner,
            coalesce: buffer.map(|capacity| Coalescer {
                buf: BytesMut::new(),
                capacity,
                held: None,
            }),
            timers: Timers::new(idle, sse, deadline),
            // Every event stream is tracked: events are counted, and a drain
            // ends streams at a boundary.
            events: is_sse.then(EventBoundary::default),
            finished: false,
            slot: None,
            load: None,
            drain_wait: None,
            draining: false,
            sent: 0,
            events_sent: 0,
            outcome: None,
            observer: None,
            endpoint: None,
        }
    }

    /// Whether this is a `text/event-stream` response.
    pub fn is_event_stream(&self) -> bool {
        self.events.is_some()
    }

    /// Records metrics and the access line for this body.
    pub fn observe(&mut self, observer: super::access::Observer) {
        self.observer = Some(observer);
    }

    fn end(&mut self, outcome: &'static str) {
        self.outcome.get_or_insert(outcome);
    }

    /// Makes this event stream end at its next event boundary once `signal`
    /// starts a drain.
    /// A buffered (`Enabled`) stream too: what it holds goes out first.
    pub fn end_on_drain(&mut self, signal: &DrainSignal) {
        self.events.get_or_insert_with(EventBoundary::default);
        let mut wait = Box::pin(signal.notify.clone().notified_owned());
        // Registered now, so a drain that starts before the first poll still wakes it.
        wait.as_mut().enable();
        self.drain_wait = Some(wait);
        self.draining = signal.started();
    }

    /// Whether a drain asks this stream to end now.
    fn drain_due(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.draining {
            if let Some(wait) = &mut self.drain_wait {
                if wait.as_mut().poll(cx).is_ready() {
                    self.draining = true;
                    self.drain_wait = None;
                }
            }
        }
        self.draining && self.events.as_ref().is_some_and(EventBoundary::at_boundary)
    }

    /// Keeps the endpoint's open-request count for as long as this body lives.
    pub fn hold_endpoint_load(&mut self, load: super::EndpointLoad) {
        self.load = Some(load);
    }

    /// Keeps a stream place for as long as this body lives.
    pub fn hold_stream_slot(&mut self, slot: Option<super::StreamSlot>) {
        self.slot = slot;
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Ended (at a boundary) once nothing buffered is left to send.
        if self.finished
            && self
                .coalesce
                .as_ref()
                .is_none_or(|c| c.buf.is_empty() && c.held.is_none())
        {
            return Poll::Ready(None);
        }
        let out = ready!(self.poll_inner(cx));
        if let Some(Ok(frame)) = &out {
            if let Some(data) = frame.data_ref() {
                self.sent += data.len() as u64;
                if let Some(o) = &self.observer {
                    o.metrics.bytes.inc_by(data.len() as u64);
                }
            }
        }
        Poll::Ready(out)
    }

    fn poll_upstream(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(timers) = &mut self.timers {
                    timers.touch();
                }
                if let (Some(events), Some(data)) = (&mut self.events, frame.data_ref()) {
                    let completed = events.feed(data) as u64;
                    if completed > 0 {
                        self.events_sent += completed;
                        if let Some(o) = &self.observer {
                            o.metrics.events.inc_by(completed);
                        }
                    }
                    if events.at_boundary() && (self.draining || self.timers.as_ref().is_some_and(Timers::past_end)) {
                        // This frame completes an event after the deadline or during a
                        // drain: it is the last.
                        self.finished = true;
                        self.end(if self.draining { "drain" } else { "max_duration" });
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.end("upstream_error");
                if let Some(o) = &self.observer {
                    o.metrics.upstream_error(crate::metrics::UpstreamError::Failed);
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                self.end("complete");
                Poll::Ready(None)
            }
            Poll::Pending => {
                if self.drain_due(cx) {
                    self.finished = true;
                    self.end("drain");
                    return Poll::Ready(None);
                }
                let Some(timers) = &mut self.timers else {
                    return Poll::Pending;
                };
                let at_boundary = self.events.as_ref().is_some_and(EventBoundary::at_boundary);
                match timers.poll_due(cx, at_boundary) {
                    Due::Nothing => Poll::Pending,
                    Due::Heartbeat => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(HEARTBEAT))))),
                    Due::End => {
                        self.finished = true;
                        self.end("max_duration");
                        Poll::Ready(None)
                    }
                    Due::IdleTimeout(limit) => {
                        self.end("idle_timeout");
                        if let Some(o) = &self.observer {
                            o.metrics.upstream_error(crate::metrics::UpstreamError::IdleTimeout);
                        }
                        Poll::Ready(Some(Err(IdleTimeout(limit).into())))
                    }
                    Due::Deadline => {
                        self.end("request_timeout");
                        Poll::Ready(Some(Err("the route's request timeout passed".into())))
                    }
                }
            }
        }
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.coalesce.is_none() {
            return self.poll_upstream(cx);
        }
        if let Some(held) = self.coalesce.as_mut().and_then(|c| c.held.take()) {
            return Poll::Ready(Some(Ok(held)));
        }
        loop {
            let flush = |c: &mut Coalescer| Frame::data(c.buf.split().freeze());
            if self.finished {
                // A drain or the maximum duration ended the stream at an
                // event boundary: send what is held, and nothing more.
                let c = self.coalesce.as_mut().expect("checked above");
                return Poll::Ready((!c.buf.is_empty()).then(|| Ok(flush(c))));
            }
            let polled = self.poll_upstream(cx);
            let c = self.coalesce.as_mut().expect("checked above");
            match polled {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if c.buf.is_empty() && (data.len() >= c.capacity || self.inner.is_end_stream()) {
                            // A full buffer's worth, or the whole rest of the body
                            // (a small Content-Length reply): pass it on without a copy.
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        if c.buf.len() + data.len() > c.capacity {
                            let out = flush(c);
                            if data.len() >= c.capacity {
                                c.held = Some(Frame::data(data));
                            } else {
                                c.buf.extend_from_slice(&data);
                            }
                            return Poll::Ready(Some(Ok(out)));
                        }
                        if c.buf.capacity() == 0 {
                            c.buf.reserve(c.capacity.min(16 * 1024).max(data.len()));
                        }
                        c.buf.extend_from_slice(&data);
                        if c.buf.len() >= c.capacity {
                            return Poll::Ready(Some(Ok(flush(c))));
                        }
                    }
                    Err(trailers) => {
                        if c.buf.is_empty() {
                            return Poll::Ready(Some(Ok(trailers)));
                        }
                        c.held = Some(trailers);
                        return Poll::Ready(Some(Ok(flush(c))));
                    }
                },
                Poll::Ready(None) => {
                    if c.buf.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(flush(c))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.finished {
            return true;
        }
        let drained = self
            .coalesce
            .as_ref()
            .is_none_or(|c| c.buf.is_empty() && c.held.is_none());
        drained && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.coalesce.as_ref().map_or(0, |c| {
            c.buf.len() as u64 + c.held.as_ref().and_then(|f| f.data_ref()).map_or(0, |d| d.len() as u64)
        });
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}
