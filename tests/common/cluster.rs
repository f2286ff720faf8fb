//! A real control plane (etcd + kube-apiserver) per test binary, and
//! backends in network namespaces of the test's own: the apiserver refuses
//! loopback addresses in EndpointSlices, so each backend gets a veth pair.
//! Test binaries that need Pods scheduled and controllers reconciling ask
//! for [`control_plane_with_controllers`] instead; the others do not pay
//! for kube-controller-manager and kube-scheduler. Those that run pods ask
//! for [`control_plane_with_node`]: the same, and a node of real components
//! (scripts/node.sh), one per machine.

use super::free_port;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub api_port: u16,
    /// Whether kube-controller-manager and kube-scheduler run too.
    pub controllers: bool,
    /// Whether a node (containerd, kubelet, kube-proxy, CoreDNS) runs too.
    pub node: bool,
    env: Vec<(&'static str, String)>,
}

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// The control plane, if this test binary has started one.
pub fn started() -> Option<&'static ControlPlane> {
    CONTROL_PLANE.get()
}

/// The control plane of this test binary, started on first use and stopped
/// by the script's watchdog when the binary exits.
pub fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| ControlPlane::start(Kind::Plain))
}

/// Like [`control_plane`], with kube-controller-manager and kube-scheduler
/// running too (and so the ServiceAccount admission plugin): Deployments get
/// ReplicaSets and Pods, Pods get bound to Nodes, Services get EndpointSlices.
/// A test binary uses one or the other: this one panics if the binary already
/// started a control plane without them.
pub fn control_plane_with_controllers() -> &'static ControlPlane {
    let cp = CONTROL_PLANE.get_or_init(|| ControlPlane::start(Kind::Controllers));
    assert!(
        cp.controllers,
        "this test binary already started a control plane without controllers"
    );
    cp
}

/// Like [`control_plane_with_controllers`], with a node of real components
/// too (scripts/node.sh: containerd and runc, the CNI bridge, kubelet,
/// kube-proxy, CoreDNS, the load-balancer address stand-in); the apiserver
/// then listens on the pod bridge (10.244.0.1). One node runs per machine:
/// while another control plane's node runs, this waits for it to go (30
/// minutes at most) and starts then. It panics if the binary already
/// started a control plane without a node.
pub fn control_plane_with_node() -> &'static ControlPlane {
    let cp = CONTROL_PLANE.get_or_init(|| ControlPlane::start(Kind::Node));
    assert!(
        cp.node,
        "this test binary already started a control plane without a node"
    );
    cp
}

/// Which parts run beside etcd and kube-apiserver.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Plain,
    Controllers,
    Node,
}

/// Which control plane's node runs on this machine (scripts/node.sh).
const NODE_OWNER: &str = "/run/ssegate-node.owner";

/// The folder of another control plane whose node runs on this machine.
fn node_taken_by(dir: &Path) -> Option<PathBuf> {
    let owner = PathBuf::from(std::fs::read_to_string(NODE_OWNER).ok()?.trim());
    (owner != dir && owner.is_dir()).then_some(owner)
}

