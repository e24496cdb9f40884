//! UDP services (`protocol="udp"`): one socket per listen address and a
//! session per client address and port.
//!
//! Each listener is relayed by a thread of its own around one level-triggered
//! epoll set: the listener's socket, every session's socket and a wake-up
//! descriptor. A client's first datagram picks a host with its service's
//! scheduler (the snapshot is read then, and only then) and opens a session:
//! a UDP socket connected to the host, in the set under the session's key.
//! Later datagrams from the client go out on that socket; the host's replies
//! go back to the client from the listener's socket. A session ends after
//! `sessionTimeout` without a datagram either way (a sweep a tenth of the
//! timeout apart), after `responses` replies per client datagram, when its
//! host refuses a datagram (ICMP port unreachable: the host is failed as a
//! refused TCP connect is), or when its host is out of rotation as the client
//! sends again (the datagram opens a session on another host).
//!
//! A session is a record in a slab (`udp_table.rs`) and a socket in the set:
//! no task, no timer, no buffer (datagrams pass through the thread's
//! buffers). The thread owns the table, the QUIC clients waiting for their
//! route and the per-source limits: no lock. Clients' datagrams are read up
//! to 16 per system call (`recvmmsg`), and the hosts' replies read in one
//! turn of the loop go back to their clients with one `sendmmsg`: under load
//! a request and its answer cost the session's `send` and `recv` and a share
//! of the listener's batched calls.
//! With `proxyProtocol="v2"` each datagram to the host goes behind a PROXY v2
//! header (`DGRAM` family: client and listener addresses), as nginx sends it.
//! Per client address, `datagramRate` bounds datagrams per second and
//! `maxSessionsPerSource` the sessions open (`udp_sources.rs`). In an upgrade
//! the sessions move with their sockets (`udp_moved.rs`).
//!
//! The connections list and close-by-id reach a relay through the registry
//! ([`crate::state::Keeper`]): a surface leaves its ask and writes the
//! wake-up descriptor; the relay answers on its next turn, copying at most
//! [`MAX_LISTED_SESSIONS`] sessions, so nothing is shared per datagram.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::connection::{CloseReason, ConnectionRecord};
use super::quic::{ConnectionIds, Decided, Offer, Pending, WAITING_CHECK, source_id};
use super::udp_moved::{MovedSession, Moving, SessionMoves};
use super::udp_sources::Sources;
use super::udp_table::{Client, Key, Table};
use super::{DataPlane, ListenerSettings, passive, proxy_protocol};
use crate::snapshot::{ServiceSnapshot, Snapshot};
use crate::state::{
    Ask, ConnectionGuard, ConnectionInfo, HostHealth, HostId, HostPlace, HostStats, Inspection,
    Keeping, MAX_LISTED_SESSIONS, ServiceCounters, SessionFilter, Transport, clock_ms, unix_nanos,
};

/// The largest datagram passed on (a UDP payload's bound; an IPv4 one is at
/// most 65,507 bytes). Larger ones (IPv6 jumbograms) are dropped and counted.
pub(crate) const MAX_DATAGRAM: usize = 65_535;

/// Events taken per `epoll_wait`.
const EVENTS: usize = 64;
/// Client datagrams read per event of the listener's socket before the
/// sessions' replies get their turn.
const CLIENT_BATCH: usize = 64;
/// Datagrams taken (`recvmmsg`) or sent (`sendmmsg`) on the listener's
/// socket per system call.
const BATCH: usize = 16;
/// Room for one datagram of a batch: a byte more than is passed on, so a
/// longer one shows (and is dropped).
const ROOM: usize = MAX_DATAGRAM + 1;
/// The listener's socket's key in the set.
const LISTENER_KEY: u64 = u64::MAX;
/// The wake-up descriptor's key.
const WAKE_KEY: u64 = u64::MAX - 1;
/// Longest a relay sleeps without looking at its clock (sweeps are due at
/// most this far apart).
const MAX_SWEEP_MS: u64 = 1_000;
/// Shortest time between two sweeps of a listener's sessions.
const MIN_SWEEP_MS: u64 = 10;

/// A UDP listener of a service: what its relay needs besides its socket.
pub(crate) struct UdpListenerTask {
    /// The service it serves (the clients no route sends elsewhere).
    pub service: Arc<str>,
    /// Its routes (QUIC, by SNI and ALPN), read per new client; swapped by
    /// the controller when they change.
    pub settings: Arc<ArcSwap<ListenerSettings>>,
    /// The snapshots, events and access log.
    pub data: Arc<DataPlane>,
    /// Cancelled to close the listener (and its sessions).
    pub stop: CancellationToken,
    /// Cancelled once an upgrade handed the sockets to a new process: when
    /// that one takes the sessions, the listener stops and gives them up.
    pub handed_over: CancellationToken,
    /// The sessions' move in an upgrade, both sides.
    pub moves: Arc<SessionMoves>,
}

/// UDP sessions open in the process, every service's: each holds a socket.
static OPEN_SESSIONS: AtomicUsize = AtomicUsize::new(0);

/// The most UDP sessions open at once in the process, whatever the services'
/// `maxSessions` say: a quarter of the descriptor limit. New client addresses
/// cost a flood nothing (spoofed ones neither), and each session holds a
/// descriptor: TCP services keep the rest.
fn session_cap() -> usize {
    static CAP: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| crate::state::descriptor_share(usize::MAX, 4))
}

/// [`Relay::exit`]: how the relay thread is asked to end.
const RUN: u8 = 0;
/// The listener stops: its sessions end.
const STOP: u8 = 1;
/// A new process took the sockets: the sessions are given up to it.
const GIVE_UP: u8 = 2;

