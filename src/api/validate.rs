//! Semantic validation of a [`RouteSpec`]: what the schema cannot say.
//!
//! Validation turns a spec into a [`ValidRoute`] with every default applied
//! and every string parsed, so the routing model never re-parses user input.
//! Every problem is reported with its field path, all at once.

use super::{parse_duration, parse_quantity, PathMatchType, ProxyBuffering, RouteSpec, Timeouts};
use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

/// Buffer used in `Enabled` mode when the Route sets no `bufferSize`.
pub const DEFAULT_BUFFER_SIZE: usize = 64 * 1024;
const MIN_BUFFER_SIZE: u64 = 1024;
const MAX_BUFFER_SIZE: u64 = 16 * 1024 * 1024;
const MAX_WEIGHT: i32 = 1_000_000;
const MAX_RULES: usize = 64;
const MAX_MATCHES: usize = 64;
const MAX_BACKENDS: usize = 16;
const MAX_HOSTNAMES: usize = 16;
const DEFAULT_CONNECT: Duration = Duration::from_secs(5);
const DEFAULT_RESPONSE_HEADERS: Duration = Duration::from_secs(60);
const DEFAULT_IDLE: Duration = Duration::from_secs(3600);
// The ranges `ResumeSettings` and `RebalanceSettings` document; the CRD's
// CEL rules (`schema.rs`) say the same.
const RESUME_ATTEMPTS: RangeInclusive<u32> = 1..=10;
const RESUME_BUDGET: RangeInclusive<Duration> = Duration::from_millis(100)..=Duration::from_secs(60);
const ROLLOUT_WINDOW: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(300);
const TOLERANCE_PERCENT: RangeInclusive<u32> = 1..=100;
const MOVES_PER_SECOND: RangeInclusive<u32> = 1..=1000;

// Path rules shared word for word with the CRD's CEL rules (`schema.rs`), so
// a Route is refused with the same message by the apiserver and in
// standalone mode. They are Gateway API's rules for Exact and PathPrefix
// values: a path with dot segments or an encoded slash names a different
// resource once a backend normalises or decodes it.
pub(super) const PATH_DOUBLE_SLASH: &str = "path value must not contain //";
pub(super) const PATH_DOT_SEGMENTS: &str =
    "path value must not contain the dot segments /./ or /../, nor end with /. or /..";
pub(super) const PATH_ENCODED_SLASH: &str = "path value must not contain %2f or %2F (an encoded /)";
/// Also the CEL rules' message for `sse.rebalance` without `sse.resume`.
pub(super) const REBALANCE_NEEDS_RESUME: &str = "needs sse.resume: only streams that can be resumed are moved";

/// One problem in a Route, located by its field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Timeouts with defaults and overrides applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveTimeouts {
    pub connect: Duration,
    pub response_headers: Duration,
    /// `None` when idle timeouts are disabled (`0s`).
    pub idle: Option<Duration>,
    /// The whole exchange, from the request to the response's last byte
    /// (an HTTPRoute's `timeouts.request`/`backendRequest`): the headers
    /// must come within it, and the body is cut when it passes. Cuts
    /// streams too; `None` for Routes and Ingresses.
    pub request: Option<Duration>,
}

/// A checked path match: prefixes are stored without a trailing slash
/// (except `/` itself) so `/foo/` and `/foo` mean the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValidPath {
    pub kind: PathMatchType,
    pub value: String,
}

impl fmt::Display for ValidPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            PathMatchType::Exact => "Exact",
            PathMatchType::PathPrefix => "PathPrefix",
        };
        write!(f, "{kind} {}", self.value)
    }
}

