use super::*;

fn build(fields: &[(&str, &str)], end_stream: bool) -> Result<RequestHead, HeadError> {
    let mut b = HeadBuilder::new(Section::Head, 16 * 1024);
    for (n, v) in fields {
        b.field(n.as_bytes(), v.as_bytes());
    }
    b.finish(end_stream)
}

const GET: [(&str, &str); 4] = [
    (":method", "GET"),
    (":scheme", "https"),
    (":path", "/a?b=c"),
    (":authority", "example.com:8443"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    GET.iter().copied().chain(extra.iter().copied()).collect()
}

fn malformed(fields: &[(&str, &str)]) -> &'static str {
    match build(fields, true) {
        Err(HeadError::Malformed(reason)) => reason,
        other => panic!("expected malformed, got {other:?} for {fields:?}"),
    }
}

#[test]
fn a_get_becomes_an_absolute_form_request() {
    let head = build(&with(&[("accept", "*/*"), ("cookie", "a=1"), ("cookie", "b=2")]), true).unwrap();
    assert_eq!(head.parts.method, Method::GET);
    assert_eq!(head.parts.uri, "https://example.com:8443/a?b=c");
    assert_eq!(head.parts.version, Version::HTTP_2);
    assert_eq!(head.parts.headers["accept"], "*/*");
    assert_eq!(head.parts.headers.get_all("cookie").iter().count(), 2);
    assert_eq!(head.content_length, None);
}

#[test]
fn without_authority_the_origin_form_and_host() {
    let head = build(
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            ("host", "h.example"),
        ],
        true,
    )
    .unwrap();
    assert_eq!(head.parts.uri, "/");
    assert_eq!(head.parts.uri.scheme(), None);
    assert_eq!(head.parts.headers["host"], "h.example");
}

#[test]
fn a_host_unlike_the_authority_is_left_to_the_proxy_to_refuse() {
    assert!(build(&with(&[("host", "EXAMPLE.com:8443")]), true).is_ok());
    let head = build(&with(&[("host", "other.example"), ("host", "third.example")]), true).unwrap();
    assert_eq!(head.parts.headers.get_all("host").iter().count(), 2);
}

#[test]
fn options_asterisk_and_connect() {
    let head = build(
        &[
            (":method", "OPTIONS"),
            (":scheme", "https"),
            (":path", "*"),
            (":authority", "a"),
        ],
        true,
    )
    .unwrap();
    assert_eq!(head.parts.uri.path(), "*");
    let head = build(&[(":method", "CONNECT"), (":authority", "a.example:443")], false).unwrap();
    assert_eq!(head.parts.method, Method::CONNECT);
    assert_eq!(head.parts.uri, "a.example:443");
    malformed(&[(":method", "CONNECT"), (":authority", "a:1"), (":path", "/")]);
    malformed(&[(":method", "CONNECT")]);
    malformed(&[(":method", "GET"), (":scheme", "https"), (":path", "*")]);
}

#[test]
fn pseudo_header_rules() {
    // RFC 9113, 8.3.1 (h2spec 8.1.2.1 and 8.1.2.3).
    malformed(&with(&[(":test", "ok")]));
    malformed(&with(&[(":status", "200")]));
    malformed(&with(&[(":protocol", "websocket")]));
    let mut after = vec![("x-test", "ok")];
    after.extend(GET);
    assert_eq!(malformed(&after), "pseudo-header after a regular field");
    malformed(&GET[1..]);
    malformed(&[GET[0], GET[2], GET[3]]);
    malformed(&[GET[0], GET[1], GET[3]]);
    assert_eq!(malformed(&with(&[(":method", "GET")])), "duplicate :method");
    let mut dup = GET.to_vec();
    dup.insert(1, (":method", "GET"));
    assert_eq!(malformed(&dup), "duplicate :method");
    dup = GET.to_vec();
    dup.insert(1, (":scheme", "https"));
    assert_eq!(malformed(&dup), "duplicate :scheme");
    dup = GET.to_vec();
    dup.insert(1, (":path", "/"));
    assert_eq!(malformed(&dup), "duplicate :path");
    malformed(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", ""),
        (":authority", "a"),
    ]);
    malformed(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "a"),
        (":authority", "a"),
    ]);
    malformed(&[
        (":method", "G T"),
        (":scheme", "https"),
        (":path", "/"),
        (":authority", "a"),
    ]);
}

