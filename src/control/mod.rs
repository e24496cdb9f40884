//! The controller: the single writer of the running state. Every change arrives as a
//! [`Command`], is checked against a copy of the running configuration, and becomes
//! a new [`Snapshot`] swapped in whole. The controller is never on the data path.

mod command;
mod listeners;

pub use command::Command;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, HostAddress, ResolverOptions};
use crate::dns::{self, Answer, NameState, Resolver};
use crate::events::{Event, Events};
use crate::proxy::{ConnectionRecord, DataPlane};
use crate::scheduler::{self, SchedulerFactory, SchedulerKind};
use crate::snapshot::{GroupSnapshot, ServiceSnapshot, Snapshot};
use crate::state::{ConnectionRegistry, HostId, HostSnapshot, HostStats, Limiter, ServiceCounters};
use listeners::RunningListener;
use tokio::sync::mpsc;

/// Why a command was refused. Nothing changed when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No service of that name.
    #[error("no service {0:?}")]
    UnknownService(String),
    /// No group of that name in the service.
    #[error("service {service:?} has no group {group:?}")]
    UnknownGroup {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
    },
    /// No host of that name in the group.
    #[error("group {group:?} of service {service:?} has no host {host:?}")]
    UnknownHost {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// Host name.
        host: String,
    },
    /// The service has no such listener.
    #[error("service {service:?} does not listen on {listen}")]
    UnknownListener {
        /// Service name.
        service: String,
        /// Listen address.
        listen: String,
    },
    /// A service of that name exists already.
    #[error("service {0:?} exists already")]
    DuplicateService(String),
    /// A group of that name exists already.
    #[error("service {service:?} has a group {group:?} already")]
    DuplicateGroup {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
    },
    /// A host of that name exists already in the group.
    #[error("group {group:?} of service {service:?} has a host {host:?} already")]
    DuplicateHost {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// Host name.
        host: String,
    },
    /// The operation is not allowed on the enabled group.
    #[error("group {group:?} is the enabled group of service {service:?}")]
    GroupIsEnabled {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
    },
    /// A backup group stands in for the enabled group; it cannot be it.
    #[error(
        "group {group:?} of service {service:?} is a backup group: it cannot be the enabled group"
    )]
    BackupGroupEnabled {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
    },
    /// A group without hosts cannot be enabled.
    #[error("group {group:?} of service {service:?} has no hosts")]
    EmptyGroup {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
    },
    /// The enabled group must keep at least one host.
    #[error("cannot remove the last host of the enabled group {group:?} of service {service:?}")]
    LastHostOfEnabledGroup {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
    },
    /// No admin user of that name.
    #[error("no user {0:?}")]
    UnknownUser(String),
    /// An admin user of that name exists already.
    #[error("user {0:?} exists already")]
    DuplicateUser(String),
    /// A service must keep at least one listener.
    #[error("cannot remove the last listener of service {0:?}")]
    LastListener(String),
    /// Two services, or one twice, on the same address.
    #[error("{listen} is already a listener of service {service:?}")]
    DuplicateListener {
        /// Service that has it.
        service: String,
        /// The address.
        listen: String,
    },
    /// A listen address could not be bound.
    #[error("cannot listen on {listen}: {source}")]
    BindListener {
        /// The address as configured.
        listen: String,
        /// What the system said.
        source: io::Error,
    },
    /// A value that breaks a rule of the model.
    #[error("{0}")]
    Invalid(String),
    /// The data-path worker threads could not be started.
    #[error("cannot start worker threads: {0}")]
    StartWorkers(#[source] io::Error),
    /// The balancer is shutting down.
    #[error("the balancer is shutting down")]
    ShuttingDown,
    /// Fleet mode: another instance changed the shared configuration since this
    /// one last saw it. Nothing was changed; retry on the current configuration.
    #[error(
        "conflict: the fleet's configuration was changed elsewhere (now at revision {current}, \
         this instance had {expected}); nothing was changed: look again and retry"
    )]
    FleetConflict {
        /// The revision this instance's change was based on.
        expected: i64,
        /// The revision in etcd.
        current: i64,
    },
    /// Fleet mode: this instance could not apply the fleet's newest
    /// configuration, so it runs an older one; a change made from that one
    /// would undo the newer. Nothing was changed.
    #[error(
        "this instance is out of step with the fleet: it runs revision {applied} of the fleet's \
         configuration but could not apply revision {latest} ({reason}); changes made here are \
         refused so they cannot undo it: remove the cause (the instance then catches up by \
         itself) or make the change on an instance in step"
    )]
    FleetOutOfStep {
        /// The revision running here.
        applied: i64,
        /// The fleet's newest revision.
        latest: i64,
        /// Why it does not run here.
        reason: String,
    },
    /// Fleet mode: etcd cannot be reached, so the change cannot be shared.
    /// Nothing was changed; the running configuration stays.
    #[error("the fleet's etcd cannot be reached, so changes are refused until it is back ({0})")]
    FleetUnavailable(String),
}

