//! A Route's CORS policy applied to requests: preflights answered here,
//! response headers set on whatever goes back. The decisions themselves are
//! pure code in `api::cors`.

use super::body::ProxyBody;
use super::reply::local_reply;
use http::header::HeaderValue;
use http::{HeaderMap, Request, Response, StatusCode};

/// Answers a CORS preflight for a Route with a policy: 204 with the
/// allowed methods and headers, or 403 for an origin the policy does not
/// list (the browser then blocks the request).
pub(super) fn cors_preflight<B>(
    route: &str,
    policy: &crate::api::CorsPolicy,
    origin: &str,
    req: &Request<B>,
) -> Response<ProxyBody> {
    if !policy.allows(origin) {
        return local_reply(
            StatusCode::FORBIDDEN,
            format!("ssegate: origin {origin:?} is not allowed by the CORS policy of route {route}\n"),
        );
    }
    let requested = req
        .headers()
        .get(http::header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok());
    let method = req
        .headers()
        .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok());
    let mut resp = Response::new(ProxyBody::Local(None));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let headers = resp.headers_mut();
    insert_all(headers, policy.preflight_headers(origin, requested, method));
    headers.append(
        http::header::VARY,
        HeaderValue::from_static("Access-Control-Request-Method, Access-Control-Request-Headers"),
    );
    resp
}

/// Puts the Route's CORS headers on a response (from the upstream or
/// ssegate's own), replacing any the upstream sent.
pub(super) fn apply_cors(policy: &crate::api::CorsPolicy, origin: Option<&str>, headers: &mut HeaderMap) {
    let upstream_cors: Vec<http::HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-allow-") || k.as_str() == "access-control-expose-headers")
        .cloned()
        .collect();
    for k in upstream_cors {
        headers.remove(k);
    }
    if let Some(origin) = origin.filter(|o| policy.allows(o)) {
        insert_all(headers, policy.response_headers(origin));
    }
}

/// Sets each CORS header; a value that is not a valid header value (an
/// origin echoed from a strange request) is left out.
fn insert_all(headers: &mut HeaderMap, pairs: crate::api::CorsHeaders) {
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}
