//! The open connections: who is connected to which host through which listener,
//! for the admin plane's connections page, close action, drains and access log.
//! UDP sessions are not entries here (a datagram touches nothing shared): their
//! relay threads are [`Keeper`]s, asked for their sessions and to close one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{HostPlace, HostStats};
use crate::config::ClientProtocol;

/// One open client connection. Created when the host connection is up, removed
/// when the connection ends. Byte counters are written by the connection's copy
/// loop and read by the admin plane.
#[derive(Debug)]
pub struct ConnectionEntry {
    /// Unique id for this process's lifetime.
    pub id: u64,
    /// Its service, group (the one the host was picked from) and host: the
    /// host's, shared.
    pub place: Arc<HostPlace>,
    /// The host's counters (identity for drains and filters).
    pub host_stats: Arc<HostStats>,
    /// The client's address.
    pub client: SocketAddr,
    /// The balancer address the client reached.
    pub listener: SocketAddr,
    /// The host address connected to.
    pub host_addr: SocketAddr,
    /// txlb's own address on the host connection: what the host sees as its peer.
    /// Known only when a control socket may ask for it (boxed: most
    /// balancers have none, and an entry's size decides its allocator class).
    pub host_local: Option<Box<SocketAddr>>,
    /// When the client connection was accepted, in nanoseconds since the Unix
    /// epoch ([`super::unix_nanos`]).
    pub since_ns: u64,
    /// What the client's first bytes told, on a listener with routes.
    pub inspection: Option<Box<Inspection>>,
    /// Bytes from client to host so far.
    pub bytes_in: AtomicU64,
    /// Bytes from host to client so far.
    pub bytes_out: AtomicU64,
    /// When bytes last moved either way ([`super::clock_ms`]); the idle sweeper
    /// reads it.
    pub last_activity: AtomicU64,
    /// One side has sent FIN: the half-closed timeout applies.
    pub half_closed: AtomicBool,
    /// Wakes the connection's task to close it ([`ConnectionEntry::request_close`]).
    /// `notify_one` keeps a permit, so a request made before the task waits is
    /// not lost.
    pub close: Notify,
    /// Why it was asked to close: 0 = not asked, 1..=3 or 6 a [`CloseRequest`], or
    /// [`PARK_REQUESTED`] / [`PARKED`]. A close request replaces a parking state.
    close_reason: AtomicU8,
    /// How long it must idle before it is parked: the base wait times
    /// 2^this ([`ConnectionEntry::parks_after`]).
    park_level: AtomicU8,
}

/// The most a connection's park wait doubles: 2^3 = 8 base waits.
const MAX_PARK_LEVEL: u8 = 3;

/// `close_reason`: the idle sweeper asked the task to park the connection.
const PARK_REQUESTED: u8 = 4;
/// `close_reason`: parked (its sockets wait in a parking lot, no task runs).
const PARKED: u8 = 5;

/// Who asked an open connection to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseRequest {
    /// An administrator (close action, drain deadline).
    Admin = 1,
    /// The end of the shutdown grace period.
    Shutdown = 2,
    /// Idle (or half-closed) for longer than the service allows.
    Timeout = 3,
    /// Its host was marked bad by its group's check, and the group closes
    /// such a host's connections (`onMarkedDown="close"`).
    HostDown = 6,
}

/// What a listener with routes saw of a client's first bytes (or a
/// terminating listener of its handshake), and the route it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inspection {
    /// What the client speaks.
    pub protocol: ClientProtocol,
    /// The TLS server name it asked for (lower case).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<Box<str>>,
    /// The ALPN protocols it offered, in its order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<Box<str>>,
    /// The conditions of the route taken (`sni=api.example.com`); `None`: no
    /// route matched and the listener's own service serves it.
    #[serde(serialize_with = "route_label")]
    pub route: Option<Arc<str>>,
    /// On a listener that terminates TLS: what its handshake agreed (the
    /// SNI and ALPN offered are `sni` and `alpn`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<crate::tls::Session>>,
}

fn route_label<S: serde::Serializer>(route: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match route {
        Some(label) => s.serialize_some(&**label),
        None => s.serialize_none(),
    }
}

/// What carries a listed connection: a TCP connection or a UDP session
/// (a service's `protocol`).
pub use crate::config::Transport;

