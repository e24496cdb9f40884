//! A web application that load-balances its own backends in-process, the heir of
//! txLoadBalancer's `txlbWeb.tac`: three HTTP backends on their own ports, a txlb
//! service in front of them, and the application's site on one more port with
//! txlb's admin pages nested under `/admin` — one process, no daemon.
//!
//! Run: `cargo run --example embedded_web` makes a few requests and exits;
//! `cargo run --example embedded_web -- --serve` keeps running and prints the
//! addresses to open in a browser.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use txlb::config::{Config, GroupConfig, ServiceConfig, parse_listen_addr};
use txlb::demo::Backend;
use txlb::scheduler::SchedulerKind;

fn config(backends: &[Backend]) -> Result<Config, Box<dyn std::error::Error>> {
    let hosts = backends.iter().map(Backend::host).collect();
    Ok(Config::new(vec![ServiceConfig {
        name: "site".into(),
        listeners: vec![parse_listen_addr("127.0.0.1:0")?],
        groups: vec![GroupConfig::new("web", SchedulerKind::RoundRobin, hosts)],
        enabled_group: "web".into(),
        connect_timeout: Duration::from_secs(3),
        options: Default::default(),
    }]))
}

/// A minimal HTTP/1.0 GET, returning the body.
async fn fetch(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let serve = std::env::args().any(|a| a == "--serve");
    let mut backends = Vec::new();
    for name in ["web-1", "web-2", "web-3"] {
        backends.push(Backend::start(name).await?);
    }
    let balancer = txlb::Balancer::start(config(&backends)?).await?;
    let front = balancer.local_addr("site", None).ok_or("no listener")?;

    // The application's own site, with txlb's admin pages nested in it. There are
    // no admin users here, so it listens on loopback only and lets everyone in.
    let admin = txlb::admin::router(
        balancer.clone(),
        txlb::admin::AdminSettings {
            open_without_users: true,
            ..Default::default()
        },
    );
    let app = Router::new()
        .route("/", get(|| async { "The application's own home page\n" }))
        .nest("/admin", admin);
    let site = TcpListener::bind("127.0.0.1:0").await?;
    let site_addr = site.local_addr()?;
    tokio::spawn(async move { axum::serve(site, app).await });

    println!("balanced site:   http://{front}/");
    println!("application:     http://{site_addr}/  (txlb admin at /admin/)");
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(fetch(front, "/").await?.trim().to_string());
    }
    println!("through the balancer: {answers:?}");
    println!("application home: {}", fetch(site_addr, "/").await?.trim());
    let running = fetch(site_addr, "/admin/running.txt").await?;
    println!("admin running.txt:\n{running}");
    if serve {
        println!("serving; press Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    balancer.shutdown(Duration::from_secs(1)).await;
    let mut distinct = answers.clone();
    distinct.sort();
    distinct.dedup();
    if distinct.len() != 3 || !running.contains("web-2") {
        return Err("the balancer did not rotate over the three backends".into());
    }
    Ok(())
}
