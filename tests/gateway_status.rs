//! Gateway API status against a real kube-apiserver: the lease holder
//! writes its GatewayClass's (Accepted, SupportedVersion, supportedFeatures),
//! its Gateway's (Accepted, Programmed, the published address, each
//! listener's conditions and attached routes; a TCP listener refused), and
//! each HTTPRoute's parent entries (attached; NotAllowedByListeners from
//! another namespace; NoMatchingListenerHostname; BackendNotFound, which the
//! proxy answers with 500; RefNotPermitted until a ReferenceGrant allows the
//! Service). Another controller's entry in a route's parents survives
//! ssegate's writes, and ssegate takes its own entry back from a route that
//! no longer names its Gateway. The address is a documentation range
//! (192.0.2.0/24), written as data only: nothing ever connects to it.

mod common;

use common::cluster::{control_plane, NetnsBackend};
use common::process::Ssegate;
use common::*;
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

use ssegate::translate::gateway::CONTROLLER;

/// The features ssegate's GatewayClass claims, as its status must list
/// them (sorted), written out here rather than read from the crate: a
/// claim the code drops or adds shows up as a difference.
const CLAIMED: [&str; 22] = [
    "Gateway",
    "GatewayHTTPListenerIsolation",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendTimeout",
    "HTTPRouteCORS",
    "HTTPRouteDestinationPortMatching",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
];

const OTHER: &str = "example.com/other";
const LIMIT: Duration = Duration::from_secs(20);

/// One object as JSON (`Null` when it cannot be read).
fn object(ns: &str, what: &str) -> Value {
    let out = control_plane().kubectl(&["get", "-n", ns, what, "-o", "json"], None);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// `(status, reason, observedGeneration)` of condition `type_` in `conditions`.
fn condition(conditions: &Value, type_: &str) -> Option<(String, String, i64)> {
    let c = conditions.as_array()?.iter().find(|c| c["type"] == type_)?;
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
        c["observedGeneration"].as_i64().unwrap_or(-1),
    ))
}

/// The parent entries of an HTTPRoute written by `controller`.
fn parents_of(route: &Value, controller: &str) -> Vec<Value> {
    route["status"]["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["controllerName"] == controller)
        .cloned()
        .collect()
}

/// `(status, reason)` of `type_` in ssegate's only parent entry of `route`.
fn our_condition(ns: &str, route: &str, type_: &str) -> Option<(String, String)> {
    let parents = parents_of(&object(ns, &format!("httproute/{route}")), CONTROLLER);
    let [entry] = parents.as_slice() else {
        return None;
    };
    condition(&entry["conditions"], type_).map(|(s, r, _)| (s, r))
}

/// Polls until `check` holds, or fails with `what` and ssegate's log.
async fn eventually<F: FnMut() -> bool>(what: &str, gw: &Ssegate, mut check: F) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < LIMIT,
            "timed out after {LIMIT:?} waiting for {what}\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_status(gw: &Ssegate, host: &str, want: u16) {
    let start = Instant::now();
    loop {
        let got = gw.status_of(host).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < LIMIT,
            "{host}: still {got}, want {want}:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pair(s: &str, r: &str) -> Option<(String, String)> {
    Some((s.to_owned(), r.to_owned()))
}

fn http_route(name: &str, parents: &str, host: &str, backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\n\
         spec:\n  parentRefs: {parents}\n  hostnames: [{host}]\n  rules: [{{backendRefs: [{backend}]}}]\n"
    )
}

