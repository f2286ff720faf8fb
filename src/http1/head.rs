//! Request and response heads: parsed by `httparse`, then checked for the
//! framing a proxy must refuse rather than interpret.
//!
//! `httparse` already refuses obs-folded lines, NUL and bare CR in a head,
//! and bad tokens. What it leaves to its caller, and this module decides,
//! is how the body is delimited, where request smuggling lives:
//! - `Content-Length` together with `Transfer-Encoding` (RFC 9112 §6.3: "ought
//!   to be handled as an error"): refused;
//! - more than one `Content-Length`, even with equal values, or one that is
//!   not plain digits: refused;
//! - any `Transfer-Encoding` other than one lone `chunked`: refused, since a
//!   coding ssegate does not apply would be dropped on the way;
//! - `Transfer-Encoding` on an HTTP/1.0 message: refused (§6.1).
//!
//! Heads are limited in bytes and in field count.

use httparse::{Header, Status, EMPTY_HEADER};

/// Most header fields in one head; more is refused (431 for a request).
pub const MAX_HEADERS: usize = 128;

/// An empty array for [`parse_request`] and [`parse_response`] to fill.
pub fn header_slots<'b>() -> [Header<'b>; MAX_HEADERS] {
    [EMPTY_HEADER; MAX_HEADERS]
}

/// The HTTP version of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
}

/// Why a head is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("head larger than {0} bytes")]
    TooLarge(usize),
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("malformed head: {0}")]
    Malformed(&'static str),
    #[error("Content-Length together with Transfer-Encoding")]
    LengthAndTransferEncoding,
    #[error("more than one Content-Length")]
    RepeatedLength,
    #[error("Content-Length is not a number")]
    BadLength,
    #[error("Transfer-Encoding {0:?}: only a lone \"chunked\" is accepted")]
    TransferCoding(String),
}

impl HeadError {
    fn from_httparse(e: httparse::Error) -> Self {
        match e {
            httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
            httparse::Error::HeaderName => HeadError::Malformed("invalid header name (or an obs-folded line)"),
            httparse::Error::HeaderValue => HeadError::Malformed("invalid byte in a header value"),
            httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
            httparse::Error::Status => HeadError::Malformed("invalid status"),
            httparse::Error::Token => HeadError::Malformed("invalid token"),
            httparse::Error::Version => HeadError::Malformed("unsupported HTTP version"),
        }
    }

    /// Whether this is about size (431 for a request) rather than syntax (400).
    pub fn is_too_large(&self) -> bool {
        matches!(self, HeadError::TooLarge(_) | HeadError::TooManyHeaders)
    }
}

/// A complete, checked request head, borrowing from the bytes it was parsed from.
#[derive(Debug)]
pub struct RequestHead<'h, 'b> {
    pub method: &'b str,
    pub target: &'b str,
    pub version: Version,
    pub headers: &'h [Header<'b>],
    /// Bytes of the head, request line to the empty line included.
    pub len: usize,
    /// The request body: `Empty`, `Length` or `Chunked`.
    pub body: Framing,
    /// Whether the client lets the connection serve another request.
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a go-ahead before its body.
    pub expect_continue: bool,
}

/// A complete, checked response head.
#[derive(Debug)]
pub struct ResponseHead<'h, 'b> {
    pub status: u16,
    pub version: Version,
    pub headers: &'h [Header<'b>],
    pub len: usize,
    /// The body as the headers delimit it; see [`ResponseHead::body`] for
    /// the statuses and methods that have none.
    pub framing: Framing,
    /// Whether the upstream lets the connection serve another request.
    pub keep_alive: bool,
}

impl ResponseHead<'_, '_> {
    /// The body this response has, given whether it answers a HEAD request
    /// (RFC 9112 §6.3: 1xx, 204 and 304 responses, and any response to
    /// HEAD, end with their head).
    pub fn body(&self, head_request: bool) -> Framing {
        if head_request || self.status < 200 || self.status == 204 || self.status == 304 {
            Framing::Empty
        } else {
            self.framing
        }
    }
}

