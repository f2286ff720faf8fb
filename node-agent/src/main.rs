//! `ssegate-node-agent`: test support that plays the kubelet without
//! containers. It registers a Node, keeps its Lease renewed, and runs every
//! Pod bound to the node as local processes, each in a network namespace of
//! its own, mapping container images to local executables through an
//! explicit table. Not part of ssegate: only the tests use it.
//!
//! Pods get ConfigMap, Secret and emptyDir volumes ([`volume`]), and Services
//! of `type: LoadBalancer` an address of the pod network that forwards to
//! their ready endpoints ([`load_balancer`], a stand-in for a cloud's).

mod load_balancer;
mod net;
mod pod;
mod probe;
mod spec;
mod volume;

use anyhow::Context;
use base64::Engine;
use clap::Parser;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::Client;
use serde_json::json;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "ssegate-node-agent",
    about = "A kubelet stand-in that runs pods as local processes (test support)"
)]
pub struct Args {
    /// The Node's name; Pods with this `spec.nodeName` run here.
    #[arg(long)]
    node: String,
    /// Kubeconfig file (else the usual inference: $KUBECONFIG, in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Image table, YAML or JSON: `image: /path/to/executable`.
    #[arg(long)]
    images: PathBuf,
    /// Pod network: this /24 (first three octets) on a bridge; `.1` is the
    /// bridge (the pods' gateway), pods get `.2` to `.199`, LoadBalancer
    /// Services `.200` to `.254`.
    #[arg(long, default_value = "10.213.250")]
    pod_network: String,
    /// Name prefix of the pods' network namespaces, veths and the bridge
    /// (`PREFIXbr`), at most 8 characters.
    #[arg(long, default_value = "sgna")]
    netns_prefix: String,
    /// The Node's InternalIP and the pods' hostIP.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: Ipv4Addr,
    /// Per-pod folders (logs, service-account files).
    #[arg(long, default_value = "/tmp/ssegate-node-agent")]
    root_dir: PathBuf,
    /// Allocatable and capacity.
    #[arg(long, default_value = "4")]
    cpu: String,
    #[arg(long, default_value = "8Gi")]
    memory: String,
    #[arg(long, default_value = "64")]
    pods: String,
    /// Charts request it (the ssegate chart does): without it nothing schedules.
    #[arg(long, default_value = "20Gi")]
    ephemeral_storage: String,
    /// The apiserver address pods reach through their 127.0.0.1:443 (a
    /// forward the agent runs in each pod's namespace); default: the
    /// kubeconfig's server; `none` turns the forward off.
    #[arg(long)]
    apiserver: Option<String>,
    /// First restart back-off in milliseconds (doubles per restart, 5 min cap).
    #[arg(long, default_value_t = 10_000)]
    backoff_ms: u64,
    /// Lease renewal and node status heartbeat period, in seconds.
    #[arg(long, default_value_t = 10)]
    heartbeat_seconds: u64,
    /// Serve Services of `type: LoadBalancer` (see `load_balancer.rs`);
    /// `--load-balancer=false` leaves them to something else.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    load_balancer: bool,
}

impl Args {
    pub fn backoff(&self) -> Duration {
        Duration::from_millis(self.backoff_ms)
    }
}

/// Pod addresses `.2` to `.199`: the rest of the /24 is the load
/// balancer's ([`load_balancer::FIRST`]).
const POD_SLOTS: usize = load_balancer::FIRST as usize - 2;
const _: () = assert!(POD_SLOTS + 1 < load_balancer::FIRST as usize);

/// What every pod worker shares.
pub struct Agent {
    pub args: Args,
    pub client: Client,
    pub table: spec::ImageTable,
    pub base: [u8; 3],
    /// The apiserver's CA as PEM, for `ca.crt` when `kube-root-ca.crt` is absent.
    pub ca_pem: String,
    /// `host:port` the in-pod apiserver forward connects to.
    pub apiserver: Option<String>,
    /// Pod address slots in use, and where the next search starts.
    slots: Mutex<(Vec<bool>, usize)>,
}

impl Agent {
    /// The next free pod address after the last one given: an address is
    /// reused as late as possible, so no host or pod still holds the old
    /// pod's MAC for it in its neighbour table.
    pub fn take_slot(&self) -> Option<u8> {
        let mut s = self.slots.lock().expect("slots");
        let (used, next) = &mut *s;
        let n = used.len();
        let i = (0..n).map(|k| (*next + k) % n).find(|&i| !used[i])?;
        used[i] = true;
        *next = (i + 1) % n;
        Some(i as u8)
    }