/// One bound listener, as reported to observers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BoundListener {
    /// Service it feeds.
    pub service: String,
    /// The address as configured (e.g. `*:8080`).
    pub configured: String,
    /// The address actually bound (with the real port when 0 was configured).
    pub local: SocketAddr,
    /// Whether its clients must start with a PROXY protocol header (the
    /// listener's `acceptProxy`, or its service's).
    pub accept_proxy: bool,
}

/// The balancer engine: shared by every handle.
pub(crate) struct Controller {
    /// What connections share: the running snapshot (written only under
    /// `state`'s lock, read lock-free by every connection), events, the registry.
    pub(crate) data: Arc<DataPlane>,
    /// Control-plane state; the lock is never held across an await. Held by a
    /// change from start to end (seconds for a reload of 100,000 hosts), so
    /// readers use the views below instead.
    state: Mutex<ControlState>,
    /// The running configuration, listeners and draining hosts as readers (the
    /// admin plane, the handle) see them: written under `state`'s lock at the
    /// end of each change, read without it, so a long change never stalls them.
    views: Views,
    /// This controller itself, so a change can run on the blocking pool
    /// (see [`Controller::shared`]); empty when not made by it.
    me: std::sync::Weak<Controller>,
    /// Cancelled at shutdown: listeners stop accepting, managers stop.
    pub(crate) stop_accepting: CancellationToken,
    /// Cancelled at the end of the shutdown grace period: connections are dropped.
    pub(crate) stop_connections: CancellationToken,
    /// Connection tasks, so shutdown can wait for them.
    pub(crate) connections: TaskTracker,
    /// Cancelled when shutdown is complete: tasks that serve connections to the
    /// end (the idle sweeper) stop then.
    pub(crate) stopped: CancellationToken,
    /// Data-path worker runtimes; empty: everything runs on the caller's runtime.
    pub(crate) workers: Vec<tokio::runtime::Handle>,
    /// The application's schedulers, by name.
    pub(crate) custom_schedulers: HashMap<&'static str, SchedulerFactory>,
    /// Sockets handed over at start (socket activation), used instead of binding.
    pub(crate) inherited: listeners::Inherited,
    /// Fleet mode, once started: every configuration change goes through etcd.
    pub(crate) fleet: std::sync::OnceLock<Arc<crate::fleet::FleetLink>>,
}

/// A host removed from the configuration, still draining: its service, its
/// group and itself.
type RemovedHost = (Arc<str>, Arc<str>, HostSnapshot);

/// What readers see of the control state, published by each change.
struct Views {
    running: ArcSwap<Config>,
    listeners: ArcSwap<Vec<BoundListener>>,
    removed: ArcSwap<Vec<RemovedHost>>,
}

