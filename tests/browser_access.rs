//! A real browser through external authentication (issue 22): headless
//! Chromium opens a page (and, in a frame, a second one: headless Chromium
//! takes one target per process) that makes a cross-origin
//! `EventSource(url, {withCredentials: true})` to ssegate. The page's
//! server set the session cookie; ssegate forwards it to the auth service,
//! the stream opens (the browser checked the CORS answer with
//! credentials), the second tab's stream is authorised from the auth
//! cache, and the browser's own reconnect (with `Last-Event-ID`) is too.
//! Each tab reports what it sees to the page's server.

mod common;

use bytes::Bytes;
use common::auth_server::AuthServer;
use common::process::Ssegate;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;

const PAGE: &str = r#"<!doctype html>
<title>ssegate EventSource</title>
<script>
const params = new URLSearchParams(location.search);
const tab = params.get("tab");
function report(o) {
  o.tab = tab;
  fetch("/report", {method: "POST", body: JSON.stringify(o)});
}
const es = new EventSource(params.get("sse"), {withCredentials: true});
es.onopen = () => report({open: true});
es.onmessage = (e) => report({data: e.data, id: e.lastEventId});
es.onerror = () => report({error: es.readyState});
// The first tab opens the second as a frame: a second document of the
// same browser, with the same cookies.
const second = params.get("second");
if (second) {
  window.addEventListener("load", () => {
    const frame = document.createElement("iframe");
    frame.src = second;
    document.body.appendChild(frame);
  });
}
</script>
"#;

/// The page's own server: the page (with the session cookie) and the
/// tabs' reports, one JSON value per report.
async fn page_server(reports: Arc<Mutex<Vec<serde_json::Value>>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let reports = reports.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let reports = reports.clone();
                    async move {
                        let resp = if req.uri().path() == "/report" {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            if let Ok(v) = serde_json::from_slice(&body) {
                                reports.lock().unwrap().push(v);
                            }
                            Response::new(Full::new(Bytes::new()))
                        } else {
                            Response::builder()
                                .header("content-type", "text/html")
                                .header("set-cookie", "session=dave; Path=/; SameSite=Lax")
                                .body(Full::new(Bytes::from_static(PAGE.as_bytes())))
                                .unwrap()
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_source_with_credentials_passes_external_auth_and_reconnects_from_the_cache() {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("a Chromium is needed (scripts/prereqs.sh installs Debian's)");
    let reports: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let page_port = page_server(reports.clone()).await;
    let page_origin = format!("http://127.0.0.1:{page_port}");

    let up = Upstream::start("u1").await;
    let auth = AuthServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("backend.yaml"), backend_yaml("svc", &[(up.addr, true)])).unwrap();
    std::fs::write(dir.path().join("auth.yaml"), auth.service_yaml()).unwrap();
    std::fs::write(
        dir.path().join("ingress.yaml"),
        format!(
            r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: events
  annotations:
    nginx.ingress.kubernetes.io/enable-cors: "true"
    nginx.ingress.kubernetes.io/cors-allow-origin: "{page_origin}"
    nginx.ingress.kubernetes.io/cors-allow-credentials: "true"
    nginx.ingress.kubernetes.io/auth-url: "http://auth.default.svc/session"
    nginx.ingress.kubernetes.io/auth-cache-key: "$cookie_session"
    nginx.ingress.kubernetes.io/auth-cache-duration: "200 1m"
    nginx.ingress.kubernetes.io/auth-response-headers: "X-Auth-Request-User"
spec:
  ingressClassName: ssegate
  rules:
  - http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: svc, port: {{number: 80}}}}}}}}
"#
        ),
    )
    .unwrap();
    let gw = Ssegate::start(&["standalone", "--dir", dir.path().to_str().unwrap()], logs.path()).await;

    // Three events, then the stream ends and the browser reconnects.
    let tab_url = |tab: &str| {
        let sse = format!("{}/sse?tag={tab}&n=3&every=100", gw.proxy);
        format!("{page_origin}/?tab={tab}&sse={}", urlencode(&sse))
    };
    let profile = tempfile::tempdir().unwrap();
    let _browser = Browser(
        Command::new(chromium)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("{}&second={}", tab_url("one"), urlencode(&tab_url("two"))))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(logs.path().join("chromium.log")).unwrap())
            .spawn()
            .unwrap(),
    );

    // Each tab receives the three events, then reconnects: a second open.
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = |tab: &str| -> (Vec<String>, usize) {
        let reports = reports.lock().unwrap();
        let mine = reports.iter().filter(|r| r["tab"] == tab);
        let ids = mine
            .clone()
            .filter_map(|r| r["id"].as_str().map(str::to_owned))
            .collect();
        let opens = mine.filter(|r| r["open"] == true).count();
        (ids, opens)
    };
    loop {
        let (one, two) = (seen("one"), seen("two"));
        if one.0.len() >= 3 && two.0.len() >= 3 && one.1 >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the tabs saw {one:?} and {two:?}; reports: {:?}\n{}\nChromium:\n{}",
            reports.lock().unwrap(),
            gw.logs(),
            std::fs::read_to_string(logs.path().join("chromium.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen("one").0[..3], ["1", "2", "3"]);
    assert_eq!(seen("two").0[..3], ["1", "2", "3"]);

    // The browser's cookie reached the auth service, once: the second tab
    // and the reconnect were answered from the cache.
    let asked = auth.seen();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].headers["cookie"], "session=dave");
    assert_eq!(asked[0].headers["origin"], page_origin);
    // The reconnect named the last event it had.
    let reconnect = up.headers("one");
    assert_eq!(reconnect["last-event-id"], "3");
    assert_eq!(reconnect["x-auth-request-user"], "dave");
}

/// Percent-encodes a URL for a query parameter.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
