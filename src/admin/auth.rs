//! Who is asking: the `Host` check against DNS rebinding, HTTP basic auth against
//! the configured users' crypt(3) hashes, throttling of failed logins per source
//! address, read-only enforcement and the cross-site check on every changing
//! request.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::AdminState;
use super::error::AdminError;
use crate::config::{Access, UserConfig};

/// Failed logins from one source (an IPv4 address, an IPv6 /64) within
/// [`FAILURE_WINDOW`] before it is refused (429, or a refused SSH login) until
/// the window ends. Checks in progress count against it too, so simultaneous
/// guesses cannot check more passwords than this.
pub const MAX_FAILURES: u32 = 5;
/// The window in which failed logins are counted.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Sources tracked at most; past that the oldest windows are forgotten.
const MAX_TRACKED: usize = 4096;
/// Verified credentials remembered, so a page with live updates does not pay a
/// bcrypt or SHA-crypt round per request.
const MAX_CACHED: usize = 256;

/// A SHA-512-crypt hash of a password that matches nobody, verified against when
/// the user name is unknown so that unknown names take as long as wrong passwords.
/// A real hash (of a random password since forgotten): a malformed one would
/// be refused without hashing, and unknown names would answer faster.
const DUMMY_HASH: &str = "$6$5IOlckW8NMujcA1T$GNs8SRnfFCR2BqgetvY1lNUEbEQZzWbN1G/3J.\
    2F/vQd2zPw.JL/BqZ8vHdLsJQQZDouXQroncqu04s0/dzQZ1";

/// The address a client connected to (the admin socket's own address), put in
/// each request's extensions by the server; absent when the router is served by
/// an application of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalAddr(pub SocketAddr);

/// What a request's `Host` header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostName {
    /// No `Host` at all: not a browser (browsers always send one).
    Absent,
    /// `localhost`, a loopback address, with the server's port.
    Loopback,
    /// The address the client connected to, or an `allowedHosts` name.
    Own,
}

/// `host[:port]` of a `Host` header, lower-cased, with the port if given; an
/// IPv6 address keeps its brackets. `None` for what no client sends.
fn split_host(value: &str) -> Option<(String, Option<u16>)> {
    let value = value.trim().to_ascii_lowercase();
    let (host, port) = match value.strip_prefix('[') {
        Some(rest) => {
            let (inside, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            (format!("[{inside}]"), port)
        }
        None => match value.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (value.clone(), None),
        },
    };
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    let host = host.trim_end_matches('.').to_string();
    (!host.is_empty()).then_some((host, port))
}

/// Checks the host a request names against the server's own names: the address
/// the client connected to (`local`), the loopback names (`localhost`,
/// `127.0.0.1`, `[::1]`) with the server's port, and the names of `allowed`
/// (`host` matches any port, `host:port` that port). Any other name is what a
/// page whose name was re-pointed at this server (DNS rebinding) sends, and is
/// refused with 421. The name is the `Host` header's and, for an absolute-form
/// target (`GET http://name/…`, which RFC 9112 says names the host instead),
/// the target's too: both must be this server's. More than one `Host` header
/// is refused with 400 (RFC 9112), as which one counts is ambiguous.
pub(crate) fn check_host(
    uri: &Uri,
    headers: &HeaderMap,
    local: Option<SocketAddr>,
    allowed: &[String],
    tls: bool,
) -> Result<HostName, AdminError> {
    let mut values = headers.get_all(header::HOST).iter();
    let host = values.next();
    if values.next().is_some() {
        return Err(AdminError::BadRequest("more than one Host header".into()));
    }
    let check = |what: &str, text: &str| check_name(what, text, local, allowed, tls);
    let target = uri
        .authority()
        .map(|a| check("request target host", a.as_str()))
        .transpose()?;
    let header = host
        .map(|v| check("Host", v.to_str().unwrap_or("")))
        .transpose()?;
    Ok(match (target, header) {
        (None, None) => HostName::Absent,
        (t, h) if t == Some(HostName::Own) || h == Some(HostName::Own) => HostName::Own,
        _ => HostName::Loopback,
    })
}

