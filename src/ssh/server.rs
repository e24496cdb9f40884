//! The russh side of the console: who may log in (passwords of the configured
//! users, keys of the `authorized_keys` file, failures counted against the
//! admin plane's shared budget), how many may wait to log in (the oldest
//! making room for newcomers), the stream that lets a connection be closed at
//! any stage, and one console task per session channel.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use super::commands::Context;
use super::keys::{AuthorizedKey, read_authorized_keys};
use super::slots::Scripts;
use super::{MAX_UNAUTHENTICATED_PER_SOURCE, SshSettings};
use crate::BalancerHandle;
use crate::admin::Principal;
use crate::admin::auth::{Refused, source_key};

/// What every session of one server shares.
pub(crate) struct Shared {
    pub(crate) handle: BalancerHandle,
    pub(crate) settings: Arc<SshSettings>,
    /// Console tasks, waited for at shutdown.
    pub(crate) tasks: TaskTracker,
    /// Connection tasks, and scripts still running (each holds a token), so
    /// both count against `max_sessions`.
    pub(crate) sessions: TaskTracker,
    /// Connections served at once ([`max_sessions`](super::max_sessions)).
    pub(crate) max_sessions: usize,
    /// Connections not logged in yet. Written at accept, by eviction and by
    /// [`Pending`]'s drop; a mutex, as accepts are rare.
    pub(crate) unauthenticated: Mutex<Waiting>,
    /// The bounded runner of `script`.
    pub(crate) scripts: Arc<Scripts>,
}

/// The connections not logged in yet: how many per source ([`source_key`]),
/// and each one's cut token in the order they came, so the oldest can be
/// closed to make room.
pub(crate) struct Waiting {
    /// At most this many at once (half of `max_sessions`).
    max: usize,
    per_source: HashMap<IpAddr, usize>,
    /// By arrival: the source and the token that closes the connection.
    queue: BTreeMap<u64, (IpAddr, CancellationToken)>,
    next: u64,
}

impl Waiting {
    /// None yet, at most `max` at once.
    pub(crate) fn new(max: usize) -> Self {
        Waiting {
            max,
            per_source: HashMap::new(),
            queue: BTreeMap::new(),
            next: 0,
        }
    }

    /// Frees one place: the oldest connection of the source holding the most
    /// (so a client that reconnects from a few addresses evicts itself, not a
    /// newcomer from elsewhere) is cut.
    fn evict(&mut self) {
        let Some(&most) = self.per_source.values().max() else {
            return;
        };
        let oldest = self
            .queue
            .iter()
            .find(|(_, (source, _))| self.per_source.get(source) == Some(&most))
            .map(|(&id, _)| id);
        if let Some((source, cut)) = oldest.and_then(|id| self.queue.remove(&id)) {
            cut.cancel();
            self.release(source);
        }
    }

    fn release(&mut self, source: IpAddr) {
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }
}

/// A connection's place among those not logged in, given back on login or
/// when the connection ends.
pub(crate) struct Pending {
    shared: Arc<Shared>,
    id: u64,
}

impl Pending {
    /// A place for a connection from `ip`, which `cut` closes if it is evicted;
    /// `None` when its source already holds
    /// [`MAX_UNAUTHENTICATED_PER_SOURCE`]. When all sources together hold as
    /// many as allowed, the oldest connection of the source holding the most
    /// is closed to make room: new clients always get their turn.
    pub(crate) fn new(shared: &Arc<Shared>, ip: IpAddr, cut: CancellationToken) -> Option<Pending> {
        let key = source_key(ip);
        let mut waiting = shared
            .unauthenticated
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mine = waiting.per_source.get(&key).copied().unwrap_or(0);
        if mine >= MAX_UNAUTHENTICATED_PER_SOURCE.min(waiting.max) {
            return None;
        }
        if waiting.queue.len() >= waiting.max {
            waiting.evict();
            tracing::debug!(client = %ip, "too many SSH connections not logged in: the oldest closed");
        }
        *waiting.per_source.entry(key).or_insert(0) += 1;
        let id = waiting.next;
        waiting.next += 1;
        waiting.queue.insert(id, (key, cut));
        Some(Pending {
            shared: shared.clone(),
            id,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut waiting = self
            .shared
            .unauthenticated
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // An evicted connection gave its place back already.
        if let Some((source, _)) = waiting.queue.remove(&self.id) {
            waiting.release(source);
        }
    }
}

/// A connection's stream that fails every read and write once its token is
/// cancelled: the way to close a connection whose russh task would not act on
/// a disconnect (it queues them until a key exchange ends, which a stalled
/// client never lets happen). The task then ends and drops the socket.
pub(crate) struct Severable<S> {
    inner: S,
    cut: CancellationToken,
    /// One waiter per direction, as reads and writes may wait at once.
    read_cut: Pin<Box<WaitForCancellationFutureOwned>>,
    write_cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> Severable<S> {
    /// `inner`, cut when `cut` is cancelled.
    pub(crate) fn new(inner: S, cut: CancellationToken) -> Self {
        Severable {
            inner,
            read_cut: Box::pin(cut.clone().cancelled_owned()),
            write_cut: Box::pin(cut.clone().cancelled_owned()),
            cut,
        }
    }
}

fn severed() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "connection closed by the console",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Severable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.cut.is_cancelled() || this.read_cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Severable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.cut.is_cancelled() || this.write_cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.cut.is_cancelled() || this.write_cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.cut.is_cancelled() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The methods offered to clients.
pub(crate) fn methods() -> MethodSet {
    MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..])
}

/// One client connection.
pub(crate) struct Client {
    shared: Arc<Shared>,
    ip: IpAddr,
    principal: Option<Principal>,
    /// Set on login; read by the connection's task, which closes connections
    /// that did not log in within the login timeout.
    logged_in: Arc<AtomicBool>,
    /// The connection's place among those not logged in, until it logs in.
    pending: Option<Pending>,
}

impl Client {
    pub(crate) fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        logged_in: Arc<AtomicBool>,
        pending: Pending,
    ) -> Self {
        Client {
            shared,
            ip: peer.ip(),
            principal: None,
            logged_in,
            pending: Some(pending),
        }
    }

