//! The HTTP/1.1 client that sends external-auth subrequests (ingress-nginx's
//! `auth-url`, e.g. oauth2-proxy) and reads their answers.
//!
//! What to send and what an answer means is decided elsewhere; this file
//! only carries a prepared `http::Request<()>` to an [`AuthTarget`] and
//! brings back the answer's head ([`AuthAnswer`]) or a typed
//! [`AuthClientError`].
//!
//! It is built on hyper's low-level HTTP/1.1 connection API rather than
//! hyper-util's pooled client because keep-alive must follow ingress-nginx's
//! annotations exactly ([`PoolSettings`]): `auth-keepalive` idle connections
//! per target (0, the default, opens a connection per subrequest and sends
//! `Connection: close`), `auth-keepalive-requests` requests per connection,
//! and `auth-keepalive-timeout` of idleness. Like nginx's upstream keepalive
//! cache, an address is chosen first (round-robin) and an idle connection to
//! that address is reused if there is one, newest first; when the cache of
//! a target is full, its least recently used connection is closed.
//!
//! Each connection is driven by a task spawned on the runtime of the thread
//! that opened it. nginx keeps `auth-keepalive` connections per worker
//! process; one [`AuthClient`] per data-plane thread gives the same
//! semantics and keeps a connection's I/O on the thread that uses it.
//! Sharing one client between threads also works.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, HOST};
use http::uri::PathAndQuery;
use http::{Method, Request, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::collections::HashMap;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};

/// ingress-nginx's `auth-keepalive` default: no idle connections are kept,
/// each subrequest opens its own connection and asks the server to close it.
pub const DEFAULT_KEEPALIVE_CONNECTIONS: usize = 0;
/// ingress-nginx's `auth-keepalive-requests` default: a connection is closed
/// after this many requests.
pub const DEFAULT_KEEPALIVE_REQUESTS: u64 = 1000;
/// ingress-nginx's `auth-keepalive-timeout` default (60 s): an idle
/// connection is closed after this long.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// ingress-nginx's `proxy-connect-timeout` default, which its auth location
/// inherits. It bounds the TCP connect and the TLS handshake together, as
/// nginx's `proxy_connect_timeout` does.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// ingress-nginx's `proxy-read-timeout` default (60 s), which its auth
/// location inherits: the default, so that a migrated auth server that is
/// slow but within nginx's limit keeps working. Here it bounds the whole
/// response head from the moment the request is handed to the connection
/// (nginx's bounds each read, which is looser).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// The response timeout we recommend configuring instead of the default.
/// Every request behind the auth waits for the answer, holding the
/// client's connection: an auth server answers in milliseconds, and even
/// oauth2-proxy's session refresh (a round trip to the identity provider)
/// takes a second or two, so 10 s of silence means it is down or stuck,
/// and a quick 500 is better than a client hanging for a minute.
pub const RECOMMENDED_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a DNS lookup of an auth host may take. Cluster DNS answers in
/// milliseconds; nginx's own `resolver_timeout` (30 s) would hold every
/// request behind a resolver outage for half a minute.
pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a DNS answer is reused: ingress-nginx configures its resolver
/// with `valid=30s`, so an auth Service whose address changes is followed
/// as quickly as there.
pub const DEFAULT_DNS_CACHE_TTL: Duration = Duration::from_secs(30);
/// Cached DNS answers (one per host and port). Auth targets are a handful
/// per cluster; the bound only keeps a stream of distinct names from
/// growing the cache without end.
pub const MAX_DNS_CACHE_ENTRIES: usize = 1024;

