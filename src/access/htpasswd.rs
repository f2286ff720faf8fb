//! ingress-nginx basic authentication (`nginx.ingress.kubernetes.io/auth-type: basic`) as pure code.
//!
//! ingress-nginx copies the `auth-secret` Secret into a file and lets nginx's `auth_basic_user_file`
//! read it on every request (internal/ingress/annotations/auth/main.go):
//!
//! - `auth-secret-type: auth-file` (the default): the Secret key `auth` is written out verbatim, so
//!   it is an htpasswd file.
//! - `auth-secret-type: auth-map`: every Secret key becomes a line `key:value`, so each key is a user
//!   name and its value that user's hash.
//!
//! This module reads both forms into [`Credentials`], verifies passwords against the hash kinds nginx
//! accepts there (its own `{PLAIN}`, `{SHA}`, `{SSHA}` and `$apr1$`, plus what the C library's
//! `crypt()` does: bcrypt, MD5-crypt, SHA-256/512-crypt and traditional DES), parses the client's
//! `Authorization: Basic` value ([`parse_basic`]) and builds the 401 challenge ([`www_authenticate`]).
//!
//! Where nginx is lenient in ways that only ever hide mistakes, this module refuses the Secret instead
//! of guessing, so a broken Secret denies everyone rather than letting anyone in or silently locking
//! one user out: a hash it does not recognise, a user name with edge whitespace, a hash with stray
//! characters. nginx itself would keep such a line and never match it.
//!
//! Line rules, taken from nginx's `ngx_http_auth_basic_handler` and checked against nginx 1.22 with
//! curl (see `htpasswd_tests.rs`):
//! - a line is `user:hash` or `user:hash:anything` (nginx stops reading the hash at the second `:`);
//! - a `#` in the first column makes a comment line; blank lines are skipped; a line may end in CRLF;
//! - when a user appears twice the **first** line wins, because nginx scans the file top to bottom and
//!   stops at the first line whose name matches.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use base64::Engine as _;
use sha_crypt::PasswordVerifier as _;
use subtle::ConstantTimeEq as _;

/// Largest credentials input accepted, in bytes (the `auth` value, or all keys and values of an
/// `auth-map` Secret together). Kubernetes refuses Secrets over 1 MiB, so nothing larger can come
/// from a real Secret; anything larger is a bug or an attack on our memory.
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// Most distinct users one Secret may hold. An htpasswd file kept in a Secret holds a team, not a
/// user directory; past ten thousand entries an external auth service is the right tool, and the
/// bound keeps a `Credentials` value small enough to swap per Secret update.
pub const MAX_USERS: usize = 10_000;

/// Longest line (auth-file) or `key:value` pair (auth-map), in bytes, excluding the line break.
/// A user name, a SHA-512-crypt hash with `rounds=` and a comment field fit in well under half of it.
pub const MAX_LINE_LEN: usize = 1024;

/// Longest user name, in bytes, both in the Secret and in a client's `Authorization` header. Far
/// above any login name people type, small enough to bound per-request work.
pub const MAX_USER_LEN: usize = 256;

/// Longest hash field, in bytes. The longest crypt hash here (SHA-512-crypt with `rounds=`) is about
/// 125 bytes; the slack is for `{PLAIN}` passwords and `{SSHA}` salts.
pub const MAX_HASH_LEN: usize = 512;

/// Longest password accepted from a client, in bytes. SHA-crypt work grows with password length
/// times rounds, so an unbounded password is a CPU lever; 256 bytes is above what password
/// managers generate (bcrypt only ever reads the first 72).
pub const MAX_PASSWORD_LEN: usize = 256;

/// Longest `Authorization` header value [`parse_basic`] looks at, in bytes: `Basic `, then the base64
/// of the longest user, a colon and the longest password (684 bytes), with room for extra spaces.
pub const MAX_AUTHORIZATION_LEN: usize = 1024;

/// Highest bcrypt cost accepted. Each step doubles the work: cost 14 (what ingress-nginx's own e2e
/// tests use) is about a second of one core per verification; 15 and up turn every login, and every
/// wrong guess, into seconds of CPU. htpasswd's default is 5.
pub const MAX_BCRYPT_COST: u32 = 14;

/// Highest SHA-crypt `rounds=` accepted. The default is 5000; passlib's defaults (535000 for
/// SHA-256, 656000 for SHA-512) must still load. glibc would accept up to 999999999, which is minutes
/// of CPU per login attempt.
pub const MAX_SHA_CRYPT_ROUNDS: u32 = 1_000_000;

/// Most successful verifications remembered per [`Credentials`]. Every entry is 32 bytes (twice,
/// for the set and the eviction order), and the cache only needs to cover the distinct clients that
/// reconnect at once, e.g. an EventSource reconnect storm after a deploy.
pub const MAX_CACHED_SUCCESSES: usize = 1024;

