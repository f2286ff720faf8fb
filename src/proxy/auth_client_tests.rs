//! Against real servers on 127.0.0.1: raw HTTP/1.1 written byte by byte,
//! hyper's server, and rustls with a CA made by rcgen. Every wait has a
//! deadline ([`WAIT`]); negative checks are made on counters after the
//! client has returned, or over a stated window.

use super::*;
use std::future::Future;
use std::sync::atomic::AtomicUsize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The longest any test waits for something to happen.
const WAIT: Duration = Duration::from_secs(3);

const OK_2: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// What servers saw, per accepted connection (numbered from 0).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<LogState>>);

#[derive(Default)]
struct LogState {
    heads: Vec<(usize, Vec<u8>)>,
    answered: HashMap<usize, Instant>,
    closed: HashMap<usize, Instant>,
}

impl Log {
    fn head(&self, conn: usize, head: Vec<u8>) {
        lock(&self.0).heads.push((conn, head));
    }
    fn answered(&self, conn: usize) {
        lock(&self.0).answered.insert(conn, Instant::now());
    }
    fn closed(&self, conn: usize) {
        lock(&self.0).closed.insert(conn, Instant::now());
    }
    fn heads(&self) -> Vec<(usize, String)> {
        lock(&self.0)
            .heads
            .iter()
            .map(|(c, h)| (*c, String::from_utf8(h.clone()).unwrap()))
            .collect()
    }
    fn answered_at(&self, conn: usize) -> Option<Instant> {
        lock(&self.0).answered.get(&conn).copied()
    }
    fn closed_at(&self, conn: usize) -> Option<Instant> {
        lock(&self.0).closed.get(&conn).copied()
    }
    fn closed_count(&self) -> usize {
        lock(&self.0).closed.len()
    }
}

/// Polls `condition` until it holds; panics after [`WAIT`].
async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A server on 127.0.0.1 running `handler` for each accepted connection;
/// returns its address and the count of accepted connections.
async fn raw_server<F, Fut>(handler: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream, usize) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let index = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(handler(stream, index));
        }
    });
    (addr, accepted)
}

/// One request head (the client sends no bodies), or `None` at the end of
/// the stream; panics on bytes after the head or a stall past [`WAIT`].
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("request head within WAIT")
            .unwrap_or(0);
        if n == 0 {
            assert!(head.is_empty(), "stream ended inside a head: {head:?}");
            return None;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            assert_eq!(end + 4, head.len(), "bytes after the request head");
            return Some(head);
        }
    }
}

/// Answers every request on the connection with `response`, logging heads,
/// answers and the end of the connection.
async fn answer_all(mut stream: TcpStream, conn: usize, log: Log, response: &'static [u8]) {
    while let Some(head) = read_head(&mut stream).await {
        log.head(conn, head);
        if stream.write_all(response).await.is_err() {
            break;
        }
        log.answered(conn);
    }
    log.closed(conn);
}

/// A server answering every request with `response`.
async fn answering_server(log: &Log, response: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let log = log.clone();
    raw_server(move |stream, conn| answer_all(stream, conn, log.clone(), response)).await
}

fn client() -> AuthClient {
    AuthClient::new(AuthClientSettings::default()).unwrap()
}

fn target(addr: SocketAddr) -> AuthTarget {
    AuthTarget {
        scheme: AuthScheme::Http,
        host: "auth.example".to_owned(),
        port: 80,
        addresses: Resolution::Fixed(vec![addr].into()),
    }
}

fn keepalive(connections: usize, requests: u64, timeout: Duration) -> PoolSettings {
    PoolSettings {
        keepalive_connections: connections,
        keepalive_requests: requests,
        keepalive_timeout: timeout,
    }
}

fn request(method: &str, uri: &str) -> Request<()> {
    Request::builder().method(method).uri(uri).body(()).unwrap()
}

fn get() -> Request<()> {
    request("GET", "/auth")
}

const GET_HEAD: &str = "GET /auth HTTP/1.1\r\nHost: auth.example\r\n\r\n";
const GET_HEAD_CLOSE: &str = "GET /auth HTTP/1.1\r\nHost: auth.example\r\nConnection: close\r\n\r\n";

async fn send(client: &AuthClient, target: &AuthTarget, pool: &PoolSettings) -> Result<AuthAnswer, AuthClientError> {
    client.send(target, pool, &Timeouts::default(), get()).await
}

#[test]
fn defaults_follow_ingress_nginx() {
    assert_eq!(
        PoolSettings::default(),
        keepalive(0, 1000, Duration::from_secs(60)),
        "authreq/main.go: defaultKeepaliveConnections 0, Requests 1000, Timeout 60"
    );
    assert_eq!(
        Timeouts::default(),
        Timeouts {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(60)
        }
    );
    assert!(!PoolSettings::default().keeps_alive());
    assert!(keepalive(1, 1, Duration::from_secs(1)).keeps_alive());
    assert!(!keepalive(1, 0, Duration::from_secs(1)).keeps_alive());
    assert!(!keepalive(1, 1, Duration::ZERO).keeps_alive());
}

#[test]
fn client_is_send_sync_and_clone() {
    fn shared<T: Send + Sync + Clone + 'static>() {}
    shared::<AuthClient>();
    fn send_future<F: Future + Send>(_: F) {}
    let client = client();
    let target = target("127.0.0.1:1".parse().unwrap());
    send_future(client.send(&target, &PoolSettings::default(), &Timeouts::default(), get()));
}

