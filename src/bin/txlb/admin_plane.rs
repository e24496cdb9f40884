//! The admin plane of `txlb run`: the web server of `<admin><web>` and the SSH
//! console of `<admin><ssh>`, started at boot and, at each reload, moved to a new
//! address, restarted with new settings, re-keyed or stopped to match the file.
//!
//! The library's reload ([`txlb::BalancerHandle::reload`], from SIGHUP or the
//! console) moves it as a [`Follower`], in two steps so that a reload applies
//! as a whole or not at all: [`AdminPlane::prepare`] binds new addresses and
//! reads certificates before the configuration is applied (a busy port or a bad
//! key refuses the reload), and [`AdminPlane::commit`] swaps the servers
//! afterwards, each new one starting before the old one stops.

use std::sync::Arc;

use anyhow::Result;
use txlb::BalancerHandle;
use txlb::config::{AdminSshConfig, AdminWebConfig, Config, ListenAddr};
use txlb::reload::{ConfigFile, FollowFuture, Follower};

/// What the servers need from the rest of `txlb run`: the configuration file
/// (next to which certificates and host keys are kept; its write-back and
/// reload status), and log reopening.
#[derive(Clone)]
pub(crate) struct Hooks {
    pub file: Arc<ConfigFile>,
    pub reopen_logs: txlb::admin::ReopenLog,
    /// The one failed-login budget of both servers, so that guesses on the web
    /// admin and on the console count together (and across restarts of either).
    pub logins: txlb::admin::Logins,
}

impl Hooks {
    /// saveConfig / `config save`: the file's comment-keeping write-back.
    fn save_config(&self) -> txlb::admin::SaveConfig {
        let file = self.file.clone();
        Arc::new(move |running: &Config| file.save(running))
    }
}

/// The admin plane as the configuration file's [`Follower`]: the plane is
/// shared with `txlb run`, which stops it at shutdown.
pub(crate) struct Following {
    pub plane: Arc<tokio::sync::Mutex<Option<AdminPlane>>>,
    pub hooks: Hooks,
    /// What the reload under way prepared.
    pub pending: Option<Prepared>,
}

impl Follower for Following {
    fn prepare<'a>(&'a mut self, config: &'a Config) -> FollowFuture<'a> {
        Box::pin(async move {
            let plane = self.plane.lock().await;
            let Some(plane) = plane.as_ref() else {
                return Ok(());
            };
            let prepared = plane.prepare(config, &self.hooks).await;
            self.pending = Some(prepared.map_err(|e| crate::error_text(&e))?);
            Ok(())
        })
    }

    fn commit<'a>(&'a mut self, balancer: &'a BalancerHandle) -> FollowFuture<'a> {
        Box::pin(async move {
            let mut plane = self.plane.lock().await;
            let (Some(plane), Some(prepared)) = (plane.as_mut(), self.pending.take()) else {
                return Ok(());
            };
            let committed = plane.commit(prepared, balancer, &self.hooks).await;
            committed.map_err(|e| crate::error_text(&e))
        })
    }

    fn abandon(&mut self) {
        self.pending = None;
    }
}

/// The web server and the SSH console, as the running configuration wants them.
pub(crate) struct AdminPlane {
    web: Slot<Web>,
    ssh: Slot<Ssh>,
}

/// Both servers' changes for one reload, prepared.
pub(crate) struct Prepared {
    web: Change<Web>,
    ssh: Change<Ssh>,
}

/// The admin plane's listening sockets handed over by an upgrade.
#[derive(Default)]
pub(crate) struct Handed {
    web: Option<std::net::TcpListener>,
    ssh: Option<std::net::TcpListener>,
}

/// The names the servers' sockets are handed over by.
const WEB_SOCKET: &str = "admin-web";
const SSH_SOCKET: &str = "ssh";

impl Handed {
    /// The sockets `incoming` holds for the admin plane, taken.
    pub(crate) fn take(incoming: Option<&mut txlb::upgrade::Incoming>) -> Handed {
        let Some(incoming) = incoming else {
            return Handed::default();
        };
        let mut take = |name| incoming.take_socket(name).map(std::net::TcpListener::from);
        Handed {
            web: take(WEB_SOCKET),
            ssh: take(SSH_SOCKET),
        }
    }
}