/// Longest realm [`www_authenticate`] puts in the challenge, in characters. Browsers show the realm
/// in their login prompt; a few words is what it is for.
pub const MAX_REALM_LEN: usize = 256;

/// The realm when the Ingress has no `auth-realm` annotation. ingress-nginx then renders
/// `auth_basic ""` (the annotation parser returns an empty string and the template quotes it), so
/// nginx answers `WWW-Authenticate: Basic realm=""`.
pub const DEFAULT_REALM: &str = "";

/// The Secret key that holds the htpasswd file in the `auth-file` form (ingress-nginx's
/// `dumpSecretAuthFile`).
pub const AUTH_FILE_KEY: &str = "auth";

/// How the `auth-secret` Secret holds its credentials (`auth-secret-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretType {
    /// `auth-file`, the default: the key [`AUTH_FILE_KEY`] holds an htpasswd file.
    AuthFile,
    /// `auth-map`: each key is a user name and its value that user's hash.
    AuthMap,
}

impl SecretType {
    /// Reads the `auth-secret-type` annotation value; `None` for anything but the two names.
    /// A missing annotation means [`SecretType::AuthFile`], as in ingress-nginx.
    pub fn from_annotation(value: &str) -> Option<Self> {
        match value {
            "auth-file" => Some(Self::AuthFile),
            "auth-map" => Some(Self::AuthMap),
            _ => None,
        }
    }
}

/// Where in the Secret a problem is. Errors name the place, never the content: the content is
/// user names and password hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryLocation {
    /// 1-based line number in the `auth-file` htpasswd text.
    Line(usize),
    /// 1-based position of the entry among the `auth-map` entries, in the order they were given
    /// (key order for a Secret's `BTreeMap`).
    MapEntry(usize),
}

impl fmt::Display for EntryLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Line(n) => write!(f, "line {n}"),
            Self::MapEntry(n) => write!(f, "auth-map entry {n}"),
        }
    }
}

/// Why credentials could not be read from a Secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// `auth-file` form without the `auth` key.
    #[error("the Secret has no `auth` key, which auth-secret-type auth-file needs")]
    MissingAuthKey,
    /// More than [`MAX_SECRET_BYTES`].
    #[error("the credentials are over the {max}-byte limit")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_USERS`] distinct users.
    #[error("the credentials hold more than {max} users")]
    TooManyUsers {
        /// The limit.
        max: usize,
    },
    /// One line or map entry is unusable.
    #[error("{at}: {problem}")]
    Entry {
        /// Where.
        at: EntryLocation,
        /// What is wrong with it.
        problem: EntryProblem,
    },
}

/// What is wrong with one line or map entry. Messages describe the shape, never the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    /// Longer than [`MAX_LINE_LEN`].
    #[error("longer than {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// No `:` between user name and hash.
    #[error("no `:` between user name and password hash")]
    MissingSeparator,
    /// A carriage return or line feed inside an entry (not as its line ending). nginx would end the
    /// hash there, or in an auth-map value start a new line and so a new user.
    #[error("stray carriage return or line feed inside the entry")]
    StrayLineBreak,
    /// Empty user name.
    #[error("empty user name")]
    EmptyUser,
    /// User name over [`MAX_USER_LEN`].
    #[error("user name longer than {max} bytes")]
    UserTooLong {
        /// The limit.
        max: usize,
    },
    /// User name is not UTF-8; clients' user names are compared as text.
    #[error("user name is not valid UTF-8")]
    UserNotUtf8,
    /// User name holds a control character, which no client can send (RFC 7617).
    #[error("user name contains a control character")]
    UserControlChar,
    /// An auth-map key with `:` can never match: nginx splits the line at the first `:`.
    #[error("user name contains `:`")]
    UserColon,
    /// nginx would take ` alice` as a different user from `alice`; that is always a typing mistake.
    #[error("user name starts or ends with whitespace")]
    UserEdgeWhitespace,
    /// nginx reads a line starting with `#` as a comment, so such an auth-map key never matches.
    #[error("user name starts with `#`, which nginx reads as a comment")]
    UserStartsWithHashSign,
    /// Nothing after the `:`.
    #[error("empty password hash")]
    EmptyHash,
    /// Hash over [`MAX_HASH_LEN`].
    #[error("password hash longer than {max} bytes")]
    HashTooLong {
        /// The limit.
        max: usize,
    },
    /// A known hash scheme this module does not verify (nginx on glibc may, on musl it does not).
    #[error("{kind} password hashes are not supported")]
    UnsupportedHash {
        /// The scheme's name.
        kind: &'static str,
    },
    /// Not a hash format this module knows.
    #[error("unrecognised password hash format")]
    UnrecognisedHash,
    /// The scheme is known but the hash is not well formed.
    #[error("malformed {kind} password hash: {reason}")]
    MalformedHash {
        /// The scheme's name.
        kind: &'static str,
        /// What is wrong, in general terms.
        reason: &'static str,
    },
    /// Work factor above the cap ([`MAX_BCRYPT_COST`], [`MAX_SHA_CRYPT_ROUNDS`]).
    #[error("{kind} work factor {value} is above the limit of {max}")]
    WorkFactorTooHigh {
        /// The scheme's name.
        kind: &'static str,
        /// The hash's cost or rounds.
        value: u32,
        /// The limit.
        max: u32,
    },
}

