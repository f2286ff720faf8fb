//! One request: settle what it is for (authority, path), route it, apply
//! the Route's CORS policy, forward it, and account for it.

use super::access::{self, AccessRecord};
use super::authority::request_authority;
use super::cors::{apply_cors, cors_preflight};
use super::framing;
use super::guard::OriginalRequest;
use super::normalize::normalize_path;
use super::reply::{local_len, local_reply};
use super::{Conn, Proxy, ProxyBody};
use crate::api::filters::{Origin, Rewrite};
use crate::metrics::RouteMetrics;
use crate::model::{normalize_host, ResolvedRule};
use http::header::{HeaderValue, HOST};
use http::{Request, Response, StatusCode, Uri};
use std::net::IpAddr;
use std::sync::Arc;
use tracing::{debug, Instrument};

/// What admission decided about a request.
pub(super) enum Admitted {
    /// Answered here (refused, no route, or a CORS preflight), and already
    /// counted and logged.
    Reply(Response<ProxyBody>),
    /// To be forwarded to one of the rule's endpoints.
    Forward(Routed),
}

/// A request routed to a rule, with what is needed to account for its answer.
pub(super) struct Routed {
    pub target: Arc<ResolvedRule>,
    pub metrics: Arc<RouteMetrics>,
    pub access: Option<Box<AccessRecord>>,
    /// The Route's CORS policy and the request's Origin.
    cors: Option<(Arc<crate::api::CorsPolicy>, Option<String>)>,
    /// Edits to the answer's headers (an HTTPRoute's ResponseHeaderModifier).
    response_edits: Option<Arc<crate::api::filters::RuleFilters>>,
    /// The Host the client used, for `X-Forwarded-Host`.
    pub host: Option<String>,
    pub started: std::time::Instant,
    /// The client's address ([`Proxy::client_ip`]), settled on arrival.
    pub client: std::net::IpAddr,
    /// The request's per-client limit slots, held until its answer ends.
    permits: Vec<crate::access::client_limits::Permit>,
    /// The external auth service's cookies, for the client's answer.
    cookies: Option<(Arc<crate::access::external_auth::ExternalAuthConfig>, Vec<HeaderValue>)>,
    /// The request as the client sent it, when the rule's filters edited it
    /// and its access policy asks an auth service: the service judges what
    /// the client asked for, not what the filters made of it.
    original: Option<Box<OriginalRequest>>,
}

impl Routed {
    /// Whether the answer's headers are edited (CORS, a response header
    /// modifier), which needs them in a header map.
    pub fn edits_response(&self) -> bool {
        self.cors.is_some() || self.response_edits.is_some() || self.cookies.is_some()
    }

    /// What observes the answer's body: metrics, the access log line, and
    /// the limit slot, released when the body ends.
    pub fn observer(&mut self, stream: bool) -> access::Observer {
        access::Observer::new(self.metrics.clone(), self.access.take(), stream)
            .holding(std::mem::take(&mut self.permits))
    }

    /// Accounts for the answer's head: the CORS headers, the status metric
    /// and the access record's status.
    pub fn answered(&mut self, status: StatusCode, headers: &mut http::HeaderMap) {
        if let Some((policy, origin)) = &self.cors {
            apply_cors(policy, origin.as_deref(), headers);
            headers.append(http::header::VARY, HeaderValue::from_static("Origin"));
        }
        if let Some(edits) = self.response_edits.as_ref().and_then(|f| f.response_headers.as_ref()) {
            edits.apply(headers);
        }
        if let Some((cfg, cookies)) = &self.cookies {
            if super::guard::cookies_apply(cfg, status) {
                for cookie in cookies {
                    headers.append(super::guard::SET_COOKIE, cookie.clone());
                }
            }
        }
        self.metrics.request(status.as_u16());
        if let Some(a) = &mut self.access {
            a.status = status.as_u16();
        }
    }
}

impl Proxy {
    /// Proxies one request that came over HTTP/2 (hyper's server, the one
    /// upstream exchange). Never fails: every problem becomes a clear HTTP
    /// error response.
    pub async fn handle<B>(&self, mut req: Request<B>, conn: Conn) -> Response<ProxyBody>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    {
        let mut routed = match self.admit_guarded(&mut req, &conn).await {
            Admitted::Reply(resp) => return resp,
            Admitted::Forward(routed) => routed,
        };
        let span = tracing::info_span!("request", route = %routed.target.route, rule = routed.target.rule_index);
        let mut resp = self.forward(req, &routed, conn).instrument(span).await;
        let status = resp.status();
        routed.answered(status, resp.headers_mut());
        match resp.body_mut() {
            ProxyBody::Upstream(body) => {
                if let Some(a) = &mut routed.access {
                    a.endpoint = body.endpoint;
                }
                let stream = body.is_event_stream();
                body.observe(routed.observer(stream));
            }
            ProxyBody::Local(text) => {
                if let Some(a) = routed.access {
                    a.log(local_len(text), 0, "local");
                }
            }
        }
        resp
    }