/// The `ok` counter of status writes.
async fn writes(gw: &Ssegate) -> u64 {
    let text = gw.metrics_text().await;
    text.lines()
        .find(|l| l.starts_with("ssegate_status_writes_total{") && l.contains("result=\"ok\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_api_status_is_written_and_other_controllers_entries_survive() {
    let cp = control_plane();
    let ns = cp.namespace("gws");
    let stranger_ns = cp.namespace("gws-stranger");
    let far_ns = cp.namespace("gws-far");
    let logs = tempfile::tempdir().unwrap();
    let backend = NetnsBackend::start("pod-gws").await;
    cp.apply(&ns, &backend.service_yaml("demo"));
    cp.apply(&far_ns, &backend.service_yaml("far"));

    cp.apply(
        &ns,
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: gws-sse}}\nspec: {{controllerName: {CONTROLLER}}}\n\
             ---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: gws-other}}\nspec: {{controllerName: {OTHER}}}\n\
             ---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  gatewayClassName: gws-sse\n  listeners:\n  \
             - {{name: http, port: 80, protocol: HTTP, hostname: \"*.gws.test\"}}\n  - {{name: tcp, port: 9000, protocol: TCP}}\n\
             ---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: theirs}}\nspec:\n  gatewayClassName: gws-other\n  listeners: [{{name: http, port: 80, protocol: HTTP}}]\n"
        ),
    );
    let demo = "{name: demo, port: 80}";
    cp.apply(
        &ns,
        &http_route("ok", "[{name: gw}, {name: theirs}]", "ok.gws.test", demo),
    );
    cp.apply(
        &ns,
        &http_route("nohost", "[{name: gw}]", "nohost.elsewhere.test", demo),
    );
    cp.apply(
        &ns,
        &http_route(
            "missing",
            "[{name: gw}]",
            "missing.gws.test",
            "{name: absent, port: 80}",
        ),
    );
    cp.apply(
        &ns,
        &http_route(
            "far",
            "[{name: gw}]",
            "far.gws.test",
            &format!("{{name: far, namespace: {far_ns}, port: 80}}"),
        ),
    );
    // The listener takes routes from its own namespace only (the default).
    cp.apply(
        &stranger_ns,
        &http_route(
            "stranger",
            &format!("[{{name: gw, namespace: {ns}}}]"),
            "stranger.gws.test",
            demo,
        ),
    );

    let kubeconfig = cp.kubeconfig.to_str().unwrap().to_owned();
    let watched = format!("{ns},{stranger_ns},{far_ns}");
    let gw = Ssegate::start(
        &[
            "controller",
            "--kubeconfig",
            &kubeconfig,
            "--namespace",
            &watched,
            "--lease-namespace",
            &ns,
            "--lease-duration",
            "3s",
            "--identity",
            "gws-1",
            "--publish-status-address=192.0.2.40",
        ],
        logs.path(),
    )
    .await;

    // Traffic: the attached route streams; the missing backend answers 500.
    wait_status(&gw, "ok.gws.test", 200).await;
    let resp = client()
        .get(format!("{}/.sse?count=3", gw.proxy))
        .header("host", "ok.gws.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = read_stream(resp, usize::MAX).await.events;
    assert!(events.len() >= 3, "{events:?}");
    wait_status(&gw, "missing.gws.test", 500).await;
    assert_eq!(gw.status_of("nohost.elsewhere.test").await, 404);
    assert_eq!(gw.status_of("stranger.gws.test").await, 404);

    // GatewayClass.
    eventually("GatewayClass status", &gw, || {
        let class = object("", "gatewayclass/gws-sse");
        condition(&class["status"]["conditions"], "Accepted").is_some_and(|(s, r, _)| s == "True" && r == "Accepted")
    })
    .await;
    let class = object("", "gatewayclass/gws-sse");
    let (s, r, generation) = condition(&class["status"]["conditions"], "SupportedVersion").unwrap();
    assert_eq!((s.as_str(), r.as_str()), ("True", "SupportedVersion"));
    assert_eq!(Some(generation), class["metadata"]["generation"].as_i64());
    let features: Vec<&str> = class["status"]["supportedFeatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(features, CLAIMED);
    let theirs = object("", "gatewayclass/gws-other");
    assert_ne!(
        condition(&theirs["status"]["conditions"], "Accepted").map(|c| c.1),
        Some("Accepted".to_owned()),
        "another controller's class is left alone"
    );

    // Gateway: accepted and programmed, the published address, listeners.
    eventually("Gateway status with 3 attached routes", &gw, || {
        let g = object(&ns, "gateway/gw");
        let http = g["status"]["listeners"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["name"] == "http").cloned());
        condition(&g["status"]["conditions"], "Programmed").is_some_and(|c| c.0 == "True")
            && http.is_some_and(|l| l["attachedRoutes"] == 3)
    })
    .await;
    let g = object(&ns, "gateway/gw");
    let generation = g["metadata"]["generation"].as_i64().unwrap();
    // Accepted for its HTTP listener, with the spec's reason for a Gateway
    // one of whose listeners (tcp) is refused.
    assert_eq!(
        condition(&g["status"]["conditions"], "Accepted"),
        Some(("True".into(), "ListenersNotValid".into(), generation))
    );
    assert_eq!(
        condition(&g["status"]["conditions"], "Programmed"),
        Some(("True".into(), "Programmed".into(), generation))
    );
    assert_eq!(
        g["status"]["addresses"],
        serde_json::json!([{"type": "IPAddress", "value": "192.0.2.40"}])
    );
    let listeners = g["status"]["listeners"].as_array().unwrap();
    let http = listeners.iter().find(|l| l["name"] == "http").unwrap();
    assert_eq!(
        http["supportedKinds"],
        serde_json::json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}])
    );
    for (type_, status, reason) in [
        ("Accepted", "True", "Accepted"),
        ("Programmed", "True", "Programmed"),
        ("ResolvedRefs", "True", "ResolvedRefs"),
        ("Conflicted", "False", "NoConflicts"),
    ] {
        let (s, r, _) = condition(&http["conditions"], type_).unwrap();
        assert_eq!((s.as_str(), r.as_str()), (status, reason), "http listener {type_}");
    }
    let tcp = listeners.iter().find(|l| l["name"] == "tcp").unwrap();
    assert_eq!(tcp["attachedRoutes"], 0);
    let (s, r, _) = condition(&tcp["conditions"], "Accepted").unwrap();
    assert_eq!((s.as_str(), r.as_str()), ("False", "UnsupportedProtocol"));
    assert_eq!(condition(&tcp["conditions"], "Programmed").unwrap().0, "False");

    // A hand edit is put right: status is ssegate's alone on its own
    // class and Gateway, extra list entries included.
    cp.kubectl_ok(&[
        "patch",
        "gatewayclass/gws-sse",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"supportedFeatures":[{"name":"HTTPRouteCORS"},{"name":"Gateway"}]}}"#,
    ]);
    cp.kubectl_ok(&[
        "patch",
        "-n",
        &ns,
        "gateway/gw",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"addresses":[{"type":"IPAddress","value":"192.0.2.99"}]}}"#,
    ]);
    eventually("hand edits put right", &gw, || {
        let class = object("", "gatewayclass/gws-sse");
        let names: Vec<&str> = class["status"]["supportedFeatures"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["name"].as_str())
            .collect();
        names == CLAIMED
            && object(&ns, "gateway/gw")["status"]["addresses"]
                == serde_json::json!([{"type": "IPAddress", "value": "192.0.2.40"}])
    })
    .await;

    // HTTPRoutes: each parent of ssegate's, with its reason.
    for (route_ns, route, accepted, resolved) in [
        (&ns, "ok", pair("True", "Accepted"), pair("True", "ResolvedRefs")),
        (&ns, "nohost", pair("False", "NoMatchingListenerHostname"), None),
        (
            &ns,
            "missing",
            pair("True", "Accepted"),
            pair("False", "BackendNotFound"),
        ),
        (&ns, "far", pair("True", "Accepted"), pair("False", "RefNotPermitted")),
        (&stranger_ns, "stranger", pair("False", "NotAllowedByListeners"), None),
    ] {
        eventually(
            &format!("{route_ns}/{route}: Accepted {accepted:?}, ResolvedRefs {resolved:?}"),
            &gw,
            || {
                our_condition(route_ns, route, "Accepted") == accepted
                    && (resolved.is_none() || our_condition(route_ns, route, "ResolvedRefs") == resolved)
            },
        )
        .await;
    }
    let ok = object(&ns, "httproute/ok");
    let ours = parents_of(&ok, CONTROLLER);
    assert_eq!(ours.len(), 1, "one entry, for gw only (theirs is not ssegate's): {ok}");
    assert_eq!(ours[0]["parentRef"]["name"], "gw");
    let generation = ok["metadata"]["generation"].as_i64().unwrap();
    assert_eq!(condition(&ours[0]["conditions"], "Accepted").unwrap().2, generation);

    // Another controller adds its entry for `theirs`, as it would: read,
    // append, write the list back.
    let mut parents = ok["status"]["parents"].as_array().unwrap().clone();
    parents.push(serde_json::json!({
        "controllerName": OTHER,
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "theirs"},
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "theirs",
                        "observedGeneration": generation, "lastTransitionTime": "2020-01-01T00:00:00Z"}],
    }));
    let patch = serde_json::json!({"status": {"parents": parents}}).to_string();
    cp.kubectl_ok(&[
        "patch",
        "-n",
        &ns,
        "httproute/ok",
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ]);
    // A new generation makes ssegate write its entry again; theirs stays.
    cp.kubectl_ok(&[
        "patch",
        "-n",
        &ns,
        "httproute/ok",
        "--type=merge",
        "-p",
        r#"{"spec":{"hostnames":["ok.gws.test","ok2.gws.test"]}}"#,
    ]);
    eventually("ok's entry at the new generation", &gw, || {
        let ok = object(&ns, "httproute/ok");
        let generation = ok["metadata"]["generation"].as_i64();
        parents_of(&ok, CONTROLLER)
            .first()
            .and_then(|p| condition(&p["conditions"], "Accepted"))
            .is_some_and(|c| Some(c.2) == generation && generation > Some(1))
    })
    .await;
    let ok = object(&ns, "httproute/ok");
    let theirs = parents_of(&ok, OTHER);
    assert_eq!(theirs.len(), 1, "another controller's entry survives: {ok}");
    assert_eq!(theirs[0]["conditions"][0]["message"], "theirs");
    assert_eq!(parents_of(&ok, CONTROLLER).len(), 1);

    // A ReferenceGrant lets `far` reach its Service: resolved, and served.
    cp.apply(
        &far_ns,
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: from-gws}}\n\
             spec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {ns}}}]\n  to: [{{group: \"\", kind: Service}}]\n"
        ),
    );
    eventually("far resolved once granted", &gw, || {
        our_condition(&ns, "far", "ResolvedRefs") == pair("True", "ResolvedRefs")
    })
    .await;
    wait_status(&gw, "far.gws.test", 200).await;

    // A route that stops naming ssegate's Gateway loses ssegate's entry
    // (and keeps the other controller's).
    let parents = serde_json::json!({"status": {"parents": [
        parents_of(&object(&ns, "httproute/nohost"), CONTROLLER)[0].clone(),
        {"controllerName": OTHER, "parentRef": {"name": "theirs"},
         "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "theirs",
                         "lastTransitionTime": "2020-01-01T00:00:00Z"}]},
    ]}})
    .to_string();
    cp.kubectl_ok(&[
        "patch",
        "-n",
        &ns,
        "httproute/nohost",
        "--subresource=status",
        "--type=merge",
        "-p",
        &parents,
    ]);
    cp.kubectl_ok(&[
        "patch",
        "-n",
        &ns,
        "httproute/nohost",
        "--type=merge",
        "-p",
        r#"{"spec":{"parentRefs":[{"name":"theirs"}]}}"#,
    ]);
    eventually("nohost's entry taken back", &gw, || {
        parents_of(&object(&ns, "httproute/nohost"), CONTROLLER).is_empty()
    })
    .await;
    assert_eq!(parents_of(&object(&ns, "httproute/nohost"), OTHER).len(), 1);

    // Level-triggered: once everything is right, nothing more is written.
    let settled = Instant::now();
    let mut before = writes(&gw).await;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = writes(&gw).await;
        if after == before {
            break;
        }
        assert!(
            settled.elapsed() < LIMIT,
            "status writes never stop ({before} then {after}):\n{}",
            gw.logs()
        );
        before = after;
    }
    // Then it holds: no write over a further window six times the retry
    // delay (1 s), the counter read every 200 ms.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = writes(&gw).await;
        assert_eq!(
            now,
            before,
            "a status write {:?} into the quiet window:\n{}",
            quiet.elapsed(),
            gw.logs()
        );
    }
    assert!(!gw.logs().contains("status write failed"), "{}", gw.logs());
}

