//! The Service that gives one Gateway an address of its own (step 4 of
//! `conformance/TRIAGE.md`'s way to one address per Gateway): in the
//! release's namespace, selecting ssegate's pods, mapping each of the
//! Gateway's listener ports to the Gateway's own data-plane port (plain or
//! TLS, see [`crate::model::GatewayPorts`]). Pure: the Lease holder's
//! writer (`status::gateway_services`) applies what [`desired_services`]
//! says where [`service_matches`] finds the live Service differs, and
//! deletes what [`stale_services`] names.
//!
//! A Service cannot be owned by a Gateway in another namespace (owner
//! references stay within a namespace), so the Services are found again by
//! [`MANAGED_LABEL`] and told apart by [`GATEWAY_ANNOTATION`].

use super::listeners::GatewayPlan;
use crate::model::{AssignedPorts, GatewayPorts, ObjectKey};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Label on every per-Gateway Service ssegate manages (value: the
/// release's prefix), so that a list by label finds them all.
pub const MANAGED_LABEL: &str = "ssegate.dev/gateway-service";

/// Annotation naming the Gateway (`namespace/name`) a Service serves.
pub const GATEWAY_ANNOTATION: &str = "ssegate.dev/gateway";

/// What the chart says every per-Gateway Service looks like.
#[derive(Debug, Clone, PartialEq)]
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
    /// The Service (in the same namespace; the chart's own) that owns
    /// every Gateway's Service, so that uninstalling the chart takes them
    /// with it (`--gateway-service-owner`).
    pub owner_service: Option<String>,
    /// Its owner reference, once looked up; `None` until then.
    pub owner: Option<OwnerReference>,
}

/// The Service types a Gateway's own Service may have.
pub const SERVICE_TYPES: [&str; 3] = ["LoadBalancer", "NodePort", "ClusterIP"];

impl ServiceTemplate {
    /// Reads the controller's flags: the namespace and name prefix (DNS
    /// labels), the type (one of [`SERVICE_TYPES`]) and the selector as
    /// `key=value,key=value` (label syntax; at least one pair, since a
    /// Service without a selector would send traffic nowhere).
    pub fn from_flags(namespace: &str, prefix: &str, type_: &str, selector: &str) -> Result<Self, String> {
        crate::api::valid_dns_label(namespace).map_err(|e| format!("namespace {namespace:?}: {e}"))?;
        crate::api::valid_dns_label(prefix).map_err(|e| format!("--gateway-service-prefix {prefix:?}: {e}"))?;
        if !SERVICE_TYPES.contains(&type_) {
            return Err(format!(
                "--gateway-service-type {type_:?}: expected one of {}",
                SERVICE_TYPES.join(", ")
            ));
        }
        let mut pairs = BTreeMap::new();
        for pair in selector.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = |why: &str| format!("--gateway-service-selector: {pair:?} {why}");
            let (key, value) = pair.split_once('=').ok_or_else(|| bad("is not key=value"))?;
            let (key, value) = (key.trim(), value.trim());
            let name = match key.split_once('/') {
                Some((dns, name)) => {
                    if dns.is_empty()
                        || dns.len() > 253
                        || dns.split('.').any(|l| crate::api::valid_dns_label(l).is_err())
                    {
                        return Err(bad("has a key prefix that is not a DNS subdomain"));
                    }
                    name
                }
                None => key,
            };
            if name.is_empty() || !label_text(name) {
                return Err(bad("has a key that is not a label name"));
            }
            if !value.is_empty() && !label_text(value) {
                return Err(bad("has a value that is not a label value"));
            }
            pairs.insert(key.to_owned(), value.to_owned());
        }
        if pairs.is_empty() {
            return Err("--gateway-service-selector is empty: name ssegate's pods' labels (key=value,...)".into());
        }
        Ok(ServiceTemplate {
            namespace: namespace.to_owned(),
            prefix: prefix.to_owned(),
            type_: type_.to_owned(),
            selector: pairs,
            owner_service: None,
            owner: None,
        })
    }

    /// Names the Service that owns every Gateway's Service (a DNS label).
    pub fn owned_by(mut self, service: Option<&str>) -> Result<Self, String> {
        if let Some(name) = service {
            crate::api::valid_dns_label(name).map_err(|e| format!("--gateway-service-owner {name:?}: {e}"))?;
        }
        self.owner_service = service.map(str::to_owned);
        Ok(self)
    }
}

/// A label name or value: at most 63 of `[A-Za-z0-9._-]`, starting and
/// ending with a letter or digit.
fn label_text(text: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    text.len() <= 63
        && edge(text.chars().next())
        && edge(text.chars().last())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
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
    let service_ports = service_ports(plan, ports);
    if service_ports.is_empty() {
        return None;
    }
    Some(Service {
        metadata: ObjectMeta {
            name: Some(service_name(&template.prefix, &plan.key)),
            namespace: Some(template.namespace.clone()),
            labels: Some(BTreeMap::from([(MANAGED_LABEL.to_owned(), template.prefix.clone())])),
            annotations: Some(BTreeMap::from([(GATEWAY_ANNOTATION.to_owned(), plan.key.to_string())])),
            owner_references: template.owner.clone().map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(template.type_.clone()),
            selector: Some(template.selector.clone()),
            ports: Some(service_ports),
            ..Default::default()
        }),
        status: None,
    })
}

