//! The Gateway API translation on a realistic set of objects: which
//! routes attach where, each parent's reason when one does not, listener
//! status, and what the table then serves.

use super::*;
use crate::model::{build_table, Objects, PortRange, RequestSketch, ServiceObject, ServicePort, TlsKeyPair};

fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> Vec<T> {
    yaml.split("\n---\n")
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect()
}

const CLASSES: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sse}
spec: {controllerName: ssegate.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/other}";

const GATEWAYS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: apps}
spec:
  gatewayClassName: sse
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: \"*.example.com\"}
  - name: https
    port: 443
    protocol: HTTPS
    hostname: secure.example.com
    tls: {certificateRefs: [{name: cert}]}
    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {sse: \"yes\"}}}}
  - {name: tcp, port: 9000, protocol: TCP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: theirs, namespace: apps}
spec:
  gatewayClassName: other
  listeners: [{name: http, port: 80, protocol: HTTP}]";

fn route(name: &str, ns: &str, spec: &str) -> HttpRoute {
    serde_yaml::from_str(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
    ))
    .unwrap()
}

fn outcome(routes: &[HttpRoute], labels: &[(&str, &str)]) -> GatewayOutcome {
    outcome_with(routes, labels, &[])
}

fn outcome_with(routes: &[HttpRoute], labels: &[(&str, &str)], policies: &[StreamPolicy]) -> GatewayOutcome {
    let classes: Vec<GatewayClass> = parse(CLASSES);
    let gateways: Vec<Gateway> = parse(GATEWAYS);
    let mut namespace_labels = BTreeMap::new();
    for (ns, label) in labels {
        namespace_labels.insert(ns.to_string(), BTreeMap::from([(label.to_string(), "yes".to_string())]));
    }
    let mut secrets = BTreeMap::new();
    let cert = rcgen_free_pair();
    secrets.insert(
        ObjectKey::new("apps", "cert"),
        SecretObject {
            key: ObjectKey::new("apps", "cert"),
            pair: Some(cert),
            problem: None,
        },
    );
    translate(&GatewayInputs {
        classes: &classes,
        gateways: &gateways,
        routes,
        grants: &[],
        policies,
        namespace_labels: &namespace_labels,
        secrets: &secrets,
        default_namespace: "default",
        gateway_ports: None,
        held_ports: &BTreeMap::new(),
    })
}

/// A key pair object; the translation only asks whether one is there.
fn rcgen_free_pair() -> TlsKeyPair {
    TlsKeyPair::new(b"cert", b"key")
}

fn parent<'a>(o: &'a GatewayOutcome, name: &str) -> &'a http_route::ParentVerdict {
    let (_, _, plan) = o.routes.iter().find(|(k, _, _)| k.name == name).unwrap();
    &plan.parents[0]
}

