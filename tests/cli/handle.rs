//! The balancer handle, checked with real traffic: live changes, connections list
//! and close, drains, events, and graceful shutdown.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use txlb::Command;
use txlb::HostHealth;
use txlb::events::Event;
use txlb::scheduler::SchedulerKind;
use txlb::{Balancer, BalancerHandle};

async fn start(hosts: Vec<txlb::config::HostConfig>) -> (BalancerHandle, std::net::SocketAddr) {
    let balancer = Balancer::start(config(SchedulerKind::RoundRobin, hosts))
        .await
        .unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    (balancer, addr)
}

async fn distinct_names(addr: std::net::SocketAddr, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..n {
        names.push(which_backend(addr).await.0);
    }
    names.sort();
    names.dedup();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_groups_schedulers_and_listeners_change_live() {
    let a = named_backend("a", Hold::Close).await;
    let b = named_backend("b", Hold::Close).await;
    let c = named_backend("c", Hold::Close).await;
    let (balancer, addr) = start(vec![host("a", a, 1)]).await;
    assert_eq!(distinct_names(addr, 3).await, vec!["a"]);

    balancer
        .apply(Command::AddHost {
            service: "svc".into(),
            group: "g".into(),
            host: host("b", b, 1),
        })
        .await
        .unwrap();
    assert_eq!(distinct_names(addr, 4).await, vec!["a", "b"]);

    balancer
        .apply(Command::SetAdminDown {
            service: "svc".into(),
            group: "g".into(),
            host: "a".into(),
            down: true,
        })
        .await
        .unwrap();
    assert_eq!(distinct_names(addr, 4).await, vec!["b"]);
    assert_eq!(
        balancer.stats().host("svc", "g", "a").unwrap().stats.health,
        HostHealth::AdminDown
    );

    // A standby group with host c, switched in.
    balancer
        .apply(Command::AddGroup {
            service: "svc".into(),
            group: Box::new(txlb::config::GroupConfig {
                name: "standby".into(),
                scheduler: SchedulerKind::LeastConns,
                hosts: vec![host("c", c, 1)].into(),
                options: Default::default(),
                check: None,
                agent: None,
            }),
        })
        .await
        .unwrap();
    assert_eq!(distinct_names(addr, 3).await, vec!["b"]);
    balancer
        .apply(Command::EnableGroup {
            service: "svc".into(),
            group: "standby".into(),
        })
        .await
        .unwrap();
    assert_eq!(distinct_names(addr, 3).await, vec!["c"]);

    // Refusals leave everything as it was.
    let err = balancer
        .apply(Command::RemoveGroup {
            service: "svc".into(),
            group: "standby".into(),
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("enabled group"), "{err}");
    let err = balancer
        .apply(Command::RemoveHost {
            service: "svc".into(),
            group: "standby".into(),
            host: "c".into(),
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("last host"), "{err}");

    // A second listener opens live; a port in use is refused.
    let listen = txlb::config::parse_listen_addr("127.0.0.1:0").unwrap();
    balancer
        .apply(Command::AddService(Box::new(txlb::config::ServiceConfig {
            name: "svc2".into(),
            listeners: vec![listen.into()],
            groups: vec![txlb::config::GroupConfig {
                name: "g".into(),
                scheduler: SchedulerKind::Random,
                hosts: vec![host("a", a, 1)].into(),
                options: Default::default(),
                check: None,
                agent: None,
            }],
            enabled_group: "g".into(),
            connect_timeout: Duration::from_secs(1),
            options: Default::default(),
        })))
        .await
        .unwrap();
    let addr2 = balancer.local_addr("svc2", None).unwrap();
    assert_eq!(distinct_names(addr2, 2).await, vec!["a"]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = balancer
        .apply(Command::AddListener {
            service: "svc".into(),
            listen: txlb::config::parse_listen_addr(&taken.local_addr().unwrap().to_string())
                .unwrap()
                .into(),
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot listen"), "{err}");
    assert_eq!(balancer.config().services[0].listeners.len(), 1);
}

/// A backend that streams `chunks` × 64 KiB, 20 ms apart, then closes.
async fn slow_backend(chunks: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                for _ in 0..chunks {
                    if s.write_all(&[1u8; 64 * 1024]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_listed_and_can_be_closed() {
    let (balancer, addr) = start(vec![host("slow", slow_backend(1_000).await, 1)]).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    client.read_exact(&mut buf).await.unwrap();
    // The proxy counts a write once it returns, which may be after the client
    // has read it.
    assert!(
        eventually(Duration::from_secs(2), || async {
            let list = balancer.connections(Some("svc"), Some("slow"));
            list.len() == 1 && list[0].bytes_out >= 64 * 1024
        })
        .await
    );
    let list = balancer.connections(Some("svc"), Some("slow"));
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].client, client.local_addr().unwrap());
    assert!(list[0].bytes_out >= 64 * 1024);
    assert!(balancer.connections(Some("svc"), Some("other")).is_empty());

    assert!(balancer.close_connection(list[0].id));
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "connection not closed");
    assert!(
        eventually(Duration::from_secs(2), || async {
            balancer.connections(None, None).is_empty()
        })
        .await
    );
    assert!(!balancer.close_connection(list[0].id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_host_finishes_its_transfer_and_takes_no_new_clients() {
    let (balancer, addr) = start(vec![
        host("slow", slow_backend(20).await, 1),
        host("b", named_backend("b", Hold::Close).await, 1),
    ])
    .await;
    // Round robin: the first client goes to "slow".
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut first = vec![0u8; 1024];
    client.read_exact(&mut first).await.unwrap();
    balancer.drain_host("svc", "g", "slow", None).await.unwrap();
    assert_eq!(distinct_names(addr, 4).await, vec!["b"]);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(
        first.len() + rest.len(),
        20 * 64 * 1024,
        "the transfer finished byte-exact"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_deadline_cuts_the_transfer() {
    let (balancer, addr) = start(vec![host("slow", slow_backend(1_000).await, 1)]).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    client.read_exact(&mut buf).await.unwrap();
    let started = Instant::now();
    balancer
        .drain_host("svc", "g", "slow", Some(Duration::from_millis(300)))
        .await
        .unwrap();
    let mut total = 0usize;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .unwrap()
        {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert!(total < 999 * 64 * 1024, "cut before the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_host_drains_visibly_instead_of_being_cut() {
    let (balancer, addr) = start(vec![
        host("slow", slow_backend(20).await, 1),
        host("b", named_backend("b", Hold::Close).await, 1),
    ])
    .await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut first = vec![0u8; 1024];
    client.read_exact(&mut first).await.unwrap();
    balancer
        .apply(Command::RemoveHost {
            service: "svc".into(),
            group: "g".into(),
            host: "slow".into(),
        })
        .await
        .unwrap();
    let stats = balancer.stats();
    let group = &stats.services[0].groups[0];
    assert_eq!(group.hosts.len(), 1);
    assert_eq!(group.draining.len(), 1);
    assert_eq!(group.draining[0].name, "slow");
    assert_eq!(group.draining[0].stats.open, 1);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(first.len() + rest.len(), 20 * 64 * 1024);
    drop(client); // the client's half was still open
    assert!(
        eventually(Duration::from_secs(2), || async {
            balancer.stats().services[0].groups[0].draining.is_empty()
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_report_a_host_going_bad_and_coming_back() {
    let port = closed_port();
    let mut cfg = config(
        SchedulerKind::RoundRobin,
        vec![
            host("flaky", port, 1),
            host("b", named_backend("b", Hold::Close).await, 1),
        ],
    );
    cfg.manager.host_check.interval = Duration::from_millis(200);
    let balancer = Balancer::start(cfg).await.unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    let mut events = balancer.events();
    assert_eq!(which_backend(addr).await.0, "b");
    let _listener = tokio::net::TcpListener::bind(port).await.unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    while seen.len() < 2 {
        tokio::select! {
            _ = &mut deadline => panic!("events so far: {seen:?}"),
            event = events.next() => seen.push(event.unwrap().unwrap()),
        }
    }
    assert!(
        matches!(&seen[0], Event::HostBad { host, reason, .. } if host == "flaky" && reason.contains("refused")),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[1], Event::HostBack { host, .. } if host == "flaky"),
        "{seen:?}"
    );
    let counters = balancer.stats().services[0].counters;
    assert_eq!(counters.accepted, 1);
    assert_eq!(counters.failovers, 1);
}

/// Every change made through the handle (as every surface makes them) is told:
/// hosts added, changed, admin-down, draining and removed, schedulers, groups,
/// and what a reload changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_emits_an_event() {
    let a = named_backend("a", Hold::Close).await;
    let b = named_backend("b", Hold::Close).await;
    let balancer = Balancer::start(config(SchedulerKind::RoundRobin, vec![host("a", a, 1)]))
        .await
        .unwrap();
    let mut events = balancer.events();
    let group = || ("svc".to_string(), "g".to_string());
    let (service, main) = group();
    balancer
        .apply(Command::AddHost {
            service,
            group: main,
            host: host("b", b, 1),
        })
        .await
        .unwrap();
    let (service, main) = group();
    balancer
        .apply(Command::SetScheduler {
            service,
            group: main,
            scheduler: SchedulerKind::LeastConns,
        })
        .await
        .unwrap();
    balancer
        .drain_host("svc", "g", "b", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let (service, main) = group();
    balancer
        .apply(Command::RemoveHost {
            service,
            group: main,
            host: "b".into(),
        })
        .await
        .unwrap();
    // A reload that changes a host's weight and adds a group.
    let mut reloaded = balancer.config();
    reloaded.services[0].groups[0].hosts.edit(0).weight = 5;
    let mut spare = reloaded.services[0].groups[0].clone();
    spare.name = "spare".into();
    reloaded.services[0].groups.push(spare);
    balancer
        .apply(Command::Replace(Box::new(reloaded)))
        .await
        .unwrap();

    let mut seen = Vec::new();
    while seen.len() < 7 {
        let next = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
        match next {
            Ok(Some(Ok(event))) => seen.push(event),
            other => panic!("after {seen:?}: {other:?}"),
        }
    }
    let names = |s: &str, g: &str, h: &str| (s.to_string(), g.to_string(), h.to_string());
    assert!(
        matches!(&seen[0], Event::HostAdded { service, group, host, address }
            if (service.clone(), group.clone(), host.clone()) == names("svc", "g", "b") && *address == b.to_string()),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[1], Event::SchedulerChanged { scheduler, .. } if scheduler == "leastc"),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[2], Event::HostAdminDown { host, down: true, .. } if host == "b"),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[3], Event::HostDraining { host, deadline_ms: Some(60_000), .. } if host == "b"),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[4], Event::HostRemoved { host, open: 0, .. } if host == "b"),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[5], Event::HostChanged { host, .. } if host == "a"),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[6], Event::GroupAdded { group, .. } if group == "spare"),
        "{seen:?}"
    );
    balancer.shutdown(Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_an_active_transfer() {
    let (balancer, addr) = start(vec![host("slow", slow_backend(15).await, 1)]).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut first = vec![0u8; 1024];
    client.read_exact(&mut first).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        first.len() + rest.len()
    });
    let started = Instant::now();
    balancer.shutdown(Duration::from_secs(10)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "returned before the transfer ended"
    );
    assert_eq!(reader.await.unwrap(), 15 * 64 * 1024);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_latency_and_picks_are_counted() {
    let (balancer, addr) = start(vec![host("e", echo_backend().await, 1)]).await;
    for _ in 0..5 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(2), || async {
            balancer.stats().host("svc", "g", "e").unwrap().stats.open == 0
        })
        .await
    );
    let stats = balancer
        .stats()
        .host("svc", "g", "e")
        .unwrap()
        .stats
        .clone();
    assert_eq!(stats.picks, 5);
    assert_eq!(stats.connect_latency.counts.iter().sum::<u64>(), 5);
    assert!(stats.connect_latency.sum_seconds > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_access_log_has_one_line_per_finished_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let mut cfg = config(
        SchedulerKind::RoundRobin,
        vec![host("e", echo_backend().await, 1)],
    );
    cfg.logging.access = Some(path.clone());
    cfg.logging.access_format = txlb::config::AccessFormat::Json;
    let balancer = Balancer::start(cfg).await.unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    for size in [10usize, 2_000, 70_000] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&vec![b'x'; size]).await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.unwrap();
        assert_eq!(back.len(), size);
    }
    let lines = || {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(5), || async { lines().len() == 3 }).await,
        "{:?}",
        lines()
    );
    let mut sizes = Vec::new();
    for line in lines() {
        let record: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(record["service"], "svc");
        assert_eq!(record["host"], "e");
        assert_eq!(record["bytes_in"], record["bytes_out"]);
        assert_eq!(record["ended"], "client-closed");
        assert_eq!(record["failovers"], 0);
        assert!(
            record["duration_seconds"].as_f64().unwrap()
                >= record["connect_seconds"].as_f64().unwrap()
        );
        sizes.push(record["bytes_in"].as_u64().unwrap());
    }
    sizes.sort();
    assert_eq!(sizes, vec![10, 2_000, 70_000]);
}

/// A routing listener set up in code (an embedding application's way): each
/// access log record names the service that served, what the client's first
/// bytes were and the route taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_clients_are_logged_with_what_they_sent_and_their_route() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let mut cfg = config(
        SchedulerKind::RoundRobin,
        vec![host("own", echo_backend().await, 1)],
    );
    let mut app = cfg.services[0].clone();
    app.name = "app".into();
    app.listeners.clear();
    app.groups[0].hosts = vec![host("a1", echo_backend().await, 1)].into();
    cfg.services.push(app);
    let mut route = txlb::config::Route::to("app");
    route.protocol = Some(txlb::config::ClientProtocol::Http);
    route.host = Some("app.example.com".into());
    cfg.services[0].listeners[0].routes = vec![route];
    cfg.logging.access = Some(path.clone());
    cfg.logging.access_format = txlb::config::AccessFormat::Json;
    let balancer = Balancer::start(cfg).await.unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    for first in [
        &b"GET / HTTP/1.1\r\nHost: App.Example.com:8080\r\n\r\n"[..],
        b"hello\n",
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(first).await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, first, "every byte reaches the host as sent");
    }
    let lines = || {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(5), || async { lines().len() == 2 }).await,
        "{:?}",
        lines()
    );
    let mut records = lines();
    records.sort_by_key(|r| r["service"].as_str().unwrap_or_default().to_string());
    assert_eq!(records[0]["service"], "app", "{records:?}");
    assert_eq!(records[0]["host"], "a1");
    assert_eq!(records[0]["protocol"], "http");
    assert_eq!(records[0]["route"], "protocol=http host=app.example.com");
    assert_eq!(records[1]["service"], "svc");
    assert_eq!(records[1]["protocol"], "other");
    assert_eq!(records[1]["route"], serde_json::Value::Null);
    let stats = balancer.stats();
    let hits = &stats.services[0].listeners[0].routes[0];
    assert_eq!((hits.service.as_str(), hits.hits), ("app", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_the_heartbeat_on_live() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        loop {
            let _ = listener.accept().await;
        }
    });
    let cfg = config(
        SchedulerKind::RoundRobin,
        vec![
            host("fading", port, 1),
            host("b", named_backend("b", Hold::Close).await, 1),
        ],
    );
    assert!(!cfg.manager.heartbeat.enable);
    let balancer = Balancer::start(cfg.clone()).await.unwrap();
    accepting.abort();
    let health = |b: &BalancerHandle| b.stats().host("svc", "g", "fading").unwrap().stats.health;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        health(&balancer),
        HostHealth::Up,
        "no heartbeat yet, no client: nobody noticed"
    );

    let mut reloaded = cfg;
    reloaded.manager.heartbeat.enable = true;
    reloaded.manager.heartbeat.interval = Duration::from_millis(200);
    balancer
        .apply(Command::Replace(Box::new(reloaded)))
        .await
        .unwrap();
    let noticed = eventually(Duration::from_secs(3), || {
        let b = balancer.clone();
        async move { health(&b) == HostHealth::Bad }
    })
    .await;
    assert!(noticed, "the heartbeat enabled by the reload never ran");
}

#[tokio::test]
async fn a_configuration_built_in_code_serves_and_its_mistakes_are_config_errors() {
    use txlb::config::{Config, GroupBuilder, ServiceBuilder};
    let a = txlb::demo::Backend::start("a").await.unwrap();
    let b = txlb::demo::Backend::start("b").await.unwrap();
    let config = Config::builder()
        .service(
            ServiceBuilder::new("web")
                .listen("127.0.0.1:0")
                .group(
                    GroupBuilder::new("spare", SchedulerKind::RoundRobin)
                        .host("a", &a.addr().to_string()),
                )
                .group(
                    GroupBuilder::new("main", SchedulerKind::Weighted).weighted_host(
                        "b",
                        &b.addr().to_string(),
                        2,
                    ),
                )
                .enable("main")
                .connect_timeout(Duration::from_secs(1)),
        )
        .build()
        .unwrap();
    assert_eq!(config.services[0].groups[1].hosts[0].weight, 2);
    let balancer = Balancer::start(config).await.unwrap();
    let addr = balancer.local_addr("web", None).unwrap();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.ends_with("Hello from b\n"), "{answer}");
    }
    balancer.shutdown(Duration::from_secs(1)).await;

    // A bad value names itself; a broken rule is the readers' own error.
    let bad_port = Config::builder()
        .service(ServiceBuilder::new("web").listen("127.0.0.1:http"))
        .build()
        .unwrap_err();
    assert_eq!(bad_port.location().unwrap().file.as_ref(), "<builder>");
    assert!(bad_port.message().contains("127.0.0.1:http"), "{bad_port}");
    let twice = Config::builder()
        .service(
            ServiceBuilder::new("web")
                .listen("127.0.0.1:0")
                .group(GroupBuilder::new("g", SchedulerKind::RoundRobin).host("a", "10.0.0.1:80"))
                .group(GroupBuilder::new("g", SchedulerKind::RoundRobin).host("b", "10.0.0.2:80")),
        )
        .build()
        .unwrap_err();
    assert!(twice.message().contains("\"g\""), "{twice}");
    let no_group = Config::builder()
        .service(ServiceBuilder::new("web").listen("127.0.0.1:0"))
        .build()
        .unwrap_err();
    assert_eq!(no_group.location().unwrap().file.as_ref(), "<builder>");
}

