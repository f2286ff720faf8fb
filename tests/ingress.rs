//! Ingresses with ingress-nginx annotations, served from a folder by the
//! in-process gateway and read by a real HTTP client: buffering as the
//! annotations say (asserted by when each event arrives), a live flip that
//! leaves the open stream alone, the read timeout as an idle timeout (never
//! a cap), the HTTPS redirect, CORS, and class selection.

mod common;

use common::*;
use std::time::Duration;

/// An Ingress `name` of class `class` sending every path under `/` of
/// `host` (any host when empty) to Service `svc` by port name.
fn ingress(name: &str, class: &str, host: &str, annotations: &[(&str, &str)], extra_spec: &str) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  annotations:\n    ssegate.test/owner: tests\n"
    );
    for (k, v) in annotations {
        out.push_str(&format!("    {k}: {v:?}\n"));
    }
    out.push_str(&format!(
        "spec:\n  ingressClassName: {class}\n{extra_spec}  rules:\n  - "
    ));
    if !host.is_empty() {
        out.push_str(&format!("host: {host}\n    "));
    }
    out.push_str("http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: svc, port: {name: http}}}}\n");
    out
}

async fn setup(annotations: &[(&str, &str)]) -> (Upstream, Gateway) {
    let up = Upstream::start("u1").await;
    let gw = Gateway::start().await;
    gw.write("backend.yaml", &backend_yaml("svc", &[(up.addr, true)]));
    gw.write("ingress.yaml", &ingress("web", "ssegate", "", annotations, ""));
    (up, gw)
}

#[tokio::test]
async fn proxy_buffering_on_coalesces_and_a_live_flip_to_off_leaves_the_open_stream_alone() {
    let (up, gw) = setup(&[("nginx.ingress.kubernetes.io/proxy-buffering", "on")]).await;
    // "on" is Enabled: small events are held until the body ends.
    let resp = client().get(gw.url("/sse?tag=on&n=4&every=100")).send().await.unwrap();
    let got = read_stream(resp, usize::MAX).await;
    assert_eq!(got.events.len(), 4);
    assert!(
        got.events[0].1 > up.emits("on")[3],
        "proxy-buffering: on must hold the events back"
    );

    // A stream opened under "on" that is still running when it flips.
    let open = client()
        .get(gw.url("/sse?tag=open&n=8&every=100"))
        .send()
        .await
        .unwrap();
    let open = tokio::spawn(read_stream(open, usize::MAX));
    tokio::time::sleep(Duration::from_millis(150)).await;
    gw.write(
        "ingress.yaml",
        &ingress(
            "web",
            "ssegate",
            "",
            &[("nginx.ingress.kubernetes.io/proxy-buffering", "off")],
            "",
        ),
    );
    let resp = client().get(gw.url("/sse?tag=off&n=4&every=100")).send().await.unwrap();
    let got = read_stream(resp, usize::MAX).await;
    let emits = up.emits("off");
    for i in 0..3 {
        assert!(got.events[i].1 < emits[i + 1], "off: event {} was held back", i + 1);
    }
    // The stream opened before the flip finished whole, as it began: still
    // coalesced, its first event held until the upstream's last was out.
    let open = open.await.unwrap();
    assert_eq!(open.events.len(), 8, "{:?}", open.error);
    assert!(open.error.is_none());
    let open_emits = up.emits("open");
    assert!(
        open.events[0].1 > open_emits[7],
        "the stream opened under \"on\" was streamed after the flip: its first event came before the upstream's last"
    );
}

#[tokio::test]
async fn proxy_read_timeout_ends_silence_but_never_caps_a_lively_stream() {
    let (_up, gw) = setup(&[
        ("nginx.ingress.kubernetes.io/proxy-buffering", "off"),
        ("nginx.ingress.kubernetes.io/proxy-read-timeout", "1"),
    ])
    .await;
    // Ten events 300 ms apart: three seconds in all, three times the
    // "timeout", and never a second of silence.
    let started = tokio::time::Instant::now();
    let resp = client()
        .get(gw.url("/sse?tag=lively&n=10&every=300"))
        .send()
        .await
        .unwrap();
    let got = read_stream(resp, usize::MAX).await;
    assert_eq!(got.events.len(), 10, "a lively stream was cut: {:?}", got.error);
    assert!(started.elapsed() > Duration::from_millis(2700));

    // An event, then 30 s of silence: cut after about a second of it.
    let started = tokio::time::Instant::now();
    let resp = client().get(gw.url("/stall?tag=quiet")).send().await.unwrap();
    let got = read_stream(resp, usize::MAX).await;
    let took = started.elapsed();
    assert_eq!(got.events.len(), 1);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "cut after {took:?}"
    );
}

