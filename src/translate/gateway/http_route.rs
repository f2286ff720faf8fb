//! An HTTPRoute into the route model, attached to the listeners of
//! ssegate's Gateways that take it, with the status of each parent.
//!
//! Each rule becomes one model rule per attachment (a set of hostnames on
//! the plain or the TLS listeners of one Gateway): hostnames are the intersection of the
//! route's and the listener's, matches keep their method, header and query
//! conditions, filters are resolved once, and backends keep their weights,
//! an unusable one answering its share with 500 as the spec requires.

use super::grants::permitted;
use super::listeners::Listener;
use super::policy::RouteSettings;
use crate::api::filters::{HeaderEdits, PathChange, Redirect, Rewrite, RuleFilters};
use crate::api::gateway::http_route::{
    HttpRouteParentRefs, HttpRouteRules, HttpRouteRulesFilters,
    HttpRouteRulesFiltersRequestRedirectPathType as RedirectPathType,
    HttpRouteRulesFiltersRequestRedirectScheme as RedirectScheme, HttpRouteRulesFiltersType as FilterType,
    HttpRouteRulesFiltersUrlRewritePathType as RewritePathType, HttpRouteRulesMatches,
    HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesPathType, HttpRouteRulesMatchesQueryParamsType,
};
use crate::api::gateway::{HttpRoute, ReferenceGrant};
use crate::api::{
    valid_path, BackendPort, MatchConditions, PathMatchType, ValidBackend, ValidMatch, ValidRoute, ValidRule,
};
use crate::api::{StreamSettings, ValidAccess};
use crate::model::report::Verdict;
use crate::model::{ObjectKey, RouteDefinition, SourceKind};
use http::{HeaderName, HeaderValue};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The status of one parent of an HTTPRoute that is ssegate's to report.
#[derive(Debug, Clone, PartialEq)]
pub struct ParentVerdict {
    pub parent: HttpRouteParentRefs,
    pub accepted: Verdict,
    /// `None` until the table build says whether the backends resolve.
    pub resolved_refs: Option<Verdict>,
}

/// An HTTPRoute, translated.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutePlan {
    pub definition: Option<RouteDefinition>,
    pub parents: Vec<ParentVerdict>,
    /// Listeners it attached to, `(gateway, listener name)`.
    pub attached: Vec<(ObjectKey, String)>,
    /// Why references could not be resolved at translation (RefNotPermitted,
    /// InvalidKind); the build adds BackendNotFound.
    pub refused_refs: Option<Verdict>,
}

/// Where an attachment serves: hostnames (empty: any) on one listener kind
/// of one Gateway (`namespace/name`), which its rules' matches name so that
/// a request on that Gateway's own port finds only that Gateway's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attachment {
    gateway: Arc<str>,
    /// The listener's name: on the Gateway's own ports a request matches
    /// only the rules of the listener that fits its host best.
    listener: Arc<str>,
    hostnames: Vec<String>,
    tls: bool,
}

