//! The PROXY protocol header decoder on arbitrary bytes: never panics; a
//! complete header fits the input and the limits (v1 within 107 bytes), and
//! is decided by its own bytes (the header alone, or followed by other bytes,
//! decodes the same; every shorter prefix is incomplete, with an `at_least`
//! that does not overshoot the header's end); an incomplete answer never
//! asks to buffer past `MAX_HEADER_LEN`; and a prefix that is refused or
//! complete decides the whole input the same way (errors are final and come
//! as soon as the offending byte is in).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssegate::access::proxy_protocol::{decode, Decoded, ProxyHeader, MAX_HEADER_LEN, MAX_V1_HEADER_LEN};

fn check(input: &[u8]) {
    let whole = decode(input);
    match whole {
        Ok(Decoded::Complete { header, len }) => {
            assert!(len > 0 && len <= input.len(), "len {len} of {}", input.len());
            assert!(len <= MAX_HEADER_LEN);
            if input[0] == b'P' {
                assert!(len <= MAX_V1_HEADER_LEN, "v1 line of {len} bytes");
            }
            if let ProxyHeader::Tcp { source, destination } = header {
                assert_eq!(source.is_ipv4(), destination.is_ipv4(), "{source} -> {destination}");
            }
            assert_eq!(decode(&input[..len]), whole, "the header alone decoded differently");
            let mut longer = input[..len].to_vec();
            longer.extend_from_slice(b"\r\n\r\nPROXY \x00\xff");
            assert_eq!(decode(&longer), whole, "bytes after the header changed it");
            for cut in 0..len {
                match decode(&input[..cut]) {
                    Ok(Decoded::Incomplete { at_least }) => assert!(
                        at_least >= 1 && at_least <= len - cut,
                        "prefix of {cut}: at least {at_least} more, header ends at {len}"
                    ),
                    other => panic!("prefix of {cut} bytes: {other:?}; whole: {whole:?}"),
                }
            }
        }
        Ok(Decoded::Incomplete { at_least }) => {
            assert!(at_least >= 1);
            assert!(
                input.len() + at_least <= MAX_HEADER_LEN,
                "asks for {at_least} more after {}",
                input.len()
            );
        }
        Err(_) => {}
    }
    for cut in 0..input.len() {
        match decode(&input[..cut]) {
            Ok(Decoded::Incomplete { .. }) => {}
            decided => assert_eq!(decided, whole, "prefix of {cut} bytes decided differently"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Headers are short: past the v2 limit nothing new can happen.
    check(&data[..data.len().min(MAX_HEADER_LEN + 16)]);
});
