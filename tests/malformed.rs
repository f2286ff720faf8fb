//! Corpora of malformed and smuggling-shaped HTTP/1.1 messages, sent as raw
//! bytes to the real binary (issue 13: ssegate owns its HTTP/1.1 framing).
//!
//! Requests: a head ssegate cannot frame unambiguously gets a 400 (431 when
//! too large) and reaches no upstream at all, not even a connection. A
//! chunked body that turns bad after its head went up gets a 400, and the
//! upstream has received exactly ssegate's own head and the well-formed
//! prefix, re-chunked, never a byte of the malformed part. Valid requests
//! reach the upstream as the exact bytes ssegate writes, and bytes after a
//! body are the next request, under a head of ssegate's own.
//!
//! Responses: an upstream answer ssegate cannot frame is a 502; a body cut
//! or broken mid-way ends the client's connection without the framing that
//! would make it look complete.

mod common;

use common::process::Ssegate;
use common::raw::find;
use common::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
/// Between the parts of a message sent in pieces: long enough that each
/// part is read on its own.
const PAUSE: Duration = Duration::from_millis(200);
const LIMIT: Duration = Duration::from_secs(5);
/// How long "nothing reached the upstream" has to hold, counted from the
/// last connection the upstream saw.
const QUIET: Duration = Duration::from_millis(200);

/// One upstream connection as the upstream saw it.
#[derive(Default, Clone)]
struct Seen {
    bytes: Vec<u8>,
    /// The request was complete (and answered) or the connection ended.
    done: bool,
}

/// An upstream on raw sockets that records every connection it accepts
/// and every byte that came on it, and answers each complete request with
/// the parts `answer` gives for it (written with [`PAUSE`] between them),
/// then closes.
struct Recorder {
    addr: std::net::SocketAddr,
    conns: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    async fn start(answer: fn(&[u8]) -> Vec<Vec<u8>>) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let all = conns.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let index = {
                    let mut all = all.lock().unwrap();
                    all.push(Seen::default());
                    all.len() - 1
                };
                tokio::spawn(serve_one(stream, all.clone(), index, answer));
            }
        });
        Recorder { addr, conns }
    }

    fn count(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Bytes received so far, on all connections.
    fn received(&self) -> usize {
        self.conns.lock().unwrap().iter().map(|s| s.bytes.len()).sum()
    }

    /// Waits (up to [`LIMIT`]) until more than `before` bytes came and then
    /// none for 100 ms.
    async fn settle(&self, before: usize) {
        let deadline = Instant::now() + LIMIT;
        let mut last = (self.received(), Instant::now());
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = self.received();
            if now != last.0 {
                last = (now, Instant::now());
            } else if now > before && last.1.elapsed() >= Duration::from_millis(100) {
                return;
            }
        }
    }

    /// The connections accepted since the first `before`, once each is done
    /// and none has come for `quiet` (the window a "nothing was forwarded"
    /// holds over, against the connection count), or after [`LIMIT`].
    async fn settled_since(&self, before: usize, quiet: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + LIMIT;
        let mut last = (self.count(), Instant::now());
        loop {
            let count = self.count();
            if count != last.0 {
                last = (count, Instant::now());
            }
            let seen = self.conns.lock().unwrap()[before..].to_vec();
            if (seen.iter().all(|s| s.done) && last.1.elapsed() >= quiet) || Instant::now() >= deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn serve_one(mut stream: TcpStream, all: Arc<Mutex<Vec<Seen>>>, index: usize, answer: fn(&[u8]) -> Vec<Vec<u8>>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = Vec::new();
    let complete = loop {
        if request_complete(&buf) {
            break true;
        }
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                all.lock().unwrap()[index].bytes = buf.clone();
            }
            _ => break false,
        }
    };
    if complete {
        let parts = answer(&buf);
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(PAUSE).await;
            }
            if stream.write_all(part).await.is_err() {
                break;
            }
        }
        let _ = stream.shutdown().await;
    }
    all.lock().unwrap()[index].done = true;
}

/// Whether `buf` holds a whole request, by its Content-Length or its
/// chunked framing (a last chunk at a line start, no trailers).
fn request_complete(buf: &[u8]) -> bool {
    let Some(end) = find(buf, b"\r\n\r\n").map(|i| i + 4) else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body = &buf[end..];
    if head.contains("\r\ntransfer-encoding: chunked\r\n") {
        return find(body, b"0\r\n\r\n").is_some_and(|i| i == 0 || body[..i].ends_with(b"\r\n"));
    }
    let length = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    body.len() >= length.unwrap_or(0)
}

/// What a client got back.
struct Reply {
    bytes: Vec<u8>,
    /// ssegate closed the connection (EOF or reset) within [`LIMIT`].
    closed: bool,
}

