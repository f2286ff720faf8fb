//! The control plane with kube-controller-manager and kube-scheduler
//! (`control_plane_with_controllers`): what a cluster that runs pods needs
//! from it before any kubelet runs. The test plays the kubelet's part
//! by hand: it registers a Node and reports Pod status. Node and Pod
//! addresses (10.213.251.0/24, the project's test range) are data only:
//! nothing connects to them.

mod common;

use common::cluster::{control_plane_with_controllers, ControlPlane};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Polls `probe` every 200 ms until it returns `Some`, or fails with `what`
/// and the tails of the controller-manager and scheduler logs.
fn eventually<T>(limit: Duration, what: &str, cp: &ControlPlane, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if start.elapsed() > limit {
            let tail = |f: &str| {
                let text = std::fs::read_to_string(cp.dir.join(f)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(30)..].join("\n")
            };
            panic!(
                "timed out after {limit:?} waiting for {what}\n--- controller-manager.log\n{}\n--- scheduler.log\n{}",
                tail("controller-manager.log"),
                tail("scheduler.log")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Registers a Node as a kubelet would: the object, then its status (Ready,
/// capacity, allocatable, an address) through the status subresource.
fn register_node(cp: &ControlPlane, name: &str, address: &str) {
    cp.apply(
        "default",
        &format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{kubernetes.io/hostname: {name}, kubernetes.io/os: linux}}\n"
        ),
    );
    let now = now_rfc3339();
    let resources = r#"{"cpu":"4","memory":"8Gi","pods":"110"}"#;
    let status = format!(
        r#"{{"status":{{"capacity":{resources},"allocatable":{resources},
            "addresses":[{{"type":"InternalIP","address":"{address}"}},{{"type":"Hostname","address":"{name}"}}],
            "conditions":[{{"type":"Ready","status":"True","reason":"KubeletReady","message":"set by the test",
                           "lastHeartbeatTime":"{now}","lastTransitionTime":"{now}"}}]}}}}"#
    );
    cp.kubectl_ok(&[
        "patch",
        &format!("node/{name}"),
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
}

/// Renews the Node's Lease in kube-node-lease every 5 s while it lives, as a
/// kubelet does: the node lifecycle controller otherwise marks the Node (and
/// its Pods) not ready after its grace period (50 s), which a slow machine
/// can reach before the test ends.
struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Heartbeat {
    fn start(cp: &'static ControlPlane, node: &str) -> Heartbeat {
        cp.apply(
            "kube-node-lease",
            &format!(
                "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: {node}}}\n\
                 spec: {{holderIdentity: {node}, leaseDurationSeconds: 40, renewTime: \"{}\"}}\n",
                now_micro()
            ),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let lease = format!("lease/{node}");
        let thread = std::thread::spawn(move || {
            // At most 10 minutes, in 250 ms steps.
            for step in 1..=2400u32 {
                if flag.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if step % 20 == 0 {
                    let patch = format!("{{\"spec\":{{\"renewTime\":\"{}\"}}}}", now_micro());
                    let args = ["patch", "-n", "kube-node-lease", &lease, "--type=merge", "-p", &patch];
                    let out = cp.kubectl(&args, None);
                    if !out.status.success() {
                        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Ok(())
        });
        Heartbeat {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(Ok(Err(e))) = self.thread.take().map(|t| t.join()) {
            if !std::thread::panicking() {
                panic!("renewing the node's Lease failed: {e}");
            }
        }
    }
}

/// A Lease's MicroTime.
fn now_micro() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.000000Z").to_string()
}

/// Reports a Pod Running with `ip` and Ready `ready`, as a kubelet would.
fn report_pod(cp: &ControlPlane, ns: &str, pod: &str, ip: &str, ready: bool) {
    let ready = if ready { "True" } else { "False" };
    let now = now_rfc3339();
    let status = format!(
        r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"startTime":"{now}",
            "conditions":[{{"type":"Ready","status":"{ready}","lastTransitionTime":"{now}"}},
                          {{"type":"ContainersReady","status":"{ready}","lastTransitionTime":"{now}"}},
                          {{"type":"Initialized","status":"True","lastTransitionTime":"{now}"}}]}}}}"#
    );
    cp.kubectl_ok(&[
        "patch",
        "-n",
        ns,
        &format!("pod/{pod}"),
        "--subresource=status",
        "--type=strategic",
        "-p",
        &status,
    ]);
}

fn words(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.split_whitespace().map(str::to_owned).collect();
    v.sort();
    v
}

/// A Deployment becomes a ReplicaSet and two Pods, the scheduler binds them
/// to the only Node they select, the EndpointSlice controller lists the
/// addresses the "kubelet" reports (and follows readiness), and deleting the
/// Deployment garbage-collects the ReplicaSet and the Pods.
#[test]
fn deployment_pods_are_scheduled_listed_in_endpointslices_and_collected() {
    let cp = control_plane_with_controllers();
    let ns = cp.namespace("cc-deploy");
    let node = "cc-node-deploy";
    // The ServiceAccount admission plugin refuses Pods until the
    // service-account controller has made the namespace's "default".
    eventually(Duration::from_secs(30), "the default ServiceAccount", cp, || {
        (!cp.get(&ns, "serviceaccount/default", "{.metadata.name}").is_empty()).then_some(())
    });
    register_node(cp, node, "10.213.251.1");
    let heartbeat = Heartbeat::start(cp, node);

    cp.apply(
        &ns,
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      nodeSelector: {{kubernetes.io/hostname: {node}}}\n      containers:\n      - name: web\n        image: ssegate.invalid/none:1\n        ports: [{{name: http, containerPort: 8080}}]\n        resources: {{requests: {{cpu: 10m, memory: 16Mi}}}}\n\
             ---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  selector: {{app: web}}\n  ports: [{{name: http, port: 80, targetPort: http}}]\n"
        ),
    );

    // deployment controller: a ReplicaSet owned by the Deployment.
    let rs = eventually(Duration::from_secs(30), "a ReplicaSet", cp, || {
        let name = cp.get(&ns, "replicasets", "{.items[0].metadata.name}");
        (!name.is_empty()).then_some(name)
    });
    assert_eq!(
        cp.get(
            &ns,
            &format!("replicaset/{rs}"),
            "{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}"
        ),
        "Deployment/web"
    );

    // replicaset controller + scheduler: two Pods owned by it, bound to the Node.
    let pods = eventually(Duration::from_secs(60), "2 Pods bound to the node", cp, || {
        let nodes = words(&cp.get(&ns, "pods", "{.items[*].spec.nodeName}"));
        (nodes == [node, node]).then(|| words(&cp.get(&ns, "pods", "{.items[*].metadata.name}")))
    });
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        assert_eq!(
            cp.get(&ns, &format!("pod/{pod}"), "{.metadata.ownerReferences[0].name}"),
            rs
        );
        // ServiceAccount admission (on with the controllers) mounts the token volume.
        assert_eq!(
            cp.get(&ns, &format!("pod/{pod}"), "{.spec.serviceAccountName}"),
            "default"
        );
        let volumes = cp.get(&ns, &format!("pod/{pod}"), "{.spec.volumes[*].name}");
        assert!(volumes.starts_with("kube-api-access-"), "volumes: {volumes}");
    }

    // endpointslice controller: a slice for the Service, empty while no Pod has an address.
    let slices = |jsonpath: &str| {
        let out = cp.kubectl(
            &[
                "get",
                "-n",
                &ns,
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web,endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io",
                "-o",
                &format!("jsonpath={jsonpath}"),
            ],
            None,
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    eventually(Duration::from_secs(30), "the Service's EndpointSlice", cp, || {
        (!slices("{.items[*].metadata.name}").is_empty()).then_some(())
    });
    assert_eq!(slices("{.items[*].endpoints[*].addresses[0]}"), "");

    let ips = ["10.213.251.10", "10.213.251.11"];
    for (pod, ip) in pods.iter().zip(ips) {
        report_pod(cp, &ns, pod, ip, true);
    }
    eventually(Duration::from_secs(30), "both Pod IPs in the EndpointSlice", cp, || {
        (words(&slices("{.items[*].endpoints[*].addresses[0]}")) == ips).then_some(())
    });
    assert_eq!(
        words(&slices("{.items[*].endpoints[*].conditions.ready}")),
        ["true", "true"]
    );
    assert_eq!(words(&slices("{.items[*].endpoints[*].nodeName}")), [node, node]);
    // The named targetPort resolved from the Pods' container port.
    assert_eq!(slices("{.items[*].ports[*].port}"), "8080");

    // Readiness is followed: one Pod not ready, its endpoint not ready.
    report_pod(cp, &ns, &pods[0], ips[0], false);
    eventually(
        Duration::from_secs(30),
        "the unready Pod's endpoint not ready",
        cp,
        || {
            let ready = slices(&format!(
                "{{.items[*].endpoints[?(@.addresses[0]==\"{}\")].conditions.ready}}",
                ips[0]
            ));
            (ready == "false").then_some(())
        },
    );

    // garbage collector: the ReplicaSet goes, its Pods are deleted. Without a
    // kubelet they wait in Terminating; the test then confirms the deletion
    // as a kubelet does once the containers are stopped (grace period 0).
    cp.kubectl_ok(&["delete", "-n", &ns, "deployment/web", "--wait=true", "--timeout=30s"]);
    eventually(Duration::from_secs(30), "the ReplicaSet collected", cp, || {
        cp.get(&ns, "replicasets", "{.items[*].metadata.name}")
            .is_empty()
            .then_some(())
    });
    eventually(Duration::from_secs(30), "both Pods deleted", cp, || {
        let out = cp.get(
            &ns,
            "pods",
            "{range .items[*]}{.metadata.deletionTimestamp}{\"\\n\"}{end}",
        );
        let stamps: Vec<&str> = out.lines().collect();
        (stamps.len() == 2 && stamps.iter().all(|s| !s.is_empty())).then_some(())
    });
    for pod in &pods {
        cp.kubectl_ok(&[
            "delete",
            "-n",
            &ns,
            &format!("pod/{pod}"),
            "--grace-period=0",
            "--force",
        ]);
    }
    assert_eq!(cp.get(&ns, "pods", "{.items[*].metadata.name}"), "");
    drop(heartbeat);
    cp.kubectl_ok(&["delete", &format!("node/{node}")]);
}

/// A new Namespace gets its "default" ServiceAccount and the
/// `kube-root-ca.crt` ConfigMap carrying the cluster CA; deleting it (with
/// content) finishes, which takes the namespace controller.
#[test]
fn new_namespace_gets_root_ca_and_service_account_and_deletion_finishes() {
    let cp = control_plane_with_controllers();
    let ns = cp.namespace("cc-fresh");
    let ca = std::fs::read_to_string(cp.dir.join("pki/ca.crt")).unwrap();
    let published = eventually(Duration::from_secs(30), "kube-root-ca.crt", cp, || {
        let out = cp.kubectl(
            &[
                "get",
                "-n",
                &ns,
                "configmap/kube-root-ca.crt",
                "-o",
                "jsonpath={.data.ca\\.crt}",
            ],
            None,
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (!text.is_empty()).then_some(text)
    });
    assert_eq!(published.trim(), ca.trim());
    eventually(Duration::from_secs(30), "the default ServiceAccount", cp, || {
        (!cp.get(&ns, "serviceaccount/default", "{.metadata.name}").is_empty()).then_some(())
    });

    cp.kubectl_ok(&["create", "configmap", "-n", &ns, "extra", "--from-literal=k=v"]);
    cp.kubectl_ok(&["delete", "namespace", &ns, "--wait=false"]);
    eventually(Duration::from_secs(60), "the namespace gone", cp, || {
        let out = cp.kubectl(&["get", "namespace", &ns, "-o", "name"], None);
        let gone = !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound");
        gone.then_some(())
    });
}

/// A token from the TokenRequest API (`kubectl create token`) authenticates
/// as its ServiceAccount; the same token altered does not. So does the token
/// the service-account-token controller writes into a legacy token Secret,
/// which it signs with `--service-account-private-key-file`: the apiserver
/// only accepts it if that key pairs with its `--service-account-key-file`.
#[test]
fn service_account_tokens_authenticate_as_their_service_account() {
    let cp = control_plane_with_controllers();
    let ns = cp.namespace("cc-token");
    cp.kubectl_ok(&["create", "serviceaccount", "-n", &ns, "robot"]);
    let token = cp.kubectl_ok(&["create", "token", "-n", &ns, "robot", "--duration=10m"]);
    let token = token.trim();

    let dir = tempfile::tempdir().unwrap();
    let whoami = |token: &str| {
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\n\
                 users:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
                port = cp.api_port,
                ca = cp.dir.join("pki/ca.crt").display()
            ),
        )
        .unwrap();
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
            .output()
            .unwrap()
    };
    let out = whoami(token);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("system:serviceaccount:{ns}:robot")
    );

    // Change one character of the signature (not the last: some of its bits
    // are padding a lenient decoder ignores).
    let mut forged: Vec<char> = token.chars().collect();
    let i = forged.len() - 10;
    forged[i] = if forged[i] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let out = whoami(&forged);
    assert!(!out.status.success(), "an altered token authenticated");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    cp.apply(
        &ns,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: robot-token\n  \
         annotations: {kubernetes.io/service-account.name: robot}\ntype: kubernetes.io/service-account-token\n",
    );
    // kubectl decodes the Secret's base64 itself.
    let secret = |key: &str| {
        let template = format!("go-template={{{{index .data \"{key}\" | base64decode}}}}");
        let out = cp.kubectl(&["get", "-n", &ns, "secret/robot-token", "-o", &template], None);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (legacy, ca) = eventually(Duration::from_secs(30), "the token Secret filled in", cp, || {
        let (token, ca) = (secret("token"), secret("ca.crt"));
        (token.starts_with("ey") && ca.contains("BEGIN CERTIFICATE")).then_some((token, ca))
    });
    // --root-ca-file is the CA the Secret carries.
    let root_ca = std::fs::read_to_string(cp.dir.join("pki/ca.crt")).unwrap();
    assert_eq!(ca.trim(), root_ca.trim());
    let out = whoami(legacy.trim());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("system:serviceaccount:{ns}:robot")
    );
}
