//! A sans-I/O decoder for the PROXY protocol header, versions 1 (text) and 2 (binary),
//! as HAProxy's `doc/proxy-protocol.txt` defines them: the few bytes a TCP load balancer
//! puts in front of a connection to say which client it relays.
//!
//! [`decode`] looks at the bytes received so far and answers one of: the header is
//! complete (what it says and how many bytes it took), more bytes are needed (at least
//! how many), or the connection is not valid PROXY protocol and must be closed. The
//! caller owns the socket, the buffer and the timeout (the spec suggests a few seconds,
//! at least 3 to cover a TCP retransmit); this module only decides. Partial headers are
//! tolerated, as the spec recommends: a header split across reads decodes the same.
//!
//! Decisions, and why:
//!
//! - **Fail fast.** A listener that expects the header must refuse a connection that does
//!   not start with one (spec §2: never guess, or any client could spoof its address).
//!   Every check runs as soon as the byte it needs has arrived, so a plain HTTP or TLS
//!   client is refused after its first byte, a wrong signature byte as soon as it is
//!   seen, a bad version, command, family or oversize length as soon as those bytes are
//!   in, not after waiting for a whole header. Checks run in byte order, so a prefix that
//!   is refused gives the same error as any longer input starting with it.
//! - **Version 1** is parsed strictly: `PROXY`, single spaces, `TCP4`/`TCP6` with four
//!   fields, addresses in `std::net` syntax (IPv4 without leading zeros, as the spec
//!   requires), ports in decimal without leading zeros, a CRLF within
//!   [`MAX_V1_HEADER_LEN`] bytes; a lone CR or LF is an error. `UNKNOWN` may be followed
//!   by anything up to the CRLF, which is ignored, as the spec says.
//! - **Version 2**: version nibble 2 and command LOCAL or PROXY only. LOCAL discards the
//!   whole block, family included (spec). PROXY with TCP over IPv4 or IPv6 gives the
//!   addresses; the bytes after them must be well-formed TLVs (type, 16-bit length,
//!   value, exactly filling the block, as HAProxy checks), whose contents are skipped.
//!   The whole header is capped at [`MAX_V2_HEADER_LEN`], refused as soon as the length
//!   field is read. The CRC32C TLV is not verified: the spec makes that conditional on
//!   receiver support, and it guards against corruption that TCP's own checksum already
//!   covers, not against a sender that could compute it.
//! - **Non-TCP families.** PROXY with `AF_UNSPEC`/`UNSPEC` (`\x00`) is the binary twin of
//!   v1 `UNKNOWN` and is accepted as [`ProxyHeader::Local`] (the spec says a v1 `UNKNOWN`
//!   SHOULD be accepted with the connection's own addresses; HAProxy does the same for
//!   v2). PROXY with UDP or UNIX families is refused: the spec lets a receiver fall back
//!   to UNSPEC for combinations it does not implement and then "accept the connection
//!   anyway ... or reject it"; we reject, because a datagram or unix-socket origin
//!   announced on a TCP listener is a misconfigured sender, and accepting it as Local
//!   would attribute the connection to the proxy itself, whose address is often
//!   trusted or allowlisted: failing closed is the safe side for access control.
//!   Family or transport nibbles the spec does not define are refused as invalid.
//!
//! Hand-written rather than the `ppp` crate: `ppp` tells partial input from bad input
//! only through a separate trait, does not refuse a non-matching signature early, bounds
//! nothing beyond the 16-bit length, and its v1 ports go through `u16::from_str`, which
//! takes a leading `+`. The format is small; owning it keeps those properties exact.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest v1 line, CRLF included: the spec's worst case, `PROXY UNKNOWN` with two full
/// IPv6 addresses and ports, is 107 bytes, and it says to refuse a line without a CRLF
/// within that.
pub const MAX_V1_HEADER_LEN: usize = 107;

