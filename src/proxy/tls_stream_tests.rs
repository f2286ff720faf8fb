//! The record handling of [`Session`] against rustls's own client, bytes
//! passed by hand; and [`TlsStream`] over an in-memory pipe against
//! tokio-rustls's client.

use super::*;
use rustls::{AlertDescription, ClientConfig, ClientConnection, RootCertStore};
use std::io::{Read, Write};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug)]
struct One(Arc<CertifiedKey>);

impl ResolvesServerCert for One {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn configs(tls12_only: bool) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let c = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
    let key = crate::certs::certified_key(c.cert.pem().as_bytes(), c.signing_key.serialize_pem().as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NotesServerName(One(Arc::new(key)))));
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut roots = RootCertStore::empty();
    roots.add(c.cert.der().clone()).unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    (Arc::new(server), Arc::new(client))
}

/// Feeds `wire` to `server` as [`TlsStream`] does: the kept bytes, then up
/// to `chunk` new ones at a time, read with `room` bytes of room (and what
/// did not fit taken from the spill). Returns the plaintext.
fn feed(server: &mut Session, wire: &[u8], chunk: usize, room: usize) -> Result<Vec<u8>, TlsStreamError> {
    let mut plain = Vec::new();
    for piece in wire.chunks(chunk) {
        let mut work = server.kept().to_vec();
        work.extend_from_slice(piece);
        let mut buf = vec![0; room];
        let mut dst = ReadBuf::new(&mut buf);
        server.receive(&mut work, &mut dst)?;
        plain.extend_from_slice(dst.filled());
        while server.has_plaintext() {
            let mut buf = vec![0; room.max(1)];
            let mut dst = ReadBuf::new(&mut buf);
            server.take_plaintext(&mut dst);
            plain.extend_from_slice(dst.filled());
        }
        // Only a partial record is ever kept.
        assert!(server.kept().len() < MAX_RECORD, "kept {}", server.kept().len());
    }
    Ok(plain)
}

struct Pair {
    client: ClientConnection,
    server: Session,
}

impl Pair {
    fn new(tls12_only: bool) -> Pair {
        let (server, client) = configs(tls12_only);
        let mut pair = Pair {
            client: ClientConnection::new(client, "a.test".try_into().unwrap()).unwrap(),
            server: Session::new(server).unwrap(),
        };
        for _ in 0..10 {
            pair.send_to_server(usize::MAX, 0).unwrap();
            pair.send_to_client().unwrap();
            if !pair.client.is_handshaking() && !pair.server.is_handshaking() {
                break;
            }
        }
        assert!(!pair.server.is_handshaking() && !pair.client.is_handshaking());
        // The TLS 1.3 tickets, sent after the handshake.
        pair.send_to_client().unwrap();
        assert_eq!(pair.server.buffered(), 0, "a handshaken connection holds no buffer");
        pair
    }

    /// The client's records, fed to the server.
    fn send_to_server(&mut self, chunk: usize, room: usize) -> Result<Vec<u8>, TlsStreamError> {
        let wire = self.client_wire();
        feed(&mut self.server, &wire, chunk, room)
    }

    /// The client encrypts `data`; the records.
    fn client_sends(&mut self, data: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        for piece in data.chunks(16 * 1024) {
            self.client.writer().write_all(piece).unwrap();
            wire.extend(self.client_wire());
        }
        wire
    }

    fn client_wire(&mut self) -> Vec<u8> {
        let mut wire = Vec::new();
        while self.client.wants_write() {
            self.client.write_tls(&mut wire).unwrap();
        }
        wire
    }

    /// The server's records, fed to the client; returns the plaintext.
    fn send_to_client(&mut self) -> Result<Vec<u8>, rustls::Error> {
        let wire = self.server.outgoing().to_vec();
        self.server.sent(wire.len());
        self.client_reads(&wire)
    }

    fn client_reads(&mut self, wire: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let mut rd = wire;
        let mut out = Vec::new();
        loop {
            if !rd.is_empty() {
                self.client.read_tls(&mut rd).unwrap();
            }
            self.client.process_new_packets()?;
            match self.client.reader().read_to_end(&mut out) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            if rd.is_empty() {
                return Ok(out);
            }
        }
    }