/// [`check_host`] for one name, `text` (`what` says where it came from).
fn check_name(
    what: &str,
    text: &str,
    local: Option<SocketAddr>,
    allowed: &[String],
    tls: bool,
) -> Result<HostName, AdminError> {
    let refuse = || {
        Err(AdminError::MisdirectedHost(format!(
            "{what} {text:?} is not a name of this admin server; if clients reach it by \
             that name, add it to <web allowedHosts=…>"
        )))
    };
    let Some((host, port)) = split_host(text) else {
        return refuse();
    };
    let default_port = if tls { 443 } else { 80 };
    let port_ok = match local {
        Some(local) => port.unwrap_or(default_port) == local.port(),
        None => true,
    };
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    let loopback = host == "localhost" || literal.is_some_and(|ip| ip.is_loopback());
    if loopback && port_ok {
        return Ok(HostName::Loopback);
    }
    let own_ip = match local {
        Some(local) => literal.is_some_and(|ip| ip == local.ip().to_canonical()),
        // Served by an application: which address the client reached is
        // unknown, and an address is not a name a rebinding page could use.
        None => literal.is_some(),
    };
    if own_ip && port_ok {
        return Ok(HostName::Own);
    }
    let listed = allowed.iter().any(|entry| match split_host(entry) {
        Some((h, None)) => h == host,
        Some((h, Some(p))) => h == host && port.unwrap_or(default_port) == p,
        None => false,
    });
    if listed {
        return Ok(HostName::Own);
    }
    refuse()
}

/// The authenticated user of a request, put in its extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Login name (`-` when the server runs without users on loopback).
    pub name: String,
    /// What the user may do.
    pub access: Access,
}

/// The login bookkeeping of the admin plane: one failure budget per source
/// address, shared by the web admin and the SSH console so that guesses on one
/// count on the other, and the verified-credential cache. Cheap to clone (the
/// clones share it); `txlb run` makes one and gives it to both servers through
/// [`AdminSettings::logins`](super::AdminSettings::logins) and
/// [`SshSettings::logins`](crate::ssh::SshSettings::logins).
#[derive(Clone, Default)]
pub struct Logins(Arc<Auth>);

impl Logins {
    /// A new, empty budget and cache.
    pub fn new() -> Self {
        Logins::default()
    }
}

impl std::fmt::Debug for Logins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sources = self.0.budgets.lock().map_or(0, |b| b.len());
        f.debug_struct("Logins").field("sources", &sources).finish()
    }
}

impl Logins {
    /// Seconds until `ip` may try again, when its budget is spent.
    pub(crate) fn throttled(&self, ip: IpAddr) -> Option<u64> {
        self.0.throttled(ip)
    }

    /// Logs `name` in from `ip` with `password` against `users`. A source whose
    /// budget is spent is refused before anything is checked, even the right
    /// password; otherwise a check is reserved from its budget first (so
    /// simultaneous guesses cannot overrun it), the hash is computed off the
    /// async runtime, and a failure is counted. Unknown names cost the same as
    /// wrong passwords.
    pub(crate) async fn login(
        &self,
        ip: IpAddr,
        users: &[UserConfig],
        name: &str,
        password: &str,
    ) -> Result<Principal, Refused> {
        let auth = &*self.0;
        if let Some(secs) = auth.throttled(ip) {
            return Err(Refused::Throttled(secs));
        }
        let user = users.iter().find(|u| u.name == name);
        let hash = user.map_or(DUMMY_HASH, |u| u.password_hash.as_str());
        let digest = auth.digest(name, password, hash);
        let cached = auth
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&digest);
        let principal = |u: &UserConfig| Principal {
            name: u.name.clone(),
            access: u.access,
        };
        if let Some(user) = user.filter(|_| cached) {
            return Ok(principal(user));
        }
        let reserved = auth.reserve(ip).map_err(Refused::Throttled)?;
        let ok = {
            let (password, hash) = (password.to_string(), hash.to_string());
            tokio::task::spawn_blocking(move || verify_password(&password, &hash))
                .await
                .unwrap_or(false)
        };
        match user.filter(|_| ok) {
            Some(user) => {
                drop(reserved);
                let mut verified = auth.verified.lock().unwrap_or_else(|p| p.into_inner());
                if verified.len() >= MAX_CACHED {
                    verified.clear();
                }
                verified.insert(digest, ());
                Ok(principal(user))
            }
            None => {
                reserved.failed();
                Err(Refused::Wrong)
            }
        }
    }
}

