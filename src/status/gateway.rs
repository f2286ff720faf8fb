//! Writes the status of the Gateway API objects ssegate serves, from the
//! lease holder only: its GatewayClasses (Accepted, SupportedVersion,
//! `supportedFeatures`), their Gateways (Accepted, Programmed, the
//! published addresses, each listener's conditions and attached routes),
//! and each HTTPRoute's `status.parents` entries for the parents that are
//! ssegate's (Accepted, ResolvedRefs).
//!
//! Like the other writers it is level-triggered: the wanted status is
//! compared with the live object from the watch (transition times aside)
//! and written only when they differ, so our own write comes back equal and
//! a hand edit is put right; a failed write is retried within a second.
//!
//! GatewayClass and Gateway status are ssegate's alone (the class names
//! ssegate's controller): each is written whole, by a merge patch (field
//! manager `ssegate`) that replaces every list and removes every field
//! ssegate does not set ([`replacing`]). A server-side apply would leave
//! an entry someone else added to a keyed list (a condition, a feature)
//! in place, and the status would never come out right.
//!
//! An HTTPRoute's `status.parents` is shared with the controllers of its
//! other parents, and the CRD makes it an atomic list: an apply would
//! replace their entries with ours. So it is read, merged
//! (ssegate's entries replaced, dropped for parents no longer ssegate's,
//! every other controller's entry kept as it is) and written back by a
//! merge patch that carries the resourceVersion it was read at: if another
//! controller wrote in between, the apiserver refuses it (409) and the next
//! round merges again.
//!
//! ResolvedRefs of an HTTPRoute comes from the translation when it refused
//! a reference (RefNotPermitted, InvalidKind), else from the table build's
//! verdict (BackendNotFound); a backend without ready endpoints is
//! resolved as far as the Gateway API is concerned (it answers 503 and
//! there is no such reason).
//!
//! The decisions (`gateway_desired.rs`: what each status should be, how
//! parents merge, when two statuses are the same) are pure and
//! unit-tested; the task here around them does I/O.

use super::addresses::{self, Address, Publish};
use super::gateway_services::{addresses_by_gateway, ManagedServices};
use super::kube::FIELD_MANAGER;
use super::ECHO_WINDOW;
use crate::api::gateway::http_route::HttpRouteStatusParents;
use crate::api::gateway::{Gateway, GatewayClass, HttpRoute};
use crate::model::{ObjectKey, RouteReport, SourceKind};
use crate::sources::kube::ClusterState;
use crate::translate::gateway::listeners::GatewayPlan;
use crate::translate::gateway::{GatewayOutcome, CONTROLLER};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tracing::{debug, warn};

use super::gateway_desired::{
    apply_own_address, class_status, gateway_status, merge_parents, normalized, our_parents, own_address, replacing,
    route_resolved_refs, same_status, stamp,
};
fn now() -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    now.round(jiff::Unit::Second).unwrap_or(now)
}

/// What the writer reads of the cluster: the live objects (to write only
/// what differs), a signal when any of them changes, and the latest
/// translation.
pub struct LiveGatewayApi {
    state: Arc<ClusterState>,
    changed: Arc<Notify>,
    outcome: watch::Receiver<Arc<GatewayOutcome>>,
}

impl LiveGatewayApi {
    /// `None` when the cluster does not serve the Gateway API.
    pub fn from_cluster(state: &Arc<ClusterState>) -> Option<Self> {
        let stores = state.gateway.as_ref()?;
        Some(LiveGatewayApi {
            changed: stores.changed.clone(),
            outcome: stores.outcome.subscribe(),
            state: state.clone(),
        })
    }

    fn class(&self, name: &str) -> Option<Arc<GatewayClass>> {
        self.state.gateway.as_ref()?.class(name)
    }

    fn gateway(&self, key: &ObjectKey) -> Option<Arc<Gateway>> {
        self.state.gateway.as_ref()?.gateway(key)
    }

    fn route(&self, key: &ObjectKey) -> Option<Arc<HttpRoute>> {
        self.state.gateway.as_ref()?.http_route(key)
    }

    fn routes(&self) -> Vec<Arc<HttpRoute>> {
        self.state.gateway.as_ref().map(|g| g.http_routes()).unwrap_or_default()
    }
}

