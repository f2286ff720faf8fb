//! StreamPolicy attachment: which policy's settings each HTTPRoute rule
//! gets, and what each policy's `status.ancestors` should say (GEP-713
//! direct policy attachment).
//!
//! # Precedence
//!
//! A rule's settings are built in layers, each laid over the one before
//! field by field, with the same merge a Route's rules use over the Route
//! ([`crate::api::GivenSettings`]): a layer overrides only the fields its
//! policy sets.
//!
//! 1. ssegate's defaults ([`StreamSettings::DEFAULT`]);
//! 2. the policy targeting a **Gateway** the route is attached through
//!    (a `parentRef` to a Gateway of ssegate's class). When a route names
//!    several such Gateways and more than one has a policy, the oldest of
//!    those policies is the layer: ssegate serves every Gateway on the same
//!    listeners, so one request cannot tell which Gateway it came through;
//! 3. the policy targeting the whole **HTTPRoute**;
//! 4. the policy targeting the **rule** (an HTTPRoute target whose
//!    `sectionName` is the rule's `name`).
//!
//! So the most specific attachment wins, per field. **`access` is the
//! exception: it adds up.** Every policy that targets a Gateway the route
//! is attached through, the route, or the rule applies its `access`
//! (Gateway ones first, oldest first), valid, conflicted or not: a request
//! must pass each. No policy can lift a restriction another sets, which
//! "most specific wins" would allow; and an invalid policy that has
//! `access` closes its targets (503) rather than apply nowhere.
//! `maxConcurrentStreams`
//! limits a whole route: it comes from the HTTPRoute's policy, else from
//! the Gateway's (each route attached through the Gateway gets the limit
//! for itself); a rule's policy cannot set it.
//!
//! # Verdicts
//!
//! Policies are taken oldest first (`creationTimestamp`, then namespace and
//! name). Per target:
//! - a policy that fails validation is `Invalid` on every target, naming
//!   each field, and applies nowhere (it never blocks another policy);
//! - a target that does not exist (no such HTTPRoute, no rule of that
//!   `name`, no Gateway of ssegate's class) is `TargetNotFound`;
//! - a target an older valid policy already holds is `Conflicted` (the
//!   message names the winner), and this policy does not apply there;
//! - otherwise `Accepted`.
//!
//! Ancestors (GEP-713): a Gateway target is its own ancestor; an HTTPRoute
//! target's ancestors are the Gateways of ssegate's it names in
//! `parentRefs`, or the HTTPRoute itself when it names none or was not
//! found. When several targets share an ancestor, the entry is `False` if
//! any of them is, with every such message. At most
//! [`MAX_TARGETS`] ancestors are reported.

use crate::api::gateway::HttpRoute;
use crate::api::stream_policy::{PolicyAncestorRef, PolicyTarget, TargetKind, ValidPolicy, MAX_TARGETS};
use crate::api::{StreamPolicy, StreamSettings, ValidAccess};
use crate::model::report::Verdict;
use crate::model::ObjectKey;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The settings of one HTTPRoute's rules, by rule index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteSettings {
    /// One per rule of the route; missing ones are the defaults.
    pub rules: Vec<StreamSettings>,
    pub max_concurrent_streams: Option<usize>,
    /// The access policies of each rule, all to be passed (see
    /// [`attach`]); missing ones are none.
    pub access: Vec<Option<Arc<ValidAccess>>>,
}

impl RouteSettings {
    /// The settings of rule `index`.
    pub fn rule(&self, index: usize) -> StreamSettings {
        self.rules.get(index).copied().unwrap_or(StreamSettings::DEFAULT)
    }

    /// Who may reach rule `index`.
    pub fn rule_access(&self, index: usize) -> Option<Arc<ValidAccess>> {
        self.access.get(index).cloned().flatten()
    }
}

/// A policy's status with respect to one ancestor.
#[derive(Debug, Clone, PartialEq)]
pub struct AncestorVerdict {
    pub ancestor: PolicyAncestorRef,
    pub accepted: Verdict,
}

/// What one policy's `status.ancestors` should say.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyVerdict {
    pub key: ObjectKey,
    pub generation: Option<i64>,
    pub ancestors: Vec<AncestorVerdict>,
}

