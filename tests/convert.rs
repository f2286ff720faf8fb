//! `ssegate convert`, the real binary: Ingress YAML from a file or stdin
//! to Routes on stdout, nothing and exit status 1 for what cannot be
//! converted, and a round trip: standalone mode serving the Ingress and
//! serving the converted Routes route every request alike.

mod common;

use common::process::Ssegate;
use common::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tokio::time::Instant;

const INGRESS: &str = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: sse
  namespace: default
  annotations:
    nginx.ingress.kubernetes.io/proxy-buffering: "off"
    nginx.ingress.kubernetes.io/proxy-read-timeout: "3600"
spec:
  rules:
    - host: events.example.com
      http:
        paths:
          - path: /events
            pathType: Prefix
            backend: {service: {name: events, port: {number: 80}}}
"#;

const ROUTE: &str = r#"---
# Converted from Ingress default/sse by ssegate convert.
# nginx.ingress.kubernetes.io/proxy-buffering: applied as proxyBuffering: Disabled
# nginx.ingress.kubernetes.io/proxy-read-timeout: applied as timeouts.idle: 3600s (the longest silence between upstream bytes, not a cap on the stream)
apiVersion: ssegate.dev/v1alpha1
kind: Route
metadata:
  name: sse
  namespace: default
spec:
  hostnames:
  - events.example.com
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /events
    backendRefs:
    - name: events
      port: 80
      weight: 1
  proxyBuffering: Disabled
  timeouts:
    idle: 3600s
"#;

/// Runs `ssegate ARGS` with `stdin`, within a deadline.
fn ssegate(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssegate"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ssegate {args:?} did not finish within 30s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn converts_a_file_and_stdin_alike() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ingress.yaml");
    std::fs::write(&file, INGRESS).unwrap();

    for (args, stdin) in [
        (vec!["convert", file.to_str().unwrap()], ""),
        (vec!["convert", "-"], INGRESS),
        (vec!["convert"], INGRESS),
    ] {
        let out = ssegate(&args, stdin);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), ROUTE, "{args:?}");
        assert_eq!(
            text(&out.stderr),
            "ssegate convert: 1 Ingress(es) into 1 Route(s); 0 other document(s) passed through unchanged\n"
        );
    }
}

