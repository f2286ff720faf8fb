//! `ssegate convert` (issue 14): an Ingress, with its ingress-nginx
//! annotations, as `ssegate.dev/v1alpha1` Routes that serve what ssegate
//! serves for the Ingress itself, so a user can move off the annotations.
//!
//! The Ingress is read by the same functions that serve it
//! ([`super::ingress::ingress_settings`], [`super::ingress::ingress_paths`]),
//! so the paths, the `defaultBackend` as `/` on each host, the TLS entries
//! and the settings cannot drift apart. A Route's hostnames apply to all of
//! its rules, so each host of the Ingress becomes a Route of its own: named
//! like the Ingress when it has one host, else `<ingress>-<host slug>`
//! (`events-a-example-com`, `events-wildcard-example-com` for
//! `*.example.com`, `events-any-host` for rules without a host), or
//! `<ingress>-<n>` (1-based, in the Ingress's host order) when those names
//! would collide or be too long. Paths of one host that go to the same
//! backend share a rule; every Ingress setting is a Route-level field.
//!
//! What a Route cannot say is never dropped silently: a named Service port
//! is resolved from the Service given alongside (else an error naming the
//! Ingress, the path and the port), the per-Ingress stream limit becomes a
//! comment, and what the Ingress would be refused for (regular-expression
//! paths, resource backends) is an error, as is an access restriction that
//! ssegate does not enforce (the Ingress itself is not served then).
//! Every annotation note becomes a comment above each Route.
//!
//! `convert_yaml.rs` does the same for multi-document YAML text. Pure: no
//! I/O, no kube client.

use super::annotation_outcome::Outcome;
use super::ingress::{covers, describe, ingress_paths, ingress_settings, IngressPath};
use super::ingress_annotations::NGINX;
use crate::api::{
    BackendPort, BackendRef, PathMatch, ProxyBuffering, Route, RouteMatch, RouteRule, RouteSpec, RouteTls, SseSettings,
    Timeouts, ValidPath,
};
use crate::model::{ObjectKey, ServiceObject};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Longest Route name (a Kubernetes object name, a DNS subdomain).
pub const MAX_ROUTE_NAME: usize = 253;
/// The Route validation's limits, which an Ingress (1024 paths) can exceed.
const MAX_RULES: usize = 64;
const MAX_MATCHES: usize = 64;
/// The annotation older Ingresses name their class with.
const LEGACY_CLASS: &str = "kubernetes.io/ingress.class";

/// One Route, with the comments to print above it.
#[derive(Debug, Clone)]
pub struct ConvertedRoute {
    /// Lines without the leading `# `.
    pub comments: Vec<String>,
    pub route: Route,
}

/// Why (part of) an Ingress cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Ingress {ingress}: {message}")]
pub struct ConvertError {
    /// `namespace/name`, or where the document is when it has no name.
    pub ingress: String,
    pub message: String,
}

