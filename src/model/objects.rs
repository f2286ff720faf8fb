//! The plain objects the routing model is built from.
//!
//! Sources (the Kubernetes watch, the file folder) convert API objects into
//! these, so the model needs neither a kube client nor k8s-openapi.

use crate::api::{FieldError, ValidRoute};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// `namespace/name` of an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The kinds of object that are translated into route definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// `ssegate.dev/v1alpha1` Route.
    Route,
    /// `networking.k8s.io/v1` Ingress of one of ssegate's classes.
    Ingress,
    /// `gateway.networking.k8s.io/v1` HTTPRoute attached to a Gateway of
    /// ssegate's class.
    HttpRoute,
    /// A Gateway of ssegate's class: only its listeners' certificates.
    Gateway,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Route => "Route",
            SourceKind::Ingress => "Ingress",
            SourceKind::HttpRoute => "HTTPRoute",
            SourceKind::Gateway => "Gateway",
        }
    }
}

/// One object's routing in the internal model that every input kind is
/// translated into (see `crate::translate`): hosts, matches, backends and
/// settings, and where they came from, for conflicts and status.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteDefinition {
    pub kind: SourceKind,
    pub key: ObjectKey,
    /// `metadata.generation`, echoed into status as `observedGeneration`.
    pub generation: Option<i64>,
    /// Creation time in Unix milliseconds; the older object wins a conflict.
    pub created_millis: i64,
    /// The translation, or every reason the object could not be translated.
    pub translated: Result<ValidRoute, Vec<FieldError>>,
    /// What the translation could not honour in an otherwise usable object
    /// (an unsupported annotation, an unreadable value that fell back to
    /// its default): reported to the object's owner, never fatal.
    pub warnings: Vec<String>,
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name; empty when the Service leaves it unnamed.
    pub name: String,
    pub port: u16,
}

/// A Service: only its ports matter for routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceObject {
    pub key: ObjectKey,
    pub ports: Vec<ServicePort>,
}

/// A named port of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePort {
    /// Matches the Service port's name; empty for an unnamed port.
    pub name: String,
    pub port: u16,
}

/// One endpoint of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready`; Kubernetes treats an absent value as ready.
    pub ready: bool,
}

/// An IPv4 or IPv6 EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSliceObject {
    pub key: ObjectKey,
    /// The `kubernetes.io/service-name` label.
    pub service: String,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<Endpoint>,
}

/// A certificate chain and its private key, PEM-encoded, already checked
/// by the source that read them.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsKeyPair {
    /// A hash of both PEM texts: the TLS layer parses each pair once.
    pub id: u64,
    pub cert_pem: std::sync::Arc<[u8]>,
    pub key_pem: std::sync::Arc<[u8]>,
}

impl fmt::Debug for TlsKeyPair {
    // Never print the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsKeyPair({:016x})", self.id)
    }
}

impl TlsKeyPair {
    pub fn new(cert_pem: &[u8], key_pem: &[u8]) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        cert_pem.hash(&mut h);
        key_pem.hash(&mut h);
        TlsKeyPair {
            id: h.finish(),
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        }
    }
}

/// A `kubernetes.io/tls` Secret as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretObject {
    pub key: ObjectKey,
    /// The key pair to serve: the Secret's own, or the last good one when
    /// its current contents are broken.
    pub pair: Option<TlsKeyPair>,
    /// Why the current contents cannot be used.
    pub problem: Option<String>,
}

impl SecretObject {
    /// Keeps serving `last_good` (same Secret, earlier version) when this
    /// version is broken.
    pub fn or_last_good(mut self, last_good: Option<&SecretObject>) -> Self {
        if self.pair.is_none() {
            if let Some(pair) = last_good.filter(|g| g.key == self.key).and_then(|g| g.pair.clone()) {
                self.pair = Some(pair);
                if let Some(p) = &mut self.problem {
                    p.push_str("; the last good certificate is still served");
                }
            }
        }
        self
    }
}

/// An `Opaque` Secret, as basic authentication reads it: its data, and
/// the credentials parsed from it once per format (lazily, since most such
/// Secrets are never named by an access policy). Shared by every table
/// built while the Secret is unchanged, so the credentials' cache of
/// verified passwords survives the rebuilds that endpoint changes cause;
/// a changed Secret is a new value with an empty cache.
pub struct SecretData {
    pub key: ObjectKey,
    /// A hash of the data: equal data, equal id.
    pub id: u64,
    data: BTreeMap<String, Vec<u8>>,
    auth_file: std::sync::OnceLock<Result<std::sync::Arc<crate::access::htpasswd::Credentials>, String>>,
    auth_map: std::sync::OnceLock<Result<std::sync::Arc<crate::access::htpasswd::Credentials>, String>>,
}

impl SecretData {
    pub fn new(key: ObjectKey, data: BTreeMap<String, Vec<u8>>) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        data.hash(&mut h);
        SecretData {
            key,
            id: h.finish(),
            data,
            auth_file: Default::default(),
            auth_map: Default::default(),
        }
    }

    /// The users of a basic-auth Secret in `format`, parsed on first use;
    /// or why they cannot be read (which never names a user or a hash).
    pub fn credentials(
        &self,
        format: crate::access::htpasswd::SecretType,
    ) -> Result<std::sync::Arc<crate::access::htpasswd::Credentials>, String> {
        use crate::access::htpasswd::{Credentials, SecretType};
        let cell = match format {
            SecretType::AuthFile => &self.auth_file,
            SecretType::AuthMap => &self.auth_map,
        };
        cell.get_or_init(|| {
            Credentials::from_secret(format, self.data.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map(std::sync::Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
    }
}

impl PartialEq for SecretData {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.id == other.id
    }
}

impl fmt::Debug for SecretData {
    // Never print the data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SecretData({}, {} keys, {:016x})",
            self.key,
            self.data.len(),
            self.id
        )
    }
}

/// Everything the routing table is built from, keyed for cheap updates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Objects {
    pub routes: BTreeMap<ObjectKey, RouteDefinition>,
    /// Ingresses of ssegate's classes, translated.
    pub ingresses: BTreeMap<ObjectKey, RouteDefinition>,
    /// HTTPRoutes attached to Gateways of ssegate's class, and those
    /// Gateways' certificates, translated (see `translate::gateway`).
    pub gateway_api: BTreeMap<(SourceKind, ObjectKey), RouteDefinition>,
    pub services: BTreeMap<ObjectKey, ServiceObject>,
    pub slices: BTreeMap<ObjectKey, EndpointSliceObject>,
    pub secrets: BTreeMap<ObjectKey, SecretObject>,
    /// `Opaque` Secrets: basic-auth users.
    pub secret_data: BTreeMap<ObjectKey, std::sync::Arc<SecretData>>,
    /// Each accepted Gateway's own data-plane ports (see
    /// `translate::gateway`), carried into the table unchanged.
    pub gateway_ports: super::GatewayPorts,
}
