//! Which address a request comes from, for access decisions (source-range allowlists
//! and denylists, per-client limits): the TCP peer, or, when the peer is a trusted
//! proxy, the address that proxy reports in `X-Forwarded-For`.
//!
//! The algorithm is nginx's `real_ip_recursive on` with `set_real_ip_from` (what
//! ingress-nginx configures from `proxy-real-ip-cidr`), the one MDN's `X-Forwarded-For`
//! page describes:
//!
//! 1. If the peer is not trusted, it is the client; `X-Forwarded-For` is ignored, since
//!    anyone can send one.
//! 2. Otherwise walk the entries from the right (the last field's last entry first),
//!    skipping trusted addresses, and return the first untrusted one.
//! 3. If every entry is trusted, return the leftmost one.
//!
//! **Why the rightmost untrusted entry, not the leftmost entry.** Each proxy appends the
//! address of the peer it received the request from, so the list grows to the right and
//! each entry was written by the hop to its right. The leftmost entries are whatever the
//! first sender put there: a client can send `X-Forwarded-For: 10.0.0.1` itself and
//! the proxies faithfully keep it. An entry is only as trustworthy as the hop that wrote
//! it; walking from the right through hops we trust, the first untrusted address is the
//! one a trusted proxy saw on its own TCP connection: the client as far as anyone we
//! trust can tell. Everything left of it was supplied by that untrusted party.
//!
//! **A malformed entry stops the walk** and the answer is the last address believed
//! (the nearest trusted hop: the peer, or the last trusted entry), as nginx does. That
//! is safe because the walk only reaches an entry when everything to its right is
//! trusted, so the malformed entry was written by a trusted hop (or by a client that is
//! itself in the trusted ranges); what lies beyond it cannot be believed, and the hop
//! is truly where the request came from. Skipping it instead would let the next,
//! possibly client-written, entry decide; refusing the request is not this function's
//! call. The same holds when a limit is reached. Entries such as `unknown` (which some
//! proxies write) or obfuscated RFC 7239 identifiers are malformed here.
//!
//! **Entry syntax**, following nginx's `ngx_parse_addr_port`: an IPv4 or IPv6 address
//! (`std::net` syntax: no leading zeros in IPv4, no zone), optionally with a port,
//! `1.2.3.4:5678` or `[2001:db8::1]:80` (some load balancers, Azure Application Gateway
//! among them, append ports); the port, 1 to 65535 in decimal, is discarded.
//! `[2001:db8::1]` without a port is also accepted, where nginx refuses it: it is
//! unambiguous. Entries are separated by commas, spaces or tabs, in any number (empty
//! entries are skipped, as in nginx). Several `X-Forwarded-For` fields are one list,
//! in order (RFC 9110 §5.3).
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as a dual-stack socket reports IPv4
//! peers) are returned as IPv4, for the peer and for entries alike, so that the result
//! compares and logs the same however the client arrived.

use std::net::IpAddr;

use super::cidr::CidrSet;

/// Most `X-Forwarded-For` entries parsed in one walk. Real chains are a few hops (CDN,
/// cloud load balancer, ingress); 32 is far beyond any honest chain, and bounds the work
/// a request full of addresses inside the trusted ranges can cause.
pub const MAX_FORWARDED_FOR_ENTRIES: usize = 32;

/// Most bytes of `X-Forwarded-For` looked at, counted from the end of the last field
/// backwards. The longest entry, `[` + a 45-character IPv6 address + `]:65535`, is 53
/// bytes; 32 of them with separators fit in 2 KiB, so 4 KiB never cuts an honest chain
/// and keeps the walk independent of how large a header the HTTP parser allows.
pub const MAX_FORWARDED_FOR_BYTES: usize = 4096;

/// The address the request is from: see the module documentation.
///
/// `peer` is the TCP peer (or the source a PROXY protocol header reported);
/// `forwarded_for` holds the `X-Forwarded-For` field values in the order received;
/// `trusted` the proxies whose entries are believed.
pub fn client_address(peer: IpAddr, forwarded_for: &[&[u8]], trusted: &CidrSet) -> IpAddr {
    let mut believed = canonical(peer);
    if !trusted.contains(believed) {
        return believed;
    }
    let mut budget = MAX_FORWARDED_FOR_BYTES;
    let mut entries = 0usize;
    for value in forwarded_for.iter().rev() {
        // Only value[floor..] is within the byte budget.
        let floor = value.len() - value.len().min(budget);
        let mut end = value.len();
        loop {
            while end > floor && is_separator(value[end - 1]) {
                end -= 1;
            }
            if end == floor {
                if floor == 0 {
                    break; // this field is done: on to the one before it
                }
                return believed; // the budget ends here
            }
            let mut start = end;
            while start > floor && !is_separator(value[start - 1]) {
                start -= 1;
            }
            if start == floor && floor > 0 {
                return believed; // the entry's beginning is beyond the budget
            }
            entries += 1;
            if entries > MAX_FORWARDED_FOR_ENTRIES {
                return believed;
            }
            let Some(addr) = parse_entry(&value[start..end]) else {
                return believed;
            };
            believed = canonical(addr);
            if !trusted.contains(believed) {
                return believed;
            }
            end = start;
        }
        budget -= value.len();
    }
    believed
}

fn is_separator(b: u8) -> bool {
    matches!(b, b',' | b' ' | b'\t')
}

/// IPv4-mapped IPv6 as IPv4; everything else as is.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

/// One entry: `addr`, `ipv4:port`, `[ipv6]` or `[ipv6]:port`.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    if let Some(bracketed) = text.strip_prefix('[') {
        let (inside, after) = bracketed.split_once(']')?;
        if !after.is_empty() {
            valid_port(after.strip_prefix(':')?)?;
        }
        return inside.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Some(addr);
    }
    // A bare IPv6 address has several colons and parsed above; one colon is IPv4:port.
    let (host, port) = text.split_once(':')?;
    valid_port(port)?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A decimal port from 1 to 65535 (digits only), as nginx accepts in an entry.
fn valid_port(port: &str) -> Option<()> {
    if !matches!(port.len(), 1..=5) || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u32 = port.parse().ok()?;
    (1..=65535).contains(&value).then_some(())
}

#[cfg(test)]
#[path = "client_addr_tests.rs"]
mod tests;
