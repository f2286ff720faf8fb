//! Shared test fixtures: a scriptable upstream that records when it emits
//! each chunk, an in-process ssegate fed from a temporary folder, and an SSE
//! client that records when each event arrives.
#![allow(dead_code)]

pub mod auth_server;
pub mod cluster;
pub mod netns;
pub mod node;
pub mod process;
pub mod raw;
pub mod tls;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use ssegate::apply::Applier;
use ssegate::model::empty_table;
use ssegate::proxy::Proxy;
use ssegate::sources::file::{reload, FolderSource};
use ssegate::status::LogStatus;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What a test upstream records.
#[derive(Default)]
pub struct Journal {
    /// Emit instants per `tag` query value.
    pub emits: HashMap<String, Vec<Instant>>,
    /// Tags whose stream saw its client (the proxy) go away.
    pub closed: HashMap<String, Instant>,
    /// Request headers per tag.
    pub headers: HashMap<String, http::HeaderMap>,
}

/// A scriptable upstream. Paths:
/// - `/sse?tag=&n=&every=&size=&split=` SSE events; `n=0` streams until the
///   client goes; `split=MS` sends each event in two frames, MS apart.
/// - `/json?tag=&n=&every=` a JSON array in n chunks.
/// - `/slow?delay=` headers after `delay`.
/// - `/stall?tag=` one event, then silence.
/// - anything else: `upstream <id>` as text.
///
/// `accel=yes|no` adds `X-Accel-Buffering`; `hop=1` adds hop-by-hop headers;
/// `cors=1` adds the upstream's own CORS headers.
pub struct Upstream {
    pub addr: SocketAddr,
    pub id: String,
    pub journal: Arc<Mutex<Journal>>,
}

