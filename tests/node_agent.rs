//! The node agent (node-agent/, test support) against a real apiserver: it
//! registers a Ready Node with a Lease, runs a Pod bound to it as a local
//! process in a network namespace of its own (env from the downward API,
//! `$(VAR)` in args, runAsUser, a private mount of the service-account
//! token), reports probes as readiness, fails an unknown image with a
//! Warning Event, and on deletion stops the process with SIGTERM and removes
//! the object; serves Services of type LoadBalancer from an address of its
//! pod network; mounts ConfigMap, Secret and emptyDir volumes. Needs root
//! (network namespaces), like the other cluster tests.
//!
//! The tests run one at a time ([`SERIAL`]): each starts its own agent for
//! the same node and the same pod network (10.213.250.0/24), and leaves no
//! pod behind for the next.

mod common;

use common::cluster::{control_plane_with_controllers, ControlPlane};
use common::node_agent::{wait_for, NodeAgent};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One agent at a time: they share the node name, the netns prefix and the
/// pod network.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_agent_runs_pods_as_processes() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane_with_controllers();
    let dir = tempfile::tempdir().unwrap();
    let agent = NodeAgent::start(cp, dir.path(), "10.213.250");
    let node = agent.node.clone();

    // The Node registers Ready, with allocatable pods, and holds its Lease.
    agent.wait_ready(cp);
    assert_eq!(
        cp.get("default", &format!("node/{node}"), "{.status.allocatable.pods}"),
        "64"
    );
    let renew = |cp: &ControlPlane| cp.get("kube-node-lease", &format!("lease/{node}"), "{.spec.renewTime}");
    assert_eq!(
        cp.get("kube-node-lease", &format!("lease/{node}"), "{.spec.holderIdentity}"),
        node
    );
    let first = renew(cp);
    wait_for(Duration::from_secs(10), "lease renewed", &agent, || {
        (renew(cp) != first).then_some(())
    });

    let ns = cp.namespace("agent-test");
    // The ServiceAccount the token is for (made here rather than waiting for
    // the controller-manager's, which the admission plugin needs first).
    cp.apply(&ns, "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: default}\n");
    cp.apply(
        &ns,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {greeting: hi}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {password: s3cret}\n",
    );
    // Port 80 as uid 65532: only possible with ip_unprivileged_port_start=0
    // in the pod's network namespace.
    cp.apply(
        &ns,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: demo}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 30
  serviceAccountName: default
  securityContext: {{runAsUser: 65532, runAsGroup: 65532, runAsNonRoot: true}}
  containers:
  - name: demo
    image: ssegate:test
    args: [demo-backend, --listen, "0.0.0.0:80", --server-id, "$(POD_NAME)@$(POD_NAMESPACE)"]
    env:
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: POD_NAMESPACE, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
    - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    - {{name: GREETING, value: "hello from $(POD_NAME)"}}
    - {{name: FROM_CM, valueFrom: {{configMapKeyRef: {{name: settings, key: greeting}}}}}}
    - {{name: FROM_SECRET, valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}}}
    ports: [{{name: http, containerPort: 80}}]
    securityContext: {{allowPrivilegeEscalation: false}}
    readinessProbe:
      httpGet: {{path: "/.sse?count=0", port: http}}
      periodSeconds: 1
    livenessProbe:
      tcpSocket: {{port: 80}}
      periodSeconds: 2
