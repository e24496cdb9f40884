//! The control socket (txLoadBalancer's `<control socket="…"/>`, from Apple's
//! Calendar Server): a Unix socket where a host asks which client is behind a
//! connection that reached it from txlb.
//!
//! The protocol is one JSON object per line each way. A request names the address
//! the host sees as its peer (txlb's side of the host connection):
//!
//! ```text
//! → {"peer": "127.0.0.1:50312"}
//! ← {"client": "203.0.113.7:61000", "listener": "0.0.0.0:8080", "service": "web", "group": "prod", "host": "h1"}
//! → {"peer": "127.0.0.1:1"}
//! ← {"error": "no open connection from 127.0.0.1:1"}
//! ```
//!
//! After an upgrade, connections still draining in the previous process are
//! answered too, with that process's id: `"draining_in": PID`. A UDP
//! session is found the same way, by the address of txlb's socket to its
//! host.
//!
//! A connection may ask any number of questions. Entries vanish when the proxied
//! connection ends. At most [`MAX_CONNECTIONS`] connections are served at once
//! (fewer under a low descriptor limit, see [`management_cap`]) and one idle for
//! [`IDLE_TIMEOUT`] is closed, so control clients never hold the descriptors the
//! data path needs.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::state::ConnectionRegistry;

/// Longest request line accepted; longer ones close the connection.
const MAX_REQUEST: usize = 1024;

/// Most control connections served at once (under a low descriptor limit,
/// fewer: [`management_cap`]); past it a new one gets an error line and is
/// closed.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a control connection may stay without sending a request (or
/// finishing one) before it is closed.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The most connections one management surface (admin web, SSH, control socket)
/// may hold: `max`, or a sixteenth of the process's descriptor limit when that
/// is less (at least 4), so that all of them together leave the data path most
/// of its descriptors.
pub fn management_cap(max: usize) -> usize {
    crate::state::descriptor_share(max, 16)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    peer: String,
}

/// The answer to one look-up.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Answer {
    /// The connection was found.
    Found {
        /// The real client.
        client: SocketAddr,
        /// The balancer address the client reached.
        listener: SocketAddr,
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// Host name.
        host: String,
        /// The process that serves it, when not this one: the previous one
        /// of an upgrade, where it drains.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        draining_in: Option<u32>,
    },
    /// The request was wrong or no connection matched.
    Error {
        /// What went wrong.
        error: String,
    },
}

/// Answers one request line.
pub(crate) fn answer(registry: &ConnectionRegistry, line: &str) -> Answer {
    let request: Request = match serde_json::from_str(line) {
        Ok(request) => request,
        Err(e) => {
            return Answer::Error {
                error: format!("bad request (expected {{\"peer\": \"IP:PORT\"}}): {e}"),
            };
        }
    };
    let peer: SocketAddr = match request.peer.parse() {
        Ok(peer) => peer,
        Err(_) => {
            return Answer::Error {
                error: format!("bad peer {:?} (expected IP:PORT)", request.peer),
            };
        }
    };
    match registry.by_host_local(peer) {
        Some(c) => Answer::Found {
            client: c.client,
            listener: c.listener,
            service: c.place.service.to_string(),
            group: c.place.group.to_string(),
            host: c.place.host.to_string(),
            draining_in: None,
        },
        None => match registry.elsewhere(peer) {
            Some((pid, c)) => Answer::Found {
                client: c.client,
                listener: c.listener,
                service: c.service,
                group: c.group,
                host: c.host,
                draining_in: Some(pid),
            },
            None => match registry.session_by_host_local(peer) {
                Some(session) => Answer::Found {
                    client: session.client,
                    listener: session.listener,
                    service: session.service,
                    group: session.group,
                    host: session.host,
                    draining_in: None,
                },
                None => Answer::Error {
                    error: format!("no open connection from {peer}"),
                },
            },
        },
    }
}

/// Where the control socket comes from, and whether it stays when this
/// process stops.
pub(crate) struct Socket {
    /// A listening socket handed over by the previous process (an upgrade),
    /// already at the path; `None`: bind it.
    pub inherited: Option<std::os::unix::net::UnixListener>,
    /// Cancelled once the socket was handed over to a new process, whose it
    /// is from then on: its file is not removed at stop.
    pub handed_over: CancellationToken,
}

