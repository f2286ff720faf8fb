//! The immutable routing table and request lookup.

use crate::api::{MatchConditions, StreamSettings, ValidMatch};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::report::RouteReport;

/// The table's maps. Their keys come from configuration, never from clients
/// (a client's Host or SNI is only looked up), so a fast, randomly seeded
/// hash serves where SipHash cost an eighth of a 10,000-Route build.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The ready endpoints of every Service port the table's rules use, by the
/// backend's label (`namespace/name:port`).
pub type ReadyEndpoints = HashMap<Arc<str>, Arc<[SocketAddr]>>;

/// One backend Service port of a rule, resolved to ready endpoints.
#[derive(Debug)]
pub struct ResolvedBackend {
    /// `namespace/name:port`, for messages.
    pub service: Arc<str>,
    pub weight: u32,
    /// Shared by every rule that uses the same Service port.
    pub endpoints: Arc<[SocketAddr]>,
    /// Why this backend cannot be used, when it keeps its share of
    /// requests anyway and answers them 500 (an HTTPRoute's unresolved
    /// backend, as Gateway API requires).
    pub failure: Option<Arc<str>>,
    /// Round-robin position among `endpoints`.
    cursor: AtomicU64,
}

impl ResolvedBackend {
    pub fn new(service: Arc<str>, weight: u32, endpoints: Arc<[SocketAddr]>) -> Self {
        ResolvedBackend {
            service,
            weight,
            endpoints,
            failure: None,
            cursor: AtomicU64::new(0),
        }
    }

    /// A backend that takes its share of requests and answers them 500.
    pub fn failing(service: Arc<str>, weight: u32, why: Arc<str>) -> Self {
        ResolvedBackend {
            failure: Some(why),
            ..ResolvedBackend::new(service, weight, Arc::from([]))
        }
    }

    fn usable(&self) -> bool {
        self.weight > 0 && (self.failure.is_some() || !self.endpoints.is_empty())
    }

    /// The next of its endpoints in turn. Only called on a backend
    /// [`ResolvedRule::pick_backend`] returned, which has endpoints.
    pub fn next_endpoint(&self) -> SocketAddr {
        let n = self.cursor.fetch_add(1, Ordering::Relaxed);
        self.endpoints[(n % self.endpoints.len() as u64) as usize]
    }
}

/// Why no endpoint was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpicked<'a> {
    pub why: &'a str,
    /// The route is misconfigured (500), rather than its backends being
    /// down (503).
    pub internal: bool,
}

/// What a matched request is proxied with: one rule of one Route, its
/// backends resolved to endpoints and its settings resolved.
///
/// A request holds an `Arc<ResolvedRule>` for its whole life, so a table
/// swap never changes the settings of a request or stream already under way.
#[derive(Debug)]
pub struct ResolvedRule {
    /// `namespace/name` of the Route, for logs and metrics.
    pub route: Arc<str>,
    pub rule_index: usize,
    pub settings: StreamSettings,
    /// Most event streams open at once on the Route; `None` when unlimited.
    pub max_concurrent_streams: Option<usize>,
    /// The Route's CORS policy, shared by its rules.
    pub cors: Option<Arc<crate::api::CorsPolicy>>,
    pub backends: Vec<ResolvedBackend>,
    /// Plain-HTTP requests are answered with a 308 to HTTPS.
    pub https_redirect: bool,
    pub filters: Option<Arc<crate::api::filters::RuleFilters>>,
    /// Who may reach the rule; `None` lets everyone.
    pub access: Option<Arc<super::AccessPolicy>>,
    total_weight: u64,
    /// Steps through the weight slots in an interleaved order (see `stride`).
    stride: u64,
    cursor: AtomicU64,
    /// Why no endpoint can be picked, when that is so.
    unavailable: Option<String>,
    /// `unavailable` is the route's own fault (500), not its backends' (503).
    unavailable_internal: bool,
}

