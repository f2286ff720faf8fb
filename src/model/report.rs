//! Route status as decided by the model, before any API write.

use crate::api::{Condition, RouteStatus};
use serde::Serialize;

use super::{ObjectKey, SourceKind};

pub const ACCEPTED: &str = "Accepted";
pub const RESOLVED_REFS: &str = "ResolvedRefs";

/// Reasons used in Route conditions.
pub mod reason {
    pub const ACCEPTED: &str = "Accepted";
    pub const INVALID: &str = "Invalid";
    pub const CONFLICTED: &str = "Conflicted";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    pub const NO_READY_ENDPOINTS: &str = "NoReadyEndpoints";
    pub const INVALID_CERTIFICATE_REF: &str = "InvalidCertificateRef";
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
    /// It asks for access restrictions ssegate does not enforce: its paths
    /// are held and answer 503.
    pub const ACCESS_NOT_ENFORCED: &str = "AccessNotEnforced";
}

/// The model's verdict on one Route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteReport {
    #[serde(serialize_with = "kind_name")]
    pub kind: SourceKind,
    #[serde(serialize_with = "as_display")]
    pub key: ObjectKey,
    pub generation: Option<i64>,
    pub accepted: Verdict,
    pub resolved_refs: Verdict,
    /// The settings each rule serves with, one line per rule (empty when
    /// the Route is invalid): a change to them is a change worth logging.
    pub settings: Vec<String>,
    /// What the translation could not honour (see
    /// [`RouteDefinition::warnings`](super::RouteDefinition::warnings)).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A condition's status, as Kubernetes spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// One condition without its timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub status: ConditionStatus,
    pub reason: &'static str,
    pub message: String,
}

impl Verdict {
    pub fn yes(reason: &'static str, message: impl Into<String>) -> Self {
        Verdict {
            status: ConditionStatus::True,
            reason,
            message: message.into(),
        }
    }
    pub fn no(reason: &'static str, message: impl Into<String>) -> Self {
        Verdict {
            status: ConditionStatus::False,
            reason,
            message: message.into(),
        }
    }
    pub fn unknown(reason: &'static str, message: impl Into<String>) -> Self {
        Verdict {
            status: ConditionStatus::Unknown,
            reason,
            message: message.into(),
        }
    }
    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True
    }
}

impl RouteReport {
    /// The status to publish, without transition times.
    pub fn status(&self) -> RouteStatus {
        let condition = |type_: &str, v: &Verdict| Condition {
            type_: type_.to_owned(),
            status: v.status.as_str().to_owned(),
            reason: v.reason.to_owned(),
            message: v.message.clone(),
            observed_generation: self.generation,
            last_transition_time: None,
        };
        RouteStatus {
            observed_generation: self.generation,
            conditions: vec![
                condition(ACCEPTED, &self.accepted),
                condition(RESOLVED_REFS, &self.resolved_refs),
            ],
        }
    }
}

fn kind_name<S: serde::Serializer>(kind: &SourceKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

fn as_display<S: serde::Serializer>(key: &ObjectKey, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(key)
}