impl AdminPlane {
    /// Starts what `config` enables, on the sockets `handed` over by an
    /// upgrade where there are some.
    pub(crate) async fn start(
        config: &Config,
        balancer: &BalancerHandle,
        hooks: &Hooks,
        handed: Handed,
    ) -> Result<AdminPlane> {
        let mut plane = AdminPlane {
            web: Slot(None),
            ssh: Slot(None),
        };
        let prepared = Prepared {
            web: plane.web.prepare_with(config, hooks, handed.web).await?,
            ssh: plane.ssh.prepare_with(config, hooks, handed.ssh).await?,
        };
        plane.commit(prepared, balancer, hooks).await?;
        Ok(plane)
    }

    /// Duplicates of the servers' listening sockets, by name, for an upgrade
    /// to hand over.
    pub(crate) fn sockets(&self) -> Vec<(String, std::os::fd::OwnedFd)> {
        let dup = |socket: &std::net::TcpListener| {
            std::os::fd::AsFd::as_fd(socket).try_clone_to_owned().ok()
        };
        let web = self.web.0.as_ref().and_then(|r| dup(&r.socket));
        let ssh = self.ssh.0.as_ref().and_then(|r| dup(&r.socket));
        [(WEB_SOCKET, web), (SSH_SOCKET, ssh)]
            .into_iter()
            .filter_map(|(name, fd)| Some((name.to_string(), fd?)))
            .collect()
    }

    /// Binds new addresses and reads keys for `config`; changes nothing yet.
    pub(crate) async fn prepare(&self, config: &Config, hooks: &Hooks) -> Result<Prepared> {
        Ok(Prepared {
            web: self.web.prepare(config, hooks).await?,
            ssh: self.ssh.prepare(config, hooks).await?,
        })
    }

    /// Carries out `prepared`. On an error the server concerned keeps running as
    /// it was.
    pub(crate) async fn commit(
        &mut self,
        prepared: Prepared,
        balancer: &BalancerHandle,
        hooks: &Hooks,
    ) -> Result<()> {
        let web = self.web.commit(prepared.web, balancer, hooks).await;
        let ssh = self.ssh.commit(prepared.ssh, balancer, hooks).await;
        web.and(ssh)
    }

    /// Waits until both servers have stopped (after the balancer's shutdown).
    pub(crate) async fn stopped(self) {
        if let Some(web) = self.web.0 {
            web.server.stopped().await;
        }
        if let Some(ssh) = self.ssh.0 {
            ssh.server.stopped().await;
        }
    }
}

/// What differs between the web server and the SSH console.
trait Server: Sized {
    /// The configuration element (`<web>`, `<ssh>`).
    type Element: Clone + PartialEq;
    /// What is read from disk at each reload (certificate, host key).
    type Keys;
    /// For log lines.
    const NAME: &'static str;

    /// The element of `config`, if it is there and enabled.
    fn element(config: &Config) -> Option<&Self::Element>;
    fn listen(element: &Self::Element) -> &ListenAddr;
    async fn bind(listen: &ListenAddr) -> Result<tokio::net::TcpListener>;
    fn keys(element: &Self::Element, hooks: &Hooks) -> Result<Self::Keys>;
    async fn start(
        element: &Self::Element,
        keys: Self::Keys,
        listener: tokio::net::TcpListener,
        balancer: &BalancerHandle,
        hooks: &Hooks,
    ) -> Result<Self>;
    /// Takes freshly read keys for an unchanged element, where it can.
    fn rekey(&self, keys: Self::Keys);
    fn stop(self);
    async fn stopped(self);
}

/// One running server with its element and its bound socket, kept so that a
/// restart on the same address hands it over without refusing a connection.
struct Running<S: Server> {
    element: S::Element,
    socket: std::net::TcpListener,
    server: S,
}

