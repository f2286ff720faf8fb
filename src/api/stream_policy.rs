//! The `StreamPolicy` custom resource (`ssegate.dev/v1alpha1`): SSE settings
//! for Gateway API objects, by direct policy attachment (GEP-713).
//!
//! Gateway API has no idle timeout, heartbeat, buffering switch or stream
//! limit, and an HTTPRoute has no room for them. A StreamPolicy carries
//! exactly the Route's settings, with the Route's field names and formats,
//! and names the HTTPRoutes (optionally one rule, by its `name`) or
//! Gateways it applies to in its own namespace. Every setting is optional:
//! a policy sets only what it names, and more specific policies override
//! single fields of less specific ones (see
//! [`crate::translate::gateway::policy`] for the precedence).

use super::{
    FieldError, GivenSettings, LoadBalancing, ProxyBuffering, Quantity, SseSettings, StreamSettings, Timeouts,
};
use kube::CustomResource;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Group of the kinds a policy may target.
pub const TARGET_GROUP: &str = "gateway.networking.k8s.io";
/// Most targets in one policy, and most ancestors in its status (as
/// Gateway API's own policies).
pub const MAX_TARGETS: usize = 16;
const MAX_STREAMS: i64 = 10_000_000;

/// SSE settings for HTTPRoutes and Gateways, attached by `targetRefs`.
// clippy reads the repeated `type_` keys of `printcolumn(...)` as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ssegate.dev",
    version = "v1alpha1",
    kind = "StreamPolicy",
    namespaced,
    status = "StreamPolicyStatus",
    shortname = "ssep",
    category = "ssegate",
    doc = "StreamPolicy sets SSE settings (buffering, timeouts, heartbeats, stream resume, stream limits, load balancing) on Gateway API HTTPRoutes, single HTTPRoute rules, or Gateways in its namespace.",
    printcolumn(name = "Targets", type_ = "string", json_path = ".spec.targetRefs[*].name"),
    printcolumn(name = "Buffering", type_ = "string", json_path = ".spec.proxyBuffering"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.ancestors[*].conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = spec_rules()))]
pub struct StreamPolicySpec {
    /// The objects this policy applies to, in the policy's namespace:
    /// HTTPRoutes (with `sectionName`, the rule of that `name` only) and
    /// Gateways (whole Gateways: a listener `sectionName` is not supported).
    #[schemars(schema_with = "target_refs")]
    pub target_refs: Vec<PolicyTargetRef>,
    /// Buffering of upstream response bodies: `Enabled` (coalesce up to
    /// `bufferSize`), `Disabled` (forward every frame at once) or `Auto`
    /// (stream `text/event-stream`, buffer the rest). Never On/Off, which
    /// YAML reads as booleans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "proxy_buffering")]
    pub proxy_buffering: Option<ProxyBuffering>,
    /// How much the proxy coalesces in buffered mode (a quantity such as `64Ki`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::buffer_size")]
    pub buffer_size: Option<Quantity>,
    /// Timeouts; a more specific policy may override single fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Settings for `text/event-stream` responses; a more specific policy
    /// may override single fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse: Option<SseSettings>,
    /// Most event streams each targeted HTTPRoute (or each HTTPRoute
    /// attached through a targeted Gateway) keeps open at once, per ssegate
    /// replica. Not for rule targets (`sectionName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::max_streams")]
    pub max_concurrent_streams: Option<i64>,
    /// How requests are spread over endpoints: `RoundRobin` or
    /// `LeastConnections`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "load_balancing")]
    pub load_balancing: Option<LoadBalancing>,
    /// Who may reach the targets: source ranges, basic and external
    /// authentication, per-client limits, as a Route's `spec.access` (its
    /// Secrets in this policy's namespace; limits counted per policy).
    /// Unlike the settings above, access adds up: every StreamPolicy that
    /// targets a route, its rule or its Gateway applies its `access`,
    /// whether or not its other settings win, so no policy can lift a
    /// restriction another sets. A problem closes the targets (503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<super::AccessSpec>,
}

