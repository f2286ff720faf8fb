//! Per-client request limits as ingress-nginx applies them: `limit-connections`, `limit-rps`, `limit-rpm`
//! (with `limit-burst-multiplier`). Sans-I/O: the caller passes the time in and turns a refusal into a response.
//!
//! # What ingress-nginx generates, and what this module reproduces
//!
//! For an Ingress with any of the three annotations set to a value `> 0` (0, negative or absent means off),
//! ingress-nginx (`internal/ingress/annotations/ratelimit/main.go`, `template.go` `buildRateLimit*`) emits, per
//! Ingress, up to three shared-memory zones keyed by `$binary_remote_addr` (the full client address) and in each
//! of its locations, in this order:
//!
//! ```text
//! limit_conn <ns>_<name>_<uid>_conn N;
//! limit_req  zone=<ns>_<name>_<uid>_rps burst=R*multiplier nodelay;   # zone rate=Rr/s
//! limit_req  zone=<ns>_<name>_<uid>_rpm burst=M*multiplier nodelay;   # zone rate=Mr/m
//! ```
//!
//! with `limit_req_status` and `limit_conn_status` both 503 by default. `limit-allowlist` (alias
//! `limit-whitelist`) maps allowlisted addresses to an empty zone key, which nginx skips: the caller does the
//! same by not calling [`LimitState::admit`] for them (or by using [`Permit::unlimited`]).
//!
//! * **Connections** (`ngx_http_limit_conn_module`): a request is counted from the moment it passes until it
//!   finishes; a new one is refused when the client already has `N` counted (`conn >= N`). For Server-Sent Events
//!   that is `N` open streams per client. Here the count is held by the returned [`Permit`] and released on drop.
//! * **Rates** (`ngx_http_limit_req_module`, leaky bucket, `nodelay`): per client and zone nginx stores `excess`
//!   (in thousandths of a request) and `last` (milliseconds). The zone rate is `rate = R*1000` thousandths per
//!   second for `Rr/s` and `rate = M*1000/60` (integer division, so `1r/m` drains 16/1000 of a request per second,
//!   i.e. one request per 62.5 s) for `Mr/m`. A request at `now` computes
//!   `excess' = max(0, excess - rate*ms/1000 + 1000)` with `ms = now - last` (negative treated as 0) and the
//!   product truncated; if `excess' > burst*1000` it is refused and *nothing is stored*; otherwise it is admitted
//!   at once (`nodelay`), `excess = excess'` and `last = now` (only when `ms != 0`). A client seen for the first
//!   time is admitted with `excess = 0`, so a fresh client gets `burst + 1` immediate requests (rps 2, multiplier
//!   5: eleven admitted, the twelfth refused, then one more every 500 ms).
//! * **Both rates**: nginx looks up the rps zone, then the rpm zone, and stores the charges only when both admit:
//!   a refusal by either leaves both untouched and is attributed to the first refusing zone (rps, then rpm).
//! * **Order of rates and connections**: `limit_req` runs before `limit_conn` (both are PREACCESS handlers and
//!   nginx runs a phase's handlers in reverse module order), so a request refused for connections has already
//!   been charged to the rate buckets; a request refused by a rate is never counted as a connection. This module
//!   does both under one lock, in that order, with the same outcome.
//!
//! # The arithmetic, and GCRA
//!
//! The bucket is the generic cell rate algorithm with emission interval `T = 1/rate` and tolerance
//! `tau = burst*T`: nginx's stored `excess` after admitting at `last` is `(TAT - T - last) * rate` where `TAT` is
//! GCRA's theoretical arrival time, its update `max(0, excess - drain + 1000)` is `TAT = max(TAT, now) + T`, and
//! `excess' <= burst*1000` is `TAT <= now + tau`. We keep nginx's integers rather than a GCRA over nanoseconds
//! because the truncations are observable (the `r/m` rate, the per-admission drain, whole milliseconds), and the
//! brief is to behave like ingress-nginx: time enters as whole milliseconds since the origin given to
//! [`LimitState::new`], like nginx's cached `ngx_current_msec`.
//!
//! # Retry-After
//!
//! ingress-nginx sends none; we compute it. A rate refusal is admitted again once
//! `rate*ms/1000 >= excess + 1000 - burst*1000`, i.e. after `ceil((excess + 1000 - burst*1000) * 1000 / rate)`
//! milliseconds since `last`; [`Refused::retry_after`] is the exact wait in milliseconds (the larger of the two
//! buckets when both refuse, because both must admit), and [`Refused::retry_after_secs`] is the header value
//! (ceil, at least 1). When the connection count or the table capacity refuses, the wait depends on other
//! requests finishing, so it is [`UNPREDICTABLE_RETRY_AFTER`].
//!
//! # State, memory and sweeping
//!
//! The routing table is rebuilt on every endpoint change, so the state lives in one process-wide [`LimitState`],
//! keyed by (zone, client address): the zone is an `Arc<str>` naming the policy owner (e.g.
//! `"Ingress default/api"`, compared by content, so a rebuilt table with a new `Arc` of the same name finds the
//! same state). Like nginx reusing a shared zone on reload, the state survives a change of the limits: the
//! stored excess is read with the new rate; a rate that is turned off forgets its bucket.
//!
//! The table is split into [`SHARD_COUNT`] shards (`Mutex<HashMap>`, chosen by a randomly keyed hash so that
//! clients cannot aim at one shard), and [`LimitState::admit`] takes exactly one shard lock, as does dropping a
//! [`Permit`]. Each shard holds at most its share of [`MAX_TRACKED_CLIENTS`].
//!
//! An entry is *removable* when it holds no connection and every bucket it has is full again, i.e. the next
//! request would find `excess' = 0`, exactly as a client never seen (`drain >= excess + 1000`); removing it then
//! loses nothing (nginx's own expiry is lossier: it drops idle entries after 60 s once `excess - drain <= 0`).
//! Removal happens (a) at once when the last connection of an entry whose buckets are already full is released,
//! (b) by a sweep of the shard when a new client arrives and the shard is full, and (c) by a sweep every
//! [`SWEEP_INTERVAL_INSERTS`] new clients in the shard, to keep [`LimitState::tracked_clients`] honest. A sweep
//! visits at most the shard's share of entries (about 1 600 with the defaults, a few microseconds) and only runs
//! when the shard knows that some entry has become removable (it keeps a lower bound of the earliest time one
//! does), so a table full of live entries refuses a new client in O(1).
//!
//! When a new client's shard is still full after that, the client is refused with [`Which::Capacity`]: fail
//! closed, never admitted unlimited. (nginx instead evicts the oldest `limit_req` entry by force, resetting some
//! other client's limits, and refuses with the `limit_conn` status when the connection zone is full.) The price of
//! failing closed is that a client with very many addresses (an IPv6 /64 holds 2^64) can fill the table for as
//! long as its entries stay charged: up to `(burst + 1) / rate`, seconds for rps, minutes for rpm.
//!
//! # IPv6
//!
//! Clients are keyed by their full address like ingress-nginx's `$binary_remote_addr`, so every address of an
//! IPv6 /64 (which one host or one customer usually owns) is a separate client with its own budget. Keying IPv6
//! by /64 would be the stronger defence but would differ from ingress-nginx; we follow ingress-nginx. The one
//! normalisation is that an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket reports for an
//! IPv4 peer) is keyed as the IPv4 address, so one client is one key whichever listener it came through.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// `limit-burst-multiplier` when the annotation is absent: ingress-nginx's `defBurst` ("allow 5 times the
/// specified limit as burst").
pub const DEFAULT_BURST_MULTIPLIER: u32 = 5;

