use super::*;
use crate::api::{CorsPolicy, StreamSettings};
use crate::model::{
    build_table, normalize_host, Endpoint, EndpointSliceObject, Objects, ResolvedRule, RoutingTable, SecretObject,
    ServicePort, SlicePort, TlsKeyPair,
};
use crate::sources::file::Limits;
use crate::sources::scan;
use crate::translate::convert_yaml::{convert_documents, Converted, InputError};
use std::net::SocketAddr;

/// A realistic ingress-nginx Ingress for an SSE service: buffering off, a
/// one-hour read timeout, CORS for one origin, the snippet SSE guides
/// recommend, TLS for two hosts, and a named port its Service resolves.
const SSE_INGRESS: &str = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: events
  namespace: prod
  labels:
    app: events
  annotations:
    nginx.ingress.kubernetes.io/proxy-buffering: "off"
    nginx.ingress.kubernetes.io/proxy-read-timeout: "3600"
    nginx.ingress.kubernetes.io/enable-cors: "true"
    nginx.ingress.kubernetes.io/cors-allow-origin: "https://app.example.com"
    nginx.ingress.kubernetes.io/configuration-snippet: |
      proxy_set_header Connection "";
      chunked_transfer_encoding off;
spec:
  ingressClassName: nginx
  tls:
    - hosts: [events.example.com, api.example.com]
      secretName: example-tls
  rules:
    - host: events.example.com
      http:
        paths:
          - path: /stream
            pathType: Prefix
            backend: {service: {name: events, port: {name: http}}}
          - path: /health
            pathType: Exact
            backend: {service: {name: events, port: {name: http}}}
    - host: api.example.com
      http:
        paths:
          - path: /
            pathType: Prefix
            backend: {service: {name: api, port: {number: 80}}}
---
# The Service behind the named port.
apiVersion: v1
kind: Service
metadata: {name: events, namespace: prod}
spec:
  ports: [{name: http, port: 8080, targetPort: 9000}]
"#;

const SSE_ROUTES: &str = r#"---
# Converted from Ingress prod/events by ssegate convert: host events.example.com (Route 1 of 2, one per host).
# nginx.ingress.kubernetes.io/configuration-snippet: not needed: the snippet is not executed, and ssegate does what it asks: ssegate keeps upstream connections alive and strips hop-by-hop headers itself; ssegate frames streamed responses itself and never buffers an event stream
# nginx.ingress.kubernetes.io/cors-allow-origin: applied as cors (cors-allow-origin)
# nginx.ingress.kubernetes.io/cors-max-age: applied as cors.maxAge: 86400s (from 1728000s: browsers cap it at a day or less)
# nginx.ingress.kubernetes.io/enable-cors: applied as cors
# nginx.ingress.kubernetes.io/proxy-buffering: applied as proxyBuffering: Disabled
# nginx.ingress.kubernetes.io/proxy-read-timeout: applied as timeouts.idle: 3600s (the longest silence between upstream bytes, not a cap on the stream)
# spec.ingressClassName: nginx is not carried over: Routes have no class, and every ssegate that watches the namespace serves them
# spec.rules[0].http.paths[0]: port "http" of Service events is 8080 (from the Service given); a Route names ports by number
# spec.rules[0].http.paths[1]: port "http" of Service events is 8080 (from the Service given); a Route names ports by number
apiVersion: ssegate.dev/v1alpha1
kind: Route
metadata:
  labels:
    app: events
  name: events-events-example-com
  namespace: prod
spec:
  hostnames:
  - events.example.com
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /stream
    - path:
        type: Exact
        value: /health
    backendRefs:
    - name: events
      port: 8080
      weight: 1
  proxyBuffering: Disabled
  timeouts:
    idle: 3600s
  cors:
    allowOrigins:
    - https://app.example.com
    allowCredentials: true
    allowHeaders:
    - DNT
    - Keep-Alive
    - User-Agent
    - X-Requested-With
    - If-Modified-Since
    - Cache-Control
    - Content-Type
    - Range
    - Authorization
    allowMethods:
    - GET
    - PUT
    - POST
    - DELETE
    - PATCH
    - OPTIONS
    maxAge: 86400s
  tls:
  - hostnames:
    - events.example.com
    secretName: example-tls
  httpsRedirect: true
