//! Who may reach a rule: the access policy every input kind is translated
//! into (issue 22), and the Route's own form of it (`spec.access`).
//!
//! The first duty is to fail closed: a restriction that an object asks for
//! and that ssegate cannot enforce as asked (an ingress-nginx annotation it
//! does not implement, a value it cannot read, a Secret it cannot find)
//! leaves the rule in the table, so that no other object's broader path
//! serves it, but answering 503: the answer ingress-nginx gives for a
//! location whose configuration it could not apply ("location denied").
//! 503 rather than 403 because it is the operator's configuration that is
//! at fault, not the client's credentials, and a 5xx is what monitoring
//! notices. So validation here never rejects: every problem becomes a
//! reason the rule is closed.

use crate::access::cidr::CidrSet;
use crate::access::client_limits::ClientLimits;
use crate::access::external_auth::{ExternalAuthConfig, ExternalAuthSpec};
use crate::access::htpasswd::{validate_realm, SecretType};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Who may reach a Route's paths. Every part that is set must let a
/// request through (or, with `satisfy: Any`, one of the source ranges,
/// basic and external authentication). A part that cannot be enforced as
/// written (an unreadable network, a missing Secret) closes the Route: its
/// paths answer 503 and its status says why; it is never served open.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessSpec {
    /// Client networks allowed (`10.0.0.0/8`, `2001:db8::/32`, or a bare
    /// address); others get 403. Empty: every network not denied. The client
    /// is the connection's peer, or the address trusted proxies
    /// (`--trusted-proxies`) report for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::networks")]
    pub allow_source_ranges: Vec<String>,
    /// Client networks refused with 403, before the allowed ones are looked at.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::networks")]
    pub deny_source_ranges: Vec<String>,
    /// HTTP basic authentication against an htpasswd Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuthSpec>,
    /// An authentication service asked about every request (oauth2-proxy,
    /// Authelia, Pomerium): a 2xx lets the request through, 401 and 403 are
    /// passed to the client, anything else (or no answer) is a 500. Event
    /// streams are asked about once, when they start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_auth: Option<ExternalAuthApi>,
    /// `All` (the default): every check set must pass. `Any`: one of the
    /// source ranges, basic and external authentication is enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub satisfy: Option<Satisfy>,
    /// Per-client-address limits, refused with 503 and `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_limits: Option<ClientLimitsSpec>,
}

/// How the access checks combine.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Satisfy {
    #[default]
    All,
    Any,
}

super::words::word_enum!(Satisfy { All, Any });
super::words::word_enum!(AuthSecretFormat { AuthFile, AuthMap });

/// Basic authentication.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuthSpec {
    /// A Secret in the Route's namespace holding the users and their
    /// password hashes (bcrypt, apr1, `{SHA}`, SHA-256/512-crypt, ...).
    #[schemars(schema_with = "super::schema::secret_name")]
    pub secret_name: String,
    /// `AuthFile` (the default): the Secret's key `auth` is an htpasswd
    /// file. `AuthMap`: each key is a user name, its value the hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AuthSecretFormat>,
    /// The realm browsers show in their login prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::short_text")]
    pub realm: Option<String>,
}

/// Where basic-auth users are in their Secret.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum AuthSecretFormat {
    #[default]
    AuthFile,
    AuthMap,
}

/// External authentication, as ingress-nginx's `auth-*` annotations say it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalAuthApi {
    /// The service's URL: `http(s)://host[:port]/path`. A host
    /// `name.namespace.svc[.cluster.local]` is a Service whose ready
    /// endpoints ssegate calls directly; any other host is resolved by DNS.
    /// The path and query may use nginx variables such as `$request_uri`.
    #[schemars(schema_with = "super::schema::url")]
    pub url: String,
    /// Method of the subrequest; GET by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::short_text")]
    pub method: Option<String>,
    /// Where a 401 sends the browser instead (302), with the original URL
    /// in the `rd` parameter: `https://$host/oauth2/start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::url")]
    pub signin_url: Option<String>,
    /// The name of that parameter; `rd` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::short_text")]
    pub signin_redirect_param: Option<String>,
    /// Headers of the service's answer copied to the upstream request
    /// (`X-Auth-Request-User`); the client's own copies are removed first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::header_names")]
    pub response_headers: Vec<String>,
    /// `X-Auth-Request-Redirect` sent to the service; the request URI by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::url")]
    pub request_redirect: Option<String>,
    /// Answers kept and reused for requests with the same key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<ExternalAuthCache>,
    /// Also send the service's `Set-Cookie` with 401, 403 and 500 answers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub always_set_cookie: bool,
    /// Connections kept open to the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<ExternalAuthKeepalive>,
}

