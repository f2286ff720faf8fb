//! Sources feed objects into the routing model: a folder of YAML files
//! (standalone mode) and, in cluster mode, the Kubernetes API.

pub mod convert;
pub mod file;
pub mod kube;

use crate::model::{build_table, Objects, SharedTable};
use crate::status::StatusSink;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tracing::debug;

/// Builds a table from a full set of objects and swaps it in.
pub struct Applier {
    table: SharedTable,
    status: Arc<dyn StatusSink>,
    generation: AtomicU64,
}

impl Applier {
    pub fn new(table: SharedTable, status: Arc<dyn StatusSink>) -> Self {
        Applier {
            table,
            status,
            generation: AtomicU64::new(0),
        }
    }

    /// Rebuilds and publishes. Requests already running keep the table they
    /// started with; new ones see this one.
    pub fn apply(&self, objects: &Objects) -> u64 {
        let started = Instant::now();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let table = build_table(objects, generation);
        let built = started.elapsed();
        self.status.publish(&table.reports);
        self.table.store(Arc::new(table));
        debug!(
            generation,
            routes = objects.routes.len(),
            ?built,
            "routing table swapped"
        );
        generation
    }

    pub fn table(&self) -> &SharedTable {
        &self.table
    }
}
