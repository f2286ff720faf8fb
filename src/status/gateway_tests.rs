use super::*;
use crate::api::gateway::{Gateway, GatewayClass, HttpRoute};
use crate::model::SourceKind;
use crate::translate::gateway::GatewayOutcome;
use crate::translate::gateway::{translate, GatewayInputs};
use std::collections::BTreeMap;

fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> Vec<T> {
    yaml.split("\n---\n")
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect()
}

const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sse, generation: 3}
spec: {controllerName: ssegate.dev/gateway-controller}";

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: apps, generation: 2}
spec:
  gatewayClassName: sse
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: \"*.example.com\"}
  - {name: tcp, port: 9000, protocol: TCP}";

fn route(name: &str, spec: &str) -> HttpRoute {
    serde_yaml::from_str(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: apps, generation: 5}}\nspec:\n{spec}"
    ))
    .unwrap()
}

fn outcome(routes: &[HttpRoute]) -> GatewayOutcome {
    let classes: Vec<GatewayClass> = parse(CLASS);
    let gateways: Vec<Gateway> = parse(GATEWAY);
    translate(&GatewayInputs {
        classes: &classes,
        gateways: &gateways,
        routes,
        grants: &[],
        policies: &[],
        namespace_labels: &BTreeMap::new(),
        secrets: &BTreeMap::new(),
        default_namespace: "default",
        gateway_ports: None,
        held_ports: &BTreeMap::new(),
    })
}

fn find<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:?}"))
}

fn at(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(seconds).unwrap()
}

#[test]
fn supported_features_are_sorted_conformance_names_of_what_ssegate_does() {
    let mut sorted = SUPPORTED_FEATURES.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, SUPPORTED_FEATURES, "sorted, without repeats");
    // Every claim, named here by hand: a claim added or dropped in the code
    // must be added or dropped here too, on purpose.
    let claimed = [
        // Core.
        "Gateway",
        "HTTPRoute",
        "ReferenceGrant",
        // Listeners: a request is matched only against its own listener's
        // routes; an HTTPS request whose Host is not its SNI's gets 421.
        "GatewayHTTPListenerIsolation",
        "GatewayHTTPSListenerDetectMisdirectedRequests",
        // Redirect filters with their status codes.
        "HTTPRoute303RedirectStatusCode",
        "HTTPRoute307RedirectStatusCode",
        "HTTPRoute308RedirectStatusCode",
        "HTTPRouteMethodMatching",
        "HTTPRouteQueryParamMatching",
        "HTTPRouteResponseHeaderModification",
        "HTTPRouteSchemeRedirect",
        "HTTPRoutePathRedirect",
        "HTTPRoutePortRedirect",
        "HTTPRouteHostRewrite",
        "HTTPRoutePathRewrite",
        "HTTPRouteCORS",
        "HTTPRouteRequestTimeout",
        "HTTPRouteBackendTimeout",
        // Passing the suite's tests for them.
        "HTTPRouteBackendProtocolWebSocket",
        "HTTPRouteNamedRouteRule",
        "HTTPRouteDestinationPortMatching",
    ];
    let mut claimed = claimed.to_vec();
    claimed.sort();
    assert_eq!(SUPPORTED_FEATURES, claimed, "the claims, all of them");
    for not_done in [
        "HTTPRouteRequestMirror",
        "HTTPRouteBackendRequestHeaderModification",
        // Listeners are not served on the ports they name.
        "HTTPRouteParentRefPort",
        "GatewayPort8080",
    ] {
        assert!(!SUPPORTED_FEATURES.contains(&not_done), "{not_done}");
    }
}

#[test]
fn class_is_accepted_with_its_version_and_features() {
    let out = outcome(&[]);
    let status = class_status(&out.classes[0]);
    let conditions = status.conditions.as_deref().unwrap();
    let accepted = find(conditions, "Accepted");
    assert_eq!(
        (accepted.status.as_str(), accepted.reason.as_str()),
        ("True", "Accepted")
    );
    assert_eq!(accepted.observed_generation, Some(3));
    let version = find(conditions, "SupportedVersion");
    assert_eq!(
        (version.status.as_str(), version.reason.as_str()),
        ("True", "SupportedVersion")
    );
    assert!(version.message.contains(BUNDLE_VERSION), "{}", version.message);
    let names: Vec<&str> = status
        .supported_features
        .iter()
        .flatten()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(names, SUPPORTED_FEATURES);
}