impl ResolvedRule {
    /// Rule `rule_index` of `valid` (named `route`), with its backends
    /// resolved and the `problems` that left some unusable.
    pub fn new(
        route: Arc<str>,
        rule_index: usize,
        valid: &crate::api::ValidRoute,
        backends: Vec<ResolvedBackend>,
        problems: Vec<String>,
        access: Option<Arc<super::AccessPolicy>>,
    ) -> Self {
        let rule = &valid.rules[rule_index];
        let strict = valid.strict_backends;
        let total_weight = backends.iter().filter(|b| b.usable()).map(|b| b.weight as u64).sum();
        let unavailable_internal = strict && total_weight == 0;
        let unavailable = (total_weight == 0).then(|| {
            if problems.is_empty() {
                "every backend has weight 0".to_owned()
            } else {
                problems.join("; ")
            }
        });
        ResolvedRule {
            route,
            rule_index,
            settings: rule.settings,
            max_concurrent_streams: valid.max_concurrent_streams,
            cors: rule.cors.clone().or_else(|| valid.cors.clone()),
            backends,
            https_redirect: rule.https_redirect,
            filters: rule.filters.clone(),
            access,
            total_weight,
            stride: stride(total_weight),
            cursor: AtomicU64::new(0),
            unavailable,
            unavailable_internal,
        }
    }

    /// How many endpoints requests can go to.
    pub fn endpoint_count(&self) -> usize {
        self.backends
            .iter()
            .filter(|b| b.usable())
            .map(|b| b.endpoints.len())
            .sum()
    }

    /// Picks an endpoint by weighted round robin: the backend by weight,
    /// then the endpoint within it in turn. Lock-free: two atomic increments.
    pub fn pick(&self) -> Result<SocketAddr, Unpicked<'_>> {
        Ok(self.pick_backend()?.next_endpoint())
    }

    /// Picks a backend by weight (one step of the rule's cursor per call,
    /// so each request is one draw and the weights hold exactly). A
    /// backend that cannot be used answers its share: the error.
    pub fn pick_backend(&self) -> Result<&ResolvedBackend, Unpicked<'_>> {
        if let Some(why) = &self.unavailable {
            return Err(Unpicked {
                why,
                internal: self.unavailable_internal,
            });
        }
        let step = self.cursor.fetch_add(1, Ordering::Relaxed) % self.total_weight;
        let mut slot = (step as u128 * self.stride as u128 % self.total_weight as u128) as u64;
        for backend in self.backends.iter().filter(|b| b.usable()) {
            let weight = backend.weight as u64;
            if slot < weight {
                if let Some(why) = &backend.failure {
                    return Err(Unpicked { why, internal: true });
                }
                return Ok(backend);
            }
            slot -= weight;
        }
        unreachable!("slot is below the total weight of usable backends")
    }
}

/// A step through `total` weight slots that visits each once per cycle and
/// interleaves the backends' runs of slots: the first integer from
/// `total / golden ratio` up that shares no factor with `total` (a Weyl
/// sequence). Walking the slots in order would send a 70/30 split as 70
/// requests to one backend, then 30 to the other, so any count of requests
/// that is not a whole cycle (a replica's share of them, say) would skew.
fn stride(total: u64) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    if total <= 2 {
        return 1;
    }
    let mut s = ((total as f64) * 0.618_033_988_75) as u64;
    s = s.max(1);
    while gcd(s, total) != 1 {
        s += 1;
    }
    s
}

/// What a request shows beyond its host and path, for matches that ask
/// more of it (HTTPRoute's method, header and query matches, and the
/// listener). The proxy implements it over its request type, so the model
/// needs no HTTP library.
pub trait RequestFacts {
    fn method(&self) -> &str;
    /// Whether a header `name` (lower-case) has exactly `value`, on any of
    /// its lines.
    fn has_header(&self, name: &str, value: &str) -> bool;
    /// The first value of query parameter `name`.
    fn query_param(&self, name: &str) -> Option<&str>;
    fn tls(&self) -> bool;
    /// The Gateway (`namespace/name`) whose own data-plane port the
    /// request arrived on; `None` on the shared ports, where rules of every
    /// Gateway, Route and Ingress are served.
    fn gateway(&self) -> Option<&str>;
    /// On a Gateway's own port: the listener of that Gateway whose
    /// hostname fits the request's host best (`""` when none does); only
    /// rules attached through it match. `None` on the shared ports.
    fn listener(&self) -> Option<&str>;
}

/// A request described in plain values, for tests and tools: a GET over
/// plain HTTP with no headers or query unless set.
#[derive(Debug, Clone)]
pub struct RequestSketch {
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    pub tls: bool,
    /// Arrived on this Gateway's own port (`namespace/name`).
    pub gateway: Option<String>,
    /// And belongs to this listener of it.
    pub listener: Option<String>,
}

