//! How the reflectors retry after a watch error.
//!
//! kube-runtime's `default_backoff()` treats every watch error alike: it
//! backs off exponentially from 800 ms to 30 s, and only resets on an event.
//! After an apiserver outage that is the wrong answer twice over. While the
//! apiserver is away the failed reconnects pile the delay up to 30 s, so the
//! watchers come back long after it does; and the first answer they then get
//! is `410 Gone` ("too old resource version ... Expired"), the normal answer
//! after a restart (the new apiserver's watch cache starts at the current
//! revision), which only a fresh list can continue from, yet it was made to
//! wait out the accumulated back-off before re-listing.
//!
//! [`Retry`] is the policy, pure and unit-tested: an expired resource
//! version re-lists at once; an unreachable or overloaded apiserver is
//! retried quickly and often (200 ms doubling to a 1 s cap, with jitter); a
//! refusal (401, 403, 404 and the like, a configuration problem that fast
//! retries will not fix) backs off from 1 s to 30 s. During an outage, a
//! retried watch that stays silent for 2 s (4 s, 8 s, ... up to 30 s) is
//! started over with a fresh list, since silence then proves nothing (see
//! [`Retry::quiet_window`]). Only an answer from the apiserver (a listed
//! object, the end of a list, a watch event) ends the outage and resets
//! the delays. [`resilient`] applies the policy to a `watcher` stream and
//! logs one warning per outage, a reminder a minute while it lasts, and
//! one line when the watch recovers, not one per retry.

use futures_util::stream::{BoxStream, Stream, StreamExt};
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// What a watch error means for the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// `410 Gone`: the resource version is older than the apiserver keeps,
    /// so only a fresh list can continue. Not an error to back off from.
    Expired,
    /// The apiserver could not be reached, or said it is unavailable,
    /// overloaded or still starting (transport errors, 5xx, 429, 408).
    Unavailable,
    /// The apiserver refused the request (401, 403, 404, ...): it will not
    /// change until someone fixes the configuration.
    Rejected,
}

impl Failure {
    /// Classifies a watcher error.
    pub fn of(error: &watcher::Error) -> Failure {
        let status = match error {
            watcher::Error::WatchError(status) => Some(status.as_ref()),
            watcher::Error::InitialListFailed(kube::Error::Api(status))
            | watcher::Error::WatchStartFailed(kube::Error::Api(status))
            | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.as_ref()),
            watcher::Error::NoResourceVersion => return Failure::Rejected,
            _ => None,
        };
        match status {
            None => Failure::Unavailable,
            Some(s) if s.code == 410 || s.reason == "Expired" || s.reason == "Gone" => Failure::Expired,
            Some(s) if s.code == 0 || s.code == 408 || s.code == 429 || s.code >= 500 => Failure::Unavailable,
            Some(_) => Failure::Rejected,
        }
    }
}

/// The delays; [`Policy::default`] is what the reflectors use.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// First delay after an [`Failure::Unavailable`] error.
    pub initial: Duration,
    /// Ceiling of that delay, however long the outage lasts.
    pub max: Duration,
    /// First delay after a [`Failure::Rejected`] error.
    pub rejected_initial: Duration,
    /// Ceiling of that delay.
    pub rejected_max: Duration,
    /// How often an outage that goes on is reported again.
    pub reminder: Duration,
    /// During an outage, how long a retried watch may go without any
    /// answer before it is started over with a fresh list (doubling each
    /// time, up to [`Policy::max_quiet`]).
    pub quiet: Duration,
    pub max_quiet: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(1),
            rejected_initial: Duration::from_secs(1),
            rejected_max: Duration::from_secs(30),
            reminder: Duration::from_secs(60),
            quiet: Duration::from_secs(2),
            max_quiet: Duration::from_secs(30),
        }
    }
}

/// What to do after one error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// How long to wait before the next attempt.
    pub delay: Duration,
    /// Whether to start over with a fresh list.
    pub relist: bool,
    /// What, if anything, deserves more than a debug line.
    pub report: Report,
}

/// The log line a [`Step`] calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// A retry inside a known outage: debug only.
    Quiet,
    /// The first error after a success: one warning.
    OutageStarted,
    /// The outage has gone on for another [`Policy::reminder`].
    StillFailing { since: Duration, failures: u32 },
    /// The resource version expired; re-listing.
    Expired,
}

/// An outage that ended, for the recovery line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    pub lasted: Duration,
    pub failures: u32,
}

#[derive(Debug, Clone, Copy)]
struct Outage {
    since: Instant,
    failures: u32,
    reported: Instant,
}

/// The retry state of one watch.
#[derive(Debug, Clone)]
pub struct Retry {
    policy: Policy,
    /// Consecutive failures that back off (not the first expiry).
    attempts: u32,
    /// Expiries since the last success: the second in a row backs off, so
    /// an apiserver that keeps answering 410 to fresh lists is not hammered.
    expired: u32,
    outage: Option<Outage>,
    /// Fresh starts after a quiet spell, in this outage.
    quiet_restarts: u32,
}

impl Retry {
    pub fn new(policy: Policy) -> Retry {
        Retry {
            policy,
            attempts: 0,
            expired: 0,
            outage: None,
            quiet_restarts: 0,
        }
    }

    /// Whether an outage is open.
    pub fn in_outage(&self) -> bool {
        self.outage.is_some()
    }

