//! Access lists, connection limits and idle timeouts, each shown with real
//! connections from several loopback addresses (127.0.0.1, .2, .3 …): refused
//! clients are closed without a byte and counted, the others are served.

use crate::common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use txlb::config::{Config, parse_net};
use txlb::scheduler::SchedulerKind;
use txlb::{Balancer, BalancerHandle, ServiceCountersView};

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Connects to `to` from 127.0.0.`from`.
async fn connect_from(from: u8, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip(from), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// What the balancer did with a client: served (the backend's name line) or
/// closed without a byte.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Served(String),
    Closed,
}

/// Reads the backend's name line, or sees the connection closed first.
async fn outcome(stream: &mut TcpStream) -> Outcome {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut byte).await {
                Ok(1) if byte[0] != b'\n' => line.push(byte[0]),
                Ok(1) => return Outcome::Served(String::from_utf8(line.clone()).unwrap()),
                _ if line.is_empty() => return Outcome::Closed,
                other => panic!("cut after {line:?}: {other:?}"),
            }
        }
    })
    .await;
    read.expect("served or closed within 5 s")
}

async fn from(last: u8, balancer: SocketAddr) -> (Outcome, TcpStream) {
    let mut stream = connect_from(last, balancer).await;
    (outcome(&mut stream).await, stream)
}

fn served(name: &str) -> Outcome {
    Outcome::Served(name.into())
}

fn counters(balancer: &BalancerHandle) -> ServiceCountersView {
    balancer.stats().services[0].counters
}

async fn start(config: Config) -> (BalancerHandle, SocketAddr) {
    let balancer = Balancer::start(config).await.unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    (balancer, addr)
}

async fn one_host(hold: Hold) -> Config {
    let b = named_backend("b", hold).await;
    config(SchedulerKind::RoundRobin, vec![host("b", b, 1)])
}

fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
    list.iter().map(|n| parse_net(n).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_network_is_closed_without_data_and_counted() {
    let mut cfg = one_host(Hold::Close).await;
    cfg.services[0].options.deny = nets(&["127.0.0.2/32", "127.0.0.8/29"]);
    let (balancer, addr) = start(cfg).await;
    assert_eq!(from(2, addr).await.0, Outcome::Closed);
    assert_eq!(from(9, addr).await.0, Outcome::Closed);
    assert_eq!(from(1, addr).await.0, served("b"));
    assert_eq!(from(3, addr).await.0, served("b"));
    let c = counters(&balancer);
    assert_eq!((c.denied, c.accepted), (2, 4));
    assert_eq!(
        balancer.stats().host("svc", "g", "b").unwrap().stats.total,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_addresses_are_served_and_deny_wins() {
    let mut cfg = one_host(Hold::Close).await;
    cfg.services[0].options.allow = nets(&["127.0.0.3", "127.0.0.4"]);
    cfg.services[0].options.deny = nets(&["127.0.0.4"]);
    let (balancer, addr) = start(cfg).await;
    assert_eq!(from(1, addr).await.0, Outcome::Closed);
    assert_eq!(from(3, addr).await.0, served("b"));
    assert_eq!(
        from(4, addr).await.0,
        Outcome::Closed,
        "deny wins over allow"
    );
    assert_eq!(counters(&balancer).denied, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_maxconn_refuses_a_third_connection_from_one_address_only() {
    let mut cfg = one_host(Hold::UntilClientCloses).await;
    cfg.services[0].options.source_maxconn = 2;
    let (balancer, addr) = start(cfg).await;
    let (first, s1) = from(1, addr).await;
    let (second, s2) = from(1, addr).await;
    assert_eq!((first, second), (served("b"), served("b")));
    assert_eq!(from(1, addr).await.0, Outcome::Closed);
    // Another address is not affected.
    let (other, _s3) = from(2, addr).await;
    assert_eq!(other, served("b"));
    assert_eq!(counters(&balancer).over_limit, 1);
    // One closes: the address may connect again.
    drop(s1);
    let again = eventually(Duration::from_secs(3), || async {
        let (o, s) = from(1, addr).await;
        drop(s);
        o == served("b")
    })
    .await;
    assert!(again);
    drop(s2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_rate_refuses_new_connections_beyond_the_rate() {
    const RATE: u32 = 3;
    let mut cfg = one_host(Hold::Close).await;
    cfg.services[0].options.source_rate = RATE;
    let (balancer, addr) = start(cfg).await;
    // Ten quick connections from one address: within one second only RATE
    // pass; a burst straddling a second boundary gets at most twice that.
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        outcomes.push(from(1, addr).await.0);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "burst took {took:?}");
    let served_count = outcomes.iter().filter(|o| **o == served("b")).count() as u32;
    assert!(
        (RATE..=2 * RATE).contains(&served_count),
        "{served_count} served: {outcomes:?}"
    );
    assert_eq!(outcomes[0], served("b"));
    assert_eq!(counters(&balancer).over_limit, 10 - served_count as u64);
    // Another address has its own budget.
    assert_eq!(from(2, addr).await.0, served("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_maxconn_queues_one_refuses_the_next_and_times_the_waiter_out() {
    let mut cfg = one_host(Hold::UntilClientCloses).await;
    let o = &mut cfg.services[0].options;
    o.maxconn = 1;
    o.queue = 1;
    o.queue_timeout = Duration::from_millis(800);
    let (balancer, addr) = start(cfg).await;

    let (first, holder) = from(1, addr).await;
    assert_eq!(first, served("b"));
    // The second waits in the queue: connected, but nothing comes.
    let mut waiter = connect_from(1, addr).await;
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), waiter.read(&mut byte))
            .await
            .is_err(),
        "the waiter was answered while the slot was taken"
    );
    // The queue (of one) is full: a third is closed at once.
    let started = Instant::now();
    assert_eq!(from(1, addr).await.0, Outcome::Closed);
    assert!(started.elapsed() < Duration::from_millis(300));
    assert_eq!(counters(&balancer).over_limit, 1);
    // The first leaves: the waiter is served.
    drop(holder);
    assert_eq!(outcome(&mut waiter).await, served("b"));

    // The waiter now holds the slot; a new client waits out the queue timeout
    // and is closed.
    let started = Instant::now();
    let (late, _) = from(1, addr).await;
    let waited = started.elapsed();
    assert_eq!(late, Outcome::Closed);
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_millis(2000),
        "closed after {waited:?}"
    );
    assert_eq!(counters(&balancer).over_limit, 2);
    drop(waiter);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_host_sends_extra_connections_to_the_other_host() {
    let a = named_backend("a", Hold::UntilClientCloses).await;
    let b = named_backend("b", Hold::UntilClientCloses).await;
    let mut full = host("a", a, 1);
    full.options.maxconn = 1;
    let (balancer, addr) = start(config(
        SchedulerKind::RoundRobin,
        vec![full, host("b", b, 1)],
    ))
    .await;
    let mut held = Vec::new();
    let mut names = Vec::new();
    for _ in 0..6 {
        let (name, s) = which_backend(addr).await;
        names.push(name);
        held.push(s);
    }
    let on_a = names.iter().position(|n| n == "a").unwrap();
    names.sort();
    assert_eq!(names, ["a", "b", "b", "b", "b", "b"]);
    let stats = balancer.stats();
    assert_eq!(stats.host("svc", "g", "a").unwrap().stats.open, 1);
    assert_eq!(stats.host("svc", "g", "b").unwrap().stats.open, 5);
    // a frees its slot: it takes clients again.
    drop(held.remove(on_a));
    let back = eventually(Duration::from_secs(3), || async {
        balancer.stats().host("svc", "g", "a").unwrap().stats.open == 0
    })
    .await;
    assert!(back);
    let mut again = Vec::new();
    for _ in 0..2 {
        let (name, s) = which_backend(addr).await;
        again.push(name);
        held.push(s);
    }
    assert!(again.contains(&"a".to_string()), "{again:?}");
}

/// A backend that echoes, and on the client's FIN neither answers nor closes:
/// the connection stays half-closed until txlb ends it.
async fn echo_then_linger_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                // Half-closed by the client: keep the socket, say nothing.
                let mut rest = [0u8; 1];
                let _ = s.read(&mut rest).await;
                std::future::pending::<()>().await;
            });
        }
    });
    addr
}

/// Reads until the connection ends; returns how long after `since` it did.
async fn closed_after(stream: &mut TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 64];
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("closed within 5 s")
}

async fn timeout_config(client: f64, fin: f64) -> Config {
    let backend = echo_then_linger_backend().await;
    let mut cfg = config(SchedulerKind::RoundRobin, vec![host("e", backend, 1)]);
    cfg.services[0].options.client_timeout = Duration::from_secs_f64(client);
    cfg.services[0].options.client_fin_timeout = Duration::from_secs_f64(fin);
    cfg
}

