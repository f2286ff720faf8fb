//! A rule's access policy applied to one request (issue 22), after it is
//! routed and before it goes upstream, on both protocols.
//!
//! The order is nginx's: per-client limits first (its preaccess phase),
//! then the access checks (source ranges, basic authentication, external
//! authentication), combined as `satisfy` says. The decisions are the
//! sans-I/O pieces of [`crate::access`] and [`combine`] below; what is done
//! here is the waiting: a slow password hash runs on a blocking thread (a
//! bounded number at once), and the external auth subrequest goes through
//! [`super::auth_client`], or is answered from the auth cache, one
//! subrequest per key at a time. An event stream is authorised once, when
//! it starts: an auth outage later never touches it.

use super::auth_client::{AuthClientError, AuthScheme, AuthTarget, PoolSettings, Resolution, Timeouts};
use super::reply::local_reply;
use super::{Conn, Proxy, ProxyBody};
use crate::access::auth_cache::{Lookup, Shared};
use crate::access::client_limits::{Permit, Which};
use crate::access::external_auth::{
    self, auth_request, cache_key, cacheable_answer, decide, decide_failure, AuthFailure, Decision, ExternalAuthConfig,
    Flavour,
};
use crate::access::htpasswd::parse_basic;
use crate::access::nginx_vars::{ClientRequestFacts, Scheme};
use crate::model::access::{AccessPolicy, BasicAuth, ExternalAuth};
use crate::model::ResolvedRule;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, HOST, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::{debug, warn};

/// A request's target and headers before the rule's filters (header edits,
/// URL rewrite) changed them: what an external auth service is told about,
/// as ingress-nginx's `$request_uri` and Envoy's `ext_authz` (which runs
/// before the route's rewrites) tell it.
pub(super) struct OriginalRequest {
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
}

/// What a request that passed takes along: its limit slot (held until its
/// answer ends) and the auth service's cookies for the client.
#[derive(Default)]
pub(super) struct Granted {
    /// One per policy of the chain that limits clients.
    pub permits: Vec<Permit>,
    pub cookies: Option<(Arc<ExternalAuthConfig>, Vec<HeaderValue>)>,
}

/// A refusal: the answer, and the `reason` label of
/// `ssegate_access_refused_total`.
pub(super) struct Refused {
    pub response: Response<ProxyBody>,
    pub reason: &'static str,
}

/// One check's result.
pub(super) enum Verdict {
    /// Not configured: neither allows nor refuses.
    Absent,
    Pass,
    /// Refused, with this answer: a 401 (or the sign-in redirect that
    /// stands for one), a 403, or an error that ends the request whatever
    /// `satisfy` says (a 500 from external auth).
    Fail(Refusal),
}

pub(super) struct Refusal {
    pub kind: FailKind,
    pub response: Box<Response<ProxyBody>>,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FailKind {
    Unauthorized,
    Forbidden,
    Error,
}

/// Combines the checks as nginx's access phase does. With `satisfy all`,
/// the first failure answers. With `satisfy any`, the first pass lets the
/// request through; if none passes, a 401 wins over a 403 (so browsers can
/// still log in), and an error answers at once either way.
pub(super) fn combine(satisfy_any: bool, verdicts: impl IntoIterator<Item = Verdict>) -> Result<(), Refusal> {
    let mut refused: Option<Refusal> = None;
    for verdict in verdicts {
        match verdict {
            Verdict::Absent => {}
            Verdict::Pass if satisfy_any => return Ok(()),
            Verdict::Pass => {}
            Verdict::Fail(r) if r.kind == FailKind::Error || !satisfy_any => return Err(r),
            Verdict::Fail(r) => {
                let better = match &refused {
                    None => true,
                    Some(old) => old.kind != FailKind::Unauthorized && r.kind == FailKind::Unauthorized,
                };
                if better {
                    refused = Some(r);
                }
            }
        }
    }
    match refused {
        Some(r) => Err(r),
        None => Ok(()),
    }
}

/// The source-range check: denied networks first, then allowed ones.
pub(super) fn source_verdict(policy: &AccessPolicy, client: IpAddr, route: &str) -> Verdict {
    if policy.allow.is_none() && policy.deny.is_none() {
        return Verdict::Absent;
    }
    let denied = policy.deny.as_ref().is_some_and(|d| d.contains(client))
        || policy.allow.as_ref().is_some_and(|a| !a.contains(client));
    if denied {
        Verdict::Fail(Refusal {
            kind: FailKind::Forbidden,
            response: Box::new(local_reply(
                StatusCode::FORBIDDEN,
                format!("ssegate: route {route} does not serve your address\n"),
            )),
            reason: "source_range",
        })
    } else {
        Verdict::Pass
    }
}

impl Proxy {
    /// Applies `target`'s access policy to `req`, which comes from `conn`
    /// and `client` (the address settled through trusted proxies).
    /// On success the request may be forwarded, with what it takes along;
    /// the upstream request's headers are already edited (the auth
    /// service's response headers set, the client's copies removed).
    /// `original` is the request as the client sent it, when the rule's
    /// filters have edited `req` since: what an auth service is told about.
    pub(super) async fn guard<B>(
        &self,
        req: &mut Request<B>,
        original: Option<&OriginalRequest>,
        conn: &Conn,
        client: IpAddr,
        target: &ResolvedRule,
        policy: &AccessPolicy,
    ) -> Result<Granted, Refused> {
        // Every policy of the chain must let the request through.
        let mut granted = Granted::default();
        let mut link = Some(policy);
        while let Some(p) = link {
            let passed = self.guard_one(req, original, conn, client, target, p).await?;
            granted.permits.extend(passed.permits);
            if passed.cookies.is_some() {
                granted.cookies = passed.cookies;
            }
            link = p.also.as_deref();
        }
        Ok(granted)
    }

