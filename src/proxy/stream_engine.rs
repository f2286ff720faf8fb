//! What happens to an answer's body between the upstream and the client,
//! for every protocol, with no I/O in it: upstream bytes and the time go
//! in, decisions come out.
//!
//! The HTTP/1.1 pump and the HTTP/2 body are shells around one
//! [`StreamEngine`]: they read the upstream, undo its framing, hand the
//! payload here, and do what they are told: pass the payload on, send a
//! block of held bytes first or after it (coalescing), send a heartbeat,
//! end the body at an event boundary, or cut it. The policies (which body
//! is an event stream, when heartbeats may go out, when the maximum
//! duration and a drain end a stream, what each timeout is counted as)
//! are decided here once, so the protocols cannot disagree.
//!
//! Time is a parameter: every method takes `now`, and
//! [`StreamEngine::next_wake`] says when the shell's one timer should fire
//! next. The tests drive it with made-up instants.

use super::event_ids::EventIds;
use super::headers::X_ACCEL_BUFFERING;
use super::sse::EventBoundary;
use super::stream_clock::{StreamClock, StreamDue};
use crate::api::{ProxyBuffering, ResumeSettings};
use crate::metrics::UpstreamError;
use crate::model::ResolvedRule;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::HeaderMap;
use std::time::Duration;
use tokio::time::Instant;

/// The comment line ssegate sends as a heartbeat.
pub(super) const HEARTBEAT: &[u8] = b":\n\n";

/// How an upstream body goes to the client, decided once per response from
/// the rule and the upstream's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// Each read passes on as it comes.
    Stream,
    /// A `text/event-stream`, streamed: heartbeats, a maximum duration and
    /// a drain end it at an event boundary.
    EventStream(SseLimits),
    /// Gathered into blocks of up to `capacity` bytes (`proxyBuffering:
    /// Enabled`, or `Auto` for what is not an event stream). A coalesced
    /// event stream is not live (no heartbeats, no maximum duration), but
    /// its events are counted and a drain ends it at a boundary, after
    /// what it holds.
    Coalesce { capacity: usize, event_stream: bool },
}

impl BodyMode {
    pub fn is_event_stream(self) -> bool {
        matches!(
            self,
            BodyMode::EventStream(_) | BodyMode::Coalesce { event_stream: true, .. }
        )
    }
}

/// Lifecycle settings for a streamed `text/event-stream` response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SseLimits {
    pub heartbeat: Option<Duration>,
    pub max_duration: Option<Duration>,
}

/// Everything the engine is told once, when the answer's head is in.
#[derive(Debug, Clone, Copy)]
pub(super) struct EngineSettings {
    pub mode: BodyMode,
    /// Whether the client's framing lets ssegate end the body early and
    /// add bytes to it: chunked or close-delimited HTTP/1.1, HTTP/2
    /// without a `content-length`. A body whose length was promised to the
    /// client gets no heartbeats and is never ended at a boundary (the
    /// client would see it cut short); it is still cut by the timeouts.
    pub open_ended: bool,
    /// The Route's idle timeout: the longest silence of the upstream.
    pub idle: Option<Duration>,
    /// When the response is cut whatever it is doing (an HTTPRoute's
    /// request timeout), counted from the request's arrival.
    pub deadline: Option<Instant>,
    /// The longest a client may take nothing while bytes wait for it.
    pub send_timeout: Duration,
    /// The request may be resumed (a GET on a rule with `sse.resume`);
    /// it is only for a streamed, open-ended event stream.
    pub resume: Option<ResumeSettings>,
}

/// Longest part of one event ssegate holds back while its blank line has
/// not come (with resume on, only whole events go out). A bigger event is
/// passed on as it comes, and a failure inside it is not resumed.
pub const MAX_HELD_EVENT: usize = 64 * 1024;

/// Why a stream moves to another endpoint: the metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeReason {
    /// The upstream failed: a reset, a close mid-body, bad framing.
    UpstreamError,
    /// The upstream was silent for the idle timeout (`onIdleTimeout`).
    IdleTimeout,
    /// The endpoint turned terminating or left its EndpointSlice.
    EndpointLeaving,
    /// Streams are evened out over endpoints added since (`sse.rebalance`).
    Rebalance,
}

