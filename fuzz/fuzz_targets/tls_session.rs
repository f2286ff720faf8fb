//! The server side of TLS (ssegate's `tls_stream::Session`, on rustls's
//! unbuffered API) fed what a real rustls client sends (its handshake,
//! records of the fuzzer's plaintext, key updates, close_notify), mixed
//! with the fuzzer's raw or flipped bytes, in reads of the fuzzer's sizes
//! and with readers of the fuzzer's room: never panics; only a partial
//! record is kept between reads; while no byte was tampered with, the
//! server reads exactly a prefix of what the client sent, and the client
//! reads what the server sent, through key updates both ways; after an
//! error every later read fails; and a connection with nothing in flight
//! holds no buffer. The certificate in fuzz/data is for this target only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};
use ssegate::proxy::tls_stream::{NotesServerName, Session, TlsStreamError, MAX_RECORD, OUT_CAP};
use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};
use tokio::io::ReadBuf;

const CERT: &str = include_str!("../data/tls-cert.pem");
const KEY: &str = include_str!("../data/tls-key.pem");

#[derive(Debug)]
struct One(Arc<CertifiedKey>);

impl ResolvesServerCert for One {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

struct Configs {
    server: Arc<ServerConfig>,
    /// Default versions, and TLS 1.2 only.
    clients: [Arc<ClientConfig>; 2],
}

fn configs() -> &'static Configs {
    static CONFIGS: OnceLock<Configs> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let key = ssegate::certs::certified_key(CERT.as_bytes(), KEY.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(NotesServerName(One(Arc::new(key.clone())))));
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut roots = RootCertStore::empty();
        roots.add(key.cert[0].clone()).unwrap();
        let client = |versions: &[&'static rustls::SupportedProtocolVersion]| {
            Arc::new(
                ClientConfig::builder_with_provider(provider.clone())
                    .with_protocol_versions(versions)
                    .unwrap()
                    .with_root_certificates(roots.clone())
                    .with_no_client_auth(),
            )
        };
        Configs {
            server: Arc::new(server),
            clients: [client(rustls::DEFAULT_VERSIONS), client(&[&rustls::version::TLS12])],
        }
    })
}

/// The fuzzer's input, taken a little at a time.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *b
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

struct Run {
    client: ClientConnection,
    server: Session,
    /// Client to server, not delivered yet.
    wire: Vec<u8>,
    sent: Vec<u8>,
    got: Vec<u8>,
    tampered: bool,
    failed: bool,
    /// Key updates since the client last sent data: rustls allows 32.
    updates: usize,
}

impl Run {
    /// Delivers the client's records to the server, `chunk` bytes a read,
    /// read with `room` bytes of room.
    fn deliver(&mut self, chunk: usize, room: usize) {
        while self.client.wants_write() {
            self.client.write_tls(&mut self.wire).unwrap();
        }
        let wire = std::mem::take(&mut self.wire);
        for piece in wire.chunks(chunk.max(1)) {
            let mut work = self.server.kept().to_vec();
            work.extend_from_slice(piece);
            let mut buf = vec![0; room];
            let mut dst = ReadBuf::new(&mut buf);
            let result = self.server.receive(&mut work, &mut dst);
            self.got.extend_from_slice(dst.filled());
            if let Err(e) = result {
                assert!(self.tampered || self.failed, "untampered bytes failed: {e}");
                self.failed = true;
                let mut again = piece.to_vec();
                let mut none = ReadBuf::new(&mut []);
                assert!(matches!(self.server.receive(&mut again, &mut none), Err(TlsStreamError::Failed)));
                return;
            }
            while self.server.has_plaintext() {
                let mut buf = vec![0; room.max(1)];
                let mut dst = ReadBuf::new(&mut buf);
                self.server.take_plaintext(&mut dst);
                self.got.extend_from_slice(dst.filled());
            }
            assert!(self.server.kept().len() < MAX_RECORD, "kept {}", self.server.kept().len());
        }
    }

