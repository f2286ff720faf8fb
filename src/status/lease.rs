//! The status-writer Lease: leadership that ends when renewals stop.
//!
//! kube-lease-manager's `watch()` only reports a change of holder that it
//! has read back from the API: while the apiserver is unreachable every
//! renewal fails, nothing is read, and the channel says `true` for as long
//! as the outage lasts, although the Lease expired long ago and another
//! replica may already hold it. This module keeps leader election in the
//! style of client-go instead, with two rules:
//!
//! - A replica leads only until `lease duration` after it *sent* its last
//!   successful renewal (local monotonic clock). When that passes without a
//!   renewal it reports `false`, whether or not the apiserver can be asked.
//! - A replica takes a Lease held by another only once it has seen the
//!   record unchanged for the holder's lease duration (again by its own
//!   clock, so clock skew between nodes does not matter), and writes with
//!   the resourceVersion it read, so of two replicas that try at once, one
//!   wins and the other gets a conflict.
//!
//! As the holder sent its renewal before the other replica saw it, the
//! holder always gives up before anyone else can take over.
//!
//! [`Elector`] is the decision logic, pure and unit-tested; [`run`] drives
//! it against the API and publishes leadership on a `watch` channel.
//!
//! Two more duties of a replica that leaves or owns the Lease:
//!
//! - On shutdown the holder stops writing status, then *releases* the Lease
//!   (no holder, duration 1 s), so another replica takes over at its next
//!   look instead of waiting out the whole duration (client-go's
//!   `ReleaseOnCancel`).
//! - The holder names its own Pod as the Lease's owner, so the Lease is
//!   garbage-collected with the last replica: `helm uninstall` leaves no
//!   Lease behind, although the chart never created one.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The parts of a Lease that say who holds it; any change to them shows
/// that the holder is alive.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    pub holder: Option<String>,
    pub renew_time: Option<MicroTime>,
    pub duration_secs: Option<i32>,
    pub transitions: Option<i32>,
}

impl Record {
    fn of(lease: &Lease) -> Record {
        let spec = lease.spec.clone().unwrap_or_default();
        Record {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renew_time: spec.renew_time,
            duration_secs: spec.lease_duration_seconds,
            transitions: spec.lease_transitions,
        }
    }
}

/// What to do with a Lease just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or its holder let it expire: take it.
    Acquire,
    /// Another replica holds it; it cannot expire before this instant.
    Wait(Instant),
}

/// Leader election state of one replica.
#[derive(Debug, Clone)]
pub struct Elector {
    identity: String,
    duration: Duration,
    /// The end of our leadership: last successful renewal sent + duration.
    held_until: Option<Instant>,
    /// The record last read, and since when it has looked like that.
    observed: Option<(Record, Instant)>,
}

