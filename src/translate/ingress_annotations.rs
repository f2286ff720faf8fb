//! The annotations of an Ingress, read the way ingress-nginx reads them, as
//! the Route settings they amount to (issue 14).
//!
//! The result is expressed in the Route's own spec types, so an Ingress is
//! validated exactly as a Route with the same settings would be, and
//! `ssegate convert` can print it as Route YAML. Every
//! `nginx.ingress.kubernetes.io/*` annotation gets a [`Note`]: applied (and
//! as what), unnecessary in ssegate (and why), ignored (and why: only what
//! is harmless to ignore, see [`super::ingress_nginx_catalogue`]), invalid
//! (its default applies), or closed: it restricts access and ssegate does
//! not enforce it, so the Ingress is not served at all unless its owner
//! opts out by name ([`UNENFORCED`]). Nothing is dropped silently, and
//! snippets are never executed. Pure: no I/O, no kube client.

use super::annotation_outcome::Outcome;
use super::ingress_access::{read_access, ACCESS_ANNOTATIONS};
use super::ingress_nginx_catalogue::{class_of, Class};
use crate::api::access::AccessSpec;
use crate::api::{
    parse_duration, parse_quantity, CorsSpec, LoadBalancing, ProxyBuffering, Quantity, RebalanceSpec, ResumeSpec,
    SseSettings, Timeouts,
};
use std::collections::BTreeMap;

/// The ingress-nginx annotation prefix.
pub const NGINX: &str = "nginx.ingress.kubernetes.io/";
/// ssegate's own annotations, for what only ssegate has.
pub const SSEGATE: &str = "ssegate.dev/";
/// The opt-out: ingress-nginx annotations (names without the prefix,
/// comma-separated) that fail closed and that the Ingress's owner accepts
/// to have served unenforced.
pub const UNENFORCED: &str = "ssegate.dev/unenforced-annotations";

/// ingress-nginx's defaults for the CORS annotations.
const CORS_ORIGIN: &str = "*";
const CORS_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
const CORS_HEADERS: &str =
    "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
/// ingress-nginx's default preflight cache (20 days); browsers cap it, and
/// so does the Route's CORS policy.
const CORS_MAX_AGE: u64 = 1_728_000;
const CORS_MAX_AGE_LIMIT: u64 = 86_400;

/// What the annotations of one Ingress amount to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnnotatedSettings {
    pub proxy_buffering: Option<ProxyBuffering>,
    pub buffer_size: Option<Quantity>,
    pub timeouts: Timeouts,
    pub sse: SseSettings,
    pub load_balancing: Option<LoadBalancing>,
    pub max_concurrent_streams: Option<i64>,
    pub cors: Option<CorsSpec>,
    /// `ssl-redirect`: `None` when absent (ingress-nginx then redirects
    /// when the Ingress has TLS).
    pub ssl_redirect: Option<bool>,
    /// `force-ssl-redirect`: redirect even without TLS on the Ingress.
    pub force_ssl_redirect: bool,
    /// One note per annotation ssegate looked at, in name order.
    pub notes: Vec<Note>,
    /// Why the Ingress must not be served: one line per annotation that
    /// fails closed, `annotation: reason`. Empty when it may be served.
    pub closed: Vec<String>,
    /// Who may reach the Ingress, as a Route's `spec.access` (`None` when
    /// nothing is restricted, or when it is closed).
    pub access: Option<AccessSpec>,
}

/// What became of one annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub annotation: String,
    pub outcome: Outcome,
}

/// Reads the annotations of an Ingress in `namespace`. Annotations outside
/// the two prefixes are not looked at.
pub fn read_annotations(annotations: &BTreeMap<String, String>, namespace: &str) -> AnnotatedSettings {
    let mut out = AnnotatedSettings::default();
    let nginx = |name: &str| annotations.get(&format!("{NGINX}{name}")).map(|v| v.trim());
    let note = |out: &mut AnnotatedSettings, name: &str, outcome: Outcome| {
        out.notes.push(Note {
            annotation: name.to_owned(),
            outcome,
        });
    };
    for (name, value) in annotations {
        let value = value.trim();
        if let Some(key) = name.strip_prefix(NGINX) {
            let outcome = read_nginx(&mut out, key, value);
            if let Some(outcome) = outcome {
                note(&mut out, name, outcome);
            }
        } else if let Some(key) = name.strip_prefix(SSEGATE) {
            if RESUME_REFINEMENTS.contains(&key) {
                continue;
            }
            let outcome = read_ssegate(&mut out, key, value);
            note(&mut out, name, outcome);
        }
    }
    // Resume is read as a whole, as CORS below: `sse-resume` turns it on,
    // the others refine it, and mean nothing without it.
    let ssegate = |name: &str| annotations.get(&format!("{SSEGATE}{name}")).map(|v| v.trim());
    for (name, outcome) in resume_refinements(&mut out, &ssegate) {
        note(&mut out, &format!("{SSEGATE}{name}"), outcome);
    }
    // Access control is read as a whole: how the checks combine, what
    // needs what, and which values close the Ingress.
    let (access, notes) = read_access(&nginx, namespace);
    out.access = access;
    for (name, outcome) in notes {
        note(&mut out, &format!("{NGINX}{name}"), outcome);
    }
    // CORS is read as a whole: `enable-cors` turns it on, the others
    // refine it, each with ingress-nginx's default when absent.
    if nginx("enable-cors").is_some_and(is_true) {
        let (cors, notes) = cors_policy(&nginx);
        out.cors = Some(cors);
        for (name, outcome) in notes {
            note(&mut out, &format!("{NGINX}{name}"), outcome);
        }
    } else {
        for name in CORS_REFINEMENTS {
            if nginx(name).is_some() {
                note(
                    &mut out,
                    &format!("{NGINX}{name}"),
                    Outcome::Ignored("CORS is off: `enable-cors` is not \"true\"".into()),
                );
            }
        }
    }
    opt_out(&mut out, annotations.get(UNENFORCED).map(String::as_str));
    out.notes.sort_by(|a, b| a.annotation.cmp(&b.annotation));
    out.closed = out
        .notes
        .iter()
        .filter_map(|n| match &n.outcome {
            Outcome::Closed(why) => Some(format!("{}: {why}", n.annotation)),
            _ => None,
        })
        .collect();
    out
}

