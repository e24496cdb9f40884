//! Running state that outlives snapshots: each host's atomic [`HostStats`] and
//! what a scheduler sees of a host ([`HostSnapshot`]), service counters, admission
//! limits and the registry of open connections. No async, no I/O here; nothing
//! here knows the schedulers or the [`Snapshot`](crate::snapshot::Snapshot).
//!
//! Counters and health live in `Arc<HostStats>`, carried from snapshot to
//! snapshot by host identity, so a reload keeps them and a removed host still
//! shows its draining connections.

mod connections;
mod hosts;
mod limits;
mod stats;

pub(crate) use connections::{Ask, Keeping, MAX_LISTED_SESSIONS, SessionFilter};
pub use connections::{
    CloseElsewhere, CloseRequest, ConnectionEntry, ConnectionInfo, ConnectionRegistry,
    DrainingConnection, Inspection, Registered, Transport,
};
pub use hosts::Hosts;
pub use limits::{Admission, Limiter, Refusal, descriptor_share};

pub(crate) use stats::Ranking;
pub use stats::{
    AgentState, AgentView, BadInfo, CarriedHost, CheckStateView, ConnectionGuard,
    EJECT_DOUBLING_RESET, Ejection, HostHealth, HostStats, HostStatsView, LatencyView, clock_ms,
    clock_nanos, from_unix_ms, from_unix_nanos, last_came_up, scaled_hosts, unix_ms, unix_nanos,
};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::config::{HostAddress, ProxyVersion};

/// Stable identity of a host across snapshots (service, group and host name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub u64);

/// Counters of one service that belong to no single host. Written by connection
/// tasks, read by the admin plane.
#[derive(Debug, Default)]
pub struct ServiceCounters {
    /// Clients accepted by the service's listeners.
    pub accepted: AtomicU64,
    /// Clients closed because no host was available.
    pub no_host: AtomicU64,
    /// Clients of this service's routing listeners that no route matched and
    /// that the service could not serve itself (it has no group): closed.
    pub no_route: AtomicU64,
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
    /// UDP: sessions open now (a gauge).
    pub sessions_open: AtomicU64,
    /// UDP: sessions started.
    pub sessions_total: AtomicU64,
    /// UDP: datagrams from clients passed to hosts.
    pub datagrams_in: AtomicU64,
    /// UDP: datagrams from hosts passed to clients.
    pub datagrams_out: AtomicU64,
    /// UDP: client datagrams dropped for want of a host.
    pub dropped_no_host: AtomicU64,
    /// UDP: datagrams dropped at a limit (`maxSessions`, a full socket
    /// buffer, no descriptor left for a session).
    pub dropped_limit: AtomicU64,
    /// UDP: datagrams dropped for being larger than 65,535 bytes.
    pub dropped_oversize: AtomicU64,
    /// UDP: datagrams that would have opened a session past
    /// `maxSessionsPerSource`, dropped.
    pub dropped_source_limit: AtomicU64,
    /// UDP: datagrams past a client address's `datagramRate`, dropped.
    pub dropped_rate: AtomicU64,
}

/// A point-in-time copy of a service's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ServiceCountersView {
    /// Clients accepted.
    pub accepted: u64,
    /// Clients closed for want of a host.
    pub no_host: u64,
    /// Clients of its routing listeners closed for want of a route.
    pub no_route: u64,
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
    /// UDP: sessions open now.
    pub sessions_open: u64,
    /// UDP: sessions started.
    pub sessions_total: u64,
    /// UDP: datagrams from clients passed to hosts.
    pub datagrams_in: u64,
    /// UDP: datagrams from hosts passed to clients.
    pub datagrams_out: u64,
    /// UDP: client datagrams dropped for want of a host.
    pub dropped_no_host: u64,
    /// UDP: datagrams dropped at a limit.
    pub dropped_limit: u64,
    /// UDP: datagrams dropped for their size.
    pub dropped_oversize: u64,
    /// UDP: datagrams dropped at `maxSessionsPerSource`.
    pub dropped_source_limit: u64,
    /// UDP: datagrams dropped at `datagramRate`.
    pub dropped_rate: u64,
}

impl ServiceCountersView {
    /// The counts made since `earlier`.
    pub fn since(&self, earlier: &ServiceCountersView) -> ServiceCountersView {
        ServiceCountersView {
            accepted: self.accepted.saturating_sub(earlier.accepted),
            no_host: self.no_host.saturating_sub(earlier.no_host),
            no_route: self.no_route.saturating_sub(earlier.no_route),
            failovers: self.failovers.saturating_sub(earlier.failovers),
            denied: self.denied.saturating_sub(earlier.denied),
            over_limit: self.over_limit.saturating_sub(earlier.over_limit),
            proxy_errors: self.proxy_errors.saturating_sub(earlier.proxy_errors),
            timeouts: self.timeouts.saturating_sub(earlier.timeouts),
            sessions_total: self.sessions_total.saturating_sub(earlier.sessions_total),
            datagrams_in: self.datagrams_in.saturating_sub(earlier.datagrams_in),
            datagrams_out: self.datagrams_out.saturating_sub(earlier.datagrams_out),
            dropped_no_host: self.dropped_no_host.saturating_sub(earlier.dropped_no_host),
            dropped_limit: self.dropped_limit.saturating_sub(earlier.dropped_limit),
            dropped_oversize: self
                .dropped_oversize
                .saturating_sub(earlier.dropped_oversize),
            dropped_source_limit: self
                .dropped_source_limit
                .saturating_sub(earlier.dropped_source_limit),
            dropped_rate: self.dropped_rate.saturating_sub(earlier.dropped_rate),
            // A gauge, not a count: UDP sessions stay with their process.
            sessions_open: 0,
        }
    }
}

