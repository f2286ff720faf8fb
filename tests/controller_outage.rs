//! The controller when the apiserver goes away: the proxy keeps serving the
//! last table, and changes made while the controller could not see them are
//! applied once it can again. Its own binary, so killing the apiserver does
//! not disturb other tests.

mod common;

use common::cluster::{control_plane, NetnsBackend};
use common::process::Ssegate;
use common::*;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

/// A TCP forwarder to the apiserver that the test can cut, so the
/// controller loses the apiserver while kubectl still reaches it.
struct Forwarder {
    port: u16,
    cut: watch::Sender<bool>,
}

impl Forwarder {
    async fn start(target: u16) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, rx) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = listener.accept().await.unwrap();
                if *rx.borrow() {
                    continue; // dropped: the connection is refused mid-handshake
                }
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Forwarder { port, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_outlives_the_apiserver_and_resyncs_when_it_returns() {
    let cp = control_plane();
    let ns = cp.namespace("outage");
    let logs = tempfile::tempdir().unwrap();
    let backend = NetnsBackend::start("pod-o").await;
    cp.apply(&ns, &backend.service_yaml("demo"));
    let route = |name: &str, spec: &str| {
        format!("apiVersion: ssegate.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}}}\nspec:\n{spec}")
    };
    cp.apply(
        &ns,
        &route(
            "demo",
            "  hostnames: [demo.test]\n  proxyBuffering: Disabled\n  rules: [{backendRefs: [{name: demo, port: 80}]}]\n",
        ),
    );
    cp.apply(
        &ns,
        &route(
            "gone",
            "  hostnames: [gone.test]\n  rules: [{backendRefs: [{name: demo, port: 80}]}]\n",
        ),
    );

    let forwarder = Forwarder::start(cp.api_port).await;
    let kubeconfig = logs.path().join("kubeconfig");
    cp.kubeconfig_via(forwarder.port, &kubeconfig);
    let args = [
        "controller",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--namespace",
        &ns,
        "--lease-namespace",
        &ns,
    ];
    let gw = Ssegate::start(&args, logs.path()).await;

    let open = client()
        .get(format!("{}/.sse?interval=100ms&count=40", gw.proxy))
        .header("host", "demo.test")
        .send()
        .await
        .unwrap();
    let open = tokio::spawn(read_stream(open, usize::MAX));

    // 1. Kill the apiserver: streams go on, and new requests are served from the last table.
    let out = cp.script("stop-apiserver");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(gw.status_of("demo.test").await, 200);
    assert_eq!(gw.status_of("gone.test").await, 200);
    let fresh = client()
        .get(format!("{}/.sse?interval=50ms&count=2", gw.proxy))
        .header("host", "demo.test")
        .send()
        .await
        .unwrap();
    assert_eq!(read_stream(fresh, usize::MAX).await.events.len(), 4);
    let out = cp.script("start-apiserver");
    assert!(
        out.status.success(),
        "apiserver did not come back: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 2. Cut the controller off, change Routes behind its back.
    forwarder.set_cut(true);
    cp.set_buffering(&ns, "demo", "Enabled");
    cp.kubectl_ok(&["delete", "-n", &ns, "route/gone"]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        gw.buffering_of("demo").await,
        "Disabled",
        "the controller cannot have seen the patch"
    );
    assert_eq!(gw.status_of("gone.test").await, 200, "the last table keeps serving");

    // 3. Let it back: it re-lists and applies both changes.
    forwarder.set_cut(false);
    let back = Instant::now();
    while !(gw.buffering_of("demo").await == "Enabled" && gw.status_of("gone.test").await == 404) {
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "no resync after the apiserver returned:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "resynced {:?} after the controller could reach the apiserver again",
        back.elapsed()
    );

    // The stream opened at the start never broke.
    let open = open.await.unwrap();
    assert!(open.error.is_none(), "{:?}", open.error);
    assert_eq!(open.events.len(), 42);
    for (i, (event, _)) in open.events.iter().enumerate() {
        assert!(event.starts_with(&format!("id: {}\n", i + 1)));
    }
}