#[test]
fn routes_attach_by_listener_namespace_and_hostname_with_the_spec_reasons() {
    let backend = "    backendRefs: [{name: svc, port: 80}]\n";
    let routes = vec![
        route(
            "served",
            "apps",
            &format!("  parentRefs: [{{name: gw}}]\n  hostnames: [a.example.com, secure.example.com]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /sse}}, headers: [{{name: X-V, value: \"2\"}}]}}]\n{backend}"),
        ),
        route("elsewhere", "team", &format!("  parentRefs: [{{name: gw, namespace: apps, sectionName: http}}]\n  rules:\n  -{}", &backend[5..])),
        route("nosection", "apps", &format!("  parentRefs: [{{name: gw, sectionName: nope}}]\n  rules:\n  -{}", &backend[5..])),
        route("nohost", "apps", &format!("  parentRefs: [{{name: gw}}]\n  hostnames: [b.other.org]\n  rules:\n  -{}", &backend[5..])),
        route(
            "crossns",
            "apps",
            "  parentRefs: [{name: gw, sectionName: http}]\n  rules:\n  - backendRefs: [{name: svc, namespace: backends, port: 80}]\n",
        ),
        route(
            "regex",
            "apps",
            &format!("  parentRefs: [{{name: gw}}]\n  rules:\n  - matches: [{{path: {{type: RegularExpression, value: \"/a.*\"}}}}]\n{backend}"),
        ),
        route("theirs", "apps", &format!("  parentRefs: [{{name: theirs}}]\n  rules:\n  -{}", &backend[5..])),
        route("selected", "team", &format!("  parentRefs: [{{name: gw, namespace: apps, sectionName: https}}]\n  rules:\n  -{}", &backend[5..])),
    ];
    let o = outcome(&routes, &[("team", "sse"), ("apps", "sse")]);

    assert_eq!(o.classes.len(), 1, "only the class naming ssegate's controller");
    assert_eq!(parent(&o, "served").accepted.reason, "Accepted");
    assert_eq!(parent(&o, "elsewhere").accepted.reason, "NotAllowedByListeners");
    assert_eq!(parent(&o, "nosection").accepted.reason, "NoMatchingParent");
    assert_eq!(parent(&o, "nohost").accepted.reason, "NoMatchingListenerHostname");
    assert_eq!(parent(&o, "crossns").accepted.reason, "Accepted");
    let (_, _, crossns) = o.routes.iter().find(|(k, _, _)| k.name == "crossns").unwrap();
    assert_eq!(crossns.refused_refs.as_ref().unwrap().reason, "RefNotPermitted");
    assert_eq!(parent(&o, "regex").accepted.reason, "UnsupportedValue");
    assert!(
        o.routes.iter().all(|(k, _, _)| k.name != "theirs"),
        "another controller's parent"
    );
    assert_eq!(
        parent(&o, "selected").accepted.reason,
        "Accepted",
        "the namespace selector admits team"
    );

    let gw = &o.gateways[0];
    let listener = |name: &str| gw.verdicts.iter().find(|v| v.name == name).unwrap();
    assert_eq!(listener("http").attached_routes, 2, "served and crossns");
    assert_eq!(
        listener("https").attached_routes,
        2,
        "served (secure.example.com) and selected"
    );
    assert_eq!(listener("tcp").accepted.reason, "UnsupportedProtocol");
    assert!(listener("https").resolved_refs.is_true());
    assert!(gw.accepted.is_true());
    assert_eq!(
        gw.accepted.reason, "ListenersNotValid",
        "accepted for its other listeners, with the reason that says one is refused"
    );

    // The table: served answers on a.example.com over plain HTTP with the
    // header, and on secure.example.com only over TLS.
    let mut objects = Objects::default();
    for d in &o.definitions {
        objects.gateway_api.insert((d.kind, d.key.clone()), d.clone());
    }
    for ns in ["apps", "backends"] {
        objects.services.insert(
            ObjectKey::new(ns, "svc"),
            ServiceObject {
                key: ObjectKey::new(ns, "svc"),
                ports: vec![ServicePort {
                    name: "".into(),
                    port: 80,
                }],
            },
        );
    }
    objects.secrets.insert(
        ObjectKey::new("apps", "cert"),
        SecretObject {
            key: ObjectKey::new("apps", "cert"),
            pair: Some(rcgen_free_pair()),
            problem: None,
        },
    );
    let table = build_table(&objects, 1);
    let req = |headers: &[(&str, &str)], tls: bool| RequestSketch {
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        tls,
        ..Default::default()
    };
    let at = |host: &str, path: &str, r: RequestSketch| {
        table
            .lookup(host, path, &r)
            .map(|t| t.route.to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        at("a.example.com", "/sse/x", req(&[("x-v", "2")], false)),
        "apps/served"
    );
    assert_eq!(
        at("a.example.com", "/sse/x", req(&[("x-v", "2")], true)),
        "",
        "not on HTTPS"
    );
    assert_eq!(
        at("secure.example.com", "/sse", req(&[("x-v", "2")], true)),
        "apps/served"
    );
    // Over plain HTTP too: the HTTP listener's *.example.com covers it.
    assert_eq!(
        at("secure.example.com", "/sse", req(&[("x-v", "2")], false)),
        "apps/served"
    );
    assert_eq!(
        at("a.example.com", "/sse/x", req(&[], false)),
        "apps/crossns",
        "falls through to /"
    );
    // The refused cross-namespace backend answers 500, though its Service exists.
    let target = table.lookup("a.example.com", "/", &req(&[], false)).unwrap();
    let unpicked = target.pick().unwrap_err();
    assert!(unpicked.internal);
    assert!(table.certificate_for("secure.example.com").is_some());
    // On a Gateway's own TLS port, only its listeners' certificates.
    assert!(table.gateway_certificate_for("apps/gw", "secure.example.com").is_some());
    assert!(table.gateway_certificate_for("apps/gw", "other.org").is_none());
    assert!(table
        .gateway_certificate_for("apps/elsewhere", "secure.example.com")
        .is_none());
}

#[test]
fn hostnames_intersect_with_wildcards_on_either_side() {
    let routes = vec![
        route(
            "wild",
            "apps",
            "  parentRefs: [{name: gw, sectionName: http}]\n  hostnames: [\"*.example.com\", \"x.y.example.com\", other.org]\n  rules: [{backendRefs: [{name: svc, port: 80}]}]\n",
        ),
        route(
            "any",
            "apps",
            "  parentRefs: [{name: gw, sectionName: http}]\n  rules: [{backendRefs: [{name: svc, port: 80}]}]\n",
        ),
    ];
    let o = outcome(&routes, &[]);
    let hosts = |name: &str| {
        let d = o.definitions.iter().find(|d| d.key.name == name).unwrap();
        d.translated.as_ref().unwrap().rules[0].hostnames.clone().unwrap()
    };
    assert_eq!(hosts("wild"), ["*.example.com", "x.y.example.com"]);
    assert_eq!(hosts("any"), ["*.example.com"], "no hostnames: the listener's");
}

#[test]
fn stream_policies_reach_the_table_rule_over_route_over_gateway() {
    let routes = vec![route(
        "events",
        "apps",
        "  parentRefs: [{name: gw, sectionName: http}]\n  hostnames: [a.example.com]\n  rules:\n  - name: stream\n    matches: [{path: {type: PathPrefix, value: /sse}}]\n    backendRefs: [{name: svc, port: 80}]\n  - backendRefs: [{name: svc, port: 80}]\n",
    )];
    let policy = |name: &str, yaml: &str| -> StreamPolicy {
        serde_yaml::from_str(&format!(
            "apiVersion: ssegate.dev/v1alpha1\nkind: StreamPolicy\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n{yaml}"
        ))
        .unwrap()
    };
    let policies = [
        policy(
            "gateway",
            "  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]\n  timeouts: {idle: 0s}\n",
        ),
        policy(
            "route",
            "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: events}]\n  proxyBuffering: Enabled\n  maxConcurrentStreams: 7\n",
        ),
        policy(
            "rule",
            "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: events, sectionName: stream}]\n  proxyBuffering: Disabled\n  sse: {heartbeatInterval: 15s}\n",
        ),
    ];
    let o = outcome_with(&routes, &[], &policies);
    let accepted: Vec<(&str, &str)> = o
        .policies
        .iter()
        .map(|v| (v.key.name.as_str(), v.ancestors[0].accepted.reason))
        .collect();
    assert_eq!(
        accepted,
        [("gateway", "Accepted"), ("route", "Accepted"), ("rule", "Accepted")]
    );

    let mut objects = Objects::default();
    for d in &o.definitions {
        objects.gateway_api.insert((d.kind, d.key.clone()), d.clone());
    }
    objects.services.insert(
        ObjectKey::new("apps", "svc"),
        ServiceObject {
            key: ObjectKey::new("apps", "svc"),
            ports: vec![ServicePort {
                name: "".into(),
                port: 80,
            }],
        },
    );
    let table = build_table(&objects, 1);
    let at = |path: &str| {
        table
            .lookup("a.example.com", path, &RequestSketch::default())
            .unwrap()
            .clone()
    };
    let stream = at("/sse/x");
    assert_eq!(stream.rule_index, 0);
    assert_eq!(
        stream.settings.buffering,
        crate::api::ProxyBuffering::Disabled,
        "the rule's policy"
    );
    assert_eq!(stream.settings.heartbeat, Some(std::time::Duration::from_secs(15)));
    assert_eq!(
        stream.settings.timeouts.idle, None,
        "the Gateway's policy, not overridden"
    );
    assert_eq!(stream.max_concurrent_streams, Some(7), "the route's limit");
    let rest = at("/other");
    assert_eq!(
        rest.settings.buffering,
        crate::api::ProxyBuffering::Enabled,
        "the route's policy"
    );
    assert_eq!(rest.settings.heartbeat, None);
    assert_eq!(rest.settings.timeouts.idle, None);

    // Without policies: the defaults, as before.
    let o = outcome(&routes, &[]);
    let d = o.definitions.iter().find(|d| d.key.name == "events").unwrap();
    let valid = d.translated.as_ref().unwrap();
    assert!(valid
        .rules
        .iter()
        .all(|r| r.settings == crate::api::StreamSettings::DEFAULT));
    assert_eq!(valid.max_concurrent_streams, None);
    assert!(o.policies.is_empty());
}

#[test]
fn filters_on_a_backend_ref_refuse_the_route_rather_than_vanish() {
    let routes = vec![route(
        "perbackend",
        "apps",
        "  parentRefs: [{name: gw, sectionName: http}]\n  rules:\n  - backendRefs:\n    - name: svc\n      port: 80\n      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x, value: y}]}}]\n",
    )];
    let o = outcome(&routes, &[]);
    let p = parent(&o, "perbackend");
    assert_eq!(p.accepted.reason, "UnsupportedValue");
    assert!(
        p.accepted.message.contains("spec.rules[0].backendRefs[0].filters"),
        "{}",
        p.accepted.message
    );
    assert!(o.definitions.iter().all(|d| d.key.name != "perbackend"));
}

/// Enum values of a newer CRD (read as `Unknown`) are refused by name, as
/// the API asks (`UnsupportedValue`), each with its field; never taken for
/// a value ssegate knows.
#[test]
fn values_a_newer_crd_may_add_are_refused_with_their_field() {
    let cases = [
        (
            "  - matches: [{path: {type: Glob, value: /a}}]\n",
            "spec.rules[0].matches[0].path: type \"Glob\" is not supported",
        ),
        (
            "  - matches: [{headers: [{type: Prefix, name: x, value: a}]}]\n",
            "spec.rules[0].matches[0].headers: type \"Prefix\" is not supported",
        ),
        (
            "  - matches: [{queryParams: [{type: Prefix, name: x, value: a}]}]\n",
            "spec.rules[0].matches[0].queryParams: type \"Prefix\" is not supported",
        ),
        (
            "  - filters: [{type: RateLimit}]\n",
            "spec.rules[0].filters[0]: filter RateLimit is not supported",
        ),
        (
            "  - filters: [{type: RequestRedirect, requestRedirect: {scheme: wss}}]\n",
            "spec.rules[0].filters[0].requestRedirect.scheme: \"wss\" is not supported",
        ),
        (
            "  - filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceRegex, replaceFullPath: /x}}}]\n",
            "spec.rules[0].filters[0].requestRedirect.path.type: \"ReplaceRegex\" is not supported",
        ),
        (
            "  - filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceRegex, replaceFullPath: /x}}}]\n",
            "spec.rules[0].filters[0].urlRewrite.path.type: \"ReplaceRegex\" is not supported",
        ),
    ];
    for (rule, message) in cases {
        let routes = vec![route(
            "future",
            "apps",
            &format!("  parentRefs: [{{name: gw, sectionName: http}}]\n  rules:\n{rule}    backendRefs: [{{name: svc, port: 80}}]\n"),
        )];
        let o = outcome(&routes, &[]);
        let p = parent(&o, "future");
        assert_eq!(p.accepted.reason, "UnsupportedValue", "{rule}");
        assert_eq!(p.accepted.message, message);
        assert!(o.definitions.iter().all(|d| d.key.name != "future"), "{rule}");
    }
}

#[test]
fn an_https_listener_whose_certificate_does_not_resolve_is_not_programmed_but_takes_routes() {
    let gateway: Gateway = serde_yaml::from_str(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: apps}
spec:
  gatewayClassName: sse
  listeners:
  - {name: tls, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: does-not-exist}]}}
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: HTTPRoute}, {kind: TCPRoute}]}}",
    )
    .unwrap();
    let plan = listeners::plan(&gateway, ObjectKey::new("apps", "gw"), &[], &BTreeMap::new());
    let tls = &plan.verdicts[0];
    assert_eq!(tls.resolved_refs.reason, "InvalidCertificateRef");
    assert!(!tls.programmed.is_true(), "{:?}", tls.programmed);
    assert_eq!(tls.programmed.reason, "Invalid");
    assert!(plan.listeners[0].usable, "routes still attach to it and count");
    // A route kind it cannot take does not stop it serving HTTPRoutes.
    let http = &plan.verdicts[1];
    assert_eq!(http.resolved_refs.reason, "InvalidRouteKinds");
    assert!(http.programmed.is_true());
}

