//! A map read lock-free on the hot path (one `ArcSwap` load); a missing
//! key is added once, copy-on-write. Writes are rare: the keys (timeouts,
//! Routes, endpoints) are few and change only with the configuration.

use arc_swap::ArcSwap;
use std::collections::HashMap;

pub(crate) struct SharedMap<K, V>(ArcSwap<HashMap<K, V>>);

impl<K, V> Default for SharedMap<K, V> {
    fn default() -> Self {
        SharedMap(ArcSwap::default())
    }
}

impl<K: Eq + std::hash::Hash + Clone, V: Clone> SharedMap<K, V> {
    pub(crate) fn get_or_insert_with(&self, key: &K, make: impl Fn() -> V) -> V {
        if let Some(v) = self.0.load().get(key) {
            return v.clone();
        }
        self.0.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.entry(key.clone()).or_insert_with(&make);
            map
        });
        self.0.load()[key].clone()
    }

    /// Reads an entry without adding it.
    pub(crate) fn peek<R>(&self, key: &K, f: impl FnOnce(Option<&V>) -> R) -> R {
        f(self.0.load().get(key))
    }

    /// Removes the entries `drop` picks; returns them.
    pub(crate) fn remove_where(&self, drop: impl Fn(&K, &V) -> bool) -> Vec<(K, V)> {
        let current = self.0.load();
        let gone: Vec<(K, V)> = current
            .iter()
            .filter(|(k, v)| drop(k, v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !gone.is_empty() {
            self.0.rcu(|map| {
                let mut map = HashMap::clone(map);
                for (k, _) in &gone {
                    map.remove(k);
                }
                map
            });
        }
        gone
    }
}