impl Reply {
    fn status_line(&self) -> String {
        let end = find(&self.bytes, b"\r\n").unwrap_or(self.bytes.len());
        String::from_utf8_lossy(&self.bytes[..end]).into_owned()
    }

    fn status(&self) -> Option<u16> {
        self.status_line().strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }

    #[allow(dead_code)]
    fn head(&self) -> String {
        let end = find(&self.bytes, b"\r\n\r\n").map_or(self.bytes.len(), |i| i + 4);
        String::from_utf8_lossy(&self.bytes[..end]).into_owned()
    }

    #[allow(dead_code)]
    fn body(&self) -> &[u8] {
        find(&self.bytes, b"\r\n\r\n").map_or(&[], |i| &self.bytes[i + 4..])
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} (closed: {})", lossy(&self.bytes), self.closed)
    }
}

fn lossy(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(600)]).into_owned();
    if b.len() > 600 {
        format!("{s}... ({} bytes)", b.len())
    } else {
        s
    }
}

/// Sends `parts` ([`PAUSE`] between them), then reads until ssegate closes
/// the connection or [`LIMIT`] passes.
async fn talk(addr: &str, parts: &[Vec<u8>]) -> Reply {
    talk_settled(addr, parts, None).await
}

/// As [`talk`]; with `up`, each part after the first waits until what the
/// one before it made ssegate forward has reached the upstream (bytes came
/// and then none for 100 ms), so that each part is surely read on its own.
async fn talk_settled(addr: &str, parts: &[Vec<u8>], up: Option<&Recorder>) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let before = up.map(Recorder::received);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(PAUSE).await;
            if let (Some(up), Some(before)) = (up, before) {
                up.settle(before).await;
            }
        }
        if stream.write_all(part).await.is_err() {
            break;
        }
    }
    let mut bytes = Vec::new();
    let deadline = Instant::now() + LIMIT;
    let mut chunk = [0u8; 16384];
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
        }
    };
    Reply { bytes, closed }
}

async fn gateway(up: &Recorder) -> (Ssegate, tempfile::TempDir, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.yaml"), backend_yaml("svc", &[(up.addr, true)])).unwrap();
    std::fs::write(dir.path().join("r.yaml"), route_yaml("r", "", "svc")).unwrap();
    let gw = Ssegate::start(&["standalone", "--dir", dir.path().to_str().unwrap()], logs.path()).await;
    (gw, dir, logs)
}

// ---------------------------------------------------------------- requests

/// What a request case must get.
enum Expect {
    /// This status (400 or 431), and no upstream connection at all.
    Refused(u16),
    /// A 400, the client connection closed, and one upstream connection
    /// that received exactly these bytes (the head as ssegate writes it and
    /// the well-formed prefix of the body, re-chunked) and then its end.
    Cut(Vec<u8>),
    /// A 200, and one upstream connection that received exactly these bytes.
    Forwarded(Vec<u8>),
    /// Bytes after a body are the next request, never more of the body:
    /// a 200 for each, and one upstream connection for each (the upstream
    /// closes after answering) that received exactly these bytes.
    Pipelined(Vec<Vec<u8>>),
    /// Bytes after a body that are no request: a 200 for the request, then
    /// a 400 for what follows it, and only the request upstream.
    ThenRefused(Vec<u8>),
}

