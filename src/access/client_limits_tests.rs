//! Tests of `client_limits`, with a fake clock: every `Instant` is one origin plus a whole number of milliseconds.

use super::*;
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicU32;
use std::thread;

fn at(origin: Instant, ms: u64) -> Instant {
    origin + Duration::from_millis(ms)
}

fn zone(name: &str) -> Arc<str> {
    Arc::from(name)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn limits(connections: Option<u32>, rps: Option<u32>, rpm: Option<u32>, multiplier: u32) -> ClientLimits {
    ClientLimits::new(connections, rps, rpm, multiplier).unwrap()
}

fn refused(which: Which, retry_after_ms: u64) -> Refused {
    Refused {
        retry_after: Duration::from_millis(retry_after_ms),
        which,
    }
}

/// One request, its permit dropped at once: `Ok(())` or the refusal.
fn request(
    state: &LimitState,
    zone: &Arc<str>,
    limits: &ClientLimits,
    client: IpAddr,
    now: Instant,
) -> Result<(), Refused> {
    state.admit(zone, limits, client, now).map(drop)
}

/// Requests at one instant until the first refusal (at most 1 000): how many were admitted, and that refusal.
fn admitted_until_refused(
    state: &LimitState,
    zone: &Arc<str>,
    limits: &ClientLimits,
    client: IpAddr,
    now: Instant,
) -> (usize, Refused) {
    for admitted in 0..1000 {
        if let Err(refusal) = request(state, zone, limits, client, now) {
            return (admitted, refusal);
        }
    }
    panic!("never refused");
}

/// A distinct client per `n`.
fn nth_client(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

// ---------------------------------------------------------------------------------------------------------------
// Configuration

#[test]
fn new_accepts_bounds_and_rejects_outside() {
    let ok = ClientLimits::new(Some(1), Some(1), Some(1), 1).unwrap();
    assert_eq!(
        (ok.connections(), ok.rps(), ok.rpm(), ok.burst_multiplier()),
        (Some(1), Some(1), Some(1), 1)
    );
    let max = ClientLimits::new(
        Some(MAX_CONNECTIONS_PER_CLIENT),
        Some(MAX_RPS),
        Some(MAX_RPM),
        MAX_BURST_MULTIPLIER,
    )
    .unwrap();
    assert_eq!(max.rps_burst(), Some(1_000_000_000));
    assert_eq!(max.rpm_burst(), Some(60_000_000_000));
    assert_eq!(ClientLimits::new(None, None, None, 5), Ok(ClientLimits::UNLIMITED));

    assert_eq!(
        ClientLimits::new(Some(0), None, None, 5),
        Err(ClientLimitsError::Connections(0))
    );
    assert_eq!(
        ClientLimits::new(Some(MAX_CONNECTIONS_PER_CLIENT + 1), None, None, 5),
        Err(ClientLimitsError::Connections(1_000_001))
    );
    assert_eq!(
        ClientLimits::new(None, Some(0), None, 5),
        Err(ClientLimitsError::Rps(0))
    );
    assert_eq!(
        ClientLimits::new(None, Some(MAX_RPS + 1), None, 5),
        Err(ClientLimitsError::Rps(1_000_001))
    );
    assert_eq!(
        ClientLimits::new(None, None, Some(0), 5),
        Err(ClientLimitsError::Rpm(0))
    );
    assert_eq!(
        ClientLimits::new(None, None, Some(MAX_RPM + 1), 5),
        Err(ClientLimitsError::Rpm(60_000_001))
    );
    assert_eq!(
        ClientLimits::new(None, Some(1), None, 0),
        Err(ClientLimitsError::BurstMultiplier(0))
    );
    assert_eq!(
        ClientLimits::new(None, Some(1), None, 1001),
        Err(ClientLimitsError::BurstMultiplier(1001))
    );
    assert_eq!(
        ClientLimits::new(u32::MAX.into(), None, None, 5),
        Err(ClientLimitsError::Connections(4_294_967_295))
    );
}

#[test]
fn error_messages_are_exact() {
    assert_eq!(
        ClientLimitsError::Connections(0).to_string(),
        "limit-connections must be between 1 and 1000000 (unset turns the limit off), got 0"
    );
    assert_eq!(
        ClientLimitsError::Rps(-1).to_string(),
        "limit-rps must be between 1 and 1000000 (unset turns the limit off), got -1"
    );
    assert_eq!(
        ClientLimitsError::Rpm(60_000_001).to_string(),
        "limit-rpm must be between 1 and 60000000 (unset turns the limit off), got 60000001"
    );
    assert_eq!(
        ClientLimitsError::BurstMultiplier(0).to_string(),
        "limit-burst-multiplier must be between 1 and 1000, got 0"
    );
    assert_eq!(
        LimitStateError::MaxTrackedClients(63).to_string(),
        "max tracked clients must be between 64 and 100000, got 63"
    );
}

#[test]
fn annotation_values_follow_ingress_nginx() {
    // Absent, zero and negative are all off (ingress-nginx emits directives only for `Limit > 0`).
    assert_eq!(
        ClientLimits::from_annotation_values(None, None, None, None),
        Ok(ClientLimits::UNLIMITED)
    );
    assert_eq!(
        ClientLimits::from_annotation_values(Some(0), Some(-1), Some(i64::MIN), None),
        Ok(ClientLimits::UNLIMITED)
    );
    let all = ClientLimits::from_annotation_values(Some(2), Some(10), Some(600), None).unwrap();
    assert_eq!(
        (all.connections(), all.rps(), all.rpm(), all.burst_multiplier()),
        (Some(2), Some(10), Some(600), 5)
    );
    assert_eq!((all.rps_burst(), all.rpm_burst()), (Some(50), Some(3000)));
    assert!(!all.is_unlimited());

    let explicit = ClientLimits::from_annotation_values(None, Some(3), None, Some(2)).unwrap();
    assert_eq!((explicit.rps_burst(), explicit.rpm_burst()), (Some(6), None));

    // With a rate on, nginx rejects `burst=0` and `burst=-N`.
    assert_eq!(
        ClientLimits::from_annotation_values(None, Some(1), None, Some(0)),
        Err(ClientLimitsError::BurstMultiplier(0))
    );
    assert_eq!(
        ClientLimits::from_annotation_values(None, None, Some(1), Some(-3)),
        Err(ClientLimitsError::BurstMultiplier(-3))
    );
    assert_eq!(
        ClientLimits::from_annotation_values(None, None, Some(1), Some(i64::MAX)),
        Err(ClientLimitsError::BurstMultiplier(i64::MAX))
    );
    // Without a rate the multiplier is never used, so ingress-nginx accepts anything there.
    let connections_only = ClientLimits::from_annotation_values(Some(5), None, None, Some(0)).unwrap();
    assert_eq!(
        (connections_only.connections(), connections_only.burst_multiplier()),
        (Some(5), 5)
    );

    assert_eq!(
        ClientLimits::from_annotation_values(None, Some(1 << 40), None, None),
        Err(ClientLimitsError::Rps(1 << 40))
    );
    assert_eq!(
        ClientLimits::from_annotation_values(Some(i64::MAX), None, None, None),
        Err(ClientLimitsError::Connections(i64::MAX))
    );
    assert_eq!(
        ClientLimits::from_annotation_values(None, None, Some(60_000_001), None),
        Err(ClientLimitsError::Rpm(60_000_001))
    );
}

#[test]
fn capacity_is_validated_and_split_over_shards_exactly() {
    let origin = Instant::now();
    assert_eq!(
        LimitState::with_max_tracked_clients(origin, SHARD_COUNT - 1).unwrap_err(),
        LimitStateError::MaxTrackedClients(63)
    );
    assert_eq!(
        LimitState::with_max_tracked_clients(origin, MAX_TRACKED_CLIENTS + 1).unwrap_err(),
        LimitStateError::MaxTrackedClients(100_001)
    );
    for max in [SHARD_COUNT, 100, 1000, MAX_TRACKED_CLIENTS] {
        let state = LimitState::with_max_tracked_clients(origin, max).unwrap();
        assert_eq!(state.max_tracked_clients(), max);
        assert_eq!(state.shards.iter().map(|shard| shard.capacity).sum::<usize>(), max);
        assert!(state.shards.iter().all(|shard| shard.capacity >= 1));
    }
    assert_eq!(LimitState::new(origin).max_tracked_clients(), MAX_TRACKED_CLIENTS);
}

#[test]
fn refusal_header_value_rounds_up_to_whole_seconds() {
    let secs = |ms| refused(Which::Rps, ms).retry_after_secs();
    assert_eq!(
        [secs(0), secs(1), secs(999), secs(1000), secs(1001), secs(62_500)],
        [1, 1, 1, 1, 2, 63]
    );
    assert_eq!(
        Refused {
            retry_after: UNPREDICTABLE_RETRY_AFTER,
            which: Which::Capacity
        }
        .retry_after_secs(),
        1
    );
    assert_eq!(
        Refused {
            retry_after: Duration::MAX,
            which: Which::Rpm
        }
        .retry_after_secs(),
        u64::MAX
    );
    assert_eq!(REFUSAL_STATUS_CODE, 503);
}

#[test]
fn which_names_are_stable() {
    let names = [Which::Connections, Which::Rps, Which::Rpm, Which::Capacity].map(|which| which.to_string());
    assert_eq!(names, ["connections", "rps", "rpm", "capacity"]);
}

// ---------------------------------------------------------------------------------------------------------------
// Rates

#[test]
fn rps_with_burst_admits_burst_plus_one_then_one_per_interval() {
    let origin = Instant::now();
    let state = LimitState::new(origin);
    let zone = zone("Ingress default/api");
    let two_per_second = limits(None, Some(2), None, 5); // burst 10
    let client = ip("192.0.2.1");
    let go = |ms| request(&state, &zone, &two_per_second, client, at(origin, ms));

    // nginx admits a new client's first request at excess 0, then 1.000 .. 10.000 <= burst 10: eleven at once.
    for n in 1..=11 {
        assert_eq!(go(0), Ok(()), "request {n}");
    }
    assert_eq!(go(0), Err(refused(Which::Rps, 500)));
    // Refusals are not stored.
    assert_eq!(go(0), Err(refused(Which::Rps, 500)));
    assert_eq!(go(499), Err(refused(Which::Rps, 1)));
    assert_eq!(go(500), Ok(()));
    assert_eq!(go(500), Err(refused(Which::Rps, 500)));
    assert_eq!(go(750), Err(refused(Which::Rps, 250)));
    assert_eq!(go(1000), Ok(()));
    assert_eq!(go(1001), Err(refused(Which::Rps, 499)));
    assert_eq!(state.tracked_clients(), 1);
}

#[test]
fn rps_bucket_is_full_again_exactly_when_drained_by_one_more_request() {
    let origin = Instant::now();
    let state = LimitState::new(origin);
    let zone = zone("Ingress default/api");
    let two_per_second = limits(None, Some(2), None, 5);
    // Two clients with the same history: eleven at 0 (excess 10.000), one at 1000 (-2.000 + 1.000: 9.000).
    let (early, late) = (ip("192.0.2.1"), ip("192.0.2.2"));
    for client in [early, late] {
        assert_eq!(
            admitted_until_refused(&state, &zone, &two_per_second, client, origin).0,
            11
        );
        assert_eq!(
            request(&state, &zone, &two_per_second, client, at(origin, 1000)),
            Ok(())
        );
    }
    // 4 999 ms later 9.998 have drained: the next request lands at excess 0.002, so ten fit, not eleven.
    let (count, refusal) = admitted_until_refused(&state, &zone, &two_per_second, early, at(origin, 5999));
    assert_eq!((count, refusal), (10, refused(Which::Rps, 1)));
    // 5 000 ms later 10.000 (the excess plus one request) have drained: exactly like a new client.
    let (count, refusal) = admitted_until_refused(&state, &zone, &two_per_second, late, at(origin, 6000));
    assert_eq!((count, refusal), (11, refused(Which::Rps, 500)));
}

#[test]
fn rpm_uses_nginx_truncated_rate() {
    let origin = Instant::now();
    let state = LimitState::new(origin);
    let zone = zone("Ingress default/slow");
    let client = ip("198.51.100.7");

    // 1r/m is 1000/60 = 16 thousandths per second: one request per 62.5 s, not 60 s. Burst 5: six at once.
    let one_per_minute = limits(None, None, Some(1), 5);
    let (count, refusal) = admitted_until_refused(&state, &zone, &one_per_minute, client, origin);
    assert_eq!((count, refusal), (6, refused(Which::Rpm, 62_500)));
    assert_eq!(refusal.retry_after_secs(), 63);
    assert_eq!(
        request(&state, &zone, &one_per_minute, client, at(origin, 62_499)),
        Err(refused(Which::Rpm, 1))
    );
    assert_eq!(
        request(&state, &zone, &one_per_minute, client, at(origin, 62_500)),
        Ok(())
    );
    assert_eq!(
        request(&state, &zone, &one_per_minute, client, at(origin, 62_500)),
        Err(refused(Which::Rpm, 62_500))
    );

    // 60r/m drains exactly 1.000 per second; multiplier 1 gives burst 60, so 61 at once.
    let sixty_per_minute = limits(None, None, Some(60), 1);
    let other = ip("198.51.100.8");
    assert_eq!(
        admitted_until_refused(&state, &zone, &sixty_per_minute, other, origin),
        (61, refused(Which::Rpm, 1000))
    );

    // 7r/m is 116 thousandths per second: ceil(1 000 000 / 116) = 8 621 ms (an exact 7/min would be 8 572).
    let seven_per_minute = limits(None, None, Some(7), 1);
    let third = ip("198.51.100.9");
    assert_eq!(
        admitted_until_refused(&state, &zone, &seven_per_minute, third, origin),
        (8, refused(Which::Rpm, 8621))
    );
    assert_eq!(
        request(&state, &zone, &seven_per_minute, third, at(origin, 8620)),
        Err(refused(Which::Rpm, 1))
    );
    assert_eq!(
        request(&state, &zone, &seven_per_minute, third, at(origin, 8621)),
        Ok(())
    );
}

#[test]
fn both_rates_apply_and_a_refusal_charges_neither() {
    let origin = Instant::now();
    let state = LimitState::new(origin);
    let zone = zone("Ingress default/both");
    let client = ip("203.0.113.5");
    // rps 10 (burst 10) and rpm 9 (burst 9, 150 thousandths per second).
    let both = limits(None, Some(10), Some(9), 1);
    let go = |ms| request(&state, &zone, &both, client, at(origin, ms));

    // Ten at once fit both (rpm excess 9.000 <= 9.000); the eleventh fits rps but not rpm.
    for n in 1..=10 {
        assert_eq!(go(0), Ok(()), "request {n}");
    }
    // ceil(1 000 000 / 150) = 6 667. Were the rps bucket charged by these refusals, it would go over its burst
    // from the second one on and the refusal would name rps.
    for _ in 0..30 {
        assert_eq!(go(0), Err(refused(Which::Rpm, 6667)));
    }
    assert_eq!(go(6666), Err(refused(Which::Rpm, 1)));
    assert_eq!(go(6667), Ok(()));
    assert_eq!(go(6667), Err(refused(Which::Rpm, 6667)));
}

#[test]
fn both_rates_refusing_name_rps_and_wait_for_the_slower() {
    let origin = Instant::now();
    let state = LimitState::new(origin);
    let zone = zone("Ingress default/both");
    let client = ip("203.0.113.6");
    // rps 2 (burst 2, 2.000 per second) and rpm 2 (burst 2, 33 thousandths per second).
    let both = limits(None, Some(2), Some(2), 1);
    let go = |ms| request(&state, &zone, &both, client, at(origin, ms));

    assert_eq!([go(0), go(0), go(0)], [Ok(()), Ok(()), Ok(())]);
    // rps would admit again after 500 ms, rpm after ceil(1 000 000 / 33) = 30 304 ms.
    assert_eq!(go(0), Err(refused(Which::Rps, 30_304)));
    assert_eq!(go(500), Err(refused(Which::Rpm, 29_804)));
    assert_eq!(go(30_303), Err(refused(Which::Rpm, 1)));
    assert_eq!(go(30_304), Ok(()));
}

#[test]
fn time_going_backwards_drains_nothing_and_does_not_move_last() {
    let origin = Instant::now();
    let state = LimitState::new(origin);
    let zone = zone("z");
    let client = ip("192.0.2.9");
    let one_per_second = limits(None, Some(1), None, 1);
    let go = |ms| request(&state, &zone, &one_per_second, client, at(origin, ms));

    assert_eq!([go(1000), go(1000)], [Ok(()), Ok(())]);
    // A thread that read the clock earlier but got the lock later: 0 ms elapsed, not -500.
    assert_eq!(go(500), Err(refused(Which::Rps, 1000)));
    assert_eq!(go(1999), Err(refused(Which::Rps, 1)));
    assert_eq!(go(2000), Ok(()));
    // An admitted request with an older clock keeps `last` where it was (nginx stores `last` only when ms != 0).
    let other = ip("192.0.2.11");
    let burst_two = limits(None, Some(1), None, 2);
    let go = |ms| request(&state, &zone, &burst_two, other, at(origin, ms));
    assert_eq!([go(1000), go(500)], [Ok(()), Ok(())]);
    // Excess 1.000 at 1000 ms; 500 ms later 0.500 drained: 1.500, then 2.500 > 2.000.
    assert_eq!(go(1500), Ok(()));
    assert_eq!(go(1500), Err(refused(Which::Rps, 500)));
    // An instant before the origin counts as the origin.
    let late_origin = at(origin, 10_000);
    let state = LimitState::new(late_origin);
    assert_eq!(request(&state, &zone, &one_per_second, client, origin), Ok(()));
    assert_eq!(request(&state, &zone, &one_per_second, client, origin), Ok(()));
    assert_eq!(
        request(&state, &zone, &one_per_second, client, late_origin),
        Err(refused(Which::Rps, 1000))
    );
}

#[test]
fn sub_millisecond_parts_are_truncated_like_nginx_msec_clock() {
    let origin = Instant::now();
    let state = LimitState::new(origin);
    let zone = zone("z");
    let client = ip("192.0.2.10");
    let one_per_second = limits(None, Some(1), None, 1);
    let go = |micros| {
        request(
            &state,
            &zone,
            &one_per_second,
            client,
            origin + Duration::from_micros(micros),
        )
    };

    assert_eq!([go(900), go(900)], [Ok(()), Ok(())]);
    // 0.9 ms and 1000.1 ms are milliseconds 0 and 1000: a full second has passed.
    assert_eq!(go(1_000_100), Ok(()));
    assert_eq!(go(1_000_100), Err(refused(Which::Rps, 1000)));
}

#[test]
fn changed_limits_reuse_the_stored_excess_and_a_disabled_rate_forgets_it() {
    let origin = Instant::now();
    let state = LimitState::new(origin);
    let zone = zone("Ingress default/api");
    let client = ip("192.0.2.20");
    let slow = limits(None, Some(1), None, 1);
    let fast = limits(None, Some(100), None, 1);
    let rpm_only = limits(None, None, Some(600), 1);

    assert_eq!(
        admitted_until_refused(&state, &zone, &slow, client, origin),
        (2, refused(Which::Rps, 1000))
    );
    // Excess 1.000 carried over: 2.000 .. 100.000 fit the new burst of 100, i.e. 99 more, not a new client's 101.
    assert_eq!(
        admitted_until_refused(&state, &zone, &fast, client, origin),
        (99, refused(Which::Rps, 10))
    );
    // rps off: its bucket is dropped, so turning it back on starts afresh.
    assert_eq!(request(&state, &zone, &rpm_only, client, origin), Ok(()));
    assert_eq!(
        admitted_until_refused(&state, &zone, &fast, client, origin),
        (101, refused(Which::Rps, 10))
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Connections

#[test]
fn connections_are_counted_and_released_on_drop_on_any_thread() {
    let origin = Instant::now();
    let state = LimitState::new(origin);
    let zone = zone("Ingress default/events");
    let two_streams = limits(Some(2), None, None, 5);
    let client = ip("2001:db8::1");

    let first = state.admit(&zone, &two_streams, client, origin).unwrap();
    let second = state.admit(&zone, &two_streams, client, origin).unwrap();
    assert!(first.holds_connection_slot() && second.holds_connection_slot());
    assert_eq!(
        state.admit(&zone, &two_streams, client, origin).unwrap_err(),
        Refused {
            retry_after: UNPREDICTABLE_RETRY_AFTER,
            which: Which::Connections
        }
    );
    drop(first);
    let third = state.admit(&zone, &two_streams, client, origin).unwrap();
    assert_eq!(
        request(&state, &zone, &two_streams, client, origin).unwrap_err().which,
        Which::Connections
    );

    thread::spawn(move || drop(second)).join().unwrap();
    let fourth = state.admit(&zone, &two_streams, client, origin).unwrap();
    assert_eq!(
        request(&state, &zone, &two_streams, client, origin).unwrap_err().which,
        Which::Connections
    );
    assert_eq!(state.tracked_clients(), 1);

    drop((third, fourth));
    // A connection-only entry has nothing left to remember once its last slot is released.
    assert_eq!(state.tracked_clients(), 0);
}

#[test]
fn a_request_refused_for_connections_is_still_charged_to_the_rates() {
    let origin = Instant::now();
    let state = LimitState::new(origin);
    let zone = zone("Ingress default/events");
    let client = ip("192.0.2.30");
    let one_stream_one_rps = limits(Some(1), Some(1), None, 1); // burst 1

    let stream = state.admit(&zone, &one_stream_one_rps, client, origin).unwrap();
    // nginx runs limit_req before limit_conn: this one passes the rate (excess 1.000) and is refused for connections.
    assert_eq!(
        request(&state, &zone, &one_stream_one_rps, client, origin)
            .unwrap_err()
            .which,
        Which::Connections
    );
    // So the bucket is at 1.000 and the next is refused by the rate, without being counted as a connection.
    assert_eq!(
        request(&state, &zone, &one_stream_one_rps, client, origin),
        Err(refused(Which::Rps, 1000))
    );
    drop(stream);
    // The released entry still has a charged bucket, so it is kept.
    assert_eq!(state.tracked_clients(), 1);
    assert_eq!(
        request(&state, &zone, &one_stream_one_rps, client, at(origin, 999)),
        Err(refused(Which::Rps, 1))
    );
    assert_eq!(
        request(&state, &zone, &one_stream_one_rps, client, at(origin, 1000)),
        Ok(())
    );
}

#[test]
fn permits_are_send_sync_and_static() {
    fn assert_owned<T: Send + Sync + 'static>() {}
    assert_owned::<Permit>();
    assert_owned::<LimitState>();
    assert_owned::<Refused>();
}

#[test]
fn unlimited_zones_and_allowlisted_clients_track_nothing() {
    let origin = Instant::now();
    let state = LimitState::new(origin);
    let permit = state
        .admit(&zone("z"), &ClientLimits::UNLIMITED, ip("192.0.2.1"), origin)
        .unwrap();
    assert!(!permit.holds_connection_slot());
    assert!(!Permit::unlimited().holds_connection_slot());
    assert_eq!(state.tracked_clients(), 0);
    // A rate-only zone takes no connection slot either.
    let rate_only = state
        .admit(&zone("z"), &limits(None, Some(1), None, 1), ip("192.0.2.1"), origin)
        .unwrap();
    assert!(!rate_only.holds_connection_slot());
    assert_eq!(state.tracked_clients(), 1);
}

// ---------------------------------------------------------------------------------------------------------------
// Keys

#[test]
fn zones_and_clients_are_independent_and_zones_compare_by_name() {
    let origin = Instant::now();
    let state = LimitState::new(origin);
    let one_per_second = limits(None, Some(1), None, 1);
    let api = zone("Ingress default/api");
    let web = zone("Ingress default/web");
    let client = ip("192.0.2.1");

    assert_eq!(
        admitted_until_refused(&state, &api, &one_per_second, client, origin).0,
        2
    );
    assert_eq!(
        admitted_until_refused(&state, &web, &one_per_second, client, origin).0,
        2
    );
    assert_eq!(
        admitted_until_refused(&state, &api, &one_per_second, ip("192.0.2.2"), origin).0,
        2
    );
    // A rebuilt routing table makes a new Arc with the same name: same state.
    let rebuilt = zone("Ingress default/api");
    assert_eq!(
        request(&state, &rebuilt, &one_per_second, client, origin),
        Err(refused(Which::Rps, 1000))
    );
    assert_eq!(state.tracked_clients(), 3);
}

#[test]
fn ipv6_clients_are_keyed_by_full_address_and_mapped_ipv4_as_ipv4() {
    let origin = Instant::now();
    let state = LimitState::new(origin);
    let one_per_second = limits(None, Some(1), None, 1);
    let zone = zone("z");

    // Same /64, different addresses: different clients, as with $binary_remote_addr.
    assert_eq!(
        admitted_until_refused(&state, &zone, &one_per_second, ip("2001:db8::1"), origin).0,
        2
    );
    assert_eq!(
        admitted_until_refused(&state, &zone, &one_per_second, ip("2001:db8::2"), origin).0,
        2
    );
    // A dual-stack socket's view of an IPv4 peer is that peer.
    assert_eq!(
        admitted_until_refused(&state, &zone, &one_per_second, ip("192.0.2.1"), origin).0,
        2
    );
    assert_eq!(
        request(&state, &zone, &one_per_second, ip("::ffff:192.0.2.1"), origin),
        Err(refused(Which::Rps, 1000))
    );
    // The IPv4-compatible form (deprecated, not mapped) is a different address.
    assert_eq!(
        request(&state, &zone, &one_per_second, ip("::192.0.2.1"), origin),
        Ok(())
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Capacity and sweeping

/// Admits new clients (from `next`) until the state is full; returns the permits held.
fn fill(
    state: &LimitState,
    zone: &Arc<str>,
    limits: &ClientLimits,
    now: Instant,
    next: &mut u32,
    permits: &mut Vec<Permit>,
) {
    let start = *next;
    while state.tracked_clients() < state.max_tracked_clients() {
        assert!(*next - start < 100_000, "the table never filled");
        match state.admit(zone, limits, nth_client(*next), now) {
            Ok(permit) => permits.push(permit),
            Err(refusal) => assert_eq!(refusal.which, Which::Capacity),
        }
        *next += 1;
    }
}

#[test]
fn a_table_full_of_live_entries_refuses_new_clients_with_capacity() {
    let origin = Instant::now();
    let state = LimitState::with_max_tracked_clients(origin, 64).unwrap();
    let zone = zone("Ingress default/events");
    let one_stream = limits(Some(1), None, None, 5);
    let (mut next, mut permits) = (0, Vec::new());
    fill(&state, &zone, &one_stream, origin, &mut next, &mut permits);
    assert_eq!((state.tracked_clients(), permits.len()), (64, 64));

    for n in next..next + 200 {
        assert_eq!(
            state
                .admit(&zone, &one_stream, nth_client(n), at(origin, 3_600_000))
                .unwrap_err(),
            Refused {
                retry_after: UNPREDICTABLE_RETRY_AFTER,
                which: Which::Capacity
            }
        );
    }
    // Known clients are still judged by their own limits, not refused for capacity.
    let known = (0..next).map(nth_client).find(|client| {
        request(&state, &zone, &one_stream, *client, origin).map_err(|refusal| refusal.which) == Err(Which::Connections)
    });
    assert!(known.is_some());
    assert_eq!(state.tracked_clients(), 64);

    drop(permits);
    assert_eq!(state.tracked_clients(), 0);
    assert!(state.admit(&zone, &one_stream, nth_client(next + 200), origin).is_ok());
}

#[test]
fn a_table_full_of_idle_entries_is_swept_and_admits_but_charged_entries_survive() {
    let origin = Instant::now();
    let state = LimitState::with_max_tracked_clients(origin, 128).unwrap();
    let zone = zone("Ingress default/api");
    let one_per_second = limits(None, Some(1), None, 1);

    // Client A is charged twice: full again at 2000 ms. Everybody else once: full again at 1000 ms.
    let a = ip("192.0.2.99");
    assert_eq!(
        [
            request(&state, &zone, &one_per_second, a, origin),
            request(&state, &zone, &one_per_second, a, origin)
        ],
        [Ok(()), Ok(())]
    );
    let (mut next, mut permits) = (0, Vec::new());
    fill(&state, &zone, &one_per_second, origin, &mut next, &mut permits);
    assert!(permits.iter().all(|permit| !permit.holds_connection_slot()));
    assert_eq!(state.tracked_clients(), 128);

    // Nothing is removable before 1000 ms.
    for n in next..next + 200 {
        assert_eq!(
            request(&state, &zone, &one_per_second, nth_client(n), at(origin, 999)),
            Err(Refused {
                retry_after: UNPREDICTABLE_RETRY_AFTER,
                which: Which::Capacity
            })
        );
    }
    next += 200;
    // At 1000 ms the first new client is admitted (every shard holds at least one idle entry), and 2000 new
    // clients reach every shard, which each sweep.
    assert_eq!(
        request(&state, &zone, &one_per_second, nth_client(next), at(origin, 1000)),
        Ok(())
    );
    let mut admitted = 1;
    for n in next + 1..next + 2000 {
        match request(&state, &zone, &one_per_second, nth_client(n), at(origin, 1000)) {
            Ok(()) => admitted += 1,
            Err(refusal) => assert_eq!(refusal.which, Which::Capacity),
        }
    }
    // Every slot but A's was freed and refilled.
    assert_eq!(admitted, 127);
    assert_eq!(state.tracked_clients(), 128);
    // A kept its state: excess 1.000 - 1.000 + 1.000 fits once, then the burst is used up.
    assert_eq!(request(&state, &zone, &one_per_second, a, at(origin, 1000)), Ok(()));
    assert_eq!(
        request(&state, &zone, &one_per_second, a, at(origin, 1000)),
        Err(refused(Which::Rps, 1000))
    );
}

#[test]
fn periodic_sweeps_forget_departed_clients() {
    let origin = Instant::now();
    let state = LimitState::new(origin);
    let zone = zone("Ingress default/api");
    let one_per_second = limits(None, Some(1), None, 1);

    for n in 0..40_000 {
        assert_eq!(request(&state, &zone, &one_per_second, nth_client(n), origin), Ok(()));
    }
    assert_eq!(state.tracked_clients(), 40_000);
    // Ten seconds later the first wave is full again; each shard sweeps within SWEEP_INTERVAL_INSERTS inserts
    // (about 625 land in each shard per wave), and keeps the second wave, charged until 11 s.
    for n in 40_000..80_000 {
        assert_eq!(
            request(&state, &zone, &one_per_second, nth_client(n), at(origin, 10_000)),
            Ok(())
        );
    }
    assert_eq!(state.tracked_clients(), 40_000);
}

#[cfg(target_pointer_width = "64")]
#[test]
fn entry_size_matches_the_memory_estimate() {
    assert_eq!(std::mem::size_of::<(ClientKey, ClientEntry)>(), 104);
}

// ---------------------------------------------------------------------------------------------------------------
// Concurrency

#[test]
fn concurrent_streams_never_exceed_the_connection_limit() {
    const THREADS: usize = 4;
    const ITERATIONS: usize = 2_000;
    let origin = Instant::now();
    let state = Arc::new(LimitState::new(origin));
    let zone = zone("Ingress default/events");
    let three_streams = limits(Some(3), None, None, 5);
    let client = ip("192.0.2.77");
    let in_flight = Arc::new(AtomicU32::new(0));
    let most_in_flight = Arc::new(AtomicU32::new(0));
    let admitted = Arc::new(AtomicU32::new(0));

    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (state, zone, in_flight, most_in_flight, admitted) = (
                state.clone(),
                zone.clone(),
                in_flight.clone(),
                most_in_flight.clone(),
                admitted.clone(),
            );
            thread::spawn(move || {
                for _ in 0..ITERATIONS {
                    match state.admit(&zone, &three_streams, client, origin) {
                        Ok(permit) => {
                            // Counted after taking the slot and uncounted before giving it back, so `in_flight`
                            // never exceeds the slots actually held.
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            most_in_flight.fetch_max(now, Ordering::SeqCst);
                            admitted.fetch_add(1, Ordering::SeqCst);
                            thread::yield_now();
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            // Half the permits end on another thread, as a stream moved across tasks would.
                            if admitted.load(Ordering::SeqCst) % 2 == 0 {
                                thread::spawn(move || drop(permit)).join().unwrap();
                            } else {
                                drop(permit);
                            }
                        }
                        Err(refusal) => assert_eq!(refusal.which, Which::Connections),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let most = most_in_flight.load(Ordering::SeqCst);
    assert!((1..=3).contains(&most), "at most 3 streams, saw {most}");
    assert!(admitted.load(Ordering::SeqCst) > 0);
    assert_eq!(state.tracked_clients(), 0);
}

#[test]
fn concurrent_requests_at_one_instant_admit_exactly_the_burst_plus_one() {
    const THREADS: usize = 4;
    let origin = Instant::now();
    let state = Arc::new(LimitState::new(origin));
    let zone = zone("Ingress default/api");
    let ten_per_second = limits(None, Some(10), None, 1); // burst 10
    let client = ip("192.0.2.78");

    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (state, zone) = (state.clone(), zone.clone());
            thread::spawn(move || {
                let mut outcomes = (0, 0);
                for _ in 0..100 {
                    match request(&state, &zone, &ten_per_second, client, origin) {
                        Ok(()) => outcomes.0 += 1,
                        Err(refusal) => {
                            assert_eq!(refusal, refused(Which::Rps, 100));
                            outcomes.1 += 1;
                        }
                    }
                }
                outcomes
            })
        })
        .collect();
    let totals = workers
        .into_iter()
        .map(|worker| worker.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert_eq!(totals, (11, 389));
}
