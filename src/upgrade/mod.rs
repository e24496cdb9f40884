//! Upgrading the binary without refusing a client: the running process starts
//! the new binary and hands it, over a Unix socket (`SCM_RIGHTS`), every
//! listening socket and its running state; once the new process serves, the
//! old one stops accepting and drains.
//!
//! One operation, [`hand_over`], whoever asks (`txlb upgrade`, SIGUSR2); its
//! other half, [`Incoming`], is how the new process takes over. In order:
//!
//! 1. The old process renders its state ([`state::Handover`]: the running
//!    configuration with unsaved changes, write-back's base, every host's
//!    health and counters, the services' counters) and duplicates its
//!    sockets: every copy of each listener's (one per worker, all of a
//!    `SO_REUSEPORT` group, so that no queued client is reset), the control
//!    socket's, and the application's own ([`Plan::sockets`]: the admin web
//!    server's, the SSH console's, the upgrade socket's).
//! 2. It starts the new binary with the other end of a socket pair as file
//!    descriptor 3 ([`UPGRADE_FD_VAR`] says so) and sends the state and the
//!    descriptors in one message ([`fds`]).
//! 3. The new process checks the state's format version, starts its balancer
//!    on the handed sockets (accepting at once: both processes accept for a
//!    moment, each client served by one), restores host states and counters
//!    before its first client, starts what the application adds, and answers
//!    ready with its process id ([`Incoming::ready`]).
//! 4. Only then does the old process mark its sockets handed over
//!    ([`hand_over`] returns): the application stops accepting and drains.
//!    If the new process fails, exits or is not ready within
//!    [`Plan::ready_timeout`], it is killed and the old process keeps
//!    everything (it never stopped accepting).
//! 5. UDP sessions follow on the same socket, before `hand_over` returns
//!    ([`state::Transfer::UdpSessions`]): each UDP listener stops at the
//!    hand-over and gives its sessions up, connected sockets and all; the new
//!    process's UDP listeners wait for them before they receive.
//! 6. Established connections follow on the same socket
//!    ([`state::Transfer`]): every parked one at once (two sockets and a
//!    record, nothing in flight), then, until [`Plan::handoff_deadline`],
//!    those the idle sweeper parks meanwhile. The new process parks each in
//!    a worker's lot under its id, counted open on its host; the old one
//!    releases it once its sockets are sent.
//!
//! The data path takes no part: the sockets are duplicates made when each
//! listener started, and the state is read from the same atomics and
//! snapshots the admin pages read.

mod fds;
pub mod request;
pub mod state;

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::balancer::{BalancerBuilder, BalancerHandle, UpgradedFrom};
use crate::config::{Config, ListenAddr};
use crate::control::Carried;
use crate::state::{from_unix_ms, unix_ms};
use state::{Answer, Handover, HostEntry, Predecessor, ServiceEntry, SocketEntry};

/// The environment variable that tells a new process, by its descriptor
/// number, where to read an upgrade's hand-over.
pub const UPGRADE_FD_VAR: &str = "TXLB_UPGRADE_FD";

/// The descriptor the new process finds the hand-over socket on.
const UPGRADE_FD: RawFd = 3;

/// Default time the new process has to serve (`--ready-timeout`), in seconds.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Default time active connections have to go quiet and move
/// (`--handoff-deadline`), in seconds.
pub const DEFAULT_HANDOFF_DEADLINE: Duration = Duration::from_secs(30);

/// How long a new process waits for the old one's message.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an upgrade failed; the old process serves on either way.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// Another upgrade is under way in this process.
    #[error("an upgrade is already under way")]
    Busy,
    /// This process already handed over to a new one and is draining.
    #[error("this process already handed over to a new one (it is draining)")]
    AlreadyHandedOver,
    /// The state could not be rendered or the sockets duplicated.
    #[error("cannot prepare the hand-over: {0}")]
    Prepare(String),
    /// The new binary could not be started.
    #[error("cannot start {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The new process exited before it was ready.
    #[error("the new process (PID {pid}) exited before it was ready ({status})")]
    Exited {
        /// Its process id.
        pid: u32,
        /// How it exited.
        status: String,
    },
    /// The new process said it cannot take over.
    #[error("the new process (PID {pid}) could not take over: {reason}")]
    Refused {
        /// Its process id.
        pid: u32,
        /// What it said.
        reason: String,
    },
    /// The new process did not answer ready in time.
    #[error("the new process (PID {pid}) was not ready within {seconds} s; it was stopped")]
    NotReady {
        /// Its process id.
        pid: u32,
        /// The ready timeout.
        seconds: f64,
    },
    /// The hand-over socket failed.
    #[error("the hand-over to the new process (PID {pid}) failed: {source}")]
    Io {
        /// Its process id.
        pid: u32,
        /// What failed.
        source: io::Error,
    },
}