/// An object in the policy's namespace (GEP-713's
/// LocalPolicyTargetReferenceWithSectionName: there is no namespace field).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetRef {
    /// `gateway.networking.k8s.io`.
    #[schemars(schema_with = "target_group")]
    pub group: String,
    /// `HTTPRoute` or `Gateway`.
    #[schemars(schema_with = "target_kind")]
    pub kind: String,
    /// Name of the object.
    #[schemars(schema_with = "target_name")]
    pub name: String,
    /// For an HTTPRoute, the `name` of one of its rules: the policy then
    /// applies to that rule only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "section_name")]
    pub section_name: Option<String>,
}

/// Observed state of a StreamPolicy, as GEP-713 describes it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamPolicyStatus {
    /// One entry per Gateway the policy takes effect through (or, when
    /// there is none, per target), per controller.
    #[serde(default)]
    #[schemars(schema_with = "ancestors")]
    pub ancestors: Vec<PolicyAncestorStatus>,
}

/// The policy's status with respect to one ancestor.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    pub ancestor_ref: PolicyAncestorRef,
    /// `ssegate.dev/gateway-controller` for ssegate's entries.
    pub controller_name: String,
    /// `Accepted`, with reason `Accepted`, `TargetNotFound`, `Conflicted`
    /// or `Invalid`.
    #[serde(default)]
    pub conditions: Vec<super::Condition>,
}

/// Gateway API's ParentReference: the Gateway (or target) an ancestor
/// entry is about.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// What a target names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TargetKind {
    HttpRoute,
    Gateway,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::HttpRoute => "HTTPRoute",
            TargetKind::Gateway => "Gateway",
        }
    }
}

/// A checked target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyTarget {
    pub kind: TargetKind,
    pub name: String,
    /// An HTTPRoute rule's `name`.
    pub section_name: Option<String>,
}

/// A checked policy: its targets and the one setting that is not a
/// [`StreamSettings`] field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPolicy {
    pub targets: Vec<PolicyTarget>,
    pub max_concurrent_streams: Option<usize>,
}

impl StreamPolicySpec {
    /// The settings this policy names, for the merge every layer shares.
    pub(crate) fn given(&self) -> GivenSettings<'_> {
        GivenSettings {
            buffering: self.proxy_buffering,
            buffer_size: self.buffer_size.as_ref(),
            timeouts: self.timeouts.as_ref(),
            sse: self.sse.as_ref(),
            load_balancing: self.load_balancing,
        }
    }

    /// Checks what the CRD's schema checks (again, for standalone files)
    /// and what it cannot. Returns every problem, by field path.
    pub fn validate(&self) -> Result<ValidPolicy, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut error = |field: String, message: String| errors.push(FieldError { field, message });
        if self.target_refs.is_empty() {
            error("spec.targetRefs".into(), "at least one targetRef is required".into());
        }
        if self.target_refs.len() > MAX_TARGETS {
            error(
                "spec.targetRefs".into(),
                format!("at most {MAX_TARGETS} targetRefs are allowed"),
            );
        }
        let mut targets: Vec<PolicyTarget> = Vec::new();
        for (i, t) in self.target_refs.iter().enumerate() {
            let field = format!("spec.targetRefs[{i}]");
            let kind = match (t.group.as_str(), t.kind.as_str()) {
                (TARGET_GROUP, "HTTPRoute") => TargetKind::HttpRoute,
                (TARGET_GROUP, "Gateway") => TargetKind::Gateway,
                _ => {
                    error(field, TARGET_KIND.into());
                    continue;
                }
            };
            if t.name.is_empty() {
                error(format!("{field}.name"), "name is required".into());
                continue;
            }
            if kind == TargetKind::Gateway && t.section_name.is_some() {
                error(format!("{field}.sectionName"), GATEWAY_SECTION.into());
                continue;
            }
            if t.section_name.as_deref() == Some("") {
                error(format!("{field}.sectionName"), "must not be empty".into());
                continue;
            }
            let target = PolicyTarget {
                kind,
                name: t.name.clone(),
                section_name: t.section_name.clone(),
            };
            if targets.contains(&target) {
                error(field, UNIQUE_TARGETS.into());
                continue;
            }
            targets.push(target);
        }
        let (_, problems) = self.given().layered(StreamSettings::DEFAULT, "spec");
        errors.extend(problems);
        let max_concurrent_streams = match self.max_concurrent_streams {
            None => None,
            Some(n) if (1..=MAX_STREAMS).contains(&n) => {
                if self.target_refs.iter().any(|t| t.section_name.is_some()) {
                    errors.push(FieldError {
                        field: "spec.maxConcurrentStreams".into(),
                        message: RULE_STREAMS.into(),
                    });
                }
                Some(n as usize)
            }
            Some(_) => {
                errors.push(FieldError {
                    field: "spec.maxConcurrentStreams".into(),
                    message: format!("must be between 1 and {MAX_STREAMS}"),
                });
                None
            }
        };
        if errors.is_empty() {
            Ok(ValidPolicy {
                targets,
                max_concurrent_streams,
            })
        } else {
            Err(errors)
        }
    }
}