/// Why a realm cannot be shown as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RealmError {
    /// Over [`MAX_REALM_LEN`] characters.
    #[error("the realm is longer than {max} characters")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// Outside printable ASCII; HTTP header values cannot carry it portably.
    #[error("the realm contains a character outside printable ASCII")]
    NotPrintableAscii,
}

/// The users and hashes of one `auth-secret`, plus a small cache of recent successful logins.
///
/// Build one per Secret version ([`Credentials::from_secret`]) and share it in an `Arc`; a rotated
/// Secret gives a new value and so starts with an empty cache.
///
/// [`Credentials::verify`] can take up to about a second (bcrypt at [`MAX_BCRYPT_COST`]): call it
/// off the async worker threads (`tokio::task::spawn_blocking`), and bound how many run at once,
/// since every wrong guess costs a full verification. Try [`Credentials::verify_cached`] first on
/// the request path: it answers repeat logins without hashing.
pub struct Credentials {
    users: HashMap<Box<str>, StoredHash>,
    /// What an unknown user's password is checked against: a copy of the first user's hash, so a
    /// miss costs what a real check of this Secret's typical hash costs and response time does not
    /// tell which user names exist.
    decoy: Option<StoredHash>,
    cache: SuccessCache,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Counts only: user names are half a login and hashes can be cracked offline.
        f.debug_struct("Credentials")
            .field("users", &self.users.len())
            .field("cached_successes", &self.cache.len())
            .finish()
    }
}

impl Credentials {
    /// Reads the credentials of an `auth-secret` in the given form from the Secret's data entries
    /// (`(key, value)` pairs, e.g. from `secret.data`).
    pub fn from_secret<'a, I>(secret_type: SecretType, data: I) -> Result<Self, CredentialsError>
    where
        I: IntoIterator<Item = (&'a str, &'a [u8])>,
    {
        match secret_type {
            SecretType::AuthFile => {
                let (_, content) = data
                    .into_iter()
                    .find(|(key, _)| *key == AUTH_FILE_KEY)
                    .ok_or(CredentialsError::MissingAuthKey)?;
                Self::parse_auth_file(content)
            }
            SecretType::AuthMap => Self::parse_auth_map(data),
        }
    }

    /// Reads an htpasswd file (the `auth` value of an `auth-file` Secret).
    pub fn parse_auth_file(content: &[u8]) -> Result<Self, CredentialsError> {
        if content.len() > MAX_SECRET_BYTES {
            return Err(CredentialsError::TooLarge { max: MAX_SECRET_BYTES });
        }
        let mut builder = Builder::default();
        for (index, line) in content.split(|&byte| byte == b'\n').enumerate() {
            let at = EntryLocation::Line(index + 1);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > MAX_LINE_LEN {
                return Err(entry_error(at, EntryProblem::TooLong { max: MAX_LINE_LEN }));
            }
            if line.iter().all(|&byte| byte == b' ' || byte == b'\t') || line.first() == Some(&b'#') {
                continue;
            }
            builder.add(at, line)?;
        }
        Ok(builder.finish())
    }

    /// Reads `auth-map` entries: each key a user name, each value that user's hash. A value may end
    /// in one line break (`kubectl create secret --from-file` keeps the file's last newline).
    pub fn parse_auth_map<'a, I>(entries: I) -> Result<Self, CredentialsError>
    where
        I: IntoIterator<Item = (&'a str, &'a [u8])>,
    {
        let mut builder = Builder::default();
        let mut total_bytes = 0usize;
        for (index, (user, value)) in entries.into_iter().enumerate() {
            let at = EntryLocation::MapEntry(index + 1);
            total_bytes = total_bytes.saturating_add(user.len()).saturating_add(value.len());
            if total_bytes > MAX_SECRET_BYTES {
                return Err(CredentialsError::TooLarge { max: MAX_SECRET_BYTES });
            }
            let value = value
                .strip_suffix(b"\r\n")
                .or_else(|| value.strip_suffix(b"\n"))
                .unwrap_or(value);
            if user.len() + 1 + value.len() > MAX_LINE_LEN {
                return Err(entry_error(at, EntryProblem::TooLong { max: MAX_LINE_LEN }));
            }
            let user = validate_user(user.as_bytes()).map_err(|problem| entry_error(at, problem))?;
            builder.add_user(at, user, value)?;
        }
        Ok(builder.finish())
    }

