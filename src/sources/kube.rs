//! Cluster mode's source: reflectors over Routes, Ingresses,
//! IngressClasses, Services, EndpointSlices and TLS Secrets, feeding the
//! same table builder as the file source; and one watch per Secret that an
//! access policy names for basic authentication (by `metadata.name`), so
//! that no other Secret is ever sent to ssegate.
//!
//! Watch events only mark the state dirty; a single loop coalesces a burst
//! of them for a few milliseconds, rebuilds from the reflector stores and
//! swaps the table. While the apiserver is away the stores keep their last
//! contents, so the proxy keeps serving the last table; when it returns the
//! watchers re-list and the next rebuild applies whatever changed.

use super::kube_api::api;
use super::{convert, ObjectSink};
use crate::api::Route;
use crate::model::{ObjectKey, Objects};
use crate::translate::ingress_class::{ClassPolicy, OurClasses};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// How long a burst of watch events is collected before one rebuild.
pub const COALESCE: Duration = Duration::from_millis(5);

/// Reflector stores for every watched kind, and a dirty signal.
pub struct ClusterState {
    routes: Vec<Store<Route>>,
    ingresses: Vec<Store<Ingress>>,
    /// Cluster-scoped: one store whatever the namespaces.
    ingress_classes: Store<IngressClass>,
    class_policy: ClassPolicy,
    /// Gateway API kinds, when the cluster serves them.
    pub gateway: Option<super::kube_gateway::GatewayStores>,
    /// Ingresses that are not ssegate's, as last logged, so each is
    /// logged once per change of mind.
    skipped_ingresses: Mutex<HashMap<ObjectKey, String>>,
    services: Vec<Store<Service>>,
    slices: Vec<Store<EndpointSlice>>,
    /// `kubernetes.io/tls` Secrets; empty when TLS Secrets are not watched.
    secrets: Vec<Store<Secret>>,
    /// Converted Secrets by key, with the resourceVersion they came from:
    /// parsing a key pair is done once per version, and a broken update
    /// keeps the last good pair in service.
    secret_cache: Mutex<HashMap<ObjectKey, (Option<String>, crate::model::SecretObject)>>,
    /// Whether ssegate may read Secrets at all (`--tls-secrets`, which the
    /// chart's RBAC follows): basic-auth Secrets are watched only then.
    secrets_allowed: bool,
    /// The Secrets access policies name, each watched on its own while
    /// named, with its converted data (by resourceVersion, so the
    /// credentials parsed from it, and their cache, survive rebuilds).
    named_secrets: Mutex<HashMap<ObjectKey, NamedSecret>>,
    client: Client,
    /// This state, for the watches started while it is in use.
    me: std::sync::Weak<ClusterState>,
    changed: Notify,
    /// When the oldest unapplied watch event arrived.
    first_unapplied: Mutex<Option<Instant>>,
    /// Fires on every Route change, for the status writer.
    pub routes_changed: Arc<Notify>,
    /// Fires on every Ingress change, for the Ingress status writer.
    pub ingresses_changed: Arc<Notify>,
}

