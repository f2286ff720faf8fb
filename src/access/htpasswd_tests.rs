//! Tests for `htpasswd.rs`.
//!
//! The hashes in `testdata/kinds.htpasswd` and `testdata/refused.htpasswd` were made with the real
//! tools (htpasswd from apache2-utils 2.4, mkpasswd from whois/libxcrypt, OpenSSL 3.0, Python
//! bcrypt 5 and passlib 1.7) by `testdata/generate-htpasswd-fixtures.sh`. Every user of
//! kinds.htpasswd and the line-handling cases below were also checked against nginx 1.22's
//! `auth_basic_user_file` with curl on loopback: every right password below got 200 and every
//! wrong one 401; nginx kept the first of two `dup` lines, accepted CRLF, ignored a third field,
//! read `{PLAIN}pa:ss` as the password `pa`, took ` lead` (leading space) as a different user from
//! `lead`, never matched a hash with a trailing space, read `  #x` as a user (a comment needs `#` in
//! column 0), answered `Basic realm=""` for `auth_basic ""`, accepted `basic`/`BASIC`, several spaces
//! and unpadded base64, and refused a tab after the scheme and trailing junk after the token.

use std::collections::BTreeMap;

use super::*;

const KINDS: &[u8] = include_bytes!("testdata/kinds.htpasswd");
const REFUSED: &str = include_str!("testdata/refused.htpasswd");

/// The 80-byte password of `bcrypt-long`.
const LONG: &str = "0123456789012345678901234567890123456789012345678901234567890123456789ABCDEFGHIJKL";

/// Every user of kinds.htpasswd with its password and a wrong one.
const KIND_CASES: &[(&str, &str, &str)] = &[
    ("bcrypt-y", "bcrypt y secret", "bcrypt y secreT"),
    ("bcrypt-a", "bcrypt a secret", "bcrypt a secre"),
    ("bcrypt-b", "bcrypt b secret", "bcrypt b secret "),
    ("bcrypt-long", LONG, "0123456789"),
    ("apr1-htpasswd", "apr1 secret", "apr1 secreu"),
    ("apr1-openssl", "apr1 openssl: with colon", "apr1 openssl"),
    ("apr1-empty", "", " "),
    ("md5-openssl", "md5 crypt secret", "MD5 crypt secret"),
    ("md5-mkpasswd", "pässwörd", "passwörd"),
    ("sha1-htpasswd", "sha1 secret", "sha1 secret\n"),
    ("ssha-passlib", "ssha secret", "ssha secreT"),
    ("sha256-openssl", "sha256 secret", "sha256 secre"),
    ("sha256-rounds", "sha256 rounds secret", "sha256 secret"),
    ("sha256-htpasswd", "sha256 htpasswd secret", "sha256 htpasswd secret!"),
    ("sha512-openssl", "sha512 secret", "sha512 secrett"),
    ("sha512-htpasswd", "sha512 htpasswd secret", ""),
    ("sha512-python", "sha512 python secret", "sha512 python"),
    ("des-htpasswd", "despass", "despasS"),
    ("des-mkpasswd", "des8char-and-more", "des8cha"),
    ("plain", "plain secret", "plain secret "),
];

fn kinds() -> Credentials {
    Credentials::parse_auth_file(KINDS).expect("kinds.htpasswd parses")
}

fn file(text: &str) -> Credentials {
    Credentials::parse_auth_file(text.as_bytes()).expect("test file parses")
}

/// The problem of a one-entry file that must fail on its line `line`.
fn problem_at(content: &[u8], line: usize) -> EntryProblem {
    match Credentials::parse_auth_file(content) {
        Err(CredentialsError::Entry {
            at: EntryLocation::Line(n),
            problem,
        }) if n == line => problem,
        other => panic!("expected an error on line {line}, got {other:?}"),
    }
}

fn problem(line: &str) -> EntryProblem {
    problem_at(line.as_bytes(), 1)
}

fn malformed_problem(kind: &'static str, reason: &'static str) -> EntryProblem {
    EntryProblem::MalformedHash { kind, reason }
}