#[tokio::test]
async fn sends_origin_form_with_target_host_and_connection_close_without_keepalive() {
    let log = Log::default();
    let (addr, accepted) = answering_server(
        &log,
        b"HTTP/1.1 401 Unauthorized\r\nWww-Authenticate: Basic\r\nContent-Length: 4\r\n\r\nnope",
    )
    .await;
    let client = client();
    let req = Request::builder()
        .uri("http://ignored.example:9999/oauth2/auth?rd=%2Fa")
        .header("Host", "evil.example")
        .header("X-Original-URL", "https://app.example/a?b=c")
        .header("Content-Length", "5")
        .header("Transfer-Encoding", "chunked")
        .header("Connection", "keep-alive")
        .header("Keep-Alive", "timeout=5")
        .header("Upgrade", "websocket")
        .header("TE", "trailers")
        .header("X-Forwarded-For", "10.0.0.1")
        .header("x-forwarded-for", "10.0.0.2")
        .body(())
        .unwrap();
    let answer = client
        .send(&target(addr), &PoolSettings::default(), &Timeouts::default(), req)
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.headers.get("www-authenticate").unwrap(), "Basic");
    assert_eq!(answer.headers.get("content-length").unwrap(), "4");
    assert_eq!(answer.headers.len(), 2);
    assert_eq!(
        log.heads(),
        vec![(
            0,
            "GET /oauth2/auth?rd=%2Fa HTTP/1.1\r\n\
             Host: auth.example\r\n\
             X-Original-Url: https://app.example/a?b=c\r\n\
             X-Forwarded-For: 10.0.0.1\r\n\
             X-Forwarded-For: 10.0.0.2\r\n\
             Connection: close\r\n\r\n"
                .to_owned()
        )]
    );
    // The client closes the connection after the answer.
    wait_until("the server to see the connection end", || log.closed_at(0).is_some()).await;
    assert_eq!(client.idle_connections(), 0);

    // Without keep-alive every subrequest has its own connection.
    client
        .send(&target(addr), &PoolSettings::default(), &Timeouts::default(), get())
        .await
        .unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(client.connections_opened(), 2);
    assert_eq!(client.reused_requests(), 0);
    assert_eq!(log.heads()[1], (1, GET_HEAD_CLOSE.to_owned()));
}

#[tokio::test]
async fn other_methods_and_uri_forms_are_sent_without_a_body() {
    let log = Log::default();
    let (addr, _) = answering_server(&log, OK_2).await;
    let client = client();
    let pool = PoolSettings::default();
    let cases = [
        (
            "POST",
            "/check",
            "POST /check HTTP/1.1\r\nHost: auth.example\r\nConnection: close\r\n\r\n",
        ),
        (
            "HEAD",
            "https://x.example",
            "HEAD / HTTP/1.1\r\nHost: auth.example\r\nConnection: close\r\n\r\n",
        ),
        (
            "GET",
            "x.example:80",
            "GET / HTTP/1.1\r\nHost: auth.example\r\nConnection: close\r\n\r\n",
        ),
        (
            "GET",
            "*",
            "GET * HTTP/1.1\r\nHost: auth.example\r\nConnection: close\r\n\r\n",
        ),
        (
            "GET",
            "/?",
            "GET /? HTTP/1.1\r\nHost: auth.example\r\nConnection: close\r\n\r\n",
        ),
    ];
    for (i, (method, uri, expected)) in cases.iter().enumerate() {
        let answer = client
            .send(&target(addr), &pool, &Timeouts::default(), request(method, uri))
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{method} {uri}");
        assert_eq!(log.heads()[i], (i, expected.to_string()), "{method} {uri}");
    }
}