impl ClusterState {
    /// Starts the watchers: cluster-wide when `namespaces` is empty, else one
    /// watcher per namespace and kind. `tls_secrets` adds a watch on
    /// Secrets, narrowed by a field selector to `type=kubernetes.io/tls`, so
    /// no other Secret is ever sent to ssegate. `own_ports` gives each
    /// accepted Gateway its own data-plane ports (see
    /// [`crate::model::GatewayPorts`]), kept where their Services point. The tasks run until dropped.
    pub fn start(
        client: Client,
        namespaces: &[String],
        tls_secrets: bool,
        class_policy: ClassPolicy,
        gateway_api: bool,
        stream_policies: bool,
        own_ports: Option<super::kube_gateway::OwnPorts>,
    ) -> (Arc<Self>, JoinSet<()>) {
        let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        let mut writers = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (classes, classes_writer) = reflector::store();
        let (gateway, gateway_writers) = if gateway_api {
            let (stores, writers) =
                super::kube_gateway::GatewayStores::new(&client, &scopes, stream_policies, own_ports);
            (Some(stores), Some(writers))
        } else {
            (None, None)
        };
        let mut state = ClusterState {
            gateway,
            routes: Vec::new(),
            ingresses: Vec::new(),
            ingress_classes: classes,
            class_policy,
            skipped_ingresses: Mutex::default(),
            ingresses_changed: Arc::new(Notify::new()),
            services: Vec::new(),
            slices: Vec::new(),
            secrets: Vec::new(),
            secret_cache: Mutex::default(),
            secrets_allowed: tls_secrets,
            named_secrets: Mutex::default(),
            client: client.clone(),
            me: std::sync::Weak::new(),
            changed: Notify::new(),
            first_unapplied: Mutex::new(None),
            routes_changed: Arc::new(Notify::new()),
        };
        for scope in &scopes {
            let (r, w) = reflector::store();
            state.routes.push(r);
            writers.0.push((api::<Route>(&client, *scope), w));
            let (r, w) = reflector::store();
            state.ingresses.push(r);
            writers.4.push((api::<Ingress>(&client, *scope), w));
            let (r, w) = reflector::store();
            state.services.push(r);
            writers.1.push((api::<Service>(&client, *scope), w));
            let (r, w) = reflector::store();
            state.slices.push(r);
            writers.2.push((api::<EndpointSlice>(&client, *scope), w));
            if tls_secrets {
                let (r, w) = reflector::store();
                state.secrets.push(r);
                writers.3.push((api::<Secret>(&client, *scope), w));
            }
        }
        let state = Arc::new_cyclic(|me| ClusterState {
            me: me.clone(),
            ..state
        });
        let mut tasks = JoinSet::new();
        for (api, w) in writers.0 {
            tasks.spawn(watch(
                api,
                w,
                watcher::Config::default(),
                state.clone(),
                "Route",
                Some(state.routes_changed.clone()),
            ));
        }
        for (api, w) in writers.4 {
            tasks.spawn(watch(
                api,
                w,
                watcher::Config::default(),
                state.clone(),
                "Ingress",
                Some(state.ingresses_changed.clone()),
            ));
        }
        tasks.spawn(watch(
            Api::<IngressClass>::all(client.clone()),
            classes_writer,
            watcher::Config::default(),
            state.clone(),
            "IngressClass",
            None,
        ));
        for (api, w) in writers.1 {
            tasks.spawn(watch(
                api,
                w,
                watcher::Config::default(),
                state.clone(),
                "Service",
                None,
            ));
        }
        // Only slices that belong to a Service matter for routing.
        let slices = watcher::Config::default().labels(convert::SERVICE_NAME_LABEL);
        for (api, w) in writers.2 {
            tasks.spawn(watch(api, w, slices.clone(), state.clone(), "EndpointSlice", None));
        }
        let secrets = watcher::Config::default().fields(&format!("type={}", convert::TLS_SECRET_TYPE));
        for (api, w) in writers.3 {
            tasks.spawn(watch(api, w, secrets.clone(), state.clone(), "Secret", None));
        }
        if let Some(g) = gateway_writers {
            let all = watcher::Config::default;
            let status = state.gateway.as_ref().map(|s| s.changed.clone());
            tasks.spawn(watch(
                Api::all(client.clone()),
                g.classes,
                all(),
                state.clone(),
                "GatewayClass",
                status.clone(),
            ));
            tasks.spawn(watch(
                Api::all(client.clone()),
                g.namespaces,
                all(),
                state.clone(),
                "Namespace",
                None,
            ));
            for (api, w) in g.gateways {
                tasks.spawn(watch(api, w, all(), state.clone(), "Gateway", status.clone()));
            }
            for (api, w) in g.routes {
                tasks.spawn(watch(api, w, all(), state.clone(), "HTTPRoute", status.clone()));
            }
            for (api, w) in g.grants {
                tasks.spawn(watch(api, w, all(), state.clone(), "ReferenceGrant", None));
            }
            for (api, w) in g.policies {
                tasks.spawn(watch(api, w, all(), state.clone(), "StreamPolicy", None));
            }
            if let Some((api, labels, w)) = g.own_services {
                let managed = watcher::Config::default().labels(&labels);
                let changed = state.gateway.as_ref().map(|s| s.own_services_changed.clone());
                tasks.spawn(watch(api, w, managed, state.clone(), "Service", changed));
            }
        }
        (state, tasks)
    }

    /// Resolves once every store has been listed once.
    pub async fn wait_ready(&self) {
        for s in &self.routes {
            let _ = s.wait_until_ready().await;
        }
        for s in &self.ingresses {
            let _ = s.wait_until_ready().await;
        }
        let _ = self.ingress_classes.wait_until_ready().await;
        if let Some(g) = &self.gateway {
            g.wait_ready().await;
        }
        for s in &self.services {
            let _ = s.wait_until_ready().await;
        }
        for s in &self.slices {
            let _ = s.wait_until_ready().await;
        }
        for s in &self.secrets {
            let _ = s.wait_until_ready().await;
        }
        // The Secrets access policies name are known once the objects are:
        // their watches start now, and the first table waits for them (a
        // bounded time), so it does not answer 503 for want of them.
        let _ = self.objects();
        let named: Vec<Store<Secret>> = self
            .named_secrets
            .lock()
            .expect("lock")
            .values()
            .map(|n| n.store.clone())
            .collect();
        for store in named {
            let _ = tokio::time::timeout(NAMED_SECRET_WAIT, store.wait_until_ready()).await;
        }
    }