/// Largest accepted `limit-connections`. A process cannot hold more open sockets than its descriptor limit
/// (commonly at most 2^20), so a larger per-client count could never bind; the cap keeps the counter far from
/// overflow.
pub const MAX_CONNECTIONS_PER_CLIENT: u32 = 1_000_000;

/// Largest accepted `limit-rps`. No single proxy process serves a million requests per second, so a larger value
/// is a typo, and the cap keeps `rate * elapsed` arithmetic far from overflow.
pub const MAX_RPS: u32 = 1_000_000;

/// Largest accepted `limit-rpm`: [`MAX_RPS`] per minute, for the same reasons.
pub const MAX_RPM: u32 = 60_000_000;

/// Largest accepted `limit-burst-multiplier`. A burst a thousand times the rate is already "no limit over any
/// short window"; the cap keeps `burst * 1000` (in thousandths of a request, like nginx) well inside `u64`.
pub const MAX_BURST_MULTIPLIER: u32 = 1_000;

/// Most clients tracked per process, over all zones (also the default of [`LimitState::new`]).
///
/// One entry is a `(Arc<str>, IpAddr)` key (40 bytes) and a value of two optional buckets, a connection count
/// and a removal time (64 bytes): 104 bytes plus one control byte in the hash table, whose load factor lies
/// between 7/16 and 7/8, so 120 to 240 bytes per entry, 12 to 24 MB when full. That is in line with what
/// ingress-nginx reserves (5 MB per zone, up to three zones per Ingress), and 100 000 distinct clients whose
/// buckets are all still charged at the same moment, or who all hold open streams, is far beyond what one
/// process of a typical installation sees; the limit only has to stop unbounded growth under an address-spraying
/// attack.
pub const MAX_TRACKED_CLIENTS: usize = 100_000;

