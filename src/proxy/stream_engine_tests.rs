//! The engine with a made-up clock: every decision at a known instant.

use super::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

fn settings(mode: BodyMode) -> EngineSettings {
    EngineSettings {
        mode,
        open_ended: true,
        idle: None,
        deadline: None,
        send_timeout: secs(60),
        resume: None,
    }
}

fn live(heartbeat: Option<u64>, max: Option<u64>) -> BodyMode {
    BodyMode::EventStream(SseLimits {
        heartbeat: heartbeat.map(secs),
        max_duration: max.map(secs),
    })
}

fn passed() -> Received {
    Received {
        pass: true,
        ..Received::default()
    }
}

#[test]
fn a_streamed_body_passes_every_payload_as_it_comes() {
    let t0 = Instant::now();
    let mut e = StreamEngine::new(settings(BodyMode::Stream), t0);
    assert_eq!(e.receive(b"abc", false, t0), passed());
    assert_eq!(e.receive(b"", false, t0), Received::default(), "framing bytes only");
    let r = e.receive(b"de", true, t0);
    assert!(r.pass);
    assert_eq!(r.end, Some(Outcome::Complete));
    assert_eq!((e.sent(), e.events()), (5, 0));
    assert!(!e.is_event_stream());
    assert_eq!(e.next_wake(t0), None, "nothing is timed without timeouts");
}

#[test]
fn events_are_counted_across_payloads() {
    let t0 = Instant::now();
    let mut e = StreamEngine::new(settings(live(None, None)), t0);
    assert_eq!(e.receive(b"data: a\n\ndata: b", false, t0).events, 1);
    assert_eq!(e.receive(b"\n\n", false, t0).events, 1);
    assert_eq!(e.receive(b"data: c\r\n\r\n", false, t0).events, 1);
    assert_eq!(e.events(), 3);
}

#[test]
fn heartbeats_go_out_on_silence_and_never_inside_an_event() {
    let t0 = Instant::now();
    let mut e = StreamEngine::new(settings(live(Some(10), None)), t0);
    assert_eq!(e.next_wake(t0), Some(t0 + secs(10)));
    assert_eq!(e.decide(t0 + secs(9)), Decision::Wait);
    assert_eq!(e.decide(t0 + secs(10)), Decision::Heartbeat);
    assert_eq!(e.sent(), HEARTBEAT.len() as u64, "a heartbeat counts as sent");
    assert_eq!(e.next_wake(t0 + secs(10)), Some(t0 + secs(20)));
    // Half an event, then silence: no heartbeat until the event is whole.
    e.receive(b"data: half", false, t0 + secs(12));
    assert_eq!(e.decide(t0 + secs(30)), Decision::Wait);
    assert_eq!(
        e.next_wake(t0 + secs(30)),
        Some(t0 + secs(40)),
        "mid-event, looked at again an interval later"
    );
    e.receive(b"\n\n", false, t0 + secs(31));
    assert_eq!(
        e.decide(t0 + secs(40)),
        Decision::Wait,
        "upstream bytes moved the heartbeat"
    );
    assert_eq!(e.decide(t0 + secs(41)), Decision::Heartbeat);
}

#[test]
fn the_maximum_duration_ends_at_the_next_boundary() {
    let t0 = Instant::now();
    let mut e = StreamEngine::new(settings(live(None, Some(5))), t0);
    assert_eq!(e.next_wake(t0), Some(t0 + secs(5)));
    e.receive(b"data: a", false, t0 + secs(4));
    assert_eq!(e.decide(t0 + secs(6)), Decision::Wait, "mid-event: not yet");
    // The payload that completes the event after the end is the last one.
    let r = e.receive(b"\n\n", false, t0 + secs(7));
    assert_eq!(r.end, Some(Outcome::MaxDuration));
    assert!(r.pass);
    assert_eq!(e.decide(t0 + secs(8)), Decision::Wait, "over: nothing more");
    assert_eq!(e.next_wake(t0 + secs(8)), None);
    // At a boundary, the clock alone ends it.
    let mut e = StreamEngine::new(settings(live(None, Some(5))), t0);
    assert_eq!(e.decide(t0 + secs(5)), Decision::End(Outcome::MaxDuration, None));
}

