//! A Gateway's own data-plane port, over real loopback sockets: its
//! requests (HTTP/1.1 and cleartext HTTP/2) match only that Gateway's
//! rules, a shared port matches as before, and a port the table assigns to
//! no Gateway matches nothing.

use super::Proxy;
use crate::api::RouteSpec;
use crate::model::{build_table, GatewayPorts, ObjectKey, Objects, PortClaim, PortRange, RouteDefinition, SourceKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A rule for `/` whose backend Service `service` does not exist, so its
/// 503 names the Service: the answer says which rule matched.
fn definition(name: &str, created: i64, service: &str, gateway: Option<&str>) -> RouteDefinition {
    let spec: RouteSpec =
        serde_yaml::from_str(&format!("rules: [{{backendRefs: [{{name: {service}, port: 80}}]}}]")).unwrap();
    let mut valid = spec.validate().unwrap();
    for m in &mut valid.rules[0].matches {
        m.conditions.gateway = gateway.map(Arc::from);
        // Attached through the Gateway's one listener, `http`.
        m.conditions.listener = gateway.map(|_| Arc::from("http"));
    }
    RouteDefinition {
        kind: SourceKind::Route,
        key: ObjectKey::new("default", name),
        generation: None,
        created_millis: created,
        translated: Ok(valid),
        warnings: Vec::new(),
    }
}

async fn http1(port: u16) -> String {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: events.example\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(5), exchange).await.unwrap()
}

async fn http2(port: u16) -> (u16, String) {
    use http_body_util::BodyExt;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(format!("http://events.example:{port}/"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange).await.unwrap()
}

#[tokio::test]
async fn a_gateways_own_port_serves_only_its_rules_over_http1_and_http2() {
    let shared = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let own = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stray = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (shared_port, own_port, stray_port) = (
        shared.local_addr().unwrap().port(),
        own.local_addr().unwrap().port(),
        stray.local_addr().unwrap().port(),
    );

    // g1 gets `own`'s port (the first of its range); g2 has rules but no port.
    let mut objects = Objects {
        gateway_ports: GatewayPorts::assign(
            Some(PortRange::new(own_port, own_port + 1).unwrap()),
            &[PortClaim {
                gateway: ObjectKey::new("infra", "g1"),
                created_millis: 0,
                tls: false,
                held: None,
                listeners: vec![crate::model::ListenerHost {
                    name: Arc::from("http"),
                    tls: false,
                    hostname: None,
                }],
            }],
        ),
        ..Default::default()
    };
    for d in [
        definition("plain", 0, "plain-svc", None),
        definition("one", 1, "g1-svc", Some("infra/g1")),
        definition("two", 2, "g2-svc", Some("infra/g2")),
    ] {
        objects.routes.insert(d.key.clone(), d);
    }
    let table = crate::model::empty_table();
    table.store(Arc::new(build_table(&objects, 1)));
    let proxy = Proxy::new(table);
    let never = std::future::pending::<()>;
    let drain = Duration::from_secs(1);
    tokio::spawn(proxy.clone().serve(shared, never(), drain));
    tokio::spawn(proxy.clone().serve_gateway_port(own, false, never(), drain));
    tokio::spawn(proxy.clone().serve_gateway_port(stray, false, never(), drain));

    let on_shared = http1(shared_port).await;
    assert!(on_shared.starts_with("HTTP/1.1 503"), "{on_shared}");
    assert!(
        on_shared.contains("plain-svc"),
        "the oldest rule, as before: {on_shared}"
    );

    let on_own = http1(own_port).await;
    assert!(on_own.starts_with("HTTP/1.1 503"), "{on_own}");
    assert!(on_own.contains("g1-svc"), "g1's rule only: {on_own}");

    let on_stray = http1(stray_port).await;
    assert!(on_stray.starts_with("HTTP/1.1 404"), "a port of no Gateway: {on_stray}");

    let (status, body) = http2(own_port).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("g1-svc"), "HTTP/2 too: {body}");
    let (status, body) = http2(shared_port).await;
    assert_eq!((status, body.contains("plain-svc")), (503, true), "{body}");
}