/// The writer task.
pub struct GatewayStatusWriter {
    client: Client,
    live: LiveGatewayApi,
    publish: Publish,
    metrics: Arc<crate::metrics::Metrics>,
    /// What was written lately, per kind and object: until the watch shows
    /// it, the live object predates the write, and writing again is waste
    /// (and, for an HTTPRoute, a certain conflict).
    recent: HashMap<(&'static str, ObjectKey), (serde_json::Value, Instant)>,
    /// The Gateways' own Services, when Gateways get them.
    own_services: Option<watch::Receiver<ManagedServices>>,
    /// Since when Gateways' status has waited for their own Services to be
    /// listed, and whether that was logged: a wait of more than
    /// [`OWN_SERVICES_PATIENCE`] is a warning, once.
    own_wait: Option<(Instant, bool)>,
}

/// How long Gateways' status may wait for their own Services' first
/// listing before it is worth a warning.
const OWN_SERVICES_PATIENCE: Duration = Duration::from_secs(30);

impl GatewayStatusWriter {
    pub fn new(client: Client, live: LiveGatewayApi, publish: Publish, metrics: Arc<crate::metrics::Metrics>) -> Self {
        GatewayStatusWriter {
            client,
            live,
            publish,
            metrics,
            recent: HashMap::new(),
            own_services: None,
            own_wait: None,
        }
    }

    /// Publishes each Gateway's own Service's addresses instead of the
    /// shared ones (see [`own_address`]).
    pub fn with_own_services(mut self, services: watch::Receiver<ManagedServices>) -> Self {
        self.own_services = Some(services);
        self
    }

    /// Runs until its inputs close: writes while `leader` is true, on
    /// every new translation, set of verdicts, published address or own
    /// Service, every change of a watched object, and a periodic resync
    /// (the shared loop, `writer_loop.rs`).
    pub async fn run(self, reports: watch::Receiver<Arc<Vec<RouteReport>>>, leader: watch::Receiver<bool>) {
        let (addresses, service_watch) = addresses::feed(&self.client, &self.publish);
        let outcome = self.live.outcome.clone();
        let changed = self.live.changed.clone();
        let (own, own_open) = match self.own_services.clone() {
            Some(rx) => (rx, true),
            None => (watch::channel(None).1, false),
        };
        let kind = GatewayKind {
            writer: self,
            reports,
            outcome,
            addresses,
            addresses_open: true,
            own,
            own_open,
            built: false,
            _service_watch: service_watch,
        };
        super::writer_loop::run(kind, Some(changed), leader).await;
    }