/// Number of independently locked shards. 64 makes two of the machine's threads rarely meet on the same lock
/// and keeps a full sweep of one shard to `MAX_TRACKED_CLIENTS / 64` (about 1 600) entries.
pub const SHARD_COUNT: usize = 64;

/// A shard sweeps its removable entries after this many new clients (if it knows one is removable), so that
/// entries of departed clients do not linger until the shard is full. 256 inserts per sweep of at most ~1 600
/// entries amortises to a handful of entry visits per new client.
pub const SWEEP_INTERVAL_INSERTS: u32 = 256;

/// `Retry-After` for refusals whose end depends on other requests finishing (the connection count, the table
/// capacity): the smallest value the header can express, so that well-behaved clients retry soon.
pub const UNPREDICTABLE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The status code ingress-nginx uses for both kinds of refusal (`limit-req-status-code` and
/// `limit-conn-status-code` default to 503).
pub const REFUSAL_STATUS_CODE: u16 = 503;

/// nginx counts the excess in thousandths of a request.
const MILLI_REQUESTS_PER_REQUEST: u64 = 1000;

/// Why a limit configuration cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientLimitsError {
    /// `limit-connections` outside `1..=MAX_CONNECTIONS_PER_CLIENT`.
    #[error("limit-connections must be between 1 and {max} (unset turns the limit off), got {0}", max = MAX_CONNECTIONS_PER_CLIENT)]
    Connections(i64),
    /// `limit-rps` outside `1..=MAX_RPS`.
    #[error("limit-rps must be between 1 and {max} (unset turns the limit off), got {0}", max = MAX_RPS)]
    Rps(i64),
    /// `limit-rpm` outside `1..=MAX_RPM`.
    #[error("limit-rpm must be between 1 and {max} (unset turns the limit off), got {0}", max = MAX_RPM)]
    Rpm(i64),
    /// `limit-burst-multiplier` outside `1..=MAX_BURST_MULTIPLIER` (nginx rejects `burst=0`).
    #[error("limit-burst-multiplier must be between 1 and {max}, got {0}", max = MAX_BURST_MULTIPLIER)]
    BurstMultiplier(i64),
}

/// Why a [`LimitState`] cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitStateError {
    /// The capacity must give every shard at least one entry and may not exceed the process-wide maximum.
    #[error("max tracked clients must be between {min} and {max}, got {0}", min = SHARD_COUNT, max = MAX_TRACKED_CLIENTS)]
    MaxTrackedClients(usize),
}

/// The validated per-client limits of one policy owner (an Ingress). `None` means the limit is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientLimits {
    connections: Option<u32>,
    rps: Option<u32>,
    rpm: Option<u32>,
    burst_multiplier: u32,
}

impl ClientLimits {
    /// No limit at all: [`LimitState::admit`] admits without tracking anything.
    pub const UNLIMITED: ClientLimits = ClientLimits {
        connections: None,
        rps: None,
        rpm: None,
        burst_multiplier: DEFAULT_BURST_MULTIPLIER,
    };