    /// The current objects, converted for the model. Objects that cannot be
    /// converted are logged and left out.
    pub fn objects(&self) -> Objects {
        let mut objects = Objects::default();
        for route in self.routes.iter().flat_map(Store::state) {
            match convert::route(&route, convert::DEFAULT_NAMESPACE, 0) {
                Ok(r) => {
                    objects.routes.insert(r.key.clone(), r);
                }
                Err(e) => warn!(error = %e, "skipping Route"),
            }
        }
        self.ingresses_into(&mut objects);
        for svc in self.services.iter().flat_map(Store::state) {
            match convert::service(&svc, convert::DEFAULT_NAMESPACE) {
                Ok(s) => {
                    objects.services.insert(s.key.clone(), s);
                }
                Err(e) => debug!(error = %e, name = ?svc.metadata.name, "skipping Service"),
            }
        }
        for slice in self.slices.iter().flat_map(Store::state) {
            match convert::endpoint_slice(&slice, convert::DEFAULT_NAMESPACE) {
                Ok(s) => {
                    objects.slices.insert(s.key.clone(), s);
                }
                Err(e) => debug!(error = %e, name = ?slice.metadata.name, "skipping EndpointSlice"),
            }
        }
        objects.secrets = self.secrets();
        if let Some(g) = &self.gateway {
            let outcome = g.translate(&objects.secrets);
            objects.gateway_ports = outcome.ports;
            for d in outcome.definitions {
                objects.gateway_api.insert((d.kind, d.key.clone()), d);
            }
        }
        objects.secret_data = self.named_secret_data(&super::named_secrets(&objects));
        objects
    }

    /// Watches exactly the Secrets in `wanted` (starting and stopping
    /// watches as the set changes), and returns the data of those that
    /// exist.
    fn named_secret_data(
        &self,
        wanted: &std::collections::BTreeSet<ObjectKey>,
    ) -> std::collections::BTreeMap<ObjectKey, Arc<crate::model::SecretData>> {
        let mut out = std::collections::BTreeMap::new();
        if !self.secrets_allowed {
            return out;
        }
        let mut named = self.named_secrets.lock().expect("lock");
        named.retain(|key, n| {
            let keep = wanted.contains(key);
            if !keep {
                n.task.abort();
                debug!(secret = %key, "no longer named by an access policy; watch stopped");
            }
            keep
        });
        for key in wanted {
            let entry = match named.get_mut(key) {
                Some(entry) => entry,
                None => {
                    let Some(state) = self.me.upgrade() else { continue };
                    let (store, writer) = reflector::store();
                    let api: Api<Secret> = Api::namespaced(self.client.clone(), &key.namespace);
                    let config = watcher::Config::default().fields(&format!("metadata.name={}", key.name));
                    let task = tokio::spawn(watch(api, writer, config, state, "Secret", None)).abort_handle();
                    debug!(secret = %key, "named by an access policy; watching it");
                    named.entry(key.clone()).or_insert(NamedSecret {
                        store,
                        task,
                        converted: None,
                    })
                }
            };
            let Some(secret) = entry.store.state().into_iter().next() else {
                continue;
            };
            let version = secret.metadata.resource_version.clone();
            let data = match &entry.converted {
                Some((v, data)) if *v == version => data.clone(),
                _ => match convert::secret_data(&secret, convert::DEFAULT_NAMESPACE) {
                    Ok(data) => Arc::new(data),
                    Err(e) => {
                        debug!(error = %e, secret = %key, "skipping Secret");
                        continue;
                    }
                },
            };
            entry.converted = Some((version, data.clone()));
            out.insert(key.clone(), data);
        }
        out
    }

    /// The Ingresses of ssegate's classes, translated; each one skipped for
    /// its class is logged once.
    fn ingresses_into(&self, objects: &mut Objects) {
        let classes: Vec<_> = self
            .ingress_classes
            .state()
            .iter()
            .filter_map(|c| convert::ingress_class(c).ok())
            .collect();
        let ours = OurClasses::new(&classes, &self.class_policy);
        let mut skipped = HashMap::new();
        for ingress in self.ingresses.iter().flat_map(Store::state) {
            match convert::ingress(&ingress, convert::DEFAULT_NAMESPACE, 0) {
                Ok(candidate) => match candidate.not_ours(&ours) {
                    None => {
                        let key = candidate.definition.key.clone();
                        objects.ingresses.insert(key, candidate.definition);
                    }
                    Some(why) => {
                        skipped.insert(candidate.definition.key, why);
                    }
                },
                Err(e) => warn!(error = %e, "skipping Ingress"),
            }
        }
        let mut last = self.skipped_ingresses.lock().expect("lock");
        for (key, why) in &skipped {
            if last.get(key) != Some(why) {
                debug!(ingress = %key, reason = %why, "Ingress is not ssegate's; not served");
            }
        }
        *last = skipped;
    }