/// The largest response head accepted, counted from the status line to the
/// empty line that ends the head, both included.
/// ingress-nginx's `proxy-buffer-size` default is 4 KiB, and deployments of
/// oauth2-proxy routinely raise it to 8–16 KiB because its session cookies
/// (split in 4 KiB chunks) come back in `Set-Cookie`; 16 KiB accepts those
/// and bounds what a misbehaving server can make us buffer.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 16 * 1024;
/// The most header fields a response may have (hyper's default, and far
/// beyond what an auth answer carries).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// How much of a response body is read (and discarded) so that the
/// connection can be reused. nginx's auth_request never uses the body;
/// auth servers send a short text or nothing. A longer body is not worth
/// reading: the connection is closed instead.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024;
/// How long the rest of a body may take to arrive after the head. The
/// answer is known from the head, so this only delays the caller when a
/// server stalls mid-body; a body normally arrives with its head. After
/// this, the connection is closed instead of reused.
pub const DEFAULT_BODY_DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// Idle connections kept over all targets of one client: bounds the
/// sockets (and the server-side resources) held for reuse whatever the
/// `auth-keepalive` values say.
pub const MAX_IDLE_CONNECTIONS: usize = 1024;
/// Targets whose pool state (idle connections, round-robin position) one
/// client remembers. Far more than a cluster has auth URLs; past it, state
/// without idle connections is forgotten first.
pub const MAX_POOLED_TARGETS: usize = 1024;
/// Addresses tried when connecting fails (refused or timed out), each with
/// its own connect timeout: nginx moves on to the next server on `error
/// timeout`, and ingress-nginx bounds tries at 3 (`proxy-next-upstream-tries`).
pub const MAX_CONNECT_ATTEMPTS: usize = 3;

/// The ALPN protocol offered over TLS: this client speaks only HTTP/1.1.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// `http` or `https`, from the auth URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthScheme {
    Http,
    Https,
}

/// Where the addresses of an auth target come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Addresses already known, e.g. a Service's ready endpoints taken from
    /// the routing model for a `name.namespace.svc[.cluster.local]` host.
    /// Each address is dialled with its own port (endpoints listen on the
    /// Service's target port); they are used in turn, round-robin.
    Fixed(Arc<[SocketAddr]>),
    /// The host is looked up with the system resolver (`tokio::net::lookup_host`)
    /// on the target's port, and the answer cached for the client's DNS TTL.
    Dns,
}

/// An auth server, as the auth URL names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthTarget {
    pub scheme: AuthScheme,
    /// The URL's host: sent as the `Host` header (without the port, as
    /// ingress-nginx does) and as the TLS server name. An IPv6 literal may
    /// be written with or without brackets.
    pub host: String,
    /// The URL's port: looked up with [`Resolution::Dns`], and part of the
    /// pool key.
    pub port: u16,
    pub addresses: Resolution,
}

/// ingress-nginx's keep-alive annotations for one auth URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// `auth-keepalive`: idle connections kept for the target; 0 keeps none
    /// and sends `Connection: close` with every subrequest.
    pub keepalive_connections: usize,
    /// `auth-keepalive-requests`: requests one connection carries before it
    /// is closed (the last one is sent with `Connection: close`). 0 keeps
    /// nothing, as ingress-nginx turns keep-alive off for it.
    pub keepalive_requests: u64,
    /// `auth-keepalive-timeout`: an idle connection is closed after this
    /// long. Zero keeps nothing, as ingress-nginx turns keep-alive off for it.
    pub keepalive_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            keepalive_connections: DEFAULT_KEEPALIVE_CONNECTIONS,
            keepalive_requests: DEFAULT_KEEPALIVE_REQUESTS,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
        }
    }
}

impl PoolSettings {
    /// Whether connections are kept after a request at all.
    pub fn keeps_alive(&self) -> bool {
        self.keepalive_connections > 0 && self.keepalive_requests > 0 && !self.keepalive_timeout.is_zero()
    }
}

/// The timeouts of one subrequest: ingress-nginx takes them from the
/// location (`proxy-connect-timeout`, `proxy-read-timeout`), so the caller
/// passes them per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Per address tried: TCP connect plus TLS handshake.
    pub connect: Duration,
    /// From handing the request to the connection until the whole response
    /// head is in.
    pub response: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            response: DEFAULT_RESPONSE_TIMEOUT,
        }
    }
}

/// What a client is built with; every field has a documented default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthClientSettings {
    pub resolve_timeout: Duration,
    pub dns_cache_ttl: Duration,
    pub max_head_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    pub body_drain_timeout: Duration,
    /// PEM certificates trusted for `https` auth URLs in addition to the
    /// Mozilla roots of `webpki-roots` (e.g. a cluster-internal CA).
    pub extra_ca_pem: Option<Vec<u8>>,
}

