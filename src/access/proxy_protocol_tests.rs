use super::*;
use ProxyHeaderError::*;

fn tcp(source: &str, destination: &str) -> ProxyHeader {
    ProxyHeader::Tcp {
        source: source.parse().unwrap(),
        destination: destination.parse().unwrap(),
    }
}

fn complete(buf: &[u8]) -> (ProxyHeader, usize) {
    match decode(buf) {
        Ok(Decoded::Complete { header, len }) => (header, len),
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

fn at_least(buf: &[u8]) -> usize {
    match decode(buf) {
        Ok(Decoded::Incomplete { at_least }) => at_least,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

fn error(buf: &[u8]) -> ProxyHeaderError {
    match decode(buf) {
        Err(e) => e,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

/// A v2 header assembled field by field, as the spec's `proxy_hdr_v2` lays it out.
fn v2(version_command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut h = vec![0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];
    h.push(version_command);
    h.push(family);
    h.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
    h.extend_from_slice(block);
    h
}

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut t = vec![kind];
    t.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
    t.extend_from_slice(value);
    t
}

const PROXY: u8 = 0x21;
const LOCAL: u8 = 0x20;

// ---- Version 1 ----

#[test]
fn v1_spec_example_before_an_http_request() {
    let input = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n";
    let (header, len) = complete(input);
    assert_eq!(header, tcp("192.168.0.1:56324", "192.168.0.11:443"));
    assert_eq!(len, 47);
    assert_eq!(&input[len..len + 3], b"GET");
}

#[test]
fn v1_spec_maximal_lines() {
    let v4 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
    assert_eq!(
        complete(v4),
        (tcp("255.255.255.255:65535", "255.255.255.255:65535"), 56)
    );
    let f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let v6 = format!("PROXY TCP6 {f} {f} 65535 65535\r\n");
    let any = format!("[{f}]:65535");
    assert_eq!(complete(v6.as_bytes()), (tcp(&any, &any), 104));
    assert_eq!(complete(b"PROXY UNKNOWN\r\n"), (ProxyHeader::Local, 15));
    let worst = format!("PROXY UNKNOWN {f} {f} 65535 65535\r\n");
    assert_eq!(complete(worst.as_bytes()), (ProxyHeader::Local, 107));
    assert_eq!(worst.len(), MAX_V1_HEADER_LEN);
}

#[test]
fn v1_shortest_lines() {
    assert_eq!(
        complete(b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n"),
        (tcp("0.0.0.0:0", "0.0.0.0:0"), MIN_V1_TCP4_LEN)
    );
    assert_eq!(
        complete(b"PROXY TCP6 :: :: 0 0\r\n"),
        (tcp("[::]:0", "[::]:0"), MIN_V1_TCP6_LEN)
    );
    assert_eq!(complete(b"PROXY UNKNOWN\r\n").1, MIN_HEADER_LEN);
}

#[test]
fn v1_ipv6_forms() {
    assert_eq!(
        complete(b"PROXY TCP6 2001:DB8::1 ::ffff:192.0.2.1 1 65534\r\n").0,
        tcp("[2001:db8::1]:1", "[::ffff:192.0.2.1]:65534")
    );
}

#[test]
fn v1_unknown_ignores_the_rest_of_the_line() {
    for line in [
        &b"PROXY UNKNOWN \r\n"[..],
        b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY UNKNOWN anything at all \x00\xff\t!\r\n",
    ] {
        assert_eq!(complete(line), (ProxyHeader::Local, line.len()));
    }
    assert_eq!(error(b"PROXY UNKNOWNX\r\n"), V1UnknownProtocol);
    assert_eq!(error(b"PROXY UNKNOWNX"), V1UnknownProtocol, "refused before the CRLF");
    assert_eq!(error(b"PROXY UNKNOWN x\ry\r\n"), V1BadLineEnding);
    assert_eq!(error(b"PROXY UNKNOWN x\ny\r\n"), V1BadLineEnding);
}

#[test]
fn v1_line_length_limit() {
    // 107 bytes with the CRLF: accepted. 108: refused, as soon as 106 bytes without a CR
    // are in (the CR could then only come at byte 107).
    let fill = |n: usize| format!("PROXY UNKNOWN {}\r\n", "x".repeat(n));
    let at_limit = fill(MAX_V1_HEADER_LEN - 16);
    assert_eq!(at_limit.len(), MAX_V1_HEADER_LEN);
    assert_eq!(complete(at_limit.as_bytes()).1, MAX_V1_HEADER_LEN);
    let over = fill(MAX_V1_HEADER_LEN - 15);
    assert_eq!(over.len(), MAX_V1_HEADER_LEN + 1);
    assert_eq!(error(over.as_bytes()), V1LineTooLong);
    assert_eq!(at_least(&over.as_bytes()[..105]), 2);
    assert_eq!(error(&over.as_bytes()[..106]), V1LineTooLong);
    // A CR as the 107th byte: its LF would be the 108th.
    assert_eq!(error(&over.as_bytes()[..107]), V1LineTooLong);
    // The line at the limit followed by data is still fine.
    let mut with_data = at_limit.clone().into_bytes();
    with_data.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(complete(&with_data).1, MAX_V1_HEADER_LEN);
    // A TCP line padded with spaces beyond the limit.
    let long = format!("PROXY TCP4 1.2.3.4 5.6.7.8 1 2{}\r\n", " ".repeat(100));
    assert_eq!(error(long.as_bytes()), V1LineTooLong);
}

#[test]
fn v1_line_endings() {
    assert_eq!(at_least(b"PROXY UNKNOWN\r"), 1);
    assert_eq!(error(b"PROXY UNKNOWN\n"), V1BadLineEnding);
    assert_eq!(error(b"PROXY UNKNOWN\rX"), V1BadLineEnding);
    assert_eq!(error(b"PROXY UNKNOWN\r\r\n"), V1BadLineEnding);
    assert_eq!(error(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), V1BadLineEnding);
    assert_eq!(error(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r\n"), V1BadLineEnding);
    assert_eq!(error(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n"), V1BadLineEnding);
    assert_eq!(error(b"PROXY TCP4\n"), V1BadLineEnding);
}

#[test]
fn v1_malformed_lines() {
    use V1Part::*;
    for (line, expected) in [
        // Protocol word.
        (&b"PROXY \r\n"[..], V1UnknownProtocol),
        (b"PROXY TCP4\r\n", V1UnknownProtocol),
        (b"PROXY TCP\r\n", V1UnknownProtocol),
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", V1UnknownProtocol),
        (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", V1UnknownProtocol),
        (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", V1UnknownProtocol),
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", V1UnknownProtocol),
        (b"PROXY unknown\r\n", V1UnknownProtocol),
        // Field layout.
        (b"PROXY TCP4 \r\n", V1Malformed { part: Fields }),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", V1Malformed { part: Fields }),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", V1Malformed { part: Fields }),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", V1Malformed { part: Fields }),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", V1Malformed { part: Fields }),
        (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", V1Malformed { part: Fields }),
        // Characters no TCP line holds, refused where they are.
        (
            b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
            V1Malformed { part: SourceAddress },
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8/8 1 2\r\n",
            V1Malformed {
                part: DestinationAddress,
            },
        ),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", V1Malformed { part: SourcePort }),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n",
            V1Malformed { part: DestinationPort },
        ),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 x\r\n", V1Malformed { part: Fields }),
        (b"PROXY TCP6 [::1] ::2 1 2\r\n", V1Malformed { part: SourceAddress }),
        (b"PROXY TCP6 fe80::1%1 ::2 1 2\r\n", V1Malformed { part: SourceAddress }),
        // Addresses.
        (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", V1Malformed { part: SourceAddress }),
        (
            b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",
            V1Malformed { part: SourceAddress },
        ),
        (
            b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
            V1Malformed { part: SourceAddress },
        ),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", V1Malformed { part: SourceAddress }),
        (
            b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
            V1Malformed {
                part: DestinationAddress,
            },
        ),
        (
            b"PROXY TCP4 1.2.3.4 a.b.c.d 1 2\r\n",
            V1Malformed {
                part: DestinationAddress,
            },
        ),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", V1Malformed { part: SourceAddress }),
        (
            b"PROXY TCP6 ::1 1::2::3 1 2\r\n",
            V1Malformed {
                part: DestinationAddress,
            },
        ),
        // Ports.
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", V1Malformed { part: SourcePort }),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n", V1Malformed { part: SourcePort }),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            V1Malformed { part: SourcePort },
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n",
            V1Malformed { part: SourcePort },
        ),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 a 2\r\n", V1Malformed { part: SourcePort }),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 0443\r\n",
            V1Malformed { part: DestinationPort },
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
            V1Malformed { part: DestinationPort },
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 1.2\r\n",
            V1Malformed { part: DestinationPort },
        ),
    ] {
        assert_eq!(decode(line), Err(expected), "{:?}", String::from_utf8_lossy(line));
    }
}

#[test]
fn v1_signature_mismatch_is_refused_at_the_first_differing_byte() {
    let prefix = b"PROXY ";
    for at in 1..prefix.len() {
        for b in 0..=255u8 {
            let mut input = prefix[..at].to_vec();
            input.push(b);
            if b == prefix[at] {
                assert!(matches!(decode(&input), Ok(Decoded::Incomplete { .. })));
            } else {
                assert_eq!(decode(&input), Err(NotProxyProtocol { offset: at }), "{input:?}");
            }
        }
    }
    assert_eq!(error(b"PROXY\r\n"), NotProxyProtocol { offset: 5 });
    assert_eq!(error(b"POST / HTTP/1.1\r\n"), NotProxyProtocol { offset: 1 });
    assert_eq!(error(b"PRI * HTTP/2.0\r\n"), NotProxyProtocol { offset: 2 });
    assert_eq!(error(b"PUT"), NotProxyProtocol { offset: 1 });
}

#[test]
fn v1_protocol_word_is_refused_early() {
    assert_eq!(error(b"PROXY X"), V1UnknownProtocol);
    assert_eq!(error(b"PROXY TX"), V1UnknownProtocol);
    assert_eq!(error(b"PROXY TCP5"), V1UnknownProtocol);
    assert_eq!(error(b"PROXY TCP4X"), V1UnknownProtocol);
    assert_eq!(error(b"PROXY UNX"), V1UnknownProtocol);
    assert_eq!(
        error(b"PROXY TCP4 1.2.3.4 g"),
        V1Malformed {
            part: V1Part::DestinationAddress
        }
    );
    for ok in [
        &b"PROXY T"[..],
        b"PROXY TCP",
        b"PROXY TCP4",
        b"PROXY TCP6 ",
        b"PROXY UNKNOWN",
        b"PROXY UNKNOWN ",
    ] {
        assert!(matches!(decode(ok), Ok(Decoded::Incomplete { .. })), "{ok:?}");
    }
}

#[test]
fn v1_incomplete_lower_bounds() {
    assert_eq!(at_least(b""), MIN_HEADER_LEN);
    assert_eq!(at_least(b"P"), MIN_HEADER_LEN - 1);
    assert_eq!(at_least(b"PROXY"), MIN_HEADER_LEN - 5);
    assert_eq!(at_least(b"PROXY "), MIN_HEADER_LEN - 6);
    assert_eq!(at_least(b"PROXY TCP4"), MIN_V1_TCP4_LEN - 10);
    assert_eq!(at_least(b"PROXY TCP6 "), MIN_V1_TCP6_LEN - 11);
    assert_eq!(at_least(b"PROXY UNKNOWN"), 2);
    assert_eq!(at_least(b"PROXY UNKNOWN\r"), 1);
    assert_eq!(at_least(b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535"), 2);
}

// ---- Version 2 ----

#[test]
fn v2_tcp4_built_byte_by_byte() {
    // The v1 spec example, in binary: 192.168.0.1:56324 -> 192.168.0.11:443.
    let expected: &[u8] = &[
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, // signature
        0x21, // version 2, PROXY
        0x11, // AF_INET, STREAM
        0x00, 0x0C, // 12 address bytes
        192, 168, 0, 1, // source address
        192, 168, 0, 11, // destination address
        0xDC, 0x04, // source port 56324
        0x01, 0xBB, // destination port 443
    ];
    let built = v2(PROXY, 0x11, &[192, 168, 0, 1, 192, 168, 0, 11, 0xDC, 0x04, 0x01, 0xBB]);
    assert_eq!(built, expected);
    assert_eq!(complete(expected), (tcp("192.168.0.1:56324", "192.168.0.11:443"), 28));
    let mut with_data = expected.to_vec();
    with_data.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(complete(&with_data).1, 28);
}

#[test]
fn v2_tcp6_with_tlvs() {
    let mut block = Vec::new();
    block.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    block.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
    block.extend_from_slice(&[0xFF, 0xFF, 0x00, 0x50]);
    block.extend(tlv(0x01, b"h2")); // ALPN
    block.extend(tlv(0x02, b"example.com")); // AUTHORITY
    block.extend(tlv(0x04, b"")); // NOOP, empty
    block.extend(tlv(0x03, &[0xDE, 0xAD, 0xBE, 0xEF])); // CRC32C: not verified
    let mut ssl = vec![0x01, 0, 0, 0, 0];
    ssl.extend(tlv(0x21, b"TLSv1.3"));
    block.extend(tlv(0x20, &ssl)); // SSL with a sub-TLV
    block.extend(tlv(0xEE, &[0; 300]));
    let header = v2(PROXY, 0x21, &block);
    assert_eq!(header[14..16], u16::try_from(block.len()).unwrap().to_be_bytes());
    assert_eq!(
        complete(&header),
        (tcp("[2001:db8::1]:65535", "[2001:db8::2]:80"), 16 + block.len())
    );
}

#[test]
fn v2_local_discards_the_block() {
    assert_eq!(complete(&v2(LOCAL, 0x00, &[])), (ProxyHeader::Local, 16));
    // Addresses presented anyway are skipped (the spec: never assume zero for LOCAL).
    let with_addresses = v2(LOCAL, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
    assert_eq!(complete(&with_addresses), (ProxyHeader::Local, 28));
    // The family is ignored, even undefined ones, and so is what the block holds.
    for family in [0x12, 0x31, 0xFF, 0x44] {
        assert_eq!(complete(&v2(LOCAL, family, &[0xFF; 7])), (ProxyHeader::Local, 23));
    }
    // Even a TCP family too short for its addresses.
    assert_eq!(complete(&v2(LOCAL, 0x21, &[0; 4])), (ProxyHeader::Local, 20));
}

#[test]
fn v2_proxy_unspecified_is_local() {
    assert_eq!(complete(&v2(PROXY, 0x00, &[])), (ProxyHeader::Local, 16));
    // Whatever it carries is skipped, unchecked.
    assert_eq!(complete(&v2(PROXY, 0x00, &[0xFF; 5])), (ProxyHeader::Local, 21));
}

#[test]
fn v2_families_with_the_proxy_command() {
    for family in 0..=255u8 {
        let header = v2(PROXY, family, &[0; 36]);
        let known = family >> 4 <= 3 && family & 0x0f <= 2;
        let expected = match family {
            0x00 => Ok(Decoded::Complete {
                header: ProxyHeader::Local,
                len: 52,
            }),
            0x11 => Ok(Decoded::Complete {
                header: tcp("0.0.0.0:0", "0.0.0.0:0"),
                len: 52,
            }),
            0x21 => Ok(Decoded::Complete {
                header: tcp("[::]:0", "[::]:0"),
                len: 52,
            }),
            _ if known => Err(V2UnsupportedFamily { family }),
            _ => Err(V2InvalidFamily { family }),
        };
        // For 0x11, the 24 zero bytes after the IPv4 addresses are 8 empty TLVs of type 0.
        assert_eq!(decode(&header), expected, "family {family:#04x}");
        if expected.is_err() {
            // Refused as soon as the family byte is in.
            assert_eq!(decode(&header[..14]), expected, "family {family:#04x}");
        }
    }
    assert_eq!(error(&v2(PROXY, 0x12, &[0; 12])), V2UnsupportedFamily { family: 0x12 });
    assert_eq!(error(&v2(PROXY, 0x22, &[0; 36])), V2UnsupportedFamily { family: 0x22 });
    assert_eq!(error(&v2(PROXY, 0x31, &[0; 216])), V2UnsupportedFamily { family: 0x31 });
    assert_eq!(error(&v2(PROXY, 0x32, &[0; 216])), V2UnsupportedFamily { family: 0x32 });
}

#[test]
fn v2_version_and_command_nibbles() {
    for byte in 0..=255u8 {
        let header = v2(byte, 0x11, &[0; 12]);
        let result = decode(&header[..13]);
        match (byte >> 4, byte & 0x0f) {
            (2, 0 | 1) => assert_eq!(result, Ok(Decoded::Incomplete { at_least: 3 })),
            (2, command) => assert_eq!(result, Err(V2Command { command })),
            (version, _) => assert_eq!(result, Err(V2Version { version })),
        }
        assert_eq!(decode(&header).is_ok(), byte == 0x20 || byte == 0x21, "{byte:#04x}");
    }
}

#[test]
fn v2_signature_mismatch_is_refused_at_the_first_differing_byte() {
    let signature = V2_SIGNATURE;
    for at in 0..signature.len() {
        for b in 0..=255u8 {
            let mut input = signature[..at].to_vec();
            input.push(b);
            let result = decode(&input);
            if b == signature[at] {
                assert_eq!(
                    result,
                    Ok(Decoded::Incomplete {
                        at_least: 16 - input.len()
                    })
                );
            } else if at == 0 && b == b'P' {
                assert!(matches!(result, Ok(Decoded::Incomplete { .. })));
            } else {
                assert_eq!(result, Err(NotProxyProtocol { offset: at }), "{input:?}");
            }
        }
    }
}

#[test]
fn first_byte_decides() {
    for b in 0..=255u8 {
        let result = decode(&[b]);
        match b {
            b'P' => assert_eq!(result, Ok(Decoded::Incomplete { at_least: 14 })),
            b'\r' => assert_eq!(result, Ok(Decoded::Incomplete { at_least: 15 })),
            _ => assert_eq!(result, Err(NotProxyProtocol { offset: 0 }), "{b:#04x}"),
        }
    }
    // A TLS ClientHello and plain HTTP connecting directly.
    assert_eq!(error(&[0x16, 0x03, 0x01]), NotProxyProtocol { offset: 0 });
    assert_eq!(error(b"GET / HTTP/1.1\r\n"), NotProxyProtocol { offset: 0 });
    // Empty lines before a request (which HTTP servers tolerate) look like the v2
    // signature until its fifth byte.
    assert_eq!(at_least(b"\r\n\r\n"), 12);
    assert_eq!(error(b"\r\n\r\nGET"), NotProxyProtocol { offset: 4 });
}

#[test]
fn v2_length_limit() {
    let at_limit = v2(LOCAL, 0x00, &vec![0; MAX_V2_HEADER_LEN - 16]);
    assert_eq!(complete(&at_limit), (ProxyHeader::Local, MAX_V2_HEADER_LEN));
    assert_eq!(at_least(&at_limit[..16]), MAX_V2_HEADER_LEN - 16);
    let over = v2(LOCAL, 0x00, &vec![0; MAX_V2_HEADER_LEN - 15]);
    // Refused as soon as the length field is in, not after buffering it.
    assert_eq!(
        error(&over[..16]),
        V2TooLong {
            len: MAX_V2_HEADER_LEN + 1
        }
    );
    assert!(matches!(decode(&over[..15]), Ok(Decoded::Incomplete { at_least: 1 })));
    let mut max = v2(PROXY, 0x21, &[]);
    max[14..16].copy_from_slice(&[0xFF, 0xFF]);
    assert_eq!(error(&max), V2TooLong { len: 65551 });
    // TCP headers with TLVs up to the limit.
    let mut block = vec![0; 12];
    block.extend(tlv(0x04, &vec![0; MAX_V2_HEADER_LEN - 16 - 12 - 3]));
    assert_eq!(complete(&v2(PROXY, 0x11, &block)).1, MAX_V2_HEADER_LEN);
}

#[test]
fn v2_address_block_too_short() {
    assert_eq!(
        error(&v2(PROXY, 0x11, &[0; 11])[..16]),
        V2AddressesTooShort {
            family: 0x11,
            len: 11,
            needed: 12
        }
    );
    assert_eq!(
        error(&v2(PROXY, 0x21, &[0; 35])),
        V2AddressesTooShort {
            family: 0x21,
            len: 35,
            needed: 36
        }
    );
    assert_eq!(
        error(&v2(PROXY, 0x21, &[0; 12])),
        V2AddressesTooShort {
            family: 0x21,
            len: 12,
            needed: 36
        }
    );
    assert_eq!(complete(&v2(PROXY, 0x21, &[0; 36])).1, 52);
}

#[test]
fn v2_tlvs_must_fill_the_block_exactly() {
    let addresses = [10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0x00, 0x50];
    let with = |tail: &[u8]| v2(PROXY, 0x11, &[&addresses[..], tail].concat());
    assert_eq!(complete(&with(&[])).1, 28);
    assert_eq!(
        complete(&with(&[0x04, 0x00, 0x00])),
        (tcp("10.0.0.1:12345", "10.0.0.2:80"), 31)
    );
    assert_eq!(complete(&with(&[0x04, 0x00, 0x01, 0xAA, 0x05, 0x00, 0x00])).1, 35);
    // One or two stray bytes: not even a TLV header.
    assert_eq!(error(&with(&[0x04])), V2MalformedTlv { offset: 28 });
    assert_eq!(error(&with(&[0x04, 0x00])), V2MalformedTlv { offset: 28 });
    // A value running past the block.
    assert_eq!(error(&with(&[0x04, 0x00, 0x02, 0xAA])), V2MalformedTlv { offset: 28 });
    assert_eq!(error(&with(&[0x04, 0xFF, 0xFF])), V2MalformedTlv { offset: 28 });
    // The second TLV is the bad one.
    assert_eq!(
        error(&with(&[0x04, 0x00, 0x01, 0xAA, 0x05, 0x00, 0x09, 0x01])),
        V2MalformedTlv { offset: 32 }
    );
}

#[test]
fn v2_incomplete_is_exact_once_the_length_is_in() {
    let header = v2(PROXY, 0x21, &[7; 36 + 3]);
    for cut in 0..header.len() {
        let expected = if cut == 0 {
            MIN_HEADER_LEN
        } else if cut < 16 {
            16 - cut
        } else {
            header.len() - cut
        };
        assert_eq!(
            decode(&header[..cut]),
            Ok(Decoded::Incomplete { at_least: expected }),
            "cut {cut}"
        );
    }
}

#[test]
fn error_messages() {
    assert_eq!(
        NotProxyProtocol { offset: 0 }.to_string(),
        "the connection does not start with a PROXY protocol header (byte 0 differs)"
    );
    assert_eq!(
        V1LineTooLong.to_string(),
        "the PROXY v1 line has no CRLF within its first 107 bytes"
    );
    assert_eq!(
        V1Malformed {
            part: V1Part::SourcePort
        }
        .to_string(),
        "the PROXY v1 line has a malformed source port"
    );
    assert_eq!(V2Version { version: 1 }.to_string(), "the PROXY v2 version is 1, not 2");
    assert_eq!(
        V2Command { command: 2 }.to_string(),
        "the PROXY v2 command is 0x2, neither LOCAL (0x0) nor PROXY (0x1)"
    );
    assert_eq!(
        V2UnsupportedFamily { family: 0x12 }.to_string(),
        "the PROXY v2 header relays a 0x12 connection (UDP or UNIX); only TCP is accepted"
    );
    assert_eq!(
        V2InvalidFamily { family: 0x40 }.to_string(),
        "the PROXY v2 address family and transport byte 0x40 is not defined"
    );
    assert_eq!(
        V2TooLong { len: 5000 }.to_string(),
        "the PROXY v2 header is 5000 bytes long; at most 4096 are accepted"
    );
    assert_eq!(
        V2AddressesTooShort {
            family: 0x21,
            len: 12,
            needed: 36
        }
        .to_string(),
        "the PROXY v2 address block is 12 bytes, 36 needed for family 0x21"
    );
}

// ---- Robustness ----

/// Everything [`decode`] promises about `input` and its prefixes and extensions.
/// The cargo-fuzz target `proxy_protocol` checks the same properties.
fn check_properties(input: &[u8]) {
    let whole = decode(input);
    match whole {
        Ok(Decoded::Complete { len, header }) => {
            assert!(len > 0 && len <= input.len(), "len {len} of {}", input.len());
            assert!(len <= MAX_HEADER_LEN);
            if input[0] == b'P' {
                assert!(len <= MAX_V1_HEADER_LEN);
            }
            // Decided by its own bytes: the header alone and with other bytes after it.
            assert_eq!(decode(&input[..len]), whole);
            let mut longer = input[..len].to_vec();
            longer.extend_from_slice(b"\r\n\r\nPROXY \x00\xff");
            assert_eq!(decode(&longer), whole);
            if let ProxyHeader::Tcp { source, destination } = header {
                assert_eq!(source.is_ipv4(), destination.is_ipv4());
            }
            // Every shorter prefix is incomplete, with a bound that does not overshoot.
            for cut in 0..len {
                match decode(&input[..cut]) {
                    Ok(Decoded::Incomplete { at_least }) => {
                        assert!(at_least >= 1 && at_least <= len - cut, "cut {cut}: {at_least} of {len}")
                    }
                    other => panic!("prefix of {cut} bytes: {other:?}; whole: {whole:?}"),
                }
            }
        }
        Ok(Decoded::Incomplete { at_least }) => {
            assert!(at_least >= 1);
            assert!(input.len() + at_least <= MAX_HEADER_LEN, "{} + {at_least}", input.len());
        }
        Err(_) => {}
    }
    // A prefix that is refused or complete decides the whole input the same way.
    for cut in 0..input.len() {
        match decode(&input[..cut]) {
            Ok(Decoded::Incomplete { at_least }) => {
                assert!(at_least >= 1 && cut + at_least <= MAX_HEADER_LEN)
            }
            decided => assert_eq!(decided, whole, "prefix of {cut} bytes decided differently"),
        }
    }
}

/// SplitMix64: a small deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let mut tlvs = vec![10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0x00, 0x50];
    tlvs.extend(tlv(0x01, b"h2"));
    tlvs.extend(tlv(0x04, b""));
    let mut v6 = vec![0x20; 36];
    v6.extend(tlv(0x04, &[1, 2, 3]));
    vec![
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
        format!("PROXY TCP6 {f} 2001:db8::1 65535 0\r\n").into_bytes(),
        b"PROXY UNKNOWN\r\n".to_vec(),
        format!("PROXY UNKNOWN {f} {f} 65535 65535\r\n").into_bytes(),
        v2(PROXY, 0x11, &[192, 168, 0, 1, 192, 168, 0, 11, 0xDC, 0x04, 0x01, 0xBB]),
        v2(PROXY, 0x11, &tlvs),
        v2(PROXY, 0x21, &v6),
        v2(LOCAL, 0x00, &[]),
        v2(LOCAL, 0x11, &[1; 12]),
        v2(PROXY, 0x00, &[9; 4]),
    ]
}

#[test]
fn every_prefix_of_valid_headers() {
    for seed in seeds() {
        let (_, len) = complete(&seed);
        check_properties(&seed);
        for cut in 0..=len {
            check_properties(&seed[..cut]);
        }
    }
}

#[test]
fn mutated_and_random_inputs() {
    let mut rng = Rng(0x5353_4547_4154_4521);
    let seeds = seeds();
    let mut outcomes = [0usize; 3];
    for round in 0..4000 {
        let mut input = if round % 4 == 3 {
            // Random bytes behind a plausible first byte.
            let mut v = vec![if rng.next() & 1 == 0 { b'P' } else { b'\r' }];
            v.extend((0..rng.below(120)).map(|_| rng.next() as u8));
            v
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        for _ in 0..=rng.below(3) {
            let at = rng.below(input.len() + 1);
            match rng.below(6) {
                0 if at < input.len() => input[at] = rng.next() as u8,
                1 if at < input.len() => input[at] ^= 1 << rng.below(8),
                2 if at < input.len() => {
                    input.remove(at);
                }
                3 => input.insert(at, [b' ', b'\r', b'\n', b'0', b':', 0x00, 0xFF][rng.below(7)]),
                4 => input.truncate(at),
                // A v2 length field pointing somewhere else.
                5 if input.len() >= 16 && input[0] == b'\r' => {
                    let len = rng.below(80) as u16;
                    input[14..16].copy_from_slice(&len.to_be_bytes());
                }
                _ => {}
            }
        }
        check_properties(&input);
        outcomes[match decode(&input) {
            Ok(Decoded::Complete { .. }) => 0,
            Ok(Decoded::Incomplete { .. }) => 1,
            Err(_) => 2,
        }] += 1;
    }
    // The generator reaches all three answers, so the properties were exercised.
    assert!(outcomes.iter().all(|&n| n > 100), "{outcomes:?}");
}