/// What a match asks of a request besides its host and path: HTTPRoute's
/// method, header and query-parameter matches, and which listener it came
/// in on. Empty for Routes and Ingresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MatchConditions {
    /// Upper-case method, as sent.
    pub method: Option<String>,
    /// Lower-case names with the exact values they must carry.
    pub headers: Vec<(String, String)>,
    /// Query parameters (names compared exactly) with their exact values.
    pub query: Vec<(String, String)>,
    /// `Some(true)`: only requests that came over TLS; `Some(false)`: only
    /// plain HTTP (a Gateway listener of one protocol).
    pub tls: Option<bool>,
    /// The Gateway (`namespace/name`) whose listener the rule is attached
    /// through. A request that arrived on that Gateway's own data-plane
    /// port matches only rules naming it; on the shared ports this
    /// condition is met by every request, so it never changes what they
    /// match. Not part of [`MatchConditions::specificity`]: which Gateway
    /// a rule came through is no reason to prefer it.
    pub gateway: Option<std::sync::Arc<str>>,
    /// The listener of that Gateway (its name) the rule is attached
    /// through. On the Gateway's own ports a request matches only the
    /// rules of the one listener whose hostname fits its host best
    /// (listener isolation); elsewhere this is met by every request. Not
    /// part of the specificity either.
    pub listener: Option<std::sync::Arc<str>>,
}

impl MatchConditions {
    pub fn is_empty(&self) -> bool {
        *self == MatchConditions::default()
    }

    /// How specific this is, for Gateway API's precedence among matches of
    /// the same path: a method match, then more header matches, then more
    /// query-parameter matches. Larger is more specific.
    pub fn specificity(&self) -> (bool, usize, usize) {
        (self.method.is_some(), self.headers.len(), self.query.len())
    }
}

impl fmt::Display for MatchConditions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(m) = &self.method {
            write!(f, "method {m}")?;
            sep = ", ";
        }
        for (k, v) in &self.headers {
            write!(f, "{sep}header {k}: {v}")?;
            sep = ", ";
        }
        for (k, v) in &self.query {
            write!(f, "{sep}query {k}={v}")?;
            sep = ", ";
        }
        if let Some(tls) = self.tls {
            write!(f, "{sep}over {}", if tls { "TLS" } else { "plain HTTP" })?;
            sep = ", ";
        }
        if let Some(g) = &self.gateway {
            write!(f, "{sep}through Gateway {g}")?;
            if let Some(l) = &self.listener {
                write!(f, " listener {l}")?;
            }
        }
        Ok(())
    }
}

/// One match of a rule: a path and what else the request must show.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValidMatch {
    pub path: ValidPath,
    pub conditions: MatchConditions,
}

impl ValidMatch {
    /// A match on the path alone.
    pub fn path(path: ValidPath) -> Self {
        ValidMatch {
            path,
            conditions: MatchConditions::default(),
        }
    }
}

impl fmt::Display for ValidMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path)?;
        if !self.conditions.is_empty() {
            write!(f, " ({})", self.conditions)?;
        }
        Ok(())
    }
}

/// A validated backend reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidBackend {
    pub service: String,
    /// The Service's namespace when not the object's own (an HTTPRoute's
    /// cross-namespace reference, allowed by a ReferenceGrant).
    pub namespace: Option<String>,
    pub port: BackendPort,
    pub weight: u32,
    /// Why the reference may not be used (RefNotPermitted, InvalidKind),
    /// decided at translation; it keeps its share of requests and answers
    /// them 500.
    pub refused: Option<String>,
}

/// A Service port, by number or (for an Ingress, whose backends may name
/// one) by name; a name is looked up among the Service's ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackendPort {
    Number(u16),
    Name(String),
}

impl fmt::Display for BackendPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendPort::Number(n) => write!(f, "{n}"),
            BackendPort::Name(name) => f.write_str(name),
        }
    }
}

/// How a rule's traffic is carried, resolved once: the Route's settings
/// with the rule's own laid over them. The table keeps it as one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    pub buffering: ProxyBuffering,
    pub buffer_size: usize,
    pub timeouts: EffectiveTimeouts,
    /// Heartbeat interval for event streams; `None` when off.
    pub heartbeat: Option<Duration>,
    /// Longest life of one event stream; `None` when unlimited.
    pub max_stream_duration: Option<Duration>,
    pub load_balancing: super::LoadBalancing,
    /// Event streams carried on to another endpoint when theirs ends
    /// abnormally or leaves; `None` when off.
    pub resume: Option<ResumeSettings>,
    /// Resumable streams moved from the fullest endpoints when endpoints
    /// are added; `None` when off (it needs `resume`).
    pub rebalance: Option<RebalanceSettings>,
}

