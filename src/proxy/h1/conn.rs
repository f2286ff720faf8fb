//! One HTTP/1.1 client connection: request heads read and checked, each
//! request admitted (routed, or answered here) and exchanged upstream, and
//! the connection kept alive between requests within its limits:
//! - **header timeout**: from the connection's start, or a new head's
//!   first byte, until the head is complete (slowloris);
//! - **keep-alive timeout**: no request in flight and no byte of a new one;
//! - **head size**: `max_head_bytes` (431 past it), [`MAX_HEADERS`] fields;
//! - the send and body timeouts are kept by the exchange and the pump.
//!
//! Between requests a connection holds no buffer: the head is read into a
//! vector that is freed as soon as the head is parsed, unless the client
//! already sent what follows.
//!
//! [`MAX_HEADERS`]: crate::http1::head::MAX_HEADERS

use super::exchange::{ClientRequest, Exchanged};
use super::io::{write_local, Deadline};
use super::prefixed::Prefixed;
use super::{with_scratch, READ_MAX};
use crate::http1::head::{self, Framing, HeadError, Version};
use crate::proxy::handler::Admitted;
use crate::proxy::{Conn, Proxy};
use http::{Request, StatusCode};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

/// The cleartext HTTP/2 connection preface's first line.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";
/// How long a closing connection is read (and the bytes dropped) after a
/// refusal, so that the refusal is not lost to a reset.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// Serves an HTTP/1.1 connection (plaintext, or TLS after ALPN). With
/// `detect_h2`, a connection that opens with the HTTP/2 preface is handed
/// to hyper's HTTP/2 server instead.
pub(in crate::proxy) async fn serve<S>(
    proxy: Arc<Proxy>,
    mut io: S,
    conn: Conn,
    detect_h2: bool,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut carry: Vec<u8> = Vec::new();
    let mut timer = Deadline::default();
    let mut first = true;
    let started = Instant::now();
    loop {
        // Boxed: the connection's task is only as large as the state it
        // keeps between requests; each request's own is freed after it.
        let next = Box::pin(one_request(
            &proxy,
            &mut io,
            &mut carry,
            first,
            started,
            conn.clone(),
            detect_h2,
            &mut stop,
            &mut timer,
        ))
        .await;
        let keep = match next {
            After::Continue => true,
            After::Stream(pump) => {
                // A stream needs neither the keep-alive timer nor a buffer.
                timer = Deadline::default();
                if carry.is_empty() {
                    carry = Vec::new();
                }
                pump.run(&mut io, &mut carry, &proxy.metrics).await && !*stop.borrow()
            }
            After::Tunnel(tunnel) => {
                timer = Deadline::default();
                tunnel.run(&mut io).await;
                false
            }
            After::Close => false,
            After::Http2 => {
                let io = Prefixed::new(std::mem::take(&mut carry), io);
                Box::pin(crate::proxy::h2::serve(proxy, io, conn, stop)).await;
                return;
            }
        };
        if !keep {
            let _ = io.shutdown().await;
            return;
        }
        first = false;
    }
}

/// What a connection does after a request.
enum After {
    Continue,
    /// An answer's body to carry; its head is queued in the pump.
    Stream(Box<super::pump::Pump>),
    /// An upgraded connection: bytes both ways, then the end.
    Tunnel(Box<super::tunnel::Tunnel>),
    Close,
    /// The HTTP/2 preface came: the connection is hyper's.
    Http2,
}

/// Reads, admits and answers one request.
#[allow(clippy::too_many_arguments)]
async fn one_request<S>(
    proxy: &Arc<Proxy>,
    io: &mut S,
    carry: &mut Vec<u8>,
    first: bool,
    started: Instant,
    conn: Conn,
    detect_h2: bool,
    stop: &mut watch::Receiver<bool>,
    timer: &mut Deadline,
) -> After
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = proxy.limits;
    let parsed = match next_head(io, carry, first, started, proxy, conn.clone(), detect_h2, stop, timer).await {
        NextHead::Request(parsed) => parsed,
        NextHead::Closed => return After::Close,
        NextHead::Http2 => return After::Http2,
    };
    let (req, len, keep_alive) = match parsed {
        Ok(p) => p,
        Err(e) => {
            refuse(proxy, io, &e).await;
            return After::Close;
        }
    };
    carry.drain(..len);
    if carry.is_empty() && carry.capacity() > 0 {
        // A head that came in pieces: hold no buffer while the request runs.
        *carry = Vec::new();
    }
    let close = !keep_alive || req.parts.version == http::Version::HTTP_10 || *stop.borrow();
    let has_body = req.body != Framing::Empty;
    let ClientRequest {
        parts,
        body,
        expect_continue,
        upgrade,
    } = req;
    let mut request = Request::from_parts(parts, ());
    let keep = match proxy.admit_guarded(&mut request, &conn).await {
        Admitted::Reply(resp) => {
            // The body (if any) is not read: the connection ends after this.
            let close = close || has_body || resp.headers().contains_key(http::header::CONNECTION);
            let head_request = request.method() == http::Method::HEAD;
            drop(request);
            let ok = write_local(io, resp, head_request, close, limits.send_timeout).await;
            if close && ok {
                linger(io).await;
            }
            ok && !close
        }
        Admitted::Forward(routed) => {
            let (parts, ()) = request.into_parts();
            let req = ClientRequest {
                parts,
                body,
                expect_continue,
                upgrade,
            };
            match Box::pin(proxy.exchange(req, routed, io, carry, conn, close, timer)).await {
                Exchanged::Done(keep) => keep,
                // Run by the connection, once this request's state is freed.
                Exchanged::Stream(pump) => return After::Stream(pump),
                Exchanged::Tunnel(tunnel) => return After::Tunnel(tunnel),
            }
        }
    };
    if keep && !*stop.borrow() {
        After::Continue
    } else {
        After::Close
    }
}