/// A point-in-time copy of one open connection (or UDP session).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionInfo {
    /// Unique id (for closing it), TCP connections and UDP sessions numbered
    /// alike.
    pub id: u64,
    /// A TCP connection or a UDP session.
    pub transport: Transport,
    /// Service name.
    pub service: String,
    /// Group name.
    pub group: String,
    /// Host name.
    pub host: String,
    /// Client address.
    pub client: SocketAddr,
    /// Balancer address the client reached.
    pub listener: SocketAddr,
    /// Host address.
    pub host_addr: SocketAddr,
    /// Accepted at, seconds since the Unix epoch.
    pub since: f64,
    /// Bytes from client to host.
    pub bytes_in: u64,
    /// Bytes from host to client.
    pub bytes_out: u64,
    /// Seconds since bytes last moved either way (unknown for a connection
    /// draining in another process).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_seconds: Option<f64>,
    /// UDP: datagrams from the client passed to the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datagrams_in: Option<u64>,
    /// UDP: the host's datagrams passed back to the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datagrams_out: Option<u64>,
    /// Idle, parked: no task and no runtime registration until a byte arrives.
    pub parked: bool,
    /// On a listener with routes: what the client's first bytes told.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub inspection: Option<Inspection>,
    /// The process that serves it when not this one: the previous one of an
    /// upgrade, where it drains (its counts are as that process last told).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draining_in: Option<u32>,
}

impl ConnectionEntry {
    /// An entry for a connection just established; `host_local` is `None` when
    /// nobody will look it up (no control socket).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        place: Arc<HostPlace>,
        host_stats: Arc<HostStats>,
        client: SocketAddr,
        listener: SocketAddr,
        host_addr: SocketAddr,
        host_local: Option<SocketAddr>,
        since: SystemTime,
        inspection: Option<Box<Inspection>>,
    ) -> Self {
        ConnectionEntry {
            id,
            place,
            host_stats,
            client,
            listener,
            host_addr,
            host_local: host_local.map(Box::new),
            since_ns: super::unix_nanos(since),
            inspection,
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            last_activity: AtomicU64::new(super::clock_ms()),
            half_closed: AtomicBool::new(false),
            close: Notify::new(),
            close_reason: AtomicU8::new(0),
            park_level: AtomicU8::new(0),
        }
    }

    /// Asks the connection to close; the first reason given sticks.
    pub fn request_close(&self, why: CloseRequest) {
        let _ = self.close_reason.fetch_update(Relaxed, Relaxed, |now| {
            matches!(now, 0 | PARK_REQUESTED | PARKED).then_some(why as u8)
        });
        self.close.notify_one();
    }

    /// Asks the connection's task to park it (see `proxy::parking`), unless a
    /// request is pending or it is parked already. Returns whether it asked.
    pub fn request_park(&self) -> bool {
        let asked = self
            .close_reason
            .compare_exchange(0, PARK_REQUESTED, Relaxed, Relaxed)
            .is_ok();
        if asked {
            self.close.notify_one();
        }
        asked
    }

    /// Whether the pending request is to park (not to close).
    pub fn park_requested(&self) -> bool {
        self.close_reason.load(Relaxed) == PARK_REQUESTED
    }

    /// The task turns down a park request (bytes are in flight).
    pub fn decline_park(&self) {
        let _ = self
            .close_reason
            .compare_exchange(PARK_REQUESTED, 0, Relaxed, Relaxed);
    }

    /// The task turns down a park request and will turn down every one (a
    /// TLS connection's state lives in its task): asked again only once it
    /// idles the longest park wait, never as a busy one.
    pub fn decline_park_for_good(&self) {
        self.decline_park();
        self.park_level.store(MAX_PARK_LEVEL, Relaxed);
    }

    /// The request was granted: the connection is parked. False if a close
    /// request came in between (then it must not park).
    pub fn mark_parked(&self) -> bool {
        self.close_reason
            .compare_exchange(PARK_REQUESTED, PARKED, Relaxed, Relaxed)
            .is_ok()
    }

    /// Marks a connection handed over by the previous process, going
    /// straight into a parking lot, parked.
    pub fn mark_moved_in_parked(&self) {
        self.close_reason.store(PARKED, Relaxed);
    }

    /// Back from the parking lot to a task, `base` being the shortest park
    /// wait. A connection woken within three times its wait of its last byte
    /// (a client with a steady beat a little slower than the wait, which
    /// would otherwise park and wake on every beat; the sweeper parks up to a
    /// second after the wait is up) waits twice as long before it parks
    /// again, up to 2^[`MAX_PARK_LEVEL`] times `base`; one that slept eight
    /// times its wait or more comes down a step.
    pub fn mark_unparked(&self, base: Duration) {
        let _ = self
            .close_reason
            .compare_exchange(PARKED, 0, Relaxed, Relaxed);
        let idle = super::clock_ms().saturating_sub(self.last_activity.load(Relaxed));
        self.learn_park_wait(idle, base);
    }

    /// The park wait after a wake that came `idle` milliseconds after the
    /// last byte.
    fn learn_park_wait(&self, idle: u64, base: Duration) {
        let wait = self.parks_after(base);
        let level = self.park_level.load(Relaxed);
        if idle < 3 * wait && level < MAX_PARK_LEVEL {
            self.park_level.store(level + 1, Relaxed);
        } else if idle >= 8 * wait && level > 0 {
            self.park_level.store(level - 1, Relaxed);
        }
    }

    /// Milliseconds it must idle before it is parked: `base` doubled for
    /// each time it was woken soon after parking (see `mark_unparked`).
    pub fn parks_after(&self, base: Duration) -> u64 {
        (base.as_millis() as u64) << self.park_level.load(Relaxed)
    }

    /// Whether it is parked.
    pub fn is_parked(&self) -> bool {
        self.close_reason.load(Relaxed) == PARKED
    }

    /// Why the connection was asked to close, if it was.
    pub fn close_request(&self) -> Option<CloseRequest> {
        match self.close_reason.load(Relaxed) {
            1 => Some(CloseRequest::Admin),
            2 => Some(CloseRequest::Shutdown),
            3 => Some(CloseRequest::Timeout),
            6 => Some(CloseRequest::HostDown),
            _ => None,
        }
    }

    /// When the client connection was accepted, in seconds since the Unix epoch.
    pub fn since_secs(&self) -> f64 {
        self.since_ns as f64 / 1e9
    }

    /// A copy for display.
    pub fn info(&self) -> ConnectionInfo {
        let idle_ms = super::clock_ms().saturating_sub(self.last_activity.load(Relaxed));
        ConnectionInfo {
            id: self.id,
            transport: Transport::Tcp,
            service: self.place.service.to_string(),
            group: self.place.group.to_string(),
            host: self.place.host.to_string(),
            client: self.client,
            listener: self.listener,
            host_addr: self.host_addr,
            since: self.since_secs(),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            idle_seconds: Some(idle_ms as f64 / 1000.0),
            datagrams_in: None,
            datagrams_out: None,
            parked: self.is_parked(),
            inspection: self.inspection.as_deref().cloned(),
            draining_in: None,
        }
    }
}