/// Longest v2 header accepted, in bytes, the 16 fixed bytes included. The address block
/// is at most 36 bytes (TCP over IPv6); the rest is TLVs, which load balancers use for
/// a connection id, a VPC endpoint, an authority, TLS details: a few hundred bytes in
/// practice. 4 KiB leaves ample room for those (not for a raw client certificate TLV,
/// which a sender should not need to send us) while bounding what a connection can make
/// us buffer before it has said anything. The 16-bit length field would allow 64 KiB.
pub const MAX_V2_HEADER_LEN: usize = 4096;

/// The most bytes [`decode`] ever needs to see: a caller's buffer of this size always
/// suffices, since `Incomplete` is only answered while the buffer is shorter.
pub const MAX_HEADER_LEN: usize = MAX_V2_HEADER_LEN;

/// What starts a v1 header.
const V1_PREFIX: &[u8] = b"PROXY ";

/// The 12 bytes that start a v2 header.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Signature, version/command, family, 16-bit length.
const V2_FIXED_LEN: usize = 16;

/// The shortest complete header of any kind: `PROXY UNKNOWN\r\n`.
const MIN_HEADER_LEN: usize = 15;

/// The shortest complete `TCP4` line: `PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n`.
const MIN_V1_TCP4_LEN: usize = 32;

/// The shortest complete `TCP6` line: `PROXY TCP6 :: :: 0 0\r\n`.
const MIN_V1_TCP6_LEN: usize = 22;

/// Address block of TCP over IPv4: two addresses, two ports.
const V2_TCP4_ADDRESS_LEN: usize = 2 * 4 + 2 * 2;

/// Address block of TCP over IPv6.
const V2_TCP6_ADDRESS_LEN: usize = 2 * 16 + 2 * 2;

/// TLV type (1 byte) and length (2 bytes).
const V2_TLV_HEADER_LEN: usize = 3;

/// The answer for the bytes seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// Valid so far; read at least `at_least` (≥ 1) more bytes and decode again. It is
    /// a lower bound: exact for v2 once the length field is in, a minimum before.
    Incomplete { at_least: usize },
    /// A whole header: what it says, and its length in bytes (the connection's data
    /// starts right after it).
    Complete { header: ProxyHeader, len: usize },
}

/// What a complete header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A relayed TCP connection: the client's address (`source`) and the address it
    /// connected to (`destination`), over IPv4 or IPv6 (both of the same family).
    Tcp {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// No relayed addresses (v2 LOCAL, such as a health check; v2 PROXY with an
    /// unspecified family; v1 `UNKNOWN`): use the connection's own addresses.
    Local,
}

/// Why the bytes are not a valid PROXY protocol header. The connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    /// Neither signature: the peer does not speak the PROXY protocol (a direct HTTP or
    /// TLS client, say), or the listener should not expect it.
    #[error("the connection does not start with a PROXY protocol header (byte {offset} differs)")]
    NotProxyProtocol { offset: usize },
    #[error("the PROXY v1 line has no CRLF within its first {MAX_V1_HEADER_LEN} bytes")]
    V1LineTooLong,
    #[error("the PROXY v1 line holds a CR or LF that is not its final CRLF")]
    V1BadLineEnding,
    #[error("the PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN")]
    V1UnknownProtocol,
    #[error("the PROXY v1 line has a malformed {part}")]
    V1Malformed { part: V1Part },
    #[error("the PROXY v2 version is {version}, not 2")]
    V2Version { version: u8 },
    #[error("the PROXY v2 command is {command:#x}, neither LOCAL (0x0) nor PROXY (0x1)")]
    V2Command { command: u8 },
    #[error("the PROXY v2 address family and transport byte {family:#04x} is not defined")]
    V2InvalidFamily { family: u8 },
    #[error("the PROXY v2 header relays a {family:#04x} connection (UDP or UNIX); only TCP is accepted")]
    V2UnsupportedFamily { family: u8 },
    #[error("the PROXY v2 header is {len} bytes long; at most {MAX_V2_HEADER_LEN} are accepted")]
    V2TooLong { len: usize },
    #[error("the PROXY v2 address block is {len} bytes, {needed} needed for family {family:#04x}")]
    V2AddressesTooShort { family: u8, len: usize, needed: usize },
    #[error("the PROXY v2 TLV at byte {offset} overruns the header")]
    V2MalformedTlv { offset: usize },
}

