//! The Gateway API part of cluster mode: reflectors over GatewayClasses,
//! Gateways, HTTPRoutes, ReferenceGrants and Namespaces (for their labels,
//! which `allowedRoutes` selectors read), translated as one set on every
//! rebuild (see `translate::gateway`).
//!
//! Watched only when the cluster serves the Gateway API (its CRDs are
//! installed); ssegate checks once at start and says which.

use crate::api::gateway::{Gateway, GatewayClass, HttpRoute, ReferenceGrant};
use crate::api::StreamPolicy;
use crate::model::{ObjectKey, SecretObject};
use crate::translate::gateway::{translate, GatewayInputs, GatewayOutcome};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::ListParams;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// Whether the apiserver serves ssegate's StreamPolicy (its CRD is
/// installed and readable).
pub async fn policies_served(client: &Client) -> bool {
    let probe = ListParams::default().limit(1);
    Api::<StreamPolicy>::all(client.clone())
        .list_metadata(&probe)
        .await
        .is_ok()
}

/// Whether the apiserver serves the Gateway API kinds ssegate reads.
pub async fn served(client: &Client) -> bool {
    let probe = ListParams::default().limit(1);
    Api::<GatewayClass>::all(client.clone())
        .list_metadata(&probe)
        .await
        .is_ok()
        && Api::<HttpRoute>::all(client.clone())
            .list_metadata(&probe)
            .await
            .is_ok()
}

/// The objects of a store, owned (the translation takes slices).
fn owned<K: Clone>(v: Vec<Arc<K>>) -> Vec<K> {
    v.into_iter().map(|a| (*a).clone()).collect()
}

/// Each Gateway's own data-plane ports (`--gateway-ports`), and where the
/// Services that reach them are, when ssegate writes them.
#[derive(Debug, Clone)]
pub struct OwnPorts {
    pub range: crate::model::PortRange,
    /// The release namespace and the label selector of the managed
    /// Services: read back so that each Gateway keeps the slot its Service
    /// targets (see [`crate::model::PortClaim::held`]).
    pub services: Option<(String, String)>,
}

/// Stores of every Gateway API kind, and the latest outcome for status.
pub struct GatewayStores {
    pub(super) classes: Store<GatewayClass>,
    pub(super) gateways: Vec<Store<Gateway>>,
    pub(super) routes: Vec<Store<HttpRoute>>,
    pub(super) grants: Vec<Store<ReferenceGrant>>,
    pub(super) namespaces: Store<Namespace>,
    /// Empty when the StreamPolicy CRD is not served.
    pub(super) policies: Vec<Store<StreamPolicy>>,
    /// The latest translation, for the Gateway API status writer.
    pub outcome: watch::Sender<Arc<GatewayOutcome>>,
    /// Fires on every GatewayClass, Gateway and HTTPRoute change, for the
    /// status writer (to put a hand edit of their status right).
    pub changed: Arc<Notify>,
    /// The ports Gateways' own listeners are given (none: shared ports only).
    gateway_ports: Option<crate::model::PortRange>,
    /// The Gateways' own Services, when ssegate writes them.
    own_services: Option<Store<Service>>,
    /// Fires on every change of them, for the status side.
    pub(super) own_services_changed: Arc<Notify>,
}

/// The writers that feed [`GatewayStores`], for the caller to spawn watches.
pub struct GatewayWriters {
    pub classes: reflector::store::Writer<GatewayClass>,
    pub gateways: Vec<(Api<Gateway>, reflector::store::Writer<Gateway>)>,
    pub routes: Vec<(Api<HttpRoute>, reflector::store::Writer<HttpRoute>)>,
    pub grants: Vec<(Api<ReferenceGrant>, reflector::store::Writer<ReferenceGrant>)>,
    pub namespaces: reflector::store::Writer<Namespace>,
    pub policies: Vec<(Api<StreamPolicy>, reflector::store::Writer<StreamPolicy>)>,
    /// The Gateways' own Services, with the label selector to watch them by.
    pub own_services: Option<(Api<Service>, String, reflector::store::Writer<Service>)>,
}