/// The running server of one kind, if any.
struct Slot<S: Server>(Option<Running<S>>);

/// A prepared change of one server.
enum Change<S: Server> {
    Keep,
    Rekey(S::Keys),
    Stop,
    Start {
        element: S::Element,
        socket: std::net::TcpListener,
        keys: S::Keys,
    },
}

impl<S: Server> Slot<S> {
    async fn prepare(&self, config: &Config, hooks: &Hooks) -> Result<Change<S>> {
        self.prepare_with(config, hooks, None).await
    }

    /// [`Slot::prepare`], starting on `handed` (an upgrade's socket) rather
    /// than binding.
    async fn prepare_with(
        &self,
        config: &Config,
        hooks: &Hooks,
        handed: Option<std::net::TcpListener>,
    ) -> Result<Change<S>> {
        let Some(wanted) = S::element(config) else {
            return Ok(match self.0 {
                Some(_) => Change::Stop,
                None => Change::Keep,
            });
        };
        let keys = S::keys(wanted, hooks)?;
        let running = self.0.as_ref();
        if running.is_some_and(|r| r.element == *wanted) {
            return Ok(Change::Rekey(keys));
        }
        let socket = match (
            running.filter(|r| S::listen(&r.element) == S::listen(wanted)),
            handed,
        ) {
            (Some(running), _) => running.socket.try_clone()?,
            (None, Some(handed)) => {
                handed.set_nonblocking(true)?;
                handed
            }
            (None, None) => S::bind(S::listen(wanted)).await?.into_std()?,
        };
        Ok(Change::Start {
            element: wanted.clone(),
            socket,
            keys,
        })
    }

    async fn commit(
        &mut self,
        change: Change<S>,
        balancer: &BalancerHandle,
        hooks: &Hooks,
    ) -> Result<()> {
        match change {
            Change::Keep => {}
            Change::Rekey(keys) => {
                if let Some(running) = &self.0 {
                    running.server.rekey(keys);
                }
            }
            Change::Stop => {
                if let Some(running) = self.0.take() {
                    running.server.stop();
                    tracing::info!("{} stopped (disabled by the configuration)", S::NAME);
                }
            }
            Change::Start {
                element,
                socket,
                keys,
            } => {
                let listener = tokio::net::TcpListener::from_std(socket.try_clone()?)?;
                let server = S::start(&element, keys, listener, balancer, hooks).await?;
                let started = Running {
                    element,
                    socket,
                    server,
                };
                if let Some(old) = self.0.replace(started) {
                    old.server.stop();
                }
            }
        }
        Ok(())
    }
}

/// The admin web server.
struct Web(txlb::admin::AdminServer);

impl Server for Web {
    type Element = AdminWebConfig;
    /// The TLS configuration of `secure="true"`.
    type Keys = Option<Arc<rustls::ServerConfig>>;
    const NAME: &'static str = "admin web server";

    fn element(config: &Config) -> Option<&AdminWebConfig> {
        config.admin.as_ref()?.web.as_ref().filter(|w| w.enable)
    }

    fn listen(element: &AdminWebConfig) -> &ListenAddr {
        &element.listen
    }

    async fn bind(listen: &ListenAddr) -> Result<tokio::net::TcpListener> {
        Ok(txlb::admin::bind(listen).await?)
    }

    fn keys(element: &AdminWebConfig, hooks: &Hooks) -> Result<Self::Keys> {
        if !element.secure {
            return Ok(None);
        }
        let tls = txlb::admin::tls_server_config(element, Some(hooks.file.path()))
            .map_err(|e| anyhow::anyhow!("admin web server: {e}"))?;
        Ok(Some(tls))
    }

