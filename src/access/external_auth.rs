//! External authentication as ingress-nginx does it (`auth-url` and its
//! companions; oauth2-proxy, Authelia, Pomerium): before a request is
//! proxied, a bodiless subrequest carrying the client's headers goes to an
//! auth service, and its status decides. The sans-I/O parts: validated
//! configuration, the subrequest to send, and the decision from the answer.
//! The HTTP client that sends the subrequest lives elsewhere.
//!
//! What ingress-nginx generates (nginx.tmpl, template.go, nginx 1.27's
//! `auth_request`), and so what this reproduces:
//! - The subrequest: method GET, or `auth-method`; no body; the client's
//!   headers (`proxy_pass_request_headers on`) except hop-by-hop and framing
//!   ones; then, replacing any the client sent, `X-Request-ID`,
//!   (with `auth-method` only) `X-Original-URI` and `X-Scheme`, `Host` (the
//!   auth URL's host, without port), `X-Original-URL`
//!   (`$scheme://$http_host$request_uri`), `X-Original-Method`,
//!   `X-Sent-From: nginx-ingress-controller`, `X-Real-IP`,
//!   `X-Forwarded-For`, `X-Auth-Request-Redirect` (`auth-request-redirect`
//!   or `$request_uri`); `X-Forwarded-Proto` and `Content-Length` removed.
//! - The answer: 2xx allows, and the `auth-response-headers` found are set
//!   on the upstream request (several lines joined with `", "`, as nginx
//!   1.23+ joins `$upstream_http_*`); 401 is passed on with every
//!   `WWW-Authenticate` line, or, with `auth-signin`, becomes a 302 to the
//!   sign-in URL (`rd=` built by `buildAuthSignURL`); 403 is passed on;
//!   any other status, a timeout or a transport error is a 500.
//! - The auth service's `Set-Cookie` (ingress-nginx's `$auth_cookie`) is
//!   added to the client's response by `add_header` without `always`, so
//!   only to 200, 201, 204, 206, 301, 302, 303, 304, 307 and 308 responses:
//!   the upstream's response when allowed, and the sign-in 302; with
//!   `auth-always-set-cookie` to every response, 401, 403 and 500 included.
//!
//! Where this departs from ingress-nginx, deliberately:
//! - Several `Set-Cookie` lines stay several lines; nginx joins them into one
//!   with `", "`, which browsers read as one broken cookie (oauth2-proxy's
//!   split session cookies).
//! - The client's `X-Original-URI` and `X-Scheme` are removed even without
//!   `auth-method` (nginx passes them on then), and a client header is never
//!   let through under a name the auth service might trust from nginx.
//! - Client copies of `auth-response-headers` are removed under every
//!   spelling nginx would match (`X-User`, `x_user`), not only the exact one.
//! - `auth-response-headers` may not name Host, Content-Length or a
//!   hop-by-hop header: the auth service would control request framing.
//! - Values ingress-nginx only warns about (an invalid `auth-signin`, a
//!   non-integer `auth-keepalive`) are errors: ssegate fails closed on what
//!   it cannot read. `auth-snippet` and `auth-proxy-set-headers` are
//!   reported as unsupported.
//! - A sign-in URL given as a path stays relative in `Location` (nginx
//!   makes it absolute with its own idea of scheme and host).
//! - An auth URL without a path asks for `/` (nginx would send its internal
//!   location's name).

use super::auth_cache::{CacheConfig, CacheDurations, CacheKey, CacheKeyTemplate, CachedAnswer};
use super::nginx_vars::{describe_byte, is_uri_byte, nginx_header_name_matches, NginxTemplate, Part, Variable};
pub use super::nginx_vars::{ClientRequestFacts, Scheme};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, StatusCode, Uri};
use std::net::Ipv6Addr;
use std::str::FromStr;
use std::time::Duration;

/// The longest `auth-url`, `auth-signin` or `auth-request-redirect`:
/// configuration URLs are short; 2 KiB leaves room for long query strings
/// (`allowed_groups=...`) and keeps templates cheap to evaluate.
pub const MAX_URL_LEN: usize = 2048;

/// The longest URL built for one request (the auth URL or the sign-in
/// `Location`, with `$request_uri` and `$escaped_request_uri` in them; the
/// escaped form can be three times the request target). Past it the
/// request gets a 500, as nginx's buffers would give an error.
pub const MAX_EVALUATED_URL_LEN: usize = 32 * 1024;

/// The most names in `auth-response-headers`. oauth2-proxy sets at most
/// six (`X-Auth-Request-User`, `-Email`, `-Groups`, `-Preferred-Username`,
/// `-Access-Token`, `Authorization`); 32 is generous.
pub const MAX_RESPONSE_HEADERS: usize = 32;

/// The longest header name in `auth-response-headers`.
pub const MAX_HEADER_NAME_LEN: usize = 128;

/// The longest `auth-signin-redirect-param`: it is a query parameter name
/// (`rd`, `redirect_uri`).
pub const MAX_REDIRECT_PARAM_LEN: usize = 64;

/// The longest value copied from the auth service's answer (each
/// `auth-response-headers` value after joining, each `Set-Cookie`, each
/// `WWW-Authenticate`). Access tokens and session cookies run to a few KiB;
/// nginx's default `proxy_buffer_size` would refuse a header block past
/// 4-8 KiB. A longer value gets a 500, not a silently shortened header.
pub const MAX_COPIED_VALUE_LEN: usize = 16 * 1024;

/// The most idle keep-alive connections to one auth service
/// (`auth-keepalive`): an auth service is one or a few pods; a thousand
/// idle connections is already more than it wants.
pub const MAX_KEEPALIVE_CONNECTIONS: u32 = 1024;

/// The most requests on one keep-alive connection
/// (`auth-keepalive-requests`): past this a connection is never renewed,
/// so new auth-service pods never get its share of the load.
pub const MAX_KEEPALIVE_REQUESTS: u32 = 100_000;

/// The longest idle time of a keep-alive connection
/// (`auth-keepalive-timeout`): auth services close idle connections within
/// minutes; an hour is beyond any useful value.
pub const MAX_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3600);

/// ingress-nginx's default `auth-keepalive`: no kept-alive connections.
pub const DEFAULT_KEEPALIVE_CONNECTIONS: u32 = 0;
/// ingress-nginx's default `auth-keepalive-requests`.
pub const DEFAULT_KEEPALIVE_REQUESTS: u32 = 1000;
/// ingress-nginx's default `auth-keepalive-timeout`.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// ingress-nginx's default `auth-signin-redirect-param`.
pub const DEFAULT_REDIRECT_PARAM: &str = "rd";

/// The `X-Sent-From` value ingress-nginx sends, kept byte for byte: auth
/// services configured for ingress-nginx may check it.
pub const SENT_FROM: &str = "nginx-ingress-controller";

/// The methods `auth-method` accepts: ingress-nginx's list
/// (`GET|HEAD|POST|PUT|PATCH|DELETE|CONNECT|OPTIONS|TRACE`, case-sensitive)
/// without CONNECT, which asks for a tunnel and cannot be sent with a path.
pub const AUTH_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"];

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
static X_SCHEME: HeaderName = HeaderName::from_static("x-scheme");
static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
static X_SENT_FROM: HeaderName = HeaderName::from_static("x-sent-from");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_AUTH_REQUEST_REDIRECT: HeaderName = HeaderName::from_static("x-auth-request-redirect");

