//! The `Route` custom resource (`ssegate.dev/v1alpha1`) and its validation.
//!
//! The spec types are plain serde/schemars structs, so the pure routing model
//! can use them without pulling in a Kubernetes client. Only the derive on
//! [`RouteSpec`] knows about kube: it generates the [`Route`] object type and
//! its CRD.

pub mod access;
mod cors;
mod duration;
pub mod filters;
pub mod gateway;
mod quantity;
mod schema;
pub mod stream_policy;
mod validate;
mod words;

pub use access::{AccessSpec, ValidAccess};
pub use cors::{CorsHeaders, CorsPolicy, CorsSpec};
pub use duration::{parse_duration, DurationError};
pub use quantity::{parse_quantity, Quantity, QuantityError};
pub use stream_policy::{PolicyAncestorRef, PolicyAncestorStatus, StreamPolicy, StreamPolicySpec, StreamPolicyStatus};
pub(crate) use validate::GivenSettings;
pub use validate::{
    route_settings, valid_dns_label, valid_dns_subdomain, valid_hostname, valid_path, BackendPort, EffectiveTimeouts,
    FieldError, MatchConditions, RebalanceSettings, ResumeSettings, StreamSettings, ValidBackend, ValidMatch,
    ValidPath, ValidRoute, ValidRule, ValidTls, DEFAULT_BUFFER_SIZE,
};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every ssegate resource.
pub const GROUP: &str = "ssegate.dev";
/// `apiVersion` of the Route kind.
pub const API_VERSION: &str = "ssegate.dev/v1alpha1";

/// How a Route treats upstream response bodies.
///
/// The variants are words, never On/Off: YAML 1.1 reads `on` and `off` as
/// booleans, which would turn a typo-free manifest into a schema error.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ProxyBuffering {
    /// Coalesce upstream bytes up to `bufferSize`, as NGINX's `proxy_buffering on`.
    Enabled,
    /// Forward every upstream body frame as soon as it arrives.
    Disabled,
    /// Stream `text/event-stream` (and `X-Accel-Buffering: no`), buffer the rest.
    #[default]
    Auto,
}

// Hand-written so a wrong value says what is allowed (see `words`).
words::word_enum!(ProxyBuffering {
    Enabled,
    Disabled,
    Auto
});
words::word_enum!(LoadBalancing {
    RoundRobin,
    LeastConnections
});
words::word_enum!(PathMatchType { Exact, PathPrefix });

impl ProxyBuffering {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyBuffering::Enabled => "Enabled",
            ProxyBuffering::Disabled => "Disabled",
            ProxyBuffering::Auto => "Auto",
        }
    }
}

/// How a rule spreads requests over its endpoints.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum LoadBalancing {
    /// Weighted round robin.
    RoundRobin,
    /// Of two endpoints drawn by weighted round robin, the one with fewer
    /// open requests and streams. The default: streams live for hours, so
    /// arrival order alone leaves a restarted or added endpoint idle while
    /// the others carry every old stream.
    #[default]
    LeastConnections,
}

/// Routes HTTP traffic for some hostnames and paths to backend Services,
/// with SSE-aware buffering.
// clippy reads the repeated `type_` keys of `printcolumn(...)` as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ssegate.dev",
    version = "v1alpha1",
    kind = "Route",
    namespaced,
    status = "RouteStatus",
    shortname = "sser",
    category = "ssegate",
    doc = "Route sends HTTP and Server-Sent Events traffic for hostnames and paths to Services.",
    printcolumn(name = "Hostnames", type_ = "string", json_path = ".spec.hostnames"),
    printcolumn(name = "Buffering", type_ = "string", json_path = ".spec.proxyBuffering"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = schema::route_spec_rules()))]