impl UdpListenerTask {
    /// Relays datagrams on `socket` until the listener is stopped, on a
    /// thread of its own; this waits for it (and tells it to end).
    pub(crate) async fn run(self, socket: std::net::UdpSocket) {
        let _running = self.moves.running();
        let service = self.service.clone();
        let (stop, handed_over, moves) = (
            self.stop.clone(),
            self.handed_over.clone(),
            self.moves.clone(),
        );
        // After an upgrade, the previous process's sessions come first: the
        // datagrams waiting in the shared socket may be theirs.
        let incoming = moves.take_incoming(socket.local_addr().ok()).await;
        let relay = match Relay::new(self, socket) {
            Ok(relay) => relay,
            Err(error) => {
                tracing::error!(%service, %error, "cannot start relaying UDP");
                return;
            }
        };
        let (exit, wake) = match relay.wake.try_clone() {
            Ok(wake) => (relay.exit.clone(), wake),
            Err(error) => {
                tracing::error!(%service, %error, "cannot start relaying UDP");
                return;
            }
        };
        let runtime = tokio::runtime::Handle::current();
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
        let started = std::thread::Builder::new()
            .name("txlb-udp".into())
            .spawn(move || {
                // Ejection timers and events are spawned on the runtime.
                let _runtime = runtime.enter();
                relay.run(incoming);
                drop(done_tx);
            });
        if let Err(error) = started {
            tracing::error!(%service, %error, "cannot start relaying UDP");
            return;
        }
        let tell = |how: u8| {
            exit.store(how, Relaxed);
            let one: u64 = 1;
            // SAFETY: `wake` is an open eventfd; 8 bytes from a u64.
            unsafe { libc::write(wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        };
        let mut handed = false;
        loop {
            tokio::select! {
                // The hand-over first: the sessions must move whole.
                biased;
                () = handed_over.cancelled(), if !handed => {
                    handed = true;
                    if moves.exporting() {
                        tell(GIVE_UP);
                        break;
                    }
                }
                () = stop.cancelled() => {
                    tell(if moves.exporting() && handed_over.is_cancelled() { GIVE_UP } else { STOP });
                    break;
                }
                _ = &mut done_rx => return,
            }
        }
        // The thread gives the sessions up before `_running` lets the
        // upgrade send them.
        let _ = done_rx.await;
    }
}

/// Where a session's host is and what its service asks of it, shared by the
/// sessions of one host and service.
struct Place {
    /// Its service (the listener's, or a route's), group and host: the
    /// host's, shared.
    names: Arc<HostPlace>,
    /// The service's counters.
    counters: Arc<ServiceCounters>,
    stats: Arc<HostStats>,
    addr: SocketAddr,
    /// The host's group's `failLimit`.
    fail_limit: u32,
    /// The service's `responses` and `sessionTimeout` (ms).
    responses: u32,
    timeout_ms: u64,
    /// Each datagram to the host goes behind a PROXY v2 header
    /// (`proxyProtocol="v2"`; version 1 is refused on UDP by the
    /// configuration's check).
    proxy_v2: bool,
    /// On a wildcard listener, the address the client sent to: replies go
    /// out from it (`None`: the listener's own address). Here rather than
    /// in each session: a machine has few addresses.
    local: Option<IpAddr>,
}

impl Place {
    /// Whether `self` says the same as `other` (a reload may have changed a
    /// setting: a new place then).
    fn same(&self, other: &Place) -> bool {
        Arc::ptr_eq(&self.counters, &other.counters)
            && Arc::ptr_eq(&self.stats, &other.stats)
            && self.names == other.names
            && self.addr == other.addr
            && self.fail_limit == other.fail_limit
            && self.responses == other.responses
            && self.timeout_ms == other.timeout_ms
            && self.proxy_v2 == other.proxy_v2
            && self.local == other.local
    }
}

/// What tells places apart: the host's stats (by address), its address, the
/// service and the local address replies leave from.
type PlaceKey = (usize, SocketAddr, Arc<str>, Option<IpAddr>);

/// One session: a record in the relay's table.
struct Session {
    /// Its id in the connections list, numbered with TCP connections
    /// (`ConnectionRegistry::next_id`), for closing it.
    id: u64,
    /// Connected to the host; in the relay's epoll set while open.
    socket: std::net::UdpSocket,
    client: SocketAddr,
    /// Keeps the host's open count (held for its drop).
    _open: ConnectionGuard,
    place: Arc<Place>,
    /// [`clock_ms`] of the last datagram either way, and of the first.
    last_ms: u64,
    started_ms: u64,
    bytes_in: u64,
    bytes_out: u64,
    /// Client datagrams passed on (saturating), for the connections list.
    datagrams_in: u32,
    /// Replies passed on.
    replies: u32,
    /// QUIC (a listener with routes): the connection ID of the host's first
    /// long-header reply is still to learn.
    learn_id: bool,
    /// Counted in [`Relay::sources`] (opened under `maxSessionsPerSource`).
    per_source: bool,
    /// QUIC: what the client's hello told and the route it took (boxed: a
    /// session without one stays small).
    inspection: Option<Box<Inspection>>,
    /// The port of txlb's side of `socket`, for the control socket's
    /// look-ups (0 without a control socket: nobody asks). In the record's
    /// padding: its size is unchanged.
    host_port: u16,
}

impl Decided {
    /// The session it opens.
    fn opening(&mut self) -> Opening {
        Opening {
            client: self.client,
            target: self.target.take(),
            host: self.host.take(),
            inspection: self.inspection.take(),
            local: self.local,
        }
    }
}

impl Client for Session {
    fn client(&self) -> SocketAddr {
        self.client
    }
}

/// A listener's relay: its thread's state.
struct Relay {
    task: UdpListenerTask,
    listener: std::net::UdpSocket,
    local: SocketAddr,
    epoll: OwnedFd,
    /// Written when the listener is stopped, to end the thread's wait.
    wake: OwnedFd,
    /// [`RUN`], [`STOP`] or [`GIVE_UP`]; written by the listener's task.
    exit: Arc<AtomicU8>,
    /// In the registry while the relay runs: what management surfaces ask
    /// of its sessions (they write `wake`).
    keeping: Keeping,
    sessions: Table<Session>,
    /// New clients of a listener with routes, until their route is chosen.
    pending: Pending,
    /// Sessions and datagrams per client address, for the per-source limits.
    sources: Sources,
    /// QUIC: the connection IDs hosts chose, by which a client that changed
    /// address finds its service and host again.
    ids: ConnectionIds,
    /// Sessions by the port of txlb's side towards their host, for the
    /// control socket's look-ups (kept only when a control socket may ask:
    /// empty otherwise).
    by_host_port: std::collections::BTreeSet<(u16, Key)>,
    /// One [`Place`] per host, address, service and local address, for new
    /// sessions.
    places: HashMap<PlaceKey, Arc<Place>>,
    /// Client datagrams, read a batch at a time (out of here while they
    /// are passed on).
    received: Option<Box<Received>>,
    /// Hosts' replies waiting for one `sendmmsg` to their clients.
    replies: Box<Replies>,
    /// The PROXY v2 header of the datagram being sent.
    header: Vec<u8>,
    /// [`clock_ms`] as of this turn of the loop (read once per wake-up).
    now: u64,
    /// Sessions are looked at for their timeout this often (ms), and next
    /// then.
    sweep_every: u64,
    next_sweep: u64,
    /// When waiting QUIC clients are next checked for their timeout.
    next_waiting_check: u64,
}

impl Relay {
    fn new(task: UdpListenerTask, listener: std::net::UdpSocket) -> io::Result<Relay> {
        let local = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        // Bound to every address: each datagram says which one it was sent
        // to, and its replies leave from that one (clients drop replies
        // from another address).
        let wildcard = local.ip().is_unspecified();
        if wildcard {
            receive_destinations(&listener, local)?;
        }
        // SAFETY: epoll_create1 and eventfd return a new descriptor or -1.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: ours alone.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        // SAFETY: as above.
        let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if wake < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: ours alone.
        let wake = unsafe { OwnedFd::from_raw_fd(wake) };
        let asked = wake.try_clone()?;
        let keeping = task.data.registry.keep(Box::new(move || {
            let one: u64 = 1;
            // SAFETY: `asked` is an open eventfd; 8 bytes from a u64.
            unsafe { libc::write(asked.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }));
        let now = clock_ms();
        let relay = Relay {
            task,
            listener,
            local,
            epoll,
            wake,
            exit: Arc::new(AtomicU8::new(RUN)),
            keeping,
            sessions: Table::default(),
            pending: Pending::default(),
            sources: Sources::default(),
            ids: ConnectionIds::default(),
            by_host_port: std::collections::BTreeSet::new(),
            places: HashMap::new(),
            received: Some(Box::new(Received {
                rooms: Rooms::new(),
                // SAFETY: an all-zero sockaddr_storage is valid (AF_UNSPEC).
                from: unsafe { std::mem::zeroed() },
                lens: [0; BATCH],
                control: wildcard.then(|| Box::new([[0; CONTROL_WORDS]; BATCH])),
                to: [None; BATCH],
            })),
            replies: Box::new(Replies {
                rooms: Rooms::new(),
                to: Vec::with_capacity(BATCH),
                control: Box::new([[0; CONTROL_WORDS]; BATCH]),
            }),
            header: Vec::new(),
            now,
            sweep_every: MAX_SWEEP_MS,
            next_sweep: now + MAX_SWEEP_MS,
            next_waiting_check: now,
        };
        relay.watch(relay.listener.as_raw_fd(), LISTENER_KEY)?;
        relay.watch(relay.wake.as_raw_fd(), WAKE_KEY)?;
        Ok(relay)
    }

    /// Level-triggered: a socket read once per event is reported again
    /// while it has more (and while it holds an error: a host's refusal).
    /// Closing a socket takes it out of the set.
    fn watch(&self, fd: i32, key: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: key,
        };
        // SAFETY: both descriptors are open; `event` outlives the call.
        let rc =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn run(mut self, incoming: Vec<Moving>) {
        for moving in incoming {
            self.adopt(moving);
        }
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        while self.exit.load(Relaxed) == RUN {
            let mut due = self.next_sweep;
            if !self.pending.is_empty() {
                due = due.min(self.next_waiting_check);
            }
            let wait = due.saturating_sub(clock_ms()).min(MAX_SWEEP_MS) as i32;
            // SAFETY: `events` has room for EVENTS entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS as i32,
                    wait,
                )
            };
            self.now = clock_ms();
            if n < 0 {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    tracing::warn!(service = %self.task.service, %error, "udp: epoll_wait");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            for event in &events[..n as usize] {
                match event.u64 {
                    LISTENER_KEY => self.read_clients(),
                    WAKE_KEY => self.answer(),
                    key => self.read_host(key),
                }
            }
            self.replies.send(&self.listener);
            if !self.pending.is_empty() && self.now >= self.next_waiting_check {
                self.waited();
                self.next_waiting_check = self.now + WAITING_CHECK.as_millis() as u64;
            }
            if self.now >= self.next_sweep {
                self.sweep();
                self.next_sweep = self.now + self.sweep_every;
            }
        }
        self.replies.send(&self.listener);
        if self.exit.load(Relaxed) == GIVE_UP {
            self.give_up();
        } else {
            for key in self.sessions.keys_where(|_| true) {
                self.end(key, CloseReason::Shutdown);
            }
        }
    }

    /// Datagrams waiting on the listener's socket, up to [`CLIENT_BATCH`],
    /// [`BATCH`] per system call; the snapshot is read once for them.
    fn read_clients(&mut self) {
        // Out of `self` while in use, so the datagrams can be passed on with
        // `&mut self`: back in place before the next read.
        let Some(mut batch) = self.received.take() else {
            return;
        };
        let snapshot = self.task.data.snapshots.load();
        for _ in 0..CLIENT_BATCH / BATCH {
            match batch.receive(&self.listener) {
                Ok(n) => {
                    // Removed by a reload: this listener is closing.
                    if let Some(service) = snapshot.service(&self.task.service) {
                        for i in 0..n {
                            if let Some((bytes, client, local)) = batch.datagram(i) {
                                self.datagram(&snapshot, service, bytes, client, local);
                            }
                        }
                    }
                    if n < BATCH {
                        break; // the socket is empty: no call to learn it
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    // Errors of an unconnected socket are local (memory):
                    // a short pause rather than a spin.
                    tracing::debug!(service = %self.task.service, local = %self.local, %error, "udp receive");
                    std::thread::sleep(Duration::from_millis(10));
                    break;
                }
            }
        }
        self.received = Some(batch);
    }

    /// One datagram from `client`: on to its session's host, or a new session.
    fn datagram(
        &mut self,
        snapshot: &Snapshot,
        service: &ServiceSnapshot,
        bytes: &[u8],
        client: SocketAddr,
        local: Option<IpAddr>,
    ) {
        let counters = &service.counters;
        if bytes.len() > MAX_DATAGRAM {
            counters.dropped_oversize.fetch_add(1, Relaxed);
            return;
        }
        if !self
            .sources
            .datagram(client.ip(), service.options.datagram_rate)
        {
            counters.dropped_rate.fetch_add(1, Relaxed);
            return;
        }
        // The service of the client's session ended here: a new one stays
        // on it (a route's, chosen by the client's first datagrams).
        let mut stays_on = None;
        if let Some(key) = self.sessions.find(client) {
            let session = self.sessions.get_mut(key).expect("found");
            let mut failed = None;
            if still_serves(snapshot, &session.place) {
                let counters = &session.place.counters;
                let header = header(&mut self.header, session, self.local);
                match send(&session.socket, header, bytes) {
                    Ok(_) => {
                        session.last_ms = self.now;
                        passed_in(session, bytes.len());
                        return;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        counters.dropped_limit.fetch_add(1, Relaxed);
                        return;
                    }
                    Err(e) if too_long(&e) => {
                        // With its PROXY header, longer than a datagram.
                        counters.dropped_oversize.fetch_add(1, Relaxed);
                        return;
                    }
                    // A refusal of an earlier datagram (ICMP port
                    // unreachable) or another error of the host's side.
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(error) = failed {
                self.host_failed(key, &error);
            }
            // Its host is out of rotation or failed: this datagram picks again.
            stays_on = self.end(key, CloseReason::HostDown);
        }
        if !super::admission::allowed(client, &service.options) {
            counters.denied.fetch_add(1, Relaxed);
            return;
        }
        let settings = self.task.settings.load();
        if let Some(routing) = settings.routing.as_ref().filter(|_| stays_on.is_none()) {
            if self.came_back(snapshot, bytes, client, local) {
                return;
            }
            // Before its Initials are decrypted: a source at its limit
            // costs no more than a look-up.
            if !self.source_may_open(client, service) {
                return;
            }
            if let Offer::Decided(mut decided) = self.pending.offer(client, local, bytes, routing) {
                let opening = decided.opening();
                self.start(snapshot, opening, &decided.datagrams);
            }
            return;
        }
        let opening = Opening {
            client,
            target: stays_on,
            host: None,
            inspection: None,
            local,
        };
        self.start(snapshot, opening, &[bytes]);
    }

    /// A QUIC client from a new address sending to a connection ID a host of
    /// this listener chose: a session on that host (its service, not the
    /// default route), which takes the ID over. Whether it was one.
    fn came_back(
        &mut self,
        snapshot: &Snapshot,
        bytes: &[u8],
        client: SocketAddr,
        local: Option<IpAddr>,
    ) -> bool {
        let Some(((_, owner), id)) = self.ids.find(bytes) else {
            return false;
        };
        let id: Box<[u8]> = id.into();
        let Some(earlier) = self.sessions.get(owner) else {
            return false;
        };
        let opening = Opening {
            client,
            target: Some(earlier.place.names.service.clone()),
            host: Some(earlier.place.stats.clone()),
            inspection: earlier.inspection.clone(),
            local,
        };
        let earlier = (earlier.client, owner);
        // Half a hello it left waiting opens no second session later.
        self.pending.forget(client);
        if let Some(key) = self.start(snapshot, opening, &[bytes]) {
            self.ids.forget(earlier);
            self.ids.learned(&id, (client, key));
            if let Some(session) = self.sessions.get_mut(key) {
                session.learn_id = false;
            }
        }
        true
    }

    /// Clients that waited for their route past the listener's
    /// `inspectTimeout`: decided on what they sent.
    fn waited(&mut self) {
        let settings = self.task.settings.load();
        let routing = settings.routing.as_ref();
        let timeout = routing.map_or(Duration::ZERO, |r| r.timeout);
        let decided = self.pending.expired(timeout, routing);
        if decided.is_empty() {
            return;
        }
        let snapshot = self.task.data.snapshots.load();
        for mut decided in decided {
            let opening = decided.opening();
            self.start(&snapshot, opening, &decided.datagrams);
        }
    }

    /// Opens a session for a client whose route is decided (its service:
    /// the route's, else the listener's) and sends it the client's
    /// datagrams; the session's key.
    fn start(
        &mut self,
        snapshot: &Snapshot,
        opening: Opening,
        datagrams: &[impl AsRef<[u8]>],
    ) -> Option<Key> {
        let own = snapshot.service(&self.task.service)?;
        let name = opening.target.unwrap_or_else(|| self.task.service.clone());
        let client = opening.client;
        // One session per client address: one that came back to a
        // connection ID while its hello waited has it already.
        if self.sessions.find(client).is_some() {
            return None;
        }
        // A route's service gone with a reload: no host for it.
        let Some(service) = snapshot.service(&name) else {
            own.counters.dropped_no_host.fetch_add(1, Relaxed);
            return None;
        };
        if !self.source_may_open(client, own) {
            return None;
        }
        let counters = &service.counters;
        if service.groups.is_empty() {
            // Only a listener's own service can lack groups: its listeners
            // route, and this client matched no route.
            counters.no_route.fetch_add(1, Relaxed);
            return None;
        }
        // `maxSessions` is the service's, across its listeners: a place is
        // taken at once (given back if no session opens), so relays racing
        // for the last one cannot both have it.
        if OPEN_SESSIONS.load(Relaxed) >= session_cap()
            || !take_place(counters, service.options.max_sessions)
        {
            counters.dropped_limit.fetch_add(1, Relaxed);
            return None;
        }
        let (picked, socket) = match open(service, client, opening.host.as_ref()) {
            Ok(opened) => opened,
            Err(unopened) => {
                counters.sessions_open.fetch_sub(1, Relaxed);
                let dropped = match unopened {
                    Unopened::NoHost => &counters.dropped_no_host,
                    Unopened::Local => &counters.dropped_limit,
                };
                dropped.fetch_add(1, Relaxed);
                return None;
            }
        };
        let place = self.place(Place {
            names: picked.names,
            counters: service.counters.clone(),
            stats: picked.stats,
            addr: picked.addr,
            fail_limit: picked.fail_limit,
            responses: service.options.responses,
            timeout_ms: service.options.session_timeout.as_millis() as u64,
            proxy_v2: picked.proxy_protocol.is_some(),
            local: opening.local,
        });
        place.stats.record_session();
        counters.sessions_total.fetch_add(1, Relaxed);
        let host_port = self.host_port(&socket);
        let mut session = Session {
            id: self.task.data.registry.next_id(),
            socket,
            client,
            _open: ConnectionGuard::new(place.stats.clone()),
            place,
            last_ms: self.now,
            started_ms: self.now,
            bytes_in: 0,
            bytes_out: 0,
            datagrams_in: 0,
            replies: 0,
            learn_id: self.task.settings.load().routing.is_some(),
            host_port,
            per_source: false,
            inspection: opening.inspection,
        };
        for bytes in datagrams {
            let bytes = bytes.as_ref();
            let header = header(&mut self.header, &session, self.local);
            match send(&session.socket, header, bytes) {
                Ok(_) => passed_in(&mut session, bytes.len()),
                Err(e) if too_long(&e) => {
                    counters.dropped_oversize.fetch_add(1, Relaxed);
                }
                Err(_) => {
                    counters.dropped_limit.fetch_add(1, Relaxed);
                }
            }
        }
        self.insert(session, own.options.max_sessions_per_source)
    }

    /// Whether `client`'s address may open one more session under its
    /// listener's service's `maxSessionsPerSource`; a refusal is counted.
    fn source_may_open(&self, client: SocketAddr, own: &ServiceSnapshot) -> bool {
        let limit = own.options.max_sessions_per_source;
        let may = self.sources.may_open(client.ip(), limit);
        if !may {
            own.counters.dropped_source_limit.fetch_add(1, Relaxed);
        }
        may
    }

    /// The shared [`Place`] saying what `fresh` says.
    fn place(&mut self, fresh: Place) -> Arc<Place> {
        let key = (
            Arc::as_ptr(&fresh.stats) as usize,
            fresh.addr,
            fresh.names.service.clone(),
            fresh.local,
        );
        match self.places.get(&key) {
            Some(place) if place.same(&fresh) => place.clone(),
            _ => {
                let timeout = fresh.timeout_ms / 10;
                self.sweep_every = self
                    .sweep_every
                    .min(timeout.clamp(MIN_SWEEP_MS, MAX_SWEEP_MS));
                self.next_sweep = self.next_sweep.min(self.now + self.sweep_every);
                let place = Arc::new(fresh);
                self.places.insert(key, place.clone());
                place
            }
        }
    }

    /// A new session in the table and the set, counted open (and per
    /// source under a limit of `per_source` sessions, 0: none); its key.
    /// Its place in its service's `sessions_open` is taken already.
    fn insert(&mut self, session: Session, per_source: u32) -> Option<Key> {
        let key = match self.sessions.insert(session) {
            Ok(key) => key,
            Err(twin) => {
                // Its client has a session here already (`start` and
                // `adopt` look first): never a second one.
                twin.place.counters.sessions_open.fetch_sub(1, Relaxed);
                return None;
            }
        };
        OPEN_SESSIONS.fetch_add(1, Relaxed); // back in `close`
        let session = self.sessions.get_mut(key).expect("just inserted");
        session.per_source = self.sources.opened(session.client.ip(), per_source);
        let (fd, port) = (session.socket.as_raw_fd(), session.host_port);
        if port != 0 {
            self.by_host_port.insert((port, key));
        }
        if let Err(error) = self.watch(fd, key) {
            tracing::debug!(service = %self.task.service, %error, "udp session socket");
            self.end(key, CloseReason::Error);
            return None;
        }
        Some(key)
    }

    /// One event of a session's socket: a reply to pass back (one read; the
    /// set reports the socket again while it has more), or its host's
    /// refusal. Replies go out together ([`Replies::send`]).
    fn read_host(&mut self, key: Key) {
        let Some(session) = self.sessions.get_mut(key) else {
            return; // ended earlier in this batch
        };
        match session.socket.recv(self.replies.room()) {
            Ok(n) if n > MAX_DATAGRAM => {
                session
                    .place
                    .counters
                    .dropped_oversize
                    .fetch_add(1, Relaxed);
            }
            Ok(n) => {
                session.last_ms = self.now;
                session.replies = session.replies.saturating_add(1);
                session.bytes_out += n as u64;
                let place = &session.place;
                // `responses` per client datagram, as nginx's
                // `proxy_responses`: queries in flight together (A and AAAA
                // from one port) each get theirs.
                let expected = u64::from(session.datagrams_in.max(1)) * u64::from(place.responses);
                let done = place.responses > 0 && u64::from(session.replies) >= expected;
                if session.learn_id
                    && let Some(id) = source_id(self.replies.room_bytes(n))
                {
                    session.learn_id = false;
                    self.ids.learned(id, (session.client, key));
                }
                self.replies.push(session.client, n, place.clone());
                if self.replies.to.len() == BATCH {
                    self.replies.send(&self.listener);
                }
                if done {
                    self.end(key, CloseReason::Responses);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                // ECONNREFUSED: the host's port is closed (ICMP).
                self.host_failed(key, &e);
                self.end(key, CloseReason::HostDown);
            }
        }
    }

    /// Ends the sessions quiet for their timeout; forgets places no session
    /// holds and client addresses nothing counts.
    fn sweep(&mut self) {
        let now = self.now;
        let expired = self
            .sessions
            .keys_where(|s| now.saturating_sub(s.last_ms) >= s.place.timeout_ms);
        for key in expired {
            self.end(key, CloseReason::Timeout);
        }
        self.places.retain(|_, place| Arc::strong_count(place) > 1);
        self.sources.forget_idle();
    }

    /// The session's host failed its client (a refusal): marked bad, or a
    /// failure under its group's `failLimit`, as a refused TCP connect.
    fn host_failed(&self, key: Key, error: &io::Error) {
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        let place = &session.place;
        let reason = format!("udp: {error}");
        passive::host_failed(
            &self.task.data,
            &place.names,
            &place.stats,
            place.fail_limit,
            &reason,
        );
    }

    /// Ends the session under `key`: out of the table, its socket closed (and
    /// so out of the set), counted, and logged; its service.
    fn end(&mut self, key: Key, ended: CloseReason) -> Option<Arc<str>> {
        let session = self.close(key)?;
        self.log(&session, ended);
        Some(session.place.names.service.clone())
    }

    /// Takes the session under `key` out of the table and its counts.
    fn close(&mut self, key: Key) -> Option<Session> {
        let session = self.sessions.remove(key)?;
        if session.host_port != 0 {
            self.by_host_port.remove(&(session.host_port, key));
        }
        OPEN_SESSIONS.fetch_sub(1, Relaxed);
        session.place.counters.sessions_open.fetch_sub(1, Relaxed);
        if session.per_source {
            self.sources.closed(session.client.ip());
        }
        self.ids.forget((session.client, key));
        Some(session)
    }

    /// The old process's side of an upgrade: gives every open session up,
    /// socket and facts, for the upgrade to send (no log line: it goes on
    /// there).
    fn give_up(&mut self) {
        let mut moving: Vec<Moving> = Vec::new();
        let now = self.now;
        for key in self.sessions.keys_where(|_| true) {
            let Some(s) = self.close(key) else {
                continue;
            };
            let age = Duration::from_millis(now.saturating_sub(s.started_ms));
            let since = SystemTime::now()
                .checked_sub(age)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let record = MovedSession {
                service: s.place.names.service.to_string(),
                listener: self.local,
                client: s.client,
                group: s.place.names.group.to_string(),
                host: s.place.names.host.to_string(),
                host_addr: s.place.addr,
                since_ns: unix_nanos(since),
                age_us: age.as_micros() as u64,
                idle_ms: now.saturating_sub(s.last_ms),
                bytes_in: s.bytes_in,
                bytes_out: s.bytes_out,
                replies: s.replies,
                id: s.id,
                datagrams_in: s.datagrams_in,
            };
            moving.push((record, OwnedFd::from(s.socket)));
        }
        tracing::info!(
            service = %self.task.service,
            listener = %self.local,
            sessions = moving.len(),
            "upgrade: UDP listener stopped; its sessions move"
        );
        self.task.moves.give_up(moving);
    }

    /// The new process's side: a session the previous process gave up, in
    /// this listener's table, counted open on its host and under the
    /// service's limits. One whose host is gone, or whose client already has
    /// a session here, is closed.
    fn adopt(&mut self, (record, fd): Moving) {
        let snapshot = self.task.data.snapshots.load();
        // The session's service: the listener's, or the one a route chose.
        let named = Some(record.service.as_str()).filter(|n| !n.is_empty());
        let Some(service) = snapshot.service(named.unwrap_or(&self.task.service)) else {
            return;
        };
        let found = service
            .groups
            .iter()
            .filter(|g| *g.name == *record.group)
            .find_map(|g| Some((g, g.hosts.iter().find(|h| *h.name == *record.host)?)));
        let Some((group, host)) = found else {
            tracing::info!(service = %self.task.service, host = record.host, client = %record.client,
                "upgrade: a handed-over UDP session's host is gone: closed");
            return;
        };
        if self.sessions.find(record.client).is_some() {
            return;
        }
        let socket = std::net::UdpSocket::from(fd);
        if socket.set_nonblocking(true).is_err() {
            return;
        }
        let place = self.place(Place {
            names: host.place.clone(),
            counters: service.counters.clone(),
            stats: host.stats.clone(),
            addr: record.host_addr,
            fail_limit: group.options.fail_limit,
            responses: service.options.responses,
            timeout_ms: service.options.session_timeout.as_millis() as u64,
            proxy_v2: host.proxy_protocol.is_some(),
            local: None,
        });
        let age_ms = record.age_us / 1000;
        // It keeps its id (one from an older process that sent none gets one).
        let registry = &self.task.data.registry;
        let id = match record.id {
            0 => registry.next_id(),
            id => {
                registry.numbered_from(id);
                id
            }
        };
        let host_port = self.host_port(&socket);
        let session = Session {
            id,
            socket,
            client: record.client,
            _open: ConnectionGuard::new(place.stats.clone()),
            place,
            last_ms: self.now.saturating_sub(record.idle_ms),
            started_ms: self.now.saturating_sub(age_ms),
            bytes_in: record.bytes_in,
            bytes_out: record.bytes_out,
            datagrams_in: record.datagrams_in,
            replies: record.replies,
            learn_id: false,
            host_port,
            per_source: false,
            inspection: None,
        };
        let per_source = snapshot
            .service(&self.task.service)
            .map_or(0, |own| own.options.max_sessions_per_source);
        // Counted open even past `maxSessions`: it is open already.
        service.counters.sessions_open.fetch_add(1, Relaxed);
        self.insert(session, per_source);
    }

    /// What management surfaces asked (they wrote the wake-up descriptor):
    /// sessions to close, all in one pass over the table, and one list per
    /// turn (every ask with its filter shares it), so that however many
    /// calls come at once a turn copies at most [`MAX_LISTED_SESSIONS`];
    /// the other lists wait for the next turns, and a list whose caller
    /// stopped waiting is dropped. A close for a session not here is not
    /// answered (its sender drops): another relay's, or none.
    fn answer(&mut self) {
        let mut count = [0u8; 8];
        // SAFETY: `wake` is an open non-blocking eventfd; reading its 8
        // bytes resets it (level-triggered, it would be reported again).
        unsafe { libc::read(self.wake.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        let now = Instant::now();
        let (mut closing, mut lists, mut finding) = (Vec::new(), Vec::new(), Vec::new());
        for ask in self.keeping.keeper().take() {
            match ask {
                Ask::List { until, .. } if until <= now => {}
                Ask::List { .. } => lists.push(ask),
                Ask::Close { id, answer } => closing.push((id, answer)),
                Ask::Find { host_local, answer } => finding.push((host_local, answer)),
                Ask::CloseOn { stats, answer } => {
                    let keys = self
                        .sessions
                        .keys_where(|s| Arc::ptr_eq(&s.place.stats, &stats));
                    for &key in &keys {
                        self.end(key, CloseReason::ClosedByAdmin);
                    }
                    let _ = answer.send(keys.len());
                }
            }
        }
        if !finding.is_empty() {
            self.find(finding);
        }
        if !closing.is_empty() {
            let keys = self
                .sessions
                .keys_where(|s| closing.iter().any(|(id, _)| *id == s.id));
            for key in keys {
                let Some(id) = self.sessions.get(key).map(|s| s.id) else {
                    continue;
                };
                self.end(key, CloseReason::ClosedByAdmin);
                for (_, answer) in closing.iter().filter(|(asked, _)| *asked == id) {
                    let _ = answer.send(true);
                }
            }
        }
        let Some(Ask::List { filter, .. }) = lists.first() else {
            return;
        };
        let filter = filter.clone();
        let list = Arc::new(self.listed(&filter));
        let mut later = Vec::new();
        for ask in lists {
            match ask {
                Ask::List {
                    filter: wanted,
                    answer,
                    ..
                } if wanted == filter => {
                    let _ = answer.send(list.clone());
                }
                ask => later.push(ask),
            }
        }
        if !later.is_empty() {
            self.keeping.keeper().put_back(later);
            let one: u64 = 1;
            // SAFETY: as above; 8 bytes from a u64 (a wake-up for the next turn).
            unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// The port of txlb's side of a new session's `socket` when the
    /// control socket may ask for it (as a TCP connection's address is
    /// learnt then), else 0.
    fn host_port(&self, socket: &std::net::UdpSocket) -> u16 {
        if !self.task.data.index_host_side {
            return 0;
        }
        socket.local_addr().map_or(0, |a| a.port())
    }

    /// Answers the control socket's look-ups (sessions by txlb's address
    /// towards their host) from the index by port: the sessions with the
    /// port asked (one, but for another local address's), each address
    /// checked. A look-up with no session here is not answered (its sender
    /// drops).
    fn find(&self, finding: Vec<(SocketAddr, std::sync::mpsc::Sender<ConnectionInfo>)>) {
        let (now, wall) = (clock_ms(), SystemTime::now());
        for (asked, answer) in finding {
            let port = asked.port();
            let found = self
                .by_host_port
                .range((port, Key::MIN)..=(port, Key::MAX))
                .filter_map(|&(_, key)| self.sessions.get(key))
                .find(|s| s.socket.local_addr().is_ok_and(|local| local == asked));
            if let Some(session) = found {
                let _ = answer.send(self.info(session, now, wall));
            }
        }
    }

    /// The sessions `filter` wants as the connections list shows them, at
    /// most [`MAX_LISTED_SESSIONS`].
    fn listed(&self, filter: &SessionFilter) -> Vec<ConnectionInfo> {
        let now = clock_ms();
        let wall = SystemTime::now();
        self.sessions
            .iter()
            .filter(|s| filter.wants(&s.place.names.service, &s.place.names.host))
            .take(MAX_LISTED_SESSIONS)
            .map(|s| self.info(s, now, wall))
            .collect()
    }

    /// A session as the connections list shows it, `now` being [`clock_ms`]
    /// and `wall` the time of day.
    fn info(&self, s: &Session, now: u64, wall: SystemTime) -> ConnectionInfo {
        let age = Duration::from_millis(now.saturating_sub(s.started_ms));
        let since = wall.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
        {
            ConnectionInfo {
                id: s.id,
                transport: Transport::Udp,
                service: s.place.names.service.to_string(),
                group: s.place.names.group.to_string(),
                host: s.place.names.host.to_string(),
                client: s.client,
                listener: self.local,
                host_addr: s.place.addr,
                since: since
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
                bytes_in: s.bytes_in,
                bytes_out: s.bytes_out,
                idle_seconds: Some(now.saturating_sub(s.last_ms) as f64 / 1000.0),
                datagrams_in: Some(u64::from(s.datagrams_in)),
                datagrams_out: Some(u64::from(s.replies)),
                parked: false,
                inspection: s.inspection.as_deref().cloned(),
                draining_in: None,
            }
        }
    }

    /// One access log line for an ended session, when the log is on.
    fn log(&self, session: &Session, ended: CloseReason) {
        let Some(log) = &self.task.data.access_log else {
            return;
        };
        let lasted = Duration::from_millis(clock_ms().saturating_sub(session.started_ms));
        let start = SystemTime::now()
            .checked_sub(lasted)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        // try_send: a full channel drops the record rather than wait.
        let _ = log.try_send(ConnectionRecord {
            start: start
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            client: session.client,
            listener: self.local,
            service: session.place.names.service.to_string(),
            host: session.place.names.host.to_string(),
            host_addr: session.place.addr,
            connect_seconds: 0.0,
            duration_seconds: lasted.as_secs_f64(),
            bytes_in: session.bytes_in,
            bytes_out: session.bytes_out,
            ended,
            failovers: 0,
            inspection: session.inspection.as_deref().cloned(),
        });
    }
}

/// The buffers of a batch of datagrams: [`BATCH`] rooms of [`ROOM`] bytes,
/// mapped as they are written (a room's first page for a small datagram).
struct Rooms(Box<[u8]>);

impl Rooms {
    fn new() -> Rooms {
        Rooms(vec![0; BATCH * ROOM].into_boxed_slice())
    }

    /// The `i`th room's `iovec` for `len` bytes.
    fn iovec(&mut self, i: usize, len: usize) -> libc::iovec {
        libc::iovec {
            iov_base: self.0[i * ROOM..].as_mut_ptr().cast(),
            iov_len: len.min(ROOM),
        }
    }
}

/// Client datagrams of one `recvmmsg`.
struct Received {
    rooms: Rooms,
    from: [libc::sockaddr_storage; BATCH],
    lens: [usize; BATCH],
    /// On a wildcard listener: room for each datagram's control message,
    /// and the address each was sent to.
    control: Option<Box<[Control; BATCH]>>,
    to: [Option<IpAddr>; BATCH],
}

/// 8-byte words of room for one datagram's control message: its
/// destination or source address (`IP_PKTINFO`, `IPV6_PKTINFO`).
const CONTROL_WORDS: usize = 8;
/// A datagram's control message room, aligned as their headers must be.
type Control = [u64; CONTROL_WORDS];

/// Asks the kernel to say, with each datagram `socket` (bound to every
/// address of `local`'s family) receives, the address it was sent to.
fn receive_destinations(socket: &std::net::UdpSocket, local: SocketAddr) -> io::Result<()> {
    let (level, option) = match local {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_PKTINFO),
        // A dual-stack socket's IPv4 datagrams are told as mapped addresses.
        SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
    };
    let on: libc::c_int = 1;
    // SAFETY: an open socket; the option's value is a c_int.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The address a received datagram was sent to, from its `IP_PKTINFO` or
/// `IPV6_PKTINFO` control message; none for a broadcast or multicast one
/// (no reply can leave from those).
fn destination(header: &libc::msghdr) -> Option<IpAddr> {
    // SAFETY: the kernel wrote `msg_controllen` bytes of control messages
    // at `msg_control` (aligned for them); the macros stay within them.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(header) };
    while !cmsg.is_null() {
        // SAFETY: a header within the buffer, and its data after it.
        let (level, kind, data) =
            unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, libc::CMSG_DATA(cmsg)) };
        let ip: Option<IpAddr> = match (level, kind) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                // SAFETY: an IP_PKTINFO message holds an in_pktinfo.
                let info = unsafe { std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>()) };
                Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)).into())
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                // SAFETY: an IPV6_PKTINFO message holds an in6_pktinfo.
                let info = unsafe { std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>()) };
                Some(Ipv6Addr::from(info.ipi6_addr.s6_addr).into())
            }
            _ => None,
        };
        if let Some(ip) = ip {
            let shared = match ip.to_canonical() {
                IpAddr::V4(v4) => v4.is_broadcast() || v4.is_multicast(),
                IpAddr::V6(v6) => v6.is_multicast(),
            };
            return (!shared).then_some(ip);
        }
        // SAFETY: as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(header, cmsg) };
    }
    None
}

/// Writes in `control` the control message that makes a datagram leave
/// from `local` (of the socket's family, as [`destination`] read it); its
/// length.
fn write_source(control: &mut Control, local: IpAddr) -> usize {
    // SAFETY: an all-zero msghdr is valid; it only frames `control` for the
    // macros, which write within it (room for either message).
    let mut frame: libc::msghdr = unsafe { std::mem::zeroed() };
    frame.msg_control = control.as_mut_ptr().cast();
    frame.msg_controllen = std::mem::size_of::<Control>();
    // SAFETY: as above.
    let cmsg = unsafe { &mut *libc::CMSG_FIRSTHDR(&frame) };
    match local {
        IpAddr::V4(ip) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(ip).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            put_message(cmsg, (libc::IPPROTO_IP, libc::IP_PKTINFO), info)
        }
        IpAddr::V6(ip) => {
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: ip.octets(),
                },
                ipi6_ifindex: 0,
            };
            put_message(cmsg, (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO), info)
        }
    }
}

