//! The ExternalAuth filter through the whole translation: the policy each
//! rule gets, the refusals (GRPC, a forwarded body, a value that cannot be
//! read) and that they close the rule rather than open it to another
//! route, and ReferenceGrant for a cross-namespace backendRef.

use super::super::{translate, GatewayInputs, GatewayOutcome};
use crate::access::external_auth::Flavour;
use crate::api::gateway::{Gateway, GatewayClass, HttpRoute, ReferenceGrant};
use crate::api::{StreamPolicy, ValidAccess};
use crate::model::{build_table, ObjectKey, Objects, RequestSketch, RoutingTable, ServiceObject, ServicePort};
use std::collections::BTreeMap;
use std::sync::Arc;

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sse}
spec: {controllerName: ssegate.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: apps}
spec:
  gatewayClassName: sse
  listeners: [{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}]";

fn docs<T: serde::de::DeserializeOwned>(yaml: &str) -> Vec<T> {
    yaml.split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect()
}

/// An HTTPRoute `name` in `apps` for host `a.example.com`, one rule for
/// `/guarded` with `filter` (YAML of one filter, indented for the list).
fn guarded(name: &str, filter: &str) -> HttpRoute {
    serde_yaml::from_str(&format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: apps}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [a.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /guarded}}}}]
    filters:
{filter}
    backendRefs: [{{name: svc, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /open}}}}]
    backendRefs: [{{name: svc, port: 80}}]
"
    ))
    .unwrap()
}

/// A route of another object serving all of `a.example.com`.
fn broad() -> HttpRoute {
    serde_yaml::from_str(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broad, namespace: apps, creationTimestamp: '2020-01-01T00:00:00Z'}
spec:
  parentRefs: [{name: gw}]
  hostnames: [a.example.com]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
",
    )
    .unwrap()
}

fn filter(external_auth: &str) -> String {
    format!("    - type: ExternalAuth\n      externalAuth: {external_auth}")
}

const HTTP_AUTH: &str = "{protocol: HTTP, backendRef: {name: ext-auth, port: 8080}, http: {path: /check, allowedHeaders: [Cookie], allowedResponseHeaders: [X-Auth-User]}}";

fn outcome(routes: &[HttpRoute], grants: &[ReferenceGrant], policies: &[StreamPolicy]) -> GatewayOutcome {
    let classes: Vec<GatewayClass> = docs(GATEWAY.split("\n---\n").next().unwrap());
    let gateways: Vec<Gateway> = docs(GATEWAY.split("\n---\n").nth(1).unwrap());
    translate(&GatewayInputs {
        classes: &classes,
        gateways: &gateways,
        routes,
        grants,
        policies,
        namespace_labels: &BTreeMap::new(),
        secrets: &BTreeMap::new(),
        default_namespace: "default",
        gateway_ports: None,
        held_ports: &BTreeMap::new(),
    })
}

/// Rule `index`'s access policy in the translation of route `name`.
fn rule_access(o: &GatewayOutcome, name: &str, index: usize) -> Option<Arc<ValidAccess>> {
    let d = o.definitions.iter().find(|d| d.key.name == name).unwrap();
    d.translated.as_ref().unwrap().rules[index].access.clone()
}

fn accepted(o: &GatewayOutcome, name: &str) -> (bool, String, String) {
    let (_, _, plan) = o.routes.iter().find(|(k, _, _)| k.name == name).unwrap();
    let v = &plan.parents[0].accepted;
    (v.is_true(), v.reason.to_owned(), v.message.clone())
}

fn build(o: &GatewayOutcome) -> RoutingTable {
    let mut objects = Objects::default();
    for d in &o.definitions {
        objects.gateway_api.insert((d.kind, d.key.clone()), d.clone());
    }
    for ns in ["apps", "auth"] {
        for name in ["svc", "ext-auth"] {
            objects.services.insert(
                ObjectKey::new(ns, name),
                ServiceObject {
                    key: ObjectKey::new(ns, name),
                    ports: vec![
                        ServicePort {
                            name: "".into(),
                            port: 80,
                        },
                        ServicePort {
                            name: "auth".into(),
                            port: 8080,
                        },
                    ],
                },
            );
        }
    }
    build_table(&objects, 1)
}