fn header(credentials: &str) -> Vec<u8> {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Hash kinds, with real tool output

#[test]
fn every_kind_accepts_its_password_and_refuses_a_wrong_one() {
    let credentials = kinds();
    assert_eq!(credentials.len(), KIND_CASES.len());
    for &(user, right, wrong) in KIND_CASES {
        assert!(credentials.verify(user, right.as_bytes()), "{user} with its password");
        assert!(
            !credentials.verify(user, wrong.as_bytes()),
            "{user} with a wrong password"
        );
    }
}

#[test]
fn every_kind_is_parsed_as_the_expected_scheme() {
    let credentials = kinds();
    let scheme = |user: &str| match &credentials.users[user] {
        StoredHash::Bcrypt(_) => "bcrypt",
        StoredHash::ShaCrypt(_) => "sha-crypt",
        StoredHash::Md5Crypt(_) => "md5-crypt",
        StoredHash::Apr1(_) => "apr1",
        StoredHash::DesCrypt(_) => "des",
        StoredHash::Sha1(_) => "sha1",
        StoredHash::SaltedSha1 { .. } => "ssha",
        StoredHash::Plain(_) => "plain",
    };
    let expected = [
        ("bcrypt-y", "bcrypt"),
        ("bcrypt-a", "bcrypt"),
        ("bcrypt-b", "bcrypt"),
        ("bcrypt-long", "bcrypt"),
        ("apr1-htpasswd", "apr1"),
        ("apr1-openssl", "apr1"),
        ("apr1-empty", "apr1"),
        ("md5-openssl", "md5-crypt"),
        ("md5-mkpasswd", "md5-crypt"),
        ("sha1-htpasswd", "sha1"),
        ("ssha-passlib", "ssha"),
        ("sha256-openssl", "sha-crypt"),
        ("sha256-rounds", "sha-crypt"),
        ("sha256-htpasswd", "sha-crypt"),
        ("sha512-openssl", "sha-crypt"),
        ("sha512-htpasswd", "sha-crypt"),
        ("sha512-python", "sha-crypt"),
        ("des-htpasswd", "des"),
        ("des-mkpasswd", "des"),
        ("plain", "plain"),
    ];
    for (user, kind) in expected {
        assert_eq!(scheme(user), kind, "{user}");
    }
}

#[test]
fn htpasswd_bcrypt_is_the_2y_variant() {
    let line = KINDS
        .split(|&b| b == b'\n')
        .find(|line| line.starts_with(b"bcrypt-y:"))
        .unwrap();
    assert!(line.starts_with(b"bcrypt-y:$2y$05$"));
}

#[test]
fn bcrypt_reads_only_the_first_72_bytes_like_crypt() {
    let credentials = kinds();
    let first_72 = &LONG.as_bytes()[..72];
    assert!(credentials.verify("bcrypt-long", first_72));
    assert!(credentials.verify("bcrypt-long", &[first_72, b"anything else"].concat()));
    assert!(!credentials.verify("bcrypt-long", &LONG.as_bytes()[..71]));
}

#[test]
fn des_reads_only_the_first_8_bytes_like_crypt() {
    let credentials = kinds();
    assert!(credentials.verify("des-mkpasswd", b"des8char"));
    assert!(credentials.verify("des-mkpasswd", b"des8charXYZ"));
    assert!(!credentials.verify("des-mkpasswd", b"des8cha"));
}

#[test]
fn sha_crypt_rounds_forms_are_all_read() {
    let lines: Vec<&str> = std::str::from_utf8(KINDS).unwrap().lines().collect();
    let hash_of = |user: &str| {
        let prefix = format!("{user}:");
        lines
            .iter()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .unwrap()
    };
    assert!(hash_of("sha256-rounds").starts_with("$5$rounds=10000$"));
    assert!(hash_of("sha256-htpasswd").starts_with("$5$rounds=20000$"));
    assert!(hash_of("sha512-htpasswd").starts_with("$6$rounds=1000$"));
    assert!(!hash_of("sha512-openssl").contains("rounds="));

    // An explicit rounds=5000 is a different string from the implicit default and still verifies
    // (mkpasswd -m sha512crypt -R 5000 -S saltsaltsaltsalt 'five thousand').
    let explicit = "$6$rounds=5000$saltsaltsaltsalt$cr7ikEhSQJe6yZLQVexO4GwIQ4SPGgcq7d8slVRAjXDs.d6RAqt7OOPnXrsW3zAknrDU..KITEWl9NolevMPp0";
    let credentials = file(&format!("u:{explicit}\n"));
    assert!(credentials.verify("u", b"five thousand"));
    assert!(!credentials.verify("u", b"five thousand "));
}

#[test]
fn each_refused_fixture_names_its_kind_or_limit() {
    let expected = [
        EntryProblem::UnsupportedHash { kind: "yescrypt" },
        EntryProblem::UnsupportedHash { kind: "scrypt" },
        EntryProblem::UnsupportedHash { kind: "SunMD5" },
        EntryProblem::UnsupportedHash {
            kind: "BSDi extended DES-crypt",
        },
        EntryProblem::UnsupportedHash { kind: "NT hash" },
        EntryProblem::WorkFactorTooHigh {
            kind: "bcrypt",
            value: 15,
            max: 14,
        },
        EntryProblem::WorkFactorTooHigh {
            kind: "SHA-512-crypt",
            value: 2_000_000,
            max: 1_000_000,
        },
    ];
    let lines: Vec<&str> = REFUSED.lines().collect();
    assert_eq!(lines.len(), expected.len());
    for (line, expected) in lines.iter().zip(expected) {
        assert_eq!(problem(line), expected, "{line}");
    }
    // The whole file fails on its first line: one bad line refuses the Secret.
    assert_eq!(
        problem_at(REFUSED.as_bytes(), 1),
        EntryProblem::UnsupportedHash { kind: "yescrypt" }
    );
}

#[test]
fn other_unsupported_schemes_are_named() {
    let cases = [
        (
            "u:$2x$05$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyzABCD",
            "bcrypt $2x$ (the buggy pre-2011 variant)",
        ),
        (
            "u:$2$05$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyzABCDE",
            "bcrypt $2$ (the original variant)",
        ),
        ("u:$gy$j9T$salt$hash", "GOST yescrypt"),
        ("u:$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2g", "Argon2"),
        ("u:$sha1$48000$salt$hash", "SHA1-crypt"),
        ("u:$pbkdf2-sha256$29000$salt$hash", "PBKDF2"),
        ("u:{SMD5}abcd", "{SMD5}"),
        ("u:{MD5}abcd", "{MD5}"),
        ("u:{CRYPT}abcd", "{CRYPT}"),
    ];
    for (line, kind) in cases {
        assert_eq!(problem(line), EntryProblem::UnsupportedHash { kind }, "{line}");
    }
}

#[test]
fn unrecognised_hashes_are_refused_at_parse_time() {
    for line in [
        "u:hunter2",                                                     // raw plaintext (htpasswd -p)
        "u:$9$abc$def",                                                  // no such scheme
        "u:$2c$05$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyzABCD", // no such bcrypt variant
        "u:{sha}tvRYxZ90euHhTV+mXlnRmD73S7c=",                           // nginx's prefixes are case-sensitive
        "u:{plain}x",
        "u:2F52.FXUoh16",                           // 12 characters: not DES
        "u:2F52.FXUoh1666",                         // 14 characters
        "u:2F52.FXUoh16!",                          // 13, outside the alphabet
        "u:$apr1$jbOoCQpe$0U0pXJDmdPI3JPxBNgdwE0é", // non-ASCII
        "u: $apr1$jbOoCQpe$0U0pXJDmdPI3JPxBNgdwE0", // leading space
    ] {
        assert_eq!(problem(line), EntryProblem::UnrecognisedHash, "{line}");
    }
    assert_eq!(problem_at(b"u:\xff\xfe", 1), EntryProblem::UnrecognisedHash);
}

#[test]
fn malformed_bcrypt_is_refused() {
    let good = "$2y$05$6jFKlX8zyCwg.IdXcc5avOmrQ7iORD0efCXM4bHFnV6QplNv9Dika";
    assert!(Credentials::parse_auth_file(format!("u:{good}").as_bytes()).is_ok());
    let cases = [
        (format!("u:{}", &good[..59]), "not 60 characters long"),
        (format!("u:{good}x"), "not 60 characters long"),
        (format!("u:{good} "), "not 60 characters long"),
        (format!("u:$2y$0x{}", &good[6..]), "no two-digit cost"),
        (format!("u:$2y$5$${}", &good[7..]), "no two-digit cost"),
        (format!("u:$2y$03{}", &good[6..]), "cost below 4"),
        (
            format!("u:{}*{}", &good[..20], &good[21..]),
            "salt or checksum is not canonical bcrypt base64",
        ),
        // The salt's last character carries 2 bits; `/` sets bits that do not exist.
        (
            format!("u:{}/{}", &good[..28], &good[29..]),
            "salt or checksum is not canonical bcrypt base64",
        ),
    ];
    for (line, reason) in cases {
        assert_eq!(problem(&line), malformed_problem("bcrypt", reason), "{line}");
    }
    assert_eq!(
        problem(&format!("u:$2y$31{}", &good[6..])),
        EntryProblem::WorkFactorTooHigh {
            kind: "bcrypt",
            value: 31,
            max: MAX_BCRYPT_COST
        }
    );
    // The cap is inclusive.
    assert!(Credentials::parse_auth_file(format!("u:$2y$14{}", &good[6..]).as_bytes()).is_ok());
}

#[test]
fn malformed_sha_crypt_is_refused() {
    let salt_and_hash = "a12utzDQj4eGhk1q$nFu3fYXmUMs0iom6738MDxhGE8bMy9WbR2m./CJLrED";
    let line = |rounds: &str| format!("u:$5${rounds}{salt_and_hash}");
    assert!(Credentials::parse_auth_file(line("").as_bytes()).is_ok());
    assert!(Credentials::parse_auth_file(line("rounds=1000$").as_bytes()).is_ok());
    assert!(Credentials::parse_auth_file(line("rounds=1000000$").as_bytes()).is_ok());
    let sha256 = |reason| malformed_problem("SHA-256-crypt", reason);
    assert_eq!(problem(&line("rounds=999$")), sha256("rounds below 1000"));
    assert_eq!(problem(&line("rounds=0$")), sha256("rounds has a leading zero"));
    assert_eq!(problem(&line("rounds=05000$")), sha256("rounds has a leading zero"));
    assert_eq!(problem(&line("rounds=$")), sha256("rounds is not a decimal number"));
    assert_eq!(
        problem(&line("rounds=+5000$")),
        sha256("rounds is not a decimal number")
    );
    assert_eq!(
        problem(&line("rounds=12345678901$")),
        sha256("rounds is not a decimal number")
    );
    assert_eq!(problem("u:$5$rounds=5000"), sha256("no `$` after rounds"));
    assert_eq!(
        problem(&line("rounds=1000001$")),
        EntryProblem::WorkFactorTooHigh {
            kind: "SHA-256-crypt",
            value: 1_000_001,
            max: MAX_SHA_CRYPT_ROUNDS
        }
    );
    assert_eq!(
        problem(&line("rounds=4294967296$")),
        EntryProblem::WorkFactorTooHigh {
            kind: "SHA-256-crypt",
            value: u32::MAX,
            max: MAX_SHA_CRYPT_ROUNDS
        }
    );
    assert_eq!(problem("u:$5$saltonly"), sha256("no `$` after the salt"));
    assert_eq!(
        problem("u:$5$$nFu3fYXmUMs0iom6738MDxhGE8bMy9WbR2m./CJLrED"),
        sha256("salt is not 1 to 16 crypt base64 characters")
    );
    assert_eq!(
        problem("u:$5$a12utzDQj4eGhk1qX$nFu3fYXmUMs0iom6738MDxhGE8bMy9WbR2m./CJLrED"),
        sha256("salt is not 1 to 16 crypt base64 characters")
    );
    assert_eq!(
        problem("u:$5$a12u_zDQ$nFu3fYXmUMs0iom6738MDxhGE8bMy9WbR2m./CJLrED"),
        sha256("salt is not 1 to 16 crypt base64 characters")
    );
    // 40 characters decode cleanly to 30 bytes; 42 leave spare bits set.
    assert_eq!(
        problem("u:$5$a12utzDQj4eGhk1q$nFu3fYXmUMs0iom6738MDxhGE8bMy9WbR2m./CJL"),
        sha256("checksum has the wrong length")
    );
    assert_eq!(
        problem("u:$5$a12utzDQj4eGhk1q$nFu3fYXmUMs0iom6738MDxhGE8bMy9WbR2m./CJLrE"),
        sha256("checksum is not canonical crypt base64")
    );
    // A SHA-512 checksum after the SHA-256 magic.
    assert_eq!(
        problem(
            "u:$5$4uFSgBWnGPN6BuEU$ki4TBqrnYNkULxnpR3.g6NU/qfh/omSDpiKpQ4iRZ26p99KfqpwDaabyaXYu6HuHfdhwPYReolFsFI7u2WAFI0"
        ),
        sha256("checksum has the wrong length")
    );
    assert_eq!(
        problem("u:$5$a12utzDQj4eGhk1q$nFu3fYXmUMs0iom6738MDxhGE8bMy9WbR2m./CJLrE!"),
        sha256("checksum is not canonical crypt base64")
    );
    assert_eq!(
        problem("u:$6$a12utzDQj4eGhk1q$extra$nFu3fYXmUMs0iom6738MDxhGE8bMy9WbR2m./CJLrED"),
        malformed_problem("SHA-512-crypt", "checksum is not canonical crypt base64")
    );
}

#[test]
fn malformed_md5_crypt_and_apr1_are_refused() {
    let apr1 = |reason| malformed_problem("apr1 MD5", reason);
    let md5 = |reason| malformed_problem("MD5-crypt", reason);
    assert_eq!(problem("u:$apr1$jbOoCQpe"), apr1("no `$` after the salt"));
    assert_eq!(
        problem("u:$apr1$$0U0pXJDmdPI3JPxBNgdwE0"),
        apr1("salt is not 1 to 8 crypt base64 characters")
    );
    assert_eq!(
        problem("u:$apr1$jbOoCQpeX$0U0pXJDmdPI3JPxBNgdwE0"),
        apr1("salt is not 1 to 8 crypt base64 characters")
    );
    assert_eq!(
        problem("u:$apr1$jbOoCQpe$0U0pXJDmdPI3JPxBNgdwE"),
        apr1("checksum is not 22 crypt base64 characters")
    );
    assert_eq!(
        problem("u:$apr1$jbOoCQpe$0U0pXJDmdPI3JPxBNgdwE0 "),
        apr1("checksum is not 22 crypt base64 characters")
    );
    assert_eq!(
        problem("u:$apr1$jbOoCQpe$0U0pXJDmdPI3JPxBNgdwE2"),
        apr1("non-canonical checksum")
    );
    assert_eq!(
        problem("u:$1$rZ67jP2P$Hu7LVPwCLcBWvjbY/LS6J1$"),
        md5("checksum is not 22 crypt base64 characters")
    );
    assert_eq!(
        problem("u:$1$rZ67jP2P$Hu7LVPwCLcBWvjbY/LS6Jz"),
        md5("non-canonical checksum")
    );
}

#[test]
fn malformed_des_sha1_ssha_and_plain_are_refused() {
    assert_eq!(
        problem("u:2F52.FXUoh167"),
        malformed_problem("DES-crypt", "non-canonical checksum")
    );
    assert!(Credentials::parse_auth_file(b"u:2F52.FXUoh16w").is_ok());

    let sha1 = |reason| malformed_problem("{SHA}", reason);
    assert_eq!(
        problem("u:{SHA}tvRYxZ90euHhTV+mXlnRmD73S7c"),
        sha1("not canonical padded base64")
    );
    assert_eq!(
        problem("u:{SHA}tvRYxZ90euHhTV+mXlnRmD73S7c=="),
        sha1("not canonical padded base64")
    );
    assert_eq!(
        problem("u:{SHA}tvRYxZ90euHhTV-mXlnRmD73S7c="),
        sha1("not canonical padded base64")
    );
    assert_eq!(
        problem("u:{SHA}tvRYxZ90euHhTV+mXlnRmD73S7d="),
        sha1("not canonical padded base64")
    );
    assert_eq!(
        problem("u:{SHA}tvRYxZ90euHhTV+mXlnRmD73Sw=="),
        sha1("not a 20-byte SHA-1 digest")
    );
    assert_eq!(problem("u:{SHA}"), sha1("not a 20-byte SHA-1 digest"));

    let ssha = |reason| malformed_problem("{SSHA}", reason);
    assert_eq!(
        problem("u:{SSHA}tvRYxZ90euHhTV+mXlnRmD73S7c="),
        ssha("no salt after the SHA-1 digest")
    );
    assert_eq!(
        problem("u:{SSHA}sVDa+LMjCjxE8KdDIu5WwPImDrO39t6"),
        ssha("not canonical padded base64")
    );

    assert_eq!(
        problem_at(b"u:{PLAIN}a\x01b", 1),
        malformed_problem("{PLAIN}", "the password contains a control character")
    );
    assert_eq!(
        problem_at(b"u:{PLAIN}a\x00b", 1),
        malformed_problem("{PLAIN}", "the password contains a control character")
    );
    // A tab is text, not a control here, and so is everything else printable.
    assert!(file("u:{PLAIN}a\tb").verify("u", b"a\tb"));
}

#[test]
fn plain_passwords_keep_spaces_and_non_ascii() {
    let credentials = Credentials::parse_auth_file("u: {PLAIN} x \nv:{PLAIN}é\n".as_bytes());
    // A leading space before {PLAIN} makes it something else entirely.
    assert_eq!(
        credentials.unwrap_err(),
        CredentialsError::Entry {
            at: EntryLocation::Line(1),
            problem: EntryProblem::UnrecognisedHash
        }
    );
    let credentials = file("u:{PLAIN} x \nv:{PLAIN}é\nw:{PLAIN}\n");
    assert!(credentials.verify("u", b" x "));
    assert!(!credentials.verify("u", b" x"));
    assert!(credentials.verify("v", "é".as_bytes()));
    assert!(credentials.verify("w", b""));
    assert!(!credentials.verify("w", b" "));
}

// ---------------------------------------------------------------------------------------------
// auth-file line handling

#[test]
fn comments_blank_lines_and_crlf_are_skipped() {
    let credentials =
        file("# team\r\n\r\n   \r\n\t\n#alice:{PLAIN}commented\nalice:{PLAIN}a\r\n# more\nbob:{PLAIN}b\r\n\n");
    assert_eq!(credentials.len(), 2);
    assert!(credentials.verify("alice", b"a"));
    assert!(!credentials.verify("alice", b"commented"));
    assert!(!credentials.verify("alice", b"a\r"));
    assert!(credentials.verify("bob", b"b"));
    assert!(!credentials.verify("#alice", b"commented"));
}

#[test]
fn last_line_needs_no_line_break() {
    let credentials = file("alice:{PLAIN}a\nbob:{PLAIN}b");
    assert!(credentials.verify("bob", b"b"));
    assert!(file("bob:{PLAIN}b\r").verify("bob", b"b"));
}

#[test]
fn a_third_field_is_ignored_as_nginx_does() {
    let credentials =
        file("alice:{PLAIN}a:Alice Liddell\nbob:{PLAIN}pa:ss\ncarol:$apr1$jbOoCQpe$0U0pXJDmdPI3JPxBNgdwE0:x:y\n");
    assert!(credentials.verify("alice", b"a"));
    assert!(!credentials.verify("alice", b"a:Alice Liddell"));
    // nginx ends the hash at the second `:`, so this {PLAIN} password is `pa`.
    assert!(credentials.verify("bob", b"pa"));
    assert!(!credentials.verify("bob", b"pa:ss"));
    assert!(credentials.verify("carol", b"apr1 secret"));
}

#[test]
fn the_first_line_of_a_repeated_user_wins() {
    // nginx scans top to bottom and stops at the first line whose name matches.
    let credentials = file("dup:{PLAIN}first\nother:{PLAIN}o\ndup:{PLAIN}second\n");
    assert_eq!(credentials.len(), 2);
    assert!(credentials.verify("dup", b"first"));
    assert!(!credentials.verify("dup", b"second"));
    // A later duplicate is still checked: a broken line refuses the Secret even if unused.
    assert_eq!(
        problem_at(b"dup:{PLAIN}first\ndup:$y$j9T$x$y\n", 2),
        EntryProblem::UnsupportedHash { kind: "yescrypt" }
    );
}

#[test]
fn malformed_lines_name_the_line_number() {
    let content = b"# header\n\nalice:{PLAIN}a\n\r\nno separator here\n";
    assert_eq!(problem_at(content, 5), EntryProblem::MissingSeparator);
    assert_eq!(problem(":{PLAIN}a"), EntryProblem::EmptyUser);
    assert_eq!(problem("alice:"), EntryProblem::EmptyHash);
    assert_eq!(problem("alice::comment"), EntryProblem::EmptyHash);
    assert_eq!(problem_at(b"\xffalice:{PLAIN}a", 1), EntryProblem::UserNotUtf8);
    assert_eq!(problem_at(b"al\x01ice:{PLAIN}a", 1), EntryProblem::UserControlChar);
    assert_eq!(problem_at(b"al\tice:{PLAIN}a", 1), EntryProblem::UserControlChar);
    assert_eq!(problem_at(b"al\x7fice:{PLAIN}a", 1), EntryProblem::UserControlChar);
    assert_eq!(
        problem_at("al\u{85}ice:{PLAIN}a".as_bytes(), 1),
        EntryProblem::UserControlChar
    );
    assert_eq!(problem(" alice:{PLAIN}a"), EntryProblem::UserEdgeWhitespace);
    assert_eq!(problem("alice :{PLAIN}a"), EntryProblem::UserEdgeWhitespace);
    assert_eq!(problem("alice\u{a0}:{PLAIN}a"), EntryProblem::UserEdgeWhitespace);
    // nginx reads `  #x` as a user; here it is an edge-whitespace mistake.
    assert_eq!(problem("  #x:{PLAIN}a"), EntryProblem::UserEdgeWhitespace);
    assert_eq!(problem_at(b"alice:{PLAIN}a\rjunk\n", 1), EntryProblem::StrayLineBreak);
    assert_eq!(problem_at(b"alice:{PLAIN}a:\rjunk\n", 1), EntryProblem::StrayLineBreak);
    assert_eq!(problem_at(b"alice:{PLAIN}a\r\r\n", 1), EntryProblem::StrayLineBreak);
    // Inner spaces and non-ASCII letters are fine in a user name.
    let credentials = file("alice smith:{PLAIN}a\nzoë:{PLAIN}z\n");
    assert!(credentials.verify("alice smith", b"a"));
    assert!(credentials.verify("zoë", b"z"));
}

#[test]
fn error_messages_name_the_place_and_never_the_content() {
    let secret_user = "verysecretuser";
    let secret_hash = "$apr1$s3cr3tSa$0U0pXJDmdPI3JPxBNgdwE";
    let content = format!("# comment\n{secret_user}:{secret_hash}\n");
    let error = Credentials::parse_auth_file(content.as_bytes()).unwrap_err();
    let message = error.to_string();
    assert_eq!(
        message,
        "line 2: malformed apr1 MD5 password hash: checksum is not 22 crypt base64 characters"
    );
    assert!(!message.contains(secret_user) && !message.contains("s3cr3t") && !message.contains("0U0p"));

    let expected = [
        (
            CredentialsError::MissingAuthKey,
            "the Secret has no `auth` key, which auth-secret-type auth-file needs",
        ),
        (
            CredentialsError::TooLarge { max: 5 },
            "the credentials are over the 5-byte limit",
        ),
        (
            CredentialsError::TooManyUsers { max: 7 },
            "the credentials hold more than 7 users",
        ),
        (
            entry_error(EntryLocation::MapEntry(3), EntryProblem::UserColon),
            "auth-map entry 3: user name contains `:`",
        ),
        (
            entry_error(EntryLocation::Line(9), EntryProblem::TooLong { max: 1024 }),
            "line 9: longer than 1024 bytes",
        ),
        (
            entry_error(
                EntryLocation::Line(1),
                EntryProblem::UnsupportedHash { kind: "yescrypt" },
            ),
            "line 1: yescrypt password hashes are not supported",
        ),
        (
            entry_error(
                EntryLocation::Line(4),
                EntryProblem::WorkFactorTooHigh {
                    kind: "bcrypt",
                    value: 15,
                    max: 14,
                },
            ),
            "line 4: bcrypt work factor 15 is above the limit of 14",
        ),
        (
            entry_error(EntryLocation::Line(2), EntryProblem::UnrecognisedHash),
            "line 2: unrecognised password hash format",
        ),
    ];
    for (error, message) in expected {
        assert_eq!(error.to_string(), message);
    }
}

// ---------------------------------------------------------------------------------------------
// Limits

#[test]
fn line_length_limit_is_exact_and_excludes_the_line_break() {
    let prefix = "u:{PLAIN}p:";
    let at_limit = format!("{prefix}{}", "c".repeat(MAX_LINE_LEN - prefix.len()));
    assert_eq!(at_limit.len(), MAX_LINE_LEN);
    assert!(file(&format!("{at_limit}\r\n")).verify("u", b"p"));
    let over = format!("# first\n{at_limit}c\n");
    assert_eq!(
        problem_at(over.as_bytes(), 2),
        EntryProblem::TooLong { max: MAX_LINE_LEN }
    );
    // Comments obey the same limit.
    let long_comment = format!("#{}", "c".repeat(MAX_LINE_LEN));
    assert_eq!(problem(&long_comment), EntryProblem::TooLong { max: MAX_LINE_LEN });
}

#[test]
fn user_and_hash_length_limits_are_exact() {
    let user = "u".repeat(MAX_USER_LEN);
    assert!(file(&format!("{user}:{{PLAIN}}p")).verify(&user, b"p"));
    assert_eq!(
        problem(&format!("{user}u:{{PLAIN}}p")),
        EntryProblem::UserTooLong { max: MAX_USER_LEN }
    );
    // The length check comes first: 512 bytes reach the {SSHA} decoder, 513 do not.
    let at_limit = format!("{{SSHA}}{}", "A".repeat(MAX_HASH_LEN - "{SSHA}".len()));
    assert_eq!(at_limit.len(), MAX_HASH_LEN);
    assert_eq!(
        problem(&format!("u:{at_limit}")),
        malformed_problem("{SSHA}", "not canonical padded base64")
    );
    assert_eq!(
        problem(&format!("u:{at_limit}A")),
        EntryProblem::HashTooLong { max: MAX_HASH_LEN }
    );
    // {SSHA} with a long salt is the longest real hash field: 20 + 358 bytes are 504 characters.
    let long_ssha = long_ssha_hash(b"pw");
    assert_eq!(long_ssha.len(), 510);
    assert!(file(&format!("u:{long_ssha}")).verify("u", b"pw"));
}

/// An {SSHA} hash of `password` with a 358-byte salt: 510 bytes, near [`MAX_HASH_LEN`].
fn long_ssha_hash(password: &[u8]) -> String {
    let salt = [b's'; 358];
    let digest = sha1_digest(&[password, &salt]);
    let encoded = base64::engine::general_purpose::STANDARD.encode([digest.as_slice(), &salt].concat());
    format!("{{SSHA}}{encoded}")
}

#[test]
fn secret_size_limit_is_exact() {
    // Comment lines of 1023 bytes plus a line feed, topped up to exactly the limit.
    let line = format!("#{}\n", "c".repeat(1022));
    let mut content = line.repeat(MAX_SECRET_BYTES / line.len() - 1);
    content.push('#');
    content.push_str(&"c".repeat(MAX_SECRET_BYTES - content.len()));
    assert_eq!(content.len(), MAX_SECRET_BYTES);
    let credentials = Credentials::parse_auth_file(content.as_bytes()).unwrap();
    assert!(credentials.is_empty());
    content.push('c');
    assert_eq!(
        Credentials::parse_auth_file(content.as_bytes()).unwrap_err(),
        CredentialsError::TooLarge { max: MAX_SECRET_BYTES }
    );
}

#[test]
fn user_count_limit_is_exact_and_ignores_duplicates() {
    let mut content: String = (0..MAX_USERS).map(|i| format!("user{i}:{{PLAIN}}p{i}\n")).collect();
    content.push_str("user0:{PLAIN}again\n");
    let credentials = Credentials::parse_auth_file(content.as_bytes()).unwrap();
    assert_eq!(credentials.len(), MAX_USERS);
    assert!(credentials.verify("user9999", b"p9999"));
    content.push_str("one-too-many:{PLAIN}p\n");
    assert_eq!(
        Credentials::parse_auth_file(content.as_bytes()).unwrap_err(),
        CredentialsError::TooManyUsers { max: MAX_USERS }
    );
}

#[test]
fn client_password_and_user_limits_apply_to_verify() {
    let at_limit = "p".repeat(MAX_PASSWORD_LEN);
    let credentials = file(&format!("u:{{PLAIN}}{at_limit}\n"));
    assert!(credentials.verify("u", at_limit.as_bytes()));
    let over = format!("{at_limit}p");
    assert!(!credentials.verify("u", over.as_bytes()));
    assert_eq!(credentials.verify_cached("u", over.as_bytes()), Some(false));
    // A stored password longer than any client may send could never match: refused at parse.
    assert_eq!(
        problem(&format!("v:{{PLAIN}}{over}")),
        malformed_problem("{PLAIN}", "the password is longer than a client may send")
    );
    // NUL ends a C string: refused outright rather than cut.
    assert!(!kinds().verify("plain", b"plain secret\0"));
    assert_eq!(kinds().verify_cached("plain", b"plain secret\0"), Some(false));
    // User names no entry can have are refused without hashing.
    for user in ["", " plain", "pl:ain", "pl\nain", "#plain"] {
        assert_eq!(kinds().verify_cached(user, b"plain secret"), Some(false), "{user:?}");
        assert!(!kinds().verify(user, b"plain secret"));
    }
    assert_eq!(kinds().verify_cached(&"u".repeat(MAX_USER_LEN + 1), b"x"), Some(false));
}

// ---------------------------------------------------------------------------------------------
// auth-map and Secret forms

#[test]
fn auth_map_keys_are_users_and_values_hashes() {
    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    data.insert("alice".into(), b"$apr1$jbOoCQpe$0U0pXJDmdPI3JPxBNgdwE0".to_vec());
    data.insert(
        "bob".into(),
        b"$2y$05$6jFKlX8zyCwg.IdXcc5avOmrQ7iORD0efCXM4bHFnV6QplNv9Dika\n".to_vec(),
    );
    data.insert("carol".into(), b"{PLAIN}c\r\n".to_vec());
    data.insert("dave".into(), b"{PLAIN}d:ignored third field".to_vec());
    let entries = data.iter().map(|(key, value)| (key.as_str(), value.as_slice()));
    let credentials = Credentials::from_secret(SecretType::AuthMap, entries).unwrap();
    assert_eq!(credentials.len(), 4);
    assert!(credentials.verify("alice", b"apr1 secret"));
    assert!(credentials.verify("bob", b"bcrypt y secret"));
    assert!(credentials.verify("carol", b"c"));
    assert!(credentials.verify("dave", b"d"));
    assert!(!credentials.verify("dave", b"d:ignored third field"));
}

#[test]
fn auth_map_errors_name_the_entry() {
    let map_problem = |entries: &[(&str, &[u8])]| match Credentials::parse_auth_map(entries.iter().copied()) {
        Err(CredentialsError::Entry {
            at: EntryLocation::MapEntry(n),
            problem,
        }) => (n, problem),
        other => panic!("expected an entry error, got {other:?}"),
    };
    let ok: (&str, &[u8]) = ("ok", b"{PLAIN}ok");
    // A value with a line break in the middle would make nginx read a second user.
    assert_eq!(
        map_problem(&[ok, ("alice", b"{PLAIN}a\nmallory:{PLAIN}m")]),
        (2, EntryProblem::StrayLineBreak)
    );
    assert_eq!(
        map_problem(&[ok, ("alice", b"{PLAIN}a\n\n")]),
        (2, EntryProblem::StrayLineBreak)
    );
    assert_eq!(
        map_problem(&[ok, ("alice", b"{PLAIN}a\r")]),
        (2, EntryProblem::StrayLineBreak)
    );
    assert_eq!(map_problem(&[("al:ice", b"{PLAIN}a")]), (1, EntryProblem::UserColon));
    assert_eq!(
        map_problem(&[("#alice", b"{PLAIN}a")]),
        (1, EntryProblem::UserStartsWithHashSign)
    );
    assert_eq!(map_problem(&[("", b"{PLAIN}a")]), (1, EntryProblem::EmptyUser));
    assert_eq!(map_problem(&[("alice", b"")]), (1, EntryProblem::EmptyHash));
    assert_eq!(map_problem(&[("alice", b"\n")]), (1, EntryProblem::EmptyHash));
    assert_eq!(
        map_problem(&[("alice", b"$y$j9T$x$y")]),
        (1, EntryProblem::UnsupportedHash { kind: "yescrypt" })
    );
    // `key:value` is held to the line limit; the value's own trailing newline is not counted.
    let long_value = vec![b'p'; MAX_LINE_LEN - "u:".len() + 1];
    assert_eq!(
        map_problem(&[("u", &long_value)]),
        (1, EntryProblem::TooLong { max: MAX_LINE_LEN })
    );
    let mut at_limit = b"{PLAIN}".to_vec();
    at_limit.resize(MAX_LINE_LEN - "u:".len(), b'p');
    at_limit.push(b'\n');
    assert_eq!(
        map_problem(&[("u", &at_limit)]),
        (1, EntryProblem::HashTooLong { max: MAX_HASH_LEN })
    );
}

#[test]
fn auth_map_size_limit_counts_keys_and_values() {
    let users: Vec<String> = (0..2000).map(|i| format!("{i:0>256}")).collect();
    let value = long_ssha_hash(b"pw").into_bytes();
    let per_entry = 256 + value.len();
    let fitting = MAX_SECRET_BYTES / per_entry;
    let entries = || users.iter().map(|user| (user.as_str(), value.as_slice()));
    assert_eq!(
        Credentials::parse_auth_map(entries().take(fitting)).unwrap().len(),
        fitting
    );
    assert_eq!(
        Credentials::parse_auth_map(entries().take(fitting + 1)).unwrap_err(),
        CredentialsError::TooLarge { max: MAX_SECRET_BYTES }
    );
}

#[test]
fn auth_file_secret_reads_the_auth_key_only() {
    let data: [(&str, &[u8]); 2] = [("other", b"not:{PLAIN}used"), ("auth", b"alice:{PLAIN}a\n")];
    let credentials = Credentials::from_secret(SecretType::AuthFile, data).unwrap();
    assert_eq!(credentials.len(), 1);
    assert!(credentials.verify("alice", b"a"));
    let data: [(&str, &[u8]); 1] = [("Auth", b"alice:{PLAIN}a\n")];
    assert_eq!(
        Credentials::from_secret(SecretType::AuthFile, data).unwrap_err(),
        CredentialsError::MissingAuthKey
    );
    let oversize = vec![b'#'; MAX_SECRET_BYTES + 1];
    assert_eq!(
        Credentials::from_secret(SecretType::AuthFile, [("auth", oversize.as_slice())]).unwrap_err(),
        CredentialsError::TooLarge { max: MAX_SECRET_BYTES }
    );
}

#[test]
fn secret_type_annotation_values() {
    assert_eq!(SecretType::from_annotation("auth-file"), Some(SecretType::AuthFile));
    assert_eq!(SecretType::from_annotation("auth-map"), Some(SecretType::AuthMap));
    for other in ["", "Auth-File", "auth-file ", "authfile", "auth-maps"] {
        assert_eq!(SecretType::from_annotation(other), None, "{other:?}");
    }
}

#[test]
fn an_empty_secret_refuses_everyone() {
    let credentials = file("# nobody yet\n");
    assert!(credentials.is_empty());
    assert_eq!(credentials.len(), 0);
    assert!(!credentials.verify("alice", b""));
    assert_eq!(credentials.verify_cached("alice", b""), Some(false));
    assert!(Credentials::parse_auth_file(b"").unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Unknown users, Debug, threads

#[test]
fn unknown_users_are_checked_against_the_first_users_hash_and_refused() {
    let credentials = kinds();
    assert!(matches!(credentials.decoy, Some(StoredHash::Bcrypt(_))));
    // The decoy is bcrypt-y's hash, and even its password gets nobody in.
    assert!(!credentials.verify("nobody", b"bcrypt y secret"));
    assert!(!credentials.verify("Bcrypt-y", b"bcrypt y secret"));
    assert_eq!(credentials.verify_cached("nobody", b"bcrypt y secret"), None);
    let plain_first = file("p:{PLAIN}x\nq:$apr1$jbOoCQpe$0U0pXJDmdPI3JPxBNgdwE0\n");
    assert!(matches!(plain_first.decoy, Some(StoredHash::Plain(_))));
    assert!(file("").decoy.is_none());
}

#[test]
fn an_unknown_user_costs_about_as_much_as_a_wrong_password() {
    // bcrypt-y (cost 5) is the first user, so it is the decoy. Without the decoy an unknown user
    // would take a hash-map miss, thousands of times less than a bcrypt; the bound below is loose
    // enough for a busy machine and still fails without the decoy.
    let credentials = kinds();
    let fastest = |user: &str| {
        (0..3)
            .map(|_| {
                let start = std::time::Instant::now();
                assert!(!credentials.verify(user, b"not the password"));
                start.elapsed()
            })
            .min()
            .unwrap()
    };
    let known = fastest("bcrypt-y");
    let unknown = fastest("nobody");
    assert!(
        unknown * 10 >= known,
        "unknown user {unknown:?} vs known user {known:?}"
    );
}

#[test]
fn debug_prints_counts_not_users_or_hashes() {
    let credentials = file("alice:{PLAIN}a\nbob:$apr1$jbOoCQpe$0U0pXJDmdPI3JPxBNgdwE0\n");
    assert_eq!(
        format!("{credentials:?}"),
        "Credentials { users: 2, cached_successes: 0 }"
    );
    assert!(credentials.verify("alice", b"a"));
    assert_eq!(
        format!("{credentials:#?}"),
        "Credentials {\n    users: 2,\n    cached_successes: 1,\n}"
    );
}

#[test]
fn credentials_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Credentials>();
    assert_send_sync::<std::sync::Arc<Credentials>>();
}

// ---------------------------------------------------------------------------------------------
// Success cache

#[test]
fn a_success_is_cached_and_answered_without_hashing() {
    let credentials = kinds();
    assert_eq!(credentials.verify_cached("bcrypt-y", b"bcrypt y secret"), None);
    assert!(credentials.verify("bcrypt-y", b"bcrypt y secret"));
    assert_eq!(credentials.verify_cached("bcrypt-y", b"bcrypt y secret"), Some(true));
    assert_eq!(credentials.cache.len(), 1);
    // Only the exact pair hits.
    assert_eq!(credentials.verify_cached("bcrypt-y", b"bcrypt y secreT"), None);
    assert_eq!(credentials.verify_cached("bcrypt-a", b"bcrypt y secret"), None);
    // A repeat success does not add an entry.
    assert!(credentials.verify("bcrypt-y", b"bcrypt y secret"));
    assert_eq!(credentials.cache.len(), 1);
}

#[test]
fn failures_are_never_cached() {
    let credentials = kinds();
    assert!(!credentials.verify("plain", b"wrong"));
    assert!(!credentials.verify("nobody", b"plain secret"));
    assert_eq!(credentials.verify_cached("plain", b"wrong"), None);
    assert_eq!(credentials.cache.len(), 0);
}

#[test]
fn the_cache_never_stores_the_password() {
    let credentials = file("alice:{PLAIN}hunter2hunter2\n");
    assert!(credentials.verify("alice", b"hunter2hunter2"));
    let fingerprints = credentials.cache.lock();
    let stored = fingerprints.present.iter().next().unwrap();
    assert_eq!(fingerprints.order.front(), Some(stored));
    assert!(!stored.windows(7).any(|window| window == b"hunter2"));
    // Keyed per instance: the same login has another fingerprint in another Credentials.
    let other = file("alice:{PLAIN}hunter2hunter2\n");
    assert_ne!(
        other.cache.fingerprint("alice", b"hunter2hunter2").as_ref(),
        Some(stored)
    );
}

#[test]
fn fingerprints_separate_user_from_password() {
    let credentials = file("a:{PLAIN}bc\nab:{PLAIN}c\n");
    assert!(credentials.verify("a", b"bc"));
    assert_eq!(credentials.verify_cached("a", b"bc"), Some(true));
    assert_eq!(credentials.verify_cached("ab", b"c"), None);
}

#[test]
fn the_cache_is_bounded_and_evicts_the_oldest() {
    let content: String = (0..=MAX_CACHED_SUCCESSES)
        .map(|i| format!("user{i}:{{PLAIN}}p{i}\n"))
        .collect();
    let credentials = file(&content);
    for i in 0..MAX_CACHED_SUCCESSES {
        assert!(credentials.verify(&format!("user{i}"), format!("p{i}").as_bytes()));
    }
    assert_eq!(credentials.cache.len(), MAX_CACHED_SUCCESSES);
    assert_eq!(credentials.verify_cached("user0", b"p0"), Some(true));
    let last = MAX_CACHED_SUCCESSES;
    assert!(credentials.verify(&format!("user{last}"), format!("p{last}").as_bytes()));
    assert_eq!(credentials.cache.len(), MAX_CACHED_SUCCESSES);
    assert_eq!(credentials.cache.lock().order.len(), MAX_CACHED_SUCCESSES);
    assert_eq!(credentials.verify_cached("user0", b"p0"), None);
    assert_eq!(credentials.verify_cached("user1", b"p1"), Some(true));
    assert_eq!(
        credentials.verify_cached(&format!("user{last}"), format!("p{last}").as_bytes()),
        Some(true)
    );
    // Evicted is not forgotten for good: the slow path still accepts it.
    assert!(credentials.verify("user0", b"p0"));
    assert_eq!(credentials.verify_cached("user1", b"p1"), None);
}

#[test]
fn a_rotated_secret_starts_with_an_empty_cache() {
    let before = kinds();
    assert!(before.verify("plain", b"plain secret"));
    assert_eq!(before.verify_cached("plain", b"plain secret"), Some(true));
    let after = kinds();
    assert_eq!(after.verify_cached("plain", b"plain secret"), None);
}

#[test]
fn a_poisoned_cache_is_emptied_and_keeps_working() {
    let credentials = std::sync::Arc::new(file("alice:{PLAIN}a\n"));
    assert!(credentials.verify("alice", b"a"));
    let poisoner = std::sync::Arc::clone(&credentials);
    let _ = std::thread::spawn(move || {
        let _guard = poisoner.cache.fingerprints.lock().unwrap();
        panic!("poison the cache lock");
    })
    .join();
    assert!(credentials.cache.fingerprints.is_poisoned());
    assert_eq!(credentials.verify_cached("alice", b"a"), None);
    assert!(credentials.verify("alice", b"a"));
    assert_eq!(credentials.verify_cached("alice", b"a"), Some(true));
}

#[test]
fn concurrent_verifications_share_one_cache() {
    let content: String = (0..64).map(|i| format!("user{i}:{{PLAIN}}p{i}\n")).collect();
    let credentials = file(&content);
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let credentials = &credentials;
            scope.spawn(move || {
                for i in 0..64 {
                    let user = format!("user{i}");
                    assert!(credentials.verify(&user, format!("p{i}").as_bytes()));
                    assert!(!credentials.verify(&user, format!("p{i}-{thread}").as_bytes()));
                }
            });
        }
    });
    assert_eq!(credentials.cache.len(), 64);
}

