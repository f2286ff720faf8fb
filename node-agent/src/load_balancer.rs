//! A small stand-in for a cloud load balancer, in the spirit of k3s's
//! servicelb (klipper-lb): it gives every Service of `type: LoadBalancer`
//! (without a `spec.loadBalancerClass`, which names some other
//! implementation) one address from the top of the pod network
//! (`.200`-`.254`; pods take `.2`-`.199`), adds it as a /32 on the agent's
//! bridge, listens on each of the Service's TCP ports there, and forwards
//! every accepted connection to one of the Service's endpoints, round robin.
//! The address is written to `status.loadBalancer.ingress` (`ipMode: VIP`),
//! as a cloud controller does, so controllers that publish their
//! LoadBalancer address (an ingress controller's status) have one to publish.
//!
//! Endpoints come from the Service's EndpointSlices (label
//! `kubernetes.io/service-name`), the slice port named as the Service port:
//! ready endpoints only, or, when none is ready, the serving and terminating
//! ones, as kube-proxy falls back; a `nil` condition counts as kube-proxy
//! counts it (ready/serving: true, terminating: false). With no endpoint an
//! accepted connection is closed at once. The choice is made per
//! connection from the latest slices the watch delivered, so a pod going
//! unready gets no new connection from then on.
//!
//! What it is not: a kube-proxy (no ClusterIP, NodePort, UDP, session
//! affinity, `externalTrafficPolicy`, source addresses: the backend sees the
//! agent's bridge address as the client), nor reachable from beyond the
//! host and its pods (the address lives on the agent's bridge only).

use crate::Agent;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// The first and last host byte of the load-balancer addresses; pods take
/// the slots below [`FIRST`].
pub const FIRST: u8 = 200;
pub const LAST: u8 = 254;
/// How long a connection to an endpoint may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one `ip addr` change or status patch may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Addresses `.FIRST`-`.LAST` given to Services by key (`namespace/name`).
/// An address stays with its Service while it exists; a released address is
/// given out again as late as possible (the next search starts after the
/// last address given), so a client still holding the old one does not
/// reach another Service at once.
#[derive(Debug, Default)]
pub struct Pool {
    given: BTreeMap<String, u8>,
    next: u8,
}

impl Pool {
    /// The address of `key`, allocating one (preferably `want`, say the one
    /// its status already shows) when it has none; `None` when all are taken.
    pub fn allocate(&mut self, key: &str, want: Option<u8>) -> Option<u8> {
        if let Some(&a) = self.given.get(key) {
            return Some(a);
        }
        let used: HashSet<u8> = self.given.values().copied().collect();
        let n = (LAST - FIRST + 1) as usize;
        let a = want
            .filter(|w| (FIRST..=LAST).contains(w) && !used.contains(w))
            .or_else(|| {
                let start = self.next.saturating_sub(FIRST) as usize;
                (0..n)
                    .map(|k| FIRST + ((start + k) % n) as u8)
                    .find(|a| !used.contains(a))
            })?;
        self.given.insert(key.to_owned(), a);
        self.next = if a == LAST { FIRST } else { a + 1 };
        Some(a)
    }

    pub fn release(&mut self, key: &str) -> Option<u8> {
        self.given.remove(key)
    }
}

/// The Service ports the stand-in serves: (name, port) of each TCP port.
pub fn tcp_ports(svc: &Service) -> Vec<(String, u16)> {
    let ports = svc.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
    ports
        .into_iter()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| Some((p.name.unwrap_or_default(), u16::try_from(p.port).ok()?)))
        .collect()
}

/// Whether this agent serves the Service: `type: LoadBalancer` without a
/// `loadBalancerClass`.
pub fn wanted(svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
        && spec.and_then(|s| s.load_balancer_class.as_ref()).is_none()
        && svc.metadata.deletion_timestamp.is_none()
}

/// The endpoints for the Service port named `port_name`, from its
/// EndpointSlices: the ready ones, or when none is, the serving and
/// terminating ones (kube-proxy's fallback); each address once.
pub fn endpoints<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>, port_name: &str) -> Vec<SocketAddr> {
    let mut ready = Vec::new();
    let mut fallback = Vec::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in slice.endpoints.iter().flatten() {
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let c = ep.conditions.clone().unwrap_or_default();
            let is_ready = c.ready != Some(false);
            let serving = c.serving.unwrap_or(is_ready);
            let terminating = c.terminating == Some(true);
            let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
            if is_ready && !ready.contains(&addr) {
                ready.push(addr);
            } else if serving && terminating && !fallback.contains(&addr) {
                fallback.push(addr);
            }
        }
    }
    if ready.is_empty() {
        fallback
    } else {
        ready
    }
}

