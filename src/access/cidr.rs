//! A set of IPv4/IPv6 networks, parsed from the lists ingress-nginx users write in
//! `whitelist-source-range` / `allowlist-source-range` / `denylist-source-range` /
//! `limit-whitelist` and from the `--trusted-proxies` flag, and asked one question:
//! is this client address in it?
//!
//! The accepted syntax is a comma-separated list of CIDR networks (`10.0.0.0/8`,
//! `2001:db8::/32`) or bare addresses (`192.168.1.7`, which means `/32`; `::1`, which
//! means `/128`), with these choices:
//!
//! - **Whitespace** around an entry is ignored (`"10.0.0.0/8, 192.168.0.0/16"`, and YAML
//!   folded values with newlines). Whitespace *inside* an entry is an error, with a
//!   message that says entries are separated by commas: `"10.0.0.0/8 192.168.0.0/16"`
//!   is a common slip and silently reading only half of it would be worse.
//! - **Empty entries** (`"a,,b"`, a trailing comma, a blank list) are skipped.
//!   ingress-nginx rejects them; nothing is gained by refusing a whole allowlist over
//!   a stray comma, and the meaning is unambiguous. A list with no entries parses to
//!   the empty set; what an empty set *means* (allow nobody? no restriction?) is the
//!   caller's decision, which is why [`CidrSet::is_empty`] exists.
//! - **Host bits set** (`10.0.0.1/8`) are accepted and cleared (`10.0.0.0/8`), as nginx
//!   (with a "low address bits are meaningless" warning) and ingress-nginx (Go's
//!   `net.ParseCIDR`) both do: refusing it would break configurations that work today.
//! - **Addresses** follow Rust's `std::net` grammar, which is strict: IPv4 must be four
//!   decimal octets without leading zeros (`010.0.0.1` is refused, since some parsers
//!   read it as octal), IPv6 may not carry a zone (`%eth0`). The prefix length is 1 to 3
//!   decimal digits, at most 32 (IPv4) or 128 (IPv6).
//! - **IPv4-mapped IPv6** (`::ffff:a.b.c.d`): a dual-stack socket reports IPv4 clients
//!   that way, so [`CidrSet::contains`] looks such an address up as the IPv4 address it
//!   carries, and a network written inside `::ffff:0:0/96` (prefix length 96 or more) is
//!   stored as the IPv4 network it covers (`::ffff:10.0.0.0/104` is `10.0.0.0/8`). Wider
//!   IPv6 networks such as `::/0` do *not* match IPv4 clients, as in nginx, which checks
//!   a mapped client only against its IPv4 rules: write `0.0.0.0/0, ::/0` for "everyone".
//! - **Duplicates** (after normalisation) are kept once.
//! - **Errors** report the *first* bad entry only, with its 1-based position among the
//!   comma-separated pieces (empty pieces count, so the position matches what the user
//!   counts) and the entry itself (trimmed, and cut to [`MAX_ECHOED_ENTRY_CHARS`]).
//!   The first is enough to fix the list and keeps the error small and bounded.
//!
//! Membership is a linear scan over precomputed `(network, mask)` integer pairs, one
//! list per family. For the lists people write (a handful to a few dozen entries) that
//! is a few nanoseconds; at [`MAX_CIDR_ENTRIES`] it is about a microsecond, cheaper than
//! anything else done per request, so no trie or sorted structure is warranted.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Most entries one list may hold. Real allowlists are tens of entries (the longest
/// common ones, cloud provider ranges, are a few hundred); 1024 leaves room for those
/// while keeping the linear membership scan around a microsecond in the worst case.
pub const MAX_CIDR_ENTRIES: usize = 1024;

/// Longest list accepted, in bytes. A maximal IPv6 CIDR is 43 bytes, so 1024 entries
/// with generous separators fit in 64 KiB; anything longer is not a list of networks
/// and is refused before any parsing work is spent on it.
pub const MAX_CIDR_LIST_BYTES: usize = 64 * 1024;

/// At most this many characters of a bad entry are quoted in an error, so that one
/// hostile "entry" cannot make a huge error message (status conditions, logs).
pub const MAX_ECHOED_ENTRY_CHARS: usize = 64;

/// Why a list could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The list is longer than [`MAX_CIDR_LIST_BYTES`].
    #[error("the address list is {len} bytes long; at most {MAX_CIDR_LIST_BYTES} are accepted")]
    ListTooLong { len: usize },
    /// The list has more than [`MAX_CIDR_ENTRIES`] non-empty entries.
    #[error("the address list has more than {MAX_CIDR_ENTRIES} entries")]
    TooManyEntries,
    /// One entry is not an address or network; the first such entry is reported.
    #[error("entry {position} (`{entry}`) of the address list is not an IP address or CIDR network: {problem}")]
    InvalidEntry {
        /// 1-based position among the comma-separated pieces, empty pieces included.
        position: usize,
        /// The entry, trimmed and cut to [`MAX_ECHOED_ENTRY_CHARS`] characters (then ending in `…`).
        entry: String,
        problem: EntryProblem,
    },
}

/// What is wrong with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    #[error("it contains whitespace (entries are separated by commas)")]
    ContainsWhitespace,
    #[error("the part before '/' is not an IPv4 or IPv6 address")]
    NotAnAddress,
    #[error("the prefix length after '/' is not a decimal number of 1 to 3 digits")]
    BadPrefixLength,
    #[error("the prefix length {len} exceeds {max}, the address size in bits")]
    PrefixLengthTooLarge { len: u16, max: u8 },
}