---
# Converted from Ingress prod/events by ssegate convert: host api.example.com (Route 2 of 2, one per host).
# nginx.ingress.kubernetes.io/configuration-snippet: not needed: the snippet is not executed, and ssegate does what it asks: ssegate keeps upstream connections alive and strips hop-by-hop headers itself; ssegate frames streamed responses itself and never buffers an event stream
# nginx.ingress.kubernetes.io/cors-allow-origin: applied as cors (cors-allow-origin)
# nginx.ingress.kubernetes.io/cors-max-age: applied as cors.maxAge: 86400s (from 1728000s: browsers cap it at a day or less)
# nginx.ingress.kubernetes.io/enable-cors: applied as cors
# nginx.ingress.kubernetes.io/proxy-buffering: applied as proxyBuffering: Disabled
# nginx.ingress.kubernetes.io/proxy-read-timeout: applied as timeouts.idle: 3600s (the longest silence between upstream bytes, not a cap on the stream)
# spec.ingressClassName: nginx is not carried over: Routes have no class, and every ssegate that watches the namespace serves them
apiVersion: ssegate.dev/v1alpha1
kind: Route
metadata:
  labels:
    app: events
  name: events-api-example-com
  namespace: prod
spec:
  hostnames:
  - api.example.com
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /
    backendRefs:
    - name: api
      port: 80
      weight: 1
  proxyBuffering: Disabled
  timeouts:
    idle: 3600s
  cors:
    allowOrigins:
    - https://app.example.com
    allowCredentials: true
    allowHeaders:
    - DNT
    - Keep-Alive
    - User-Agent
    - X-Requested-With
    - If-Modified-Since
    - Cache-Control
    - Content-Type
    - Range
    - Authorization
    allowMethods:
    - GET
    - PUT
    - POST
    - DELETE
    - PATCH
    - OPTIONS
    maxAge: 86400s
  tls:
  - hostnames:
    - api.example.com
    secretName: example-tls
  httpsRedirect: true
---
# The Service behind the named port.
apiVersion: v1
kind: Service
metadata: {name: events, namespace: prod}
spec:
  ports: [{name: http, port: 8080, targetPort: 9000}]
"#;

fn convert(text: &str) -> Result<Converted, Vec<InputError>> {
    convert_documents(&[("in.yaml".into(), text.into())], &Limits::default(), "default")
}

fn ingress(yaml: &str) -> Ingress {
    serde_yaml::from_str(yaml).unwrap()
}

fn errors(text: &str) -> Vec<String> {
    convert(text).unwrap_err().iter().map(ToString::to_string).collect()
}

#[test]
fn an_sse_ingress_becomes_one_route_per_host_with_its_settings() {
    let out = convert(SSE_INGRESS).unwrap();
    assert_eq!(out.yaml, SSE_ROUTES, "\n{}", out.yaml);
    assert_eq!((out.ingresses, out.routes, out.passed), (1, 2, 1));

    // Every Route printed reads back and validates, with the settings the
    // annotations asked for.
    let routes: Vec<Route> = scan::split_documents(&out.yaml)
        .iter()
        .filter(|d| d.text.contains("kind: Route"))
        .map(|d| serde_yaml::from_str(d.text).unwrap())
        .collect();
    assert_eq!(routes.len(), 2);
    for route in &routes {
        let valid = route.spec.validate().expect("a printed Route validates");
        let s = valid.rules[0].settings;
        assert_eq!(s.buffering, ProxyBuffering::Disabled);
        assert_eq!(s.timeouts.idle, Some(std::time::Duration::from_secs(3600)));
        assert!(valid.cors.is_some());
    }
    assert!(!out.yaml.contains(": Off") && !out.yaml.contains(": On"));
}

