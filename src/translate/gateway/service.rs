//! The Service that gives one Gateway an address of its own (step 4 of
//! `conformance/TRIAGE.md`'s way to one address per Gateway): in the
//! release's namespace, selecting ssegate's pods, mapping each of the
//! Gateway's listener ports to the Gateway's own data-plane port (plain or
//! TLS, see [`crate::model::GatewayPorts`]). Pure: the Lease holder's
//! writer (not built yet) applies what this says and deletes what
//! [`stale_services`] names.
//!
//! A Service cannot be owned by a Gateway in another namespace (owner
//! references stay within a namespace), so the Services are found again by
//! [`MANAGED_LABEL`] and told apart by [`GATEWAY_ANNOTATION`].

use super::listeners::GatewayPlan;
use crate::model::{AssignedPorts, ObjectKey};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Label on every per-Gateway Service ssegate manages (value: the
/// release's prefix), so that a list by label finds them all.
pub const MANAGED_LABEL: &str = "ssegate.dev/gateway-service";

/// Annotation naming the Gateway (`namespace/name`) a Service serves.
pub const GATEWAY_ANNOTATION: &str = "ssegate.dev/gateway";

/// What the chart says every per-Gateway Service looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTemplate {
    /// The release's namespace, where the Services live.
    pub namespace: String,
    /// Start of every Service's name (the release's full name); a DNS
    /// label starting with a letter.
    pub prefix: String,
    /// `spec.type`: `LoadBalancer`, `NodePort` or `ClusterIP`.
    pub type_: String,
    /// ssegate's pods' labels (the chart's selector labels).
    pub selector: BTreeMap<String, String>,
}

/// FNV-1a: a hash every replica and every version computes alike (std's
/// `DefaultHasher` promises neither).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The Service's name: `{prefix}-{namespace}-{name}` when that is a DNS
/// label of at most 63 characters, else cut and ended with a hash of the
/// Gateway's key, so that two Gateways never share a name.
pub fn service_name(prefix: &str, gateway: &ObjectKey) -> String {
    let full = format!("{prefix}-{}-{}", gateway.namespace, gateway.name);
    // Gateway names may hold dots; a Service name may not.
    let clean: String = full.chars().map(|c| if c == '.' { '-' } else { c }).collect();
    if clean.len() <= 63 && clean == full {
        return full;
    }
    let hash = format!("{:016x}", fnv1a(&gateway.to_string()));
    let keep = 63 - 1 - hash.len();
    let head = clean[..clean.len().min(keep)].trim_end_matches('-');
    format!("{head}-{hash}")
}

/// The Service for `plan`'s Gateway on `ports`: one Service port per
/// distinct listener port that can be served, `http-{port}` to the plain
/// port or `https-{port}` to the TLS one. `None` when no listener can be
/// served (no port to map).
pub fn desired_service(template: &ServiceTemplate, plan: &GatewayPlan, ports: AssignedPorts) -> Option<Service> {
    let mut by_port: BTreeMap<i32, ServicePort> = BTreeMap::new();
    for l in plan.listeners.iter().filter(|l| l.usable) {
        let target = if l.tls { ports.tls } else { Some(ports.plain) };
        let (Some(target), true) = (target, (1..=65535).contains(&l.port)) else {
            continue;
        };
        // Two listeners on one port share a protocol (else they conflict
        // and are not usable): the first names it.
        by_port.entry(l.port).or_insert_with(|| ServicePort {
            name: Some(format!("{}-{}", if l.tls { "https" } else { "http" }, l.port)),
            port: l.port,
            target_port: Some(IntOrString::Int(i32::from(target))),
            protocol: Some("TCP".into()),
            ..Default::default()
        });
    }
    if by_port.is_empty() {
        return None;
    }
    Some(Service {
        metadata: ObjectMeta {
            name: Some(service_name(&template.prefix, &plan.key)),
            namespace: Some(template.namespace.clone()),
            labels: Some(BTreeMap::from([(MANAGED_LABEL.to_owned(), template.prefix.clone())])),
            annotations: Some(BTreeMap::from([(GATEWAY_ANNOTATION.to_owned(), plan.key.to_string())])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(template.type_.clone()),
            selector: Some(template.selector.clone()),
            ports: Some(by_port.into_values().collect()),
            ..Default::default()
        }),
        status: None,
    })
}

