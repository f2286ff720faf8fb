//! Response bodies for HTTP/2 clients: an upstream's answer carried by the
//! stream engine, and ssegate's own replies.
//!
//! [`UpstreamBody`] is the HTTP/2 shell around a
//! [`StreamEngine`](super::stream_engine::StreamEngine), as the HTTP/1.1
//! pump (`h1/pump.rs`) is the HTTP/1.1 one: it reads the upstream
//! connection into the thread's scratch buffer, undoes its framing in
//! place, and hands the payload to the engine; what the engine passes on
//! becomes one DATA frame (copied once, at its exact size, out of the
//! scratch buffer). While a stream waits for its next event it holds no
//! buffer: the upstream socket, one timer, and the engine's state.
//!
//! Read-ahead bound: the body is only polled when the client's stream can
//! take more (hyper asks for flow-control capacity first), so a slow client
//! holds at most one read (64 KiB) beyond hyper's send queue and the
//! kernel's socket buffers.

use super::h1::body_shell::{decide_on_timer, read_unframed, Input, Unframed};
use super::h1::resume::{NewUpstream, Resumer};
use super::h1::resume_request::ResumeRequest;
use super::h1::{with_scratch, HEADROOM};
use super::stream_engine::{Decision, EngineSettings, Outcome, Received, ResumePlan, StreamEngine, HEARTBEAT};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Instant, Sleep};