/// What a [`txlb::reload::Follower`] was asked to do, in order.
#[derive(Clone, Default)]
struct Steps(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Steps {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

/// Follows the file; refuses a configuration whose first group is named
/// `refused-by-follower`.
struct Recorder(Steps);

impl txlb::reload::Follower for Recorder {
    fn prepare<'a>(
        &'a mut self,
        config: &'a txlb::config::Config,
    ) -> txlb::reload::FollowFuture<'a> {
        let group = config.services[0].groups[0].name.clone();
        self.0.0.lock().unwrap().push(format!("prepare {group}"));
        Box::pin(async move {
            match group.as_str() {
                "refused-by-follower" => Err("the follower says no".to_string()),
                _ => Ok(()),
            }
        })
    }

    fn commit<'a>(&'a mut self, _: &'a BalancerHandle) -> txlb::reload::FollowFuture<'a> {
        self.0.0.lock().unwrap().push("commit".into());
        Box::pin(async { Ok(()) })
    }

    fn abandon(&mut self) {
        self.0.0.lock().unwrap().push("abandon".into());
    }
}

/// `BalancerHandle::reload`, the reload SIGHUP and the console call: the file
/// applied as a whole with its follower (prepare, then commit), or refused as a
/// whole (by the file, the controller or the follower), each outcome recorded;
/// without a file it says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_the_file_with_its_follower_or_refuses_it_whole() {
    let a = named_backend("a", Hold::Close).await;
    let b = named_backend("b", Hold::Close).await;
    let (no_file, _) = start(vec![host("a", a, 1)]).await;
    assert!(matches!(
        no_file.reload().await,
        Err(txlb::reload::ReloadError::NoFile)
    ));
    no_file.shutdown(Duration::from_secs(1)).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    let xml = |group: &str, hosts: &[(&str, std::net::SocketAddr)]| {
        format!(
            "<config>\n  <service name=\"svc\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
             <group name=\"{group}\" scheduler=\"roundr\" enable=\"true\">\n{}    </group>\n  \
             </service>\n</config>\n",
            host_lines(hosts)
        )
    };
    std::fs::write(&path, xml("g", &[("a", a)])).unwrap();
    let config = txlb::config::Config::from_path(&path).unwrap();
    let balancer = Balancer::start(config).await.unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    let file = balancer.config_file().unwrap().clone();
    assert_eq!(file.path(), path);
    assert!(file.write_back().is_none(), "no text given: no write-back");
    let steps = Steps::default();
    file.follow(Box::new(Recorder(steps.clone()))).await;

    // Applied with its follower: prepared, then committed.
    std::fs::write(&path, xml("g", &[("a", a), ("b", b)])).unwrap();
    let changes = balancer.reload().await.unwrap();
    assert!(changes.to_string().contains("hosts +1"), "{changes}");
    assert_eq!(steps.take(), ["prepare g", "commit"]);
    assert_eq!(distinct_names(addr, 4).await, ["a", "b"]);
    assert_eq!(file.status().last().unwrap().error, None);

    // A file that does not load: the follower is not asked.
    std::fs::write(&path, "<config><service").unwrap();
    let refused = balancer.reload().await.unwrap_err();
    assert!(matches!(refused, txlb::reload::ReloadError::Read(_)));
    assert!(steps.take().is_empty());
    let error = file.status().last().unwrap().error.unwrap();
    assert!(error.contains("lb.xml:1:"), "{error}");

    // Refused by the follower: nothing applied.
    std::fs::write(&path, xml("refused-by-follower", &[("a", a)])).unwrap();
    let refused = balancer.reload().await.unwrap_err();
    assert_eq!(refused.to_string(), "the follower says no");
    assert_eq!(steps.take(), ["prepare refused-by-follower"]);
    assert_eq!(distinct_names(addr, 4).await, ["a", "b"]);

    // Refused by the controller after the follower prepared (a listener on a
    // port another socket holds): it abandons, nothing applied.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = xml("g", &[("a", a)]).replace(
        "<listen ip=\"127.0.0.1:0\"/>",
        &format!("<listen ip=\"{}\"/>", busy.local_addr().unwrap()),
    );
    std::fs::write(&path, &taken).unwrap();
    let refused = balancer.reload().await.unwrap_err();
    assert!(
        matches!(refused, txlb::reload::ReloadError::Refused(_)),
        "{refused:?}"
    );
    assert_eq!(steps.take(), ["prepare g", "abandon"]);
    assert_eq!(distinct_names(addr, 4).await, ["a", "b"]);
    balancer.shutdown(Duration::from_secs(1)).await;
}