/// The attachment of every policy.
#[derive(Debug, Clone, Default)]
pub struct PolicyOutcome {
    /// Every HTTPRoute given, by key.
    pub routes: BTreeMap<ObjectKey, RouteSettings>,
    /// Every policy with a name, oldest first.
    pub verdicts: Vec<PolicyVerdict>,
}

/// One policy, read.
struct Entry<'a> {
    key: ObjectKey,
    policy: &'a StreamPolicy,
    valid: Result<ValidPolicy, String>,
}

/// What a target is, to find conflicts: kind, object, rule name.
type TargetId = (TargetKind, ObjectKey, Option<String>);

/// Attaches `policies` to `routes` (every HTTPRoute, by key) and
/// `gateways` (the Gateways of ssegate's classes). Objects that name no
/// namespace are in `default_namespace`.
pub fn attach(
    policies: &[StreamPolicy],
    routes: &BTreeMap<ObjectKey, &HttpRoute>,
    gateways: &BTreeSet<ObjectKey>,
    default_namespace: &str,
) -> PolicyOutcome {
    let mut entries: Vec<(i64, Entry<'_>)> = policies
        .iter()
        .filter_map(|policy| {
            let key = super::key_of(&policy.metadata, default_namespace)?;
            let valid = policy
                .spec
                .validate()
                .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
            Some((super::created(&policy.metadata), Entry { key, policy, valid }))
        })
        .collect();
    entries.sort_by(|(a, x), (b, y)| (a, &x.key).cmp(&(b, &y.key)));
    let entries: Vec<Entry<'_>> = entries.into_iter().map(|(_, e)| e).collect();

    let mut winners: BTreeMap<TargetId, usize> = BTreeMap::new();
    let mut verdicts = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let namespace = entry.key.namespace.as_str();
        let mut ancestors: Vec<AncestorVerdict> = Vec::new();
        match &entry.valid {
            Err(problems) => {
                for t in &entry.policy.spec.target_refs {
                    let ancestor = PolicyAncestorRef {
                        group: Some(t.group.clone()),
                        kind: Some(t.kind.clone()),
                        namespace: Some(namespace.to_owned()),
                        name: t.name.clone(),
                        section_name: None,
                    };
                    merge(&mut ancestors, ancestor, Verdict::no("Invalid", problems.clone()));
                }
            }
            Ok(valid) => {
                for target in &valid.targets {
                    let object = ObjectKey::new(namespace, target.name.as_str());
                    let (found, through) = resolve(target, &object, routes, gateways);
                    let verdict = match found {
                        Err(message) => Verdict::no("TargetNotFound", message),
                        Ok(()) => {
                            let id = (target.kind, object.clone(), target.section_name.clone());
                            match winners.get(&id) {
                                Some(&w) => Verdict::no(
                                    "Conflicted",
                                    format!(
                                        "StreamPolicy {} is older and already targets {}",
                                        entries[w].key,
                                        describe(target)
                                    ),
                                ),
                                None => {
                                    winners.insert(id, index);
                                    Verdict::yes("Accepted", accepted_message(target, &through))
                                }
                            }
                        }
                    };
                    let refs = if through.is_empty() {
                        vec![target_ref(target, namespace)]
                    } else {
                        through.iter().map(gateway_ref).collect()
                    };
                    for ancestor in refs {
                        merge(&mut ancestors, ancestor, verdict.clone());
                    }
                }
            }
        }
        ancestors.truncate(MAX_TARGETS);
        verdicts.push(PolicyVerdict {
            key: entry.key.clone(),
            generation: entry.policy.metadata.generation,
            ancestors,
        });
    }

    // Each policy's access, as its targets get it.
    let access: Vec<Option<Arc<ValidAccess>>> = entries.iter().map(policy_access).collect();
    // Which policies target what, valid or not, won or not.
    let targeting = |kind: TargetKind, object: &ObjectKey, section: Option<&str>| -> Vec<Arc<ValidAccess>> {
        entries
            .iter()
            .zip(&access)
            .filter_map(|(e, a)| Some((e, a.as_ref()?)))
            .filter(|(e, _)| {
                e.key.namespace == object.namespace
                    && e.policy.spec.target_refs.iter().any(|t| {
                        t.group == super::GROUP
                            && t.kind == kind.as_str()
                            && t.name == object.name
                            && t.section_name.as_deref() == section
                    })
            })
            .map(|(_, a)| a.clone())
            .collect()
    };

    let winner = |id: TargetId| winners.get(&id).copied();
    let mut out = BTreeMap::new();
    for (key, route) in routes {
        // The oldest policy among the Gateways the route is attached through.
        let gateway = ours(route, key, gateways)
            .into_iter()
            .filter_map(|g| winner((TargetKind::Gateway, g, None)))
            .min();
        let whole = winner((TargetKind::HttpRoute, key.clone(), None));
        let base = [gateway, whole]
            .into_iter()
            .flatten()
            .fold(StreamSettings::DEFAULT, |s, p| layer(s, &entries[p]));
        let names: Vec<Option<String>> = match &route.spec.rules {
            Some(rules) => rules.iter().map(|r| r.name.clone()).collect(),
            // No rules: the one default rule, which has no name.
            None => vec![None],
        };
        let rules = names
            .into_iter()
            .map(
                |name| match name.and_then(|n| winner((TargetKind::HttpRoute, key.clone(), Some(n)))) {
                    Some(p) => layer(base, &entries[p]),
                    None => base,
                },
            )
            .collect();
        let max_concurrent_streams = [whole, gateway]
            .into_iter()
            .flatten()
            .find_map(|p| entries[p].valid.as_ref().ok()?.max_concurrent_streams);
        let mut shared: Vec<Arc<ValidAccess>> = Vec::new();
        for g in ours(route, key, gateways) {
            shared.extend(targeting(TargetKind::Gateway, &g, None));
        }
        shared.extend(targeting(TargetKind::HttpRoute, key, None));
        let rule_access = match &route.spec.rules {
            Some(rules) => rules
                .iter()
                .map(|r| {
                    let own = r
                        .name
                        .as_deref()
                        .map(|n| targeting(TargetKind::HttpRoute, key, Some(n)))
                        .unwrap_or_default();
                    ValidAccess::all_of(shared.iter().cloned().chain(own))
                })
                .collect(),
            None => vec![ValidAccess::all_of(shared.iter().cloned())],
        };
        out.insert(
            key.clone(),
            RouteSettings {
                rules,
                max_concurrent_streams,
                access: rule_access,
            },
        );
    }
    PolicyOutcome { routes: out, verdicts }
}