/// What the old process hands over and to what.
#[derive(Debug)]
pub struct Plan {
    /// The binary to start: by default the path this process was started from
    /// (not `/proc/self/exe`, which names the deleted file after a package
    /// upgrade replaced it).
    pub binary: PathBuf,
    /// Its arguments (this process's own, so it runs the same way).
    pub args: Vec<OsString>,
    /// How long the new process has to serve.
    pub ready_timeout: Duration,
    /// How long established connections have to go quiet (parked, nothing
    /// in flight) and move; those still busy then stay and drain here.
    pub handoff_deadline: Duration,
    /// The application's own listening sockets, by name, for the new process
    /// to take with [`Incoming::take_socket`].
    pub sockets: Vec<(String, OwnedFd)>,
}

/// A successful hand-over.
#[derive(Debug, Clone)]
pub struct HandedOver {
    /// The new process.
    pub pid: u32,
    /// Listening sockets handed over (every copy counted).
    pub sockets: usize,
    /// Established connections moved at once (idle ones).
    pub connections_moved: u64,
    /// Cancelled once the connections' move is over (all moved, or the
    /// handoff deadline), those left here have ended and the new process has
    /// this one's last counts: wait for it, after draining, before this
    /// process exits.
    pub finished: tokio_util::sync::CancellationToken,
}

/// One upgrade at a time per process.
static UNDER_WAY: AtomicBool = AtomicBool::new(false);

/// Starts `plan.binary` and hands it `balancer`'s sockets and state; returns
/// once it serves (then stop accepting and drain: the sockets are its), or
/// fails with the new process stopped and this one untouched.
pub async fn hand_over(balancer: &BalancerHandle, plan: Plan) -> Result<HandedOver, UpgradeError> {
    let controller = balancer.controller();
    if controller.handed_over.is_cancelled() {
        return Err(UpgradeError::AlreadyHandedOver);
    }
    if UNDER_WAY.swap(true, Ordering::AcqRel) {
        return Err(UpgradeError::Busy);
    }
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            UNDER_WAY.store(false, Ordering::Release);
        }
    }
    let _release = Release;
    let (message, sockets, sent) = prepare(balancer, plan.sockets)?;
    let count = sockets.len();
    tracing::info!(
        binary = %plan.binary.display(),
        sockets = count,
        state_bytes = message.len(),
        "upgrade: starting the new process"
    );
    let (binary, args, timeout) = (plan.binary, plan.args, plan.ready_timeout);
    let (pid, socket, reads) =
        tokio::task::spawn_blocking(move || run_child(&binary, &args, timeout, &message, &sockets))
            .await
            .unwrap_or_else(|e| Err(UpgradeError::Prepare(e.to_string())))?;
    if reads.udp_sessions {
        // Before the hand-over shows: UDP listeners then give their
        // sessions up rather than end them.
        controller.udp_moves.export();
    }
    controller.handed_over.cancel();
    // UDP listeners stop at the hand-over and give their sessions up: they
    // move before this returns, and so before this process winds its
    // workers down.
    let socket = move_udp_sessions(socket, controller).await;
    // What is parked now moves at once; the rest as it goes quiet.
    let (socket, first) = move_parked(socket, 0).await;
    if let Some(socket) = socket.as_ref().filter(|_| reads.draining) {
        serve_asks(socket, controller.data.registry.clone());
    }
    let telling = Telling {
        reads: reads.draining,
        told: None,
    };
    let (socket, telling) = telling.tell(socket, controller).await;
    controller
        .data
        .events
        .emit(crate::events::Event::HandedOver {
            pid,
            sockets: count,
            connections_moved: first,
        });
    let deadline = Instant::now() + plan.handoff_deadline;
    let finished = tokio_util::sync::CancellationToken::new();
    tokio::spawn(keep_moving(
        balancer.clone(),
        (socket, telling),
        (first, deadline),
        sent,
        finished.clone().drop_guard(),
    ));
    Ok(HandedOver {
        pid,
        sockets: count,
        connections_moved: first,
        finished,
    })
}

/// Connections sent per message: two descriptors each, within one message's
/// [`fds::FDS_PER_MESSAGE`].
const CONNECTIONS_PER_MESSAGE: usize = fds::FDS_PER_MESSAGE / 2;

/// How often the old process looks for connections that went quiet.
const MOVE_INTERVAL: Duration = Duration::from_millis(200);

/// How long after accepting stopped the old process looks again: long enough
/// for the accept tasks to have seen it.
const SETTLE: Duration = Duration::from_millis(20);