/// Everything that can be looked up in a table for one request, except
/// which object and rule serve it (their names differ by design).
#[derive(Debug, PartialEq)]
struct Served {
    backends: Vec<(u32, Vec<SocketAddr>)>,
    settings: StreamSettings,
    cors: Option<CorsPolicy>,
    max_concurrent_streams: Option<usize>,
}

fn served(rule: &ResolvedRule) -> Served {
    Served {
        backends: rule.backends.iter().map(|b| (b.weight, b.endpoints.to_vec())).collect(),
        settings: rule.settings,
        cors: rule.cors.as_deref().cloned(),
        max_concurrent_streams: rule.max_concurrent_streams,
    }
}

/// The Ingress the round trip serves both ways: several hosts (one
/// wildcard), a rule without a host, a defaultBackend, a path listed twice,
/// a named port, a wildcard certificate, and settings from both prefixes,
/// one of them refused by the validation.
const ROUND_TRIP: &str = r#"
metadata:
  name: mixed
  namespace: prod
  annotations:
    nginx.ingress.kubernetes.io/proxy-buffering: "off"
    nginx.ingress.kubernetes.io/proxy-read-timeout: "3600"
    nginx.ingress.kubernetes.io/proxy-connect-timeout: "3"
    nginx.ingress.kubernetes.io/enable-cors: "true"
    nginx.ingress.kubernetes.io/rewrite-target: /
    ssegate.dev/heartbeat-interval: 15s
    ssegate.dev/max-concurrent-streams: "100"
    ssegate.dev/load-balancing: RoundRobin
    ssegate.dev/buffer-size: "100"
