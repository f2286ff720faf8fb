use super::*;
use http::HeaderValue;

fn encode(status: u16, fields: &[(&'static str, &'static str)]) -> Vec<u8> {
    let mut headers = HeaderMap::new();
    for (name, value) in fields {
        headers.append(*name, HeaderValue::from_static(value));
    }
    let mut out = Vec::new();
    encode_response_head(StatusCode::from_u16(status).unwrap(), &headers, &mut out);
    out
}

fn decode(block: &[u8]) -> Vec<(String, String)> {
    loona_hpack::Decoder::new()
        .decode(block)
        .unwrap()
        .into_iter()
        .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
        .collect()
}

#[test]
fn statuses_in_the_static_table_are_one_byte() {
    for (status, byte) in [
        (200, 0x88),
        (204, 0x89),
        (206, 0x8a),
        (304, 0x8b),
        (400, 0x8c),
        (404, 0x8d),
        (500, 0x8e),
    ] {
        assert_eq!(encode(status, &[]), vec![byte], "{status}");
    }
}

#[test]
fn other_statuses_are_literals_with_the_indexed_name() {
    assert_eq!(encode(431, &[]), b"\x08\x03431".to_vec());
    assert_eq!(encode(100, &[]), b"\x08\x03100".to_vec());
}

#[test]
fn fields_are_literals_without_indexing() {
    // content-type is index 31: 4-bit prefix 15 then 16.
    assert_eq!(
        encode(200, &[("content-type", "text/event-stream")]),
        [&[0x88, 0x0f, 0x10, 17][..], b"text/event-stream"].concat()
    );
    // age is index 21; a name not in the table is a literal.
    assert_eq!(
        encode(200, &[("age", "1"), ("x-a", "")]),
        [&[0x88, 0x0f, 0x06, 1, b'1', 0x00, 3][..], b"x-a", &[0]].concat()
    );
}

#[test]
fn sensitive_values_are_never_indexed() {
    let mut headers = HeaderMap::new();
    let mut value = HeaderValue::from_static("s=1");
    value.set_sensitive(true);
    headers.insert("set-cookie", value);
    let mut out = Vec::new();
    encode_response_head(StatusCode::OK, &headers, &mut out);
    // set-cookie is index 55: never-indexed pattern 0x10, prefix 15, 40.
    assert_eq!(out, [&[0x88, 0x1f, 40, 3][..], b"s=1"].concat());
}

#[test]
fn connection_specific_fields_are_dropped() {
    let block = encode(
        200,
        &[
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("keep-alive", "5"),
            ("upgrade", "x"),
            ("te", "trailers"),
            ("proxy-connection", "x"),
            ("vary", "a"),
        ],
    );
    assert_eq!(
        decode(&block),
        vec![(":status".into(), "200".into()), ("vary".into(), "a".into())]
    );
}

#[test]
fn decodes_back_with_long_values_and_many_fields() {
    let long = "v".repeat(300);
    let mut headers = HeaderMap::new();
    headers.append("x-long", HeaderValue::from_str(&long).unwrap());
    headers.append("set-cookie", HeaderValue::from_static("a=1"));
    headers.append("set-cookie", HeaderValue::from_static("b=2"));
    headers.append("www-authenticate", HeaderValue::from_static("Basic"));
    headers.append("accept-charset", HeaderValue::from_static("x"));
    let mut out = Vec::new();
    encode_response_head(StatusCode::from_u16(599).unwrap(), &headers, &mut out);
    assert_eq!(
        decode(&out),
        vec![
            (":status".into(), "599".into()),
            ("x-long".into(), long),
            ("set-cookie".into(), "a=1".into()),
            ("set-cookie".into(), "b=2".into()),
            ("www-authenticate".into(), "Basic".into()),
            ("accept-charset".into(), "x".into()),
        ]
    );
}

#[test]
fn integers_past_the_prefix() {
    let mut out = Vec::new();
    encode_int(&mut out, 0, 5, 1337);
    assert_eq!(out, [31, 154, 10]);
    out.clear();
    encode_int(&mut out, 0x80, 7, 127);
    assert_eq!(out, [0xff, 0]);
    out.clear();
    encode_int(&mut out, 0, 4, 14);
    assert_eq!(out, [14]);
}
