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
//! The decisions ([`class_status`], [`gateway_status`],
//! [`route_resolved_refs`], [`our_parents`], [`merge_parents`],
//! [`same_status`], [`replacing`]) are pure and unit-tested; the task
//! around them does I/O.

use super::addresses::{self, Address, Publish};
use super::gateway_services::{addresses_by_gateway, ManagedServices};
use super::kube::FIELD_MANAGER;
use super::ECHO_WINDOW;
use crate::api::gateway::gateway::{
    GatewayStatusAddresses, GatewayStatusListeners, GatewayStatusListenersSupportedKinds,
};
use crate::api::gateway::gateway_class::GatewayClassStatusSupportedFeatures;
use crate::api::gateway::http_route::{HttpRouteParentRefs, HttpRouteStatusParents, HttpRouteStatusParentsParentRef};
use crate::api::gateway::{Gateway, GatewayClass, GatewayClassStatus, GatewayStatus, HttpRoute, BUNDLE_VERSION};
use crate::model::report::reason;
use crate::model::{GatewayPorts, ObjectKey, RouteReport, SourceKind, Verdict};
use crate::sources::kube::ClusterState;
use crate::translate::gateway::http_route::RoutePlan;
use crate::translate::gateway::listeners::GatewayPlan;
use crate::translate::gateway::service::service_ports;
use crate::translate::gateway::{ClassPlan, GatewayOutcome, CONTROLLER, GROUP, SUPPORTED_FEATURES};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tracing::{debug, warn};

/// The condition type (and reason) saying which Gateway API version the
/// GatewayClass's controller supports.
pub const SUPPORTED_VERSION: &str = "SupportedVersion";
/// Longest condition message the API takes.
const MAX_MESSAGE: usize = 32768;

/// A condition from a verdict. Its transition time is set by [`stamp`].
pub fn condition(type_: &str, verdict: &Verdict, generation: Option<i64>) -> Condition {
    let mut message = verdict.message.clone();
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    Condition {
        type_: type_.to_owned(),
        status: verdict.status.as_str().to_owned(),
        reason: verdict.reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
    }
}

/// Keeps `lastTransitionTime` from the live condition of the same type when
/// its status did not change, and sets `now` otherwise.
pub fn stamp(desired: &mut [Condition], live: &[Condition], now: jiff::Timestamp) {
    for c in desired {
        c.last_transition_time = live
            .iter()
            .find(|l| l.type_ == c.type_ && l.status == c.status)
            .map(|l| l.last_transition_time.clone())
            .unwrap_or(Time(now));
    }
}

/// Whether two statuses say the same, transition times aside and whatever
/// the order of conditions.
pub fn same_status<T: Serialize>(a: &T, b: &T) -> bool {
    normalized(a) == normalized(b)
}

fn normalized<T: Serialize>(v: &T) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("lastTransitionTime");
                if let Some(serde_json::Value::Array(list)) = map.get_mut("conditions") {
                    list.sort_by(|x, y| x["type"].as_str().cmp(&y["type"].as_str()));
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(list) => list.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(v).unwrap_or_default();
    walk(&mut v);
    v
}

