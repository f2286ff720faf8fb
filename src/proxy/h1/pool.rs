//! Idle upstream connections, kept per data-plane thread (a connection is
//! registered with the reactor of the thread that opened it) and per
//! endpoint, newest reused first.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};

/// How long an idle upstream connection is kept.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per endpoint and thread.
pub(super) const MAX_IDLE_PER_ENDPOINT: usize = 256;
/// Idle for longer than this, a connection is probed (one read) before reuse.
const PROBE_AFTER: Duration = Duration::from_secs(2);
/// How often the whole pool is swept for expired connections.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

struct Idle {
    stream: TcpStream,
    since: Instant,
}

#[derive(Default)]
struct Pool {
    idle: HashMap<SocketAddr, Vec<Idle>>,
    swept: Option<Instant>,
}

impl Pool {
    /// Drops expired connections everywhere, at most every [`SWEEP_EVERY`],
    /// so that an endpoint no longer used does not keep sockets open.
    fn sweep(&mut self, now: Instant) {
        if self.swept.is_some_and(|at| now < at + SWEEP_EVERY) {
            return;
        }
        self.swept = Some(now);
        self.idle.retain(|_, list| {
            list.retain(|c| now < c.since + IDLE_TIMEOUT);
            !list.is_empty()
        });
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::default();
}

/// A pooled connection to `endpoint` that the upstream has not closed.
pub(super) fn checkout(endpoint: SocketAddr) -> Option<TcpStream> {
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        let now = Instant::now();
        pool.sweep(now);
        let list = pool.idle.get_mut(&endpoint)?;
        while let Some(c) = list.pop() {
            if now >= c.since + IDLE_TIMEOUT {
                continue;
            }
            if now < c.since + PROBE_AFTER {
                // Just used: a close this recent is a race a probe would
                // not win either (the request is sent again if so).
                return Some(c.stream);
            }
            // Readable while idle means closed (0) or unasked-for bytes:
            // either way not a connection to send a request on.
            let mut probe = [0u8; 1];
            match c.stream.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(c.stream),
                _ => continue,
            }
        }
        None
    })
}

/// Keeps a connection whose last exchange ended cleanly for the next request.
pub(in crate::proxy) fn checkin(endpoint: SocketAddr, stream: TcpStream) {
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        let now = Instant::now();
        pool.sweep(now);
        let list = pool.idle.entry(endpoint).or_default();
        if list.len() < MAX_IDLE_PER_ENDPOINT {
            list.push(Idle { stream, since: now });
        }
    });
}

/// A new connection to `endpoint`, with Nagle off and TCP keep-alive on.
pub(super) async fn connect(endpoint: SocketAddr, limit: Duration) -> std::io::Result<TcpStream> {
    let socket = if endpoint.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_keepalive(true)?;
    let stream = match tokio::time::timeout(limit, socket.connect(endpoint)).await {
        Ok(res) => res?,
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connect timed out after {limit:?}"),
            ))
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}
