//! Building the next [`Snapshot`] from a configuration. Groups a change did not
//! touch are shared with the running snapshot as they are (same hosts, same
//! scheduler and its tables), so a change costs what it touches: adding a host
//! rebuilds its group, not the whole balancer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::names::{expand, set_address};
use super::{Command, ControlState, Controller};
use crate::config::{Config, GroupConfig, HostAddress, HostConfig, ServiceConfig};
use crate::dns::NameState;
use crate::scheduler::{self, Scheduler, SchedulerKind};
use crate::snapshot::{GroupAgent, GroupCheck, GroupSnapshot, ServiceSnapshot, Snapshot};
use crate::state::{HostId, HostPlace, HostSnapshot, HostStats, Hosts};

/// From this many hosts, a host added to a group whose scheduler has tables
/// (hash, leastc, weighted ones) does not wait for the group's new tables
/// (a Maglev table for 80,000 hosts takes most of a second): see
/// [`Controller::refresh_tables`]. Smaller groups build them at once, so a
/// host added there is picked from the change on.
pub(super) const DEFER_TABLES_FROM: usize = 1_000;

/// Which groups a change may have changed; every other group is shared with the
/// running snapshot. Services' own settings are always rebuilt (they are small).
pub(super) enum Touched<'a> {
    /// Anything (a reload, new DNS answers): a group equal to its running
    /// version, and not following a name, is shared.
    All,
    /// Only these groups, as (service, group) names.
    Groups(Vec<(&'a str, &'a str)>),
    /// One group, which only gained `host` at its end: its running version
    /// is extended, not rebuilt (a group of 100,000 hosts costs what one host
    /// costs).
    HostAdded {
        /// Its service.
        service: &'a str,
        /// The group.
        group: &'a str,
        /// The host added.
        host: &'a HostConfig,
    },
}

