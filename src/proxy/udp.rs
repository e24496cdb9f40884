//! UDP services (`protocol="udp"`): one socket per listen address and a
//! session per client address and port.
//!
//! A client's first datagram picks a host with its service's scheduler (the
//! snapshot is read then, and only then) and opens a session: a task with its
//! own UDP socket connected to the host. Later datagrams from the client go out
//! on that socket; the host's replies go back to the client from the
//! listener's socket. A session ends after `sessionTimeout` without a datagram
//! either way, after `responses` replies, when its host refuses a datagram
//! (ICMP port unreachable: the host is failed as a refused TCP connect is), or
//! when its host is out of rotation as the client sends again (the datagram
//! opens a session on another host). The table of sessions belongs to the
//! listener's task alone: no lock. A session holds no buffer: replies are read
//! into one buffer per worker thread and sent on at once. With
//! `proxyProtocol="v2"` each datagram to the host goes behind a PROXY v2
//! header (`DGRAM` family: client and listener addresses), as nginx sends it.
//! Per client address, `datagramRate` bounds datagrams per second and
//! `maxSessionsPerSource` the sessions open (`udp_sources.rs`).
//! In an upgrade the sessions move with their sockets (`udp_moved.rs`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::connection::{CloseReason, ConnectionRecord};
use super::quic::{ConnectionIds, Decided, Offer, Owner, Pending, WAITING_CHECK, source_id};
use super::udp_moved::{MovedSession, Moving, SessionMoves};
use super::udp_sources::Sources;
use super::{DataPlane, ListenerSettings, passive, proxy_protocol};
use crate::snapshot::{ServiceSnapshot, Snapshot};
use crate::state::{
    ConnectionGuard, HostId, HostStats, ServiceCounters, clock_ms, from_unix_nanos, unix_nanos,
};

/// The largest datagram passed on (a UDP payload's bound; an IPv4 one is at
/// most 65,507 bytes). Larger ones (IPv6 jumbograms) are dropped and counted.
pub(crate) const MAX_DATAGRAM: usize = 65_535;

thread_local! {
    /// Where the sessions of this worker thread read their hosts' replies:
    /// each is sent on before the next read, so one buffer serves them all.
    static REPLY: RefCell<Box<[u8]>> = RefCell::new(vec![0; MAX_DATAGRAM + 1].into_boxed_slice());
}

/// A UDP listener of a service: what its task needs besides its socket.
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

impl Drop for Session {
    fn drop(&mut self) {
        OPEN_SESSIONS.fetch_sub(1, Relaxed);
    }
}

/// One session as the listener's table keeps it.
struct Session {
    /// Connected to the host.
    socket: UdpSocket,
    /// The service it belongs to (the listener's, or a route's), and its
    /// counters.
    service: Arc<str>,
    counters: Arc<ServiceCounters>,
    /// The host's counters and health.
    stats: Arc<HostStats>,
    /// Where the host is: service, group, host names, and its address.
    group: Arc<str>,
    host: Arc<str>,
    host_addr: SocketAddr,
    /// The host's group's `failLimit`.
    fail_limit: u32,
    /// [`clock_ms`] of the last datagram either way; written by the listener
    /// (client side) and the session's task (host side).
    last: AtomicU64,
    /// Bytes each way, for the access log.
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Replies passed on; written by the session's task.
    replies: AtomicU32,
    /// When it opened (moved sessions: in the previous process).
    since: SystemTime,
    started: Instant,
    /// Why the listener ended it ([`CloseReason`] as a number, 0: it did not).
    ended_by: AtomicU8,
    /// Cancelled by the listener to end the session, and by the session's
    /// task when it ends on its own. Not a child of the listener's stop: in
    /// an upgrade the listener gives its sessions up whole rather than end
    /// them, and ends them itself otherwise.
    cancel: CancellationToken,
    /// Tells this session from an earlier one of the same client.
    number: u64,
    /// The PROXY v2 header put in front of each datagram to the host
    /// (`proxyProtocol="v2"`), made once for the session.
    header: Option<Box<[u8]>>,
}

impl Session {
    /// Ends the session from the listener's side.
    fn end(&self, reason: CloseReason) {
        self.ended_by.store(reason_code(reason), Relaxed);
        self.cancel.cancel();
    }
}

fn reason_code(reason: CloseReason) -> u8 {
    match reason {
        CloseReason::HostDown => 1,
        CloseReason::Shutdown => 2,
        _ => 3,
    }
}