    /// Settles and routes a request, whatever protocol it came by: refused
    /// requests, unrouted ones and CORS preflights are answered (and
    /// counted, and logged) here; the rest are to be forwarded.
    pub(super) fn admit<B>(&self, req: &mut Request<B>, conn: Conn) -> Admitted {
        let started = std::time::Instant::now();
        if let Err(refusal) = self.settle_target(req) {
            self.metrics.bad_request(refusal.reason);
            let resp = refusal.into_response();
            let route: Arc<str> = Arc::from(crate::metrics::NO_ROUTE);
            return Admitted::Reply(self.answer_locally(route, req, conn, started, resp, "refused"));
        }
        // The client's address as the request came (before any filter
        // edits its headers): what access decisions and the log see.
        let client = self.client_ip(&conn, req.headers());
        // From here on, Host holds the one authority the request names.
        let host_raw = req.headers().get(HOST).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let host = normalize_host(host_raw.as_deref().unwrap_or(""));
        let mut misdirected = false;
        let found = {
            let table = self.table.load();
            // On a Gateway's own port, a port the table no longer assigns
            // names no Gateway (`""`): nothing matches, rather than the
            // shared ports' rules.
            let gateway = conn
                .gateway_port
                .map(|port| table.gateway_ports().gateway_at(port).unwrap_or(""));
            // There, only the rules of the listener that fits the host best.
            let listener = gateway.map(|g| table.gateway_ports().listener_for(g, conn.tls, &host).unwrap_or(""));
            // Over TLS, the host must belong to the listener the handshake's
            // server name chose (HTTP/2 clients reuse a connection for every
            // name its certificate covers): else 421, and the client retries
            // on a connection of its own (RFC 9110, 15.5.20).
            if let (Some(g), Some(name)) = (gateway, conn.server_name.as_deref()) {
                let chosen = table.gateway_ports().listener_for(g, true, name).unwrap_or("");
                misdirected = listener != Some(chosen);
            }
            let facts = Facts {
                req,
                tls: conn.tls,
                gateway,
                listener,
            };
            table
                .lookup_matched(&host, req.uri().path(), &facts)
                .map(|(t, len)| (t.clone(), len))
        };
        if misdirected {
            let resp = local_reply(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "ssegate: host {host:?} is not served on a connection made for {:?}\n",
                    conn.server_name.as_deref().unwrap_or_default()
                ),
            );
            let route: Arc<str> = Arc::from(crate::metrics::NO_ROUTE);
            return Admitted::Reply(self.answer_locally(route, req, conn, started, resp, "local"));
        }
        let Some((target, matched)) = found else {
            let resp = local_reply(
                StatusCode::NOT_FOUND,
                format!(
                    "ssegate: no route for host {:?} and path {:?}\n",
                    host,
                    req.uri().path()
                ),
            );
            let route: Arc<str> = Arc::from(crate::metrics::NO_ROUTE);
            return Admitted::Reply(self.answer_locally(route, req, conn, started, resp, "local"));
        };
        if target.https_redirect && !conn.tls && !is_acme_challenge(req.uri().path()) {
            let resp = https_redirect(&host, self.https_port, req.uri());
            return Admitted::Reply(self.answer_locally(target.route.clone(), req, conn, started, resp, "local"));
        }
        let edits_request = target
            .filters
            .as_ref()
            .is_some_and(|f| f.request_headers.is_some() || f.rewrite.is_some());
        let original = (edits_request && target.access.as_ref().is_some_and(|a| a.calls_auth_service())).then(|| {
            Box::new(OriginalRequest {
                uri: req.uri().clone(),
                headers: req.headers().clone(),
            })
        });
        if let Some(filters) = target.filters.clone() {
            if let Some(redirect) = &filters.redirect {
                let path = req.uri().path();
                let origin = Origin {
                    tls: conn.tls,
                    host: host_raw.as_deref().unwrap_or(""),
                    path,
                    query: req.uri().query(),
                    matched: path.get(..matched).unwrap_or("/"),
                };
                let resp = redirect_reply(redirect.status, &redirect.location(&origin));
                return Admitted::Reply(self.answer_locally(target.route.clone(), req, conn, started, resp, "local"));
            }
            if let Some(edits) = &filters.request_headers {
                edits.apply(req.headers_mut());
            }
            if let Some(rewrite) = &filters.rewrite {
                rewrite_request(req, rewrite, matched);
            }
        }
        let cors = target.cors.clone().map(|policy| {
            let origin = req.headers().get(http::header::ORIGIN).and_then(|o| o.to_str().ok());
            (policy, origin.map(str::to_owned))
        });
        let preflight = req.method() == http::Method::OPTIONS
            && req.headers().contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
        if let Some((policy, Some(origin))) = &cors {
            if preflight {
                let mut resp = cors_preflight(&target.route, policy, origin, req);
                resp.headers_mut()
                    .append(http::header::VARY, HeaderValue::from_static("Origin"));
                return Admitted::Reply(self.answer_locally(target.route.clone(), req, conn, started, resp, "local"));
            }
        }
        let metrics = self.metrics.route(&target.route);
        let access = self
            .access_log
            .then(|| Box::new(access_record(target.route.clone(), req, client, started)));
        let response_edits = target.filters.clone().filter(|f| f.response_headers.is_some());
        Admitted::Forward(Routed {
            response_edits,
            target,
            metrics,
            access,
            cors,
            host: host_raw,
            started,
            client,
            permits: Vec::new(),
            cookies: None,
            original,
        })
    }

    /// [`Proxy::admit`], then the rule's access policy ([`super::guard`]):
    /// a refused request is answered here, with the route's CORS headers
    /// so that a browser script can read the refusal.
    pub(super) async fn admit_guarded<B>(&self, req: &mut Request<B>, conn: &Conn) -> Admitted {
        let mut routed = match self.admit(req, conn.clone()) {
            Admitted::Forward(routed) => routed,
            reply => return reply,
        };
        let Some(policy) = routed.target.access.clone() else {
            return Admitted::Forward(routed);
        };
        let target = routed.target.clone();
        // Boxed: only requests to guarded rules pay for the guard's state.
        let original = routed.original.take();
        match Box::pin(self.guard(req, original.as_deref(), conn, routed.client, &target, &policy)).await {
            Ok(granted) => {
                routed.permits = granted.permits;
                routed.cookies = granted.cookies;
                Admitted::Forward(routed)
            }
            Err(refused) => {
                self.metrics.access_refused(&target.route, refused.reason);
                let mut resp = refused.response;
                if let Some((cors, origin)) = &routed.cors {
                    apply_cors(cors, origin.as_deref(), resp.headers_mut());
                    resp.headers_mut()
                        .append(http::header::VARY, HeaderValue::from_static("Origin"));
                }
                debug!(route = %target.route, status = resp.status().as_u16(), reason = refused.reason, "access refused");
                Admitted::Reply(self.answer_locally(
                    target.route.clone(),
                    req,
                    conn.clone(),
                    routed.started,
                    resp,
                    "refused",
                ))
            }
        }
    }

    /// Counts and logs a reply ssegate makes itself.
    fn answer_locally<B>(
        &self,
        route: Arc<str>,
        req: &Request<B>,
        conn: Conn,
        started: std::time::Instant,
        resp: Response<ProxyBody>,
        outcome: &'static str,
    ) -> Response<ProxyBody> {
        let status = resp.status().as_u16();
        self.metrics.route(&route).request(status);
        if self.access_log {
            let mut record = access_record(route, req, self.client_ip(&conn, req.headers()), started);
            record.status = status;
            let sent = match resp.body() {
                ProxyBody::Local(text) => local_len(text),
                ProxyBody::Upstream(_) => 0,
            };
            record.log(sent, 0, outcome);
        }
        resp
    }

    /// Settles what the request is for before it is routed: one authority
    /// (written to `Host`, which is what the upstream will see) and a
    /// normalised path (written to the URI, which is what the upstream will
    /// be asked for). Refuses, with the metric reason and a reply, what
    /// cannot be settled.
    fn settle_target<B>(&self, req: &mut Request<B>) -> Result<(), Refusal> {
        if let Err(why) = framing::check_request_framing(req.headers()) {
            return Err(Refusal::bad("framing", why.to_string()));
        }
        if req.method() == http::Method::CONNECT {
            return Err(Refusal {
                reason: "method",
                status: StatusCode::METHOD_NOT_ALLOWED,
                message: "CONNECT is not supported: ssegate is a reverse proxy".into(),
            });
        }
        let authority = request_authority(req)
            .map_err(|e| Refusal::bad("host", e.to_string()))?
            .map(|a| HeaderValue::from_str(a).expect("a valid authority is a valid header value"));
        let path = match normalize_path(req.uri().path(), self.limits.encoded_slashes) {
            Ok(std::borrow::Cow::Borrowed(_)) => None,
            Ok(std::borrow::Cow::Owned(p)) => Some(p),
            Err(e) => return Err(Refusal::bad("path", e.to_string())),
        };
        if let Some(mut path) = path {
            if let Some(q) = req.uri().query() {
                path.push('?');
                path.push_str(q);
            }
            match http::uri::PathAndQuery::try_from(path) {
                Ok(pq) => *req.uri_mut() = Uri::from(pq),
                Err(_) => return Err(Refusal::bad("path", "invalid request path".into())),
            }
        } else if req.uri().authority().is_some() {
            // Absolute form: the authority now lives in Host alone.
            let pq = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
            *req.uri_mut() = Uri::from(pq);
        }
        if let Some(v) = authority {
            req.headers_mut().insert(HOST, v);
        }
        Ok(())
    }
}

