//! The demo SSE backend used by the quick start and the tests.
//!
//! Endpoints are matched by their last path segment, so `/x/.sse` works too.
//! - `/.sse`: `event: server`, `event: request` (the request line and headers
//!   as multi-line `data:`), then `event: time` every `interval` (default
//!   1s). Each event has an increasing `id:`; `Last-Event-ID` resumes.
//! - `/json`: a JSON array written in `chunks` pieces, `interval` apart.
//! - `/chatty`: `chunks` small text chunks of `size` bytes, `interval` apart.
//!
//! Every endpoint takes `delay=` (wait before the headers) and
//! `accel=yes|no` (send `X-Accel-Buffering`), for exercising the proxy.
//!
//! It drains as a backend under a rollout should: [`DemoBackend::drain`]
//! stops accepting connections, closes idle keep-alive ones, and waits
//! until the open event streams have ended (their clients went, or a proxy
//! moved them elsewhere), up to a limit.

use crate::api::parse_duration;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

type DemoBody = BoxBody<Bytes, Infallible>;

/// One demo backend: its settings and its open event streams.
pub struct DemoBackend {
    /// Reported in the first event, so clients see which replica served them.
    pub server_id: String,
    streams: Arc<OpenStreams>,
    draining: watch::Sender<bool>,
}

/// The count of open `/.sse` bodies, and a wake-up when it falls.
#[derive(Default)]
struct OpenStreams {
    open: AtomicUsize,
    fell: Notify,
}

/// Held by an event stream's body: counted while the body lives, that is
/// until it ends or the client goes (hyper drops the body either way).
struct StreamGuard(Arc<OpenStreams>);

impl StreamGuard {
    fn new(streams: &Arc<OpenStreams>) -> StreamGuard {
        streams.open.fetch_add(1, Ordering::SeqCst);
        StreamGuard(streams.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.fell.notify_waiters();
    }
}

impl DemoBackend {
    pub fn new(server_id: impl Into<String>) -> Arc<Self> {
        Arc::new(DemoBackend {
            server_id: server_id.into(),
            streams: Arc::default(),
            draining: watch::Sender::new(false),
        })
    }

    /// Event streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.open.load(Ordering::SeqCst)
    }

