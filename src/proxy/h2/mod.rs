//! Serving an HTTP/2 connection with ssegate's own protocol core
//! ([`crate::h2`]): the connection's one task reads the client into the
//! thread's scratch buffer, hands the bytes to the core, starts each
//! request's handling (admission and the upstream exchange, the same as
//! for HTTP/1.1), and carries every answer's body from its engine shell
//! ([`UpstreamBody`](super::body::UpstreamBody)) into DATA frames as the
//! client's flow control allows. No task per stream: a stream that waits
//! for its next event is an entry in a map, its upstream socket and its
//! body's state; the connection holds no buffer while nothing moves.
//!
//! The connection's own limits, on one timer:
//! - **header timeout**: the client preface must come within it;
//! - **keep-alive timeout**: no stream open for that long: GOAWAY, close;
//! - **send timeout**: queued frames the client takes nothing of for that
//!   long: close (a stream blocked by its own flow-control window is cut
//!   by its body's engine after the same time);
//! - **PING**: while streams are open and the client is silent for
//!   `h2_ping_interval`, a PING; no answer within `h2_ping_timeout`: close.

mod request_body;

use super::h1::{with_scratch, READ_MAX};
use super::{Conn, Proxy, ProxyBody};
use crate::h2::{Connection, ErrorCode, Event, ServerSettings};
use bytes::{Buf, Bytes};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body::Body;
use request_body::{RequestBody, SharedInbox};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tracing::debug;

/// Frames queued for a client that is not reading, past which no more body
/// bytes are produced (the upstreams wait, in the kernel's buffers).
const MAX_QUEUED_OUTPUT: usize = 256 * 1024;
/// Rounds of reading, handling and writing in one wake-up, so that one
/// busy connection cannot hold its thread.
const TURNS_PER_WAKE: usize = 32;

/// A request's handling: admission, the exchange, and the answer's head.
type Handling = Pin<Box<dyn Future<Output = (u32, Response<ProxyBody>)> + Send>>;

/// What a stream is doing on ssegate's side.
enum StreamIo {
    /// Its request is being handled; its body (if any) goes through `inbox`.
    Handling { inbox: Option<SharedInbox>, head: bool },
    /// Its answer's body is being carried; `pending` is what the client's
    /// window did not take yet (and whether it ends the stream).
    Sending {
        body: ProxyBody,
        pending: Option<(Bytes, bool)>,
    },
}

/// Serves one HTTP/2 connection until it closes.
pub(in crate::proxy) async fn serve<S>(proxy: Arc<Proxy>, io: S, info: Conn, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = proxy.limits;
    let settings = ServerSettings {
        max_header_list_size: limits.max_head_bytes.try_into().unwrap_or(u32::MAX),
        ..ServerSettings::default()
    };
    let now = Instant::now();
    let mut shell = Shell {
        proxy,
        io,
        info,
        h2: Connection::new(settings),
        carry: Vec::new(),
        streams: HashMap::new(),
        handling: FuturesUnordered::new(),
        timer: None,
        started: now,
        idle_since: Some(now),
        blocked_since: None,
        ping_sent: None,
        last_heard: now,
        stopping: false,
        closing: None,
        unflushed: false,
    };
    let mut stopping = std::pin::pin!(stop.wait_for(|s| *s));
    let closed = std::future::poll_fn(|cx| shell.poll(cx, stopping.as_mut())).await;
    if let Some(reason) = closed {
        shell.proxy.metrics.connection_closed(reason);
        debug!(peer = %shell.info.peer, reason, "closing HTTP/2 connection");
    }
}

struct Shell<S> {
    proxy: Arc<Proxy>,
    io: S,
    info: Conn,
    h2: Connection,
    /// An incomplete frame, kept until the rest of it comes.
    carry: Vec<u8>,
    streams: HashMap<u32, StreamIo>,
    handling: FuturesUnordered<Handling>,
    timer: Option<Pin<Box<Sleep>>>,
    started: Instant,
    /// Since when no stream has been open (`None` while some are).
    idle_since: Option<Instant>,
    /// Since when queued frames have waited for the client.
    blocked_since: Option<Instant>,
    /// When ssegate's unanswered PING went out.
    ping_sent: Option<Instant>,
    /// When the client last sent anything.
    last_heard: Instant,
    /// A drain asked for GOAWAY: open streams run to their end.
    stopping: bool,
    /// Close once the output is written; the reason for the metric (if any).
    closing: Option<Option<&'static str>>,
    unflushed: bool,
}