/// Binds the socket at `path` (replacing a stale one, see [`claim`]), or takes
/// the one handed over, and answers until `stop` is cancelled; then removes
/// the socket file if it is still this one and was not handed over. Returns a
/// duplicate of the listening socket (for an upgrade to hand over).
pub(crate) fn start(
    path: &Path,
    socket: Socket,
    registry: Arc<ConnectionRegistry>,
    stop: CancellationToken,
) -> io::Result<std::os::fd::OwnedFd> {
    start_with(
        path,
        socket,
        registry,
        stop,
        management_cap(MAX_CONNECTIONS),
        IDLE_TIMEOUT,
    )
}

/// [`start`] with a cap on open connections and an idle timeout.
fn start_with(
    path: &Path,
    socket: Socket,
    registry: Arc<ConnectionRegistry>,
    stop: CancellationToken,
    max_connections: usize,
    idle: std::time::Duration,
) -> io::Result<std::os::fd::OwnedFd> {
    let listener = match socket.inherited {
        Some(inherited) => {
            inherited.set_nonblocking(true)?;
            UnixListener::from_std(inherited)?
        }
        None => {
            claim(path)?;
            UnixListener::bind(path)?
        }
    };
    let handed_over = socket.handed_over;
    let dup = std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned()?;
    let path: PathBuf = path.to_path_buf();
    let bound = file_id(&path);
    tracing::info!(socket = %path.display(), max_connections, "control socket up");
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            // Refused at once: its descriptor is released now.
                            let _ = stream.try_write(b"{\"error\":\"too many control connections\"}\n");
                            tracing::debug!(max_connections, "control connection refused: too many open");
                            continue;
                        };
                        let registry = registry.clone();
                        let stop = stop.clone();
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = stop.cancelled() => {}
                                _ = serve(stream, registry, idle) => {}
                            }
                            drop(slot);
                        });
                    }
                    Err(error) => {
                        tracing::warn!(%error, "control socket accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
            }
        }
        // Not a socket another process has put there since (ours removed by hand);
        // the open listener keeps our inode from being reused meanwhile.
        if bound.is_some() && file_id(&path) == bound && !handed_over.is_cancelled() {
            let _ = std::fs::remove_file(&path);
        }
    });
    Ok(dup)
}

/// Makes way for a control socket at `path`: nothing there, or a stale socket
/// (left by a process that is gone: connecting is refused), which is removed. A
/// socket some process accepts on is refused, never taken over (its owner would
/// lose it, and delete ours when it stops); anything that is not a socket is
/// refused and left as it is.
fn claim(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    if !metadata.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket (left as it is; remove it or choose another path)",
        ));
    }
    // Non-blocking, so that an owner too busy to accept (a full backlog) cannot
    // hold up the start: that too means the socket is in use.
    let probe = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    probe.set_nonblocking(true)?;
    match probe.connect(&socket2::SockAddr::unix(path)?) {
        Ok(()) => Err(in_use()),
        // Queued (or the queue is full): someone listens.
        Err(error)
            if error.kind() == io::ErrorKind::WouldBlock
                || error.raw_os_error() == Some(libc::EINPROGRESS) =>
        {
            Err(in_use())
        }
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "removing a stale control socket");
            match std::fs::remove_file(path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
                _ => Ok(()),
            }
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io::Error::new(
            error.kind(),
            format!("cannot tell whether another process serves it: {error}"),
        )),
    }
}

/// The error for a control socket some process accepts on.
fn in_use() -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        "in use by another process (another txlb?); stop it or choose another path",
    )
}

/// The device and inode of the file at `path`, if any.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

