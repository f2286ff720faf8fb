//! nginx variables, as ingress-nginx's external-auth annotations use them:
//! `auth-url: https://$host/oauth2/auth`,
//! `auth-signin: https://$host/oauth2/start?rd=$escaped_request_uri`,
//! `auth-cache-key: $remote_user$http_authorization`.
//!
//! ingress-nginx pastes these strings into nginx.conf, where nginx evaluates
//! them for each request. ssegate has no nginx, so a string is parsed once
//! into a [`NginxTemplate`] of literal text and [`Variable`]s, and evaluated
//! against the [`ClientRequestFacts`] of each request. Only the variables
//! that people use in these annotations, and that ssegate can evaluate the
//! way nginx does, are accepted; anything else is refused when the string is
//! parsed, because a variable that silently evaluated to nothing would, in a
//! cache key, let users share each other's answers, and in a URL send the
//! auth service somewhere else than meant.
//!
//! Each variable reproduces nginx 1.27 (the nginx ingress-nginx ships):
//! header and cookie names match case-insensitively, several header lines
//! are joined with `", "` (`"; "` for Cookie), `$arg_` and `$cookie_` take
//! the first match, raw. Pure string work: no I/O.

use http::{HeaderMap, Method};
use std::borrow::Cow;
use std::net::IpAddr;

/// The most variables one template may hold. The longest real-world
/// templates (Pomerium's `uri=$scheme://$host$request_uri`, a cache key of
/// three headers) hold three or four; a template with dozens is a mistake,
/// and each variable costs work on every request.
pub const MAX_TEMPLATE_VARIABLES: usize = 16;

/// The longest variable name, `$` and braces not counted. Covers
/// `$http_` plus any header name people send (`http_x_forwarded_client_cert`
/// is 28), with room to spare.
pub const MAX_VARIABLE_NAME_LEN: usize = 96;

/// What ssegate knows about the client's request, as the variables (and the
/// external-auth subrequest) need it. Every field is taken as the caller
/// gives it: the caller has already resolved trusted proxies and PROXY
/// protocol, so `client_addr` and `scheme` are the real client's, as nginx's
/// `$remote_addr` and `$pass_access_scheme` are after its real-IP module and
/// ingress-nginx's forwarded-headers handling.
#[derive(Debug, Clone, Copy)]
pub struct ClientRequestFacts<'a> {
    /// The method the client used (`$request_method`).
    pub method: &'a Method,
    /// The scheme the client used, after trusted `X-Forwarded-Proto`
    /// (`$scheme`, `$pass_access_scheme`).
    pub scheme: Scheme,
    /// The Host header, or HTTP/2 `:authority`, exactly as sent, port
    /// included (`$http_host`).
    pub host: &'a str,
    /// The request target as sent: path and query, not normalised
    /// (`$request_uri`).
    pub request_uri: &'a str,
    /// The client's request headers.
    pub headers: &'a HeaderMap,
    /// The client's address (`$remote_addr`).
    pub client_addr: IpAddr,
    /// The `X-Forwarded-For` value to send the auth service (ingress-nginx
    /// sends `$remote_addr`, or `$full_x_forwarded_for` when it trusts
    /// forwarded headers and computes the full chain).
    pub forwarded_for: &'a str,
    /// The request id (ingress-nginx's `$req_id`: the client's
    /// `X-Request-ID` if it sent one, else a generated one).
    pub request_id: &'a str,
}

/// The scheme of the client's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// An nginx variable that ssegate can evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Variable {
    /// `$http_<name>`: a request header, `<name>` lower case with `_` for
    /// `-`. Several lines are joined with `", "` (`"; "` for `cookie`).
    Header(String),
    /// `$http_host` (and ingress-nginx's `$best_http_host`): the Host the
    /// client sent, port included.
    HttpHost,
    /// `$cookie_<name>`: the first cookie of that name (case-insensitive),
    /// raw.
    Cookie(String),
    /// `$arg_<name>`: the first query argument of that name
    /// (case-insensitive), raw, not decoded.
    Arg(String),
    /// `$remote_user`: the user name of a Basic `Authorization` header.
    RemoteUser,
    /// `$remote_addr`: the client's address.
    RemoteAddr,
    /// `$host`: the Host without its port, lower case, without a final dot.
    Host,
    /// `$request_uri`: path and query as sent.
    RequestUri,
    /// `$escaped_request_uri`: `$request_uri` escaped by set-misc's
    /// `set_escape_uri`, as ingress-nginx defines it for sign-in redirects.
    EscapedRequestUri,
    /// `$args` and `$query_string`: the query, without `?`.
    Args,
    /// `$is_args`: `?` when the request has a query, else empty.
    IsArgs,
    /// `$scheme` and ingress-nginx's `$pass_access_scheme`.
    Scheme,
    /// `$request_method`.
    RequestMethod,
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Variable(Variable),
}