/// Standalone mode has no CRD to bound an HTTPRoute's lists: one over a
/// limit is refused whole, naming each list at fault, and builds no rule.
#[test]
fn a_route_over_the_crds_list_limits_is_refused_naming_each_list() {
    let rule = "  - backendRefs: [{name: svc, port: 80}]\n";
    let many_matches: String = (0..65)
        .map(|i| format!("    - path: {{type: PathPrefix, value: /m{i}}}\n"))
        .collect();
    let routes = vec![
        route(
            "rules",
            "apps",
            &format!("  parentRefs: [{{name: gw, sectionName: http}}]\n  rules:\n{}", rule.repeat(17)),
        ),
        route(
            "matches",
            "apps",
            &format!(
                "  parentRefs: [{{name: gw, sectionName: http}}]\n  rules:\n  - matches:\n{many_matches}    backendRefs: [{{name: svc, port: 80}}]\n"
            ),
        ),
        route(
            "fine",
            "apps",
            &format!("  parentRefs: [{{name: gw, sectionName: http}}]\n  rules:\n{}", rule.repeat(16)),
        ),
    ];
    let o = outcome(&routes, &[]);
    let p = parent(&o, "rules");
    assert_eq!(p.accepted.reason, "UnsupportedValue");
    assert_eq!(p.accepted.message, "spec.rules: 17 items, at most 16");
    let p = parent(&o, "matches");
    assert_eq!(p.accepted.reason, "UnsupportedValue");
    assert_eq!(p.accepted.message, "spec.rules[0].matches: 65 items, at most 64");
    assert_eq!(
        parent(&o, "fine").accepted.reason,
        "Accepted",
        "16 rules are within the limit"
    );
    let served: Vec<&str> = o
        .definitions
        .iter()
        .filter(|d| d.kind == crate::model::SourceKind::HttpRoute)
        .map(|d| d.key.name.as_str())
        .collect();
    assert_eq!(served, ["fine"], "a refused route builds no rule");
}

