//! Unit tests of matching, precedence, conflicts and invalid input.

use super::*;
use crate::api::{MatchConditions, ProxyBuffering, RouteSpec, ValidMatch};
use std::net::{IpAddr, SocketAddr};

struct World(Objects);

impl World {
    fn new() -> Self {
        World(Objects::default())
    }

    /// A Service `name` on port 80 with one ready endpoint 10.0.0.`host`:8080.
    fn service(mut self, name: &str, hosts: &[u8]) -> Self {
        let key = ObjectKey::new("default", name);
        self.0.services.insert(
            key.clone(),
            ServiceObject {
                key: key.clone(),
                ports: vec![ServicePort {
                    name: "http".into(),
                    port: 80,
                }],
            },
        );
        self.0.slices.insert(
            ObjectKey::new("default", format!("{name}-abc")),
            EndpointSliceObject {
                key: ObjectKey::new("default", format!("{name}-abc")),
                service: name.into(),
                ports: vec![SlicePort {
                    name: "http".into(),
                    port: 8080,
                }],
                endpoints: hosts
                    .iter()
                    .map(|h| Endpoint {
                        addresses: vec![IpAddr::from([10, 0, 0, *h])],
                        ready: true,
                    })
                    .collect(),
            },
        );
        self
    }

    fn route(mut self, name: &str, created: i64, yaml: &str) -> Self {
        let spec: RouteSpec = serde_yaml::from_str(yaml).unwrap();
        let key = ObjectKey::new("default", name);
        self.0.routes.insert(
            key.clone(),
            RouteDefinition {
                kind: SourceKind::Route,
                key,
                generation: Some(3),
                created_millis: created,
                translated: spec.validate(),
                warnings: Vec::new(),
            },
        );
        self
    }

    fn table(&self) -> RoutingTable {
        build_table(&self.0, 1)
    }
}

fn route_of(table: &RoutingTable, host: &str, path: &str) -> Option<String> {
    table
        .lookup(&normalize_host(host), path, &RequestSketch::default())
        .map(|t| format!("{}#{}", t.route, t.rule_index))
}

fn report<'a>(table: &'a RoutingTable, name: &str) -> &'a RouteReport {
    table.reports.iter().find(|r| r.key.name == name).unwrap()
}

#[test]
fn prefix_matches_whole_segments_only() {
    let t = World::new()
        .service("svc", &[1])
        .route(
            "r",
            0,
            "rules: [{matches: [{path: {value: /foo}}], backendRefs: [{name: svc, port: 80}]}]",
        )
        .table();
    assert!(route_of(&t, "any", "/foo").is_some());
    assert!(route_of(&t, "any", "/foo/").is_some());
    assert!(route_of(&t, "any", "/foo/bar/baz").is_some());
    assert!(route_of(&t, "any", "/foobar").is_none());
    assert!(route_of(&t, "any", "/").is_none());
}

#[test]
fn exact_beats_prefix_and_longer_prefix_wins() {
    let t = World::new()
        .service("svc", &[1])
        .route(
            "r",
            0,
            "rules:
- matches: [{path: {value: /}}]
  backendRefs: [{name: svc, port: 80}]
- matches: [{path: {value: /api}}]
  backendRefs: [{name: svc, port: 80}]
- matches: [{path: {value: /api/v1/}}]
  backendRefs: [{name: svc, port: 80}]
- matches: [{path: {type: Exact, value: /api/v1}}]
  backendRefs: [{name: svc, port: 80}]",
        )
        .table();
    assert_eq!(route_of(&t, "h", "/x").as_deref(), Some("default/r#0"));
    assert_eq!(route_of(&t, "h", "/api/x").as_deref(), Some("default/r#1"));
    assert_eq!(route_of(&t, "h", "/api/v1/events").as_deref(), Some("default/r#2"));
    assert_eq!(route_of(&t, "h", "/api/v1").as_deref(), Some("default/r#3"));
}