#[test]
fn an_http_filter_becomes_the_rules_external_auth_with_gateway_api_rules() {
    let o = outcome(&[guarded("app", &filter(HTTP_AUTH))], &[], &[]);
    let (ok, reason, _) = accepted(&o, "app");
    assert!(ok, "{reason}");
    let access = rule_access(&o, "app", 0).expect("the filter's policy");
    assert!(access.closed.is_empty() && access.also.is_none());
    assert!(access.allow.is_none() && access.basic.is_none() && access.limits.is_none());
    let external = access.external.as_ref().unwrap();
    assert_eq!(external.refused, None);
    let config = &external.config;
    assert_eq!(config.flavour(), Flavour::GatewayApi);
    assert_eq!(
        config.url().fixed_uri().unwrap(),
        "http://ext-auth.apps.svc:8080/check",
        "the backendRef's namespace defaults to the route's"
    );
    assert_eq!(config.response_headers(), ["x-auth-user"]);
    assert_eq!(rule_access(&o, "app", 1), None, "the other rule is open");
    let (_, _, plan) = o.routes.iter().find(|(k, _, _)| k.name == "app").unwrap();
    assert_eq!(plan.refused_refs, None);
    assert_eq!(plan.attached.len(), 1);
}

/// The filter adds to the StreamPolicies' access: both must pass, the
/// policies' first.
#[test]
fn the_filter_adds_to_a_stream_policys_access() {
    let policy: StreamPolicy = serde_yaml::from_str(
        "apiVersion: ssegate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: staff, namespace: apps}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: app}]
  access: {allowSourceRanges: [10.0.0.0/8]}
",
    )
    .unwrap();
    let o = outcome(&[guarded("app", &filter(HTTP_AUTH))], &[], &[policy]);
    let first = rule_access(&o, "app", 0).unwrap();
    assert!(first.allow.is_some() && first.external.is_none(), "{first:?}");
    assert_eq!(first.owner.as_deref(), Some("StreamPolicy apps/staff"));
    let second = first.also.as_ref().expect("the filter's, chained");
    assert_eq!(second.external.as_ref().unwrap().config.flavour(), Flavour::GatewayApi);
    assert!(second.also.is_none());
    let open = rule_access(&o, "app", 1).unwrap();
    assert!(open.allow.is_some() && open.also.is_none(), "the policy alone");

    // Two filters on one rule: each is asked, in order.
    let two = format!(
        "{}\n{}",
        filter(HTTP_AUTH),
        filter("{protocol: HTTP, backendRef: {name: ext-auth, port: 80}}")
    );
    let o = outcome(&[guarded("app", &two)], &[], &[]);
    let first = rule_access(&o, "app", 0).unwrap();
    let second = first.also.as_ref().unwrap();
    assert_eq!(
        (
            first.external.as_ref().unwrap().config.url().fixed_port(),
            second.external.as_ref().unwrap().config.url().fixed_port()
        ),
        (Some(8080), Some(80))
    );
}