/// A Gateway's listeners are checked against each other in pairs: more
/// than the CRD's 64 refuse the Gateway before any is looked at.
#[test]
fn a_gateway_over_the_listener_limit_is_refused() {
    let listeners: String = (0..65)
        .map(|i| format!("  - {{name: l{i}, port: 80, protocol: HTTP, hostname: h{i}.example.com}}\n"))
        .collect();
    let gateway: Gateway = serde_yaml::from_str(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: big, namespace: apps}}\nspec:\n  gatewayClassName: sse\n  listeners:\n{listeners}"
    ))
    .unwrap();
    let plan = listeners::plan(&gateway, ObjectKey::new("apps", "big"), &[], &BTreeMap::new());
    assert!(!plan.accepted.is_true());
    assert_eq!(plan.accepted.reason, "Invalid");
    assert_eq!(plan.accepted.message, "spec.listeners: 65 items, at most 64");
    assert!(plan.listeners.is_empty() && plan.verdicts.is_empty());
    assert!(!plan.programmed.is_true());
}

/// The conformance suite's HTTPRouteMultipleGateways: two Gateways, a route
/// for `/shared` on both and a route for `/` on each, none with hostnames;
/// g2 also has an HTTPS listener (its certificate missing), and an older
/// Gateway none of whose listeners can be served takes no ports.
fn two_gateways() -> (GatewayOutcome, crate::model::RoutingTable) {
    let classes: Vec<GatewayClass> = parse(CLASSES);
    let gateways: Vec<Gateway> = parse(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: g0, namespace: infra, creationTimestamp: \"2025-01-01T00:00:00Z\"}
spec:
  gatewayClassName: sse
  listeners: [{name: tcp, port: 9000, protocol: TCP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: g1, namespace: infra, creationTimestamp: \"2026-01-01T00:00:00Z\"}
spec:
  gatewayClassName: sse
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: g2, namespace: infra, creationTimestamp: \"2026-01-02T00:00:00Z\"}
spec:
  gatewayClassName: sse
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: missing}]}}",
    );
    let http_route = |name: &str, day: u8, parents: &str, path: &str, backend: &str| -> HttpRoute {
        serde_yaml::from_str(&format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: infra, creationTimestamp: \"2026-02-0{day}T00:00:00Z\"}}
spec:
  parentRefs: {parents}
  rules: [{{matches: [{{path: {{type: PathPrefix, value: {path}}}}}], backendRefs: [{{name: {backend}, port: 8080}}]}}]"
        ))
        .unwrap()
    };
    let routes = vec![
        http_route("shared", 1, "[{name: g1}, {name: g2}]", "/shared", "v1"),
        http_route("one", 2, "[{name: g1}]", "/", "v2"),
        http_route("two", 3, "[{name: g2}]", "/", "v3"),
    ];
    with_gateway_ports(&classes, &gateways, &routes, &["v1", "v2", "v3"], 8080)
}

