//! Forwarding a routed request: a stream place if the Route limits them,
//! an endpoint by the rule's policy (one retry elsewhere for a bodyless
//! request whose connect failed), the upstream's answer checked, and its
//! body set up to stream, coalesce, or run as an event stream.

use super::handler::{error_chain, local_reply, no_endpoint};
use super::headers::{add_forwarded, remove_hop_by_hop, X_ACCEL_BUFFERING};
use super::request_body::{ClientBody, Upload};
use super::stream_limit::StreamSlot;
use super::upstream::{upstream_client, upstream_uri, wait_response};
use super::{BodyMode, Conn, Proxy, ProxyBody, SseLimits, UpstreamBody};
use crate::api::ProxyBuffering;
use crate::metrics::{RouteMetrics, UpstreamError};
use crate::model::ResolvedRule;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use std::sync::Arc;
use tracing::{debug, warn};

/// Seconds a client is asked to wait when a Route is full.
const FULL_RETRY_AFTER: u32 = 5;

impl Proxy {
    pub(super) async fn forward(
        &self,
        req: Request<Incoming>,
        target: Arc<ResolvedRule>,
        metrics: &RouteMetrics,
        started: std::time::Instant,
        conn: Conn,
        host: Option<&str>,
    ) -> Response<ProxyBody> {
        let slot = match self.reserve_stream(&target) {
            Ok(slot) => slot,
            Err(full) => return *full,
        };
        let (mut parts, body) = req.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        parts.version = http::Version::HTTP_11;
        // Decided on the headers as they arrived, before `Connection` can
        // name X-Forwarded-For away.
        let forwarded = self.forwarded(&conn, &parts.headers, host);
        remove_hop_by_hop(&mut parts.headers);
        add_forwarded(&mut parts.headers, &forwarded);
        // A body goes up wrapped, to learn when (and how) the upload ended.
        let (body, upload) = if http_body::Body::is_end_stream(&body) {
            (Either::Right(Empty::new()), None)
        } else {
            let (body, upload) = ClientBody::new(body, self.limits.body_timeout);
            (Either::Left(body), Some(upload))
        };
        // Only a request without a body can go to a second endpoint: nothing
        // of it has been consumed when the first connect fails.
        // The headers are copied for that only when there is another endpoint to try.
        let retry =
            (upload.is_none() && target.endpoint_count() > 1).then(|| (parts.method.clone(), parts.headers.clone()));
        let mut first = Some(Request::from_parts(parts, body));
        let mut avoid = None;
        let client = upstream_client(target.settings.timeouts.connect);
        let (endpoint, load, response) = loop {
            let endpoint = match self.endpoints.choose(&target, avoid) {
                Ok(e) => e,
                Err(unpicked) => return no_endpoint(&target.route, unpicked),
            };
            let mut upstream_req = match (first.take(), &retry) {
                (Some(req), _) => req,
                (None, Some((method, headers))) => {
                    let mut req = Request::new(Either::Right(Empty::new()));
                    *req.method_mut() = method.clone();
                    *req.headers_mut() = headers.clone();
                    req
                }
                (None, None) => unreachable!("only bodyless requests are retried"),
            };
            *upstream_req.uri_mut() = upstream_uri(endpoint, path_and_query.clone());
            let load = self.endpoints.track(endpoint);
            let response = client.request(upstream_req);
            match wait_response(response, upload.as_deref(), target.settings.timeouts.response_headers).await {
                Err(_) => {
                    metrics.upstream_error(UpstreamError::ResponseTimeout);
                    warn!(%endpoint, "upstream response headers timed out");
                    return local_reply(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "ssegate: upstream {endpoint} sent no response headers within {:?}\n",
                            target.settings.timeouts.response_headers
                        ),
                    );
                }
                Ok(Err(e)) if e.is_connect() => {
                    metrics.upstream_error(UpstreamError::Connect);
                    self.endpoints.eject(endpoint);
                    warn!(%endpoint, error = %error_chain(&e), "upstream connect failed; endpoint ejected for a while");
                    if avoid.is_none() && retry.is_some() {
                        avoid = Some(endpoint);
                        continue;
                    }
                    return local_reply(
                        StatusCode::BAD_GATEWAY,
                        format!("ssegate: cannot connect to upstream {endpoint}: {}\n", error_chain(&e)),
                    );
                }
                Ok(Err(e)) if upload.as_ref().is_some_and(|u| u.outcome() == Upload::Malformed) => {
                    // The client's body broke (bad chunked framing, a cut
                    // connection): its fault, not the upstream's.
                    self.metrics.bad_request("body");
                    debug!(error = %error_chain(&e), "malformed request body");
                    return local_reply(StatusCode::BAD_REQUEST, "ssegate: malformed request body\n");
                }
                Ok(Err(_)) if upload.as_ref().is_some_and(|u| u.outcome() == Upload::TimedOut) => {
                    return self.body_stalled();
                }
                Ok(Err(e)) => {
                    metrics.upstream_error(UpstreamError::Failed);
                    warn!(%endpoint, error = %error_chain(&e), "upstream request failed");
                    return local_reply(
                        StatusCode::BAD_GATEWAY,
                        format!("ssegate: upstream {endpoint} failed: {}\n", error_chain(&e)),
                    );
                }
                Ok(Ok(resp)) => break (endpoint, load, resp),
            }
        };