    /// Whether `status` was just written for `id` (and the watch may not
    /// show it yet).
    fn just_written(&self, id: &(&'static str, ObjectKey), status: &serde_json::Value) -> bool {
        self.recent.get(id).is_some_and(|(written, _)| written == status)
    }

    fn written(&mut self, id: (&'static str, ObjectKey), status: serde_json::Value) {
        self.metrics.status_write(true);
        debug!(kind = id.0, object = %id.1, "status written");
        self.recent.insert(id, (status, Instant::now()));
    }

    /// Logs a failed write; false when it is worth retrying.
    fn failed(&self, kind: &str, key: &ObjectKey, e: kube::Error) -> bool {
        match e {
            kube::Error::Api(e) if e.code == 404 => {
                debug!(kind, object = %key, "deleted before its status was written");
                true
            }
            kube::Error::Api(e) if e.code == 409 => {
                debug!(kind, object = %key, "changed while its status was merged; merging again");
                false
            }
            e => {
                warn!(kind, object = %key, error = %e, "status write failed; will retry");
                self.metrics.status_write(false);
                false
            }
        }
    }

    /// Writes every status that differs from the live one. Returns false
    /// when something failed or was held back, to be tried again soon.
    async fn sync(
        &mut self,
        outcome: &GatewayOutcome,
        reports: &[RouteReport],
        publish: Option<&[Address]>,
        leader: &watch::Receiver<bool>,
    ) -> bool {
        let mut ok = true;
        self.recent.retain(|_, (_, at)| at.elapsed() < ECHO_WINDOW);
        let now = now();

        for plan in &outcome.classes {
            if !*leader.borrow() {
                return ok;
            }
            let Some(live) = self.live.class(&plan.name) else {
                continue;
            };
            if live.metadata.generation != plan.generation {
                continue;
            }
            let current = live.status.clone().unwrap_or_default();
            let mut want = class_status(plan);
            if let Some(c) = want.conditions.as_mut() {
                stamp(c, current.conditions.as_deref().unwrap_or_default(), now);
            }
            if same_status(&want, &current) {
                continue;
            }
            let key = ObjectKey::new("", plan.name.as_str());
            let id = ("GatewayClass", key.clone());
            let value = normalized(&want);
            if self.just_written(&id, &value) {
                ok = false;
                continue;
            }
            let api: Api<GatewayClass> = Api::all(self.client.clone());
            match patch_status(&api, &plan.name, &replacing(&want, &current)).await {
                Ok(()) => self.written(id, value),
                Err(e) => ok &= self.failed("GatewayClass", &key, e),
            }
        }

        // With Services of their own, Gateways wait until those are listed.
        let own: Option<Option<BTreeMap<ObjectKey, Vec<Address>>>> = self
            .own_services
            .as_ref()
            .map(|rx| rx.borrow().as_deref().map(addresses_by_gateway));
        let gateways: &[GatewayPlan] = match &own {
            Some(None) => {
                ok = false;
                let (since, logged) = self.own_wait.get_or_insert((Instant::now(), false));
                if since.elapsed() > OWN_SERVICES_PATIENCE && !*logged {
                    *logged = true;
                    warn!(
                        waited = ?since.elapsed(),
                        gateways = outcome.gateways.len(),
                        "Gateway status waits for the Gateways' own Services to be listed"
                    );
                }
                &[]
            }
            _ => {
                self.own_wait = None;
                &outcome.gateways
            }
        };
        for plan in gateways {
            if !*leader.borrow() {
                return ok;
            }
            let Some(live) = self.live.gateway(&plan.key) else {
                debug!(gateway = %plan.key, "not in the watch yet; its status waits");
                continue;
            };
            if live.metadata.generation != plan.generation {
                debug!(gateway = %plan.key, live = ?live.metadata.generation, translated = ?plan.generation, "translated from another generation; its status waits");
                continue;
            }
            let current = live.status.clone().unwrap_or_default();
            let mut want = gateway_status(plan, publish, current.addresses.clone());
            if let Some(o) = own
                .as_ref()
                .and_then(|o| own_address(plan, &outcome.ports, o.as_ref()?))
            {
                apply_own_address(&mut want, &o);
            }
            if let Some(c) = want.conditions.as_mut() {
                stamp(c, current.conditions.as_deref().unwrap_or_default(), now);
            }
            for l in want.listeners.iter_mut().flatten() {
                let before = current
                    .listeners
                    .iter()
                    .flatten()
                    .find(|c| c.name == l.name)
                    .map(|c| c.conditions.as_slice())
                    .unwrap_or_default();
                stamp(&mut l.conditions, before, now);
            }
            if same_status(&want, &current) {
                continue;
            }
            let id = ("Gateway", plan.key.clone());
            let value = normalized(&want);
            if self.just_written(&id, &value) {
                ok = false;
                continue;
            }
            let api: Api<Gateway> = Api::namespaced(self.client.clone(), &plan.key.namespace);
            match patch_status(&api, &plan.key.name, &replacing(&want, &current)).await {
                Ok(()) => self.written(id, value),
                Err(e) => ok &= self.failed("Gateway", &plan.key, e),
            }
        }

        let reports: HashMap<&ObjectKey, &RouteReport> = reports
            .iter()
            .filter(|r| r.kind == SourceKind::HttpRoute)
            .map(|r| (&r.key, r))
            .collect();
        let mut planned = HashSet::new();
        let mut work = Vec::new();
        for (key, generation, plan) in &outcome.routes {
            planned.insert(key.clone());
            let Some(live) = self.live.route(key) else {
                continue;
            };
            if live.metadata.generation != *generation {
                continue;
            }
            let report = reports.get(key).copied();
            if plan.definition.is_some() && report.is_none_or(|r| r.generation != *generation) {
                // Attached, but not built yet: its verdict follows.
                continue;
            }
            let resolved = route_resolved_refs(plan, report);
            work.push((live, our_parents(plan, *generation, &resolved)));
        }
        // Routes that are no longer ssegate's: take its entries back.
        for live in self.live.routes() {
            let Some(key) = object_key(&live) else { continue };
            let ours = live
                .status
                .iter()
                .flat_map(|s| &s.parents)
                .any(|p| p.controller_name == CONTROLLER);
            if ours && !planned.contains(&key) {
                work.push((live, Vec::new()));
            }
        }
        for (live, ours) in work {
            if !*leader.borrow() {
                return ok;
            }
            let Some(key) = object_key(&live) else { continue };
            let current = live.status.clone().map(|s| s.parents).unwrap_or_default();
            let want = merge_parents(&current, ours, &key.namespace, now);
            if same_status(&want, &current) {
                continue;
            }
            let id = ("HTTPRoute", key.clone());
            let value = normalized(&want);
            if self.just_written(&id, &value) {
                ok = false;
                continue;
            }
            match self
                .write_route(&key, live.metadata.resource_version.as_deref(), &want)
                .await
            {
                Ok(()) => self.written(id, value),
                Err(e) => ok &= self.failed("HTTPRoute", &key, e),
            }
        }
        ok
    }

    /// Replaces `status.parents` by a merge patch, only if the route is
    /// still at `resource_version` (else 409: merged again next round).
    async fn write_route(
        &self,
        key: &ObjectKey,
        resource_version: Option<&str>,
        parents: &[HttpRouteStatusParents],
    ) -> Result<(), kube::Error> {
        let api: Api<HttpRoute> = Api::namespaced(self.client.clone(), &key.namespace);
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": resource_version },
            "status": { "parents": parents },
        });
        patch_status(&api, &key.name, &patch).await
    }
}

fn object_key(route: &HttpRoute) -> Option<ObjectKey> {
    Some(ObjectKey::new(
        route.metadata.namespace.as_deref()?,
        route.metadata.name.as_deref()?,
    ))
}

/// Merge-patches the status of an object that is ssegate's alone.
async fn patch_status<K>(api: &Api<K>, name: &str, patch: &serde_json::Value) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    api.patch_status(name, &params, &Patch::Merge(patch)).await.map(|_| ())
}

