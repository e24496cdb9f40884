//! Running state: the immutable [`Snapshot`] the data path reads, and the per-host
//! atomic [`HostStats`] that outlive snapshots. No async, no I/O here.
//!
//! The controller builds a new `Snapshot` for every change and swaps it in whole;
//! connections read it only long enough to pick a host. Counters and health live in
//! `Arc<HostStats>`, carried from snapshot to snapshot by host identity, so a reload
//! keeps them and a removed host still shows its draining connections.

mod connections;
mod limits;
mod stats;

pub use connections::{
    CloseRequest, ConnectionEntry, ConnectionInfo, ConnectionRegistry, Registered,
};
pub use limits::{Admission, Limiter, Refusal};

pub(crate) use stats::Ranking;
pub use stats::{
    BadInfo, ConnectionGuard, HostHealth, HostStats, HostStatsView, LatencyView, clock_ms,
    clock_nanos, last_came_up,
};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::config::{GroupOptions, HostAddress, ManagerConfig, ProxyVersion, ServiceOptions};
use crate::scheduler::{Scheduler, SchedulerKind};

/// Stable identity of a host across snapshots (service, group and host name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub u64);

/// Everything the data path may read, swapped atomically as one value.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Services in configuration order.
    pub services: Vec<ServiceSnapshot>,
    /// The managers' settings, read by the managers every round.
    pub manager: ManagerConfig,
}

impl Snapshot {
    /// The service called `name`, if any. Services are few, so a scan beats a map.
    pub fn service(&self, name: &str) -> Option<&ServiceSnapshot> {
        self.services.iter().find(|s| &*s.name == name)
    }

    /// Every host of every group of every service.
    pub fn hosts(&self) -> impl Iterator<Item = &HostSnapshot> {
        self.services
            .iter()
            .flat_map(|s| s.groups.iter())
            .flat_map(|g| g.hosts.iter())
    }
}

/// One service as the data path sees it.
#[derive(Debug)]
pub struct ServiceSnapshot {
    /// Service name.
    pub name: Arc<str>,
    /// Groups; `groups[enabled]` receives traffic.
    pub groups: Vec<GroupSnapshot>,
    /// Index of the enabled group in `groups`.
    pub enabled: usize,
    /// Indices of the backup groups in `groups`, in configuration order: the
    /// first with a usable host serves while the enabled group has none.
    pub backups: Vec<usize>,
    /// How long to wait for a host to accept.
    pub connect_timeout: Duration,
    /// Service-wide counters, carried across snapshots by service name.
    pub counters: Arc<ServiceCounters>,
    /// Admission limits' state, carried across snapshots by service name.
    pub limiter: Arc<Limiter>,
    /// Timeouts, limits, access lists, PROXY protocol acceptance.
    pub options: Arc<ServiceOptions>,
}

/// Counters of one service that belong to no single host. Written by connection
/// tasks, read by the admin plane.
#[derive(Debug, Default)]
pub struct ServiceCounters {
    /// Clients accepted by the service's listeners.
    pub accepted: AtomicU64,
    /// Clients closed because no host was available.
    pub no_host: AtomicU64,
    /// Clients served by a host after at least one other host failed them.
    pub failovers: AtomicU64,
    /// Clients refused by the access lists.
    pub denied: AtomicU64,
    /// Clients refused by connection limits (queue, per-address limits).
    pub over_limit: AtomicU64,
    /// Clients closed for a missing, malformed or untrusted PROXY header.
    pub proxy_errors: AtomicU64,
    /// Connections closed for being idle too long.
    pub timeouts: AtomicU64,
}

/// A point-in-time copy of a service's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ServiceCountersView {
    /// Clients accepted.
    pub accepted: u64,
    /// Clients closed for want of a host.
    pub no_host: u64,
    /// Clients served after a failover.
    pub failovers: u64,
    /// Clients refused by the access lists.
    pub denied: u64,
    /// Clients refused by connection limits.
    pub over_limit: u64,
    /// Clients closed for a bad PROXY header.
    pub proxy_errors: u64,
    /// Connections closed for being idle too long.
    pub timeouts: u64,
}

impl ServiceCounters {
    /// A copy for display.
    pub fn view(&self) -> ServiceCountersView {
        ServiceCountersView {
            accepted: self.accepted.load(Relaxed),
            no_host: self.no_host.load(Relaxed),
            failovers: self.failovers.load(Relaxed),
            denied: self.denied.load(Relaxed),
            over_limit: self.over_limit.load(Relaxed),
            proxy_errors: self.proxy_errors.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
        }
    }
}

impl ServiceSnapshot {
    /// The group that receives new connections.
    pub fn enabled_group(&self) -> &GroupSnapshot {
        &self.groups[self.enabled]
    }

    /// The group new connections go to now: the enabled group while one of its
    /// hosts is usable (neither bad nor admin-down), else the first backup group
    /// (configuration order) with a usable host; `None` when no group has one.
    /// Reads only host atomics: no lock, no allocation.
    pub fn serving_group(&self) -> Option<usize> {
        if self.enabled_group().any_available() {
            return Some(self.enabled);
        }
        self.backups
            .iter()
            .copied()
            .find(|&i| self.groups[i].any_available())
    }
}

impl GroupSnapshot {
    /// Whether some host is in rotation (neither bad nor admin-down; a host at
    /// its `maxconn` still counts: backup groups stand in for failed hosts, not
    /// for busy ones).
    pub fn any_available(&self) -> bool {
        self.hosts.iter().any(|h| h.stats.is_available())
    }
}

/// A group with its ready-to-use scheduler.
#[derive(Debug)]
pub struct GroupSnapshot {
    /// Group name.
    pub name: Arc<str>,
    /// Which algorithm `scheduler` implements (for display and write-back).
    pub scheduler_kind: SchedulerKind,
    /// The scheduler, with any tables already built for `hosts`.
    pub scheduler: Box<dyn Scheduler>,
    /// Hosts in configuration order; schedulers return indices into this slice.
    pub hosts: Vec<HostSnapshot>,
    /// Replays on empty answers, PROXY protocol default.
    pub options: GroupOptions,
}

/// One host as the data path sees it.
#[derive(Debug, Clone)]
pub struct HostSnapshot {
    /// Stable identity.
    pub id: HostId,
    /// Host name within its group.
    pub name: Arc<str>,
    /// Configured address (name or IP literal, and port).
    pub address: HostAddress,
    /// Relative weight (≥ 1).
    pub weight: u32,
    /// Most open connections (0 = no limit); a full host is not a candidate.
    pub maxconn: u32,
    /// PROXY protocol header to send (the host's setting, else its group's).
    pub proxy_protocol: Option<ProxyVersion>,
    /// Counters and health, shared with every snapshot that has this host.
    pub stats: Arc<HostStats>,
}

impl HostSnapshot {
    /// Where to connect now, if the address is known.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.stats.resolved()
    }
}
