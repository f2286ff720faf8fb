//! Gateway API (GatewayClass, Gateway, HTTPRoute, ReferenceGrant) into the
//! route model (issue 15).
//!
//! Unlike a Route or an Ingress, an HTTPRoute means nothing alone: where
//! it serves depends on the Gateways it names, their listeners and which
//! namespaces those take, and ReferenceGrants elsewhere. So the whole set
//! is translated at once: the GatewayClasses naming ssegate's controller,
//! then their Gateways' listeners, then every HTTPRoute against them. The
//! outcome is one definition per attached HTTPRoute (and one per Gateway,
//! carrying its certificates), plus what the status of each object should
//! say. Pure: no I/O, no kube client.

pub mod external_auth;
pub mod grants;
pub mod http_route;
pub mod limits;
pub mod listeners;
pub mod policy;
pub mod service;
#[cfg(test)]
mod tests;

use crate::api::gateway::{Gateway, GatewayClass, HttpRoute, ReferenceGrant};
use crate::api::{StreamPolicy, ValidRoute};
use crate::model::report::Verdict;
use crate::model::{GatewayPorts, ObjectKey, PortClaim, PortRange, RouteDefinition, SecretObject, SourceKind};
use http_route::RoutePlan;
use listeners::{GatewayPlan, Listener};
use std::collections::{BTreeMap, BTreeSet};

pub use crate::api::gateway::GROUP;

/// The `controllerName` of ssegate's GatewayClasses.
pub const CONTROLLER: &str = "ssegate.dev/gateway-controller";

/// The Gateway API features ssegate implements, by the conformance suite's
/// names (gateway-api `pkg/features`), as its GatewayClasses'
/// `status.supportedFeatures` announce them: sorted, as the API asks.
/// Only what this translation and the proxy really do: core Gateway,
/// HTTPRoute and ReferenceGrant; method and query-parameter matches;
/// response header edits; redirects of scheme, host, port, path (full or
/// prefix) with any of the redirect status codes; URL rewrites of host and
/// path; the CORS filter; request and backend timeouts; rule names;
/// WebSocket upgrades to backends; routes whose `parentRef.port` names no
/// listener's port left unattached (destination port matching). Not request
/// mirrors (a route with one is refused), filters on a backendRef, or
/// regular expressions; nor `HTTPRouteParentRefPort`: `parentRef.port`
/// does narrow the listeners a route attaches to, but every HTTP listener
/// is served on the one plain port (and HTTPS on the one TLS port) whatever
/// port it names, so the suite's test of listeners on ports 80, 8080 and
/// 8090 cannot pass. Nor the ExternalAuth filter (experimental,
/// `HTTPRouteExternalAuth` in GEP-1494), which ssegate implements for
/// `protocol: HTTP`: the v1.6.3 suite has neither that feature name nor a
/// test of it, and nothing is claimed that the suite has not passed.
pub const SUPPORTED_FEATURES: &[&str] = &[
    "Gateway",
    "GatewayHTTPListenerIsolation",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendTimeout",
    "HTTPRouteCORS",
    "HTTPRouteDestinationPortMatching",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
];

/// Everything the translation reads.
pub struct GatewayInputs<'a> {
    pub classes: &'a [GatewayClass],
    pub gateways: &'a [Gateway],
    pub routes: &'a [HttpRoute],
    pub grants: &'a [ReferenceGrant],
    /// SSE settings attached to HTTPRoutes, their rules and Gateways.
    pub policies: &'a [StreamPolicy],
    /// Labels of each namespace, for `allowedRoutes` selectors.
    pub namespace_labels: &'a BTreeMap<String, BTreeMap<String, String>>,
    pub secrets: &'a BTreeMap<ObjectKey, SecretObject>,
    /// Namespace of objects that name none (files).
    pub default_namespace: &'a str,
    /// The ports Gateways' own listeners are given; `None`: every Gateway
    /// is served on the shared ports only.
    pub gateway_ports: Option<PortRange>,
    /// The plain port each Gateway's own Service targets today (see
    /// [`service::held_ports`]), so that it keeps its slot.
    pub held_ports: &'a BTreeMap<ObjectKey, u16>,
}

/// A GatewayClass of ssegate's.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassPlan {
    pub name: String,
    pub generation: Option<i64>,
    pub accepted: Verdict,
}

/// What the Gateway API objects amount to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GatewayOutcome {
    pub definitions: Vec<RouteDefinition>,
    pub classes: Vec<ClassPlan>,
    pub gateways: Vec<GatewayPlan>,
    /// Every HTTPRoute with at least one parent of ssegate's.
    pub routes: Vec<(ObjectKey, Option<i64>, RoutePlan)>,
    /// What each StreamPolicy's status should say, oldest policy first.
    pub policies: Vec<policy::PolicyVerdict>,
    /// Each accepted Gateway's own data-plane ports.
    pub ports: GatewayPorts,
}

