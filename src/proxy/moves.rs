//! Moving resumable streams between endpoints without their clients
//! noticing: off an endpoint that leaves (a rollout), and off the fullest
//! endpoints after a scale-out (`sse.rebalance`).
//!
//! One watcher per proxy compares each new routing table's ready endpoints
//! with the last one's. An endpoint that is no longer ready anywhere is
//! marked leaving; a Service that gained endpoints gets an even share per
//! endpoint, and each endpoint above it as many moves as it holds above it.
//! Then it wakes every resumable stream (one shared [`Notify`]); each looks
//! at its own endpoint and, if it should go, asks its engine to move at an
//! event boundary after a delay: a random point in the rollout window, or
//! its turn at the rebalance's rate. The resume itself picks the least
//! loaded endpoint ready now.
//!
//! The watcher looks at the table every [`WATCH_PERIOD`]; it starts with
//! the first resumable stream and ends with the proxy.
//!
//! A scale-out's new endpoints often turn ready one table apart. Streams
//! that took a move in the first share and have not moved yet are counted
//! (see [`MoveSignal::rebalance_planned`]): the next share leaves them out
//! of the excess, and they take no second move, so the endpoint ends at
//! its share instead of below it.

use super::balance::EndpointStates;
use crate::model::SharedTable;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::debug;

/// How often the watcher compares the table in use with the last one.
pub const WATCH_PERIOD: Duration = Duration::from_millis(100);

/// Tells resumable streams that endpoints changed.
#[derive(Default)]
pub struct MoveSignal {
    notify: Arc<Notify>,
    watching: OnceLock<()>,
    /// Per endpoint, the streams with a rebalance move planned and not
    /// begun.
    pending: Mutex<HashMap<SocketAddr, usize>>,
}

impl MoveSignal {
    /// A stream on `e` was given a rebalance move.
    pub(super) fn rebalance_planned(&self, e: SocketAddr) {
        *self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(e)
            .or_insert(0) += 1;
    }

    /// A stream given a rebalance move on `e` began moving, or ended.
    pub(super) fn rebalance_done(&self, e: SocketAddr) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = pending.get_mut(&e) {
            *n -= 1;
            if *n == 0 {
                pending.remove(&e);
            }
        }
    }

    fn pending(&self, e: SocketAddr) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&e)
            .copied()
            .unwrap_or(0)
    }

    /// Resolves at the next change (enable it before looking at the state).
    pub fn changed(&self) -> tokio::sync::futures::OwnedNotified {
        self.notify.clone().notified_owned()
    }

    /// Starts the watcher once, on the runtime of the caller.
    pub(super) fn watch(self: &Arc<Self>, table: &SharedTable, endpoints: &Arc<EndpointStates>) {
        self.watching.get_or_init(|| {
            let last = ready_endpoints(table);
            tokio::spawn(watch(
                table.clone(),
                Arc::downgrade(endpoints),
                Arc::downgrade(self),
                last,
            ));
        });
    }
}

type Ready = crate::model::ReadyEndpoints;

fn ready_endpoints(table: &SharedTable) -> (u64, Ready) {
    let t = table.load();
    (t.generation, t.ready_endpoints().clone())
}

async fn watch(table: SharedTable, endpoints: Weak<EndpointStates>, signal: Weak<MoveSignal>, mut last: (u64, Ready)) {
    let mut tick = tokio::time::interval(WATCH_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (Some(endpoints), Some(signal)) = (endpoints.upgrade(), signal.upgrade()) else {
            return;
        };
        if table.load().generation == last.0 {
            continue;
        }
        let now = ready_endpoints(&table);
        if note_changes(&endpoints, &last.1, &now.1, |e| signal.pending(e)) {
            signal.notify.notify_waiters();
        }
        last = now;
    }
}

