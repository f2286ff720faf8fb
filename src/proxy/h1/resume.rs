//! Resuming an event stream on another endpoint, on the client's behalf.
//!
//! When the upstream of a resumable stream ends abnormally, or its endpoint
//! leaves, the body's shell (the HTTP/1.1 pump or the HTTP/2 body) asks the
//! [`StreamEngine`](crate::proxy::stream_engine::StreamEngine) for a
//! [`ResumePlan`] and hands it here: the same request, with `Last-Event-ID`
//! set to the last whole event the client received, goes to another ready
//! endpoint through the one upstream exchange ([`send`]). Only a
//! `200 text/event-stream` answer carries on; its body continues the
//! client's open one. Any other answer ends the stream, as the failure would
//! have without resume; connect failures and timeouts try again, within
//! the plan's attempts and budget.
//!
//! The rule stays the one the request started with (its settings, its
//! backends and their weights), but the endpoints are the ones ready now,
//! from the table in use: after a rollout, the old table names only pods
//! that are gone.

use super::body_shell::Input;
use super::io::Deadline;
use super::pool;
use super::resume_request::ResumeRequest;
use super::upstream::{send, with_answer_head, ClientSide, Failure, Limits, Upload};
use crate::http1::chunked::ChunkedDecoder;
use crate::http1::head::Framing;
use crate::metrics::UpstreamError;
use crate::proxy::access::Observer;
use crate::proxy::stream_engine::{is_event_stream_type, Outcome, ResumePlan, ResumeReason, StreamEngine};
use crate::proxy::EndpointLoad;
use http::StatusCode;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::futures::OwnedNotified;
use tokio::time::Instant;
use tracing::{debug, warn};

/// The first pause between two attempts; each next one doubles.
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
/// How often a resume with no endpoint to go to looks again (a rollout's
/// new pod may turn ready within the budget).
const ENDPOINT_POLL: Duration = Duration::from_millis(50);

/// A new upstream for the stream: its answer's body continues the client's.
pub(in crate::proxy) struct NewUpstream {
    pub stream: TcpStream,
    pub input: Input,
    /// Body bytes that came with the answer's head.
    pub leftover: Vec<u8>,
    pub keep_alive: bool,
    pub endpoint: SocketAddr,
    pub load: EndpointLoad,
    pub attempts: u32,
}

/// Why a resume gave up: the metric's `outcome`, and what it spent.
pub(in crate::proxy) struct ResumeFailed {
    pub outcome: &'static str,
    pub attempts: u32,
}

type Attempts = Pin<Box<dyn Future<Output = Result<NewUpstream, ResumeFailed>> + Send>>;

/// A resumable body's resume: idle (no allocation but the shared request)
/// until a plan starts it.
pub(in crate::proxy) struct Resumer {
    request: Arc<ResumeRequest>,
    running: Option<(ResumeReason, Attempts)>,
    /// Wakes the stream when endpoints change (see `moves.rs`).
    moves: Option<Pin<Box<OwnedNotified>>>,
    /// The endpoint this stream is to move off for a rebalance, until the
    /// move begins (counted in the [`MoveSignal`]).
    rebalancing: Option<SocketAddr>,
}

impl Drop for Resumer {
    fn drop(&mut self) {
        if let Some(e) = self.rebalancing.take() {
            self.request.moves.rebalance_done(e);
        }
    }
}

impl Resumer {
    pub(in crate::proxy) fn new(request: Arc<ResumeRequest>) -> Self {
        Resumer {
            request,
            running: None,
            moves: None,
            rebalancing: None,
        }
    }

    /// Whether the stream on `endpoint` should move since endpoints
    /// changed, and when (to be told to the engine).
    pub(in crate::proxy) fn poll_moved(
        &mut self,
        cx: &mut Context<'_>,
        endpoint: SocketAddr,
    ) -> Option<(Instant, ResumeReason)> {
        let mut fired = false;
        loop {
            let wait = self.moves.get_or_insert_with(|| {
                let mut wait = Box::pin(self.request.moves.changed());
                wait.as_mut().enable();
                wait
            });
            if wait.as_mut().poll(cx).is_pending() {
                break;
            }
            // Fired: wait again for the next change, from now on.
            self.moves = None;
            fired = true;
        }
        if !fired || self.running() {
            return None;
        }
        let plan = self.request.plan_move(endpoint, self.rebalancing.is_some());
        if let Some((_, ResumeReason::Rebalance)) = plan {
            self.rebalancing = Some(endpoint);
            self.request.moves.rebalance_planned(endpoint);
        }
        plan
    }