/// The Routes for `ingress`. `services` are the Services given alongside,
/// for named ports; `default_namespace` stands in for an absent namespace
/// when looking them up (the Routes keep the Ingress's namespace as given).
pub fn ingress_to_routes(
    ingress: &Ingress,
    services: &BTreeMap<ObjectKey, ServiceObject>,
    default_namespace: &str,
) -> Result<Vec<ConvertedRoute>, Vec<ConvertError>> {
    let meta = &ingress.metadata;
    let namespace = meta.namespace.as_deref().unwrap_or(default_namespace);
    let Some(name) = meta.name.as_deref().filter(|n| !n.is_empty()) else {
        return Err(vec![ConvertError {
            ingress: format!("in namespace {namespace}"),
            message: "metadata.name is required".into(),
        }]);
    };
    let key = ObjectKey::new(namespace, name);
    let fail = |message: String| ConvertError {
        ingress: key.to_string(),
        message,
    };
    let annotations = meta.annotations.clone().unwrap_or_default();
    let spec = ingress.spec.clone().unwrap_or_default();
    let settings = ingress_settings(&annotations, namespace);
    // What ssegate would not serve open is not converted into a Route that
    // would: the same message as the Ingress's own status.
    let closed: Vec<ConvertError> = settings
        .annotated
        .notes
        .iter()
        .filter(|n| matches!(n.outcome, Outcome::Closed(_)))
        .map(|n| fail(format!("{}: {}; not converted", n.annotation, describe(&n.outcome))))
        .collect();
    if !closed.is_empty() {
        return Err(closed);
    }
    let layout = ingress_paths(&spec, &settings.annotated).map_err(|errors| {
        errors
            .iter()
            .map(|e| {
                fail(format!(
                    "{e}; ssegate would not serve this Ingress either, so it is not converted"
                ))
            })
            .collect::<Vec<_>>()
    })?;

    // Named ports become numbers, as the table resolves them: the
    // Service's port of that name.
    let mut errors = Vec::new();
    let mut resolved_notes = Vec::new();
    let mut paths: Vec<(IngressPath, u16)> = Vec::with_capacity(layout.paths.len());
    for p in layout.paths {
        let number = match &p.backend.port {
            BackendPort::Number(n) => *n,
            BackendPort::Name(port) => {
                let service = services.get(&ObjectKey::new(namespace, p.backend.service.as_str()));
                match service.and_then(|s| s.ports.iter().find(|sp| sp.name == *port)) {
                    Some(sp) => {
                        resolved_notes.push((
                            p.host.clone(),
                            format!(
                                "{}: port {port:?} of Service {} is {} (from the Service given); a Route names ports by number",
                                p.field, p.backend.service, sp.port
                            ),
                        ));
                        sp.port
                    }
                    None => {
                        let why = match service {
                            None => format!("Service {namespace}/{} is not in the input", p.backend.service),
                            Some(_) => format!("Service {namespace}/{} has no port named {port:?}", p.backend.service),
                        };
                        errors.push(fail(format!(
                            "{}.backend.service.port.name: {port:?} is a named port, and a Route needs its number: {why}; add the Service to the input (kubectl get service -n {namespace} {} -o yaml) or write port.number",
                            p.field, p.backend.service
                        )));
                        continue;
                    }
                }
            }
        };
        paths.push((p, number));
    }
    resolved_notes.dedup();

    let hosts: Vec<&str> = layout
        .hosts
        .iter()
        .map(String::as_str)
        .filter(|h| paths.iter().any(|(p, _)| p.host == *h))
        .collect();
    let names = route_names(name, &hosts);

    // Comments every Route of this Ingress carries.
    let mut common = Vec::new();
    for note in &settings.annotated.notes {
        let redirect = [format!("{NGINX}ssl-redirect"), format!("{NGINX}force-ssl-redirect")];
        let text = match &note.outcome {
            Outcome::Applied(_) if redirect.contains(&note.annotation) => {
                "converted as httpsRedirect on the Routes of the hosts it redirects".to_owned()
            }
            outcome => describe(outcome),
        };
        common.push(format!("{}: {text}", note.annotation));
    }
    common.extend(settings.problems.iter().cloned());
    let class = spec
        .ingress_class_name
        .as_deref()
        .map(|c| ("spec.ingressClassName", c))
        .or_else(|| annotations.get(LEGACY_CLASS).map(|c| (LEGACY_CLASS, c.as_str())));
    if let Some((field, class)) = class {
        common.push(format!(
            "{field}: {class} is not carried over: Routes have no class, and every ssegate that watches the namespace serves them"
        ));
    }
    if let (Some(n), true) = (settings.max_concurrent_streams, hosts.len() > 1) {
        common.push(format!(
            "maxConcurrentStreams: the Ingress's {n} open streams were shared by its {} hosts; each of these Routes has {n} of its own",
            hosts.len()
        ));
    }

    let annotated = &settings.annotated;
    let timeouts = annotated.timeouts.clone();
    let sse = annotated.sse.clone();
    let template = RouteSpec {
        hostnames: Vec::new(),
        rules: Vec::new(),
        proxy_buffering: annotated.proxy_buffering.unwrap_or(ProxyBuffering::Auto),
        buffer_size: annotated.buffer_size.clone(),
        timeouts: (timeouts != Timeouts::default()).then_some(timeouts),
        sse: (sse != SseSettings::default()).then_some(sse),
        load_balancing: annotated.load_balancing,
        max_concurrent_streams: annotated.max_concurrent_streams,
        cors: annotated.cors.clone(),
        tls: Vec::new(),
        https_redirect: false,
        access: annotated.access.clone(),
    };

    // Each certificate name goes to one Route, in the Ingress's order, so
    // which entry serves a name is as when the Ingress is served: the Route
    // of that host, else of a host the (wildcard) name covers, else the first.
    let owner = |name: &str| -> usize {
        hosts
            .iter()
            .position(|h| *h == name)
            .or_else(|| hosts.iter().position(|h| !h.is_empty() && covers(name, h)))
            .unwrap_or(0)
    };

    let mut out = Vec::with_capacity(hosts.len());
    for (i, host) in hosts.iter().enumerate() {
        let mut comments = vec![match hosts.len() {
            1 => format!("Converted from Ingress {key} by ssegate convert."),
            n => format!(
                "Converted from Ingress {key} by ssegate convert: {} (Route {} of {n}, one per host).",
                shown(host),
                i + 1
            ),
        }];
        comments.extend(common.iter().cloned());
        comments.extend(
            resolved_notes
                .iter()
                .filter(|(h, _)| h.as_str() == *host)
                .map(|(_, n)| n.clone()),
        );

        // The first path with a host and match serves it; later ones never do.
        let mut seen: HashMap<&ValidPath, &str> = HashMap::new();
        let mut rules: Vec<((String, u16), Vec<&ValidPath>)> = Vec::new();
        let mut redirects = false;
        for (p, port) in paths.iter().filter(|(p, _)| p.host == *host) {
            if let Some(first) = seen.get(&p.path) {
                comments.push(format!(
                    "{} ({}) is not converted: {first} has the same match and serves it, as when the Ingress is served",
                    p.field, p.path
                ));
                continue;
            }
            seen.insert(&p.path, &p.field);
            redirects |= p.https_redirect;
            let backend = (p.backend.service.clone(), *port);
            match rules.iter_mut().find(|(b, m)| *b == backend && m.len() < MAX_MATCHES) {
                Some((_, matches)) => matches.push(&p.path),
                None => rules.push((backend, vec![&p.path])),
            }
        }
        if rules.len() > MAX_RULES {
            errors.push(fail(format!(
                "{}: {} rules (one per backend, at most {MAX_MATCHES} paths each), and a Route holds at most {MAX_RULES}: split the Ingress",
                shown(host),
                rules.len()
            )));
            continue;
        }

        let mut tls: Vec<RouteTls> = Vec::new();
        for entry in &layout.tls {
            let names: Vec<String> = entry.hostnames.iter().filter(|n| owner(n) == i).cloned().collect();
            if !names.is_empty() {
                tls.push(RouteTls {
                    hostnames: names,
                    secret_name: entry.secret_name.clone(),
                });
            }
        }

        let spec = RouteSpec {
            hostnames: if host.is_empty() {
                Vec::new()
            } else {
                vec![host.to_string()]
            },
            rules: rules
                .into_iter()
                .map(|((service, port), matches)| RouteRule {
                    matches: matches
                        .into_iter()
                        .map(|p| RouteMatch {
                            path: Some(PathMatch {
                                kind: p.kind,
                                value: p.value.clone(),
                            }),
                        })
                        .collect(),
                    backend_refs: vec![BackendRef {
                        name: service,
                        port: port.into(),
                        weight: 1,
                    }],
                    ..Default::default()
                })
                .collect(),
            tls,
            https_redirect: redirects,
            ..template.clone()
        };
        // Never print a Route that would be refused.
        if let Err(problems) = spec.validate() {
            let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
            errors.push(fail(format!(
                "the Route for {} would be invalid: {}",
                shown(host),
                problems.join("; ")
            )));
            continue;
        }
        let mut route = Route::new(&names[i], spec);
        route.metadata = ObjectMeta {
            name: Some(names[i].clone()),
            namespace: meta.namespace.clone(),
            labels: meta.labels.clone().filter(|l| !l.is_empty()),
            ..Default::default()
        };
        out.push(ConvertedRoute { comments, route });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn shown(host: &str) -> String {
    if host.is_empty() {
        "any host (rules without a host)".into()
    } else {
        format!("host {host}")
    }
}

/// `<name>` for one host; `<name>-<host slug>` for several, or `<name>-<n>`
/// when slugs collide or a name would be too long.
fn route_names(name: &str, hosts: &[&str]) -> Vec<String> {
    if hosts.len() <= 1 {
        return vec![name.to_owned()];
    }
    let slug = |host: &str| -> String {
        if host.is_empty() {
            return "any-host".into();
        }
        let (wild, rest) = match host.strip_prefix("*.") {
            Some(rest) => ("wildcard-", rest),
            None => ("", host),
        };
        format!("{wild}{}", rest.replace('.', "-"))
    };
    let by_host: Vec<String> = hosts.iter().map(|h| format!("{name}-{}", slug(h))).collect();
    let distinct: HashSet<&String> = by_host.iter().collect();
    if distinct.len() == by_host.len() && by_host.iter().all(|n| n.len() <= MAX_ROUTE_NAME) {
        by_host
    } else {
        (1..=hosts.len()).map(|n| format!("{name}-{n}")).collect()
    }
}

/// Prints Routes as YAML documents, each with its comments above it.
pub fn render(routes: &[ConvertedRoute]) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for r in routes {
        out.push_str("---\n");
        for line in &r.comments {
            out.push_str("# ");
            out.push_str(&line.replace(['\n', '\r'], " "));
            out.push('\n');
        }
        out.push_str(&serde_yaml::to_string(&r.route)?);
    }
    Ok(out)
}

#[cfg(test)]
#[path = "ingress_to_route_tests.rs"]
mod tests;
