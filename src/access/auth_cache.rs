//! The external-auth answer cache: ingress-nginx's `auth-cache-key` and
//! `auth-cache-duration`, and a bounded in-memory cache with single flight.
//!
//! ingress-nginx caches the auth service's answers in nginx's proxy cache,
//! keyed by the server name, the location and the evaluated
//! `auth-cache-key`, for the time `auth-cache-duration` gives the status
//! (`proxy_cache_valid`, default `200 202 401 5m`). Here:
//! - [`CacheKeyTemplate`] parses the key expression, refusing variables
//!   ssegate cannot evaluate: an unevaluable key would hand one user's
//!   answer to another. The evaluated key is hashed (SHA-256) with each
//!   variable's value length-prefixed, so `$http_a$http_b` cannot collide
//!   for `a=x, b=yz` and `a=xy, b=z` (nginx's plain concatenation can), and
//!   a request for which every variable is empty or absent gets no key at
//!   all: it goes to the auth service instead of sharing one answer among
//!   every anonymous client.
//! - [`CacheDurations`] is `proxy_cache_valid`, plus nginx's rules about the
//!   answer's own headers (a `Set-Cookie` is never cached, `Cache-Control:
//!   no-store` is obeyed, ...), conservative where nginx needs a wall clock.
//! - [`AuthCache`] holds answers per (zone, key), the zone naming the policy
//!   owner (ingress-nginx's server name and location). Sharded locks; each
//!   shard a CLOCK (second chance) approximation of LRU. Its
//!   [`AuthCache::lookup`] is single flight: concurrent misses for one key
//!   send one subrequest and the others wait for its answer, which nginx
//!   does not do (ingress-nginx leaves `proxy_cache_lock` off), and which an
//!   EventSource reconnect storm after a deploy needs.
//!
//! Time is passed in; nothing here reads a clock or needs a runtime
//! (waiting uses `tokio::sync::watch`, which works on any executor).

use super::nginx_vars::{ClientRequestFacts, NginxTemplate, Part, TemplateError};
use http::HeaderMap;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The longest `auth-cache-key`. Real keys name two or three variables
/// (`$remote_user$http_authorization` is 32 bytes).
pub const MAX_CACHE_KEY_LEN: usize = 256;

/// The longest `auth-cache-duration`. Real values are one or two entries
/// (`200 202 401 5m` is 14 bytes).
pub const MAX_CACHE_DURATION_LEN: usize = 512;

/// The most comma-separated entries in `auth-cache-duration`: a distinct
/// time for every status class fits in a handful.
pub const MAX_DURATION_ENTRIES: usize = 16;

/// The most status codes in one entry.
pub const MAX_STATUSES_PER_ENTRY: usize = 16;

/// The longest time an answer may be cached, from the annotation or from
/// the answer's own headers: a year and a day, so `1y` (nginx's largest
/// unit) is accepted, and `Instant` arithmetic never overflows.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// How many answers the cache holds at most, over all zones. Each entry is
/// a few hundred bytes (a hash, a zone pointer, a status and the few
/// headers that matter), so this is a few MiB at worst, and covers sixteen
/// thousand distinct users (or tokens) within one cache period per ssegate
/// instance; past it the least recently used answers are dropped, which
/// costs a subrequest, never a wrong answer.
pub const AUTH_CACHE_MAX_ENTRIES: usize = 16_384;

/// How many independently locked shards the cache has: enough that
/// concurrent requests rarely wait on one lock, few enough that each shard
/// is a useful LRU on its own.
pub const AUTH_CACHE_SHARDS: usize = 16;

/// ingress-nginx's default `auth-cache-duration`.
pub const DEFAULT_CACHE_DURATION: &str = "200 202 401 5m";