/// GRPC, a forwarded body, an unknown protocol and an unreadable value are
/// refused (UnsupportedValue, naming the field), and the route keeps its
/// paths with every rule closed (503): the broader route does not get them.
#[test]
fn what_cannot_be_enforced_refuses_the_route_and_holds_its_paths_closed() {
    let cases = [
        (
            "{protocol: GRPC, backendRef: {name: ext-auth, port: 9001}, grpc: {allowedHeaders: [Cookie]}}",
            "spec.rules[0].filters[0].externalAuth.protocol: GRPC (Envoy's ext_authz over gRPC) is not supported, only HTTP",
        ),
        (
            "{protocol: HTTP, backendRef: {name: ext-auth, port: 8080}, forwardBody: {maxSize: 1024}}",
            "spec.rules[0].filters[0].externalAuth.forwardBody.maxSize: 1024: forwarding the request body to the auth service is not supported (0 or unset: no body)",
        ),
        (
            "{protocol: Thrift, backendRef: {name: ext-auth, port: 8080}}",
            "spec.rules[0].filters[0].externalAuth.protocol: \"Thrift\" is not supported, only HTTP",
        ),
        (
            "{protocol: HTTP, backendRef: {name: ext-auth, port: 8080}, http: {path: /a/../b}}",
            "spec.rules[0].filters[0].externalAuth.http.path: has a `.` or `..` segment, which would take the auth service's path outside the prefix",
        ),
        (
            "{protocol: HTTP, backendRef: {name: ext-auth}}",
            "spec.rules[0].filters[0].externalAuth.backendRef: a Service needs a port",
        ),
    ];
    for (auth, why) in cases {
        let o = outcome(&[broad(), guarded("app", &filter(auth))], &[], &[]);
        let (ok, reason, message) = accepted(&o, "app");
        assert!(!ok);
        assert_eq!(reason, "UnsupportedValue");
        assert_eq!(
            message,
            format!("{why}; its rules restrict access, so its paths are held and every request is answered 503 rather than left to another route")
        );
        let closed = format!("HTTPRoute apps/app is not accepted: {why}");
        for rule in 0..2 {
            let access = rule_access(&o, "app", rule).unwrap();
            assert_eq!(access.closed, std::slice::from_ref(&closed), "{auth}: rule {rule}");
        }
        let (_, _, plan) = o.routes.iter().find(|(k, _, _)| k.name == "app").unwrap();
        assert!(plan.attached.is_empty(), "not counted as attached");

        let table = build(&o);
        for path in ["/guarded/x", "/open"] {
            let rule = table.lookup("a.example.com", path, &RequestSketch::default()).unwrap();
            assert_eq!(&*rule.route, "apps/app", "{auth}: {path} stays with the refused route");
            assert!(
                rule.access.as_ref().unwrap().closed.is_some(),
                "{auth}: {path} answers 503"
            );
        }
        let elsewhere = table
            .lookup("a.example.com", "/other", &RequestSketch::default())
            .unwrap();
        assert_eq!(&*elsewhere.route, "apps/broad");
    }
    // forwardBody with maxSize 0 (or none) forwards nothing: accepted.
    let zero = "{protocol: HTTP, backendRef: {name: ext-auth, port: 8080}, forwardBody: {maxSize: 0}}";
    let o = outcome(&[guarded("app", &filter(zero))], &[], &[]);
    assert!(accepted(&o, "app").0);
}

/// A route refused for something unrelated to access is left out of the
/// table as before; with an ExternalAuth filter anywhere, even a valid one
/// or one on a backendRef (which is refused), its paths are held closed.
#[test]
fn a_refused_route_is_held_only_when_it_restricts_access() {
    let mirror = "    - type: RequestMirror\n      requestMirror: {backendRef: {name: svc, port: 80}}";
    let o = outcome(&[broad(), guarded("app", mirror)], &[], &[]);
    assert_eq!(accepted(&o, "app").1, "UnsupportedValue");
    assert!(o.definitions.iter().all(|d| d.key.name != "app"), "not held");

    let both = format!("{}\n{mirror}", filter(HTTP_AUTH));
    let o = outcome(&[broad(), guarded("app", &both)], &[], &[]);
    let (ok, _, message) = accepted(&o, "app");
    assert!(!ok);
    assert!(
        message
            .starts_with("spec.rules[0].filters[1]: filter RequestMirror is not supported; its rules restrict access"),
        "{message}"
    );
    assert!(rule_access(&o, "app", 0).unwrap().is_closed());

    let on_backend: HttpRoute = serde_yaml::from_str(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app, namespace: apps}
spec:
  parentRefs: [{name: gw}]
  hostnames: [a.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /guarded}}]
    backendRefs:
    - name: svc
      port: 80
      filters: [{type: ExternalAuth, externalAuth: {protocol: HTTP, backendRef: {name: ext-auth, port: 8080}}}]
