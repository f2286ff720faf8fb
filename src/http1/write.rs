//! Writing heads: the request ssegate sends upstream and the response it
//! sends its client. Framing fields are never copied from the message that
//! came in: they are written from the [`Framing`] ssegate itself applies,
//! so what is sent always says exactly how the body that follows is
//! delimited.

use super::head::Framing;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode};
use std::io::Write;

/// Appends a request head: `METHOD target HTTP/1.1`, the fields (without
/// `Content-Length` and `Transfer-Encoding`), then the framing fields for
/// `body`.
pub fn request_head(out: &mut Vec<u8>, method: &Method, target: &str, headers: &HeaderMap, body: Framing) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    fields(out, headers);
    match body {
        Framing::Empty if method_expects_length(method) => out.extend_from_slice(b"content-length: 0\r\n"),
        Framing::Empty | Framing::UntilClose => {}
        Framing::Length(n) => length(out, n),
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// POST and PUT without a body still say so, as clients do.
fn method_expects_length(method: &Method) -> bool {
    *method == Method::POST || *method == Method::PUT || *method == Method::PATCH
}

/// Appends a response head with the framing fields for `body`, and
/// `Connection: close` when the connection ends after it.
/// `declared` keeps a `Content-Length` for a body that is not sent (an
/// answer to HEAD, a 304).
pub fn response_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    body: Framing,
    declared: Option<u64>,
    close: bool,
) {
    status_line(out, status);
    fields(out, headers);
    framing_fields(out, status, body, declared, close);
}

/// Hop-by-hop fields (RFC 9110 §7.6.1, and the legacy `Proxy-Connection`),
/// which a proxy never passes on, besides those `Connection` names.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Appends a response head from the upstream's fields as parsed (already
/// checked: tokens for names, no CR, LF or NUL in values), leaving out the
/// hop-by-hop fields, those `Connection` names, framing fields and the
/// names in `drop`; then the framing fields for `body`, as
/// [`response_head`] does. No header map is built on the way.
pub fn response_head_from_fields(
    out: &mut Vec<u8>,
    status: StatusCode,
    fields: &[httparse::Header<'_>],
    drop: &[&str],
    body: Framing,
    declared: Option<u64>,
    close: bool,
) {
    status_line(out, status);
    let named_by_connection = |name: &str| {
        fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case("connection"))
            .flat_map(|f| f.value.split(|&b| b == b','))
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    };
    let has_connection = fields.iter().any(|f| f.name.eq_ignore_ascii_case("connection"));
    for f in fields {
        let name = f.name;
        if name.eq_ignore_ascii_case("content-length")
            || HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
            || drop.iter().any(|d| name.eq_ignore_ascii_case(d))
            || (has_connection && named_by_connection(name))
        {
            continue;
        }
        // Lower case, as the header-map path (and HTTP/2) writes names.
        out.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        out.extend_from_slice(b": ");
        out.extend_from_slice(f.value);
        out.extend_from_slice(b"\r\n");
    }
    framing_fields(out, status, body, declared, close);
}

fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn framing_fields(out: &mut Vec<u8>, status: StatusCode, body: Framing, declared: Option<u64>, close: bool) {
    match body {
        Framing::Length(n) => length(out, n),
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty => {
            if let Some(n) = declared {
                length(out, n);
            } else if status != StatusCode::NO_CONTENT
                && status != StatusCode::NOT_MODIFIED
                && !status.is_informational()
            {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
        Framing::UntilClose => {}
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn fields(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

fn length(out: &mut Vec<u8>, n: u64) {
    let _ = write!(out, "content-length: {n}\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn request_framing_comes_from_ssegate_not_the_fields() {
        let headers = map(&[("host", "a"), ("content-length", "99"), ("transfer-encoding", "gzip")]);
        let mut out = Vec::new();
        request_head(&mut out, &Method::POST, "/x?y", &headers, Framing::Chunked);
        assert_eq!(
            out,
            b"POST /x?y HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n".as_slice()
        );
        out.clear();
        request_head(&mut out, &Method::GET, "/", &map(&[("host", "a")]), Framing::Empty);
        assert_eq!(out, b"GET / HTTP/1.1\r\nhost: a\r\n\r\n".as_slice());
        out.clear();
        request_head(&mut out, &Method::PUT, "/", &map(&[("host", "a")]), Framing::Length(3));
        assert_eq!(
            out,
            b"PUT / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\n".as_slice()
        );
    }

    #[test]
    fn response_head_from_fields_drops_hop_by_hop_and_framing() {
        let fields = [
            httparse::Header {
                name: "Content-Type",
                value: b"text/event-stream",
            },
            httparse::Header {
                name: "Connection",
                value: b"keep-alive, X-Secret",
            },
            httparse::Header {
                name: "X-Secret",
                value: b"1",
            },
            httparse::Header {
                name: "Keep-Alive",
                value: b"timeout=5",
            },
            httparse::Header {
                name: "Transfer-Encoding",
                value: b"chunked",
            },
            httparse::Header {
                name: "Content-Length",
                value: b"5",
            },
            httparse::Header {
                name: "X-Accel-Buffering",
                value: b"no",
            },
            httparse::Header {
                name: "Cache-Control",
                value: b"no-cache",
            },
        ];
        let mut out = Vec::new();
        response_head_from_fields(
            &mut out,
            StatusCode::OK,
            &fields,
            &["x-accel-buffering"],
            Framing::Chunked,
            None,
            false,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n".as_slice()
        );
    }

    #[test]
    fn response_heads() {
        let headers = map(&[("content-type", "text/event-stream")]);
        let mut out = Vec::new();
        response_head(&mut out, StatusCode::OK, &headers, Framing::Chunked, None, false);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".as_slice()
        );
        out.clear();
        response_head(
            &mut out,
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            Framing::Length(4),
            None,
            true,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\nconnection: close\r\n\r\n".as_slice()
        );
        out.clear();
        response_head(
            &mut out,
            StatusCode::OK,
            &HeaderMap::new(),
            Framing::Empty,
            Some(7),
            false,
        );
        assert_eq!(out, b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n".as_slice());
        out.clear();
        response_head(
            &mut out,
            StatusCode::NO_CONTENT,
            &HeaderMap::new(),
            Framing::Empty,
            None,
            false,
        );
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\n\r\n".as_slice());
    }
}