/// Names of the managed Services in `existing` (listed by
/// [`MANAGED_LABEL`]) that no `wanted` Service has: their Gateway is gone,
/// no longer accepted, or got no ports.
pub fn stale_services(existing: &[Service], wanted: &[Service]) -> Vec<String> {
    let keep: Vec<&str> = wanted.iter().filter_map(|s| s.metadata.name.as_deref()).collect();
    existing
        .iter()
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(MANAGED_LABEL))
        })
        .filter_map(|s| s.metadata.name.clone())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::gateway::Gateway;
    use crate::model::SecretObject;

    fn plan(yaml_listeners: &str) -> GatewayPlan {
        let gateway: Gateway = serde_yaml::from_str(&format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: g2, namespace: infra}}
spec:
  gatewayClassName: sse
  listeners: {yaml_listeners}"
        ))
        .unwrap();
        let secrets: BTreeMap<ObjectKey, SecretObject> = BTreeMap::new();
        super::super::listeners::plan(&gateway, ObjectKey::new("infra", "g2"), &[], &secrets)
    }

    fn template() -> ServiceTemplate {
        ServiceTemplate {
            namespace: "ssegate-system".into(),
            prefix: "ssegate".into(),
            type_: "LoadBalancer".into(),
            selector: BTreeMap::from([("app.kubernetes.io/name".into(), "ssegate".into())]),
        }
    }

    #[test]
    fn each_listener_port_maps_to_the_gateways_own_plain_or_tls_port() {
        let p = plan(
            "[{name: http, port: 80, protocol: HTTP}, {name: alt, port: 8080, protocol: HTTP, hostname: a.example.com},
              {name: alt2, port: 8080, protocol: HTTP, hostname: b.example.com},
              {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: missing}]}},
              {name: tcp, port: 9000, protocol: TCP}]",
        );
        let svc = desired_service(
            &template(),
            &p,
            AssignedPorts {
                plain: 10002,
                tls: Some(10003),
            },
        )
        .unwrap();
        assert_eq!(svc.metadata.name.as_deref(), Some("ssegate-infra-g2"));
        assert_eq!(svc.metadata.namespace.as_deref(), Some("ssegate-system"));
        assert_eq!(svc.metadata.annotations.unwrap()[GATEWAY_ANNOTATION], "infra/g2");
        assert_eq!(svc.metadata.labels.unwrap()[MANAGED_LABEL], "ssegate");
        let spec = svc.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.selector.unwrap()["app.kubernetes.io/name"], "ssegate");
        let ports: Vec<(String, i32, IntOrString)> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port, p.target_port.unwrap()))
            .collect();
        assert_eq!(
            ports,
            [
                ("http-80".to_owned(), 80, IntOrString::Int(10002)),
                ("https-443".to_owned(), 443, IntOrString::Int(10003)),
                ("http-8080".to_owned(), 8080, IntOrString::Int(10002)),
            ],
            "one port per listener port, the TCP listener left out"
        );
    }

    #[test]
    fn no_servable_listener_gives_no_service_and_gone_gateways_services_are_stale() {
        let tcp_only = plan("[{name: tcp, port: 9000, protocol: TCP}]");
        let ports = AssignedPorts {
            plain: 10000,
            tls: None,
        };
        assert!(desired_service(&template(), &tcp_only, ports).is_none());

        let kept = desired_service(&template(), &plan("[{name: http, port: 80, protocol: HTTP}]"), ports).unwrap();
        let mut gone = kept.clone();
        gone.metadata.name = Some("ssegate-infra-gone".into());
        let mut foreign = kept.clone();
        foreign.metadata.name = Some("someone-elses".into());
        foreign.metadata.labels = None;
        assert_eq!(
            stale_services(&[kept.clone(), gone, foreign], std::slice::from_ref(&kept)),
            ["ssegate-infra-gone"]
        );
    }

    #[test]
    fn long_or_dotted_names_are_cut_to_a_dns_label_with_a_hash() {
        let long = ObjectKey::new("a-namespace-with-a-long-name", "and-a-gateway-with-an-even-longer-name");
        let n = service_name("ssegate", &long);
        assert_eq!(n.len(), 63, "{n}");
        assert!(n.starts_with("ssegate-a-namespace-with-a-long-name-"), "{n}");
        let other = ObjectKey::new(
            "a-namespace-with-a-long-name",
            "and-a-gateway-with-an-even-longer-name2",
        );
        assert_ne!(service_name("ssegate", &other), n, "the hash tells them apart");
        let dotted = service_name("ssegate", &ObjectKey::new("infra", "gw.v2"));
        assert!(
            dotted.starts_with("ssegate-infra-gw-v2-") && !dotted.contains('.'),
            "{dotted}"
        );
        assert_ne!(dotted, service_name("ssegate", &ObjectKey::new("infra", "gw-v2")));
        assert_eq!(n, service_name("ssegate", &long), "the same on every replica");
    }
}
