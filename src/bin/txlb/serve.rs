//! `txlb run`: the balancer from a configuration file, its admin plane, and the
//! signals: SIGHUP reloads (the library's one reload), SIGUSR1 reopens the logs,
//! SIGUSR2 upgrades (as `txlb upgrade` does through the upgrade socket),
//! SIGTERM and SIGINT stop it gracefully. systemd hears of each step. Started
//! by an upgrade, it takes over the old process's sockets and state.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use txlb::config::Config;
use txlb::{Balancer, BalancerHandle};

use crate::admin_plane::{AdminPlane, Following, Hooks};
use crate::systemd;

/// What `txlb run` keeps of its start: the file, its text as parsed (write-back
/// edits exactly that), the log file (`closeLog` and SIGUSR1 reopen it), and what
/// systemd handed over.
pub(crate) struct Boot {
    pub path: PathBuf,
    pub text: String,
    pub log_file: Option<txlb::logging::LogFile>,
    pub manager: ServiceManager,
    /// What the previous process handed over, when an upgrade started this one.
    pub incoming: Option<txlb::upgrade::Incoming>,
    /// This process's binary and arguments, for the next upgrade.
    pub started_as: crate::upgrade::StartedAs,
}

/// What the service manager hands over: where to send notifications, and the
/// listening sockets of socket activation.
pub(crate) struct ServiceManager {
    notifier: systemd::Notifier,
    inherited: Vec<std::net::TcpListener>,
}

impl ServiceManager {
    /// What systemd passed this process.
    ///
    /// # Safety
    /// Call while the process has one thread and before anything opened file
    /// descriptors 3 and up (see [`systemd::take_listen_fds`]).
    pub(crate) unsafe fn from_env() -> Result<ServiceManager> {
        // SAFETY: as this function's contract says.
        let inherited = unsafe { systemd::take_listen_fds() }?;
        Ok(ServiceManager {
            // A broken NOTIFY_SOCKET costs the notifications, not the service.
            notifier: systemd::Notifier::from_env().unwrap_or_else(|error| {
                eprintln!("txlb: ignoring NOTIFY_SOCKET: {error}");
                systemd::Notifier::default()
            }),
            inherited,
        })
    }
}