#[test]
fn what_cannot_be_converted_prints_nothing_and_exits_1() {
    // A regular-expression path, and a named port without its Service.
    let regex = INGRESS.replace(
        "path: /events\n            pathType: Prefix",
        "path: /events/(.*)\n            pathType: ImplementationSpecific",
    );
    let named = INGRESS.replace("port: {number: 80}", "port: {name: http}");
    for (input, expected) in [
        (
            regex,
            "error: -: document 2: Ingress default/sse: spec.rules[0].http.paths[0].path: \"/events/(.*)\" reads as a regular expression",
        ),
        (
            named,
            "error: -: document 2: Ingress default/sse: spec.rules[0].http.paths[0].backend.service.port.name: \"http\" is a named port, and a Route needs its number: Service default/events is not in the input",
        ),
    ] {
        // The good Ingress alongside is not printed either: all or nothing.
        let out = ssegate(&["convert"], &format!("{INGRESS}---\n{input}"));
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
        assert!(stderr.contains("1 problem(s); nothing converted"), "{stderr}");
    }

    let out = ssegate(&["convert", "/nonexistent/ingress.yaml"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("/nonexistent/ingress.yaml cannot read"),
        "{}",
        text(&out.stderr)
    );
}

/// Every match standalone mode serves, with the endpoints behind it, but
/// not which object serves it (the names differ by design).
async fn served_matches(gw: &Ssegate) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let table = gw.admin_json("/debug/routes").await;
        let mut out = Vec::new();
        for host in table["hosts"].as_array().into_iter().flatten() {
            for m in host["matches"].as_array().into_iter().flatten() {
                let endpoints: Vec<_> = m["backends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| (b["weight"].clone(), b["endpoints"].clone()))
                    .collect();
                out.push(serde_json::json!([
                    host["host"],
                    m["kind"],
                    m["path"],
                    m["buffering"],
                    endpoints
                ]));
            }
        }
        let accepted = table["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|r| r["accepted"]["status"] == "True");
        if !out.is_empty() && accepted {
            return out;
        }
        assert!(Instant::now() < deadline, "nothing served: {table}\n{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn fetch(gw: &Ssegate, host: &str, path: &str) -> (u16, String) {
    let resp = client()
        .get(format!("{}{path}", gw.proxy))
        .header("host", host)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn standalone_serves_the_converted_routes_as_it_serves_the_ingress() {
    let events = Upstream::start("events").await;
    let api = Upstream::start("api").await;
    let fallback = Upstream::start("fallback").await;
    let backends = [
        backend_yaml("events", &[(events.addr, true)]),
        backend_yaml("api", &[(api.addr, true)]),
        backend_yaml("fallback", &[(fallback.addr, true)]),
    ]
    .join("---\n");
    // Two hosts, a rule without one, a named port, a defaultBackend, and
    // the path on both hosts that a default covers.
    let ingress = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: mixed
  annotations:
    nginx.ingress.kubernetes.io/proxy-buffering: "off"
spec:
  ingressClassName: ssegate
  defaultBackend: {service: {name: fallback, port: {number: 80}}}
  rules:
    - host: a.example.com
      http:
        paths:
          - {path: /events, pathType: Prefix, backend: {service: {name: events, port: {name: http}}}}
          - {path: /api, pathType: Exact, backend: {service: {name: api, port: {number: 80}}}}
    - host: b.example.com
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
    - http:
        paths:
          - {path: /open, pathType: ImplementationSpecific, backend: {service: {name: events, port: {number: 80}}}}
"#;
    let as_ingress = tempfile::tempdir().unwrap();
    let as_routes = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let write = |dir: &Path, name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    write(as_ingress.path(), "backends.yaml", &backends);
    write(as_ingress.path(), "ingress.yaml", ingress);

    // The converted file replaces both: the backends pass through.
    let input = format!("{backends}---\n{ingress}");
    let out = ssegate(&["convert"], &input);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let converted = text(&out.stdout);
    assert_eq!(converted.matches("kind: Route\n").count(), 3, "{converted}");
    assert_eq!(converted.matches("kind: EndpointSlice\n").count(), 3, "{converted}");
    write(as_routes.path(), "converted.yaml", &converted);

    let by_ingress = Ssegate::start(
        &["standalone", "--dir", as_ingress.path().to_str().unwrap()],
        logs.path(),
    )
    .await;
    let by_routes = Ssegate::start(
        &["standalone", "--dir", as_routes.path().to_str().unwrap()],
        logs.path(),
    )
    .await;
    let served = served_matches(&by_ingress).await;
    assert_eq!(served.len(), 6, "{served:?}");
    assert_eq!(served, served_matches(&by_routes).await);

    let requests = [
        ("a.example.com", "/events/1", "upstream events"),
        ("a.example.com", "/api", "upstream api"),
        ("a.example.com", "/api/x", "upstream fallback"),
        ("a.example.com", "/open", "upstream fallback"),
        ("b.example.com", "/events", "upstream api"),
        ("elsewhere.test", "/open/x", "upstream events"),
        ("elsewhere.test", "/x", "upstream fallback"),
    ];
    for (host, path, expected) in requests {
        let a = fetch(&by_ingress, host, path).await;
        assert_eq!(a, (200, expected.to_owned()), "{host}{path} as an Ingress");
        assert_eq!(fetch(&by_routes, host, path).await, a, "{host}{path} as Routes");
    }
    assert!(!by_routes.logs().contains("Ingress"), "{}", by_routes.logs());
}
