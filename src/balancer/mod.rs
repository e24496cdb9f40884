//! The embedding API: start a balancer from a [`Config`] on the caller's tokio
//! runtime and steer it through a cheap, clonable [`BalancerHandle`].

pub mod reload;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::access_log::AccessLog;
use crate::config::{Config, ListenAddr};
use crate::control::{BoundListener, Command, ControlError, Controller};
use crate::events::Event;
use crate::health::{self, Manager};
use crate::proxy::WorkerPool;
use crate::reload::ConfigFile;
use crate::scheduler::{Hosts, Scheduler, SchedulerFactory};
use crate::snapshot::Snapshot;
use crate::state::{
    CloseRequest, ConnectionInfo, HostSnapshot, HostStatsView, ServiceCountersView,
};
use std::collections::HashMap;

/// Starts balancers.
#[derive(Debug)]
pub struct Balancer;

impl Balancer {
    /// Starts a balancer that runs entirely on the caller's tokio runtime:
    /// resolves host names, binds every listener, starts accepting and the
    /// managers. Fails, with nothing left running, when a listener cannot be bound.
    pub async fn start(config: Config) -> Result<BalancerHandle, ControlError> {
        Balancer::builder(config).start().await
    }

    /// A balancer with more settings than the configuration holds.
    pub fn builder(config: Config) -> BalancerBuilder {
        BalancerBuilder {
            config,
            workers: None,
            inherited: Vec::new(),
            custom_schedulers: HashMap::new(),
            file_text: None,
            handed: Handed::default(),
        }
    }
}

/// How this balancer started: when, which version, and whether it took over
/// from a previous process (an upgrade). Shown by `GET /api/v1/status` and
/// the admin page.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Started {
    /// This process.
    pub pid: u32,
    /// When the balancer started.
    #[serde(serialize_with = "unix_seconds")]
    pub at: std::time::SystemTime,
    /// This txlb's version.
    pub version: &'static str,
    /// The process it took over from, when it started by an upgrade.
    pub upgraded_from: Option<UpgradedFrom>,
}

/// The process an upgraded balancer took over from.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UpgradedFrom {
    /// Its process id.
    pub pid: u32,
    /// Its version.
    pub version: String,
    /// When it handed over.
    #[serde(serialize_with = "unix_seconds")]
    pub at: std::time::SystemTime,
    /// How many established connections it handed over.
    pub connections_moved: u64,
}

impl Started {
    /// A line for people: `fresh` or `upgraded from PID N (txlb V), K
    /// connections moved`.
    pub fn how(&self) -> String {
        match &self.upgraded_from {
            None => "fresh".into(),
            Some(from) => format!(
                "upgraded from PID {} (txlb {}), {} connections moved",
                from.pid, from.version, from.connections_moved
            ),
        }
    }
}

fn unix_seconds<S: serde::Serializer>(t: &std::time::SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(crate::state::unix_ms(*t) / 1000)
}

/// What a previous process handed over in an upgrade, for the builder.
#[derive(Default)]
struct Handed {
    /// Every copy of each listener's socket, by service and configured address.
    listeners: Vec<(String, ListenAddr, Vec<std::net::TcpListener>)>,
    /// The control socket's listening socket.
    control_socket: Option<std::os::unix::net::UnixListener>,
    /// The write-back's base: the file's text as last loaded or written.
    baseline: Option<String>,
    /// Health and counters.
    carried: Option<crate::control::Carried>,
    /// Who handed over.
    from: Option<UpgradedFrom>,
    /// It sends its UDP sessions once this process is ready.
    udp_sessions_follow: bool,
}

/// Settings for starting a balancer; see [`Balancer::builder`].
pub struct BalancerBuilder {
    config: Config,
    workers: Option<usize>,
    inherited: Vec<std::net::TcpListener>,
    custom_schedulers: HashMap<&'static str, SchedulerFactory>,
    /// The configuration file's text, for write-back ([`Self::file_text`]).
    file_text: Option<String>,
    /// What a previous process handed over (an upgrade).
    handed: Handed,
}

