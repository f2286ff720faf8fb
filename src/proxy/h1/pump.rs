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

use super::body_shell::{decide_on_timer, read_unframed, Input, Unframed};
use super::resume::Resumer;
use super::resume_request::ResumeRequest;
use super::{with_scratch, HEADROOM};
use crate::http1::chunked::{chunk_header, CHUNK_END, LAST_CHUNK};
use crate::proxy::access::Observer;
use crate::proxy::stream_engine::{
    BodyMode, Decision, EngineSettings, Outcome, Received, ResumePlan, StreamEngine, HEARTBEAT,
};
use crate::proxy::{EndpointLoad, StreamSlot};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Instant, Sleep};

/// The comment line ssegate sends as a heartbeat, framed as one chunk.
const HEARTBEAT_CHUNK: &[u8] = b"3\r\n:\n\n\r\n";
/// Most bytes a client may send ahead (a pipelined request) while a
/// response streams; past this its connection is not read until the end.
const MAX_READ_AHEAD: usize = 64 * 1024;

/// How the client is told where the body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Output {
    /// The upstream's Content-Length, passed on.
    Length,
    Chunked,
    /// An HTTP/1.0 client: the connection closes after the body.
    UntilClose,
}

/// How a body ended.
pub(super) struct Ended {
    pub outcome: Outcome,
    /// The client's response was framed to its end: the connection may
    /// serve another request.
    pub clean: bool,
    /// The upstream connection, when its response ended cleanly and it may
    /// serve another request.
    pub upstream: Option<TcpStream>,
}

/// Carries one answer's body to an HTTP/1.1 client: the I/O around a
/// [`StreamEngine`], which decides everything else.
pub(super) struct Pump {
    upstream: Option<TcpStream>,
    input: Input,
    output: Output,
    engine: StreamEngine,
    /// Bytes for the client not written yet: the response head, then
    /// whatever a slow client has not taken.
    out: Vec<u8>,
    /// Body bytes that came with the upstream's response head.
    pending_in: Vec<u8>,
    /// The one timer, created when the body first has to wait (a short
    /// answer that is complete at once never touches the timer wheel), and
    /// moved only when it fires or a nearer deadline appears.
    sleep: Option<Pin<Box<Sleep>>>,
    drain_wait: Option<Pin<Box<OwnedNotified>>>,
    /// Set once the last bytes are queued.
    ending: Option<Outcome>,
    /// Bytes were written since the last flush.
    unflushed: bool,
    /// The upstream may serve another request once this body is complete.
    upstream_reusable: bool,
    observer: Option<Observer>,
    _slot: Option<StreamSlot>,
    _load: Option<EndpointLoad>,
    /// Where the upstream connection goes back to, if it may.
    endpoint: SocketAddr,
    /// Present when the stream may be resumed elsewhere.
    resumer: Option<Box<Resumer>>,
    /// The client connection closes after this body.
    close: bool,
}

/// What a [`Pump`] needs besides the upstream connection.
pub(super) struct PumpParts {
    pub input: Input,
    pub output: Output,
    pub mode: BodyMode,
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
    /// What a resume needs, when the request may be resumed.
    pub resume: Option<Arc<ResumeRequest>>,
}

