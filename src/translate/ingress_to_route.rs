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
//! [`convert_documents`] does the same for multi-document YAML text: other
//! kinds are passed through unchanged, so the output can replace the input.
//! Pure: no I/O, no kube client.

use super::annotation_outcome::Outcome;
use super::ingress::{covers, describe, ingress_paths, ingress_settings, IngressPath};
use super::ingress_annotations::NGINX;
use crate::api::{
    BackendPort, BackendRef, PathMatch, ProxyBuffering, Route, RouteMatch, RouteRule, RouteSpec, RouteTls, SseSettings,
    Timeouts, ValidPath,
};
use crate::model::{ObjectKey, ServiceObject};
use crate::sources::file::Limits;
use crate::sources::scan;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

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

/// What [`convert_documents`] made of its input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Converted {
    /// The output: Routes in place of each Ingress, other documents as given.
    pub yaml: String,
    pub ingresses: usize,
    pub routes: usize,
    /// Documents passed through unchanged.
    pub passed: usize,
}

/// One problem with the input, located by its source and document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// `file.yaml` (or `-` for stdin) and the 1-based document, when known.
    pub source: String,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}

enum Item {
    /// Verbatim text, with no document marker.
    Text(String),
    Ingress(Box<Ingress>, String),
}

/// Converts every `networking.k8s.io/v1` Ingress in `inputs` (pairs of a
/// name for messages and YAML text, several documents each, and `v1 List`s
/// such as `kubectl get ingress -o yaml` prints) into Routes, and passes
/// every other document through unchanged. Services anywhere in the input
/// resolve named ports. All or nothing: on any problem, every problem is
/// returned and no output. The folder source's `limits` apply.
pub fn convert_documents(
    inputs: &[(String, String)],
    limits: &Limits,
    default_namespace: &str,
) -> Result<Converted, Vec<InputError>> {
    let mut errors = Vec::new();
    let mut items = Vec::new();
    let mut services = BTreeMap::new();
    for (source, text) in inputs {
        let spans = scan::split_documents(text);
        if spans.len() > limits.max_documents {
            errors.push(InputError {
                source: source.clone(),
                message: format!(
                    "holds {} documents; at most {} are read from one input",
                    spans.len(),
                    limits.max_documents
                ),
            });
            continue;
        }
        for (d, span) in spans.iter().enumerate() {
            let at = format!("{source}: document {}", d + 1);
            let mut error = |message: String| {
                errors.push(InputError {
                    source: at.clone(),
                    message,
                })
            };
            if span.text.len() > limits.max_document_bytes {
                error(format!(
                    "is {} bytes; documents of at most {} bytes are read (etcd's limit for one object)",
                    span.text.len(),
                    limits.max_document_bytes
                ));
                continue;
            }
            if let Err(line) = scan::check_depth(span.text, limits.max_depth) {
                error(format!(
                    "nests deeper than {} levels at line {}; not parsed",
                    limits.max_depth,
                    span.first_line + line
                ));
                continue;
            }
            let value: serde_yaml::Value = match serde_yaml::from_str(span.text) {
                Ok(v) => v,
                Err(e) => {
                    error(format!("not YAML: {e}"));
                    continue;
                }
            };
            if value.is_null() {
                continue;
            }
            let is_list = value.get("apiVersion").and_then(|v| v.as_str()) == Some("v1")
                && value.get("kind").and_then(|v| v.as_str()) == Some("List");
            if is_list {
                let items_of = value
                    .get("items")
                    .and_then(|v| v.as_sequence())
                    .cloned()
                    .unwrap_or_default();
                for (n, item) in items_of.into_iter().enumerate() {
                    let at = format!("{at}, items[{n}]");
                    match classify(item, None, &at, &mut services, default_namespace) {
                        Ok(item) => items.push(item),
                        Err(message) => errors.push(InputError { source: at, message }),
                    }
                }
            } else {
                match classify(value, Some(span.text), &at, &mut services, default_namespace) {
                    Ok(item) => items.push(item),
                    Err(message) => error(message),
                }
            }
        }
    }

    let mut out = Converted::default();
    let mut names: HashMap<(String, String), String> = HashMap::new();
    for item in items {
        match item {
            Item::Text(text) => {
                out.yaml.push_str("---\n");
                out.yaml.push_str(&text);
                out.passed += 1;
            }
            Item::Ingress(ingress, at) => match ingress_to_routes(&ingress, &services, default_namespace) {
                Ok(routes) => {
                    out.ingresses += 1;
                    for r in &routes {
                        let meta = &r.route.metadata;
                        let key = (
                            meta.namespace.clone().unwrap_or_else(|| default_namespace.to_owned()),
                            meta.name.clone().unwrap_or_default(),
                        );
                        if let Some(other) = names.insert(key.clone(), at.clone()) {
                            errors.push(InputError {
                                source: at.clone(),
                                message: format!(
                                    "Route {}/{} is also made from {other}: rename one of the Ingresses",
                                    key.0, key.1
                                ),
                            });
                        }
                    }
                    out.routes += routes.len();
                    match render(&routes) {
                        Ok(text) => out.yaml.push_str(&text),
                        Err(e) => errors.push(InputError {
                            source: at,
                            message: format!("cannot print the Routes: {e}"),
                        }),
                    }
                }
                Err(problems) => errors.extend(problems.into_iter().map(|p| InputError {
                    source: at.clone(),
                    message: p.to_string(),
                })),
            },
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// What one document is: an Ingress to convert, or text to pass on (a
/// Service is also kept for named ports). `text` is the document as
/// written, when it is one (not a List item).
fn classify(
    value: serde_yaml::Value,
    text: Option<&str>,
    at: &str,
    services: &mut BTreeMap<ObjectKey, ServiceObject>,
    default_namespace: &str,
) -> Result<Item, String> {
    let api_version = value.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default();
    let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or_default();
    match (api_version, kind) {
        ("networking.k8s.io/v1", "Ingress") => {
            let ingress: Ingress = serde_yaml::from_value(value).map_err(|e| format!("Ingress: {e}"))?;
            Ok(Item::Ingress(Box::new(ingress), at.to_owned()))
        }
        (other, "Ingress") => Err(format!(
            "{other} Ingress is not converted: only networking.k8s.io/v1 (Kubernetes 1.19+) is; kubectl get returns that version"
        )),
        ("v1", "Service") => {
            // A Service that does not read is passed on all the same; it
            // just resolves no port.
            if let Ok(svc) = serde_yaml::from_value::<k8s_openapi::api::core::v1::Service>(value.clone()) {
                if let Ok(object) = crate::sources::convert::service(&svc, default_namespace) {
                    services.insert(object.key.clone(), object);
                }
            }
            passed(value, text)
        }
        _ => passed(value, text),
    }
}

fn passed(value: serde_yaml::Value, text: Option<&str>) -> Result<Item, String> {
    match text {
        Some(text) => Ok(Item::Text(without_markers(text))),
        None => serde_yaml::to_string(&value)
            .map(Item::Text)
            .map_err(|e| format!("cannot print: {e}")),
    }
}

/// A document's text without its `---` line and a closing `...`, ending
/// with a newline.
fn without_markers(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    // `---` may carry a comment or the document's start after it.
    if let Some(rest) = lines.first().and_then(|l| l.strip_prefix("---")) {
        if rest.is_empty() || rest.starts_with([' ', '\t']) {
            match rest.trim() {
                "" => {
                    lines.remove(0);
                }
                rest => lines[0] = rest,
            }
        }
    }
    if lines.last().is_some_and(|l| l.trim_end() == "...") {
        lines.pop();
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
#[path = "ingress_to_route_tests.rs"]
mod tests;
