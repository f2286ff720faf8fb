//! Response heads encoded with HPACK (RFC 7541) without the dynamic table.
//!
//! Why no dynamic table: it would be per-connection encoder state (up to
//! 4 KiB plus bookkeeping) kept for the connection's whole life, to save a
//! few dozen bytes per response; ssegate's responses are few and long (event
//! streams), so the memory matters more. Without it every field is either
//! a static-table index (`:status` 200, 204, 206, 304, 400, 404, 500), or a
//! "literal without indexing" whose name is a static-table index when the
//! name is in the table and a literal otherwise. No Huffman coding either:
//! it would cost CPU for every response to save a fraction of the bytes.
//!
//! A value marked sensitive ([`http::HeaderValue::is_sensitive`]) is sent
//! as "never indexed" (RFC 7541, 6.2.3), so that no intermediary compresses
//! it into a table where a guessing attack could probe it.

use http::{HeaderMap, HeaderName, StatusCode};

/// Fields that are connection-specific in HTTP/1.1 and forbidden in
/// HTTP/2 (RFC 9113, 8.2.2): a response carrying one is malformed and the
/// client would reset the stream, so they are dropped here whatever the
/// upstream said.
fn is_connection_specific(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "te"
    )
}

/// The static-table index (RFC 7541, Appendix A) of a `:status` with its
/// value, for the seven statuses the table holds.
fn status_index(status: StatusCode) -> Option<usize> {
    Some(match status.as_u16() {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => return None,
    })
}

/// The index of `:status` as a name (any of 8..=14).
const STATUS_NAME_INDEX: usize = 8;

/// The first static-table index whose name is `name` (RFC 7541,
/// Appendix A), for the regular (non-pseudo) fields.
fn static_name_index(name: &str) -> Option<usize> {
    Some(match name {
        "accept-charset" => 15,
        "accept-encoding" => 16,
        "accept-language" => 17,
        "accept-ranges" => 18,
        "accept" => 19,
        "access-control-allow-origin" => 20,
        "age" => 21,
        "allow" => 22,
        "authorization" => 23,
        "cache-control" => 24,
        "content-disposition" => 25,
        "content-encoding" => 26,
        "content-language" => 27,
        "content-length" => 28,
        "content-location" => 29,
        "content-range" => 30,
        "content-type" => 31,
        "cookie" => 32,
        "date" => 33,
        "etag" => 34,
        "expect" => 35,
        "expires" => 36,
        "from" => 37,
        "host" => 38,
        "if-match" => 39,
        "if-modified-since" => 40,
        "if-none-match" => 41,
        "if-range" => 42,
        "if-unmodified-since" => 43,
        "last-modified" => 44,
        "link" => 45,
        "location" => 46,
        "max-forwards" => 47,
        "proxy-authenticate" => 48,
        "proxy-authorization" => 49,
        "range" => 50,
        "referer" => 51,
        "refresh" => 52,
        "retry-after" => 53,
        "server" => 54,
        "set-cookie" => 55,
        "strict-transport-security" => 56,
        "transfer-encoding" => 57,
        "user-agent" => 58,
        "vary" => 59,
        "via" => 60,
        "www-authenticate" => 61,
        _ => return None,
    })
}

/// Appends an HPACK integer (RFC 7541, 5.1): `first` holds the
/// representation's pattern bits above the `prefix_bits`-bit prefix.
fn encode_int(out: &mut Vec<u8>, first: u8, prefix_bits: u8, value: usize) {
    let max_prefix = (1usize << prefix_bits) - 1;
    if value < max_prefix {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// Appends a string literal without Huffman coding (RFC 7541, 5.2).
fn encode_str(out: &mut Vec<u8>, s: &[u8]) {
    encode_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// Appends one field as a literal without indexing (or never indexed when
/// `sensitive`): the name by static index if it has one (RFC 7541, 6.2.2
/// and 6.2.3).
fn encode_literal(out: &mut Vec<u8>, name_index: Option<usize>, name: &[u8], value: &[u8], sensitive: bool) {
    let pattern = if sensitive { 0x10 } else { 0x00 };
    match name_index {
        Some(index) => encode_int(out, pattern, 4, index),
        None => {
            out.push(pattern);
            encode_str(out, name);
        }
    }
    encode_str(out, value);
}

/// Appends the header block of a response head: `:status`, then every
/// field of `headers` except the connection-specific ones.
pub fn encode_response_head(status: StatusCode, headers: &HeaderMap, out: &mut Vec<u8>) {
    match status_index(status) {
        Some(index) => encode_int(out, 0x80, 7, index),
        None => encode_literal(
            out,
            Some(STATUS_NAME_INDEX),
            b":status",
            status.as_str().as_bytes(),
            false,
        ),
    }
    for (name, value) in headers {
        if is_connection_specific(name) {
            continue;
        }
        encode_literal(
            out,
            static_name_index(name.as_str()),
            name.as_str().as_bytes(),
            value.as_bytes(),
            value.is_sensitive(),
        );
    }
}

#[cfg(test)]
#[path = "hpack_out_tests.rs"]
mod tests;