/// The Gateway API writer's inputs, for the shared loop.
struct GatewayKind<G> {
    writer: GatewayStatusWriter,
    reports: watch::Receiver<Arc<Vec<RouteReport>>>,
    outcome: watch::Receiver<Arc<GatewayOutcome>>,
    addresses: watch::Receiver<Option<Vec<Address>>>,
    addresses_open: bool,
    own: watch::Receiver<ManagedServices>,
    own_open: bool,
    /// Nothing is written before the first table build: until then the
    /// translation is the empty default, and would take every entry back.
    /// Its verdicts follow the translation they were built from.
    built: bool,
    /// Keeps the published Service's watch (if any) running.
    _service_watch: G,
}

impl<G> super::writer_loop::StatusKind for GatewayKind<G> {
    const NAME: &'static str = "Gateway API";

    async fn sync(&mut self, leader: &watch::Receiver<bool>) -> Option<bool> {
        self.built |= self.reports.has_changed().unwrap_or(false);
        if !self.built {
            return None;
        }
        let current = self.reports.borrow_and_update().clone();
        let plan = self.outcome.borrow_and_update().clone();
        let publish = self.addresses.borrow_and_update().clone();
        self.own.borrow_and_update();
        Some(self.writer.sync(&plan, &current, publish.as_deref(), leader).await)
    }

    async fn input_changed(&mut self) -> bool {
        tokio::select! {
            r = self.reports.changed() => {
                self.built |= r.is_ok();
                r.is_ok()
            }
            o = self.outcome.changed() => o.is_ok(),
            a = self.addresses.changed(), if self.addresses_open => {
                self.addresses_open = a.is_ok();
                true
            }
            s = self.own.changed(), if self.own_open => {
                self.own_open = s.is_ok();
                true
            }
        }
    }
}