impl Default for AuthClientSettings {
    fn default() -> Self {
        AuthClientSettings {
            resolve_timeout: DEFAULT_RESOLVE_TIMEOUT,
            dns_cache_ttl: DEFAULT_DNS_CACHE_TTL,
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_drain_timeout: DEFAULT_BODY_DRAIN_TIMEOUT,
            extra_ca_pem: None,
        }
    }
}

/// The head of an auth server's answer. The body is read and discarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthClientConfigError {
    #[error("the extra CA is not valid PEM: {0}")]
    ExtraCaPem(rustls::pki_types::pem::Error),
    #[error("the extra CA PEM holds no certificate")]
    ExtraCaEmpty,
    #[error("an extra CA certificate was rejected: {0}")]
    ExtraCaRejected(rustls::Error),
}

/// Why a subrequest got no answer. None of these carries the request (its
/// URI or headers may hold credentials): only the target's host, the
/// address dialled and the cause.
#[derive(Debug, thiserror::Error)]
pub enum AuthClientError {
    #[error("auth target host {host:?} is not usable as a Host header and TLS server name")]
    InvalidTarget { host: String },
    #[error("resolving auth host {host:?} failed: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("resolving auth host {host:?} took longer than {after:?}")]
    ResolveTimeout { host: String, after: Duration },
    #[error("auth host {host:?} has no addresses to connect to")]
    NoAddresses { host: String },
    #[error("connecting to auth server {addr} failed: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("connecting to auth server {addr} (TCP and TLS handshake) took longer than {after:?}")]
    ConnectTimeout { addr: SocketAddr, after: Duration },
    #[error("TLS handshake with auth server {addr} failed: {source}")]
    Tls { addr: SocketAddr, source: io::Error },
    #[error("auth server {addr} sent no complete response head within {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("HTTP/1.1 exchange with auth server {addr} failed: {source}")]
    Protocol { addr: SocketAddr, source: hyper::Error },
    #[error("auth server {addr} sent a response head over {max_bytes} bytes or {max_headers} header fields")]
    TooLarge {
        addr: SocketAddr,
        max_bytes: usize,
        max_headers: usize,
    },
}

/// Sends auth subrequests; cheap to clone (clones share one pool), Send and
/// Sync. Must be used within a tokio runtime.
#[derive(Clone)]
pub struct AuthClient {
    shared: Arc<Shared>,
}

struct Shared {
    settings: AuthClientSettings,
    tls: tokio_rustls::TlsConnector,
    pool: Arc<Pool>,
    dns: Mutex<HashMap<(String, u16), CachedAddresses>>,
    next_connection_id: AtomicU64,
    connections_opened: AtomicU64,
    reused_requests: AtomicU64,
    dns_lookups: AtomicU64,
}

struct CachedAddresses {
    addresses: Arc<[SocketAddr]>,
    expires: Instant,
}

