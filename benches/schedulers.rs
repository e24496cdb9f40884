//! Scheduler pick cost, for every scheduler, with 3, 100 and 1,000 hosts, all up
//! and with 10% bad.
//!
//! Informs issue 4's target: a pick costs at most 50 ns with 1,000 hosts, for
//! every scheduler, without allocating (`tests/no_alloc_pick.rs` checks the
//! allocations). It decided that `weightr` uses an alias table rather than a
//! binary search over cumulative weights, that `wleastc` shares `leastc`'s
//! tournament tree rather than scanning, and that `wrr` precomputes its cycle.
//!
//! Also measured: a pick plus opening and closing the connection (what `leastc`
//! and `wleastc` pay to keep their tree current), the cost of a group's
//! `slowStart` check when no host is ramping, and the cost of building each
//! scheduler's tables (paid by the controller for every snapshot).
//!
//! Run: `cargo bench --bench schedulers` (`-- hash/1000` to filter).

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use txlb::config::HostAddress;
use txlb::scheduler::{Candidates, Scheduler, SchedulerKind, build, build_group};
use txlb::scheduler::{ConnectionGuard, HostId, HostPlace, HostSnapshot, HostStats, Hosts};

/// `n` hosts with weights 1..=5; every tenth host bad when `bad`.
fn group(n: usize, bad: bool) -> Hosts {
    (0..n)
        .map(|i| {
            let stats = HostStats::new();
            if bad && i % 10 == 3 {
                stats.mark_bad("bench");
            }
            HostSnapshot {
                id: HostId(i as u64),
                name: Arc::from(format!("h{i}")),
                place: HostPlace::new("s", "g", &format!("h{i}")),
                address: HostAddress {
                    host: format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                    port: 80,
                },
                weight: 1 + (i % 5) as u32,
                maxconn: 0,
                proxy_protocol: None,
                tls: None,
                stats,
            }
        })
        .collect()
}

/// A different client address on every call (a Weyl sequence over IPv4), so
/// `hash` is not measured on one cached slot.
fn clients() -> impl FnMut() -> SocketAddr {
    let mut k = 0u32;
    move || {
        k = k.wrapping_add(0x9e37_79b9);
        SocketAddr::from((Ipv4Addr::from(k), 40_000))
    }
}

fn pick(c: &mut Criterion) {
    for bad in [false, true] {
        let mut g = c.benchmark_group(if bad { "pick_10pct_bad" } else { "pick" });
        for n in [3usize, 100, 1_000] {
            let hosts = group(n, bad);
            for kind in SchedulerKind::ALL {
                let scheduler = build(kind, &hosts);
                let mut client = clients();
                g.bench_with_input(BenchmarkId::new(kind.name(), n), &n, |b, _| {
                    b.iter(|| {
                        let c = Candidates::new(&hosts, &[], Some(client()));
                        black_box(scheduler.pick(black_box(&c)))
                    })
                });
            }
        }
        g.finish();
    }
}

fn pick_and_connect(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick_open_close");
    let hosts = group(1_000, false);
    for kind in SchedulerKind::ALL {
        let scheduler = build(kind, &hosts);
        let mut client = clients();
        g.bench_function(BenchmarkId::new(kind.name(), 1_000), |b| {
            b.iter(|| {
                let c = Candidates::new(&hosts, &[], Some(client()));
                let i = scheduler.pick(&c).unwrap_or(0);
                // Opening and closing replay the tree path for leastc / wleastc.
                drop(black_box(ConnectionGuard::new(hosts[i].stats.clone())));
            })
        });
    }
    g.finish();
}

fn slow_start_idle(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick_slow_start_idle");
    let hosts = group(1_000, false);
    // A 1 ns period: configured, but no host is ramping, so picks take the fast
    // path after the check.
    let period = Some(Duration::from_nanos(1));
    for kind in SchedulerKind::ALL
        .into_iter()
        .filter(|k| k.honours_slow_start())
    {
        let scheduler: Box<dyn Scheduler> = build_group(kind, &hosts, period);
        let mut client = clients();
        g.bench_function(BenchmarkId::new(kind.name(), 1_000), |b| {
            b.iter(|| {
                let c = Candidates::new(&hosts, &[], Some(client()));
                black_box(scheduler.pick(black_box(&c)))
            })
        });
    }
    g.finish();
}

/// What the controller pays per group and snapshot (off the data path): the
/// Maglev table and the wrr cycle dominate.
fn build_cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    for n in [100usize, 1_000] {
        let hosts = group(n, false);
        for kind in SchedulerKind::ALL {
            g.bench_with_input(BenchmarkId::new(kind.name(), n), &n, |b, _| {
                b.iter(|| black_box(build(kind, &hosts)))
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = pick, pick_and_connect, slow_start_idle, build_cost
}
criterion_main!(benches);