/// Translates with Gateways' own ports (range 10000-10099) and builds the
/// table, with `services` in `infra`, each with one unnamed `port`.
fn with_gateway_ports(
    classes: &[GatewayClass],
    gateways: &[Gateway],
    routes: &[HttpRoute],
    services: &[&str],
    port: u16,
) -> (GatewayOutcome, crate::model::RoutingTable) {
    let o = translate(&GatewayInputs {
        classes,
        gateways,
        routes,
        grants: &[],
        policies: &[],
        namespace_labels: &BTreeMap::new(),
        secrets: &BTreeMap::new(),
        default_namespace: "default",
        gateway_ports: Some(PortRange::new(10000, 10099).unwrap()),
        held_ports: &BTreeMap::new(),
    });
    let mut objects = Objects {
        gateway_ports: o.ports.clone(),
        ..Default::default()
    };
    for d in &o.definitions {
        objects.gateway_api.insert((d.kind, d.key.clone()), d.clone());
    }
    for name in services {
        let key = ObjectKey::new("infra", *name);
        objects.services.insert(
            key.clone(),
            ServiceObject {
                key,
                ports: vec![ServicePort { name: "".into(), port }],
            },
        );
    }
    let table = build_table(&objects, 1);
    (o, table)
}

#[test]
fn each_gateways_own_port_serves_its_own_routes_and_the_shared_ports_serve_as_before() {
    let (o, table) = two_gateways();
    for name in ["shared", "one", "two"] {
        let (_, _, plan) = o.routes.iter().find(|(k, _, _)| k.name == name).unwrap();
        assert!(plan.parents.iter().all(|p| p.accepted.is_true()), "{name}");
    }
    let backend = |gateway: Option<&str>, path: &str| {
        let req = RequestSketch {
            gateway: gateway.map(str::to_owned),
            ..Default::default()
        };
        table
            .lookup("gateway.example", path, &req)
            .map(|t| t.backends[0].service.to_string())
            .unwrap_or_default()
    };
    assert_eq!(backend(Some("infra/g1"), "/"), "infra/v2:8080");
    assert_eq!(backend(Some("infra/g2"), "/"), "infra/v3:8080");
    assert_eq!(backend(Some("infra/g1"), "/shared"), "infra/v1:8080");
    assert_eq!(backend(Some("infra/g2"), "/shared"), "infra/v1:8080");
    assert_eq!(backend(Some("infra/other"), "/"), "", "no Gateway of that name");
    // The shared port, as before: the older route for `/` takes both.
    assert_eq!(backend(None, "/"), "infra/v2:8080");
    assert_eq!(backend(None, "/shared/x"), "infra/v1:8080");
    // Matches through different Gateways do not conflict.
    for r in &table.reports {
        assert!(r.accepted.is_true(), "{} {}: {:?}", r.kind.as_str(), r.key, r.accepted);
    }
}

