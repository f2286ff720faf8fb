//! Builds a [`RoutingTable`] from [`Objects`]. Pure: no I/O, no clock.

use super::access::{resolve as resolve_access, AccessPolicy, Lookups};
use super::report::{reason, RouteReport, Verdict};
use super::table::HashMap;
use super::table::{PathTable, ResolvedBackend, ResolvedRule, RoutingTable};
use super::{EndpointSliceObject, ObjectKey, Objects, RouteDefinition, SourceKind};
use crate::api::{BackendPort, ValidBackend, ValidMatch};
use std::net::SocketAddr;
use std::sync::Arc;

/// Builds the table. Invalid definitions are left out with a report; they
/// never affect valid ones. When two definitions (Routes or Ingresses, in
/// any mix) claim the same host pattern and path match, the older one
/// (then the smaller `namespace/name`, then Route before Ingress) keeps it.
pub fn build_table(objects: &Objects, generation: u64) -> RoutingTable {
    let slices = index_slices(objects);
    let mut table = RoutingTable {
        generation,
        gateway_ports: objects.gateway_ports.clone(),
        ..Default::default()
    };

    let mut routes: Vec<&RouteDefinition> = objects
        .routes
        .values()
        .chain(objects.ingresses.values())
        .chain(objects.gateway_api.values())
        .collect();
    routes.sort_by(|a, b| (a.created_millis, &a.key, a.kind).cmp(&(b.created_millis, &b.key, b.kind)));

    // Who owns each (host pattern, path match).
    let mut owners: HashMap<(String, ValidMatch), (SourceKind, &ObjectKey)> = HashMap::default();
    let mut reports = Vec::with_capacity(routes.len());
    let mut resolved: HashMap<(String, String, BackendPort), Resolution> = HashMap::default();

    for route in routes {
        let valid = match &route.translated {
            Ok(v) => v,
            Err(errors) => {
                let message = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                reports.push(RouteReport {
                    kind: route.kind,
                    key: route.key.clone(),
                    generation: route.generation,
                    accepted: Verdict::no(reason::INVALID, message),
                    resolved_refs: Verdict::unknown(
                        reason::INVALID,
                        format!("not resolved: the {} is invalid", route.kind.as_str()),
                    ),
                    settings: Vec::new(),
                    warnings: route.warnings.clone(),
                });
                continue;
            }
        };
        let name: Arc<str> = Arc::from(route.key.to_string());
        let route_hosts: Vec<&str> = host_patterns(&valid.hostnames);

        let mut missing = Vec::new();
        let mut unready = Vec::new();
        let mut conflicts = Vec::new();
        let mut refused = Vec::new();
        let mut claimed = 0usize;
        let mut total = 0usize;
        // Each distinct policy of the object, resolved once (an Ingress's
        // rules share one).
        let zone: Arc<str> = Arc::from(format!("{} {}", route.kind.as_str(), route.key));
        let mut policies: Vec<(*const crate::api::ValidAccess, Option<Arc<AccessPolicy>>)> = Vec::new();
        let mut access_problems: Vec<String> = Vec::new();

        for (index, rule) in valid.rules.iter().enumerate() {
            let mut backends = Vec::with_capacity(rule.backends.len());
            let mut problems = Vec::new();
            for backend in &rule.backends {
                let namespace = backend.namespace.as_deref().unwrap_or(&route.key.namespace);
                if let Some(why) = &backend.refused {
                    problems.push(why.clone());
                    refused.push(why.clone());
                    let label: Arc<str> = Arc::from(format!("{namespace}/{}:{}", backend.service, backend.port));
                    backends.push(ResolvedBackend::failing(label, backend.weight, Arc::from(why.as_str())));
                    continue;
                }
                // Many Routes share a Service: resolve each Service port once per build.
                let cache_key = (namespace.to_owned(), backend.service.clone(), backend.port.clone());
                let resolution = resolved
                    .entry(cache_key)
                    .or_insert_with(|| resolve(objects, &slices, namespace, backend))
                    .clone();
                match resolution.map(|(label, endpoints)| ResolvedBackend::new(label, backend.weight, endpoints)) {
                    Ok(resolved) => {
                        if resolved.endpoints.is_empty() {
                            let msg = format!("Service {} has no ready endpoints", resolved.service);
                            problems.push(msg.clone());
                            unready.push(msg);
                        }
                        backends.push(resolved);
                    }
                    Err(msg) => {
                        if valid.strict_backends {
                            let label: Arc<str> =
                                Arc::from(format!("{namespace}/{}:{}", backend.service, backend.port));
                            backends.push(ResolvedBackend::failing(label, backend.weight, Arc::from(msg.as_str())));
                        }
                        problems.push(msg.clone());
                        missing.push(msg);
                    }
                }
            }
            let access = rule.access.as_ref().and_then(|valid_access| {
                let at = Arc::as_ptr(valid_access);
                if let Some((_, policy)) = policies.iter().find(|(p, _)| *p == at) {
                    return policy.clone();
                }
                let mut service = |ns: &str, name: &str, port: u16| -> Result<Arc<[std::net::SocketAddr]>, String> {
                    let backend = ValidBackend {
                        service: name.to_owned(),
                        namespace: None,
                        port: BackendPort::Number(port),
                        weight: 1,
                        refused: None,
                    };
                    let (label, endpoints) = resolve(objects, &slices, ns, &backend)?;
                    if endpoints.is_empty() {
                        return Err(format!("Service {label} has no ready endpoints"));
                    }
                    Ok(endpoints)
                };
                let mut lookups = Lookups {
                    secrets: &objects.secret_data,
                    service: &mut service,
                };
                let (policy, problems) = resolve_access(valid_access, &zone, &route.key.namespace, &mut lookups);
                access_problems.extend(problems);
                policies.push((at, policy.clone()));
                policy
            });
            let target = Arc::new(ResolvedRule::new(
                name.clone(),
                index,
                valid,
                backends,
                problems,
                access,
            ));

            let hosts = match &rule.hostnames {
                Some(own) => host_patterns(own),
                None => route_hosts.clone(),
            };
            for host in &hosts {
                for path in &rule.matches {
                    total += 1;
                    let slot = (host.to_string(), path.clone());
                    match owners.get(&slot) {
                        // An earlier rule of the same object already has it.
                        Some((kind, owner)) if *kind == route.kind && **owner == route.key => {}
                        Some((kind, owner)) => {
                            let shown = if host.is_empty() { "any host" } else { host };
                            conflicts.push(format!("{path} on {shown} is served by {} {owner}", kind.as_str()));
                        }
                        None => {
                            owners.insert(slot, (route.kind, &route.key));
                            paths_for(&mut table, host).insert(path, target.clone());
                            claimed += 1;
                        }
                    }
                }
            }
        }

        let mut bad_certs = Vec::new();
        for tls in &valid.tls {
            let namespace = tls.namespace.as_deref().unwrap_or(&route.key.namespace);
            let secret_key = ObjectKey::new(namespace, tls.secret_name.as_str());
            let Some(secret) = objects.secrets.get(&secret_key) else {
                bad_certs.push(format!("Secret {secret_key} not found"));
                continue;
            };
            if let Some(why) = &secret.problem {
                bad_certs.push(format!("Secret {secret_key} {why}"));
            }
            if let Some(pair) = &secret.pair {
                let pair = Arc::new(pair.clone());
                for host in &tls.hostnames {
                    // The oldest Route's certificate wins a server name.
                    table.certificates.entry(host.clone()).or_insert_with(|| pair.clone());
                    if route.kind == SourceKind::Gateway {
                        table
                            .gateway_certificates
                            .entry(route.key.to_string())
                            .or_default()
                            .entry(host.clone())
                            .or_insert_with(|| pair.clone());
                    }
                }
            }
        }

        let closed: Vec<&str> = {
            let mut all: Vec<&str> = policies
                .iter()
                .filter_map(|(_, p)| p.as_ref()?.closed.as_deref())
                .collect();
            all.sort_unstable();
            all.dedup();
            all
        };
        let accepted = if !closed.is_empty() {
            Verdict::no(
                reason::ACCESS_NOT_ENFORCED,
                format!(
                    "not served: its paths are held and every request is answered 503, because it restricts access in ways ssegate does not enforce: {}",
                    closed.join("; ")
                ),
            )
        } else if conflicts.is_empty() {
            Verdict::yes(
                reason::ACCEPTED,
                format!("{} is valid and serves traffic", route.kind.as_str()),
            )
        } else {
            Verdict::no(
                reason::CONFLICTED,
                format!(
                    "{} of {total} matches conflict with older objects and are not served ({}); {} served",
                    conflicts.len(),
                    conflicts.join("; "),
                    match claimed {
                        0 => "none is".to_owned(),
                        1 => "the other one is".to_owned(),
                        n => format!("the other {n} are"),
                    }
                ),
            )
        };
        missing.extend(access_problems);
        let resolved_refs = if !refused.is_empty() {
            Verdict::no(reason::REF_NOT_PERMITTED, refused.join("; "))
        } else if !missing.is_empty() {
            let all: Vec<String> = missing.into_iter().chain(bad_certs).collect();
            Verdict::no(reason::BACKEND_NOT_FOUND, all.join("; "))
        } else if !bad_certs.is_empty() {
            Verdict::no(
                reason::INVALID_CERTIFICATE_REF,
                format!(
                    "{}; plain HTTP is served, and other hosts' certificates are unaffected",
                    bad_certs.join("; ")
                ),
            )
        } else if !unready.is_empty() {
            Verdict::no(reason::NO_READY_ENDPOINTS, unready.join("; "))
        } else {
            Verdict::yes(reason::RESOLVED_REFS, "all backends have ready endpoints")
        };
        reports.push(RouteReport {
            kind: route.kind,
            key: route.key.clone(),
            generation: route.generation,
            accepted,
            resolved_refs,
            settings: valid.rules.iter().map(|r| r.settings.to_string()).collect(),
            warnings: route.warnings.clone(),
        });
    }

    reports.sort_by(|a, b| (&a.key, a.kind).cmp(&(&b.key, b.kind)));
    table.reports = reports;
    table.service_endpoints = resolved.into_values().filter_map(Result::ok).collect();
    table
}

