//! Server-side TLS that holds no buffer while a connection is idle.
//!
//! rustls's usual (buffered) connection, and tokio-rustls around it, keep
//! buffers for the whole life of a connection: the incoming-record buffer
//! (which never shrinks below 4 KiB once a read was made), the queues of
//! received plaintext and of records to send, and tokio-rustls's own state.
//! An idle event stream over TLS cost about 15.6 KiB that way, most of it
//! buffers, against 2 KiB for the same stream in cleartext, where
//! [`super::h1`] reads into one scratch buffer per thread.
//!
//! This stream is built on rustls's unbuffered API
//! ([`UnbufferedServerConnection`]), where the caller owns every buffer:
//! - **Receiving**: bytes are read from the socket into a buffer of this
//!   thread ([`IN_CAP`]), after the few bytes kept from the last read, and
//!   the records are decrypted in place there. Plaintext goes straight into
//!   the reader's buffer. Only what could not be used now is copied into a
//!   buffer of the connection's own: a partial record (or, during a
//!   handshake, a message's fragments) in `incoming`, and plaintext the
//!   reader had no room for in `plaintext`. Both are freed once consumed.
//! - **Sending**: plaintext is encrypted into another buffer of this thread
//!   ([`OUT_CAP`]) and written to the socket in the same call; only what
//!   the socket did not take is kept, in `outgoing`, and the next write
//!   waits until it has gone (backpressure, as a slow client's cleartext
//!   stream holds what it has not taken yet). Handshake messages and
//!   alerts, which are rare, go through `outgoing` too.
//!
//! What an idle connection holds is then rustls's own state (keys,
//! handshake outcome) and nothing else.
//!
//! The record handling is sans-I/O ([`Session`]: bytes in, plaintext and
//! records out) and unit-tested on its own; [`TlsStream`] puts the socket
//! at the edge and implements tokio's `AsyncRead` and `AsyncWrite`, with
//! `poll_shutdown` sending `close_notify`.
//!
//! rustls 0.23 does not expose the server name (SNI) on an unbuffered
//! connection, so the certificate resolver is wrapped in
//! [`NotesServerName`], which notes the name of each ClientHello it sees on
//! the thread that processes it; [`Session`] picks it up right after.

use rustls::server::{ClientHello, ResolvesServerCert, ServerConnectionData, UnbufferedServerConnection};
use rustls::sign::CertifiedKey;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, WriteTraffic};
use rustls::ServerConfig;
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

/// The largest TLS record on the wire: a 5-byte header and 16 KiB of
/// plaintext with up to 2 KiB of expansion (rustls's `MAX_WIRE_SIZE`).
pub const MAX_RECORD: usize = 5 + 16384 + 2048;
/// Plaintext accepted by one `poll_write`: five full records, so that a
/// 64 KiB read of the cleartext path (and its chunked coding) leaves in
/// one write.
const WRITE_MAX: usize = 5 * 16384;
/// The per-thread receive buffer: what is kept from before, and a read of
/// up to the reader's room plus one record.
pub const IN_CAP: usize = 64 * 1024 + 2 * MAX_RECORD;
/// The per-thread send buffer: [`WRITE_MAX`] encrypted, with room for each
/// record's header, nonce, padding and tag, and a few queued messages.
pub const OUT_CAP: usize = WRITE_MAX + 5 * 256 + 1024;
/// The most a connection keeps of received bytes: a handshake message of
/// up to 64 KiB in fragments (rustls refuses larger ones) and a partial
/// record after it.
const MAX_KEPT: usize = 0x10000 + 4 * 1024 + MAX_RECORD;

thread_local! {
    /// Records are read and decrypted here. Never held across an await.
    static IN_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; IN_CAP].into_boxed_slice());
    /// Records are encrypted here and written from here.
    static OUT_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; OUT_CAP].into_boxed_slice());
    /// The server name of the last ClientHello resolved on this thread
    /// (see [`NotesServerName`]); `Some(None)`: a ClientHello without one.
    static NOTED_NAME: RefCell<Option<Option<Box<str>>>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's buffer in `cell`, or with a fresh one if it
