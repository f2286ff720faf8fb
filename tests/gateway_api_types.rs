//! The Gateway API foundation: the CRDs in `crds/gateway-api/` are the pinned
//! release unchanged, the kopium types in `src/api/gateway/` are what the
//! script generates from them today, realistic objects survive a round trip
//! through the types, and a real kube-apiserver with the CRDs installed stores
//! objects that the types read back whole, defaults and status included.

mod common;

use common::cluster::control_plane;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use ssegate::api::gateway::gateway::GatewayListenersAllowedRoutesNamespacesFrom;
use ssegate::api::gateway::http_route::{
    HttpRouteRulesFiltersExternalAuthProtocol, HttpRouteRulesFiltersType, HttpRouteRulesMatchesMethod,
    HttpRouteRulesMatchesPathType,
};
use ssegate::api::gateway::{Gateway, GatewayClass, HttpRoute, ReferenceGrant, BUNDLE_VERSION};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CRD_SCRIPT: &str = "scripts/gateway-api-crds.sh";

/// `NAME=value` from a script, so the test and the script share one pin.
fn script_var(script: &str, name: &str) -> String {
    let text = std::fs::read_to_string(format!("{ROOT}/{script}")).unwrap();
    let prefix = format!("{name}=");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{script} has no {name}="));
    line[prefix.len()..].trim_matches(|c| c == '\'' || c == '"').to_owned()
}

/// A bash array assigned in a script (`NAME=(a b c)`), so the test and the
/// script share one list.
fn script_list(script: &str, name: &str) -> Vec<String> {
    script_var(script, name)
        .trim_matches(|c| c == '(' || c == ')')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn crd(file: &str) -> Value {
    let path = format!("{ROOT}/crds/gateway-api/{file}");
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The versions a CRD serves, with whether each is the storage version.
fn served_versions(crd: &Value) -> Vec<(String, bool)> {
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["served"] == json!(true))
        .map(|v| (v["name"].as_str().unwrap().to_owned(), v["storage"] == json!(true)))
        .collect()
}

#[test]
fn crd_files_are_the_pinned_release_unchanged() {
    let version = script_var(CRD_SCRIPT, "GATEWAY_API_VERSION");
    assert!(
        version.starts_with("v1.6."),
        "issue 15 pins Gateway API v1.6.x, the script has {version}"
    );
    assert_eq!(BUNDLE_VERSION, version, "src/api/gateway/mod.rs BUNDLE_VERSION");
    let kinds = script_list(CRD_SCRIPT, "KINDS");
    assert_eq!(kinds, ["gatewayclasses", "gateways", "httproutes", "referencegrants"]);
    let want: BTreeSet<String> = kinds
        .iter()
        .map(|k| format!("gateway.networking.k8s.io_{k}.yaml"))
        .collect();
    // The experimental channel's HTTPRoute, which the types are generated
    // from, in a subfolder that `kubectl apply -f crds/gateway-api/` skips.
    let experimental_kinds = script_list(CRD_SCRIPT, "EXPERIMENTAL_KINDS");
    assert_eq!(experimental_kinds, ["httproutes"]);
    let want_experimental: BTreeSet<String> = experimental_kinds
        .iter()
        .map(|k| format!("experimental/gateway.networking.k8s.io_{k}.yaml"))
        .collect();

    let dir = Path::new(ROOT).join("crds/gateway-api");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    assert_eq!(
        on_disk, want,
        "crds/gateway-api/ holds other CRDs than the script copies"
    );
    let on_disk_experimental: BTreeSet<String> = std::fs::read_dir(dir.join("experimental"))
        .unwrap()
        .map(|e| format!("experimental/{}", e.unwrap().file_name().into_string().unwrap()))
        .collect();
    assert_eq!(
        on_disk_experimental, want_experimental,
        "crds/gateway-api/experimental/ holds other files than the script copies"
    );

    // Every byte as the script copied it: SHA256SUMS is written by the script
    // from the module it verified against the pinned module checksum.
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let listed: BTreeSet<String> = sums
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
        .collect();
    let every: BTreeSet<String> = want.iter().chain(&want_experimental).cloned().collect();
    assert_eq!(listed, every, "SHA256SUMS lists other files");
    let check = Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(&dir)
        .output()
        .expect("sha256sum (coreutils)");
    assert!(
        check.status.success(),
        "crds/gateway-api/ was edited after {CRD_SCRIPT} copied it; run the script again:\n{}",
        String::from_utf8_lossy(&check.stdout)
    );

    let sum = script_var(CRD_SCRIPT, "GATEWAY_API_SUM");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("sigs.k8s.io/gateway-api@{version}")) && readme.contains(&sum),
        "crds/gateway-api/README.md names another release than the script pins"
    );
    for file in &every {
        let crd = crd(file);
        let annotations = &crd["metadata"]["annotations"];
        assert_eq!(
            annotations["gateway.networking.k8s.io/bundle-version"],
            json!(version),
            "{file}"
        );
        let channel = if file.starts_with("experimental/") {
            "experimental"
        } else {
            "standard"
        };
        assert_eq!(
            annotations["gateway.networking.k8s.io/channel"],
            json!(channel),
            "{file}"
        );
    }
}