async fn serve(
    stream: UnixStream,
    registry: Arc<ConnectionRegistry>,
    idle: std::time::Duration,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        // Bounded read: a client that never sends a newline cannot grow the
        // buffer, nor hold the connection past the idle timeout.
        let mut bounded = AsyncReadExt::take(&mut lines, MAX_REQUEST as u64 + 1);
        let Ok(n) = tokio::time::timeout(idle, bounded.read_line(&mut line)).await else {
            let _ = write
                .write_all(b"{\"error\":\"idle for too long\"}\n")
                .await;
            return Ok(());
        };
        let n = match n {
            Ok(n) => n,
            // The line is not text: said, as every bad request is.
            Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                let _ = write
                    .write_all(b"{\"error\":\"the request is not UTF-8\"}\n")
                    .await;
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        if n == 0 {
            return Ok(());
        }
        if n > MAX_REQUEST {
            let _ = write.write_all(b"{\"error\":\"request too long\"}\n").await;
            return Ok(());
        }
        // Off the runtime: a UDP session is asked of the relays, which
        // answer on their next turn (a bounded wait).
        let (registry, request) = (registry.clone(), line.trim().to_owned());
        let answered = tokio::task::spawn_blocking(move || answer(&registry, &request))
            .await
            .unwrap_or_else(|_| Answer::Error {
                error: "look-up failed".into(),
            });
        let mut reply = serde_json::to_vec(&answered).unwrap_or_default();
        reply.push(b'\n');
        // A client that stops reading is idle too.
        match tokio::time::timeout(idle, write.write_all(&reply)).await {
            Ok(written) => written?,
            Err(_) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use super::*;

    fn fresh() -> Socket {
        Socket {
            inherited: None,
            handed_over: CancellationToken::new(),
        }
    }

    /// One answer line from `stream`, or `None` when it was closed without one.
    async fn line_of(stream: &mut UnixStream) -> Option<String> {
        let mut line = String::new();
        let mut reader = BufReader::new(stream);
        match tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => Some(line),
            Ok(_) => None,
            Err(_) => panic!("no answer and no close within 5 s"),
        }
    }

    #[tokio::test]
    async fn connections_are_capped_and_idle_ones_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let stop = CancellationToken::new();
        let idle = Duration::from_millis(300);
        start_with(&path, fresh(), Arc::default(), stop.clone(), 2, idle).unwrap();
        let mut first = UnixStream::connect(&path).await.unwrap();
        let mut second = UnixStream::connect(&path).await.unwrap();
        // Both are served; a third is over the cap and told so.
        for stream in [&mut first, &mut second] {
            stream
                .write_all(b"{\"peer\": \"127.0.0.1:1\"}\n")
                .await
                .unwrap();
            assert!(
                line_of(stream)
                    .await
                    .unwrap()
                    .contains("no open connection")
            );
        }
        let mut third = UnixStream::connect(&path).await.unwrap();
        let refused = line_of(&mut third).await.unwrap();
        assert!(
            refused.contains("too many control connections"),
            "{refused}"
        );
        assert_eq!(line_of(&mut third).await, None);
        // Idle past the timeout: told, then closed, which frees a place.
        let started = std::time::Instant::now();
        assert!(line_of(&mut first).await.unwrap().contains("idle"));
        assert_eq!(line_of(&mut first).await, None);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(line_of(&mut second).await.unwrap().contains("idle"));
        let mut fourth = UnixStream::connect(&path).await.unwrap();
        fourth
            .write_all(b"{\"peer\": \"127.0.0.1:1\"}\n")
            .await
            .unwrap();
        assert!(
            line_of(&mut fourth)
                .await
                .unwrap()
                .contains("no open connection")
        );
        stop.cancel();
    }

    /// A line that is not UTF-8 is answered with an error, as every bad
    /// request is (it was a silent close).
    #[tokio::test]
    async fn a_request_that_is_not_text_is_told_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let stop = CancellationToken::new();
        let idle = Duration::from_secs(5);
        start_with(&path, fresh(), Arc::default(), stop.clone(), 2, idle).unwrap();
        let mut client = UnixStream::connect(&path).await.unwrap();
        client.write_all(b"\xff\xfe\n").await.unwrap();
        let answer = line_of(&mut client).await.unwrap();
        assert!(answer.contains("not UTF-8"), "{answer}");
        assert_eq!(line_of(&mut client).await, None);
        stop.cancel();
    }

    #[tokio::test]
    async fn stopping_removes_only_its_own_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let stop = CancellationToken::new();
        start_with(
            &path,
            fresh(),
            Arc::default(),
            stop.clone(),
            2,
            IDLE_TIMEOUT,
        )
        .unwrap();
        // Ours removed by hand and the path taken by something else since.
        std::fs::remove_file(&path).unwrap();
        let other = std::os::unix::net::UnixListener::bind(&path).unwrap();
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(path.exists(), "another's socket was removed");
        drop(other);

        // Its own socket it removes.
        std::fs::remove_file(&path).unwrap();
        let stop = CancellationToken::new();
        start_with(
            &path,
            fresh(),
            Arc::default(),
            stop.clone(),
            2,
            IDLE_TIMEOUT,
        )
        .unwrap();
        stop.cancel();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while path.exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!path.exists());
    }
}
