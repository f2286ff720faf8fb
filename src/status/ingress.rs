//! Writes `status.loadBalancer` of the Ingresses ssegate serves, and records
//! a Warning Event for each thing their translation could not honour, from
//! the lease holder only.
//!
//! The addresses are those ssegate publishes ([`super::addresses`]: from
//! `--publish-status-address` or `--publish-service`; with neither, nothing
//! is written). An accepted Ingress gets them
//! even while its backends are unresolved (the address is where clients
//! reach ssegate, which answers for it); an Ingress ssegate refuses gets
//! none, and an address ssegate had set on it is taken back.
//!
//! Like the Route writer ([`super::kube`]) it compares the wanted status
//! with the live object from the watch and writes by server-side apply
//! (field manager `ssegate`) only when they differ: level-triggered, so a
//! hand edit is put right and our own write comes back equal. Ingresses
//! that stop being ssegate's (class changed, deleted) drop out of the
//! reports and are left alone.
//!
//! The decisions ([`desired`], [`service_addresses`], [`set_by_us`],
//! [`Announced`]) are pure and unit-tested; the task around them does I/O.

pub use super::addresses::{service_addresses, Address, Publish};
use super::kube::FIELD_MANAGER;
use super::ECHO_WINDOW;
use crate::model::{ObjectKey, RouteReport, SourceKind};
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{watch, Notify};
use tracing::{debug, warn};

/// One entry of `status.loadBalancer.ingress`.
fn to_status(address: &Address) -> IngressLoadBalancerIngress {
    match address {
        Address::Ip(ip) => IngressLoadBalancerIngress {
            ip: Some(ip.clone()),
            ..Default::default()
        },
        Address::Hostname(h) => IngressLoadBalancerIngress {
            hostname: Some(h.clone()),
            ..Default::default()
        },
    }
}

/// Whether `status.loadBalancer.ingress` is ssegate's, by the object's
/// managed fields: ssegate applied it last and nobody has changed it since.
pub fn set_by_us(meta: &ObjectMeta) -> bool {
    meta.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(FIELD_MANAGER)
            && m.subresource.as_deref() == Some("status")
            && m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:status/f:loadBalancer/f:ingress").is_some())
    })
}

/// What to do with one Ingress's `status.loadBalancer.ingress`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// It is right, or not ours to touch.
    Keep,
    /// Write these addresses.
    Write(Vec<Address>),
    /// Take back the addresses ssegate had set.
    Clear,
}

/// Decides the addresses of one Ingress. `publish` is what ssegate
/// publishes (`None` or empty: nothing known, so nothing is written and
/// nothing is taken back on a guess); `live` is the Ingress's current
/// `status.loadBalancer.ingress`; `ours` says whether ssegate set it
/// ([`set_by_us`]). Order does not matter; an entry with anything else
/// (ports, both ip and hostname) differs and is rewritten.
pub fn desired(accepted: bool, publish: Option<&[Address]>, live: &[IngressLoadBalancerIngress], ours: bool) -> Change {
    let Some(publish) = publish.filter(|p| !p.is_empty()) else {
        return Change::Keep;
    };
    if !accepted {
        return if ours && !live.is_empty() {
            Change::Clear
        } else {
            Change::Keep
        };
    }
    let mut want: Vec<Address> = publish.to_vec();
    want.sort();
    want.dedup();
    let key = |i: &IngressLoadBalancerIngress| (i.ip.clone(), i.hostname.clone());
    let mut have = live.to_vec();
    have.sort_by_key(key);
    let mut wanted: Vec<IngressLoadBalancerIngress> = want.iter().map(to_status).collect();
    wanted.sort_by_key(key);
    if have == wanted {
        Change::Keep
    } else {
        Change::Write(want)
    }
}

/// One Warning Event to record on an Ingress.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Notice {
    pub reason: String,
    pub note: String,
}

/// The Events a verdict calls for: one per warning, named for what became
/// of the annotation, and one for a rejection with its message.
pub fn notices(report: &RouteReport) -> Vec<Notice> {
    let mut out: Vec<Notice> = report
        .warnings
        .iter()
        .map(|w| Notice {
            reason: warning_reason(w).to_owned(),
            note: w.clone(),
        })
        .collect();
    if !report.accepted.is_true() {
        out.push(Notice {
            reason: report.accepted.reason.to_owned(),
            note: report.accepted.message.clone(),
        });
    }
    out
}

/// The Event reason of a translation warning (see
/// `translate::ingress::describe`): ignored, not needed, or a value that
/// could not be read or used.
pub fn warning_reason(warning: &str) -> &'static str {
    if warning.contains(": ignored: ") {
        "AnnotationIgnored"
    } else if warning.contains(": not needed: ") {
        "AnnotationUnnecessary"
    } else {
        "AnnotationInvalid"
    }
}