    fn logged_in(&mut self, principal: Principal) -> Auth {
        self.principal = Some(principal);
        self.logged_in.store(true, Ordering::Relaxed);
        self.pending = None;
        Auth::Accept
    }

    fn reject() -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(methods()),
            partial_success: false,
        }
    }

    /// The `authorized_keys` entry of `key`, when the file lists it.
    async fn authorized(&self, key: &russh::keys::PublicKey) -> Option<AuthorizedKey> {
        let path = self.shared.settings.authorized_keys.as_ref()?;
        read_authorized_keys(path)
            .await
            .into_iter()
            .find(|k| k.key.key_data() == key.key_data())
    }

    fn throttled(&self, user: &str) -> bool {
        match self.shared.settings.logins.throttled(self.ip) {
            Some(secs) => {
                tracing::warn!(user, client = %self.ip, retry_in_secs = secs, "ssh login throttled");
                true
            }
            None => false,
        }
    }
}

impl russh::server::Handler for Client {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let users = self
            .shared
            .handle
            .config()
            .admin
            .map(|a| a.users)
            .unwrap_or_default();
        let logins = &self.shared.settings.logins;
        match logins.login(self.ip, &users, user, password).await {
            Ok(principal) => {
                tracing::info!(user, client = %self.ip, method = "password", "ssh login");
                Ok(self.logged_in(principal))
            }
            Err(Refused::Throttled(secs)) => {
                tracing::warn!(user, client = %self.ip, retry_in_secs = secs, "ssh login throttled");
                Ok(Self::reject())
            }
            Err(Refused::Wrong) => {
                // The name is logged, never the password.
                tracing::warn!(user, client = %self.ip, "ssh login failed");
                Ok(Self::reject())
            }
        }
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // An unknown key is not a failure: clients offer every key they have.
        if self.throttled(user) {
            return Ok(Self::reject());
        }
        match self.authorized(offer.public_key).await {
            Some(key) if key.principal(user).is_some() => Ok(Auth::Accept),
            _ => Ok(Self::reject()),
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.throttled(user) {
            return Ok(Self::reject());
        }
        let Some(entry) = self.authorized(key.public_key).await else {
            return Ok(Self::reject());
        };
        let Some(name) = entry.principal(user) else {
            tracing::warn!(user, client = %self.ip, key = %entry.comment, "ssh key of another user refused");
            return Ok(Self::reject());
        };
        let fingerprint = entry.key.fingerprint(russh::keys::HashAlg::Sha256);
        // The audit names who acts (the key's user, or its fingerprint), and the
        // name the client claimed.
        tracing::info!(user = %name, claimed = user, client = %self.ip, method = "publickey", key = %entry.comment, %fingerprint, access = entry.access.name(), "ssh login");
        Ok(self.logged_in(Principal {
            name,
            access: entry.access,
        }))
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(principal) = self.principal.clone() else {
            return Ok(()); // dropping the reply rejects the channel
        };
        reply.accept().await;
        let ctx = Context {
            handle: self.shared.handle.clone(),
            settings: self.shared.settings.clone(),
            principal,
            scripts: self.shared.scripts.clone(),
            session: self.shared.sessions.clone(),
        };
        self.shared.tasks.spawn(super::console::serve(channel, ctx));
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Puts a connection from `source` in `waiting` (as `Pending::new` does,
    /// without the server), returning its cut token.
    fn wait(waiting: &mut Waiting, source: [u8; 4]) -> CancellationToken {
        let source = IpAddr::from(source);
        let cut = CancellationToken::new();
        *waiting.per_source.entry(source).or_insert(0) += 1;
        waiting.queue.insert(waiting.next, (source, cut.clone()));
        waiting.next += 1;
        cut
    }

    #[test]
    fn the_oldest_of_the_busiest_source_is_evicted() {
        let mut waiting = Waiting::new(8);
        let newcomer = wait(&mut waiting, [10, 0, 0, 9]);
        let mut busy = Vec::new();
        for _ in 0..4 {
            busy.push(wait(&mut waiting, [10, 0, 0, 1]));
        }
        let other: Vec<_> = (0..3).map(|_| wait(&mut waiting, [10, 0, 0, 2])).collect();
        waiting.evict();
        // The newcomer is the oldest of all, but holds one place of 8.
        assert!(!newcomer.is_cancelled());
        assert!(busy[0].is_cancelled());
        assert!(busy[1..].iter().chain(&other).all(|c| !c.is_cancelled()));
        assert_eq!(waiting.queue.len(), 7);
        assert_eq!(waiting.per_source[&IpAddr::from([10, 0, 0, 1])], 3);
        // Ties: the oldest of the sources holding the most.
        waiting.evict();
        assert!(busy[1].is_cancelled());
        waiting.evict();
        assert!(other[0].is_cancelled());
        assert!(!newcomer.is_cancelled());
    }
}
