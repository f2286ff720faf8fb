//! Resume (a Route's `sse.resume`) against the real binary, over HTTP/1.1,
//! HTTP/2 over TLS and h2c: when the upstream of an event stream dies, the
//! client's stream carries on from another endpoint, with no new head, no
//! gap in framing and never half an event; when it cannot, the stream ends
//! as it would without resume, with nothing of a wrong answer in it.
//!
//! The backend is two raw HTTP/1.1 listeners (two endpoints of one
//! Service) serving numbered events `id: N` from `Last-Event-ID + 1`, as a
//! resuming SSE server does. What a request does is in its query:
//! `cut=N:K` makes a first request (one without `Last-Event-ID`) send
//! events `1..N`, then `K` bytes of event `N`, then drop the connection
//! without the last chunk; `then=` says how a resumed request is answered
//! (`ok`: the rest of the events and the last chunk; `404`, `html`, `json`:
//! that answer; `close`: the connection closed unanswered; `stall`: no
//! answer at all); `noid` serves events without ids. Each request the
//! backend sees is logged with its endpoint and `Last-Event-ID`.
//!
//! Every wait has a deadline ([`LIMIT`]); a check that no further request
//! was made holds over a stated window after the client saw its end.

mod common;

use bytes::Bytes;
use common::process::Ssegate;
use common::tls::{cert, secret_yaml, TestCert};
use common::{backend_yaml, free_port};
use http::{Method, Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout_at, Instant};

const HOST: &str = "sse.test";
/// Longest wait for anything that should happen.
const LIMIT: Duration = Duration::from_secs(10);
/// Events the backend serves in all.
const TOTAL: u32 = 4;
/// How long a check that no more requests come holds.
const QUIET: Duration = Duration::from_millis(600);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn event(n: u32) -> String {
    format!("id: {n}\ndata: event {n}\n\n")
}

fn events(from: u32, to: u32) -> String {
    (from..=to).map(event).collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    H2Tls,
    H2c,
}

// ---------------------------------------------------------------------------
// The backend.
// ---------------------------------------------------------------------------

/// One request as a backend endpoint saw it.
#[derive(Clone, Debug)]
struct Seen {
    endpoint: SocketAddr,
    method: String,
    /// Path and query.
    target: String,
    last_event_id: Option<String>,
    /// When the head arrived.
    at: Instant,
}

struct Backend {
    endpoints: Vec<SocketAddr>,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Backend {
    async fn start(n: usize) -> Backend {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut endpoints = Vec::new();
        for _ in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let endpoint = listener.local_addr().unwrap();
            endpoints.push(endpoint);
            let log = log.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, endpoint, log.clone()));
                }
            });
        }
        Backend { endpoints, log }
    }

    /// The requests for `target` (path and query), in order.
    fn seen(&self, target: &str) -> Vec<Seen> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.target == target)
            .cloned()
            .collect()
    }
}

fn query<'a>(target: &'a str, key: &str) -> Option<&'a str> {
    target
        .split_once('?')?
        .1
        .split('&')
        .find_map(|kv| match kv.split_once('=') {
            Some((k, v)) if k == key => Some(v),
            None if kv == key => Some(""),
            _ => None,
        })
}