/// Which Events were recorded, per Ingress and generation: each distinct
/// one once per generation, not again on every resync. A new generation
/// (the spec or annotations changed) starts over.
#[derive(Debug, Default)]
pub struct Announced {
    seen: HashMap<ObjectKey, (Option<i64>, BTreeSet<Notice>)>,
}

impl Announced {
    /// The notices not yet recorded for this generation of `key`.
    pub fn pending(&mut self, key: &ObjectKey, generation: Option<i64>, notices: Vec<Notice>) -> Vec<Notice> {
        let entry = self
            .seen
            .entry(key.clone())
            .or_insert_with(|| (generation, BTreeSet::new()));
        if entry.0 != generation {
            *entry = (generation, BTreeSet::new());
        }
        let mut fresh: Vec<Notice> = notices.into_iter().filter(|n| !entry.1.contains(n)).collect();
        fresh.sort();
        fresh.dedup();
        fresh
    }

    /// Marks `notice` recorded for this generation of `key`.
    pub fn recorded(&mut self, key: &ObjectKey, generation: Option<i64>, notice: Notice) {
        let entry = self
            .seen
            .entry(key.clone())
            .or_insert_with(|| (generation, BTreeSet::new()));
        if entry.0 == generation {
            entry.1.insert(notice);
        }
    }

    /// Forgets Ingresses that are no longer reported.
    pub fn retain(&mut self, keep: impl Fn(&ObjectKey) -> bool) {
        self.seen.retain(|k, _| keep(k));
    }
}

/// Finds an Ingress's live object by key.
type LookupIngress = dyn Fn(&ObjectKey) -> Option<Arc<Ingress>> + Send + Sync;

/// What the writer reads of the cluster: an Ingress's live object (to
/// write only what differs) and a signal when any Ingress changes.
pub struct LiveIngresses {
    lookup: Box<LookupIngress>,
    changed: Arc<Notify>,
}

impl LiveIngresses {
    pub fn new(
        lookup: impl Fn(&ObjectKey) -> Option<Arc<Ingress>> + Send + Sync + 'static,
        changed: Arc<Notify>,
    ) -> Self {
        LiveIngresses {
            lookup: Box::new(lookup),
            changed,
        }
    }
}

/// Longest Event note the API takes is 1 KiB.
const MAX_NOTE: usize = 1000;

/// One recent write.
struct Written {
    addresses: Vec<Address>,
    resource_version: Option<String>,
    at: Instant,
}

/// The writer task.
pub struct IngressStatusWriter {
    client: Client,
    live: LiveIngresses,
    publish: Publish,
    /// Each Event is recorded by a fresh [`Recorder`]: a Recorder folds
    /// every Event with the same reason on the same object into a series of
    /// the first, keeping the first one's note, so two ignored annotations
    /// (or a changed message) would show as one. [`Announced`] already keeps
    /// each message to once per generation.
    reporter: Reporter,
    metrics: Arc<crate::metrics::Metrics>,
    /// What was written lately, per Ingress (empty: cleared), with the
    /// resourceVersion the write made: until the watch shows that version
    /// the live object may predate the write, and writing the same again
    /// is waste.
    recent: HashMap<ObjectKey, Written>,
    announced: Announced,
}

