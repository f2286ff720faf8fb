//! Unit tests of `validate.rs`.

use super::*;
use crate::api::{BackendRef, PathMatch, Quantity, RouteMatch, RouteRule};

fn spec(yaml: &str) -> RouteSpec {
    serde_yaml::from_str(yaml).unwrap()
}

#[test]
fn applies_defaults() {
    let route = spec("rules: [{backendRefs: [{name: demo, port: 80}]}]")
        .validate()
        .unwrap();
    let rule = &route.rules[0];
    assert_eq!(
        rule.matches,
        vec![ValidMatch::path(normalize(PathMatchType::PathPrefix, "/"))]
    );
    assert_eq!(rule.settings.buffering, ProxyBuffering::Auto);
    assert_eq!(rule.settings.buffer_size, 64 * 1024);
    assert_eq!(rule.settings.timeouts.connect, Duration::from_secs(5));
    assert_eq!(rule.settings.timeouts.response_headers, Duration::from_secs(60));
    assert_eq!(rule.settings.timeouts.idle, Some(Duration::from_secs(3600)));
    assert_eq!(rule.backends[0].weight, 1);
    assert_eq!(rule.settings.heartbeat, None);
}

#[test]
fn heartbeat_from_route_or_rule() {
    let route = spec(
        "sse: {heartbeatInterval: 15s}
rules:
- backendRefs: [{name: a, port: 80}]
- backendRefs: [{name: b, port: 80}]
  sse: {heartbeatInterval: 500ms}",
    )
    .validate()
    .unwrap();
    assert_eq!(route.rules[0].settings.heartbeat, Some(Duration::from_secs(15)));
    assert_eq!(route.rules[1].settings.heartbeat, Some(Duration::from_millis(500)));
    let errors = spec("sse: {heartbeatInterval: 10ms}\nrules: [{backendRefs: [{name: a, port: 80}]}]")
        .validate()
        .unwrap_err();
    assert_eq!(errors[0].field, "spec.sse.heartbeatInterval");
}

#[test]
fn rule_overrides_route_settings_field_by_field() {
    let route = spec(
        "proxyBuffering: Enabled
timeouts: {connect: 2s, idle: 10m}
rules:
- backendRefs: [{name: a, port: 80}]
  proxyBuffering: Disabled
  timeouts: {idle: 0s}
- backendRefs: [{name: b, port: 80}]",
    )
    .validate()
    .unwrap();
    assert_eq!(route.rules[0].settings.buffering, ProxyBuffering::Disabled);
    assert_eq!(route.rules[0].settings.timeouts.connect, Duration::from_secs(2));
    assert_eq!(route.rules[0].settings.timeouts.idle, None);
    assert_eq!(route.rules[1].settings.buffering, ProxyBuffering::Enabled);
    assert_eq!(route.rules[1].settings.timeouts.idle, Some(Duration::from_secs(600)));
}

#[test]
fn on_and_off_are_not_buffering_modes() {
    // YAML 1.1 reads `on` as a boolean; the enum must refuse it loudly.
    let err = serde_yaml::from_str::<RouteSpec>("proxyBuffering: on\nrules: []").unwrap_err();
    assert!(
        err.to_string().contains("proxyBuffering") || err.to_string().contains("variant"),
        "{err}"
    );
}

#[test]
fn reports_every_problem_with_its_field() {
    let bad = RouteSpec {
        hostnames: vec!["Example.com".into(), "a.*.com".into(), "ok.example.com".into()],
        buffer_size: Some(Quantity("1Gi".into())),
        rules: vec![RouteRule {
            matches: vec![RouteMatch {
                path: Some(PathMatch {
                    kind: PathMatchType::Exact,
                    value: "events".into(),
                }),
            }],
            backend_refs: vec![BackendRef {
                name: "svc".into(),
                port: 0,
                weight: -1,
            }],
            timeouts: Some(Timeouts {
                connect: Some("5 seconds".into()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let errors = bad.validate().unwrap_err();
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.hostnames[0]",
            "spec.hostnames[1]",
            "spec.bufferSize",
            "spec.rules[0].matches[0].path.value",
            "spec.rules[0].backendRefs[0].port",
            "spec.rules[0].backendRefs[0].weight",
            "spec.rules[0].timeouts.connect",
        ]
    );
    assert!(errors[3].message.contains("must start with /"), "{}", errors[3]);
}

#[test]
fn requires_rules_and_backends() {
    let errors = spec("rules: []").validate().unwrap_err();
    assert_eq!(errors[0].field, "spec.rules");
    let errors = spec("rules: [{backendRefs: []}]").validate().unwrap_err();
    assert_eq!(errors[0].field, "spec.rules[0].backendRefs");
}

#[test]
fn prefix_trailing_slash_is_ignored() {
    assert_eq!(normalize(PathMatchType::PathPrefix, "/foo/").value, "/foo");
    assert_eq!(normalize(PathMatchType::PathPrefix, "/").value, "/");
    assert_eq!(normalize(PathMatchType::Exact, "/foo/").value, "/foo/");
}

#[test]
fn dot_segments_and_encoded_slashes_are_refused_as_gateway_api_does() {
    for (bad, message) in [
        ("/a//b", PATH_DOUBLE_SLASH),
        ("/a/./b", PATH_DOT_SEGMENTS),
        ("/a/../b", PATH_DOT_SEGMENTS),
        ("/a/..", PATH_DOT_SEGMENTS),
        ("/a/.", PATH_DOT_SEGMENTS),
        ("/..", PATH_DOT_SEGMENTS),
        ("/.", PATH_DOT_SEGMENTS),
        ("/a%2fb", PATH_ENCODED_SLASH),
        ("/a%2Fb", PATH_ENCODED_SLASH),
    ] {
        assert_eq!(check_path(bad), Err(message.to_owned()), "{bad}");
    }
    assert!(check_path("/a#b").unwrap_err().contains("'#'"));
    // Dots inside a segment are ordinary characters.
    for good in ["/", "/a.b", "/.well-known/x", "/a/..b", "/a/b.", "/a/...", "/a%2e"] {
        assert_eq!(check_path(good), Ok(()), "{good}");
    }
    let errors = spec("rules: [{matches: [{path: {value: /a/../b}}], backendRefs: [{name: a, port: 80}]}]")
        .validate()
        .unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        format!("spec.rules[0].matches[0].path.value: {PATH_DOT_SEGMENTS}")
    );
}

#[test]
fn wildcard_hostnames() {
    assert!(check_hostname("*.example.com").is_ok());
    assert!(check_hostname("*example.com").is_err());
    assert!(check_hostname("example.com:80").is_err());
}
