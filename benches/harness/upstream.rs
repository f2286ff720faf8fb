//! The benchmark's own upstream: an SSE generator that stamps every event
//! with its send time, an idle stream, and a small plain response.
//!
//! Its event streams resume as an SSE server does: a request with
//! `Last-Event-ID: N` gets events from `N + 1`, the first of them at once
//! (it is overdue: the stream it continues was cut), the next ones at the
//! stream's rate.

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::{Request, Response};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

/// Stamps are wall-clock nanoseconds: the upstream runs in its own process
/// (so the proxy's file descriptors are not all in one process), and both
/// processes read the same system clock.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// An upstream in a child process (this binary with `--upstream ID`),
/// pinned to the load generator's core.
pub struct Upstream {
    pub addr: SocketAddr,
    child: Child,
}

impl Upstream {
    /// SIGKILLs the upstream's process (a backend that dies). It is reaped
    /// when dropped: waiting here would stall the caller's runtime while the
    /// process exits.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn(id: &str) -> Upstream {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--upstream", id])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    Upstream {
        addr: line.trim().parse().expect("the upstream prints its address"),
        child,
    }
}

/// The child's side: serve forever, after printing the address.
pub fn serve_forever(id: &'static str) -> ! {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let addr = start(id).await;
        println!("{addr}");
        std::future::pending::<()>().await;
    });
    unreachable!()
}

type Body = BoxBody<Bytes, Infallible>;

/// Starts an upstream on a fresh loopback port; `id` is in its plain reply.
pub async fn start(id: &'static str) -> SocketAddr {
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
        // rate events/s (0 = as fast as possible), count events (0 = forever),
        // pad bytes; `tag=1` ends each data line with `@` and this
        // upstream's id (the resume scenario tells the endpoints apart by it).
        "/sse" => {
            let rate = param(&req, "rate").unwrap_or(10);
            let count = param(&req, "count").unwrap_or(0);
            let mut pad = "x".repeat(param(&req, "pad").unwrap_or(0) as usize);
            if param(&req, "tag") == Some(1) {
                pad = format!("{pad}@{id}");
            }
            let period = (rate > 0).then(|| Duration::from_nanos(1_000_000_000 / rate));
            let resumed_from = req
                .headers()
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let first = resumed_from.map_or(0, |n| n + 1);
            let events = stream::unfold((first, pad), move |(n, pad)| async move {
                if count > 0 && n >= count {
                    return None;
                }
                match period {
                    // A resumed stream's first event is overdue: at once.
                    Some(_) if resumed_from.is_some() && n == first => {}
                    Some(p) => tokio::time::sleep(p).await,
                    None if n % 64 == 0 => tokio::task::yield_now().await,
                    None => {}
                }
                let event = Bytes::from(format!("id: {n}\ndata: {} {pad}\n\n", now_ns()));
                Some((Ok(Frame::data(event)), (n + 1, pad)))
            });
            sse(BodyExt::boxed(StreamBody::new(events)))
        }
        // One comment (or, with `id=N`, one event with that id: a stream a
        // resuming proxy can resume), then an open stream that never sends again.
        "/idle" => {
            let first = match param(&req, "id") {
                Some(n) => Bytes::from(format!("id: {n}\ndata: open\n\n")),
                None => Bytes::from_static(b": open\n\n"),
            };
            let events = stream::once(async { Ok(Frame::data(first)) }).chain(stream::pending());
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