/// Why `auth-cache-key` or `auth-cache-duration` is refused. Values are
/// quoted only as the short words of a duration, never from a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheConfigError {
    #[error("the cache key is empty")]
    KeyEmpty,
    #[error("the cache key is longer than {max} bytes")]
    KeyTooLong { max: usize },
    #[error("the cache key: {0}")]
    KeyTemplate(#[from] TemplateError),
    #[error("the cache key has no variable, so every user would get the same cached answer")]
    KeyWithoutVariables,
    #[error("the cache duration is longer than {max} bytes")]
    DurationTooLong { max: usize },
    #[error("the cache duration has more than {max} comma-separated entries")]
    TooManyEntries { max: usize },
    #[error("cache duration entry {entry}: {word:?} is not a status code (100 to 599, three digits) or `any`")]
    BadStatus { entry: usize, word: String },
    #[error("cache duration entry {entry}: more than {max} status codes")]
    TooManyStatuses { entry: usize, max: usize },
    #[error("cache duration entry {entry}: {word:?} is not a time: use a number and one unit of s, m, h, d, w, M or y, such as 5m")]
    BadTime { entry: usize, word: String },
    #[error("cache duration entry {entry} has no time after its status codes: add one, such as 5m")]
    NoTime { entry: usize },
    #[error("cache duration entry {entry}: milliseconds are not allowed (nginx's proxy_cache_valid counts seconds)")]
    Milliseconds { entry: usize },
    #[error("cache duration entry {entry}: one time per entry, after the status codes (nginx reads only the last word as the time)")]
    TimeNotLast { entry: usize },
    #[error("cache duration entry {entry}: longer than the {max_days} days an answer may be cached")]
    TimeTooLong { entry: usize, max_days: u64 },
}

/// A validated `auth-cache-key` with its `auth-cache-duration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    key: CacheKeyTemplate,
    durations: CacheDurations,
}

impl CacheConfig {
    /// From the key expression and the duration text (`None` or blank for
    /// ingress-nginx's default).
    pub fn new(key: &str, duration: Option<&str>) -> Result<CacheConfig, CacheConfigError> {
        Ok(CacheConfig {
            key: CacheKeyTemplate::parse(key)?,
            durations: match duration {
                Some(text) => CacheDurations::parse(text)?,
                None => CacheDurations::default(),
            },
        })
    }

    pub fn from_parts(key: CacheKeyTemplate, durations: CacheDurations) -> CacheConfig {
        CacheConfig { key, durations }
    }

    pub fn key(&self) -> &CacheKeyTemplate {
        &self.key
    }

    pub fn durations(&self) -> &CacheDurations {
        &self.durations
    }

    /// How long to cache this answer; see [`CacheDurations::ttl`].
    pub fn ttl(&self, status: u16, headers: &HeaderMap) -> Option<Duration> {
        self.durations.ttl(status, headers)
    }
}

/// A parsed `auth-cache-key`: literal text (letters, digits, `-`, `_`,
/// space, as ingress-nginx's validation allows) and at least one variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKeyTemplate {
    template: NginxTemplate,
}

/// An evaluated cache key: the SHA-256 of the key's parts, so that entries
/// are small and hold no token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKeyTemplate {
    pub fn parse(text: &str) -> Result<CacheKeyTemplate, CacheConfigError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(CacheConfigError::KeyEmpty);
        }
        if text.len() > MAX_CACHE_KEY_LEN {
            return Err(CacheConfigError::KeyTooLong { max: MAX_CACHE_KEY_LEN });
        }
        let template = NginxTemplate::parse(text, |b| {
            b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b' '
        })?;
        if !template.has_variables() {
            return Err(CacheConfigError::KeyWithoutVariables);
        }
        Ok(CacheKeyTemplate { template })
    }

    pub fn template(&self) -> &NginxTemplate {
        &self.template
    }

    /// The key for this request, or `None` when every variable is empty or
    /// absent (then the request must not use the cache).
    pub fn evaluate(&self, facts: &ClientRequestFacts<'_>) -> Option<CacheKey> {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        let mut any_value = false;
        for part in self.template.parts() {
            match part {
                Part::Literal(text) => {
                    hash.update(b"L");
                    hash.update((text.len() as u64).to_be_bytes());
                    hash.update(text.as_bytes());
                }
                Part::Variable(variable) => match variable.value(facts) {
                    None => hash.update(b"N"),
                    Some(value) => {
                        any_value |= !value.is_empty();
                        hash.update(b"V");
                        hash.update((value.len() as u64).to_be_bytes());
                        hash.update(&*value);
                    }
                },
            }
        }
        if !any_value {
            return None;
        }
        let mut key = [0; 32];
        key.copy_from_slice(hash.finalize().as_slice());
        Some(CacheKey(key))
    }
}

/// Which statuses a duration entry covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    Code(u16),
    /// nginx's `any`.
    Any,
}

