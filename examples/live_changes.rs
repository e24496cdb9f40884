//! Changing a running balancer while traffic flows: add a host, drain one, remove
//! it, switch the scheduler; every change is a `Command` applied through the
//! handle, and the events stream reports what happened.
//!
//! Run: `cargo run --example live_changes`. It prints the events and the share of
//! requests each host got in each phase, and exits non-zero if any client failed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use txlb::Command;
use txlb::demo::Backend;
use txlb::scheduler::SchedulerKind;

async fn get(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response.lines().last().unwrap_or_default().to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut backends = Vec::new();
    for i in 1..=3 {
        backends.push(Backend::start(&format!("demo-{i}")).await?);
    }
    // Start with two hosts; the third joins later.
    let balancer = txlb::Balancer::start(txlb::demo::demo_config(any, &backends[..2])).await?;
    let addr = balancer.local_addr("demo", None).ok_or("no listener")?;
    let mut events = balancer.events();
    let printer = tokio::spawn(async move {
        while let Some(Ok(event)) = events.next().await {
            println!(
                "event: {}",
                serde_json::to_string(&event).unwrap_or_default()
            );
        }
    });

    // Clients keep coming the whole time; failures are counted.
    let seen: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let failures = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (seen, failures, running) = (seen.clone(), failures.clone(), running.clone());
        clients.push(tokio::spawn(async move {
            while running.load(Relaxed) {
                match get(addr).await {
                    Ok(answer) => *seen.lock().await.entry(answer).or_default() += 1,
                    Err(_) => {
                        failures.fetch_add(1, Relaxed);
                    }
                }
            }
        }));
    }
    let phase = |name: &'static str| {
        let seen = seen.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut seen = seen.lock().await;
            println!("{name}: {:?}", *seen);
            seen.clear();
        }
    };
    phase("two hosts").await;
    balancer
        .apply(Command::AddHost {
            service: "demo".into(),
            group: "demo".into(),
            host: backends[2].host(),
        })
        .await?;
    phase("demo-3 added").await;
    balancer
        .drain_host("demo", "demo", "demo-1", Some(Duration::from_secs(1)))
        .await?;
    phase("demo-1 draining").await;
    balancer
        .apply(Command::RemoveHost {
            service: "demo".into(),
            group: "demo".into(),
            host: "demo-1".into(),
        })
        .await?;
    balancer
        .apply(Command::SetScheduler {
            service: "demo".into(),
            group: "demo".into(),
            scheduler: SchedulerKind::LeastConns,
        })
        .await?;
    phase("demo-1 removed, leastc").await;

    running.store(false, Relaxed);
    for client in clients {
        client.await?;
    }
    balancer.shutdown(Duration::from_secs(2)).await;
    printer.abort();
    let failed = failures.load(Relaxed);
    println!("client failures: {failed}");
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("{failed} clients failed").into())
    }
}
