//! The SSH console: txLoadBalancer's SSH way into the live balancer, as a command
//! language. An operator logs in with a configured user's password or a key of
//! the `authorized_keys` file and gets a prompt (line editing, history, Tab
//! completion of commands and of service, group and host names); a script runs
//! one command line with `ssh host 'show stats --json'` and gets its output, its
//! errors on stderr and an exit status.
//!
//! Every change becomes the same [`Command`](crate::Command) the web
//! admin applies; read-only users (a `<user access="readonly">`, or a key whose
//! line says `access=readonly`) may run every read command and no other.
//!
//! - `commands`: the command table, parsing, help, completion, tables and JSON.
//! - `editor`: the line editor (pure: bytes in, echo out).
//! - `console`: one session channel, interactive or exec.
//! - `server`: russh authentication and channels.
//! - `keys`: the kept host key and the `authorized_keys` file.
//! - `script`: the `script` command's Rhai engine, with the commands as functions.
//! - `memory`: the allocator wrapper that meters a script's memory.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let backend = txlb::demo::Backend::start("web-1").await?;
//! # let config = txlb::demo::demo_config(([127, 0, 0, 1], 0).into(), &[backend]);
//! # let handle = txlb::Balancer::start(config).await?;
//! use txlb::ssh::{SshSettings, bind, start};
//! let listen = txlb::config::parse_listen_addr("127.0.0.1:0")?;
//! let settings = SshSettings::new(txlb::ssh::load_or_generate_host_key(None)?);
//! let server = start(handle.clone(), settings, bind(&listen).await?).await?;
//! println!("ssh -p {} admin@127.0.0.1", server.local_addr().port());
//! // The console stops with the balancer.
//! handle.shutdown(std::time::Duration::from_secs(1)).await;
//! server.stopped().await;
//! # Ok(()) }
//! ```

mod commands;
mod console;
mod editor;
mod keys;
mod memory;
mod script;
mod server;
mod slots;
mod views;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::ssh_key::{HashAlg, PrivateKey};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use commands::{Arg, COMMANDS, ConsoleError, Spec};
pub use keys::{host_key_path, load_or_generate_host_key};
pub use script::{
    MAX_OPERATIONS, MAX_SCRIPT_BYTES, MAX_SCRIPT_MEMORY, MAX_SCRIPTS, MeteredAlloc, SCRIPT_TIMEOUT,
};

use crate::BalancerHandle;
use crate::admin::{Logins, ReopenLog, SaveConfig};
use crate::config::{AdminSshConfig, ListenAddr};

/// How long a client may take from connecting to logging in (the default of
/// [`SshSettings::login_timeout`]); connections still not logged in then are
/// closed. Short, so idle connections cannot hold the console's places.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Connections not yet logged in from one source (an IPv4 address, an IPv6
/// /64) at once; more are closed at accept, so one client cannot lock the
/// others out.
pub const MAX_UNAUTHENTICATED_PER_SOURCE: usize = 8;
/// Connections not yet logged in at once, whatever their source: half of
/// [`MAX_SESSIONS`] (of [`max_sessions`] under a low descriptor limit), so
/// logged-in sessions always have room. Past it the oldest connection of the
/// source holding the most is closed to make room for the new one.
pub const MAX_UNAUTHENTICATED: usize = MAX_SESSIONS / 2;
/// How long open SSH sessions get to end at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A session silent for this long is closed.
pub const INACTIVITY_TIMEOUT: Duration = Duration::from_secs(3600);
/// The delay of every refused login (so failures take the same time).
pub const AUTH_REJECTION_TIME: Duration = Duration::from_secs(1);
/// Connections served at once, under a descriptor limit high enough (see
/// [`max_sessions`]); more are closed at accept.
pub const MAX_SESSIONS: usize = 64;
/// How long a connection closed by the console (login timed out, shutdown)
/// gets to take its goodbye before it is cut.
const DISCONNECT_GRACE: Duration = Duration::from_secs(1);

/// Connections the console serves at once: [`MAX_SESSIONS`], or a sixteenth
/// of the descriptor limit when that is less (at least 4), as the admin web
/// server and the control socket.
pub fn max_sessions() -> usize {
    crate::lookup::management_cap(MAX_SESSIONS)
}