/// Fills `cmsg` (framed with room for `info`) with the message `(level,
/// kind)` carrying `info`; the space it takes.
fn put_message<T>(cmsg: &mut libc::cmsghdr, (level, kind): (i32, i32), info: T) -> usize {
    let len = std::mem::size_of::<T>() as u32;
    cmsg.cmsg_level = level;
    cmsg.cmsg_type = kind;
    // SAFETY: the message's data has room for `info` (see `write_source`).
    unsafe {
        cmsg.cmsg_len = libc::CMSG_LEN(len) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
        libc::CMSG_SPACE(len) as usize
    }
}

impl Received {
    /// Takes up to [`BATCH`] datagrams waiting on `socket`; how many.
    fn receive(&mut self, socket: &std::net::UdpSocket) -> io::Result<usize> {
        // SAFETY: all-zero iovecs and headers are valid (null, empty); each
        // is set below.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, header) in headers.iter_mut().enumerate() {
            iovecs[i] = self.rooms.iovec(i, ROOM);
            let header = &mut header.msg_hdr;
            header.msg_name = (&mut self.from[i] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            header.msg_iov = &mut iovecs[i];
            header.msg_iovlen = 1;
            if let Some(control) = &mut self.control {
                header.msg_control = control[i].as_mut_ptr().cast();
                header.msg_controllen = std::mem::size_of::<Control>();
            }
        }
        // SAFETY: every header points into `self` and `iovecs`, which
        // outlive the call; BATCH headers.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, header) in headers[..n].iter().enumerate() {
            self.lens[i] = header.msg_len as usize;
            if self.control.is_some() {
                self.to[i] = destination(&header.msg_hdr);
            }
        }
        Ok(n)
    }

    /// The `i`th datagram, its sender and, on a wildcard listener, the
    /// address it was sent to (`None`: not an IP address).
    fn datagram(&self, i: usize) -> Option<(&[u8], SocketAddr, Option<IpAddr>)> {
        let from = socket_addr(&self.from[i])?;
        let bytes = &self.rooms.0[i * ROOM..i * ROOM + self.lens[i]];
        Some((bytes, from, self.to[i]))
    }
}

