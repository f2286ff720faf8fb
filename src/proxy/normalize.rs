//! Request-path normalisation, done once before a request is routed, so that
//! the path a Route matched is the path its upstream receives.
//!
//! Without it a `PathPrefix /admin` Route would match `/admin/../secret`
//! and forward it raw, and the prefix would not confine what a client can
//! reach on that upstream. The choices, each deliberate:
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//!   decoded, so `%2e%2e` is the `..` it stands for; other escapes are kept,
//!   with their hex digits upper-cased;
//! - dot segments are removed as RFC 3986 §5.2.4 says; `..` never climbs
//!   above the root;
//! - an encoded slash (`%2F`) or backslash (`%5C`) is refused by default,
//!   because upstreams disagree about whether it separates segments; with
//!   [`EncodedSlashes::Keep`] it stays encoded, an ordinary byte of its segment;
//! - a raw backslash, an encoded NUL (`%00`), a malformed escape and a path
//!   that does not start with `/` are refused;
//! - repeated slashes are kept: `/a//b` is not `/a/b` to every upstream.
//!
//! Pure string work: no I/O, no allocation when the path is already normal.

use std::borrow::Cow;

/// What to do with `%2F` and `%5C` in a request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncodedSlashes {
    /// Answer 400.
    #[default]
    Reject,
    /// Keep them encoded, as part of the segment they are in.
    Keep,
}

/// Why a path cannot be normalised; the request gets a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path must start with /")]
    NotAbsolute,
    #[error("malformed percent-encoding in the request path")]
    BadEscape,
    #[error("encoded slash or backslash (%2F, %5C) in the request path")]
    EncodedSlash,
    #[error("backslash in the request path")]
    Backslash,
    #[error("encoded NUL (%00) in the request path")]
    EncodedNul,
}

/// Normalises `path` (without its query). Borrows when nothing changes.
pub fn normalize_path(path: &str, slashes: EncodedSlashes) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let bytes = path.as_bytes();
    let needs_decoding = bytes.iter().any(|&b| b == b'%' || b == b'\\');
    let has_dots = has_dot_segment(path);
    if !needs_decoding && !has_dots {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = if needs_decoding {
        Cow::Owned(decode_unreserved(bytes, slashes)?)
    } else {
        Cow::Borrowed(path)
    };
    if !has_dot_segment(&decoded) {
        return Ok(decoded);
    }
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

fn has_dot_segment(path: &str) -> bool {
    path.contains("/.") && path.split('/').any(|s| s == "." || s == "..")
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes escapes of unreserved characters and upper-cases the rest.
fn decode_unreserved(bytes: &[u8], slashes: EncodedSlashes) -> Result<String, PathError> {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let value = hi << 4 | lo;
                match value {
                    0 => return Err(PathError::EncodedNul),
                    b'/' | b'\\' if slashes == EncodedSlashes::Reject => return Err(PathError::EncodedSlash),
                    v if is_unreserved(v) => out.push(v as char),
                    v => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        out.push('%');
                        out.push(HEX[(v >> 4) as usize] as char);
                        out.push(HEX[(v & 15) as usize] as char);
                    }
                }
                i += 3;
            }
            _ => {
                // Copy the run up to the next byte of interest in one go
                // (it may hold multi-byte UTF-8, which is copied whole).
                let end = bytes[i..]
                    .iter()
                    .position(|&b| b == b'%' || b == b'\\')
                    .map_or(bytes.len(), |p| i + p);
                out.push_str(std::str::from_utf8(&bytes[i..end]).map_err(|_| PathError::BadEscape)?);
                i = end;
            }
        }
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 for an absolute path: `.` segments go, `..` removes the
/// segment before it (never the root), and a path that ended in a dot
/// segment keeps its trailing slash.
fn remove_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path[1..].split('/') {
        trailing_slash = false;
        match segment {
            "." => trailing_slash = true,
            ".." => {
                kept.pop();
                trailing_slash = true;
            }
            s => kept.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalize_path(p, EncodedSlashes::Reject).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/a/b", "/a//b", "/a.b/c..d/.e", "/ünïcode"] {
            assert!(
                matches!(normalize_path(p, EncodedSlashes::Reject), Ok(Cow::Borrowed(_))),
                "{p}"
            );
        }
        assert_eq!(norm("/a.b/c..d/.e").unwrap(), "/a.b/c..d/.e");
    }

    #[test]
    fn rfc3986_dot_segment_examples() {
        for (input, want) in [
            ("/a/b/c/./../../g", "/a/g"),
            ("/admin/../secret", "/secret"),
            ("/public/../admin/x", "/admin/x"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/..", "/"),
            ("/../../x", "/x"),
            ("/.", "/"),
            ("/a/./b", "/a/b"),
            ("/a//../b", "/a/b"),
            ("/a/b/../", "/a/"),
        ] {
            assert_eq!(norm(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn encoded_dots_and_unreserved_are_decoded() {
        assert_eq!(norm("/admin/%2e%2e/secret").unwrap(), "/secret");
        assert_eq!(norm("/admin/%2E%2e/secret").unwrap(), "/secret");
        assert_eq!(norm("/admin/.%2e/x").unwrap(), "/x");
        assert_eq!(norm("/%61dmin/%7Euser").unwrap(), "/admin/~user");
        // Reserved and other bytes stay encoded, hex upper-cased.
        assert_eq!(norm("/a%20b/%3f/%e2%82%ac").unwrap(), "/a%20b/%3F/%E2%82%AC");
    }

    #[test]
    fn refusals() {
        assert_eq!(norm("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(norm("*"), Err(PathError::NotAbsolute));
        assert_eq!(norm("/a%2"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%2fb"), Err(PathError::EncodedSlash));
        assert_eq!(norm("/a%5Cb"), Err(PathError::EncodedSlash));
        assert_eq!(norm("/a\\..\\b"), Err(PathError::Backslash));
        assert_eq!(norm("/a%00b"), Err(PathError::EncodedNul));
    }

    #[test]
    fn encoded_slashes_can_be_kept_as_bytes_of_their_segment() {
        let keep = |p| normalize_path(p, EncodedSlashes::Keep).map(Cow::into_owned);
        assert_eq!(keep("/public/..%2fadmin").unwrap(), "/public/..%2Fadmin");
        assert_eq!(keep("/a/%2F../b").unwrap(), "/a/%2F../b");
        assert_eq!(keep("/a/b%2F/../c").unwrap(), "/a/c");
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for p in ["/a/%2e%2e/b/./c/..", "/x/%41%42/../%7e", "/%2E%2E/%2E/q"] {
            let once = norm(p).unwrap();
            assert_eq!(norm(&once).unwrap(), once, "{p}");
        }
    }
}
