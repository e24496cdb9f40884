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