/// The Service ports of `plan`'s Gateway on `ports`, in port order: empty
/// when no listener can be served, and then the Gateway has no Service.
pub fn service_ports(plan: &GatewayPlan, ports: AssignedPorts) -> Vec<ServicePort> {
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
    by_port.into_values().collect()
}

/// The Services of every Gateway in `gateways` that is accepted and got
/// ports, in the Gateways' order.
pub fn desired_services(template: &ServiceTemplate, gateways: &[GatewayPlan], ports: &GatewayPorts) -> Vec<Service> {
    gateways
        .iter()
        .filter(|g| g.accepted.is_true())
        .filter_map(|g| desired_service(template, g, ports.get(&g.key)?))
        .collect()
}

/// The Gateway a managed Service serves (its [`GATEWAY_ANNOTATION`]).
pub fn served_gateway(service: &Service) -> Option<ObjectKey> {
    let text = service.metadata.annotations.as_ref()?.get(GATEWAY_ANNOTATION)?;
    let (namespace, name) = text.split_once('/')?;
    (!namespace.is_empty() && !name.is_empty()).then(|| ObjectKey::new(namespace, name))
}

/// The plain port each Gateway's own Service (among `services`, the
/// managed ones) targets today: its first `http-` port's target, else its
/// first `https-` port's target less one (a slot is plain, then TLS). What
/// the Service says is the Gateway's slot until the Lease holder rewrites
/// it, so every replica keeps each Gateway where it is.
pub fn held_ports<'s>(services: impl IntoIterator<Item = &'s Service>) -> BTreeMap<ObjectKey, u16> {
    let mut held = BTreeMap::new();
    for svc in services {
        let Some(gateway) = served_gateway(svc) else { continue };
        let ports = svc.spec.iter().flat_map(|s| s.ports.iter().flatten());
        let target = |prefix: &str| {
            ports.clone().find_map(|p| match (&p.name, &p.target_port) {
                (Some(n), Some(IntOrString::Int(t))) if n.starts_with(prefix) => u16::try_from(*t).ok(),
                _ => None,
            })
        };
        let plain = target("http-").or_else(|| target("https-").and_then(|t| t.checked_sub(1)));
        if let Some(port) = plain {
            held.insert(gateway, port);
        }
    }
    held
}