/// One byte through `client` and back.
async fn echoes(client: &mut TcpStream) {
    client.write_all(b"e").await.unwrap();
    let mut back = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut back))
        .await
        .expect("echoed")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_service_keeps_its_listening_socket() {
    // One worker: the listener is bound without SO_REUSEPORT, so binding its
    // address again for the renamed service was refused as in use; with
    // several, the old sockets closed and reset the clients in their queues.
    let cfg = config(
        SchedulerKind::RoundRobin,
        vec![host("a", echo_backend().await, 1)],
    );
    let balancer = Balancer::builder(cfg.clone())
        .workers(1)
        .start()
        .await
        .unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    let mut before = TcpStream::connect(addr).await.unwrap();
    echoes(&mut before).await;
    let mut renamed = cfg;
    renamed.services[0].name = "web".into();
    balancer
        .apply(Command::Replace(Box::new(renamed)))
        .await
        .unwrap();
    assert_eq!(balancer.local_addr("web", None), Some(addr));
    assert_eq!(balancer.local_addr("svc", None), None);
    let mut after = TcpStream::connect(addr).await.unwrap();
    echoes(&mut after).await;
    echoes(&mut before).await;
    // And back, with two workers' copies of the socket.
    let cfg2 = {
        let mut c = config(
            SchedulerKind::RoundRobin,
            vec![host("a", echo_backend().await, 1)],
        );
        c.services[0].name = "one".into();
        c
    };
    let balancer = Balancer::builder(cfg2.clone())
        .workers(2)
        .start()
        .await
        .unwrap();
    let addr = balancer.local_addr("one", None).unwrap();
    let mut renamed = cfg2;
    renamed.services[0].name = "two".into();
    balancer
        .apply(Command::Replace(Box::new(renamed)))
        .await
        .unwrap();
    assert_eq!(balancer.local_addr("two", None), Some(addr));
    for _ in 0..8 {
        let mut client = TcpStream::connect(addr).await.unwrap();
        echoes(&mut client).await;
    }
}
