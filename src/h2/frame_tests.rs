use super::*;

#[test]
fn header_round_trip_and_reserved_bit_ignored() {
    let mut out = Vec::new();
    let h = FrameHeader {
        len: 0x01_02_03,
        kind: kind::HEADERS,
        flags: flag::END_HEADERS,
        stream: 7,
    };
    h.write(&mut out);
    assert_eq!(out, [1, 2, 3, 1, 4, 0, 0, 0, 7]);
    assert_eq!(FrameHeader::parse(&out), Some(h));
    assert_eq!(FrameHeader::parse(&out[..8]), None);
    let reserved = [0, 0, 8, 6, 0, 0x80, 0, 0, 0];
    assert_eq!(FrameHeader::parse(&reserved).map(|h| h.stream), Some(0));
}

#[test]
fn padding() {
    assert_eq!(strip_padding(0, b"abc"), Ok(&b"abc"[..]));
    assert_eq!(strip_padding(flag::PADDED, b"\x02abc\0\0"), Ok(&b"abc"[..]));
    assert_eq!(strip_padding(flag::PADDED, b"\x00"), Ok(&b""[..]));
    assert_eq!(
        strip_padding(flag::PADDED, b"\x03ab").map_err(|e| e.code),
        Err(ErrorCode::ProtocolError)
    );
    assert_eq!(
        strip_padding(flag::PADDED, b"").map_err(|e| e.code),
        Err(ErrorCode::FrameSizeError)
    );
    // h2spec 6.1: length 5, pad length 6.
    assert_eq!(
        strip_padding(flag::PADDED, b"\x06Test").map_err(|e| e.code),
        Err(ErrorCode::ProtocolError)
    );
}

#[test]
fn headers_payload() {
    let p = parse_headers(flag::PADDED | flag::PRIORITY, b"\x01\x80\0\0\x03\x10block\0").unwrap();
    assert_eq!(
        p.priority,
        Some(Priority {
            dependency: 3,
            exclusive: true,
            weight: 16
        })
    );
    assert_eq!(p.fragment, b"block");
    assert_eq!(parse_headers(0, b"xy").unwrap().fragment, b"xy");
    let short = parse_headers(flag::PRIORITY, b"\0\0\0").map_err(|e| e.code);
    assert_eq!(short, Err(ErrorCode::FrameSizeError));
    let pad = parse_headers(flag::PADDED, b"\x05ab").map_err(|e| e.code);
    assert_eq!(pad, Err(ErrorCode::ProtocolError));
    let pad_and_priority = parse_headers(flag::PADDED | flag::PRIORITY, b"\x01\0\0\0\x01\x10").map_err(|e| e.code);
    assert_eq!(pad_and_priority, Err(ErrorCode::ProtocolError));
}

#[test]
fn settings_payload() {
    let params: Vec<_> = parse_settings(b"\0\x04\0\0\0\x01\0\xff\0\0\0\x02").unwrap().collect();
    assert_eq!(params, vec![(4, 1), (0xff, 2)]);
    assert_eq!(parse_settings(b"").unwrap().count(), 0);
    assert_eq!(
        parse_settings(b"\0\x03\0").err().map(|e| e.code),
        Some(ErrorCode::FrameSizeError)
    );
}

#[test]
fn error_codes_round_trip() {
    for code in 0..=0xe {
        assert_eq!(ErrorCode::from_u32(code).as_u32(), code);
    }
    assert_eq!(ErrorCode::from_u32(0xff), ErrorCode::Other(0xff));
}

#[test]
fn control_frames_written() {
    let mut out = Vec::new();
    write_settings(&mut out, &[(setting::MAX_CONCURRENT_STREAMS, 100)]);
    write_settings_ack(&mut out);
    write_ping(&mut out, true, *b"12345678");
    write_goaway(&mut out, 5, ErrorCode::EnhanceYourCalm, b"x");
    write_rst_stream(&mut out, 3, ErrorCode::Cancel);
    write_window_update(&mut out, 0, 1000);
    write_data(&mut out, 1, b"hi", true);
    let expected: Vec<u8> = [
        &[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100][..],
        &[0, 0, 0, 4, 1, 0, 0, 0, 0],
        &[0, 0, 8, 6, 1, 0, 0, 0, 0],
        b"12345678",
        &[0, 0, 9, 7, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0xb, b'x'],
        &[0, 0, 4, 3, 0, 0, 0, 0, 3, 0, 0, 0, 8],
        &[0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0x03, 0xe8],
        &[0, 0, 2, 0, 1, 0, 0, 0, 1, b'h', b'i'],
    ]
    .concat();
    assert_eq!(out, expected);
}

#[test]
fn header_block_split_into_continuations() {
    let mut out = Vec::new();
    write_header_block(&mut out, 1, b"abcdefg", true, 3);
    let expected: Vec<u8> = [
        &[0, 0, 3, kind::HEADERS, flag::END_STREAM, 0, 0, 0, 1][..],
        b"abc",
        &[0, 0, 3, kind::CONTINUATION, 0, 0, 0, 0, 1],
        b"def",
        &[0, 0, 1, kind::CONTINUATION, flag::END_HEADERS, 0, 0, 0, 1],
        b"g",
    ]
    .concat();
    assert_eq!(out, expected);
    out.clear();
    write_header_block(&mut out, 3, b"", false, 16_384);
    assert_eq!(out, [0, 0, 0, kind::HEADERS, flag::END_HEADERS, 0, 0, 0, 3]);
}