/// A parsed `auth-cache-duration`: nginx's `proxy_cache_valid` entries in
/// order, the first that covers a status giving its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDurations {
    entries: Vec<(StatusMatch, Duration)>,
}

impl Default for CacheDurations {
    fn default() -> Self {
        CacheDurations {
            entries: [200, 202, 401]
                .into_iter()
                .map(|code| (StatusMatch::Code(code), Duration::from_secs(300)))
                .collect(),
        }
    }
}

impl CacheDurations {
    /// Parses ingress-nginx's format: comma-separated entries (blank ones
    /// skipped; all blank means the default), each `[code ...|any] time`
    /// as nginx's `proxy_cache_valid` (no codes means 200, 301 and 302),
    /// the time one number and one unit of `s m h d w M y` (30-day months,
    /// 365-day years). Stricter than ingress-nginx's check where nginx
    /// would have refused the configuration (`1h 30m`, `500ms`, status
    /// 999).
    pub fn parse(text: &str) -> Result<CacheDurations, CacheConfigError> {
        if text.len() > MAX_CACHE_DURATION_LEN {
            return Err(CacheConfigError::DurationTooLong {
                max: MAX_CACHE_DURATION_LEN,
            });
        }
        let mut entries = Vec::new();
        let mut count = 0;
        for entry_text in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            count += 1;
            if count > MAX_DURATION_ENTRIES {
                return Err(CacheConfigError::TooManyEntries {
                    max: MAX_DURATION_ENTRIES,
                });
            }
            let entry = count;
            let words: Vec<&str> = entry_text.split_ascii_whitespace().collect();
            let (time_word, status_words) = words.split_last().expect("a non-blank entry has a word");
            let time = parse_time(entry, time_word).map_err(|error| {
                if status_words.iter().any(|w| parse_time(entry, w).is_ok()) {
                    CacheConfigError::TimeNotLast { entry }
                } else if parse_status(time_word).is_some() {
                    CacheConfigError::NoTime { entry }
                } else {
                    error
                }
            })?;
            if status_words.len() > MAX_STATUSES_PER_ENTRY {
                return Err(CacheConfigError::TooManyStatuses {
                    entry,
                    max: MAX_STATUSES_PER_ENTRY,
                });
            }
            if status_words.is_empty() {
                for code in [200, 301, 302] {
                    entries.push((StatusMatch::Code(code), time));
                }
            }
            for word in status_words {
                let status = parse_status(word).ok_or_else(|| {
                    if parse_time(entry, word).is_ok() {
                        CacheConfigError::TimeNotLast { entry }
                    } else {
                        CacheConfigError::BadStatus {
                            entry,
                            word: shorten(word),
                        }
                    }
                })?;
                entries.push((status, time));
            }
        }
        if entries.is_empty() {
            return Ok(CacheDurations::default());
        }
        Ok(CacheDurations { entries })
    }

    /// The (status, time) pairs in the order nginx tries them.
    pub fn entries(&self) -> &[(StatusMatch, Duration)] {
        &self.entries
    }

    /// The time the table gives this status (nginx's first match), or zero.
    pub fn for_status(&self, status: u16) -> Duration {
        self.entries
            .iter()
            .find(|(m, _)| match m {
                StatusMatch::Any => true,
                StatusMatch::Code(code) => *code == status,
            })
            .map_or(Duration::ZERO, |&(_, time)| time)
    }

    /// How long to cache an answer, or `None` not to cache it: only a
    /// status with a non-zero time in the table is cached, and then nginx's
    /// rules for the answer's headers apply:
    /// - `Set-Cookie`: not cached (nginx never caches one; it would be
    ///   replayed to whoever shares the key);
    /// - `Vary`: not cached (nginx stores variants; this cache does not);
    /// - `X-Accel-Expires: N` (the first line): N seconds, `0` not cached,
    ///   `@<epoch>` not cached (that needs a wall clock);
    /// - `Cache-Control`: `no-cache`, `no-store` or `private` anywhere: not
    ///   cached; `s-maxage=N`, else `max-age=N`: N seconds, 0 or unreadable
    ///   not cached;
    /// - `Expires` without one of the above: not cached (that needs a wall
    ///   clock);
    /// - otherwise the table's time.
    ///
    /// Always capped at [`MAX_CACHE_TTL`].
    pub fn ttl(&self, status: u16, headers: &HeaderMap) -> Option<Duration> {
        let table = self.for_status(status);
        if table.is_zero() || headers.contains_key(http::header::SET_COOKIE) || headers.contains_key(http::header::VARY)
        {
            return None;
        }
        if let Some(value) = headers.get("x-accel-expires") {
            let value = value.as_bytes();
            if value.first() == Some(&b'@') {
                return None;
            }
            if let Some(seconds) = parse_seconds(value) {
                return (seconds > 0).then(|| Duration::from_secs(seconds).min(MAX_CACHE_TTL));
            }
        }
        let mut from_cache_control = None;
        for line in headers.get_all(http::header::CACHE_CONTROL) {
            let lower = line.as_bytes().to_ascii_lowercase();
            if [&b"no-cache"[..], b"no-store", b"private"]
                .iter()
                .any(|word| contains(&lower, word))
            {
                return None;
            }
            let age = find_after(&lower, b"s-maxage=").or_else(|| find_after(&lower, b"max-age="));
            if let Some(rest) = age {
                let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                match parse_seconds(&rest[..digits]) {
                    Some(seconds) if seconds > 0 => {
                        from_cache_control = Some(Duration::from_secs(seconds).min(MAX_CACHE_TTL))
                    }
                    _ => return None,
                }
            }
        }
        if from_cache_control.is_some() {
            return from_cache_control;
        }
        if headers.contains_key(http::header::EXPIRES) {
            return None;
        }
        Some(table.min(MAX_CACHE_TTL))
    }
}