/// `sse.resume`, validated: how ssegate reconnects an event stream on the
/// client's behalf with `Last-Event-ID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeSettings {
    /// Upstream requests tried for one resume (connect failures and
    /// timeouts count); 1 to 10, 3 by default.
    pub max_attempts: u32,
    /// Time from the upstream's end to the resumed answer's head, across
    /// all attempts; 100ms to 60s, 5s by default.
    pub budget: Duration,
    /// An upstream silent for the idle timeout is resumed elsewhere rather
    /// than cut. Off by default.
    pub on_idle_timeout: bool,
    /// Streams on an endpoint that turns terminating or leaves move to
    /// others at their next event boundary, each at a random moment within
    /// this window after the change; 0s to 5m, 10s by default.
    pub rollout_window: Duration,
}

impl ResumeSettings {
    pub const DEFAULT: ResumeSettings = ResumeSettings {
        max_attempts: 3,
        budget: Duration::from_secs(5),
        on_idle_timeout: false,
        rollout_window: Duration::from_secs(10),
    };
}

impl fmt::Display for ResumeSettings {
    /// With the API's field names, for `/debug/routes`: `maxAttempts 3,
    /// budget 5s, onIdleTimeout false, rolloutWindow 10s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "maxAttempts {}, budget {:?}, onIdleTimeout {}, rolloutWindow {:?}",
            self.max_attempts, self.budget, self.on_idle_timeout, self.rollout_window
        )
    }
}

/// `sse.rebalance`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebalanceSettings {
    /// How far above the even share (in percent) an endpoint may hold
    /// streams before some move; 1 to 100, 10 by default.
    pub tolerance_percent: u32,
    /// Most streams of one rule moved per second; 1 to 1000, 20 by default.
    pub moves_per_second: u32,
}

impl RebalanceSettings {
    pub const DEFAULT: RebalanceSettings = RebalanceSettings {
        tolerance_percent: 10,
        moves_per_second: 20,
    };
}

impl fmt::Display for RebalanceSettings {
    /// With the API's field names: `tolerancePercent 10, movesPerSecond 20`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tolerancePercent {}, movesPerSecond {}",
            self.tolerance_percent, self.moves_per_second
        )
    }
}

impl StreamSettings {
    /// What a Route that sets nothing gets.
    pub const DEFAULT: StreamSettings = StreamSettings {
        buffering: ProxyBuffering::Auto,
        buffer_size: DEFAULT_BUFFER_SIZE,
        timeouts: EffectiveTimeouts {
            connect: DEFAULT_CONNECT,
            response_headers: DEFAULT_RESPONSE_HEADERS,
            idle: Some(DEFAULT_IDLE),
            request: None,
        },
        heartbeat: None,
        max_stream_duration: None,
        load_balancing: super::LoadBalancing::LeastConnections,
        resume: None,
        rebalance: None,
    };
}

impl fmt::Display for StreamSettings {
    /// One line for logs: `Disabled, bufferSize 65536, connect 5s, responseHeaders 60s, idle 3600s, heartbeat off, maxStreamDuration none, resume off, LeastConnections`
    /// (`resume 3x/5s` when on: attempts and budget; ` +rebalance` after it when that is on too).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.timeouts;
        write!(
            f,
            "{}, bufferSize {}, connect {:?}, responseHeaders {:?}, idle ",
            self.buffering.as_str(),
            self.buffer_size,
            t.connect,
            t.response_headers
        )?;
        match t.idle {
            Some(d) => write!(f, "{d:?}")?,
            None => f.write_str("off")?,
        }
        match self.heartbeat {
            Some(d) => write!(f, ", heartbeat {d:?}")?,
            None => f.write_str(", heartbeat off")?,
        }
        match self.max_stream_duration {
            Some(d) => write!(f, ", maxStreamDuration {d:?}")?,
            None => f.write_str(", maxStreamDuration none")?,
        }
        match self.resume {
            Some(r) => write!(f, ", resume {}x/{:?}", r.max_attempts, r.budget)?,
            None => f.write_str(", resume off")?,
        }
        if self.rebalance.is_some() {
            f.write_str(" +rebalance")?;
        }
        if let Some(d) = t.request {
            write!(f, ", request timeout {d:?}")?;
        }
        write!(f, ", {:?}", self.load_balancing)
    }
}

