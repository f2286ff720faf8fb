//! The Helm chart, the plain install manifest and the examples, against the
//! real control plane: install, upgrade, and RBAC that is enough and no more.

mod common;

use common::cluster::{control_plane, NetnsBackend};
use common::process::Ssegate;
use common::*;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn helm(args: &[&str]) -> Output {
    let bin = std::env::var("SSEGATE_BIN").map(PathBuf::from).unwrap_or_else(|_| {
        let cache =
            std::env::var("XDG_CACHE_HOME").unwrap_or_else(|_| format!("{}/.cache", std::env::var("HOME").unwrap()));
        PathBuf::from(cache).join("ssegate/bin")
    });
    let mut c = Command::new(bin.join("helm"));
    c.args(args).current_dir(ROOT);
    if let Some(cp) = common::cluster::started() {
        c.env("KUBECONFIG", &cp.kubeconfig);
    }
    c.output().expect("helm is built by scripts/control-plane.sh build")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn chart_crd_is_the_generated_crd() {
    for file in ["routes.ssegate.dev.yaml", "streampolicies.ssegate.dev.yaml"] {
        let chart = std::fs::read_to_string(format!("{ROOT}/charts/ssegate/crds/{file}")).unwrap();
        let generated = std::fs::read_to_string(format!("{ROOT}/crds/{file}")).unwrap();
        assert!(
            chart == generated,
            "charts/ssegate/crds is stale: cp crds/{file} charts/ssegate/crds/"
        );
    }
}

#[test]
fn helm_lint_is_clean() {
    let out = ok(helm(&["lint", "--strict", "charts/ssegate"]), "helm lint");
    assert!(out.contains("0 chart(s) failed"), "{out}");
    // values.schema.json refuses a bad value.
    let out = helm(&["template", "x", "charts/ssegate", "--set", "service.type=Internal"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("service/type"));
}

#[test]
fn chart_without_secret_access_grants_none_and_says_so() {
    let render = |set: &[&str]| {
        let mut args = vec!["template", "t", "charts/ssegate"];
        for s in set {
            args.extend(["--set", s]);
        }
        ok(helm(&args), "helm template")
    };
    let default = render(&[]);
    assert!(default.contains("resources: [\"secrets\"]"));
    assert!(default.contains("--tls-secrets=true"));
    assert!(default.contains("--listen-tls=0.0.0.0:8443"));
    assert!(!default.contains("kind: ServiceMonitor"));
    let without = render(&["tls.secrets=false", "tls.enabled=false"]);
    assert!(!without.contains("secrets\"]"), "{without}");
    assert!(without.contains("--tls-secrets=false"));
    assert!(!without.contains("--listen-tls"));
    let monitored = render(&["metrics.serviceMonitor.enabled=true"]);
    assert!(monitored.contains("kind: ServiceMonitor"));
    assert!(monitored.contains("path: /metrics"));
}

#[test]
fn chart_ingress_class_and_ingress_flags_follow_values() {
    let render = |set: &[&str]| {
        let mut args = vec!["template", "t", "charts/ssegate", "--namespace", "edge"];
        for s in set {
            args.extend(["--set", s]);
        }
        ok(helm(&args), "helm template")
    };
    let default = render(&[]);
    assert!(
        default.contains("kind: IngressClass\nmetadata:\n  name: ssegate\n"),
        "{default}"
    );
    assert!(default.contains(&format!(
        "controller: {}\n",
        ssegate::translate::ingress_class::CONTROLLER
    )));
    assert!(!default.contains("is-default-class"));
    assert!(default.contains("- --ingress-class=ssegate\n"));
    assert!(default.contains("- --https-redirect-port=443\n"));
    assert!(default.contains("- --publish-service=edge/t-ssegate\n"));
    assert!(!default.contains("--publish-status-address"));
    assert!(!default.contains("--watch-ingress-without-class"));
    assert!(default.contains("resources: [\"ingresses/status\"]\n    verbs: [\"patch\"]"));

    let custom = render(&[
        "ingressClass.name=sse",
        "ingressClass.default=true",
        "controller.publishStatusAddress=192.0.2.1\\,lb.example.com",
        "controller.watchIngressWithoutClass=true",
        "service.httpsPort=8443",
        "controller.claimIngressClasses={nginx,legacy}",
    ]);
    assert!(custom.contains("  name: sse\n"));
    assert!(custom.contains("ingressclass.kubernetes.io/is-default-class: \"true\""));
    assert!(custom.contains("- --ingress-class=sse\n"));
    assert!(custom.contains("- --https-redirect-port=8443\n"));
    assert!(custom.contains("- --publish-status-address=192.0.2.1,lb.example.com\n"));
    assert!(!custom.contains("--publish-service"), "the fixed address wins");
    assert!(custom.contains("- --watch-ingress-without-class\n"));
    assert!(custom.contains("- --claim-ingress-class=nginx,legacy\n"));
    assert!(!default.contains("--claim-ingress-class"));

    let bare = render(&["ingressClass.create=false", "controller.publishService=false"]);
    assert!(!bare.contains("kind: IngressClass"));
    assert!(!bare.contains("--publish-"));
    assert!(bare.contains("- --ingress-class=ssegate\n"));
}

#[test]
fn install_manifest_is_rendered_from_the_chart() {
    let out = Command::new(format!("{ROOT}/scripts/render-install.sh"))
        .output()
        .unwrap();
    let rendered = ok(out, "render-install.sh");
    let committed = std::fs::read_to_string(format!("{ROOT}/manifests/install.yaml")).unwrap();
    assert!(
        rendered == committed,
        "manifests/install.yaml is stale: scripts/render-install.sh > manifests/install.yaml"
    );
}

#[test]
fn install_manifest_and_examples_pass_apiserver_validation() {
    let cp = control_plane();
    let install = format!("{ROOT}/manifests/install.yaml");
    // A server dry run needs the namespace to exist for real.
    let _ = cp.kubectl(&["create", "namespace", "ssegate-system"], None);
    // Cluster-scoped objects (the IngressClass) may already be owned by the
    // chart another test installed: a dry run may take them over.
    ok(
        cp.kubectl(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--dry-run=server",
                "-f",
                &install,
            ],
            None,
        ),
        "dry-run install.yaml",
    );
    let ns = cp.namespace("examples");
    for example in ["demo.yaml", "auto.yaml", "enabled.yaml"] {
        let path = format!("{ROOT}/manifests/examples/{example}");
        ok(cp.kubectl(&["apply", "-n", &ns, "-f", &path], None), example);
    }
    let routes = cp.kubectl_ok(&[
        "get",
        "routes",
        "-n",
        &ns,
        "-o",
        "jsonpath={.items[*].spec.proxyBuffering}",
    ]);
    assert_eq!(routes, "Disabled Auto Enabled"); // demo, demo-auto, demo-enabled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn helm_install_upgrade_and_chart_rbac_is_enough_and_no_more() {
    let cp = control_plane();
    let release_ns = "ssegate-helm";
    // Its own release name, so its cluster-scoped RBAC does not meet install.yaml's.
    let release = "ssegate-helm";
    ok(
        helm(&[
            "install",
            release,
            "charts/ssegate",
            "-n",
            release_ns,
            "--create-namespace",
        ]),
        "helm install",
    );
    ok(
        helm(&[
            "upgrade",
            release,
            "charts/ssegate",
            "-n",
            release_ns,
            "--set",
            "replicaCount=3",
        ]),
        "helm upgrade",
    );
    assert_eq!(cp.get(release_ns, "deployment/ssegate-helm", "{.spec.replicas}"), "3");
    assert_eq!(
        cp.get(
            release_ns,
            "deployment/ssegate-helm",
            "{.spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem}"
        ),
        "true"
    );

    // A kubeconfig whose only credential is the chart's ServiceAccount token.
    let token = cp.kubectl_ok(&["create", "token", release, "-n", release_ns, "--duration=1h"]);
    let admin = std::fs::read_to_string(&cp.kubeconfig).unwrap();
    let ca = admin
        .lines()
        .find(|l| l.contains("certificate-authority-data"))
        .unwrap()
        .trim();
    let server = admin.lines().find(|l| l.contains("server:")).unwrap().trim();
    let dir = tempfile::tempdir().unwrap();
    let sa_kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &sa_kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    {server}\n    {ca}\nusers:\n- name: sa\n  user:\n    token: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: sa}}\ncurrent-context: c\n",
            token.trim()
        ),
    )
    .unwrap();
    let as_sa = |args: &[&str]| {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&sa_kubeconfig)
            .args(args)
            .output()
            .unwrap()
    };

    // Not broader than it should be: real calls, then the API's own verdicts.
    // Secrets are readable (TLS certificates), never writable.
    let out = as_sa(&[
        "create",
        "secret",
        "generic",
        "x",
        "-n",
        release_ns,
        "--from-literal=a=b",
    ]);
    assert!(!out.status.success(), "the chart's ServiceAccount may create Secrets");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_sa(&["get", "secrets", "-A", "--field-selector", "type=kubernetes.io/tls"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (args, expected) in [
        (vec!["update", "secrets", "-n", release_ns], "no"),
        (vec!["delete", "secrets", "-n", "default"], "no"),
        (vec!["watch", "secrets", "-A"], "yes"),
        (vec!["create", "services", "-n", "default"], "no"),
        (vec!["update", "services", "-n", "default"], "no"),
        (vec!["delete", "routes.ssegate.dev", "-n", "default"], "no"),
        (vec!["update", "routes.ssegate.dev", "-n", "default"], "no"),
        (vec!["create", "namespaces"], "no"),
        (vec!["create", "leases.coordination.k8s.io", "-n", "default"], "no"),
        (vec!["create", "leases.coordination.k8s.io", "-n", release_ns], "yes"),
        (vec!["watch", "routes.ssegate.dev", "-A"], "yes"),
        (vec!["patch", "routes.ssegate.dev", "--subresource=status", "-A"], "yes"),
        (vec!["patch", "routes.ssegate.dev", "-A"], "no"),
        (vec!["list", "endpointslices.discovery.k8s.io", "-A"], "yes"),
        (vec!["watch", "ingresses.networking.k8s.io", "-A"], "yes"),
        (vec!["update", "ingresses.networking.k8s.io", "-n", "default"], "no"),
        (vec!["watch", "ingressclasses.networking.k8s.io"], "yes"),
        (vec!["create", "ingressclasses.networking.k8s.io"], "no"),
        (
            vec!["patch", "ingresses.networking.k8s.io", "--subresource=status", "-A"],
            "yes",
        ),
        (
            vec!["update", "ingresses.networking.k8s.io", "--subresource=status", "-A"],
            "no",
        ),
        (vec!["patch", "ingresses.networking.k8s.io", "-A"], "no"),
        (vec!["watch", "httproutes.gateway.networking.k8s.io", "-A"], "yes"),
        (vec!["watch", "referencegrants.gateway.networking.k8s.io", "-A"], "yes"),
        (
            vec![
                "patch",
                "httproutes.gateway.networking.k8s.io",
                "--subresource=status",
                "-A",
            ],
            "yes",
        ),
        (
            vec![
                "update",
                "httproutes.gateway.networking.k8s.io",
                "--subresource=status",
                "-A",
            ],
            "no",
        ),
        (vec!["patch", "httproutes.gateway.networking.k8s.io", "-A"], "no"),
        (
            vec![
                "patch",
                "gatewayclasses.gateway.networking.k8s.io",
                "--subresource=status",
            ],
            "yes",
        ),
        (
            vec!["update", "gateways.gateway.networking.k8s.io", "-n", "default"],
            "no",
        ),
        (
            vec!["create", "referencegrants.gateway.networking.k8s.io", "-n", "default"],
            "no",
        ),
        (vec!["watch", "namespaces"], "yes"),
        (vec!["update", "namespaces"], "no"),
    ] {
        let mut full = vec!["auth", "can-i"];
        full.extend(&args);
        let out = as_sa(&full);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected, "can-i {args:?}");
    }

    // The whole grant, not a sample: every rule the token has, in the release
    // namespace (where the Lease Role adds its verbs) and in any other.
    let listing = |ns: &str| -> Vec<String> {
        let out = as_sa(&["auth", "can-i", "--list", "-n", ns]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut rules: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|l| !l.is_empty())
            .collect();
        rules.sort();
        rules
    };
    let cluster_wide = [
        "endpointslices.discovery.k8s.io [] [] [get list watch]",
        "events.events.k8s.io [] [] [create patch]",
        "gatewayclasses.gateway.networking.k8s.io/status [] [] [patch]",
        "gatewayclasses.gateway.networking.k8s.io [] [] [get list watch]",
        "gateways.gateway.networking.k8s.io/status [] [] [patch]",
        "gateways.gateway.networking.k8s.io [] [] [get list watch]",
        "httproutes.gateway.networking.k8s.io/status [] [] [patch]",
        "httproutes.gateway.networking.k8s.io [] [] [get list watch]",
        "ingressclasses.networking.k8s.io [] [] [get list watch]",
        "ingresses.networking.k8s.io/status [] [] [patch]",
        "ingresses.networking.k8s.io [] [] [get list watch]",
        "namespaces [] [] [get list watch]",
        "referencegrants.gateway.networking.k8s.io [] [] [get list watch]",
        "routes.ssegate.dev/status [] [] [patch]",
        "routes.ssegate.dev [] [] [get list watch]",
        "secrets [] [] [get list watch]",
        "services [] [] [get list watch]",
        "streampolicies.ssegate.dev/status [] [] [patch]",
        "streampolicies.ssegate.dev [] [] [get list watch]",
    ];
    // What every authenticated identity gets from the apiserver's defaults.
    let discovery = [
        "clustertrustbundles.certificates.k8s.io [] [] [get list watch]",
        "selfsubjectreviews.authentication.k8s.io [] [] [create]",
        "selfsubjectaccessreviews.authorization.k8s.io [] [] [create]",
        "selfsubjectrulesreviews.authorization.k8s.io [] [] [create]",
        "[/.well-known/openid-configuration/] [] [get]",
        "[/.well-known/openid-configuration] [] [get]",
        "[/api/*] [] [get]",
        "[/api] [] [get]",
        "[/apis/*] [] [get]",
        "[/apis] [] [get]",
        "[/healthz] [] [get]",
        "[/healthz] [] [get]",
        "[/livez] [] [get]",
        "[/livez] [] [get]",
        "[/openapi/*] [] [get]",
        "[/openapi] [] [get]",
        "[/openid/v1/jwks/] [] [get]",
        "[/openid/v1/jwks] [] [get]",
        "[/readyz] [] [get]",
        "[/readyz] [] [get]",
        "[/version/] [] [get]",
        "[/version/] [] [get]",
        "[/version] [] [get]",
        "[/version] [] [get]",
    ];
    let expect = |extra: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = cluster_wide
            .iter()
            .chain(discovery.iter())
            .chain(extra.iter())
            .map(|s| s.to_string())
            .collect();
        all.sort();
        all
    };
    assert_eq!(
        listing(release_ns),
        expect(&["leases.coordination.k8s.io [] [] [get create update]"]),
        "the chart's grant in its own namespace"
    );
    assert_eq!(listing("default"), expect(&[]), "the chart's grant elsewhere");

    // Enough: the controller runs on that token alone, serves SSE and writes status.
    let ns = cp.namespace("chart-rbac");
    let backend = NetnsBackend::start("pod-rbac").await;
    cp.apply(&ns, &backend.service_yaml("demo"));
    cp.apply(&ns, "apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {name: demo}\nspec:\n  hostnames: [rbac.test]\n  proxyBuffering: Disabled\n  rules: [{backendRefs: [{name: demo, port: 80}]}]\n");
    // An Ingress of the chart's IngressClass, with an annotation ssegate ignores.
    assert_eq!(
        cp.kubectl_ok(&["get", "ingressclass/ssegate", "-o", "jsonpath={.spec.controller}"]),
        ssegate::translate::ingress_class::CONTROLLER
    );
    cp.apply(&ns, "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\n  annotations: {nginx.ingress.kubernetes.io/rewrite-target: /}\nspec:\n  ingressClassName: ssegate\n  rules: [{host: ing.rbac.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: demo, port: {number: 80}}}}]}}]\n");
    let args = [
        "controller",
        "--kubeconfig",
        sa_kubeconfig.to_str().unwrap(),
        "--lease-namespace",
        release_ns,
        "--lease-name",
        "ssegate-status",
        // Data only, never connected to.
        "--publish-status-address=192.0.2.30",
    ];
    let gw = Ssegate::start(&args, dir.path()).await;
    let resp = client()
        .get(format!("{}/.sse?interval=100ms&count=2", gw.proxy))
        // Other tests' Routes (the examples) share this apiserver: pick ours by host.
        .header("host", "rbac.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(read_stream(resp, usize::MAX).await.events.len(), 4);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while cp.get(
        &ns,
        "route/demo",
        "{.status.conditions[?(@.type==\"Accepted\")].status}",
    ) != "True"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "status never written with the chart's RBAC:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while cp.get(&ns, "ingress/web", "{.status.loadBalancer.ingress[0].ip}") != "192.0.2.30"
        || !cp
            .kubectl_ok(&["get", "events.events.k8s.io", "-n", &ns, "-o", "json"])
            .contains("AnnotationIgnored")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "Ingress status or Event never written with the chart's RBAC:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!gw.logs().contains("forbidden"), "{}", gw.logs());
}