/// A set of IPv4 and IPv6 networks with fast membership for small sets.
///
/// Built by [`CidrSet::parse_list`] (or `str::parse`, for clap); [`Default`] is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrSet {
    /// Normalised networks (host bits cleared, mapped IPv6 as IPv4), deduplicated, in
    /// the order first written: what [`fmt::Display`] shows.
    networks: Vec<IpNet>,
    /// `(network, mask)` for each IPv4 network: `addr & mask == network` is membership.
    v4: Vec<(u32, u32)>,
    /// `(network, mask)` for each IPv6 network.
    v6: Vec<(u128, u128)>,
}

impl CidrSet {
    /// Parses a comma-separated list of networks and addresses; see the module
    /// documentation for the grammar. Stops at the first bad entry.
    pub fn parse_list(list: &str) -> Result<CidrSet, CidrError> {
        if list.len() > MAX_CIDR_LIST_BYTES {
            return Err(CidrError::ListTooLong { len: list.len() });
        }
        let mut set = CidrSet::default();
        let mut seen = HashSet::new();
        let mut entries = 0usize;
        for (index, piece) in list.split(',').enumerate() {
            let entry = piece.trim();
            if entry.is_empty() {
                continue;
            }
            entries += 1;
            if entries > MAX_CIDR_ENTRIES {
                return Err(CidrError::TooManyEntries);
            }
            let net = parse_entry(entry).map_err(|problem| CidrError::InvalidEntry {
                position: index + 1,
                entry: echo(entry),
                problem,
            })?;
            if seen.insert(net) {
                set.push(net);
            }
        }
        Ok(set)
    }

    fn push(&mut self, net: IpNet) {
        match net {
            IpNet::V4(n) => self.v4.push((n.network().to_bits(), n.netmask().to_bits())),
            IpNet::V6(n) => self.v6.push((n.network().to_bits(), n.netmask().to_bits())),
        }
        self.networks.push(net);
    }

    /// Whether `addr` is in one of the networks. An IPv4-mapped IPv6 address
    /// (`::ffff:a.b.c.d`) is looked up as the IPv4 address it carries.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(v4) => self.contains_v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.contains_v4(v4),
                None => {
                    let bits = v6.to_bits();
                    self.v6.iter().any(|&(net, mask)| bits & mask == net)
                }
            },
        }
    }

    fn contains_v4(&self, addr: Ipv4Addr) -> bool {
        let bits = addr.to_bits();
        self.v4.iter().any(|&(net, mask)| bits & mask == net)
    }

    /// Whether the set holds no network at all (contains no address).
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// How many distinct networks the set holds.
    pub fn len(&self) -> usize {
        self.networks.len()
    }

    /// The networks, normalised and deduplicated, in the order first written.
    pub fn networks(&self) -> &[IpNet] {
        &self.networks
    }
}

impl FromStr for CidrSet {
    type Err = CidrError;

    /// Same as [`CidrSet::parse_list`]; lets clap parse `--trusted-proxies` directly.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        CidrSet::parse_list(list)
    }
}

/// Lists the networks as `10.0.0.0/8, 2001:db8::/32` (always with a prefix length,
/// `/32` or `/128` for single addresses); the output parses back to an equal set.
/// The empty set displays as the empty string.
impl fmt::Display for CidrSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.networks.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

/// Parses one trimmed, non-empty entry into a normalised network.
fn parse_entry(entry: &str) -> Result<IpNet, EntryProblem> {
    if entry.chars().any(char::is_whitespace) {
        return Err(EntryProblem::ContainsWhitespace);
    }
    let (addr, prefix) = match entry.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (entry, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| EntryProblem::NotAnAddress)?;
    let max = match addr {
        IpAddr::V4(_) => 32u8,
        IpAddr::V6(_) => 128u8,
    };
    let prefix = match prefix {
        None => max,
        Some(p) => {
            // Digits only: `u16::from_str` alone would also take a leading `+`.
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(EntryProblem::BadPrefixLength);
            }
            let len: u16 = p.parse().map_err(|_| EntryProblem::BadPrefixLength)?;
            if len > u16::from(max) {
                return Err(EntryProblem::PrefixLengthTooLarge { len, max });
            }
            len as u8
        }
    };
    Ok(match addr {
        IpAddr::V4(a) => IpNet::V4(v4_net(a, prefix)),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            // Inside ::ffff:0:0/96: the IPv4 network it denotes.
            Some(v4) if prefix >= 96 => IpNet::V4(v4_net(v4, prefix - 96)),
            _ => IpNet::V6(v6_net(a, prefix)),
        },
    })
}

fn v4_net(addr: Ipv4Addr, prefix: u8) -> Ipv4Net {
    Ipv4Net::new(addr, prefix)
        .expect("prefix length checked against 32")
        .trunc()
}

fn v6_net(addr: Ipv6Addr, prefix: u8) -> Ipv6Net {
    Ipv6Net::new(addr, prefix)
        .expect("prefix length checked against 128")
        .trunc()
}

/// The entry as quoted in an error: at most [`MAX_ECHOED_ENTRY_CHARS`] characters.
fn echo(entry: &str) -> String {
    match entry.char_indices().nth(MAX_ECHOED_ENTRY_CHARS) {
        None => entry.to_owned(),
        Some((cut, _)) => format!("{}…", &entry[..cut]),
    }
}

#[cfg(test)]
#[path = "cidr_tests.rs"]
mod tests;