#[test]
fn host_precedence_exact_then_longest_wildcard_then_any() {
    let t = World::new()
        .service("svc", &[1])
        .route("any", 0, "rules: [{backendRefs: [{name: svc, port: 80}]}]")
        .route("wide", 0, "hostnames: ['*.example.com']\nrules: [{backendRefs: [{name: svc, port: 80}]}]")
        .route("narrow", 0, "hostnames: ['*.eu.example.com']\nrules: [{backendRefs: [{name: svc, port: 80}]}]")
        .route(
            "exact",
            0,
            "hostnames: [api.eu.example.com]\nrules: [{matches: [{path: {value: /only}}], backendRefs: [{name: svc, port: 80}]}]",
        )
        .table();
    assert_eq!(
        route_of(&t, "API.eu.example.com:443", "/only/x").as_deref(),
        Some("default/exact#0")
    );
    // The exact host has no match for this path, so the next pattern serves it.
    assert_eq!(
        route_of(&t, "api.eu.example.com", "/other").as_deref(),
        Some("default/narrow#0")
    );
    assert_eq!(route_of(&t, "a.b.example.com", "/").as_deref(), Some("default/wide#0"));
    assert_eq!(route_of(&t, "example.com", "/").as_deref(), Some("default/any#0"));
    assert_eq!(route_of(&t, "other.org", "/").as_deref(), Some("default/any#0"));
}

#[test]
fn hostnames_without_a_catch_all_give_no_match() {
    let t = World::new()
        .service("svc", &[1])
        .route(
            "r",
            0,
            "hostnames: [a.test]\nrules: [{backendRefs: [{name: svc, port: 80}]}]",
        )
        .table();
    assert!(route_of(&t, "a.test", "/x").is_some());
    assert!(route_of(&t, "b.test", "/x").is_none());
}

#[test]
fn older_route_wins_a_conflict_and_loser_is_told() {
    let t = World::new()
        .service("svc", &[1])
        .route(
            "young",
            2000,
            "hostnames: [a.test]
rules:
- matches: [{path: {value: /shared}}, {path: {value: /mine}}]
  backendRefs: [{name: svc, port: 80}]",
        )
        .route(
            "old",
            1000,
            "hostnames: [a.test]\nrules: [{matches: [{path: {value: /shared}}], backendRefs: [{name: svc, port: 80}]}]",
        )
        .table();
    assert_eq!(route_of(&t, "a.test", "/shared").as_deref(), Some("default/old#0"));
    assert_eq!(route_of(&t, "a.test", "/mine").as_deref(), Some("default/young#0"));
    let young = report(&t, "young");
    assert_eq!(young.accepted.status, crate::model::report::ConditionStatus::False);
    assert_eq!(young.accepted.reason, "Conflicted");
    assert!(young
        .accepted
        .message
        .contains("PathPrefix /shared on a.test is served by Route default/old"));
    assert!(report(&t, "old").accepted.is_true());
}

#[test]
fn equal_age_conflict_goes_to_smaller_name() {
    let t = World::new()
        .service("svc", &[1])
        .route("b", 5, "rules: [{backendRefs: [{name: svc, port: 80}]}]")
        .route("a", 5, "rules: [{backendRefs: [{name: svc, port: 80}]}]")
        .table();
    assert_eq!(route_of(&t, "h", "/").as_deref(), Some("default/a#0"));
    assert_eq!(report(&t, "b").accepted.reason, "Conflicted");
}

#[test]
fn invalid_route_is_left_out_without_hurting_valid_ones() {
    let t = World::new()
        .service("svc", &[1])
        .route(
            "good",
            10,
            "rules: [{matches: [{path: {value: /good}}], backendRefs: [{name: svc, port: 80}]}]",
        )
        // Older, so it would win the conflict on /good if it counted.
        .route(
            "bad",
            1,
            "rules:
- matches: [{path: {value: /good}}, {path: {value: nope}}]
  backendRefs: [{name: svc, port: 80}]",
        )
        .table();
    assert_eq!(route_of(&t, "h", "/good").as_deref(), Some("default/good#0"));
    let bad = report(&t, "bad");
    assert_eq!(bad.accepted.reason, "Invalid");
    assert!(
        bad.accepted.message.contains("spec.rules[0].matches[1].path.value"),
        "{}",
        bad.accepted.message
    );
    assert!(report(&t, "good").accepted.is_true());
}