#[tokio::test]
async fn host_header_is_the_target_host_without_port() {
    let log = Log::default();
    let (addr, _) = answering_server(&log, OK_2).await;
    let client = client();
    for (i, (host, sent)) in [
        ("::1", "[::1]"),
        ("[::1]", "[::1]"),
        ("10.1.2.3", "10.1.2.3"),
        ("Auth.Example", "Auth.Example"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut target = target(addr);
        target.host = host.to_owned();
        target.port = 4180;
        send(&client, &target, &PoolSettings::default()).await.unwrap();
        assert_eq!(
            log.heads()[i].1,
            format!("GET /auth HTTP/1.1\r\nHost: {sent}\r\nConnection: close\r\n\r\n"),
            "{host}"
        );
    }
}

/// Gateway API's ExternalAuth: the client's Host goes to the auth service
/// (the connection still goes to the target), and `Content-Length: 0`, true
/// of the empty body, is sent as given; any other length is not.
#[tokio::test]
async fn send_as_sends_the_given_host_and_an_empty_content_length() {
    let log = Log::default();
    let (addr, _) = answering_server(&log, OK_2).await;
    let client = client();
    let req = Request::builder()
        .method("POST")
        .uri("http://auth.default.svc:80/ext/events?x=1")
        .header("Host", "ignored.example")
        .header("Content-Length", "0")
        .header("Authorization", "Bearer t")
        .body(())
        .unwrap();
    let answer = client
        .send_as(
            &target(addr),
            &PoolSettings::default(),
            &Timeouts::default(),
            req,
            Some(HeaderValue::from_static("app.example:8080")),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        log.heads(),
        vec![(
            0,
            "POST /ext/events?x=1 HTTP/1.1\r\n\
             Host: app.example:8080\r\n\
             Content-Length: 0\r\n\
             Authorization: Bearer t\r\n\
             Connection: close\r\n\r\n"
                .to_owned()
        )]
    );
    // Without a Host to send, the target's, as `send` does.
    let req = Request::builder()
        .uri("/ext")
        .header("Content-Length", "7")
        .body(())
        .unwrap();
    client
        .send_as(&target(addr), &PoolSettings::default(), &Timeouts::default(), req, None)
        .await
        .unwrap();
    assert_eq!(
        log.heads()[1].1,
        "GET /ext HTTP/1.1\r\nHost: auth.example\r\nConnection: close\r\n\r\n"
    );
}

#[tokio::test]
async fn invalid_target_hosts_are_refused_before_connecting() {
    let client = client();
    for host in [
        "",
        "a b",
        "a:80",
        "user@a",
        "a/b",
        "a\u{7f}",
        "é.example",
        "[a]",
        "fe80::1%eth0",
        "a?b",
        "a#b",
    ] {
        for scheme in [AuthScheme::Http, AuthScheme::Https] {
            let mut target = target("127.0.0.1:9".parse().unwrap());
            target.host = host.to_owned();
            target.scheme = scheme;
            let err = send(&client, &target, &PoolSettings::default()).await.unwrap_err();
            assert!(
                matches!(&err, AuthClientError::InvalidTarget { host: h } if h == host),
                "{host:?}: {err}"
            );
        }
    }
    assert_eq!(client.connections_opened(), 0);
}

#[tokio::test]
async fn keepalive_reuses_a_connection_for_keepalive_requests_then_opens_a_new_one() {
    let log = Log::default();
    let (addr, accepted) = answering_server(&log, OK_2).await;
    let client = client();
    let pool = keepalive(2, 3, Duration::from_secs(60));
    for _ in 0..7 {
        let answer = send(&client, &target(addr), &pool).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
    }
    let heads = log.heads();
    let expected: Vec<(usize, String)> = [
        (0, GET_HEAD),
        (0, GET_HEAD),
        (0, GET_HEAD_CLOSE),
        (1, GET_HEAD),
        (1, GET_HEAD),
        (1, GET_HEAD_CLOSE),
        (2, GET_HEAD),
    ]
    .into_iter()
    .map(|(c, h)| (c, h.to_owned()))
    .collect();
    assert_eq!(heads, expected);
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    assert_eq!(client.connections_opened(), 3);
    assert_eq!(client.reused_requests(), 4);
    // The first two were closed by the client after their last request; the
    // third is idle in the pool.
    wait_until("connections 0 and 1 to be closed", || {
        log.closed_at(0).is_some() && log.closed_at(1).is_some()
    })
    .await;
    assert_eq!(log.closed_at(2), None);
    assert_eq!(client.idle_connections(), 1);
}

#[tokio::test]
async fn one_request_per_connection_when_keepalive_requests_is_one() {
    let log = Log::default();
    let (addr, accepted) = answering_server(&log, OK_2).await;
    let client = client();
    let pool = keepalive(4, 1, Duration::from_secs(60));
    for _ in 0..2 {
        send(&client, &target(addr), &pool).await.unwrap();
    }
    assert_eq!(
        log.heads(),
        vec![(0, GET_HEAD_CLOSE.to_owned()), (1, GET_HEAD_CLOSE.to_owned())]
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(client.idle_connections(), 0);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_keepalive_timeout() {
    let log = Log::default();
    let (addr, accepted) = answering_server(&log, OK_2).await;
    let client = client();
    let idle = Duration::from_millis(300);
    let pool = keepalive(4, 100, idle);
    send(&client, &target(addr), &pool).await.unwrap();
    // Half the idle timeout later, the connection is reused, and its idle
    // time starts again from the second answer.
    tokio::time::sleep(idle / 2).await;
    send(&client, &target(addr), &pool).await.unwrap();
    assert_eq!(client.reused_requests(), 1, "reused within the idle timeout");
    assert_eq!(client.idle_connections(), 1);

    wait_until("the idle connection to be closed", || log.closed_at(0).is_some()).await;
    let kept = log.closed_at(0).unwrap() - log.answered_at(0).unwrap();
    assert!(
        kept >= idle,
        "closed {kept:?} after the last answer, before the {idle:?} idle timeout"
    );
    assert_eq!(client.idle_connections(), 0);

    send(&client, &target(addr), &pool).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(client.reused_requests(), 1);
}

#[tokio::test]
async fn an_expired_idle_connection_is_not_reused_even_if_still_open() {
    // The idle timer closes the connection; a checkout just after the
    // deadline must not take it either way.
    let log = Log::default();
    let (addr, accepted) = answering_server(&log, OK_2).await;
    let client = client();
    let pool = keepalive(4, 100, Duration::from_millis(50));
    send(&client, &target(addr), &pool).await.unwrap();
    let key = PoolKey {
        scheme: AuthScheme::Http,
        host: "auth.example".to_owned(),
        port: 80,
    };
    let later = Instant::now() + Duration::from_millis(60);
    assert!(client.shared.pool.checkout(&key, addr, later).is_none());
    assert_eq!(client.idle_connections(), 0);
    send(&client, &target(addr), &pool).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_least_recently_used_idle_connection_goes_when_the_cache_is_full() {
    let log = Log::default();
    let (addr, accepted) = answering_server(&log, OK_2).await;
    let client = client();
    let pool = keepalive(1, 100, Duration::from_secs(60));
    let target = target(addr);
    let (a, b) = tokio::join!(send(&client, &target, &pool), send(&client, &target, &pool));
    a.unwrap();
    b.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(client.idle_connections(), 1);
    wait_until("one connection to be closed", || log.closed_count() == 1).await;
    // The survivor is the one reused next.
    let open = if log.closed_at(0).is_some() { 1 } else { 0 };
    send(&client, &target, &pool).await.unwrap();
    assert_eq!(log.heads().last().unwrap().0, open);
    assert_eq!(client.reused_requests(), 1);
}

#[tokio::test]
async fn a_connection_the_server_closed_between_requests_is_dropped() {
    let log = Log::default();
    let close = Arc::new(tokio::sync::Notify::new());
    let (addr, accepted) = raw_server({
        let log = log.clone();
        let close = close.clone();
        move |mut stream, conn| {
            let log = log.clone();
            let close = close.clone();
            async move {
                let head = read_head(&mut stream).await.unwrap();
                log.head(conn, head);
                stream.write_all(OK_2).await.unwrap();
                // Closes when told, without having said so.
                let _ = tokio::time::timeout(WAIT, close.notified()).await;
            }
        }
    })
    .await;
    let client = client();
    let pool = keepalive(4, 100, Duration::from_secs(60));
    send(&client, &target(addr), &pool).await.unwrap();
    assert_eq!(client.idle_connections(), 1);
    close.notify_one();
    wait_until("the pool to drop the closed connection", || {
        client.idle_connections() == 0
    })
    .await;
    let answer = send(&client, &target(addr), &pool).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(client.reused_requests(), 0);
    assert_eq!(log.heads(), vec![(0, GET_HEAD.to_owned()), (1, GET_HEAD.to_owned())]);
}

#[test]
fn connection_close_in_an_answer() {
    let headers = |values: &[&'static str]| {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(CONNECTION, HeaderValue::from_static(v));
        }
        map
    };
    for closes in [
        &["close"][..],
        &["Close"],
        &["keep-alive, close"],
        &["keep-alive", " CLOSE "],
        &["x,close,y"],
    ] {
        assert!(asks_to_close(&headers(closes)), "{closes:?}");
    }
    for keeps in [
        &[][..],
        &["keep-alive"],
        &["closed"],
        &["close-ish, keep-alive"],
        &["x-close"],
    ] {
        assert!(!asks_to_close(&headers(keeps)), "{keeps:?}");
    }
}

/// Connection 0 answers its first request and closes on reading the
/// second without answering (the keep-alive race); the others answer all.
async fn closing_on_second_request_server(log: &Log) -> (SocketAddr, Arc<AtomicUsize>) {
    let log = log.clone();
    raw_server(move |mut stream, conn| {
        let log = log.clone();
        async move {
            if conn > 0 {
                return answer_all(stream, conn, log, OK_2).await;
            }
            let head = read_head(&mut stream).await.unwrap();
            log.head(conn, head);
            stream.write_all(OK_2).await.unwrap();
            let head = read_head(&mut stream).await.unwrap();
            log.head(conn, head);
        }
    })
    .await
}

#[tokio::test]
async fn an_idempotent_request_failing_on_a_reused_connection_is_retried_once_on_a_new_one() {
    let log = Log::default();
    let (addr, accepted) = closing_on_second_request_server(&log).await;
    let client = client();
    let pool = keepalive(4, 100, Duration::from_secs(60));
    send(&client, &target(addr), &pool).await.unwrap();
    let answer = send(&client, &target(addr), &pool).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        log.heads(),
        vec![
            (0, GET_HEAD.to_owned()),
            (0, GET_HEAD.to_owned()),
            (1, GET_HEAD.to_owned())
        ]
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(client.connections_opened(), 2);
    assert_eq!(client.reused_requests(), 1);
}

#[tokio::test]
async fn a_non_idempotent_request_failing_on_a_reused_connection_is_not_retried() {
    let log = Log::default();
    let (addr, _) = closing_on_second_request_server(&log).await;
    let client = client();
    let pool = keepalive(4, 100, Duration::from_secs(60));
    let post = || request("POST", "/auth");
    client
        .send(&target(addr), &pool, &Timeouts::default(), post())
        .await
        .unwrap();
    let err = client
        .send(&target(addr), &pool, &Timeouts::default(), post())
        .await
        .unwrap_err();
    match &err {
        AuthClientError::Protocol { addr: a, source } => {
            assert_eq!(*a, addr);
            assert!(source.is_incomplete_message(), "{source}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        err.to_string(),
        format!("HTTP/1.1 exchange with auth server {addr} failed: connection closed before message completed")
    );
    assert_eq!(client.connections_opened(), 1);
    assert_eq!(log.heads().len(), 2);
}

#[tokio::test]
async fn a_failure_on_a_new_connection_is_not_retried() {
    let (addr, accepted) = raw_server(|mut stream, _| async move {
        read_head(&mut stream).await;
    })
    .await;
    let client = client();
    let err = send(&client, &target(addr), &keepalive(4, 100, Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AuthClientError::Protocol { source, .. } if source.is_incomplete_message()),
        "{err}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(client.connections_opened(), 1);
}

#[tokio::test]
async fn connection_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = client();
    let err = send(&client, &target(addr), &PoolSettings::default())
        .await
        .unwrap_err();
    match &err {
        AuthClientError::Connect { addr: a, source } => {
            assert_eq!(*a, addr);
            assert_eq!(source.kind(), io::ErrorKind::ConnectionRefused);
        }
        other => panic!("{other}"),
    }
    assert!(err
        .to_string()
        .starts_with(&format!("connecting to auth server {addr} failed: ")));
    assert_eq!(client.connections_opened(), 0);
}

#[tokio::test]
async fn a_refused_address_is_skipped_for_the_next_one() {
    let refused = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let log = Log::default();
    let (good, _) = answering_server(&log, OK_2).await;
    let client = client();
    let mut target = target(good);
    target.addresses = Resolution::Fixed(vec![refused, good].into());
    // Round-robin starts at `refused` and falls through to `good`; the next
    // request starts at `good`.
    send(&client, &target, &PoolSettings::default()).await.unwrap();
    send(&client, &target, &PoolSettings::default()).await.unwrap();
    assert_eq!(client.connections_opened(), 2);
    assert_eq!(log.heads().len(), 2);
}

#[tokio::test]
async fn connect_attempts_are_bounded() {
    let mut refused = Vec::new();
    for _ in 0..MAX_CONNECT_ATTEMPTS {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        refused.push(listener.local_addr().unwrap());
    }
    let log = Log::default();
    let (good, _) = answering_server(&log, OK_2).await;
    let client = client();
    let mut target = target(good);
    let mut addresses = refused.clone();
    addresses.push(good);
    target.addresses = Resolution::Fixed(addresses.into());
    let err = send(&client, &target, &PoolSettings::default()).await.unwrap_err();
    // The last address tried is reported.
    assert!(
        matches!(&err, AuthClientError::Connect { addr, .. } if *addr == refused[MAX_CONNECT_ATTEMPTS - 1]),
        "{err}"
    );
    assert_eq!(log.heads().len(), 0);
}

#[tokio::test]
async fn addresses_are_used_round_robin_per_target_with_their_own_idle_connections() {
    let log_a = Log::default();
    let log_b = Log::default();
    let (a, accepted_a) = answering_server(&log_a, OK_2).await;
    let (b, accepted_b) = answering_server(&log_b, OK_2).await;
    let client = client();
    let pool = keepalive(4, 100, Duration::from_secs(60));
    let mut both = target(a);
    both.addresses = Resolution::Fixed(vec![a, b].into());
    let mut other = target(a);
    other.host = "other.example".to_owned();
    for _ in 0..4 {
        send(&client, &both, &pool).await.unwrap();
        // Another target's requests do not move this target's rotation.
        send(&client, &other, &pool).await.unwrap();
    }
    let b_heads = log_b.heads();
    assert_eq!(b_heads.len(), 2);
    assert!(b_heads.iter().all(|(c, h)| *c == 0 && h == GET_HEAD));
    assert_eq!(
        log_a.heads().iter().filter(|(_, h)| h.contains("auth.example")).count(),
        2
    );
    assert_eq!(
        log_a
            .heads()
            .iter()
            .filter(|(_, h)| h.contains("other.example"))
            .count(),
        4
    );
    // One connection per address and target, each reused.
    assert_eq!(accepted_a.load(Ordering::SeqCst), 2);
    assert_eq!(accepted_b.load(Ordering::SeqCst), 1);
    assert_eq!(client.reused_requests(), 5);
}

#[tokio::test]
async fn empty_fixed_addresses() {
    let client = client();
    let mut target = target("127.0.0.1:1".parse().unwrap());
    target.addresses = Resolution::Fixed(Vec::new().into());
    let err = send(&client, &target, &PoolSettings::default()).await.unwrap_err();
    assert!(matches!(&err, AuthClientError::NoAddresses { host } if host == "auth.example"));
    assert_eq!(
        err.to_string(),
        "auth host \"auth.example\" has no addresses to connect to"
    );
}

/// A listener on 127.0.0.1 that accepts nothing, its backlog filled until
/// a connect no longer completes; the fillers are returned to keep it full.
/// `None` where the network stack does not drop connects to a full backlog.
async fn unanswering_listener() -> Option<(SocketAddr, TcpListener, Vec<TcpStream>)> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let listener = socket.listen(0).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            Ok(Err(e)) => panic!("filling the backlog: {e}"),
            Err(_) => return Some((addr, listener, fillers)),
        }
    }
    None
}

#[tokio::test]
async fn connect_timeout_when_the_server_does_not_accept() {
    let (addr, _listener, _fillers) = unanswering_listener()
        .await
        .expect("a listener with a full backlog drops further connects (Linux)");
    let client = client();
    let timeouts = Timeouts {
        connect: Duration::from_millis(300),
        response: Duration::from_secs(1),
    };
    let started = Instant::now();
    let err = client
        .send(&target(addr), &PoolSettings::default(), &timeouts, get())
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, AuthClientError::ConnectTimeout { addr: a, after } if *a == addr && *after == timeouts.connect),
        "{err}"
    );
    assert!(took >= timeouts.connect && took < WAIT, "{took:?}");
    assert_eq!(client.connections_opened(), 0);
}