/// A policy's `access` as its targets get it: validated, owned by the
/// policy (its limits counted per policy, its Secrets in its namespace), or
/// closed when the policy is invalid.
fn policy_access(entry: &Entry<'_>) -> Option<Arc<ValidAccess>> {
    let spec = entry.policy.spec.access.as_ref()?;
    let owner = format!("StreamPolicy {}", entry.key);
    let mut valid = match &entry.valid {
        Ok(_) => spec.validate(&format!("{owner} spec.access")),
        Err(problems) => ValidAccess {
            closed: vec![format!(
                "{owner} is invalid, so its access cannot be enforced: {problems}"
            )],
            ..Default::default()
        },
    };
    if !valid.restricts() {
        return None;
    }
    valid.owner = Some(owner);
    valid.namespace = Some(entry.key.namespace.clone());
    Some(Arc::new(valid))
}

/// `entry`'s settings laid over `parent`. The entry was validated, so the
/// merge reports nothing.
fn layer(parent: StreamSettings, entry: &Entry<'_>) -> StreamSettings {
    entry.policy.spec.given().layered(parent, "spec").0
}

/// Whether `target` exists, and the Gateways of ssegate's it takes effect
/// through (none for a missing target).
fn resolve(
    target: &PolicyTarget,
    object: &ObjectKey,
    routes: &BTreeMap<ObjectKey, &HttpRoute>,
    gateways: &BTreeSet<ObjectKey>,
) -> (Result<(), String>, Vec<ObjectKey>) {
    match target.kind {
        TargetKind::Gateway if gateways.contains(object) => (Ok(()), vec![object.clone()]),
        TargetKind::Gateway => (
            Err(format!("no Gateway {object} of a GatewayClass of ssegate's")),
            Vec::new(),
        ),
        TargetKind::HttpRoute => {
            let Some(route) = routes.get(object) else {
                return (Err(format!("no HTTPRoute {object}")), Vec::new());
            };
            if let Some(section) = &target.section_name {
                let has_rule = route
                    .spec
                    .rules
                    .iter()
                    .flatten()
                    .any(|r| r.name.as_deref() == Some(section));
                if !has_rule {
                    return (
                        Err(format!("HTTPRoute {object} has no rule named {section}")),
                        Vec::new(),
                    );
                }
            }
            (Ok(()), ours(route, object, gateways))
        }
    }
}

