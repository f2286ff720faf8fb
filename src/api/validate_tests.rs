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

#[test]
fn resume_and_rebalance_are_off_unless_enabled() {
    let route = spec("rules: [{backendRefs: [{name: a, port: 80}]}]")
        .validate()
        .unwrap();
    assert_eq!(route.rules[0].settings.resume, None);
    assert_eq!(route.rules[0].settings.rebalance, None);
    let route = spec(
        "sse: {resume: {enabled: true}, rebalance: {enabled: true}}
rules: [{backendRefs: [{name: a, port: 80}]}]",
    )
    .validate()
    .unwrap();
    assert_eq!(route.rules[0].settings.resume, Some(ResumeSettings::DEFAULT));
    assert_eq!(route.rules[0].settings.rebalance, Some(RebalanceSettings::DEFAULT));
}

#[test]
fn a_rule_lays_resume_and_rebalance_over_the_routes_field_by_field() {
    let route = spec(
        "sse:
  resume: {enabled: true, maxAttempts: 5, budget: 2s, onIdleTimeout: true, rolloutWindow: 0s}
  rebalance: {enabled: true, tolerancePercent: 25}
rules:
- backendRefs: [{name: a, port: 80}]
- backendRefs: [{name: b, port: 80}]
  sse: {resume: {enabled: true, budget: 500ms}, rebalance: {enabled: true, movesPerSecond: 100}}
- backendRefs: [{name: c, port: 80}]
  sse: {resume: {enabled: false}}
- backendRefs: [{name: d, port: 80}]
  sse: {rebalance: {enabled: false}}",
    )
    .validate()
    .unwrap();
    let routes = ResumeSettings {
        max_attempts: 5,
        budget: Duration::from_secs(2),
        on_idle_timeout: true,
        rollout_window: Duration::ZERO,
    };
    let settings: Vec<_> = route
        .rules
        .iter()
        .map(|r| (r.settings.resume, r.settings.rebalance))
        .collect();
    assert_eq!(
        settings,
        [
            (
                Some(routes),
                Some(RebalanceSettings {
                    tolerance_percent: 25,
                    moves_per_second: 20
                })
            ),
            // `enabled: true` keeps the Route's values, not the defaults.
            (
                Some(ResumeSettings {
                    budget: Duration::from_millis(500),
                    ..routes
                }),
                Some(RebalanceSettings {
                    tolerance_percent: 25,
                    moves_per_second: 100
                })
            ),
            // Resume off takes the Route's rebalancing with it, unasked.
            (None, None),
            (Some(routes), None),
        ]
    );
}

#[test]
fn resume_on_a_rule_starts_from_the_defaults_when_the_route_has_it_off() {
    let route = spec(
        "sse: {resume: {enabled: false, maxAttempts: 9}}
rules:
- backendRefs: [{name: a, port: 80}]
  sse: {resume: {enabled: true, onIdleTimeout: true}, rebalance: {enabled: true}}",
    )
    .validate()
    .unwrap();
    let s = route.rules[0].settings;
    assert_eq!(
        s.resume,
        Some(ResumeSettings {
            on_idle_timeout: true,
            ..ResumeSettings::DEFAULT
        })
    );
    assert_eq!(s.rebalance, Some(RebalanceSettings::DEFAULT), "the rule's own resume");
}

#[test]
fn resume_and_rebalance_values_out_of_range_are_named() {
    let errors = spec(
        "sse:
  resume: {enabled: true, maxAttempts: 11, budget: 50ms, rolloutWindow: 6m}
  rebalance: {enabled: true, tolerancePercent: 0, movesPerSecond: 1001}
rules:
- backendRefs: [{name: a, port: 80}]
  sse: {resume: {enabled: true, maxAttempts: 0, budget: 61s, rolloutWindow: soon}}",
    )
    .validate()
    .unwrap_err();
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "spec.sse.resume.maxAttempts: must be between 1 and 10",
            "spec.sse.resume.budget: must be between 100ms and 60s",
            "spec.sse.resume.rolloutWindow: must be between 0s and 5m",
            "spec.sse.rebalance.tolerancePercent: must be between 1 and 100",
            "spec.sse.rebalance.movesPerSecond: must be between 1 and 1000",
            "spec.rules[0].sse.resume.maxAttempts: must be between 1 and 10",
            "spec.rules[0].sse.resume.budget: must be between 100ms and 60s",
            "spec.rules[0].sse.resume.rolloutWindow: \"soon\" is not a duration: use numbers with units h, m, s or ms, such as 5s or 1m30s",
        ]
    );
    // The ends of each range are in it.
    for (resume, rebalance) in [
        (
            "{enabled: true, maxAttempts: 1, budget: 100ms, rolloutWindow: 0s}",
            "{enabled: true, tolerancePercent: 1, movesPerSecond: 1}",
        ),
        (
            "{enabled: true, maxAttempts: 10, budget: 60s, rolloutWindow: 5m}",
            "{enabled: true, tolerancePercent: 100, movesPerSecond: 1000}",
        ),
    ] {
        let yaml = format!(
            "sse: {{resume: {resume}, rebalance: {rebalance}}}\nrules: [{{backendRefs: [{{name: a, port: 80}}]}}]"
        );
        assert!(spec(&yaml).validate().is_ok(), "{yaml}");
    }
}

#[test]
fn rebalance_without_resume_is_refused_and_stays_off() {
    let errors = spec("sse: {rebalance: {enabled: true}}\nrules: [{backendRefs: [{name: a, port: 80}]}]")
        .validate()
        .unwrap_err();
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [format!("spec.sse.rebalance: {REBALANCE_NEEDS_RESUME}")]
    );
    let errors = spec(
        "sse: {resume: {enabled: true}}
rules:
- backendRefs: [{name: a, port: 80}]
  sse: {resume: {enabled: false}, rebalance: {enabled: true}}",
    )
    .validate()
    .unwrap_err();
    assert_eq!(errors[0].field, "spec.rules[0].sse.rebalance");
    // The merge itself leaves it off.
    let (settings, errors) = route_settings(
        ProxyBuffering::Auto,
        None,
        None,
        Some(&serde_yaml::from_str("rebalance: {enabled: true}").unwrap()),
        None,
    );
    assert_eq!((settings.resume, settings.rebalance), (None, None));
    assert_eq!(errors[0].field, "spec.sse.rebalance");
}

#[test]
fn settings_line_says_whether_streams_resume() {
    let off = StreamSettings::DEFAULT.to_string();
    assert!(
        off.ends_with(", maxStreamDuration none, resume off, LeastConnections"),
        "{off}"
    );
    let on = StreamSettings {
        resume: Some(ResumeSettings::DEFAULT),
        rebalance: Some(RebalanceSettings::DEFAULT),
        ..StreamSettings::DEFAULT
    };
    assert!(on.to_string().contains(", resume 3x/5s +rebalance, "), "{on}");
}
