//! Hand-written schema pieces for the CRD: bounds the apiserver enforces
//! and CEL rules (`x-kubernetes-validations`) with messages a user can act
//! on. They mirror [`super::validate`], which the model applies again so
//! standalone files get the same checks without an apiserver.
//!
//! Every string and list has a maximum size: CEL's cost budget is computed
//! from those bounds, and an unbounded field makes the apiserver refuse the
//! CRD.

use super::{validate, BackendRef, RouteMatch, RouteRule};
use schemars::{json_schema, Schema, SchemaGenerator};
use serde_json::{json, Value};

const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
const HOSTNAME: &str = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const DURATION: &str = "^([0-9]{1,5}(h|m|s|ms)){1,4}$";

fn rule(rule: &str, message: &str) -> Value {
    json!({"rule": rule, "message": message})
}

pub fn hostnames(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 16,
        "items": {
            "type": "string",
            "maxLength": 253,
            "x-kubernetes-validations": [rule(
                &format!("self.matches(r'{HOSTNAME}')"),
                "hostnames must be lower-case DNS names, optionally starting with '*.', such as events.example.com or *.example.com (no port)"
            )]
        }
    })
}

pub fn rules(g: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": g.subschema_for::<RouteRule>(),
        "x-kubernetes-validations": [rule("size(self) >= 1", "a Route needs at least one rule")]
    })
}

pub fn matches(g: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": g.subschema_for::<RouteMatch>()
    })
}

pub fn backend_refs(g: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 16,
        "items": g.subschema_for::<BackendRef>(),
        "x-kubernetes-validations": [rule("size(self) >= 1", "each rule needs at least one backendRef")]
    })
}

pub fn path_value(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "default": "/",
        "maxLength": 1024,
        "x-kubernetes-validations": [
            rule("self.startsWith('/')", "path value must start with /"),
            rule(r"!self.matches(r'[?#\s]')", "path value must not contain '?', '#' or whitespace: match the path only"),
            rule("!self.contains('//')", validate::PATH_DOUBLE_SLASH),
            rule(
                "!self.contains('/./') && !self.contains('/../') && !self.endsWith('/.') && !self.endsWith('/..')",
                validate::PATH_DOT_SEGMENTS
            ),
            rule("!self.contains('%2f') && !self.contains('%2F')", validate::PATH_ENCODED_SLASH)
        ]
    })
}

pub fn service_name(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 63,
        "x-kubernetes-validations": [rule(
            &format!("self.matches(r'{DNS_LABEL}')"),
            "name must be the name of a Service: lower-case letters, digits and '-'"
        )]
    })
}

pub fn port(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "format": "int32",
        "x-kubernetes-validations": [rule("self >= 1 && self <= 65535", "port must be between 1 and 65535")]
    })
}

pub fn weight(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "format": "int32",
        "default": 1,
        "x-kubernetes-validations": [rule("self >= 0 && self <= 1000000", "weight must be between 0 and 1000000")]
    })
}

pub fn buffer_size(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "description": "How much the proxy coalesces in buffered mode: a quantity such as 64Ki, from 1Ki to 16Mi. Default 64Ki.",
        "x-kubernetes-validations": [rule(
            "type(self) == int ? (self >= 1024 && self <= 16777216) : \
             (self.matches('^[0-9]{1,9}(Ki|Mi|Gi|k|M|G)?$') && \
              quantity(self).compareTo(quantity('1Ki')) >= 0 && quantity(self).compareTo(quantity('16Mi')) <= 0)",
            "bufferSize must be a whole number of bytes from 1Ki to 16Mi, such as 64Ki or 65536"
        )]
    })
}

fn duration_rules(positive: bool) -> Vec<Value> {
    let mut rules = vec![rule(
        &format!("self.matches(r'{DURATION}')"),
        "must be a duration such as 5s, 1m30s or 250ms (units h, m, s, ms)",
    )];
    if positive {
        rules.push(rule(
            &format!("!self.matches(r'{DURATION}') || duration(self) > duration('0s')"),
            "must be greater than 0s",
        ));
    }
    rules
}

pub fn duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "maxLength": 32, "x-kubernetes-validations": duration_rules(false)})
}

pub fn positive_duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "maxLength": 32, "x-kubernetes-validations": duration_rules(true)})
}

pub fn heartbeat(_: &mut SchemaGenerator) -> Schema {
    let mut rules = duration_rules(false);
    rules.push(rule(
        &format!("!self.matches(r'{DURATION}') || duration(self) >= duration('100ms')"),
        "heartbeatInterval must be at least 100ms",
    ));
    json_schema!({"type": "string", "maxLength": 32, "x-kubernetes-validations": rules})
}

/// A duration from `min` to `max` (CEL duration literals such as `100ms`),
/// with the message standalone validation gives, after the field's name.
fn bounded_duration(field: &str, min: &str, max: &str) -> Schema {
    let mut rules = duration_rules(false);
    rules.push(rule(
        &format!(
            "!self.matches(r'{DURATION}') || (duration(self) >= duration('{min}') && duration(self) <= duration('{max}'))"
        ),
        &format!("{field} must be between {min} and {max}"),
    ));
    json_schema!({"type": "string", "maxLength": 32, "x-kubernetes-validations": rules})
}

