//! Which address a request is from, for access decisions, `X-Real-IP` and
//! the access log, and what `X-Forwarded-For` tells the upstream.
//!
//! The client is the connection's peer ([`Conn::peer`]: the TCP peer, or
//! the source a believed PROXY protocol header gave), unless that peer is
//! a trusted proxy (`--trusted-proxies`): then `X-Forwarded-For` is walked
//! from the right past trusted hops, as nginx's `real_ip_recursive on`
//! does (see [`crate::access::client_addr`]). From a peer that is not
//! trusted, `X-Forwarded-For` changes nothing: anyone can write one.
//!
//! `X-Forwarded-For` sent on is ingress-nginx's default
//! (`use-forwarded-headers: false`), extended to trusted peers: the chain
//! an untrusted peer sent is dropped and replaced by the peer alone, so a
//! client cannot plant addresses for the upstream to misread; a trusted
//! peer's chain is kept and the peer appended, as nginx's
//! `$proxy_add_x_forwarded_for` (and ingress-nginx with
//! `use-forwarded-headers: true`) do. Either way the upstream's rightmost
//! entry is the hop ssegate itself saw, and `X-Real-IP` the client.

use super::headers::Forwarded;
use super::{Conn, Proxy};
use crate::access::client_addr::client_address;
use http::header::HeaderName;
use std::net::IpAddr;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

impl Proxy {
    /// The address access decisions are made on: the peer, or, from a
    /// trusted proxy, the rightmost untrusted `X-Forwarded-For` entry.
    /// IPv4-mapped IPv6 addresses come back as IPv4.
    ///
    /// Allocates nothing unless the request carries more than one
    /// `X-Forwarded-For` field from a trusted peer; with nobody trusted
    /// (the default) it does not look at the headers at all.
    pub(super) fn client_ip(&self, conn: &Conn, headers: &http::HeaderMap) -> IpAddr {
        let peer = conn.peer.ip();
        if self.trusted_proxies.is_empty() {
            return client_address(peer, &[], &self.trusted_proxies);
        }
        let mut values = headers.get_all(&X_FORWARDED_FOR).iter();
        match (values.next(), values.next()) {
            (None, _) => client_address(peer, &[], &self.trusted_proxies),
            (Some(one), None) => client_address(peer, &[one.as_bytes()], &self.trusted_proxies),
            _ => {
                let all: Vec<&[u8]> = headers.get_all(&X_FORWARDED_FOR).iter().map(|v| v.as_bytes()).collect();
                client_address(peer, &all, &self.trusted_proxies)
            }
        }
    }

    /// What the upstream is told about a request's origin (see the module
    /// documentation), from its headers as they arrived.
    pub(super) fn forwarded<'a>(&self, conn: &Conn, headers: &http::HeaderMap, host: Option<&'a str>) -> Forwarded<'a> {
        Forwarded {
            peer: conn.peer.ip().to_canonical(),
            keep_chain: self.trusted_proxies.contains(conn.peer.ip()),
            client_ip: self.client_ip(conn, headers),
            host,
            port: conn.local_port,
            proto: if conn.tls { "https" } else { "http" },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn proxy(trusted: &str) -> std::sync::Arc<Proxy> {
        Proxy::builder(crate::model::empty_table())
            .trusted_proxies(trusted.parse().unwrap())
            .build()
    }

    fn conn(peer: &str) -> Conn {
        Conn {
            peer: peer.parse().unwrap(),
            local_port: 8080,
            tls: false,
            gateway_port: None,
            server_name: None,
        }
    }

    fn xff(values: &[&'static str]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_static(v));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn nobody_trusted_means_the_peer_whatever_the_header_says() {
        let p = proxy("");
        let h = xff(&["203.0.113.7"]);
        assert_eq!(p.client_ip(&conn("10.0.0.5:4000"), &h), ip("10.0.0.5"));
        // A dual-stack socket's mapped peer is reported as IPv4.
        assert_eq!(p.client_ip(&conn("[::ffff:10.0.0.5]:4000"), &h), ip("10.0.0.5"));
        let f = p.forwarded(&conn("10.0.0.5:4000"), &h, None);
        assert!(!f.keep_chain);
        assert_eq!(f.client_ip, ip("10.0.0.5"));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_when_others_are_trusted() {
        let p = proxy("10.0.0.0/8");
        let h = xff(&["203.0.113.7"]);
        assert_eq!(p.client_ip(&conn("192.0.2.1:4000"), &h), ip("192.0.2.1"));
        assert!(!p.forwarded(&conn("192.0.2.1:4000"), &h, None).keep_chain);
    }

    #[test]
    fn a_trusted_peers_chain_is_walked_from_the_right() {
        let p = proxy("10.0.0.0/8");
        let c = conn("10.0.0.5:4000");
        assert_eq!(p.client_ip(&c, &xff(&[])), ip("10.0.0.5"));
        assert_eq!(p.client_ip(&c, &xff(&["203.0.113.7"])), ip("203.0.113.7"));
        assert_eq!(
            p.client_ip(&c, &xff(&["1.1.1.1, 203.0.113.7, 10.1.1.1"])),
            ip("203.0.113.7")
        );
        // Several fields are one list, in order.
        assert_eq!(
            p.client_ip(&c, &xff(&["1.1.1.1", "203.0.113.7", "10.1.1.1, 10.2.2.2"])),
            ip("203.0.113.7")
        );
        // A malformed entry stops the walk at the last address believed.
        assert_eq!(p.client_ip(&c, &xff(&["203.0.113.7, unknown"])), ip("10.0.0.5"));
        let f = p.forwarded(&c, &xff(&["203.0.113.7"]), Some("h"));
        assert!(f.keep_chain);
        assert_eq!(f.peer, ip("10.0.0.5"));
        assert_eq!(f.client_ip, ip("203.0.113.7"));
    }
}
