//! # txlb: a TCP load balancer
//!
//! txlb accepts TCP clients on a service's listeners, picks a host of the service's
//! enabled group with the group's scheduler, and copies bytes both ways. A host that
//! refuses is marked bad and the client is tried on another host; managers re-probe
//! bad hosts and put them back. It reads txLoadBalancer 1.1's XML configuration
//! unchanged, and the same model in TOML.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = txlb::config::Config::from_path("config.xml".as_ref())?;
//! let balancer = txlb::Balancer::start(config).await?;
//! println!("{:?}", balancer.listeners());
//! balancer.shutdown(std::time::Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```
//!
//! ## Layout
//! - [`admin`]: the admin plane: HTML UI, legacy web API, JSON API, metrics.
//! - [`ssh`]: the SSH console: a command language over russh.
//! - [`access_log`]: one line per finished connection.
//! - [`config`]: XML and TOML readers → one validated model.
//! - [`state`]: the immutable [`state::Snapshot`] and per-host atomic counters.
//! - [`scheduler`]: the [`scheduler::Scheduler`] trait and one file per algorithm.
//! - [`proxy`]: listeners, one connection's flow, the copy loop.
//! - [`health`]: the hostCheck and heartbeat managers, the backup watcher.
//! - `dns`: host names resolved and re-resolved (record TTLs, `expand`).
//! - [`control`]: the single writer: [`control::Command`] → new snapshot.
//! - [`logging`]: the reopenable log file.
//! - [`events`]: transitions broadcast to subscribers.
//! - [`lookup`]: the control socket (who is behind a connection).
//! - [`demo`]: small HTTP backends for `txlb demo` and tests.
//! - [`systemd`]: readiness notifications, watchdog and socket activation.
//! - [`Balancer`] / [`BalancerHandle`]: start and steer a balancer.

#![deny(missing_docs)]

pub mod access_log;
pub mod admin;
mod balancer;
pub mod config;
pub mod control;
pub mod demo;
pub(crate) mod dns;
pub mod events;
pub mod health;
pub mod logging;
pub mod lookup;
pub mod proxy;
pub mod scheduler;
pub mod ssh;
pub mod state;
pub mod systemd;

pub use balancer::{
    Balancer, BalancerBuilder, BalancerHandle, GroupStats, HostStatsEntry, ServiceStats, Stats,
};
