//! Reloading the configuration file: the one path SIGHUP, the SSH console's
//! `config reload` and an embedding application take ([`BalancerHandle::reload`]).
//! A reload reads the file, lets what follows it (the `txlb` binary's admin web
//! server and SSH console, a [`Follower`]) prepare, applies the file as one
//! [`Command::Replace`], lets the follower move, logs what changed, records the
//! outcome for the admin pages ([`ReloadStatus`]) and resolves a write-back
//! conflict. It applies as a whole or not at all.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::balancer::BalancerHandle;
use crate::config::writeback::WriteBack;
use crate::config::{Changes, Config, ConfigError};
use crate::control::{Command, ControlError};

/// A boxed future a [`Follower`] returns (its methods are called through a
/// trait object).
pub type FollowFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Something that follows the configuration file at each reload, as a whole
/// with it: the `txlb` binary's admin web server and SSH console, which move,
/// restart or re-key as `<admin>` says. Registered with
/// [`ConfigFile::follow`]; a reload calls [`prepare`](Follower::prepare), then,
/// once the configuration is applied, [`commit`](Follower::commit), or
/// [`abandon`](Follower::abandon) when it was refused.
pub trait Follower: Send {
    /// Readies `config`'s settings without changing anything yet (binds new
    /// addresses, reads certificates); an error refuses the whole reload.
    fn prepare<'a>(&'a mut self, config: &'a Config) -> FollowFuture<'a>;
    /// Carries out what `prepare` readied, after the configuration was applied.
    /// An error leaves what it concerns as it was (the configuration stays
    /// applied) and is reported as the reload's error.
    fn commit<'a>(&'a mut self, balancer: &'a BalancerHandle) -> FollowFuture<'a>;
    /// Drops what `prepare` readied: the configuration was refused.
    fn abandon(&mut self);
}

/// Why a reload did not apply the file (or applied it only in part).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The balancer was started from a [`Config`] that names no file.
    #[error("the balancer was not started from a file")]
    NoFile,
    /// The file does not load (unreadable, not well-formed, or against a rule).
    #[error("{0}")]
    Read(#[from] ConfigError),
    /// Reading the file ended abnormally (the reading task panicked).
    #[error("reading the configuration failed: {0}")]
    ReadTask(String),
    /// What follows the file cannot take its settings (a busy port, a bad
    /// certificate): nothing changed.
    #[error("{0}")]
    Follower(String),
    /// The controller refused the configuration: nothing changed.
    #[error("{0}")]
    Refused(#[from] ControlError),
    /// The configuration runs, but what follows the file kept its old settings.
    #[error("configuration applied, but the admin plane kept its old settings: {0}")]
    Moved(String),
}

/// How one reload of the configuration file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reload {
    /// When it was tried.
    pub at: SystemTime,
    /// Why it was refused (the file's parse or validation error, with
    /// file:line:column); `None` when the new configuration runs.
    pub error: Option<String>,
}

/// The outcome of the last reload, shared between the reloader and the admin
/// plane.
#[derive(Debug, Default)]
pub struct ReloadStatus {
    /// Written by the reloader after each attempt, read by pages and the API. A
    /// std mutex: tiny critical sections, never held across an `.await`.
    last: Mutex<Option<Reload>>,
}

impl ReloadStatus {
    /// No reload tried yet.
    pub fn new() -> Self {
        ReloadStatus::default()
    }

    /// Records a reload that applied the new configuration (clears the error).
    pub fn succeeded(&self) {
        self.set(None);
    }

    /// Records a refused reload: the old configuration keeps running.
    pub fn failed(&self, error: impl std::fmt::Display) {
        self.set(Some(error.to_string()));
    }

    fn set(&self, error: Option<String>) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Reload {
            at: SystemTime::now(),
            error,
        });
    }

    /// The last reload, if any was tried.
    pub fn last(&self) -> Option<Reload> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The configuration file a balancer runs from: where it is, its write-back
/// (when the balancer was given the file's text,
/// [`BalancerBuilder::file_text`](crate::BalancerBuilder::file_text)), the
/// outcome of the last reload, and what follows the file.
pub struct ConfigFile {
    path: PathBuf,
    writeback: Option<Arc<WriteBack>>,
    status: Arc<ReloadStatus>,
    /// What follows the file. An async mutex held for a whole reload: reloads
    /// from SIGHUP and the console run one at a time.
    follower: tokio::sync::Mutex<Option<Box<dyn Follower>>>,
}

