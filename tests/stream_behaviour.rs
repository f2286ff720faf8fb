//! One table of SSE behaviours, each row run over HTTP/1.1 (cleartext),
//! HTTP/2 over TLS (ALPN `h2`) and h2c (cleartext HTTP/2 with prior
//! knowledge), against the real `ssegate` binary in standalone mode.
//!
//! Why a table: ssegate carries a response over two implementations, its
//! own HTTP/1.1 path (`src/proxy/h1`) and hyper's HTTP/2 server with
//! `src/proxy/body.rs`, and each promise about event streams (heartbeats,
//! boundary endings, timeouts, limits, accounting) has to hold on both. A
//! row states one promise and checks it the same way on every protocol,
//! through the three things an operator sees:
//! - what the client receives: the exact bytes of the body, when they
//!   arrive (against when the upstream wrote them), and whether the stream
//!   ended cleanly (last chunk, END_STREAM) or in error (a chunked body left
//!   unterminated, RST_STREAM, a closed connection);
//! - what `/metrics` on the admin port counts (`ssegate_events_total`,
//!   `ssegate_response_bytes_total`, `ssegate_open_streams`,
//!   `ssegate_upstream_errors_total{kind}`, `ssegate_requests_total`,
//!   `ssegate_client_connections_closed_total{reason}`), as the change over
//!   the row;
//! - the access-log line (target `ssegate::access`, JSON): status, bytes,
//!   events, outcome.
//!
//! Each row is one module with one test per protocol (`ROW::h1`,
//! `ROW::h2_tls`, `ROW::h2c`), so a row that fails on one protocol only
//! names a disagreement between the two paths. The rows:
//! 1. buffering: `Disabled` and `Auto` deliver each event before the next
//!    is emitted; `Enabled` holds small events until `bufferSize` fills or
//!    the body ends;
//! 2. heartbeats fill a silence and never go inside an event;
//! 3. `sse.maxStreamDuration` ends a stream at the next event boundary;
//! 4. a drain (SIGTERM) ends a stream at the next event boundary;
//! 5. `timeouts.idle` cuts a silent stream;
//! 6. an HTTPRoute's `timeouts.request` cuts a stream at its deadline;
//! 7. the send timeout cuts a client that stops taking bytes;
//! 8. `maxConcurrentStreams` answers 503 with `Retry-After`;
//! 9. an upstream cut mid-event ends the client's stream in error;
//! 10. an unasked 101 from the upstream becomes 502;
//! 11. a CORS policy answers an allowed Origin, on the stream and in a
//!     preflight;
//! 12. an event stream with a Content-Length passes intact: no
//!     heartbeats, no end at the maximum duration or at a drain.
//!
//! Where the two paths disagreed when the table was written, a row states
//! the intended behaviour, and fails until the code agrees: a request
//! timeout is an upstream error of its own kind, `request_timeout` (row 6;
//! HTTP/1.1 counted it as `idle_timeout`, HTTP/2 not at all); an HTTP/2
//! client that holds its flow-control window shut is cut by the send
//! timeout as an HTTP/1.1 client that stops reading is (row 7); and an
//! event stream with a Content-Length is left alone on every protocol, as
//! HTTP/1.1 leaves it (row 12).
//!
//! Upstreams are raw TCP sockets that write exact HTTP/1.1 bytes on a
//! script (writes, pauses, a cut, a flood), so the test decides where an
//! event is split, how long the upstream stays silent and where it breaks
//! off; they record when each write went out and when ssegate closed the
//! connection. Clients are hyper's connection-level clients, one connection
//! per request (over TLS, the negotiated ALPN is checked to be `h2`); a
//! client that stops taking bytes is a raw socket with a small receive
//! buffer (HTTP/1.1) or the `h2` crate never releasing flow-control
//! capacity (HTTP/2).
//!
//! Timings are short (heartbeats every 200 ms, pauses of 300 ms to 1 s)
//! with margins of hundreds of milliseconds, for a loaded two-core machine.
//! Every wait has a deadline ([`LIMIT`]), and every check that something
//! does not happen is made over a stated window (the silence of a script)
//! or on the exact bytes of a body that has ended.

mod common;

use bytes::Bytes;
use common::process::Ssegate;
use common::tls::{cert, secret_yaml, TestCert};
use common::{backend_yaml, free_port};
use http::{HeaderMap, Method, Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

/// The host every row's route serves (its certificate's name).
const HOST: &str = "sse.test";
/// The host of the keeper route (see [`Env::keeper`]).
const KEEP_HOST: &str = "keep.test";
/// Longest wait for anything that should happen: an answer, the end of a
/// body, an access-log line, an upstream connection closing.
const LIMIT: Duration = Duration::from_secs(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn after(d: Duration) -> Instant {
    Instant::now() + d
}

/// How a row's client talks to ssegate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// HTTP/1.1 on the plaintext listener.
    Http1,
    /// HTTP/2 on the TLS listener, by ALPN.
    H2Tls,
    /// Cleartext HTTP/2 with prior knowledge, on the plaintext listener.
    H2c,
}

// ---------------------------------------------------------------------------
// The scripted upstream.
// ---------------------------------------------------------------------------

/// One step of an upstream's answer, after its head.
#[derive(Clone, Debug)]
enum Step {
    /// Bytes of the body, in one write (one chunk when the body is chunked).
    Send(String),
    /// Silence, this many milliseconds.
    Pause(u64),
    /// A `data: tick` event every this many milliseconds, until ssegate
    /// closes the connection.
    Tick(u64),
    /// 16 KiB events as fast as ssegate takes them, until it closes the
    /// connection (64 MiB at most).
    Flood,
    /// Silence until ssegate closes the connection (a minute at most).
    Hold,
    /// The last chunk of a chunked body; then the connection closes.
    End,
    /// The connection closes wherever the body is.
    Cut,
}

fn send(text: &str) -> Step {
    Step::Send(text.to_owned())
}

/// An upstream's whole answer to one request.
#[derive(Clone, Debug)]
struct Script {
    head: String,
    /// Each `Send` goes out as one chunk, `End` as the last chunk.
    chunked: bool,
    steps: Vec<Step>,
}

/// A chunked `text/event-stream` answer's head.
const EVENTS_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

impl Script {
    /// A chunked event stream.
    fn events(steps: &[Step]) -> Script {
        Script::raw(EVENTS_HEAD, true, steps)
    }

    /// An event stream with a Content-Length: the sum of its `Send`s.
    fn events_with_length(steps: &[Step]) -> Script {
        let len: usize = steps
            .iter()
            .map(|s| match s {
                Step::Send(t) => t.len(),
                _ => 0,
            })
            .sum();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        );
        Script::raw(&head, false, steps)
    }

    fn raw(head: &str, chunked: bool, steps: &[Step]) -> Script {
        Script {
            head: head.to_owned(),
            chunked,
            steps: steps.to_vec(),
        }
    }
}

/// What the upstream saw of one request.
#[derive(Clone, Debug)]
struct Exchange {
    method: String,
    path: String,
    /// When each `Send` and `End` of the script was written (just before
    /// the write).
    writes: Vec<Instant>,
    /// When ssegate closed the connection (EOF or reset seen).
    closed: Option<Instant>,
}