/// Why a login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The source's budget is spent (or taken by checks in progress): retry in
    /// this many seconds. The password was not checked.
    Throttled(u64),
    /// Wrong name or password (counted against the budget).
    Wrong,
}

/// One source's failure budget.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// Failed logins in the window.
    failures: u32,
    /// Password checks under way, reserved before they start.
    checking: u32,
    /// Start of the window.
    start: Instant,
}

/// Login bookkeeping (see [`Logins`]).
struct Auth {
    /// Budgets per source ([`source_key`]). Written by every password check; a
    /// mutex because logins are rare and the map is small.
    budgets: Mutex<HashMap<IpAddr, Budget>>,
    /// Digests of credentials verified before (keyed with `secret`), so the hash is
    /// not recomputed per request.
    verified: Mutex<HashMap<[u8; 32], ()>>,
    /// Random per-process key of the credential digests.
    secret: [u8; 32],
}

impl Default for Auth {
    fn default() -> Self {
        let mut secret = [0u8; 32];
        random_bytes(&mut secret);
        Auth {
            budgets: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            secret,
        }
    }
}

/// The budget a client address spends: an IPv4 address (also when written as
/// an IPv4-mapped IPv6 address), or the /64 of an IPv6 address, since one
/// client usually holds a whole /64.
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// A reserved password check: released on drop, a failure when [`Reserved::failed`].
struct Reserved<'a> {
    auth: &'a Auth,
    key: IpAddr,
}

impl Reserved<'_> {
    fn failed(self) {
        let mut budgets = self.auth.lock_budgets();
        if let Some(b) = budgets.get_mut(&self.key) {
            if b.start.elapsed() >= FAILURE_WINDOW {
                b.failures = 0;
                b.start = Instant::now();
            }
            b.failures += 1;
        }
        // Drop releases the reservation.
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.auth.lock_budgets().get_mut(&self.key) {
            b.checking = b.checking.saturating_sub(1);
        }
    }
}