/// Sends every connection parked now to the new process; returns the socket
/// (`None` once it failed) and `moved` plus those sent. A connection whose
/// message could not be sent is closed (its sockets may be half there).
async fn move_parked(socket: Option<UnixStream>, moved: u64) -> (Option<UnixStream>, u64) {
    #[cfg(target_os = "linux")]
    {
        let Some(socket) = socket else {
            return (None, moved);
        };
        let outgoing = crate::proxy::moved::take_parked();
        if outgoing.is_empty() {
            return (Some(socket), moved);
        }
        let sent = tokio::task::spawn_blocking(move || {
            let mut sent = 0u64;
            for batch in outgoing.chunks(CONNECTIONS_PER_MESSAGE) {
                let records = batch.iter().map(|o| o.record.clone()).collect();
                let body = serde_json::to_vec(&state::Transfer::Connections(records))
                    .map_err(io::Error::other)?;
                let fds: Vec<_> = batch.iter().flat_map(|o| o.sockets()).collect();
                fds::send(&socket, &body, &fds)?;
                sent += batch.len() as u64;
            }
            // Dropped here, after sending: each releases its place (host open
            // count, registry entry, the drain's wait) in this process.
            drop(outgoing);
            Ok::<_, io::Error>((socket, sent))
        })
        .await;
        match sent {
            Ok(Ok((socket, sent))) => {
                tracing::debug!(sent, "upgrade: connections moved");
                (Some(socket), moved + sent)
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "upgrade: cannot move connections to the new process");
                (None, moved)
            }
            Err(_) => (None, moved),
        }
    }
    #[cfg(not(target_os = "linux"))]
    (socket, moved)
}

/// Moves connections as they go quiet (the idle sweeper parks them after a
/// second without a byte) until this process has stopped accepting and has
/// none left, or `deadline`; then, once those left here have ended, tells
/// the new process it is over, with what this one counted since `sent`.
/// `_finished` is dropped at the end.
async fn keep_moving(
    balancer: BalancerHandle,
    (socket, telling): (Option<UnixStream>, Telling),
    (mut moved, deadline): (u64, Instant),
    sent: Counts,
    _finished: tokio_util::sync::DropGuard,
) {
    let controller = balancer.controller().clone();
    let (mut socket, mut telling) = (socket, telling);
    let mut stopped = false;
    while socket.is_some() && Instant::now() < deadline {
        tokio::select! {
            _ = tokio::time::sleep(MOVE_INTERVAL) => {}
            // Accepting stopped: look again soon (often nothing is left).
            _ = controller.stop_accepting.cancelled(), if !stopped => {
                stopped = true;
                tokio::time::sleep(SETTLE).await;
            }
        }
        (socket, moved) = move_parked(socket, moved).await;
        (socket, telling) = telling.tell(socket, &controller).await;
        // Checked a moment after accepting stopped: a client accepted just
        // before is tracked by then.
        if controller.stop_accepting.is_cancelled() && controller.connections.is_empty() {
            break;
        }
    }
    let left = controller.connections.len();
    controller
        .data
        .events
        .emit(crate::events::Event::ConnectionsMoved { moved, left });
    // Those left still count bytes here: the new process's totals take them
    // once the last has ended (the drain's grace period bounds the wait).
    while socket.is_some()
        && !(controller.stop_accepting.is_cancelled() && controller.connections.is_empty())
    {
        tokio::time::sleep(MOVE_INTERVAL).await;
        (socket, telling) = telling.tell(socket, &controller).await;
    }
    if let Some(socket) = socket {
        let _ = tokio::task::spawn_blocking(move || {
            let (hosts, services) = counted_since(&controller, &sent);
            let done = serde_json::to_vec(&state::Transfer::Done {
                moved,
                hosts,
                services,
            })
            .unwrap_or_default();
            fds::send(&socket, &done, &[])
        })
        .await;
    }
}

/// What the new process said it reads of what follows its `Ready`.
#[derive(Debug, Clone, Copy)]
struct Reads {
    udp_sessions: bool,
    draining: bool,
}

/// What the new process was told of the connections open here (and when),
/// if it reads it.
struct Telling {
    reads: bool,
    told: Option<Told>,
}

/// The connections open here as last told, and when.
struct Told {
    open: Vec<crate::state::DrainingConnection>,
    at: Instant,
}

/// How often the new process hears of the byte counts of connections that
/// drain here when no connection came or went (a list of thousands of busy
/// ones is not re-sent every [`MOVE_INTERVAL`]).
const COUNTS_INTERVAL: Duration = Duration::from_secs(2);

impl Telling {
    /// [`tell_draining`] when the new process reads it.
    async fn tell(
        self,
        socket: Option<UnixStream>,
        controller: &crate::control::Controller,
    ) -> (Option<UnixStream>, Telling) {
        match socket {
            Some(socket) if self.reads => {
                let (socket, told) = tell_draining(socket, controller, self.told).await;
                (socket, Telling { reads: true, told })
            }
            socket => (socket, self),
        }
    }
}

