//! The russh side of the console: who may log in (passwords of the configured
//! users, keys of the `authorized_keys` file, failures throttled per address), and
//! one console task per session channel.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio_util::task::TaskTracker;

use super::SshSettings;
use super::commands::Context;
use super::keys::read_authorized_keys;
use crate::BalancerHandle;
use crate::admin::Principal;
use crate::admin::auth::Auth as Logins;
use crate::config::Access;

/// What every session of one server shares.
pub(crate) struct Shared {
    pub(crate) handle: BalancerHandle,
    pub(crate) settings: Arc<SshSettings>,
    /// Failed-login throttling and the verified-password cache, the same
    /// bookkeeping as the web admin's (one per server).
    pub(crate) logins: Logins,
    /// Console tasks, waited for at shutdown.
    pub(crate) tasks: TaskTracker,
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
}

impl Client {
    pub(crate) fn new(shared: Arc<Shared>, peer: SocketAddr, logged_in: Arc<AtomicBool>) -> Self {
        Client {
            shared,
            ip: peer.ip(),
            principal: None,
            logged_in,
        }
    }

    fn logged_in(&mut self, principal: Principal) -> Auth {
        self.principal = Some(principal);
        self.logged_in.store(true, Ordering::Relaxed);
        Auth::Accept
    }

    fn reject() -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(methods()),
            partial_success: false,
        }
    }

    /// The access of `key` when the `authorized_keys` file lists it.
    async fn key_access(&self, key: &russh::keys::PublicKey) -> Option<(Access, String)> {
        let path = self.shared.settings.authorized_keys.as_ref()?;
        read_authorized_keys(path)
            .await
            .into_iter()
            .find(|k| k.key.key_data() == key.key_data())
            .map(|k| (k.access, k.comment))
    }

    fn throttled(&self, user: &str) -> bool {
        match self.shared.logins.throttled(self.ip) {
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
        if self.throttled(user) {
            return Ok(Self::reject());
        }
        let users = self
            .shared
            .handle
            .config()
            .admin
            .map(|a| a.users)
            .unwrap_or_default();
        match self.shared.logins.check(&users, user, password).await {
            Some(principal) => {
                tracing::info!(user, client = %self.ip, method = "password", "ssh login");
                Ok(self.logged_in(principal))
            }
            None => {
                self.shared.logins.record_failure(self.ip);
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
        if self.throttled(user) || self.key_access(offer.public_key).await.is_none() {
            return Ok(Self::reject());
        }
        Ok(Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.throttled(user) {
            return Ok(Self::reject());
        }
        match self.key_access(key.public_key).await {
            Some((access, comment)) => {
                tracing::info!(user, client = %self.ip, method = "publickey", key = %comment, access = access.name(), "ssh login");
                Ok(self.logged_in(Principal {
                    name: user.to_string(),
                    access,
                }))
            }
            None => Ok(Self::reject()),
        }
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