/// Why the SSH console could not start.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The listen address could not be bound.
    #[error("cannot listen on {listen} for the SSH console: {source}")]
    Bind {
        /// The address as configured.
        listen: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The host key file could not be read, parsed or created.
    #[error("SSH host key {path}: {reason}")]
    HostKey {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// How the SSH console behaves beyond what the running configuration says.
#[derive(Clone)]
pub struct SshSettings {
    /// The server's host key.
    pub host_key: PrivateKey,
    /// The OpenSSH `authorized_keys` file (read at every key login, so edits
    /// apply at once); `None`: password logins only.
    pub authorized_keys: Option<PathBuf>,
    /// The balancer's name in the prompt and banner (default `txlb`).
    pub name: String,
    /// The `log reopen` hook; `None` answers that there is no log file.
    pub reopen_log: Option<ReopenLog>,
    /// The `config save` hook; `None` answers that saving is not set up.
    pub save_config: Option<SaveConfig>,
    /// The failed-login budget per source address; the web admin's
    /// ([`AdminSettings::logins`](crate::admin::AdminSettings::logins)) when
    /// both run, so guesses on either count against both.
    pub logins: Logins,
    /// How long a client may take to log in (default [`LOGIN_TIMEOUT`]).
    pub login_timeout: Duration,
    /// How long one `script` may run (default [`SCRIPT_TIMEOUT`]).
    pub script_timeout: Duration,
}

impl std::fmt::Debug for SshSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSettings")
            .field("host_key", &self.host_key.fingerprint(HashAlg::Sha256))
            .field("authorized_keys", &self.authorized_keys)
            .field("name", &self.name)
            .field("reopen_log", &self.reopen_log.is_some())
            .field("save_config", &self.save_config.is_some())
            .field("logins", &self.logins)
            .field("login_timeout", &self.login_timeout)
            .field("script_timeout", &self.script_timeout)
            .finish()
    }
}

impl SshSettings {
    /// Settings with this host key, no `authorized_keys` file and no hooks.
    pub fn new(host_key: PrivateKey) -> Self {
        SshSettings {
            host_key,
            authorized_keys: None,
            name: "txlb".into(),
            reopen_log: None,
            save_config: None,
            logins: Logins::new(),
            login_timeout: LOGIN_TIMEOUT,
            script_timeout: SCRIPT_TIMEOUT,
        }
    }

    /// Settings from `<ssh …>`: the host key from `hostKey`, else kept next to
    /// `config_file` ([`host_key_path`]), generated when missing; the
    /// `authorizedKeys` file; `scriptTimeout`; the configuration file's stem as
    /// the name.
    pub fn from_config(ssh: &AdminSshConfig, config_file: Option<&Path>) -> Result<Self, SshError> {
        let key_path = ssh
            .host_key
            .clone()
            .or_else(|| config_file.map(host_key_path));
        let mut settings = SshSettings::new(load_or_generate_host_key(key_path.as_deref())?);
        settings.authorized_keys = ssh.authorized_keys.clone();
        settings.script_timeout = ssh.script_timeout;
        if let Some(stem) = config_file.and_then(Path::file_stem) {
            settings.name = stem.to_string_lossy().into_owned();
        }
        Ok(settings)
    }
}

/// Binds the SSH address from the configuration (`*` binds every address).
pub async fn bind(listen: &ListenAddr) -> Result<TcpListener, SshError> {
    let result = crate::admin::bind_plane(listen).await;
    result.map_err(|source| SshError::Bind {
        listen: listen.to_string(),
        source,
    })
}

/// A running SSH console server.
#[derive(Debug)]
pub struct SshServer {
    local: SocketAddr,
    fingerprint: String,
    /// Stops accepting (a child of the balancer's shutdown token).
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl SshServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The host key's SHA-256 fingerprint as OpenSSH shows it (`SHA256:…`).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Resolves when the server has stopped (after the balancer's shutdown).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }

    /// Stops accepting while the balancer runs on (the listener is dropped at
    /// once); open sessions go on until they end or the balancer shuts down.
    /// For moving or re-keying the console at a reload.
    pub fn stop(self) {
        self.stop.cancel();
    }
}