/// A raw HTTP/1.1 upstream answering each request path with its script
/// (404 for any other path), one request per connection.
struct Upstream {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Exchange>>>,
}

impl Upstream {
    async fn start(scripts: Vec<(&'static str, Script)>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let scripts: Arc<HashMap<&'static str, Script>> = Arc::new(scripts.into_iter().collect());
        let seen = log.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_upstream(stream, scripts.clone(), seen.clone()));
            }
        });
        Upstream { addr, log }
    }

    fn exchanges(&self, path: &str) -> Vec<Exchange> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.path == path)
            .cloned()
            .collect()
    }

    /// The write instants of the first request for `path`.
    fn writes(&self, path: &str) -> Vec<Instant> {
        self.exchanges(path)
            .first()
            .unwrap_or_else(|| panic!("no request for {path} reached the upstream"))
            .writes
            .clone()
    }

    /// Waits until ssegate has closed the connection of the `n`th request
    /// for `path` (the upstream request is cancelled, not left running).
    async fn wait_closed(&self, path: &str, n: usize) -> Instant {
        let deadline = after(LIMIT);
        loop {
            if let Some(at) = self.exchanges(path).get(n).and_then(|e| e.closed) {
                return at;
            }
            assert!(
                Instant::now() < deadline,
                "ssegate never closed the upstream connection of request {n} for {path} (the upstream request was left running)"
            );
            tokio::time::sleep(ms(10)).await;
        }
    }
}

async fn serve_upstream(
    mut stream: TcpStream,
    scripts: Arc<HashMap<&'static str, Script>>,
    log: Arc<Mutex<Vec<Exchange>>>,
) {
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(LIMIT, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut words = text.split_whitespace();
    let method = words.next().unwrap_or_default().to_owned();
    let path = words
        .next()
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let script = scripts.get(path.as_str()).cloned().unwrap_or_else(|| {
        Script::raw(
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            false,
            &[],
        )
    });
    let index = {
        let mut log = log.lock().unwrap();
        log.push(Exchange {
            method,
            path,
            writes: Vec::new(),
            closed: None,
        });
        log.len() - 1
    };
    let (mut rd, mut wr) = stream.into_split();
    // ssegate going away is noticed at any step, silent or not.
    let gone = CancellationToken::new();
    {
        let (gone, log) = (gone.clone(), log.clone());
        tokio::spawn(async move {
            let mut sink = [0u8; 4096];
            while let Ok(n) = rd.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
            log.lock().unwrap()[index].closed = Some(Instant::now());
            gone.cancel();
        });
    }
    if !write(&mut wr, script.head.as_bytes(), &gone).await {
        return;
    }
    let frame = |text: &str| {
        if script.chunked {
            format!("{:x}\r\n{text}\r\n", text.len())
        } else {
            text.to_owned()
        }
    };
    let noted = |log: &Mutex<Vec<Exchange>>| log.lock().unwrap()[index].writes.push(Instant::now());
    for step in &script.steps {
        match step {
            Step::Send(text) => {
                noted(&log);
                if !write(&mut wr, frame(text).as_bytes(), &gone).await {
                    return;
                }
            }
            Step::Pause(n) => {
                if !pause(ms(*n), &gone).await {
                    return;
                }
            }
            Step::Tick(every) => loop {
                if !pause(ms(*every), &gone).await || !write(&mut wr, frame("data: tick\n\n").as_bytes(), &gone).await {
                    return;
                }
            },
            Step::Flood => {
                let event = frame(&format!("data: {}\n\n", "x".repeat(16 * 1024)));
                for _ in 0..4096 {
                    if !write(&mut wr, event.as_bytes(), &gone).await {
                        return;
                    }
                }
            }
            Step::Hold => {
                pause(Duration::from_secs(60), &gone).await;
                return;
            }
            Step::End => {
                noted(&log);
                if script.chunked {
                    let _ = write(&mut wr, b"0\r\n\r\n", &gone).await;
                }
                let _ = wr.shutdown().await;
                return;
            }
            Step::Cut => return,
        }
    }
}

/// Writes `bytes` unless ssegate goes away first; whether it did.
async fn write(wr: &mut OwnedWriteHalf, bytes: &[u8], gone: &CancellationToken) -> bool {
    tokio::select! {
        r = wr.write_all(bytes) => r.is_ok(),
        _ = gone.cancelled() => false,
    }
}

/// Waits `d` unless ssegate goes away first; whether it stayed.
async fn pause(d: Duration, gone: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = gone.cancelled() => false,
    }
}

// ---------------------------------------------------------------------------
// ssegate, configured for one row.
// ---------------------------------------------------------------------------