    /// Builds limits from already typed values. `Some(0)` is rejected rather than read as "off" so that one
    /// state has one spelling; [`ClientLimits::from_annotation_values`] applies ingress-nginx's "0 is off".
    pub fn new(
        connections: Option<u32>,
        rps: Option<u32>,
        rpm: Option<u32>,
        burst_multiplier: u32,
    ) -> Result<Self, ClientLimitsError> {
        if let Some(n) = connections.filter(|n| !(1..=MAX_CONNECTIONS_PER_CLIENT).contains(n)) {
            return Err(ClientLimitsError::Connections(n.into()));
        }
        if let Some(r) = rps.filter(|r| !(1..=MAX_RPS).contains(r)) {
            return Err(ClientLimitsError::Rps(r.into()));
        }
        if let Some(m) = rpm.filter(|m| !(1..=MAX_RPM).contains(m)) {
            return Err(ClientLimitsError::Rpm(m.into()));
        }
        if !(1..=MAX_BURST_MULTIPLIER).contains(&burst_multiplier) {
            return Err(ClientLimitsError::BurstMultiplier(burst_multiplier.into()));
        }
        Ok(ClientLimits {
            connections,
            rps,
            rpm,
            burst_multiplier,
        })
    }

    /// Builds limits with ingress-nginx's reading of the annotation integers: an absent, zero or negative
    /// `limit-connections` / `limit-rps` / `limit-rpm` is off (ingress-nginx emits a directive only for
    /// `Limit > 0`); an absent multiplier is [`DEFAULT_BURST_MULTIPLIER`]. The multiplier only feeds the
    /// `limit_req` bursts, so it is ignored (and not validated) when neither rate is on, as in ingress-nginx;
    /// with a rate on, a multiplier `<= 0` is an error because nginx rejects the resulting `burst=`.
    /// (A multiplier that is not an integer at all falls back to the default in ingress-nginx; that is the
    /// annotation parser's business.)
    pub fn from_annotation_values(
        connections: Option<i64>,
        rps: Option<i64>,
        rpm: Option<i64>,
        burst_multiplier: Option<i64>,
    ) -> Result<Self, ClientLimitsError> {
        fn enabled(value: Option<i64>, error: fn(i64) -> ClientLimitsError) -> Result<Option<u32>, ClientLimitsError> {
            match value {
                None => Ok(None),
                Some(v) if v <= 0 => Ok(None),
                Some(v) => u32::try_from(v).map(Some).map_err(|_| error(v)),
            }
        }
        let connections = enabled(connections, ClientLimitsError::Connections)?;
        let rps = enabled(rps, ClientLimitsError::Rps)?;
        let rpm = enabled(rpm, ClientLimitsError::Rpm)?;
        let burst_multiplier = match burst_multiplier {
            Some(m) if rps.is_some() || rpm.is_some() => {
                u32::try_from(m).map_err(|_| ClientLimitsError::BurstMultiplier(m))?
            }
            _ => DEFAULT_BURST_MULTIPLIER,
        };
        ClientLimits::new(connections, rps, rpm, burst_multiplier)
    }

    /// `limit-connections`: concurrent requests (open streams) per client.
    pub fn connections(&self) -> Option<u32> {
        self.connections
    }

    /// `limit-rps`: requests per second per client.
    pub fn rps(&self) -> Option<u32> {
        self.rps
    }

    /// `limit-rpm`: requests per minute per client.
    pub fn rpm(&self) -> Option<u32> {
        self.rpm
    }

    /// `limit-burst-multiplier`.
    pub fn burst_multiplier(&self) -> u32 {
        self.burst_multiplier
    }

    /// The `burst=` of the rps `limit_req`: `rps * multiplier` requests admitted at once beyond the rate.
    pub fn rps_burst(&self) -> Option<u64> {
        self.rps.map(|r| u64::from(r) * u64::from(self.burst_multiplier))
    }

    /// The `burst=` of the rpm `limit_req`: `rpm * multiplier`.
    pub fn rpm_burst(&self) -> Option<u64> {
        self.rpm.map(|m| u64::from(m) * u64::from(self.burst_multiplier))
    }

    /// True when no limit is on, so there is nothing to track.
    pub fn is_unlimited(&self) -> bool {
        self.connections.is_none() && self.rps.is_none() && self.rpm.is_none()
    }

    fn rps_params(&self) -> Option<RateParams> {
        self.rps.map(|r| RateParams {
            milli_per_sec: u64::from(r) * MILLI_REQUESTS_PER_REQUEST,
            burst_milli: u64::from(r) * u64::from(self.burst_multiplier) * MILLI_REQUESTS_PER_REQUEST,
        })
    }

