//! systemd integration without libsystemd: readiness, reload and stop
//! notifications (`sd_notify`), the watchdog, and socket activation (`LISTEN_FDS`).
//!
//! Both protocols are small and stable (see `sd_notify(3)` and `sd_listen_fds(3)`):
//! a notification is one datagram of `KEY=VALUE` lines sent to the Unix socket named
//! by `NOTIFY_SOCKET`; activated sockets are file descriptors 3, 4, … counted by
//! `LISTEN_FDS` and meant for the process whose id is `LISTEN_PID`.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The first file descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// How long a notification may wait for room in the service manager's socket
/// before it is dropped: the control plane must not hang on a stuck manager.
pub const NOTIFY_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends state changes to the service manager. Without `NOTIFY_SOCKET` (not run by
/// systemd, or `Type=` other than `notify`) every call does nothing, so callers
/// need not care. Clones are cheap and share the socket.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Arc<Target>>,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    addr: UnixAddr,
}

impl Notifier {
    /// The notifier for the socket named by `NOTIFY_SOCKET`, or a silent one when
    /// it is not set.
    pub fn from_env() -> io::Result<Notifier> {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(Notifier::default()),
            Some(name) => Notifier::new(&name),
        }
    }

    /// A notifier for socket `name`: a path, or an abstract name starting with `@`.
    pub fn new(name: &OsStr) -> io::Result<Notifier> {
        let bytes = name.as_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(abstract_name) => UnixAddr::from_abstract_name(abstract_name)?,
            None if bytes.starts_with(b"/") => UnixAddr::from_pathname(name)?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("NOTIFY_SOCKET {name:?} is neither a path nor an @abstract name"),
                ));
            }
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(NOTIFY_SEND_TIMEOUT))?;
        Ok(Notifier {
            target: Some(Arc::new(Target { socket, addr })),
        })
    }

    /// Whether notifications go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state`, newline-separated `KEY=VALUE` assignments, as one datagram.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        match &self.target {
            None => Ok(()),
            Some(t) => t.socket.send_to_addr(state.as_bytes(), &t.addr).map(drop),
        }
    }

    /// `READY=1`: start-up (every listener bound) or a reload is complete.
    pub fn ready(&self, status: &str) {
        self.send_logged(&format!("READY=1\nSTATUS={status}"));
    }

    /// `MAINPID=` and `READY=1`: a process started by an upgrade took over
    /// (with `NotifyAccess=all`, systemd follows it from now on).
    pub fn main_pid_ready(&self, pid: u32, status: &str) {
        self.send_logged(&format!("MAINPID={pid}\nREADY=1\nSTATUS={status}"));
    }

    /// `RELOADING=1`: a reload begins; [`Notifier::ready`] must follow. Carries
    /// `MONOTONIC_USEC`, which `Type=notify-reload` requires.
    pub fn reloading(&self) {
        self.send_logged(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading",
            monotonic_usec()
        ));
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.send_logged("STOPPING=1\nSTATUS=stopping");
    }

    /// `WATCHDOG=1`: still alive.
    pub fn watchdog(&self) {
        self.send_logged("WATCHDOG=1");
    }

    fn send_logged(&self, state: &str) {
        if let Err(error) = self.notify(state) {
            let first = state.lines().next().unwrap_or_default();
            tracing::warn!(%error, state = first, "cannot notify the service manager");
        }
    }

    /// Pings the watchdog every half of `timeout` until `stop` is cancelled.
    pub async fn run_watchdog(self, timeout: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval((timeout / 2).max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.watchdog(),
            }
        }
    }
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares reload times on.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64) * 1_000_000 + (now.tv_nsec as u64) / 1_000
}

