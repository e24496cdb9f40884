//! The upgrade socket: how `txlb upgrade --config FILE` finds the process
//! running that configuration and asks it to upgrade.
//!
//! Its name comes from the configuration file's canonical path (an abstract
//! Unix socket, `@txlb-upgrade-` and a hash of the path: nothing on disk to
//! go stale, and no directory the service must be able to write), so every
//! process running one file answers at one name, and the new process takes
//! the very socket over from the old one. Only root and the balancer's own
//! user are answered (`SO_PEERCRED`).
//!
//! One request line, one answer line, both JSON:
//!
//! ```text
//! → {"binary": "/usr/bin/txlb", "ready_timeout": 60, "handoff_deadline": 30}
//! ← {"ok": true, "pid": 4242, "message": "..."}
//! ← {"ok": false, "error": "the new process (PID 4242) exited before it was ready (exit status: 1)"}
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Longest request line read.
const MAX_REQUEST: u64 = 8192;

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// An upgrade request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The binary to start (absolute); `None`: the running process's own path.
    #[serde(default)]
    pub binary: Option<PathBuf>,
    /// Seconds the new process has to serve.
    pub ready_timeout: f64,
    /// Seconds active connections have to go quiet and move.
    pub handoff_deadline: f64,
}

/// The answer to a request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    /// Whether the new process serves.
    pub ok: bool,
    /// The new process, when it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// What happened, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The abstract socket name of the process running the configuration at
/// `path` (made canonical first: both sides must name the file alike).
pub fn socket_name(path: &Path) -> io::Result<String> {
    let canonical = std::fs::canonicalize(path)?;
    let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("txlb-upgrade-{hex}"))
}

fn address(name: &str) -> io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt as _;
    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
}

/// Binds the upgrade socket of the configuration at `path`. Fails with
/// `AddrInUse` while another process runs that configuration.
pub fn bind(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    let listener = std::os::unix::net::UnixListener::bind_addr(&address(&socket_name(path)?)?)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Connections whose request is still being read at once: past it, a new
/// one is closed unanswered (each waits [`REQUEST_TIMEOUT`] at most).
const MAX_READING: usize = 16;

/// Serves requests on `listener` (one upgrade at a time), each through
/// `upgrade`, until `stop`. Requests are read side by side: a connection
/// that sends nothing cannot hold up the next one for its timeout.
pub async fn serve<F, Fut>(
    listener: UnixListener,
    upgrade: F,
    stop: tokio_util::sync::CancellationToken,
) where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Reply>,
{
    let (read_tx, mut read_rx) = tokio::sync::mpsc::channel(MAX_READING);
    let reading = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_READING));
    loop {
        let (mut stream, request) = tokio::select! {
            // Handed over: a request read meanwhile is not this process's.
            biased;
            _ = stop.cancelled() => return,
            Some(read) = read_rx.recv() => read,
            accepted = listener.accept() => {
                match accepted {
                    Ok((mut stream, _)) => {
                        // Past the bound: closed at once, unanswered.
                        if let Ok(permit) = reading.clone().try_acquire_owned() {
                            let read_tx = read_tx.clone();
                            tokio::spawn(async move {
                                let request = read_request(&mut stream).await;
                                drop(permit);
                                let _ = read_tx.send((stream, request)).await;
                            });
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "upgrade socket: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                continue;
            }
        };
        let reply = match request {
            Ok(request) => {
                tracing::info!(?request, "upgrade requested");
                upgrade(request).await
            }
            Err(error) => Reply {
                ok: false,
                pid: None,
                message: None,
                error: Some(error),
            },
        };
        let mut line = serde_json::to_vec(&reply).unwrap_or_default();
        line.push(b'\n');
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, stream.write_all(&line)).await;
    }
}

async fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    let peer = stream.peer_cred().map_err(|e| e.to_string())?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if peer.uid() != 0 && peer.uid() != me {
        return Err(format!(
            "user {} may not upgrade this txlb (root and user {me} may)",
            peer.uid()
        ));
    }
    let mut line = String::new();
    let mut reader = BufReader::new(AsyncReadExt::take(stream, MAX_REQUEST));
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("no request within 5 s".into()),
    }
    let request: Request =
        serde_json::from_str(line.trim()).map_err(|e| format!("bad request: {e}"))?;
    let valid = |s: f64| s.is_finite() && (0.0..=86_400.0).contains(&s);
    if !valid(request.ready_timeout) || !valid(request.handoff_deadline) {
        return Err("timeouts must be between 0 and 86400 seconds".into());
    }
    if request.binary.as_ref().is_some_and(|b| !b.is_absolute()) {
        return Err("the binary must be an absolute path".into());
    }
    Ok(request)
}

/// Asks the process running the configuration at `path` to upgrade, and
/// waits for its answer (at most the ready timeout and a minute more).
pub async fn ask(path: &Path, request: &Request) -> io::Result<Reply> {
    let name = socket_name(path)?;
    let std = std::os::unix::net::UnixStream::connect_addr(&address(&name)?).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "no txlb runs {} here (upgrade socket @{name}: {e})",
                path.display()
            ),
        )
    })?;
    std.set_nonblocking(true)?;
    let mut stream = UnixStream::from_std(std)?;
    let mut line = serde_json::to_vec(request).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    let wait = Duration::from_secs_f64(request.ready_timeout) + Duration::from_secs(60);
    let mut answer = String::new();
    let mut reader = BufReader::new(AsyncReadExt::take(stream, MAX_REQUEST));
    match tokio::time::timeout(wait, reader.read_line(&mut answer)).await {
        Ok(Ok(0)) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the running txlb closed the upgrade socket without an answer",
        )),
        Ok(Ok(_)) => serde_json::from_str(answer.trim()).map_err(io::Error::other),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no answer from the running txlb",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_one_name_whatever_the_path_says() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lb.xml");
        std::fs::write(&file, "<config/>").unwrap();
        let roundabout = dir.path().join(".").join("lb.xml");
        assert_eq!(
            socket_name(&file).unwrap(),
            socket_name(&roundabout).unwrap()
        );
        let other = dir.path().join("other.xml");
        std::fs::write(&other, "<config/>").unwrap();
        assert_ne!(socket_name(&file).unwrap(), socket_name(&other).unwrap());
        assert!(socket_name(&dir.path().join("missing.xml")).is_err());
    }

    #[tokio::test]
    async fn a_request_gets_the_answer_and_a_bad_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lb.xml");
        std::fs::write(&file, "<config/>").unwrap();
        let listener = UnixListener::from_std(bind(&file).unwrap()).unwrap();
        // A second process on the same file cannot bind.
        assert_eq!(bind(&file).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(serve(
            listener,
            |request: Request| async move {
                Reply {
                    ok: true,
                    pid: Some(42),
                    message: Some(format!("{:?}", request.binary)),
                    error: None,
                }
            },
            stop.clone(),
        ));
        let request = Request {
            binary: Some("/bin/true".into()),
            ready_timeout: 1.0,
            handoff_deadline: 1.0,
        };
        let reply = ask(&file, &request).await.unwrap();
        assert_eq!(reply.pid, Some(42));
        let relative = Request {
            binary: Some("txlb".into()),
            ..request
        };
        let reply = ask(&file, &relative).await.unwrap();
        assert!(!reply.ok);
        assert!(reply.error.unwrap().contains("absolute"));
        stop.cancel();
    }
}
