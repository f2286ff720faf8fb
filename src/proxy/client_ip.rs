//! The address access decisions are made on.

use super::{Conn, Proxy};

impl Proxy {
    /// The client's address: the connection's peer (trusted proxies come
    /// with the `proxy-protocol` work).
    pub(super) fn client_ip(&self, conn: &Conn, _headers: &http::HeaderMap) -> std::net::IpAddr {
        conn.peer.ip()
    }
}
