//! Gateway API against a real kube-apiserver with the pinned CRDs: a
//! Gateway of ssegate's class and an HTTPRoute stream events through the
//! controller; a StreamPolicy applied with kubectl buffers new requests
//! while an open stream carries on, and deleting it restores streaming.

mod common;

use common::cluster::{control_plane, stamped, NetnsBackend};
use common::process::Ssegate;
use common::*;
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_httproute_streams_and_a_stream_policy_flips_buffering_live() {
    let cp = control_plane();
    let ns = cp.namespace("gwapi");
    let class = format!("{ns}-class");
    let logs = tempfile::tempdir().unwrap();
    let backend = NetnsBackend::start("pod-g").await;
    cp.apply(&ns, &backend.service_yaml("demo"));
    cp.apply(
        &ns,
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {class}}}\nspec: {{controllerName: ssegate.dev/gateway-controller}}\n\
             ---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  gatewayClassName: {class}\n  listeners: [{{name: http, port: 80, protocol: HTTP}}]\n\
             ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: events}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [gw.test]\n  rules: [{{backendRefs: [{{name: demo, port: 80}}]}}]\n"
        ),
    );
    let gw = Ssegate::controller(&ns, "gwapi-1", &[], logs.path()).await;
    let get = || {
        client()
            .get(format!("{}/.sse?interval=100ms&count=3", gw.proxy))
            .header("host", "gw.test")
            .send()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = get().await.unwrap().status();
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still {status}:\n{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A stream opened under Auto (event by event), open across the flip.
    let open = client()
        .get(format!("{}/.sse?interval=100ms&count=20", gw.proxy))
        .header("host", "gw.test")
        .send()
        .await
        .unwrap();
    let open = tokio::spawn(read_stream(open, usize::MAX));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let policy = "apiVersion: ssegate.dev/v1alpha1\nkind: StreamPolicy\nmetadata: {name: buffered}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: events}]\n  proxyBuffering: Enabled\n";
    let started = Instant::now();
    cp.apply(&ns, policy);
    while gw.buffering_of("events").await != "Enabled" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never applied:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("StreamPolicy apply to live: {:?}", started.elapsed());
    // GEP-713 status: the Gateway it takes effect through, Accepted.
    let accepted = "{.status.ancestors[?(@.controllerName==\"ssegate.dev/gateway-controller\")].conditions[?(@.type==\"Accepted\")].status}";
    let deadline = Instant::now() + Duration::from_secs(10);
    while cp.get(&ns, "streampolicy/buffered", accepted) != "True" {
        assert!(Instant::now() < deadline, "no Accepted ancestor:\n{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ancestor = cp.get(&ns, "streampolicy/buffered", "{.status.ancestors[0].ancestorRef.name}");
    assert_eq!(ancestor, "gw");
    let fresh = read_stream(get().await.unwrap(), usize::MAX).await;
    assert_eq!(fresh.events.len(), 5);
    assert_eq!(
        fresh.chunks.len(),
        1,
        "Enabled coalesces the small body: {:?}",
        fresh.chunks
    );

    let open = open.await.unwrap();
    assert!(open.error.is_none(), "{:?}", open.error);
    assert_eq!(open.events.len(), 22);
    for i in 2..21 {
        let next_emitted = stamped(&open.events[i + 1].0).unwrap();
        assert!(
            open.events_wall[i] < next_emitted + Duration::from_millis(5),
            "the open stream was held back at event {}",
            i + 1
        );
    }

    cp.kubectl_ok(&["delete", "-n", &ns, "streampolicy/buffered"]);
    let started = Instant::now();
    while gw.buffering_of("events").await != "Auto" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "detach never applied:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fresh = read_stream(get().await.unwrap(), usize::MAX).await;
    assert!(fresh.chunks.len() >= 4, "streams again: {:?}", fresh.chunks);
}
