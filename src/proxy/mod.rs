//! The data plane: a hyper server that proxies each request with the
//! routing table it started with.

mod access;
mod authority;
mod body;
mod client_conn;
mod headers;
pub mod normalize;
mod request_body;
pub mod sse;
pub mod tls;

pub use access::{AccessRecord, ACCESS_TARGET};
pub use authority::{request_authority, AuthorityError};
pub use body::{BoxError, DrainSignal, IdleTimeout, ProxyBody, SseLimits, UpstreamBody};
pub use client_conn::ClientLimits;
pub use headers::{add_forwarded, remove_hop_by_hop, Forwarded};

use crate::listener::AcceptErrors;
use crate::metrics::{Metrics, RouteMetrics, UpstreamError};
use crate::shared_map::SharedMap;

use crate::api::ProxyBuffering;
use crate::model::{normalize_host, SharedTable, Target};
use client_conn::{Activity, InFlight, Watchdog, Watched};
use headers::X_ACCEL_BUFFERING;
use http::header::{HeaderValue, CONTENT_TYPE, HOST};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use normalize::normalize_path;
use request_body::{ClientBody, Upload};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn, Instrument};

/// The upstream request body: the client's own, or none (a bodyless
/// request, or a retry).
type UpstreamRequestBody = Either<ClientBody, Empty<bytes::Bytes>>;
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

/// Which HTTP a connection speaks.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    /// Cleartext: HTTP/2 by its preface, else HTTP/1.1.
    Detect,
    /// As agreed by ALPN on TLS.
    Http1,
    Http2,
}

/// What ended the first phase of serving a connection.
enum Next<E> {
    Done(Result<(), E>),
    Stop,
    Expired(client_conn::Expired),
}

/// A response body that keeps its request counted as in flight (so the
/// connection is not idle) until the body is done or dropped.
pub struct Counted {
    body: ProxyBody,
    _in_flight: InFlight,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
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
    limits: ClientLimits,
    /// One permit per open client connection, over every listener: when
    /// none is left, accepting waits (the kernel's backlog holds newcomers)
    /// and the descriptors kept back serve the admin port.
    connections: Arc<tokio::sync::Semaphore>,
}

/// Builds a [`Proxy`]: the table is required, the rest has defaults
/// (fresh metrics, access log on, default limits, no worker threads).
pub struct ProxyBuilder {
    table: SharedTable,
    metrics: Option<Arc<Metrics>>,
    access_log: bool,
    workers: Option<Arc<Workers>>,
    limits: ClientLimits,
}

impl ProxyBuilder {
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn access_log(mut self, on: bool) -> Self {
        self.access_log = on;
        self
    }

    /// Serves accepted connections on `workers` instead of the accepting runtime.
    pub fn workers(mut self, workers: Arc<Workers>) -> Self {
        self.workers = Some(workers);
        self
    }

    pub fn limits(mut self, limits: ClientLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn build(self) -> Arc<Proxy> {
        Arc::new(Proxy {
            table: self.table,
            workers: self.workers,
            streams: StreamCounts::default(),
            drain: DrainSignal::default(),
            endpoints: EndpointStates::new(),
            metrics: self.metrics.unwrap_or_default(),
            access_log: self.access_log,
            connections: Arc::new(tokio::sync::Semaphore::new(self.limits.max_connections.max(1))),
            limits: self.limits,
        })
    }
}

impl Proxy {
    /// A proxy with its own metrics, access logging on and default limits.
    pub fn new(table: SharedTable) -> Arc<Self> {
        Proxy::builder(table).build()
    }