/// Every field of the standard HTTPRoute schema (v1) with its type and
/// enum values, by path.
fn schema_fields(crd: &Value) -> std::collections::BTreeMap<String, (Value, BTreeSet<String>)> {
    fn walk(s: &Value, path: String, out: &mut std::collections::BTreeMap<String, (Value, BTreeSet<String>)>) {
        let enums = s["enum"]
            .as_array()
            .map(|a| a.iter().map(|v| v.to_string()).collect())
            .unwrap_or_default();
        out.insert(path.clone(), (s["type"].clone(), enums));
        if let Some(props) = s["properties"].as_object() {
            for (k, v) in props {
                walk(v, format!("{path}.{k}"), out);
            }
        }
        if s.get("items").is_some() {
            walk(&s["items"], format!("{path}[]"), out);
        }
    }
    let v1 = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1")
        .unwrap();
    let mut out = std::collections::BTreeMap::new();
    walk(&v1["schema"]["openAPIV3Schema"], String::new(), &mut out);
    out
}

/// The HTTPRoute type is generated from the experimental CRD; it reads what
/// a standard-channel cluster stores only because that schema is a superset:
/// every standard field, with the same type and every enum value.
#[test]
fn the_experimental_httproute_schema_is_a_superset_of_the_standard_one() {
    let standard = schema_fields(&crd("gateway.networking.k8s.io_httproutes.yaml"));
    let experimental = schema_fields(&crd("experimental/gateway.networking.k8s.io_httproutes.yaml"));
    assert!(
        standard.len() > 150,
        "{} fields: the schema was not read",
        standard.len()
    );
    for (path, (kind, values)) in &standard {
        let Some((x_kind, x_values)) = experimental.get(path) else {
            panic!("{path} is in the standard HTTPRoute only");
        };
        assert_eq!(kind, x_kind, "{path}");
        assert!(values.is_subset(x_values), "{path}: {values:?} not within {x_values:?}");
    }
    assert!(experimental.contains_key(".spec.rules[].filters[].externalAuth.http.allowedResponseHeaders[]"));
}