impl Default for RequestSketch {
    fn default() -> Self {
        RequestSketch {
            method: "GET".into(),
            headers: Vec::new(),
            query: Vec::new(),
            tls: false,
            gateway: None,
            listener: None,
        }
    }
}

impl RequestFacts for RequestSketch {
    fn method(&self) -> &str {
        &self.method
    }
    fn has_header(&self, name: &str, value: &str) -> bool {
        self.headers.iter().any(|(k, v)| k == name && v == value)
    }
    fn query_param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    fn tls(&self) -> bool {
        self.tls
    }
    fn gateway(&self) -> Option<&str> {
        self.gateway.as_deref()
    }
    fn listener(&self) -> Option<&str> {
        self.listener.as_deref()
    }
}

/// Whether `req` meets every condition. A request on a Gateway's own port
/// is admitted only by rules attached through that Gateway (so never by a
/// Route's or an Ingress's); elsewhere the Gateway condition holds for all.
fn admits(c: &MatchConditions, req: &dyn RequestFacts) -> bool {
    req.gateway().is_none_or(|g| c.gateway.as_deref() == Some(g))
        && req.listener().is_none_or(|l| c.listener.as_deref() == Some(l))
        && c.tls.is_none_or(|tls| tls == req.tls())
        && c.method.as_deref().is_none_or(|m| m == req.method())
        && c.headers.iter().all(|(k, v)| req.has_header(k, v))
        && c.query.iter().all(|(k, v)| req.query_param(k) == Some(v.as_str()))
}

/// The targets of one path match, most specific conditions first, then in
/// build order (older objects first).
#[derive(Debug, Default)]
struct Candidates(Vec<(MatchConditions, Arc<ResolvedRule>)>);

impl Candidates {
    fn insert(&mut self, conditions: MatchConditions, target: Arc<ResolvedRule>) {
        // After every candidate at least as specific: ties keep build order.
        let rank = conditions.specificity();
        let at = self.0.partition_point(|(c, _)| c.specificity() >= rank);
        self.0.insert(at, (conditions, target));
    }

    fn pick(&self, req: &dyn RequestFacts) -> Option<&Arc<ResolvedRule>> {
        self.0.iter().find(|(c, _)| admits(c, req)).map(|(_, t)| t)
    }
}

/// Path matches of one host pattern.
#[derive(Debug, Default)]
pub struct PathTable {
    exact: HashMap<String, Candidates>,
    /// Prefixes without a trailing slash (`/` itself excepted).
    prefix: HashMap<String, Candidates>,
}

impl PathTable {
    pub(super) fn insert(&mut self, m: &ValidMatch, target: Arc<ResolvedRule>) {
        let map = match m.path.kind {
            crate::api::PathMatchType::Exact => &mut self.exact,
            crate::api::PathMatchType::PathPrefix => &mut self.prefix,
        };
        map.entry(m.path.value.clone())
            .or_default()
            .insert(m.conditions.clone(), target);
    }

    /// Exact beats prefix; the longest prefix wins; among the matches of
    /// one path, the most specific whose conditions the request meets. A
    /// path whose conditions all fail falls through to shorter prefixes.
    /// Walks the path's segment boundaries from the longest down, one hash
    /// lookup each, so the cost depends on the path's depth, not on how
    /// many Routes exist.
    fn lookup(&self, path: &str, req: &dyn RequestFacts) -> Option<(&Arc<ResolvedRule>, usize)> {
        if let Some(t) = self.exact.get(path).and_then(|c| c.pick(req)) {
            return Some((t, path.len()));
        }
        if self.prefix.is_empty() {
            return None;
        }
        let mut candidate = path;
        loop {
            if let Some(t) = self.prefix.get(candidate).and_then(|c| c.pick(req)) {
                return Some((t, candidate.len()));
            }
            if candidate.len() <= 1 {
                return None;
            }
            candidate = match candidate.rfind('/') {
                Some(0) => "/",
                Some(i) => &candidate[..i],
                None => return None,
            };
        }
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefix.is_empty()
    }