/// The watchdog timeout systemd expects pings within (`WatchdogSec=`), when it is
/// set for this process.
pub fn watchdog_timeout() -> Option<Duration> {
    parse_watchdog(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(me)) {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Why the sockets passed by the service manager cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_FDS` or `LISTEN_PID` is not a number.
    #[error("invalid {name}={value:?}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// A passed descriptor is not a listening TCP socket.
    #[error("file descriptor {fd} passed by the service manager is not a listening TCP socket")]
    NotTcpListener {
        /// The descriptor.
        fd: RawFd,
    },
    /// A passed descriptor could not be inspected or prepared.
    #[error("file descriptor {fd} passed by the service manager: {source}")]
    Io {
        /// The descriptor.
        fd: RawFd,
        /// What the system said.
        source: io::Error,
    },
}

/// How many sockets the service manager passed to this process: `LISTEN_FDS` when
/// `LISTEN_PID` is our pid, else none (the variables were meant for a parent).
fn listen_fds_count(
    pid: Option<&str>,
    fds: Option<&str>,
    me: u32,
) -> Result<usize, ActivationError> {
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(0);
    };
    let invalid = |name, value: &str| ActivationError::Invalid {
        name,
        value: value.to_string(),
    };
    let pid: u32 = pid.trim().parse().map_err(|_| invalid("LISTEN_PID", pid))?;
    if pid != me {
        return Ok(0);
    }
    fds.trim().parse().map_err(|_| invalid("LISTEN_FDS", fds))
}

/// Takes the listening TCP sockets passed by the service manager (socket
/// activation: `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`), then unsets those
/// variables so no child inherits them. Each socket is made close-on-exec and
/// non-blocking. Returns none when nothing was passed to this process.
///
/// # Safety
/// Call at most once, early in `main` while the process has a single thread (it
/// changes the environment), and before anything else could own descriptors 3 and
/// up: the returned listeners take ownership of them.
pub unsafe fn take_listen_fds() -> Result<Vec<std::net::TcpListener>, ActivationError> {
    let var = |name| std::env::var(name).ok();
    let count = listen_fds_count(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        std::process::id(),
    );
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: the caller guarantees no other thread reads the environment.
        unsafe { std::env::remove_var(name) };
    }
    let mut listeners = Vec::new();
    for fd in (0..count?).map(|i| LISTEN_FDS_START + i as RawFd) {
        // SAFETY: the service manager passed `fd` to this process (LISTEN_PID is
        // ours) and the caller guarantees nothing else owns it.
        let socket = unsafe { socket2::Socket::from_raw_fd(fd) };
        let io = |source| ActivationError::Io { fd, source };
        socket.set_cloexec(true).map_err(io)?;
        let is_tcp_listener = socket.r#type().map_err(io)? == socket2::Type::STREAM
            && socket.is_listener().map_err(io)?
            && socket.local_addr().map_err(io)?.as_socket().is_some();
        if !is_tcp_listener {
            return Err(ActivationError::NotTcpListener { fd });
        }
        socket.set_nonblocking(true).map_err(io)?;
        listeners.push(socket.into());
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_fds_are_ours_only_when_the_pid_matches() {
        assert_eq!(listen_fds_count(None, None, 7).unwrap(), 0);
        assert_eq!(listen_fds_count(Some("7"), None, 7).unwrap(), 0);
        assert_eq!(listen_fds_count(Some("8"), Some("2"), 7).unwrap(), 0);
        assert_eq!(listen_fds_count(Some("7"), Some("2"), 7).unwrap(), 2);
        assert!(listen_fds_count(Some("7"), Some("two"), 7).is_err());
        assert!(listen_fds_count(Some("x"), Some("2"), 7).is_err());
    }

    #[test]
    fn watchdog_needs_a_period_and_our_pid() {
        assert_eq!(parse_watchdog(None, None, 7), None);
        assert_eq!(parse_watchdog(Some("0"), None, 7), None);
        assert_eq!(
            parse_watchdog(Some("2000000"), None, 7),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_watchdog(Some("2000000"), Some("7"), 7),
            Some(Duration::from_secs(2))
        );
        assert_eq!(parse_watchdog(Some("2000000"), Some("8"), 7), None);
    }

    #[test]
    fn notifications_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.as_os_str()).unwrap();
        notifier.ready("ok");
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");

        let name = format!("txlb-test-{}", std::process::id());
        let addr = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&addr).unwrap();
        let notifier = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();
        notifier.reloading();
        let n = receiver.recv(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"RELOADING=1\nMONOTONIC_USEC="));
    }

    #[test]
    fn a_relative_notify_socket_is_refused() {
        assert!(Notifier::new(OsStr::new("relative/path")).is_err());
        assert!(!Notifier::default().is_enabled());
        Notifier::default().ready("nothing happens");
    }
}