pub struct RouteSpec {
    /// Host names this Route serves: exact names or a `*.example.com` wildcard.
    /// Empty means every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::hostnames")]
    pub hostnames: Vec<String>,
    /// Path matches and the backends they send traffic to.
    #[schemars(schema_with = "schema::rules")]
    pub rules: Vec<RouteRule>,
    /// Buffering of upstream response bodies. Defaults to `Auto`.
    #[serde(default)]
    pub proxy_buffering: ProxyBuffering,
    /// How much the proxy coalesces in buffered mode (a quantity such as `64Ki`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::buffer_size")]
    pub buffer_size: Option<Quantity>,
    /// Timeouts for the whole Route; rules may override single fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Settings for `text/event-stream` responses; rules may override single fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse: Option<SseSettings>,
    /// `RoundRobin` or `LeastConnections` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing: Option<LoadBalancing>,
    /// Most event streams this Route keeps open at once, per ssegate replica.
    /// Past it, new requests get 503 with `Retry-After`. Unlimited by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::max_streams")]
    pub max_concurrent_streams: Option<i64>,
    /// Cross-origin access for browsers. When set, ssegate answers
    /// preflights itself and adds the CORS headers to every response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::cors")]
    pub cors: Option<CorsSpec>,
    /// Certificates for the TLS listener, chosen by server name (SNI).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::tls")]
    pub tls: Vec<RouteTls>,
    /// Answers plain-HTTP requests with a `308` to the same URL on HTTPS
    /// (method and body kept), except ACME HTTP-01 challenges
    /// (`/.well-known/acme-challenge/`). What an Ingress with TLS gets from
    /// ingress-nginx by default. Off by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    /// Who may reach this Route's paths: source ranges, basic and external
    /// authentication, per-client limits. Everyone when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessSpec>,
}

/// A certificate for some of the Route's hostnames.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteTls {
    /// Server names this certificate is used for, exact or `*.example.com`.
    /// Defaults to the Route's `hostnames`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::hostnames")]
    pub hostnames: Vec<String>,
    /// A `kubernetes.io/tls` Secret (keys `tls.crt` and `tls.key`) in the
    /// Route's namespace. Standalone mode reads the same Secret from a YAML
    /// file in its folder.
    #[schemars(schema_with = "schema::secret_name")]
    pub secret_name: String,
}

/// Settings that apply to `text/event-stream` responses only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SseSettings {
    /// When the upstream has sent nothing for this long, ssegate writes an
    /// SSE comment (`:` and a blank line) to the client, at an event
    /// boundary only. It keeps idle connections open through middleboxes and
    /// finds clients that have gone away. Off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::heartbeat")]
    pub heartbeat_interval: Option<String>,
    /// Once a stream has been open this long, ssegate ends it at the next
    /// event boundary, so clients reconnect and spread out across replicas
    /// and endpoints. Off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::positive_duration")]
    pub max_stream_duration: Option<String>,
    /// When the upstream of a GET `text/event-stream` response that has
    /// carried an `id:` ends abnormally (a reset, a cut mid-body, its
    /// endpoint leaving, or the idle timeout if `onIdleTimeout`), ssegate
    /// sends the same request with `Last-Event-ID` to another ready
    /// endpoint and carries on writing events into the client's open
    /// stream. With resume on, only whole events are forwarded. Fields left
    /// out keep the Route's values (in a rule) or a less specific
    /// StreamPolicy's when resume is on there, else the defaults. Off by
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeSpec>,
    /// After endpoints are added, resumable streams move from the fullest
    /// endpoints to the others, at event boundaries and at a bounded rate,
    /// until the load is even; otherwise streams opened before a scale-up
    /// stay where they are for hours. Needs `resume` (in a StreamPolicy,
    /// in the same policy). Fields left out are kept as for `resume`. Off
    /// by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<RebalanceSpec>,
}

