//! Where Route status goes once the model has decided it.
//!
//! Standalone mode has no API to write to, so [`LogStatus`] reports each
//! change of a Route's conditions in the log, once, and `/debug/routes`
//! shows the full set. The Kubernetes status writer implements the same
//! trait.

use crate::model::{ObjectKey, RouteReport, SourceKind};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tracing::{info, warn};

/// How long a status write is trusted while the watch catches up with it:
/// a live object that still shows the old status within this window is an
/// echo of the past, not a hand edit to put right.
pub(crate) const ECHO_WINDOW: Duration = Duration::from_secs(2);

/// How long a status writer waits before looking again: soon after a write
/// failed or was held back, else until the periodic resync (which puts
/// right a hand edit the watch did not report).
pub(crate) fn next_sync_in(retry_soon: bool) -> Duration {
    if retry_soon {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(300)
    }
}

/// Receives the model's verdicts after every table build.
pub trait StatusSink: Send + Sync {
    fn publish(&self, reports: &[RouteReport]);
}

/// Logs Route status changes; silent when nothing changed.
#[derive(Default)]
pub struct LogStatus {
    last: Mutex<HashMap<(SourceKind, ObjectKey), RouteReport>>,
}

impl StatusSink for LogStatus {
    fn publish(&self, reports: &[RouteReport]) {
        let mut last = self.last.lock().expect("status log lock");
        let mut seen = HashMap::with_capacity(reports.len());
        for report in reports {
            let id = (report.kind, report.key.clone());
            if last.get(&id) != Some(report) {
                log_report(report);
            }
            seen.insert(id, report.clone());
        }
        for (kind, gone) in last.keys().filter(|k| !seen.contains_key(*k)) {
            info!(route = %gone, kind = kind.as_str(), "route removed");
        }
        *last = seen;
    }
}

fn log_report(r: &RouteReport) {
    let route = r.key.to_string();
    let kind = r.kind.as_str();
    for warning in &r.warnings {
        warn!(%route, kind, %warning, "not honoured as written");
    }
    if !r.accepted.is_true() {
        warn!(%route, kind, reason = r.accepted.reason, message = %r.accepted.message, "route not accepted");
    } else if !r.resolved_refs.is_true() {
        warn!(%route, kind, reason = r.resolved_refs.reason, message = %r.resolved_refs.message, "route accepted, backends unresolved");
    } else {
        // Say what it now serves with: a flip of proxyBuffering or a new
        // timeout shows here, not just "accepted".
        info!(%route, kind, settings = %r.settings.join("; "), "route accepted");
    }
}

pub mod addresses;
pub mod gateway;
pub mod gateway_desired;
pub mod gateway_services;
pub mod ingress;
pub mod kube;
pub mod lease;
pub mod stream_policy;
mod writer_loop;