impl std::fmt::Debug for ConfigFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigFile")
            .field("path", &self.path)
            .field("writeback", &self.writeback.is_some())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl ConfigFile {
    /// The file `config` was read from, with write-back when `text` (what it was
    /// read from) is given; `None` when `config` names no file.
    pub(crate) fn of(config: &Config, text: Option<String>) -> Option<ConfigFile> {
        let path = config.source.clone()?;
        let writeback = text.map(|text| Arc::new(WriteBack::new(&path, text, config.clone())));
        Some(ConfigFile {
            path,
            writeback,
            status: Arc::new(ReloadStatus::new()),
            follower: tokio::sync::Mutex::new(None),
        })
    }

    /// The file at `path` with write-back from `text`, which loads into
    /// `base`: the running configuration may differ (unsaved changes handed
    /// over by an upgrade).
    pub(crate) fn of_base(path: &Path, text: String, base: Config) -> Option<ConfigFile> {
        Some(ConfigFile {
            path: path.to_path_buf(),
            writeback: Some(Arc::new(WriteBack::new(path, text, base))),
            status: Arc::new(ReloadStatus::new()),
            follower: tokio::sync::Mutex::new(None),
        })
    }

    /// The configuration file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its write-back (saveConfig, configCheck, the conflict on the admin
    /// pages), when the balancer was given the file's text.
    pub fn write_back(&self) -> Option<&Arc<WriteBack>> {
        self.writeback.as_ref()
    }

    /// The outcome of the last reload, for the admin pages.
    pub fn status(&self) -> &Arc<ReloadStatus> {
        &self.status
    }

    /// Makes `follower` follow the file at every reload from now on (replacing
    /// the one before, which is returned).
    pub async fn follow(&self, follower: Box<dyn Follower>) -> Option<Box<dyn Follower>> {
        self.follower.lock().await.replace(follower)
    }

    /// Stops following: returns the follower, after the reload under way.
    pub async fn unfollow(&self) -> Option<Box<dyn Follower>> {
        self.follower.lock().await.take()
    }

    /// saveConfig / `config save`: writes the running configuration into the
    /// file, keeping its comments; the answer says what happened. A conflict
    /// (the file edited on disk since it was loaded) is logged with both
    /// differences and refused. Blocking file I/O.
    pub fn save(&self, running: &Config) -> Result<String, String> {
        let Some(writeback) = &self.writeback else {
            return Err("saving the configuration is not set up for this server".into());
        };
        writeback.save_reply(running)
    }

    /// One reload; see [`BalancerHandle::reload`].
    async fn reload(&self, balancer: &BalancerHandle) -> Result<Changes, ReloadError> {
        let mut follower = self.follower.lock().await;
        let result = self.apply(balancer, follower.as_deref_mut()).await;
        match result {
            Ok((changes, applied)) => {
                tracing::info!(config = %self.path.display(), %changes, "configuration reloaded");
                self.status.succeeded();
                // The file just applied is what later saves write into (an
                // edit reloaded is no conflict, and resolves one).
                if let Some((wb, (text, config))) = self.writeback.as_ref().zip(applied) {
                    wb.rebase(text, config);
                }
                Ok(changes)
            }
            Err(error) => {
                tracing::error!(%error, "reload refused");
                self.status.failed(&error);
                Err(error)
            }
        }
    }

    /// The file read, the follower prepared, the configuration applied, the
    /// follower moved; with write-back, the text applied and what it loaded
    /// into.
    async fn apply(
        &self,
        balancer: &BalancerHandle,
        mut follower: Option<&mut (dyn Follower + 'static)>,
    ) -> Result<(Changes, Option<(String, Config)>), ReloadError> {
        // Reading and checking a big file takes a while: on the blocking pool, so
        // the admin plane (on this runtime) keeps answering meanwhile, and a panic
        // there refuses the reload instead of ending the process. What changed is
        // counted there too (linear, but over every host).
        let (path, running) = (self.path.clone(), balancer.config_shared());
        let (config, changes, text) = tokio::task::spawn_blocking(move || {
            let text = crate::config::read_text(&path).map_err(|source| ConfigError::Io {
                path: path.clone(),
                source,
            })?;
            Config::from_text(&path, &text).map(|config| {
                let changes = Changes::between(&running, &config);
                (config, changes, text)
            })
        })
        .await
        .map_err(|e| ReloadError::ReadTask(e.to_string()))??;
        // What write-back takes as the file's content once this applied.
        let applied = self.writeback.is_some().then(|| (text, config.clone()));
        if let Some(follower) = follower.as_deref_mut() {
            follower
                .prepare(&config)
                .await
                .map_err(ReloadError::Follower)?;
        }
        if let Err(error) = balancer.apply(Command::Replace(Box::new(config))).await {
            if let Some(follower) = follower {
                follower.abandon();
            }
            return Err(error.into());
        }
        if let Some(follower) = follower {
            follower
                .commit(balancer)
                .await
                .map_err(ReloadError::Moved)?;
        }
        Ok((changes, applied))
    }
}

impl BalancerHandle {
    /// Reloads the configuration file the balancer was started from: reads it
    /// again and applies it as a whole, with what follows it
    /// ([`ConfigFile::follow`]), or refuses it as a whole (the running
    /// configuration stays). Either way the outcome is logged and recorded
    /// ([`ConfigFile::status`]); a reload that applies resolves a write-back
    /// conflict. Reloads run one at a time. Returns what changed.
    pub async fn reload(&self) -> Result<Changes, ReloadError> {
        match self.config_file() {
            Some(file) => file.reload(self).await,
            None => Err(ReloadError::NoFile),
        }
    }
}