impl ServiceCounters {
    /// A copy for display.
    pub fn view(&self) -> ServiceCountersView {
        ServiceCountersView {
            accepted: self.accepted.load(Relaxed),
            no_host: self.no_host.load(Relaxed),
            no_route: self.no_route.load(Relaxed),
            failovers: self.failovers.load(Relaxed),
            denied: self.denied.load(Relaxed),
            over_limit: self.over_limit.load(Relaxed),
            proxy_errors: self.proxy_errors.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            sessions_open: self.sessions_open.load(Relaxed),
            sessions_total: self.sessions_total.load(Relaxed),
            datagrams_in: self.datagrams_in.load(Relaxed),
            datagrams_out: self.datagrams_out.load(Relaxed),
            dropped_no_host: self.dropped_no_host.load(Relaxed),
            dropped_limit: self.dropped_limit.load(Relaxed),
            dropped_oversize: self.dropped_oversize.load(Relaxed),
            dropped_source_limit: self.dropped_source_limit.load(Relaxed),
            dropped_rate: self.dropped_rate.load(Relaxed),
        }
    }

    /// Adds what the old process of an upgrade counted after it handed over.
    pub(crate) fn add(&self, delta: &ServiceCountersView) {
        self.accepted.fetch_add(delta.accepted, Relaxed);
        self.no_host.fetch_add(delta.no_host, Relaxed);
        self.no_route.fetch_add(delta.no_route, Relaxed);
        self.failovers.fetch_add(delta.failovers, Relaxed);
        self.denied.fetch_add(delta.denied, Relaxed);
        self.over_limit.fetch_add(delta.over_limit, Relaxed);
        self.proxy_errors.fetch_add(delta.proxy_errors, Relaxed);
        self.timeouts.fetch_add(delta.timeouts, Relaxed);
        self.sessions_total.fetch_add(delta.sessions_total, Relaxed);
        self.datagrams_in.fetch_add(delta.datagrams_in, Relaxed);
        self.datagrams_out.fetch_add(delta.datagrams_out, Relaxed);
        self.dropped_no_host
            .fetch_add(delta.dropped_no_host, Relaxed);
        self.dropped_limit.fetch_add(delta.dropped_limit, Relaxed);
        self.dropped_oversize
            .fetch_add(delta.dropped_oversize, Relaxed);
        self.dropped_source_limit
            .fetch_add(delta.dropped_source_limit, Relaxed);
        self.dropped_rate.fetch_add(delta.dropped_rate, Relaxed);
    }

    /// Takes on the counters a previous process had (an upgrade).
    pub(crate) fn restore(&self, carried: &ServiceCountersView) {
        self.accepted.store(carried.accepted, Relaxed);
        self.no_host.store(carried.no_host, Relaxed);
        self.no_route.store(carried.no_route, Relaxed);
        self.failovers.store(carried.failovers, Relaxed);
        self.denied.store(carried.denied, Relaxed);
        self.over_limit.store(carried.over_limit, Relaxed);
        self.proxy_errors.store(carried.proxy_errors, Relaxed);
        self.timeouts.store(carried.timeouts, Relaxed);
        self.sessions_total.store(carried.sessions_total, Relaxed);
        self.datagrams_in.store(carried.datagrams_in, Relaxed);
        self.datagrams_out.store(carried.datagrams_out, Relaxed);
        self.dropped_no_host.store(carried.dropped_no_host, Relaxed);
        self.dropped_limit.store(carried.dropped_limit, Relaxed);
        self.dropped_oversize
            .store(carried.dropped_oversize, Relaxed);
        self.dropped_source_limit
            .store(carried.dropped_source_limit, Relaxed);
        self.dropped_rate.store(carried.dropped_rate, Relaxed);
    }
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
    /// With TLS origination (the host's `tls`, else its group's): the name
    /// sent (SNI) and checked in its certificate; `None`: plain TCP.
    pub tls: Option<rustls::pki_types::ServerName<'static>>,
    /// Counters and health, shared with every snapshot that has this host.
    pub stats: Arc<HostStats>,
    /// Its service, group and name, as its connections are listed: one
    /// allocation per host per snapshot, shared by every connection to it.
    pub place: Arc<HostPlace>,
}

/// Where a host sits: the names its connections are listed, filtered and
/// logged under.
#[derive(Debug, PartialEq, Eq)]
pub struct HostPlace {
    /// Service name.
    pub service: Arc<str>,
    /// Group name.
    pub group: Arc<str>,
    /// Host name within its group.
    pub host: Arc<str>,
}

impl HostPlace {
    /// The place of host `host` of group `group` of service `service`.
    pub fn new(service: &str, group: &str, host: &str) -> Arc<Self> {
        Arc::new(HostPlace {
            service: Arc::from(service),
            group: Arc::from(group),
            host: Arc::from(host),
        })
    }
}

impl HostSnapshot {
    /// Where to connect now, if the address is known.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.stats.resolved()
    }
}