    pub fn builder(table: SharedTable) -> ProxyBuilder {
        ProxyBuilder {
            table,
            metrics: None,
            access_log: true,
            workers: None,
            limits: ClientLimits::default(),
        }
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
        let mut errors = AcceptErrors::new(if tls.is_some() { "https" } else { "http" });
        loop {
            // A permit first: at the connection limit, wait for one to close.
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                permit = self.connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => {
                            errors.succeeded();
                            a
                        }
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            let wait = errors.failed(&e, &self.metrics);
                            tokio::time::sleep(wait).await;
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
                            None => proxy.serve_connection(stream, conn, Protocol::Detect, stop).await,
                            // Boxed: the TLS state is large, and plaintext
                            // connections should not carry room for it.
                            Some(acceptor) => Box::pin(async move {
                                match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await {
                                    Ok(Ok(stream)) => {
                                        // Serve what ALPN agreed on, and nothing else.
                                        let protocol = match stream.get_ref().1.alpn_protocol() {
                                            Some(b"h2") => Protocol::Http2,
                                            _ => Protocol::Http1,
                                        };
                                        proxy.serve_connection(stream, conn, protocol, stop).await
                                    }
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
                        drop(permit);
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

    async fn serve_connection<S>(
        self: Arc<Self>,
        stream: S,
        conn_info: Conn,
        protocol: Protocol,
        mut stop: watch::Receiver<bool>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let peer = conn_info.peer;
        let limits = self.limits;
        let metrics = self.metrics.clone();
        let activity = Activity::new();
        let requests = activity.clone();
        let service = hyper::service::service_fn(move |req| {
            let proxy = self.clone();
            let in_flight = requests.begin();
            async move {
                let resp = proxy.handle(req, conn_info).await;
                Ok::<_, Infallible>(resp.map(|body| Counted {
                    body,
                    _in_flight: in_flight,
                }))
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // The read buffer holds at most one request head; a longer head gets 431.
        builder.http1().max_buf_size(limits.max_head_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(limits.h2_ping_interval)
            .keep_alive_timeout(limits.h2_ping_timeout)
            .max_header_list_size(limits.max_head_bytes.try_into().unwrap_or(u32::MAX));
        let builder = match protocol {
            Protocol::Detect => builder,
            Protocol::Http1 => builder.http1_only(),
            Protocol::Http2 => builder.http2_only(),
        };
        let conn = builder.serve_connection(TokioIo::new(Watched::new(stream, activity.clone())), service);
        let mut conn = std::pin::pin!(conn);
        let mut watchdog = Watchdog::new(activity, limits);
        let next = {
            let mut stopping = std::pin::pin!(stop.wait_for(|s| *s));
            std::future::poll_fn(|cx| {
                if let Poll::Ready(res) = conn.as_mut().poll(cx) {
                    return Poll::Ready(Next::Done(res));
                }
                if stopping.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Next::Stop);
                }
                watchdog.poll_expired(cx).map(Next::Expired)
            })
            .await
        };
        match next {
            Next::Done(res) => {
                if let Err(e) = res {
                    debug!(%peer, error = %e, "client connection ended with an error");
                }
                return;
            }
            Next::Expired(why) => {
                metrics.connection_closed(why.as_str());
                debug!(%peer, reason = why.as_str(), "closing client connection");
                if why != client_conn::Expired::KeepAlive {
                    return; // dropped: the socket closes now
                }
                // Idle: HTTP/1.1 closes at once, HTTP/2 says GOAWAY first.
            }
            Next::Stop => {}
        }
        conn.as_mut().graceful_shutdown();
        // Requests in flight finish (event streams end at their next event
        // boundary); the drain deadline bounds the wait for a stop, the
        // header timeout the wait for an HTTP/2 GOAWAY to go out.
        let res = match next {
            Next::Stop => Some(conn.await),
            _ => tokio::time::timeout(limits.header_timeout, conn).await.ok(),
        };
        if let Some(Err(e)) = res {
            debug!(%peer, error = %e, "client connection ended with an error while closing");
        }
    }

    /// Proxies one request. Never fails: every problem becomes a clear
    /// HTTP error response.
    pub async fn handle(&self, mut req: Request<Incoming>, conn: Conn) -> Response<ProxyBody> {
        let started = std::time::Instant::now();
        if let Err(refusal) = self.settle_target(&mut req) {
            self.metrics.bad_request(refusal.reason);
            let resp = refusal.into_response();
            let status = resp.status().as_u16();
            self.metrics.route(&Arc::from(crate::metrics::NO_ROUTE)).request(status);
            if self.access_log {
                let text_len = match resp.body() {
                    ProxyBody::Local(t) => t.as_ref().map_or(0, |t| t.len() as u64),
                    ProxyBody::Upstream(_) => 0,
                };
                AccessRecord {
                    route: Arc::from(crate::metrics::NO_ROUTE),
                    method: req.method().clone(),
                    path: req.uri().path().to_owned(),
                    client: conn.peer.ip(),
                    started,
                    status,
                    endpoint: None,
                }
                .log(text_len, 0, "refused");
            }
            return resp;
        }
        // From here on, Host holds the one authority the request names.
        let host_raw = req.headers().get(HOST).and_then(|v| v.to_str().ok()).map(str::to_owned);
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

    /// Settles what the request is for before it is routed: one authority
    /// (written to `Host`, which is what the upstream will see) and a
    /// normalised path (written to the URI, which is what the upstream will
    /// be asked for). Refuses, with the metric reason and a reply, what
    /// cannot be settled.
    fn settle_target(&self, req: &mut Request<Incoming>) -> Result<(), Refusal> {
        if req.method() == http::Method::CONNECT {
            return Err(Refusal {
                reason: "method",
                status: StatusCode::METHOD_NOT_ALLOWED,
                message: "CONNECT is not supported: ssegate is a reverse proxy".into(),
            });
        }
        let authority = match request_authority(req) {
            Ok(a) => a.map(HeaderValue::from_str),
            Err(e) => return Err(Refusal::bad("host", e.to_string())),
        };
        let authority = match authority {
            Some(Ok(v)) => Some(v),
            None => None,
            Some(Err(_)) => unreachable!("a valid authority is a valid header value"),
        };
        let path = match normalize_path(req.uri().path(), self.limits.encoded_slashes) {
            Ok(std::borrow::Cow::Borrowed(_)) => None,
            Ok(std::borrow::Cow::Owned(p)) => Some(p),
            Err(e) => return Err(Refusal::bad("path", e.to_string())),
        };
        if let Some(mut path) = path {
            if let Some(q) = req.uri().query() {
                path.push('?');
                path.push_str(q);
            }
            match http::uri::PathAndQuery::try_from(path) {
                Ok(pq) => *req.uri_mut() = Uri::from(pq),
                Err(_) => return Err(Refusal::bad("path", "invalid request path".into())),
            }
        } else if req.uri().authority().is_some() {
            // Absolute form: the authority now lives in Host alone.
            let pq = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
            *req.uri_mut() = Uri::from(pq);
        }
        if let Some(v) = authority {
            req.headers_mut().insert(HOST, v);
        }
        Ok(())
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
            let response = client.request(upstream_req);
            match wait_response(response, upload.as_deref(), target.timeouts.response_headers).await {
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
                Ok(Err(e)) if upload.as_ref().is_some_and(|u| u.outcome() == Upload::Malformed) => {
                    // The client's body broke (bad chunked framing, a cut
                    // connection): its fault, not the upstream's.
                    self.metrics.bad_request("body");
                    debug!(error = %error_chain(&e), "malformed request body");
                    return local_reply(StatusCode::BAD_REQUEST, "ssegate: malformed request body\n");
                }
                Ok(Err(_)) if upload.as_ref().is_some_and(|u| u.outcome() == Upload::TimedOut) => {
                    self.metrics.bad_request("body_timeout");
                    let mut resp = local_reply(
                        StatusCode::REQUEST_TIMEOUT,
                        format!("ssegate: the request body stalled for {:?}\n", self.limits.body_timeout),
                    );
                    resp.headers_mut()
                        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                    return resp;
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

/// A request refused before routing, as the client's fault.
struct Refusal {
    /// The `reason` label of `ssegate_bad_requests_total`.
    reason: &'static str,
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn bad(reason: &'static str, message: String) -> Self {
        Refusal {
            reason,
            status: StatusCode::BAD_REQUEST,
            message,
        }
    }

    fn into_response(self) -> Response<ProxyBody> {
        let mut resp = local_reply(self.status, format!("ssegate: {}\n", self.message));
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut().insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        resp
    }
}

/// Waits for the upstream's response headers. The response timeout starts
/// once the request body (if any) has been sent: a slow upload is the
/// client's business, bounded by the body timeout.
async fn wait_response<F: Future>(
    response: F,
    upload: Option<&request_body::UploadState>,
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