#[test]
fn a_drain_ends_at_the_next_boundary() {
    let t0 = Instant::now();
    let mut e = StreamEngine::new(settings(live(None, None)), t0);
    assert!(e.drainable());
    e.receive(b"data: a\n", false, t0);
    e.drain();
    assert!(!e.drainable(), "already draining");
    assert_eq!(e.decide(t0), Decision::Wait, "mid-event");
    let r = e.receive(b"\n", false, t0);
    assert_eq!((r.pass, r.end), (true, Some(Outcome::Drain)));
    let mut e = StreamEngine::new(settings(live(None, None)), t0);
    e.drain();
    assert_eq!(e.decide(t0), Decision::End(Outcome::Drain, None));
}

#[test]
fn a_body_of_promised_length_is_never_live_nor_drained() {
    let t0 = Instant::now();
    let mut s = settings(live(Some(1), Some(2)));
    s.open_ended = false;
    s.idle = Some(secs(10));
    let mut e = StreamEngine::new(s, t0);
    assert!(!e.drainable());
    assert!(e.is_event_stream(), "its events are still counted");
    e.drain();
    assert_eq!(e.decide(t0 + secs(3)), Decision::Wait, "no heartbeat, no end, no drain");
    assert_eq!(e.next_wake(t0 + secs(3)), Some(t0 + secs(10)), "only the idle timeout");
    let r = e.receive(b"data: a\n\n", false, t0 + secs(4));
    assert_eq!((r.events, r.end), (1, None));
    assert_eq!(e.decide(t0 + secs(14)), Decision::Cut(Outcome::IdleTimeout));
}

#[test]
fn the_idle_timeout_cuts_even_mid_event() {
    let t0 = Instant::now();
    let mut s = settings(live(Some(100), None));
    s.idle = Some(secs(5));
    let mut e = StreamEngine::new(s, t0);
    e.receive(b"data: half", false, t0 + secs(1));
    assert_eq!(e.decide(t0 + secs(5)), Decision::Wait);
    assert_eq!(e.next_wake(t0 + secs(5)), Some(t0 + secs(6)));
    assert_eq!(e.decide(t0 + secs(6)), Decision::Cut(Outcome::IdleTimeout));
    assert_eq!(Outcome::IdleTimeout.upstream_error(), Some(UpstreamError::IdleTimeout));
}

#[test]
fn the_request_deadline_cuts_and_is_counted_as_its_own_kind() {
    let t0 = Instant::now();
    let mut s = settings(BodyMode::Stream);
    s.deadline = Some(t0 + ms(1500));
    s.idle = Some(secs(60));
    let mut e = StreamEngine::new(s, t0);
    e.receive(b"x", false, t0 + secs(1));
    assert_eq!(e.next_wake(t0 + secs(1)), Some(t0 + ms(1500)));
    assert_eq!(e.decide(t0 + ms(1500)), Decision::Cut(Outcome::RequestTimeout));
    assert_eq!(
        Outcome::RequestTimeout.upstream_error(),
        Some(UpstreamError::RequestTimeout),
        "not an idle timeout"
    );
    assert!(!Outcome::RequestTimeout.is_clean());
}

#[test]
fn a_blocked_client_is_cut_after_the_send_timeout_and_nothing_else_fires() {
    let t0 = Instant::now();
    let mut s = settings(live(Some(1), None));
    s.idle = Some(secs(2));
    s.send_timeout = secs(10);
    let mut e = StreamEngine::new(s, t0);
    e.client_blocked(t0 + secs(1));
    e.client_blocked(t0 + secs(5));
    assert_eq!(e.next_wake(t0 + secs(5)), Some(t0 + secs(11)), "from the first block");
    assert_eq!(
        e.decide(t0 + secs(10)),
        Decision::Wait,
        "no heartbeat or idle timeout meanwhile"
    );
    e.client_took();
    assert_eq!(e.decide(t0 + secs(10)), Decision::Cut(Outcome::IdleTimeout));
    let mut e = StreamEngine::new(s, t0);
    e.client_blocked(t0);
    assert_eq!(e.decide(t0 + secs(10)), Decision::Cut(Outcome::SendTimeout));
    assert_eq!(Outcome::SendTimeout.upstream_error(), None, "the client's doing");
}