/// Each Rust type is the version the pinned CRD serves and stores, so
/// objects written through it need no conversion.
#[test]
fn the_types_use_the_served_storage_versions() {
    for (file, api_version) in [
        ("gatewayclasses", GatewayClass::api_version(&())),
        ("gateways", Gateway::api_version(&())),
        ("httproutes", HttpRoute::api_version(&())),
        // v1 is served too (since v1.5), but v1beta1 is the storage version
        // and the one every release since v0.6 serves.
        ("referencegrants", ReferenceGrant::api_version(&())),
    ] {
        let (group, version) = api_version.split_once('/').unwrap();
        // HTTPRoute: in both channels, the one the types come from and the
        // one ssegate installs.
        let channels: &[&str] = if file == "httproutes" {
            &["", "experimental/"]
        } else {
            &[""]
        };
        for channel in channels {
            let crd = crd(&format!("{channel}gateway.networking.k8s.io_{file}.yaml"));
            assert_eq!(crd["spec"]["group"], json!(group));
            assert!(
                served_versions(&crd).contains(&(version.to_owned(), true)),
                "{channel}{file}: {version} is not the served storage version: {:?}",
                served_versions(&crd)
            );
        }
    }
}

#[test]
fn generated_types_match_the_crds() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(format!("{ROOT}/scripts/gateway-api-types.sh"))
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "scripts/gateway-api-types.sh could not regenerate the types (scripts/prereqs.sh installs kopium):\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let src = Path::new(ROOT).join("src/api/gateway");
    let generated: BTreeSet<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let checked_in: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "mod.rs")
        .collect();
    assert_eq!(
        generated, checked_in,
        "src/api/gateway/ has other files than the script writes"
    );
    for file in &generated {
        let fresh = std::fs::read_to_string(out.path().join(file)).unwrap();
        let committed = std::fs::read_to_string(src.join(file)).unwrap();
        assert!(
            fresh == committed,
            "src/api/gateway/{file} is stale; regenerate it with:\n  scripts/gateway-api-types.sh"
        );
    }
}

const GATEWAY_CLASS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: ssegate
spec:
  controllerName: ssegate.dev/gateway-controller
  description: Server-Sent Events first
status:
  conditions:
  - type: Accepted
    status: "True"
    reason: Accepted
    message: Handled by ssegate
    observedGeneration: 1
    lastTransitionTime: "2026-11-26T13:00:00Z"
  - type: SupportedVersion
    status: "True"
    reason: SupportedVersion
    message: Gateway API v1.6.3
    observedGeneration: 1
    lastTransitionTime: "2026-11-26T13:00:00Z"
  supportedFeatures:
  - name: Gateway
  - name: HTTPRoute
  - name: HTTPRouteQueryParamMatching
  - name: HTTPRouteMethodMatching
"#;

const GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: sse
  namespace: infra
  labels:
    app.kubernetes.io/part-of: events
spec:
  gatewayClassName: ssegate
  infrastructure:
    labels:
      team: streaming
    annotations:
      example.com/owner: streaming
  listeners:
  - name: http
    protocol: HTTP
    port: 80
    hostname: "*.example.com"
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchLabels:
            gateway.example.com/access: "true"
          matchExpressions:
          - key: env
            operator: In
            values: [prod, staging]
      kinds:
      - group: gateway.networking.k8s.io
        kind: HTTPRoute
  - name: https
    protocol: HTTPS
    port: 443
    hostname: events.example.com
    tls:
      mode: Terminate
      certificateRefs:
      - group: ""
        kind: Secret
        name: events-tls
      - kind: Secret
        name: events-tls-ecdsa
        namespace: certs
      options:
        example.com/min-tls-version: "1.3"
    allowedRoutes:
      namespaces:
        from: All