    /// Starts resuming after the last whole event `last_id`, away from `left`.
    fn start(&mut self, plan: ResumePlan, last_id: &[u8], left: SocketAddr) {
        if let Some(e) = self.rebalancing.take() {
            self.request.moves.rebalance_done(e);
        }
        debug!(route = %self.request.target.route, reason = plan.reason.as_str(), %left, "resuming event stream");
        let head = self.request.head_with(last_id);
        let attempts = Box::pin(attempt(self.request.clone(), plan, head, left));
        self.running = Some((plan.reason, attempts));
    }

    pub(in crate::proxy) fn running(&self) -> bool {
        self.running.is_some()
    }

    /// The resume's result, counted in `ssegate_stream_resumes_total`.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<NewUpstream, ResumeFailed>> {
        let Some((reason, attempts)) = &mut self.running else {
            return Poll::Pending;
        };
        let result = std::task::ready!(attempts.as_mut().poll(cx));
        let outcome = match &result {
            Ok(_) => "resumed",
            Err(f) => f.outcome,
        };
        self.request.metrics.resume(reason.as_str(), outcome);
        self.running = None;
        Poll::Ready(result)
    }

    /// The upstream failed: starts a resume if the engine allows one (the
    /// shell then drops its upstream); false: the body is to be cut.
    pub(in crate::proxy) fn after_failure(
        &mut self,
        engine: &mut StreamEngine,
        observer: Option<&Observer>,
        left: SocketAddr,
    ) -> bool {
        match engine.begin_resume(ResumeReason::UpstreamError, Instant::now()) {
            Some(Ok(plan)) => {
                self.begin(plan, engine, observer, left);
                true
            }
            Some(Err(why)) => {
                self.refused(ResumeReason::UpstreamError, why);
                false
            }
            None => false,
        }
    }

    /// Starts the resume the engine planned, away from `left`; a failure
    /// behind it counts in `ssegate_upstream_errors_total`, a move does not.
    pub(in crate::proxy) fn begin(
        &mut self,
        plan: ResumePlan,
        engine: &StreamEngine,
        observer: Option<&Observer>,
        left: SocketAddr,
    ) {
        let kind = match plan.reason {
            ResumeReason::UpstreamError => Some(UpstreamError::Failed),
            ResumeReason::IdleTimeout => Some(UpstreamError::IdleTimeout),
            ResumeReason::EndpointLeaving | ResumeReason::Rebalance => None,
        };
        if let (Some(o), Some(kind)) = (observer, kind) {
            o.metrics.upstream_error(kind);
        }
        if let Some(id) = engine.last_event_id() {
            self.start(plan, id, left);
        }
    }

    /// The resume's end, told to the engine and the access record: the new
    /// upstream to carry on from, or how the body is cut.
    pub(in crate::proxy) fn poll_into(
        &mut self,
        cx: &mut Context<'_>,
        engine: &mut StreamEngine,
        observer: Option<&mut Observer>,
    ) -> Poll<Result<NewUpstream, Outcome>> {
        Poll::Ready(match std::task::ready!(self.poll(cx)) {
            Ok(new) => {
                engine.resumed(new.attempts, Instant::now());
                if let Some(o) = observer {
                    o.resumed(new.endpoint);
                }
                Ok(new)
            }
            Err(failed) => Err(engine.resume_failed(failed.attempts)),
        })
    }

    /// Counts a resume the engine refused (`no_id`, `inside_large_event`,
    /// `exhausted`).
    fn refused(&self, reason: ResumeReason, why: &'static str) {
        self.request.metrics.resume(reason.as_str(), why);
    }
}

/// A request without a body: nothing for the exchange to take.
struct NoBody;

impl ClientSide for NoBody {
    fn poll_body(&mut self, _: &mut Context<'_>, _: &mut Upload, _: &mut Vec<u8>) -> Poll<Result<(), Failure>> {
        Poll::Ready(Ok(()))
    }

    async fn go_ahead(&mut self, _: Duration) -> bool {
        true
    }
}