/// Client headers never passed to the auth service: those the subrequest
/// sets itself (or, like `X-Forwarded-Proto`, sets to nothing), and the
/// hop-by-hop and framing ones (RFC 9110 §7.6.1, the legacy
/// `Proxy-Connection`, `Expect`), besides those `Connection` names.
const NOT_PASSED: &[&str] = &[
    "host",
    "content-length",
    "x-forwarded-proto",
    "x-request-id",
    "x-original-uri",
    "x-scheme",
    "x-original-url",
    "x-original-method",
    "x-sent-from",
    "x-real-ip",
    "x-forwarded-for",
    "x-auth-request-redirect",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

/// Header names `auth-response-headers` may not name (compared as nginx
/// compares, `-` and `_` alike): the auth service must not set the
/// upstream request's framing, routing or connection handling.
const NOT_FROM_AUTH: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// Headers Gateway API's rules always send (`Method` and `Path` are the
/// request line's): an `allowedHeaders` entry naming one adds nothing.
const ALWAYS_SENT: &[&str] = &["host", "content-length", "authorization"];

/// Hop-by-hop headers (RFC 9110 §7.6.1, the legacy `Proxy-Connection`):
/// they describe the client's connection, so an `allowedHeaders` entry
/// naming one sends nothing.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The most names in each of Gateway API's `allowedHeaders` and
/// `allowedResponseHeaders`: the CRD's `maxItems`.
pub const MAX_GATEWAY_HEADERS: usize = 64;

/// The longest `http.path`: the CRD's `maxLength`.
pub const MAX_GATEWAY_PATH_LEN: usize = 1024;

/// Gateway API's keep-alive towards the auth service. Envoy, whose
/// `ext_authz` the filter is modelled on, keeps connections to the auth
/// cluster open; the filter has no field for it, and ingress-nginx's
/// default (none) would open a connection per event stream. 16 idle
/// connections per service, ingress-nginx's request and idle defaults.
pub const GATEWAY_KEEPALIVE: KeepaliveConfig = KeepaliveConfig {
    connections: 16,
    requests: DEFAULT_KEEPALIVE_REQUESTS,
    idle_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
};

/// The statuses nginx's `add_header` (without `always`) applies to.
const ADD_HEADER_STATUSES: &[u16] = &[200, 201, 204, 206, 301, 302, 303, 304, 307, 308];

/// A configuration field, named as the annotation names it (without the
/// `nginx.ingress.kubernetes.io/` prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Url,
    Method,
    Signin,
    SigninRedirectParam,
    ResponseHeaders,
    RequestRedirect,
    CacheKey,
    CacheDuration,
    AlwaysSetCookie,
    Keepalive,
    KeepaliveRequests,
    KeepaliveTimeout,
    KeepaliveShareVars,
}

impl Field {
    /// The ingress-nginx annotation, without its prefix.
    pub fn annotation(self) -> &'static str {
        match self {
            Field::Url => "auth-url",
            Field::Method => "auth-method",
            Field::Signin => "auth-signin",
            Field::SigninRedirectParam => "auth-signin-redirect-param",
            Field::ResponseHeaders => "auth-response-headers",
            Field::RequestRedirect => "auth-request-redirect",
            Field::CacheKey => "auth-cache-key",
            Field::CacheDuration => "auth-cache-duration",
            Field::AlwaysSetCookie => "auth-always-set-cookie",
            Field::Keepalive => "auth-keepalive",
            Field::KeepaliveRequests => "auth-keepalive-requests",
            Field::KeepaliveTimeout => "auth-keepalive-timeout",
            Field::KeepaliveShareVars => "auth-keepalive-share-vars",
        }
    }
}

/// The annotations ssegate does not implement; present, they must fail the
/// rule closed.
pub const UNSUPPORTED_ANNOTATIONS: &[(&str, &str)] = &[
    (
        "auth-snippet",
        "raw NGINX run before the authentication subrequest is never executed, and it may be what the decision depends on",
    ),
    (
        "auth-proxy-set-headers",
        "headers from a ConfigMap sent to the external authentication service are not supported: the service could decide on less than it was meant to",
    ),
];

/// Why a field is refused. Never quotes a URL (it may hold a token) or a
/// header value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExternalAuthError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("must be an absolute http:// or https:// URL")]
    UrlScheme,
    #[error("names no host")]
    UrlNoHost,
    #[error("holds credentials (user@host), which are never sent: give the address alone")]
    UrlUserinfo,
    #[error("has a malformed host or port")]
    UrlAuthority,
    #[error("has `..` in its host")]
    UrlDoubleDot,
    #[error("has a `%` at byte {at} that is not followed by two hex digits")]
    UrlBadEscape { at: usize },
    #[error("may use only $host, $http_host or $best_http_host in its host part")]
    UrlHostVariable,
    #[error("{0}")]
    Template(#[from] super::nginx_vars::TemplateError),
    #[error("must be an absolute http:// or https:// URL, or a path starting with /")]
    SigninForm,
    #[error("must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or TRACE (CONNECT asks for a tunnel, not an answer)")]
    Method,
    #[error("must be 1 to {max} letters, digits, `-`, `.`, `_` or `~`")]
    RedirectParam { max: usize },
    #[error("names more than {max} headers")]
    TooManyResponseHeaders { max: usize },
    #[error("entry {index} is not a header name of 1 to {max} letters, digits, `-` and `_`")]
    ResponseHeaderName { index: usize, max: usize },
    #[error("names {name}, which controls the request's routing or framing and is never taken from the auth service")]
    ResponseHeaderForbidden { name: String },
    #[error("has the character {what} at byte {at}, which is not allowed (no variables, no spaces)")]
    RequestRedirectCharacter { at: usize, what: String },
    #[error("{0}")]
    Cache(#[from] super::auth_cache::CacheConfigError),
    #[error("is not an integer")]
    NotInteger,
    #[error("is not true or false")]
    NotBool,
    #[error("is larger than {max}")]
    TooLarge { max: u64 },
    #[error(
        "must start with `/` and hold only letters, digits, `%XX` escapes and -._~!$&'()*+,;=:@/ (the CRD's pattern)"
    )]
    PathForm,
    #[error("has a `.` or `..` segment, which would take the auth service's path outside the prefix")]
    PathDotSegment,
    #[error("names more than {max} headers")]
    TooManyHeaders { max: usize },
    #[error("entry {index} is not a header name of at most {max} bytes")]
    HeaderName { index: usize, max: usize },
    #[error("is not a DNS label (lowercase letters, digits and `-`, at most 63)")]
    NotDnsLabel,
    #[error("is {0}: the port must be 1 to 65535")]
    Port(i64),
}

/// Gateway API's `ExternalAuth` filter with `protocol: HTTP`, as the
/// translation gives it, the backendRef already resolved to a Service in
/// a namespace it may refer to. Validated by
/// [`ExternalAuthConfig::from_gateway_api`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct GatewayAuthSpec {
    /// The Service's name and namespace, and the Service port to call.
    pub service: String,
    pub namespace: String,
    pub port: i64,
    /// `http.path`; empty for none.
    pub path: String,
    pub allowed_headers: Vec<String>,
    pub allowed_response_headers: Vec<String>,
}

/// A field of [`GatewayAuthSpec`], named as the filter names it (under
/// `externalAuth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GatewayField {
    BackendRefName,
    BackendRefNamespace,
    BackendRefPort,
    Path,
    AllowedHeaders,
    AllowedResponseHeaders,
}

impl GatewayField {
    /// The field's path under `externalAuth`.
    pub fn path(self) -> &'static str {
        match self {
            GatewayField::BackendRefName => "backendRef.name",
            GatewayField::BackendRefNamespace => "backendRef.namespace",
            GatewayField::BackendRefPort => "backendRef.port",
            GatewayField::Path => "http.path",
            GatewayField::AllowedHeaders => "http.allowedHeaders",
            GatewayField::AllowedResponseHeaders => "http.allowedResponseHeaders",
        }
    }
}

/// The typed fields of an external-auth policy, as ssegate's own API (a
/// Route's `spec.access.externalAuth`) gives them, or as
/// [`from_annotations`] reads them from annotation strings. Validated by
/// [`ExternalAuthConfig::from_spec`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalAuthSpec {
    pub url: String,
    pub method: Option<String>,
    pub signin_url: Option<String>,
    pub signin_redirect_param: Option<String>,
    pub response_headers: Vec<String>,
    pub request_redirect: Option<String>,
    pub cache_key: Option<String>,
    /// ingress-nginx's format; `None` for its default (`200 202 401 5m`).
    /// Ignored, though validated, without `cache_key`, as ingress-nginx
    /// ignores it.
    pub cache_duration: Option<String>,
    pub always_set_cookie: bool,
    /// Idle connections kept; negative means 0, as in ingress-nginx.
    pub keepalive_connections: Option<i64>,
    /// Requests per connection; 0 or negative turns keep-alive off, as in
    /// ingress-nginx.
    pub keepalive_requests: Option<i64>,
    /// Idle seconds; 0 or negative turns keep-alive off, as in
    /// ingress-nginx.
    pub keepalive_timeout_seconds: Option<i64>,
}

/// Keep-alive towards the auth service, for the HTTP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveConfig {
    /// Idle connections to keep; 0 means none: close each connection after
    /// its request (ingress-nginx's default, and what it falls back to when
    /// the auth URL's host has a variable).
    pub connections: u32,
    /// Requests one connection may carry before it is closed.
    pub requests: u32,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            connections: DEFAULT_KEEPALIVE_CONNECTIONS,
            requests: DEFAULT_KEEPALIVE_REQUESTS,
            idle_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
        }
    }
}

