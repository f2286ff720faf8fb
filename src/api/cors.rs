//! Cross-origin resource sharing for a Route: the spec, its validation, and
//! the pure decisions (is this origin allowed, which headers to send).
//!
//! ssegate owns CORS on a Route that has a policy: it answers preflights
//! itself, adds the headers to streams and plain replies alike, and drops
//! any `Access-Control-*` headers the upstream sent, so the browser never
//! sees two conflicting answers.

use super::parse_duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Route's CORS policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorsSpec {
    /// Origins allowed to read responses: exact (`https://app.example.com`),
    /// a subdomain wildcard (`https://*.example.com`), or `*` for any origin
    /// (not with `allowCredentials`).
    #[schemars(schema_with = "super::schema::cors_origins")]
    pub allow_origins: Vec<String>,
    /// Lets browsers send cookies and HTTP authentication
    /// (`EventSource(url, {withCredentials: true})`). The allowed origin is
    /// then echoed, never `*`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
    /// Request headers allowed beyond the CORS-safelisted ones, or `*`.
    /// `Last-Event-ID` is always allowed: EventSource sends it when it
    /// reconnects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::header_names")]
    pub allow_headers: Vec<String>,
    /// Methods allowed; defaults to `GET`, `HEAD` and `POST`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::methods")]
    pub allow_methods: Vec<String>,
    /// Response headers that scripts may read beyond the safelisted ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::header_names")]
    pub expose_headers: Vec<String>,
    /// How long browsers may cache a preflight answer, such as `10m`.
    /// Browsers use their own default (5s) when it is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::duration")]
    pub max_age: Option<String>,
}

/// An allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OriginPattern {
    Any,
    /// `scheme://host[:port]`, lower-case.
    Exact(String),
    /// `https://*.example.com` is scheme `https://` and suffix `.example.com`.
    Subdomains {
        scheme: String,
        suffix: String,
    },
}

/// A validated CORS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsPolicy {
    origins: Vec<OriginPattern>,
    credentials: bool,
    /// Lower-case names (`last-event-id` included for a Route); `None` for `*`.
    allow_headers: Option<String>,
    allow_methods: String,
    expose_headers: Option<String>,
    max_age: Option<u64>,
}