/// The address in `storage` (as the kernel filled it), as std reads one.
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says a sockaddr_in, which the (larger,
            // aligned) storage holds.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: as above, a sockaddr_in6.
            let a = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            Some(SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id).into())
        }
        _ => None,
    }
}

/// Hosts' replies on their way to their clients, sent together with one
/// `sendmmsg` on the listener's socket (at most [`BATCH`], and at the end
/// of each turn of the relay's loop).
struct Replies {
    rooms: Rooms,
    /// Each reply's client, length and place (counted once sent).
    to: Vec<(socket2::SockAddr, usize, Arc<Place>)>,
    /// Each reply's source address, for those of a wildcard listener's
    /// sessions ([`Place::local`]).
    control: Box<[Control; BATCH]>,
}

impl Replies {
    /// Where the next reply is read.
    fn room(&mut self) -> &mut [u8] {
        let at = self.to.len() * ROOM;
        &mut self.rooms.0[at..at + ROOM]
    }

    /// The next reply's first `n` bytes, as read.
    fn room_bytes(&self, n: usize) -> &[u8] {
        let at = self.to.len() * ROOM;
        &self.rooms.0[at..at + n]
    }

    /// The reply read in [`Replies::room`] goes to `client`.
    fn push(&mut self, client: SocketAddr, n: usize, place: Arc<Place>) {
        self.to.push((socket2::SockAddr::from(client), n, place));
    }

