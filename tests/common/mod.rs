//! Shared helpers for integration tests, included by each test binary: the one
//! harness for `txlb` child processes ([`binary`]), admin and SSH clients,
//! backends on 127.0.0.1 ephemeral ports, configurations built in code, and a
//! polling `eventually`.
#![allow(dead_code)]

pub mod admin;
pub mod binary;
pub mod dns;
pub mod etcd;
pub mod servers;
pub mod ssh;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use txlb::config::{
    Config, GroupConfig, HostAddress, HostConfig, ListenAddr, ListenHost, ManagerConfig,
    ServiceConfig,
};
use txlb::scheduler::SchedulerKind;

/// Held for its whole run by each test that loads the machine or holds
/// thousands of descriptors (the soak test, thousands of parked clients,
/// 200 MiB echoed, the kill -9 loop) and by each that times answers under such
/// a load (a big reload): one at a time in a test binary, so they neither
/// share the descriptor limit nor slow each other past their time bounds, while
/// light tests run beside them.
pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    HEAVY.lock().await
}

/// [`heavy`] for tests without a runtime.
pub fn heavy_blocking() -> tokio::sync::MutexGuard<'static, ()> {
    HEAVY.blocking_lock()
}

static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Polls `condition` every 10 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A backend that echoes everything and passes half-close on.
pub async fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// How a named backend treats a connection after sending its name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Close right away (the backend closes first, keeping TIME_WAIT off the
    /// client's ephemeral ports).
    Close,
    /// Keep the connection until the client closes.
    UntilClientCloses,
}

/// A listening socket whose accept queue is full: further SYNs are dropped, so
/// connects hang (as to a black-holed address). The first socket kept is the
/// listener (accept from it to let connects through again), then the clients
/// that fill its queue.
pub fn black_hole() -> (SocketAddr, Vec<socket2::Socket>) {
    let silent = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    silent
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    silent.listen(0).unwrap();
    let addr = silent.local_addr().unwrap().as_socket().unwrap();
    let mut keep = vec![silent];
    for _ in 0..4 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        keep.push(s);
    }
    (addr, keep)
}

/// A backend that sends `NAME\n` to every connection.
pub async fn named_backend(name: &str, hold: Hold) -> SocketAddr {
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let line = format!("{name}\n");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let line = line.clone();
            tokio::spawn(async move {
                let _ = stream.write_all(line.as_bytes()).await;
                if hold == Hold::UntilClientCloses {
                    let mut sink = [0u8; 64];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// `<host>` elements of an XML `<group>`, one per line, for (name, address).
pub fn host_lines(hosts: &[(&str, SocketAddr)]) -> String {
    hosts
        .iter()
        .map(|(name, addr)| format!("      <host name=\"{name}\" ip=\"{addr}\"/>\n"))
        .collect()
}

/// An address on which nothing listens (connections are refused).
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind(loopback()).unwrap();
    listener.local_addr().unwrap()
}

/// Connects to the balancer and reads the backend's name line.
pub async fn which_backend(balancer: SocketAddr) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(balancer).await.unwrap();
    let mut name = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("backend name within 10 s")
            .unwrap();
        if n == 0 || byte[0] == b'\n' {
            break;
        }
        name.push(byte[0]);
    }
    (String::from_utf8(name).unwrap(), stream)
}

/// A host entry for [`config`].
pub fn host(name: &str, addr: SocketAddr, weight: u32) -> HostConfig {
    HostConfig {
        name: name.to_string(),
        address: HostAddress {
            host: addr.ip().to_string(),
            port: addr.port(),
        },
        weight,
        options: Default::default(),
    }
}

/// One service `svc` listening on 127.0.0.1:0 with one enabled group `g`.
pub fn config(scheduler: SchedulerKind, hosts: Vec<HostConfig>) -> Config {
    Config {
        source: None,
        services: vec![ServiceConfig {
            name: "svc".into(),
            listeners: vec![
                ListenAddr {
                    host: ListenHost::Ip([127, 0, 0, 1].into()),
                    port: 0,
                }
                .into(),
            ],
            groups: vec![GroupConfig {
                name: "g".into(),
                scheduler,
                hosts: hosts.into(),
                options: Default::default(),
                check: None,
                agent: None,
            }],
            enabled_group: "g".into(),
            connect_timeout: Duration::from_secs(3),
            options: Default::default(),
        }],
        admin: None,
        manager: ManagerConfig::default(),
        logging: Default::default(),
        control: None,
        cluster: None,
        resolver: Default::default(),
        acme: None,
    }
}