impl std::fmt::Debug for AuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthClient")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl AuthClient {
    pub fn new(settings: AuthClientSettings) -> Result<AuthClient, AuthClientConfigError> {
        let tls = tls_config(settings.extra_ca_pem.as_deref())?;
        Ok(AuthClient {
            shared: Arc::new(Shared {
                settings,
                tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
                pool: Arc::new(Pool::default()),
                dns: Mutex::default(),
                next_connection_id: AtomicU64::new(0),
                connections_opened: AtomicU64::new(0),
                reused_requests: AtomicU64::new(0),
                dns_lookups: AtomicU64::new(0),
            }),
        })
    }

    /// Connections opened (TCP connects that succeeded) since the client
    /// was built.
    pub fn connections_opened(&self) -> u64 {
        self.shared.connections_opened.load(Ordering::Relaxed)
    }

    /// Requests sent on a connection taken from the pool (a retry after a
    /// failed reuse is sent on a new connection and not counted here).
    pub fn reused_requests(&self) -> u64 {
        self.shared.reused_requests.load(Ordering::Relaxed)
    }

    /// DNS lookups made (answers served from the cache are not counted).
    pub fn dns_lookups(&self) -> u64 {
        self.shared.dns_lookups.load(Ordering::Relaxed)
    }

    /// Idle connections in the pool, over all targets.
    pub fn idle_connections(&self) -> usize {
        self.shared.pool.lock().idle_total
    }

    /// Sends `req` to `target` and returns the answer's head.
    ///
    /// The request goes out in origin form (path and query of its URI,
    /// `/` if it has none) as HTTP/1.1, with `Host` set from the target and
    /// no body. Headers that frame the message or the connection (`Host`,
    /// `Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
    /// `Transfer-Encoding`, `Upgrade`, `Content-Length` other than `0`) are
    /// dropped from `req`: the client sets what the connection needs. Header names go
    /// out in title case, as nginx writes its own.
    ///
    /// If a request on a reused connection fails before its response head
    /// (the server closed the idle connection as we sent), it is sent once
    /// more on a new connection: any method if the request was never handed
    /// to the connection, otherwise only idempotent ones (GET, HEAD,
    /// OPTIONS, TRACE, PUT, DELETE), since the server may have acted on it.
    /// Timeouts, malformed and oversize answers are not retried.
    pub async fn send(
        &self,
        target: &AuthTarget,
        pool: &PoolSettings,
        timeouts: &Timeouts,
        req: Request<()>,
    ) -> Result<AuthAnswer, AuthClientError> {
        self.send_as(target, pool, timeouts, req, None).await
    }

    /// [`send`](Self::send), with `host_as` as the `Host` header instead of
    /// the target's: Gateway API's ExternalAuth filter sends the client's
    /// own `Host` to the auth service, as Envoy keeps the request's
    /// `:authority`. The connection, the TLS server name and the pool are
    /// still the target's.
    pub async fn send_as(
        &self,
        target: &AuthTarget,
        pool: &PoolSettings,
        timeouts: &Timeouts,
        req: Request<()>,
        host_as: Option<HeaderValue>,
    ) -> Result<AuthAnswer, AuthClientError> {
        let host = unbracketed(&target.host);
        let target_host = host_header(host).ok_or_else(|| AuthClientError::InvalidTarget {
            host: target.host.clone(),
        })?;
        let server_name = match target.scheme {
            AuthScheme::Http => None,
            AuthScheme::Https => {
                Some(
                    ServerName::try_from(host.to_owned()).map_err(|_| AuthClientError::InvalidTarget {
                        host: target.host.clone(),
                    })?,
                )
            }
        };
        let head = RequestHead::new(req, host_as.unwrap_or(target_host));
        let addresses = self.addresses(target, host).await?;
        let key = PoolKey {
            scheme: target.scheme,
            host: host.to_owned(),
            port: target.port,
        };
        let first = self.shared.pool.next_address(&key, addresses.len());

        if pool.keeps_alive() {
            if let Some(conn) = self.shared.pool.checkout(&key, addresses[first], Instant::now()) {
                self.shared.reused_requests.fetch_add(1, Ordering::Relaxed);
                match self.exchange(conn, &key, &head, pool, timeouts).await {
                    Ok(answer) => return Ok(answer),
                    Err(Failure::Unsent(_)) => {}
                    Err(Failure::NoAnswer(e)) => {
                        if !is_idempotent(&head.method) {
                            return Err(e);
                        }
                    }
                    Err(Failure::Fatal(e)) => return Err(e),
                }
            }
        }
        let conn = self
            .connect(&key, server_name, &addresses, first, timeouts.connect)
            .await?;
        match self.exchange(conn, &key, &head, pool, timeouts).await {
            Ok(answer) => Ok(answer),
            Err(Failure::Unsent(e) | Failure::NoAnswer(e) | Failure::Fatal(e)) => Err(e),
        }
    }

    async fn addresses(&self, target: &AuthTarget, host: &str) -> Result<Arc<[SocketAddr]>, AuthClientError> {
        let addresses = match &target.addresses {
            Resolution::Fixed(list) => list.clone(),
            Resolution::Dns => self.lookup(host, target.port).await?,
        };
        if addresses.is_empty() {
            return Err(AuthClientError::NoAddresses {
                host: target.host.clone(),
            });
        }
        Ok(addresses)
    }

    /// The addresses of `host`, from the cache while fresh. Concurrent
    /// misses each look up (no single flight): lookups are bounded by the
    /// resolve timeout and misses are rare with a 30 s TTL.
    async fn lookup(&self, host: &str, port: u16) -> Result<Arc<[SocketAddr]>, AuthClientError> {
        let shared = &self.shared;
        let key = (host.to_owned(), port);
        {
            let cache = lock(&shared.dns);
            if let Some(hit) = cache.get(&key) {
                if Instant::now() < hit.expires {
                    return Ok(hit.addresses.clone());
                }
            }
        }
        shared.dns_lookups.fetch_add(1, Ordering::Relaxed);
        let after = shared.settings.resolve_timeout;
        let found = tokio::time::timeout(after, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| AuthClientError::ResolveTimeout {
                host: host.to_owned(),
                after,
            })?
            .map_err(|source| AuthClientError::Resolve {
                host: host.to_owned(),
                source,
            })?;
        let mut addresses: Vec<SocketAddr> = Vec::new();
        for addr in found {
            if !addresses.contains(&addr) {
                addresses.push(addr);
            }
        }
        let addresses: Arc<[SocketAddr]> = addresses.into();
        if !addresses.is_empty() {
            let now = Instant::now();
            let mut cache = lock(&shared.dns);
            if cache.len() >= MAX_DNS_CACHE_ENTRIES && !cache.contains_key(&key) {
                cache.retain(|_, entry| now < entry.expires);
                if cache.len() >= MAX_DNS_CACHE_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(
                key,
                CachedAddresses {
                    addresses: addresses.clone(),
                    expires: now + shared.settings.dns_cache_ttl,
                },
            );
        }
        Ok(addresses)
    }

    /// A new connection, trying up to [`MAX_CONNECT_ATTEMPTS`] addresses
    /// from `first` on when one refuses or does not answer. A TLS failure
    /// is returned at once: the next address would present the same
    /// certificate.
    async fn connect(
        &self,
        key: &PoolKey,
        server_name: Option<ServerName<'static>>,
        addresses: &[SocketAddr],
        first: usize,
        timeout: Duration,
    ) -> Result<Conn, AuthClientError> {
        let attempts = addresses.len().min(MAX_CONNECT_ATTEMPTS);
        let mut failure = None;
        for i in 0..attempts {
            let addr = addresses[(first + i) % addresses.len()];
            match self.connect_to(key, server_name.clone(), addr, timeout).await {
                Ok(conn) => return Ok(conn),
                Err(e @ (AuthClientError::Connect { .. } | AuthClientError::ConnectTimeout { .. })) => {
                    failure = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(failure.expect("at least one address was tried"))
    }

    async fn connect_to(
        &self,
        key: &PoolKey,
        server_name: Option<ServerName<'static>>,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Conn, AuthClientError> {
        let shared = &self.shared;
        let deadline = Instant::now() + timeout;
        let timed_out = |_| AuthClientError::ConnectTimeout { addr, after: timeout };
        let tcp = timeout_at(deadline, TcpStream::connect(addr))
            .await
            .map_err(timed_out)?
            .map_err(|source| AuthClientError::Connect { addr, source })?;
        shared.connections_opened.fetch_add(1, Ordering::Relaxed);
        // Small requests and answers: do not let Nagle hold them back.
        let _ = tcp.set_nodelay(true);
        match server_name {
            None => self.start(key, addr, tcp).await,
            Some(name) => {
                let tls = timeout_at(deadline, shared.tls.connect(name, tcp))
                    .await
                    .map_err(timed_out)?
                    .map_err(|source| AuthClientError::Tls { addr, source })?;
                self.start(key, addr, tls).await
            }
        }
    }

    /// Sets up HTTP/1.1 on a connected stream and spawns the task that
    /// drives it.
    async fn start<T>(&self, key: &PoolKey, addr: SocketAddr, io: T) -> Result<Conn, AuthClientError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let settings = &self.shared.settings;
        let (sender, connection) = http1::Builder::new()
            .title_case_headers(true)
            .max_header_size(settings.max_head_bytes)
            .max_headers(settings.max_headers)
            // hyper's read buffer holds the head while it is parsed; its
            // floor is 8 KiB.
            .max_buf_size(settings.max_head_bytes.max(8192))
            .handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(|source| AuthClientError::Protocol { addr, source })?;
        let id = self.shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let (idle_deadline, deadline_rx) = watch::channel(None);
        tokio::spawn(drive(
            connection,
            deadline_rx,
            Arc::downgrade(&self.shared.pool),
            key.clone(),
            id,
        ));
        Ok(Conn {
            id,
            addr,
            sender,
            requests: 0,
            idle_deadline,
        })
    }

    /// One request on `conn`; on an answer, the body is drained and the
    /// connection pooled if it can be reused.
    async fn exchange(
        &self,
        mut conn: Conn,
        key: &PoolKey,
        head: &RequestHead,
        pool: &PoolSettings,
        timeouts: &Timeouts,
    ) -> Result<AuthAnswer, Failure> {
        let settings = &self.shared.settings;
        let addr = conn.addr;
        let close = !pool.keeps_alive() || conn.requests.saturating_add(1) >= pool.keepalive_requests;
        conn.requests += 1;
        let request = head.to_request(close);
        let after = timeouts.response;
        let sender = &mut conn.sender;
        let sent = timeout_at(Instant::now() + after, async move {
            if let Err(e) = sender.ready().await {
                // The connection closed while idle: the request never left.
                return Err(Failure::Unsent(AuthClientError::Protocol { addr, source: e }));
            }
            match sender.try_send_request(request).await {
                Ok(response) => Ok(response),
                Err(mut e) => {
                    let unsent = e.take_message().is_some();
                    let error = e.into_error();
                    if unsent {
                        Err(Failure::Unsent(AuthClientError::Protocol { addr, source: error }))
                    } else {
                        Err(classify(error, addr, settings))
                    }
                }
            }
        })
        .await;
        let response = match sent {
            Err(_) => return Err(Failure::Fatal(AuthClientError::Timeout { addr, after })),
            Ok(result) => result?,
        };
        let (parts, body) = response.into_parts();
        let drained = drain(
            body,
            settings.max_body_bytes,
            Instant::now() + settings.body_drain_timeout,
        )
        .await;
        if drained && !close && parts.version == Version::HTTP_11 && !asks_to_close(&parts.headers) {
            self.shared.pool.checkin(key, conn, pool, Instant::now());
        }
        Ok(AuthAnswer {
            status: parts.status,
            headers: parts.headers,
        })
    }
}

/// How a request failed, which decides whether it may be sent again.
enum Failure {
    /// The request never left: safe to send again, whatever the method.
    Unsent(AuthClientError),
    /// Sent, but the connection failed before a response head: safe to send
    /// again only if the method is idempotent.
    NoAnswer(AuthClientError),
    /// A timeout or an answer that was malformed or too large.
    Fatal(AuthClientError),
}

fn classify(error: hyper::Error, addr: SocketAddr, settings: &AuthClientSettings) -> Failure {
    if error.is_parse_too_large() {
        Failure::Fatal(AuthClientError::TooLarge {
            addr,
            max_bytes: settings.max_head_bytes,
            max_headers: settings.max_headers,
        })
    } else if error.is_parse() || error.is_user() {
        Failure::Fatal(AuthClientError::Protocol { addr, source: error })
    } else {
        // Closed before a complete message, reset, or canceled.
        Failure::NoAnswer(AuthClientError::Protocol { addr, source: error })
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether the server's `Connection` header says it will close.
fn asks_to_close(headers: &HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|v| v.split(',').any(|token| token.trim().eq_ignore_ascii_case("close")))
    })
}

/// Reads and discards a body up to `max_bytes` and `deadline`; whether it
/// was read to its end (only then can the connection carry another request).
async fn drain(mut body: Incoming, max_bytes: u64, deadline: Instant) -> bool {
    if body.is_end_stream() {
        return true;
    }
    if body.size_hint().lower() > max_bytes {
        return false;
    }
    let mut read: u64 = 0;
    loop {
        match timeout_at(deadline, body.frame()).await {
            Err(_) | Ok(Some(Err(_))) => return false,
            Ok(None) => return true,
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    read = read.saturating_add(data.len() as u64);
                    if read > max_bytes {
                        return false;
                    }
                }
            }
        }
    }
}