"#
        ),
    );
    let (phase_ip, pid) = wait_for(Duration::from_secs(60), "pod Running and Ready", &agent, || {
        let s = cp.get(
            &ns,
            "pod/demo",
            "{.status.phase} {.status.conditions[?(@.type==\"Ready\")].status} {.status.containerStatuses[0].ready} {.status.podIP} {.status.containerStatuses[0].containerID}",
        );
        let words: Vec<&str> = s.split(' ').collect();
        (words.len() == 5 && words[0] == "Running" && words[1] == "True" && words[2] == "true").then(|| {
            (
                words[3].to_owned(),
                words[4].trim_start_matches("ssegate-node-agent://").to_owned(),
            )
        })
    });
    let pod_ip: std::net::Ipv4Addr = phase_ip.parse().unwrap();
    assert!(phase_ip.starts_with("10.213.250."), "pod IP {pod_ip}");
    assert_eq!(cp.get(&ns, "pod/demo", "{.status.podIPs[0].ip}"), phase_ip);
    assert_eq!(cp.get(&ns, "pod/demo", "{.status.hostIP}"), "127.0.0.1");
    for cond in ["PodScheduled", "Initialized", "ContainersReady"] {
        let q = format!("{{.status.conditions[?(@.type==\"{cond}\")].status}}");
        assert_eq!(cp.get(&ns, "pod/demo", &q), "True", "{cond}");
    }
    assert_eq!(
        cp.get(&ns, "pod/demo", "{.status.containerStatuses[0].started}"),
        "true"
    );
    assert_eq!(
        cp.get(&ns, "pod/demo", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );

    // The process: the pod's uid, env and private service-account mount.
    let proc = format!("/proc/{pid}");
    let status = std::fs::read_to_string(format!("{proc}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.split_whitespace().skip(1).all(|u| u == "65532"), "{uid_line}");
    assert!(
        status.contains("\nNoNewPrivs:\t1\n"),
        "allowPrivilegeEscalation: false\n{status}"
    );
    let environ = std::fs::read(format!("{proc}/environ")).unwrap();
    let environ: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    for want in [
        format!("POD_IP={pod_ip}"),
        "POD_NAMESPACE=agent-test".to_owned(),
        "GREETING=hello from demo".to_owned(),
        "HOSTNAME=demo".to_owned(),
        "FROM_CM=hi".to_owned(),
        "FROM_SECRET=s3cret".to_owned(),
        "KUBERNETES_SERVICE_HOST=127.0.0.1".to_owned(),
        "KUBERNETES_SERVICE_PORT=443".to_owned(),
    ] {
        assert!(environ.contains(&want), "{want} not in {environ:?}");
    }
    // Read inside the process's mount namespace (/var/run is a symlink, which
    // /proc/PID/root would resolve against ours).
    let read_in_pod = |file: &str| {
        let path = format!("/var/run/secrets/kubernetes.io/serviceaccount/{file}");
        let out = Command::new("nsenter")
            .args(["--target", &pid, "--mount", "cat", &path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{path}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            agent.logs()
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(read_in_pod("namespace"), "agent-test");
    let ca = read_in_pod("ca.crt");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    let token = read_in_pod("token");
    // The apiserver accepts the token as the pod's ServiceAccount, bound to the pod.
    let review = format!(
        "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec: {{token: \"{}\"}}\n",
        token.trim()
    );
    let out = cp.kubectl(
        &["create", "-f", "-", "-o", "jsonpath={.status.authenticated} {.status.user.username} {.status.user.extra.authentication\\.kubernetes\\.io/pod-name[0]}"],
        Some(&review),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "true system:serviceaccount:agent-test:default demo",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // In-cluster clients in the pod reach the apiserver at their own
    // 127.0.0.1:443 (the agent's forward), where its certificate is valid:
    // the pod's token and ca.crt authenticate from inside the namespace.
    let ca_file = dir.path().join("pod-ca.crt");
    std::fs::write(&ca_file, &ca).unwrap();
    let pod_netns = agent.netns();
    assert_eq!(pod_netns.len(), 1, "{pod_netns:?}");
    let whoami = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pod_netns[0],
            "kubectl",
            "--server=https://127.0.0.1:443",
        ])
        .arg(format!("--token={}", token.trim()))
        .arg(format!("--certificate-authority={}", ca_file.display()))
        .args(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
        .env("KUBECONFIG", "/dev/null")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        "system:serviceaccount:agent-test:default",
        "{}",
        String::from_utf8_lossy(&whoami.stderr)
    );
    assert!(
        !Path::new("/var/run/secrets/kubernetes.io/serviceaccount/namespace").exists(),
        "the token is mounted in the pod's mount namespace only"
    );

    // SSE from the pod's address; the server id came from $(POD_NAME)@$(POD_NAMESPACE).
    let resp = common::client()
        .get(format!("http://{pod_ip}:80/.sse?count=1&interval=50ms"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = common::read_stream(resp, 3).await;
    assert_eq!(got.events.len(), 3, "{:?} {:?}", got.events, got.error);
    assert!(
        got.events[0].0.contains("event: server\ndata: demo@agent-test\n"),
        "{}",
        got.events[0].0
    );
    assert!(got.events[2].0.contains("event: time"), "{}", got.events[2].0);

    // An image the table does not name: ErrImagePull and a Warning Event naming it.
    cp.apply(
        &ns,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: bad}}\nspec:\n  nodeName: {node}\n  serviceAccountName: default\n  containers: [{{name: c, image: \"registry.example/nope:1\"}}]\n"
        ),
    );
    // runAsNonRoot without runAsUser: the agent would run it as root, so it refuses.
    cp.apply(
        &ns,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: rootish}}\nspec:\n  nodeName: {node}\n  serviceAccountName: default\n  securityContext: {{runAsNonRoot: true}}\n  containers: [{{name: c, image: \"ssegate:test\", args: [demo-backend]}}]\n"
        ),
    );
    wait_for(Duration::from_secs(30), "ErrImagePull", &agent, || {
        let r = cp.get(
            &ns,
            "pod/bad",
            "{.status.phase} {.status.containerStatuses[0].state.waiting.reason}",
        );
        (r == "Pending ErrImagePull").then_some(())
    });
    wait_for(Duration::from_secs(30), "runAsNonRoot refused", &agent, || {
        let r = cp.get(
            &ns,
            "pod/rootish",
            "{.status.phase} {.status.containerStatuses[0].state.waiting.reason}",
        );
        (r == "Pending CreateContainerConfigError").then_some(())
    });
    wait_for(Duration::from_secs(10), "Warning Event for the image", &agent, || {
        let out = cp.kubectl_ok(&[
            "get",
            "events",
            "-n",
            &ns,
            "--field-selector",
            "involvedObject.name=bad,type=Warning",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        out.contains("\"registry.example/nope:1\"").then_some(())
    });

    // restartPolicy Always: a container that exits at once (2: an address
    // clap refuses) is restarted, with back-off (500 ms doubling here).
    cp.apply(
        &ns,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: crash}}\nspec:\n  nodeName: {node}\n  serviceAccountName: default\n  containers: [{{name: c, image: \"ssegate:test\", args: [demo-backend, --listen, not-an-address]}}]\n"
        ),
    );
    // A failing liveness probe restarts the container; a failing readiness
    // probe keeps the pod Running but not Ready.
    cp.apply(
        &ns,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: unwell}}
spec:
  nodeName: {node}
  serviceAccountName: default
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: ssegate:test
    args: [demo-backend, --listen, "0.0.0.0:8081"]
    readinessProbe: {{httpGet: {{path: /not-found, port: 8081}}, periodSeconds: 1}}
    livenessProbe: {{tcpSocket: {{port: 8082}}, periodSeconds: 1, failureThreshold: 2, initialDelaySeconds: 1}}
"#
        ),
    );
    wait_for(Duration::from_secs(30), "crash restarted twice", &agent, || {
        let r = cp.get(
            &ns,
            "pod/crash",
            "{.status.phase} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].lastState.terminated.exitCode}",
        );
        let w: Vec<&str> = r.split(' ').collect();
        (w.len() == 3 && w[0] == "Running" && w[1].parse::<u32>().is_ok_and(|n| n >= 2) && w[2] == "2").then_some(())
    });
    wait_for(Duration::from_secs(30), "liveness restart", &agent, || {
        let r = cp.get(
            &ns,
            "pod/unwell",
            "{.status.phase} {.status.conditions[?(@.type==\"Ready\")].status} {.status.containerStatuses[0].restartCount}",
        );
        let w: Vec<&str> = r.split(' ').collect();
        (w.len() == 3 && w[0] == "Running" && w[1] == "False" && w[2].parse::<u32>().is_ok_and(|n| n >= 1))
            .then_some(())
    });
    // Pods share the bridge's /24: the other pods reach the demo pod.
    let unwell_netns: Vec<String> = agent.netns().into_iter().filter(|n| *n != pod_netns[0]).collect();
    let unwell_ip = cp.get(&ns, "pod/unwell", "{.status.podIP}");
    assert!(
        unwell_ip.starts_with("10.213.250.") && unwell_ip != phase_ip,
        "{unwell_ip}"
    );
    let reach = unwell_netns.iter().any(|n| {
        Command::new("ip")
            .args(["netns", "exec", n, "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/{pod_ip}/80"))
            .status()
            .unwrap()
            .success()
    });
    assert!(reach, "no pod reached {pod_ip}:80 from {unwell_netns:?}");
    let unhealthy = cp.kubectl_ok(&[
        "get",
        "events",
        "-n",
        &ns,
        "--field-selector",
        "involvedObject.name=unwell,reason=Unhealthy",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(unhealthy.contains("liveness probe"), "{unhealthy}");
    assert!(unhealthy.contains("Readiness probe failed"), "{unhealthy}");

    // Deletion: SIGTERM (the demo backend drains on it and, with no stream
    // open, exits 0 at once, long before the 30 s grace period would end
    // in SIGKILL), then the object goes and so does the network namespace.
    let netns_before = agent.netns();
    assert_eq!(netns_before.len(), 5, "{netns_before:?}");
    let deleted = Instant::now();
    cp.kubectl_ok(&["delete", "-n", &ns, "pod/demo", "--wait=false"]);
    wait_for(Duration::from_secs(20), "pod object removed", &agent, || {
        let out = cp.kubectl(&["get", "-n", &ns, "pod/demo"], None);
        (!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound")).then_some(())
    });
    assert!(
        deleted.elapsed() < Duration::from_secs(15),
        "took {:?}",
        deleted.elapsed()
    );
    assert!(!Path::new(&proc).exists(), "the process is gone");
    let logs = agent.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("pod=Some(\"demo\")") && l.contains("container exited") && l.contains("code=0")),
        "a clean exit after SIGTERM (code 0: the demo backend drained) in the agent log:\n{logs}"
    );
    wait_for(Duration::from_secs(10), "netns removed", &agent, || {
        (agent.netns().len() == 4).then_some(())
    });
    for pod in ["bad", "rootish", "crash", "unwell"] {
        cp.kubectl_ok(&["delete", "-n", &ns, &format!("pod/{pod}"), "--wait=false"]);
    }
    for pod in ["bad", "rootish", "crash", "unwell"] {
        wait_for(Duration::from_secs(20), &format!("{pod} removed"), &agent, || {
            let out = cp.kubectl(&["get", "-n", &ns, &format!("pod/{pod}")], None);
            (!out.status.success()).then_some(())
        });
    }
    // The agent itself removed every pod's namespace.
    wait_for(Duration::from_secs(10), "all netns removed", &agent, || {
        agent.netns().is_empty().then_some(())
    });
    assert!(agent.link_exists(&format!("{}br", agent.prefix)));
    let bridge = format!("{}br", agent.prefix);
    let mut agent = agent;
    agent.stop();
    // Shown with --nocapture.
    println!("agent log:\n{}", agent.logs());
    let leftover = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let prefix = format!("sa{}", std::process::id() % 100_000);
    assert!(
        !String::from_utf8_lossy(&leftover.stdout)
            .lines()
            .any(|l| l.starts_with(&prefix)),
        "network namespaces left behind"
    );
    let gone = Command::new("ip").args(["link", "show", &bridge]).output().unwrap();
    assert!(!gone.status.success(), "the agent removes its bridge on SIGTERM");
}

/// One request on a connection of its own (raw, so no pool reuses it):
/// the `event: server` data, the id of the demo backend that answered.
fn sse_server_via(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /.sse?count=1&interval=10ms HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got);
        if let Some(i) = text.find("event: server\ndata: ") {
            let rest = &text[i + "event: server\ndata: ".len()..];
            if let Some(end) = rest.find('\n') {
                return Ok(rest[..end].to_owned());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no server event in time: {text:?}"));
        }
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("closed after {text:?}")),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read: {e} after {text:?}")),
        }
    }
}

/// Whether a connection to `addr` is refused, or accepted and closed
/// without a byte of reply.
fn closed_without_reply(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) else {
        return true;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The peer may have closed already: a failed write is fine.
    let _ = s.write_all(b"GET /.sse?count=1 HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Like [`sse_server_via`] (`interval` 100 ms, no end), keeping the
/// connection open: the server's id and the stream.
fn sse_stream_via(addr: SocketAddr) -> Result<(String, TcpStream), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /.sse?interval=100ms HTTP/1.1\r\nHost: lb\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..20 {
        let text = String::from_utf8_lossy(&got);
        if let Some(i) = text.find("event: server\ndata: ") {
            let rest = &text[i + "event: server\ndata: ".len()..];
            if let Some(end) = rest.find('\n') {
                return Ok((rest[..end].to_owned(), s));
            }
        }
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("closed after {text:?}")),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Err("no server event".into())
}

/// An HTTP server on the host's loopback answering `GET /ready` with 200
/// while the flag returned is true, 503 after: a readiness probe the test
/// controls. It stops after ten minutes at the latest.
fn readiness_server() -> (u16, Arc<AtomicBool>) {
    let port = common::free_port();
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let ready = Arc::new(AtomicBool::new(true));
    let flag = ready.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(600);
        while Instant::now() < deadline {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let status = if flag.load(Ordering::SeqCst) {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let _ =
                s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
        }
    });
    (port, ready)
}

fn on_bridge(bridge: &str, ip: Ipv4Addr) -> bool {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", bridge])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&format!("inet {ip}/32 "))
}

/// Names of the pods that are ready endpoints of Service `svc`.
fn ready_endpoints(cp: &ControlPlane, ns: &str, svc: &str) -> Vec<String> {
    let out = cp.kubectl_ok(&[
        "get",
        "endpointslices",
        "-n",
        ns,
        "-l",
        &format!("kubernetes.io/service-name={svc}"),
        "-o",
        "jsonpath={range .items[*].endpoints[?(@.conditions.ready==true)]}{.targetRef.name} {end}",
    ]);
    let mut v: Vec<String> = out.split_whitespace().map(str::to_owned).collect();
    v.sort();
    v
}

/// The LoadBalancer stand-in: a Service of type LoadBalancer in front of a
/// Deployment of demo backends gets an address from .200-.254 of the pod
/// network in `status.loadBalancer.ingress` (ipMode VIP), held on the
/// agent's bridge; connections to it reach both pods, round robin, from the
/// host and from a pod; a pod no longer ready gets no new connection while
/// one it has goes on; with
/// no endpoint a connection is closed at once; a Service with a
/// loadBalancerClass is left alone; deleting the Service removes the
/// address, and stopping the agent removes the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_agent_serves_load_balancer_services() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane_with_controllers();
    let dir = tempfile::tempdir().unwrap();
    let agent = NodeAgent::start(cp, dir.path(), "10.213.250");
    let bridge = format!("{}br", agent.prefix);
    agent.wait_ready(cp);
    let ns = cp.namespace("agent-lb");
    cp.apply(&ns, "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: default}\n");
    cp.apply(
        &ns,
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: demo}}
  template:
    metadata: {labels: {app: demo}}
    spec:
      terminationGracePeriodSeconds: 5
      securityContext: {runAsUser: 65532, runAsGroup: 65532, runAsNonRoot: true}
      containers:
      - name: demo
        image: ssegate:test
        args: [demo-backend, --listen, "0.0.0.0:8081", --server-id, "$(POD_NAME)"]
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        ports: [{name: http, containerPort: 8081}]
        readinessProbe:
          httpGet: {path: "/.sse?count=0", port: http}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: classy}
spec:
  type: LoadBalancer
  loadBalancerClass: example.com/another
  selector: {app: demo}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: demo}
