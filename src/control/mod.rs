//! The controller: the single writer of the running state. Every change arrives as a
//! [`Command`], is checked against a copy of the running configuration, and becomes
//! a new [`Snapshot`] swapped in whole. The controller is never on the data path.

pub(crate) mod acme;
mod build;
mod command;
mod error;
mod listeners;
mod names;
mod origins;
mod tell;

pub use command::Command;
pub use error::ControlError;
pub(crate) use names::run as follow_names;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ListenAddr, ResolverOptions};
use crate::dns::{self, Answer, NameState, Resolver};
use crate::events::{Event, Events};
use crate::proxy::{ConnectionRecord, DataPlane, ListenerSettings};
use crate::scheduler::{SchedulerFactory, SchedulerKind};
use crate::snapshot::Snapshot;
use crate::state::{ConnectionRegistry, HostSnapshot, HostStats, Limiter, ServiceCounters};
use build::Touched;
use listeners::RunningListener;
use tokio::sync::mpsc;

/// How long after a change that left tables behind they are rebuilt: hosts
/// added one after another meanwhile share one rebuild.
const TABLES_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

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
    /// Its routes in order, with the clients each matched (empty: the listener
    /// does not route).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteStats>,
    /// On a listener with routes: clients whose first bytes were odd, by kind
    /// (`truncated_hello`, `silent`, …; kinds never seen are left out).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub anomalies: Vec<(&'static str, u64)>,
    /// On a listener that terminates TLS: its certificates and handshakes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStats>,
}

/// A terminating listener's certificates and handshakes, as reported to
/// observers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TlsStats {
    /// Its certificates, in configuration order (the first serves clients
    /// whose SNI matches none).
    pub certificates: Vec<CertificateStats>,
    /// When its certificates come from ACME: every name ordered (each
    /// certificate is listed once issued).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub acme: Vec<String>,
    /// The names of each certificate from ACME not issued yet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub acme_pending: Vec<Vec<String>>,
    /// Completed handshakes by version (`1.2`, `1.3`).
    pub handshakes: Vec<(&'static str, u64)>,
    /// Failed handshakes by reason (`timeout`, `not_tls`, …; every reason,
    /// zero included).
    pub handshake_errors: Vec<(&'static str, u64)>,
}

/// One certificate of a terminating listener.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertificateStats {
    /// The name it is shown by (its first DNS name, else its subject).
    pub name: String,
    /// Every DNS name it serves.
    pub names: Vec<String>,
    /// Its issuer.
    pub issuer: String,
    /// Where it comes from: `file` (read from `file`) or `acme` (ordered
    /// by txlb; `file` is where it is stored).
    pub source: &'static str,
    /// The file it was read from (stored in, for `acme`).
    pub file: String,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// Seconds left until then (negative: expired), at the time of the call.
    pub expires_in: i64,
    /// Whether it expires within 14 days (or has).
    pub expiring: bool,
}

impl CertificateStats {
    /// What observers see of `c` at `now`.
    pub(crate) fn of(c: &crate::tls::CertInfo, now: std::time::SystemTime) -> CertificateStats {
        let warn = crate::tls::EXPIRY_WARNING.as_secs() as i64;
        CertificateStats {
            name: c.name().to_string(),
            names: c.names.clone(),
            issuer: c.issuer.clone(),
            source: "file",
            file: c.file.display().to_string(),
            not_after: c.not_after,
            expires_in: c.expires_in(now),
            expiring: c.expires_in(now) <= warn,
        }
    }
}

impl TlsStats {
    fn of(t: &crate::proxy::Terminating) -> TlsStats {
        use crate::tls::HandshakeFailure;
        let now = std::time::SystemTime::now();
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        TlsStats {
            certificates: t
                .terminator
                .cert_infos()
                .iter()
                .map(|c| CertificateStats {
                    source: match t.terminator.acme {
                        Some(_) => "acme",
                        None => "file",
                    },
                    ..CertificateStats::of(c, now)
                })
                .collect(),
            acme: t.terminator.config.acme_names().cloned().collect(),
            acme_pending: t.terminator.acme_pending(),
            handshakes: vec![
                ("1.2", t.counters.tls12.load(relaxed)),
                ("1.3", t.counters.tls13.load(relaxed)),
            ],
            handshake_errors: HandshakeFailure::ALL
                .iter()
                .map(|&why| (why.as_str(), t.counters.failures(why)))
                .collect(),
        }
    }
}