    pub fn free_slot(&self, slot: u8) {
        self.slots.lock().expect("slots").0[slot as usize] = false;
    }

    /// Writes a core/v1 Event about `pod` (failures are only logged).
    pub async fn event(&self, pod: &Pod, kind: &str, reason: &str, message: &str) {
        self.record("Pod", &pod.metadata, "kubelet", kind, reason, message)
            .await;
    }

    /// Writes a core/v1 Event about a namespaced object of `object_kind`
    /// from `component`, within 10 s; failures are only logged.
    pub async fn record(
        &self,
        object_kind: &str,
        meta: &kube::api::ObjectMeta,
        component: &str,
        kind: &str,
        reason: &str,
        message: &str,
    ) {
        let ns = meta.namespace.clone().unwrap_or_default();
        let now = pod::now_rfc3339();
        let ev = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": format!("{}.", meta.name.clone().unwrap_or_default()), "namespace": ns},
            "involvedObject": {
                "apiVersion": "v1", "kind": object_kind, "namespace": ns,
                "name": meta.name, "uid": meta.uid,
            },
            "type": kind,
            "reason": reason,
            "message": message,
            "source": {"component": component, "host": self.args.node},
            "reportingComponent": "ssegate-node-agent",
            "reportingInstance": self.args.node,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        let ev: Event = match serde_json::from_value(ev) {
            Ok(ev) => ev,
            Err(e) => return warn!("event: {e}"),
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        match tokio::time::timeout(Duration::from_secs(10), api.create(&PostParams::default(), &ev)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!("event: {e}"),
            Err(_) => warn!("event: timed out"),
        }
    }
}

fn micro_time() -> String {
    let t = k8s_openapi::jiff::Timestamp::now();
    format!("{}.{:06}Z", t.strftime("%Y-%m-%dT%H:%M:%S"), t.subsec_microsecond())
}

/// Creates the Node if needed, then posts its status: Ready, capacity,
/// addresses.
async fn register(agent: &Agent, since: &str) -> anyhow::Result<()> {
    let a = &agent.args;
    let nodes: Api<Node> = Api::all(agent.client.clone());
    if nodes.get_opt(&a.node).await?.is_none() {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": a.node, "labels": {
                "kubernetes.io/hostname": a.node,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            }},
        }))?;
        nodes
            .create(&PostParams::default(), &node)
            .await
            .context("create Node")?;
        info!(node = %a.node, "node registered");
    }
    heartbeat(agent, since).await
}

async fn heartbeat(agent: &Agent, since: &str) -> anyhow::Result<()> {
    let a = &agent.args;
    let nodes: Api<Node> = Api::all(agent.client.clone());
    let now = pod::now_rfc3339();
    let resources = json!({"cpu": a.cpu, "memory": a.memory, "pods": a.pods, "ephemeral-storage": a.ephemeral_storage});
    let status = json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "ssegate-node-agent is posting ready status",
            "lastHeartbeatTime": now, "lastTransitionTime": since,
        }],
        "addresses": [{"type": "InternalIP", "address": a.node_ip.to_string()}, {"type": "Hostname", "address": a.node}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "ssegate-node-agent",
            "containerRuntimeVersion": "ssegate-node-agent://0", "kubeletVersion": "v0.0.0-ssegate-node-agent",
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
        },
    }});
    let node = nodes
        .patch_status(&a.node, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .context("node status")?;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(agent.client.clone(), "kube-node-lease");
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": a.node, "namespace": "kube-node-lease", "ownerReferences": [{
            "apiVersion": "v1", "kind": "Node", "name": a.node, "uid": node.metadata.uid,
        }]},
        "spec": {"holderIdentity": a.node, "leaseDurationSeconds": 40, "renewTime": micro_time()},
    });
    leases
        .patch(
            &a.node,
            &PatchParams::apply("ssegate-node-agent").force(),
            &Patch::Apply(&lease),
        )
        .await
        .context("node lease")?;
    Ok(())
}

