//! PEM key pairs parsed and checked: used by sources (to report a broken
//! Secret in status) and by the TLS listener (to serve it). A leaf module,
//! so neither depends on the other.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Why a key pair cannot be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyPairError {
    #[error("tls.crt holds no PEM certificate")]
    NoCertificate,
    #[error("tls.crt is not valid PEM: {0}")]
    BadCertificate(String),
    #[error("tls.key holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey,
    #[error("tls.key cannot be used for signing: {0}")]
    UnusableKey(String),
    #[error("tls.key does not belong to the first certificate in tls.crt")]
    Mismatch,
}

/// Parses and checks a PEM certificate chain and private key.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, KeyPairError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KeyPairError::BadCertificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(KeyPairError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| KeyPairError::NoKey)?;
    let signing_key =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| KeyPairError::UnusableKey(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        // A key type rustls cannot compare (rare) is given the benefit of the doubt.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(_) => Err(KeyPairError::Mismatch),
    }
}