// ---------------------------------------------------------------------------------------------
// parse_basic

#[test]
fn parse_basic_reads_user_and_password() {
    assert_eq!(
        parse_basic(b"Basic YWxpY2U6c2VjcmV0"),
        Some(("alice".to_owned(), b"secret".to_vec()))
    );
    for scheme in ["basic", "BASIC", "bAsIc"] {
        let value = format!("{scheme} YWxpY2U6c2VjcmV0");
        assert_eq!(
            parse_basic(value.as_bytes()),
            Some(("alice".to_owned(), b"secret".to_vec())),
            "{value}"
        );
    }
    assert_eq!(
        parse_basic(b"Basic    YWxpY2U6c2VjcmV0"),
        Some(("alice".to_owned(), b"secret".to_vec()))
    );
    assert_eq!(
        parse_basic(b" \tBasic YWxpY2U6c2VjcmV0 \t"),
        Some(("alice".to_owned(), b"secret".to_vec()))
    );
    assert_eq!(parse_basic(&header("alice:")), Some(("alice".to_owned(), Vec::new())));
    assert_eq!(parse_basic(&header("a:b:c")), Some(("a".to_owned(), b"b:c".to_vec())));
    assert_eq!(
        parse_basic(&header("zoë smith:pässwörd")),
        Some(("zoë smith".to_owned(), "pässwörd".as_bytes().to_vec()))
    );
    let non_utf8_password = [b"alice:\xff\xfe".as_slice()].concat();
    let value = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(&non_utf8_password)
    );
    assert_eq!(
        parse_basic(value.as_bytes()),
        Some(("alice".to_owned(), vec![0xff, 0xfe]))
    );
}