struct ControlState {
    /// The same configuration as `views.running`.
    running: Arc<Config>,
    next_host_id: u64,
    /// Identity and counters of every host in the running snapshot, by
    /// (service, group, host) name.
    hosts: HashMap<(String, String, String), (HostId, Arc<HostStats>)>,
    /// Service counters by service name, kept across snapshots.
    service_counters: HashMap<String, Arc<ServiceCounters>>,
    /// Admission state by service name, kept across snapshots.
    limiters: HashMap<String, Arc<Limiter>>,
    /// Hosts removed from the configuration that still had open connections, with
    /// their service and group; shown as draining until their last one closes.
    removed: Vec<(Arc<str>, Arc<str>, HostSnapshot)>,
    listeners: Vec<RunningListener>,
    /// What is known of every host name in the running configuration.
    names: HashMap<String, NameState>,
    /// The resolver of the running configuration's `<resolver>` settings.
    resolver: Arc<Resolver>,
}

impl Controller {
    /// An engine with nothing configured.
    pub(crate) fn new(
        access_log: Option<mpsc::Sender<ConnectionRecord>>,
        index_host_side: bool,
        workers: Vec<tokio::runtime::Handle>,
        custom_schedulers: HashMap<&'static str, SchedulerFactory>,
    ) -> Self {
        Controller {
            data: Arc::new(DataPlane {
                snapshots: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
                events: Events::new(),
                registry: Arc::new(ConnectionRegistry::default()),
                access_log,
                index_host_side,
            }),
            state: Mutex::new(ControlState {
                running: Arc::new(empty_config()),
                next_host_id: 0,
                hosts: HashMap::new(),
                service_counters: HashMap::new(),
                limiters: HashMap::new(),
                removed: Vec::new(),
                listeners: Vec::new(),
                names: HashMap::new(),
                resolver: Arc::new(Resolver::new(&ResolverOptions::default())),
            }),
            views: Views {
                running: ArcSwap::from_pointee(empty_config()),
                listeners: ArcSwap::from_pointee(Vec::new()),
                removed: ArcSwap::from_pointee(Vec::new()),
            },
            me: std::sync::Weak::new(),
            stop_accepting: CancellationToken::new(),
            stop_connections: CancellationToken::new(),
            connections: TaskTracker::new(),
            stopped: CancellationToken::new(),
            workers,
            custom_schedulers,
            inherited: listeners::Inherited::default(),
            fleet: std::sync::OnceLock::new(),
        }
    }

    /// This controller, shared, knowing itself: its changes then run on the
    /// blocking pool, off the runtime that serves the admin plane.
    pub(crate) fn shared(self) -> Arc<Controller> {
        Arc::new_cyclic(|me| Controller {
            me: me.clone(),
            ..self
        })
    }

    fn lock(&self) -> MutexGuard<'_, ControlState> {
        // A panic while holding the lock cannot leave a half-applied change: every
        // change is computed on a copy and stored at the end, so the state is usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The running configuration.
    pub(crate) fn running(&self) -> Config {
        Config::clone(&self.views.running.load())
    }

    /// The running configuration, shared: no copy (for readers that only look).
    pub(crate) fn running_shared(&self) -> Arc<Config> {
        self.views.running.load_full()
    }

    /// Hosts removed from the configuration whose connections are still open, as
    /// (service, group, host).
    pub(crate) fn removed_hosts(&self) -> Vec<(Arc<str>, Arc<str>, HostSnapshot)> {
        let mut removed = Vec::clone(&self.views.removed.load());
        removed.retain(|(_, _, h)| h.stats.open() > 0);
        removed
    }

    /// The counters of host `host` of group `group` of service `service`.
    pub(crate) fn host_stats(
        &self,
        service: &str,
        group: &str,
        host: &str,
    ) -> Result<Arc<HostStats>, ControlError> {
        // From the snapshot, not the state: no lock a change could be holding.
        let snapshot = self.data.snapshots.load();
        let Some(s) = snapshot.service(service) else {
            return Err(ControlError::UnknownService(service.into()));
        };
        let found = s
            .groups
            .iter()
            .filter(|g| &*g.name == group)
            .flat_map(|g| &g.hosts)
            .find(|h| &*h.name == host);
        match found {
            Some(h) => Ok(h.stats.clone()),
            None => Err(ControlError::UnknownHost {
                service: service.into(),
                group: group.into(),
                host: host.into(),
            }),
        }
    }

