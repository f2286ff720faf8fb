//! The chart really running, in one cluster's life: `helm install` with
//! default values onto a node of real components (scripts/node.sh:
//! containerd and runc, the CNI bridge, kubelet, kube-proxy, CoreDNS and a
//! load-balancer address stand-in, beside kube-controller-manager and
//! kube-scheduler), the image built from the current source, then what a
//! user does with it:
//!
//! 1. 2 ready replicas, one holding the status Lease (owned by its Pod); the
//!    README's demo (backend pods, Service, Route) streams through each
//!    replica's pod address and through the LoadBalancer address, which
//!    ssegate publishes into an Ingress's status.
//! 2. `kubectl patch` of `proxyBuffering` reaches both replicas within
//!    milliseconds, open streams carry on, and only the Lease holder writes
//!    the status.
//! 3. `kubectl rollout restart` under 200 EventSource-style clients that
//!    reconnect with `Last-Event-ID`: every client gets every id exactly
//!    once, each old pod's endpoint turns unready before its streams are
//!    drained, and every old pod exits 0 within its grace period (as the
//!    kubelet reports the container's end).
//!    Then the backend's pods come and go under streams of Routes with
//!    `sse.resume`, and no client notices: a `rollout restart` of the demo
//!    backend under 200 streams (every stream moves to a new pod, its ids
//!    run on without a gap or a repeat, every old pod drains and exits 0 by
//!    itself), and a scale-out from 1 to 3 pods under 300 streams with
//!    `sse.rebalance` (within 10 % of even soon after the new pods are
//!    ready, and still so 3 s later).
//! 4. Deleting the Lease holder's pod hands status writing to another replica.
//! 5. `helm upgrade`, then `helm uninstall`: nothing is left but the CRDs
//!    (the Gateway's own Service goes with the chart's, its owner), and
//!    neither load-balancer address answers any more.
//!
//! Between 1 and 2, a Gateway gets its own Service, load-balancer address
//! and status address, and streams its HTTPRoute there.
//!
//! Needs root (the node: containerd, the pod bridge, kube-proxy's
//! iptables rules), and the machine's one node (it waits while another
//! control plane's node runs).

mod common;

use common::cluster::{control_plane_with_node, ControlPlane};
use common::node::{self, wait_for, LogFollower, PodExits};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const NS: &str = "sg";
const DEPLOYMENT: &str = "deployment/sg-ssegate";
const LEASE: &str = "lease/sg-ssegate-status";
const CLIENTS: usize = 200;

/// What the test measured, in the order it printed it: written at the end of a
/// passing run to `bench/results/chart-life-<date>.md`, dated and naming the
/// commit, which is where the docs take these figures from.
static MEASURED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// `println!`, and kept for the results file.
macro_rules! measured {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        println!("{line}");
        MEASURED.lock().unwrap().push(line);
    }};
}