spec:
  tls:
    - hosts: [a.example.com]
      secretName: a-cert
    - hosts: ["*.wild.example.com", extra.example.com]
      secretName: wild-cert
  rules:
    - host: a.example.com
      http:
        paths:
          - {path: /events/, pathType: Prefix, backend: {service: {name: events, port: {name: http}}}}
          - {path: /events, pathType: ImplementationSpecific, backend: {service: {name: api, port: {number: 80}}}}
          - {path: /status, pathType: Exact, backend: {service: {name: api, port: {number: 80}}}}
          - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
    - host: "*.wild.example.com"
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: events, port: {number: 8080}}}}
    - http:
        paths:
          - {path: /open, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
    - host: b.example.com
  defaultBackend: {service: {name: fallback, port: {number: 80}}}
"#;

fn objects() -> Objects {
    let mut objects = Objects::default();
    for (name, port, ip) in [("events", 8080, 1), ("api", 80, 2), ("fallback", 80, 3)] {
        let key = ObjectKey::new("prod", name);
        let port_name = if name == "events" { "http" } else { "" };
        objects.services.insert(
            key.clone(),
            ServiceObject {
                key: key.clone(),
                ports: vec![ServicePort {
                    name: port_name.into(),
                    port,
                }],
            },
        );
        objects.slices.insert(
            ObjectKey::new("prod", format!("{name}-abc")),
            EndpointSliceObject {
                key: ObjectKey::new("prod", format!("{name}-abc")),
                service: name.into(),
                ports: vec![SlicePort {
                    name: port_name.into(),
                    port: 9000,
                }],
                endpoints: vec![Endpoint {
                    addresses: vec![format!("10.0.0.{ip}").parse().unwrap()],
                    ready: true,
                }],
            },
        );
    }
    for secret in ["a-cert", "wild-cert"] {
        let key = ObjectKey::new("prod", secret);
        objects.secrets.insert(
            key.clone(),
            SecretObject {
                key,
                pair: Some(TlsKeyPair::new(secret.as_bytes(), b"key")),
                problem: None,
            },
        );
    }
    objects
}

/// Every (host, match) a table holds, with the endpoints it goes to.
fn matches(table: &RoutingTable) -> Vec<(String, &'static str, String, Vec<SocketAddr>)> {
    let mut all: Vec<_> = table
        .describe()
        .hosts
        .into_iter()
        .flat_map(|h| {
            h.matches.into_iter().map(move |m| {
                let endpoints = m.backends.iter().flat_map(|b| b.endpoints.clone()).collect();
                (h.host.clone(), m.kind, m.path, endpoints)
            })
        })
        .collect();
    all.sort();
    all
}

#[test]
fn the_routes_serve_what_the_ingress_serves() {
    let ing = ingress(ROUND_TRIP);
    let services = objects().services;
    let converted = ingress_to_routes(&ing, &services, "default").unwrap();

    let mut by_ingress = objects();
    let def = super::super::ingress::translate(
        ObjectKey::new("prod", "mixed"),
        None,
        1,
        ing.spec.as_ref().unwrap(),
        ing.metadata.annotations.as_ref().unwrap(),
    );
    by_ingress.ingresses.insert(def.key.clone(), def);
    let mut by_routes = objects();
    for r in &converted {
        let key = ObjectKey::new("prod", r.route.metadata.name.clone().unwrap());
        // Through YAML, as a user applies it.
        let text = serde_yaml::to_string(&r.route).unwrap();
        let back: Route = serde_yaml::from_str(&text).unwrap();
        by_routes
            .routes
            .insert(key.clone(), super::super::route::translate(key, None, 1, &back.spec));
    }
    let ingress_table = build_table(&by_ingress, 1);
    let route_table = build_table(&by_routes, 1);

    for report in ingress_table.reports.iter().chain(&route_table.reports) {
        assert!(report.accepted.is_true(), "{report:?}");
        assert!(report.resolved_refs.is_true(), "{report:?}");
    }
    assert_eq!(
        route_table.reports.len(),
        4,
        "a.example.com, *.wild.example.com, any host, b.example.com"
    );
    assert_eq!(matches(&ingress_table), matches(&route_table));
    assert_eq!(matches(&route_table).len(), 8);

    let requests = [
        ("a.example.com", "/events"),
        ("a.example.com", "/events/x"),
        ("a.example.com", "/status"),
        ("a.example.com", "/status/x"),
        ("a.example.com", "/api/v1"),
        ("a.example.com", "/other"),
        ("a.example.com", "/open"),
        ("x.wild.example.com", "/events"),
        ("x.y.wild.example.com", "/"),
        ("b.example.com", "/anything"),
        ("b.example.com", "/open/x"),
        ("unknown.test", "/open"),
        ("unknown.test", "/"),
        ("A.Example.com:443", "/events"),
    ];
    let mut hits = 0;
    for (host, path) in requests {
        let host = normalize_host(host);
        let a = ingress_table.lookup(&host, path, &crate::model::RequestSketch::default());
        let b = route_table.lookup(&host, path, &crate::model::RequestSketch::default());
        assert_eq!(a.map(|r| served(r)), b.map(|r| served(r)), "{host}{path}");
        hits += usize::from(a.is_some());
        // The HTTPS redirect is carried as the Route's httpsRedirect.
        if let (Some(a), Some(b)) = (a, b) {
            assert_eq!(
                a.https_redirect,
                host == "a.example.com" || host.ends_with(".wild.example.com"),
                "{host}"
            );
            assert_eq!(b.https_redirect, a.https_redirect, "{host}");
        }
    }
    assert_eq!(
        hits,
        requests.len(),
        "the defaultBackend is also on any host, for the rule without one"
    );
    let served_a = served(
        ingress_table
            .lookup("a.example.com", "/events", &crate::model::RequestSketch::default())
            .unwrap(),
    );
    assert_eq!(served_a.settings.buffering, ProxyBuffering::Disabled);
    assert_eq!(
        served_a.settings.buffer_size,
        crate::api::DEFAULT_BUFFER_SIZE,
        "100 bytes refused"
    );
    assert_eq!(served_a.settings.heartbeat, Some(std::time::Duration::from_secs(15)));
    assert_eq!(
        served_a.backends,
        [(1, vec!["10.0.0.1:9000".parse().unwrap()])],
        "the named port"
    );

    for name in [
        "a.example.com",
        "x.wild.example.com",
        "extra.example.com",
        "b.example.com",
    ] {
        assert_eq!(
            ingress_table.certificate_for(name).map(|c| c.id),
            route_table.certificate_for(name).map(|c| c.id),
            "{name}"
        );
    }
    assert!(route_table.certificate_for("extra.example.com").is_some());

    // What differs is said above the Routes.
    let a = &converted[0];
    assert_eq!(a.route.metadata.name.as_deref(), Some("mixed-a-example-com"));
    let text = a.comments.join("\n");
    for expected in [
        "spec.rules[0].http.paths[1] (PathPrefix /events) is not converted: spec.rules[0].http.paths[0] has the same match",
        "maxConcurrentStreams: the Ingress's 100 open streams were shared by its 4 hosts",
        "nginx.ingress.kubernetes.io/rewrite-target: ignored: ssegate forwards the request's own host and path unchanged",
        "annotations setting bufferSize: must be between 1Ki and 16Mi; the default applies",
        "spec.rules[0].http.paths[0]: port \"http\" of Service events is 8080",
    ] {
        assert!(text.contains(expected), "{expected}\n{text}");
    }
    assert!(!text.contains("spec.defaultBackend"), "{text}");
    assert!(
        converted[1].comments.contains(&"spec.defaultBackend (PathPrefix /) is not converted: spec.rules[1].http.paths[0] has the same match and serves it, as when the Ingress is served".to_string()),
        "{:?}",
        converted[1].comments
    );
    let names: Vec<_> = converted
        .iter()
        .map(|r| r.route.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "mixed-a-example-com",
            "mixed-wildcard-wild-example-com",
            "mixed-any-host",
            "mixed-b-example-com"
        ]
    );
    // Certificates go to the Route of their host; a name no rule has goes
    // with the first Route.
    let tls: Vec<Vec<(Vec<String>, String)>> = converted
        .iter()
        .map(|r| {
            r.route
                .spec
                .tls
                .iter()
                .map(|t| (t.hostnames.clone(), t.secret_name.clone()))
                .collect()
        })
        .collect();
    assert_eq!(
        tls,
        [
            vec![
                (vec!["a.example.com".to_string()], "a-cert".to_string()),
                (vec!["extra.example.com".to_string()], "wild-cert".to_string())
            ],
            vec![(vec!["*.wild.example.com".to_string()], "wild-cert".to_string())],
            vec![],
            vec![],
        ]
    );
}

