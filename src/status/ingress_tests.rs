use super::*;
use crate::model::report::reason;
use crate::model::Verdict;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service, ServiceSpec, ServiceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};

fn ip(s: &str) -> Address {
    Address::Ip(s.into())
}

fn host(s: &str) -> Address {
    Address::Hostname(s.into())
}

fn live_ip(s: &str) -> IngressLoadBalancerIngress {
    IngressLoadBalancerIngress {
        ip: Some(s.into()),
        ..Default::default()
    }
}

#[test]
fn status_addresses_are_ips_or_host_names_and_win_over_the_service() {
    assert_eq!(
        Publish::from_flags(
            Some(" 192.0.2.10, lb.example.com ,2001:db8::1,192.0.2.10"),
            Some("ns/svc"),
            "x"
        ),
        Ok(Publish::Addresses(vec![
            ip("192.0.2.10"),
            ip("2001:db8::1"),
            host("lb.example.com")
        ]))
    );
    assert_eq!(
        Publish::from_flags(Some("LB.Example.com"), None, "x"),
        Ok(Publish::Addresses(vec![host("lb.example.com")]))
    );
    let err = Publish::from_flags(Some("192.0.2.10,not a host"), None, "x").unwrap_err();
    assert!(
        err.contains("--publish-status-address") && err.contains("not a host"),
        "{err}"
    );
}

#[test]
fn publish_service_is_namespace_slash_name_or_a_name_in_the_release_namespace() {
    assert_eq!(
        Publish::from_flags(None, Some("ingress/ssegate"), "rel"),
        Ok(Publish::Service(ObjectKey::new("ingress", "ssegate")))
    );
    assert_eq!(
        Publish::from_flags(Some(" "), Some("ssegate"), "rel"),
        Ok(Publish::Service(ObjectKey::new("rel", "ssegate")))
    );
    assert!(Publish::from_flags(None, Some("a/b/c"), "rel").is_err());
    assert_eq!(Publish::from_flags(None, None, "rel"), Ok(Publish::Nothing));
    assert_eq!(Publish::from_flags(None, Some(""), "rel"), Ok(Publish::Nothing));
}