/// The settings one level (the Route, one rule, or a StreamPolicy) writes,
/// as given.
pub(crate) struct GivenSettings<'a> {
    pub(crate) buffering: Option<ProxyBuffering>,
    pub(crate) buffer_size: Option<&'a super::Quantity>,
    pub(crate) timeouts: Option<&'a Timeouts>,
    pub(crate) sse: Option<&'a super::SseSettings>,
    pub(crate) load_balancing: Option<super::LoadBalancing>,
}

impl GivenSettings<'_> {
    /// [`GivenSettings::over`] for layers outside this file (StreamPolicy
    /// attachment), so every layer merges field by field the same way.
    pub(crate) fn layered(&self, parent: StreamSettings, base: &str) -> (StreamSettings, Vec<FieldError>) {
        let mut errors = Errors::default();
        let settings = self.over(parent, base, &mut errors);
        (settings, errors.0)
    }

    /// The one merge: `given` laid over `parent`, each problem reported
    /// under `base` (`spec` or `spec.rules[N]`).
    fn over(&self, parent: StreamSettings, base: &str, errors: &mut Errors) -> StreamSettings {
        let buffer_size = match self.buffer_size {
            None => parent.buffer_size,
            Some(q) => match parse_quantity(&q.0) {
                Ok(n) if (MIN_BUFFER_SIZE..=MAX_BUFFER_SIZE).contains(&n) => n as usize,
                Ok(_) => {
                    errors.add(format!("{base}.bufferSize"), "must be between 1Ki and 16Mi");
                    parent.buffer_size
                }
                Err(e) => {
                    errors.add(format!("{base}.bufferSize"), e.to_string());
                    parent.buffer_size
                }
            },
        };
        let sse = format!("{base}.sse");
        let resume = resume(parent.resume, self.sse, &sse, errors);
        StreamSettings {
            buffering: self.buffering.unwrap_or(parent.buffering),
            buffer_size,
            timeouts: apply_timeouts(parent.timeouts, self.timeouts, &format!("{base}.timeouts"), errors),
            heartbeat: heartbeat(parent.heartbeat, self.sse, &sse, errors),
            max_stream_duration: max_stream(parent.max_stream_duration, self.sse, &sse, errors),
            load_balancing: self.load_balancing.unwrap_or(parent.load_balancing),
            resume,
            rebalance: rebalance(parent.rebalance, resume, self.sse, &sse, errors),
        }
    }
}

/// A validated rule with the Route-level settings folded in.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRule {
    /// The host patterns of this rule alone, when they differ from the
    /// route's (an Ingress names a host per rule); `None` for a Route.
    pub hostnames: Option<Vec<String>>,
    pub matches: Vec<ValidMatch>,
    pub backends: Vec<ValidBackend>,
    pub settings: StreamSettings,
    /// Plain-HTTP requests get a 308 to the same URL on HTTPS (an Ingress
    /// with TLS, as ingress-nginx's `ssl-redirect`).
    pub https_redirect: bool,
    /// Header edits, a redirect or a rewrite (an HTTPRoute's filters).
    pub filters: Option<std::sync::Arc<super::filters::RuleFilters>>,
    /// This rule's own CORS policy (an HTTPRoute's CORS filter), over the
    /// route's.
    pub cors: Option<std::sync::Arc<super::CorsPolicy>>,
    /// Who may reach the rule; `None` lets everyone.
    pub access: Option<std::sync::Arc<super::ValidAccess>>,
}

/// A validated Route spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRoute {
    /// Lower-case host patterns; empty means any host.
    pub hostnames: Vec<String>,
    pub rules: Vec<ValidRule>,
    /// Most event streams open at once on this Route; `None` when unlimited.
    pub max_concurrent_streams: Option<usize>,
    pub cors: Option<std::sync::Arc<super::CorsPolicy>>,
    pub tls: Vec<ValidTls>,
    /// A backend that cannot be resolved keeps its share of requests and
    /// answers them 500, and a rule with no usable backend answers 500 (an
    /// HTTPRoute, as Gateway API requires); otherwise such backends are
    /// passed over and an empty rule answers 503.
    pub strict_backends: bool,
}