#[test]
fn missing_service_and_unready_endpoints_are_reported() {
    let mut world = World::new()
        .service("svc", &[1])
        .route(
            "gone",
            0,
            "hostnames: [a.test]\nrules: [{backendRefs: [{name: nothere, port: 80}]}]",
        )
        .route(
            "badport",
            0,
            "hostnames: [b.test]\nrules: [{backendRefs: [{name: svc, port: 81}]}]",
        )
        .route(
            "down",
            0,
            "hostnames: [c.test]\nrules: [{backendRefs: [{name: svc, port: 80}]}]",
        );
    for slice in world.0.slices.values_mut() {
        slice.endpoints[0].ready = false;
    }
    let t = world.table();
    let gone = report(&t, "gone");
    assert_eq!(gone.resolved_refs.reason, "BackendNotFound");
    assert!(gone.resolved_refs.message.contains("Service default/nothere not found"));
    assert!(
        gone.accepted.is_true(),
        "an unresolved backend does not make the Route invalid"
    );
    assert!(report(&t, "badport").resolved_refs.message.contains("has no port 81"));
    assert_eq!(report(&t, "down").resolved_refs.reason, "NoReadyEndpoints");
    let target = t.lookup("c.test", "/", &RequestSketch::default()).unwrap();
    assert_eq!(
        target.pick(),
        Err(Unpicked {
            why: "Service default/svc:80 has no ready endpoints",
            internal: false
        })
    );
    assert_eq!(report(&t, "down").generation, Some(3));
}

#[test]
fn weighted_round_robin_spreads_by_weight_and_endpoint() {
    let t = World::new()
        .service("a", &[1, 2])
        .service("b", &[3])
        .route(
            "r",
            0,
            "rules: [{backendRefs: [{name: a, port: 80, weight: 3}, {name: b, port: 80, weight: 1}, {name: b, port: 80, weight: 0}]}]",
        )
        .table();
    let target = t.lookup("h", "/", &RequestSketch::default()).unwrap();
    let mut counts = std::collections::HashMap::<SocketAddr, usize>::new();
    for _ in 0..400 {
        *counts.entry(target.pick().unwrap()).or_default() += 1;
    }
    let at = |h: u8| counts[&SocketAddr::from(([10, 0, 0, h], 8080))];
    assert_eq!((at(1), at(2), at(3)), (150, 150, 100));
}

#[test]
fn weights_are_interleaved_so_any_run_of_requests_keeps_the_split() {
    let t = World::new()
        .service("a", &[1])
        .service("b", &[2])
        .route(
            "r",
            0,
            "rules: [{backendRefs: [{name: a, port: 80, weight: 70}, {name: b, port: 80, weight: 30}]}]",
        )
        .table();
    let target = t.lookup("h", "/", &RequestSketch::default()).unwrap();
    let picks: Vec<u8> = (0..250)
        .map(|_| match target.pick().unwrap() {
            SocketAddr::V4(a) => a.ip().octets()[3],
            other => panic!("{other}"),
        })
        .collect();
    // Not 70 in a row to a, then 30 to b: every 10 consecutive requests
    // are within one of the 7/3 split, and 250 (not a whole cycle) keep it.
    for w in picks.windows(10) {
        let a = w.iter().filter(|&&h| h == 1).count();
        assert!((6..=8).contains(&a), "{w:?}");
    }
    let a = picks.iter().filter(|&&h| h == 1).count();
    assert!((172..=178).contains(&a), "{a} of 250");
}

#[test]
fn rule_settings_reach_the_target() {
    let t = World::new()
        .service("svc", &[1])
        .route(
            "r",
            0,
            "proxyBuffering: Enabled\nbufferSize: 1Ki\nrules: [{backendRefs: [{name: svc, port: 80}], proxyBuffering: Disabled}]",
        )
        .table();
    let target = t.lookup("h", "/", &RequestSketch::default()).unwrap();
    assert_eq!(target.settings.buffering, ProxyBuffering::Disabled);
    assert_eq!(target.settings.buffer_size, 1024);
}

#[test]
fn builds_ten_thousand_routes() {
    let mut world = World::new().service("svc", &[1]);
    for i in 0..10_000 {
        world = world.route(
            &format!("r{i}"),
            i,
            &format!("hostnames: [h{i}.test]\nrules: [{{matches: [{{path: {{value: /p{i}}}}}], backendRefs: [{{name: svc, port: 80}}]}}]"),
        );
    }
    let t = world.table();
    assert_eq!(t.reports.len(), 10_000);
    assert!(route_of(&t, "h9999.test", "/p9999/x").is_some());
    assert!(route_of(&t, "h9999.test", "/p9998").is_none());
}

