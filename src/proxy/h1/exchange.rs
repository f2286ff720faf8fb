//! A routed request on its way upstream, and the head of its answer.
//!
//! The request head is written once, from what ssegate parsed and settled
//! (never the client's bytes), so the upstream always receives framing
//! ssegate itself applies: a request body is forwarded with its
//! Content-Length, or re-chunked from the decoded chunks, with extensions
//! and trailers dropped. The body goes up while the answer is awaited (an
//! upstream may answer before the upload ends); the response-header
//! timeout starts once the whole request is sent, and a client that goes
//! silent mid-body gets 408 after the body timeout.

use super::io::Deadline;
use super::pool;
use super::pump::{Input, Output, Pump, PumpParts};
use super::resume::ResumeRequest;
use super::tunnel::Tunnel;
use super::{with_scratch, HEADROOM, READ_MAX};
use crate::http1::chunked::{chunk_header, ChunkedDecoder, CHUNK_END, LAST_CHUNK};
use crate::http1::head::{self, Framing, HeadError};
use crate::http1::write;
use crate::metrics::UpstreamError;
use crate::model::ResolvedRule;
use crate::proxy::handler::{local_reply, no_endpoint, Routed};
use crate::proxy::headers::{add_forwarded, remove_hop_by_hop, X_ACCEL_BUFFERING};
use crate::proxy::stream_engine::body_mode_of;
use crate::proxy::{Conn, EndpointLoad, Proxy, ProxyBody, StreamSlot};
use http::header::HeaderValue;
use http::{HeaderMap, HeaderName, Response, StatusCode};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, warn, Instrument};

/// Largest upstream response head.
pub(in crate::proxy) const MAX_RESPONSE_HEAD: usize = 128 * 1024;
/// The field a resumed request carries the last event id in.
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
/// Times a request is re-sent because a pooled connection turned out closed.
const STALE_RETRIES: usize = 3;

