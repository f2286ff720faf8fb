//! A decoded header list checked and made a request head (RFC 9113, 8.2
//! and 8.3), and a trailer section checked.
//!
//! Fields arrive one at a time from the HPACK decoder, so nothing but the
//! result is collected: [`HeadBuilder::field`] checks each field as it
//! comes and files it, [`HeadBuilder::finish`] checks what only the whole
//! list can say (pseudo-headers present, `:path` form, `host` agreeing
//! with `:authority`) and builds `http::request::Parts`.
//!
//! A malformed head is refused whole (the connection answers RST_STREAM
//! PROTOCOL_ERROR): an intermediary must not forward a malformed request
//! (RFC 9113, 8.1.1), and guessing what a malformed head meant is how
//! requests get smuggled past the rules of the next hop.
//!
//! CONNECT (RFC 9113, 8.5) is accepted in its plain form, `:method` and
//! `:authority` only, and becomes a request whose URI is the authority;
//! refusing it is the proxy's job, which answers it like on HTTP/1.1.
//! Extended CONNECT (`:protocol`, RFC 8441) is not announced, so
//! `:protocol` is an unknown pseudo-header here, hence malformed.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};

/// Why a header list was not made a request head (or a trailer section was
/// refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The list is larger than the limit, counted as RFC 9113 counts it
    /// (name + value + 32 per field): answer 431.
    #[error("header list larger than the limit")]
    TooLarge,
    /// The list breaks a rule of RFC 9113, 8.2 or 8.3: a stream error
    /// PROTOCOL_ERROR.
    #[error("malformed header list: {0}")]
    Malformed(&'static str),
}

/// A request head ready for the proxy.
#[derive(Debug)]
pub struct RequestHead {
    pub parts: http::request::Parts,
    /// The `content-length`, when present: the DATA to come must add up to
    /// it exactly (RFC 9113, 8.1.1).
    pub content_length: Option<u64>,
}

/// Whether a header list is a request's head or its trailers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Head,
    /// Checked, then dropped: ssegate does not forward request trailers.
    Trailers,
}

/// Fields forbidden in HTTP/2 because they describe an HTTP/1.1 connection
/// (RFC 9113, 8.2.2); `te` is allowed with the value `trailers` only.
fn is_connection_specific(name: &[u8]) -> bool {
    matches!(
        name,
        b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade"
    )
}

/// Takes the fields of one header list as the decoder produces them.
#[derive(Debug)]
pub struct HeadBuilder {
    section: Section,
    limit: usize,
    size: usize,
    /// The first rule broken; later fields are only counted.
    error: Option<&'static str>,
    method: Option<Method>,
    scheme: Option<Scheme>,
    authority: Option<Authority>,
    path: Option<Vec<u8>>,
    headers: HeaderMap,
    regular_seen: bool,
    content_length: Option<u64>,
}

impl HeadBuilder {
    /// A builder for a list of at most `limit` bytes (name + value + 32
    /// per field, RFC 9113, 6.5.2).
    pub fn new(section: Section, limit: u32) -> Self {
        HeadBuilder {
            section,
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            size: 0,
            error: None,
            method: None,
            scheme: None,
            authority: None,
            path: None,
            headers: HeaderMap::new(),
            regular_seen: false,
            content_length: None,
        }
    }

    fn too_large(&self) -> bool {
        self.size > self.limit
    }

    fn malformed(&mut self, reason: &'static str) {
        if self.error.is_none() {
            self.error = Some(reason);
        }
    }

    /// Takes one decoded field. Past the size limit or after a broken rule
    /// nothing more is kept, but the caller still decodes the rest of the
    /// block, which the HPACK state needs.
    pub fn field(&mut self, name: &[u8], value: &[u8]) {
        self.size = self.size.saturating_add(name.len() + value.len() + 32);
        if self.too_large() {
            // Free what was collected: the head will not be used.
            self.headers = HeaderMap::new();
            self.path = None;
            return;
        }
        if self.error.is_some() {
            return;
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            self.pseudo(pseudo, value);
        } else {
            self.regular(name, value);
        }
    }

    fn pseudo(&mut self, name: &[u8], value: &[u8]) {
        if self.regular_seen {
            return self.malformed("pseudo-header after a regular field");
        }
        if self.section == Section::Trailers {
            return self.malformed("pseudo-header in trailers");
        }
        match name {
            b"method" => {
                if self.method.is_some() {
                    return self.malformed("duplicate :method");
                }
                match Method::from_bytes(value) {
                    Ok(m) => self.method = Some(m),
                    Err(_) => self.malformed("invalid :method"),
                }
            }
            b"scheme" => {
                if self.scheme.is_some() {
                    return self.malformed("duplicate :scheme");
                }
                match Scheme::try_from(value) {
                    Ok(s) => self.scheme = Some(s),
                    Err(_) => self.malformed("invalid :scheme"),
                }
            }
            b"authority" => {
                if self.authority.is_some() {
                    return self.malformed("duplicate :authority");
                }
                // RFC 9113, 8.3.1: no userinfo (it names a different
                // target to parsers that disagree about the `@`).
                match Authority::try_from(value) {
                    Ok(a) if !value.contains(&b'@') => self.authority = Some(a),
                    _ => self.malformed("invalid :authority"),
                }
            }
            b"path" => {
                if self.path.is_some() {
                    return self.malformed("duplicate :path");
                }
                self.path = Some(value.to_vec());
            }
            _ => self.malformed("unknown or response pseudo-header"),
        }
    }