spec:
  type: LoadBalancer
  selector: {app: demo}
  ports: [{name: http, port: 80, targetPort: http}]
"#,
    );
    let ingress = |svc: &str| {
        cp.get(
            &ns,
            &format!("service/{svc}"),
            "{.status.loadBalancer.ingress[*].ip} {.status.loadBalancer.ingress[*].ipMode}",
        )
    };
    let ip: Ipv4Addr = wait_for(Duration::from_secs(30), "LoadBalancer ingress", &agent, || {
        let s = ingress("demo");
        let w: Vec<&str> = s.split(' ').collect();
        (w.len() == 2 && !w[0].is_empty()).then(|| {
            assert_eq!(w[1], "VIP", "{s}");
            w[0].parse().unwrap()
        })
    });
    let [a, b, c, host] = ip.octets();
    assert_eq!([a, b, c], [10, 213, 250], "{ip}");
    assert!((200..=254).contains(&host), "{ip} is not in the load balancers' range");
    assert!(on_bridge(&bridge, ip), "{ip}/32 on {bridge}");
    assert_eq!(
        ingress("classy"),
        " ",
        "a loadBalancerClass is another implementation's"
    );
    let events = cp.kubectl_ok(&[
        "get",
        "events",
        "-n",
        &ns,
        "--field-selector",
        "involvedObject.name=demo,involvedObject.kind=Service,reason=IPAllocated",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(events.contains(&ip.to_string()), "allocation event: {events:?}");

    wait_for(Duration::from_secs(90), "2 ready replicas", &agent, || {
        (cp.get(&ns, "deployment/demo", "{.status.readyReplicas}") == "2").then_some(())
    });
    let mut pods: Vec<String> = cp
        .kubectl_ok(&[
            "get",
            "pods",
            "-n",
            &ns,
            "-l",
            "app=demo",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    pods.sort();
    assert_eq!(pods.len(), 2, "{pods:?}");
    let addr = SocketAddr::from((ip, 80));
    // Both pods, once the slice lists both as ready.
    wait_for(
        Duration::from_secs(30),
        "both pods through the load balancer",
        &agent,
        || {
            let mut seen: Vec<String> = (0..4).filter_map(|_| sse_server_via(addr).ok()).collect();
            seen.sort();
            seen.dedup();
            (seen == pods).then_some(())
        },
    );
    // Round robin: consecutive connections alternate.
    let order: Vec<String> = (0..6)
        .map(|_| sse_server_via(addr).unwrap_or_else(|e| panic!("{e}\n{}", agent.logs())))
        .collect();
    assert!(order.windows(2).all(|w| w[0] != w[1]), "round robin: {order:?}");
    // Pods reach it too (the host answers ARP for it on the bridge).
    let netns = agent.netns();
    assert_eq!(netns.len(), 2, "{netns:?}");
    let from_pod = Command::new("ip")
        .args(["netns", "exec", &netns[0], "bash", "-c"])
        .arg(format!(
            "exec 3<>/dev/tcp/{ip}/80; printf 'GET /.sse?count=1 HTTP/1.1\\r\\nHost: lb\\r\\nConnection: close\\r\\n\\r\\n' >&3; timeout 5 cat <&3"
        ))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&from_pod.stdout);
    assert!(body.contains("event: server\ndata: demo-"), "from a pod: {body:?}");

    // A pod going unready gets no new connection (what a rollout relies
    // on), while one it has already keeps streaming. Its readiness is the
    // test's: the probe asks a server of the test's, on the host's
    // loopback, which the agent probes from.
    let (ready_port, toggle_ready) = readiness_server();
    cp.apply(
        &ns,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: toggle, labels: {{app: demo}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 5
  securityContext: {{runAsUser: 65532, runAsGroup: 65532, runAsNonRoot: true}}
  containers:
  - name: demo
    image: ssegate:test
    args: [demo-backend, --listen, "0.0.0.0:8081", --server-id, toggle]
    ports: [{{name: http, containerPort: 8081}}]
    readinessProbe:
      httpGet: {{host: 127.0.0.1, port: {ready_port}, path: /ready}}
      periodSeconds: 1
      failureThreshold: 1
"#,
            node = agent.node
        ),
    );
    wait_for(Duration::from_secs(30), "three ready endpoints", &agent, || {
        (ready_endpoints(cp, &ns, "demo").len() == 3).then_some(())
    });
    let mut held = wait_for(Duration::from_secs(10), "a stream to the toggle pod", &agent, || {
        let (name, s) = sse_stream_via(addr).ok()?;
        (name == "toggle").then_some(s)
    });
    toggle_ready.store(false, Ordering::SeqCst);
    wait_for(Duration::from_secs(30), "the toggle pod unready", &agent, || {
        (ready_endpoints(cp, &ns, "demo") == pods).then_some(())
    });
    wait_for(
        Duration::from_secs(10),
        "new connections to the ready pods only",
        &agent,
        || {
            (0..4)
                .all(|_| sse_server_via(addr).is_ok_and(|s| pods.contains(&s)))
                .then_some(())
        },
    );
    for _ in 0..6 {
        let s = sse_server_via(addr).unwrap();
        assert!(pods.contains(&s), "{s} is not ready");
    }
    // The established stream still gets events: what was sent before is
    // drained, then new ones come (every 100 ms).
    let mut buf = [0u8; 4096];
    held.set_nonblocking(true).unwrap();
    for _ in 0..10_000 {
        if !held.read(&mut buf).is_ok_and(|n| n > 0) {
            break;
        }
    }
    held.set_nonblocking(false).unwrap();
    let mut fresh = Vec::new();
    for _ in 0..20 {
        match held.read(&mut buf) {
            Ok(n) if n > 0 => fresh.extend_from_slice(&buf[..n]),
            _ => break,
        }
        if String::from_utf8_lossy(&fresh).contains("event: time") {
            break;
        }
    }
    let fresh = String::from_utf8_lossy(&fresh);
    assert!(fresh.contains("event: time"), "the held stream goes on: {fresh:?}");
    drop(held);
    cp.kubectl_ok(&["delete", "-n", &ns, "pod/toggle", "--wait=false"]);

    // No replica (and the toggle pod gone): no endpoint, connections
    // closed at once.
    cp.kubectl_ok(&["scale", "-n", &ns, "deployment/demo", "--replicas=0"]);
    wait_for(Duration::from_secs(30), "no pods", &agent, || {
        let out = cp.kubectl_ok(&["get", "pods", "-n", &ns, "-o", "jsonpath={.items[*].metadata.name}"]);
        out.trim().is_empty().then_some(())
    });
    wait_for(
        Duration::from_secs(10),
        "connection closed without endpoints",
        &agent,
        || closed_without_reply(addr).then_some(()),
    );
    for _ in 0..3 {
        assert!(closed_without_reply(addr), "no endpoint: closed at once");
    }

    // A second Service (no endpoints): another address. Deleting the first
    // removes its address; stopping the agent removes the second's.
    cp.apply(
        &ns,
        "apiVersion: v1\nkind: Service\nmetadata: {name: second}\nspec: {type: LoadBalancer, ports: [{name: web, port: 8080}]}\n",
    );
    let second: Ipv4Addr = wait_for(Duration::from_secs(30), "second ingress", &agent, || {
        ingress("second").split(' ').next().and_then(|s| s.parse().ok())
    });
    assert_ne!(second, ip);
    assert!(on_bridge(&bridge, second));
    cp.kubectl_ok(&["delete", "-n", &ns, "service/demo"]);
    wait_for(Duration::from_secs(10), "address removed", &agent, || {
        (!on_bridge(&bridge, ip)).then_some(())
    });
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "nothing listens at {addr} any more"
    );
    assert!(on_bridge(&bridge, second), "the other Service keeps its address");
    // A Service that stops being of type LoadBalancer loses its address
    // and its status.
    cp.apply(
        &ns,
        "apiVersion: v1\nkind: Service\nmetadata: {name: third}\nspec: {type: LoadBalancer, ports: [{name: web, port: 8080}]}\n",
    );
    let third: Ipv4Addr = wait_for(Duration::from_secs(30), "third ingress", &agent, || {
        ingress("third").split(' ').next().and_then(|s| s.parse().ok())
    });
    assert!(on_bridge(&bridge, third));
    cp.kubectl_ok(&[
        "patch",
        "-n",
        &ns,
        "service/third",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ]);
    wait_for(
        Duration::from_secs(10),
        "type change: address and status gone",
        &agent,
        || (!on_bridge(&bridge, third) && ingress("third") == " ").then_some(()),
    );
    let mut agent = agent;
    agent.stop();
    let logs = agent.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("address removed") && l.contains(&second.to_string())),
        "the agent removes its addresses on SIGTERM:\n{logs}"
    );
    cp.kubectl_ok(&[
        "delete",
        "-n",
        &ns,
        "service/second",
        "service/third",
        "deployment/demo",
        "--wait=false",
    ]);
    // Shown with --nocapture.
    println!("agent log:\n{logs}");
}