/// A parsed `auth-url`: `http(s)://host[:port][/path][?query]`, with nginx
/// variables allowed in the path and query, and only the client's host
/// (`$host`, `$http_host`) in the host part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUrl {
    scheme: Scheme,
    authority: UrlAuthority,
    path_and_query: NginxTemplate,
    /// The whole URI, when nothing in it is a variable.
    fixed: Option<Uri>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum UrlAuthority {
    Fixed {
        authority: Authority,
        /// The host as the `Host` header carries it: without the port
        /// (ingress-nginx sends Go's `URL.Hostname()`), an IPv6 address
        /// in brackets.
        host: HeaderValue,
    },
    Template {
        authority: NginxTemplate,
        /// The authority without a literal `:port` at its end.
        host: NginxTemplate,
    },
}

/// A validated external-auth policy: where the auth service is, how
/// connections to it are kept, and the dialect ([`Flavour`]) that says what
/// the subrequest carries and what its answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalAuthConfig {
    url: AuthUrl,
    cache: Option<CacheConfig>,
    keepalive: KeepaliveConfig,
    rules: Rules,
}

/// The dialects of external authentication ssegate speaks. They share the
/// transport (the subrequest client, keep-alive, timeouts, the Service's
/// endpoints) and differ in what is sent and how the answer is read, which
/// is why they are one type with two sets of rules rather than two types:
/// a rule's access policy holds either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// ingress-nginx's `auth-url` and companions (and a Route's or a
    /// StreamPolicy's `access.externalAuth`): see the module documentation.
    IngressNginx,
    /// Gateway API's HTTPRoute `ExternalAuth` filter with `protocol: HTTP`
    /// (GEP-1494): see [`from_gateway_api`](ExternalAuthConfig::from_gateway_api).
    GatewayApi,
}

/// The request and answer rules of each [`Flavour`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rules {
    IngressNginx(NginxRules),
    GatewayApi(GatewayApiRules),
}

/// ingress-nginx's rules: the annotations beyond the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NginxRules {
    method: Option<Method>,
    /// The sign-in URL with the redirect parameter added as
    /// `buildAuthSignURL` adds it.
    signin: Option<NginxTemplate>,
    signin_redirect_param: String,
    response_headers: Vec<HeaderName>,
    request_redirect: Option<HeaderValue>,
    always_set_cookie: bool,
}

/// Gateway API's rules (`externalAuth.http`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct GatewayApiRules {
    /// `http.path`, put before the client's path; empty for none.
    path_prefix: String,
    /// `http.allowedHeaders`, beyond those always sent.
    allowed_headers: Vec<HeaderName>,
    /// `http.allowedResponseHeaders`; empty: every header of the answer
    /// but those [`never_copied_upstream`].
    allowed_response_headers: Vec<HeaderName>,
}

/// What [`from_annotations`] refuses: annotations whose values are wrong,
/// and annotations ssegate does not implement. Either makes the rule fail
/// closed; they are kept apart because they call for different messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnotationProblems {
    /// (annotation, message), e.g. `("auth-method", "must be one of ...")`.
    pub invalid: Vec<(&'static str, String)>,
    /// (annotation, why it is not supported).
    pub unsupported: Vec<(&'static str, &'static str)>,
}

/// Reads ingress-nginx's external-auth annotations; `get` returns an
/// annotation's value by its name without the `nginx.ingress.kubernetes.io/`
/// prefix. `Ok(None)` when there is no `auth-url` (the other annotations do
/// nothing then, as in ingress-nginx). Values are trimmed; optional ones
/// that are blank count as absent, but a blank `auth-url` is an error: it
/// says the path was meant to be protected.
pub fn from_annotations<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
) -> Result<Option<ExternalAuthConfig>, AnnotationProblems> {
    let Some(url) = get(Field::Url.annotation()) else {
        return Ok(None);
    };
    let mut problems = AnnotationProblems::default();
    for &(name, why) in UNSUPPORTED_ANNOTATIONS {
        if get(name).is_some_and(|v| !v.trim().is_empty()) {
            problems.unsupported.push((name, why));
        }
    }
    let text = |field: Field| {
        get(field.annotation())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let mut invalid = |field: Field, error: ExternalAuthError| {
        problems.invalid.push((field.annotation(), error.to_string()));
    };
    let mut integer = |field: Field| match text(field).map(|v| v.parse::<i64>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            invalid(field, ExternalAuthError::NotInteger);
            None
        }
    };
    let keepalive_connections = integer(Field::Keepalive);
    let keepalive_requests = integer(Field::KeepaliveRequests);
    let keepalive_timeout_seconds = integer(Field::KeepaliveTimeout);
    let mut boolean = |field: Field| match text(field).map(|v| parse_go_bool(&v)) {
        None => false,
        Some(Some(b)) => b,
        Some(None) => {
            problems
                .invalid
                .push((field.annotation(), ExternalAuthError::NotBool.to_string()));
            false
        }
    };
    let always_set_cookie = boolean(Field::AlwaysSetCookie);
    // Validated only: ssegate has no nginx variables to share.
    boolean(Field::KeepaliveShareVars);
    let spec = ExternalAuthSpec {
        url: url.trim().to_owned(),
        method: text(Field::Method),
        signin_url: text(Field::Signin),
        signin_redirect_param: text(Field::SigninRedirectParam),
        response_headers: text(Field::ResponseHeaders)
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        request_redirect: text(Field::RequestRedirect),
        cache_key: text(Field::CacheKey),
        cache_duration: text(Field::CacheDuration),
        always_set_cookie,
        keepalive_connections,
        keepalive_requests,
        keepalive_timeout_seconds,
    };
    let config = ExternalAuthConfig::from_spec(&spec).map_err(|errors| {
        for (field, error) in errors {
            problems.invalid.push((field.annotation(), error.to_string()));
        }
    });
    match config {
        Ok(config) if problems.invalid.is_empty() && problems.unsupported.is_empty() => Ok(Some(config)),
        _ => Err(problems),
    }
}

