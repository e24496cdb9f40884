//! Large configurations: loading and validating 100,000 hosts is linear in time
//! and proportional to the model in memory, a reload keeps the admin plane
//! answering, and adding one host does not cost what the rest of the
//! configuration costs. The regression tests use bounds generous enough for a
//! debug build on a busy machine that a quadratic step still breaks them; the
//! `#[ignore]`d `measure` prints the figures (run it with `--release
//! --ignored --nocapture`).
//! Its own test binary: its counting allocator is the process's global one,
//! and its peak-memory figures would count other tests' allocations.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use txlb::config::{Config, HostAddress, HostConfig, SchedulerKind};
use txlb::{Balancer, Command};

/// The system allocator, counting the bytes live and their peak, so memory
/// can be asserted without reading `/proc` (which counts the whole process).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Every byte ever allocated.
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to the system allocator unchanged; only counters are
// updated around it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size(), Relaxed);
            let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(live, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            ALLOCATED.fetch_add(new_size, Relaxed);
            if new_size >= layout.size() {
                let grown = new_size - layout.size();
                let live = LIVE.fetch_add(grown, Relaxed) + grown;
                PEAK.fetch_max(live, Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Serializes the tests of this file: the allocator's counters are global.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Host `i`: a distinct name and address.
fn host_ip(i: usize) -> String {
    format!("10.{}.{}.{}:80", i >> 16 & 255, i >> 8 & 255, i & 255)
}

/// One service whose enabled group holds `n` hosts (the worst case for
/// per-group checks), as XML.
fn xml(n: usize) -> String {
    xml_with(n, "roundr")
}

/// The same, with the group's scheduler `scheduler`.
fn xml_with(n: usize, scheduler: &str) -> String {
    let mut x = String::with_capacity(64 * n + 256);
    x.push_str("<config>\n<service name=\"svc\">\n<listen ip=\"127.0.0.1:0\"/>\n");
    x.push_str(&format!(
        "<group name=\"g\" scheduler=\"{scheduler}\" enable=\"true\">\n"
    ));
    for i in 0..n {
        x.push_str(&format!("<host name=\"h{i}\" ip=\"{}\"/>\n", host_ip(i)));
    }
    x.push_str("</group>\n</service>\n</config>\n");
    x
}

/// The same configuration as TOML.
fn toml(n: usize) -> String {
    let mut t = String::with_capacity(64 * n + 256);
    t.push_str("[[service]]\nname = \"svc\"\nlisten = [\"127.0.0.1:0\"]\n");
    t.push_str(
        "[[service.group]]\nname = \"g\"\nscheduler = \"roundr\"\nenable = true\nhosts = [\n",
    );
    for i in 0..n {
        t.push_str(&format!(
            "{{ name = \"h{i}\", ip = \"{}\" }},\n",
            host_ip(i)
        ));
    }
    t.push_str("]\n");
    t
}

/// Loads `text` with `load`: how long it took and the heap's peak above what
/// was live before (the text itself excluded).
fn load(text: &str, load: fn(&str) -> Config) -> (Duration, usize, Config) {
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let start = Instant::now();
    let config = load(text);
    let took = start.elapsed();
    (took, PEAK.load(Relaxed) - before, config)
}

fn from_xml(text: &str) -> Config {
    Config::from_xml_str(text).unwrap()
}

fn from_toml(text: &str) -> Config {
    Config::from_toml_str(text).unwrap()
}

/// The heap the model itself holds, roughly: its strings and vectors.
fn model_bytes(config: &Config) -> usize {
    let hosts = &config.services[0].groups[0].hosts;
    hosts.len() * std::mem::size_of::<HostConfig>()
        + hosts
            .iter()
            .map(|h| h.name.capacity() + h.address.host.capacity())
            .sum::<usize>()
}

#[test]
fn a_100k_host_file_loads_in_linear_time_and_memory() {
    let _serial = SERIAL.blocking_lock();
    const N: usize = 100_000;
    for (format, text, reader) in [
        ("XML", xml(N), from_xml as fn(&str) -> Config),
        ("TOML", toml(N), from_toml),
    ] {
        let (took, peak, config) = load(&text, reader);
        assert_eq!(config.services[0].groups[0].hosts.len(), N);
        // Quadratic duplicate checks took minutes here; linear takes well under
        // a second in a release build.
        assert!(took < Duration::from_secs(10), "{format}: {took:?}");
        // The raw tree and the model, each a few hundred bytes a host: TOML
        // took about 9.6 KB a host.
        let per_host = peak / N;
        let model = model_bytes(&config) / N;
        let bound = if format == "XML" { 1_500 } else { 4_000 };
        assert!(
            per_host < bound,
            "{format}: {per_host} bytes a host at the peak (the model: {model})"
        );
    }
}

fn host(i: usize) -> HostConfig {
    let address: std::net::SocketAddr = host_ip(i).parse().unwrap();
    HostConfig {
        name: format!("n{i}"),
        address: HostAddress {
            host: address.ip().to_string(),
            port: address.port(),
        },
        weight: 1,
        options: Default::default(),
    }
}

/// Adds `count` hosts one by one to group `g`: the mean time of one.
/// CPU time this process has used (every thread).
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

async fn add_hosts(balancer: &txlb::BalancerHandle, from: usize, count: usize) -> Duration {
    let start = Instant::now();
    for i in from..from + count {
        balancer
            .apply(Command::AddHost {
                service: "svc".into(),
                group: "g".into(),
                host: host(i),
            })
            .await
            .unwrap();
    }
    start.elapsed() / count as u32
}

#[tokio::test]
async fn starting_and_adding_hosts_is_linear_in_the_configuration() {
    let _serial = SERIAL.lock().await;
    let start = Instant::now();
    let balancer = Balancer::start(from_xml(&xml(50_000))).await.unwrap();
    let started = start.elapsed();
    let each = add_hosts(&balancer, 1_000_000, 5).await;
    // Each snapshot looked every host's old address up by a scan of the
    // previous snapshot: seconds for each change at 50,000 hosts in a debug
    // build, where a linear build takes a few hundred milliseconds.
    assert!(
        start.elapsed() < Duration::from_secs(12),
        "started in {started:?}, one host added in {each:?}"
    );
    balancer.shutdown(Duration::ZERO).await;
}

/// Bytes allocated by one add-host (the mean of 10) to the group of `xml_with(n,
/// scheduler)`, managers off so that nothing else allocates meanwhile.
async fn bytes_per_add(n: usize, scheduler: &str) -> usize {
    let text = xml_with(n, scheduler).replace(
        "</config>",
        "<manager><hostCheck enable=\"false\"/><heartbeat enable=\"false\"/></manager></config>",
    );
    let balancer = Balancer::start(from_xml(&text)).await.unwrap();
    add_hosts(&balancer, 2_000_000, 1).await;
    let before = ALLOCATED.load(Relaxed);
    add_hosts(&balancer, 1_000_000, 10).await;
    let each = (ALLOCATED.load(Relaxed) - before) / 10;
    balancer.shutdown(Duration::ZERO).await;
    each
}

#[tokio::test]
async fn one_add_host_costs_the_same_in_a_group_of_1000_or_of_40000() {
    let _serial = SERIAL.lock().await;
    // Every add-host copied the group's hosts (configuration and snapshot):
    // about 200 bytes a host, 8 MB at 40,000. Now it copies a few chunks of
    // persistent lists; schedulers without tables (roundr, rand, p2c)
    // build nothing.
    for scheduler in ["roundr", "rand", "p2c"] {
        let small = bytes_per_add(1_000, scheduler).await;
        let big = bytes_per_add(40_000, scheduler).await;
        assert!(
            big < 2 * small + 64 * 1024,
            "{scheduler}: one add-host allocated {small} bytes at 1,000 hosts, {big} at 40,000"
        );
    }
}

#[tokio::test]
async fn a_host_added_to_a_big_table_group_serves_once_its_tables_are_built() {
    let _serial = SERIAL.lock().await;
    use common::Hold;
    // 1,200 hosts (past the point where tables are built after the change)
    // of weight 1 on backend "old"; then "new" with a weight that takes
    // nearly every client once the tables know it.
    let old = common::named_backend("old", Hold::Close).await;
    let new = common::named_backend("new", Hold::Close).await;
    for kind in [SchedulerKind::Weighted, SchedulerKind::WeightedRoundRobin] {
        let hosts = (0..1_200)
            .map(|i| common::host(&format!("h{i}"), old, 1))
            .collect();
        let balancer = Balancer::start(common::config(kind, hosts)).await.unwrap();
        let addr = balancer.local_addr("svc", None).unwrap();
        balancer
            .apply(Command::AddHost {
                service: "svc".into(),
                group: "g".into(),
                host: common::host("big", new, 1_000_000),
            })
            .await
            .unwrap();
        // Every client is served meanwhile (the running tables serve the
        // hosts they know), and within moments the new host takes them.
        let mut served_by_new = 0;
        let start = Instant::now();
        while served_by_new < 5 && start.elapsed() < Duration::from_secs(10) {
            let (name, _) = common::which_backend(addr).await;
            assert!(name == "old" || name == "new", "{kind}: {name:?}");
            served_by_new += usize::from(name == "new");
        }
        assert_eq!(served_by_new, 5, "{kind}: the new host never served");
        balancer.shutdown(Duration::ZERO).await;
    }
}

#[test]
fn saving_a_big_group_with_a_host_added_is_linear() {
    let _serial = SERIAL.blocking_lock();
    // Write-back looked each host of one list up in the other by a scan:
    // saving 80,000 hosts after one add-host took 30 s in a release build.
    let time = |n: usize, format: &str| {
        let (text, path) = match format {
            "XML" => (xml(n), "lb.xml"),
            _ => (toml(n), "lb.toml"),
        };
        let boot = match format {
            "XML" => from_xml(&text),
            _ => from_toml(&text),
        };
        let mut running = boot.clone();
        running.services[0].groups[0].hosts.push(host(9_000_000));
        let start = Instant::now();
        let path = std::path::Path::new(path);
        let rendered = txlb::config::writeback::render(path, &text, &boot, &running).unwrap();
        let took = start.elapsed();
        assert!(rendered.preserved, "{format}: edited in place");
        assert!(rendered.text.contains("\"n9000000\""), "{format}");
        took
    };
    for format in ["XML", "TOML"] {
        let small = time(4_000, format);
        let big = time(40_000, format);
        // Ten times the hosts: about ten times the time; a scan per host
        // makes it a hundred.
        assert!(
            big < small * 30 + Duration::from_millis(300),
            "{format}: 4,000 hosts saved in {small:?}, 40,000 in {big:?}"
        );
    }
}

/// Prints the figures: load times and peak heap per host for XML and TOML,
/// one add-host at several group sizes, and a reload.
#[tokio::test]
#[ignore]
async fn measure() {
    let _serial = SERIAL.lock().await;
    // Sizes can be chosen: `TXLB_MEASURE_LOAD=10000,40000 TXLB_MEASURE_ADD=1000`.
    let sizes = |var: &str, default: &[usize]| -> Vec<usize> {
        std::env::var(var).map_or_else(
            |_| default.to_vec(),
            |v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
        )
    };
    for n in sizes("TXLB_MEASURE_LOAD", &[10_000, 40_000, 80_000, 100_000]) {
        let (x, xp, _) = load(&xml(n), from_xml);
        let (t, tp, config) = load(&toml(n), from_toml);
        println!(
            "{n:>6} hosts: XML {x:>10.1?} {:>5} B/host peak, TOML {t:>10.1?} {:>5} B/host peak, model {:>4} B/host",
            xp / n,
            tp / n,
            model_bytes(&config) / n
        );
    }
    // Schedulers too: `TXLB_MEASURE_SCHEDULERS=roundr,hash` (tables are
    // rebuilt for every change; roundr has none).
    let schedulers = std::env::var("TXLB_MEASURE_SCHEDULERS").unwrap_or_else(|_| "roundr".into());
    let adds = sizes("TXLB_MEASURE_ADD", &[1_000, 5_000, 20_000, 80_000]);
    for (scheduler, n) in schedulers
        .split(',')
        .flat_map(|s| adds.iter().map(move |&n| (s.trim(), n)))
    {
        let balancer = Balancer::start(from_xml(&xml_with(n, scheduler)))
            .await
            .unwrap();
        let cpu = process_cpu();
        let each = add_hosts(&balancer, 1_000_000, 20).await;
        // CPU time as well as wall time: on a busy machine only the first is
        // the change's own.
        let cpu_each = (process_cpu() - cpu) / 20;
        let config = from_xml(&xml_with(n, scheduler));
        let start = Instant::now();
        balancer
            .apply(Command::Replace(Box::new(config)))
            .await
            .unwrap();
        let reload = start.elapsed();
        println!(
            "{scheduler:>8} {n:>6} hosts in the group: one add-host {each:>10.1?} ({cpu_each:>8.1?} CPU), reload {reload:>10.1?}"
        );
        balancer.shutdown(Duration::ZERO).await;
    }
}
