//! Ingresses against a real kube-apiserver: class selection through real
//! IngressClasses (and the legacy annotation), the proxy-buffering
//! annotation flipped live with `kubectl annotate` while a stream stays
//! open, and an IngressClass deleted under a served Ingress.

mod common;

use common::cluster::{control_plane, stamped, NetnsBackend};
use common::process::Ssegate;
use common::*;
use std::time::Duration;
use tokio::time::Instant;

/// An Ingress to Service `demo` by port name; `annotation` and `spec_line`
/// are extra lines (indented) for the annotations and the spec.
fn ingress(name: &str, annotation: &str, spec_line: &str, host: &str, buffering: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  annotations:\n    nginx.ingress.kubernetes.io/proxy-buffering: \"{buffering}\"\n{annotation}spec:\n{spec_line}  rules:\n  - host: {host}\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: demo, port: {{name: http}}}}}}}}\n"
    )
}

async fn wait_status(gw: &Ssegate, host: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = gw.status_of(host).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{host}: still {got}, want {want}:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingresses_of_our_classes_are_served_and_their_buffering_flips_live_with_kubectl() {
    let cp = control_plane();
    let ns = cp.namespace("ingress");
    let class = format!("{ns}-sse");
    let logs = tempfile::tempdir().unwrap();
    let backend = NetnsBackend::start("pod-i").await;
    cp.apply(&ns, &backend.service_yaml("demo"));
    cp.apply(
        &ns,
        &format!("apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: {class}}}\nspec: {{controller: ssegate.dev/ingress}}\n"),
    );
    let class_field = format!("  ingressClassName: {class}\n");
    cp.apply(&ns, &ingress("live", "", &class_field, "live.test", "off"));
    let class_annotation = format!("    kubernetes.io/ingress.class: {class}\n");
    cp.apply(&ns, &ingress("legacy", &class_annotation, "", "legacy.test", "off"));
    let nginx = "  ingressClassName: nginx\n";
    cp.apply(&ns, &ingress("theirs", "", nginx, "theirs.test", "off"));

    let gw = Ssegate::controller(&ns, "ingress-1", &[], logs.path()).await;
    wait_status(&gw, "live.test", 200).await;
    wait_status(&gw, "legacy.test", 200).await;
    assert_eq!(gw.status_of("theirs.test").await, 404, "another controller's Ingress");

    // A stream opened under "off": event by event.
    let open = client()
        .get(format!("{}/.sse?interval=100ms&count=20", gw.proxy))
        .header("host", "live.test")
        .send()
        .await
        .unwrap();
    let open = tokio::spawn(read_stream(open, usize::MAX));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    cp.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "-n",
        &ns,
        "ingress/live",
        "nginx.ingress.kubernetes.io/proxy-buffering=on",
    ]);
    while gw.buffering_of("live").await != "Enabled" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "on never applied:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("kubectl annotate to live: {:?}", started.elapsed());
    let fresh = client()
        .get(format!("{}/.sse?interval=100ms&count=3", gw.proxy))
        .header("host", "live.test")
        .send()
        .await
        .unwrap();
    let fresh = read_stream(fresh, usize::MAX).await;
    assert_eq!(fresh.events.len(), 5);
    assert_eq!(fresh.chunks.len(), 1, "on coalesces the small body: {:?}", fresh.chunks);

    let open = open.await.unwrap();
    assert!(open.error.is_none(), "{:?}", open.error);
    assert_eq!(open.events.len(), 22);
    for i in 2..21 {
        let next_emitted = stamped(&open.events[i + 1].0).unwrap();
        assert!(
            open.events_wall[i] < next_emitted + Duration::from_millis(5),
            "the open stream was held back at event {} after the flip",
            i + 1
        );
    }

    // The class goes away: its Ingresses are no longer ssegate's.
    cp.kubectl_ok(&["delete", "ingressclass", &class]);
    wait_status(&gw, "live.test", 404).await;
    wait_status(&gw, "legacy.test", 404).await;
}
