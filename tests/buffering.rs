//! proxyBuffering, proven with a real HTTP client on real streams: each test
//! asserts *when* bytes arrive relative to when the upstream emitted them.

mod common;

use common::*;

async fn setup(mode: &str) -> (Upstream, Gateway) {
    one_backend(mode).await
}

#[tokio::test]
async fn disabled_delivers_each_event_before_the_next_is_emitted() {
    let (up, gw) = setup("  proxyBuffering: Disabled\n").await;
    let resp = client().get(gw.url("/sse?tag=d&n=6&every=100")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let got = read_stream(resp, usize::MAX).await;
    let emits = up.emits("d");
    assert_eq!(got.events.len(), 6);
    for i in 0..5 {
        assert!(
            got.events[i].1 < emits[i + 1],
            "event {} arrived {:?} after event {} was emitted",
            i + 1,
            got.events[i].1 - emits[i + 1],
            i + 2
        );
    }
    assert!(got.events[5].0.starts_with("id: 6\n"));
}

#[tokio::test]
async fn enabled_holds_small_events_until_the_body_ends() {
    let (up, gw) = setup("  proxyBuffering: Enabled\n").await;
    let resp = client().get(gw.url("/sse?tag=e&n=5&every=100")).send().await.unwrap();
    let got = read_stream(resp, usize::MAX).await;
    let emits = up.emits("e");
    assert_eq!(got.events.len(), 5, "every byte still arrives");
    let first = got.chunks[0].1;
    assert!(first > emits[2], "event 1 must not arrive before event 3 is emitted");
    assert!(first >= emits[4], "nothing arrives before the body ends");
    assert_eq!(
        got.chunks.len(),
        1,
        "64Ki of buffer holds the whole small body: {:?}",
        got.chunks
    );
}

#[tokio::test]
async fn enabled_flushes_when_the_buffer_is_full() {
    // 300-byte events into a 1Ki buffer: the 4th event does not fit, so the
    // first three (900 bytes) go out when it arrives, and not before.
    let (up, gw) = setup("  proxyBuffering: Enabled\n  bufferSize: 1Ki\n").await;
    let resp = client()
        .get(gw.url("/sse?tag=f&n=8&every=100&size=283"))
        .send()
        .await
        .unwrap();
    let got = read_stream(resp, usize::MAX).await;
    let emits = up.emits("f");
    let event_len = got.events[0].0.len();
    assert_eq!(event_len, 300);
    assert_eq!(got.chunks[0].0, 900, "chunks: {:?}", got.chunks);
    assert!(got.chunks[0].1 >= emits[3], "flushed before the buffer was full");
    assert!(got.chunks[0].1 < emits[4], "not flushed when the buffer filled");
    assert_eq!(got.events.len(), 8);
}

#[tokio::test]
async fn auto_streams_event_streams_and_coalesces_json() {
    let (up, gw) = setup("").await;
    let resp = client().get(gw.url("/sse?tag=a&n=4&every=100")).send().await.unwrap();
    let got = read_stream(resp, usize::MAX).await;
    let emits = up.emits("a");
    for i in 0..3 {
        assert!(got.events[i].1 < emits[i + 1], "SSE event {} was held back", i + 1);
    }

    let resp = client().get(gw.url("/json?tag=j&n=4&every=100")).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let got = read_stream(resp, usize::MAX).await;
    let emits = up.emits("j");
    assert_eq!(
        got.chunks.len(),
        1,
        "JSON should arrive as one coalesced write: {:?}",
        got.chunks
    );
    assert!(got.chunks[0].1 >= emits[3]);
}

#[tokio::test]
async fn x_accel_buffering_overrides_and_is_never_forwarded() {
    let (up, gw) = setup("  proxyBuffering: Enabled\n").await;
    // Enabled + `no`: streams.
    let resp = client()
        .get(gw.url("/json?tag=no&n=4&every=100&accel=no"))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("x-accel-buffering").is_none());
    let got = read_stream(resp, usize::MAX).await;
    let emits = up.emits("no");
    assert_eq!(got.chunks.len(), 4, "{:?}", got.chunks);
    assert!(got.chunks[0].1 < emits[1]);

    // Auto + `yes`: an event stream is buffered.
    gw.set_route("  proxyBuffering: Auto\n");
    let resp = client()
        .get(gw.url("/sse?tag=yes&n=4&every=100&accel=yes"))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("x-accel-buffering").is_none());
    let got = read_stream(resp, usize::MAX).await;
    let emits = up.emits("yes");
    assert_eq!(got.chunks.len(), 1, "{:?}", got.chunks);
    assert!(got.chunks[0].1 >= emits[3]);

    // Disabled + `yes`: Disabled means every frame goes out at once.
    gw.set_route("  proxyBuffering: Disabled\n");
    let resp = client()
        .get(gw.url("/sse?tag=dis&n=3&every=100&accel=yes"))
        .send()
        .await
        .unwrap();
    let got = read_stream(resp, usize::MAX).await;
    assert!(got.events[0].1 < up.emits("dis")[1]);
}

#[tokio::test]
async fn table_swap_leaves_an_open_stream_in_its_mode() {
    let (up, gw) = setup("  proxyBuffering: Disabled\n").await;
    let resp = client()
        .get(gw.url("/sse?tag=open&n=8&every=100"))
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(read_stream(resp, usize::MAX));
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    gw.set_route("  proxyBuffering: Enabled\n");

    // A new request follows the new mode...
    let resp = client().get(gw.url("/sse?tag=new&n=3&every=100")).send().await.unwrap();
    let fresh = read_stream(resp, usize::MAX).await;
    assert_eq!(fresh.chunks.len(), 1);
    assert!(fresh.chunks[0].1 >= up.emits("new")[2]);

    // ...while the open one went on streaming, unbroken.
    let open = reader.await.unwrap();
    let emits = up.emits("open");
    assert!(open.error.is_none());
    assert_eq!(open.events.len(), 8);
    for i in 0..7 {
        assert!(
            open.events[i].1 < emits[i + 1],
            "open stream was buffered at event {}",
            i + 1
        );
        assert!(open.events[i].0.starts_with(&format!("id: {}\n", i + 1)));
    }
}
