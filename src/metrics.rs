//! Prometheus metrics (served on the admin port at `/metrics`).
//!
//! Label sets stay bounded: traffic is labelled by Route (`namespace/name`)
//! and a small fixed set of kinds, never by path, host or client. The data
//! plane fetches a Route's handles once per request ([`RouteMetrics`]);
//! after that every update is one atomic operation, so no lock is taken
//! per event.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Route label of requests that matched no Route.
pub const NO_ROUTE: &str = "";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status_class: &'static str,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Kinds of upstream failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    /// The TCP connect failed or timed out.
    Connect,
    /// No response headers within `timeouts.responseHeaders`.
    ResponseTimeout,
    /// The body went silent for longer than `timeouts.idle`.
    IdleTimeout,
    /// Any other failure after connecting (reset, protocol error).
    Failed,
    /// The answer was still going when the request's deadline (an
    /// HTTPRoute's `timeouts.request`) passed, and was cut.
    RequestTimeout,
}

impl UpstreamError {
    const ALL: [UpstreamError; 5] = [
        UpstreamError::Connect,
        UpstreamError::ResponseTimeout,
        UpstreamError::IdleTimeout,
        UpstreamError::Failed,
        UpstreamError::RequestTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::ResponseTimeout => "response_timeout",
            UpstreamError::IdleTimeout => "idle_timeout",
            UpstreamError::Failed => "failed",
            UpstreamError::RequestTimeout => "request_timeout",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    route: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccessLabels {
    route: String,
    reason: &'static str,
}

/// Why a request was refused by a rule's access policy: the `reason` label
/// of `ssegate_access_refused_total`.
pub const ACCESS_REASONS: [&str; 8] = [
    "closed",
    "source_range",
    "basic_auth",
    "external_auth",
    "external_auth_error",
    "limit_connections",
    "limit_rate",
    "limit_capacity",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerReasonLabels {
    listener: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabel {
    task: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResumeLabels {
    route: String,
    reason: &'static str,
    outcome: &'static str,
}

/// Why a stream was resumed (`ResumeReason::as_str`).
const RESUME_REASONS: [&str; 4] = ["upstream_error", "idle_timeout", "endpoint_leaving", "rebalance"];
/// How a resume ended: carried on, or why the stream ended (or stayed).
pub const RESUME_OUTCOMES: [&str; 6] = [
    "resumed",
    "no_id",
    "inside_large_event",
    "exhausted",
    "bad_answer",
    "no_endpoint",
];

fn resume_gap_histogram() -> Histogram {
    // 0.25 ms to about 16 s.
    Histogram::new(exponential_buckets(0.00025, 2.0, 17))
}

fn ttfb_histogram() -> Histogram {
    // 0.5 ms to about 65 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Every metric ssegate exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    open_streams: Family<RouteLabel, Gauge>,
    events: Family<RouteLabel, Counter>,
    bytes: Family<RouteLabel, Counter>,
    upstream_errors: Family<ErrorLabels, Counter>,
    ttfb: Family<RouteLabel, Histogram, fn() -> Histogram>,
    resumes: Family<ResumeLabels, Counter>,
    resume_gap: Family<RouteLabel, Histogram, fn() -> Histogram>,
    connections: Family<ListenerLabel, Counter>,
    tls_handshake_errors: Counter,
    accept_errors: Family<ListenerLabel, Counter>,
    connections_closed: Family<ReasonLabel, Counter>,
    bad_requests: Family<ReasonLabel, Counter>,
    access_refused: Family<AccessLabels, Counter>,
    proxy_protocol_refused: Family<ListenerReasonLabels, Counter>,
    table_generation: Gauge,
    last_swap: Gauge<f64, AtomicU64>,
    apply_latency: Histogram,
    routes: Family<StateLabel, Gauge>,
    status_writes: Family<ResultLabel, Counter>,
    task_restarts: Family<TaskLabel, Counter>,
    /// Each Route's handles, so a request fetches them with one lookup.
    route_handles: crate::shared_map::SharedMap<std::sync::Arc<str>, std::sync::Arc<RouteMetrics>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("ssegate"),
            requests: Family::default(),
            open_streams: Family::default(),
            events: Family::default(),
            bytes: Family::default(),
            upstream_errors: Family::default(),
            ttfb: Family::new_with_constructor(ttfb_histogram),
            resumes: Family::default(),
            resume_gap: Family::new_with_constructor(resume_gap_histogram),
            connections: Family::default(),
            tls_handshake_errors: Counter::default(),
            accept_errors: Family::default(),
            connections_closed: Family::default(),
            bad_requests: Family::default(),
            access_refused: Family::default(),
            proxy_protocol_refused: Family::default(),
            table_generation: Gauge::default(),
            last_swap: Gauge::default(),
            // 50 µs to about 26 s: a file debounce, a watch burst, a slow rebuild.
            apply_latency: Histogram::new(exponential_buckets(0.00005, 2.0, 20)),
            routes: Family::default(),
            status_writes: Family::default(),
            task_restarts: Family::default(),
            route_handles: Default::default(),
        };
        let r = &mut m.registry;
        r.register(
            "requests",
            "Requests answered, by Route and status class",
            m.requests.clone(),
        );
        r.register(
            "open_streams",
            "Event streams open now, by Route",
            m.open_streams.clone(),
        );
        r.register(
            "events",
            "Server-sent events forwarded to clients, by Route",
            m.events.clone(),
        );
        r.register(
            "response_bytes",
            "Response body bytes forwarded to clients, by Route",
            m.bytes.clone(),
        );
        r.register(
            "upstream_errors",
            "Upstream failures: connect, response_timeout, idle_timeout, failed",
            m.upstream_errors.clone(),
        );
        r.register(
            "upstream_ttfb_seconds",
            "Time from a request's arrival to the upstream's response headers",
            m.ttfb.clone(),
        );
        r.register(
            "stream_resumes",
            "Event streams carried to another endpoint (Route sse.resume), by Route, reason (upstream_error, idle_timeout, endpoint_leaving, rebalance) and outcome (resumed; no_id, inside_large_event, exhausted, bad_answer, no_endpoint: not resumed)",
            m.resumes.clone(),
        );
        r.register(
            "stream_resume_gap_seconds",
            "Time from an upstream's end (or a move's start) to the next event of the resumed stream, by Route",
            m.resume_gap.clone(),
        );
        r.register(
            "connections",
            "Client connections accepted, by listener",
            m.connections.clone(),
        );
        r.register(
            "tls_handshake_errors",
            "TLS handshakes that failed or timed out",
            m.tls_handshake_errors.clone(),
        );
        r.register(
            "accept_errors",
            "Failed accepts (out of file descriptors and the like), by listener: admin, http, https",
            m.accept_errors.clone(),
        );
        r.register(
            "client_connections_closed",
            "Client connections closed by a limit: header_timeout, keepalive_timeout, send_timeout",
            m.connections_closed.clone(),
        );
        r.register(
            "bad_requests",
            "Requests refused as the client's fault (400, 408): host, path, body, body_timeout",
            m.bad_requests.clone(),
        );
        r.register(
            "access_refused",
            "Requests refused by a rule's access policy, by Route and reason: closed (restrictions not enforced, 503), source_range, basic_auth, external_auth, external_auth_error, limit_connections, limit_rate, limit_capacity",
            m.access_refused.clone(),
        );
        r.register(
            "proxy_protocol_refused",
            "Connections closed unanswered on a PROXY protocol listener, by listener (http, https) and reason: untrusted (peer not in --trusted-proxies), missing (no header), malformed, timeout, closed (ended before a whole header)",
            m.proxy_protocol_refused.clone(),
        );
        r.register(
            "table_generation",
            "Generation of the routing table in use",
            m.table_generation.clone(),
        );
        r.register(
            "table_last_swap_timestamp_seconds",
            "Unix time of the last routing table swap",
            m.last_swap.clone(),
        );
        r.register(
            "config_apply_seconds",
            "Time from the first unapplied change (watch event or file write) to the table swap",
            m.apply_latency.clone(),
        );
        r.register(
            "routes",
            "Routes in the current table: accepted or rejected",
            m.routes.clone(),
        );
        r.register(
            "status_writes",
            "Route status patches sent to the apiserver, by result",
            m.status_writes.clone(),
        );
        r.register(
            "task_restarts",
            "Background tasks started again after they panicked, by task (route_status, ingress_status, gateway_status, gateway_services, stream_policy_status)",
            m.task_restarts.clone(),
        );
        m
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// A Route's handles: one lock-free lookup once the Route has been seen.
    pub fn route(&self, route: &std::sync::Arc<str>) -> std::sync::Arc<RouteMetrics> {
        self.route_handles
            .get_or_insert_with(route, || std::sync::Arc::new(self.new_route(route)))
    }

    /// Drops the series of Routes that are no longer in `live` and have no
    /// stream open, so deleted Routes do not leave series behind. A Route
    /// with streams still open is dropped at a later swap.
    pub fn forget_routes(&self, is_live: impl Fn(&str) -> bool) {
        let gone = self
            .route_handles
            .remove_where(|name, handles| !name.is_empty() && !is_live(name) && handles.open_streams.get() == 0);
        for (name, _) in gone {
            let label = RouteLabel {
                route: name.to_string(),
            };
            for status_class in CLASSES {
                self.requests.remove(&RequestLabels {
                    route: name.to_string(),
                    status_class,
                });
            }
            for kind in UpstreamError::ALL {
                self.upstream_errors.remove(&ErrorLabels {
                    route: name.to_string(),
                    kind: kind.as_str(),
                });
            }
            for reason in ACCESS_REASONS {
                self.access_refused.remove(&AccessLabels {
                    route: name.to_string(),
                    reason,
                });
            }
            self.open_streams.remove(&label);
            self.events.remove(&label);
            self.bytes.remove(&label);
            self.ttfb.remove(&label);
            self.resume_gap.remove(&label);
            for reason in RESUME_REASONS {
                for outcome in RESUME_OUTCOMES {
                    self.resumes.remove(&ResumeLabels {
                        route: name.to_string(),
                        reason,
                        outcome,
                    });
                }
            }
        }
    }

    fn new_route(&self, route: &str) -> RouteMetrics {
        let label = RouteLabel {
            route: route.to_owned(),
        };
        let requests = CLASSES.map(|status_class| {
            self.requests.get_or_create_owned(&RequestLabels {
                route: route.to_owned(),
                status_class,
            })
        });
        let error = |kind| {
            self.upstream_errors.get_or_create_owned(&ErrorLabels {
                route: route.to_owned(),
                kind,
            })
        };
        RouteMetrics {
            requests,
            open_streams: self.open_streams.get_or_create_owned(&label),
            events: self.events.get_or_create_owned(&label),
            bytes: self.bytes.get_or_create_owned(&label),
            ttfb: self.ttfb.get_or_create_owned(&label),
            errors: UpstreamError::ALL.map(|kind| error(kind.as_str())),
            route: route.into(),
            resumes: self.resumes.clone(),
            resume_gap: self.resume_gap.clone(),
        }
    }

    /// A supervised task panicked and is started again.
    pub fn task_restarted(&self, task: &'static str) {
        self.task_restarts.get_or_create(&TaskLabel { task }).inc();
    }

    pub fn connection_accepted(&self, tls: bool) {
        let listener = if tls { "https" } else { "http" };
        self.connections.get_or_create(&ListenerLabel { listener }).inc();
    }

    /// An `accept` failed on `listener` (`admin`, `http` or `https`).
    pub fn accept_failed(&self, listener: &'static str) {
        self.accept_errors.get_or_create(&ListenerLabel { listener }).inc();
    }

    /// A client connection was closed by a timeout (`reason`).
    pub fn connection_closed(&self, reason: &'static str) {
        self.connections_closed.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A request was refused as malformed or too slow (`reason`).
    pub fn bad_request(&self, reason: &'static str) {
        self.bad_requests.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A request to `route` was refused by its access policy (`reason`,
    /// one of [`ACCESS_REASONS`]). Refusals are per request, not per event,
    /// so the label lookup is affordable.
    pub fn access_refused(&self, route: &str, reason: &'static str) {
        debug_assert!(ACCESS_REASONS.contains(&reason), "{reason}");
        self.access_refused
            .get_or_create(&AccessLabels {
                route: route.to_owned(),
                reason,
            })
            .inc();
    }

    /// A connection on a PROXY protocol listener (`tls`: the TLS one) was
    /// closed for `reason`, one of [`crate::proxy::proxy_protocol::REFUSED_REASONS`].
    pub fn proxy_protocol_refused(&self, tls: bool, reason: &'static str) {
        debug_assert!(
            crate::proxy::proxy_protocol::REFUSED_REASONS.contains(&reason),
            "{reason}"
        );
        let listener = if tls { "https" } else { "http" };
        self.proxy_protocol_refused
            .get_or_create(&ListenerReasonLabels { listener, reason })
            .inc();
    }

    pub fn tls_handshake_failed(&self) {
        self.tls_handshake_errors.inc();
    }

    /// Records a table swap; `since` is when the change that caused it
    /// was first seen.
    pub fn table_swapped(&self, generation: u64, accepted: usize, rejected: usize, since: Option<std::time::Instant>) {
        self.table_generation.set(generation as i64);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        self.last_swap.set(now.as_secs_f64());
        self.routes
            .get_or_create(&StateLabel { state: "accepted" })
            .set(accepted as i64);
        self.routes
            .get_or_create(&StateLabel { state: "rejected" })
            .set(rejected as i64);
        if let Some(since) = since {
            self.apply_latency.observe(since.elapsed().as_secs_f64());
        }
    }

    pub fn status_write(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.status_writes.get_or_create(&ResultLabel { result }).inc();
    }

    /// Status patches that succeeded, for `/debug/status`.
    pub fn status_writes_ok(&self) -> u64 {
        self.status_writes.get_or_create(&ResultLabel { result: "ok" }).get()
    }
}

/// One Route's metric handles: clones that share the registry's atomics.
#[derive(Clone)]
pub struct RouteMetrics {
    requests: [Counter; 5],
    pub open_streams: Gauge,
    pub events: Counter,
    pub bytes: Counter,
    pub ttfb: Histogram,
    errors: [Counter; 5],
    route: Box<str>,
    /// Created at a Route's first resume: most Routes never have one.
    resumes: Family<ResumeLabels, Counter>,
    resume_gap: Family<RouteLabel, Histogram, fn() -> Histogram>,
}

impl RouteMetrics {
    pub fn request(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.requests[class].inc();
    }

    pub fn upstream_error(&self, kind: UpstreamError) {
        self.errors[kind as usize].inc();
    }

    /// A resume ended with `outcome` (one of [`RESUME_OUTCOMES`]).
    pub fn resume(&self, reason: &'static str, outcome: &'static str) {
        self.resumes
            .get_or_create(&ResumeLabels {
                route: self.route.to_string(),
                reason,
                outcome,
            })
            .inc();
    }

    /// The first event of a resumed stream came `gap` after its upstream ended.
    pub fn resume_gap(&self, gap: std::time::Duration) {
        self.resume_gap
            .get_or_create(&RouteLabel {
                route: self.route.to_string(),
            })
            .observe(gap.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_labels() {
        let m = Metrics::new();
        let r = m.route(&std::sync::Arc::from("ns/a"));
        r.request(200);
        r.request(503);
        r.open_streams.inc();
        r.events.inc_by(3);
        r.upstream_error(UpstreamError::IdleTimeout);
        m.table_swapped(7, 2, 1, None);
        m.proxy_protocol_refused(true, "untrusted");
        let text = m.encode();
        for line in [
            r#"ssegate_requests_total{route="ns/a",status_class="2xx"} 1"#,
            r#"ssegate_requests_total{route="ns/a",status_class="5xx"} 1"#,
            r#"ssegate_open_streams{route="ns/a"} 1"#,
            r#"ssegate_events_total{route="ns/a"} 3"#,
            r#"ssegate_upstream_errors_total{route="ns/a",kind="idle_timeout"} 1"#,
            "ssegate_table_generation 7",
            r#"ssegate_routes{state="rejected"} 1"#,
            r#"ssegate_proxy_protocol_refused_total{listener="https",reason="untrusted"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));

        // A deleted Route's series go once its streams have ended.
        m.forget_routes(|_| false);
        assert!(m.encode().contains(r#"route="ns/a""#), "an open stream keeps them");
        r.open_streams.dec();
        m.forget_routes(|name| name == "ns/b");
        assert!(!m.encode().contains(r#"route="ns/a""#), "{}", m.encode());
    }
}
