//! An application's own scheduler: `Last` always picks the last available host
//! (a stand-in for a policy only the application knows, like "the newest
//! deployment"). It implements the same `Scheduler` trait as the built-in ones,
//! sees the candidates through `Candidates` (bad, admin-down and tried hosts are
//! already hidden) and allocates nothing per pick.
//!
//! Run: `cargo run --example custom_scheduler`. It starts three backends and a
//! balancer, sends six connections, prints where each went, and exits.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use txlb::config::Config;
use txlb::demo::Backend;
use txlb::scheduler::{Candidates, Scheduler, SchedulerKind};

/// Picks the last candidate in configuration order.
#[derive(Debug)]
struct Last;

impl Scheduler for Last {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        (0..candidates.hosts().len())
            .rev()
            .find(|&i| candidates.is_candidate(i))
    }
}

/// The demo configuration (service `demo`, hosts demo-1…3) with our scheduler.
fn config(backends: &[Backend]) -> Config {
    let mut config = txlb::demo::demo_config(SocketAddr::from(([127, 0, 0, 1], 0)), backends);
    config.services[0].groups[0].scheduler = SchedulerKind::Custom("last");
    config
}

async fn get(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("balancer answers");
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET / HTTP/1.0\r\n\r\n")
        .await
        .expect("request sent");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response read");
    response.lines().last().unwrap_or_default().to_string()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut backends = Vec::new();
    for i in 1..=3 {
        backends.push(Backend::start(&format!("demo-{i}")).await?);
    }
    let balancer = txlb::Balancer::builder(config(&backends))
        .scheduler("last", |_hosts| Box::new(Last))
        .start()
        .await?;
    let addr = balancer.local_addr("demo", None).ok_or("no listener")?;
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(get(addr).await);
    }
    for answer in &answers {
        println!("{answer}");
    }
    balancer.shutdown(Duration::from_secs(1)).await;
    if answers.iter().all(|a| a == "Hello from demo-3") {
        println!("custom scheduler honoured: every connection went to the last host");
        Ok(())
    } else {
        Err("a connection went elsewhere".into())
    }
}