async fn serve(mut stream: TcpStream, endpoint: SocketAddr, log: Arc<Mutex<Vec<Seen>>>) {
    let _ = stream.set_nodelay(true);
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
    let target = words.next().unwrap_or_default().to_owned();
    let last_event_id = text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("last-event-id")
            .then(|| value.trim().to_owned())
    });
    log.lock().unwrap().push(Seen {
        endpoint,
        method,
        target: target.clone(),
        last_event_id: last_event_id.clone(),
        at: Instant::now(),
    });
    let chunk = |t: &str| format!("{:x}\r\n{t}\r\n", t.len());
    let stream_head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    let nth = log.lock().unwrap().iter().filter(|s| s.target == target).count();
    if query(&target, "cutfirst").is_some() && nth == 1 {
        // The first request, whatever it carries: the head, then a cut
        // before any event.
        let _ = stream.write_all(stream_head.as_bytes()).await;
        return;
    }
    let Some(last) = last_event_id else {
        // A first request: events up to the cut.
        let (n, k) = query(&target, "cut")
            .and_then(|c| c.split_once(':'))
            .map(|(n, k)| (n.parse::<u32>().unwrap(), k.parse::<usize>().unwrap()))
            .unwrap_or((TOTAL + 1, 0));
        let noid = query(&target, "noid").is_some();
        if let Some(slow) = query(&target, "slow") {
            // Events 1..=slow, 100 ms apart, then the last chunk.
            let _ = stream.write_all(stream_head.as_bytes()).await;
            return tick(&mut stream, 1, slow.parse().unwrap()).await;
        }
        let one = |i: u32| if noid { format!("data: event {i}\n\n") } else { event(i) };
        let mut out = stream_head.to_owned();
        for i in 1..n.min(TOTAL + 1) {
            out.push_str(&chunk(&one(i)));
        }
        let partial = one(n);
        if k > 0 && n <= TOTAL {
            out.push_str(&chunk(&partial[..k.min(partial.len())]));
        }
        if n > TOTAL {
            out.push_str("0\r\n\r\n");
        }
        let _ = stream.write_all(out.as_bytes()).await;
        if query(&target, "hold").is_some() {
            // Silent, not cut: only an idle timeout ends this.
            let mut rest = [0u8; 64];
            let _ = tokio::time::timeout(LIMIT, stream.read(&mut rest)).await;
        }
        // The connection ends here: without the last chunk, a cut.
        return;
    };
    let from: u32 = last.parse::<u32>().unwrap() + 1;
    if let Some(slow) = query(&target, "slow") {
        let _ = stream.write_all(stream_head.as_bytes()).await;
        return tick(&mut stream, from, slow.parse().unwrap()).await;
    }
    let answer = match query(&target, "then").unwrap_or("ok") {
        "ok" => format!("{stream_head}{}0\r\n\r\n", chunk(&events(from, TOTAL))),
        "404" => "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nnot here\n".to_owned(),
        "html" => "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<p>login</p>\n".to_owned(),
        "json" => "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"id\": \"5\"}\n"
            .to_owned(),
        "close" => return,
        "stall" => {
            tokio::time::sleep(LIMIT).await;
            return;
        }
        other => panic!("unknown then={other}"),
    };
    let _ = stream.write_all(answer.as_bytes()).await;
    let mut rest = [0u8; 64];
    let _ = tokio::time::timeout(ms(200), stream.read(&mut rest)).await;
}

/// Events `from..=to`, one chunk each, 100 ms apart, then the last chunk;
/// stops when ssegate closes the connection (it moved the stream).
async fn tick(stream: &mut TcpStream, from: u32, to: u32) {
    for i in from..=to {
        let e = event(i);
        let chunk = format!("{:x}\r\n{e}\r\n", e.len());
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            return;
        }
        tokio::time::sleep(ms(100)).await;
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
}

// ---------------------------------------------------------------------------
// ssegate and its clients.
// ---------------------------------------------------------------------------

struct Env {
    proto: Protocol,
    gw: Ssegate,
    backend: Backend,
    cert: TestCert,
    plain: SocketAddr,
    tls: SocketAddr,
    _dir: tempfile::TempDir,
    _logs: tempfile::TempDir,
}

/// How a body ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The last chunk, or END_STREAM.
    Clean,
    /// Cut: a chunked body left unterminated, a reset, a closed connection.
    Error,
}

struct Got {
    status: u16,
    body: String,
    end: End,
    /// When the client saw the end.
    at: Instant,
}

