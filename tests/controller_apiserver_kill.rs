//! The controller when kube-apiserver dies (SIGKILL, so that no open watch
//! is served on while it shuts down) and comes back on the same etcd:
//! serving goes on; leadership ends once the Lease cannot be renewed; after
//! the restart the watches, told their resource versions are too old,
//! re-list at once, so a change made then is live within seconds, and
//! leadership and status writing resume. Its own binary, so killing the
//! apiserver does not disturb other tests.

mod common;

use common::cluster::{control_plane, ControlPlane, NetnsBackend};
use common::process::Ssegate;
use common::*;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// How long the apiserver stays dead: several 3 s Leases.
const OUTAGE: Duration = Duration::from_secs(20);
const LEASE: Duration = Duration::from_secs(3);

/// SIGKILLs kube-apiserver and waits until its port refuses connections.
async fn sigkill_apiserver(cp: &ControlPlane) {
    let pid = std::fs::read_to_string(cp.dir.join("apiserver.pid")).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -KILL {pid}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(("127.0.0.1", cp.api_port)).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "kube-apiserver still listening after SIGKILL"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn leader_and_writes(gw: &Ssegate) -> (bool, u64) {
    let v = gw.admin_json("/debug/status").await;
    (v["leader"].as_bool().unwrap(), v["statusWrites"].as_u64().unwrap())
}

/// Log lines of `gw` containing all of `words`, with their timestamps.
fn log_lines(gw: &Ssegate, words: &[&str]) -> Vec<(SystemTime, String)> {
    let ansi = |s: &str| {
        let mut out = String::with_capacity(s.len());
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    gw.logs()
        .lines()
        .map(ansi)
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .filter_map(|l| {
            let ts: jiff::Timestamp = l.split_whitespace().next()?.parse().ok()?;
            Some((SystemTime::from(ts), l))
        })
        .collect()
}

fn signed_ms(a: SystemTime, b: SystemTime) -> i128 {
    match a.duration_since(b) {
        Ok(d) => d.as_millis() as i128,
        Err(e) => -(e.duration().as_millis() as i128),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_apiserver_changes_apply_at_once_after_restart_and_leadership_follows_the_lease() {
    let cp = control_plane();
    let ns = cp.namespace("sigkill");
    let logs = tempfile::tempdir().unwrap();
    let backend = NetnsBackend::start("pod-k").await;
    cp.apply(&ns, &backend.service_yaml("demo"));
    cp.apply(
        &ns,
        "apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {name: demo}\nspec:\n  hostnames: [demo.test]\n  proxyBuffering: Disabled\n  rules: [{backendRefs: [{name: demo, port: 80}]}]\n",
    );
    let kubeconfig = cp.kubeconfig.to_str().unwrap().to_owned();
    let lease = format!("{}s", LEASE.as_secs());
    let args = [
        "controller",
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        &ns,
        "--lease-namespace",
        &ns,
        "--lease-duration",
        &lease,
        "--identity",
        "solo",
    ];
    let gw = Ssegate::start(&args, logs.path()).await;
    let start = Instant::now();
    loop {
        let (leader, writes) = leader_and_writes(&gw).await;
        if leader && writes > 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "never led nor wrote status:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.buffering_of("demo").await, "Disabled");

    // A stream that lasts longer than the outage (25 s).
    let open = client()
        .get(format!("{}/.sse?interval=250ms&count=100", gw.proxy))
        .header("host", "demo.test")
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let open = tokio::spawn(read_stream(open, usize::MAX));

    // 1. The apiserver dies.
    sigkill_apiserver(cp).await;
    let killed = Instant::now();
    let killed_wall = SystemTime::now();
    let (_, writes_before) = leader_and_writes(&gw).await;
    let mut leader_false_after = None;
    let mut served = 0;
    let mut next_request = killed;
    while killed.elapsed() < OUTAGE {
        let (leader, writes) = leader_and_writes(&gw).await;
        assert_eq!(writes, writes_before, "no status writes without the apiserver");
        match (leader, leader_false_after) {
            (false, None) => leader_false_after = Some(killed.elapsed()),
            (true, Some(at)) => panic!(
                "leader again at {:?} without an apiserver (false at {at:?})",
                killed.elapsed()
            ),
            _ => {}
        }
        if Instant::now() >= next_request {
            assert_eq!(
                gw.status_of("demo.test").await,
                200,
                "new requests are served from the last table"
            );
            served += 1;
            next_request += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served >= 15, "only {served} requests during the outage");
    // The other checks run on, so that one run shows every shortfall.
    let mut shortfalls = Vec::new();
    if leader_false_after.is_none_or(|at| at >= LEASE + Duration::from_secs(1)) {
        shortfalls.push(format!(
            "leader=false only {leader_false_after:?} after the apiserver died, with a {LEASE:?} Lease"
        ));
    }

    // 2. It comes back on the same etcd (the script waits for /readyz).
    // When its port opens, for the reconnect figure.
    let port = cp.api_port;
    let listening = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(90);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        SystemTime::now()
    });
    let out = cp.script("start-apiserver");
    assert!(
        out.status.success(),
        "apiserver did not come back: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ready = Instant::now();
    let ready_wall = SystemTime::now();
    let listening = listening.await.unwrap();

    // 3. A change made now is live within seconds.
    cp.set_buffering(&ns, "demo", "Enabled");
    let patched = Instant::now();
    while gw.buffering_of("demo").await != "Enabled" {
        assert!(
            patched.elapsed() < Duration::from_secs(60),
            "patch not live {:?} after the apiserver came back:\n{}",
            patched.elapsed(),
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let patch_to_live = patched.elapsed();
    if patch_to_live > Duration::from_secs(5) {
        shortfalls.push(format!(
            "patch live only {patch_to_live:?} after the apiserver came back"
        ));
    }

    // 4. Leadership and status writing resume.
    loop {
        let (leader, writes) = leader_and_writes(&gw).await;
        let generation = cp.get(&ns, "route/demo", "{.metadata.generation}");
        let observed = cp.get(&ns, "route/demo", "{.status.observedGeneration}");
        if leader && writes > writes_before && observed == generation {
            break;
        }
        assert!(
            ready.elapsed() < Duration::from_secs(60),
            "leadership or status writing did not resume (leader {leader}, writes {writes}, generation {generation}, observed {observed}):\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader_back = ready.elapsed();
    if leader_back > Duration::from_secs(5) {
        shortfalls.push(format!("leader with a status write only {leader_back:?} after /readyz"));
    }
    assert!(shortfalls.is_empty(), "{shortfalls:#?}\n{}", gw.logs());

    // The scenario really happened: the watches were told their resource
    // versions had expired after the restart, and re-listed at once.
    let expired = log_lines(&gw, &["watch resource version expired; re-listing"]);
    assert!(!expired.is_empty(), "no 410 Expired after the restart:\n{}", gw.logs());
    let recovered = log_lines(&gw, &["watch recovered", "kind=\"Route\""]);
    let (recovered_at, _) = recovered
        .first()
        .unwrap_or_else(|| panic!("no recovery line for Routes:\n{}", gw.logs()));
    let reconnect_ms = signed_ms(*recovered_at, ready_wall);
    let first_answer = expired
        .iter()
        .chain(&log_lines(&gw, &["watch recovered"]))
        .map(|(t, _)| *t)
        .min();
    let first_answer_ms = signed_ms(first_answer.unwrap(), listening);
    assert!(
        reconnect_ms < 3000,
        "Routes re-listed {reconnect_ms} ms after the apiserver was ready:\n{}",
        gw.logs()
    );
    let warnings = log_lines(&gw, &["watch failed; reconnecting", "kind=\"Route\""]);
    assert_eq!(warnings.len(), 1, "one warning per outage: {warnings:?}");

    // The stream opened before the outage never broke.
    let open = open.await.unwrap();
    assert!(open.error.is_none(), "{:?}", open.error);
    assert_eq!(open.events.len(), 102);
    for (i, (event, _)) in open.events.iter().enumerate() {
        assert!(event.starts_with(&format!("id: {}\n", i + 1)), "{event}");
    }

    for (_, line) in log_lines(&gw, &["ssegate::s"]) {
        if !line.contains("DEBUG") {
            eprintln!("  {line}");
        }
    }
    eprintln!(
        "apiserver SIGKILLed for {OUTAGE:?}; its port reopened {:?} later and /readyz passed {:?} after that; \
         leader=false {:?} after the kill (Lease {LEASE:?}); \
         first watch answered {first_answer_ms} ms after the port reopened; \
         Routes re-listed {reconnect_ms} ms after /readyz (negative: before); \
         patch live {patch_to_live:?} after kubectl patch returned; \
         leader again with a status write {leader_back:?} after /readyz",
        listening.duration_since(killed_wall).unwrap_or_default(),
        ready_wall.duration_since(listening).unwrap_or_default(),
        leader_false_after.unwrap(),
    );
}