    /// One policy of the chain.
    async fn guard_one<B>(
        &self,
        req: &mut Request<B>,
        original: Option<&OriginalRequest>,
        conn: &Conn,
        client: IpAddr,
        target: &ResolvedRule,
        policy: &AccessPolicy,
    ) -> Result<Granted, Refused> {
        let route = &target.route;
        if policy.closed.is_some() {
            // The reasons are in the route's status and the log; the
            // client learns only that the route is closed.
            return Err(Refused {
                response: local_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "ssegate: route {route} is not served: it restricts access in ways ssegate does not enforce\n"
                    ),
                ),
                reason: "closed",
            });
        }
        let mut granted = Granted::default();

        if let Some(limits) = &policy.limits {
            if !limits.exempt.as_ref().is_some_and(|e| e.contains(client)) {
                match self
                    .limit_state
                    .admit(&policy.zone, &limits.limits, client, Instant::now())
                {
                    Ok(permit) => granted.permits.push(permit),
                    Err(refused) => {
                        let mut response = local_reply(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!(
                                "ssegate: too many requests from your address to route {route} ({})\n",
                                refused.which
                            ),
                        );
                        response
                            .headers_mut()
                            .insert(RETRY_AFTER, HeaderValue::from(refused.retry_after_secs()));
                        let reason = match refused.which {
                            Which::Connections => "limit_connections",
                            Which::Capacity => "limit_capacity",
                            Which::Rps | Which::Rpm => "limit_rate",
                        };
                        return Err(Refused { response, reason });
                    }
                }
            }
        }