/// Endpoints by Service port, as the listeners read them per connection.
type Targets = Arc<HashMap<u16, Vec<SocketAddr>>>;

/// One served Service: its address, its listeners and the endpoints they use.
struct Served {
    addr: Ipv4Addr,
    listeners: HashMap<u16, (String, JoinHandle<()>)>,
    targets: watch::Sender<Targets>,
}

struct State {
    agent: Arc<Agent>,
    bridge: String,
    pool: Pool,
    services: HashMap<String, Served>,
    /// EndpointSlices by Service key, then by slice name.
    slices: HashMap<String, HashMap<String, EndpointSlice>>,
}

fn key_of(ns: &Option<String>, name: &Option<String>) -> String {
    format!(
        "{}/{}",
        ns.as_deref().unwrap_or_default(),
        name.as_deref().unwrap_or_default()
    )
}

fn slice_service_key(s: &EndpointSlice) -> Option<String> {
    let svc = s.metadata.labels.as_ref()?.get("kubernetes.io/service-name")?;
    Some(key_of(&s.metadata.namespace, &Some(svc.clone())))
}

/// Runs the stand-in until `stop` turns true, then removes every address it
/// added (its listeners go with the task).
pub async fn run(agent: Arc<Agent>, bridge: String, mut stop: watch::Receiver<bool>) {
    let mut st = State {
        agent: agent.clone(),
        bridge,
        pool: Pool::default(),
        services: HashMap::new(),
        slices: HashMap::new(),
    };
    let svcs: Api<Service> = Api::all(agent.client.clone());
    let eps: Api<EndpointSlice> = Api::all(agent.client.clone());
    let mut svc_stream = watcher(svcs, watcher::Config::default()).default_backoff().boxed();
    let slice_cfg = watcher::Config::default().labels("kubernetes.io/service-name");
    let mut slice_stream = watcher(eps, slice_cfg).default_backoff().boxed();
    let mut svc_init: Option<HashSet<String>> = None;
    let mut slice_init: Option<HashMap<String, HashMap<String, EndpointSlice>>> = None;
    info!(range = %format!("{}.{FIRST}-{LAST}", st.prefix()), "load balancer: watching Services of type LoadBalancer");
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            ev = svc_stream.next() => match ev {
                None => break,
                Some(Err(e)) => warn!("load balancer: service watch: {e}"),
                Some(Ok(watcher::Event::Init)) => svc_init = Some(HashSet::new()),
                Some(Ok(watcher::Event::InitApply(svc))) => {
                    if let Some(seen) = svc_init.as_mut() {
                        seen.insert(key_of(&svc.metadata.namespace, &svc.metadata.name));
                    }
                    st.apply(svc).await;
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    if let Some(seen) = svc_init.take() {
                        let gone: Vec<String> = st.services.keys().filter(|k| !seen.contains(*k)).cloned().collect();
                        for key in gone {
                            st.forget(&key, None).await;
                        }
                    }
                }
                Some(Ok(watcher::Event::Apply(svc))) => st.apply(svc).await,
                Some(Ok(watcher::Event::Delete(svc))) => {
                    let key = key_of(&svc.metadata.namespace, &svc.metadata.name);
                    st.forget(&key, None).await;
                }
            },
            ev = slice_stream.next() => match ev {
                None => break,
                Some(Err(e)) => warn!("load balancer: endpointslice watch: {e}"),
                Some(Ok(watcher::Event::Init)) => slice_init = Some(HashMap::new()),
                Some(Ok(watcher::Event::InitApply(s))) => {
                    if let (Some(init), Some(key)) = (slice_init.as_mut(), slice_service_key(&s)) {
                        init.entry(key).or_default().insert(s.metadata.name.clone().unwrap_or_default(), s);
                    }
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    if let Some(init) = slice_init.take() {
                        st.slices = init;
                        let keys: Vec<String> = st.services.keys().cloned().collect();
                        for key in keys {
                            st.update_targets(&key);
                        }
                    }
                }
                Some(Ok(watcher::Event::Apply(s))) => {
                    if let Some(key) = slice_service_key(&s) {
                        st.slices.entry(key.clone()).or_default().insert(s.metadata.name.clone().unwrap_or_default(), s);
                        st.update_targets(&key);
                    }
                }
                Some(Ok(watcher::Event::Delete(s))) => {
                    if let Some(key) = slice_service_key(&s) {
                        if let Some(m) = st.slices.get_mut(&key) {
                            m.remove(s.metadata.name.as_deref().unwrap_or_default());
                        }
                        st.update_targets(&key);
                    }
                }
            },
        }
    }
    let keys: Vec<String> = st.services.keys().cloned().collect();
    for key in keys {
        st.release(&key).await;
    }
    info!("load balancer: stopped, addresses removed");
}

