//! ingress-nginx's access annotations, read as a Route's `spec.access`
//! (issue 22): source ranges, basic authentication, external
//! authentication, `satisfy` and per-client limits.
//!
//! Each value is checked here with the same parsers the Route's validation
//! uses, so a problem is reported against the annotation that has it. A
//! value that cannot be read never falls back to a default (which would be
//! "open"): it closes the Ingress ([`Outcome::Closed`]). Annotations that
//! do nothing without another one (`auth-secret` without `auth-type`,
//! `auth-signin` without `auth-url`) are reported as ignored, since
//! ingress-nginx ignores them too. Pure.

use super::annotation_outcome::Outcome;
use crate::access::cidr::CidrSet;
use crate::access::client_limits::ClientLimits;
use crate::access::external_auth;
use crate::access::htpasswd::{validate_realm, SecretType};
use crate::api::access::{
    AccessSpec, AuthSecretFormat, BasicAuthSpec, ClientLimitsSpec, ExternalAuthApi, ExternalAuthCache,
    ExternalAuthKeepalive, Satisfy,
};

/// The annotations read here (without the prefix), noted together.
pub const ACCESS_ANNOTATIONS: &[&str] = &[
    "allowlist-source-range",
    "auth-always-set-cookie",
    "auth-cache-duration",
    "auth-cache-key",
    "auth-keepalive",
    "auth-keepalive-requests",
    "auth-keepalive-share-vars",
    "auth-keepalive-timeout",
    "auth-method",
    "auth-realm",
    "auth-request-redirect",
    "auth-response-headers",
    "auth-secret",
    "auth-secret-type",
    "auth-signin",
    "auth-signin-redirect-param",
    "auth-type",
    "auth-url",
    "denylist-source-range",
    "limit-allowlist",
    "limit-burst-multiplier",
    "limit-connections",
    "limit-rpm",
    "limit-rps",
    "limit-whitelist",
    "satisfy",
    "whitelist-source-range",
];

/// Why an annotation did nothing because another is missing.
const NEEDS_AUTH_TYPE: &str = "does nothing without auth-type: basic, as in ingress-nginx";
const NEEDS_AUTH_URL: &str = "does nothing without auth-url, as in ingress-nginx";
const NEEDS_A_LIMIT: &str = "does nothing without limit-connections, limit-rps or limit-rpm, as in ingress-nginx";