        // Cheapest first: a request from a refused network never costs a
        // password hash or a subrequest (unless `satisfy any` asks for them).
        let source = source_verdict(policy, client, route);
        if policy.satisfy_any && matches!(source, Verdict::Pass) {
            return Ok(granted);
        }
        if !policy.satisfy_any {
            if let Verdict::Fail(r) = source {
                return Err(Refused {
                    response: *r.response,
                    reason: r.reason,
                });
            }
        }
        let mut verdicts = vec![source];
        if let Some(basic) = &policy.basic {
            let verdict = self.basic_verdict(basic, req.headers(), route).await;
            let passed = matches!(verdict, Verdict::Pass);
            let failed = matches!(verdict, Verdict::Fail(_));
            verdicts.push(verdict);
            if (passed && policy.satisfy_any) || (failed && !policy.satisfy_any) {
                return combine(policy.satisfy_any, verdicts)
                    .map(|()| granted)
                    .map_err(|r| Refused {
                        response: *r.response,
                        reason: r.reason,
                    });
            }
        }
        if let Some(external) = &policy.external {
            let (verdict, cookies) = self
                .external_verdict(external, req, original, conn, client, target)
                .await;
            granted.cookies = cookies;
            verdicts.push(verdict);
        }
        match combine(policy.satisfy_any, verdicts) {
            Ok(()) => Ok(granted),
            Err(r) => Err(Refused {
                response: *r.response,
                reason: r.reason,
            }),
        }
    }

    /// Basic authentication: the `Authorization` header's user and
    /// password against the Secret's users. A success is remembered by the
    /// credentials (per Secret version), so a reconnecting EventSource does
    /// not pay for bcrypt again; anything else is hashed on a blocking
    /// thread, a bounded number at once.
    async fn basic_verdict(&self, basic: &BasicAuth, headers: &http::HeaderMap, route: &str) -> Verdict {
        let unauthorized = || {
            let mut response = local_reply(
                StatusCode::UNAUTHORIZED,
                format!("ssegate: route {route} needs a user name and password\n"),
            );
            if let Ok(v) = HeaderValue::from_str(&basic.challenge) {
                response.headers_mut().insert(WWW_AUTHENTICATE, v);
            }
            Verdict::Fail(Refusal {
                kind: FailKind::Unauthorized,
                response: Box::new(response),
                reason: "basic_auth",
            })
        };
        let Some((user, password)) = headers.get(AUTHORIZATION).and_then(|v| parse_basic(v.as_bytes())) else {
            return unauthorized();
        };
        let ok = match basic.credentials.verify_cached(&user, &password) {
            Some(ok) => ok,
            None => {
                let Ok(slot) = self.verify_slots.clone().acquire_owned().await else {
                    return unauthorized();
                };
                let credentials = basic.credentials.clone();
                tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    credentials.verify(&user, &password)
                })
                .await
                .unwrap_or(false)
            }
        };
        if ok {
            Verdict::Pass
        } else {
            unauthorized()
        }
    }

    /// External authentication: the auth service's answer for this
    /// request (or a cached one), and what it means.
    async fn external_verdict<B>(
        &self,
        external: &ExternalAuth,
        req: &mut Request<B>,
        original: Option<&OriginalRequest>,
        conn: &Conn,
        client: IpAddr,
        target: &ResolvedRule,
    ) -> (Verdict, Option<(Arc<ExternalAuthConfig>, Vec<HeaderValue>)>) {
        let cfg = &external.config;
        let (uri, client_headers) = match original {
            Some(o) => (&o.uri, &o.headers),
            None => (req.uri(), req.headers()),
        };
        let host = client_headers
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let request_uri = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let request_id = client_headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(request_id);
        let forwarded_for = client.to_string();
        let decision = {
            let facts = ClientRequestFacts {
                method: req.method(),
                scheme: if conn.tls { Scheme::Https } else { Scheme::Http },
                host: &host,
                request_uri: &request_uri,
                headers: client_headers,
                client_addr: client,
                forwarded_for: &forwarded_for,
                request_id: &request_id,
            };
            self.external_decision(external, &facts, target).await
        };
        match decision {
            Decision::Allow {
                upstream_headers,
                set_cookie,
            } => {
                let headers = req.headers_mut();
                external_auth::strip_client_copies(cfg, headers);
                for (name, _) in &upstream_headers {
                    headers.remove(name);
                }
                for (name, value) in upstream_headers {
                    headers.append(name, value);
                }
                let cookies = (!set_cookie.is_empty()).then(|| (cfg.clone(), set_cookie));
                (Verdict::Pass, cookies)
            }
            Decision::Deny {
                status,
                headers,
                reason,
            } => {
                use external_auth::DenyReason as R;
                let (kind, label) = match reason {
                    R::Unauthorized | R::SignIn | R::Denied(401) => (FailKind::Unauthorized, "external_auth"),
                    R::Forbidden | R::Denied(_) => (FailKind::Forbidden, "external_auth"),
                    _ => (FailKind::Error, "external_auth_error"),
                };
                let text = match kind {
                    FailKind::Error => {
                        format!("ssegate: the authentication service of route {} failed\n", target.route)
                    }
                    _ => format!(
                        "ssegate: route {} refused by its authentication service\n",
                        target.route
                    ),
                };
                let mut response = local_reply(status, text);
                for (name, value) in headers {
                    response.headers_mut().append(name, value);
                }
                (
                    Verdict::Fail(Refusal {
                        kind,
                        response: Box::new(response),
                        reason: label,
                    }),
                    None,
                )
            }
        }
    }

    /// The decision for `facts`: from the cache when the policy keeps one
    /// and it holds an answer; else from the auth service, one subrequest
    /// per key at a time (the others wait for its answer, within the
    /// response timeout).
    async fn external_decision(
        &self,
        external: &ExternalAuth,
        facts: &ClientRequestFacts<'_>,
        target: &ResolvedRule,
    ) -> Decision {
        let cfg = &external.config;
        let timeouts = Timeouts {
            connect: target.settings.timeouts.connect,
            response: target.settings.timeouts.response_headers,
        };
        let Some(key) = cache_key(cfg, facts) else {
            return self.ask_auth_service(external, facts, &timeouts, &target.route).await.0;
        };
        let lead = match self.auth_cache.lookup(&external.cache_zone, key, Instant::now()) {
            Lookup::Hit(answer) => return decide(cfg, answer.status, &answer.headers, facts),
            Lookup::Lead(guard) => Some(guard),
            Lookup::Wait(waiter) => match tokio::time::timeout(timeouts.response, waiter.wait()).await {
                Ok(Shared::Answer(answer)) => return decide(cfg, answer.status, &answer.headers, facts),
                Ok(Shared::NotShared | Shared::Abandoned) => None,
                Err(_) => return decide_failure(AuthFailure::Timeout),
            },
        };
        let (decision, answer) = self.ask_auth_service(external, facts, &timeouts, &target.route).await;
        if let (Some(guard), Some((status, headers))) = (lead, answer) {
            let ttl = cfg.cache().and_then(|c| c.ttl(status, &headers));
            guard.finish(cacheable_answer(cfg, status, &headers), ttl, Instant::now());
        }
        decision
    }

    /// Sends the subrequest; the decision, and the answer when there was one.
    async fn ask_auth_service(
        &self,
        external: &ExternalAuth,
        facts: &ClientRequestFacts<'_>,
        timeouts: &Timeouts,
        route: &str,
    ) -> (Decision, Option<(u16, http::HeaderMap)>) {
        let cfg = &external.config;
        let request = match auth_request(cfg, facts) {
            Ok(r) => r,
            Err(e) => {
                auth_failure(route, &e, "cannot build the external auth subrequest");
                return (decide_failure(AuthFailure::Subrequest), None);
            }
        };
        let Some((scheme, host, port)) = external_auth::endpoint(&request) else {
            return (decide_failure(AuthFailure::Subrequest), None);
        };
        let addresses = match &external.service {
            None => Resolution::Dns,
            Some(Ok(endpoints)) => Resolution::Fixed(endpoints.clone()),
            Some(Err(why)) => {
                auth_failure(route, why, "external auth service cannot be used");
                return (decide_failure(AuthFailure::Transport), None);
            }
        };
        let auth_target = AuthTarget {
            scheme: match scheme {
                Scheme::Http => AuthScheme::Http,
                Scheme::Https => AuthScheme::Https,
            },
            host: host.to_owned(),
            port,
            addresses,
        };
        let keepalive = cfg.keepalive();
        let pool = PoolSettings {
            keepalive_connections: keepalive.connections as usize,
            keepalive_requests: keepalive.requests as u64,
            keepalive_timeout: keepalive.idle_timeout,
        };
        // Gateway API's rules send the client's Host (the request carries
        // it); ingress-nginx's, the auth URL's host, which the client sets.
        let host = match cfg.flavour() {
            Flavour::GatewayApi => request.headers().get(HOST).cloned(),
            Flavour::IngressNginx => None,
        };
        match self
            .auth_client
            .send_as(&auth_target, &pool, timeouts, request, host)
            .await
        {
            Ok(answer) => {
                let status = answer.status.as_u16();
                debug!(%route, status, "external auth answered");
                (
                    decide(cfg, status, &answer.headers, facts),
                    Some((status, answer.headers)),
                )
            }
            Err(e) => {
                auth_failure(route, &e, "external auth subrequest failed");
                let cause = match e {
                    AuthClientError::Timeout { .. } => AuthFailure::Timeout,
                    _ => AuthFailure::Transport,
                };
                (decide_failure(cause), None)
            }
        }
    }
}