/// A string with nginx variables in it, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxTemplate {
    parts: Vec<Part>,
}

/// Why a string is not a template ssegate can evaluate. Positions are byte
/// offsets; the string itself is never repeated (it may hold a token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("the `$` at byte {at} starts no variable name: write variables as $name or ${{name}}")]
    DanglingDollar { at: usize },
    #[error("the `${{` at byte {at} is not closed by `}}`")]
    UnclosedBrace { at: usize },
    #[error("the variable at byte {at} has a name that is not letters, digits and `_`")]
    BadVariableName { at: usize },
    #[error("the variable name at byte {at} is longer than {max} characters")]
    VariableNameTooLong { at: usize, max: usize },
    #[error("${name} (byte {at}) is a regular-expression capture, which ssegate does not have here")]
    Capture { at: usize, name: String },
    #[error("${name} cannot be evaluated by ssegate{hint}; the variables it evaluates are {supported}", supported = SUPPORTED_VARIABLES)]
    Unsupported { name: String, hint: &'static str },
    #[error("more than {max} variables")]
    TooManyVariables { max: usize },
    #[error("the character {what} at byte {at} is not allowed here")]
    BadCharacter { at: usize, what: String },
}

/// For error messages: the variables [`Variable::from_name`] accepts.
pub const SUPPORTED_VARIABLES: &str = "$http_<header>, $cookie_<name>, $arg_<name>, $remote_user, $remote_addr, \
$host, $http_host, $best_http_host, $request_uri, $escaped_request_uri, $args, $query_string, $is_args, \
$scheme, $pass_access_scheme and $request_method";

impl Variable {
    /// The variable for an nginx variable name (without `$`), which nginx
    /// reads case-insensitively.
    pub fn from_name(name: &str) -> Result<Variable, TemplateError> {
        let lower = name.to_ascii_lowercase();
        let unsupported = |hint: &'static str| TemplateError::Unsupported {
            name: lower.clone(),
            hint,
        };
        let prefixed = |prefix: &str| lower.strip_prefix(prefix).filter(|rest| !rest.is_empty());
        Ok(match lower.as_str() {
            "http_host" | "best_http_host" => Variable::HttpHost,
            "remote_user" => Variable::RemoteUser,
            "remote_addr" => Variable::RemoteAddr,
            "host" => Variable::Host,
            "request_uri" => Variable::RequestUri,
            "escaped_request_uri" => Variable::EscapedRequestUri,
            "args" | "query_string" => Variable::Args,
            "is_args" => Variable::IsArgs,
            "scheme" | "pass_access_scheme" => Variable::Scheme,
            "request_method" => Variable::RequestMethod,
            "uri" | "document_uri" => {
                return Err(unsupported(
                    " (it is nginx's decoded, normalised path, which ssegate does not reproduce: use $request_uri)",
                ))
            }
            "server_name" => return Err(unsupported(" (ssegate has no nginx server blocks: use $host)")),
            _ => {
                if let Some(header) = prefixed("http_") {
                    Variable::Header(header.to_owned())
                } else if let Some(cookie) = prefixed("cookie_") {
                    Variable::Cookie(cookie.to_owned())
                } else if let Some(arg) = prefixed("arg_") {
                    Variable::Arg(arg.to_owned())
                } else {
                    return Err(unsupported(""));
                }
            }
        })
    }

    /// The value for this request, or `None` where nginx's variable is
    /// "not found" (which nginx then writes as nothing).
    pub fn value<'f>(&self, facts: &ClientRequestFacts<'f>) -> Option<Cow<'f, [u8]>> {
        match self {
            Variable::Header(name) => header_value(facts.headers, name),
            Variable::HttpHost => non_empty(facts.host.as_bytes()),
            Variable::Cookie(name) => cookie_value(facts.headers, name).map(Cow::Borrowed),
            Variable::Arg(name) => query(facts.request_uri)
                .and_then(|args| arg_value(args, name))
                .map(|v| Cow::Borrowed(v.as_bytes())),
            Variable::RemoteUser => remote_user(facts.headers).map(Cow::Owned),
            Variable::RemoteAddr => Some(Cow::Owned(facts.client_addr.to_string().into_bytes())),
            Variable::Host => match host_without_port(facts.host) {
                Cow::Borrowed(h) => non_empty(h.as_bytes()),
                Cow::Owned(h) => (!h.is_empty()).then(|| Cow::Owned(h.into_bytes())),
            },
            Variable::RequestUri => Some(Cow::Borrowed(facts.request_uri.as_bytes())),
            Variable::EscapedRequestUri => Some(Cow::Owned(
                escape_uri_component(facts.request_uri.as_bytes()).into_bytes(),
            )),
            Variable::Args => query(facts.request_uri).map(|q| Cow::Borrowed(q.as_bytes())),
            Variable::IsArgs => Some(Cow::Borrowed(
                if query(facts.request_uri).is_some_and(|q| !q.is_empty()) {
                    b"?"
                } else {
                    b""
                },
            )),
            Variable::Scheme => Some(Cow::Borrowed(facts.scheme.as_str().as_bytes())),
            Variable::RequestMethod => Some(Cow::Borrowed(facts.method.as_str().as_bytes())),
        }
    }
}