/// Every open connection, by id. A sharded map: inserts and removals from many
/// connection tasks contend only within a shard, and listing never blocks the
/// data path for long.
#[derive(Debug, Default)]
pub struct ConnectionRegistry {
    /// (Hashed with foldhash: a connection's insert and removal hash its id
    /// four times, which SipHash made a few hundred instructions.)
    entries: DashMap<u64, Arc<ConnectionEntry>, hashbrown::DefaultHashBuilder>,
    /// The same entries by `host_local`, for control socket look-ups.
    by_host_local: DashMap<SocketAddr, Arc<ConnectionEntry>, hashbrown::DefaultHashBuilder>,
    next_id: AtomicU64,
    /// Connections the previous process of an upgrade still serves (they
    /// drain there), for the connections list, closing and control socket
    /// look-ups. Written by the upgrade's thread (each update from that
    /// process, cleared once it is done), read by management surfaces
    /// only: never on the data path.
    elsewhere: std::sync::RwLock<Option<Elsewhere>>,
    /// Threads keeping sessions of their own (UDP relays), asked for them by
    /// management surfaces; locked to ask and when a relay starts or ends,
    /// never by the data path.
    keepers: Mutex<Vec<Arc<Keeper>>>,
}

/// Longest a management call waits for the relays' answers: each answers on
/// its next turn (at once when idle, after the batch in hand under load);
/// one that has not answered by then is left out.
pub(crate) const KEEPER_WAIT: Duration = Duration::from_millis(100);

/// Most sessions one relay lists per call, so that a listener with 100,000
/// sessions costs its thread and the caller a bounded copy.
pub(crate) const MAX_LISTED_SESSIONS: usize = 10_000;

/// What a management surface asks of a thread keeping sessions of its own.
pub(crate) enum Ask {
    /// Its sessions that `filter` wants, at most [`MAX_LISTED_SESSIONS`];
    /// not answered past `until`, when the caller no longer waits. Asks with
    /// the same filter answered in one turn share one list.
    List {
        filter: SessionFilter,
        until: Instant,
        answer: mpsc::Sender<Arc<Vec<ConnectionInfo>>>,
    },
    /// End session `id` if it is its own (closed by an administrator);
    /// answers only when it was.
    Close { id: u64, answer: mpsc::Sender<bool> },
    /// Its session whose host side has txlb's address `host_local` (a
    /// control socket look-up); answers only when it has one.
    Find {
        host_local: SocketAddr,
        answer: mpsc::Sender<ConnectionInfo>,
    },
    /// End its sessions on the host with these stats (a drain's deadline);
    /// answers how many.
    CloseOn {
        stats: Arc<crate::state::HostStats>,
        answer: mpsc::Sender<usize>,
    },
}