#[test]
fn coalescing_sends_blocks_of_at_most_the_buffer_size() {
    let t0 = Instant::now();
    let mode = BodyMode::Coalesce {
        capacity: 8,
        event_stream: false,
    };
    let mut e = StreamEngine::new(settings(mode), t0);
    assert_eq!(e.receive(b"abc", false, t0), Received::default(), "held");
    assert_eq!(e.held(), 3);
    // Fills the block exactly: it goes after.
    let r = e.receive(b"defgh", false, t0);
    assert_eq!((r.before, r.pass, r.after), (None, false, Some(b"abcdefgh".to_vec())));
    e.receive(b"123", false, t0);
    // Would overflow: the held block goes first, the payload is held.
    let r = e.receive(b"45678", false, t0);
    assert_eq!((r.before, r.pass, r.after), (None, false, Some(b"12345678".to_vec())));
    e.receive(b"xy", false, t0);
    let r = e.receive(b"0123456789", false, t0);
    assert_eq!(
        (r.before, r.pass, r.after),
        (Some(b"xy".to_vec()), true, None),
        "a block or more passes alone, after what was held"
    );
    e.receive(b"zz", false, t0);
    let r = e.receive(b"!", true, t0);
    assert_eq!(
        (r.pass, r.after, r.end),
        (false, Some(b"zz!".to_vec()), Some(Outcome::Complete))
    );
    assert_eq!(e.held(), 0);
}

#[test]
fn a_coalesced_event_stream_counts_events_and_drains_after_what_it_holds() {
    let t0 = Instant::now();
    let mode = BodyMode::Coalesce {
        capacity: 1024,
        event_stream: true,
    };
    let mut s = settings(mode);
    s.idle = Some(secs(30));
    let mut e = StreamEngine::new(s, t0);
    assert_eq!(e.receive(b"data: a\n\n", false, t0).events, 1);
    assert_eq!(e.next_wake(t0), Some(t0 + secs(30)), "not live: no heartbeat");
    e.drain();
    assert_eq!(
        e.decide(t0),
        Decision::End(Outcome::Drain, Some(b"data: a\n\n".to_vec()))
    );
}

#[test]
fn the_end_of_a_coalesced_body_flushes_what_is_held() {
    let t0 = Instant::now();
    let mode = BodyMode::Coalesce {
        capacity: 4,
        event_stream: false,
    };
    let mut e = StreamEngine::new(settings(mode), t0);
    e.receive(b"ab", false, t0);
    let r = e.receive(b"", true, t0);
    assert_eq!(
        (r.pass, r.after, r.end),
        (false, Some(b"ab".to_vec()), Some(Outcome::Complete))
    );
}

#[test]
fn outcomes_name_the_access_log_and_say_which_are_clean() {
    let all = [
        (Outcome::Complete, "complete", true),
        (Outcome::MaxDuration, "max_duration", true),
        (Outcome::Drain, "drain", true),
        (Outcome::IdleTimeout, "idle_timeout", false),
        (Outcome::RequestTimeout, "request_timeout", false),
        (Outcome::SendTimeout, "send_timeout", false),
        (Outcome::UpstreamError, "upstream_error", false),
        (Outcome::ClientGone, "client_gone", false),
    ];
    for (o, name, clean) in all {
        assert_eq!((o.as_str(), o.is_clean()), (name, clean), "{o:?}");
    }
}

mod body_mode {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn buffering_decision_table() {
        use ProxyBuffering::*;
        let sse = headers(&[("content-type", "text/event-stream; charset=utf-8")]);
        let json = headers(&[("content-type", "application/json")]);
        let json_no = headers(&[("content-type", "application/json"), ("x-accel-buffering", "no")]);
        let sse_yes = headers(&[("content-type", "text/event-stream"), ("x-accel-buffering", "yes")]);
        assert!(!buffer_for(Auto, &sse));
        assert!(buffer_for(Auto, &json));
        assert!(!buffer_for(Auto, &json_no));
        assert!(buffer_for(Auto, &sse_yes));
        assert!(buffer_for(Enabled, &sse));
        assert!(!buffer_for(Enabled, &json_no));
        assert!(!buffer_for(Disabled, &json));
        assert!(!buffer_for(Disabled, &sse_yes));
    }
}

fn resuming(policy: ResumeSettings) -> EngineSettings {
    EngineSettings {
        resume: Some(policy),
        ..settings(live(None, None))
    }
}

/// What the client receives of one payload, by the engine's decision.
fn out(payload: &[u8], r: &Received) -> Vec<u8> {
    let mut v = r.before.clone().unwrap_or_default();
    if r.pass {
        v.extend_from_slice(&payload[..payload.len() - r.keep]);
    }
    v.extend_from_slice(&r.after.clone().unwrap_or_default());
    v
}