    /// Sends the replies waiting, counting each as sent or dropped.
    fn send(&mut self, socket: &std::net::UdpSocket) {
        let count = self.to.len();
        if count == 0 {
            return;
        }
        // SAFETY: as in `Received::receive`.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, (to, len, place)) in self.to.iter().enumerate() {
            iovecs[i] = self.rooms.iovec(i, *len);
            let header = &mut headers[i].msg_hdr;
            header.msg_name = to.as_ptr() as *mut libc::c_void;
            header.msg_namelen = to.len();
            header.msg_iov = &mut iovecs[i];
            header.msg_iovlen = 1;
            if let Some(local) = place.local {
                header.msg_controllen = write_source(&mut self.control[i], local);
                header.msg_control = self.control[i].as_mut_ptr().cast();
            }
        }
        let mut at = 0;
        while at < count {
            // SAFETY: headers `at..count` point into `self.rooms`, `self.to`
            // and `iovecs`, which outlive the call.
            let sent = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    headers[at..].as_mut_ptr(),
                    (count - at) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if sent <= 0 {
                // The first one failed (a full buffer): dropped, as a
                // single send's failure would be; the rest are tried.
                self.to[at].2.counters.dropped_limit.fetch_add(1, Relaxed);
                at += 1;
                continue;
            }
            let sent = sent as usize;
            for (_, len, place) in &self.to[at..at + sent] {
                place.counters.datagrams_out.fetch_add(1, Relaxed);
                place.stats.add_bytes_out(*len as u64);
            }
            at += sent;
        }
        self.to.clear();
    }
}