/// Applies `ssegate.dev/unenforced-annotations`: each annotation it names
/// that would fail closed is served unenforced instead, and says so. A
/// name that is not on the Ingress, or would not fail closed, is reported
/// (a typo must not look like an opt-out that worked).
fn opt_out(out: &mut AnnotatedSettings, list: Option<&str>) {
    let Some(list) = list else { return };
    let mut unmatched = Vec::new();
    let mut matched = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let full = if name.starts_with(NGINX) {
            name.to_owned()
        } else {
            format!("{NGINX}{name}")
        };
        match out.notes.iter_mut().find(|n| n.annotation == full) {
            Some(note) => match &note.outcome {
                Outcome::Closed(why) => {
                    note.outcome = Outcome::OptedOut(format!("served without it, as {UNENFORCED} asks: {why}"));
                    matched.push(name.to_owned());
                }
                Outcome::OptedOut(_) => {}
                _ => unmatched.push(format!("{name} (enforced or not restricting access)")),
            },
            None => unmatched.push(format!("{name} (not on this Ingress)")),
        }
    }
    let served = if matched.is_empty() {
        "nothing is served unenforced".to_owned()
    } else {
        format!("served WITHOUT enforcing {}", matched.join(", "))
    };
    let outcome = if unmatched.is_empty() {
        Outcome::OptedOut(format!("{served}, as this annotation asks"))
    } else {
        Outcome::Invalid(format!(
            "names what there is nothing to opt out of: {}; {served}",
            unmatched.join(", ")
        ))
    };
    match out.notes.iter_mut().find(|n| n.annotation == UNENFORCED) {
        Some(note) => note.outcome = outcome,
        None => out.notes.push(Note {
            annotation: UNENFORCED.to_owned(),
            outcome,
        }),
    }
}

const CORS_REFINEMENTS: [&str; 6] = [
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
];

/// One `nginx.ingress.kubernetes.io/` annotation; `None` for the CORS ones,
/// which are noted together. What is not read here by value is answered by
/// its class in the catalogue.
fn read_nginx(out: &mut AnnotatedSettings, key: &str, value: &str) -> Option<Outcome> {
    use Outcome::*;
    Some(match key {
        "proxy-buffering" => match value {
            "on" => {
                out.proxy_buffering = Some(ProxyBuffering::Enabled);
                Applied("proxyBuffering: Enabled".into())
            }
            "off" => {
                out.proxy_buffering = Some(ProxyBuffering::Disabled);
                Applied("proxyBuffering: Disabled".into())
            }
            other => Invalid(format!("{other:?} is neither \"on\" nor \"off\"")),
        },
        "proxy-read-timeout" => match seconds(value) {
            // NGINX's read timeout is the longest gap between two reads
            // from the upstream: ssegate's idle timeout, not a cap on the
            // whole response.
            Ok(s) => {
                out.timeouts.idle = Some(format!("{s}s"));
                Applied(format!("timeouts.idle: {s}s (the longest silence between upstream bytes, not a cap on the stream)"))
            }
            Err(e) => Invalid(e),
        },
        "proxy-connect-timeout" => match seconds(value) {
            Ok(0) => Invalid("a connect timeout of 0 would fail every connect".into()),
            Ok(s) => {
                out.timeouts.connect = Some(format!("{s}s"));
                Applied(format!("timeouts.connect: {s}s"))
            }
            Err(e) => Invalid(e),
        },
        "ssl-redirect" => match value {
            "true" | "false" => {
                out.ssl_redirect = Some(value == "true");
                Applied(format!("ssl-redirect: {value} (308 to HTTPS)"))
            }
            other => Invalid(format!("{other:?} is neither \"true\" nor \"false\"")),
        },
        "force-ssl-redirect" => match value {
            "true" | "false" => {
                out.force_ssl_redirect = value == "true";
                Applied(format!("force-ssl-redirect: {value} (308 to HTTPS)"))
            }
            other => Invalid(format!("{other:?} is neither \"true\" nor \"false\"")),
        },
        "use-regex" => match value {
            "true" => Ignored(
                "paths are matched as Prefix or Exact, never as regular expressions: a path with regular-expression characters is refused"
                    .into(),
            ),
            _ => Unnecessary("paths are never regular expressions in ssegate".into()),
        },
        "backend-protocol" => match value.to_ascii_uppercase().as_str() {
            "HTTP" => Unnecessary("ssegate speaks HTTP/1.1 to upstreams".into()),
            _ => Ignored(format!(
                "ssegate speaks plain HTTP/1.1 to upstreams, not {value}; a backend that needs {value} refuses it"
            )),
        },
        "enable-global-auth" => match value {
            "false" => Unnecessary("ssegate has no global external authentication to opt out of".into()),
            _ => Closed(
                "ssegate does not read ingress-nginx's ConfigMap, so its global-auth-url is not enforced here: name the service in auth-url on this Ingress"
                    .into(),
            ),
        },
        "enable-cors" => return None,
        k if ACCESS_ANNOTATIONS.contains(&k) => return None,
        k if CORS_REFINEMENTS.contains(&k) => return None,
        other => match class_of(other) {
            Some(Class::Unnecessary(why)) => Unnecessary(why.into()),
            Some(Class::Harmless(why)) => Ignored(why.into()),
            Some(Class::FailClosed(why)) => Closed(why.into()),
            Some(Class::Snippet) => snippet(value),
            // Every annotation of this class has its arm above (a test
            // walks the catalogue to make sure).
            Some(Class::Read(_)) => Ignored("not read by ssegate".into()),
            None => Ignored("not an annotation of ingress-nginx, which ignores it too".into()),
        },
    })
}

