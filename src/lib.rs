//! # txlb: a TCP load balancer
//!
//! txlb accepts TCP clients on a service's listeners, picks a host of the service's
//! enabled group with the group's scheduler, and copies bytes both ways. A host that
//! refuses is marked bad and the client is tried on another host; managers re-probe
//! bad hosts and put them back. It reads txLoadBalancer 1.1's XML configuration
//! unchanged, and the same model in TOML.
//!
//! The `txlb` command is a thin layer over this library's public API. An
//! application can run the same balancer in-process, on its own tokio runtime, and
//! steer it: this page is the guide.
//!
//! ## A balancer in your application
//!
//! A [`Config`](config::Config) is a list of services: a service has listeners
//! and groups, a group has a scheduler and hosts, and one group of each service is
//! enabled. Build one in code ([`Config::builder`](config::Config::builder); the
//! model's fields are public too), start it with [`Balancer::start`], and talk to it
//! through the returned [`BalancerHandle`]. Here the hosts are in-process HTTP
//! services ([`demo::Backend`]), and the listener takes a free port of the
//! loopback address:
//!
//! ```
//! use std::time::Duration;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use txlb::config::{Config, GroupBuilder, ServiceBuilder};
//! use txlb::demo::Backend;
//! use txlb::scheduler::SchedulerKind;
//!
//! /// One HTTP/1.0 request; returns the last line of the answer.
//! async fn get(addr: std::net::SocketAddr) -> std::io::Result<String> {
//!     let mut stream = tokio::net::TcpStream::connect(addr).await?;
//!     stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
//!     let mut answer = String::new();
//!     stream.read_to_string(&mut answer).await?;
//!     Ok(answer.lines().last().unwrap_or_default().to_string())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backends = [Backend::start("web-1").await?, Backend::start("web-2").await?];
//! let mut web = GroupBuilder::new("web", SchedulerKind::RoundRobin);
//! for backend in &backends {
//!     web = web.host(backend.name(), &backend.addr().to_string());
//! }
//! // Checked by the rules a file is checked by: a mistake is a `ConfigError`.
//! let config = Config::builder()
//!     .service(ServiceBuilder::new("site").listen("127.0.0.1:0").group(web))
//!     .build()?;
//!
//! let balancer = txlb::Balancer::start(config).await?;
//! let addr = balancer.local_addr("site", None).expect("site listens");
//! let mut answers = vec![get(addr).await?, get(addr).await?];
//! answers.sort();
//! assert_eq!(answers, ["Hello from web-1", "Hello from web-2"]);
//!
//! // Counters are a plain, serialisable copy.
//! let stats = balancer.stats();
//! assert_eq!(stats.host("site", "web", "web-1").unwrap().stats.total, 1);
//!
//! // Stop accepting, let open connections finish for up to 5 s, close the rest.
//! balancer.shutdown(Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
//!
//! Hosts are socket addresses or host names; the balancer resolves names itself,
//! when a configuration or change brings them and again as each answer's TTL runs
//! out (kept within the `<resolver>`'s `minTtl`..`maxTtl`, or every host's
//! `resolve` seconds; a probe of a host whose name never resolved asks the
//! system resolver), and
//! [`HostAddress::resolve`](config::HostAddress::resolve) shows what a name gives.
//! [`Balancer::builder`] has more settings than the configuration: data-path
//! worker threads, inherited listening sockets, and the application's schedulers.
//!
//! ## From a file or a string
//!
//! [`Config::from_path`](config::Config::from_path) reads a file (TOML when its
//! name ends in `.toml`, txLoadBalancer XML otherwise);
//! [`Config::from_xml_str`](config::Config::from_xml_str) and
//! [`Config::from_toml_str`](config::Config::from_toml_str) read text. A refused
//! configuration is a [`ConfigError`](config::ConfigError) that says where:
//!
//! ```
//! use txlb::config::Config;
//!
//! let config = Config::from_xml_str(
//!     r#"<config>
//!          <service name="site">
//!            <listen ip="127.0.0.1:0"/>
//!            <group name="blue" scheduler="leastc" enable="true">
//!              <host name="web-1" ip="127.0.0.1:8001"/>
//!            </group>
//!          </service>
//!        </config>"#,
//! )?;
//! assert_eq!(config.services[0].groups[0].hosts[0].address.port, 8001);
//!
//! let error = Config::from_toml_str("[[service]]\nname = 7\n").unwrap_err();
//! assert_eq!(error.location().map(|at| at.line), Some(2));
//! # Ok::<(), txlb::config::ConfigError>(())
//! ```
//!
//! ## Steering a running balancer
//!
//! Every change is a [`Command`] given to [`BalancerHandle::apply`], checked like
//! a reload (a refused command changes nothing and says why in a
//! [`ControlError`]). Handles are cheap clones. [`BalancerHandle::events`] is an
//! [`events::EventStream`] of [`events::Event`]s: every change made through any
//! surface (services, groups, hosts, schedulers, users, admin-down, draining) and
//! every transition (hosts going bad and coming back, groups switched, backup
//! groups, listeners).
//!
//! ```
//! # use std::time::Duration;
//! use txlb::config::GroupConfig;
//! use txlb::demo::{Backend, demo_config};
//! use txlb::events::Event;
//! use txlb::scheduler::SchedulerKind;
//! use txlb::{Command, HostHealth};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (blue, green) = (Backend::start("blue-1").await?, Backend::start("green-1").await?);
//! // Service "demo", group "demo" over blue-1, on a free port.
//! let balancer = txlb::Balancer::start(demo_config(([127, 0, 0, 1], 0).into(), &[blue])).await?;
//! let mut events = balancer.events();
//!
//! // A second group, then switch traffic to it.
//! let green_group = GroupConfig::new("green", SchedulerKind::Random, vec![green.host()]);
//! balancer
//!     .apply(Command::AddGroup { service: "demo".into(), group: Box::new(green_group) })
//!     .await?;
//! balancer
//!     .apply(Command::EnableGroup { service: "demo".into(), group: "green".into() })
//!     .await?;
//! let added = events.next().await.expect("an event")?;
//! assert_eq!(added, Event::GroupAdded { service: "demo".into(), group: "green".into() });
//! let enabled = events.next().await.expect("an event")?;
//! assert_eq!(enabled, Event::GroupEnabled { service: "demo".into(), group: "green".into() });
//!
//! // Take a host out of rotation and back; refused changes say why.
//! let down = |down| Command::SetAdminDown {
//!     service: "demo".into(),
//!     group: "green".into(),
//!     host: "green-1".into(),
//!     down,
//! };
//! balancer.apply(down(true)).await?;
//! let health = balancer.stats().host("demo", "green", "green-1").unwrap().stats.health.clone();
//! assert_eq!(health, HostHealth::AdminDown);
//! balancer.apply(down(false)).await?;
//! let refused = balancer
//!     .apply(Command::RemoveHost { service: "demo".into(), group: "green".into(), host: "green-1".into() })
//!     .await;
//! assert!(matches!(refused, Err(txlb::ControlError::LastHostOfEnabledGroup { .. })));
//!
//! balancer.shutdown(Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```
//!
//! [`BalancerHandle::reload`] reads the file the configuration came from again
//! and applies it as a whole or refuses it as a whole, as SIGHUP does in the
//! `txlb` command ([`reload`] says what follows it and what it records).
//!
//! [`BalancerHandle::drain_host`] takes a host out of rotation and, after a
//! deadline, closes what is still open on it; [`BalancerHandle::connections`]
//! lists open connections and UDP sessions and
//! [`BalancerHandle::close_connection`] cuts one.
//!
//! ## Your own scheduler
//!
//! A [`Scheduler`](scheduler::Scheduler) picks a host for each new client. It
//! sees the group's hosts with their counters through
//! [`Candidates`](scheduler::Candidates), which already hides hosts that are
//! bad, admin-down, full or tried for this client. Register a factory under a
//! name with [`BalancerBuilder::scheduler`] and name it in a group with
//! [`SchedulerKind::Custom`](scheduler::SchedulerKind::Custom). Picks must not
//! allocate: tables belong in the factory, which runs off the data path.
//!
//! ```
//! # use std::time::Duration;
//! # use tokio::io::AsyncReadExt;
//! use txlb::demo::{Backend, demo_config};
//! use txlb::scheduler::{Candidates, Scheduler, SchedulerKind};
//!
//! /// Always the last available host.
//! #[derive(Debug)]
//! struct Last;
//!
//! impl Scheduler for Last {
//!     fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
//!         (0..candidates.hosts().len()).rev().find(|&i| candidates.is_candidate(i))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backends = [Backend::start("a").await?, Backend::start("b").await?];
//! let mut config = demo_config(([127, 0, 0, 1], 0).into(), &backends);
//! config.services[0].groups[0].scheduler = SchedulerKind::Custom("last");
//! let balancer = txlb::Balancer::builder(config)
//!     .scheduler("last", |_hosts| Box::new(Last))
//!     .start()
//!     .await?;
//! let addr = balancer.local_addr("demo", None).unwrap();
//! for _ in 0..3 {
//!     let mut stream = tokio::net::TcpStream::connect(addr).await?;
//!     tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET / HTTP/1.0\r\n\r\n").await?;
//!     let mut answer = String::new();
//!     stream.read_to_string(&mut answer).await?;
//!     assert!(answer.ends_with("Hello from b\n"));
//! }
//! balancer.shutdown(Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```
//!
//! ## The admin plane and the SSH console
//!
//! Both are opt-in. [`admin::router`] is the admin web UI, txLoadBalancer's web
//! API, the JSON API and the metrics as an axum `Router`, to nest into the
//! application's own (or serve with [`admin::start`]); [`ssh::start`] runs the SSH
//! console. Both steer the balancer through the same handle and commands.
//!
//! ```
//! # use std::time::Duration;
//! use axum::body::Body;
//! use axum::http::Request;
//! use tower::ServiceExt;
//! use txlb::demo::{Backend, demo_config};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = Backend::start("web-1").await?;
//! let balancer = txlb::Balancer::start(demo_config(([127, 0, 0, 1], 0).into(), &[backend])).await?;
//! // No admin users here: the application guards its own routes.
//! let settings = txlb::admin::AdminSettings { open_without_users: true, ..Default::default() };
//! let app = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "the application" }))
//!     .nest("/admin", txlb::admin::router(balancer.clone(), settings));
//!
//! let request = Request::get("/admin/running.txt").body(Body::empty())?;
//! let response = app.oneshot(request).await?;
//! assert!(response.status().is_success());
//! let body = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
//! assert!(String::from_utf8_lossy(&body).contains("web-1"));
//! balancer.shutdown(Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```
//!
//! The examples under `examples/` go further: `embedded_web` (a web site that
//! balances its own backends and mounts the admin pages), `custom_scheduler` and
//! `live_changes` (hosts added and drained while traffic flows).
//!
//! ## Layout
//! The public API:
//! - [`Balancer`], [`BalancerBuilder`], [`BalancerHandle`]: start and steer a
//!   balancer; [`Command`] and [`ControlError`] for changes; [`Stats`] and the
//!   types in it for counters.
//! - [`check`]: `txlb check`'s report on a configuration.
//! - [`config`]: the configuration model, its XML and TOML readers and writers,
//!   and write-back into the file.
//! - [`scheduler`]: the [`Scheduler`](scheduler::Scheduler) trait, what it sees,
//!   and the built-in algorithms.
//! - [`reload`]: the configuration file a balancer runs from, reloaded by
//!   [`BalancerHandle::reload`] (SIGHUP and the console's `config reload`).
//! - [`events`]: transitions broadcast to subscribers.
//! - [`admin`]: the admin plane: HTML UI, legacy web API, JSON API, metrics.
//! - `ssh`: the SSH console, a command language over russh (cargo feature
//!   `ssh`, on by default).
//! - [`proxy_protocol`]: the PROXY protocol header, read and written.
//! - [`logging`]: a reopenable log file.
//! - [`demo`]: in-process HTTP backends, and `txlb demo`'s configuration.
//! - [`upgrade`]: a running balancer's sockets, state, established
//!   connections and UDP sessions handed to a new process (`txlb upgrade`,
//!   SIGUSR2), and a new process started from them.
//! - `fleet_push`: seeds fleet mode's shared configuration in etcd
//!   (`<cluster>`; cargo feature `fleet`, on by default).
//!
//! Internals, free to change: `ops` (every change the web admin and the console
//! offer, each written once: its parameters and their checks, the command it
//! sends and its answer), `control` (the single writer: command → new
//! snapshot; and the task that orders and renews certificates from ACME),
//! `routing` (a client's first bytes told apart: TLS with its SNI
//! and ALPN, HTTP with its Host, SSH; the ClientHello in QUIC Initial
//! packets; a listener's routes compiled for look-up), `tls` (a terminating listener's certificates, read and checked
//! once for `txlb check`, start and reloads, chosen by SNI; those from ACME
//! served from a slot the ordering task swaps), `state` (per-host atomic counters and health, service counters,
//! limits, open connections), `snapshot` (the immutable snapshot),
//! `proxy` (listeners, one connection's flow, the copy loop, the parking lot of
//! idle connections), `health` (the
//! hostCheck and heartbeat managers, the backup watcher), `dns` (host names
//! resolved and re-resolved as their TTLs run out, `expand`), `fleet`
//! (instances sharing their configuration through etcd), `access_log` and
//! `lookup` (the control socket).

