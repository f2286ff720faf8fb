//! The addresses ssegate publishes as where clients reach it: written into
//! Ingresses' `status.loadBalancer` (see [`super::ingress`]) and Gateways'
//! `status.addresses` (see [`super::gateway`]).
//!
//! They come from `--publish-status-address` (fixed), else from
//! `--publish-service` (that Service's load-balancer ingress, else its
//! `spec.externalIPs`, else its cluster IPs), else nothing is published, as
//! ingress-nginx's flags of the same names.

use crate::model::ObjectKey;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::watcher;
use kube::{Api, Client};
use std::net::IpAddr;
use tokio::sync::watch;
use tracing::info;

/// One address where clients reach ssegate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Address {
    Ip(String),
    Hostname(String),
}

impl Address {
    /// An IP address (v4 or v6), else a DNS host name.
    pub fn parse(text: &str) -> Result<Address, String> {
        let text = text.trim();
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Address::Ip(ip.to_string()));
        }
        let host = text.to_ascii_lowercase();
        crate::api::valid_hostname(&host)
            .map(|()| Address::Hostname(host))
            .map_err(|e| format!("{text:?} is neither an IP address nor a host name: {e}"))
    }
}

/// Where the addresses come from (the controller's flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publish {
    /// Neither flag: no address is written.
    Nothing,
    /// `--publish-status-address`.
    Addresses(Vec<Address>),
    /// `--publish-service`: the addresses of ssegate's own Service.
    Service(ObjectKey),
}

impl Publish {
    /// Reads the flags: `status_address` is a comma-separated list of IPs
    /// or host names and wins; `service` is `namespace/name`, or a bare
    /// name in `default_namespace` (the release's).
    pub fn from_flags(
        status_address: Option<&str>,
        service: Option<&str>,
        default_namespace: &str,
    ) -> Result<Publish, String> {
        if let Some(list) = status_address.filter(|s| !s.trim().is_empty()) {
            let mut addresses = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(Address::parse)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("--publish-status-address: {e}"))?;
            addresses.sort();
            addresses.dedup();
            return Ok(Publish::Addresses(addresses));
        }
        let Some(service) = service.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(Publish::Nothing);
        };
        let (namespace, name) = service.split_once('/').unwrap_or((default_namespace, service));
        for part in [namespace, name] {
            crate::api::valid_dns_label(part)
                .map_err(|e| format!("--publish-service {service:?}: expected namespace/name: {e}"))?;
        }
        Ok(Publish::Service(ObjectKey::new(namespace, name)))
    }
}

/// The addresses a Service offers, in order of preference: its load
/// balancer's (`status.loadBalancer.ingress`); else `spec.externalIPs`;
/// else, for an ExternalName Service, that name; else its cluster IPs
/// (reachable from inside the cluster only, but what a ClusterIP Service
/// has, and what ingress-nginx publishes for one). Sorted, without repeats.
///
/// A `LoadBalancer` Service offers its load balancer's addresses and its
/// `externalIPs` only, as ingress-nginx reads one: while the load balancer
/// is pending that is nothing, and nothing is published, rather than a
/// cluster IP that clients outside the cluster cannot reach and that
/// would be taken back a moment later.
pub fn service_addresses(service: &Service) -> Vec<Address> {
    let from_lb: Vec<Address> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| match (&i.ip, &i.hostname) {
            (Some(ip), _) if !ip.is_empty() => Some(Address::Ip(ip.clone())),
            (_, Some(h)) if !h.is_empty() => Some(Address::Hostname(h.clone())),
            _ => None,
        })
        .collect();
    let spec = service.spec.clone().unwrap_or_default();
    let usable = |ip: &String| !ip.is_empty() && ip != "None";
    let mut addresses = if spec.type_.as_deref() == Some("LoadBalancer") {
        let external = spec.external_ips.iter().flatten().filter(|ip| usable(ip)).cloned();
        from_lb.into_iter().chain(external.map(Address::Ip)).collect()
    } else if !from_lb.is_empty() {
        from_lb
    } else if spec.external_ips.as_ref().is_some_and(|ips| ips.iter().any(usable)) {
        spec.external_ips
            .iter()
            .flatten()
            .filter(|ip| usable(ip))
            .cloned()
            .map(Address::Ip)
            .collect()
    } else if let Some(name) = spec.external_name.filter(|n| !n.is_empty()) {
        vec![Address::Hostname(name)]
    } else {
        let ips = spec
            .cluster_ips
            .unwrap_or_else(|| spec.cluster_ip.into_iter().collect());
        ips.into_iter().filter(usable).map(Address::Ip).collect()
    };
    addresses.sort();
    addresses.dedup();
    addresses
}

/// The published addresses as a channel (`None` while unknown: no flag, or
/// the Service does not exist), and the watch that keeps it current, which
/// stops when the returned guard is dropped.
pub fn feed(client: &Client, publish: &Publish) -> (watch::Receiver<Option<Vec<Address>>>, Option<AbortOnDrop>) {
    let (tx, rx) = watch::channel(None);
    let task = match publish {
        Publish::Nothing => None,
        Publish::Addresses(list) => {
            tx.send_replace(Some(list.clone()));
            None
        }
        Publish::Service(key) => Some(AbortOnDrop(tokio::spawn(watch_service(
            client.clone(),
            key.clone(),
            tx,
        )))),
    };
    (rx, task)
}

/// Aborts the task when dropped.
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    pub fn new(task: tokio::task::JoinHandle<()>) -> Self {
        AbortOnDrop(task)
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps `tx` at the addresses of the Service `key`: one small watch,
/// narrowed to that name (`None` while it does not exist).
async fn watch_service(client: Client, key: ObjectKey, tx: watch::Sender<Option<Vec<Address>>>) {
    let api: Api<Service> = Api::namespaced(client, &key.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", key.name));
    let stream = crate::sources::watch_retry::resilient(api, config, "Service");
    let mut stream = std::pin::pin!(stream);
    let mut listing: Option<Vec<Address>> = None;
    let set = |addresses: Option<Vec<Address>>| {
        tx.send_if_modified(|current| {
            if *current == addresses {
                return false;
            }
            info!(service = %key, ?addresses, "published addresses");
            *current = addresses;
            true
        });
    };
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => listing = None,
            Ok(watcher::Event::InitApply(svc)) => listing = Some(service_addresses(&svc)),
            Ok(watcher::Event::InitDone) => set(listing.take()),
            Ok(watcher::Event::Apply(svc)) => set(Some(service_addresses(&svc))),
            Ok(watcher::Event::Delete(_)) => set(None),
            Err(_) => {}
        }
    }
}