/// One `ssegate.dev/` annotation, in the Route's own formats.
fn read_ssegate(out: &mut AnnotatedSettings, key: &str, value: &str) -> Outcome {
    use Outcome::*;
    match key {
        "heartbeat-interval" => match parse_duration(value) {
            Ok(_) => {
                out.sse.heartbeat_interval = Some(value.to_owned());
                Applied(format!("sse.heartbeatInterval: {value}"))
            }
            Err(e) => Invalid(format!("{value:?}: {e}")),
        },
        "max-stream-duration" => match parse_duration(value) {
            Ok(_) => {
                out.sse.max_stream_duration = Some(value.to_owned());
                Applied(format!("sse.maxStreamDuration: {value}"))
            }
            Err(e) => Invalid(format!("{value:?}: {e}")),
        },
        "sse-resume" => match value {
            "true" | "false" => {
                out.sse.resume = Some(ResumeSpec {
                    enabled: value == "true",
                    ..ResumeSpec::default()
                });
                Applied(format!("sse.resume.enabled: {value}"))
            }
            other => Invalid(format!("{other:?} is neither \"true\" nor \"false\"")),
        },
        // Checked against resume once every annotation is read (the
        // validation, in `ingress_settings`).
        "sse-rebalance" => match value {
            "true" | "false" => {
                out.sse.rebalance = Some(RebalanceSpec {
                    enabled: value == "true",
                    ..RebalanceSpec::default()
                });
                Applied(format!("sse.rebalance.enabled: {value}"))
            }
            other => Invalid(format!("{other:?} is neither \"true\" nor \"false\"")),
        },
        "max-concurrent-streams" => match value.parse::<i64>() {
            Ok(n) if n > 0 => {
                out.max_concurrent_streams = Some(n);
                Applied(format!("maxConcurrentStreams: {n}"))
            }
            _ => Invalid(format!("{value:?} is not a positive whole number")),
        },
        "load-balancing" => match value {
            "RoundRobin" => {
                out.load_balancing = Some(LoadBalancing::RoundRobin);
                Applied("loadBalancing: RoundRobin".into())
            }
            "LeastConnections" => {
                out.load_balancing = Some(LoadBalancing::LeastConnections);
                Applied("loadBalancing: LeastConnections".into())
            }
            other => Invalid(format!("{other:?} is neither RoundRobin nor LeastConnections")),
        },
        "buffer-size" => match parse_quantity(value) {
            Ok(_) => {
                out.buffer_size = Some(Quantity(value.to_owned()));
                Applied(format!("bufferSize: {value}"))
            }
            Err(e) => Invalid(format!("{value:?}: {e}")),
        },
        "proxy-buffering" => match value {
            "Enabled" | "Disabled" | "Auto" => {
                out.proxy_buffering = Some(match value {
                    "Enabled" => ProxyBuffering::Enabled,
                    "Disabled" => ProxyBuffering::Disabled,
                    _ => ProxyBuffering::Auto,
                });
                Applied(format!("proxyBuffering: {value}"))
            }
            other => Invalid(format!("{other:?} is not Enabled, Disabled or Auto")),
        },
        // Read as a whole once every other annotation is (`opt_out`).
        "unenforced-annotations" => Applied(String::new()),
        _ => Ignored("not an ssegate annotation".into()),
    }
}

