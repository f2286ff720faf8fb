//! One request and its answer's head on one upstream connection: the
//! primitives every way upstream shares (a client's request through the
//! exchange, on either protocol, and a resumed one).
//!
//! The request head goes out as given, then the body as the client's side
//! hands it over ([`ClientSide`], framed by [`Upload`]); the answer's head
//! is read and checked, interim answers passed over. Time limits: the
//! response-header timeout from the moment the whole request is sent, the
//! body timeout while the client owes body bytes.

use super::io::Deadline;
use super::resume_request::ResumeRequest;
use super::with_scratch;
use super::READ_MAX;
use crate::http1::chunked::{chunk_header, ChunkedDecoder, CHUNK_END, LAST_CHUNK};
use crate::http1::head::{self, Framing, HeadError};
use crate::model::ResolvedRule;
use crate::proxy::headers::{remove_hop_by_hop, X_ACCEL_BUFFERING};
use crate::proxy::stream_engine::body_mode_of;
use http::header::HeaderValue;
use http::{HeaderMap, HeaderName, StatusCode};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

/// Largest upstream response head.
pub(in crate::proxy) const MAX_RESPONSE_HEAD: usize = 128 * 1024;
/// What the upstream answered, up to its body.
pub(in crate::proxy) struct Answered {
    pub status: StatusCode,
    /// The answer's head (`head_len` bytes) and the body bytes that came with it.
    pub raw: Vec<u8>,
    pub head_len: usize,
    pub body: Framing,
    /// The Content-Length of a body that is not sent (HEAD, 304).
    pub declared: Option<u64>,
    /// A bodiless answer (to HEAD, a 304) that the upstream framed as
    /// chunked or close-delimited: it has no length to declare, not even 0.
    pub length_unknown: bool,
    pub keep_alive: bool,
    pub stream: TcpStream,
    /// What a resume of this request needs (a GET on a rule with
    /// `sse.resume`); set by the exchange, not by the answer.
    pub resume: Option<Arc<ResumeRequest>>,
}

/// An answer's head (`Answered::raw[..head_len]`), parsed again (it was
/// checked once already; its fields point into `raw`, so it is not kept),
/// with the body mode decided from it for `target`, shown to `f`.
pub(in crate::proxy) fn with_answer_head<R>(
    raw_head: &[u8],
    target: &ResolvedRule,
    f: impl FnOnce(&[httparse::Header<'_>], crate::proxy::BodyMode) -> R,
) -> R {
    let mut slots = head::header_slots();
    let parsed = match head::parse_response(raw_head, MAX_RESPONSE_HEAD, &mut slots) {
        Ok(Some(p)) => p,
        _ => unreachable!("the head parsed before"),
    };
    let field = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value)
    };
    let mode = body_mode_of(target, field("content-type"), field("x-accel-buffering"));
    f(parsed.headers, mode)
}

/// The answer's fields in a header map, for edits (CORS, header modifiers)
/// or an HTTP/2 response; hop-by-hop fields and `X-Accel-Buffering` left out.
pub(in crate::proxy) fn answer_fields(fields: &[httparse::Header<'_>]) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(fields.len());
    for f in fields {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(f.name.as_bytes()),
            HeaderValue::from_bytes(f.value),
        ) {
            headers.append(name, value);
        }
    }
    remove_hop_by_hop(&mut headers);
    headers.remove(&X_ACCEL_BUFFERING);
    headers
}

/// Why an exchange with one upstream connection failed.
pub(in crate::proxy) enum Failure {
    /// A pooled connection was closed before any answer: send again.
    Stale,
    Timeout,
    Upstream(String),
    BadResponse(HeadError),
    ClientBody,
    BodyTimeout,
}

/// The client's request body as it goes up.
pub(in crate::proxy) struct Upload {
    input: UploadInput,
    /// When the client last sent body bytes.
    last: Instant,
}

enum UploadInput {
    Done,
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Payload whose framing the client's protocol already undid (HTTP/2
    /// DATA frames) and whose length is not known: re-chunked.
    Frames,
}

impl Upload {
    /// A body in HTTP/1.1 framing, as the client sent it.
    pub(in crate::proxy) fn new(body: Framing) -> Self {
        let input = match body {
            Framing::Length(n) => UploadInput::Length(n),
            Framing::Chunked => UploadInput::Chunked(ChunkedDecoder::new()),
            Framing::Empty | Framing::UntilClose => UploadInput::Done,
        };
        Upload {
            input,
            last: Instant::now(),
        }
    }

    /// A body whose framing the client's protocol already undid: `body`
    /// is how it goes up (a `content-length`, or chunked).
    pub(in crate::proxy) fn decoded(body: Framing) -> Self {
        let input = match body {
            Framing::Length(n) => UploadInput::Length(n),
            Framing::Chunked => UploadInput::Frames,
            Framing::Empty | Framing::UntilClose => UploadInput::Done,
        };
        Upload {
            input,
            last: Instant::now(),
        }
    }