/// A parsed request, the length of its head, and whether the client
/// keeps the connection.
type Parsed = (ClientRequest, usize, bool);

/// What came next on a connection.
// A return value, moved once per request: not worth a box.
#[allow(clippy::large_enum_variant)]
enum NextHead {
    Request(Result<Parsed, HeadError>),
    /// Closed by the client, a timeout or a drain.
    Closed,
    /// The HTTP/2 preface: the connection is hyper's.
    Http2,
}

/// Waits for the next request head (within the keep-alive timeout, or the
/// header timeout for a new connection), then reads it whole within the
/// header timeout. A head that arrives in one read (the common case) is
/// parsed where it was read, in the thread's scratch buffer; only what
/// follows it, or a head that comes in pieces, is kept in `carry`.
#[allow(clippy::too_many_arguments)]
async fn next_head<S: AsyncRead + Unpin>(
    io: &mut S,
    carry: &mut Vec<u8>,
    first: bool,
    started: Instant,
    proxy: &Proxy,
    conn: Conn,
    detect_h2: bool,
    stop: &mut watch::Receiver<bool>,
    timer: &mut Deadline,
) -> NextHead {
    let limits = proxy.limits;
    let max = limits.max_head_bytes;
    let head_deadline = |first: bool| if first { started } else { Instant::now() } + limits.header_timeout;
    // A head's first byte starts the header timeout.
    let mut head_due = None;
    if !carry.is_empty() {
        if let Some(next) = from_carry(carry, first && detect_h2, max) {
            return next;
        }
        head_due = Some(head_deadline(first));
    }
    let (idle_due, idle_reason) = if first {
        (started + limits.header_timeout, "header_timeout")
    } else {
        (Instant::now() + limits.keepalive_timeout, "keepalive_timeout")
    };
    let mut stopping = std::pin::pin!(stop.wait_for(|s| *s));
    std::future::poll_fn(|cx| loop {
        // A drain closes a connection between requests, not inside a head.
        if head_due.is_none() && stopping.as_mut().poll(cx).is_ready() {
            return Poll::Ready(NextHead::Closed);
        }
        match read_step(cx, io, carry, first && detect_h2, max) {
            Poll::Ready(Step::Next(next)) => return Poll::Ready(next),
            Poll::Ready(Step::More) => {
                head_due.get_or_insert_with(|| head_deadline(first));
            }
            Poll::Pending => {
                let (at, reason) = head_due.map_or((idle_due, idle_reason), |at| (at, "header_timeout"));
                if timer.poll(cx, at).is_ready() {
                    proxy.metrics.connection_closed(reason);
                    debug!(peer = %conn.peer, reason, "closing client connection");
                    return Poll::Ready(NextHead::Closed);
                }
                return Poll::Pending;
            }
        }
    })
    .await
}

/// What one read brought.
#[allow(clippy::large_enum_variant)] // a return value, as `NextHead`
enum Step {
    Next(NextHead),
    /// Part of a head, kept in `carry`.
    More,
}

/// Reads once and parses what it can.
fn read_step<S: AsyncRead + Unpin>(
    cx: &mut Context<'_>,
    io: &mut S,
    carry: &mut Vec<u8>,
    detect_h2: bool,
    max: usize,
) -> Poll<Step> {
    with_scratch(|buf| {
        let mut rb = ReadBuf::new(&mut buf[..READ_MAX]);
        match Pin::new(&mut *io).poll_read(cx, &mut rb) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Step::Next(NextHead::Closed)),
            Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Step::Next(NextHead::Closed)),
            Poll::Ready(Ok(())) => {}
        }
        let data = rb.filled();
        if carry.is_empty() && !(detect_h2 && is_preface_start(data)) {
            return Poll::Ready(match parse(data, max) {
                Ok(Some((req, len, keep_alive))) => {
                    // What follows the head stays for the body or the next request.
                    carry.extend_from_slice(&data[len..]);
                    Step::Next(NextHead::Request(Ok((req, 0, keep_alive))))
                }
                Ok(None) => {
                    carry.extend_from_slice(data);
                    Step::More
                }
                Err(e) => Step::Next(NextHead::Request(Err(e))),
            });
        }
        carry.extend_from_slice(data);
        Poll::Ready(match from_carry(carry, detect_h2, max) {
            Some(next) => Step::Next(next),
            None => Step::More,
        })
    })
}

