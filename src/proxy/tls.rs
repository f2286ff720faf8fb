//! TLS for the HTTPS listener: rustls with ALPN `h2` and `http/1.1`, and
//! certificates picked by SNI from the routing table.
//!
//! The resolver reads the current table on each handshake, so a rotated
//! Secret or file is used by the next handshake after the table swap.
//! Connections already open keep the certificate they were made with.
//! Each key pair is parsed once and cached by its content hash.

use super::tls_stream::NotesServerName;
use crate::certs::certified_key;
use crate::model::{SharedTable, TlsKeyPair};
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

/// Picks the certificate for a handshake from the current routing table.
#[derive(Debug)]
pub struct SniResolver {
    table: SharedTable,
    /// On a Gateway's own TLS port: that port, whose Gateway's listeners'
    /// certificates are the only ones presented.
    gateway_port: Option<u16>,
    /// Parsed key pairs by [`TlsKeyPair::id`].
    parsed: ArcSwap<HashMap<u64, Arc<CertifiedKey>>>,
}

impl SniResolver {
    pub fn new(table: SharedTable, gateway_port: Option<u16>) -> Self {
        SniResolver {
            table,
            gateway_port,
            parsed: ArcSwap::default(),
        }
    }

    fn parsed(&self, pair: &TlsKeyPair) -> Option<Arc<CertifiedKey>> {
        if let Some(k) = self.parsed.load().get(&pair.id) {
            return Some(k.clone());
        }
        // Sources checked the pair already; a failure here is unexpected.
        let key = match certified_key(&pair.cert_pem, &pair.key_pem) {
            Ok(k) => Arc::new(k),
            Err(e) => {
                tracing::warn!(error = %e, "certificate cannot be used");
                return None;
            }
        };
        let table = self.table.load();
        let live: Vec<u64> = table.certificates.values().map(|p| p.id).collect();
        self.parsed.rcu(|map| {
            // Drop pairs the table no longer uses (rotated or deleted).
            let mut map: HashMap<u64, Arc<CertifiedKey>> = map
                .iter()
                .filter(|(id, _)| live.contains(id))
                .map(|(id, k)| (*id, k.clone()))
                .collect();
            map.insert(pair.id, key.clone());
            map
        });
        Some(key)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // No SNI: only a certificate for any name (a Gateway HTTPS listener
        // without a hostname) can serve.
        let name = hello.server_name().unwrap_or_default().to_ascii_lowercase();
        let name = name.trim_end_matches('.');
        let table = self.table.load();
        let pair = match self.gateway_port {
            None => table.certificate_for(name)?,
            Some(port) => {
                let gateway = table.gateway_ports().gateway_at(port)?;
                table.gateway_certificate_for(gateway, name)?
            }
        };
        self.parsed(pair)
    }
}

/// The server configuration: TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`;
/// on a Gateway's own TLS port (`gateway_port`), only that Gateway's
/// certificates. The resolver notes each client's server name for
/// [`super::tls_stream`], which serves the connections.
pub fn server_config(table: SharedTable, gateway_port: Option<u16>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NotesServerName(SniResolver::new(table, gateway_port))));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
