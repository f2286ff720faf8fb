//! What both body shells (the HTTP/1.1 pump and HTTP/2's body) do the
//! same way: read the upstream (or the bytes that came with its head) and
//! undo its framing in place, and keep the engine's one timer.

use super::{HEADROOM, READ_MAX};
use crate::http1::chunked::ChunkedDecoder;
use crate::proxy::stream_engine::{Decision, StreamEngine};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// How the upstream delimits the body.
pub(in crate::proxy) enum Input {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// What one read of the upstream brought, its framing undone in place.
pub(in crate::proxy) enum Unframed {
    /// `len` payload bytes at `buf[HEADROOM..]`; `done`: the body is
    /// complete; `out_of_step`: bytes came past the body's end, so the
    /// connection cannot serve another request.
    Data { len: usize, done: bool, out_of_step: bool },
    /// The upstream closed: the end of a close-delimited body.
    Closed,
    /// The body is broken (cut short, bad chunked framing, a read error).
    Broken,
    /// Nothing to read now.
    Waiting,
}

/// Reads the bytes that came with the answer's head first, else the
/// upstream, into `buf[HEADROOM..]`, and undoes the upstream's framing
/// there. Both shells (HTTP/1.1's pump, HTTP/2's body) read this way.
pub(in crate::proxy) fn read_unframed(
    cx: &mut Context<'_>,
    buf: &mut [u8],
    pending_in: &mut Vec<u8>,
    upstream: Option<&mut TcpStream>,
    input: &mut Input,
) -> Unframed {
    let n = if !pending_in.is_empty() {
        let n = pending_in.len().min(READ_MAX);
        buf[HEADROOM..HEADROOM + n].copy_from_slice(&pending_in[..n]);
        pending_in.drain(..n);
        if pending_in.is_empty() {
            *pending_in = Vec::new();
        }
        n
    } else {
        let Some(upstream) = upstream else {
            return Unframed::Waiting;
        };
        let mut rb = ReadBuf::new(&mut buf[HEADROOM..HEADROOM + READ_MAX]);
        match Pin::new(upstream).poll_read(cx, &mut rb) {
            Poll::Pending => return Unframed::Waiting,
            Poll::Ready(Err(_)) => return Unframed::Broken,
            Poll::Ready(Ok(())) => rb.filled().len(),
        }
    };
    if n == 0 {
        // A close ends a close-delimited body, and cuts any other short.
        return match input {
            Input::UntilClose => Unframed::Closed,
            _ => Unframed::Broken,
        };
    }
    match input {
        Input::Length(rest) => {
            let take = (n as u64).min(*rest) as usize;
            *rest -= take as u64;
            Unframed::Data {
                len: take,
                done: *rest == 0,
                out_of_step: take < n,
            }
        }
        Input::Chunked(decoder) => match decoder.decode_in_place(&mut buf[HEADROOM..HEADROOM + n], n) {
            Ok(p) => Unframed::Data {
                len: p.payload,
                done: p.done,
                out_of_step: p.consumed < n,
            },
            Err(e) => {
                tracing::debug!(error = %e, "malformed chunked body from upstream");
                Unframed::Broken
            }
        },
        Input::UntilClose => Unframed::Data {
            len: n,
            done: false,
            out_of_step: false,
        },
    }
}

/// Asks the engine what is due, and arms the shell's one timer (created
/// on first need, moved only when it fired or a nearer deadline appeared)
/// for when it next may be.
pub(in crate::proxy) fn decide_on_timer(
    engine: &mut StreamEngine,
    sleep: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
) -> Decision {
    loop {
        let now = Instant::now();
        let decision = engine.decide(now);
        if decision != Decision::Wait {
            return decision;
        }
        let Some(next) = engine.next_wake(now) else {
            return Decision::Wait;
        };
        let sleep = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
        let armed = sleep.deadline();
        if next < armed || armed <= now {
            sleep.as_mut().reset(next);
        }
        if sleep.as_mut().poll(cx).is_pending() {
            return Decision::Wait;
        }
    }
}
