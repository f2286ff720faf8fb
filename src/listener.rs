//! What every accept loop does when `accept` fails, and the file-descriptor
//! budget that keeps the admin port answering when the proxy is full.
//!
//! `accept` fails mostly for want of file descriptors (EMFILE, ENFILE) or
//! kernel memory. Retrying at once spins: the pending connection stays in
//! the backlog, so the next `accept` fails the same way, as fast as the CPU
//! allows. Each loop therefore backs off (doubling from 10 ms up to 1 s,
//! reset by the next success), counts every failure in
//! `ssegate_accept_errors_total`, and logs at most one warning a second.

use crate::metrics::Metrics;
use std::time::{Duration, Instant};
use tracing::warn;

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const WARN_EVERY: Duration = Duration::from_secs(1);

/// Back-off and rate-limited logging for one accept loop.
pub struct AcceptErrors {
    listener: &'static str,
    backoff: Duration,
    last_warning: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    /// For the listener named `listener` in metrics and logs.
    pub fn new(listener: &'static str) -> Self {
        AcceptErrors {
            listener,
            backoff: FIRST_BACKOFF,
            last_warning: None,
            suppressed: 0,
        }
    }

    /// A successful accept: the next failure starts the back-off anew.
    pub fn succeeded(&mut self) {
        self.backoff = FIRST_BACKOFF;
    }

    /// Records `error` and returns how long to wait before accepting again.
    pub fn failed(&mut self, error: &std::io::Error, metrics: &Metrics) -> Duration {
        metrics.accept_failed(self.listener);
        let now = Instant::now();
        if self.last_warning.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
            warn!(
                listener = self.listener,
                %error,
                suppressed = self.suppressed,
                "accept failed; backing off (suppressed counts the failures not logged since the last warning)"
            );
            self.last_warning = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        wait
    }
}

/// File descriptors kept back from client connections: the admin port, the
/// upstream pools beyond one connection per stream, config files, watches
/// and the apiserver connection.
pub const RESERVED_FDS: u64 = 128;

/// The default cap on open client connections for a descriptor limit of
/// `nofile`: each proxied request may hold two descriptors (the client's
/// and the upstream's), and [`RESERVED_FDS`] stay free so that probes and
/// `/metrics` answer however many clients arrive.
pub fn default_max_connections(nofile: u64) -> usize {
    (nofile.saturating_sub(RESERVED_FDS) / 2).max(16) as usize
}

/// Connections the kernel queues for a listener before ssegate accepts
/// them (capped by `net.core.somaxconn`). Deep, because at the connection
/// limit this queue is where newcomers wait.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with [`LISTEN_BACKLOG`] and `SO_REUSEADDR`, so a
/// restarted process can bind while old connections linger in TIME_WAIT.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let metrics = Metrics::new();
        let mut errors = AcceptErrors::new("http");
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        let waits: Vec<_> = (0..9).map(|_| errors.failed(&e, &metrics)).collect();
        assert_eq!(waits[0], Duration::from_millis(10));
        assert_eq!(waits[1], Duration::from_millis(20));
        assert_eq!(waits[8], MAX_BACKOFF);
        errors.succeeded();
        assert_eq!(errors.failed(&e, &metrics), FIRST_BACKOFF);
        assert!(metrics
            .encode()
            .contains("ssegate_accept_errors_total{listener=\"http\"} 10"));
    }

    #[test]
    fn descriptor_budget_leaves_room_for_admin() {
        assert_eq!(default_max_connections(1024), 448);
        assert_eq!(default_max_connections(256), 64);
        assert_eq!(default_max_connections(100), 16);
    }
}