impl std::fmt::Debug for BalancerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancerBuilder")
            .field("workers", &self.workers)
            .field("inherited", &self.inherited.len())
            .field(
                "custom_schedulers",
                &self.custom_schedulers.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl BalancerBuilder {
    /// Registers an application's scheduler: groups whose scheduler is
    /// `SchedulerKind::Custom(name)` get one from `factory`, built by the
    /// controller for every snapshot (off the data path) with the group's hosts.
    /// Its picks must not allocate; see [`crate::scheduler::Scheduler`].
    pub fn scheduler(
        mut self,
        name: &'static str,
        factory: impl Fn(&Hosts) -> Box<dyn Scheduler> + Send + Sync + 'static,
    ) -> Self {
        self.custom_schedulers.insert(name, Arc::new(factory));
        self
    }

    /// Runs the data path on `count` dedicated threads, each with its own
    /// single-threaded runtime and its own `SO_REUSEPORT` copy of every listener;
    /// the control plane stays on the caller's runtime. Without this, connections
    /// run on the caller's runtime.
    pub fn workers(mut self, count: usize) -> Self {
        self.workers = Some(count.max(1));
        self
    }

    /// Listening sockets bound by someone else (systemd socket activation, an
    /// upgrade hand-off), each used instead of binding by the configured listener
    /// with its address (`*:80` takes a socket on `0.0.0.0:80` or `[::]:80`), now
    /// or when a later change adds that listener. Every worker accepts on the same
    /// socket through its own duplicate descriptor. Sockets must be non-blocking.
    pub fn inherited_listeners(mut self, sockets: Vec<std::net::TcpListener>) -> Self {
        self.inherited.extend(sockets);
        self
    }

    /// The text the configuration was read from
    /// ([`writeback::load`](crate::config::writeback::load)): the balancer then
    /// writes changes back into its file, keeping comments (saveConfig,
    /// configCheck; see [`ConfigFile`]). A configuration that names its file
    /// ([`Config::source`]) can be reloaded without it
    /// ([`BalancerHandle::reload`]).
    pub fn file_text(mut self, text: String) -> Self {
        self.file_text = Some(text);
        self
    }

    /// Every copy of the socket of the listener `listen` of `service`, handed
    /// over by a previous process (an upgrade): the listener accepts on all of
    /// them (one task each, spread over the workers), so no client waiting in
    /// any of their queues is lost. Sockets must be non-blocking.
    pub(crate) fn handed_listener(
        mut self,
        service: &str,
        listen: ListenAddr,
        copies: Vec<std::net::TcpListener>,
    ) -> Self {
        self.handed
            .listeners
            .push((service.to_string(), listen, copies));
        self
    }

    /// The control socket's listening socket, handed over by a previous
    /// process (an upgrade), already at the configured path.
    pub(crate) fn handed_control_socket(
        mut self,
        socket: std::os::unix::net::UnixListener,
    ) -> Self {
        self.handed.control_socket = Some(socket);
        self
    }

    /// Write-back's base when it differs from the configuration given (an
    /// upgrade, whose running configuration may hold unsaved changes): the
    /// file's text as it was last loaded or written.
    pub(crate) fn write_back_baseline(mut self, text: String) -> Self {
        self.handed.baseline = Some(text);
        self
    }

    /// Health and counters a previous process carried over, and who it was.
    pub(crate) fn carried(mut self, carried: crate::control::Carried, from: UpgradedFrom) -> Self {
        self.handed.carried = Some(carried);
        self.handed.from = Some(from);
        self
    }

    /// The previous process (an upgrade) sends its UDP sessions once this
    /// one is ready: UDP listeners wait for them before they receive.
    pub(crate) fn udp_sessions_follow(mut self) -> Self {
        self.handed.udp_sessions_follow = true;
        self
    }

    /// Starts the balancer; see [`Balancer::start`].
    pub async fn start(self) -> Result<BalancerHandle, ControlError> {
        let BalancerBuilder {
            config,
            workers,
            inherited,
            custom_schedulers,
            file_text,
            handed,
        } = self;
        // Before fleet mode swaps in the fleet's configuration: the file is ours.
        let file = match (&handed.baseline, &config.source) {
            (Some(baseline), Some(path)) => {
                let base = Config::from_text(path, baseline).map_err(|e| {
                    ControlError::Invalid(format!("the handed-over write-back base: {e}"))
                })?;
                ConfigFile::of_base(path, baseline.clone(), base)
            }
            _ => ConfigFile::of(&config, file_text),
        }
        .map(Arc::new);
        // Fleet mode: the configuration to start with is the fleet's.
        let (config, fleet) = match config.cluster.clone() {
            Some(cluster) => {
                let boot = crate::fleet::boot(config, cluster).await;
                (boot.config.clone(), Some(boot))
            }
            None => (config, None),
        };
        let pool = match workers {
            Some(count) => Some(Arc::new(
                WorkerPool::start(count).map_err(ControlError::StartWorkers)?,
            )),
            None => None,
        };
        let handles = pool
            .as_ref()
            .map(|p| p.handles().to_vec())
            .unwrap_or_default();
        let (access_log, records) = match &config.logging.access {
            Some(path) => {
                let (log, tx) =
                    AccessLog::start(path, config.logging.access_format).map_err(|source| {
                        ControlError::Invalid(format!(
                            "cannot open access log {}: {source}",
                            path.display()
                        ))
                    })?;
                (Some(log), Some(tx))
            }
            None => (None, None),
        };
        let mut controller = Controller::new(
            records,
            config.control.is_some(),
            handles,
            custom_schedulers,
        );
        if handed.udp_sessions_follow {
            controller.udp_moves = Arc::new(crate::proxy::udp_moved::SessionMoves::awaiting());
        }
        let controller = Controller::shared(controller);
        controller.inherited.put(inherited);
        for (service, listen, copies) in handed.listeners {
            controller.inherited.put_listener(&service, listen, copies);
        }
        if let Some(carried) = handed.carried {
            *controller.carried.lock().unwrap_or_else(|p| p.into_inner()) = Some(carried);
        }
        let process = Arc::new(Started {
            pid: std::process::id(),
            at: std::time::SystemTime::now(),
            version: env!("CARGO_PKG_VERSION"),
            upgraded_from: handed.from,
        });
        let acme_store = fleet.as_ref().and_then(crate::fleet::acme_store);
        let started =
            Self::start_controller(&controller, config, handed.control_socket, acme_store).await;
        for local in controller.inherited.unused() {
            tracing::warn!(%local, "no listener has the address of this inherited socket");
        }
        match started {
            Ok(boot) => {
                let fleet = fleet.and_then(|fleet| crate::fleet::start(&controller, fleet));
                let handle = BalancerHandle {
                    controller,
                    fleet,
                    boot,
                    workers: pool,
                    access_log,
                    file,
                    process,
                };
                handle.start_config_check();
                Ok(handle)
            }
            Err(error) => {
                controller.stop_accepting.cancel();
                if let Some(pool) = pool {
                    let _ = tokio::task::spawn_blocking(move || pool.stop()).await;
                }
                Err(error)
            }
        }
    }

    async fn start_controller(
        controller: &Arc<Controller>,
        config: Config,
        control_socket_handed: Option<std::os::unix::net::UnixListener>,
        acme_store: Option<Arc<dyn crate::control::acme::Store>>,
    ) -> Result<Arc<Config>, ControlError> {
        let boot = Arc::new(config.clone());
        let control_socket = config.control.clone();
        controller.apply(Command::Replace(Box::new(config))).await?;
        if let Some(control) = control_socket {
            let socket = crate::lookup::Socket {
                inherited: control_socket_handed,
                handed_over: controller.handed_over.clone(),
            };
            let started = crate::lookup::start(
                &control.socket,
                socket,
                controller.data.registry.clone(),
                controller.stop_accepting.clone(),
            );
            if let Ok(dup) = &started {
                *controller
                    .control_socket
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = dup.try_clone().ok();
            }
            if let Err(source) = started {
                controller.stop_accepting.cancel();
                return Err(ControlError::BindListener {
                    listen: format!("control socket {}", control.socket.display()),
                    source,
                });
            }
        }
        tokio::spawn(crate::proxy::sweep_idle(
            controller.data.clone(),
            controller.stopped.clone(),
        ));
        tokio::spawn(crate::control::follow_names(
            Arc::downgrade(controller),
            controller.stop_accepting.clone(),
        ));
        tokio::spawn(crate::control::watch_certificates(
            Arc::downgrade(controller),
            controller.stop_accepting.clone(),
        ));
        tokio::spawn(crate::control::acme::run(
            Arc::downgrade(controller),
            controller.stop_accepting.clone(),
            acme_store,
        ));
        tokio::spawn(health::backup::watch(
            controller.data.snapshots.clone(),
            controller.data.events.clone(),
            controller.stop_accepting.clone(),
        ));
        tokio::spawn(health::checks::run(
            controller.data.snapshots.clone(),
            health::checks::Tell {
                events: controller.data.events.clone(),
                registry: controller.data.registry.clone(),
            },
            controller.stop_accepting.clone(),
        ));
        tokio::spawn(health::agent::run(
            controller.data.snapshots.clone(),
            health::checks::Tell {
                events: controller.data.events.clone(),
                registry: controller.data.registry.clone(),
            },
            controller.stop_accepting.clone(),
        ));
        // Both always run: each reads its settings from the snapshot every round,
        // so a reload can enable, disable or re-time it.
        for task in [Manager::HostCheck, Manager::Heartbeat] {
            tokio::spawn(health::run(
                task,
                controller.data.snapshots.clone(),
                controller.data.events.clone(),
                controller.stop_accepting.clone(),
            ));
        }
        Ok(boot)
    }
}

/// A handle on a running balancer. Clones are cheap and all steer the same one.
#[derive(Clone)]
pub struct BalancerHandle {
    controller: Arc<Controller>,
    /// Fleet mode: where configuration changes go first (etcd), before the
    /// controller applies them.
    fleet: Option<Arc<crate::fleet::FleetLink>>,
    /// The configuration as given at start, for "what changed since boot".
    boot: Arc<Config>,
    /// The data-path workers, when the balancer has its own.
    workers: Option<Arc<WorkerPool>>,
    /// The access log, when one is kept.
    access_log: Option<AccessLog>,
    /// The configuration file it runs from, when it names one (reload).
    file: Option<Arc<ConfigFile>>,
    /// How it started.
    process: Arc<Started>,
}

impl std::fmt::Debug for BalancerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancerHandle").finish_non_exhaustive()
    }
}