#[test]
fn a_named_port_without_its_service_is_an_error_naming_the_ingress_path_and_port() {
    let text = SSE_INGRESS.split("---").next().unwrap();
    assert_eq!(
        errors(text),
        [
            "in.yaml: document 1: Ingress prod/events: spec.rules[0].http.paths[0].backend.service.port.name: \"http\" is a named port, and a Route needs its number: Service prod/events is not in the input; add the Service to the input (kubectl get service -n prod events -o yaml) or write port.number",
            "in.yaml: document 1: Ingress prod/events: spec.rules[0].http.paths[1].backend.service.port.name: \"http\" is a named port, and a Route needs its number: Service prod/events is not in the input; add the Service to the input (kubectl get service -n prod events -o yaml) or write port.number",
        ]
    );
    let wrong_port = SSE_INGRESS.replace("name: http, port: 8080", "name: web, port: 8080");
    assert!(
        errors(&wrong_port)[0].contains("Service prod/events has no port named \"http\""),
        "{:?}",
        errors(&wrong_port)
    );
}

#[test]
fn what_the_ingress_would_be_refused_for_is_an_error() {
    let regex = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: re}
spec:
  rules:
    - http:
        paths:
          - {path: "/api/(.*)", pathType: ImplementationSpecific, backend: {service: {name: s, port: {number: 80}}}}