impl GatewayStores {
    pub fn new(
        client: &Client,
        scopes: &[Option<&str>],
        with_policies: bool,
        own_ports: Option<OwnPorts>,
    ) -> (Self, GatewayWriters) {
        let (classes, classes_w) = reflector::store();
        let (namespaces, namespaces_w) = reflector::store();
        let gateway_ports = own_ports.as_ref().map(|o| o.range);
        let (own_services, own_services_w) = match own_ports.and_then(|o| o.services) {
            Some((namespace, labels)) => {
                let (r, w) = reflector::store();
                (Some(r), Some((Api::namespaced(client.clone(), &namespace), labels, w)))
            }
            None => (None, None),
        };
        let mut stores = GatewayStores {
            classes,
            gateways: Vec::new(),
            routes: Vec::new(),
            grants: Vec::new(),
            namespaces,
            policies: Vec::new(),
            outcome: watch::channel(Arc::new(GatewayOutcome::default())).0,
            changed: Arc::new(Notify::new()),
            gateway_ports,
            own_services,
            own_services_changed: Arc::new(Notify::new()),
        };
        let mut writers = GatewayWriters {
            classes: classes_w,
            gateways: Vec::new(),
            routes: Vec::new(),
            grants: Vec::new(),
            namespaces: namespaces_w,
            policies: Vec::new(),
            own_services: own_services_w,
        };
        for scope in scopes {
            let (r, w) = reflector::store();
            stores.gateways.push(r);
            writers.gateways.push((super::kube_api::api(client, *scope), w));
            let (r, w) = reflector::store();
            stores.routes.push(r);
            writers.routes.push((super::kube_api::api(client, *scope), w));
            let (r, w) = reflector::store();
            stores.grants.push(r);
            writers.grants.push((super::kube_api::api(client, *scope), w));
            if with_policies {
                let (r, w) = reflector::store();
                stores.policies.push(r);
                writers.policies.push((super::kube_api::api(client, *scope), w));
            }
        }
        (stores, writers)
    }

    /// The Gateways' own Services as watched, and the signal of their
    /// changes; `None` when ssegate does not write them.
    pub fn own_services(&self) -> Option<(Store<Service>, Arc<Notify>)> {
        let store = self.own_services.clone()?;
        Some((store, self.own_services_changed.clone()))
    }

    /// Whether StreamPolicies are watched (their CRD is served).
    pub fn has_policies(&self) -> bool {
        !self.policies.is_empty()
    }

    /// The live StreamPolicy, as last seen by the watch.
    pub fn policy(&self, key: &ObjectKey) -> Option<Arc<StreamPolicy>> {
        let r = reflector::ObjectRef::new(&key.name).within(&key.namespace);
        self.policies.iter().find_map(|s| s.get(&r))
    }

    pub async fn wait_ready(&self) {
        let _ = self.classes.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
        for s in &self.gateways {
            let _ = s.wait_until_ready().await;
        }
        for s in &self.routes {
            let _ = s.wait_until_ready().await;
        }
        for s in &self.grants {
            let _ = s.wait_until_ready().await;
        }
        for s in &self.policies {
            let _ = s.wait_until_ready().await;
        }
        // Before the first build: a Gateway keeps its slot from the start.
        if let Some(s) = &self.own_services {
            let _ = s.wait_until_ready().await;
        }
    }

    /// The live GatewayClass `name`, as last seen by the watch.
    pub fn class(&self, name: &str) -> Option<Arc<GatewayClass>> {
        self.classes.get(&ObjectRef::new(name))
    }

    /// The live Gateway, as last seen by the watch.
    pub fn gateway(&self, key: &ObjectKey) -> Option<Arc<Gateway>> {
        let r = ObjectRef::new(&key.name).within(&key.namespace);
        self.gateways.iter().find_map(|s| s.get(&r))
    }

    /// The live HTTPRoute, as last seen by the watch.
    pub fn http_route(&self, key: &ObjectKey) -> Option<Arc<HttpRoute>> {
        let r = ObjectRef::new(&key.name).within(&key.namespace);
        self.routes.iter().find_map(|s| s.get(&r))
    }

    /// Every live HTTPRoute.
    pub fn http_routes(&self) -> Vec<Arc<HttpRoute>> {
        self.routes.iter().flat_map(|s| s.state()).collect()
    }

    /// Translates the current set; publishes the outcome when it changed.
    pub fn translate(&self, secrets: &BTreeMap<ObjectKey, SecretObject>) -> GatewayOutcome {
        let classes: Vec<GatewayClass> = owned(self.classes.state());
        let gateways: Vec<Gateway> = self.gateways.iter().flat_map(|s| owned(s.state())).collect();
        let routes: Vec<HttpRoute> = self.routes.iter().flat_map(|s| owned(s.state())).collect();
        let grants: Vec<ReferenceGrant> = self.grants.iter().flat_map(|s| owned(s.state())).collect();
        let policies: Vec<StreamPolicy> = self.policies.iter().flat_map(|s| owned(s.state())).collect();
        let namespace_labels = self
            .namespaces
            .state()
            .iter()
            .filter_map(|n| Some((n.metadata.name.clone()?, n.metadata.labels.clone().unwrap_or_default())))
            .collect();
        let held_ports = self
            .own_services
            .as_ref()
            .map(|s| crate::translate::gateway::service::held_ports(s.state().iter().map(|s| &**s)))
            .unwrap_or_default();
        let outcome = translate(&GatewayInputs {
            classes: &classes,
            gateways: &gateways,
            routes: &routes,
            grants: &grants,
            policies: &policies,
            namespace_labels: &namespace_labels,
            secrets,
            default_namespace: super::convert::DEFAULT_NAMESPACE,
            gateway_ports: self.gateway_ports,
            held_ports: &held_ports,
        });
        self.outcome.send_if_modified(|current| {
            let changed = **current != outcome;
            if changed {
                *current = Arc::new(outcome.clone());
            }
            changed
        });
        outcome
    }
}
