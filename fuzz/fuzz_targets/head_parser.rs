//! The request and response head parsers on arbitrary bytes (the first
//! byte picks the size limit): never panic; a complete head fits the input
//! and the limit, and is decided by its own bytes (a prefix cut before its
//! end is never complete, bytes after it change nothing); an incomplete one
//! is only reported below the limit; the framing agrees with the fields
//! (`Length(n)`: exactly one Content-Length, of value n, and no
//! Transfer-Encoding; `Chunked`: exactly one Transfer-Encoding, a lone
//! `chunked`, and no Content-Length, never in HTTP/1.0); and no header
//! value holds CR, LF or NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssegate::http1::head::{header_slots, parse_request, parse_response, Framing, HeadError, Version};

/// Everything a parsed head says, to compare two parses.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    len: usize,
    /// Method and target, or the status.
    start: (String, String, u16),
    version: Version,
    fields: Vec<(String, Vec<u8>)>,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
}

fn request(input: &[u8], max: usize) -> Result<Option<Summary>, HeadError> {
    let mut slots = header_slots();
    Ok(parse_request(input, max, &mut slots)?.map(|h| Summary {
        len: h.len,
        start: (h.method.to_owned(), h.target.to_owned(), 0),
        version: h.version,
        fields: fields(h.headers.iter().map(|f| (f.name, f.value))),
        framing: h.body,
        keep_alive: h.keep_alive,
        expect_continue: h.expect_continue,
    }))
}

fn response(input: &[u8], max: usize) -> Result<Option<Summary>, HeadError> {
    let mut slots = header_slots();
    Ok(parse_response(input, max, &mut slots)?.map(|h| Summary {
        len: h.len,
        start: (String::new(), String::new(), h.status),
        version: h.version,
        fields: fields(h.headers.iter().map(|f| (f.name, f.value))),
        framing: h.framing,
        keep_alive: h.keep_alive,
        expect_continue: false,
    }))
}

fn fields<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> Vec<(String, Vec<u8>)> {
    headers.map(|(name, value)| (name.to_owned(), value.to_vec())).collect()
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// The properties every parse must have; `is_request` for what only
/// requests promise.
fn check(input: &[u8], max: usize, parse: fn(&[u8], usize) -> Result<Option<Summary>, HeadError>, is_request: bool) {
    let head = match parse(input, max) {
        Err(_) => return,
        Ok(None) => {
            assert!(input.len() < max, "incomplete at {} bytes, limit {max}", input.len());
            return;
        }
        Ok(Some(h)) => h,
    };
    assert!(
        head.len <= input.len() && head.len <= max,
        "len {} of {} (max {max})",
        head.len,
        input.len()
    );
    assert!(head.len > 0);
    // A prefix cut before the end of the head is never complete.
    for cut in [head.len - 1, head.len.saturating_sub(2), head.len / 2, 0] {
        if let Ok(Some(other)) = parse(&input[..cut], max) {
            panic!("prefix of {cut} bytes parsed as a complete head {other:?}; whole: {head:?}");
        }
    }
    // The bytes after the head do not change it.
    let mut longer = input[..head.len].to_vec();
    longer.extend_from_slice(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    assert_eq!(
        parse(&longer, max).ok().flatten().as_ref(),
        Some(&head),
        "bytes after the head changed it"
    );
    assert_eq!(parse(&input[..head.len], max).ok().flatten().as_ref(), Some(&head));
    // Fields: no CR, LF or NUL in a value; names are non-empty tokens.
    for (name, value) in &head.fields {
        assert!(
            !name.is_empty() && !name.bytes().any(|b| b <= b' ' || b == b':' || b >= 0x7f),
            "name {name:?}"
        );
        assert!(!value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)), "value {value:?}");
    }
    let lengths: Vec<&[u8]> = head
        .fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.as_slice())
        .collect();
    let codings: Vec<&[u8]> = head
        .fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, v)| v.as_slice())
        .collect();
    let length_value = |v: &[u8]| -> u64 {
        let v = trim(v);
        assert!(
            !v.is_empty() && v.len() <= 18 && v.iter().all(u8::is_ascii_digit),
            "length {v:?}"
        );
        std::str::from_utf8(v).unwrap().parse().unwrap()
    };
    match head.framing {
        Framing::Length(n) => {
            assert!(n > 0, "Length(0) is Empty");
            assert_eq!(lengths.len(), 1, "Length({n}) with {lengths:?}");
            assert!(codings.is_empty(), "Length({n}) with Transfer-Encoding {codings:?}");
            assert_eq!(length_value(lengths[0]), n);
        }
        Framing::Chunked => {
            assert_eq!(codings.len(), 1, "Chunked with {codings:?}");
            assert!(
                trim(codings[0]).eq_ignore_ascii_case(b"chunked"),
                "Chunked from {:?}",
                codings[0]
            );
            assert!(lengths.is_empty(), "Chunked with Content-Length {lengths:?}");
            assert_eq!(head.version, Version::Http11, "Chunked in HTTP/1.0");
        }
        Framing::Empty => {
            assert!(codings.is_empty(), "Empty with Transfer-Encoding {codings:?}");
            match lengths.as_slice() {
                [] => assert!(is_request, "a response without framing fields is UntilClose"),
                [v] => assert_eq!(length_value(v), 0, "Empty from Content-Length {v:?}"),
                more => panic!("Empty with {more:?}"),
            }
        }
        Framing::UntilClose => {
            assert!(!is_request, "a request body is never close-delimited");
            assert!(lengths.is_empty() && codings.is_empty());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let max = [16, 64, 256, 1024, 8192, 65536][usize::from(pick % 6)];
    check(input, max, request, true);
    check(input, max, response, false);
});
