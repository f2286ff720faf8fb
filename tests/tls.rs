//! The TLS listener: HTTP/2 by ALPN with many SSE streams on one
//! connection, certificates by SNI from Secrets in the folder, live
//! rotation, and broken certificates that harm no other host.

mod common;

use bytes::Bytes;
use common::tls::{cert, connect, presented, secret_yaml, secret_yaml_raw, TestCert};
use common::{backend_yaml, route_yaml, Gateway, Upstream};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;
use tokio::time::Instant;
use tokio_rustls::rustls::ProtocolVersion;

const HOST: &str = "a.test";

/// An upstream, and a Route for `a.test` whose certificate is Secret `cert-a`.
async fn tls_gateway(cert_a: &TestCert) -> (Upstream, Gateway) {
    let up = Upstream::start("u1").await;
    let gw = Gateway::start().await;
    gw.write("backend.yaml", &backend_yaml("svc", &[(up.addr, true)]));
    gw.write("secret-a.yaml", &secret_yaml("cert-a", None, cert_a));
    gw.write(
        "route.yaml",
        &route_yaml(
            "r",
            "  hostnames: [a.test]\n  tls: [{secretName: cert-a}]\n  proxyBuffering: Disabled\n",
            "svc",
        ),
    );
    (up, gw)
}

type H2 = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

async fn h2_client(stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> H2 {
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// Reads an SSE body, recording when each event (ended by a blank line) arrives.
async fn read_events(body: hyper::body::Incoming, limit: usize) -> Vec<Instant> {
    let mut body = body;
    let mut pending = Vec::new();
    let mut arrivals = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.unwrap().into_data() else { continue };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            pending.drain(..end + 2);
            arrivals.push(Instant::now());
        }
        if arrivals.len() >= limit {
            break;
        }
    }
    arrivals
}