/// is in use (it never is on the data plane: a stream's reads and writes
/// do not nest; this keeps a future caller that nests them correct).
fn with_buffer<R>(
    key: &'static std::thread::LocalKey<RefCell<Box<[u8]>>>,
    cap: usize,
    f: impl FnOnce(&mut [u8]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut vec![0; cap]),
    })
}

/// A certificate resolver that notes the server name each ClientHello asks
/// for, for the [`Session`] processing it on this thread (rustls's
/// unbuffered server connection does not expose it).
#[derive(Debug)]
pub struct NotesServerName<R>(pub R);

impl<R: ResolvesServerCert> ResolvesServerCert for NotesServerName<R> {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(Box::from);
        NOTED_NAME.with(|n| *n.borrow_mut() = Some(name));
        self.0.resolve(hello)
    }

    fn only_raw_public_keys(&self) -> bool {
        self.0.only_raw_public_keys()
    }
}

/// Why a TLS connection failed, beyond what rustls says.
#[derive(Debug, thiserror::Error)]
pub enum TlsStreamError {
    #[error(transparent)]
    Tls(#[from] rustls::Error),
    #[error("a TLS handshake message of more than {MAX_KEPT} bytes in fragments")]
    TooLarge,
    #[error("the TLS connection failed before")]
    Failed,
    #[error("the TLS handshake is not complete")]
    Handshaking,
    #[error("the TLS connection is closed for writing")]
    Closed,
    #[error("the peer closed the connection during the TLS handshake")]
    HandshakeEof,
    #[error("early data is not accepted")]
    EarlyData,
    #[error("rustls reached a state this stream does not know")]
    UnknownState,
}

impl From<TlsStreamError> for io::Error {
    fn from(e: TlsStreamError) -> io::Error {
        let kind = match e {
            TlsStreamError::Closed => io::ErrorKind::BrokenPipe,
            TlsStreamError::Handshaking => io::ErrorKind::NotConnected,
            TlsStreamError::HandshakeEof => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// Bytes kept for later, consumed from the front; the allocation is freed
/// once all are consumed, so an idle connection's spill costs nothing.
#[derive(Default)]
struct Spill {
    buf: Vec<u8>,
    start: usize,
}

impl Spill {
    fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.is_empty() {
            *self = Spill::default();
        }
    }

    /// Appends what `f` writes into a buffer as large as it asks for.
    fn append_with<E>(
        &mut self,
        mut f: impl FnMut(&mut [u8]) -> Result<usize, E>,
        required: impl Fn(&E) -> Option<usize>,
    ) -> Result<(), E> {
        let at = self.buf.len();
        let mut room = 0;
        loop {
            self.buf.resize(at + room, 0);
            match f(&mut self.buf[at..]) {
                Ok(n) => {
                    self.buf.truncate(at + n);
                    return Ok(());
                }
                Err(e) => match required(&e) {
                    Some(need) if need > room => room = need,
                    _ => {
                        self.buf.truncate(at);
                        if self.is_empty() {
                            *self = Spill::default();
                        }
                        return Err(e);
                    }
                },
            }
        }
    }
}

fn encode_needs(e: &EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

fn encrypt_needs(e: &EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

fn encrypt_error(e: EncryptError) -> rustls::Error {
    rustls::Error::General(e.to_string())
}

/// Whether the peer may still send application data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadSide {
    Open,
    /// `close_notify` received: a clean end.
    Closed,
    /// The socket ended without `close_notify`.
    Eof,
}

/// Writes application data (or `close_notify`) once the connection can:
/// into the caller's buffer, or appended to the spill. Returns the bytes
/// written into the caller's buffer.
type WriteFn<'a> =
    dyn FnMut(&mut WriteTraffic<'_, ServerConnectionData>, &mut Spill) -> Result<usize, rustls::Error> + 'a;

/// What one step of the record processing asked for.
enum Step {
    /// Call rustls again.
    Again,
    /// Nothing more to do with what was received.
    Idle,
    /// The write was done.
    Wrote(usize),
    PeerClosed,
    Failed(TlsStreamError),
}

/// A server-side TLS connection without I/O: received bytes in, plaintext
/// and records to send out, every buffer the caller's or freed when empty.
pub struct Session {
    conn: UnbufferedServerConnection,
    /// Received bytes not processed yet: a partial record, or fragments of
    /// a handshake message, which rustls points into by offset (so they
    /// are kept as they are, from their start).
    incoming: Vec<u8>,
    /// Decrypted, not yet taken by the reader.
    plaintext: Spill,
    /// Encrypted, not yet taken by the socket.
    outgoing: Spill,
    server_name: Option<Box<str>>,
    read: ReadSide,
    /// `close_notify` queued: no more writes.
    write_closed: bool,
    failed: bool,
}

impl Session {
    pub fn new(config: Arc<ServerConfig>) -> Result<Session, TlsStreamError> {
        Ok(Session {
            conn: UnbufferedServerConnection::new(config)?,
            incoming: Vec::new(),
            plaintext: Spill::default(),
            outgoing: Spill::default(),
            server_name: None,
            read: ReadSide::Open,
            write_closed: false,
            failed: false,
        })
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The protocol ALPN agreed on.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// The server name the client asked for (SNI), when the config's
    /// resolver is wrapped in [`NotesServerName`].
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// Heap bytes held for this connection's data (not rustls's state):
    /// zero while idle.
    pub fn buffered(&self) -> usize {
        self.incoming.capacity() + self.plaintext.buf.capacity() + self.outgoing.buf.capacity()
    }

    /// Records waiting for the socket.
    pub fn outgoing(&self) -> &[u8] {
        self.outgoing.bytes()
    }

    pub fn sent(&mut self, n: usize) {
        self.outgoing.consume(n);
    }

    /// Whether the peer has ended its side, cleanly or not.
    pub fn read_closed(&self) -> bool {
        self.read != ReadSide::Open
    }

    /// Moves plaintext received earlier into `dst`.
    pub fn take_plaintext(&mut self, dst: &mut ReadBuf<'_>) {
        let n = self.plaintext.bytes().len().min(dst.remaining());
        dst.put_slice(&self.plaintext.bytes()[..n]);
        self.plaintext.consume(n);
    }

    pub fn has_plaintext(&self) -> bool {
        !self.plaintext.is_empty()
    }

    /// Processes `data`, the bytes kept from before (`self.kept()`)
    /// followed by bytes just received, in place: plaintext into `dst`
    /// and, past its room, into the connection's spill; handshake messages
    /// and alerts into [`Session::outgoing`]. Then keeps what is left of
    /// `data` (a partial record) for next time.
    pub fn receive(&mut self, data: &mut [u8], dst: &mut ReadBuf<'_>) -> Result<(), TlsStreamError> {
        let used = match self.run(data, dst, None) {
            Ok((used, _)) => used,
            Err(e) => {
                self.incoming = Vec::new();
                return Err(e);
            }
        };
        let rest = &data[used.min(data.len())..];
        if rest.len() > MAX_KEPT {
            self.failed = true;
            return Err(TlsStreamError::TooLarge);
        }
        // Exactly as large as what is kept: freed by the next read.
        self.incoming = rest.to_vec();
        Ok(())
    }

    /// The bytes kept from the last receive, to be put before the next.
    pub fn kept(&self) -> &[u8] {
        &self.incoming
    }

    /// Records the end of the socket's input.
    pub fn received_eof(&mut self) -> Result<(), TlsStreamError> {
        if self.read == ReadSide::Open {
            self.read = ReadSide::Eof;
            self.incoming = Vec::new();
            if self.conn.is_handshaking() {
                return Err(TlsStreamError::HandshakeEof);
            }
            // Many clients close without close_notify; HTTP's own framing
            // tells a cut-off message from a complete one.
            debug!("TLS peer closed the connection without close_notify");
        }
        Ok(())
    }

    /// Encrypts `plain` into `out` (or, behind records already waiting,
    /// into [`Session::outgoing`]); returns the bytes written into `out`.
    pub fn encrypt(&mut self, plain: &[u8], out: &mut [u8]) -> Result<usize, TlsStreamError> {
        if self.write_closed {
            return Err(TlsStreamError::Closed);
        }
        self.write(&mut |traffic, outgoing| {
            if outgoing.is_empty() {
                match traffic.encrypt(plain, out) {
                    Ok(n) => return Ok(n),
                    Err(EncryptError::InsufficientSize(_)) => {}
                    Err(e) => return Err(encrypt_error(e)),
                }
            }
            outgoing
                .append_with(|buf| traffic.encrypt(plain, buf), encrypt_needs)
                .map_err(encrypt_error)?;
            Ok(0)
        })
    }

    /// Queues `close_notify` in [`Session::outgoing`], once; nothing before
    /// the handshake is complete or after a failure.
    pub fn close_notify(&mut self) -> Result<(), TlsStreamError> {
        if self.write_closed || self.failed || self.conn.is_handshaking() {
            self.write_closed = true;
            return Ok(());
        }
        self.write_closed = true;
        self.write(&mut |traffic, outgoing| {
            outgoing
                .append_with(|buf| traffic.queue_close_notify(buf), encrypt_needs)
                .map_err(encrypt_error)?;
            Ok(0)
        })
        .map(|_| ())
    }

    /// Runs `f` when rustls is ready for application data.
    fn write(&mut self, f: &mut WriteFn<'_>) -> Result<usize, TlsStreamError> {
        // Kept bytes are passed as they are: rustls may point into them.
        let mut incoming = std::mem::take(&mut self.incoming);
        let mut none = ReadBuf::new(&mut []);
        let result = self.run(&mut incoming, &mut none, Some(f));
        if let Ok((used, _)) = result {
            incoming.drain(..used.min(incoming.len()));
            if !incoming.is_empty() {
                self.incoming = incoming;
            }
        }
        match result? {
            (_, Some(n)) => Ok(n),
            (_, None) => Err(TlsStreamError::Handshaking),
        }
    }

    /// Drives rustls over `data` until it has nothing more to do with it
    /// (or, with `write`, until it has written). Returns the bytes of
    /// `data` used up, and what `write` wrote.
    fn run(
        &mut self,
        data: &mut [u8],
        dst: &mut ReadBuf<'_>,
        mut write: Option<&mut WriteFn<'_>>,
    ) -> Result<(usize, Option<usize>), TlsStreamError> {
        if self.failed {
            return Err(TlsStreamError::Failed);
        }
        let noting = self.conn.is_handshaking();
        if noting {
            NOTED_NAME.with(|n| n.borrow_mut().take());
        }
        let mut used = 0;
        let result = loop {
            let status = self.conn.process_tls_records(&mut data[used..]);
            let mut discard = status.discard;
            let step = match status.state {
                Err(e) => Step::Failed(e.into()),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    let mut step = Step::Again;
                    while let Some(record) = traffic.next_record() {
                        match record {
                            Ok(record) => {
                                discard += record.discard;
                                let n = record.payload.len().min(dst.remaining());
                                dst.put_slice(&record.payload[..n]);
                                self.plaintext.extend(&record.payload[n..]);
                            }
                            Err(e) => {
                                step = Step::Failed(e.into());
                                break;
                            }
                        }
                    }
                    step
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    match self.outgoing.append_with(|buf| encode.encode(buf), encode_needs) {
                        Ok(()) => Step::Again,
                        Err(e) => Step::Failed(rustls::Error::General(e.to_string()).into()),
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    // Sent by the caller from `outgoing`, in order.
                    transmit.done();
                    Step::Again
                }
                Ok(ConnectionState::BlockedHandshake) => Step::Idle,
                Ok(ConnectionState::WriteTraffic(mut traffic)) => match write.as_mut() {
                    Some(f) => match f(&mut traffic, &mut self.outgoing) {
                        Ok(n) => Step::Wrote(n),
                        Err(e) => Step::Failed(e.into()),
                    },
                    None => Step::Idle,
                },
                Ok(ConnectionState::PeerClosed) => Step::PeerClosed,
                Ok(ConnectionState::Closed) => {
                    self.read = ReadSide::Closed;
                    match write {
                        Some(_) => Step::Failed(TlsStreamError::Closed),
                        None => Step::Idle,
                    }
                }
                Ok(ConnectionState::ReadEarlyData(_)) => Step::Failed(TlsStreamError::EarlyData),
                Ok(_) => Step::Failed(TlsStreamError::UnknownState),
            };
            used += discard;
            match step {
                Step::Again => {}
                Step::Idle => break Ok((used, None)),
                Step::Wrote(n) => break Ok((used, Some(n))),
                Step::PeerClosed => {
                    // "Any data received after a closure alert has been
                    // received MUST be ignored" (RFC 8446, 6.1).
                    self.read = ReadSide::Closed;
                    used = data.len();
                }
                Step::Failed(e) => break Err(e),
            }
        };
        if noting {
            if let Some(name) = NOTED_NAME.with(|n| n.borrow_mut().take()) {
                self.server_name = name;
            }
        }
        if result.is_err() {
            let at = used.min(data.len());
            self.fail(&mut data[at..]);
        }
        result
    }

    /// After an error: the alert rustls queued for the peer, if any, goes
    /// to `outgoing` (sent on a best-effort basis), and every later call
    /// fails.
    fn fail(&mut self, rest: &mut [u8]) {
        self.failed = true;
        self.plaintext = Spill::default();
        // While records are queued, rustls hands them out before it looks
        // at any input.
        while self.conn.wants_write() {
            match self.conn.process_tls_records(rest).state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    if self
                        .outgoing
                        .append_with(|buf| encode.encode(buf), encode_needs)
                        .is_err()
                    {
                        break;
                    }
                }
                _ => break,
            }
        }
    }
}

/// A server-side TLS stream over `IO` that holds no buffer while idle (see
/// the module's documentation).
///
/// The session (rustls's connection, about 1.2 KiB inline) is boxed: the
/// futures that hold the stream (a connection's task) stay as small as for
/// a plain socket, and moving the stream out of the handshake costs a
/// pointer, not a copy of the state.
pub struct TlsStream<IO> {
    io: IO,
    session: Box<Session>,
}

/// Makes the TLS handshake on `io` as a server with `config`. Bound it
/// with a timeout: it waits for the client as long as the client waits.
pub async fn accept<IO>(io: IO, config: Arc<ServerConfig>) -> io::Result<TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut stream = TlsStream {
        io,
        session: Box::new(Session::new(config)?),
    };
    std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
    Ok(stream)
}

impl<IO> TlsStream<IO> {
    /// The protocol ALPN agreed on.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.session.alpn_protocol()
    }

    /// The server name the client asked for (SNI).
    pub fn server_name(&self) -> Option<&str> {
        self.session.server_name()
    }

    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.session.protocol_version()
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Heap bytes this stream holds for data in flight: zero while idle.
    pub fn buffered(&self) -> usize {
        self.session.buffered()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            // Our flight first: the client answers it.
            ready!(self.poll_send(cx))?;
            if !self.session.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            let mut none = ReadBuf::new(&mut []);
            if ready!(self.poll_receive(cx, &mut none))? == 0 {
                self.session.received_eof()?;
            }
        }
    }

