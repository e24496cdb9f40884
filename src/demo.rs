//! The demo: small in-process HTTP backends that answer with their own name (for
//! tests, examples and `txlb demo`), and the configuration `txlb demo` runs in
//! front of them.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::config::{
    Config, DEFAULT_CONNECT_TIMEOUT, GroupConfig, HostAddress, HostConfig, ListenAddr, ListenHost,
    ServiceConfig,
};
use crate::scheduler::SchedulerKind;

/// Largest request head a demo backend reads before giving up on a client.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// An in-process HTTP service that answers every request with `Hello from NAME`:
/// a backend for tests, examples and `txlb demo`, put in a group with
/// [`Backend::host`]. It serves on its own tasks of the caller's tokio runtime
/// until [`Backend::stop`] or until it is dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let backend = txlb::demo::Backend::start("web-1").await?;
/// let mut stream = tokio::net::TcpStream::connect(backend.addr()).await?;
/// stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
/// let mut response = String::new();
/// stream.read_to_string(&mut response).await?;
/// assert!(response.ends_with("Hello from web-1\n"));
/// assert_eq!(backend.host().address.to_string(), backend.addr().to_string());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Backend {
    name: String,
    addr: SocketAddr,
    /// Stops the accept loop when cancelled, by `stop` or on drop.
    stop: CancellationToken,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Backend {
    /// Starts a backend called `name` on a free port of 127.0.0.1.
    pub async fn start(name: &str) -> io::Result<Backend> {
        Backend::bind(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a backend called `name` on `addr` (port 0 picks a free one).
    pub async fn bind(name: &str, addr: SocketAddr) -> io::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            format!("Hello from {name}\n").into(),
            stop.clone(),
        ));
        Ok(Backend {
            name: name.to_string(),
            addr,
            stop,
        })
    }

    /// The backend's name, as it answers.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A host called like the backend, at its address, weight 1, to put in a
    /// group's hosts.
    pub fn host(&self) -> HostConfig {
        HostConfig {
            name: self.name.clone(),
            address: HostAddress {
                host: self.addr.ip().to_string(),
                port: self.addr.port(),
            },
            weight: 1,
            options: Default::default(),
        }
    }

    /// Stops accepting; connections already open finish their requests.
    pub fn stop(self) {
        drop(self);
    }
}

/// Accepts until `stop` is cancelled; one task per connection.
async fn serve(listener: TcpListener, body: std::sync::Arc<str>, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let body = body.clone();
        tokio::spawn(async move {
            let _ = serve_http(stream, &body).await;
        });
    }
}

/// Answers HTTP/1.1 requests on one connection (keep-alive unless asked to close).
async fn serve_http(mut stream: TcpStream, body: &str) -> io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let head_end = loop {
            if let Some(end) = find_head_end(&buf) {
                break end;
            }
            if buf.len() > MAX_REQUEST_HEAD {
                return Ok(());
            }
            let mut chunk = [0u8; 2048];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let close = head.contains("connection: close") || head.starts_with("get / http/1.0");
        buf.drain(..head_end);
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{}",
            body.len(),
            if close { "connection: close\r\n" } else { "" },
            body
        );
        stream.write_all(response.as_bytes()).await?;
        if close {
            return stream.shutdown().await;
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// The demo configuration: service `demo` on `listen`, round robin over
/// `backends` (hosts named like them), group `demo` enabled.
pub fn demo_config(listen: SocketAddr, backends: &[Backend]) -> Config {
    let hosts = backends.iter().map(Backend::host).collect();
    Config {
        source: None,
        services: vec![ServiceConfig {
            name: "demo".into(),
            listeners: vec![
                ListenAddr {
                    host: ListenHost::Ip(listen.ip()),
                    port: listen.port(),
                }
                .into(),
            ],
            groups: vec![GroupConfig {
                name: "demo".into(),
                scheduler: SchedulerKind::RoundRobin,
                hosts,
                options: Default::default(),
                check: None,
                agent: None,
            }],
            enabled_group: "demo".into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            options: Default::default(),
        }],
        admin: None,
        manager: Default::default(),
        logging: Default::default(),
        control: None,
        cluster: None,
        resolver: Default::default(),
        acme: None,
    }
}

/// A random 16-character password (letters and digits, without look-alikes),
/// from the system's secure random source: the demo's admin password.
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 16];
    crate::admin::auth::random_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}