/// One route of a listener, as reported to observers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteStats {
    /// Its conditions, as one line (`sni=api.example.com alpn=h2`).
    pub route: String,
    /// The service it sends clients to.
    pub service: String,
    /// Clients it matched since it was added.
    pub hits: u64,
}

impl BoundListener {
    /// What observers see of a running listener now: its counters are read at
    /// the call.
    fn of(
        service: &str,
        configured: &ListenAddr,
        local: SocketAddr,
        settings: &ListenerSettings,
    ) -> BoundListener {
        let routing = settings.routing.as_ref();
        BoundListener {
            service: service.to_string(),
            configured: configured.to_string(),
            local,
            accept_proxy: settings.proxy.is_some(),
            routes: routing.map_or_else(Vec::new, |r| {
                r.targets
                    .iter()
                    .map(|t| RouteStats {
                        route: t.label.to_string(),
                        service: t.service.to_string(),
                        hits: t.hits.load(std::sync::atomic::Ordering::Relaxed),
                    })
                    .collect()
            }),
            anomalies: routing.map_or_else(Vec::new, |r| {
                crate::routing::Anomaly::ALL
                    .iter()
                    .map(|&a| (a.as_str(), r.anomaly_count(a)))
                    .filter(|(_, n)| *n > 0)
                    .collect()
            }),
            tls: settings.tls.as_ref().map(TlsStats::of),
        }
    }
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
    /// Sockets handed over at start (socket activation, an upgrade), used
    /// instead of binding.
    pub(crate) inherited: listeners::Inherited,
    /// Cancelled once an upgrade handed this process's sockets to a new one:
    /// what they name on disk (the control socket's file) is the new one's.
    pub(crate) handed_over: CancellationToken,
    /// A duplicate of the control socket's listening socket, for an upgrade
    /// to hand over; set once at start.
    pub(crate) control_socket: Mutex<Option<std::os::fd::OwnedFd>>,
    /// What the previous process carried over (an upgrade), taken on by the
    /// first snapshot's hosts and services before any listener accepts.
    pub(crate) carried: Mutex<Option<Carried>>,
    /// Established connections the previous process handed over (an
    /// upgrade); also picks the worker each lands on, round robin.
    pub(crate) moved_in: std::sync::atomic::AtomicU64,
    /// UDP sessions moving in an upgrade: given up by this process's
    /// listeners, or handed over by the previous process.
    pub(crate) udp_moves: Arc<crate::proxy::udp_moved::SessionMoves>,
    /// A rebuild of tables left behind by a change is on its way
    /// ([`Controller::refresh_tables`]).
    tables_due: std::sync::atomic::AtomicBool,
    /// The certificates from ACME and the challenges being answered: given
    /// to listeners by each change, filled by the ordering task
    /// (`acme::run`).
    pub(crate) acme: Arc<crate::tls::AcmeCerts>,
}

/// The hosts' health and counters and the services' counters a previous
/// process carried over in an upgrade, by name.
#[derive(Debug, Default)]
pub struct Carried {
    /// By (service, group, host).
    pub hosts: HashMap<(String, String, String), crate::state::CarriedHost>,
    /// By service.
    pub services: HashMap<String, crate::state::ServiceCountersView>,
    /// What the hosts' names last resolved to, by name: taken as the first
    /// answers instead of look-ups (asked again at the resolver's floor).
    pub names: HashMap<String, Vec<std::net::IpAddr>>,
    /// Connections are numbered after this id (the previous process's ids
    /// are never given again: its connections keep theirs when they move).
    pub numbered_after: u64,
}

impl Controller {
    /// Every host name with the addresses it last resolved to (names that
    /// never resolved are left out), for an upgrade to carry.
    pub(crate) fn known_names(&self) -> Vec<(String, Vec<std::net::IpAddr>)> {
        self.lock()
            .names
            .iter()
            .filter(|(_, known)| !known.addrs.is_empty())
            .map(|(name, known)| (name.clone(), known.addrs.clone()))
            .collect()
    }