impl Auth {
    fn lock_budgets(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Budget>> {
        self.budgets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn throttled(&self, ip: IpAddr) -> Option<u64> {
        let budgets = self.lock_budgets();
        let b = budgets.get(&source_key(ip))?;
        let left = FAILURE_WINDOW.checked_sub(b.start.elapsed())?;
        (b.failures >= MAX_FAILURES).then(|| left.as_secs().max(1))
    }

    /// Reserves one password check of `ip`'s budget, or says when to retry.
    fn reserve(&self, ip: IpAddr) -> Result<Reserved<'_>, u64> {
        let key = source_key(ip);
        let mut budgets = self.lock_budgets();
        let now = Instant::now();
        if budgets.len() >= MAX_TRACKED {
            budgets.retain(|_, b| b.checking > 0 || now.duration_since(b.start) < FAILURE_WINDOW);
        }
        let b = budgets.entry(key).or_insert(Budget {
            failures: 0,
            checking: 0,
            start: now,
        });
        if now.duration_since(b.start) >= FAILURE_WINDOW {
            b.failures = 0;
            b.start = now;
        }
        if b.failures + b.checking >= MAX_FAILURES {
            let left = FAILURE_WINDOW.saturating_sub(now.duration_since(b.start));
            return Err(left.as_secs().max(1));
        }
        b.checking += 1;
        Ok(Reserved { auth: self, key })
    }

    fn digest(&self, user: &str, password: &str, hash: &str) -> [u8; 32] {
        let mut d = Sha256::new();
        d.update(self.secret);
        for part in [user, password, hash] {
            d.update((part.len() as u64).to_le_bytes());
            d.update(part.as_bytes());
        }
        d.finalize().into()
    }
}

/// Whether `password` matches the crypt(3) `hash` (traditional DES, `$1$`, `$5$`,
/// `$6$`, `$2a$`/`$2b$`/`$2y$`). Compares in constant time; a malformed hash never
/// matches.
pub fn verify_password(password: &str, hash: &str) -> bool {
    // pwhash compares in constant time. Its parsers are not all hardened against
    // arbitrary strings, so a panic on a strange configured hash is a mismatch.
    std::panic::catch_unwind(|| pwhash::unix::verify(password, hash)).unwrap_or(false)
}

/// Which crypt(3) scheme `hash` is written in, by its shape: `DES` (13
/// characters), `MD5` (`$1$`), `SHA-256` (`$5$`), `SHA-512` (`$6$`), `bcrypt`
/// (`$2a$`, `$2b$`, `$2y$`); `None` for anything else, which no password
/// matches. `txlb check` warns of both.
pub fn crypt_scheme(hash: &str) -> Option<&'static str> {
    let b64 = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    };
    // `$id$[rounds=N$]salt$digest` with a digest of `len` characters.
    let salted = |rest: &str, len: usize| {
        let rest = match rest.strip_prefix("rounds=") {
            Some(r) => match r.split_once('$') {
                Some((n, r)) if n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty() => r,
                _ => return false,
            },
            None => rest,
        };
        matches!(rest.split_once('$'), Some((salt, digest))
            if !salt.is_empty() && salt.len() <= 16 && !salt.contains('$')
                && digest.len() == len && b64(digest))
    };
    if hash.len() == 13 && b64(hash) {
        return Some("DES");
    }
    if let Some(rest) = hash.strip_prefix("$1$") {
        return salted(rest, 22).then_some("MD5");
    }
    if let Some(rest) = hash.strip_prefix("$5$") {
        return salted(rest, 43).then_some("SHA-256");
    }
    if let Some(rest) = hash.strip_prefix("$6$") {
        return salted(rest, 86).then_some("SHA-512");
    }
    for prefix in ["$2a$", "$2b$", "$2y$"] {
        if let Some(rest) = hash.strip_prefix(prefix) {
            let ok = matches!(rest.split_once('$'), Some((cost, digest))
                if cost.len() == 2 && cost.bytes().all(|b| b.is_ascii_digit())
                    && digest.len() == 53 && b64(digest));
            return ok.then_some("bcrypt");
        }
    }
    None
}

/// A SHA-512-crypt hash of `password` with a random salt, for `<user password=…>`,
/// after the check every password gets ([`check_password`](crate::config::check_password)).
pub fn hash_password(password: &str) -> Result<String, AdminError> {
    Ok(crate::ops::hash_password(password)?)
}

/// Fills `buf` from the system's secure random source (through rustls' provider,
/// which txlb links for TLS anyway).
pub(crate) fn random_bytes(buf: &mut [u8]) {
    let provider = rustls::crypto::ring::default_provider();
    if provider.secure_random.fill(buf).is_err() {
        // The system random source failing is not recoverable in any useful way;
        // fall back to a non-cryptographic source rather than zeros.
        for b in buf.iter_mut() {
            *b = fastrand::u8(..);
        }
    }
}

/// The user name and password of a `Basic` `Authorization` header.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Whether a request asks for a change: any method but GET and HEAD, and the
/// legacy calls of operations whatever their method (the other legacy
/// calls only read).
pub(crate) fn is_change(method: &Method, path: &str) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return true;
    }
    let last = path.rsplit('/').next().unwrap_or("");
    crate::ops::by_call(last).is_some()
}

/// Refuses a changing request that a browser sent from another site: basic auth
/// credentials are sent by the browser automatically, so a foreign page could
/// otherwise post to the admin server. Scripts send none of these headers.
pub(crate) fn check_same_origin(headers: &HeaderMap) -> Result<(), AdminError> {
    let refuse = || Err(AdminError::Forbidden("cross-site request refused".into()));
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if !matches!(site, "same-origin" | "none") {
            return refuse();
        }
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .map(|o| o.to_str().unwrap_or("\u{0}"));
    match origin {
        None => Ok(()),
        Some(origin) => {
            // scheme://host[:port][/…]: compare the authority with Host.
            let authority = origin
                .split_once("://")
                .map(|(_, rest)| rest.split('/').next().unwrap_or(""));
            match (authority, host) {
                (Some(a), Some(h)) if a.eq_ignore_ascii_case(h) => Ok(()),
                _ => refuse(),
            }
        }
    }
}