/// Which part of a v1 line is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1Part {
    /// Not exactly four single-space-separated fields after `TCP4`/`TCP6`.
    Fields,
    SourceAddress,
    DestinationAddress,
    SourcePort,
    DestinationPort,
}

impl std::fmt::Display for V1Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            V1Part::Fields => "field list (four fields separated by single spaces expected)",
            V1Part::SourceAddress => "source address",
            V1Part::DestinationAddress => "destination address",
            V1Part::SourcePort => "source port",
            V1Part::DestinationPort => "destination port",
        })
    }
}

/// Decodes the PROXY protocol header at the start of `buf`, the bytes received so far
/// on a connection that must start with one. See the module documentation.
///
/// Guarantees, for any bytes: no panic; `Complete { len }` has `0 < len <= buf.len()`
/// and depends only on `buf[..len]`; `Incomplete { at_least }` has `at_least >= 1` and
/// `buf.len() + at_least <= MAX_HEADER_LEN`; and an error for `buf` is the same error
/// for every longer input that starts with `buf`.
pub fn decode(buf: &[u8]) -> Result<Decoded, ProxyHeaderError> {
    match buf.first() {
        None => Ok(Decoded::Incomplete {
            at_least: MIN_HEADER_LEN,
        }),
        Some(b'P') => decode_v1(buf),
        Some(b'\r') => decode_v2(buf),
        Some(_) => Err(ProxyHeaderError::NotProxyProtocol { offset: 0 }),
    }
}

/// Checks that `buf` starts with `expected`, or with a prefix of it when shorter.
fn match_prefix(buf: &[u8], expected: &[u8]) -> Result<(), ProxyHeaderError> {
    match buf.iter().zip(expected).position(|(got, want)| got != want) {
        Some(offset) => Err(ProxyHeaderError::NotProxyProtocol { offset }),
        None => Ok(()),
    }
}

fn incomplete(at_least: usize) -> Result<Decoded, ProxyHeaderError> {
    Ok(Decoded::Incomplete {
        at_least: at_least.max(1),
    })
}

fn decode_v1(buf: &[u8]) -> Result<Decoded, ProxyHeaderError> {
    match_prefix(buf, V1_PREFIX)?;
    if buf.len() < V1_PREFIX.len() {
        return incomplete(MIN_HEADER_LEN - buf.len());
    }
    // The CR may sit at most at index 105, so that its LF is the 107th byte.
    let window = &buf[..buf.len().min(MAX_V1_HEADER_LEN - 1)];
    let line_end = window.iter().position(|&b| b == b'\r' || b == b'\n');
    let content = &buf[V1_PREFIX.len()..line_end.unwrap_or(window.len())];
    check_v1_content(content)?;
    match line_end {
        Some(end) if buf[end] == b'\n' => Err(ProxyHeaderError::V1BadLineEnding),
        Some(end) => match buf.get(end + 1) {
            None => incomplete(1),
            Some(b'\n') => Ok(Decoded::Complete {
                header: parse_v1_content(content)?,
                len: end + 2,
            }),
            Some(_) => Err(ProxyHeaderError::V1BadLineEnding),
        },
        None if window.len() == MAX_V1_HEADER_LEN - 1 => Err(ProxyHeaderError::V1LineTooLong),
        None => {
            let shortest = if content.starts_with(b"TCP4") {
                MIN_V1_TCP4_LEN
            } else if content.starts_with(b"TCP6") {
                MIN_V1_TCP6_LEN
            } else {
                MIN_HEADER_LEN
            };
            // CR and LF are still to come.
            incomplete(shortest.saturating_sub(buf.len()).max(2))
        }
    }
}

