//! The real `ssegate` binary in standalone mode under big, broken and
//! hostile configuration: serving never waits for the configuration side,
//! and each problem is logged once per change of its file.

mod common;

use common::process::Ssegate;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One request on a new connection (so the accept loop is exercised too):
/// how long until the whole response arrived, and its status line.
fn probe(base: &str, path: &str) -> (Duration, String) {
    let addr = base.trim_start_matches("http://");
    let started = std::time::Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    (started.elapsed(), text.lines().next().unwrap_or("").to_owned())
}

/// A value from `/metrics`: the first sample line starting with `prefix`.
async fn metric(gw: &Ssegate, prefix: &str) -> u64 {
    let text = gw.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

async fn generation(gw: &Ssegate) -> u64 {
    metric(gw, "ssegate_table_generation ").await
}

/// Waits until the table generation passes `after`.
async fn wait_generation(gw: &Ssegate, after: u64, limit: Duration) -> Duration {
    let started = Instant::now();
    while generation(gw).await <= after {
        assert!(started.elapsed() < limit, "no new table in {limit:?}:\n{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// Writes a file the way editors do: a hidden temporary, then a rename, so
/// the watcher never reads half a file.
fn replace(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn many_routes(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        out.push_str(&format!(
            "---\napiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {{name: r{i}}}\nspec:\n  hostnames: [h{i}.example.com]\n  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]\n"
        ));
    }
    out
}

async fn start(dir: &Path, logs: &Path) -> Ssegate {
    // One main-runtime worker, as in a one-CPU container: before the
    // control runtime, a long apply there stalled accepts and probes.
    std::env::set_var("TOKIO_WORKER_THREADS", "1");
    Ssegate::start(&["standalone", "--dir", dir.to_str().unwrap(), "--workers", "1"], logs).await
}

#[tokio::test]
async fn probes_and_proxying_stay_fast_while_a_big_configuration_applies() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("backend.yaml"), backend_yaml("svc", &[(up.addr, true)])).unwrap();
    std::fs::write(dir.path().join("route.yaml"), route_yaml("r", "", "svc")).unwrap();
    let gw = start(dir.path(), logs.path()).await;
    replace(dir.path(), "many.yaml", &many_routes(30_000));
    let written = Instant::now();
    let (admin, proxy) = (gw.admin.clone(), gw.proxy.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let probes = tokio::task::spawn_blocking(move || {
        let mut worst = (Duration::ZERO, Duration::ZERO);
        let mut count = 0;
        // Bounded: at most 30 s of probing, stopped by the caller earlier.
        while written.elapsed() < Duration::from_secs(30) && !stopped.load(Ordering::Relaxed) {
            let (took, status) = probe(&admin, "/healthz");
            assert!(status.contains("200"), "/healthz: {status:?}");
            worst.0 = worst.0.max(took);
            let (took, status) = probe(&proxy, "/json?tag=p&n=1");
            assert!(status.contains("200"), "proxy: {status:?}");
            worst.1 = worst.1.max(took);
            count += 1;
            std::thread::sleep(Duration::from_millis(25));
        }
        (worst, count)
    });
    // Done when the table serves every Route (an earlier swap may come
    // from the temporary file's own events).
    let deadline = Duration::from_secs(60);
    while metric(&gw, "ssegate_routes{state=\"accepted\"} ").await < 30_001 {
        assert!(
            written.elapsed() < deadline,
            "not applied in {deadline:?}:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let applied = written.elapsed();
    stop.store(true, Ordering::Relaxed);
    let ((health, proxied), count) = probes.await.unwrap();
    eprintln!(
        "apply took {applied:?}; {count} probes; slowest /healthz {health:?}, slowest proxied request {proxied:?}"
    );
    // Blocked accepts would take as long as the apply: far above the bound.
    assert!(
        applied > Duration::from_millis(1500),
        "the apply ({applied:?}) must be long for this test to mean anything"
    );
    assert!(count >= 10, "{count} probes");
    assert!(health < Duration::from_millis(200), "/healthz took {health:?}");
    assert!(
        proxied < Duration::from_millis(200),
        "a proxied request took {proxied:?}"
    );
    assert!(!gw.logs().contains("configuration problem"), "{}", gw.logs());
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[tokio::test]
async fn a_broken_file_is_logged_once_per_change_of_that_file() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("backend.yaml"), backend_yaml("svc", &[(up.addr, true)])).unwrap();
    std::fs::write(dir.path().join("route.yaml"), route_yaml("r", "", "svc")).unwrap();
    std::fs::write(dir.path().join("broken.yaml"), "apiVersion: v1\nkind: [unclosed\n").unwrap();
    // Typos in field names load, with a warning naming each field.
    std::fs::write(
        dir.path().join("typo.yaml"),
        route_yaml("typo", "  proxybuffering: Disabled\n  timeouts: {idel: 5s}\n", "svc"),
    )
    .unwrap();
    let gw = start(dir.path(), logs.path()).await;
    let logged = gw.logs();
    // One syntax error, one line (it was one per document number, 10,001).
    assert_eq!(count(&logged, "broken.yaml: document"), 1, "{logged}");
    for field in ["spec.proxybuffering", "spec.timeouts.idel"] {
        assert_eq!(
            count(
                &logged,
                &format!("typo.yaml: document 1: Route typo: unknown field {field} is ignored")
            ),
            1,
            "{logged}"
        );
    }

    // A change elsewhere: nothing about the unchanged files is logged again.
    let g = generation(&gw).await;
    replace(
        dir.path(),
        "route.yaml",
        &route_yaml("r", "  proxyBuffering: Enabled\n", "svc"),
    );
    wait_generation(&gw, g, Duration::from_secs(10)).await;
    let logged = gw.logs();
    assert_eq!(count(&logged, "broken.yaml: document"), 1, "{logged}");
    assert_eq!(count(&logged, "unknown field spec.proxybuffering"), 1, "{logged}");

    // The broken file changes, still broken: logged once more, once.
    let g = generation(&gw).await;
    replace(dir.path(), "broken.yaml", "apiVersion: v1\nkind: [still unclosed\n");
    wait_generation(&gw, g, Duration::from_secs(10)).await;
    let logged = gw.logs();
    assert_eq!(count(&logged, "broken.yaml: document"), 2, "{logged}");
    assert_eq!(count(&logged, "unknown field spec.proxybuffering"), 1, "{logged}");
}

#[tokio::test]
async fn a_hostile_file_is_refused_in_milliseconds_and_the_rest_keeps_serving() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("backend.yaml"), backend_yaml("svc", &[(up.addr, true)])).unwrap();
    std::fs::write(dir.path().join("route.yaml"), route_yaml("r", "", "svc")).unwrap();
    let gw = start(dir.path(), logs.path()).await;

    let g = generation(&gw).await;
    // 100,000 nested brackets (200 KB) cost the parser 33 s of CPU.
    replace(
        dir.path(),
        "evil.yaml",
        &format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
    );
    let took = wait_generation(&gw, g, Duration::from_secs(10)).await;
    let logged = gw.logs();
    assert!(
        logged.contains("evil.yaml: document 1: nests deeper than 64 levels at line 1 (limit max_depth); not parsed"),
        "{logged}"
    );
    assert!(took < Duration::from_secs(2), "refusing the file took {took:?}");
    // Blocking I/O off the runtime that runs the upstream.
    let proxy = gw.proxy.clone();
    let (_, status) = tokio::task::spawn_blocking(move || probe(&proxy, "/json?tag=after&n=1"))
        .await
        .unwrap();
    assert!(status.contains("200"), "{status}");
}

/// Resident memory of the ssegate process serving `dir`, in KiB.
fn rss_kib(dir: &Path) -> u64 {
    let needle = dir.to_str().unwrap();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(needle) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        if let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        {
            return kib;
        }
    }
    panic!("no ssegate process for {needle}");
}

async fn wait_accepted(gw: &Ssegate, wanted: u64, limit: Duration) {
    let started = Instant::now();
    while metric(gw, "ssegate_routes{state=\"accepted\"} ").await != wanted {
        assert!(started.elapsed() < limit, "never {wanted} Routes:\n{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn memory_returns_when_routes_go_away() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("backend.yaml"), backend_yaml("svc", &[(up.addr, true)])).unwrap();
    std::fs::write(dir.path().join("route.yaml"), route_yaml("r", "", "svc")).unwrap();
    let gw = start(dir.path(), logs.path()).await;
    let idle = rss_kib(dir.path());

    replace(dir.path(), "many.yaml", &many_routes(20_000));
    wait_accepted(&gw, 20_001, Duration::from_secs(60)).await;
    let loaded = rss_kib(dir.path());
    std::fs::remove_file(dir.path().join("many.yaml")).unwrap();
    wait_accepted(&gw, 1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss_kib(dir.path());
    eprintln!("RSS: {idle} KiB idle, {loaded} KiB with 20,000 Routes, {after} KiB after removing them");
    assert!(
        loaded > idle + 50 * 1024,
        "20,000 Routes should take room: {idle} -> {loaded} KiB"
    );
    // glibc kept all of it before the heap was trimmed after large applies.
    assert!(
        after < idle + (loaded - idle) / 4,
        "memory did not return: {idle} -> {loaded} -> {after} KiB"
    );
}
