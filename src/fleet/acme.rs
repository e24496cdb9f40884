//! Certificates from ACME in fleet mode: the account, the certificates and
//! the challenges being answered, kept in etcd for every instance
//! (`control::acme::Store`), and the lock under which one instance orders a
//! certificate. Keys under the prefix:
//!
//! - `{prefix}/acme/account`: the account (JSON, as `account.json`);
//! - `{prefix}/acme/certs/NAME-HASH`: a certificate's chain then its key (PEM);
//! - `{prefix}/acme/locks/NAME-HASH`: the name of the instance ordering it,
//!   attached to a lease it renews while the order runs ([`LOCK_TTL`]): an
//!   instance that dies lets another take over within that time;
//! - `{prefix}/acme/challenges/KIND/ID`: a challenge being answered (see
//!   `control::acme::Published`), under the same lease; every instance
//!   watches them and answers them too ([`follow_challenges`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::etcd::{Client, Swap};
use crate::control::acme::{BoxFuture, Lock, Published, Store};

/// How long a lock outlives the instance holding it.
const LOCK_TTL: Duration = Duration::from_secs(10);
/// How often the instance holding a lock renews its lease.
const LOCK_RENEW: Duration = Duration::from_secs(3);

/// The fleet's ACME store in etcd.
pub(crate) struct EtcdStore {
    client: Arc<Client>,
    /// `{prefix}/acme/`.
    root: String,
    /// This instance's name (the value of the locks it holds).
    instance: String,
}

impl EtcdStore {
    pub(crate) fn new(client: Arc<Client>, prefix: &str, instance: &str) -> EtcdStore {
        EtcdStore {
            client,
            root: format!("{prefix}/acme/"),
            instance: instance.to_string(),
        }
    }
}

impl EtcdStore {
    /// The challenges the instances ordering now publish.
    async fn published(&self) -> Result<Vec<Published>, String> {
        let prefix = format!("{}challenges/", self.root);
        let kvs = self
            .client
            .get_prefix(&prefix)
            .await
            .map_err(|e| e.to_string())?;
        Ok(kvs
            .into_iter()
            .filter_map(|kv| {
                let (kind, id) = kv.key.strip_prefix(&prefix)?.split_once('/')?;
                Some(Published {
                    kind: kind.to_string(),
                    id: id.to_string(),
                    value: String::from_utf8(kv.value).ok()?,
                })
            })
            .collect())
    }
}

impl Store for EtcdStore {
    fn account(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>> {
        Box::pin(async move {
            let (kv, _) = self
                .client
                .get(&format!("{}account", self.root))
                .await
                .map_err(|e| e.to_string())?;
            Ok(kv.map(|kv| kv.value))
        })
    }

    fn store_account(&self, bytes: Vec<u8>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let key = format!("{}account", self.root);
            self.client
                .put(&key, &bytes, None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn certificate<'a>(&'a self, base: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>> {
        Box::pin(async move {
            let (kv, _) = self
                .client
                .get(&format!("{}certs/{base}", self.root))
                .await
                .map_err(|e| e.to_string())?;
            Ok(kv.map(|kv| kv.value))
        })
    }

    fn store_certificate<'a>(
        &'a self,
        base: &'a str,
        chain: &'a [u8],
        key: &'a [u8],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut value = chain.to_vec();
            if !value.ends_with(b"\n") {
                value.push(b'\n');
            }
            value.extend_from_slice(key);
            self.client
                .put(&format!("{}certs/{base}", self.root), &value, None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn lock<'a>(&'a self, base: &'a str) -> BoxFuture<'a, Result<Option<Lock>, String>> {
        Box::pin(async move {
            let client = self.client.clone();
            let lease = client.grant(LOCK_TTL).await.map_err(|e| e.to_string())?;
            let key = format!("{}locks/{base}", self.root);
            match client
                .put_new(&key, self.instance.as_bytes(), Some(lease))
                .await
            {
                Ok(Swap::Done(_)) => {}
                other => {
                    let _ = client.revoke(lease).await;
                    return other.map(|_| None).map_err(|e| e.to_string());
                }
            }
            // Renewed until the lock is dropped, then revoked: its keys go.
            let held = CancellationToken::new();
            let renewing = held.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = renewing.cancelled() => break,
                        _ = tokio::time::sleep(LOCK_RENEW) => {
                            if !matches!(client.keep_alive(lease).await, Ok(true)) {
                                tracing::warn!(lease, "fleet: the lease of an ACME order's lock is lost; another instance may order too");
                            }
                        }
                    }
                }
                let _ = client.revoke(lease).await;
            });
            Ok(Some(Lock {
                lease,
                _held: Box::new(held.drop_guard()),
            }))
        })
    }

    fn publish<'a>(
        &'a self,
        lock: &'a Lock,
        challenge: Published,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let key = format!(
                "{}challenges/{}/{}",
                self.root, challenge.kind, challenge.id
            );
            self.client
                .put(&key, challenge.value.as_bytes(), Some(lock.lease))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn place(&self, base: &str) -> PathBuf {
        PathBuf::from(format!("etcd:{}certs/{base}", self.root))
    }
}

/// First wait after the watch of the challenges failed; doubled up to
/// [`FOLLOW_RETRY_MAX`].
const FOLLOW_RETRY_MIN: Duration = Duration::from_millis(200);
const FOLLOW_RETRY_MAX: Duration = Duration::from_secs(5);
/// How often the challenges are read again besides the watch (a watch on a
/// connection that died silently would miss them).
const FOLLOW_RESYNC: Duration = Duration::from_secs(10);

/// Answers, on this instance, the challenges any instance of the fleet
/// publishes (the ACME server may validate on any), until `stop`: the
/// fleet's task beside the ordering one. Watches them (an event re-reads
/// the whole, small, prefix), and retries with back-off when etcd is away.
pub(crate) async fn follow_challenges(
    client: Arc<Client>,
    prefix: String,
    challenges: Arc<crate::tls::acme::Challenges>,
    stop: CancellationToken,
) {
    let store = EtcdStore::new(client.clone(), &prefix, "");
    let watched = format!("{}challenges/", store.root);
    let mut answered: Vec<Published> = Vec::new();
    let mut backoff = FOLLOW_RETRY_MIN;
    loop {
        let watch = tokio::select! {
            _ = stop.cancelled() => return,
            watch = client.watch_prefix(&watched) => watch,
        };
        let mut watch = match watch {
            Ok(watch) => watch,
            Err(_) => {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(FOLLOW_RETRY_MAX);
                continue;
            }
        };
        loop {
            match store.published().await {
                Ok(now) => {
                    backoff = FOLLOW_RETRY_MIN;
                    crate::control::acme::answer_published(&challenges, &mut answered, now);
                }
                Err(_) => break,
            }
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                event = watch.next() => event,
                _ = tokio::time::sleep(FOLLOW_RESYNC) => Ok(Some(super::etcd::WatchEvent::Delete(0))),
            };
            if !matches!(event, Ok(Some(_))) {
                break;
            }
        }
    }
}
