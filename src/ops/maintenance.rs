//! Maintenance operations: admin users, open connections, saving and
//! reloading the configuration, reopening the log.

use super::{ACCESS, Args, Context, ID, NAME, OpError, PASSWORD, bad};
use crate::BalancerHandle;
use crate::config::{Access, UserConfig, parse_access};
use crate::control::{Command, ControlError};
use crate::reload::ReloadError;

/// A SHA-512-crypt hash of `password` with a random salt, for `<user password=…>`.
/// Every way a password comes in goes through here, so here it is checked
/// ([`check_password`](crate::config::check_password): not empty or only
/// spaces, bounded). Slow on purpose: operations call it on a blocking thread.
pub fn hash_password(password: &str) -> Result<String, OpError> {
    crate::config::check_password(password).map_err(|reason| bad(&PASSWORD, reason))?;
    pwhash::sha512_crypt::hash(password).map_err(|e| {
        tracing::error!(error = %e, "password hashing failed");
        OpError::Internal("password hashing failed")
    })
}

/// A connection id (`id`).
pub fn connection_id(a: &Args) -> Result<u64, OpError> {
    a.required(&ID)?
        .parse()
        .map_err(|_| bad(&ID, "expected a connection id (a number)"))
}

/// Closes connection (or UDP session) `id`, on the blocking pool: a UDP
/// relay is waited for (at most 100 ms), and the control plane's runtime
/// must not be.
pub(super) async fn close_connection(h: &BalancerHandle, id: u64) -> Result<String, OpError> {
    let handle = h.clone();
    let closed = tokio::task::spawn_blocking(move || handle.close_connection(id))
        .await
        .unwrap_or(false);
    if closed {
        Ok(format!("OK connection {id} closing"))
    } else {
        Err(OpError::NotFound(format!("no open connection {id}")))
    }
}

/// Add an admin user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddUser {
    /// Login name.
    pub name: String,
    /// The password; the console asks for it after reading the rest.
    pub password: Option<String>,
    /// Access level (default full).
    pub access: Access,
}

impl AddUser {
    /// Reads its parameters.
    pub fn parse(a: &Args) -> Result<AddUser, OpError> {
        Ok(AddUser {
            name: a.required(&NAME)?.into(),
            password: a.raw(&PASSWORD).map(String::from),
            access: a.parsed(&ACCESS, parse_access)?.unwrap_or(Access::Full),
        })
    }

    /// Refuses a name that is taken before a password is asked for in vain.
    #[cfg_attr(not(feature = "ssh"), allow(dead_code))]
    pub fn refuse_taken(&self, h: &BalancerHandle) -> Result<(), OpError> {
        let taken = h
            .config_shared()
            .admin
            .as_ref()
            .is_some_and(|a| a.users.iter().any(|u| u.name == self.name));
        if taken {
            return Err(ControlError::DuplicateUser(self.name.clone()).into());
        }
        Ok(())
    }

    pub(super) async fn run(self, h: &BalancerHandle) -> Result<String, OpError> {
        let password = self
            .password
            .filter(|p| !p.is_empty())
            .ok_or(OpError::Missing {
                name: PASSWORD.name,
                label: PASSWORD.label,
            })?;
        let password_hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|_| OpError::Internal("password hashing failed"))??;
        let text = format!(
            "OK user {} added with {} access",
            self.name,
            self.access.name()
        );
        h.apply(Command::AddUser(UserConfig {
            name: self.name,
            password_hash,
            access: self.access,
        }))
        .await?;
        Ok(text)
    }
}

pub(super) fn remove_user(name: String) -> (Command, String) {
    let text = format!("OK user {name} removed");
    (Command::RemoveUser { name }, text)
}

pub(super) async fn save_config(ctx: &Context<'_>) -> Result<String, OpError> {
    let Some(save) = ctx.save_config.clone() else {
        return Err(OpError::NotConfigured(
            "saving the configuration is not set up for this server",
        ));
    };
    let running = ctx.handle.config();
    let message = tokio::task::spawn_blocking(move || save(&running))
        .await
        .map_err(|_| OpError::Internal("saving the configuration failed"))?
        .map_err(|reason| {
            tracing::error!(%reason, "saving the configuration failed");
            OpError::Failed(format!("configuration not saved: {reason}"))
        })?;
    Ok(format!("OK {message}"))
}

/// The library's one reload (SIGHUP's): the admin plane follows, the outcome is
/// recorded for the admin pages, a write-back conflict resolved.
pub(super) async fn reload(h: &BalancerHandle) -> Result<String, OpError> {
    let changes = h.reload().await.map_err(|e| match e {
        ReloadError::NoFile => OpError::NotConfigured("the balancer was not started from a file"),
        ReloadError::Refused(refused) => OpError::Refused(refused),
        e => OpError::Failed(format!("reload refused: {e}")),
    })?;
    let path = h.config_file().map(|f| f.path().display().to_string());
    Ok(format!(
        "OK configuration reloaded from {}: {changes}",
        path.unwrap_or_default()
    ))
}

pub(super) async fn reopen_log(ctx: &Context<'_>) -> Result<String, OpError> {
    let Some(reopen) = ctx.reopen_log.clone() else {
        return Ok("OK no log file: logging goes to stderr".into());
    };
    tokio::task::spawn_blocking(move || reopen())
        .await
        .map_err(|_| OpError::Internal("reopening the log file failed"))?
        .map_err(|error| {
            tracing::error!(%error, "reopening the log file failed");
            OpError::Internal("reopening the log file failed")
        })?;
    tracing::info!("log file reopened");
    Ok("OK log file reopened".into())
}
