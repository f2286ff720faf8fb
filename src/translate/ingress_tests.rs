use super::*;
use crate::api::{LoadBalancing, ProxyBuffering};
use crate::model::{build_table, normalize_host, Objects, RequestSketch, ServiceObject, ServicePort};
use k8s_openapi::api::networking::v1::Ingress;
use std::time::Duration;

fn ingress(yaml: &str) -> RouteDefinition {
    let ing: Ingress = serde_yaml::from_str(yaml).unwrap();
    translate(
        ObjectKey::new("default", ing.metadata.name.as_deref().unwrap_or("ing")),
        ing.metadata.generation,
        1,
        ing.spec.as_ref().unwrap(),
        &ing.metadata.annotations.clone().unwrap_or_default(),
    )
}

fn fields(def: &RouteDefinition) -> Vec<String> {
    def.translated
        .as_ref()
        .unwrap_err()
        .iter()
        .map(|e| e.field.clone())
        .collect()
}

const TWO_HOSTS: &str = r#"
metadata:
  name: web
  annotations:
    nginx.ingress.kubernetes.io/proxy-buffering: "off"
    nginx.ingress.kubernetes.io/proxy-read-timeout: "3600"
    nginx.ingress.kubernetes.io/rewrite-target: /
spec:
  tls:
    - hosts: [a.example.com]
      secretName: a-cert
  rules:
    - host: a.example.com
      http:
        paths:
          - {path: /events, pathType: Prefix, backend: {service: {name: sse, port: {number: 8080}}}}
          - {path: /exact, pathType: Exact, backend: {service: {name: sse, port: {name: http}}}}
    - host: B.example.com
      http:
        paths:
          - {path: /, pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}
  defaultBackend: {service: {name: fallback, port: {number: 80}}}
"#;