#[test]
fn parse_basic_padding_is_optional_but_canonical() {
    // base64("a:bc") is "YTpiYw=="; nginx accepts it unpadded too.
    let expected = Some(("a".to_owned(), b"bc".to_vec()));
    assert_eq!(parse_basic(b"Basic YTpiYw=="), expected);
    assert_eq!(parse_basic(b"Basic YTpiYw"), expected);
    // Padding is all or nothing: nginx stops at the first `=`, this refuses partial padding.
    assert_eq!(parse_basic(b"Basic YTpiYw="), None);
    assert_eq!(parse_basic(b"Basic YTpiYw==="), None);
    assert_eq!(parse_basic(b"Basic YTpi="), None);
    // Non-zero trailing bits: "Yx" would decode to the same bytes in a sloppy decoder.
    assert_eq!(parse_basic(b"Basic YTpiYx=="), None);
}

#[test]
fn parse_basic_refuses_malformed_values() {
    let refused: &[&[u8]] = &[
        b"",
        b"Basic",
        b"Basic ",
        b"Basic    ",
        b"BasicYWxpY2U6c2VjcmV0",
        b"Basic\tYWxpY2U6c2VjcmV0",
        b"Bearer YWxpY2U6c2VjcmV0",
        b"Digest YWxpY2U6c2VjcmV0",
        b"Basi YWxpY2U6c2VjcmV0",
        b"Basic YWxpY2U6c2VjcmV0 junk",
        b"Basic YWxpY2U6c2Vj cmV0",
        b"Basic YWxpY2U6c2VjcmV0\r\n",
        b"Basic YWxp*2U6c2VjcmV0",
        b"Basic YWxpY2U6c2VjcmV0.",
        b"Basic \xffYWxpY2U6c2VjcmV0",
    ];
    for value in refused {
        assert_eq!(parse_basic(value), None, "{:?}", String::from_utf8_lossy(value));
    }
}