    /// Number of distinct users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users (everyone is refused, as nginx does with an empty file).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks a password, slowly: see the type's documentation for where to call it.
    ///
    /// A success is remembered (see [`Credentials::verify_cached`]); a failure is not, so a wrong
    /// password always costs a full verification. An unknown user costs a verification against the
    /// decoy hash and is refused.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        if !is_acceptable_login(user, password) {
            return false;
        }
        let fingerprint = self.cache.fingerprint(user, password);
        if fingerprint.is_some_and(|fingerprint| self.cache.contains(&fingerprint)) {
            return true;
        }
        let accepted = match self.users.get(user) {
            Some(hash) => hash.matches(password),
            None => {
                if let Some(decoy) = &self.decoy {
                    std::hint::black_box(decoy.matches(password));
                }
                false
            }
        };
        if let (true, Some(fingerprint)) = (accepted, fingerprint) {
            self.cache.insert(fingerprint);
        }
        accepted
    }

    /// The fast path, cheap enough for an async thread: `Some(true)` when this exact user and
    /// password succeeded recently, `Some(false)` when the login can never succeed whatever the
    /// Secret holds (no users, or a user name or password outside the limits), `None` when only
    /// [`Credentials::verify`] can tell.
    pub fn verify_cached(&self, user: &str, password: &[u8]) -> Option<bool> {
        if self.users.is_empty() || !is_acceptable_login(user, password) {
            return Some(false);
        }
        let fingerprint = self.cache.fingerprint(user, password)?;
        self.cache.contains(&fingerprint).then_some(true)
    }
}

fn entry_error(at: EntryLocation, problem: EntryProblem) -> CredentialsError {
    CredentialsError::Entry { at, problem }
}

/// Collects users in input order, keeping the first line of a repeated user as nginx does.
#[derive(Default)]
struct Builder {
    users: HashMap<Box<str>, StoredHash>,
    first: Option<StoredHash>,
}

impl Builder {
    /// Adds one htpasswd line (without its line ending, not blank, not a comment).
    fn add(&mut self, at: EntryLocation, line: &[u8]) -> Result<(), CredentialsError> {
        let colon = line
            .iter()
            .position(|&byte| byte == b':')
            .ok_or(entry_error(at, EntryProblem::MissingSeparator))?;
        let user = validate_user(&line[..colon]).map_err(|problem| entry_error(at, problem))?;
        self.add_user(at, user, &line[colon + 1..])
    }

    /// Adds a user whose hash field is `rest`: everything after the user's `:`, possibly followed by
    /// `:` and a field nginx ignores.
    fn add_user(&mut self, at: EntryLocation, user: &str, rest: &[u8]) -> Result<(), CredentialsError> {
        if rest.iter().any(|&byte| byte == b'\r' || byte == b'\n') {
            return Err(entry_error(at, EntryProblem::StrayLineBreak));
        }
        let hash_field = rest.split(|&byte| byte == b':').next().unwrap_or_default();
        let hash = StoredHash::parse(hash_field).map_err(|problem| entry_error(at, problem))?;
        if self.users.contains_key(user) {
            return Ok(());
        }
        if self.users.len() == MAX_USERS {
            return Err(CredentialsError::TooManyUsers { max: MAX_USERS });
        }
        if self.first.is_none() {
            self.first = Some(hash.clone());
        }
        self.users.insert(user.into(), hash);
        Ok(())
    }

    fn finish(self) -> Credentials {
        Credentials {
            users: self.users,
            decoy: self.first,
            cache: SuccessCache::new(),
        }
    }
}

/// Checks a user name from the Secret; the same rules decide which client user names can match.
fn validate_user(user: &[u8]) -> Result<&str, EntryProblem> {
    if user.is_empty() {
        return Err(EntryProblem::EmptyUser);
    }
    if user.len() > MAX_USER_LEN {
        return Err(EntryProblem::UserTooLong { max: MAX_USER_LEN });
    }
    let user = std::str::from_utf8(user).map_err(|_| EntryProblem::UserNotUtf8)?;
    if user.chars().any(char::is_control) {
        return Err(EntryProblem::UserControlChar);
    }
    if user.contains(':') {
        return Err(EntryProblem::UserColon);
    }
    if user.starts_with(char::is_whitespace) || user.ends_with(char::is_whitespace) {
        return Err(EntryProblem::UserEdgeWhitespace);
    }
    if user.starts_with('#') {
        return Err(EntryProblem::UserStartsWithHashSign);
    }
    Ok(user)
}

/// Whether a client's login is within the limits and could match some Secret entry. Deciding this
/// never looks at the Secret, so refusing early reveals nothing about its users.
fn is_acceptable_login(user: &str, password: &[u8]) -> bool {
    // nginx hands the password to crypt() as a C string, which ends at the first NUL; refusing it
    // is stricter than nginx and never lets a password through that nginx would refuse.
    validate_user(user.as_bytes()).is_ok() && password.len() <= MAX_PASSWORD_LEN && !password.contains(&0)
}

/// The crypt(3) base64 alphabet (`./0-9A-Za-z`) that salts and checksums of crypt hashes use.
fn is_crypt_base64(text: &str) -> bool {
    text.bytes()
        .all(|byte| byte == b'.' || byte == b'/' || byte.is_ascii_alphanumeric())
}

