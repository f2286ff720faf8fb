//! What the status of the Gateway API objects ssegate serves should be,
//! computed purely from the translation's plans and the table build's
//! verdicts: GatewayClass (Accepted, SupportedVersion, features), Gateway
//! (conditions, addresses, listeners), an HTTPRoute's parents entries and
//! how they merge with other controllers' entries; and when a wanted status
//! and a live one are the same. `gateway.rs` writes them.

use super::addresses::Address;
use crate::api::gateway::gateway::{
    GatewayStatusAddresses, GatewayStatusListeners, GatewayStatusListenersSupportedKinds,
};
use crate::api::gateway::gateway_class::GatewayClassStatusSupportedFeatures;
use crate::api::gateway::http_route::{HttpRouteParentRefs, HttpRouteStatusParents, HttpRouteStatusParentsParentRef};
use crate::api::gateway::{GatewayClassStatus, GatewayStatus, BUNDLE_VERSION};
use crate::model::report::reason;
use crate::model::{GatewayPorts, ObjectKey, RouteReport, Verdict};
use crate::translate::gateway::http_route::RoutePlan;
use crate::translate::gateway::listeners::GatewayPlan;
use crate::translate::gateway::service::service_ports;
use crate::translate::gateway::{ClassPlan, CONTROLLER, GROUP, SUPPORTED_FEATURES};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde::Serialize;
use std::collections::BTreeMap;

/// The condition type (and reason) saying which Gateway API version the
/// GatewayClass's controller supports.
pub const SUPPORTED_VERSION: &str = "SupportedVersion";
/// Longest condition message the API takes.
const MAX_MESSAGE: usize = 32768;

/// A condition from a verdict. Its transition time is set by [`stamp`].
pub fn condition(type_: &str, verdict: &Verdict, generation: Option<i64>) -> Condition {
    let mut message = verdict.message.clone();
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    Condition {
        type_: type_.to_owned(),
        status: verdict.status.as_str().to_owned(),
        reason: verdict.reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
    }
}

/// Keeps `lastTransitionTime` from the live condition of the same type when
/// its status did not change, and sets `now` otherwise.
pub fn stamp(desired: &mut [Condition], live: &[Condition], now: jiff::Timestamp) {
    for c in desired {
        c.last_transition_time = live
            .iter()
            .find(|l| l.type_ == c.type_ && l.status == c.status)
            .map(|l| l.last_transition_time.clone())
            .unwrap_or(Time(now));
    }
}

/// Whether two statuses say the same, transition times aside and whatever
/// the order of conditions.
pub fn same_status<T: Serialize>(a: &T, b: &T) -> bool {
    normalized(a) == normalized(b)
}

pub(super) fn normalized<T: Serialize>(v: &T) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("lastTransitionTime");
                if let Some(serde_json::Value::Array(list)) = map.get_mut("conditions") {
                    list.sort_by(|x, y| x["type"].as_str().cmp(&y["type"].as_str()));
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(list) => list.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(v).unwrap_or_default();
    walk(&mut v);
    v
}

