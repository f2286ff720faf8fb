//! The upstream side: pooled clients per data-plane thread, request URIs,
//! and waiting for response headers.

use super::request_body::{ClientBody, UploadState};
use http::Uri;
use http_body_util::{Either, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// The upstream request body: the client's own, or none (a bodyless
/// request, or a retry).
pub(super) type UpstreamRequestBody = Either<ClientBody, Empty<bytes::Bytes>>;
pub(super) type UpstreamClient = Client<HttpConnector, UpstreamRequestBody>;

thread_local! {
    /// Pooled upstream clients, one per connect timeout in use, per thread.
    /// A pooled connection is driven by a task on the runtime that opened
    /// it, so each data-plane thread keeps its own pool: a request never
    /// waits on another thread to reach its upstream.
    static CLIENTS: std::cell::RefCell<HashMap<Duration, UpstreamClient>> = std::cell::RefCell::default();
}

thread_local! {
    /// `host:port` of each endpoint, formatted and parsed once per thread.
    static AUTHORITIES: std::cell::RefCell<HashMap<SocketAddr, http::uri::Authority>> = std::cell::RefCell::default();
}

/// `http://endpoint/path?query`, built from parts: no formatting or
/// parsing per request.
pub(super) fn upstream_uri(endpoint: SocketAddr, path_and_query: http::uri::PathAndQuery) -> Uri {
    let authority = AUTHORITIES.with(|a| {
        let mut a = a.borrow_mut();
        if a.len() > 4096 {
            // Endpoints come and go; the cache only needs the current ones.
            a.clear();
        }
        a.entry(endpoint)
            .or_insert_with(|| {
                http::uri::Authority::try_from(endpoint.to_string()).expect("a socket address is a valid authority")
            })
            .clone()
    });
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).expect("scheme, authority and path make a valid URI")
}

pub(super) fn upstream_client(connect_timeout: Duration) -> UpstreamClient {
    CLIENTS.with(|c| {
        c.borrow_mut()
            .entry(connect_timeout)
            .or_insert_with(|| new_client(connect_timeout))
            .clone()
    })
}

fn new_client(connect_timeout: Duration) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// Waits for the upstream's response headers. The response timeout starts
/// once the request body (if any) has been sent: a slow upload is the
/// client's business, bounded by the body timeout.
pub(super) async fn wait_response<F: Future>(
    response: F,
    upload: Option<&UploadState>,
    limit: Duration,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut response = std::pin::pin!(response);
    if let Some(upload) = upload {
        tokio::select! {
            biased;
            res = &mut response => return Ok(res),
            _ = upload.finished() => {}
        }
    }
    tokio::time::timeout(limit, response).await
}