impl Env {
    /// ssegate with a Route whose `sse` is `sse` and whose other spec
    /// lines are `extra`, in front of two endpoints, the first `ready`
    /// ones ready.
    async fn start(proto: Protocol, resume: &str) -> Env {
        Env::start_with(proto, &format!("{{resume: {resume}}}"), "", 2).await
    }

    async fn start_with(proto: Protocol, sse: &str, extra: &str, ready: usize) -> Env {
        let backend = Backend::start(2).await;
        let cert = cert(&[HOST]);
        let dir = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let route = format!(
            "apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {{name: r}}\nspec:\n  hostnames: [{HOST}]\n  tls: [{{secretName: cert}}]\n  proxyBuffering: Disabled\n  sse: {sse}\n{extra}  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]\n"
        );
        let upstreams: Vec<_> = backend
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (*e, i < ready))
            .collect();
        for (name, content) in [
            ("backend.yaml", backend_yaml("svc", &upstreams)),
            ("secret.yaml", secret_yaml("cert", None, &cert)),
            ("route.yaml", route),
        ] {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let tls_flag = tls.to_string();
        let args = [
            "--log-format",
            "json",
            "standalone",
            "--dir",
            dir.path().to_str().unwrap(),
            "--listen-tls",
            &tls_flag,
        ];
        let gw = Ssegate::start(&args, logs.path()).await;
        let plain = gw.proxy_addr().parse().unwrap();
        Env {
            proto,
            gw,
            backend,
            cert,
            plain,
            tls,
            _dir: dir,
            _logs: logs,
        }
    }

    /// Marks which endpoints are ready, as an EndpointSlice update would.
    fn set_ready(&self, ready: &[bool]) {
        let upstreams: Vec<_> = self
            .backend
            .endpoints
            .iter()
            .zip(ready)
            .map(|(e, r)| (*e, *r))
            .collect();
        let path = self._dir.path().join("backend.yaml");
        std::fs::write(&path, backend_yaml("svc", &upstreams)).unwrap();
    }

    /// Sends one request on a connection of its own and reads the whole
    /// answer.
    async fn fetch(&self, method: Method, target: &str) -> Got {
        self.fetch_with(method, target, &[]).await
    }

    async fn fetch_with(&self, method: Method, target: &str, headers: &[(&str, &str)]) -> Got {
        let uri = match self.proto {
            Protocol::Http1 => target.to_owned(),
            Protocol::H2Tls => format!("https://{HOST}{target}"),
            Protocol::H2c => format!("http://{HOST}{target}"),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("accept", "text/event-stream");
        if self.proto == Protocol::Http1 {
            req = req.header("host", HOST);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Empty::<Bytes>::new()).unwrap();
        let deadline = Instant::now() + LIMIT;
        let resp = match self.proto {
            Protocol::Http1 => {
                let tcp = TcpStream::connect(self.plain).await.unwrap();
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
                tokio::spawn(conn);
                timeout_at(deadline, send.send_request(req)).await
            }
            Protocol::H2Tls => {
                let tls = common::tls::connect(self.tls, HOST, &[&self.cert], &[&b"h2"[..]])
                    .await
                    .unwrap();
                let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .handshake(TokioIo::new(tls))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                timeout_at(deadline, send.send_request(req)).await
            }
            Protocol::H2c => {
                let tcp = TcpStream::connect(self.plain).await.unwrap();
                let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .handshake(TokioIo::new(tcp))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                timeout_at(deadline, send.send_request(req)).await
            }
        };
        let resp = resp
            .unwrap_or_else(|_| panic!("no answer within {LIMIT:?}:\n{}", self.gw.logs()))
            .unwrap_or_else(|e| panic!("the request failed: {e}:\n{}", self.gw.logs()));
        let want = if self.proto == Protocol::Http1 {
            Version::HTTP_11
        } else {
            Version::HTTP_2
        };
        assert_eq!(resp.version(), want);
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        let end = loop {
            match timeout_at(deadline, body.frame()).await {
                Err(_) => panic!(
                    "the body did not end within {LIMIT:?}; so far {:?}",
                    String::from_utf8_lossy(&bytes)
                ),
                Ok(None) => break End::Clean,
                Ok(Some(Err(_))) => break End::Error,
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        bytes.extend_from_slice(&data);
                    }
                }
            }
        };
        Got {
            status,
            body: String::from_utf8(bytes).unwrap(),
            end,
            at: Instant::now(),
        }
    }

    /// The requests for `target` after the backend has had [`QUIET`] to
    /// receive any more.
    async fn settled(&self, target: &str) -> Vec<Seen> {
        tokio::time::sleep(QUIET).await;
        self.backend.seen(target)
    }

    fn access_lines(&self) -> Vec<serde_json::Value> {
        self.gw
            .logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "ssegate::access")
            .map(|v| v["fields"].clone())
            .collect()
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = self.gw.metrics_text().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