/// Volumes: a pod whose shell script reads its ConfigMap (items, modes,
/// subPath), Secret (defaultMode) and optional absent ConfigMap volumes and
/// writes its emptyDir, as uid 65532 with fsGroup 2000. It first waits in
/// ContainerCreating with a FailedMount Event while its ConfigMap is missing;
/// its mount paths, absent from the host, are created and removed with the
/// pod, and nothing of it is mounted on the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_agent_mounts_volumes() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane_with_controllers();
    let dir = tempfile::tempdir().unwrap();
    let agent = NodeAgent::start(cp, dir.path(), "10.213.250");
    let node = agent.node.clone();
    agent.wait_ready(cp);
    let ns = cp.namespace("agent-vol");
    cp.apply(&ns, "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: default}\n");
    cp.apply(
        &ns,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: vol-sec}\nstringData: {password: s3cret, user: admin}\n",
    );
    let m = format!("/tmp/sgna-vol-{}", std::process::id());
    let _ = std::fs::remove_dir_all(&m);
    let script = format!(
        r#"set -e
M={m}
stat -c '%n %a %u %g' $M/cfg/greeting $M/cfg/sub/nested.txt $M/sec/password $M/sec/user $M/one.conf
echo "greeting=$(cat $M/cfg/greeting)"
echo "nested=$(cat $M/cfg/sub/nested.txt)"
echo "password=$(cat $M/sec/password)"
echo "one=$(cat $M/one.conf)"
echo "cfg-files=$(ls $M/cfg | tr '\n' ' ')"
echo "opt-files=$(ls -A $M/opt | wc -l)"
echo hi > $M/scratch/w
echo "scratch=$(cat $M/scratch/w) $(stat -c '%a %g' $M/scratch)"
if touch $M/cfg/x 2>/dev/null; then echo cfg=writable; else echo cfg=read-only; fi
if touch $M/ro/x 2>/dev/null; then echo ro=writable; else echo ro=read-only; fi
echo "groups=$(id -G)"
echo done
"#
    );
    let pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: vols}}
