//! Hostile and careless clients against the real binary, on raw sockets:
//! connections that never finish, descriptors used up, a Host the upstream
//! would see differently from the one that chose the Route, paths that try
//! to climb out of their prefix, and framing the upstream gets wrong.
//! Each test fails on a proxy that lacks the protection it names.

mod common;

use common::process::Ssegate;
use common::raw::{closed_within, exchange, RawUpstream};
use common::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A Route named `name` for `host` (or any host when empty) and `prefix`.
fn prefix_route(name: &str, host: &str, prefix: &str, service: &str) -> String {
    let hostnames = if host.is_empty() {
        String::new()
    } else {
        format!("  hostnames: [{host}]\n")
    };
    format!(
        "apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}}}\nspec:\n{hostnames}  rules:\n    - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n      backendRefs: [{{name: {service}, port: 80}}]\n"
    )
}

struct Running {
    gw: Ssegate,
    _dir: tempfile::TempDir,
    _logs: tempfile::TempDir,
}

/// A standalone ssegate with one Route (extra spec lines `route_spec`) to
/// one upstream at `addr`, with extra flags.
async fn one_route(addr: std::net::SocketAddr, route_spec: &str, flags: &[&str]) -> Running {
    start(
        &[
            ("b.yaml", backend_yaml("svc", &[(addr, true)])),
            ("r.yaml", route_yaml("r", route_spec, "svc")),
        ],
        flags,
    )
    .await
}

/// A standalone ssegate over a folder holding `files`, with extra flags.
async fn start(files: &[(&str, String)], flags: &[&str]) -> Running {
    start_with(files, flags, |_| {}).await
}

async fn start_with(
    files: &[(&str, String)],
    flags: &[&str],
    configure: impl FnOnce(&mut std::process::Command),
) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    for (name, yaml) in files {
        std::fs::write(dir.path().join(name), yaml).unwrap();
    }
    let mut args = vec!["standalone", "--dir", dir.path().to_str().unwrap()];
    args.extend_from_slice(flags);
    let gw = Ssegate::start_with(&args, logs.path(), configure).await;
    Running {
        gw,
        _dir: dir,
        _logs: logs,
    }
}

fn head_of(response: &str) -> &str {
    response.split("\r\n").next().unwrap_or("")
}

// --- 1. Timeouts on client connections ---------------------------------------

