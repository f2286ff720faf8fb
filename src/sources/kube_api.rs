//! The Kubernetes API handle every watch of the cluster source starts
//! from: shared by the core kinds' watches and the Gateway API ones.

use kube::{Api, Client, Resource};

/// The API of `K` in one namespace, or in all when `namespace` is `None`.
pub(super) fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}