#[tokio::test]
async fn connect_timeout_covers_the_tls_handshake() {
    let (addr, accepted) = raw_server(|mut stream, _| async move {
        // Reads the ClientHello and never answers.
        let mut buf = [0u8; 4096];
        while tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .is_ok_and(|r| r.is_ok_and(|n| n > 0))
        {}
    })
    .await;
    let client = client();
    let mut target = target(addr);
    target.scheme = AuthScheme::Https;
    let timeouts = Timeouts {
        connect: Duration::from_millis(300),
        response: Duration::from_secs(1),
    };
    let started = Instant::now();
    let err = client
        .send(&target, &PoolSettings::default(), &timeouts, get())
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, AuthClientError::ConnectTimeout { after, .. } if *after == timeouts.connect),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("connecting to auth server {addr} (TCP and TLS handshake) took longer than 300ms")
    );
    assert!(took >= timeouts.connect && took < WAIT, "{took:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn response_timeout_when_the_server_is_slow() {
    let log = Log::default();
    let (addr, _) = raw_server({
        let log = log.clone();
        move |mut stream, conn| {
            let log = log.clone();
            async move {
                let head = read_head(&mut stream).await.unwrap();
                log.head(conn, head);
                // A partial head, then silence until the client leaves.
                stream.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
                let mut buf = [0u8; 16];
                let _ = tokio::time::timeout(WAIT, stream.read(&mut buf)).await;
                log.closed(conn);
            }
        }
    })
    .await;
    let client = client();
    let timeouts = Timeouts {
        connect: Duration::from_secs(1),
        response: Duration::from_millis(300),
    };
    let started = Instant::now();
    let err = client
        .send(
            &target(addr),
            &keepalive(4, 100, Duration::from_secs(60)),
            &timeouts,
            get(),
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(&err, AuthClientError::Timeout { addr: a, after } if *a == addr && *after == timeouts.response));
    assert_eq!(
        err.to_string(),
        format!("auth server {addr} sent no complete response head within 300ms")
    );
    assert!(took >= timeouts.response && took < WAIT, "{took:?}");
    // The connection is abandoned, not pooled.
    wait_until("the server to see the connection end", || log.closed_at(0).is_some()).await;
    assert!(log.closed_at(0).unwrap() - started < WAIT);
    assert_eq!(client.idle_connections(), 0);
}