/// Go's `strconv.ParseBool`, which ingress-nginx uses.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl ExternalAuthConfig {
    /// Validates every field, reporting every error.
    pub fn from_spec(spec: &ExternalAuthSpec) -> Result<ExternalAuthConfig, Vec<(Field, ExternalAuthError)>> {
        let mut errors = Vec::new();
        let mut check = |field: Field, result: Result<(), ExternalAuthError>| {
            if let Err(error) = result {
                errors.push((field, error));
            }
        };

        let url = AuthUrl::parse(&spec.url);
        let method = spec.method.as_deref().map(parse_method).transpose();
        let signin_redirect_param = match &spec.signin_redirect_param {
            None => Ok(DEFAULT_REDIRECT_PARAM.to_owned()),
            Some(param) => parse_redirect_param(param).map(str::to_owned),
        };
        let signin = match (&spec.signin_url, &signin_redirect_param) {
            (None, _) => Ok(None),
            (Some(text), Ok(param)) => parse_signin(text, param).map(Some),
            (Some(text), Err(_)) => parse_signin(text, DEFAULT_REDIRECT_PARAM).map(Some),
        };
        let response_headers = parse_response_headers(&spec.response_headers);
        let request_redirect = spec.request_redirect.as_deref().map(parse_request_redirect).transpose();
        let cache_key = spec.cache_key.as_deref().map(CacheKeyTemplate::parse).transpose();
        let durations = spec.cache_duration.as_deref().map(CacheDurations::parse).transpose();
        let keepalive = parse_keepalive(spec);

        let url = url.map_err(|e| check(Field::Url, Err(e))).ok();
        let method = method.map_err(|e| check(Field::Method, Err(e))).ok();
        let signin_redirect_param = signin_redirect_param
            .map_err(|e| check(Field::SigninRedirectParam, Err(e)))
            .ok();
        let signin = signin.map_err(|e| check(Field::Signin, Err(e))).ok();
        let response_headers = response_headers.map_err(|e| check(Field::ResponseHeaders, Err(e))).ok();
        let request_redirect = request_redirect.map_err(|e| check(Field::RequestRedirect, Err(e))).ok();
        let cache_key = cache_key.map_err(|e| check(Field::CacheKey, Err(e.into()))).ok();
        let durations = durations.map_err(|e| check(Field::CacheDuration, Err(e.into()))).ok();
        let keepalive = keepalive.map_err(|(field, e)| check(field, Err(e))).ok();

        match (
            url,
            method,
            signin_redirect_param,
            signin,
            response_headers,
            request_redirect,
            cache_key,
            durations,
            keepalive,
        ) {
            (
                Some(url),
                Some(method),
                Some(signin_redirect_param),
                Some(signin),
                Some(response_headers),
                Some(request_redirect),
                Some(cache_key),
                Some(durations),
                Some(mut keepalive),
            ) if errors.is_empty() => {
                if url.fixed_authority().is_none() {
                    // ingress-nginx: an upstream block cannot name a
                    // variable host, so keep-alive is off.
                    keepalive.connections = 0;
                }
                Ok(ExternalAuthConfig {
                    url,
                    cache: cache_key.map(|key| CacheConfig::from_parts(key, durations.unwrap_or_default())),
                    keepalive,
                    rules: Rules::IngressNginx(NginxRules {
                        method,
                        signin,
                        signin_redirect_param,
                        response_headers,
                        request_redirect,
                        always_set_cookie: spec.always_set_cookie,
                    }),
                })
            }
            _ => Err(errors),
        }
    }

    pub fn url(&self) -> &AuthUrl {
        &self.url
    }

    pub fn flavour(&self) -> Flavour {
        match self.rules {
            Rules::IngressNginx(_) => Flavour::IngressNginx,
            Rules::GatewayApi(_) => Flavour::GatewayApi,
        }
    }

    fn nginx(&self) -> Option<&NginxRules> {
        match &self.rules {
            Rules::IngressNginx(n) => Some(n),
            Rules::GatewayApi(_) => None,
        }
    }

    /// The subrequest's method with ingress-nginx's rules: `auth-method`,
    /// else GET. (Gateway API's sends the client's method.)
    pub fn method(&self) -> Method {
        self.nginx().and_then(|n| n.method.clone()).unwrap_or(Method::GET)
    }

    /// Whether `auth-method` was given (then `X-Original-URI` and
    /// `X-Scheme` are sent too).
    pub fn method_is_set(&self) -> bool {
        self.nginx().is_some_and(|n| n.method.is_some())
    }

    /// The sign-in URL with its redirect parameter, as a template.
    pub fn signin(&self) -> Option<&NginxTemplate> {
        self.nginx()?.signin.as_ref()
    }

    pub fn signin_redirect_param(&self) -> &str {
        self.nginx()
            .map_or(DEFAULT_REDIRECT_PARAM, |n| n.signin_redirect_param.as_str())
    }

    /// `auth-response-headers`, or Gateway API's `allowedResponseHeaders`
    /// (where empty means every header of the answer).
    pub fn response_headers(&self) -> &[HeaderName] {
        match &self.rules {
            Rules::IngressNginx(n) => &n.response_headers,
            Rules::GatewayApi(g) => &g.allowed_response_headers,
        }
    }

    pub fn request_redirect(&self) -> Option<&HeaderValue> {
        self.nginx()?.request_redirect.as_ref()
    }

    pub fn cache(&self) -> Option<&CacheConfig> {
        self.cache.as_ref()
    }

    pub fn always_set_cookie(&self) -> bool {
        self.nginx().is_some_and(|n| n.always_set_cookie)
    }

    pub fn keepalive(&self) -> KeepaliveConfig {
        self.keepalive
    }
}

impl ExternalAuthConfig {
    /// Validates Gateway API's filter (`protocol: HTTP`), reporting every
    /// error. The auth service is the Service `name.namespace.svc` on the
    /// given Service port, over plain HTTP (the API's TLS to backends is
    /// BackendTLSPolicy, which ssegate does not read), its ready endpoints
    /// called directly as for a Route's Service host. No cache: the API
    /// has none, and an answer is about one request.
    pub fn from_gateway_api(
        spec: &GatewayAuthSpec,
    ) -> Result<ExternalAuthConfig, Vec<(GatewayField, ExternalAuthError)>> {
        let mut errors = Vec::new();
        if !is_dns_label(&spec.service) {
            errors.push((GatewayField::BackendRefName, ExternalAuthError::NotDnsLabel));
        }
        if !is_dns_label(&spec.namespace) {
            errors.push((GatewayField::BackendRefNamespace, ExternalAuthError::NotDnsLabel));
        }
        let port = u16::try_from(spec.port).ok().filter(|p| *p > 0);
        if port.is_none() {
            errors.push((GatewayField::BackendRefPort, ExternalAuthError::Port(spec.port)));
        }
        if let Err(e) = check_gateway_path(&spec.path) {
            errors.push((GatewayField::Path, e));
        }
        let allowed_headers = parse_gateway_headers(&spec.allowed_headers, false)
            .map_err(|e| errors.push((GatewayField::AllowedHeaders, e)))
            .ok();
        let allowed_response_headers = parse_gateway_headers(&spec.allowed_response_headers, true)
            .map_err(|e| errors.push((GatewayField::AllowedResponseHeaders, e)))
            .ok();
        let authority = port
            .and_then(|port| parse_fixed_authority(&format!("{}.{}.svc:{port}", spec.service, spec.namespace)).ok());
        let base = if spec.path.is_empty() { "/" } else { spec.path.as_str() };
        match (authority, allowed_headers, allowed_response_headers) {
            (Some((authority, host)), Some(allowed_headers), Some(allowed_response_headers)) if errors.is_empty() => {
                let fixed = Uri::builder()
                    .scheme(Scheme::Http.as_str())
                    .authority(authority.clone())
                    .path_and_query(base)
                    .build()
                    .map_err(|_| vec![(GatewayField::Path, ExternalAuthError::PathForm)])?;
                Ok(ExternalAuthConfig {
                    url: AuthUrl {
                        scheme: Scheme::Http,
                        authority: UrlAuthority::Fixed { authority, host },
                        path_and_query: NginxTemplate::from_parts(vec![Part::Literal(base.to_owned())]),
                        fixed: Some(fixed),
                    },
                    cache: None,
                    keepalive: GATEWAY_KEEPALIVE,
                    rules: Rules::GatewayApi(GatewayApiRules {
                        // Joined as path segments: the client's path starts
                        // with `/`, so `/auth/` and `/` add no empty segment.
                        path_prefix: spec.path.trim_end_matches('/').to_owned(),
                        allowed_headers,
                        allowed_response_headers,
                    }),
                })
            }
            _ => {
                if errors.is_empty() {
                    errors.push((GatewayField::BackendRefName, ExternalAuthError::UrlAuthority));
                }
                Err(errors)
            }
        }
    }
}

/// A DNS-1123 label, as Service names and namespaces are.
fn is_dns_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// `http.path`: the CRD's pattern (`^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$`,
/// at most 1024 bytes), sanitised further as the API asks: it must start
/// with `/` (it is put before an origin-form path) and may not have `.` or
/// `..` segments. Empty is no prefix.
fn check_gateway_path(path: &str) -> Result<(), ExternalAuthError> {
    if path.is_empty() {
        return Ok(());
    }
    if path.len() > MAX_GATEWAY_PATH_LEN {
        return Err(ExternalAuthError::TooLong {
            max: MAX_GATEWAY_PATH_LEN,
        });
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-/._~!$&'()*+,;=:@%".contains(&b);
    if !path.starts_with('/') || !path.bytes().all(allowed) {
        return Err(ExternalAuthError::PathForm);
    }
    if let Some(at) = bad_escape(path) {
        return Err(ExternalAuthError::UrlBadEscape { at });
    }
    if path.split('/').any(|segment| segment == "." || segment == "..") {
        return Err(ExternalAuthError::PathDotSegment);
    }
    Ok(())
}

/// `allowedHeaders` or, with `response`, `allowedResponseHeaders`: header
/// names (any token, compared without case), at most
/// [`MAX_GATEWAY_HEADERS`], duplicates dropped. Response headers may not
/// name those that frame the upstream request or its connection.
fn parse_gateway_headers(names: &[String], response: bool) -> Result<Vec<HeaderName>, ExternalAuthError> {
    if names.len() > MAX_GATEWAY_HEADERS {
        return Err(ExternalAuthError::TooManyHeaders {
            max: MAX_GATEWAY_HEADERS,
        });
    }
    let mut out: Vec<HeaderName> = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let bad = || ExternalAuthError::HeaderName {
            index: index + 1,
            max: MAX_HEADER_NAME_LEN,
        };
        if name.is_empty() || name.len() > MAX_HEADER_NAME_LEN {
            return Err(bad());
        }
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        if response && NOT_FROM_AUTH.contains(&header.as_str()) {
            return Err(ExternalAuthError::ResponseHeaderForbidden { name: name.clone() });
        }
        if !out.contains(&header) {
            out.push(header);
        }
    }
    Ok(out)
}