    fn regular(&mut self, name: &[u8], value: &[u8]) {
        self.regular_seen = true;
        // RFC 9113, 8.2.1: names are lower case in HTTP/2, and a name or
        // value with a byte that HTTP/1.1 could not carry is malformed.
        if name.iter().any(u8::is_ascii_uppercase) {
            return self.malformed("upper-case field name");
        }
        let Ok(header_name) = HeaderName::from_bytes(name) else {
            return self.malformed("invalid field name");
        };
        let Ok(header_value) = HeaderValue::from_bytes(value) else {
            return self.malformed("invalid field value");
        };
        if matches!(value.first(), Some(b' ' | b'\t')) || matches!(value.last(), Some(b' ' | b'\t')) {
            return self.malformed("field value with leading or trailing whitespace");
        }
        if is_connection_specific(name) {
            return self.malformed("connection-specific field");
        }
        if name == b"te" && !value.eq_ignore_ascii_case(b"trailers") {
            return self.malformed("te other than trailers");
        }
        if name == b"content-length" {
            let parsed = (!value.is_empty() && value.len() <= 19 && value.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(value).ok()?.parse::<u64>().ok())
                .flatten();
            match (parsed, self.content_length) {
                (None, _) => return self.malformed("invalid content-length"),
                (Some(n), Some(old)) if n != old => return self.malformed("conflicting content-length"),
                (Some(n), _) => self.content_length = Some(n),
            }
        }
        if self.section == Section::Trailers {
            return;
        }
        if self.headers.try_append(header_name, header_value).is_err() {
            // More fields than a HeaderMap holds: only a very large limit
            // gets here, and it is a head too large all the same.
            self.size = usize::MAX;
            self.headers = HeaderMap::new();
        }
    }

    /// The request head, once the whole list has been given. `end_stream`:
    /// the HEADERS frame ended the stream, so there is no body and a
    /// `content-length` other than 0 is a lie.
    pub fn finish(self, end_stream: bool) -> Result<RequestHead, HeadError> {
        if self.too_large() {
            return Err(HeadError::TooLarge);
        }
        if let Some(reason) = self.error {
            return Err(HeadError::Malformed(reason));
        }
        if self.section == Section::Trailers {
            return Err(HeadError::Malformed("trailers are not a request head"));
        }
        let Some(method) = self.method else {
            return Err(HeadError::Malformed("missing :method"));
        };
        let uri = if method == Method::CONNECT {
            // RFC 9113, 8.5: :authority only.
            if self.scheme.is_some() || self.path.is_some() {
                return Err(HeadError::Malformed("CONNECT with :scheme or :path"));
            }
            let Some(authority) = self.authority.clone() else {
                return Err(HeadError::Malformed("CONNECT without :authority"));
            };
            Uri::from(authority)
        } else {
            let (Some(scheme), Some(path)) = (self.scheme, self.path) else {
                return Err(HeadError::Malformed("missing :scheme or :path"));
            };
            // RFC 9113, 8.3.1: never empty; origin-form, or `*` for
            // OPTIONS (asterisk-form).
            let asterisk = path == b"*" && method == Method::OPTIONS;
            if !(path.starts_with(b"/") || asterisk) {
                return Err(HeadError::Malformed(":path empty or not origin-form"));
            }
            let Ok(path) = PathAndQuery::try_from(path) else {
                return Err(HeadError::Malformed("invalid :path"));
            };
            let mut parts = http::uri::Parts::default();
            // The absolute form when the authority is known; without it
            // the origin form (the `host` field, if any, names the
            // authority, as on HTTP/1.1).
            if let Some(authority) = self.authority.clone() {
                parts.scheme = Some(scheme);
                parts.authority = Some(authority);
            }
            parts.path_and_query = Some(path);
            Uri::from_parts(parts).map_err(|_| HeadError::Malformed("invalid request target"))?
        };
        // RFC 9113, 8.3.1: a `host` naming another authority than
        // `:authority` SHOULD be malformed. It is passed on instead, as are
        // two `host` fields: the proxy refuses both with a 400 that says
        // why (one authority is settled for every protocol in one place,
        // `proxy/authority.rs`), which a client can read and a reset is not.
        if end_stream && self.content_length.is_some_and(|n| n != 0) {
            return Err(HeadError::Malformed("content-length with no body"));
        }
        let mut request = http::Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = self.headers;
        let (parts, ()) = request.into_parts();
        Ok(RequestHead {
            parts,
            content_length: self.content_length,
        })
    }

    /// Checks a trailer section (RFC 9113, 8.1): no pseudo-header, and,
    /// like any field list, within the limit.
    pub fn finish_trailers(self) -> Result<(), HeadError> {
        if self.too_large() {
            return Err(HeadError::TooLarge);
        }
        match self.error {
            Some(reason) => Err(HeadError::Malformed(reason)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