// --- the configuration file (reload: crate::reload) ---------------------------
impl BalancerHandle {
    /// The configuration file the balancer runs from (reload, write-back, the
    /// outcome of the last reload); `None` when its configuration names none.
    pub fn config_file(&self) -> Option<&Arc<ConfigFile>> {
        self.file.as_ref()
    }

    /// The configCheck manager, when the file is written back: it reads its
    /// interval and enable flag from the running configuration every round, so
    /// a reload can turn it on. Ends at shutdown.
    fn start_config_check(&self) {
        if let Some(writeback) = self.file.as_ref().and_then(|f| f.write_back()) {
            let handle = self.clone();
            tokio::spawn(crate::config::writeback::run_config_check(
                writeback.clone(),
                move || handle.config_shared(),
                self.controller.stop_accepting.clone(),
            ));
        }
    }
}
// --- end of the configuration file ---------------------------------------------

impl BalancerHandle {
    /// Applies a change. On error the running balancer is unchanged.
    ///
    /// In fleet mode (`<cluster>`) a configuration change is written to etcd
    /// first and refused with [`ControlError::FleetConflict`] when another
    /// instance changed the configuration meanwhile, or
    /// [`ControlError::FleetUnavailable`] while etcd cannot be reached; a
    /// [`Command::Replace`] then takes only the instance's own settings
    /// (cluster, logging, control socket, admin listeners) from its
    /// configuration, the rest coming from etcd.
    pub async fn apply(&self, command: Command) -> Result<(), ControlError> {
        match &self.fleet {
            // An admin-down flag is this instance's own, not the fleet's.
            Some(fleet) if !matches!(command, Command::SetAdminDown { .. }) => {
                fleet.change(command).await
            }
            _ => self.controller.apply(command).await,
        }
    }

