//! A real external authentication service for the tests, in the style of
//! oauth2-proxy's `/oauth2/auth`: it answers by path, and records every
//! subrequest it gets (path and headers).
//!
//! - `/ok`: 200 with `X-Auth-Request-User: alice` and
//!   `X-Auth-Request-Email: alice@example.com`;
//! - `/cookie`: 200 with the user of a `session=<user>` cookie (and
//!   `Set-Cookie: refreshed=<user>`), else 401 with
//!   `WWW-Authenticate: Bearer realm="test"`;
//! - `/session`: as `/cookie`, without setting a cookie (so that its
//!   answers may be cached);
//! - `/forbid`: 403; `/fail`: 500;
//! - `/slow`: 200 after 5 s;
//! - `/signin`: 302 to `https://login.example.com/start` with
//!   `Set-Cookie: csrf=1` (an auth service sending a browser to log in);
//! - `/bearer`: 200 with `X-Auth-Request-User: bob` when the request has
//!   `Authorization: Bearer good`, else 401 with
//!   `WWW-Authenticate: Bearer realm="test"`.
//!
//! Only the first path segment counts (`/ok/events?x=1` is `/ok`), so that
//! a Gateway API ExternalAuth filter, which puts its `http.path` before the
//! client's path, reaches the same answers.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// One subrequest as the service saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: http::HeaderMap,
}

pub struct AuthServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AuthServer {
    pub async fn start() -> AuthServer {
        AuthServer::start_on("127.0.0.1".parse().unwrap()).await
    }

    /// Listening on `ip` (a network namespace's host side, for a cluster
    /// whose EndpointSlices refuse loopback addresses).
    pub async fn start_on(ip: std::net::IpAddr) -> AuthServer {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let record = record.clone();
                        async move { Ok::<_, Infallible>(answer(req, record).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        AuthServer { addr, seen, task }
    }

    /// Every subrequest so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Stops accepting: new connections are refused (connections already
    /// open are served to their end).
    pub fn stop(&self) {
        self.task.abort();
    }

    /// A Service `auth` (port 80) and its EndpointSlice, pointing here.
    pub fn service_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: auth}}\nspec: {{ports: [{{name: http, port: 80, targetPort: {port}}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: auth-1, labels: {{kubernetes.io/service-name: auth}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints: [{{addresses: [\"{ip}\"], conditions: {{ready: true}}}}]\n",
            port = self.addr.port(),
            ip = self.addr.ip()
        )
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(req: Request<Incoming>, record: Arc<Mutex<Vec<Seen>>>) -> Response<Full<Bytes>> {
    record.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        target: req.uri().to_string(),
        headers: req.headers().clone(),
    });
    let mut resp = Response::builder();
    let first = req.uri().path().split('/').nth(1).unwrap_or("");
    let status = match first {
        "ok" => {
            resp = resp
                .header("x-auth-request-user", "alice")
                .header("x-auth-request-email", "alice@example.com");
            StatusCode::OK
        }
        "cookie" => {
            let user = req
                .headers()
                .get_all("cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|c| c.trim().strip_prefix("session=").map(str::to_owned));
            match user {
                Some(user) => {
                    resp = resp
                        .header("x-auth-request-user", user.as_str())
                        .header("set-cookie", format!("refreshed={user}; Path=/"));
                    StatusCode::OK
                }
                None => {
                    resp = resp.header("www-authenticate", "Bearer realm=\"test\"");
                    StatusCode::UNAUTHORIZED
                }
            }
        }
        // As /cookie, without setting one (so the answer may be cached).
        "session" => {
            let user = req
                .headers()
                .get_all("cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|c| c.trim().strip_prefix("session=").map(str::to_owned));
            match user {
                Some(user) => {
                    resp = resp.header("x-auth-request-user", user.as_str());
                    StatusCode::OK
                }
                None => StatusCode::UNAUTHORIZED,
            }
        }
        "forbid" => StatusCode::FORBIDDEN,
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK
        }
        "signin" => {
            resp = resp
                .header("location", "https://login.example.com/start")
                .header("set-cookie", "csrf=1; Path=/")
                .header("content-type", "text/html");
            StatusCode::FOUND
        }
        "bearer" => {
            if req.headers().get("authorization").is_some_and(|v| v == "Bearer good") {
                resp = resp.header("x-auth-request-user", "bob");
                StatusCode::OK
            } else {
                resp = resp.header("www-authenticate", "Bearer realm=\"test\"");
                StatusCode::UNAUTHORIZED
            }
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    resp.status(status)
        .body(Full::new(Bytes::from_static(b"auth")))
        .unwrap()
}