impl Upstream {
    pub async fn start(id: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let journal = Arc::new(Mutex::new(Journal::default()));
        let (j, name) = (journal.clone(), id.to_owned());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (j, name) = (j.clone(), name.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (j, name) = (j.clone(), name.clone());
                        async move { Ok::<_, Infallible>(respond(req, j, name).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            id: id.to_owned(),
            journal,
        }
    }

    pub fn emits(&self, tag: &str) -> Vec<Instant> {
        self.journal.lock().unwrap().emits.get(tag).cloned().unwrap_or_default()
    }

    pub fn closed(&self, tag: &str) -> Option<Instant> {
        self.journal.lock().unwrap().closed.get(tag).copied()
    }

    pub fn headers(&self, tag: &str) -> http::HeaderMap {
        self.journal
            .lock()
            .unwrap()
            .headers
            .get(tag)
            .cloned()
            .unwrap_or_default()
    }
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Notes that the upstream emitted a chunk for `tag` now.
fn record_emit(journal: &Mutex<Journal>, tag: &str) {
    journal
        .lock()
        .unwrap()
        .emits
        .entry(tag.to_owned())
        .or_default()
        .push(Instant::now());
}

/// Sends `chunks` through a channel body, recording each emit time; stops
/// and records `closed` when the receiving side is gone.
fn channel_body(
    journal: Arc<Mutex<Journal>>,
    tag: String,
    chunks: Vec<Bytes>,
    every: Duration,
    forever: bool,
    split: Option<Duration>,
) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    tokio::spawn(async move {
        let mut i = 0usize;
        loop {
            let chunk = if i < chunks.len() {
                chunks[i].clone()
            } else if forever {
                Bytes::from(format!("id: {}\ndata: tick\n\n", i + 1))
            } else {
                break;
            };
            if i > 0 {
                // Notice a departed client (the proxy closing this
                // connection) even while silent.
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = tx.closed() => {
                        journal.lock().unwrap().closed.insert(tag.clone(), Instant::now());
                        return;
                    }
                }
            }
            record_emit(&journal, &tag);
            let frames = match split {
                // Half an event, a pause, the rest: a proxy that ends a
                // stream between the two leaves a torn event behind.
                Some(_) if chunk.len() > 1 => vec![chunk.slice(..chunk.len() / 2), chunk.slice(chunk.len() / 2..)],
                _ => vec![chunk],
            };
            for (n, frame) in frames.into_iter().enumerate() {
                if n > 0 {
                    tokio::select! {
                        _ = tokio::time::sleep(split.unwrap_or_default()) => {}
                        _ = tx.closed() => {
                            journal.lock().unwrap().closed.insert(tag.clone(), Instant::now());
                            return;
                        }
                    }
                }
                if tx.send(Ok(Frame::data(frame))).await.is_err() {
                    journal.lock().unwrap().closed.insert(tag.clone(), Instant::now());
                    return;
                }
            }
            i += 1;
        }
        // Hold the body open a moment after the last chunk? No: end it.
    });
    BodyExt::boxed(StreamBody::new(tokio_stream(rx)))
}

fn tokio_stream<T>(mut rx: mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn respond(req: Request<Incoming>, journal: Arc<Mutex<Journal>>, id: String) -> Response<Body> {
    let q = query(&req);
    let tag = q.get("tag").cloned().unwrap_or_default();
    journal
        .lock()
        .unwrap()
        .headers
        .insert(tag.clone(), req.headers().clone());
    let n: usize = q.get("n").and_then(|v| v.parse().ok()).unwrap_or(5);
    let every = Duration::from_millis(q.get("every").and_then(|v| v.parse().ok()).unwrap_or(100));
    let size: usize = q.get("size").and_then(|v| v.parse().ok()).unwrap_or(0);
    let split = q.get("split").and_then(|v| v.parse().ok()).map(Duration::from_millis);
    let mut resp = Response::builder();
    if let Some(a) = q.get("accel") {
        resp = resp.header("x-accel-buffering", a.as_str());
    }
    if q.contains_key("cors") {
        resp = resp
            .header("access-control-allow-origin", "*")
            .header("access-control-expose-headers", "x-upstream-own");
    }
    if q.contains_key("hop") {
        resp = resp
            .header("connection", "x-upstream-hop")
            .header("x-upstream-hop", "secret")
            .header("keep-alive", "timeout=5")
            .header("x-end-to-end", "kept");
    }
    let body = match req.uri().path() {
        "/sse" => {
            resp = resp.header("content-type", "text/event-stream");
            let pad = "p".repeat(size);
            let chunks = (1..=n)
                .map(|i| Bytes::from(format!("id: {i}\ndata: {id} {pad}\n\n")))
                .collect();
            channel_body(journal, tag, chunks, every, n == 0, split)
        }
        "/json" => {
            resp = resp.header("content-type", "application/json");
            let chunks = (1..=n)
                .map(|i| {
                    let open = if i == 1 { "[" } else { "" };
                    let close = if i == n { "]" } else { "," };
                    Bytes::from(format!("{open}{{\"n\":{i}}}{close}"))
                })
                .collect();
            channel_body(journal, tag, chunks, every, false, None)
        }
        "/slow" => {
            let delay = q.get("delay").and_then(|v| v.parse().ok()).unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            BodyExt::boxed(Full::new(Bytes::from("slow")))
        }
        // An event, a long pause, then an event split by another long pause.
        "/split" => {
            resp = resp.header("content-type", "text/event-stream");
            let pause = Duration::from_millis(q.get("pause").and_then(|v| v.parse().ok()).unwrap_or(700));
            let script = vec![
                (Duration::ZERO, Bytes::from("data: one\n\n")),
                (pause, Bytes::from("data: par")),
                (pause, Bytes::from("t two\r\n\r")),
                (Duration::from_millis(50), Bytes::from("\n")),
            ];
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
            tokio::spawn(async move {
                for (delay, chunk) in script {
                    tokio::time::sleep(delay).await;
                    record_emit(&journal, &tag);
                    if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                        return;
                    }
                }
            });
            BodyExt::boxed(StreamBody::new(tokio_stream(rx)))
        }
        "/stall" => {
            resp = resp.header("content-type", "text/event-stream");
            channel_body(
                journal,
                tag,
                vec![Bytes::from("data: first\n\n"), Bytes::new()],
                Duration::from_secs(30),
                false,
                None,
            )
        }
        _ => BodyExt::boxed(Full::new(Bytes::from(format!("upstream {id}")))),
    };
    resp.body(body).unwrap()
}

/// ssegate in-process, fed from a temporary folder that the test rewrites.
pub struct Gateway {
    pub addr: SocketAddr,
    /// The TLS listener (certificates by SNI from the folder's Secrets).
    pub tls_addr: SocketAddr,
    pub proxy: Arc<Proxy>,
    pub dir: tempfile::TempDir,
    source: Mutex<FolderSource>,
    applier: Arc<Applier>,
}

impl Gateway {
    pub async fn start() -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let table = empty_table();
        let applier = Arc::new(Applier::new(table.clone(), Arc::new(LogStatus::default())));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls_addr = tls_listener.local_addr().unwrap();
        // Built as the binary builds it: connections served on data-plane
        // threads with single-threaded runtimes, not on the test's runtime.
        let workers = ssegate::proxy::Workers::start(2).unwrap();
        let proxy = Proxy::builder(table).workers(workers).build();
        tokio::spawn(proxy.clone().serve(listener, std::future::pending(), Duration::ZERO));
        tokio::spawn(
            proxy
                .clone()
                .serve_tls(tls_listener, std::future::pending(), Duration::ZERO),
        );
        let source = Mutex::new(FolderSource::new(dir.path()));
        Gateway {
            addr,
            tls_addr,
            proxy,
            dir,
            source,
            applier,
        }
    }

    /// Replaces Route `r` (to Service `svc`) with the given spec lines.
    pub fn set_route(&self, spec: &str) {
        self.write("route.yaml", &route_yaml("r", spec, "svc"));
    }