/// Tells the new process which connections are open here now (busy ones,
/// draining) when one came or went since `told`, or their counts changed and
/// [`COUNTS_INTERVAL`] passed, so that it lists them, closes them through
/// this process and its control socket answers for them; returns the socket
/// (`None` once it failed) and what it was told.
async fn tell_draining(
    socket: UnixStream,
    controller: &crate::control::Controller,
    told: Option<Told>,
) -> (Option<UnixStream>, Option<Told>) {
    let mut open = controller.data.registry.draining();
    open.sort_by_key(|c| c.id);
    let unchanged = match &told {
        None => open.is_empty(),
        Some(told) => {
            told.open.len() == open.len()
                && told.open.iter().zip(&open).all(|(a, b)| a.id == b.id)
                && (told.at.elapsed() < COUNTS_INTERVAL || told.open == open)
        }
    };
    if unchanged {
        return (Some(socket), told);
    }
    let sent = open.clone();
    let result = tokio::task::spawn_blocking(move || {
        let body =
            serde_json::to_vec(&state::Transfer::Draining(sent)).map_err(io::Error::other)?;
        fds::send(&socket, &body, &[])?;
        Ok::<_, io::Error>(socket)
    })
    .await;
    match result {
        Ok(Ok(socket)) => (
            Some(socket),
            Some(Told {
                open,
                at: Instant::now(),
            }),
        ),
        Ok(Err(error)) => {
            tracing::warn!(%error, "upgrade: cannot tell the new process what drains here");
            (None, told)
        }
        Err(_) => (None, told),
    }
}

/// Carries out what the new process asks (closing a connection that drains
/// here) until it closes the socket: a thread on a copy of it.
fn serve_asks(socket: &UnixStream, registry: Arc<crate::state::ConnectionRegistry>) {
    let Ok(socket) = socket.try_clone() else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("txlb-upgrade-asks".into())
        .spawn(move || {
            let _ = socket.set_read_timeout(None);
            while let Ok((body, _)) = fds::receive(&socket) {
                if let Ok(state::Ask::Close { id }) = serde_json::from_slice(&body) {
                    let closed = registry.close(id);
                    tracing::info!(
                        id,
                        closed,
                        "upgrade: the new process asked to close a connection draining here"
                    );
                }
            }
        });
}

/// Longest the old process waits for its UDP listeners to stop and give
/// their sessions up (moments: each waits for its sessions' tasks).
const UDP_STOP_WAIT: Duration = Duration::from_secs(2);

/// Sends the UDP sessions this process's listeners gave up (when the new
/// process takes them), then says none follow; returns the socket (`None`
/// once it failed).
async fn move_udp_sessions(
    socket: Option<UnixStream>,
    controller: &Arc<crate::control::Controller>,
) -> Option<UnixStream> {
    let socket = socket?;
    if !controller.udp_moves.exporting() {
        return Some(socket);
    }
    let outgoing = controller.udp_moves.take_outgoing(UDP_STOP_WAIT).await;
    let sent = tokio::task::spawn_blocking(move || {
        let batches: Vec<_> = outgoing.chunks(fds::FDS_PER_MESSAGE).collect();
        let count = batches.len().max(1);
        for at in 0..count {
            let batch = batches.get(at).copied().unwrap_or_default();
            let body = serde_json::to_vec(&state::Transfer::UdpSessions {
                sessions: batch.iter().map(|(s, _)| s.clone()).collect(),
                last: at + 1 == count,
            })
            .map_err(io::Error::other)?;
            let fds: Vec<_> = batch.iter().map(|(_, fd)| fd.as_fd()).collect();
            fds::send(&socket, &body, &fds)?;
        }
        // Closed here once sent: the new process has its own copies.
        Ok::<_, io::Error>((socket, outgoing.len()))
    })
    .await;
    match sent {
        Ok(Ok((socket, sessions))) => {
            tracing::info!(sessions, "upgrade: UDP sessions moved to the new process");
            Some(socket)
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "upgrade: cannot move UDP sessions to the new process");
            None
        }
        Err(_) => None,
    }
}

/// Every host's health and counters and every service's counters, now.
fn counted(controller: &crate::control::Controller) -> Counts {
    let snapshot = controller.data.snapshots.load();
    let mut hosts = Vec::new();
    let mut services = Vec::new();
    for service in snapshot.services() {
        services.push(ServiceEntry {
            service: service.name.to_string(),
            counters: service.counters.view(),
        });
        for group in &service.groups {
            for host in group.hosts.iter() {
                hosts.push(HostEntry {
                    service: service.name.to_string(),
                    group: group.name.to_string(),
                    host: host.name.to_string(),
                    carried: host.stats.carried(),
                });
            }
        }
    }
    (hosts, services)
}