impl State {
    fn prefix(&self) -> String {
        let [a, b, c] = self.agent.base;
        format!("{a}.{b}.{c}")
    }

    fn address(&self, host: u8) -> Ipv4Addr {
        let [a, b, c] = self.agent.base;
        Ipv4Addr::new(a, b, c, host)
    }

    /// A Service was added or changed: serve it, follow its ports, write its
    /// status; or stop serving it when it no longer wants this stand-in.
    async fn apply(&mut self, svc: Service) {
        let key = key_of(&svc.metadata.namespace, &svc.metadata.name);
        if !wanted(&svc) {
            if self.services.contains_key(&key) {
                self.forget(&key, Some(&svc)).await;
            }
            return;
        }
        if !self.services.contains_key(&key) {
            // The address the status shows, when it is one of ours (an
            // agent restart): kept, so clients need not look it up again.
            let shown = status_ips(&svc)
                .into_iter()
                .find_map(|ip| ip.parse::<Ipv4Addr>().ok())
                .filter(|ip| ip.octets()[..3] == self.agent.base)
                .map(|ip| ip.octets()[3]);
            let Some(host) = self.pool.allocate(&key, shown) else {
                warn!(service = %key, "load balancer: no free address in .{FIRST}-.{LAST}");
                return;
            };
            let addr = self.address(host);
            if let Err(e) = ip_addr(&["add", &format!("{addr}/32"), "dev", &self.bridge]).await {
                warn!(service = %key, %addr, "load balancer: {e}");
                self.pool.release(&key);
                return;
            }
            info!(service = %key, %addr, "load balancer: address allocated");
            self.event(
                &svc,
                "Normal",
                "IPAllocated",
                &format!("Assigned IP {addr} (ssegate-node-agent load balancer)"),
            )
            .await;
            let (targets, _) = watch::channel(Targets::default());
            self.services.insert(
                key.clone(),
                Served {
                    addr,
                    listeners: HashMap::new(),
                    targets,
                },
            );
        }
        self.sync_listeners(&key, &svc);
        self.update_targets(&key);
        let addr = self.services[&key].addr;
        if status_ips(&svc) != [addr.to_string()] || !status_is_vip(&svc) {
            let patch = json!({"status": {"loadBalancer": {"ingress": [{"ip": addr.to_string(), "ipMode": "VIP"}]}}});
            self.patch_status(&svc, &patch).await;
        }
    }

    /// Listeners for the Service's current TCP ports: new ones opened,
    /// removed ones closed; a renamed port keeps its listener (its
    /// endpoints follow the new name).
    fn sync_listeners(&mut self, key: &str, svc: &Service) {
        let want: HashMap<u16, String> = tcp_ports(svc).into_iter().map(|(n, p)| (p, n)).collect();
        let served = self.services.get_mut(key).expect("served");
        served.listeners.retain(|port, (name, h)| {
            let keep = want.contains_key(port) && !h.is_finished();
            if keep {
                name.clone_from(&want[port]);
            } else {
                h.abort();
            }
            keep
        });
        for (port, name) in want {
            if served.listeners.contains_key(&port) {
                continue;
            }
            let addr = SocketAddr::V4(SocketAddrV4::new(served.addr, port));
            let listener = match std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .and_then(tokio::net::TcpListener::from_std)
            {
                Ok(l) => l,
                Err(e) => {
                    warn!(service = %key, %addr, "load balancer: cannot listen: {e}");
                    continue;
                }
            };
            info!(service = %key, %addr, port_name = %name, "load balancer: listening");
            let h = tokio::spawn(serve(listener, port, served.targets.subscribe(), key.to_owned()));
            served.listeners.insert(port, (name, h));
        }
    }