fn service(lb: &[(&str, &str)], external: &[&str], cluster: Option<&str>) -> Service {
    Service {
        spec: Some(ServiceSpec {
            external_ips: (!external.is_empty()).then(|| external.iter().map(|s| s.to_string()).collect()),
            cluster_ip: cluster.map(str::to_owned),
            ..Default::default()
        }),
        status: Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(
                    lb.iter()
                        .map(|(ip, hostname)| LoadBalancerIngress {
                            ip: (!ip.is_empty()).then(|| ip.to_string()),
                            hostname: (!hostname.is_empty()).then(|| hostname.to_string()),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn service_addresses_prefer_the_load_balancer_then_external_ips_then_the_cluster_ip() {
    assert_eq!(
        service_addresses(&service(
            &[("203.0.113.5", ""), ("", "lb.example.com")],
            &["198.51.100.1"],
            Some("10.96.0.10")
        )),
        [ip("203.0.113.5"), host("lb.example.com")]
    );
    assert_eq!(
        service_addresses(&service(&[], &["198.51.100.2", "198.51.100.1"], Some("10.96.0.10"))),
        [ip("198.51.100.1"), ip("198.51.100.2")]
    );
    assert_eq!(
        service_addresses(&service(&[], &[], Some("10.96.0.10"))),
        [ip("10.96.0.10")]
    );
    // A headless Service has no address to publish.
    assert_eq!(service_addresses(&service(&[], &[], Some("None"))), []);
    let mut dual = service(&[], &[], Some("10.96.0.10"));
    dual.spec.as_mut().unwrap().cluster_ips = Some(vec!["10.96.0.10".into(), "fd00::10".into()]);
    assert_eq!(service_addresses(&dual), [ip("10.96.0.10"), ip("fd00::10")]);
    // A LoadBalancer Service offers its load balancer's addresses and its
    // externalIPs, never its cluster IP (nothing while it is pending).
    let mut pending = service(&[], &[], Some("10.96.0.10"));
    pending.spec.as_mut().unwrap().type_ = Some("LoadBalancer".into());
    assert_eq!(service_addresses(&pending), []);
    let mut balanced = service(&[("203.0.113.5", "")], &["198.51.100.1"], Some("10.96.0.10"));
    balanced.spec.as_mut().unwrap().type_ = Some("LoadBalancer".into());
    assert_eq!(service_addresses(&balanced), [ip("198.51.100.1"), ip("203.0.113.5")]);
    let mut external = service(&[], &[], None);
    external.spec.as_mut().unwrap().external_name = Some("sse.example.com".into());
    assert_eq!(service_addresses(&external), [host("sse.example.com")]);
}

#[test]
fn accepted_ingresses_get_the_published_addresses_in_any_order() {
    let publish = [ip("192.0.2.10"), host("lb.example.com")];
    let written = Change::Write(vec![ip("192.0.2.10"), host("lb.example.com")]);
    assert_eq!(desired(true, Some(&publish), &[], false), written);
    // A hand edit is put right, whoever made it.
    assert_eq!(desired(true, Some(&publish), &[live_ip("192.0.2.99")], false), written);
    let same = [
        IngressLoadBalancerIngress {
            hostname: Some("lb.example.com".into()),
            ..Default::default()
        },
        live_ip("192.0.2.10"),
    ];
    assert_eq!(desired(true, Some(&publish), &same, true), Change::Keep);
    // Anything more than an ip or a hostname differs.
    let with_ports = [IngressLoadBalancerIngress {
        ports: Some(Vec::new()),
        ..live_ip("192.0.2.10")
    }];
    assert_eq!(
        desired(true, Some(&[ip("192.0.2.10")]), &with_ports, true),
        Change::Write(vec![ip("192.0.2.10")])
    );
}

#[test]
fn refused_ingresses_lose_only_the_addresses_ssegate_set() {
    let publish = [ip("192.0.2.10")];
    let live = [live_ip("192.0.2.10")];
    assert_eq!(desired(false, Some(&publish), &live, true), Change::Clear);
    assert_eq!(desired(false, Some(&publish), &live, false), Change::Keep);
    assert_eq!(desired(false, Some(&publish), &[], true), Change::Keep);
}

#[test]
fn without_known_addresses_nothing_is_written_or_taken_back() {
    let live = [live_ip("192.0.2.10")];
    assert_eq!(desired(true, None, &[], false), Change::Keep);
    assert_eq!(desired(true, Some(&[]), &live, true), Change::Keep);
    assert_eq!(desired(false, None, &live, true), Change::Keep);
}

fn managed(manager: &str, subresource: Option<&str>, fields: serde_json::Value) -> ManagedFieldsEntry {
    ManagedFieldsEntry {
        manager: Some(manager.into()),
        subresource: subresource.map(str::to_owned),
        operation: Some("Apply".into()),
        fields_v1: Some(FieldsV1(fields)),
        ..Default::default()
    }
}

#[test]
fn the_addresses_are_ours_when_ssegate_manages_them_on_the_status() {
    let lb = serde_json::json!({"f:status": {"f:loadBalancer": {"f:ingress": {}}}});
    let meta = |entries: Vec<ManagedFieldsEntry>| ObjectMeta {
        managed_fields: Some(entries),
        ..Default::default()
    };
    assert!(set_by_us(&meta(vec![
        managed("kubectl", None, serde_json::json!({"f:spec": {}})),
        managed(FIELD_MANAGER, Some("status"), lb.clone()),
    ])));
    assert!(!set_by_us(&meta(vec![managed(
        "kubectl-patch",
        Some("status"),
        lb.clone()
    )])));
    assert!(!set_by_us(&meta(vec![managed(
        FIELD_MANAGER,
        Some("status"),
        serde_json::json!({"f:status": {}})
    )])));
    assert!(!set_by_us(&ObjectMeta::default()));
}

fn report(accepted: bool, warnings: &[&str]) -> RouteReport {
    RouteReport {
        kind: SourceKind::Ingress,
        key: ObjectKey::new("ns", "web"),
        generation: Some(1),
        accepted: if accepted {
            Verdict::yes(reason::ACCEPTED, "ok")
        } else {
            Verdict::no(
                reason::INVALID,
                "spec.rules[0].http.paths[0].path: reads as a regular expression",
            )
        },
        resolved_refs: Verdict::yes(reason::RESOLVED_REFS, "ok"),
        settings: Vec::new(),
        warnings: warnings.iter().map(|w| w.to_string()).collect(),
    }
}

#[test]
fn each_warning_and_a_rejection_is_a_notice_with_a_reason() {
    let r = report(
        false,
        &[
            "nginx.ingress.kubernetes.io/rewrite-target: ignored: ssegate forwards the request's own host and path unchanged",
            "nginx.ingress.kubernetes.io/configuration-snippet: not needed: ssegate never buffers SSE",
            "nginx.ingress.kubernetes.io/proxy-read-timeout: invalid, the default applies: not a number",
            "annotations setting timeouts.idle: too long; the default applies",
        ],
    );
    let reasons: Vec<String> = notices(&r).into_iter().map(|n| n.reason).collect();
    assert_eq!(
        reasons,
        [
            "AnnotationIgnored",
            "AnnotationUnnecessary",
            "AnnotationInvalid",
            "AnnotationInvalid",
            "Invalid"
        ]
    );
    assert_eq!(notices(&report(true, &[])), []);
    let last = notices(&r).pop().unwrap();
    assert!(last.note.contains("regular expression"));
}

#[test]
fn events_are_recorded_once_per_distinct_message_and_generation() {
    let key = ObjectKey::new("ns", "web");
    let r = report(true, &["a: ignored: x", "b: ignored: y", "a: ignored: x"]);
    let mut announced = Announced::default();
    let first = announced.pending(&key, Some(1), notices(&r));
    assert_eq!(first.len(), 2, "a repeated message is one Event: {first:?}");
    // Only what was recorded counts: a failed publish is tried again.
    announced.recorded(&key, Some(1), first[0].clone());
    assert_eq!(announced.pending(&key, Some(1), notices(&r)), [first[1].clone()]);
    announced.recorded(&key, Some(1), first[1].clone());
    assert_eq!(announced.pending(&key, Some(1), notices(&r)), []);
    // A new generation is announced afresh.
    assert_eq!(announced.pending(&key, Some(2), notices(&r)).len(), 2);
    // A recording for a generation that has moved on does not count.
    announced.recorded(&key, Some(1), first[0].clone());
    assert_eq!(announced.pending(&key, Some(2), notices(&r)).len(), 2);
    announced.retain(|_| false);
    assert_eq!(announced.pending(&key, Some(1), notices(&r)).len(), 2);
}

#[test]
fn long_notes_are_cut_on_a_character_boundary() {
    let text = "é".repeat(600);
    let cut = truncate(&text, MAX_NOTE);
    assert!(cut.len() <= MAX_NOTE && text.starts_with(&cut) && cut.len() >= MAX_NOTE - 1);
}
