//! Writing to a client with a time limit, and the one timer of a
//! connection: what the connection, the exchange and a tunnel share.

use crate::http1::head::Framing;
use crate::http1::write;
use crate::proxy::ProxyBody;
use http::Response;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

/// A connection's one timer for its keep-alive and header deadlines,
/// created when first needed and moved only when it fires early: waiting
/// for the next request costs no timer operation per request.
#[derive(Default)]
pub(in crate::proxy) struct Deadline {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    pub(in crate::proxy) fn poll(&mut self, cx: &mut Context<'_>, at: Instant) -> Poll<()> {
        if Instant::now() >= at {
            return Poll::Ready(());
        }
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if sleep.deadline() > at {
            sleep.as_mut().reset(at);
        }
        while sleep.as_mut().poll(cx).is_ready() {
            if Instant::now() >= at {
                return Poll::Ready(());
            }
            // Fired for an earlier deadline: on to this one.
            sleep.as_mut().reset(at);
        }
        Poll::Pending
    }
}

/// Writes a reply of ssegate's own. Returns whether it was written.
pub(super) async fn write_local<S: AsyncWrite + Unpin>(
    io: &mut S,
    resp: Response<ProxyBody>,
    head_request: bool,
    close: bool,
    send_timeout: Duration,
) -> bool {
    let (parts, body) = resp.into_parts();
    let text = match body {
        ProxyBody::Local(text) => text.unwrap_or_default(),
        ProxyBody::Upstream(_) => bytes::Bytes::new(),
    };
    let mut out = Vec::with_capacity(256 + text.len());
    if head_request {
        write::response_head(
            &mut out,
            parts.status,
            &parts.headers,
            Framing::Empty,
            Some(text.len() as u64),
            close,
        );
    } else {
        write::response_head(
            &mut out,
            parts.status,
            &parts.headers,
            Framing::Length(text.len() as u64),
            None,
            close,
        );
        out.extend_from_slice(&text);
    }
    write_all_timed(io, &out, send_timeout).await
}

/// Writes all of `bytes`, giving up when the client takes none of them
/// for `limit`.
pub(super) async fn write_all_timed<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8], limit: Duration) -> bool {
    let mut rest = bytes;
    while !rest.is_empty() {
        match tokio::time::timeout(limit, io.write(rest)).await {
            Ok(Ok(n)) if n > 0 => rest = &rest[n..],
            _ => return false,
        }
    }
    matches!(tokio::time::timeout(limit, io.flush()).await, Ok(Ok(())))
}