impl<'a> Touched<'a> {
    /// What `command` may change.
    pub(super) fn by(command: &'a Command) -> Touched<'a> {
        match command {
            Command::AddGroup { service, group } => Touched::Groups(vec![(service, &group.name)]),
            Command::AddHost {
                service,
                group,
                host,
            } => Touched::HostAdded {
                service,
                group,
                host,
            },
            Command::SetScheduler { service, group, .. }
            | Command::RemoveHost { service, group, .. }
            | Command::RemoveAllHosts { service, group } => Touched::Groups(vec![(service, group)]),
            // A new service has no running groups to share; removed groups and
            // services are noticed by their absence.
            Command::AddService(_)
            | Command::RemoveService { .. }
            | Command::AddListener { .. }
            | Command::RemoveListener { .. }
            | Command::SetListenerCert { .. }
            | Command::AddRoute { .. }
            | Command::RemoveRoute { .. }
            | Command::RemoveGroup { .. }
            | Command::EnableGroup { .. }
            | Command::SetAdminDown { .. }
            | Command::AddUser(_)
            | Command::RemoveUser { .. } => Touched::Groups(Vec::new()),
            _ => Touched::All,
        }
    }

    /// Whether `after`, a group of `service` before and after the change, may
    /// differ from `before`.
    pub(super) fn may_differ(
        &self,
        service: &str,
        before: &GroupConfig,
        after: &GroupConfig,
    ) -> bool {
        match self {
            Touched::All => before != after,
            Touched::Groups(touched) => touched.contains(&(service, after.name.as_str())),
            Touched::HostAdded {
                service: s,
                group: g,
                ..
            } => (*s, *g) == (service, after.name.as_str()),
        }
    }

    /// Whether the running version of `group` can serve in the next snapshot:
    /// it did not change, and (after new answers) follows no name.
    fn shares(&self, service: &str, before: &GroupConfig, after: &GroupConfig) -> bool {
        let follows_names =
            matches!(self, Touched::All) && after.hosts.iter().any(|h| h.options.expand);
        !self.may_differ(service, before, after) && !follows_names
    }
}

impl Controller {
    /// Builds the snapshot for `config` (the running one is `state.running`),
    /// sharing the groups `touched` leaves alone and reusing the counters of
    /// hosts that stay.
    pub(super) fn build_snapshot(
        &self,
        state: &mut ControlState,
        config: &Config,
        touched: &Touched<'_>,
    ) -> Snapshot {
        let previous = self.data.snapshots.load_full();
        let running = state.running.clone();
        // The running snapshot was built from the running configuration, service
        // by service and group by group, so the two line up.
        let before: HashMap<&str, (&ServiceConfig, &ServiceSnapshot)> =
            if previous.services().len() == running.services.len() {
                running
                    .services
                    .iter()
                    .zip(previous.services())
                    .map(|(c, s)| (c.name.as_str(), (c, s)))
                    .collect()
            } else {
                HashMap::new()
            };
        let mut services = Vec::with_capacity(config.services.len());
        let mut kept: HashSet<(&str, &str)> = HashSet::new();
        let service_names: HashSet<&str> =
            config.services.iter().map(|s| s.name.as_str()).collect();
        for (at, service) in config.services.iter().enumerate() {
            let mut groups = Vec::with_capacity(service.groups.len());
            let renamed_from = match before.contains_key(service.name.as_str()) {
                true => None,
                false => renamed_in_place(&running.services, at, &service_names, |s| &s.name),
            };
            if let Some(old) = renamed_from {
                state.carry_service(old, &service.name);
            }
            let was = before.get(renamed_from.unwrap_or(&service.name));
            let mut old_groups =
                ByName::new(was.map_or(&[][..], |(c, _)| &c.groups[..]), |g| &g.name);
            let group_names: HashSet<&str> =
                service.groups.iter().map(|g| g.name.as_str()).collect();
            for (position, group) in service.groups.iter().enumerate() {
                let found = old_groups.take(position, &group.name).or_else(|| {
                    let old = was.map_or(&[][..], |(c, _)| &c.groups[..]);
                    renamed_in_place(old, position, &group_names, |g| &g.name)?;
                    old_groups.take_at(position).then_some(position)
                });
                let old = was
                    .zip(found)
                    .and_then(|((c, s), i)| Some((&c.groups[i], s.groups.get(i)?)));
                kept.insert((&service.name, &group.name));
                if let Some((c, (group_before, _))) = was.zip(old) {
                    kept.insert((&c.0.name, &group_before.name));
                }
                // A group renamed, or in a renamed service, is built again:
                // its hosts' places name it.
                let same_names =
                    renamed_from.is_none() && old.is_some_and(|(c, _)| c.name == group.name);
                groups.push(match old {
                    Some((config_before, shared))
                        if same_names && touched.shares(&service.name, config_before, group) =>
                    {
                        shared.clone()
                    }
                    Some((_, running)) if matches!(touched, Touched::HostAdded { .. }) => {
                        let Touched::HostAdded { host, .. } = touched else {
                            unreachable!()
                        };
                        Arc::new(self.extend_group(state, service, group, running, host))
                    }
                    _ => Arc::new(self.build_group(state, service, group, old.map(|(_, s)| &**s))),
                });
                // A shared group keeps its hosts and tables; its TLS may have
                // been re-read (a reload) or changed.
                let origin = state
                    .originators
                    .get(&(service.name.clone(), group.name.clone()));
                let last = groups.len() - 1;
                let same = match (&groups[last].origin, origin) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    groups[last] = Arc::new(GroupSnapshot {
                        origin: origin.cloned(),
                        ..GroupSnapshot::clone(&groups[last])
                    });
                }
            }
            services.push(self.build_service(state, service, groups));
        }
        let names: HashSet<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
        state
            .service_counters
            .retain(|name, _| names.contains(name.as_str()));
        state
            .limiters
            .retain(|name, _| names.contains(name.as_str()));
        // Whole groups that left: their hosts drain.
        for service in previous.services() {
            for group in &service.groups {
                if !kept.contains(&(&*service.name, &*group.name)) {
                    for host in &group.hosts {
                        state.drain(&service.name, &group.name, host);
                    }
                }
            }
        }
        state.removed.retain(|(_, _, h)| h.stats.open() > 0);
        Snapshot::new(services, config.manager)
    }

