//! What became of one annotation: shared by every reader of an Ingress's
//! annotations (its settings, its access rules) and by those who report
//! on them (status, `convert`).

/// What became of one annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Honoured, as the Route setting named here.
    Applied(String),
    /// Not needed in ssegate, for the reason given.
    Unnecessary(String),
    /// Not honoured, for the reason given.
    Ignored(String),
    /// Its value could not be read; the default applies.
    Invalid(String),
    /// It restricts who may reach the Ingress's paths and ssegate does not
    /// enforce it (or its value is unusable, so it cannot be enforced): the
    /// Ingress is not served, every path answers 503. The reason.
    Closed(String),
    /// As [`Outcome::Closed`], but named in
    /// `ssegate.dev/unenforced-annotations`: served without it, as its
    /// owner asked. The reason it is not enforced.
    OptedOut(String),
}

impl Outcome {
    /// Whether the annotation's owner should be warned (an Event).
    pub fn warns(&self) -> bool {
        !matches!(self, Outcome::Applied(_))
    }
}
