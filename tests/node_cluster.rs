//! The ssegate image on a node of real components (scripts/node.sh:
//! containerd and runc, the CNI bridge, kubelet, kube-proxy), with
//! kube-controller-manager and kube-scheduler: a Deployment's pods are
//! scheduled onto the node, run, pass their readiness probes, and so fill
//! the Service's EndpointSlice with their pod IPs, each serving SSE there;
//! scaling down stops a pod with SIGTERM and takes it out of the slice; a
//! draining ssegate pod shows unready before it goes and exits 0 by
//! itself; deleted pods give their addresses back.
//!
//! Needs root (the node), and the machine's one node (it waits while
//! another control plane's node runs).

mod common;

use common::cluster::control_plane_with_node;
use common::node::{self, wait_for, PodExits};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The node's name (scripts/node.sh).
const NODE: &str = "ssegate-node";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_pods_run_on_the_node_and_fill_endpoint_slices() {
    let cp = control_plane_with_node();
    node::import_ssegate_image(cp);
    let kubeconfig = kube::config::Kubeconfig::read_from(&cp.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let exits = PodExits::start(kube::Client::try_from(config).unwrap()).await;

    let ns = cp.namespace("node-cluster");
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
      terminationGracePeriodSeconds: 30
      securityContext: {runAsUser: 65532, runAsGroup: 65532, runAsNonRoot: true}
      containers:
      - name: demo
        image: ssegate:0.1.0
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
metadata: {name: demo}
spec:
  selector: {app: demo}
  ports: [{name: http, port: 80, targetPort: http}]
"#,
    );
    wait_for(Duration::from_secs(90), "2 ready replicas", cp, || {
        (cp.get(&ns, "deployment/demo", "{.status.readyReplicas}") == "2").then_some(())
    });
    let pods = || -> BTreeSet<(String, String)> {
        let out = cp.kubectl_ok(&[
            "get",
            "pods",
            "-n",
            &ns,
            "-l",
            "app=demo",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.spec.nodeName}{\"\\n\"}{end}",
        ]);
        out.lines()
            .map(|l| {
                let w: Vec<&str> = l.split(' ').collect();
                assert_eq!(w.get(2).copied(), Some(NODE), "scheduled onto the node: {l}");
                (w[0].to_owned(), w[1].to_owned())
            })
            .collect()
    };
    let running = pods();
    assert_eq!(running.len(), 2, "{running:?}");
    let ready_endpoints = || -> BTreeSet<String> {
        cp.get(
            &ns,
            "endpointslices",
            "{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{\"\\n\"}{end}",
        )
        .lines()
        .map(str::to_owned)
        .collect()
    };
    // The EndpointSlice follows the readiness the kubelet reports.
    let ips: BTreeSet<String> = running.iter().map(|(_, ip)| ip.clone()).collect();
    wait_for(
        Duration::from_secs(30),
        "EndpointSlice lists both pods ready",
        cp,
        || (ready_endpoints() == ips).then_some(()),
    );
    // CNI (host-local) holds each pod's address while it runs.
    let ipam = cp.dir.join("node/ipam/ssegate");
    for ip in &ips {
        assert!(ipam.join(ip).exists(), "no reservation of {ip} in {}", ipam.display());
    }
    // Each endpoint serves SSE, naming its own pod.
    for (name, ip) in &running {
        let resp = common::client()
            .get(format!("http://{ip}:8081/.sse?count=0"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        let got = common::read_stream(resp, 2).await;
        assert!(
            got.events
                .first()
                .is_some_and(|e| e.0.contains(&format!("data: {name}\n"))),
            "{name} at {ip}: {:?}",
            got.events
        );
    }
    // The token and ca.crt came from the controller-made ServiceAccount
    // and kube-root-ca.crt.
    assert_eq!(
        cp.get(
            &ns,
            &format!("pod/{}", running.first().unwrap().0),
            "{.spec.serviceAccountName}"
        ),
        "default"
    );

    // Scale down: the ReplicaSet deletes one pod; the kubelet stops it with
    // SIGTERM (well before the 30 s grace) and removes it; the slice follows.
    let scaled = Instant::now();
    cp.kubectl_ok(&["scale", "-n", &ns, "deployment/demo", "--replicas=1"]);
    wait_for(Duration::from_secs(20), "one pod left", cp, || {
        (pods().len() == 1).then_some(())
    });
    assert!(
        scaled.elapsed() < Duration::from_secs(15),
        "took {:?}",
        scaled.elapsed()
    );
    let left: BTreeSet<String> = pods().into_iter().map(|(_, ip)| ip).collect();
    wait_for(Duration::from_secs(20), "EndpointSlice lists the pod left", cp, || {
        (ready_endpoints() == left).then_some(())
    });

    // Graceful deletion of a process that drains: ssegate turns unready on
    // SIGTERM and exits after its drain delay; meanwhile the kubelet keeps
    // probing, so the pod is seen Running and unready before it goes, and
    // the exit is ssegate's own (0), not the grace period's SIGKILL.
    cp.apply(
        &ns,
        r#"apiVersion: v1
kind: Pod
metadata: {name: drainer}
spec:
  terminationGracePeriodSeconds: 30
  securityContext: {runAsUser: 65532, runAsGroup: 65532, runAsNonRoot: true}
  containers:
  - name: ssegate
    image: ssegate:0.1.0
    args: [standalone, --dir, /var/run/secrets/kubernetes.io/serviceaccount, --listen, "0.0.0.0:8080",
           --admin, "0.0.0.0:9090", --drain-delay, 3s]
    readinessProbe: {httpGet: {path: /readyz, port: 9090}, periodSeconds: 1, failureThreshold: 1}
"#,
    );
    wait_for(Duration::from_secs(30), "drainer Ready", cp, || {
        let ready = cp.get(&ns, "pod/drainer", "{.status.conditions[?(@.type==\"Ready\")].status}");
        (ready == "True").then_some(())
    });
    cp.kubectl_ok(&["delete", "-n", &ns, "pod/drainer", "--wait=false"]);
    let mut seen = BTreeSet::new();
    wait_for(Duration::from_secs(20), "drainer removed", cp, || {
        let out = cp.kubectl(
            &[
                "get",
                "-n",
                &ns,
                "pod/drainer",
                "-o",
                "jsonpath={.status.phase} {.status.conditions[?(@.type==\"Ready\")].status}",
            ],
            None,
        );
        if out.status.success() {
            seen.insert(String::from_utf8_lossy(&out.stdout).into_owned());
            None
        } else {
            Some(())
        }
    });
    assert!(
        seen.contains("Running False"),
        "readiness dropped while draining: {seen:?}"
    );
    // Once the process has exited by itself the pod may show Succeeded (as
    // a kubelet reports a deleted pod's end) before it goes; never Failed,
    // which a SIGKILL at the grace deadline would give.
    assert!(
        !seen.iter().any(|s| s.starts_with("Failed")),
        "no Failed phase: {seen:?}"
    );
    // ssegate exited by itself (0), as the kubelet reports the container's end.
    exits.assert_exited_0("drainer", Duration::from_secs(10)).await;

    cp.kubectl_ok(&["delete", "-n", &ns, "deployment/demo", "--wait=false"]);
    wait_for(Duration::from_secs(30), "all pods gone", cp, || {
        pods().is_empty().then_some(())
    });
    // CNI released every pod's address (host-local's reservations, one
    // file per address).
    wait_for(Duration::from_secs(30), "the pods' addresses released", cp, || {
        ips.iter().chain(&left).all(|ip| !ipam.join(ip).exists()).then_some(())
    });
}