/// A certificate reference with its server names resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidTls {
    /// Lower-case exact names or `*.` wildcards.
    pub hostnames: Vec<String>,
    pub secret_name: String,
    /// The Secret's namespace when not the object's own (a Gateway
    /// listener's certificateRef allowed by a ReferenceGrant).
    pub namespace: Option<String>,
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

impl RouteSpec {
    /// Checks the spec and resolves defaults. Returns every problem found.
    pub fn validate(&self) -> Result<ValidRoute, Vec<FieldError>> {
        let mut errors = Errors::default();

        if self.hostnames.len() > MAX_HOSTNAMES {
            errors.add(
                "spec.hostnames",
                format!("at most {MAX_HOSTNAMES} hostnames are allowed"),
            );
        }
        let mut hostnames = Vec::with_capacity(self.hostnames.len());
        for (i, host) in self.hostnames.iter().enumerate() {
            match check_hostname(host) {
                Ok(()) => hostnames.push(host.clone()),
                Err(msg) => errors.add(format!("spec.hostnames[{i}]"), msg),
            }
        }

        let route_settings = GivenSettings {
            buffering: Some(self.proxy_buffering),
            buffer_size: self.buffer_size.as_ref(),
            timeouts: self.timeouts.as_ref(),
            sse: self.sse.as_ref(),
            load_balancing: self.load_balancing,
        }
        .over(StreamSettings::DEFAULT, "spec", &mut errors);
        // Never an error: what cannot be enforced closes the Route instead
        // (see `access`), so its paths are never served open.
        let access = self
            .access
            .as_ref()
            .map(|a| a.validate("spec.access"))
            .filter(|a| a.restricts())
            .map(std::sync::Arc::new);

        if self.rules.is_empty() {
            errors.add("spec.rules", "at least one rule is required");
        }
        if self.rules.len() > MAX_RULES {
            errors.add("spec.rules", format!("at most {MAX_RULES} rules are allowed"));
        }
        let mut rules = Vec::with_capacity(self.rules.len());
        for (r, rule) in self.rules.iter().enumerate() {
            let base = format!("spec.rules[{r}]");
            if rule.matches.len() > MAX_MATCHES {
                errors.add(
                    format!("{base}.matches"),
                    format!("at most {MAX_MATCHES} matches are allowed"),
                );
            }
            let mut paths = Vec::new();
            for (m, matcher) in rule.matches.iter().enumerate() {
                let path = matcher.path.clone().unwrap_or_default();
                match check_path(&path.value) {
                    Ok(()) => paths.push(normalize(path.kind, &path.value)),
                    Err(msg) => errors.add(format!("{base}.matches[{m}].path.value"), msg),
                }
            }
            if rule.matches.is_empty() {
                paths.push(normalize(PathMatchType::PathPrefix, "/"));
            }

            if rule.backend_refs.is_empty() {
                errors.add(format!("{base}.backendRefs"), "at least one backendRef is required");
            }
            if rule.backend_refs.len() > MAX_BACKENDS {
                errors.add(
                    format!("{base}.backendRefs"),
                    format!("at most {MAX_BACKENDS} backendRefs are allowed"),
                );
            }
            let mut backends = Vec::with_capacity(rule.backend_refs.len());
            for (b, backend) in rule.backend_refs.iter().enumerate() {
                let field = format!("{base}.backendRefs[{b}]");
                let mut ok = true;
                if let Err(msg) = check_dns_label(&backend.name) {
                    errors.add(format!("{field}.name"), msg);
                    ok = false;
                }
                if !(1..=65535).contains(&backend.port) {
                    errors.add(format!("{field}.port"), "must be between 1 and 65535");
                    ok = false;
                }
                if !(0..=MAX_WEIGHT).contains(&backend.weight) {
                    errors.add(format!("{field}.weight"), "must be between 0 and 1000000");
                    ok = false;
                }
                if ok {
                    backends.push(ValidBackend {
                        service: backend.name.clone(),
                        namespace: None,
                        port: BackendPort::Number(backend.port as u16),
                        weight: backend.weight as u32,
                        refused: None,
                    });
                }
            }

            let settings = GivenSettings {
                buffering: rule.proxy_buffering,
                buffer_size: None,
                timeouts: rule.timeouts.as_ref(),
                sse: rule.sse.as_ref(),
                load_balancing: rule.load_balancing,
            }
            .over(route_settings, &base, &mut errors);
            rules.push(ValidRule {
                hostnames: None,
                matches: paths.into_iter().map(ValidMatch::path).collect(),
                backends,
                settings,
                https_redirect: self.https_redirect,
                filters: None,
                cors: None,
                access: access.clone(),
            });
        }

        let max_concurrent_streams = match self.max_concurrent_streams {
            None => None,
            Some(n) if (1..=10_000_000).contains(&n) => Some(n as usize),
            Some(_) => {
                errors.add("spec.maxConcurrentStreams", "must be between 1 and 10000000");
                None
            }
        };
        let cors = match &self.cors {
            None => None,
            Some(spec) => match spec.validate() {
                Ok(policy) => Some(std::sync::Arc::new(policy)),
                Err(problems) => {
                    for problem in problems {
                        errors.add(format!("spec.cors.{}", problem.field), problem.message);
                    }
                    None
                }
            },
        };
        let mut tls = Vec::with_capacity(self.tls.len());
        for (i, t) in self.tls.iter().enumerate() {
            let field = format!("spec.tls[{i}]");
            if let Err(msg) = check_dns_subdomain(&t.secret_name) {
                errors.add(format!("{field}.secretName"), msg);
            }
            let names = if t.hostnames.is_empty() {
                &self.hostnames
            } else {
                &t.hostnames
            };
            if names.is_empty() {
                errors.add(
                    format!("{field}.hostnames"),
                    "certificates are chosen by server name: list hostnames here or in spec.hostnames",
                );
            }
            for (h, host) in t.hostnames.iter().enumerate() {
                if let Err(msg) = check_hostname(host) {
                    errors.add(format!("{field}.hostnames[{h}]"), msg);
                }
            }
            tls.push(ValidTls {
                hostnames: names.clone(),
                secret_name: t.secret_name.clone(),
                namespace: None,
            });
        }
        if errors.0.is_empty() {
            Ok(ValidRoute {
                hostnames,
                rules,
                max_concurrent_streams,
                cors,
                tls,
                strict_backends: false,
            })
        } else {
            Err(errors.0)
        }
    }
}