const RESUME: &str = "{enabled: true, maxAttempts: 2, budget: 1s}";

fn resumes(outcome: &str) -> String {
    format!("ssegate_stream_resumes_total{{route=\"default/r\",reason=\"upstream_error\",outcome=\"{outcome}\"}} ")
}

// ---------------------------------------------------------------------------
// The checks, each run over every protocol.
// ---------------------------------------------------------------------------

/// The upstream dies between events and at every byte of an event: the
/// client receives every event once, in order, whole, on one response that
/// ends cleanly; the resumed request carried the last whole event's id and
/// went to the other endpoint.
async fn killed_at_every_split(proto: Protocol) {
    let env = Env::start(proto, RESUME).await;
    let len = event(3).len();
    for k in 0..=len {
        let target = format!("/s?cut=3:{k}&then=ok");
        let got = env.fetch(Method::GET, &target).await;
        assert_eq!(got.status, 200);
        assert_eq!(
            got.body,
            events(1, TOTAL),
            "cut after {k} bytes of event 3; seen {:#?}\n{}",
            env.backend.seen(&target),
            env.gw.logs()
        );
        assert_eq!(got.end, End::Clean, "cut after {k} bytes of event 3");
        let seen = env.backend.seen(&target);
        assert_eq!(seen.len(), 2, "one resumed request: {seen:#?}");
        let whole = if k == len { "3" } else { "2" };
        assert_eq!(seen[1].last_event_id.as_deref(), Some(whole), "cut after {k} bytes");
        assert_ne!(
            seen[1].endpoint, seen[0].endpoint,
            "another endpoint while one is ready (cut after {k}): {seen:#?}"
        );
    }
    let runs = (len + 1) as f64;
    assert_eq!(env.metric(&resumes("resumed")).await, runs);
    assert_eq!(
        env.metric("ssegate_stream_resume_gap_seconds_count{route=\"default/r\"} ")
            .await,
        runs
    );
    let lines = env.access_lines();
    let line = lines
        .iter()
        .find(|l| l["path"] == "/s")
        .expect("an access line for the resumed stream");
    assert_eq!(line["resumes"], 1);
    assert_eq!(line["outcome"], "complete");
    assert_eq!(line["events"], TOTAL);
}

/// A resume answered with a 404, HTML or JSON ends the client's stream in
/// error, with exactly the events before the cut and nothing of that answer.
async fn a_wrong_answer_ends_the_stream_with_nothing_of_it(proto: Protocol) {
    let env = Env::start(proto, RESUME).await;
    for then in ["404", "html", "json"] {
        let target = format!("/s?cut=3:5&then={then}");
        let got = env.fetch(Method::GET, &target).await;
        assert_eq!(got.body, events(1, 2), "then={then}");
        assert_eq!(got.end, End::Error, "then={then}");
        let seen = env.settled(&target).await;
        assert_eq!(seen.len(), 2, "no second attempt after an answer: {seen:#?}");
    }
    assert_eq!(env.metric(&resumes("bad_answer")).await, 3.0);
}

