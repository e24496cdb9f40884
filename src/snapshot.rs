//! The immutable [`Snapshot`] the data path reads: services, their groups with
//! ready-built schedulers, and the hosts. No async, no I/O here.
//!
//! The controller builds a new `Snapshot` for every change and swaps it in whole;
//! connections read it only long enough to pick a host. What outlives a snapshot
//! (counters, health, limits) is in [`crate::state`], shared by `Arc`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{
    AgentConfig, AllBad, CheckConfig, GroupOptions, ManagerConfig, ServiceOptions,
};
use crate::scheduler::{Candidates, Scheduler, SchedulerKind};
use crate::state::{AgentState, HostHealth, HostId, HostSnapshot, Hosts, Limiter, ServiceCounters};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Where the next forced pick ([`GroupSnapshot::pick_forced`]) starts: spreads
/// clients over a group whose hosts are all bad. One counter for every group:
/// only clients of such groups move it.
static FORCED_NEXT: AtomicUsize = AtomicUsize::new(0);

/// Everything the data path may read, swapped atomically as one value.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Services in configuration order.
    services: Vec<ServiceSnapshot>,
    /// Index of each service in `services`, by name: routes may send clients
    /// to any of many services, each looked up once per client.
    by_name: HashMap<Arc<str>, usize>,
    /// The managers' settings, read by the managers every round.
    pub manager: ManagerConfig,
}

impl Snapshot {
    /// A snapshot of `services` (unique names, configuration order).
    pub fn new(services: Vec<ServiceSnapshot>, manager: ManagerConfig) -> Snapshot {
        let by_name = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        Snapshot {
            services,
            by_name,
            manager,
        }
    }

    /// Services in configuration order.
    pub fn services(&self) -> &[ServiceSnapshot] {
        &self.services
    }

    /// The service called `name`, if any.
    pub fn service(&self, name: &str) -> Option<&ServiceSnapshot> {
        self.services.get(*self.by_name.get(name)?)
    }
}

/// One service as the data path sees it.
#[derive(Debug, Clone)]
pub struct ServiceSnapshot {
    /// Service name.
    pub name: Arc<str>,
    /// Groups; `groups[enabled]` receives traffic. Shared with the previous
    /// snapshot when a change leaves them alone.
    pub groups: Vec<Arc<GroupSnapshot>>,
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

impl ServiceSnapshot {
    /// The group that receives new connections; `None` for a service without
    /// groups (reached only through routes, it serves no client of its own).
    pub fn enabled_group(&self) -> Option<&GroupSnapshot> {
        self.groups.get(self.enabled).map(|g| &**g)
    }

    /// The group new connections go to now: the enabled group while one of its
    /// hosts is usable (neither bad nor admin-down), else the first backup group
    /// (configuration order) with a usable host; `None` when no group has one.
    /// Reads only host atomics: no lock, no allocation.
    pub fn serving_group(&self) -> Option<usize> {
        if self.enabled_group()?.any_available() {
            return Some(self.enabled);
        }
        self.backups
            .iter()
            .copied()
            .find(|&i| self.groups[i].any_available())
    }

    /// The enabled group when `allBad="open"` has new clients tried on its
    /// bad hosts: no group serves and some host of it is out only for being
    /// bad (what [`GroupSnapshot::pick_forced`] picks from).
    pub fn forced_group(&self) -> Option<&GroupSnapshot> {
        let group = self.enabled_group()?;
        (group.options.all_bad == AllBad::Open
            && self.serving_group().is_none()
            && group.hosts.iter().any(forcible))
        .then_some(group)
    }
}

impl GroupSnapshot {
    /// The index (in `hosts`) of the host `scheduler` picks for `client`,
    /// passing over the hosts it already `tried`.
    #[inline]
    pub fn pick(&self, tried: &[HostId], client: Option<SocketAddr>) -> Option<usize> {
        self.scheduler
            .pick(&Candidates::new(&self.scheduled, tried, client))
    }

    /// `allBad="open"`'s pick, for when no host of the group is in rotation:
    /// the next host, round robin, that is out only for being bad (failed or
    /// ejected; never admin-down, in maintenance or draining), has room and
    /// was not `tried`. The scheduler is not asked: its tables skip hosts out
    /// of rotation.
    pub fn pick_forced(&self, tried: &[HostId]) -> Option<usize> {
        let n = self.hosts.len();
        if n == 0 {
            return None;
        }
        let start = FORCED_NEXT.fetch_add(1, Relaxed) % n;
        (start..n).chain(0..start).find(|&i| {
            let host = &self.hosts[i];
            forcible(host) && host.stats.has_room(host.maxconn) && !tried.contains(&host.id)
        })
    }

    /// Whether hosts were added since `scheduler`'s tables were built.
    pub fn tables_behind(&self) -> bool {
        self.scheduled.len() != self.hosts.len()
    }