#![deny(missing_docs)]

mod access_log;
pub mod admin;
mod balancer;
pub mod check;
pub mod config;
mod control;
pub mod demo;
mod dns;
pub mod events;
#[cfg(feature = "fleet")]
mod fleet;
/// Without fleet mode: `<cluster>` refused, the admin pages' view always off.
#[cfg(not(feature = "fleet"))]
#[path = "fleet/off.rs"]
mod fleet;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod health;
pub mod logging;
mod lookup;
#[cfg(test)]
mod module_order;
mod ops;
mod proxy;
mod routing;
pub mod scheduler;
mod snapshot;
#[cfg(feature = "ssh")]
pub mod ssh;
mod state;
mod tls;
pub mod upgrade;

/// The fuzz properties (`fuzz/checks.rs`, replayed by the unit tests) name the
/// crate `txlb`, as the fuzz targets do.
#[cfg(test)]
extern crate self as txlb;

#[cfg(feature = "fleet")]
pub use fleet::{FleetError, fleet_push};

/// The configuration file a balancer runs from: reload, its status, write-back.
pub use balancer::reload;
pub use balancer::{
    Balancer, BalancerBuilder, BalancerHandle, GroupStats, HostStatsEntry, OriginStats,
    ServiceStats, Started, Stats, UpgradedFrom,
};
pub use control::{BoundListener, CertificateStats, Command, ControlError, RouteStats, TlsStats};
pub use proxy::proxy_protocol;
pub use state::{
    BadInfo, CheckStateView, ConnectionInfo, EJECT_DOUBLING_RESET, Ejection, HostHealth,
    HostStatsView, LatencyView, ServiceCountersView, Transport,
};