impl NginxTemplate {
    /// Parses `text`: `$name` (the longest run of letters, digits and `_`,
    /// as nginx reads it) or `${name}` are variables; every other byte must
    /// satisfy `literal_ok`.
    pub fn parse(text: &str, literal_ok: impl Fn(u8) -> bool) -> Result<NginxTemplate, TemplateError> {
        let bytes = text.as_bytes();
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut variables = 0;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b != b'$' {
                if !literal_ok(b) {
                    return Err(TemplateError::BadCharacter {
                        at: i,
                        what: describe_byte(b),
                    });
                }
                // Only ASCII passes `literal_ok` in practice; pushing the
                // char keeps the String valid either way.
                let ch = text[i..].chars().next().unwrap_or('\u{fffd}');
                literal.push(ch);
                i += ch.len_utf8();
                continue;
            }
            let at = i;
            let (name, next) = if bytes.get(i + 1) == Some(&b'{') {
                let close = bytes[i + 2..]
                    .iter()
                    .position(|&c| c == b'}')
                    .ok_or(TemplateError::UnclosedBrace { at })?;
                let name = &text[i + 2..i + 2 + close];
                if name.is_empty() || !name.bytes().all(is_name_byte) {
                    return Err(TemplateError::BadVariableName { at });
                }
                (name, i + 2 + close + 1)
            } else {
                let len = bytes[i + 1..].iter().take_while(|&&c| is_name_byte(c)).count();
                if len == 0 {
                    return Err(TemplateError::DanglingDollar { at });
                }
                (&text[i + 1..i + 1 + len], i + 1 + len)
            };
            if name.len() > MAX_VARIABLE_NAME_LEN {
                return Err(TemplateError::VariableNameTooLong {
                    at,
                    max: MAX_VARIABLE_NAME_LEN,
                });
            }
            if name.as_bytes()[0].is_ascii_digit() {
                return Err(TemplateError::Capture {
                    at,
                    name: name.to_owned(),
                });
            }
            variables += 1;
            if variables > MAX_TEMPLATE_VARIABLES {
                return Err(TemplateError::TooManyVariables {
                    max: MAX_TEMPLATE_VARIABLES,
                });
            }
            let variable = Variable::from_name(name)?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Variable(variable));
            i = next;
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(NginxTemplate { parts })
    }

    /// A template of these parts (adjacent literals are not merged).
    pub fn from_parts(parts: Vec<Part>) -> NginxTemplate {
        NginxTemplate { parts }
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Whether any part is a variable.
    pub fn has_variables(&self) -> bool {
        self.variables().next().is_some()
    }

    /// The variables, in order.
    pub fn variables(&self) -> impl Iterator<Item = &Variable> {
        self.parts.iter().filter_map(|p| match p {
            Part::Variable(v) => Some(v),
            Part::Literal(_) => None,
        })
    }

    /// The literal text, when the template has no variables.
    pub fn as_literal(&self) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Variable(_) => return None,
            }
        }
        Some(out)
    }

    /// Evaluates the template into `out` for use in a URI: literals as they
    /// are (validated when parsed), variable values as nginx inserts them
    /// (raw), except that bytes a URI cannot hold at all (space, controls,
    /// `"`, `<`, `>`, `\`, `^`, `` ` ``, `{`, `|`, `}`, `#`, non-ASCII) are
    /// percent-encoded, where nginx would have sent an invalid URI.
    pub fn evaluate_uri(&self, facts: &ClientRequestFacts<'_>, out: &mut String) {
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Variable(v) => {
                    if let Some(value) = v.value(facts) {
                        push_uri_safe(out, &value);
                    }
                }
            }
        }
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A byte for an error message: the character if printable, else its hex.
pub fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("{:?}", b as char)
    } else {
        format!("0x{b:02X}")
    }
}

