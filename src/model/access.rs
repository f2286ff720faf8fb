//! A rule's access policy as the proxy applies it: the validated policy
//! (`crate::api::ValidAccess`) with what it refers to looked up when the
//! table is built. Pure data.

use std::sync::Arc;

/// Who may reach one rule.
#[derive(Debug, Default)]
pub struct AccessPolicy {
    /// Why the rule is not served: every request is answered 503. The
    /// reasons are for status and logs; clients are told no more than that
    /// the route is closed.
    pub closed: Option<Arc<str>>,
}

impl AccessPolicy {
    /// The policy for a validated one, or `None` when it lets everyone in.
    pub fn resolve(valid: &crate::api::ValidAccess) -> Option<Arc<AccessPolicy>> {
        let closed = if valid.is_closed() {
            Some(Arc::from(valid.closed.join("; ")))
        } else {
            // Read and validated, but the proxy does not enforce these yet:
            // closed until it does.
            valid
                .restricts()
                .then(|| Arc::from("source ranges, authentication and client limits are not enforced yet"))
        };
        closed.is_some().then(|| Arc::new(AccessPolicy { closed }))
    }
}

impl std::fmt::Display for AccessPolicy {
    /// One line for `/debug/routes`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.closed {
            Some(why) => write!(f, "closed, every request answered 503: {why}"),
            None => f.write_str("open"),
        }
    }
}
