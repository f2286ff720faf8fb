//! Conversion of Kubernetes API objects into the model's plain objects.
//! Shared by the file source and the Kubernetes source.

/// Namespace given to objects that name none, as kubectl would.
pub const DEFAULT_NAMESPACE: &str = "default";

use crate::api::Route;
use crate::model::{
    Endpoint, EndpointSliceObject, ObjectKey, RouteDefinition, SecretObject, ServiceObject, ServicePort, SlicePort,
    TlsKeyPair,
};
use crate::translate::ingress_class::{
    IngressClassInfo, OurClasses, DEFAULT_CLASS_ANNOTATION, LEGACY_CLASS_ANNOTATION,
};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The only Secret type read: certificates for the TLS listener.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("metadata.name is required")]
    MissingName,
    #[error("EndpointSlice has no {SERVICE_NAME_LABEL} label, so no Service owns it")]
    NoServiceLabel,
    #[error("addressType {0} is not supported; use IPv4 or IPv6")]
    AddressType(String),
    #[error("endpoint address {0:?} is not an IP address")]
    BadAddress(String),
    #[error("port {0} is out of range")]
    BadPort(i32),
    #[error("Secret type {0:?} is not read; only {TLS_SECRET_TYPE} Secrets hold certificates")]
    SecretType(String),
    #[error("the Secret holds {0} bytes; at most {MAX_SECRET_DATA_BYTES} are read")]
    SecretTooLarge(usize),
}

/// `namespace/name` of an object, in `default_namespace` when it names none.
pub(crate) fn key(meta: &ObjectMeta, default_namespace: &str) -> Result<ObjectKey, ConvertError> {
    let name = meta
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(ConvertError::MissingName)?;
    let namespace = meta
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| default_namespace.to_owned());
    Ok(ObjectKey { namespace, name })
}

fn port(p: i32) -> Result<u16, ConvertError> {
    u16::try_from(p).ok().filter(|p| *p > 0).ok_or(ConvertError::BadPort(p))
}

/// `created_millis` is used when the object carries no creationTimestamp.
/// A Route translated into the internal model. `created_millis` stands in
/// for a missing `creationTimestamp`.
pub fn route(r: &Route, default_namespace: &str, created_millis: i64) -> Result<RouteDefinition, ConvertError> {
    let created = r
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .unwrap_or(created_millis);
    Ok(crate::translate::route::translate(
        key(&r.metadata, default_namespace)?,
        r.metadata.generation,
        created,
        &r.spec,
    ))
}

/// An Ingress translated into the internal model, with the class it names,
/// to be kept or dropped once every IngressClass is known.
#[derive(Debug, Clone, PartialEq)]
pub struct IngressCandidate {
    pub definition: RouteDefinition,
    /// `spec.ingressClassName`.
    pub class_name: Option<String>,
    /// The legacy `kubernetes.io/ingress.class` annotation.
    pub legacy_class: Option<String>,
}

impl IngressCandidate {
    /// Why ssegate does not serve it, or `None` when it does.
    pub fn not_ours(&self, ours: &OurClasses) -> Option<String> {
        if ours.serves(self.class_name.as_deref(), self.legacy_class.as_deref()) {
            return None;
        }
        Some(match (&self.class_name, &self.legacy_class) {
            (Some(c), _) if !c.is_empty() => format!("its ingressClassName {c:?} is not one of ssegate's classes"),
            (_, Some(c)) if !c.is_empty() => {
                format!("its {LEGACY_CLASS_ANNOTATION} annotation {c:?} is not one of ssegate's classes")
            }
            _ => "it names no class, and no class of ssegate's is the default (set spec.ingressClassName, or run with --watch-ingress-without-class)".to_owned(),
        })
    }
}

/// An Ingress translated into the internal model. `created_millis` stands
/// in for a missing `creationTimestamp`.
pub fn ingress(i: &Ingress, default_namespace: &str, created_millis: i64) -> Result<IngressCandidate, ConvertError> {
    let created = i
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .unwrap_or(created_millis);
    let annotations = i.metadata.annotations.clone().unwrap_or_default();
    let spec = i.spec.clone().unwrap_or_default();
    Ok(IngressCandidate {
        definition: crate::translate::ingress::translate(
            key(&i.metadata, default_namespace)?,
            i.metadata.generation,
            created,
            &spec,
            &annotations,
        ),
        class_name: spec.ingress_class_name.clone(),
        legacy_class: annotations.get(LEGACY_CLASS_ANNOTATION).cloned(),
    })
}