",
    )
    .unwrap();
    let o = outcome(&[broad(), on_backend], &[], &[]);
    assert!(!accepted(&o, "app").0);
    assert!(rule_access(&o, "app", 0).unwrap().is_closed());
}

/// A backendRef in another namespace needs a ReferenceGrant, as a backend
/// does; refused, the route says so (ResolvedRefs) and the filter answers
/// 500. One that is not a Service is InvalidKind.
#[test]
fn a_cross_namespace_backend_ref_needs_a_reference_grant() {
    let cross = "{protocol: HTTP, backendRef: {name: ext-auth, namespace: auth, port: 8080}}";
    let o = outcome(&[guarded("app", &filter(cross))], &[], &[]);
    assert!(accepted(&o, "app").0, "accepted: the rule fails closed with 500");
    let (_, _, plan) = o.routes.iter().find(|(k, _, _)| k.name == "app").unwrap();
    let refused = plan.refused_refs.as_ref().unwrap();
    let why = "spec.rules[0].filters[0].externalAuth.backendRef: Service auth/ext-auth is in another namespace and no ReferenceGrant allows it";
    assert_eq!((refused.reason, refused.message.as_str()), ("RefNotPermitted", why));
    let access = rule_access(&o, "app", 0).unwrap();
    let external = access.external.as_ref().unwrap();
    assert_eq!(external.refused.as_deref(), Some(why));
    assert_eq!(
        external.config.url().fixed_uri().unwrap(),
        "http://ext-auth.auth.svc:8080/"
    );
    // In the table: the Service is not called; every request gets 500.
    let table = build(&o);
    let rule = table
        .lookup("a.example.com", "/guarded", &RequestSketch::default())
        .unwrap();
    let service = rule.access.as_ref().unwrap().external.as_ref().unwrap().service.clone();
    assert_eq!(
        &*service.unwrap().unwrap_err(),
        format!("external authentication: {why}; its requests are answered 500")
    );

    let grants: Vec<ReferenceGrant> = docs(
        "apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: apps-auth, namespace: auth}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]
  to: [{group: '', kind: Service, name: ext-auth}]
",
    );
    let o = outcome(&[guarded("app", &filter(cross))], &grants, &[]);
    let (_, _, plan) = o.routes.iter().find(|(k, _, _)| k.name == "app").unwrap();
    assert_eq!(plan.refused_refs, None);
    let granted = rule_access(&o, "app", 0).unwrap();
    assert_eq!(granted.external.as_ref().unwrap().refused, None);
    let table = build(&o);
    let rule = table
        .lookup("a.example.com", "/guarded", &RequestSketch::default())
        .unwrap();
    let service = rule.access.as_ref().unwrap().external.as_ref().unwrap().service.clone();
    // Looked up now: the test's Service has no endpoints.
    let why = service.unwrap().unwrap_err();
    assert_eq!(
        &*why,
        "external authentication: Service auth/ext-auth:8080 has no ready endpoints; its requests are answered 500"
    );

    let other_kind = "{protocol: HTTP, backendRef: {group: example.com, kind: AuthBackend, name: ext-auth}}";
    let o = outcome(&[guarded("app", &filter(other_kind))], &[], &[]);
    let (_, _, plan) = o.routes.iter().find(|(k, _, _)| k.name == "app").unwrap();
    let refused = plan.refused_refs.as_ref().unwrap();
    assert_eq!(refused.reason, "InvalidKind");
    assert_eq!(
        refused.message,
        "spec.rules[0].filters[0].externalAuth.backendRef: AuthBackend ext-auth is not a Service"
    );
}