/// The external auth cache.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalAuthCache {
    /// nginx variables naming whose answer it is: `$cookie__oauth2_proxy`,
    /// `$remote_user$http_authorization`.
    #[schemars(schema_with = "super::schema::short_text")]
    pub key: String,
    /// How long each answer is kept, by status, as nginx's
    /// `proxy_cache_valid`: `200 202 401 5m` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::short_text")]
    pub duration: Option<String>,
}

/// Keep-alive towards the external auth service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalAuthKeepalive {
    /// Idle connections kept per service (0, the default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<i64>,
    /// Requests one connection carries before it is closed (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<i64>,
    /// How long an idle connection is kept, such as `60s` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::duration")]
    pub timeout: Option<String>,
}

/// Per-client-address limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientLimitsSpec {
    /// Requests (for event streams: open streams) one client may have at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<i64>,
    /// Requests per second per client, with a burst of this times
    /// `burstMultiplier` served at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<i64>,
    /// Requests per minute per client, with the same burst rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<i64>,
    /// Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_multiplier: Option<i64>,
    /// Client networks the limits do not apply to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::networks")]
    pub exempt_source_ranges: Vec<String>,
}

/// A rule's access policy, validated. Pure data: credentials and the
/// external auth service are looked up when the table is built.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValidAccess {
    /// Why the rule must not be served at all, one line per cause. Not
    /// empty means every request is answered 503.
    pub closed: Vec<String>,
    /// Allowed client networks; `None`: any.
    pub allow: Option<CidrSet>,
    /// Refused client networks.
    pub deny: Option<CidrSet>,
    pub basic: Option<BasicAuthRef>,
    pub external: Option<ValidExternalAuth>,
    /// One passing check of source ranges, basic and external auth suffices.
    pub satisfy_any: bool,
    pub limits: Option<ClientLimits>,
    /// Networks the limits do not apply to.
    pub limits_exempt: Option<CidrSet>,
    /// Whose policy this is, when not the object's own (a StreamPolicy
    /// attached to it, `StreamPolicy namespace/name`): per-client limits
    /// are counted per owner.
    pub owner: Option<String>,
    /// The namespace its Secrets are in, when not the object's (the
    /// StreamPolicy's own).
    pub namespace: Option<String>,
    /// Another policy a request must pass as well: access restrictions add
    /// up, so that no policy can lift one that another sets.
    pub also: Option<Arc<ValidAccess>>,
}

/// A basic-auth Secret to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuthRef {
    pub secret_name: String,
    pub format: SecretType,
    pub realm: String,
}

/// An external auth policy, and a tag that changes whenever it does (for
/// the cache: answers given under another policy are not reused).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidExternalAuth {
    pub config: Arc<ExternalAuthConfig>,
    pub tag: u64,
    /// Why its service may not be called (a Gateway API `backendRef` that
    /// is not a Service, or in another namespace without a ReferenceGrant):
    /// every request is then answered 500, as when the service cannot be
    /// reached, rather than the rule closed (503), because a backend
    /// reference refused the same way answers 500 too.
    pub refused: Option<String>,
}

impl ValidAccess {
    /// A policy that refuses everything, for the reasons given.
    pub fn closed(reasons: Vec<String>) -> Arc<Self> {
        Arc::new(ValidAccess {
            closed: reasons,
            ..Default::default()
        })
    }

    /// Whether the rule is served at all.
    pub fn is_closed(&self) -> bool {
        !self.closed.is_empty()
    }

    /// Whether it restricts anything (an empty `access:` does not).
    pub fn restricts(&self) -> bool {
        self.is_closed()
            || self.allow.is_some()
            || self.deny.is_some()
            || self.basic.is_some()
            || self.external.is_some()
            || self.limits.is_some()
            || self.also.as_ref().is_some_and(|a| a.restricts())
    }

    /// This policy and every one it asks to pass as well, in order.
    pub fn chain(&self) -> impl Iterator<Item = &ValidAccess> {
        std::iter::successors(Some(self), |a| a.also.as_deref())
    }