/// A definition built directly in the model's terms, with conditions a
/// Route cannot express (as an HTTPRoute's translation will give).
fn conditioned(
    name: &str,
    created: i64,
    rules: Vec<(crate::api::PathMatchType, &str, MatchConditions)>,
) -> RouteDefinition {
    let base: RouteSpec = serde_yaml::from_str("rules: [{backendRefs: [{name: svc, port: 80}]}]").unwrap();
    let mut valid = base.validate().unwrap();
    let template = valid.rules.remove(0);
    for (kind, path, conditions) in rules {
        let mut rule = template.clone();
        rule.matches = vec![ValidMatch {
            path: crate::api::valid_path(kind, path).unwrap(),
            conditions,
        }];
        valid.rules.push(rule);
    }
    RouteDefinition {
        kind: SourceKind::Route,
        key: ObjectKey::new("default", name),
        generation: None,
        created_millis: created,
        translated: Ok(valid),
        warnings: Vec::new(),
    }
}

#[test]
fn method_header_query_and_listener_conditions_pick_the_most_specific_and_fall_through() {
    use crate::api::PathMatchType::{Exact, PathPrefix};
    let header = |k: &str, v: &str| MatchConditions {
        headers: vec![(k.into(), v.into())],
        ..Default::default()
    };
    let mut w = World::new();
    let def = conditioned(
        "c",
        1,
        vec![
            (PathPrefix, "/a", MatchConditions::default()),
            (PathPrefix, "/a", header("x-v", "2")),
            (
                PathPrefix,
                "/a/b",
                MatchConditions {
                    method: Some("POST".into()),
                    ..Default::default()
                },
            ),
            (
                Exact,
                "/a",
                MatchConditions {
                    query: vec![("q".into(), "1".into())],
                    tls: Some(true),
                    ..Default::default()
                },
            ),
        ],
    );
    w.0.routes.insert(def.key.clone(), def);
    // Another object: the same path with two header conditions outranks
    // one; the same path and conditions as an older rule lose to it.
    let later = conditioned(
        "d",
        2,
        vec![
            (PathPrefix, "/a", header("x-v", "2")),
            (
                PathPrefix,
                "/a",
                MatchConditions {
                    headers: vec![("x-v".into(), "2".into()), ("x-w".into(), "1".into())],
                    ..Default::default()
                },
            ),
        ],
    );
    w.0.routes.insert(later.key.clone(), later);
    let t = w.table();
    let at = |path: &str, req: RequestSketch| {
        t.lookup("h", path, &req)
            .map(|r| format!("{}#{}", r.route, r.rule_index))
            .unwrap_or_default()
    };
    let with = |headers: &[(&str, &str)]| RequestSketch {
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    assert_eq!(at("/a", RequestSketch::default()), "default/c#0");
    assert_eq!(at("/a/x", with(&[("x-v", "2")])), "default/c#1");
    assert_eq!(at("/a", with(&[("x-v", "2"), ("x-w", "1")])), "default/d#1");
    assert_eq!(at("/a", with(&[("x-v", "3")])), "default/c#0");
    // /a/b asks for POST: a GET falls through to the /a prefix.
    assert_eq!(at("/a/b", RequestSketch::default()), "default/c#0");
    let post = RequestSketch {
        method: "POST".into(),
        ..Default::default()
    };
    assert_eq!(at("/a/b/c", post), "default/c#2");
    let q = |tls: bool| RequestSketch {
        query: vec![("q".into(), "1".into())],
        tls,
        ..Default::default()
    };
    assert_eq!(at("/a", q(false)), "default/c#0", "the exact match is for TLS only");
    assert_eq!(at("/a", q(true)), "default/c#3");

    let d = report(&t, "d");
    assert!(!d.accepted.is_true());
    assert!(
        d.accepted
            .message
            .contains("PathPrefix /a (header x-v: 2) on any host is served by Route default/c"),
        "{}",
        d.accepted.message
    );
}

#[test]
fn a_certificate_for_any_name_serves_names_without_one_of_their_own_and_no_sni() {
    let mut t = RoutingTable::default();
    let any = std::sync::Arc::new(TlsKeyPair::new(b"any", b"k"));
    let own = std::sync::Arc::new(TlsKeyPair::new(b"own", b"k"));
    t.certificates.insert("*.example.com".into(), own.clone());
    assert!(t.certificate_for("other.org").is_none());
    t.certificates.insert("*".into(), any.clone());
    assert_eq!(t.certificate_for("a.example.com"), Some(&own));
    assert_eq!(t.certificate_for("other.org"), Some(&any));
    assert_eq!(t.certificate_for(""), Some(&any), "a client without SNI");
}

#[test]
fn a_request_on_a_gateways_own_port_matches_only_that_gateways_rules() {
    use crate::api::PathMatchType::PathPrefix;
    let through = |g: &str| MatchConditions {
        tls: Some(false),
        gateway: Some(std::sync::Arc::from(g)),
        ..Default::default()
    };
    let mut w = World::new()
        .service("svc", &[1])
        .route("plain", 0, "rules: [{backendRefs: [{name: svc, port: 80}]}]");
    let g = conditioned(
        "g",
        1,
        vec![
            (PathPrefix, "/", through("apps/g1")),
            (
                PathPrefix,
                "/x",
                MatchConditions {
                    headers: vec![("x-v".into(), "1".into())],
                    ..through("apps/g2")
                },
            ),
            (PathPrefix, "/", through("apps/g2")),
        ],
    );
    w.0.routes.insert(g.key.clone(), g);
    // The same match through the same Gateway as an older rule: a conflict.
    let h = conditioned("h", 2, vec![(PathPrefix, "/", through("apps/g1"))]);
    w.0.routes.insert(h.key.clone(), h);
    let t = w.table();
    let at = |gateway: Option<&str>, path: &str, headers: &[(&str, &str)]| {
        let req = RequestSketch {
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            gateway: gateway.map(str::to_owned),
            ..Default::default()
        };
        t.lookup("h", path, &req)
            .map(|r| format!("{}#{}", r.route, r.rule_index))
            .unwrap_or_default()
    };
    // The shared ports: as before, the oldest of equally specific matches.
    assert_eq!(at(None, "/", &[]), "default/plain#0");
    assert_eq!(at(None, "/x", &[("x-v", "1")]), "default/g#1");
    // A Gateway's own port: its rules only, never a Route's.
    assert_eq!(at(Some("apps/g1"), "/", &[]), "default/g#0");
    assert_eq!(at(Some("apps/g2"), "/", &[]), "default/g#2");
    assert_eq!(at(Some("apps/g2"), "/x/y", &[("x-v", "1")]), "default/g#1");
    assert_eq!(
        at(Some("apps/g2"), "/x/y", &[]),
        "default/g#2",
        "a failed condition falls through to the Gateway's shorter prefix"
    );
    assert_eq!(at(Some("apps/g1"), "/x/y", &[("x-v", "1")]), "default/g#0");
    assert_eq!(at(Some("apps/g3"), "/", &[]), "", "no rule of that Gateway");

    // One match through two Gateways is no conflict; through one, it is.
    assert!(report(&t, "g").accepted.is_true(), "{:?}", report(&t, "g").accepted);
    let h = report(&t, "h");
    assert_eq!(h.accepted.reason, "Conflicted");
    assert!(
        h.accepted.message.contains(
            "PathPrefix / (over plain HTTP, through Gateway apps/g1) on any host is served by Route default/g"
        ),
        "{}",
        h.accepted.message
    );
}

#[test]
fn debug_routes_shows_resume_with_its_settings_where_it_is_on() {
    let t = World::new()
        .service("svc", &[1])
        .route(
            "r",
            0,
            "sse: {resume: {enabled: true, budget: 2s}}
rules:
- matches: [{path: {value: /resumed}}]
  backendRefs: [{name: svc, port: 80}]
- matches: [{path: {value: /rebalanced}}]
  backendRefs: [{name: svc, port: 80}]
  sse: {rebalance: {enabled: true}}
- matches: [{path: {value: /plain}}]
  backendRefs: [{name: svc, port: 80}]
  sse: {resume: {enabled: false}}",
        )
        .table();
    let view = serde_json::to_value(t.describe()).unwrap();
    let mut resume: Vec<(String, Option<String>)> = view["hosts"][0]["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["path"].as_str().unwrap().to_owned(),
                m["resume"].as_str().map(str::to_owned),
            )
        })
        .collect();
    resume.sort();
    assert_eq!(
        resume,
        [
            ("/plain".to_owned(), None),
            (
                "/rebalanced".to_owned(),
                Some("maxAttempts 3, budget 2s, onIdleTimeout false, rolloutWindow 10s; rebalance: tolerancePercent 10, movesPerSecond 20".to_owned())
            ),
            (
                "/resumed".to_owned(),
                Some("maxAttempts 3, budget 2s, onIdleTimeout false, rolloutWindow 10s; rebalance: off".to_owned())
            ),
        ]
    );
}