#[tokio::test]
async fn unfinished_and_silent_connections_are_closed_after_the_header_timeout() {
    let up = Upstream::start("u").await;
    let r = one_route(
        up.addr,
        "",
        &["--client-header-timeout", "1s", "--keepalive-timeout", "3s"],
    )
    .await;
    let addr = r.gw.proxy_addr();

    let mut partial = TcpStream::connect(&addr).await.unwrap();
    partial
        .write_all(b"GET /ok HTTP/1.1\r\nHost: h.test\r\nX-Partial: ")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    // A slow head that keeps trickling bytes is cut at the same deadline.
    let mut trickle = TcpStream::connect(&addr).await.unwrap();
    let trickling = tokio::spawn(async move {
        trickle.write_all(b"GET /ok HTTP/1.1\r\n").await.unwrap();
        for i in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if trickle.write_all(format!("X-{i}: y\r\n").as_bytes()).await.is_err() {
                return true;
            }
        }
        false
    });

    let started = Instant::now();
    let partial_closed = closed_within(&mut partial, Duration::from_secs(4)).await;
    let silent_closed = closed_within(&mut silent, Duration::from_secs(4)).await;
    assert!(partial_closed.is_some(), "an unfinished head was never closed");
    assert!(silent_closed.is_some(), "a silent connection was never closed");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_millis(2500),
        "closed after {waited:?}, not at the 1 s header timeout"
    );
    assert!(trickling.await.unwrap(), "a trickling head outlived the header timeout");
    let metrics = r.gw.metrics_text().await;
    assert!(
        metrics.contains("ssegate_client_connections_closed_total{reason=\"header_timeout\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn idle_keepalive_connections_close_but_open_streams_do_not() {
    let up = Upstream::start("u").await;
    let r = one_route(
        up.addr,
        "",
        &["--client-header-timeout", "1s", "--keepalive-timeout", "2s"],
    )
    .await;
    let addr = r.gw.proxy_addr();

    // An event stream quieter than both timeouts between its events, and
    // longer than both in all: it must live on.
    let stream = client()
        .get(format!("{}/sse?tag=s&n=9&every=400", r.gw.proxy))
        .send()
        .await
        .unwrap();
    let stream = tokio::spawn(read_stream(stream, usize::MAX));

    // A kept-alive connection after one exchange: idle, so closed at the
    // keep-alive timeout (2 s), not at the header timeout (1 s).
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /plain HTTP/1.1\r\nHost: h.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::io::AsyncReadExt::read(&mut kept, &mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();
    let closed = closed_within(&mut kept, Duration::from_secs(5)).await;
    let idle_for = idle_from.elapsed();
    assert!(closed.is_some(), "an idle keep-alive connection was never closed");
    assert!(
        idle_for >= Duration::from_millis(1700) && idle_for < Duration::from_millis(3500),
        "idle connection closed after {idle_for:?}, not at the 2 s keep-alive timeout"
    );

    let got = stream.await.unwrap();
    assert_eq!(got.events.len(), 9, "the open stream was cut: {:?}", got.error);
    assert!(got.error.is_none(), "{:?}", got.error);
}

#[tokio::test]
async fn idle_cleartext_http2_connections_are_closed() {
    let up = Upstream::start("u").await;
    let r = one_route(up.addr, "", &["--keepalive-timeout", "1s"]).await;
    let tcp = TcpStream::connect(r.gw.proxy_addr()).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get("http://h.test/plain")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection was never closed");
    assert!(started.elapsed() >= Duration::from_millis(700), "closed too early");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_after_the_send_timeout() {
    let up = Upstream::start("u").await;
    let r = one_route(up.addr, "", &["--client-send-timeout", "1s"]).await;
    let mut reader = TcpStream::connect(r.gw.proxy_addr()).await.unwrap();
    // 24 MB of events, more than the socket buffers on both sides hold,
    // and a client that never reads.
    reader
        .write_all(b"GET /sse?tag=stuck&n=400&every=1&size=60000 HTTP/1.1\r\nHost: h.test\r\n\r\n")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while up.closed("stuck").is_none() {
        assert!(
            Instant::now() < deadline,
            "a client that stopped reading still held its stream and upstream after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = r.gw.metrics_text().await;
    assert!(metrics.contains("ssegate_client_connections_closed_total{reason=\"send_timeout\"} 1"));
    drop(reader);
}

#[tokio::test]
async fn request_heads_are_capped_but_32k_of_cookies_pass() {
    let up = Upstream::start("u").await;
    let r = one_route(up.addr, "", &[]).await;
    let addr = r.gw.proxy_addr();
    let cookie = "c".repeat(32 * 1024);
    let ok = format!("GET /plain HTTP/1.1\r\nHost: h.test\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n");
    let resp = exchange(&addr, ok.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(head_of(&resp), "HTTP/1.1 200 OK");

    let huge = "h".repeat(70 * 1024);
    let too_big = format!("GET /plain HTTP/1.1\r\nHost: h.test\r\nX-Big: {huge}\r\nConnection: close\r\n\r\n");
    let resp = exchange(&addr, too_big.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(head_of(&resp), "HTTP/1.1 431 Request Header Fields Too Large");
}

// --- 2. Descriptors used up: the admin port still answers --------------------

#[tokio::test]
async fn admin_answers_and_does_not_spin_when_clients_use_up_descriptors() {
    let up = Upstream::start("u").await;
    let r = start_with(
        &[
            ("b.yaml", backend_yaml("svc", &[(up.addr, true)])),
            ("r.yaml", route_yaml("r", "", "svc")),
        ],
        &["--client-header-timeout", "60s"],
        |cmd| {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
            unsafe {
                cmd.pre_exec(|| {
                    let lim = libc::rlimit {
                        rlim_cur: 256,
                        rlim_max: 256,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
    )
    .await;
    // More idle clients than the process has descriptors (those past the
    // connection limit wait in the listen queue).
    let mut idle = Vec::new();
    for _ in 0..300 {
        match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(r.gw.proxy_addr())).await {
            Ok(Ok(s)) => idle.push(s),
            _ => break,
        }
    }
    assert_eq!(idle.len(), 300, "the listen queue should hold every client");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let started = Instant::now();
        let resp = tokio::time::timeout(
            Duration::from_secs(3),
            client().get(format!("{}{probe}", r.gw.admin)).send(),
        )
        .await;
        let resp = resp.unwrap_or_else(|_| panic!("{probe} did not answer with the proxy full"));
        assert_eq!(resp.unwrap().status(), 200, "{probe}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logs = r.gw.logs();
    let accept_lines = logs.lines().filter(|l| l.contains("accept failed")).count();
    assert!(
        accept_lines <= 5,
        "{accept_lines} accept-failure lines: the accept loop spins"
    );
    // Once clients leave, the proxy serves again.
    drop(idle);
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        client().get(format!("{}/plain", r.gw.proxy)).send(),
    )
    .await
    .expect("the proxy did not recover")
    .unwrap();
    assert_eq!(resp.status(), 200);
}

// --- 3. One authority, routed on and forwarded ---------------------------------

fn two_hosts(admin: &RawUpstream, public: &RawUpstream) -> Vec<(&'static str, String)> {
    vec![
        ("admin-b.yaml", backend_yaml("admin", &[(admin.addr, true)])),
        ("public-b.yaml", backend_yaml("public", &[(public.addr, true)])),
        ("admin-r.yaml", prefix_route("admin", "admin.test", "/", "admin")),
        ("public-r.yaml", prefix_route("public", "public.test", "/", "public")),
    ]
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

#[tokio::test]
async fn absolute_form_routes_and_forwards_the_target_authority() {
    let admin = RawUpstream::start(OK).await;
    let public = RawUpstream::start(OK).await;
    let r = start(&two_hosts(&admin, &public), &[]).await;
    let resp = exchange(
        &r.gw.proxy_addr(),
        b"GET http://admin.test/x HTTP/1.1\r\nHost: public.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(head_of(&resp), "HTTP/1.1 200 OK");
    assert!(public.requests().is_empty(), "public.test's upstream was reached");
    let heads = admin.heads();
    assert_eq!(heads.len(), 1);
    let head = heads[0].to_ascii_lowercase();
    assert!(head.starts_with("get /x http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nhost: admin.test\r\n"), "{head}");
    assert!(!head.contains("public.test"), "{head}");
}

#[tokio::test]
async fn two_host_headers_or_none_get_400_and_reach_no_upstream() {
    let admin = RawUpstream::start(OK).await;
    let public = RawUpstream::start(OK).await;
    let r = start(&two_hosts(&admin, &public), &[]).await;
    for bad in [
        &b"GET /x HTTP/1.1\r\nHost: admin.test\r\nHost: public.test\r\nConnection: close\r\n\r\n"[..],
        b"GET /x HTTP/1.1\r\nHost: admin.test\r\nHost: admin.test\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: admin.test@public.test\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: admin.test, public.test\r\nConnection: close\r\n\r\n",
        b"CONNECT admin.test:80 HTTP/1.1\r\nHost: admin.test:80\r\n\r\n",
    ] {
        let resp = exchange(&r.gw.proxy_addr(), bad, Duration::from_secs(5)).await;
        let status = head_of(&resp);
        assert!(
            status.starts_with("HTTP/1.1 400") || status.starts_with("HTTP/1.1 405"),
            "{:?} got {status:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert!(admin.requests().is_empty() && public.requests().is_empty());
}

#[tokio::test]
async fn http2_authority_and_a_different_host_header_get_400() {
    let admin = RawUpstream::start(OK).await;
    let public = RawUpstream::start(OK).await;
    let r = start(&two_hosts(&admin, &public), &[]).await;
    let tcp = TcpStream::connect(r.gw.proxy_addr()).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://admin.test/x")
        .header("host", "public.test")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    // The same authority twice is fine, and it is what the upstream sees.
    let req = http::Request::get("http://admin.test/y")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(public.requests().is_empty());
    let heads = admin.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].to_ascii_lowercase().contains("\r\nhost: admin.test\r\n"),
        "{}",
        heads[0]
    );
}

// --- 4. Paths normalised before routing, and forwarded as matched --------------

#[tokio::test]
async fn dot_segments_cannot_climb_out_of_a_prefix() {
    let admin = RawUpstream::start(OK).await;
    let public = RawUpstream::start(OK).await;
    let r = start(
        &[
            ("admin-b.yaml", backend_yaml("admin", &[(admin.addr, true)])),
            ("public-b.yaml", backend_yaml("public", &[(public.addr, true)])),
            ("admin-r.yaml", prefix_route("admin", "", "/admin", "admin")),
            ("public-r.yaml", prefix_route("public", "", "/public", "public")),
        ],
        &[],
    )
    .await;
    let addr = r.gw.proxy_addr();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n");

    // Climbing out of /admin lands nowhere: 404, nothing forwarded.
    for path in [
        "/admin/../secret",
        "/admin/%2e%2e/secret",
        "/admin/%2E./secret",
        "/admin/./../secret",
    ] {
        let resp = exchange(&addr, get(path).as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(head_of(&resp), "HTTP/1.1 404 Not Found", "{path}");
    }
    assert!(admin.requests().is_empty(), "{:?}", admin.heads());

    // /public/../admin/x is /admin/x: the admin Route, with that path.
    let resp = exchange(
        &addr,
        get("/public/../admin/x?q=%2e%2e").as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(head_of(&resp), "HTTP/1.1 200 OK");
    let resp = exchange(&addr, get("/admin/%7Euser/%61b%2a").as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(head_of(&resp), "HTTP/1.1 200 OK");
    assert!(public.requests().is_empty(), "{:?}", public.heads());
    let heads = admin.heads();
    assert_eq!(heads.len(), 2);
    assert!(
        heads[0].starts_with("GET /admin/x?q=%2e%2e HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    assert!(
        heads[1].starts_with("GET /admin/~user/ab%2A HTTP/1.1\r\n"),
        "{}",
        heads[1]
    );

    // What cannot be normalised is refused.
    for path in ["/admin/..%2fsecret", "/admin/a%5Cb", "/admin/%zz", "/admin/a%00"] {
        let resp = exchange(&addr, get(path).as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(head_of(&resp), "HTTP/1.1 400 Bad Request", "{path}");
    }
    assert_eq!(admin.requests().len(), 2);
}

// --- 6. Framing the upstream gets wrong ------------------------------------------

#[tokio::test]
async fn transfer_encoding_overrides_content_length_from_upstream() {
    let up = RawUpstream::start(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let r = one_route(up.addr, "", &[]).await;
    let resp = exchange(
        &r.gw.proxy_addr(),
        b"GET /x HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let lower = resp.to_ascii_lowercase();
    if lower.starts_with("http/1.1 200") {
        assert!(!lower.contains("content-length: 3"), "{resp}");
        assert!(resp.contains("hello"), "the body was cut: {resp}");
    } else {
        assert!(lower.starts_with("http/1.1 502"), "{resp}");
    }
}

#[tokio::test]
async fn an_unrequested_101_becomes_502() {
    let up =
        RawUpstream::start(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n").await;
    let r = one_route(up.addr, "", &[]).await;
    let resp = exchange(
        &r.gw.proxy_addr(),
        b"GET /x HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(head_of(&resp), "HTTP/1.1 502 Bad Gateway", "{resp}");
}

// --- 7. Smaller ---------------------------------------------------------------------

#[tokio::test]
async fn a_malformed_chunked_body_is_the_clients_400_not_an_upstream_502() {
    let up = RawUpstream::start(OK).await;
    let r = one_route(up.addr, "", &[]).await;
    let resp = exchange(
        &r.gw.proxy_addr(),
        b"POST /x HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\nnot a chunk\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(head_of(&resp), "HTTP/1.1 400 Bad Request", "{resp}");
    let metrics = r.gw.metrics_text().await;
    assert!(
        metrics.contains("ssegate_bad_requests_total{reason=\"body\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("ssegate_upstream_errors_total") && !l.ends_with(" 0")),
        "counted as an upstream error:\n{metrics}"
    );
}

#[tokio::test]
async fn the_response_timeout_starts_after_a_slow_upload() {
    // The upstream answers once it has the whole body.
    let up = RawUpstream::start(OK).await;
    let r = one_route(up.addr, "  timeouts: {responseHeaders: 1s}\n", &[]).await;
    let mut s = TcpStream::connect(r.gw.proxy_addr()).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: h.test\r\nContent-Length: 10\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // Ten bytes over 2.5 s: longer than the response timeout.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        s.write_all(b"x").await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out),
    )
    .await;
    let resp = String::from_utf8_lossy(&out);
    assert_eq!(head_of(&resp), "HTTP/1.1 200 OK", "{resp}");
    assert!(up.requests()[0].ends_with(b"\r\n\r\nxxxxxxxxxx"));
}

#[tokio::test]
async fn a_stalled_upload_gets_408_after_the_body_timeout() {
    let up = RawUpstream::start(OK).await;
    let r = one_route(up.addr, "", &["--client-body-timeout", "1s"]).await;
    let started = Instant::now();
    let resp = exchange(
        &r.gw.proxy_addr(),
        b"POST /upload HTTP/1.1\r\nHost: h.test\r\nContent-Length: 10\r\n\r\nabc",
        Duration::from_secs(6),
    )
    .await;
    assert_eq!(head_of(&resp), "HTTP/1.1 408 Request Timeout", "{resp}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn tls_serves_the_protocol_alpn_agreed_on() {
    let up = Upstream::start("u").await;
    let cert = common::tls::cert(&["tls.test"]);
    let tls_listen = format!("127.0.0.1:{}", free_port());
    let _running = start(
        &[
            ("b.yaml", backend_yaml("svc", &[(up.addr, true)])),
            ("s.yaml", common::tls::secret_yaml("cert", None, &cert)),
            (
                "r.yaml",
                "apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {name: r}\nspec:\n  hostnames: [tls.test]\n  tls: [{secretName: cert}]\n  rules: [{backendRefs: [{name: svc, port: 80}]}]\n".to_owned(),
            ),
        ],
        &["--listen-tls", &tls_listen],
    )
    .await;
    let tls_addr: std::net::SocketAddr = tls_listen.parse().unwrap();
    // h2 agreed, HTTP/1.1 spoken: closed without an HTTP/1.1 answer.
    let mut s = common::tls::connect(tls_addr, "tls.test", &[&cert], &[b"h2"])
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    s.write_all(b"GET /plain HTTP/1.1\r\nHost: tls.test\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out),
    )
    .await;
    assert!(!out.starts_with(b"HTTP/1.1"), "{}", String::from_utf8_lossy(&out));
    // http/1.1 agreed: served as HTTP/1.1.
    let mut s = common::tls::connect(tls_addr, "tls.test", &[&cert], &[b"http/1.1"])
        .await
        .unwrap();
    s.write_all(b"GET /plain HTTP/1.1\r\nHost: tls.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out),
    )
    .await;
    assert!(out.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&out));
}

#[tokio::test]
async fn logs_written_to_a_file_carry_no_colour_codes() {
    let up = Upstream::start("u").await;
    let r = one_route(up.addr, "", &[]).await;
    let resp = client().get(format!("{}/plain", r.gw.proxy)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let logs = r.gw.logs();
    assert!(logs.contains("ssegate serving"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "ANSI escape codes in a log file:\n{logs}");
}

// --- Bursts (issue 13) ---------------------------------------------------------

/// Events that reach ssegate together leave together: the upstream writes
/// 50 events, each in a chunk of its own, in one write; the client gets the
/// head and all 50 as one chunk, in the order sent (hyper's path wrote 50
/// chunks, one write each).
#[tokio::test]
async fn a_burst_of_events_leaves_as_one_chunk() {
    let mut response =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut events = String::new();
    for i in 0..50 {
        let event = format!("id: {i}\ndata: {i:02}\n\n");
        response.extend_from_slice(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes());
        events.push_str(&event);
    }
    response.extend_from_slice(b"0\r\n\r\n");
    let up = RawUpstream::start(Box::leak(response.into_boxed_slice())).await;
    let r = one_route(up.addr, "  proxyBuffering: Disabled\n", &[]).await;
    let got = exchange(
        &r.gw.proxy_addr(),
        b"GET /sse HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let (head, body) = got.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\ntransfer-encoding: chunked"), "{head}");
    assert_eq!(body, format!("{:x}\r\n{events}\r\n0\r\n\r\n", events.len()));
}

// --- Upgrades (issue 14) --------------------------------------------------------

/// A WebSocket upgrade goes through: the upstream receives the `Upgrade`
/// and `Connection: upgrade` the client sent, its 101 reaches the client,
/// and then bytes flow both ways (the upstream echoes them upper-cased).
#[tokio::test]
async fn an_upgrade_is_proxied_and_bytes_flow_both_ways() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (head_tx, head_rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            if s.read(&mut b).await.unwrap() == 0 {
                return;
            }
            head.push(b[0]);
        }
        let _ = head_tx.send(String::from_utf8_lossy(&head).into_owned());
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            s.write_all(&buf[..n].to_ascii_uppercase()).await.unwrap();
        }
    });
    let r = one_route(addr, "", &[]).await;
    let mut c = TcpStream::connect(r.gw.proxy_addr()).await.unwrap();
    c.write_all(b"GET /ws HTTP/1.1\r\nHost: h.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !got.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout_at(deadline, c.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.push(b[0]);
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    let up = head_rx.await.unwrap().to_ascii_lowercase();
    assert!(up.contains("\r\nupgrade: websocket\r\n"), "{up}");
    assert!(up.contains("\r\nconnection: upgrade\r\n"), "{up}");
    for word in ["hello", "again"] {
        c.write_all(word.as_bytes()).await.unwrap();
        let mut echo = vec![0u8; word.len()];
        tokio::time::timeout_at(deadline, c.read_exact(&mut echo))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echo, word.to_ascii_uppercase().as_bytes());
    }
    drop(c);
}

/// A real WebSocket client (tungstenite) and a real WebSocket server talk
/// through ssegate on `/ws` of a host while an event stream flows on `/sse`
/// of the same host, as mixed ingress-nginx hosts do.
#[tokio::test]
async fn a_websocket_client_talks_through_while_an_event_stream_flows_on_the_same_host() {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::AsyncReadExt;
    use tokio_tungstenite::tungstenite::Message;

    let ws_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = ws_listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = ws_listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if let Message::Text(text) = msg {
                        if ws.send(Message::text(text.as_str().to_uppercase())).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let sse = Upstream::start("sse").await;
    let route = "apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {name: mixed}\nspec:\n  hostnames: [app.test]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /ws}}]\n    backendRefs: [{name: ws, port: 80}]\n  - backendRefs: [{name: sse, port: 80}]\n";
    let r = start(
        &[
            ("ws.yaml", backend_yaml("ws", &[(ws_addr, true)])),
            ("sse.yaml", backend_yaml("sse", &[(sse.addr, true)])),
            ("r.yaml", route.to_owned()),
        ],
        &[],
    )
    .await;
    let proxy = r.gw.proxy_addr();

    // The event stream: 10 events, 100 ms apart.
    let mut stream = TcpStream::connect(&proxy).await.unwrap();
    stream
        .write_all(b"GET /sse?tag=mixed&n=10&every=100 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let events = tokio::spawn(async move {
        let mut all = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut all)).await;
        String::from_utf8_lossy(&all).matches("data: sse").count()
    });

    let tcp = TcpStream::connect(&proxy).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://app.test/ws", tcp).await.unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        ws.send(Message::text(format!("message {i}"))).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an echo in time")
            .expect("the connection open")
            .unwrap();
        assert_eq!(echo, Message::text(format!("MESSAGE {i}")));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ws.close(None).await.unwrap();
    assert_eq!(events.await.unwrap(), 10, "the event stream flowed throughout");
}