/// A merge patch of `status` that makes it exactly `want`: a merge patch
/// replaces lists whole, and a field of `live` that `want` does not set is
/// removed (null).
pub fn replacing<T: Serialize>(want: &T, live: &T) -> serde_json::Value {
    let mut patch = serde_json::to_value(want).unwrap_or_default();
    if let (Some(fields), Ok(serde_json::Value::Object(before))) = (patch.as_object_mut(), serde_json::to_value(live)) {
        for key in before.keys() {
            fields.entry(key.clone()).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": patch })
}

/// The status of one of ssegate's GatewayClasses.
pub fn class_status(plan: &ClassPlan) -> GatewayClassStatus {
    let version = Verdict::yes(
        SUPPORTED_VERSION,
        format!("ssegate supports Gateway API {BUNDLE_VERSION}"),
    );
    GatewayClassStatus {
        conditions: Some(vec![
            condition("Accepted", &plan.accepted, plan.generation),
            condition(SUPPORTED_VERSION, &version, plan.generation),
        ]),
        supported_features: Some(
            SUPPORTED_FEATURES
                .iter()
                .map(|f| GatewayClassStatusSupportedFeatures { name: (*f).to_owned() })
                .collect(),
        ),
    }
}

/// One entry of a Gateway's `status.addresses`.
fn gateway_address(a: &Address) -> GatewayStatusAddresses {
    let (kind, value) = match a {
        Address::Ip(ip) => ("IPAddress", ip),
        Address::Hostname(h) => ("Hostname", h),
    };
    GatewayStatusAddresses {
        r#type: Some(kind.to_owned()),
        value: value.clone(),
    }
}

/// The status of one of ssegate's Gateways. `addresses` are the ones
/// ssegate publishes; `None` (no flag, or the Service not known yet) keeps
/// `live_addresses`: nothing is taken back on a guess.
pub fn gateway_status(
    plan: &GatewayPlan,
    addresses: Option<&[Address]>,
    live_addresses: Option<Vec<GatewayStatusAddresses>>,
) -> GatewayStatus {
    let generation = plan.generation;
    let listeners = plan
        .verdicts
        .iter()
        .map(|v| {
            // A listener of a protocol ssegate does not serve takes no kind.
            let kinds: Vec<GatewayStatusListenersSupportedKinds> = if v.accepted.reason == "UnsupportedProtocol" {
                Vec::new()
            } else {
                v.supported_kinds
                    .iter()
                    .map(|k| GatewayStatusListenersSupportedKinds {
                        group: Some(GROUP.to_owned()),
                        kind: k.clone(),
                    })
                    .collect()
            };
            GatewayStatusListeners {
                name: v.name.clone(),
                attached_routes: v.attached_routes,
                supported_kinds: (!kinds.is_empty()).then_some(kinds),
                conditions: vec![
                    condition("Accepted", &v.accepted, generation),
                    condition("Programmed", &v.programmed, generation),
                    condition("ResolvedRefs", &v.resolved_refs, generation),
                    condition("Conflicted", &v.conflicted, generation),
                ],
            }
        })
        .collect();
    let addresses = match addresses {
        Some(list) if !list.is_empty() => Some(list.iter().map(gateway_address).collect()),
        Some(_) => None,
        None => live_addresses,
    };
    GatewayStatus {
        addresses,
        attached_listener_sets: None,
        conditions: Some(vec![
            condition("Accepted", &plan.accepted, generation),
            condition("Programmed", &plan.programmed, generation),
        ]),
        listeners: Some(listeners),
    }
}

/// A Gateway's own address, when Gateways get Services of their own
/// (`--gateway-ports` with `--gateway-service-selector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnAddress {
    /// Its Service's addresses.
    Ready(Vec<Address>),
    /// Its Service is not written yet, or its load balancer is pending.
    Pending,
    /// The port range has no slot left for it: it is served on the shared
    /// address only, where requests match every Gateway's routes.
    NoPorts,
}

/// Reason of `Programmed=False` while a Gateway's address is pending.
pub const ADDRESS_NOT_ASSIGNED: &str = "AddressNotAssigned";
/// Reason of `Programmed=False` for a Gateway the port range has no room for.
pub const NO_RESOURCES: &str = "NoResources";

/// Where `plan`'s Gateway is reached when Gateways get Services of their
/// own: `services` are the Gateways' own Services' addresses. `None` when
/// it has no Service and needs none (no listener ssegate serves, or not
/// accepted): the shared address applies.
pub fn own_address(
    plan: &GatewayPlan,
    ports: &GatewayPorts,
    services: &BTreeMap<ObjectKey, Vec<Address>>,
) -> Option<OwnAddress> {
    if !plan.accepted.is_true() {
        return None;
    }
    let Some(assigned) = ports.get(&plan.key) else {
        return ports
            .unassigned()
            .any(|k| *k == plan.key)
            .then_some(OwnAddress::NoPorts);
    };
    if service_ports(plan, assigned).is_empty() {
        return None;
    }
    match services.get(&plan.key) {
        Some(list) if !list.is_empty() => Some(OwnAddress::Ready(list.clone())),
        _ => Some(OwnAddress::Pending),
    }
}

/// Puts a Gateway's own address into its status: its Service's addresses,
/// or none and `Programmed=False` while they are pending, or
/// `Programmed=False, NoResources` (shared addresses kept) when it got no
/// ports. A Programmed that is already false says why first and is kept.
pub fn apply_own_address(status: &mut GatewayStatus, own: &OwnAddress) {
    let why = match own {
        OwnAddress::Ready(list) => {
            status.addresses = Some(list.iter().map(gateway_address).collect());
            return;
        }
        OwnAddress::Pending => {
            status.addresses = None;
            (
                ADDRESS_NOT_ASSIGNED,
                "waiting for the address of the Gateway's own Service (being written, or its load balancer pending)",
            )
        }
        OwnAddress::NoPorts => (
            NO_RESOURCES,
            "--gateway-ports has no ports left for this Gateway (older Gateways took them): it is served on the shared address only, where requests match every Gateway's routes",
        ),
    };
    if let Some(programmed) = status
        .conditions
        .iter_mut()
        .flatten()
        .find(|c| c.type_ == "Programmed" && c.status == "True")
    {
        programmed.status = "False".into();
        programmed.reason = why.0.into();
        programmed.message = why.1.into();
    }
}

/// Whether an HTTPRoute's references resolve, for every parent of
/// ssegate's: what the translation refused, else the table build's verdict
/// (`None`: the route is attached nowhere, so never built; only the
/// translation's checks apply).
pub fn route_resolved_refs(plan: &RoutePlan, report: Option<&RouteReport>) -> Verdict {
    if let Some(refused) = &plan.refused_refs {
        return refused.clone();
    }
    let Some(report) = report else {
        return Verdict::yes(
            reason::RESOLVED_REFS,
            "no reference is refused (backends are looked up once the route is attached)",
        );
    };
    let v = &report.resolved_refs;
    if v.is_true() {
        return v.clone();
    }
    match v.reason {
        reason::NO_READY_ENDPOINTS => Verdict::yes(
            reason::RESOLVED_REFS,
            format!("references resolved; {} (answered with 503)", v.message),
        ),
        reason::BACKEND_NOT_FOUND | reason::REF_NOT_PERMITTED => v.clone(),
        _ => Verdict::no(reason::BACKEND_NOT_FOUND, v.message.clone()),
    }
}

fn status_ref(p: &HttpRouteParentRefs) -> HttpRouteStatusParentsParentRef {
    HttpRouteStatusParentsParentRef {
        group: p.group.clone(),
        kind: p.kind.clone(),
        name: p.name.clone(),
        namespace: p.namespace.clone(),
        port: p.port,
        section_name: p.section_name.clone(),
    }
}

/// Whether two parentRefs of a route in `namespace` name the same parent
/// (the API defaults group, kind and namespace).
pub fn same_parent(a: &HttpRouteStatusParentsParentRef, b: &HttpRouteStatusParentsParentRef, namespace: &str) -> bool {
    let norm = |r: &HttpRouteStatusParentsParentRef| {
        (
            r.group.clone().unwrap_or_else(|| GROUP.to_owned()),
            r.kind.clone().unwrap_or_else(|| "Gateway".to_owned()),
            r.namespace.clone().unwrap_or_else(|| namespace.to_owned()),
            r.name.clone(),
            r.port,
            r.section_name.clone(),
        )
    };
    norm(a) == norm(b)
}

/// ssegate's entries of an HTTPRoute's `status.parents`: one per parent of
/// ssegate's, with the translation's Accepted and the route's ResolvedRefs.
pub fn our_parents(plan: &RoutePlan, generation: Option<i64>, resolved_refs: &Verdict) -> Vec<HttpRouteStatusParents> {
    plan.parents
        .iter()
        .map(|p| HttpRouteStatusParents {
            controller_name: CONTROLLER.to_owned(),
            parent_ref: status_ref(&p.parent),
            conditions: vec![
                condition("Accepted", &p.accepted, generation),
                condition("ResolvedRefs", resolved_refs, generation),
            ],
        })
        .collect()
}

/// The route's new `status.parents`: every other controller's entry as it
/// is and where it is; ssegate's replaced in place (keeping transition
/// times of conditions that did not change), dropped when the parent is no
/// longer ssegate's, and appended when new.
pub fn merge_parents(
    live: &[HttpRouteStatusParents],
    ours: Vec<HttpRouteStatusParents>,
    namespace: &str,
    now: jiff::Timestamp,
) -> Vec<HttpRouteStatusParents> {
    let mut pending: Vec<Option<HttpRouteStatusParents>> = ours.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(live.len() + pending.len());
    for entry in live {
        if entry.controller_name != CONTROLLER {
            out.push(entry.clone());
            continue;
        }
        let slot = pending.iter_mut().find(|p| {
            p.as_ref()
                .is_some_and(|p| same_parent(&p.parent_ref, &entry.parent_ref, namespace))
        });
        if let Some(mut mine) = slot.and_then(Option::take) {
            stamp(&mut mine.conditions, &entry.conditions, now);
            // Keep the parentRef as the API spelled it (defaults filled in).
            mine.parent_ref = entry.parent_ref.clone();
            out.push(mine);
        }
    }
    for mut mine in pending.into_iter().flatten() {
        stamp(&mut mine.conditions, &[], now);
        out.push(mine);
    }
    out
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
