//! Writes Route status to the API, from the lease holder only.
//!
//! The table builder hands over its verdicts without waiting ([`KubeStatus`]
//! is a [`StatusSink`]); a separate task compares each verdict with the
//! Route's live status from the watch and writes by server-side apply only
//! when they differ. Comparing with the live object (not with what this
//! process wrote last) makes the writer level-triggered: our own writes come
//! back equal and cause no further write, and a hand edit is put right.

use super::StatusSink;
use super::ECHO_WINDOW;
use crate::api::{Condition, Route, RouteStatus};
use crate::model::{ObjectKey, RouteReport};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{watch, Notify};
use tracing::{debug, warn};

/// Field manager of every status write.
pub const FIELD_MANAGER: &str = "ssegate";

/// Hands the latest verdicts to the writer task.
pub struct KubeStatus {
    latest: watch::Sender<Arc<Vec<RouteReport>>>,
}

impl KubeStatus {
    pub fn new() -> (Self, watch::Receiver<Arc<Vec<RouteReport>>>) {
        let (tx, rx) = watch::channel(Arc::new(Vec::new()));
        (KubeStatus { latest: tx }, rx)
    }
}

impl StatusSink for KubeStatus {
    fn publish(&self, reports: &[RouteReport]) {
        self.latest.send_replace(Arc::new(reports.to_vec()));
    }
}

/// Finds a Route's live object by key.
type LookupRoute = dyn Fn(&ObjectKey) -> Option<Arc<Route>> + Send + Sync;

/// What the status writer reads of the cluster, and no more: a Route's
/// live object (to write only what differs) and a signal when any Route
/// changes (to put a hand edit right).
pub struct LiveRoutes {
    lookup: Box<LookupRoute>,
    changed: Arc<Notify>,
}

impl LiveRoutes {
    pub fn new(
        lookup: impl Fn(&ObjectKey) -> Option<Arc<Route>> + Send + Sync + 'static,
        changed: Arc<Notify>,
    ) -> Self {
        LiveRoutes {
            lookup: Box::new(lookup),
            changed,
        }
    }
}

/// The writer task.
pub struct StatusWriter {
    client: Client,
    live: LiveRoutes,
    /// Events are recorded through a fresh [`Recorder`] each: one folds
    /// every Event of the same reason on an object into the first one's
    /// series, which would keep showing an old message.
    reporter: Reporter,
    /// Exported as `ssegate_status_writes_total` and at `/debug/status`.
    metrics: Arc<crate::metrics::Metrics>,
    /// What was written lately, per Route: the watch may not have caught up
    /// with our own write yet, and writing the same status again is waste.
    recent: HashMap<ObjectKey, (RouteStatus, Instant)>,
}

impl StatusWriter {
    pub fn new(client: Client, live: LiveRoutes, instance: String, metrics: Arc<crate::metrics::Metrics>) -> Self {
        let reporter = Reporter {
            controller: "ssegate".into(),
            instance: Some(instance),
        };
        StatusWriter {
            reporter,
            client,
            live,
            metrics,
            recent: HashMap::new(),
        }
    }

    /// Runs until its inputs close: writes while `leader` is true, on
    /// every new set of verdicts, every Route change, and a periodic resync
    /// (the shared loop, `writer_loop.rs`).
    pub async fn run(self, reports: watch::Receiver<Arc<Vec<RouteReport>>>, leader: watch::Receiver<bool>) {
        let changed = self.live.changed.clone();
        super::writer_loop::run(RouteKind { writer: self, reports }, Some(changed), leader).await;
    }