/// The checks that can run on part of a v1 line (what follows `PROXY `, up to the CR
/// or to the end of the bytes so far), in byte order: the protocol word, then the
/// characters a TCP line may hold. A full line passes them before it is parsed, so a
/// prefix fails exactly as the whole line would.
fn check_v1_content(content: &[u8]) -> Result<(), ProxyHeaderError> {
    let could_become = |word: &[u8]| content.len() <= word.len() && word.starts_with(content);
    if content.starts_with(b"TCP4 ") || content.starts_with(b"TCP6 ") {
        let fields = &content[5..];
        if let Some(bad) = fields
            .iter()
            .position(|&b| !(b.is_ascii_hexdigit() || b == b'.' || b == b':' || b == b' '))
        {
            let part = match fields[..bad].iter().filter(|&&b| b == b' ').count() {
                0 => V1Part::SourceAddress,
                1 => V1Part::DestinationAddress,
                2 => V1Part::SourcePort,
                3 => V1Part::DestinationPort,
                _ => V1Part::Fields,
            };
            return Err(ProxyHeaderError::V1Malformed { part });
        }
        Ok(())
    } else if content.starts_with(b"UNKNOWN") {
        match content.get(7) {
            None | Some(b' ') => Ok(()),
            Some(_) => Err(ProxyHeaderError::V1UnknownProtocol),
        }
    } else if could_become(b"TCP4 ") || could_become(b"TCP6 ") || could_become(b"UNKNOWN") {
        Ok(())
    } else {
        Err(ProxyHeaderError::V1UnknownProtocol)
    }
}

/// Parses a whole v1 line between `PROXY ` and the CRLF, which passed [`check_v1_content`].
fn parse_v1_content(content: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    let is_v6 = if content.starts_with(b"TCP4 ") {
        false
    } else if content.starts_with(b"TCP6 ") {
        true
    } else if content.starts_with(b"UNKNOWN") {
        return Ok(ProxyHeader::Local);
    } else {
        // A prefix of a protocol word cut by the CRLF: `PROXY TCP4\r\n`, `PROXY \r\n`.
        return Err(ProxyHeaderError::V1UnknownProtocol);
    };
    let malformed = |part| ProxyHeaderError::V1Malformed { part };
    let mut fields = content[5..].split(|&b| b == b' ');
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(malformed(V1Part::Fields));
    };
    let address = |text: &[u8], part| -> Result<IpAddr, ProxyHeaderError> {
        // ASCII by check_v1_content.
        let text = std::str::from_utf8(text).map_err(|_| malformed(part))?;
        if is_v6 {
            text.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| malformed(part))
        } else {
            text.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| malformed(part))
        }
    };
    let source = address(src, V1Part::SourceAddress)?;
    let destination = address(dst, V1Part::DestinationAddress)?;
    let source_port = parse_v1_port(sport).ok_or(malformed(V1Part::SourcePort))?;
    let destination_port = parse_v1_port(dport).ok_or(malformed(V1Part::DestinationPort))?;
    Ok(ProxyHeader::Tcp {
        source: SocketAddr::new(source, source_port),
        destination: SocketAddr::new(destination, destination_port),
    })
}

/// A decimal port, 0 to 65535, without leading zeros (the spec forbids them).
fn parse_v1_port(text: &[u8]) -> Option<u16> {
    let digits_ok = matches!(text.len(), 1..=5) && text.iter().all(u8::is_ascii_digit);
    if !digits_ok || (text.len() > 1 && text[0] == b'0') {
        return None;
    }
    let value = text.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    u16::try_from(value).ok()
}

/// What a v2 PROXY command relays, by its family/transport byte.
#[derive(Clone, Copy)]
enum V2Relayed {
    Unspecified,
    Tcp4,
    Tcp6,
}

