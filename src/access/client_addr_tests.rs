use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn trusted(list: &str) -> CidrSet {
    CidrSet::parse_list(list).unwrap()
}

/// The client address for `peer` and these field values, trusting `list`.
fn client(peer: &str, fields: &[&str], list: &str) -> IpAddr {
    let fields: Vec<&[u8]> = fields.iter().map(|f| f.as_bytes()).collect();
    client_address(ip(peer), &fields, &trusted(list))
}

const PROXIES: &str = "10.0.0.0/8, fd00::/8";

#[test]
fn untrusted_peer_is_the_client_whatever_it_claims() {
    assert_eq!(client("203.0.113.7", &["10.0.0.1"], PROXIES), ip("203.0.113.7"));
    assert_eq!(
        client("203.0.113.7", &["198.51.100.1, 10.0.0.1"], PROXIES),
        ip("203.0.113.7")
    );
    assert_eq!(client("203.0.113.7", &[], PROXIES), ip("203.0.113.7"));
    assert_eq!(client("2001:db8::7", &["198.51.100.1"], PROXIES), ip("2001:db8::7"));
    // Nothing is trusted: X-Forwarded-For never matters.
    assert_eq!(client("10.0.0.1", &["198.51.100.1"], ""), ip("10.0.0.1"));
}

#[test]
fn trusted_peer_without_forwarded_for_is_the_client() {
    assert_eq!(client("10.0.0.1", &[], PROXIES), ip("10.0.0.1"));
    assert_eq!(client("10.0.0.1", &[""], PROXIES), ip("10.0.0.1"));
    assert_eq!(client("10.0.0.1", &[" , ,", ""], PROXIES), ip("10.0.0.1"));
}

#[test]
fn rightmost_untrusted_entry_wins() {
    // The client forged "10.9.9.9, 1.1.1.1"; the load balancer appended the real peer.
    assert_eq!(
        client("10.0.0.2", &["10.9.9.9, 1.1.1.1, 198.51.100.4"], PROXIES),
        ip("198.51.100.4")
    );
    // Trusted hops on the right are skipped.
    assert_eq!(
        client("10.0.0.2", &["1.1.1.1, 198.51.100.4, 10.0.0.3, 10.0.0.4"], PROXIES),
        ip("198.51.100.4")
    );
    assert_eq!(client("fd00::2", &["2001:db8::9, fd00::1"], PROXIES), ip("2001:db8::9"));
}

#[test]
fn all_trusted_gives_the_leftmost() {
    assert_eq!(
        client("10.0.0.2", &["10.0.0.5, 10.0.0.4, 10.0.0.3"], PROXIES),
        ip("10.0.0.5")
    );
    assert_eq!(client("10.0.0.2", &["10.0.0.5"], PROXIES), ip("10.0.0.5"));
    assert_eq!(client("10.0.0.2", &["10.0.0.5", "fd00::1"], PROXIES), ip("10.0.0.5"));
}

#[test]
fn several_fields_are_one_list_in_order() {
    assert_eq!(client("10.0.0.2", &["1.1.1.1", "2.2.2.2"], PROXIES), ip("2.2.2.2"));
    assert_eq!(client("10.0.0.2", &["1.1.1.1", "10.0.0.9"], PROXIES), ip("1.1.1.1"));
    assert_eq!(
        client("10.0.0.2", &["1.1.1.1, 3.3.3.3", "10.0.0.8", "", "10.0.0.9"], PROXIES),
        ip("3.3.3.3")
    );
}

#[test]
fn separators() {
    for list in [
        "1.1.1.1,10.0.0.9",
        "1.1.1.1 10.0.0.9",
        "1.1.1.1\t10.0.0.9",
        " ,1.1.1.1 ,, \t10.0.0.9, ,",
        "\t1.1.1.1,\t,10.0.0.9\t",
    ] {
        assert_eq!(client("10.0.0.2", &[list], PROXIES), ip("1.1.1.1"), "{list:?}");
    }
}