/// A server answering once with `response`, then reading until the client
/// leaves.
async fn one_answer_server(response: Vec<u8>) -> SocketAddr {
    let response: &'static [u8] = response.leak();
    let (addr, _) = raw_server(move |mut stream, _| async move {
        read_head(&mut stream).await.unwrap();
        let _ = stream.write_all(response).await;
        let mut buf = [0u8; 16];
        let _ = tokio::time::timeout(WAIT, stream.read(&mut buf)).await;
    })
    .await;
    addr
}

/// The bytes of [`head_of_len`]'s head besides the `X-Pad` value.
const PADDED_HEAD_OVERHEAD: usize = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: \r\n\r\n".len();

/// A response head of exactly `len` bytes (status line to the empty line).
fn head_of_len(len: usize) -> Vec<u8> {
    let pad = "a".repeat(len - PADDED_HEAD_OVERHEAD);
    format!("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: {pad}\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn response_head_size_limit_is_exact() {
    let settings = AuthClientSettings {
        max_head_bytes: 9000,
        ..AuthClientSettings::default()
    };
    let client = AuthClient::new(settings).unwrap();
    for len in [8998, 8999, 9000] {
        let addr = one_answer_server(head_of_len(len)).await;
        let answer = send(&client, &target(addr), &PoolSettings::default()).await.unwrap();
        assert_eq!(
            answer.headers.get("x-pad").unwrap().len(),
            len - PADDED_HEAD_OVERHEAD,
            "{len}"
        );
    }
    for len in [9001, 9002, 20_000, 100_000] {
        let addr = one_answer_server(head_of_len(len)).await;
        let err = send(&client, &target(addr), &PoolSettings::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                AuthClientError::TooLarge {
                    max_bytes: 9000,
                    max_headers: 100,
                    ..
                }
            ),
            "{len}: {err}"
        );
        assert_eq!(
            err.to_string(),
            format!("auth server {addr} sent a response head over 9000 bytes or 100 header fields")
        );
    }
}

