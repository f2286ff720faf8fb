//! Access control against a real kube-apiserver (issue 22): an Ingress's
//! basic-auth Secret is watched by name (created after the Ingress, then
//! rotated with kubectl, each live), and an Ingress whose `auth-url` names
//! a Service of the cluster is authorised by that Service's endpoints.

mod common;

use common::auth_server::AuthServer;
use common::cluster::{control_plane, NetnsBackend};
use common::netns::NetnsClient;
use common::process::Ssegate;
use common::*;
use std::time::Duration;
use tokio::time::Instant;

fn ingress(name: &str, host: &str, annotations: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  annotations:\n{annotations}spec:\n  ingressClassName: ssegate\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: demo, port: {{name: http}}}}}}}}\n"
    )
}

/// Waits until `check` holds for the answer to a request for `host`.
async fn wait_for(gw: &Ssegate, host: &str, what: &str, auth: Option<(&str, &str)>, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut req = client().get(format!("{}/.sse?count=0", gw.proxy)).header("host", host);
        if let Some((user, password)) = auth {
            req = req.basic_auth(user, Some(password));
        }
        let got = req.send().await.unwrap().status().as_u16();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {host} still answers {got}, not {want}:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn basic_auth_secrets_are_watched_by_name_and_external_auth_reaches_a_cluster_service() {
    let cp = control_plane();
    let ns = cp.namespace("access");
    let logs = tempfile::tempdir().unwrap();
    let backend = NetnsBackend::start("pod-a").await;
    cp.apply(&ns, &backend.service_yaml("demo"));
    cp.apply(
        &ns,
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: ssegate}\nspec: {controller: ssegate.dev/ingress}\n",
    );
    // The auth service, reachable at an address the apiserver accepts in
    // an EndpointSlice (not loopback): a namespace's host side.
    let net = NetnsClient::new();
    let auth = AuthServer::start_on(net.host_ip.into()).await;
    cp.apply(&ns, &auth.service_yaml());

    cp.apply(
        &ns,
        &ingress(
            "basic",
            "basic.test",
            "    nginx.ingress.kubernetes.io/auth-type: basic\n    nginx.ingress.kubernetes.io/auth-secret: basic-auth\n",
        ),
    );
    cp.apply(
        &ns,
        &ingress(
            "external",
            "external.test",
            &format!(
                "    nginx.ingress.kubernetes.io/auth-url: http://auth.{ns}.svc.cluster.local/cookie\n    nginx.ingress.kubernetes.io/auth-response-headers: X-Auth-Request-User\n"
            ),
        ),
    );
    let gw = Ssegate::controller(&ns, "access-1", &[], logs.path()).await;

    // The Secret does not exist yet: closed, never open.
    wait_for(&gw, "basic.test", "no Secret", None, 503).await;
    let htpasswd = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(htpasswd.path(), "alice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n").unwrap();
    let from_file = format!("--from-file=auth={}", htpasswd.path().display());
    let started = Instant::now();
    cp.kubectl_ok(&["create", "secret", "generic", "basic-auth", "-n", &ns, &from_file]);
    wait_for(&gw, "basic.test", "Secret created", Some(("alice", "test")), 200).await;
    eprintln!("Secret created to served: {:?}", started.elapsed());
    wait_for(&gw, "basic.test", "wrong password", Some(("alice", "nope")), 401).await;
    wait_for(&gw, "basic.test", "no password", None, 401).await;

    // Rotated with kubectl: the new password works, the old one no longer.
    std::fs::write(htpasswd.path(), "alice:{PLAIN}rotated\n").unwrap();
    let yaml = cp.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "basic-auth",
        "-n",
        &ns,
        &from_file,
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    cp.apply(&ns, &yaml);
    wait_for(&gw, "basic.test", "rotated", Some(("alice", "rotated")), 200).await;
    wait_for(&gw, "basic.test", "old password", Some(("alice", "test")), 401).await;

    // Deleted: closed again.
    cp.kubectl_ok(&["delete", "secret", "basic-auth", "-n", &ns]);
    wait_for(&gw, "basic.test", "Secret deleted", Some(("alice", "rotated")), 503).await;

    // External auth through the cluster Service's endpoints.
    wait_for(&gw, "external.test", "no session", None, 401).await;
    let resp = client()
        .get(format!("{}/.sse?count=0", gw.proxy))
        .header("host", "external.test")
        .header("cookie", "session=carol")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = auth.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.headers["host"], format!("auth.{ns}.svc.cluster.local"));
    assert_eq!(last.headers["cookie"], "session=carol");
}
