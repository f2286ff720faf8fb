//! Observability of a real ssegate process: `/metrics` scraped while
//! streams open and close, access-log lines in JSON, and `/debug/routes`.

mod common;

use common::process::Ssegate;
use common::*;
use std::time::Duration;
use tokio::time::Instant;

async fn scrape(gw: &Ssegate) -> String {
    let resp = client().get(format!("{}/metrics", gw.admin)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    resp.text().await.unwrap()
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until `series` has `value`.
async fn wait_for(gw: &Ssegate, series: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(gw).await;
        if sample(&text, series) == Some(value) {
            return;
        }
        assert!(Instant::now() < deadline, "{series} never became {value}:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_open_streams_and_access_lines_describe_each_request() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    // A port that was free a moment ago, so connects to it are refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(dir.path().join("backend.yaml"), backend_yaml("svc", &[(up.addr, true)])).unwrap();
    std::fs::write(dir.path().join("dead.yaml"), backend_yaml("dead", &[(dead, true)])).unwrap();
    std::fs::write(
        dir.path().join("route.yaml"),
        route_yaml("r", "  hostnames: [r.test]\n  proxyBuffering: Disabled\n", "svc"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("route-dead.yaml"),
        route_yaml("gone", "  hostnames: [gone.test]\n", "dead"),
    )
    .unwrap();
    let args = [
        "--log-format",
        "json",
        "standalone",
        "--dir",
        dir.path().to_str().unwrap(),
    ];
    let gw = Ssegate::start(&args, logs.path()).await;
    let open = r#"ssegate_open_streams{route="default/r"}"#;

    let before = scrape(&gw).await;
    assert_eq!(sample(&before, "ssegate_table_generation"), Some(1.0), "{before}");
    assert!(sample(&before, "ssegate_table_last_swap_timestamp_seconds").unwrap() > 1.7e9);
    assert_eq!(sample(&before, r#"ssegate_routes{state="accepted"}"#), Some(2.0));

    // Three streams open: the gauge rises to 3.
    let mut streams = Vec::new();
    for i in 0..3 {
        let resp = client()
            .get(format!("{}/sse?tag=s{i}&n=0&every=30", gw.proxy))
            .header("host", "r.test")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        streams.push(resp);
    }
    let mut received = 0;
    for s in &mut streams {
        // At least one whole event on each.
        let mut text = String::new();
        while !text.contains("\n\n") {
            text.push_str(std::str::from_utf8(&s.chunk().await.unwrap().unwrap()).unwrap());
        }
        received += text.matches("\n\n").count();
    }
    let text = scrape(&gw).await;
    assert_eq!(sample(&text, open), Some(3.0), "{text}");
    assert!(sample(&text, r#"ssegate_events_total{route="default/r"}"#).unwrap() >= received as f64);
    assert!(sample(&text, r#"ssegate_response_bytes_total{route="default/r"}"#).unwrap() > 0.0);
    assert_eq!(
        sample(&text, r#"ssegate_requests_total{route="default/r",status_class="2xx"}"#),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, r#"ssegate_upstream_ttfb_seconds_count{route="default/r"}"#),
        Some(3.0)
    );

    // Events are counted as they pass, not when a stream ends.
    let events_then = sample(&text, r#"ssegate_events_total{route="default/r"}"#).unwrap();
    let mut more = String::new();
    while more.matches("\n\n").count() < 3 {
        more.push_str(std::str::from_utf8(&streams[0].chunk().await.unwrap().unwrap()).unwrap());
    }
    let events_now = sample(&scrape(&gw).await, r#"ssegate_events_total{route="default/r"}"#).unwrap();
    assert!(events_now >= events_then + 3.0, "{events_now} < {events_then} + 3");

    // ... and the gauge falls as clients leave.
    streams.truncate(1);
    wait_for(&gw, open, 1.0).await;
    streams.clear();
    wait_for(&gw, open, 0.0).await;

    // An endpoint that refuses connections, and a request with no Route.
    let resp = client()
        .get(format!("{}/x", gw.proxy))
        .header("host", "gone.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let resp = client()
        .get(format!("{}/x", gw.proxy))
        .header("host", "nothing.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let text = scrape(&gw).await;
    // One attempt: a bodyless request is retried only when the Route has
    // another endpoint to try.
    assert_eq!(
        sample(
            &text,
            r#"ssegate_upstream_errors_total{route="default/gone",kind="connect"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"ssegate_requests_total{route="default/gone",status_class="5xx"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"ssegate_requests_total{route="",status_class="4xx"}"#),
        Some(1.0)
    );

    // A file change: the generation moves and the apply latency is observed.
    std::fs::write(
        dir.path().join("broken.yaml"),
        route_yaml("broken", "  hostnames: [b.test]\n  bufferSize: 1Ti\n", "svc"),
    )
    .unwrap();
    wait_for(&gw, r#"ssegate_routes{state="rejected"}"#, 1.0).await;
    let text = scrape(&gw).await;
    assert!(sample(&text, "ssegate_table_generation").unwrap() >= 2.0);
    assert!(
        sample(&text, "ssegate_config_apply_seconds_count").unwrap() >= 1.0,
        "{text}"
    );

    // A deleted Route's series go with it.
    std::fs::remove_file(dir.path().join("route-dead.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while scrape(&gw).await.contains(r#"route="default/gone""#) {
        assert!(Instant::now() < deadline, "series of a deleted Route stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(scrape(&gw).await.contains(r#"route="default/r""#));

    // /debug/routes lists the rejected Route with its reason.
    let routes = gw.admin_json("/debug/routes").await;
    let broken = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "default/broken")
        .unwrap_or_else(|| panic!("{routes:#}"));
    assert_eq!(broken["accepted"]["status"], "False");
    assert_eq!(broken["accepted"]["reason"], "Invalid");
    assert!(broken["accepted"]["message"]
        .as_str()
        .unwrap()
        .contains("spec.bufferSize"));

    // One JSON access line per finished request or stream.
    let access: Vec<serde_json::Value> = gw
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "ssegate::access")
        .collect();
    let fields: Vec<&serde_json::Value> = access.iter().map(|v| &v["fields"]).collect();
    let streams: Vec<_> = fields.iter().filter(|f| f["route"] == "default/r").collect();
    assert_eq!(streams.len(), 3, "{fields:#?}");
    for f in &streams {
        assert_eq!(f["status"], 200);
        assert_eq!(f["outcome"], "client_gone");
        assert_eq!(f["path"], "/sse");
        assert!(f["bytes"].as_u64().unwrap() > 0);
        assert!(f["events"].as_u64().unwrap() >= 1);
        assert!(f["duration_ms"].as_f64().unwrap() > 0.0);
        assert_eq!(f["endpoint"], up.addr.to_string());
    }
    let gone = fields.iter().find(|f| f["route"] == "default/gone").unwrap();
    assert_eq!(
        (gone["status"].as_u64(), gone["outcome"].as_str()),
        (Some(502), Some("local"))
    );
    let missing = fields.iter().find(|f| f["route"] == "").unwrap();
    assert_eq!(missing["status"], 404);
}

/// Every way a request can end, each seen in its access line and, for the
/// upstream's failures, in `ssegate_upstream_errors_total` by kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_and_upstream_error_kind_is_logged_and_counted() {
    use common::raw::RawUpstream;
    let up = Upstream::start("u").await;
    // Closes every connection at once: the upstream fails before its headers.
    let slammer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slam = slammer.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = slammer.accept().await {
            drop(s);
        }
    });
    // Promises 100 bytes, sends 3, and closes: the body fails midway.
    let short = RawUpstream::start(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc").await;
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let files = [
        ("b.yaml", backend_yaml("svc", &[(up.addr, true)])),
        ("slam.yaml", backend_yaml("slam", &[(slam, true)])),
        ("short.yaml", backend_yaml("short", &[(short.addr, true)])),
        (
            "complete.yaml",
            route_yaml("complete", "  hostnames: [complete.test]\n", "svc"),
        ),
        (
            "slow.yaml",
            route_yaml(
                "slow",
                "  hostnames: [slow.test]\n  timeouts: {responseHeaders: 300ms}\n",
                "svc",
            ),
        ),
        (
            "idle.yaml",
            route_yaml("idle", "  hostnames: [idle.test]\n  timeouts: {idle: 300ms}\n", "svc"),
        ),
        (
            "max.yaml",
            route_yaml(
                "max",
                "  hostnames: [max.test]\n  sse: {maxStreamDuration: 300ms}\n",
                "svc",
            ),
        ),
        (
            "failed.yaml",
            route_yaml("failed", "  hostnames: [failed.test]\n", "slam"),
        ),
        ("cut.yaml", route_yaml("cut", "  hostnames: [cut.test]\n", "short")),
    ];
    for (name, yaml) in &files {
        std::fs::write(dir.path().join(name), yaml).unwrap();
    }
    let args = [
        "--log-format",
        "json",
        "standalone",
        "--dir",
        dir.path().to_str().unwrap(),
    ];
    let gw = Ssegate::start(&args, logs.path()).await;
    let get = |host: &'static str, path: &'static str| {
        let url = format!("{}{path}", gw.proxy);
        async move { client().get(url).header("host", host).send().await.unwrap() }
    };

    let r = get("complete.test", "/json?n=2&every=10").await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.is_ok());
    assert_eq!(get("slow.test", "/slow?delay=1500").await.status(), 504);
    let r = get("idle.test", "/stall?tag=idle").await;
    assert!(
        read_stream(r, usize::MAX).await.error.is_some(),
        "the idle stream was not cut"
    );
    let r = get("max.test", "/sse?tag=max&n=0&every=50").await;
    assert!(read_stream(r, usize::MAX).await.error.is_none());
    assert_eq!(get("failed.test", "/").await.status(), 502);
    let r = get("cut.test", "/").await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err(), "a body cut short must not look complete");
    let raw = common::raw::exchange(
        &gw.proxy_addr(),
        b"GET /a%2fb HTTP/1.1\r\nHost: complete.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");

    // The access lines: one per request, with its outcome.
    let deadline = Instant::now() + Duration::from_secs(5);
    let outcome_of = |route: &str| -> Option<String> {
        gw.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "ssegate::access" && v["fields"]["route"] == route)
            .map(|v| v["fields"]["outcome"].as_str().unwrap_or("").to_owned())
            .next()
    };
    let expected = [
        ("default/complete", "complete"),
        ("default/slow", "local"),
        ("default/idle", "idle_timeout"),
        ("default/max", "max_duration"),
        ("default/failed", "local"),
        ("default/cut", "upstream_error"),
        ("", "refused"),
    ];
    loop {
        let seen: Vec<(&str, Option<String>)> = expected.iter().map(|(r, _)| (*r, outcome_of(r))).collect();
        if expected
            .iter()
            .zip(&seen)
            .all(|((_, want), (_, got))| got.as_deref() == Some(want))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "access outcomes {seen:?}, wanted {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let text = scrape(&gw).await;
    for (route, kind) in [
        ("default/slow", "response_timeout"),
        ("default/idle", "idle_timeout"),
        ("default/failed", "failed"),
    ] {
        let series = format!("ssegate_upstream_errors_total{{route=\"{route}\",kind=\"{kind}\"}}");
        assert_eq!(sample(&text, &series), Some(1.0), "{series} in\n{text}");
    }
    assert_eq!(sample(&text, r#"ssegate_bad_requests_total{reason="path"}"#), Some(1.0));
}