fn parse_status(word: &str) -> Option<StatusMatch> {
    if word == "any" {
        return Some(StatusMatch::Any);
    }
    if word.len() != 3 || !word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code: u16 = word.parse().ok()?;
    (100..=599).contains(&code).then_some(StatusMatch::Code(code))
}

fn parse_time(entry: usize, word: &str) -> Result<Duration, CacheConfigError> {
    let bad = || CacheConfigError::BadTime {
        entry,
        word: shorten(word),
    };
    let digits = word.bytes().take_while(|b| b.is_ascii_digit()).count();
    let (number, unit) = word.split_at(digits);
    if number.is_empty() {
        return Err(bad());
    }
    let seconds_per_unit: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "M" => 30 * 86_400,
        "y" => 365 * 86_400,
        "ms" => return Err(CacheConfigError::Milliseconds { entry }),
        _ => return Err(bad()),
    };
    let too_long = || CacheConfigError::TimeTooLong {
        entry,
        max_days: MAX_CACHE_TTL.as_secs() / 86_400,
    };
    let number: u64 = number.parse().map_err(|_| too_long())?;
    let seconds = number.checked_mul(seconds_per_unit).ok_or_else(too_long)?;
    let time = Duration::from_secs(seconds);
    if time > MAX_CACHE_TTL {
        return Err(too_long());
    }
    Ok(time)
}

/// A word of a duration, short enough to quote in an error.
fn shorten(word: &str) -> String {
    word.chars().take(24).collect()
}

fn parse_seconds(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find_after(haystack, needle).is_some()
}

fn find_after<'h>(haystack: &'h [u8], needle: &[u8]) -> Option<&'h [u8]> {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|at| &haystack[at + needle.len()..])
}

/// What is kept of an auth answer: its status and the headers the decision
/// reads (the caller filters them; see `external_auth::cacheable_answer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAnswer {
    pub status: u16,
    pub headers: HeaderMap,
}

/// What a waiter learns when the subrequest it waited for is over.
#[derive(Debug, Clone)]
pub enum Shared {
    /// The leader's answer, now cached: use it.
    Answer(Arc<CachedAnswer>),
    /// The leader got an answer that must not be cached (nor shared): send
    /// your own subrequest, without the cache.
    NotShared,
    /// The leader failed or was cancelled without an answer: call
    /// [`AuthCache::lookup`] again (one of the waiters becomes the leader).
    Abandoned,
}

/// The outcome of [`AuthCache::lookup`].
#[derive(Debug)]
pub enum Lookup {
    /// A cached answer, not expired.
    Hit(Arc<CachedAnswer>),
    /// Another request is asking the auth service for this key: wait for
    /// it, within the caller's own timeout.
    Wait(Waiter),
    /// Ask the auth service, then [`LeadGuard::finish`]. Dropping the guard
    /// without finishing wakes the waiters with [`Shared::Abandoned`].
    Lead(LeadGuard),
}

