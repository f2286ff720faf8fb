//! What a resumable request keeps for a resume: its head (without any
//! `Last-Event-ID`), its rule, and where endpoints stand now; and the two
//! choices made from them: where a resume goes, and whether and when a
//! stream should move (see `moves.rs`).

use crate::metrics::RouteMetrics;
use crate::model::{ResolvedRule, SharedTable};
use crate::proxy::balance::EndpointStates;
use crate::proxy::moves::MoveSignal;
use crate::proxy::stream_engine::ResumeReason;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What a resumable request keeps for a resume, shared by its attempts.
pub(in crate::proxy) struct ResumeRequest {
    /// The request head as sent upstream, without any `Last-Event-ID` and
    /// without the blank line that ends it.
    pub(super) head: Vec<u8>,
    pub(super) target: Arc<ResolvedRule>,
    pub(super) table: SharedTable,
    pub(super) endpoints: Arc<EndpointStates>,
    pub(super) metrics: Arc<RouteMetrics>,
    pub(super) moves: Arc<MoveSignal>,
    /// The `Last-Event-ID` the client sent: where the stream stands until
    /// the upstream's first id (a stream cut before any event resumes
    /// from it).
    client_last_id: Option<Box<[u8]>>,
}

impl ResumeRequest {
    /// `head`: a complete request head (ending with the blank line) written
    /// without `Last-Event-ID`.
    pub(in crate::proxy) fn new(
        mut head: Vec<u8>,
        target: Arc<ResolvedRule>,
        table: SharedTable,
        endpoints: Arc<EndpointStates>,
        metrics: Arc<RouteMetrics>,
        moves: Arc<MoveSignal>,
    ) -> Self {
        debug_assert!(head.ends_with(b"\r\n\r\n"));
        head.truncate(head.len() - 2);
        head.shrink_to_fit();
        moves.watch(&table, &endpoints);
        ResumeRequest {
            head,
            target,
            table,
            endpoints,
            metrics,
            moves,
            client_last_id: None,
        }
    }

    /// The client asked to resume after `id` itself.
    pub(in crate::proxy) fn with_client_last_id(mut self, id: Option<&[u8]>) -> Self {
        self.client_last_id = id.filter(|id| !id.is_empty()).map(Box::from);
        self
    }

    /// The `Last-Event-ID` the client sent, if any.
    pub(in crate::proxy) fn client_last_id(&self) -> Option<&[u8]> {
        self.client_last_id.as_deref()
    }

    /// Whether an endpoint other than `e` is ready for this rule now.
    fn elsewhere_than(&self, e: SocketAddr) -> bool {
        let table = self.table.load();
        self.target.backends.iter().any(|b| {
            table
                .service_endpoints(&b.service)
                .unwrap_or(&b.endpoints)
                .iter()
                .any(|x| *x != e)
        })
    }

    /// Whether the stream on `endpoint` should move, and when: a leaving
    /// endpoint's streams at a random point of the rollout window, an
    /// over-full one's (rebalance on) each at its turn at the rule's rate,
    /// unless it has such a move planned already (`rebalancing`).
    pub(super) fn plan_move(&self, endpoint: SocketAddr, rebalancing: bool) -> Option<(Instant, ResumeReason)> {
        let now = Instant::now();
        let settings = &self.target.settings;
        if self.endpoints.leaving(endpoint) {
            if !self.elsewhere_than(endpoint) {
                // Nowhere to go: the stream stays until its upstream ends it.
                return None;
            }
            let window = settings.resume.map_or(Duration::ZERO, |r| r.rollout_window);
            return Some((
                now + window.mul_f64(random_fraction(endpoint)),
                ResumeReason::EndpointLeaving,
            ));
        }
        let rebalance = settings.rebalance.filter(|_| !rebalancing)?;
        let left = self.endpoints.take_excess(endpoint, rebalance.tolerance_percent);
        if left == 0 {
            return None;
        }
        let turn = Duration::from_secs_f64((left - 1) as f64 / f64::from(rebalance.moves_per_second.max(1)));
        Some((now + turn, ResumeReason::Rebalance))
    }

    /// The resume policy of the request's rule.
    pub(in crate::proxy) fn settings(&self) -> Option<crate::api::ResumeSettings> {
        self.target.settings.resume
    }

    /// The head again, with `Last-Event-ID: id`.
    pub(super) fn head_with(&self, id: &[u8]) -> Vec<u8> {
        let mut head = Vec::with_capacity(self.head.len() + id.len() + 20);
        head.extend_from_slice(&self.head);
        head.extend_from_slice(b"last-event-id: ");
        head.extend_from_slice(id);
        head.extend_from_slice(b"\r\n\r\n");
        head
    }

    /// The least loaded endpoint ready now for a backend drawn by weight,
    /// other than those in `tried`; one of `tried` only when nothing else
    /// is ready (a single pod that restarted in place).
    /// A rebalancing move (`below_share`) goes only to an endpoint under
    /// its even share, if there is one.
    pub(super) fn choose(&self, tried: &[SocketAddr], below_share: bool) -> Option<SocketAddr> {
        let backend = self.target.pick_backend().ok()?;
        let table = self.table.load();
        let ready = table
            .service_endpoints(&backend.service)
            .cloned()
            .unwrap_or_else(|| backend.endpoints.clone());
        let pick = |pool: &mut dyn Iterator<Item = SocketAddr>| {
            pool.min_by_key(|e| (!self.endpoints.healthy(*e), self.endpoints.load(*e)))
        };
        let fresh = |e: &SocketAddr| !tried.contains(e);
        below_share
            .then(|| {
                pick(
                    &mut ready
                        .iter()
                        .copied()
                        .filter(|e| fresh(e) && self.endpoints.below_share(*e)),
                )
            })
            .flatten()
            .or_else(|| pick(&mut ready.iter().copied().filter(fresh)))
            .or_else(|| pick(&mut ready.iter().copied().filter(|e| tried.contains(e))))
    }
}

/// A number in `[0, 1)` that differs between streams and calls, for
/// spreading moves over a window.
fn random_fraction(seed: SocketAddr) -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one((seed, std::time::Instant::now()));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}