const BCRYPT: &str = "bcrypt";
const SHA256_CRYPT: &str = "SHA-256-crypt";
const SHA512_CRYPT: &str = "SHA-512-crypt";
const MD5_CRYPT: &str = "MD5-crypt";
const APR1: &str = "apr1 MD5";
const DES_CRYPT: &str = "DES-crypt";
const SHA1: &str = "{SHA}";
const SSHA1: &str = "{SSHA}";
const PLAIN: &str = "{PLAIN}";

/// Prefixes of schemes people may find in an htpasswd file that this module refuses, with names
/// for the error message.
const UNSUPPORTED_PREFIXES: &[(&str, &str)] = &[
    ("$2x$", "bcrypt $2x$ (the buggy pre-2011 variant)"),
    ("$2$", "bcrypt $2$ (the original variant)"),
    ("$y$", "yescrypt"),
    ("$gy$", "GOST yescrypt"),
    ("$7$", "scrypt"),
    ("$argon2", "Argon2"),
    ("$md5", "SunMD5"),
    ("$sha1$", "SHA1-crypt"),
    ("$3$", "NT hash"),
    ("$pbkdf2", "PBKDF2"),
    ("{SMD5}", "{SMD5}"),
    ("{MD5}", "{MD5}"),
    ("{CRYPT}", "{CRYPT}"),
    ("_", "BSDi extended DES-crypt"),
];

/// A parsed, validated password hash: everything that can be checked without the password was
/// checked when the Secret was read, so verification cannot fail on the hash's shape.
#[derive(Clone)]
enum StoredHash {
    /// `$2a$`, `$2b$` or `$2y$`, 60 characters, cost within [`MAX_BCRYPT_COST`].
    Bcrypt(Box<str>),
    /// `$5$` or `$6$`, rounds within [`MAX_SHA_CRYPT_ROUNDS`].
    ShaCrypt(Box<str>),
    /// `$1$`.
    Md5Crypt(Box<str>),
    /// `$apr1$`.
    Apr1(Box<str>),
    /// 13 characters: 2 of salt, 11 of checksum.
    DesCrypt(Box<str>),
    /// `{SHA}`: base64 of the SHA-1 of the password.
    Sha1([u8; 20]),
    /// `{SSHA}`: base64 of the SHA-1 of password and salt, then the salt.
    SaltedSha1 { digest: [u8; 20], salt: Box<[u8]> },
    /// `{PLAIN}`: the password itself, kept only as its SHA-256 so memory holds no plaintext and
    /// the comparison does not depend on the password's length.
    Plain([u8; 32]),
}