/// Parses a request head from the start of `buf`. `Ok(None)`: incomplete,
/// read more (unless `buf` already holds `max` bytes, which is an error).
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    max: usize,
    slots: &'h mut [Header<'b>],
) -> Result<Option<RequestHead<'h, 'b>>, HeadError> {
    let mut req = httparse::Request::new(slots);
    let Some(len) = complete(req.parse(buf), buf.len(), max)? else {
        return Ok(None);
    };
    let version = version(req.version)?;
    let (method, target) = match (req.method, req.path) {
        (Some(m), Some(p)) => (m, p),
        _ => return Err(HeadError::Malformed("incomplete request line")),
    };
    let headers: &'h [Header<'b>] = req.headers;
    let fields = Fields::scan(headers)?;
    let body = match fields.framing(version)? {
        Framing::UntilClose => Framing::Empty,
        f => f,
    };
    Ok(Some(RequestHead {
        method,
        target,
        version,
        headers,
        len,
        body,
        keep_alive: fields.keep_alive(version),
        expect_continue: fields.expect_continue,
    }))
}

/// Parses a response head from the start of `buf`, as [`parse_request`].
pub fn parse_response<'h, 'b>(
    buf: &'b [u8],
    max: usize,
    slots: &'h mut [Header<'b>],
) -> Result<Option<ResponseHead<'h, 'b>>, HeadError> {
    let mut resp = httparse::Response::new(slots);
    let Some(len) = complete(resp.parse(buf), buf.len(), max)? else {
        return Ok(None);
    };
    let version = version(resp.version)?;
    let status = resp.code.ok_or(HeadError::Malformed("no status"))?;
    if !(100..=999).contains(&status) {
        return Err(HeadError::Malformed("invalid status"));
    }
    let headers: &'h [Header<'b>] = resp.headers;
    let fields = Fields::scan(headers)?;
    let framing = fields.framing(version)?;
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        len,
        framing,
        keep_alive: fields.keep_alive(version),
    }))
}

/// The head's length once `httparse` found it complete within `max`;
/// `None` while it is incomplete and `max` not yet reached.
fn complete(parsed: httparse::Result<usize>, read: usize, max: usize) -> Result<Option<usize>, HeadError> {
    match parsed {
        Ok(Status::Complete(len)) if len > max => Err(HeadError::TooLarge(max)),
        Ok(Status::Complete(len)) => Ok(Some(len)),
        Ok(Status::Partial) if read >= max => Err(HeadError::TooLarge(max)),
        Ok(Status::Partial) => Ok(None),
        Err(e) => Err(HeadError::from_httparse(e)),
    }
}

fn version(minor: Option<u8>) -> Result<Version, HeadError> {
    match minor {
        Some(0) => Ok(Version::Http10),
        Some(1) => Ok(Version::Http11),
        _ => Err(HeadError::Malformed("unsupported HTTP version")),
    }
}

/// What the framing and connection fields of a head say.
#[derive(Default)]
struct Fields {
    length: Option<u64>,
    chunked: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl Fields {
    fn scan(headers: &[Header<'_>]) -> Result<Fields, HeadError> {
        let mut f = Fields::default();
        let mut codings = 0;
        for h in headers {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                if f.length.is_some() {
                    return Err(HeadError::RepeatedLength);
                }
                f.length = Some(parse_length(h.value)?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                codings += 1;
                let value = trim(h.value);
                if codings > 1 || !value.eq_ignore_ascii_case(b"chunked") {
                    return Err(HeadError::TransferCoding(String::from_utf8_lossy(h.value).into_owned()));
                }
                f.chunked = true;
            } else if name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = trim(token);
                    if token.eq_ignore_ascii_case(b"close") {
                        f.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        f.keep_alive = true;
                    }
                }
            } else if name.eq_ignore_ascii_case("expect") {
                f.expect_continue = trim(h.value).eq_ignore_ascii_case(b"100-continue");
            }
        }
        Ok(f)
    }

    fn framing(&self, version: Version) -> Result<Framing, HeadError> {
        match (self.length, self.chunked) {
            (Some(_), true) => Err(HeadError::LengthAndTransferEncoding),
            (None, true) if version == Version::Http10 => {
                Err(HeadError::TransferCoding("chunked (in HTTP/1.0)".into()))
            }
            (None, true) => Ok(Framing::Chunked),
            (Some(0), false) => Ok(Framing::Empty),
            (Some(n), false) => Ok(Framing::Length(n)),
            (None, false) => Ok(Framing::UntilClose),
        }
    }

