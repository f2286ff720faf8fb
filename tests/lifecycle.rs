//! SSE stream lifecycle features with real streams: heartbeats.

mod common;

use common::*;

#[tokio::test]
async fn heartbeats_fill_silences_but_never_split_an_event() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start().await;
    gw.write("backend.yaml", &backend_yaml("svc", &[(up.addr, true)]));
    gw.set_route("  proxyBuffering: Disabled\n  sse: {heartbeatInterval: 200ms}\n");

    let resp = client().get(gw.url("/split?tag=hb&pause=700")).send().await.unwrap();
    let body = resp.text().await.expect("the stream ends cleanly");
    // Between "data: one" and the start of the next event: heartbeats. Inside
    // the split event ("data: par" ... "t two"): none.
    let (before, after) = body.split_once("data: par").expect("second event present");
    let beats = before.matches(":\n\n").count();
    assert!(
        beats >= 2,
        "expected heartbeats during the 700ms silence, got {beats}: {body:?}"
    );
    assert!(
        after.starts_with("t two\r\n\r"),
        "a heartbeat went inside an event: {body:?}"
    );
    // The split CRLF at the end: a heartbeat may follow the lone CR (it ends
    // the blank line), and the event must be complete either way.
    assert_eq!(after.replace(":\n\n", ""), "t two\r\n\r\n", "{body:?}");
    assert_eq!(
        before.replace(":\n\n", ""),
        "data: one\n\n",
        "upstream bytes must pass unchanged"
    );
}

#[tokio::test]
async fn no_heartbeats_unless_asked_or_for_other_content() {
    let (_up, gw) = one_backend("  proxyBuffering: Disabled\n").await;
    let resp = client().get(gw.url("/split?tag=none&pause=400")).send().await.unwrap();
    let text = resp.text().await.unwrap();
    assert_eq!(text, "data: one\n\ndata: part two\r\n\r\n");

    // JSON through a heartbeat Route gets none either.
    gw.set_route("  proxyBuffering: Disabled\n  sse: {heartbeatInterval: 100ms}\n");
    let resp = client().get(gw.url("/json?tag=j&n=3&every=300")).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "[{\"n\":1},{\"n\":2},{\"n\":3}]");
}

#[tokio::test]
async fn max_stream_duration_ends_at_an_event_boundary_and_frees_the_upstream() {
    let (up, gw) = one_backend("  sse: {maxStreamDuration: 500ms}\n").await;

    let started = tokio::time::Instant::now();
    // Each event in two frames 60 ms apart, so the deadline often falls
    // inside one: the stream must still end at a boundary.
    let resp = client()
        .get(gw.url("/sse?tag=max&n=0&every=100&split=60"))
        .send()
        .await
        .unwrap();
    let got = read_stream(resp, usize::MAX).await;
    let took = started.elapsed();
    assert!(
        got.error.is_none(),
        "the stream must end cleanly, not be cut: {:?}",
        got.error
    );
    assert_eq!(got.tail, "", "the stream ended inside an event");
    assert!(
        (4..=8).contains(&got.events.len()),
        "{} events in {took:?}",
        got.events.len()
    );
    for (i, (event, _)) in got.events.iter().enumerate() {
        assert!(
            event.starts_with(&format!("id: {}\n", i + 1)) && event.ends_with("\n\n"),
            "{event:?}"
        );
    }
    assert!(took >= std::time::Duration::from_millis(450), "{took:?}");

    // The upstream request is cancelled, not left running.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while up.closed("max").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "upstream never saw the end");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn max_stream_duration_waits_for_a_split_event_to_finish() {
    let (_up, gw) = one_backend("  sse: {maxStreamDuration: 1s}\n").await;
    // "data: par" arrives at 0.7s and its end at 1.4s: the 1s deadline falls
    // inside the event, so the stream ends when the event does (the lone CR
    // already ends it), not before and not after.
    let resp = client().get(gw.url("/split?tag=late&pause=700")).send().await.unwrap();
    let body = resp.text().await.expect("clean end");
    assert_eq!(body, "data: one\n\ndata: part two\r\n\r", "ended mid-event or too late");
}