impl StoredHash {
    fn parse(field: &[u8]) -> Result<Self, EntryProblem> {
        if field.is_empty() {
            return Err(EntryProblem::EmptyHash);
        }
        if field.len() > MAX_HASH_LEN {
            return Err(EntryProblem::HashTooLong { max: MAX_HASH_LEN });
        }
        // nginx's own schemes first, as ngx_crypt() dispatches; their prefixes are case-sensitive.
        if let Some(password) = field.strip_prefix(PLAIN.as_bytes()) {
            if password.iter().any(|&byte| byte.is_ascii_control() && byte != b'\t') {
                return Err(malformed(PLAIN, "the password contains a control character"));
            }
            if password.len() > MAX_PASSWORD_LEN {
                return Err(malformed(PLAIN, "the password is longer than a client may send"));
            }
            return Ok(Self::Plain(sha256(&[password])));
        }
        if let Some(encoded) = field.strip_prefix(SSHA1.as_bytes()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| malformed(SSHA1, "not canonical padded base64"))?;
            if decoded.len() <= 20 {
                return Err(malformed(SSHA1, "no salt after the SHA-1 digest"));
            }
            let (digest, salt) = decoded.split_at(20);
            let digest = digest.try_into().map_err(|_| malformed(SSHA1, "short digest"))?;
            return Ok(Self::SaltedSha1 {
                digest,
                salt: salt.into(),
            });
        }
        if let Some(encoded) = field.strip_prefix(SHA1.as_bytes()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| malformed(SHA1, "not canonical padded base64"))?;
            let digest = decoded
                .try_into()
                .map_err(|_| malformed(SHA1, "not a 20-byte SHA-1 digest"))?;
            return Ok(Self::Sha1(digest));
        }
        // Everything else is a crypt(3) string, which is ASCII.
        let Ok(text) = std::str::from_utf8(field) else {
            return Err(EntryProblem::UnrecognisedHash);
        };
        if !text.is_ascii() {
            return Err(EntryProblem::UnrecognisedHash);
        }
        if let Some(&(_, kind)) = UNSUPPORTED_PREFIXES.iter().find(|(prefix, _)| text.starts_with(prefix)) {
            return Err(EntryProblem::UnsupportedHash { kind });
        }
        if text.starts_with("$2") {
            return parse_bcrypt(text);
        }
        if let Some(rest) = text.strip_prefix("$apr1$") {
            validate_md5_crypt(APR1, rest)?;
            return Ok(Self::Apr1(text.into()));
        }
        if let Some(rest) = text.strip_prefix("$1$") {
            validate_md5_crypt(MD5_CRYPT, rest)?;
            return Ok(Self::Md5Crypt(text.into()));
        }
        if let Some(rest) = text.strip_prefix("$5$") {
            return parse_sha_crypt(SHA256_CRYPT, text, rest, 32);
        }
        if let Some(rest) = text.strip_prefix("$6$") {
            return parse_sha_crypt(SHA512_CRYPT, text, rest, 64);
        }
        if text.len() == 13 && is_crypt_base64(text) {
            // 64 bits in 11 characters leave the last one's two low bits zero.
            let last = crypt_base64_value(text.as_bytes()[12]);
            if !last.is_multiple_of(4) {
                return Err(malformed(DES_CRYPT, "non-canonical checksum"));
            }
            return Ok(Self::DesCrypt(text.into()));
        }
        Err(EntryProblem::UnrecognisedHash)
    }

    /// Whether `password` matches. Derived values are compared in constant time.
    fn matches(&self, password: &[u8]) -> bool {
        match self {
            Self::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            Self::ShaCrypt(hash) => sha_crypt::ShaCrypt::default()
                .verify_password(password, &**hash)
                .is_ok(),
            // crypt3_rs marks these schemes deprecated for *new* hashes; verifying existing ones is
            // what it keeps them for. Its own verify() compares with `==`, so compare here instead.
            #[allow(deprecated)]
            Self::Md5Crypt(hash) => crypt_output_matches(hash, crypt3_rs::crypt::md5::hash_with(&**hash, password)),
            #[allow(deprecated)]
            Self::Apr1(hash) => crypt_output_matches(hash, crypt3_rs::crypt::apr1::hash_with(&**hash, password)),
            #[allow(deprecated)]
            Self::DesCrypt(hash) => crypt_output_matches(hash, crypt3_rs::crypt::unix::hash_with(hash, password)),
            Self::Sha1(digest) => bool::from(sha1_digest(&[password]).ct_eq(digest)),
            Self::SaltedSha1 { digest, salt } => bool::from(sha1_digest(&[password, salt]).ct_eq(digest)),
            Self::Plain(digest) => bool::from(sha256(&[password]).ct_eq(digest)),
        }
    }
}

fn malformed(kind: &'static str, reason: &'static str) -> EntryProblem {
    EntryProblem::MalformedHash { kind, reason }
}

fn crypt_output_matches(stored: &str, computed: crypt3_rs::error::Result<crypt3_rs::Hash>) -> bool {
    computed.is_ok_and(|computed| bool::from(computed.as_str().as_bytes().ct_eq(stored.as_bytes())))
}

/// Value of one crypt(3) base64 character (the caller has checked the alphabet).
fn crypt_base64_value(byte: u8) -> u8 {
    match byte {
        b'.' => 0,
        b'/' => 1,
        b'0'..=b'9' => byte - b'0' + 2,
        b'A'..=b'Z' => byte - b'A' + 12,
        _ => byte.wrapping_sub(b'a').wrapping_add(38),
    }
}

/// `$2a$NN$` + 22 characters of salt + 31 of hash, in bcrypt's own base64.
fn parse_bcrypt(text: &str) -> Result<StoredHash, EntryProblem> {
    if !(text.starts_with("$2a$") || text.starts_with("$2b$") || text.starts_with("$2y$")) {
        return Err(EntryProblem::UnrecognisedHash);
    }
    if text.len() != 60 {
        return Err(malformed(BCRYPT, "not 60 characters long"));
    }
    let cost_digits = &text[4..6];
    if !cost_digits.bytes().all(|byte| byte.is_ascii_digit()) || text.as_bytes()[6] != b'$' {
        return Err(malformed(BCRYPT, "no two-digit cost"));
    }
    let cost: u32 = cost_digits
        .parse()
        .map_err(|_| malformed(BCRYPT, "no two-digit cost"))?;
    if cost < 4 {
        return Err(malformed(BCRYPT, "cost below 4"));
    }
    if cost > MAX_BCRYPT_COST {
        return Err(EntryProblem::WorkFactorTooHigh {
            kind: BCRYPT,
            value: cost,
            max: MAX_BCRYPT_COST,
        });
    }
    let (salt, checksum) = text[7..].split_at(22);
    let mut salt_bytes = [0u8; 16];
    let mut checksum_bytes = [0u8; 23];
    // The same decoder bcrypt::verify uses, so a hash accepted here is one it can check.
    let salt_ok = bcrypt::BASE_64.decode_slice(salt, &mut salt_bytes) == Ok(16);
    let checksum_ok = bcrypt::BASE_64.decode_slice(checksum, &mut checksum_bytes) == Ok(23);
    if !(salt_ok && checksum_ok) {
        return Err(malformed(BCRYPT, "salt or checksum is not canonical bcrypt base64"));
    }
    Ok(StoredHash::Bcrypt(text.into()))
}