/// What serves `sse.test` in a row.
enum Config<'a> {
    /// A Route `r` with these spec lines (indented two spaces).
    Route(&'a str),
    /// An HTTPRoute `r` through a Gateway of ssegate's class (an HTTP and
    /// an HTTPS listener), its one rule with these extra lines (indented
    /// four spaces).
    HttpRoute(&'a str),
}

fn route_yaml(spec: &str) -> String {
    format!(
        "apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {{name: r}}\nspec:\n  hostnames: [{HOST}]\n  tls: [{{secretName: cert}}]\n{spec}  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]\n"
    )
}

fn gateway_yaml(rule: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: ssegate}}
spec: {{controllerName: ssegate.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: ssegate
  listeners:
  - {{name: http, port: 80, protocol: HTTP, hostname: {HOST}}}
  - {{name: https, port: 443, protocol: HTTPS, hostname: {HOST}, tls: {{certificateRefs: [{{name: cert}}]}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [{HOST}]
  rules:
  - backendRefs: [{{name: svc, port: 80}}]
{rule}"
    )
}

/// A Route for the keeper (see [`Env::keeper`]).
const KEEP_ROUTE: &str = "apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {name: keep}\nspec:\n  hostnames: [keep.test]\n  proxyBuffering: Disabled\n  rules: [{backendRefs: [{name: svc, port: 80}]}]\n";

/// A plain (not event-stream) answer that lasts six seconds.
fn keep_script() -> (&'static str, Script) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    (
        "/keep",
        Script::raw(head, true, &[send("keep\n"), Step::Pause(6000), Step::End]),
    )
}

/// One row's ssegate, upstream and client protocol.
struct Env {
    proto: Protocol,
    gw: Ssegate,
    up: Upstream,
    cert: TestCert,
    plain: SocketAddr,
    tls: SocketAddr,
    /// The route's label in metrics and access lines: `default/r`, for
    /// the Route and the HTTPRoute alike.
    route: &'static str,
    _dir: tempfile::TempDir,
    _logs: tempfile::TempDir,
}

impl Env {
    /// Starts an upstream with `scripts` (and the keeper's), and ssegate
    /// with `config`, JSON logs, a TLS listener and `flags`.
    async fn start(proto: Protocol, config: Config<'_>, scripts: Vec<(&'static str, Script)>, flags: &[&str]) -> Env {
        let mut scripts = scripts;
        scripts.push(keep_script());
        let up = Upstream::start(scripts).await;
        let cert = cert(&[HOST]);
        let dir = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let (file, yaml) = match config {
            Config::Route(spec) => ("route.yaml", route_yaml(spec)),
            Config::HttpRoute(rule) => ("gateway.yaml", gateway_yaml(rule)),
        };
        for (name, content) in [
            ("backend.yaml", backend_yaml("svc", &[(up.addr, true)])),
            ("secret.yaml", secret_yaml("cert", None, &cert)),
            ("keep.yaml", KEEP_ROUTE.to_owned()),
            (file, yaml),
        ] {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let tls_flag = tls.to_string();
        let mut args = vec![
            "--log-format",
            "json",
            "standalone",
            "--dir",
            dir.path().to_str().unwrap(),
            "--listen-tls",
            &tls_flag,
        ];
        args.extend_from_slice(flags);
        let gw = Ssegate::start(&args, logs.path()).await;
        let plain = gw.proxy_addr().parse().unwrap();
        Env {
            proto,
            gw,
            up,
            cert,
            plain,
            tls,
            route: "default/r",
            _dir: dir,
            _logs: logs,
        }
    }

    /// GET `path` on `sse.test` as an EventSource would, over the row's protocol.
    async fn get(&self, path: &str) -> Answer {
        self.open(Method::GET, path, &[("accept", "text/event-stream")]).await
    }

    async fn open(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.open_with(self.proto, method, HOST, path, headers).await
    }

    /// Sends one request on a connection of its own.
    async fn open_with(
        &self,
        proto: Protocol,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let uri = match proto {
            Protocol::Http1 => path.to_owned(),
            Protocol::H2Tls => format!("https://{host}{path}"),
            Protocol::H2c => format!("http://{host}{path}"),
        };
        let mut req = Request::builder().method(method).uri(uri);
        if proto == Protocol::Http1 {
            req = req.header("host", host);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Empty::<Bytes>::new()).unwrap();
        let deadline = after(LIMIT);
        let (resp, guard) = match proto {
            Protocol::Http1 => {
                let tcp = TcpStream::connect(self.plain).await.unwrap();
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
                let guard = ConnGuard(tokio::spawn(async move {
                    let _ = conn.await;
                }));
                let resp = timeout_at(deadline, send.send_request(req)).await;
                (resp, guard)
            }
            Protocol::H2Tls => {
                let stream = common::tls::connect(self.tls, HOST, &[&self.cert], &[&b"h2"[..]])
                    .await
                    .unwrap();
                assert_eq!(
                    stream.get_ref().1.alpn_protocol(),
                    Some(&b"h2"[..]),
                    "ALPN did not agree on h2"
                );
                h2_request(stream, req, deadline).await
            }
            Protocol::H2c => {
                let tcp = TcpStream::connect(self.plain).await.unwrap();
                h2_request(tcp, req, deadline).await
            }
        };
        let resp = resp
            .unwrap_or_else(|_| panic!("no answer within {LIMIT:?}:\n{}", self.gw.logs()))
            .unwrap_or_else(|e| panic!("the request failed: {e}:\n{}", self.gw.logs()));
        let want = match proto {
            Protocol::Http1 => Version::HTTP_11,
            _ => Version::HTTP_2,
        };
        assert_eq!(resp.version(), want);
        let (parts, body) = resp.into_parts();
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: Reader {
                body,
                got: Got::default(),
                _conn: guard,
            },
        }
    }

    /// Keeps the process up through a drain: a plain answer (not an event
    /// stream, so not ended by a drain) on `keep.test` over HTTP/1.1 that
    /// lasts six seconds, in flight when this returns. The admin port
    /// answers until the process exits, so the metrics stay readable.
    async fn keeper(&self) -> Keeper {
        let mut a = self
            .open_with(Protocol::Http1, Method::GET, KEEP_HOST, "/keep", &[])
            .await;
        assert_eq!(a.status, 200);
        assert!(
            a.body.until(|t| t.contains("keep"), after(LIMIT)).await,
            "the keeper never started"
        );
        Keeper(tokio::spawn(async move {
            a.body.read_to_end(after(Duration::from_secs(30))).await;
        }))
    }

    async fn metrics(&self) -> Scrape {
        Scrape(self.gw.metrics_text().await)
    }

    /// The access lines' fields, in order.
    fn access_lines(&self) -> Vec<Value> {
        self.gw
            .logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "ssegate::access")
            .map(|v| v["fields"].clone())
            .collect()
    }

    /// The access lines of this row's route for `path`.
    fn access_for(&self, path: &str) -> Vec<Value> {
        self.access_lines()
            .into_iter()
            .filter(|f| f["route"] == self.route && f["path"] == path)
            .collect()
    }

    /// Waits for the access line of this row's route for `path` that
    /// `pred` accepts.
    async fn access_line(&self, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = after(LIMIT);
        loop {
            if let Some(line) = self.access_for(path).into_iter().find(&pred) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no such access line for {} {path} within {LIMIT:?}; the access lines:\n{:#?}",
                self.route,
                self.access_lines()
            );
            tokio::time::sleep(ms(20)).await;
        }
    }

    /// Waits for the one access line of this row's route for `path`, and
    /// checks it is the only one.
    async fn only_access_line(&self, path: &str) -> Value {
        let line = self.access_line(path, |_| true).await;
        let all = self.access_for(path);
        assert_eq!(all.len(), 1, "one access line per request: {all:#?}");
        line
    }

    /// Checks a body ended cleanly.
    async fn assert_clean(&self, got: &Got) {
        if !matches!(got.end, Some(End::Clean)) {
            panic!(
                "the stream should have ended cleanly; it {}, after {:?}; {}",
                got.describe_end(),
                got.text(),
                self.settled_access_lines().await
            );
        }
    }

    /// Checks a body ended in error (was cut), and returns when.
    async fn assert_error(&self, got: &Got) -> Instant {
        match &got.end {
            Some(End::Error(at, _)) => *at,
            _ => panic!(
                "the stream should have ended in error (cut); it {}, after {:?}; {}",
                got.describe_end(),
                got.text(),
                self.settled_access_lines().await
            ),
        }
    }

    /// The access lines half a second from now (ssegate may log a stream's
    /// end a moment after its client saw it), for failure messages.
    async fn settled_access_lines(&self) -> String {
        tokio::time::sleep(ms(500)).await;
        format!("the access lines: {:#?}", self.access_lines())
    }

    /// Waits until the sample `series` reads `want`.
    async fn wait_metric(&self, series: &str, want: f64) {
        let deadline = after(LIMIT);
        loop {
            let got = self.metrics().await.get(series);
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{series} is {got}, not {want}");
            tokio::time::sleep(ms(20)).await;
        }
    }
}

/// Sends `req` on a new HTTP/2 connection over `io`.
async fn h2_request<S>(
    io: S,
    req: Request<Empty<Bytes>>,
    deadline: Instant,
) -> (
    Result<hyper::Result<http::Response<Incoming>>, tokio::time::error::Elapsed>,
    ConnGuard,
)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(io))
        .await
        .unwrap();
    let guard = ConnGuard(tokio::spawn(async move {
        let _ = conn.await;
    }));
    (timeout_at(deadline, send.send_request(req)).await, guard)
}

/// A client connection's task, ended (the connection closed) when dropped.
struct ConnGuard(tokio::task::JoinHandle<()>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The keeper's reading task.
struct Keeper(tokio::task::JoinHandle<()>);

impl Drop for Keeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An answer's head, and its body as it is read.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Reader,
}

