//! Endpoint choice, health and load, together.
//!
//! The routing table says which endpoints a rule may use and with what
//! weight, and keeps each rule's round-robin position (an atomic, so picking
//! needs no lock and no lookup). This module decides among those picks by
//! the rule's policy: endpoints ejected after a failed connect are passed
//! over for a while, and `LeastConnections` takes the less loaded of two
//! random draws. Health and load outlive table swaps: they belong to the
//! endpoint, not to the table that happened to list it.

use crate::api::LoadBalancing;
use crate::model::{ResolvedRule, Unpicked};
use crate::shared_map::SharedMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long an endpoint whose connect failed is passed over.
const EJECTION: Duration = Duration::from_secs(10);

/// Per-endpoint open requests and ejections, kept across table swaps.
pub(super) struct EndpointStates {
    map: SharedMap<SocketAddr, Arc<EndpointState>>,
    epoch: std::time::Instant,
}

#[derive(Default)]
struct EndpointState {
    /// Open requests and streams.
    active: AtomicUsize,
    /// Milliseconds since `epoch` until which the endpoint is passed over.
    ejected_until: std::sync::atomic::AtomicU64,
    /// The endpoint left the table (removed, or no longer ready): its
    /// resumable streams move (see `moves.rs`).
    leaving: AtomicBool,
    /// Streams that should move off this endpoint to even out its Service
    /// after a scale-out; each mover takes one.
    excess: AtomicUsize,
    /// The even share of streams for this endpoint's Service at the last
    /// scale-out, and what the endpoint held then.
    fair_share: AtomicUsize,
    held_at_scale_out: AtomicUsize,
}

impl EndpointStates {
    pub(super) fn new() -> Self {
        EndpointStates {
            map: SharedMap::default(),
            epoch: std::time::Instant::now(),
        }
    }

    fn get(&self, e: SocketAddr) -> Arc<EndpointState> {
        self.map.get_or_insert_with(&e, Arc::default)
    }

    pub(super) fn load(&self, e: SocketAddr) -> usize {
        self.map.peek(&e, |s| s.map_or(0, |s| s.active.load(Ordering::Relaxed)))
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(super) fn healthy(&self, e: SocketAddr) -> bool {
        self.map.peek(&e, |s| {
            s.is_none_or(|s| s.ejected_until.load(Ordering::Relaxed) <= self.now_ms())
        })
    }

    pub(super) fn eject(&self, e: SocketAddr) {
        let until = self.now_ms() + EJECTION.as_millis() as u64;
        self.get(e).ejected_until.store(until, Ordering::Relaxed);
    }

    /// Whether `e` has left the table since streams went to it.
    pub(super) fn leaving(&self, e: SocketAddr) -> bool {
        self.map
            .peek(&e, |s| s.is_some_and(|s| s.leaving.load(Ordering::Relaxed)))
    }

    /// Marks endpoints that left the table, and clears those that came back.
    /// Only endpoints that have carried requests have a state to mark.
    pub(super) fn set_leaving(&self, e: SocketAddr, leaving: bool) {
        self.map.peek(&e, |s| {
            if let Some(s) = s {
                s.leaving.store(leaving, Ordering::Relaxed);
            }
        });
    }

    /// After a scale-out: `e` holds streams above its even share `fair` of
    /// its Service; as many as it holds above it may move.
    pub(super) fn set_fair_share(&self, e: SocketAddr, fair: usize) {
        self.map.peek(&e, |s| {
            if let Some(s) = s {
                let held = s.active.load(Ordering::Relaxed);
                s.fair_share.store(fair, Ordering::Relaxed);
                s.held_at_scale_out.store(held, Ordering::Relaxed);
                s.excess.store(held.saturating_sub(fair), Ordering::Relaxed);
            }
        });
    }

    /// Takes one of `e`'s moves, if it held more than `1 + tolerance` times
    /// its even share at the scale-out; returns how many were left before
    /// (0: none taken). Every move is taken, so the endpoint ends at its
    /// share, not at the tolerance's edge.
    pub(super) fn take_excess(&self, e: SocketAddr, tolerance_percent: u32) -> usize {
        self.map.peek(&e, |s| {
            let Some(s) = s else { return 0 };
            let fair = s.fair_share.load(Ordering::Relaxed);
            let held = s.held_at_scale_out.load(Ordering::Relaxed);
            if held * 100 <= fair * (100 + tolerance_percent as usize) {
                return 0;
            }
            s.excess
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .unwrap_or(0)
        })
    }

    /// Whether `e` holds less than its even share from the last scale-out
    /// of its Service (or has no share: it was not there, or there was
    /// none): where a rebalancing move may go without making another
    /// endpoint too full, or landing on an old one a rollout is about to
    /// take away.
    pub(super) fn below_share(&self, e: SocketAddr) -> bool {
        self.map.peek(&e, |s| {
            s.is_none_or(|s| {
                let fair = s.fair_share.load(Ordering::Relaxed);
                fair == 0 || s.active.load(Ordering::Relaxed) < fair
            })
        })
    }

    /// Counts a request on `e` until the returned guard is dropped.
    pub(super) fn track(&self, e: SocketAddr) -> EndpointLoad {
        let state = self.get(e);
        state.active.fetch_add(1, Ordering::Relaxed);
        EndpointLoad(state)
    }
}

/// One open request or stream on an endpoint, for LeastConnections.
pub struct EndpointLoad(Arc<EndpointState>);

impl Drop for EndpointLoad {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EndpointStates {
    /// Picks an endpoint for `target` by its rule's policy, lock-free.
    /// Ejected endpoints are passed over unless every one drawn is;
    /// `avoid` is an endpoint that just failed this request.
    pub(super) fn choose<'t>(
        &self,
        target: &'t ResolvedRule,
        avoid: Option<SocketAddr>,
    ) -> Result<SocketAddr, Unpicked<'t>> {
        // The backend by weight, once per request; then endpoints within it.
        // A retry whose backend has nothing but the endpoint that just
        // failed draws the backend again (a few times at most).
        let mut backend = target.pick_backend()?;
        for _ in 0..3 {
            if avoid.is_none() || backend.endpoints.iter().any(|e| Some(*e) != avoid) {
                break;
            }
            backend = target.pick_backend()?;
        }
        let tries = backend.endpoints.len().clamp(1, 16);
        let draw = || -> SocketAddr {
            let mut fallback = None;
            for _ in 0..tries {
                let e = backend.next_endpoint();
                if Some(e) != avoid && self.healthy(e) {
                    return e;
                }
                if Some(e) != avoid {
                    fallback.get_or_insert(e);
                }
            }
            // Every endpoint drawn is unhealthy: better one of them than none.
            fallback.unwrap_or_else(|| backend.next_endpoint())
        };
        let first = draw();
        if target.settings.load_balancing == LoadBalancing::RoundRobin {
            return Ok(first);
        }
        let second = draw();
        Ok(if self.load(second) < self.load(first) {
            second
        } else {
            first
        })
    }
}