/// Marks what changed between two tables' ready endpoints; whether any
/// stream may have to move. `pending`: how many streams on an endpoint
/// will move for an earlier scale-out's share already.
fn note_changes(
    endpoints: &EndpointStates,
    before: &Ready,
    after: &Ready,
    pending: impl Fn(SocketAddr) -> usize,
) -> bool {
    let all = |ready: &Ready| -> HashSet<SocketAddr> { ready.values().flat_map(|e| e.iter().copied()).collect() };
    let (was, is) = (all(before), all(after));
    let mut changed = false;
    for gone in was.difference(&is) {
        endpoints.set_leaving(*gone, true);
        debug!(endpoint = %gone, "endpoint left the table: its resumable streams move");
        changed = true;
    }
    for back in is.difference(&was) {
        endpoints.set_leaving(*back, false);
    }
    for (service, ready) in after {
        let grew = match before.get(service) {
            Some(old) => ready.iter().any(|e| !old.contains(e)),
            None => false,
        };
        if !grew || ready.is_empty() {
            continue;
        }
        let total: usize = ready.iter().map(|e| endpoints.load(*e)).sum();
        let fair = total.div_ceil(ready.len());
        for e in ready.iter() {
            // Streams about to move count as gone: the excess is what is
            // left above the share once they have.
            endpoints.set_fair_share(*e, fair + pending(*e));
        }
        debug!(%service, endpoints = ready.len(), total, fair, "service scaled out: streams above the even share may move");
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn ready(pairs: &[(&str, &[u16])]) -> Ready {
        pairs
            .iter()
            .map(|(s, ports)| (Arc::from(*s), ports.iter().map(|p| addr(*p)).collect::<Vec<_>>().into()))
            .collect()
    }

    #[test]
    fn an_endpoint_that_leaves_every_service_is_marked_and_cleared_when_back() {
        let states = EndpointStates::new();
        let _on_a = states.track(addr(1));
        let _on_b = states.track(addr(2));
        let before = ready(&[("ns/s:80", &[1, 2])]);
        let after = ready(&[("ns/s:80", &[2, 3])]);
        assert!(note_changes(&states, &before, &after, |_| 0));
        assert!(states.leaving(addr(1)));
        assert!(!states.leaving(addr(2)));
        assert!(!note_changes(&states, &after, &after, |_| 0), "nothing changed");
        note_changes(&states, &after, &before, |_| 0);
        assert!(!states.leaving(addr(1)), "ready again");
    }

    #[test]
    fn a_scale_out_gives_the_full_endpoint_its_excess_in_moves() {
        let states = EndpointStates::new();
        let held: Vec<_> = (0..30).map(|_| states.track(addr(1))).collect();
        let before = ready(&[("ns/s:80", &[1])]);
        let after = ready(&[("ns/s:80", &[1, 2, 3])]);
        assert!(note_changes(&states, &before, &after, |_| 0));
        let mut moves = 0;
        while states.take_excess(addr(1), 10) > 0 {
            moves += 1;
        }
        assert_eq!(moves, 20, "30 streams over 3 endpoints: 20 move");
        assert_eq!(states.take_excess(addr(2), 10), 0, "a new endpoint has none");
        drop(held);
    }

    #[test]
    fn a_rebalancing_move_goes_below_the_share_only() {
        let states = EndpointStates::new();
        let _on_a: Vec<_> = (0..30).map(|_| states.track(addr(1))).collect();
        let _on_b: Vec<_> = (0..12).map(|_| states.track(addr(2))).collect();
        note_changes(
            &states,
            &ready(&[("ns/s:80", &[1, 2])]),
            &ready(&[("ns/s:80", &[1, 2, 3])]),
            |_| 0,
        );
        // 42 over 3: a share of 14. The old endpoints are at or above it;
        // the new one has no state yet, and room.
        assert!(!states.below_share(addr(1)));
        assert!(states.below_share(addr(2)), "12 of 14");
        assert!(states.below_share(addr(3)));
        let _more: Vec<_> = (0..2).map(|_| states.track(addr(2))).collect();
        assert!(!states.below_share(addr(2)), "14 of 14");
    }

    #[test]
    fn within_the_tolerance_nothing_moves() {
        let states = EndpointStates::new();
        let _a: Vec<_> = (0..11).map(|_| states.track(addr(1))).collect();
        let _b: Vec<_> = (0..10).map(|_| states.track(addr(2))).collect();
        let _c: Vec<_> = (0..9).map(|_| states.track(addr(3))).collect();
        // A fourth endpoint is added, but the check is on the share of the
        // three that had streams: only a clear excess moves.
        let before = ready(&[("ns/s:80", &[1, 2, 3])]);
        let after = ready(&[("ns/s:80", &[1, 2, 3, 4])]);
        note_changes(&states, &before, &after, |_| 0);
        assert!(
            states.take_excess(addr(1), 50) == 0,
            "11 against a share of 8 is within 50 %"
        );
        assert!(states.take_excess(addr(1), 10) > 0, "and beyond 10 %");
    }

    #[test]
    fn a_scale_out_in_two_tables_moves_each_stream_once_down_to_the_share() {
        let states = EndpointStates::new();
        let signal = MoveSignal::default();
        let held: Vec<_> = (0..30).map(|_| states.track(addr(1))).collect();
        // Endpoint 2 turns ready: 15 of the 30 take a move; none has
        // moved when endpoint 3 turns ready in the next table.
        let one = ready(&[("ns/s:80", &[1])]);
        let two = ready(&[("ns/s:80", &[1, 2])]);
        let three = ready(&[("ns/s:80", &[1, 2, 3])]);
        note_changes(&states, &one, &two, |e| signal.pending(e));
        let mut planned = 0;
        while states.take_excess(addr(1), 10) > 0 {
            signal.rebalance_planned(addr(1));
            planned += 1;
        }
        assert_eq!(planned, 15);
        note_changes(&states, &two, &three, |e| signal.pending(e));
        // The 15 still to go count against the share of 10: 5 more.
        let mut more = 0;
        while states.take_excess(addr(1), 10) > 0 {
            more += 1;
        }
        assert_eq!(more, 5, "30 streams, 15 moving, a share of 10: 5 more move");
        for _ in 0..planned {
            signal.rebalance_done(addr(1));
        }
        assert_eq!(signal.pending(addr(1)), 0);
        drop(held);
    }
}