    /// How this balancer started (when, version, fresh or by an upgrade, with
    /// the connections moved so far).
    pub fn started(&self) -> Started {
        let mut started = Started::clone(&self.process);
        if let Some(from) = &mut started.upgraded_from {
            from.connections_moved = self
                .controller
                .moved_in
                .load(std::sync::atomic::Ordering::Relaxed);
        }
        started
    }

    /// The controller, for the upgrade (`crate::upgrade`), which reads and
    /// hands over what the balancer runs with.
    pub(crate) fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// The running configuration (as changed since start).
    pub fn config(&self) -> Config {
        self.controller.running()
    }

    /// The running configuration without copying it (a copy of 100,000 hosts
    /// is not free): for the managers that only look at it.
    pub(crate) fn config_shared(&self) -> Arc<Config> {
        self.controller.running_shared()
    }

    /// Fleet mode: the fleet as this instance last saw it; `None` without
    /// `<cluster>`.
    pub(crate) fn fleet(&self) -> Option<crate::fleet::FleetView> {
        self.fleet.as_ref().map(|link| link.view())
    }

    /// Closes and reopens the access log file, if one is kept (log rotation).
    pub fn reopen_access_log(&self) -> std::io::Result<()> {
        self.access_log.as_ref().map_or(Ok(()), AccessLog::reopen)
    }