fn key_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    default_namespace: &str,
) -> Option<ObjectKey> {
    let name = meta.name.clone().filter(|n| !n.is_empty())?;
    let namespace = meta.namespace.clone().unwrap_or_else(|| default_namespace.to_owned());
    Some(ObjectKey { namespace, name })
}

fn created(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> i64 {
    meta.creation_timestamp.as_ref().map_or(0, |t| t.0.as_millisecond())
}

/// Translates the whole set.
pub fn translate(inputs: &GatewayInputs<'_>) -> GatewayOutcome {
    let mut out = GatewayOutcome::default();
    let ours: Vec<&str> = inputs
        .classes
        .iter()
        .filter(|c| c.spec.controller_name == CONTROLLER)
        .filter_map(|c| c.metadata.name.as_deref())
        .collect();
    for class in inputs.classes.iter().filter(|c| c.spec.controller_name == CONTROLLER) {
        out.classes.push(ClassPlan {
            name: class.metadata.name.clone().unwrap_or_default(),
            generation: class.metadata.generation,
            accepted: Verdict::yes("Accepted", "ssegate serves Gateways of this class"),
        });
    }

    let mut listeners: BTreeMap<ObjectKey, Vec<Listener>> = BTreeMap::new();
    let mut claims = Vec::new();
    for gateway in inputs
        .gateways
        .iter()
        .filter(|g| ours.contains(&g.spec.gateway_class_name.as_str()))
    {
        let Some(key) = key_of(&gateway.metadata, inputs.default_namespace) else {
            continue;
        };
        let plan = listeners::plan(gateway, key.clone(), inputs.grants, inputs.secrets);
        listeners.insert(key.clone(), plan.listeners.clone());
        if !plan.tls.is_empty() {
            out.definitions.push(RouteDefinition {
                kind: SourceKind::Gateway,
                key: key.clone(),
                generation: plan.generation,
                created_millis: created(&gateway.metadata),
                translated: Ok(ValidRoute {
                    hostnames: Vec::new(),
                    rules: Vec::new(),
                    max_concurrent_streams: None,
                    cors: None,
                    tls: plan.tls.clone(),
                    strict_backends: true,
                }),
                warnings: Vec::new(),
            });
        }
        if plan.accepted.is_true() {
            claims.push(PortClaim {
                gateway: key.clone(),
                created_millis: created(&gateway.metadata),
                tls: plan.listeners.iter().any(|l| l.tls),
                held: inputs.held_ports.get(&key).copied(),
                listeners: plan
                    .listeners
                    .iter()
                    .filter(|l| l.usable && l.takes_http_routes)
                    .map(|l| crate::model::ListenerHost {
                        name: std::sync::Arc::from(l.name.as_str()),
                        tls: l.tls,
                        hostname: l.hostname.clone(),
                    })
                    .collect(),
            });
        }
        out.gateways.push(plan);
    }
    out.ports = GatewayPorts::assign(inputs.gateway_ports, &claims);

    let keyed: BTreeMap<ObjectKey, &HttpRoute> = inputs
        .routes
        .iter()
        .filter_map(|r| Some((key_of(&r.metadata, inputs.default_namespace)?, r)))
        .collect();
    let ours: BTreeSet<ObjectKey> = listeners.keys().cloned().collect();
    let attached = policy::attach(inputs.policies, &keyed, &ours, inputs.default_namespace);
    out.policies = attached.verdicts;
    let no_policy = policy::RouteSettings::default();

    for route in inputs.routes {
        let Some(key) = key_of(&route.metadata, inputs.default_namespace) else {
            continue;
        };
        let plan = http_route::plan(
            route,
            key.clone(),
            created(&route.metadata),
            &listeners,
            inputs.grants,
            inputs.namespace_labels,
            attached.routes.get(&key).unwrap_or(&no_policy),
        );
        if plan.parents.is_empty() {
            continue;
        }
        for (gateway, listener) in &plan.attached {
            if let Some(g) = out.gateways.iter_mut().find(|g| g.key == *gateway) {
                if let Some(v) = g.verdicts.iter_mut().find(|v| v.name == *listener) {
                    v.attached_routes += 1;
                }
            }
        }
        if let Some(definition) = &plan.definition {
            out.definitions.push(definition.clone());
        }
        out.routes.push((key, route.metadata.generation, plan));
    }
    out
}
