//! The deadlines of one response body: the idle timeout between upstream
//! bytes, the heartbeat, and the maximum duration. Arithmetic on instants
//! only, shared by the HTTP/2 body (`body.rs`) and the HTTP/1.1 pump
//! (`h1/pump.rs`); each keeps its own timer and asks this when it fires.

use super::SseLimits;
use std::time::Duration;
use tokio::time::Instant;

/// What is due when a body's timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamDue {
    /// The upstream sent nothing for this long.
    Idle(Duration),
    /// The maximum duration has passed (at an event boundary).
    End,
    /// The request's deadline has passed (an HTTPRoute's `timeouts`): the
    /// response is cut where it is.
    Deadline,
    /// A heartbeat is to go out now (at an event boundary); recorded as sent.
    Heartbeat,
}

pub(super) struct StreamClock {
    idle: Option<Duration>,
    heartbeat: Option<Duration>,
    /// When the stream is to end, at the next event boundary.
    end_at: Option<Instant>,
    /// When the response is cut, boundary or not.
    deadline: Option<Instant>,
    last_upstream: Instant,
    last_heartbeat: Instant,
}

impl StreamClock {
    pub fn new(idle: Option<Duration>, sse: SseLimits, deadline: Option<Instant>, now: Instant) -> Self {
        StreamClock {
            idle,
            heartbeat: sse.heartbeat,
            end_at: sse.max_duration.map(|d| now + d),
            deadline,
            last_upstream: now,
            last_heartbeat: now,
        }
    }

    /// Whether nothing is ever due (no timer needed).
    pub fn is_unset(&self) -> bool {
        self.idle.is_none() && self.heartbeat.is_none() && self.end_at.is_none() && self.deadline.is_none()
    }

    /// The upstream sent bytes.
    pub fn touch(&mut self, now: Instant) {
        self.last_upstream = now;
    }

    pub fn past_end(&self, now: Instant) -> bool {
        self.end_at.is_some_and(|end| now >= end)
    }

    /// The nearest time anything may be due. Mid-event (`at_boundary`
    /// false) a heartbeat cannot go out, so it is looked at again one
    /// interval later.
    pub fn next_due(&self, at_boundary: bool, now: Instant) -> Instant {
        let far = now + Duration::from_secs(86_400);
        let idle = self.idle.map_or(far, |d| self.last_upstream + d);
        let heartbeat = match self.heartbeat {
            Some(every) if at_boundary => self.last_upstream.max(self.last_heartbeat) + every,
            Some(every) => now + every,
            None => far,
        };
        let end = self.end_at.filter(|_| at_boundary).unwrap_or(far);
        idle.min(heartbeat).min(end).min(self.deadline.unwrap_or(far))
    }

    /// What is due at `now`: the idle timeout first, then the end, then a
    /// heartbeat (the last two only at an event boundary).
    pub fn due(&mut self, at_boundary: bool, now: Instant) -> Option<StreamDue> {
        if self.deadline.is_some_and(|d| now >= d) {
            return Some(StreamDue::Deadline);
        }
        if let Some(limit) = self.idle {
            if now >= self.last_upstream + limit {
                return Some(StreamDue::Idle(limit));
            }
        }
        if at_boundary && self.past_end(now) {
            return Some(StreamDue::End);
        }
        if let Some(every) = self.heartbeat {
            if at_boundary && now >= self.last_upstream.max(self.last_heartbeat) + every {
                self.last_heartbeat = now;
                return Some(StreamDue::Heartbeat);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn heartbeats_wait_for_a_boundary_and_silence_moves_them() {
        let t0 = Instant::now();
        let sse = SseLimits {
            heartbeat: Some(secs(10)),
            max_duration: Some(secs(100)),
        };
        let mut c = StreamClock::new(Some(secs(60)), sse, None, t0);
        assert_eq!(c.next_due(true, t0), t0 + secs(10));
        assert_eq!(c.due(true, t0 + secs(9)), None);
        // Mid-event nothing but the idle timeout is due, and the heartbeat
        // is looked at one interval later.
        assert_eq!(c.due(false, t0 + secs(11)), None);
        assert_eq!(c.next_due(false, t0 + secs(11)), t0 + secs(21));
        assert_eq!(c.due(true, t0 + secs(11)), Some(StreamDue::Heartbeat));
        assert_eq!(c.next_due(true, t0 + secs(11)), t0 + secs(21));
        // Upstream bytes move the next heartbeat and the idle deadline.
        c.touch(t0 + secs(15));
        assert_eq!(c.next_due(true, t0 + secs(15)), t0 + secs(25));
        assert_eq!(c.due(true, t0 + secs(76)), Some(StreamDue::Idle(secs(60))));
    }

    #[test]
    fn the_end_comes_at_a_boundary_and_idle_goes_first() {
        let t0 = Instant::now();
        let sse = SseLimits {
            heartbeat: None,
            max_duration: Some(secs(5)),
        };
        let mut c = StreamClock::new(Some(secs(5)), sse, None, t0);
        assert!(!c.is_unset());
        assert_eq!(c.due(false, t0 + secs(6)), Some(StreamDue::Idle(secs(5))));
        c.touch(t0 + secs(4));
        assert_eq!(c.due(false, t0 + secs(6)), None, "the end waits for a boundary");
        assert_eq!(c.due(true, t0 + secs(6)), Some(StreamDue::End));
        assert!(StreamClock::new(None, SseLimits::default(), None, t0).is_unset());
    }

    #[test]
    fn a_deadline_cuts_anywhere_and_comes_first() {
        let t0 = Instant::now();
        let sse = SseLimits {
            heartbeat: Some(secs(1)),
            max_duration: Some(secs(100)),
        };
        let mut c = StreamClock::new(Some(secs(60)), sse, Some(t0 + secs(3)), t0);
        assert!(!StreamClock::new(None, SseLimits::default(), Some(t0), t0).is_unset());
        assert_eq!(c.next_due(false, t0 + secs(2)), t0 + secs(3), "mid-event too");
        assert_eq!(c.due(false, t0 + secs(3)), Some(StreamDue::Deadline));
        assert_eq!(c.due(true, t0 + secs(200)), Some(StreamDue::Deadline));
    }
}