/// Reads the access annotations of an Ingress in `namespace`; `get` gives a
/// value (trimmed) by its name without the prefix. Returns the access
/// policy as a Route's spec (`None` when nothing is restricted, or when a
/// value closed the Ingress) and a note per annotation present.
pub fn read_access<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    namespace: &str,
) -> (Option<AccessSpec>, Vec<(&'static str, Outcome)>) {
    let mut notes: Vec<(&'static str, Outcome)> = Vec::new();
    let mut spec = AccessSpec::default();
    let mut unsupported = false;

    // Source ranges. `allowlist-source-range` is the name since
    // ingress-nginx 1.9; the old name is read when the new one is absent.
    let allow_name = if get("allowlist-source-range").is_some() {
        if get("whitelist-source-range").is_some() {
            notes.push((
                "whitelist-source-range",
                Outcome::Ignored("allowlist-source-range is also set, and is the one read, as in ingress-nginx".into()),
            ));
        }
        "allowlist-source-range"
    } else {
        "whitelist-source-range"
    };
    for (name, deny) in [(allow_name, false), ("denylist-source-range", true)] {
        let Some(value) = get(name) else { continue };
        match CidrSet::parse_list(value) {
            Ok(set) if set.is_empty() => close(&mut notes, name, "it lists no network".into()),
            Ok(set) => {
                let list: Vec<String> = set.networks().iter().map(ToString::to_string).collect();
                let field = if deny { "denySourceRanges" } else { "allowSourceRanges" };
                notes.push((name, Outcome::Applied(format!("access.{field}: {}", list.join(", ")))));
                if deny {
                    spec.deny_source_ranges = list;
                } else {
                    spec.allow_source_ranges = list;
                }
            }
            Err(e) => close(&mut notes, name, e.to_string()),
        }
    }

    // Basic authentication.
    match get("auth-type") {
        None => {
            for name in ["auth-secret", "auth-secret-type", "auth-realm"] {
                if get(name).is_some() {
                    notes.push((name, Outcome::Ignored(NEEDS_AUTH_TYPE.into())));
                }
            }
        }
        Some("basic") => {
            let mut basic = BasicAuthSpec::default();
            let mut ok = true;
            match get("auth-secret") {
                None => {
                    close(&mut notes, "auth-type", "auth-type basic needs auth-secret".into());
                    ok = false;
                }
                Some(value) => {
                    // `name`, or `namespace/name` in the Ingress's own namespace.
                    let name = match value.split_once('/') {
                        Some((ns, name)) if ns == namespace => Some(name),
                        Some(_) => {
                            close(
                                &mut notes,
                                "auth-secret",
                                format!("{value:?} is in another namespace; the Secret must be in {namespace}, as ingress-nginx requires"),
                            );
                            None
                        }
                        None => Some(value),
                    };
                    match name.map(|n| (n, crate::api::valid_dns_subdomain(n))) {
                        Some((n, Ok(()))) => basic.secret_name = n.to_owned(),
                        Some((_, Err(e))) => close(&mut notes, "auth-secret", e),
                        None => {}
                    }
                    ok &= !basic.secret_name.is_empty();
                }
            }
            match get("auth-secret-type").map(|v| (v, SecretType::from_annotation(v))) {
                None => {}
                Some((_, Some(t))) => {
                    basic.format = Some(match t {
                        SecretType::AuthFile => AuthSecretFormat::AuthFile,
                        SecretType::AuthMap => AuthSecretFormat::AuthMap,
                    });
                    notes.push((
                        "auth-secret-type",
                        Outcome::Applied(format!("access.basicAuth.format: {:?}", basic.format.unwrap())),
                    ));
                }
                Some((v, None)) => {
                    close(
                        &mut notes,
                        "auth-secret-type",
                        format!("{v:?} is neither auth-file nor auth-map"),
                    );
                    ok = false;
                }
            }
            if let Some(realm) = get("auth-realm") {
                match validate_realm(realm) {
                    Ok(()) => {
                        basic.realm = Some(realm.to_owned());
                        notes.push(("auth-realm", Outcome::Applied("access.basicAuth.realm".into())));
                    }
                    Err(e) => {
                        close(&mut notes, "auth-realm", e.to_string());
                        ok = false;
                    }
                }
            }
            if ok {
                notes.push((
                    "auth-type",
                    Outcome::Applied("access.basicAuth (checked against the Secret's users)".into()),
                ));
                notes.push((
                    "auth-secret",
                    Outcome::Applied(format!("access.basicAuth.secretName: {}", basic.secret_name)),
                ));
                spec.basic_auth = Some(basic);
            }
        }
        Some("digest") => close(
            &mut notes,
            "auth-type",
            "digest authentication is not supported by ssegate: use basic over TLS, or external authentication".into(),
        ),
        Some(other) => close(
            &mut notes,
            "auth-type",
            format!("{other:?} is neither basic nor digest"),
        ),
    }

    // External authentication.
    const EXTERNAL: [&str; 13] = [
        "auth-url",
        "auth-method",
        "auth-signin",
        "auth-signin-redirect-param",
        "auth-response-headers",
        "auth-request-redirect",
        "auth-cache-key",
        "auth-cache-duration",
        "auth-keepalive",
        "auth-keepalive-requests",
        "auth-keepalive-timeout",
        "auth-keepalive-share-vars",
        "auth-always-set-cookie",
    ];
    match external_auth::from_annotations(|n| get(n)) {
        Ok(None) => {
            for name in &EXTERNAL[1..] {
                if get(name).is_some() {
                    notes.push((name, Outcome::Ignored(NEEDS_AUTH_URL.into())));
                }
            }
        }
        Ok(Some(_)) => {
            for name in EXTERNAL {
                if get(name).is_some() {
                    let what = match name {
                        "auth-url" => "access.externalAuth.url".to_owned(),
                        "auth-keepalive-share-vars" => {
                            notes.push((
                                name,
                                Outcome::Unnecessary("ssegate has no nginx variables for requests to share".into()),
                            ));
                            continue;
                        }
                        other => format!("access.externalAuth ({other})"),
                    };
                    notes.push((name, Outcome::Applied(what)));
                }
            }
            spec.external_auth = Some(external_api(get));
        }
        Err(problems) => {
            for (name, why) in problems.invalid {
                let name = EXTERNAL.iter().find(|n| **n == name).copied().unwrap_or("auth-url");
                close(&mut notes, name, why);
            }
            // `auth-proxy-set-headers` and `auth-snippet` are closed by
            // their catalogue class already, with their own notes.
            unsupported = !problems.unsupported.is_empty();
        }
    }

    // How the checks combine.
    if let Some(value) = get("satisfy") {
        match value {
            "any" => {
                spec.satisfy = Some(Satisfy::Any);
                notes.push(("satisfy", Outcome::Applied("access.satisfy: Any".into())));
            }
            "all" => {
                spec.satisfy = Some(Satisfy::All);
                notes.push(("satisfy", Outcome::Applied("access.satisfy: All".into())));
            }
            other => close(&mut notes, "satisfy", format!("{other:?} is neither any nor all")),
        }
    }

    // Per-client limits: a value of 0 or less is off, as in ingress-nginx.
    let integer = |name: &'static str, notes: &mut Vec<(&'static str, Outcome)>| -> Option<i64> {
        let value = get(name)?;
        match value.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                close(notes, name, format!("{value:?} is not a whole number"));
                None
            }
        }
    };
    let connections = integer("limit-connections", &mut notes);
    let rps = integer("limit-rps", &mut notes);
    let rpm = integer("limit-rpm", &mut notes);
    let multiplier = integer("limit-burst-multiplier", &mut notes);
    let exempt_name = if get("limit-allowlist").is_some() {
        "limit-allowlist"
    } else {
        "limit-whitelist"
    };
    match ClientLimits::from_annotation_values(connections, rps, rpm, multiplier) {
        Ok(limits) if limits.is_unlimited() => {
            for name in [
                "limit-connections",
                "limit-rps",
                "limit-rpm",
                "limit-burst-multiplier",
                exempt_name,
            ] {
                if get(name).is_some() && !notes.iter().any(|(n, _)| *n == name) {
                    let why = if name == exempt_name || name == "limit-burst-multiplier" {
                        NEEDS_A_LIMIT
                    } else {
                        "0 or less turns the limit off, as in ingress-nginx"
                    };
                    notes.push((name, Outcome::Ignored(why.into())));
                }
            }
        }
        Ok(limits) => {
            let mut limits_spec = ClientLimitsSpec {
                connections: limits.connections().map(i64::from),
                requests_per_second: limits.rps().map(i64::from),
                requests_per_minute: limits.rpm().map(i64::from),
                burst_multiplier: (limits.rps().is_some() || limits.rpm().is_some())
                    .then(|| i64::from(limits.burst_multiplier())),
                exempt_source_ranges: Vec::new(),
            };
            for (name, what) in [
                ("limit-connections", "connections"),
                ("limit-rps", "requestsPerSecond"),
                ("limit-rpm", "requestsPerMinute"),
                ("limit-burst-multiplier", "burstMultiplier"),
            ] {
                if get(name).is_some() && !notes.iter().any(|(n, _)| *n == name) {
                    notes.push((name, Outcome::Applied(format!("access.clientLimits.{what}"))));
                }
            }
            if let Some(value) = get(exempt_name) {
                match CidrSet::parse_list(value) {
                    Ok(set) => {
                        limits_spec.exempt_source_ranges = set.networks().iter().map(ToString::to_string).collect();
                        notes.push((
                            exempt_name,
                            Outcome::Applied("access.clientLimits.exemptSourceRanges".into()),
                        ));
                    }
                    Err(e) => close(&mut notes, exempt_name, e.to_string()),
                }
            }
            spec.client_limits = Some(limits_spec);
        }
        Err(e) => {
            let name = ["limit-connections", "limit-rps", "limit-rpm", "limit-burst-multiplier"]
                .into_iter()
                .find(|n| get(n).is_some())
                .unwrap_or("limit-connections");
            close(&mut notes, name, e.to_string());
        }
    }
    if exempt_name == "limit-allowlist" && get("limit-whitelist").is_some() {
        notes.push((
            "limit-whitelist",
            Outcome::Ignored("limit-allowlist is also set, and is the one read, as in ingress-nginx".into()),
        ));
    }

    let restricts = spec != AccessSpec::default()
        && spec
            != AccessSpec {
                satisfy: spec.satisfy,
                ..Default::default()
            };
    if spec.satisfy.is_some() && !restricts {
        // `satisfy` alone combines nothing.
        notes.retain(|(n, _)| *n != "satisfy");
        notes.push((
            "satisfy",
            Outcome::Ignored("there is no access check to combine".into()),
        ));
    }
    let closed = unsupported || notes.iter().any(|(_, o)| matches!(o, Outcome::Closed(_)));
    ((restricts && !closed).then_some(spec), notes)
}

