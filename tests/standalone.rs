//! The real `ssegate` binary in standalone mode: live reload from a folder
//! with an open stream, broken edits, and the one-command demo.

mod common;

use common::process::Ssegate;
use common::*;
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test]
async fn flipping_buffering_in_a_file_applies_live_without_dropping_streams() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("backend.yaml"), backend_yaml("svc", &[(up.addr, true)])).unwrap();
    let route = dir.path().join("route.yaml");
    std::fs::write(&route, route_yaml("r", "  proxyBuffering: Disabled\n", "svc")).unwrap();
    let gw = Ssegate::start(&["standalone", "--dir", dir.path().to_str().unwrap()], logs.path()).await;

    let open = client()
        .get(format!("{}/sse?tag=open&n=15&every=100", gw.proxy))
        .send()
        .await
        .unwrap();
    let open = tokio::spawn(read_stream(open, usize::MAX));
    tokio::time::sleep(Duration::from_millis(250)).await;

    // Flip with an editor-style atomic rename, and time it until live.
    let mut flips = Vec::new();
    for mode in ["Enabled", "Auto", "Enabled"] {
        let tmp = dir.path().join(".route.yaml.swp");
        std::fs::write(&tmp, route_yaml("r", &format!("  proxyBuffering: {mode}\n"), "svc")).unwrap();
        let written = Instant::now();
        std::fs::rename(&tmp, &route).unwrap();
        while gw.buffering_of("r").await != mode {
            assert!(
                written.elapsed() < Duration::from_secs(5),
                "{mode} never applied: {}",
                gw.logs()
            );
        }
        flips.push(written.elapsed());
    }
    eprintln!("file change to live: {flips:?}");
    // Each flip is logged with what the Route now serves with.
    let logs = gw.logs();
    for mode in ["Disabled", "Enabled", "Auto"] {
        assert!(
            logs.lines()
                .any(|l| l.contains("route accepted") && l.contains(&format!("settings={mode}, bufferSize 65536"))),
            "no 'route accepted' line with {mode}:\n{logs}"
        );
    }

    // New requests follow the new mode.
    let fresh = client()
        .get(format!("{}/sse?tag=fresh&n=3&every=100", gw.proxy))
        .send()
        .await
        .unwrap();
    let fresh = read_stream(fresh, usize::MAX).await;
    assert_eq!(fresh.chunks.len(), 1, "Enabled should coalesce: {:?}", fresh.chunks);
    assert!(fresh.chunks[0].1 >= up.emits("fresh")[2]);

    // A broken edit is reported and the last good Route stays in force.
    std::fs::write(
        &route,
        "apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {name: r}\nspec: {proxyBuffering: On}\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.logs().contains("route.yaml: document 1: Route r:") {
        assert!(Instant::now() < deadline, "broken file not reported: {}", gw.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gw.logs().contains("keeping the last good version"));
    let still = client()
        .get(format!("{}/json?tag=still&n=2&every=50", gw.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), 200);
    assert_eq!(gw.buffering_of("r").await, "Enabled");

    // The stream opened under Disabled went on streaming, unbroken.
    let open = open.await.unwrap();
    let emits = up.emits("open");
    assert!(open.error.is_none(), "{:?}", open.error);
    assert_eq!(open.events.len(), 15);
    for i in 0..14 {
        assert!(open.events[i].0.starts_with(&format!("id: {}\n", i + 1)));
        assert!(
            open.events[i].1 < emits[i + 1],
            "open stream was held back at event {}",
            i + 1
        );
    }
}