fn apply_timeouts(
    base: EffectiveTimeouts,
    given: Option<&Timeouts>,
    field: &str,
    errors: &mut Errors,
) -> EffectiveTimeouts {
    let Some(given) = given else { return base };
    let mut out = base;
    let mut parse = |name: &str, text: &Option<String>| -> Option<Duration> {
        let text = text.as_ref()?;
        match parse_duration(text) {
            Ok(d) => Some(d),
            Err(e) => {
                errors.add(format!("{field}.{name}"), e.to_string());
                None
            }
        }
    };
    let connect = parse("connect", &given.connect);
    let headers = parse("responseHeaders", &given.response_headers);
    let idle = parse("idle", &given.idle);
    if let Some(d) = connect {
        if d.is_zero() {
            errors.add(format!("{field}.connect"), "must be greater than 0s");
        } else {
            out.connect = d;
        }
    }
    if let Some(d) = headers {
        if d.is_zero() {
            errors.add(format!("{field}.responseHeaders"), "must be greater than 0s");
        } else {
            out.response_headers = d;
        }
    }
    if let Some(d) = idle {
        out.idle = (!d.is_zero()).then_some(d);
    }
    out
}

/// The heartbeat interval from `given`, else `base`. At least 100ms: a
/// shorter one only adds traffic.
fn heartbeat(
    base: Option<Duration>,
    given: Option<&super::SseSettings>,
    field: &str,
    errors: &mut Errors,
) -> Option<Duration> {
    let Some(text) = given.and_then(|s| s.heartbeat_interval.as_ref()) else {
        return base;
    };
    match parse_duration(text) {
        Ok(d) if d >= Duration::from_millis(100) => Some(d),
        Ok(_) => {
            errors.add(format!("{field}.heartbeatInterval"), "must be at least 100ms");
            base
        }
        Err(e) => {
            errors.add(format!("{field}.heartbeatInterval"), e.to_string());
            base
        }
    }
}