impl Pump {
    pub fn new(
        upstream: TcpStream,
        p: PumpParts,
        drain: Option<&crate::proxy::DrainSignal>,
        endpoint: SocketAddr,
        close: bool,
    ) -> Self {
        let mut engine = StreamEngine::new(
            EngineSettings {
                mode: p.mode,
                // Heartbeats and boundary endings need a framing that can end early.
                open_ended: p.output != Output::Length,
                idle: p.idle,
                deadline: p.deadline,
                send_timeout: p.send_timeout,
                resume: p.resume.as_ref().and_then(|r| r.settings()),
            },
            Instant::now(),
        );
        let resumer = p.resume.filter(|_| engine.resume_on()).map(|r| {
            if let Some(id) = r.client_last_id() {
                engine.seed_last_event_id(id);
            }
            Box::new(Resumer::new(r))
        });
        let drain_wait = match drain {
            Some(signal) if engine.drainable() => {
                let mut wait = Box::pin(signal.notified());
                wait.as_mut().enable();
                if signal.started() {
                    engine.drain();
                }
                Some(wait)
            }
            _ => None,
        };
        Pump {
            upstream: Some(upstream),
            input: p.input,
            output: p.output,
            engine,
            out: p.head,
            pending_in: p.pending_in,
            sleep: None,
            drain_wait,
            ending: None,
            unflushed: false,
            upstream_reusable: p.upstream_keep_alive,
            observer: Some(p.observer),
            _slot: p.slot,
            _load: Some(p.load),
            endpoint,
            close,
            resumer,
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
        if ended.outcome == Outcome::SendTimeout {
            metrics.connection_closed("send_timeout");
        }
        if let Some(up) = ended.upstream {
            super::pool::checkin(self.endpoint, up);
        }
        ended.clean && !self.close
    }

    fn finish(&mut self, outcome: Outcome) -> Ended {
        if let Some(observer) = self.observer.take() {
            if let Some(kind) = outcome.upstream_error() {
                observer.metrics.upstream_error(kind);
            }
            observer.finish(self.engine.sent(), self.engine.events(), outcome.as_str());
        }
        let upstream = self
            .upstream
            .take()
            .filter(|_| outcome == Outcome::Complete && self.upstream_reusable);
        Ended {
            outcome,
            clean: outcome.is_clean() && self.output != Output::UntilClose,
            upstream,
        }
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
                        self.engine.client_took();
                        continue;
                    }
                    Poll::Ready(_) => return Poll::Ready(self.finish(Outcome::ClientGone)),
                    Poll::Pending => return self.blocked(cx),
                }
            }
            if self.unflushed {
                // TLS keeps written bytes in its own buffer until flushed
                // (plain TCP is always flushed).
                match Pin::new(&mut *io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.unflushed = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(self.finish(Outcome::ClientGone)),
                    Poll::Pending => return self.blocked(cx),
                }
            }
            if let Some(outcome) = self.ending {
                return Poll::Ready(self.finish(outcome));
            }
            // A resume under way, else a read (a resume reads its answer
            // through the scratch buffer itself, so not inside it).
            let step = match self.poll_resume(cx) {
                Some(step) => step,
                None => with_scratch(|buf| self.forward_some(cx, buf, io)),
            };
            match step {
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
                    return Poll::Ready(self.finish(Outcome::ClientGone));
                }
            }
            if let Some(wait) = &mut self.drain_wait {
                if wait.as_mut().poll(cx).is_ready() {
                    self.drain_wait = None;
                    self.engine.drain();
                }
            }
            if let Some(resumer) = &mut self.resumer {
                if let Some((at, reason)) = resumer.poll_moved(cx, self.endpoint) {
                    self.engine.leave(at, reason);
                }
            }
            match self.decide(cx) {
                Decision::Wait => return Poll::Pending,
                Decision::Heartbeat => {
                    self.out.extend_from_slice(match self.output {
                        Output::Chunked => HEARTBEAT_CHUNK,
                        _ => HEARTBEAT,
                    });
                    if let Some(o) = &self.observer {
                        o.metrics.bytes.inc_by(HEARTBEAT.len() as u64);
                    }
                }
                Decision::End(outcome, held) => self.end_early(outcome, held),
                Decision::Cut(outcome) => return Poll::Ready(self.finish(outcome)),
                Decision::Resume(plan) => self.start_resume(plan),
            }
        }
    }

    fn decide(&mut self, cx: &mut Context<'_>) -> Decision {
        decide_on_timer(&mut self.engine, &mut self.sleep, cx)
    }

    /// The upstream failed: resume elsewhere if the engine allows, else
    /// cut the body.
    fn upstream_failed(&mut self) -> Step {
        let resuming = self
            .resumer
            .as_mut()
            .is_some_and(|r| r.after_failure(&mut self.engine, self.observer.as_ref(), self.endpoint));
        if !resuming {
            return Step::Ended(self.finish(Outcome::UpstreamError));
        }
        self.drop_upstream();
        Step::Moved
    }

    /// Leaves the upstream for another endpoint, as the engine decided.
    fn start_resume(&mut self, plan: ResumePlan) {
        if let Some(r) = &mut self.resumer {
            r.begin(plan, &self.engine, self.observer.as_ref(), self.endpoint);
        }
        self.drop_upstream();
    }

    /// Closes the upstream connection (a backend that is shutting down
    /// sees the stream leave) while a resume finds another.
    fn drop_upstream(&mut self) {
        self.upstream = None;
        self.upstream_reusable = false;
        self.pending_in = Vec::new();
        self._load = None;
    }

    /// Polls the resume under way, if there is one.
    fn poll_resume(&mut self, cx: &mut Context<'_>) -> Option<Step> {
        let resumer = self.resumer.as_mut().filter(|r| r.running())?;
        Some(match resumer.poll_into(cx, &mut self.engine, self.observer.as_mut()) {
            Poll::Pending => Step::Waiting,
            Poll::Ready(Ok(new)) => {
                self.upstream = Some(new.stream);
                self.input = new.input;
                self.pending_in = new.leftover;
                self.upstream_reusable = new.keep_alive;
                self.endpoint = new.endpoint;
                self._load = Some(new.load);
                Step::Moved
            }
            Poll::Ready(Err(outcome)) => Step::Ended(self.finish(outcome)),
        })
    }

    /// The client takes nothing now: wait, up to the send timeout.
    fn blocked(&mut self, cx: &mut Context<'_>) -> Poll<Ended> {
        self.engine.client_blocked(Instant::now());
        match self.decide(cx) {
            Decision::Cut(outcome) => Poll::Ready(self.finish(outcome)),
            _ => Poll::Pending,
        }
    }

    /// Ends the body now, at an event boundary, framed as complete.
    fn end_early(&mut self, outcome: Outcome, held: Option<Vec<u8>>) {
        let chunked = self.output == Output::Chunked;
        if let Some(held) = held {
            frame_into(&mut self.out, &held, chunked);
        }
        if chunked {
            self.out.extend_from_slice(LAST_CHUNK);
        }
        self.upstream_reusable = false;
        self.ending = Some(outcome);
    }

    /// One read from the upstream (or the bytes that came with its head),
    /// handled and written to the client in the same step.
    fn forward_some<S: AsyncWrite + Unpin>(&mut self, cx: &mut Context<'_>, buf: &mut [u8], io: &mut S) -> Step {
        let unframed = read_unframed(cx, buf, &mut self.pending_in, self.upstream.as_mut(), &mut self.input);
        let now = Instant::now();
        let (len, done) = match unframed {
            Unframed::Waiting => return Step::Waiting,
            Unframed::Broken => return self.upstream_failed(),
            Unframed::Closed => {
                self.upstream_reusable = false;
                let received = self.engine.receive(&[], true, now);
                return self.emit(cx, buf, 0, received, io);
            }
            Unframed::Data { len, done, out_of_step } => {
                self.upstream_reusable &= !out_of_step;
                (len, done)
            }
        };
        let received = self.engine.receive(&buf[HEADROOM..HEADROOM + len], done, now);
        self.emit(cx, buf, len, received, io)
    }

    /// Does what the engine decided about the payload at
    /// `buf[HEADROOM..HEADROOM + len]`: held blocks into `out`, the payload
    /// framed in place and written.
    fn emit<S: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        len: usize,
        r: Received,
        io: &mut S,
    ) -> Step {
        if let Some(o) = &self.observer {
            o.metrics.bytes.inc_by(len as u64);
            if r.events > 0 {
                o.metrics.events.inc_by(r.events);
            }
            if let Some(gap) = r.resume_gap {
                o.metrics.resume_gap(gap);
            }
        }
        // The end of the payload an engine that resumes holds back.
        let len = len - r.keep;
        if let Some(outcome) = r.end {
            if outcome != Outcome::Complete {
                // Ended before the upstream's body did.
                self.upstream_reusable = false;
            }
            self.ending = Some(outcome);
        }
        let chunked = self.output == Output::Chunked;
        let last_chunk = chunked && r.end.is_some();
        if let Some(before) = &r.before {
            frame_into(&mut self.out, before, chunked);
        }
        let mut last_written = false;
        if r.pass && len > 0 {
            let (mut start, mut end) = (HEADROOM, HEADROOM + len);
            if chunked {
                let mut line = [0u8; 18];
                let l = chunk_header(len, &mut line);
                start -= l;
                buf[start..HEADROOM].copy_from_slice(&line[..l]);
                buf[end..end + 2].copy_from_slice(CHUNK_END);
                end += 2;
            }
            if last_chunk && r.after.is_none() {
                buf[end..end + LAST_CHUNK.len()].copy_from_slice(LAST_CHUNK);
                end += LAST_CHUNK.len();
                last_written = true;
            }
            if let Step::Ended(end) = self.write_from(cx, buf, start, end, io) {
                return Step::Ended(end);
            }
        }
        if let Some(after) = &r.after {
            frame_into(&mut self.out, after, chunked);
        }
        if last_chunk && !last_written {
            self.out.extend_from_slice(LAST_CHUNK);
        }
        Step::Moved
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
            Poll::Ready(_) => Step::Ended(self.finish(Outcome::ClientGone)),
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
            observer.finish(self.engine.sent(), self.engine.events(), Outcome::ClientGone.as_str());
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
