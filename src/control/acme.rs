//! Certificates from ACME (`<acme>`, `<tls acme="…">`): one control-plane
//! task orders, stores and renews the certificate of every set of names the
//! running configuration asks for, and swaps each into its slot
//! (`tls::acme::AcmeSlot`), which the listeners serve from. It answers the
//! challenges through `tls::acme::Challenges` (the listeners answer the
//! server's validations), never touches the data path otherwise, and is
//! bounded: a timeout on every request and on every order, one order at a
//! time, and a doubling back-off after a failure.
//!
//! Kept under `storage` (directory 0700, files 0600): `account.json` (the
//! account's key, for the directory it was made at) and, per certificate,
//! `NAME-HASH.pem` (the chain) and `NAME-HASH.key`; read again at start, so
//! a restart orders nothing while the stored certificate is good.
//!
//! In fleet mode the account, the certificates and the challenges being
//! answered live in etcd (a [`Store`] the fleet module gives `run`), with
//! `storage` as this instance's copy for when etcd is away. A certificate
//! due is first looked for there (another instance may have ordered it);
//! only the instance holding its lock (an etcd key under a lease) orders it,
//! the others look again every [`FLEET_WAIT`] until it is stored. Every
//! instance answers the challenges published there (the fleet watches them:
//! [`answer_published`]), since the ACME server may validate on any of them.
//! The account is made under a lock too.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use tokio_util::sync::CancellationToken;

use super::Controller;
use crate::config::{AcmeChallenge, AcmeConfig, Config};
use crate::events::Event;
use crate::tls::acme::{AcmeSlot, Challenges, Issued, validation_key};

/// Longest wait for one request to the ACME server (connect, answer, body).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a TCP connection to the ACME server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer body read from the ACME server (a chain is a few KiB).
const MAX_BODY: usize = 1024 * 1024;
/// Longest time one order may take, from the new order to the certificate.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the server is given to validate and to issue.
const POLL_TIMEOUT: Duration = Duration::from_secs(120);
/// First wait after a failed order; doubles after each failure in a row.
pub const RETRY_MIN: Duration = Duration::from_secs(60);
/// Longest wait between two tries of a failing order.
pub const RETRY_MAX: Duration = Duration::from_secs(3600);
/// Longest sleep of the task: it looks again at least this often.
const LOOK_INTERVAL: Duration = Duration::from_secs(3600);
/// Largest file read back from storage.
const MAX_STORED_BYTES: u64 = 1024 * 1024;
/// Fleet mode: how soon an instance looks again for a certificate another
/// instance is ordering.
pub const FLEET_WAIT: Duration = Duration::from_secs(1);
/// Fleet mode: how long the instance ordering waits after publishing a
/// challenge before telling the ACME server it is ready, so that every
/// instance answers it (they watch the challenges: milliseconds, unless
/// busy).
const CHALLENGE_SPREAD: Duration = Duration::from_secs(1);

/// A boxed future, for the object-safe [`Store`].
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The right to order a certificate for the fleet, held until dropped (the
/// etcd lease its key is attached to is revoked).
pub(crate) struct Lock {
    /// The lease the lock's key (and the challenges published under it) are
    /// attached to.
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub lease: i64,
    /// Ends the lease when dropped.
    pub _held: Box<dyn Send + Sync>,
}

/// A challenge being answered, as published for the other instances:
/// `tls-alpn-01` by name (the SHA-256 of the key authorization, hex),
/// `http-01` by token (the key authorization).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Published {
    /// `tls-alpn-01` or `http-01`.
    pub kind: String,
    /// The name or the token.
    pub id: String,
    /// The digest (hex) or the key authorization.
    pub value: String,
}