"#;
    assert_eq!(
        errors(regex),
        ["in.yaml: document 1: Ingress default/re: spec.rules[0].http.paths[0].path: \"/api/(.*)\" reads as a regular expression, which ssegate does not match: use pathType Prefix or Exact; ssegate would not serve this Ingress either, so it is not converted"]
    );
    let old = "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: old}\n";
    assert!(errors(old)[0].contains("extensions/v1beta1 Ingress is not converted"));
}

#[test]
fn route_names_follow_the_hosts() {
    assert_eq!(route_names("web", &["a.example.com"]), ["web"]);
    assert_eq!(route_names("web", &[""]), ["web"]);
    assert_eq!(
        route_names("web", &["a.example.com", "*.example.com", ""]),
        ["web-a-example-com", "web-wildcard-example-com", "web-any-host"]
    );
    // `a-b.test` and `a.b.test` would both be web-a-b-test.
    assert_eq!(route_names("web", &["a-b.test", "a.b.test"]), ["web-1", "web-2"]);
    let label = "a".repeat(63);
    let long = format!("{label}.{label}.{label}.{}", "b".repeat(61));
    assert_eq!(long.len(), 253);
    assert_eq!(route_names("web", &[long.as_str(), "b.test"]), ["web-1", "web-2"]);
}

#[test]
fn other_documents_pass_through_and_lists_are_read_item_by_item() {
    let text = r#"# a comment that stays
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
--- # the Service
apiVersion: v1
kind: Service
metadata: {name: s}
spec: {ports: [{name: web, port: 80}]}
...
---
apiVersion: v1
kind: List
items:
  - apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata: {name: one, namespace: default}
    spec:
      defaultBackend: {service: {name: s, port: {name: web}}}
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: c}
"#;
    let out = convert(text).unwrap();
    assert_eq!((out.ingresses, out.routes, out.passed), (1, 1, 3));
    let docs: Vec<&str> = scan::split_documents(&out.yaml).iter().map(|d| d.text).collect();
    assert_eq!(
        docs[..2],
        [
            "---\n# a comment that stays\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
            "---\n# the Service\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{name: web, port: 80}]}\n",
        ]
    );
    assert!(
        docs[2].contains("kind: Route\nmetadata:\n  name: one\n  namespace: default\n"),
        "{}",
        docs[2]
    );
    assert!(
        docs[2].contains("port: 80\n"),
        "the named port resolved from the Service before it"
    );
    assert_eq!(docs[3], "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n");

    // Two Ingresses that would make the same Route.
    let twice = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x}\nspec: {defaultBackend: {service: {name: s, port: {number: 80}}}}\n";
    let e = errors(&format!("{twice}---\n{twice}"));
    assert_eq!(
        e,
        ["in.yaml: document 2: Route default/x is also made from in.yaml: document 1: rename one of the Ingresses"]
    );
    // Limits apply as to the folder source.
    let limits = Limits {
        max_documents: 1,
        ..Limits::default()
    };
    let e = convert_documents(&[("f".into(), format!("{twice}---\n{twice}"))], &limits, "default").unwrap_err();
    assert_eq!(
        e[0].to_string(),
        "f: holds 2 documents; at most 1 are read from one input"
    );
}

#[test]
fn an_ingress_whose_access_restrictions_are_not_enforced_is_not_converted() {
    let text = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: admin
  namespace: prod
  annotations:
    nginx.ingress.kubernetes.io/auth-tls-verify-client: "on"
    nginx.ingress.kubernetes.io/whitelist-source-range: "10.0.0.0/33"
spec:
  rules:
    - http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;
    let errors = errors(text);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("in.yaml: document 1: Ingress prod/admin: nginx.ingress.kubernetes.io/auth-tls-verify-client: not enforced by ssegate, so the Ingress is not served (every path answers 503): "), "{errors:?}");
    assert!(errors[0].ends_with("; not converted"), "{errors:?}");
    assert!(
        errors[1].contains("whitelist-source-range: not enforced by ssegate, so the Ingress is not served (every path answers 503): cannot be enforced as written: "),
        "{errors:?}"
    );

    // With the opt-out, it converts, and the comments say what is not enforced.
    let opted = text.replace(
        "    nginx.ingress.kubernetes.io/whitelist-source-range: \"10.0.0.0/33\"",
        "    ssegate.dev/unenforced-annotations: auth-tls-verify-client",
    );
    let out = convert(&opted).unwrap();
    assert!(
        out.yaml
            .contains("# nginx.ingress.kubernetes.io/auth-tls-verify-client: NOT ENFORCED: served without it"),
        "{}",
        out.yaml
    );
}