    /// Gives the hosts and services of `snapshot` (the first) what the
    /// previous process carried: before any listener accepts, so no client
    /// sees an admin-down host in rotation. Running ejections and drains
    /// get their timers again.
    fn restore(&self, snapshot: &Snapshot, carried: Carried) {
        self.data.registry.numbered_from(carried.numbered_after);
        let mut restored = 0usize;
        for service in snapshot.services() {
            if let Some(counters) = carried.services.get(&*service.name) {
                service.counters.restore(counters);
            }
            for group in &service.groups {
                for host in group.hosts.iter() {
                    let key = (
                        service.name.to_string(),
                        group.name.to_string(),
                        host.name.to_string(),
                    );
                    let Some(was) = carried.hosts.get(&key) else {
                        continue;
                    };
                    restored += 1;
                    let (service, group, host_name) = key;
                    if let Some((left, number)) = host.stats.restore(was) {
                        let (events, stats) = (self.data.events.clone(), host.stats.clone());
                        let (service, group, host) =
                            (service.clone(), group.clone(), host_name.clone());
                        tokio::spawn(async move {
                            tokio::time::sleep(left).await;
                            if stats.end_ejection(number, crate::state::clock_nanos()) {
                                events.emit(Event::HostReturned {
                                    service,
                                    group,
                                    host,
                                });
                            }
                        });
                    }
                    if let Some(deadline) = was.drain_deadline_ms {
                        let left = crate::state::from_unix_ms(deadline)
                            .duration_since(std::time::SystemTime::now())
                            .unwrap_or_default();
                        self.drain_deadline(&host.stats, (service, group, host_name), left);
                    }
                }
            }
        }
        tracing::info!(hosts = restored, "state of the previous process taken on");
    }

    /// Adds the counts the previous process made after it handed over (its
    /// last clients, the bytes of connections before they moved).
    pub(crate) fn add_counts(
        &self,
        hosts: HashMap<(String, String, String), crate::state::CarriedHost>,
        services: HashMap<String, crate::state::ServiceCountersView>,
    ) {
        let snapshot = self.data.snapshots.load();
        for service in snapshot.services() {
            if let Some(delta) = services.get(&*service.name) {
                service.counters.add(delta);
            }
            for group in &service.groups {
                for host in group.hosts.iter() {
                    let key = (
                        service.name.to_string(),
                        group.name.to_string(),
                        host.name.to_string(),
                    );
                    if let Some(delta) = hosts.get(&key) {
                        host.stats.add_counts(delta);
                    }
                }
            }
        }
    }

    /// Closes the connections of `stats`' host still open after `left`, if
    /// it is still draining (admin-down) then: a drain's deadline.
    pub(crate) fn drain_deadline(
        &self,
        stats: &Arc<HostStats>,
        (service, group, host): (String, String, String),
        left: std::time::Duration,
    ) {
        stats.set_drain_deadline(Some(std::time::SystemTime::now() + left));
        let registry = self.data.registry.clone();
        let stop = self.stop_accepting.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(left) => {}
                _ = stop.cancelled() => return,
            }
            stats.set_drain_deadline(None);
            // Still draining (not put back up meanwhile)? Cut what is left.
            if stats.is_admin_down() {
                let mut closed = registry.close_where(crate::state::CloseRequest::Admin, |c| {
                    Arc::ptr_eq(&c.host_stats, &stats)
                });
                // UDP sessions are the relays' to end (a bounded wait).
                closed += tokio::task::spawn_blocking(move || registry.close_sessions_on(&stats))
                    .await
                    .unwrap_or(0);
                tracing::info!(
                    service,
                    group,
                    host,
                    closed,
                    "drain deadline: connections closed"
                );
            }
        });
    }
}

