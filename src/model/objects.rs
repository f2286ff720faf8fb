//! The plain objects the routing model is built from.
//!
//! Sources (the Kubernetes watch, the file folder) convert API objects into
//! these, so the model needs neither a kube client nor k8s-openapi.

use crate::api::RouteSpec;
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

/// A Route as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteObject {
    pub key: ObjectKey,
    /// `metadata.generation`, echoed into status as `observedGeneration`.
    pub generation: Option<i64>,
    /// Creation time in Unix milliseconds; the older Route wins a conflict.
    pub created_millis: i64,
    pub spec: RouteSpec,
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

/// Everything the routing table is built from, keyed for cheap updates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Objects {
    pub routes: BTreeMap<ObjectKey, RouteObject>,
    pub services: BTreeMap<ObjectKey, ServiceObject>,
    pub slices: BTreeMap<ObjectKey, EndpointSliceObject>,
}
