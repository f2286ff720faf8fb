//! Writes StreamPolicy status (`status.ancestors`, GEP-713) from the lease
//! holder. Other controllers may report on the same policy's ancestors, so
//! the list is read, ssegate's entries replaced, everyone else's kept, and
//! written back with the live resourceVersion (a conflict is retried on
//! the next round), only when ssegate's entries changed.

use crate::api::{Condition, PolicyAncestorStatus, StreamPolicy};
use crate::model::ObjectKey;
use crate::translate::gateway::policy::PolicyVerdict;
use crate::translate::gateway::{GatewayOutcome, CONTROLLER};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, warn};

/// Finds a StreamPolicy's live object by key.
pub type LookupPolicy = dyn Fn(&ObjectKey) -> Option<Arc<StreamPolicy>> + Send + Sync;

/// The ancestors list to write, or `None` when the live one already says
/// it. ssegate's entries follow `verdict`; other controllers' stay as they
/// are, first. A condition keeps its transition time while its status
/// holds.
pub fn desired_ancestors(
    live: &[PolicyAncestorStatus],
    verdict: &PolicyVerdict,
    now: &str,
) -> Option<Vec<PolicyAncestorStatus>> {
    let mut out: Vec<PolicyAncestorStatus> = live
        .iter()
        .filter(|a| a.controller_name != CONTROLLER)
        .cloned()
        .collect();
    for a in &verdict.ancestors {
        let previous = live
            .iter()
            .find(|l| l.controller_name == CONTROLLER && l.ancestor_ref == a.ancestor)
            .and_then(|l| l.conditions.iter().find(|c| c.type_ == "Accepted"));
        let status = a.accepted.status.as_str();
        let since = previous
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.to_owned());
        out.push(PolicyAncestorStatus {
            ancestor_ref: a.ancestor.clone(),
            controller_name: CONTROLLER.to_owned(),
            conditions: vec![Condition {
                type_: "Accepted".into(),
                status: status.into(),
                reason: a.accepted.reason.into(),
                message: a.accepted.message.clone(),
                observed_generation: verdict.generation,
                last_transition_time: Some(since),
            }],
        });
    }
    (out != live).then_some(out)
}

/// The writer task.
pub struct PolicyStatusWriter {
    client: Client,
    lookup: Box<LookupPolicy>,
}

impl PolicyStatusWriter {
    pub fn new(
        client: Client,
        lookup: impl Fn(&ObjectKey) -> Option<Arc<StreamPolicy>> + Send + Sync + 'static,
    ) -> Self {
        PolicyStatusWriter {
            client,
            lookup: Box::new(lookup),
        }
    }

    /// Runs until its inputs close: writes while `leader` is true, on
    /// every new outcome, and every 30 s (no watch reports a hand edit of a
    /// policy's status: the resync puts it right); the shared loop,
    /// `writer_loop.rs`.
    pub async fn run(self, outcome: watch::Receiver<Arc<GatewayOutcome>>, leader: watch::Receiver<bool>) {
        super::writer_loop::run(PolicyKind { writer: self, outcome }, None, leader).await;
    }

    /// Writes every verdict's ancestors that differ; false when a write
    /// failed (retried soon).
    async fn sync_all(&self, outcome: &GatewayOutcome) -> bool {
        let mut ok = true;
        for verdict in &outcome.policies {
            if let Err(e) = self.sync(verdict).await {
                warn!(policy = %verdict.key, error = %e, "StreamPolicy status write failed; retrying");
                ok = false;
            }
        }
        ok
    }

    async fn sync(&self, verdict: &PolicyVerdict) -> Result<(), kube::Error> {
        let Some(live) = (self.lookup)(&verdict.key) else {
            return Ok(());
        };
        if live.metadata.generation != verdict.generation {
            // Built from an older spec: a newer verdict follows.
            return Ok(());
        }
        let ancestors = live.status.as_ref().map(|s| s.ancestors.as_slice()).unwrap_or_default();
        let now = jiff::Timestamp::now().to_string();
        let Some(desired) = desired_ancestors(ancestors, verdict, &now) else {
            return Ok(());
        };
        let api: Api<StreamPolicy> = Api::namespaced(self.client.clone(), &verdict.key.namespace);
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": live.metadata.resource_version},
            "status": {"ancestors": desired},
        });
        api.patch_status(&verdict.key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        debug!(policy = %verdict.key, "StreamPolicy status written");
        Ok(())
    }
}

/// The StreamPolicy writer's inputs, for the shared loop.
struct PolicyKind {
    writer: PolicyStatusWriter,
    outcome: watch::Receiver<Arc<GatewayOutcome>>,
}

impl super::writer_loop::StatusKind for PolicyKind {
    const NAME: &'static str = "StreamPolicy";
    const RESYNC: Duration = Duration::from_secs(30);

    async fn sync(&mut self, _: &watch::Receiver<bool>) -> Option<bool> {
        let current = self.outcome.borrow_and_update().clone();
        Some(self.writer.sync_all(&current).await)
    }

    async fn input_changed(&mut self) -> bool {
        self.outcome.changed().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PolicyAncestorRef;
    use crate::model::report::Verdict;
    use crate::translate::gateway::policy::AncestorVerdict;

    fn gateway(name: &str) -> PolicyAncestorRef {
        PolicyAncestorRef {
            group: Some("gateway.networking.k8s.io".into()),
            kind: Some("Gateway".into()),
            namespace: Some("apps".into()),
            name: name.into(),
            section_name: None,
        }
    }

    #[test]
    fn ours_are_replaced_others_kept_and_transition_times_held_while_the_status_holds() {
        let verdict = PolicyVerdict {
            key: ObjectKey::new("apps", "p"),
            generation: Some(2),
            ancestors: vec![AncestorVerdict {
                ancestor: gateway("gw"),
                accepted: Verdict::yes("Accepted", "applied"),
            }],
        };
        let theirs = PolicyAncestorStatus {
            ancestor_ref: gateway("gw"),
            controller_name: "example.com/other".into(),
            conditions: Vec::new(),
        };
        let first = desired_ancestors(std::slice::from_ref(&theirs), &verdict, "T1").unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[0], theirs, "another controller's entry is kept, first");
        let c = &first[1].conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.observed_generation),
            ("True", "Accepted", Some(2))
        );
        assert_eq!(c.last_transition_time.as_deref(), Some("T1"));
        assert_eq!(
            desired_ancestors(&first, &verdict, "T2"),
            None,
            "nothing changed: no write"
        );

        let refused = PolicyVerdict {
            ancestors: vec![AncestorVerdict {
                ancestor: gateway("gw"),
                accepted: Verdict::no("Conflicted", "older policy"),
            }],
            ..verdict.clone()
        };
        let second = desired_ancestors(&first, &refused, "T3").unwrap();
        assert_eq!(second[1].conditions[0].last_transition_time.as_deref(), Some("T3"));
        let gone = PolicyVerdict {
            ancestors: Vec::new(),
            ..verdict
        };
        assert_eq!(
            desired_ancestors(&second, &gone, "T4").unwrap(),
            vec![theirs],
            "ours removed"
        );
    }
}
