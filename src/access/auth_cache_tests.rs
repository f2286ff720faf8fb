use super::super::nginx_vars::{Scheme, Variable};
use super::*;
use http::header::{HeaderName, HeaderValue};
use http::Method;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::AtomicUsize;

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

fn facts(headers: &HeaderMap) -> ClientRequestFacts<'_> {
    ClientRequestFacts {
        method: &Method::GET,
        scheme: Scheme::Https,
        host: "app.example.com",
        request_uri: "/events",
        headers,
        client_addr: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        forwarded_for: "203.0.113.7",
        request_id: "req-1",
    }
}

fn key_for(template: &str, list: &[(&str, &str)]) -> Option<CacheKey> {
    let h = headers(list);
    CacheKeyTemplate::parse(template).unwrap().evaluate(&facts(&h))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn table(text: &str) -> Vec<(StatusMatch, Duration)> {
    CacheDurations::parse(text).unwrap().entries().to_vec()
}

fn code(c: u16, s: u64) -> (StatusMatch, Duration) {
    (StatusMatch::Code(c), secs(s))
}

// ---- auth-cache-key ----

#[test]
fn parses_the_keys_people_use() {
    let key = CacheKeyTemplate::parse("$remote_user$http_authorization").unwrap();
    assert_eq!(
        key.template().parts(),
        &[
            Part::Variable(Variable::RemoteUser),
            Part::Variable(Variable::Header("authorization".into()))
        ]
    );
    for text in [
        "$cookie__oauth2_proxy",
        "${cookie__oauth2_proxy_1}-${cookie__oauth2_proxy_2}",
        "  $http_authorization  ",
        "user $remote_user token $http_x_auth_token",
        "$host$request_uri",
        "$arg_token",
        "$remote_addr$http_cookie",
    ] {
        assert!(CacheKeyTemplate::parse(text).is_ok(), "{text}");
    }
}

#[test]
fn refuses_keys_that_could_mix_users_up() {
    let cases: &[(&str, CacheConfigError)] = &[
        ("", CacheConfigError::KeyEmpty),
        ("   ", CacheConfigError::KeyEmpty),
        ("static", CacheConfigError::KeyWithoutVariables),
        ("a-b_c d", CacheConfigError::KeyWithoutVariables),
        (
            "$foo$bar",
            CacheConfigError::KeyTemplate(TemplateError::Unsupported {
                name: "foo".into(),
                hint: "",
            }),
        ),
        (
            "$uri",
            CacheConfigError::KeyTemplate(TemplateError::Unsupported {
                name: "uri".into(),
                hint: " (it is nginx's decoded, normalised path, which ssegate does not reproduce: use $request_uri)",
            }),
        ),
        (
            "$http_a.$http_b",
            CacheConfigError::KeyTemplate(TemplateError::BadCharacter {
                at: 7,
                what: "'.'".into(),
            }),
        ),
        (
            "$http_a/x",
            CacheConfigError::KeyTemplate(TemplateError::BadCharacter {
                at: 7,
                what: "'/'".into(),
            }),
        ),
        (
            "$",
            CacheConfigError::KeyTemplate(TemplateError::DanglingDollar { at: 0 }),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(CacheKeyTemplate::parse(text).unwrap_err(), *expected, "{text}");
    }
    let long = format!("$http_a-{}", "x".repeat(MAX_CACHE_KEY_LEN - 8));
    assert!(CacheKeyTemplate::parse(&long).is_ok());
    assert_eq!(
        CacheKeyTemplate::parse(&format!("{long}x")).unwrap_err(),
        CacheConfigError::KeyTooLong { max: MAX_CACHE_KEY_LEN }
    );
}

#[test]
fn key_parsing_survives_truncation_and_every_byte() {
    let text = "${cookie__oauth2_proxy}-$remote_user $http_authorization";
    for end in 0..=text.len() {
        let _ = CacheKeyTemplate::parse(&text[..end]);
    }
    for b in 0..=255u8 {
        let _ = CacheKeyTemplate::parse(&String::from_utf8_lossy(&[b'$', b'h', b, b'$', b]));
    }
}

#[test]
fn evaluated_keys_separate_users_and_agree_for_the_same_user() {
    let t = "$remote_user$http_authorization";
    let alice = key_for(t, &[("authorization", "Basic YWxpY2U6c2VjcmV0")]);
    let alice_again = key_for(t, &[("authorization", "Basic YWxpY2U6c2VjcmV0"), ("x-other", "1")]);
    let bob = key_for(t, &[("authorization", "Basic Ym9iOnNlY3JldA==")]);
    assert!(alice.is_some());
    assert_eq!(alice, alice_again);
    assert_ne!(alice, bob);
}

#[test]
fn evaluated_keys_do_not_collide_on_concatenation() {
    let t = "$http_a$http_b";
    let one = key_for(t, &[("a", "x"), ("b", "yz")]);
    let two = key_for(t, &[("a", "xy"), ("b", "z")]);
    assert!(one.is_some() && two.is_some());
    assert_ne!(one, two);
    // An empty value and an absent header differ.
    let empty = key_for(t, &[("a", "x"), ("b", "")]);
    let absent = key_for(t, &[("a", "x")]);
    assert_ne!(empty, absent);
}

#[test]
fn a_request_with_no_key_value_gets_no_key() {
    let t = "user-$remote_user-$http_authorization";
    assert_eq!(key_for(t, &[]), None);
    assert_eq!(key_for(t, &[("authorization", "")]), None);
    assert!(key_for(t, &[("authorization", "Bearer x")]).is_some());
    // The same key in another template is another key.
    assert_ne!(
        key_for("$http_authorization", &[("authorization", "Bearer x")]),
        key_for("a$http_authorization", &[("authorization", "Bearer x")])
    );
}

// ---- auth-cache-duration ----

#[test]
fn durations_default_and_ingress_nginx_cases() {
    let default = vec![code(200, 300), code(202, 300), code(401, 300)];
    assert_eq!(CacheDurations::default().entries(), default.as_slice());
    assert_eq!(table(DEFAULT_CACHE_DURATION), default);
    assert_eq!(table(""), default);
    assert_eq!(table("  "), default);
    assert_eq!(table(", ,"), default);
    assert_eq!(table("5m"), vec![code(200, 300), code(301, 300), code(302, 300)]);
    assert_eq!(
        table("200 202 10m, 401 5m"),
        vec![code(200, 600), code(202, 600), code(401, 300)]
    );
    assert_eq!(table(",200 5m,"), vec![code(200, 300)]);
    assert_eq!(
        table(",5m,,401 10m,"),
        vec![code(200, 300), code(301, 300), code(302, 300), code(401, 600)]
    );
    assert_eq!(
        table("200 202 401 5m, 418 30m"),
        vec![code(200, 300), code(202, 300), code(401, 300), code(418, 1800)]
    );
}

#[test]
fn duration_units_are_nginx_s() {
    for (text, seconds) in [
        ("200 0s", 0),
        ("200 45s", 45),
        ("200 2m", 120),
        ("200 3h", 3 * 3600),
        ("200 1d", 86_400),
        ("200 1w", 7 * 86_400),
        ("200 1M", 30 * 86_400),
        ("200 1y", 365 * 86_400),
        ("any 1h", 3600),
    ] {
        assert_eq!(table(text)[0].1, secs(seconds), "{text}");
    }
    assert_eq!(table("any 1h")[0].0, StatusMatch::Any);
    assert_eq!(table("200\t 1h")[0], code(200, 3600));
}

#[test]
fn durations_are_refused_with_clear_errors() {
    let cases: &[(&str, CacheConfigError)] = &[
        ("200", CacheConfigError::NoTime { entry: 1 }),
        ("200 202", CacheConfigError::NoTime { entry: 1 }),
        (
            "5m, xaxax",
            CacheConfigError::BadTime {
                entry: 2,
                word: "xaxax".into(),
            },
        ),
        ("5m 200", CacheConfigError::TimeNotLast { entry: 1 }),
        ("200 1h 30m", CacheConfigError::TimeNotLast { entry: 1 }),
        ("200 500ms", CacheConfigError::Milliseconds { entry: 1 }),
        (
            "200 999 5m",
            CacheConfigError::BadStatus {
                entry: 1,
                word: "999".into(),
            },
        ),
        (
            "20 5m",
            CacheConfigError::BadStatus {
                entry: 1,
                word: "20".into(),
            },
        ),
        (
            "0200 5m",
            CacheConfigError::BadStatus {
                entry: 1,
                word: "0200".into(),
            },
        ),
        (
            "ANY 5m",
            CacheConfigError::BadStatus {
                entry: 1,
                word: "ANY".into(),
            },
        ),
        (
            "200 5",
            CacheConfigError::BadTime {
                entry: 1,
                word: "5".into(),
            },
        ),
        (
            "200 m",
            CacheConfigError::BadTime {
                entry: 1,
                word: "m".into(),
            },
        ),
        (
            "200 1h30m",
            CacheConfigError::BadTime {
                entry: 1,
                word: "1h30m".into(),
            },
        ),
        (
            "200 -5m",
            CacheConfigError::BadTime {
                entry: 1,
                word: "-5m".into(),
            },
        ),
        (
            "200 2y",
            CacheConfigError::TimeTooLong {
                entry: 1,
                max_days: 366,
            },
        ),
        (
            "200 99999999999999999999999y",
            CacheConfigError::TimeTooLong {
                entry: 1,
                max_days: 366,
            },
        ),
        (
            "200 18446744073709551615y",
            CacheConfigError::TimeTooLong {
                entry: 1,
                max_days: 366,
            },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(CacheDurations::parse(text).unwrap_err(), *expected, "{text}");
    }
    assert_eq!(
        CacheDurations::parse("200 5m, 401 1m, 200 x").unwrap_err().to_string(),
        "cache duration entry 3: \"x\" is not a time: use a number and one unit of s, m, h, d, w, M or y, such as 5m"
    );
}

#[test]
fn duration_limits() {
    let entries = vec!["1m"; MAX_DURATION_ENTRIES].join(",");
    assert!(CacheDurations::parse(&entries).is_ok());
    assert_eq!(
        CacheDurations::parse(&format!("{entries},1m")).unwrap_err(),
        CacheConfigError::TooManyEntries {
            max: MAX_DURATION_ENTRIES
        }
    );
    let statuses = format!("{} 1m", vec!["200"; MAX_STATUSES_PER_ENTRY].join(" "));
    assert!(CacheDurations::parse(&statuses).is_ok());
    assert_eq!(
        CacheDurations::parse(&format!("201 {statuses}")).unwrap_err(),
        CacheConfigError::TooManyStatuses {
            entry: 1,
            max: MAX_STATUSES_PER_ENTRY
        }
    );
    let long = format!("200 1m{}", " ".repeat(MAX_CACHE_DURATION_LEN - 6));
    assert!(CacheDurations::parse(&long).is_ok());
    assert_eq!(
        CacheDurations::parse(&format!("{long} ")).unwrap_err(),
        CacheConfigError::DurationTooLong {
            max: MAX_CACHE_DURATION_LEN
        }
    );
    let text = "200 202 10m, 401 5m, any 1h";
    for end in 0..=text.len() {
        let _ = CacheDurations::parse(&text[..end]);
    }
}

#[test]
fn first_matching_entry_wins_as_in_nginx() {
    let d = CacheDurations::parse("200 1m, 200 5m, any 10m").unwrap();
    assert_eq!(d.for_status(200), secs(60));
    assert_eq!(d.for_status(403), secs(600));
    let d = CacheDurations::parse("any 1m, 200 5m").unwrap();
    assert_eq!(d.for_status(200), secs(60));
    let d = CacheDurations::parse("200 0s, any 5m").unwrap();
    assert_eq!(d.for_status(200), Duration::ZERO);
    assert_eq!(CacheDurations::default().for_status(403), Duration::ZERO);
}

#[test]
fn ttl_applies_nginx_s_header_rules() {
    let d = CacheDurations::default();
    let ttl = |status: u16, list: &[(&str, &str)]| d.ttl(status, &headers(list));
    assert_eq!(ttl(200, &[]), Some(secs(300)));
    assert_eq!(ttl(401, &[("www-authenticate", "Basic")]), Some(secs(300)));
    assert_eq!(ttl(403, &[]), None, "no time for the status");
    assert_eq!(ttl(200, &[("set-cookie", "a=1")]), None);
    assert_eq!(ttl(200, &[("vary", "Cookie")]), None);
    assert_eq!(ttl(200, &[("x-accel-expires", "30")]), Some(secs(30)));
    assert_eq!(
        ttl(200, &[("x-accel-expires", "30"), ("cache-control", "no-store")]),
        Some(secs(30))
    );
    assert_eq!(ttl(200, &[("x-accel-expires", "0")]), None);
    assert_eq!(ttl(200, &[("x-accel-expires", "@1700000000")]), None);
    assert_eq!(ttl(200, &[("x-accel-expires", "soon")]), Some(secs(300)), "ignored");
    assert_eq!(ttl(200, &[("cache-control", "no-store")]), None);
    assert_eq!(ttl(200, &[("cache-control", "No-Cache")]), None);
    assert_eq!(ttl(200, &[("cache-control", "max-age=60, private")]), None);
    assert_eq!(ttl(200, &[("cache-control", "max-age=60")]), Some(secs(60)));
    assert_eq!(
        ttl(200, &[("cache-control", "public, s-maxage=10, max-age=60")]),
        Some(secs(10))
    );
    assert_eq!(ttl(200, &[("cache-control", "max-age=0")]), None);
    assert_eq!(ttl(200, &[("cache-control", "max-age=soon")]), None);
    assert_eq!(ttl(200, &[("cache-control", "public")]), Some(secs(300)));
    assert_eq!(ttl(200, &[("expires", "Thu, 01 Jan 1970 00:00:00 GMT")]), None);
    assert_eq!(
        ttl(
            200,
            &[
                ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
                ("cache-control", "max-age=9")
            ]
        ),
        Some(secs(9))
    );
    assert_eq!(ttl(200, &[("x-accel-expires", "99999999999")]), Some(MAX_CACHE_TTL));
    assert_eq!(
        ttl(200, &[("cache-control", "max-age=99999999999")]),
        Some(MAX_CACHE_TTL)
    );
}

#[test]
fn cache_config_keeps_key_and_durations() {
    let c = CacheConfig::new("$http_authorization", None).unwrap();
    assert_eq!(c.durations(), &CacheDurations::default());
    let c = CacheConfig::new("$http_authorization", Some("200 1m")).unwrap();
    assert_eq!(c.ttl(200, &HeaderMap::new()), Some(secs(60)));
    assert_eq!(c.ttl(401, &HeaderMap::new()), None);
    assert_eq!(
        CacheConfig::new("$http_authorization", Some("200")).unwrap_err(),
        CacheConfigError::NoTime { entry: 1 }
    );
}

// ---- the cache ----

fn answer(status: u16) -> Arc<CachedAnswer> {
    Arc::new(CachedAnswer {
        status,
        headers: HeaderMap::new(),
    })
}

fn k(n: u16) -> CacheKey {
    let mut key = [0; 32];
    key[..2].copy_from_slice(&n.to_be_bytes());
    CacheKey(key)
}

fn zone(name: &str) -> Arc<str> {
    Arc::from(name)
}

#[test]
fn entries_expire_on_the_given_clock() {
    let cache = AuthCache::new();
    let t0 = Instant::now();
    let z = zone("default/app");
    cache.put(z.clone(), k(1), answer(200), secs(300), t0);
    assert_eq!(cache.get(&z, &k(1), t0).map(|a| a.status), Some(200));
    let last = t0 + secs(300) - Duration::from_nanos(1);
    assert_eq!(cache.get(&z, &k(1), last).map(|a| a.status), Some(200));
    assert!(cache.get(&z, &k(1), t0 + secs(300)).is_none());
    assert!(cache.get(&z, &k(2), t0).is_none());
    assert!(
        cache.get(&zone("default/other"), &k(1), t0).is_none(),
        "zones are separate"
    );
    // Replacing renews.
    cache.put(z.clone(), k(1), answer(401), secs(10), t0 + secs(300));
    assert_eq!(cache.get(&z, &k(1), t0 + secs(305)).map(|a| a.status), Some(401));
    assert_eq!(cache.len(), 1);
}

#[test]
fn zero_and_huge_ttls() {
    let cache = AuthCache::new();
    let t0 = Instant::now();
    let z = zone("z");
    cache.put(z.clone(), k(1), answer(200), Duration::ZERO, t0);
    assert!(cache.is_empty());
    cache.put(z.clone(), k(2), answer(200), Duration::MAX, t0);
    assert!(cache.get(&z, &k(2), t0 + MAX_CACHE_TTL - secs(1)).is_some());
    assert!(cache.get(&z, &k(2), t0 + MAX_CACHE_TTL).is_none(), "capped");
}

#[test]
fn size_is_bounded() {
    assert_eq!(AuthCache::new().capacity(), AUTH_CACHE_MAX_ENTRIES);
    assert_eq!(AuthCache::with_capacity(usize::MAX).capacity(), AUTH_CACHE_MAX_ENTRIES);
    assert_eq!(AuthCache::with_capacity(0).capacity(), 1);
    let cache = AuthCache::with_capacity(64);
    assert_eq!(cache.capacity(), 64);
    let t0 = Instant::now();
    let z = zone("z");
    for n in 0..4000 {
        cache.put(z.clone(), k(n), answer(200), secs(60), t0);
        assert!(cache.len() <= 64);
    }
    // Every shard is full (4000 random keys over 16 shards), and the last
    // key put is there.
    assert_eq!(cache.len(), 64);
    assert!(cache.get(&z, &k(3999), t0).is_some());
}

#[test]
fn clock_eviction_gives_recently_used_entries_a_second_chance() {
    let cache = AuthCache::with_layout(1, 2);
    let t0 = Instant::now();
    let z = zone("z");
    cache.put(z.clone(), k(1), answer(200), secs(60), t0);
    cache.put(z.clone(), k(2), answer(200), secs(60), t0);
    assert!(cache.get(&z, &k(1), t0).is_some());
    cache.put(z.clone(), k(3), answer(200), secs(60), t0);
    assert!(cache.get(&z, &k(1), t0).is_some(), "used, so kept");
    assert!(cache.get(&z, &k(2), t0).is_none(), "unused, so evicted");
    assert!(cache.get(&z, &k(3), t0).is_some());
    // Now both are referenced: the hand clears both bits and evicts the
    // first it comes back to.
    cache.put(z.clone(), k(4), answer(200), secs(60), t0);
    assert_eq!(cache.len(), 2);
    assert!(cache.get(&z, &k(1), t0).is_none());
    assert!(cache.get(&z, &k(3), t0).is_some());
    assert!(cache.get(&z, &k(4), t0).is_some());
}

#[test]
fn clock_eviction_takes_expired_entries_even_when_referenced() {
    let cache = AuthCache::with_layout(1, 2);
    let t0 = Instant::now();
    let z = zone("z");
    cache.put(z.clone(), k(1), answer(200), secs(10), t0);
    cache.put(z.clone(), k(2), answer(200), secs(60), t0);
    assert!(cache.get(&z, &k(1), t0).is_some());
    assert!(cache.get(&z, &k(2), t0).is_some());
    cache.put(z.clone(), k(3), answer(200), secs(60), t0 + secs(20));
    assert!(cache.get(&z, &k(2), t0 + secs(20)).is_some());
    assert!(cache.get(&z, &k(3), t0 + secs(20)).is_some());
    assert!(
        cache.get(&z, &k(1), t0 + secs(5)).is_none(),
        "evicted, not just expired"
    );
}

// ---- single flight ----

fn lead(lookup: Lookup) -> LeadGuard {
    match lookup {
        Lookup::Lead(guard) => guard,
        other => panic!("expected to lead, got {other:?}"),
    }
}

fn wait(lookup: Lookup) -> Waiter {
    match lookup {
        Lookup::Wait(waiter) => waiter,
        other => panic!("expected to wait, got {other:?}"),
    }
}

#[tokio::test]
async fn one_leads_others_wait_and_get_the_cached_answer() {
    let cache = Arc::new(AuthCache::new());
    let t0 = Instant::now();
    let z = zone("z");
    let guard = lead(cache.lookup(&z, k(1), t0));
    let w1 = wait(cache.lookup(&z, k(1), t0));
    let w2 = wait(cache.lookup(&z, k(1), t0));
    let other_key = lead(cache.lookup(&z, k(2), t0));
    let other_zone = lead(cache.lookup(&zone("y"), k(1), t0));
    guard.finish((*answer(202)).clone(), Some(secs(60)), t0);
    for w in [w1, w2] {
        match w.wait().await {
            Shared::Answer(a) => assert_eq!(a.status, 202),
            other => panic!("{other:?}"),
        }
    }
    match cache.lookup(&z, k(1), t0 + secs(1)) {
        Lookup::Hit(a) => assert_eq!(a.status, 202),
        other => panic!("{other:?}"),
    }
    // Expired: a new lead.
    drop(lead(cache.lookup(&z, k(1), t0 + secs(60))));
    drop((other_key, other_zone));
}

#[tokio::test]
async fn an_answer_that_is_not_cached_is_not_shared() {
    let cache = Arc::new(AuthCache::new());
    let t0 = Instant::now();
    let z = zone("z");
    let guard = lead(cache.lookup(&z, k(1), t0));
    let w = wait(cache.lookup(&z, k(1), t0));
    guard.finish((*answer(200)).clone(), None, t0);
    assert!(matches!(w.wait().await, Shared::NotShared));
    assert!(cache.is_empty());
    drop(lead(cache.lookup(&z, k(1), t0)));
    // A zero ttl is the same as none.
    let guard = lead(cache.lookup(&z, k(1), t0));
    let w = wait(cache.lookup(&z, k(1), t0));
    guard.finish((*answer(200)).clone(), Some(Duration::ZERO), t0);
    assert!(matches!(w.wait().await, Shared::NotShared));
}

#[tokio::test]
async fn a_dropped_leader_wakes_the_waiters_to_lead_again() {
    let cache = Arc::new(AuthCache::new());
    let t0 = Instant::now();
    let z = zone("z");
    let guard = lead(cache.lookup(&z, k(1), t0));
    let w = wait(cache.lookup(&z, k(1), t0));
    drop(guard);
    assert!(matches!(w.wait().await, Shared::Abandoned));
    let second = lead(cache.lookup(&z, k(1), t0));
    let w = wait(cache.lookup(&z, k(1), t0));
    second.finish((*answer(401)).clone(), Some(secs(5)), t0);
    assert!(matches!(w.wait().await, Shared::Answer(a) if a.status == 401));
}

#[tokio::test]
async fn waiting_is_bounded_by_the_caller() {
    let cache = Arc::new(AuthCache::new());
    let t0 = Instant::now();
    let z = zone("z");
    let guard = lead(cache.lookup(&z, k(1), t0));
    let w = wait(cache.lookup(&z, k(1), t0));
    let timed_out = tokio::time::timeout(Duration::from_millis(20), w.wait()).await;
    assert!(timed_out.is_err());
    // The leader is unaffected.
    let w = wait(cache.lookup(&z, k(1), t0));
    guard.finish((*answer(200)).clone(), Some(secs(5)), t0);
    assert!(matches!(w.wait().await, Shared::Answer(_)));
}

/// Drives one request through the cache as the proxy will: returns the
/// status it got and whether it led.
async fn request(cache: Arc<AuthCache>, leads: Arc<AtomicUsize>, fail_first: bool) -> u16 {
    let z = zone("default/events");
    loop {
        match cache.lookup(&z, k(7), Instant::now()) {
            Lookup::Hit(a) => return a.status,
            Lookup::Wait(w) => match tokio::time::timeout(Duration::from_secs(10), w.wait()).await.unwrap() {
                Shared::Answer(a) => return a.status,
                Shared::Abandoned => continue,
                Shared::NotShared => panic!("the answer is cacheable"),
            },
            Lookup::Lead(guard) => {
                let n = leads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                if fail_first && n == 0 {
                    drop(guard);
                    continue;
                }
                guard.finish(
                    CachedAnswer {
                        status: 202,
                        headers: HeaderMap::new(),
                    },
                    Some(secs(300)),
                    Instant::now(),
                );
                return 202;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_sends_one_subrequest() {
    let cache = Arc::new(AuthCache::new());
    let leads = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..500)
        .map(|_| tokio::spawn(request(cache.clone(), leads.clone(), false)))
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 202);
    }
    assert_eq!(leads.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_leader_is_replaced_by_one_waiter() {
    let cache = Arc::new(AuthCache::new());
    let leads = Arc::new(AtomicUsize::new(0));
    let first = tokio::spawn(request(cache.clone(), leads.clone(), true));
    // Let the first task lead before the others arrive.
    while leads.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let tasks: Vec<_> = (0..200)
        .map(|_| tokio::spawn(request(cache.clone(), leads.clone(), true)))
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 202);
    }
    assert_eq!(first.await.unwrap(), 202);
    assert_eq!(leads.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_task_is_replaced() {
    let cache = Arc::new(AuthCache::new());
    let leads = Arc::new(AtomicUsize::new(0));
    let first = tokio::spawn(request(cache.clone(), leads.clone(), false));
    while leads.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let waiter = tokio::spawn(request(cache.clone(), leads.clone(), false));
    tokio::time::sleep(Duration::from_millis(10)).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    assert_eq!(waiter.await.unwrap(), 202);
    assert_eq!(leads.load(Ordering::SeqCst), 2);
}