#[test]
fn parse_basic_refuses_bad_credentials_inside_valid_base64() {
    // base64("u:\xfb\xff") is "dTr7/w=="; the URL-safe alphabet writes "dTr7_w==".
    assert_eq!(parse_basic(b"Basic dTr7/w=="), Some(("u".to_owned(), vec![0xfb, 0xff])));
    assert_eq!(parse_basic(b"Basic dTr7_w=="), None);
    assert_eq!(parse_basic(&header("alice")), None, "no colon");
    assert_eq!(parse_basic(&header(":secret")), None, "empty user");
    assert_eq!(parse_basic(&header("")), None);
    assert_eq!(
        parse_basic(&header("al\u{1}ice:secret")),
        None,
        "control character in user"
    );
    assert_eq!(parse_basic(&header("al\u{7f}ice:secret")), None, "DEL in user");
    assert_eq!(parse_basic(&header("alice:sec\0ret")), None, "NUL in password");
    let non_utf8_user = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(b"\xffalice:secret")
    );
    assert_eq!(parse_basic(non_utf8_user.as_bytes()), None);
}

#[test]
fn parse_basic_limits_are_exact() {
    let user = "u".repeat(MAX_USER_LEN);
    let password = "p".repeat(MAX_PASSWORD_LEN);
    let at_limit = header(&format!("{user}:{password}"));
    assert!(at_limit.len() <= MAX_AUTHORIZATION_LEN);
    assert_eq!(
        parse_basic(&at_limit),
        Some((user.clone(), password.clone().into_bytes()))
    );
    assert_eq!(parse_basic(&header(&format!("{user}u:{password}"))), None);
    assert_eq!(parse_basic(&header(&format!("{user}:{password}p"))), None);

    // The whole value, spaces included, is capped before decoding.
    let token = "YWxpY2U6c2VjcmV0";
    let padded = |total: usize| format!("Basic {}{token}", " ".repeat(total - "Basic ".len() - token.len()));
    assert_eq!(padded(MAX_AUTHORIZATION_LEN).len(), MAX_AUTHORIZATION_LEN);
    assert_eq!(
        parse_basic(padded(MAX_AUTHORIZATION_LEN).as_bytes()),
        Some(("alice".to_owned(), b"secret".to_vec()))
    );
    assert_eq!(parse_basic(padded(MAX_AUTHORIZATION_LEN + 1).as_bytes()), None);
}