/// A complete (or refused) head at the start of `carry`, or the HTTP/2
/// preface; `None` while more bytes are needed.
fn from_carry(carry: &[u8], detect_h2: bool, max: usize) -> Option<NextHead> {
    if detect_h2 && is_preface_start(carry) {
        return (carry.len() >= H2_PREFACE.len()).then_some(NextHead::Http2);
    }
    match parse(carry, max) {
        Ok(Some(p)) => Some(NextHead::Request(Ok(p))),
        Ok(None) => None,
        Err(e) => Some(NextHead::Request(Err(e))),
    }
}

fn is_preface_start(data: &[u8]) -> bool {
    H2_PREFACE.starts_with(&data[..data.len().min(H2_PREFACE.len())])
}

/// Parses and checks a request head at the start of `buf`.
fn parse(buf: &[u8], max: usize) -> Result<Option<Parsed>, HeadError> {
    let mut slots = head::header_slots();
    let Some(h) = head::parse_request(buf, max, &mut slots)? else {
        return Ok(None);
    };
    let method = http::Method::from_bytes(h.method.as_bytes()).map_err(|_| HeadError::Malformed("invalid method"))?;
    let uri: http::Uri = h
        .target
        .parse()
        .map_err(|_| HeadError::Malformed("invalid request target"))?;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = match h.version {
        Version::Http10 => http::Version::HTTP_10,
        Version::Http11 => http::Version::HTTP_11,
    };
    let headers = request.headers_mut();
    headers.reserve(h.headers.len());
    for f in h.headers {
        let name =
            http::HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| HeadError::Malformed("invalid header name"))?;
        let value = http::HeaderValue::from_bytes(f.value).map_err(|_| HeadError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    let (parts, ()) = request.into_parts();
    let upgrade = asks_upgrade(&parts, h.body)
        .then(|| parts.headers.get(http::header::UPGRADE).cloned())
        .flatten();
    Ok(Some((
        ClientRequest {
            parts,
            body: h.body,
            expect_continue: h.expect_continue,
            upgrade,
        },
        h.len,
        h.keep_alive,
    )))
}

/// An HTTP/1.1 GET without a body whose `Connection` names `upgrade`.
fn asks_upgrade(parts: &http::request::Parts, body: Framing) -> bool {
    parts.version == http::Version::HTTP_11
        && parts.method == http::Method::GET
        && body == Framing::Empty
        && parts
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
}

/// Answers a head that cannot be served (400, or 431 when too large) and
/// closes: nothing after it on the connection can be trusted.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(proxy: &Proxy, io: &mut S, e: &HeadError) {
    let (status, reason) = match e {
        e if e.is_too_large() => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "head_too_large"),
        HeadError::Malformed(_) => (StatusCode::BAD_REQUEST, "head"),
        _ => (StatusCode::BAD_REQUEST, "framing"),
    };
    proxy.metrics.bad_request(reason);
    debug!(error = %e, "refused a request head");
    let resp = crate::proxy::reply::local_reply(status, format!("ssegate: {e}\n"));
    if write_local(io, resp, false, true, proxy.limits.send_timeout).await {
        linger(io).await;
    }
}

/// Ends the sending side, then reads and drops what the client still
/// sends for a moment, so that closing with unread bytes does not reset
/// the connection before the client has read the answer.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) {
    if io.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = vec![0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's task is allocated once at the size of its future:
    /// everything a request needs lives in boxes that are freed after it,
    /// so an idle connection (or one whose stream is open) pays only this.
    #[tokio::test]
    async fn an_idle_connection_is_small() {
        let proxy = Proxy::new(crate::model::empty_table());
        let (_tx, rx) = watch::channel(false);
        let (io, _peer) = tokio::io::duplex(64);
        let conn = Conn {
            peer: "127.0.0.1:1".parse().unwrap(),
            local_port: 80,
            tls: false,
            gateway_port: None,
            server_name: None,
        };
        {
            let (mut io, _peer) = tokio::io::duplex(64);
            let (mut carry, mut timer) = (Vec::new(), Deadline::default());
            let (_tx, mut rx) = watch::channel(false);
            let req = one_request(
                &proxy,
                &mut io,
                &mut carry,
                true,
                Instant::now(),
                conn.clone(),
                true,
                &mut rx,
                &mut timer,
            );
            // Freed before a body streams; a copy of it moves per request.
            let size = std::mem::size_of_val(&req);
            assert!(size <= 4096, "a request's future is {size} bytes");
        }
        let fut = serve(proxy, io, conn, true, rx);
        let size = std::mem::size_of_val(&fut);
        eprintln!(
            "serve future: {size} bytes; pump: {}",
            std::mem::size_of::<super::super::pump::Pump>()
        );
        assert!(size <= 1024, "the connection future is {size} bytes");
    }
}