status:
  addresses:
  - type: IPAddress
    value: 10.96.0.80
  conditions:
  - type: Accepted
    status: "True"
    reason: Accepted
    message: Accepted
    observedGeneration: 1
    lastTransitionTime: "2026-11-26T13:00:00Z"
  - type: Programmed
    status: "True"
    reason: Programmed
    message: Served by ssegate
    observedGeneration: 1
    lastTransitionTime: "2026-11-26T13:00:01Z"
  listeners:
  - name: http
    attachedRoutes: 1
    supportedKinds:
    - group: gateway.networking.k8s.io
      kind: HTTPRoute
    conditions:
    - type: Accepted
      status: "True"
      reason: Accepted
      message: Listener accepted
      observedGeneration: 1
      lastTransitionTime: "2026-11-26T13:00:00Z"
    - type: Conflicted
      status: "False"
      reason: NoConflicts
      message: No conflicts
      observedGeneration: 1
      lastTransitionTime: "2026-11-26T13:00:00Z"
  - name: https
    attachedRoutes: 1
    supportedKinds:
    - group: gateway.networking.k8s.io
      kind: HTTPRoute
    conditions:
    - type: ResolvedRefs
      status: "False"
      reason: RefNotPermitted
      message: Secret certs/events-tls-ecdsa needs a ReferenceGrant
      observedGeneration: 1
      lastTransitionTime: "2026-11-26T13:00:00Z"
"#;

const HTTP_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: events
  namespace: apps
spec:
  parentRefs:
  - name: sse
    namespace: infra
    sectionName: https
  - group: gateway.networking.k8s.io
    kind: Gateway
    name: sse
    namespace: infra
    sectionName: http
    port: 80
  hostnames:
  - events.example.com
  - "*.events.example.com"
  rules:
  - name: stream
    matches:
    - path:
        type: PathPrefix
        value: /events
      headers:
      - name: Accept
        value: text/event-stream
      - type: RegularExpression
        name: X-Tenant
        value: "^[a-z]+$"
      queryParams:
      - type: Exact
        name: channel
        value: news
      method: GET
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: X-Accel-Buffering
          value: "no"
        add:
        - name: X-Forwarded-Via
          value: ssegate
        remove: [X-Debug]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set:
        - name: Cache-Control
          value: no-cache
        remove: [Server]
    - type: URLRewrite
      urlRewrite:
        hostname: events.internal
        path:
          type: ReplacePrefixMatch
          replacePrefixMatch: /stream
    - type: CORS
      cors:
        allowOrigins: ["https://app.example.com"]
        allowMethods: [GET, OPTIONS]
        allowHeaders: [Last-Event-ID]
        exposeHeaders: [X-Request-Id]
        allowCredentials: true
        maxAge: 600
    backendRefs:
    - name: events-v1
      port: 8080
      weight: 90
    - name: events-v2
      namespace: canary
      port: 8080
      weight: 10
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier:
          set:
          - name: X-Canary
            value: "true"
    - group: ""
      kind: Service
      name: events-drained
      port: 8080
      weight: 0
    timeouts:
      request: 0s
      backendRequest: 30s
  - matches:
    - path:
        type: Exact
        value: /healthz
      method: HEAD
    backendRefs:
    - name: events-v1
      port: 8080
  - matches:
    - path:
        type: PathPrefix
        value: /old
    filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        hostname: events.example.com
        path:
          type: ReplacePrefixMatch
          replacePrefixMatch: /events
        port: 443
        statusCode: 301
status:
  parents:
  - parentRef:
      group: gateway.networking.k8s.io
      kind: Gateway
      name: sse
      namespace: infra
      sectionName: https
    controllerName: ssegate.dev/gateway-controller
    conditions:
    - type: Accepted
      status: "True"
      reason: Accepted
      message: Route accepted
      observedGeneration: 1
      lastTransitionTime: "2026-11-26T13:00:00Z"
    - type: ResolvedRefs
      status: "False"
      reason: RefNotPermitted
      message: Service canary/events-v2 needs a ReferenceGrant
      observedGeneration: 1
      lastTransitionTime: "2026-11-26T13:00:00Z"
"#;

/// An HTTPRoute of the experimental channel: the ExternalAuth filter, with
/// every field it has, and one with only the required ones.
const HTTP_ROUTE_EXTERNAL_AUTH: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: guarded
  namespace: apps
