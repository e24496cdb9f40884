//! No scheduler allocates while picking (issue 4): a counting global allocator
//! counts allocations made by this thread while it picks.
//! Its own test binary: the counting allocator is the process's global one.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use txlb::config::HostAddress;
use txlb::scheduler::{Candidates, SchedulerKind, build_group};
use txlb::scheduler::{HostId, HostPlace, HostSnapshot, HostStats, Hosts};

struct Counting;

thread_local! {
    /// Whether this thread's allocations are being counted, and how many.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // try_with: the allocator may run while thread locals are being torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: forwards to the system allocator; counting touches only const-initialised
// thread locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by this thread while running `f`.
fn allocations(f: impl FnOnce()) -> u64 {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    COUNT.with(|c| c.get())
}

fn group(n: usize) -> Hosts {
    (0..n)
        .map(|i| HostSnapshot {
            id: HostId(i as u64),
            name: Arc::from(format!("h{i}")),
            place: HostPlace::new("s", "g", &format!("h{i}")),
            address: HostAddress {
                host: format!("10.0.{}.{}", i / 256, i % 256),
                port: 80,
            },
            weight: 1 + (i % 4) as u32,
            maxconn: 0,
            proxy_protocol: None,
            tls: None,
            stats: HostStats::new(),
        })
        .collect()
}

#[test]
fn no_scheduler_allocates_per_pick() {
    // The allocator counts: a sanity check that this test can fail.
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 8]))) > 0);

    for n in [1usize, 3, 100, 1_000] {
        let hosts = group(n);
        // Every tenth host bad, one admin-down, one tried: the slow paths too.
        for host in hosts.iter().step_by(10) {
            host.stats.mark_bad("x");
        }
        hosts[n - 1].stats.set_admin_down(n > 1);
        let tried = [hosts[n / 2].id];
        for kind in SchedulerKind::ALL {
            for slow_start in [None, Some(Duration::from_secs(60))] {
                let s = build_group(kind, &hosts, slow_start);
                let pick_many = || {
                    for k in 0..300u32 {
                        let client =
                            SocketAddr::from((Ipv4Addr::from(k.wrapping_mul(2_654_435_761)), 1));
                        let c = Candidates::new(&hosts, &tried, Some(client));
                        std::hint::black_box(s.pick(&c));
                        let c = Candidates::new(&hosts, &[], None);
                        std::hint::black_box(s.pick(&c));
                    }
                };
                // Warm-up: first use of thread-local RNG state and the like.
                pick_many();
                let count = allocations(pick_many);
                assert_eq!(
                    count, 0,
                    "{kind} with {n} hosts (slow start {slow_start:?}) allocated {count} times"
                );
            }
        }
    }
}
