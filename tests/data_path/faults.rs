//! Hosts that misbehave and resources that run out: a host reset or killed in
//! the middle of a transfer, a host that never reads (back-pressure and bounded
//! memory in the real binary), a black-holed host, a flapping host, and accept
//! failing with EMFILE under a low `ulimit -n`.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::binary::{Txlb, xml};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use txlb::HostHealth;
use txlb::scheduler::SchedulerKind;
use txlb::{Balancer, BalancerHandle};

fn open(balancer: &BalancerHandle, name: &str) -> u64 {
    balancer.stats().host("svc", "g", name).unwrap().stats.open
}

async fn open_returns_to_zero(balancer: &BalancerHandle, name: &str) {
    let zero = eventually(Duration::from_secs(3), || async {
        open(balancer, name) == 0
    })
    .await;
    assert!(zero, "host {name} still has {} open", open(balancer, name));
    assert!(
        balancer.connections(None, None).is_empty(),
        "{:?}",
        balancer.connections(None, None)
    );
}

/// How the host ends a connection in the middle of a transfer.
#[derive(Clone, Copy, Debug)]
enum Death {
    /// SO_LINGER 0 then close: the host sends RST.
    Reset,
    /// The task holding the socket is aborted (the process "dies"): the kernel
    /// closes the socket, with RST if unread bytes are left.
    Killed,
}

/// A host that reads 64 KiB, sends 64 KiB, then dies as `death` says, and tells
/// when it did.
async fn dying_backend(death: Death) -> (SocketAddr, tokio::sync::oneshot::Receiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (died_tx, died_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            stream.read_exact(&mut buf).await.unwrap();
            stream.write_all(&buf).await.unwrap();
            if let Death::Reset = death {
                socket2::SockRef::from(&stream)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
                drop(stream);
                let _ = go_tx.send(());
                return;
            }
            let _ = go_tx.send(());
            // Still "working" (and not reading) when it is killed.
            std::future::pending::<()>().await;
        });
        let _ = go_rx.await;
        task.abort();
        let _ = task.await;
        let _ = died_tx.send(Instant::now());
        drop(listener);
    });
    (addr, died_rx)
}

