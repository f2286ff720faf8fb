//! The node agent (node-agent/, test support) against a real apiserver: it
//! registers a Ready Node with a Lease, runs a Pod bound to it as a local
//! process in a network namespace of its own (env from the downward API,
//! `$(VAR)` in args, runAsUser, a private mount of the service-account
//! token), reports probes as readiness, fails an unknown image with a
//! Warning Event, and on deletion stops the process with SIGTERM and removes
//! the object. Needs root (network namespaces), like the other cluster tests.

mod common;

use common::cluster::{control_plane, ControlPlane};
use common::node_agent::{wait_for, NodeAgent};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_agent_runs_pods_as_processes() {
    let cp = control_plane();
    let dir = tempfile::tempdir().unwrap();
    let agent = NodeAgent::start(cp, dir.path(), "10.213.250");
    let node = agent.node.clone();

    // The Node registers Ready, with allocatable pods, and holds its Lease.
    wait_for(Duration::from_secs(60), "node Ready", &agent, || {
        let ready = cp.get(
            "default",
            &format!("node/{node}"),
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        );
        (ready == "True").then_some(())
    });
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
    // No controller-manager here: the ServiceAccount the token is for.
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

    // Deletion: SIGTERM (the demo backend exits on it, long before the 30 s
    // grace period would end in SIGKILL), then the object goes and so does
    // the network namespace.
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
            .any(|l| l.contains("container exited") && l.contains("code=143")),
        "exit by SIGTERM (128+15) in the agent log:\n{logs}"
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