/// A session about to open: its client, its service (`None`: the
/// listener's), the host to prefer (a QUIC client that came back) and what
/// its QUIC hello told.
struct Opening {
    client: SocketAddr,
    target: Option<Arc<str>>,
    host: Option<Arc<HostStats>>,
    inspection: Option<Box<Inspection>>,
    /// The address it sent to, on a wildcard listener.
    local: Option<IpAddr>,
}

/// Why no session was opened.
enum Unopened {
    /// No host of the service is in rotation.
    NoHost,
    /// No socket for it (descriptors or memory): a limit of this machine.
    Local,
}

/// The host a new session goes to.
struct Picked {
    stats: Arc<HostStats>,
    names: Arc<HostPlace>,
    fail_limit: u32,
    addr: SocketAddr,
    proxy_protocol: Option<crate::config::ProxyVersion>,
}

/// Picks a host of `service` for a new session of `client` and connects a
/// socket to it, passing over hosts whose address is unknown.
fn open(
    service: &ServiceSnapshot,
    client: SocketAddr,
    prefer: Option<&Arc<HostStats>>,
) -> Result<(Picked, std::net::UdpSocket), Unopened> {
    // The enabled group, or the backup group standing in for it; with no
    // group serving, `allBad="open"` tries the enabled group's bad hosts.
    let forced = service.forced_group();
    let group = match forced {
        Some(group) => group,
        None => {
            let serving = service.serving_group().unwrap_or(service.enabled);
            service.groups.get(serving).ok_or(Unopened::NoHost)?
        }
    };
    let mut tried: Vec<HostId> = Vec::new();
    // A client that came back: its host first, while in rotation.
    let mut preferred = prefer.and_then(|stats| {
        group
            .hosts
            .iter()
            .position(|h| Arc::ptr_eq(&h.stats, stats) && h.stats.is_available())
    });
    loop {
        let picked = match preferred.take() {
            Some(at) => at,
            None if forced.is_some() => group.pick_forced(&tried).ok_or(Unopened::NoHost)?,
            None => group.pick(&tried, Some(client)).ok_or(Unopened::NoHost)?,
        };
        let host = &group.hosts[picked];
        host.stats.record_pick();
        tried.push(host.id);
        let Some(addr) = host.socket_addr() else {
            continue;
        };
        let socket = connected_socket(addr).map_err(|error| {
            // Local (descriptors, memory): not the host's fault, and
            // every other host would fail the same way.
            tracing::debug!(service = %service.name, %addr, %error, "udp session socket");
            Unopened::Local
        })?;
        let picked = Picked {
            stats: host.stats.clone(),
            names: host.place.clone(),
            fail_limit: group.options.fail_limit,
            addr,
            proxy_protocol: host.proxy_protocol,
        };
        return Ok((picked, socket));
    }
}