/// The middleware: authenticates every request (except public metrics), throttles
/// failed logins, and refuses changes to read-only users and cross-site requests.
pub(crate) async fn middleware(
    State(state): State<AdminState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    let json = path.contains("/api/");
    let fail = |e: AdminError| if json { e.json() } else { e.plain() };
    let local = request.extensions().get::<LocalAddr>().map(|l| l.0);
    let settings = &state.settings;
    let host = match check_host(
        request.uri(),
        request.headers(),
        local,
        &settings.allowed_hosts,
        settings.tls.is_some(),
    ) {
        Ok(host) => host,
        Err(e) => {
            let target = request.uri().authority().map(|a| a.as_str());
            tracing::warn!(host = ?request.headers().get(header::HOST), ?target, "admin request for a foreign Host refused");
            return fail(e);
        }
    };
    if settings.metrics_public && path == "/metrics" {
        return next.run(request).await;
    }
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let users = state.users();
    let principal = if users.is_empty() {
        if !settings.open_without_users {
            return fail(AdminError::Unauthorized("no admin users are configured"));
        }
        // Without users nothing but the network guards changes: only a client
        // that named this machine by a loopback name may make them.
        if is_change(request.method(), &path) && host == HostName::Own {
            return fail(AdminError::Forbidden(
                "without admin users, changes are taken only with a loopback Host \
                 (localhost, 127.0.0.1, [::1]); add a <user> to change through other names"
                    .into(),
            ));
        }
        Principal {
            name: "-".into(),
            access: Access::Full,
        }
    } else {
        if let Some(secs) = state.auth.throttled(ip) {
            return fail(AdminError::TooManyRequests(secs));
        }
        let Some((name, password)) = basic_credentials(request.headers()) else {
            return fail(AdminError::Unauthorized("credentials required"));
        };
        match state.auth.login(ip, &users, &name, &password).await {
            Ok(p) => p,
            Err(Refused::Throttled(secs)) => return fail(AdminError::TooManyRequests(secs)),
            Err(Refused::Wrong) => {
                // The name is logged (escaped: it is the client's), never the
                // password.
                tracing::warn!(user = ?name, client = %ip, "admin login failed");
                return fail(AdminError::Unauthorized("wrong user name or password"));
            }
        }
    };
    if is_change(request.method(), &path) {
        if principal.access != Access::Full {
            return fail(AdminError::Forbidden(format!(
                "user {:?} has read-only access",
                principal.name
            )));
        }
        if settings.changes_require_post && matches!(*request.method(), Method::GET | Method::HEAD)
        {
            return fail(AdminError::MethodNotAllowed(format!(
                "{path} changes the balancer: send it as POST (this server is set to \
                 changesRequirePost)"
            )));
        }
        if let Err(e) = check_same_origin(request.headers()) {
            return fail(e);
        }
        tracing::info!(user = ?principal.name, method = %request.method(), path = ?path, "admin change");
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    #[allow(deprecated)] // making old-style hashes is the point
    fn every_supported_crypt_format_verifies() {
        // Traditional DES, made with pwhash and checked against a known vector.
        let des = pwhash::unix_crypt::hash_with("..", "secret").unwrap();
        assert_eq!(des.len(), 13);
        assert!(verify_password("secret", &des));
        assert!(!verify_password("secreT", &des));
        assert!(verify_password("test", "aZGJuE6EXrjEE"));
        // The sample configuration's hash has the same 13-character DES shape.
        assert!(!verify_password("wrong", "..xpoEyRReGzk"));
        let md5 = pwhash::md5_crypt::hash("pw").unwrap();
        let sha256 = pwhash::sha256_crypt::hash("pw").unwrap();
        let sha512 = hash_password("pw").unwrap();
        let bcrypt = pwhash::bcrypt::hash_with(
            pwhash::bcrypt::BcryptSetup {
                cost: Some(4),
                ..Default::default()
            },
            "pw",
        )
        .unwrap();
        assert!(bcrypt.starts_with("$2b$"), "{bcrypt}");
        for (prefix, hash) in [
            ("$1$", &md5),
            ("$5$", &sha256),
            ("$6$", &sha512),
            ("$2b$", &bcrypt),
        ] {
            assert!(hash.starts_with(prefix), "{hash}");
            assert!(verify_password("pw", hash), "{hash}");
            assert!(!verify_password("px", hash), "{hash}");
        }
    }

    #[test]
    fn malformed_hashes_never_match_nor_panic() {
        for hash in [
            "",
            "$",
            "$6$",
            "$2b$",
            "$2b$99$x",
            "$1$$",
            "x",
            "$5$rounds=0$",
            "\u{0}\u{0}",
            "$2y$04$short",
            "é",
            DUMMY_HASH,
        ] {
            assert!(!verify_password("pw", hash), "{hash:?}");
        }
    }

    #[test]
    fn basic_header_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_credentials(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YWRtaW46cDpx"),
        );
        assert_eq!(basic_credentials(&h), Some(("admin".into(), "p:q".into())));
        for bad in ["Basic !!!", "Bearer abc", "Basic", "Basic YWRtaW4="] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(bad));
            assert_eq!(basic_credentials(&h), None, "{bad}");
        }
    }

    #[test]
    fn budget_reserved_before_checks_and_keyed_per_v4_address_or_v6_64() {
        let auth = Logins::new();
        let ip = IpAddr::from([127, 0, 0, 9]);
        // Checks in progress take the budget: a sixth simultaneous one is refused.
        let held: Vec<_> = (0..MAX_FAILURES)
            .map(|_| auth.0.reserve(ip).unwrap())
            .collect();
        assert!(auth.0.reserve(ip).is_err_and(|s| (1..=60).contains(&s)));
        assert_eq!(auth.throttled(ip), None, "nothing has failed yet");
        drop(held);
        for _ in 0..MAX_FAILURES - 1 {
            auth.0.reserve(ip).unwrap().failed();
        }
        assert_eq!(auth.throttled(ip), None);
        auth.0.reserve(ip).unwrap().failed();
        assert!(auth.throttled(ip).is_some_and(|s| s <= 60));
        assert!(auth.0.reserve(ip).is_err());
        assert_eq!(auth.throttled(IpAddr::from([127, 0, 0, 8])), None);
        // One /64 shares a budget; the IPv4-mapped form is the IPv4 address.
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(other));
        assert_eq!(source_key("::ffff:127.0.0.9".parse().unwrap()), ip);
        for _ in 0..MAX_FAILURES {
            auth.0.reserve(a).unwrap().failed();
        }
        assert!(auth.throttled(b).is_some());
        assert!(auth.throttled(other).is_none());
    }

    #[tokio::test]
    async fn a_spent_budget_refuses_even_the_right_password_unchecked() {
        let auth = Logins::new();
        let users = vec![UserConfig {
            name: "admin".into(),
            password_hash: hash_password("pw").unwrap(),
            access: Access::Full,
        }];
        let ip = IpAddr::from([127, 0, 0, 7]);
        assert!(auth.login(ip, &users, "admin", "pw").await.is_ok());
        for _ in 0..MAX_FAILURES {
            let refused = auth.login(ip, &users, "admin", "nope").await;
            assert_eq!(refused.unwrap_err(), Refused::Wrong);
        }
        let refused = auth.login(ip, &users, "admin", "pw").await;
        assert!(matches!(refused, Err(Refused::Throttled(_))), "{refused:?}");
    }

    #[test]
    fn hosts_of_this_server() {
        let local: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let allowed = ["lb.example".to_string(), "proxy.example:443".to_string()];
        let check = |host: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            check_host(&Uri::default(), &h, Some(local), &allowed, false)
        };
        for host in [
            "127.0.0.1:7000",
            "localhost:7000",
            "LOCALHOST.:7000",
            "[::1]:7000",
        ] {
            assert_eq!(check(host).unwrap(), HostName::Loopback, "{host}");
        }
        for host in ["lb.example", "lb.example:8", "proxy.example:443"] {
            assert_eq!(check(host).unwrap(), HostName::Own, "{host}");
        }
        for host in [
            "evil.example:7000",
            "127.0.0.1:7001",
            "localhost",
            "proxy.example",
            "proxy.example:80",
            "127.0.0.1:x",
            "[::1",
            "",
        ] {
            assert!(check(host).is_err(), "{host}");
        }
        assert_eq!(
            check_host(
                &Uri::default(),
                &HeaderMap::new(),
                Some(local),
                &allowed,
                false
            )
            .unwrap(),
            HostName::Absent
        );
        // Bound to every address: the one the client reached is the server's.
        let public: SocketAddr = "192.0.2.7:80".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("192.0.2.7"));
        assert_eq!(
            check_host(&Uri::default(), &h, Some(public), &[], false).unwrap(),
            HostName::Own
        );
        let v6: SocketAddr = "[2001:db8::1]:7000".parse().unwrap();
        h.insert(header::HOST, HeaderValue::from_static("[2001:DB8::1]:7000"));
        assert_eq!(
            check_host(&Uri::default(), &h, Some(v6), &[], false).unwrap(),
            HostName::Own
        );
        // Nested in an application's router: any address, names still checked.
        assert_eq!(
            check_host(&Uri::default(), &h, None, &[], false).unwrap(),
            HostName::Own
        );
        h.insert(header::HOST, HeaderValue::from_static("evil.example"));
        assert!(check_host(&Uri::default(), &h, None, &[], false).is_err());
    }

    #[test]
    fn absolute_targets_and_repeated_hosts() {
        let local: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7000"));
        let check = |target: &str, h: &HeaderMap| {
            check_host(&target.parse().unwrap(), h, Some(local), &[], false)
        };
        let evil = check("http://evil.example:7000/addHost", &h).unwrap_err();
        assert!(evil.to_string().contains("evil.example"), "{evil}");
        assert!(check("http://user@127.0.0.1:7000/", &h).is_err());
        assert_eq!(
            check("http://localhost:7000/x", &h).unwrap(),
            HostName::Loopback
        );
        assert_eq!(
            check("http://localhost:7000/x", &HeaderMap::new()).unwrap(),
            HostName::Loopback
        );
        h.append(header::HOST, HeaderValue::from_static("127.0.0.1:7000"));
        let twice = check("/", &h).unwrap_err();
        assert!(matches!(twice, AdminError::BadRequest(_)), "{twice}");
    }

    #[test]
    fn crypt_schemes_are_told_by_shape() {
        let sha512 = hash_password("pw-12345").unwrap();
        assert_eq!(crypt_scheme(&sha512), Some("SHA-512"));
        assert_eq!(crypt_scheme(DUMMY_HASH), Some("SHA-512"));
        // Unknown names cost a full hash, as wrong passwords do.
        let time = |hash: &str| {
            let start = std::time::Instant::now();
            for _ in 0..3 {
                assert!(!verify_password("guess", hash));
            }
            start.elapsed()
        };
        assert!(
            time(DUMMY_HASH) * 3 > time(&sha512),
            "the dummy hash is cheaper"
        );
        assert_eq!(crypt_scheme("abJnggxhB/yWI"), Some("DES"));
        for bad in [
            "plain",
            "",
            "$1$",
            "$6$$",
            "*",
            "!",
            "$6$salt$short",
            "$6$rounds=x$s$",
        ] {
            assert_eq!(crypt_scheme(bad), None, "{bad}");
        }
    }

    #[test]
    fn changes_and_origins() {
        assert!(is_change(&Method::GET, "/addHost"));
        assert!(is_change(&Method::POST, "/api/v1/users"));
        assert!(!is_change(&Method::GET, "/running"));
        assert!(!is_change(&Method::GET, "/api/v1/services"));
        let mut h = HeaderMap::new();
        assert!(check_same_origin(&h).is_ok());
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7000"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:7000"),
        );
        assert!(check_same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(check_same_origin(&h).is_err());
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(check_same_origin(&h).is_err());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        h.insert(
            header::REFERER,
            HeaderValue::from_static("https://127.0.0.1:7000/running"),
        );
        assert!(check_same_origin(&h).is_ok());
    }
}