/// The parts of a request that are sent (again, on a retry).
struct RequestHead {
    method: Method,
    path: PathAndQuery,
    headers: HeaderMap,
}

impl RequestHead {
    fn new(req: Request<()>, host: HeaderValue) -> RequestHead {
        let (parts, ()) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // A fresh map, filled in order: `Host` first, then the caller's
        // headers in their order.
        let mut headers = HeaderMap::with_capacity(parts.headers.len() + 2);
        headers.insert(HOST, host);
        for (name, value) in &parts.headers {
            // `Content-Length: 0` is true of the empty body this client
            // sends, and Gateway API's ExternalAuth asks for it; any other
            // length would desynchronise the connection.
            let empty_length = name == CONTENT_LENGTH && value == "0";
            if empty_length || !is_connection_header(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        RequestHead {
            method: parts.method,
            path,
            headers,
        }
    }

    fn to_request(&self, close: bool) -> Request<Empty<Bytes>> {
        let mut request = Request::new(Empty::new());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = Uri::from(self.path.clone());
        *request.version_mut() = Version::HTTP_11;
        let mut headers = self.headers.clone();
        if close {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        *request.headers_mut() = headers;
        request
    }
}

/// Headers this client owns: the target's `Host`, and everything that
/// frames the message or manages the connection (a stray `Content-Length`
/// on a bodyless request would desynchronise the connection).
fn is_connection_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

/// The host without the brackets of an IPv6 literal (other bracketed
/// hosts are left as they are, and refused by [`host_header`]).
fn unbracketed(host: &str) -> &str {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) if inner.parse::<Ipv6Addr>().is_ok() => inner,
        _ => host,
    }
}

/// The `Host` header for `host` (unbracketed): the name itself, an IPv6
/// literal in brackets. `None` if it is empty or holds what no host name
/// holds (a port, user info, a path, spaces, controls, non-ASCII).
fn host_header(host: &str) -> Option<HeaderValue> {
    if host.parse::<Ipv6Addr>().is_ok() {
        return HeaderValue::try_from(format!("[{host}]")).ok();
    }
    let forbidden = |b: u8| b <= b' ' || b >= 0x7f || matches!(b, b'/' | b'@' | b':' | b'?' | b'#' | b'[' | b']');
    if host.is_empty() || host.bytes().any(forbidden) {
        return None;
    }
    HeaderValue::try_from(host).ok()
}

/// Web PKI roots plus the optional extra CA, ALPN `http/1.1`, the ring
/// provider (not whatever is installed process-wide).
fn tls_config(extra_ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, AuthClientConfigError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = extra_ca_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(AuthClientConfigError::ExtraCaPem)?;
            roots.add(cert).map_err(AuthClientConfigError::ExtraCaRejected)?;
            added += 1;
        }
        if added == 0 {
            return Err(AuthClientConfigError::ExtraCaEmpty);
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(config)
}

/// Connections are pooled per auth URL scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    scheme: AuthScheme,
    host: String,
    port: u16,
}