/// Takes a place among the sessions `counters`' service may have open at
/// once (`maxSessions`, every listener's); whether there was one.
fn take_place(counters: &ServiceCounters, max_sessions: u32) -> bool {
    let before = counters.sessions_open.fetch_add(1, Relaxed);
    if before >= u64::from(max_sessions) {
        counters.sessions_open.fetch_sub(1, Relaxed);
        return false;
    }
    true
}

/// Whether the host of a session at `place` takes its client's next
/// datagram: it is in rotation, or bad while `allBad="open"` tries its
/// service's bad hosts (the snapshot is looked at only then).
fn still_serves(snapshot: &Snapshot, place: &Place) -> bool {
    if place.stats.is_available() {
        return true;
    }
    place.stats.health() == HostHealth::Bad
        && snapshot
            .service(&place.names.service)
            .and_then(ServiceSnapshot::forced_group)
            .is_some_and(|group| {
                group
                    .hosts
                    .iter()
                    .any(|h| Arc::ptr_eq(&h.stats, &place.stats))
            })
}

/// Sends on a session's socket at once, behind `header` if any (one
/// datagram, gathered from both: no copy). A UDP send does not block but for
/// a full buffer (then `WouldBlock`, and the datagram is dropped).
fn send(socket: &std::net::UdpSocket, header: Option<&[u8]>, bytes: &[u8]) -> io::Result<usize> {
    match header {
        None => socket.send(bytes),
        Some(header) => socket2::SockRef::from(socket)
            .send_vectored(&[io::IoSlice::new(header), io::IoSlice::new(bytes)]),
    }
}