/// The access-log fields known when a request arrives.
/// `client` is [`Proxy::client_ip`]'s answer: the address access decisions see.
fn access_record<B>(route: Arc<str>, req: &Request<B>, client: IpAddr, started: std::time::Instant) -> AccessRecord {
    AccessRecord {
        route,
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        client,
        started,
        status: 0,
        endpoint: None,
        resumes: 0,
    }
}

/// A request refused before routing, as the client's fault.
struct Refusal {
    /// The `reason` label of `ssegate_bad_requests_total`.
    reason: &'static str,
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn bad(reason: &'static str, message: String) -> Self {
        Refusal {
            reason,
            status: StatusCode::BAD_REQUEST,
            message,
        }
    }

    fn into_response(self) -> Response<ProxyBody> {
        let mut resp = local_reply(self.status, format!("ssegate: {}\n", self.message));
        if self.reason == "framing" {
            // The body's extent is in doubt: nothing after this head on the
            // connection can be trusted to start a request.
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut().insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        resp
    }
}

/// A redirect answered by ssegate (an HTTPRoute's RequestRedirect).
fn redirect_reply(status: u16, location: &str) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
    let mut resp = local_reply(status, format!("ssegate: see {location}\n"));
    match HeaderValue::from_str(location) {
        Ok(value) => {
            resp.headers_mut().insert(http::header::LOCATION, value);
        }
        Err(_) => *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
    }
    resp
}

