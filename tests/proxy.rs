//! Routing, error responses, headers, cancellation and HTTP/2 through a
//! real ssegate with real upstreams.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get_text(url: &str, host: Option<&str>) -> (u16, String) {
    let mut req = client().get(url);
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Upstreams `a` and `b` behind Services of the same names.
async fn two_backends() -> (Upstream, Upstream, Gateway) {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let gw = Gateway::start().await;
    let backends = [
        backend_yaml("a", &[(a.addr, true)]),
        backend_yaml("b", &[(b.addr, true)]),
    ];
    gw.write("backends.yaml", &backends.join("---\n"));
    (a, b, gw)
}

#[tokio::test]
async fn host_and_path_precedence_through_the_proxy() {
    let (a, b, c) = (
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    );
    let gw = Gateway::start().await;
    gw.write(
        "backends.yaml",
        &[
            backend_yaml("a", &[(a.addr, true)]),
            backend_yaml("b", &[(b.addr, true)]),
            backend_yaml("c", &[(c.addr, true)]),
        ]
        .join("---\n"),
    );
    gw.write(
        "routes.yaml",
        "apiVersion: ssegate.dev/v1alpha1
kind: Route
metadata: {name: catch-all}
spec:
  rules: [{backendRefs: [{name: a, port: 80}]}]
---
apiVersion: ssegate.dev/v1alpha1
kind: Route
metadata: {name: api}
spec:
  hostnames: ['*.example.com']
  rules:
  - matches: [{path: {value: /api}}]
    backendRefs: [{name: b, port: 80}]
  - matches: [{path: {type: Exact, value: /api/exact}}]
    backendRefs: [{name: c, port: 80}]
",
    );
    let url = |p: &str| gw.url(p);
    assert_eq!(
        get_text(&url("/api/x"), Some("Www.Example.com:8443")).await.1,
        "upstream b"
    );
    assert_eq!(
        get_text(&url("/api/exact"), Some("www.example.com")).await.1,
        "upstream c"
    );
    assert_eq!(
        get_text(&url("/api/exact/more"), Some("www.example.com")).await.1,
        "upstream b"
    );
    assert_eq!(get_text(&url("/apix"), Some("www.example.com")).await.1, "upstream a");
    assert_eq!(get_text(&url("/api/x"), Some("example.org")).await.1, "upstream a");
}

#[tokio::test]
async fn conflicting_routes_older_one_serves() {
    let (a, b, gw) = two_backends().await;
    gw.write("1-first.yaml", &route_yaml("first", "", "a"));
    gw.write("2-second.yaml", &route_yaml("second", "", "b"));
    assert_eq!(get_text(&gw.url("/"), None).await.1, "upstream a");
    let table = gw.table();
    let second = table.reports.iter().find(|r| r.key.name == "second").unwrap();
    assert_eq!(
        (second.accepted.status.as_str(), second.accepted.reason),
        ("False", "Conflicted")
    );
    // Same age: `default/first` < `default/second` decides even if "second" was seen first.
    let gw2 = Gateway::start().await;
    gw2.write(
        "backends.yaml",
        &[
            backend_yaml("a", &[(a.addr, true)]),
            backend_yaml("b", &[(b.addr, true)]),
        ]
        .join("---\n"),
    );
    gw2.write(
        "routes.yaml",
        &[route_yaml("second", "", "b"), route_yaml("first", "", "a")].join("---\n"),
    );
    assert_eq!(get_text(&gw2.url("/"), None).await.1, "upstream a");
}