    fn keep_alive(&self, version: Version) -> bool {
        !self.close && (version == Version::Http11 || self.keep_alive)
    }
}

/// A Content-Length value: 1 to 18 digits and nothing else (no sign, no
/// list, no spaces inside), so it always fits a u64.
fn parse_length(value: &[u8]) -> Result<u64, HeadError> {
    let v = trim(value);
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::BadLength);
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(bytes: &[u8]) -> Result<Option<(Framing, bool, usize)>, HeadError> {
        let mut slots = header_slots();
        parse_request(bytes, 65536, &mut slots).map(|h| h.map(|h| (h.body, h.keep_alive, h.len)))
    }

    fn resp(bytes: &[u8]) -> Result<Framing, HeadError> {
        let mut slots = header_slots();
        parse_response(bytes, 65536, &mut slots).map(|h| h.expect("complete").framing)
    }

    #[test]
    fn framing_of_well_formed_requests() {
        let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(req(get), Ok(Some((Framing::Empty, true, get.len()))));
        let post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(
            req(&[post.as_slice(), b"hello"].concat()),
            Ok(Some((Framing::Length(5), true, post.len())))
        );
        let chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  Chunked \r\n\r\n";
        assert_eq!(req(chunked), Ok(Some((Framing::Chunked, true, chunked.len()))));
        assert_eq!(req(b"GET / HTTP/1.0\r\n\r\n").map(|h| h.map(|h| h.1)), Ok(Some(false)));
        assert_eq!(
            req(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").map(|h| h.map(|h| h.1)),
            Ok(Some(true))
        );
        assert_eq!(
            req(b"GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n").map(|h| h.map(|h| h.1)),
            Ok(Some(false))
        );
    }

    #[test]
    fn incomplete_heads_wait_until_the_limit() {
        assert_eq!(req(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        let mut slots = header_slots();
        let long = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 100]].concat();
        assert_eq!(
            parse_request(&long, 100, &mut slots).map(|_| ()),
            Err(HeadError::TooLarge(100))
        );
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let cases: &[(&[u8], HeadError)] = &[
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::LengthAndTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                HeadError::RepeatedLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                HeadError::RepeatedLength,
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", HeadError::BadLength),
            (b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", HeadError::BadLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n", HeadError::BadLength),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                HeadError::BadLength,
            ),
            (b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", HeadError::BadLength),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                req(bytes).map(|_| ()),
                Err(want.clone()),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        for te in [
            "gzip, chunked",
            "chunked, chunked",
            "identity",
            "chunked, identity",
            "",
            "xchunked",
        ] {
            let head = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert!(
                matches!(req(head.as_bytes()), Err(HeadError::TransferCoding(_))),
                "{te:?}"
            );
        }
        let two = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(req(two), Err(HeadError::TransferCoding(_))));
        let old = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(req(old), Err(HeadError::TransferCoding(_))));
    }

    #[test]
    fn syntax_errors_are_refused() {
        for bytes in [
            b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n".as_slice(),
            b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\0b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX : a\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\n\x01: a\r\n\r\n",
        ] {
            assert!(
                matches!(req(bytes), Err(HeadError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: a\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(req(head.as_bytes()).map(|_| ()), Err(HeadError::TooManyHeaders));
    }

    #[test]
    fn response_framing() {
        assert_eq!(
            resp(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"),
            Ok(Framing::Length(3))
        );
        assert_eq!(
            resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(Framing::Chunked)
        );
        assert_eq!(resp(b"HTTP/1.1 200 OK\r\n\r\n"), Ok(Framing::UntilClose));
        assert_eq!(
            resp(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HeadError::LengthAndTransferEncoding)
        );
        assert!(matches!(
            resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Err(HeadError::TransferCoding(_))
        ));
        let mut slots = header_slots();
        let head = parse_response(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            1024,
            &mut slots,
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.body(false), Framing::Empty);
        let mut slots = header_slots();
        let head = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", 1024, &mut slots)
            .unwrap()
            .unwrap();
        assert_eq!(head.body(true), Framing::Empty);
        assert_eq!(head.body(false), Framing::Length(9));
    }
}