/// A client's request, parsed and settled.
pub(in crate::proxy) struct ClientRequest {
    pub parts: http::request::Parts,
    pub body: Framing,
    pub expect_continue: bool,
    /// The protocol a bodiless HTTP/1.1 GET asks to switch to (`Upgrade`
    /// with `Connection: upgrade`), passed on to the upstream.
    pub upgrade: Option<HeaderValue>,
}

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
    pub resume: Option<std::sync::Arc<super::resume::ResumeRequest>>,
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
    fn take(&mut self, data: &mut [u8], n: usize, to_up: &mut Vec<u8>) -> Result<usize, ()> {
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

/// What an exchange left to do.
pub(super) enum Exchanged {
    /// The answer is written; whether the connection may serve another request.
    Done(bool),
    /// The answer's head is queued and its body is to be carried.
    Stream(Box<Pump>),
    /// The upstream switched protocols: bytes both ways, then the end.
    Tunnel(Box<Tunnel>),
}

/// A reply of ssegate's own, or an upstream's answer to carry.
pub(in crate::proxy) enum Reply {
    Local(Response<ProxyBody>),
    Upstream(Box<Answered>, SocketAddr, EndpointLoad, Option<StreamSlot>),
    /// The upstream switched protocols, as asked.
    Upgraded(Box<Answered>, SocketAddr, EndpointLoad),
}

impl Proxy {
    /// Sends a routed request upstream and answers the client: a reply of
    /// ssegate's own or an answer without a body is written here; an
    /// answer with a body is returned as the [`Pump`] that carries it, for
    /// the connection to run (so that nothing of this request's setup is
    /// kept while its body streams).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        req: ClientRequest,
        mut routed: Routed,
        io: &mut S,
        carry: &mut Vec<u8>,
        conn: Conn,
        mut close: bool,
        timer: &mut Deadline,
    ) -> Exchanged {
        let head_request = req.parts.method == http::Method::HEAD;
        let http10 = req.parts.version == http::Version::HTTP_10;
        let span = tracing::info_span!("request", route = %routed.target.route, rule = routed.target.rule_index);
        let mut upload = Upload::new(req.body);
        // Boxed: what finding an endpoint and waiting for the answer needs
        // is freed before the body, which may stream for hours, starts.
        let outcome = self
            .call_upstream(
                req,
                &routed,
                &mut upload,
                &mut H1Side {
                    io: &mut *io,
                    carry: &mut *carry,
                },
                conn,
                timer,
            )
            .instrument(span.clone())
            .await;
        // A body the client has not finished sending leaves the connection
        // out of step: it closes after this answer.
        close |= !upload.done();
        let (answer, endpoint, load, slot) = match outcome {
            Reply::Local(mut resp) => {
                let status = resp.status();
                close |= resp.headers().contains_key(http::header::CONNECTION);
                routed.answered(status, resp.headers_mut());
                let sent = match resp.body() {
                    ProxyBody::Local(t) => crate::proxy::handler::local_len(t),
                    ProxyBody::Upstream(_) => 0,
                };
                if let Some(a) = &routed.access {
                    a.log(sent, 0, "local");
                }
                let ok = super::io::write_local(io, resp, head_request, close, self.limits.send_timeout).await;
                return Exchanged::Done(ok && !close);
            }
            Reply::Upstream(answer, endpoint, load, slot) => (answer, endpoint, load, slot),
            Reply::Upgraded(answer, endpoint, load) => {
                routed.answered(StatusCode::SWITCHING_PROTOCOLS, &mut HeaderMap::new());
                if let Some(a) = &mut routed.access {
                    a.endpoint = Some(endpoint);
                }
                debug!(parent: &span, %endpoint, "upstream switched protocols");
                let Answered { raw, stream, .. } = *answer;
                // The upstream's 101 head goes to the client as it came
                // (its Upgrade and Connection fields are the point), with
                // whatever followed it.
                return Exchanged::Tunnel(Box::new(Tunnel::new(
                    stream,
                    std::mem::take(carry),
                    raw,
                    routed.target.settings.timeouts.idle,
                    &self.drain,
                    routed.observer(false),
                    load,
                )));
            }
        };
        let Answered {
            status,
            mut raw,
            head_len,
            body,
            declared,
            length_unknown,
            keep_alive,
            stream,
            resume,
        } = *answer;
        let target = routed.target.clone();
        if let Some(a) = &mut routed.access {
            a.endpoint = Some(endpoint);
        }
        let output = match body {
            Framing::Empty => None,
            Framing::Length(_) => Some(Output::Length),
            Framing::Chunked | Framing::UntilClose if http10 => Some(Output::UntilClose),
            Framing::Chunked | Framing::UntilClose => Some(Output::Chunked),
        };
        close |= output == Some(Output::UntilClose) || http10;
        let client_framing = match (output, body) {
            // No framing field at all: `content-length: 0` would say the
            // resource is empty.
            (None, _) if length_unknown => Framing::UntilClose,
            (None, _) => Framing::Empty,
            (Some(Output::Length), Framing::Length(n)) => Framing::Length(n),
            (Some(Output::Chunked), _) => Framing::Chunked,
            _ => Framing::UntilClose,
        };
        let mut head = Vec::with_capacity(head_len + 64);
        let mode = with_answer_head(&raw[..head_len], &target, |fields, mode| {
            if routed.edits_response() {
                // CORS and header modifiers edit the fields: through a header map.
                let mut headers = answer_fields(fields);
                routed.answered(status, &mut headers);
                write::response_head(&mut head, status, &headers, client_framing, declared, close);
            } else {
                routed.answered(status, &mut HeaderMap::new());
                write::response_head_from_fields(
                    &mut head,
                    status,
                    fields,
                    &["x-accel-buffering"],
                    client_framing,
                    declared,
                    close,
                );
            }
            mode
        });
        debug!(parent: &span, %endpoint, status = status.as_u16(), ?mode, "upstream responded");
        // What is left is the body's start.
        raw.drain(..head_len);
        let leftover = if raw.is_empty() { Vec::new() } else { raw };
        let Some(output) = output else {
            // No body: the head is all there is.
            let observer = routed.observer(false);
            let ok = super::io::write_all_timed(io, &head, self.limits.send_timeout).await;
            observer.finish(0, 0, if ok { "complete" } else { "client_gone" });
            if ok && keep_alive && upload.done() {
                pool::checkin(endpoint, stream);
            }
            drop(load);
            return Exchanged::Done(ok && !close);
        };
        let input = match body {
            Framing::Length(n) => Input::Length(n),
            Framing::Chunked => Input::Chunked(ChunkedDecoder::new()),
            _ => Input::UntilClose,
        };
        let event_stream = mode.is_event_stream();
        let pump = Pump::new(
            stream,
            PumpParts {
                input,
                output,
                mode,
                head,
                pending_in: leftover,
                idle: target.settings.timeouts.idle,
                deadline: target
                    .settings
                    .timeouts
                    .request
                    .map(|t| tokio::time::Instant::from_std(routed.started + t)),
                send_timeout: self.limits.send_timeout,
                upstream_keep_alive: keep_alive && upload.done(),
                observer: routed.observer(event_stream),
                slot: if event_stream { slot } else { None },
                load,
                resume,
            },
            Some(&self.drain),
            endpoint,
            close,
        );
        Exchanged::Stream(Box::new(pump))
    }

    /// Finds an endpoint, sends the request and reads the answer's head;
    /// every failure becomes a reply of ssegate's own.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::proxy) async fn call_upstream<C: ClientSide>(
        &self,
        req: ClientRequest,
        routed: &Routed,
        upload: &mut Upload,
        client: &mut C,
        conn: Conn,
        timer: &mut Deadline,
    ) -> Reply {
        let target = &routed.target;
        let metrics = &routed.metrics;
        let slot = match self.reserve_stream(target) {
            Ok(slot) => slot,
            Err(full) => return Reply::Local(*full),
        };
        let ClientRequest {
            mut parts,
            body,
            expect_continue,
            upgrade,
        } = req;
        // Decided on the headers as they arrived, before `Connection` can
        // name X-Forwarded-For away.
        let forwarded = self.forwarded(&conn, &parts.headers, routed.host.as_deref());
        remove_hop_by_hop(&mut parts.headers);
        parts.headers.remove(http::header::EXPECT);
        let upgrading = upgrade.is_some();
        if let Some(protocol) = upgrade {
            // The one hop-by-hop exchange that is passed on: asked for by
            // the client, answered by the upstream.
            parts
                .headers
                .insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(http::header::UPGRADE, protocol);
        }
        add_forwarded(&mut parts.headers, &forwarded);
        let head_request = parts.method == http::Method::HEAD;
        // A GET on a rule with resume may be sent again with the last id
        // the client received: its head is kept without the client's own.
        let resumable = target.settings.resume.is_some()
            && parts.method == http::Method::GET
            && body == Framing::Empty
            && !upgrading;
        let client_last_id = resumable.then(|| parts.headers.remove(LAST_EVENT_ID)).flatten();
        let mut head = Vec::with_capacity(512);
        let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        write::request_head(&mut head, &parts.method, path, &parts.headers, body);
        drop(parts);
        let mut resume = resumable.then(|| {
            Arc::new(ResumeRequest::new(
                head.clone(),
                target.clone(),
                self.table.clone(),
                self.endpoints.clone(),
                metrics.clone(),
                self.moves.clone(),
            ))
        });
        if let Some(id) = client_last_id {
            head.truncate(head.len() - 2);
            head.extend_from_slice(b"last-event-id: ");
            head.extend_from_slice(id.as_bytes());
            head.extend_from_slice(b"\r\n\r\n");
        }
        let bodyless = upload.done();
        // Only a request without a body can go to a second endpoint: nothing
        // of it has been consumed when the first connect fails.
        let retry_elsewhere = bodyless && target.endpoint_count() > 1;
        let mut avoid = None;
        let mut stale = 0;
        let mut continued = !expect_continue || bodyless;
        loop {
            let endpoint = match self.endpoints.choose(target, avoid) {
                Ok(e) => e,
                Err(unpicked) => return Reply::Local(no_endpoint(&target.route, unpicked)),
            };
            let load = self.endpoints.track(endpoint);
            let (stream, reused) = match pool::checkout(endpoint) {
                Some(s) => (s, true),
                None => match pool::connect(endpoint, target.settings.timeouts.connect).await {
                    Ok(s) => (s, false),
                    Err(e) => {
                        metrics.upstream_error(UpstreamError::Connect);
                        self.endpoints.eject(endpoint);
                        warn!(%endpoint, error = %e, "upstream connect failed; endpoint ejected for a while");
                        if avoid.is_none() && retry_elsewhere {
                            avoid = Some(endpoint);
                            continue;
                        }
                        return Reply::Local(local_reply(
                            StatusCode::BAD_GATEWAY,
                            format!("ssegate: cannot connect to upstream {endpoint}: {e}\n"),
                        ));
                    }
                },
            };
            if !continued {
                // The client waits for a go-ahead before its body.
                continued = true;
                if !client.go_ahead(self.limits.send_timeout).await {
                    return Reply::Local(local_reply(StatusCode::BAD_REQUEST, "ssegate: client went away\n"));
                }
            }
            let limits = Limits {
                response: target.settings.timeouts.response_headers,
                body: self.limits.body_timeout,
                head_request,
            };
            let failure = match send(stream, &head, upload, client, limits, timer).await {
                Ok(answer) => {
                    metrics.ttfb.observe(routed.started.elapsed().as_secs_f64());
                    if answer.status == StatusCode::SWITCHING_PROTOCOLS && upgrading {
                        return Reply::Upgraded(answer, endpoint, load);
                    }
                    if answer.status == StatusCode::SWITCHING_PROTOCOLS {
                        // ssegate asked for no upgrade; a 101 would leave the client
                        // talking an unknown protocol to a connection it cannot use.
                        metrics.upstream_error(UpstreamError::Failed);
                        warn!(%endpoint, "upstream switched protocols without being asked to");
                        return Reply::Local(local_reply(
                            StatusCode::BAD_GATEWAY,
                            format!(
                                "ssegate: upstream {endpoint} answered 101 to a request that asked for no upgrade\n"
                            ),
                        ));
                    }
                    let mut answer = answer;
                    answer.resume = resume.take();
                    return Reply::Upstream(answer, endpoint, load, slot);
                }
                Err(f) => f,
            };
            let reply = match failure {
                Failure::Stale if reused && bodyless && stale < STALE_RETRIES => {
                    stale += 1;
                    continue;
                }
                Failure::Stale => {
                    metrics.upstream_error(UpstreamError::Failed);
                    warn!(%endpoint, "upstream closed the connection before answering");
                    local_reply(
                        StatusCode::BAD_GATEWAY,
                        format!("ssegate: upstream {endpoint} closed the connection before answering\n"),
                    )
                }
                Failure::Timeout => {
                    metrics.upstream_error(UpstreamError::ResponseTimeout);
                    warn!(%endpoint, "upstream response headers timed out");
                    local_reply(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "ssegate: upstream {endpoint} sent no response headers within {:?}\n",
                            target.settings.timeouts.response_headers
                        ),
                    )
                }
                Failure::Upstream(why) => {
                    metrics.upstream_error(UpstreamError::Failed);
                    warn!(%endpoint, error = %why, "upstream request failed");
                    local_reply(
                        StatusCode::BAD_GATEWAY,
                        format!("ssegate: upstream {endpoint} failed: {why}\n"),
                    )
                }
                Failure::BadResponse(e) => {
                    metrics.upstream_error(UpstreamError::Failed);
                    warn!(%endpoint, error = %e, "upstream sent a malformed response head");
                    local_reply(
                        StatusCode::BAD_GATEWAY,
                        format!("ssegate: upstream {endpoint} sent a malformed response: {e}\n"),
                    )
                }
                Failure::ClientBody => {
                    // The client's body broke (bad chunked framing, a cut
                    // connection): its fault, not the upstream's.
                    self.metrics.bad_request("body");
                    let mut resp = local_reply(StatusCode::BAD_REQUEST, "ssegate: malformed request body\n");
                    resp.headers_mut()
                        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                    resp
                }
                Failure::BodyTimeout => self.body_stalled(),
            };
            return Reply::Local(reply);
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

/// An HTTP/1.1 client: its connection, and what was read past its head.
struct H1Side<'a, S> {
    io: &'a mut S,
    carry: &'a mut Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientSide for H1Side<'_, S> {
    fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        upload: &mut Upload,
        to_up: &mut Vec<u8>,
    ) -> Poll<Result<(), Failure>> {
        pull_body(cx, upload, self.io, self.carry, to_up)
    }

    async fn go_ahead(&mut self, send_timeout: Duration) -> bool {
        super::io::write_all_timed(self.io, b"HTTP/1.1 100 Continue\r\n\r\n", send_timeout).await
    }
}