#[test]
fn malformed_entry_stops_at_the_last_believed_address() {
    // Right after the peer: the peer.
    assert_eq!(client("10.0.0.2", &["1.1.1.1, unknown"], PROXIES), ip("10.0.0.2"));
    // Behind a trusted entry: that entry.
    assert_eq!(
        client("10.0.0.2", &["1.1.1.1, garbage, 10.0.0.7"], PROXIES),
        ip("10.0.0.7")
    );
    // Across fields.
    assert_eq!(
        client("10.0.0.2", &["1.1.1.1", "bad", "10.0.0.7"], PROXIES),
        ip("10.0.0.7")
    );
    // Malformed entries left of the first untrusted one are never looked at.
    assert_eq!(client("10.0.0.2", &["garbage, 1.1.1.1"], PROXIES), ip("1.1.1.1"));
    for bad in [
        "unknown",
        "_hidden",
        "1.2.3",
        "1.2.3.4.5",
        "01.2.3.4",
        "1.2.3.256",
        "1.2.3.4:",
        "1.2.3.4:0",
        "1.2.3.4:65536",
        "1.2.3.4:+80",
        "1.2.3.4:80:80",
        "1.2.3.4:123456",
        "::1:80x",
        "[::1",
        "[::1]80",
        "[::1]:",
        "[::1]:0",
        "[1.2.3.4]:80",
        "[[::1]]",
        "fe80::1%eth0",
        "\"1.2.3.4\"",
        "for=1.2.3.4",
        "1.2.3.4;proto=https",
        "\u{e9}",
    ] {
        assert_eq!(
            client("10.0.0.2", &[&format!("1.1.1.1, {bad}")], PROXIES),
            ip("10.0.0.2"),
            "{bad:?}"
        );
    }
    // Invalid UTF-8.
    let fields: [&[u8]; 1] = [b"1.1.1.1, \xff"];
    assert_eq!(
        client_address(ip("10.0.0.2"), &fields, &trusted(PROXIES)),
        ip("10.0.0.2")
    );
}

