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
//! A connection may ask any number of questions. Entries vanish when the proxied
//! connection ends.

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
            service: c.service.to_string(),
            group: c.group.to_string(),
            host: c.host.to_string(),
        },
        None => Answer::Error {
            error: format!("no open connection from {peer}"),
        },
    }
}

/// Binds the socket at `path` (replacing a stale one), and answers until `stop`
/// is cancelled; then removes the socket file.
pub(crate) fn start(
    path: &Path,
    registry: Arc<ConnectionRegistry>,
    stop: CancellationToken,
) -> io::Result<()> {
    if path.exists() {
        // A socket left by a previous run; refuse to delete anything else.
        use std::os::unix::fs::FileTypeExt;
        if std::fs::symlink_metadata(path)?.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    let listener = UnixListener::bind(path)?;
    let path: PathBuf = path.to_path_buf();
    tracing::info!(socket = %path.display(), "control socket up");
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let registry = registry.clone();
                        let stop = stop.clone();
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = stop.cancelled() => {}
                                _ = serve(stream, &registry) => {}
                            }
                        });
                    }
                    Err(error) => {
                        tracing::warn!(%error, "control socket accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
            }
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

async fn serve(stream: UnixStream, registry: &ConnectionRegistry) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        // Bounded read: a client that never sends a newline cannot grow the buffer.
        let n = AsyncReadExt::take(&mut lines, MAX_REQUEST as u64 + 1)
            .read_line(&mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if n > MAX_REQUEST {
            let _ = write.write_all(b"{\"error\":\"request too long\"}\n").await;
            return Ok(());
        }
        let mut reply = serde_json::to_vec(&answer(registry, line.trim())).unwrap_or_default();
        reply.push(b'\n');
        write.write_all(&reply).await?;
    }
}
