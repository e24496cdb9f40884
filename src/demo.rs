//! The demo: small HTTP backends that answer with their own name, and the
//! configuration `txlb demo` runs in front of them.

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

/// Starts an HTTP backend on `addr` that answers every request with
/// `Hello from NAME`, until `stop` is cancelled. Returns the bound address.
pub async fn spawn_http_backend(
    name: &str,
    addr: SocketAddr,
    stop: CancellationToken,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let body: std::sync::Arc<str> = format!("Hello from {name}\n").into();
    tokio::spawn(async move {
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
    });
    Ok(local)
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

/// The demo configuration: service `demo` on `listen`, round robin over `backends`
/// (named demo-1, demo-2, …).
pub fn demo_config(listen: SocketAddr, backends: &[SocketAddr]) -> Config {
    let hosts = backends
        .iter()
        .enumerate()
        .map(|(i, addr)| HostConfig {
            name: format!("demo-{}", i + 1),
            address: HostAddress {
                host: addr.ip().to_string(),
                port: addr.port(),
            },
            weight: 1,
            options: Default::default(),
        })
        .collect();
    Config {
        source: None,
        services: vec![ServiceConfig {
            name: "demo".into(),
            listeners: vec![ListenAddr {
                host: ListenHost::Ip(listen.ip()),
                port: listen.port(),
            }],
            groups: vec![GroupConfig {
                name: "demo".into(),
                scheduler: SchedulerKind::RoundRobin,
                hosts,
                options: Default::default(),
            }],
            enabled_group: "demo".into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            options: Default::default(),
        }],
        admin: None,
        manager: Default::default(),
        logging: Default::default(),
        control: None,
        resolver: Default::default(),
    }
}
