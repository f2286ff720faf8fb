//! A rule's access policy as the proxy applies it: the validated policy
//! ([`ValidAccess`]) with what it refers to looked up when the table is
//! built: the basic-auth Secret's users, and the ready endpoints of the
//! external auth Service. Pure data; the decisions are in
//! `crate::proxy::guard`, over the sans-I/O pieces of `crate::access`.

use super::{ObjectKey, SecretData};
use crate::access::cidr::CidrSet;
use crate::access::client_limits::ClientLimits;
use crate::access::external_auth::ExternalAuthConfig;
use crate::access::htpasswd::Credentials;
use crate::api::ValidAccess;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Who may reach one rule.
#[derive(Debug, Default)]
pub struct AccessPolicy {
    /// Why the rule is not served: every request is answered 503. The
    /// reasons are for status and logs; clients are told no more than that
    /// the route is closed.
    pub closed: Option<Arc<str>>,
    /// Allowed client networks; `None`: any not denied.
    pub allow: Option<CidrSet>,
    pub deny: Option<CidrSet>,
    pub basic: Option<BasicAuth>,
    pub external: Option<ExternalAuth>,
    /// One passing check of source ranges, basic and external auth suffices.
    pub satisfy_any: bool,
    pub limits: Option<Limits>,
    /// Whose policy this is (`Kind namespace/name`): per-client limits are
    /// counted per zone, across rules and table swaps.
    pub zone: Arc<str>,
    /// Another policy the request must pass as well (a StreamPolicy's,
    /// attached to the route or its Gateway).
    pub also: Option<Arc<AccessPolicy>>,
}

/// Basic authentication with the users of its Secret.
#[derive(Debug)]
pub struct BasicAuth {
    pub credentials: Arc<Credentials>,
    /// `WWW-Authenticate` for a 401.
    pub challenge: String,
}

/// External authentication.
#[derive(Debug)]
pub struct ExternalAuth {
    pub config: Arc<ExternalAuthConfig>,
    /// When the URL's host names a Service (`name.namespace.svc...`): its
    /// ready endpoints, or why it cannot be used (each request is then
    /// answered 500, as when ingress-nginx cannot reach the service).
    /// `None`: the host is resolved by DNS.
    pub service: Option<Result<Arc<[SocketAddr]>, Arc<str>>>,
    /// The auth cache's zone: the owner and the policy's tag, so that an
    /// answer given under an earlier policy is never reused.
    pub cache_zone: Arc<str>,
}

/// Per-client limits.
#[derive(Debug)]
pub struct Limits {
    pub limits: ClientLimits,
    /// Client networks the limits do not apply to.
    pub exempt: Option<CidrSet>,
}

impl AccessPolicy {
    /// Whether this policy, or one it asks to pass as well, asks an
    /// external auth service.
    pub fn calls_auth_service(&self) -> bool {
        self.external.is_some() || self.also.as_ref().is_some_and(|a| a.calls_auth_service())
    }

    /// Whether any check needs the client's address.
    pub fn needs_client_address(&self) -> bool {
        self.allow.is_some() || self.deny.is_some() || self.limits.is_some() || self.external.is_some()
    }
}

/// Looks up the ready endpoints of a Service port by number (namespace,
/// name, port), or says why there are none.
pub type ServiceLookup<'a> = dyn FnMut(&str, &str, u16) -> Result<Arc<[SocketAddr]>, String> + 'a;

/// What a policy refers to, looked up by [`resolve`].
pub struct Lookups<'a> {
    pub secrets: &'a BTreeMap<ObjectKey, Arc<SecretData>>,
    pub service: &'a mut ServiceLookup<'a>,
}

/// The policy of `valid` (and of each one it asks to pass as well) for the
/// object `zone` in `namespace`, and the problems to report besides a
/// closed policy (an external auth Service that cannot be found). `None`
/// when it lets everyone in. When any policy of the chain is closed, the
/// first says so, with every reason: the rule is closed.
pub fn resolve(
    valid: &ValidAccess,
    zone: &Arc<str>,
    namespace: &str,
    lookups: &mut Lookups<'_>,
) -> (Option<Arc<AccessPolicy>>, Vec<String>) {
    if !valid.restricts() {
        return (None, Vec::new());
    }
    let mut problems = Vec::new();
    let mut links: Vec<AccessPolicy> = valid
        .chain()
        .map(|link| resolve_one(link, zone, namespace, lookups, &mut problems))
        .collect();
    let closed: Vec<&str> = links.iter().filter_map(|p| p.closed.as_deref()).collect();
    if !closed.is_empty() {
        let all = Arc::from(closed.join("; "));
        links[0].closed = Some(all);
    }
    let mut next: Option<Arc<AccessPolicy>> = None;
    for mut link in links.into_iter().rev() {
        link.also = next;
        next = Some(Arc::new(link));
    }
    (next, problems)
}