    /// Writes what `outgoing` holds until it is empty or the socket is full.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.session.outgoing().is_empty() {
            match ready!(Pin::new(&mut self.io).poll_write(cx, self.session.outgoing()))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => self.session.sent(n),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Sends what it can of `outgoing` now (alerts, handshake messages),
    /// without waiting; a full socket wakes this task when it has room.
    fn send_some(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.poll_send(cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Ok(()),
        }
    }

    /// Reads once from the socket, after the bytes kept from before, and
    /// processes what came. Returns the bytes read (0: the socket ended).
    fn poll_receive(&mut self, cx: &mut Context<'_>, dst: &mut ReadBuf<'_>) -> Poll<io::Result<usize>> {
        let kept = self.session.kept().len();
        let want = dst.remaining() + MAX_RECORD;
        if kept + MAX_RECORD > IN_CAP {
            return self.poll_receive_large(cx, dst);
        }
        with_buffer(&IN_BUF, IN_CAP, |work| {
            let end = (kept + want).min(work.len());
            let mut rb = ReadBuf::new(&mut work[kept..end]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n > 0 {
                work[..kept].copy_from_slice(self.session.kept());
                let result = self.session.receive(&mut work[..kept + n], dst);
                // Alerts and handshake messages go out even on failure.
                let sent = self.send_some(cx);
                result?;
                sent?;
            }
            Poll::Ready(Ok(n))
        })
    }

    /// As [`TlsStream::poll_receive`], when what is kept (a handshake
    /// message in many fragments) leaves the thread's buffer too little
    /// room: read after it, in the connection's own buffer.
    fn poll_receive_large(&mut self, cx: &mut Context<'_>, dst: &mut ReadBuf<'_>) -> Poll<io::Result<usize>> {
        let mut work = self.session.kept().to_vec();
        let kept = work.len();
        work.resize(kept + MAX_RECORD, 0);
        let mut rb = ReadBuf::new(&mut work[kept..]);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n > 0 {
            let result = self.session.receive(&mut work[..kept + n], dst);
            let sent = self.send_some(cx);
            result?;
            sent?;
        }
        Poll::Ready(Ok(n))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, dst: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Alerts or handshake messages still waiting go out first.
        this.send_some(cx)?;
        let before = dst.filled().len();
        loop {
            if this.session.failed {
                return Poll::Ready(Err(TlsStreamError::Failed.into()));
            }
            if this.session.has_plaintext() {
                this.session.take_plaintext(dst);
                return Poll::Ready(Ok(()));
            }
            if this.session.read_closed() || dst.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if ready!(this.poll_receive(cx, dst))? == 0 {
                this.session.received_eof()?;
                return Poll::Ready(Ok(()));
            }
            if dst.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            // A partial record, or records without application data (a
            // key update, a ticket): read on.
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// Encrypts `plain` (at most [`WRITE_MAX`] bytes, after `outgoing` has
    /// gone) and writes the records; what the socket does not take is kept.
    fn write_plain(&mut self, cx: &mut Context<'_>, plain: &[u8]) -> io::Result<usize> {
        with_buffer(&OUT_BUF, OUT_CAP, |out| {
            let len = self.session.encrypt(plain, out)?;
            let mut sent = 0;
            while sent < len {
                match Pin::new(&mut self.io).poll_write(cx, &out[sent..len]) {
                    Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => sent += n,
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => break,
                }
            }
            // Kept until the socket takes it: the plaintext is accepted.
            self.session.outgoing.extend(&out[sent..len]);
            if len == 0 {
                // Went into `outgoing` behind other records.
                self.send_some(cx)?;
            }
            Ok(plain.len())
        })
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What the socket has not taken yet goes first.
        ready!(this.poll_send(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        Poll::Ready(this.write_plain(cx, &buf[..buf.len().min(WRITE_MAX)]))
    }

    /// Several buffers leave in one record where they fit (HTTP/2 writes a
    /// frame's header and its payload as two): gathered in this thread's
    /// receive buffer, which no write uses, then encrypted as one.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        let (Some(first), Some(_)) = (nonempty.next(), nonempty.next()) else {
            let one = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
            return self.poll_write(cx, one);
        };
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        if first.len() >= WRITE_MAX {
            return Poll::Ready(this.write_plain(cx, &first[..WRITE_MAX]));
        }
        with_buffer(&IN_BUF, IN_CAP, |staging| {
            let mut len = 0;
            for b in bufs {
                let n = b.len().min(WRITE_MAX - len);
                staging[len..len + n].copy_from_slice(&b[..n]);
                len += n;
                if len == WRITE_MAX {
                    break;
                }
            }
            Poll::Ready(this.write_plain(cx, &staging[..len]))
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.session.write_closed {
            this.session.close_notify()?;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "tls_stream_tests.rs"]
mod tests;
