//! Test certificates (rcgen) and a TLS client that reports what it
//! negotiated.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;

/// A self-signed certificate and its key.
#[derive(Clone)]
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

pub fn cert(names: &[&str]) -> TestCert {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let c = rcgen::generate_simple_self_signed(names).unwrap();
    TestCert {
        cert_pem: c.cert.pem(),
        key_pem: c.signing_key.serialize_pem(),
        der: c.cert.der().to_vec(),
    }
}

/// A `kubernetes.io/tls` Secret holding `cert`, as YAML.
pub fn secret_yaml(name: &str, namespace: Option<&str>, cert: &TestCert) -> String {
    secret_yaml_raw(name, namespace, cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())
}

pub fn secret_yaml_raw(name: &str, namespace: Option<&str>, crt: &[u8], key: &[u8]) -> String {
    let mut secret = Secret {
        type_: Some("kubernetes.io/tls".into()),
        ..Default::default()
    };
    secret.metadata.name = Some(name.into());
    secret.metadata.namespace = namespace.map(str::to_owned);
    secret.data = Some(
        [
            ("tls.crt".to_string(), ByteString(crt.to_vec())),
            ("tls.key".to_string(), ByteString(key.to_vec())),
        ]
        .into(),
    );
    serde_yaml::to_string(&secret).unwrap()
}

/// Connects with TLS to `addr` as `server_name`, trusting only `roots`,
/// offering `alpn`.
pub async fn connect(
    addr: SocketAddr,
    server_name: &str,
    roots: &[&TestCert],
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.der.clone().into()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
    connector.connect(name, tcp).await
}

/// The leaf certificate the server presented.
pub fn presented(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}