/// Which sessions a list wants: those of a service and a host name
/// (`None`: any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionFilter {
    pub service: Option<Box<str>>,
    pub host: Option<Box<str>>,
}

impl SessionFilter {
    /// Whether a session of `service` and `host` is wanted.
    pub(crate) fn wants(&self, service: &str, host: &str) -> bool {
        self.service.as_deref().is_none_or(|want| want == service)
            && self.host.as_deref().is_none_or(|want| want == host)
    }
}

/// A thread that keeps sessions of its own, outside the entries (a UDP
/// listener's relay: its sessions are records in its own table). Surfaces
/// leave it [`Ask`]s and wake it; it takes them on its next turn and
/// answers on the channel each carries.
pub(crate) struct Keeper {
    /// Asks not yet taken; `None` once the thread ended (an ask is then
    /// refused, and those left were dropped, which ends their wait). Locked
    /// by an asking surface and by the thread once per wake-up, never per
    /// datagram.
    asks: Mutex<Option<Vec<Ask>>>,
    /// Wakes the thread (an eventfd it polls).
    wake: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper").finish_non_exhaustive()
    }
}

impl Keeper {
    /// Leaves `ask` for the thread and wakes it; false once it ended.
    fn ask(&self, ask: Ask) -> bool {
        {
            let mut asks = self.asks.lock().unwrap_or_else(|p| p.into_inner());
            let Some(asks) = asks.as_mut() else {
                return false;
            };
            asks.push(ask);
        }
        (self.wake)();
        true
    }

    /// The thread's side: the asks left since it last looked.
    pub(crate) fn take(&self) -> Vec<Ask> {
        let mut asks = self.asks.lock().unwrap_or_else(|p| p.into_inner());
        asks.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The thread's side: asks it took but leaves for its next turn, ahead
    /// of those left since (it wakes itself for them).
    pub(crate) fn put_back(&self, mut earlier: Vec<Ask>) {
        let mut asks = self.asks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(asks) = asks.as_mut() {
            earlier.append(asks);
            *asks = earlier;
        }
    }
}

/// Keeps a [`Keeper`] in the registry while its thread runs; dropped when
/// it ends, which refuses later asks and ends the wait of those left.
pub(crate) struct Keeping {
    registry: Arc<ConnectionRegistry>,
    keeper: Arc<Keeper>,
}

impl Keeping {
    /// The keeper, for its thread to [`Keeper::take`] from.
    pub(crate) fn keeper(&self) -> &Keeper {
        &self.keeper
    }
}

impl Drop for Keeping {
    fn drop(&mut self) {
        let mut keepers = self
            .registry
            .keepers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        keepers.retain(|k| !Arc::ptr_eq(k, &self.keeper));
        drop(keepers);
        *self.keeper.asks.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Asks the process where connections drain to close one; true if asked.
pub type CloseElsewhere = Box<dyn Fn(u64) -> bool + Send + Sync>;

/// Connections open in another process (the previous one of an upgrade).
struct Elsewhere {
    pid: u32,
    connections: std::collections::HashMap<u64, DrainingConnection>,
    by_host_local: std::collections::HashMap<SocketAddr, u64>,
    close: Arc<CloseElsewhere>,
}

impl std::fmt::Debug for Elsewhere {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elsewhere")
            .field("pid", &self.pid)
            .field("connections", &self.connections.len())
            .finish()
    }
}

/// A connection still open in the previous process of an upgrade, as the
/// new process lists it and answers look-ups about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainingConnection {
    /// Its id (unique across both processes: the new one numbers after the
    /// old one's).
    pub id: u64,
    /// Service, group and host names.
    pub service: String,
    pub group: String,
    pub host: String,
    /// The real client.
    pub client: SocketAddr,
    /// The balancer address the client reached.
    pub listener: SocketAddr,
    /// The host's address.
    pub host_addr: SocketAddr,
    /// txlb's address on the host side, when a control socket indexes it.
    #[serde(default)]
    pub host_local: Option<SocketAddr>,
    /// Accepted at, seconds since the Unix epoch.
    pub since: f64,
    /// Bytes each way when the old process last told.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl DrainingConnection {
    fn info(&self, pid: u32) -> ConnectionInfo {
        ConnectionInfo {
            id: self.id,
            transport: Transport::Tcp,
            service: self.service.clone(),
            group: self.group.clone(),
            host: self.host.clone(),
            client: self.client,
            listener: self.listener,
            host_addr: self.host_addr,
            since: self.since,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            idle_seconds: None,
            datagrams_in: None,
            datagrams_out: None,
            parked: false,
            inspection: None,
            draining_in: Some(pid),
        }
    }
}

impl ConnectionRegistry {
    /// A fresh id for a new connection.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed) + 1
    }

