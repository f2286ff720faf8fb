//! A Gateway's listeners as ssegate serves them, and what their status
//! says. ssegate's data plane has one plain-HTTP listener and one TLS
//! listener: every `HTTP` listener of every Gateway of its class is served
//! on the first, every `HTTPS` one on the second, whatever port the
//! listener names (the port is the one clients reach through ssegate's
//! Service). Other protocols are not supported.

use super::grants::{permitted, selects};
use crate::api::gateway::gateway::{
    GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From,
    GatewayListenersAllowedRoutesNamespacesSelector as Selector,
};
use crate::api::gateway::{Gateway, ReferenceGrant};
use crate::api::{valid_hostname, ValidTls};
use crate::model::report::Verdict;
use crate::model::{ObjectKey, SecretObject};
use std::collections::BTreeMap;

/// Which namespaces' routes a listener takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Namespaces {
    Same,
    All,
    Selector(Selector),
}

/// One listener that can take HTTPRoutes.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub gateway: ObjectKey,
    pub name: String,
    pub port: i32,
    /// `HTTPS`: served on the TLS listener.
    pub tls: bool,
    /// Lower-case; `None` matches every host.
    pub hostname: Option<String>,
    pub namespaces: Namespaces,
    /// Whether its `allowedRoutes.kinds` admit HTTPRoute.
    pub takes_http_routes: bool,
    /// Accepted and programmed: routes may attach.
    pub usable: bool,
}

impl Listener {
    /// Whether a route in `namespace` (with `labels`) may attach here.
    pub fn admits_namespace(&self, namespace: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
        match &self.namespaces {
            Namespaces::Same => namespace == self.gateway.namespace,
            Namespaces::All => true,
            Namespaces::Selector(s) => labels.is_some_and(|l| selects(s, l)),
        }
    }
}

/// A listener's status before routes are counted.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerVerdict {
    pub name: String,
    pub supported_kinds: Vec<String>,
    pub accepted: Verdict,
    pub programmed: Verdict,
    pub resolved_refs: Verdict,
    pub conflicted: Verdict,
    /// HTTPRoutes attached, filled in once every route is translated.
    pub attached_routes: i32,
}

/// What a Gateway of ssegate's class amounts to.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayPlan {
    pub key: ObjectKey,
    pub generation: Option<i64>,
    pub listeners: Vec<Listener>,
    pub verdicts: Vec<ListenerVerdict>,
    /// The listeners' certificates, for the TLS listener's SNI table.
    pub tls: Vec<ValidTls>,
    pub accepted: Verdict,
    pub programmed: Verdict,
}

/// Reads a Gateway of ssegate's class.
pub fn plan(
    gateway: &Gateway,
    key: ObjectKey,
    grants: &[ReferenceGrant],
    secrets: &BTreeMap<ObjectKey, SecretObject>,
) -> GatewayPlan {
    let mut listeners = Vec::new();
    let mut verdicts = Vec::new();
    let mut tls = Vec::new();
    let over = super::limits::gateway(gateway);
    if !over.is_empty() {
        // Listeners are checked in pairs: none is looked at past the limit.
        let message = over.join("; ");
        return GatewayPlan {
            key,
            generation: gateway.metadata.generation,
            listeners,
            verdicts,
            tls,
            accepted: Verdict::no("Invalid", message.clone()),
            programmed: Verdict::no("Invalid", message),
        };
    }
    let all = &gateway.spec.listeners;
    for l in all {
        let (listener, verdict, certificates) = one(l, all, &key, grants, secrets);
        listeners.push(listener);
        verdicts.push(verdict);
        tls.extend(certificates);
    }
    let usable = listeners.iter().filter(|l| l.usable).count();
    let refused = verdicts.iter().filter(|v| !v.accepted.is_true()).count();
    let (accepted, programmed) = if usable > 0 || all.is_empty() {
        (
            // The spec's reason when some listeners are refused and the
            // Gateway is accepted for the others.
            if refused > 0 {
                Verdict::yes(
                    "ListenersNotValid",
                    format!("the Gateway is served by ssegate; {refused} of its listeners cannot be"),
                )
            } else {
                Verdict::yes("Accepted", "the Gateway is served by ssegate")
            },
            Verdict::yes(
                "Programmed",
                "HTTP listeners are served on ssegate's plain listener, HTTPS ones on its TLS listener",
            ),
        )
    } else {
        (
            Verdict::no("ListenersNotValid", "no listener can be served"),
            Verdict::no("Invalid", "no listener can be served"),
        )
    };
    GatewayPlan {
        key,
        generation: gateway.metadata.generation,
        listeners,
        verdicts,
        tls,
        accepted,
        programmed,
    }
}

