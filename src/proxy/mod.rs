//! The data plane: proxies each request with the routing table it started
//! with.
//!
//! By job: [`server`] accepts connections (worker threads, drain) and
//! serves HTTP/2 with hyper; [`h1`] is ssegate's own HTTP/1.1 path, client
//! side and upstream side, which holds no buffer while a stream is idle;
//! [`handler`] admits a request (authority, path, route, CORS) for both;
//! over HTTP/2, [`client_conn`] holds each connection to its limits,
//! [`forward`] sends a request upstream through [`upstream`]'s hyper pools
//! and [`body`] carries the answer back. [`balance`] chooses endpoints for
//! both paths, and [`sse`] finds event boundaries. [`proxy_protocol`]
//! reads a PROXY protocol header before anything else on listeners that
//! expect one, and [`client_ip`] says which address a request is from.
//! [`tls`] configures the TLS listeners and [`tls_stream`] serves their
//! connections, holding no buffer while they are idle.

mod access;
pub mod auth_client;
mod authority;
mod balance;
mod body;
mod client_conn;
mod client_ip;
mod cors;
pub mod event_ids;
mod forward;
mod framing;
pub mod gateway_listeners;
#[cfg(test)]
mod gateway_port_tests;
mod guard;
mod h1;
mod h2;
mod handler;
mod headers;
pub mod moves;
pub mod normalize;
pub mod proxy_protocol;
mod reply;
mod server;
pub mod sse;
mod stream_clock;
mod stream_engine;
mod stream_limit;
pub mod tls;
pub mod tls_stream;

pub use access::{AccessRecord, ACCESS_TARGET};
pub use authority::{request_authority, AuthorityError};
pub use balance::EndpointLoad;
pub use body::{BodyMode, BoxError, DrainSignal, ProxyBody, SseLimits, StreamCut, UpstreamBody};
pub use client_conn::ClientLimits;
pub use headers::{add_forwarded, remove_hop_by_hop, Forwarded};
pub use proxy_protocol::ProxyProtocol;
pub use server::Workers;
pub use stream_engine::{buffer_for, Outcome};
pub use stream_limit::StreamSlot;

use crate::access::cidr::CidrSet;
use crate::metrics::Metrics;
use crate::model::SharedTable;
use balance::EndpointStates;
use std::net::SocketAddr;
use std::sync::Arc;
use stream_limit::StreamCounts;

/// The client connection a request came on.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The client's address: the TCP peer, or the source a believed PROXY
    /// protocol header reported (see [`proxy_protocol`]). Not yet the
    /// address access decisions use, which may come from
    /// `X-Forwarded-For`: that is [`Proxy::client_ip`].
    pub peer: SocketAddr,
    /// The port the client connected to, for `X-Forwarded-Port`: the
    /// listener's, or the destination a believed PROXY header reported
    /// (the load balancer's port), as ingress-nginx does with
    /// `use-proxy-protocol`.
    pub local_port: u16,
    pub tls: bool,
    /// The connection came in on a Gateway's own data-plane port (see
    /// [`crate::model::GatewayPorts`]): its requests match only the rules
    /// of the Gateway the current table assigns this port to, and nothing
    /// when it assigns it to none. `None`: a shared port, where rules of
    /// every Gateway, Route and Ingress are served.
    pub gateway_port: Option<u16>,
    /// On a Gateway's own TLS port: the server name the client asked for
    /// in its handshake (lower-case), so that a request for a host another
    /// listener of the Gateway serves is refused with 421.
    pub server_name: Option<Arc<str>>,
}