impl Elector {
    pub fn new(identity: impl Into<String>, duration: Duration) -> Elector {
        Elector {
            identity: identity.into(),
            duration,
            held_until: None,
            observed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether this replica leads at `now`.
    pub fn is_leader(&self, now: Instant) -> bool {
        self.held_until.is_some_and(|until| now < until)
    }

    /// When leadership ends unless renewed; `None` when not leading.
    pub fn held_until(&self) -> Option<Instant> {
        self.held_until
    }

    /// Notes a record read from the API at `now`, and decides.
    pub fn observe(&mut self, record: Record, now: Instant) -> Claim {
        let since = match &self.observed {
            Some((seen, since)) if *seen == record => *since,
            _ => now,
        };
        let claim = match &record.holder {
            Some(h) if *h == self.identity => Claim::Renew,
            None => Claim::Acquire,
            Some(_) => {
                // Another holder: whatever we believed, we do not lead.
                self.held_until = None;
                let theirs = record
                    .duration_secs
                    .filter(|s| *s > 0)
                    .map_or(self.duration, |s| Duration::from_secs(s as u64));
                let until = since + theirs;
                if now >= until {
                    Claim::Acquire
                } else {
                    Claim::Wait(until)
                }
            }
        };
        self.observed = Some((record, since));
        claim
    }

    /// A renewal or acquisition sent at `sent` succeeded.
    pub fn renewed(&mut self, sent: Instant) {
        self.held_until = Some(sent + self.duration);
    }

    /// When to try next, after an attempt at `now` that `succeeded` (or
    /// not) and, if the Lease is someone else's, the `claim` it led to.
    pub fn next_attempt(&self, now: Instant, succeeded: bool, claim: Option<Claim>) -> Instant {
        let period = self.renew_period();
        if !succeeded {
            return now + self.retry_period();
        }
        match claim {
            // A candidate looks often (client-go's retry period): a holder
            // that releases on shutdown is followed within seconds.
            Some(Claim::Wait(until)) => until.min(now + self.candidate_period()),
            _ => now + period,
        }
    }

    /// How often a replica that does not hold the Lease reads it.
    pub fn candidate_period(&self) -> Duration {
        (self.duration / 10).clamp(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// Renewals come three per lease duration, so two may fail.
    pub fn renew_period(&self) -> Duration {
        (self.duration / 3).max(Duration::from_millis(100))
    }

    /// After a failed attempt, retry often: leadership resumes as soon as
    /// the apiserver is back.
    pub fn retry_period(&self) -> Duration {
        (self.duration / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }
}

/// Where the Lease lives.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
    /// This replica's Pod, named as the Lease's owner while it holds it.
    pub owner: Option<PodRef>,
}

/// The Pod this replica runs in (`POD_NAME`, `POD_UID` from the downward API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub name: String,
    pub uid: String,
}

impl PodRef {
    fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            ..Default::default()
        }
    }
}

/// The owner references a holder writes: its Pod alone, when known.
fn owners(config: &LeaseConfig) -> Option<Vec<OwnerReference>> {
    config.owner.as_ref().map(|p| vec![p.owner_reference()])
}

/// What one round trip to the API found.
enum Outcome {
    /// We hold the Lease: created, acquired or renewed.
    Held,
    /// Another replica holds it.
    Other(Claim, Option<String>),
    /// Someone wrote between our read and our write; read again.
    Conflict,
}

/// Starts the election; the receiver says whether this replica leads.
/// When `stopping` is cancelled the replica stops leading and releases the
/// Lease if it holds it.
pub fn start(client: Client, config: LeaseConfig, stopping: CancellationToken) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(run(client, config, tx, stopping));
    rx
}

/// Runs the election until every receiver of `leader` is gone or
/// `stopping` is cancelled (then releasing a Lease it holds).
pub async fn run(client: Client, config: LeaseConfig, leader: watch::Sender<bool>, stopping: CancellationToken) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut elector = Elector::new(config.identity.clone(), config.duration);
    let timeout = elector.renew_period().max(Duration::from_secs(1));
    let mut failing = false;
    let set = |is_leader: bool| {
        leader.send_if_modified(|shown| {
            if *shown == is_leader {
                return false;
            }
            *shown = is_leader;
            if is_leader {
                info!(lease = %config.name, identity = %config.identity, "status lease acquired; writing status");
            } else {
                warn!(lease = %config.name, identity = %config.identity, duration = ?config.duration,
                      "status lease lost or not renewed in time; no longer writing status");
            }
            true
        });
    };
    loop {
        let sent = Instant::now();
        let held_until = elector.held_until();
        // Leadership ends on time even if the request hangs.
        let result = {
            let attempt = tokio::time::timeout(timeout, attempt(&api, &config, &mut elector));
            let mut attempt = std::pin::pin!(attempt);
            let mut expiry = held_until.filter(|_| *leader.borrow());
            loop {
                tokio::select! {
                    r = &mut attempt => break Some(r),
                    _ = sleep_until(expiry) => {
                        set(false);
                        expiry = None;
                    }
                    _ = leader.closed() => return,
                    _ = stopping.cancelled() => break None,
                }
            }
        };
        // Asked to stop mid-request: what it did is read back on release.
        let Some(result) = result else { break };
        let now = Instant::now();
        let (succeeded, claim) = match result {
            Ok(Ok(Outcome::Held)) => {
                elector.renewed(sent);
                (true, None)
            }
            Ok(Ok(Outcome::Other(claim, holder))) => {
                debug!(lease = %config.name, ?holder, "status lease held by another replica");
                (true, Some(claim))
            }
            Ok(Ok(Outcome::Conflict)) => {
                debug!(lease = %config.name, "status lease changed while we wrote it; reading again");
                (false, None)
            }
            Ok(Err(e)) => {
                if !failing {
                    warn!(lease = %config.name, error = %e, "cannot read or renew the status lease; retrying");
                }
                failing = true;
                (false, None)
            }
            Err(_) => {
                if !failing {
                    warn!(lease = %config.name, ?timeout, "status lease request timed out; retrying");
                }
                failing = true;
                (false, None)
            }
        };
        if succeeded && failing {
            info!(lease = %config.name, "status lease reachable again");
            failing = false;
        }
        set(elector.is_leader(now));
        let next = elector.next_attempt(now, succeeded, claim);
        let mut expiry = elector.held_until().filter(|_| *leader.borrow());
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => break,
                _ = sleep_until(expiry) => {
                    set(false);
                    expiry = None;
                }
                _ = leader.closed() => return,
                _ = stopping.cancelled() => break,
            }
        }
        if stopping.is_cancelled() {
            break;
        }
    }
    // Status writers stop first: once the Lease is free another replica
    // may write, and two writers must never overlap.
    if leader.send_replace(false) {
        info!(lease = %config.name, identity = %config.identity, "shutting down: no longer writing status");
    }
    // Asked even when we did not know we held it: an acquisition may have
    // been in flight.
    match tokio::time::timeout(timeout, release(&api, &config)).await {
        Ok(Ok(true)) => info!(lease = %config.name, "status lease released for the next replica"),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => warn!(lease = %config.name, error = %e, "cannot release the status lease; it expires by itself"),
        Err(_) => warn!(lease = %config.name, "releasing the status lease timed out; it expires by itself"),
    }
}