type EntryKey = (Arc<str>, CacheKey);

#[derive(Debug)]
struct Slot {
    key: EntryKey,
    answer: Arc<CachedAnswer>,
    expires: Instant,
    /// CLOCK's second-chance bit: set on every hit, cleared as the hand
    /// passes.
    referenced: bool,
}

#[derive(Debug)]
struct InFlight {
    generation: u64,
    sender: watch::Sender<Option<Shared>>,
}

#[derive(Debug, Default)]
struct Shard {
    index: HashMap<EntryKey, usize>,
    slots: Vec<Slot>,
    hand: usize,
    in_flight: HashMap<EntryKey, InFlight>,
}

impl Shard {
    fn get(&mut self, key: &EntryKey, now: Instant) -> Option<Arc<CachedAnswer>> {
        let slot = &mut self.slots[*self.index.get(key)?];
        if now >= slot.expires {
            return None;
        }
        slot.referenced = true;
        Some(slot.answer.clone())
    }

    /// Stores an answer; when the shard is full the CLOCK hand evicts the
    /// first expired or unreferenced slot, clearing reference bits as it
    /// passes (so within two sweeps).
    fn insert(&mut self, key: EntryKey, answer: Arc<CachedAnswer>, expires: Instant, now: Instant, capacity: usize) {
        if let Some(&at) = self.index.get(&key) {
            let slot = &mut self.slots[at];
            slot.answer = answer;
            slot.expires = expires;
            slot.referenced = true;
            return;
        }
        let slot = Slot {
            key: key.clone(),
            answer,
            expires,
            referenced: false,
        };
        if self.slots.len() < capacity {
            self.index.insert(key, self.slots.len());
            self.slots.push(slot);
            return;
        }
        loop {
            let at = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            let victim = &mut self.slots[at];
            if victim.referenced && now < victim.expires {
                victim.referenced = false;
                continue;
            }
            self.index.remove(&victim.key);
            *victim = slot;
            self.index.insert(key, at);
            return;
        }
    }

    fn take_in_flight(&mut self, key: &EntryKey, generation: u64) -> Option<watch::Sender<Option<Shared>>> {
        match self.in_flight.get(key) {
            Some(flight) if flight.generation == generation => self.in_flight.remove(key).map(|f| f.sender),
            _ => None,
        }
    }
}

/// The bounded, sharded answer cache with single flight. Share it as an
/// `Arc` (lookup hands out guards that point back to it).
#[derive(Debug)]
pub struct AuthCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: RandomState,
    generation: AtomicU64,
}

impl Default for AuthCache {
    fn default() -> Self {
        AuthCache::with_capacity(AUTH_CACHE_MAX_ENTRIES)
    }
}

impl AuthCache {
    /// A cache of [`AUTH_CACHE_MAX_ENTRIES`].
    pub fn new() -> AuthCache {
        AuthCache::default()
    }

    /// A cache of at most `max_entries` (at least 1, at most
    /// [`AUTH_CACHE_MAX_ENTRIES`]), in up to [`AUTH_CACHE_SHARDS`] shards.
    pub fn with_capacity(max_entries: usize) -> AuthCache {
        let max_entries = max_entries.clamp(1, AUTH_CACHE_MAX_ENTRIES);
        let shards = AUTH_CACHE_SHARDS.min(max_entries);
        AuthCache::with_layout(shards, max_entries / shards)
    }

    fn with_layout(shards: usize, per_shard: usize) -> AuthCache {
        AuthCache {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            hasher: RandomState::new(),
            generation: AtomicU64::new(0),
        }
    }