/// Where the account and certificates are kept besides `storage`, shared
/// by instances: etcd in fleet mode (`fleet/acme.rs`). Every call is
/// bounded by the store's own request timeout.
pub(crate) trait Store: Send + Sync {
    /// The stored account (`account.json`'s bytes), if there is one.
    fn account(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>>;
    /// Stores `bytes` as the account (made under the lock `account`).
    fn store_account(&self, bytes: Vec<u8>) -> BoxFuture<'_, Result<(), String>>;
    /// The stored certificate `base` (`NAME-HASH`): its chain, then its
    /// key, PEM.
    fn certificate<'a>(&'a self, base: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>>;
    /// Stores the chain and key of `base`.
    fn store_certificate<'a>(
        &'a self,
        base: &'a str,
        chain: &'a [u8],
        key: &'a [u8],
    ) -> BoxFuture<'a, Result<(), String>>;
    /// The right to order `base`; `None` while another instance holds it.
    fn lock<'a>(&'a self, base: &'a str) -> BoxFuture<'a, Result<Option<Lock>, String>>;
    /// Publishes a challenge answered under `lock`, for the other instances
    /// (gone with the lock).
    fn publish<'a>(
        &'a self,
        lock: &'a Lock,
        challenge: Published,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Where `base` is stored, as shown (`file` of its certificate).
    fn place(&self, base: &str) -> PathBuf;
}

/// The wait before the next try after `failures` failed orders in a row.
pub fn retry_after(failures: u32) -> Duration {
    let doubled = RETRY_MIN.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(RETRY_MAX)
}

/// One certificate the running configuration asks for.
struct Job {
    slot: Arc<AcmeSlot>,
    /// Storage has been looked at for it.
    loaded: bool,
    /// Failed orders in a row.
    failures: u32,
    /// After a failure: not tried again before then.
    retry_at: Option<tokio::time::Instant>,
}

