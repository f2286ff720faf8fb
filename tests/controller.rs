//! The controller against a real kube-apiserver: CRD validation, routing
//! from watched objects, live buffering flips with kubectl, status, conflicts,
//! Events and the status Lease.

mod common;

use common::cluster::{control_plane, stamped, NetnsBackend};
use common::process::Ssegate;
use common::*;
use std::time::Duration;
use tokio::time::Instant;

fn route(name: &str, spec: &str) -> String {
    format!("apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}}}\nspec:\n{spec}")
}

async fn controller(ns: &str, identity: &str, log_dir: &std::path::Path) -> Ssegate {
    let cp = control_plane();
    let kubeconfig = cp.kubeconfig.to_str().unwrap().to_owned();
    let args = [
        "controller",
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        ns,
        "--lease-namespace",
        ns,
        "--lease-duration",
        "3s",
        "--identity",
        identity,
    ];
    Ssegate::start(&args, log_dir).await
}

/// Polls until `check` holds, or fails with `what`.
async fn eventually<F: FnMut() -> bool>(limit: Duration, what: &str, mut check: F) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn condition(ns: &str, route: &str, type_: &str, field: &str) -> String {
    control_plane().get(
        ns,
        &format!("route/{route}"),
        &format!("{{.status.conditions[?(@.type==\"{type_}\")].{field}}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cel_rejects_invalid_routes_at_admission() {
    let cp = control_plane();
    let ns = cp.namespace("cel");
    let bad = route(
        "bad",
        "  hostnames: [Bad_Host]\n  bufferSize: 1.5Mi\n  timeouts: {connect: 0s, idle: 5 minutes}\n  rules:\n  - matches: [{path: {value: events}}]\n    backendRefs: [{name: svc, port: 0, weight: 2000000}]\n",
    );
    let out = cp.kubectl(&["apply", "-n", &ns, "-f", "-"], Some(&bad));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "spec.hostnames[0]: Invalid value: \"Bad_Host\": hostnames must be lower-case DNS names",
        "spec.bufferSize: Invalid value: \"1.5Mi\": bufferSize must be a whole number of bytes from 1Ki to 16Mi",
        "spec.timeouts.connect: Invalid value: \"0s\": must be greater than 0s",
        "spec.timeouts.idle: Invalid value: \"5 minutes\": must be a duration such as 5s",
        "spec.rules[0].matches[0].path.value: Invalid value: \"events\": path value must start with /",
        "spec.rules[0].backendRefs[0].port: Invalid value: 0: port must be between 1 and 65535",
        "weight: Invalid value: 2000000: weight must be between 0 and 1000000",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    // Gateway API's path rules: no dot segments, no encoded slash, same words as standalone.
    let out = cp.kubectl(
        &["apply", "-n", &ns, "-f", "-"],
        Some(&route(
            "dots",
            "  rules:\n  - matches: [{path: {value: /a/../b}}, {path: {type: Exact, value: /a/.}}, {path: {value: /a%2Fb}}, {path: {value: /a/./b}}]\n    backendRefs: [{name: svc, port: 80}]\n",
        )),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let dots = "path value must not contain the dot segments /./ or /../, nor end with /. or /..";
    for expected in [
        format!("spec.rules[0].matches[0].path.value: Invalid value: \"/a/../b\": {dots}"),
        format!("spec.rules[0].matches[1].path.value: Invalid value: \"/a/.\": {dots}"),
        "spec.rules[0].matches[2].path.value: Invalid value: \"/a%2Fb\": path value must not contain %2f or %2F (an encoded /)".to_owned(),
        format!("spec.rules[0].matches[3].path.value: Invalid value: \"/a/./b\": {dots}"),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
    let out = cp.kubectl(&["apply", "-n", &ns, "-f", "-"], Some(&route("empty", "  rules: []\n")));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a Route needs at least one rule"));
    let out = cp.kubectl(
        &["apply", "-n", &ns, "-f", "-"],
        Some(&route(
            "buffering-on",
            "  proxyBuffering: On\n  rules: [{backendRefs: [{name: a, port: 80}]}]\n",
        )),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unsupported value"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cp.kubectl(
        &["apply", "-n", &ns, "-f", "-"],
        Some(&route(
            "cors-star",
            "  cors: {allowOrigins: [\"*\", \"app.test\"], allowCredentials: true}\n  tls: [{secretName: Bad_Name}]\n  rules: [{backendRefs: [{name: a, port: 80}]}]\n",
        )),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "allowOrigins '*' cannot be combined with allowCredentials",
        "spec.cors.allowOrigins[1]: Invalid value: \"app.test\": each origin is scheme://host[:port]",
        "secretName must be the name of a Secret",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    cp.apply(
        &ns,
        &route(
            "good",
            "  bufferSize: 65536\n  rules: [{backendRefs: [{name: svc, port: 80}]}]\n",
        ),
    );
    // Printer columns and the short name.
    let table = cp.kubectl_ok(&["get", "sser", "-n", &ns]);
    assert!(
        table.starts_with("NAME") && table.contains("BUFFERING") && table.contains("ACCEPTED"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routes_flow_and_buffering_flips_live_with_kubectl() {
    let cp = control_plane();
    let ns = cp.namespace("flow");
    let logs = tempfile::tempdir().unwrap();
    let backend = NetnsBackend::start("pod-a").await;
    cp.apply(&ns, &backend.service_yaml("demo"));
    cp.apply(
        &ns,
        &route(
            "demo",
            "  proxyBuffering: Disabled\n  rules: [{backendRefs: [{name: demo, port: 80}]}]\n",
        ),
    );
    let gw = controller(&ns, "flow-1", logs.path()).await;
    eventually(Duration::from_secs(10), "Accepted=True", || {
        condition(&ns, "demo", "Accepted", "status") == "True"
    })
    .await;
    assert_eq!(condition(&ns, "demo", "ResolvedRefs", "status"), "True");
    assert_eq!(cp.get(&ns, "route/demo", "{.status.observedGeneration}"), "1");

    // A stream opened under Disabled.
    let open = client()
        .get(format!("{}/.sse?interval=100ms&count=25", gw.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let open = tokio::spawn(read_stream(open, usize::MAX));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Flip with kubectl while it is open, and time patch-to-live.
    let mut after_exit = Vec::new();
    let mut whole = Vec::new();
    for i in 0..6 {
        let mode = if i % 2 == 0 { "Enabled" } else { "Disabled" };
        let started = Instant::now();
        cp.set_buffering(&ns, "demo", mode);
        let exited = Instant::now();
        while gw.buffering_of("demo").await != mode {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{mode} never applied:\n{}",
                gw.logs()
            );
        }
        after_exit.push(exited.elapsed());
        whole.push(started.elapsed());
    }
    cp.set_buffering(&ns, "demo", "Enabled");
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.buffering_of("demo").await != "Enabled" {
        assert!(Instant::now() < deadline, "Enabled never applied:\n{}", gw.logs());
    }
    eprintln!("kubectl patch to live, from kubectl's exit: {after_exit:?}; including kubectl: {whole:?}");

    // A new request follows the new mode: everything arrives at the end.
    let fresh = client()
        .get(format!("{}/.sse?interval=100ms&count=3", gw.proxy))
        .send()
        .await
        .unwrap();
    let fresh = read_stream(fresh, usize::MAX).await;
    assert_eq!(fresh.events.len(), 5);
    assert_eq!(
        fresh.chunks.len(),
        1,
        "Enabled should coalesce the whole small body: {:?}",
        fresh.chunks
    );
    let last_stamp = stamped(&fresh.events[4].0).unwrap();
    assert!(
        fresh.events_wall[0] >= last_stamp,
        "event 1 arrived before the last was emitted"
    );

    // The open stream went on unbroken, event by event.
    let open = open.await.unwrap();
    assert!(open.error.is_none(), "{:?}", open.error);
    assert_eq!(open.events.len(), 27);
    for i in 0..27 {
        assert!(
            open.events[i].0.starts_with(&format!("id: {}\n", i + 1)),
            "{}",
            open.events[i].0
        );
    }
    for i in 2..26 {
        let next_emitted = stamped(&open.events[i + 1].0).unwrap();
        assert!(
            open.events_wall[i] < next_emitted + Duration::from_millis(5),
            "open stream held back at event {}",
            i + 1
        );
    }

    // Status follows the generation.
    let generation = cp.get(&ns, "route/demo", "{.metadata.generation}");
    eventually(Duration::from_secs(10), "observedGeneration to follow", || {
        cp.get(&ns, "route/demo", "{.status.observedGeneration}") == generation
            && condition(&ns, "demo", "Accepted", "observedGeneration") == generation
    })
    .await;

    // Deleting the Route gives 404.
    cp.kubectl_ok(&["delete", "-n", &ns, "route/demo"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = client()
            .get(format!("{}/.sse?count=0", gw.proxy))
            .send()
            .await
            .unwrap()
            .status();
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "still {status} after delete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflict_loser_gets_status_and_event_while_winner_serves() {
    let cp = control_plane();
    let ns = cp.namespace("conflict");
    let logs = tempfile::tempdir().unwrap();
    let (a, b) = (NetnsBackend::start("pod-a").await, NetnsBackend::start("pod-b").await);
    cp.apply(&ns, &a.service_yaml("a"));
    cp.apply(&ns, &b.service_yaml("b"));
    cp.apply(
        &ns,
        &route(
            "older",
            "  hostnames: [sse.test]\n  rules: [{backendRefs: [{name: a, port: 80}]}]\n",
        ),
    );
    // creationTimestamp has one-second resolution: make the age difference real.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    cp.apply(
        &ns,
        &route(
            "newer",
            "  hostnames: [sse.test]\n  rules: [{backendRefs: [{name: b, port: 80}]}]\n",
        ),
    );
    let gw = controller(&ns, "conflict-1", logs.path()).await;

    eventually(Duration::from_secs(10), "loser marked Conflicted", || {
        condition(&ns, "newer", "Accepted", "reason") == "Conflicted"
    })
    .await;
    assert_eq!(condition(&ns, "newer", "Accepted", "status"), "False");
    let message = condition(&ns, "newer", "Accepted", "message");
    assert!(
        message.contains(&format!("PathPrefix / on sse.test is served by Route {ns}/older")),
        "{message}"
    );
    assert_eq!(condition(&ns, "older", "Accepted", "status"), "True");

    let resp = client()
        .get(format!("{}/.sse?count=0", gw.proxy))
        .header("host", "sse.test")
        .send()
        .await
        .unwrap();
    let got = read_stream(resp, 1).await;
    assert!(got.events[0].0.contains("data: pod-a"), "{}", got.events[0].0);

    eventually(Duration::from_secs(10), "a Warning Event for the loser", || {
        let events = cp.kubectl_ok(&["get", "events.events.k8s.io", "-n", &ns, "-o", "json"]);
        events.contains("\"reason\": \"Conflicted\"") && events.contains("\"name\": \"newer\"")
    })
    .await;

    // Removing the winner hands the match to the other Route.
    cp.kubectl_ok(&["delete", "-n", &ns, "route/older"]);
    eventually(Duration::from_secs(10), "newer accepted", || {
        condition(&ns, "newer", "Accepted", "status") == "True"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_reports_references_and_a_resync_writes_nothing() {
    let cp = control_plane();
    let ns = cp.namespace("status");
    let logs = tempfile::tempdir().unwrap();
    cp.apply(
        &ns,
        &route("r", "  rules: [{backendRefs: [{name: later, port: 80}]}]\n"),
    );
    let gw = controller(&ns, "status-1", logs.path()).await;
    eventually(Duration::from_secs(10), "BackendNotFound", || {
        condition(&ns, "r", "ResolvedRefs", "reason") == "BackendNotFound"
    })
    .await;
    assert_eq!(condition(&ns, "r", "Accepted", "status"), "True");
    assert!(condition(&ns, "r", "ResolvedRefs", "message").contains(&format!("Service {ns}/later not found")));
    let resp = client().get(format!("{}/", gw.proxy)).send().await.unwrap();
    assert_eq!(resp.status(), 503);

    let backend = NetnsBackend::start("pod-l").await;
    cp.apply(&ns, &backend.service_yaml("later"));
    eventually(Duration::from_secs(10), "ResolvedRefs=True", || {
        condition(&ns, "r", "ResolvedRefs", "status") == "True"
    })
    .await;

    // Settle, then touch the Route without changing its spec: the watch
    // fires, the writer compares, and nothing is written.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = gw.admin_json("/debug/status").await["statusWrites"].as_u64().unwrap();
    cp.kubectl_ok(&["annotate", "-n", &ns, "route/r", "touched=yes"]);
    let rv = cp.get(&ns, "route/r", "{.metadata.resourceVersion}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        cp.get(&ns, "route/r", "{.metadata.resourceVersion}"),
        rv,
        "a resync rewrote the status"
    );
    assert_eq!(
        gw.admin_json("/debug/status").await["statusWrites"].as_u64().unwrap(),
        writes
    );
    let fields = cp.kubectl_ok(&[
        "get",
        "-n",
        &ns,
        "route/r",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(fields.split(' ').any(|m| m == "ssegate"), "{fields}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_replicas_serve_and_only_the_lease_holder_writes_status() {
    let cp = control_plane();
    let ns = cp.namespace("lease");
    let logs = tempfile::tempdir().unwrap();
    let backend = NetnsBackend::start("pod-x").await;
    cp.apply(&ns, &backend.service_yaml("x"));
    cp.apply(&ns, &route("one", "  rules: [{backendRefs: [{name: x, port: 80}]}]\n"));
    let mut replicas = vec![
        controller(&ns, "replica-1", logs.path()).await,
        controller(&ns, "replica-2", logs.path()).await,
    ];
    eventually(Duration::from_secs(10), "status written", || {
        condition(&ns, "one", "Accepted", "status") == "True"
    })
    .await;

    for gw in &replicas {
        let resp = client().get(format!("{}/.sse?count=0", gw.proxy)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "every replica serves traffic");
    }
    let holder = cp.get(&ns, "lease/ssegate-status", "{.spec.holderIdentity}");
    let (leader, follower) = if holder == "replica-1" { (0, 1) } else { (1, 0) };
    let follower_status = replicas[follower].admin_json("/debug/status").await;
    assert_eq!(follower_status["leader"], false);
    assert_eq!(
        follower_status["statusWrites"], 0,
        "only the lease holder writes status"
    );
    let leader_status = replicas[leader].admin_json("/debug/status").await;
    assert_eq!(leader_status["leader"], true);
    assert!(leader_status["statusWrites"].as_u64().unwrap() > 0);

    // Kill the holder; the other takes over status within the lease time.
    replicas[leader].kill();
    let killed = Instant::now();
    cp.apply(
        &ns,
        &route(
            "two",
            "  hostnames: [two.test]\n  rules: [{backendRefs: [{name: x, port: 80}]}]\n",
        ),
    );
    eventually(
        Duration::from_secs(15),
        "the new Route's status from the survivor",
        || condition(&ns, "two", "Accepted", "status") == "True",
    )
    .await;
    let took = killed.elapsed();
    eprintln!("status takeover after the holder died: {took:?} (lease 3s)");
    assert!(took < Duration::from_secs(3 + 4), "takeover took {took:?}");
    let survivor = format!("replica-{}", follower + 1);
    assert_eq!(cp.get(&ns, "lease/ssegate-status", "{.spec.holderIdentity}"), survivor);
    assert!(
        replicas[follower].admin_json("/debug/status").await["statusWrites"]
            .as_u64()
            .unwrap()
            > 0
    );
}

/// A holder that shuts down gracefully hands the Lease on at once instead
/// of leaving it to expire: with a 60 s lease, the other replica takes over
/// long before a crashed holder's Lease would run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_shutting_down_releases_the_lease_to_the_other_replica() {
    let cp = control_plane();
    let ns = cp.namespace("release");
    let logs = tempfile::tempdir().unwrap();
    let kubeconfig = cp.kubeconfig.to_str().unwrap().to_owned();
    let start = |identity: &'static str| {
        let (ns, kubeconfig, logs) = (ns.clone(), kubeconfig.clone(), logs.path().to_owned());
        async move {
            let args = [
                "controller",
                "--kubeconfig",
                &kubeconfig,
                "--namespace",
                &ns,
                "--lease-namespace",
                &ns,
                "--lease-duration",
                "60s",
                "--identity",
                identity,
                "--drain-delay",
                "1s",
            ];
            Ssegate::start(&args, &logs).await
        }
    };
    let mut first = start("replica-1").await;
    eventually(Duration::from_secs(10), "replica-1 holds the Lease", || {
        cp.get(&ns, "lease/ssegate-status", "{.spec.holderIdentity}") == "replica-1"
    })
    .await;
    let second = start("replica-2").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cp.get(&ns, "lease/ssegate-status", "{.spec.holderIdentity}"),
        "replica-1"
    );

    let stopped = Instant::now();
    first.terminate();
    // Released right away, before the drain ends the process.
    eventually(Duration::from_secs(5), "the Lease released", || {
        cp.get(&ns, "lease/ssegate-status", "{.spec.holderIdentity}") != "replica-1"
    })
    .await;
    assert!(first
        .wait_exit(Duration::from_secs(30))
        .await
        .is_some_and(|s| s.success()));
    let took = eventually(Duration::from_secs(30), "replica-2 holds the Lease", || {
        cp.get(&ns, "lease/ssegate-status", "{.spec.holderIdentity}") == "replica-2"
    })
    .await;
    eprintln!("Lease handed over {:?} after SIGTERM (lease 60s)", stopped.elapsed());
    assert!(took < Duration::from_secs(30));
    cp.apply(
        &ns,
        &route("after", "  rules: [{backendRefs: [{name: x, port: 80}]}]\n"),
    );
    eventually(Duration::from_secs(10), "status from the new holder", || {
        !condition(&ns, "after", "Accepted", "status").is_empty()
    })
    .await;
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_certificates_come_from_secrets_and_rotate_live() {
    use common::tls::{cert, connect, presented, secret_yaml};
    use http_body_util::{BodyExt, Empty};
    let cp = control_plane();
    let ns = cp.namespace("tls");
    let logs = tempfile::tempdir().unwrap();
    let backend = NetnsBackend::start("pod-tls").await;
    cp.apply(&ns, &backend.service_yaml("demo"));
    cp.apply(
        &ns,
        &route(
            "secure",
            "  hostnames: [secure.test]\n  tls: [{secretName: secure-cert}]\n  rules: [{backendRefs: [{name: demo, port: 80}]}]\n",
        ),
    );
    // An Opaque Secret with the same keys is never read: the watch asks
    // for kubernetes.io/tls only.
    cp.apply(
        &ns,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: secure-cert-opaque}\ntype: Opaque\nstringData: {tls.crt: \"x\", tls.key: \"y\"}\n",
    );

    let tls_port = free_port();
    let kubeconfig = cp.kubeconfig.to_str().unwrap().to_owned();
    let listen_tls = format!("127.0.0.1:{tls_port}");
    let args = [
        "controller",
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        &ns,
        "--lease-namespace",
        &ns,
        "--identity",
        "tls-1",
        "--listen-tls",
        &listen_tls,
    ];
    let gw = Ssegate::start(&args, logs.path()).await;
    let tls_addr: std::net::SocketAddr = listen_tls.parse().unwrap();

    // Missing Secret: a clear condition; plain HTTP is still served.
    eventually(Duration::from_secs(10), "InvalidCertificateRef", || {
        condition(&ns, "secure", "ResolvedRefs", "reason") == "InvalidCertificateRef"
    })
    .await;
    let message = condition(&ns, "secure", "ResolvedRefs", "message");
    assert!(
        message.contains(&format!("Secret {ns}/secure-cert not found")),
        "{message}"
    );
    let cert_a = cert(&["secure.test"]);
    assert!(connect(tls_addr, "secure.test", &[&cert_a], &[b"h2"]).await.is_err());

    // The Secret appears: TLS with HTTP/2 works and the condition clears.
    cp.apply(&ns, &secret_yaml("secure-cert", None, &cert_a));
    eventually(Duration::from_secs(10), "ResolvedRefs True", || {
        condition(&ns, "secure", "ResolvedRefs", "status") == "True"
    })
    .await;
    let stream = connect(tls_addr, "secure.test", &[&cert_a], &[b"h2"]).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(presented(&stream), cert_a.der);
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(
            http::Request::get("https://secure.test/json")
                .body(Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", gw.logs());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("\"n\":3"), "{body:?}");

    // Rotation with kubectl: new handshakes get the new certificate.
    let cert_b = cert(&["secure.test"]);
    cp.apply(&ns, &secret_yaml("secure-cert", None, &cert_b));
    let started = Instant::now();
    loop {
        let s = connect(tls_addr, "secure.test", &[&cert_a, &cert_b], &[b"h2"])
            .await
            .unwrap();
        if presented(&s) == cert_b.der {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "rotation never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("Secret rotation to new handshakes: {:?}", started.elapsed());
    // The status writes above are counted.
    let metrics = gw.metrics_text().await;
    let ok_writes: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"ssegate_status_writes_total{result="ok"} "#))
        .unwrap_or_else(|| panic!("no status write counted:\n{metrics}"))
        .parse()
        .unwrap();
    assert!(ok_writes >= 2.0, "{metrics}");
    assert!(!gw.logs().contains("secure-cert-opaque"), "{}", gw.logs());
}

/// The CRD's CEL rules (what `kubectl apply` refuses) and `validate.rs`
/// (what standalone mode refuses, and what the table builder trusts) must
/// agree: each bad Route below is refused by both, naming the same field,
/// and each good one is accepted by both.
#[tokio::test]
async fn cel_and_standalone_validation_agree() {
    let cp = control_plane();
    let ns = cp.namespace("agree");
    let backend = "    backendRefs: [{name: svc, port: 80}]\n";
    let one_rule = format!("  rules:\n  - matches: [{{path: {{value: /x}}}}]\n{backend}");
    let with_rule = |extra: &str| format!("{extra}{one_rule}");
    let with_path = |path: &str| format!("  rules:\n  - matches: [{{path: {{value: \"{path}\"}}}}]\n{backend}");
    let with_backend = |b: &str| format!("  rules:\n  - backendRefs: [{b}]\n");
    let bad: Vec<(String, &str)> = vec![
        (with_rule("  hostnames: [Bad_Host]\n"), "spec.hostnames[0]"),
        (with_rule("  hostnames: [\"a.*.test\"]\n"), "spec.hostnames[0]"),
        (with_rule("  bufferSize: 1.5Mi\n"), "spec.bufferSize"),
        (with_rule("  bufferSize: 32Mi\n"), "spec.bufferSize"),
        (with_rule("  bufferSize: 512\n"), "spec.bufferSize"),
        (with_rule("  timeouts: {connect: 0s}\n"), "spec.timeouts.connect"),
        (
            with_rule("  timeouts: {responseHeaders: 0s}\n"),
            "spec.timeouts.responseHeaders",
        ),
        (with_rule("  timeouts: {idle: 5 minutes}\n"), "spec.timeouts.idle"),
        (
            with_rule("  sse: {maxStreamDuration: 0s}\n"),
            "spec.sse.maxStreamDuration",
        ),
        (with_rule("  maxConcurrentStreams: 0\n"), "spec.maxConcurrentStreams"),
        (
            with_rule("  sse: {resume: {enabled: true, maxAttempts: 11}}\n"),
            "spec.sse.resume.maxAttempts",
        ),
        (
            with_rule("  sse: {resume: {enabled: true, budget: 50ms}}\n"),
            "spec.sse.resume.budget",
        ),
        (
            with_rule("  sse: {resume: {enabled: true, rolloutWindow: 6m}}\n"),
            "spec.sse.resume.rolloutWindow",
        ),
        (
            with_rule("  sse: {resume: {enabled: true}, rebalance: {enabled: true, tolerancePercent: 0}}\n"),
            "spec.sse.rebalance.tolerancePercent",
        ),
        (
            with_rule("  sse: {resume: {enabled: true}, rebalance: {enabled: true, movesPerSecond: 1001}}\n"),
            "spec.sse.rebalance.movesPerSecond",
        ),
        (
            with_rule("  sse: {resume: {enabled: false}, rebalance: {enabled: true}}\n"),
            "spec.sse.rebalance",
        ),
        // A rule's position cannot be named by a CEL rule: both name `spec.rules`.
        (
            format!("  rules:\n  - sse: {{rebalance: {{enabled: true}}}}\n{backend}"),
            "spec.rules",
        ),
        (
            with_rule("  tls: [{secretName: Bad_Name, hostnames: [a.test]}]\n"),
            "spec.tls[0].secretName",
        ),
        ("  rules: []\n".to_owned(), "spec.rules"),
        (with_path("events"), "spec.rules[0].matches[0].path.value"),
        (with_path("/a/../b"), "spec.rules[0].matches[0].path.value"),
        (with_path("/a/."), "spec.rules[0].matches[0].path.value"),
        (with_path("/a%2Fb"), "spec.rules[0].matches[0].path.value"),
        (with_path("/a//b"), "spec.rules[0].matches[0].path.value"),
        (
            "  rules:\n  - backendRefs: []\n".to_owned(),
            "spec.rules[0].backendRefs",
        ),
        (
            with_backend("{name: Bad_Svc, port: 80}"),
            "spec.rules[0].backendRefs[0].name",
        ),
        (
            with_backend("{name: svc, port: 0}"),
            "spec.rules[0].backendRefs[0].port",
        ),
        (
            with_backend("{name: svc, port: 70000}"),
            "spec.rules[0].backendRefs[0].port",
        ),
        (
            with_backend("{name: svc, port: 80, weight: -1}"),
            "spec.rules[0].backendRefs[0].weight",
        ),
        (
            format!("  rules:\n  - timeouts: {{idle: soon}}\n{backend}"),
            "spec.rules[0].timeouts.idle",
        ),
    ];
    let mut disagreements = Vec::new();
    for (i, (spec, field)) in bad.iter().enumerate() {
        let yaml = route(&format!("bad-{i}"), spec);
        let out = cp.kubectl(&["apply", "--dry-run=server", "-n", &ns, "-f", "-"], Some(&yaml));
        let cel = String::from_utf8_lossy(&out.stderr).into_owned();
        let cel_refused = !out.status.success() && cel.contains(field);
        let local = serde_yaml::from_str::<ssegate::api::Route>(&yaml)
            .map_err(|e| e.to_string())
            .and_then(|r| r.spec.validate().map(|_| ()).map_err(|errors| format!("{errors:?}")));
        let local_refused = local.as_ref().is_err_and(|e| e.contains(field));
        if !(cel_refused && local_refused) {
            disagreements.push(format!(
                "{field} in\n{spec}  apiserver refused: {cel_refused} ({})\n  standalone refused: {local_refused} ({local:?})",
                cel.trim()
            ));
        }
    }
    for (i, spec) in [
        with_rule("  hostnames: [\"*.a.test\", b.test]\n  bufferSize: 4Ki\n"),
        with_rule("  timeouts: {connect: 2s, responseHeaders: 1m, idle: 0s}\n  sse: {heartbeatInterval: 15s, maxStreamDuration: 1h}\n"),
        with_path("/a.b/..c/%20"),
        with_rule(
            "  sse:\n    resume: {enabled: true, maxAttempts: 10, budget: 100ms, onIdleTimeout: true, rolloutWindow: 5m}\n    rebalance: {enabled: true, tolerancePercent: 100, movesPerSecond: 1}\n",
        ),
        // The rule's rebalancing rests on the Route's resume.
        format!("  sse: {{resume: {{enabled: true}}}}\n  rules:\n  - sse: {{rebalance: {{enabled: true}}}}\n{backend}"),
    ]
    .iter()
    .enumerate()
    {
        let yaml = route(&format!("good-{i}"), spec);
        let out = cp.kubectl(&["apply", "--dry-run=server", "-n", &ns, "-f", "-"], Some(&yaml));
        let local = serde_yaml::from_str::<ssegate::api::Route>(&yaml)
            .unwrap()
            .spec
            .validate()
            .map(|_| ());
        if !out.status.success() || local.is_err() {
            disagreements.push(format!(
                "good Route\n{spec}  apiserver: {}\n  standalone: {local:?}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n\n"));
}
