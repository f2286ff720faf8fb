//! The hub: a full set of objects in, a new routing table out. Builds the
//! table (pure), publishes every Route's status, records the swap in the
//! metrics, and swaps the table in atomically. Sources deliver to it
//! through [`ObjectSink`]; the proxy reads what it swaps in.

use crate::model::{build_table, GatewayPorts, Objects, SharedTable};
#[cfg(doc)]
use crate::sources::object_count;
use crate::sources::ObjectSink;
use crate::status::StatusSink;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tracing::debug;

/// Builds a table from a full set of objects and swaps it in.
pub struct Applier {
    table: SharedTable,
    status: Arc<dyn StatusSink>,
    generation: AtomicU64,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Objects the last table was built from, to notice large applies.
    last_size: AtomicUsize,
    /// Told each Gateway's own ports when they change, for the listeners
    /// that serve them (see `proxy::gateway_listeners`).
    gateway_ports: Option<tokio::sync::watch::Sender<GatewayPorts>>,
}

/// Objects in a table (before or after a swap) from which the heap is
/// trimmed after the swap.
const TRIM_FROM_OBJECTS: usize = 1000;

impl Applier {
    pub fn new(table: SharedTable, status: Arc<dyn StatusSink>) -> Self {
        Applier {
            table,
            status,
            generation: AtomicU64::new(0),
            metrics: None,
            last_size: AtomicUsize::new(0),
            gateway_ports: None,
        }
    }

    /// Sends each table's Gateway ports to `ports` when they changed, after
    /// the table is swapped in (so a newly bound port finds its Gateway).
    pub fn with_gateway_ports(mut self, ports: tokio::sync::watch::Sender<GatewayPorts>) -> Self {
        self.gateway_ports = Some(ports);
        self
    }

    /// Records every swap in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Rebuilds and publishes. Requests already running keep the table they
    /// started with; new ones see this one.
    pub fn apply(&self, objects: &Objects) -> u64 {
        self.apply_since(objects, None)
    }

    /// As [`Applier::apply`]; `since` is when the change was first seen
    /// (a watch event, a file event), for the apply-latency metric.
    pub fn apply_since(&self, objects: &Objects, since: Option<Instant>) -> u64 {
        let started = Instant::now();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let table = build_table(objects, generation);
        let built = started.elapsed();
        self.status.publish(&table.reports);
        if let Some(m) = &self.metrics {
            let accepted = table.reports.iter().filter(|r| r.accepted.is_true()).count();
            m.table_swapped(generation, accepted, table.reports.len() - accepted, since);
            // Reports are sorted by key: a binary search per Route that has
            // series, with no set of every Route's name built per swap.
            m.forget_routes(|name| {
                name.split_once('/').is_some_and(|(ns, n)| {
                    table
                        .reports
                        .binary_search_by(|r| (r.key.namespace.as_str(), r.key.name.as_str()).cmp(&(ns, n)))
                        .is_ok()
                })
            });
        }
        let table = Arc::new(table);
        self.table.store(table.clone());
        if let Some(tx) = &self.gateway_ports {
            tx.send_if_modified(|current| {
                let changed = current != table.gateway_ports();
                if changed {
                    *current = table.gateway_ports().clone();
                }
                changed
            });
        }
        debug!(
            generation,
            routes = objects.routes.len(),
            ?built,
            "routing table swapped"
        );
        generation
    }

    /// Gives freed memory back to the system when this apply or the one
    /// before it was large (`size` is the [`object_count`] of this one). Call
    /// it once the apply's inputs that are not kept have been dropped.
    pub fn trim_after_apply(&self, size: usize) {
        if self.last_size.swap(size, Ordering::Relaxed).max(size) >= TRIM_FROM_OBJECTS {
            let started = Instant::now();
            release_memory();
            debug!(objects = size, elapsed = ?started.elapsed(), "heap trimmed");
        }
    }

    pub fn table(&self) -> &SharedTable {
        &self.table
    }
}

/// Hands freed heap memory back to the operating system. glibc keeps what a
/// large apply freed (the old table, parse trees) in its arenas, so without
/// this the process's RSS stays at its peak after most objects are gone.
/// musl (the release image) returns large frees by itself.
pub fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases the allocator's free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl ObjectSink for Applier {
    fn deliver(&self, objects: &Objects, since: Option<Instant>) -> u64 {
        self.apply_since(objects, since)
    }

    fn delivered(&self, objects: usize) {
        self.trim_after_apply(objects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ObjectKey, PortClaim, PortRange};

    #[test]
    fn gateway_ports_are_sent_after_the_swap_and_only_when_they_change() {
        let table = crate::model::empty_table();
        let (tx, mut rx) = tokio::sync::watch::channel(GatewayPorts::default());
        let applier = Applier::new(table.clone(), Arc::new(crate::status::LogStatus::default())).with_gateway_ports(tx);
        let mut objects = Objects::default();
        applier.apply(&objects);
        assert!(!rx.has_changed().unwrap(), "still none: nothing sent");

        objects.gateway_ports = GatewayPorts::assign(
            Some(PortRange::new(10000, 10001).unwrap()),
            &[PortClaim {
                gateway: ObjectKey::new("infra", "g1"),
                created_millis: 0,
                tls: false,
                held: None,
                listeners: Vec::new(),
            }],
        );
        applier.apply(&objects);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().gateway_at(10000), Some("infra/g1"));
        assert_eq!(table.load().gateway_ports().gateway_at(10000), Some("infra/g1"));

        applier.apply(&objects);
        assert!(!rx.has_changed().unwrap(), "the same ports: not sent again");
    }
}
