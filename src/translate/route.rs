//! `ssegate.dev/v1alpha1` Route: the model's native shape, so translating
//! one is validating it, with every problem reported by field path.

use crate::api::RouteSpec;
use crate::model::{ObjectKey, RouteDefinition, SourceKind};

/// The definition of the Route `key` with `spec`.
pub fn translate(key: ObjectKey, generation: Option<i64>, created_millis: i64, spec: &RouteSpec) -> RouteDefinition {
    RouteDefinition {
        kind: SourceKind::Route,
        key,
        generation,
        created_millis,
        translated: spec.validate(),
        warnings: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_route_translates_and_an_invalid_one_keeps_its_reasons() {
        let good: RouteSpec = serde_yaml::from_str("rules: [{backendRefs: [{name: svc, port: 80}]}]").unwrap();
        let def = translate(ObjectKey::new("ns", "good"), Some(2), 5, &good);
        assert_eq!(def.kind, SourceKind::Route);
        assert_eq!((def.generation, def.created_millis), (Some(2), 5));
        assert_eq!(def.translated.unwrap().rules.len(), 1);

        let bad: RouteSpec = serde_yaml::from_str("rules: [{backendRefs: [{name: svc, port: 0}]}]").unwrap();
        let errors = translate(ObjectKey::new("ns", "bad"), None, 0, &bad)
            .translated
            .unwrap_err();
        assert_eq!(errors[0].field, "spec.rules[0].backendRefs[0].port");
    }
}