    /// Writes every status that differs from the live one. Returns false
    /// when a write failed and should be retried.
    async fn sync(&mut self, reports: &[RouteReport], leader: &watch::Receiver<bool>) -> bool {
        let mut ok = true;
        self.recent.retain(|_, (_, at)| at.elapsed() < ECHO_WINDOW);
        for report in reports.iter().filter(|r| r.kind == crate::model::SourceKind::Route) {
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
            let live_status = live.status.clone().unwrap_or_default();
            let desired = with_transition_times(report.status(), &live_status);
            if same_status(&desired, &live_status) {
                continue;
            }
            if self
                .recent
                .get(&report.key)
                .is_some_and(|(written, _)| same_status(written, &desired))
            {
                // Written moments ago: the watch has not caught up, or a
                // hand edit came right after. Look again soon, not at the
                // next resync.
                ok = false;
                continue;
            }
            match self.write(&report.key, &desired).await {
                Ok(()) => {
                    self.recent
                        .insert(report.key.clone(), (desired.clone(), Instant::now()));
                    self.metrics.status_write(true);
                    debug!(route = %report.key, "status written");
                    if !report.accepted.is_true() {
                        self.announce_rejection(&live, report).await;
                    }
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    debug!(route = %report.key, "Route deleted before its status was written");
                }
                Err(e) => {
                    warn!(route = %report.key, error = %e, "status write failed; will retry");
                    self.metrics.status_write(false);
                    ok = false;
                }
            }
        }
        ok
    }

    async fn write(&self, key: &ObjectKey, status: &RouteStatus) -> Result<(), kube::Error> {
        let api: Api<Route> = Api::namespaced(self.client.clone(), &key.namespace);
        let patch = serde_json::json!({
            "apiVersion": crate::api::API_VERSION,
            "kind": "Route",
            "status": status,
        });
        api.patch_status(
            &key.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(|_| ())
    }

    async fn announce_rejection(&self, route: &Route, report: &RouteReport) {
        let mut note = report.accepted.message.clone();
        if note.len() > 1000 {
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let event = Event {
            type_: EventType::Warning,
            reason: report.accepted.reason.to_owned(),
            note: Some(note),
            action: "Route".into(),
            secondary: None,
        };
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(&event, &route.object_ref(&())).await {
            warn!(route = %report.key, error = %e, "cannot publish event");
        }
    }
}

/// Keeps `lastTransitionTime` from the live condition when its status did
/// not change, and stamps now otherwise.
fn with_transition_times(mut desired: RouteStatus, live: &RouteStatus) -> RouteStatus {
    let now = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now());
    for c in &mut desired.conditions {
        let previous = live
            .conditions
            .iter()
            .find(|l| l.type_ == c.type_ && l.status == c.status);
        c.last_transition_time = Some(
            previous
                .and_then(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        );
    }
    desired
}

/// Equal apart from transition times, which only follow status changes.
fn same_status(a: &RouteStatus, b: &RouteStatus) -> bool {
    let strip = |s: &RouteStatus| -> (Option<i64>, Vec<Condition>) {
        let conditions = s
            .conditions
            .iter()
            .map(|c| Condition {
                last_transition_time: None,
                ..c.clone()
            })
            .collect();
        (s.observed_generation, conditions)
    };
    strip(a) == strip(b)
}

/// The Route writer's inputs, for the shared loop.
struct RouteKind {
    writer: StatusWriter,
    reports: watch::Receiver<Arc<Vec<RouteReport>>>,
}

impl super::writer_loop::StatusKind for RouteKind {
    const NAME: &'static str = "Route";

    async fn sync(&mut self, leader: &watch::Receiver<bool>) -> Option<bool> {
        let current = self.reports.borrow_and_update().clone();
        Some(self.writer.sync(&current, leader).await)
    }

    async fn input_changed(&mut self) -> bool {
        self.reports.changed().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(type_: &str, status: &str, time: Option<&str>) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: "m".into(),
            observed_generation: Some(1),
            last_transition_time: time.map(str::to_owned),
        }
    }

    #[test]
    fn transition_time_kept_while_status_holds() {
        let live = RouteStatus {
            observed_generation: Some(1),
            conditions: vec![condition("Accepted", "True", Some("2020-01-01T00:00:00Z"))],
        };
        let desired = RouteStatus {
            observed_generation: Some(1),
            conditions: vec![
                condition("Accepted", "True", None),
                condition("ResolvedRefs", "False", None),
            ],
        };
        let merged = with_transition_times(desired, &live);
        assert_eq!(
            merged.conditions[0].last_transition_time.as_deref(),
            Some("2020-01-01T00:00:00Z")
        );
        assert_ne!(
            merged.conditions[1].last_transition_time.as_deref(),
            Some("2020-01-01T00:00:00Z")
        );
        assert!(!same_status(&merged, &live));
        assert!(same_status(&with_transition_times(live.clone(), &live), &live));
    }
}