/// The Gateways of ssegate's that `route` names as parents, in order.
fn ours(route: &HttpRoute, key: &ObjectKey, gateways: &BTreeSet<ObjectKey>) -> Vec<ObjectKey> {
    let mut out: Vec<ObjectKey> = Vec::new();
    for parent in route.spec.parent_refs.iter().flatten() {
        let group_ok = parent.group.as_deref().is_none_or(|g| g == super::GROUP);
        let kind_ok = parent.kind.as_deref().is_none_or(|k| k == "Gateway");
        let gateway = ObjectKey::new(
            parent.namespace.as_deref().unwrap_or(&key.namespace),
            parent.name.as_str(),
        );
        if group_ok && kind_ok && gateways.contains(&gateway) && !out.contains(&gateway) {
            out.push(gateway);
        }
    }
    out
}

fn describe(target: &PolicyTarget) -> String {
    match &target.section_name {
        Some(rule) => format!("rule {rule} of HTTPRoute {}", target.name),
        None => format!("{} {}", target.kind.as_str(), target.name),
    }
}

fn accepted_message(target: &PolicyTarget, through: &[ObjectKey]) -> String {
    if through.is_empty() {
        format!(
            "the policy applies to {}, which names no Gateway of ssegate's yet",
            describe(target)
        )
    } else {
        format!("the policy applies to {}", describe(target))
    }
}

fn target_ref(target: &PolicyTarget, namespace: &str) -> PolicyAncestorRef {
    PolicyAncestorRef {
        group: Some(super::GROUP.to_owned()),
        kind: Some(target.kind.as_str().to_owned()),
        namespace: Some(namespace.to_owned()),
        name: target.name.clone(),
        section_name: target.section_name.clone(),
    }
}

fn gateway_ref(gateway: &ObjectKey) -> PolicyAncestorRef {
    PolicyAncestorRef {
        group: Some(super::GROUP.to_owned()),
        kind: Some("Gateway".to_owned()),
        namespace: Some(gateway.namespace.clone()),
        name: gateway.name.clone(),
        section_name: None,
    }
}

