//! Replies ssegate makes itself: a plain-text answer, the one for a rule
//! with no endpoint to pick, and their size for the access log.

use super::ProxyBody;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};

/// A plain-text reply of ssegate's own.
pub(super) fn local_reply(status: StatusCode, text: impl Into<bytes::Bytes>) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::text(text));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// The answer when no endpoint could be picked: 503 when the backends are
/// down, 500 when the route itself cannot be served (an HTTPRoute's
/// unresolved backend).
pub(super) fn no_endpoint(route: &str, unpicked: crate::model::Unpicked<'_>) -> Response<ProxyBody> {
    if unpicked.internal {
        local_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "ssegate: route {route} has a backend that cannot be used: {}\n",
                unpicked.why
            ),
        )
    } else {
        local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("ssegate: route {route} has no ready endpoints: {}\n", unpicked.why),
        )
    }
}

/// Bytes of a reply ssegate wrote itself.
pub(super) fn local_len(text: &Option<bytes::Bytes>) -> u64 {
    text.as_ref().map_or(0, |t| t.len() as u64)
}
