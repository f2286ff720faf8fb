//! Who may reach a rule: the access policy every input kind is translated
//! into (issue 22).
//!
//! The first duty is to fail closed: a restriction that an object asks for
//! and that ssegate cannot enforce as asked (an ingress-nginx annotation it
//! does not implement, a value it cannot read) leaves the rule in the table,
//! so that no other object's broader path serves it, but answering 503:
//! the answer ingress-nginx gives for a location whose configuration it
//! could not apply ("location denied"). 503 rather than 403 because it is
//! the operator's configuration that is at fault, not the client's
//! credentials, and a 5xx is what monitoring notices.

use std::sync::Arc;

/// A rule's access policy, validated. Pure data: credentials and the
/// external auth service are looked up when the table is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidAccess {
    /// Why the rule must not be served at all, one line per cause. Not
    /// empty means every request is answered 503.
    pub closed: Vec<String>,
}

impl ValidAccess {
    /// A policy that refuses everything, for the reasons given.
    pub fn closed(reasons: Vec<String>) -> Arc<Self> {
        Arc::new(ValidAccess { closed: reasons })
    }

    /// Whether the rule is served at all.
    pub fn is_closed(&self) -> bool {
        !self.closed.is_empty()
    }
}