/// Adds `verdict` for `ancestor`, or folds it into the entry already there:
/// the entry is `False` when any target under it is.
fn merge(ancestors: &mut Vec<AncestorVerdict>, ancestor: PolicyAncestorRef, verdict: Verdict) {
    let Some(entry) = ancestors.iter_mut().find(|a| a.ancestor == ancestor) else {
        ancestors.push(AncestorVerdict {
            ancestor,
            accepted: verdict,
        });
        return;
    };
    match (entry.accepted.is_true(), verdict.is_true()) {
        (true, false) => entry.accepted = verdict,
        (false, false) if !entry.accepted.message.contains(&verdict.message) => {
            entry.accepted.message = format!("{}; {}", entry.accepted.message, verdict.message);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EffectiveTimeouts, LoadBalancing, ProxyBuffering};
    use std::time::Duration;

    fn route(name: &str, yaml: &str) -> HttpRoute {
        serde_yaml::from_str(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n{yaml}"
        ))
        .unwrap()
    }

    /// A policy in `apps` created `second` seconds into the day.
    fn policy(name: &str, second: u32, yaml: &str) -> StreamPolicy {
        serde_yaml::from_str(&format!(
            "apiVersion: ssegate.dev/v1alpha1\nkind: StreamPolicy\nmetadata: {{name: {name}, namespace: apps, creationTimestamp: \"2026-01-01T00:00:{second:02}Z\", generation: 3}}\nspec:\n{yaml}"
        ))
        .unwrap()
    }

    fn target(kind: &str, name: &str) -> String {
        format!("  targetRefs: [{{group: gateway.networking.k8s.io, kind: {kind}, name: {name}}}]\n")
    }

    const RULES: &str = "  rules:\n  - name: stream\n    backendRefs: [{name: svc, port: 80}]\n  - backendRefs: [{name: svc, port: 80}]\n";

    fn routes() -> Vec<HttpRoute> {
        vec![
            route("events", &format!("  parentRefs: [{{name: gw}}]\n{RULES}")),
            route(
                "plain",
                "  parentRefs: [{name: gw, sectionName: http}]\n  rules: [{backendRefs: [{name: svc, port: 80}]}]\n",
            ),
            route(
                "lonely",
                "  parentRefs: [{name: gw2}]\n  rules: [{backendRefs: [{name: svc, port: 80}]}]\n",
            ),
            route(
                "both",
                "  parentRefs: [{name: gw2}, {name: gw}]\n  rules: [{backendRefs: [{name: svc, port: 80}]}]\n",
            ),
            route(
                "theirs",
                "  parentRefs: [{name: other}]\n  rules: [{backendRefs: [{name: svc, port: 80}]}]\n",
            ),
        ]
    }

    fn run(policies: &[StreamPolicy]) -> PolicyOutcome {
        let routes = routes();
        let keyed: BTreeMap<ObjectKey, &HttpRoute> = routes
            .iter()
            .map(|r| (ObjectKey::new("apps", r.metadata.name.clone().unwrap()), r))
            .collect();
        let gateways = BTreeSet::from([ObjectKey::new("apps", "gw"), ObjectKey::new("apps", "gw2")]);
        attach(policies, &keyed, &gateways, "default")
    }

    fn settings<'a>(o: &'a PolicyOutcome, route: &str) -> &'a RouteSettings {
        &o.routes[&ObjectKey::new("apps", route)]
    }

    /// Each policy's ancestors as `kind/name reason: message`.
    fn status(o: &PolicyOutcome, policy: &str) -> Vec<String> {
        let v = o.verdicts.iter().find(|v| v.key.name == policy).unwrap();
        v.ancestors
            .iter()
            .map(|a| {
                format!(
                    "{}/{}{} {} {}: {}",
                    a.ancestor.kind.as_deref().unwrap(),
                    a.ancestor.name,
                    a.ancestor
                        .section_name
                        .as_ref()
                        .map(|s| format!("#{s}"))
                        .unwrap_or_default(),
                    if a.accepted.is_true() { "True" } else { "False" },
                    a.accepted.reason,
                    a.accepted.message
                )
            })
            .collect()
    }

    fn gateway_policy() -> StreamPolicy {
        policy(
            "gw-defaults",
            1,
            &format!(
                "{}  sse: {{heartbeatInterval: 15s}}\n  timeouts: {{idle: 10m}}\n  bufferSize: 128Ki\n  maxConcurrentStreams: 100\n  loadBalancing: RoundRobin\n",
                target("Gateway", "gw")
            ),
        )
    }

    #[test]
    fn rule_beats_route_beats_gateway_field_by_field() {
        let policies = [
            // Listed out of age order: age decides, not the list.
            policy(
                "rule",
                3,
                "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: events, sectionName: stream}]\n  proxyBuffering: Disabled\n  sse: {maxStreamDuration: 1h}\n  timeouts: {idle: 0s}\n",
            ),
            policy(
                "route",
                2,
                &format!(
                    "{}  proxyBuffering: Enabled\n  timeouts: {{connect: 2s}}\n  maxConcurrentStreams: 50\n",
                    target("HTTPRoute", "events")
                ),
            ),
            gateway_policy(),
        ];
        let o = run(&policies);
        let events = settings(&o, "events");
        assert_eq!(
            events.rules,
            [
                // The rule's policy over the route's over the Gateway's.
                StreamSettings {
                    buffering: ProxyBuffering::Disabled,
                    buffer_size: 128 * 1024,
                    timeouts: EffectiveTimeouts {
                        connect: Duration::from_secs(2),
                        response_headers: Duration::from_secs(60),
                        idle: None,
                        request: None,
                    },
                    heartbeat: Some(Duration::from_secs(15)),
                    max_stream_duration: Some(Duration::from_secs(3600)),
                    load_balancing: LoadBalancing::RoundRobin,
                    resume: None,
                    rebalance: None,
                },
                // The unnamed rule: the route's over the Gateway's.
                StreamSettings {
                    buffering: ProxyBuffering::Enabled,
                    buffer_size: 128 * 1024,
                    timeouts: EffectiveTimeouts {
                        connect: Duration::from_secs(2),
                        response_headers: Duration::from_secs(60),
                        idle: Some(Duration::from_secs(600)),
                        request: None,
                    },
                    heartbeat: Some(Duration::from_secs(15)),
                    max_stream_duration: None,
                    load_balancing: LoadBalancing::RoundRobin,
                    resume: None,
                    rebalance: None,
                },
            ]
        );
        assert_eq!(
            events.max_concurrent_streams,
            Some(50),
            "the route's limit over the Gateway's"
        );
        // Attached through gw (by a listener), with no policy of its own.
        let plain = settings(&o, "plain");
        assert_eq!(
            plain.rules,
            [StreamSettings {
                buffer_size: 128 * 1024,
                timeouts: EffectiveTimeouts {
                    idle: Some(Duration::from_secs(600)),
                    ..StreamSettings::DEFAULT.timeouts
                },
                heartbeat: Some(Duration::from_secs(15)),
                load_balancing: LoadBalancing::RoundRobin,
                ..StreamSettings::DEFAULT
            }]
        );
        assert_eq!(plain.max_concurrent_streams, Some(100));
        assert_eq!(
            settings(&o, "lonely"),
            &RouteSettings {
                rules: vec![StreamSettings::DEFAULT],
                max_concurrent_streams: None,
                access: vec![None],
            }
        );
        assert_eq!(
            settings(&o, "lonely").rule(7),
            StreamSettings::DEFAULT,
            "past the rules: defaults"
        );
        assert_eq!(
            settings(&o, "both").rules[0].heartbeat,
            Some(Duration::from_secs(15)),
            "through gw"
        );

        let names: Vec<&str> = o.verdicts.iter().map(|v| v.key.name.as_str()).collect();
        assert_eq!(names, ["gw-defaults", "route", "rule"], "oldest first");
        assert_eq!(o.verdicts[0].generation, Some(3));
        assert_eq!(
            status(&o, "gw-defaults"),
            ["Gateway/gw True Accepted: the policy applies to Gateway gw"]
        );
        assert_eq!(
            status(&o, "route"),
            ["Gateway/gw True Accepted: the policy applies to HTTPRoute events"]
        );
        assert_eq!(
            status(&o, "rule"),
            ["Gateway/gw True Accepted: the policy applies to rule stream of HTTPRoute events"]
        );
        let ancestor = &o.verdicts[0].ancestors[0].ancestor;
        assert_eq!(
            (ancestor.group.as_deref(), ancestor.namespace.as_deref()),
            (Some("gateway.networking.k8s.io"), Some("apps"))
        );
    }

    #[test]
    fn resume_and_rebalance_layer_gateway_route_rule_field_by_field() {
        use crate::api::{RebalanceSettings, ResumeSettings};
        let policies = [
            policy(
                "gw-resume",
                1,
                &format!(
                    "{}  sse: {{resume: {{enabled: true, maxAttempts: 5, onIdleTimeout: true}}}}
",
                    target("Gateway", "gw")
                ),
            ),
            // Rebalancing needs resume in the same policy; `enabled: true`
            // keeps the Gateway's values and changes the budget only.
            policy(
                "route-rebalance",
                2,
                &format!(
                    "{}  sse: {{resume: {{enabled: true, budget: 2s}}, rebalance: {{enabled: true, movesPerSecond: 5}}}}
",
                    target("HTTPRoute", "events")
                ),
            ),
            policy(
                "rule-off",
                3,
                "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: events, sectionName: stream}]
  sse: {resume: {enabled: false}}
",
            ),
        ];
        let o = run(&policies);
        assert!(o.verdicts.iter().all(|v| v.ancestors[0].accepted.is_true()));
        let gateways = ResumeSettings {
            max_attempts: 5,
            on_idle_timeout: true,
            ..ResumeSettings::DEFAULT
        };
        let events = settings(&o, "events");
        assert_eq!(
            (events.rule(0).resume, events.rule(0).rebalance),
            (None, None),
            "the rule's policy turns resume off, and the route's rebalancing with it"
        );
        assert_eq!(
            (events.rule(1).resume, events.rule(1).rebalance),
            (
                Some(ResumeSettings {
                    budget: Duration::from_secs(2),
                    ..gateways
                }),
                Some(RebalanceSettings {
                    moves_per_second: 5,
                    ..RebalanceSettings::DEFAULT
                })
            )
        );
        let plain = settings(&o, "plain").rule(0);
        assert_eq!(
            (plain.resume, plain.rebalance),
            (Some(gateways), None),
            "the Gateway's alone"
        );
        assert_eq!(settings(&o, "lonely").rule(0).resume, None);

        // A policy that turns rebalancing on without resume of its own is
        // invalid, whatever it would be laid over.
        let o = run(&[
            policies[0].clone(),
            policy(
                "rebalance-alone",
                2,
                &format!(
                    "{}  sse: {{rebalance: {{enabled: true}}}}
",
                    target("HTTPRoute", "events")
                ),
            ),
        ]);
        assert_eq!(
            status(&o, "rebalance-alone"),
            ["HTTPRoute/events False Invalid: spec.sse.rebalance: needs sse.resume: only streams that can be resumed are moved"]
        );
        assert_eq!(settings(&o, "events").rule(1).resume, Some(gateways));
        assert_eq!(settings(&o, "events").rule(1).rebalance, None);
    }

    #[test]
    fn the_older_policy_holds_a_target_and_the_other_is_conflicted_and_ignored() {
        let policies = [
            // Younger: sets a field the winner leaves alone, which must not leak in.
            policy(
                "a-younger",
                9,
                &format!(
                    "{}  proxyBuffering: Enabled\n  sse: {{heartbeatInterval: 5s}}\n",
                    target("HTTPRoute", "events")
                ),
            ),
            policy(
                "older",
                4,
                &format!("{}  proxyBuffering: Disabled\n", target("HTTPRoute", "events")),
            ),
            // As old as `older`: then the name decides, and apps/older sorts first.
            policy(
                "z-same-age",
                4,
                &format!("{}  proxyBuffering: Auto\n", target("HTTPRoute", "events")),
            ),
        ];
        let o = run(&policies);
        let rule = settings(&o, "events").rule(1);
        assert_eq!(rule.buffering, ProxyBuffering::Disabled);
        assert_eq!(rule.heartbeat, None, "nothing of a Conflicted policy applies");
        assert_eq!(
            status(&o, "older"),
            ["Gateway/gw True Accepted: the policy applies to HTTPRoute events"]
        );
        assert_eq!(
            status(&o, "z-same-age"),
            ["Gateway/gw False Conflicted: StreamPolicy apps/older is older and already targets HTTPRoute events"]
        );
        assert_eq!(
            status(&o, "a-younger"),
            ["Gateway/gw False Conflicted: StreamPolicy apps/older is older and already targets HTTPRoute events"]
        );
        // A rule target is another target than its route: no conflict.
        let o = run(&[
            policy("older", 4, &format!("{}  proxyBuffering: Disabled\n", target("HTTPRoute", "events"))),
            policy(
                "rule",
                9,
                "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: events, sectionName: stream}]\n  proxyBuffering: Enabled\n",
            ),
        ]);
        assert!(o.verdicts.iter().all(|v| v.ancestors[0].accepted.is_true()));
        assert_eq!(settings(&o, "events").rule(0).buffering, ProxyBuffering::Enabled);
    }

    #[test]
    fn missing_targets_are_reported_on_the_target_itself() {
        let o = run(&[policy(
            "lost",
            1,
            "  targetRefs:\n  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: gone}\n  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: events, sectionName: nope}\n  - {group: gateway.networking.k8s.io, kind: Gateway, name: other}\n  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: theirs}\n  proxyBuffering: Enabled\n",
        )]);
        assert_eq!(
            status(&o, "lost"),
            [
                "HTTPRoute/gone False TargetNotFound: no HTTPRoute apps/gone",
                "HTTPRoute/events#nope False TargetNotFound: HTTPRoute apps/events has no rule named nope",
                "Gateway/other False TargetNotFound: no Gateway apps/other of a GatewayClass of ssegate's",
                // Found, but served by no Gateway of ssegate's: accepted, the route is its own ancestor.
                "HTTPRoute/theirs True Accepted: the policy applies to HTTPRoute theirs, which names no Gateway of ssegate's yet",
            ]
        );
        assert_eq!(settings(&o, "events").rule(0), StreamSettings::DEFAULT);
        assert_eq!(settings(&o, "theirs").rule(0).buffering, ProxyBuffering::Enabled);
    }

    #[test]
    fn an_invalid_policy_applies_nowhere_names_its_fields_and_blocks_no_one() {
        let o = run(&[
            policy(
                "bad",
                1,
                &format!(
                    "{}  proxyBuffering: Enabled\n  bufferSize: 1Gi\n  sse: {{heartbeatInterval: 10ms}}\n",
                    target("HTTPRoute", "events")
                ),
            ),
            policy(
                "good",
                2,
                &format!("{}  loadBalancing: RoundRobin\n", target("HTTPRoute", "events")),
            ),
        ]);
        assert_eq!(
            status(&o, "bad"),
            ["HTTPRoute/events False Invalid: spec.bufferSize: must be between 1Ki and 16Mi; spec.sse.heartbeatInterval: must be at least 100ms"]
        );
        assert_eq!(
            status(&o, "good"),
            ["Gateway/gw True Accepted: the policy applies to HTTPRoute events"]
        );
        assert_eq!(
            settings(&o, "events").rule(1),
            StreamSettings {
                load_balancing: LoadBalancing::RoundRobin,
                ..StreamSettings::DEFAULT
            },
            "the invalid policy's valid fields do not apply either"
        );
    }

    #[test]
    fn a_route_through_two_policied_gateways_takes_the_older_gateway_policy() {
        let o = run(&[
            policy(
                "gw2-later",
                5,
                &format!(
                    "{}  proxyBuffering: Enabled\n  timeouts: {{connect: 1s}}\n",
                    target("Gateway", "gw2")
                ),
            ),
            policy(
                "gw-first",
                2,
                &format!("{}  proxyBuffering: Disabled\n", target("Gateway", "gw")),
            ),
        ]);
        let both = settings(&o, "both").rule(0);
        assert_eq!(both.buffering, ProxyBuffering::Disabled);
        assert_eq!(
            both.timeouts.connect,
            Duration::from_secs(5),
            "one Gateway layer, not a merge of both"
        );
        assert_eq!(settings(&o, "lonely").rule(0).buffering, ProxyBuffering::Enabled);
    }

    #[test]
    fn targets_sharing_an_ancestor_report_false_when_any_is() {
        let o = run(&[
            policy("holder", 1, &format!("{}  proxyBuffering: Disabled\n", target("HTTPRoute", "plain"))),
            policy(
                "two",
                2,
                "  targetRefs:\n  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: events}\n  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: plain}\n  proxyBuffering: Enabled\n",
            ),
        ]);
        assert_eq!(
            status(&o, "two"),
            ["Gateway/gw False Conflicted: StreamPolicy apps/holder is older and already targets HTTPRoute plain"]
        );
        // Still applied where it holds the target.
        assert_eq!(settings(&o, "events").rule(0).buffering, ProxyBuffering::Enabled);
        assert_eq!(settings(&o, "plain").rule(0).buffering, ProxyBuffering::Disabled);
    }
}