/// Connections closed unanswered are tried `maxAttempts` times, no more.
async fn max_attempts_are_kept(proto: Protocol) {
    let env = Env::start(proto, RESUME).await;
    let target = "/s?cut=2:0&then=close";
    let got = env.fetch(Method::GET, target).await;
    assert_eq!(got.body, events(1, 1));
    assert_eq!(got.end, End::Error);
    let seen = env.settled(target).await;
    assert_eq!(
        seen.len(),
        3,
        "the first request and maxAttempts (2) resumes: {seen:#?}"
    );
    assert_eq!(env.metric(&resumes("exhausted")).await, 1.0);
}

/// A resumed request that gets no answer is given up at the budget (1s).
async fn the_budget_is_kept(proto: Protocol) {
    let env = Env::start(proto, RESUME).await;
    let target = "/s?cut=2:4&then=stall";
    let started = Instant::now();
    let got = env.fetch(Method::GET, target).await;
    assert_eq!(got.body, events(1, 1));
    assert_eq!(got.end, End::Error);
    let took = got.at - started;
    assert!(
        took >= ms(900) && took < ms(3000),
        "the stream ended {took:?} after it started; the budget is 1s"
    );
}

/// A POST, and a stream that never carried an id, are not resumed.
async fn a_post_or_an_id_less_stream_is_not_resumed(proto: Protocol) {
    let env = Env::start(proto, RESUME).await;
    for (method, target) in [(Method::POST, "/s?cut=3:5&then=ok"), (Method::GET, "/s?cut=3:5&noid")] {
        let got = env.fetch(method.clone(), target).await;
        assert_eq!(got.end, End::Error, "{method} {target}");
        let seen = env.settled(target).await;
        assert_eq!(seen.len(), 1, "{method} {target} was sent again: {seen:#?}");
        assert_eq!(seen[0].method, method.as_str());
    }
    assert_eq!(env.metric(&resumes("no_id")).await, 1.0, "the GET without ids");
}

/// With `onIdleTimeout`, an upstream silent for the idle timeout is
/// resumed elsewhere instead of cut.
async fn a_silent_upstream_is_resumed_when_asked(proto: Protocol) {
    let env = Env::start_with(
        proto,
        "{resume: {enabled: true, onIdleTimeout: true}}",
        "  timeouts: {idle: 500ms}\n",
        2,
    )
    .await;
    let target = "/s?cut=3:6&hold&then=ok";
    let got = env.fetch(Method::GET, target).await;
    assert_eq!(got.body, events(1, TOTAL));
    assert_eq!(got.end, End::Clean);
    let seen = env.backend.seen(target);
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[1].last_event_id.as_deref(), Some("2"));
    let idle = "ssegate_stream_resumes_total{route=\"default/r\",reason=\"idle_timeout\",outcome=\"resumed\"} ";
    assert_eq!(env.metric(idle).await, 1.0);
}

/// An endpoint that turns unready mid-stream (a rollout) loses its
/// streams to the other endpoint at an event boundary within the rollout
/// window: the client's one response carries every event once.
async fn a_stream_leaves_an_endpoint_that_turns_unready(proto: Protocol) {
    let env = Env::start_with(proto, "{resume: {enabled: true, rolloutWindow: 500ms}}", "", 2).await;
    let target = "/s?slow=30";
    let fetch = env.fetch(Method::GET, target);
    let flip = async {
        // Once the stream has started, its endpoint turns unready.
        let deadline = Instant::now() + LIMIT;
        let first = loop {
            if let Some(s) = env.backend.seen(target).first() {
                break s.endpoint;
            }
            assert!(Instant::now() < deadline, "the stream never reached the backend");
            tokio::time::sleep(ms(20)).await;
        };
        tokio::time::sleep(ms(300)).await;
        let ready: Vec<bool> = env.backend.endpoints.iter().map(|e| *e != first).collect();
        env.set_ready(&ready);
        Instant::now()
    };
    let (got, flipped) = tokio::join!(fetch, flip);
    assert_eq!(got.body, events(1, 30));
    assert_eq!(got.end, End::Clean);
    let seen = env.backend.seen(target);
    assert_eq!(seen.len(), 2, "one move: {seen:#?}");
    assert_ne!(seen[1].endpoint, seen[0].endpoint);
    let moved = "ssegate_stream_resumes_total{route=\"default/r\",reason=\"endpoint_leaving\",outcome=\"resumed\"} ";
    assert_eq!(env.metric(moved).await, 1.0);
    // Within the window (500 ms), plus the folder's reload and the
    // watcher's period (100 ms), with a margin for a loaded machine.
    let took = seen[1].at - flipped;
    assert!(
        took < ms(2000),
        "the stream moved {took:?} after its endpoint turned unready"
    );
}