fn parse_method(text: &str) -> Result<Method, ExternalAuthError> {
    if !AUTH_METHODS.contains(&text) {
        return Err(ExternalAuthError::Method);
    }
    Method::from_bytes(text.as_bytes()).map_err(|_| ExternalAuthError::Method)
}

fn parse_redirect_param(text: &str) -> Result<&str, ExternalAuthError> {
    let ok = !text.is_empty()
        && text.len() <= MAX_REDIRECT_PARAM_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if ok {
        Ok(text)
    } else {
        Err(ExternalAuthError::RedirectParam {
            max: MAX_REDIRECT_PARAM_LEN,
        })
    }
}

fn parse_response_headers(names: &[String]) -> Result<Vec<HeaderName>, ExternalAuthError> {
    if names.len() > MAX_RESPONSE_HEADERS {
        return Err(ExternalAuthError::TooManyResponseHeaders {
            max: MAX_RESPONSE_HEADERS,
        });
    }
    let mut parsed: Vec<HeaderName> = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let name = name.trim();
        let bad = || ExternalAuthError::ResponseHeaderName {
            index: index + 1,
            max: MAX_HEADER_NAME_LEN,
        };
        if name.is_empty()
            || name.len() > MAX_HEADER_NAME_LEN
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad());
        }
        if NOT_FROM_AUTH.iter().any(|f| nginx_header_name_matches(name, f)) {
            return Err(ExternalAuthError::ResponseHeaderForbidden { name: name.to_owned() });
        }
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        if !parsed.iter().any(|p| nginx_header_name_matches(p.as_str(), name)) {
            parsed.push(header);
        }
    }
    Ok(parsed)
}

fn parse_request_redirect(text: &str) -> Result<HeaderValue, ExternalAuthError> {
    if text.len() > MAX_URL_LEN {
        return Err(ExternalAuthError::TooLong { max: MAX_URL_LEN });
    }
    if let Some(at) = text.bytes().position(|b| !is_uri_byte(b) || b == b'$') {
        return Err(ExternalAuthError::RequestRedirectCharacter {
            at,
            what: describe_byte(text.as_bytes()[at]),
        });
    }
    HeaderValue::from_str(text).map_err(|_| ExternalAuthError::RequestRedirectCharacter {
        at: 0,
        what: "?".to_owned(),
    })
}

fn parse_keepalive(spec: &ExternalAuthSpec) -> Result<KeepaliveConfig, (Field, ExternalAuthError)> {
    let too_large = |field: Field, max: u64| (field, ExternalAuthError::TooLarge { max });
    let connections = spec
        .keepalive_connections
        .unwrap_or(DEFAULT_KEEPALIVE_CONNECTIONS.into());
    if connections > MAX_KEEPALIVE_CONNECTIONS.into() {
        return Err(too_large(Field::Keepalive, MAX_KEEPALIVE_CONNECTIONS.into()));
    }
    let requests = spec.keepalive_requests.unwrap_or(DEFAULT_KEEPALIVE_REQUESTS.into());
    if requests > MAX_KEEPALIVE_REQUESTS.into() {
        return Err(too_large(Field::KeepaliveRequests, MAX_KEEPALIVE_REQUESTS.into()));
    }
    let timeout = spec
        .keepalive_timeout_seconds
        .unwrap_or(DEFAULT_KEEPALIVE_TIMEOUT.as_secs() as i64);
    if timeout > MAX_KEEPALIVE_TIMEOUT.as_secs() as i64 {
        return Err(too_large(Field::KeepaliveTimeout, MAX_KEEPALIVE_TIMEOUT.as_secs()));
    }
    // ingress-nginx: a negative count is 0; no requests or no idle time
    // turns keep-alive off.
    let mut connections = connections.max(0) as u32;
    if requests <= 0 || timeout <= 0 {
        connections = 0;
    }
    Ok(KeepaliveConfig {
        connections,
        requests: requests.max(0) as u32,
        idle_timeout: Duration::from_secs(timeout.max(0) as u64),
    })
}

/// Literal bytes a URL template may hold: a URI's, but `#` (a fragment
/// means nothing to a server) and `{`/`}` (only in `${name}`).
fn is_url_template_byte(b: u8) -> bool {
    is_uri_byte(b) && b != b'#'
}

/// The first `%` not followed by two hex digits.
fn bad_escape(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (0..bytes.len()).find(|&i| {
        bytes[i] == b'%'
            && !(i + 2 < bytes.len() && bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit())
    })
}

fn check_url_text(text: &str) -> Result<NginxTemplate, ExternalAuthError> {
    if text.is_empty() {
        return Err(ExternalAuthError::Empty);
    }
    if text.len() > MAX_URL_LEN {
        return Err(ExternalAuthError::TooLong { max: MAX_URL_LEN });
    }
    let template = NginxTemplate::parse(text, is_url_template_byte)?;
    if let Some(at) = bad_escape(text) {
        return Err(ExternalAuthError::UrlBadEscape { at });
    }
    Ok(template)
}

/// The scheme and the length of its `scheme://` prefix.
fn url_scheme(text: &str) -> Option<(Scheme, usize)> {
    let lower = |n: usize| text.get(..n).map(str::to_ascii_lowercase);
    if lower(7).as_deref() == Some("http://") {
        Some((Scheme::Http, 7))
    } else if lower(8).as_deref() == Some("https://") {
        Some((Scheme::Https, 8))
    } else {
        None
    }
}

impl AuthUrl {
    /// Parses and validates an `auth-url`.
    pub fn parse(text: &str) -> Result<AuthUrl, ExternalAuthError> {
        let template = check_url_text(text)?;
        let (scheme, prefix) = url_scheme(text).ok_or(ExternalAuthError::UrlScheme)?;
        // `scheme://` has no `$`, so the first part is a literal holding it.
        let mut parts = template.parts().to_vec();
        match parts.first_mut() {
            Some(Part::Literal(first)) if first.len() >= prefix => {
                first.drain(..prefix);
                if first.is_empty() {
                    parts.remove(0);
                }
            }
            _ => return Err(ExternalAuthError::UrlScheme),
        }
        // The authority runs to the first literal `/` or `?`.
        let mut authority = Vec::new();
        let mut rest = Vec::new();
        for part in parts {
            if !rest.is_empty() {
                rest.push(part);
                continue;
            }
            match part {
                Part::Literal(literal) => match literal.find(['/', '?']) {
                    Some(at) => {
                        if at > 0 {
                            authority.push(Part::Literal(literal[..at].to_owned()));
                        }
                        rest.push(Part::Literal(literal[at..].to_owned()));
                    }
                    None => authority.push(Part::Literal(literal)),
                },
                variable => authority.push(variable),
            }
        }
        if authority.is_empty() {
            return Err(ExternalAuthError::UrlNoHost);
        }
        if authority
            .iter()
            .any(|p| matches!(p, Part::Literal(l) if l.contains('@')))
        {
            return Err(ExternalAuthError::UrlUserinfo);
        }
        // The path and query: `/` when there is none (nginx would send its
        // internal location's name).
        match rest.first_mut() {
            None => rest.push(Part::Literal("/".to_owned())),
            Some(Part::Literal(first)) if first.starts_with('?') => first.insert(0, '/'),
            Some(_) => {}
        }
        let path_and_query = NginxTemplate::from_parts(rest);
        let authority_template = NginxTemplate::from_parts(authority);
        let authority = match authority_template.as_literal() {
            Some(text) => {
                let (authority, host) = parse_fixed_authority(&text)?;
                UrlAuthority::Fixed { authority, host }
            }
            None => template_authority(authority_template)?,
        };
        let fixed = match (&authority, path_and_query.as_literal()) {
            (UrlAuthority::Fixed { authority, .. }, Some(path)) => Some(
                Uri::builder()
                    .scheme(scheme.as_str())
                    .authority(authority.clone())
                    .path_and_query(path)
                    .build()
                    .map_err(|_| ExternalAuthError::UrlAuthority)?,
            ),
            _ => None,
        };
        Ok(AuthUrl {
            scheme,
            authority,
            path_and_query,
            fixed,
        })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host and port, when they hold no variable.
    pub fn fixed_authority(&self) -> Option<&Authority> {
        match &self.authority {
            UrlAuthority::Fixed { authority, .. } => Some(authority),
            UrlAuthority::Template { .. } => None,
        }
    }

    /// The port to connect to, when the host and port hold no variable.
    pub fn fixed_port(&self) -> Option<u16> {
        self.fixed_authority().map(|a| {
            a.port_u16().unwrap_or(match self.scheme {
                Scheme::Http => 80,
                Scheme::Https => 443,
            })
        })
    }

    /// The whole URI, when it holds no variable.
    pub fn fixed_uri(&self) -> Option<&Uri> {
        self.fixed.as_ref()
    }

    /// The absolute URI to ask for this request.
    pub fn uri(&self, facts: &ClientRequestFacts<'_>) -> Result<Uri, AuthRequestError> {
        if let Some(fixed) = &self.fixed {
            return Ok(fixed.clone());
        }
        let mut text = String::with_capacity(256);
        text.push_str(self.scheme.as_str());
        text.push_str("://");
        match &self.authority {
            UrlAuthority::Fixed { authority, .. } => text.push_str(authority.as_str()),
            UrlAuthority::Template { authority, .. } => authority.evaluate_uri(facts, &mut text),
        }
        self.path_and_query.evaluate_uri(facts, &mut text);
        if text.len() > MAX_EVALUATED_URL_LEN {
            return Err(AuthRequestError::UriTooLong {
                max: MAX_EVALUATED_URL_LEN,
            });
        }
        Uri::try_from(text).map_err(|_| AuthRequestError::Uri)
    }

    /// The `Host` header for this request.
    pub fn host_header(&self, facts: &ClientRequestFacts<'_>) -> Result<HeaderValue, AuthRequestError> {
        match &self.authority {
            UrlAuthority::Fixed { host, .. } => Ok(host.clone()),
            UrlAuthority::Template { host, .. } => {
                let mut text = String::new();
                host.evaluate_uri(facts, &mut text);
                HeaderValue::try_from(text).map_err(|_| AuthRequestError::HeaderValue { header: "Host" })
            }
        }
    }
}

/// A literal `host[:port]`: a DNS name (letters, digits, `.`, `-`, `_`) or
/// an address, and an optional port from 1 to 65535.
fn parse_fixed_authority(text: &str) -> Result<(Authority, HeaderValue), ExternalAuthError> {
    let (host, port) = if let Some(inner) = text.strip_prefix('[') {
        let close = inner.find(']').ok_or(ExternalAuthError::UrlAuthority)?;
        Ipv6Addr::from_str(&inner[..close]).map_err(|_| ExternalAuthError::UrlAuthority)?;
        let after = &inner[close + 1..];
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(ExternalAuthError::UrlAuthority)?),
        };
        (&text[..close + 2], port)
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(ExternalAuthError::UrlNoHost);
    }
    if !host.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(ExternalAuthError::UrlAuthority);
    }
    if host.contains("..") {
        return Err(ExternalAuthError::UrlDoubleDot);
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p > 0);
        if !valid {
            return Err(ExternalAuthError::UrlAuthority);
        }
    }
    let authority = Authority::from_str(text).map_err(|_| ExternalAuthError::UrlAuthority)?;
    let host = HeaderValue::from_str(host).map_err(|_| ExternalAuthError::UrlAuthority)?;
    Ok((authority, host))
}