    /// Listeners currently bound.
    pub(crate) fn listeners(&self) -> Vec<BoundListener> {
        Vec::clone(&self.views.listeners.load())
    }

    /// Publishes what readers see of `state` (see [`Views`]).
    fn publish(&self, state: &ControlState) {
        self.views.running.store(state.running.clone());
        let listeners = state
            .listeners
            .iter()
            .map(|l| BoundListener {
                service: l.service.to_string(),
                configured: l.configured.to_string(),
                local: l.local,
                accept_proxy: l.proxy.load().is_some(),
            })
            .collect();
        self.views.listeners.store(Arc::new(listeners));
        self.views.removed.store(Arc::new(state.removed.clone()));
    }

    /// Applies one command. In fleet mode a configuration change is first
    /// written to etcd (compare-and-swap) and applied here only once it is there;
    /// an admin-down flag is this instance's own. On error nothing has changed.
    pub(crate) async fn apply(&self, command: Command) -> Result<(), ControlError> {
        if !matches!(command, Command::SetAdminDown { .. })
            && let Some(fleet) = self.fleet.get()
        {
            return fleet.change(command).await;
        }
        self.apply_local(command).await
    }

    /// The configuration `command` would make of the running one, without
    /// applying it (listeners are not bound, names not resolved).
    pub(crate) fn preview(&self, command: &Command) -> Result<Config, ControlError> {
        let running = Config::clone(&self.views.running.load());
        self.next_config(running, command)
    }

    fn next_config(&self, mut next: Config, command: &Command) -> Result<Config, ControlError> {
        command.edit(&mut next)?;
        for group in next.services.iter().flat_map(|s| &s.groups) {
            if let SchedulerKind::Custom(name) = group.scheduler
                && !self.custom_schedulers.contains_key(name)
            {
                return Err(ControlError::Invalid(format!(
                    "group {:?}: no scheduler {name:?} was registered",
                    group.name
                )));
            }
        }
        Ok(next)
    }

    /// Applies one command on this instance only: resolves the host names it
    /// brings (outside the lock), then checks and swaps under the lock. On error
    /// nothing has changed.
    pub(crate) async fn apply_local(&self, command: Command) -> Result<(), ControlError> {
        if self.stop_accepting.is_cancelled() {
            return Err(ControlError::ShuttingDown);
        }
        // The resolver of the settings this command leaves in force.
        let resolver = {
            let state = self.lock();
            match &command {
                Command::Replace(config) if config.resolver != *state.resolver.options() => {
                    Arc::new(Resolver::new(&config.resolver))
                }
                _ => state.resolver.clone(),
            }
        };
        let mut names: Vec<String> = Vec::new();
        for address in command.new_addresses() {
            if dns::is_name(&address) && !names.contains(&address.host) {
                names.push(address.host);
            }
        }
        let mut lookups = tokio::task::JoinSet::new();
        for name in names {
            let resolver = resolver.clone();
            lookups.spawn(async move {
                let result = resolver.lookup(&name).await;
                (name, result)
            });
        }
        let answers = lookups.join_all().await;
        // Checking and building a big configuration takes a while: on the
        // blocking pool, so the runtime (the admin plane's) keeps serving.
        match self.me.upgrade() {
            Some(me) => {
                tokio::task::spawn_blocking(move || me.apply_resolved(&command, resolver, answers))
                    .await
                    .unwrap_or_else(|_| Err(ControlError::Invalid("the change failed".into())))
            }
            None => self.apply_resolved(&command, resolver, answers),
        }
    }