#[test]
fn entries_with_ports() {
    for (entry, expected) in [
        ("198.51.100.4:5678", "198.51.100.4"),
        ("198.51.100.4:1", "198.51.100.4"),
        ("198.51.100.4:65535", "198.51.100.4"),
        ("198.51.100.4:00080", "198.51.100.4"),
        ("[2001:db8::1]:80", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::1", "::1"),
        ("[::ffff:198.51.100.4]:443", "198.51.100.4"),
    ] {
        assert_eq!(client("10.0.0.2", &[entry], PROXIES), ip(expected), "{entry:?}");
    }
    // A trusted hop with a port is skipped like any other.
    assert_eq!(client("10.0.0.2", &["1.1.1.1:1, 10.0.0.3:2"], PROXIES), ip("1.1.1.1"));
}

#[test]
fn ipv4_mapped_addresses_are_normalised() {
    // The peer, untrusted and trusted.
    assert_eq!(client("::ffff:203.0.113.7", &["10.0.0.1"], PROXIES), ip("203.0.113.7"));
    assert_eq!(client("::ffff:10.0.0.2", &[], PROXIES), ip("10.0.0.2"));
    assert_eq!(
        client("::ffff:10.0.0.2", &["198.51.100.4"], PROXIES),
        ip("198.51.100.4")
    );
    // Entries: the result, and trust decisions on them.
    assert_eq!(
        client("10.0.0.2", &["::ffff:198.51.100.4"], PROXIES),
        ip("198.51.100.4")
    );
    assert_eq!(
        client("10.0.0.2", &["1.1.1.1, ::ffff:10.0.0.3"], PROXIES),
        ip("1.1.1.1")
    );
    assert_eq!(client("10.0.0.2", &["::ffff:10.0.0.3"], PROXIES), ip("10.0.0.3"));
    // Not mapped: left alone.
    assert_eq!(client("10.0.0.2", &["::198.51.100.4"], PROXIES), ip("::198.51.100.4"));
}

#[test]
fn entry_limit() {
    let hops = |n: usize| -> String {
        (0..n)
            .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // The client plus MAX-1 trusted hops: MAX entries walked, the client found.
    let within = format!("198.51.100.4, {}", hops(MAX_FORWARDED_FOR_ENTRIES - 1));
    assert_eq!(client("10.0.0.2", &[&within], PROXIES), ip("198.51.100.4"));
    // One more trusted hop: the walk stops at the last one believed, the MAXth entry.
    let beyond = format!("198.51.100.4, {}", hops(MAX_FORWARDED_FOR_ENTRIES));
    assert_eq!(client("10.0.0.2", &[&beyond], PROXIES), ip("10.0.0.0"));
    // All trusted, exactly MAX: the leftmost.
    assert_eq!(
        client("10.0.0.2", &[&hops(MAX_FORWARDED_FOR_ENTRIES)], PROXIES),
        ip("10.0.0.0")
    );
    // The limit counts across fields, not empty entries.
    let fields: Vec<String> = (0..MAX_FORWARDED_FOR_ENTRIES - 1)
        .map(|i| format!(" ,10.0.1.{i},,"))
        .collect();
    let mut all: Vec<&str> = vec!["198.51.100.4"];
    all.extend(fields.iter().map(String::as_str));
    assert_eq!(client("10.0.0.2", &all, PROXIES), ip("198.51.100.4"));
    all.insert(1, "10.0.2.1");
    assert_eq!(client("10.0.0.2", &all, PROXIES), ip("10.0.2.1"));
}

#[test]
fn byte_limit() {
    // The client's entry ends exactly at the limit, counted from the end.
    let entry = "198.51.100.4";
    let pad = MAX_FORWARDED_FOR_BYTES - entry.len() - ", 10.0.0.3".len();
    let within = format!("{entry}{}, 10.0.0.3", " ".repeat(pad));
    assert_eq!(within.len(), MAX_FORWARDED_FOR_BYTES);
    assert_eq!(client("10.0.0.2", &[&within], PROXIES), ip("198.51.100.4"));
    // With anything before it, the entry's beginning is beyond the limit.
    let beyond = format!("1{within}");
    assert_eq!(client("10.0.0.2", &[&beyond], PROXIES), ip("10.0.0.3"));
    let beyond = format!(",{within}");
    assert_eq!(client("10.0.0.2", &[&beyond], PROXIES), ip("10.0.0.3"));
    // Separators alone up to the limit: the walk stops where the budget does.
    let spaces = format!("198.51.100.4{}10.0.0.3", " ".repeat(MAX_FORWARDED_FOR_BYTES));
    assert_eq!(client("10.0.0.2", &[&spaces], PROXIES), ip("10.0.0.3"));
    // Across fields: the budget is shared, counted from the last field backwards.
    let last = format!("{}10.0.0.3", " ".repeat(MAX_FORWARDED_FOR_BYTES - 8 - entry.len()));
    assert_eq!(last.len() + entry.len(), MAX_FORWARDED_FOR_BYTES);
    assert_eq!(client("10.0.0.2", &[entry, &last], PROXIES), ip("198.51.100.4"));
    assert_eq!(
        client("10.0.0.2", &["1.1.1.1", "", entry, &last], PROXIES),
        ip("198.51.100.4")
    );
    let longer = format!("x{entry}");
    assert_eq!(client("10.0.0.2", &[&longer, &last], PROXIES), ip("10.0.0.3"));
    // Budget used up exactly by trusted entries, then another non-empty field: stop at
    // the last believed; an empty one changes nothing.
    let full = format!("10.0.0.5{}10.0.0.3", " ".repeat(MAX_FORWARDED_FOR_BYTES - 16));
    assert_eq!(full.len(), MAX_FORWARDED_FOR_BYTES);
    assert_eq!(client("10.0.0.2", &["1.1.1.1", &full], PROXIES), ip("10.0.0.5"));
    assert_eq!(client("10.0.0.2", &["", &full], PROXIES), ip("10.0.0.5"));
    // Entries never span fields (fields join with commas): a lone `3` is malformed.
    assert_eq!(
        client("10.0.0.2", &[&full[..full.len() - 1], "3"], PROXIES),
        ip("10.0.0.2")
    );
    // A huge field is not scanned past the budget (would be slow if it were).
    let huge = format!("1.1.1.1{}", " ".repeat(1 << 24));
    assert_eq!(client("10.0.0.2", &[&huge], PROXIES), ip("10.0.0.2"));
}

#[test]
fn dual_stack_trust() {
    // IPv4 peer trusted through an IPv4-mapped network in the list.
    let list = "::ffff:10.0.0.0/104";
    assert_eq!(client("10.0.0.2", &["198.51.100.4"], list), ip("198.51.100.4"));
    assert_eq!(client("::ffff:10.0.0.2", &["198.51.100.4"], list), ip("198.51.100.4"));
}