    /// The configuration as given at start.
    pub fn boot_config(&self) -> Arc<Config> {
        self.boot.clone()
    }

    /// Listeners currently accepting, with their bound addresses.
    pub fn listeners(&self) -> Vec<BoundListener> {
        self.controller.listeners()
    }

    /// The bound address of the first listener of `service` configured as
    /// `listen`, or of its first listener when `listen` is `None`.
    pub fn local_addr(
        &self,
        service: &str,
        listen: Option<&ListenAddr>,
    ) -> Option<std::net::SocketAddr> {
        let configured = listen.map(ToString::to_string);
        self.listeners()
            .into_iter()
            .find(|l| {
                l.service == service && configured.as_ref().is_none_or(|c| *c == l.configured)
            })
            .map(|l| l.local)
    }

    /// The client certificate of every group that originates TLS with one,
    /// as (service, group, certificate).
    pub fn client_certificates(&self) -> Vec<(String, String, crate::CertificateStats)> {
        let now = std::time::SystemTime::now();
        let snapshot = self.controller.data.snapshots.load();
        let mut out = Vec::new();
        for service in snapshot.services() {
            for group in &service.groups {
                if let Some(cert) = group.origin.as_ref().and_then(|o| o.cert.as_ref()) {
                    out.push((
                        service.name.to_string(),
                        group.name.to_string(),
                        crate::CertificateStats::of(cert, now),
                    ));
                }
            }
        }
        out
    }

    /// A point-in-time copy of every service, group and host with its counters.
    pub fn stats(&self) -> Stats {
        Stats::of(
            &self.controller.data.snapshots.load(),
            &self.listeners(),
            &self.controller.removed_hosts(),
        )
    }

    /// Open connections and UDP sessions, oldest first, optionally only
    /// those of one service and one host name; after an upgrade, those still
    /// draining in the previous process too (`draining_in`). UDP sessions
    /// come from their listeners' relay threads, each asked and waited for
    /// at most 100 ms (one that has not answered by then is left out), at
    /// most 10,000 per listener.
    pub fn connections(&self, service: Option<&str>, host: Option<&str>) -> Vec<ConnectionInfo> {
        let registry = &self.controller.data.registry;
        let mut list = registry.list(|c| {
            service.is_none_or(|s| *c.place.service == *s)
                && host.is_none_or(|h| *c.place.host == *h)
        });
        // Those still draining in the previous process of an upgrade.
        let elsewhere = registry.list_elsewhere(|s, h| {
            service.is_none_or(|want| want == s) && host.is_none_or(|want| want == h)
        });
        let sessions = registry.list_sessions(service, host);
        if !elsewhere.is_empty() || !sessions.is_empty() {
            list.extend(elsewhere);
            list.extend(sessions);
            list.sort_by_key(|c| c.id);
        }
        list
    }

    /// Closes one open connection (one still draining in the previous
    /// process of an upgrade too) or ends one UDP session (its relay does,
    /// before this returns, waited for at most 100 ms); false if it no
    /// longer exists.
    pub fn close_connection(&self, id: u64) -> bool {
        self.controller.data.registry.close(id)
    }