#[test]
fn with_resume_only_whole_events_go_out_at_every_split() {
    let stream: &[u8] = b"id: 1\ndata: one\n\nid: 2\r\ndata: two\r\n\r\n: c\n\nid: 3\rdata: 3\r\r";
    // After each blank line (a CR that ends one is a boundary before its LF comes).
    let boundaries = [0, 17, 36, 37, 42, stream.len()];
    let t0 = Instant::now();
    for a in 0..=stream.len() {
        for b in a..=stream.len() {
            let mut e = StreamEngine::new(resuming(ResumeSettings::DEFAULT), t0);
            let mut sent = Vec::new();
            for piece in [&stream[..a], &stream[a..b], &stream[b..]] {
                let r = e.receive(piece, false, t0);
                sent.extend(out(piece, &r));
                assert!(
                    boundaries.contains(&sent.len()),
                    "split {a},{b}: {} bytes out",
                    sent.len()
                );
            }
            assert_eq!(sent, stream, "split {a},{b}");
        }
    }
}

#[test]
fn a_failure_drops_the_partial_event_and_resumes_after_the_last_whole_one() {
    let t0 = Instant::now();
    let mut e = StreamEngine::new(resuming(ResumeSettings::DEFAULT), t0);
    let r = e.receive(b"id: 1\ndata: a\n\nid: 2\ndata: b", false, t0);
    assert_eq!(out(b"id: 1\ndata: a\n\nid: 2\ndata: b", &r), b"id: 1\ndata: a\n\n");
    assert!(e.resumable());
    let plan = e
        .begin_resume(ResumeReason::UpstreamError, t0 + ms(5))
        .unwrap()
        .unwrap();
    assert_eq!(plan.attempts, 3);
    assert_eq!(plan.deadline, t0 + ms(5) + secs(5));
    assert_eq!(e.last_event_id(), Some(&b"1"[..]));
    assert!(e.resuming());
    e.resumed(1, t0 + ms(20));
    // The new upstream starts with an event of its own: nothing of the
    // dropped one comes out.
    let r = e.receive(b"id: 2\ndata: b\n\n", false, t0 + ms(30));
    assert_eq!(out(b"id: 2\ndata: b\n\n", &r), b"id: 2\ndata: b\n\n");
    assert_eq!(
        r.resume_gap,
        Some(ms(25)),
        "from the failure to the first event after it"
    );
    assert_eq!(e.last_event_id(), Some(&b"2"[..]));
}

#[test]
fn a_stream_without_an_id_or_inside_a_large_event_is_not_resumed() {
    let t0 = Instant::now();
    let mut e = StreamEngine::new(resuming(ResumeSettings::DEFAULT), t0);
    e.receive(b"data: a\n\n", false, t0);
    assert_eq!(e.begin_resume(ResumeReason::UpstreamError, t0), Some(Err("no_id")));

    let mut e = StreamEngine::new(resuming(ResumeSettings::DEFAULT), t0);
    e.receive(b"id: 1\n\n", false, t0);
    let big = vec![b'x'; MAX_HELD_EVENT + 1];
    let r = e.receive(&big, false, t0);
    assert_eq!(
        out(&big, &r).len(),
        big.len(),
        "an event too big to hold passes as it comes"
    );
    assert_eq!(
        e.begin_resume(ResumeReason::UpstreamError, t0),
        Some(Err("inside_large_event"))
    );
    e.receive(b"\n\n", false, t0);
    assert!(e.resumable(), "resumable again once the big event is over");

    let mut e = StreamEngine::new(settings(live(None, None)), t0);
    e.receive(b"id: 1\n\n", false, t0);
    assert_eq!(e.begin_resume(ResumeReason::UpstreamError, t0), None, "resume off");
    let coalesced = BodyMode::Coalesce {
        capacity: 1024,
        event_stream: true,
    };
    let mut e = StreamEngine::new(
        EngineSettings {
            mode: coalesced,
            ..resuming(ResumeSettings::DEFAULT)
        },
        t0,
    );
    e.receive(b"id: 1\n\n", false, t0);
    assert_eq!(
        e.begin_resume(ResumeReason::UpstreamError, t0),
        None,
        "a buffered stream is not resumed"
    );
}