#[tokio::test]
async fn hosts_with_tls_redirect_plain_http_with_308_unless_told_not_to() {
    let up = Upstream::start("u1").await;
    let gw = Gateway::start().await;
    gw.write("backend.yaml", &backend_yaml("svc", &[(up.addr, true)]));
    let tls = "  tls: [{hosts: [secure.test], secretName: cert}]\n";
    // The Secret is missing (reported), which does not change the redirect.
    let problems = gw.write_allowing_errors("ingress.yaml", &ingress("web", "ssegate", "secure.test", &[], tls));
    assert!(problems.is_empty(), "{problems:?}");
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects
        .post(gw.url("/sse/a?b=c"))
        .header("host", "secure.test:8080")
        .body("kept")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 308, "308 keeps the method and body");
    assert_eq!(resp.headers()["location"], "https://secure.test/sse/a?b=c");
    assert!(up.headers("").is_empty(), "nothing reached the upstream");
    // ACME HTTP-01 challenges are answered over plain HTTP.
    let resp = no_redirects
        .get(gw.url("/.well-known/acme-challenge/token"))
        .header("host", "secure.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "upstream u1", "proxied, not redirected");

    gw.write(
        "ingress.yaml",
        &ingress(
            "web",
            "ssegate",
            "secure.test",
            &[("nginx.ingress.kubernetes.io/ssl-redirect", "false")],
            tls,
        ),
    );
    let resp = no_redirects
        .get(gw.url("/sse?tag=plain&n=1"))
        .header("host", "secure.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn enable_cors_answers_preflights_with_ingress_nginx_defaults() {
    let (_up, gw) = setup(&[("nginx.ingress.kubernetes.io/enable-cors", "true")]).await;
    let resp = client()
        .request(reqwest::Method::OPTIONS, gw.url("/sse"))
        .header("origin", "https://app.test")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "last-event-id")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(h.get("access-control-allow-credentials").is_none(), "never with *");
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("GET") && methods.contains("PATCH"), "{methods}");

    let resp = client()
        .get(gw.url("/sse?tag=c&n=1"))
        .header("origin", "https://app.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn only_ingresses_of_our_class_are_served_and_the_others_are_named() {
    let up = Upstream::start("u1").await;
    let gw = Gateway::start().await;
    gw.write("backend.yaml", &backend_yaml("svc", &[(up.addr, true)]));
    let problems = gw.write_allowing_errors("ingress.yaml", &ingress("theirs", "nginx", "a.test", &[], ""));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("Ingress default/theirs is not served: its ingressClassName \"nginx\""),
        "{problems:?}"
    );
    let resp = client()
        .get(gw.url("/sse?n=1"))
        .header("host", "a.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // Ours, on the same file: served at once.
    gw.write(
        "ingress.yaml",
        &ingress(
            "ours",
            "ssegate",
            "a.test",
            &[("nginx.ingress.kubernetes.io/limit-rate", "5")],
            "",
        ),
    );
    let resp = client()
        .get(gw.url("/sse?tag=ours&n=1"))
        .header("host", "a.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let report = gw.table();
    let report = report.reports.iter().find(|r| r.key.name == "ours").unwrap();
    assert_eq!(report.kind, ssegate::model::SourceKind::Ingress);
    assert!(report.accepted.is_true());
    // What is not honoured is listed with the Ingress, as /debug/routes shows it.
    let shown = serde_json::to_value(gw.table().describe()).unwrap();
    let listed = shown["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "default/ours")
        .unwrap();
    assert_eq!(listed["kind"], "Ingress");
    assert_eq!(
        listed["warnings"],
        serde_json::json!(["nginx.ingress.kubernetes.io/limit-rate: ignored: bandwidth per connection is not limited; who may connect is unchanged"])
    );
}