/// Orders, stores and renews the certificates from ACME of the running
/// configuration, until `stop`: the control plane's task (see the module).
/// `shared`: the fleet's store (etcd), in fleet mode.
pub(crate) async fn run(
    controller: Weak<Controller>,
    stop: CancellationToken,
    shared: Option<Arc<dyn Store>>,
) {
    let mut jobs: HashMap<Vec<String>, Job> = HashMap::new();
    let mut account: Option<(AcmeConfig, Account)> = None;
    loop {
        let Some(c) = controller.upgrade() else {
            return;
        };
        let (config, acme, events) = (c.running_shared(), c.acme.clone(), c.data.events.clone());
        drop(c);
        let wanted = wanted(&config);
        jobs.retain(|names, _| wanted.contains(names));
        acme.retain(&wanted);
        let mut next = LOOK_INTERVAL;
        if let Some(settings) = &config.acme {
            let store = Stores {
                files: storage_of(settings),
                shared: shared.clone(),
            };
            for names in &wanted {
                let job = jobs.entry(names.clone()).or_insert_with(|| Job {
                    slot: acme.slot(names),
                    loaded: false,
                    failures: 0,
                    retry_at: None,
                });
                if !job.loaded {
                    job.loaded = true;
                    load_stored(&store, &job.slot).await;
                }
                let due_in = renew_in(&job.slot, settings.renew_before);
                let now = tokio::time::Instant::now();
                if due_in > Duration::ZERO {
                    next = next.min(due_in);
                    continue;
                }
                if let Some(at) = job.retry_at.filter(|at| *at > now) {
                    next = next.min(at - now);
                    continue;
                }
                // Due. In a fleet, another instance may have ordered it, and
                // only the one holding its lock orders.
                let lock = match store.shared.as_ref() {
                    None => None,
                    Some(fleet) => {
                        if load_stored(&store, &job.slot).await
                            && renew_in(&job.slot, settings.renew_before) > Duration::ZERO
                        {
                            next = next.min(renew_in_at_least_a_second(&job.slot, settings));
                            continue;
                        }
                        match fleet.lock(&base_of(&job.slot.names)).await {
                            Ok(Some(lock)) => Some(lock),
                            Ok(None) => {
                                next = next.min(FLEET_WAIT);
                                continue;
                            }
                            Err(error) => {
                                tracing::warn!(names = %job.slot.names.join(" "), %error, "fleet: cannot take the lock to order an ACME certificate; looking again");
                                next = next.min(FLEET_WAIT * 8);
                                continue;
                            }
                        }
                    }
                };
                // Under the lock: the instance that held it before may have
                // stored one just now.
                if lock.is_some()
                    && load_stored(&store, &job.slot).await
                    && renew_in(&job.slot, settings.renew_before) > Duration::ZERO
                {
                    next = next.min(renew_in_at_least_a_second(&job.slot, settings));
                    continue;
                }
                let order = Ordering {
                    settings,
                    store: &store,
                    lock: lock.as_ref(),
                    challenges: &acme.challenges,
                };
                let ordered = tokio::select! {
                    _ = stop.cancelled() => return,
                    ordered = tokio::time::timeout(
                        ORDER_TIMEOUT,
                        obtain(&order, &mut account, &job.slot.names),
                    ) => ordered.unwrap_or_else(|_| Err(format!(
                        "the order took longer than {} s", ORDER_TIMEOUT.as_secs()
                    ))),
                };
                let done = match ordered {
                    Ok((chain, key)) => store_issued(&store, &job.slot, &chain, &key).await,
                    Err(reason) => Err(reason),
                };
                drop(lock);
                match done {
                    Ok(issued) => {
                        job.failures = 0;
                        job.retry_at = None;
                        events.emit(Event::AcmeIssued {
                            names: job.slot.names.clone(),
                            issuer: issued.info.issuer.clone(),
                            not_after: issued.info.not_after,
                        });
                        job.slot.install(issued);
                        next = next.min(renew_in_at_least_a_second(&job.slot, settings));
                    }
                    Err(reason) => {
                        job.failures += 1;
                        let wait = retry_after(job.failures);
                        job.retry_at = Some(tokio::time::Instant::now() + wait);
                        // A new account next time: the trouble may be it.
                        account = None;
                        events.emit(Event::AcmeFailed {
                            names: job.slot.names.clone(),
                            reason: shortened(reason),
                            retry_in: wait.as_secs(),
                        });
                        next = next.min(wait);
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = acme.changed.notified() => {}
            _ = tokio::time::sleep(next) => {}
        }
    }
}

/// Fleet mode: answers the challenges other instances publish (`now`, all
/// of them), and stops answering those of `answered` no longer published;
/// `answered` becomes `now`. Called by the fleet's watch of them.
#[cfg_attr(not(feature = "fleet"), allow(dead_code))]
pub(crate) fn answer_published(
    challenges: &Challenges,
    answered: &mut Vec<Published>,
    now: Vec<Published>,
) {
    for gone in answered.iter().filter(|c| !now.contains(c)) {
        match gone.kind.as_str() {
            "http-01" => challenges.forget_http(&gone.id),
            _ => challenges.forget_tls_alpn(&gone.id),
        }
    }
    for new in now.iter().filter(|c| !answered.contains(c)) {
        match new.kind.as_str() {
            "http-01" => challenges.answer_http(&new.id, &new.value),
            _ => {
                let digest = from_hex(&new.value);
                match digest.map(|d| validation_key(&new.id, &d)) {
                    Some(Ok(key)) => challenges.answer_tls_alpn(&new.id, Arc::new(key)),
                    _ => {
                        tracing::warn!(name = %new.id, "fleet: a published tls-alpn-01 challenge is not a digest; not answered")
                    }
                }
            }
        }
    }
    *answered = now;
}

/// Bytes from lower-case hex (`None` if it is not).
#[cfg_attr(not(feature = "fleet"), allow(dead_code))]
fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Hex of `bytes`, lower case.
fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Longest reason of a failed order told (a server's problem document
/// can be long).
const MAX_REASON: usize = 1024;

/// `reason`, cut to [`MAX_REASON`] bytes (at a character boundary).
fn shortened(mut reason: String) -> String {
    if reason.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    reason
}

/// The sorted names of every `<tls acme>` of `config` (none without `<acme>`).
fn wanted(config: &Config) -> Vec<Vec<String>> {
    if config.acme.is_none() {
        return Vec::new();
    }
    let mut out: Vec<Vec<String>> = Vec::new();
    for listener in config.services.iter().flat_map(|s| &s.listeners) {
        for cert in listener.tls.iter().flat_map(|t| &t.acme) {
            let mut names = cert.names.clone();
            names.sort();
            names.dedup();
            if !out.contains(&names) {
                out.push(names);
            }
        }
    }
    out
}

/// How long until the certificate in `slot` is due for renewal (zero: now,
/// or there is none).
fn renew_in(slot: &AcmeSlot, renew_before: Duration) -> Duration {
    let Some(issued) = slot.current() else {
        return Duration::ZERO;
    };
    let left = issued.info.expires_in(SystemTime::now());
    let due_in = left.saturating_sub(renew_before.as_secs() as i64);
    Duration::from_secs(due_in.max(0) as u64)
}

/// [`renew_in`] of a certificate just issued, at least a second (a server
/// issuing certificates shorter than `renewBefore` is not asked in a loop).
fn renew_in_at_least_a_second(slot: &AcmeSlot, settings: &AcmeConfig) -> Duration {
    renew_in(slot, settings.renew_before).max(Duration::from_secs(1))
}

/// The storage directory (`check` makes sure it is given).
fn storage_of(settings: &AcmeConfig) -> PathBuf {
    settings.storage.clone().unwrap_or_default()
}

/// What the certificate of `names` is stored as: `FIRST-HASH` (the hash of
/// every name, so two sets sharing their first name do not share files).
fn base_of(names: &[String]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(names.join(" ").as_bytes());
    let first = names.first().map_or("certificate", String::as_str);
    format!("{first}-{}", to_hex(&digest[..6]))
}

/// Where the certificate of `names` is stored under `storage`:
/// `FIRST-HASH.pem` and `FIRST-HASH.key`.
fn files_of(storage: &Path, names: &[String]) -> (PathBuf, PathBuf) {
    let base = base_of(names);
    (
        storage.join(format!("{base}.pem")),
        storage.join(format!("{base}.key")),
    )
}

/// The stores of one round: `storage`, and the fleet's in fleet mode.
struct Stores {
    files: PathBuf,
    shared: Option<Arc<dyn Store>>,
}

impl Stores {
    /// The stored chain and key of `names`, and where they are: the fleet's
    /// (when it answers), else this instance's files.
    async fn certificate(&self, names: &[String]) -> Option<(Vec<u8>, Vec<u8>, PathBuf)> {
        let base = base_of(names);
        if let Some(fleet) = &self.shared {
            match fleet.certificate(&base).await {
                // Each reader picks its own PEM blocks out of the text.
                Ok(Some(pem)) => return Some((pem.clone(), pem, fleet.place(&base))),
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(%error, "fleet: cannot read the ACME certificate from etcd; reading this instance's copy")
                }
            }
        }
        let (cert_file, key_file) = files_of(&self.files, names);
        match (read_stored(&cert_file), read_stored(&key_file)) {
            (Ok(chain), Ok(key)) => Some((chain, key, cert_file)),
            _ => None,
        }
    }
}

/// Serves the certificate stored for `slot` if it is a good one (its names
/// are the slot's, it has not expired) and ends later than the one served:
/// whether it did.
async fn load_stored(store: &Stores, slot: &AcmeSlot) -> bool {
    let Some((cert, key, place)) = store.certificate(&slot.names).await else {
        return false;
    };
    match crate::tls::certified_from_pem(&place, &cert, &key) {
        Ok((key, info)) => {
            let mut names = info.names.clone();
            names.sort();
            if names != slot.names || info.expires_in(SystemTime::now()) <= 0 {
                tracing::info!(file = %place.display(), "stored ACME certificate is for other names or expired: ordering a new one");
                return false;
            }
            if slot
                .current()
                .is_some_and(|current| current.info.not_after >= info.not_after)
            {
                return false;
            }
            tracing::info!(names = %slot.names.join(" "), file = %place.display(), not_after = info.not_after, "serving the stored ACME certificate");
            slot.install(Issued {
                key: Arc::new(key),
                info,
            });
            true
        }
        Err(error) => {
            tracing::warn!(file = %place.display(), %error, "stored ACME certificate does not load: ordering a new one");
            false
        }
    }
}

/// A stored file's bytes, bounded.
fn read_stored(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_STORED_BYTES)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Checks an issued chain and its key, writes them under `storage` (and to
/// the fleet's store) and returns them ready to serve.
async fn store_issued(
    store: &Stores,
    slot: &AcmeSlot,
    chain: &str,
    key: &str,
) -> Result<Issued, String> {
    let (cert_file, key_file) = files_of(&store.files, &slot.names);
    let base = base_of(&slot.names);
    let place = match &store.shared {
        Some(fleet) => fleet.place(&base),
        None => cert_file.clone(),
    };
    let (certified, info) =
        crate::tls::certified_from_pem(&place, chain.as_bytes(), key.as_bytes())
            .map_err(|e| format!("the issued certificate does not load: {e}"))?;
    if let Some(fleet) = &store.shared {
        // Served here even if etcd fails it now: the others order their own.
        if let Err(error) = fleet
            .store_certificate(&base, chain.as_bytes(), key.as_bytes())
            .await
        {
            tracing::warn!(%error, names = %slot.names.join(" "), "fleet: cannot store the ACME certificate in etcd; the other instances will order their own");
        }
    }
    private_dir(&store.files)?;
    write_private(&key_file, key.as_bytes())?;
    write_private(&cert_file, chain.as_bytes())?;
    Ok(Issued {
        key: Arc::new(certified),
        info,
    })
}

/// Creates `dir` (and its parents) if needed, readable by txlb's user alone.
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let fail = |e: std::io::Error| format!("cannot create the storage {}: {e}", dir.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)
}

/// Writes `path` whole or not at all (a new file renamed over it), mode 0600.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let dir = path.parent().unwrap_or(Path::new("."));
    // tempfile creates the file 0600, exclusively, under a random name.
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.as_file().sync_all().map_err(fail)?;
    file.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// `account.json`: the account's credentials and the directory they are for.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// What an order needs: the settings, where the account is, the fleet's
/// lock (fleet mode) and the challenges to answer.
struct Ordering<'o> {
    settings: &'o AcmeConfig,
    store: &'o Stores,
    lock: Option<&'o Lock>,
    challenges: &'o Challenges,
}

/// Orders a certificate for `names`: the account (stored, else created),
/// the order, each authorization's challenge answered, the CSR of a new
/// ECDSA P-256 key, the chain. Returns the chain and the key, PEM.
async fn obtain(
    order: &Ordering<'_>,
    account: &mut Option<(AcmeConfig, Account)>,
    names: &[String],
) -> Result<(String, String), String> {
    let current = match account.take() {
        Some((made_for, current)) if made_for == *order.settings => current,
        _ => open_account(order.settings, order.store).await?,
    };
    let result = self::order(&current, order, names).await;
    *account = Some((order.settings.clone(), current));
    result
}

/// The account of `settings`: read from the store if it was made at this
/// directory, else created there (agreeing to its terms of service) and
/// stored; in a fleet, the one another instance stored first if it did.
async fn open_account(settings: &AcmeConfig, store: &Stores) -> Result<Account, String> {
    let path = store.files.join("account.json");
    let directory = settings.directory.0.clone();
    let http = || http_client(settings);
    let from_stored = |text: &[u8]| {
        serde_json::from_slice::<StoredAccount>(text)
            .ok()
            .filter(|stored| stored.directory == directory)
    };
    // In a fleet, the fleet's account; one instance makes it, under a lock
    // (the order's timeout bounds the wait).
    let mut _making = None;
    let stored = loop {
        let Some(fleet) = &store.shared else {
            break read_stored(&path).ok();
        };
        let found = match fleet.account().await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "fleet: cannot read the ACME account from etcd; using this instance's copy");
                break read_stored(&path).ok();
            }
        };
        if found.as_deref().and_then(from_stored).is_some() {
            break found;
        }
        match fleet.lock("account").await {
            Ok(Some(lock)) => {
                _making = Some(lock);
                // It may have been stored just before the lock was ours.
                break fleet.account().await.ok().flatten();
            }
            Ok(None) => tokio::time::sleep(FLEET_WAIT).await,
            Err(error) => return Err(format!("fleet: the account's lock: {error}")),
        }
    };
    if let Some(stored) = stored.as_deref().and_then(from_stored) {
        return Account::builder_with_http(http()?)
            .from_credentials(stored.credentials)
            .await
            .map_err(|e| format!("the stored account does not load: {e}"));
    }
    let contact = match settings.email.0.is_empty() {
        true => None,
        false => Some(format!("mailto:{}", settings.email.0)),
    };
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(http()?)
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.clone(),
            None,
        )
        .await
        .map_err(|e| format!("cannot create an account at {directory}: {e}"))?;
    let stored = serde_json::to_vec_pretty(&StoredAccount {
        directory: directory.clone(),
        credentials,
    })
    .map_err(|e| e.to_string())?;
    if let Some(fleet) = &store.shared
        && let Err(error) = fleet.store_account(stored.clone()).await
    {
        tracing::warn!(%error, "fleet: cannot store the ACME account in etcd");
    }
    private_dir(&store.files)?;
    write_private(&path, &stored)?;
    tracing::info!(account = account.id(), "ACME account created");
    Ok(account)
}

