//! Serving connections: data-plane threads, the accept loops (plaintext
//! and TLS, each optionally behind the PROXY protocol), per-connection
//! limits, and the drain.

use super::h1::prefixed::Prefixed;
use super::proxy_protocol::Refused;
use super::{tls, tls_stream, Conn, Proxy};
use crate::access::proxy_protocol::ProxyHeader;
use crate::listener::AcceptErrors;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Data-plane threads, each running a single-threaded tokio runtime, like
/// NGINX's worker processes: a connection and its upstream connections stay
/// on one thread, with no work stealing or cross-thread wake-ups per request.
/// Connections are dealt out in turn by the accept loop.
pub struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `n` threads (at least one). They run until the process exits.
    pub fn start(n: usize) -> std::io::Result<Arc<Workers>> {
        let mut handles = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(rt.handle().clone());
            std::thread::Builder::new()
                .name(format!("ssegate-worker-{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        }
        Ok(Arc::new(Workers {
            handles,
            next: AtomicUsize::new(0),
        }))
    }

    fn pick(&self) -> tokio::runtime::Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].clone()
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}

/// How long a client may take to complete its TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// Where an accepted connection is served.
enum Placement {
    /// On the accepting runtime (no worker threads).
    Here(tokio::net::TcpStream),
    /// On a data-plane thread, whose reactor takes the socket over.
    Worker(tokio::runtime::Handle, std::net::TcpStream),
}