    /// Serves on `listener` until [`DemoBackend::drain`] begins; the
    /// connections it accepted carry on.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut draining = self.draining.subscribe();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = draining.wait_for(|d| *d) => return,
            };
            let Ok((stream, _)) = accepted else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let demo = self.clone();
            let mut draining = self.draining.subscribe();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let demo = demo.clone();
                    async move { Ok::<_, Infallible>(demo.respond(req).await) }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = draining.wait_for(|d| *d) => {}
                }
                // Draining: an idle connection closes now, a busy one after
                // its response (HTTP/2: GOAWAY, open streams go on).
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            });
        }
    }

    /// Stops accepting connections and waits until no event stream is
    /// open, for `limit` at most: how long it took, or how many streams
    /// were still open at the limit.
    pub async fn drain(&self, limit: Duration) -> Result<Duration, usize> {
        let start = Instant::now();
        self.draining.send_replace(true);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let fell = self.streams.fell.notified();
            tokio::pin!(fell);
            fell.as_mut().enable();
            let open = self.open_streams();
            if open == 0 {
                return Ok(start.elapsed());
            }
            if tokio::time::timeout_at(deadline, fell).await.is_err() {
                return Err(self.open_streams());
            }
        }
    }

    async fn respond(&self, req: Request<Incoming>) -> Response<DemoBody> {
        let query = parse_query(req.uri().query().unwrap_or(""));
        let duration =
            |name: &str, default: Duration| query.get(name).and_then(|v| parse_duration(v).ok()).unwrap_or(default);
        let number = |name: &str, default: Option<u64>| query.get(name).and_then(|v| v.parse().ok()).or(default);
        tokio::time::sleep(duration("delay", Duration::ZERO)).await;
        let interval = duration("interval", Duration::from_secs(1));
        // Match on the last segment so the demo works behind any path prefix.
        let endpoint = req.uri().path().rsplit('/').next().unwrap_or("");
        let (content_type, body) = match endpoint {
            ".sse" => ("text/event-stream", self.sse(&req, interval, number("count", None))),
            "json" => (
                "application/json",
                json(
                    number("chunks", Some(3)).unwrap_or(3),
                    duration("interval", Duration::ZERO),
                ),
            ),
            "chatty" => (
                "text/plain",
                // 64 KiB over about five seconds by default: enough for a
                // 4 KiB coalescing buffer to show its blocks.
                chatty(
                    number("chunks", Some(1024)).unwrap_or(1024),
                    number("size", Some(64)).unwrap_or(64) as usize,
                    duration("interval", Duration::from_millis(5)),
                ),
            ),
            _ => {
                let help = "ssegate demo backend: /.sse /json /chatty\n";
                return Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(Full::new(Bytes::from_static(help.as_bytes())).boxed())
                    .expect("valid response");
            }
        };
        let mut resp = Response::builder()
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CACHE_CONTROL, "no-cache");
        if let Some(accel) = query.get("accel") {
            resp = resp.header("x-accel-buffering", accel.as_str());
        }
        resp.body(body).expect("valid response")
    }

    fn sse(&self, req: &Request<Incoming>, interval: Duration, count: Option<u64>) -> DemoBody {
        let first_id = req
            .headers()
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(1, |last| last + 1);
        let mut request = format!("{} {} {:?}", req.method(), req.uri(), req.version());
        for (name, value) in req.headers() {
            let _ = write!(request, "\n{}: {}", name, value.to_str().unwrap_or("<binary>"));
        }
        let head = [
            event(first_id, "server", &self.server_id),
            event(first_id + 1, "request", &request),
        ];
        let ticks = stream::unfold(first_id + 2, move |id| async move {
            tokio::time::sleep(interval).await;
            let now = jiff::Timestamp::now().to_string();
            Some((event(id, "time", &now), id + 1))
        });
        let ticks = match count {
            Some(n) => ticks.take(n as usize).left_stream(),
            None => ticks.right_stream(),
        };
        let guard = StreamGuard::new(&self.streams);
        let frames = stream::iter(head).chain(ticks).map(move |b| {
            let _held = &guard;
            Ok(Frame::data(b))
        });
        BodyExt::boxed(StreamBody::new(frames))
    }
}

/// Formats one SSE event; multi-line data becomes several `data:` lines.
pub fn event(id: u64, name: &str, data: &str) -> Bytes {
    let mut out = format!("id: {id}\nevent: {name}\n");
    for line in data.lines() {
        let _ = writeln!(out, "data: {line}");
    }
    out.push('\n');
    Bytes::from(out)
}

fn json(chunks: u64, interval: Duration) -> DemoBody {
    let pieces = stream::unfold(0u64, move |i| async move {
        if i > chunks {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        let text = match i {
            0 => "[".to_owned(),
            i if i == chunks => format!("{{\"n\":{i}}}]\n"),
            i => format!("{{\"n\":{i}}},"),
        };
        Some((Ok(Frame::data(Bytes::from(text))), i + 1))
    });
    BodyExt::boxed(StreamBody::new(pieces))
}

fn chatty(chunks: u64, size: usize, interval: Duration) -> DemoBody {
    let line = Bytes::from(format!("{}\n", "x".repeat(size.saturating_sub(1))));
    let pieces = stream::unfold(0u64, move |i| {
        let line = line.clone();
        async move {
            if i == chunks {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(interval).await;
            }
            Some((Ok(Frame::data(line)), i + 1))
        }
    });
    BodyExt::boxed(StreamBody::new(pieces))
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_data() {
        assert_eq!(
            &event(7, "request", "a\nb")[..],
            b"id: 7\nevent: request\ndata: a\ndata: b\n\n"
        );
    }
}