impl ResumeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResumeReason::UpstreamError => "upstream_error",
            ResumeReason::IdleTimeout => "idle_timeout",
            ResumeReason::EndpointLeaving => "endpoint_leaving",
            ResumeReason::Rebalance => "rebalance",
        }
    }
}

/// What a resume may spend: the shell tries at most `attempts` upstream
/// requests, none started after `deadline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ResumePlan {
    pub reason: ResumeReason,
    pub attempts: u32,
    pub deadline: Instant,
}

/// The resume state of a resumable stream (boxed: a stream without resume
/// pays one pointer).
#[derive(Debug)]
struct Resume {
    policy: ResumeSettings,
    ids: EventIds,
    /// The start of an event whose blank line has not come yet.
    held: Vec<u8>,
    /// An event bigger than [`MAX_HELD_EVENT`] is passing: the client has
    /// part of it, so a failure now cannot be resumed.
    torn: bool,
    /// Upstream requests spent since the stream last carried an event.
    attempts: u32,
    /// When the upstream ended, while no event has come since: the budget
    /// and the gap count from here.
    since: Option<Instant>,
    /// A resume is under way: the shell has no upstream.
    resuming: bool,
    /// The stream moves at its first event boundary from then on.
    leave: Option<(Instant, ResumeReason)>,
}

/// How a body ended. Its name is the access log's `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream's body ended and all of it went out.
    Complete,
    /// Ended by ssegate at an event boundary: the maximum duration passed.
    MaxDuration,
    /// Ended by ssegate at an event boundary: ssegate is draining.
    Drain,
    /// Cut: the upstream sent nothing for the idle timeout.
    IdleTimeout,
    /// Cut: the request's deadline (an HTTPRoute's `timeouts.request`) passed.
    RequestTimeout,
    /// Cut: the client took nothing for the send timeout.
    SendTimeout,
    /// Cut: the upstream failed (a reset, a close mid-body, bad framing).
    UpstreamError,
    /// The client went away first.
    ClientGone,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::MaxDuration => "max_duration",
            Outcome::Drain => "drain",
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::RequestTimeout => "request_timeout",
            Outcome::SendTimeout => "send_timeout",
            Outcome::UpstreamError => "upstream_error",
            Outcome::ClientGone => "client_gone",
        }
    }

    /// The client's body was framed to its end: a client can tell it from
    /// a cut, and its connection may serve another request.
    pub fn is_clean(self) -> bool {
        matches!(self, Outcome::Complete | Outcome::MaxDuration | Outcome::Drain)
    }

    /// What `ssegate_upstream_errors_total` counts this as, if anything.
    pub fn upstream_error(self) -> Option<UpstreamError> {
        match self {
            Outcome::IdleTimeout => Some(UpstreamError::IdleTimeout),
            Outcome::RequestTimeout => Some(UpstreamError::RequestTimeout),
            Outcome::UpstreamError => Some(UpstreamError::Failed),
            _ => None,
        }
    }
}

/// What to do with one piece of upstream payload.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Received {
    /// Held bytes to send before the payload (the payload would overflow
    /// the block they fill).
    pub before: Option<Vec<u8>>,
    /// Whether the payload itself goes out now, as it is. When false, the
    /// engine has kept a copy (coalescing).
    pub pass: bool,
    /// Of a passing payload, how many bytes at its end the engine kept
    /// (the start of an event, held until its end: resume is on).
    pub keep: usize,
    /// The first event since a resume completed with this payload: the
    /// time since the upstream ended (the resume gap).
    pub resume_gap: Option<Duration>,
    /// Held bytes to send after the payload: a block the payload filled,
    /// or the rest at the body's end.
    pub after: Option<Vec<u8>>,
    /// Events this payload completed (for the events metric).
    pub events: u64,
    /// The body ends after this: `Complete`, or ended early at the
    /// boundary this payload reached (`MaxDuration`, `Drain`).
    pub end: Option<Outcome>,
}