    /// Recomputes the Service's endpoints from its slices, for the next
    /// connections.
    fn update_targets(&mut self, key: &str) {
        let Some(served) = self.services.get(key) else { return };
        let slices = self.slices.get(key);
        let mut map = HashMap::new();
        for (port, (name, _)) in &served.listeners {
            let eps = endpoints(slices.into_iter().flat_map(|m| m.values()), name);
            map.insert(*port, eps);
        }
        served.targets.send_if_modified(|cur| {
            if **cur == map {
                false
            } else {
                info!(service = %key, endpoints = ?map, "load balancer: endpoints");
                *cur = Arc::new(map);
                true
            }
        });
    }

    /// Stops serving `key` (deleted, or no longer of type LoadBalancer, or
    /// handed to a `loadBalancerClass`): listeners closed, address removed,
    /// and, for a Service that still exists, its status cleared.
    async fn forget(&mut self, key: &str, still: Option<&Service>) {
        self.release(key).await;
        if let Some(svc) = still {
            if !status_ips(svc).is_empty() && svc.metadata.deletion_timestamp.is_none() {
                self.patch_status(svc, &json!({"status": {"loadBalancer": {"ingress": null}}}))
                    .await;
            }
        }
    }

    async fn release(&mut self, key: &str) {
        self.pool.release(key);
        let Some(served) = self.services.remove(key) else {
            return;
        };
        for (_, (_, h)) in served.listeners {
            h.abort();
        }
        // Established connections keep their tasks; new ones are refused.
        let addr = served.addr;
        match ip_addr(&["del", &format!("{addr}/32"), "dev", &self.bridge]).await {
            Ok(()) => info!(service = %key, %addr, "load balancer: address removed"),
            Err(e) => warn!(service = %key, %addr, "load balancer: {e}"),
        }
    }

    async fn patch_status(&self, svc: &Service, patch: &serde_json::Value) {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let api: Api<Service> = Api::namespaced(self.agent.client.clone(), &ns);
        match tokio::time::timeout(
            API_TIMEOUT,
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch)),
        )
        .await
        {
            Ok(Ok(_)) => info!(service = %format!("{ns}/{name}"), status = %patch, "load balancer: status"),
            Ok(Err(e)) => warn!(service = %format!("{ns}/{name}"), "load balancer: status patch: {e}"),
            Err(_) => warn!(service = %format!("{ns}/{name}"), "load balancer: status patch timed out"),
        }
    }

    async fn event(&self, svc: &Service, kind: &str, reason: &str, message: &str) {
        self.agent
            .record("Service", &svc.metadata, "ssegate-node-agent-lb", kind, reason, message)
            .await;
    }
}

fn status_ips(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect())
        .unwrap_or_default()
}

fn status_is_vip(svc: &Service) -> bool {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .is_some_and(|i| i.len() == 1 && i[0].ip_mode.as_deref() == Some("VIP"))
}