    fn rpm_params(&self) -> Option<RateParams> {
        self.rpm.map(|m| RateParams {
            // nginx: `ctx->rate = rate * 1000 / scale` with scale 60, integer division.
            milli_per_sec: u64::from(m) * MILLI_REQUESTS_PER_REQUEST / 60,
            burst_milli: u64::from(m) * u64::from(self.burst_multiplier) * MILLI_REQUESTS_PER_REQUEST,
        })
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Which {
    /// The client already has `limit-connections` requests in progress.
    Connections,
    /// The `limit-rps` bucket is over its burst.
    Rps,
    /// The `limit-rpm` bucket is over its burst.
    Rpm,
    /// The client is new and the table of tracked clients is full of clients that cannot be forgotten yet.
    Capacity,
}

impl Which {
    /// A stable lowercase name, e.g. for a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Which::Connections => "connections",
            Which::Rps => "rps",
            Which::Rpm => "rpm",
            Which::Capacity => "capacity",
        }
    }
}

impl fmt::Display for Which {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request: answer [`REFUSAL_STATUS_CODE`] with `Retry-After: retry_after_secs()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// How long until the same request would be admitted, in whole milliseconds, if nothing else happens
    /// (for rate refusals exact; otherwise [`UNPREDICTABLE_RETRY_AFTER`]).
    pub retry_after: Duration,
    /// The limit that refused; with both rates over, `Rps` (nginx checks rps first).
    pub which: Which,
}

impl Refused {
    /// The `Retry-After` header value: `retry_after` in seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after
            .as_millis()
            .div_ceil(1000)
            .clamp(1, u128::from(u64::MAX)) as u64
    }
}

/// An admitted request. When the zone has `limit-connections`, the permit holds one of the client's connection
/// slots until it is dropped, so keep it alive exactly as long as the request (for an event stream, until the
/// stream ends). It owns what it needs (`Send + 'static`) and may be dropped on any thread.
#[must_use = "dropping the Permit at once releases the connection slot at once"]
#[derive(Debug)]
pub struct Permit {
    slot: Option<ConnectionSlot>,
}

impl Permit {
    /// A permit that holds nothing, for requests that bypass the limits (allowlisted clients, unlimited zones).
    pub fn unlimited() -> Self {
        Permit { slot: None }
    }

    /// True when dropping this permit frees a connection slot.
    pub fn holds_connection_slot(&self) -> bool {
        self.slot.is_some()
    }
}

/// One counted connection of one client; released on drop.
struct ConnectionSlot {
    shard: Arc<Shard>,
    key: ClientKey,
}

impl fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionSlot")
            .field("zone", &self.key.0)
            .field("client", &self.key.1)
            .finish()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.shard.release(&self.key);
    }
}

/// The process-wide state behind every zone's per-client limits. Create one at start-up and share it (it is
/// `Sync`); it outlives routing-table rebuilds.
pub struct LimitState {
    /// Time zero of the millisecond clock; every `now` is measured from it.
    origin: Instant,
    /// Picks the shard; keyed randomly per process so clients cannot choose their shard.
    shard_hasher: RandomState,
    shards: Box<[Arc<Shard>]>,
    max_tracked_clients: usize,
}

impl fmt::Debug for LimitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitState")
            .field("tracked_clients", &self.tracked_clients())
            .field("max_tracked_clients", &self.max_tracked_clients)
            .finish()
    }
}

impl LimitState {
    /// A state for up to [`MAX_TRACKED_CLIENTS`] clients. `origin` is the time zero of its millisecond clock:
    /// any `Instant` at or before the first `now` passed to [`LimitState::admit`] (e.g. the process start).
    pub fn new(origin: Instant) -> Self {
        Self::build(origin, MAX_TRACKED_CLIENTS)
    }

    /// A state for fewer clients (between [`SHARD_COUNT`] and [`MAX_TRACKED_CLIENTS`]), e.g. for tests or small
    /// deployments.
    pub fn with_max_tracked_clients(origin: Instant, max_tracked_clients: usize) -> Result<Self, LimitStateError> {
        if !(SHARD_COUNT..=MAX_TRACKED_CLIENTS).contains(&max_tracked_clients) {
            return Err(LimitStateError::MaxTrackedClients(max_tracked_clients));
        }
        Ok(Self::build(origin, max_tracked_clients))
    }