/// The longest stream life from `given`, else `base`; it must be above 0s.
fn max_stream(
    base: Option<Duration>,
    given: Option<&super::SseSettings>,
    field: &str,
    errors: &mut Errors,
) -> Option<Duration> {
    let Some(text) = given.and_then(|s| s.max_stream_duration.as_ref()) else {
        return base;
    };
    match parse_duration(text) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            errors.add(format!("{field}.maxStreamDuration"), "must be greater than 0s");
            base
        }
        Err(e) => {
            errors.add(format!("{field}.maxStreamDuration"), e.to_string());
            base
        }
    }
}

/// `sse.resume` from `given` laid over `base`. `enabled: false` turns it
/// off; `enabled: true` keeps `base`'s values when it was on (a rule
/// changes single fields of its Route's resume) and starts from the
/// defaults when it was off, then takes each field given. A field out of
/// range is reported and the value it would have replaced stays.
fn resume(
    base: Option<ResumeSettings>,
    given: Option<&super::SseSettings>,
    field: &str,
    errors: &mut Errors,
) -> Option<ResumeSettings> {
    let Some(given) = given.and_then(|s| s.resume.as_ref()) else {
        return base;
    };
    if !given.enabled {
        return None;
    }
    let field = format!("{field}.resume");
    let mut out = base.unwrap_or(ResumeSettings::DEFAULT);
    if let Some(n) = count_within(
        given.max_attempts,
        RESUME_ATTEMPTS,
        &format!("{field}.maxAttempts"),
        errors,
    ) {
        out.max_attempts = n;
    }
    if let Some(d) = duration_within(
        given.budget.as_deref(),
        RESUME_BUDGET,
        "must be between 100ms and 60s",
        &format!("{field}.budget"),
        errors,
    ) {
        out.budget = d;
    }
    if let Some(on) = given.on_idle_timeout {
        out.on_idle_timeout = on;
    }
    if let Some(d) = duration_within(
        given.rollout_window.as_deref(),
        ROLLOUT_WINDOW,
        "must be between 0s and 5m",
        &format!("{field}.rolloutWindow"),
        errors,
    ) {
        out.rollout_window = d;
    }
    Some(out)
}

/// `sse.rebalance` from `given` laid over `base`, as [`resume`] does, once
/// `resume` (this level's, merged) is known. Rebalancing moves streams by
/// resuming them, so turning it on where resume is off is reported and
/// leaves it off; one inherited from `base` goes off quietly with resume,
/// as the level that turned resume off asked nothing of rebalancing.
fn rebalance(
    base: Option<RebalanceSettings>,
    resume: Option<ResumeSettings>,
    given: Option<&super::SseSettings>,
    field: &str,
    errors: &mut Errors,
) -> Option<RebalanceSettings> {
    let merged = match given.and_then(|s| s.rebalance.as_ref()) {
        None => base,
        Some(given) if !given.enabled => None,
        Some(given) => {
            let field = format!("{field}.rebalance");
            let mut out = base.unwrap_or(RebalanceSettings::DEFAULT);
            let tolerance = format!("{field}.tolerancePercent");
            if let Some(n) = count_within(given.tolerance_percent, TOLERANCE_PERCENT, &tolerance, errors) {
                out.tolerance_percent = n;
            }
            let moves = format!("{field}.movesPerSecond");
            if let Some(n) = count_within(given.moves_per_second, MOVES_PER_SECOND, &moves, errors) {
                out.moves_per_second = n;
            }
            if resume.is_none() {
                errors.add(field, REBALANCE_NEEDS_RESUME);
                return None;
            }
            Some(out)
        }
    };
    merged.filter(|_| resume.is_some())
}

/// `given` when it is within `range`; reported under `field` when it is
/// not.
fn count_within(given: Option<i32>, range: RangeInclusive<u32>, field: &str, errors: &mut Errors) -> Option<u32> {
    let n = given?;
    match u32::try_from(n) {
        Ok(n) if range.contains(&n) => Some(n),
        _ => {
            errors.add(field, format!("must be between {} and {}", range.start(), range.end()));
            None
        }
    }
}

