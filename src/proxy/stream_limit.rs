//! A Route's `maxConcurrentStreams`: places counted per Route, outliving
//! table swaps, and given back however a stream ends.

use crate::shared_map::SharedMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Open event streams per Route, kept across table swaps: a swap must not
/// reset the count of streams that are still open.
#[derive(Default)]
pub(super) struct StreamCounts(SharedMap<Arc<str>, Arc<AtomicUsize>>);

impl StreamCounts {
    pub(super) fn counter(&self, route: &Arc<str>) -> Arc<AtomicUsize> {
        self.0.get_or_insert_with(route, Arc::default)
    }
}

/// One place among a Route's `maxConcurrentStreams`, given back on drop:
/// when the stream ends, the client leaves, the upstream fails, or a drain
/// ends it.
pub struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    pub(super) fn reserve(counter: Arc<AtomicUsize>, max: usize) -> Option<StreamSlot> {
        if counter.fetch_add(1, Ordering::AcqRel) >= max {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(StreamSlot(counter))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