fn one(
    l: &GatewayListeners,
    all: &[GatewayListeners],
    gateway: &ObjectKey,
    grants: &[ReferenceGrant],
    secrets: &BTreeMap<ObjectKey, SecretObject>,
) -> (Listener, ListenerVerdict, Vec<ValidTls>) {
    let hostname = l.hostname.as_ref().map(|h| h.to_ascii_lowercase());
    let is_tls = l.protocol == "HTTPS";
    let protocol_ok = l.protocol == "HTTP" || is_tls;

    // allowedRoutes: namespaces default to Same, kinds to HTTPRoute.
    let namespaces = match l.allowed_routes.as_ref().and_then(|a| a.namespaces.as_ref()) {
        Some(n) => match n.from {
            Some(From::All) => Namespaces::All,
            Some(From::Selector) => Namespaces::Selector(n.selector.clone().unwrap_or_default()),
            _ => Namespaces::Same,
        },
        None => Namespaces::Same,
    };
    let kinds = l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref());
    let (supported, unsupported): (Vec<String>, Vec<String>) = match kinds {
        None => (vec!["HTTPRoute".to_owned()], Vec::new()),
        Some(kinds) => {
            let (mut yes, mut no) = (Vec::new(), Vec::new());
            for k in kinds {
                let ours = k.kind == "HTTPRoute" && k.group.as_deref().is_none_or(|g| g == super::GROUP);
                if ours {
                    yes.push(k.kind.clone())
                } else {
                    no.push(k.kind.clone())
                }
            }
            (yes, no)
        }
    };

    let mut resolved_refs = Verdict::yes("ResolvedRefs", "references resolved");
    if !unsupported.is_empty() {
        resolved_refs = Verdict::no(
            "InvalidRouteKinds",
            format!(
                "route kinds {} are not supported; ssegate takes HTTPRoute",
                unsupported.join(", ")
            ),
        );
    }

    // Certificates.
    let mut certificates = Vec::new();
    if is_tls && protocol_ok {
        let refs = l
            .tls
            .as_ref()
            .and_then(|t| t.certificate_refs.as_deref())
            .unwrap_or_default();
        if refs.is_empty() {
            resolved_refs = Verdict::no("InvalidCertificateRef", "an HTTPS listener needs a certificateRef");
        }
        for r in refs {
            let kind_ok =
                r.group.as_deref().is_none_or(str::is_empty) && r.kind.as_deref().is_none_or(|k| k == "Secret");
            let namespace = r.namespace.clone().unwrap_or_else(|| gateway.namespace.clone());
            if !kind_ok {
                resolved_refs = Verdict::no(
                    "InvalidCertificateRef",
                    format!("certificateRef {} is not a Secret", r.name),
                );
                continue;
            }
            if !permitted(grants, "Gateway", &gateway.namespace, "", "Secret", &r.name, &namespace) {
                resolved_refs = Verdict::no(
                    "RefNotPermitted",
                    format!(
                        "Secret {namespace}/{} is in another namespace and no ReferenceGrant allows it",
                        r.name
                    ),
                );
                continue;
            }
            let key = ObjectKey::new(namespace.as_str(), r.name.as_str());
            match secrets.get(&key) {
                Some(s) if s.pair.is_some() => {}
                Some(s) => {
                    resolved_refs = Verdict::no(
                        "InvalidCertificateRef",
                        format!(
                            "Secret {key} {}",
                            s.problem.as_deref().unwrap_or("holds no certificate")
                        ),
                    );
                    continue;
                }
                None => {
                    resolved_refs = Verdict::no("InvalidCertificateRef", format!("Secret {key} not found"));
                    continue;
                }
            }
            certificates.push(ValidTls {
                // No hostname: the certificate for any server name.
                hostnames: vec![hostname.clone().unwrap_or_else(|| "*".to_owned())],
                secret_name: r.name.clone(),
                namespace: Some(namespace),
            });
        }
    }

    let hostname_ok = hostname.as_deref().is_none_or(|h| valid_hostname(h).is_ok());
    let accepted = if !protocol_ok {
        Verdict::no(
            "UnsupportedProtocol",
            format!(
                "protocol {} is not supported; ssegate serves HTTP and HTTPS",
                l.protocol
            ),
        )
    } else if !hostname_ok {
        Verdict::no("UnsupportedValue", "the hostname is not a valid host name")
    } else {
        Verdict::yes("Accepted", "the listener is served")
    };
    let conflicted = conflict(l, all);
    let usable = accepted.is_true() && !conflicted.is_true();
    // A certificate that does not resolve leaves the listener unprogrammed
    // (the spec's `Invalid`), though routes still attach to it and count.
    let certificate_refused = is_tls && !resolved_refs.is_true() && resolved_refs.reason != "InvalidRouteKinds";
    let programmed = if !usable {
        Verdict::no("Invalid", "the listener is not served")
    } else if certificate_refused {
        Verdict::no("Invalid", format!("no certificate: {}", resolved_refs.message))
    } else {
        Verdict::yes("Programmed", "the listener is served")
    };
    let listener = Listener {
        gateway: gateway.clone(),
        name: l.name.clone(),
        port: l.port,
        tls: is_tls,
        hostname,
        namespaces,
        takes_http_routes: !supported.is_empty(),
        usable,
    };
    let verdict = ListenerVerdict {
        name: l.name.clone(),
        supported_kinds: supported,
        accepted,
        programmed,
        resolved_refs,
        conflicted,
        attached_routes: 0,
    };
    (listener, verdict, certificates)
}

/// Listeners sharing a port conflict when their protocols differ, or when
/// they also share a hostname.
fn conflict(l: &GatewayListeners, all: &[GatewayListeners]) -> Verdict {
    for other in all.iter().filter(|o| o.name != l.name && o.port == l.port) {
        if other.protocol != l.protocol {
            return Verdict::yes(
                "ProtocolConflict",
                format!(
                    "listener {} uses port {} with protocol {}",
                    other.name, l.port, other.protocol
                ),
            );
        }
        if other.hostname == l.hostname {
            return Verdict::yes(
                "HostnameConflict",
                format!("listener {} uses the same port and hostname", other.name),
            );
        }
    }
    Verdict::no("NoConflicts", "no conflict with other listeners")
}