/// Translates `route`. `gateways` holds the listeners of every Gateway of
/// ssegate's class, by Gateway; `labels` the labels of namespaces;
/// `settings` each rule's settings, from the StreamPolicies attached.
pub fn plan(
    route: &HttpRoute,
    key: ObjectKey,
    created_millis: i64,
    gateways: &BTreeMap<ObjectKey, Vec<Listener>>,
    grants: &[ReferenceGrant],
    labels: &BTreeMap<String, BTreeMap<String, String>>,
    settings: &RouteSettings,
) -> RoutePlan {
    let route_hosts: Vec<String> = route
        .spec
        .hostnames
        .iter()
        .flatten()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let mut parents = Vec::new();
    let mut attachments: Vec<Attachment> = Vec::new();
    let mut attached = Vec::new();
    for parent in route.spec.parent_refs.iter().flatten() {
        let group_ok = parent.group.as_deref().is_none_or(|g| g == super::GROUP);
        let kind_ok = parent.kind.as_deref().is_none_or(|k| k == "Gateway");
        if !group_ok || !kind_ok {
            continue;
        }
        let gw_key = ObjectKey::new(
            parent.namespace.as_deref().unwrap_or(&key.namespace),
            parent.name.as_str(),
        );
        // Not a Gateway of ours: another controller reports on it.
        let Some(listeners) = gateways.get(&gw_key) else {
            continue;
        };
        let named: Vec<&Listener> = listeners
            .iter()
            .filter(|l| parent.section_name.as_deref().is_none_or(|s| s == l.name))
            .filter(|l| parent.port.is_none_or(|p| p == l.port))
            .collect();
        let accepted = if named.is_empty() {
            Verdict::no(
                "NoMatchingParent",
                "no listener of the Gateway has this sectionName and port",
            )
        } else {
            let allowed: Vec<&&Listener> = named
                .iter()
                .filter(|l| l.usable && l.takes_http_routes)
                .filter(|l| l.admits_namespace(&key.namespace, labels.get(&key.namespace)))
                .collect();
            if allowed.is_empty() {
                Verdict::no(
                    "NotAllowedByListeners",
                    "no listener of the Gateway takes HTTPRoutes from this namespace",
                )
            } else {
                let mut any = false;
                for l in allowed {
                    if let Some(hostnames) = intersect(&route_hosts, l.hostname.as_deref()) {
                        any = true;
                        attached.push((l.gateway.clone(), l.name.clone()));
                        let a = Attachment {
                            gateway: Arc::from(l.gateway.to_string()),
                            listener: Arc::from(l.name.as_str()),
                            hostnames,
                            tls: l.tls,
                        };
                        if !attachments.contains(&a) {
                            attachments.push(a);
                        }
                    }
                }
                if any {
                    Verdict::yes("Accepted", "the route is attached")
                } else {
                    Verdict::no(
                        "NoMatchingListenerHostname",
                        "no hostname of the route matches a listener's hostname",
                    )
                }
            }
        };
        parents.push(ParentVerdict {
            parent: parent.clone(),
            accepted,
            resolved_refs: None,
        });
    }
    if parents.is_empty() {
        return RoutePlan {
            definition: None,
            parents,
            attached,
            refused_refs: None,
        };
    }

    // The rules: refused as a whole when one asks for what ssegate does not
    // do, or a list is longer than the CRD allows (then none is built).
    let mut unsupported = super::limits::http_route(route);
    let mut refused = Vec::new();
    let mut rules = Vec::new();
    // Whether any rule restricts access (an ExternalAuth filter, a
    // StreamPolicy's access): then a refused route keeps its paths, closed.
    let mut restricts_access = false;
    let route_rules = match (&route.spec.rules, unsupported.is_empty()) {
        (_, false) => Vec::new(),
        (Some(rules), true) => rules.clone(),
        (None, true) => vec![HttpRouteRules::default()],
    };
    for (r, rule) in route_rules.iter().enumerate() {
        let matches = rule_matches(rule, r, &mut unsupported);
        let filters = rule_filters(rule, r, &mut unsupported);
        let cors = rule_cors(rule, r, &mut unsupported);
        let backends = rule_backends(rule, &key, grants, &mut refused);
        for (b, backend) in rule.backend_refs.iter().flatten().enumerate() {
            if backend.filters.as_ref().is_some_and(|f| !f.is_empty()) {
                unsupported.push(format!(
                    "spec.rules[{r}].backendRefs[{b}].filters: filters on a backendRef are not supported"
                ));
            }
        }
        let rule_settings = rule_timeouts(rule, r, settings.rule(r), &mut unsupported);
        // The StreamPolicies' access (Gateway, route, rule), then each
        // ExternalAuth filter's, all to be passed: the cheap checks an
        // operator put on the Gateway refuse before a subrequest is spent.
        let filter_access = super::external_auth::rule_access(rule, r, &key, grants, &mut unsupported, &mut refused);
        let access = ValidAccess::all_of(settings.rule_access(r).into_iter().chain(filter_access));
        restricts_access |= access.is_some() || super::external_auth::asks_for_auth(rule);
        for a in &attachments {
            let matches = matches
                .iter()
                .map(|m| ValidMatch {
                    path: m.path.clone(),
                    conditions: MatchConditions {
                        tls: Some(a.tls),
                        gateway: Some(a.gateway.clone()),
                        listener: Some(a.listener.clone()),
                        ..m.conditions.clone()
                    },
                })
                .collect();
            rules.push(ValidRule {
                hostnames: Some(a.hostnames.clone()),
                matches,
                backends: backends.clone(),
                settings: rule_settings,
                https_redirect: false,
                filters: filters.clone(),
                cors: cors.clone(),
                access: access.clone(),
            });
        }
    }
    // A refused route leaves the table, where a broader route of another
    // object could serve its paths. That is harmless unless the route
    // restricts who may reach them: then it stays, every rule closed (503),
    // so that nothing it guards is served open (not even by its own rules,
    // which would be served without what was refused).
    let mut held = false;
    if !unsupported.is_empty() {
        let mut message = unsupported.join("; ");
        held = restricts_access && !rules.is_empty();
        if held {
            let closed = ValidAccess::closed(vec![format!("HTTPRoute {key} is not accepted: {message}")]);
            for rule in &mut rules {
                rule.access = Some(closed.clone());
            }
            message.push_str(
                "; its rules restrict access, so its paths are held and every request is answered 503 rather than left to another route",
            );
        }
        for p in parents.iter_mut().filter(|p| p.accepted.is_true()) {
            p.accepted = Verdict::no("UnsupportedValue", message.clone());
        }
        attached.clear();
    }
    let any_accepted = parents.iter().any(|p| p.accepted.is_true());
    let definition = (any_accepted || held).then(|| RouteDefinition {
        kind: SourceKind::HttpRoute,
        key: key.clone(),
        generation: route.metadata.generation,
        created_millis,
        translated: Ok(ValidRoute {
            hostnames: Vec::new(),
            rules,
            max_concurrent_streams: settings.max_concurrent_streams,
            cors: None,
            tls: Vec::new(),
            strict_backends: true,
        }),
        warnings: Vec::new(),
    });
    let refused_refs = (!refused.is_empty()).then(|| {
        let reason = if refused.iter().any(|(r, _)| *r == "InvalidKind") {
            "InvalidKind"
        } else {
            "RefNotPermitted"
        };
        Verdict::no(
            reason,
            refused.into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("; "),
        )
    });
    RoutePlan {
        definition,
        parents,
        attached,
        refused_refs,
    }
}