    /// Drains a host: it takes no new connections (it is admin-down until
    /// [`Command::SetAdminDown`] puts it back), established ones continue, and
    /// with a `deadline` those still open then are closed. Returns at once.
    pub async fn drain_host(
        &self,
        service: &str,
        group: &str,
        host: &str,
        deadline: Option<Duration>,
    ) -> Result<(), ControlError> {
        let stats = self.controller.host_stats(service, group, host)?;
        self.apply(Command::SetAdminDown {
            service: service.into(),
            group: group.into(),
            host: host.into(),
            down: true,
        })
        .await?;
        self.controller.data.events.emit(Event::HostDraining {
            service: service.into(),
            group: group.into(),
            host: host.into(),
            open: stats.open(),
            deadline_ms: deadline.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        });
        if let Some(deadline) = deadline {
            let place = (service.to_string(), group.to_string(), host.to_string());
            self.controller.drain_deadline(&stats, place, deadline);
        }
        Ok(())
    }

    /// Probes one host now (the legacy `retryHost`); returns whether it answered,
    /// and puts it back in rotation if it did.
    pub async fn retry_host(
        &self,
        service: &str,
        group: &str,
        host: &str,
    ) -> Result<bool, ControlError> {
        let (target, origin, timeout) = {
            let snapshot = self.controller.data.snapshots.load();
            let s = snapshot
                .service(service)
                .ok_or_else(|| ControlError::UnknownService(service.into()))?;
            let g = s.groups.iter().find(|g| &*g.name == group).ok_or_else(|| {
                ControlError::UnknownGroup {
                    service: service.into(),
                    group: group.into(),
                }
            })?;
            let h = g.hosts.iter().find(|h| &*h.name == host).ok_or_else(|| {
                ControlError::UnknownHost {
                    service: service.into(),
                    group: group.into(),
                    host: host.into(),
                }
            })?;
            (h.clone(), g.origin.clone(), s.connect_timeout)
        };
        match health::probe(&target, origin.as_deref(), timeout).await {
            Ok(()) => {
                if target.stats.mark_up() {
                    self.controller.data.events.host_back(service, group, host);
                }
                Ok(true)
            }
            Err(reason) => {
                if target.stats.mark_bad(reason.clone()) {
                    self.controller
                        .data
                        .events
                        .host_bad(service, group, host, &reason);
                }
                Ok(false)
            }
        }
    }

    /// Events from now on: transitions (host bad / back, group enabled, backup
    /// groups, listeners) and every change made through any surface (services,
    /// groups, hosts, schedulers, users, admin-down, draining). A subscriber that
    /// falls more than 1,024 events behind gets a [`Lagged`](crate::events::Lagged)
    /// item and continues with newer events.
    pub fn events(&self) -> crate::events::EventStream {
        crate::events::EventStream::new(self.controller.data.events.subscribe())
    }

    /// A token cancelled when shutdown begins.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.controller.stop_accepting.clone()
    }

    /// Graceful shutdown: stop accepting and the managers, let open connections
    /// finish for up to `grace`, then close the rest. Resolves when all are gone.
    pub async fn shutdown(&self, grace: Duration) {
        let c = &self.controller;
        c.stop_accepting.cancel();
        c.release_sockets();
        c.connections.close();
        if tokio::time::timeout(grace, c.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = c.connections.len(),
                "grace period over: closing open connections"
            );
            c.stop_connections.cancel();
            c.data
                .registry
                .close_where(CloseRequest::Shutdown, |_| true);
            c.connections.wait().await;
        }
        c.stopped.cancel();
        if let Some(pool) = self.workers.clone() {
            let _ = tokio::task::spawn_blocking(move || pool.stop()).await;
        }
    }
}

/// Counters and state of the whole balancer at one moment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Services in configuration order.
    pub services: Vec<ServiceStats>,
}

/// One service's state.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServiceStats {
    /// Service name.
    pub name: String,
    /// What it carries: `tcp` or `udp`.
    pub protocol: &'static str,
    /// Bound listeners.
    pub listeners: Vec<BoundListener>,
    /// Name of the enabled group.
    pub enabled_group: String,
    /// The group new connections go to now: the enabled group while one of its
    /// hosts is usable, else the first backup group with one; `None` when no
    /// group has a usable host.
    pub serving_group: Option<String>,
    /// Whether `serving_group` is a backup group (the enabled group has no
    /// usable host).
    pub on_backup: bool,
    /// Groups in configuration order.
    pub groups: Vec<GroupStats>,
    /// Service-wide counters.
    pub counters: ServiceCountersView,
}