/// Gives the Lease up if we still hold it (compare-and-swap on what was
/// read): no holder and a 1 s duration, as client-go releases. Whether it
/// was ours to release.
async fn release(api: &Api<Lease>, config: &LeaseConfig) -> kube::Result<bool> {
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        return Ok(false);
    };
    if Record::of(&lease).holder.as_deref() != Some(config.identity.as_str()) {
        return Ok(false);
    }
    let mut spec = lease.spec.take().unwrap_or_default();
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    lease.spec = Some(spec);
    let params = PostParams {
        field_manager: Some(super::kube::FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api.replace(&config.name, &params, &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sleeps until `at`, or forever when `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Reads the Lease and creates, takes or renews it as the elector decides.
async fn attempt(api: &Api<Lease>, config: &LeaseConfig, elector: &mut Elector) -> kube::Result<Outcome> {
    let params = PostParams {
        field_manager: Some(super::kube::FIELD_MANAGER.into()),
        ..Default::default()
    };
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let duration_secs = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                owner_references: owners(config),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_duration_seconds: Some(duration_secs),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&params, &lease).await {
            Ok(_) => Ok(Outcome::Held),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Outcome::Conflict),
            Err(e) => Err(e),
        };
    };
    let record = Record::of(&lease);
    // Seen when the answer arrived, which is after the holder sent what it
    // shows: measuring from here keeps our wait past the holder's own end.
    let claim = elector.observe(record.clone(), Instant::now());
    let mut spec = lease.spec.take().unwrap_or_default();
    match claim {
        Claim::Wait(_) => return Ok(Outcome::Other(claim, record.holder)),
        Claim::Acquire => {
            info!(lease = %config.name, previous = ?record.holder, "taking the status lease");
            spec.holder_identity = Some(config.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        Claim::Renew => {}
    }
    spec.renew_time = Some(now);
    spec.lease_duration_seconds = Some(duration_secs);
    lease.spec = Some(spec);
    if let Some(owners) = owners(config) {
        lease.metadata.owner_references = Some(owners);
    }
    // The resourceVersion read above makes this a compare-and-swap.
    match api.replace(&config.name, &params, &lease).await {
        Ok(_) => Ok(Outcome::Held),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Outcome::Conflict),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(3);

    fn held_by(holder: Option<&str>, renewed: i64) -> Record {
        Record {
            holder: holder.map(str::to_owned),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::from_second(renewed).unwrap())),
            duration_secs: Some(3),
            transitions: Some(1),
        }
    }

    #[test]
    fn leadership_ends_a_lease_duration_after_the_last_renewal_was_sent() {
        let t = Instant::now();
        let mut e = Elector::new("me", D);
        assert!(!e.is_leader(t));
        assert_eq!(e.observe(held_by(None, 0), t), Claim::Acquire);
        e.renewed(t);
        assert!(e.is_leader(t + Duration::from_millis(2999)));
        assert!(!e.is_leader(t + D), "no renewal within the lease duration");
        // A later renewal extends it from when it was sent.
        assert_eq!(
            e.observe(held_by(Some("me"), 1), t + Duration::from_secs(1)),
            Claim::Renew
        );
        e.renewed(t + Duration::from_secs(1));
        assert!(e.is_leader(t + Duration::from_millis(3999)));
        assert!(!e.is_leader(t + Duration::from_secs(4)));
    }

    #[test]
    fn a_holder_that_lost_its_lease_renews_it_if_still_named_there() {
        let t = Instant::now();
        let mut e = Elector::new("me", D);
        e.renewed(t);
        let later = t + Duration::from_secs(30);
        assert!(!e.is_leader(later));
        assert_eq!(e.observe(held_by(Some("me"), 0), later), Claim::Renew);
        e.renewed(later);
        assert!(e.is_leader(later));
    }

    #[test]
    fn another_holder_is_waited_out_by_our_clock_from_its_last_change() {
        let t = Instant::now();
        let mut e = Elector::new("me", D);
        assert_eq!(e.observe(held_by(Some("them"), 0), t), Claim::Wait(t + D));
        // Renewed by them: the wait starts over from when we saw the change.
        let t1 = t + Duration::from_secs(2);
        assert_eq!(e.observe(held_by(Some("them"), 2), t1), Claim::Wait(t1 + D));
        // Unchanged since t1 for the lease duration: expired.
        assert_eq!(
            e.observe(held_by(Some("them"), 2), t1 + Duration::from_secs(1)),
            Claim::Wait(t1 + D)
        );
        assert_eq!(e.observe(held_by(Some("them"), 2), t1 + D), Claim::Acquire);
    }

    #[test]
    fn seeing_another_holder_ends_our_leadership_at_once() {
        let t = Instant::now();
        let mut e = Elector::new("me", D);
        e.renewed(t);
        assert!(e.is_leader(t + Duration::from_secs(1)));
        e.observe(held_by(Some("them"), 5), t + Duration::from_secs(1));
        assert!(!e.is_leader(t + Duration::from_secs(1)));
        assert_eq!(e.held_until(), None);
    }

    #[test]
    fn the_holder_gives_up_before_a_watcher_can_take_over() {
        // The holder sends a renewal at t; the other replica reads it at
        // some later moment, so its wait ends no earlier than the holder's
        // leadership does.
        let t = Instant::now();
        let mut holder = Elector::new("a", D);
        let mut other = Elector::new("b", D);
        holder.renewed(t);
        let seen = t + Duration::from_millis(40);
        let Claim::Wait(until) = other.observe(held_by(Some("a"), 0), seen) else {
            panic!("must wait");
        };
        assert!(until >= holder.held_until().unwrap());
        assert!(!holder.is_leader(until));
    }

    #[test]
    fn attempts_are_paced_by_the_lease_duration() {
        let t = Instant::now();
        let e = Elector::new("me", Duration::from_secs(15));
        assert_eq!(e.next_attempt(t, true, None), t + Duration::from_secs(5));
        assert_eq!(e.next_attempt(t, false, None), t + Duration::from_secs(1));
        let soon = t + Duration::from_secs(1);
        assert_eq!(e.next_attempt(t, true, Some(Claim::Wait(soon))), soon);
        // A candidate reads a live holder's Lease every 1.5 s, not every 5 s.
        let later = t + Duration::from_secs(14);
        assert_eq!(
            e.next_attempt(t, true, Some(Claim::Wait(later))),
            t + Duration::from_millis(1500)
        );
        let e = Elector::new("me", D);
        assert_eq!(e.next_attempt(t, true, None), t + Duration::from_secs(1));
        assert_eq!(e.next_attempt(t, false, None), t + Duration::from_millis(300));
    }
}