#[test]
fn the_chart_installs_the_pinned_gateway_api_crds_only_when_asked_and_keeps_them() {
    let dir = format!("{ROOT}/crds/gateway-api");
    let mut pinned: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    pinned.sort();
    for name in &pinned {
        let chart = std::fs::read_to_string(format!("{ROOT}/charts/ssegate/gateway-api/{name}")).unwrap();
        let source = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
        assert!(
            chart == source,
            "charts/ssegate/gateway-api/{name} is stale: cp crds/gateway-api/*.yaml charts/ssegate/gateway-api/"
        );
    }
    let render = |set: &[&str]| {
        let mut args = vec!["template", "t", "charts/ssegate"];
        for s in set {
            args.extend(["--set", s]);
        }
        ok(helm(&args), "helm template")
    };
    let crds = |text: &str| -> Vec<serde_yaml::Value> {
        text.split("\n---\n")
            .filter_map(|d| serde_yaml::from_str::<serde_yaml::Value>(d).ok())
            .filter(|v| v["kind"] == "CustomResourceDefinition")
            .collect()
    };
    assert!(crds(&render(&[])).is_empty(), "not installed by default");
    let installed = crds(&render(&["gatewayAPI.installCRDs=true"]));
    assert_eq!(installed.len(), pinned.len());
    for crd in &installed {
        let name = crd["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{name}"
        );
        let file = pinned
            .iter()
            .find(|f| f.contains(name.split('.').next().unwrap()))
            .unwrap();
        let source: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(format!("{dir}/{file}")).unwrap()).unwrap();
        assert_eq!(crd["spec"], source["spec"], "{name}: the spec as pinned");
        assert_eq!(
            crd["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"],
            "v1.6.3"
        );
    }
}