/// What a read brought.
enum Read {
    Progress,
    Nothing,
    /// The client closed, or a connection error was queued.
    Over,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Shell<S> {
    /// Runs the connection; `Ready` when it is to be closed (with the
    /// reason to count, if it is one of ssegate's limits).
    fn poll<F: Future>(&mut self, cx: &mut Context<'_>, mut stop: Pin<&mut F>) -> Poll<Option<&'static str>> {
        for turn in 0..=TURNS_PER_WAKE {
            if turn == TURNS_PER_WAKE {
                // Still busy: let the thread's other tasks run, and come
                // back at once (no socket will wake a task that has not
                // seen it pending).
                cx.waker().wake_by_ref();
                break;
            }
            if !self.write_out(cx) {
                return Poll::Ready(None);
            }
            if let Some(reason) = self.closing {
                if self.h2.output().is_empty() && !self.unflushed {
                    return Poll::Ready(reason);
                }
                // Only the output is still to be written.
                return self.poll_timers(cx);
            }
            let mut progressed = false;
            match self.read_in(cx) {
                Read::Progress => progressed = true,
                Read::Nothing => {}
                Read::Over => {
                    self.closing.get_or_insert(None);
                    continue;
                }
            }
            self.give_credit_back();
            while let Poll::Ready(Some((stream, resp))) = self.handling.poll_next_unpin(cx) {
                self.respond(stream, resp);
                progressed = true;
            }
            progressed |= self.carry_bodies(cx);
            if !self.stopping && stop.as_mut().poll(cx).is_ready() {
                // Draining: no new streams; event streams end at their next
                // boundary (the drain signal reaches their engines).
                self.stopping = true;
                self.h2.go_away();
                progressed = true;
            }
            if self.streams.is_empty() && self.handling.is_empty() {
                self.idle_since.get_or_insert_with(Instant::now);
                if self.stopping {
                    self.closing = Some(None);
                    progressed = true;
                }
            } else {
                self.idle_since = None;
            }
            if !progressed && self.h2.output().is_empty() {
                break;
            }
            if !progressed && self.blocked_since.is_some() {
                break;
            }
        }
        self.poll_timers(cx)
    }

    /// Writes queued frames; false when the client is gone.
    fn write_out(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let out = self.h2.output();
            if out.is_empty() {
                break;
            }
            match Pin::new(&mut self.io).poll_write(cx, out) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    out.drain(..n);
                    self.unflushed = true;
                    self.blocked_since = None;
                    if out.is_empty() {
                        // Hold no buffer while nothing is queued.
                        *out = Vec::new();
                    }
                }
                Poll::Ready(_) => return false,
                Poll::Pending => {
                    self.blocked_since.get_or_insert_with(Instant::now);
                    return true;
                }
            }
        }
        if self.unflushed {
            // TLS keeps written bytes until flushed.
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(_)) => return false,
                Poll::Pending => {
                    self.blocked_since.get_or_insert_with(Instant::now);
                }
            }
        }
        true
    }

    /// Reads once and hands the bytes to the core.
    fn read_in(&mut self, cx: &mut Context<'_>) -> Read {
        let mut events = Vec::new();
        let read = with_scratch(|buf| {
            let mut rb = ReadBuf::new(&mut buf[..READ_MAX]);
            match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                Poll::Pending => return Read::Nothing,
                Poll::Ready(Err(_)) => return Read::Over,
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Read::Over,
                Poll::Ready(Ok(())) => {}
            }
            self.last_heard = Instant::now();
            let data = rb.filled();
            let received = if self.carry.is_empty() {
                self.h2.receive(data, &mut events).map(|n| {
                    self.carry.extend_from_slice(&data[n..]);
                })
            } else {
                self.carry.extend_from_slice(data);
                self.h2.receive(&self.carry, &mut events).map(|n| {
                    self.carry.drain(..n);
                    if self.carry.is_empty() {
                        self.carry = Vec::new();
                    }
                })
            };
            match received {
                Ok(()) => Read::Progress,
                Err(e) => {
                    debug!(peer = %self.info.peer, error = %e, "HTTP/2 connection error");
                    Read::Over
                }
            }
        });
        // Events found before a connection error are still acted on (the
        // GOAWAY names the last stream that will be answered).
        for event in events {
            self.on_event(event, cx);
        }
        read
    }

    fn on_event(&mut self, event: Event, cx: &mut Context<'_>) {
        match event {
            Event::Request {
                stream,
                head,
                end_stream,
            } => {
                let inbox: Option<SharedInbox> = (!end_stream).then(|| Arc::new(Mutex::new(Default::default())));
                let body = match &inbox {
                    Some(i) => RequestBody::from_inbox(i.clone()),
                    None => RequestBody::empty(),
                };
                let head_request = head.method == http::Method::HEAD;
                let req = Request::from_parts(head, body);
                let proxy = self.proxy.clone();
                let info = self.info.clone();
                self.handling.push(Box::pin(async move {
                    let resp = proxy.handle(req, info).await;
                    (stream, resp)
                }));
                self.streams.insert(
                    stream,
                    StreamIo::Handling {
                        inbox,
                        head: head_request,
                    },
                );
            }
            Event::Data {
                stream,
                data,
                end_stream,
            } => match self.streams.get(&stream) {
                Some(StreamIo::Handling { inbox: Some(inbox), .. }) => {
                    request_body::push(inbox, data, end_stream, cx.waker());
                }
                // Nobody reads it (answered already): credit back at once.
                _ => self.h2.release(stream, data.len()),
            },
            Event::BodyEnd { stream } => {
                if let Some(StreamIo::Handling { inbox: Some(inbox), .. }) = self.streams.get(&stream) {
                    request_body::push(inbox, Bytes::new(), true, cx.waker());
                }
            }
            Event::Reset { stream, code } => {
                debug!(peer = %self.info.peer, stream, ?code, "stream reset");
                // Dropping a body ends it (`client_gone`); a response still
                // being handled is dropped when it comes.
                if let Some(StreamIo::Handling { inbox: Some(inbox), .. }) = self.streams.remove(&stream) {
                    request_body::break_off(&inbox);
                }
            }
            Event::HeadTooLarge { stream } => {
                self.proxy.metrics.bad_request("head_too_large");
                let resp = super::reply::local_reply(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "ssegate: request head too large\n",
                );
                self.streams.insert(
                    stream,
                    StreamIo::Handling {
                        inbox: None,
                        head: false,
                    },
                );
                self.respond(stream, resp);
            }
            Event::WindowOpened { .. } | Event::GoAway => {}
            Event::PingAcked => self.ping_sent = None,
        }
    }

    /// Gives the client credit back for the request body its exchanges took.
    fn give_credit_back(&mut self) {
        for (&id, s) in &self.streams {
            if let StreamIo::Handling { inbox: Some(inbox), .. } = s {
                let n = request_body::take_consumed(inbox);
                if n > 0 {
                    self.h2.release(id, n);
                }
            }
        }
    }

    /// Sends a handled request's answer head; its body is carried next.
    fn respond(&mut self, stream: u32, resp: Response<ProxyBody>) {
        let Some(StreamIo::Handling { head, inbox }) = self.streams.get(&stream) else {
            // Reset while it was handled: the answer is dropped.
            return;
        };
        let head = *head;
        if let Some(inbox) = inbox {
            // What the exchange took last is credit the client is owed.
            let n = request_body::take_consumed(inbox);
            if n > 0 {
                self.h2.release(stream, n);
            }
        }
        let (parts, body) = resp.into_parts();
        let end = head || http_body::Body::is_end_stream(&body);
        self.h2.send_headers(stream, parts.status, &parts.headers, end);
        if end {
            self.streams.remove(&stream);
        } else {
            self.streams.insert(stream, StreamIo::Sending { body, pending: None });
        }
    }

    /// Moves answer bodies into DATA frames as far as the client's windows
    /// and the output bound allow. Returns whether anything moved.
    fn carry_bodies(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progressed = false;
        let mut ended: Vec<u32> = Vec::new();
        let h2 = &mut self.h2;
        for (&id, s) in self.streams.iter_mut() {
            let StreamIo::Sending { body, pending } = s else {
                continue;
            };
            loop {
                if let Some((data, end)) = pending {
                    let n = h2.send_data(id, data, *end);
                    if n > 0 {
                        progressed = true;
                        unblocked(body);
                    }
                    if n < data.len() {
                        data.advance(n);
                        if blocked(body, cx) {
                            h2.reset(id, ErrorCode::Cancel);
                            ended.push(id);
                        }
                        break;
                    }
                    let end = *end;
                    *pending = None;
                    if end {
                        ended.push(id);
                        break;
                    }
                }
                if h2.output().len() >= MAX_QUEUED_OUTPUT {
                    break;
                }
                if h2.send_capacity(id) == 0 {
                    // Nothing is read from the upstream while the client's
                    // window is shut; the send timeout runs.
                    if blocked(body, cx) {
                        h2.reset(id, ErrorCode::Cancel);
                        ended.push(id);
                    }
                    break;
                }
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        progressed = true;
                        if let Ok(data) = frame.into_data() {
                            let end = http_body::Body::is_end_stream(&*body);
                            *pending = Some((data, end));
                        }
                    }
                    Poll::Ready(None) => {
                        progressed = true;
                        h2.send_data(id, &[], true);
                        ended.push(id);
                        break;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // Cut: the client must not take it for complete.
                        debug!(stream = id, error = %e, "answer body cut");
                        progressed = true;
                        h2.reset(id, ErrorCode::InternalError);
                        ended.push(id);
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        for id in ended {
            self.streams.remove(&id);
        }
        progressed
    }

    /// The connection's deadlines, on one timer. `Ready` to close.
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> Poll<Option<&'static str>> {
        let limits = self.proxy.limits;
        loop {
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            let mut due = |at: Instant| next = Some(next.map_or(at, |n: Instant| n.min(at)));
            if let Some(since) = self.blocked_since {
                if now >= since + limits.send_timeout {
                    return Poll::Ready(Some("send_timeout"));
                }
                due(since + limits.send_timeout);
            }
            if self.closing.is_none() {
                if !self.h2.started() {
                    if now >= self.started + limits.header_timeout {
                        return Poll::Ready(Some("header_timeout"));
                    }
                    due(self.started + limits.header_timeout);
                } else if let Some(since) = self.idle_since {
                    if now >= since + limits.keepalive_timeout {
                        // GOAWAY first, then close once it is written.
                        self.h2.go_away();
                        self.closing = Some(Some("keepalive_timeout"));
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    due(since + limits.keepalive_timeout);
                } else if let Some(sent) = self.ping_sent {
                    if now >= sent + limits.h2_ping_timeout {
                        return Poll::Ready(Some("ping_timeout"));
                    }
                    due(sent + limits.h2_ping_timeout);
                } else if now >= self.last_heard + limits.h2_ping_interval {
                    if self.h2.ping() {
                        self.ping_sent = Some(now);
                    }
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                } else {
                    due(self.last_heard + limits.h2_ping_interval);
                }
            }
            let Some(at) = next else {
                return Poll::Pending;
            };
            let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if timer.deadline() != at {
                timer.as_mut().reset(at);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// The client's window is shut for this body: true once its send timeout
/// has cut it.
fn blocked(body: &mut ProxyBody, cx: &mut Context<'_>) -> bool {
    match body {
        ProxyBody::Upstream(b) => b.poll_blocked(cx).is_ready(),
        ProxyBody::Local(_) => false,
    }
}

/// The client took bytes of this body.
fn unblocked(body: &mut ProxyBody) {
    if let ProxyBody::Upstream(b) = body {
        b.unblocked();
    }
}