/// The hostnames a route serves on a listener: `None` when they do not
/// meet. Empty means any host.
fn intersect(route: &[String], listener: Option<&str>) -> Option<Vec<String>> {
    let Some(l) = listener else {
        return Some(route.to_vec());
    };
    if route.is_empty() {
        return Some(vec![l.to_owned()]);
    }
    let mut out = Vec::new();
    for r in route {
        let hit = if r == l || covers(l, r) {
            Some(r.clone())
        } else if covers(r, l) {
            Some(l.to_owned())
        } else {
            None
        };
        if let Some(h) = hit.filter(|h| !out.contains(h)) {
            out.push(h);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Whether wildcard `pattern` (`*.example.com`) covers `host`, which may
/// itself be a longer wildcard. Gateway API wildcards match one or more
/// labels.
fn covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => false,
    }
}

/// `timeouts.request` and `timeouts.backendRequest`: both cap the whole
/// exchange as ssegate proxies it (one backend request per client
/// request), so the shorter one that is set applies; `0s` disables one.
fn rule_timeouts(
    rule: &HttpRouteRules,
    r: usize,
    mut settings: StreamSettings,
    unsupported: &mut Vec<String>,
) -> StreamSettings {
    let Some(t) = &rule.timeouts else { return settings };
    let mut cap: Option<std::time::Duration> = None;
    for (name, value) in [("request", &t.request), ("backendRequest", &t.backend_request)] {
        let Some(text) = value else { continue };
        match crate::api::parse_duration(text) {
            Ok(d) if d.is_zero() => {}
            Ok(d) => cap = Some(cap.map_or(d, |c| c.min(d))),
            Err(e) => unsupported.push(format!("spec.rules[{r}].timeouts.{name}: {e}")),
        }
    }
    if let Some(cap) = cap {
        settings.timeouts.request = Some(cap);
        settings.timeouts.response_headers = settings.timeouts.response_headers.min(cap);
    }
    settings
}

fn rule_matches(rule: &HttpRouteRules, r: usize, unsupported: &mut Vec<String>) -> Vec<ValidMatch> {
    let given = rule.matches.clone().unwrap_or_default();
    let given = if given.is_empty() {
        vec![HttpRouteRulesMatches::default()]
    } else {
        given
    };
    let mut out = Vec::new();
    for (m, matcher) in given.iter().enumerate() {
        let field = format!("spec.rules[{r}].matches[{m}]");
        let path = matcher.path.clone().unwrap_or_default();
        let kind = match path.r#type {
            None | Some(HttpRouteRulesMatchesPathType::PathPrefix) => PathMatchType::PathPrefix,
            Some(HttpRouteRulesMatchesPathType::Exact) => PathMatchType::Exact,
            Some(HttpRouteRulesMatchesPathType::RegularExpression) => {
                unsupported.push(format!("{field}.path: RegularExpression is not supported"));
                continue;
            }
            Some(HttpRouteRulesMatchesPathType::Unknown(other)) => {
                unsupported.push(format!("{field}.path: type {other:?} is not supported"));
                continue;
            }
        };
        let value = path.value.as_deref().unwrap_or("/");
        let path = match valid_path(kind, value) {
            Ok(p) => p,
            Err(msg) => {
                unsupported.push(format!("{field}.path.value: {msg}"));
                continue;
            }
        };
        let mut conditions = MatchConditions {
            method: matcher
                .method
                .as_ref()
                .and_then(|m| serde_json::to_value(m).ok())
                .and_then(|v| v.as_str().map(str::to_owned)),
            ..Default::default()
        };
        for h in matcher.headers.iter().flatten() {
            match &h.r#type {
                None | Some(HttpRouteRulesMatchesHeadersType::Exact) => {}
                Some(HttpRouteRulesMatchesHeadersType::RegularExpression) => {
                    unsupported.push(format!("{field}.headers: RegularExpression is not supported"));
                    continue;
                }
                Some(HttpRouteRulesMatchesHeadersType::Unknown(other)) => {
                    unsupported.push(format!("{field}.headers: type {other:?} is not supported"));
                    continue;
                }
            }
            let name = h.name.to_ascii_lowercase();
            // The first entry of a name counts; later ones are ignored.
            if !conditions.headers.iter().any(|(n, _)| *n == name) {
                conditions.headers.push((name, h.value.clone()));
            }
        }
        for q in matcher.query_params.iter().flatten() {
            match &q.r#type {
                None | Some(HttpRouteRulesMatchesQueryParamsType::Exact) => {}
                Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression) => {
                    unsupported.push(format!("{field}.queryParams: RegularExpression is not supported"));
                    continue;
                }
                Some(HttpRouteRulesMatchesQueryParamsType::Unknown(other)) => {
                    unsupported.push(format!("{field}.queryParams: type {other:?} is not supported"));
                    continue;
                }
            }
            if !conditions.query.iter().any(|(n, _)| *n == q.name) {
                conditions.query.push((q.name.clone(), q.value.clone()));
            }
        }
        out.push(ValidMatch { path, conditions });
    }
    out
}