    /// How long the watch may stay silent before [`Retry::quiet`] is due;
    /// `None` outside an outage, where silence is normal.
    ///
    /// After an outage nothing proves a resumed watch works: the watcher
    /// sends nothing when it resumes from its resource version, and an
    /// apiserver that is still starting can hold a request for seconds
    /// (seen: 6 s for a watch of a custom resource sent just before
    /// `/readyz` passed, while a new request was answered at once). A
    /// fresh list settles it either way.
    pub fn quiet_window(&self) -> Option<Duration> {
        self.outage?;
        let doubled = self.policy.quiet.saturating_mul(1u32 << self.quiet_restarts.min(16));
        Some(doubled.min(self.policy.max_quiet))
    }

    /// The watch stayed silent for [`Retry::quiet_window`]: start over
    /// with a fresh list. The outage stays open until that list succeeds.
    pub fn quiet(&mut self) -> Step {
        self.quiet_restarts = self.quiet_restarts.saturating_add(1);
        Step {
            delay: Duration::ZERO,
            relist: true,
            report: Report::Quiet,
        }
    }

    /// Decides the next step after `failure`. `jitter` in `[0, 1)` spreads
    /// the delays of many watchers; the delay lies in `[d/2, d]` for the
    /// exponential `d`, so it never exceeds the ceiling.
    pub fn failed(&mut self, failure: Failure, now: Instant, jitter: f64) -> Step {
        if failure == Failure::Expired {
            self.expired += 1;
            if self.expired == 1 {
                return Step {
                    delay: Duration::ZERO,
                    relist: true,
                    report: Report::Expired,
                };
            }
        }
        self.attempts = self.attempts.saturating_add(1);
        let (initial, max) = match failure {
            Failure::Rejected => (self.policy.rejected_initial, self.policy.rejected_max),
            Failure::Expired | Failure::Unavailable => (self.policy.initial, self.policy.max),
        };
        let doublings = (self.attempts - 1).min(30);
        let base = initial.saturating_mul(1u32 << doublings.min(31)).min(max);
        let delay = base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        let report = match &mut self.outage {
            None => {
                self.outage = Some(Outage {
                    since: now,
                    failures: 1,
                    reported: now,
                });
                if failure == Failure::Expired {
                    Report::Expired
                } else {
                    Report::OutageStarted
                }
            }
            Some(outage) => {
                outage.failures = outage.failures.saturating_add(1);
                if failure == Failure::Expired {
                    Report::Expired
                } else if now.saturating_duration_since(outage.reported) >= self.policy.reminder {
                    outage.reported = now;
                    Report::StillFailing {
                        since: now.saturating_duration_since(outage.since),
                        failures: outage.failures,
                    }
                } else {
                    Report::Quiet
                }
            }
        };
        Step {
            delay,
            relist: failure == Failure::Expired,
            report,
        }
    }

    /// Records a success; returns the outage it ends, if any.
    pub fn succeeded(&mut self, now: Instant) -> Option<Recovery> {
        self.attempts = 0;
        self.expired = 0;
        self.quiet_restarts = 0;
        self.outage.take().map(|o| Recovery {
            lasted: now.saturating_duration_since(o.since),
            failures: o.failures,
        })
    }
}

/// A jitter in `[0, 1)` without a random-number dependency: std's
/// `RandomState` is freshly keyed per call.
fn jitter() -> f64 {
    use std::hash::BuildHasher;
    let h = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (h >> 11) as f64 / (1u64 << 53) as f64
}

struct Resilient<K: 'static> {
    api: Api<K>,
    config: watcher::Config,
    kind: &'static str,
    inner: BoxStream<'static, watcher::Result<Event<K>>>,
    retry: Retry,
}

/// A `watcher` over `api` that retries by [`Retry`] and never yields an
/// error: errors are logged here, and a `410 Gone` starts a fresh watcher,
/// whose list replaces the reflector's store on `InitDone`.
pub fn resilient<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: &'static str,
) -> impl Stream<Item = watcher::Result<Event<K>>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let inner = watcher(api.clone(), config.clone()).boxed();
    let state = Resilient {
        api,
        config,
        kind,
        inner,
        retry: Retry::new(Policy::default()),
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            let next = match st.retry.quiet_window() {
                Some(window) => match tokio::time::timeout(window, st.inner.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        debug!(
                            kind = st.kind,
                            ?window,
                            "no answer since reconnecting; re-listing to be sure"
                        );
                        st.retry.quiet();
                        st.inner = watcher(st.api.clone(), st.config.clone()).boxed();
                        continue;
                    }
                },
                None => st.inner.next().await,
            };
            match next? {
                Ok(event) => {
                    // `Init` comes before the list is even sent: no proof.
                    if !matches!(event, Event::Init) {
                        if let Some(r) = st.retry.succeeded(Instant::now()) {
                            info!(kind = st.kind, outage = ?r.lasted, failures = r.failures, "watch recovered");
                        }
                    }
                    return Some((Ok(event), st));
                }
                Err(error) => {
                    let failure = Failure::of(&error);
                    let step = st.retry.failed(failure, Instant::now(), jitter());
                    let kind = st.kind;
                    match step.report {
                        Report::Quiet => debug!(kind, %error, delay = ?step.delay, "watch retry"),
                        Report::OutageStarted => {
                            warn!(kind, %error, "watch failed; reconnecting (one warning per outage)")
                        }
                        Report::StillFailing { since, failures } => {
                            warn!(kind, %error, failing_for = ?since, failures, "watch still failing; reconnecting")
                        }
                        Report::Expired => {
                            info!(kind, delay = ?step.delay, "watch resource version expired; re-listing")
                        }
                    }
                    if step.relist {
                        st.inner = watcher(st.api.clone(), st.config.clone()).boxed();
                    }
                    if !step.delay.is_zero() {
                        tokio::time::sleep(step.delay).await;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
#[path = "watch_retry_tests.rs"]
mod tests;