/// One policy of a chain.
fn resolve_one(
    valid: &ValidAccess,
    zone: &Arc<str>,
    namespace: &str,
    lookups: &mut Lookups<'_>,
    problems: &mut Vec<String>,
) -> AccessPolicy {
    let zone: Arc<str> = match &valid.owner {
        Some(owner) => Arc::from(owner.as_str()),
        None => zone.clone(),
    };
    let mut closed: Vec<String> = valid.closed.clone();
    let namespace = valid.namespace.as_deref().unwrap_or(namespace);
    let basic = valid.basic.as_ref().and_then(|b| {
        let key = ObjectKey::new(namespace, b.secret_name.as_str());
        let found = lookups
            .secrets
            .get(&key)
            .ok_or_else(|| format!("basic authentication: Secret {key} not found (an Opaque Secret is read)"))
            .and_then(|s| {
                s.credentials(b.format)
                    .map_err(|e| format!("basic authentication: Secret {key}: {e}"))
            });
        match found {
            Ok(credentials) => Some(BasicAuth {
                credentials,
                challenge: crate::access::htpasswd::www_authenticate(&b.realm),
            }),
            Err(why) => {
                closed.push(why);
                None
            }
        }
    });
    let external = valid.external.as_ref().map(|e| {
        let refused = e.refused.as_ref().map(|why| {
            let why = format!("external authentication: {why}; its requests are answered 500");
            problems.push(why.clone());
            Err(Arc::from(why))
        });
        let service = refused.or_else(|| {
            e.config.url().fixed_authority().and_then(|authority| {
                let (name, ns) = cluster_service(authority.host())?;
                let port = e.config.url().fixed_port().unwrap_or(80);
                Some((lookups.service)(ns, name, port).map_err(|why| {
                    let why = format!("external authentication: {why}; its requests are answered 500");
                    problems.push(why.clone());
                    Arc::from(why)
                }))
            })
        });
        ExternalAuth {
            config: e.config.clone(),
            service,
            cache_zone: Arc::from(format!("{zone}#{:016x}", e.tag)),
        }
    });
    AccessPolicy {
        closed: (!closed.is_empty()).then(|| Arc::from(closed.join("; "))),
        allow: valid.allow.clone(),
        deny: valid.deny.clone(),
        basic,
        external,
        satisfy_any: valid.satisfy_any,
        limits: valid.limits.map(|limits| Limits {
            limits,
            exempt: valid.limits_exempt.clone(),
        }),
        zone,
        also: None,
    }
}

/// `(name, namespace)` of a host that names a Service: `name.namespace.svc`,
/// optionally followed by the cluster domain (`.cluster.local`). Such
/// hosts are answered from the Service's endpoints, as the cluster's DNS
/// would answer them, without needing it.
pub fn cluster_service(host: &str) -> Option<(&str, &str)> {
    let mut labels = host.split('.');
    let name = labels.next().filter(|l| !l.is_empty())?;
    let namespace = labels.next().filter(|l| !l.is_empty())?;
    (labels.next()? == "svc").then_some((name, namespace))
}