/// The counts made since `earlier` ([`counted`] at the hand-over).
fn counted_since(controller: &crate::control::Controller, earlier: &Counts) -> Counts {
    let (hosts, services) = counted(controller);
    let hosts = hosts
        .into_iter()
        .filter_map(|h| {
            let was = earlier
                .0
                .iter()
                .find(|e| e.service == h.service && e.group == h.group && e.host == h.host)?;
            let carried = h.carried.counts_since(&was.carried);
            Some(HostEntry { carried, ..h })
        })
        .collect();
    let services = services
        .into_iter()
        .filter_map(|s| {
            let was = earlier.1.iter().find(|e| e.service == s.service)?;
            Some(ServiceEntry {
                counters: s.counters.since(&was.counters),
                service: s.service,
            })
        })
        .collect();
    (hosts, services)
}

/// Hosts' and services' counts at one moment.
type Counts = (Vec<HostEntry>, Vec<ServiceEntry>);

/// The message, the descriptors in the manifest's order, and the counts sent.
/// Connection ids the old process keeps for clients it accepts between
/// sending its state and stopping (the new process numbers after them).
const ID_BLOCK: u64 = 1 << 20;

fn prepare(
    balancer: &BalancerHandle,
    named: Vec<(String, OwnedFd)>,
) -> Result<(Vec<u8>, Vec<OwnedFd>, Counts), UpgradeError> {
    let controller = balancer.controller();
    let running = balancer.config_shared();
    let config = match running.source.as_deref().map(crate::config::Format::of) {
        Some(crate::config::Format::Toml) => crate::config::to_toml(&running),
        _ => crate::config::to_xml(&running),
    };
    let mut entries = Vec::new();
    let mut fds = Vec::new();
    for (service, listen, copies) in controller.listener_sockets() {
        for socket in copies {
            entries.push(SocketEntry::Listener {
                service: service.to_string(),
                listen: listen.to_string(),
            });
            fds.push(socket);
        }
    }
    let control = controller
        .control_socket
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|fd| fd.try_clone())
        .transpose()
        .map_err(|e| UpgradeError::Prepare(format!("the control socket: {e}")))?;
    if let Some(fd) = control {
        entries.push(SocketEntry::Control);
        fds.push(fd);
    }
    for (name, fd) in named {
        entries.push(SocketEntry::Named { name });
        fds.push(fd);
    }
    let (hosts, services) = counted(controller);
    let sent = (hosts.clone(), services.clone());
    let numbered_after = controller.data.registry.last_id() + ID_BLOCK;
    let handover = Handover {
        version: state::FORMAT_VERSION,
        from: Predecessor {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            at_ms: unix_ms(SystemTime::now()),
        },
        sockets: entries,
        config,
        baseline: balancer
            .config_file()
            .and_then(|f| f.write_back())
            .map(|wb| wb.text()),
        hosts,
        services,
        fleet_revision: balancer.fleet().map(|f| f.revision),
        numbered_after,
        udp_sessions: true,
        names: controller
            .known_names()
            .into_iter()
            .map(|(name, addrs)| state::NameEntry { name, addrs })
            .collect(),
    };
    let message =
        serde_json::to_vec(&handover).map_err(|e| UpgradeError::Prepare(e.to_string()))?;
    Ok((message, fds, sent))
}