fn decode_v2(buf: &[u8]) -> Result<Decoded, ProxyHeaderError> {
    match_prefix(buf, V2_SIGNATURE)?;
    let Some(&version_command) = buf.get(12) else {
        return incomplete(V2_FIXED_LEN - buf.len());
    };
    let version = version_command >> 4;
    if version != 2 {
        return Err(ProxyHeaderError::V2Version { version });
    }
    let is_proxy = match version_command & 0x0f {
        0x0 => false,
        0x1 => true,
        command => return Err(ProxyHeaderError::V2Command { command }),
    };
    let Some(&family) = buf.get(13) else {
        return incomplete(V2_FIXED_LEN - buf.len());
    };
    // LOCAL ignores the family entirely, as the spec says.
    let relayed = if is_proxy {
        Some(match family {
            0x00 => V2Relayed::Unspecified,
            0x11 => V2Relayed::Tcp4,
            0x21 => V2Relayed::Tcp6,
            _ if family >> 4 > 0x3 || family & 0x0f > 0x2 => return Err(ProxyHeaderError::V2InvalidFamily { family }),
            _ => return Err(ProxyHeaderError::V2UnsupportedFamily { family }),
        })
    } else {
        None
    };
    if buf.len() < V2_FIXED_LEN {
        return incomplete(V2_FIXED_LEN - buf.len());
    }
    let block_len = usize::from(be16(buf, 14));
    let len = V2_FIXED_LEN + block_len;
    if len > MAX_V2_HEADER_LEN {
        return Err(ProxyHeaderError::V2TooLong { len });
    }
    let needed = match relayed {
        Some(V2Relayed::Tcp4) => V2_TCP4_ADDRESS_LEN,
        Some(V2Relayed::Tcp6) => V2_TCP6_ADDRESS_LEN,
        Some(V2Relayed::Unspecified) | None => 0,
    };
    if block_len < needed {
        return Err(ProxyHeaderError::V2AddressesTooShort {
            family,
            len: block_len,
            needed,
        });
    }
    if buf.len() < len {
        return incomplete(len - buf.len());
    }
    let block = &buf[V2_FIXED_LEN..len];
    let header = match relayed {
        None | Some(V2Relayed::Unspecified) => ProxyHeader::Local,
        // The block is at least `needed` bytes long, checked above.
        Some(V2Relayed::Tcp4) => ProxyHeader::Tcp {
            source: SocketAddr::new(Ipv4Addr::from(bytes::<4>(block, 0)).into(), be16(block, 8)),
            destination: SocketAddr::new(Ipv4Addr::from(bytes::<4>(block, 4)).into(), be16(block, 10)),
        },
        Some(V2Relayed::Tcp6) => ProxyHeader::Tcp {
            source: SocketAddr::new(Ipv6Addr::from(bytes::<16>(block, 0)).into(), be16(block, 32)),
            destination: SocketAddr::new(Ipv6Addr::from(bytes::<16>(block, 16)).into(), be16(block, 34)),
        },
    };
    // Where the addresses end the TLVs begin; only known for TCP. They must tile the
    // rest of the block exactly.
    if matches!(relayed, Some(V2Relayed::Tcp4 | V2Relayed::Tcp6)) {
        let mut at = V2_FIXED_LEN + needed;
        while at < len {
            let overrun = ProxyHeaderError::V2MalformedTlv { offset: at };
            if at + V2_TLV_HEADER_LEN > len {
                return Err(overrun);
            }
            let value_len = usize::from(be16(buf, at + 1));
            at += V2_TLV_HEADER_LEN + value_len;
            if at > len {
                return Err(overrun);
            }
        }
    }
    Ok(Decoded::Complete { header, len })
}

/// `N` bytes of `buf` from `at`, which the caller has checked are there.
fn bytes<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}

/// A 16-bit big-endian number (a port, a length) at `at`.
fn be16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(bytes::<2>(buf, at))
}

#[cfg(test)]
#[path = "proxy_protocol_tests.rs"]
mod tests;
