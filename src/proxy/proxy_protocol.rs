//! The PROXY protocol at the socket's edge, on the listeners that expect it
//! (`--proxy-protocol`): a TCP load balancer that does not terminate HTTP
//! (AWS NLB, HAProxy in TCP mode, most cloud L4 balancers with the option
//! on) puts a header in front of each connection saying which client it
//! relays; without it every request would seem to come from the balancer.
//!
//! On such a listener every connection must start with a v1 or v2 header,
//! read before the TLS handshake or any HTTP byte, and is closed without a
//! response (counted in `ssegate_proxy_protocol_refused_total{reason}`, and
//! logged at debug) when:
//!
//! - `untrusted`: the peer is not in `--trusted-proxies`. Checked at accept,
//!   before a byte is read: whoever else can reach the port could claim any
//!   address, and the header is the only thing the listener would believe.
//! - `missing`: the first bytes are not a PROXY header (a client that came
//!   straight to the port, or a balancer with the option off). Known from
//!   the first byte that differs, usually the very first.
//! - `malformed`: a header that breaks the format (see
//!   [`crate::access::proxy_protocol`]), or longer than
//!   [`MAX_HEADER_LEN`] bytes.
//! - `timeout`: no whole header within the client header timeout
//!   (`--client-header-timeout`, 30 s by default), counted from accept. The
//!   HTTP head then has its own header timeout, counted from after the
//!   PROXY header (and the TLS handshake).
//! - `closed`: the connection ended (or failed) before a whole header.
//!
//! A believed header with addresses makes its source the connection's
//! peer ([`super::Conn::peer`]) and its destination port the port the
//! client connected to (for `X-Forwarded-Port`); v2 `LOCAL` and v1
//! `UNKNOWN` (a balancer's own health check) keep the socket's addresses.
//! The bytes read past the header (the start of the TLS handshake or of
//! the first request, often in the same segment) are replayed to what
//! reads the connection next.
//!
//! A Gateway's own ports (`--gateway-ports`) follow the setting of their
//! kind: plain ports `http`'s, TLS ports `https`'s, since they are reached
//! through the same kind of load balancer as the shared ones.

use crate::access::proxy_protocol::{decode, Decoded, ProxyHeader, ProxyHeaderError, MAX_HEADER_LEN};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Which listeners expect a PROXY protocol header on every connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyProtocol {
    /// The plaintext listener (`--listen`) and Gateways' own plain ports.
    pub http: bool,
    /// The TLS listener (`--listen-tls`) and Gateways' own TLS ports.
    pub https: bool,
}

impl ProxyProtocol {
    /// Whether a listener of this kind expects the header.
    pub fn on(self, tls: bool) -> bool {
        if tls {
            self.https
        } else {
            self.http
        }
    }

    /// Whether any listener expects the header.
    pub fn any(self) -> bool {
        self.http || self.https
    }
}

/// The `reason` label values of `ssegate_proxy_protocol_refused_total`.
pub const REFUSED_REASONS: [&str; 5] = ["untrusted", "missing", "malformed", "timeout", "closed"];

/// Why a connection on a PROXY protocol listener is closed.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the peer is not in --trusted-proxies, so its PROXY protocol header cannot be believed")]
    Untrusted,
    #[error(transparent)]
    Header(ProxyHeaderError),
    #[error("no whole PROXY protocol header within {0:?}")]
    Timeout(Duration),
    #[error("the connection ended before a whole PROXY protocol header")]
    Closed,
    #[error("reading the PROXY protocol header failed: {0}")]
    Io(std::io::Error),
}

impl Refused {
    /// The metric's `reason` label: one of [`REFUSED_REASONS`].
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Untrusted => "untrusted",
            Refused::Header(ProxyHeaderError::NotProxyProtocol { .. }) => "missing",
            Refused::Header(_) => "malformed",
            Refused::Timeout(_) => "timeout",
            Refused::Closed | Refused::Io(_) => "closed",
        }
    }
}

/// A header read off a connection, and what came after it.
#[derive(Debug)]
pub struct Received {
    pub header: ProxyHeader,
    /// The bytes read past the header, to be replayed (empty: nothing
    /// allocated).
    pub rest: Vec<u8>,
}

/// Reads a PROXY protocol header from the start of `io`, within `timeout`.
///
/// Reads go into one buffer of [`MAX_HEADER_LEN`] bytes, which the decoder
/// never needs more than, so a header and whatever followed it in the same
/// segments usually take one read; the buffer is freed before this returns.
pub async fn read_header<S: AsyncRead + Unpin>(io: &mut S, timeout: Duration) -> Result<Received, Refused> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_HEADER_LEN];
    let mut filled = 0;
    loop {
        match decode(&buf[..filled]).map_err(Refused::Header)? {
            Decoded::Complete { header, len } => {
                return Ok(Received {
                    header,
                    rest: buf[len..filled].to_vec(),
                })
            }
            // `decode` answers this only while `filled + at_least` fits the
            // buffer, so there is room to read into.
            Decoded::Incomplete { .. } => {}
        }
        let read = tokio::time::timeout_at(deadline, io.read(&mut buf[filled..]));
        match read.await {
            Err(_) => return Err(Refused::Timeout(timeout)),
            Ok(Ok(0)) => return Err(Refused::Closed),
            Ok(Ok(n)) => filled += n,
            Ok(Err(e)) => return Err(Refused::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::AsyncWriteExt;

    const V1: &[u8] = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n";

    fn tcp(source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader::Tcp {
            source: source.parse::<SocketAddr>().unwrap(),
            destination: destination.parse::<SocketAddr>().unwrap(),
        }
    }

    #[tokio::test]
    async fn a_header_and_what_follows_it_in_the_same_read() {
        let mut input = V1.to_vec();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let got = read_header(&mut &input[..], Duration::from_secs(1)).await.unwrap();
        assert_eq!(got.header, tcp("203.0.113.7:51000", "10.0.0.1:443"));
        assert_eq!(got.rest, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_header_split_across_reads_then_nothing_more() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move { read_header(&mut server, Duration::from_secs(5)).await });
        for piece in V1.chunks(7) {
            client.write_all(piece).await.unwrap();
            tokio::task::yield_now().await;
        }
        let got = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got.header, tcp("203.0.113.7:51000", "10.0.0.1:443"));
        assert_eq!(got.rest, b"");
        assert_eq!(got.rest.capacity(), 0);
    }

    #[tokio::test]
    async fn refusals_have_their_reasons() {
        let refused = |input: &'static [u8]| async move {
            read_header(&mut &input[..], Duration::from_secs(1))
                .await
                .unwrap_err()
                .reason()
        };
        assert_eq!(refused(b"GET / HTTP/1.1\r\n\r\n").await, "missing");
        assert_eq!(refused(b"\x16\x03\x01\x02\x00").await, "missing");
        assert_eq!(refused(b"PROXY TCP4 1.2.3.4\r\n").await, "malformed");
        assert_eq!(refused(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2").await, "closed");
        assert_eq!(refused(b"").await, "closed");
        assert_eq!(Refused::Untrusted.reason(), "untrusted");
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let (_client, mut server) = tokio::io::duplex(64);
        let started = tokio::time::Instant::now();
        let read = read_header(&mut server, Duration::from_millis(200));
        let err = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("the header timeout ends the read")
            .unwrap_err();
        assert_eq!(err.reason(), "timeout");
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn listeners_by_kind() {
        let p = ProxyProtocol {
            http: true,
            https: false,
        };
        assert!(p.on(false) && !p.on(true) && p.any());
        assert!(!ProxyProtocol::default().any());
    }
}
