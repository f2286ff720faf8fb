//! What is recorded about each response: per-Route metrics as it goes, and
//! one access-log line when it has ended.

use crate::metrics::RouteMetrics;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// The access-log target; filter it with `RUST_LOG`, e.g. `ssegate::access=off`.
pub const ACCESS_TARGET: &str = "ssegate::access";

/// The fields of one access-log line, gathered when the request arrives.
#[derive(Debug)]
pub struct AccessRecord {
    pub route: Arc<str>,
    pub method: http::Method,
    pub path: String,
    pub client: IpAddr,
    pub started: Instant,
    pub status: u16,
    /// The endpoint that answered; after a resume, the last one.
    pub endpoint: Option<SocketAddr>,
    /// Times the stream was resumed on another endpoint.
    pub resumes: u32,
}

impl AccessRecord {
    /// Writes the line. `outcome` says how the body ended: `complete`,
    /// `client_gone`, `max_duration`, `drain`, `idle_timeout`,
    /// `upstream_error`, or `local` for ssegate's own replies.
    pub fn log(&self, bytes: u64, events: u64, outcome: &'static str) {
        let duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let endpoint = self.endpoint.map(tracing::field::display);
        tracing::info!(
            target: ACCESS_TARGET,
            route = %self.route,
            method = %self.method,
            path = %self.path,
            status = self.status,
            duration_ms = (duration_ms * 1000.0).round() / 1000.0,
            bytes,
            events,
            outcome,
            client = %self.client,
            endpoint,
            resumes = self.resumes,
            "access"
        );
    }
}

/// Observes one upstream body: metrics as frames pass, the open-stream
/// gauge while it lives, and the access line when it is dropped.
pub struct Observer {
    pub metrics: Arc<RouteMetrics>,
    pub access: Option<Box<AccessRecord>>,
    /// Whether this body counts in `open_streams`.
    pub stream: bool,
    /// Per-client limit slots, released when the body ends (for an event
    /// stream: when it closes), which is what `limit-connections` counts.
    permits: Vec<crate::access::client_limits::Permit>,
}

impl Observer {
    pub fn new(metrics: Arc<RouteMetrics>, access: Option<Box<AccessRecord>>, stream: bool) -> Self {
        if stream {
            metrics.open_streams.inc();
        }
        Observer {
            metrics,
            access,
            stream,
            permits: Vec::new(),
        }
    }

    /// The stream carries on from `endpoint` after a resume.
    pub fn resumed(&mut self, endpoint: SocketAddr) {
        if let Some(access) = &mut self.access {
            access.resumes += 1;
            access.endpoint = Some(endpoint);
        }
    }

    /// Holds `permits` for as long as the body lives.
    pub fn holding(mut self, permits: Vec<crate::access::client_limits::Permit>) -> Self {
        self.permits = permits;
        self
    }

    pub fn finish(self, bytes: u64, events: u64, outcome: &'static str) {
        if self.stream {
            self.metrics.open_streams.dec();
        }
        if let Some(access) = &self.access {
            access.log(bytes, events, outcome);
        }
    }
}