/// A live connection held by a request or by the pool.
struct Conn {
    id: u64,
    addr: SocketAddr,
    sender: SendRequest<Empty<Bytes>>,
    /// Requests sent on it so far.
    requests: u64,
    /// Tells the connection's task when it becomes idle (and until when);
    /// `None` while a request uses it. Dropping it closes the connection.
    idle_deadline: watch::Sender<Option<Instant>>,
}

struct IdleConn {
    conn: Conn,
    deadline: Instant,
}

#[derive(Default)]
struct Pool {
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    targets: HashMap<PoolKey, TargetState>,
    idle_total: usize,
}

#[derive(Default)]
struct TargetState {
    /// Round-robin position over the target's addresses.
    next_address: usize,
    /// Least recently used first.
    idle: Vec<IdleConn>,
}

impl PoolState {
    fn target_mut(&mut self, key: &PoolKey) -> &mut TargetState {
        if self.targets.len() >= MAX_POOLED_TARGETS && !self.targets.contains_key(key) {
            self.targets.retain(|_, target| !target.idle.is_empty());
            if self.targets.len() >= MAX_POOLED_TARGETS {
                // Only idle connections are lost; requests hold theirs.
                self.targets.clear();
                self.idle_total = 0;
            }
        }
        self.targets.entry(key.clone()).or_default()
    }
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        lock(&self.state)
    }

    /// The index of the address to use next for `key`, round-robin.
    fn next_address(&self, key: &PoolKey, count: usize) -> usize {
        let mut state = self.lock();
        let target = state.target_mut(key);
        let index = target.next_address % count;
        target.next_address = index + 1;
        index
    }

    /// The most recently used idle connection to `addr` that is neither
    /// expired nor closed.
    fn checkout(&self, key: &PoolKey, addr: SocketAddr, now: Instant) -> Option<Conn> {
        let mut state = self.lock();
        let state = &mut *state;
        let target = state.targets.get_mut(key)?;
        let before = target.idle.len();
        target
            .idle
            .retain(|idle| now < idle.deadline && !idle.conn.sender.is_closed());
        let position = target.idle.iter().rposition(|idle| idle.conn.addr == addr);
        let taken = position.map(|p| target.idle.remove(p).conn);
        state.idle_total -= before - target.idle.len();
        if let Some(conn) = &taken {
            conn.idle_deadline.send_replace(None);
        }
        taken
    }

    /// Keeps `conn` for reuse if the settings allow it, closing the least
    /// recently used idle connection of the target if its cache is full.
    fn checkin(&self, key: &PoolKey, conn: Conn, settings: &PoolSettings, now: Instant) {
        if !settings.keeps_alive() || conn.requests >= settings.keepalive_requests {
            return;
        }
        let deadline = now + settings.keepalive_timeout;
        let mut state = self.lock();
        // Checked under the lock: a connection whose task ends after this
        // is removed by that task.
        if conn.sender.is_closed() || state.idle_total >= MAX_IDLE_CONNECTIONS {
            return;
        }
        let target = state.target_mut(key);
        let mut evicted = 0;
        while target.idle.len() >= settings.keepalive_connections {
            target.idle.remove(0);
            evicted += 1;
        }
        conn.idle_deadline.send_replace(Some(deadline));
        target.idle.push(IdleConn { conn, deadline });
        state.idle_total = state.idle_total + 1 - evicted;
    }

    /// Removes connection `id` if it is idle; whether it was.
    fn remove(&self, key: &PoolKey, id: u64) -> bool {
        self.remove_if(key, id, |_| true)
    }

    /// Removes connection `id` if it is idle and its deadline has passed;
    /// whether it was removed.
    fn expire(&self, key: &PoolKey, id: u64, now: Instant) -> bool {
        self.remove_if(key, id, |idle| idle.deadline <= now)
    }

    fn remove_if(&self, key: &PoolKey, id: u64, condition: impl Fn(&IdleConn) -> bool) -> bool {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(target) = state.targets.get_mut(key) else {
            return false;
        };
        let Some(position) = target.idle.iter().position(|idle| idle.conn.id == id) else {
            return false;
        };
        if !condition(&target.idle[position]) {
            return false;
        }
        target.idle.remove(position);
        state.idle_total -= 1;
        true
    }
}

