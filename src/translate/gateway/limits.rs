//! The Gateway API CRDs' list limits (`maxItems`, v1.6.3), checked again
//! in translation. In a cluster the apiserver enforces them before ssegate
//! sees an object; standalone mode reads HTTPRoutes and Gateways from files,
//! where only the folder's document limits apply. Both matter for cost: a
//! route's rules are multiplied by its matches and by the listeners it
//! attaches to, and a Gateway's listeners are checked against each other in
//! pairs. An object over a limit is refused whole, with every list at fault.

use crate::api::gateway::{Gateway, HttpRoute};

/// `spec.hostnames`, `spec.parentRefs`, `spec.rules`.
pub const ROUTE_HOSTNAMES: usize = 16;
pub const ROUTE_PARENT_REFS: usize = 32;
pub const ROUTE_RULES: usize = 16;
/// Per rule: `matches`, and per match `headers` and `queryParams`.
pub const RULE_MATCHES: usize = 64;
pub const MATCH_HEADERS: usize = 16;
pub const MATCH_QUERY_PARAMS: usize = 16;
/// Per rule: `backendRefs` and `filters`; per backendRef: `filters`.
pub const RULE_BACKEND_REFS: usize = 16;
pub const RULE_FILTERS: usize = 16;
/// Per header modifier: `add`, `set`, `remove` each.
pub const HEADER_EDITS: usize = 16;
/// Per CORS filter: `allowOrigins`, `allowHeaders`, `exposeHeaders`
/// (`allowMethods`: 9).
pub const CORS_LIST: usize = 64;
pub const CORS_METHODS: usize = 9;
/// `spec.listeners`, and per listener `tls.certificateRefs` and
/// `allowedRoutes.kinds`.
pub const GATEWAY_LISTENERS: usize = 64;
pub const LISTENER_CERTIFICATES: usize = 64;
pub const LISTENER_KINDS: usize = 8;

/// Adds a message when the list at `path` holds more than `max` items.
fn check<T>(list: Option<&Vec<T>>, max: usize, path: impl FnOnce() -> String, out: &mut Vec<String>) {
    let len = list.map_or(0, Vec::len);
    if len > max {
        out.push(format!("{}: {len} items, at most {max}", path()));
    }
}

/// Every list of `route` over its limit; empty when none is.
pub fn http_route(route: &HttpRoute) -> Vec<String> {
    let mut out = Vec::new();
    let spec = &route.spec;
    check(
        spec.hostnames.as_ref(),
        ROUTE_HOSTNAMES,
        || "spec.hostnames".into(),
        &mut out,
    );
    check(
        spec.parent_refs.as_ref(),
        ROUTE_PARENT_REFS,
        || "spec.parentRefs".into(),
        &mut out,
    );
    check(spec.rules.as_ref(), ROUTE_RULES, || "spec.rules".into(), &mut out);
    // Nested lists are looked at only within the limits above, so a
    // hostile object costs no more than a valid one to check.
    for (r, rule) in spec.rules.iter().flatten().take(ROUTE_RULES).enumerate() {
        let at = |field: &str| format!("spec.rules[{r}].{field}");
        check(rule.matches.as_ref(), RULE_MATCHES, || at("matches"), &mut out);
        for (m, matched) in rule.matches.iter().flatten().take(RULE_MATCHES).enumerate() {
            check(
                matched.headers.as_ref(),
                MATCH_HEADERS,
                || at(&format!("matches[{m}].headers")),
                &mut out,
            );
            check(
                matched.query_params.as_ref(),
                MATCH_QUERY_PARAMS,
                || at(&format!("matches[{m}].queryParams")),
                &mut out,
            );
        }
        check(
            rule.backend_refs.as_ref(),
            RULE_BACKEND_REFS,
            || at("backendRefs"),
            &mut out,
        );
        for (b, backend) in rule.backend_refs.iter().flatten().take(RULE_BACKEND_REFS).enumerate() {
            check(
                backend.filters.as_ref(),
                RULE_FILTERS,
                || at(&format!("backendRefs[{b}].filters")),
                &mut out,
            );
        }
        check(rule.filters.as_ref(), RULE_FILTERS, || at("filters"), &mut out);
        for (f, filter) in rule.filters.iter().flatten().take(RULE_FILTERS).enumerate() {
            let at = |field: &str| at(&format!("filters[{f}].{field}"));
            if let Some(edits) = &filter.request_header_modifier {
                check(
                    edits.add.as_ref(),
                    HEADER_EDITS,
                    || at("requestHeaderModifier.add"),
                    &mut out,
                );
                check(
                    edits.set.as_ref(),
                    HEADER_EDITS,
                    || at("requestHeaderModifier.set"),
                    &mut out,
                );
                check(
                    edits.remove.as_ref(),
                    HEADER_EDITS,
                    || at("requestHeaderModifier.remove"),
                    &mut out,
                );
            }
            if let Some(edits) = &filter.response_header_modifier {
                check(
                    edits.add.as_ref(),
                    HEADER_EDITS,
                    || at("responseHeaderModifier.add"),
                    &mut out,
                );
                check(
                    edits.set.as_ref(),
                    HEADER_EDITS,
                    || at("responseHeaderModifier.set"),
                    &mut out,
                );
                check(
                    edits.remove.as_ref(),
                    HEADER_EDITS,
                    || at("responseHeaderModifier.remove"),
                    &mut out,
                );
            }
            if let Some(cors) = &filter.cors {
                check(
                    cors.allow_origins.as_ref(),
                    CORS_LIST,
                    || at("cors.allowOrigins"),
                    &mut out,
                );
                check(
                    cors.allow_headers.as_ref(),
                    CORS_LIST,
                    || at("cors.allowHeaders"),
                    &mut out,
                );
                check(
                    cors.expose_headers.as_ref(),
                    CORS_LIST,
                    || at("cors.exposeHeaders"),
                    &mut out,
                );
                check(
                    cors.allow_methods.as_ref(),
                    CORS_METHODS,
                    || at("cors.allowMethods"),
                    &mut out,
                );
            }
        }
    }
    out
}

/// Every list of `gateway` over its limit; empty when none is.
pub fn gateway(gateway: &Gateway) -> Vec<String> {
    let mut out = Vec::new();
    let listeners = &gateway.spec.listeners;
    check(Some(listeners), GATEWAY_LISTENERS, || "spec.listeners".into(), &mut out);
    for (i, l) in listeners.iter().take(GATEWAY_LISTENERS).enumerate() {
        check(
            l.tls.as_ref().and_then(|t| t.certificate_refs.as_ref()),
            LISTENER_CERTIFICATES,
            || format!("spec.listeners[{i}].tls.certificateRefs"),
            &mut out,
        );
        check(
            l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()),
            LISTENER_KINDS,
            || format!("spec.listeners[{i}].allowedRoutes.kinds"),
            &mut out,
        );
    }
    out
}