    /// `policies` (each to be passed) as one chain, in order; `None` when
    /// none restricts anything.
    pub fn all_of(policies: impl IntoIterator<Item = Arc<ValidAccess>>) -> Option<Arc<ValidAccess>> {
        let mut list: Vec<Arc<ValidAccess>> = policies.into_iter().filter(|p| p.restricts()).collect();
        let mut chain: Option<Arc<ValidAccess>> = None;
        while let Some(last) = list.pop() {
            let mut link = (*last).clone();
            // Each given policy stands alone: what it asked to pass as well
            // comes after it.
            let mut tail = link.also.take();
            if let Some(rest) = chain.take() {
                tail = Some(match tail {
                    None => rest,
                    Some(t) => Self::all_of([t, rest]).expect("both restrict"),
                });
            }
            link.also = tail;
            chain = Some(Arc::new(link));
        }
        chain
    }
}

impl AccessSpec {
    /// The policy this spec asks for. Never fails: each problem, named by
    /// its field (`field` prefixes the names, such as `spec.access`), closes
    /// the policy.
    pub fn validate(&self, field: &str) -> ValidAccess {
        let mut out = ValidAccess::default();
        let mut closed = Vec::new();
        let networks = |list: &[String], name: &str, closed: &mut Vec<String>| -> Option<CidrSet> {
            if list.is_empty() {
                return None;
            }
            match CidrSet::parse_list(&list.join(",")) {
                // An empty set would allow nobody, or deny nobody: neither
                // is what a written list means, so it is refused.
                Ok(set) if set.is_empty() => {
                    closed.push(format!("{field}.{name}: lists no network"));
                    None
                }
                Ok(set) => Some(set),
                Err(e) => {
                    closed.push(format!("{field}.{name}: {e}"));
                    None
                }
            }
        };
        out.allow = networks(&self.allow_source_ranges, "allowSourceRanges", &mut closed);
        out.deny = networks(&self.deny_source_ranges, "denySourceRanges", &mut closed);
        if let Some(basic) = &self.basic_auth {
            let realm = basic.realm.clone().unwrap_or_default();
            if let Err(e) = validate_realm(&realm) {
                closed.push(format!("{field}.basicAuth.realm: {e}"));
            }
            if let Err(e) = super::valid_dns_subdomain(&basic.secret_name) {
                closed.push(format!("{field}.basicAuth.secretName: {e}"));
            }
            out.basic = Some(BasicAuthRef {
                secret_name: basic.secret_name.clone(),
                format: match basic.format.unwrap_or_default() {
                    AuthSecretFormat::AuthFile => SecretType::AuthFile,
                    AuthSecretFormat::AuthMap => SecretType::AuthMap,
                },
                realm,
            });
        }
        if let Some(api) = &self.external_auth {
            let spec = api.to_spec(&format!("{field}.externalAuth"), &mut closed);
            match ExternalAuthConfig::from_spec(&spec) {
                Ok(config) => {
                    out.external = Some(ValidExternalAuth {
                        tag: tag_of(&spec),
                        config: Arc::new(config),
                        refused: None,
                    })
                }
                Err(errors) => {
                    for (f, e) in errors {
                        closed.push(format!("{field}.externalAuth ({}): {e}", f.annotation()));
                    }
                }
            }
        }
        out.satisfy_any = self.satisfy == Some(Satisfy::Any);
        if let Some(limits) = &self.client_limits {
            match ClientLimits::new(
                positive(
                    limits.connections,
                    &format!("{field}.clientLimits.connections"),
                    &mut closed,
                ),
                positive(
                    limits.requests_per_second,
                    &format!("{field}.clientLimits.requestsPerSecond"),
                    &mut closed,
                ),
                positive(
                    limits.requests_per_minute,
                    &format!("{field}.clientLimits.requestsPerMinute"),
                    &mut closed,
                ),
                positive(
                    limits.burst_multiplier,
                    &format!("{field}.clientLimits.burstMultiplier"),
                    &mut closed,
                )
                .unwrap_or(crate::access::client_limits::DEFAULT_BURST_MULTIPLIER),
            ) {
                Ok(l) if l.is_unlimited() => {}
                Ok(l) => out.limits = Some(l),
                Err(e) => closed.push(format!("{field}.clientLimits: {e}")),
            }
            out.limits_exempt = networks(
                &limits.exempt_source_ranges,
                "clientLimits.exemptSourceRanges",
                &mut closed,
            );
        }
        out.closed = closed;
        out
    }
}

