//! txlb's schedulers beyond txLoadBalancer's (`p2c`, `wleastc`, `wrr`, `hash`) and
//! `slowStart`, observed with real connections through the balancer.

use crate::common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use txlb::Command;
use txlb::config::Config;
use txlb::config::HostAddress;
use txlb::scheduler::{
    Candidates, HostId, HostPlace, HostSnapshot, HostStats, Hosts, SchedulerKind, build,
};
use txlb::{Balancer, BalancerHandle};

/// Backends `b0`, `b1`, … with these weights, behind a balancer whose group `g`
/// uses `scheduler`; `edit` may change the configuration first.
async fn start(
    scheduler: SchedulerKind,
    weights: &[u32],
    hold: Hold,
    edit: impl FnOnce(&mut Config),
) -> (BalancerHandle, SocketAddr, Vec<SocketAddr>) {
    let mut hosts = Vec::new();
    let mut backends = Vec::new();
    for (i, &weight) in weights.iter().enumerate() {
        let name = format!("b{i}");
        let addr = named_backend(&name, hold).await;
        backends.push(addr);
        hosts.push(host(&name, addr, weight));
    }
    let mut config = config(scheduler, hosts);
    edit(&mut config);
    let balancer = Balancer::start(config).await.unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    (balancer, addr, backends)
}

/// Reads the backend's name line from a connected stream.
async fn read_name(mut stream: TcpStream) -> (String, TcpStream) {
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

/// Connects from `from` (a loopback address other than 127.0.0.1 gives the
/// balancer another client address) and reads the backend's name.
async fn which_backend_from(balancer: SocketAddr, from: Ipv4Addr) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    let stream = socket.connect(balancer).await.unwrap();
    read_name(stream).await.0
}

