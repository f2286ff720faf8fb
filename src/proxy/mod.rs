//! The data plane: a hyper server that proxies each request with the
//! routing table it started with.

mod access;
mod body;
mod headers;
pub mod sse;
pub mod tls;

pub use access::{AccessRecord, ACCESS_TARGET};
pub use body::{BoxError, DrainSignal, IdleTimeout, ProxyBody, SseLimits, UpstreamBody};
pub use headers::{add_forwarded, remove_hop_by_hop, Forwarded};

use crate::metrics::{Metrics, RouteMetrics, UpstreamError};
use crate::shared_map::SharedMap;

use crate::api::ProxyBuffering;
use crate::model::{normalize_host, SharedTable, Target};
use headers::X_ACCEL_BUFFERING;
use http::header::{HeaderValue, CONTENT_TYPE, HOST};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn, Instrument};

/// The upstream request body: the client's own, or none on a retry.
type UpstreamRequestBody = Either<Incoming, Empty<bytes::Bytes>>;
type UpstreamClient = Client<HttpConnector, UpstreamRequestBody>;

/// How long an endpoint whose connect failed is passed over.
const EJECTION: Duration = Duration::from_secs(10);

/// Per-endpoint open requests and ejections, kept across table swaps.
struct EndpointStates {
    map: SharedMap<SocketAddr, Arc<EndpointState>>,
    epoch: std::time::Instant,
}

#[derive(Default)]
struct EndpointState {
    /// Open requests and streams.
    active: AtomicUsize,
    /// Milliseconds since `epoch` until which the endpoint is passed over.
    ejected_until: std::sync::atomic::AtomicU64,
}

impl EndpointStates {
    fn new() -> Self {
        EndpointStates {
            map: SharedMap::default(),
            epoch: std::time::Instant::now(),
        }
    }

    fn get(&self, e: SocketAddr) -> Arc<EndpointState> {
        self.map.get_or_insert_with(&e, Arc::default)
    }