async fn host_dies_mid_transfer(death: Death) {
    let (addr, died) = dying_backend(death).await;
    let balancer = Balancer::start(config(SchedulerKind::RoundRobin, vec![host("h", addr, 1)]))
        .await
        .unwrap();
    let client = TcpStream::connect(balancer.local_addr("svc", None).unwrap())
        .await
        .unwrap();
    let (mut r, mut w) = client.into_split();
    // The client keeps sending until its writes fail.
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 4096];
        let mut sent = 0u64;
        while w.write_all(&chunk).await.is_ok() {
            sent += chunk.len() as u64;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sent
    });
    let mut received = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(n) => received += n as u64,
            }
        }
    })
    .await
    .expect("the client's connection ends");
    let died = died.await.unwrap();
    let lag = ended.saturating_duration_since(died);
    assert!(
        lag < Duration::from_secs(1),
        "{death:?}: ended {lag:?} after the host"
    );
    assert_eq!(
        received,
        64 * 1024,
        "{death:?}: what the host sent, then the end"
    );
    let sent = tokio::time::timeout(Duration::from_secs(3), writer)
        .await
        .expect("the client's writes fail promptly")
        .unwrap();
    assert!(sent >= 64 * 1024, "{sent}");
    open_returns_to_zero(&balancer, "h").await;
    let stats = balancer.stats();
    let h = &stats.host("svc", "g", "h").unwrap().stats;
    assert_eq!(h.total, 1);
    assert_eq!(
        h.health,
        HostHealth::Up,
        "a transfer error is not a failed connect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_reset_mid_transfer_ends_the_client_promptly() {
    host_dies_mid_transfer(Death::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_killed_mid_transfer_ends_the_client_promptly() {
    host_dies_mid_transfer(Death::Killed).await;
}

/// A host that accepts and never reads, with a small receive buffer so the
/// kernel's share stays small too.
fn deaf_backend() -> (SocketAddr, std::thread::JoinHandle<()>, Arc<AtomicBool>) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(1024).unwrap();
    socket.set_nonblocking(true).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut held = Vec::new();
        while !stopping.load(Relaxed) {
            match socket.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (addr, thread, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_never_reads_back_pressures_clients_and_memory_stays_bounded() {
    const CLIENTS: usize = 100;
    let (deaf, thread, stop) = deaf_backend();
    let txlb = Txlb::start_xml(&xml("", "", &[("deaf", deaf, "")], ""), None);
    let addr = txlb.listener();
    // Baseline after one connection has gone through, so lazily built state
    // (runtime, registries) is there already.
    drop(TcpStream::connect(addr).await.unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = txlb.rss_kib();

    let stalled = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let stalled = stalled.clone();
        clients.push(tokio::spawn(async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_send_buffer_size(64 * 1024).unwrap();
            let mut stream = socket.connect(addr).await.unwrap();
            let chunk = vec![0x5au8; 64 * 1024];
            let mut sent = 0u64;
            // Write until a write makes no progress for 1 s: back-pressure.
            while let Ok(Ok(())) =
                tokio::time::timeout(Duration::from_secs(1), stream.write_all(&chunk)).await
            {
                sent += chunk.len() as u64;
                assert!(
                    sent < 256 << 20,
                    "256 MiB went into a host that never reads"
                );
            }
            stalled.fetch_add(1, Relaxed);
            (stream, sent)
        }));
    }
    let mut streams = Vec::new();
    let mut sent = Vec::new();
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        for c in clients {
            let (s, n) = c.await.unwrap();
            streams.push(s);
            sent.push(n);
        }
    })
    .await;
    assert!(
        all.is_ok(),
        "only {} of {CLIENTS} clients stalled",
        stalled.load(Relaxed)
    );
    let peak = txlb.rss_kib();
    let growth = peak.saturating_sub(baseline);
    let total: u64 = sent.iter().sum();
    eprintln!(
        "never-reading host: {CLIENTS} clients stalled after {} KiB each on average \
         ({} KiB min, {} KiB max); txlb RSS {baseline} KiB -> {peak} KiB (+{growth} KiB, \
         {} KiB per connection)",
        total / CLIENTS as u64 / 1024,
        sent.iter().min().unwrap() / 1024,
        sent.iter().max().unwrap() / 1024,
        growth / CLIENTS as u64,
    );
    // txlb holds at most one copy buffer per direction per connection: 64 KiB,
    // more only from a process-wide budget of 32 MiB (src/proxy/copy.rs);
    // everything else waits in the kernel's socket buffers. Allow that plus
    // 64 KiB per connection for the task and allocator slack, plus 8 MiB for the
    // process as a whole: far below the 1 MiB per connection that buffers
    // growing without the budget would hold.
    const SMALL_BUFFER_MAX_KIB: u64 = 64;
    const LARGE_BUFFER_BUDGET_KIB: u64 = 32 * 1024;
    let per_connection = SMALL_BUFFER_MAX_KIB + 64;
    let bound = CLIENTS as u64 * per_connection + LARGE_BUFFER_BUDGET_KIB + 8 * 1024;
    assert!(growth < bound, "RSS grew {growth} KiB (bound {bound} KiB)");
    drop(streams);
    stop.store(true, Relaxed);
    thread.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_host_times_out_and_the_client_fails_over() {
    let (hole, _keep) = black_hole();
    // Let the fillers' handshakes settle so the queue is really full.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let good = named_backend("good", Hold::Close).await;
    let mut cfg = config(
        SchedulerKind::RoundRobin,
        vec![host("hole", hole, 1), host("good", good, 1)],
    );
    cfg.services[0].connect_timeout = Duration::from_millis(500);
    let balancer = Balancer::start(cfg).await.unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    let mut slowest = Duration::ZERO;
    for i in 0..4 {
        let started = Instant::now();
        let (name, _) = which_backend(addr).await;
        let took = started.elapsed();
        slowest = slowest.max(took);
        assert_eq!(name, "good", "client {i}");
        assert!(
            took < Duration::from_millis(1500),
            "client {i} took {took:?}"
        );
    }
    // One client waited out the connect timeout before failing over; after that
    // the hole is bad and skipped.
    assert!(slowest >= Duration::from_millis(450), "{slowest:?}");
    let stats = balancer.stats();
    let hole = &stats.host("svc", "g", "hole").unwrap().stats;
    assert_eq!(hole.health, HostHealth::Bad);
    let reason = &hole.bad.as_ref().unwrap().reason;
    assert!(reason.contains("no answer"), "{reason}");
    assert_eq!(stats.services[0].counters.failovers, 1);
    assert_eq!(stats.host("svc", "g", "good").unwrap().stats.total, 4);
}

/// A host whose listener is closed and bound again on the same port every
/// `period`. Connections it accepted are served to the end; before closing it
/// accepts what is queued, so only a SYN racing the close can be reset.
/// Returns its address, how many times it went down, and how many connections
/// it served.
fn flapping_backend(
    period: Duration,
    stop: Arc<AtomicBool>,
) -> (SocketAddr, tokio::task::JoinHandle<(u32, u64)>) {
    let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = first.local_addr().unwrap();
    first.set_nonblocking(true).unwrap();
    let served = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(async move {
        let mut listener = Some(TcpListener::from_std(first).unwrap());
        let mut downs = 0;
        while !stop.load(Relaxed) {
            let Some(l) = listener.take() else {
                tokio::time::sleep(period).await;
                listener = Some(TcpListener::bind(addr).await.unwrap());
                continue;
            };
            let until = tokio::time::sleep(period);
            tokio::pin!(until);
            loop {
                tokio::select! {
                    _ = &mut until => break,
                    accepted = l.accept() => {
                        let (s, _) = accepted.unwrap();
                        tokio::spawn(serve_one(s, served.clone()));
                    }
                }
            }
            // Take what is queued, then close.
            let std = l.into_std().unwrap();
            while let Ok((s, _)) = std.accept() {
                s.set_nonblocking(true).unwrap();
                tokio::spawn(serve_one(TcpStream::from_std(s).unwrap(), served.clone()));
            }
            drop(std);
            downs += 1;
        }
        (downs, served.load(Relaxed))
    });
    (addr, task)
}

/// Echoes the request (up to EOF) after its name.
async fn serve_one(mut s: TcpStream, served: Arc<AtomicU64>) {
    let mut request = Vec::new();
    if s.read_to_end(&mut request).await.is_ok() {
        let _ = s.write_all(b"flappy:").await;
        let _ = s.write_all(&request).await;
        served.fetch_add(1, Relaxed);
    }
}

async fn stable_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                if s.read_to_end(&mut request).await.is_ok() {
                    let _ = s.write_all(b"stable:").await;
                    let _ = s.write_all(&request).await;
                }
            });
        }
        drop(served);
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_host_costs_clients_nothing() {
    let secs: u64 = std::env::var("TXLB_FLAP_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let stop = Arc::new(AtomicBool::new(false));
    let (flappy, flapper) = flapping_backend(Duration::from_millis(300), stop.clone());
    let stable = stable_backend().await;
    let mut cfg = config(
        SchedulerKind::RoundRobin,
        vec![host("flappy", flappy, 1), host("stable", stable, 1)],
    );
    cfg.manager.host_check.interval = Duration::from_millis(100);
    let balancer = Balancer::start(cfg).await.unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();

    let deadline = Instant::now() + Duration::from_secs(secs);
    let errors = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let by_flappy = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..8u64 {
        let (errors, done, by_flappy) = (errors.clone(), done.clone(), by_flappy.clone());
        clients.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                let request = format!("client {c} request {i}");
                i += 1;
                let result = tokio::time::timeout(Duration::from_secs(5), async {
                    let mut s = TcpStream::connect(addr).await?;
                    s.write_all(request.as_bytes()).await?;
                    s.shutdown().await?;
                    let mut reply = Vec::new();
                    s.read_to_end(&mut reply).await?;
                    Ok::<_, std::io::Error>(reply)
                })
                .await;
                match result {
                    Ok(Ok(reply)) => {
                        let reply = String::from_utf8(reply).unwrap();
                        let (who, echoed) = reply.split_once(':').unwrap_or(("", ""));
                        if echoed == request {
                            done.fetch_add(1, Relaxed);
                            if who == "flappy" {
                                by_flappy.fetch_add(1, Relaxed);
                            }
                        } else {
                            eprintln!("{request:?} got {reply:?}");
                            errors.fetch_add(1, Relaxed);
                        }
                    }
                    other => {
                        eprintln!("{request:?}: {other:?}");
                        errors.fetch_add(1, Relaxed);
                    }
                }
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    stop.store(true, Relaxed);
    let (downs, _) = flapper.await.unwrap();
    let stats = balancer.stats();
    let flappy_stats = &stats.host("svc", "g", "flappy").unwrap().stats;
    eprintln!(
        "flapping host: {} exchanges in {secs} s, {} by the flapping host, {} errors, \
         {downs} downs, {} failed connects, {} failovers",
        done.load(Relaxed),
        by_flappy.load(Relaxed),
        errors.load(Relaxed),
        flappy_stats.failures,
        stats.services[0].counters.failovers,
    );
    assert_eq!(errors.load(Relaxed), 0);
    assert!(downs >= secs as u32, "{downs}");
    assert!(
        flappy_stats.failures >= 1,
        "no connect was refused while the host was down"
    );
    assert!(
        by_flappy.load(Relaxed) >= 10,
        "the flapping host came back into rotation only {} times",
        by_flappy.load(Relaxed)
    );
    assert!(stats.services[0].counters.failovers >= 1);
    assert!(
        eventually(Duration::from_secs(3), || async {
            let s = balancer.stats();
            s.host("svc", "g", "flappy").unwrap().stats.open == 0
                && s.host("svc", "g", "stable").unwrap().stats.open == 0
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_backs_off_on_emfile_and_serves_again_after_the_burst() {
    const NOFILE: u64 = 64;
    const BURST: usize = 150;
    const EMFILE: &str = "os error 24";
    let backend = named_backend("b", Hold::UntilClientCloses).await;
    let mut txlb = Txlb::start_xml(&xml("", "", &[("b", backend, "")], ""), Some(NOFILE));
    let addr = txlb.listener();
    assert_eq!(which_backend(addr).await.0, "b");

    // A burst of held connections well beyond what 64 descriptors allow (two
    // per proxied connection). Those txlb cannot take wait in its backlog, or
    // are accepted and closed when no descriptor is left for the host side.
    let mut held = Vec::new();
    for _ in 0..BURST {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    let warned = eventually(Duration::from_secs(5), || async { txlb.count(EMFILE) > 0 }).await;
    assert!(warned, "no EMFILE warning:\n{}", txlb.log_text());
    // Hold the burst for 2 s: warnings are limited to one a second per kind
    // (accept failed, client closed), not one per attempt.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = txlb.count(EMFILE);
    assert!(txlb.alive(), "txlb died:\n{}", txlb.log_text());

    drop(held);
    // Once the descriptors are free, new clients are served at once: the host
    // was not blamed for txlb's own shortage.
    let started = Instant::now();
    let served = eventually(Duration::from_secs(10), || async {
        matches!(
            tokio::time::timeout(Duration::from_secs(2), which_backend_or_nothing(addr)).await,
            Ok(Some(name)) if name == "b"
        )
    })
    .await;
    let after = started.elapsed();
    assert!(served, "not served after the burst:\n{}", txlb.log_text());
    for _ in 0..10 {
        assert_eq!(which_backend(addr).await.0, "b");
    }
    let log = txlb.log_text();
    eprintln!(
        "EMFILE: {during} warning lines while the burst was held ({} accept failed), \
         served again {after:?} after the release",
        txlb.count("accept failed")
    );
    assert!(during <= 12, "{during} EMFILE warnings:\n{log}");
    assert!(
        after < Duration::from_secs(2),
        "served again only after {after:?}:\n{log}"
    );
    assert_eq!(txlb.count("host marked bad"), 0, "{log}");
    assert!(txlb.alive());
    assert!(!log.contains("panicked"), "txlb panicked:\n{log}");
}

/// The backend's name line, or `None` if the connection is closed without one.
async fn which_backend_or_nothing(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte).await {
            Ok(1) if byte[0] != b'\n' => line.push(byte[0]),
            Ok(1) => return String::from_utf8(line).ok(),
            _ => return None,
        }
    }
}