impl Answer {
    fn header(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

/// How a body ended.
#[derive(Debug, Clone)]
enum End {
    /// The last chunk, or END_STREAM.
    Clean,
    /// An unterminated body, RST_STREAM, or a closed connection.
    Error(Instant, String),
}

/// What arrived of a body, and when.
#[derive(Default, Debug)]
struct Got {
    chunks: Vec<(Instant, Bytes)>,
    end: Option<End>,
}

impl Got {
    fn text(&self) -> String {
        let bytes: Vec<u8> = self.chunks.iter().flat_map(|(_, c)| c.iter().copied()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// What had arrived at `t`.
    fn text_by(&self, t: Instant) -> String {
        let bytes: Vec<u8> = self
            .chunks
            .iter()
            .filter(|(at, _)| *at <= t)
            .flat_map(|(_, c)| c.iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// When the byte at `offset` arrived.
    fn arrival_of_offset(&self, offset: usize) -> Option<Instant> {
        let mut seen = 0;
        for (at, chunk) in &self.chunks {
            seen += chunk.len();
            if seen > offset {
                return Some(*at);
            }
        }
        None
    }

    /// When the whole of the first `needle` had arrived.
    fn arrival_of(&self, needle: &str) -> Option<Instant> {
        let at = self.text().find(needle)?;
        self.arrival_of_offset(at + needle.len() - 1)
    }

    fn first_arrival(&self) -> Option<Instant> {
        self.chunks.first().map(|(at, _)| *at)
    }

    fn describe_end(&self) -> String {
        match &self.end {
            Some(End::Clean) => "ended cleanly".into(),
            Some(End::Error(_, e)) => format!("ended in error ({e})"),
            None => "had not ended by the deadline".into(),
        }
    }
}

/// An error and its sources, as one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A response body being read, with its connection.
struct Reader {
    body: Incoming,
    got: Got,
    _conn: ConnGuard,
}

impl Reader {
    /// Reads one frame; false if `deadline` passed first.
    async fn next(&mut self, deadline: Instant) -> bool {
        match timeout_at(deadline, self.body.frame()).await {
            Err(_) => false,
            Ok(None) => {
                self.got.end = Some(End::Clean);
                true
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() {
                        self.got.chunks.push((Instant::now(), data));
                    }
                }
                true
            }
            Ok(Some(Err(e))) => {
                self.got.end = Some(End::Error(Instant::now(), error_chain(&e)));
                true
            }
        }
    }

    /// Reads until `pred` holds for what arrived, the body ends or
    /// `deadline` passes; whether `pred` held.
    async fn until(&mut self, pred: impl Fn(&str) -> bool, deadline: Instant) -> bool {
        loop {
            if pred(&self.got.text()) {
                return true;
            }
            if self.got.end.is_some() || !self.next(deadline).await {
                return false;
            }
        }
    }

    /// Reads to the end of the body, or until `deadline`.
    async fn read_to_end(&mut self, deadline: Instant) {
        while self.got.end.is_none() && self.next(deadline).await {}
    }
}

// ---------------------------------------------------------------------------
// Metrics.
// ---------------------------------------------------------------------------

/// One scrape of `/metrics`.
struct Scrape(String);

impl Scrape {
    /// The value of sample `series` (name and labels), 0 when absent.
    fn get(&self, series: &str) -> f64 {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// Checks that `series` grew by `want` since `before`.
    fn assert_grew(&self, before: &Scrape, series: &str, want: f64) {
        let grew = self.get(series) - before.get(series);
        assert_eq!(
            grew,
            want,
            "{series} grew by {grew}, not {want}; now:\n{}",
            self.family(series)
        );
    }

    /// The samples of `series`'s metric, for messages.
    fn family(&self, series: &str) -> String {
        let name = series.split('{').next().unwrap_or(series);
        self.0
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn events(route: &str) -> String {
    format!("ssegate_events_total{{route=\"{route}\"}}")
}

fn bytes_sent(route: &str) -> String {
    format!("ssegate_response_bytes_total{{route=\"{route}\"}}")
}

fn open_streams(route: &str) -> String {
    format!("ssegate_open_streams{{route=\"{route}\"}}")
}

fn upstream_errors(route: &str, kind: &str) -> String {
    format!("ssegate_upstream_errors_total{{route=\"{route}\",kind=\"{kind}\"}}")
}

fn requests(route: &str, class: &str) -> String {
    format!("ssegate_requests_total{{route=\"{route}\",status_class=\"{class}\"}}")
}

fn connections_closed(reason: &str) -> String {
    format!("ssegate_client_connections_closed_total{{reason=\"{reason}\"}}")
}

/// Checks an access line's status, bytes, events and outcome.
fn assert_access(line: &Value, status: u64, bytes: usize, events: u64, outcome: &str) {
    let seen = (
        line["status"].as_u64(),
        line["bytes"].as_u64(),
        line["events"].as_u64(),
        line["outcome"].as_str(),
    );
    assert_eq!(
        seen,
        (Some(status), Some(bytes as u64), Some(events), Some(outcome)),
        "access line (status, bytes, events, outcome): {line:#}"
    );
}

/// Checks the metrics of a row whose one event stream ended: `events`
/// events and `bytes` bytes forwarded, no stream left open, and none of
/// the upstream error kinds counted but `error`.
fn assert_stream_counted(
    before: &Scrape,
    after: &Scrape,
    route: &str,
    events_n: u64,
    bytes: usize,
    error: Option<&str>,
) {
    after.assert_grew(before, &events(route), events_n as f64);
    after.assert_grew(before, &bytes_sent(route), bytes as f64);
    assert_eq!(after.get(&open_streams(route)), 0.0, "{}", open_streams(route));
    let wrong: Vec<String> = [
        "connect",
        "response_timeout",
        "idle_timeout",
        "failed",
        "request_timeout",
    ]
    .into_iter()
    .filter_map(|kind| {
        let series = upstream_errors(route, kind);
        let grew = after.get(&series) - before.get(&series);
        let want = if error == Some(kind) { 1.0 } else { 0.0 };
        (grew != want).then(|| format!("kind {kind} grew by {grew}, not {want}"))
    })
    .collect();
    assert!(
        wrong.is_empty(),
        "ssegate_upstream_errors_total for {route}: {}; now:\n{}",
        wrong.join(", "),
        after.family("ssegate_upstream_errors_total")
    );
}

// ---------------------------------------------------------------------------
// The table.
// ---------------------------------------------------------------------------

/// Each row: a module with its body as `row(proto)` and a test per protocol.
macro_rules! rows {
    ($($(#[$doc:meta])* $name:ident($proto:ident) $body:block)*) => {$(
        $(#[$doc])*
        mod $name {
            use super::*;

            async fn row($proto: Protocol) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn h1() {
                row(Protocol::Http1).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn h2_tls() {
                row(Protocol::H2Tls).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn h2c() {
                row(Protocol::H2c).await
            }
        }
    )*};
}

/// Four small events.
const FOUR: [&str; 4] = [
    "id: 1\ndata: first\n\n",
    "id: 2\ndata: second\n\n",
    "id: 3\ndata: third\n\n",
    "id: 4\ndata: fourth\n\n",
];

/// Row 1 for Disabled and Auto: with `buffering`, each event reaches the
/// client before the upstream emits the next (400 ms later), and the body
/// is intact.
async fn streamed_event_by_event(proto: Protocol, buffering: &str) {
    let steps = [
        send(FOUR[0]),
        Step::Pause(400),
        send(FOUR[1]),
        Step::Pause(400),
        send(FOUR[2]),
        Step::Pause(400),
        send(FOUR[3]),
        Step::End,
    ];
    let spec = format!("  proxyBuffering: {buffering}\n");
    let env = Env::start(proto, Config::Route(&spec), vec![("/sse", Script::events(&steps))], &[]).await;
    let before = env.metrics().await;
    let mut a = env.get("/sse").await;
    assert_eq!(a.status, 200);
    a.body.read_to_end(after(LIMIT)).await;
    let got = &a.body.got;
    env.assert_clean(got).await;
    let whole = FOUR.concat();
    assert_eq!(got.text(), whole, "the body passes unchanged");
    let writes = env.up.writes("/sse");
    for k in 0..3 {
        let arrived = got.arrival_of(FOUR[k]).unwrap();
        assert!(
            arrived < writes[k + 1],
            "event {} was held back: it arrived {:?} after event {} was emitted",
            k + 1,
            arrived - writes[k + 1],
            k + 2
        );
    }
    let line = env.only_access_line("/sse").await;
    assert_access(&line, 200, whole.len(), 4, "complete");
    let after = env.metrics().await;
    assert_stream_counted(&before, &after, env.route, 4, whole.len(), None);
    after.assert_grew(&before, &requests(env.route, "2xx"), 1.0);
}

/// The content-length rows' script: an event, 800 ms of silence, an event
/// split by another 800 ms, and the body is complete (27 bytes).
fn split_with_length() -> Script {
    Script::events_with_length(&[
        send("data: one\n\n"),
        Step::Pause(800),
        send("data: par"),
        Step::Pause(800),
        send("t two\n\n"),
    ])
}

const SPLIT_BODY: &str = "data: one\n\ndata: part two\n\n";

rows! {
    /// Row 1 (Disabled): every event goes out as it comes.
    disabled_buffering_delivers_each_event_before_the_next_is_emitted(proto) {
        streamed_event_by_event(proto, "Disabled").await;
    }

    /// Row 1 (Auto): an event stream is streamed.
    auto_buffering_delivers_each_event_before_the_next_is_emitted(proto) {
        streamed_event_by_event(proto, "Auto").await;
    }

    /// Row 1 (Enabled): five 300-byte events 400 ms apart through a 1 KiB
    /// buffer. The first three fill it (900 bytes; a fourth does not fit),
    /// so nothing arrives before the fourth is emitted, the first three
    /// arrive together before the fifth is, and the last two only when the
    /// body ends.
    enabled_buffering_holds_small_events_until_buffer_size_fills_or_the_body_ends(proto) {
        let five: Vec<String> = (1..=5)
            .map(|i| format!("id: {i}\ndata: {}\n\n", "x".repeat(286)))
            .collect();
        assert!(five.iter().all(|e| e.len() == 300));
        let mut steps = Vec::new();
        for e in &five {
            steps.push(send(e));
            steps.push(Step::Pause(400));
        }
        steps.push(Step::End);
        let env = Env::start(
            proto,
            Config::Route("  proxyBuffering: Enabled\n  bufferSize: 1Ki\n"),
            vec![("/sse", Script::events(&steps))],
            &[],
        )
        .await;
        let before = env.metrics().await;
        let mut a = env.get("/sse").await;
        assert_eq!(a.status, 200);
        a.body.read_to_end(after(LIMIT)).await;
        let got = &a.body.got;
        env.assert_clean(got).await;
        let whole = five.concat();
        assert_eq!(got.text(), whole, "the body passes unchanged");
        // Writes: five events, then the end.
        let writes = env.up.writes("/sse");
        let first = got.first_arrival().unwrap();
        assert!(
            first > writes[3],
            "bytes arrived {:?} before the fourth event was emitted, while the buffer had room",
            writes[3] - first
        );
        let third = got.arrival_of(&five[2]).unwrap();
        assert!(
            third < writes[4],
            "the full buffer (events 1 to 3) was held {:?} past the fifth event's emission",
            third - writes[4]
        );
        let fourth = got.arrival_of_offset(900).unwrap();
        assert!(
            fourth > writes[5],
            "event 4 arrived {:?} before the body ended, though the buffer had room",
            writes[5] - fourth
        );
        let line = env.only_access_line("/sse").await;
        assert_access(&line, 200, whole.len(), 5, "complete");
        let after = env.metrics().await;
        assert_stream_counted(&before, &after, env.route, 5, whole.len(), None);
    }

    /// Row 2: a heartbeat every 200 ms fills a one-second silence between
    /// events, arriving during it; none goes into an event split by another
    /// second of silence. Heartbeats count as bytes, not events.
    heartbeats_fill_a_silence_and_never_go_inside_an_event(proto) {
        let steps = [
            send("data: one\n\n"),
            Step::Pause(1000),
            send("data: par"),
            Step::Pause(1000),
            send("t two\n\n"),
            Step::End,
        ];
        let env = Env::start(
            proto,
            Config::Route("  proxyBuffering: Disabled\n  sse: {heartbeatInterval: 200ms}\n"),
            vec![("/sse", Script::events(&steps))],
            &[],
        )
        .await;
        let before = env.metrics().await;
        let mut a = env.get("/sse").await;
        assert_eq!(a.status, 200);
        a.body.read_to_end(after(LIMIT)).await;
        let got = &a.body.got;
        env.assert_clean(got).await;
        let text = got.text();
        let rest = text.strip_prefix("data: one\n\n").unwrap_or_else(|| panic!("{text:?}"));
        let beats = rest.len() - rest.trim_start_matches(":\n\n").len();
        assert_eq!(
            &rest[beats..],
            "data: part two\n\n",
            "after the first event, heartbeats then the split event whole: {text:?}"
        );
        let writes = env.up.writes("/sse");
        let during = got.text_by(writes[1]).matches(":\n\n").count();
        assert!(
            during >= 2,
            "{during} heartbeats arrived during the one-second silence (every 200 ms asked): {text:?}"
        );
        let line = env.only_access_line("/sse").await;
        assert_access(&line, 200, text.len(), 2, "complete");
        let after = env.metrics().await;
        assert_stream_counted(&before, &after, env.route, 2, text.len(), None);
    }

    /// Row 3: `maxStreamDuration: 1s` passes inside an event (its halves
    /// written at 0.5 s and 1.5 s): the stream ends cleanly right after
    /// that event, before the upstream's next one, and the upstream
    /// request is cancelled.
    max_stream_duration_ends_the_stream_at_the_next_event_boundary(proto) {
        let steps = [
            send("data: one\n\n"),
            Step::Pause(500),
            send("data: par"),
            Step::Pause(1000),
            send("t two\n\n"),
            Step::Tick(200),
        ];
        let env = Env::start(
            proto,
            Config::Route("  proxyBuffering: Disabled\n  sse: {maxStreamDuration: 1s}\n"),
            vec![("/sse", Script::events(&steps))],
            &[],
        )
        .await;
        let before = env.metrics().await;
        let mut a = env.get("/sse").await;
        assert_eq!(a.status, 200);
        a.body.read_to_end(after(LIMIT)).await;
        let got = &a.body.got;
        env.assert_clean(got).await;
        assert_eq!(got.text(), SPLIT_BODY, "ended mid-event, or after the next event");
        env.up.wait_closed("/sse", 0).await;
        let line = env.only_access_line("/sse").await;
        assert_access(&line, 200, SPLIT_BODY.len(), 2, "max_duration");
        let after = env.metrics().await;
        assert_stream_counted(&before, &after, env.route, 2, SPLIT_BODY.len(), None);
    }

    /// Row 4: SIGTERM while an event is half written (its second half a
    /// second later): the stream ends cleanly right after that event, and
    /// the upstream request is cancelled.
    drain_ends_an_open_stream_at_the_next_event_boundary(proto) {
        let steps = [
            send("data: one\n\n"),
            Step::Pause(300),
            send("data: par"),
            Step::Pause(1000),
            send("t two\n\n"),
            Step::Tick(200),
        ];
        let env = Env::start(
            proto,
            Config::Route("  proxyBuffering: Disabled\n"),
            vec![("/sse", Script::events(&steps))],
            &[],
        )
        .await;
        let _keeper = env.keeper().await;
        let before = env.metrics().await;
        let mut a = env.get("/sse").await;
        assert_eq!(a.status, 200);
        assert!(a.body.until(|t| t.contains("data: par"), after(LIMIT)).await, "{:?}", a.body.got);
        env.gw.terminate();
        a.body.read_to_end(after(LIMIT)).await;
        let got = &a.body.got;
        env.assert_clean(got).await;
        assert_eq!(got.text(), SPLIT_BODY, "ended mid-event, or after the next event");
        env.up.wait_closed("/sse", 0).await;
        let line = env.only_access_line("/sse").await;
        assert_access(&line, 200, SPLIT_BODY.len(), 2, "drain");
        let after = env.metrics().await;
        assert_stream_counted(&before, &after, env.route, 2, SPLIT_BODY.len(), None);
    }

    /// Row 5: `timeouts.idle: 500ms` and an upstream silent after its first
    /// event: the stream is cut (not ended cleanly) half a second after it,
    /// counted as an idle timeout, and the upstream request is cancelled.
    idle_timeout_cuts_a_silent_stream_and_counts_an_idle_timeout(proto) {
        let env = Env::start(
            proto,
            Config::Route("  proxyBuffering: Disabled\n  timeouts: {idle: 500ms}\n"),
            vec![("/sse", Script::events(&[send("data: one\n\n"), Step::Hold]))],
            &[],
        )
        .await;
        let before = env.metrics().await;
        let mut a = env.get("/sse").await;
        assert_eq!(a.status, 200);
        a.body.read_to_end(after(LIMIT)).await;
        let got = &a.body.got;
        let cut = env.assert_error(got).await;
        assert_eq!(got.text(), "data: one\n\n");
        let silence = cut - got.arrival_of("data: one\n\n").unwrap();
        assert!(
            (ms(400)..=ms(3000)).contains(&silence),
            "cut {silence:?} after the last event (idle timeout 500ms)"
        );
        env.up.wait_closed("/sse", 0).await;
        let line = env.only_access_line("/sse").await;
        assert_access(&line, 200, 11, 1, "idle_timeout");
        let after = env.metrics().await;
        assert_stream_counted(&before, &after, env.route, 1, 11, Some("idle_timeout"));
    }

    /// Row 6: an HTTPRoute's `timeouts.request: 1s` cuts the stream where it
    /// is when the second passes (here inside an event), counted as an
    /// upstream error of its own kind, `request_timeout` (not as an idle
    /// timeout), with outcome `request_timeout`.
    request_timeout_cuts_the_stream_at_the_deadline_and_counts_a_request_timeout(proto) {
        let steps = [
            send("data: one\n\n"),
            Step::Pause(500),
            send("data: par"),
            Step::Pause(2000),
            send("t two\n\n"),
            Step::Hold,
        ];
        let env = Env::start(
            proto,
            Config::HttpRoute("    timeouts: {request: 1s}\n"),
            vec![("/sse", Script::events(&steps))],
            &[],
        )
        .await;
        let before = env.metrics().await;
        let asked = Instant::now();
        let mut a = env.get("/sse").await;
        assert_eq!(a.status, 200);
        a.body.read_to_end(after(LIMIT)).await;
        let got = &a.body.got;
        let cut = env.assert_error(got).await;
        assert_eq!(got.text(), "data: one\n\ndata: par");
        let took = cut - asked;
        assert!(
            (ms(1000)..ms(2400)).contains(&took),
            "cut {took:?} after the request (request timeout 1s; the event's end comes at 2.5s)"
        );
        env.up.wait_closed("/sse", 0).await;
        let line = env.only_access_line("/sse").await;
        assert_access(&line, 200, 20, 1, "request_timeout");
        let after = env.metrics().await;
        assert_stream_counted(&before, &after, env.route, 1, 20, Some("request_timeout"));
    }

    /// Row 7: `--client-send-timeout 1s` and a client that stops taking
    /// bytes (HTTP/1.1: stops reading a socket with a small receive buffer;
    /// HTTP/2: never releases flow-control capacity, so its stream and
    /// connection windows fill) under an upstream that floods: the stream
    /// is cut no sooner than a second after the client stopped and within
    /// a few seconds, logged with outcome `send_timeout`, and the upstream
    /// request is cancelled. Over HTTP/1.1 the connection closes, counted in
    /// `ssegate_client_connections_closed_total{reason="send_timeout"}`;
    /// over HTTP/2 only the stream is reset.
    send_timeout_cuts_a_client_that_stops_taking_bytes(proto) {
        let env = Env::start(
            proto,
            Config::Route("  proxyBuffering: Disabled\n"),
            vec![("/flood", Script::events(&[send("data: first\n\n"), Step::Flood]))],
            &["--client-send-timeout", "1s"],
        )
        .await;
        let before = env.metrics().await;
        let mut client = StalledClient::open(&env).await;
        let stalled = Instant::now();
        // Not reading: watch for the stream's end in the access log.
        let deadline = stalled + Duration::from_secs(6);
        let mut logged = None;
        while Instant::now() < deadline {
            if let Some(line) = env.access_for("/flood").into_iter().next() {
                logged = Some((Instant::now(), line));
                break;
            }
            tokio::time::sleep(ms(20)).await;
        }
        let end = client.finish(after(Duration::from_secs(3))).await;
        assert!(
            end.is_some(),
            "the stream was not cut: still open {:?} after the client stopped taking bytes (send timeout 1s)",
            stalled.elapsed()
        );
        let (seen, line) = logged.expect("the stream ended, but with no access line within 6s");
        // The client's window (HTTP/2) or the socket buffers (HTTP/1.1)
        // may fill a moment before `open` returns: 100 ms of slack.
        assert!(
            seen - stalled >= ms(900),
            "cut {:?} after the client stopped taking bytes, before the send timeout (1s)",
            seen - stalled
        );
        assert_eq!(line["outcome"], "send_timeout", "{line:#}");
        assert_eq!(line["status"], 200, "{line:#}");
        env.up.wait_closed("/flood", 0).await;
        let after = env.metrics().await;
        if proto == Protocol::Http1 {
            // The stream is the connection: it closes.
            after.assert_grew(&before, &connections_closed("send_timeout"), 1.0);
        } else {
            // One stream's stall does not condemn the connection's other
            // streams: that stream alone is reset.
            assert_eq!(
                after.get(&connections_closed("send_timeout")),
                before.get(&connections_closed("send_timeout")),
                "an HTTP/2 connection is not closed for one stalled stream"
            );
        }
        assert_eq!(after.get(&open_streams(env.route)), 0.0);
    }

    /// Row 8: with `maxConcurrentStreams: 1` and a stream open, a second
    /// stream gets 503 with `Retry-After: 5` without reaching the upstream;
    /// once the first client leaves, the place is free again.
    stream_limit_answers_503_with_retry_after_and_frees_the_place_when_a_stream_ends(proto) {
        let env = Env::start(
            proto,
            Config::Route("  proxyBuffering: Disabled\n  maxConcurrentStreams: 1\n"),
            vec![("/sse", Script::events(&[send("data: one\n\n"), Step::Hold]))],
            &[],
        )
        .await;
        let before = env.metrics().await;
        let mut first = env.get("/sse").await;
        assert_eq!(first.status, 200);
        assert!(first.body.until(|t| t == "data: one\n\n", after(LIMIT)).await, "{:?}", first.body.got);
        assert_eq!(env.metrics().await.get(&open_streams(env.route)), 1.0);

        let mut second = env.get("/sse").await;
        assert_eq!(second.status, 503);
        assert_eq!(second.header("retry-after"), ["5"]);
        second.body.read_to_end(after(LIMIT)).await;
        env.assert_clean(&second.body.got).await;
        let text = second.body.got.text();
        assert!(text.contains("maximum of 1 open streams"), "{text:?}");
        assert_eq!(env.up.exchanges("/sse").len(), 1, "the refused stream reached the upstream");
        let refused = env.access_line("/sse", |l| l["status"] == 503).await;
        assert_access(&refused, 503, text.len(), 0, "local");

        drop(first);
        env.wait_metric(&open_streams(env.route), 0.0).await;
        let gone = env.access_line("/sse", |l| l["status"] == 200).await;
        assert_access(&gone, 200, 11, 1, "client_gone");
        env.up.wait_closed("/sse", 0).await;
        let mut third = env.get("/sse").await;
        assert_eq!(third.status, 200, "the place was not given back");
        assert!(third.body.until(|t| t == "data: one\n\n", after(LIMIT)).await, "{:?}", third.body.got);

        let after = env.metrics().await;
        after.assert_grew(&before, &requests(env.route, "5xx"), 1.0);
        after.assert_grew(&before, &requests(env.route, "2xx"), 2.0);
    }

    /// Row 9: the upstream closes its connection in the middle of an event
    /// (a chunked body without its last chunk): the client's stream ends in
    /// error after the bytes that came, counted as a `failed` upstream.
    upstream_cut_mid_event_ends_the_client_stream_in_error(proto) {
        let steps = [
            send("data: one\n\n"),
            Step::Pause(300),
            send("data: par"),
            Step::Pause(200),
            Step::Cut,
        ];
        let env = Env::start(
            proto,
            Config::Route("  proxyBuffering: Disabled\n"),
            vec![("/sse", Script::events(&steps))],
            &[],
        )
        .await;
        let before = env.metrics().await;
        let mut a = env.get("/sse").await;
        assert_eq!(a.status, 200);
        a.body.read_to_end(after(LIMIT)).await;
        let got = &a.body.got;
        env.assert_error(got).await;
        assert_eq!(got.text(), "data: one\n\ndata: par");
        let line = env.only_access_line("/sse").await;
        assert_access(&line, 200, 20, 1, "upstream_error");
        let after = env.metrics().await;
        assert_stream_counted(&before, &after, env.route, 1, 20, Some("failed"));
    }

    /// Row 10: an upstream that answers a plain GET with 101 Switching
    /// Protocols: the client gets 502, counted as a `failed` upstream.
    unasked_101_from_the_upstream_becomes_502(proto) {
        let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let env = Env::start(
            proto,
            Config::Route("  proxyBuffering: Disabled\n"),
            vec![("/sse", Script::raw(head, false, &[Step::Hold]))],
            &[],
        )
        .await;
        let before = env.metrics().await;
        let mut a = env.get("/sse").await;
        a.body.read_to_end(after(LIMIT)).await;
        let text = a.body.got.text();
        assert_eq!(a.status, 502, "{text:?}");
        env.assert_clean(&a.body.got).await;
        assert!(text.contains("101"), "{text:?}");
        let line = env.only_access_line("/sse").await;
        assert_access(&line, 502, text.len(), 0, "local");
        let after = env.metrics().await;
        after.assert_grew(&before, &upstream_errors(env.route, "failed"), 1.0);
        after.assert_grew(&before, &requests(env.route, "5xx"), 1.0);
        assert_eq!(after.get(&open_streams(env.route)), 0.0);
    }

    /// Row 11: a Route with a CORS policy: an event stream requested from
    /// an allowed Origin carries that origin as its one
    /// `Access-Control-Allow-Origin` (the upstream's own `*` replaced), and
    /// a preflight is answered 204 by ssegate without reaching the upstream.
    cors_allowed_origin_is_answered_on_the_stream_and_in_a_preflight(proto) {
        let origin = "https://app.example";
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n";
        let steps = [send(FOUR[0]), Step::Pause(100), send(FOUR[1]), Step::End];
        let env = Env::start(
            proto,
            Config::Route("  proxyBuffering: Disabled\n  cors: {allowOrigins: [\"https://app.example\"]}\n"),
            vec![("/sse", Script::raw(head, true, &steps))],
            &[],
        )
        .await;
        let before = env.metrics().await;
        let mut a = env
            .open(Method::GET, "/sse", &[("accept", "text/event-stream"), ("origin", origin)])
            .await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("access-control-allow-origin"), [origin]);
        assert!(
            a.header("vary").iter().any(|v| v.to_ascii_lowercase().contains("origin")),
            "{:?}",
            a.headers
        );
        a.body.read_to_end(after(LIMIT)).await;
        env.assert_clean(&a.body.got).await;
        let whole = FOUR[..2].concat();
        assert_eq!(a.body.got.text(), whole);

        let mut pre = env
            .open(
                Method::OPTIONS,
                "/sse",
                &[("origin", origin), ("access-control-request-method", "GET")],
            )
            .await;
        assert_eq!(pre.status, 204);
        assert_eq!(pre.header("access-control-allow-origin"), [origin]);
        let methods = pre.header("access-control-allow-methods").join(",");
        assert!(methods.contains("GET"), "{methods:?}");
        pre.body.read_to_end(after(LIMIT)).await;
        env.assert_clean(&pre.body.got).await;
        assert!(
            env.up.exchanges("/sse").iter().all(|e| e.method != "OPTIONS"),
            "the preflight reached the upstream"
        );

        let stream = env.access_line("/sse", |l| l["status"] == 200).await;
        assert_access(&stream, 200, whole.len(), 2, "complete");
        let preflight = env.access_line("/sse", |l| l["status"] == 204).await;
        assert_eq!(preflight["outcome"], "local", "{preflight:#}");
        let after = env.metrics().await;
        assert_stream_counted(&before, &after, env.route, 2, whole.len(), None);
        after.assert_grew(&before, &requests(env.route, "2xx"), 2.0);
    }

    /// Row 12 (heartbeats): an event stream with a Content-Length cannot
    /// take bytes of ssegate's: the body arrives as sent, Content-Length
    /// kept, with no heartbeat in its 800 ms silences (every 200 ms asked).
    content_length_event_stream_gets_no_heartbeats(proto) {
        let env = Env::start(
            proto,
            Config::Route("  proxyBuffering: Disabled\n  sse: {heartbeatInterval: 200ms}\n"),
            vec![("/sse", split_with_length())],
            &[],
        )
        .await;
        let before = env.metrics().await;
        let mut a = env.get("/sse").await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("content-length"), ["27"]);
        a.body.read_to_end(after(LIMIT)).await;
        env.assert_clean(&a.body.got).await;
        assert_eq!(a.body.got.text(), SPLIT_BODY);
        let line = env.only_access_line("/sse").await;
        assert_access(&line, 200, 27, 2, "complete");
        let after = env.metrics().await;
        assert_stream_counted(&before, &after, env.route, 2, 27, None);
    }

    /// Row 12 (maximum duration): `maxStreamDuration: 500ms` passes while
    /// an event stream with a Content-Length is at an event boundary; it
    /// is not ended there but runs to its length (1.6 s).
    content_length_event_stream_is_not_ended_by_max_stream_duration(proto) {
        let env = Env::start(
            proto,
            Config::Route("  proxyBuffering: Disabled\n  sse: {maxStreamDuration: 500ms}\n"),
            vec![("/sse", split_with_length())],
            &[],
        )
        .await;
        let before = env.metrics().await;
        let mut a = env.get("/sse").await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("content-length"), ["27"]);
        a.body.read_to_end(after(LIMIT)).await;
        env.assert_clean(&a.body.got).await;
        assert_eq!(a.body.got.text(), SPLIT_BODY);
        let line = env.only_access_line("/sse").await;
        assert_access(&line, 200, 27, 2, "complete");
        let after = env.metrics().await;
        assert_stream_counted(&before, &after, env.route, 2, 27, None);
    }

    /// Row 12 (drain): SIGTERM while an event stream with a Content-Length
    /// is at an event boundary: it is not ended there but runs to its
    /// length.
    content_length_event_stream_is_not_ended_by_a_drain(proto) {
        let env = Env::start(
            proto,
            Config::Route("  proxyBuffering: Disabled\n"),
            vec![("/sse", split_with_length())],
            &[],
        )
        .await;
        let _keeper = env.keeper().await;
        let before = env.metrics().await;
        let mut a = env.get("/sse").await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("content-length"), ["27"]);
        assert!(a.body.until(|t| t == "data: one\n\n", after(LIMIT)).await, "{:?}", a.body.got);
        env.gw.terminate();
        a.body.read_to_end(after(LIMIT)).await;
        env.assert_clean(&a.body.got).await;
        assert_eq!(a.body.got.text(), SPLIT_BODY);
        let line = env.only_access_line("/sse").await;
        assert_access(&line, 200, 27, 2, "complete");
        let after = env.metrics().await;
        assert_stream_counted(&before, &after, env.route, 2, 27, None);
    }
}

// ---------------------------------------------------------------------------
// A client that stops taking bytes (row 7).
// ---------------------------------------------------------------------------

/// A `/flood` stream whose client has read its first event and then takes
/// nothing more.
enum StalledClient {
    /// A socket with a small receive buffer, no longer read.
    Http1(TcpStream, Vec<u8>),
    /// A stream whose flow-control capacity is never released.
    H2 { body: h2::RecvStream, _conn: ConnGuard },
}

impl StalledClient {
    async fn open(env: &Env) -> StalledClient {
        let deadline = after(LIMIT);
        match env.proto {
            Protocol::Http1 => {
                let socket = TcpSocket::new_v4().unwrap();
                socket.set_recv_buffer_size(4096).unwrap();
                let mut s = socket.connect(env.plain).await.unwrap();
                s.write_all(
                    format!("GET /flood HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n\r\n").as_bytes(),
                )
                .await
                .unwrap();
                let mut got = Vec::new();
                while !String::from_utf8_lossy(&got).contains("data: first") {
                    let mut buf = [0u8; 1024];
                    let n = timeout_at(deadline, s.read(&mut buf))
                        .await
                        .expect("the first event never came")
                        .unwrap();
                    assert!(
                        n > 0,
                        "closed before the first event: {:?}",
                        String::from_utf8_lossy(&got)
                    );
                    got.extend_from_slice(&buf[..n]);
                }
                assert!(got.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&got));
                StalledClient::Http1(s, got)
            }
            Protocol::H2Tls => {
                let stream = common::tls::connect(env.tls, HOST, &[&env.cert], &[&b"h2"[..]])
                    .await
                    .unwrap();
                assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                h2_stalled(stream, "https", deadline).await
            }
            Protocol::H2c => {
                let tcp = TcpStream::connect(env.plain).await.unwrap();
                h2_stalled(tcp, "http", deadline).await
            }
        }
    }

    /// Takes what the client has been sent, still releasing nothing (HTTP/2)
    /// or reading as fast as it comes (HTTP/1.1), until the stream's end or
    /// `deadline`. `Some` once ssegate cut it (reset, closed connection, an
    /// unterminated chunked body); `None` if it is still open.
    async fn finish(&mut self, deadline: Instant) -> Option<String> {
        match self {
            StalledClient::Http1(s, got) => loop {
                let mut buf = [0u8; 64 * 1024];
                match timeout_at(deadline, s.read(&mut buf)).await {
                    Err(_) => return None,
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        assert!(
                            !got.ends_with(b"\r\n0\r\n\r\n"),
                            "the stream ended cleanly (last chunk), not cut"
                        );
                        return Some("connection closed".into());
                    }
                    Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                }
            },
            StalledClient::H2 { body, .. } => loop {
                match timeout_at(deadline, body.data()).await {
                    Err(_) => return None,
                    Ok(None) => panic!("the stream ended cleanly (END_STREAM), not cut"),
                    Ok(Some(Err(e))) => return Some(e.to_string()),
                    Ok(Some(Ok(_))) => {}
                }
            },
        }
    }
}

/// Opens `/flood` with the `h2` crate over `io` and reads its first event
/// without releasing any capacity.
async fn h2_stalled<S>(io: S, scheme: &str, deadline: Instant) -> StalledClient
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (client, conn) = h2::client::handshake(io).await.unwrap();
    let guard = ConnGuard(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let mut client = client.ready().await.unwrap();
    let req = Request::get(format!("{scheme}://{HOST}/flood"))
        .header("accept", "text/event-stream")
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = timeout_at(deadline, resp).await.expect("no answer").unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("data: first") {
        let data = timeout_at(deadline, body.data())
            .await
            .expect("the first event never came")
            .expect("the stream ended before its first event")
            .unwrap();
        got.extend_from_slice(&data);
    }
    StalledClient::H2 { body, _conn: guard }
}