impl std::fmt::Display for AccessPolicy {
    /// One line for `/debug/routes`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(why) = &self.closed {
            return write!(f, "closed, every request answered 503: {why}");
        }
        let mut parts = Vec::new();
        if let Some(allow) = &self.allow {
            parts.push(format!("allow {allow}"));
        }
        if let Some(deny) = &self.deny {
            parts.push(format!("deny {deny}"));
        }
        if let Some(basic) = &self.basic {
            parts.push(format!("basic auth ({} users)", basic.credentials.len()));
        }
        if let Some(e) = &self.external {
            let target = match &e.service {
                None => "by DNS".to_owned(),
                Some(Ok(endpoints)) => format!("{} endpoints", endpoints.len()),
                Some(Err(why)) => format!("unusable: {why}"),
            };
            let url = e
                .config
                .url()
                .fixed_uri()
                .map_or("(a URL with variables)".to_owned(), |u| u.to_string());
            let flavour = match e.config.flavour() {
                crate::access::external_auth::Flavour::IngressNginx => "",
                crate::access::external_auth::Flavour::GatewayApi => {
                    " (Gateway API ExternalAuth, client path appended)"
                }
            };
            parts.push(format!("external auth {url}{flavour} ({target})"));
        }
        if let Some(l) = &self.limits {
            let mut limits = Vec::new();
            if let Some(n) = l.limits.connections() {
                limits.push(format!("{n} at once"));
            }
            if let Some(n) = l.limits.rps() {
                limits.push(format!("{n}/s"));
            }
            if let Some(n) = l.limits.rpm() {
                limits.push(format!("{n}/min"));
            }
            parts.push(format!("per client {}", limits.join(", ")));
        }
        let join = if self.satisfy_any { " or " } else { ", " };
        f.write_str(&parts.join(join))?;
        // Whose each policy is, when it is not the object's own.
        if self.zone.starts_with("StreamPolicy ") {
            write!(f, " (from {})", self.zone)?;
        }
        if let Some(also) = &self.also {
            write!(f, "; and {also}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::external_auth::GatewayAuthSpec;
    use crate::api::access::ValidExternalAuth;

    /// A Gateway API filter's policy: its Service is looked up by the host
    /// and port of its URL, and a refused reference is never looked up but
    /// answers 500, with the reason among the problems.
    #[test]
    fn a_gateway_filters_service_is_looked_up_unless_its_reference_is_refused() {
        let spec = GatewayAuthSpec {
            service: "ext-auth".into(),
            namespace: "auth".into(),
            port: 8080,
            ..Default::default()
        };
        let config = Arc::new(ExternalAuthConfig::from_gateway_api(&spec).unwrap());
        let valid = |refused: Option<&str>| ValidAccess {
            external: Some(ValidExternalAuth {
                config: config.clone(),
                tag: 7,
                refused: refused.map(str::to_owned),
            }),
            ..Default::default()
        };
        let secrets = BTreeMap::new();
        let mut asked = Vec::new();
        let addr: SocketAddr = "10.0.0.9:9000".parse().unwrap();
        let mut service = |ns: &str, name: &str, port: u16| {
            asked.push(format!("{ns}/{name}:{port}"));
            Ok(Arc::from(vec![addr]))
        };
        let mut lookups = Lookups {
            secrets: &secrets,
            service: &mut service,
        };
        let zone: Arc<str> = Arc::from("HTTPRoute apps/guarded");
        let (policy, problems) = resolve(&valid(None), &zone, "apps", &mut lookups);
        let policy = policy.unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let external = policy.external.as_ref().unwrap();
        assert_eq!(external.service.as_ref().unwrap().as_ref().unwrap()[..], [addr]);
        assert!(policy.calls_auth_service());
        assert_eq!(
            policy.to_string(),
            "external auth http://ext-auth.auth.svc:8080/ (Gateway API ExternalAuth, client path appended) (1 endpoints)"
        );
        let (policy, problems) = resolve(
            &valid(Some("Service auth/ext-auth needs a ReferenceGrant")),
            &zone,
            "apps",
            &mut lookups,
        );
        let why =
            "external authentication: Service auth/ext-auth needs a ReferenceGrant; its requests are answered 500";
        assert_eq!(problems, [why]);
        let external = policy.as_ref().unwrap().external.as_ref().unwrap();
        assert_eq!(external.service.as_ref().unwrap().as_ref().unwrap_err().as_ref(), why);
        assert_eq!(asked, ["auth/ext-auth:8080"], "the refused Service is never looked up");
    }

    #[test]
    fn service_hosts_are_recognised_with_or_without_the_cluster_domain() {
        assert_eq!(cluster_service("oauth2-proxy.auth.svc"), Some(("oauth2-proxy", "auth")));
        assert_eq!(
            cluster_service("oauth2-proxy.auth.svc.cluster.local"),
            Some(("oauth2-proxy", "auth"))
        );
        assert_eq!(cluster_service("auth.example.com"), None);
        assert_eq!(cluster_service("localhost"), None);
        assert_eq!(cluster_service("a.b"), None);
        assert_eq!(cluster_service("..svc"), None);
    }
}