    fn build(origin: Instant, max_tracked_clients: usize) -> Self {
        let base = max_tracked_clients / SHARD_COUNT;
        let remainder = max_tracked_clients % SHARD_COUNT;
        let shards = (0..SHARD_COUNT)
            .map(|i| Arc::new(Shard::new(base + usize::from(i < remainder))))
            .collect();
        LimitState {
            origin,
            shard_hasher: RandomState::new(),
            shards,
            max_tracked_clients,
        }
    }

    /// Decides one request of `client` under the limits of `zone`, at `now`, and records it.
    ///
    /// Rates are checked first and charged only when every rate admits; then the connection count (a request
    /// refused for connections stays charged to the rates, as in nginx). Not for allowlisted clients: skip the
    /// call (or use [`Permit::unlimited`]). With [`ClientLimits::UNLIMITED`] nothing is tracked.
    pub fn admit(
        &self,
        zone: &Arc<str>,
        limits: &ClientLimits,
        client: IpAddr,
        now: Instant,
    ) -> Result<Permit, Refused> {
        if limits.is_unlimited() {
            return Ok(Permit::unlimited());
        }
        let key: ClientKey = (Arc::clone(zone), client.to_canonical());
        let shard = &self.shards[self.shard_index(&key)];
        let now_ms = self.millis_since_origin(now);
        let holds_slot = shard.admit(&key, limits, now_ms)?;
        Ok(Permit {
            slot: holds_slot.then(|| ConnectionSlot {
                shard: Arc::clone(shard),
                key,
            }),
        })
    }

    /// How many (zone, client) entries are held now: clients with charged buckets or open connections, plus
    /// removable ones not swept yet. At most [`LimitState::max_tracked_clients`].
    pub fn tracked_clients(&self) -> usize {
        self.shards.iter().map(|shard| shard.len.load(Ordering::Relaxed)).sum()
    }

    /// The capacity this state was built with.
    pub fn max_tracked_clients(&self) -> usize {
        self.max_tracked_clients
    }

    fn shard_index(&self, key: &ClientKey) -> usize {
        (self.shard_hasher.hash_one(key) % SHARD_COUNT as u64) as usize
    }

    /// Whole milliseconds since the origin, like nginx's `ngx_current_msec`; an `Instant` before the origin
    /// counts as the origin.
    fn millis_since_origin(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }
}

/// (zone, canonical client address).
type ClientKey = (Arc<str>, IpAddr);

/// nginx's `limit_req` zone parameters, in nginx's units.
#[derive(Debug, Clone, Copy)]
struct RateParams {
    /// Thousandths of a request drained per second (`ctx->rate`); at least 16.
    milli_per_sec: u64,
    /// Largest excess admitted, in thousandths of a request (`limit->burst`).
    burst_milli: u64,
}

/// nginx's `ngx_http_limit_req_node_t` minus the key: the excess over the rate and when it was last charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RateBucket {
    /// Thousandths of a request above the rate, as of `last_ms`.
    excess_milli: u64,
    /// Milliseconds since the origin of the last admitted request that moved the clock.
    last_ms: u64,
}

/// The outcome of one bucket for one request; nothing is stored until every limit has admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RateDecision {
    Admit(RateBucket),
    Refuse { wait_ms: u64 },
}

/// Thousandths of a request drained in `ms` milliseconds: nginx's `ctx->rate * ms / 1000`, truncated.
fn drained(params: RateParams, ms: u64) -> u128 {
    u128::from(params.milli_per_sec) * u128::from(ms) / 1000
}

