//! Each scheduler's distribution over three real backends through the balancer.

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use txlb::Balancer;
use txlb::scheduler::SchedulerKind;

/// Makes `n` connections, `parallel` at a time, and counts which backend answered.
async fn count_backends(balancer: SocketAddr, n: usize, parallel: usize) -> HashMap<String, usize> {
    let mut tasks = Vec::new();
    for worker in 0..parallel {
        let share = n / parallel + usize::from(worker < n % parallel);
        tasks.push(tokio::spawn(async move {
            let mut counts = HashMap::new();
            for _ in 0..share {
                let (name, _) = which_backend(balancer).await;
                *counts.entry(name).or_insert(0) += 1;
            }
            counts
        }));
    }
    let mut total = HashMap::new();
    for task in tasks {
        for (name, count) in task.await.unwrap() {
            *total.entry(name).or_insert(0) += count;
        }
    }
    total
}

async fn three_backends(
    scheduler: SchedulerKind,
    weights: [u32; 3],
) -> (txlb::BalancerHandle, SocketAddr) {
    let mut hosts = Vec::new();
    for (i, weight) in weights.into_iter().enumerate() {
        let name = format!("b{i}");
        hosts.push(host(&name, named_backend(&name, Hold::Close).await, weight));
    }
    let balancer = Balancer::start(config(scheduler, hosts)).await.unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    (balancer, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_exact() {
    let (_balancer, addr) = three_backends(SchedulerKind::RoundRobin, [1, 1, 1]).await;
    let mut sequence = Vec::new();
    for _ in 0..12 {
        sequence.push(which_backend(addr).await.0);
    }
    let first = sequence[..3].to_vec();
    let mut distinct = first.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{sequence:?}");
    for chunk in sequence.chunks(3) {
        assert_eq!(chunk, first.as_slice(), "{sequence:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_is_uniform_within_bounds() {
    let (_balancer, addr) = three_backends(SchedulerKind::Random, [1, 1, 1]).await;
    // 6,000 draws: each count is 2,000 ± 36.5 (one sigma); ±10% is over 5 sigma.
    let counts = count_backends(addr, 6_000, 16).await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (name, count) in &counts {
        assert!((1_800..=2_200).contains(count), "{name}: {counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_follows_weights_within_bounds() {
    let (_balancer, addr) = three_backends(SchedulerKind::Weighted, [1, 5, 1]).await;
    // Weights 1:5:1 over 14,000 draws: expected 2,000 / 10,000 / 2,000.
    let counts = count_backends(addr, 14_000, 16).await;
    let ratio = counts["b1"] as f64 / counts["b0"] as f64;
    assert!(
        (4.5..=5.5).contains(&ratio),
        "1:5 gave 1:{ratio:.2} {counts:?}"
    );
    let even = counts["b2"] as f64 / counts["b0"] as f64;
    assert!(
        (0.9..=1.1).contains(&even),
        "1:1 gave 1:{even:.2} {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_prefers_the_host_with_fewer_open() {
    let mut hosts = Vec::new();
    for name in ["b0", "b1", "b2"] {
        hosts.push(host(
            name,
            named_backend(name, Hold::UntilClientCloses).await,
            1,
        ));
    }
    let balancer = Balancer::start(config(SchedulerKind::LeastConns, hosts))
        .await
        .unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();

    // Six held connections spread 2/2/2.
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(which_backend(addr).await);
    }
    let mut per_host: HashMap<&str, usize> = HashMap::new();
    for (name, _) in &held {
        *per_host.entry(name.as_str()).or_insert(0) += 1;
    }
    assert_eq!(
        per_host.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "{per_host:?}"
    );

    // Close both connections of one host: every new connection goes there until it
    // has caught up.
    for round in 0..3 {
        let target = ["b0", "b1", "b2"][round];
        let before = held.len();
        held.retain(|(name, _)| name != target);
        assert_eq!(held.len(), before - 2);
        let stats_ok = eventually(Duration::from_secs(5), || {
            let b = balancer.clone();
            async move { b.stats().host("svc", "g", target).unwrap().stats.open == 0 }
        })
        .await;
        assert!(stats_ok, "open count of {target} never dropped");
        for _ in 0..2 {
            let (name, stream) = which_backend(addr).await;
            assert_eq!(name, target, "round {round}");
            held.push((name, stream));
        }
    }
}