/// What the clock (or a drain) asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// Nothing now; wait until [`StreamEngine::next_wake`].
    Wait,
    /// Send [`HEARTBEAT`] (already counted in [`StreamEngine::sent`]).
    Heartbeat,
    /// End the body cleanly here, at an event boundary, after the held
    /// bytes (if any).
    End(Outcome, Option<Vec<u8>>),
    /// Cut the body where it is: the client must not see it as complete.
    Cut(Outcome),
    /// Drop the upstream and resume the stream elsewhere (see
    /// [`StreamEngine::begin_resume`]); the body is at an event boundary.
    Resume(ResumePlan),
}

/// One answer's body policy. See the module doc.
pub(super) struct StreamEngine {
    clock: StreamClock,
    /// Present for event streams: events are counted, and boundaries known.
    events: Option<EventBoundary>,
    /// Present when coalescing: the block size, and what is held.
    coalesce: Option<(usize, Vec<u8>)>,
    /// Heartbeats and the maximum duration apply.
    live: bool,
    /// A drain ends this body at an event boundary.
    drainable: bool,
    draining: bool,
    send_timeout: Duration,
    /// Since when the client has taken nothing of what waits for it.
    blocked_since: Option<Instant>,
    /// The body has ended or been cut: nothing more is decided.
    over: bool,
    sent: u64,
    events_sent: u64,
    resume: Option<Box<Resume>>,
}

impl StreamEngine {
    pub fn new(s: EngineSettings, now: Instant) -> Self {
        let event_stream = s.mode.is_event_stream();
        let live = s.open_ended && matches!(s.mode, BodyMode::EventStream(_));
        let sse = match s.mode {
            BodyMode::EventStream(limits) if live => limits,
            _ => SseLimits::default(),
        };
        StreamEngine {
            clock: StreamClock::new(s.idle, sse, s.deadline, now),
            events: event_stream.then(EventBoundary::default),
            coalesce: match s.mode {
                BodyMode::Coalesce { capacity, .. } => Some((capacity.max(1), Vec::new())),
                _ => None,
            },
            live,
            drainable: s.open_ended && event_stream,
            draining: false,
            send_timeout: s.send_timeout,
            blocked_since: None,
            over: false,
            sent: 0,
            events_sent: 0,
            resume: match (s.resume, s.mode) {
                (Some(policy), BodyMode::EventStream(_)) if live => Some(Box::new(Resume {
                    policy,
                    ids: EventIds::default(),
                    held: Vec::new(),
                    torn: false,
                    attempts: 0,
                    since: None,
                    resuming: false,
                    leave: None,
                })),
                _ => None,
            },
        }
    }

    /// Whether a drain concerns this body (the shell need not watch for
    /// one otherwise).
    pub fn drainable(&self) -> bool {
        self.drainable && !self.draining
    }

    /// Whether this is an event stream (it counts in `open_streams` and
    /// holds a place among the Route's streams).
    pub fn is_event_stream(&self) -> bool {
        self.events.is_some()
    }

    /// Payload bytes and heartbeats decided so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Events the upstream completed so far.
    pub fn events(&self) -> u64 {
        self.events_sent
    }