fn edits(
    set: impl Iterator<Item = (String, String)>,
    add: impl Iterator<Item = (String, String)>,
    remove: impl Iterator<Item = String>,
    field: &str,
    unsupported: &mut Vec<String>,
) -> HeaderEdits {
    let mut pair = |name: &str, value: &str| match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
        (Ok(n), Ok(v)) => Some((n, v)),
        _ => {
            unsupported.push(format!("{field}: header {name:?} or its value is not valid"));
            None
        }
    };
    let set = set.filter_map(|(n, v)| pair(&n, &v)).collect();
    let add = add.filter_map(|(n, v)| pair(&n, &v)).collect();
    let remove = remove.filter_map(|n| HeaderName::try_from(n.as_str()).ok()).collect();
    HeaderEdits { set, add, remove }
}

fn rule_filters(rule: &HttpRouteRules, r: usize, unsupported: &mut Vec<String>) -> Option<Arc<RuleFilters>> {
    let list: &[HttpRouteRulesFilters] = rule.filters.as_deref().unwrap_or_default();
    if list.is_empty() {
        return None;
    }
    let mut out = RuleFilters::default();
    for (f, filter) in list.iter().enumerate() {
        let field = format!("spec.rules[{r}].filters[{f}]");
        match filter.r#type {
            FilterType::RequestHeaderModifier => {
                let m = filter.request_header_modifier.clone().unwrap_or_default();
                out.request_headers = Some(edits(
                    m.set.into_iter().flatten().map(|h| (h.name, h.value)),
                    m.add.into_iter().flatten().map(|h| (h.name, h.value)),
                    m.remove.into_iter().flatten(),
                    &field,
                    unsupported,
                ));
            }
            FilterType::ResponseHeaderModifier => {
                let m = filter.response_header_modifier.clone().unwrap_or_default();
                out.response_headers = Some(edits(
                    m.set.into_iter().flatten().map(|h| (h.name, h.value)),
                    m.add.into_iter().flatten().map(|h| (h.name, h.value)),
                    m.remove.into_iter().flatten(),
                    &field,
                    unsupported,
                ));
            }
            FilterType::RequestRedirect => {
                let Some(rr) = &filter.request_redirect else { continue };
                if let Some(RedirectScheme::Unknown(other)) = &rr.scheme {
                    unsupported.push(format!("{field}.requestRedirect.scheme: {other:?} is not supported"));
                    continue;
                }
                if let Some(RedirectPathType::Unknown(other)) = rr.path.as_ref().map(|p| &p.r#type) {
                    unsupported.push(format!("{field}.requestRedirect.path.type: {other:?} is not supported"));
                    continue;
                }
                let path = rr
                    .path
                    .as_ref()
                    .and_then(|p| path_change(&p.replace_full_path, &p.replace_prefix_match));
                out.redirect = Some(Redirect {
                    scheme: rr
                        .scheme
                        .as_ref()
                        .and_then(|s| serde_json::to_value(s).ok())
                        .and_then(|v| v.as_str().map(str::to_owned)),
                    hostname: rr.hostname.clone(),
                    path,
                    port: rr.port.and_then(|p| u16::try_from(p).ok()),
                    status: rr.status_code.and_then(|c| u16::try_from(c).ok()).unwrap_or(302),
                });
            }
            FilterType::UrlRewrite => {
                let Some(rw) = &filter.url_rewrite else { continue };
                if let Some(RewritePathType::Unknown(other)) = rw.path.as_ref().map(|p| &p.r#type) {
                    unsupported.push(format!("{field}.urlRewrite.path.type: {other:?} is not supported"));
                    continue;
                }
                let path = rw
                    .path
                    .as_ref()
                    .and_then(|p| path_change(&p.replace_full_path, &p.replace_prefix_match));
                out.rewrite = Some(Rewrite {
                    hostname: rw.hostname.clone(),
                    path,
                });
            }
            // Read by `rule_cors`.
            FilterType::Cors => {}
            // Read by `external_auth::rule_access`.
            FilterType::ExternalAuth => {}
            FilterType::RequestMirror | FilterType::ExtensionRef | FilterType::Unknown(_) => {
                let name = serde_json::to_value(&filter.r#type)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                unsupported.push(format!("{field}: filter {name} is not supported"));
            }
        }
    }
    Some(Arc::new(out))
}

