//! `retryEmpty`: a host that accepts and then closes or resets before answering is
//! skipped, and the client's bytes are replayed to another host.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use txlb::Balancer;
use txlb::HostHealth;
use txlb::scheduler::SchedulerKind;

/// A host that accepts, reads a little, then closes (or resets) without a byte.
async fn empty_host(reset: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 100];
                let _ = tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await;
                if reset {
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                }
                drop(s);
            });
        }
    });
    addr
}

async fn replays_to_the_next_host(reset: bool) {
    let mut cfg = config(
        SchedulerKind::RoundRobin,
        vec![
            host("empty", empty_host(reset).await, 1),
            host("echo", echo_backend().await, 1),
        ],
    );
    cfg.services[0].groups[0].options.retry_empty = true;
    let balancer = Balancer::start(cfg).await.unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    for round in 0..4u64 {
        let mut rng = fastrand::Rng::with_seed(round);
        let data: Vec<u8> = (0..(3000 + round as usize * 2000))
            .map(|_| rng.u8(..))
            .collect();
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(&data).await.unwrap();
        client.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back.len(), data.len(), "round {round}");
        assert_eq!(
            Sha256::digest(&back),
            Sha256::digest(&data),
            "round {round}"
        );
    }
    let stats = balancer.stats();
    let empty = &stats.host("svc", "g", "empty").unwrap().stats;
    assert_eq!(empty.health, HostHealth::Bad);
    assert!(
        empty
            .bad
            .as_ref()
            .unwrap()
            .reason
            .contains("without answering"),
        "{:?}",
        empty.bad
    );
    assert_eq!(stats.services[0].counters.failovers, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_closes_before_answering_is_skipped() {
    replays_to_the_next_host(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_resets_before_answering_is_skipped() {
    replays_to_the_next_host(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retry_empty_the_client_sees_the_empty_answer() {
    let balancer = Balancer::start(config(
        SchedulerKind::RoundRobin,
        vec![
            host("empty", empty_host(false).await, 1),
            host("echo", echo_backend().await, 1),
        ],
    ))
    .await
    .unwrap();
    let mut client = TcpStream::connect(balancer.local_addr("svc", None).unwrap())
        .await
        .unwrap();
    client.write_all(b"hello").await.unwrap();
    client.shutdown().await.unwrap();
    let mut back = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut back)).await;
    assert!(back.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_byte_bound_there_is_no_replay() {
    let mut cfg = config(
        SchedulerKind::RoundRobin,
        vec![
            host("empty", empty_host(false).await, 1),
            host("echo", echo_backend().await, 1),
        ],
    );
    cfg.services[0].groups[0].options.retry_empty = true;
    cfg.services[0].groups[0].options.retry_empty_bytes = 10;
    let balancer = Balancer::start(cfg).await.unwrap();
    let mut client = TcpStream::connect(balancer.local_addr("svc", None).unwrap())
        .await
        .unwrap();
    let _ = client.write_all(&[7u8; 1000]).await;
    let _ = client.shutdown().await;
    let mut back = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut back)).await;
    assert!(
        back.is_empty(),
        "replayed {} bytes despite the bound",
        back.len()
    );
}