        metrics.ttfb.observe(started.elapsed().as_secs_f64());
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // ssegate asked for no upgrade; a 101 would leave the client
            // talking an unknown protocol to a connection it cannot use.
            metrics.upstream_error(UpstreamError::Failed);
            warn!(%endpoint, "upstream switched protocols without being asked to");
            return local_reply(
                StatusCode::BAD_GATEWAY,
                format!("ssegate: upstream {endpoint} answered 101 to a request that asked for no upgrade\n"),
            );
        }
        let (mut parts, body) = response.into_parts();
        if parts.headers.contains_key(http::header::TRANSFER_ENCODING) {
            // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and
            // an intermediary must drop the latter. The body was de-chunked;
            // left alone, the length would cut it short.
            parts.headers.remove(http::header::CONTENT_LENGTH);
        }
        let mode = body_mode(&target, &parts.headers);
        remove_hop_by_hop(&mut parts.headers);
        parts.headers.remove(&X_ACCEL_BUFFERING);
        debug!(%endpoint, status = parts.status.as_u16(), ?mode, "upstream responded");
        let deadline = target
            .settings
            .timeouts
            .request
            .map(|t| tokio::time::Instant::from_std(started + t));
        let mut body = UpstreamBody::new(body, mode, target.settings.timeouts.idle, deadline);
        body.endpoint = Some(endpoint);
        body.hold_endpoint_load(load);
        if mode.is_event_stream() {
            body.hold_stream_slot(slot);
            body.end_on_drain(&self.drain);
        }
        Response::from_parts(parts, ProxyBody::Upstream(Box::new(body)))
    }
}

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

/// Decides once how a response body goes to the client.
pub(super) fn body_mode(target: &ResolvedRule, headers: &HeaderMap) -> BodyMode {
    body_mode_of(
        target,
        headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes),
        headers.get(&X_ACCEL_BUFFERING).map(HeaderValue::as_bytes),
    )
}

/// [`body_mode`] from the two fields it depends on, as bytes (the HTTP/1.1
/// path decides without building a header map).
pub(super) fn body_mode_of(target: &ResolvedRule, content_type: Option<&[u8]>, accel: Option<&[u8]>) -> BodyMode {
    let event_stream = is_event_stream_type(content_type);
    if buffer_for_fields(target.settings.buffering, event_stream, accel) {
        BodyMode::Coalesce {
            capacity: target.settings.buffer_size,
            event_stream,
        }
    } else if event_stream {
        BodyMode::EventStream(SseLimits {
            heartbeat: target.settings.heartbeat,
            max_duration: target.settings.max_stream_duration,
        })
    } else {
        BodyMode::Stream
    }
}

/// Decides whether a response is coalesced, from the Route's mode and the
/// upstream's headers.
pub fn buffer_for(mode: ProxyBuffering, headers: &HeaderMap) -> bool {
    buffer_for_fields(
        mode,
        is_event_stream(headers),
        headers.get(&X_ACCEL_BUFFERING).map(HeaderValue::as_bytes),
    )
}

fn buffer_for_fields(mode: ProxyBuffering, event_stream: bool, accel: Option<&[u8]>) -> bool {
    let accel = accel.map(|v| v.trim_ascii());
    let is = |word: &[u8]| accel.is_some_and(|v| v.eq_ignore_ascii_case(word));
    match mode {
        ProxyBuffering::Disabled => false,
        _ if is(b"no") => false,
        ProxyBuffering::Enabled => true,
        ProxyBuffering::Auto if is(b"yes") => true,
        ProxyBuffering::Auto => !event_stream,
    }
}

pub(super) fn is_event_stream(headers: &HeaderMap) -> bool {
    is_event_stream_type(headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes))
}

fn is_event_stream_type(content_type: Option<&[u8]>) -> bool {
    content_type
        .and_then(|v| v.split(|&b| b == b';').next())
        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"text/event-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn buffering_decision_table() {
        use ProxyBuffering::*;
        let sse = headers(&[("content-type", "text/event-stream; charset=utf-8")]);
        let json = headers(&[("content-type", "application/json")]);
        let json_no = headers(&[("content-type", "application/json"), ("x-accel-buffering", "no")]);
        let sse_yes = headers(&[("content-type", "text/event-stream"), ("x-accel-buffering", "yes")]);
        assert!(!buffer_for(Auto, &sse));
        assert!(buffer_for(Auto, &json));
        assert!(!buffer_for(Auto, &json_no));
        assert!(buffer_for(Auto, &sse_yes));
        assert!(buffer_for(Enabled, &sse));
        assert!(!buffer_for(Enabled, &json_no));
        assert!(!buffer_for(Disabled, &json));
        assert!(!buffer_for(Disabled, &sse_yes));
    }
}