#[test]
fn parse_basic_truncated_at_every_byte() {
    let full = b"Basic YWxpY2U6c2VjcmV0";
    let token_start = b"Basic ".len();
    for cut in 0..full.len() {
        let result = parse_basic(&full[..cut]);
        // base64 decodes in 4-character groups; 2 or 3 characters make 1 or 2 bytes when their
        // spare bits are zero. "alice:" needs 8 characters before the user is complete.
        let token_len = cut.saturating_sub(token_start);
        match &result {
            None => {}
            Some((user, password)) => {
                assert_eq!(user, "alice", "cut {cut}");
                assert!(b"secret".starts_with(password), "cut {cut}");
                assert!(token_len >= 8, "cut {cut}");
                assert_ne!(token_len % 4, 1, "cut {cut}");
            }
        }
        if token_len % 4 == 0 && token_len >= 8 {
            let bytes = token_len / 4 * 3;
            let expected_password = b"alice:secret"[6..bytes].to_vec();
            assert_eq!(result, Some(("alice".to_owned(), expected_password)), "cut {cut}");
        }
    }
    assert_eq!(parse_basic(full), Some(("alice".to_owned(), b"secret".to_vec())));
}

#[test]
fn parse_basic_then_verify_round_trip() {
    let credentials = kinds();
    for &(user, right, wrong) in KIND_CASES {
        let (parsed_user, password) = parse_basic(&header(&format!("{user}:{right}"))).unwrap();
        assert!(credentials.verify(&parsed_user, &password), "{user}");
        let (parsed_user, password) = parse_basic(&header(&format!("{user}:{wrong}"))).unwrap();
        assert!(!credentials.verify(&parsed_user, &password), "{user}");
    }
}