#[tokio::test]
async fn demo_command_serves_the_example_stream() {
    let backend = free_port();
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples/standalone");
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("8081", &backend.to_string());
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let args = [
        "demo",
        "--dir",
        dir.path().to_str().unwrap(),
        "--backend",
        &format!("127.0.0.1:{backend}"),
    ];
    let gw = Ssegate::start(&args, dir.path()).await;
    assert!(
        !gw.logs().contains("WARN"),
        "examples should load cleanly: {}",
        gw.logs()
    );

    let resp = client()
        .get(format!("{}/.sse?interval=100ms&count=3", gw.proxy))
        .header("last-event-id", "41")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let got = read_stream(resp, usize::MAX).await;
    let events: Vec<&str> = got.events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(events.len(), 5, "{events:?}");
    assert!(
        events[0].starts_with("id: 42\nevent: server\ndata: demo-1\n"),
        "{}",
        events[0]
    );
    assert!(events[1].starts_with("id: 43\nevent: request\ndata: GET /.sse?interval=100ms&count=3 HTTP/1.1\n"));
    assert!(events[1].contains("\ndata: last-event-id: 41\n"), "{}", events[1]);
    for (i, e) in events[2..].iter().enumerate() {
        assert!(e.starts_with(&format!("id: {}\nevent: time\ndata: 20", 44 + i)), "{e}");
    }
    // Disabled in demo.yaml: time events arrive one by one, ~100ms apart.
    assert!(got.events[3].1 - got.events[2].1 >= Duration::from_millis(50));

    // The Enabled example coalesces the chatty endpoint into 4Ki blocks.
    let resp = client()
        .get(format!("{}/buffered/chatty?chunks=600&size=16&interval=0s", gw.proxy))
        .send()
        .await
        .unwrap();
    let got = read_stream(resp, usize::MAX).await;
    let sizes: Vec<usize> = got.chunks.iter().map(|c| c.0).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 600 * 16);
    // Blocks of at most 4Ki. A block goes out early only when the next read
    // does not fit beside it, so any two neighbours hold more than 4Ki.
    assert!(sizes.iter().all(|s| *s <= 4096), "{sizes:?}");
    assert!(sizes.windows(2).all(|w| w[0] + w[1] > 4096), "{sizes:?}");

    // The example Ingress, with proxy-buffering "off": event by event.
    let resp = client()
        .get(format!("{}/legacy/.sse?interval=100ms&count=3", gw.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = read_stream(resp, usize::MAX).await;
    assert_eq!(got.events.len(), 5, "{:?}", got.events);
    assert!(got.events[3].1 - got.events[2].1 >= Duration::from_millis(50));

    // The example Gateway API objects, with the policy's Disabled.
    let resp = client()
        .get(format!("{}/gateway/.sse?interval=100ms&count=3", gw.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-served-by"], "ssegate");
    let got = read_stream(resp, usize::MAX).await;
    assert_eq!(got.events.len(), 5, "{:?}", got.events);
    assert!(got.events[3].1 - got.events[2].1 >= Duration::from_millis(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_streams_at_a_boundary_and_finishes_requests_in_flight() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("backend.yaml"), backend_yaml("svc", &[(up.addr, true)])).unwrap();
    std::fs::write(
        dir.path().join("route.yaml"),
        route_yaml("r", "  proxyBuffering: Disabled\n", "svc"),
    )
    .unwrap();
    let args = [
        "standalone",
        "--dir",
        dir.path().to_str().unwrap(),
        "--drain-delay",
        "600ms",
        "--drain-timeout",
        "5s",
    ];
    let mut gw = Ssegate::start(&args, dir.path()).await;

    // Each event in two frames 80 ms apart: the drain most likely starts
    // inside an event, which must then be finished, not torn.
    let stream = client()
        .get(format!("{}/sse?tag=drain&n=0&every=100&split=80", gw.proxy))
        .send()
        .await
        .unwrap();
    let stream = tokio::spawn(read_stream(stream, usize::MAX));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let slow = tokio::spawn(client().get(format!("{}/slow?delay=1500", gw.proxy)).send());
    tokio::time::sleep(Duration::from_millis(100)).await;

    gw.terminate();
    let termed = Instant::now();
    // Unready at once, still serving during the delay.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = client().get(format!("{}/readyz", gw.admin)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let during = client()
        .get(format!("{}/json?tag=during&n=1", gw.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(during.status(), 200, "new requests are served during the drain delay");

    // The stream ends cleanly, at an event boundary, after the delay.
    let got = stream.await.unwrap();
    let ended = termed.elapsed();
    assert!(got.error.is_none(), "the stream was cut: {:?}", got.error);
    assert!(
        ended >= Duration::from_millis(550) && ended < Duration::from_secs(4),
        "{ended:?}"
    );
    assert!(got.events.len() >= 5);
    assert_eq!(got.tail, "", "the drain tore an event");
    for (i, (event, _)) in got.events.iter().enumerate() {
        assert!(event.starts_with(&format!("id: {}\n", i + 1)) && event.ends_with("\n\n"));
    }
    // Past the drain delay the listener is closed: new connections are refused.
    assert!(
        std::net::TcpStream::connect(gw.proxy.trim_start_matches("http://")).is_err(),
        "a new connection was accepted after the drain delay"
    );
    // The admin port outlives the drain: the liveness probe is still
    // answered and /metrics still shows the request in flight.
    let health = client().get(format!("{}/healthz", gw.admin)).send().await.unwrap();
    assert_eq!(health.status(), 200, "/healthz during the drain");
    let ready = client().get(format!("{}/readyz", gw.admin)).send().await.unwrap();
    assert_eq!(ready.status(), 503, "/readyz during the drain");

    // The plain request in flight is not lost.
    let slow = slow.await.unwrap().expect("the request in flight was dropped");
    assert_eq!(slow.status(), 200);
    assert_eq!(slow.text().await.unwrap(), "slow");

    let status = gw
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("ssegate did not exit after draining");
    assert!(status.success(), "{status:?}");
    assert!(termed.elapsed() < Duration::from_secs(6));
}

/// A buffered (`proxyBuffering: Enabled`) event stream is drained like any
/// other, over HTTP/1.1 and HTTP/2: what it holds is sent, it ends at an
/// event boundary when the drain starts, and it is not left open until the
/// drain timeout cuts it (a rolling restart would otherwise hold every
/// buffered stream for the whole timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_buffered_event_streams_with_what_they_hold() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("backend.yaml"), backend_yaml("svc", &[(up.addr, true)])).unwrap();
    std::fs::write(
        dir.path().join("route.yaml"),
        route_yaml("r", "  proxyBuffering: Enabled\n", "svc"),
    )
    .unwrap();
    let args = [
        "standalone",
        "--dir",
        dir.path().to_str().unwrap(),
        "--drain-delay",
        "300ms",
        "--drain-timeout",
        "20s",
    ];
    let mut gw = Ssegate::start(&args, dir.path()).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut streams = Vec::new();
    for (tag, c) in [("h1", client()), ("h2", h2)] {
        // Small events split in two frames: held, never a full buffer.
        let resp = c
            .get(format!("{}/sse?tag={tag}&n=0&every=100&split=40", gw.proxy))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        streams.push((tag, tokio::spawn(read_stream(resp, usize::MAX))));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    gw.terminate();
    let termed = Instant::now();
    for (tag, stream) in streams {
        let got = stream.await.unwrap();
        let ended = termed.elapsed();
        assert!(got.error.is_none(), "{tag}: the stream was cut: {:?}", got.error);
        assert!(
            ended < Duration::from_secs(5),
            "{tag}: ended after {ended:?}, not at the drain"
        );
        assert_eq!(got.tail, "", "{tag}: the drain tore an event");
        assert!(got.events.len() >= 5, "{tag}: {} events", got.events.len());
        for (i, (event, _)) in got.events.iter().enumerate() {
            assert!(
                event.starts_with(&format!("id: {}\n", i + 1)) && event.ends_with("\n\n"),
                "{tag}: event {i}: {event:?}"
            );
        }
    }
    let status = gw
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("ssegate did not exit after draining");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_ends_a_stream_that_never_reaches_a_boundary() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("backend.yaml"), backend_yaml("svc", &[(up.addr, true)])).unwrap();
    std::fs::write(dir.path().join("route.yaml"), route_yaml("r", "", "svc")).unwrap();
    let args = [
        "standalone",
        "--dir",
        dir.path().to_str().unwrap(),
        "--drain-delay",
        "0s",
        "--drain-timeout",
        "1s",
    ];
    let mut gw = Ssegate::start(&args, dir.path()).await;
    // Half an event, then a minute of silence: no boundary comes.
    let stream = client()
        .get(format!("{}/sse?tag=stuck&n=1&split=60000", gw.proxy))
        .send()
        .await
        .unwrap();
    let stream = tokio::spawn(read_stream(stream, usize::MAX));
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.terminate();
    let termed = Instant::now();
    let status = gw
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("ssegate did not exit at the drain timeout");
    let exited = termed.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        exited >= Duration::from_millis(900) && exited < Duration::from_millis(2500),
        "exited {exited:?} after SIGTERM, not at the 1 s drain timeout"
    );
    let got = stream.await.unwrap();
    assert_eq!(got.events.len(), 0);
    assert!(
        got.error.is_some() || !got.tail.is_empty(),
        "the unfinished event should show as cut"
    );
}

/// The scheduling slice each thread asks the kernel for: the data plane,
/// the accept loops and admin get `--cpu-slice-us` (so on a busy core an
/// event preempts a neighbour instead of waiting out its slice); the
/// control thread keeps the kernel's default; `0` leaves every thread at
/// the default. Linux 6.12 or later only (older kernels ignore the slice).
#[tokio::test]
async fn data_plane_threads_get_the_short_slice_and_the_control_thread_the_default() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let version: (u32, u32) = (
        parts.next().and_then(|p| p.parse().ok()).unwrap_or(0),
        parts.next().and_then(|p| p.parse().ok()).unwrap_or(0),
    );
    if version < (6, 12) {
        eprintln!("skipped: Linux {release} has no custom scheduling slices");
        return;
    }
    let slices = |pid: u32| -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
            let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let sched = std::fs::read_to_string(t.path().join("sched")).unwrap_or_default();
            let slice = sched
                .lines()
                .find(|l| l.starts_with("se.slice"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            out.push((name.trim().to_owned(), slice));
        }
        out
    };
    let default = std::fs::read_to_string("/proc/thread-self/sched")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("se.slice"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();

    let gw = Ssegate::start(&["standalone", "--dir", d, "--cpu-slice-us", "250"], logs.path()).await;
    let threads = slices(gw.pid().unwrap());
    let of = |prefix: &str| -> Vec<u64> {
        threads
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, s)| *s)
            .collect()
    };
    assert!(!of("ssegate-worker").is_empty(), "{threads:?}");
    assert!(of("ssegate-worker").iter().all(|s| *s == 250_000), "{threads:?}");
    assert!(of("tokio-rt-worker").iter().all(|s| *s == 250_000), "{threads:?}");
    assert_eq!(of("ssegate-control"), vec![default], "{threads:?}");
    drop(gw);

    let gw = Ssegate::start(&["standalone", "--dir", d, "--cpu-slice-us", "0"], logs.path()).await;
    let threads = slices(gw.pid().unwrap());
    assert!(threads.iter().all(|(_, s)| *s == default), "{threads:?}");
}

/// `ssegate demo-backend` as a child process, logging to a file; killed on
/// drop if it is still running.
struct DemoProcess {
    child: std::process::Child,
    log: std::path::PathBuf,
    addr: String,
}

impl DemoProcess {
    async fn start(dir: &Path, drain_timeout: &str) -> DemoProcess {
        let port = free_port();
        let log = dir.join(format!("demo-{port}.log"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_ssegate"))
            .args(["demo-backend", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--server-id", "drainer", "--drain-timeout", drain_timeout])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join(format!("demo-{port}.err"))).unwrap())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(Instant::now() < deadline, "the demo backend did not listen within 10s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        DemoProcess { child, log, addr }
    }

    fn terminate(&self) {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for the exit, for `limit` at most.
    async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn logs(&self) -> String {
        let err = self.log.with_extension("err");
        std::fs::read_to_string(&self.log).unwrap_or_default() + &std::fs::read_to_string(err).unwrap_or_default()
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn demo_backend_on_sigterm_keeps_its_streams_refuses_new_connections_and_exits_0_when_they_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = DemoProcess::start(dir.path(), "25s").await;
    let mut resp = client()
        .get(format!("http://{}/.sse?interval=100ms", demo.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Events are counted as they come; the body is read in its own task so
    // that the count goes on while the test looks at the process.
    let (count_tx, count_rx) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut text = String::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            text.push_str(std::str::from_utf8(&chunk).unwrap());
            count_tx.send_replace(text.matches("\n\n").count());
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while *count_rx.borrow() < 5 {
        assert!(Instant::now() < deadline, "no 5 events within 5s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    demo.terminate();
    let at_sigterm = *count_rx.borrow();
    // For 1.5 s after SIGTERM, the process runs and the stream goes on
    // (about 15 events at 100 ms), while a new connection is refused.
    let window = Instant::now() + Duration::from_millis(1500);
    let mut refused = false;
    while Instant::now() < window {
        assert!(demo.exited().is_none(), "exited with a stream open:\n{}", demo.logs());
        refused |= tokio::net::TcpStream::connect(&demo.addr).await.is_err();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let streamed = *count_rx.borrow() - at_sigterm;
    assert!(streamed >= 10, "{streamed} events in the 1.5 s after SIGTERM");
    assert!(refused, "still accepting connections 1.5 s after SIGTERM");

    // The client goes: the backend exits 0 at once.
    reader.abort();
    let _ = reader.await;
    let gone = Instant::now();
    let status = demo.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "not exited 0 within 5 s of its last stream's end:\n{}",
        demo.logs()
    );
    let took = gone.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "exited {took:?} after the last stream ended"
    );
    let logs = demo.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("demo backend drained"))
        .unwrap_or_else(|| panic!("no drained line:\n{logs}"));
    assert!(line.contains("took"), "{line}");
}

#[tokio::test]
async fn demo_backend_exits_0_at_once_on_sigterm_without_streams_and_at_its_drain_limit_with_one() {
    let dir = tempfile::tempdir().unwrap();
    // No stream open (an idle keep-alive connection does not count).
    let mut idle = DemoProcess::start(dir.path(), "25s").await;
    let keepalive = client();
    let resp = keepalive
        .get(format!("http://{}/json?chunks=1", idle.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    let start = Instant::now();
    idle.terminate();
    let status = idle.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", idle.logs());
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());

    // A stream that never ends: the process exits at --drain-timeout.
    let mut stuck = DemoProcess::start(dir.path(), "1s").await;
    let mut resp = client()
        .get(format!("http://{}/.sse?interval=100ms", stuck.addr))
        .send()
        .await
        .unwrap();
    resp.chunk().await.unwrap();
    let reader = tokio::spawn(async move { while let Ok(Some(_)) = resp.chunk().await {} });
    let start = Instant::now();
    stuck.terminate();
    let status = stuck.wait_exit(Duration::from_secs(5)).await;
    let took = start.elapsed();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", stuck.logs());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "exited {took:?} after SIGTERM with a 1 s limit"
    );
    assert!(stuck.logs().contains("drain limit passed"), "{}", stuck.logs());
    reader.abort();
}