    /// The most answers held.
    pub fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    /// The answers held (expired ones included until they are replaced).
    pub fn len(&self) -> usize {
        (0..self.shards.len()).map(|i| self.lock(i).slots.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard_of(&self, key: &EntryKey) -> usize {
        (self.hasher.hash_one(key) % self.shards.len() as u64) as usize
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding the lock cannot leave a shard half-updated
        // in a way that matters (each update is a few assignments), so a
        // poisoned lock is used as it is rather than failing every request.
        self.shards[shard].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached answer, if there is one and it has not expired at `now`.
    pub fn get(&self, zone: &Arc<str>, key: &CacheKey, now: Instant) -> Option<Arc<CachedAnswer>> {
        let key = (zone.clone(), *key);
        let shard = self.shard_of(&key);
        self.lock(shard).get(&key, now)
    }

    /// Caches an answer for `ttl` from `now` (capped at [`MAX_CACHE_TTL`];
    /// zero is not cached).
    pub fn put(&self, zone: Arc<str>, key: CacheKey, answer: Arc<CachedAnswer>, ttl: Duration, now: Instant) {
        let key = (zone, key);
        let shard = self.shard_of(&key);
        self.put_locked(&mut self.lock(shard), key, answer, ttl, now);
    }

    fn put_locked(&self, shard: &mut Shard, key: EntryKey, answer: Arc<CachedAnswer>, ttl: Duration, now: Instant) {
        if ttl.is_zero() {
            return;
        }
        if let Some(expires) = now.checked_add(ttl.min(MAX_CACHE_TTL)) {
            shard.insert(key, answer, expires, now, self.per_shard);
        }
    }

    /// A cached answer, or a place in the queue of requests waiting for the
    /// one subrequest in flight for this (zone, key), or the lead of that
    /// subrequest. Atomic per key: of any number of concurrent misses, one
    /// leads.
    pub fn lookup(self: &Arc<Self>, zone: &Arc<str>, key: CacheKey, now: Instant) -> Lookup {
        let key = (zone.clone(), key);
        let shard_index = self.shard_of(&key);
        let mut shard = self.lock(shard_index);
        if let Some(answer) = shard.get(&key, now) {
            return Lookup::Hit(answer);
        }
        if let Some(flight) = shard.in_flight.get(&key) {
            return Lookup::Wait(Waiter {
                receiver: flight.sender.subscribe(),
            });
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let (sender, _) = watch::channel(None);
        shard.in_flight.insert(key.clone(), InFlight { generation, sender });
        drop(shard);
        Lookup::Lead(LeadGuard {
            cache: self.clone(),
            key: Some(key),
            shard: shard_index,
            generation,
        })
    }
}

/// A request waiting for another's subrequest.
#[derive(Debug)]
pub struct Waiter {
    receiver: watch::Receiver<Option<Shared>>,
}

impl Waiter {
    /// Waits for the leader. Never returns on its own while the leader is
    /// working: bound it with the caller's timeout.
    pub async fn wait(mut self) -> Shared {
        loop {
            if let Some(shared) = self.receiver.borrow_and_update().clone() {
                return shared;
            }
            if self.receiver.changed().await.is_err() {
                return Shared::Abandoned;
            }
        }
    }
}

/// The right, and duty, to ask the auth service for a key.
#[derive(Debug)]
pub struct LeadGuard {
    cache: Arc<AuthCache>,
    /// `None` once finished.
    key: Option<EntryKey>,
    shard: usize,
    generation: u64,
}

impl LeadGuard {
    /// Publishes the auth service's answer: cached for `ttl` (from
    /// [`CacheConfig::ttl`]) and handed to the waiters, or, with `None`,
    /// not cached and the waiters told to ask on their own.
    pub fn finish(mut self, answer: CachedAnswer, ttl: Option<Duration>, now: Instant) {
        let Some(key) = self.key.take() else { return };
        let ttl = ttl.filter(|t| !t.is_zero());
        let answer = Arc::new(answer);
        let sender = {
            let mut shard = self.cache.lock(self.shard);
            let sender = shard.take_in_flight(&key, self.generation);
            if let Some(ttl) = ttl {
                self.cache.put_locked(&mut shard, key, answer.clone(), ttl, now);
            }
            sender
        };
        if let Some(sender) = sender {
            // No receivers is fine: nobody was waiting.
            let _ = sender.send(Some(match ttl {
                Some(_) => Shared::Answer(answer),
                None => Shared::NotShared,
            }));
        }
    }
}

impl Drop for LeadGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let sender = self.cache.lock(self.shard).take_in_flight(&key, self.generation);
            if let Some(sender) = sender {
                let _ = sender.send(Some(Shared::Abandoned));
            }
        }
    }
}

#[cfg(test)]
#[path = "auth_cache_tests.rs"]
mod tests;