fn tally<'a>(names: impl IntoIterator<Item = &'a String>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for name in names {
        *counts.entry(name.clone()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_keeps_held_connections_even_and_idle_ones_uniform() {
    let (_b, addr, _) = start(
        SchedulerKind::PowerOfTwo,
        &[1, 1, 1],
        Hold::UntilClientCloses,
        |_| {},
    )
    .await;
    // Held connections: a host with more open than both others is never picked,
    // so the spread stays small. Simulated, 60 connections end with a spread
    // above 6 once in 200,000 runs; uniform random does in more than half.
    let mut held = Vec::new();
    for _ in 0..60 {
        held.push(which_backend(addr).await);
    }
    let counts = tally(held.iter().map(|(n, _)| n));
    assert_eq!(counts.len(), 3, "{counts:?}");
    let (min, max) = (
        counts.values().min().unwrap(),
        counts.values().max().unwrap(),
    );
    assert!(max - min <= 6, "{counts:?}");
    drop(held);

    // Connections that close at once: every host ties at (about) zero open, and
    // the first of two random draws wins, so p2c is uniform.
    let (_b, addr, _) = start(SchedulerKind::PowerOfTwo, &[1, 1, 1], Hold::Close, |_| {}).await;
    let mut names = Vec::new();
    for _ in 0..1_500 {
        names.push(which_backend(addr).await.0);
    }
    let counts = tally(&names);
    for (name, count) in &counts {
        assert!((400..=600).contains(count), "{name}: {counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wleastc_fills_hosts_in_proportion_to_weight() {
    let (balancer, addr, _) = start(
        SchedulerKind::WeightedLeastConns,
        &[1, 2, 3],
        Hold::UntilClientCloses,
        |_| {},
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..60 {
        held.push(which_backend(addr).await);
    }
    // Each pick goes to the fewest open per weight; a host's open count goes up
    // before its connect, so sequential connections fill exactly 10 / 20 / 30.
    let counts = tally(held.iter().map(|(n, _)| n));
    assert_eq!(
        (counts["b0"], counts["b1"], counts["b2"]),
        (10, 20, 30),
        "{counts:?}"
    );

    // Closing five on b2 makes it the least loaded per weight: the next five
    // connections go there.
    let mut closed = 0;
    held.retain(|(name, _)| {
        let close = name == "b2" && closed < 5;
        closed += usize::from(close);
        !close
    });
    let drained = eventually(Duration::from_secs(5), || {
        let b = balancer.clone();
        async move { b.stats().host("svc", "g", "b2").unwrap().stats.open == 25 }
    })
    .await;
    assert!(drained, "b2's open count never dropped to 25");
    for _ in 0..5 {
        let (name, stream) = which_backend(addr).await;
        assert_eq!(name, "b2");
        held.push((name, stream));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrr_follows_the_smooth_sequence() {
    let (balancer, addr, _) = start(
        SchedulerKind::WeightedRoundRobin,
        &[5, 1, 1],
        Hold::Close,
        |_| {},
    )
    .await;
    let mut sequence = String::new();
    for _ in 0..21 {
        let name = which_backend(addr).await.0;
        sequence.push(match name.as_str() {
            "b0" => 'a',
            "b1" => 'b',
            _ => 'c',
        });
    }
    assert_eq!(sequence, "aabacaa".repeat(3));

    // b0 out: the others keep alternating.
    balancer
        .apply(Command::SetAdminDown {
            service: "svc".into(),
            group: "g".into(),
            host: "b0".into(),
            down: true,
        })
        .await
        .unwrap();
    let mut rest = Vec::new();
    for _ in 0..8 {
        rest.push(which_backend(addr).await.0);
    }
    for pair in rest.chunks(2) {
        assert_ne!(pair[0], pair[1], "{rest:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_keeps_each_client_address_on_one_host() {
    let weights = [1, 1, 1, 1];
    let (balancer, addr, backends) =
        start(SchedulerKind::Hash, &weights, Hold::Close, |_| {}).await;
    let clients: Vec<Ipv4Addr> = (10..40).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();

    // Same client address, same host, every time.
    let mut home = HashMap::new();
    for &client in &clients {
        let first = which_backend_from(addr, client).await;
        for _ in 0..4 {
            assert_eq!(which_backend_from(addr, client).await, first, "{client}");
        }
        home.insert(client, first);
    }
    let used = tally(home.values());
    assert!(used.len() >= 3, "30 addresses on only {used:?}");

    // An independently built scheduler over the same hosts (another txlb
    // instance) agrees on every client.
    let hosts: Hosts = backends
        .iter()
        .enumerate()
        .map(|(i, b)| HostSnapshot {
            id: HostId(100 + i as u64),
            name: format!("other-{i}").into(),
            place: HostPlace::new("s", "g", &format!("other-{i}")),
            address: HostAddress {
                host: b.ip().to_string(),
                port: b.port(),
            },
            weight: 1,
            maxconn: 0,
            proxy_protocol: None,
            tls: None,
            stats: HostStats::new(),
        })
        .collect();
    let other = build(SchedulerKind::Hash, &hosts);
    for (&client, name) in &home {
        let from = SocketAddr::new(IpAddr::V4(client), 40_000);
        let predicted = other
            .pick(&Candidates::new(&hosts, &[], Some(from)))
            .unwrap();
        assert_eq!(&format!("b{predicted}"), name, "{client}");
    }

    // One host out: only its clients move, each consistently; back in: they
    // return.
    let (down, _) = used.iter().max_by_key(|(_, c)| **c).unwrap();
    let down = down.clone();
    let set = |down_now: bool| Command::SetAdminDown {
        service: "svc".into(),
        group: "g".into(),
        host: down.clone(),
        down: down_now,
    };
    balancer.apply(set(true)).await.unwrap();
    for &client in &clients {
        let now = which_backend_from(addr, client).await;
        if home[&client] == down {
            assert_ne!(now, down);
            assert_eq!(which_backend_from(addr, client).await, now, "{client}");
        } else {
            assert_eq!(now, home[&client], "{client} moved though its host is up");
        }
    }
    balancer.apply(set(false)).await.unwrap();
    for &client in &clients {
        assert_eq!(which_backend_from(addr, client).await, home[&client]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_ramps_a_returning_host() {
    let ramp = Duration::from_secs(2);
    let (balancer, addr, _) = start(
        SchedulerKind::WeightedRoundRobin,
        &[1, 1, 1],
        Hold::Close,
        |c| {
            c.services[0].groups[0].options.slow_start = Some(ramp);
        },
    )
    .await;
    let set = |down: bool| Command::SetAdminDown {
        service: "svc".into(),
        group: "g".into(),
        host: "b0".into(),
        down,
    };
    // Every host ramps from its creation: let that ramp end first.
    tokio::time::sleep(ramp).await;
    balancer.apply(set(true)).await.unwrap();
    balancer.apply(set(false)).await.unwrap();
    let back = Instant::now();

    // Share of b0 in consecutive windows after it came back. Its turns are kept
    // with probability = its share, from ~3% to 100% over the ramp.
    let mut windows: Vec<(usize, usize)> = vec![(0, 0); 6];
    let window = ramp / 4;
    while back.elapsed() < ramp + 2 * window {
        let i = (back.elapsed().as_micros() / window.as_micros()) as usize;
        let name = which_backend(addr).await.0;
        if let Some(w) = windows.get_mut(i) {
            w.0 += usize::from(name == "b0");
            w.1 += 1;
        }
    }
    let share: Vec<f64> = windows
        .iter()
        .map(|&(b0, all)| b0 as f64 / all.max(1) as f64)
        .collect();
    eprintln!("b0's share per window: {share:.3?} of {windows:?}");
    assert!(
        windows.iter().all(|&(_, all)| all >= 20),
        "too few connections: {windows:?}"
    );
    // First quarter: b0's share averages ~13% of a full one: it gets a few % of
    // connections instead of a third.
    assert!(share[0] < 0.15, "{share:?}");
    // Rising through the ramp.
    assert!(share[0] < share[2] && share[1] < share[3], "{share:?}");
    // After the ramp: a full third.
    assert!((0.25..=0.42).contains(&share[5]), "{share:?}");
}