fn ca_pem(config: &kube::Config) -> String {
    let mut out = String::new();
    for der in config.root_cert.iter().flatten() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).expect("base64"));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    anyhow::ensure!(args.netns_prefix.len() <= 8, "--netns-prefix: at most 8 characters");
    let octets: Vec<u8> = args
        .pod_network
        .split('.')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("--pod-network: three octets")?;
    let base: [u8; 3] = octets
        .try_into()
        .map_err(|_| anyhow::anyhow!("--pod-network: three octets"))?;
    let table = spec::ImageTable::parse(
        &std::fs::read_to_string(&args.images).with_context(|| format!("read {}", args.images.display()))?,
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", args.images.display()))?;
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let ca_pem = ca_pem(&config);
    let apiserver = match args.apiserver.as_deref() {
        Some("none") => None,
        Some(a) => Some(a.to_owned()),
        None => config
            .cluster_url
            .host()
            .map(|h| format!("{h}:{}", config.cluster_url.port_u16().unwrap_or(443))),
    };
    let client = Client::try_from(config)?;
    let agent = Arc::new(Agent {
        args,
        client,
        table,
        base,
        ca_pem,
        apiserver,
        slots: Mutex::new((vec![false; POD_SLOTS], 0)),
    });
    let bridge = net::Bridge::new(&agent.args.netns_prefix, base);
    bridge.create().map_err(|e| anyhow::anyhow!("pod bridge: {e}"))?;
    let since = pod::now_rfc3339();
    if let Err(e) = register(&agent, &since).await {
        bridge.delete();
        return Err(e);
    }

    let hb = agent.clone();
    let hb_since = since.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(hb.args.heartbeat_seconds.max(1))).await;
            if let Err(e) = heartbeat(&hb, &hb_since).await {
                warn!("heartbeat: {e:#}");
            }
        }
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let lb = agent
        .args
        .load_balancer
        .then(|| tokio::spawn(load_balancer::run(agent.clone(), bridge.name.clone(), stop_rx.clone())));
    let mut workers: HashMap<String, (watch::Sender<Option<Pod>>, tokio::task::JoinHandle<()>)> = HashMap::new();
    let pods: Api<Pod> = Api::all(agent.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", agent.args.node));
    let mut stream = watcher(pods, cfg).boxed();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut seen_in_init: Option<std::collections::HashSet<String>> = None;
    let mut done: std::collections::HashSet<String> = Default::default();
    info!(node = %agent.args.node, "watching pods");
    loop {
        let ev = tokio::select! {
            ev = stream.next() => ev,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(ev) = ev else { break };
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                warn!("pod watch: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut apply = |pod: Pod| {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            workers.retain(|uid, (_, h)| {
                if h.is_finished() {
                    done.insert(uid.clone());
                }
                !h.is_finished()
            });
            // A worker that has finished (the pod deleted) is not started
            // again by the updates still on their way.
            if done.contains(&uid) {
                return;
            }
            match workers.get(&uid) {
                Some((tx, _)) => {
                    let _ = tx.send(Some(pod));
                }
                None => {
                    if pod
                        .status
                        .as_ref()
                        .and_then(|s| s.phase.as_deref())
                        .is_some_and(|p| p == "Succeeded" || p == "Failed")
                        && pod.metadata.deletion_timestamp.is_none()
                    {
                        // Finished before this agent started: nothing to run.
                        return;
                    }
                    let (tx, rx) = watch::channel(Some(pod));
                    let h = tokio::spawn(pod::run(agent.clone(), rx, stop_rx.clone()));
                    workers.insert(uid, (tx, h));
                }
            }
        };
        match ev {
            watcher::Event::Init => seen_in_init = Some(Default::default()),
            watcher::Event::InitApply(pod) => {
                if let Some(seen) = seen_in_init.as_mut() {
                    seen.insert(pod.metadata.uid.clone().unwrap_or_default());
                }
                apply(pod);
            }
            watcher::Event::Apply(pod) => apply(pod),
            watcher::Event::InitDone => {
                if let Some(seen) = seen_in_init.take() {
                    for (uid, (tx, _)) in &workers {
                        if !seen.contains(uid) {
                            let _ = tx.send(None);
                        }
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                done.remove(&uid);
                if let Some((tx, _)) = workers.get(&uid) {
                    let _ = tx.send(None);
                }
            }
        }
    }
    info!("stopping: every pod's processes and network namespaces");
    let _ = stop_tx.send(true);
    for (_, (_, h)) in workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
    }
    if let Some(h) = lb {
        // It removes its addresses (the bridge's deletion would too).
        let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
    }
    bridge.delete();
    Ok(())
}