    fn apply_resolved(
        &self,
        command: &Command,
        resolver: Arc<Resolver>,
        answers: Vec<(String, Result<Answer, String>)>,
    ) -> Result<(), ControlError> {
        let mut state = self.lock();
        if let Command::SetAdminDown {
            service,
            group,
            host,
            down,
        } = command
        {
            let (_, stats) = state
                .hosts
                .get(&(service.clone(), group.clone(), host.clone()))
                .ok_or_else(|| ControlError::UnknownHost {
                    service: service.clone(),
                    group: group.clone(),
                    host: host.clone(),
                })?;
            if stats.set_admin_down(*down) {
                tracing::info!(service, group, host, down, "host admin state changed");
            }
            return Ok(());
        }
        let next = self.next_config(Config::clone(&state.running), command)?;
        // Bind new listeners before anything is swapped: a port in use refuses the
        // whole command.
        let (added, removed) = listeners::diff(&state.listeners, &next)?;
        let own: Vec<SocketAddr> = state.listeners.iter().map(|l| l.local).collect();
        let bound = listeners::bind_all(added, self.workers.len().max(1), &self.inherited, &own)?;
        // What the names resolve to is known before the hosts are built.
        let intervals = dns::names_of(&next);
        let now = std::time::Instant::now();
        let mut changed_names = Vec::new();
        for (name, result) in answers {
            let interval = intervals.get(&name).copied().flatten();
            let known = state
                .names
                .entry(name.clone())
                .or_insert_with(|| NameState::new(now));
            if known.record(&name, result, resolver.options(), interval, now) {
                changed_names.push(name);
            }
        }
        state.resolver = resolver;
        let snapshot = self.build_snapshot(&mut state, &next);
        self.data.snapshots.store(Arc::new(snapshot));
        for listener in bound {
            state.listeners.push(listeners::start(listener, self));
        }
        listeners::refresh(&state.listeners, &next);
        state.listeners.retain(|l| {
            let keep = !removed.contains(&(l.service.clone(), l.configured.clone()));
            if !keep {
                l.stop.cancel();
                self.data.events.emit(Event::ListenerRemoved {
                    service: l.service.to_string(),
                    listen: l.configured.to_string(),
                });
            }
            keep
        });
        for service in &next.services {
            let before = state
                .running
                .services
                .iter()
                .find(|s| s.name == service.name);
            if before.is_some_and(|b| b.enabled_group != service.enabled_group) {
                self.data.events.emit(Event::GroupEnabled {
                    service: service.name.clone(),
                    group: service.enabled_group.clone(),
                });
            }
        }
        state.running = Arc::new(next);
        self.publish(&state);
        state.names.retain(|name, _| intervals.contains_key(name));
        for name in changed_names {
            self.follow_name(&state, &name);
        }
        Ok(())
    }

    /// Names due for a new look-up at `now`, the resolver to ask, and when the
    /// next one is due otherwise.
    pub(crate) fn dns_due(
        &self,
        now: std::time::Instant,
    ) -> (Vec<String>, Arc<Resolver>, Option<std::time::Instant>) {
        let mut state = self.lock();
        let intervals = dns::names_of(&state.running);
        state.names.retain(|name, _| intervals.contains_key(name));
        let mut due = Vec::new();
        let mut next: Option<std::time::Instant> = None;
        for name in intervals.into_keys() {
            let known = state
                .names
                .entry(name.clone())
                .or_insert_with(|| NameState::new(now));
            if known.next <= now {
                due.push(name);
            } else {
                next = Some(next.map_or(known.next, |n| n.min(known.next)));
            }
        }
        (due, state.resolver.clone(), next)
    }