/// [`Session::ended_by`] of a session given up to a new process: it goes on
/// there, so its task here ends without a log line.
const MOVED: u8 = 4;

fn reason_of(code: u8) -> CloseReason {
    match code {
        1 => CloseReason::HostDown,
        2 => CloseReason::Shutdown,
        _ => CloseReason::Error,
    }
}

/// What the listener's task keeps.
struct Table {
    sessions: HashMap<SocketAddr, Arc<Session>>,
    /// New clients of a listener with routes, until their route is chosen.
    pending: Pending,
    /// Sessions and datagrams per client address, for the per-source limits.
    sources: Sources,
    /// QUIC: the connection IDs hosts chose, by which a client that changed
    /// address finds its service and host again.
    ids: ConnectionIds,
    /// Sessions tell the listener here the connection ID their host chose.
    ids_tx: mpsc::UnboundedSender<(Box<[u8]>, Owner)>,
    next: u64,
    /// Sessions tell the listener here that they ended (client, number).
    ended_tx: mpsc::UnboundedSender<(SocketAddr, u64)>,
}

impl UdpListenerTask {
    /// Receives datagrams until the listener is stopped; then ends its sessions.
    pub(crate) async fn run(self, socket: UdpSocket) {
        let _running = self.moves.running();
        let socket = Arc::new(socket);
        let local = socket.local_addr().ok();
        let (ended_tx, mut ended_rx) = mpsc::unbounded_channel();
        let (ids_tx, mut ids_rx) = mpsc::unbounded_channel();
        let mut table = Table {
            sessions: HashMap::new(),
            pending: Pending::default(),
            sources: Sources::default(),
            ids: ConnectionIds::default(),
            ids_tx,
            next: 0,
            ended_tx,
        };
        // After an upgrade, the previous process's sessions come first: the
        // datagrams waiting in the shared socket may be theirs.
        for moving in self.moves.take_incoming(local).await {
            self.adopt(moving, &socket, &mut table);
        }
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut waiting_check = tokio::time::interval(WAITING_CHECK);
        waiting_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut handed = false;
        loop {
            tokio::select! {
                // The hand-over first: stopping cancels the sessions, which
                // must move whole. Then sessions' messages before new
                // datagrams: a client that changes address right after its
                // host's reply finds the connection ID that reply told.
                biased;
                () = self.handed_over.cancelled(), if !handed => {
                    handed = true;
                    if self.moves.exporting() {
                        break;
                    }
                }
                () = self.stop.cancelled() => break,
                _ = waiting_check.tick(), if !table.pending.is_empty() => {
                    self.waited(&socket, &mut table);
                }
                Some((client, number)) = ended_rx.recv() => {
                    if table.sessions.get(&client).is_some_and(|s| s.number == number) {
                        table.sessions.remove(&client);
                        table.sources.closed(client.ip());
                    }
                    table.ids.forget((client, number));
                }
                Some((id, (client, number))) = ids_rx.recv() => {
                    if table.sessions.get(&client).is_some_and(|s| s.number == number) {
                        table.ids.learned(&id, (client, number));
                    }
                }
                received = socket.recv_from(&mut buf) => match received {
                    Ok((n, client)) => self.datagram(&buf[..n], client, &socket, &mut table),
                    Err(error) => {
                        // Errors of an unconnected socket are local (memory):
                        // a short pause rather than a spin.
                        tracing::debug!(service = %self.service, ?local, %error, "udp receive");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
        match local {
            Some(local) if self.moves.exporting() && self.handed_over.is_cancelled() => {
                self.give_up(table, &mut ended_rx, local).await;
            }
            _ => {
                for session in table.sessions.values() {
                    session.end(CloseReason::Shutdown);
                }
            }
        }
    }

    /// The old process's side of an upgrade: ends each open session's task
    /// here (waiting for it, so nothing here reads its socket any more) and
    /// gives the session up, socket and facts, for the upgrade to send.
    async fn give_up(
        &self,
        mut table: Table,
        ended_rx: &mut mpsc::UnboundedReceiver<(SocketAddr, u64)>,
        listener: SocketAddr,
    ) {
        let open: Vec<_> = table
            .sessions
            .drain()
            .filter(|(_, s)| !s.cancel.is_cancelled())
            .collect();
        for (_, session) in &open {
            session.ended_by.store(MOVED, Relaxed);
            session.cancel.cancel();
        }
        let open_count = open.len();
        let mut running: std::collections::HashSet<_> =
            open.iter().map(|(c, s)| (*c, s.number)).collect();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while !running.is_empty() {
                match ended_rx.recv().await {
                    Some(ended) => drop(running.remove(&ended)),
                    None => return,
                }
            }
        })
        .await;
        let now = clock_ms();
        let moving: Vec<Moving> = open
            .into_iter()
            // A task still running would read replies here: that session ends.
            .filter(|(client, s)| !running.contains(&(*client, s.number)))
            .filter_map(|(client, s)| {
                let fd = std::os::fd::AsFd::as_fd(&s.socket)
                    .try_clone_to_owned()
                    .ok()?;
                let record = MovedSession {
                    service: s.service.to_string(),
                    listener,
                    client,
                    group: s.group.to_string(),
                    host: s.host.to_string(),
                    host_addr: s.host_addr,
                    since_ns: unix_nanos(s.since),
                    age_us: s.started.elapsed().as_micros() as u64,
                    idle_ms: now.saturating_sub(s.last.load(Relaxed)),
                    bytes_in: s.bytes_in.load(Relaxed),
                    bytes_out: s.bytes_out.load(Relaxed),
                    replies: s.replies.load(Relaxed),
                };
                Some((record, fd))
            })
            .collect();
        tracing::info!(
            service = %self.service,
            %listener,
            sessions = moving.len(),
            ended = open_count - moving.len(),
            "upgrade: UDP listener stopped; its sessions move"
        );
        self.moves.give_up(moving);
    }

    /// The new process's side: a session the previous process gave up, in
    /// this listener's table with a task of its own, counted open on its
    /// host and under the service's limits. One whose host is gone, or whose
    /// client already has a session here, is closed.
    fn adopt(&self, (record, fd): Moving, listener: &Arc<UdpSocket>, table: &mut Table) {
        let snapshot = self.data.snapshots.load();
        // The session's service: the listener's, or the one a route chose.
        let named = Some(record.service.as_str()).filter(|n| !n.is_empty());
        let Some(service) = snapshot.service(named.unwrap_or(&self.service)) else {
            return;
        };
        let found = service
            .groups
            .iter()
            .filter(|g| *g.name == *record.group)
            .find_map(|g| Some((g, g.hosts.iter().find(|h| *h.name == *record.host)?)));
        let Some((group, host)) = found else {
            tracing::info!(service = %self.service, host = record.host, client = %record.client,
                "upgrade: a handed-over UDP session's host is gone: closed");
            return;
        };
        if table.sessions.contains_key(&record.client) {
            return;
        }
        let socket = std::net::UdpSocket::from(fd);
        let Ok(socket) = socket
            .set_nonblocking(true)
            .and_then(|()| UdpSocket::from_std(socket))
        else {
            return;
        };
        OPEN_SESSIONS.fetch_add(1, Relaxed); // back in `Session`'s drop
        let header = host.proxy_protocol.and_then(|_| {
            let reached = listener.local_addr().ok()?;
            Some(proxy_protocol::encode_v2_datagram(record.client, reached).into_boxed_slice())
        });
        let session = Arc::new(Session {
            socket,
            service: service.name.clone(),
            counters: service.counters.clone(),
            header,
            stats: host.stats.clone(),
            group: group.name.clone(),
            host: host.name.clone(),
            host_addr: record.host_addr,
            fail_limit: group.options.fail_limit,
            last: AtomicU64::new(clock_ms().saturating_sub(record.idle_ms)),
            bytes_in: AtomicU64::new(record.bytes_in),
            bytes_out: AtomicU64::new(record.bytes_out),
            replies: AtomicU32::new(record.replies),
            since: from_unix_nanos(record.since_ns),
            started: Instant::now()
                .checked_sub(Duration::from_micros(record.age_us))
                .unwrap_or_else(Instant::now),
            ended_by: AtomicU8::new(0),
            cancel: CancellationToken::new(),
            number: table.next,
        });
        table.next += 1;
        table.sessions.insert(record.client, session.clone());
        table.sources.opened(record.client.ip());
        self.serve(session, listener, record.client, service, table, true);
    }

    /// Starts a session's task: the host's replies to `client`.
    fn serve(
        &self,
        session: Arc<Session>,
        listener: &Arc<UdpSocket>,
        client: SocketAddr,
        service: &ServiceSnapshot,
        table: &Table,
        moved_in: bool,
    ) {
        let serve = Serve {
            session,
            listener: listener.clone(),
            client,
            counters: service.counters.clone(),
            timeout: service.options.session_timeout,
            responses: service.options.responses,
            data: self.data.clone(),
            ended: table.ended_tx.clone(),
            // QUIC sessions (a listener with routes) tell their host's
            // connection ID.
            learn: self
                .settings
                .load()
                .routing
                .is_some()
                .then(|| table.ids_tx.clone()),
            learned: Cell::new(false),
            moved_in,
        };
        tokio::spawn(serve.run());
    }

    /// One datagram from `client`: on to its session's host, or a new session.
    fn datagram(
        &self,
        bytes: &[u8],
        client: SocketAddr,
        listener: &Arc<UdpSocket>,
        table: &mut Table,
    ) {
        let snapshot = self.data.snapshots.load();
        let Some(service) = snapshot.service(&self.service) else {
            return; // removed by a reload; this listener is closing
        };
        let counters = &service.counters;
        if bytes.len() > MAX_DATAGRAM {
            counters.dropped_oversize.fetch_add(1, Relaxed);
            return;
        }
        if !table
            .sources
            .datagram(client.ip(), service.options.datagram_rate)
        {
            counters.dropped_rate.fetch_add(1, Relaxed);
            return;
        }
        // The service of the client's session ended here: a new one stays
        // on it (a route's, chosen by the client's first datagrams).
        let mut stays_on = None;
        if let Some(session) = table.sessions.get(&client) {
            let counters = &session.counters;
            // A session that ended on its own (its message to the table may
            // still be on its way) takes no more datagrams: they would reach
            // the host with no one left to relay its replies.
            let open = !session.cancel.is_cancelled();
            if open && session.stats.is_available() {
                match send(&session.socket, session.header.as_deref(), bytes) {
                    Ok(_) => {
                        session.last.store(clock_ms(), Relaxed);
                        passed_in(counters, session, bytes.len());
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
                    Err(e) => {
                        // A refusal of an earlier datagram (ICMP port
                        // unreachable) or another error of the host's side.
                        let place = (&session.service, &session.group, &session.host);
                        let reason = format!("udp: {e}");
                        passive::host_failed(
                            &self.data,
                            place,
                            &session.stats,
                            session.fail_limit,
                            &reason,
                        );
                    }
                }
            }
            // Ended, or its host is out of rotation: this datagram picks again.
            session.end(CloseReason::HostDown);
            stays_on = Some(session.service.clone());
            table.ids.forget((client, session.number));
            table.sessions.remove(&client);
            table.sources.closed(client.ip());
        }
        if !super::admission::allowed(client, &service.options) {
            counters.denied.fetch_add(1, Relaxed);
            return;
        }
        let settings = self.settings.load();
        if let Some(routing) = settings.routing.as_ref().filter(|_| stays_on.is_none()) {
            if self.came_back(&snapshot, bytes, client, listener, table) {
                return;
            }
            match table.pending.offer(client, bytes, routing) {
                Offer::Wait => {}
                Offer::Decided(decided) => {
                    self.start(&snapshot, decided, listener, table);
                }
            }
            return;
        }
        let decided = Decided {
            client,
            target: stays_on,
            datagrams: vec![bytes.into()],
            host: None,
        };
        self.start(&snapshot, decided, listener, table);
    }

    /// A QUIC client from a new address sending to a connection ID a host of
    /// this listener chose: a session on that host (its service, not the
    /// default route), which takes the ID over. Whether it was one.
    fn came_back(
        &self,
        snapshot: &Snapshot,
        bytes: &[u8],
        client: SocketAddr,
        listener: &Arc<UdpSocket>,
        table: &mut Table,
    ) -> bool {
        let Some((owner, id)) = table.ids.find(bytes) else {
            return false;
        };
        let id: Box<[u8]> = id.into();
        let Some(earlier) = table.sessions.get(&owner.0).filter(|s| s.number == owner.1) else {
            return false;
        };
        let decided = Decided {
            client,
            target: Some(earlier.service.clone()),
            datagrams: vec![bytes.into()],
            host: Some(earlier.stats.clone()),
        };
        if let Some(number) = self.start(snapshot, decided, listener, table) {
            table.ids.forget(owner);
            table.ids.learned(&id, (client, number));
        }
        true
    }

    /// Clients that waited for their route past the listener's
    /// `inspectTimeout`: decided on what they sent.
    fn waited(&self, listener: &Arc<UdpSocket>, table: &mut Table) {
        let settings = self.settings.load();
        let routing = settings.routing.as_ref();
        let timeout = routing.map_or(Duration::ZERO, |r| r.timeout);
        let decided = table.pending.expired(timeout, routing);
        if decided.is_empty() {
            return;
        }
        let snapshot = self.data.snapshots.load();
        for decided in decided {
            self.start(&snapshot, decided, listener, table);
        }
    }

    /// Opens a session for a client whose route is decided (its service:
    /// the route's, else the listener's) and sends it the client's
    /// datagrams; the session's number.
    fn start(
        &self,
        snapshot: &Snapshot,
        decided: Decided,
        listener: &Arc<UdpSocket>,
        table: &mut Table,
    ) -> Option<u64> {
        let own = snapshot.service(&self.service)?;
        let name = decided.target.unwrap_or_else(|| self.service.clone());
        let client = decided.client;
        // A route's service gone with a reload: no host for it.
        let Some(service) = snapshot.service(&name) else {
            own.counters.dropped_no_host.fetch_add(1, Relaxed);
            return None;
        };
        if !table
            .sources
            .may_open(client.ip(), own.options.max_sessions_per_source)
        {
            own.counters.dropped_source_limit.fetch_add(1, Relaxed);
            return None;
        }
        let counters = &service.counters;
        if service.groups.is_empty() {
            // Only a listener's own service can lack groups: its listeners
            // route, and this client matched no route.
            counters.no_route.fetch_add(1, Relaxed);
            return None;
        }
        if table.sessions.len() >= own.options.max_sessions as usize
            || OPEN_SESSIONS.load(Relaxed) >= session_cap()
        {
            counters.dropped_limit.fetch_add(1, Relaxed);
            return None;
        }
        let (picked, socket) = match self.open(snapshot, &name, client, decided.host.as_ref()) {
            Ok(opened) => opened,
            Err(Unopened::NoHost) => {
                counters.dropped_no_host.fetch_add(1, Relaxed);
                return None;
            }
            Err(Unopened::Local) => {
                counters.dropped_limit.fetch_add(1, Relaxed);
                return None;
            }
        };
        OPEN_SESSIONS.fetch_add(1, Relaxed); // back in `Session`'s drop
        // Version 1 is refused on UDP by the configuration's check: any
        // header is version 2's, to the address the client sent to.
        let header = picked.proxy_protocol.and_then(|_| {
            let reached = listener.local_addr().ok()?;
            Some(proxy_protocol::encode_v2_datagram(client, reached).into_boxed_slice())
        });
        let session = Arc::new(Session {
            socket,
            service: name.clone(),
            counters: service.counters.clone(),
            stats: picked.stats,
            group: picked.group,
            host: picked.host,
            host_addr: picked.addr,
            fail_limit: picked.fail_limit,
            last: AtomicU64::new(clock_ms()),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            replies: AtomicU32::new(0),
            since: SystemTime::now(),
            started: Instant::now(),
            ended_by: AtomicU8::new(0),
            cancel: CancellationToken::new(),
            number: table.next,
            header,
        });
        table.next += 1;
        for bytes in &decided.datagrams {
            match send(&session.socket, session.header.as_deref(), bytes) {
                Ok(_) => passed_in(counters, &session, bytes.len()),
                Err(e) if too_long(&e) => {
                    counters.dropped_oversize.fetch_add(1, Relaxed);
                }
                Err(_) => {
                    counters.dropped_limit.fetch_add(1, Relaxed);
                }
            }
        }
        table.sessions.insert(client, session.clone());
        table.sources.opened(client.ip());
        let number = session.number;
        self.serve(session, listener, client, service, table, false);
        Some(number)
    }

    /// Picks a host for a new session of `client` and connects a socket to
    /// it, passing over hosts whose address is unknown or whose socket cannot
    /// be made.
    fn open(
        &self,
        snapshot: &Snapshot,
        service: &str,
        client: SocketAddr,
        prefer: Option<&Arc<HostStats>>,
    ) -> Result<(Picked, UdpSocket), Unopened> {
        let service = snapshot.service(service).ok_or(Unopened::NoHost)?;
        // The enabled group, or the backup group standing in for it.
        let serving = service.serving_group().unwrap_or(service.enabled);
        let group = service.groups.get(serving).ok_or(Unopened::NoHost)?;
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
                None => group.pick(&tried, Some(client)).ok_or(Unopened::NoHost)?,
            };
            let host = &group.hosts[picked];
            host.stats.record_pick();
            tried.push(host.id);
            let Some(addr) = host.socket_addr() else {
                continue;
            };
            match connected_socket(addr) {
                Ok(socket) => {
                    return Ok((
                        Picked {
                            stats: host.stats.clone(),
                            group: group.name.clone(),
                            host: host.name.clone(),
                            fail_limit: group.options.fail_limit,
                            addr,
                            proxy_protocol: host.proxy_protocol,
                        },
                        socket,
                    ));
                }
                Err(error) => {
                    // Local (descriptors, memory): not the host's fault, and
                    // every other host would fail the same way.
                    tracing::debug!(service = %service.name, %addr, %error, "udp session socket");
                    return Err(Unopened::Local);
                }
            }
        }
    }
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
    group: Arc<str>,
    host: Arc<str>,
    fail_limit: u32,
    addr: SocketAddr,
    proxy_protocol: Option<crate::config::ProxyVersion>,
}

/// Sends on a session's socket at once, behind `header` if any (one
/// datagram, gathered from both: no copy). Not tokio's `try_send`: that waits
/// for the reactor to have seen the socket writable, which a socket made for
/// the datagram in hand has not; a UDP send does not block but for a full
/// buffer (then `WouldBlock`, and the datagram is dropped).
fn send(socket: &UdpSocket, header: Option<&[u8]>, bytes: &[u8]) -> io::Result<usize> {
    let socket = socket2::SockRef::from(socket);
    match header {
        None => socket.send(bytes),
        Some(header) => socket.send_vectored(&[io::IoSlice::new(header), io::IoSlice::new(bytes)]),
    }
}

/// Whether a send failed for the datagram's length (EMSGSIZE): the
/// datagram's fault, not the host's.
fn too_long(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::EMSGSIZE)
}