/// Milliseconds after `last` from which `drained >= milli`: `ceil(milli * 1000 / rate)`.
fn millis_to_drain(params: RateParams, milli: u64) -> u64 {
    let ms = (u128::from(milli) * 1000).div_ceil(u128::from(params.milli_per_sec));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// One request against one bucket at `now_ms`: nginx's `ngx_http_limit_req_lookup` arithmetic.
fn decide_rate(bucket: Option<RateBucket>, params: RateParams, now_ms: u64) -> RateDecision {
    let Some(bucket) = bucket else {
        // A client nginx has no node for starts at excess 0 and is admitted whatever the burst.
        return RateDecision::Admit(RateBucket {
            excess_milli: 0,
            last_ms: now_ms,
        });
    };
    // A `now` older than `last` (another thread got the lock first with a later clock reading) drains nothing.
    let elapsed_ms = now_ms.saturating_sub(bucket.last_ms);
    let charged = u128::from(bucket.excess_milli) + u128::from(MILLI_REQUESTS_PER_REQUEST);
    let excess = charged.saturating_sub(drained(params, elapsed_ms));
    if excess > u128::from(params.burst_milli) {
        // `excess > burst >= 0` implies `charged > burst`: admitted once `drained >= charged - burst`.
        let needed = u64::try_from(charged - u128::from(params.burst_milli)).unwrap_or(u64::MAX);
        let wait_ms = millis_to_drain(params, needed).saturating_sub(elapsed_ms);
        return RateDecision::Refuse { wait_ms };
    }
    RateDecision::Admit(RateBucket {
        // `excess <= burst_milli`, a u64.
        excess_milli: excess as u64,
        last_ms: if elapsed_ms > 0 { now_ms } else { bucket.last_ms },
    })
}

/// From when on the next request finds `excess' = 0`, i.e. the bucket is as good as absent.
fn full_again_at(bucket: Option<RateBucket>, params: Option<RateParams>) -> u64 {
    match (bucket, params) {
        (Some(bucket), Some(params)) => bucket.last_ms.saturating_add(millis_to_drain(
            params,
            bucket.excess_milli.saturating_add(MILLI_REQUESTS_PER_REQUEST),
        )),
        _ => 0,
    }
}

/// Everything known about one client in one zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClientEntry {
    rps: Option<RateBucket>,
    rpm: Option<RateBucket>,
    /// Permits holding a connection slot.
    connections: u32,
    /// Milliseconds since the origin from which, with no connection held, the entry can be dropped; computed
    /// with the rates of the last request.
    removable_at_ms: u64,
}

/// One lock's worth of the table.
struct Shard {
    /// This shard's share of the maximum.
    capacity: usize,
    /// Mirror of `entries.len()`, so [`LimitState::tracked_clients`] takes no lock.
    len: AtomicUsize,
    inner: Mutex<ShardInner>,
}

struct ShardInner {
    entries: HashMap<ClientKey, ClientEntry>,
    /// The latest `now` seen by this shard: the time a connection release may use to judge removability.
    latest_ms: u64,
    /// Lower bound of `removable_at_ms` over entries without connections (`u64::MAX`: none), so that sweeps run
    /// only when they can remove something.
    next_removable_ms: u64,
    /// New entries since the last sweep.
    inserts_since_sweep: u32,
}

impl Shard {
    fn new(capacity: usize) -> Self {
        Shard {
            capacity,
            len: AtomicUsize::new(0),
            inner: Mutex::new(ShardInner {
                entries: HashMap::new(),
                latest_ms: 0,
                next_removable_ms: u64::MAX,
                inserts_since_sweep: 0,
            }),
        }
    }

    /// The shard's lock. Nothing panics while it is held, but if something ever did, the table is still
    /// consistent entry by entry, so carry on rather than take every later request down.
    fn lock(&self) -> MutexGuard<'_, ShardInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits or refuses under this shard's lock; `Ok(true)` when a connection slot was taken.
    fn admit(&self, key: &ClientKey, limits: &ClientLimits, now_ms: u64) -> Result<bool, Refused> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.latest_ms = inner.latest_ms.max(now_ms);
        let rps = limits.rps_params();
        let rpm = limits.rpm_params();