#[test]
fn accepted_gateways_get_their_own_ports_oldest_first_and_a_port_leads_to_its_gateways_rules() {
    let (o, table) = two_gateways();
    assert!(!o
        .gateways
        .iter()
        .find(|g| g.key.name == "g0")
        .unwrap()
        .accepted
        .is_true());
    let ports = table.gateway_ports();
    assert_eq!(ports, &o.ports, "the table carries the translation's ports");
    let of = |name: &str| ports.get(&ObjectKey::new("infra", name)).map(|p| (p.plain, p.tls));
    assert_eq!(of("g0"), None, "not accepted: no ports, and no slot taken");
    assert_eq!(of("g1"), Some((10000, None)));
    assert_eq!(of("g2"), Some((10002, Some(10003))), "HTTPS listener: a TLS port");
    // What a listener on a Gateway's port will do: name the Gateway in the
    // request's facts.
    let backend = |port: u16, path: &str| {
        let (gateway, tls) = ports.owner_of(port).unwrap();
        let req = RequestSketch {
            gateway: Some(gateway.to_string()),
            tls,
            ..Default::default()
        };
        table
            .lookup("gateway.example", path, &req)
            .map(|t| t.backends[0].service.to_string())
            .unwrap_or_default()
    };
    assert_eq!(backend(10000, "/"), "infra/v2:8080");
    assert_eq!(backend(10002, "/"), "infra/v3:8080");
    assert_eq!(
        backend(10003, "/"),
        "infra/v3:8080",
        "g2's HTTPS listener takes the route too"
    );
    assert_eq!(backend(10000, "/shared"), "infra/v1:8080");
    assert!(table.describe().gateway_ports.contains_key("infra/g2"));

    // Without a range, no Gateway has ports of its own.
    let classes: Vec<GatewayClass> = parse(CLASSES);
    let gateways: Vec<Gateway> = parse(GATEWAYS);
    let none = translate(&GatewayInputs {
        classes: &classes,
        gateways: &gateways,
        routes: &[],
        grants: &[],
        policies: &[],
        namespace_labels: &BTreeMap::new(),
        secrets: &BTreeMap::new(),
        default_namespace: "default",
        gateway_ports: None,
        held_ports: &BTreeMap::new(),
    });
    assert!(none.ports.is_empty());
}