impl Controller {
    /// Takes on an established connection the previous process handed over:
    /// parked in a worker's lot (round robin; `fallback` without workers),
    /// on its host and under the listener it reached. False, and closed,
    /// when its host or listener is not in this configuration.
    /// UDP sessions the previous process handed over (an upgrade), for
    /// their listeners to take on; with `last`, none follow. One whose
    /// listener is not here is closed.
    pub(crate) fn adopt_udp(&self, sessions: Vec<crate::proxy::udp_moved::Moving>, last: bool) {
        let listening: Vec<std::net::SocketAddr> = {
            let state = self.lock();
            state
                .listeners
                .iter()
                .filter(|l| l.udp)
                .map(|l| l.local)
                .collect()
        };
        let (here, gone): (Vec<_>, Vec<_>) = sessions
            .into_iter()
            .partition(|(s, _)| listening.contains(&s.listener));
        if !gone.is_empty() {
            tracing::info!(
                sessions = gone.len(),
                "upgrade: handed-over UDP sessions of a listener not here: closed"
            );
        }
        self.udp_moves.arrive(here, last);
    }

    pub(crate) fn adopt(
        &self,
        record: crate::proxy::moved::MovedConnection,
        client: std::net::TcpStream,
        host: std::net::TcpStream,
        fallback: &tokio::runtime::Handle,
    ) -> bool {
        let listener = {
            let state = self.lock();
            state
                .listeners
                .iter()
                .find(|l| l.local == record.listener)
                .map(|l| {
                    Arc::new(crate::proxy::ListenerTask {
                        service: l.service.clone(),
                        settings: l.settings.clone(),
                        data: self.data.clone(),
                        stop_accepting: l.stop.clone(),
                        stop_connections: self.stop_connections.clone(),
                        tracker: self.connections.clone(),
                        successor: l.successor.clone(),
                    })
                })
        };
        let Some(listener) = listener else {
            tracing::info!(
                id = record.id,
                service = record.service,
                listener = %record.listener,
                "upgrade: a handed-over connection's listener is gone: closed"
            );
            return false;
        };
        let snapshot = self.data.snapshots.load();
        // Its service by name, else (renamed by a reload since it connected)
        // the one its listener serves now.
        let Some(service) = snapshot
            .service(&record.service)
            .or_else(|| snapshot.service(&listener.service))
        else {
            tracing::info!(
                id = record.id,
                service = record.service,
                "upgrade: a handed-over connection's service is gone: closed"
            );
            return false;
        };
        let (stats, place) = match landing_host(service, &record) {
            Some(host) => (host.stats.clone(), host.place.clone()),
            // Removed since it connected: it runs on, counted on no host, as
            // it did in the previous process, under the service it landed in
            // (whose timeouts it keeps to).
            None => (
                HostStats::new(),
                crate::state::HostPlace::new(&service.name, &record.group, &record.host),
            ),
        };
        let (counters, admission) = (
            service.counters.clone(),
            crate::proxy::hold(record.client, &service.options, &service.limiter),
        );
        let landing = crate::proxy::moved::Landing {
            stats,
            place,
            counters,
            admission,
            listener,
        };
        let n = self
            .moved_in
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed) as usize;
        let runtime = match self.workers.len() {
            0 => fallback,
            count => &self.workers[n % count],
        };
        #[cfg(target_os = "linux")]
        drop(runtime.spawn(async move {
            crate::proxy::moved::adopt(record, client, host, landing);
        }));
        #[cfg(not(target_os = "linux"))]
        let _ = (runtime, record, client, host, landing);
        true
    }
}

/// The host a connection handed over by the previous process goes on with:
/// the one of its names, else (renamed or moved to another group by a
/// reload since it connected) the one of the address it is connected to.
fn landing_host<'a>(
    service: &'a crate::snapshot::ServiceSnapshot,
    record: &crate::proxy::moved::MovedConnection,
) -> Option<&'a HostSnapshot> {
    let hosts = || service.groups.iter().flat_map(|g| g.hosts.iter());
    let named = service
        .groups
        .iter()
        .filter(|g| *g.name == *record.group)
        .flat_map(|g| g.hosts.iter())
        .find(|h| *h.name == *record.host);
    named.or_else(|| {
        hosts().find(|h| {
            let address = &h.address;
            h.stats.resolved() == Some(record.host_addr)
                || (address.port == record.host_addr.port()
                    && address.host.parse::<std::net::IpAddr>() == Ok(record.host_addr.ip()))
        })
    })
}