/// A request case: its name, the parts it is sent in, what it must get.
type Case = (&'static str, Vec<Vec<u8>>, Expect);

/// The fields ssegate adds to every request it forwards (`port` is its
/// listener's), in the order it writes them after the client's own.
fn forwarded_fields(port: u16) -> String {
    format!(
        "x-forwarded-for: 127.0.0.1\r\nx-forwarded-host: h.test\r\nx-forwarded-port: {port}\r\n\
         x-forwarded-proto: http\r\nx-real-ip: 127.0.0.1\r\n"
    )
}

/// `POST /x` as ssegate sends it upstream: its `host` first, the
/// forwarding fields, then the framing field ssegate applies.
fn up_post(port: u16, framing: &str) -> Vec<u8> {
    format!(
        "POST /x HTTP/1.1\r\nhost: h.test\r\n{}{framing}\r\n",
        forwarded_fields(port)
    )
    .into_bytes()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn request_corpus(port: u16) -> Vec<Case> {
    use Expect::*;
    let head = |extra: &str| format!("POST /x HTTP/1.1\r\nHost: h.test\r\n{extra}\r\n").into_bytes();
    let with_body = |extra: &str, body: &[u8]| vec![cat(&[&head(extra), body])];
    let chunked = |body: &[u8]| with_body("Transfer-Encoding: chunked\r\n", body);
    // A chunked body sent in two parts: `good` with the head, then `bad`.
    let chunked_then =
        |good: &[u8], bad: &[u8]| vec![cat(&[&head("Transfer-Encoding: chunked\r\n"), good]), bad.to_vec()];
    let get = |raw: &[u8]| vec![raw.to_vec()];
    let up_chunked = up_post(port, "transfer-encoding: chunked\r\n");
    // The head alone reached the upstream: the body was bad from its start.
    let head_only = || Cut(up_chunked.clone());
    // "5\r\nhello\r\n" went up as one re-chunked piece before the bad part came.
    let hello_then_cut = || Cut(cat(&[&up_chunked, b"5\r\nhello\r\n"]));
    let up_get =
        |path: &str| format!("GET {path} HTTP/1.1\r\nhost: h.test\r\n{}\r\n", forwarded_fields(port)).into_bytes();
    let (up_get_x, up_get_y) = (up_get("/x"), up_get("/y"));
    let cookie = format!("k={}", "c".repeat(32 * 1024));
    let many_fields: String = (0..129).map(|i| format!("X-F{i}: v\r\n")).collect();
    vec![
        // Content-Length and Transfer-Encoding.
        (
            "Content-Length then Transfer-Encoding",
            with_body(
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
            Refused(400),
        ),
        (
            "Transfer-Encoding then Content-Length",
            with_body(
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
            Refused(400),
        ),
        (
            "two identical Content-Lengths",
            with_body("Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
            Refused(400),
        ),
        (
            "two differing Content-Lengths",
            with_body("Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"),
            Refused(400),
        ),
        (
            "Content-Length list of differing values",
            with_body("Content-Length: 5, 6\r\n", b"hello!"),
            Refused(400),
        ),
        (
            "Content-Length list of equal values",
            with_body("Content-Length: 5, 5\r\n", b"hello"),
            Refused(400),
        ),
        (
            "Content-Length with +",
            with_body("Content-Length: +5\r\n", b"hello"),
            Refused(400),
        ),
        (
            "negative Content-Length",
            with_body("Content-Length: -1\r\n", b""),
            Refused(400),
        ),
        (
            "hex Content-Length",
            with_body("Content-Length: 0x5\r\n", b"hello"),
            Refused(400),
        ),
        (
            "Content-Length with a space inside",
            with_body("Content-Length: 1 0\r\n", b"0123456789"),
            Refused(400),
        ),
        (
            "empty Content-Length",
            with_body("Content-Length:\r\n", b""),
            Refused(400),
        ),
        (
            "Content-Length of 19 digits (value 5)",
            with_body("Content-Length: 0000000000000000005\r\n", b"hello"),
            Refused(400),
        ),
        (
            "Content-Length overflow",
            with_body("Content-Length: 99999999999999999999999\r\n", b""),
            Refused(400),
        ),
        // Transfer-Encoding other than one lone chunked.
        (
            "Transfer-Encoding gzip, chunked",
            with_body("Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
            Refused(400),
        ),
        (
            "Transfer-Encoding chunked, chunked",
            with_body("Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"),
            Refused(400),
        ),
        (
            "Transfer-Encoding chunked, identity",
            with_body("Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"),
            Refused(400),
        ),
        (
            "two Transfer-Encoding lines",
            with_body(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                b"0\r\n\r\n",
            ),
            Refused(400),
        ),
        (
            "Transfer-Encoding identity",
            with_body("Transfer-Encoding: identity\r\n", b"hello"),
            Refused(400),
        ),
        (
            "Transfer-Encoding xchunked",
            with_body("Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
            Refused(400),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            get(b"POST /x HTTP/1.0\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            Refused(400),
        ),
        (
            "Transfer-Encoding and Content-Length in HTTP/1.0",
            get(
                b"POST /x HTTP/1.0\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            ),
            Refused(400),
        ),
        // Head syntax.
        (
            "obs-fold (space)",
            with_body("X-A: a\r\n b\r\nContent-Length: 0\r\n", b""),
            Refused(400),
        ),
        (
            "obs-fold (tab)",
            with_body("X-A: a\r\n\tb\r\nContent-Length: 0\r\n", b""),
            Refused(400),
        ),
        (
            "obs-fold of Transfer-Encoding",
            with_body("Transfer-Encoding:\r\n chunked\r\nContent-Length: 0\r\n", b""),
            Refused(400),
        ),
        (
            "bare CR in a header value",
            with_body("X-A: a\rb\r\nContent-Length: 0\r\n", b""),
            Refused(400),
        ),
        (
            "bare CR ending a header line",
            with_body("X-A: a\rContent-Length: 5\r\n", b"hello"),
            Refused(400),
        ),
        (
            "bare CR in the request target",
            get(b"GET /a\rb HTTP/1.1\r\nHost: h.test\r\n\r\n"),
            Refused(400),
        ),
        (
            "bare CR ending the request line",
            get(b"GET /x HTTP/1.1\rHost: h.test\r\n\r\n"),
            Refused(400),
        ),
        (
            "NUL in a header value",
            with_body("X-A: a\0b\r\nContent-Length: 0\r\n", b""),
            Refused(400),
        ),
        (
            "NUL in a header name",
            with_body("X-\0A: a\r\nContent-Length: 0\r\n", b""),
            Refused(400),
        ),
        (
            "NUL in the request target",
            get(b"GET /a\0b HTTP/1.1\r\nHost: h.test\r\n\r\n"),
            Refused(400),
        ),
        (
            "space before colon",
            with_body("Content-Length : 5\r\n", b"hello"),
            Refused(400),
        ),
        (
            "tab before colon",
            with_body("Transfer-Encoding\t: chunked\r\n", b"0\r\n\r\n"),
            Refused(400),
        ),
        (
            "no Host",
            get(b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n"),
            Refused(400),
        ),
        (
            // Framed unambiguously, so ssegate may keep the connection:
            // the client asks for the close so that its end is seen.
            "two Hosts",
            get(b"GET /x HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n"),
            Refused(400),
        ),
        (
            "space in the target",
            get(b"GET /a b HTTP/1.1\r\nHost: h.test\r\n\r\n"),
            Refused(400),
        ),
        (
            "unknown version",
            get(b"GET /x HTTP/7.1\r\nHost: h.test\r\n\r\n"),
            Refused(400),
        ),
        // Sizes.
        (
            "70 KiB head",
            get(format!(
                "GET /x HTTP/1.1\r\nHost: h.test\r\nX-Big: {}\r\n\r\n",
                "b".repeat(70 * 1024)
            )
            .as_bytes()),
            Refused(431),
        ),
        (
            "129 header fields",
            get(format!("GET /x HTTP/1.1\r\nHost: h.test\r\n{many_fields}\r\n").as_bytes()),
            Refused(431),
        ),
        (
            "32 KiB of cookies",
            get(format!("GET /x HTTP/1.1\r\nHost: h.test\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n").as_bytes()),
            Forwarded(
                format!(
                    "GET /x HTTP/1.1\r\nhost: h.test\r\ncookie: {cookie}\r\n{}\r\n",
                    forwarded_fields(port)
                )
                .into_bytes(),
            ),
        ),
        // Chunked bodies, bad from their first byte: the head went up alone.
        (
            "chunk size of 17 hex digits",
            chunked(b"10000000000000000\r\nhello\r\n0\r\n\r\n"),
            head_only(),
        ),
        (
            "chunk size ffffffffffffffffff",
            chunked(b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            head_only(),
        ),
        (
            "chunk size over 2^62",
            chunked(b"4000000000000001\r\nhello\r\n0\r\n\r\n"),
            head_only(),
        ),
        ("chunk size g", chunked(b"g\r\nhello\r\n0\r\n\r\n"), head_only()),
        ("negative chunk size", chunked(b"-5\r\nhello\r\n0\r\n\r\n"), head_only()),
        ("chunk size with 0x", chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), head_only()),
        (
            "chunk size after a space",
            chunked(b" 5\r\nhello\r\n0\r\n\r\n"),
            head_only(),
        ),
        (
            "chunk data not followed by CRLF",
            chunked(b"5\r\nhelloXX0\r\n\r\n"),
            head_only(),
        ),
        (
            "chunk extension with a control byte",
            chunked(b"5;a=\x01\r\nhello\r\n0\r\n\r\n"),
            head_only(),
        ),
        (
            "chunk extension with NUL in a quoted value",
            chunked(b"5;a=\"x\0y\"\r\nhello\r\n0\r\n\r\n"),
            head_only(),
        ),
        (
            "chunk extension with a bare CR",
            chunked(b"5;a\rb\r\nhello\r\n0\r\n\r\n"),
            head_only(),
        ),
        (
            "bare LF after a chunk size",
            chunked(b"5\nhello\r\n0\r\n\r\n"),
            head_only(),
        ),
        (
            "bare LF after chunk data",
            chunked(b"5\r\nhello\n0\r\n\r\n"),
            head_only(),
        ),
        ("bare LF ending the body", chunked(b"0\r\n\n"), head_only()),
        // Bad mid-way: the good part went up, re-chunked, and nothing after.
        (
            "bad chunk size after a good chunk",
            chunked_then(b"5\r\nhello\r\n", b"zz\r\nworld\r\n0\r\n\r\n"),
            hello_then_cut(),
        ),
        (
            "overflowing chunk size after a good chunk",
            chunked_then(b"5\r\nhello\r\n", b"ffffffffffffffffff\r\nworld\r\n0\r\n\r\n"),
            hello_then_cut(),
        ),
        (
            "chunk data without CRLF after a good chunk",
            chunked_then(b"5\r\nhello\r\n", b"5\r\nworldXX0\r\n\r\n"),
            hello_then_cut(),
        ),
        (
            "bare LF after a good chunk",
            chunked_then(b"5\r\nhello\r\n", b"5\nworld\r\n0\r\n\r\n"),
            hello_then_cut(),
        ),
        (
            "two good chunks, then a bad extension",
            chunked_then(b"5\r\nhello\r\n6\r\n world\r\n", b"1;\x7f\r\n!\r\n0\r\n\r\n"),
            Cut(cat(&[&up_chunked, b"b\r\nhello world\r\n"])),
        ),
        (
            "trailer with obs-fold",
            chunked_then(b"5\r\nhello\r\n", b"0\r\nX-T: a\r\n b\r\n\r\n"),
            hello_then_cut(),
        ),
        (
            "trailer with NUL",
            chunked_then(b"5\r\nhello\r\n", b"0\r\nX-T: a\0b\r\n\r\n"),
            hello_then_cut(),
        ),
        (
            "trailer with a space before its colon",
            chunked_then(b"5\r\nhello\r\n", b"0\r\nX-T : a\r\n\r\n"),
            hello_then_cut(),
        ),
        // Valid requests, as the upstream receives them.
        (
            "valid Content-Length request",
            with_body("Content-Length: 5\r\nConnection: close\r\n", b"hello"),
            Forwarded(cat(&[&up_post(port, "content-length: 5\r\n"), b"hello"])),
        ),
        (
            "valid chunked request with extensions and trailers",
            with_body(
                "Transfer-Encoding: chunked\r\nConnection: close\r\n",
                b"5;ext=1\r\nhello\r\n6 ; a=\"b c\";d\r\n world\r\n0;last=1\r\nX-Trailer: t\r\nX-Other: o\r\n\r\n",
            ),
            // One read, so one re-chunked piece; extensions and trailers dropped.
            Forwarded(cat(&[&up_chunked, b"b\r\nhello world\r\n0\r\n\r\n"])),
        ),
        (
            "valid chunked request in two reads",
            vec![
                cat(&[
                    &head("Transfer-Encoding: chunked\r\nConnection: close\r\n"),
                    b"5\r\nhello\r\n",
                ]),
                b"6\r\n world\r\n0\r\n\r\n".to_vec(),
            ],
            Forwarded(cat(&[&up_chunked, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"])),
        ),
        // Pipelining: what follows a body is parsed as a request of its
        // own, and goes up under a head ssegate writes.
        (
            "request after a Content-Length body",
            with_body("Content-Length: 5\r\n", &cat(&[b"hello", GET_Y])),
            Pipelined(vec![
                cat(&[&up_post(port, "content-length: 5\r\n"), b"hello"]),
                up_get_y.clone(),
            ]),
        ),
        (
            "request after Content-Length: 0",
            with_body("Content-Length: 0\r\n", GET_Y),
            Pipelined(vec![up_post(port, "content-length: 0\r\n"), up_get_y.clone()]),
        ),
        (
            "request after a chunked body with trailers",
            chunked(&cat(&[b"5\r\nhello\r\n0\r\nX-T: t\r\n\r\n", GET_Y])),
            Pipelined(vec![cat(&[&up_chunked, b"5\r\nhello\r\n0\r\n\r\n"]), up_get_y.clone()]),
        ),
        (
            "request after a GET with no framing fields",
            get(&cat(&[b"GET /x HTTP/1.1\r\nHost: h.test\r\n\r\n", GET_Y])),
            Pipelined(vec![up_get_x.clone(), up_get_y.clone()]),
        ),
        (
            "body bytes after a GET with no framing fields",
            get(b"GET /x HTTP/1.1\r\nHost: h.test\r\n\r\nhello\r\n\r\n"),
            ThenRefused(up_get_x.clone()),
        ),
    ]
}

/// A request that ends the connection, pipelined after another.
const GET_Y: &[u8] = b"GET /y HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn malformed_requests_are_refused_and_reach_no_upstream_beyond_a_well_formed_prefix() {
    let up = Recorder::start(|_| vec![OK.to_vec()]).await;
    let (gw, _dir, _logs) = gateway(&up).await;
    let addr = gw.proxy_addr();
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let mut problems = Vec::new();
    let corpus = request_corpus(port);
    let cases = corpus.len();
    for (name, parts, expect) in corpus {
        let before = up.count();
        let reply = talk_settled(&addr, &parts, Some(&up)).await;
        // A forwarded request (if any) has a quiet window to land in.
        let seen = up.settled_since(before, QUIET).await;
        let status = reply.status();
        let upstream: Vec<String> = seen.iter().map(|s| lossy(&s.bytes)).collect();
        match expect {
            Expect::Refused(want) => {
                if status != Some(want) || !seen.is_empty() || !reply.closed {
                    problems.push(format!(
                        "{name}: want {want}, nothing forwarded; got {reply:?}, upstream {upstream:?}"
                    ));
                }
            }
            Expect::Cut(want) => {
                if status != Some(400) || !reply.closed || seen.len() != 1 || seen[0].bytes != want || !seen[0].done {
                    problems.push(format!(
                        "{name}: want 400, upstream {:?} then closed; got {reply:?}, upstream {upstream:?}",
                        lossy(&want)
                    ));
                }
            }
            Expect::Forwarded(want) => {
                if status != Some(200) || seen.len() != 1 || seen[0].bytes != want {
                    problems.push(format!(
                        "{name}: want 200, upstream {:?}; got {reply:?}, upstream {upstream:?}",
                        lossy(&want)
                    ));
                }
            }
            Expect::Pipelined(want) => {
                let answers = String::from_utf8_lossy(&reply.bytes)
                    .matches("HTTP/1.1 200 OK\r\n")
                    .count();
                let got: Vec<&[u8]> = seen.iter().map(|s| s.bytes.as_slice()).collect();
                if answers != want.len() || got != want || !reply.closed {
                    problems.push(format!(
                        "{name}: want {} answers of 200, upstream {:?}; got {reply:?}, upstream {upstream:?}",
                        want.len(),
                        want.iter().map(|w| lossy(w)).collect::<Vec<_>>()
                    ));
                }
            }
            Expect::ThenRefused(want) => {
                let text = String::from_utf8_lossy(&reply.bytes).into_owned();
                let first_ok = text.starts_with("HTTP/1.1 200 OK\r\n");
                let then_400 = text.matches("HTTP/1.1 400 Bad Request\r\n").count() == 1;
                if !first_ok || !then_400 || !reply.closed || seen.len() != 1 || seen[0].bytes != want {
                    problems.push(format!(
                        "{name}: want 200 then 400, upstream {:?}; got {reply:?}, upstream {upstream:?}",
                        lossy(&want)
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {cases} cases:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // A well-formed request still gets through on the same listener.
    let ok = talk(
        &addr,
        &[b"POST /x HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_vec()],
    )
    .await;
    assert_eq!(ok.status(), Some(200), "{ok:?}");
}

// --------------------------------------------------------------- responses

/// What the client of a response case must get.
enum Answer {
    /// A 502 from ssegate.
    BadGateway,
    /// Exactly these bytes, then the connection's end.
    Exactly(Vec<u8>),
}

/// A response case: its name, the request the client sends (`{path}` is
/// replaced by the case's path), the parts the upstream answers with, and
/// what the client must get.
type ResponseCase = (&'static str, &'static str, Vec<Vec<u8>>, Answer);

/// A GET the client closes after, for the answers that end in a 502.
const GET_CLOSE: &str = "GET {path} HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n";
/// A GET on a connection the client keeps: only ssegate can end it, which
/// is how it tells its client that a body was cut.
const GET_KEEP: &str = "GET {path} HTTP/1.1\r\nHost: h.test\r\n\r\n";
/// The head of a chunked event stream as ssegate sends it on.
const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

fn response_corpus() -> Vec<ResponseCase> {
    use Answer::*;
    let head = |fields: &str| format!("HTTP/1.1 200 OK\r\n{fields}\r\n").into_bytes();
    let one = |fields: &str, body: &[u8]| vec![cat(&[&head(fields), body])];
    let status = |line: &str| vec![format!("{line}\r\nContent-Length: 2\r\n\r\nok").into_bytes()];
    // A chunked event stream: one event with the head, then `rest` apart
    // (nothing more when empty: the upstream closes).
    let sse_then = |rest: &[u8]| {
        let first = cat(&[
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"9\r\ndata: a\n\n\r\n",
        ]);
        if rest.is_empty() {
            vec![first]
        } else {
            vec![first, rest.to_vec()]
        }
    };
    vec![
        (
            "Content-Length with Transfer-Encoding",
            GET_CLOSE,
            one(
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
            BadGateway,
        ),
        (
            "Transfer-Encoding with Content-Length",
            GET_CLOSE,
            one(
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
            BadGateway,
        ),
        (
            "two identical Content-Lengths",
            GET_CLOSE,
            one("Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
            BadGateway,
        ),
        (
            "two differing Content-Lengths",
            GET_CLOSE,
            one("Content-Length: 5\r\nContent-Length: 2\r\n", b"hello"),
            BadGateway,
        ),
        (
            "Content-Length list",
            GET_CLOSE,
            one("Content-Length: 5, 5\r\n", b"hello"),
            BadGateway,
        ),
        (
            "Transfer-Encoding gzip, chunked",
            GET_CLOSE,
            one("Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
            BadGateway,
        ),
        (
            "Transfer-Encoding identity",
            GET_CLOSE,
            one("Transfer-Encoding: identity\r\n", b"ok"),
            BadGateway,
        ),
        (
            "Content-Length with +",
            GET_CLOSE,
            one("Content-Length: +2\r\n", b"ok"),
            BadGateway,
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            GET_CLOSE,
            vec![b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".to_vec()],
            BadGateway,
        ),
        (
            "two Transfer-Encoding lines",
            GET_CLOSE,
            one(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                b"0\r\n\r\n",
            ),
            BadGateway,
        ),
        (
            "status of four digits",
            GET_CLOSE,
            status("HTTP/1.1 2000 OK"),
            BadGateway,
        ),
        ("status not a number", GET_CLOSE, status("HTTP/1.1 abc OK"), BadGateway),
        ("status below 100", GET_CLOSE, status("HTTP/1.1 099 Low"), BadGateway),
        (
            "status line of HTTP/2.0",
            GET_CLOSE,
            status("HTTP/2.0 200 OK"),
            BadGateway,
        ),
        ("status line not HTTP", GET_CLOSE, status("HTTX/1.1 200 OK"), BadGateway),
        (
            "status line with NUL",
            GET_CLOSE,
            status("HTTP/1.1 200 O\0K"),
            BadGateway,
        ),
        (
            "obs-fold",
            GET_CLOSE,
            one("X-A: a\r\n b\r\nContent-Length: 2\r\n", b"ok"),
            BadGateway,
        ),
        (
            "NUL in a header value",
            GET_CLOSE,
            one("X-A: a\0b\r\nContent-Length: 2\r\n", b"ok"),
            BadGateway,
        ),
        (
            "bare CR in a header value",
            GET_CLOSE,
            one("X-A: a\rb\r\nContent-Length: 2\r\n", b"ok"),
            BadGateway,
        ),
        (
            "space before colon",
            GET_CLOSE,
            one("Content-Length : 2\r\n", b"ok"),
            BadGateway,
        ),
        (
            "head over 128 KiB",
            GET_CLOSE,
            one(
                &format!("X-Big: {}\r\nContent-Length: 2\r\n", "b".repeat(130 * 1024)),
                b"ok",
            ),
            BadGateway,
        ),
        (
            "unsolicited 101",
            GET_CLOSE,
            vec![
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhello".to_vec(),
            ],
            BadGateway,
        ),
        // Bodies cut or broken mid-way. An event stream passes each read on
        // as it comes: the client has the good part, then the connection's
        // end without the last chunk (or short of the length), so it can
        // tell the body was cut.
        (
            "bad chunk size mid-stream",
            GET_KEEP,
            sse_then(b"zz\r\nworld\r\n0\r\n\r\n"),
            Exactly(cat(&[SSE_HEAD, b"9\r\ndata: a\n\n\r\n"])),
        ),
        (
            "overflowing chunk size mid-stream",
            GET_KEEP,
            sse_then(b"ffffffffffffffffff\r\nworld\r\n0\r\n\r\n"),
            Exactly(cat(&[SSE_HEAD, b"9\r\ndata: a\n\n\r\n"])),
        ),
        (
            "chunk data without CRLF mid-stream",
            GET_KEEP,
            sse_then(b"5\r\nworldXX0\r\n\r\n"),
            Exactly(cat(&[SSE_HEAD, b"9\r\ndata: a\n\n\r\n"])),
        ),
        (
            "bare LF mid-stream",
            GET_KEEP,
            sse_then(b"5\nworld\r\n0\r\n\r\n"),
            Exactly(cat(&[SSE_HEAD, b"9\r\ndata: a\n\n\r\n"])),
        ),
        (
            "trailer with obs-fold",
            GET_KEEP,
            sse_then(b"0\r\nX-T: a\r\n b\r\n\r\n"),
            Exactly(cat(&[SSE_HEAD, b"9\r\ndata: a\n\n\r\n"])),
        ),
        (
            "chunked event stream cut by the upstream closing",
            GET_KEEP,
            sse_then(b""),
            Exactly(cat(&[SSE_HEAD, b"9\r\ndata: a\n\n\r\n"])),
        ),
        (
            "Content-Length event stream cut by the upstream closing",
            GET_KEEP,
            one(
                "Content-Type: text/event-stream\r\nContent-Length: 20\r\n",
                b"data: a\n\n",
            ),
            Exactly(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 20\r\n\r\ndata: a\n\n".to_vec(),
            ),
        ),
        // Any other body is coalesced (proxyBuffering Auto): what is held
        // when the body breaks is dropped, and the connection ends.
        (
            "bad chunk size mid-body, coalesced",
            GET_KEEP,
            vec![
                cat(&[&head("Transfer-Encoding: chunked\r\n"), b"5\r\nhello\r\n"]),
                b"zz\r\nworld\r\n0\r\n\r\n".to_vec(),
            ],
            Exactly(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec()),
        ),
        (
            "Content-Length body cut by the upstream closing, coalesced",
            GET_KEEP,
            one("Content-Length: 10\r\n", b"hello"),
            Exactly(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n".to_vec()),
        ),
        // Well-formed answers around odd bytes.
        (
            "bytes after a Content-Length body",
            GET_CLOSE,
            one(
                "Content-Length: 5\r\n",
                b"helloHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
            ),
            Exactly(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello".to_vec()),
        ),
        (
            // With `Connection: close`: an upstream that keeps a connection
            // and later sends an answer nobody asked for poisons whichever
            // request reuses it (HTTP/1.1 cannot tell that answer from the
            // awaited one; the pool's checkout probe catches only bytes
            // that have already arrived). Here the extra bytes come after
            // the body was passed on and must not follow it.
            "bytes after a Content-Length body, later",
            GET_CLOSE,
            vec![
                cat(&[&head("Content-Length: 5\r\nConnection: close\r\n"), b"hello"]),
                b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil".to_vec(),
            ],
            Exactly(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello".to_vec()),
        ),
        (
            "100 Continue, then 200",
            GET_CLOSE,
            vec![b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()],
            Exactly(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_vec()),
        ),
        (
            "100 Continue and 103, apart, then 200",
            GET_CLOSE,
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
                b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n".to_vec(),
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            ],
            Exactly(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_vec()),
        ),
    ]
}

/// The upstream's answer to `/r/N`: the parts of response case N.
fn answer_case(request: &[u8]) -> Vec<Vec<u8>> {
    let line = String::from_utf8_lossy(&request[..find(request, b"\r\n").unwrap_or(0)]).into_owned();
    let index = line
        .split(' ')
        .nth(1)
        .and_then(|p| p.strip_prefix("/r/"))
        .and_then(|n| n.parse::<usize>().ok());
    match index {
        Some(i) => response_corpus().swap_remove(i).2,
        None => vec![OK.to_vec()],
    }
}

#[tokio::test]
async fn malformed_responses_are_502_and_cut_bodies_end_the_connection_unframed() {
    let up = Recorder::start(answer_case).await;
    let (gw, _dir, _logs) = gateway(&up).await;
    let addr = gw.proxy_addr();
    let mut problems = Vec::new();
    let corpus = response_corpus();
    let cases = corpus.len();
    for (i, (name, request, _, want)) in corpus.into_iter().enumerate() {
        let request = request.replace("{path}", &format!("/r/{i}"));
        let reply = talk(&addr, &[request.into_bytes()]).await;
        match want {
            Answer::BadGateway => {
                if reply.status() != Some(502) || !reply.closed {
                    problems.push(format!("{name}: want 502; got {reply:?}"));
                }
            }
            Answer::Exactly(want) => {
                if reply.bytes != want || !reply.closed {
                    problems.push(format!("{name}: want {:?} then the end; got {reply:?}", lossy(&want)));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {cases} cases:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Answers to HEAD: the head only, whatever the upstream sends after it,
/// and no false length. A Content-Length the upstream declared is kept
/// (RFC 9110 §8.6: the length a GET would have had); a chunked or
/// close-delimited answer has no length to declare, so none is written:
/// `content-length: 0` would tell the client that the resource is empty.
#[tokio::test]
async fn answers_to_head_are_heads_only_without_a_false_length() {
    let up = Recorder::start(|request| {
        let head = if find(request, b"HEAD /chunked ").is_some() {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice()
        } else if find(request, b"HEAD /length ").is_some() {
            b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n".as_slice()
        } else {
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".as_slice()
        };
        // A body anyway, which must not reach the client.
        vec![cat(&[head, b"5\r\nhello\r\n0\r\n\r\n"])]
    })
    .await;
    let (gw, _dir, _logs) = gateway(&up).await;
    for (path, want) in [
        ("/chunked", "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n"),
        (
            "/length",
            "HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\n",
        ),
        ("/until-close", "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n"),
    ] {
        let request = format!("HEAD {path} HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n");
        let reply = talk(&gw.proxy_addr(), &[request.into_bytes()]).await;
        assert_eq!(lossy(&reply.bytes), want, "HEAD {path}");
        assert!(reply.closed, "HEAD {path}");
    }
}