    /// Applies new answers from `resolver`: hosts that follow one address move
    /// (their stats' address), hosts expanded from a name whose addresses
    /// changed are rebuilt in a new snapshot.
    pub(crate) fn dns_answers(
        &self,
        resolver: &Arc<Resolver>,
        answers: Vec<(String, Result<Answer, String>)>,
        now: std::time::Instant,
    ) {
        let mut state = self.lock();
        if !Arc::ptr_eq(resolver, &state.resolver) {
            // A reload changed the settings meanwhile: ask again with the new ones.
            return;
        }
        let intervals = dns::names_of(&state.running);
        let mut rebuild = false;
        for (name, result) in answers {
            let Some(interval) = intervals.get(&name).copied() else {
                continue; // no host uses it any more
            };
            let known = state
                .names
                .entry(name.clone())
                .or_insert_with(|| NameState::new(now));
            if !known.record(&name, result, resolver.options(), interval, now) {
                continue;
            }
            self.follow_name(&state, &name);
            rebuild |= state
                .running
                .services
                .iter()
                .flat_map(|s| &s.groups)
                .flat_map(|g| &g.hosts)
                .any(|h| h.options.expand && h.address.host == name);
        }
        if rebuild {
            let running = state.running.clone();
            let snapshot = self.build_snapshot(&mut state, &running);
            self.data.snapshots.store(Arc::new(snapshot));
            self.publish(&state);
        }
    }

    /// Points every host that follows one address of `name` at its address now.
    fn follow_name(&self, state: &ControlState, name: &str) {
        let Some(known) = state.names.get(name) else {
            return;
        };
        for service in &state.running.services {
            for group in &service.groups {
                for host in &group.hosts {
                    if host.address.host != name || host.options.expand {
                        continue;
                    }
                    let key = (service.name.clone(), group.name.clone(), host.name.clone());
                    let Some((_, stats)) = state.hosts.get(&key) else {
                        continue;
                    };
                    let Some(ip) = known.pick(stats.resolved().map(|a| a.ip())) else {
                        continue;
                    };
                    let addr = SocketAddr::new(ip, host.address.port);
                    if stats.set_resolved(Some(addr)) {
                        tracing::info!(service = %service.name, group = %group.name, host = %host.name, address = %host.address, resolved = %addr, "host follows its name to a new address");
                        // A new address deserves a fresh chance.
                        if stats.mark_up() {
                            self.data
                                .events
                                .host_back(&service.name, &group.name, &host.name);
                        }
                    }
                }
            }
        }
    }