/// Applies an URLRewrite: the path the upstream is asked for (the query
/// kept) and the Host it is asked under.
fn rewrite_request<B>(req: &mut Request<B>, rewrite: &Rewrite, matched: usize) {
    if let Some(host) = &rewrite.hostname {
        if let Ok(value) = HeaderValue::from_str(host) {
            req.headers_mut().insert(HOST, value);
        }
    }
    let Some(change) = &rewrite.path else { return };
    let uri = req.uri();
    let path = uri.path();
    let mut target = change.apply(path, path.get(..matched).unwrap_or("/"));
    if let Some(q) = uri.query() {
        target.push('?');
        target.push_str(q);
    }
    let mut parts = uri.clone().into_parts();
    if let Ok(pq) = http::uri::PathAndQuery::try_from(target) {
        parts.path_and_query = Some(pq);
        if let Ok(new) = http::Uri::from_parts(parts) {
            *req.uri_mut() = new;
        }
    }
}

/// A request as route matching sees it.
struct Facts<'a, B> {
    req: &'a Request<B>,
    tls: bool,
    /// The Gateway whose own port the request came on.
    gateway: Option<&'a str>,
    /// And the listener of it the host belongs to.
    listener: Option<&'a str>,
}

impl<B> crate::model::RequestFacts for Facts<'_, B> {
    fn method(&self) -> &str {
        self.req.method().as_str()
    }

    fn has_header(&self, name: &str, value: &str) -> bool {
        self.req
            .headers()
            .get_all(name)
            .iter()
            .any(|v| v.as_bytes() == value.as_bytes())
    }

    fn query_param(&self, name: &str) -> Option<&str> {
        self.req.uri().query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }

    fn tls(&self) -> bool {
        self.tls
    }

    fn gateway(&self) -> Option<&str> {
        self.gateway
    }
    fn listener(&self) -> Option<&str> {
        self.listener
    }
}

/// ACME HTTP-01 challenges must be answered over plain HTTP, so they are
/// never redirected (as in ingress-nginx).
fn is_acme_challenge(path: &str) -> bool {
    path.starts_with("/.well-known/acme-challenge/")
}

/// A 308 to the same host, path and query on HTTPS: unlike 301, it keeps
/// the method and body, as ingress-nginx's default redirect code does.
fn https_redirect(host: &str, port: u16, uri: &http::Uri) -> Response<ProxyBody> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    let mut resp = local_reply(StatusCode::PERMANENT_REDIRECT, format!("ssegate: see {location}\n"));
    match HeaderValue::from_str(&location) {
        Ok(value) => {
            resp.headers_mut().insert(http::header::LOCATION, value);
        }
        // The host and path were checked when the request was settled.
        Err(_) => *resp.status_mut() = StatusCode::BAD_REQUEST,
    }
    resp
}
