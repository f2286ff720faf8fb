//! Admin endpoints on their own port: `/healthz`, `/readyz`, `/metrics`,
//! `/debug/routes` and `/debug/status`. Kept off the proxy port so that no Route can shadow them
//! and they are never exposed through the proxy Service.

use crate::model::SharedTable;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::warn;

/// State the admin endpoints report on.
pub struct AdminState {
    pub table: SharedTable,
    /// True once every source has loaded once, false again while draining.
    pub ready: AtomicBool,
    /// Status patches sent by this replica (cluster mode).
    pub status_writes: Arc<AtomicU64>,
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
            status_writes: Arc::default(),
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
                    "statusWrites": self.status_writes.load(Ordering::Relaxed),
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

/// Serves the admin endpoints until `shutdown` resolves.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let resp = state.respond(&req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