fn write_measured() {
    let run = |cmd: &str, args: &[&str]| {
        let out = Command::new(cmd).args(args).current_dir(ROOT).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let date = run("date", &["-u", "+%Y-%m-%d"]);
    let commit = run("git", &["rev-parse", "--short", "HEAD"]);
    let changed = !Command::new("git")
        .args(["diff", "--quiet", "HEAD", "--", "src", "charts", "tests", "scripts"])
        .current_dir(ROOT)
        .status()
        .unwrap()
        .success();
    let mut text = format!(
        "# The chart's life on the node of real components\n\nWritten by tests/chart_life.rs on {date}, commit {commit}{}, on {} cores: what it printed, in order.\n\n",
        if changed { " with local changes" } else { "" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    for line in MEASURED.lock().unwrap().iter() {
        text.push_str(&format!("- {line}\n"));
    }
    std::fs::write(format!("{ROOT}/bench/results/chart-life-{date}.md"), text).unwrap();
}

/// Where scripts/control-plane.sh caches helm.
fn helm_bin() -> PathBuf {
    std::env::var("SSEGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let cache = std::env::var("XDG_CACHE_HOME")
                .unwrap_or_else(|_| format!("{}/.cache", std::env::var("HOME").unwrap()));
            PathBuf::from(cache).join("ssegate/bin")
        })
        .join("helm")
}

fn helm(cp: &ControlPlane, args: &[&str]) {
    let out = Command::new(helm_bin())
        .args(args)
        .current_dir(ROOT)
        .env("KUBECONFIG", &cp.kubeconfig)
        .output()
        .expect("helm is built by scripts/control-plane.sh build");
    assert!(
        out.status.success(),
        "helm {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        node::logs(cp)
    );
}

/// The first event of the demo stream at `addr` (with `host`), retried for
/// up to 20 s while the address or its backends come up: `""` if none
/// came.
async fn first_demo_event(addr: &str, host: Option<&str>) -> String {
    let url = format!("http://{addr}/.sse?count=1&interval=50ms");
    let mut first = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        // Each try within what is left of the 20 s.
        let left = deadline.saturating_duration_since(Instant::now());
        let mut request = common::client().get(&url).timeout(left.min(Duration::from_secs(5)));
        if let Some(host) = host {
            request = request.header("host", host);
        }
        if let Some(resp) = request.send().await.ok().filter(|r| r.status() == 200) {
            let Ok(got) = tokio::time::timeout(left, common::read_stream(resp, 3)).await else {
                break;
            };
            first = got.events.first().map(|e| e.0.clone()).unwrap_or_default();
            if first.contains("event: server\ndata: demo-backend-") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    first
}

/// The release's running, not terminating pods: name → pod IP.
fn replicas(cp: &ControlPlane) -> BTreeMap<String, String> {
    cp.kubectl_ok(&[
        "get",
        "pods",
        "-n",
        NS,
        "-l",
        "app.kubernetes.io/instance=sg",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ])
    .lines()
    .filter_map(|l| {
        let mut parts = l.split(' ');
        let (name, ip, deleting) = (parts.next()?, parts.next()?, parts.next().unwrap_or(""));
        (!ip.is_empty() && deleting.is_empty()).then(|| (name.to_owned(), ip.to_owned()))
    })
    .collect()
}

async fn admin_get(ip: &str, path: &str) -> Option<String> {
    let resp = common::client()
        .get(format!("http://{ip}:9090{path}"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    resp.text().await.ok()
}

/// The sum of a metric's samples (all label sets) on one replica.
async fn metric(ip: &str, name: &str) -> Option<u64> {
    let text = admin_get(ip, "/metrics").await?;
    Some(
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64,
    )
}

async fn status_writes(ip: &str) -> u64 {
    let text = admin_get(ip, "/metrics").await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(r#"ssegate_status_writes_total{result="ok"} "#))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Polls `f` every 5 ms until it returns true; the time it took.
async fn until(limit: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One demo stream: the first `limit` events and when each arrived.
async fn stream(url: &str, limit: usize) -> common::Received {
    let resp = common::client()
        .get(url)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status(), 200, "GET {url}");
    common::read_stream(resp, limit).await
}

/// The `id:` of an SSE event, if it has one.
fn event_id(event: &str) -> Option<u64> {
    event.lines().find_map(|l| l.strip_prefix("id: ")?.trim().parse().ok())
}

/// What one EventSource-style client saw.
#[derive(Debug, Default)]
struct ClientLog {
    ids: Vec<u64>,
    connects: usize,
    refused: usize,
    last_event: Option<Instant>,
}

/// Reads `url` as a browser's EventSource does: on every end of the stream
/// it reconnects (a new connection, after a short pause) with
/// `Last-Event-ID` set to the last id received, until `stop` turns true.
async fn event_source(url: String, mut stop: watch::Receiver<bool>, seed: u64) -> ClientLog {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut log = ClientLog::default();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !*stop.borrow() && Instant::now() < deadline {
        let mut req = client.get(&url);
        if let Some(last) = log.ids.last() {
            req = req.header("last-event-id", last.to_string());
        }
        match req.send().await {
            Ok(mut resp) if resp.status() == 200 => {
                log.connects += 1;
                let mut pending = Vec::<u8>::new();
                loop {
                    let chunk = tokio::select! {
                        c = resp.chunk() => c,
                        _ = stop.wait_for(|s| *s) => return log,
                    };
                    let Ok(Some(chunk)) = chunk else { break };
                    pending.extend_from_slice(&chunk);
                    while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                        let event: Vec<u8> = pending.drain(..end + 2).collect();
                        if let Some(id) = event_id(&String::from_utf8_lossy(&event)) {
                            log.ids.push(id);
                            log.last_event = Some(Instant::now());
                        }
                    }
                }
            }
            _ => log.refused += 1,
        }
        // EventSource's reconnection delay, spread so that 200 clients do
        // not reconnect in one instant.
        let pause = Duration::from_millis(100 + (seed * 37 + log.connects as u64 * 11) % 300);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }
    log
}

/// When each old replica's endpoint first showed unready (or vanished) in
/// its Service's EndpointSlices, by the wall clock, polled every 50 ms.
async fn watch_unready(
    kube: kube::Client,
    old: BTreeMap<String, String>,
    mut stop: watch::Receiver<bool>,
) -> BTreeMap<String, SystemTime> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let slices: kube::Api<EndpointSlice> = kube::Api::namespaced(kube, NS);
    let params = kube::api::ListParams::default().labels("kubernetes.io/service-name=sg-ssegate");
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !*stop.borrow() && Instant::now() < deadline && seen.len() < old.len() {
        let asked = SystemTime::now();
        if let Ok(list) = slices.list(&params).await {
            let ready: BTreeSet<String> = list
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter().flatten())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .flat_map(|e| e.addresses.iter().cloned())
                .collect();
            for (name, ip) in &old {
                if !ready.contains(ip) {
                    seen.entry(name.clone()).or_insert(asked);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stop.changed() => {}
        }
    }
    seen
}

/// From a replica's own log (JSON lines, as the chart sets): when it began
/// draining its plain-HTTP listener, and how many event streams the drain
/// ended.
fn drain_in_log(log: &str) -> (Option<SystemTime>, usize) {
    let stamp = |line: &str| -> Option<SystemTime> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let ts: k8s_openapi::jiff::Timestamp = v["timestamp"].as_str()?.parse().ok()?;
        Some(SystemTime::from(ts))
    };
    let began = log
        .lines()
        .find(|l| l.contains("draining: no new connections") && l.contains("\"tls\":false"))
        .and_then(stamp);
    let ended = log.lines().filter(|l| l.contains("\"outcome\":\"drain\"")).count();
    (began, ended)
}

async fn kube_client(cp: &ControlPlane) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(&cp.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// What one client of a resuming Route saw on its one response.
#[derive(Debug, Default)]
struct ResumedLog {
    status: Option<u16>,
    ids: Vec<u64>,
    /// Every `event: server`'s data, in order: the first pod, then one
    /// per move.
    servers: Vec<String>,
    /// When each of them came.
    servers_at: Vec<Instant>,
    /// The longest time between two events, and when it ended.
    longest_silence: (Duration, Option<Instant>),
    /// Why the response ended before the test stopped reading: a
    /// disconnect (the client would have had to reconnect).
    ended: Option<String>,
}

/// Reads one response from `url` (with `host`) until `stop`, never
/// reconnecting; `current` is the pod that serves it now (the last
/// `event: server`) and how many events it has sent, and `moved` counts every later `event: server` (a
/// move to another pod). Bounded: 10 s for the answer, 300 s in all.
async fn resumed_stream(
    client: reqwest::Client,
    url: String,
    host: &'static str,
    mut stop: watch::Receiver<bool>,
    current: Arc<Mutex<(String, usize)>>,
    moved: Arc<AtomicUsize>,
) -> ResumedLog {
    let mut log = ResumedLog::default();
    let sent = tokio::time::timeout(Duration::from_secs(10), client.get(&url).header("host", host).send()).await;
    let mut resp = match sent {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            log.ended = Some(format!("request failed: {e}"));
            return log;
        }
        Err(_) => {
            log.ended = Some("no answer within 10 s".into());
            return log;
        }
    };
    log.status = Some(resp.status().as_u16());
    if resp.status() != 200 {
        log.ended = Some(format!("status {}", resp.status()));
        return log;
    }
    let deadline = tokio::time::sleep(Duration::from_secs(300));
    tokio::pin!(deadline);
    let mut pending = Vec::<u8>::new();
    let mut last_event = Instant::now();
    loop {
        let chunk = tokio::select! {
            c = resp.chunk() => c,
            _ = stop.wait_for(|s| *s) => return log,
            _ = &mut deadline => return log,
        };
        match chunk {
            Ok(Some(chunk)) => pending.extend_from_slice(&chunk),
            Ok(None) => {
                log.ended = Some("the stream ended".into());
                return log;
            }
            Err(e) => {
                log.ended = Some(format!("the stream failed: {e:?}"));
                return log;
            }
        }
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            let event = String::from_utf8_lossy(&event);
            if let Some(id) = event_id(&event) {
                log.ids.push(id);
            }
            let now = Instant::now();
            if now - last_event > log.longest_silence.0 {
                log.longest_silence = (now - last_event, Some(now));
            }
            last_event = now;
            current.lock().unwrap().1 += 1;
            if event.lines().any(|l| l == "event: server") {
                let server = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap_or("")
                    .to_owned();
                *current.lock().unwrap() = (server.clone(), 1);
                log.servers.push(server);
                log.servers_at.push(Instant::now());
                if log.servers.len() > 1 {
                    moved.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }
}

/// How many of the clients each pod serves now (by their last
/// `event: server`); clients that have seen none are left out.
fn per_pod(current: &[Arc<Mutex<(String, usize)>>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for c in current {
        let server = c.lock().unwrap().0.clone();
        if !server.is_empty() {
            *counts.entry(server).or_insert(0) += 1;
        }
    }
    counts
}

/// The sum over `ips` of a metric's samples whose line holds every one of
/// `labels` (such as `reason="rebalance"`).
async fn metric_with<'a>(ips: impl IntoIterator<Item = &'a String>, name: &str, labels: &[&str]) -> f64 {
    let mut sum = 0.0;
    for ip in ips {
        let text = admin_get(ip, "/metrics").await.unwrap_or_default();
        sum += text
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| labels.iter().all(|label| l.contains(label)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    sum
}

/// Pods of `namespace` labelled `selector`, not being deleted: name → uid.
fn pods_of(cp: &ControlPlane, namespace: &str, selector: &str) -> BTreeMap<String, String> {
    cp.kubectl_ok(&[
        "get",
        "pods",
        "-n",
        namespace,
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ])
    .lines()
    .filter_map(|l| {
        let mut parts = l.split(' ');
        let (name, uid, deleting) = (parts.next()?, parts.next()?, parts.next().unwrap_or(""));
        deleting.is_empty().then(|| (name.to_owned(), uid.to_owned()))
    })
    .collect()
}

/// A `Debug`-printed duration (`870.5ms`, `9.87s`) from a log line's
/// `took=` field.
fn took_in(line: &str) -> Option<Duration> {
    let v = line.split("took=").nth(1)?.split_whitespace().next()?;
    let (n, unit) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("µs") {
        (n, 1e-6)
    } else if let Some(n) = v.strip_suffix("ns") {
        (n, 1e-9)
    } else {
        (v.strip_suffix('s')?, 1.0)
    };
    Some(Duration::from_secs_f64(n.parse::<f64>().ok()? * unit))
}

/// When `want` endpoints of Service `service` in `namespace` were first
/// all ready, polled every 50 ms until `stop` (or 120 s).
async fn when_ready(
    kube: kube::Client,
    namespace: &'static str,
    service: &'static str,
    want: usize,
    mut stop: watch::Receiver<bool>,
) -> Option<Instant> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let slices: kube::Api<EndpointSlice> = kube::Api::namespaced(kube, namespace);
    let params = kube::api::ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !*stop.borrow() && Instant::now() < deadline {
        let asked = Instant::now();
        if let Ok(list) = slices.list(&params).await {
            let ready = list
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter().flatten())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .count();
            if ready >= want {
                return Some(asked);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stop.changed() => {}
        }
    }
    None
}

/// The Route the backend rollout streams through: `demo`'s Service, with
/// resume on, for the host `resume.test`.
const RESUME_ROUTE: &str = "apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {name: demo-resume}\nspec:\n  hostnames: [resume.test]\n  proxyBuffering: Disabled\n  sse: {resume: {enabled: true}}\n  rules: [{backendRefs: [{name: demo, port: 80}]}]\n";

/// A one-replica demo backend, its Service and a Route with resume and
/// rebalance (100 moves a second) for the host `rebalance.test`.
const REBALANCE_APP: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: demo-scale}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: demo-scale}}\n  template:\n    metadata: {labels: {app: demo-scale}}\n    spec:\n      terminationGracePeriodSeconds: 30\n      securityContext: {runAsNonRoot: true, runAsUser: 65532}\n      containers:\n        - name: demo\n          image: ssegate:0.1.0\n          args: [demo-backend, --listen=0.0.0.0:8081]\n          env: [{name: HOSTNAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]\n          ports: [{name: http, containerPort: 8081}]\n\
---\napiVersion: v1\nkind: Service\nmetadata: {name: demo-scale}\nspec:\n  selector: {app: demo-scale}\n  ports: [{name: http, port: 80, targetPort: http}]\n\
---\napiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {name: demo-scale}\nspec:\n  hostnames: [rebalance.test]\n  proxyBuffering: Disabled\n  sse:\n    resume: {enabled: true}\n    rebalance: {enabled: true, movesPerSecond: 100}\n  rules: [{backendRefs: [{name: demo-scale, port: 80}]}]\n";

/// Waits until every ssegate replica at `ips` serves the Route `name`.
async fn route_on_every_replica(ips: &[String], name: &str) {
    for ip in ips {
        until(Duration::from_secs(30), &format!("{name} on {ip}"), async || {
            admin_get(ip, "/debug/routes").await.is_some_and(|t| t.contains(name))
        })
        .await;
    }
}

/// `n` clients of `url` through host `host`, each on one response; the
/// pod each is on now, the moves they have seen, and the means to stop
/// them.
#[allow(clippy::type_complexity)]
fn open_clients(
    n: usize,
    url: &str,
    host: &'static str,
) -> (
    Vec<tokio::task::JoinHandle<ResumedLog>>,
    Vec<Arc<Mutex<(String, usize)>>>,
    Arc<AtomicUsize>,
    watch::Sender<bool>,
) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let current: Vec<Arc<Mutex<(String, usize)>>> = (0..n).map(|_| Arc::default()).collect();
    let moved = Arc::new(AtomicUsize::new(0));
    let tasks = current
        .iter()
        .map(|c| {
            tokio::spawn(resumed_stream(
                client.clone(),
                url.to_owned(),
                host,
                stop_rx.clone(),
                c.clone(),
                moved.clone(),
            ))
        })
        .collect();
    (tasks, current, moved, stop_tx)
}

/// Each client's stream was one response from start to stop (no
/// disconnect, so no reconnect), and its ids run 1, 2, 3, … with none
/// missing or repeated across its moves; the moves they saw in all.
fn check_one_response_each(logs: &[ResumedLog], min_events: usize) -> usize {
    let disconnects: Vec<(usize, &str)> = logs
        .iter()
        .enumerate()
        .filter_map(|(i, l)| Some((i, l.ended.as_deref()?)))
        .collect();
    assert!(
        disconnects.is_empty(),
        "{} of {} clients were disconnected: {:?}",
        disconnects.len(),
        logs.len(),
        &disconnects[..disconnects.len().min(10)]
    );
    for (i, log) in logs.iter().enumerate() {
        let expected: Vec<u64> = (1..=log.ids.len() as u64).collect();
        assert!(
            log.ids == expected,
            "client {i}: ids not each exactly once and in order (servers {:?}): {:?}",
            log.servers,
            log.ids
        );
        assert!(
            log.ids.len() >= min_events,
            "client {i}: {} events, expected {min_events} at least",
            log.ids.len()
        );
    }
    logs.iter().map(|l| l.servers.len().saturating_sub(1)).sum()
}

/// Each client's longest time between two events: the median, the 99th
/// percentile and the longest, for the figures.
fn silences(logs: &[ResumedLog]) -> String {
    let mut s: Vec<Duration> = logs.iter().map(|l| l.longest_silence.0).collect();
    s.sort();
    if s.is_empty() {
        return "none".into();
    }
    let at = |q: usize| s[(s.len() - 1) * q / 100];
    format!("median {:?}, p99 {:?}, max {:?}", at(50), at(99), at(100))
}

/// 3b. A rollout of the backend under 200 streams of a Route with resume:
/// every stream moves to a new pod without its client noticing, and every
/// old pod drains and exits 0 by itself.
async fn backend_rollout_moves_every_stream_without_a_reconnect(cp: &ControlPlane, exits: &PodExits, lb: &str) {
    let ssegates: Vec<String> = replicas(cp).into_values().collect();
    cp.apply("default", RESUME_ROUTE);
    route_on_every_replica(&ssegates, "demo-resume").await;
    let old = pods_of(cp, "default", "app=demo-backend");
    assert_eq!(old.len(), 2, "{old:?}");
    let route = "route=\"default/demo-resume\"";
    let resumed = ["reason=\"endpoint_leaving\"", "outcome=\"resumed\"", route];
    let resumed_before = metric_with(&ssegates, "ssegate_stream_resumes_total", &resumed).await;
    let all_before = metric_with(&ssegates, "ssegate_stream_resumes_total", &[route]).await;
    let route_only = [route];
    let gaps = |m: &'static str| metric_with(&ssegates, m, &route_only);
    let (gap_sum_before, gap_count_before) = (
        gaps("ssegate_stream_resume_gap_seconds_sum").await,
        gaps("ssegate_stream_resume_gap_seconds_count").await,
    );

    let (tasks, current, _, stop) = open_clients(CLIENTS, &format!("http://{lb}/.sse?interval=100ms"), "resume.test");
    let opened = until(Duration::from_secs(60), "200 resumable streams open", async || {
        per_pod(&current).values().sum::<usize>() == CLIENTS
    })
    .await;
    let before = per_pod(&current);
    measured!("{CLIENTS} resumable streams open after {opened:?}: {before:?}");
    assert!(before.keys().all(|p| old.contains_key(p)), "{before:?} {old:?}");

    // Each old pod's whole log, kept past the pod's end.
    let mut old_logs: BTreeMap<String, LogFollower> = old
        .keys()
        .map(|name| (name.clone(), LogFollower::start(cp, "default", name, "demo")))
        .collect();
    let restarted = Instant::now();
    cp.kubectl_ok(&["rollout", "restart", "-n", "default", "deployment/demo-backend"]);
    rollout_status(cp, "default", "deployment/demo-backend", "120s").await;
    let rolled_out = restarted.elapsed();
    until(Duration::from_secs(90), "old backend pods gone", async || {
        let names = cp.get("default", "pods", "{.items[*].metadata.name}");
        old.keys().all(|o| !names.split(' ').any(|n| n == o))
    })
    .await;
    let drained = restarted.elapsed();
    // Every client reads on from its new pod: 10 events (1 s) at least.
    let new = pods_of(cp, "default", "app=demo-backend");
    until(
        Duration::from_secs(10),
        "every client 10 events on from a new pod",
        async || {
            current.iter().all(|c| {
                let c = c.lock().unwrap();
                new.contains_key(&c.0) && c.1 >= 10
            })
        },
    )
    .await;
    stop.send(true).unwrap();
    let after = per_pod(&current);
    let mut logs = Vec::new();
    for task in tasks {
        logs.push(task.await.unwrap());
    }
    measured!(
        "backend rollout: new pods ready after {rolled_out:?}, old pods gone after {drained:?}; streams per pod before {before:?}, after {after:?}"
    );
    // At 100 ms an event, for as long as the rollout took.
    let moves = check_one_response_each(&logs, (drained.as_millis() / 100) as usize);
    for (i, log) in logs.iter().enumerate() {
        assert!(
            log.servers.len() >= 2 && new.contains_key(log.servers.last().unwrap()),
            "client {i} did not end on a new pod: {:?} (new: {new:?})",
            log.servers
        );
    }
    let resumed = (metric_with(&ssegates, "ssegate_stream_resumes_total", &resumed).await - resumed_before) as u64;
    let all = (metric_with(&ssegates, "ssegate_stream_resumes_total", &[route]).await - all_before) as u64;
    let gap_count = gaps("ssegate_stream_resume_gap_seconds_count").await - gap_count_before;
    let gap_sum = gaps("ssegate_stream_resume_gap_seconds_sum").await - gap_sum_before;
    measured!(
        "{CLIENTS} clients, 0 disconnects, {moves} moves seen by the clients; ssegate_stream_resumes_total{{reason=\"endpoint_leaving\",outcome=\"resumed\"}} +{resumed}, all outcomes +{all}; resume gaps: {gap_count}, {:.3} s on average; each client's longest silence: {}",
        gap_sum / gap_count.max(1.0),
        silences(&logs)
    );
    assert_eq!(all, resumed, "resumes that did not resume, or for another reason");
    assert_eq!(resumed as usize, moves, "resumes counted against moves the clients saw");
    assert!(
        (CLIENTS..=CLIENTS * 3 / 2).contains(&moves),
        "{moves} moves for {CLIENTS} streams on 2 old pods"
    );

    // Each old pod drained (its streams moved away) and exited 0 before
    // its grace period ended.
    for name in old.keys() {
        let log = old_logs.get_mut(name).unwrap().wait_end(Duration::from_secs(30)).await;
        let line = log
            .lines()
            .find(|l| l.contains("demo backend drained"))
            .unwrap_or_else(|| panic!("{name} did not drain:\n{log}"));
        let took = took_in(line).unwrap_or_else(|| panic!("{name}: {line}"));
        measured!("{name}: {line}");
        assert!(
            took < Duration::from_secs(30),
            "{name} drained in {took:?}, past its grace period"
        );
        let ends = exits.assert_exited_0(name, Duration::from_secs(10)).await;
        measured!("{name}: {ends:?}");
    }
    cp.kubectl_ok(&["delete", "route", "-n", "default", "demo-resume"]);
}

/// 3c. 300 streams on one backend pod, then `kubectl scale --replicas=3`
/// with rebalance on at 100 moves a second: every pod serves within 10 %
/// of a third soon after the new pods are ready, and stays so, without a
/// disconnect.
async fn scale_out_spreads_streams_evenly_without_a_reconnect(cp: &ControlPlane, lb: &str) {
    const STREAMS: usize = 300;
    const NS: &str = "moves";
    let kube = kube_client(cp).await;
    let ssegates: Vec<String> = replicas(cp).into_values().collect();
    cp.namespace(NS);
    cp.apply(NS, REBALANCE_APP);
    wait_for(Duration::from_secs(60), "demo-scale ready", cp, || {
        (cp.get(NS, "deployment/demo-scale", "{.status.readyReplicas}") == "1").then_some(())
    });
    route_on_every_replica(&ssegates, "demo-scale").await;
    let first = first_demo_event(lb, Some("rebalance.test")).await;
    assert!(first.contains("data: demo-scale-"), "{first:?}\n{}", node::logs(cp));
    let route = "route=\"moves/demo-scale\"";
    let moved = ["reason=\"rebalance\"", "outcome=\"resumed\"", route];
    let moved_before = metric_with(&ssegates, "ssegate_stream_resumes_total", &moved).await;
    let all_before = metric_with(&ssegates, "ssegate_stream_resumes_total", &[route]).await;

    let (tasks, current, moved_count, stop) =
        open_clients(STREAMS, &format!("http://{lb}/.sse?interval=100ms"), "rebalance.test");
    let opened = until(Duration::from_secs(60), "300 streams open", async || {
        per_pod(&current).values().sum::<usize>() == STREAMS
    })
    .await;
    let before = per_pod(&current);
    measured!("{STREAMS} streams on one pod after {opened:?}: {before:?}");
    assert_eq!(before.len(), 1, "{before:?}");

    let (ready_tx, ready_rx) = watch::channel(false);
    let three_ready = tokio::spawn(when_ready(kube, NS, "demo-scale", 3, ready_rx));
    let scaled = Instant::now();
    cp.kubectl_ok(&["scale", "-n", NS, "deployment/demo-scale", "--replicas=3"]);
    // Even: 3 pods, each within 10 % of 100.
    let even = |counts: &BTreeMap<String, usize>| {
        counts.len() == 3
            && counts
                .values()
                .all(|n| n * 10 >= STREAMS / 3 * 9 && n * 10 <= STREAMS / 3 * 11)
    };
    // Sampled every 20 ms until even, for 60 s at most.
    let mut trace = Vec::new();
    let mut evened = None;
    while scaled.elapsed() < Duration::from_secs(60) {
        let counts = per_pod(&current);
        trace.push((scaled.elapsed(), counts.clone()));
        if even(&counts) {
            evened = Some(scaled.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = ready_tx.send(true);
    let ready_after = three_ready.await.unwrap().map(|at| at - scaled);
    // Then it stays even over 3 s: sampled every 100 ms, with the moves
    // the clients see counted.
    let moves_at_even = moved_count.load(Ordering::SeqCst);
    let mut uneven = Vec::new();
    let hold = Instant::now();
    while evened.is_some() && hold.elapsed() < Duration::from_secs(3) {
        let counts = per_pod(&current);
        if !even(&counts) {
            uneven.push((hold.elapsed(), counts));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let moves_in_hold = moved_count.load(Ordering::SeqCst) - moves_at_even;
    stop.send(true).unwrap();
    let end_counts = per_pod(&current);
    let mut logs = Vec::new();
    for task in tasks {
        logs.push(task.await.unwrap());
    }

    // The figures first, then the checks.
    let mut moved_at: Vec<Duration> = logs
        .iter()
        .flat_map(|l| l.servers_at.iter().skip(1))
        .map(|at| *at - scaled)
        .collect();
    moved_at.sort();
    let mut per_100ms = BTreeMap::new();
    for at in &moved_at {
        *per_100ms.entry(at.as_millis() / 100 * 100).or_insert(0) += 1;
    }
    let route_only = [route];
    let gaps = metric_with(&ssegates, "ssegate_stream_resume_gap_seconds_sum", &route_only).await;
    let errors = metric_with(&ssegates, "ssegate_upstream_errors_total", &route_only).await;
    let rebalanced = (metric_with(&ssegates, "ssegate_stream_resumes_total", &moved).await - moved_before) as u64;
    let all = (metric_with(&ssegates, "ssegate_stream_resumes_total", &[route]).await - all_before) as u64;
    let client_moves: usize = logs.iter().map(|l| l.servers.len().saturating_sub(1)).sum();
    let disconnects = logs.iter().filter(|l| l.ended.is_some()).count();
    // The rule's rate is per ssegate replica; as the brief's bound, the
    // moves at 100 a second in all.
    let window = Duration::from_secs_f64((STREAMS * 2 / 3) as f64 / 100.0);
    measured!(
        "scale-out 1 -> 3 under {STREAMS} streams: 3 endpoints ready {ready_after:?} after the scale, even {evened:?} after it: {:?}; 3 s later {end_counts:?} ({moves_in_hold} moves in those 3 s, uneven samples {uneven:?}); {client_moves} moves seen by clients, from {:?} to {:?} after the scale (per 100 ms: {per_100ms:?}); ssegate_stream_resumes_total{{reason=\"rebalance\",outcome=\"resumed\"}} +{rebalanced}, all outcomes +{all}; upstream errors {errors}, resume gaps {:.3} s on average; each client's longest silence: {}; {disconnects} disconnects",
        trace.last().map(|t| &t.1),
        moved_at.first(),
        moved_at.last(),
        gaps / (rebalanced.max(1) as f64),
        silences(&logs),
    );
    for (at, counts) in trace.iter().step_by(10) {
        measured!("  {at:?}: {counts:?}");
    }
    let moves = check_one_response_each(&logs, 10);
    let evened = evened.unwrap_or_else(|| panic!("not even over 3 pods within 60 s: {:?}", trace.last()));
    assert!(uneven.is_empty(), "uneven again after even: {uneven:?}");
    assert_eq!(all, rebalanced, "resumes that did not resume, or for another reason");
    assert_eq!(
        rebalanced as usize, moves,
        "resumes counted against moves the clients saw"
    );
    let ready_after = ready_after.expect("3 ready endpoints");
    assert!(
        evened.saturating_sub(ready_after) <= window + Duration::from_secs(3),
        "even {evened:?} after the scale, {ready_after:?} after 3 ready endpoints: over {window:?} and a 3 s margin"
    );
    cp.kubectl_ok(&["delete", "namespace", NS, "--wait=false"]);
}

/// An address of the node's load-balancer stand-in (scripts/node/lb.py).
fn load_balancer_address(ip: &str) -> bool {
    ip.strip_prefix("10.244.0.")
        .and_then(|last| last.parse::<u8>().ok())
        .is_some_and(|last| last >= 200)
}

/// Nothing accepts a connection at `ip`:80 over `window`: each try
/// (every 200 ms, 500 ms each) is refused, unreachable or unanswered.
async fn not_answering(ip: &str, window: Duration) {
    let start = Instant::now();
    while start.elapsed() < window {
        let connect = tokio::net::TcpStream::connect((ip, 80));
        let got = tokio::time::timeout(Duration::from_millis(500), connect).await;
        assert!(
            !matches!(got, Ok(Ok(_))),
            "{ip}:80 still accepts connections {:?} after its Service went",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `kubectl rollout status` of `deployment` (off the test's runtime, which
/// keeps serving the clients meanwhile), failing with the node's logs unless
/// the rollout completes within `timeout`.
async fn rollout_status(cp: &ControlPlane, namespace: &str, deployment: &str, timeout: &str) {
    let kubeconfig = cp.kubeconfig.clone();
    let args = ["rollout", "status", "-n", namespace, deployment].map(str::to_owned);
    let timeout = format!("--timeout={timeout}");
    let status = tokio::task::spawn_blocking(move || {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .arg(timeout)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        status.status.success(),
        "rollout of {namespace}/{deployment}: {}\n{}",
        String::from_utf8_lossy(&status.stderr),
        node::logs(cp)
    );
}

fn lease_holder(cp: &ControlPlane) -> String {
    cp.get(NS, LEASE, "{.spec.holderIdentity}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chart_installed_with_helm_streams_rolls_hands_over_and_uninstalls_cleanly() {
    let test_started = Instant::now();
    let cp = control_plane_with_node();
    measured!("control plane and node up after {:?}", test_started.elapsed());
    node::import_ssegate_image(cp);
    let exits = PodExits::start(kube_client(cp).await).await;

    // 1. Install with default values; the demo through every address.
    helm(
        cp,
        &[
            "install",
            "sg",
            "charts/ssegate",
            "-n",
            NS,
            "--create-namespace",
            "--wait",
            "--timeout",
            "120s",
        ],
    );
    wait_for(Duration::from_secs(60), "2 ready replicas", cp, || {
        (cp.get(NS, DEPLOYMENT, "{.status.readyReplicas}") == "2").then_some(())
    });
    let pods = replicas(cp);
    assert_eq!(pods.len(), 2, "{pods:?}");
    let holder = wait_for(Duration::from_secs(60), "a Lease holder", cp, || {
        let h = lease_holder(cp);
        pods.contains_key(&h).then_some(h)
    });
    // The holder's Pod owns the Lease, so it goes with the last replica.
    assert_eq!(
        cp.get(
            NS,
            LEASE,
            "{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}"
        ),
        format!("Pod/{holder}")
    );
    let lb = wait_for(Duration::from_secs(60), "a LoadBalancer address", cp, || {
        let ip = cp.get(NS, "service/sg-ssegate", "{.status.loadBalancer.ingress[0].ip}");
        (!ip.is_empty()).then_some(ip)
    });
    assert!(load_balancer_address(&lb), "{lb}");

    cp.kubectl_ok(&["apply", "-f", &format!("{ROOT}/manifests/examples/demo.yaml")]);
    cp.apply(
        "default",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: demo-ingress}\nspec:\n  ingressClassName: ssegate\n  rules:\n    - host: ingress.test\n      http:\n        paths:\n          - {path: /, pathType: Prefix, backend: {service: {name: demo, port: {number: 80}}}}\n",
    );
    wait_for(Duration::from_secs(60), "demo backend ready", cp, || {
        (cp.get("default", "deployment/demo-backend", "{.status.readyReplicas}") == "2").then_some(())
    });
    let mut addresses: Vec<String> = pods.values().map(|ip| format!("{ip}:8080")).collect();
    addresses.push(format!("{lb}:80"));
    for addr in &addresses {
        let first = first_demo_event(addr, None).await;
        assert!(
            first.contains("event: server\ndata: demo-backend-"),
            "{addr} did not stream the demo: {first:?}\n{}",
            node::logs(cp)
        );
    }
    // The address ssegate publishes is the load balancer's, and it serves.
    wait_for(Duration::from_secs(30), "the Ingress's published address", cp, || {
        (cp.get(
            "default",
            "ingress/demo-ingress",
            "{.status.loadBalancer.ingress[0].ip}",
        ) == lb)
            .then_some(())
    });
    let resp = common::client()
        .get(format!("http://{lb}/.sse?count=1&interval=50ms"))
        .header("host", "ingress.test")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        cp.get(
            "default",
            "route/demo",
            "{.status.conditions[?(@.type==\"Accepted\")].status}"
        ),
        "True"
    );

    // A Gateway gets an address of its own: its Service (written by the
    // Lease holder, owned by the chart's Service), a load-balancer address
    // of its own, published in its status, streaming its HTTPRoute.
    cp.apply(
        "default",
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: ssegate}}\nspec: {{controllerName: {}}}\n\
             ---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: demo-gw}}\nspec:\n  gatewayClassName: ssegate\n  listeners: [{{name: http, port: 80, protocol: HTTP}}]\n\
             ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: demo-gw}}\nspec:\n  parentRefs: [{{name: demo-gw}}]\n  hostnames: [gateway.test]\n  rules: [{{backendRefs: [{{name: demo, port: 80}}]}}]\n",
            ssegate::translate::gateway::CONTROLLER
        ),
    );
    let gateway_ip = wait_for(Duration::from_secs(60), "the Gateway's own address", cp, || {
        let status = cp.get(
            "default",
            "gateway/demo-gw",
            "{.status.conditions[?(@.type==\"Programmed\")].status} {.status.addresses[0].value}",
        );
        let ip = status.strip_prefix("True ")?.to_owned();
        (!ip.is_empty()).then_some(ip)
    });
    assert!(
        load_balancer_address(&gateway_ip) && gateway_ip != lb,
        "{gateway_ip} (chart's: {lb})"
    );
    assert_eq!(
        cp.get(
            NS,
            "service/sg-ssegate-default-demo-gw",
            "{.status.loadBalancer.ingress[0].ip} {.metadata.ownerReferences[0].name} {.spec.ports[0].port}->{.spec.ports[0].targetPort}"
        ),
        format!("{gateway_ip} sg-ssegate 80->10000")
    );
    let streamed = first_demo_event(&gateway_ip, Some("gateway.test")).await;
    assert!(
        streamed.contains("data: demo-backend-"),
        "{streamed:?}\n{}",
        node::logs(cp)
    );
    // Through the Gateway's address only its routes answer: not the Ingress's.
    let other = common::client()
        .get(format!("http://{gateway_ip}/.sse?count=0"))
        .header("host", "ingress.test")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);

    // 2. A live patch on both replicas, with streams open on each.
    let writes_before: BTreeMap<String, u64> = {
        let mut m = BTreeMap::new();
        for (name, ip) in &pods {
            m.insert(name.clone(), status_writes(ip).await);
        }
        m
    };
    let open: Vec<_> = pods
        .values()
        .map(|ip| {
            let url = format!("http://{ip}:8080/.sse?interval=100ms");
            tokio::spawn(async move { stream(&url, 32).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let generation: u64 = cp
        .get("default", "route/demo", "{.metadata.generation}")
        .parse()
        .unwrap();
    let patched = Instant::now();
    cp.set_buffering("default", "demo", "Enabled");
    let patch_returned = patched.elapsed();
    let mut applied = BTreeMap::new();
    for (name, ip) in &pods {
        until(Duration::from_secs(10), "Enabled on a replica", async || {
            // Pretty JSON: compared without its whitespace.
            admin_get(ip, "/debug/routes").await.is_some_and(|t| {
                let t: String = t.split_whitespace().collect();
                t.contains("\"buffering\":\"Enabled\"") && !t.contains("\"buffering\":\"Disabled\"")
            })
        })
        .await;
        applied.insert(name.clone(), patched.elapsed());
    }
    measured!("kubectl patch returned after {patch_returned:?}; both replicas serving it after {applied:?}");
    // New requests on each replica are now buffered: a short stream
    // arrives whole, at its end, not event by event.
    for ip in pods.values() {
        let start = tokio::time::Instant::now();
        let got = stream(&format!("http://{ip}:8080/.sse?count=3&interval=300ms"), 100).await;
        assert_eq!(got.events.len(), 5, "{:?}", got.events);
        let first = got.events[0].1 - start;
        let spread = got.events[4].1 - got.events[0].1;
        assert!(
            first >= Duration::from_millis(800) && spread < Duration::from_millis(100),
            "replica {ip}: Enabled should deliver the stream at its end; first event after {first:?}, spread {spread:?}"
        );
    }
    // The streams opened before the patch carried on, event by event.
    for task in open {
        let got = task.await.unwrap();
        assert_eq!(
            got.events.len(),
            32,
            "an open stream was cut: {:?} {:?}",
            got.events,
            got.error
        );
        let ids: Vec<u64> = got.events.iter().filter_map(|(e, _)| event_id(e)).collect();
        assert_eq!(ids, (1..=32).collect::<Vec<u64>>());
        let late = got.events.iter().filter(|(_, at)| at.into_std() > patched).count();
        assert!(late >= 10, "events after the patch: {late}");
    }
    // Status: written for the new generation, by the Lease holder only.
    wait_for(Duration::from_secs(30), "observedGeneration", cp, || {
        let seen = cp.get(
            "default",
            "route/demo",
            "{.status.conditions[?(@.type==\"Accepted\")].observedGeneration}",
        );
        (seen == (generation + 1).to_string()).then_some(())
    });
    // The holder's write counter shows the one write (up to 10 s for the
    // scrape to catch up), then every replica's holds still for 3 s.
    let counted = until(Duration::from_secs(10), "the holder's write counted", async || {
        status_writes(&pods[&holder]).await > writes_before[&holder]
    })
    .await;
    measured!("the holder's status write was counted {counted:?} after the status showed");
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(3) {
        for (name, ip) in &pods {
            let delta = status_writes(ip).await - writes_before[name];
            if *name == holder {
                assert_eq!(delta, 1, "the holder {name} wrote the Route's status {delta} times");
            } else {
                assert_eq!(delta, 0, "{name}, not the holder, wrote status");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cp.set_buffering("default", "demo", "Disabled");

    // 3. Rollout restart under 200 reconnecting clients.
    let kube = kube_client(cp).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let clients: Vec<_> = (0..CLIENTS as u64)
        .map(|seed| {
            let url = format!("http://{lb}/.sse?interval=200ms");
            tokio::spawn(event_source(url, stop_rx.clone(), seed))
        })
        .collect();
    let all_open = until(Duration::from_secs(60), "200 streams open", async || {
        let mut n = 0;
        for ip in pods.values() {
            n += metric(ip, "ssegate_open_streams").await.unwrap_or(0);
        }
        n >= CLIENTS as u64
    })
    .await;
    measured!("{CLIENTS} streams open after {all_open:?}");
    // Each old replica's whole log (JSON lines), kept past the pod's end.
    let mut old_logs: BTreeMap<String, LogFollower> = pods
        .keys()
        .map(|name| (name.clone(), LogFollower::start(cp, NS, name, "ssegate")))
        .collect();
    let (drain_stop_tx, drain_stop_rx) = watch::channel(false);
    let unready = tokio::spawn(watch_unready(kube.clone(), pods.clone(), drain_stop_rx));
    let restarted = Instant::now();
    cp.kubectl_ok(&["rollout", "restart", "-n", NS, DEPLOYMENT]);
    rollout_status(cp, NS, DEPLOYMENT, "240s").await;
    // The old pods are gone (they drained and exited).
    until(Duration::from_secs(120), "old pods gone", async || {
        let names = cp.get(NS, "pods", "{.items[*].metadata.name}");
        pods.keys().all(|old| !names.split(' ').any(|n| n == old))
    })
    .await;
    let rolled = restarted.elapsed();
    // Every client reads on from the new pods for a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_tx.send(true).unwrap();
    let _ = drain_stop_tx.send(true);
    let after_rollout = Instant::now() - Duration::from_secs(2);
    let mut reconnects = 0;
    for (i, client) in clients.into_iter().enumerate() {
        let log = client.await.unwrap();
        let expected: Vec<u64> = (1..=log.ids.len() as u64).collect();
        assert!(
            log.ids == expected,
            "client {i}: ids not each exactly once (connects {}, refused {}): {:?}",
            log.connects,
            log.refused,
            log.ids
        );
        assert!(
            log.connects >= 2,
            "client {i} never reconnected: both its replicas were replaced"
        );
        assert!(
            log.last_event.is_some_and(|t| t > after_rollout),
            "client {i} stopped receiving before the end"
        );
        reconnects += log.connects - 1;
    }
    let unready = unready.await.unwrap();
    measured!("rollout of 2 replicas under {CLIENTS} clients took {rolled:?}; {reconnects} reconnections");
    for (name, follower) in &mut old_logs {
        let log = follower.wait_end(Duration::from_secs(30)).await;
        let (began, drained) = drain_in_log(&log);
        let began = began.unwrap_or_else(|| panic!("{name} never drained:\n{log}"));
        let unready = *unready
            .get(name)
            .unwrap_or_else(|| panic!("{name}'s endpoint never showed unready"));
        let lead = began
            .duration_since(unready)
            .unwrap_or_else(|e| panic!("{name}: drained {:?} before its endpoint turned unready", e.duration()));
        measured!("{name}: endpoint unready {lead:?} before the drain, which ended {drained} streams");
        assert!(drained > 0, "{name} drained no stream");
        assert!(
            !log.contains("drain deadline passed"),
            "{name}: streams were still open at the drain deadline (cut, not drained)"
        );
    }
    // Each old pod's ssegate exited 0 on SIGTERM, before any SIGKILL
    // (which would end it with 137), as the kubelet reports.
    for name in pods.keys() {
        let ends = exits.assert_exited_0(name, Duration::from_secs(10)).await;
        measured!("{name}: {ends:?}");
    }

    // 3b and 3c: the backend's pods come and go under streams of Routes
    // with resume: the streams move, their clients never notice.
    backend_rollout_moves_every_stream_without_a_reconnect(cp, &exits, &lb).await;
    scale_out_spreads_streams_evenly_without_a_reconnect(cp, &lb).await;

    // 4. Deleting the Lease holder's pod hands status writing on.
    let pods = replicas(cp);
    assert_eq!(pods.len(), 2, "{pods:?}");
    let holder = wait_for(Duration::from_secs(60), "a Lease holder", cp, || {
        let h = lease_holder(cp);
        pods.contains_key(&h).then_some(h)
    });
    let other = pods.keys().find(|n| **n != holder).unwrap().clone();
    let writes_before = status_writes(&pods[&other]).await;
    cp.kubectl_ok(&["delete", "pod", "-n", NS, &holder, "--wait=false"]);
    let handed = until(Duration::from_secs(30), "a new Lease holder", async || {
        let h = lease_holder(cp);
        !h.is_empty() && h != holder
    })
    .await;
    let new_holder = lease_holder(cp);
    measured!("Lease moved from {holder} to {new_holder} {handed:?} after the delete");
    assert_eq!(
        cp.get(NS, LEASE, "{.metadata.ownerReferences[0].name}"),
        new_holder,
        "the new holder owns the Lease"
    );
    let generation: u64 = cp
        .get("default", "route/demo", "{.metadata.generation}")
        .parse()
        .unwrap();
    cp.set_buffering("default", "demo", "Auto");
    wait_for(Duration::from_secs(30), "status written by the new holder", cp, || {
        let seen = cp.get(
            "default",
            "route/demo",
            "{.status.conditions[?(@.type==\"Accepted\")].observedGeneration}",
        );
        (seen == (generation + 1).to_string()).then_some(())
    });
    // The new holder is the other replica or the deleted pod's replacement
    // (a new process, its counter from 0): either way it wrote.
    let new_ip = replicas(cp)
        .get(&new_holder)
        .cloned()
        .unwrap_or_else(|| panic!("the new holder {new_holder} is not a running replica"));
    let before = if new_holder == other { writes_before } else { 0 };
    until(Duration::from_secs(10), "the new holder's write counted", async || {
        status_writes(&new_ip).await > before
    })
    .await;

    // 5. helm upgrade, then uninstall: only the CRDs stay.
    helm(
        cp,
        &[
            "upgrade",
            "sg",
            "charts/ssegate",
            "-n",
            NS,
            "--reuse-values",
            "--set",
            "controller.drainDelay=2s",
            "--wait",
            "--timeout",
            "180s",
        ],
    );
    wait_for(
        Duration::from_secs(120),
        "2 ready replicas after the upgrade",
        cp,
        || (cp.get(NS, DEPLOYMENT, "{.status.updatedReplicas}/{.status.readyReplicas}") == "2/2").then_some(()),
    );
    helm(cp, &["uninstall", "sg", "-n", NS, "--wait", "--timeout", "120s"]);
    wait_for(Duration::from_secs(120), "nothing of the release left", cp, || {
        let left = cp.kubectl_ok(&[
            "get",
            "all,lease,configmap,secret,serviceaccount,role,rolebinding,poddisruptionbudget,networkpolicy,endpointslice",
            "-n",
            NS,
            "-o",
            "name",
        ]);
        let left: Vec<&str> = left
            .lines()
            .filter(|l| *l != "configmap/kube-root-ca.crt" && *l != "serviceaccount/default")
            .collect();
        left.is_empty().then_some(()).or_else(|| {
            println!("still there: {left:?}");
            None
        })
    });
    let cluster_wide = cp.kubectl_ok(&[
        "get",
        "clusterrole,clusterrolebinding,ingressclass,validatingwebhookconfiguration",
        "-l",
        "app.kubernetes.io/instance=sg",
        "-o",
        "name",
    ]);
    assert_eq!(cluster_wide.trim(), "", "cluster-wide objects left behind");
    assert!(
        !cp.get("", "crd/routes.ssegate.dev", "{.metadata.name}").is_empty(),
        "the CRD stays (deleting it would delete every Route)"
    );
    // Both load-balancer addresses went with their Services: no Service
    // carries them, kube-proxy routes them nowhere, and neither answers.
    let published = cp.kubectl_ok(&[
        "get",
        "services",
        "-A",
        "-o",
        "jsonpath={range .items[*]}{.status.loadBalancer.ingress[*].ip}{\"\\n\"}{end}",
    ]);
    for (what, ip) in [("the chart's", &lb), ("the Gateway's", &gateway_ip)] {
        assert!(
            !published.lines().any(|l| l.split(' ').any(|a| a == ip)),
            "{what} load-balancer address {ip} is still a Service's: {published}"
        );
        wait_for(Duration::from_secs(30), "kube-proxy's rules for it gone", cp, || {
            let rules = Command::new("iptables-save").args(["-t", "nat"]).output().unwrap();
            (!String::from_utf8_lossy(&rules.stdout).contains(&format!(" -d {ip}/32 "))).then_some(())
        });
        not_answering(ip, Duration::from_secs(2)).await;
    }
    cp.kubectl_ok(&["delete", "httproute,gateway", "demo-gw", "--wait=false"]);
    cp.kubectl_ok(&["delete", "gatewayclass", "ssegate", "--wait=false"]);

    cp.kubectl_ok(&["delete", "ingress", "demo-ingress", "--wait=false"]);
    cp.kubectl_ok(&[
        "delete",
        "-f",
        &format!("{ROOT}/manifests/examples/demo.yaml"),
        "--wait=false",
    ]);
    wait_for(Duration::from_secs(60), "demo pods gone", cp, || {
        cp.get("default", "pods", "{.items[*].metadata.name}")
            .is_empty()
            .then_some(())
    });
    drop(kube);
    measured!("the chart's life took {:?} in all", test_started.elapsed());
    write_measured();
}