impl Proxy {
    /// Accepts plaintext connections (HTTP/1.1 and cleartext HTTP/2) until
    /// `shutdown` resolves. Then it drains: open event streams end at their
    /// next event boundary, requests in flight finish, and after at most
    /// `drain` it returns regardless.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        drain: Duration,
    ) -> std::io::Result<()> {
        self.serve_with(listener, None, false, shutdown, drain).await
    }

    /// As [`Proxy::serve`], for TLS: certificates by SNI from the table,
    /// HTTP/2 or HTTP/1.1 by ALPN.
    pub async fn serve_tls(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        drain: Duration,
    ) -> std::io::Result<()> {
        let config = tls::server_config(self.table.clone(), None);
        self.serve_with(listener, Some(config), false, shutdown, drain).await
    }

    /// As [`Proxy::serve`] (or [`Proxy::serve_tls`] with `tls`), on one of
    /// a Gateway's own data-plane ports (`listener`'s local port): its
    /// requests match only the rules of the Gateway that the current table
    /// assigns that port to (see [`crate::model::GatewayPorts`]).
    pub async fn serve_gateway_port(
        self: Arc<Self>,
        listener: TcpListener,
        tls: bool,
        shutdown: impl Future<Output = ()>,
        drain: Duration,
    ) -> std::io::Result<()> {
        let port = listener.local_addr()?.port();
        let config = tls.then(|| tls::server_config(self.table.clone(), Some(port)));
        self.serve_with(listener, config, true, shutdown, drain).await
    }

    async fn serve_with(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        gateway_port: bool,
        shutdown: impl Future<Output = ()>,
        drain: Duration,
    ) -> std::io::Result<()> {
        let local_port = listener.local_addr()?.port();
        let gateway_port = gateway_port.then_some(local_port);
        // A Gateway's own ports follow the shared listener of their kind.
        let proxy_protocol = self.proxy_protocol.on(tls.is_some());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut shutdown = std::pin::pin!(shutdown);
        let tracker = TaskTracker::new();
        let mut errors = AcceptErrors::new(if tls.is_some() { "https" } else { "http" });
        loop {
            // A permit first: at the connection limit, wait for one to close.
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                permit = self.connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => {
                            errors.succeeded();
                            a
                        }
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            let wait = errors.failed(&e, &self.metrics);
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                    };
                    self.metrics.connection_accepted(tls.is_some());
                    if proxy_protocol && !self.trusted_proxies.contains(peer.ip()) {
                        // Refused before a byte is read: nothing it could
                        // send would be believed.
                        self.metrics.proxy_protocol_refused(tls.is_some(), Refused::Untrusted.reason());
                        debug!(%peer, error = %Refused::Untrusted, "closing a connection on a PROXY protocol listener");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let proxy = self.clone();
                    let stop = stop_rx.clone();
                    let guard = tracker.token();
                    let tls = tls.clone();
                    let placed = match &self.workers {
                        // Handed over to a data-plane thread, whose reactor takes the socket over.
                        Some(workers) => match stream.into_std() {
                            Ok(std_stream) => Placement::Worker(workers.pick(), std_stream),
                            Err(e) => {
                                warn!(error = %e, "cannot hand a connection over");
                                continue;
                            }
                        },
                        None => Placement::Here(stream),
                    };
                    let serve = move |stream: tokio::net::TcpStream| async move {
                        let conn = Conn {
                            peer,
                            local_port,
                            tls: tls.is_some(),
                            gateway_port,
                            server_name: None,
                        };
                        if proxy_protocol {
                            // Boxed: plain listeners' connections should
                            // not carry room for the header's reading.
                            Box::pin(proxy.serve_behind_proxy_header(stream, conn, tls, stop)).await;
                        } else {
                            proxy.serve_conn(stream, conn, tls, stop).await;
                        }
                        drop(guard);
                        drop(permit);
                    };
                    match placed {
                        Placement::Here(stream) => {
                            tokio::spawn(serve(stream));
                        }
                        Placement::Worker(handle, std_stream) => {
                            handle.spawn(async move {
                                match tokio::net::TcpStream::from_std(std_stream) {
                                    Ok(stream) => serve(stream).await,
                                    Err(e) => warn!(error = %e, "cannot register a connection"),
                                }
                            });
                        }
                    }
                }
            }
        }
        drop(listener);
        info!(
            open = tracker.len(),
            tls = tls.is_some(),
            "draining: no new connections; event streams end at their next boundary"
        );
        // The drain signal ends every event stream of the process, so only
        // a shared listener's shutdown (the process's) starts it: a
        // Gateway's own port may close alone (its Gateway gone). Its
        // connections are still told to stop; ending its event streams at a
        // boundary needs a drain signal of its own (not built yet).
        if gateway_port.is_none() {
            self.drain.start();
        }
        let _ = stop_tx.send(true);
        tracker.close();
        if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
            info!(open = tracker.len(), "drain deadline passed with connections open");
        }
        Ok(())
    }

    /// On a PROXY protocol listener: reads the header (within the client
    /// header timeout; see [`super::proxy_protocol`]), then serves what
    /// follows it as the client the header names. A connection without a
    /// header to believe is closed unanswered, counted and logged.
    async fn serve_behind_proxy_header(
        self: Arc<Self>,
        mut stream: tokio::net::TcpStream,
        mut conn: Conn,
        tls: Option<Arc<rustls::ServerConfig>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let read = super::proxy_protocol::read_header(&mut stream, self.limits.header_timeout);
        let received = tokio::select! {
            received = read => received,
            // Nothing to drain yet.
            _ = stop.wait_for(|s| *s) => return,
        };
        match received {
            Ok(received) => {
                if let ProxyHeader::Tcp { source, destination } = received.header {
                    conn.peer = source;
                    conn.local_port = destination.port();
                }
                let stream = Prefixed::new(received.rest, stream);
                self.serve_conn(stream, conn, tls, stop).await;
            }
            Err(refused) => {
                self.metrics.proxy_protocol_refused(conn.tls, refused.reason());
                debug!(peer = %conn.peer, reason = refused.reason(), error = %refused, "closing a connection: no PROXY protocol header to believe");
            }
        }
    }

    /// Serves one accepted connection: the TLS handshake when `tls`, then
    /// HTTP/1.1 or HTTP/2. Generic so that a plain socket is served as it
    /// is, and only a PROXY protocol listener's pays for the replay of
    /// bytes read past the header.
    async fn serve_conn<S>(
        self: Arc<Self>,
        stream: S,
        conn: Conn,
        tls: Option<Arc<rustls::ServerConfig>>,
        stop: watch::Receiver<bool>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        match tls {
            None => super::h1::serve(self, stream, conn, true, stop).await,
            // Boxed: a plaintext connection's task then carries no room for
            // a TLS connection's state (the stream, and its HTTP/1.1 path
            // over it); a TLS connection pays the same either way.
            Some(config) => Box::pin(self.serve_tls_conn(stream, conn, config, stop)).await,
        }
    }

    /// The TLS handshake, then HTTP/1.1 or HTTP/2 as ALPN agreed.
    async fn serve_tls_conn<S>(
        self: Arc<Self>,
        stream: S,
        mut conn: Conn,
        config: Arc<rustls::ServerConfig>,
        stop: watch::Receiver<bool>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let peer = conn.peer;
        // Boxed: the handshake's state (its timer above all) is
        // freed once it is done, and plaintext connections do not
        // carry room for it. Bound by `let`, not matched on, so
        // that it is gone before the connection is served.
        let accepted = Box::pin(tokio::time::timeout(TLS_HANDSHAKE, tls_stream::accept(stream, config))).await;
        let stream = match accepted {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                self.metrics.tls_handshake_failed();
                debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                self.metrics.tls_handshake_failed();
                debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        // On a Gateway's own port, requests are checked against
        // the name asked for.
        if conn.gateway_port.is_some() {
            conn.server_name = stream
                .server_name()
                .map(|n| Arc::from(n.trim_end_matches('.').to_ascii_lowercase()));
        }
        // Serve what ALPN agreed on, and nothing else. HTTP/2's
        // connection state is boxed: the task is then as large as
        // a plaintext connection's.
        match stream.alpn_protocol() {
            Some(b"h2") => Box::pin(super::h2::serve(self, stream, conn, stop)).await,
            _ => super::h1::serve(self, stream, conn, false, stop).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's task is allocated at the size of `serve_conn`'s
    /// future. A TLS connection's state (the stream, the handshake, the
    /// protocol served over it) is boxed, so a plaintext connection's task
    /// carries little more than its HTTP/1.1 path: every idle cleartext
    /// stream pays for what this future holds.
    #[tokio::test]
    async fn a_connections_task_is_small_with_or_without_tls() {
        let proxy = Proxy::new(crate::model::empty_table());
        let (_tx, stop) = watch::channel(false);
        let conn = Conn {
            peer: "127.0.0.1:1".parse().unwrap(),
            local_port: 443,
            tls: true,
            gateway_port: None,
            server_name: None,
        };
        let (io, _peer) = tokio::io::duplex(64);
        let config = tls::server_config(proxy.table.clone(), None);
        let fut = proxy.clone().serve_conn(io, conn.clone(), Some(config), stop.clone());
        let size = std::mem::size_of_val(&fut);
        let (io, _peer) = tokio::io::duplex(64);
        let plain = super::super::h1::serve(proxy, io, conn, true, stop);
        let plain = std::mem::size_of_val(&plain);
        eprintln!("serve_conn future: {size} bytes; HTTP/1.1 alone: {plain}");
        // Debug builds lay futures out loosely (release's are smaller).
        assert!(size <= 1024, "serve_conn is {size} bytes, HTTP/1.1 alone {plain}");
        assert!(
            size <= plain + 160,
            "serve_conn is {size} bytes, HTTP/1.1 alone {plain}: room for TLS is carried by plaintext connections"
        );
        let stream = std::mem::size_of::<tls_stream::TlsStream<tokio::net::TcpStream>>();
        assert!(stream <= 64, "a TLS stream is {stream} bytes inline");
    }
}