impl IngressStatusWriter {
    pub fn new(
        client: Client,
        live: LiveIngresses,
        publish: Publish,
        instance: String,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: "ssegate".into(),
            instance: Some(instance),
        };
        IngressStatusWriter {
            reporter,
            client,
            live,
            publish,
            metrics,
            recent: HashMap::new(),
            announced: Announced::default(),
        }
    }

    /// Runs until its inputs close: writes while `leader` is true, on
    /// every new set of verdicts, every Ingress change, every change of the
    /// published addresses, and a periodic resync (the shared loop,
    /// `writer_loop.rs`).
    pub async fn run(self, reports: watch::Receiver<Arc<Vec<RouteReport>>>, leader: watch::Receiver<bool>) {
        let (addresses, service_watch) = super::addresses::feed(&self.client, &self.publish);
        let changed = self.live.changed.clone();
        let kind = IngressKind {
            writer: self,
            reports,
            addresses,
            addresses_open: true,
            _service_watch: service_watch,
        };
        super::writer_loop::run(kind, Some(changed), leader).await;
    }

    /// Records new Events and writes every status that differs from the
    /// live one. Returns false when something failed and should be retried,
    /// or a write was held back while the watch catches up (a hand edit
    /// just after our write is then put right within a second or two).
    async fn sync(
        &mut self,
        reports: &[RouteReport],
        publish: Option<&[Address]>,
        leader: &watch::Receiver<bool>,
    ) -> bool {
        let mut ok = true;
        self.recent.retain(|_, w| w.at.elapsed() < ECHO_WINDOW);
        let ingresses: Vec<&RouteReport> = reports.iter().filter(|r| r.kind == SourceKind::Ingress).collect();
        self.announced.retain(|k| ingresses.iter().any(|r| &r.key == k));
        for report in ingresses {
            if !*leader.borrow() {
                // The Lease ran out mid-sync: another replica may hold it now.
                break;
            }
            let Some(live) = (self.live.lookup)(&report.key) else {
                continue;
            };
            if live.metadata.generation != report.generation {
                // The table was built from an older spec; a newer verdict follows.
                continue;
            }
            ok &= self.announce(&live, report).await;
            let current: Vec<IngressLoadBalancerIngress> = live
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.clone())
                .unwrap_or_default();
            let write = match desired(report.accepted.is_true(), publish, &current, set_by_us(&live.metadata)) {
                Change::Keep => continue,
                Change::Write(addresses) => addresses,
                Change::Clear => Vec::new(),
            };
            if let Some(w) = self.recent.get(&report.key) {
                if w.resource_version.is_some() && w.resource_version == live.metadata.resource_version {
                    // The watch has caught up: the live object is the judge.
                    self.recent.remove(&report.key);
                } else if w.addresses == write {
                    ok = false;
                    continue;
                }
            }
            match self.write(&report.key, &write).await {
                Ok(resource_version) => {
                    self.metrics.status_write(true);
                    debug!(ingress = %report.key, addresses = ?write, "Ingress status written");
                    self.recent.insert(
                        report.key.clone(),
                        Written {
                            addresses: write,
                            resource_version,
                            at: Instant::now(),
                        },
                    );
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    debug!(ingress = %report.key, "Ingress deleted before its status was written");
                }
                Err(e) => {
                    warn!(ingress = %report.key, error = %e, "Ingress status write failed; will retry");
                    self.metrics.status_write(false);
                    ok = false;
                }
            }
        }
        ok
    }

    /// Applies `status.loadBalancer.ingress` (none: gives up ssegate's
    /// claim, which removes the addresses it had set). Returns the
    /// resourceVersion it made.
    async fn write(&self, key: &ObjectKey, addresses: &[Address]) -> Result<Option<String>, kube::Error> {
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), &key.namespace);
        let status = if addresses.is_empty() {
            serde_json::json!({})
        } else {
            let list: Vec<IngressLoadBalancerIngress> = addresses.iter().map(to_status).collect();
            serde_json::json!({ "loadBalancer": { "ingress": list } })
        };
        let patch = serde_json::json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "status": status,
        });
        api.patch_status(
            &key.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(|written| written.metadata.resource_version)
    }

    /// Records the Events of this generation not yet recorded. Returns
    /// false when one could not be (it is tried again).
    async fn announce(&mut self, ingress: &Ingress, report: &RouteReport) -> bool {
        let pending = self.announced.pending(&report.key, report.generation, notices(report));
        let mut ok = true;
        for notice in pending {
            let event = Event {
                type_: EventType::Warning,
                reason: notice.reason.clone(),
                note: Some(truncate(&notice.note, MAX_NOTE)),
                action: "Ingress".into(),
                secondary: None,
            };
            let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
            match recorder.publish(&event, &ingress.object_ref(&())).await {
                Ok(()) => self.announced.recorded(&report.key, report.generation, notice),
                Err(e) => {
                    warn!(ingress = %report.key, error = %e, "cannot publish event");
                    ok = false;
                }
            }
        }
        ok
    }
}

fn truncate(text: &str, max: usize) -> String {
    let mut cut = text.len().min(max);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut].to_owned()
}

/// The Ingress writer's inputs, for the shared loop.
struct IngressKind<G> {
    writer: IngressStatusWriter,
    reports: watch::Receiver<Arc<Vec<RouteReport>>>,
    addresses: watch::Receiver<Option<Vec<super::addresses::Address>>>,
    addresses_open: bool,
    /// Keeps the published Service's watch (if any) running.
    _service_watch: G,
}

impl<G> super::writer_loop::StatusKind for IngressKind<G> {
    const NAME: &'static str = "Ingress";

    async fn sync(&mut self, leader: &watch::Receiver<bool>) -> Option<bool> {
        let current = self.reports.borrow_and_update().clone();
        let publish = self.addresses.borrow_and_update().clone();
        Some(self.writer.sync(&current, publish.as_deref(), leader).await)
    }

    async fn input_changed(&mut self) -> bool {
        tokio::select! {
            r = self.reports.changed() => r.is_ok(),
            a = self.addresses.changed(), if self.addresses_open => {
                self.addresses_open = a.is_ok();
                true
            }
        }
    }
}

#[cfg(test)]
#[path = "ingress_tests.rs"]
mod tests;
