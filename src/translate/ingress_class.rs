//! Which Ingresses are ssegate's: the IngressClass rules every controller
//! follows, so ssegate can run beside another ingress controller (say
//! ingress-nginx during a migration) without either serving the other's
//! Ingresses. Pure: no I/O, no kube client.

use std::collections::BTreeSet;

/// The class name ssegate answers to by default.
pub const DEFAULT_CLASS: &str = "ssegate";
/// The controller name ssegate's IngressClasses carry in `spec.controller`.
pub const CONTROLLER: &str = "ssegate.dev/ingress";
/// The legacy annotation that named a class before `spec.ingressClassName`.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// The IngressClass annotation that makes a class the cluster's default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// An IngressClass as far as class selection cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressClassInfo {
    pub name: String,
    pub controller: String,
    /// Annotated `ingressclass.kubernetes.io/is-default-class: "true"`.
    pub is_default: bool,
}

/// What ssegate was told to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassPolicy {
    /// `--ingress-class`: the class name ssegate answers to when no
    /// IngressClass of that name says otherwise (standalone folders and
    /// the legacy annotation need no IngressClass object).
    pub class_name: String,
    /// `--watch-ingress-without-class`: also serve Ingresses naming no
    /// class at all, as ingress-nginx's flag of that name.
    pub without_class: bool,
    /// `--claim-ingress-class`: classes served even though their
    /// IngressClass names another controller: `nginx`, to move a team's
    /// Ingresses over without editing them, while ingress-nginx is off.
    pub claimed: Vec<String>,
}

impl Default for ClassPolicy {
    fn default() -> Self {
        ClassPolicy {
            class_name: DEFAULT_CLASS.to_owned(),
            without_class: false,
            claimed: Vec::new(),
        }
    }
}

/// The classes ssegate serves, decided once per table build.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OurClasses {
    names: BTreeSet<String>,
    /// One of ours is the cluster's default class.
    default: bool,
    without_class: bool,
}

impl OurClasses {
    /// Ours: every IngressClass whose controller is [`CONTROLLER`], plus
    /// `policy.class_name` unless an IngressClass of that name belongs to
    /// another controller.
    pub fn new(classes: &[IngressClassInfo], policy: &ClassPolicy) -> Self {
        let mut names = BTreeSet::new();
        let mut default = false;
        for class in classes.iter().filter(|c| c.controller == CONTROLLER) {
            names.insert(class.name.clone());
            default |= class.is_default;
        }
        if !classes.iter().any(|c| c.name == policy.class_name) {
            names.insert(policy.class_name.clone());
        }
        names.extend(policy.claimed.iter().cloned());
        OurClasses {
            names,
            default,
            without_class: policy.without_class,
        }
    }

    /// Whether an Ingress with this `spec.ingressClassName` and legacy
    /// annotation is ssegate's. The field wins over the annotation; an
    /// Ingress naming neither is ours when one of our classes is the
    /// default or when told to take them.
    pub fn serves(&self, class_name: Option<&str>, legacy_annotation: Option<&str>) -> bool {
        match (class_name, legacy_annotation) {
            (Some(name), _) if !name.is_empty() => self.names.contains(name),
            (_, Some(name)) if !name.is_empty() => self.names.contains(name),
            _ => self.default || self.without_class,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, controller: &str, is_default: bool) -> IngressClassInfo {
        IngressClassInfo {
            name: name.into(),
            controller: controller.into(),
            is_default,
        }
    }

    fn policy(without_class: bool) -> ClassPolicy {
        ClassPolicy {
            class_name: "ssegate".into(),
            without_class,
            claimed: Vec::new(),
        }
    }

    #[test]
    fn the_class_field_names_the_controller_through_its_ingressclass() {
        let classes = [
            class("sse", CONTROLLER, false),
            class("nginx", "k8s.io/ingress-nginx", true),
        ];
        let ours = OurClasses::new(&classes, &policy(false));
        assert!(ours.serves(Some("sse"), None));
        assert!(
            ours.serves(Some("ssegate"), None),
            "the flag's name, with no IngressClass of that name"
        );
        assert!(!ours.serves(Some("nginx"), None));
        assert!(!ours.serves(Some("missing"), None));
        // The field wins over the legacy annotation.
        assert!(!ours.serves(Some("nginx"), Some("sse")));
        assert!(ours.serves(None, Some("sse")));
        assert!(!ours.serves(None, Some("nginx")));
        // nginx is the default class, not ours: no-class Ingresses are nginx's.
        assert!(!ours.serves(None, None));
        assert!(!ours.serves(Some(""), Some("")));
    }

    #[test]
    fn a_claimed_class_is_served_though_its_ingressclass_names_another_controller() {
        let classes = [class("nginx", "k8s.io/ingress-nginx", true)];
        let claiming = ClassPolicy {
            claimed: vec!["nginx".into()],
            ..policy(false)
        };
        let ours = OurClasses::new(&classes, &claiming);
        assert!(ours.serves(Some("nginx"), None));
        assert!(ours.serves(None, Some("nginx")));
        assert!(!ours.serves(None, None), "the default class is still nginx's, not ours");
        assert!(!OurClasses::new(&classes, &policy(false)).serves(Some("nginx"), None));
    }

    #[test]
    fn a_class_of_our_name_owned_by_another_controller_is_not_ours() {
        let ours = OurClasses::new(&[class("ssegate", "example.com/other", false)], &policy(false));
        assert!(!ours.serves(Some("ssegate"), None));
        assert!(!ours.serves(None, Some("ssegate")));
    }

    #[test]
    fn ingresses_without_a_class_are_ours_when_our_class_is_default_or_when_told() {
        let default = OurClasses::new(&[class("ssegate", CONTROLLER, true)], &policy(false));
        assert!(default.serves(None, None));
        let told = OurClasses::new(&[], &policy(true));
        assert!(told.serves(None, None));
        let neither = OurClasses::new(&[class("ssegate", CONTROLLER, false)], &policy(false));
        assert!(!neither.serves(None, None));
    }
}