/// Takes the next body bytes the client has (those read ahead with its
/// head first) and queues them for the upstream, framed.
fn pull_body<S: AsyncRead + Unpin>(
    cx: &mut Context<'_>,
    upload: &mut Upload,
    io: &mut S,
    carry: &mut Vec<u8>,
    to_up: &mut Vec<u8>,
) -> Poll<Result<(), Failure>> {
    with_scratch(|buf| {
        let data = &mut buf[HEADROOM..HEADROOM + READ_MAX];
        let n = if !carry.is_empty() {
            let n = carry.len().min(READ_MAX);
            data[..n].copy_from_slice(&carry[..n]);
            carry.drain(..n);
            n
        } else {
            let mut rb = ReadBuf::new(&mut *data);
            match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                // Gone mid-body: the body is incomplete.
                Poll::Ready(Err(_)) => return Poll::Ready(Err(Failure::ClientBody)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Err(Failure::ClientBody)),
                Poll::Ready(Ok(())) => rb.filled().len(),
            }
        };
        let used = upload.take(data, n, to_up).map_err(|()| Failure::ClientBody)?;
        if used < n {
            // What follows the body is the client's next request.
            carry.splice(0..0, data[used..n].iter().copied());
        }
        Poll::Ready(Ok(()))
    })
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

