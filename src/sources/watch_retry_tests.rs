//! Unit tests of `watch_retry.rs`.

use super::*;
use kube::core::Status;

fn status(code: u16, reason: &str) -> Box<Status> {
    Box::new(Status::failure("m", reason).with_code(code))
}

#[test]
fn errors_are_classified_by_what_retrying_can_do() {
    use watcher::Error as E;
    let expired = E::WatchError(status(410, "Expired"));
    assert_eq!(Failure::of(&expired), Failure::Expired);
    let gone_at_start = E::WatchStartFailed(kube::Error::Api(status(410, "Gone")));
    assert_eq!(Failure::of(&gone_at_start), Failure::Expired);
    let reason_only = E::WatchError(status(0, "Expired"));
    assert_eq!(Failure::of(&reason_only), Failure::Expired);
    for code in [500, 503, 504, 429, 408] {
        let e = E::InitialListFailed(kube::Error::Api(status(code, "x")));
        assert_eq!(Failure::of(&e), Failure::Unavailable, "{code}");
    }
    let io = E::WatchFailed(kube::Error::ReadEvents(std::io::Error::other("reset")));
    assert_eq!(Failure::of(&io), Failure::Unavailable);
    for code in [401, 403, 404, 422] {
        let e = E::WatchStartFailed(kube::Error::Api(status(code, "x")));
        assert_eq!(Failure::of(&e), Failure::Rejected, "{code}");
    }
    assert_eq!(Failure::of(&E::NoResourceVersion), Failure::Rejected);
}

#[test]
fn expired_resource_version_relists_at_once_even_after_a_long_outage() {
    let mut r = Retry::new(Policy::default());
    let t = Instant::now();
    for i in 0..100 {
        let step = r.failed(Failure::Unavailable, t + Duration::from_millis(300 * i), 0.99);
        assert!(step.delay <= Duration::from_secs(1), "{step:?}");
        assert!(!step.relist);
    }
    let step = r.failed(Failure::Expired, t + Duration::from_secs(30), 0.5);
    assert_eq!(
        step,
        Step {
            delay: Duration::ZERO,
            relist: true,
            report: Report::Expired
        }
    );
}

#[test]
fn unavailable_backs_off_from_200ms_to_a_1s_ceiling() {
    let mut r = Retry::new(Policy::default());
    let t = Instant::now();
    let delays: Vec<_> = (0..6)
        .map(|_| r.failed(Failure::Unavailable, t, 0.999_999).delay)
        .collect();
    let ms: Vec<_> = delays.iter().map(|d| d.as_millis()).collect();
    assert_eq!(ms, [199, 399, 799, 999, 999, 999]);
    // Jitter spreads each delay over [d/2, d].
    let mut r = Retry::new(Policy::default());
    assert_eq!(r.failed(Failure::Unavailable, t, 0.0).delay, Duration::from_millis(100));
}

#[test]
fn rejected_backs_off_to_30s() {
    let mut r = Retry::new(Policy::default());
    let t = Instant::now();
    let last = (0..10).map(|_| r.failed(Failure::Rejected, t, 0.999_999).delay).last();
    assert_eq!(last.unwrap().as_secs(), 29);
    assert_eq!(r.failed(Failure::Rejected, t, 0.0).delay, Duration::from_secs(15));
}

#[test]
fn a_success_resets_the_delay_and_ends_the_outage() {
    let mut r = Retry::new(Policy::default());
    let t = Instant::now();
    for _ in 0..5 {
        r.failed(Failure::Unavailable, t, 0.999_999);
    }
    assert!(r.in_outage());
    let rec = r.succeeded(t + Duration::from_secs(4)).unwrap();
    assert_eq!(
        rec,
        Recovery {
            lasted: Duration::from_secs(4),
            failures: 5
        }
    );
    assert!(!r.in_outage());
    assert_eq!(r.succeeded(t), None, "only one recovery per outage");
    assert_eq!(r.failed(Failure::Unavailable, t, 0.999_999).delay.as_millis(), 199);
}

#[test]
fn silence_after_reconnecting_relists_with_doubling_patience() {
    let mut r = Retry::new(Policy::default());
    let t = Instant::now();
    assert_eq!(r.quiet_window(), None, "a quiet watch is normal outside an outage");
    r.failed(Failure::Unavailable, t, 0.5);
    assert_eq!(r.quiet_window(), Some(Duration::from_secs(2)));
    let step = r.quiet();
    assert!(step.relist);
    assert_eq!(step.delay, Duration::ZERO);
    assert!(r.in_outage(), "only a list that succeeds ends the outage");
    assert_eq!(r.quiet_window(), Some(Duration::from_secs(4)));
    for _ in 0..10 {
        r.quiet();
    }
    assert_eq!(r.quiet_window(), Some(Duration::from_secs(30)));
    r.succeeded(t);
    assert_eq!(r.quiet_window(), None);
    r.failed(Failure::Unavailable, t, 0.5);
    assert_eq!(r.quiet_window(), Some(Duration::from_secs(2)));
}

#[test]
fn expiring_again_without_a_success_in_between_backs_off() {
    let mut r = Retry::new(Policy::default());
    let t = Instant::now();
    assert_eq!(r.failed(Failure::Expired, t, 0.5).delay, Duration::ZERO);
    let second = r.failed(Failure::Expired, t, 0.999_999);
    assert!(second.relist);
    assert_eq!(second.delay.as_millis(), 199);
    r.succeeded(t);
    assert_eq!(r.failed(Failure::Expired, t, 0.5).delay, Duration::ZERO);
}

#[test]
fn one_warning_per_outage_then_a_reminder_a_minute() {
    let mut r = Retry::new(Policy::default());
    let t = Instant::now();
    let reports: Vec<_> = (0..200)
        .map(|i| {
            r.failed(Failure::Unavailable, t + Duration::from_millis(500 * i), 0.5)
                .report
        })
        .collect();
    assert_eq!(reports[0], Report::OutageStarted);
    let reminders: Vec<_> = reports
        .iter()
        .filter_map(|r| match r {
            Report::StillFailing { since, failures } => Some((since.as_secs(), *failures)),
            _ => None,
        })
        .collect();
    // 200 errors over 99.5 s: one warning, one reminder at 60 s.
    assert_eq!(reminders, [(60, 121)]);
    assert_eq!(reports.iter().filter(|r| **r == Report::Quiet).count(), 198);
    r.succeeded(t);
    assert_eq!(r.failed(Failure::Unavailable, t, 0.5).report, Report::OutageStarted);
}