/// An authority with variables: only the client's host, with literal
/// name characters and an optional literal `:port`.
fn template_authority(template: NginxTemplate) -> Result<UrlAuthority, ExternalAuthError> {
    for part in template.parts() {
        match part {
            Part::Variable(Variable::Host | Variable::HttpHost) => {}
            Part::Variable(_) => return Err(ExternalAuthError::UrlHostVariable),
            Part::Literal(text) => {
                if !text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
                {
                    return Err(ExternalAuthError::UrlAuthority);
                }
            }
        }
    }
    let mut host_parts = template.parts().to_vec();
    if let Some(Part::Literal(last)) = host_parts.last_mut() {
        if let Some((before, port)) = last.rsplit_once(':') {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                *last = before.to_owned();
            }
        }
        if last.is_empty() {
            host_parts.pop();
        }
    }
    Ok(UrlAuthority::Template {
        authority: template,
        host: NginxTemplate::from_parts(host_parts),
    })
}

/// Parses `auth-signin` and adds the redirect parameter.
fn parse_signin(text: &str, param: &str) -> Result<NginxTemplate, ExternalAuthError> {
    check_url_text(text)?;
    let path = text.starts_with('/') && !text.starts_with("//");
    let absolute = url_scheme(text).is_some_and(|(_, prefix)| text.len() > prefix);
    if !path && !absolute {
        return Err(ExternalAuthError::SigninForm);
    }
    if let Some((_, prefix)) = url_scheme(text) {
        let rest = &text[prefix..];
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        if authority.contains('@') {
            return Err(ExternalAuthError::UrlUserinfo);
        }
    }
    let built = build_auth_sign_url(text, param);
    Ok(NginxTemplate::parse(&built, is_url_template_byte)?)
}

/// ingress-nginx's `buildAuthSignURL` (template.go), byte for byte: with no
/// query, `?<param>=...`; with a query that has a non-empty `<param>`, the
/// URL unchanged; otherwise `&<param>=...`; `...` being
/// `$pass_access_scheme://$http_host$escaped_request_uri`. The query is
/// read as Go's `url.Query()` reads it (a `?` alone is an empty query, so
/// `https://x/?` becomes `https://x/??rd=...`, as in ingress-nginx).
pub fn build_auth_sign_url(signin: &str, param: &str) -> String {
    const RD: &str = "$pass_access_scheme://$http_host$escaped_request_uri";
    let query = go_parse_query(signin.split_once('?').map_or("", |(_, q)| q));
    if query.is_empty() {
        return format!("{signin}?{param}={RD}");
    }
    let first = query.iter().find(|(key, _)| key == param.as_bytes());
    if first.is_some_and(|(_, value)| !value.is_empty()) {
        return signin.to_owned();
    }
    format!("{signin}&{param}={RD}")
}

/// Go's `url.ParseQuery`, keeping the pairs that parse: `&`-separated, a
/// pair with `;` skipped, `+` read as space, malformed `%` skipping the
/// pair.
fn go_parse_query(query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut pairs = Vec::new();
    for pair in query.split('&') {
        if pair.contains(';') || pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if let (Some(key), Some(value)) = (go_query_unescape(key), go_query_unescape(value)) {
            pairs.push((key, value));
        }
    }
    pairs
}