/// `sse.resume`: reconnecting an event stream upstream on the client's
/// behalf.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResumeSpec {
    /// `true` turns resume on, `false` off, whatever the Route (for a
    /// rule) or a less specific StreamPolicy says.
    pub enabled: bool,
    /// Upstream requests tried for one resume, connect failures and
    /// timeouts included; 1 to 10. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::resume_max_attempts")]
    pub max_attempts: Option<i32>,
    /// Longest time from the upstream's end to the resumed answer's
    /// headers, across all attempts; past it the resume gives up. 100ms to
    /// 60s. Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::resume_budget")]
    pub budget: Option<String>,
    /// Resume an upstream that has been silent for `timeouts.idle` instead
    /// of ending the stream. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_idle_timeout: Option<bool>,
    /// Streams on an endpoint that starts terminating or leaves move to
    /// other endpoints at their next event boundary, each at a random
    /// moment within this window, so a rollout does not reconnect them all
    /// at once. 0s to 5m. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::resume_rollout_window")]
    pub rollout_window: Option<String>,
}

/// `sse.rebalance`: evening out resumable streams after endpoints are
/// added.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSpec {
    /// `true` turns rebalancing on (it needs `resume`), `false` off.
    pub enabled: bool,
    /// How far above the even share, in percent, an endpoint may hold
    /// streams before some move; 1 to 100. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::rebalance_tolerance_percent")]
    pub tolerance_percent: Option<i32>,
    /// Most streams of one rule moved per second, so endpoints are not
    /// flooded with resumed requests; 1 to 1000. Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::rebalance_moves_per_second")]
    pub moves_per_second: Option<i32>,
}

/// One rule: requests that satisfy any of `matches` go to `backendRefs`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteRule {
    /// Request matches; empty means `PathPrefix /`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::matches")]
    pub matches: Vec<RouteMatch>,
    /// Services that receive the matched traffic, spread by weight.
    #[schemars(schema_with = "schema::backend_refs")]
    pub backend_refs: Vec<BackendRef>,
    /// Overrides the Route's `proxyBuffering` for this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_buffering: Option<ProxyBuffering>,
    /// Overrides single fields of the Route's `timeouts` for this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Overrides single fields of the Route's `sse` settings for this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse: Option<SseSettings>,
    /// Overrides the Route's `loadBalancing` for this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing: Option<LoadBalancing>,
}

/// A request match. Only path matching exists today.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// Path match; absent means `PathPrefix /`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
}

/// How a request path is compared.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PathMatch {
    /// `Exact` or `PathPrefix` (whole segments). Defaults to `PathPrefix`.
    #[serde(rename = "type", default)]
    pub kind: PathMatchType,
    /// The path, starting with `/`.
    #[serde(default = "root_path")]
    #[schemars(schema_with = "schema::path_value")]
    pub value: String,
}

impl Default for PathMatch {
    fn default() -> Self {
        PathMatch {
            kind: PathMatchType::PathPrefix,
            value: root_path(),
        }
    }
}

fn root_path() -> String {
    "/".to_owned()
}

/// Kind of path comparison.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
pub enum PathMatchType {
    /// The whole path equals the value.
    Exact,
    /// The path starts with the value at a segment boundary.
    #[default]
    PathPrefix,
}

/// A Service port in the Route's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// Service name.
    #[schemars(schema_with = "schema::service_name")]
    pub name: String,
    /// Service port (the `port`, not the `targetPort`).
    #[schemars(schema_with = "schema::port")]
    pub port: i32,
    /// Relative share of requests, 0 to 1,000,000. Defaults to 1.
    #[serde(default = "default_weight")]
    #[schemars(schema_with = "schema::weight")]
    pub weight: i32,
}

fn default_weight() -> i32 {
    1
}

/// Durations use Gateway API's format: `5s`, `1m30s`, `250ms`, `1h`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Time to open a TCP connection to an endpoint. Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::positive_duration")]
    pub connect: Option<String>,
    /// Time to wait for the upstream's response headers. Default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::positive_duration")]
    pub response_headers: Option<String>,
    /// Largest gap allowed between upstream body bytes. Default 1h; `0s` disables.
    /// There is deliberately no total-response timeout: it would cut streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub idle: Option<String>,
}

/// Observed state of a Route.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// The `metadata.generation` these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` and `ResolvedRefs`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A Kubernetes-style condition (the shape of `metav1.Condition`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason such as `Accepted` or `Conflicted`.
    pub reason: String,
    /// A human readable explanation.
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// RFC 3339 time of the last status change; set by the status writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}