// ---------------------------------------------------------------------------------------------
// Challenge

#[test]
fn www_authenticate_quotes_the_realm() {
    assert_eq!(www_authenticate(DEFAULT_REALM), "Basic realm=\"\"");
    assert_eq!(
        www_authenticate("Authentication Required - foo"),
        "Basic realm=\"Authentication Required - foo\""
    );
    assert_eq!(www_authenticate("a\"b\\c"), "Basic realm=\"a\\\"b\\\\c\"");
    assert_eq!(www_authenticate("\"\""), "Basic realm=\"\\\"\\\"\"");
}

#[test]
fn www_authenticate_never_emits_an_unsafe_header() {
    assert_eq!(
        www_authenticate("x\r\nSet-Cookie: a=b"),
        "Basic realm=\"x??Set-Cookie: a=b\""
    );
    assert_eq!(www_authenticate("tab\there\0"), "Basic realm=\"tab?here?\"");
    assert_eq!(www_authenticate("Zürich"), "Basic realm=\"Z?rich\"");
    assert_eq!(www_authenticate("\u{7f}"), "Basic realm=\"?\"");
    let long = "r".repeat(MAX_REALM_LEN + 10);
    assert_eq!(
        www_authenticate(&long),
        format!("Basic realm=\"{}\"", "r".repeat(MAX_REALM_LEN))
    );
    let quotes = "\"".repeat(MAX_REALM_LEN + 1);
    let value = www_authenticate(&quotes);
    assert_eq!(value, format!("Basic realm=\"{}\"", "\\\"".repeat(MAX_REALM_LEN)));
    assert!(value.bytes().all(|byte| (0x20..=0x7e).contains(&byte)));
}