/// `given`, parsed, when it is within `range`; reported under `field`
/// (with `message` when out of range) when it is not.
fn duration_within(
    given: Option<&str>,
    range: RangeInclusive<Duration>,
    message: &str,
    field: &str,
    errors: &mut Errors,
) -> Option<Duration> {
    match parse_duration(given?) {
        Ok(d) if range.contains(&d) => Some(d),
        Ok(_) => {
            errors.add(field, message);
            None
        }
        Err(e) => {
            errors.add(field, e.to_string());
            None
        }
    }
}

/// A path match checked as a Route's would be, for translations of other
/// kinds.
pub fn valid_path(kind: PathMatchType, value: &str) -> Result<ValidPath, String> {
    check_path(value)?;
    Ok(normalize(kind, value))
}

/// A host pattern checked as a Route's hostname would be.
pub fn valid_hostname(host: &str) -> Result<(), String> {
    check_hostname(host)
}

/// A Service name or port name: a DNS label.
pub fn valid_dns_label(label: &str) -> Result<(), String> {
    check_dns_label(label)
}

/// A Secret name: a DNS subdomain.
pub fn valid_dns_subdomain(name: &str) -> Result<(), String> {
    check_dns_subdomain(name)
}

/// The settings of a Route-level `spec` with these fields, for
/// translations of other kinds. A value that cannot be used is reported
/// (under `spec.<field>`) and its default applies.
pub fn route_settings(
    buffering: ProxyBuffering,
    buffer_size: Option<&super::Quantity>,
    timeouts: Option<&Timeouts>,
    sse: Option<&super::SseSettings>,
    load_balancing: Option<super::LoadBalancing>,
) -> (StreamSettings, Vec<FieldError>) {
    let mut errors = Errors::default();
    let settings = GivenSettings {
        buffering: Some(buffering),
        buffer_size,
        timeouts,
        sse,
        load_balancing,
    }
    .over(StreamSettings::DEFAULT, "spec", &mut errors);
    (settings, errors.0)
}

fn normalize(kind: PathMatchType, value: &str) -> ValidPath {
    let value = match kind {
        PathMatchType::PathPrefix if value.len() > 1 => value.trim_end_matches('/'),
        _ => value,
    };
    let value = if value.is_empty() { "/" } else { value };
    ValidPath {
        kind,
        value: value.to_owned(),
    }
}

fn check_path(value: &str) -> Result<(), String> {
    if !value.starts_with('/') {
        return Err(format!("{value:?} must start with /"));
    }
    if value.len() > 1024 {
        return Err("must be at most 1024 characters".into());
    }
    if value.contains("//") {
        return Err(PATH_DOUBLE_SLASH.into());
    }
    if value.contains("/./") || value.contains("/../") || value.ends_with("/.") || value.ends_with("/..") {
        return Err(PATH_DOT_SEGMENTS.into());
    }
    if value.contains("%2f") || value.contains("%2F") {
        return Err(PATH_ENCODED_SLASH.into());
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '?' || *c == '#')
    {
        return Err(format!(
            "{value:?} must not contain {c:?}; match the path only, without query or fragment"
        ));
    }
    Ok(())
}

fn check_hostname(host: &str) -> Result<(), String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if host.contains(':') {
        return Err(format!("{host:?} must not contain a port"));
    }
    if name.contains('*') {
        return Err(format!(
            "{host:?}: a wildcard may only be the whole first label, as in *.example.com"
        ));
    }
    if name.len() > 253 || name.is_empty() {
        return Err(format!("{host:?} is not a valid hostname"));
    }
    for label in name.split('.') {
        check_dns_label(label).map_err(|msg| format!("{host:?} is not a valid hostname: {msg}"))?;
    }
    Ok(())
}

fn check_dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err(format!("{name:?} must be 1-253 characters"));
    }
    name.split('.').try_for_each(check_dns_label)
}

fn check_dns_label(label: &str) -> Result<(), String> {
    let ok_chars = label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if label.is_empty() || label.len() > 63 || !ok_chars || label.starts_with('-') || label.ends_with('-') {
        return Err(format!(
            "{label:?} must be 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