/// Notes that `name` closes the Ingress.
fn close(notes: &mut Vec<(&'static str, Outcome)>, name: &'static str, why: String) {
    notes.push((name, Outcome::Closed(format!("cannot be enforced as written: {why}"))));
}

/// The external auth annotations as a Route's `spec.access.externalAuth`;
/// called once [`external_auth::from_annotations`] has accepted them.
fn external_api<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> ExternalAuthApi {
    let text = |name: &str| get(name).filter(|v| !v.is_empty()).map(str::to_owned);
    let integer = |name: &str| text(name).and_then(|v| v.parse::<i64>().ok());
    let keepalive = ExternalAuthKeepalive {
        connections: integer("auth-keepalive"),
        requests: integer("auth-keepalive-requests"),
        timeout: integer("auth-keepalive-timeout").map(|s| format!("{}s", s.max(0))),
    };
    ExternalAuthApi {
        url: text("auth-url").unwrap_or_default(),
        method: text("auth-method"),
        signin_url: text("auth-signin"),
        signin_redirect_param: text("auth-signin-redirect-param"),
        response_headers: text("auth-response-headers")
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        request_redirect: text("auth-request-redirect"),
        cache: text("auth-cache-key").map(|key| ExternalAuthCache {
            key,
            duration: text("auth-cache-duration"),
        }),
        always_set_cookie: text("auth-always-set-cookie")
            .is_some_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "TRUE" | "true" | "True")),
        keepalive: (keepalive != ExternalAuthKeepalive::default()).then_some(keepalive),
    }
}
