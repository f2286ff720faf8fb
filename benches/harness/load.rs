//! Load generators: SSE readers, idle streams and plain requests, over
//! cleartext HTTP/1.1 or, for the SSE and idle ones, TLS with HTTP/1.1 or
//! HTTP/2, recording into per-task histograms that are merged at the end (no
//! shared state per event).

use super::upstream::now_ns;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

async fn connect(addr: SocketAddr) -> anyhow::Result<http1::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

fn get(addr: SocketAddr, path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::builder()
        .uri(path)
        .header("host", addr.to_string())
        .body(Empty::new())
        .unwrap()
}

/// Reads `data: <ns> ...` stamps and records receive minus send, in µs.
fn record_stamps(chunk: &[u8], hist: &mut Histogram<u64>, now: u64, carry: &mut Vec<u8>) -> u64 {
    carry.extend_from_slice(chunk);
    let mut events = 0;
    let mut start = 0;
    while let Some(pos) = find(&carry[start..], b"data: ") {
        let from = start + pos + 6;
        let Some(end) = carry[from..].iter().position(|b| *b == b' ' || *b == b'\n') else {
            break;
        };
        if let Some(sent) = std::str::from_utf8(&carry[from..from + end])
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            let _ = hist.record((now.saturating_sub(sent) / 1000).max(1));
            events += 1;
        }
        start = from + end;
    }
    carry.drain(..start);
    events
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub struct LatencyResult {
    pub hist: Histogram<u64>,
    pub events: u64,
    pub failed_streams: u64,
}

/// `streams` concurrent SSE streams at `rate` events/s each over
/// `transport` (on HTTP/2, `per_conn` streams share a connection); events in
/// the first second are warm-up and not recorded. The same upstream stream
/// whatever the transport, so the figures compare across transports.
pub async fn sse_latency(
    addr: SocketAddr,
    transport: Transport,
    streams: usize,
    rate: u64,
    duration: Duration,
) -> LatencyResult {
    let mut tasks = Vec::with_capacity(streams);
    let record_from = now_ns() + 1_000_000_000 + 1_000_000_000; // ramp + warm-up
    let end = Instant::now() + Duration::from_secs(2) + duration;
    let connector = transport.connector();
    let per_conn = transport.per_conn();
    // One cell per shared HTTP/2 connection: the first of its streams to
    // start opens it, so connections ramp up with their streams.
    let h2_conns: Vec<std::sync::Arc<tokio::sync::OnceCell<H2Sender>>> = if matches!(transport, Transport::TlsH2 { .. })
    {
        (0..streams.div_ceil(per_conn)).map(|_| Default::default()).collect()
    } else {
        Vec::new()
    };
    for i in 0..streams {
        let delay = Duration::from_micros((1_000_000 * i / streams.max(1)) as u64);
        let connector = connector.clone();
        let h2_conn = h2_conns.get(i / per_conn).cloned();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut hist = histogram();
            let mut events = 0;
            // Bounded like the reading below: a target that never answers
            // fails the stream instead of holding the run.
            let open = async {
                let mut sender = match &h2_conn {
                    Some(cell) => Sender::H2(
                        cell.get_or_try_init(|| open_h2(addr, connector.as_ref().unwrap()))
                            .await?
                            .clone(),
                    ),
                    None => open_conn(addr, transport, connector.as_ref()).await?,
                };
                let resp = sender
                    .send(request(addr, transport, &format!("/sse?rate={rate}")))
                    .await?;
                anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
                Ok::<_, anyhow::Error>((sender, resp.into_body()))
            };
            let (_sender, mut body) = tokio::time::timeout_at(end.into(), open).await??;
            let mut carry = Vec::new();
            let mut warm = histogram();
            while Instant::now() < end {
                let Ok(frame) = tokio::time::timeout_at(end.into(), body.frame()).await else {
                    break;
                };
                let Some(frame) = frame else { break };
                if let Ok(data) = frame?.into_data() {
                    let now = now_ns();
                    if now >= record_from {
                        events += record_stamps(&data, &mut hist, now, &mut carry);
                    } else {
                        record_stamps(&data, &mut warm, now, &mut carry);
                    }
                }
            }
            Ok::<_, anyhow::Error>((hist, events))
        }));
    }
    let mut out = LatencyResult {
        hist: histogram(),
        events: 0,
        failed_streams: 0,
    };
    for t in tasks {
        match t.await {
            Ok(Ok((h, e))) => {
                out.hist.add(h).unwrap();
                out.events += e;
            }
            _ => out.failed_streams += 1,
        }
    }
    out
}

