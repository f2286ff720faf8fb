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

use super::body_shell::Input;
use super::io::Deadline;
use super::pool;
use super::pump::{Output, Pump, PumpParts};
use super::resume_request::ResumeRequest;
use super::tunnel::Tunnel;
use super::upstream::{answer_fields, send, with_answer_head, Answered, ClientSide, Failure, Limits, Upload};
use super::{with_scratch, HEADROOM, READ_MAX};
use crate::http1::chunked::ChunkedDecoder;
use crate::http1::head::Framing;
use crate::http1::write;
use crate::metrics::UpstreamError;
use crate::model::ResolvedRule;
use crate::proxy::handler::Routed;
use crate::proxy::headers::{add_forwarded, remove_hop_by_hop};
use crate::proxy::reply::{local_len, local_reply, no_endpoint};
use crate::proxy::{Conn, EndpointLoad, Proxy, ProxyBody, StreamSlot};
use http::header::HeaderValue;
use http::{HeaderMap, HeaderName, Response, StatusCode};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::{debug, warn, Instrument};

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
                    ProxyBody::Local(t) => local_len(t),
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
            Arc::new(
                ResumeRequest::new(
                    head.clone(),
                    target.clone(),
                    self.table.clone(),
                    self.endpoints.clone(),
                    metrics.clone(),
                    self.moves.clone(),
                )
                .with_client_last_id(client_last_id.as_ref().map(HeaderValue::as_bytes)),
            )
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