/// Everything a request handler needs.
pub struct Proxy {
    table: SharedTable,
    /// Data-plane threads that serve accepted connections; `None` serves
    /// them on the runtime that accepted them.
    workers: Option<Arc<Workers>>,
    streams: StreamCounts,
    drain: DrainSignal,
    endpoints: Arc<EndpointStates>,
    /// Tells resumable streams that endpoints left or were added.
    moves: Arc<moves::MoveSignal>,
    metrics: Arc<Metrics>,
    /// Whether each finished request or stream is logged.
    access_log: bool,
    limits: ClientLimits,
    /// The port HTTPS redirects point at (the TLS listener as clients
    /// reach it, usually through a Service on 443).
    https_port: u16,
    /// One permit per open client connection, over every listener: when
    /// none is left, accepting waits (the kernel's backlog holds newcomers)
    /// and the descriptors kept back serve the admin port.
    connections: Arc<tokio::sync::Semaphore>,
    /// Per-client limits' counts, which outlive table swaps.
    limit_state: crate::access::client_limits::LimitState,
    /// External auth answers kept for reuse, and the subrequests in flight.
    auth_cache: Arc<crate::access::auth_cache::AuthCache>,
    auth_client: auth_client::AuthClient,
    /// Password hashes checked at once on blocking threads: as many as
    /// there are cores, so a burst of bcrypt never starves the rest.
    verify_slots: Arc<tokio::sync::Semaphore>,
    /// Peers whose `X-Forwarded-For` and PROXY protocol headers are
    /// believed (`--trusted-proxies`); empty: nobody's.
    trusted_proxies: CidrSet,
    /// Which listeners expect a PROXY protocol header (`--proxy-protocol`).
    proxy_protocol: ProxyProtocol,
}

/// Builds a [`Proxy`]: the table is required, the rest has defaults
/// (fresh metrics, access log on, default limits, no worker threads).
pub struct ProxyBuilder {
    table: SharedTable,
    metrics: Option<Arc<Metrics>>,
    access_log: bool,
    workers: Option<Arc<Workers>>,
    limits: ClientLimits,
    https_port: u16,
    trusted_proxies: CidrSet,
    proxy_protocol: ProxyProtocol,
}

impl ProxyBuilder {
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn access_log(mut self, on: bool) -> Self {
        self.access_log = on;
        self
    }

    /// Serves accepted connections on `workers` instead of the accepting runtime.
    pub fn workers(mut self, workers: Arc<Workers>) -> Self {
        self.workers = Some(workers);
        self
    }

    pub fn limits(mut self, limits: ClientLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The port of `https://` redirects (default 443).
    pub fn https_port(mut self, port: u16) -> Self {
        self.https_port = port;
        self
    }

    /// The peers whose `X-Forwarded-For` and PROXY protocol headers are
    /// believed (default: none).
    pub fn trusted_proxies(mut self, trusted: CidrSet) -> Self {
        self.trusted_proxies = trusted;
        self
    }

    /// The listeners whose connections must start with a PROXY protocol
    /// header (default: none). It is believed only from a peer in
    /// [`ProxyBuilder::trusted_proxies`]; with none trusted, every
    /// connection on such a listener is refused, which the command line
    /// refuses to start with.
    pub fn proxy_protocol(mut self, listeners: ProxyProtocol) -> Self {
        self.proxy_protocol = listeners;
        self
    }

    pub fn build(self) -> Arc<Proxy> {
        Arc::new(Proxy {
            table: self.table,
            workers: self.workers,
            streams: StreamCounts::default(),
            drain: DrainSignal::default(),
            endpoints: Arc::new(EndpointStates::new()),
            moves: Arc::default(),
            metrics: self.metrics.unwrap_or_default(),
            access_log: self.access_log,
            connections: Arc::new(tokio::sync::Semaphore::new(self.limits.max_connections.max(1))),
            limits: self.limits,
            https_port: self.https_port,
            limit_state: crate::access::client_limits::LimitState::new(std::time::Instant::now()),
            auth_cache: Arc::new(crate::access::auth_cache::AuthCache::new()),
            auth_client: auth_client::AuthClient::new(auth_client::AuthClientSettings::default())
                .expect("the default auth client settings are valid"),
            verify_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            trusted_proxies: self.trusted_proxies,
            proxy_protocol: self.proxy_protocol,
        })
    }
}

impl Proxy {
    /// A proxy with its own metrics, access logging on and default limits.
    pub fn new(table: SharedTable) -> Arc<Self> {
        Proxy::builder(table).build()
    }

    pub fn builder(table: SharedTable) -> ProxyBuilder {
        ProxyBuilder {
            table,
            metrics: None,
            access_log: true,
            workers: None,
            limits: ClientLimits::default(),
            https_port: 443,
            trusted_proxies: CidrSet::default(),
            proxy_protocol: ProxyProtocol::default(),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}