    /// The live Ingress object, as last seen by the watch.
    pub fn ingress(&self, key: &ObjectKey) -> Option<Arc<Ingress>> {
        let r = ObjectRef::new(&key.name).within(&key.namespace);
        self.ingresses.iter().find_map(|s| s.get(&r))
    }

    fn secrets(&self) -> std::collections::BTreeMap<ObjectKey, crate::model::SecretObject> {
        let mut cache = self.secret_cache.lock().expect("lock");
        let mut out = std::collections::BTreeMap::new();
        for secret in self.secrets.iter().flat_map(Store::state) {
            let version = secret.metadata.resource_version.clone();
            let Ok(key) = convert::key(&secret.metadata, convert::DEFAULT_NAMESPACE) else {
                continue;
            };
            let converted = match cache.get(&key) {
                Some((v, obj)) if *v == version => obj.clone(),
                previous => match convert::tls_secret(&secret, convert::DEFAULT_NAMESPACE) {
                    Ok(obj) => obj.or_last_good(previous.map(|(_, o)| o)),
                    Err(e) => {
                        debug!(error = %e, secret = %key, "skipping Secret");
                        continue;
                    }
                },
            };
            cache.insert(key.clone(), (version, converted.clone()));
            out.insert(key, converted);
        }
        cache.retain(|k, _| out.contains_key(k));
        out
    }

    /// The live Route object, as last seen by the watch.
    pub fn route(&self, key: &ObjectKey) -> Option<Arc<Route>> {
        let r = ObjectRef::new(&key.name).within(&key.namespace);
        self.routes.iter().find_map(|s| s.get(&r))
    }

    fn mark_changed(&self) {
        self.first_unapplied
            .lock()
            .expect("lock")
            .get_or_insert_with(Instant::now);
        self.changed.notify_one();
    }

    fn take_first_unapplied(&self) -> Option<Instant> {
        self.first_unapplied.lock().expect("lock").take()
    }
}

/// How long the first table waits for the Secrets access policies name.
const NAMED_SECRET_WAIT: Duration = Duration::from_secs(10);

/// One Secret watched because an access policy names it.
struct NamedSecret {
    store: Store<Secret>,
    task: tokio::task::AbortHandle,
    /// Its data as last converted, with the resourceVersion it came from.
    converted: Option<(Option<String>, Arc<crate::model::SecretData>)>,
}

async fn watch<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    config: watcher::Config,
    state: Arc<ClusterState>,
    kind: &'static str,
    // Told of every change too (the status writer, for Routes).
    also_notify: Option<Arc<Notify>>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    // Retries and their logging live in `resilient`, which yields no errors.
    let stream = super::watch_retry::resilient(api, config, kind).reflect(writer);
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        if let Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) = event {
            state.mark_changed();
            if let Some(notify) = &also_notify {
                notify.notify_waiters();
            }
        }
    }
}

/// Rebuilds the table whenever the watched objects change. Calls `ready`
/// once, after every kind has been listed and the first table is live.
pub async fn run(state: Arc<ClusterState>, sink: Arc<dyn ObjectSink>, ready: impl FnOnce()) {
    state.wait_ready().await;
    let mut last = state.objects();
    state.take_first_unapplied();
    let generation = sink.deliver(&last, None);
    sink.delivered(super::object_count(&last));
    info!(
        generation,
        routes = last.routes.len(),
        ingresses = last.ingresses.len(),
        services = last.services.len(),
        slices = last.slices.len(),
        "initial list complete; routing table live"
    );
    ready();
    loop {
        state.changed.notified().await;
        tokio::time::sleep(COALESCE).await;
        let since = state.take_first_unapplied();
        let objects = state.objects();
        if objects == last {
            // A status write or an unrelated field changed: nothing to route differently.
            continue;
        }
        let generation = sink.deliver(&objects, since);
        last = objects;
        sink.delivered(super::object_count(&last));
        if let Some(since) = since {
            debug!(generation, elapsed = ?since.elapsed(), "watch event to table swap");
        }
    }
}