/// Ten streams on one endpoint, a second one added: the streams above the
/// even share (five) move to it, and every client keeps its one response.
async fn a_scale_out_moves_streams_above_the_even_share(proto: Protocol) {
    let env = Env::start_with(
        proto,
        "{resume: {enabled: true}, rebalance: {enabled: true, movesPerSecond: 50}}",
        "",
        1,
    )
    .await;
    let targets: Vec<String> = (0..10).map(|i| format!("/s?slow=40&n={i}")).collect();
    let fetches = futures_util::future::join_all(targets.iter().map(|t| env.fetch(Method::GET, t)));
    let scale = async {
        let deadline = Instant::now() + LIMIT;
        while targets.iter().any(|t| env.backend.seen(t).is_empty()) {
            assert!(Instant::now() < deadline, "the streams never all started");
            tokio::time::sleep(ms(20)).await;
        }
        env.set_ready(&[true, true]);
    };
    let (gots, ()) = tokio::join!(fetches, scale);
    for got in &gots {
        assert_eq!(got.body, events(1, 40));
        assert_eq!(got.end, End::Clean);
    }
    let second = env.backend.endpoints[1];
    let moved: Vec<_> = targets
        .iter()
        .filter(|t| env.backend.seen(t).iter().any(|s| s.endpoint == second))
        .collect();
    assert_eq!(
        moved.len(),
        5,
        "five of ten streams move to the new endpoint: {moved:?}"
    );
}

/// A client that reconnected with `Last-Event-ID: 2` and whose upstream is
/// cut before sending any event is resumed from the client's own id.
async fn a_cut_before_the_first_event_resumes_from_the_clients_id(proto: Protocol) {
    let env = Env::start(proto, RESUME).await;
    let target = "/s?cutfirst&then=ok";
    let got = env.fetch_with(Method::GET, target, &[("last-event-id", "2")]).await;
    assert_eq!(got.body, events(3, TOTAL));
    assert_eq!(got.end, End::Clean);
    let seen = env.backend.seen(target);
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[0].last_event_id.as_deref(), Some("2"), "the client's id went up");
    assert_eq!(seen[1].last_event_id.as_deref(), Some("2"), "and the resume kept it");
}

macro_rules! on_every_protocol {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test]
            async fn h1() {
                super::$name(Protocol::Http1).await;
            }

            #[tokio::test]
            async fn h2_tls() {
                super::$name(Protocol::H2Tls).await;
            }

            #[tokio::test]
            async fn h2c() {
                super::$name(Protocol::H2c).await;
            }
        }
    )*};
}

on_every_protocol!(
    killed_at_every_split,
    a_wrong_answer_ends_the_stream_with_nothing_of_it,
    max_attempts_are_kept,
    the_budget_is_kept,
    a_post_or_an_id_less_stream_is_not_resumed,
    a_silent_upstream_is_resumed_when_asked,
    a_stream_leaves_an_endpoint_that_turns_unready,
    a_scale_out_moves_streams_above_the_even_share,
    a_cut_before_the_first_event_resumes_from_the_clients_id,
);
