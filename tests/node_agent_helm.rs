//! The chart really running: `helm install` with default values onto the
//! node agent's node (with kube-controller-manager and kube-scheduler) gives
//! 2 ready replicas, one holding the status Lease; the README's demo
//! (backend pods, Service, Route) streams events through each replica's pod
//! address; `helm uninstall` stops them. Needs root (network namespaces).

mod common;

use common::cluster::control_plane_with_controllers;
use common::node_agent::{wait_for, NodeAgent};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Where scripts/control-plane.sh caches helm.
fn helm_bin() -> PathBuf {
    std::env::var("SSEGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let cache = std::env::var("XDG_CACHE_HOME")
                .unwrap_or_else(|_| format!("{}/.cache", std::env::var("HOME").unwrap()));
            PathBuf::from(cache).join("ssegate/bin")
        })
        .join("helm")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_two_replicas_that_stream_the_demo() {
    let cp = control_plane_with_controllers();
    let dir = tempfile::tempdir().unwrap();
    let agent = NodeAgent::start(cp, dir.path(), "10.213.254");
    let node = agent.node.clone();
    wait_for(Duration::from_secs(60), "node Ready", &agent, || {
        let ready = cp.get(
            "default",
            &format!("node/{node}"),
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        );
        (ready == "True").then_some(())
    });
    let helm = |args: &[&str]| {
        let out = Command::new(helm_bin())
            .args(args)
            .current_dir(ROOT)
            .env("KUBECONFIG", &cp.kubeconfig)
            .output()
            .expect("helm is built by scripts/control-plane.sh build");
        assert!(
            out.status.success(),
            "helm {args:?}:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            agent.logs()
        );
    };
    helm(&[
        "install",
        "sg",
        "charts/ssegate",
        "-n",
        "sg",
        "--create-namespace",
        "--wait",
        "--timeout",
        "120s",
    ]);
    wait_for(Duration::from_secs(60), "2 ready replicas", &agent, || {
        (cp.get("sg", "deployment/sg-ssegate", "{.status.readyReplicas}") == "2").then_some(())
    });
    let replicas: Vec<(String, String)> = cp
        .kubectl_ok(&[
            "get",
            "pods",
            "-n",
            "sg",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.podIP}{\"\\n\"}{end}",
        ])
        .lines()
        .map(|l| {
            let (name, ip) = l.split_once(' ').unwrap();
            (name.to_owned(), ip.to_owned())
        })
        .collect();
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    // One replica holds the status Lease: the in-pod controller reached the
    // apiserver with the mounted token.
    let holder = wait_for(Duration::from_secs(60), "a Lease holder", &agent, || {
        let h = cp.get("sg", "lease/sg-ssegate-status", "{.spec.holderIdentity}");
        replicas.iter().any(|(name, _)| *name == h).then_some(h)
    });

    cp.kubectl_ok(&["apply", "-f", &format!("{ROOT}/manifests/examples/demo.yaml")]);
    wait_for(Duration::from_secs(60), "demo backend ready", &agent, || {
        (cp.get("default", "deployment/demo-backend", "{.status.readyReplicas}") == "2").then_some(())
    });
    for (name, ip) in &replicas {
        let url = format!("http://{ip}:8080/.sse?count=1&interval=50ms");
        let mut first = String::new();
        for _ in 0..100 {
            if let Ok(resp) = common::client().get(&url).timeout(Duration::from_secs(5)).send().await {
                if resp.status() == 200 {
                    let got = common::read_stream(resp, 3).await;
                    first = got.events.first().map(|e| e.0.clone()).unwrap_or_default();
                    if first.contains("event: server\ndata: demo-backend-") {
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            first.contains("event: server\ndata: demo-backend-"),
            "replica {name} at {ip} (lease holder {holder}) did not stream the demo: {first:?}\n{}",
            agent.logs()
        );
    }
    assert_eq!(
        cp.get(
            "default",
            "route/demo",
            "{.status.conditions[?(@.type==\"Accepted\")].status}"
        ),
        "True"
    );

    helm(&["uninstall", "sg", "-n", "sg", "--wait", "--timeout", "120s"]);
    wait_for(Duration::from_secs(60), "replicas gone", &agent, || {
        cp.get("sg", "pods", "{.items[*].metadata.name}")
            .is_empty()
            .then_some(())
    });
    cp.kubectl_ok(&[
        "delete",
        "-f",
        &format!("{ROOT}/manifests/examples/demo.yaml"),
        "--wait=false",
    ]);
    wait_for(Duration::from_secs(60), "demo pods gone", &agent, || {
        agent.netns().is_empty().then_some(())
    });
}
