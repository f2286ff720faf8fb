use super::*;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

fn annotations(list: &[(&str, &str)]) -> Result<Option<ExternalAuthConfig>, AnnotationProblems> {
    let map: HashMap<String, String> = list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    from_annotations(|name| map.get(name).map(String::as_str))
}

fn cfg(list: &[(&str, &str)]) -> ExternalAuthConfig {
    annotations(list).unwrap().unwrap()
}

fn invalid(list: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let problems = annotations(list).unwrap_err();
    assert!(problems.unsupported.is_empty(), "{problems:?}");
    problems.invalid
}

fn one_invalid(list: &[(&str, &str)]) -> (&'static str, String) {
    let mut all = invalid(list);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

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
        host: "app.example.com",
        request_uri,
        headers,
        client_addr: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        forwarded_for: "203.0.113.7",
        request_id: "abc",
    }
}

fn list(map: &HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn named(values: &[(HeaderName, HeaderValue)]) -> Vec<(String, String)> {
    values
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect()
}

const OAUTH2_PROXY: &[(&str, &str)] = &[
    (
        "auth-url",
        "http://oauth2-proxy.auth.svc.cluster.local:4180/oauth2/auth",
    ),
    (
        "auth-signin",
        "https://auth.example.com/oauth2/start?rd=https://$host$escaped_request_uri",
    ),
    (
        "auth-response-headers",
        "X-Auth-Request-User, X-Auth-Request-Email, Authorization",
    ),
];

fn sse_client() -> HeaderMap {
    headers(&[
        ("host", "app.example.com"),
        ("user-agent", "Mozilla/5.0"),
        ("accept", "text/event-stream"),
        ("cookie", "_oauth2_proxy=SESSION"),
        ("last-event-id", "41"),
        ("connection", "keep-alive"),
        ("x-forwarded-proto", "http"),
        ("x-original-url", "http://evil.example/"),
        ("x-real-ip", "10.9.9.9"),
        ("content-length", "0"),
        ("x-request-id", "abc"),
    ])
}

// ---- annotations and validation ----

#[test]
fn no_auth_url_means_no_external_auth() {
    assert_eq!(annotations(&[]), Ok(None));
    assert_eq!(
        annotations(&[("auth-signin", "https://x/"), ("auth-snippet", "return 200;")]),
        Ok(None)
    );
}

#[test]
fn oauth2_proxy_annotations() {
    let c = cfg(OAUTH2_PROXY);
    assert_eq!(c.url().scheme(), Scheme::Http);
    assert_eq!(
        c.url().fixed_uri().unwrap(),
        "http://oauth2-proxy.auth.svc.cluster.local:4180/oauth2/auth"
    );
    assert_eq!(
        c.url().fixed_authority().unwrap().as_str(),
        "oauth2-proxy.auth.svc.cluster.local:4180"
    );
    assert_eq!(c.url().fixed_port(), Some(4180));
    assert_eq!(c.method(), Method::GET);
    assert!(!c.method_is_set());
    assert_eq!(c.signin_redirect_param(), "rd");
    assert_eq!(
        c.response_headers(),
        &[
            HeaderName::from_static("x-auth-request-user"),
            HeaderName::from_static("x-auth-request-email"),
            header::AUTHORIZATION
        ]
    );
    assert_eq!(c.request_redirect(), None);
    assert_eq!(c.cache(), None);
    assert!(!c.always_set_cookie());
    assert_eq!(c.keepalive(), KeepaliveConfig::default());
    assert_eq!(
        c.keepalive(),
        KeepaliveConfig {
            connections: 0,
            requests: 1000,
            idle_timeout: Duration::from_secs(60)
        }
    );
}

#[test]
fn ingress_nginx_annotation_test_cases() {
    // authreq/main_test.go TestAnnotations.
    assert_eq!(one_invalid(&[("auth-url", "")]), ("auth-url", "is empty".into()));
    assert_eq!(
        one_invalid(&[("auth-url", "bar")]),
        ("auth-url", "must be an absolute http:// or https:// URL".into())
    );
    assert_eq!(
        one_invalid(&[("auth-url", "http://")]),
        ("auth-url", "names no host".into())
    );
    assert_eq!(
        one_invalid(&[("auth-url", "http://foo..bar.com")]),
        ("auth-url", "has `..` in its host".into())
    );
    let url = "http://bar.foo.com/external-auth/auth?allowed_groups=snow-group,rain-group";
    let signin = "http://bar.foo.com/external-auth/start?rd=https://$host$escaped_request_uri";
    let c = cfg(&[("auth-url", url), ("auth-signin", signin)]);
    assert_eq!(c.url().fixed_uri().unwrap(), url);
    let c = cfg(&[("auth-url", url), ("auth-signin", signin), ("auth-method", "POST")]);
    assert_eq!(c.method(), Method::POST);
    let c = cfg(&[("auth-url", url), ("auth-method", "GET")]);
    assert!(c.method_is_set());
    let c = cfg(&[
        ("auth-url", url),
        ("auth-request-redirect", "http://foo.com/redirect-me"),
    ]);
    assert_eq!(c.request_redirect().unwrap(), "http://foo.com/redirect-me");
    let c = cfg(&[
        ("auth-url", url),
        ("auth-signin-redirect-param", "origUrl"),
        ("auth-always-set-cookie", "true"),
    ]);
    assert_eq!(c.signin_redirect_param(), "origUrl");
    assert!(c.always_set_cookie());
    // ingress-nginx accepts `$foo$bar` as a cache key; nginx would fail on
    // the unknown variables, and ssegate refuses them.
    let (name, message) = one_invalid(&[("auth-url", url), ("auth-cache-key", "$foo$bar")]);
    assert_eq!(name, "auth-cache-key");
    assert!(
        message.starts_with("the cache key: $foo cannot be evaluated by ssegate;"),
        "{message}"
    );
}

#[test]
fn unsupported_annotations_are_reported_apart() {
    let problems = annotations(&[
        ("auth-url", "http://auth/"),
        ("auth-snippet", "proxy_set_header My-Custom-Header 42;"),
        ("auth-proxy-set-headers", "default/auth-headers"),
        ("auth-method", "FETCH"),
    ])
    .unwrap_err();
    assert_eq!(
        problems.unsupported,
        vec![UNSUPPORTED_ANNOTATIONS[0], UNSUPPORTED_ANNOTATIONS[1]]
    );
    assert_eq!(problems.invalid.len(), 1);
    assert_eq!(problems.invalid[0].0, "auth-method");
    let problems = annotations(&[("auth-url", "http://auth/"), ("auth-snippet", "x")]).unwrap_err();
    assert!(problems.invalid.is_empty());
    assert_eq!(problems.unsupported, vec![UNSUPPORTED_ANNOTATIONS[0]]);
    // Blank counts as absent.
    assert!(annotations(&[("auth-url", "http://auth/"), ("auth-snippet", " \n ")]).is_ok());
}

#[test]
fn response_headers_as_ingress_nginx_splits_them() {
    // authreq/main_test.go TestHeaderAnnotations.
    let parsed = |value: &str| {
        cfg(&[("auth-url", "http://goog.url"), ("auth-response-headers", value)])
            .response_headers()
            .iter()
            .map(|h| h.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(parsed("h1"), ["h1"]);
    assert_eq!(parsed(""), [] as [&str; 0]);
    assert_eq!(parsed("  "), [] as [&str; 0]);
    assert_eq!(parsed("1,2"), ["1", "2"]);
    assert_eq!(parsed(",1,,2,"), ["1", "2"]);
    assert_eq!(
        parsed("X-User, x-user, X_USER, X-Email"),
        ["x-user", "x-email"],
        "nginx's names"
    );
    for bad in ["1 2", "1+2", "X.User", "Ü"] {
        let (name, message) = one_invalid(&[("auth-url", "http://goog.url"), ("auth-response-headers", bad)]);
        assert_eq!(name, "auth-response-headers");
        assert!(message.starts_with("entry 1 is not a header name"), "{message}");
    }
    for forbidden in [
        "Content-Length",
        "host",
        "Transfer_Encoding",
        "connection",
        "Upgrade",
        "TE",
    ] {
        assert_eq!(
            one_invalid(&[("auth-url", "http://goog.url"), ("auth-response-headers", forbidden)]).1,
            format!(
                "names {forbidden}, which controls the request's routing or framing and is never taken from the \
                 auth service"
            )
        );
    }
    let many = (0..=MAX_RESPONSE_HEADERS).map(|i| format!("h{i}")).collect::<Vec<_>>();
    assert_eq!(
        one_invalid(&[
            ("auth-url", "http://goog.url"),
            ("auth-response-headers", &many.join(","))
        ])
        .1,
        "names more than 32 headers"
    );
    let long = "h".repeat(MAX_HEADER_NAME_LEN + 1);
    assert!(
        one_invalid(&[("auth-url", "http://goog.url"), ("auth-response-headers", &long)])
            .1
            .starts_with("entry 1 ")
    );
}

#[test]
fn cache_annotations() {
    // authreq/main_test.go TestCacheDurationAnnotations, with a key (the
    // durations do nothing without one).
    let durations = |value: &str| {
        cfg(&[
            ("auth-url", "http://goog.url"),
            ("auth-cache-key", "$http_authorization"),
            ("auth-cache-duration", value),
        ])
        .cache()
        .unwrap()
        .durations()
        .clone()
    };
    assert_eq!(durations(""), CacheDurations::default());
    assert_eq!(durations("  "), CacheDurations::default());
    assert_eq!(durations("5m").for_status(302), Duration::from_secs(300));
    assert_eq!(
        durations("200 202 10m, 401 5m").for_status(202),
        Duration::from_secs(600)
    );
    assert_eq!(durations(",5m,,401 10m,").for_status(401), Duration::from_secs(600));
    for bad in ["200", "5m, xaxax", "5m 200"] {
        let (name, _) = one_invalid(&[
            ("auth-url", "http://goog.url"),
            ("auth-cache-key", "$http_authorization"),
            ("auth-cache-duration", bad),
        ]);
        assert_eq!(name, "auth-cache-duration", "{bad}");
    }
    // Without a key there is no cache, but a bad duration is still refused.
    assert_eq!(
        cfg(&[("auth-url", "http://goog.url"), ("auth-cache-duration", "1m")]).cache(),
        None
    );
    assert_eq!(
        one_invalid(&[("auth-url", "http://goog.url"), ("auth-cache-duration", "200")]).0,
        "auth-cache-duration"
    );
}

#[test]
fn keepalive_annotations() {
    // authreq/main_test.go TestKeepaliveAnnotations, where values it reads.
    let keepalive = |list: &[(&str, &str)]| {
        let mut all = vec![("auth-url", "http://goog.url")];
        all.extend_from_slice(list);
        if let Some(i) = all.iter().position(|(k, _)| *k == "url") {
            let url = all.remove(i).1;
            all[0].1 = url;
        }
        cfg(&all).keepalive()
    };
    let ka = |connections, requests, timeout| KeepaliveConfig {
        connections,
        requests,
        idle_timeout: Duration::from_secs(timeout),
    };
    assert_eq!(
        keepalive(&[
            ("auth-keepalive", "5"),
            ("auth-keepalive-share-vars", "false"),
            ("auth-keepalive-requests", "500"),
            ("auth-keepalive-timeout", "50"),
        ]),
        ka(5, 500, 50)
    );
    assert_eq!(keepalive(&[]), ka(0, 1000, 60));
    assert_eq!(
        keepalive(&[("url", "http://$host:5000/a/b"), ("auth-keepalive", "5")]),
        ka(0, 1000, 60),
        "variable in host"
    );
    assert_eq!(
        keepalive(&[("url", "http://goog.url:5000/$request_uri"), ("auth-keepalive", "5")]),
        ka(5, 1000, 60),
        "variable in path"
    );
    assert_eq!(keepalive(&[("auth-keepalive", "-2")]), ka(0, 1000, 60));
    assert_eq!(
        keepalive(&[("auth-keepalive", "5"), ("auth-keepalive-requests", "-1")]),
        ka(0, 0, 60)
    );
    assert_eq!(
        keepalive(&[("auth-keepalive", "5"), ("auth-keepalive-timeout", "-1")]),
        ka(0, 1000, 0)
    );
    assert_eq!(
        keepalive(&[("auth-keepalive", "5"), ("auth-keepalive-share-vars", "True")]),
        ka(5, 1000, 60)
    );
    // ingress-nginx falls back to defaults with a warning; ssegate refuses.
    for (name, value, message) in [
        ("auth-keepalive", "x", "is not an integer"),
        ("auth-keepalive-requests", "dummy", "is not an integer"),
        ("auth-keepalive-timeout", "1.5", "is not an integer"),
        ("auth-keepalive-share-vars", "yes", "is not true or false"),
        ("auth-always-set-cookie", "on", "is not true or false"),
        ("auth-keepalive", "1025", "is larger than 1024"),
        ("auth-keepalive-requests", "100001", "is larger than 100000"),
        ("auth-keepalive-timeout", "3601", "is larger than 3600"),
    ] {
        assert_eq!(
            one_invalid(&[("auth-url", "http://goog.url"), (name, value)]),
            (name, message.to_owned())
        );
    }
}

#[test]
fn methods_are_ingress_nginx_s_without_connect() {
    for m in AUTH_METHODS {
        assert_eq!(
            cfg(&[("auth-url", "http://a/"), ("auth-method", m)]).method().as_str(),
            *m
        );
    }
    for bad in ["CONNECT", "get", "FETCH", "GET POST"] {
        assert_eq!(
            one_invalid(&[("auth-url", "http://a/"), ("auth-method", bad)]),
            (
                "auth-method",
                "must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or TRACE (CONNECT asks for a tunnel, not \
                 an answer)"
                    .into()
            )
        );
    }
}

#[test]
fn auth_urls_are_validated() {
    let error = |url: &str| AuthUrl::parse(url).unwrap_err();
    use ExternalAuthError as E;
    assert_eq!(error("ftp://auth/"), E::UrlScheme);
    assert_eq!(error("//auth/"), E::UrlScheme);
    assert_eq!(error("$scheme://auth/"), E::UrlScheme);
    assert_eq!(error("https:/auth"), E::UrlScheme);
    assert_eq!(error("https:///path"), E::UrlNoHost);
    assert_eq!(error("https://?x"), E::UrlNoHost);
    assert_eq!(error("https://user:pw@auth/"), E::UrlUserinfo);
    assert_eq!(error("https://auth:0/"), E::UrlAuthority);
    assert_eq!(error("https://auth:65536/"), E::UrlAuthority);
    assert_eq!(error("https://auth:/"), E::UrlAuthority);
    assert_eq!(error("https://auth:8a/"), E::UrlAuthority);
    assert_eq!(error("https://au!th/"), E::UrlAuthority);
    assert_eq!(error("https://[::1/"), E::UrlAuthority);
    assert_eq!(error("https://[zz]/"), E::UrlAuthority);
    assert_eq!(error("https://[::1]x/"), E::UrlAuthority);
    assert_eq!(error("https://a..b/"), E::UrlDoubleDot);
    assert_eq!(error("https://a/%zz"), E::UrlBadEscape { at: 10 });
    assert_eq!(error("https://a/%4"), E::UrlBadEscape { at: 10 });
    assert_eq!(error("https://$http_x_target/"), E::UrlHostVariable);
    assert_eq!(error("https://$request_uri"), E::UrlHostVariable);
    assert_eq!(
        error("https://a/#frag"),
        E::Template(super::super::nginx_vars::TemplateError::BadCharacter {
            at: 10,
            what: "'#'".into()
        })
    );
    assert_eq!(
        error("https://a/ b"),
        E::Template(super::super::nginx_vars::TemplateError::BadCharacter {
            at: 10,
            what: "0x20".into()
        })
    );
    assert_eq!(error(""), E::Empty);
    let long = format!("https://a/{}", "x".repeat(MAX_URL_LEN - 10));
    assert!(AuthUrl::parse(&long).is_ok());
    assert_eq!(error(&format!("{long}x")), E::TooLong { max: MAX_URL_LEN });
}

#[test]
fn auth_url_forms() {
    let fixed = |url: &str| AuthUrl::parse(url).unwrap().fixed_uri().unwrap().to_string();
    assert_eq!(fixed("https://auth.example.com"), "https://auth.example.com/");
    assert_eq!(fixed("HTTPS://auth.example.com?x=1"), "https://auth.example.com/?x=1");
    assert_eq!(
        fixed("http://10.0.0.5:9091/api/verify"),
        "http://10.0.0.5:9091/api/verify"
    );
    assert_eq!(
        fixed("http://[fd00::5]:9091/api/verify"),
        "http://[fd00::5]:9091/api/verify"
    );
    assert_eq!(fixed("http://auth/a%2Fb?x=%20"), "http://auth/a%2Fb?x=%20");
    let ports = |url: &str| AuthUrl::parse(url).unwrap().fixed_port();
    assert_eq!(ports("https://auth"), Some(443));
    assert_eq!(ports("http://auth"), Some(80));
    assert_eq!(ports("http://auth:8080"), Some(8080));
    assert_eq!(ports("http://$host/x"), None);
}

#[test]
fn host_header_is_the_auth_host_without_port() {
    let h = HeaderMap::new();
    let f = facts(&h, "/events");
    let host = |url: &str| AuthUrl::parse(url).unwrap().host_header(&f).unwrap();
    assert_eq!(
        host("http://oauth2-proxy.auth.svc:4180/oauth2/auth"),
        "oauth2-proxy.auth.svc"
    );
    assert_eq!(host("http://[fd00::5]:9091/api/verify"), "[fd00::5]");
    assert_eq!(host("https://$host/oauth2/auth"), "app.example.com");
    assert_eq!(host("https://$host:8443/oauth2/auth"), "app.example.com");
    assert_eq!(host("https://auth.$host:8443/x"), "auth.app.example.com");
    let mut f2 = f;
    f2.host = "App.Example.com:8443";
    let url = AuthUrl::parse("https://$http_host/oauth2/auth").unwrap();
    assert_eq!(url.host_header(&f2).unwrap(), "App.Example.com:8443");
    assert_eq!(url.uri(&f2).unwrap(), "https://App.Example.com:8443/oauth2/auth");
}

// ---- the subrequest ----

#[test]
fn oauth2_proxy_subrequest_exact_headers() {
    let c = cfg(OAUTH2_PROXY);
    let client = sse_client();
    let request = auth_request(&c, &facts(&client, "/events?topic=a")).unwrap();
    assert_eq!(request.method(), Method::GET);
    assert_eq!(
        request.uri(),
        "http://oauth2-proxy.auth.svc.cluster.local:4180/oauth2/auth"
    );
    assert_eq!(
        list(request.headers()),
        pairs(&[
            ("x-request-id", "abc"),
            ("host", "oauth2-proxy.auth.svc.cluster.local"),
            ("x-original-url", "https://app.example.com/events?topic=a"),
            ("x-original-method", "GET"),
            ("x-sent-from", "nginx-ingress-controller"),
            ("x-real-ip", "203.0.113.7"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-auth-request-redirect", "/events?topic=a"),
            ("user-agent", "Mozilla/5.0"),
            ("accept", "text/event-stream"),
            ("cookie", "_oauth2_proxy=SESSION"),
            ("last-event-id", "41"),
        ])
    );
}

#[test]
fn endpoints_to_connect_to() {
    let client = HeaderMap::new();
    let f = facts(&client, "/");
    let endpoint_of = |url: &str| {
        let request = auth_request(&cfg(&[("auth-url", url)]), &f).unwrap();
        endpoint(&request).map(|(s, h, p)| (s, h.to_owned(), p))
    };
    assert_eq!(
        endpoint_of("http://oauth2-proxy.auth.svc:4180/oauth2/auth"),
        Some((Scheme::Http, "oauth2-proxy.auth.svc".into(), 4180))
    );
    assert_eq!(
        endpoint_of("https://auth.example.com/x"),
        Some((Scheme::Https, "auth.example.com".into(), 443))
    );
    assert_eq!(
        endpoint_of("http://[fd00::5]/x"),
        Some((Scheme::Http, "[fd00::5]".into(), 80))
    );
    assert_eq!(
        endpoint_of("https://$host:8443/x"),
        Some((Scheme::Https, "app.example.com".into(), 8443))
    );
}

#[test]
fn auth_method_adds_original_uri_and_scheme() {
    let c = cfg(&[
        ("auth-url", "https://authelia.auth.svc:9091/api/authz/auth-request"),
        ("auth-method", "POST"),
        ("auth-request-redirect", "https://app.example.com/"),
    ]);
    let client = headers(&[
        ("authorization", "Basic YWxpY2U6c2VjcmV0"),
        ("x-original-uri", "/admin"),
        ("x-scheme", "http"),
        ("content-type", "application/json"),
        ("content-length", "17"),
        ("transfer-encoding", "chunked"),
    ]);
    let mut f = facts(&client, "/x?y");
    f.method = &Method::PUT;
    f.scheme = Scheme::Http;
    f.forwarded_for = "198.51.100.1, 203.0.113.7";
    let request = auth_request(&c, &f).unwrap();
    assert_eq!(request.method(), Method::POST);
    assert_eq!(request.uri(), "https://authelia.auth.svc:9091/api/authz/auth-request");
    assert_eq!(
        list(request.headers()),
        pairs(&[
            ("x-request-id", "abc"),
            ("x-original-uri", "/x?y"),
            ("x-scheme", "http"),
            ("host", "authelia.auth.svc"),
            ("x-original-url", "http://app.example.com/x?y"),
            ("x-original-method", "PUT"),
            ("x-sent-from", "nginx-ingress-controller"),
            ("x-real-ip", "203.0.113.7"),
            ("x-forwarded-for", "198.51.100.1, 203.0.113.7"),
            ("x-auth-request-redirect", "https://app.example.com/"),
            ("authorization", "Basic YWxpY2U6c2VjcmV0"),
            ("content-type", "application/json"),
        ])
    );
}

#[test]
fn client_copies_of_original_uri_and_scheme_are_dropped_without_auth_method() {
    let c = cfg(&[("auth-url", "http://auth/check")]);
    let client = headers(&[("x-original-uri", "/admin"), ("x-scheme", "https"), ("x-ok", "1")]);
    let request = auth_request(&c, &facts(&client, "/")).unwrap();
    let names: Vec<_> = request.headers().keys().map(|k| k.as_str().to_owned()).collect();
    assert_eq!(
        names,
        [
            "x-request-id",
            "host",
            "x-original-url",
            "x-original-method",
            "x-sent-from",
            "x-real-ip",
            "x-forwarded-for",
            "x-auth-request-redirect",
            "x-ok"
        ]
    );
}

#[test]
fn hop_by_hop_and_framing_headers_are_not_passed() {
    let c = cfg(&[("auth-url", "http://auth/check")]);
    let client = headers(&[
        ("connection", "Upgrade, X-Private, close"),
        ("connection", " x-other "),
        ("upgrade", "websocket"),
        ("x-private", "p"),
        ("x-other", "o"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("te", "trailers"),
        ("trailer", "x-t"),
        ("transfer-encoding", "chunked"),
        ("content-length", "10"),
        ("expect", "100-continue"),
        ("proxy-authorization", "Basic eA=="),
        ("x-multi", "1"),
        ("x-multi", "2"),
        ("accept", "*/*"),
    ]);
    let request = auth_request(&c, &facts(&client, "/")).unwrap();
    let passed: Vec<_> = list(request.headers()).into_iter().skip(8).collect();
    assert_eq!(
        passed,
        pairs(&[
            ("proxy-authorization", "Basic eA=="),
            ("x-multi", "1"),
            ("x-multi", "2"),
            ("accept", "*/*"),
        ])
    );
}

#[test]
fn every_header_the_subrequest_sets_replaces_the_client_s() {
    let c = cfg(&[("auth-url", "http://auth/check"), ("auth-method", "GET")]);
    let client = headers(&[
        ("host", "evil"),
        ("x-request-id", "evil"),
        ("x-original-uri", "evil"),
        ("x-scheme", "evil"),
        ("x-original-url", "evil"),
        ("x-original-method", "evil"),
        ("x-sent-from", "evil"),
        ("x-real-ip", "evil"),
        ("x-forwarded-for", "evil"),
        ("x-forwarded-proto", "evil"),
        ("x-auth-request-redirect", "evil"),
    ]);
    let request = auth_request(&c, &facts(&client, "/p")).unwrap();
    assert_eq!(request.headers().len(), 10);
    assert!(request.headers().values().all(|v| v != "evil"));
    assert!(!request.headers().contains_key("x-forwarded-proto"));
}

#[test]
fn empty_request_id_and_forwarded_for_are_not_sent() {
    let c = cfg(&[("auth-url", "http://auth/check")]);
    let client = HeaderMap::new();
    let mut f = facts(&client, "/");
    f.request_id = "";
    f.forwarded_for = "";
    let request = auth_request(&c, &f).unwrap();
    assert!(!request.headers().contains_key("x-request-id"));
    assert!(!request.headers().contains_key("x-forwarded-for"));
    f.request_id = "bad\nid";
    assert_eq!(
        auth_request(&c, &f).unwrap_err(),
        AuthRequestError::HeaderValue { header: "X-Request-ID" }
    );
}

#[test]
fn pomerium_style_url_with_variables() {
    let c = cfg(&[(
        "auth-url",
        "https://verify.corp.example.com/verify?uri=$scheme://$host$request_uri",
    )]);
    assert_eq!(c.url().fixed_uri(), None);
    assert!(c.url().fixed_authority().is_some());
    let client = HeaderMap::new();
    let request = auth_request(&c, &facts(&client, "/events?a=1&b=%20")).unwrap();
    assert_eq!(
        request.uri(),
        "https://verify.corp.example.com/verify?uri=https://app.example.com/events?a=1&b=%20"
    );
    assert_eq!(request.headers()["host"], "verify.corp.example.com");
    // A value a URI cannot hold is escaped rather than sent broken.
    let request = auth_request(&c, &facts(&client, "/e\"v")).unwrap();
    assert_eq!(
        request.uri(),
        "https://verify.corp.example.com/verify?uri=https://app.example.com/e%22v"
    );
}

#[test]
fn url_with_the_client_host() {
    let c = cfg(&[("auth-url", "https://$host/oauth2/auth"), ("auth-keepalive", "10")]);
    assert_eq!(c.keepalive().connections, 0, "ingress-nginx turns keep-alive off");
    let client = HeaderMap::new();
    let request = auth_request(&c, &facts(&client, "/")).unwrap();
    assert_eq!(request.uri(), "https://app.example.com/oauth2/auth");
    assert_eq!(request.headers()["host"], "app.example.com");
    let mut f = facts(&client, "/");
    f.host = "bad host";
    assert_eq!(auth_request(&c, &f).unwrap_err(), AuthRequestError::Uri);
    f.host = "";
    assert_eq!(auth_request(&c, &f).unwrap_err(), AuthRequestError::Uri);
}

#[test]
fn evaluated_url_length_is_limited() {
    let c = cfg(&[("auth-url", "http://auth/check?u=$escaped_request_uri")]);
    let client = HeaderMap::new();
    let long = format!("/{}", "/".repeat(MAX_EVALUATED_URL_LEN / 3));
    assert_eq!(
        auth_request(&c, &facts(&client, &long)).unwrap_err(),
        AuthRequestError::UriTooLong {
            max: MAX_EVALUATED_URL_LEN
        }
    );
}

// ---- sign-in URLs ----

#[test]
fn build_auth_sign_url_matches_ingress_nginx_tests() {
    // template_test.go TestBuildAuthSignURL.
    let rd = "$pass_access_scheme://$http_host$escaped_request_uri";
    for (input, param, output) in [
        ("http://google.com", "rd", format!("http://google.com?rd={rd}")),
        ("http://google.com", "orig", format!("http://google.com?orig={rd}")),
        (
            "http://google.com?cat=0",
            "rd",
            format!("http://google.com?cat=0&rd={rd}"),
        ),
        (
            "http://google.com?cat=0",
            "orig",
            format!("http://google.com?cat=0&orig={rd}"),
        ),
        (
            "http://google.com?cat&rd=$request",
            "rd",
            "http://google.com?cat&rd=$request".into(),
        ),
        (
            "http://google.com?cat&orig=$request",
            "orig",
            "http://google.com?cat&orig=$request".into(),
        ),
    ] {
        assert_eq!(build_auth_sign_url(input, param), output, "{input} {param}");
    }
}

#[test]
fn build_auth_sign_url_reads_the_query_as_go_does() {
    let rd = "$pass_access_scheme://$http_host$escaped_request_uri";
    for (input, output) in [
        ("https://x/?", format!("https://x/??rd={rd}")),
        ("https://x/?rd=", format!("https://x/?rd=&rd={rd}")),
        ("https://x/?rd", format!("https://x/?rd&rd={rd}")),
        ("https://x/?r%64=y", "https://x/?r%64=y".into()),
        ("https://x/?a=1&rd=y", "https://x/?a=1&rd=y".into()),
        ("https://x/?rd=&rd=y", format!("https://x/?rd=&rd=y&rd={rd}")),
        ("https://x/?a;b=1", format!("https://x/?a;b=1?rd={rd}")),
        ("https://x/?rd=%zz", format!("https://x/?rd=%zz?rd={rd}")),
        ("https://x/?RD=y", format!("https://x/?RD=y&rd={rd}")),
        ("https://x/?r+d=y", format!("https://x/?r+d=y&rd={rd}")),
        ("/oauth2/start", format!("/oauth2/start?rd={rd}")),
    ] {
        assert_eq!(build_auth_sign_url(input, "rd"), output, "{input}");
    }
}

fn location(c: &ExternalAuthConfig, f: &ClientRequestFacts<'_>) -> String {
    match decide(c, 401, &HeaderMap::new(), f) {
        Decision::Deny {
            status,
            headers,
            reason: DenyReason::SignIn,
        } => {
            assert_eq!(status, StatusCode::FOUND);
            assert_eq!(headers[0].0, header::LOCATION);
            headers[0].1.to_str().unwrap().to_owned()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn sign_in_redirects_are_built_as_ingress_nginx_builds_them() {
    let client = HeaderMap::new();
    let mut f = facts(&client, "/events?topic=news&x=/y");
    f.host = "app.example.com:8443";
    let signin = |url: &str, param: Option<&str>| {
        let mut list = vec![("auth-url", "http://auth/check"), ("auth-signin", url)];
        if let Some(param) = param {
            list.push(("auth-signin-redirect-param", param));
        }
        cfg(&list)
    };
    assert_eq!(
        location(&signin("https://auth.example.com/oauth2/start", None), &f),
        "https://auth.example.com/oauth2/start?rd=https://app.example.com:8443%2Fevents%3Ftopic%3Dnews%26x%3D%2Fy"
    );
    assert_eq!(
        location(&signin("https://auth.example.com/start?x=1", Some("redirect_uri")), &f),
        "https://auth.example.com/start?x=1&redirect_uri=https://app.example.com:8443%2Fevents%3Ftopic%3Dnews%26x%3D%2Fy"
    );
    // oauth2-proxy's documented form: rd is there, so nothing is added.
    assert_eq!(
        location(&signin("https://$host/oauth2/start?rd=$escaped_request_uri", None), &f),
        "https://app.example.com/oauth2/start?rd=%2Fevents%3Ftopic%3Dnews%26x%3D%2Fy"
    );
    // Authelia's documented form.
    assert_eq!(
        location(&signin("https://auth.example.com?rm=$request_method", None), &f),
        "https://auth.example.com?rm=GET&rd=https://app.example.com:8443%2Fevents%3Ftopic%3Dnews%26x%3D%2Fy"
    );
    assert_eq!(
        location(&signin("/oauth2/start", None), &f),
        "/oauth2/start?rd=https://app.example.com:8443%2Fevents%3Ftopic%3Dnews%26x%3D%2Fy"
    );
    f.scheme = Scheme::Http;
    assert_eq!(
        location(&signin("https://auth.example.com/", None), &facts(&client, "/")),
        "https://auth.example.com/?rd=https://app.example.com%2F"
    );
    assert_eq!(
        location(&signin("https://auth.example.com/", None), &f),
        "https://auth.example.com/?rd=http://app.example.com:8443%2Fevents%3Ftopic%3Dnews%26x%3D%2Fy"
    );
}

#[test]
fn sign_in_urls_are_validated() {
    for (url, message) in [
        (
            "auth.example.com/start",
            "must be an absolute http:// or https:// URL, or a path starting with /",
        ),
        (
            "//auth.example.com/start",
            "must be an absolute http:// or https:// URL, or a path starting with /",
        ),
        (
            "$scheme://auth/",
            "must be an absolute http:// or https:// URL, or a path starting with /",
        ),
        (
            "https://",
            "must be an absolute http:// or https:// URL, or a path starting with /",
        ),
        ("https://auth/#x", "the character '#' at byte 13 is not allowed here"),
        (
            "https://auth/%g0",
            "has a `%` at byte 13 that is not followed by two hex digits",
        ),
    ] {
        assert_eq!(
            one_invalid(&[("auth-url", "http://auth/"), ("auth-signin", url)]),
            ("auth-signin", message.to_owned()),
            "{url}"
        );
    }
    let (name, message) = one_invalid(&[("auth-url", "http://auth/"), ("auth-signin", "https://x/?a=$uri")]);
    assert_eq!(name, "auth-signin");
    assert!(message.starts_with("$uri cannot be evaluated"), "{message}");
    for param in ["r d", "a&b", "a=b", "", &"r".repeat(MAX_REDIRECT_PARAM_LEN + 1)] {
        if param.trim().is_empty() {
            continue;
        }
        assert_eq!(
            one_invalid(&[
                ("auth-url", "http://auth/"),
                ("auth-signin", "https://x/"),
                ("auth-signin-redirect-param", param)
            ]),
            (
                "auth-signin-redirect-param",
                "must be 1 to 64 letters, digits, `-`, `.`, `_` or `~`".to_owned()
            ),
            "{param}"
        );
    }
}

// ---- decisions ----

#[test]
fn allowed_with_response_headers_and_cookies() {
    let c = cfg(OAUTH2_PROXY);
    let client = HeaderMap::new();
    let answer = headers(&[
        ("x-auth-request-user", "alice"),
        ("x_auth_request_email", "alice@example.com"),
        ("x-auth-request-email", "alice@corp.example.com"),
        ("authorization", ""),
        ("set-cookie", "_oauth2_proxy=new; Path=/; HttpOnly"),
        ("set-cookie", ""),
        ("set-cookie", "_oauth2_proxy_1=more; Path=/"),
        ("www-authenticate", "ignored"),
    ]);
    for status in [200, 202, 204, 299] {
        match decide(&c, status, &answer, &facts(&client, "/")) {
            Decision::Allow {
                upstream_headers,
                set_cookie,
            } => {
                assert_eq!(
                    named(&upstream_headers),
                    pairs(&[
                        ("x-auth-request-user", "alice"),
                        ("x-auth-request-email", "alice@example.com, alice@corp.example.com"),
                    ])
                );
                assert_eq!(
                    set_cookie,
                    ["_oauth2_proxy=new; Path=/; HttpOnly", "_oauth2_proxy_1=more; Path=/"]
                );
            }
            other => panic!("{status}: {other:?}"),
        }
    }
}

#[test]
fn unauthorized_is_passed_on_with_every_www_authenticate() {
    let c = cfg(&[("auth-url", "http://auth/")]);
    let client = HeaderMap::new();
    let answer = headers(&[
        ("www-authenticate", "Bearer realm=\"a\""),
        ("www-authenticate", "Basic realm=\"b\""),
        ("set-cookie", "csrf=1"),
    ]);
    assert_eq!(
        decide(&c, 401, &answer, &facts(&client, "/")),
        Decision::Deny {
            status: StatusCode::UNAUTHORIZED,
            headers: vec![
                (header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"a\"")),
                (header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"b\"")),
            ],
            reason: DenyReason::Unauthorized,
        }
    );
    let always = cfg(&[("auth-url", "http://auth/"), ("auth-always-set-cookie", "1")]);
    match decide(&always, 401, &answer, &facts(&client, "/")) {
        Decision::Deny { headers, .. } => assert_eq!(
            named(&headers),
            pairs(&[
                ("www-authenticate", "Bearer realm=\"a\""),
                ("www-authenticate", "Basic realm=\"b\""),
                ("set-cookie", "csrf=1"),
            ])
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unauthorized_with_sign_in_redirects_with_cookie_and_challenge() {
    let c = cfg(OAUTH2_PROXY);
    let client = HeaderMap::new();
    let answer = headers(&[("www-authenticate", "Bearer"), ("set-cookie", "_oauth2_proxy_csrf=x")]);
    assert_eq!(
        decide(&c, 401, &answer, &facts(&client, "/events?topic=a")),
        Decision::Deny {
            status: StatusCode::FOUND,
            headers: vec![
                (
                    header::LOCATION,
                    HeaderValue::from_static(
                        "https://auth.example.com/oauth2/start?rd=https://app.example.com%2Fevents%3Ftopic%3Da"
                    )
                ),
                (header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")),
                (header::SET_COOKIE, HeaderValue::from_static("_oauth2_proxy_csrf=x")),
            ],
            reason: DenyReason::SignIn,
        }
    );
}

#[test]
fn forbidden_and_unexpected_statuses() {
    let c = cfg(&[("auth-url", "http://auth/")]);
    let always = cfg(&[("auth-url", "http://auth/"), ("auth-always-set-cookie", "true")]);
    let client = HeaderMap::new();
    let answer = headers(&[("set-cookie", "a=1"), ("www-authenticate", "Basic")]);
    let f = facts(&client, "/");
    assert_eq!(
        decide(&c, 403, &answer, &f),
        Decision::Deny {
            status: StatusCode::FORBIDDEN,
            headers: vec![],
            reason: DenyReason::Forbidden
        }
    );
    assert_eq!(
        decide(&always, 403, &answer, &f),
        Decision::Deny {
            status: StatusCode::FORBIDDEN,
            headers: vec![(header::SET_COOKIE, HeaderValue::from_static("a=1"))],
            reason: DenyReason::Forbidden
        }
    );
    for status in [100, 199, 300, 302, 400, 404, 407, 500, 502, 503, 999] {
        assert_eq!(
            decide(&c, status, &answer, &f),
            Decision::Deny {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                headers: vec![],
                reason: DenyReason::UnexpectedStatus(status)
            }
        );
        assert_eq!(
            decide(&always, status, &answer, &f),
            Decision::Deny {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                headers: vec![(header::SET_COOKIE, HeaderValue::from_static("a=1"))],
                reason: DenyReason::UnexpectedStatus(status)
            }
        );
    }
    // A sign-in URL only applies to 401.
    let signin = cfg(OAUTH2_PROXY);
    assert!(matches!(
        decide(&signin, 403, &answer, &f),
        Decision::Deny {
            reason: DenyReason::Forbidden,
            ..
        }
    ));
}

#[test]
fn failures_are_500() {
    for cause in [AuthFailure::Timeout, AuthFailure::Transport, AuthFailure::Subrequest] {
        assert_eq!(
            decide_failure(cause),
            Decision::Deny {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                headers: vec![],
                reason: DenyReason::Failed(cause)
            }
        );
    }
}

#[test]
fn oversized_answer_values_are_500() {
    let c = cfg(OAUTH2_PROXY);
    let client = HeaderMap::new();
    let f = facts(&client, "/");
    let big = "x".repeat(MAX_COPIED_VALUE_LEN + 1);
    let fits = "x".repeat(MAX_COPIED_VALUE_LEN);
    let too_large = Decision::Deny {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        headers: vec![],
        reason: DenyReason::AnswerTooLarge,
    };
    assert!(matches!(
        decide(&c, 200, &headers(&[("authorization", &fits)]), &f),
        Decision::Allow { .. }
    ));
    assert_eq!(decide(&c, 200, &headers(&[("authorization", &big)]), &f), too_large);
    // Joining can push a value over.
    let half = "x".repeat(MAX_COPIED_VALUE_LEN / 2);
    assert_eq!(
        decide(
            &c,
            200,
            &headers(&[("authorization", &half), ("authorization", &half)]),
            &f
        ),
        too_large
    );
    assert_eq!(decide(&c, 200, &headers(&[("set-cookie", &big)]), &f), too_large);
    assert_eq!(decide(&c, 401, &headers(&[("www-authenticate", &big)]), &f), too_large);
}

#[test]
fn oversized_sign_in_location_is_500() {
    let c = cfg(&[("auth-url", "http://auth/"), ("auth-signin", "https://x/")]);
    let client = HeaderMap::new();
    let long = format!("/{}", "%".repeat(MAX_EVALUATED_URL_LEN / 3));
    assert_eq!(
        decide(&c, 401, &HeaderMap::new(), &facts(&client, &long)),
        Decision::Deny {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            headers: vec![],
            reason: DenyReason::SignInUrl
        }
    );
}

#[test]
fn set_cookie_applies_as_add_header_does() {
    let c = cfg(&[("auth-url", "http://auth/")]);
    let always = cfg(&[("auth-url", "http://auth/"), ("auth-always-set-cookie", "true")]);
    for status in 100..=599u16 {
        let status = StatusCode::from_u16(status).unwrap();
        let expected = [200, 201, 204, 206, 301, 302, 303, 304, 307, 308].contains(&status.as_u16());
        assert_eq!(set_cookie_applies(&c, status), expected, "{status}");
        assert!(set_cookie_applies(&always, status));
    }
}

#[test]
fn client_copies_of_response_headers_are_stripped_under_every_spelling() {
    let c = cfg(OAUTH2_PROXY);
    let mut client = headers(&[
        ("x-auth-request-user", "admin"),
        ("x_auth_request_user", "admin"),
        ("X_Auth_Request_Email", "admin@example.com"),
        ("authorization", "Bearer forged"),
        ("x-auth-request-groups", "kept: not configured"),
        ("accept", "text/event-stream"),
    ]);
    strip_client_copies(&c, &mut client);
    assert_eq!(
        list(&client),
        pairs(&[
            ("x-auth-request-groups", "kept: not configured"),
            ("accept", "text/event-stream")
        ])
    );
}

#[test]
fn cacheable_answer_keeps_what_the_decision_reads() {
    let c = cfg(OAUTH2_PROXY);
    let answer = headers(&[
        ("date", "now"),
        ("x-auth-request-user", "alice"),
        ("x_auth_request_email", "a@x"),
        ("www-authenticate", "Bearer"),
        ("set-cookie", "a=1"),
        ("content-type", "text/plain"),
    ]);
    let kept = cacheable_answer(&c, 202, &answer);
    assert_eq!(kept.status, 202);
    assert_eq!(
        list(&kept.headers),
        pairs(&[
            ("x-auth-request-user", "alice"),
            ("x_auth_request_email", "a@x"),
            ("www-authenticate", "Bearer")
        ])
    );
    let client = HeaderMap::new();
    assert_eq!(
        decide(&c, kept.status, &kept.headers, &facts(&client, "/")),
        Decision::Allow {
            upstream_headers: vec![
                (
                    HeaderName::from_static("x-auth-request-user"),
                    HeaderValue::from_static("alice")
                ),
                (
                    HeaderName::from_static("x-auth-request-email"),
                    HeaderValue::from_static("a@x")
                ),
            ],
            set_cookie: vec![]
        }
    );
}

#[test]
fn cache_key_through_the_config() {
    let c = cfg(&[
        ("auth-url", "http://auth/"),
        ("auth-cache-key", "$cookie__oauth2_proxy"),
    ]);
    let with = headers(&[("cookie", "_oauth2_proxy=abc")]);
    let other = headers(&[("cookie", "_oauth2_proxy=abd")]);
    let without = headers(&[("cookie", "x=1")]);
    let key = cache_key(&c, &facts(&with, "/"));
    assert!(key.is_some());
    assert_eq!(key, cache_key(&c, &facts(&with, "/other")));
    assert_ne!(key, cache_key(&c, &facts(&other, "/")));
    assert_eq!(cache_key(&c, &facts(&without, "/")), None);
    assert_eq!(
        cache_key(&cfg(&[("auth-url", "http://auth/")]), &facts(&with, "/")),
        None
    );
}

// ---- the typed API and hostile input ----

#[test]
fn the_typed_api_shares_validation_and_reports_every_field() {
    let spec = ExternalAuthSpec {
        url: "ftp://auth".into(),
        method: Some("CONNECT".into()),
        signin_url: Some("auth/start".into()),
        signin_redirect_param: Some("a&b".into()),
        response_headers: vec!["X-User".into(), "".into()],
        request_redirect: Some("$request_uri".into()),
        cache_key: Some("static".into()),
        cache_duration: Some("200".into()),
        always_set_cookie: false,
        keepalive_connections: Some(2000),
        keepalive_requests: None,
        keepalive_timeout_seconds: None,
    };
    let errors = ExternalAuthConfig::from_spec(&spec).unwrap_err();
    let fields: Vec<Field> = errors.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        fields,
        [
            Field::Url,
            Field::Method,
            Field::SigninRedirectParam,
            Field::Signin,
            Field::ResponseHeaders,
            Field::RequestRedirect,
            Field::CacheKey,
            Field::CacheDuration,
            Field::Keepalive
        ]
    );
    assert_eq!(
        errors[5].1.to_string(),
        "has the character '$' at byte 0, which is not allowed (no variables, no spaces)"
    );
    let good = ExternalAuthSpec {
        url: "http://oauth2-proxy.auth.svc.cluster.local:4180/oauth2/auth".into(),
        signin_url: Some("https://auth.example.com/oauth2/start?rd=https://$host$escaped_request_uri".into()),
        response_headers: vec![
            "X-Auth-Request-User".into(),
            "X-Auth-Request-Email".into(),
            "Authorization".into(),
        ],
        ..ExternalAuthSpec::default()
    };
    assert_eq!(ExternalAuthConfig::from_spec(&good).unwrap(), cfg(OAUTH2_PROXY));
}

#[test]
fn error_messages_never_repeat_the_url() {
    let secret = "tok3n-s3cret";
    for url in [
        format!("ftp://auth/?token={secret}"),
        format!("https://{secret}@auth/"),
        format!("https://auth/?token={secret}#"),
        format!("https://auth/?token={secret}&x=$nope"),
        format!("https://a..b/?token={secret}"),
    ] {
        let problems = annotations(&[("auth-url", &url), ("auth-signin", &url)]).unwrap_err();
        assert_eq!(problems.invalid[0].0, "auth-url", "{url}");
        for (_, message) in problems.invalid {
            assert!(!message.contains(secret), "{message}");
        }
    }
}

#[test]
fn truncated_and_mangled_annotations_never_panic() {
    let url = "https://verify.corp.example.com:8443/verify?uri=$scheme://$host$request_uri&x=%41";
    let signin = "https://$host/oauth2/start?rd=$escaped_request_uri&a=${arg_x}";
    for end in 0..=url.len() {
        let _ = annotations(&[
            ("auth-url", &url[..end]),
            ("auth-signin", &signin[..end.min(signin.len())]),
        ]);
    }
    // A deterministic scramble of bytes from the interesting alphabet.
    let alphabet = b"htps:/[]@$%{}?&#=.-_:0189aAzZ \t\x00\xff";
    let mut state: u32 = 12345;
    for _ in 0..5000 {
        let mut bytes = Vec::new();
        for _ in 0..(state % 24) {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            bytes.push(alphabet[(state >> 16) as usize % alphabet.len()]);
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = AuthUrl::parse(&format!("http://{text}"));
        let _ = AuthUrl::parse(&text);
        let _ = annotations(&[("auth-url", "http://a/"), ("auth-signin", &format!("https://x/{text}"))]);
    }
}

// ---- Gateway API's rules (the HTTPRoute ExternalAuth filter) ----

fn gateway_spec() -> GatewayAuthSpec {
    GatewayAuthSpec {
        service: "ext-auth".into(),
        namespace: "auth".into(),
        port: 8080,
        path: "/check".into(),
        allowed_headers: vec!["Cookie".into(), "X-Tenant".into()],
        allowed_response_headers: vec!["X-Auth-User".into()],
    }
}

fn gateway(spec: &GatewayAuthSpec) -> ExternalAuthConfig {
    ExternalAuthConfig::from_gateway_api(spec).unwrap()
}

/// Every error, by field; none when the spec is valid.
fn gateway_errors(spec: &GatewayAuthSpec) -> Vec<(&'static str, String)> {
    match ExternalAuthConfig::from_gateway_api(spec) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.into_iter().map(|(f, e)| (f.path(), e.to_string())).collect(),
    }
}

#[test]
fn a_gateway_filter_calls_its_service_over_plain_http_with_keepalive_and_no_cache() {
    let c = gateway(&gateway_spec());
    assert_eq!(c.flavour(), Flavour::GatewayApi);
    assert_eq!(c.url().fixed_uri().unwrap(), "http://ext-auth.auth.svc:8080/check");
    assert_eq!(c.url().fixed_authority().unwrap().host(), "ext-auth.auth.svc");
    assert_eq!(c.url().fixed_port(), Some(8080));
    assert_eq!(c.keepalive(), GATEWAY_KEEPALIVE);
    assert!(c.cache().is_none());
    assert_eq!(c.response_headers(), [HeaderName::from_static("x-auth-user")]);
    // What ingress-nginx's rules have, Gateway API's do not.
    assert!(!c.method_is_set() && c.signin().is_none() && !c.always_set_cookie());
    let none = HeaderMap::new();
    let f = facts(&none, "/");
    assert_eq!(cache_key(&c, &f), None);
    // No path: the client's path alone; the URL shows `/`.
    let bare = gateway(&GatewayAuthSpec {
        path: String::new(),
        ..gateway_spec()
    });
    assert_eq!(bare.url().fixed_uri().unwrap(), "http://ext-auth.auth.svc:8080/");
}

#[test]
fn a_gateway_filter_that_cannot_be_read_names_each_field() {
    let bad = GatewayAuthSpec {
        service: "Ext.Auth".into(),
        namespace: "-auth".into(),
        port: 0,
        path: "check".into(),
        allowed_headers: vec!["Cookie".into(), "bad header".into()],
        allowed_response_headers: vec!["Content-Length".into()],
    };
    assert_eq!(
        gateway_errors(&bad),
        [
            (
                "backendRef.name",
                "is not a DNS label (lowercase letters, digits and `-`, at most 63)".to_owned()
            ),
            (
                "backendRef.namespace",
                "is not a DNS label (lowercase letters, digits and `-`, at most 63)".to_owned()
            ),
            ("backendRef.port", "is 0: the port must be 1 to 65535".to_owned()),
            (
                "http.path",
                "must start with `/` and hold only letters, digits, `%XX` escapes and -._~!$&'()*+,;=:@/ (the CRD's pattern)"
                    .to_owned()
            ),
            (
                "http.allowedHeaders",
                "entry 2 is not a header name of at most 128 bytes".to_owned()
            ),
            (
                "http.allowedResponseHeaders",
                "names Content-Length, which controls the request's routing or framing and is never taken from the auth service"
                    .to_owned()
            ),
        ]
    );
    let path = |p: &str| {
        gateway_errors(&GatewayAuthSpec {
            path: p.into(),
            ..gateway_spec()
        })
    };
    let dots = "has a `.` or `..` segment, which would take the auth service's path outside the prefix";
    assert_eq!(path("/a/../b"), [("http.path", dots.to_owned())]);
    assert_eq!(path("/a/."), [("http.path", dots.to_owned())]);
    assert_eq!(
        path("/a%2"),
        [(
            "http.path",
            "has a `%` at byte 2 that is not followed by two hex digits".to_owned()
        )]
    );
    assert_eq!(path("/a?b").len(), 1, "no query in the prefix");
    assert_eq!(path("/a#b").len(), 1);
    assert_eq!(
        path(&format!("/{}", "a".repeat(MAX_GATEWAY_PATH_LEN))),
        [("http.path", "is longer than 1024 bytes".to_owned())]
    );
    // What the CRD's pattern allows is taken as it is.
    for ok in ["/", "/a/b/", "/oauth2/auth", "/x;y=1:z@w", "/%2Fa", "/$ext~!'()*+,&="] {
        assert!(path(ok).is_empty(), "{ok}");
    }
    let many: Vec<String> = (0..=MAX_GATEWAY_HEADERS).map(|i| format!("x-{i}")).collect();
    let too_many = gateway_errors(&GatewayAuthSpec {
        allowed_headers: many.clone(),
        allowed_response_headers: many,
        ..gateway_spec()
    });
    assert_eq!(
        too_many,
        [
            ("http.allowedHeaders", "names more than 64 headers".to_owned()),
            ("http.allowedResponseHeaders", "names more than 64 headers".to_owned()),
        ]
    );
    for framing in ["Host", "transfer-encoding", "Connection", "TE", "Upgrade"] {
        let errors = gateway_errors(&GatewayAuthSpec {
            allowed_response_headers: vec![framing.into()],
            ..gateway_spec()
        });
        assert_eq!(errors.len(), 1, "{framing}");
        assert_eq!(errors[0].0, "http.allowedResponseHeaders");
    }
}

#[test]
fn gateway_subrequest_exact_headers() {
    let c = gateway(&gateway_spec());
    let client = headers(&[
        ("host", "app.example.com"),
        ("authorization", "Bearer t0ken"),
        ("cookie", "session=abc"),
        ("x-tenant", "blue"),
        ("x-tenant", "green"),
        ("user-agent", "Mozilla/5.0"),
        ("accept", "text/event-stream"),
        ("x-forwarded-for", "10.0.0.1"),
        ("content-length", "17"),
        ("content-type", "application/json"),
    ]);
    let mut f = facts(&client, "/events/a?topic=b&c");
    let post = Method::POST;
    f.method = &post;
    let request = auth_request(&c, &f).unwrap();
    assert_eq!(request.method(), Method::POST, "the client's method");
    assert_eq!(
        request.uri(),
        "http://ext-auth.auth.svc:8080/check/events/a?topic=b&c",
        "the prefix, then the client's path and query"
    );
    assert_eq!(
        list(request.headers()),
        pairs(&[
            ("host", "app.example.com"),
            ("content-length", "0"),
            ("authorization", "Bearer t0ken"),
            ("cookie", "session=abc"),
            ("x-tenant", "blue"),
            ("x-tenant", "green"),
        ])
    );
    assert_eq!(
        endpoint(&request),
        Some((Scheme::Http, "ext-auth.auth.svc", 8080)),
        "the connection goes to the Service"
    );
}

#[test]
fn with_no_allowed_headers_only_the_required_ones_are_sent() {
    let c = gateway(&GatewayAuthSpec {
        path: String::new(),
        allowed_headers: Vec::new(),
        ..gateway_spec()
    });
    let client = headers(&[("cookie", "session=abc"), ("accept", "text/event-stream")]);
    let request = auth_request(&c, &facts(&client, "/events")).unwrap();
    assert_eq!(request.method(), Method::GET);
    assert_eq!(request.uri(), "http://ext-auth.auth.svc:8080/events");
    assert_eq!(
        list(request.headers()),
        pairs(&[("host", "app.example.com"), ("content-length", "0")]),
        "no Authorization from a client that sent none"
    );
    // Names always sent are not sent twice; hop-by-hop ones never are.
    let c = gateway(&GatewayAuthSpec {
        allowed_headers: vec![
            "Authorization".into(),
            "Host".into(),
            "Content-Length".into(),
            "Connection".into(),
            "Upgrade".into(),
            "TE".into(),
        ],
        ..gateway_spec()
    });
    let client = headers(&[
        ("authorization", "Basic YQ=="),
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("te", "trailers"),
        ("content-length", "5"),
    ]);
    let request = auth_request(&c, &facts(&client, "/ws")).unwrap();
    assert_eq!(
        list(request.headers()),
        pairs(&[
            ("host", "app.example.com"),
            ("content-length", "0"),
            ("authorization", "Basic YQ=="),
        ])
    );
    // The prefix and the client's path are joined as path segments.
    for (prefix, uri) in [
        ("/", "http://ext-auth.auth.svc:8080/ws?a"),
        ("/check/", "http://ext-auth.auth.svc:8080/check/ws?a"),
        ("/check//", "http://ext-auth.auth.svc:8080/check/ws?a"),
    ] {
        let c = gateway(&GatewayAuthSpec {
            path: prefix.into(),
            ..gateway_spec()
        });
        let none = HeaderMap::new();
        assert_eq!(auth_request(&c, &facts(&none, "/ws?a")).unwrap().uri(), uri, "{prefix}");
    }
    // A path beyond the evaluated URL limit is a 500, not a cut path.
    let long = format!("/{}", "a".repeat(MAX_EVALUATED_URL_LEN));
    assert_eq!(
        auth_request(&c, &facts(&HeaderMap::new(), &long)).unwrap_err(),
        AuthRequestError::UriTooLong {
            max: MAX_EVALUATED_URL_LEN
        }
    );
}

#[test]
fn gateway_200_allows_with_the_listed_answer_headers_line_by_line() {
    let c = gateway(&GatewayAuthSpec {
        allowed_response_headers: vec!["X-Auth-User".into(), "X-Auth-Groups".into()],
        ..gateway_spec()
    });
    let answer = headers(&[
        ("x-auth-user", "alice"),
        ("x-auth-groups", "a"),
        ("x-auth-groups", "b"),
        ("x-auth_user", "mallory"),
        ("x-other", "1"),
        ("set-cookie", "s=1"),
        ("content-length", "2"),
    ]);
    let none = HeaderMap::new();
    let f = facts(&none, "/");
    assert_eq!(
        decide(&c, 200, &answer, &f),
        Decision::Allow {
            upstream_headers: vec![
                (
                    HeaderName::from_static("x-auth-user"),
                    HeaderValue::from_static("alice")
                ),
                (HeaderName::from_static("x-auth-groups"), HeaderValue::from_static("a")),
                (HeaderName::from_static("x-auth-groups"), HeaderValue::from_static("b")),
            ],
            set_cookie: Vec::new(),
        }
    );
    // The client's copies of the listed names go, by exact name only.
    let mut upstream = headers(&[
        ("x-auth-user", "mallory"),
        ("X-Auth-Groups", "admin"),
        ("x_auth_user", "kept"),
        ("accept", "text/event-stream"),
    ]);
    strip_client_copies(&c, &mut upstream);
    assert_eq!(
        list(&upstream),
        pairs(&[("x_auth_user", "kept"), ("accept", "text/event-stream")])
    );
}

#[test]
fn gateway_200_with_no_list_copies_every_header_but_host_framing_and_content() {
    let c = gateway(&GatewayAuthSpec {
        allowed_response_headers: Vec::new(),
        ..gateway_spec()
    });
    let answer = headers(&[
        ("x-auth-user", "alice"),
        ("authorization", "Bearer internal"),
        ("host", "evil.example"),
        ("content-length", "2"),
        ("content-type", "text/plain"),
        ("content-encoding", "gzip"),
        ("transfer-encoding", "chunked"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("date", "Thu, 01 Jan 2026 00:00:00 GMT"),
    ]);
    let Decision::Allow { upstream_headers, .. } = decide(&c, 200, &answer, &facts(&HeaderMap::new(), "/")) else {
        panic!("200 allows");
    };
    assert_eq!(
        named(&upstream_headers),
        pairs(&[
            ("x-auth-user", "alice"),
            ("authorization", "Bearer internal"),
            ("date", "Thu, 01 Jan 2026 00:00:00 GMT"),
        ])
    );
    // Nothing is known to strip before the answer: the caller replaces the
    // names the answer carries.
    let mut upstream = headers(&[("x-auth-user", "mallory")]);
    strip_client_copies(&c, &mut upstream);
    assert_eq!(list(&upstream), pairs(&[("x-auth-user", "mallory")]));
}

#[test]
fn gateway_3xx_and_4xx_refuse_with_the_services_status_and_headers() {
    let c = gateway(&gateway_spec());
    let none = HeaderMap::new();
    let f = facts(&none, "/");
    let answer = headers(&[
        ("location", "https://login.example.com/?rd=x"),
        ("set-cookie", "csrf=1"),
        ("set-cookie", "flow=2"),
        ("content-type", "text/html"),
        ("content-length", "120"),
        ("connection", "close"),
        ("x-reason", "no session"),
    ]);
    for status in [301, 302, 303, 307, 308, 400, 401, 403, 404, 407, 429, 499] {
        assert_eq!(
            decide(&c, status, &answer, &f),
            Decision::Deny {
                status: StatusCode::from_u16(status).unwrap(),
                headers: vec![
                    (
                        header::LOCATION,
                        HeaderValue::from_static("https://login.example.com/?rd=x")
                    ),
                    (header::SET_COOKIE, HeaderValue::from_static("csrf=1")),
                    (header::SET_COOKIE, HeaderValue::from_static("flow=2")),
                    (
                        HeaderName::from_static("x-reason"),
                        HeaderValue::from_static("no session")
                    ),
                ],
                reason: DenyReason::Denied(status),
            },
            "{status}"
        );
    }
    let challenge = headers(&[("www-authenticate", "Bearer realm=\"x\"")]);
    assert_eq!(
        decide(&c, 401, &challenge, &f),
        Decision::Deny {
            status: StatusCode::UNAUTHORIZED,
            headers: vec![(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"x\""))],
            reason: DenyReason::Denied(401),
        }
    );
}

#[test]
fn gateway_anything_else_is_a_500() {
    let c = gateway(&gateway_spec());
    let none = HeaderMap::new();
    let f = facts(&none, "/");
    let answer = headers(&[("x-auth-user", "alice"), ("location", "/x")]);
    for status in [100, 201, 202, 204, 206, 299, 304, 500, 502, 503, 504, 599] {
        assert_eq!(
            decide(&c, status, &answer, &f),
            Decision::Deny {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                headers: Vec::new(),
                reason: DenyReason::UnexpectedStatus(status),
            },
            "{status}"
        );
    }
    // A value past the copy limit is a 500 too, never a shortened header.
    let long = "a".repeat(MAX_COPIED_VALUE_LEN + 1);
    let answer = headers(&[("x-auth-user", long.as_str())]);
    assert_eq!(
        decide(&c, 200, &answer, &f),
        Decision::Deny {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            headers: Vec::new(),
            reason: DenyReason::AnswerTooLarge,
        }
    );
}

/// The ingress-nginx rules are untouched by the second flavour: their
/// answers still mean what they meant (a 2xx other than 200 allows, 404 is
/// a 500), and names still match as nginx matches them.
#[test]
fn the_two_flavours_read_the_same_answer_differently() {
    let nginx = cfg(&[
        ("auth-url", "http://ext-auth.auth.svc:8080/check"),
        ("auth-response-headers", "X-Auth-User"),
    ]);
    let gw = gateway(&gateway_spec());
    assert_eq!(nginx.flavour(), Flavour::IngressNginx);
    let none = HeaderMap::new();
    let f = facts(&none, "/");
    let answer = headers(&[("x-auth-user", "alice")]);
    assert!(matches!(decide(&nginx, 204, &answer, &f), Decision::Allow { .. }));
    assert!(matches!(
        decide(&gw, 204, &answer, &f),
        Decision::Deny {
            reason: DenyReason::UnexpectedStatus(204),
            ..
        }
    ));
    assert!(matches!(
        decide(&nginx, 404, &answer, &f),
        Decision::Deny {
            reason: DenyReason::UnexpectedStatus(404),
            ..
        }
    ));
    assert!(matches!(
        decide(&gw, 404, &answer, &f),
        Decision::Deny {
            reason: DenyReason::Denied(404),
            ..
        }
    ));
    let mut upstream = headers(&[("x_auth_user", "mallory")]);
    strip_client_copies(&nginx, &mut upstream);
    assert!(upstream.is_empty(), "nginx folds - and _");
}