        // Set when the entry ends up without connections: it becomes a candidate for the next sweep.
        let removable_at_ms: Option<u64>;
        let result = match inner.entries.get_mut(key) {
            Some(entry) => {
                let result = admit_existing(entry, limits, rps, rpm, now_ms);
                removable_at_ms = (entry.connections == 0).then_some(entry.removable_at_ms);
                result
            }
            None => {
                let due = inner.latest_ms >= inner.next_removable_ms;
                if due && (inner.entries.len() >= self.capacity || inner.inserts_since_sweep >= SWEEP_INTERVAL_INSERTS)
                {
                    inner.sweep();
                }
                if inner.entries.len() >= self.capacity {
                    return Err(Refused {
                        retry_after: UNPREDICTABLE_RETRY_AFTER,
                        which: Which::Capacity,
                    });
                }
                inner.inserts_since_sweep = inner.inserts_since_sweep.saturating_add(1);
                let mut entry = ClientEntry {
                    rps: None,
                    rpm: None,
                    connections: 0,
                    removable_at_ms: 0,
                };
                let result = admit_existing(&mut entry, limits, rps, rpm, now_ms);
                // A client never seen passes every bucket and has no connection yet.
                debug_assert_eq!(
                    result.map_err(|refused| refused.which),
                    Ok(limits.connections.is_some())
                );
                removable_at_ms = (entry.connections == 0).then_some(entry.removable_at_ms);
                inner.entries.insert(key.clone(), entry);
                result
            }
        };
        if let Some(at) = removable_at_ms {
            inner.next_removable_ms = inner.next_removable_ms.min(at);
        }
        self.len.store(inner.entries.len(), Ordering::Relaxed);
        result
    }

    /// Gives back one connection slot of `key`, dropping the entry when nothing is left to remember.
    fn release(&self, key: &ClientKey) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(entry) = inner.entries.get_mut(key) else {
            debug_assert!(false, "an entry holding connections is never removed");
            return;
        };
        debug_assert!(entry.connections > 0);
        entry.connections = entry.connections.saturating_sub(1);
        if entry.connections == 0 {
            if entry.removable_at_ms <= inner.latest_ms {
                inner.entries.remove(key);
                self.len.store(inner.entries.len(), Ordering::Relaxed);
            } else {
                inner.next_removable_ms = inner.next_removable_ms.min(entry.removable_at_ms);
            }
        }
    }
}

impl ShardInner {
    /// Drops every removable entry (at most the shard's capacity is visited) and recomputes the lower bound.
    fn sweep(&mut self) {
        let now_ms = self.latest_ms;
        let mut next_removable_ms = u64::MAX;
        self.entries.retain(|_, entry| {
            if entry.connections > 0 {
                return true;
            }
            if entry.removable_at_ms <= now_ms {
                return false;
            }
            next_removable_ms = next_removable_ms.min(entry.removable_at_ms);
            true
        });
        self.next_removable_ms = next_removable_ms;
        self.inserts_since_sweep = 0;
    }
}

/// The decision for a client with an entry (a new client gets an empty one first): both rates, then the
/// connection count; `Ok(true)` when a connection slot was taken.
fn admit_existing(
    entry: &mut ClientEntry,
    limits: &ClientLimits,
    rps: Option<RateParams>,
    rpm: Option<RateParams>,
    now_ms: u64,
) -> Result<bool, Refused> {
    let rps_decision = rps.map(|params| decide_rate(entry.rps, params, now_ms));
    let rpm_decision = rpm.map(|params| decide_rate(entry.rpm, params, now_ms));

    let mut refused: Option<Refused> = None;
    for (decision, which) in [(rps_decision, Which::Rps), (rpm_decision, Which::Rpm)] {
        if let Some(RateDecision::Refuse { wait_ms }) = decision {
            let wait = Duration::from_millis(wait_ms);
            // The first refusing zone names the refusal; the request needs every bucket, so wait for the slowest.
            let refusal = refused.get_or_insert(Refused {
                retry_after: wait,
                which,
            });
            refusal.retry_after = refusal.retry_after.max(wait);
        }
    }
    if let Some(refusal) = refused {
        return Err(refusal);
    }

    let admitted = |decision: Option<RateDecision>| match decision {
        Some(RateDecision::Admit(bucket)) => Some(bucket),
        _ => None,
    };
    // A rate that is off forgets its bucket, as nginx drops a zone no location uses any more.
    entry.rps = admitted(rps_decision);
    entry.rpm = admitted(rpm_decision);
    entry.removable_at_ms = full_again_at(entry.rps, rps).max(full_again_at(entry.rpm, rpm));

    match limits.connections {
        None => Ok(false),
        Some(max) if entry.connections >= max => Err(Refused {
            retry_after: UNPREDICTABLE_RETRY_AFTER,
            which: Which::Connections,
        }),
        Some(_) => {
            entry.connections += 1;
            Ok(true)
        }
    }
}

#[cfg(test)]
#[path = "client_limits_tests.rs"]
mod tests;
