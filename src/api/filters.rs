//! What a rule does to a request or its answer besides forwarding it:
//! Gateway API's HTTPRoute filters (header modifiers, redirect, URL
//! rewrite), checked once at translation, so a request only applies them.
//! Pure: header names and values are `http` types, parsed here once.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Header edits, applied in the spec's order: set, add, remove.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderEdits {
    /// Replaces every value of the header, or adds it.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Adds a value, keeping those already there.
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// How a redirect or rewrite changes the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathChange {
    /// The whole path becomes this.
    Full(String),
    /// The prefix the request matched becomes this; the rest is kept.
    Prefix(String),
}

impl PathChange {
    /// The new path for `path`, which matched the prefix `matched` (stored
    /// without a trailing slash, `/` excepted). Segment-wise, as Gateway
    /// API's ReplacePrefixMatch: `/foo/bar` with `/foo` → `/xyz` is
    /// `/xyz/bar`; with `/foo` → `/` it is `/bar`.
    pub fn apply(&self, path: &str, matched: &str) -> String {
        match self {
            PathChange::Full(p) => p.clone(),
            PathChange::Prefix(replacement) => {
                let rest = if matched == "/" {
                    path
                } else {
                    path.get(matched.len()..).unwrap_or("")
                };
                let rest = rest.strip_prefix('/').unwrap_or(rest);
                let base = replacement.trim_end_matches('/');
                if rest.is_empty() {
                    if base.is_empty() {
                        return "/".to_owned();
                    }
                    // `/foo/` keeps its trailing slash: `/xyz/`.
                    let trailing = path.ends_with('/') && path.len() > 1 && matched != "/";
                    return if trailing { format!("{base}/") } else { base.to_owned() };
                }
                format!("{base}/{rest}")
            }
        }
    }
}

/// An HTTP redirect answered by ssegate (RequestRedirect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `http` or `https`; the request's own when `None`.
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathChange>,
    pub port: Option<u16>,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
}

/// Where a request came to ssegate: what a redirect keeps by default.
pub struct Origin<'a> {
    pub tls: bool,
    /// The Host as the client sent it, port included.
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The path value of the prefix match that chose the rule.
    pub matched: &'a str,
}

impl Redirect {
    /// The `Location`. A port is written unless it is the scheme's
    /// well-known one; without one given, a changed scheme takes its
    /// well-known port and an unchanged one keeps the request's.
    pub fn location(&self, origin: &Origin<'_>) -> String {
        let own_scheme = if origin.tls { "https" } else { "http" };
        let scheme = self.scheme.as_deref().unwrap_or(own_scheme);
        let (own_host, own_port) = split_host_port(origin.host);
        let host = self.hostname.as_deref().unwrap_or(own_host);
        let port = match (self.port, &self.scheme) {
            (Some(p), _) => Some(p),
            (None, Some(_)) => None,
            (None, None) => own_port,
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        let path = match &self.path {
            Some(change) => change.apply(origin.path, origin.matched),
            None => origin.path.to_owned(),
        };
        let mut out = format!("{scheme}://{host}");
        if let Some(p) = port.filter(|p| *p != default_port) {
            out.push_str(&format!(":{p}"));
        }
        out.push_str(&path);
        if let Some(q) = origin.query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

/// `host:port` split; an IPv6 literal keeps its brackets.
fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    let colon = if authority.starts_with('[') {
        authority.find("]:").map(|i| i + 1)
    } else {
        authority.rfind(':')
    };
    match colon {
        Some(i) => match authority[i + 1..].parse() {
            Ok(port) => (&authority[..i], Some(port)),
            Err(_) => (authority, None),
        },
        None => (authority, None),
    }
}

/// A rewrite of what is asked of the upstream (URLRewrite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// Becomes the upstream request's Host.
    pub hostname: Option<String>,
    pub path: Option<PathChange>,
}

/// A rule's filters, resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleFilters {
    pub request_headers: Option<HeaderEdits>,
    pub response_headers: Option<HeaderEdits>,
    pub redirect: Option<Redirect>,
    pub rewrite: Option<Rewrite>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_replacement_is_segment_wise_as_gateway_api_defines_it() {
        let to = |r: &str| PathChange::Prefix(r.to_owned());
        assert_eq!(to("/xyz").apply("/foo/bar", "/foo"), "/xyz/bar");
        assert_eq!(to("/xyz").apply("/foo", "/foo"), "/xyz");
        assert_eq!(to("/xyz").apply("/foo/", "/foo"), "/xyz/");
        assert_eq!(to("/xyz/").apply("/foo/bar", "/foo"), "/xyz/bar");
        assert_eq!(to("/").apply("/foo/bar", "/foo"), "/bar");
        assert_eq!(to("/").apply("/foo", "/foo"), "/");
        assert_eq!(to("/").apply("/foo/", "/foo"), "/");
        assert_eq!(to("/xyz").apply("/bar", "/"), "/xyz/bar");
        assert_eq!(to("/xyz").apply("/", "/"), "/xyz");
        assert_eq!(PathChange::Full("/one".into()).apply("/foo/bar", "/foo"), "/one");
    }

    #[test]
    fn redirect_locations_keep_what_is_not_changed_and_omit_well_known_ports() {
        let origin = Origin {
            tls: false,
            host: "example.com:8080",
            path: "/foo/bar",
            query: Some("a=1"),
            matched: "/foo",
        };
        let r = |scheme: Option<&str>, host: Option<&str>, port: Option<u16>| Redirect {
            scheme: scheme.map(Into::into),
            hostname: host.map(Into::into),
            path: None,
            port,
            status: 302,
        };
        assert_eq!(
            r(None, None, None).location(&origin),
            "http://example.com:8080/foo/bar?a=1"
        );
        assert_eq!(
            r(Some("https"), None, None).location(&origin),
            "https://example.com/foo/bar?a=1"
        );
        assert_eq!(
            r(Some("https"), None, Some(443)).location(&origin),
            "https://example.com/foo/bar?a=1"
        );
        assert_eq!(
            r(Some("https"), None, Some(8443)).location(&origin),
            "https://example.com:8443/foo/bar?a=1"
        );
        assert_eq!(
            r(None, Some("other.test"), Some(80)).location(&origin),
            "http://other.test/foo/bar?a=1"
        );
        let mut with_path = r(None, Some("other.test"), None);
        with_path.path = Some(PathChange::Prefix("/x".into()));
        assert_eq!(with_path.location(&origin), "http://other.test:8080/x/bar?a=1");
        let v6 = Origin {
            host: "[::1]:80",
            ..origin
        };
        assert_eq!(r(None, None, None).location(&v6), "http://[::1]/foo/bar?a=1");
    }

    #[test]
    fn header_edits_set_then_add_then_remove() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        h.append("x-gone", HeaderValue::from_static("1"));
        let edits = HeaderEdits {
            set: vec![(HeaderName::from_static("x-a"), HeaderValue::from_static("set"))],
            add: vec![(HeaderName::from_static("x-a"), HeaderValue::from_static("added"))],
            remove: vec![HeaderName::from_static("x-gone")],
        };
        edits.apply(&mut h);
        let values: Vec<_> = h.get_all("x-a").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(values, ["set", "added"]);
        assert!(h.get("x-gone").is_none());
    }
}