    /// Writes a file into the folder and reloads synchronously.
    pub fn write(&self, name: &str, yaml: &str) {
        std::fs::write(self.dir.path().join(name), yaml).unwrap();
        let errors = reload(&mut self.source.lock().unwrap(), &*self.applier);
        assert!(errors.is_empty(), "config errors: {errors:?}");
    }

    /// Writes a file and reloads; returns the configuration problems found.
    pub fn write_allowing_errors(&self, name: &str, yaml: &str) -> Vec<String> {
        std::fs::write(self.dir.path().join(name), yaml).unwrap();
        reload(&mut self.source.lock().unwrap(), &*self.applier)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn table(&self) -> Arc<ssegate::model::RoutingTable> {
        self.applier.table().load_full()
    }
}

/// One upstream behind Service `svc`, and a Route `r` to it with the given
/// spec lines (indented two spaces).
pub async fn one_backend(route_spec: &str) -> (Upstream, Gateway) {
    let up = Upstream::start("u1").await;
    let gw = Gateway::start().await;
    gw.write("backend.yaml", &backend_yaml("svc", &[(up.addr, true)]));
    gw.write("route.yaml", &route_yaml("r", route_spec, "svc"));
    (up, gw)
}

/// A Service named `name` whose EndpointSlice lists `upstreams` (ready or not).
pub fn backend_yaml(name: &str, upstreams: &[(SocketAddr, bool)]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n"
    );
    for (i, (addr, ready)) in upstreams.iter().enumerate() {
        out.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-{i}, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"{}\"], conditions: {{ready: {ready}}}}}]\n",
            addr.port(),
            addr.ip()
        ));
    }
    out
}

/// A Route sending `path` prefix on any host to Service `service`.
pub fn route_yaml(name: &str, extra_spec: &str, service: &str) -> String {
    format!(
        "apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}}}\nspec:\n{extra_spec}  rules: [{{backendRefs: [{{name: {service}, port: 80}}]}}]\n"
    )
}

/// Arrival times of whole SSE events (split at blank lines), and of raw chunks.
pub struct Received {
    pub events: Vec<(String, Instant)>,
    /// Wall-clock arrival of each event, to compare with times stamped by
    /// an upstream in another process.
    pub events_wall: Vec<std::time::SystemTime>,
    pub chunks: Vec<(usize, Instant)>,
    /// What came after the last complete event: a torn event, if any.
    pub tail: String,
    pub error: Option<String>,
}

/// Reads a response body to its end (or `limit` events), recording when
/// each chunk and each complete event arrived.
pub async fn read_stream(resp: reqwest::Response, limit: usize) -> Received {
    let mut resp = resp;
    let mut out = Received {
        events: Vec::new(),
        events_wall: Vec::new(),
        chunks: Vec::new(),
        tail: String::new(),
        error: None,
    };
    let mut pending = String::new();
    loop {
        let Ok(next) = tokio::time::timeout(STREAM_SILENCE, resp.chunk()).await else {
            out.error = Some(format!("no byte for {STREAM_SILENCE:?}"));
            out.tail = pending;
            return out;
        };
        match next {
            Ok(Some(chunk)) => {
                let now = Instant::now();
                out.chunks.push((chunk.len(), now));
                pending.push_str(std::str::from_utf8(&chunk).unwrap());
                while let Some(end) = pending.find("\n\n") {
                    let event: String = pending.drain(..end + 2).collect();
                    out.events.push((event, now));
                    out.events_wall.push(std::time::SystemTime::now());
                }
                if out.events.len() >= limit {
                    out.tail = pending;
                    return out;
                }
            }
            Ok(None) => {
                out.tail = pending;
                return out;
            }
            Err(e) => {
                out.error = Some(format!("{e:?}"));
                out.tail = pending;
                return out;
            }
        }
    }
}

/// Longest a stream read by [`read_stream`] may stay silent: longer than
/// any pause a test stream makes (tests that need a silence check it
/// themselves), short enough that a stuck stream fails its test.
pub const STREAM_SILENCE: Duration = Duration::from_secs(60);

/// An HTTP client for tests: no proxy from the environment, a connect
/// timeout, and a timeout for the response headers; a body is bounded by
/// whoever reads it ([`read_stream`]: [`STREAM_SILENCE`]).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(STREAM_SILENCE)
        .build()
        .unwrap()
}

/// A port free on loopback for a process under test to bind. Taken from
/// below the kernel's ephemeral range (32768 and up by default): a port the
/// kernel hands out may be taken as the source port of some outgoing
/// connection between this check and the process's own bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 24_000;
    const SPAN: u32 = 8_000;
    // Each test binary starts elsewhere in the span.
    let start = (std::process::id() % 64) * (SPAN / 64);
    for _ in 0..SPAN {
        let port = (FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