fn passed_in(counters: &ServiceCounters, session: &Session, n: usize) {
    counters.datagrams_in.fetch_add(1, Relaxed);
    session.stats.add_bytes_in(n as u64);
    session.bytes_in.fetch_add(n as u64, Relaxed);
}

/// A UDP socket on an ephemeral port connected to `host`: the kernel then
/// delivers only the host's datagrams to it, and its ICMP refusals as errors.
fn connected_socket(host: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = match host {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any)?;
    socket.connect(host)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// A session's task: the host's replies to the client, until it ends.
struct Serve {
    session: Arc<Session>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    counters: Arc<ServiceCounters>,
    timeout: Duration,
    responses: u32,
    data: Arc<DataPlane>,
    ended: mpsc::UnboundedSender<(SocketAddr, u64)>,
    /// QUIC: where to tell the connection ID of the host's first
    /// long-header reply (once).
    learn: Option<mpsc::UnboundedSender<(Box<[u8]>, Owner)>>,
    learned: Cell<bool>,
    /// Handed over by the previous process, which counted its start.
    moved_in: bool,
}

/// What one read of the host's side gave.
enum Read {
    /// Every reply waiting was sent on; `replies` of them.
    Drained(u32),
    /// The session is over.
    End(CloseReason),
}

impl Serve {
    async fn run(self) {
        let session = &self.session;
        let _open = ConnectionGuard::new(session.stats.clone());
        if !self.moved_in {
            session.stats.record_session();
            self.counters.sessions_total.fetch_add(1, Relaxed);
        }
        self.counters.sessions_open.fetch_add(1, Relaxed);
        let timeout_ms = self.timeout.as_millis() as u64;
        let mut replies: u32 = session.replies.load(Relaxed);
        let ended = loop {
            let idle = clock_ms().saturating_sub(session.last.load(Relaxed));
            let left = Duration::from_millis(timeout_ms.saturating_sub(idle));
            if left.is_zero() {
                break CloseReason::Timeout;
            }
            tokio::select! {
                () = session.cancel.cancelled() => break reason_of(session.ended_by.load(Relaxed)),
                () = tokio::time::sleep(left) => continue,
                // ERROR too: the host's refusal (ICMP) is a socket error,
                // not a datagram to read.
                ready = session.socket.ready(Interest::READABLE | Interest::ERROR) => {
                    let Ok(ready) = ready else {
                        break CloseReason::Error;
                    };
                    if ready.is_error() {
                        // Only an error: tokio reads nothing then, so it is
                        // taken here (ECONNREFUSED: the host's port is closed).
                        let error = session.socket.take_error().ok().flatten();
                        let error = error.unwrap_or_else(|| io::Error::other("socket error"));
                        self.host_failed(&error);
                        break CloseReason::HostDown;
                    }
                    match self.drain(replies) {
                        Read::Drained(n) => {
                            replies = replies.saturating_add(n);
                            // For an upgrade to carry what `responses` still allows.
                            session.replies.store(replies, Relaxed);
                        }
                        Read::End(reason) => break reason,
                    }
                    if self.responses > 0 && replies >= self.responses {
                        break CloseReason::Responses;
                    }
                }
            }
        };
        // Seen by the listener before the message below is.
        session.cancel.cancel();
        self.counters.sessions_open.fetch_sub(1, Relaxed);
        let _ = self.ended.send((self.client, session.number));
        if session.ended_by.load(Relaxed) != MOVED {
            self.log(ended);
        }
    }

    /// Sends every reply waiting on the session's socket to the client, up to
    /// what `responses` still allows after the `earlier` ones.
    fn drain(&self, earlier: u32) -> Read {
        let session = &self.session;
        let mut replies = 0;
        REPLY.with(|buf| {
            let mut buf = buf.borrow_mut();
            loop {
                if self.responses > 0 && earlier + replies >= self.responses {
                    return Read::Drained(replies);
                }
                match session.socket.try_recv(&mut buf) {
                    Ok(n) if n > MAX_DATAGRAM => {
                        self.counters.dropped_oversize.fetch_add(1, Relaxed);
                    }
                    Ok(n) => {
                        session.last.store(clock_ms(), Relaxed);
                        replies += 1;
                        self.learn_id(&buf[..n]);
                        let to = socket2::SockAddr::from(self.client);
                        match socket2::SockRef::from(&*self.listener).send_to(&buf[..n], &to) {
                            Ok(_) => {
                                self.counters.datagrams_out.fetch_add(1, Relaxed);
                                session.stats.add_bytes_out(n as u64);
                                session.bytes_out.fetch_add(n as u64, Relaxed);
                            }
                            Err(_) => {
                                self.counters.dropped_limit.fetch_add(1, Relaxed);
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Read::Drained(replies);
                    }
                    Err(e) => {
                        // ECONNREFUSED: the host's port is closed (ICMP).
                        self.host_failed(&e);
                        return Read::End(CloseReason::HostDown);
                    }
                }
            }
        })
    }

    /// Tells the listener the connection ID the host chose, from its first
    /// long-header reply (QUIC sessions only).
    fn learn_id(&self, reply: &[u8]) {
        let Some(learn) = &self.learn else {
            return;
        };
        if self.learned.get() {
            return;
        }
        if let Some(id) = source_id(reply) {
            self.learned.set(true);
            let _ = learn.send((id.into(), (self.client, self.session.number)));
        }
    }

    /// The host failed the session's client (a refusal): marked bad, or a
    /// failure under its group's `failLimit`, as a refused TCP connect.
    fn host_failed(&self, error: &io::Error) {
        let session = &self.session;
        let place = (&session.service, &session.group, &session.host);
        let reason = format!("udp: {error}");
        passive::host_failed(
            &self.data,
            place,
            &session.stats,
            session.fail_limit,
            &reason,
        );
    }

    /// One access log line for the ended session, when the log is on.
    fn log(&self, ended: CloseReason) {
        let Some(log) = &self.data.access_log else {
            return;
        };
        let session = &self.session;
        // try_send: a full channel drops the record rather than wait.
        let _ = log.try_send(ConnectionRecord {
            start: session
                .since
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            client: self.client,
            listener: self.listener.local_addr().unwrap_or(self.client),
            service: session.service.to_string(),
            host: session.host.to_string(),
            host_addr: session.host_addr,
            connect_seconds: 0.0,
            duration_seconds: session.started.elapsed().as_secs_f64(),
            bytes_in: session.bytes_in.load(Relaxed),
            bytes_out: session.bytes_out.load(Relaxed),
            ended,
            failovers: 0,
            inspection: None,
        });
    }
}
