//! `clientFirst`: a client is accepted with its first bytes (deferred
//! accept), so its host is not connected before the client has spoken; the
//! bytes then pass as on any service, both ways. A reload turns it on and off
//! on the running listener.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use txlb::Balancer;
use txlb::Command;
use txlb::scheduler::SchedulerKind;

/// Long enough for an accepted client's connect to reach the host on a
/// loaded machine; far below the second a silent client waits to be accepted.
const QUIET: Duration = Duration::from_millis(400);

/// One client through `addr`: whether its host was connected before the
/// client spoke must be `!client_first`; its bytes must pass both ways.
async fn one_client(addr: SocketAddr, backend: &TcpListener, client_first: bool) {
    let mut client = TcpStream::connect(addr).await.unwrap();
    let early = tokio::time::timeout(QUIET, backend.accept()).await;
    assert_eq!(
        early.is_ok(),
        !client_first,
        "clientFirst={client_first}: host connected before the client spoke: {}",
        early.is_ok()
    );
    client.write_all(b"first request").await.unwrap();
    let (mut host_side, _) = match early {
        Ok(accepted) => accepted.unwrap(),
        Err(_) => tokio::time::timeout(Duration::from_secs(5), backend.accept())
            .await
            .expect("the client's bytes bring its connection to the host")
            .unwrap(),
    };
    let mut got = [0u8; 13];
    tokio::time::timeout(Duration::from_secs(5), host_side.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"first request");
    host_side.write_all(b"answer").await.unwrap();
    host_side.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, b"answer", "clientFirst={client_first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_first_connects_the_host_once_the_client_has_spoken() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = config(
        SchedulerKind::RoundRobin,
        vec![host("b", backend.local_addr().unwrap(), 1)],
    );
    let balancer = Balancer::start(cfg.clone()).await.unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    one_client(addr, &backend, false).await;
    // On and off again on the same listening socket.
    for client_first in [true, false] {
        let mut next = cfg.clone();
        next.services[0].options.client_first = client_first;
        balancer
            .apply(Command::Replace(Box::new(next)))
            .await
            .unwrap();
        assert_eq!(balancer.local_addr("svc", None).unwrap(), addr);
        one_client(addr, &backend, client_first).await;
    }
    balancer.shutdown(Duration::from_secs(1)).await;
}

/// The state (`/proc/net/tcp`'s `st`) of the balancer's side of the
/// connection `client` made to `listener`: 0x01 established (accepted or
/// about to be), 0x03 SYN_RECV (held back by deferred accept).
fn server_side_state(listener: SocketAddr, client: SocketAddr) -> Option<u8> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let hex = |addr: SocketAddr| match addr.ip() {
        std::net::IpAddr::V4(ip) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(ip.octets()),
            addr.port()
        ),
        std::net::IpAddr::V6(_) => String::new(),
    };
    let (local, remote) = (hex(listener), hex(client));
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| u8::from_str_radix(fields.get(3)?, 16).ok())
            .flatten()
    })
}

/// Whether a client that connects to `addr` and says nothing is held back
/// by deferred accept (SYN_RECV on the balancer's side) rather than
/// established. The host's side of the silent client is taken from
/// `backend` and closed.
async fn a_silent_client_is_held_back(addr: SocketAddr, backend: &TcpListener) -> bool {
    let client = TcpStream::connect(addr).await.unwrap();
    let local = client.local_addr().unwrap();
    // The client's ACK has reached the listener by now on any machine.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let held_back = match server_side_state(addr, local) {
        Some(0x03) => true,
        Some(0x01) => false,
        other => panic!("{local} -> {addr}: state {other:?} in /proc/net/tcp"),
    };
    // Its FIN ends a deferral too, and a client that said nothing goes to
    // the listener's own group: the host sees it either way.
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(2), backend.accept()).await;
    held_back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_with_routes_accepts_clients_with_their_first_bytes() {
    if !std::path::Path::new("/proc/net/tcp").exists() {
        eprintln!("skipped: no /proc/net/tcp (not Linux)");
        return;
    }
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = config(
        SchedulerKind::RoundRobin,
        vec![host("b", backend.local_addr().unwrap(), 1)],
    );
    let mut other = cfg.services[0].clone();
    other.name = "other".into();
    other.listeners.clear();
    cfg.services.push(other);
    let balancer = Balancer::start(cfg).await.unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    assert!(
        !a_silent_client_is_held_back(addr, &backend).await,
        "no routes"
    );
    one_client(addr, &backend, false).await;

    // A route: clients are accepted with their first bytes, on the running
    // listening socket, and the bytes still pass both ways.
    let listen = txlb::config::parse_listen_addr("127.0.0.1:0").unwrap();
    let mut route = txlb::config::Route::to("other");
    route.sni = Some("other.example.com".into());
    let add = Command::AddRoute {
        service: "svc".into(),
        listen: listen.clone(),
        route: route.clone(),
        position: None,
    };
    balancer.apply(add).await.unwrap();
    assert_eq!(balancer.local_addr("svc", None).unwrap(), addr);
    assert!(a_silent_client_is_held_back(addr, &backend).await, "routes");
    one_client(addr, &backend, true).await;

    balancer
        .apply(Command::RemoveRoute {
            service: "svc".into(),
            listen,
            route,
        })
        .await
        .unwrap();
    assert!(
        !a_silent_client_is_held_back(addr, &backend).await,
        "routes removed"
    );
    one_client(addr, &backend, false).await;
    balancer.shutdown(Duration::from_secs(1)).await;
}