/// The conformance suite's GatewayHTTPListenerIsolation: on a Gateway's
/// own port a request belongs to the listener whose hostname fits its host
/// best, and only the routes attached through that listener serve it.
#[test]
fn on_a_gateways_own_port_only_the_best_fitting_listeners_routes_serve() {
    let classes: Vec<GatewayClass> = parse(CLASSES);
    let gateways: Vec<Gateway> = parse(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: iso, namespace: infra}
spec:
  gatewayClassName: sse
  listeners:
  - {name: empty-hostname, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - {name: wildcard-example-com, port: 80, protocol: HTTP, hostname: \"*.example.com\", allowedRoutes: {namespaces: {from: All}}}
  - {name: wildcard-foo-example-com, port: 80, protocol: HTTP, hostname: \"*.foo.example.com\", allowedRoutes: {namespaces: {from: All}}}
  - {name: abc-foo-example-com, port: 80, protocol: HTTP, hostname: abc.foo.example.com, allowedRoutes: {namespaces: {from: All}}}",
    );
    let names = [
        "empty-hostname",
        "wildcard-example-com",
        "wildcard-foo-example-com",
        "abc-foo-example-com",
    ];
    let routes: Vec<HttpRoute> = names
        .iter()
        .map(|n| {
            route(
                n,
                "infra",
                &format!(
                    "  parentRefs: [{{name: iso, sectionName: {n}}}]\n  rules: [{{matches: [{{path: {{type: PathPrefix, value: /{n}}}}}], backendRefs: [{{name: svc, port: 80}}]}}]"
                ),
            )
        })
        .collect();
    let (_, table) = with_gateway_ports(&classes, &gateways, &routes, &["svc"], 80);
    // As the proxy does on the Gateway's own port: the listener by host.
    let served = |host: &str, path: &str, own_port: bool| {
        let gateway = own_port.then(|| "infra/iso".to_owned());
        let listener = own_port.then(|| {
            table
                .gateway_ports()
                .listener_for("infra/iso", false, host)
                .unwrap_or("")
                .to_owned()
        });
        let req = RequestSketch {
            gateway,
            listener,
            ..Default::default()
        };
        table
            .lookup(host, path, &req)
            .map(|t| t.route.to_string())
            .unwrap_or_default()
    };
    for (host, serving) in [
        ("bar.com", "empty-hostname"),
        ("bar.example.com", "wildcard-example-com"),
        ("bar.foo.example.com", "wildcard-foo-example-com"),
        ("abc.foo.example.com", "abc-foo-example-com"),
    ] {
        for n in names {
            let want = if n == serving {
                format!("infra/{n}")
            } else {
                String::new()
            };
            assert_eq!(served(host, &format!("/{n}"), true), want, "{host} /{n}");
        }
    }
    // The shared port is not isolated, as before: each route where its
    // hostnames reach.
    assert_eq!(
        served("abc.foo.example.com", "/wildcard-example-com", false),
        "infra/wildcard-example-com"
    );
}