/// Starts the new process, sends it everything and waits for its answer; on
/// any failure it is killed. Returns its process id. Blocking.
fn run_child(
    binary: &Path,
    args: &[OsString],
    timeout: Duration,
    message: &[u8],
    sockets: &[OwnedFd],
) -> Result<(u32, Option<UnixStream>, Reads), UpgradeError> {
    let deadline = Instant::now() + timeout;
    let (ours, theirs) = UnixStream::pair().map_err(|e| UpgradeError::Prepare(e.to_string()))?;
    let mut command = Command::new(binary);
    command
        .args(args)
        .env(UPGRADE_FD_VAR, UPGRADE_FD.to_string())
        // systemd's watchdog names the main process; the new one becomes it
        // (MAINPID=) and pings on its own.
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null());
    let their_fd = theirs.as_raw_fd();
    {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: dup2 and fcntl are async-signal-safe and touch only the
        // child's descriptor table.
        unsafe {
            command.pre_exec(move || {
                if their_fd == UPGRADE_FD {
                    let flags = libc::fcntl(UPGRADE_FD, libc::F_GETFD);
                    if flags < 0
                        || libc::fcntl(UPGRADE_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(their_fd, UPGRADE_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command.spawn().map_err(|source| UpgradeError::Spawn {
        binary: binary.to_path_buf(),
        source,
    })?;
    drop(theirs);
    let pid = child.id();
    let result = exchange(&ours, &mut child, deadline, timeout, message, sockets);
    if result.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    result.map(|reads| (pid, Some(ours), reads))
}

fn exchange(
    socket: &UnixStream,
    child: &mut Child,
    deadline: Instant,
    timeout: Duration,
    message: &[u8],
    sockets: &[OwnedFd],
) -> Result<Reads, UpgradeError> {
    let pid = child.id();
    let not_ready = || UpgradeError::NotReady {
        pid,
        seconds: timeout.as_secs_f64(),
    };
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    let exited = |child: &mut Child| {
        // The socket closed: it exited, or is about to.
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            if let Ok(Some(status)) = child.try_wait() {
                return UpgradeError::Exited {
                    pid,
                    status: status.to_string(),
                };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        UpgradeError::Exited {
            pid,
            status: "closed the hand-over socket".into(),
        }
    };
    let io = |source| UpgradeError::Io { pid, source };
    socket
        .set_write_timeout(Some(left().ok_or_else(not_ready)?))
        .map_err(io)?;
    let borrowed: Vec<_> = sockets.iter().map(AsFd::as_fd).collect();
    match fds::send(socket, message, &borrowed) {
        Ok(()) => {}
        Err(e) if is_timeout(&e) => return Err(not_ready()),
        Err(e)
            if e.kind() == io::ErrorKind::BrokenPipe
                || e.kind() == io::ErrorKind::ConnectionReset =>
        {
            return Err(exited(child));
        }
        Err(e) => return Err(io(e)),
    }
    socket
        .set_read_timeout(Some(left().ok_or_else(not_ready)?))
        .map_err(io)?;
    let body = match fds::receive(socket) {
        Ok((body, _)) => body,
        Err(e) if is_timeout(&e) => return Err(not_ready()),
        Err(e)
            if e.kind() == io::ErrorKind::UnexpectedEof
                || e.kind() == io::ErrorKind::ConnectionReset =>
        {
            return Err(exited(child));
        }
        Err(e) => return Err(io(e)),
    };
    match serde_json::from_slice::<Answer>(&body) {
        Ok(Answer::Ready {
            udp_sessions,
            draining,
            ..
        }) => Ok(Reads {
            udp_sessions,
            draining,
        }),
        Ok(Answer::Failed { reason }) => Err(UpgradeError::Refused { pid, reason }),
        Err(e) => Err(UpgradeError::Refused {
            pid,
            reason: format!("an answer this txlb does not understand: {e}"),
        }),
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

// --- the new process -----------------------------------------------------------

/// What a new process received from the one it takes over from; take the
/// pieces, start, then say [`Incoming::ready`] (or [`Incoming::fail`]).
#[derive(Debug)]
pub struct Incoming {
    socket: UnixStream,
    handover: Handover,
    /// The descriptors with their manifest entries; taken as they are used.
    sockets: Vec<(SocketEntry, Option<OwnedFd>)>,
}

impl Incoming {
    /// The hand-over this process was started for, when [`UPGRADE_FD_VAR`]
    /// names one (then removed from the environment); `None` for a fresh
    /// start. An error means the old process's message could not be read:
    /// it was answered with the reason (see [`Incoming::fail`]).
    ///
    /// # Safety
    /// Call once, while the process has one thread (it changes the
    /// environment), before anything else could own the descriptor named.
    pub unsafe fn from_env() -> Option<Result<Incoming, String>> {
        let named = std::env::var(UPGRADE_FD_VAR).ok()?;
        // SAFETY: one thread, as the caller guarantees.
        unsafe { std::env::remove_var(UPGRADE_FD_VAR) };
        // Only the descriptor an upgrade passes, and only a socket: a stray
        // variable must not make this process take (and close) its stdout.
        let fd: RawFd = match named.parse() {
            Ok(UPGRADE_FD) if is_socket(UPGRADE_FD) => UPGRADE_FD,
            _ => {
                return Some(Err(format!(
                    "{UPGRADE_FD_VAR}={named:?} does not name the upgrade's socket (descriptor {UPGRADE_FD})"
                )));
            }
        };
        // SAFETY: the old process passed `fd` for this; nothing else owns it.
        let socket = unsafe { UnixStream::from(OwnedFd::from_raw_fd(fd)) };
        Some(Incoming::receive(socket))
    }

    fn receive(socket: UnixStream) -> Result<Incoming, String> {
        let fail = |socket: &UnixStream, reason: String| {
            let _ = answer(
                socket,
                &Answer::Failed {
                    reason: reason.clone(),
                },
            );
            reason
        };
        let _ = socket.set_read_timeout(Some(RECEIVE_TIMEOUT));
        // Close-on-exec: the new process never passes this socket on.
        let _ = set_cloexec(&socket);
        let (body, fds) = match fds::receive(&socket) {
            Ok(received) => received,
            Err(e) => return Err(fail(&socket, format!("cannot read the hand-over: {e}"))),
        };
        let handover = match state::read(&body) {
            Ok(handover) => handover,
            Err(reason) => return Err(fail(&socket, reason)),
        };
        if handover.sockets.len() != fds.len() {
            let reason = format!(
                "{} sockets announced, {} received",
                handover.sockets.len(),
                fds.len()
            );
            return Err(fail(&socket, reason));
        }
        let sockets = handover
            .sockets
            .iter()
            .cloned()
            .zip(fds.into_iter().map(Some))
            .collect();
        tracing::debug!(from = handover.from.pid, "upgrade: hand-over received");
        Ok(Incoming {
            socket,
            handover,
            sockets,
        })
    }

    /// The running configuration of the old process (unsaved changes
    /// included), read as the file at `path` would be.
    pub fn config(&self, path: &Path) -> Result<Config, String> {
        Config::from_text(path, &self.handover.config)
            .map_err(|e| format!("the handed-over configuration: {e}"))
    }

    /// The old process's id.
    pub fn from_pid(&self) -> u32 {
        self.handover.from.pid
    }

    /// Takes the application's socket named `name` ([`Plan::sockets`]).
    pub fn take_socket(&mut self, name: &str) -> Option<OwnedFd> {
        self.sockets.iter_mut().find_map(|(entry, fd)| match entry {
            SocketEntry::Named { name: n } if n == name => fd.take(),
            _ => None,
        })
    }

    /// `builder` given the listeners' and the control socket's sockets, the
    /// write-back base, the hosts' and services' state and who handed over.
    pub fn builder(&mut self, builder: BalancerBuilder) -> Result<BalancerBuilder, String> {
        let mut builder = builder;
        let mut listeners: Vec<(String, String, Vec<std::net::TcpListener>)> = Vec::new();
        for (entry, fd) in &mut self.sockets {
            match entry {
                SocketEntry::Listener { service, listen } => {
                    let Some(fd) = fd.take() else { continue };
                    let socket = std::net::TcpListener::from(fd);
                    socket
                        .set_nonblocking(true)
                        .map_err(|e| format!("listener {listen}: {e}"))?;
                    match listeners
                        .iter_mut()
                        .find(|(s, l, _)| s == service && l == listen)
                    {
                        Some((_, _, copies)) => copies.push(socket),
                        None => listeners.push((service.clone(), listen.clone(), vec![socket])),
                    }
                }
                SocketEntry::Control => {
                    if let Some(fd) = fd.take() {
                        builder = builder
                            .handed_control_socket(std::os::unix::net::UnixListener::from(fd));
                    }
                }
                SocketEntry::Named { .. } => {}
            }
        }
        for (service, listen, copies) in listeners {
            let parsed: ListenAddr = crate::config::parse_listen_addr(&listen)
                .map_err(|e| format!("listener {listen} of service {service}: {e}"))?;
            builder = builder.handed_listener(&service, parsed, copies);
        }
        if let Some(baseline) = self.handover.baseline.take() {
            builder = builder.write_back_baseline(baseline);
        }
        let carried = Carried {
            hosts: std::mem::take(&mut self.handover.hosts)
                .into_iter()
                .map(|h| ((h.service, h.group, h.host), h.carried))
                .collect(),
            services: std::mem::take(&mut self.handover.services)
                .into_iter()
                .map(|s| (s.service, s.counters))
                .collect(),
            names: std::mem::take(&mut self.handover.names)
                .into_iter()
                .map(|n| (n.name, n.addrs))
                .collect(),
            numbered_after: self.handover.numbered_after,
        };
        let from = UpgradedFrom {
            pid: self.handover.from.pid,
            version: self.handover.from.version.clone(),
            at: from_unix_ms(self.handover.from.at_ms),
            connections_moved: 0,
        };
        if self.handover.udp_sessions {
            builder = builder.udp_sessions_follow();
        }
        if let Some(revision) = self.handover.fleet_revision {
            tracing::info!(revision, "upgrade: the old process ran this fleet revision");
        }
        Ok(builder.carried(carried, from))
    }

    /// Tells the old process this one serves; it stops accepting and drains,
    /// and hands over its established connections as they go quiet, which
    /// `balancer` takes on (a thread reads them). Call on `balancer`'s runtime.
    pub fn ready(self, balancer: &BalancerHandle) -> io::Result<()> {
        let unused = self.sockets.iter().filter(|(_, fd)| fd.is_some()).count();
        if unused > 0 {
            tracing::warn!(
                unused,
                "upgrade: handed-over sockets nothing here uses (closed)"
            );
        }
        tracing::info!(
            from = self.handover.from.pid,
            from_version = %self.handover.from.version,
            sockets = self.sockets.len(),
            "upgrade: took over; serving"
        );
        answer(
            &self.socket,
            &Answer::Ready {
                pid: std::process::id(),
                udp_sessions: true,
                draining: true,
            },
        )?;
        let (socket, controller) = (self.socket, balancer.controller().clone());
        let runtime = tokio::runtime::Handle::current();
        let from_pid = self.handover.from.pid;
        std::thread::Builder::new()
            .name("txlb-upgrade".into())
            .spawn(move || {
                let (connections, closed) =
                    take_connections(&socket, &controller, &runtime, from_pid);
                controller.data.events.emit(crate::events::Event::TookOver {
                    from_pid,
                    connections,
                    closed,
                });
            })?;
        Ok(())
    }

    /// Tells the old process this one cannot take over, and why; it kills
    /// this one and serves on.
    pub fn fail(self, reason: &str) {
        let _ = answer(
            &self.socket,
            &Answer::Failed {
                reason: reason.to_string(),
            },
        );
    }
}

/// The new process's side of the connections' move: reads them until the old
/// process (`from_pid`) says it is done (or goes away) and parks each in a
/// worker.
fn take_connections(
    socket: &UnixStream,
    controller: &crate::control::Controller,
    runtime: &tokio::runtime::Handle,
    from_pid: u32,
) -> (u64, u64) {
    // The old process may take its whole handoff deadline.
    let _ = socket.set_read_timeout(None);
    // However this ends, UDP listeners wait no longer, and what the old
    // process still served has ended (it exits after `Done`).
    struct Receive<'a>(&'a crate::control::Controller);
    impl Drop for Receive<'_> {
        fn drop(&mut self) {
            self.0.udp_moves.none_to_come();
            self.0.data.registry.open_elsewhere(None);
        }
    }
    let _receive = Receive(controller);
    // An administrator's close of a connection draining in the old process
    // goes there, on this socket (one writer at a time: frames are several
    // writes).
    let close_there: Arc<crate::state::CloseElsewhere> = {
        let writer = socket.try_clone().ok().map(std::sync::Mutex::new);
        Arc::new(Box::new(move |id| {
            let Some(writer) = &writer else { return false };
            let writer = writer.lock().unwrap_or_else(|p| p.into_inner());
            let body = serde_json::to_vec(&state::Ask::Close { id }).unwrap_or_default();
            writer
                .set_write_timeout(Some(Duration::from_secs(1)))
                .is_ok()
                && fds::send(&writer, &body, &[]).is_ok()
        }))
    };
    let mut taken = 0u64;
    let mut closed = 0u64;
    loop {
        let (body, fds) = match fds::receive(socket) {
            Ok(received) => received,
            Err(error) => {
                if error.kind() != io::ErrorKind::UnexpectedEof {
                    tracing::warn!(%error, "upgrade: reading connections from the old process");
                }
                break;
            }
        };
        match serde_json::from_slice::<state::Transfer>(&body) {
            Ok(state::Transfer::Connections(records)) if fds.len() == 2 * records.len() => {
                let mut fds = fds.into_iter();
                for record in records {
                    let (Some(client), Some(host)) = (fds.next(), fds.next()) else {
                        break;
                    };
                    let (client, host) = (
                        std::net::TcpStream::from(client),
                        std::net::TcpStream::from(host),
                    );
                    if client.set_nonblocking(true).is_err() || host.set_nonblocking(true).is_err()
                    {
                        closed += 1;
                        continue;
                    }
                    if controller.adopt(record, client, host, runtime) {
                        taken += 1;
                    } else {
                        closed += 1;
                    }
                }
            }
            Ok(state::Transfer::Draining(open)) => {
                controller.data.registry.open_elsewhere(Some((
                    from_pid,
                    open,
                    close_there.clone(),
                )));
            }
            Ok(state::Transfer::UdpSessions { sessions, last }) if fds.len() == sessions.len() => {
                controller.adopt_udp(sessions.into_iter().zip(fds).collect(), last);
            }
            Ok(state::Transfer::Done {
                moved,
                hosts,
                services,
            }) => {
                tracing::debug!(moved, "upgrade: the old process is done moving connections");
                controller.add_counts(
                    hosts
                        .into_iter()
                        .map(|h| ((h.service, h.group, h.host), h.carried))
                        .collect(),
                    services
                        .into_iter()
                        .map(|s| (s.service, s.counters))
                        .collect(),
                );
                return (taken, closed);
            }
            Ok(_) | Err(_) => {
                tracing::warn!("upgrade: a message of connections this txlb cannot read: closed");
            }
        }
    }
    tracing::debug!("upgrade: the old process went away while moving connections");
    (taken, closed)
}

fn answer(socket: &UnixStream, answer: &Answer) -> io::Result<()> {
    let body = serde_json::to_vec(answer).map_err(io::Error::other)?;
    socket.set_write_timeout(Some(RECEIVE_TIMEOUT))?;
    fds::send(socket, &body, &[])
}

/// Whether descriptor `fd` is open and a socket.
fn is_socket(fd: RawFd) -> bool {
    // SAFETY: fstat writes only the struct it is given; an unknown fd fails.
    unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut stat) == 0 && (stat.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    }
}

fn set_cloexec(socket: &UnixStream) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(socket.as_raw_fd(), libc::F_GETFD);
        if flags < 0 || libc::fcntl(socket.as_raw_fd(), libc::F_SETFD, flags | libc::FD_CLOEXEC) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
