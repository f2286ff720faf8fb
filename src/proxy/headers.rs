//! Header rewriting between client and upstream.

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use std::net::IpAddr;

pub static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Removes hop-by-hop headers: `Connection` and every header it names, plus
/// the fixed list from RFC 9110 §7.6.1 and the legacy `Proxy-Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        &CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &TE,
        &TRAILER,
        &TRANSFER_ENCODING,
        &UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// What the upstream should learn about the original request (see
/// `client_ip.rs` for how it is decided).
pub struct Forwarded<'a> {
    /// The connection's peer (or the source a believed PROXY protocol
    /// header gave): appended to `X-Forwarded-For`.
    pub peer: IpAddr,
    /// Whether the peer is a trusted proxy, whose `X-Forwarded-For` chain
    /// is kept; otherwise the chain is replaced by the peer alone.
    pub keep_chain: bool,
    /// The client as resolved through trusted proxies: `X-Real-IP`.
    pub client_ip: IpAddr,
    /// The Host (or `:authority`) the client used, port included.
    pub host: Option<&'a str>,
    /// The port the client connected to.
    pub port: u16,
    pub proto: &'static str,
}

thread_local! {
    /// The last peer address and listener port, formatted: most requests
    /// on a thread come from the same few peers, so the header values are
    /// shared (a reference count) instead of formatted for each request.
    static FORMATTED: std::cell::RefCell<Option<(IpAddr, HeaderValue, u16, HeaderValue)>> =
        const { std::cell::RefCell::new(None) };
}

fn formatted(ip: IpAddr, port: u16) -> (HeaderValue, HeaderValue) {
    FORMATTED.with(|f| {
        let mut f = f.borrow_mut();
        match &*f {
            Some((i, iv, p, pv)) if *i == ip && *p == port => (iv.clone(), pv.clone()),
            _ => {
                let iv = HeaderValue::try_from(ip.to_string()).expect("an address is a valid header value");
                let pv = HeaderValue::from(port);
                *f = Some((ip, iv.clone(), port, pv.clone()));
                (iv, pv)
            }
        }
    })
}

/// Sets `X-Forwarded-For` (the peer appended to a trusted peer's chain,
/// or the peer alone), `X-Real-IP` (the client) and the other forwarding
/// headers, overwriting whatever the client claimed.
pub fn add_forwarded(headers: &mut HeaderMap, fwd: &Forwarded<'_>) {
    let (peer, port) = formatted(fwd.peer, fwd.port);
    let previous: Vec<&str> = if fwd.keep_chain {
        headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    } else {
        Vec::new()
    };
    let chain = if previous.is_empty() {
        Ok(peer.clone())
    } else {
        let peer = peer.to_str().expect("formatted from an address");
        HeaderValue::try_from(format!("{}, {peer}", previous.join(", ")))
    };
    match chain {
        Ok(v) => {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
        // Not reachable (the fields were valid values, joined by ", "),
        // but the peer alone is never wrong.
        Err(_) => {
            headers.insert(X_FORWARDED_FOR.clone(), peer.clone());
        }
    }
    // Behind trusted proxies the client is someone else: formatted anew.
    let real_ip = if fwd.client_ip == fwd.peer {
        peer
    } else {
        HeaderValue::try_from(fwd.client_ip.to_string()).expect("an address is a valid header value")
    };
    if let Some(host) = fwd.host {
        // The Host field itself when it says the same: no copy.
        let value = match headers.get(HOST) {
            Some(v) if v.as_bytes() == host.as_bytes() => Some(v.clone()),
            _ => HeaderValue::from_str(host).ok(),
        };
        if let Some(value) = value {
            if !headers.contains_key(HOST) {
                // HTTP/2 carries the host in :authority; HTTP/1.1 upstreams need Host.
                headers.insert(HOST, value.clone());
            }
            headers.insert(X_FORWARDED_HOST.clone(), value);
        }
    }
    headers.insert(X_FORWARDED_PORT.clone(), port);
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(fwd.proto));
    headers.insert(X_REAL_IP.clone(), real_ip);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_connection_named_and_fixed_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("last-event-id", HeaderValue::from_static("7"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["last-event-id"], "7");
    }

    fn forwarded(peer: &str, keep_chain: bool, client: &str) -> Forwarded<'static> {
        Forwarded {
            peer: peer.parse().unwrap(),
            keep_chain,
            client_ip: client.parse().unwrap(),
            host: Some("example.com:8080"),
            port: 8080,
            proto: "http",
        }
    }

    #[test]
    fn a_trusted_peers_chain_is_kept_and_appended_to() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.append("x-forwarded-for", HeaderValue::from_static("5.6.7.8, 10.0.0.2"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        add_forwarded(&mut h, &forwarded("10.0.0.9", true, "5.6.7.8"));
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["1.2.3.4, 5.6.7.8, 10.0.0.2, 10.0.0.9"]
        );
        assert_eq!(h["x-real-ip"], "5.6.7.8");
        assert_eq!(h["x-forwarded-host"], "example.com:8080");
        assert_eq!(h["x-forwarded-port"], "8080");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["host"], "example.com:8080");
    }

    #[test]
    fn an_untrusted_peers_chain_is_replaced_by_the_peer() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.append("x-forwarded-for", HeaderValue::from_static("5.6.7.8"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        add_forwarded(&mut h, &forwarded("10.0.0.9", false, "10.0.0.9"));
        assert_eq!(h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(), ["10.0.0.9"]);
        assert_eq!(h["x-real-ip"], "10.0.0.9");
    }
}
