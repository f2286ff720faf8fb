//! Sources feed objects into the routing model: a folder of YAML files
//! (standalone mode) and, in cluster mode, the Kubernetes API.

pub mod convert;
pub mod file;
pub mod kube;
mod kube_api;
pub mod kube_gateway;
pub mod scan;
pub mod watch_retry;

use crate::model::Objects;
use std::time::Instant;

/// Where a source delivers each complete set of objects it has read. The
/// applier (`crate::apply`) implements it; sources know nothing of what is
/// done with their objects, so the data flows one way.
pub trait ObjectSink: Send + Sync {
    /// Delivers a full set of objects; `since` is when the change was first
    /// seen (a watch event, a file event). Returns the table generation.
    fn deliver(&self, objects: &Objects, since: Option<Instant>) -> u64;

    /// Called once the source has dropped what it does not keep of the last
    /// delivery, which held `objects` objects.
    fn delivered(&self, objects: usize) {
        let _ = objects;
    }
}

/// How many objects a table is built from.
pub fn object_count(objects: &Objects) -> usize {
    objects.routes.len()
        + objects.ingresses.len()
        + objects.gateway_api.len()
        + objects.services.len()
        + objects.slices.len()
        + objects.secrets.len()
}

/// The Secrets the access policies of `objects` name for basic
/// authentication (`namespace/name`), which sources must supply as
/// [`crate::model::SecretData`].
pub fn named_secrets(objects: &crate::model::Objects) -> std::collections::BTreeSet<crate::model::ObjectKey> {
    objects
        .routes
        .values()
        .chain(objects.ingresses.values())
        .chain(objects.gateway_api.values())
        .filter_map(|d| Some((d, d.translated.as_ref().ok()?)))
        .flat_map(|(d, valid)| {
            valid
                .rules
                .iter()
                .filter_map(|r| r.access.as_deref())
                .flat_map(|a| a.chain())
                .filter_map(|a| Some((a.namespace.as_deref().unwrap_or(&d.key.namespace), a.basic.as_ref()?)))
                .map(|(namespace, b)| crate::model::ObjectKey::new(namespace, b.secret_name.as_str()))
        })
        .collect()
}