/// After the magic: a salt of 1 to 8 characters, `$`, a 22-character checksum.
fn validate_md5_crypt(kind: &'static str, rest: &str) -> Result<(), EntryProblem> {
    let (salt, checksum) = rest.split_once('$').ok_or(malformed(kind, "no `$` after the salt"))?;
    if salt.is_empty() || salt.len() > 8 || !is_crypt_base64(salt) {
        return Err(malformed(kind, "salt is not 1 to 8 crypt base64 characters"));
    }
    if checksum.len() != 22 || !is_crypt_base64(checksum) {
        return Err(malformed(kind, "checksum is not 22 crypt base64 characters"));
    }
    // 128 bits in 22 characters: the last character carries the last two bits only, so 0..=3.
    if crypt_base64_value(checksum.as_bytes()[21]) > 3 {
        return Err(malformed(kind, "non-canonical checksum"));
    }
    Ok(())
}

/// After the magic: optional `rounds=N$`, a salt of 1 to 16 characters, `$`, the checksum.
fn parse_sha_crypt(kind: &'static str, text: &str, rest: &str, digest_len: usize) -> Result<StoredHash, EntryProblem> {
    let rest = match rest.strip_prefix("rounds=") {
        Some(after) => {
            let (digits, after) = after.split_once('$').ok_or(malformed(kind, "no `$` after rounds"))?;
            // Canonical decimal only: glibc writes the number back, so `rounds=05000` never matches.
            if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed(kind, "rounds is not a decimal number"));
            }
            if digits.starts_with('0') {
                return Err(malformed(kind, "rounds has a leading zero"));
            }
            let rounds: u64 = digits
                .parse()
                .map_err(|_| malformed(kind, "rounds is not a decimal number"))?;
            if rounds < u64::from(sha_crypt::Params::ROUNDS_MIN) {
                // glibc raises it to 1000 and writes `rounds=1000`, so this hash can never match.
                return Err(malformed(kind, "rounds below 1000"));
            }
            if rounds > u64::from(MAX_SHA_CRYPT_ROUNDS) {
                let value = u32::try_from(rounds).unwrap_or(u32::MAX);
                return Err(EntryProblem::WorkFactorTooHigh {
                    kind,
                    value,
                    max: MAX_SHA_CRYPT_ROUNDS,
                });
            }
            after
        }
        None => rest,
    };
    let (salt, checksum) = rest.split_once('$').ok_or(malformed(kind, "no `$` after the salt"))?;
    if salt.is_empty() || salt.len() > 16 || !is_crypt_base64(salt) {
        return Err(malformed(kind, "salt is not 1 to 16 crypt base64 characters"));
    }
    // `Base64ShaCrypt` is the decoder sha-crypt itself uses for the checksum; it also refuses
    // non-zero trailing bits, which crypt() never writes.
    let mut digest = [0u8; 64];
    let decoded = <base64ct::Base64ShaCrypt as base64ct::Encoding>::decode(checksum, &mut digest)
        .map_err(|_| malformed(kind, "checksum is not canonical crypt base64"))?;
    if decoded.len() != digest_len {
        return Err(malformed(kind, "checksum has the wrong length"));
    }
    if sha_crypt::PasswordHashRef::new(text).is_err() {
        return Err(malformed(kind, "not in modular crypt format"));
    }
    Ok(StoredHash::ShaCrypt(text.into()))
}

fn sha1_digest(parts: &[&[u8]]) -> [u8; 20] {
    use sha1::Digest as _;
    let mut hasher = sha1::Sha1::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Fingerprints of recent successful logins, so reconnecting clients skip the slow hash.
///
/// A fingerprint is SHA-256 over a per-instance random key, the user name's length, the user name
/// and the password: the password is never stored, and the key stops a fingerprint from being
/// looked up in a table precomputed for other instances. Membership is a hash-set lookup, which is
/// fine because fingerprints are unpredictable without the key.
struct SuccessCache {
    /// `None` if the OS gave no randomness; caching is then off rather than unkeyed.
    key: Option<[u8; 32]>,
    fingerprints: Mutex<Fingerprints>,
}

#[derive(Default)]
struct Fingerprints {
    present: HashSet<[u8; 32]>,
    /// Insertion order, oldest first, to evict when full.
    order: VecDeque<[u8; 32]>,
}

impl SuccessCache {
    fn new() -> Self {
        let mut key = [0u8; 32];
        let key = getrandom::fill(&mut key).ok().map(|()| key);
        Self {
            key,
            fingerprints: Mutex::new(Fingerprints::default()),
        }
    }

    fn fingerprint(&self, user: &str, password: &[u8]) -> Option<[u8; 32]> {
        let key = self.key.as_ref()?;
        let user_len = u64::try_from(user.len()).unwrap_or(u64::MAX).to_be_bytes();
        Some(sha256(&[key, &user_len, user.as_bytes(), password]))
    }

    fn lock(&self) -> MutexGuard<'_, Fingerprints> {
        self.fingerprints.lock().unwrap_or_else(|poisoned| {
            // A panic mid-update may have left the set and the order out of step: start over.
            let mut fingerprints = poisoned.into_inner();
            *fingerprints = Fingerprints::default();
            self.fingerprints.clear_poison();
            fingerprints
        })
    }

    fn contains(&self, fingerprint: &[u8; 32]) -> bool {
        self.lock().present.contains(fingerprint)
    }

    fn insert(&self, fingerprint: [u8; 32]) {
        let mut fingerprints = self.lock();
        if !fingerprints.present.insert(fingerprint) {
            return;
        }
        fingerprints.order.push_back(fingerprint);
        if fingerprints.order.len() > MAX_CACHED_SUCCESSES {
            if let Some(oldest) = fingerprints.order.pop_front() {
                fingerprints.present.remove(&oldest);
            }
        }
    }

    fn len(&self) -> usize {
        self.lock().present.len()
    }
}