/// Whether `live` already says what `want` says, in the fields ssegate
/// sets: type, selector, each port's name, number, target and protocol,
/// the label and the annotation. What the apiserver adds (cluster IPs,
/// node ports, defaults) and what others add (their labels) is not
/// looked at, so a write happens only when ssegate has something to say.
pub fn service_matches(want: &Service, live: &Service) -> bool {
    let ports = |s: &Service| -> Vec<(Option<String>, i32, Option<IntOrString>, String)> {
        let mut list: Vec<_> = s
            .spec
            .iter()
            .flat_map(|spec| spec.ports.iter().flatten())
            .map(|p| {
                let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                (p.name.clone(), p.port, p.target_port.clone(), protocol)
            })
            .collect();
        list.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        list
    };
    let field = |s: &Service| {
        let spec = s.spec.clone().unwrap_or_default();
        (
            spec.type_.unwrap_or_else(|| "ClusterIP".into()),
            spec.selector.unwrap_or_default(),
        )
    };
    let contains = |want: &Option<BTreeMap<String, String>>, live: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| live.as_ref().and_then(|l| l.get(k)) == Some(v))
    };
    let owned = want
        .metadata
        .owner_references
        .iter()
        .flatten()
        .all(|o| live.metadata.owner_references.iter().flatten().any(|l| l.uid == o.uid));
    field(want) == field(live)
        && owned
        && ports(want) == ports(live)
        && contains(&want.metadata.labels, &live.metadata.labels)
        && contains(&want.metadata.annotations, &live.metadata.annotations)
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
            owner_service: None,
            owner: None,
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
    fn a_live_service_matches_when_the_fields_ssegate_sets_agree() {
        let p = plan("[{name: http, port: 80, protocol: HTTP}]");
        let ports = AssignedPorts {
            plain: 10000,
            tls: None,
        };
        let want = desired_service(&template(), &p, ports).unwrap();
        assert_eq!(served_gateway(&want), Some(ObjectKey::new("infra", "g2")));

        // What the apiserver and others add does not count.
        let mut live = want.clone();
        let spec = live.spec.as_mut().unwrap();
        spec.cluster_ip = Some("10.96.0.20".into());
        spec.ports.as_mut().unwrap()[0].node_port = Some(31000);
        live.metadata.labels.as_mut().unwrap().insert("team".into(), "a".into());
        assert!(service_matches(&want, &live));

        // A changed target port, type, selector or a lost label does.
        let mut moved = live.clone();
        moved.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].target_port = Some(IntOrString::Int(10002));
        assert!(!service_matches(&want, &moved));
        let mut retyped = live.clone();
        retyped.spec.as_mut().unwrap().type_ = Some("NodePort".into());
        assert!(!service_matches(&want, &retyped));
        let mut reselected = live.clone();
        reselected.spec.as_mut().unwrap().selector = Some(BTreeMap::new());
        assert!(!service_matches(&want, &reselected));
        let mut unlabelled = live.clone();
        unlabelled.metadata.labels = None;
        assert!(!service_matches(&want, &unlabelled));

        // Once the owner is known, a Service without it is written again.
        let mut owned = template();
        owned.owner = Some(OwnerReference {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: "ssegate".into(),
            uid: "u-1".into(),
            ..Default::default()
        });
        let want_owned = desired_service(&owned, &p, ports).unwrap();
        assert!(!service_matches(&want_owned, &live));
        assert!(service_matches(&want_owned, &want_owned));
    }

    #[test]
    fn the_port_a_gateways_service_holds_is_read_back_from_it() {
        let both = plan(
            "[{name: http, port: 80, protocol: HTTP},
              {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: c}]}}]",
        );
        let mut tls_only = plan("[{name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: c}]}}]");
        tls_only.key = ObjectKey::new("infra", "tls-only");
        let service = |p: &GatewayPlan, plain: u16| {
            let ports = AssignedPorts {
                plain,
                tls: Some(plain + 1),
            };
            desired_service(&template(), p, ports).unwrap()
        };
        let mut foreign = service(&both, 10010);
        foreign.metadata.annotations = None;
        let held = held_ports(&[service(&both, 10004), service(&tls_only, 10008), foreign]);
        assert_eq!(
            held,
            BTreeMap::from([
                (ObjectKey::new("infra", "g2"), 10004),
                (ObjectKey::new("infra", "tls-only"), 10008),
            ]),
            "the plain port, or the TLS port less one; a Service naming no Gateway holds nothing"
        );
    }

    #[test]
    fn only_accepted_gateways_with_ports_get_a_service() {
        use crate::model::{GatewayPorts, PortClaim, PortRange};
        let mut refused = plan("[{name: http, port: 80, protocol: HTTP}]");
        refused.key = ObjectKey::new("infra", "refused");
        refused.accepted = crate::model::Verdict::no("Invalid", "refused");
        let mut late = plan("[{name: http, port: 80, protocol: HTTP}]");
        late.key = ObjectKey::new("infra", "late");
        let first = plan("[{name: http, port: 80, protocol: HTTP}]");
        let claim = |key: &ObjectKey, at| PortClaim {
            gateway: key.clone(),
            created_millis: at,
            tls: false,
            held: None,
            listeners: Vec::new(),
        };
        // Room for one Gateway: the older one takes it.
        let ports = GatewayPorts::assign(
            Some(PortRange::new(10000, 10001).unwrap()),
            &[claim(&late.key, 2), claim(&first.key, 1)],
        );
        let services = desired_services(&template(), &[refused, late, first], &ports);
        let names: Vec<_> = services.iter().filter_map(|s| s.metadata.name.as_deref()).collect();
        assert_eq!(names, ["ssegate-infra-g2"]);
        assert_eq!(
            served_gateway(&services[0]),
            Some(ObjectKey::new("infra", "g2")),
            "the Service names its Gateway"
        );
    }

    #[test]
    fn the_template_comes_from_flags_checked_like_the_apiserver_would() {
        let t = ServiceTemplate::from_flags(
            "ssegate-system",
            "ssegate",
            "NodePort",
            "app.kubernetes.io/name=ssegate, app.kubernetes.io/instance=r1",
        )
        .unwrap();
        assert_eq!(t.type_, "NodePort");
        assert_eq!(
            t.selector,
            BTreeMap::from([
                ("app.kubernetes.io/instance".to_owned(), "r1".to_owned()),
                ("app.kubernetes.io/name".to_owned(), "ssegate".to_owned()),
            ])
        );
        for (prefix, type_, selector, says) in [
            ("ssegate", "LoadBalancer", "", "is empty"),
            ("ssegate", "LoadBalancer", "app", "is not key=value"),
            ("ssegate", "LoadBalancer", "a b=c", "not a label name"),
            ("ssegate", "LoadBalancer", "-x.io/a=b", "not a DNS subdomain"),
            ("ssegate", "LoadBalancer", "app=-bad", "not a label value"),
            ("ssegate", "External", "app=x", "expected one of"),
            ("Sse_gate", "LoadBalancer", "app=x", "--gateway-service-prefix"),
        ] {
            let e = ServiceTemplate::from_flags("ns", prefix, type_, selector).unwrap_err();
            assert!(e.contains(says), "{selector:?}: {e}");
        }
        let owned = t.clone().owned_by(Some("r1-ssegate")).unwrap();
        assert_eq!(owned.owner_service.as_deref(), Some("r1-ssegate"));
        for bad in ["", "R1", "r1/ssegate", "-r1"] {
            let e = t.clone().owned_by(Some(bad)).unwrap_err();
            assert!(e.contains("--gateway-service-owner"), "{bad:?}: {e}");
        }
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
