use super::*;

fn set(list: &str) -> CidrSet {
    CidrSet::parse_list(list).unwrap_or_else(|e| panic!("{list:?}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn shown(list: &str) -> String {
    set(list).to_string()
}

fn invalid(list: &str) -> (usize, String, EntryProblem) {
    match CidrSet::parse_list(list) {
        Err(CidrError::InvalidEntry {
            position,
            entry,
            problem,
        }) => (position, entry, problem),
        other => panic!("{list:?}: {other:?}"),
    }
}

#[test]
fn networks_and_bare_addresses() {
    assert_eq!(
        shown("10.0.0.0/8,192.168.1.7,2001:db8::/32,::1"),
        "10.0.0.0/8, 192.168.1.7/32, 2001:db8::/32, ::1/128"
    );
    assert_eq!(set("10.0.0.0/8").len(), 1);
}

#[test]
fn whitespace_around_entries_and_empty_entries_are_tolerated() {
    assert_eq!(
        shown(" 10.0.0.0/8 ,\t192.168.0.0/16\n,\r\n ::/0 "),
        "10.0.0.0/8, 192.168.0.0/16, ::/0"
    );
    assert_eq!(shown(",10.0.0.0/8,,, 1.2.3.4 ,"), "10.0.0.0/8, 1.2.3.4/32");
    for blank in ["", " ", ",", " , ,, ", "\n"] {
        let s = set(blank);
        assert!(s.is_empty(), "{blank:?}");
        assert_eq!(s.len(), 0);
        assert_eq!(s.to_string(), "");
        assert!(!s.contains(ip("1.2.3.4")));
        assert!(!s.contains(ip("::")));
    }
    assert!(CidrSet::default().is_empty());
    assert!(!set("1.2.3.4").is_empty());
}

#[test]
fn host_bits_are_cleared() {
    assert_eq!(shown("10.0.0.1/8"), "10.0.0.0/8");
    assert_eq!(shown("192.168.1.255/23"), "192.168.0.0/23");
    assert_eq!(shown("255.255.255.255/0"), "0.0.0.0/0");
    assert_eq!(shown("2001:db8::1/32"), "2001:db8::/32");
    assert_eq!(shown("ffff::1/1"), "8000::/1");
    let s = set("10.0.0.1/8");
    assert!(s.contains(ip("10.255.255.255")));
    assert!(s.contains(ip("10.0.0.0")));
    assert!(!s.contains(ip("11.0.0.0")));
    assert!(!s.contains(ip("9.255.255.255")));
}

#[test]
fn duplicates_after_normalisation_are_kept_once() {
    assert_eq!(
        shown("10.0.0.0/8, 10.1.2.3/8, 10.0.0.0/8, 1.2.3.4, 1.2.3.4/32, ::ffff:1.2.3.4"),
        "10.0.0.0/8, 1.2.3.4/32"
    );
    // Overlapping but different networks are both kept.
    assert_eq!(shown("10.0.0.0/8, 10.0.0.0/16"), "10.0.0.0/8, 10.0.0.0/16");
}

#[test]
fn membership_at_network_edges() {
    let s = set("192.168.0.0/23, 2001:db8:ab00::/40, 203.0.113.9");
    for (addr, inside) in [
        ("192.167.255.255", false),
        ("192.168.0.0", true),
        ("192.168.1.255", true),
        ("192.168.2.0", false),
        ("203.0.113.9", true),
        ("203.0.113.8", false),
        ("203.0.113.10", false),
        ("2001:db8:aaff:ffff:ffff:ffff:ffff:ffff", false),
        ("2001:db8:ab00::", true),
        ("2001:db8:abff:ffff:ffff:ffff:ffff:ffff", true),
        ("2001:db8:ac00::", false),
        // The IPv4 addresses inside IPv6 forms other than the mapped one are not them.
        ("::192.168.0.1", false),
        ("64:ff9b::192.168.0.1", false),
    ] {
        assert_eq!(s.contains(ip(addr)), inside, "{addr}");
    }
}

#[test]
fn prefix_lengths_zero_and_full() {
    let all4 = set("0.0.0.0/0");
    assert!(all4.contains(ip("0.0.0.0")));
    assert!(all4.contains(ip("255.255.255.255")));
    assert!(
        !all4.contains(ip("::1")),
        "an IPv4 network never holds a plain IPv6 address"
    );
    let all6 = set("::/0");
    assert!(all6.contains(ip("::")));
    assert!(all6.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
    assert!(!all6.contains(ip("1.2.3.4")));
    assert!(
        !all6.contains(ip("::ffff:1.2.3.4")),
        "mapped clients are checked against IPv4 networks only"
    );
    let one = set("1.2.3.4/32, ::2/128");
    assert!(one.contains(ip("1.2.3.4")));
    assert!(!one.contains(ip("1.2.3.5")));
    assert!(one.contains(ip("::2")));
    assert!(!one.contains(ip("::3")));
}

#[test]
fn ipv4_mapped_clients_match_ipv4_networks() {
    let s = set("10.0.0.0/8");
    assert!(s.contains(ip("::ffff:10.1.2.3")));
    assert!(s.contains(ip("::ffff:a01:203")));
    assert!(!s.contains(ip("::ffff:11.1.2.3")));
    // Not mapped: IPv4-compatible (deprecated) and NAT64 forms.
    assert!(!s.contains(ip("::10.1.2.3")));
    assert!(!s.contains(ip("64:ff9b::10.1.2.3")));
}

#[test]
fn mapped_networks_are_stored_as_ipv4() {
    assert_eq!(shown("::ffff:10.0.0.0/104"), "10.0.0.0/8");
    assert_eq!(shown("::ffff:10.1.2.3"), "10.1.2.3/32");
    assert_eq!(shown("::ffff:0:0/96"), "0.0.0.0/0");
    assert_eq!(shown("::ffff:10.1.2.3/128"), "10.1.2.3/32");
    // Wider than ::ffff:0:0/96: stays IPv6, and so does not match IPv4 clients.
    assert_eq!(shown("::ffff:0:0/95"), "::fffe:0:0/95");
    let s = set("::ffff:10.0.0.0/104");
    assert!(s.contains(ip("10.9.9.9")));
    assert!(s.contains(ip("::ffff:10.9.9.9")));
    assert!(!s.contains(ip("11.0.0.0")));
    assert!(!set("::ffff:0:0/95").contains(ip("1.2.3.4")));
}

#[test]
fn display_parses_back_to_an_equal_set() {
    for list in [
        "10.0.0.0/8,192.168.1.7,2001:db8::/32,::1",
        "0.0.0.0/0, ::/0",
        "",
        "::ffff:10.0.0.0/104, fe80::/10",
    ] {
        let s = set(list);
        assert_eq!(set(&s.to_string()), s, "{list:?}");
        assert_eq!(s.to_string().parse::<CidrSet>().unwrap(), s);
    }
}

#[test]
fn networks_are_listed_in_first_written_order() {
    let s = set("2001:db8::/32, 10.0.0.0/8, 1.2.3.4");
    let nets: Vec<String> = s.networks().iter().map(ToString::to_string).collect();
    assert_eq!(nets, ["2001:db8::/32", "10.0.0.0/8", "1.2.3.4/32"]);
}

#[test]
fn bad_entries_name_position_and_entry() {
    assert_eq!(
        invalid("10.0.0.0/8, nope, also bad"),
        (2, "nope".to_owned(), EntryProblem::NotAnAddress)
    );
    // Empty pieces count toward the position; the first problem is the one reported.
    assert_eq!(
        invalid(",,1.2.3.4/33,x"),
        (
            3,
            "1.2.3.4/33".to_owned(),
            EntryProblem::PrefixLengthTooLarge { len: 33, max: 32 }
        )
    );
    assert_eq!(
        invalid("::/129"),
        (
            1,
            "::/129".to_owned(),
            EntryProblem::PrefixLengthTooLarge { len: 129, max: 128 }
        )
    );
    assert_eq!(
        invalid("1.2.3.4/999"),
        (
            1,
            "1.2.3.4/999".to_owned(),
            EntryProblem::PrefixLengthTooLarge { len: 999, max: 32 }
        )
    );
    let e = CidrSet::parse_list("10.0.0.0/8, nope").unwrap_err();
    assert_eq!(
        e.to_string(),
        "entry 2 (`nope`) of the address list is not an IP address or CIDR network: \
         the part before '/' is not an IPv4 or IPv6 address"
    );
}

#[test]
fn malformed_entries() {
    use EntryProblem::*;
    for (entry, problem) in [
        ("10.0.0.0/", BadPrefixLength),
        ("10.0.0.0/+8", BadPrefixLength),
        ("10.0.0.0/-1", BadPrefixLength),
        ("10.0.0.0/8/8", BadPrefixLength),
        ("10.0.0.0/0008", BadPrefixLength),
        ("10.0.0.0/8a", BadPrefixLength),
        ("10.0.0.0/８", BadPrefixLength),
        ("/8", NotAnAddress),
        ("10.0.0/8", NotAnAddress),
        ("10.0.0.0.0", NotAnAddress),
        ("010.0.0.1", NotAnAddress),
        ("10.0.0.256", NotAnAddress),
        ("1.2.3.4:80", NotAnAddress),
        ("[::1]", NotAnAddress),
        ("fe80::1%eth0", NotAnAddress),
        ("fe80::1%eth0/64", NotAnAddress),
        ("1::2::3", NotAnAddress),
        ("example.com", NotAnAddress),
        ("10.0.0.0/8 192.168.0.0/16", ContainsWhitespace),
        ("10.0.0.0 /8", ContainsWhitespace),
        ("10.0.0.0/\t8", ContainsWhitespace),
        ("1.2.3.4\u{a0}5.6.7.8", ContainsWhitespace),
    ] {
        let (position, echoed, got) = invalid(entry);
        assert_eq!((position, got), (1, problem), "{entry:?}");
        assert_eq!(echoed, entry.trim(), "{entry:?}");
    }
    // Leading zeros within 3 digits are still a decimal number.
    assert_eq!(shown("10.0.0.0/08, 10.0.0.0/008"), "10.0.0.0/8");
}

#[test]
fn long_bad_entries_are_echoed_cut() {
    let entry = "x".repeat(1000);
    let (_, echoed, _) = invalid(&entry);
    assert_eq!(echoed, format!("{}…", "x".repeat(MAX_ECHOED_ENTRY_CHARS)));
    // Exactly at the limit: not cut.
    let entry = "é".repeat(MAX_ECHOED_ENTRY_CHARS);
    assert_eq!(invalid(&entry).1, entry);
    let longer = "é".repeat(MAX_ECHOED_ENTRY_CHARS + 1);
    assert_eq!(invalid(&longer).1, format!("{entry}…"));
}

#[test]
fn entry_limit() {
    let at_limit: Vec<String> = (0..MAX_CIDR_ENTRIES)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let s = set(&at_limit.join(","));
    assert_eq!(s.len(), MAX_CIDR_ENTRIES);
    assert!(s.contains(ip("10.3.255.1")));
    assert!(!s.contains(ip("10.4.0.1")));
    // Empty pieces do not count.
    assert_eq!(set(&format!(",,{},,", at_limit.join(",,"))).len(), MAX_CIDR_ENTRIES);
    // Duplicates count: the limit bounds the work, not the result.
    let over = format!("{},10.0.0.0/24", at_limit.join(","));
    assert_eq!(CidrSet::parse_list(&over), Err(CidrError::TooManyEntries));
    // The limit is found before a later bad entry.
    let over = format!("{},10.0.0.0/24,bad", at_limit.join(","));
    assert_eq!(CidrSet::parse_list(&over), Err(CidrError::TooManyEntries));
}

#[test]
fn byte_limit() {
    let spaces = " ".repeat(MAX_CIDR_LIST_BYTES - "1.2.3.4".len());
    let at_limit = format!("{spaces}1.2.3.4");
    assert_eq!(at_limit.len(), MAX_CIDR_LIST_BYTES);
    assert_eq!(set(&at_limit).to_string(), "1.2.3.4/32");
    let over = format!(" {at_limit}");
    assert_eq!(
        CidrSet::parse_list(&over),
        Err(CidrError::ListTooLong {
            len: MAX_CIDR_LIST_BYTES + 1
        })
    );
    assert_eq!(
        CidrSet::parse_list(&over).unwrap_err().to_string(),
        format!(
            "the address list is {} bytes long; at most {MAX_CIDR_LIST_BYTES} are accepted",
            MAX_CIDR_LIST_BYTES + 1
        )
    );
}

#[test]
fn equal_lists_make_equal_sets() {
    assert_eq!(set("10.0.0.1/8, ::1"), set(" 10.0.0.0/8,,::1/128 "));
    assert_ne!(
        set("10.0.0.0/8, ::1"),
        set("::1, 10.0.0.0/8"),
        "order is kept for display"
    );
}