/// Drives one connection until the server closes it, its idle deadline
/// passes while it sits in the pool, or its holder drops it; then makes
/// sure the pool no longer offers it.
async fn drive<T>(
    connection: http1::Connection<TokioIo<T>, Empty<Bytes>>,
    idle_deadline: watch::Receiver<Option<Instant>>,
    pool: Weak<Pool>,
    key: PoolKey,
    id: u64,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::select! {
        _ = connection => {}
        _ = idle_expiry(idle_deadline, &pool, &key, id) => {}
    }
    if let Some(pool) = pool.upgrade() {
        pool.remove(&key, id);
    }
}

/// Completes when the connection should close: its idle deadline passed
/// while it was still in the pool (the pool's lock decides between this and
/// a checkout), or its holder dropped it.
async fn idle_expiry(mut deadline: watch::Receiver<Option<Instant>>, pool: &Weak<Pool>, key: &PoolKey, id: u64) {
    loop {
        let current = *deadline.borrow_and_update();
        match current {
            None => {
                if deadline.changed().await.is_err() {
                    return;
                }
            }
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {
                        let Some(pool) = pool.upgrade() else { return };
                        if pool.expire(key, id, Instant::now()) {
                            return;
                        }
                        // Checked out (or idle again with a later deadline)
                        // just before: wait for the next change.
                        // (The borrow ends before the await: holding it
                        // would block the pool's next `send_replace`.)
                        let unchanged = *deadline.borrow() == Some(at);
                        if unchanged && deadline.changed().await.is_err() {
                            return;
                        }
                    }
                    changed = deadline.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent between statements; a panic elsewhere
    // while holding the lock does not make it unusable.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
#[path = "auth_client_tests.rs"]
mod tests;
