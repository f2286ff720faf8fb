//! Ingress status and Events against a real kube-apiserver: the lease
//! holder writes `status.loadBalancer.ingress` of the Ingresses ssegate
//! serves (from --publish-status-address or --publish-service), puts a hand
//! edit right, takes its address back from an Ingress it refuses, leaves
//! other classes' Ingresses alone, and records one Warning Event per
//! annotation it does not honour. The addresses are documentation ranges
//! (192.0.2.0/24), written as data only: nothing ever connects to them.

mod common;

use common::cluster::control_plane;
use common::process::Ssegate;
use std::time::Duration;
use tokio::time::Instant;

use ssegate::translate::ingress_class::CONTROLLER;

fn ingress_class(name: &str, controller: &str) -> String {
    format!("apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: {name}}}\nspec: {{controller: {controller}}}\n")
}

/// An Ingress of `class` routing `path` (Prefix) to a Service that need not exist.
fn ingress(name: &str, class: &str, annotations: &str, path: &str, path_type: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\n\
         spec:\n  ingressClassName: {class}\n  rules:\n  - host: {name}.test\n    http:\n      paths:\n      \
         - {{path: \"{path}\", pathType: {path_type}, backend: {{service: {{name: missing, port: {{number: 80}}}}}}}}\n"
    )
}

async fn controller(ns: &str, identity: &str, extra: &[&str], log_dir: &std::path::Path) -> Ssegate {
    let cp = control_plane();
    let kubeconfig = cp.kubeconfig.to_str().unwrap().to_owned();
    let mut args = vec![
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
    args.extend_from_slice(extra);
    Ssegate::start(&args, log_dir).await
}

/// Polls until `check` holds, or fails with `what` and ssegate's log.
async fn eventually<F: FnMut() -> bool>(limit: Duration, what: &str, gw: &Ssegate, mut check: F) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `status.loadBalancer.ingress` of an Ingress, as JSON ("" when unset).
fn addresses(ns: &str, name: &str) -> String {
    control_plane().get(ns, &format!("ingress/{name}"), "{.status.loadBalancer.ingress}")
}

fn hand_edit(ns: &str, name: &str, ip: &str) {
    let patch = format!("{{\"status\":{{\"loadBalancer\":{{\"ingress\":[{{\"ip\":\"{ip}\"}}]}}}}}}");
    control_plane().kubectl_ok(&[
        "patch",
        "-n",
        ns,
        &format!("ingress/{name}"),
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ]);
}

/// The Events (events.k8s.io) about the Ingress `name`.
fn events_about(ns: &str, name: &str) -> Vec<serde_json::Value> {
    let out = control_plane().kubectl_ok(&["get", "events.events.k8s.io", "-n", ns, "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["regarding"]["kind"] == "Ingress" && e["regarding"]["name"] == name)
        .cloned()
        .collect()
}

/// The AnnotationIgnored Events about `name` whose note names `annotation`.
fn ignored(ns: &str, name: &str, annotation: &str) -> Vec<serde_json::Value> {
    let full = format!("nginx.ingress.kubernetes.io/{annotation}:");
    events_about(ns, name)
        .into_iter()
        .filter(|e| e["reason"] == "AnnotationIgnored" && e["note"].as_str().is_some_and(|n| n.contains(&full)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn published_address_events_hand_edits_refusal_and_other_classes() {
    let cp = control_plane();
    let ns = cp.namespace("ing-status");
    let logs = tempfile::tempdir().unwrap();
    cp.apply(&ns, &ingress_class("sse-status", CONTROLLER));
    cp.apply(&ns, &ingress_class("nginx-status", "k8s.io/ingress-nginx"));
    // Backends unresolved (no Service): accepted all the same, so addressed.
    cp.apply(
        &ns,
        &ingress(
            "web",
            "sse-status",
            "nginx.ingress.kubernetes.io/rewrite-target: /, nginx.ingress.kubernetes.io/affinity: cookie",
            "/events",
            "Prefix",
        ),
    );
    cp.apply(&ns, &ingress("mover", "sse-status", "", "/", "Prefix"));
    cp.apply(&ns, &ingress("theirs", "nginx-status", "", "/", "Prefix"));
    let gw = &controller(&ns, "ing-1", &["--publish-status-address", "192.0.2.10"], logs.path()).await;

    eventually(Duration::from_secs(15), "web's address", gw, || {
        addresses(&ns, "web") == r#"[{"ip":"192.0.2.10"}]"#
    })
    .await;
    eventually(Duration::from_secs(15), "mover's address", gw, || {
        addresses(&ns, "mover") == r#"[{"ip":"192.0.2.10"}]"#
    })
    .await;

    // A Warning Event naming each ignored annotation, one each.
    for annotation in ["rewrite-target", "affinity"] {
        eventually(
            Duration::from_secs(15),
            &format!("a Warning Event for {annotation}"),
            gw,
            || ignored(&ns, "web", annotation).len() == 1,
        )
        .await;
    }

    // A hand edit is put right.
    hand_edit(&ns, "web", "192.0.2.99");
    eventually(Duration::from_secs(15), "the hand edit put right", gw, || {
        addresses(&ns, "web") == r#"[{"ip":"192.0.2.10"}]"#
    })
    .await;

    // A resync (an unrelated metadata change) writes nothing and records no
    // Event again: same resourceVersion, one Event with no series.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    cp.kubectl_ok(&["annotate", "-n", &ns, "ingress/web", "touched=yes"]);
    let rv = cp.get(&ns, "ingress/web", "{.metadata.resourceVersion}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        cp.get(&ns, "ingress/web", "{.metadata.resourceVersion}"),
        rv,
        "a resync rewrote the status:\n{}",
        gw.logs()
    );
    for annotation in ["rewrite-target", "affinity"] {
        let warned = ignored(&ns, "web", annotation);
        assert_eq!(warned.len(), 1, "{warned:#?}");
        assert!(warned[0]["series"].is_null(), "recorded again: {:#?}", warned[0]);
        assert_eq!(warned[0]["type"], "Warning");
    }

    // Another class's Ingress is never touched.
    assert_eq!(addresses(&ns, "theirs"), "", "ssegate wrote another class's status");
    assert!(events_about(&ns, "theirs").is_empty());

    // An Ingress that leaves ssegate's class keeps what it has.
    cp.kubectl_ok(&[
        "patch",
        "-n",
        &ns,
        "ingress/mover",
        "--type=merge",
        "-p",
        r#"{"spec":{"ingressClassName":"nginx-status"}}"#,
    ]);
    hand_edit(&ns, "mover", "192.0.2.50");

    // Refused (a regular-expression path): a Warning Event with the
    // message, and the address ssegate set is taken back.
    cp.kubectl_ok(&[
        "patch",
        "-n",
        &ns,
        "ingress/web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/rules/0/http/paths/0/path","value":"/a(.*)"},{"op":"replace","path":"/spec/rules/0/http/paths/0/pathType","value":"ImplementationSpecific"}]"#,
    ]);
    eventually(
        Duration::from_secs(15),
        "the refused Ingress's address cleared",
        gw,
        || addresses(&ns, "web").is_empty(),
    )
    .await;
    eventually(Duration::from_secs(15), "a Warning Event for the refusal", gw, || {
        events_about(&ns, "web").iter().any(|e| {
            e["type"] == "Warning"
                && e["reason"] == "Invalid"
                && e["note"].as_str().is_some_and(|n| n.contains("regular expression"))
        })
    })
    .await;
    // The new generation announces its warning again: a second Event.
    eventually(Duration::from_secs(15), "generation 2's warning", gw, || {
        ignored(&ns, "web", "rewrite-target").len() == 2
    })
    .await;

    // An address someone else sets on a refused Ingress is theirs.
    hand_edit(&ns, "web", "192.0.2.77");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(addresses(&ns, "web"), r#"[{"ip":"192.0.2.77"}]"#, "{}", gw.logs());
    assert_eq!(addresses(&ns, "mover"), r#"[{"ip":"192.0.2.50"}]"#, "{}", gw.logs());
    assert_eq!(addresses(&ns, "theirs"), "");
    assert!(!gw.logs().contains("status write failed"), "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_service_external_ips_then_cluster_ip_from_the_lease_holder_only() {
    let cp = control_plane();
    let ns = cp.namespace("ing-publish");
    let logs = tempfile::tempdir().unwrap();
    cp.apply(&ns, &ingress_class("sse-publish", CONTROLLER));
    cp.apply(
        &ns,
        "apiVersion: v1\nkind: Service\nmetadata: {name: front}\nspec:\n  ports: [{name: http, port: 80}]\n  externalIPs: [192.0.2.20]\n",
    );
    cp.apply(&ns, &ingress("app", "sse-publish", "", "/", "Prefix"));
    let service = format!("{ns}/front");
    let replicas = [
        controller(&ns, "pub-1", &["--publish-service", &service], logs.path()).await,
        controller(&ns, "pub-2", &["--publish-service", &service], logs.path()).await,
    ];
    let gw = &replicas[0];

    eventually(Duration::from_secs(15), "the Service's external IP", gw, || {
        addresses(&ns, "app") == r#"[{"ip":"192.0.2.20"}]"#
    })
    .await;

    // The Service changes: the Ingress follows, without any Ingress change.
    cp.kubectl_ok(&[
        "patch",
        "-n",
        &ns,
        "service/front",
        "--type=merge",
        "-p",
        r#"{"spec":{"externalIPs":["192.0.2.21","192.0.2.22"]}}"#,
    ]);
    eventually(Duration::from_secs(15), "the new external IPs", gw, || {
        addresses(&ns, "app") == r#"[{"ip":"192.0.2.21"},{"ip":"192.0.2.22"}]"#
    })
    .await;

    // No external IPs: the cluster IP.
    cp.kubectl_ok(&[
        "patch",
        "-n",
        &ns,
        "service/front",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/externalIPs"}]"#,
    ]);
    let cluster_ip = cp.get(&ns, "service/front", "{.spec.clusterIP}");
    assert!(cluster_ip.starts_with("10.96."), "{cluster_ip}");
    eventually(Duration::from_secs(15), "the cluster IP", gw, || {
        addresses(&ns, "app") == format!(r#"[{{"ip":"{cluster_ip}"}}]"#)
    })
    .await;
    let managers = cp.kubectl_ok(&[
        "get",
        "-n",
        &ns,
        "ingress/app",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[?(@.subresource==\"status\")].manager}",
    ]);
    assert_eq!(managers, "ssegate");

    // Only the lease holder wrote (there are no Routes here: every write
    // counted is an Ingress status write).
    let holder = cp.get(&ns, "lease/ssegate-status", "{.spec.holderIdentity}");
    for (i, replica) in replicas.iter().enumerate() {
        let status = replica.admin_json("/debug/status").await;
        let writes = status["statusWrites"].as_u64().unwrap();
        if holder == format!("pub-{}", i + 1) {
            assert!(writes >= 3, "{status}");
        } else {
            assert_eq!(writes, 0, "a replica without the lease wrote status: {status}");
        }
    }
}