    /// Bytes held back for a block (coalescing).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.coalesce.as_ref().map_or(0, |(_, h)| h.len())
    }

    /// ssegate is draining: this body ends at its next event boundary.
    pub fn drain(&mut self) {
        if self.drainable {
            self.draining = true;
        }
    }

    fn at_boundary(&self) -> bool {
        self.events.as_ref().is_none_or(EventBoundary::at_boundary)
    }

    /// Payload from the upstream (its framing undone). `last`: the
    /// upstream's body is complete with it (`payload` may be empty).
    pub fn receive(&mut self, payload: &[u8], last: bool, now: Instant) -> Received {
        let mut r = Received::default();
        if self.over {
            return r;
        }
        // Any read is a sign of life, framing bytes too.
        self.clock.touch(now);
        self.sent += payload.len() as u64;
        let mut boundary = None;
        if let Some(events) = &mut self.events {
            let completed = if self.resume.is_some() {
                let (completed, last) = events.feed_to_boundary(payload);
                boundary = last;
                completed
            } else {
                events.feed(payload)
            };
            r.events = completed as u64;
            self.events_sent += r.events;
        }
        r.end = if last {
            Some(Outcome::Complete)
        } else if !payload.is_empty() && self.at_boundary() && self.draining {
            // This payload completes an event during a drain: it is the last.
            Some(Outcome::Drain)
        } else if !payload.is_empty() && self.at_boundary() && self.live && self.clock.past_end(now) {
            Some(Outcome::MaxDuration)
        } else {
            None
        };
        self.over = r.end.is_some();
        if let Some(resume) = &mut self.resume {
            resume.receive(payload, boundary, &mut r, now);
            return r;
        }
        let Some((capacity, held)) = &mut self.coalesce else {
            r.pass = !payload.is_empty();
            return r;
        };
        // Blocks of at most `capacity`: what does not fit sends the block
        // ahead of it; a payload of a block or more passes alone.
        let capacity = *capacity;
        if !held.is_empty() && held.len() + payload.len() > capacity {
            r.before = Some(std::mem::take(held));
        }
        if payload.len() >= capacity {
            r.pass = true;
        } else if !payload.is_empty() {
            if held.capacity() == 0 {
                held.reserve(capacity.min(16 * 1024).max(payload.len()));
            }
            held.extend_from_slice(payload);
            if held.len() >= capacity {
                r.after = Some(std::mem::take(held));
            }
        }
        if r.end.is_some() && !held.is_empty() {
            r.after = Some(std::mem::take(held));
        }
        r
    }

    /// The client reconnected with `Last-Event-ID: id`: until the upstream
    /// sends an id of its own, a resume continues from it.
    pub fn seed_last_event_id(&mut self, id: &[u8]) {
        if let Some(r) = &mut self.resume {
            r.ids.seed(id);
        }
    }

    /// Whether this body resumes at all (a streamed event stream, resume on).
    pub fn resume_on(&self) -> bool {
        self.resume.is_some()
    }

    /// Whether a failure now could be resumed: resume is on, an id has
    /// been carried, and no event is half passed.
    #[cfg(test)]
    pub fn resumable(&self) -> bool {
        !self.over && self.resume.as_ref().is_some_and(|r| !r.torn && r.ids.last().is_some())
    }

    /// The id of the last whole event passed on: the resumed request's
    /// `Last-Event-ID`.
    pub fn last_event_id(&self) -> Option<&[u8]> {
        self.resume.as_ref().and_then(|r| r.ids.last())
    }

    /// Whether a resume is under way (the shell has no upstream).
    pub fn resuming(&self) -> bool {
        self.resume.as_ref().is_some_and(|r| r.resuming)
    }

    /// The upstream is gone or is to be left: resume elsewhere if the
    /// policy allows. `None`: resume is off for this stream. `Err` names
    /// why it is refused (the metric's `outcome`): `no_id`,
    /// `inside_large_event` or `exhausted`. On `Ok` any partial event is
    /// dropped (the client never saw it) and the body waits, at an event
    /// boundary, for [`StreamEngine::resumed`] or
    /// [`StreamEngine::resume_failed`].
    pub fn begin_resume(&mut self, reason: ResumeReason, now: Instant) -> Option<Result<ResumePlan, &'static str>> {
        let r = self.resume.as_mut()?;
        if self.over {
            return Some(Err("over"));
        }
        if r.ids.last().is_none() {
            return Some(Err("no_id"));
        }
        if r.torn {
            return Some(Err("inside_large_event"));
        }
        let since = *r.since.get_or_insert(now);
        let deadline = since + r.policy.budget;
        if r.attempts >= r.policy.max_attempts || now >= deadline {
            return Some(Err("exhausted"));
        }
        self.sent -= r.held.len() as u64;
        r.held = Vec::new();
        r.ids.rewind();
        r.resuming = true;
        r.leave = None;
        self.events = Some(EventBoundary::default());
        Some(Ok(ResumePlan {
            reason,
            attempts: r.policy.max_attempts - r.attempts,
            deadline,
        }))
    }

    /// A resume found a new upstream after `attempts` requests: its body
    /// carries on here.
    pub fn resumed(&mut self, attempts: u32, now: Instant) {
        if let Some(r) = &mut self.resume {
            r.attempts += attempts;
            r.resuming = false;
        }
        self.clock.touch(now);
    }

    /// A resume found no upstream (or a wrong answer) after `attempts`
    /// requests: the body is cut as the upstream's failure.
    pub fn resume_failed(&mut self, attempts: u32) -> Outcome {
        if let Some(r) = &mut self.resume {
            r.attempts += attempts;
            r.resuming = false;
        }
        self.over = true;
        Outcome::UpstreamError
    }

    /// The stream's endpoint is leaving (or holds more than its share): move
    /// at the first event boundary from `at` on, if the stream can be
    /// resumed then. An earlier request stands.
    pub fn leave(&mut self, at: Instant, reason: ResumeReason) {
        if let Some(r) = &mut self.resume {
            if r.leave.is_none_or(|(t, _)| at < t) {
                r.leave = Some((at, reason));
            }
        }
    }

    /// Whether a move has been asked for and not made yet.
    #[cfg(test)]
    pub fn leaving(&self) -> bool {
        self.resume.as_ref().is_some_and(|r| r.leave.is_some())
    }

    /// The client could not take all that waits for it.
    pub fn client_blocked(&mut self, now: Instant) {
        self.blocked_since.get_or_insert(now);
    }

    /// The client took bytes.
    pub fn client_took(&mut self) {
        self.blocked_since = None;
    }

    /// What is due at `now`. While the client is blocked only the send
    /// timeout is (the upstream is not read then, so its silence means
    /// nothing). A heartbeat, the maximum duration and a drain wait for an
    /// event boundary; the idle timeout and the request deadline do not.
    pub fn decide(&mut self, now: Instant) -> Decision {
        if self.over {
            return Decision::Wait;
        }
        if let Some(since) = self.blocked_since {
            if now >= since + self.send_timeout {
                return self.cut(Outcome::SendTimeout);
            }
            return Decision::Wait;
        }
        let at_boundary = self.at_boundary();
        if self.draining && at_boundary {
            return self.end(Outcome::Drain);
        }
        if self.resuming() {
            // No upstream to be silent: the resume's own budget bounds it.
            self.clock.touch(now);
        } else if at_boundary {
            let due = self.resume.as_ref().and_then(|r| r.leave).filter(|(at, _)| *at <= now);
            if let Some((_, reason)) = due {
                match self.begin_resume(reason, now) {
                    Some(Ok(plan)) => return Decision::Resume(plan),
                    // Not movable now: it stays until its upstream ends it.
                    _ => {
                        if let Some(r) = &mut self.resume {
                            r.leave = None;
                        }
                    }
                }
            }
        }
        match self.clock.due(at_boundary, now) {
            Some(StreamDue::Deadline) => self.cut(Outcome::RequestTimeout),
            Some(StreamDue::Idle(_)) if self.resume.as_ref().is_some_and(|r| r.policy.on_idle_timeout) => {
                match self.begin_resume(ResumeReason::IdleTimeout, now) {
                    Some(Ok(plan)) => Decision::Resume(plan),
                    _ => self.cut(Outcome::IdleTimeout),
                }
            }
            Some(StreamDue::Idle(_)) => self.cut(Outcome::IdleTimeout),
            Some(StreamDue::End) => self.end(Outcome::MaxDuration),
            Some(StreamDue::Heartbeat) => {
                self.sent += HEARTBEAT.len() as u64;
                Decision::Heartbeat
            }
            None => Decision::Wait,
        }
    }

    /// When [`StreamEngine::decide`] may next have something to say;
    /// `None`: never, unless bytes come or a drain starts.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        if self.over {
            return None;
        }
        if let Some(since) = self.blocked_since {
            return Some(since + self.send_timeout);
        }
        let clock = (!self.clock.is_unset()).then(|| self.clock.next_due(self.at_boundary(), now));
        // A move waits for its time, then for a boundary (which data brings).
        let leave = self
            .resume
            .as_ref()
            .and_then(|r| r.leave)
            .map(|(at, _)| at)
            .filter(|at| *at > now || self.at_boundary());
        match (clock, leave) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn end(&mut self, outcome: Outcome) -> Decision {
        self.over = true;
        let held = self
            .coalesce
            .as_mut()
            .map(|(_, h)| std::mem::take(h))
            .filter(|h| !h.is_empty());
        Decision::End(outcome, held)
    }

    fn cut(&mut self, outcome: Outcome) -> Decision {
        self.over = true;
        Decision::Cut(outcome)
    }
}

