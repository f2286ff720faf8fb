//! Which address a request is from, against the real binary (issue 22):
//! the PROXY protocol (v1 and v2, opt-in per listener) and
//! `X-Forwarded-For`, each believed from `--trusted-proxies` and from no
//! one else.
//!
//! Loopback gives two kinds of peer without network namespaces: the test
//! connects from 127.0.0.1 or binds its socket to 127.0.0.2 (all of
//! 127.0.0.0/8 is local on Linux), and `--trusted-proxies` names one, the
//! other, or another network altogether.

mod common;

use common::process::Ssegate;
use common::tls::TestCert;
use common::*;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

const TRUSTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const UNTRUSTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// How long a refused connection may take to be closed, and how long a
/// response may take to arrive.
const LIMIT: Duration = Duration::from_secs(5);
/// How long "nothing reached the upstream" is watched for.
const WINDOW: Duration = Duration::from_millis(500);

struct Running {
    gw: Ssegate,
    up: Upstream,
    /// The TLS listener, when started with a certificate.
    tls: Option<SocketAddr>,
    _dir: tempfile::TempDir,
    _logs: tempfile::TempDir,
}

impl Running {
    /// The proxy listener's address.
    fn http(&self) -> SocketAddr {
        self.gw.proxy_addr().parse().unwrap()
    }

    /// Requests the upstream has received (each test request has a tag of its own).
    fn upstream_requests(&self) -> usize {
        self.up.journal.lock().unwrap().headers.len()
    }

