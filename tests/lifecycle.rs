//! SSE stream lifecycle features with real streams: heartbeats.

mod common;

use common::*;

#[tokio::test]
async fn heartbeats_fill_silences_but_never_split_an_event() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start().await;
    gw.write("backend.yaml", &backend_yaml("svc", &[(up.addr, true)]));
    gw.write(
        "route.yaml",
        &route_yaml(
            "r",
            "  proxyBuffering: Disabled\n  sse: {heartbeatInterval: 200ms}\n",
            "svc",
        ),
    );

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
    let up = Upstream::start("u").await;
    let gw = Gateway::start().await;
    gw.write("backend.yaml", &backend_yaml("svc", &[(up.addr, true)]));
    gw.write("route.yaml", &route_yaml("r", "  proxyBuffering: Disabled\n", "svc"));
    let resp = client().get(gw.url("/split?tag=none&pause=400")).send().await.unwrap();
    let text = resp.text().await.unwrap();
    assert_eq!(text, "data: one\n\ndata: part two\r\n\r\n");

    // JSON through a heartbeat Route gets none either.
    gw.write(
        "route.yaml",
        &route_yaml(
            "r",
            "  proxyBuffering: Disabled\n  sse: {heartbeatInterval: 100ms}\n",
            "svc",
        ),
    );
    let resp = client().get(gw.url("/json?tag=j&n=3&every=300")).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "[{\"n\":1},{\"n\":2},{\"n\":3}]");
}