fn get(uri: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(uri).body(Empty::new()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sse_streams_share_one_http2_connection_event_by_event() {
    let cert_a = cert(&[HOST]);
    let (up, gw) = tls_gateway(&cert_a).await;
    let stream = connect(gw.tls_addr, HOST, &[&cert_a], &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    let (_, session) = stream.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(session.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    let client = h2_client(stream).await;

    let mut readers = Vec::new();
    for i in 0..20 {
        let mut client = client.clone();
        readers.push(tokio::spawn(async move {
            client.ready().await.unwrap();
            let resp = client
                .send_request(get(&format!("https://{HOST}/sse?tag=s{i}&n=5&every=150")))
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.version(), http::Version::HTTP_2);
            read_events(resp.into_body(), 5).await
        }));
    }
    for (i, reader) in readers.into_iter().enumerate() {
        let arrivals = reader.await.unwrap();
        let emits = up.emits(&format!("s{i}"));
        assert_eq!(arrivals.len(), 5, "stream {i}");
        assert_eq!(emits.len(), 5, "stream {i}");
        // Streamed, not held back: each event is read before the upstream
        // has even emitted the next one.
        for k in 0..4 {
            assert!(
                arrivals[k] < emits[k + 1],
                "stream {i}: event {k} arrived after event {} was emitted",
                k + 1
            );
        }
    }
    let metrics = gw.proxy.metrics().encode();
    assert!(
        metrics.contains(r#"ssegate_connections_total{listener="https"} 1"#),
        "all 20 streams should use one connection:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_and_tls_versions_are_negotiated_as_offered() {
    let cert_a = cert(&[HOST]);
    let (_up, gw) = tls_gateway(&cert_a).await;

    // HTTP/1.1 only, then no ALPN at all: both get HTTP/1.1.
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let stream = connect(gw.tls_addr, HOST, &[&cert_a], alpn).await.unwrap();
        let expected = if alpn.is_empty() { None } else { Some(&b"http/1.1"[..]) };
        assert_eq!(stream.get_ref().1.alpn_protocol(), expected);
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/plain")
            .header("host", HOST)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_11);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"upstream u1");
    }

    // A TLS 1.2-only client is served with TLS 1.2.
    let mut store = tokio_rustls::rustls::RootCertStore::empty();
    store.add(cert_a.der.clone().into()).unwrap();
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&tokio_rustls::rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(gw.tls_addr).await.unwrap();
    let tls12 = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(HOST.try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls12.get_ref().1.protocol_version(), Some(ProtocolVersion::TLSv1_2));

    // A server name with no certificate fails its handshake and nothing else.
    let other = cert(&["nobody.test"]);
    assert!(connect(gw.tls_addr, "nobody.test", &[&other], &[b"h2"]).await.is_err());
    assert!(connect(gw.tls_addr, HOST, &[&cert_a], &[b"h2"]).await.is_ok());
    // The server counts the failure after it has sent its alert, so the
    // client can see the failure first: wait (bounded) for the count.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut metrics = gw.proxy.metrics().encode();
    while !metrics.contains("ssegate_tls_handshake_errors_total 1\n") && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        metrics = gw.proxy.metrics().encode();
    }
    assert!(metrics.contains("ssegate_tls_handshake_errors_total 1\n"), "{metrics}");

    // X-Forwarded-Proto says https.
    let stream = connect(gw.tls_addr, HOST, &[&cert_a], &[b"h2"]).await.unwrap();
    let mut client = h2_client(stream).await;
    let resp = client
        .send_request(get(&format!("https://{HOST}/plain?tag=proto")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(_up.headers("proto")["x-forwarded-proto"], "https");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_serves_new_connections_while_the_open_stream_goes_on() {
    let cert_a = cert(&[HOST]);
    let cert_b = cert(&[HOST]);
    let (_up, gw) = tls_gateway(&cert_a).await;

    let stream = connect(gw.tls_addr, HOST, &[&cert_a, &cert_b], &[b"h2"]).await.unwrap();
    assert_eq!(presented(&stream), cert_a.der);
    let mut client = h2_client(stream).await;
    let resp = client
        .send_request(get(&format!("https://{HOST}/sse?tag=long&n=0&every=50")))
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut body = resp.into_body();
        while let Some(Ok(frame)) = body.frame().await {
            if frame.is_data() {
                let _ = tx.send(Instant::now());
            }
        }
    });
    // The stream is flowing.
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .unwrap()
            .unwrap();
    }

    gw.write("secret-a.yaml", &secret_yaml("cert-a", None, &cert_b));
    let rotated = Instant::now();
    let fresh = connect(gw.tls_addr, HOST, &[&cert_a, &cert_b], &[b"h2"]).await.unwrap();
    assert_eq!(
        presented(&fresh),
        cert_b.der,
        "a new connection gets the new certificate"
    );

    // The stream opened before the rotation keeps receiving events.
    let mut after = 0;
    while after < 5 {
        let at = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("the open stream stalled after the rotation")
            .expect("the open stream ended after the rotation");
        if at > rotated {
            after += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_certificates_are_reported_and_harm_no_other_host() {
    let cert_a = cert(&[HOST]);
    let cert_b = cert(&["b.test"]);
    let stranger = cert(&["b.test"]);
    let (_up, gw) = tls_gateway(&cert_a).await;

    // Route b names a Secret whose key belongs to another certificate.
    let errors = gw.write_allowing_errors(
        "secret-b.yaml",
        &secret_yaml_raw("cert-b", None, cert_b.cert_pem.as_bytes(), stranger.key_pem.as_bytes()),
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("does not belong"), "{errors:?}");
    gw.write_allowing_errors(
        "route-b.yaml",
        &route_yaml("b", "  hostnames: [b.test]\n  tls: [{secretName: cert-b}]\n", "svc"),
    );
    let report = |name: &str| {
        let table = gw.table();
        let r = table.reports.iter().find(|r| r.key.name == name).unwrap().clone();
        (
            r.accepted.status.as_str(),
            r.resolved_refs.reason,
            r.resolved_refs.message,
        )
    };
    let (accepted, reason, message) = report("b");
    assert_eq!((accepted, reason), ("True", "InvalidCertificateRef"));
    assert!(
        message.contains("Secret default/cert-b tls.key does not belong"),
        "{message}"
    );
    assert!(connect(gw.tls_addr, "b.test", &[&cert_b], &[b"h2"]).await.is_err());
    assert!(connect(gw.tls_addr, HOST, &[&cert_a], &[b"h2"]).await.is_ok());

    // A Secret that does not exist is named as such.
    gw.write_allowing_errors(
        "route-b.yaml",
        &route_yaml("b", "  hostnames: [b.test]\n  tls: [{secretName: missing}]\n", "svc"),
    );
    assert!(report("b").2.contains("Secret default/missing not found"));

    // A good Secret broken by an update keeps serving its last good pair.
    let errors = gw.write_allowing_errors(
        "secret-a.yaml",
        &secret_yaml_raw("cert-a", None, b"not a certificate", cert_a.key_pem.as_bytes()),
    );
    assert!(errors[0].contains("tls.crt holds no PEM certificate"), "{errors:?}");
    let (_, reason, message) = report("r");
    assert_eq!(reason, "InvalidCertificateRef");
    assert!(message.contains("last good certificate is still served"), "{message}");
    let stream = connect(gw.tls_addr, HOST, &[&cert_a], &[b"h2"]).await.unwrap();
    assert_eq!(presented(&stream), cert_a.der);
}

/// A wildcard certificate serves every name one label under it (not the
/// bare domain, not two labels deep), an exact certificate beats it, and a
/// client that sends no server name fails its handshake without harming
/// anyone else's.
#[tokio::test]
async fn wildcard_names_and_clients_without_sni() {
    let up = Upstream::start("u1").await;
    let gw = Gateway::start().await;
    let wild = cert(&["*.w.test"]);
    let exact = cert(&["exact.w.test"]);
    gw.write("backend.yaml", &backend_yaml("svc", &[(up.addr, true)]));
    gw.write("secret-wild.yaml", &secret_yaml("wild", None, &wild));
    gw.write("secret-exact.yaml", &secret_yaml("exact", None, &exact));
    gw.write(
        "route.yaml",
        &route_yaml("r", "  hostnames: [\"*.w.test\"]\n  tls: [{secretName: wild}]\n", "svc"),
    );
    gw.write(
        "route-exact.yaml",
        &route_yaml(
            "e",
            "  hostnames: [exact.w.test]\n  tls: [{secretName: exact}]\n",
            "svc",
        ),
    );
    let roots = [&wild, &exact];
    for (name, want) in [("a.w.test", &wild), ("b.w.test", &wild), ("exact.w.test", &exact)] {
        let s = connect(gw.tls_addr, name, &roots, &[b"h2"]).await.unwrap();
        assert!(presented(&s) == want.der, "{name} got the wrong certificate");
    }
    for name in ["w.test", "x.y.w.test"] {
        assert!(
            connect(gw.tls_addr, name, &roots, &[b"h2"]).await.is_err(),
            "{name} should have no certificate"
        );
    }
    // An IP address as server name: rustls sends no SNI at all.
    let no_sni = connect(gw.tls_addr, "127.0.0.1", &roots, &[b"h2"]).await;
    assert!(no_sni.is_err(), "a client without SNI has no certificate to get");
    // The listener is unharmed.
    let s = connect(gw.tls_addr, "a.w.test", &roots, &[b"h2"]).await.unwrap();
    assert!(presented(&s) == wild.der);
}

/// Reads an SSE body slowly (a pause every few frames), returning it whole.
async fn read_slowly(body: hyper::body::Incoming) -> Vec<u8> {
    let mut body = body;
    let mut all = Vec::new();
    let mut frames = 0;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.unwrap().into_data() else { continue };
        all.extend_from_slice(&data);
        frames += 1;
        if frames % 16 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    all
}

/// The events `/sse?n=N&size=S` sends, in order.
fn expected_events(n: usize, size: usize) -> Vec<u8> {
    let pad = "p".repeat(size);
    (1..=n)
        .flat_map(|i| format!("id: {i}\ndata: u1 {pad}\n\n").into_bytes())
        .collect()
}

/// A large response reaches a client that reads it slowly, whole and in
/// order, over TLS with HTTP/1.1 (ssegate's own path, where a slow client
/// makes the TLS stream keep what the socket did not take) and with HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_response_reaches_a_slow_reader_over_tls() {
    let cert_a = cert(&[HOST]);
    let (_up, gw) = tls_gateway(&cert_a).await;
    let (n, size) = (400, 10_000);
    let want = expected_events(n, size);

    let stream = connect(gw.tls_addr, HOST, &[&cert_a], &[b"http/1.1"]).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("/sse?tag=big1&n={n}&every=0&size={size}"))
        .header("host", HOST)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let got = tokio::time::timeout(Duration::from_secs(60), read_slowly(resp.into_body()))
        .await
        .unwrap();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "HTTP/1.1: the body differs");
    // The connection is still good for another request (once hyper's
    // client has seen the end of the first answer).
    send.ready().await.unwrap();
    let req = http::Request::get("/plain")
        .header("host", HOST)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"upstream u1");

    let stream = connect(gw.tls_addr, HOST, &[&cert_a], &[b"h2"]).await.unwrap();
    let mut client = h2_client(stream).await;
    let resp = client
        .send_request(get(&format!("https://{HOST}/sse?tag=big2&n={n}&every=0&size={size}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let got = tokio::time::timeout(Duration::from_secs(60), read_slowly(resp.into_body()))
        .await
        .unwrap();
    assert!(got == want, "HTTP/2: the body differs");
}

/// A client's request body larger than a TLS record, sent in pieces over
/// HTTP/1.1, is read whole (records split across reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_split_across_records_and_reads_over_tls() {
    let cert_a = cert(&[HOST]);
    let (_up, gw) = tls_gateway(&cert_a).await;
    let mut stream = connect(gw.tls_addr, HOST, &[&cert_a], &[b"http/1.1"]).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A head dribbled out a few bytes at a time: one record each.
    let head = format!(
        "GET /plain HTTP/1.1\r\nhost: {HOST}\r\nx-pad: {}\r\n\r\n",
        "y".repeat(20_000)
    );
    for piece in head.as_bytes().chunks(777) {
        stream.write_all(piece).await.unwrap();
        stream.flush().await.unwrap();
    }
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    while !answer.ends_with(b"upstream u1") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