/// How idle streams reach the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Cleartext HTTP/1.1, one stream per connection.
    Plain,
    /// TLS with ALPN `http/1.1`, one stream per connection.
    TlsH1,
    /// TLS with ALPN `h2`, this many streams per connection (a browser
    /// opens one connection per origin and multiplexes its streams on it).
    TlsH2 { per_conn: usize },
}

impl Transport {
    /// The name in results.json.
    pub fn key(self) -> String {
        match self {
            Transport::Plain => "h1".into(),
            Transport::TlsH1 => "tls_h1".into(),
            Transport::TlsH2 { per_conn } => format!("tls_h2_{per_conn}"),
        }
    }

    /// Streams per connection: `per_conn` on HTTP/2, else one.
    pub fn per_conn(self) -> usize {
        match self {
            Transport::TlsH2 { per_conn } => per_conn.max(1),
            _ => 1,
        }
    }

    /// The TLS client, offering the transport's protocol alone so that
    /// ALPN cannot settle on another one unnoticed.
    fn connector(self) -> Option<tokio_rustls::TlsConnector> {
        match self {
            Transport::Plain => None,
            Transport::TlsH1 => Some(tls_connector(b"http/1.1")),
            Transport::TlsH2 { .. } => Some(tls_connector(b"h2")),
        }
    }
}

type H2Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// A connection's request side, whichever protocol it speaks.
enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(H2Sender),
}

impl Sender {
    async fn send(&mut self, req: http::Request<Empty<Bytes>>) -> hyper::Result<http::Response<hyper::body::Incoming>> {
        match self {
            Sender::H1(s) => s.send_request(req).await,
            Sender::H2(s) => s.send_request(req).await,
        }
    }
}

/// A fresh connection over `transport` (`connector` from
/// [`Transport::connector`]).
async fn open_conn(
    addr: SocketAddr,
    transport: Transport,
    connector: Option<&tokio_rustls::TlsConnector>,
) -> anyhow::Result<Sender> {
    Ok(match transport {
        Transport::Plain => Sender::H1(connect(addr).await?),
        Transport::TlsH1 => {
            let tls = tls_connect(connector.unwrap(), addr, b"http/1.1").await?;
            let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            Sender::H1(sender)
        }
        Transport::TlsH2 { .. } => Sender::H2(open_h2(addr, connector.unwrap()).await?),
    })
}