    fn describe(&self) -> Vec<MatchView> {
        let views = |kind: &'static str, map: &HashMap<String, Candidates>| -> Vec<MatchView> {
            map.iter()
                .flat_map(|(p, c)| c.0.iter().map(move |(cond, t)| MatchView::new(kind, p, cond, t)))
                .collect()
        };
        let mut out = views("Exact", &self.exact);
        out.extend(views("PathPrefix", &self.prefix));
        out.sort_by(|a, b| (a.kind, &a.path).cmp(&(b.kind, &b.path)));
        out
    }
}

/// The certificate in `certificates` for a server name: the exact name,
/// then the longest wildcard, then the one for any name.
fn pick_certificate<'c>(
    certificates: &'c HashMap<String, Arc<super::TlsKeyPair>>,
    server_name: &str,
) -> Option<&'c Arc<super::TlsKeyPair>> {
    if let Some(c) = certificates.get(server_name) {
        return Some(c);
    }
    let mut rest = server_name;
    while let Some(dot) = rest.find('.') {
        rest = &rest[dot..];
        if let Some(c) = certificates.get(&format!("*{rest}")) {
            return Some(c);
        }
        rest = &rest[1..];
    }
    certificates.get("*")
}

/// An immutable snapshot of all routing decisions.
#[derive(Debug, Default)]
pub struct RoutingTable {
    /// Increases by one with every table the process builds.
    pub generation: u64,
    pub(super) exact_hosts: HashMap<String, PathTable>,
    /// Keyed by the suffix with its dot: `*.example.com` is `.example.com`.
    pub(super) wildcard_hosts: HashMap<String, PathTable>,
    pub(super) any_host: PathTable,
    /// Status of every Route, sorted by key.
    pub reports: Vec<RouteReport>,
    /// Certificates by server name pattern (`events.example.com`, `*.example.com`).
    pub certificates: HashMap<String, Arc<super::TlsKeyPair>>,
    /// Each Gateway's own listeners' certificates (by `namespace/name`,
    /// then as [`Self::certificates`]): its own TLS port presents these
    /// and no other object's.
    pub(super) gateway_certificates: HashMap<String, HashMap<String, Arc<super::TlsKeyPair>>>,
    /// Each accepted Gateway's own data-plane ports.
    pub(super) gateway_ports: super::GatewayPorts,
    /// The ready endpoints of every Service port a rule uses, by the
    /// backend's label (`namespace/name:port`): a resumed stream keeps its
    /// rule from the table it started with, but goes to the endpoints
    /// ready now.
    pub(super) service_endpoints: ReadyEndpoints,
}

impl RoutingTable {
    /// Finds the target for a request. `host` must already be normalised
    /// (see [`super::normalize_host`]). The most specific host pattern that
    /// has a matching path wins: exact name, then the longest wildcard,
    /// then Routes without hostnames.
    pub fn lookup(&self, host: &str, path: &str, req: &dyn RequestFacts) -> Option<&Arc<ResolvedRule>> {
        self.lookup_matched(host, path, req).map(|(t, _)| t)
    }

    /// As [`RoutingTable::lookup`], with the length of the path match that
    /// chose the rule (`path[..len]` is the matched prefix or the whole
    /// exact path), which a prefix rewrite or redirect replaces.
    pub fn lookup_matched(
        &self,
        host: &str,
        path: &str,
        req: &dyn RequestFacts,
    ) -> Option<(&Arc<ResolvedRule>, usize)> {
        if let Some(t) = self.exact_hosts.get(host).and_then(|p| p.lookup(path, req)) {
            return Some(t);
        }
        if !self.wildcard_hosts.is_empty() {
            let mut from = 0;
            while let Some(dot) = host[from..].find('.') {
                let at = from + dot;
                if at > 0 {
                    if let Some(t) = self.wildcard_hosts.get(&host[at..]).and_then(|p| p.lookup(path, req)) {
                        return Some(t);
                    }
                }
                from = at + 1;
            }
        }
        self.any_host.lookup(path, req)
    }

    /// The certificate for a TLS server name (lower-case): the exact name,
    /// then the longest wildcard, then the one for any name (`*`: a Gateway
    /// HTTPS listener without a hostname).
    pub fn certificate_for(&self, server_name: &str) -> Option<&Arc<super::TlsKeyPair>> {
        pick_certificate(&self.certificates, server_name)
    }