#[test]
fn validate_realm_matches_what_www_authenticate_keeps() {
    assert_eq!(validate_realm(""), Ok(()));
    assert_eq!(validate_realm("Authentication Required - foo"), Ok(()));
    assert_eq!(validate_realm("quote \" and \\ are escaped"), Ok(()));
    assert_eq!(validate_realm(&"r".repeat(MAX_REALM_LEN)), Ok(()));
    assert_eq!(
        validate_realm(&"r".repeat(MAX_REALM_LEN + 1)),
        Err(RealmError::TooLong { max: MAX_REALM_LEN })
    );
    for realm in ["a\tb", "a\nb", "Zürich", "\u{7f}"] {
        assert_eq!(validate_realm(realm), Err(RealmError::NotPrintableAscii), "{realm:?}");
    }
    assert_eq!(
        RealmError::TooLong { max: 256 }.to_string(),
        "the realm is longer than 256 characters"
    );
    assert_eq!(
        RealmError::NotPrintableAscii.to_string(),
        "the realm contains a character outside printable ASCII"
    );
}

// ---------------------------------------------------------------------------------------------
// Every password length for the kinds verified through crypt3_rs

#[test]
fn md5_crypt_apr1_and_des_match_openssl_and_mkpasswd_at_every_length() {
    const LENGTHS: &[u8] = include_bytes!("testdata/lengths.htpasswd");
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789ABCD";
    let credentials = Credentials::parse_auth_file(LENGTHS).unwrap();
    assert_eq!(credentials.len(), 41 * 2 + 11);
    for (kind, max) in [("apr1", 40), ("md5", 40), ("des", 10)] {
        for n in 0..=max {
            let user = format!("{kind}-{n}");
            let password = &ALPHABET[..n];
            assert!(credentials.verify(&user, password), "{user}");
            // Change the first byte: DES reads only 8, so a change past the 8th would still match.
            let mut wrong = password.to_vec();
            match wrong.first_mut() {
                Some(first) => *first = b'#',
                None => wrong.push(b'#'),
            }
            assert!(!credentials.verify(&user, &wrong), "{user} with a wrong password");
        }
    }
}