/// The `ssegate.dev/` annotations that set single fields of `sse.resume`.
const RESUME_REFINEMENTS: [&str; 4] = [
    "sse-resume-max-attempts",
    "sse-resume-budget",
    "sse-resume-on-idle-timeout",
    "sse-resume-rollout-window",
];

/// Lays the resume refinements over the `sse.resume` that `sse-resume`
/// set, and notes each one present. Without `sse-resume: "true"` they are
/// ignored, and said to be: with resume off they mean nothing, and a
/// refinement alone turning resume on would surprise. Ranges are the
/// validation's to check, as for every other setting.
fn resume_refinements<'a>(
    out: &mut AnnotatedSettings,
    ssegate: &impl Fn(&str) -> Option<&'a str>,
) -> Vec<(&'static str, Outcome)> {
    use Outcome::*;
    let mut notes = Vec::new();
    let Some(resume) = out.sse.resume.as_mut().filter(|r| r.enabled) else {
        for name in RESUME_REFINEMENTS {
            if ssegate(name).is_some() {
                notes.push((
                    name,
                    Ignored(format!("resume is off: `{SSEGATE}sse-resume` is not \"true\"")),
                ));
            }
        }
        return notes;
    };
    if let Some(value) = ssegate("sse-resume-max-attempts") {
        let outcome = match value.parse::<i32>() {
            Ok(n) => {
                resume.max_attempts = Some(n);
                Applied(format!("sse.resume.maxAttempts: {n}"))
            }
            Err(_) => Invalid(format!("{value:?} is not a whole number")),
        };
        notes.push(("sse-resume-max-attempts", outcome));
    }
    if let Some(value) = ssegate("sse-resume-budget") {
        let outcome = match parse_duration(value) {
            Ok(_) => {
                resume.budget = Some(value.to_owned());
                Applied(format!("sse.resume.budget: {value}"))
            }
            Err(e) => Invalid(format!("{value:?}: {e}")),
        };
        notes.push(("sse-resume-budget", outcome));
    }
    if let Some(value) = ssegate("sse-resume-on-idle-timeout") {
        let outcome = match value {
            "true" | "false" => {
                resume.on_idle_timeout = Some(value == "true");
                Applied(format!("sse.resume.onIdleTimeout: {value}"))
            }
            other => Invalid(format!("{other:?} is neither \"true\" nor \"false\"")),
        };
        notes.push(("sse-resume-on-idle-timeout", outcome));
    }
    if let Some(value) = ssegate("sse-resume-rollout-window") {
        let outcome = match parse_duration(value) {
            Ok(_) => {
                resume.rollout_window = Some(value.to_owned());
                Applied(format!("sse.resume.rolloutWindow: {value}"))
            }
            Err(e) => Invalid(format!("{value:?}: {e}")),
        };
        notes.push(("sse-resume-rollout-window", outcome));
    }
    notes
}

/// Unitless seconds, as ingress-nginx writes every timeout.
fn seconds(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(s) if s <= 31_536_000 => Ok(s),
        Ok(_) => Err(format!("{value:?}: more than a year")),
        Err(_) => Err(format!("{value:?} is not a whole number of seconds")),
    }
}

fn is_true(value: &str) -> bool {
    value.eq_ignore_ascii_case("true")
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The CORS policy the annotations describe, with ingress-nginx's defaults.
fn cors_policy<'a>(nginx: &impl Fn(&str) -> Option<&'a str>) -> (CorsSpec, Vec<(&'static str, Outcome)>) {
    let mut notes = vec![("enable-cors", Outcome::Applied("cors".into()))];
    let origins = list(nginx("cors-allow-origin").unwrap_or(CORS_ORIGIN));
    let mut credentials = nginx("cors-allow-credentials").is_none_or(is_true);
    if credentials && origins.iter().any(|o| o == "*") {
        // ingress-nginx sends `*` with credentials, which browsers refuse
        // for credentialed requests; the Route's policy does not allow it.
        credentials = false;
        notes.push((
            "cors-allow-credentials",
            Outcome::Ignored(
                "credentials are not allowed with origin `*` (browsers refuse it): list the origins to allow them"
                    .into(),
            ),
        ));
    } else if nginx("cors-allow-credentials").is_some() {
        notes.push((
            "cors-allow-credentials",
            Outcome::Applied(format!("cors.allowCredentials: {credentials}")),
        ));
    }
    let max_age = match nginx("cors-max-age").map(seconds) {
        None => CORS_MAX_AGE,
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            notes.push(("cors-max-age", Outcome::Invalid(e)));
            CORS_MAX_AGE
        }
    };
    if max_age > CORS_MAX_AGE_LIMIT {
        notes.push((
            "cors-max-age",
            Outcome::Applied(format!(
                "cors.maxAge: {CORS_MAX_AGE_LIMIT}s (from {max_age}s: browsers cap it at a day or less)"
            )),
        ));
    }
    for name in [
        "cors-allow-origin",
        "cors-allow-methods",
        "cors-allow-headers",
        "cors-expose-headers",
    ] {
        if nginx(name).is_some() {
            notes.push((name, Outcome::Applied(format!("cors ({name})"))));
        }
    }
    let spec = CorsSpec {
        allow_origins: origins,
        allow_credentials: credentials,
        allow_headers: list(nginx("cors-allow-headers").unwrap_or(CORS_HEADERS)),
        allow_methods: list(nginx("cors-allow-methods").unwrap_or(CORS_METHODS)),
        expose_headers: list(nginx("cors-expose-headers").unwrap_or("")),
        max_age: Some(format!("{}s", max_age.min(CORS_MAX_AGE_LIMIT))),
    };
    (spec, notes)
}

