//! `crds/` is generated from the Rust types; this fails when it is stale.
//! And the StreamPolicy CRD's CEL rules, against a real apiserver.

mod common;

use common::cluster::control_plane;
use kube::CustomResourceExt;

#[test]
fn crd_file_matches_the_rust_types() {
    let generated = serde_yaml::to_string(&ssegate::api::Route::crd()).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/routes.ssegate.dev.yaml");
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        generated == on_disk,
        "crds/routes.ssegate.dev.yaml is stale; regenerate it with:\n  cargo run -- crd > crds/routes.ssegate.dev.yaml"
    );
}

#[test]
fn stream_policy_crd_file_matches_the_rust_types() {
    let generated = serde_yaml::to_string(&ssegate::api::StreamPolicy::crd()).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/streampolicies.ssegate.dev.yaml");
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        generated == on_disk,
        "crds/streampolicies.ssegate.dev.yaml is stale; regenerate it with:\n  cargo run -- crd --kind StreamPolicy > crds/streampolicies.ssegate.dev.yaml"
    );
}

fn policy(name: &str, spec: &str) -> String {
    format!("apiVersion: ssegate.dev/v1alpha1\nkind: StreamPolicy\nmetadata: {{name: {name}}}\nspec:\n{spec}")
}

/// What `kubectl apply` refuses, with the messages standalone validation
/// uses (`StreamPolicySpec::validate`), and what it takes.
#[test]
fn stream_policy_cel_rules_refuse_bad_policies_at_admission() {
    let cp = control_plane();
    let crd = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/streampolicies.ssegate.dev.yaml");
    cp.kubectl_ok(&["apply", "--server-side", "-f", crd]);
    cp.kubectl_ok(&[
        "wait",
        "--for=condition=established",
        "crd/streampolicies.ssegate.dev",
        "--timeout=60s",
    ]);
    let ns = cp.namespace("policy-cel");
    let refused = |yaml: String| -> String {
        let out = cp.kubectl(&["apply", "-n", &ns, "-f", "-"], Some(&yaml));
        assert!(!out.status.success(), "accepted:\n{yaml}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(policy(
        "bad",
        "  targetRefs:\n  - {group: \"\", kind: Service, name: svc}\n  - {group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: http}\n  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}\n  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}\n  bufferSize: 1Gi\n  timeouts: {connect: 0s}\n  sse: {heartbeatInterval: 10ms, resume: {enabled: true, budget: 90s}}\n",
    ));
    for expected in [
        "spec.targetRefs[0]: Invalid value: targetRefs may name only an HTTPRoute or a Gateway of group gateway.networking.k8s.io",
        "spec.targetRefs[1]: Invalid value: sectionName (a listener) is not supported on a Gateway target",
        "spec.targetRefs: Invalid value: each target may be listed once",
        "spec.bufferSize: Invalid value: \"1Gi\": bufferSize must be a whole number of bytes from 1Ki to 16Mi",
        "spec.timeouts.connect: Invalid value: \"0s\": must be greater than 0s",
        "spec.sse.heartbeatInterval: Invalid value: \"10ms\": heartbeatInterval must be at least 100ms",
        "spec.sse.resume.budget: Invalid value: \"90s\": budget must be between 100ms and 60s",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    let err = refused(policy(
        "rule-streams",
        "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, sectionName: events}]\n  maxConcurrentStreams: 10\n",
    ));
    assert!(err.contains("maxConcurrentStreams limits whole HTTPRoutes"), "{err}");
    let err = refused(policy(
        "rebalance-alone",
        "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]\n  sse: {rebalance: {enabled: true}}\n",
    ));
    assert!(
        err.contains("spec.sse.rebalance: Invalid value: needs sse.resume"),
        "{err}"
    );
    let err = refused(policy("no-targets", "  targetRefs: []\n  proxyBuffering: Enabled\n"));
    assert!(
        err.contains("spec.targetRefs: Invalid value: 0: spec.targetRefs in body should have at least 1 items"),
        "{err}"
    );
    let err = refused(policy(
        "buffering-on",
        "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]\n  proxyBuffering: On\n",
    ));
    assert!(err.contains("Unsupported value"), "{err}");
    // A target names no namespace: the policy's own (strict field validation).
    let err = refused(policy(
        "elsewhere",
        "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, namespace: other}]\n",
    ));
    assert!(err.contains("unknown field \"spec.targetRefs[0].namespace\""), "{err}");

    cp.apply(
        &ns,
        &policy(
            "good",
            "  targetRefs:\n  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, sectionName: events}\n  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}\n  - {group: gateway.networking.k8s.io, kind: Gateway, name: gw}\n  proxyBuffering: Disabled\n  bufferSize: 64Ki\n  timeouts: {idle: 0s}\n  sse: {heartbeatInterval: 15s, maxStreamDuration: 1h, resume: {enabled: true, maxAttempts: 5}, rebalance: {enabled: true}}\n  loadBalancing: RoundRobin\n",
        ),
    );
    let table = cp.kubectl_ok(&["get", "ssep", "-n", &ns]);
    assert!(
        table.starts_with("NAME") && table.contains("TARGETS") && table.contains("Disabled"),
        "{table}"
    );
}