    /// A new snapshot of `group`, keeping the identity and counters of the hosts
    /// of `before` (its running version) that stay; those that left drain. A
    /// host stays by its name, or, renamed, by its address: a host new to the
    /// group at the address of one that left is that host under a new name
    /// (its open connections, health and counters are the same server's).
    fn build_group(
        &self,
        state: &mut ControlState,
        service: &ServiceConfig,
        group: &GroupConfig,
        before: Option<&GroupSnapshot>,
    ) -> GroupSnapshot {
        let old_hosts: Vec<&HostSnapshot> =
            before.map_or_else(Vec::new, |g| g.hosts.iter().collect());
        let mut old = ByName::new(&old_hosts, |h| &h.name);
        let mut ports = ProbePorts::default();
        // Every name first: a renamed host must not take the place of one
        // that stays under its name further down.
        let mut planned = Vec::with_capacity(group.hosts.len());
        for host in &group.hosts {
            for (host_name, address) in expand(host, &state.names) {
                ports.push(group, host);
                let known = old.take(planned.len(), &host_name);
                planned.push((host, host_name, address, known));
            }
        }
        if planned.iter().any(|p| p.3.is_none()) && old.left().next().is_some() {
            let mut left: HashMap<&HostAddress, Vec<usize>> = HashMap::new();
            for i in old.left().collect::<Vec<_>>().into_iter().rev() {
                left.entry(&old_hosts[i].address).or_default().push(i);
            }
            for (_, _, address, known) in planned.iter_mut().filter(|p| p.3.is_none()) {
                if let Some(i) = left.get_mut(&**address).and_then(Vec::pop)
                    && old.take_at(i)
                {
                    *known = Some(i);
                }
            }
        }
        let mut members = Vec::with_capacity(planned.len());
        for (host, host_name, address, known) in planned {
            let member = match known.map(|i| old_hosts[i]) {
                Some(known) => {
                    let name: Arc<str> = match *known.name == *host_name {
                        true => known.name.clone(),
                        false => Arc::from(&*host_name),
                    };
                    if known.address != *address {
                        let names = (service.name.as_str(), group.name.as_str(), &*name);
                        set_address(
                            names,
                            &address,
                            &known.stats,
                            &state.names,
                            &self.data.events,
                        );
                    }
                    let place = (service, group, host);
                    let stats = known.stats.clone();
                    Self::member(place, known.id, name, address.into_owned(), stats)
                }
                None => {
                    let ids = (&mut state.next_host_id, &state.names);
                    self.new_member(ids, service, group, host, &host_name, &address)
                }
            };
            members.push(member);
        }
        for i in old.left() {
            state.drain(&service.name, &group.name, old_hosts[i]);
        }
        self.group_snapshot(group, members.into(), ports, None)
    }

    /// The running version `before` of `group`, with `host` (added at the
    /// group's end) after its hosts: nothing is matched or rebuilt but the
    /// scheduler.
    fn extend_group(
        &self,
        state: &mut ControlState,
        service: &ServiceConfig,
        group: &GroupConfig,
        before: &GroupSnapshot,
        host: &HostConfig,
    ) -> GroupSnapshot {
        let mut members = before.hosts.clone();
        let mut ports = ProbePorts {
            check: before
                .check
                .as_ref()
                .map(|c| c.ports.clone())
                .unwrap_or_default(),
            agent: before
                .agent
                .as_ref()
                .map(|a| a.ports.clone())
                .unwrap_or_default(),
        };
        for (host_name, address) in expand(host, &state.names) {
            ports.push(group, host);
            let ids = (&mut state.next_host_id, &state.names);
            members.push(self.new_member(ids, service, group, host, &host_name, &address));
        }
        self.group_snapshot(group, members, ports, Some(before))
    }

    /// The scheduler of `kind` for `hosts`: the application's for a custom
    /// one.
    fn scheduler_for(
        &self,
        kind: SchedulerKind,
        hosts: &Hosts,
        slow_start: Option<std::time::Duration>,
    ) -> Arc<dyn Scheduler> {
        Arc::from(match kind {
            SchedulerKind::Custom(name) => match self.custom_schedulers.get(name) {
                Some(factory) => factory(hosts),
                None => scheduler::build_group(kind, hosts, None),
            },
            kind => scheduler::build_group(kind, hosts, slow_start),
        })
    }

    /// Builds the tables of every group whose scheduler knows only its first
    /// hosts (see [`Controller::extend_group`]) and swaps the snapshot. Run
    /// just after such a change, off it: hosts added one after another to a
    /// big group share one rebuild.
    pub(super) fn refresh_tables(&self) {
        let _state = self.lock();
        let previous = self.data.snapshots.load_full();
        let behind = |s: &ServiceSnapshot| s.groups.iter().any(|g| g.tables_behind());
        if !previous.services().iter().any(behind) {
            return;
        }
        let services = previous
            .services()
            .iter()
            .map(|s| ServiceSnapshot {
                groups: s
                    .groups
                    .iter()
                    .map(|g| match g.tables_behind() {
                        true => Arc::new(GroupSnapshot {
                            scheduler: self.scheduler_for(
                                g.scheduler_kind,
                                &g.hosts,
                                g.options.slow_start,
                            ),
                            scheduled: g.hosts.clone(),
                            ..GroupSnapshot::clone(g)
                        }),
                        false => g.clone(),
                    })
                    .collect(),
                ..s.clone()
            })
            .collect();
        let next = Snapshot::new(services, previous.manager);
        self.data.snapshots.store(Arc::new(next));
    }