#[test]
fn field_rules() {
    // RFC 9113, 8.2 (h2spec 8.1.2 and 8.1.2.2).
    assert_eq!(malformed(&with(&[("X-TEST", "ok")])), "upper-case field name");
    malformed(&with(&[("connection", "keep-alive")]));
    malformed(&with(&[("keep-alive", "5")]));
    malformed(&with(&[("proxy-connection", "x")]));
    malformed(&with(&[("transfer-encoding", "chunked")]));
    malformed(&with(&[("upgrade", "h2c")]));
    malformed(&with(&[("trailers", "test"), ("te", "trailers, deflate")]));
    assert!(build(&with(&[("te", "trailers")]), true).is_ok());
    malformed(&with(&[("x", "a\r\nb")]));
    malformed(&with(&[("x", "a\0")]));
    malformed(&with(&[("x", " a")]));
    malformed(&with(&[("x", "a\t")]));
    malformed(&with(&[("", "a")]));
    malformed(&with(&[("a b", "a")]));
    assert!(build(&with(&[("x", "a b"), ("y", "")]), true).is_ok());
}

#[test]
fn content_length() {
    let head = build(&with(&[("content-length", "4")]), false).unwrap();
    assert_eq!(head.content_length, Some(4));
    assert_eq!(
        build(&with(&[("content-length", "0")]), true).unwrap().content_length,
        Some(0)
    );
    assert_eq!(
        malformed(&with(&[("content-length", "4")])),
        "content-length with no body"
    );
    malformed(&with(&[("content-length", "-1")]));
    malformed(&with(&[("content-length", "1,1")]));
    malformed(&with(&[("content-length", "99999999999999999999")]));
    malformed(&with(&[("content-length", "1"), ("content-length", "2")]));
    assert!(build(&with(&[("content-length", "1"), ("content-length", "1")]), false).is_ok());
}

#[test]
fn too_large_counts_as_rfc_9113_does() {
    // 4 pseudo-headers: 7+3, 7+5, 5+6, 10+16 bytes, + 4 * 32.
    let size: u32 = 10 + 12 + 11 + 26 + 128;
    for (limit, ok) in [(size, true), (size - 1, false)] {
        let mut b = HeadBuilder::new(Section::Head, limit);
        for (n, v) in GET {
            b.field(n.as_bytes(), v.as_bytes());
        }
        assert_eq!(b.finish(true).is_ok(), ok, "limit {limit}");
    }
    let mut b = HeadBuilder::new(Section::Head, 100);
    b.field(b"X-BAD", b"");
    b.field(b"x", &[b'a'; 100]);
    assert_eq!(b.finish(true).err(), Some(HeadError::TooLarge), "too large wins");
}

#[test]
fn trailers() {
    let check = |fields: &[(&str, &str)]| {
        let mut b = HeadBuilder::new(Section::Trailers, 1024);
        for (n, v) in fields {
            b.field(n.as_bytes(), v.as_bytes());
        }
        b.finish_trailers()
    };
    assert_eq!(check(&[("x-test", "ok")]), Ok(()));
    assert_eq!(check(&[]), Ok(()));
    assert!(matches!(check(&[(":method", "POST")]), Err(HeadError::Malformed(_))));
    assert!(matches!(check(&[("X-A", "1")]), Err(HeadError::Malformed(_))));
    assert_eq!(check(&[("x", &"a".repeat(2000))]), Err(HeadError::TooLarge));
}