/// The CORS filter, as the Route's CORS policy (`maxAge` in seconds).
fn rule_cors(rule: &HttpRouteRules, r: usize, unsupported: &mut Vec<String>) -> Option<Arc<crate::api::CorsPolicy>> {
    let (f, filter) = rule
        .filters
        .iter()
        .flatten()
        .enumerate()
        .find(|(_, f)| matches!(f.r#type, FilterType::Cors))?;
    let c = filter.cors.clone().unwrap_or_default();
    let spec = crate::api::CorsSpec {
        allow_origins: c.allow_origins.unwrap_or_default(),
        allow_credentials: c.allow_credentials.unwrap_or(false),
        allow_headers: c.allow_headers.unwrap_or_default(),
        allow_methods: c.allow_methods.unwrap_or_default(),
        expose_headers: c.expose_headers.unwrap_or_default(),
        max_age: Some(format!("{}s", c.max_age.unwrap_or(5).max(0))),
    };
    match spec.validate_gateway_api() {
        Ok(policy) => Some(Arc::new(policy)),
        Err(problems) => {
            for p in problems {
                unsupported.push(format!("spec.rules[{r}].filters[{f}].cors.{}: {}", p.field, p.message));
            }
            None
        }
    }
}

/// A redirect's or rewrite's path: the whole path, or the matched prefix.
fn path_change(full: &Option<String>, prefix: &Option<String>) -> Option<PathChange> {
    match (full, prefix) {
        (Some(full), _) => Some(PathChange::Full(full.clone())),
        (None, Some(prefix)) => Some(PathChange::Prefix(prefix.clone())),
        _ => None,
    }
}

fn rule_backends(
    rule: &HttpRouteRules,
    key: &ObjectKey,
    grants: &[ReferenceGrant],
    refused: &mut Vec<(&'static str, String)>,
) -> Vec<ValidBackend> {
    let mut out = Vec::new();
    for b in rule.backend_refs.iter().flatten() {
        let namespace = b.namespace.clone().unwrap_or_else(|| key.namespace.clone());
        let group = b.group.as_deref().unwrap_or("");
        let kind = b.kind.as_deref().unwrap_or("Service");
        let weight = b.weight.unwrap_or(1).max(0) as u32;
        let mut why = None;
        if !group.is_empty() || kind != "Service" {
            why = Some(("InvalidKind", format!("backend {kind} {} is not a Service", b.name)));
        } else if !permitted(grants, "HTTPRoute", &key.namespace, "", "Service", &b.name, &namespace) {
            why = Some((
                "RefNotPermitted",
                format!(
                    "Service {namespace}/{} is in another namespace and no ReferenceGrant allows it",
                    b.name
                ),
            ));
        }
        let port = b.port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0);
        if why.is_none() && port.is_none() {
            why = Some(("UnsupportedValue", format!("backend {} names no port", b.name)));
        }
        if let Some((reason, message)) = &why {
            refused.push((reason, message.clone()));
        }
        out.push(ValidBackend {
            service: b.name.clone(),
            namespace: (namespace != key.namespace).then_some(namespace),
            port: BackendPort::Number(port.unwrap_or(1)),
            weight,
            refused: why.map(|(_, m)| m),
        });
    }
    out
}