    /// The server encrypts `data`; the records, in order.
    fn server_writes(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = vec![0; OUT_CAP];
        let mut wire = Vec::new();
        for piece in data.chunks(WRITE_MAX) {
            let n = self.server.encrypt(piece, &mut out).unwrap();
            wire.extend_from_slice(self.server.outgoing());
            let queued = self.server.outgoing().len();
            self.server.sent(queued);
            wire.extend_from_slice(&out[..n]);
        }
        wire
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn handshake_reports_alpn_sni_and_version() {
    let pair = Pair::new(false);
    assert_eq!(pair.server.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(pair.server.server_name(), Some("a.test"));
    assert_eq!(pair.server.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
}

#[test]
fn tls12_both_ways() {
    let mut pair = Pair::new(true);
    assert_eq!(pair.server.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(pair.server.server_name(), Some("a.test"));
    pair.client.writer().write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(pair.send_to_server(7, 5).unwrap(), b"GET / HTTP/1.1\r\n\r\n");
    let data = pattern(70_000);
    let wire = pair.server_writes(&data);
    assert_eq!(pair.client_reads(&wire).unwrap(), data);
    assert_eq!(pair.server.buffered(), 0);
}

#[test]
fn partial_records_across_reads() {
    let mut pair = Pair::new(false);
    let data = pattern(3000);
    pair.client.writer().write_all(&data).unwrap();
    // One byte per read: every record arrives in pieces.
    assert_eq!(pair.send_to_server(1, 100).unwrap(), data);
    assert_eq!(pair.server.buffered(), 0);
}

#[test]
fn several_records_in_one_read() {
    let mut pair = Pair::new(false);
    let mut expected = Vec::new();
    for i in 0..5 {
        let msg = format!("message {i};");
        pair.client.writer().write_all(msg.as_bytes()).unwrap();
        expected.extend_from_slice(msg.as_bytes());
    }
    let wire = pair.client_wire();
    assert!(wire.len() > 5 * 5, "five records");
    assert_eq!(feed(&mut pair.server, &wire, usize::MAX, 64 * 1024).unwrap(), expected);
    assert_eq!(pair.server.buffered(), 0);
}

#[test]
fn plaintext_larger_than_a_record_and_the_reader() {
    let mut pair = Pair::new(false);
    let data = pattern(100_000);
    let wire = pair.client_sends(&data);
    // All at once, with room for 1000 bytes: the rest waits in the spill.
    assert_eq!(feed(&mut pair.server, &wire, usize::MAX, 1000).unwrap(), data);
    // In pieces that split records at odd places.
    let wire = pair.client_sends(&data);
    assert_eq!(feed(&mut pair.server, &wire, 10_007, 4096).unwrap(), data);
    assert_eq!(pair.server.buffered(), 0);
}

#[test]
fn large_writes_reach_the_client_in_order() {
    let mut pair = Pair::new(false);
    let data = pattern(300_000);
    let wire = pair.server_writes(&data);
    assert_eq!(pair.client_reads(&wire).unwrap(), data);
    assert_eq!(pair.server.buffered(), 0);
}

#[test]
fn close_notify_from_the_client_ends_reading() {
    let mut pair = Pair::new(false);
    pair.client.writer().write_all(b"bye").unwrap();
    pair.client.send_close_notify();
    assert_eq!(pair.send_to_server(usize::MAX, 100).unwrap(), b"bye");
    assert!(pair.server.read_closed());
    assert_eq!(pair.server.buffered(), 0);
    // The server may still answer, then close its side.
    let wire = pair.server_writes(b"answer");
    assert_eq!(pair.client_reads(&wire).unwrap(), b"answer");
    pair.server.close_notify().unwrap();
    pair.send_to_client().unwrap();
    let mut rest = Vec::new();
    assert_eq!(pair.client.reader().read_to_end(&mut rest).unwrap(), 0, "a clean end");
}

#[test]
fn close_notify_from_the_server() {
    let mut pair = Pair::new(true);
    pair.server.close_notify().unwrap();
    pair.send_to_client().unwrap();
    let mut rest = Vec::new();
    assert_eq!(pair.client.reader().read_to_end(&mut rest).unwrap(), 0, "a clean end");
    assert!(matches!(
        pair.server.encrypt(b"late", &mut [0; 100]),
        Err(TlsStreamError::Closed)
    ));
}

#[test]
fn an_alert_from_the_client_fails_the_connection() {
    // During the handshake: a plaintext fatal alert.
    let (server, _) = configs(false);
    let mut session = Session::new(server).unwrap();
    let alert = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 40];
    let err = feed(&mut session, &alert, usize::MAX, 0).unwrap_err();
    assert!(
        matches!(
            err,
            TlsStreamError::Tls(rustls::Error::AlertReceived(AlertDescription::HandshakeFailure))
        ),
        "{err:?}"
    );
    assert!(matches!(feed(&mut session, b"more", 4, 0), Err(TlsStreamError::Failed)));

    // After it: a record the client cannot decrypt makes it send an
    // encrypted bad_record_mac.
    let mut pair = Pair::new(false);
    let mut wire = pair.server_writes(b"hello");
    let last = wire.len() - 1;
    wire[last] ^= 1;
    assert!(pair.client_reads(&wire).is_err());
    let err = pair.send_to_server(usize::MAX, 100).unwrap_err();
    assert!(
        matches!(
            err,
            TlsStreamError::Tls(rustls::Error::AlertReceived(AlertDescription::BadRecordMac))
        ),
        "{err:?}"
    );
}

#[test]
fn garbage_is_refused_with_an_alert() {
    // Before the handshake: not TLS at all.
    let (server, _) = configs(false);
    let mut session = Session::new(server).unwrap();
    let err = feed(&mut session, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", usize::MAX, 0).unwrap_err();
    assert!(matches!(err, TlsStreamError::Tls(_)), "{err:?}");
    assert_eq!(session.outgoing().first(), Some(&0x15), "a plaintext alert");
    assert_eq!(session.kept().len(), 0);

    // After it: an application data record that does not decrypt.
    let mut pair = Pair::new(false);
    let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    record.extend_from_slice(&[0xab; 0x20]);
    let err = feed(&mut pair.server, &record, usize::MAX, 100).unwrap_err();
    assert!(
        matches!(err, TlsStreamError::Tls(rustls::Error::DecryptError)),
        "{err:?}"
    );
    // The client is told, encrypted.
    let told = pair.send_to_client().unwrap_err();
    assert_eq!(told, rustls::Error::AlertReceived(AlertDescription::BadRecordMac));

    // A record longer than TLS allows.
    let mut pair = Pair::new(false);
    let err = feed(&mut pair.server, &[0x17, 0x03, 0x03, 0xff, 0xff], usize::MAX, 100).unwrap_err();
    assert!(matches!(err, TlsStreamError::Tls(_)), "{err:?}");
}

#[test]
fn key_update_both_ways() {
    let mut pair = Pair::new(false);
    for round in 0..3 {
        // The client updates its keys and asks the server to update its own.
        pair.client.refresh_traffic_keys().unwrap();
        let msg = format!("after update {round}");
        pair.client.writer().write_all(msg.as_bytes()).unwrap();
        assert_eq!(pair.send_to_server(3, 100).unwrap(), msg.as_bytes());
        // The server's answer is readable: its own key update went first.
        let wire = pair.server_writes(b"answer");
        assert_eq!(pair.client_reads(&wire).unwrap(), b"answer");
        assert_eq!(pair.server.buffered(), 0);
    }
}

#[test]
fn noted_server_name_is_not_taken_from_another_connection() {
    // A client without SNI after one with: no name.
    let (server, client) = configs(false);
    let _with = Pair::new(false);
    let mut session = Session::new(server).unwrap();
    let mut client = ClientConnection::new(client, "127.0.0.1".try_into().unwrap()).unwrap();
    let mut wire = Vec::new();
    client.write_tls(&mut wire).unwrap();
    feed(&mut session, &wire, usize::MAX, 0).unwrap();
    assert_eq!(session.server_name(), None);
}

/// A client over an in-memory pipe with little room, so that writes are
/// partial and the stream keeps what the pipe did not take.
async fn stream_pair(
    pipe: usize,
) -> (
    TlsStream<tokio::io::DuplexStream>,
    tokio_rustls::client::TlsStream<tokio::io::DuplexStream>,
) {
    let (server_config, client_config) = configs(false);
    let (a, b) = tokio::io::duplex(pipe);
    let connector = tokio_rustls::TlsConnector::from(client_config);
    let (server, client) = tokio::join!(
        accept(a, server_config),
        connector.connect("a.test".try_into().unwrap(), b)
    );
    (server.unwrap(), client.unwrap())
}

#[tokio::test]
async fn stream_carries_a_large_response_to_a_slow_reader() {
    let (mut server, mut client) = stream_pair(4096).await;
    assert_eq!(server.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(server.server_name(), Some("a.test"));
    let data = pattern(1 << 20);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        server.write_all(&sent).await.unwrap();
        server.flush().await.unwrap();
        assert_eq!(server.buffered(), 0, "all sent: nothing held");
        server.shutdown().await.unwrap();
        server
    });
    let mut got = Vec::new();
    let mut buf = [0; 1000];
    loop {
        let n = client.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() % 100 < 10 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data);
    // close_notify came: a clean end for the client.
    let server = writer.await.unwrap();
    assert_eq!(server.buffered(), 0);
}

#[tokio::test]
async fn stream_reads_what_the_client_sends_and_sees_its_close() {
    let (mut server, mut client) = stream_pair(8192).await;
    let data = pattern(200_000);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        client.write_all(&sent).await.unwrap();
        client.shutdown().await.unwrap();
        client
    });
    let mut got = Vec::new();
    let mut buf = [0; 777];
    loop {
        let n = server.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got == data);
    assert!(server.session.read_closed());
    assert_eq!(server.buffered(), 0);
    // The server can still answer after the client's close_notify.
    server.write_all(b"late answer").await.unwrap();
    server.shutdown().await.unwrap();
    let mut client = writer.await.unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"late answer");
}

#[tokio::test]
async fn stream_handshake_fails_on_garbage_and_on_early_end() {
    let (server_config, _) = configs(false);
    let (a, mut b) = tokio::io::duplex(4096);
    let server = tokio::spawn(accept(a, server_config.clone()));
    b.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(server.await.unwrap().is_err());
    // The alert reached the client.
    let mut alert = Vec::new();
    b.read_to_end(&mut alert).await.unwrap();
    assert_eq!(alert.first(), Some(&0x15));

    let (a, b) = tokio::io::duplex(4096);
    drop(b);
    let err = accept(a, server_config).await.err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn vectored_writes_leave_as_one_record() {
    let (mut server, client) = stream_pair(64 * 1024).await;
    // The tickets the server sent after the handshake, as the client read
    // them: then only what follows is on the pipe.
    let (mut raw, mut conn) = client.into_inner();
    let header = [7u8; 9];
    let payload = pattern(1000);
    let slices = [
        io::IoSlice::new(&header),
        io::IoSlice::new(&[]),
        io::IoSlice::new(&payload),
    ];
    assert!(server.is_write_vectored());
    let n = server.write_vectored(&slices).await.unwrap();
    assert_eq!(n, 1009);
    server.flush().await.unwrap();
    // Records one by one (the tickets sent after the handshake come
    // first, also as application data records in TLS 1.3) until the data
    // is in: it came as one record.
    let mut got = Vec::new();
    let mut last = 0;
    while got.is_empty() {
        let mut head = [0; 5];
        raw.read_exact(&mut head).await.unwrap();
        let len = u16::from_be_bytes([head[3], head[4]]) as usize;
        let mut record = head.to_vec();
        record.resize(5 + len, 0);
        raw.read_exact(&mut record[5..]).await.unwrap();
        conn.read_tls(&mut &record[..]).unwrap();
        conn.process_new_packets().unwrap();
        let _ = conn.reader().read_to_end(&mut got);
        last = len;
    }
    assert_eq!(last, 1009 + 1 + 16, "one record: the plaintext, its type, its tag");
    assert_eq!(&got[..9], &header);
    assert!(got[9..] == payload[..]);
}