#[test]
fn access_annotations_become_the_routes_access() {
    let text = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: admin
  namespace: prod
  annotations:
    nginx.ingress.kubernetes.io/whitelist-source-range: "10.0.0.0/8, 192.168.1.7"
    nginx.ingress.kubernetes.io/denylist-source-range: "10.9.0.0/16"
    nginx.ingress.kubernetes.io/auth-type: basic
    nginx.ingress.kubernetes.io/auth-secret: prod/users
    nginx.ingress.kubernetes.io/auth-secret-type: auth-map
    nginx.ingress.kubernetes.io/auth-realm: Staff
    nginx.ingress.kubernetes.io/auth-url: "http://oauth2-proxy.auth.svc/oauth2/auth"
    nginx.ingress.kubernetes.io/auth-signin: "https://$host/oauth2/start?rd=$escaped_request_uri"
    nginx.ingress.kubernetes.io/auth-response-headers: "X-Auth-Request-User, X-Auth-Request-Email"
    nginx.ingress.kubernetes.io/auth-cache-key: "$cookie__oauth2_proxy"
    nginx.ingress.kubernetes.io/auth-cache-duration: "200 202 1m"
    nginx.ingress.kubernetes.io/auth-keepalive: "4"
    nginx.ingress.kubernetes.io/auth-keepalive-timeout: "30"
    nginx.ingress.kubernetes.io/satisfy: any
    nginx.ingress.kubernetes.io/limit-connections: "3"
    nginx.ingress.kubernetes.io/limit-rps: "5"
    nginx.ingress.kubernetes.io/limit-whitelist: "127.0.0.1"
spec:
  rules:
    - http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;
    let out = convert(text).unwrap();
    let access = r#"  access:
    allowSourceRanges:
    - 10.0.0.0/8
    - 192.168.1.7/32
    denySourceRanges:
    - 10.9.0.0/16
    basicAuth:
      secretName: users
      format: AuthMap
      realm: Staff
    externalAuth:
      url: http://oauth2-proxy.auth.svc/oauth2/auth
      signinUrl: https://$host/oauth2/start?rd=$escaped_request_uri
      responseHeaders:
      - X-Auth-Request-User
      - X-Auth-Request-Email
      cache:
        key: $cookie__oauth2_proxy
        duration: 200 202 1m
      keepalive:
        connections: 4
        timeout: 30s
    satisfy: Any
    clientLimits:
      connections: 3
      requestsPerSecond: 5
      burstMultiplier: 5
      exemptSourceRanges:
      - 127.0.0.1/32
"#;
    assert!(out.yaml.ends_with(access), "{}", out.yaml);
    assert!(!out.yaml.contains("NOT ENFORCED"), "{}", out.yaml);

    // The Route validates to the policy the Ingress is served with.
    let ingress: Ingress = serde_yaml::from_str(text).unwrap();
    let routes = ingress_to_routes(&ingress, &BTreeMap::new(), "default").unwrap();
    let from_route = routes[0].route.spec.validate().unwrap().rules[0].access.clone();
    let served = crate::translate::ingress::translate(
        ObjectKey::new("prod", "admin"),
        None,
        0,
        ingress.spec.as_ref().unwrap(),
        ingress.metadata.annotations.as_ref().unwrap(),
    );
    let from_ingress = served.translated.unwrap().rules[0].access.clone();
    assert!(from_route.is_some());
    assert_eq!(from_route, from_ingress);
}