#[test]
fn attempts_and_the_budget_are_kept_until_an_event_comes() {
    let t0 = Instant::now();
    let policy = ResumeSettings {
        max_attempts: 2,
        budget: secs(1),
        ..ResumeSettings::DEFAULT
    };
    let mut e = StreamEngine::new(resuming(policy), t0);
    e.receive(b"id: 1\n\n", false, t0);
    let plan = e.begin_resume(ResumeReason::UpstreamError, t0).unwrap().unwrap();
    assert_eq!((plan.attempts, plan.deadline), (2, t0 + secs(1)));
    // One attempt answered, then the new upstream failed before an event:
    // the same resume goes on, with what is left of it.
    e.resumed(1, t0 + ms(100));
    let plan = e
        .begin_resume(ResumeReason::UpstreamError, t0 + ms(200))
        .unwrap()
        .unwrap();
    assert_eq!((plan.attempts, plan.deadline), (1, t0 + secs(1)));
    e.resumed(1, t0 + ms(300));
    assert_eq!(
        e.begin_resume(ResumeReason::UpstreamError, t0 + ms(400)),
        Some(Err("exhausted"))
    );

    // After an event, a new failure has the whole policy again; the
    // budget runs out on its own too.
    let mut e = StreamEngine::new(resuming(policy), t0);
    e.receive(b"id: 1\n\n", false, t0);
    e.begin_resume(ResumeReason::UpstreamError, t0).unwrap().unwrap();
    e.resumed(2, t0 + ms(10));
    e.receive(b"id: 2\n\n", false, t0 + ms(20));
    let plan = e
        .begin_resume(ResumeReason::UpstreamError, t0 + secs(5))
        .unwrap()
        .unwrap();
    assert_eq!((plan.attempts, plan.deadline), (2, t0 + secs(6)));
    e.resumed(1, t0 + secs(5));
    assert_eq!(
        e.begin_resume(ResumeReason::UpstreamError, t0 + secs(6)),
        Some(Err("exhausted"))
    );
    assert_eq!(e.resume_failed(0), Outcome::UpstreamError);
}

#[test]
fn silence_resumes_only_when_asked() {
    let t0 = Instant::now();
    let idle = |on_idle_timeout| EngineSettings {
        idle: Some(secs(10)),
        ..resuming(ResumeSettings {
            on_idle_timeout,
            ..ResumeSettings::DEFAULT
        })
    };
    let mut e = StreamEngine::new(idle(false), t0);
    e.receive(b"id: 1\n\n", false, t0);
    assert_eq!(e.decide(t0 + secs(10)), Decision::Cut(Outcome::IdleTimeout));

    let mut e = StreamEngine::new(idle(true), t0);
    e.receive(b"id: 1\n\n", false, t0);
    assert_eq!(e.next_wake(t0), Some(t0 + secs(10)));
    let Decision::Resume(plan) = e.decide(t0 + secs(10)) else {
        panic!("an idle upstream is resumed");
    };
    assert_eq!(plan.reason, ResumeReason::IdleTimeout);
    // While the resume runs, silence is not the upstream's: no idle cut.
    assert_eq!(e.decide(t0 + secs(30)), Decision::Wait);
}

#[test]
fn a_move_waits_for_its_time_and_an_event_boundary() {
    let t0 = Instant::now();
    let mut e = StreamEngine::new(resuming(ResumeSettings::DEFAULT), t0);
    e.receive(b"id: 1\n\nid: 2\ndata: half", false, t0);
    e.leave(t0 + secs(2), ResumeReason::EndpointLeaving);
    assert!(e.leaving());
    assert_eq!(e.decide(t0 + secs(1)), Decision::Wait, "not yet");
    assert_eq!(e.decide(t0 + secs(3)), Decision::Wait, "inside an event");
    e.receive(b"\n\n", false, t0 + secs(3));
    let Decision::Resume(plan) = e.decide(t0 + secs(3)) else {
        panic!("moves at the boundary");
    };
    assert_eq!(plan.reason, ResumeReason::EndpointLeaving);
    assert_eq!(
        e.last_event_id(),
        Some(&b"2"[..]),
        "the event that completed went out and counts"
    );

    // A stream that cannot be resumed stays where it is.
    let mut e = StreamEngine::new(resuming(ResumeSettings::DEFAULT), t0);
    e.receive(b"data: no id\n\n", false, t0);
    e.leave(t0, ResumeReason::Rebalance);
    assert_eq!(e.decide(t0), Decision::Wait);
    assert!(!e.leaving());
}

#[test]
fn resume_stays_off_for_bodies_it_cannot_serve() {
    let t0 = Instant::now();
    let closed = EngineSettings {
        open_ended: false,
        ..resuming(ResumeSettings::DEFAULT)
    };
    let mut e = StreamEngine::new(closed, t0);
    assert!(!e.resume_on(), "a promised length");
    let r = e.receive(b"id: 1\ndata: x", false, t0);
    assert!(r.pass && r.keep == 0, "without resume nothing is held");
}