async fn ping(stream: &mut TcpStream, byte: u8) {
    stream.write_all(&[byte]).await.unwrap();
    let mut back = [0u8; 1];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(back[0], byte);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_client_timeout_and_counted() {
    let (balancer, addr) = start(timeout_config(0.5, 30.0).await).await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    ping(&mut idle, 1).await;
    let quiet_since = Instant::now();
    let after = closed_after(&mut idle, quiet_since).await;
    assert!(
        after >= Duration::from_millis(450) && after <= Duration::from_millis(1500),
        "closed {after:?} after the last byte"
    );
    assert_eq!(counters(&balancer).timeouts, 1);
    assert!(
        eventually(Duration::from_secs(2), || async {
            balancer.connections(None, None).is_empty()
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_connection_outlives_the_idle_timeout() {
    let (balancer, addr) = start(timeout_config(0.5, 30.0).await).await;
    let mut busy = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let mut i = 0u8;
    // A byte every 100 ms for three times the timeout.
    while started.elapsed() < Duration::from_millis(1500) {
        ping(&mut busy, i).await;
        i = i.wrapping_add(1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ping(&mut busy, 0xff).await;
    assert_eq!(counters(&balancer).timeouts, 0);
    assert_eq!(balancer.connections(None, None).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_half_closed_connection_is_closed_after_client_fin_timeout() {
    // Idle timeout long, half-close linger short.
    let (balancer, addr) = start(timeout_config(30.0, 0.5).await).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    ping(&mut client, 7).await;
    client.shutdown().await.unwrap();
    let fin_at = Instant::now();
    let after = closed_after(&mut client, fin_at).await;
    assert!(
        after >= Duration::from_millis(450) && after <= Duration::from_millis(1500),
        "half-closed connection ended {after:?} after the FIN"
    );
    assert_eq!(counters(&balancer).timeouts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reads_access_lists_and_limits_from_xml_attributes() {
    let b = named_backend("b", Hold::UntilClientCloses).await;
    let txlb = common::binary::Txlb::start_xml(
        &common::binary::xml(
            "deny=\"127.0.0.2, 127.0.0.5/32\" sourceMaxconn=\"1\" clientTimeout=\"0.5\"",
            "",
            &[("b", b, "")],
            "",
        ),
        None,
    );
    let addr = txlb.listener();
    assert_eq!(from(2, addr).await.0, Outcome::Closed);
    assert_eq!(from(5, addr).await.0, Outcome::Closed);
    let (first, mut held) = from(1, addr).await;
    assert_eq!(first, served("b"));
    assert_eq!(from(1, addr).await.0, Outcome::Closed);
    assert_eq!(from(3, addr).await.0, served("b"));
    // clientTimeout: the held connection is closed once idle.
    let after = closed_after(&mut held, Instant::now()).await;
    assert!(after <= Duration::from_millis(1500), "{after:?}");
}

/// A host, group or service a reload renames (same address, same place) is
/// the same one under a new name: the connections open on it still count
/// against its `maxconn` and the service's, and its counters go on. Before,
/// each came back empty: a renamed host took clients past its `maxconn`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_group_or_service_a_reload_renames_keeps_its_connections_and_limits() {
    let a = named_backend("a", Hold::UntilClientCloses).await;
    let b = named_backend("b", Hold::UntilClientCloses).await;
    let mut full = host("a", a, 1);
    full.options.maxconn = 1;
    let mut cfg = config(SchedulerKind::RoundRobin, vec![full, host("b", b, 1)]);
    cfg.services[0].options.maxconn = 2;
    cfg.services[0].options.queue = 0;
    let (balancer, addr) = start(cfg.clone()).await;
    let (on_a, held_a) = from(1, addr).await;
    let (on_b, held_b) = from(1, addr).await;
    assert_eq!((on_a, on_b), (served("a"), served("b")));
    assert_eq!(
        from(1, addr).await.0,
        Outcome::Closed,
        "the service is full"
    );

    type Rename = (&'static str, fn(&mut Config));
    let renames: [Rename; 3] = [
        ("host", |c| {
            let hosts = &mut c.services[0].groups[0].hosts;
            let mut renamed = hosts.remove(0);
            renamed.name = "a2".into();
            hosts.insert(0, renamed);
        }),
        ("group", |c| {
            c.services[0].groups[0].name = "g2".into();
            c.services[0].enabled_group = "g2".into();
        }),
        ("service", |c| c.services[0].name = "web".into()),
    ];
    for (refused, (what, rename)) in (1..).zip(renames) {
        rename(&mut cfg);
        balancer
            .apply(txlb::Command::Replace(Box::new(cfg.clone())))
            .await
            .unwrap();
        let service = &cfg.services[0].name;
        let group = &cfg.services[0].groups[0].name;
        let stats = balancer.stats();
        let renamed = stats.host(service, group, "a2").map(|h| h.stats.clone());
        let renamed = renamed.unwrap_or_else(|| panic!("{what}: {stats:?}"));
        assert_eq!((renamed.open, renamed.total), (1, 1), "{what}");
        assert!(stats.services[0].groups[0].draining.is_empty(), "{what}");
        // Every client so far: two served, the others refused.
        let counters = stats.services[0].counters;
        assert_eq!(counters.accepted, 2 + refused, "{what}");
        assert_eq!(counters.over_limit, refused, "{what}");
        assert_eq!(balancer.local_addr(service, None), Some(addr), "{what}");
        // Still full: the service's two connections are counted.
        assert_eq!(from(1, addr).await.0, Outcome::Closed, "{what}");
    }
    // b's slot frees: a new client goes there, a2 being full.
    drop(held_b);
    let freed = eventually(Duration::from_secs(3), || async {
        balancer.stats().host("web", "g2", "b").unwrap().stats.open == 0
    });
    assert!(freed.await);
    for _ in 0..2 {
        let (outcome, stream) = from(1, addr).await;
        assert_eq!(outcome, served("b"), "a2 is full");
        drop(stream);
        let freed = eventually(Duration::from_secs(3), || async {
            balancer.stats().host("web", "g2", "b").unwrap().stats.open == 0
        });
        assert!(freed.await);
    }
    drop(held_a);
    let freed = eventually(Duration::from_secs(3), || async {
        balancer.stats().host("web", "g2", "a2").unwrap().stats.open == 0
    });
    assert!(freed.await);
}