/// Four consecutive free ports on 127.0.0.1 (two Gateways' slots), above
/// the span `free_port` hands out, so no listener of the test takes one.
fn four_free_ports() -> u16 {
    let base = 40_000 + (std::process::id() % 1000) as u16 * 8;
    for i in 0..200u16 {
        let first = base + (i % 100) * 8;
        let held: Vec<_> = (first..first.saturating_add(4))
            .map_while(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == 4 {
            return first;
        }
    }
    panic!("no four consecutive free ports");
}

/// The `(port, targetPort)` pairs of a Service.
fn service_ports(ns: &str, name: &str) -> Option<Vec<(i64, i64)>> {
    let svc = object(ns, &format!("service/{name}"));
    let ports = svc["spec"]["ports"].as_array()?;
    Some(
        ports
            .iter()
            .map(|p| (p["port"].as_i64().unwrap_or(0), p["targetPort"].as_i64().unwrap_or(0)))
            .collect(),
    )
}

/// `(Programmed status, reason, address values)` of a Gateway.
fn gateway_programmed(ns: &str, name: &str) -> Option<(String, String, Vec<String>)> {
    let gw = object(ns, &format!("gateway/{name}"));
    let (status, reason, _) = condition(&gw["status"]["conditions"], "Programmed")?;
    let addresses = gw["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["value"].as_str().map(str::to_owned))
        .collect();
    Some((status, reason, addresses))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_gateway_gets_a_service_of_its_own_and_publishes_its_address() {
    let cp = control_plane();
    let ns = cp.namespace("gwsvc");
    let logs = tempfile::tempdir().unwrap();
    let backend = NetnsBackend::start("pod-gwsvc").await;
    cp.apply(&ns, &backend.service_yaml("demo"));
    let gateway = |name: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}}}\nspec:\n  gatewayClassName: gwsvc-sse\n  listeners:\n  \
             - {{name: http, port: 80, protocol: HTTP}}\n  - {{name: alt, port: 8080, protocol: HTTP}}\n"
        )
    };
    cp.apply(
        &ns,
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: gwsvc-sse}}\nspec: {{controllerName: {CONTROLLER}}}\n---\n{}",
            gateway("ga")
        ),
    );
    // Creation times have a resolution of one second: "gb" is younger.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    cp.apply(&ns, &gateway("gb"));
    let demo = "{name: demo, port: 80}";
    cp.apply(&ns, &http_route("ra", "[{name: ga}]", "a.gwsvc.test", demo));
    cp.apply(&ns, &http_route("rb", "[{name: gb}]", "b.gwsvc.test", demo));

    // The chart's own Service stands for the installation: it owns the
    // Gateways' Services, so uninstalling deletes them.
    cp.apply(
        &ns,
        "apiVersion: v1\nkind: Service\nmetadata: {name: sg}\nspec:\n  selector: {app.kubernetes.io/name: ssegate}\n  ports: [{name: http, port: 80}]\n",
    );
    let owner_uid = object(&ns, "service/sg")["metadata"]["uid"].clone();
    let first = four_free_ports();
    let range = format!("{first}-{}", first + 3);
    let gw = Ssegate::controller(
        &ns,
        "gwsvc-1",
        &[
            "--lease-duration",
            "3s",
            "--gateway-ports",
            &range,
            "--gateway-service-selector",
            "app.kubernetes.io/name=ssegate,app.kubernetes.io/instance=gwsvc",
            "--gateway-service-prefix",
            "sg",
            "--gateway-service-owner",
            "sg",
        ],
        logs.path(),
    )
    .await;

    // One Service per Gateway, oldest first: each listener port to the
    // Gateway's own plain port.
    let (sa, sb) = (format!("sg-{ns}-ga"), format!("sg-{ns}-gb"));
    let (pa, pb) = (i64::from(first), i64::from(first) + 2);
    eventually("both Gateways' Services", &gw, || {
        service_ports(&ns, &sa) == Some(vec![(80, pa), (8080, pa)])
            && service_ports(&ns, &sb) == Some(vec![(80, pb), (8080, pb)])
    })
    .await;
    let svc = object(&ns, &format!("service/{sa}"));
    assert_eq!(svc["spec"]["type"], "LoadBalancer");
    assert_eq!(svc["spec"]["selector"]["app.kubernetes.io/instance"], "gwsvc");
    assert_eq!(svc["metadata"]["labels"]["ssegate.dev/gateway-service"], "sg");
    assert_eq!(
        svc["metadata"]["annotations"]["ssegate.dev/gateway"],
        format!("{ns}/ga")
    );

    let owners = &svc["metadata"]["ownerReferences"];
    assert_eq!(
        (&owners[0]["kind"], &owners[0]["name"], &owners[0]["uid"]),
        (&Value::from("Service"), &Value::from("sg"), &owner_uid),
        "{svc}"
    );

    // No load balancer here: no address, and Programmed says so.
    eventually("ga Programmed=False AddressNotAssigned", &gw, || {
        gateway_programmed(&ns, "ga") == Some(("False".into(), "AddressNotAssigned".into(), vec![]))
    })
    .await;
    // The load balancer answers (written by hand, as a cloud's would).
    cp.kubectl_ok(&[
        "patch",
        "-n",
        &ns,
        "service",
        &sa,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.61"}]}}}"#,
    ]);
    eventually("ga's own address", &gw, || {
        gateway_programmed(&ns, "ga") == Some(("True".into(), "Programmed".into(), vec!["192.0.2.61".into()]))
    })
    .await;

    // Each Gateway's port serves its own routes only.
    let on = |port: i64, host: &'static str| {
        let url = format!("http://127.0.0.1:{port}/.sse?count=0");
        async move {
            client()
                .get(url)
                .header("host", host)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    let start = Instant::now();
    while on(pa, "a.gwsvc.test").await != 200 {
        assert!(start.elapsed() < LIMIT, "ga's port never served ra:\n{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        on(pa, "b.gwsvc.test").await,
        404,
        "gb's route is not ga's:\n{}",
        gw.logs()
    );
    assert_eq!(on(pb, "b.gwsvc.test").await, 200, "{}", gw.logs());

    // A third Gateway finds the range used up: no Service, and it says so.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    cp.apply(&ns, &gateway("gc"));
    eventually("gc Programmed=False NoResources", &gw, || {
        gateway_programmed(&ns, "gc").is_some_and(|(s, r, _)| s == "False" && r == "NoResources")
    })
    .await;
    // And it stays so, over a window the Service writer would have acted in.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            service_ports(&ns, &format!("sg-{ns}-gc")),
            None,
            "a Service for gc appeared {:?} after NoResources",
            window.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A hand edit of a Service is put right.
    cp.kubectl_ok(&[
        "patch",
        "-n",
        &ns,
        "service",
        &sb,
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/ports/0/targetPort","value":1234}]"#,
    ]);
    eventually("gb's Service put right", &gw, || {
        service_ports(&ns, &sb) == Some(vec![(80, pb), (8080, pb)])
    })
    .await;

    // ga goes: its Service goes; gb keeps its slot (its Service holds it)
    // and goes on serving there; gc takes the slot ga left, with a Service
    // of its own.
    cp.kubectl_ok(&["delete", "-n", &ns, "gateway", "ga"]);
    let sc = format!("sg-{ns}-gc");
    eventually("ga's Service deleted, gb kept, gc in ga's slot", &gw, || {
        service_ports(&ns, &sa).is_none()
            && service_ports(&ns, &sb) == Some(vec![(80, pb), (8080, pb)])
            && service_ports(&ns, &sc) == Some(vec![(80, pa), (8080, pa)])
    })
    .await;
    assert_eq!(on(pb, "b.gwsvc.test").await, 200, "gb never moved:\n{}", gw.logs());
    eventually("gc waits for its address", &gw, || {
        gateway_programmed(&ns, "gc").is_some_and(|(s, r, _)| s == "False" && r == "AddressNotAssigned")
    })
    .await;
    drop(backend);
}