/// Headers a preflight or a response gets: (name, value).
pub type CorsHeaders = Vec<(&'static str, String)>;

const DEFAULT_METHODS: &str = "GET, HEAD, POST";
const MAX_AGE_LIMIT: u64 = 86_400;

impl CorsSpec {
    /// Checks the policy; each error's field is relative to the policy
    /// (`allowOrigins[0]`), for the caller to place (`spec.cors.`...).
    pub fn validate(&self) -> Result<CorsPolicy, Vec<super::FieldError>> {
        self.validate_as(false)
    }

    /// The same, with Gateway API's rules for an HTTPRoute `CORS` filter
    /// (its conformance suite checks them): `allowOrigins: ["*"]` with
    /// `allowCredentials` is allowed and echoes each request's origin, and
    /// `allowHeaders` is answered as listed, without the `Last-Event-ID`
    /// a Route adds (list it for EventSource reconnects).
    pub fn validate_gateway_api(&self) -> Result<CorsPolicy, Vec<super::FieldError>> {
        self.validate_as(true)
    }

    fn validate_as(&self, gateway_api: bool) -> Result<CorsPolicy, Vec<super::FieldError>> {
        let mut errors: Vec<(String, String)> = Vec::new();
        if self.allow_origins.is_empty() {
            errors.push(("allowOrigins".into(), "list at least one origin, or *".into()));
        }
        let mut origins = Vec::new();
        for (i, o) in self.allow_origins.iter().enumerate() {
            match parse_origin(o) {
                Ok(OriginPattern::Any) if self.allow_credentials && !gateway_api => errors.push((
                    format!("allowOrigins[{i}]"),
                    "* cannot be combined with allowCredentials: it would let every site read \
                     responses with the user's cookies; list the origins"
                        .into(),
                )),
                Ok(p) => origins.push(p),
                Err(msg) => errors.push((format!("allowOrigins[{i}]"), msg)),
            }
        }
        let mut names = |field: &str, list: &[String]| -> Vec<String> {
            let mut out = Vec::new();
            for (i, h) in list.iter().enumerate() {
                if h == "*" || is_token(h) {
                    out.push(h.to_ascii_lowercase());
                } else {
                    errors.push((format!("{field}[{i}]"), format!("{h:?} is not a header name")));
                }
            }
            out
        };
        let mut allow_headers = names("allowHeaders", &self.allow_headers);
        let expose_headers = names("exposeHeaders", &self.expose_headers);
        let mut methods = Vec::new();
        for (i, m) in self.allow_methods.iter().enumerate() {
            if m == "*" || (is_token(m) && m.bytes().all(|b| b.is_ascii_uppercase())) {
                methods.push(m.clone());
            } else {
                errors.push((
                    format!("allowMethods[{i}]"),
                    format!("{m:?} is not an upper-case method name such as GET"),
                ));
            }
        }
        let max_age = match &self.max_age {
            None => None,
            Some(text) => match parse_duration(text) {
                Ok(d) if d.as_secs() <= MAX_AGE_LIMIT => Some(d.as_secs()),
                Ok(_) => {
                    errors.push(("maxAge".into(), "must be at most 24h".into()));
                    None
                }
                Err(e) => {
                    errors.push(("maxAge".into(), e.to_string()));
                    None
                }
            },
        };
        if !errors.is_empty() {
            return Err(errors
                .into_iter()
                .map(|(field, message)| super::FieldError { field, message })
                .collect());
        }
        let any_header = allow_headers.iter().any(|h| h == "*");
        if !gateway_api && !any_header && !allow_headers.iter().any(|h| h == "last-event-id") {
            allow_headers.insert(0, "last-event-id".into());
        }
        Ok(CorsPolicy {
            origins,
            credentials: self.allow_credentials,
            allow_headers: (!any_header).then(|| allow_headers.join(", ")),
            allow_methods: if methods.is_empty() {
                DEFAULT_METHODS.to_owned()
            } else {
                methods.join(", ")
            },
            expose_headers: (!expose_headers.is_empty()).then(|| expose_headers.join(", ")),
            max_age,
        })
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn parse_origin(text: &str) -> Result<OriginPattern, String> {
    if text == "*" {
        return Ok(OriginPattern::Any);
    }
    let lower = text.to_ascii_lowercase();
    let bad = || {
        format!("{text:?} is not an origin: use scheme://host[:port] such as https://app.example.com, https://*.example.com, or *")
    };
    let (scheme, rest) = lower.split_once("://").ok_or_else(bad)?;
    if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
        return Err(bad());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        Some(_) => return Err(bad()),
        None => (rest, None),
    };
    let (wildcard, host) = match host.strip_prefix("*.") {
        Some(h) => (true, h),
        None => (false, host),
    };
    let label_ok =
        |l: &str| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(bad());
    }
    let hostport = match port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    Ok(if wildcard {
        OriginPattern::Subdomains {
            scheme: format!("{scheme}://"),
            suffix: format!(".{hostport}"),
        }
    } else {
        OriginPattern::Exact(format!("{scheme}://{hostport}"))
    })
}

impl OriginPattern {
    fn matches(&self, origin: &str) -> bool {
        match self {
            OriginPattern::Any => true,
            OriginPattern::Exact(o) => o.eq_ignore_ascii_case(origin),
            OriginPattern::Subdomains { scheme, suffix } => {
                let origin = origin.to_ascii_lowercase();
                let Some(rest) = origin.strip_prefix(scheme.as_str()) else {
                    return false;
                };
                match rest.strip_suffix(suffix.as_str()) {
                    // At least one whole label before the suffix, and nothing else.
                    Some(sub) => !sub.is_empty() && !sub.contains([':', '/', '@']),
                    None => false,
                }
            }
        }
    }
}

impl CorsPolicy {
    pub fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|p| p.matches(origin))
    }

    /// The `Access-Control-Allow-Origin` value: `*` for a public policy,
    /// else the origin itself.
    fn allow_origin(&self, origin: &str) -> String {
        if !self.credentials && self.origins.contains(&OriginPattern::Any) {
            "*".to_owned()
        } else {
            origin.to_owned()
        }
    }

    /// Headers for a response to an allowed `origin`.
    pub fn response_headers(&self, origin: &str) -> CorsHeaders {
        let mut out = vec![("access-control-allow-origin", self.allow_origin(origin))];
        if self.credentials {
            out.push(("access-control-allow-credentials", "true".into()));
        }
        if let Some(expose) = &self.expose_headers {
            out.push(("access-control-expose-headers", expose.clone()));
        }
        out
    }

    /// Headers for a preflight from an allowed `origin`. `requested` is the
    /// `Access-Control-Request-Headers` value, echoed when every header is
    /// allowed; `method` the `Access-Control-Request-Method`, echoed when
    /// every method is allowed on a credentialed policy (where browsers take
    /// `*` literally).
    pub fn preflight_headers(&self, origin: &str, requested: Option<&str>, method: Option<&str>) -> CorsHeaders {
        let mut out = vec![("access-control-allow-origin", self.allow_origin(origin))];
        if self.credentials {
            out.push(("access-control-allow-credentials", "true".into()));
        }
        let methods = match method.filter(|m| !m.is_empty()) {
            Some(m) if self.credentials && self.allow_methods == "*" => m.to_owned(),
            _ => self.allow_methods.clone(),
        };
        out.push(("access-control-allow-methods", methods));
        match &self.allow_headers {
            Some(list) => out.push(("access-control-allow-headers", list.clone())),
            // `*` is literal on credentialed requests, so echo what was asked for.
            None if self.credentials => {
                if let Some(r) = requested.filter(|r| !r.is_empty()) {
                    out.push(("access-control-allow-headers", r.to_owned()));
                }
            }
            None => out.push(("access-control-allow-headers", "*".into())),
        }
        // Browsers read it on actual responses only; Gateway API's suite
        // expects it on preflights too, and it costs nothing there.
        if let Some(expose) = &self.expose_headers {
            out.push(("access-control-expose-headers", expose.clone()));
        }
        if let Some(age) = self.max_age {
            out.push(("access-control-max-age", age.to_string()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str], credentials: bool) -> CorsPolicy {
        CorsSpec {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_credentials: credentials,
            ..Default::default()
        }
        .validate()
        .unwrap()
    }

    #[test]
    fn origin_patterns() {
        let p = policy(
            &[
                "https://app.example.com",
                "https://*.example.org",
                "http://localhost:3000",
            ],
            false,
        );
        assert!(p.allows("https://app.example.com"));
        assert!(p.allows("HTTPS://APP.example.com"));
        assert!(!p.allows("http://app.example.com"), "scheme matters");
        assert!(!p.allows("https://app.example.com:8443"), "port matters");
        assert!(p.allows("https://a.example.org"));
        assert!(p.allows("https://a.b.example.org"));
        assert!(!p.allows("https://example.org"), "the wildcard needs a subdomain");
        assert!(!p.allows("https://evilexample.org"));
        assert!(!p.allows("https://x.example.org:444"));
        assert!(p.allows("http://localhost:3000"));
        assert!(!p.allows("null"));
    }

    #[test]
    fn public_policy_answers_star_and_credentials_echo() {
        let public = policy(&["*"], false);
        assert_eq!(
            public.response_headers("https://x.test"),
            vec![("access-control-allow-origin", "*".to_string())]
        );
        let private = policy(&["https://x.test"], true);
        assert_eq!(
            private.response_headers("https://x.test"),
            vec![
                ("access-control-allow-origin", "https://x.test".to_string()),
                ("access-control-allow-credentials", "true".to_string())
            ]
        );
    }

    #[test]
    fn preflight_allows_last_event_id_by_default() {
        let p = CorsSpec {
            allow_origins: vec!["https://x.test".into()],
            allow_headers: vec!["Authorization".into()],
            max_age: Some("10m".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let h = p.preflight_headers("https://x.test", Some("last-event-id"), Some("GET"));
        assert!(h.contains(&("access-control-allow-headers", "last-event-id, authorization".into())));
        assert!(h.contains(&("access-control-allow-methods", "GET, HEAD, POST".into())));
        assert!(h.contains(&("access-control-max-age", "600".into())));
    }

    #[test]
    fn rejects_unsafe_or_malformed_policies() {
        let errors = CorsSpec {
            allow_origins: vec![
                "*".into(),
                "https://app.example.com/".into(),
                "app.example.com".into(),
                "https://a.*.com".into(),
            ],
            allow_credentials: true,
            allow_methods: vec!["get".into()],
            allow_headers: vec!["bad header".into()],
            max_age: Some("48h".into()),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "allowOrigins[0]",
                "allowOrigins[1]",
                "allowOrigins[2]",
                "allowOrigins[3]",
                "allowHeaders[0]",
                "allowMethods[0]",
                "maxAge"
            ]
        );
        assert!(errors[0].message.contains("allowCredentials"), "{}", errors[0].message);
    }

    /// Gateway API's CORS filter, as its conformance suite checks it:
    /// headers as listed, `*` origins and methods echoed when credentialed.
    #[test]
    fn gateway_api_flavour_lists_headers_as_given_and_echoes_wildcards_with_credentials() {
        let listed = CorsSpec {
            allow_origins: vec!["https://www.foo.com".into()],
            allow_headers: vec!["x-header-1".into(), "x-header-2".into()],
            allow_methods: vec!["GET".into(), "OPTIONS".into()],
            expose_headers: vec!["x-header-3".into()],
            ..Default::default()
        };
        let h = listed.validate_gateway_api().unwrap().preflight_headers(
            "https://www.foo.com",
            Some("x-header-1"),
            Some("GET"),
        );
        assert!(
            h.contains(&("access-control-allow-headers", "x-header-1, x-header-2".into())),
            "{h:?}"
        );
        assert!(
            h.contains(&("access-control-allow-methods", "GET, OPTIONS".into())),
            "{h:?}"
        );
        assert!(
            h.contains(&("access-control-expose-headers", "x-header-3".into())),
            "{h:?}"
        );
        // A Route's policy keeps adding Last-Event-ID.
        let h = listed
            .validate()
            .unwrap()
            .preflight_headers("https://www.foo.com", None, None);
        assert!(h.contains(&(
            "access-control-allow-headers",
            "last-event-id, x-header-1, x-header-2".into()
        )));

        let wildcard = |credentials: bool| CorsSpec {
            allow_origins: vec!["*".into()],
            allow_methods: vec!["*".into()],
            allow_headers: vec!["*".into()],
            allow_credentials: credentials,
            ..Default::default()
        };
        assert!(
            wildcard(true).validate().is_err(),
            "a Route still refuses * with credentials"
        );
        let p = wildcard(true).validate_gateway_api().unwrap();
        assert!(p.allows("https://other.foo.com"));
        let h = p.preflight_headers("https://other.foo.com", Some("x-header-1, x-header-2"), Some("PUT"));
        assert_eq!(
            h,
            vec![
                ("access-control-allow-origin", "https://other.foo.com".to_string()),
                ("access-control-allow-credentials", "true".to_string()),
                ("access-control-allow-methods", "PUT".to_string()),
                ("access-control-allow-headers", "x-header-1, x-header-2".to_string()),
            ]
        );
        let h = wildcard(false).validate_gateway_api().unwrap().preflight_headers(
            "https://other.foo.com",
            Some("x-header-1"),
            Some("PUT"),
        );
        assert_eq!(
            h,
            vec![
                ("access-control-allow-origin", "*".to_string()),
                ("access-control-allow-methods", "*".to_string()),
                ("access-control-allow-headers", "*".to_string()),
            ]
        );
    }
}