    fn load(&self, e: SocketAddr) -> usize {
        self.map.peek(&e, |s| s.map_or(0, |s| s.active.load(Ordering::Relaxed)))
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn healthy(&self, e: SocketAddr) -> bool {
        self.map.peek(&e, |s| {
            s.is_none_or(|s| s.ejected_until.load(Ordering::Relaxed) <= self.now_ms())
        })
    }

    fn eject(&self, e: SocketAddr) {
        let until = self.now_ms() + EJECTION.as_millis() as u64;
        self.get(e).ejected_until.store(until, Ordering::Relaxed);
    }

    /// Counts a request on `e` until the returned guard is dropped.
    fn track(&self, e: SocketAddr) -> EndpointLoad {
        let state = self.get(e);
        state.active.fetch_add(1, Ordering::Relaxed);
        EndpointLoad(state)
    }
}

/// One open request or stream on an endpoint, for LeastConnections.
pub struct EndpointLoad(Arc<EndpointState>);

impl Drop for EndpointLoad {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

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
fn upstream_uri(endpoint: SocketAddr, path_and_query: http::uri::PathAndQuery) -> Uri {
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

fn upstream_client(connect_timeout: Duration) -> UpstreamClient {
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

/// Open event streams per Route, kept across table swaps: a swap must not
/// reset the count of streams that are still open.
#[derive(Default)]
struct StreamCounts(SharedMap<Arc<str>, Arc<AtomicUsize>>);

impl StreamCounts {
    fn counter(&self, route: &Arc<str>) -> Arc<AtomicUsize> {
        self.0.get_or_insert_with(route, Arc::default)
    }
}

/// One place among a Route's `maxConcurrentStreams`, given back on drop:
/// when the stream ends, the client leaves, the upstream fails, or a drain
/// ends it.
pub struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    fn reserve(counter: Arc<AtomicUsize>, max: usize) -> Option<StreamSlot> {
        if counter.fetch_add(1, Ordering::AcqRel) >= max {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(StreamSlot(counter))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Data-plane threads, each running a single-threaded tokio runtime, like
/// NGINX's worker processes: a connection and its upstream connections stay
/// on one thread, with no work stealing or cross-thread wake-ups per request.
/// Connections are dealt out in turn by the accept loop.
pub struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `n` threads (at least one). They run until the process exits.
    pub fn start(n: usize) -> std::io::Result<Arc<Workers>> {
        let mut handles = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(rt.handle().clone());
            std::thread::Builder::new()
                .name(format!("ssegate-worker-{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        }
        Ok(Arc::new(Workers {
            handles,
            next: AtomicUsize::new(0),
        }))
    }

    fn pick(&self) -> tokio::runtime::Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].clone()
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}

/// How long a client may take to complete its TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// The client connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub peer: SocketAddr,
    /// The listener's port, for `X-Forwarded-Port`.
    pub local_port: u16,
    pub tls: bool,
}

/// Seconds a client is asked to wait when a Route is full.
const FULL_RETRY_AFTER: u32 = 5;

/// Everything a request handler needs.
pub struct Proxy {
    table: SharedTable,
    /// Data-plane threads that serve accepted connections; `None` serves
    /// them on the runtime that accepted them.
    workers: Option<Arc<Workers>>,
    streams: StreamCounts,
    drain: DrainSignal,
    endpoints: EndpointStates,
    metrics: Arc<Metrics>,
    /// Whether each finished request or stream is logged.
    access_log: bool,
}

impl Proxy {
    /// A proxy with its own metrics and access logging on.
    pub fn new(table: SharedTable) -> Arc<Self> {
        Proxy::with_metrics(table, Arc::new(Metrics::new()), true)
    }

    pub fn with_metrics(table: SharedTable, metrics: Arc<Metrics>, access_log: bool) -> Arc<Self> {
        Arc::new(Proxy {
            table,
            workers: None,
            streams: StreamCounts::default(),
            drain: DrainSignal::default(),
            endpoints: EndpointStates::new(),
            metrics,
            access_log,
        })
    }

    /// Serves accepted connections on `workers` instead of the accepting runtime.
    pub fn with_workers(self: Arc<Self>, workers: Arc<Workers>) -> Arc<Self> {
        let mut proxy = Arc::try_unwrap(self).unwrap_or_else(|_| panic!("with_workers before the proxy is shared"));
        proxy.workers = Some(workers);
        Arc::new(proxy)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Accepts plaintext connections (HTTP/1.1 and cleartext HTTP/2) until
    /// `shutdown` resolves. Then it drains: open event streams end at their
    /// next event boundary, requests in flight finish, and after at most
    /// `drain` it returns regardless.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        drain: Duration,
    ) -> std::io::Result<()> {
        self.serve_with(listener, None, shutdown, drain).await
    }

    /// As [`Proxy::serve`], for TLS: certificates by SNI from the table,
    /// HTTP/2 or HTTP/1.1 by ALPN.
    pub async fn serve_tls(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        drain: Duration,
    ) -> std::io::Result<()> {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(self.table.clone()));
        self.serve_with(listener, Some(acceptor), shutdown, drain).await
    }

    async fn serve_with(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        shutdown: impl Future<Output = ()>,
        drain: Duration,
    ) -> std::io::Result<()> {
        let local_port = listener.local_addr()?.port();
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut shutdown = std::pin::pin!(shutdown);
        let tracker = tokio_util_tracker::Tracker::default();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    };
                    self.metrics.connection_accepted(tls.is_some());
                    let _ = stream.set_nodelay(true);
                    let proxy = self.clone();
                    let stop = stop_rx.clone();
                    let guard = tracker.guard();
                    let tls = tls.clone();
                    let placed = match &self.workers {
                        // Handed over to a data-plane thread, whose reactor takes the socket over.
                        Some(workers) => match stream.into_std() {
                            Ok(std_stream) => Err((workers.pick(), std_stream)),
                            Err(e) => {
                                warn!(error = %e, "cannot hand a connection over");
                                continue;
                            }
                        },
                        None => Ok(stream),
                    };
                    let serve = move |stream: tokio::net::TcpStream| async move {
                        let conn = Conn { peer, local_port, tls: tls.is_some() };
                        match tls {
                            None => proxy.serve_connection(stream, conn, stop).await,
                            // Boxed: the TLS state is large, and plaintext
                            // connections should not carry room for it.
                            Some(acceptor) => Box::pin(async move {
                                match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await {
                                    Ok(Ok(stream)) => proxy.serve_connection(stream, conn, stop).await,
                                    Ok(Err(e)) => {
                                        proxy.metrics.tls_handshake_failed();
                                        debug!(%peer, error = %e, "TLS handshake failed");
                                    }
                                    Err(_) => {
                                        proxy.metrics.tls_handshake_failed();
                                        debug!(%peer, "TLS handshake timed out");
                                    }
                                }
                            })
                            .await,
                        }
                        drop(guard);
                    };
                    match placed {
                        Ok(stream) => {
                            tokio::spawn(serve(stream));
                        }
                        Err((handle, std_stream)) => {
                            handle.spawn(async move {
                                match tokio::net::TcpStream::from_std(std_stream) {
                                    Ok(stream) => serve(stream).await,
                                    Err(e) => warn!(error = %e, "cannot register a connection"),
                                }
                            });
                        }
                    }
                }
            }
        }
        drop(listener);
        info!(
            open = tracker.count(),
            tls = tls.is_some(),
            "draining: no new connections; event streams end at their next boundary"
        );
        self.drain.start();
        let _ = stop_tx.send(true);
        if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
            info!(open = tracker.count(), "drain deadline passed with connections open");
        }
        Ok(())
    }

    async fn serve_connection<S>(self: Arc<Self>, stream: S, conn_info: Conn, mut stop: watch::Receiver<bool>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let peer = conn_info.peer;
        let service = hyper::service::service_fn(move |req| {
            let proxy = self.clone();
            async move { Ok::<_, Infallible>(proxy.handle(req, conn_info).await) }
        });
        let builder = auto::Builder::new(TokioExecutor::new());
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    debug!(%peer, error = %e, "client connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|s| *s) => {}
        }
        conn.as_mut().graceful_shutdown();
        if let Err(e) = conn.await {
            debug!(%peer, error = %e, "client connection ended with an error during drain");
        }
    }

    /// Proxies one request. Never fails: every problem becomes a clear
    /// HTTP error response.
    pub async fn handle(&self, req: Request<Incoming>, conn: Conn) -> Response<ProxyBody> {
        let started = std::time::Instant::now();
        let host_raw = request_host(&req).map(str::to_owned);
        let host = normalize_host(host_raw.as_deref().unwrap_or(""));
        let target = self.table.load().lookup(&host, req.uri().path()).cloned();
        let route: Arc<str> = target
            .as_ref()
            .map_or_else(|| Arc::from(crate::metrics::NO_ROUTE), |t| t.route.clone());
        let metrics = self.metrics.route(&route);
        let mut access = self.access_log.then(|| {
            Box::new(AccessRecord {
                route,
                method: req.method().clone(),
                path: req.uri().path().to_owned(),
                client: conn.peer.ip(),
                started,
                status: 0,
                endpoint: None,
            })
        });
        let mut resp = match target {
            None => local_reply(
                StatusCode::NOT_FOUND,
                format!(
                    "ssegate: no route for host {:?} and path {:?}\n",
                    host,
                    req.uri().path()
                ),
            ),
            Some(target) => {
                let cors = target.cors.clone().map(|policy| {
                    let origin = req.headers().get(http::header::ORIGIN).and_then(|o| o.to_str().ok());
                    (policy, origin.map(str::to_owned))
                });
                let preflight = req.method() == http::Method::OPTIONS
                    && req.headers().contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
                let (mut resp, answered_preflight) = match &cors {
                    Some((policy, Some(origin))) if preflight => {
                        (cors_preflight(&target.route, policy, origin, &req), true)
                    }
                    _ => {
                        let span = tracing::info_span!("request", route = %target.route, rule = target.rule_index);
                        let resp = self
                            .forward(req, target, &metrics, started, conn, host_raw.as_deref())
                            .instrument(span)
                            .await;
                        (resp, false)
                    }
                };
                if let Some((policy, origin)) = cors {
                    if !answered_preflight {
                        apply_cors(&policy, origin.as_deref(), resp.headers_mut());
                    }
                    resp.headers_mut()
                        .append(http::header::VARY, HeaderValue::from_static("Origin"));
                }
                resp
            }
        };
        let status = resp.status().as_u16();
        metrics.request(status);
        if let Some(a) = &mut access {
            a.status = status;
        }
        match resp.body_mut() {
            ProxyBody::Upstream(body) => {
                if let Some(a) = &mut access {
                    a.endpoint = body.endpoint;
                }
                let stream = body.is_event_stream();
                body.observe(access::Observer::new(metrics, access, stream));
            }
            ProxyBody::Local(text) => {
                if let Some(a) = access {
                    a.log(text.as_ref().map_or(0, |t| t.len() as u64), 0, "local");
                }
            }
        }
        resp
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        target: Arc<Target>,
        metrics: &RouteMetrics,
        started: std::time::Instant,
        conn: Conn,
        host: Option<&str>,
    ) -> Response<ProxyBody> {
        // A place is held while the response headers are awaited, so that a
        // burst of new requests cannot overshoot; only event streams keep it.
        let slot = match target.max_streams {
            None => None,
            Some(max) => match StreamSlot::reserve(self.streams.counter(&target.route), max) {
                Some(slot) => Some(slot),
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
                    return resp;
                }
            },
        };
        let (mut parts, body) = req.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        parts.version = http::Version::HTTP_11;
        remove_hop_by_hop(&mut parts.headers);
        add_forwarded(
            &mut parts.headers,
            &Forwarded {
                client_ip: conn.peer.ip(),
                host,
                port: conn.local_port,
                proto: if conn.tls { "https" } else { "http" },
            },
        );
        // Only a request without a body can go to a second endpoint: nothing
        // of it has been consumed when the first connect fails.
        // The headers are copied for that only when there is another endpoint to try.
        let retry = (http_body::Body::is_end_stream(&body) && target.endpoint_count() > 1)
            .then(|| (parts.method.clone(), parts.headers.clone()));
        let mut first = Some(Request::from_parts(parts, Either::Left(body)));
        let mut avoid = None;
        let client = upstream_client(target.timeouts.connect);
        let (endpoint, load, response) = loop {
            let endpoint = match target.choose(|e| self.endpoints.load(e), |e| self.endpoints.healthy(e), avoid) {
                Ok(e) => e,
                Err(why) => {
                    return local_reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("ssegate: route {} has no ready endpoints: {why}\n", target.route),
                    )
                }
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
            match tokio::time::timeout(target.timeouts.response_headers, client.request(upstream_req)).await {
                Err(_) => {
                    metrics.upstream_error(UpstreamError::ResponseTimeout);
                    warn!(%endpoint, "upstream response headers timed out");
                    return local_reply(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "ssegate: upstream {endpoint} sent no response headers within {:?}\n",
                            target.timeouts.response_headers
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
        let (mut parts, body) = response.into_parts();
        let buffer = buffer_for(target.buffering, &parts.headers).then_some(target.buffer_size);
        remove_hop_by_hop(&mut parts.headers);
        parts.headers.remove(&X_ACCEL_BUFFERING);
        debug!(%endpoint, status = parts.status.as_u16(), buffered = buffer.is_some(), "upstream responded");
        let sse = is_event_stream(&parts.headers).then_some(SseLimits {
            heartbeat: target.heartbeat,
            max_stream: target.max_stream,
        });
        let mut body = UpstreamBody::new(body, buffer, target.timeouts.idle, sse);
        body.endpoint = Some(endpoint);
        body.hold_load(load);
        if sse.is_some() {
            body.hold(slot);
            body.end_on_drain(&self.drain);
        }
        Response::from_parts(parts, ProxyBody::Upstream(Box::new(body)))
    }
}

/// Answers a CORS preflight for a Route with a policy: 204 with the
/// allowed methods and headers, or 403 for an origin the policy does not
/// list (the browser then blocks the request).
fn cors_preflight(
    route: &str,
    policy: &crate::api::CorsPolicy,
    origin: &str,
    req: &Request<Incoming>,
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
    let mut resp = Response::new(ProxyBody::Local(None));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let headers = resp.headers_mut();
    insert_all(headers, policy.preflight_headers(origin, requested));
    headers.append(
        http::header::VARY,
        HeaderValue::from_static("Access-Control-Request-Method, Access-Control-Request-Headers"),
    );
    resp
}

/// Puts the Route's CORS headers on a response (from the upstream or
/// ssegate's own), replacing any the upstream sent.
fn apply_cors(policy: &crate::api::CorsPolicy, origin: Option<&str>, headers: &mut HeaderMap) {
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

/// Decides whether a response is coalesced, from the Route's mode and the
/// upstream's headers.
pub fn buffer_for(mode: ProxyBuffering, headers: &HeaderMap) -> bool {
    let accel = headers
        .get(&X_ACCEL_BUFFERING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match (mode, accel.as_deref()) {
        (ProxyBuffering::Disabled, _) => false,
        (_, Some("no")) => false,
        (ProxyBuffering::Enabled, _) => true,
        (ProxyBuffering::Auto, Some("yes")) => true,
        (ProxyBuffering::Auto, _) => !is_event_stream(headers),
    }
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// The host the client asked for: `:authority` (HTTP/2, absolute form)
/// first, then the Host header.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(HOST).and_then(|v| v.to_str().ok()))
}

fn local_reply(status: StatusCode, text: impl Into<bytes::Bytes>) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::text(text));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Counts open connections so a drain can wait for them.
mod tokio_util_tracker {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::sync::Notify;

    #[derive(Default, Clone)]
    pub struct Tracker(Arc<Inner>);

    #[derive(Default)]
    pub struct Inner {
        open: AtomicUsize,
        idle: Notify,
    }

    pub struct Guard(Arc<Inner>);

    impl Tracker {
        pub fn guard(&self) -> Guard {
            self.0.open.fetch_add(1, Ordering::AcqRel);
            Guard(self.0.clone())
        }
        pub fn count(&self) -> usize {
            self.0.open.load(Ordering::Acquire)
        }
        pub async fn wait(&self) {
            loop {
                let notified = self.0.idle.notified();
                if self.count() == 0 {
                    return;
                }
                notified.await;
            }
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
                self.0.idle.notify_waiters();
            }
        }
    }
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