impl Resume {
    /// Splits a payload of a resumable stream so that only whole events go
    /// out: what ends at the payload's last boundary passes (after the held
    /// start of its first event), the rest is held. `boundary`: where in
    /// `payload` the last boundary lies, if it has one.
    fn receive(&mut self, payload: &[u8], boundary: Option<usize>, r: &mut Received, now: Instant) {
        self.ids.feed(payload);
        if r.events > 0 {
            // An event came: a resume (if any) is over, its gap known, and
            // the attempts are back to the full number.
            if let Some(since) = self.since.take() {
                r.resume_gap = Some(now.saturating_duration_since(since));
            }
            self.attempts = 0;
        }
        r.pass = !payload.is_empty();
        let held_first = |held: &mut Vec<u8>| (!held.is_empty()).then(|| std::mem::take(held));
        match boundary {
            Some(k) => {
                r.before = held_first(&mut self.held);
                let tail = &payload[k..];
                // The body's end, or an event too big to hold: the tail passes too.
                self.torn = r.end.is_none() && tail.len() > MAX_HELD_EVENT;
                if r.end.is_none() && !self.torn {
                    r.keep = tail.len();
                    self.held.extend_from_slice(tail);
                }
            }
            None if self.torn || r.end.is_some() => r.before = held_first(&mut self.held),
            None if self.held.len() + payload.len() > MAX_HELD_EVENT => {
                r.before = held_first(&mut self.held);
                self.torn = true;
            }
            None => {
                r.pass = false;
                if self.held.capacity() == 0 {
                    self.held.reserve(payload.len().max(256));
                }
                self.held.extend_from_slice(payload);
            }
        }
    }
}