    pub(in crate::proxy) fn done(&self) -> bool {
        matches!(self.input, UploadInput::Done)
    }

    /// Payload of a decoded body ([`Upload::decoded`]) into `to_up`, framed
    /// for the upstream; `end`: the client's body is complete. A body that
    /// ends short of its length, or goes past it, is the client's fault.
    pub(in crate::proxy) fn take_decoded(&mut self, data: &[u8], end: bool, to_up: &mut Vec<u8>) -> Result<(), ()> {
        self.last = Instant::now();
        match &mut self.input {
            UploadInput::Done if data.is_empty() => Ok(()),
            UploadInput::Length(rest) if (data.len() as u64) <= *rest => {
                to_up.extend_from_slice(data);
                *rest -= data.len() as u64;
                match (*rest == 0, end) {
                    (true, _) => {
                        self.input = UploadInput::Done;
                        Ok(())
                    }
                    (false, true) => Err(()),
                    (false, false) => Ok(()),
                }
            }
            UploadInput::Frames => {
                if !data.is_empty() {
                    let mut line = [0u8; 18];
                    let l = chunk_header(data.len(), &mut line);
                    to_up.extend_from_slice(&line[..l]);
                    to_up.extend_from_slice(data);
                    to_up.extend_from_slice(CHUNK_END);
                }
                if end {
                    to_up.extend_from_slice(LAST_CHUNK);
                    self.input = UploadInput::Done;
                }
                Ok(())
            }
            _ => Err(()),
        }
    }

    /// Takes body bytes from `data[..n]` into `to_up`, framed for the
    /// upstream; returns how many bytes were body (the rest follows it).
    pub(super) fn take(&mut self, data: &mut [u8], n: usize, to_up: &mut Vec<u8>) -> Result<usize, ()> {
        self.last = Instant::now();
        match &mut self.input {
            UploadInput::Done | UploadInput::Frames => Ok(0),
            UploadInput::Length(rest) => {
                let take = (n as u64).min(*rest) as usize;
                to_up.extend_from_slice(&data[..take]);
                *rest -= take as u64;
                if *rest == 0 {
                    self.input = UploadInput::Done;
                }
                Ok(take)
            }
            UploadInput::Chunked(decoder) => {
                let p = decoder.decode_in_place(data, n).map_err(|e| {
                    debug!(error = %e, "malformed chunked request body");
                })?;
                if p.payload > 0 {
                    let mut line = [0u8; 18];
                    let l = chunk_header(p.payload, &mut line);
                    to_up.extend_from_slice(&line[..l]);
                    to_up.extend_from_slice(&data[..p.payload]);
                    to_up.extend_from_slice(CHUNK_END);
                }
                if p.done {
                    to_up.extend_from_slice(LAST_CHUNK);
                    self.input = UploadInput::Done;
                }
                Ok(p.consumed)
            }
        }
    }
}

#[derive(Clone, Copy)]
pub(in crate::proxy) struct Limits {
    pub response: Duration,
    pub body: Duration,
    /// The request is HEAD: the answer has no body, whatever it says.
    pub head_request: bool,
}

/// An answer's head, parsed and checked, and where its body starts.
struct Head {
    status: StatusCode,
    body: Framing,
    declared: Option<u64>,
    length_unknown: bool,
    keep_alive: bool,
    len: usize,
}

/// Sends the head and the body on `stream`, and reads the answer's head.
pub(in crate::proxy) async fn send<C: ClientSide>(
    mut stream: TcpStream,
    head: &[u8],
    upload: &mut Upload,
    client: &mut C,
    limits: Limits,
    timer: &mut Deadline,
) -> Result<Box<Answered>, Failure> {
    // The head is written from where it is (it is kept for a retry), then
    // body bytes from `to_up`.
    let mut head_sent = 0;
    let mut to_up: Vec<u8> = Vec::new();
    let mut received: Vec<u8> = Vec::new();
    let mut response_deadline: Option<Instant> = None;
    let parsed = std::future::poll_fn(|cx| loop {
        let mut progressed = false;
        // 1. What is queued for the upstream.
        while head_sent < head.len() || !to_up.is_empty() {
            let queued = if head_sent < head.len() {
                &head[head_sent..]
            } else {
                &to_up[..]
            };
            match Pin::new(&mut stream).poll_write(cx, queued) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    if head_sent < head.len() {
                        head_sent += n;
                    } else {
                        to_up.drain(..n);
                    }
                    progressed = true;
                    response_deadline = None;
                }
                Poll::Ready(_) if received.is_empty() => return Poll::Ready(Err(Failure::Stale)),
                Poll::Ready(Ok(_)) => return Poll::Ready(Err(Failure::Upstream("connection closed".into()))),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Failure::Upstream(e.to_string()))),
                Poll::Pending => break,
            }
        }
        // 2. More of the body, once the upstream took what it had.
        if head_sent == head.len() && to_up.is_empty() && !upload.done() {
            match client.poll_body(cx, upload, &mut to_up) {
                Poll::Ready(Ok(())) => progressed = true,
                Poll::Ready(Err(f)) => return Poll::Ready(Err(f)),
                Poll::Pending => {}
            }
        }
        // 3. The answer.
        match read_answer(cx, &mut stream, &mut received, limits.head_request) {
            Poll::Ready(Ok(Some(head))) => return Poll::Ready(Ok(head)),
            Poll::Ready(Ok(None)) => progressed = true,
            Poll::Ready(Err(f)) => return Poll::Ready(Err(f)),
            Poll::Pending => {}
        }
        if progressed {
            continue;
        }
        // 4. Nothing moved: the body timeout while the client owes body
        // bytes, else the response timeout (which also covers an upstream
        // that takes no more of the request).
        let now = Instant::now();
        let due = if head_sent == head.len() && to_up.is_empty() && !upload.done() {
            let at = upload.last + limits.body;
            if now >= at {
                return Poll::Ready(Err(Failure::BodyTimeout));
            }
            at
        } else {
            let at = *response_deadline.get_or_insert(now + limits.response);
            if now >= at {
                return Poll::Ready(Err(Failure::Timeout));
            }
            at
        };
        // The connection's timer: woken at `due` (or earlier, and re-armed).
        if timer.poll(cx, due).is_pending() {
            return Poll::Pending;
        }
    })
    .await?;
    Ok(Box::new(Answered {
        status: parsed.status,
        raw: received,
        head_len: parsed.len,
        body: parsed.body,
        declared: parsed.declared,
        length_unknown: parsed.length_unknown,
        keep_alive: parsed.keep_alive,
        stream,
        resume: None,
    }))
}

