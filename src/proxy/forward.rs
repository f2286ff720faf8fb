//! A routed request that came over HTTP/2, sent upstream through the one
//! upstream exchange (`h1/exchange.rs`: a stream place, an endpoint by the
//! rule's policy, ejection, the retry of a bodyless request, every failure
//! mapped to a reply), as HTTP/1.1 requests are. The answer's head becomes
//! an HTTP/2 response, whose body [`UpstreamBody`] carries with the stream
//! engine.

use super::body::{UpstreamBody, UpstreamParts};
use super::h1::body_shell::Input;
use super::h1::exchange::{ClientRequest, Reply};
use super::h1::io::Deadline;
use super::h1::upstream::{answer_fields, with_answer_head, Answered, ClientSide, Failure, Upload};
use super::handler::Routed;
use super::reply::local_reply;

use super::stream_engine::EngineSettings;
use super::{Conn, EndpointLoad, Proxy, ProxyBody, StreamSlot};
use crate::http1::chunked::ChunkedDecoder;
use crate::http1::head::Framing;
use http::header::{HeaderValue, CONTENT_LENGTH, COOKIE};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::debug;

impl Proxy {
    /// Sends a request that came over HTTP/2 upstream and makes its
    /// answer (or ssegate's own reply) an HTTP/2 response.
    pub(super) async fn forward<B>(&self, req: Request<B>, routed: &Routed, conn: Conn) -> Response<ProxyBody>
    where
        B: Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    {
        let (mut parts, body) = req.into_parts();
        // HTTP/2 has no framing fields: a body of a declared length goes up
        // with it, any other body chunked.
        let framing = if http_body::Body::is_end_stream(&body) {
            Framing::Empty
        } else {
            match declared_length(&parts.headers) {
                Some(n) => Framing::Length(n),
                None => Framing::Chunked,
            }
        };
        join_cookies(&mut parts.headers);
        parts.version = http::Version::HTTP_11;
        let mut upload = Upload::decoded(framing);
        let req = ClientRequest {
            parts,
            body: framing,
            // HTTP/2 clients send their body without waiting for a go-ahead.
            expect_continue: false,
            // And cannot ask to switch protocols (RFC 9113, 8.6).
            upgrade: None,
        };
        let mut side = H2Side { body };
        let mut timer = Deadline::default();
        let reply = self
            .call_upstream(req, routed, &mut upload, &mut side, conn, &mut timer)
            .await;
        match reply {
            Reply::Local(resp) => resp,
            Reply::Upstream(answer, endpoint, load, slot) => {
                self.h2_answer(*answer, endpoint, load, slot, routed, upload.done())
            }
            // Only a request that asked to switch protocols is upgraded.
            Reply::Upgraded(_, endpoint, _) => local_reply(
                StatusCode::BAD_GATEWAY,
                format!("ssegate: upstream {endpoint} answered 101 to a request that asked for no upgrade\n"),
            ),
        }
    }

    /// The upstream's answer as an HTTP/2 response: its fields without the
    /// hop-by-hop ones and HTTP/1.1's framing, and its body to carry.
    fn h2_answer(
        &self,
        answer: Answered,
        endpoint: SocketAddr,
        load: EndpointLoad,
        slot: Option<StreamSlot>,
        routed: &Routed,
        upload_done: bool,
    ) -> Response<ProxyBody> {
        let Answered {
            status,
            mut raw,
            head_len,
            body,
            declared,
            keep_alive,
            stream,
            resume,
            ..
        } = answer;
        let target = &routed.target;
        let (mut headers, mode) =
            with_answer_head(&raw[..head_len], target, |fields, mode| (answer_fields(fields), mode));
        headers.remove(CONTENT_LENGTH);
        let length = match body {
            Framing::Length(n) => Some(n),
            Framing::Empty => declared,
            Framing::Chunked | Framing::UntilClose => None,
        };
        if let Some(n) = length {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
        }
        debug!(%endpoint, status = status.as_u16(), ?mode, "upstream responded");
        // What is left is the body's start.
        raw.drain(..head_len);
        let out_of_step = body == Framing::Empty && !raw.is_empty();
        let input = match body {
            Framing::Empty => {
                raw = Vec::new();
                Input::Length(0)
            }
            Framing::Length(n) => Input::Length(n),
            Framing::Chunked => Input::Chunked(ChunkedDecoder::new()),
            Framing::UntilClose => Input::UntilClose,
        };
        let event_stream = mode.is_event_stream();
        let engine = EngineSettings {
            mode,
            // A promised length cannot end early or take heartbeats.
            open_ended: !matches!(body, Framing::Length(_)),
            idle: target.settings.timeouts.idle,
            deadline: target
                .settings
                .timeouts
                .request
                .map(|t| tokio::time::Instant::from_std(routed.started + t)),
            send_timeout: self.limits.send_timeout,
            resume: resume.as_ref().and_then(|r| r.settings()),
        };
        let body = UpstreamBody::new(
            stream,
            UpstreamParts {
                input,
                pending_in: if raw.is_empty() { Vec::new() } else { raw },
                engine,
                reusable: keep_alive && upload_done && !out_of_step,
                slot: if event_stream { slot } else { None },
                load,
                endpoint,
                resume,
            },
            &self.drain,
        );
        let mut resp = Response::new(ProxyBody::Upstream(Box::new(body)));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp
    }
}

/// The request's `content-length`, when it is one number (the `h2` crate
/// holds DATA frames to it).
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()?.trim().parse().ok()
}

/// HTTP/2 lets a client split `cookie` into one field per pair; an
/// HTTP/1.1 upstream expects one field, the pairs joined by `; ` (RFC 9113,
/// 8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(COOKIE).iter().nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for value in headers.get_all(COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, value);
    }
}

/// An HTTP/2 client's side of the exchange: its request body comes as
/// DATA frames, already unframed.
struct H2Side<B> {
    body: B,
}

impl<B: Body<Data = bytes::Bytes> + Unpin> ClientSide for H2Side<B> {
    fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        upload: &mut Upload,
        to_up: &mut Vec<u8>,
    ) -> Poll<Result<(), Failure>> {
        loop {
            let taken = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => upload.take_decoded(&[], true, to_up),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let end = http_body::Body::is_end_stream(&self.body);
                        upload.take_decoded(&data, end, to_up)
                    }
                    // Trailers are not passed on.
                    Err(_) => continue,
                },
                // Reset by the client mid-body.
                Poll::Ready(Some(Err(_))) => Err(()),
            };
            return Poll::Ready(taken.map_err(|()| Failure::ClientBody));
        }
    }

    async fn go_ahead(&mut self, _send_timeout: Duration) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_split_over_fields_are_joined_for_the_upstream() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1"));
        h.append(COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(COOKIE).iter().collect::<Vec<_>>(), ["a=1; b=2"]);
    }

    #[test]
    fn only_one_plain_content_length_is_taken() {
        let mut h = HeaderMap::new();
        assert_eq!(declared_length(&h), None);
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert_eq!(declared_length(&h), Some(12));
        h.append(CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert_eq!(declared_length(&h), None, "two fields: sent chunked");
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("-1"));
        assert_eq!(declared_length(&h), None);
    }
}