#[test]
fn each_path_becomes_a_rule_on_its_own_host_with_the_annotated_settings() {
    let def = ingress(TWO_HOSTS);
    assert_eq!(def.kind, SourceKind::Ingress);
    let route = def.translated.as_ref().unwrap();
    assert!(route.hostnames.is_empty());
    let shown: Vec<String> = route
        .rules
        .iter()
        .map(|r| {
            format!(
                "{:?} {} {}:{} redirect={}",
                r.hostnames.as_deref().unwrap(),
                r.matches[0],
                r.backends[0].service,
                r.backends[0].port,
                r.https_redirect
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            r#"["a.example.com"] PathPrefix /events sse:8080 redirect=true"#,
            r#"["a.example.com"] Exact /exact sse:http redirect=true"#,
            r#"["b.example.com"] PathPrefix / web:80 redirect=false"#,
            r#"["a.example.com"] PathPrefix / fallback:80 redirect=true"#,
            r#"["b.example.com"] PathPrefix / fallback:80 redirect=false"#,
        ]
    );
    let settings = route.rules[0].settings;
    assert_eq!(settings.buffering, ProxyBuffering::Disabled);
    assert_eq!(settings.timeouts.idle, Some(Duration::from_secs(3600)));
    assert_eq!(
        settings.max_stream_duration, None,
        "the read timeout never caps a stream"
    );
    assert_eq!(route.tls[0].hostnames, ["a.example.com"]);
    assert_eq!(route.tls[0].secret_name, "a-cert");
    assert_eq!(
        def.warnings,
        ["nginx.ingress.kubernetes.io/rewrite-target: ignored: ssegate forwards the request's own host and path unchanged"]
    );
}

#[test]
fn in_the_table_the_ingress_serves_its_hosts_and_loses_a_conflict_to_an_older_route() {
    let mut objects = Objects::default();
    let mut def = ingress(TWO_HOSTS);
    def.created_millis = 10;
    objects.ingresses.insert(def.key.clone(), def);
    let route: crate::api::RouteSpec = serde_yaml::from_str(
        "hostnames: [a.example.com]\nrules: [{matches: [{path: {type: PathPrefix, value: /events}}], backendRefs: [{name: sse, port: 8080}]}]",
    )
    .unwrap();
    // A Route of the same name is a different object.
    objects.routes.insert(
        ObjectKey::new("default", "web"),
        crate::translate::route::translate(ObjectKey::new("default", "web"), None, 5, &route),
    );
    for (name, ports) in [
        ("sse", vec![("http", 8080)]),
        ("web", vec![("", 80)]),
        ("fallback", vec![("", 80)]),
    ] {
        objects.services.insert(
            ObjectKey::new("default", name),
            ServiceObject {
                key: ObjectKey::new("default", name),
                ports: ports
                    .into_iter()
                    .map(|(n, p)| ServicePort {
                        name: n.into(),
                        port: p,
                    })
                    .collect(),
            },
        );
    }
    let table = build_table(&objects, 1);
    let at = |host: &str, path: &str| {
        table
            .lookup(&normalize_host(host), path, &RequestSketch::default())
            .map(|t| format!("{}#{}", t.route, t.rule_index))
    };
    assert_eq!(at("a.example.com", "/events/x").as_deref(), Some("default/web#0"));
    assert_eq!(at("a.example.com", "/exact").as_deref(), Some("default/web#1"));
    assert_eq!(at("a.example.com", "/exact/more").as_deref(), Some("default/web#3"));
    assert_eq!(at("b.example.com", "/x").as_deref(), Some("default/web#2"));
    assert_eq!(
        at("c.example.com", "/"),
        None,
        "the default backend covers the Ingress's hosts only"
    );

    let reports: Vec<_> = table.reports.iter().map(|r| (r.kind, r.accepted.is_true())).collect();
    assert_eq!(reports, [(SourceKind::Route, true), (SourceKind::Ingress, false)]);
    let ingress = &table.reports[1];
    assert!(
        ingress
            .accepted
            .message
            .contains("PathPrefix /events on a.example.com is served by Route default/web"),
        "{}",
        ingress.accepted.message
    );
    // The named port resolved by name; only the certificate is missing.
    assert_eq!(
        ingress.resolved_refs.message,
        "Secret default/a-cert not found; plain HTTP is served, and other hosts' certificates are unaffected"
    );
    assert_eq!(ingress.warnings.len(), 1);
}

#[test]
fn a_named_port_the_service_lacks_is_reported_by_name() {
    let mut objects = Objects::default();
    let def = ingress(
        "metadata: {name: n}\nspec: {rules: [{http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: s, port: {name: grpc}}}}]}}]}",
    );
    objects.ingresses.insert(def.key.clone(), def);
    objects.services.insert(
        ObjectKey::new("default", "s"),
        ServiceObject {
            key: ObjectKey::new("default", "s"),
            ports: vec![ServicePort {
                name: "http".into(),
                port: 80,
            }],
        },
    );
    let table = build_table(&objects, 1);
    assert_eq!(
        table.reports[0].resolved_refs.message,
        "Service default/s has no port named \"grpc\""
    );
}

#[test]
fn what_cannot_be_served_as_written_is_refused_with_its_field() {
    let def = ingress(
        r#"
metadata: {name: bad}
spec:
  tls: [{hosts: [a.example.com]}]
  rules:
    - host: a.example.com
      http:
        paths:
          - {path: "/api/(.*)", pathType: ImplementationSpecific, backend: {service: {name: s, port: {number: 80}}}}
          - {path: /r, pathType: Prefix, backend: {resource: {kind: Bucket, name: b}}}
          - {path: "/x/../y", pathType: Prefix, backend: {service: {name: s, port: {number: 0}}}}
          - {path: /ok, pathType: Prefix, backend: {service: {name: s}}}
"#,
    );
    assert_eq!(
        fields(&def),
        [
            "spec.rules[0].http.paths[0].path",
            "spec.rules[0].http.paths[1].backend.resource",
            "spec.rules[0].http.paths[2].path",
            "spec.rules[0].http.paths[2].backend.service.port.number",
            "spec.rules[0].http.paths[3].backend.service.port",
            "spec.tls[0].secretName",
        ]
    );
    let nothing = ingress("metadata: {name: empty}\nspec: {rules: [{host: a.example.com}]}");
    assert_eq!(fields(&nothing), ["spec.rules"]);
}

#[test]
fn bad_annotation_values_warn_and_never_reject() {
    let def = ingress(
        r#"
metadata:
  name: w
  annotations:
    nginx.ingress.kubernetes.io/proxy-buffering: "maybe"
    ssegate.dev/heartbeat-interval: "soon"
    ssegate.dev/buffer-size: "1Gi"
    ssegate.dev/load-balancing: RoundRobin
    nginx.ingress.kubernetes.io/configuration-snippet: |
      more_set_headers "X-Accel-Buffering: no";
spec:
  defaultBackend: {service: {name: s, port: {number: 80}}}
"#,
    );
    let route = def.translated.as_ref().expect("annotations never reject an Ingress");
    let s = route.rules[0].settings;
    assert_eq!(s.buffering, ProxyBuffering::Auto);
    assert_eq!(s.heartbeat, None);
    assert_eq!(s.buffer_size, crate::api::DEFAULT_BUFFER_SIZE);
    assert_eq!(s.load_balancing, LoadBalancing::RoundRobin);
    assert_eq!(route.rules[0].hostnames.as_deref(), Some(&[][..]), "no rules: any host");
    let w = def.warnings.join("\n");
    assert!(w.contains("proxy-buffering: invalid"), "{w}");
    assert!(w.contains("heartbeat-interval: invalid"), "{w}");
    assert!(w.contains("bufferSize: must be between 1Ki and 16Mi"), "{w}");
    assert!(w.contains("configuration-snippet: not needed"), "{w}");
    assert!(!w.contains("load-balancing"), "{w}");
}

#[test]
fn https_redirect_follows_ssl_redirect_and_force_ssl_redirect() {
    let yaml = |annotations: &str| {
        format!(
            "metadata:\n  name: r\n  annotations: {{{annotations}}}\nspec:\n  tls: [{{hosts: [\"*.example.com\"], secretName: c}}]\n  rules:\n    - {{host: a.example.com, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}]}}}}\n    - {{host: other.org, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}]}}}}\n"
        )
    };
    let redirects = |annotations: &str| -> Vec<bool> {
        ingress(&yaml(annotations))
            .translated
            .unwrap()
            .rules
            .iter()
            .map(|r| r.https_redirect)
            .collect()
    };
    assert_eq!(redirects(""), [true, false], "hosts with TLS redirect by default");
    assert_eq!(
        redirects("nginx.ingress.kubernetes.io/ssl-redirect: \"false\""),
        [false, false]
    );
    assert_eq!(
        redirects("nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\""),
        [true, true]
    );
}

#[test]
fn wildcard_certificate_names_cover_one_label() {
    assert!(covers("*.example.com", "a.example.com"));
    assert!(!covers("*.example.com", "a.b.example.com"));
    assert!(!covers("*.example.com", "example.com"));
    assert!(covers("a.example.com", "a.example.com"));
}

/// Four annotations that restrict access and that ssegate does not
/// enforce. Its path stays in the table (a broader Route of the same host,
/// older or not, never serves it) and is closed; the report names each.
#[test]
fn an_ingress_that_restricts_access_unenforced_keeps_its_paths_closed_and_says_why() {
    let mut objects = Objects::default();
    let mut def = ingress(
        r#"
metadata:
  name: admin
  annotations:
    nginx.ingress.kubernetes.io/auth-tls-verify-client: "on"
    nginx.ingress.kubernetes.io/auth-tls-secret: default/ca
    nginx.ingress.kubernetes.io/enable-modsecurity: "true"
    nginx.ingress.kubernetes.io/ssl-passthrough: "true"
spec:
  rules:
    - host: a.example.com
      http:
        paths:
          - {path: /admin, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#,
    );
    def.created_millis = 20;
    objects.ingresses.insert(def.key.clone(), def);
    // An older Route serving the whole host.
    let route: crate::api::RouteSpec =
        serde_yaml::from_str("hostnames: [a.example.com]\nrules: [{backendRefs: [{name: web, port: 80}]}]").unwrap();
    objects.routes.insert(
        ObjectKey::new("default", "site"),
        crate::translate::route::translate(ObjectKey::new("default", "site"), None, 5, &route),
    );
    let table = build_table(&objects, 1);
    let admin = table
        .lookup("a.example.com", "/admin/users", &RequestSketch::default())
        .unwrap();
    assert_eq!(&*admin.route, "default/admin");
    let closed = admin.access.as_ref().and_then(|a| a.closed.as_deref()).expect("closed");
    for name in [
        "auth-tls-verify-client",
        "auth-tls-secret",
        "enable-modsecurity",
        "ssl-passthrough",
    ] {
        assert!(
            closed.contains(&format!("nginx.ingress.kubernetes.io/{name}: ")),
            "{name}: {closed}"
        );
    }
    let site = table.lookup("a.example.com", "/", &RequestSketch::default()).unwrap();
    assert!(site.access.is_none(), "the Route's own paths are open");

    let report = table.reports.iter().find(|r| r.kind == SourceKind::Ingress).unwrap();
    assert!(!report.accepted.is_true());
    assert_eq!(report.accepted.reason, "AccessNotEnforced");
    for name in [
        "auth-tls-verify-client",
        "auth-tls-secret",
        "enable-modsecurity",
        "ssl-passthrough",
    ] {
        assert!(report.accepted.message.contains(name), "{}", report.accepted.message);
        assert!(
            report.warnings.iter().any(|w| w.starts_with(&format!(
                "nginx.ingress.kubernetes.io/{name}: not enforced by ssegate, so the Ingress is not served"
            ))),
            "{:?}",
            report.warnings
        );
    }
    let view = serde_json::to_value(table.describe()).unwrap();
    let shown = view["hosts"][0]["matches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["route"] == "default/admin")
        .unwrap();
    assert!(
        shown["access"]
            .as_str()
            .unwrap()
            .starts_with("closed, every request answered 503: "),
        "{shown}"
    );
}

#[test]
fn the_opt_out_serves_the_ingress_open_and_reports_it() {
    let def = ingress(
        r#"
metadata:
  name: admin
  annotations:
    nginx.ingress.kubernetes.io/enable-modsecurity: "true"
    ssegate.dev/unenforced-annotations: enable-modsecurity
spec:
  rules:
    - http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#,
    );
    let rule = &def.translated.as_ref().unwrap().rules[0];
    assert!(rule.access.is_none());
    assert!(
        def.warnings
            .iter()
            .any(|w| w.starts_with("nginx.ingress.kubernetes.io/enable-modsecurity: NOT ENFORCED: served without it")),
        "{:?}",
        def.warnings
    );
    assert!(
        def.warnings
            .iter()
            .any(|w| w.starts_with("ssegate.dev/unenforced-annotations: NOT ENFORCED")),
        "{:?}",
        def.warnings
    );
}

#[test]
fn resume_annotations_serve_as_sse_resume_and_refused_values_warn() {
    use crate::api::{RebalanceSettings, ResumeSettings};
    let yaml = |annotations: &str| {
        format!(
            "metadata:\n  name: r\n  annotations: {{{annotations}}}\nspec:\n  defaultBackend: {{service: {{name: s, port: {{number: 80}}}}}}\n"
        )
    };
    let def = ingress(&yaml(
        r#"ssegate.dev/sse-resume: "true", ssegate.dev/sse-resume-max-attempts: "4", ssegate.dev/sse-resume-on-idle-timeout: "true", ssegate.dev/sse-rebalance: "true""#,
    ));
    let s = def.translated.as_ref().unwrap().rules[0].settings;
    assert_eq!(
        s.resume,
        Some(ResumeSettings {
            max_attempts: 4,
            on_idle_timeout: true,
            ..ResumeSettings::DEFAULT
        })
    );
    assert_eq!(s.rebalance, Some(RebalanceSettings::DEFAULT));
    assert!(def.warnings.is_empty(), "{:?}", def.warnings);

    // Out of range: warned, and the default applies to that field only.
    let annotations: BTreeMap<String, String> = [
        ("ssegate.dev/sse-resume", "true"),
        ("ssegate.dev/sse-resume-max-attempts", "20"),
        ("ssegate.dev/sse-resume-budget", "2m"),
        ("ssegate.dev/sse-resume-rollout-window", "1h"),
        ("ssegate.dev/sse-resume-on-idle-timeout", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let settings = ingress_settings(&annotations, "default");
    assert_eq!(
        settings.stream.resume,
        Some(ResumeSettings {
            on_idle_timeout: true,
            ..ResumeSettings::DEFAULT
        })
    );
    assert_eq!(
        settings.problems,
        [
            "annotations setting sse.resume.maxAttempts: must be between 1 and 10; the default applies",
            "annotations setting sse.resume.budget: must be between 100ms and 60s; the default applies",
            "annotations setting sse.resume.rolloutWindow: must be between 0s and 5m; the default applies",
        ]
    );
    // What `ssegate convert` writes keeps only what serves.
    let resume = settings.annotated.sse.resume.as_ref().unwrap();
    assert_eq!(
        (
            resume.max_attempts,
            resume.budget.as_deref(),
            resume.rollout_window.as_deref()
        ),
        (None, None, None)
    );
    assert_eq!(resume.on_idle_timeout, Some(true));

    // Rebalancing without resume: warned, and off.
    let def = ingress(&yaml(r#"ssegate.dev/sse-rebalance: "true""#));
    let s = def.translated.as_ref().unwrap().rules[0].settings;
    assert_eq!((s.resume, s.rebalance), (None, None));
    assert!(
        def.warnings
            .iter()
            .any(|w| w == "annotations setting sse.rebalance: needs sse.resume: only streams that can be resumed are moved; the default applies"),
        "{:?}",
        def.warnings
    );
}