/// Serves the console on `listener` in a task until the balancer shuts down;
/// open sessions then get up to [`SHUTDOWN_GRACE`] to end.
pub async fn start(
    handle: BalancerHandle,
    settings: SshSettings,
    listener: TcpListener,
) -> Result<SshServer, SshError> {
    let local = listener.local_addr().map_err(|source| SshError::Bind {
        listen: "SSH listener".into(),
        source,
    })?;
    let fingerprint = settings.host_key.fingerprint(HashAlg::Sha256).to_string();
    let no_users = handle.config().admin.is_none_or(|a| a.users.is_empty());
    if no_users && settings.authorized_keys.is_none() {
        tracing::warn!(%local, "SSH console without users or authorized keys: nobody can log in");
    }
    let config = russh::server::Config {
        server_id: russh::SshId::Standard(
            concat!("SSH-2.0-txlb_", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods: server::methods(),
        auth_rejection_time: AUTH_REJECTION_TIME,
        // OpenSSH opens with a "none" attempt to learn the methods: answer at once.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![settings.host_key.clone()],
        inactivity_timeout: Some(INACTIVITY_TIMEOUT),
        nodelay: true,
        ..Default::default()
    };
    let max_sessions = max_sessions();
    let shared = Arc::new(server::Shared {
        handle,
        settings: Arc::new(settings),
        tasks: TaskTracker::new(),
        sessions: TaskTracker::new(),
        max_sessions,
        unauthenticated: Mutex::new(server::Waiting::new(max_sessions / 2)),
        scripts: slots::Scripts::new(),
    });
    let stop = shared.handle.shutdown_token().child_token();
    let task = tokio::spawn(accept_loop(
        shared,
        Arc::new(config),
        listener,
        local,
        stop.clone(),
    ));
    tracing::info!(%local, %fingerprint, max_sessions, "SSH console up");
    Ok(SshServer {
        local,
        fingerprint,
        stop,
        task,
    })
}

/// [`start`], then wait until the server has stopped.
pub async fn serve(
    handle: BalancerHandle,
    settings: SshSettings,
    listener: TcpListener,
) -> Result<(), SshError> {
    start(handle, settings, listener).await?.stopped().await;
    Ok(())
}

/// Accepts until `stop` (the balancer's shutdown, or [`SshServer::stop`]);
/// sessions end at the balancer's shutdown.
async fn accept_loop(
    shared: Arc<server::Shared>,
    config: Arc<russh::server::Config>,
    listener: TcpListener,
    local: SocketAddr,
    stop: CancellationToken,
) {
    let shutdown = shared.handle.shutdown_token();
    let sessions = shared.sessions.clone();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "SSH accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Sessions, and scripts still running after theirs ended, count.
        if sessions.len() >= shared.max_sessions {
            tracing::warn!(%peer, "too many SSH sessions: connection closed");
            continue;
        }
        let cut = CancellationToken::new();
        let Some(pending) = server::Pending::new(&shared, peer.ip(), cut.clone()) else {
            // Debug only: a flood of these must not flood the log.
            tracing::debug!(%peer, "too many SSH connections not logged in: connection closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = server::Severable::new(stream, cut.clone());
        let connection = Connection {
            shared: shared.clone(),
            config: config.clone(),
            peer,
            shutdown: shutdown.clone(),
            cut,
        };
        sessions.spawn(connection.serve(stream, pending));
    }
    drop(listener);
    sessions.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, sessions.wait()).await;
    shared.tasks.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, shared.tasks.wait()).await;
    // Which console: after a move the old one stops only once the sessions it
    // still serves have ended, which may be after the new one has come and gone.
    tracing::info!(%local, "SSH console stopped");
}

/// One connection's task.
struct Connection {
    shared: Arc<server::Shared>,
    config: Arc<russh::server::Config>,
    peer: SocketAddr,
    shutdown: CancellationToken,
    /// Cuts the connection's stream ([`server::Severable`]).
    cut: CancellationToken,
}

impl Connection {
    /// Runs the connection until it ends, is evicted, does not log in within
    /// the login timeout, or the balancer shuts down. Whatever way this task
    /// ends, the connection's stream is cut, so the russh task (which would
    /// otherwise wait out a stalled key exchange) ends with it.
    async fn serve(self, stream: server::Severable<TcpStream>, pending: server::Pending) {
        let Connection {
            shared,
            config,
            peer,
            shutdown,
            cut,
        } = self;
        let _cut_on_exit = cut.drop_guard();
        let deadline = tokio::time::Instant::now() + shared.settings.login_timeout;
        let logged_in = Arc::new(AtomicBool::new(false));
        let client = server::Client::new(shared, peer, logged_in.clone(), pending);
        let started = tokio::select! {
            s = tokio::time::timeout_at(deadline, russh::server::run_stream(config, stream, client)) => s,
            _ = shutdown.cancelled() => return,
        };
        let mut session = match started {
            Ok(Ok(session)) => session,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "SSH handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "SSH handshake timed out");
                return;
            }
        };
        let handle = session.handle();
        let reason = loop {
            tokio::select! {
                result = &mut session => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "SSH session ended with an error");
                    }
                    return;
                }
                _ = tokio::time::sleep_until(deadline), if !logged_in.load(Ordering::Relaxed) => {
                    // Logged in meanwhile: the deadline is over for good.
                    if logged_in.load(Ordering::Relaxed) {
                        continue;
                    }
                    tracing::debug!(%peer, "SSH login timed out");
                    break "login timed out";
                }
                _ = shutdown.cancelled() => {
                    // The consoles say goodbye first; then the connection goes.
                    goodbye_pause().await;
                    break "the balancer is shutting down";
                }
            }
        };
        // Said when the session can (not in the middle of a key exchange);
        // the stream is cut at the latest when this task ends.
        let goodbye = async {
            let _ = handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    reason.into(),
                    String::new(),
                )
                .await;
            let _ = (&mut session).await;
        };
        let _ = tokio::time::timeout(DISCONNECT_GRACE, goodbye).await;
    }
}

/// A short pause so consoles can write their goodbye before the disconnect.
async fn goodbye_pause() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}