#[tokio::test]
async fn clear_error_responses() {
    let up = Upstream::start("u").await;
    let closed_port = free_port();
    let gw = Gateway::start().await;
    gw.write(
        "backends.yaml",
        &[
            backend_yaml("up", &[(up.addr, true)]),
            backend_yaml("down", &[(up.addr, false)]),
            backend_yaml("closed", &[(format!("127.0.0.1:{closed_port}").parse().unwrap(), true)]),
        ]
        .join("---\n"),
    );
    gw.write(
        "routes.yaml",
        "apiVersion: ssegate.dev/v1alpha1
kind: Route
metadata: {name: errors}
spec:
  hostnames: [errors.test]
  rules:
  - matches: [{path: {value: /unready}}]
    backendRefs: [{name: down, port: 80}]
  - matches: [{path: {value: /missing}}]
    backendRefs: [{name: nosuch, port: 80}]
  - matches: [{path: {value: /refused}}]
    backendRefs: [{name: closed, port: 80}]
  - matches: [{path: {value: /slow}}]
    backendRefs: [{name: up, port: 80}]
    timeouts: {responseHeaders: 300ms}
",
    );
    let host = Some("errors.test");
    let (status, body) = get_text(&gw.url("/nothing"), Some("other.test")).await;
    assert_eq!(status, 404);
    assert!(body.contains("no route for host \"other.test\""), "{body}");

    let (status, body) = get_text(&gw.url("/unready"), host).await;
    assert_eq!(status, 503);
    assert!(
        body.contains("Service default/down:80 has no ready endpoints"),
        "{body}"
    );

    let (status, body) = get_text(&gw.url("/missing"), host).await;
    assert_eq!(status, 503);
    assert!(body.contains("Service default/nosuch not found"), "{body}");

    let (status, body) = get_text(&gw.url("/refused"), host).await;
    assert_eq!(status, 502);
    assert!(
        body.contains(&format!("cannot connect to upstream 127.0.0.1:{closed_port}")),
        "{body}"
    );

    let started = tokio::time::Instant::now();
    let (status, body) = get_text(&gw.url("/slow?delay=3000"), host).await;
    assert_eq!(status, 504);
    assert!(body.contains("within 300ms"), "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "504 took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_forwarding_headers_set() {
    let (up, gw) = one_backend("").await;

    // A raw request, so nothing between the test and ssegate tidies headers.
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let request = "GET /json?tag=h&n=1&hop=1 HTTP/1.1\r\n\
        Host: Events.Example.com:9000\r\n\
        Connection: keep-alive, X-Client-Hop\r\n\
        X-Client-Hop: secret\r\n\
        Keep-Alive: timeout=5\r\n\
        Proxy-Connection: keep-alive\r\n\
        TE: trailers\r\n\
        Upgrade: websocket\r\n\
        X-Forwarded-For: 203.0.113.7\r\n\
        X-Real-IP: 6.6.6.6\r\n\
        Last-Event-ID: 42\r\n\
        \r\n";
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&response).contains("]") {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed early: {}", String::from_utf8_lossy(&response));
        response.extend_from_slice(&buf[..n]);
    }
    let response = String::from_utf8_lossy(&response).to_ascii_lowercase();
    let head = response.split("\r\n\r\n").next().unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-end-to-end: kept"), "{head}");
    for hop in ["x-upstream-hop", "keep-alive:", "connection: x-upstream-hop"] {
        assert!(!head.contains(hop), "{hop} leaked to the client:\n{head}");
    }

    let seen = up.headers("h");
    for hop in ["x-client-hop", "keep-alive", "proxy-connection", "te", "upgrade"] {
        assert!(seen.get(hop).is_none(), "{hop} leaked upstream: {seen:?}");
    }
    // Nobody is trusted (no --trusted-proxies): the client's own
    // X-Forwarded-For is replaced by its address, as ingress-nginx does.
    assert_eq!(
        seen.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
        ["127.0.0.1"]
    );
    assert_eq!(seen["x-real-ip"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-host"], "Events.Example.com:9000");
    assert_eq!(seen["x-forwarded-port"], gw.addr.port().to_string().as_str());
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["host"], "Events.Example.com:9000");
    assert_eq!(seen["last-event-id"], "42");
}

#[tokio::test]
async fn client_disconnect_closes_the_upstream_stream() {
    let (up, gw) = one_backend("  proxyBuffering: Disabled\n").await;

    let resp = client().get(gw.url("/sse?tag=gone&n=0&every=50")).send().await.unwrap();
    let got = read_stream(resp, 2).await; // read two events, then drop the response
    assert_eq!(got.events.len(), 2);
    let dropped = tokio::time::Instant::now();
    let deadline = dropped + Duration::from_secs(5);
    while up.closed("gone").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream never saw the client leave"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = up.closed("gone").unwrap().saturating_duration_since(dropped);
    assert!(took < Duration::from_secs(2), "upstream saw the close after {took:?}");
}

#[tokio::test]
async fn idle_timeout_cuts_a_silent_upstream() {
    let (_up, gw) = one_backend("  timeouts: {idle: 300ms}\n").await;
    let started = tokio::time::Instant::now();
    let resp = client().get(gw.url("/stall?tag=idle")).send().await.unwrap();
    let got = read_stream(resp, usize::MAX).await;
    assert_eq!(got.events.len(), 1);
    assert!(got.error.is_some(), "a cut stream must not look like a clean end");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[tokio::test]
async fn cleartext_http2_carries_many_streams_on_one_connection() {
    let (up, gw) = one_backend("").await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut readers = Vec::new();
    for i in 0..10 {
        let resp = h2
            .get(gw.url(&format!("/sse?tag=h2-{i}&n=3&every=100")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        readers.push(tokio::spawn(read_stream(resp, usize::MAX)));
    }
    for (i, r) in readers.into_iter().enumerate() {
        let got = r.await.unwrap();
        let emits = up.emits(&format!("h2-{i}"));
        assert_eq!(got.events.len(), 3);
        assert!(got.events[0].1 < emits[1], "stream {i} was held back");
    }
    assert!(
        up.headers("h2-0").get("host").is_some(),
        "HTTP/1.1 upstream needs a Host header"
    );
}

#[tokio::test]
async fn weighted_round_robin_across_endpoints() {
    let (_a, _b, gw) = two_backends().await;
    gw.write(
        "route.yaml",
        "apiVersion: ssegate.dev/v1alpha1
kind: Route
metadata: {name: split}
spec:
  loadBalancing: RoundRobin
  rules: [{backendRefs: [{name: a, port: 80, weight: 3}, {name: b, port: 80, weight: 1}]}]
",
    );
    let mut hits = std::collections::HashMap::new();
    for _ in 0..40 {
        *hits.entry(get_text(&gw.url("/"), None).await.1).or_insert(0) += 1;
    }
    assert_eq!(hits["upstream a"], 30);
    assert_eq!(hits["upstream b"], 10);
}