/// The client's side of an exchange, by protocol: where the request's
/// body comes from, and how the client is told to send it.
pub(in crate::proxy) trait ClientSide {
    /// Takes the next body bytes the client has and queues them in
    /// `to_up`, framed for the upstream (through `upload`).
    fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        upload: &mut Upload,
        to_up: &mut Vec<u8>,
    ) -> Poll<Result<(), Failure>>;

    /// Tells a client that waits for it (`Expect: 100-continue`) to send
    /// its body; false if it could not be told.
    async fn go_ahead(&mut self, send_timeout: Duration) -> bool;
}

/// Reads what the upstream sent and parses its answer's head when
/// complete; interim (1xx) answers other than 101 are passed over.
/// `Ready(Ok(None))`: bytes came, the head is not complete yet.
fn read_answer(
    cx: &mut Context<'_>,
    stream: &mut TcpStream,
    received: &mut Vec<u8>,
    head_request: bool,
) -> Poll<Result<Option<Head>, Failure>> {
    let read = with_scratch(|buf| {
        let mut rb = ReadBuf::new(&mut buf[..READ_MAX]);
        match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) if received.is_empty() => {
                debug!(error = %e, "upstream connection failed before answering");
                Poll::Ready(Err(Failure::Stale))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(Failure::Upstream(e.to_string()))),
            Poll::Ready(Ok(())) if rb.filled().is_empty() && received.is_empty() => Poll::Ready(Err(Failure::Stale)),
            Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(Err(Failure::Upstream(
                "connection closed in the middle of the response head".into(),
            ))),
            Poll::Ready(Ok(())) => {
                received.extend_from_slice(rb.filled());
                Poll::Ready(Ok(()))
            }
        }
    });
    match read {
        Poll::Pending => return Poll::Pending,
        Poll::Ready(Err(f)) => return Poll::Ready(Err(f)),
        Poll::Ready(Ok(())) => {}
    }
    loop {
        let mut slots = head::header_slots();
        let parsed = match head::parse_response(received, MAX_RESPONSE_HEAD, &mut slots) {
            Ok(None) => return Poll::Ready(Ok(None)),
            Err(e) => return Poll::Ready(Err(Failure::BadResponse(e))),
            Ok(Some(h)) => h,
        };
        if parsed.status < 200 && parsed.status != 101 {
            // 100 Continue, 102, 103: ssegate answers Expect itself and does
            // not relay hints.
            let len = parsed.len;
            received.drain(..len);
            if received.is_empty() {
                return Poll::Ready(Ok(None));
            }
            continue;
        }
        let status = StatusCode::from_u16(parsed.status)
            .map_err(|_| Failure::BadResponse(HeadError::Malformed("invalid status")))?;
        // Field names and values are as `httparse` checked them: tokens,
        // and no CR, LF or NUL (the same rules as `http`'s types).
        let body = parsed.body(head_request);
        let declared = match (body, parsed.framing) {
            (Framing::Empty, Framing::Length(n)) => Some(n),
            _ => None,
        };
        let length_unknown = body == Framing::Empty
            && declared.is_none()
            && matches!(parsed.framing, Framing::Chunked | Framing::UntilClose);
        return Poll::Ready(Ok(Some(Head {
            status,
            body,
            declared,
            length_unknown,
            keep_alive: parsed.keep_alive,
            len: parsed.len,
        })));
    }
}