    /// Delivers the server's records to the client.
    fn answer(&mut self) {
        let wire = self.server.outgoing().to_vec();
        self.server.sent(wire.len());
        let mut rd = &wire[..];
        while !rd.is_empty() {
            if self.client.read_tls(&mut rd).is_err() {
                return;
            }
            if let Err(e) = self.client.process_new_packets() {
                assert!(self.tampered || self.failed, "the client refused untampered records: {e}");
                return;
            }
            let mut out = Vec::new();
            let _ = self.client.reader().read_to_end(&mut out);
        }
    }

    fn handshake(&mut self) {
        for _ in 0..6 {
            self.deliver(usize::MAX, 0);
            self.answer();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mode = input.byte();
    let configs = configs();
    let client = ClientConnection::new(configs.clients[(mode & 1) as usize].clone(), "a.test".try_into().unwrap()).unwrap();
    let mut run = Run {
        client,
        server: Session::new(configs.server.clone()).unwrap(),
        wire: Vec::new(),
        sent: Vec::new(),
        got: Vec::new(),
        tampered: false,
        failed: false,
        updates: 0,
    };
    if mode & 2 == 0 {
        run.handshake();
        assert!(!run.server.is_handshaking(), "an untampered handshake completes");
        assert_eq!(run.server.server_name(), Some("a.test"));
        assert_eq!(run.server.buffered(), 0);
    }
    let mut out = vec![0; OUT_CAP];
    while !input.0.is_empty() && !run.failed {
        match input.byte() % 8 {
            0 if !run.client.is_handshaking() => {
                let n = input.byte() as usize * 97;
                let chunk: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
                if let Ok(k) = run.client.writer().write(&chunk) {
                    run.sent.extend_from_slice(&chunk[..k]);
                    if k > 0 {
                        run.updates = 0;
                    }
                }
            }
            1 => {
                let n = input.byte() as usize;
                let raw = input.bytes(n).to_vec();
                run.wire.extend_from_slice(&raw);
                run.tampered = true;
            }
            2 => {
                let at = u16::from_le_bytes([input.byte(), input.byte()]) as usize;
                if !run.wire.is_empty() {
                    let len = run.wire.len();
                    run.wire[at % len] ^= input.byte() | 1;
                    run.tampered = true;
                }
            }
            3 if run.updates < 16 => {
                if run.client.refresh_traffic_keys().is_ok() {
                    run.updates += 1;
                }
            }
            4 => run.client.send_close_notify(),
            5 => {
                let chunk = input.byte() as usize * 61 + 1;
                let room = input.byte() as usize * 67;
                run.deliver(chunk, room);
            }
            6 if !run.server.is_handshaking() => {
                let n = input.byte() as usize * 331;
                let plain: Vec<u8> = (0..n).map(|i| (i % 7) as u8).collect();
                match run.server.encrypt(&plain, &mut out) {
                    Ok(k) => {
                        let direct = out[..k].to_vec();
                        run.answer();
                        let mut rd = &direct[..];
                        while !rd.is_empty() && run.client.read_tls(&mut rd).is_ok() {
                            if run.client.process_new_packets().is_err() {
                                assert!(run.tampered, "the client refused untampered records");
                                break;
                            }
                            let mut sink = Vec::new();
                            let _ = run.client.reader().read_to_end(&mut sink);
                        }
                    }
                    Err(TlsStreamError::Closed) => {}
                    Err(e) => assert!(run.tampered, "{e}"),
                }
            }
            7 => {
                let _ = run.server.close_notify();
                run.answer();
            }
            _ => run.answer(),
        }
    }
    if !run.failed {
        run.deliver(usize::MAX, 1 << 16);
    }
    if !run.tampered {
        assert!(run.sent.starts_with(&run.got), "the server read other bytes than were sent");
        if !run.server.is_handshaking() && !run.server.read_closed() {
            assert_eq!(run.got.len(), run.sent.len(), "all that was sent was read");
        }
    }
    if run.server.kept().is_empty() && !run.server.has_plaintext() && run.server.outgoing().is_empty() {
        assert_eq!(run.server.buffered(), 0, "nothing in flight: no buffer held");
    }
});