    /// The value of the metric sample `series` (name and labels), 0 when absent.
    async fn metric(&self, series: &str) -> u64 {
        let text = self.gw.metrics_text().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    /// Waits until `series` reaches `want` (and checks it did not pass it).
    async fn wait_metric(&self, series: &str, want: u64) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let got = self.metric(series).await;
            if got >= want {
                assert_eq!(got, want, "{series}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{series} is {got}, not {want}:\n{}",
                self.gw.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A standalone ssegate with one Route for `pp.test` to an upstream, with
/// `flags`; with `cert`, also a TLS listener serving it.
async fn start(flags: &[&str], cert: Option<&TestCert>) -> Running {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.yaml"), backend_yaml("svc", &[(up.addr, true)])).unwrap();
    let tls_spec = if let Some(cert) = cert {
        std::fs::write(dir.path().join("s.yaml"), common::tls::secret_yaml("cert", None, cert)).unwrap();
        "  tls: [{secretName: cert}]\n"
    } else {
        ""
    };
    std::fs::write(
        dir.path().join("r.yaml"),
        format!(
            "apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {{name: r}}\nspec:\n  hostnames: [pp.test]\n{tls_spec}  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]\n"
        ),
    )
    .unwrap();
    let tls = cert.map(|_| SocketAddr::from((TRUSTED, free_port())));
    let tls_flag = tls.map(|a| a.to_string());
    let mut args = vec!["standalone", "--dir", dir.path().to_str().unwrap()];
    if let Some(addr) = &tls_flag {
        args.extend(["--listen-tls", addr]);
    }
    args.extend_from_slice(flags);
    let gw = Ssegate::start(&args, logs.path()).await;
    Running {
        gw,
        up,
        tls,
        _dir: dir,
        _logs: logs,
    }
}

/// A TCP connection to `addr` from the local address `from`.
async fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let stream = tokio::time::timeout(LIMIT, socket.connect(addr))
        .await
        .unwrap()
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A request for `/plain?tag=TAG` on `pp.test` with `extra` header lines,
/// closing the connection after it.
fn request(tag: &str, extra: &str) -> Vec<u8> {
    format!("GET /plain?tag={tag} HTTP/1.1\r\nHost: pp.test\r\n{extra}Connection: close\r\n\r\n").into_bytes()
}

/// Writes each of `parts` in a write of its own, then reads to the end.
async fn exchange_on(mut s: TcpStream, parts: &[&[u8]]) -> String {
    for part in parts {
        s.write_all(part).await.unwrap();
    }
    let mut out = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut out))
        .await
        .expect("the response within the limit")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes `parts` (ignoring failures: the server may already have closed)
/// and asserts the connection is closed within [`LIMIT`] with no byte
/// answered.
async fn refused_on(mut s: TcpStream, parts: &[&[u8]]) {
    for part in parts {
        let _ = s.write_all(part).await;
    }
    let mut out = Vec::new();
    let read = tokio::time::timeout(LIMIT, s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "still open after {LIMIT:?}");
    assert!(out.is_empty(), "answered: {}", String::from_utf8_lossy(&out));
}

fn assert_ok(response: &str) {
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    assert!(response.ends_with("upstream u"), "{response}");
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Vec<&'a str> {
    headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect()
}

/// The v2 signature, byte by byte.
const V2_SIGNATURE: [u8; 12] = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];

/// A v2 header: version 2 with `command` (0 LOCAL, 1 PROXY), the family and
/// transport byte, and the address block with any TLVs after it.
fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
    h.extend_from_slice(block);
    h
}

/// Poll `check` every 20 ms for `window`: whether it held throughout.
async fn holds_for(window: Duration, check: impl Fn() -> bool) -> bool {
    let end = Instant::now() + window;
    while Instant::now() < end {
        if !check() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

const REFUSED: &str = "ssegate_proxy_protocol_refused_total";

fn refused_series(listener: &str, reason: &str) -> String {
    format!("{REFUSED}{{listener=\"{listener}\",reason=\"{reason}\"}}")
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_from_a_trusted_peer_give_the_client_address() {
    let r = start(&["--trusted-proxies", "127.0.0.1/32", "--proxy-protocol", "http"], None).await;

    // v1, header and request in one write: the bytes behind the header are
    // the request. Two requests on the connection, both the client's.
    let mut s = connect_from(TRUSTED, r.http()).await;
    let mut bytes = b"PROXY TCP4 203.0.113.7 192.0.2.10 51000 80\r\n".to_vec();
    bytes.extend_from_slice(b"GET /plain?tag=v1a HTTP/1.1\r\nHost: pp.test\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n");
    s.write_all(&bytes).await.unwrap();
    let mut first = Vec::new();
    while !first.ends_with(b"upstream u") {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(LIMIT, s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed after {}", String::from_utf8_lossy(&first));
        first.extend_from_slice(&buf[..n]);
    }
    assert_ok(&String::from_utf8_lossy(&first));
    assert_ok(&exchange_on(s, &[&request("v1b", "")]).await);
    for tag in ["v1a", "v1b"] {
        let seen = r.up.headers(tag);
        assert_eq!(header(&seen, "x-real-ip"), ["203.0.113.7"], "{tag}");
        // The client is not a trusted proxy: what it wrote in
        // X-Forwarded-For is dropped, and the chain is the client alone.
        assert_eq!(header(&seen, "x-forwarded-for"), ["203.0.113.7"], "{tag}");
        // The port the client connected to, on the balancer.
        assert_eq!(header(&seen, "x-forwarded-port"), ["80"], "{tag}");
    }

    // v2 over IPv4, built byte by byte, sent in three writes that split
    // the fixed part and the address block.
    let header_v2: Vec<u8> = [
        &V2_SIGNATURE[..],
        &[0x21],                 // version 2, PROXY
        &[0x11],                 // AF_INET, STREAM
        &[0x00, 0x0c],           // 12 bytes of addresses
        &[198, 51, 100, 23],     // source 198.51.100.23
        &[192, 0, 2, 10],        // destination 192.0.2.10
        &51001u16.to_be_bytes(), // source port
        &8443u16.to_be_bytes(),  // destination port
    ]
    .concat();
    let s = connect_from(TRUSTED, r.http()).await;
    let response = exchange_on(
        s,
        &[
            &header_v2[..10],
            &header_v2[10..20],
            &header_v2[20..],
            &request("v2a", ""),
        ],
    )
    .await;
    assert_ok(&response);
    let seen = r.up.headers("v2a");
    assert_eq!(header(&seen, "x-real-ip"), ["198.51.100.23"]);
    assert_eq!(header(&seen, "x-forwarded-for"), ["198.51.100.23"]);
    assert_eq!(header(&seen, "x-forwarded-port"), ["8443"]);

    // v2 over IPv6, with TLVs (an authority and a unique id), which are skipped.
    let mut block = Vec::new();
    block.extend_from_slice(&"2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap().octets());
    block.extend_from_slice(&"2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    block.extend_from_slice(&51002u16.to_be_bytes());
    block.extend_from_slice(&443u16.to_be_bytes());
    block.extend_from_slice(&[0x02, 0x00, 0x07]);
    block.extend_from_slice(b"pp.test");
    block.extend_from_slice(&[0x05, 0x00, 0x04, 1, 2, 3, 4]);
    let s = connect_from(TRUSTED, r.http()).await;
    assert_ok(&exchange_on(s, &[&v2(0x1, 0x21, &block), &request("v2b", "")]).await);
    let seen = r.up.headers("v2b");
    assert_eq!(header(&seen, "x-real-ip"), ["2001:db8::7"]);
    assert_eq!(header(&seen, "x-forwarded-for"), ["2001:db8::7"]);

    // A balancer's own connection (v2 LOCAL, v1 UNKNOWN): the socket's
    // peer is the client, and the listener's port the port.
    let s = connect_from(TRUSTED, r.http()).await;
    assert_ok(&exchange_on(s, &[&v2(0x0, 0x00, &[]), &request("local", "")]).await);
    let s = connect_from(TRUSTED, r.http()).await;
    assert_ok(&exchange_on(s, &[b"PROXY UNKNOWN\r\n", &request("unknown", "")]).await);
    for tag in ["local", "unknown"] {
        let seen = r.up.headers(tag);
        assert_eq!(header(&seen, "x-real-ip"), ["127.0.0.1"], "{tag}");
        assert_eq!(header(&seen, "x-forwarded-for"), ["127.0.0.1"], "{tag}");
        assert_eq!(
            header(&seen, "x-forwarded-port"),
            [r.http().port().to_string().as_str()],
            "{tag}"
        );
    }

    // The access log names the client the header gave.
    let deadline = Instant::now() + LIMIT;
    while !r.gw.logs().contains("client=198.51.100.23") {
        assert!(
            Instant::now() < deadline,
            "no access line for the v2 client:\n{}",
            r.gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing was refused.
    assert!(!r.gw.metrics_text().await.contains(REFUSED));
}

#[tokio::test]
async fn proxy_protocol_from_an_untrusted_peer_or_without_a_good_header_is_closed_unanswered() {
    // Only 127.0.0.1 is trusted; the client header timeout is short, for
    // the header that never ends.
    let r = start(
        &[
            "--trusted-proxies",
            "127.0.0.1",
            "--proxy-protocol",
            "http",
            "--client-header-timeout",
            "1s",
        ],
        None,
    )
    .await;
    let v1 = b"PROXY TCP4 203.0.113.7 192.0.2.10 51000 80\r\n";

    // A valid header from a peer that is not trusted.
    refused_on(
        connect_from(UNTRUSTED, r.http()).await,
        &[v1, &request("untrusted", "")],
    )
    .await;
    r.wait_metric(&refused_series("http", "untrusted"), 1).await;
    // No header: a request straight to the port.
    refused_on(connect_from(TRUSTED, r.http()).await, &[&request("missing", "")]).await;
    r.wait_metric(&refused_series("http", "missing"), 1).await;
    // Malformed headers: v1 with a field missing, v2 with version 3.
    refused_on(
        connect_from(TRUSTED, r.http()).await,
        &[
            b"PROXY TCP4 203.0.113.7 192.0.2.10 51000\r\n",
            &request("malformed1", ""),
        ],
    )
    .await;
    let mut v3 = v2(0x1, 0x11, &[203, 0, 113, 7, 192, 0, 2, 10, 0xc7, 0x38, 0, 80]);
    v3[12] = 0x31;
    refused_on(
        connect_from(TRUSTED, r.http()).await,
        &[&v3, &request("malformed2", "")],
    )
    .await;
    r.wait_metric(&refused_series("http", "malformed"), 2).await;
    // Half a header, then the client's end: closed.
    let mut s = connect_from(TRUSTED, r.http()).await;
    s.write_all(b"PROXY TCP4 203.0.113.7").await.unwrap();
    s.shutdown().await.unwrap();
    refused_on(s, &[]).await;
    r.wait_metric(&refused_series("http", "closed"), 1).await;
    // Half a header, then silence: closed after the header timeout.
    let mut s = connect_from(TRUSTED, r.http()).await;
    s.write_all(b"PROXY TCP4 203.0.113.7").await.unwrap();
    let started = Instant::now();
    refused_on(s, &[]).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    r.wait_metric(&refused_series("http", "timeout"), 1).await;

    // Every refusal is counted; none of those requests reached the upstream.
    assert!(
        holds_for(WINDOW, || r.upstream_requests() == 0).await,
        "a refused connection's request reached the upstream"
    );
    // While the same request with a header from the trusted peer does.
    let s = connect_from(TRUSTED, r.http()).await;
    assert_ok(&exchange_on(s, &[v1, &request("accepted", "")]).await);
    assert_eq!(r.upstream_requests(), 1);
    assert_eq!(header(&r.up.headers("accepted"), "x-real-ip"), ["203.0.113.7"]);
}

#[tokio::test]
async fn proxy_protocol_with_another_network_trusted_refuses_loopback() {
    // The balancer is said to be in 10.0.0.0/8; the test's 127.0.0.1 is not.
    let r = start(&["--trusted-proxies", "10.0.0.0/8", "--proxy-protocol", "http"], None).await;
    let v2_header = v2(0x1, 0x11, &[203, 0, 113, 7, 192, 0, 2, 10, 0xc7, 0x38, 0, 80]);
    refused_on(connect_from(TRUSTED, r.http()).await, &[&v2_header, &request("a", "")]).await;
    refused_on(
        connect_from(TRUSTED, r.http()).await,
        &[b"PROXY TCP4 203.0.113.7 192.0.2.10 51000 80\r\n", &request("b", "")],
    )
    .await;
    r.wait_metric(&refused_series("http", "untrusted"), 2).await;
    assert!(
        holds_for(WINDOW, || r.upstream_requests() == 0).await,
        "a refused connection's request reached the upstream"
    );
}

#[tokio::test]
async fn x_forwarded_for_is_believed_from_trusted_peers_only() {
    let r = start(&["--trusted-proxies", "127.0.0.1/32, 10.0.0.0/8"], None).await;

    // From a trusted peer: the rightmost untrusted entry, past trusted hops,
    // over several fields; the chain is kept and the peer appended.
    let s = connect_from(TRUSTED, r.http()).await;
    let xff = "X-Forwarded-For: 198.51.100.1, 203.0.113.7\r\nX-Forwarded-For: 10.1.2.3\r\nX-Real-IP: 6.6.6.6\r\n";
    assert_ok(&exchange_on(s, &[&request("trusted", xff)]).await);
    let seen = r.up.headers("trusted");
    assert_eq!(header(&seen, "x-real-ip"), ["203.0.113.7"]);
    assert_eq!(
        header(&seen, "x-forwarded-for"),
        ["198.51.100.1, 203.0.113.7, 10.1.2.3, 127.0.0.1"]
    );
    // Every entry trusted: the leftmost. No header: the peer.
    let s = connect_from(TRUSTED, r.http()).await;
    assert_ok(&exchange_on(s, &[&request("all-trusted", "X-Forwarded-For: 10.9.9.9, 10.1.1.1\r\n")]).await);
    assert_eq!(header(&r.up.headers("all-trusted"), "x-real-ip"), ["10.9.9.9"]);
    let s = connect_from(TRUSTED, r.http()).await;
    assert_ok(&exchange_on(s, &[&request("none", "")]).await);
    assert_eq!(header(&r.up.headers("none"), "x-real-ip"), ["127.0.0.1"]);
    assert_eq!(header(&r.up.headers("none"), "x-forwarded-for"), ["127.0.0.1"]);

    // From an untrusted peer, whatever it says: it is the client, and its
    // chain is replaced by its own address.
    for (tag, xff) in [
        ("spoof1", "X-Forwarded-For: 203.0.113.7\r\n"),
        (
            "spoof2",
            "X-Forwarded-For: 10.1.2.3, 127.0.0.1\r\nX-Real-IP: 203.0.113.7\r\n",
        ),
        ("spoof3", "X-Forwarded-For: unknown, , 1.2.3.4:80\r\n"),
    ] {
        let s = connect_from(UNTRUSTED, r.http()).await;
        assert_ok(&exchange_on(s, &[&request(tag, xff)]).await);
        let seen = r.up.headers(tag);
        assert_eq!(header(&seen, "x-real-ip"), ["127.0.0.2"], "{tag}");
        assert_eq!(header(&seen, "x-forwarded-for"), ["127.0.0.2"], "{tag}");
    }

    // HTTP/2 (cleartext, prior knowledge) takes the same path to the answer.
    for (from, tag, want) in [
        (TRUSTED, "h2-trusted", "203.0.113.7"),
        (UNTRUSTED, "h2-spoof", "127.0.0.2"),
    ] {
        let client = reqwest::Client::builder()
            .no_proxy()
            .http2_prior_knowledge()
            .local_address(IpAddr::V4(from))
            .resolve("pp.test", r.http())
            .build()
            .unwrap();
        let resp = client
            .get(format!("http://pp.test:{}/plain?tag={tag}", r.http().port()))
            .header("x-forwarded-for", "203.0.113.7")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&r.up.headers(tag), "x-real-ip"), [want], "{tag}");
    }

    // The access log's client is the resolved one.
    let deadline = Instant::now() + LIMIT;
    let logs = loop {
        let logs = r.gw.logs();
        if logs.contains("client=203.0.113.7") && logs.contains("client=127.0.0.2") {
            break logs;
        }
        assert!(Instant::now() < deadline, "access lines missing:\n{logs}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!logs.contains("client=6.6.6.6"), "{logs}");
}

/// A TLS client over `tcp` (on which a PROXY header may have been sent),
/// trusting `cert`, offering `alpn`.
async fn tls_over<S: AsyncRead + AsyncWrite + Unpin>(
    tcp: S,
    cert: &TestCert,
    alpn: &[u8],
) -> io::Result<tokio_rustls::client::TlsStream<S>> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone().into()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("pp.test").unwrap();
    tokio::time::timeout(LIMIT, connector.connect(name, tcp)).await.unwrap()
}

#[tokio::test]
async fn proxy_protocol_on_the_tls_listener_comes_before_the_handshake() {
    let cert = common::tls::cert(&["pp.test"]);
    let r = start(
        &["--trusted-proxies", "127.0.0.1/32", "--proxy-protocol", "https"],
        Some(&cert),
    )
    .await;
    let tls_addr = r.tls.unwrap();
    let header_v2 = v2(0x1, 0x11, &[203, 0, 113, 7, 192, 0, 2, 10, 0xc7, 0x38, 0x01, 0xbb]);

    // The header, then the handshake, then HTTP/1.1.
    let mut tcp = connect_from(TRUSTED, tls_addr).await;
    tcp.write_all(&header_v2).await.unwrap();
    let mut s = tls_over(tcp, &cert, b"http/1.1").await.unwrap();
    s.write_all(&request("tls-h1", "X-Forwarded-For: 6.6.6.6\r\n"))
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_ok(&String::from_utf8_lossy(&out));
    let seen = r.up.headers("tls-h1");
    assert_eq!(header(&seen, "x-real-ip"), ["203.0.113.7"]);
    assert_eq!(header(&seen, "x-forwarded-for"), ["203.0.113.7"]);
    assert_eq!(header(&seen, "x-forwarded-proto"), ["https"]);
    assert_eq!(header(&seen, "x-forwarded-port"), ["443"]);

    // The header and the ClientHello in one segment, then HTTP/2.
    let (tcp, sent) = Coalesced::new(connect_from(TRUSTED, tls_addr).await, &header_v2);
    let s = tls_over(tcp, &cert, b"h2").await.unwrap();
    assert!(sent.load(Ordering::Relaxed) > header_v2.len());
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://pp.test/plain?tag=tls-h2")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(LIMIT, send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&r.up.headers("tls-h2"), "x-real-ip"), ["203.0.113.7"]);

    // No header: the ClientHello is not one; closed unanswered, counted.
    let tcp = connect_from(TRUSTED, tls_addr).await;
    assert!(tls_over(tcp, &cert, b"http/1.1").await.is_err());
    r.wait_metric(&refused_series("https", "missing"), 1).await;
    // An untrusted peer, header or not.
    let mut tcp = connect_from(UNTRUSTED, tls_addr).await;
    let _ = tcp.write_all(&header_v2).await;
    assert!(tls_over(tcp, &cert, b"http/1.1").await.is_err());
    r.wait_metric(&refused_series("https", "untrusted"), 1).await;

    // The plain listener was not opted in: no header expected there, and
    // a PROXY line is just a bad request.
    let s = connect_from(TRUSTED, r.http()).await;
    assert_ok(&exchange_on(s, &[&request("plain", "")]).await);
    assert_eq!(header(&r.up.headers("plain"), "x-real-ip"), ["127.0.0.1"]);
    let s = connect_from(TRUSTED, r.http()).await;
    let response = exchange_on(
        s,
        &[b"PROXY TCP4 203.0.113.7 192.0.2.10 51000 80\r\n", &request("x", "")],
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    assert_eq!(r.metric(&refused_series("http", "missing")).await, 0);
}

/// A client socket whose first write carries `prefix` in front of the
/// bytes written (the TLS ClientHello), as a balancer often sends them in
/// one segment; `sent` is how many bytes that first write carried.
struct Coalesced {
    inner: TcpStream,
    prefix: Option<Vec<u8>>,
    sent: Arc<AtomicUsize>,
}

impl Coalesced {
    fn new(inner: TcpStream, prefix: &[u8]) -> (Coalesced, Arc<AtomicUsize>) {
        let sent = Arc::new(AtomicUsize::new(0));
        let prefix = Some(prefix.to_vec());
        (
            Coalesced {
                inner,
                prefix,
                sent: sent.clone(),
            },
            sent,
        )
    }
}

impl AsyncRead for Coalesced {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Coalesced {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let Some(prefix) = self.prefix.take() else {
            return Pin::new(&mut self.inner).poll_write(cx, data);
        };
        let all = [&prefix[..], data].concat();
        match Pin::new(&mut self.inner).poll_write(cx, &all) {
            Poll::Ready(Ok(n)) => {
                // A few hundred bytes into an empty loopback socket.
                assert_eq!(n, all.len(), "a short first write");
                self.sent.store(n, Ordering::Relaxed);
                Poll::Ready(Ok(data.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                self.prefix = Some(prefix);
                Poll::Pending
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn proxy_protocol_without_trusted_proxies_or_with_a_bad_list_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let run = |flags: &[&str]| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ssegate"))
            .args(["standalone", "--dir", dir.path().to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--admin", &format!("127.0.0.1:{}", free_port())])
            .args(flags)
            .env_remove("SSEGATE_TRUSTED_PROXIES")
            .env_remove("SSEGATE_PROXY_PROTOCOL")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ssegate {flags:?} still running after 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    };
    let (status, stderr) = run(&["--proxy-protocol", "http,https"]);
    assert!(!status.success());
    assert!(stderr.contains("--proxy-protocol needs --trusted-proxies"), "{stderr}");
    let (status, stderr) = run(&["--trusted-proxies", "10.0.0.0/8 192.168.0.0/16"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("entries are separated by commas"), "{stderr}");
    let (status, stderr) = run(&["--trusted-proxies", "10.0.0.0/8", "--proxy-protocol", "tcp"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`tcp` is not a listener: the listeners are http and https"),
        "{stderr}"
    );
}