/// Waits until no other control plane's node runs here, failing at `deadline`.
fn wait_node_free(dir: &Path, deadline: std::time::Instant) {
    let mut said = false;
    while let Some(owner) = node_taken_by(dir) {
        assert!(
            std::time::Instant::now() < deadline,
            "the node of {} still ran on this machine after 30 minutes of waiting",
            owner.display()
        );
        if !said {
            eprintln!(
                "waiting for the node of {} to stop (one node per machine)",
                owner.display()
            );
            said = true;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

impl ControlPlane {
    fn start(kind: Kind) -> ControlPlane {
        let controllers = kind != Kind::Plain;
        let node = kind == Kind::Node;
        let dir = PathBuf::from(format!("/tmp/ssegate-cp-{}", std::process::id()));
        let api_port = free_port();
        let mut env = vec![
            ("SSEGATE_CP_DIR", dir.display().to_string()),
            ("ETCD_PORT", free_port().to_string()),
            ("ETCD_PEER_PORT", free_port().to_string()),
            ("API_PORT", api_port.to_string()),
            ("SSEGATE_CP_OWNER", std::process::id().to_string()),
        ];
        if controllers {
            env.extend([
                ("SSEGATE_CP_CONTROLLERS", "1".to_owned()),
                ("KCM_PORT", free_port().to_string()),
                ("SCHEDULER_PORT", free_port().to_string()),
            ]);
        }
        if node {
            env.push(("SSEGATE_CP_NODE", "1".to_owned()));
        }
        let cp = ControlPlane {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            api_port,
            controllers,
            node,
            env,
        };
        let free_by = std::time::Instant::now() + std::time::Duration::from_secs(30 * 60);
        let out = loop {
            if node {
                wait_node_free(&cp.dir, free_by);
            }
            let out = cp.script("start");
            // Another node took the machine between the wait and the start.
            if node && !out.status.success() && node_taken_by(&cp.dir).is_some() {
                continue;
            }
            break out;
        };
        assert!(
            out.status.success(),
            "control plane did not start:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for crd in ["routes.ssegate.dev", "streampolicies.ssegate.dev"] {
            let crds = format!("{ROOT}/crds/{crd}.yaml");
            cp.kubectl_ok(&["apply", "--server-side", "-f", &crds]);
        }
        // The pinned Gateway API CRDs (crds/gateway-api/, standard channel).
        // Server-side: the HTTPRoute CRD is too large for the last-applied annotation.
        let gateway_api = format!("{ROOT}/crds/gateway-api/");
        cp.kubectl_ok(&["apply", "--server-side", "-f", &gateway_api]);
        cp.kubectl_ok(&[
            "wait",
            "--for=condition=established",
            "crd/routes.ssegate.dev",
            "crd/streampolicies.ssegate.dev",
            "crd/gatewayclasses.gateway.networking.k8s.io",
            "crd/gateways.gateway.networking.k8s.io",
            "crd/httproutes.gateway.networking.k8s.io",
            "crd/referencegrants.gateway.networking.k8s.io",
            "--timeout=60s",
        ]);
        cp
    }

    /// Runs `scripts/control-plane.sh CMD` against this control plane.
    pub fn script(&self, cmd: &str) -> Output {
        let mut c = Command::new(format!("{ROOT}/scripts/control-plane.sh"));
        c.arg(cmd);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl and fails the test if it fails; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args, None);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `kubectl apply -n NS -f -` with the given YAML.
    pub fn apply(&self, namespace: &str, yaml: &str) {
        let out = self.kubectl(&["apply", "-n", namespace, "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "kubectl apply failed:\n{}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `kubectl patch` a Route's `proxyBuffering`.
    pub fn set_buffering(&self, namespace: &str, route: &str, mode: &str) {
        let patch = format!("{{\"spec\":{{\"proxyBuffering\":\"{mode}\"}}}}");
        self.kubectl_ok(&[
            "patch",
            "-n",
            namespace,
            &format!("route/{route}"),
            "--type=merge",
            "-p",
            &patch,
        ]);
    }

    /// Creates a fresh namespace for one test.
    pub fn namespace(&self, name: &str) -> String {
        self.kubectl_ok(&["create", "namespace", name]);
        name.to_owned()
    }

    /// A JSONPath read of one object; empty when it does not exist.
    pub fn get(&self, namespace: &str, what: &str, jsonpath: &str) -> String {
        let out = self.kubectl(
            &["get", "-n", namespace, what, "-o", &format!("jsonpath={jsonpath}")],
            None,
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes a kubeconfig like the admin one but pointing at `port`.
    pub fn kubeconfig_via(&self, port: u16, path: &Path) {
        let text = std::fs::read_to_string(&self.kubeconfig).unwrap();
        std::fs::write(path, text.replace(&format!(":{}", self.api_port), &format!(":{port}"))).unwrap();
    }
}

static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// The demo backend running in a network namespace of its own, reachable
/// from the host through a veth pair.
pub struct NetnsBackend {
    pub ip: Ipv4Addr,
    pub port: u16,
    netns: String,
    host_if: String,
    child: Option<Child>,
}

impl NetnsBackend {
    pub async fn start(server_id: &str) -> NetnsBackend {
        let n = NEXT_NET.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id() % 1000;
        let subnet = ((std::process::id() % 60) * 4 + n) % 250;
        let netns = format!("sg{pid}n{n}");
        let host_if = format!("sg{pid}h{n}");
        let peer_if = format!("sg{pid}p{n}");
        let host_ip = format!("10.213.{subnet}.1");
        let ip: Ipv4Addr = format!("10.213.{subnet}.2").parse().unwrap();
        let _ = run("ip", &["netns", "del", &netns]);
        let _ = run("ip", &["link", "del", &host_if]);
        for args in [
            vec!["netns", "add", &netns],
            vec!["link", "add", &host_if, "type", "veth", "peer", "name", &peer_if],
            vec!["link", "set", &peer_if, "netns", &netns],
            vec!["addr", "add", &format!("{host_ip}/30"), "dev", &host_if],
            vec!["link", "set", &host_if, "up"],
            vec![
                "netns",
                "exec",
                &netns,
                "ip",
                "addr",
                "add",
                &format!("{ip}/30"),
                "dev",
                &peer_if,
            ],
            vec!["netns", "exec", &netns, "ip", "link", "set", &peer_if, "up"],
            vec!["netns", "exec", &netns, "ip", "link", "set", "lo", "up"],
        ] {
            let out = run("ip", &args);
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = 8081;
        let child = Command::new("ip")
            .args(["netns", "exec", &netns, env!("CARGO_BIN_EXE_ssegate"), "demo-backend"])
            .args(["--listen", &format!("{ip}:{port}"), "--server-id", server_id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let backend = NetnsBackend {
            ip,
            port,
            netns,
            host_if,
            child: Some(child),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while tokio::net::TcpStream::connect((ip, port)).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "demo backend in {} never listened",
                backend.netns
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        backend
    }

    /// A Service `name` (port 80) and an EndpointSlice pointing at this backend.
    pub fn service_yaml(&self, name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{name: http, port: 80, targetPort: {port}}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints: [{{addresses: [\"{ip}\"], conditions: {{ready: true}}}}]\n",
            port = self.port,
            ip = self.ip
        )
    }
}

impl Drop for NetnsBackend {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = run("ip", &["netns", "del", &self.netns]);
        let _ = run("ip", &["link", "del", &self.host_if]);
    }
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd).args(args).output().unwrap()
}

/// Parses the RFC 3339 time a demo `event: time` carries in its data.
pub fn stamped(event: &str) -> Option<std::time::SystemTime> {
    let line = event.lines().find(|l| l.starts_with("data: "))?;
    let ts: jiff::Timestamp = line["data: ".len()..].parse().ok()?;
    Some(std::time::SystemTime::from(ts))
}