    /// The last id given.
    pub fn last_id(&self) -> u64 {
        self.next_id.load(Relaxed)
    }

    /// Numbers new connections after `id` (one handed over by the previous
    /// process keeps its id).
    pub fn numbered_from(&self, id: u64) {
        self.next_id.fetch_max(id, Relaxed);
    }

    /// Adds a connection; it is removed when the returned guard drops.
    /// An entry whose id is taken (a moved connection whose id this process
    /// gave already) gets a fresh one: two entries never share an id.
    pub fn register(self: &Arc<Self>, mut entry: ConnectionEntry) -> Registered {
        let entry = loop {
            match self.entries.entry(entry.id) {
                dashmap::Entry::Vacant(place) => {
                    let entry = Arc::new(entry);
                    place.insert(entry.clone());
                    break entry;
                }
                dashmap::Entry::Occupied(_) => entry.id = self.next_id(),
            }
        };
        if let Some(local) = entry.host_local.as_deref() {
            self.by_host_local.insert(*local, entry.clone());
        }
        Registered {
            registry: self.clone(),
            entry,
        }
    }

    /// A thread keeping sessions of its own joins the registry until the
    /// result drops; `wake` wakes it to take what it is asked.
    pub(crate) fn keep(self: &Arc<Self>, wake: Box<dyn Fn() + Send + Sync>) -> Keeping {
        let keeper = Arc::new(Keeper {
            asks: Mutex::new(Some(Vec::new())),
            wake,
        });
        self.keepers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(keeper.clone());
        Keeping {
            registry: self.clone(),
            keeper,
        }
    }