/// A merge patch of `status` that makes it exactly `want`: a merge patch
/// replaces lists whole, and a field of `live` that `want` does not set is
/// removed (null).
pub fn replacing<T: Serialize>(want: &T, live: &T) -> serde_json::Value {
    let mut patch = serde_json::to_value(want).unwrap_or_default();
    if let (Some(fields), Ok(serde_json::Value::Object(before))) = (patch.as_object_mut(), serde_json::to_value(live)) {
        for key in before.keys() {
            fields.entry(key.clone()).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": patch })
}

/// The status of one of ssegate's GatewayClasses.
pub fn class_status(plan: &ClassPlan) -> GatewayClassStatus {
    let version = Verdict::yes(
        SUPPORTED_VERSION,
        format!("ssegate supports Gateway API {BUNDLE_VERSION}"),
    );
    GatewayClassStatus {
        conditions: Some(vec![
            condition("Accepted", &plan.accepted, plan.generation),
            condition(SUPPORTED_VERSION, &version, plan.generation),
        ]),
        supported_features: Some(
            SUPPORTED_FEATURES
                .iter()
                .map(|f| GatewayClassStatusSupportedFeatures { name: (*f).to_owned() })
                .collect(),
        ),
    }
}

/// One entry of a Gateway's `status.addresses`.
fn gateway_address(a: &Address) -> GatewayStatusAddresses {
    let (kind, value) = match a {
        Address::Ip(ip) => ("IPAddress", ip),
        Address::Hostname(h) => ("Hostname", h),
    };
    GatewayStatusAddresses {
        r#type: Some(kind.to_owned()),
        value: value.clone(),
    }
}

/// The status of one of ssegate's Gateways. `addresses` are the ones
/// ssegate publishes; `None` (no flag, or the Service not known yet) keeps
/// `live_addresses`: nothing is taken back on a guess.
pub fn gateway_status(
    plan: &GatewayPlan,
    addresses: Option<&[Address]>,
    live_addresses: Option<Vec<GatewayStatusAddresses>>,
) -> GatewayStatus {
    let generation = plan.generation;
    let listeners = plan
        .verdicts
        .iter()
        .map(|v| {
            // A listener of a protocol ssegate does not serve takes no kind.
            let kinds: Vec<GatewayStatusListenersSupportedKinds> = if v.accepted.reason == "UnsupportedProtocol" {
                Vec::new()
            } else {
                v.supported_kinds
                    .iter()
                    .map(|k| GatewayStatusListenersSupportedKinds {
                        group: Some(GROUP.to_owned()),
                        kind: k.clone(),
                    })
                    .collect()
            };
            GatewayStatusListeners {
                name: v.name.clone(),
                attached_routes: v.attached_routes,
                supported_kinds: (!kinds.is_empty()).then_some(kinds),
                conditions: vec![
                    condition("Accepted", &v.accepted, generation),
                    condition("Programmed", &v.programmed, generation),
                    condition("ResolvedRefs", &v.resolved_refs, generation),
                    condition("Conflicted", &v.conflicted, generation),
                ],
            }
        })
        .collect();
    let addresses = match addresses {
        Some(list) if !list.is_empty() => Some(list.iter().map(gateway_address).collect()),
        Some(_) => None,
        None => live_addresses,
    };
    GatewayStatus {
        addresses,
        attached_listener_sets: None,
        conditions: Some(vec![
            condition("Accepted", &plan.accepted, generation),
            condition("Programmed", &plan.programmed, generation),
        ]),
        listeners: Some(listeners),
    }
}

/// A Gateway's own address, when Gateways get Services of their own
/// (`--gateway-ports` with `--gateway-service-selector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnAddress {
    /// Its Service's addresses.
    Ready(Vec<Address>),
    /// Its Service is not written yet, or its load balancer is pending.
    Pending,
    /// The port range has no slot left for it: it is served on the shared
    /// address only, where requests match every Gateway's routes.
    NoPorts,
}

/// Reason of `Programmed=False` while a Gateway's address is pending.
pub const ADDRESS_NOT_ASSIGNED: &str = "AddressNotAssigned";
/// Reason of `Programmed=False` for a Gateway the port range has no room for.
pub const NO_RESOURCES: &str = "NoResources";

/// Where `plan`'s Gateway is reached when Gateways get Services of their
/// own: `services` are the Gateways' own Services' addresses. `None` when
/// it has no Service and needs none (no listener ssegate serves, or not
/// accepted): the shared address applies.
pub fn own_address(
    plan: &GatewayPlan,
    ports: &GatewayPorts,
    services: &BTreeMap<ObjectKey, Vec<Address>>,
) -> Option<OwnAddress> {
    if !plan.accepted.is_true() {
        return None;
    }
    let Some(assigned) = ports.get(&plan.key) else {
        return ports
            .unassigned()
            .any(|k| *k == plan.key)
            .then_some(OwnAddress::NoPorts);
    };
    if service_ports(plan, assigned).is_empty() {
        return None;
    }
    match services.get(&plan.key) {
        Some(list) if !list.is_empty() => Some(OwnAddress::Ready(list.clone())),
        _ => Some(OwnAddress::Pending),
    }
}

/// Puts a Gateway's own address into its status: its Service's addresses,
/// or none and `Programmed=False` while they are pending, or
/// `Programmed=False, NoResources` (shared addresses kept) when it got no
/// ports. A Programmed that is already false says why first and is kept.
pub fn apply_own_address(status: &mut GatewayStatus, own: &OwnAddress) {
    let why = match own {
        OwnAddress::Ready(list) => {
            status.addresses = Some(list.iter().map(gateway_address).collect());
            return;
        }
        OwnAddress::Pending => {
            status.addresses = None;
            (
                ADDRESS_NOT_ASSIGNED,
                "waiting for the address of the Gateway's own Service (being written, or its load balancer pending)",
            )
        }
        OwnAddress::NoPorts => (
            NO_RESOURCES,
            "--gateway-ports has no ports left for this Gateway (older Gateways took them): it is served on the shared address only, where requests match every Gateway's routes",
        ),
    };
    if let Some(programmed) = status
        .conditions
        .iter_mut()
        .flatten()
        .find(|c| c.type_ == "Programmed" && c.status == "True")
    {
        programmed.status = "False".into();
        programmed.reason = why.0.into();
        programmed.message = why.1.into();
    }
}

/// Whether an HTTPRoute's references resolve, for every parent of
/// ssegate's: what the translation refused, else the table build's verdict
/// (`None`: the route is attached nowhere, so never built; only the
/// translation's checks apply).
pub fn route_resolved_refs(plan: &RoutePlan, report: Option<&RouteReport>) -> Verdict {
    if let Some(refused) = &plan.refused_refs {
        return refused.clone();
    }
    let Some(report) = report else {
        return Verdict::yes(
            reason::RESOLVED_REFS,
            "no reference is refused (backends are looked up once the route is attached)",
        );
    };
    let v = &report.resolved_refs;
    if v.is_true() {
        return v.clone();
    }
    match v.reason {
        reason::NO_READY_ENDPOINTS => Verdict::yes(
            reason::RESOLVED_REFS,
            format!("references resolved; {} (answered with 503)", v.message),
        ),
        reason::BACKEND_NOT_FOUND | reason::REF_NOT_PERMITTED => v.clone(),
        _ => Verdict::no(reason::BACKEND_NOT_FOUND, v.message.clone()),
    }
}

fn status_ref(p: &HttpRouteParentRefs) -> HttpRouteStatusParentsParentRef {
    HttpRouteStatusParentsParentRef {
        group: p.group.clone(),
        kind: p.kind.clone(),
        name: p.name.clone(),
        namespace: p.namespace.clone(),
        port: p.port,
        section_name: p.section_name.clone(),
    }
}

/// Whether two parentRefs of a route in `namespace` name the same parent
/// (the API defaults group, kind and namespace).
pub fn same_parent(a: &HttpRouteStatusParentsParentRef, b: &HttpRouteStatusParentsParentRef, namespace: &str) -> bool {
    let norm = |r: &HttpRouteStatusParentsParentRef| {
        (
            r.group.clone().unwrap_or_else(|| GROUP.to_owned()),
            r.kind.clone().unwrap_or_else(|| "Gateway".to_owned()),
            r.namespace.clone().unwrap_or_else(|| namespace.to_owned()),
            r.name.clone(),
            r.port,
            r.section_name.clone(),
        )
    };
    norm(a) == norm(b)
}

/// ssegate's entries of an HTTPRoute's `status.parents`: one per parent of
/// ssegate's, with the translation's Accepted and the route's ResolvedRefs.
pub fn our_parents(plan: &RoutePlan, generation: Option<i64>, resolved_refs: &Verdict) -> Vec<HttpRouteStatusParents> {
    plan.parents
        .iter()
        .map(|p| HttpRouteStatusParents {
            controller_name: CONTROLLER.to_owned(),
            parent_ref: status_ref(&p.parent),
            conditions: vec![
                condition("Accepted", &p.accepted, generation),
                condition("ResolvedRefs", resolved_refs, generation),
            ],
        })
        .collect()
}

/// The route's new `status.parents`: every other controller's entry as it
/// is and where it is; ssegate's replaced in place (keeping transition
/// times of conditions that did not change), dropped when the parent is no
/// longer ssegate's, and appended when new.
pub fn merge_parents(
    live: &[HttpRouteStatusParents],
    ours: Vec<HttpRouteStatusParents>,
    namespace: &str,
    now: jiff::Timestamp,
) -> Vec<HttpRouteStatusParents> {
    let mut pending: Vec<Option<HttpRouteStatusParents>> = ours.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(live.len() + pending.len());
    for entry in live {
        if entry.controller_name != CONTROLLER {
            out.push(entry.clone());
            continue;
        }
        let slot = pending.iter_mut().find(|p| {
            p.as_ref()
                .is_some_and(|p| same_parent(&p.parent_ref, &entry.parent_ref, namespace))
        });
        if let Some(mut mine) = slot.and_then(Option::take) {
            stamp(&mut mine.conditions, &entry.conditions, now);
            // Keep the parentRef as the API spelled it (defaults filled in).
            mine.parent_ref = entry.parent_ref.clone();
            out.push(mine);
        }
    }
    for mut mine in pending.into_iter().flatten() {
        stamp(&mut mine.conditions, &[], now);
        out.push(mine);
    }
    out
}

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

    /// Runs forever: writes while `leader` is true, on every new
    /// translation or set of verdicts, every change of a GatewayClass,
    /// Gateway or HTTPRoute, every change of the published addresses, and
    /// a periodic resync.
    pub async fn run(mut self, mut reports: watch::Receiver<Arc<Vec<RouteReport>>>, mut leader: watch::Receiver<bool>) {
        let (mut addresses, _service_watch) = addresses::feed(&self.client, &self.publish);
        let mut outcome = self.live.outcome.clone();
        let changed = self.live.changed.clone();
        let mut addresses_open = true;
        let (mut own, mut own_open) = match self.own_services.clone() {
            Some(rx) => (rx, true),
            None => (watch::channel(None).1, false),
        };
        let mut retry_soon = false;
        // Nothing is written before the first table build: until then the
        // translation is the empty default, and would take every entry
        // back. Its verdicts follow the translation they were built from.
        let mut built = false;
        loop {
            // Armed before the sync, so a change during it is not missed.
            let objects_changed = changed.notified();
            tokio::pin!(objects_changed);
            objects_changed.as_mut().enable();
            built |= reports.has_changed().unwrap_or(false);
            if built && *leader.borrow_and_update() {
                let current = reports.borrow_and_update().clone();
                let plan = outcome.borrow_and_update().clone();
                let publish = addresses.borrow_and_update().clone();
                own.borrow_and_update();
                retry_soon = !self.sync(&plan, &current, publish.as_deref(), &leader).await;
            }
            let wait = super::next_sync_in(retry_soon);
            tokio::select! {
                r = reports.changed() => if r.is_err() { return } else { built = true },
                l = leader.changed() => if l.is_err() { return },
                o = outcome.changed() => if o.is_err() { return },
                a = addresses.changed(), if addresses_open => addresses_open = a.is_ok(),
                s = own.changed(), if own_open => own_open = s.is_ok(),
                _ = &mut objects_changed => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
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

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