/// Host patterns as table keys: `""` stands for any host.
fn host_patterns(hostnames: &[String]) -> Vec<&str> {
    if hostnames.is_empty() {
        vec![""]
    } else {
        hostnames.iter().map(String::as_str).collect()
    }
}

fn paths_for<'t>(table: &'t mut RoutingTable, host: &str) -> &'t mut PathTable {
    if host.is_empty() {
        &mut table.any_host
    } else if let Some(suffix) = host.strip_prefix('*') {
        table.wildcard_hosts.entry(suffix.to_owned()).or_default()
    } else {
        table.exact_hosts.entry(host.to_owned()).or_default()
    }
}

type SliceIndex<'a> = HashMap<(&'a str, &'a str), Vec<&'a EndpointSliceObject>>;

fn index_slices(objects: &Objects) -> SliceIndex<'_> {
    let mut index: SliceIndex<'_> = HashMap::default();
    for slice in objects.slices.values() {
        index
            .entry((slice.key.namespace.as_str(), slice.service.as_str()))
            .or_default()
            .push(slice);
    }
    index
}

/// A Service port's label and ready endpoints, or why it cannot be used.
type Resolution = Result<(Arc<str>, Arc<[SocketAddr]>), String>;

/// Resolves a backend to the ready endpoints of its Service port. The slice
/// port is found by the Service port's name, as kube-proxy does.
fn resolve(objects: &Objects, slices: &SliceIndex<'_>, namespace: &str, backend: &ValidBackend) -> Resolution {
    let label = format!("{namespace}/{}:{}", backend.service, backend.port);
    let service = objects
        .services
        .get(&ObjectKey::new(namespace, backend.service.as_str()))
        .ok_or_else(|| format!("Service {namespace}/{} not found", backend.service))?;
    let port = service
        .ports
        .iter()
        .find(|p| match &backend.port {
            BackendPort::Number(n) => p.port == *n,
            BackendPort::Name(name) => p.name == *name,
        })
        .ok_or_else(|| {
            let which = match &backend.port {
                BackendPort::Number(n) => format!("port {n}"),
                BackendPort::Name(name) => format!("port named {name:?}"),
            };
            format!("Service {namespace}/{} has no {which}", backend.service)
        })?;
    let mut endpoints: Vec<SocketAddr> = Vec::new();
    for slice in slices.get(&(namespace, backend.service.as_str())).into_iter().flatten() {
        let Some(slice_port) = slice.ports.iter().find(|p| p.name == port.name) else {
            continue;
        };
        for endpoint in slice.endpoints.iter().filter(|e| e.ready) {
            endpoints.extend(
                endpoint
                    .addresses
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, slice_port.port)),
            );
        }
    }
    endpoints.sort();
    endpoints.dedup();
    Ok((Arc::from(label), Arc::from(endpoints)))
}
