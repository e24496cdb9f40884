//! The data path through the real engine: failover, hostCheck, integrity,
//! half-close, early close, and clients with no host left.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use txlb::Balancer;
use txlb::HostHealth;
use txlb::scheduler::SchedulerKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_serves_every_client_when_a_host_refuses() {
    let dead = closed_port();
    let hosts = vec![
        host("dead", dead, 1),
        host("b1", named_backend("b1", Hold::Close).await, 1),
        host("b2", named_backend("b2", Hold::Close).await, 1),
    ];
    let balancer = Balancer::start(config(SchedulerKind::RoundRobin, hosts))
        .await
        .unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    for i in 0..100 {
        let (name, _) = which_backend(addr).await;
        assert!(name == "b1" || name == "b2", "client {i} got {name:?}");
    }
    let stats = balancer.stats();
    let dead = &stats.host("svc", "g", "dead").unwrap().stats;
    assert_eq!(dead.health, HostHealth::Bad);
    assert!(dead.failures >= 1);
    let reason = &dead.bad.as_ref().expect("a bad host has a reason").reason;
    assert!(reason.contains("refused"), "{reason}");
    let served: u64 = ["b1", "b2"]
        .iter()
        .map(|h| stats.host("svc", "g", h).unwrap().stats.total)
        .sum();
    assert_eq!(served, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_check_puts_a_recovered_host_back_within_two_intervals() {
    let interval = Duration::from_millis(400);
    let port = closed_port();
    let mut cfg = config(
        SchedulerKind::RoundRobin,
        vec![
            host("late", port, 1),
            host("b1", named_backend("b1", Hold::Close).await, 1),
        ],
    );
    cfg.manager.host_check.interval = interval;
    let balancer = Balancer::start(cfg).await.unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    // The first client goes to "late", which refuses: it is marked bad.
    assert_eq!(which_backend(addr).await.0, "b1");
    let health =
        |b: &txlb::BalancerHandle| b.stats().host("svc", "g", "late").unwrap().stats.health;
    assert_eq!(health(&balancer), HostHealth::Bad);

    // The backend comes back on the same port.
    let listener = tokio::net::TcpListener::bind(port).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(b"late\n").await;
        }
    });
    let back_at = Instant::now();
    let back = eventually(2 * interval + Duration::from_millis(200), || {
        let b = balancer.clone();
        async move { health(&b) == HostHealth::Up }
    })
    .await;
    assert!(back, "not back after {:?}", back_at.elapsed());
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(which_backend(addr).await.0);
    }
    assert!(names.contains(&"late".to_string()), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_megabytes_come_back_intact() {
    let _heavy = common::heavy().await;
    let hosts = vec![
        host("e1", echo_backend().await, 1),
        host("e2", echo_backend().await, 1),
    ];
    let balancer = Balancer::start(config(SchedulerKind::LeastConns, hosts))
        .await
        .unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    const SIZE: usize = 1 << 20;
    let mut tasks = Vec::new();
    for seed in 0..200u64 {
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut data = vec![0u8; SIZE];
            rng.fill(&mut data);
            let sent = Sha256::digest(&data);
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut r, mut w) = stream.into_split();
            let writer = tokio::spawn(async move {
                for chunk in data.chunks(7919) {
                    w.write_all(chunk).await.unwrap();
                }
                w.shutdown().await.unwrap();
            });
            let mut received = Vec::with_capacity(SIZE);
            r.read_to_end(&mut received).await.unwrap();
            writer.await.unwrap();
            assert_eq!(received.len(), SIZE, "connection {seed}");
            assert_eq!(Sha256::digest(&received), sent, "connection {seed}");
        }));
    }
    let deadline = tokio::time::timeout(Duration::from_secs(120), async {
        for task in tasks {
            task.await.unwrap();
        }
    });
    deadline.await.expect("200 MiB echoed within 120 s");
    let stats = balancer.stats();
    let bytes: u64 = ["e1", "e2"]
        .iter()
        .map(|h| stats.host("svc", "g", h).unwrap().stats.bytes_in)
        .sum();
    assert_eq!(bytes, 200 * SIZE as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_client_still_gets_the_whole_reply() {
    // The backend reads the request to EOF, then answers with 256 KiB.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                s.read_to_end(&mut request).await.unwrap();
                let reply: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
                s.write_all(&request).await.unwrap();
                s.write_all(&reply).await.unwrap();
            });
        }
    });
    let balancer = Balancer::start(config(
        SchedulerKind::RoundRobin,
        vec![host("b", backend, 1)],
    ))
    .await
    .unwrap();
    let mut client = TcpStream::connect(balancer.local_addr("svc", None).unwrap())
        .await
        .unwrap();
    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&reply[..7], b"request");
    assert_eq!(reply.len(), 7 + 256 * 1024);
    assert!(
        reply[7..]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i % 251) as u8)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_replies_arrive_at_once_with_or_without_a_fin() {
    // A host that greets, answers one command, then half-closes in quick
    // succession (txlb holds the last bytes for the FIN that follows, so both
    // leave in one segment), and still reads what the client sends after.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                s.write_all(b"220 ready\r\n").await.unwrap();
                let mut command = [0u8; 6];
                s.read_exact(&mut command).await.unwrap();
                assert_eq!(&command, b"HELO\r\n");
                s.write_all(b"250 ok\r\n").await.unwrap();
                s.shutdown().await.unwrap();
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).await.unwrap();
                assert_eq!(rest, b"QUIT\r\n");
            });
        }
    });
    let balancer = Balancer::start(config(
        SchedulerKind::RoundRobin,
        vec![host("b", backend, 1)],
    ))
    .await
    .unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    let (mut greeting_took, mut reply_took) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let mut client = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let mut greeting = [0u8; 11];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut greeting))
            .await
            .unwrap()
            .unwrap();
        greeting_took.push(started.elapsed());
        assert_eq!(&greeting, b"220 ready\r\n", "client {i}");
        let started = Instant::now();
        client.write_all(b"HELO\r\n").await.unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut reply))
            .await
            .unwrap()
            .unwrap();
        reply_took.push(started.elapsed());
        assert_eq!(reply, b"250 ok\r\n", "client {i}");
        client.write_all(b"QUIT\r\n").await.unwrap();
        client.shutdown().await.unwrap();
    }
    // Bytes held back and never pushed would wait for the kernel's 200 ms cork
    // timer, every time; the median is far below it.
    for took in [&mut greeting_took, &mut reply_took] {
        took.sort();
        assert!(took[10] < Duration::from_millis(100), "{took:?}");
    }
    let every_byte_reached_the_host = eventually(Duration::from_secs(5), || async {
        balancer
            .stats()
            .host("svc", "g", "b")
            .unwrap()
            .stats
            .bytes_in
            == 20 * 12
    })
    .await;
    assert!(every_byte_reached_the_host);
}

