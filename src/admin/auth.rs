//! Who is asking: HTTP basic auth against the configured users' crypt(3) hashes,
//! throttling of failed logins per source address, read-only enforcement and the
//! cross-site check on every changing request.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::AdminState;
use super::error::AdminError;
use crate::config::{Access, UserConfig};

/// Failed logins from one address within [`FAILURE_WINDOW`] before it is refused
/// with 429 until the window ends.
pub const MAX_FAILURES: u32 = 5;
/// The window in which failed logins are counted.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; past that the oldest windows are forgotten.
const MAX_TRACKED: usize = 4096;
/// Verified credentials remembered, so a page with live updates does not pay a
/// bcrypt or SHA-crypt round per request.
const MAX_CACHED: usize = 256;

/// A SHA-512-crypt hash of a password that matches nobody, verified against when
/// the user name is unknown so that unknown names take as long as wrong passwords.
const DUMMY_HASH: &str = "$6$rounds=5000$txlbdummysalt$\
    Zb6hZ2e0fZl0I3t0r7f5xKp7cM7b1bq3H0Qw5y6c8f6oX3sV2Zq5kL1dY0mP9nB4aR2tE7uI8oW3qS6zX1cV0";

/// The authenticated user of a request, put in its extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Login name (`-` when the server runs without users on loopback).
    pub name: String,
    /// What the user may do.
    pub access: Access,
}

/// Login bookkeeping shared by all requests of one router.
pub(crate) struct Auth {
    /// Failed logins per source address: count and window start. Written by
    /// failing requests; a mutex because logins are rare and the map is small.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// Digests of credentials verified before (keyed with `secret`), so the hash is
    /// not recomputed per request.
    verified: Mutex<HashMap<[u8; 32], ()>>,
    /// Random per-process key of the credential digests.
    secret: [u8; 32],
}

impl Auth {
    pub(crate) fn new() -> Self {
        let mut secret = [0u8; 32];
        random_bytes(&mut secret);
        Auth {
            failures: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            secret,
        }
    }

    /// Seconds until `ip` may try again, when it is throttled.
    pub(crate) fn throttled(&self, ip: IpAddr) -> Option<u64> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (count, start) = failures.get(&ip)?;
        let left = FAILURE_WINDOW.checked_sub(start.elapsed())?;
        (*count >= MAX_FAILURES).then(|| left.as_secs().max(1))
    }

    pub(crate) fn record_failure(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (_, start)| now.duration_since(*start) < FAILURE_WINDOW);
        }
        let entry = failures.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
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

    /// Checks `user:password` against `users`; the hash is computed off the async
    /// runtime. Unknown names cost the same as wrong passwords.
    pub(crate) async fn check(
        &self,
        users: &[UserConfig],
        name: &str,
        password: &str,
    ) -> Option<Principal> {
        let user = users.iter().find(|u| u.name == name);
        let hash = user.map_or(DUMMY_HASH, |u| u.password_hash.as_str());
        let digest = self.digest(name, password, hash);
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&digest);
        let ok = cached || {
            let (password, hash) = (password.to_string(), hash.to_string());
            tokio::task::spawn_blocking(move || verify_password(&password, &hash))
                .await
                .unwrap_or(false)
        };
        let user = user.filter(|_| ok)?;
        if !cached {
            let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if verified.len() >= MAX_CACHED {
                verified.clear();
            }
            verified.insert(digest, ());
        }
        Some(Principal {
            name: user.name.clone(),
            access: user.access,
        })
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

/// A SHA-512-crypt hash of `password` with a random salt, for `<user password=…>`.
/// Every way a password comes in goes through here, so here it is checked
/// ([`check_password`](crate::config::check_password): not empty or only
/// spaces, bounded).
pub fn hash_password(password: &str) -> Result<String, AdminError> {
    crate::config::check_password(password).map_err(|reason| AdminError::BadParameter {
        name: "password",
        reason,
    })?;
    pwhash::sha512_crypt::hash(password).map_err(|e| {
        tracing::error!(error = %e, "password hashing failed");
        AdminError::Internal("password hashing failed")
    })
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

/// Legacy calls that change the running balancer (all others only read).
pub(crate) const LEGACY_CHANGES: &[&str] = &[
    "addHost",
    "delHost",
    "delAllHosts",
    "enableGroup",
    "changeScheduler",
    "addUser",
    "delUser",
    "newService",
    "delService",
    "addListener",
    "delListener",
    "newGroup",
    "delGroup",
    "retryHost",
    "hostAdminDown",
    "hostAdminUp",
    "drainHost",
    "closeConnection",
    "closeLog",
    "saveConfig",
];

/// Whether a request asks for a change: any method but GET and HEAD, and the
/// legacy changing calls whatever their method.
pub(crate) fn is_change(method: &Method, path: &str) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return true;
    }
    let last = path.rsplit('/').next().unwrap_or("");
    LEGACY_CHANGES.contains(&last)
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
    if state.settings.metrics_public && path == "/metrics" {
        return next.run(request).await;
    }
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let users = state.users();
    let principal = if users.is_empty() {
        if !state.settings.open_without_users {
            return fail(AdminError::Unauthorized("no admin users are configured"));
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
        match state.auth.check(&users, &name, &password).await {
            Some(p) => p,
            None => {
                state.auth.record_failure(ip);
                // The name is logged, never the password.
                tracing::warn!(user = %name, client = %ip, "admin login failed");
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
        if let Err(e) = check_same_origin(request.headers()) {
            return fail(e);
        }
        tracing::info!(user = %principal.name, method = %request.method(), path, "admin change");
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
    fn throttling_after_repeated_failures() {
        let auth = Auth::new();
        let ip = IpAddr::from([127, 0, 0, 9]);
        for _ in 0..MAX_FAILURES - 1 {
            auth.record_failure(ip);
        }
        assert_eq!(auth.throttled(ip), None);
        auth.record_failure(ip);
        assert!(auth.throttled(ip).is_some_and(|s| s <= 60));
        assert_eq!(auth.throttled(IpAddr::from([127, 0, 0, 8])), None);
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
