//! The benchmark's own upstream: an SSE generator that stamps every event
//! with its send time, an idle stream, and a small plain response.

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::{Request, Response};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// The clock every stamp is measured on; shared by generator and clients.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

type Body = BoxBody<Bytes, Infallible>;

/// Starts an upstream on a fresh loopback port; `id` is in its plain reply.
pub async fn start(id: &'static str) -> SocketAddr {
    epoch();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| async move { Ok::<_, Infallible>(respond(req, id)) });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn param(req: &Request<Incoming>, name: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

fn respond(req: Request<Incoming>, id: &'static str) -> Response<Body> {
    match req.uri().path() {
        // rate events/s (0 = as fast as possible), count events (0 = forever), pad bytes.
        "/sse" => {
            let rate = param(&req, "rate").unwrap_or(10);
            let count = param(&req, "count").unwrap_or(0);
            let pad = "x".repeat(param(&req, "pad").unwrap_or(0) as usize);
            let period = (rate > 0).then(|| Duration::from_nanos(1_000_000_000 / rate));
            let events = stream::unfold((0u64, pad), move |(n, pad)| async move {
                if count > 0 && n >= count {
                    return None;
                }
                match period {
                    Some(p) => tokio::time::sleep(p).await,
                    None if n % 64 == 0 => tokio::task::yield_now().await,
                    None => {}
                }
                let event = Bytes::from(format!("id: {n}\ndata: {} {pad}\n\n", now_ns()));
                Some((Ok(Frame::data(event)), (n + 1, pad)))
            });
            sse(BodyExt::boxed(StreamBody::new(events)))
        }
        // One comment, then an open stream that never sends again.
        "/idle" => {
            let events =
                stream::once(async { Ok(Frame::data(Bytes::from_static(b": open\n\n"))) }).chain(stream::pending());
            sse(BodyExt::boxed(StreamBody::new(events)))
        }
        _ => Response::builder()
            .header("content-type", "text/plain")
            .body(BodyExt::boxed(Full::new(Bytes::from(format!(
                "hello from upstream {id}\n"
            )))))
            .unwrap(),
    }
}

fn sse(body: Body) -> Response<Body> {
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap()
}