    /// As [`Self::certificate_for`], among the listeners of one Gateway
    /// (`namespace/name`) only: what its own TLS port presents.
    pub fn gateway_certificate_for(&self, gateway: &str, server_name: &str) -> Option<&Arc<super::TlsKeyPair>> {
        pick_certificate(self.gateway_certificates.get(gateway)?, server_name)
    }

    /// The endpoints ready now for a backend's Service port, by its label;
    /// `None` when no rule of this table uses it.
    pub fn service_endpoints(&self, service: &str) -> Option<&Arc<[SocketAddr]>> {
        self.service_endpoints.get(service)
    }

    /// Every used Service port's ready endpoints, by label.
    pub fn ready_endpoints(&self) -> &ReadyEndpoints {
        &self.service_endpoints
    }

    /// The ports each accepted Gateway of ssegate's class is served on by
    /// itself (a request arriving there matches only that Gateway's
    /// rules), besides the shared ports.
    pub fn gateway_ports(&self) -> &super::GatewayPorts {
        &self.gateway_ports
    }

    /// A JSON-friendly view for `/debug/routes`.
    pub fn describe(&self) -> TableView<'_> {
        let mut hosts: Vec<HostView> = self
            .exact_hosts
            .iter()
            .map(|(h, p)| HostView {
                host: h.clone(),
                matches: p.describe(),
            })
            .chain(self.wildcard_hosts.iter().map(|(h, p)| HostView {
                host: format!("*{h}"),
                matches: p.describe(),
            }))
            .collect();
        hosts.sort_by(|a, b| a.host.cmp(&b.host));
        if !self.any_host.is_empty() {
            hosts.push(HostView {
                host: "*".into(),
                matches: self.any_host.describe(),
            });
        }
        let mut certificates: Vec<String> = self.certificates.keys().cloned().collect();
        certificates.sort();
        TableView {
            generation: self.generation,
            hosts,
            certificates,
            gateway_ports: self.gateway_ports.assigned().map(|(k, p)| (k.to_string(), p)).collect(),
            routes: &self.reports,
        }
    }
}

#[derive(Serialize)]
pub struct TableView<'a> {
    pub generation: u64,
    pub hosts: Vec<HostView>,
    /// Server names with a certificate.
    pub certificates: Vec<String>,
    /// `namespace/name` of each Gateway with ports of its own, and those ports.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub gateway_ports: std::collections::BTreeMap<String, super::AssignedPorts>,
    pub routes: &'a [RouteReport],
}

#[derive(Serialize)]
pub struct HostView {
    pub host: String,
    pub matches: Vec<MatchView>,
}

#[derive(Serialize)]
pub struct MatchView {
    pub kind: &'static str,
    pub path: String,
    /// Method, header, query and listener conditions, when there are any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub conditions: String,
    pub route: String,
    pub rule: usize,
    pub buffering: &'static str,
    /// `sse.resume` when it is on, with `sse.rebalance` after it:
    /// `maxAttempts 3, budget 5s, onIdleTimeout false, rolloutWindow 10s;
    /// rebalance: off`. Absent when resume is off (and so is rebalance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
    /// Who may reach it, when not everyone: what the proxy enforces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    pub backends: Vec<BackendView>,
}

#[derive(Serialize)]
pub struct BackendView {
    pub service: String,
    pub weight: u32,
    pub endpoints: Vec<SocketAddr>,
}

impl MatchView {
    fn new(kind: &'static str, path: &str, conditions: &MatchConditions, t: &ResolvedRule) -> Self {
        MatchView {
            kind,
            path: path.to_owned(),
            conditions: conditions.to_string(),
            route: t.route.to_string(),
            rule: t.rule_index,
            buffering: t.settings.buffering.as_str(),
            resume: t.settings.resume.map(|resume| match t.settings.rebalance {
                Some(rebalance) => format!("{resume}; rebalance: {rebalance}"),
                None => format!("{resume}; rebalance: off"),
            }),
            access: t.access.as_ref().map(|a| a.to_string()),
            backends: t
                .backends
                .iter()
                .map(|b| BackendView {
                    service: b.service.to_string(),
                    weight: b.weight,
                    endpoints: b.endpoints.to_vec(),
                })
                .collect(),
        }
    }
}
