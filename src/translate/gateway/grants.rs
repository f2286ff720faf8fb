//! Cross-namespace references (ReferenceGrant) and namespace selectors:
//! the two questions Gateway API asks about namespaces.

use crate::api::gateway::gateway::GatewayListenersAllowedRoutesNamespacesSelector as Selector;
use crate::api::gateway::ReferenceGrant;
use std::collections::BTreeMap;

/// Whether a `from_kind` in `from_namespace` may refer to the `to_kind`
/// (core group when `to_group` is empty) named `to_name` in `to_namespace`.
/// Same namespace needs no grant.
pub fn permitted(
    grants: &[ReferenceGrant],
    from_kind: &str,
    from_namespace: &str,
    to_group: &str,
    to_kind: &str,
    to_name: &str,
    to_namespace: &str,
) -> bool {
    if from_namespace == to_namespace {
        return true;
    }
    grants
        .iter()
        .filter(|g| g.metadata.namespace.as_deref() == Some(to_namespace))
        .any(|g| {
            g.spec
                .from
                .iter()
                .any(|f| f.group == super::GROUP && f.kind == from_kind && f.namespace == from_namespace)
                && g.spec
                    .to
                    .iter()
                    .any(|t| t.group == to_group && t.kind == to_kind && t.name.as_deref().is_none_or(|n| n == to_name))
        })
}

/// Whether a namespace with `labels` is selected (matchLabels and
/// matchExpressions, all of them).
pub fn selects(selector: &Selector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(ns: &str, yaml: &str) -> ReferenceGrant {
        let mut g: ReferenceGrant = serde_yaml::from_str(&format!(
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: g, namespace: {ns}}}\nspec:\n{yaml}"
        ))
        .unwrap();
        g.metadata.namespace = Some(ns.into());
        g
    }

    #[test]
    fn a_grant_in_the_target_namespace_opens_exactly_what_it_names() {
        let grants = [grant(
            "backends",
            "  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]\n  to: [{group: \"\", kind: Service, name: sse}]\n",
        )];
        let ok = |from_ns: &str, name: &str, to_ns: &str| {
            permitted(&grants, "HTTPRoute", from_ns, "", "Service", name, to_ns)
        };
        assert!(ok("apps", "sse", "backends"));
        assert!(!ok("apps", "other", "backends"), "the grant names one Service");
        assert!(!ok("elsewhere", "sse", "backends"));
        assert!(ok("apps", "anything", "apps"), "same namespace needs no grant");
        assert!(!permitted(&grants, "Gateway", "apps", "", "Service", "sse", "backends"));
        assert!(!ok("apps", "sse", "third"), "a grant only opens its own namespace");
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let selector: Selector = serde_yaml::from_str(
            "matchLabels: {team: a}\nmatchExpressions: [{key: env, operator: In, values: [prod, staging]}, {key: legacy, operator: DoesNotExist}]",
        )
        .unwrap();
        let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert!(selects(&selector, &labels(&[("team", "a"), ("env", "prod")])));
        assert!(!selects(&selector, &labels(&[("team", "a"), ("env", "dev")])));
        assert!(!selects(&selector, &labels(&[("team", "b"), ("env", "prod")])));
        assert!(!selects(
            &selector,
            &labels(&[("team", "a"), ("env", "prod"), ("legacy", "1")])
        ));
    }
}