/// A TLS connection with ALPN `h2`, with hyper's HTTP/2 client defaults
/// (16 KiB frames, 2 MiB stream and 5 MiB connection windows), close to a
/// browser's.
async fn open_h2(addr: SocketAddr, connector: &tokio_rustls::TlsConnector) -> anyhow::Result<H2Sender> {
    let tls = tls_connect(connector, addr, b"h2").await?;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// A GET of `path` as `transport` carries it: over TLS, for the name the
/// certificate is for (on HTTP/2, in the `:authority`).
fn request(addr: SocketAddr, transport: Transport, path: &str) -> http::Request<Empty<Bytes>> {
    match transport {
        Transport::Plain => get(addr, path),
        Transport::TlsH1 => http::Request::builder()
            .uri(path)
            .header("host", super::peers::TLS_NAME)
            .body(Empty::new())
            .unwrap(),
        Transport::TlsH2 { .. } => http::Request::builder()
            .uri(format!("https://{}{path}", super::peers::TLS_NAME))
            .body(Empty::new())
            .unwrap(),
    }
}

/// A client that trusts only the harness's certificate and offers `alpn`.
fn tls_connector(alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(super::peers::bench_cert().der.clone().into()).unwrap();
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    alpn: &[u8],
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(super::peers::TLS_NAME)?.to_owned();
    let tls = connector.connect(name, tcp).await?;
    anyhow::ensure!(
        tls.get_ref().1.alpn_protocol() == Some(alpn),
        "ALPN {:?} not agreed",
        String::from_utf8_lossy(alpn)
    );
    Ok(tls)
}

/// Whatever keeps a stream (and its connection) open while it is held.
type Held = Box<dyn std::any::Any + Send>;

/// Opens the streams of one connection (one, or `per_conn` on HTTP/2) and
/// waits for each one's first byte. Returns how many opened, and what to
/// hold.
async fn open_idle(
    addr: SocketAddr,
    transport: Transport,
    connector: Option<tokio_rustls::TlsConnector>,
    path: &'static str,
) -> anyhow::Result<(usize, Held)> {
    let first_byte = |mut body: hyper::body::Incoming| async move {
        tokio::time::timeout(Duration::from_secs(10), body.frame()).await?;
        Ok::<_, anyhow::Error>(body)
    };
    match open_conn(addr, transport, connector.as_ref()).await? {
        Sender::H1(mut sender) => {
            let resp = sender.send_request(request(addr, transport, path)).await?;
            anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
            let body = first_byte(resp.into_body()).await?;
            Ok((1, Box::new((sender, body))))
        }
        Sender::H2(sender) => {
            let per_conn = transport.per_conn();
            let mut streams = Vec::with_capacity(per_conn);
            for _ in 0..per_conn {
                let mut sender = sender.clone();
                streams.push(tokio::spawn(async move {
                    let resp = sender.send_request(request(addr, transport, path)).await?;
                    anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
                    first_byte(resp.into_body()).await
                }));
            }
            let mut bodies = Vec::with_capacity(per_conn);
            for s in streams {
                if let Ok(Ok(body)) = s.await {
                    bodies.push(body);
                }
            }
            Ok((bodies.len(), Box::new((sender, bodies))))
        }
    }
}

/// Opens `streams` idle SSE streams (GETs of `path`, the upstream's
/// `/idle` or `/idle?id=N`) over `transport`, waits for each first byte,
/// and calls `measure` while they are all open. Returns how many opened.
pub async fn hold_idle<F: FnOnce() -> T, T>(
    addr: SocketAddr,
    transport: Transport,
    path: &'static str,
    streams: usize,
    measure: F,
) -> (usize, T) {
    let per_conn = transport.per_conn();
    let connector = transport.connector();
    let conns = streams.div_ceil(per_conn);
    let mut open: Vec<Held> = Vec::with_capacity(conns);
    let mut count = 0;
    // About 250 streams opening at a time.
    for batch in (0..conns).collect::<Vec<_>>().chunks((250 / per_conn).max(1)) {
        let mut pending = Vec::new();
        for _ in batch {
            let connector = connector.clone();
            pending.push(tokio::spawn(open_idle(addr, transport, connector, path)));
        }
        for p in pending {
            if let Ok(Ok((n, held))) = p.await {
                count += n;
                open.push(held);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let value = measure();
    if let Some(secs) = std::env::var("SSEGATE_BENCH_HOLD").ok().and_then(|s| s.parse().ok()) {
        eprintln!("   holding {count} streams for {secs} s");
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    drop(open);
    (count, value)
}

/// One stream as fast as the upstream can write (32-byte pads, about 70
/// bytes an event), over `transport`: events/s and bytes/s. Bounded in time
/// throughout: a stream that stalls ends the measurement, it does not hang it.
pub async fn throughput(addr: SocketAddr, transport: Transport, duration: Duration) -> anyhow::Result<(f64, f64)> {
    let open = async {
        let mut sender = open_conn(addr, transport, transport.connector().as_ref()).await?;
        let resp = sender.send(request(addr, transport, "/sse?rate=0&pad=32")).await?;
        anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
        Ok::<_, anyhow::Error>((sender, resp.into_body()))
    };
    let (_sender, mut body) = tokio::time::timeout(Duration::from_secs(10), open).await??;
    let warm_until = Instant::now() + Duration::from_millis(500);
    while let Ok(Some(frame)) = tokio::time::timeout_at(warm_until.into(), body.frame()).await {
        frame?;
    }
    // Newlines over the whole run, three an event (`id`, `data`, the blank
    // line): counted per chunk, an event split across chunks would be lost.
    let (mut bytes, mut newlines) = (0u64, 0u64);
    let start = Instant::now();
    let end = start + duration;
    while let Ok(Some(frame)) = tokio::time::timeout_at(end.into(), body.frame()).await {
        if let Ok(data) = frame?.into_data() {
            bytes += data.len() as u64;
            newlines += data.iter().filter(|b| **b == b'\n').count() as u64;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(((newlines / 3) as f64 / secs, bytes as f64 / secs))
}

pub struct PlainResult {
    pub rps: f64,
    pub hist: Histogram<u64>,
    pub errors: u64,
}

/// Plain GETs on `conns` keep-alive connections. `rate` None: closed loop
/// (each connection sends as soon as it has an answer). `rate` Some: open
/// loop at that total rate, latency measured from the scheduled send time
/// so a stalled proxy cannot hide its queueing.
pub async fn plain(addr: SocketAddr, conns: usize, rate: Option<f64>, duration: Duration) -> PlainResult {
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + duration;
    let mut tasks = Vec::new();
    for c in 0..conns {
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let (mut done, mut errors) = (0u64, 0u64);
            let Ok(mut sender) = connect(addr).await else {
                return (hist, 0, 1);
            };
            let interval = rate.map(|r| Duration::from_secs_f64(conns as f64 / r));
            let mut next = start + interval.map_or(Duration::ZERO, |i| i.mul_f64(c as f64 / conns as f64));
            tokio::time::sleep_until(start.into()).await;
            while Instant::now() < end {
                if interval.is_some() {
                    tokio::time::sleep_until(next.into()).await;
                }
                let sent = if interval.is_some() { next } else { Instant::now() };
                let ok = match sender.send_request(get(addr, "/plain")).await {
                    Ok(resp) => resp.status() == 200 && resp.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    let _ = hist.record(sent.elapsed().as_micros().max(1) as u64);
                    done += 1;
                } else {
                    errors += 1;
                    match connect(addr).await {
                        Ok(s) => sender = s,
                        Err(_) => break,
                    }
                }
                if let Some(i) = interval {
                    next += i;
                }
            }
            (hist, done, errors)
        }));
    }
    let mut out = PlainResult {
        rps: 0.0,
        hist: histogram(),
        errors: 0,
    };
    let mut total = 0;
    for t in tasks {
        if let Ok((h, d, e)) = t.await {
            out.hist.add(h).unwrap();
            total += d;
            out.errors += e;
        }
    }
    out.rps = total as f64 / duration.as_secs_f64();
    out
}

/// A GET's body as text, on a fresh connection.
pub async fn fetch(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut sender = connect(addr).await?;
    let resp = sender.send_request(get(addr, path)).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// What one [`event_source`] client saw.
#[derive(Default, Debug)]
pub struct EventSourceClient {
    /// Events received, and their ids that were not the one expected.
    pub events: u64,
    pub duplicates: u64,
    pub missing: u64,
    /// Times its response ended (or failed) before the end of the run.
    pub disconnects: u64,
    /// Requests after the first (each with `Last-Event-ID`).
    pub reconnects: u64,
    /// Whether the kill found it on the killed upstream (undecided until
    /// something happens after the kill).
    pub on_killed: Option<bool>,
    /// From the kill to its first event from another upstream.
    pub gap: Option<Duration>,
    /// Upstream tags of the events received before the kill, last one.
    pub tag_at_kill: Option<String>,
    /// Why a request failed, the first time one did.
    pub error: Option<String>,
}

/// One client of `/sse?rate=R&tag=1` that behaves like a browser's
/// EventSource: when its response ends or fails, it waits `retry` and asks
/// again with `Last-Event-ID` set to the last id it received. Reads until
/// `end`; every wait is bounded by it. `kill`, once set, is when the
/// upstream tagged `killed` was SIGKILLed: the client then records whether
/// it was on it and, if so, the time to its first event from another one.
pub async fn event_source(
    addr: SocketAddr,
    rate: u64,
    retry: Duration,
    end: Instant,
    kill: std::sync::Arc<std::sync::OnceLock<Instant>>,
    killed: &'static str,
) -> EventSourceClient {
    let mut c = EventSourceClient::default();
    let mut last_id: Option<u64> = None;
    let mut last_tag = String::new();
    let path = format!("/sse?rate={rate}&tag=1");
    let mut first = true;
    while Instant::now() < end {
        if !first {
            tokio::time::sleep_until(end.min(Instant::now() + retry).into()).await;
            if Instant::now() >= end {
                break;
            }
            c.reconnects += 1;
        }
        first = false;
        let open = async {
            let mut sender = connect(addr).await?;
            let mut req = get(addr, &path);
            req.headers_mut()
                .insert("accept", http::HeaderValue::from_static("text/event-stream"));
            if let Some(id) = last_id {
                req.headers_mut().insert("last-event-id", id.into());
            }
            let resp = sender.send_request(req).await?;
            anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
            Ok::<_, anyhow::Error>((sender, resp.into_body()))
        };
        let (_sender, mut body) = match tokio::time::timeout_at(end.into(), open).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                c.error.get_or_insert_with(|| e.to_string());
                continue;
            }
            Err(_) => break,
        };
        let mut carry: Vec<u8> = Vec::new();
        let ended = loop {
            let frame = match tokio::time::timeout_at(end.into(), body.frame()).await {
                Err(_) => break false,
                Ok(None) => break true,
                Ok(Some(Err(e))) => {
                    c.error.get_or_insert_with(|| e.to_string());
                    break true;
                }
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else { continue };
            let now = Instant::now();
            carry.extend_from_slice(&data);
            while let Some(pos) = find(&carry, b"\n\n") {
                let event: Vec<u8> = carry.drain(..pos + 2).collect();
                let text = String::from_utf8_lossy(&event);
                let id = text
                    .lines()
                    .find_map(|l| l.strip_prefix("id: "))
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let tag = text
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .and_then(|d| d.rsplit_once('@'))
                    .map(|(_, t)| t.trim().to_owned())
                    .unwrap_or_default();
                let Some(id) = id else { continue };
                c.events += 1;
                match last_id {
                    Some(l) if id <= l => c.duplicates += 1,
                    Some(l) => c.missing += id - l - 1,
                    None => c.missing += id,
                }
                last_id = Some(last_id.map_or(id, |l| l.max(id)));
                if let Some(k) = kill.get().filter(|k| now >= **k) {
                    if c.on_killed.is_none() {
                        c.on_killed = Some(last_tag == killed);
                        c.tag_at_kill = Some(last_tag.clone());
                    }
                    if c.on_killed == Some(true) && c.gap.is_none() && tag != killed {
                        c.gap = Some(now - *k);
                    }
                }
                last_tag = tag;
            }
        };
        if !ended || Instant::now() >= end {
            break;
        }
        c.disconnects += 1;
        if kill.get().is_some_and(|k| Instant::now() >= *k) && c.on_killed.is_none() {
            c.on_killed = Some(last_tag == killed);
            c.tag_at_kill = Some(last_tag.clone());
        }
    }
    c
}