/// Seconds a client is asked to wait when a Route is full.
const FULL_RETRY_AFTER: u32 = 5;

impl Proxy {
    /// The 408 for a request body that stalled past the body timeout,
    /// counted; the connection closes after it (the body's rest is unread).
    pub(super) fn body_stalled(&self) -> Response<ProxyBody> {
        self.metrics.bad_request("body_timeout");
        let mut resp = local_reply(
            StatusCode::REQUEST_TIMEOUT,
            format!("ssegate: the request body stalled for {:?}\n", self.limits.body_timeout),
        );
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }

    /// A place among the Route's `maxConcurrentStreams`, if it limits
    /// them, or the 503 that says it is full. The place is held while the
    /// response headers are awaited, so that a burst of new requests cannot
    /// overshoot; only event streams keep it after.
    pub(super) fn reserve_stream(&self, target: &ResolvedRule) -> Result<Option<StreamSlot>, Box<Response<ProxyBody>>> {
        let Some(max) = target.max_concurrent_streams else {
            return Ok(None);
        };
        match StreamSlot::reserve(self.streams.counter(&target.route), max) {
            Some(slot) => Ok(Some(slot)),
            None => {
                let mut resp = local_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "ssegate: route {} has its maximum of {max} open streams\n",
                        target.route
                    ),
                );
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from(FULL_RETRY_AFTER));
                Err(Box::new(resp))
            }
        }
    }
}