fn non_empty(bytes: &[u8]) -> Option<Cow<'_, [u8]>> {
    (!bytes.is_empty()).then_some(Cow::Borrowed(bytes))
}

/// Whether nginx's `$http_<var>` (or `$upstream_http_<var>`) names this
/// header: same length, ASCII case-insensitive, `-` read as `_`.
pub fn nginx_header_name_matches(header: &str, var: &str) -> bool {
    header.len() == var.len()
        && header.bytes().zip(var.bytes()).all(|(h, v)| {
            let h = if h == b'-' { b'_' } else { h.to_ascii_lowercase() };
            let v = if v == b'-' { b'_' } else { v.to_ascii_lowercase() };
            h == v
        })
}

/// Every value of the headers that `name` (in `$http_` form) names, joined
/// as nginx 1.23+ joins them: `", "`, or `"; "` for Cookie.
fn header_value<'f>(headers: &'f HeaderMap, name: &str) -> Option<Cow<'f, [u8]>> {
    let separator: &[u8] = if name == "cookie" { b"; " } else { b", " };
    let mut found: Option<Cow<'f, [u8]>> = None;
    for (key, value) in headers {
        if !nginx_header_name_matches(key.as_str(), name) {
            continue;
        }
        found = Some(match found {
            None => Cow::Borrowed(value.as_bytes()),
            Some(previous) => {
                let mut joined = previous.into_owned();
                joined.extend_from_slice(separator);
                joined.extend_from_slice(value.as_bytes());
                Cow::Owned(joined)
            }
        });
    }
    found
}

/// nginx's `$cookie_<name>`: the first `name=value` pair (name compared
/// without case) over the Cookie lines in order, pairs separated by `;`,
/// spaces skipped around `=` and before a name, the value running to the
/// next `;` (trailing spaces kept).
fn cookie_value<'f>(headers: &'f HeaderMap, name: &str) -> Option<&'f [u8]> {
    let name = name.as_bytes();
    for line in headers.get_all(http::header::COOKIE) {
        let value = line.as_bytes();
        if name.len() > value.len() {
            continue;
        }
        let mut start = 0;
        while start < value.len() {
            let rest = &value[start..];
            if rest.len() >= name.len() && rest[..name.len()].eq_ignore_ascii_case(name) {
                let mut p = start + name.len();
                while p < value.len() && value[p] == b' ' {
                    p += 1;
                }
                if p < value.len() && value[p] == b'=' {
                    p += 1;
                    while p < value.len() && value[p] == b' ' {
                        p += 1;
                    }
                    let end = value[p..]
                        .iter()
                        .position(|&c| c == b';')
                        .map_or(value.len(), |n| p + n);
                    return Some(&value[p..end]);
                }
            }
            // Skip to after the next `;`, then past spaces.
            match value[start..].iter().position(|&c| c == b';') {
                Some(n) => start += n + 1,
                None => break,
            }
            while start < value.len() && value[start] == b' ' {
                start += 1;
            }
        }
    }
    None
}