impl ExternalAuthApi {
    /// The fields as the external auth validation takes them.
    fn to_spec(&self, field: &str, closed: &mut Vec<String>) -> ExternalAuthSpec {
        let keepalive = self.keepalive.clone().unwrap_or_default();
        let timeout = keepalive
            .timeout
            .as_deref()
            .and_then(|t| match super::parse_duration(t) {
                Ok(d) => Some(d.as_secs() as i64),
                Err(e) => {
                    closed.push(format!("{field}.keepalive.timeout: {e}"));
                    None
                }
            });
        ExternalAuthSpec {
            url: self.url.clone(),
            method: self.method.clone(),
            signin_url: self.signin_url.clone(),
            signin_redirect_param: self.signin_redirect_param.clone(),
            response_headers: self.response_headers.clone(),
            request_redirect: self.request_redirect.clone(),
            cache_key: self.cache.as_ref().map(|c| c.key.clone()),
            cache_duration: self.cache.as_ref().and_then(|c| c.duration.clone()),
            always_set_cookie: self.always_set_cookie,
            keepalive_connections: keepalive.connections,
            keepalive_requests: keepalive.requests,
            keepalive_timeout_seconds: timeout,
        }
    }
}

/// A number that must be at least 1 when given.
fn positive(value: Option<i64>, field: &str, closed: &mut Vec<String>) -> Option<u32> {
    match value {
        None => None,
        Some(n) if (1..=u32::MAX as i64).contains(&n) => Some(n as u32),
        Some(n) => {
            closed.push(format!("{field}: {n} is not a positive whole number"));
            None
        }
    }
}

/// A hash of an external auth spec, stable within the process.
pub fn tag_of(spec: &impl std::fmt::Debug) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{spec:?}").hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> AccessSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_valid_spec_becomes_a_policy_with_every_part() {
        let v = spec(
            r#"
allowSourceRanges: ["10.0.0.0/8", "2001:db8::/32"]
denySourceRanges: ["10.1.0.0/16"]
basicAuth: {secretName: users, format: AuthMap, realm: "Staff only"}
externalAuth:
  url: http://oauth2-proxy.auth.svc/oauth2/auth
  signinUrl: https://$host/oauth2/start
  responseHeaders: [X-Auth-Request-User]
  cache: {key: $cookie__oauth2_proxy, duration: 200 1m}
  keepalive: {connections: 8, timeout: 30s}
satisfy: Any
clientLimits: {connections: 5, requestsPerSecond: 10, exemptSourceRanges: [127.0.0.1]}
"#,
        )
        .validate("spec.access");
        assert!(v.closed.is_empty(), "{:?}", v.closed);
        assert_eq!(v.allow.as_ref().unwrap().len(), 2);
        assert_eq!(v.deny.as_ref().unwrap().len(), 1);
        let basic = v.basic.as_ref().unwrap();
        assert_eq!(
            (basic.secret_name.as_str(), basic.format, basic.realm.as_str()),
            ("users", SecretType::AuthMap, "Staff only")
        );
        let ext = &v.external.as_ref().unwrap().config;
        assert_eq!(ext.keepalive().connections, 8);
        assert!(ext.cache().is_some());
        assert!(v.satisfy_any);
        let limits = v.limits.unwrap();
        assert_eq!(
            (limits.connections(), limits.rps(), limits.burst_multiplier()),
            (Some(5), Some(10), 5)
        );
        assert!(v.limits_exempt.is_some());
        assert!(v.restricts());
    }

    #[test]
    fn every_problem_closes_the_policy_and_names_its_field() {
        let v = spec(
            r#"
allowSourceRanges: ["10.0.0.0/33"]
denySourceRanges: [","]
basicAuth: {secretName: "Not_A_Name"}
externalAuth: {url: "ftp://x/"}
clientLimits: {connections: 0, requestsPerMinute: -1}
"#,
        )
        .validate("spec.access");
        let text = v.closed.join("\n");
        for field in [
            "spec.access.allowSourceRanges:",
            "spec.access.denySourceRanges: lists no network",
            "spec.access.basicAuth.secretName:",
            "spec.access.externalAuth (auth-url):",
            "spec.access.clientLimits.connections: 0 is not a positive whole number",
            "spec.access.clientLimits.requestsPerMinute: -1",
        ] {
            assert!(text.contains(field), "{field}\n{text}");
        }
        assert!(v.is_closed());
    }

    #[test]
    fn an_empty_spec_restricts_nothing() {
        let v = spec("{}").validate("spec.access");
        assert!(!v.restricts());
        let v = spec("clientLimits: {burstMultiplier: 3}").validate("spec.access");
        assert!(!v.restricts(), "no limit set: nothing to enforce");
    }
}