/// One order, its challenges answered until it ends (whichever way).
async fn order(
    account: &Account,
    ordering: &Ordering<'_>,
    names: &[String],
) -> Result<(String, String), String> {
    let (challenge, challenges) = (ordering.settings.challenge, ordering.challenges);
    let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| format!("new order: {e}"))?;
    let mut answering = Answering {
        challenges,
        http: Vec::new(),
        tls_alpn: Vec::new(),
    };
    let kind = match challenge {
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(|e| format!("authorization: {e}"))?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(format!("authorization is {other:?}")),
        }
        let mut handle = authorization
            .challenge(kind.clone())
            .ok_or_else(|| format!("the ACME server offers no {} challenge", challenge.as_str()))?;
        let name = handle.identifier().to_string();
        let key_authorization = handle.key_authorization();
        let published = match challenge {
            AcmeChallenge::TlsAlpn01 => {
                let digest = key_authorization.digest();
                let key = validation_key(&name, digest.as_ref())?;
                challenges.answer_tls_alpn(&name, Arc::new(key));
                answering.tls_alpn.push(name.clone());
                Published {
                    kind: challenge.as_str().into(),
                    id: name.to_ascii_lowercase(),
                    value: to_hex(digest.as_ref()),
                }
            }
            AcmeChallenge::Http01 => {
                challenges.answer_http(&handle.token, key_authorization.as_str());
                answering.http.push(handle.token.clone());
                Published {
                    kind: challenge.as_str().into(),
                    id: handle.token.clone(),
                    value: key_authorization.as_str().to_string(),
                }
            }
        };
        // In a fleet the server may validate on any instance: each is
        // given time to answer too.
        if let (Some(fleet), Some(lock)) = (&ordering.store.shared, ordering.lock) {
            fleet
                .publish(lock, published)
                .await
                .map_err(|e| format!("{name}: publishing the challenge in etcd: {e}"))?;
            tokio::time::sleep(CHALLENGE_SPREAD).await;
        }
        handle
            .set_ready()
            .await
            .map_err(|e| format!("{name}: challenge: {e}"))?;
    }
    let policy = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(POLL_TIMEOUT);
    let status = order
        .poll_ready(&policy)
        .await
        .map_err(|e| format!("validation: {e}"))?;
    if status != OrderStatus::Ready {
        let why = order
            .state()
            .error
            .as_ref()
            .map(|p| format!(": {p}"))
            .unwrap_or_default();
        return Err(format!("the order is {status:?}{why}"));
    }
    drop(answering);
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| format!("finalize: {e}"))?;
    let chain = order
        .poll_certificate(&policy)
        .await
        .map_err(|e| format!("certificate: {e}"))?;
    Ok((chain, key.serialize_pem()))
}