#[tokio::test]
async fn default_head_limit_and_header_count_limit() {
    let client = client();
    let addr = one_answer_server(head_of_len(DEFAULT_MAX_HEAD_BYTES)).await;
    send(&client, &target(addr), &PoolSettings::default()).await.unwrap();
    let addr = one_answer_server(head_of_len(DEFAULT_MAX_HEAD_BYTES + 1)).await;
    let err = send(&client, &target(addr), &PoolSettings::default())
        .await
        .unwrap_err();
    assert!(matches!(err, AuthClientError::TooLarge { .. }), "{err}");

    let with_headers = |count: usize| {
        let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n".to_vec();
        for i in 1..count {
            head.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        head
    };
    let addr = one_answer_server(with_headers(DEFAULT_MAX_HEADERS)).await;
    let answer = send(&client, &target(addr), &PoolSettings::default()).await.unwrap();
    assert_eq!(answer.headers.len(), DEFAULT_MAX_HEADERS);
    let addr = one_answer_server(with_headers(DEFAULT_MAX_HEADERS + 1)).await;
    let err = send(&client, &target(addr), &PoolSettings::default())
        .await
        .unwrap_err();
    assert!(matches!(err, AuthClientError::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn malformed_answers_are_protocol_errors() {
    let client = client();
    for response in [
        &b"HTTP/1.1 2000 OK\r\n\r\n"[..],
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
    ] {
        let addr = one_answer_server(response.to_vec()).await;
        let err = send(&client, &target(addr), &PoolSettings::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AuthClientError::Protocol { source, .. } if source.is_parse()),
            "{:?}: {err}",
            String::from_utf8_lossy(response)
        );
    }
}

#[tokio::test]
async fn bodies_up_to_the_cap_are_drained_and_the_connection_reused() {
    let settings = AuthClientSettings {
        max_body_bytes: 10,
        ..AuthClientSettings::default()
    };
    let client = AuthClient::new(settings).unwrap();
    let pool = keepalive(4, 100, Duration::from_secs(60));
    // (answer, whether the connection is reused)
    let cases: [(&'static [u8], bool); 8] = [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", true),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789A", false),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n",
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n6\r\n56789A\r\n0\r\n\r\n",
            false,
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", true),
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n",
            false,
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
    ];
    for (response, reused) in cases {
        let log = Log::default();
        let (addr, accepted) = answering_server(&log, response).await;
        for _ in 0..2 {
            let answer = send(&client, &target(addr), &pool).await.unwrap();
            assert_eq!(answer.status.as_u16() / 100, 2);
        }
        let expected = if reused { 1 } else { 2 };
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            expected,
            "{:?}",
            String::from_utf8_lossy(response)
        );
    }
}

#[tokio::test]
async fn a_stalled_body_is_given_up_after_the_drain_timeout_and_the_answer_stands() {
    let settings = AuthClientSettings {
        body_drain_timeout: Duration::from_millis(200),
        ..AuthClientSettings::default()
    };
    let client = AuthClient::new(settings).unwrap();
    let log = Log::default();
    let (addr, accepted) = raw_server({
        let log = log.clone();
        move |mut stream, conn| {
            let log = log.clone();
            async move {
                let head = read_head(&mut stream).await.unwrap();
                log.head(conn, head);
                stream
                    .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 4\r\n\r\nab")
                    .await
                    .unwrap();
                let mut buf = [0u8; 16];
                let _ = tokio::time::timeout(WAIT, stream.read(&mut buf)).await;
                log.closed(conn);
            }
        }
    })
    .await;
    let started = Instant::now();
    let answer = send(&client, &target(addr), &keepalive(4, 100, Duration::from_secs(60)))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert!(took >= Duration::from_millis(200) && took < WAIT, "{took:?}");
    wait_until("the connection to be closed", || log.closed_at(0).is_some()).await;
    assert_eq!(client.idle_connections(), 0);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_hyper_server_answers_over_a_kept_alive_connection() {
    use hyper::service::service_fn;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    {
        let seen = seen.clone();
        let accepted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let user = req.headers().get("x-user").cloned();
                            lock(&seen).push((req.method().clone(), req.uri().to_string(), req.headers().clone()));
                            let response = match user {
                                Some(user) => http::Response::builder()
                                    .status(200)
                                    .header("X-Auth-Request-User", user)
                                    .body(http_body_util::Full::new(Bytes::from_static(b"")))
                                    .unwrap(),
                                None => http::Response::builder()
                                    .status(401)
                                    .body(http_body_util::Full::new(Bytes::from_static(b"Unauthorized\n")))
                                    .unwrap(),
                            };
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }
    let client = client();
    let pool = keepalive(2, 100, Duration::from_secs(60));
    let with_user = Request::builder()
        .uri("/oauth2/auth")
        .header("X-User", "alice")
        .body(())
        .unwrap();
    let answer = client
        .send(&target(addr), &pool, &Timeouts::default(), with_user)
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers.get("x-auth-request-user").unwrap(), "alice");
    for _ in 0..2 {
        let answer = client
            .send(
                &target(addr),
                &pool,
                &Timeouts::default(),
                request("GET", "/oauth2/auth"),
            )
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(client.reused_requests(), 2);
    let seen = lock(&seen);
    assert_eq!(seen.len(), 3);
    for (method, uri, headers) in seen.iter() {
        assert_eq!(method, Method::GET);
        assert_eq!(uri, "/oauth2/auth");
        assert_eq!(headers.get("host").unwrap(), "auth.example");
        assert!(headers.get("connection").is_none());
        assert!(headers.get("content-length").is_none());
    }
}

/// The server name (SNI) and ALPN protocol of a completed handshake.
type Handshake = (Option<String>, Option<Vec<u8>>);

struct TlsServer {
    addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    accepted: Arc<AtomicUsize>,
}

struct TestPki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

/// A CA and a leaf for `localhost` and 127.0.0.1 that it signed.
fn test_pki() -> TestPki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ssegate test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    TestPki {
        ca_pem: ca.pem(),
        chain: vec![leaf.der().clone()],
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    }
}

/// rustls serving HTTP/1.1 with hyper, answering 200 to everything.
async fn tls_server(pki: &TestPki) -> TlsServer {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), pki.key.clone_key())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = TlsServer {
        addr: listener.local_addr().unwrap(),
        handshakes: Arc::default(),
        accepted: Arc::default(),
    };
    let handshakes = server.handshakes.clone();
    let accepted = server.accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let handshakes = handshakes.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let session = tls.get_ref().1;
                lock(&handshakes).push((
                    session.server_name().map(str::to_owned),
                    session.alpn_protocol().map(<[u8]>::to_vec),
                ));
                let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                        Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    server
}

fn tls_target(server: &TlsServer, host: &str) -> AuthTarget {
    AuthTarget {
        scheme: AuthScheme::Https,
        host: host.to_owned(),
        port: 443,
        addresses: Resolution::Fixed(vec![server.addr].into()),
    }
}

fn client_trusting(pki: &TestPki) -> AuthClient {
    AuthClient::new(AuthClientSettings {
        extra_ca_pem: Some(pki.ca_pem.clone().into_bytes()),
        ..AuthClientSettings::default()
    })
    .unwrap()
}

#[tokio::test]
async fn https_with_an_extra_ca_sends_sni_and_alpn_and_reuses_the_connection() {
    let pki = test_pki();
    let server = tls_server(&pki).await;
    let client = client_trusting(&pki);
    let pool = keepalive(2, 100, Duration::from_secs(60));
    for _ in 0..2 {
        let answer = send(&client, &tls_target(&server, "localhost"), &pool).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(
        *lock(&server.handshakes),
        vec![(Some("localhost".to_owned()), Some(b"http/1.1".to_vec()))]
    );
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(client.reused_requests(), 1);
}

#[tokio::test]
async fn https_to_an_ip_literal_sends_no_sni() {
    let pki = test_pki();
    let server = tls_server(&pki).await;
    let client = client_trusting(&pki);
    let answer = send(&client, &tls_target(&server, "127.0.0.1"), &PoolSettings::default())
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(*lock(&server.handshakes), vec![(None, Some(b"http/1.1".to_vec()))]);
}

fn rustls_error(err: &AuthClientError) -> Option<&rustls::Error> {
    match err {
        AuthClientError::Tls { source, .. } => source.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

#[tokio::test]
async fn https_fails_with_an_untrusted_certificate() {
    let pki = test_pki();
    let server = tls_server(&pki).await;
    // Web PKI roots only.
    let client = client();
    let err = send(&client, &tls_target(&server, "localhost"), &PoolSettings::default())
        .await
        .unwrap_err();
    assert_eq!(
        rustls_error(&err),
        Some(&rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer
        )),
        "{err}"
    );
    assert!(err
        .to_string()
        .starts_with(&format!("TLS handshake with auth server {} failed: ", server.addr)));
    // Trusted CA, but the certificate is not for this name.
    let client = client_trusting(&pki);
    let err = send(&client, &tls_target(&server, "auth.example"), &PoolSettings::default())
        .await
        .unwrap_err();
    assert!(
        matches!(rustls_error(&err), Some(rustls::Error::InvalidCertificate(_))),
        "{err}"
    );
    assert!(lock(&server.handshakes).is_empty());
}

#[test]
fn extra_ca_must_be_pem_certificates() {
    let err = AuthClient::new(AuthClientSettings {
        extra_ca_pem: Some(b"not pem".to_vec()),
        ..AuthClientSettings::default()
    })
    .unwrap_err();
    assert!(matches!(err, AuthClientConfigError::ExtraCaEmpty), "{err}");
    let err = AuthClient::new(AuthClientSettings {
        extra_ca_pem: Some(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_vec()),
        ..AuthClientSettings::default()
    })
    .unwrap_err();
    assert!(matches!(err, AuthClientConfigError::ExtraCaPem(_)), "{err}");
    let err = AuthClient::new(AuthClientSettings {
        extra_ca_pem: Some(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec()),
        ..AuthClientSettings::default()
    })
    .unwrap_err();
    assert!(matches!(err, AuthClientConfigError::ExtraCaRejected(_)), "{err}");
}

#[tokio::test]
async fn dns_resolution_of_localhost_is_cached() {
    let log = Log::default();
    let (addr, _) = answering_server(&log, OK_2).await;
    let client = client();
    let target = AuthTarget {
        scheme: AuthScheme::Http,
        host: "localhost".to_owned(),
        port: addr.port(),
        addresses: Resolution::Dns,
    };
    for _ in 0..3 {
        let answer = send(&client, &target, &PoolSettings::default()).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(client.dns_lookups(), 1);
    assert_eq!(log.heads().len(), 3);
    assert_eq!(
        log.heads()[0].1,
        "GET /auth HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
}

#[tokio::test]
async fn dns_answers_expire_after_the_ttl() {
    let log = Log::default();
    let (addr, _) = answering_server(&log, OK_2).await;
    let client = AuthClient::new(AuthClientSettings {
        dns_cache_ttl: Duration::ZERO,
        ..AuthClientSettings::default()
    })
    .unwrap();
    let target = AuthTarget {
        scheme: AuthScheme::Http,
        host: "localhost".to_owned(),
        port: addr.port(),
        addresses: Resolution::Dns,
    };
    send(&client, &target, &PoolSettings::default()).await.unwrap();
    send(&client, &target, &PoolSettings::default()).await.unwrap();
    assert_eq!(client.dns_lookups(), 2);
}

#[tokio::test]
async fn dns_failure_is_a_resolve_error() {
    let client = AuthClient::new(AuthClientSettings {
        resolve_timeout: Duration::from_secs(1),
        ..AuthClientSettings::default()
    })
    .unwrap();
    let target = AuthTarget {
        scheme: AuthScheme::Http,
        host: "nothing.invalid".to_owned(),
        port: 80,
        addresses: Resolution::Dns,
    };
    let err = send(&client, &target, &PoolSettings::default()).await.unwrap_err();
    assert!(
        matches!(&err, AuthClientError::Resolve { host, .. } | AuthClientError::ResolveTimeout { host, .. } if host == "nothing.invalid"),
        "{err}"
    );
    assert_eq!(client.connections_opened(), 0);
    // Failures are not cached.
    let _ = send(&client, &target, &PoolSettings::default()).await;
    assert_eq!(client.dns_lookups(), 2);
}

#[tokio::test]
async fn a_dropped_client_closes_its_idle_connections() {
    let log = Log::default();
    let (addr, _) = answering_server(&log, OK_2).await;
    let client = client();
    send(&client, &target(addr), &keepalive(4, 100, Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(client.idle_connections(), 1);
    drop(client);
    wait_until("the idle connection to be closed", || log.closed_at(0).is_some()).await;
}

/// A pooled-connection record over an in-memory pipe, with its hyper
/// connection kept (unpolled) so that it counts as open until dropped.
async fn pipe_conn(id: u64) -> (Conn, http1::Connection<TokioIo<tokio::io::DuplexStream>, Empty<Bytes>>) {
    let (io, _peer) = tokio::io::duplex(64);
    let (sender, connection) = http1::handshake(TokioIo::new(io)).await.unwrap();
    let conn = Conn {
        id,
        addr: "127.0.0.1:1".parse().unwrap(),
        sender,
        requests: 1,
        idle_deadline: watch::channel(None).0,
    };
    (conn, connection)
}

fn pool_key(host: &str) -> PoolKey {
    PoolKey {
        scheme: AuthScheme::Http,
        host: host.to_owned(),
        port: 80,
    }
}

#[tokio::test]
async fn the_pool_neither_keeps_nor_hands_out_closed_connections() {
    let pool = Pool::default();
    let settings = keepalive(4, 100, Duration::from_secs(60));
    let key = pool_key("a");
    let now = Instant::now();
    let addr = "127.0.0.1:1".parse().unwrap();

    let (closed, connection) = pipe_conn(1).await;
    drop(connection);
    pool.checkin(&key, closed, &settings, now);
    assert_eq!(pool.lock().idle_total, 0);

    let (open, connection) = pipe_conn(2).await;
    pool.checkin(&key, open, &settings, now);
    assert_eq!(pool.lock().idle_total, 1);
    drop(connection);
    assert!(pool.checkout(&key, addr, now).is_none());
    assert_eq!(pool.lock().idle_total, 0);

    let (open, _connection) = pipe_conn(3).await;
    pool.checkin(&key, open, &settings, now);
    assert_eq!(pool.checkout(&key, addr, now).map(|c| c.id), Some(3));
    assert_eq!(pool.lock().idle_total, 0);
}

#[tokio::test]
async fn the_pool_honours_the_settings_when_keeping_a_connection() {
    let pool = Pool::default();
    let key = pool_key("a");
    let now = Instant::now();
    let mut connections = Vec::new();
    for settings in [
        keepalive(0, 100, Duration::from_secs(60)),
        keepalive(4, 1, Duration::from_secs(60)),
        keepalive(4, 100, Duration::ZERO),
    ] {
        let (conn, connection) = pipe_conn(1).await;
        connections.push(connection);
        pool.checkin(&key, conn, &settings, now);
        assert_eq!(pool.lock().idle_total, 0, "{settings:?}");
    }
}

#[tokio::test]
async fn idle_connections_are_bounded_over_all_targets() {
    let pool = Pool::default();
    let settings = keepalive(MAX_IDLE_CONNECTIONS, 100, Duration::from_secs(60));
    let now = Instant::now();
    let mut connections = Vec::new();
    for id in 0..MAX_IDLE_CONNECTIONS as u64 + 1 {
        let (conn, connection) = pipe_conn(id).await;
        connections.push(connection);
        pool.checkin(&pool_key(if id % 2 == 0 { "a" } else { "b" }), conn, &settings, now);
    }
    assert_eq!(pool.lock().idle_total, MAX_IDLE_CONNECTIONS);
    let counted: usize = pool.lock().targets.values().map(|t| t.idle.len()).sum();
    assert_eq!(counted, MAX_IDLE_CONNECTIONS);
}

#[tokio::test]
async fn pooled_targets_are_bounded_forgetting_those_without_idle_connections_first() {
    let pool = Pool::default();
    let settings = keepalive(4, 100, Duration::from_secs(60));
    let (conn, _connection) = pipe_conn(7).await;
    pool.checkin(&pool_key("kept"), conn, &settings, Instant::now());
    for i in 1..MAX_POOLED_TARGETS {
        pool.next_address(&pool_key(&format!("t{i}")), 2);
    }
    assert_eq!(pool.lock().targets.len(), MAX_POOLED_TARGETS);
    pool.next_address(&pool_key("new"), 2);
    let state = pool.lock();
    assert_eq!(state.targets.len(), 2);
    assert_eq!(state.targets[&pool_key("kept")].idle.len(), 1);
    assert_eq!(state.idle_total, 1);
}

#[test]
fn round_robin_follows_a_changing_address_count() {
    let pool = Pool::default();
    let key = pool_key("a");
    let picks: Vec<usize> = [3, 3, 3, 3, 2, 2, 1, 5]
        .iter()
        .map(|n| pool.next_address(&key, *n))
        .collect();
    assert_eq!(picks, vec![0, 1, 2, 0, 1, 0, 0, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_from_several_threads_share_a_bounded_pool() {
    let log = Log::default();
    let (addr, accepted) = answering_server(&log, OK_2).await;
    let client = client();
    let pool = keepalive(4, 1000, Duration::from_secs(60));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let answer = send(&client, &target(addr), &pool).await.unwrap();
                assert_eq!(answer.status, StatusCode::OK);
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    }
    let opened = client.connections_opened();
    assert_eq!(opened, accepted.load(Ordering::SeqCst) as u64);
    assert_eq!(opened + client.reused_requests(), 200);
    assert!(opened <= 8 + 200 / 2, "{opened} connections for 200 requests");
    assert!(client.idle_connections() <= 4);
    assert_eq!(log.heads().len(), 200);
}