fn go_query_unescape(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let text = std::str::from_utf8(hex).ok()?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(text, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Why the subrequest could not be built for this request; the request gets
/// a 500 ([`decide_failure`] with [`AuthFailure::Subrequest`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthRequestError {
    #[error("the auth URL built for this request is not a valid URI")]
    Uri,
    #[error("the auth URL built for this request is longer than {max} bytes")]
    UriTooLong { max: usize },
    #[error("the {header} header for the auth service would not be a valid header value")]
    HeaderValue { header: &'static str },
}

/// The subrequest to send the auth service: absolute URI (the HTTP client
/// connects to its authority), method, headers in the order nginx sends
/// them (those it sets, then the client's), no body. `Connection` is left
/// to the HTTP client (ingress-nginx sends `close`, or nothing with
/// keep-alive). With a method other than GET or HEAD the client may add
/// `Content-Length: 0`, which nginx would not send; the auth service sees
/// an empty body either way.
pub fn auth_request(cfg: &ExternalAuthConfig, facts: &ClientRequestFacts<'_>) -> Result<Request<()>, AuthRequestError> {
    match &cfg.rules {
        Rules::IngressNginx(n) => nginx_request(cfg, n, facts),
        Rules::GatewayApi(g) => gateway_request(cfg, g, facts),
    }
}

/// [`auth_request`] with ingress-nginx's rules.
fn nginx_request(
    cfg: &ExternalAuthConfig,
    rules: &NginxRules,
    facts: &ClientRequestFacts<'_>,
) -> Result<Request<()>, AuthRequestError> {
    let uri = cfg.url.uri(facts)?;
    let value = |text: &str, header: &'static str| {
        HeaderValue::from_str(text).map_err(|_| AuthRequestError::HeaderValue { header })
    };
    let mut headers = HeaderMap::with_capacity(facts.headers.keys_len() + 12);
    if !facts.request_id.is_empty() {
        headers.insert(X_REQUEST_ID.clone(), value(facts.request_id, "X-Request-ID")?);
    }
    if cfg.method_is_set() {
        headers.insert(X_ORIGINAL_URI.clone(), value(facts.request_uri, "X-Original-URI")?);
        headers.insert(X_SCHEME.clone(), HeaderValue::from_static(facts.scheme.as_str()));
    }
    headers.insert(header::HOST, cfg.url.host_header(facts)?);
    let original_url = format!("{}://{}{}", facts.scheme.as_str(), facts.host, facts.request_uri);
    headers.insert(X_ORIGINAL_URL.clone(), value(&original_url, "X-Original-URL")?);
    headers.insert(
        X_ORIGINAL_METHOD.clone(),
        value(facts.method.as_str(), "X-Original-Method")?,
    );
    headers.insert(X_SENT_FROM.clone(), HeaderValue::from_static(SENT_FROM));
    headers.insert(X_REAL_IP.clone(), value(&facts.client_addr.to_string(), "X-Real-IP")?);
    if !facts.forwarded_for.is_empty() {
        headers.insert(X_FORWARDED_FOR.clone(), value(facts.forwarded_for, "X-Forwarded-For")?);
    }
    let redirect = match &rules.request_redirect {
        Some(redirect) => redirect.clone(),
        None => value(facts.request_uri, "X-Auth-Request-Redirect")?,
    };
    headers.insert(X_AUTH_REQUEST_REDIRECT.clone(), redirect);

    let named_by_connection: Vec<&[u8]> = facts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
        .collect();
    for (name, value) in facts.headers {
        let name_text = name.as_str();
        if NOT_PASSED.contains(&name_text)
            || named_by_connection
                .iter()
                .any(|token| token.eq_ignore_ascii_case(name_text.as_bytes()))
        {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }

    let mut request = Request::new(());
    *request.method_mut() = cfg.method();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Where to connect for a subrequest [`auth_request`] built: its scheme,
/// host (an IPv6 address in brackets) and port (80 or 443 unless the URL
/// gives one). For an auth URL without variables in its host this is
/// always [`AuthUrl::fixed_authority`] and [`AuthUrl::fixed_port`].
pub fn endpoint(request: &Request<()>) -> Option<(Scheme, &str, u16)> {
    let uri = request.uri();
    let scheme = match uri.scheme_str()? {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return None,
    };
    let default = match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    };
    Some((scheme, uri.host()?, uri.port_u16().unwrap_or(default)))
}

/// Removes, from the client's request headers, every header that an
/// `auth-response-headers` name matches as nginx matches names (ASCII case
/// and `-`/`_` ignored), before the decision's headers are added: the
/// upstream must see only what the auth service said under those names,
/// never a client's forgery (nginx's `proxy_set_header` replaces them the
/// same way, even when the auth service sent nothing).
///
/// With Gateway API's rules, the `allowedResponseHeaders` are removed by
/// name (no `-`/`_` folding: that is nginx's); with none listed, every
/// header of the answer is copied, and the caller replaces the client's
/// copies of the names the answer carries (see [`Decision::Allow`]).
pub fn strip_client_copies(cfg: &ExternalAuthConfig, headers: &mut HeaderMap) {
    let nginx = cfg.flavour() == Flavour::IngressNginx;
    let doomed = |name: &HeaderName| {
        cfg.response_headers().iter().any(|configured| {
            if nginx {
                nginx_header_name_matches(name.as_str(), configured.as_str())
            } else {
                name == configured
            }
        })
    };
    if !headers.keys().any(doomed) {
        return;
    }
    // Rebuilt rather than removed from, which would reorder the rest.
    let mut kept = HeaderMap::with_capacity(headers.keys_len());
    for (name, value) in headers.iter() {
        if !doomed(name) {
            kept.append(name.clone(), value.clone());
        }
    }
    *headers = kept;
}

/// The key to cache this request's answer under, when the policy caches
/// and the key has a value for this request.
pub fn cache_key(cfg: &ExternalAuthConfig, facts: &ClientRequestFacts<'_>) -> Option<CacheKey> {
    cfg.cache.as_ref()?.key().evaluate(facts)
}

/// What of an answer to keep in the cache: the status, every
/// `WWW-Authenticate`, and the headers `auth-response-headers` matches.
/// Not `Set-Cookie`: an answer with one is never cached.
pub fn cacheable_answer(cfg: &ExternalAuthConfig, status: u16, headers: &HeaderMap) -> CachedAnswer {
    let mut kept = HeaderMap::new();
    for (name, value) in headers {
        let keep = name == header::WWW_AUTHENTICATE
            || cfg
                .response_headers()
                .iter()
                .any(|configured| nginx_header_name_matches(name.as_str(), configured.as_str()));
        if keep {
            kept.append(name.clone(), value.clone());
        }
    }
    CachedAnswer { status, headers: kept }
}

/// What to do with the client's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Proxy it. First [`strip_client_copies`], then set
    /// `upstream_headers` on the upstream request: every value a name had
    /// (the client's) removed, then each given value appended, in order
    /// (ingress-nginx's rules give one value per name, Gateway API's keep
    /// the answer's lines); add each `set_cookie` to the client's response
    /// when [`set_cookie_applies`] to its status.
    Allow {
        upstream_headers: Vec<(HeaderName, HeaderValue)>,
        set_cookie: Vec<HeaderValue>,
    },
    /// Answer the client with `status` and `headers` (and an empty or
    /// generic body).
    Deny {
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
        reason: DenyReason,
    },
}

/// Why a request is denied, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The auth service said 401, passed on.
    Unauthorized,
    /// The auth service said 401, turned into a redirect to sign in.
    SignIn,
    /// The auth service said 403, passed on.
    Forbidden,
    /// The auth service refused with this status (a 3xx or 4xx, Gateway
    /// API's rules), passed on with its headers.
    Denied(u16),
    /// The auth service answered neither 2xx, 401 nor 403 (Gateway API's
    /// rules: a 5xx, a 304, or a 1xx or 2xx other than 200): a 500.
    UnexpectedStatus(u16),
    /// A value to copy from the answer is longer than
    /// [`MAX_COPIED_VALUE_LEN`]: a 500.
    AnswerTooLarge,
    /// The sign-in URL could not be built for this request: a 500.
    SignInUrl,
    /// No answer: a 500.
    Failed(AuthFailure),
}

/// Why there is no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// The auth service did not answer in time.
    Timeout,
    /// Connecting, sending or reading failed.
    Transport,
    /// The subrequest could not be built ([`AuthRequestError`]).
    Subrequest,
}

/// The decision when there is no answer: a 500, as nginx gives when its
/// subrequest fails. The caller logs the cause.
pub fn decide_failure(cause: AuthFailure) -> Decision {
    Decision::Deny {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        headers: Vec::new(),
        reason: DenyReason::Failed(cause),
    }
}

/// Whether the auth service's `Set-Cookie` goes on a client response of
/// this status: always with `auth-always-set-cookie`, else only for the
/// statuses nginx's `add_header` applies to.
pub fn set_cookie_applies(cfg: &ExternalAuthConfig, status: StatusCode) -> bool {
    cfg.always_set_cookie() || ADD_HEADER_STATUSES.contains(&status.as_u16())
}

/// The decision from the auth service's answer (fresh, or a
/// [`CachedAnswer`]'s status and headers). `facts` are needed to build the
/// sign-in redirect.
pub fn decide(cfg: &ExternalAuthConfig, status: u16, headers: &HeaderMap, facts: &ClientRequestFacts<'_>) -> Decision {
    let decision = match &cfg.rules {
        Rules::IngressNginx(n) => build_decision(n, status, headers, facts),
        Rules::GatewayApi(g) => gateway_decision(g, status, headers),
    };
    match decision {
        Ok(decision) => decision,
        Err(reason) => Decision::Deny {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            headers: Vec::new(),
            reason,
        },
    }
}