/// A backend that accepts only after `delay`, then reads everything.
fn late_backend(delay: Duration) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::task::spawn_blocking(move || {
        std::thread::sleep(delay);
        let (mut s, _) = listener.accept().unwrap();
        let mut received = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut received).unwrap();
        received
    });
    (addr, task)
}

async fn early_close_delivers(hosts_before: Vec<txlb::config::HostConfig>) {
    let (late, received) = late_backend(Duration::from_millis(500));
    let mut hosts = hosts_before;
    hosts.push(host("late", late, 1));
    let balancer = Balancer::start(config(SchedulerKind::RoundRobin, hosts))
        .await
        .unwrap();
    let data: Vec<u8> = (0..10 * 1024).map(|i| (i % 253) as u8).collect();
    let mut client = TcpStream::connect(balancer.local_addr("svc", None).unwrap())
        .await
        .unwrap();
    client.write_all(&data).await.unwrap();
    drop(client); // closed long before the backend accepts
    let got = tokio::time::timeout(Duration::from_secs(10), received)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), data.len());
    assert_eq!(got, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_of_a_client_that_closed_early_reach_a_late_backend() {
    early_close_delivers(Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_of_a_client_that_closed_early_survive_failover() {
    early_close_delivers(vec![host("dead", closed_port(), 1)]).await;
}

/// Asserts the balancer closes a client without sending anything, within `limit`.
async fn assert_closed_within(addr: SocketAddr, limit: Duration) {
    let started = Instant::now();
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(limit, client.read(&mut buf)).await;
    match read {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        other => panic!("expected a closed connection, got {other:?}"),
    }
    assert!(started.elapsed() <= limit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_is_closed_at_once_when_every_host_refuses() {
    let hosts = vec![host("d1", closed_port(), 1), host("d2", closed_port(), 1)];
    let balancer = Balancer::start(config(SchedulerKind::RoundRobin, hosts))
        .await
        .unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    assert_closed_within(addr, Duration::from_secs(1)).await;
    // Now both are bad: the next client is closed without any connect attempt.
    assert_closed_within(addr, Duration::from_millis(500)).await;
    let stats = balancer.stats();
    for h in ["d1", "d2"] {
        assert_eq!(
            stats.host("svc", "g", h).unwrap().stats.health,
            HostHealth::Bad
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_is_closed_within_the_connect_timeout_when_the_host_does_not_answer() {
    // A listener whose accept queue is full drops further SYNs: connects hang.
    let (silent_addr, _keep) = black_hole();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut cfg = config(
        SchedulerKind::RoundRobin,
        vec![host("silent", silent_addr, 1)],
    );
    cfg.services[0].connect_timeout = Duration::from_millis(500);
    let balancer = Balancer::start(cfg).await.unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    let started = Instant::now();
    assert_closed_within(addr, Duration::from_millis(1500)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed before the timeout: {:?}",
        started.elapsed()
    );
    let stats = balancer.stats();
    let silent = &stats.host("svc", "g", "silent").unwrap().stats;
    assert_eq!(silent.health, HostHealth::Bad);
    assert!(
        silent.bad.as_ref().unwrap().reason.contains("no answer"),
        "{:?}",
        silent.bad
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_answers_late_but_within_the_connect_timeout_serves() {
    // On loopback a connect usually finishes inside the system call; here the
    // host's accept queue is full, so the SYN is dropped and only its
    // retransmission (about a second later) gets through, once the queue has
    // been emptied: the connect is still in progress when txlb looks.
    let (late_addr, mut fillers) = black_hole();
    let late = std::net::TcpListener::from(fillers.remove(0));
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut cfg = config(SchedulerKind::RoundRobin, vec![host("late", late_addr, 1)]);
    cfg.services[0].connect_timeout = Duration::from_secs(5);
    let balancer = Balancer::start(cfg).await.unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    // Empty the queue once txlb's SYN has been dropped, then serve everyone.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        for stream in late.incoming().take(16) {
            let Ok(mut stream) = stream else { break };
            let _ = std::io::Write::write_all(&mut stream, b"late\n");
        }
    });
    let started = Instant::now();
    let (name, _stream) = which_backend(addr).await;
    assert_eq!(name, "late");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answered before the queue was emptied: {:?}",
        started.elapsed()
    );
    let stats = balancer.stats();
    let late = &stats.host("svc", "g", "late").unwrap().stats;
    assert_eq!(late.health, HostHealth::Up, "{:?}", late.bad);
    drop(fillers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_marks_a_silent_host_bad_without_client_traffic() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        loop {
            let _ = listener.accept().await;
        }
    });
    let mut cfg = config(
        SchedulerKind::RoundRobin,
        vec![
            host("fading", port, 1),
            host("b1", named_backend("b1", Hold::Close).await, 1),
        ],
    );
    cfg.manager.heartbeat.enable = true;
    cfg.manager.heartbeat.interval = Duration::from_millis(200);
    cfg.manager.host_check.interval = Duration::from_millis(200);
    let balancer = Balancer::start(cfg).await.unwrap();
    let health =
        |b: &txlb::BalancerHandle| b.stats().host("svc", "g", "fading").unwrap().stats.health;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(health(&balancer), HostHealth::Up, "a live host stays up");

    accepting.abort(); // drops the listener: connects are refused from now on
    let bad = eventually(Duration::from_secs(2), || {
        let b = balancer.clone();
        async move { health(&b) == HostHealth::Bad }
    })
    .await;
    assert!(bad, "heartbeat never noticed");
    let stats = balancer.stats();
    let reason = &stats
        .host("svc", "g", "fading")
        .unwrap()
        .stats
        .bad
        .as_ref()
        .unwrap()
        .reason;
    assert!(reason.starts_with("heartbeat:"), "{reason}");
    assert_eq!(
        stats.host("svc", "g", "fading").unwrap().stats.total,
        0,
        "no client was involved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_workers_share_the_listeners_and_serve_everyone() {
    let hosts = vec![
        host("e1", echo_backend().await, 1),
        host("e2", echo_backend().await, 1),
    ];
    let balancer = Balancer::builder(config(SchedulerKind::LeastConns, hosts))
        .workers(3)
        .start()
        .await
        .unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    let mut tasks = Vec::new();
    for i in 0..300u32 {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let msg = i.to_be_bytes();
            s.write_all(&msg).await.unwrap();
            s.shutdown().await.unwrap();
            let mut back = Vec::new();
            s.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, msg);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stats = balancer.stats();
    let total: u64 = ["e1", "e2"]
        .iter()
        .map(|h| stats.host("svc", "g", h).unwrap().stats.total)
        .sum();
    assert_eq!(total, 300);
    tokio::time::timeout(
        Duration::from_secs(5),
        balancer.shutdown(Duration::from_secs(2)),
    )
    .await
    .expect("shutdown with workers finishes");
    assert!(TcpStream::connect(addr).await.is_err());
}
