//! `txlb run`'s side of an upgrade: the thin adapters (the upgrade socket
//! `txlb upgrade` talks to, and SIGUSR2) around the library's one operation,
//! [`txlb::upgrade::hand_over`], given the binary's own sockets (admin web,
//! SSH console, the upgrade socket itself) to pass on.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use txlb::BalancerHandle;
use txlb::upgrade::request::{Reply, Request};
use txlb::upgrade::{DEFAULT_HANDOFF_DEADLINE, DEFAULT_READY_TIMEOUT, Plan};

use crate::admin_plane::AdminPlane;

/// The name the upgrade socket is handed over by.
pub(crate) const UPGRADE_SOCKET: &str = "upgrade";

/// How this process was started, read first thing in `main`: what an upgrade
/// starts by default, and with which arguments.
#[derive(Debug, Clone)]
pub(crate) struct StartedAs {
    /// The binary's path (`None`: unknown, then `--binary` is needed).
    pub exe: Option<PathBuf>,
    /// The arguments after the program name.
    pub args: Vec<OsString>,
}

impl StartedAs {
    /// This process's binary path and arguments, now. The path is
    /// `/proc/self/exe`'s target read at start, without the ` (deleted)` the
    /// kernel adds once a package upgrade replaced the file: the path then
    /// names the new binary, which is what an upgrade should run.
    pub(crate) fn now() -> StartedAs {
        let exe = std::env::current_exe().ok().map(|path| {
            let text = path.as_os_str().as_encoded_bytes();
            match text.strip_suffix(b" (deleted)") {
                // SAFETY: a prefix of valid OS string bytes that ends before
                // an ASCII space.
                Some(kept) => {
                    unsafe { OsString::from_encoded_bytes_unchecked(kept.to_vec()) }.into()
                }
                None => path,
            }
        });
        StartedAs {
            exe,
            args: std::env::args_os().skip(1).collect(),
        }
    }
}

/// Runs upgrades for `txlb run`: one operation, whoever asks.
#[derive(Clone)]
pub(crate) struct Upgrader {
    pub balancer: BalancerHandle,
    pub admin: Arc<tokio::sync::Mutex<Option<AdminPlane>>>,
    /// A duplicate of the upgrade socket, to hand over.
    pub socket: Arc<OwnedFd>,
    pub started_as: StartedAs,
    /// Cancelled once handed over: `txlb run` then stops accepting and drains.
    pub handed: CancellationToken,
    /// Cancelled once the connections' move is over: `txlb run` waits for it
    /// before it exits (the new process then has its last counts).
    pub finished: Arc<std::sync::Mutex<Option<CancellationToken>>>,
}

impl Upgrader {
    /// One upgrade; the reply says how it went (and is logged).
    pub(crate) async fn upgrade(&self, request: Request) -> Reply {
        let failed = |error: String| {
            tracing::error!(%error, "upgrade failed; serving on");
            Reply {
                ok: false,
                pid: None,
                message: None,
                error: Some(error),
            }
        };
        let Some(binary) = request.binary.or_else(|| self.started_as.exe.clone()) else {
            return failed("this process's binary path is unknown: give --binary".into());
        };
        let mut sockets = match self.admin.lock().await.as_ref() {
            Some(plane) => plane.sockets(),
            None => Vec::new(),
        };
        match self.socket.try_clone() {
            Ok(socket) => sockets.push((UPGRADE_SOCKET.to_string(), socket)),
            Err(error) => return failed(format!("the upgrade socket: {error}")),
        }
        let plan = Plan {
            binary,
            args: self.started_as.args.clone(),
            ready_timeout: Duration::from_secs_f64(request.ready_timeout),
            handoff_deadline: Duration::from_secs_f64(request.handoff_deadline),
            sockets,
        };
        match txlb::upgrade::hand_over(&self.balancer, plan).await {
            Ok(done) => {
                *self.finished.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(done.finished.clone());
                self.handed.cancel();
                Reply {
                    ok: true,
                    pid: Some(done.pid),
                    message: Some(format!(
                        "{} sockets handed over, {} connections moved; PID {} drains",
                        done.sockets,
                        done.connections_moved,
                        std::process::id()
                    )),
                    error: None,
                }
            }
            Err(error) => failed(error.to_string()),
        }
    }

    /// SIGUSR2: an upgrade with the defaults, until `stop`.
    pub(crate) async fn on_sigusr2(
        self,
        mut usr2: tokio::signal::unix::Signal,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = usr2.recv() => {}
            }
            tracing::info!("SIGUSR2: upgrading");
            let request = Request {
                binary: None,
                ready_timeout: DEFAULT_READY_TIMEOUT.as_secs_f64(),
                handoff_deadline: DEFAULT_HANDOFF_DEADLINE.as_secs_f64(),
            };
            if self.upgrade(request).await.ok {
                return;
            }
        }
    }
}