    /// Builds the snapshot for `config`, reusing the counters of hosts that stay.
    fn build_snapshot(&self, state: &mut ControlState, config: &Config) -> Snapshot {
        let mut hosts = HashMap::new();
        let previous = self.data.snapshots.load();
        // Where each host pointed: a map, so the build stays linear (a scan of
        // the previous snapshot per host made a reload of 80,000 hosts take
        // seconds).
        let old_addresses: HashMap<HostId, &HostAddress> =
            previous.hosts().map(|h| (h.id, &h.address)).collect();
        let mut services = Vec::with_capacity(config.services.len());
        for service in &config.services {
            let mut groups = Vec::with_capacity(service.groups.len());
            for group in &service.groups {
                let mut members = Vec::with_capacity(group.hosts.len());
                for (host, host_name, address) in group
                    .hosts
                    .iter()
                    .flat_map(|host| expand(host, &state.names))
                {
                    let key = (service.name.clone(), group.name.clone(), host_name);
                    let (id, stats) = match state.hosts.get(&key) {
                        Some(known) => known.clone(),
                        None => {
                            state.next_host_id += 1;
                            (HostId(state.next_host_id), HostStats::new())
                        }
                    };
                    if old_addresses.get(&id) != Some(&&address) {
                        let names = (service.name.as_str(), group.name.as_str(), key.2.as_str());
                        set_address(names, &address, &stats, &state.names, &self.data.events);
                    }
                    members.push(HostSnapshot {
                        id,
                        name: Arc::from(key.2.as_str()),
                        address,
                        weight: host.weight,
                        maxconn: host.options.maxconn,
                        proxy_protocol: host
                            .options
                            .proxy_protocol
                            .unwrap_or(group.options.proxy_protocol),
                        stats: stats.clone(),
                    });
                    hosts.insert(key, (id, stats));
                }
                groups.push(GroupSnapshot {
                    name: Arc::from(group.name.as_str()),
                    scheduler_kind: group.scheduler,
                    scheduler: match group.scheduler {
                        SchedulerKind::Custom(name) => match self.custom_schedulers.get(name) {
                            Some(factory) => factory(&members),
                            None => scheduler::build_group(group.scheduler, &members, None),
                        },
                        kind => scheduler::build_group(kind, &members, group.options.slow_start),
                    },
                    hosts: members,
                    options: group.options.clone(),
                });
            }
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
            services.push(ServiceSnapshot {
                name: Arc::from(service.name.as_str()),
                groups,
                enabled,
                backups,
                connect_timeout: service.connect_timeout,
                counters,
                limiter,
                options: Arc::new(service.options.clone()),
            });
        }
        state
            .service_counters
            .retain(|name, _| config.services.iter().any(|s| &s.name == name));
        state
            .limiters
            .retain(|name, _| config.services.iter().any(|s| &s.name == name));
        // Hosts that left stop feeding any ranking; those with connections still
        // open drain visibly.
        for service in &previous.services {
            for group in &service.groups {
                for host in &group.hosts {
                    let key = (
                        service.name.to_string(),
                        group.name.to_string(),
                        host.name.to_string(),
                    );
                    if hosts.contains_key(&key) {
                        continue;
                    }
                    if host.stats.open() > 0 {
                        state.removed.push((
                            service.name.clone(),
                            group.name.clone(),
                            host.clone(),
                        ));
                    }
                }
            }
        }
        state.removed.retain(|(_, _, h)| h.stats.open() > 0);
        state.hosts = hosts;
        Snapshot {
            services,
            manager: config.manager,
        }
    }
}

fn empty_config() -> Config {
    Config::new(Vec::new())
}

/// The hosts a configured host stands for: itself, or with `expand` one per
/// address its name resolves to, named `NAME@ADDRESS` (itself, bad, while the name
/// has never resolved).
fn expand<'c>(
    host: &'c crate::config::HostConfig,
    names: &HashMap<String, NameState>,
) -> Vec<(&'c crate::config::HostConfig, String, HostAddress)> {
    let known = names
        .get(&host.address.host)
        .filter(|known| host.options.expand && !known.addrs.is_empty());
    match known {
        Some(known) => known
            .addrs
            .iter()
            .map(|ip| {
                let address = HostAddress {
                    host: ip.to_string(),
                    port: host.address.port,
                };
                (host, format!("{}@{ip}", host.name), address)
            })
            .collect(),
        None => vec![(host, host.name.clone(), host.address.clone())],
    }
}

/// Records a host's new address: resolved now, or bad with the resolver's reason.
fn set_address(
    (service, group, host): (&str, &str, &str),
    address: &HostAddress,
    stats: &HostStats,
    names: &HashMap<String, NameState>,
    events: &Events,
) {
    let result = match address.host.parse() {
        Ok(ip) => Ok(SocketAddr::new(ip, address.port)),
        Err(_) => match names.get(&address.host) {
            Some(known) => known
                .pick(stats.resolved().map(|a| a.ip()))
                .map(|ip| SocketAddr::new(ip, address.port))
                .ok_or_else(|| {
                    known
                        .error
                        .clone()
                        .unwrap_or_else(|| format!("name {:?} has no address", address.host))
                }),
            None => Err(format!("name {:?} was not resolved", address.host)),
        },
    };
    match result {
        Ok(addr) => {
            stats.set_resolved(Some(addr));
            // A new address deserves a fresh chance.
            if stats.mark_up() {
                events.host_back(service, group, host);
            }
        }
        Err(reason) => {
            stats.set_resolved(None);
            if stats.mark_bad(reason.clone()) {
                events.host_bad(service, group, host, &reason);
            }
        }
    }
}