    /// Asks every keeper with `ask` (made per keeper, answering on the
    /// sender given, by the deadline given) and gathers the answers until
    /// each answered or ended, or [`KEEPER_WAIT`] passed; `enough` stops at
    /// an answer that settles it.
    fn ask_keepers<T>(
        &self,
        ask: impl Fn(mpsc::Sender<T>, Instant) -> Ask,
        mut enough: impl FnMut(&T) -> bool,
    ) -> Vec<T> {
        let keepers = self
            .keepers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if keepers.is_empty() {
            return Vec::new();
        }
        let (tx, rx) = mpsc::channel();
        let deadline = Instant::now() + KEEPER_WAIT;
        for keeper in &keepers {
            keeper.ask(ask(tx.clone(), deadline));
        }
        // Each keeper holds a sender until it answers or ends: once all
        // have, the channel says so.
        drop(tx);
        let mut answers = Vec::new();
        while let Ok(answer) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            let done = enough(&answer);
            answers.push(answer);
            if done {
                break;
            }
        }
        answers
    }

    /// UDP sessions of `service` and `host` (`None`: any) that the relays
    /// hold, at most [`MAX_LISTED_SESSIONS`] per listener; a relay that does
    /// not answer within [`KEEPER_WAIT`] is left out.
    pub fn list_sessions(&self, service: Option<&str>, host: Option<&str>) -> Vec<ConnectionInfo> {
        let filter = SessionFilter {
            service: service.map(Box::from),
            host: host.map(Box::from),
        };
        self.ask_keepers(
            |answer, until| Ask::List {
                filter: filter.clone(),
                until,
                answer,
            },
            |_| false,
        )
        .iter()
        .flat_map(|list| list.iter().cloned())
        .collect()
    }

    /// The UDP session a relay holds whose host side has txlb's address
    /// `host_local` (the control socket's look-up; TCP connections are
    /// [`ConnectionRegistry::by_host_local`]); a relay that does not answer
    /// within [`KEEPER_WAIT`] is left out.
    pub fn session_by_host_local(&self, host_local: SocketAddr) -> Option<ConnectionInfo> {
        self.ask_keepers(|answer, _| Ask::Find { host_local, answer }, |_| true)
            .into_iter()
            .next()
    }

    /// Ends the UDP sessions the relays hold on the host with `stats` (a
    /// drain's deadline); how many.
    pub fn close_sessions_on(&self, stats: &Arc<crate::state::HostStats>) -> usize {
        self.ask_keepers(
            |answer, _| Ask::CloseOn {
                stats: stats.clone(),
                answer,
            },
            |_| false,
        )
        .into_iter()
        .sum()
    }

    /// Open connections matching `filter`, oldest first.
    pub fn list(&self, filter: impl Fn(&ConnectionEntry) -> bool) -> Vec<ConnectionInfo> {
        let mut list: Vec<ConnectionInfo> = self
            .entries
            .iter()
            .filter(|e| filter(e.value()))
            .map(|e| e.value().info())
            .collect();
        list.sort_by_key(|c| c.id);
        list
    }

    /// The connection whose host side has txlb's address `host_local`: the host
    /// asking "who is behind the connection from `host_local`?".
    pub fn by_host_local(&self, host_local: SocketAddr) -> Option<Arc<ConnectionEntry>> {
        self.by_host_local
            .get(&host_local)
            .map(|e| e.value().clone())
    }

    /// Every open connection, as another process lists it while this one
    /// drains them (an upgrade).
    pub(crate) fn draining(&self) -> Vec<DrainingConnection> {
        self.entries
            .iter()
            .map(|e| {
                let info = e.value().info();
                DrainingConnection {
                    id: info.id,
                    service: info.service,
                    group: info.group,
                    host: info.host,
                    client: info.client,
                    listener: info.listener,
                    host_addr: info.host_addr,
                    host_local: e.value().host_local.as_deref().copied(),
                    since: info.since,
                    bytes_in: info.bytes_in,
                    bytes_out: info.bytes_out,
                }
            })
            .collect()
    }

    /// Connections process `pid` still serves (the previous one of an
    /// upgrade, draining them), and how to ask it to close one; `None` once
    /// it is done. Each call replaces what the last said.
    pub(crate) fn open_elsewhere(
        &self,
        open: Option<(u32, Vec<DrainingConnection>, Arc<CloseElsewhere>)>,
    ) {
        let open = open.map(|(pid, list, close)| Elsewhere {
            pid,
            by_host_local: list
                .iter()
                .filter_map(|c| Some((c.host_local?, c.id)))
                .collect(),
            connections: list.into_iter().map(|c| (c.id, c)).collect(),
            close,
        });
        *self.elsewhere.write().unwrap_or_else(|p| p.into_inner()) = open;
    }

    /// The connection another process (the previous one of an upgrade)
    /// still serves with txlb's address `host_local`, and that process's id.
    pub fn elsewhere(&self, host_local: SocketAddr) -> Option<(u32, DrainingConnection)> {
        let elsewhere = self.elsewhere.read().unwrap_or_else(|p| p.into_inner());
        let open = elsewhere.as_ref()?;
        let id = open.by_host_local.get(&host_local)?;
        Some((open.pid, open.connections.get(id)?.clone()))
    }

    /// Connections another process (the previous one of an upgrade) still
    /// serves, matching `filter` (on service and host names), those this one
    /// took on since left out.
    pub fn list_elsewhere(&self, filter: impl Fn(&str, &str) -> bool) -> Vec<ConnectionInfo> {
        let elsewhere = self.elsewhere.read().unwrap_or_else(|p| p.into_inner());
        let Some(open) = elsewhere.as_ref() else {
            return Vec::new();
        };
        open.connections
            .values()
            .filter(|c| !self.entries.contains_key(&c.id) && filter(&c.service, &c.host))
            .map(|c| c.info(open.pid))
            .collect()
    }

    /// Closes connection `id` (here, or in the process where it drains), or
    /// ends UDP session `id` (its relay does, within [`KEEPER_WAIT`]); false
    /// if there is none.
    pub fn close(&self, id: u64) -> bool {
        if let Some(entry) = self.entries.get(&id) {
            entry.request_close(CloseRequest::Admin);
            return true;
        }
        let close = {
            let elsewhere = self.elsewhere.read().unwrap_or_else(|p| p.into_inner());
            elsewhere
                .as_ref()
                .filter(|open| open.connections.contains_key(&id))
                .map(|open| open.close.clone())
        };
        if close.is_some_and(|close| close(id)) {
            return true;
        }
        // Not numbered yet: no relay need look.
        if id == 0 || id > self.next_id.load(Relaxed) {
            return false;
        }
        !self
            .ask_keepers(|answer, _| Ask::Close { id, answer }, |&closed| closed)
            .is_empty()
    }

    /// Closes every connection matching `filter`; returns how many.
    pub fn close_where(
        &self,
        why: CloseRequest,
        filter: impl Fn(&ConnectionEntry) -> bool,
    ) -> usize {
        let mut closed = 0;
        for entry in self.entries.iter().filter(|e| filter(e.value())) {
            entry.request_close(why);
            closed += 1;
        }
        closed
    }

    /// Asks every connection matching `filter` to park (see `proxy::parking`);
    /// returns how many were asked.
    pub fn park_where(&self, filter: impl Fn(&ConnectionEntry) -> bool) -> usize {
        self.entries
            .iter()
            .filter(|e| filter(e.value()) && e.value().request_park())
            .count()
    }

    /// Number of open connections (locks each shard in turn: not for the data path).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Keeps a connection in the registry while it lives.