    /// Whether some host is in rotation (neither bad nor admin-down; a host at
    /// its `maxconn` still counts: backup groups stand in for failed hosts, not
    /// for busy ones).
    pub fn any_available(&self) -> bool {
        self.hosts.iter().any(|h| h.stats.is_available())
    }
}

/// Whether `allBad="open"` may try `host`: it is out only for being bad
/// (failed or ejected; never admin-down, in maintenance or draining).
fn forcible(host: &HostSnapshot) -> bool {
    host.stats.health() == HostHealth::Bad && host.stats.agent_state() != AgentState::Drain
}

/// A group with its ready-to-use scheduler.
#[derive(Debug, Clone)]
pub struct GroupSnapshot {
    /// Group name.
    pub name: Arc<str>,
    /// Which algorithm `scheduler` implements (for display and write-back).
    pub scheduler_kind: SchedulerKind,
    /// The scheduler, with any tables already built for `scheduled`.
    pub scheduler: Arc<dyn Scheduler>,
    /// Hosts in configuration order; schedulers return indices into it.
    pub hosts: Hosts,
    /// The hosts `scheduler` was built for: `hosts`, or for a short while
    /// its first hosts. A host added to a big group whose scheduler has
    /// tables (hash, leastc, …) joins `hosts` at once and the tables when
    /// the controller rebuilds them, just after (see `control/build.rs`): the
    /// change does not wait for a table of the whole group.
    pub scheduled: Hosts,
    /// Replays on empty answers, PROXY protocol default.
    pub options: GroupOptions,
    /// The group's active check (`<check>`), if any: its hosts are probed by
    /// `health::checks`, not by the hostCheck and heartbeat managers.
    pub check: Option<Arc<GroupCheck>>,
    /// The group's agent (`<agent>`), if any: `health::agent` asks each
    /// host's.
    pub agent: Option<Arc<GroupAgent>>,
    /// The group's TLS towards its hosts, when the group or one of its hosts
    /// originates TLS (each host says whether it does, and its name).
    pub origin: Option<Arc<crate::tls::Originator>>,
}

/// A group's agent as its agent tasks read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupAgent {
    /// The settings.
    pub config: AgentConfig,
    /// The port to ask on each host (same order as the group's `hosts`):
    /// the host's `agentPort`, else the agent's `port`. Persistent, as the
    /// hosts.
    pub ports: imbl::Vector<Option<u16>>,
}

/// A group's active check as its check tasks read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCheck {
    /// The settings.
    pub config: CheckConfig,
    /// The port to probe on each host (same order as the group's `hosts`):
    /// the host's `checkPort`, else the check's `port`; `None`: the host's own.
    /// Persistent, as the hosts: a host added copies a chunk, not the list.
    pub ports: imbl::Vector<Option<u16>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{self, Candidates, ConnectionGuard};

    fn service(kind: SchedulerKind, hosts: Hosts) -> ServiceSnapshot {
        ServiceSnapshot {
            name: Arc::from("web"),
            groups: vec![Arc::new(GroupSnapshot {
                name: Arc::from("main"),
                scheduler_kind: kind,
                scheduler: scheduler::build(kind, &hosts).into(),
                scheduled: hosts.clone(),
                hosts,
                options: GroupOptions::default(),
                check: None,
                agent: None,
                origin: None,
            })],
            enabled: 0,
            backups: Vec::new(),
            connect_timeout: Duration::from_secs(1),
            counters: Arc::default(),
            limiter: Arc::default(),
            options: Arc::default(),
        }
    }

    #[test]
    fn dropping_a_snapshot_frees_its_hosts_whatever_the_scheduler() {
        for kind in SchedulerKind::ALL {
            let hosts = scheduler::testing::hosts(&[1, 2, 3]);
            let freed: Vec<_> = hosts.iter().map(|h| Arc::downgrade(&h.stats)).collect();
            let snapshot = Snapshot::new(vec![service(kind, hosts)], ManagerConfig::default());
            let group = snapshot.services()[0].enabled_group().unwrap();
            let picked = group
                .scheduler
                .pick(&Candidates::new(&group.hosts, &[], None))
                .expect("a host");
            let open = ConnectionGuard::new(group.hosts[picked].stats.clone());
            drop(snapshot);
            // A connection keeps its own host, and only that one, until it closes.
            let alive = freed.iter().filter(|w| w.upgrade().is_some()).count();
            assert_eq!(alive, 1, "{kind}");
            drop(open);
            assert!(freed.iter().all(|w| w.upgrade().is_none()), "{kind}");
        }
    }

    #[test]
    fn a_later_snapshot_keeps_the_hosts_its_predecessor_ranked() {
        let hosts = scheduler::testing::hosts(&[1, 1]);
        let stats = Arc::downgrade(&hosts[0].stats);
        let first = service(SchedulerKind::LeastConns, hosts.clone());
        let second = service(SchedulerKind::LeastConns, hosts);
        drop(first);
        assert!(stats.upgrade().is_some());
        let group = second.enabled_group().unwrap();
        let open = ConnectionGuard::new(group.hosts[0].stats.clone());
        let c = Candidates::new(&group.hosts, &[], None);
        assert_eq!(group.scheduler.pick(&c), Some(1), "the tree still follows");
        drop(second);
        drop(open);
        assert!(stats.upgrade().is_none());
    }

    #[test]
    fn a_forced_pick_takes_only_bad_hosts_not_yet_tried() {
        let hosts = scheduler::testing::hosts(&[1, 1, 1, 1]);
        let svc = service(SchedulerKind::RoundRobin, hosts);
        let group = svc.enabled_group().unwrap();
        let stats = |i: usize| &group.hosts[i].stats;
        stats(0).mark_bad("refused");
        stats(1).set_admin_down(true);
        stats(2).mark_bad("refused");
        stats(2).set_agent(AgentState::Drain, 100, 0);
        stats(3).mark_bad("refused");
        for _ in 0..8 {
            let picked = group.pick_forced(&[]).unwrap();
            assert!(picked == 0 || picked == 3, "{picked}");
        }
        let tried = [group.hosts[0].id];
        assert_eq!(group.pick_forced(&tried), Some(3));
        assert_eq!(
            group.pick_forced(&[group.hosts[0].id, group.hosts[3].id]),
            None
        );
    }
}