/// A host removed from the configuration, still draining: its service, its
/// group and itself.
type RemovedHost = (Arc<str>, Arc<str>, HostSnapshot);

/// What readers see of the control state, published by each change.
struct Views {
    running: ArcSwap<Config>,
    listeners: ArcSwap<Vec<ListenerView>>,
    removed: ArcSwap<Vec<RemovedHost>>,
}

/// What readers see of a running listener; its settings are read when asked.
struct ListenerView {
    service: Arc<str>,
    configured: ListenAddr,
    local: SocketAddr,
    settings: Arc<ArcSwap<ListenerSettings>>,
}

struct ControlState {
    /// The same configuration as `views.running`.
    running: Arc<Config>,
    next_host_id: u64,
    /// Service counters by service name, kept across snapshots.
    service_counters: HashMap<String, Arc<ServiceCounters>>,
    /// Admission state by service name, kept across snapshots.
    limiters: HashMap<String, Arc<Limiter>>,
    /// Hosts removed from the configuration that still had open connections, with
    /// their service and group; shown as draining until their last one closes.
    removed: Vec<(Arc<str>, Arc<str>, HostSnapshot)>,
    listeners: Vec<RunningListener>,
    /// Every host name of the running configuration, with the shortest
    /// `resolve` interval asked for it (`dns::names_of`).
    intervals: Arc<HashMap<String, Option<std::time::Duration>>>,
    /// What is known of every host name in the running configuration.
    names: HashMap<String, NameState>,
    /// The resolver of the running configuration's `<resolver>` settings.
    resolver: Arc<Resolver>,
    /// The TLS of the running configuration's originating groups, by
    /// (service, group): what `build_snapshot` puts in their snapshots.
    originators: origins::Originators,
}