/// Logs an external auth failure: a warning at most once a second (an
/// outage fails every request; each is counted in
/// `ssegate_access_refused_total{reason="external_auth_error"}`), debug
/// otherwise.
fn auth_failure(route: &str, error: &dyn std::fmt::Display, what: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST.swap(now, Ordering::Relaxed) != now {
        warn!(%route, %error, "{what}");
    } else {
        debug!(%route, %error, "{what}");
    }
}

/// A request id for the auth service when the client sent none, as
/// ingress-nginx's `$req_id`: 16 random bytes in hex.
fn request_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        return String::new();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the auth service's cookies go on an answer of `status`.
pub(super) fn cookies_apply(cfg: &ExternalAuthConfig, status: StatusCode) -> bool {
    external_auth::set_cookie_applies(cfg, status)
}

/// The header the auth service's cookies are set with.
pub(super) const SET_COOKIE: HeaderName = http::header::SET_COOKIE;

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(kind: FailKind, reason: &'static str) -> Verdict {
        let status = match kind {
            FailKind::Unauthorized => StatusCode::UNAUTHORIZED,
            FailKind::Forbidden => StatusCode::FORBIDDEN,
            FailKind::Error => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Verdict::Fail(Refusal {
            kind,
            response: Box::new(local_reply(status, "")),
            reason,
        })
    }

    fn outcome(satisfy_any: bool, verdicts: Vec<Verdict>) -> Result<(), (u16, &'static str)> {
        combine(satisfy_any, verdicts).map_err(|r| (r.response.status().as_u16(), r.reason))
    }

    #[test]
    fn satisfy_all_needs_every_configured_check_and_answers_the_first_failure() {
        use FailKind::*;
        assert_eq!(
            outcome(false, vec![Verdict::Absent, Verdict::Pass, Verdict::Pass]),
            Ok(())
        );
        assert_eq!(outcome(false, vec![]), Ok(()));
        assert_eq!(
            outcome(
                false,
                vec![fail(Forbidden, "source_range"), fail(Unauthorized, "basic_auth")]
            ),
            Err((403, "source_range"))
        );
        assert_eq!(
            outcome(
                false,
                vec![Verdict::Pass, fail(Unauthorized, "basic_auth"), Verdict::Pass]
            ),
            Err((401, "basic_auth"))
        );
    }

    #[test]
    fn satisfy_any_needs_one_pass_prefers_401_and_stops_on_an_error() {
        use FailKind::*;
        assert_eq!(
            outcome(true, vec![fail(Forbidden, "source_range"), Verdict::Pass]),
            Ok(())
        );
        assert_eq!(
            outcome(
                true,
                vec![fail(Forbidden, "source_range"), fail(Unauthorized, "basic_auth")]
            ),
            Err((401, "basic_auth"))
        );
        assert_eq!(
            outcome(
                true,
                vec![fail(Unauthorized, "basic_auth"), fail(Forbidden, "external_auth")]
            ),
            Err((401, "basic_auth"))
        );
        assert_eq!(
            outcome(
                true,
                vec![
                    fail(Forbidden, "source_range"),
                    fail(Error, "external_auth_error"),
                    Verdict::Pass
                ]
            ),
            Err((500, "external_auth_error"))
        );
        assert_eq!(outcome(true, vec![Verdict::Absent]), Ok(()), "nothing configured");
    }

    #[test]
    fn source_ranges_deny_first_then_allow() {
        use crate::access::cidr::CidrSet;
        let policy = AccessPolicy {
            allow: Some(CidrSet::parse_list("10.0.0.0/8").unwrap()),
            deny: Some(CidrSet::parse_list("10.1.0.0/16").unwrap()),
            ..Default::default()
        };
        let at = |ip: &str| match source_verdict(&policy, ip.parse().unwrap(), "r") {
            Verdict::Pass => 200,
            Verdict::Fail(r) => r.response.status().as_u16(),
            Verdict::Absent => 0,
        };
        assert_eq!(at("10.2.3.4"), 200);
        assert_eq!(at("10.1.3.4"), 403, "denied though allowed");
        assert_eq!(at("192.168.0.1"), 403, "not allowed");
        assert_eq!(at("::ffff:10.2.3.4"), 200, "an IPv4 client on a dual-stack socket");
        assert!(matches!(
            source_verdict(&AccessPolicy::default(), "1.2.3.4".parse().unwrap(), "r"),
            Verdict::Absent
        ));
    }
}