// Messages shared word for word by the CEL rules and `validate`, so
// kubectl and standalone mode refuse a policy alike.
const TARGET_KIND: &str = "targetRefs may name only an HTTPRoute or a Gateway of group gateway.networking.k8s.io";
const GATEWAY_SECTION: &str = "sectionName (a listener) is not supported on a Gateway target: target the whole Gateway";
const UNIQUE_TARGETS: &str = "each target may be listed once";
const RULE_STREAMS: &str =
    "maxConcurrentStreams limits whole HTTPRoutes: it cannot be set on a policy whose targetRefs name a rule (sectionName)";

fn rule(rule: &str, message: &str) -> Value {
    json!({"rule": rule, "message": message})
}

const SECTION_NAME: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

// Rebalancing needs resume in the same policy: a policy is validated on
// its own, before it is known what it is laid over.
fn spec_rules() -> Value {
    json!([
        rule(
            "!has(self.maxConcurrentStreams) || self.targetRefs.all(t, !has(t.sectionName))",
            RULE_STREAMS
        ),
        super::schema::rebalance_needs_resume()
    ])
}

// The enums' schemas used directly: through `Option`, the derived schema
// would carry the enum type's description (which speaks of Routes) instead
// of the field's.
fn proxy_buffering(g: &mut SchemaGenerator) -> Schema {
    ProxyBuffering::json_schema(g)
}

fn load_balancing(g: &mut SchemaGenerator) -> Schema {
    LoadBalancing::json_schema(g)
}

fn target_refs(g: &mut SchemaGenerator) -> Schema {
    let mut item = <PolicyTargetRef as JsonSchema>::json_schema(g);
    item.insert(
        "x-kubernetes-validations".into(),
        json!([
            rule(
                &format!("self.group == '{TARGET_GROUP}' && (self.kind == 'HTTPRoute' || self.kind == 'Gateway')"),
                TARGET_KIND
            ),
            rule("self.kind != 'Gateway' || !has(self.sectionName)", GATEWAY_SECTION)
        ]),
    );
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_TARGETS,
        "items": item,
        "x-kubernetes-validations": [rule(
            "self.all(x, self.exists_one(y, x.group == y.group && x.kind == y.kind && x.name == y.name && \
             (has(x.sectionName) ? (has(y.sectionName) && x.sectionName == y.sectionName) : !has(y.sectionName))))",
            UNIQUE_TARGETS
        )]
    })
}

fn target_group(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "maxLength": 253})
}

fn target_kind(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "minLength": 1, "maxLength": 63})
}

fn target_name(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "minLength": 1, "maxLength": 253})
}

fn section_name(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "minLength": 1, "maxLength": 253, "pattern": SECTION_NAME})
}