/// One group's state.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupStats {
    /// Group name.
    pub name: String,
    /// Scheduler name.
    pub scheduler: String,
    /// Whether this is the enabled group.
    pub enabled: bool,
    /// Whether this is a backup group (`backup="true"`).
    pub backup: bool,
    /// Hosts in configuration order.
    pub hosts: Vec<HostStatsEntry>,
    /// Hosts removed from the group whose connections are still open.
    pub draining: Vec<HostStatsEntry>,
    /// When the group originates TLS: its handshakes with its hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<OriginStats>,
}

/// An originating group's TLS handshakes with its hosts (clients'
/// connections; not the health probes), as reported to observers.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OriginStats {
    /// Handshakes by result: `ok`, `verify_failed` (the host's certificate
    /// did not verify), `handshake_error` (any other failure), `timeout`
    /// (not done within the connect timeout); every result, zero included.
    pub handshakes: Vec<(&'static str, u64)>,
    /// How long the completed handshakes took.
    pub handshake_latency: crate::state::LatencyView,
}

impl OriginStats {
    fn of(counters: &crate::tls::origin::OriginCounters) -> OriginStats {
        use crate::tls::origin::{HANDSHAKE_BUCKETS, OriginResult};
        OriginStats {
            handshakes: OriginResult::ALL
                .iter()
                .map(|&r| (r.as_str(), counters.handshakes(r)))
                .collect(),
            handshake_latency: crate::state::LatencyView {
                le_seconds: HANDSHAKE_BUCKETS.to_vec(),
                counts: counters.buckets(),
                sum_seconds: counters.micros() as f64 / 1e6,
            },
        }
    }
}

/// One host's configuration and counters.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HostStatsEntry {
    /// Host name.
    pub name: String,
    /// Address as configured.
    pub address: String,
    /// Weight.
    pub weight: u32,
    /// Counters and health.
    #[serde(flatten)]
    pub stats: HostStatsView,
}

impl Stats {
    fn of(
        snapshot: &Snapshot,
        listeners: &[BoundListener],
        removed: &[(Arc<str>, Arc<str>, HostSnapshot)],
    ) -> Stats {
        let entry = |h: &HostSnapshot| HostStatsEntry {
            name: h.name.to_string(),
            address: h.address.to_string(),
            weight: h.weight,
            stats: h.stats.view(),
        };
        let services = snapshot
            .services()
            .iter()
            .map(|s| (s, s.serving_group()))
            .map(|(s, serving)| ServiceStats {
                name: s.name.to_string(),
                protocol: s.options.protocol.as_str(),
                listeners: listeners
                    .iter()
                    .filter(|l| *l.service == *s.name)
                    .cloned()
                    .collect(),
                enabled_group: s
                    .enabled_group()
                    .map(|g| g.name.to_string())
                    .unwrap_or_default(),
                serving_group: serving.map(|i| s.groups[i].name.to_string()),
                on_backup: serving.is_some_and(|i| i != s.enabled),
                groups: s
                    .groups
                    .iter()
                    .enumerate()
                    .map(|(i, g)| GroupStats {
                        name: g.name.to_string(),
                        scheduler: g.scheduler_kind.to_string(),
                        enabled: i == s.enabled,
                        backup: g.options.backup,
                        hosts: g.hosts.iter().map(entry).collect(),
                        draining: removed
                            .iter()
                            .filter(|(rs, rg, _)| *rs == s.name && *rg == g.name)
                            .map(|(_, _, h)| entry(h))
                            .collect(),
                        tls: g.origin.as_ref().map(|o| OriginStats::of(&o.counters)),
                    })
                    .collect(),
                counters: s.counters.view(),
            })
            .collect();
        Stats { services }
    }

    /// The host `host` of group `group` of service `service`, if any.
    pub fn host(&self, service: &str, group: &str, host: &str) -> Option<&HostStatsEntry> {
        self.services
            .iter()
            .find(|s| s.name == service)?
            .groups
            .iter()
            .find(|g| g.name == group)?
            .hosts
            .iter()
            .find(|h| h.name == host)
    }
}