#[tokio::test]
async fn max_concurrent_streams_answers_503_and_counts_every_way_a_stream_ends() {
    let (_up, gw) = one_backend("  proxyBuffering: Disabled\n  maxConcurrentStreams: 2\n").await;
    let open = |tag: &str| client().get(gw.url(&format!("/sse?tag={tag}&n=0&every=50"))).send();
    let mut first = open("s1").await.unwrap();
    let mut second = open("s2").await.unwrap();
    assert!(first.chunk().await.unwrap().is_some() && second.chunk().await.unwrap().is_some());

    // Full: a third stream, and any other request, gets 503 with Retry-After.
    let third = open("s3").await.unwrap();
    assert_eq!(third.status(), 503);
    assert_eq!(third.headers()["retry-after"], "5");
    assert!(third.text().await.unwrap().contains("maximum of 2 open streams"));

    // A client that leaves gives its place back.
    drop(first);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut again = loop {
        let resp = open("s4").await.unwrap();
        if resp.status() == 200 {
            break resp;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place of a closed stream was never given back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(again.chunk().await.unwrap().is_some());
    drop(second);
    drop(again);

    // A stream the upstream ends gives its place back, and plain replies keep none.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for i in 0..5 {
        let short = client()
            .get(gw.url(&format!("/sse?tag=short{i}&n=2&every=10")))
            .send()
            .await
            .unwrap();
        assert_eq!(short.status(), 200);
        assert_eq!(read_stream(short, usize::MAX).await.events.len(), 2);
        let plain = client()
            .get(gw.url(&format!("/json?tag=p{i}&n=1")))
            .send()
            .await
            .unwrap();
        assert_eq!(plain.status(), 200);
        plain.text().await.unwrap();
    }
    let mut held = Vec::new();
    for tag in ["f1", "f2"] {
        let mut resp = open(tag).await.unwrap();
        assert_eq!(resp.status(), 200, "places leaked");
        resp.chunk().await.unwrap();
        held.push(resp);
    }
    assert_eq!(open("f3").await.unwrap().status(), 503);
    // A table swap while both places are held keeps the count: still full.
    gw.set_route("  proxyBuffering: Disabled\n  maxConcurrentStreams: 2\n  sse: {heartbeatInterval: 10s}\n");
    assert_eq!(
        open("f4").await.unwrap().status(),
        503,
        "a table swap reset the count of open streams"
    );
    drop(held);

    // A stream whose upstream fails (here: goes silent past the idle timeout) gives its place back.
    gw.set_route("  proxyBuffering: Disabled\n  maxConcurrentStreams: 1\n  timeouts: {idle: 200ms}\n");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let failed = client().get(gw.url("/stall?tag=fail")).send().await.unwrap();
    assert_eq!(failed.status(), 200);
    assert!(
        read_stream(failed, usize::MAX).await.error.is_some(),
        "the idle timeout should cut it"
    );
    let after = client().get(gw.url("/sse?tag=after&n=1")).send().await.unwrap();
    assert_eq!(after.status(), 200, "a failed stream kept its place");
}

#[tokio::test]
async fn least_connections_sends_new_streams_away_from_a_loaded_endpoint() {
    let (a, b, c) = (
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    );
    let gw = Gateway::start().await;
    gw.write(
        "backend.yaml",
        &backend_yaml("svc", &[(a.addr, true), (b.addr, true), (c.addr, true)]),
    );
    // Round robin first, to load endpoint a with streams.
    gw.set_route("  proxyBuffering: Disabled\n  loadBalancing: RoundRobin\n");
    let mut open = Vec::new();
    let served_by = |resp: &str| resp.contains("data: a ") as usize;
    let mut on_a = 0;
    while on_a < 12 {
        assert!(open.len() < 60, "round robin never reached endpoint a 12 times");
        let mut resp = client()
            .get(gw.url("/sse?tag=load&n=1000&every=200"))
            .send()
            .await
            .unwrap();
        let first = resp.chunk().await.unwrap().unwrap();
        on_a += served_by(std::str::from_utf8(&first).unwrap());
        open.push(resp);
    }
    // Now 12 streams sit on a and about as many on b and c. Close those on b and c.
    let mut kept = Vec::new();
    for mut resp in open {
        let chunk = resp.chunk().await.unwrap().unwrap();
        if std::str::from_utf8(&chunk).unwrap().contains("data: a ") {
            kept.push(resp);
        }
    }
    assert_eq!(kept.len(), 12);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    // With LeastConnections, new streams avoid a.
    gw.set_route("  proxyBuffering: Disabled\n  loadBalancing: LeastConnections\n");
    let mut counts = std::collections::HashMap::new();
    let mut fresh = Vec::new();
    for _ in 0..12 {
        let mut resp = client()
            .get(gw.url("/sse?tag=new&n=1000&every=200"))
            .send()
            .await
            .unwrap();
        let chunk = resp.chunk().await.unwrap().unwrap();
        let who = std::str::from_utf8(&chunk)
            .unwrap()
            .split_whitespace()
            .nth(3)
            .unwrap()
            .to_owned();
        *counts.entry(who).or_insert(0) += 1;
        fresh.push(resp);
    }
    assert!(
        counts.get("a").copied().unwrap_or(0) <= 1,
        "new streams went to the loaded endpoint: {counts:?}"
    );
    let (on_b, on_c) = (
        counts.get("b").copied().unwrap_or(0),
        counts.get("c").copied().unwrap_or(0),
    );
    assert!(on_b >= 4 && on_c >= 4, "streams should spread over b and c: {counts:?}");
}

#[tokio::test]
async fn a_failed_connect_ejects_the_endpoint_and_retries_elsewhere() {
    let up = Upstream::start("alive").await;
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = Gateway::start().await;
    gw.write("backend.yaml", &backend_yaml("svc", &[(dead, true), (up.addr, true)]));
    gw.set_route("  loadBalancing: RoundRobin\n");
    // Every GET succeeds: the dead endpoint is retried past, then ejected.
    for i in 0..10 {
        let resp = client()
            .get(gw.url(&format!("/json?tag=r{i}&n=1")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
    }
    // A request with a body cannot be replayed: it gets the 502 if it meets the dead endpoint,
    // but the ejection keeps it away for a while, so it succeeds too.
    let resp = client()
        .post(gw.url("/json?tag=post&n=1"))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_departed_client_cancels_a_silent_upstream_with_or_without_heartbeats() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start().await;
    gw.write("backend.yaml", &backend_yaml("svc", &[(up.addr, true)]));
    let wait_closed = |tag: &'static str, limit_ms: u64| {
        let up = &up;
        async move {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(limit_ms);
            while tokio::time::Instant::now() < deadline {
                if up.closed(tag).is_some() {
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            false
        }
    };

    // hyper sees the client's FIN even on a silent stream. (Heartbeats are
    // for clients that vanish without one; their failed write ends the stream.)
    gw.set_route("  proxyBuffering: Disabled\n");
    let mut resp = client().get(gw.url("/stall?tag=quiet")).send().await.unwrap();
    resp.chunk().await.unwrap();
    drop(resp);
    assert!(wait_closed("quiet", 2000).await, "the silent upstream was left open");

    gw.set_route("  proxyBuffering: Disabled\n  sse: {heartbeatInterval: 100ms}\n");
    let mut resp = client().get(gw.url("/stall?tag=beat")).send().await.unwrap();
    resp.chunk().await.unwrap();
    drop(resp);
    assert!(wait_closed("beat", 2000).await, "the upstream was left open");
}