/// Snippets are never executed; what that means for the Ingress depends on
/// what they say. Each statement (split at `;` and line ends) is judged:
/// the lines SSE guides tell people to paste are unnecessary (ssegate does
/// what they ask), lines that only set response headers are harmless to
/// skip, and anything else (`deny`, `auth_request`, `return 403`, an `if`
/// or `location` block, a `proxy_set_header` that may strip a header the
/// backend trusts, a directive ssegate does not know) may deny access, so
/// the Ingress fails closed.
fn snippet(text: &str) -> Outcome {
    /// Statements that configure streaming, with why ssegate needs none.
    const STREAMING: [(&str, &str); 5] = [
        (
            "proxy_set_header connection",
            "ssegate keeps upstream connections alive and strips hop-by-hop headers itself",
        ),
        (
            "x-accel-buffering",
            "ssegate streams text/event-stream responses unbuffered (proxy-buffering, or proxyBuffering on a Route)",
        ),
        (
            "chunked_transfer_encoding",
            "ssegate frames streamed responses itself and never buffers an event stream",
        ),
        ("proxy_cache", "ssegate does not cache"),
        (
            "proxy_buffering",
            "use the proxy-buffering annotation, which ssegate honours",
        ),
    ];
    /// Directives that only change response headers.
    const RESPONSE_HEADERS: [&str; 5] = [
        "add_header",
        "more_set_headers",
        "more_clear_headers",
        "expires",
        "add_trailer",
    ];
    let lower = text.to_ascii_lowercase();
    let mut reasons: Vec<&str> = Vec::new();
    let mut header_only = Vec::new();
    for statement in lower.split([';', '\n']) {
        let statement = statement.trim();
        if statement.is_empty() || statement.starts_with('#') {
            continue;
        }
        let directive = statement.split_whitespace().next().unwrap_or_default();
        if statement.contains(['{', '}']) {
            return Outcome::Closed(format!(
                "raw NGINX that ssegate never executes, and a block (`{directive} ...{{`) may deny access"
            ));
        }
        let normalized = statement.split_whitespace().collect::<Vec<_>>().join(" ");
        if let Some((_, why)) = STREAMING.iter().find(|(pattern, _)| normalized.contains(pattern)) {
            if !reasons.contains(why) {
                reasons.push(why);
            }
        } else if RESPONSE_HEADERS.contains(&directive) {
            if !header_only.contains(&directive) {
                header_only.push(directive);
            }
        } else {
            return Outcome::Closed(format!(
                "raw NGINX that ssegate never executes, and `{directive}` may deny access"
            ));
        }
    }
    match (reasons.is_empty(), header_only.is_empty()) {
        (false, true) => Outcome::Unnecessary(format!(
            "the snippet is not executed, and ssegate does what it asks: {}",
            reasons.join("; ")
        )),
        (true, true) => Outcome::Unnecessary("the snippet is empty".into()),
        _ => Outcome::Ignored(format!(
            "the snippet is not executed: its {} only change response headers, which ssegate does not add{}",
            header_only.join(", "),
            if reasons.is_empty() {
                String::new()
            } else {
                format!("; for the rest, ssegate does what it asks: {}", reasons.join("; "))
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> AnnotatedSettings {
        read_annotations(
            &pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            "default",
        )
    }

    fn outcome<'a>(s: &'a AnnotatedSettings, name: &str) -> &'a Outcome {
        &s.notes
            .iter()
            .find(|n| n.annotation == name)
            .unwrap_or_else(|| panic!("no note for {name}: {:?}", s.notes))
            .outcome
    }

    #[test]
    fn buffering_and_timeouts_read_as_nginx_means_them() {
        let s = read(&[
            ("nginx.ingress.kubernetes.io/proxy-buffering", "off"),
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "3600"),
            ("nginx.ingress.kubernetes.io/proxy-connect-timeout", " 7 "),
            ("nginx.ingress.kubernetes.io/proxy-send-timeout", "60"),
            ("kubernetes.io/ingress.class", "ssegate"),
        ]);
        assert_eq!(s.proxy_buffering, Some(ProxyBuffering::Disabled));
        // An idle timeout between upstream bytes, never a total cap.
        assert_eq!(s.timeouts.idle.as_deref(), Some("3600s"));
        assert_eq!(s.timeouts.connect.as_deref(), Some("7s"));
        assert!(matches!(
            outcome(&s, "nginx.ingress.kubernetes.io/proxy-send-timeout"),
            Outcome::Ignored(_)
        ));
        assert_eq!(s.notes.len(), 4, "annotations outside the two prefixes are not noted");
        assert_eq!(
            read(&[("nginx.ingress.kubernetes.io/proxy-buffering", "on")]).proxy_buffering,
            Some(ProxyBuffering::Enabled)
        );
        assert_eq!(read(&[]).proxy_buffering, None, "absent: the Route default (Auto)");
    }

    #[test]
    fn bad_values_are_reported_and_leave_the_default() {
        let s = read(&[
            ("nginx.ingress.kubernetes.io/proxy-buffering", "yes"),
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "1h"),
            ("nginx.ingress.kubernetes.io/proxy-connect-timeout", "0"),
            ("ssegate.dev/max-concurrent-streams", "-3"),
            ("ssegate.dev/load-balancing", "Random"),
        ]);
        assert_eq!(s.proxy_buffering, None);
        assert_eq!(s.timeouts, Timeouts::default());
        assert_eq!(s.max_concurrent_streams, None);
        assert!(
            s.notes.iter().all(|n| matches!(n.outcome, Outcome::Invalid(_))),
            "{:?}",
            s.notes
        );
    }

    #[test]
    fn ssegate_annotations_set_what_only_ssegate_has() {
        let s = read(&[
            ("ssegate.dev/heartbeat-interval", "15s"),
            ("ssegate.dev/max-stream-duration", "1h"),
            ("ssegate.dev/max-concurrent-streams", "500"),
            ("ssegate.dev/load-balancing", "RoundRobin"),
            ("ssegate.dev/buffer-size", "32Ki"),
        ]);
        assert_eq!(s.sse.heartbeat_interval.as_deref(), Some("15s"));
        assert_eq!(s.sse.max_stream_duration.as_deref(), Some("1h"));
        assert_eq!(s.max_concurrent_streams, Some(500));
        assert_eq!(s.load_balancing, Some(LoadBalancing::RoundRobin));
        assert_eq!(s.buffer_size, Some(Quantity("32Ki".into())));
        assert!(s.notes.iter().all(|n| !n.outcome.warns()));
    }

    #[test]
    fn resume_annotations_set_sse_resume_and_rebalance() {
        let s = read(&[
            ("ssegate.dev/sse-resume", "true"),
            ("ssegate.dev/sse-resume-max-attempts", "5"),
            ("ssegate.dev/sse-resume-budget", "2s"),
            ("ssegate.dev/sse-resume-on-idle-timeout", "true"),
            ("ssegate.dev/sse-resume-rollout-window", "30s"),
            ("ssegate.dev/sse-rebalance", "true"),
        ]);
        assert_eq!(
            s.sse.resume,
            Some(ResumeSpec {
                enabled: true,
                max_attempts: Some(5),
                budget: Some("2s".into()),
                on_idle_timeout: Some(true),
                rollout_window: Some("30s".into()),
            })
        );
        assert_eq!(
            s.sse.rebalance,
            Some(RebalanceSpec {
                enabled: true,
                ..RebalanceSpec::default()
            })
        );
        assert_eq!(s.notes.len(), 6);
        assert!(s.notes.iter().all(|n| !n.outcome.warns()), "{:?}", s.notes);
        assert_eq!(
            outcome(&s, "ssegate.dev/sse-resume-budget"),
            &Outcome::Applied("sse.resume.budget: 2s".into())
        );

        // Off, or not turned on: the refinements have nothing to refine.
        for resume in [&[("ssegate.dev/sse-resume", "false")][..], &[]] {
            let mut pairs = vec![("ssegate.dev/sse-resume-budget", "2s")];
            pairs.extend_from_slice(resume);
            let s = read(&pairs);
            assert!(s.sse.resume.as_ref().is_none_or(|r| !r.enabled && r.budget.is_none()));
            assert!(
                matches!(outcome(&s, "ssegate.dev/sse-resume-budget"), Outcome::Ignored(why) if why.contains("sse-resume")),
                "{:?}",
                s.notes
            );
        }
    }

    #[test]
    fn unreadable_resume_annotations_are_invalid_and_leave_the_default() {
        let s = read(&[
            ("ssegate.dev/sse-resume", "true"),
            ("ssegate.dev/sse-resume-max-attempts", "many"),
            ("ssegate.dev/sse-resume-budget", "soon"),
            ("ssegate.dev/sse-resume-on-idle-timeout", "yes"),
            ("ssegate.dev/sse-resume-rollout-window", "10"),
            ("ssegate.dev/sse-rebalance", "on"),
        ]);
        assert_eq!(
            s.sse.resume,
            Some(ResumeSpec {
                enabled: true,
                ..ResumeSpec::default()
            })
        );
        assert_eq!(s.sse.rebalance, None);
        for name in [
            "sse-resume-max-attempts",
            "sse-resume-budget",
            "sse-resume-on-idle-timeout",
            "sse-resume-rollout-window",
            "sse-rebalance",
        ] {
            let name = format!("ssegate.dev/{name}");
            assert!(
                matches!(outcome(&s, &name), Outcome::Invalid(_)),
                "{name}: {:?}",
                s.notes
            );
        }
        let s = read(&[("ssegate.dev/sse-resume", "True")]);
        assert_eq!(s.sse.resume, None);
        assert!(matches!(outcome(&s, "ssegate.dev/sse-resume"), Outcome::Invalid(_)));
    }

    #[test]
    fn cors_takes_ingress_nginx_defaults() {
        let s = read(&[("nginx.ingress.kubernetes.io/enable-cors", "true")]);
        let cors = s.cors.clone().expect("cors on");
        assert_eq!(cors.allow_origins, vec!["*"]);
        assert_eq!(
            cors.allow_methods,
            vec!["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]
        );
        assert!(cors.allow_headers.contains(&"Authorization".to_string()));
        // ingress-nginx's credentials default cannot go with `*`: reported.
        assert!(!cors.allow_credentials);
        assert!(matches!(
            outcome(&s, "nginx.ingress.kubernetes.io/cors-allow-credentials"),
            Outcome::Ignored(_)
        ));
        assert_eq!(cors.max_age.as_deref(), Some("86400s"));

        let s = read(&[
            ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            (
                "nginx.ingress.kubernetes.io/cors-allow-origin",
                "https://a.test, https://b.test",
            ),
            ("nginx.ingress.kubernetes.io/cors-allow-methods", "GET"),
            ("nginx.ingress.kubernetes.io/cors-max-age", "600"),
        ]);
        let cors = s.cors.clone().expect("cors on");
        assert_eq!(cors.allow_origins, vec!["https://a.test", "https://b.test"]);
        assert!(cors.allow_credentials, "the default, with listed origins");
        assert_eq!(cors.allow_methods, vec!["GET"]);
        assert_eq!(cors.max_age.as_deref(), Some("600s"));
        // The policy validates as a Route's would.
        assert!(cors.validate().is_ok());

        let off = read(&[("nginx.ingress.kubernetes.io/cors-allow-origin", "https://a.test")]);
        assert!(off.cors.is_none());
        assert!(matches!(
            outcome(&off, "nginx.ingress.kubernetes.io/cors-allow-origin"),
            Outcome::Ignored(_)
        ));
    }

    #[test]
    fn snippets_are_never_executed_and_judged_by_what_they_say() {
        let snippet = |text: &str| {
            let s = read(&[("nginx.ingress.kubernetes.io/configuration-snippet", text)]);
            outcome(&s, "nginx.ingress.kubernetes.io/configuration-snippet").clone()
        };
        // What SSE guides tell people to paste: ssegate does it anyway.
        assert!(matches!(
            snippet("proxy_set_header Connection \"\";\nadd_header X-Accel-Buffering no;\nchunked_transfer_encoding off;\nproxy_cache off;\n"),
            Outcome::Unnecessary(_)
        ));
        // Response headers only: harmless to skip, and said so.
        let headers = snippet("more_set_headers \"X-Frame-Options: DENY\"; add_header X-Accel-Buffering no;");
        assert!(
            matches!(&headers, Outcome::Ignored(why) if why.contains("more_set_headers")),
            "{headers:?}"
        );
        // Anything that may deny access fails closed, with the directive named.
        for (text, directive) in [
            (
                "add_header X-Accel-Buffering no;\nlocation /admin { deny all; }",
                "location",
            ),
            ("deny 10.0.0.0/8; allow all;", "deny"),
            ("if ($http_x_token != \"s3cret\") { return 403; }", "if"),
            ("add_header A b; return 403;", "return"),
            ("proxy_set_header X-Remote-User \"\";", "proxy_set_header"),
            ("auth_request /check;", "auth_request"),
            ("access_by_lua_block { ngx.exit(403) }", "access_by_lua_block"),
        ] {
            match snippet(text) {
                Outcome::Closed(why) => assert!(why.contains(&format!("`{directive}")), "{text}: {why}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        // Comments and blank lines are nothing.
        assert!(matches!(snippet("# just a note\n\n"), Outcome::Unnecessary(_)));
        // The server snippet is judged the same way.
        let s = read(&[(
            "nginx.ingress.kubernetes.io/server-snippet",
            "location /admin { deny all; }",
        )]);
        assert!(matches!(
            outcome(&s, "nginx.ingress.kubernetes.io/server-snippet"),
            Outcome::Closed(_)
        ));
        assert_eq!(s.closed.len(), 1);
    }

    #[test]
    fn every_other_nginx_annotation_is_reported() {
        let s = read(&[
            ("nginx.ingress.kubernetes.io/limit-rate", "10"),
            ("nginx.ingress.kubernetes.io/rewrite-target", "/$2"),
            ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
            ("nginx.ingress.kubernetes.io/force-ssl-redirect", "true"),
            ("nginx.ingress.kubernetes.io/no-such-annotation", "x"),
        ]);
        assert!(matches!(
            outcome(&s, "nginx.ingress.kubernetes.io/limit-rate"),
            Outcome::Ignored(_)
        ));
        assert!(matches!(
            outcome(&s, "nginx.ingress.kubernetes.io/rewrite-target"),
            Outcome::Ignored(_)
        ));
        assert!(matches!(
            outcome(&s, "nginx.ingress.kubernetes.io/no-such-annotation"),
            Outcome::Ignored(why) if why.contains("not an annotation of ingress-nginx")
        ));
        assert_eq!(s.ssl_redirect, Some(false));
        assert!(s.force_ssl_redirect);
        let warned: Vec<_> = s
            .notes
            .iter()
            .filter(|n| n.outcome.warns())
            .map(|n| &n.annotation)
            .collect();
        assert_eq!(warned.len(), 3, "{warned:?}");
        assert!(s.closed.is_empty());
    }

    /// A plausible value for an annotation, so that reading it exercises
    /// the value's own handling where there is one.
    fn plausible(name: &str) -> &'static str {
        match name {
            "proxy-read-timeout" | "proxy-connect-timeout" | "cors-max-age" => "30",
            "proxy-buffering" => "off",
            "ssl-redirect" | "force-ssl-redirect" | "enable-cors" | "use-regex" => "true",
            "enable-global-auth" => "true",
            "backend-protocol" => "HTTP",
            "configuration-snippet" | "server-snippet" => "deny all;",
            _ => "10.0.0.0/8",
        }
    }

    /// The walk the issue asks for: every annotation ingress-nginx has,
    /// read alone on an Ingress, ends up as its class says, and every one
    /// that restricts access and is not enforced closes the Ingress.
    #[test]
    fn every_ingress_nginx_annotation_ends_up_as_its_class_says() {
        use super::super::ingress_nginx_catalogue::CATALOGUE;
        for (name, class) in CATALOGUE {
            let full = format!("{NGINX}{name}");
            let s = read(&[(full.as_str(), plausible(name))]);
            let got = outcome(&s, &full).clone();
            let ok = match class {
                Class::Read(_) => !matches!(&got, Outcome::Ignored(why) if why == "not read by ssegate"),
                Class::Unnecessary(_) => matches!(got, Outcome::Unnecessary(_)),
                Class::Harmless(_) => matches!(got, Outcome::Ignored(_)),
                Class::FailClosed(_) | Class::Snippet => matches!(got, Outcome::Closed(_)),
            };
            assert!(ok, "{name} ({class:?}) read as {got:?}");
            let closes = matches!(got, Outcome::Closed(_));
            assert_eq!(!s.closed.is_empty(), closes, "{name}: {:?}", s.closed);
            if closes {
                assert!(s.closed[0].starts_with(&full), "{:?}", s.closed);
            }
        }
    }

    #[test]
    fn the_opt_out_serves_only_what_it_names_and_reports_itself() {
        let s = read(&[
            ("nginx.ingress.kubernetes.io/auth-tls-verify-client", "on"),
            ("nginx.ingress.kubernetes.io/auth-tls-secret", "default/ca"),
            ("nginx.ingress.kubernetes.io/ssl-passthrough", "true"),
            (
                UNENFORCED,
                "auth-tls-verify-client, nginx.ingress.kubernetes.io/auth-tls-secret",
            ),
        ]);
        assert!(matches!(
            outcome(&s, "nginx.ingress.kubernetes.io/auth-tls-verify-client"),
            Outcome::OptedOut(_)
        ));
        assert!(matches!(
            outcome(&s, "nginx.ingress.kubernetes.io/auth-tls-secret"),
            Outcome::OptedOut(_)
        ));
        // Not named: still closed.
        assert_eq!(s.closed.len(), 1, "{:?}", s.closed);
        assert!(s.closed[0].starts_with("nginx.ingress.kubernetes.io/ssl-passthrough"));
        match outcome(&s, UNENFORCED) {
            Outcome::OptedOut(why) => assert!(
                why.contains("WITHOUT enforcing auth-tls-verify-client, nginx.ingress.kubernetes.io/auth-tls-secret"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(s.notes.iter().filter(|n| n.outcome.warns()).count() == 4);

        // A name with nothing to opt out of is reported, never silent.
        let s = read(&[
            ("nginx.ingress.kubernetes.io/proxy-buffering", "off"),
            (UNENFORCED, "auth-ulr, proxy-buffering"),
        ]);
        match outcome(&s, UNENFORCED) {
            Outcome::Invalid(why) => {
                assert!(why.contains("auth-ulr (not on this Ingress)"), "{why}");
                assert!(
                    why.contains("proxy-buffering (enforced or not restricting access)"),
                    "{why}"
                );
                assert!(why.contains("nothing is served unenforced"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert!(s.closed.is_empty());
    }

    #[test]
    fn global_auth_is_closed_unless_turned_off() {
        let on = read(&[("nginx.ingress.kubernetes.io/enable-global-auth", "true")]);
        assert_eq!(on.closed.len(), 1);
        let off = read(&[("nginx.ingress.kubernetes.io/enable-global-auth", "false")]);
        assert!(off.closed.is_empty());
        assert!(matches!(
            outcome(&off, "nginx.ingress.kubernetes.io/enable-global-auth"),
            Outcome::Unnecessary(_)
        ));
        // Names ingress-nginx never had, but that read as access control.
        let odd = read(&[
            ("nginx.ingress.kubernetes.io/global-auth-url", "http://x"),
            ("nginx.ingress.kubernetes.io/auth-whatever", "x"),
        ]);
        assert_eq!(odd.closed.len(), 2, "{:?}", odd.closed);
    }
}