/// The query of a request target: what follows the first `?`.
pub fn query(request_uri: &str) -> Option<&str> {
    request_uri.split_once('?').map(|(_, q)| q)
}

/// nginx's `ngx_http_arg`: the first `name=` (name compared without case)
/// at the start of the query or after a `&`; the raw value up to the next
/// `&`.
fn arg_value<'q>(args: &'q str, name: &str) -> Option<&'q str> {
    let bytes = args.as_bytes();
    let name = name.as_bytes();
    let mut i = 0;
    while i + name.len() < bytes.len() {
        if (i == 0 || bytes[i - 1] == b'&')
            && bytes[i..i + name.len()].eq_ignore_ascii_case(name)
            && bytes[i + name.len()] == b'='
        {
            let start = i + name.len() + 1;
            let end = bytes[start..]
                .iter()
                .position(|&c| c == b'&')
                .map_or(bytes.len(), |n| start + n);
            return Some(&args[start..end]);
        }
        i += 1;
    }
    None
}

/// nginx's `ngx_http_auth_basic_user`: `Basic ` (any case), spaces, then
/// base64 (read up to the first `=`, standard alphabet, padding optional);
/// the user is what precedes the first `:`, and must not be empty.
fn remote_user(headers: &HeaderMap) -> Option<Vec<u8>> {
    use base64::engine::{general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig};
    use base64::Engine as _;
    const NGINX_BASE64: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireNone),
    );
    let value = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    if value.len() < 6 || !value[..6].eq_ignore_ascii_case(b"Basic ") {
        return None;
    }
    let encoded = &value[6..];
    let encoded = &encoded[encoded.iter().take_while(|&&c| c == b' ').count()..];
    let encoded = &encoded[..encoded.iter().position(|&c| c == b'=').unwrap_or(encoded.len())];
    if encoded.is_empty() || encoded.len() % 4 == 1 {
        return None;
    }
    let decoded = NGINX_BASE64.decode(encoded).ok()?;
    let colon = decoded.iter().position(|&c| c == b':')?;
    (colon > 0).then(|| decoded[..colon].to_vec())
}

/// nginx's `$host` from the Host as sent: lower case, without the port,
/// without one final dot (an IPv6 literal keeps its brackets).
pub fn host_without_port(host: &str) -> Cow<'_, str> {
    let end = if host.starts_with('[') {
        host.find(']').map_or(host.len(), |n| n + 1)
    } else {
        host.find(':').unwrap_or(host.len())
    };
    let mut name = &host[..end];
    if let Some(stripped) = name.strip_suffix('.') {
        name = stripped;
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// set-misc-nginx-module's `set_escape_uri` (its patched `NGX_ESCAPE_URI`
/// table), which ingress-nginx uses to build `$escaped_request_uri`:
/// percent-encodes, with upper-case hex, controls, space, non-ASCII and
/// `" # % & + / : ; < = > ? [ \ ] ^ { }` and DEL; keeps letters, digits and
/// `! $ ' ( ) * , - . @ _ `` ` `` | ~`.
pub fn escape_uri_component(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'$' | b'\'' | b'(' | b')' | b'*' | b',' | b'-' | b'.' | b'@' | b'_' | b'`' | b'|' | b'~'
            );
        push_byte(&mut out, b, keep);
    }
    out
}

/// Whether a URI (RFC 3986) may hold this byte as it is: unreserved,
/// reserved but `#`, and `%` (escapes already made are kept).
pub fn is_uri_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b':'
                | b'/'
                | b'?'
                | b'['
                | b']'
                | b'@'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b'%'
        )
}

/// Appends `bytes`, percent-encoding what a URI cannot hold.
pub fn push_uri_safe(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        push_byte(out, b, is_uri_byte(b));
    }
}

fn push_byte(out: &mut String, b: u8, keep: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if keep {
        out.push(b as char);
    } else {
        out.push('%');
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0xf) as usize] as char);
    }
}

#[cfg(test)]
#[path = "nginx_vars_tests.rs"]
mod tests;