/// Tries endpoints until one answers `200 text/event-stream`, within the plan.
async fn attempt(
    req: Arc<ResumeRequest>,
    plan: ResumePlan,
    head: Vec<u8>,
    left: SocketAddr,
) -> Result<NewUpstream, ResumeFailed> {
    let settings = req.target.settings.timeouts;
    let mut tried = vec![left];
    let mut spent = 0;
    let mut backoff = FIRST_BACKOFF;
    let fail = |outcome, attempts| Err(ResumeFailed { outcome, attempts });
    while spent < plan.attempts {
        let now = Instant::now();
        if now >= plan.deadline {
            return fail("exhausted", spent);
        }
        let Some(endpoint) = req.choose(&tried, plan.reason == ResumeReason::Rebalance) else {
            tokio::time::sleep_until((now + ENDPOINT_POLL).min(plan.deadline)).await;
            if Instant::now() >= plan.deadline {
                return fail("no_endpoint", spent);
            }
            continue;
        };
        spent += 1;
        let left_time = plan.deadline - now;
        let load = req.endpoints.track(endpoint);
        // A pooled connection first; one the upstream closed meanwhile is
        // not an attempt: a new connection is.
        let mut pooled = pool::checkout(endpoint);
        let sent = loop {
            let reused = pooled.is_some();
            let stream = match pooled.take() {
                Some(s) => s,
                None => match pool::connect(endpoint, settings.connect.min(left_time)).await {
                    Ok(s) => s,
                    Err(e) => break Err(Some(e)),
                },
            };
            let limits = Limits {
                response: settings
                    .response_headers
                    .min(plan.deadline.saturating_duration_since(Instant::now())),
                body: Duration::ZERO,
                head_request: false,
            };
            let mut upload = Upload::new(Framing::Empty);
            match send(
                stream,
                &head,
                &mut upload,
                &mut NoBody,
                limits,
                &mut Deadline::default(),
            )
            .await
            {
                Ok(a) => break Ok(a),
                Err(Failure::Stale) if reused => continue,
                Err(_) => break Err(None),
            }
        };
        let answer = match sent {
            Ok(a) => a,
            Err(failed) => {
                match failed {
                    Some(e) => {
                        req.metrics.upstream_error(UpstreamError::Connect);
                        req.endpoints.eject(endpoint);
                        warn!(route = %req.target.route, %endpoint, error = %e, "resume: connect failed; endpoint ejected for a while");
                    }
                    None => {
                        req.metrics.upstream_error(UpstreamError::Failed);
                        warn!(route = %req.target.route, %endpoint, "resume: no answer");
                    }
                }
                // Elsewhere next, after a pause that doubles each time.
                tried.push(endpoint);
                tokio::time::sleep_until((Instant::now() + backoff).min(plan.deadline)).await;
                backoff *= 2;
                continue;
            }
        };
        let event_stream = with_answer_head(&answer.raw[..answer.head_len], &req.target, |fields, _| {
            is_event_stream_type(
                fields
                    .iter()
                    .find(|f| f.name.eq_ignore_ascii_case("content-type"))
                    .map(|f| f.value),
            )
        });
        let input = match answer.body {
            Framing::Chunked => Some(Input::Chunked(ChunkedDecoder::new())),
            Framing::UntilClose => Some(Input::UntilClose),
            Framing::Length(n) if n > 0 => Some(Input::Length(n)),
            _ => None,
        };
        let (Some(input), true, StatusCode::OK) = (input, event_stream, answer.status) else {
            // The upstream answered, and not with the stream: resuming
            // elsewhere would only hide what it said.
            warn!(route = %req.target.route, %endpoint, status = answer.status.as_u16(), event_stream, "resume: the answer is not an event stream; the stream ends");
            return fail("bad_answer", spent);
        };
        let answer = *answer;
        let mut leftover = answer.raw;
        leftover.drain(..answer.head_len);
        if leftover.is_empty() {
            leftover = Vec::new();
        }
        debug!(route = %req.target.route, %endpoint, attempts = spent, "resumed event stream");
        return Ok(NewUpstream {
            stream: answer.stream,
            input,
            leftover,
            keep_alive: answer.keep_alive,
            endpoint,
            load,
            attempts: spent,
        });
    }
    fail("exhausted", spent)
}
