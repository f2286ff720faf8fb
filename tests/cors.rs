//! CORS for EventSource: preflights answered by ssegate, headers on streams
//! and plain replies, credentialed requests, and origins turned away.

mod common;

use common::{client, one_backend, read_stream, route_yaml};

const POLICY: &str = "  cors:
    allowOrigins: [\"https://app.test\", \"https://*.apps.test\"]
    allowCredentials: true
    allowHeaders: [Authorization]
    exposeHeaders: [X-Stream-Id]
    maxAge: 10m
";

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

fn vary(resp: &reqwest::Response) -> String {
    resp.headers()
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test]
async fn preflight_is_answered_by_ssegate_with_last_event_id_allowed() {
    let (up, gw) = one_backend(POLICY).await;
    let resp = client()
        .request(reqwest::Method::OPTIONS, gw.url("/sse?tag=pre"))
        .header("origin", "https://app.test")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "last-event-id")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some("https://app.test"));
    assert_eq!(header(&resp, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&resp, "access-control-allow-methods"), Some("GET, HEAD, POST"));
    assert_eq!(
        header(&resp, "access-control-allow-headers"),
        Some("last-event-id, authorization")
    );
    assert_eq!(header(&resp, "access-control-max-age"), Some("600"));
    assert!(vary(&resp).contains("origin"), "{}", vary(&resp));
    assert!(up.headers("pre").is_empty(), "the preflight reached the upstream");

    // An OPTIONS request that is not a preflight goes to the upstream.
    let resp = client()
        .request(reqwest::Method::OPTIONS, gw.url("/plain?tag=opt"))
        .header("origin", "https://app.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!up.headers("opt").is_empty());
}

#[tokio::test]
async fn credentialed_event_stream_gets_cors_headers_and_keeps_last_event_id() {
    let (up, gw) = one_backend(POLICY).await;
    let resp = client()
        .get(gw.url("/sse?tag=cred&n=3&every=20&cors=1"))
        .header("origin", "https://eu.apps.test")
        .header("cookie", "session=abc")
        .header("last-event-id", "41")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), Some("text/event-stream"));
    assert_eq!(
        header(&resp, "access-control-allow-origin"),
        Some("https://eu.apps.test")
    );
    assert_eq!(header(&resp, "access-control-allow-credentials"), Some("true"));
    // ssegate's policy replaces the upstream's own CORS headers.
    assert_eq!(header(&resp, "access-control-expose-headers"), Some("x-stream-id"));
    assert_eq!(resp.headers().get_all("access-control-allow-origin").iter().count(), 1);
    assert!(vary(&resp).contains("origin"));
    let received = read_stream(resp, 3).await;
    assert_eq!(received.events.len(), 3);
    let sent = up.headers("cred");
    assert_eq!(sent["last-event-id"], "41");
    assert_eq!(sent["cookie"], "session=abc");

    // Plain replies get the same headers.
    let resp = client()
        .get(gw.url("/plain"))
        .header("origin", "https://app.test")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "access-control-allow-origin"), Some("https://app.test"));
}

#[tokio::test]
async fn disallowed_origin_gets_no_cors_headers() {
    let (up, gw) = one_backend(POLICY).await;
    for origin in ["https://evil.test", "https://apps.test", "http://app.test"] {
        let resp = client()
            .request(reqwest::Method::OPTIONS, gw.url("/sse"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{origin}");
        assert_eq!(header(&resp, "access-control-allow-origin"), None);

        let resp = client()
            .get(gw.url("/sse?tag=evil&n=1&cors=1"))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        // The request is served (CORS is enforced by the browser), but
        // nothing in the reply lets the page read it, not even the
        // upstream's own wildcard.
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "access-control-allow-origin"), None, "{origin}");
        assert_eq!(header(&resp, "access-control-allow-credentials"), None);
    }
    assert!(!up.headers("evil").is_empty());
}

#[tokio::test]
async fn public_policy_answers_star_and_unsafe_policy_is_rejected() {
    let (_up, gw) = one_backend("  cors: {allowOrigins: [\"*\"]}\n").await;
    let resp = client()
        .get(gw.url("/plain"))
        .header("origin", "https://anyone.test")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&resp, "access-control-allow-credentials"), None);

    // '*' with credentials would let any site read users' streams: rejected
    // with the reason, and the Route that worked before stays in force.
    gw.write(
        "bad.yaml",
        &route_yaml(
            "bad",
            "  hostnames: [bad.test]\n  cors: {allowOrigins: [\"*\"], allowCredentials: true}\n",
            "svc",
        ),
    );
    let table = gw.table();
    let bad = table.reports.iter().find(|r| r.key.name == "bad").unwrap();
    assert_eq!(bad.accepted.reason, "Invalid");
    assert!(
        bad.accepted
            .message
            .contains("spec.cors.allowOrigins[0]: * cannot be combined with allowCredentials"),
        "{}",
        bad.accepted.message
    );
    let resp = client().get(gw.url("/plain")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