    /// A host new to its group (or to this address of a name it follows):
    /// a new identity, fresh counters, its address set.
    fn new_member(
        &self,
        (next_host_id, known): (&mut u64, &HashMap<String, NameState>),
        service: &ServiceConfig,
        group: &GroupConfig,
        host: &HostConfig,
        host_name: &str,
        address: &HostAddress,
    ) -> HostSnapshot {
        *next_host_id += 1;
        let name: Arc<str> = Arc::from(host_name);
        let stats = HostStats::new();
        let names = (service.name.as_str(), group.name.as_str(), &*name);
        set_address(names, address, &stats, known, &self.data.events);
        Self::member(
            (service, group, host),
            HostId(*next_host_id),
            name,
            address.clone(),
            stats,
        )
    }

    /// A host of `group` as the data path sees it: `host`'s settings at
    /// `address` (its own, or one its name resolves to).
    fn member(
        (service, group, host): (&ServiceConfig, &GroupConfig, &HostConfig),
        id: HostId,
        name: Arc<str>,
        address: HostAddress,
        stats: Arc<HostStats>,
    ) -> HostSnapshot {
        HostSnapshot {
            id,
            place: Arc::new(HostPlace {
                service: Arc::from(service.name.as_str()),
                group: Arc::from(group.name.as_str()),
                host: name.clone(),
            }),
            name,
            address,
            weight: host.weight,
            maxconn: host.options.maxconn,
            proxy_protocol: host
                .options
                .proxy_protocol
                .unwrap_or(group.options.proxy_protocol),
            tls: host.options.tls.unwrap_or(group.options.tls).then(|| {
                let sni = host
                    .options
                    .tls_sni
                    .as_ref()
                    .or(group.options.tls_sni.as_ref());
                // An expanded host (`NAME@ADDRESS`) is checked against
                // the name it was expanded from.
                crate::tls::origin::server_name(sni.map(String::as_str), &host.address.host)
            }),
            stats,
        }
    }

    /// The snapshot of `group` over `members`, its scheduler built for them.
    /// The snapshot of `group` over `members`. When `members` only adds hosts
    /// to `extended` (its running version), a big group whose scheduler has
    /// tables keeps the running ones, which serve the hosts they know, and
    /// [`Controller::refresh_tables`] builds new ones just after, off the
    /// change.
    fn group_snapshot(
        &self,
        group: &GroupConfig,
        members: Hosts,
        ports: ProbePorts,
        extended: Option<&GroupSnapshot>,
    ) -> GroupSnapshot {
        let (scheduler, scheduled) = match extended {
            Some(running)
                if running.hosts.len() >= DEFER_TABLES_FROM
                    && scheduler::builds_tables(group.scheduler)
                    && self.defers_tables() =>
            {
                (running.scheduler.clone(), running.scheduled.clone())
            }
            _ => (
                self.scheduler_for(group.scheduler, &members, group.options.slow_start),
                members.clone(),
            ),
        };
        GroupSnapshot {
            name: Arc::from(group.name.as_str()),
            scheduler_kind: group.scheduler,
            scheduler,
            scheduled,
            hosts: members,
            options: group.options.clone(),
            check: group.check.as_ref().map(|check| {
                Arc::new(GroupCheck {
                    config: check.clone(),
                    ports: ports.check,
                })
            }),
            agent: group.agent.as_ref().map(|agent| {
                Arc::new(GroupAgent {
                    config: agent.clone(),
                    ports: ports.agent,
                })
            }),
            // Set by `build_snapshot` from the controller's originators.
            origin: None,
        }
    }

    /// The snapshot of `service` over `groups`, with its counters and admission
    /// state carried over by name.
    fn build_service(
        &self,
        state: &mut ControlState,
        service: &ServiceConfig,
        groups: Vec<Arc<GroupSnapshot>>,
    ) -> ServiceSnapshot {
        let enabled = service
            .groups
            .iter()
            .position(|g| g.name == service.enabled_group)
            .unwrap_or(0);
        let backups = service
            .groups
            .iter()
            .enumerate()
            .filter(|(i, g)| g.options.backup && *i != enabled)
            .map(|(i, _)| i)
            .collect();
        let counters = state
            .service_counters
            .entry(service.name.clone())
            .or_default()
            .clone();
        let limiter = state
            .limiters
            .entry(service.name.clone())
            .or_default()
            .clone();
        limiter.configure(service.options.maxconn);
        ServiceSnapshot {
            name: Arc::from(service.name.as_str()),
            groups,
            enabled,
            backups,
            connect_timeout: service.connect_timeout,
            counters,
            limiter,
            options: Arc::new(service.options.clone()),
        }
    }
}

