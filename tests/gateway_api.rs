//! Gateway API objects served from a folder by the in-process gateway and
//! read by a real HTTP client: an HTTPRoute streams events through a
//! Gateway of ssegate's class, with header matches, header modifiers both
//! ways, a prefix rewrite, a redirect, weighted backends where a missing
//! Service answers its share with 500, and routes the Gateway refuses.

mod common;

use common::*;

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: ssegate}
spec: {controllerName: ssegate.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: ssegate
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: \"*.example.com\"}
";

fn http_route(name: &str, spec: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\nspec:\n  parentRefs: [{{name: gw}}]\n{spec}")
}

async fn setup(route_spec: &str) -> (Upstream, Gateway) {
    let up = Upstream::start("u1").await;
    let gw = Gateway::start().await;
    gw.write("backend.yaml", &backend_yaml("svc", &[(up.addr, true)]));
    gw.write("gateway.yaml", GATEWAY);
    gw.write("route.yaml", &http_route("events", route_spec));
    (up, gw)
}

#[tokio::test]
async fn an_httproute_streams_events_with_its_matches_filters_and_rewrite() {
    let (up, gw) = setup(
        "  hostnames: [live.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /events}, headers: [{name: X-Tenant, value: a}]}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-from, value: gateway}], remove: [x-drop]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: x-served-by, value: ssegate}]}
    - type: URLRewrite
      urlRewrite: {hostname: backend.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    backendRefs: [{name: svc, port: 80}]
  - matches: [{path: {type: Exact, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: new.example.com, statusCode: 301}
",
    )
    .await;
    let resp = client()
        .get(gw.url("/events/sse?tag=gw&n=4&every=100"))
        .header("host", "live.example.com")
        .header("x-tenant", "a")
        .header("x-drop", "secret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-served-by"], "ssegate");
    let got = read_stream(resp, usize::MAX).await;
    assert_eq!(got.events.len(), 4, "{:?}", got.error);
    // Event by event (Auto streams event streams) on the rewritten path.
    let emits = up.emits("gw");
    for i in 0..3 {
        assert!(got.events[i].1 < emits[i + 1], "event {} was held back", i + 1);
    }
    let seen = up.headers("gw");
    assert_eq!(seen["x-from"], "gateway");
    assert_eq!(seen["host"], "backend.internal", "URLRewrite's hostname");
    assert_eq!(
        seen["x-forwarded-host"], "live.example.com",
        "the client's host, forwarded"
    );
    assert!(seen.get("x-drop").is_none());

    // Without the header the match fails: nothing else serves /events.
    let resp = client()
        .get(gw.url("/events/sse?tag=nohdr&n=1"))
        .header("host", "live.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // Another host under the listener's wildcard, but not the route's.
    let resp = client()
        .get(gw.url("/events/sse?n=1"))
        .header("host", "other.example.com")
        .header("x-tenant", "a")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects
        .get(gw.url("/old?q=1"))
        .header("host", "live.example.com:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "https://new.example.com/old?q=1");
}

#[tokio::test]
async fn a_missing_backend_answers_its_weighted_share_with_500() {
    let (_up, gw) = setup(
        "  hostnames: [w.example.com]
  rules:
  - backendRefs: [{name: svc, port: 80, weight: 1}, {name: missing, port: 80, weight: 1}]
",
    )
    .await;
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..20 {
        let status = client()
            .get(gw.url("/json?n=1"))
            .header("host", "w.example.com")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        *counts.entry(status).or_insert(0) += 1;
    }
    assert_eq!(counts, std::collections::BTreeMap::from([(200, 10), (500, 10)]));
    let report = gw.table();
    let report = report.reports.iter().find(|r| r.key.name == "events").unwrap();
    assert_eq!(report.resolved_refs.reason, "BackendNotFound");
}

#[tokio::test]
async fn routes_the_gateway_refuses_are_reported_and_not_served() {
    let up = Upstream::start("u1").await;
    let gw = Gateway::start().await;
    gw.write("backend.yaml", &backend_yaml("svc", &[(up.addr, true)]));
    gw.write("gateway.yaml", GATEWAY);
    let problems = gw.write_allowing_errors(
        "route.yaml",
        &http_route(
            "elsewhere",
            "  hostnames: [site.org]\n  rules: [{backendRefs: [{name: svc, port: 80}]}]\n",
        ),
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("HTTPRoute default/elsewhere is not attached to Gateway gw")
            && problems[0].contains("NoMatchingListenerHostname"),
        "{problems:?}"
    );
    let resp = client()
        .get(gw.url("/json?n=1"))
        .header("host", "site.org")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn timeouts_request_cuts_even_a_lively_stream_and_0s_disables_it() {
    let (_up, gw) = setup(
        "  hostnames: [t.example.com]
  rules:
  - matches: [{path: {value: /capped}}]
    timeouts: {request: 1s}
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]
    backendRefs: [{name: svc, port: 80}]
  - matches: [{path: {value: /free}}]
    timeouts: {request: 0s}
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]
    backendRefs: [{name: svc, port: 80}]
",
    )
    .await;
    // Ten events 300 ms apart: cut after about a second, mid-stream.
    let started = tokio::time::Instant::now();
    let resp = client()
        .get(gw.url("/capped/sse?n=10&every=300"))
        .header("host", "t.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = read_stream(resp, usize::MAX).await;
    let took = started.elapsed();
    assert!((3..=5).contains(&got.events.len()), "{} events", got.events.len());
    assert!(got.error.is_some(), "a cut, not a clean end");
    assert!(
        took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(3),
        "{took:?}"
    );

    let resp = client()
        .get(gw.url("/free/sse?n=6&every=300"))
        .header("host", "t.example.com")
        .send()
        .await
        .unwrap();
    let got = read_stream(resp, usize::MAX).await;
    assert_eq!(got.events.len(), 6);
    assert!(got.error.is_none());
}

#[tokio::test]
async fn the_cors_filter_answers_preflights_for_its_rule_only() {
    let (_up, gw) = setup(
        "  hostnames: [c.example.com]
  rules:
  - matches: [{path: {value: /sse}}]
    filters:
    - type: CORS
      cors: {allowOrigins: [\"https://app.example.com\"], allowMethods: [GET], maxAge: 600}
    backendRefs: [{name: svc, port: 80}]
  - matches: [{path: {value: /json}}]
    backendRefs: [{name: svc, port: 80}]
",
    )
    .await;
    let preflight = |path: &str| {
        client()
            .request(reqwest::Method::OPTIONS, gw.url(path))
            .header("host", "c.example.com")
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "GET")
            .send()
    };
    let resp = preflight("/sse").await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(resp.headers()["access-control-max-age"], "600");
    let resp = preflight("/json").await.unwrap();
    assert!(
        resp.headers().get("access-control-allow-origin").is_none(),
        "no CORS on the other rule"
    );
}

#[tokio::test]
async fn a_stream_policy_on_the_httproute_buffers_new_requests_and_detaching_it_streams_again() {
    let (up, gw) = setup(
        "  hostnames: [p.example.com]
  rules:
  - backendRefs: [{name: svc, port: 80}]
",
    )
    .await;
    let get = |tag: &str| {
        client()
            .get(gw.url(&format!("/sse?tag={tag}&n=6&every=100")))
            .header("host", "p.example.com")
            .send()
    };
    // A stream opened before the policy, still running when it attaches.
    let open = tokio::spawn(read_stream(get("open").await.unwrap(), usize::MAX));
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    gw.write(
        "policy.yaml",
        "apiVersion: ssegate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: buffered}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: events}]
  proxyBuffering: Enabled
",
    );
    let got = read_stream(get("on").await.unwrap(), usize::MAX).await;
    assert_eq!(got.events.len(), 6);
    assert!(got.events[0].1 > up.emits("on")[4], "Enabled holds the events back");
    let open = open.await.unwrap();
    assert_eq!(open.events.len(), 6);
    let emits = up.emits("open");
    for i in 0..5 {
        assert!(
            open.events[i].1 < emits[i + 1],
            "the open stream was held back at event {}",
            i + 1
        );
    }

    std::fs::remove_file(gw.dir.path().join("policy.yaml")).unwrap();
    gw.write("touch.yaml", "");
    let got = read_stream(get("off").await.unwrap(), usize::MAX).await;
    let emits = up.emits("off");
    for i in 0..5 {
        assert!(
            got.events[i].1 < emits[i + 1],
            "detached: event {} was held back",
            i + 1
        );
    }
}

#[test]
fn the_gateway_api_doc_lists_exactly_the_supported_features_the_gatewayclass_reports() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/gateway-api.md")).unwrap();
    let start = readme
        .find("The GatewayClass status lists these as `supportedFeatures`")
        .expect("docs/gateway-api.md's feature paragraph");
    let paragraph = &readme[start..start + readme[start..].find("\n\n").unwrap()];
    let after_colon = &paragraph[paragraph.find("step):").expect("the list after 'step):'")..];
    let mut listed: Vec<&str> = after_colon.split('`').skip(1).step_by(2).collect();
    listed.sort_unstable();
    let mut supported = ssegate::translate::gateway::SUPPORTED_FEATURES.to_vec();
    supported.sort_unstable();
    assert_eq!(listed, supported);
}

#[tokio::test]
async fn filters_apply_over_http2_too() {
    let (up, gw) = setup(
        "  hostnames: [h2.example.com]
  rules:
  - matches: [{path: {value: /events}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {add: [{name: x-from, value: gateway}]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-served-by, value: ssegate}]}
    - type: URLRewrite
      urlRewrite: {hostname: backend.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    backendRefs: [{name: svc, port: 80}]
",
    )
    .await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .resolve("h2.example.com", gw.addr)
        .build()
        .unwrap();
    let resp = h2
        .get(format!(
            "http://h2.example.com:{}/events/sse?tag=h2&n=2&every=50",
            gw.addr.port()
        ))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-served-by"], "ssegate");
    let got = read_stream(resp, usize::MAX).await;
    assert_eq!(got.events.len(), 2);
    let seen = up.headers("h2");
    assert_eq!(seen["x-from"], "gateway");
    assert_eq!(seen["host"], "backend.internal");
}

/// Four loopback ports in a row that are free now.
fn free_run_of_four() -> u16 {
    for _ in 0..50 {
        let first = free_port();
        if first < u16::MAX - 3 && (1..4).all(|i| std::net::TcpListener::bind(("127.0.0.1", first + i)).is_ok()) {
            return first;
        }
    }
    panic!("no four free ports in a row");
}

/// The conformance suite's HTTPRouteMultipleGateways, with each Gateway's
/// own ports bound as the binary binds them: ssegate started in standalone
/// mode by the library function the binary calls (`run::standalone`), a
/// route for `/shared` on both Gateways and one for `/` on each.
#[tokio::test]
async fn each_gateway_serves_its_own_routes_on_its_own_port() {
    use ssegate::model::PortRange;
    use ssegate::run::ServeConfig;
    let (v1, v2, v3) = (
        Upstream::start("v1").await,
        Upstream::start("v2").await,
        Upstream::start("v3").await,
    );
    // The single ports first: free_port hands out the ports after the
    // last it gave, so a call after the run of four would land in it.
    let shared_port = free_port();
    let admin_port = free_port();
    let first = free_run_of_four();
    let dir = tempfile::tempdir().unwrap();
    let mut files = vec![
        ("v1.yaml", backend_yaml("v1", &[(v1.addr, true)])),
        ("v2.yaml", backend_yaml("v2", &[(v2.addr, true)])),
        ("v3.yaml", backend_yaml("v3", &[(v3.addr, true)])),
    ];
    let mut gateways = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: ssegate}\nspec: {controllerName: ssegate.dev/gateway-controller}\n",
    );
    for g in ["g1", "g2"] {
        gateways.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {g}}}\nspec:\n  gatewayClassName: ssegate\n  listeners: [{{name: http, port: 80, protocol: HTTP}}]\n"
        ));
    }
    files.push(("gateways.yaml", gateways));
    let route = |name: &str, day: u8, parents: &str, path: &str, backend: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, creationTimestamp: \"2026-02-0{day}T00:00:00Z\"}}\nspec:\n  parentRefs: {parents}\n  rules: [{{matches: [{{path: {{type: PathPrefix, value: {path}}}}}], backendRefs: [{{name: {backend}, port: 80}}]}}]\n"
        )
    };
    files.push((
        "shared.yaml",
        route("shared", 1, "[{name: g1}, {name: g2}]", "/shared", "v1"),
    ));
    files.push(("one.yaml", route("one", 2, "[{name: g1}]", "/", "v2")));
    files.push(("two.yaml", route("two", 3, "[{name: g2}]", "/", "v3")));
    for (name, yaml) in &files {
        std::fs::write(dir.path().join(name), yaml).unwrap();
    }
    let config = ServeConfig {
        listen: format!("127.0.0.1:{shared_port}").parse().unwrap(),
        listen_tls: None,
        admin: format!("127.0.0.1:{admin_port}").parse().unwrap(),
        drain_delay: std::time::Duration::ZERO,
        drain_timeout: std::time::Duration::ZERO,
        workers: Some(2),
        https_redirect_port: None,
        gateway_ports: Some(PortRange::new(first, first + 3).unwrap()),
        access_log: false,
        trusted_proxies: Default::default(),
        proxy_protocol: Default::default(),
        limits: Default::default(),
    };
    // Ends with the test (its control thread with the test process).
    let serving = tokio::spawn(ssegate::run::standalone(
        dir.path().to_owned(),
        Default::default(),
        config,
    ));
    // Ports go to Gateways oldest first, two each (plain, TLS): g1 has
    // `first`, g2 `first + 2`.

    let get = |port: u16, path: &'static str| async move {
        // The listener is bound by a task following the table: allow it 2 s.
        for _ in 0..40 {
            if let Ok(resp) = client().get(format!("http://127.0.0.1:{port}{path}")).send().await {
                return resp.text().await.unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("nothing answers on port {port}");
    };
    assert_eq!(get(first, "/").await, "upstream v2");
    assert_eq!(get(first + 2, "/").await, "upstream v3");
    assert_eq!(get(first, "/shared").await, "upstream v1");
    assert_eq!(get(first + 2, "/shared/x").await, "upstream v1");
    // The shared port as before: the older route for `/` takes it.
    assert_eq!(get(shared_port, "/").await, "upstream v2");
    assert_eq!(get(shared_port, "/shared").await, "upstream v1");
    assert!(!serving.is_finished(), "ssegate stopped serving: {:?}", serving.await);
    serving.abort();
}
