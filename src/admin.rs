//! Admin endpoints on their own port: `/healthz`, `/readyz`, `/metrics`,
//! `/debug/routes` and `/debug/status`. Kept off the proxy port so that no Route can shadow them
//! and they are never exposed through the proxy Service.

use crate::listener::AcceptErrors;
use crate::model::SharedTable;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;

/// State the admin endpoints report on.
pub struct AdminState {
    pub table: SharedTable,
    /// True once every source has loaded once, false again while draining.
    pub ready: AtomicBool,
    /// Whether this replica holds the status Lease (cluster mode).
    pub leader: AtomicBool,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl AdminState {
    pub fn new(table: SharedTable, metrics: Arc<crate::metrics::Metrics>) -> Arc<Self> {
        Arc::new(AdminState {
            metrics,
            table,
            ready: AtomicBool::new(false),
            leader: AtomicBool::new(false),
        })
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match req.uri().path() {
            "/healthz" => (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
            "/readyz" if self.ready.load(Ordering::Acquire) => {
                (StatusCode::OK, "text/plain", Bytes::from_static(b"ready\n"))
            }
            "/readyz" => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                Bytes::from_static(b"not ready\n"),
            ),
            "/metrics" => (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                Bytes::from(self.metrics.encode()),
            ),
            "/debug/routes" => {
                let table = self.table.load();
                let json = serde_json::to_vec_pretty(&table.describe()).unwrap_or_default();
                (StatusCode::OK, "application/json", Bytes::from(json))
            }
            "/debug/status" => {
                let json = serde_json::json!({
                    "leader": self.leader.load(Ordering::Relaxed),
                    "statusWrites": self.metrics.status_writes_ok(),
                });
                (StatusCode::OK, "application/json", Bytes::from(json.to_string()))
            }
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                Bytes::from_static(b"admin endpoints: /healthz /readyz /metrics /debug/routes /debug/status\n"),
            ),
        };
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .expect("static response parts are valid")
    }
}

/// How long an admin connection may sit idle or take to send a request head.
const ADMIN_IDLE: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest an admin connection is kept, busy or not.
const ADMIN_MAX_CONNECTION: std::time::Duration = std::time::Duration::from_secs(300);

/// Serves the admin endpoints until `shutdown` resolves.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut errors = AcceptErrors::new("admin");
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    errors.succeeded();
                    a
                }
                Err(e) => {
                    let wait = errors.failed(&e, &state.metrics);
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let resp = state.respond(&req);
                async move { Ok::<_, Infallible>(resp) }
            });
            // hyper's header-read timer runs from the end of one response to
            // the end of the next request head, so it also closes idle
            // keep-alive connections; probes and scrapes need no more.
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(ADMIN_IDLE);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(ADMIN_IDLE)
                .keep_alive_timeout(ADMIN_IDLE);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            // An HTTP/2 client that keeps its connection open but idle is
            // still let go after a while.
            let _ = tokio::time::timeout(ADMIN_MAX_CONNECTION, conn).await;
        });
    }
}