fn ancestors(g: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": MAX_TARGETS,
        "items": g.subschema_for::<PolicyAncestorStatus>()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> StreamPolicySpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn fields(spec: &StreamPolicySpec) -> Vec<String> {
        spec.validate()
            .unwrap_err()
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn a_policy_sets_only_what_it_names_with_the_routes_field_names() {
        let s = spec(
            "targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: events, sectionName: stream}]\n\
             proxyBuffering: Enabled\nbufferSize: 128Ki\ntimeouts: {idle: 10m}\nsse: {heartbeatInterval: 15s}\n\
             loadBalancing: RoundRobin\n",
        );
        let valid = s.validate().unwrap();
        assert_eq!(
            valid.targets,
            [PolicyTarget {
                kind: TargetKind::HttpRoute,
                name: "events".into(),
                section_name: Some("stream".into()),
            }]
        );
        assert_eq!(valid.max_concurrent_streams, None);
        assert_eq!(s.proxy_buffering, Some(ProxyBuffering::Enabled));
        assert_eq!(s.timeouts.as_ref().unwrap().connect, None, "unset stays unset");
        // Round trip: nothing unset is written back.
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json,
            json!({
                "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "events", "sectionName": "stream"}],
                "proxyBuffering": "Enabled", "bufferSize": "128Ki", "timeouts": {"idle": "10m"},
                "sse": {"heartbeatInterval": "15s"}, "loadBalancing": "RoundRobin"
            })
        );
        // On/Off are not buffering words.
        let err = serde_yaml::from_str::<StreamPolicySpec>("targetRefs: []\nproxyBuffering: On\n").unwrap_err();
        assert!(
            err.to_string().contains("must be one of Enabled, Disabled, Auto"),
            "{err}"
        );
    }

    #[test]
    fn validation_names_every_bad_field() {
        let s = spec(
            "targetRefs:\n\
             - {group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: http}\n\
             - {group: \"\", kind: Service, name: svc}\n\
             - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, sectionName: a}\n\
             - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, sectionName: a}\n\
             bufferSize: 1Gi\ntimeouts: {connect: 0s, idle: soon}\nsse: {heartbeatInterval: 10ms}\nmaxConcurrentStreams: 5\n",
        );
        assert_eq!(
            fields(&s),
            [
                format!("spec.targetRefs[0].sectionName: {GATEWAY_SECTION}"),
                format!("spec.targetRefs[1]: {TARGET_KIND}"),
                format!("spec.targetRefs[3]: {UNIQUE_TARGETS}"),
                "spec.bufferSize: must be between 1Ki and 16Mi".to_string(),
                "spec.timeouts.idle: \"soon\" is not a duration: use numbers with units h, m, s or ms, such as 5s or 1m30s"
                    .to_string(),
                "spec.timeouts.connect: must be greater than 0s".to_string(),
                "spec.sse.heartbeatInterval: must be at least 100ms".to_string(),
                format!("spec.maxConcurrentStreams: {RULE_STREAMS}"),
            ]
        );
        assert_eq!(
            fields(&spec(
                "targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]\n\
                 sse: {resume: {enabled: true, budget: 90s}, rebalance: {enabled: true, tolerancePercent: 0}}\n"
            )),
            [
                "spec.sse.resume.budget: must be between 100ms and 60s",
                "spec.sse.rebalance.tolerancePercent: must be between 1 and 100",
            ]
        );
        // A policy is checked on its own: rebalancing needs resume in it.
        assert_eq!(
            fields(&spec(
                "targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]\n\
                 sse: {rebalance: {enabled: true}}\n"
            )),
            ["spec.sse.rebalance: needs sse.resume: only streams that can be resumed are moved"]
        );
        assert_eq!(
            fields(&spec("targetRefs: []\nmaxConcurrentStreams: 0\n")),
            [
                "spec.targetRefs: at least one targetRef is required",
                "spec.maxConcurrentStreams: must be between 1 and 10000000"
            ]
        );
    }
}