/// Decodes the credentials of `Authorization: Basic`: the standard alphabet, no non-zero trailing
/// bits, and either canonical padding or none at all (nginx decodes unpadded values too, so some
/// clients may send them).
fn decode_basic_token(token: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    let engine = if token.ends_with(b"=") {
        &STANDARD
    } else {
        &STANDARD_NO_PAD
    };
    engine.decode(token).ok()
}

/// Parses an `Authorization` header value `Basic <base64 of user:password>` (RFC 7617).
///
/// The scheme is case-insensitive and followed by one or more spaces, as nginx accepts. The user
/// name is everything before the first `:` and must be non-empty UTF-8 without control characters;
/// the password is everything after it and may contain `:`. `None` for anything else, including
/// values over [`MAX_AUTHORIZATION_LEN`], a user over [`MAX_USER_LEN`], a password over
/// [`MAX_PASSWORD_LEN`] or containing NUL, and base64 with invalid characters or trailing bits.
pub fn parse_basic(value: &[u8]) -> Option<(String, Vec<u8>)> {
    if value.len() > MAX_AUTHORIZATION_LEN {
        return None;
    }
    let value = trim_optional_whitespace(value);
    let (scheme, rest) = value.split_at_checked(5)?;
    if !scheme.eq_ignore_ascii_case(b"basic") || rest.first() != Some(&b' ') {
        return None;
    }
    // nginx skips spaces (only spaces) between the scheme and the credentials.
    let token = &rest[rest.iter().take_while(|&&byte| byte == b' ').count()..];
    if token.is_empty() {
        return None;
    }
    let decoded = decode_basic_token(token)?;
    let colon = decoded.iter().position(|&byte| byte == b':')?;
    let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
    if user.is_empty() || user.len() > MAX_USER_LEN || password.len() > MAX_PASSWORD_LEN || password.contains(&0) {
        return None;
    }
    let user = std::str::from_utf8(user).ok()?;
    if user.chars().any(char::is_control) {
        return None;
    }
    Some((user.to_owned(), password.to_vec()))
}

/// Strips leading and trailing spaces and tabs (HTTP's optional whitespace), nothing else.
fn trim_optional_whitespace(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// Checks that a realm (the `auth-realm` annotation) will show as given: at most
/// [`MAX_REALM_LEN`] characters of printable ASCII. ingress-nginx is stricter still (letters,
/// digits, space and `-._~/:`); that policy belongs to the annotation reader.
pub fn validate_realm(realm: &str) -> Result<(), RealmError> {
    if realm.chars().count() > MAX_REALM_LEN {
        return Err(RealmError::TooLong { max: MAX_REALM_LEN });
    }
    if !realm.bytes().all(|byte| (0x20..=0x7e).contains(&byte)) {
        return Err(RealmError::NotPrintableAscii);
    }
    Ok(())
}

/// The `WWW-Authenticate` value for a 401: `Basic realm="<realm>"` with `"` and `\` escaped
/// (RFC 9110 quoted-string). Never fails and never yields an invalid header: a realm that
/// [`validate_realm`] refuses is cut to [`MAX_REALM_LEN`] characters and every character outside
/// printable ASCII becomes `?`.
pub fn www_authenticate(realm: &str) -> String {
    let mut value = String::with_capacity("Basic realm=\"\"".len() + realm.len().min(MAX_REALM_LEN) * 2);
    value.push_str("Basic realm=\"");
    for character in realm.chars().take(MAX_REALM_LEN) {
        match character {
            '"' | '\\' => {
                value.push('\\');
                value.push(character);
            }
            ' '..='~' => value.push(character),
            _ => value.push('?'),
        }
    }
    value.push('"');
    value
}

#[cfg(test)]
#[path = "htpasswd_tests.rs"]
mod tests;