/// `ip -4 addr ARGS`, bounded in time.
async fn ip_addr(args: &[&str]) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new("ip");
    cmd.arg("-4").arg("addr").args(args).kill_on_drop(true);
    let out = tokio::time::timeout(API_TIMEOUT, cmd.output())
        .await
        .map_err(|_| format!("ip addr {}: timed out", args.join(" ")))?
        .map_err(|e| format!("ip: {e}"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    // Already there (add) or already gone (del): the state wanted.
    if out.status.success() || err.contains("File exists") || err.contains("Cannot assign requested address") {
        Ok(())
    } else {
        Err(format!(
            "ip addr {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Accepts connections on one Service port and forwards each to the next
/// endpoint, round robin, from the endpoints current at accept time.
async fn serve(listener: tokio::net::TcpListener, port: u16, targets: watch::Receiver<Targets>, key: String) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let (inbound, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(service = %key, "load balancer: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let eps = targets.borrow().get(&port).cloned().unwrap_or_default();
        if eps.is_empty() {
            // No endpoint: closed at once, as a client of a cloud load
            // balancer with no healthy backend sees it.
            info!(service = %key, %peer, "load balancer: no endpoint, connection closed");
            drop(inbound);
            continue;
        }
        let first = next.fetch_add(1, Ordering::Relaxed);
        let key = key.clone();
        let next = next.clone();
        tokio::spawn(async move {
            let mut inbound = inbound;
            // The chosen endpoint, then (on a failed connect) the others in
            // turn, each attempt bounded.
            for k in 0..eps.len() {
                let target = eps[(first + k) % eps.len()];
                match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target)).await {
                    Ok(Ok(mut outbound)) => {
                        if k > 0 {
                            next.fetch_add(k, Ordering::Relaxed);
                        }
                        tracing::debug!(service = %key, %peer, %target, "load balancer: forwarding");
                        // Each direction's EOF is passed on as a shutdown of
                        // the other side's write half: half-closes hold.
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                    Ok(Err(e)) => warn!(service = %key, %target, "load balancer: connect: {e}"),
                    Err(_) => warn!(service = %key, %target, "load balancer: connect timed out"),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    #[test]
    fn pool_is_stable_and_reuses_late() {
        let mut p = Pool::default();
        assert_eq!(p.allocate("a/x", None), Some(200));
        assert_eq!(p.allocate("a/y", None), Some(201));
        assert_eq!(p.allocate("a/x", None), Some(200), "stable while it exists");
        assert_eq!(p.release("a/x"), Some(200));
        assert_eq!(p.allocate("a/z", None), Some(202), "a released address waits");
        assert_eq!(p.allocate("a/w", Some(230)), Some(230), "the status's address is kept");
        assert_eq!(p.allocate("a/v", Some(230)), Some(231), "unless taken");
        assert_eq!(p.allocate("a/u", Some(12)), Some(232), "or not in the range");
        for i in 0..100 {
            p.allocate(&format!("b/{i}"), None);
        }
        assert_eq!(p.given.len(), (LAST - FIRST + 1) as usize);
        assert_eq!(p.allocate("c/full", None), None);
        assert!(p.given.values().all(|a| (FIRST..=LAST).contains(a)));
    }

    /// Address, ready, serving, terminating.
    type Ep<'a> = (&'a str, Option<bool>, Option<bool>, Option<bool>);

    fn slice(port_name: Option<&str>, port: i32, eps: &[Ep]) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            ports: Some(vec![EndpointPort {
                name: port_name.map(str::to_owned),
                port: Some(port),
                ..Default::default()
            }]),
            endpoints: Some(
                eps.iter()
                    .map(|(ip, ready, serving, terminating)| Endpoint {
                        addresses: vec![ip.to_string()],
                        conditions: Some(EndpointConditions {
                            ready: *ready,
                            serving: *serving,
                            terminating: *terminating,
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn addrs(v: &[&str]) -> Vec<SocketAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn ready_endpoints_of_the_named_port() {
        let s = [
            slice(
                Some("http"),
                8081,
                &[
                    ("10.0.0.2", Some(true), Some(true), Some(false)),
                    ("10.0.0.3", Some(false), Some(false), Some(false)),
                    ("10.0.0.4", Some(false), Some(true), Some(true)),
                ],
            ),
            slice(Some("metrics"), 9090, &[("10.0.0.2", Some(true), None, None)]),
        ];
        assert_eq!(endpoints(&s, "http"), addrs(&["10.0.0.2:8081"]));
        assert_eq!(endpoints(&s, "metrics"), addrs(&["10.0.0.2:9090"]));
        assert!(endpoints(&s, "other").is_empty());
    }

    #[test]
    fn terminating_serving_endpoints_when_none_is_ready() {
        let s = [slice(
            None,
            80,
            &[
                ("10.0.0.3", Some(false), Some(false), Some(true)),
                ("10.0.0.4", Some(false), Some(true), Some(true)),
                ("10.0.0.5", Some(false), Some(true), Some(false)),
            ],
        )];
        assert_eq!(endpoints(&s, ""), addrs(&["10.0.0.4:80"]));
        let none = [slice(None, 80, &[("10.0.0.3", Some(false), Some(false), Some(true))])];
        assert!(endpoints(&none, "").is_empty());
        let unknown = [slice(None, 80, &[("10.0.0.6", None, None, None)])];
        assert_eq!(
            endpoints(&unknown, ""),
            addrs(&["10.0.0.6:80"]),
            "nil ready counts as ready, as kube-proxy reads it"
        );
    }

    #[test]
    fn which_services() {
        let svc = |ty: &str, class: Option<&str>| -> Service {
            serde_json::from_value(
                json!({"metadata": {"name": "s"}, "spec": {"type": ty, "loadBalancerClass": class,
                "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
            )
            .unwrap()
        };
        assert!(wanted(&svc("LoadBalancer", None)));
        assert!(!wanted(&svc("LoadBalancer", Some("example.com/lb"))));
        assert!(!wanted(&svc("ClusterIP", None)));
        assert_eq!(tcp_ports(&svc("LoadBalancer", None)), vec![("http".to_owned(), 80)]);
    }
}
