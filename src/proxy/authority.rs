//! The one authority a request is routed by, and forwarded with.
//!
//! A request can name its host twice: in the target (HTTP/1.1 absolute
//! form, HTTP/2 `:authority`) and in `Host`. If ssegate routed by one and
//! forwarded the other, the upstream would see a host its Route never
//! matched. So: RFC 9112 §3.2.2, an absolute-form target wins and `Host` is
//! replaced by it; RFC 9113 §8.3.1, an HTTP/2 request whose `Host` differs
//! from `:authority` is malformed; RFC 9112 §3.2, an HTTP/1.1 request with
//! no `Host`, or more than one, gets 400. Whatever is chosen must be a
//! plain `host[:port]`: no user information, no stray characters.

use http::header::HOST;
use http::{Request, Version};

/// Why a request's authority was refused; the request gets a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("HTTP/1.1 request without a Host header")]
    MissingHost,
    #[error("the Host header {host:?} differs from :authority {authority:?}")]
    Conflicting { authority: String, host: String },
    #[error("invalid host {0:?}")]
    Invalid(String),
}

/// The authority to route by and to send upstream as `Host`; `None` for an
/// HTTP/1.0 request that named no host.
pub fn request_authority<B>(req: &Request<B>) -> Result<Option<&str>, AuthorityError> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(AuthorityError::DuplicateHost);
    }
    let host = match host {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| AuthorityError::Invalid(String::from_utf8_lossy(v.as_bytes()).into_owned()))?,
        ),
        None => None,
    };
    let target = req.uri().authority().map(|a| a.as_str());
    let chosen = match (req.version(), target, host) {
        (Version::HTTP_2 | Version::HTTP_3, Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => {
            return Err(AuthorityError::Conflicting {
                authority: a.to_owned(),
                host: h.to_owned(),
            })
        }
        // The target's authority wins over Host (HTTP/1.1 absolute form).
        (_, Some(a), _) => Some(a),
        (_, None, Some(h)) => Some(h),
        (Version::HTTP_09 | Version::HTTP_10, None, None) => None,
        (_, None, None) => return Err(AuthorityError::MissingHost),
    };
    match chosen {
        Some(a) if !valid_authority(a) => Err(AuthorityError::Invalid(a.to_owned())),
        chosen => Ok(chosen),
    }
}

/// `host[:port]` where host is a DNS-style name, an IPv4 address or a
/// bracketed IPv6 address, and port is up to five digits.
fn valid_authority(a: &str) -> bool {
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let Some(end) = rest.find(']') else { return false };
        let inside = &rest[..end];
        if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return false;
        }
        ("v6", &rest[end + 1..])
    } else {
        match a.rfind(':') {
            Some(i) => (&a[..i], &a[i..]),
            None => (a, ""),
        }
    };
    let port_ok = match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(digits) => digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit()),
    };
    port_ok
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(HOST, *h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn origin_form_uses_host() {
        let r = req(Version::HTTP_11, "/x", &["public.test:8080"]);
        assert_eq!(request_authority(&r), Ok(Some("public.test:8080")));
    }

    #[test]
    fn absolute_form_wins_over_host() {
        let r = req(Version::HTTP_11, "http://admin.test/x", &["public.test"]);
        assert_eq!(request_authority(&r), Ok(Some("admin.test")));
    }

    #[test]
    fn h2_authority_and_host_must_agree() {
        let r = req(Version::HTTP_2, "http://admin.test/x", &["public.test"]);
        assert!(matches!(request_authority(&r), Err(AuthorityError::Conflicting { .. })));
        let r = req(Version::HTTP_2, "http://Admin.test/x", &["admin.TEST"]);
        assert_eq!(request_authority(&r), Ok(Some("Admin.test")));
        let r = req(Version::HTTP_2, "/x", &["h2.test"]);
        assert_eq!(request_authority(&r), Ok(Some("h2.test")));
    }

    #[test]
    fn host_count_rules() {
        let r = req(Version::HTTP_11, "/x", &["a.test", "b.test"]);
        assert_eq!(request_authority(&r), Err(AuthorityError::DuplicateHost));
        let r = req(Version::HTTP_11, "/x", &["a.test", "a.test"]);
        assert_eq!(request_authority(&r), Err(AuthorityError::DuplicateHost));
        let r = req(Version::HTTP_11, "/x", &[]);
        assert_eq!(request_authority(&r), Err(AuthorityError::MissingHost));
        let r = req(Version::HTTP_10, "/x", &[]);
        assert_eq!(request_authority(&r), Ok(None));
    }

    #[test]
    fn authority_syntax() {
        for ok in [
            "a.test",
            "a.test:80",
            "127.0.0.1:8080",
            "[::1]:443",
            "[::1]",
            "under_score.test",
            "",
        ] {
            assert!(valid_authority(ok), "{ok}");
        }
        for bad in [
            "a b",
            "a.test:80:80x",
            "user@a.test",
            "a.test/x",
            "[::1",
            "[zz]",
            "a.test:123456",
            "a,b",
        ] {
            assert!(!valid_authority(bad), "{bad}");
        }
    }
}