fn build_decision(
    cfg: &NginxRules,
    status: u16,
    headers: &HeaderMap,
    facts: &ClientRequestFacts<'_>,
) -> Result<Decision, DenyReason> {
    let set_cookie = || -> Result<Vec<(HeaderName, HeaderValue)>, DenyReason> {
        copied(headers.get_all(header::SET_COOKIE).iter().filter(|v| !v.is_empty()))
            .map(|values| values.into_iter().map(|v| (header::SET_COOKIE, v)).collect())
    };
    let set_cookie_if = |applies: bool| if applies { set_cookie() } else { Ok(Vec::new()) };
    let deny = |status: StatusCode, headers, reason| Decision::Deny {
        status,
        headers,
        reason,
    };
    Ok(match status {
        200..=299 => {
            let mut upstream_headers = Vec::with_capacity(cfg.response_headers.len());
            for name in &cfg.response_headers {
                if let Some(value) = joined(headers, name)? {
                    upstream_headers.push((name.clone(), value));
                }
            }
            Decision::Allow {
                upstream_headers,
                set_cookie: set_cookie()?.into_iter().map(|(_, v)| v).collect(),
            }
        }
        401 => {
            let mut out = Vec::new();
            if let Some(signin) = &cfg.signin {
                let mut location = String::with_capacity(256);
                signin.evaluate_uri(facts, &mut location);
                if location.len() > MAX_EVALUATED_URL_LEN {
                    return Err(DenyReason::SignInUrl);
                }
                let location = HeaderValue::try_from(location).map_err(|_| DenyReason::SignInUrl)?;
                out.push((header::LOCATION, location));
            }
            for value in copied(headers.get_all(header::WWW_AUTHENTICATE).iter())? {
                out.push((header::WWW_AUTHENTICATE, value));
            }
            if cfg.signin.is_some() {
                // nginx's `error_page 401 = @signin` keeps the response
                // headers set so far, so the 302 carries the challenges
                // too; the sign-in location's `add_header` (302 is one of
                // its statuses) adds the cookie.
                out.extend(set_cookie()?);
                deny(StatusCode::FOUND, out, DenyReason::SignIn)
            } else {
                out.extend(set_cookie_if(cfg.always_set_cookie)?);
                deny(StatusCode::UNAUTHORIZED, out, DenyReason::Unauthorized)
            }
        }
        403 => deny(
            StatusCode::FORBIDDEN,
            set_cookie_if(cfg.always_set_cookie)?,
            DenyReason::Forbidden,
        ),
        other => deny(
            StatusCode::INTERNAL_SERVER_ERROR,
            set_cookie_if(cfg.always_set_cookie)?,
            DenyReason::UnexpectedStatus(other),
        ),
    })
}

/// [`auth_request`] with Gateway API's rules (GEP-1494, `protocol: HTTP`),
/// as Envoy's HTTP `ext_authz` builds it, from which the API's fields come:
/// the client's method; the path `http.path` followed by the client's path
/// and query, as received (joined as path segments: `/auth/` and `/auth`
/// both make `/auth/events`, where Envoy's plain concatenation would give
/// `//`); `Host` the client's (Envoy keeps the request's
/// `:authority`; the connection still goes to the Service); `Content-Length:
/// 0` (no body is forwarded, and the API asks for the true length);
/// every `Authorization` line; then, for each `allowedHeaders` name, the
/// client's lines of it. Nothing else: no `X-Forwarded-*`, no request id.
/// Names in `allowedHeaders` that are always sent are not sent twice, and
/// hop-by-hop ones (which describe the client's connection, not its
/// request) never are.
fn gateway_request(
    cfg: &ExternalAuthConfig,
    rules: &GatewayApiRules,
    facts: &ClientRequestFacts<'_>,
) -> Result<Request<()>, AuthRequestError> {
    let authority = cfg.url.fixed_authority().ok_or(AuthRequestError::Uri)?;
    let mut target = String::with_capacity(rules.path_prefix.len() + facts.request_uri.len());
    target.push_str(&rules.path_prefix);
    target.push_str(facts.request_uri);
    if target.len() > MAX_EVALUATED_URL_LEN {
        return Err(AuthRequestError::UriTooLong {
            max: MAX_EVALUATED_URL_LEN,
        });
    }
    let uri = Uri::builder()
        .scheme(cfg.url.scheme().as_str())
        .authority(authority.clone())
        .path_and_query(target)
        .build()
        .map_err(|_| AuthRequestError::Uri)?;
    let mut headers = HeaderMap::with_capacity(4 + rules.allowed_headers.len());
    let host = if facts.host.is_empty() {
        cfg.url.host_header(facts)?
    } else {
        HeaderValue::from_str(facts.host).map_err(|_| AuthRequestError::HeaderValue { header: "Host" })?
    };
    headers.insert(header::HOST, host);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    for value in facts.headers.get_all(header::AUTHORIZATION) {
        headers.append(header::AUTHORIZATION, value.clone());
    }
    for name in &rules.allowed_headers {
        if ALWAYS_SENT.contains(&name.as_str()) || HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        for value in facts.headers.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let mut request = Request::new(());
    *request.method_mut() = facts.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}

/// The decision with Gateway API's rules. The API says only that `200`
/// authorises and any other status is a failure, and that any problem
/// reaching the service must fail closed; what the client gets follows
/// Envoy's HTTP `ext_authz`, the API's model, where the API is silent:
/// - 200: through, with `allowedResponseHeaders` (or, none listed, every
///   header of the answer but those [`never_copied_upstream`]) set on the
///   upstream request, each line kept;
/// - a 3xx (but 304) or a 4xx: refused with that status and the answer's
///   headers (a 302's `Location`, a 401's `WWW-Authenticate`, `Set-Cookie`:
///   what a sign-in flow needs), but hop-by-hop ones, `Host` and the
///   `Content-*` of a body that is not passed on;
/// - anything else, a 5xx (Envoy counts it as an error, not a denial), a
///   304 (nothing to revalidate) or a 1xx or 2xx other than 200 (a refusal
///   that would read as success): 500, ingress-nginx's answer when its
///   auth subrequest fails, as for no answer at all ([`decide_failure`]).
///   Envoy answers 403 there by default; 500 tells monitoring that the
///   auth service, not the client, is at fault.
fn gateway_decision(rules: &GatewayApiRules, status: u16, headers: &HeaderMap) -> Result<Decision, DenyReason> {
    match status {
        200 => {
            let mut upstream_headers = Vec::new();
            for (name, value) in headers {
                let wanted = if rules.allowed_response_headers.is_empty() {
                    !never_copied_upstream(name)
                } else {
                    rules.allowed_response_headers.contains(name)
                };
                if wanted {
                    upstream_headers.push((name.clone(), copied(std::iter::once(value))?.remove(0)));
                }
            }
            Ok(Decision::Allow {
                upstream_headers,
                set_cookie: Vec::new(),
            })
        }
        300..=499 if status != 304 => {
            let mut out = Vec::new();
            for (name, value) in headers {
                // The same set: the client gets ssegate's short text, not
                // the answer's body, so its `Content-*` would mislabel it.
                if !never_copied_upstream(name) {
                    out.push((name.clone(), copied(std::iter::once(value))?.remove(0)));
                }
            }
            let status_code = StatusCode::from_u16(status).map_err(|_| DenyReason::UnexpectedStatus(status))?;
            Ok(Decision::Deny {
                status: status_code,
                headers: out,
                reason: DenyReason::Denied(status),
            })
        }
        other => Ok(Decision::Deny {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            headers: Vec::new(),
            reason: DenyReason::UnexpectedStatus(other),
        }),
    }
}

/// Headers of an allowing answer that are not copied onto the upstream
/// request when `allowedResponseHeaders` is empty ("all headers except
/// Authority or Host", says the API): besides `Host`, those that frame a
/// message or manage a connection, and the `Content-*` that describe the
/// answer's own body. Copied, they would reframe or relabel the client's
/// request (an auth service's `Content-Type: text/plain` on a JSON POST).
pub fn never_copied_upstream(name: &HeaderName) -> bool {
    NOT_FROM_AUTH.contains(&name.as_str()) || name.as_str().starts_with("content-")
}

/// Values copied as they are, each within [`MAX_COPIED_VALUE_LEN`].
fn copied<'h>(values: impl Iterator<Item = &'h HeaderValue>) -> Result<Vec<HeaderValue>, DenyReason> {
    values
        .map(|v| {
            if v.len() > MAX_COPIED_VALUE_LEN {
                Err(DenyReason::AnswerTooLarge)
            } else {
                Ok(v.clone())
            }
        })
        .collect()
}

/// nginx's `$upstream_http_<name>`: every answer header the name matches
/// (ASCII case and `-`/`_` ignored), joined with `", "`; `None` when there
/// is none or the result is empty (nginx's `proxy_set_header` then sends
/// nothing).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Result<Option<HeaderValue>, DenyReason> {
    let mut value: Vec<u8> = Vec::new();
    let mut found = false;
    for (key, v) in headers {
        if !nginx_header_name_matches(key.as_str(), name.as_str()) {
            continue;
        }
        if found {
            value.extend_from_slice(b", ");
        }
        found = true;
        value.extend_from_slice(v.as_bytes());
        if value.len() > MAX_COPIED_VALUE_LEN {
            return Err(DenyReason::AnswerTooLarge);
        }
    }
    if value.is_empty() {
        return Ok(None);
    }
    // Joined valid values with ", " are valid.
    HeaderValue::from_bytes(&value)
        .map(Some)
        .map_err(|_| DenyReason::AnswerTooLarge)
}

#[cfg(test)]
#[path = "external_auth_tests.rs"]
mod tests;