/// An IngressClass, as class selection sees it.
pub fn ingress_class(c: &IngressClass) -> Result<IngressClassInfo, ConvertError> {
    Ok(IngressClassInfo {
        name: c
            .metadata
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or(ConvertError::MissingName)?,
        controller: c.spec.as_ref().and_then(|s| s.controller.clone()).unwrap_or_default(),
        is_default: c
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
            .is_some_and(|v| v == "true"),
    })
}

pub fn service(s: &Service, default_namespace: &str) -> Result<ServiceObject, ConvertError> {
    let ports = s
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| {
            Ok(ServicePort {
                name: p.name.clone().unwrap_or_default(),
                port: port(p.port)?,
            })
        })
        .collect::<Result<_, ConvertError>>()?;
    Ok(ServiceObject {
        key: key(&s.metadata, default_namespace)?,
        ports,
    })
}

pub fn endpoint_slice(e: &EndpointSlice, default_namespace: &str) -> Result<EndpointSliceObject, ConvertError> {
    let key = key(&e.metadata, default_namespace)?;
    let service = e
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .cloned()
        .ok_or(ConvertError::NoServiceLabel)?;
    if e.address_type != "IPv4" && e.address_type != "IPv6" {
        return Err(ConvertError::AddressType(e.address_type.clone()));
    }
    let mut ports = Vec::new();
    for p in e.ports.iter().flatten() {
        if let Some(n) = p.port {
            ports.push(SlicePort {
                name: p.name.clone().unwrap_or_default(),
                port: port(n)?,
            });
        }
    }
    let endpoints = e
        .endpoints
        .iter()
        .flatten()
        .map(|ep| {
            let addresses = ep
                .addresses
                .iter()
                .map(|a| a.parse().map_err(|_| ConvertError::BadAddress(a.clone())))
                .collect::<Result<_, _>>()?;
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            Ok(Endpoint { addresses, ready })
        })
        .collect::<Result<_, ConvertError>>()?;
    Ok(EndpointSliceObject {
        key,
        service,
        ports,
        endpoints,
    })
}

/// The largest Secret data read for basic authentication: Kubernetes'
/// own limit for a Secret.
pub const MAX_SECRET_DATA_BYTES: usize = 1 << 20;

/// A Secret's data, for basic authentication (`stringData`, which files
/// may use, over `data`). Any type but `kubernetes.io/tls` is read: users
/// make these Secrets with `kubectl create secret generic`.
pub fn secret_data(s: &Secret, default_namespace: &str) -> Result<crate::model::SecretData, ConvertError> {
    let key = key(&s.metadata, default_namespace)?;
    let type_ = s.type_.as_deref().unwrap_or("Opaque");
    if type_ == TLS_SECRET_TYPE {
        return Err(ConvertError::SecretType(type_.to_owned()));
    }
    let mut data: std::collections::BTreeMap<String, Vec<u8>> =
        s.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    for (k, v) in s.string_data.iter().flatten() {
        data.insert(k.clone(), v.as_bytes().to_vec());
    }
    let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_SECRET_DATA_BYTES {
        return Err(ConvertError::SecretTooLarge(size));
    }
    Ok(crate::model::SecretData::new(key, data))
}

/// A `kubernetes.io/tls` Secret. A Secret whose certificate or key is
/// missing or unusable still converts, carrying the reason, so the Routes
/// that name it can say why.
pub fn tls_secret(s: &Secret, default_namespace: &str) -> Result<SecretObject, ConvertError> {
    let key = key(&s.metadata, default_namespace)?;
    let type_ = s.type_.as_deref().unwrap_or("Opaque");
    if type_ != TLS_SECRET_TYPE {
        return Err(ConvertError::SecretType(type_.to_owned()));
    }
    // stringData is write-only in a cluster, but files may use it.
    let field = |name: &str| -> Option<Vec<u8>> {
        s.string_data
            .as_ref()
            .and_then(|d| d.get(name))
            .map(|v| v.as_bytes().to_vec())
            .or_else(|| s.data.as_ref().and_then(|d| d.get(name)).map(|b| b.0.clone()))
    };
    let tls = match (field("tls.crt"), field("tls.key")) {
        (None, _) => Err("has no tls.crt".to_owned()),
        (_, None) => Err("has no tls.key".to_owned()),
        (Some(cert), Some(private)) => crate::certs::certified_key(&cert, &private)
            .map(|_| TlsKeyPair::new(&cert, &private))
            .map_err(|e| e.to_string()),
    };
    let (pair, problem) = match tls {
        Ok(pair) => (Some(pair), None),
        Err(why) => (None, Some(why)),
    };
    Ok(SecretObject { key, pair, problem })
}
