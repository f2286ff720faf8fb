//! The HTTPRoute `ExternalAuth` filter (experimental channel, GEP-1494,
//! feature `HTTPRouteExternalAuth`) into a rule's access policy.
//!
//! With `protocol: HTTP` each filter becomes an external auth policy with
//! Gateway API's rules (see
//! [`ExternalAuthConfig::from_gateway_api`]): the subrequest goes to the
//! `backendRef` Service's ready endpoints, resolved as ssegate resolves a
//! Route's auth Service. A `backendRef` that is not a Service, or names
//! another namespace without a ReferenceGrant, is refused as a backend is
//! (`ResolvedRefs=False`), and the rule's requests are answered 500: the
//! filter fails closed, never skipped.
//!
//! What ssegate does not implement, `protocol: GRPC` (Envoy's ext_authz
//! over gRPC) and a body forwarded to the service (`forwardBody.maxSize`
//! above 0), and a value it cannot read, are refused with
//! `Accepted=False, UnsupportedValue` as every unsupported value of an
//! HTTPRoute is. Refused alone, the route would leave the table and a
//! broader route of another object could serve its paths with no
//! authentication at all; so a refused route whose rules restrict access
//! keeps its paths, closed (503): see [`super::http_route::plan`].

use super::grants::permitted;
use crate::access::external_auth::{ExternalAuthConfig, GatewayAuthSpec};
use crate::api::access::{tag_of, ValidExternalAuth};
use crate::api::gateway::http_route::{
    HttpRouteRules, HttpRouteRulesFiltersExternalAuth, HttpRouteRulesFiltersExternalAuthProtocol as Protocol,
    HttpRouteRulesFiltersType as FilterType,
};
use crate::api::ValidAccess;
use crate::model::ObjectKey;
use std::sync::Arc;

/// The access policies the `ExternalAuth` filters of rule `r` ask for, one
/// per filter, in order, each to be passed. What cannot be enforced is
/// added to `unsupported` and its policy is closed; a refused `backendRef`
/// is added to `refused` (reason, message) and its policy answers 500.
pub fn rule_access(
    rule: &HttpRouteRules,
    r: usize,
    key: &ObjectKey,
    grants: &[crate::api::gateway::ReferenceGrant],
    unsupported: &mut Vec<String>,
    refused: &mut Vec<(&'static str, String)>,
) -> Vec<Arc<ValidAccess>> {
    let mut out = Vec::new();
    for (f, filter) in rule.filters.iter().flatten().enumerate() {
        if filter.r#type != FilterType::ExternalAuth {
            continue;
        }
        let field = format!("spec.rules[{r}].filters[{f}].externalAuth");
        let access = match &filter.external_auth {
            None => Err(vec![format!("{field}: missing for an ExternalAuth filter")]),
            Some(auth) => filter_access(auth, &field, key, grants, refused),
        };
        out.push(match access {
            Ok(access) => Arc::new(access),
            Err(problems) => {
                unsupported.extend(problems.iter().cloned());
                ValidAccess::closed(problems)
            }
        });
    }
    out
}

/// Whether the rule has an `ExternalAuth` filter anywhere, its own or a
/// backendRef's (which ssegate refuses, as every backendRef filter): such a
/// rule restricts access, so a refused route keeps its paths closed.
pub fn asks_for_auth(rule: &HttpRouteRules) -> bool {
    let own = rule
        .filters
        .iter()
        .flatten()
        .any(|f| f.r#type == FilterType::ExternalAuth);
    let backends = rule
        .backend_refs
        .iter()
        .flatten()
        .flat_map(|b| b.filters.iter().flatten())
        .any(|f| f.r#type == crate::api::gateway::http_route::HttpRouteRulesBackendRefsFiltersType::ExternalAuth);
    own || backends
}

/// One filter's policy, or every reason it cannot be enforced.
fn filter_access(
    auth: &HttpRouteRulesFiltersExternalAuth,
    field: &str,
    key: &ObjectKey,
    grants: &[crate::api::gateway::ReferenceGrant],
    refused: &mut Vec<(&'static str, String)>,
) -> Result<ValidAccess, Vec<String>> {
    let mut problems = Vec::new();
    match &auth.protocol {
        Protocol::Http => {}
        Protocol::Grpc => problems.push(format!(
            "{field}.protocol: GRPC (Envoy's ext_authz over gRPC) is not supported, only HTTP"
        )),
        Protocol::Unknown(other) => problems.push(format!("{field}.protocol: {other:?} is not supported, only HTTP")),
    }
    if let Some(size) = auth.forward_body.as_ref().and_then(|b| b.max_size).filter(|s| *s != 0) {
        problems.push(format!(
            "{field}.forwardBody.maxSize: {size}: forwarding the request body to the auth service is not supported (0 or unset: no body)"
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    let backend = &auth.backend_ref;
    let namespace = backend.namespace.clone().unwrap_or_else(|| key.namespace.clone());
    let group = backend.group.as_deref().unwrap_or("");
    let kind = backend.kind.as_deref().unwrap_or("Service");
    let why_refused = if !group.is_empty() || kind != "Service" {
        Some((
            "InvalidKind",
            format!("{field}.backendRef: {kind} {} is not a Service", backend.name),
        ))
    } else if !permitted(
        grants,
        "HTTPRoute",
        &key.namespace,
        "",
        "Service",
        &backend.name,
        &namespace,
    ) {
        Some((
            "RefNotPermitted",
            format!(
                "{field}.backendRef: Service {namespace}/{} is in another namespace and no ReferenceGrant allows it",
                backend.name
            ),
        ))
    } else {
        None
    };
    let port = match (backend.port, &why_refused) {
        (Some(port), _) => i64::from(port),
        // A refused reference is never called, and another kind needs no
        // port: a stand-in keeps the rest of the filter validated.
        (None, Some(_)) => 80,
        (None, None) => return Err(vec![format!("{field}.backendRef: a Service needs a port")]),
    };
    let http = auth.http.clone().unwrap_or_default();
    let spec = GatewayAuthSpec {
        service: backend.name.clone(),
        namespace,
        port,
        path: http.path.unwrap_or_default(),
        allowed_headers: http.allowed_headers.unwrap_or_default(),
        allowed_response_headers: http.allowed_response_headers.unwrap_or_default(),
    };
    let config = ExternalAuthConfig::from_gateway_api(&spec).map_err(|errors| {
        errors
            .into_iter()
            .map(|(f, e)| format!("{field}.{}: {e}", f.path()))
            .collect::<Vec<_>>()
    })?;
    if let Some((reason, message)) = &why_refused {
        refused.push((reason, message.clone()));
    }
    Ok(ValidAccess {
        external: Some(ValidExternalAuth {
            config: Arc::new(config),
            tag: tag_of(&spec),
            refused: why_refused.map(|(_, message)| message),
        }),
        ..Default::default()
    })
}

#[cfg(test)]
#[path = "external_auth_tests.rs"]
mod tests;