spec:
  nodeName: {node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  securityContext: {{runAsUser: 65532, runAsGroup: 65532, fsGroup: 2000}}
  containers:
  - name: c
    image: shell:test
    command: [sh, -c]
    args:
    - |
{script}
    volumeMounts:
    - {{name: cfg, mountPath: {m}/cfg}}
    - {{name: cfg, mountPath: {m}/one.conf, subPath: greeting}}
    - {{name: sec, mountPath: {m}/sec}}
    - {{name: opt, mountPath: {m}/opt}}
    - {{name: scratch, mountPath: {m}/scratch}}
    - {{name: scratch, mountPath: {m}/ro, readOnly: true}}
  volumes:
  - name: cfg
    configMap:
      name: vol-cfg
      defaultMode: 416
      items:
      - {{key: greeting, path: greeting}}
      - {{key: nested, path: sub/nested.txt, mode: 384}}
  - name: sec
    secret: {{secretName: vol-sec, defaultMode: 256}}
  - name: opt
    configMap: {{name: absent, optional: true}}
  - name: scratch
    emptyDir: {{}}
"#,
        script = script
            .lines()
            .map(|l| format!("      {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    cp.apply(&ns, &pod);
    // The ConfigMap does not exist yet: FailedMount, the container waits.
    wait_for(Duration::from_secs(30), "FailedMount", &agent, || {
        let out = cp.kubectl_ok(&[
            "get",
            "events",
            "-n",
            &ns,
            "--field-selector",
            "involvedObject.name=vols,reason=FailedMount",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        out.contains("configmap \"vol-cfg\" not found").then_some(())
    });
    assert_eq!(
        cp.get(
            &ns,
            "pod/vols",
            "{.status.phase} {.status.containerStatuses[0].state.waiting.reason}"
        ),
        "Pending ContainerCreating"
    );
    cp.apply(
        &ns,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: vol-cfg}\ndata: {greeting: hello, nested: deep, unlisted: x}\n",
    );
    wait_for(Duration::from_secs(30), "pod Succeeded", &agent, || {
        let phase = cp.get(&ns, "pod/vols", "{.status.phase}");
        assert_ne!(phase, "Failed", "{}", agent.logs());
        (phase == "Succeeded").then_some(())
    });
    let uid = cp.get(&ns, "pod/vols", "{.metadata.uid}");
    let log = std::fs::read_to_string(dir.path().join(format!("root/pods/{uid}/c.log"))).unwrap();
    let want = [
        format!("{m}/cfg/greeting 640 65532 2000"),
        format!("{m}/cfg/sub/nested.txt 600 65532 2000"),
        format!("{m}/sec/password 400 65532 2000"),
        format!("{m}/sec/user 400 65532 2000"),
        format!("{m}/one.conf 640 65532 2000"),
        "greeting=hello".into(),
        "nested=deep".into(),
        "password=s3cret".into(),
        "one=hello".into(),
        "cfg-files=greeting sub ".into(),
        "opt-files=0".into(),
        "scratch=hi 2777 2000".into(),
        "cfg=read-only".into(),
        "ro=read-only".into(),
        "groups=65532 2000".into(),
        "done".into(),
    ];
    let lines: BTreeSet<&str> = log.lines().collect();
    for w in &want {
        assert!(lines.contains(w.as_str()), "{w:?} not in the pod's output:\n{log}");
    }
    // Mounted in the pod's namespace only; the mount points the agent made
    // are there until the pod goes.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&m), "a volume mounted on the host:\n{mounts}");
    assert!(Path::new(&m).join("cfg").is_dir());
    cp.kubectl_ok(&["delete", "-n", &ns, "pod/vols", "--wait=false"]);
    wait_for(Duration::from_secs(20), "pod removed", &agent, || {
        let out = cp.kubectl(&["get", "-n", &ns, "pod/vols"], None);
        (!out.status.success()).then_some(())
    });
    wait_for(Duration::from_secs(10), "mount points removed", &agent, || {
        (!Path::new(&m).exists()).then_some(())
    });
    assert!(
        !dir.path().join(format!("root/pods/{uid}/volumes")).exists(),
        "the pod's volume files go with it"
    );
}