impl Controller {
    /// An engine with nothing configured.
    pub(crate) fn new(
        access_log: Option<mpsc::Sender<ConnectionRecord>>,
        index_host_side: bool,
        workers: Vec<tokio::runtime::Handle>,
        custom_schedulers: HashMap<&'static str, SchedulerFactory>,
    ) -> Self {
        let acme = Arc::new(crate::tls::AcmeCerts::default());
        Controller {
            data: Arc::new(DataPlane {
                challenges: acme.challenges.clone(),
                snapshots: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
                events: Events::new(),
                registry: Arc::new(ConnectionRegistry::default()),
                access_log,
                index_host_side,
            }),
            state: Mutex::new(ControlState {
                running: Arc::new(empty_config()),
                next_host_id: 0,
                service_counters: HashMap::new(),
                limiters: HashMap::new(),
                removed: Vec::new(),
                originators: HashMap::new(),
                listeners: Vec::new(),
                intervals: Arc::default(),
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
            handed_over: CancellationToken::new(),
            control_socket: Mutex::new(None),
            carried: Mutex::new(None),
            moved_in: std::sync::atomic::AtomicU64::new(0),
            udp_moves: Arc::new(crate::proxy::udp_moved::SessionMoves::new()),
            tables_due: std::sync::atomic::AtomicBool::new(false),
            acme,
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

    /// Every running listener with a duplicate of each of its sockets, for an
    /// upgrade to hand over: (service, configured address, sockets).
    pub(crate) fn listener_sockets(
        &self,
    ) -> Vec<(Arc<str>, ListenAddr, Vec<std::os::fd::OwnedFd>)> {
        let state = self.lock();
        state
            .listeners
            .iter()
            .map(|l| {
                let sockets = l
                    .sockets
                    .iter()
                    .filter_map(|s| s.try_clone().ok())
                    .collect();
                (l.service.clone(), l.configured.clone(), sockets)
            })
            .collect()
    }

    /// Closes the duplicates of the listening sockets kept for an upgrade
    /// (at shutdown: once the accept tasks end, nothing holds the sockets and
    /// new clients are refused).
    pub(crate) fn release_sockets(&self) {
        for listener in &mut self.lock().listeners {
            listener.sockets.clear();
        }
        self.control_socket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// Listeners currently bound.
    pub(crate) fn listeners(&self) -> Vec<BoundListener> {
        self.views
            .listeners
            .load()
            .iter()
            .map(|l| BoundListener::of(&l.service, &l.configured, l.local, &l.settings.load()))
            .collect()
    }

    /// Publishes what readers see of `state` (see [`Views`]).
    fn publish(&self, state: &ControlState) {
        self.views.running.store(state.running.clone());
        let listeners = state
            .listeners
            .iter()
            .map(|l| ListenerView {
                service: l.service.clone(),
                configured: l.configured.clone(),
                local: l.local,
                settings: l.settings.clone(),
            })
            .collect();
        self.views.listeners.store(Arc::new(listeners));
        self.views.removed.store(Arc::new(state.removed.clone()));
        // New names to order, maybe.
        self.acme.changed.notify_one();
    }

    /// Whether a change may leave a big group's tables behind, to be rebuilt
    /// just after it: only where something can run that rebuild.
    fn defers_tables(&self) -> bool {
        self.me.strong_count() > 0 && tokio::runtime::Handle::try_current().is_ok()
    }

    /// Rebuilds the tables left behind, shortly: changes that follow meanwhile
    /// (hosts added one by one) share the rebuild.
    fn schedule_tables(&self) {
        use std::sync::atomic::Ordering::{AcqRel, Release};
        if self.tables_due.swap(true, AcqRel) {
            return;
        }
        let (Some(me), Ok(runtime)) = (self.me.upgrade(), tokio::runtime::Handle::try_current())
        else {
            self.tables_due.store(false, Release);
            return;
        };
        runtime.spawn(async move {
            tokio::time::sleep(TABLES_DELAY).await;
            me.tables_due.store(false, Release);
            let _ = tokio::task::spawn_blocking(move || me.refresh_tables()).await;
        });
    }

    /// The configuration `command` would make of the running one, without
    /// applying it (listeners are not bound, names not resolved).
    // Fleet mode's only (it checks a change before writing it to etcd).
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
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

    /// Applies one command on this instance: resolves the host names it brings
    /// (outside the lock), then checks and swaps under the lock. On error nothing
    /// has changed. (Fleet mode routes changes through etcd before they get here:
    /// see `BalancerHandle::apply`.)
    pub(crate) async fn apply(&self, command: Command) -> Result<(), ControlError> {
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
        // After an upgrade, the previous process's answers come first.
        let carried: HashMap<String, Vec<std::net::IpAddr>> = self
            .carried
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.names.clone()))
            .unwrap_or_default();
        let mut answers = Vec::new();
        names.retain(|name| match carried.get(name) {
            Some(addrs) if !addrs.is_empty() => {
                let ttl = std::time::Duration::ZERO; // kept at the floor: asked again soon
                answers.push((
                    name.clone(),
                    Ok(Answer {
                        addrs: addrs.clone(),
                        ttl,
                    }),
                ));
                false
            }
            _ => true,
        });
        let mut lookups = tokio::task::JoinSet::new();
        for name in names {
            let resolver = resolver.clone();
            lookups.spawn(async move {
                let result = resolver.lookup(&name).await;
                (name, result)
            });
        }
        answers.extend(lookups.join_all().await);
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
            let stats = self.host_stats(service, group, host)?;
            if stats.set_admin_down(*down) {
                self.data.events.emit(Event::HostAdminDown {
                    service: service.clone(),
                    group: group.clone(),
                    host: host.clone(),
                    down: *down,
                });
            }
            return Ok(());
        }
        let next = self.next_config(Config::clone(&state.running), command)?;
        // Bind new listeners before anything is swapped: a port in use refuses the
        // whole command.
        let (added, removed) = listeners::diff(&state.listeners, &next)?;
        // Certificates are read before anything is bound: one that does not
        // load refuses the whole command, and the running ones stay.
        let reread = matches!(command, Command::Replace(_));
        let terminators = listeners::terminators(&state.listeners, &next, reread, &self.acme)?;
        let originators = origins::originators(&state.originators, &next, reread)?;
        let own: Vec<SocketAddr> = state.listeners.iter().map(|l| l.local).collect();
        let successors = listeners::lend_moved(&state.listeners, &added, &removed, &self.inherited);
        let bound = listeners::bind_all(
            added,
            self.workers.len().max(1),
            &self.inherited,
            &own,
            &terminators,
        );
        self.inherited.drop_lent();
        let bound = bound?;
        // Noted only now: a refused change must leave no successor behind.
        for (successor, service) in successors {
            let _ = successor.set(service);
        }
        // What the names resolve to is known before the hosts are built.
        // Which names the hosts use (and how often to ask): a walk over every
        // host, so only when the change can alter it.
        let intervals = match command {
            // One more name, or one more host of a name: no walk over the
            // other hosts.
            Command::AddHost { host, .. } if dns::is_name(&host.address) => {
                let mut names = HashMap::clone(&state.intervals);
                dns::add_name(&mut names, host);
                Arc::new(names)
            }
            _ if names_may_change(command, &state.running) => Arc::new(dns::names_of(&next)),
            _ => state.intervals.clone(),
        };
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
        let touched = match changed_names.is_empty() {
            true => Touched::by(command),
            // New answers may move hosts of any group that follows those names.
            false => Touched::All,
        };
        state.originators = originators;
        let snapshot = self.build_snapshot(&mut state, &next, &touched);
        let told = tell::changes(&state.running, &next, &touched, &state.removed);
        let behind = snapshot
            .services()
            .iter()
            .flat_map(|s| &s.groups)
            .any(|g| g.tables_behind());
        let taken = self.carried.lock().map(|mut c| c.take()).ok().flatten();
        if let Some(carried) = taken {
            self.restore(&snapshot, carried);
        }
        self.data.snapshots.store(Arc::new(snapshot));
        if behind {
            self.schedule_tables();
        }
        for listener in bound {
            state.listeners.push(listeners::start(listener, self));
        }
        listeners::refresh(&state.listeners, &next, &terminators, &self.data.events);
        state.listeners.retain(|l| {
            let keep = !removed.contains(&((l.service.clone(), l.configured.clone()), l.udp));
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
        for event in told {
            self.data.events.emit(event);
        }
        state.names.retain(|name, _| intervals.contains_key(name));
        state.intervals = intervals;
        for name in changed_names {
            self.follow_name(&state, &name);
        }
        Ok(())
    }
}

/// How often the certificates of terminating listeners are looked at for
/// their expiry (each is warned about at most once a day).
const CERTIFICATE_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Warns in the log, at most once a day each, of the running certificates
/// that expire within 14 days (loading them warns too), until `stop`.
pub(crate) async fn watch_certificates(
    controller: std::sync::Weak<Controller>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(CERTIFICATE_WATCH_INTERVAL) => {}
        }
        let Some(controller) = controller.upgrade() else {
            return;
        };
        let now = std::time::SystemTime::now();
        for l in controller.views.listeners.load().iter() {
            if let Some(tls) = &l.settings.load().tls {
                crate::tls::warn_expiring(
                    &l.configured.to_string(),
                    &tls.terminator.cert_infos(),
                    now,
                );
            }
        }
    }
}

/// Whether `command` can change which host names the configuration uses (a
/// look at the host it adds or removes, not a walk over every host).
fn names_may_change(command: &Command, running: &Config) -> bool {
    match command {
        Command::AddHost { host, .. } => dns::is_name(&host.address),
        Command::RemoveHost {
            service,
            group,
            host,
        } => running
            .services
            .iter()
            .filter(|s| &s.name == service)
            .flat_map(|s| &s.groups)
            .filter(|g| &g.name == group)
            .flat_map(|g| &g.hosts)
            .any(|h| &h.name == host && dns::is_name(&h.address)),
        Command::SetScheduler { .. }
        | Command::EnableGroup { .. }
        | Command::AddListener { .. }
        | Command::RemoveListener { .. }
        | Command::SetListenerCert { .. }
        | Command::AddRoute { .. }
        | Command::RemoveRoute { .. }
        | Command::SetAdminDown { .. }
        | Command::AddUser(_)
        | Command::RemoveUser { .. } => false,
        _ => true,
    }
}

fn empty_config() -> Config {
    Config::new(Vec::new())
}
