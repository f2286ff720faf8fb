//! What an idle TLS connection holds on the heap, server side: handshakes
//! made in memory against rustls's client, each server connection kept
//! after a request came through it, heap growth counted by a counting
//! allocator. ssegate's stream ([`Session`], on rustls's unbuffered API)
//! holds rustls's state and no buffer; rustls's buffered connection (what
//! tokio-rustls wraps) is measured beside it for comparison.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use ssegate::proxy::tls_stream::{NotesServerName, Session};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use tokio::io::ReadBuf;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[derive(Debug)]
struct One(Arc<CertifiedKey>);

impl ResolvesServerCert for One {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn configs(tls12: bool) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let c = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
    let key = ssegate::certs::certified_key(c.cert.pem().as_bytes(), c.signing_key.serialize_pem().as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NotesServerName(One(Arc::new(key)))));
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut roots = RootCertStore::empty();
    roots.add(c.cert.der().clone()).unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS12]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    (Arc::new(server), Arc::new(client))
}

fn drain(client: &mut ClientConnection) -> Vec<u8> {
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    wire
}

fn to_client(client: &mut ClientConnection, mut wire: &[u8]) {
    while !wire.is_empty() {
        client.read_tls(&mut wire).unwrap();
        client.process_new_packets().unwrap();
    }
}

/// A handshake and one request through ssegate's session.
fn unbuffered(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> Session {
    let mut c = ClientConnection::new(client.clone(), "a.test".try_into().unwrap()).unwrap();
    let mut s = Session::new(server.clone()).unwrap();
    let mut room = vec![0; 4096];
    for _ in 0..4 {
        let mut work = drain(&mut c);
        let mut dst = ReadBuf::new(&mut room);
        s.receive(&mut work, &mut dst).unwrap();
        let out = s.outgoing().to_vec();
        s.sent(out.len());
        to_client(&mut c, &out);
    }
    c.writer()
        .write_all(b"GET /sse HTTP/1.1\r\nhost: a.test\r\n\r\n")
        .unwrap();
    let mut work = drain(&mut c);
    let mut dst = ReadBuf::new(&mut room);
    s.receive(&mut work, &mut dst).unwrap();
    assert!(dst.filled().starts_with(b"GET /sse"));
    let mut out = vec![0; 2048];
    let n = s
        .encrypt(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n", &mut out)
        .unwrap();
    to_client(&mut c, &out[..n]);
    assert_eq!(s.buffered(), 0);
    s
}

/// The same through rustls's buffered connection.
fn buffered(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> ServerConnection {
    let mut c = ClientConnection::new(client.clone(), "a.test".try_into().unwrap()).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    for _ in 0..4 {
        let wire = drain(&mut c);
        s.read_tls(&mut &wire[..]).unwrap();
        s.process_new_packets().unwrap();
        let mut out = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut out).unwrap();
        }
        to_client(&mut c, &out);
    }
    c.writer()
        .write_all(b"GET /sse HTTP/1.1\r\nhost: a.test\r\n\r\n")
        .unwrap();
    let wire = drain(&mut c);
    s.read_tls(&mut &wire[..]).unwrap();
    s.process_new_packets().unwrap();
    let mut req = [0; 4096];
    let _ = s.reader().read(&mut req).unwrap();
    s.writer()
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    while s.wants_write() {
        s.write_tls(&mut out).unwrap();
    }
    to_client(&mut c, &out);
    s
}

/// Heap bytes per connection kept, after a warm-up that fills the session
/// cache (256 entries, shared by all connections).
fn per_connection<T>(make: impl Fn() -> T) -> isize {
    const N: usize = 300;
    drop((0..N).map(|_| make()).collect::<Vec<_>>());
    let mut kept = Vec::with_capacity(N);
    let before = LIVE.load(Ordering::Relaxed);
    for _ in 0..N {
        kept.push(make());
    }
    let after = LIVE.load(Ordering::Relaxed);
    drop(kept);
    (after - before) / N as isize
}

#[test]
fn an_idle_tls_connection_holds_rustls_state_and_no_buffer() {
    for tls12 in [false, true] {
        let (server, client) = configs(tls12);
        let ours = per_connection(|| unbuffered(&server, &client));
        let theirs = per_connection(|| buffered(&server, &client));
        eprintln!(
            "{}: ssegate's session {ours} bytes per idle connection, rustls's buffered connection {theirs} (Session is {} bytes inline)",
            if tls12 { "TLS 1.2" } else { "TLS 1.3" },
            std::mem::size_of::<Session>()
        );
        assert!(ours < theirs, "{ours} against {theirs}");
        assert!(ours < 4096, "{ours} bytes per idle TLS connection");
    }
}
