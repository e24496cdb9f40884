//! The russh side of the console: who may log in (passwords of the configured
//! users, keys of the `authorized_keys` file, failures counted against the
//! admin plane's shared budget), how many may wait to log in, and one console
//! task per session channel.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio_util::task::TaskTracker;

use super::commands::Context;
use super::keys::{AuthorizedKey, read_authorized_keys};
use super::script::Scripts;
use super::{MAX_UNAUTHENTICATED, MAX_UNAUTHENTICATED_PER_SOURCE, SshSettings};
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
    /// both count against [`MAX_SESSIONS`](super::MAX_SESSIONS).
    pub(crate) sessions: TaskTracker,
    /// Connections not logged in yet, per source ([`source_key`]). Written at
    /// accept and by [`Pending`]'s drop; a mutex, as accepts are rare.
    pub(crate) unauthenticated: Mutex<HashMap<IpAddr, usize>>,
    /// The bounded runner of `script`.
    pub(crate) scripts: Arc<Scripts>,
}

/// A connection's place among those not logged in, given back on login or
/// when the connection ends.
pub(crate) struct Pending {
    shared: Arc<Shared>,
    key: IpAddr,
}

impl Pending {
    /// A place for a connection from `ip`; `None` when its source, or all
    /// sources together, already hold as many as allowed.
    pub(crate) fn new(shared: &Arc<Shared>, ip: IpAddr) -> Option<Pending> {
        let key = source_key(ip);
        let mut waiting = shared
            .unauthenticated
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let total: usize = waiting.values().sum();
        let mine = waiting.entry(key).or_insert(0);
        if *mine >= MAX_UNAUTHENTICATED_PER_SOURCE || total >= MAX_UNAUTHENTICATED {
            if *mine == 0 {
                waiting.remove(&key);
            }
            return None;
        }
        *mine += 1;
        Some(Pending {
            shared: shared.clone(),
            key,
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
        if let Some(n) = waiting.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&self.key);
            }
        }
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