/// The challenges an order answers, forgotten when it ends (whichever way).
struct Answering<'c> {
    challenges: &'c Challenges,
    http: Vec<String>,
    tls_alpn: Vec<String>,
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        for token in &self.http {
            self.challenges.forget_http(token);
        }
        for name in &self.tls_alpn {
            self.challenges.forget_tls_alpn(name);
        }
    }
}

/// The HTTPS client of the ACME requests: rustls trusting `caBundle` (else
/// the system's roots), every request bounded in time and body size.
fn http_client(settings: &AcmeConfig) -> Result<Box<dyn HttpClient>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &settings.ca_bundle {
        Some(file) => {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject as _;
            let text = crate::tls::read_pem(file)?;
            for cert in CertificateDer::pem_slice_iter(&text) {
                let cert =
                    cert.map_err(|e| format!("caBundle {}: bad PEM: {e}", file.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("caBundle {}: {e}", file.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("caBundle {}: no certificate in it", file.display()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err("no trusted root in the system's store (expected the ca-certificates package, or caBundle)".into());
            }
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(tcp);
    Ok(Box::new(Bounded(
        Client::builder(TokioExecutor::new()).build(https),
    )))
}

/// The ACME requests' client: each bounded by [`REQUEST_TIMEOUT`] and
/// [`MAX_BODY`].
struct Bounded(Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>);

impl HttpClient for Bounded {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let sent = self.0.request(req);
        Box::pin(async move {
            let answer = async {
                let response = sent
                    .await
                    .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, MAX_BODY)
                    .collect()
                    .await
                    .map_err(instant_acme::Error::Other)?
                    .to_bytes();
                Ok(BytesResponse::from(hyper::Response::from_parts(
                    parts,
                    Full::new(body),
                )))
            };
            tokio::time::timeout(REQUEST_TIMEOUT, answer)
                .await
                .unwrap_or(Err(instant_acme::Error::Str(
                    "no answer from the ACME server in time",
                )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_doubling_up_to_the_most() {
        assert_eq!(retry_after(1), RETRY_MIN);
        assert_eq!(retry_after(2), RETRY_MIN * 2);
        assert_eq!(retry_after(3), RETRY_MIN * 4);
        assert_eq!(retry_after(30), RETRY_MAX);
        assert_eq!(retry_after(u32::MAX), RETRY_MAX);
    }

    #[test]
    fn long_reasons_are_cut() {
        assert_eq!(shortened("short".into()), "short");
        let long = shortened("é".repeat(2000));
        assert!(long.len() <= MAX_REASON + '…'.len_utf8() && long.ends_with('…'));
    }

    #[test]
    fn files_are_named_by_the_first_name_and_all_of_them() {
        let dir = Path::new("/s");
        let (a, b) = (
            files_of(dir, &["a.test".into()]),
            files_of(dir, &["a.test".into(), "b.test".into()]),
        );
        assert!(a.0.to_str().unwrap().starts_with("/s/a.test-"));
        assert_eq!(a.0.extension().unwrap(), "pem");
        assert!(a.1.extension().unwrap() == "key");
        assert_ne!(a.0, b.0);
    }

    #[test]
    fn published_challenges_are_answered_until_withdrawn() {
        assert_eq!(from_hex(&to_hex(&[0, 9, 255])), Some(vec![0, 9, 255]));
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("abc"), None);
        let challenges = Challenges::default();
        let mut answered = Vec::new();
        let tls = Published {
            kind: "tls-alpn-01".into(),
            id: "a.test".into(),
            value: to_hex(&[7; 32]),
        };
        let http = Published {
            kind: "http-01".into(),
            id: "tok".into(),
            value: "tok.thumb".into(),
        };
        let bad = Published {
            kind: "tls-alpn-01".into(),
            id: "b.test".into(),
            value: "not hex".into(),
        };
        answer_published(
            &challenges,
            &mut answered,
            vec![tls.clone(), http.clone(), bad],
        );
        assert_eq!(challenges.http("tok").as_deref(), Some("tok.thumb"));
        assert!(challenges.answers_tls_alpn("a.test"));
        assert!(!challenges.answers_tls_alpn("b.test"));
        answer_published(&challenges, &mut answered, vec![tls]);
        assert!(!challenges.answers_http());
        assert!(challenges.answers_tls_alpn("a.test"));
        answer_published(&challenges, &mut answered, Vec::new());
        assert!(!challenges.answers_tls_alpn("a.test"));
        assert!(answered.is_empty());
    }

    #[test]
    fn stored_files_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("acme/store");
        private_dir(&storage).unwrap();
        write_private(&storage.join("f"), b"x").unwrap();
        write_private(&storage.join("f"), b"y").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&storage), 0o700);
        assert_eq!(mode(&storage.join("f")), 0o600);
        assert_eq!(std::fs::read(storage.join("f")).unwrap(), b"y");
    }
}