/// A whole number from `min` to `max`.
fn bounded_int(field: &str, min: i32, max: i32) -> Schema {
    json_schema!({
        "type": "integer",
        "format": "int32",
        "x-kubernetes-validations": [rule(
            &format!("self >= {min} && self <= {max}"),
            &format!("{field} must be between {min} and {max}")
        )]
    })
}

pub fn resume_max_attempts(_: &mut SchemaGenerator) -> Schema {
    bounded_int("maxAttempts", 1, 10)
}

pub fn resume_budget(_: &mut SchemaGenerator) -> Schema {
    bounded_duration("budget", "100ms", "60s")
}

pub fn resume_rollout_window(_: &mut SchemaGenerator) -> Schema {
    bounded_duration("rolloutWindow", "0s", "5m")
}

pub fn rebalance_tolerance_percent(_: &mut SchemaGenerator) -> Schema {
    bounded_int("tolerancePercent", 1, 100)
}

pub fn rebalance_moves_per_second(_: &mut SchemaGenerator) -> Schema {
    bounded_int("movesPerSecond", 1, 1000)
}

/// The check of [`validate`] that `sse.rebalance` has `sse.resume` at the
/// same level, reported on `sse.rebalance`. For a StreamPolicy's `spec`,
/// and a Route's own `spec.sse`.
pub fn rebalance_needs_resume() -> Value {
    json!({
        "rule": "!has(self.sse) || !has(self.sse.rebalance) || !self.sse.rebalance.enabled || \
                 (has(self.sse.resume) && self.sse.resume.enabled)",
        "message": validate::REBALANCE_NEEDS_RESUME,
        "fieldPath": ".sse.rebalance"
    })
}

/// A Route's checks across its fields: rebalancing needs resume, at the
/// Route's level and in each rule, where the rule's own `resume` decides
/// if it has one and the Route's otherwise (a rule's position cannot be
/// named in `fieldPath`, so those land on `spec.rules`).
pub fn route_spec_rules() -> Value {
    json!([
        rebalance_needs_resume(),
        {
            "rule": "self.rules.all(r, !has(r.sse) || !has(r.sse.rebalance) || !r.sse.rebalance.enabled || \
                     (has(r.sse.resume) ? r.sse.resume.enabled : (has(self.sse) && has(self.sse.resume) && self.sse.resume.enabled)))",
            "message": "a rule's sse.rebalance needs sse.resume, on the rule or on the Route: only streams that can be resumed are moved",
            "fieldPath": ".rules"
        }
    ])
}

pub fn max_streams(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "format": "int64",
        "x-kubernetes-validations": [rule("self >= 1 && self <= 10000000", "maxConcurrentStreams must be between 1 and 10000000")]
    })
}

const ORIGIN: &str = r"^(\*|[a-zA-Z][a-zA-Z0-9+.-]*://(\*\.)?[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)*(:[0-9]{1,5})?)$";
const TOKEN: &str = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$";

pub fn cors(g: &mut SchemaGenerator) -> Schema {
    let mut schema = <super::CorsSpec as schemars::JsonSchema>::json_schema(g);
    schema.insert(
        "x-kubernetes-validations".into(),
        json!([rule(
            "!(has(self.allowCredentials) && self.allowCredentials && self.allowOrigins.exists(o, o == '*'))",
            "allowOrigins '*' cannot be combined with allowCredentials: list the origins"
        )]),
    );
    schema
}

pub fn cors_origins(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {
            "type": "string",
            "maxLength": 280,
            "x-kubernetes-validations": [rule(
                &format!("self.matches(r'{ORIGIN}')"),
                "each origin is scheme://host[:port] (no path), such as https://app.example.com or https://*.example.com, or *"
            )]
        },
        "x-kubernetes-validations": [rule("size(self) >= 1", "list at least one origin, or *")]
    })
}

fn tokens(max_items: usize, message: &str) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": max_items,
        "items": {
            "type": "string",
            "maxLength": 128,
            "x-kubernetes-validations": [rule(&format!("self.matches(r\"{TOKEN}\")"), message)]
        }
    })
}

pub fn header_names(_: &mut SchemaGenerator) -> Schema {
    tokens(64, "must be a header name such as Authorization, or *")
}

pub fn methods(_: &mut SchemaGenerator) -> Schema {
    tokens(16, "must be a method name such as GET, or *")
}

pub fn secret_name(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 253,
        "x-kubernetes-validations": [rule(
            &format!("self.matches(r'{DNS_SUBDOMAIN}')"),
            "secretName must be the name of a Secret in the Route's namespace"
        )]
    })
}

pub fn tls(g: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 16,
        "items": g.subschema_for::<super::RouteTls>()
    })
}

/// Client networks: CIDRs or addresses, each checked by ssegate (a bad one
/// closes the Route rather than being refused by the apiserver, so the
/// apiserver only bounds them).
pub fn networks(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 1024,
        "items": {"type": "string", "maxLength": 64}
    })
}

/// A short free text (a realm, a method, an nginx expression).
pub fn short_text(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "maxLength": 512})
}

/// A URL (an auth service, a sign-in page).
pub fn url(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "maxLength": 2048})
}

const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