#[derive(Debug)]
pub struct Registered {
    registry: Arc<ConnectionRegistry>,
    entry: Arc<ConnectionEntry>,
}

impl Registered {
    /// The registered entry.
    pub fn entry(&self) -> &ConnectionEntry {
        &self.entry
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.entries.remove(&self.entry.id);
        if let Some(local) = &self.entry.host_local {
            // Only if it is still ours: the kernel may already have reused the port.
            self.registry
                .by_host_local
                .remove_if(local, |_, e| e.id == self.entry.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn draining(id: u64, host_local: Option<&str>) -> DrainingConnection {
        DrainingConnection {
            id,
            service: "web".into(),
            group: "g".into(),
            host: if id.is_multiple_of(2) { "a" } else { "b" }.into(),
            client: "192.0.2.1:4000".parse().unwrap(),
            listener: "127.0.0.1:80".parse().unwrap(),
            host_addr: "127.0.0.1:8080".parse().unwrap(),
            host_local: host_local.map(|a| a.parse().unwrap()),
            since: 0.0,
            bytes_in: 10,
            bytes_out: 20,
        }
    }

    fn session(id: u64, host: &str) -> ConnectionInfo {
        ConnectionInfo {
            transport: Transport::Udp,
            host: host.into(),
            datagrams_in: Some(1),
            datagrams_out: Some(1),
            draining_in: None,
            ..draining(id, None).info(0)
        }
    }

    /// An entry for connection `id` of service `web`, host `a`.
    fn test_entry(id: u64) -> ConnectionEntry {
        let place = HostPlace {
            service: Arc::from("web"),
            group: Arc::from("g"),
            host: Arc::from("a"),
        };
        ConnectionEntry::new(
            id,
            Arc::new(place),
            Arc::new(HostStats::default()),
            "192.0.2.1:4000".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
            "127.0.0.1:8080".parse().unwrap(),
            None,
            SystemTime::now(),
            None,
        )
    }

    /// A keeper whose thread answers on each wake-up: lists `ids` (host `a`
    /// for even ones) and closes those among them; counts the asks taken.
    fn answering(registry: &Arc<ConnectionRegistry>, ids: Vec<u64>) -> (Keeping, Arc<AtomicUsize>) {
        let (wake_tx, wake_rx) = mpsc::channel::<()>();
        let keeping = registry.keep(Box::new(move || {
            let _ = wake_tx.send(());
        }));
        let keeper = keeping.keeper.clone();
        let taken = Arc::new(AtomicUsize::new(0));
        let count = taken.clone();
        std::thread::spawn(move || {
            let mut open = ids;
            while wake_rx.recv().is_ok() {
                for ask in keeper.take() {
                    count.fetch_add(1, Relaxed);
                    match ask {
                        Ask::List { filter, answer, .. } => {
                            let list = open
                                .iter()
                                .map(|&id| session(id, if id % 2 == 0 { "a" } else { "b" }))
                                .filter(|s| filter.wants(&s.service, &s.host))
                                .collect();
                            let _ = answer.send(Arc::new(list));
                        }
                        Ask::Close { id, answer } => {
                            if open.contains(&id) {
                                open.retain(|&o| o != id);
                                let _ = answer.send(true);
                            }
                        }
                        // Found by port: session `id` has host side 127.0.0.1:id.
                        Ask::Find { host_local, answer } => {
                            let id = u64::from(host_local.port());
                            if open.contains(&id) {
                                let _ = answer.send(session(id, "a"));
                            }
                        }
                        // Its sessions have no host stats: none on any host.
                        Ask::CloseOn { answer, .. } => {
                            let _ = answer.send(0);
                        }
                    }
                }
            }
        });
        (keeping, taken)
    }

    #[test]
    fn a_moved_connection_whose_id_is_taken_gets_a_fresh_one() {
        let registry = Arc::new(ConnectionRegistry::default());
        registry.numbered_from(4);
        let fresh = registry.register(test_entry(registry.next_id()));
        assert_eq!(fresh.entry().id, 5);
        // One moved in later with the same id: numbered anew, both listed.
        let moved = registry.register(test_entry(5));
        assert_eq!(moved.entry().id, 6);
        let ids = || {
            let mut ids: Vec<u64> = registry.list(|_| true).iter().map(|c| c.id).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(), [5, 6]);
        // Ending one leaves the other listed and closable.
        drop(fresh);
        assert_eq!(ids(), [6]);
        assert!(registry.close(6));
    }

    #[test]
    fn relays_are_asked_for_their_sessions_and_waited_for_a_bounded_time() {
        let registry = Arc::new(ConnectionRegistry::default());
        for _ in 0..10 {
            registry.next_id();
        }
        let (_one, taken) = answering(&registry, vec![2, 3]);
        let (_two, _) = answering(&registry, vec![4]);
        let ids = |list: Vec<ConnectionInfo>| {
            let mut ids: Vec<u64> = list.iter().map(|c| c.id).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(registry.list_sessions(None, None)), [2, 3, 4]);
        assert_eq!(ids(registry.list_sessions(Some("web"), Some("a"))), [2, 4]);
        assert!(registry.list_sessions(Some("other"), None).is_empty());
        // Closed by the relay that holds it, once.
        assert!(registry.close(3));
        assert!(!registry.close(3));
        assert_eq!(ids(registry.list_sessions(None, None)), [2, 4]);
        // Found by the host side's address by the relay that has it (one
        // answer is enough: the other relay is not waited for).
        let found = registry.session_by_host_local("127.0.0.1:4".parse().unwrap());
        assert_eq!(found.map(|s| s.id), Some(4));
        assert!(
            registry
                .session_by_host_local("127.0.0.1:9".parse().unwrap())
                .is_none()
        );
        // An id never given out asks no relay.
        let asked = taken.load(Relaxed);
        assert!(!registry.close(11));
        assert!(!registry.close(0));
        assert_eq!(taken.load(Relaxed), asked);
        // A relay that does not answer holds a call up for the bound only.
        let silent = registry.keep(Box::new(|| {}));
        let started = Instant::now();
        assert_eq!(ids(registry.list_sessions(None, None)), [2, 4]);
        let waited = started.elapsed();
        assert!(
            waited >= KEEPER_WAIT && waited < 10 * KEEPER_WAIT,
            "{waited:?}"
        );
        // Once it ended, not at all.
        drop(silent);
        let started = Instant::now();
        assert_eq!(ids(registry.list_sessions(None, None)), [2, 4]);
        assert!(!registry.close(5));
        assert!(started.elapsed() < KEEPER_WAIT, "{:?}", started.elapsed());
    }

    #[test]
    fn connections_draining_elsewhere_are_listed_looked_up_and_closed_there() {
        let registry = Arc::new(ConnectionRegistry::default());
        let asked = Arc::new(AtomicUsize::new(0));
        let close: Arc<CloseElsewhere> = {
            let asked = asked.clone();
            Arc::new(Box::new(move |id| {
                asked.fetch_add(id as usize, Relaxed);
                true
            }))
        };
        let open = vec![draining(7, Some("127.0.0.1:5007")), draining(8, None)];
        registry.open_elsewhere(Some((42, open, close)));
        // One of them moved since: it is this process's own, listed once.
        let moved = test_entry(8);
        let _registered = registry.register(moved);
        let listed = registry.list_elsewhere(|_, _| true);
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].id, listed[0].draining_in), (7, Some(42)));
        assert!(registry.list_elsewhere(|_, host| host == "a").is_empty());
        let (pid, found) = registry
            .elsewhere("127.0.0.1:5007".parse().unwrap())
            .unwrap();
        assert_eq!((pid, found.id), (42, 7));
        assert!(registry.close(7));
        assert_eq!(asked.load(Relaxed), 7);
        assert!(!registry.close(9));
        // Once that process is done, nothing more.
        registry.open_elsewhere(None);
        assert!(registry.list_elsewhere(|_, _| true).is_empty());
        assert!(!registry.close(7));
        assert!(
            registry
                .elsewhere("127.0.0.1:5007".parse().unwrap())
                .is_none()
        );
    }

    #[test]
    fn a_connection_woken_soon_after_parking_waits_longer_next_time() {
        let entry = test_entry(1);
        let base = Duration::from_secs(1);
        let woken_after = |idle_ms: u64| {
            entry.learn_park_wait(idle_ms, base);
            entry.parks_after(base)
        };
        assert_eq!(entry.parks_after(base), 1000);
        // A beat of 1.5 s: up a step on every wake, to 8 s at most.
        assert_eq!(woken_after(1500), 2000);
        assert_eq!(woken_after(1500), 4000);
        assert_eq!(woken_after(1500), 8000);
        assert_eq!(woken_after(1500), 8000);
        // A beat of 2 s, as soon as parked: up a step.
        let beat = test_entry(2);
        beat.learn_park_wait(2000, base);
        assert_eq!(beat.parks_after(base), 2000);
        // Woken within three times the wait it has: stays at the most; long
        // asleep: down a step.
        assert_eq!(woken_after(12_000), 8000);
        assert_eq!(woken_after(64_000), 4000);
        assert_eq!(woken_after(40_000), 2000);
    }
}
