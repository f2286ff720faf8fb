use super::*;
use http::header::{HeaderName, HeaderValue};
use std::net::Ipv4Addr;

fn headers(list: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in list {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn facts<'a>(headers: &'a HeaderMap, request_uri: &'a str) -> ClientRequestFacts<'a> {
    ClientRequestFacts {
        method: &Method::GET,
        scheme: Scheme::Https,
        host: "App.Example.com:8443",
        request_uri,
        headers,
        client_addr: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        forwarded_for: "203.0.113.7",
        request_id: "req-1",
    }
}

fn any(_: u8) -> bool {
    true
}

fn value(variable: &str, facts: &ClientRequestFacts<'_>) -> Option<String> {
    Variable::from_name(variable)
        .unwrap()
        .value(facts)
        .map(|v| String::from_utf8(v.into_owned()).unwrap())
}

fn lit(text: &str) -> Part {
    Part::Literal(text.to_owned())
}

fn var(v: Variable) -> Part {
    Part::Variable(v)
}

#[test]
fn parses_plain_and_braced_variables_with_maximal_names() {
    let t = NginxTemplate::parse("a$remote_user-${http_x_y}b$http_x-y", any).unwrap();
    assert_eq!(
        t.parts(),
        &[
            lit("a"),
            var(Variable::RemoteUser),
            lit("-"),
            var(Variable::Header("x_y".into())),
            lit("b"),
            var(Variable::Header("x".into())),
            lit("-y"),
        ]
    );
    assert!(t.has_variables());
    assert_eq!(t.as_literal(), None);
}

#[test]
fn variable_names_are_case_insensitive_and_aliases_resolve() {
    let t = NginxTemplate::parse(
        "$HTTP_Authorization$Best_Http_Host$query_string$pass_access_scheme",
        any,
    )
    .unwrap();
    assert_eq!(
        t.parts(),
        &[
            var(Variable::Header("authorization".into())),
            var(Variable::HttpHost),
            var(Variable::Args),
            var(Variable::Scheme),
        ]
    );
}

#[test]
fn literal_only_template() {
    let t = NginxTemplate::parse("abc", any).unwrap();
    assert_eq!(t.parts(), &[lit("abc")]);
    assert!(!t.has_variables());
    assert_eq!(t.as_literal().as_deref(), Some("abc"));
    assert_eq!(NginxTemplate::parse("", any).unwrap().parts(), &[] as &[Part]);
}

#[test]
fn refuses_malformed_variables_with_positions() {
    let cases: &[(&str, TemplateError)] = &[
        ("ab$", TemplateError::DanglingDollar { at: 2 }),
        ("a$-b", TemplateError::DanglingDollar { at: 1 }),
        ("$ x", TemplateError::DanglingDollar { at: 0 }),
        ("x${host", TemplateError::UnclosedBrace { at: 1 }),
        ("${}", TemplateError::BadVariableName { at: 0 }),
        ("${a-b}", TemplateError::BadVariableName { at: 0 }),
        (
            "/$1",
            TemplateError::Capture {
                at: 1,
                name: "1".into(),
            },
        ),
        (
            "${2x}",
            TemplateError::Capture {
                at: 0,
                name: "2x".into(),
            },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(NginxTemplate::parse(text, any).unwrap_err(), *expected, "{text}");
    }
}

#[test]
fn refuses_variables_it_cannot_evaluate_and_says_which() {
    for (text, name) in [
        ("$foo", "foo"),
        ("$request_id", "request_id"),
        ("$http_", "http_"),
        ("$cookie_", "cookie_"),
        ("$arg_", "arg_"),
        ("$URI", "uri"),
        ("$document_uri", "document_uri"),
        ("$server_name", "server_name"),
    ] {
        match NginxTemplate::parse(text, any).unwrap_err() {
            TemplateError::Unsupported { name: got, .. } => assert_eq!(got, name),
            other => panic!("{text}: {other:?}"),
        }
    }
    let message = NginxTemplate::parse("$uri", any).unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "$uri cannot be evaluated by ssegate (it is nginx's decoded, normalised path, which ssegate does not \
             reproduce: use $request_uri); the variables it evaluates are {SUPPORTED_VARIABLES}"
        )
    );
}

#[test]
fn limits_variable_count_and_name_length() {
    let sixteen = "$host".repeat(MAX_TEMPLATE_VARIABLES);
    assert!(NginxTemplate::parse(&sixteen, any).is_ok());
    let seventeen = "$host".repeat(MAX_TEMPLATE_VARIABLES + 1);
    assert_eq!(
        NginxTemplate::parse(&seventeen, any).unwrap_err(),
        TemplateError::TooManyVariables {
            max: MAX_TEMPLATE_VARIABLES
        }
    );
    let longest = format!("$http_{}", "a".repeat(MAX_VARIABLE_NAME_LEN - 5));
    assert!(NginxTemplate::parse(&longest, any).is_ok());
    let too_long = format!("x${{http_{}}}", "a".repeat(MAX_VARIABLE_NAME_LEN - 4));
    assert_eq!(
        NginxTemplate::parse(&too_long, any).unwrap_err(),
        TemplateError::VariableNameTooLong {
            at: 1,
            max: MAX_VARIABLE_NAME_LEN
        }
    );
}

#[test]
fn literal_bytes_are_checked() {
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    assert_eq!(
        NginxTemplate::parse("ab.c", alnum).unwrap_err(),
        TemplateError::BadCharacter {
            at: 2,
            what: "'.'".into()
        }
    );
    assert_eq!(
        NginxTemplate::parse("a\tb", alnum).unwrap_err(),
        TemplateError::BadCharacter {
            at: 1,
            what: "0x09".into()
        }
    );
    assert_eq!(
        NginxTemplate::parse("aé", alnum).unwrap_err(),
        TemplateError::BadCharacter {
            at: 1,
            what: "0xC3".into()
        }
    );
    // Variable names are not literal bytes.
    assert_eq!(
        NginxTemplate::parse("a${host}_$http_x", alnum).unwrap_err(),
        TemplateError::BadCharacter {
            at: 8,
            what: "'_'".into()
        }
    );
    assert_eq!(NginxTemplate::parse("a${host}$http_x", alnum).unwrap().parts().len(), 3);
}

#[test]
fn every_truncation_and_every_byte_is_handled_without_panic() {
    let text = "https://$host:8443/a/${http_x_y}?u=$scheme://$http_host$request_uri&c=$cookie__oauth2_proxy";
    for end in 0..=text.len() {
        let _ = NginxTemplate::parse(&text[..end], any);
    }
    for b in 0..=255u8 {
        let bytes = [b'a', b'$', b, b'{', b'$', b'}', b];
        let text = String::from_utf8_lossy(&bytes);
        let _ = NginxTemplate::parse(&text, is_uri_byte);
    }
}

#[test]
fn header_variables_join_lines_and_match_underscores() {
    let h = headers(&[
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-for", "10.0.0.2"),
        ("x_user", "alice"),
        ("cookie", "a=1"),
        ("cookie", "b=2"),
        ("authorization", "Bearer t"),
    ]);
    let f = facts(&h, "/");
    assert_eq!(value("http_x_forwarded_for", &f).as_deref(), Some("10.0.0.1, 10.0.0.2"));
    assert_eq!(value("http_x_user", &f).as_deref(), Some("alice"));
    assert_eq!(value("http_cookie", &f).as_deref(), Some("a=1; b=2"));
    assert_eq!(value("http_authorization", &f).as_deref(), Some("Bearer t"));
    assert_eq!(value("http_x_missing", &f), None);
    // $http_host is the Host as sent, from the facts (HTTP/2 has no header).
    assert_eq!(value("http_host", &f).as_deref(), Some("App.Example.com:8443"));
}

#[test]
fn host_is_lower_case_without_port_or_final_dot() {
    for (sent, host) in [
        ("App.Example.COM.:8443", "app.example.com"),
        ("app.example.com", "app.example.com"),
        ("[::1]:8080", "[::1]"),
        ("[::1]", "[::1]"),
        ("10.0.0.1:80", "10.0.0.1"),
        ("", ""),
    ] {
        assert_eq!(host_without_port(sent), host, "{sent}");
    }
    let h = HeaderMap::new();
    let mut f = facts(&h, "/");
    assert_eq!(value("host", &f).as_deref(), Some("app.example.com"));
    f.host = "";
    assert_eq!(value("host", &f), None);
    assert_eq!(value("http_host", &f), None);
}

#[test]
fn cookie_variable_follows_nginx() {
    let h = headers(&[
        ("cookie", "_oauth2_proxy_csrf=x; _oauth2_proxy = abc ;other=1"),
        ("cookie", "Late=2; flag; empty=; sp=a b "),
    ]);
    let f = facts(&h, "/");
    assert_eq!(value("cookie__oauth2_proxy", &f).as_deref(), Some("abc "));
    assert_eq!(value("cookie__oauth2_proxy_csrf", &f).as_deref(), Some("x"));
    assert_eq!(value("cookie_other", &f).as_deref(), Some("1"));
    assert_eq!(
        value("cookie_late", &f).as_deref(),
        Some("2"),
        "names compare without case"
    );
    assert_eq!(value("cookie_flag", &f), None, "no `=`");
    assert_eq!(value("cookie_empty", &f).as_deref(), Some(""));
    assert_eq!(value("cookie_sp", &f).as_deref(), Some("a b "));
    assert_eq!(value("cookie_missing", &f), None);
    assert_eq!(value("cookie_oauth2_proxy", &f), None, "a suffix is not the name");
}

#[test]
fn cookie_variable_takes_the_first_match_over_lines() {
    let h = headers(&[("cookie", "s=one"), ("cookie", "s=two")]);
    assert_eq!(value("cookie_s", &facts(&h, "/")).as_deref(), Some("one"));
}

#[test]
fn arg_variable_follows_nginx() {
    let h = HeaderMap::new();
    let f = facts(&h, "/p?a=1&ba=2&b=3&E=&last=x%20y&a=9");
    assert_eq!(value("arg_a", &f).as_deref(), Some("1"));
    assert_eq!(value("arg_b", &f).as_deref(), Some("3"));
    assert_eq!(value("arg_ba", &f).as_deref(), Some("2"));
    assert_eq!(value("arg_e", &f).as_deref(), Some(""), "names compare without case");
    assert_eq!(value("arg_last", &f).as_deref(), Some("x%20y"), "raw, not decoded");
    assert_eq!(value("arg_c", &f), None);
    assert_eq!(value("arg_a", &facts(&h, "/p?a")), None);
    assert_eq!(value("arg_a", &facts(&h, "/p")), None);
    assert_eq!(value("arg_a", &facts(&h, "/p?xa=1")), None);
}

#[test]
fn query_variables() {
    let h = HeaderMap::new();
    let with = facts(&h, "/p?x=1&y=2");
    assert_eq!(value("args", &with).as_deref(), Some("x=1&y=2"));
    assert_eq!(value("is_args", &with).as_deref(), Some("?"));
    let bare = facts(&h, "/p?");
    assert_eq!(value("args", &bare).as_deref(), Some(""));
    assert_eq!(value("is_args", &bare).as_deref(), Some(""));
    let none = facts(&h, "/p");
    assert_eq!(value("args", &none), None);
    assert_eq!(value("is_args", &none).as_deref(), Some(""));
}

#[test]
fn remote_user_follows_nginx_basic_parsing() {
    let user = |authorization: &str| {
        let h = headers(&[("authorization", authorization)]);
        value("remote_user", &facts(&h, "/"))
    };
    // "alice:secret"
    assert_eq!(user("Basic YWxpY2U6c2VjcmV0").as_deref(), Some("alice"));
    assert_eq!(user("basic   YWxpY2U6c2VjcmV0").as_deref(), Some("alice"));
    // "al:" needs padding; nginx reads up to `=` and ignores the rest.
    assert_eq!(user("Basic YWw6").as_deref(), Some("al"));
    assert_eq!(user("Basic YWw6==garbage").as_deref(), Some("al"));
    // "alice" (no colon), ":pw" (empty user)
    assert_eq!(user("Basic YWxpY2U="), None);
    assert_eq!(user("Basic OnB3"), None);
    assert_eq!(user("Bearer YWxpY2U6c2VjcmV0"), None);
    assert_eq!(user("Basic"), None);
    assert_eq!(user("Basic "), None);
    assert_eq!(user("Basic !!!!"), None);
    assert_eq!(user("Basic YWxpY"), None, "a length of 4n+1 is not base64");
    assert_eq!(value("remote_user", &facts(&HeaderMap::new(), "/")), None);
}

#[test]
fn simple_variables() {
    let h = HeaderMap::new();
    let mut f = facts(&h, "/a b?c");
    assert_eq!(value("remote_addr", &f).as_deref(), Some("203.0.113.7"));
    assert_eq!(value("request_uri", &f).as_deref(), Some("/a b?c"));
    assert_eq!(value("escaped_request_uri", &f).as_deref(), Some("%2Fa%20b%3Fc"));
    assert_eq!(value("scheme", &f).as_deref(), Some("https"));
    assert_eq!(value("request_method", &f).as_deref(), Some("GET"));
    f.client_addr = "2001:db8::1".parse().unwrap();
    f.scheme = Scheme::Http;
    f.method = &Method::PATCH;
    assert_eq!(value("remote_addr", &f).as_deref(), Some("2001:db8::1"));
    assert_eq!(value("scheme", &f).as_deref(), Some("http"));
    assert_eq!(value("request_method", &f).as_deref(), Some("PATCH"));
}

#[test]
fn escape_uri_matches_set_misc_test_vectors() {
    assert_eq!(escape_uri_component(b"hello world"), "hello%20world");
    assert_eq!(
        escape_uri_component(b"welcometotheworldofnginx"),
        "welcometotheworldofnginx"
    );
    assert_eq!(escape_uri_component(b"+/="), "%2B%2F%3D");
    assert_eq!(
        escape_uri_component(br#""a/b={}:<>;&[]\^"#),
        "%22a%2Fb%3D%7B%7D%3A%3C%3E%3B%26%5B%5D%5C%5E"
    );
    assert_eq!(escape_uri_component("你好".as_bytes()), "%E4%BD%A0%E5%A5%BD");
    assert_eq!(escape_uri_component(b""), "");
}

#[test]
fn escape_uri_matches_set_misc_table_for_every_byte() {
    // set-misc-nginx-module's `uri` table for `set_escape_uri`, as in its
    // source: a set bit means "escape".
    const TABLE: [u32; 8] = [
        0xffffffff, 0xfc00886d, 0x78000000, 0xa8000000, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
    ];
    for b in 0..=255u8 {
        let escaped = TABLE[(b >> 5) as usize] & (1 << (b & 0x1f)) != 0;
        let expected = if escaped {
            format!("%{b:02X}")
        } else {
            (b as char).to_string()
        };
        assert_eq!(escape_uri_component(&[b]), expected, "byte 0x{b:02X}");
    }
}

#[test]
fn uri_safe_evaluation_escapes_only_what_a_uri_cannot_hold() {
    let h = headers(&[("x-v", "a b\"c<d>|{e}#f^g`h\\i%41/?&=é")]);
    let f = facts(&h, "/events?x=1&y=/z");
    let t = NginxTemplate::parse("/v?h=$http_x_v&u=$request_uri&m=$http_x_missing.", any).unwrap();
    let mut out = String::new();
    t.evaluate_uri(&f, &mut out);
    assert_eq!(
        out,
        "/v?h=a%20b%22c%3Cd%3E%7C%7Be%7D%23f%5Eg%60h%5Ci%41/?&=%C3%A9&u=/events?x=1&y=/z&m=."
    );
    for b in 0..=255u8 {
        let mut out = String::new();
        push_uri_safe(&mut out, &[b]);
        let expected = if is_uri_byte(b) {
            (b as char).to_string()
        } else {
            format!("%{b:02X}")
        };
        assert_eq!(out, expected, "0x{b:02X}");
        assert!(format!("/{out}").parse::<http::Uri>().is_ok(), "0x{b:02X}");
    }
}

#[test]
fn header_name_matching_is_nginx_s() {
    assert!(nginx_header_name_matches("x-auth-request-user", "X_Auth_Request_User"));
    assert!(nginx_header_name_matches("X_AUTH", "x-auth"));
    assert!(!nginx_header_name_matches("x-auth", "x-auth-"));
    assert!(!nginx_header_name_matches("x-auth", "x.auth"));
    assert!(!nginx_header_name_matches("", "a"));
}