/// The port each host of a group is probed on by its check and its agent (in
/// the order of the group's hosts; empty without a check or an agent).
#[derive(Default)]
struct ProbePorts {
    check: imbl::Vector<Option<u16>>,
    agent: imbl::Vector<Option<u16>>,
}

impl ProbePorts {
    /// The ports of `host` (one of its addresses), next.
    fn push(&mut self, group: &GroupConfig, host: &HostConfig) {
        if let Some(check) = &group.check {
            self.check.push_back(host.options.check_port.or(check.port));
        }
        if let Some(agent) = &group.agent {
            self.agent.push_back(host.options.agent_port.or(agent.port));
        }
    }
}

impl ControlState {
    /// Service `old`, renamed `new`, keeps its counters and its admission
    /// state (the connections its `maxconn` counts).
    fn carry_service(&mut self, old: &str, new: &str) {
        if let Some(counters) = self.service_counters.remove(old) {
            self.service_counters.insert(new.to_string(), counters);
        }
        if let Some(limiter) = self.limiters.remove(old) {
            self.limiters.insert(new.to_string(), limiter);
        }
    }

    /// A host that left the configuration drains visibly while connections
    /// are still open on it.
    fn drain(&mut self, service: &str, group: &str, host: &HostSnapshot) {
        if host.stats.open() > 0 {
            self.removed
                .push((Arc::from(service), Arc::from(group), host.clone()));
        }
    }
}

/// The name of the item of `old` at `at` when it was renamed there: its
/// name is gone from the new list (`names`). A service or group renamed in
/// place keeps what it ran with (counters, hosts); one that moved and was
/// renamed at once is a new one.
fn renamed_in_place<'a, T>(
    old: &'a [T],
    at: usize,
    names: &HashSet<&str>,
    name: fn(&T) -> &str,
) -> Option<&'a str> {
    let was = name(old.get(at)?);
    (!names.contains(was)).then_some(was)
}

/// Finds the items of a list by name, in one pass over a new list that mostly
/// keeps the old order: an item in its old place is found without hashing, and
/// a map of the old list is built only at the first one that moved.
pub(super) struct ByName<'a, T> {
    old: &'a [T],
    name: fn(&T) -> &str,
    map: Option<HashMap<&'a str, usize>>,
    taken: Vec<bool>,
    /// Old items not taken yet: at 0 nothing is looked for (a host added at
    /// the end of a big group builds no map of the others).
    left: usize,
}

impl<'a, T> ByName<'a, T> {
    pub(super) fn new(old: &'a [T], name: fn(&T) -> &str) -> Self {
        ByName {
            old,
            name,
            map: None,
            taken: vec![false; old.len()],
            left: old.len(),
        }
    }

    /// The index in the old list of the item called `name`, the new list's
    /// item at `position`; each old item is found at most once.
    pub(super) fn take(&mut self, position: usize, name: &str) -> Option<usize> {
        if self.left == 0 {
            return None;
        }
        let in_place = self
            .old
            .get(position)
            .filter(|item| (self.name)(item) == name)
            .map(|_| position);
        let found = in_place.or_else(|| {
            let (old, name_of) = (self.old, self.name);
            let map = self.map.get_or_insert_with(|| {
                old.iter()
                    .enumerate()
                    .map(|(i, h)| (name_of(h), i))
                    .collect()
            });
            map.get(name).copied()
        })?;
        if std::mem::replace(&mut self.taken[found], true) {
            return None;
        }
        self.left -= 1;
        Some(found)
    }

    /// Takes the old item at `at` (found by other means than its name);
    /// false if it was taken already.
    pub(super) fn take_at(&mut self, at: usize) -> bool {
        match self.taken.get_mut(at).filter(|t| !**t) {
            Some(taken) => {
                *taken = true;
                self.left -= 1;
                true
            }
            None => false,
        }
    }

    /// The old items never taken, by index.
    pub(super) fn left(&self) -> impl Iterator<Item = usize> + '_ {
        self.taken
            .iter()
            .enumerate()
            .filter(|(_, t)| !**t)
            .map(|(i, _)| i)
            .take(self.left)
    }
}