spec:
  parentRefs:
  - name: sse
    namespace: infra
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /events
    filters:
    - type: ExternalAuth
      externalAuth:
        protocol: HTTP
        backendRef:
          group: ""
          kind: Service
          name: oauth2-proxy
          namespace: auth
          port: 4180
        http:
          path: /oauth2/auth
          allowedHeaders: [Cookie, X-Tenant]
          allowedResponseHeaders: [X-Auth-Request-User]
        forwardBody:
          maxSize: 0
    backendRefs:
    - name: events-v1
      port: 8080
  - matches:
    - path:
        type: PathPrefix
        value: /grpc-guarded
    filters:
    - type: ExternalAuth
      externalAuth:
        protocol: GRPC
        backendRef:
          name: ext-authz
          port: 9001
        grpc:
          allowedHeaders: [Cookie]
    backendRefs:
    - name: events-v1
      port: 8080
"#;

/// Values a newer CRD may add to enums that "may be added to": read and
/// written back as they are (the translation refuses them).
const HTTP_ROUTE_FUTURE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: future
  namespace: apps
spec:
  rules:
  - matches:
    - path: {type: Glob, value: "/a/*"}
      headers: [{type: Prefix, name: X-Tenant, value: a}]
      queryParams: [{type: Prefix, name: q, value: a}]
      method: QUERY
    filters:
    - type: RateLimit
    - type: RequestRedirect
      requestRedirect:
        scheme: wss
        path: {type: ReplaceRegex, replaceFullPath: /x}
    - type: ExternalAuth
      externalAuth:
        protocol: Thrift
        backendRef: {name: auth, port: 80}
    backendRefs:
    - name: events-v1
      port: 8080
      filters:
      - type: RateLimit
"#;

const REFERENCE_GRANT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata:
  name: apps-to-canary
  namespace: canary
spec:
  from:
  - group: gateway.networking.k8s.io
    kind: HTTPRoute
    namespace: apps
  to:
  - group: ""
    kind: Service
  - group: ""
    kind: Secret
    name: events-tls
"#;

/// Reads YAML into `K` and writes it back; every field must survive.
fn round_trip<K: Serialize + DeserializeOwned>(yaml: &str) -> K {
    let value: Value = serde_yaml::from_str(yaml).unwrap();
    let typed: K = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), value);
    typed
}