pub use super::stream_engine::{BodyMode, SseLimits};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why ssegate cut a response body short (the client sees the stream reset,
/// never a complete body).
#[derive(Debug, thiserror::Error)]
#[error("response cut: {}", .0.as_str())]
pub struct StreamCut(pub Outcome);

/// The body of every response the proxy sends over HTTP/2.
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
            ProxyBody::Upstream(body) => body.ending.is_some(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            // The upstream's Content-Length, if any, is in the headers.
            ProxyBody::Upstream(_) => SizeHint::default(),
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

/// What an [`UpstreamBody`] needs besides the upstream connection.
pub(super) struct UpstreamParts {
    pub input: Input,
    /// Body bytes that came with the upstream's response head.
    pub pending_in: Vec<u8>,
    pub engine: EngineSettings,
    /// The upstream connection may serve another request once this body
    /// is complete.
    pub reusable: bool,
    pub slot: Option<super::StreamSlot>,
    pub load: super::EndpointLoad,
    pub endpoint: SocketAddr,
    /// What a resume needs, when the request may be resumed.
    pub resume: Option<std::sync::Arc<ResumeRequest>>,
}

/// An upstream's answer body on its way to an HTTP/2 client.
pub struct UpstreamBody {
    /// `None` once the body has ended (and the connection gone back to the
    /// pool, or closed).
    upstream: Option<TcpStream>,
    input: Input,
    pending_in: Vec<u8>,
    engine: StreamEngine,
    /// The one timer, created when the body first has to wait.
    sleep: Option<Pin<Box<Sleep>>>,
    drain_wait: Option<Pin<Box<OwnedNotified>>>,
    /// Set once the body has ended cleanly: nothing more is sent.
    ending: Option<Outcome>,
    reusable: bool,
    observer: Option<super::access::Observer>,
    _slot: Option<super::StreamSlot>,
    _load: Option<super::EndpointLoad>,
    /// The endpoint that answered, for the access log.
    pub endpoint: Option<SocketAddr>,
    /// Present when the stream may be resumed elsewhere.
    resumer: Option<Box<Resumer>>,
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // hyper stops polling a body that says it has ended, so a clean end
        // is logged here; a body dropped before its end lost its client.
        self.finish(self.ending.unwrap_or(Outcome::ClientGone));
    }
}

impl UpstreamBody {
    /// A body carried as the engine settings say; `drain` ends it at an
    /// event boundary once a drain starts, if it is an event stream.
    pub(super) fn new(upstream: TcpStream, p: UpstreamParts, drain: &DrainSignal) -> Self {
        let mut engine = StreamEngine::new(p.engine, Instant::now());
        let drain_wait = engine.drainable().then(|| {
            let mut wait = Box::pin(drain.notified());
            // Registered now, so a drain that starts before the first poll still wakes it.
            wait.as_mut().enable();
            wait
        });
        if drain.started() {
            engine.drain();
        }
        let resumer = p.resume.filter(|_| engine.resume_on()).map(|r| {
            if let Some(id) = r.client_last_id() {
                engine.seed_last_event_id(id);
            }
            Box::new(Resumer::new(r))
        });
        let empty = matches!(p.input, Input::Length(0)) && p.pending_in.is_empty();
        let mut body = UpstreamBody {
            upstream: Some(upstream),
            input: p.input,
            pending_in: p.pending_in,
            engine,
            sleep: None,
            drain_wait,
            ending: None,
            reusable: p.reusable,
            observer: None,
            _slot: p.slot,
            _load: Some(p.load),
            endpoint: Some(p.endpoint),
            resumer,
        };
        if empty {
            // Nothing to carry: complete now, the connection back to the pool.
            body.end(Outcome::Complete);
        }
        body
    }

    /// Whether this is a `text/event-stream` response.
    pub fn is_event_stream(&self) -> bool {
        self.engine.is_event_stream()
    }

    /// Records metrics and the access line for this body.
    pub fn observe(&mut self, observer: super::access::Observer) {
        self.observer = Some(observer);
    }

    /// The body ended cleanly: a complete one's connection may serve
    /// another request.
    fn end(&mut self, outcome: Outcome) {
        self.ending = Some(outcome);
        let upstream = self.upstream.take();
        if let (Some(stream), Some(endpoint)) = (upstream, self.endpoint) {
            if outcome == Outcome::Complete && self.reusable {
                super::h1::pool::checkin(endpoint, stream);
            }
        }
    }

    /// Accounts for the body's end (once).
    fn finish(&mut self, outcome: Outcome) {
        if let Some(observer) = self.observer.take() {
            if let Some(kind) = outcome.upstream_error() {
                observer.metrics.upstream_error(kind);
            }
            observer.finish(self.engine.sent(), self.engine.events(), outcome.as_str());
        }
    }

    /// The client's stream takes nothing now (its flow-control window is
    /// shut): `Ready` once the send timeout has passed and the body has
    /// been cut (and accounted for).
    pub(super) fn poll_blocked(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.engine.client_blocked(Instant::now());
        match self.decide(cx) {
            Decision::Cut(outcome) => {
                self.upstream = None;
                self.finish(outcome);
                Poll::Ready(())
            }
            _ => Poll::Pending,
        }
    }

    /// The client took bytes of this body again.
    pub(super) fn unblocked(&mut self) {
        self.engine.client_took();
    }

    /// Cuts the body: the client's stream is reset.
    fn cut(&mut self, outcome: Outcome) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.upstream = None;
        self.finish(outcome);
        Poll::Ready(Some(Err(StreamCut(outcome).into())))
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ending.is_some() {
            return Poll::Ready(None);
        }
        loop {
            // A resume under way, else a read (a resume reads its answer
            // through the scratch buffer itself, so not inside it).
            let read = match self.resumer.as_mut().filter(|r| r.running()) {
                Some(resumer) => match resumer.poll_into(cx, &mut self.engine, self.observer.as_mut()) {
                    Poll::Pending => Read::Waiting,
                    Poll::Ready(Ok(new)) => {
                        self.install(new);
                        Read::Nothing
                    }
                    Poll::Ready(Err(outcome)) => Read::Cut(outcome),
                },
                None => with_scratch(|buf| self.read_some(cx, buf)),
            };
            match read {
                Read::Frame(frame) => return Poll::Ready(Some(Ok(Frame::data(frame)))),
                Read::Nothing => continue,
                Read::End => return Poll::Ready(None),
                Read::Cut(outcome) => return self.cut(outcome),
                Read::Waiting => break,
            }
        }
        if let Some(wait) = &mut self.drain_wait {
            if wait.as_mut().poll(cx).is_ready() {
                self.drain_wait = None;
                self.engine.drain();
            }
        }
        if let (Some(resumer), Some(endpoint)) = (&mut self.resumer, self.endpoint) {
            if let Some((at, reason)) = resumer.poll_moved(cx, endpoint) {
                self.engine.leave(at, reason);
            }
        }
        match self.decide(cx) {
            Decision::Wait => Poll::Pending,
            Decision::Heartbeat => {
                if let Some(o) = &self.observer {
                    o.metrics.bytes.inc_by(HEARTBEAT.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(HEARTBEAT)))))
            }
            Decision::End(outcome, held) => {
                self.reusable = false;
                self.end(outcome);
                Poll::Ready(held.map(|h| Ok(Frame::data(Bytes::from(h)))))
            }
            Decision::Cut(outcome) => self.cut(outcome),
            Decision::Resume(plan) => {
                self.start_resume(plan);
                // Polled again at once: the resume's first step runs now.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    fn decide(&mut self, cx: &mut Context<'_>) -> Decision {
        decide_on_timer(&mut self.engine, &mut self.sleep, cx)
    }

    /// The upstream failed: resume elsewhere if the engine allows, else
    /// cut the body.
    fn upstream_failed(&mut self) -> Read {
        let resuming = match (&mut self.resumer, self.endpoint) {
            (Some(r), Some(left)) => r.after_failure(&mut self.engine, self.observer.as_ref(), left),
            _ => false,
        };
        if !resuming {
            return Read::Cut(Outcome::UpstreamError);
        }
        self.drop_upstream();
        Read::Nothing
    }

    /// Leaves the upstream for another endpoint, as the engine decided.
    fn start_resume(&mut self, plan: ResumePlan) {
        if let (Some(r), Some(left)) = (&mut self.resumer, self.endpoint) {
            r.begin(plan, &self.engine, self.observer.as_ref(), left);
        }
        self.drop_upstream();
    }

    /// Closes the upstream connection while a resume finds another.
    fn drop_upstream(&mut self) {
        self.upstream = None;
        self.reusable = false;
        self.pending_in = Vec::new();
        self._load = None;
    }

    /// A resume found a new upstream: the body carries on from it.
    fn install(&mut self, new: NewUpstream) {
        self.upstream = Some(new.stream);
        self.input = new.input;
        self.pending_in = new.leftover;
        self.reusable = new.keep_alive;
        self.endpoint = Some(new.endpoint);
        self._load = Some(new.load);
    }

    /// One read from the upstream (or the bytes that came with its head),
    /// handed to the engine.
    fn read_some(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Read {
        let unframed = read_unframed(cx, buf, &mut self.pending_in, self.upstream.as_mut(), &mut self.input);
        let now = Instant::now();
        let (len, done) = match unframed {
            Unframed::Waiting => return Read::Waiting,
            Unframed::Broken => return self.upstream_failed(),
            Unframed::Closed => {
                self.reusable = false;
                let received = self.engine.receive(&[], true, now);
                return self.emit(&[], received);
            }
            Unframed::Data { len, done, out_of_step } => {
                self.reusable &= !out_of_step;
                (len, done)
            }
        };
        let payload = &buf[HEADROOM..HEADROOM + len];
        let received = self.engine.receive(payload, done, now);
        self.emit(payload, received)
    }

    /// What the engine decided about `payload`, as at most one frame.
    fn emit(&mut self, payload: &[u8], r: Received) -> Read {
        if let Some(o) = &self.observer {
            o.metrics.bytes.inc_by(payload.len() as u64);
            if r.events > 0 {
                o.metrics.events.inc_by(r.events);
            }
            if let Some(gap) = r.resume_gap {
                o.metrics.resume_gap(gap);
            }
        }
        // The end of the payload an engine that resumes holds back.
        let payload = &payload[..payload.len() - r.keep];
        let frame = match (r.before, r.pass, r.after) {
            (None, true, None) => Some(Bytes::copy_from_slice(payload)),
            (None, false, Some(block)) | (Some(block), false, None) => Some(Bytes::from(block)),
            (None, false, None) => None,
            (before, pass, after) => {
                let mut out = before.unwrap_or_default();
                if pass {
                    out.extend_from_slice(payload);
                }
                out.extend_from_slice(&after.unwrap_or_default());
                Some(Bytes::from(out))
            }
        };
        if let Some(outcome) = r.end {
            if outcome != Outcome::Complete {
                self.reusable = false;
            }
            self.end(outcome);
        }
        match (frame, r.end) {
            (Some(frame), _) => Read::Frame(frame),
            (None, Some(_)) => Read::End,
            (None, None) => Read::Nothing,
        }
    }
}

/// What one read brought.
enum Read {
    /// Bytes for the client.
    Frame(Bytes),
    /// Bytes came, but nothing goes out yet (framing, or held back).
    Nothing,
    /// The body ended cleanly with nothing more to send.
    End,
    Cut(Outcome),
    /// The upstream has nothing now.
    Waiting,
}