/// Runs until SIGINT or SIGTERM; SIGHUP reloads the configuration file, SIGUSR1
/// reopens the log files.
pub(crate) async fn serve(
    boot: Boot,
    config: Config,
    workers: usize,
    grace: Duration,
) -> Result<()> {
    let Boot {
        path,
        text,
        log_file,
        manager,
        mut incoming,
        started_as,
    } = boot;
    // Until it is ready, a failure of an upgraded process is told to the old
    // one, which serves on.
    let fail = |incoming: Option<txlb::upgrade::Incoming>, error: anyhow::Error| {
        if let Some(incoming) = incoming {
            incoming.fail(&crate::error_text(&error));
        }
        error
    };
    // Before the first listener serves: a signal sent once clients are
    // served must never meet its default action (SIGHUP would kill the
    // process). One sent during the start waits in its stream.
    let signals = match Signals::register() {
        Ok(signals) => signals,
        Err(error) => return Err(fail(incoming, error)),
    };
    let builder = Balancer::builder(config)
        .workers(workers)
        .inherited_listeners(manager.inherited);
    let builder = match incoming.as_mut() {
        None => builder.file_text(text),
        Some(handed) => match handed.builder(builder) {
            Ok(builder) => builder,
            Err(reason) => return Err(fail(incoming, anyhow::anyhow!(reason))),
        },
    };
    let balancer = match builder.start().await {
        Ok(balancer) => balancer,
        Err(error) => return Err(fail(incoming, error.into())),
    };
    let Some(file) = balancer.config_file().cloned() else {
        balancer.shutdown(Duration::ZERO).await;
        let error = anyhow::anyhow!("{}: the configuration names no file", path.display());
        return Err(fail(incoming, error));
    };
    // The one way logs are reopened: SIGUSR1 and the legacy `closeLog` alike.
    let reopen_logs: txlb::admin::ReopenLog = {
        let balancer = balancer.clone();
        Arc::new(move || {
            if let Some(file) = &log_file {
                file.reopen()?;
            }
            balancer.reopen_access_log()
        })
    };
    let hooks = Hooks {
        file: file.clone(),
        reopen_logs: reopen_logs.clone(),
        logins: txlb::admin::Logins::new(),
    };
    let handed_admin = crate::admin_plane::Handed::take(incoming.as_mut());
    let admin = match AdminPlane::start(&balancer.config(), &balancer, &hooks, handed_admin).await {
        Ok(admin) => admin,
        Err(error) => {
            balancer.shutdown(Duration::ZERO).await;
            return Err(fail(incoming, error));
        }
    };
    // The socket `txlb upgrade --config FILE` finds this process by: the old
    // process's after an upgrade, else bound now (named after the file).
    let handed_socket = incoming
        .as_mut()
        .and_then(|i| i.take_socket(crate::upgrade::UPGRADE_SOCKET));
    let upgrade_socket = match handed_socket {
        Some(fd) => Ok(std::os::unix::net::UnixListener::from(fd)),
        None => txlb::upgrade::request::bind(&path),
    }
    .and_then(|socket| {
        socket.set_nonblocking(true)?;
        let dup = std::os::fd::AsFd::as_fd(&socket).try_clone_to_owned()?;
        Ok((tokio::net::UnixListener::from_std(socket)?, dup))
    });
    // Moved by every reload (SIGHUP, the console); stopped here at shutdown.
    let admin = Arc::new(tokio::sync::Mutex::new(Some(admin)));
    let following = Following {
        plane: admin.clone(),
        hooks,
        pending: None,
    };
    file.follow(Box::new(following)).await;
    tracing::info!(config = %path.display(), started = %balancer.started().how(), "txlb running");
    let stop = CancellationToken::new();
    let notifier = manager.notifier;
    let _watchdog = start_watchdog(&notifier);
    tokio::spawn(reopen_logs_on_sigusr1(
        signals.usr1,
        reopen_logs,
        stop.clone(),
    ));
    let handed = CancellationToken::new();
    let moving = Arc::new(std::sync::Mutex::new(None));
    match upgrade_socket {
        Ok((socket, dup)) => {
            let upgrader = crate::upgrade::Upgrader {
                balancer: balancer.clone(),
                admin: admin.clone(),
                socket: Arc::new(dup),
                started_as,
                handed: handed.clone(),
                finished: moving.clone(),
            };
            tokio::spawn(upgrader.clone().on_sigusr2(signals.usr2, stop.clone()));
            let serving = upgrader.clone();
            tokio::spawn(txlb::upgrade::request::serve(
                socket,
                move |request| {
                    let upgrader = serving.clone();
                    async move { upgrader.upgrade(request).await }
                },
                handed.clone(),
            ));
        }
        Err(error) => {
            tracing::warn!(%error, "no upgrade socket: txlb upgrade cannot reach this process");
        }
    }
    // Every listener is bound (clients queue until accepted) and every signal has
    // its handler: tell systemd, and the old process when this one took over.
    match incoming {
        Some(incoming) => {
            if let Err(error) = incoming.ready(&balancer) {
                // The old process gave up on us (its ready timeout): it serves
                // on, so this one must not.
                balancer.shutdown(Duration::ZERO).await;
                anyhow::bail!("upgrade: cannot tell the old process this one is ready: {error}");
            }
            notifier.main_pid_ready(std::process::id(), "running (upgraded)");
        }
        None => notifier.ready("running"),
    }
    tokio::spawn(reload_on_sighup(
        balancer.clone(),
        stop.clone(),
        signals.hup,
        notifier.clone(),
    ));
    let upgraded = tokio::select! {
        _ = signals.stop => false,
        _ = handed.cancelled() => true,
    };
    stop.cancel();
    if upgraded {
        // The new process is systemd's main process now: no STOPPING=1.
        tracing::info!(grace_secs = grace.as_secs_f64(), "handed over: draining");
    } else {
        notifier.stopping();
        tracing::info!(grace_secs = grace.as_secs_f64(), "shutting down");
    }
    balancer.shutdown(grace).await;
    let moving = moving.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(finished) = moving {
        // Bounded by the handoff deadline; this is a safety net.
        let _ = tokio::time::timeout(MOVE_WAIT, finished.cancelled()).await;
    }
    file.unfollow().await;
    if let Some(admin) = admin.lock().await.take() {
        admin.stopped().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Longest wait, after draining, for an upgrade's move of connections to
/// finish (it ends by itself at the handoff deadline).
const MOVE_WAIT: Duration = Duration::from_secs(120);

/// The signals `txlb run` handles, registered before any listener serves so
/// that none sent after it can kill the process with its default action.
struct Signals {
    stop: std::pin::Pin<Box<dyn Future<Output = ()>>>,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            stop: Box::pin(stop_signal()?),
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }
}

/// Handles SIGTERM and SIGINT from now on; the future resolves at the first.
pub(crate) fn stop_signal() -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Pings systemd's watchdog when `WatchdogSec=` is set, until the returned guard
/// is dropped: through the shutdown grace period too.
fn start_watchdog(notifier: &systemd::Notifier) -> Option<tokio_util::sync::DropGuard> {
    let timeout = systemd::watchdog_timeout().filter(|_| notifier.is_enabled())?;
    let stop = CancellationToken::new();
    tracing::info!(timeout_secs = timeout.as_secs_f64(), "systemd watchdog on");
    tokio::spawn(notifier.clone().run_watchdog(timeout, stop.clone()));
    Some(stop.drop_guard())
}

/// SIGUSR1 reopens the log file (logrotate's postrotate; the legacy `closeLog`).
async fn reopen_logs_on_sigusr1(
    mut usr1: tokio::signal::unix::Signal,
    reopen_logs: txlb::admin::ReopenLog,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = usr1.recv() => {}
        }
        match reopen_logs() {
            Ok(()) => tracing::info!("SIGUSR1: log file reopened"),
            Err(error) => tracing::error!(%error, "SIGUSR1: cannot reopen the log files"),
        }
    }
}

/// SIGHUP: the library's reload (the one the console's `config reload` calls),
/// between systemd's RELOADING=1 and READY=1. It logs and records its outcome.
async fn reload_on_sighup(
    balancer: BalancerHandle,
    stop: CancellationToken,
    mut hup: tokio::signal::unix::Signal,
    notifier: systemd::Notifier,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = hup.recv() => {}
        }
        notifier.reloading();
        let _ = balancer.reload().await;
        notifier.ready("running");
    }
}