#[test]
fn gateway_lists_its_listeners_with_attached_routes_and_the_published_addresses() {
    let routes = [
        route("a", "  parentRefs: [{name: gw}]\n  hostnames: [a.example.com]"),
        route("b", "  parentRefs: [{name: gw, sectionName: http}]"),
        route("c", "  parentRefs: [{name: gw}]\n  hostnames: [elsewhere.test]"),
    ];
    let out = outcome(&routes);
    let published = [
        Address::Ip("192.0.2.7".into()),
        Address::Hostname("lb.example.com".into()),
    ];
    let status = gateway_status(&out.gateways[0], Some(&published), None);
    let conditions = status.conditions.as_deref().unwrap();
    assert_eq!(find(conditions, "Accepted").status, "True");
    assert_eq!(find(conditions, "Programmed").status, "True");
    assert_eq!(find(conditions, "Programmed").observed_generation, Some(2));
    let addresses: Vec<(Option<&str>, &str)> = status
        .addresses
        .iter()
        .flatten()
        .map(|a| (a.r#type.as_deref(), a.value.as_str()))
        .collect();
    assert_eq!(
        addresses,
        [(Some("IPAddress"), "192.0.2.7"), (Some("Hostname"), "lb.example.com")]
    );

    let listeners = status.listeners.as_deref().unwrap();
    let http = listeners.iter().find(|l| l.name == "http").unwrap();
    assert_eq!(http.attached_routes, 2, "a and b attach; c's hostname does not match");
    let kinds = http.supported_kinds.as_deref().unwrap();
    assert_eq!(
        (kinds[0].group.as_deref(), kinds[0].kind.as_str()),
        (Some(GROUP), "HTTPRoute")
    );
    for (type_, status, reason) in [
        ("Accepted", "True", "Accepted"),
        ("Programmed", "True", "Programmed"),
        ("ResolvedRefs", "True", "ResolvedRefs"),
        ("Conflicted", "False", "NoConflicts"),
    ] {
        let c = find(&http.conditions, type_);
        assert_eq!((c.status.as_str(), c.reason.as_str()), (status, reason), "{type_}");
    }
    let tcp = listeners.iter().find(|l| l.name == "tcp").unwrap();
    let accepted = find(&tcp.conditions, "Accepted");
    assert_eq!(
        (accepted.status.as_str(), accepted.reason.as_str()),
        ("False", "UnsupportedProtocol")
    );
    assert_eq!(find(&tcp.conditions, "Programmed").status, "False");
    assert_eq!(tcp.attached_routes, 0);
    assert_eq!(tcp.supported_kinds, None, "a TCP listener takes no kind ssegate serves");

    // Addresses not known yet: the live ones stay; none published: none.
    let live = vec![GatewayStatusAddresses {
        r#type: Some("IPAddress".into()),
        value: "198.51.100.1".into(),
    }];
    let kept = gateway_status(&out.gateways[0], None, Some(live.clone()));
    assert_eq!(kept.addresses, Some(live.clone()));
    assert_eq!(gateway_status(&out.gateways[0], Some(&[]), Some(live)).addresses, None);
}

fn report(resolved: Verdict) -> RouteReport {
    RouteReport {
        kind: SourceKind::HttpRoute,
        key: ObjectKey::new("apps", "a"),
        generation: Some(5),
        accepted: Verdict::yes(reason::ACCEPTED, "ok"),
        resolved_refs: resolved,
        settings: Vec::new(),
        warnings: Vec::new(),
    }
}

#[test]
fn resolved_refs_from_the_translation_then_the_build() {
    let out = outcome(&[
        route(
            "a",
            "  parentRefs: [{name: gw}]\n  rules: [{backendRefs: [{name: svc, port: 80}]}]",
        ),
        route(
            "far",
            "  parentRefs: [{name: gw}]\n  rules: [{backendRefs: [{name: svc, namespace: elsewhere, port: 80}]}]",
        ),
        route(
            "kind",
            "  parentRefs: [{name: gw}]\n  rules: [{backendRefs: [{name: b, kind: Bucket, group: example.com, port: 80}]}]",
        ),
    ]);
    let plan = |name: &str| &out.routes.iter().find(|(k, _, _)| k.name == name).unwrap().2;

    // The build's verdict, as the Gateway API spells it.
    let missing = Verdict::no(reason::BACKEND_NOT_FOUND, "Service apps/svc not found");
    let v = route_resolved_refs(plan("a"), Some(&report(missing)));
    assert_eq!((v.status.as_str(), v.reason), ("False", "BackendNotFound"));
    let unready = Verdict::no(reason::NO_READY_ENDPOINTS, "apps/svc has no ready endpoint");
    let v = route_resolved_refs(plan("a"), Some(&report(unready)));
    assert_eq!(
        (v.status.as_str(), v.reason),
        ("True", "ResolvedRefs"),
        "not a Gateway API reason"
    );
    assert!(v.message.contains("no ready endpoint"));
    let fine = Verdict::yes(reason::RESOLVED_REFS, "ok");
    assert!(route_resolved_refs(plan("a"), Some(&report(fine.clone()))).is_true());
    assert!(route_resolved_refs(plan("a"), None).is_true());

    // The translation's refusal wins over the build's.
    let v = route_resolved_refs(plan("far"), Some(&report(fine.clone())));
    assert_eq!((v.status.as_str(), v.reason), ("False", "RefNotPermitted"));
    let v = route_resolved_refs(plan("kind"), Some(&report(fine)));
    assert_eq!((v.status.as_str(), v.reason), ("False", "InvalidKind"));

    // One entry per parent of ssegate's, with both conditions.
    let resolved = Verdict::yes(reason::RESOLVED_REFS, "ok");
    let parents = our_parents(plan("a"), Some(5), &resolved);
    assert_eq!(parents.len(), 1);
    assert_eq!(parents[0].controller_name, CONTROLLER);
    assert_eq!(parents[0].parent_ref.name, "gw");
    assert_eq!(find(&parents[0].conditions, "Accepted").status, "True");
    assert_eq!(
        find(&parents[0].conditions, "ResolvedRefs").observed_generation,
        Some(5)
    );
}

fn entry(controller: &str, gateway: &str, defaulted: bool, accepted: &str, time: i64) -> HttpRouteStatusParents {
    HttpRouteStatusParents {
        controller_name: controller.into(),
        parent_ref: HttpRouteStatusParentsParentRef {
            group: defaulted.then(|| GROUP.to_owned()),
            kind: defaulted.then(|| "Gateway".to_owned()),
            name: gateway.into(),
            ..Default::default()
        },
        conditions: vec![Condition {
            type_: "Accepted".into(),
            status: accepted.into(),
            reason: "R".into(),
            message: "m".into(),
            observed_generation: Some(1),
            last_transition_time: Time(at(time)),
        }],
    }
}

#[test]
fn merge_keeps_other_controllers_entries_and_replaces_only_ours() {
    let theirs = entry("example.com/other", "theirs", true, "True", 100);
    let live = vec![
        entry(CONTROLLER, "gw", true, "True", 200),
        theirs.clone(),
        entry(CONTROLLER, "gone", true, "True", 300),
    ];
    // ssegate's now: gw still accepted (as the spec wrote it, no defaults),
    // and a new parent; "gone" is no longer ssegate's.
    let ours = vec![
        entry(CONTROLLER, "gw", false, "True", 0),
        entry(CONTROLLER, "new", false, "False", 0),
    ];
    let merged = merge_parents(&live, ours, "apps", at(999));
    let names: Vec<(&str, &str)> = merged
        .iter()
        .map(|p| (p.controller_name.as_str(), p.parent_ref.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [(CONTROLLER, "gw"), ("example.com/other", "theirs"), (CONTROLLER, "new")]
    );
    assert_eq!(merged[1], theirs, "another controller's entry is kept as it is");
    assert_eq!(
        merged[0].conditions[0].last_transition_time,
        Time(at(200)),
        "unchanged condition keeps its transition time"
    );
    assert_eq!(
        merged[0].parent_ref.group.as_deref(),
        Some(GROUP),
        "parentRef kept as the API defaulted it"
    );
    assert_eq!(merged[2].conditions[0].last_transition_time, Time(at(999)));
    assert!(
        same_status(
            &merge_parents(
                &merged,
                merged[..1].iter().chain(&merged[2..]).cloned().collect(),
                "apps",
                at(5000)
            ),
            &merged
        ),
        "merging the same again changes nothing"
    );

    // A changed status gets a new transition time.
    let flipped = merge_parents(&live, vec![entry(CONTROLLER, "gw", false, "False", 0)], "apps", at(999));
    assert_eq!(flipped.len(), 2);
    assert_eq!(flipped[0].conditions[0].last_transition_time, Time(at(999)));

    // Nothing of ssegate's any more: only the others remain.
    assert_eq!(merge_parents(&live, Vec::new(), "apps", at(999)), vec![theirs]);
}

#[test]
fn same_parent_fills_in_the_api_defaults() {
    let spelled = HttpRouteStatusParentsParentRef {
        name: "gw".into(),
        ..Default::default()
    };
    let defaulted = HttpRouteStatusParentsParentRef {
        group: Some(GROUP.into()),
        kind: Some("Gateway".into()),
        namespace: Some("apps".into()),
        name: "gw".into(),
        ..Default::default()
    };
    assert!(same_parent(&spelled, &defaulted, "apps"));
    assert!(!same_parent(&spelled, &defaulted, "other"));
    let section = HttpRouteStatusParentsParentRef {
        section_name: Some("http".into()),
        ..spelled.clone()
    };
    assert!(!same_parent(&spelled, &section, "apps"));
}

fn wrap(conditions: &[Condition]) -> GatewayClassStatus {
    GatewayClassStatus {
        conditions: Some(conditions.to_vec()),
        supported_features: None,
    }
}

#[test]
fn transition_times_and_comparison() {
    let live = vec![
        condition("Accepted", &Verdict::yes("Accepted", "ok"), Some(1)),
        condition("Programmed", &Verdict::yes("Programmed", "ok"), Some(1)),
    ];
    let mut live = live;
    stamp(&mut live, &[], at(100));
    // Same verdicts, other order, later: equal, times kept.
    let mut want = vec![
        condition("Programmed", &Verdict::yes("Programmed", "ok"), Some(1)),
        condition("Accepted", &Verdict::yes("Accepted", "ok"), Some(1)),
    ];
    stamp(&mut want, &live, at(500));
    assert!(want.iter().all(|c| c.last_transition_time == Time(at(100))));
    assert!(same_status(&wrap(&want), &wrap(&live)));
    // A flip: a new time, and a difference.
    let mut flipped = vec![
        condition("Accepted", &Verdict::no("Invalid", "no"), Some(1)),
        want[0].clone(),
    ];
    stamp(&mut flipped, &live, at(500));
    assert_eq!(flipped[0].last_transition_time, Time(at(500)));
    assert!(!same_status(&wrap(&flipped), &wrap(&live)));
    // A new generation alone is a difference.
    let newer = vec![
        condition("Accepted", &Verdict::yes("Accepted", "ok"), Some(2)),
        condition("Programmed", &Verdict::yes("Programmed", "ok"), Some(2)),
    ];
    assert!(!same_status(&wrap(&newer), &wrap(&live)));
}

#[test]
fn long_messages_are_cut_to_what_the_api_takes() {
    let long = "é".repeat(MAX_MESSAGE);
    let c = condition("Accepted", &Verdict::no("Invalid", long), None);
    assert!(c.message.len() <= MAX_MESSAGE);
    assert!(c.message.len() > MAX_MESSAGE - 4);
}

#[test]
fn a_class_or_gateway_status_is_replaced_whole() {
    let out = outcome(&[]);
    let want = gateway_status(&out.gateways[0], Some(&[]), None);
    // Someone added an address, a listener set count and a condition.
    let mut live = gateway_status(&out.gateways[0], Some(&[Address::Ip("192.0.2.9".into())]), None);
    live.attached_listener_sets = Some(4);
    live.conditions
        .as_mut()
        .unwrap()
        .push(condition("Extra", &Verdict::yes("Extra", "x"), None));
    let patch = replacing(&want, &live);
    let status = &patch["status"];
    assert_eq!(status["addresses"], serde_json::Value::Null, "removed");
    assert_eq!(status["attachedListenerSets"], serde_json::Value::Null, "removed");
    assert!(status.as_object().unwrap().contains_key("addresses"));
    let types: Vec<&str> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["Accepted", "Programmed"],
        "the whole list, without the extra one"
    );
    assert_eq!(status["listeners"].as_array().unwrap().len(), 2);
}

#[test]
fn with_services_of_their_own_gateways_publish_their_services_address_or_say_why_not() {
    use crate::model::{PortClaim, PortRange};
    let out = outcome(&[]);
    let plan = &out.gateways[0];
    let claim = |name: &str, at| PortClaim {
        gateway: ObjectKey::new("apps", name),
        created_millis: at,
        tls: false,
        held: None,
        listeners: Vec::new(),
    };
    let shared = [Address::Ip("192.0.2.7".into())];
    let own_ip = vec![Address::Ip("10.213.249.201".into())];

    // It got ports, and its Service has a load-balancer address.
    let ports = GatewayPorts::assign(Some(PortRange::new(10000, 10001).unwrap()), &[claim("gw", 1)]);
    let services = BTreeMap::from([(plan.key.clone(), own_ip.clone())]);
    let own = own_address(plan, &ports, &services).unwrap();
    assert_eq!(own, OwnAddress::Ready(own_ip.clone()));
    let mut status = gateway_status(plan, Some(&shared), None);
    apply_own_address(&mut status, &own);
    let values: Vec<&str> = status.addresses.iter().flatten().map(|a| a.value.as_str()).collect();
    assert_eq!(values, ["10.213.249.201"], "its own address, not the shared one");
    assert_eq!(find(status.conditions.as_deref().unwrap(), "Programmed").status, "True");

    // Its Service is not there yet, or its load balancer is pending.
    for services in [BTreeMap::new(), BTreeMap::from([(plan.key.clone(), vec![])])] {
        let own = own_address(plan, &ports, &services).unwrap();
        assert_eq!(own, OwnAddress::Pending);
        let mut status = gateway_status(plan, Some(&shared), None);
        apply_own_address(&mut status, &own);
        assert_eq!(status.addresses, None, "no address rather than one that is not its own");
        let programmed = find(status.conditions.as_deref().unwrap(), "Programmed");
        assert_eq!(
            (programmed.status.as_str(), programmed.reason.as_str()),
            ("False", ADDRESS_NOT_ASSIGNED)
        );
    }

    // An older Gateway took the range's only slot.
    let full = GatewayPorts::assign(
        Some(PortRange::new(10000, 10001).unwrap()),
        &[claim("older", 0), claim("gw", 1)],
    );
    let own = own_address(plan, &full, &BTreeMap::new()).unwrap();
    assert_eq!(own, OwnAddress::NoPorts);
    let mut status = gateway_status(plan, Some(&shared), None);
    apply_own_address(&mut status, &own);
    let values: Vec<&str> = status.addresses.iter().flatten().map(|a| a.value.as_str()).collect();
    assert_eq!(values, ["192.0.2.7"], "still reachable on the shared address");
    let programmed = find(status.conditions.as_deref().unwrap(), "Programmed");
    assert_eq!(
        (programmed.status.as_str(), programmed.reason.as_str()),
        ("False", NO_RESOURCES)
    );

    // No range at all, or not one of the Gateways it knows: shared address.
    assert_eq!(own_address(plan, &GatewayPorts::default(), &services), None);
}