#[test]
fn realistic_objects_round_trip_through_the_types() {
    let class: GatewayClass = round_trip(GATEWAY_CLASS);
    assert_eq!(class.spec.controller_name, "ssegate.dev/gateway-controller");
    let features = class.status.unwrap().supported_features.unwrap();
    assert_eq!(features[2].name, "HTTPRouteQueryParamMatching");

    let gateway: Gateway = round_trip(GATEWAY);
    let http = &gateway.spec.listeners[0];
    let namespaces = http.allowed_routes.as_ref().unwrap().namespaces.as_ref().unwrap();
    assert_eq!(
        namespaces.from,
        Some(GatewayListenersAllowedRoutesNamespacesFrom::Selector)
    );
    let selector = namespaces.selector.as_ref().unwrap();
    assert_eq!(
        selector.match_labels.as_ref().unwrap()["gateway.example.com/access"],
        "true"
    );
    assert_eq!(
        selector.match_expressions.as_ref().unwrap()[0].values.as_ref().unwrap(),
        &["prod", "staging"]
    );
    let https = &gateway.spec.listeners[1];
    assert_eq!((https.protocol.as_str(), https.port), ("HTTPS", 443));
    let certs = https.tls.as_ref().unwrap().certificate_refs.as_ref().unwrap();
    assert_eq!(certs[1].namespace.as_deref(), Some("certs"));
    let status = gateway.status.unwrap();
    assert_eq!(
        status.listeners.as_ref().unwrap()[1].conditions[0].reason,
        "RefNotPermitted"
    );

    let route: HttpRoute = round_trip(HTTP_ROUTE);
    assert_eq!(
        route.spec.parent_refs.as_ref().unwrap()[1].section_name.as_deref(),
        Some("http")
    );
    assert_eq!(route.spec.parent_refs.as_ref().unwrap()[1].port, Some(80));
    let rules = route.spec.rules.as_ref().unwrap();
    let stream = &rules[0];
    let m = &stream.matches.as_ref().unwrap()[0];
    assert_eq!(m.method, Some(HttpRouteRulesMatchesMethod::Get));
    assert_eq!(m.query_params.as_ref().unwrap()[0].value, "news");
    let filters: Vec<_> = stream
        .filters
        .as_ref()
        .unwrap()
        .iter()
        .map(|f| f.r#type.clone())
        .collect();
    assert_eq!(
        filters,
        [
            HttpRouteRulesFiltersType::RequestHeaderModifier,
            HttpRouteRulesFiltersType::ResponseHeaderModifier,
            HttpRouteRulesFiltersType::UrlRewrite,
            HttpRouteRulesFiltersType::Cors
        ]
    );
    let weights: Vec<_> = stream.backend_refs.as_ref().unwrap().iter().map(|b| b.weight).collect();
    assert_eq!(weights, [Some(90), Some(10), Some(0)]);
    let timeouts = stream.timeouts.as_ref().unwrap();
    assert_eq!(
        (timeouts.request.as_deref(), timeouts.backend_request.as_deref()),
        (Some("0s"), Some("30s"))
    );
    let redirect = rules[2].filters.as_ref().unwrap()[0].request_redirect.as_ref().unwrap();
    assert_eq!(redirect.status_code, Some(301));
    assert_eq!(
        route.status.unwrap().parents[0].controller_name,
        "ssegate.dev/gateway-controller"
    );

    let grant: ReferenceGrant = round_trip(REFERENCE_GRANT);
    assert_eq!(grant.spec.to[1].name.as_deref(), Some("events-tls"));

    let guarded: HttpRoute = round_trip(HTTP_ROUTE_EXTERNAL_AUTH);
    let rules = guarded.spec.rules.as_ref().unwrap();
    let filter = &rules[0].filters.as_ref().unwrap()[0];
    assert_eq!(filter.r#type, HttpRouteRulesFiltersType::ExternalAuth);
    let auth = filter.external_auth.as_ref().unwrap();
    assert_eq!(auth.protocol, HttpRouteRulesFiltersExternalAuthProtocol::Http);
    assert_eq!(
        (
            auth.backend_ref.name.as_str(),
            auth.backend_ref.namespace.as_deref(),
            auth.backend_ref.port
        ),
        ("oauth2-proxy", Some("auth"), Some(4180))
    );
    let http = auth.http.as_ref().unwrap();
    assert_eq!(http.path.as_deref(), Some("/oauth2/auth"));
    assert_eq!(http.allowed_headers.as_deref().unwrap(), ["Cookie", "X-Tenant"]);
    assert_eq!(
        http.allowed_response_headers.as_deref().unwrap(),
        ["X-Auth-Request-User"]
    );
    assert_eq!(auth.forward_body.as_ref().unwrap().max_size, Some(0));
    let grpc = rules[1].filters.as_ref().unwrap()[0].external_auth.as_ref().unwrap();
    assert_eq!(grpc.protocol, HttpRouteRulesFiltersExternalAuthProtocol::Grpc);
    assert_eq!(
        grpc.grpc.as_ref().unwrap().allowed_headers.as_deref().unwrap(),
        ["Cookie"]
    );

    // Fix-up 2: unknown enum values are kept, not a failure of the object.
    let future: HttpRoute = round_trip(HTTP_ROUTE_FUTURE);
    let rule = &future.spec.rules.as_ref().unwrap()[0];
    let m = &rule.matches.as_ref().unwrap()[0];
    assert_eq!(
        m.path.as_ref().unwrap().r#type,
        Some(HttpRouteRulesMatchesPathType::Unknown("Glob".into()))
    );
    assert_eq!(m.method, Some(HttpRouteRulesMatchesMethod::Unknown("QUERY".into())));
    let filters = rule.filters.as_ref().unwrap();
    assert_eq!(
        filters[0].r#type,
        HttpRouteRulesFiltersType::Unknown("RateLimit".into())
    );
    assert_eq!(
        filters[2].external_auth.as_ref().unwrap().protocol,
        HttpRouteRulesFiltersExternalAuthProtocol::Unknown("Thrift".into())
    );
}

/// Every enum of the generated HTTPRoute type carries fix-up 2: the script
/// adds the variant to each, and this counts them against the CRD's string
/// enums, so that an enum kopium names differently cannot slip through.
#[test]
fn every_httproute_enum_reads_unknown_values() {
    let text = std::fs::read_to_string(format!("{ROOT}/src/api/gateway/http_route.rs")).unwrap();
    let enums = text.matches("\npub enum ").count();
    let open = text.matches("    #[serde(untagged)]\n    Unknown(String),\n}").count();
    assert_eq!(open, enums, "every enum ends with the Unknown variant");
    // The CRD's string enums in spec (status conditions are the shared
    // Condition type; statusCode is an integer, elided by fix-up 1); a
    // filter's fields appear twice, on the rule and on the backendRef.
    let fields = schema_fields(&crd("experimental/gateway.networking.k8s.io_httproutes.yaml"));
    let string_enums = fields
        .iter()
        .filter(|(path, (kind, values))| path.starts_with(".spec.") && *kind == json!("string") && !values.is_empty())
        // Lists of values (CORS allowMethods) are Vec<String> in kopium's output.
        .filter(|(path, _)| !path.ends_with("[]"))
        .count();
    assert_eq!(
        enums, string_enums,
        "enums in http_route.rs vs string enums in the CRD's spec"
    );
}

/// Creates `fixture` (without status) through `api`, writes its status
/// through the status subresource, and reads it back both typed and raw: the
/// typed object must carry everything the apiserver returns, including the
/// defaults the CRD's schema filled in.
async fn through_apiserver<K>(api: Api<K>, client: &kube::Client, fixture: &str) -> K
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Serialize + DeserializeOwned,
{
    let mut value: Value = serde_yaml::from_str(fixture).unwrap();
    // The status as the types write it, so the apiserver validates their output.
    let full: K = serde_json::from_value(value.clone()).unwrap();
    let status = serde_json::to_value(&full).unwrap().get("status").cloned();
    value.as_object_mut().unwrap().remove("status");
    let object: K = serde_json::from_value(value).unwrap();
    let name = object.meta().name.clone().unwrap();
    let resource = ApiResource::erase::<K>(&());
    let raw: Api<DynamicObject> = match object.meta().namespace.as_deref() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    if let Some(status) = status {
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap_or_else(|e| panic!("status of {name}: {e}"));
    }
    let typed = api.get(&name).await.unwrap();
    let raw = raw.get(&name).await.unwrap();
    let typed_value = serde_json::to_value(&typed).unwrap();
    for part in ["spec", "status"] {
        assert_eq!(
            typed_value.get(part),
            raw.data.get(part),
            "{} {name}: the types lose part of .{part}",
            K::kind(&())
        );
    }
    typed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_serves_the_pinned_crds_and_the_types_read_its_objects() {
    let cp = control_plane();
    for ns in ["infra", "apps", "canary"] {
        cp.namespace(ns);
    }
    let kubeconfig = kube::config::Kubeconfig::read_from(&cp.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();

    let class: GatewayClass = through_apiserver(Api::all(client.clone()), &client, GATEWAY_CLASS).await;
    assert_eq!(class.status.unwrap().conditions.unwrap()[1].type_, "SupportedVersion");

    let gateway: Gateway = through_apiserver(Api::namespaced(client.clone(), "infra"), &client, GATEWAY).await;
    assert_eq!(gateway.status.unwrap().listeners.unwrap()[0].attached_routes, 1);

    let route: HttpRoute = through_apiserver(Api::namespaced(client.clone(), "apps"), &client, HTTP_ROUTE).await;
    let rules = route.spec.rules.unwrap();
    // Defaults from the CRD schema, read through the types.
    let health = &rules[1].backend_refs.as_ref().unwrap()[0];
    assert_eq!(
        (health.group.as_deref(), health.kind.as_deref(), health.weight),
        (Some(""), Some("Service"), Some(1))
    );
    let parent = &route.spec.parent_refs.unwrap()[0];
    assert_eq!(
        (parent.group.as_deref(), parent.kind.as_deref()),
        (Some("gateway.networking.k8s.io"), Some("Gateway"))
    );
    let redirect = rules[2].filters.as_ref().unwrap()[0].request_redirect.as_ref().unwrap();
    assert_eq!(redirect.status_code, Some(301));
    let parents = route.status.unwrap().parents;
    assert_eq!(parents[0].conditions[1].reason, "RefNotPermitted");

    let grant: ReferenceGrant =
        through_apiserver(Api::namespaced(client.clone(), "canary"), &client, REFERENCE_GRANT).await;
    assert_eq!(grant.spec.from[0].namespace, "apps");

    // The CRDs' validation is live: a RequestRedirect and a URLRewrite in one
    // rule are refused, as Gateway API's CEL rules say.
    let mut bad: Value = serde_yaml::from_str(HTTP_ROUTE).unwrap();
    bad["metadata"]["name"] = json!("both-redirect-and-rewrite");
    bad.as_object_mut().unwrap().remove("status");
    let redirect_filter = bad["spec"]["rules"][2]["filters"][0].clone();
    bad["spec"]["rules"][0]["filters"]
        .as_array_mut()
        .unwrap()
        .push(redirect_filter);
    let bad: HttpRoute = serde_json::from_value(bad).unwrap();
    let err = Api::<HttpRoute>::namespaced(client.clone(), "apps")
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("the apiserver accepted RequestRedirect with URLRewrite");
    assert!(err.to_string().contains("RequestRedirect"), "{err}");

    // A cluster that runs the experimental channel: its HTTPRoutes with an
    // ExternalAuth filter are stored with the experimental defaults and read
    // back whole (the standard CRD refuses them, so the watch never saw one).
    let routes: Api<HttpRoute> = Api::namespaced(client.clone(), "apps");
    let guarded: HttpRoute = serde_yaml::from_str(HTTP_ROUTE_EXTERNAL_AUTH).unwrap();
    let err = routes
        .create(&PostParams::default(), &guarded)
        .await
        .expect_err("the standard CRD accepted an ExternalAuth filter");
    assert!(err.to_string().contains("ExternalAuth"), "{err}");
    cp.kubectl_ok(&[
        "apply",
        "--server-side",
        "-f",
        &format!("{ROOT}/crds/gateway-api/experimental/gateway.networking.k8s.io_httproutes.yaml"),
    ]);
    // The apiserver takes up a new schema within moments of the update.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match routes.create(&PostParams::default(), &guarded).await {
            Ok(_) => break,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "experimental CRD never took: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    let typed = routes.get("guarded").await.unwrap();
    let raw: Api<DynamicObject> = Api::namespaced_with(client.clone(), "apps", &ApiResource::erase::<HttpRoute>(&()));
    let raw = raw.get("guarded").await.unwrap();
    assert_eq!(
        serde_json::to_value(&typed).unwrap().get("spec"),
        raw.data.get("spec"),
        "the types lose part of an experimental HTTPRoute"
    );
    let auth = typed.spec.rules.as_ref().unwrap()[1].filters.as_ref().unwrap()[0]
        .external_auth
        .clone()
        .unwrap();
    // Defaults from the experimental schema, read through the types.
    assert_eq!(
        (auth.backend_ref.group.as_deref(), auth.backend_ref.kind.as_deref()),
        (Some(""), Some("Service"))
    );
}