    async fn start(
        element: &AdminWebConfig,
        keys: Self::Keys,
        listener: tokio::net::TcpListener,
        balancer: &BalancerHandle,
        hooks: &Hooks,
    ) -> Result<Self> {
        let mut settings = txlb::admin::AdminSettings::from_web(element);
        settings.tls = keys;
        settings.reopen_log = Some(hooks.reopen_logs.clone());
        settings.reload = Some(hooks.file.status().clone());
        if let Some(wb) = hooks.file.write_back().cloned() {
            let running = balancer.clone();
            settings.conflict = Some(Arc::new(move || wb.conflict_now(&running.config())));
        }
        settings.save_config = Some(hooks.save_config());
        settings.logins = hooks.logins.clone();
        Ok(Web(txlb::admin::start(
            balancer.clone(),
            settings,
            listener,
        )
        .await?))
    }

    fn rekey(&self, keys: Self::Keys) {
        if let Some(tls) = keys
            && self.0.set_tls(tls)
        {
            tracing::info!(url = %self.0.url(), "admin web server: certificate reloaded");
        }
    }

    fn stop(self) {
        self.0.stop();
    }

    async fn stopped(self) {
        self.0.stopped().await;
    }
}

/// The SSH console. Its host key is read when it starts (at boot, or when a
/// reload changes `<ssh>`); the authorized keys file at every login.
#[cfg(feature = "ssh")]
struct Ssh(txlb::ssh::SshServer);

#[cfg(feature = "ssh")]
impl Server for Ssh {
    type Element = AdminSshConfig;
    type Keys = ();
    const NAME: &'static str = "SSH console";

    fn element(config: &Config) -> Option<&AdminSshConfig> {
        config.admin.as_ref()?.ssh.as_ref().filter(|s| s.enable)
    }

    fn listen(element: &AdminSshConfig) -> &ListenAddr {
        &element.listen
    }

    async fn bind(listen: &ListenAddr) -> Result<tokio::net::TcpListener> {
        Ok(txlb::ssh::bind(listen).await?)
    }

    fn keys(_: &AdminSshConfig, _: &Hooks) -> Result<()> {
        Ok(())
    }

    async fn start(
        element: &AdminSshConfig,
        (): (),
        listener: tokio::net::TcpListener,
        balancer: &BalancerHandle,
        hooks: &Hooks,
    ) -> Result<Self> {
        let mut settings = txlb::ssh::SshSettings::from_config(element, Some(hooks.file.path()))?;
        settings.reopen_log = Some(hooks.reopen_logs.clone());
        settings.save_config = Some(hooks.save_config());
        settings.logins = hooks.logins.clone();
        Ok(Ssh(
            txlb::ssh::start(balancer.clone(), settings, listener).await?
        ))
    }

    fn rekey(&self, (): ()) {}

    fn stop(self) {
        self.0.stop();
    }

    async fn stopped(self) {
        self.0.stopped().await;
    }
}

/// Built without the SSH console (cargo feature `ssh`): an enabled `<ssh>`
/// refuses the start or the reload that asks for it.
#[cfg(not(feature = "ssh"))]
enum Ssh {}

#[cfg(not(feature = "ssh"))]
impl Server for Ssh {
    type Element = AdminSshConfig;
    type Keys = ();
    const NAME: &'static str = "SSH console";

    fn element(config: &Config) -> Option<&AdminSshConfig> {
        config.admin.as_ref()?.ssh.as_ref().filter(|s| s.enable)
    }

    fn listen(element: &AdminSshConfig) -> &ListenAddr {
        &element.listen
    }

    async fn bind(_: &ListenAddr) -> Result<tokio::net::TcpListener> {
        Err(no_ssh())
    }

    fn keys(_: &AdminSshConfig, _: &Hooks) -> Result<()> {
        Err(no_ssh())
    }

    async fn start(
        _: &AdminSshConfig,
        (): (),
        _: tokio::net::TcpListener,
        _: &BalancerHandle,
        _: &Hooks,
    ) -> Result<Self> {
        Err(no_ssh())
    }

    fn rekey(&self, (): ()) {
        match *self {}
    }

    fn stop(self) {
        match self {}
    }

    async fn stopped(self) {
        match self {}
    }
}

#[cfg(not(feature = "ssh"))]
fn no_ssh() -> anyhow::Error {
    anyhow::anyhow!(
        "the SSH console (<admin><ssh>) is not built into this txlb (cargo feature \"ssh\")"
    )
}