/// Decides once how a response body goes to the client, from the rule and
/// the two fields of the answer that matter, as bytes (no header map is
/// built for it).
pub(super) fn body_mode_of(target: &ResolvedRule, content_type: Option<&[u8]>, accel: Option<&[u8]>) -> BodyMode {
    let event_stream = is_event_stream_type(content_type);
    if buffer_for_fields(target.settings.buffering, event_stream, accel) {
        BodyMode::Coalesce {
            capacity: target.settings.buffer_size,
            event_stream,
        }
    } else if event_stream {
        BodyMode::EventStream(SseLimits {
            heartbeat: target.settings.heartbeat,
            max_duration: target.settings.max_stream_duration,
        })
    } else {
        BodyMode::Stream
    }
}

/// Decides whether a response is coalesced, from the Route's mode and the
/// upstream's headers.
pub fn buffer_for(mode: ProxyBuffering, headers: &HeaderMap) -> bool {
    buffer_for_fields(
        mode,
        is_event_stream(headers),
        headers.get(&X_ACCEL_BUFFERING).map(HeaderValue::as_bytes),
    )
}

fn buffer_for_fields(mode: ProxyBuffering, event_stream: bool, accel: Option<&[u8]>) -> bool {
    let accel = accel.map(|v| v.trim_ascii());
    let is = |word: &[u8]| accel.is_some_and(|v| v.eq_ignore_ascii_case(word));
    match mode {
        ProxyBuffering::Disabled => false,
        _ if is(b"no") => false,
        ProxyBuffering::Enabled => true,
        ProxyBuffering::Auto if is(b"yes") => true,
        ProxyBuffering::Auto => !event_stream,
    }
}

pub(super) fn is_event_stream(headers: &HeaderMap) -> bool {
    is_event_stream_type(headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes))
}

pub(super) fn is_event_stream_type(content_type: Option<&[u8]>) -> bool {
    content_type
        .and_then(|v| v.split(|&b| b == b';').next())
        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"text/event-stream"))
}

#[cfg(test)]
#[path = "stream_engine_tests.rs"]
mod tests;