/// The PROXY v2 header for a datagram of `session`'s client, written in
/// `out`, if its host wants one: the client's address and the one it sent to.
fn header<'a>(out: &'a mut Vec<u8>, session: &Session, local: SocketAddr) -> Option<&'a [u8]> {
    if !session.place.proxy_v2 {
        return None;
    }
    proxy_protocol::write_v2_datagram(session.client, local, out);
    Some(out)
}

/// Whether a send failed for the datagram's length (EMSGSIZE): the
/// datagram's fault, not the host's.
fn too_long(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::EMSGSIZE)
}

fn passed_in(session: &mut Session, n: usize) {
    session.place.counters.datagrams_in.fetch_add(1, Relaxed);
    session.place.stats.add_bytes_in(n as u64);
    session.bytes_in += n as u64;
    session.datagrams_in = session.datagrams_in.saturating_add(1);
}

/// A non-blocking UDP socket on an ephemeral port connected to `host`: the
/// kernel then delivers only the host's datagrams to it, and its ICMP
/// refusals as errors.
fn connected_socket(host: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let any: SocketAddr = match host {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any)?;
    socket.connect(host)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory per session (issue 26: at most 256 B beside the kernel's) is
    /// mostly this record and its slot (8 bytes more); `bench/udp.sh`
    /// measures the whole. (96 B before the id and datagram count the
    /// connections list shows, 104 B before the QUIC inspection's box.)
    #[test]
    fn a_session_record_stays_small() {
        let size = std::mem::size_of::<Option<Session>>();
        assert!(size <= 112, "{size} B");
    }
}
