//! UDP services (`protocol="udp"`): one socket per listen address and a
//! session per client address and port.
//!
//! Each listener is relayed by a thread of its own around one epoll set: the
//! listener's socket, every session's socket and a wake-up descriptor. A
//! client's first datagram picks a host with its service's scheduler (the
//! snapshot is read then, and only then) and opens a session: a UDP socket
//! connected to the host, in the set under the session's key. Later datagrams
//! from the client go out on that socket; the host's replies go back to the
//! client from the listener's socket. A session ends after `sessionTimeout`
//! without a datagram either way (a sweep a tenth of the timeout apart), after
//! `responses` replies, when its host refuses a datagram (ICMP port
//! unreachable: the host is failed as a refused TCP connect is), or when its
//! host is out of rotation as the client sends again (the datagram opens a
//! session on another host).
//!
//! A session is a record in a slab and a socket in the set: no task, no
//! timer, no buffer (datagrams pass through the thread's one buffer, sent on
//! before the next read), so a table of 100,000 sessions is a few dozen
//! megabytes of the kernel's and little of ours. The thread owns the table:
//! no lock.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::connection::{CloseReason, ConnectionRecord};
use super::{DataPlane, passive};
use crate::snapshot::Snapshot;
use crate::state::{ConnectionGuard, HostId, HostStats, ServiceCounters, clock_ms};

/// The largest datagram passed on (a UDP payload's bound; an IPv4 one is at
/// most 65,507 bytes). Larger ones (IPv6 jumbograms) are dropped and counted.
pub(crate) const MAX_DATAGRAM: usize = 65_535;

/// Events taken per `epoll_wait`.
const EVENTS: usize = 64;
/// Client datagrams read per event of the listener's socket before the
/// sessions' replies get their turn.
const CLIENT_BATCH: usize = 64;
/// The listener's socket's key in the set.
const LISTENER_KEY: u64 = u64::MAX;
/// The wake-up descriptor's key.
const WAKE_KEY: u64 = u64::MAX - 1;

/// A UDP listener of a service: what its thread needs besides its socket.
pub(crate) struct UdpListenerTask {
    /// The service it serves.
    pub service: Arc<str>,
    /// The snapshots, events and access log.
    pub data: Arc<DataPlane>,
    /// Cancelled to close the listener (and its sessions).
    pub stop: CancellationToken,
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

impl UdpListenerTask {
    /// Relays datagrams on `socket` (non-blocking) until the listener is
    /// stopped; then ends its sessions. The relay runs on a thread of its
    /// own; this waits for it.
    pub(crate) async fn run(self, socket: std::net::UdpSocket) {
        let service = self.service.clone();
        let stop = self.stop.clone();
        let relay = match Relay::new(self, socket) {
            Ok(relay) => relay,
            Err(error) => {
                tracing::error!(%service, %error, "cannot start relaying UDP");
                return;
            }
        };
        let wake = match relay.wake.try_clone() {
            Ok(wake) => wake,
            Err(error) => {
                tracing::error!(%service, %error, "cannot start relaying UDP");
                return;
            }
        };
        let runtime = tokio::runtime::Handle::current();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let started = std::thread::Builder::new()
            .name("txlb-udp".into())
            .spawn(move || {
                // Ejection timers and events are spawned on the runtime.
                let _runtime = runtime.enter();
                relay.run();
                let _ = done_tx.send(());
            });
        if let Err(error) = started {
            tracing::error!(%service, %error, "cannot start relaying UDP");
            return;
        }
        tokio::select! {
            _ = done_rx => {}
            () = stop.cancelled() => {
                // SAFETY: `wake` is an open eventfd; 8 bytes from a u64.
                let one: u64 = 1;
                unsafe { libc::write(wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
            }
        }
    }
}

/// Where a session's host is, shared by the sessions of one host.
struct Place {
    group: Arc<str>,
    host: Arc<str>,
    /// The host's group's `failLimit` when the session opened.
    fail_limit: u32,
    addr: SocketAddr,
}

/// One session: a record in the relay's slab.
struct Session {
    /// Connected to the host; in the relay's epoll set while open.
    socket: std::net::UdpSocket,
    client: SocketAddr,
    /// Keeps the host's open count; holds its stats.
    guard: ConnectionGuard,
    place: Arc<Place>,
    /// [`clock_ms`] of the last datagram either way, and of the first.
    last_ms: u64,
    started_ms: u64,
    bytes_in: u64,
    bytes_out: u64,
    replies: u32,
    /// The service's `responses` and `sessionTimeout` when it opened.
    responses: u32,
    timeout_ms: u32,
}

/// A slot of the slab; `generation` tells a session from a later one in the
/// same slot (an event read in one batch with the end of the first).
struct Slot {
    generation: u32,
    session: Option<Session>,
}

/// The open sessions: a slab and an index by client address.
#[derive(Default)]
struct Sessions {
    by_client: HashMap<SocketAddr, u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
}

impl Sessions {
    fn key(&self, index: u32) -> u64 {
        (u64::from(self.slots[index as usize].generation) << 32) | u64::from(index)
    }

    /// The slot of the session under `key`, if it is still that session.
    fn index_of(&self, key: u64) -> Option<u32> {
        let index = key as u32;
        let slot = self.slots.get(index as usize)?;
        (u64::from(slot.generation) == key >> 32 && slot.session.is_some()).then_some(index)
    }

    fn get_mut(&mut self, index: u32) -> &mut Session {
        self.slots[index as usize]
            .session
            .as_mut()
            .expect("an index from the table names an open session")
    }

    fn insert(&mut self, session: Session) -> u32 {
        let client = session.client;
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index as usize].session = Some(session);
                index
            }
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    session: Some(session),
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.by_client.insert(client, index);
        index
    }

    fn remove(&mut self, index: u32) -> Session {
        let slot = &mut self.slots[index as usize];
        let session = slot.session.take().expect("removing an open session");
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index);
        if self.by_client.get(&session.client) == Some(&index) {
            self.by_client.remove(&session.client);
        }
        session
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
    sessions: Sessions,
    /// One [`Place`] per host address and group, for new sessions.
    places: HashMap<(usize, SocketAddr), Arc<Place>>,
    /// Every datagram passes through here, sent on before the next read.
    buf: Box<[u8]>,
    /// The service's counters, as of the last client datagram (a reload
    /// keeps them).
    counters: Arc<ServiceCounters>,
    /// Sessions are looked at for their timeout this often, and next then.
    sweep_every: Duration,
    next_sweep: u64,
}

impl Relay {
    fn new(task: UdpListenerTask, listener: std::net::UdpSocket) -> io::Result<Relay> {
        let local = listener.local_addr()?;
        listener.set_nonblocking(true)?;
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
        let relay = Relay {
            task,
            listener,
            local,
            epoll,
            wake,
            sessions: Sessions::default(),
            places: HashMap::new(),
            buf: vec![0; MAX_DATAGRAM + 1].into_boxed_slice(),
            counters: Arc::default(),
            sweep_every: Duration::from_secs(1),
            next_sweep: 0,
        };
        relay.watch(relay.listener.as_raw_fd(), LISTENER_KEY)?;
        relay.watch(relay.wake.as_raw_fd(), WAKE_KEY)?;
        Ok(relay)
    }

    /// Level-triggered: a socket read once per event is reported again
    /// while it has more. Closing a socket takes it out of the set.
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

    fn run(mut self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        self.next_sweep = clock_ms() + self.sweep_every.as_millis() as u64;
        while !self.task.stop.is_cancelled() {
            let wait = self.next_sweep.saturating_sub(clock_ms()).min(1_000) as i32;
            // SAFETY: `events` has room for EVENTS entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS as i32,
                    wait,
                )
            };
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
                    WAKE_KEY => {}
                    key => self.read_host(key),
                }
            }
            let now = clock_ms();
            if now >= self.next_sweep {
                self.sweep(now);
                self.next_sweep = now + self.sweep_every.as_millis() as u64;
            }
        }
        let open: Vec<u32> = self.sessions.by_client.values().copied().collect();
        for index in open {
            self.end(index, CloseReason::Shutdown);
        }
    }

    /// Datagrams waiting on the listener's socket, up to a batch.
    fn read_clients(&mut self) {
        for _ in 0..CLIENT_BATCH {
            match self.listener.recv_from(&mut self.buf) {
                Ok((n, client)) => self.datagram(n, client),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => {
                    // Errors of an unconnected socket are local (memory):
                    // a short pause rather than a spin.
                    tracing::debug!(service = %self.task.service, local = %self.local, %error, "udp receive");
                    std::thread::sleep(Duration::from_millis(10));
                    return;
                }
            }
        }
    }

    /// One datagram of `n` bytes in the buffer from `client`: on to its
    /// session's host, or a new session.
    fn datagram(&mut self, n: usize, client: SocketAddr) {
        let snapshot = self.task.data.snapshots.load();
        let Some(service) = snapshot.service(&self.task.service) else {
            return; // removed by a reload; this listener is closing
        };
        let counters = &service.counters;
        if !Arc::ptr_eq(&self.counters, counters) {
            self.counters = counters.clone();
        }
        if n > MAX_DATAGRAM {
            counters.dropped_oversize.fetch_add(1, Relaxed);
            return;
        }
        if let Some(&index) = self.sessions.by_client.get(&client) {
            let session = self.sessions.get_mut(index);
            if session.guard.stats().is_available() {
                match send(&session.socket, &self.buf[..n]) {
                    Ok(_) => {
                        session.last_ms = clock_ms();
                        passed_in(counters, session, n);
                        return;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        counters.dropped_limit.fetch_add(1, Relaxed);
                        return;
                    }
                    Err(e) => {
                        // A refusal of an earlier datagram (ICMP port
                        // unreachable) or another error of the host's side.
                        self.host_failed(index, &e);
                    }
                }
            }
            // Its host is out of rotation or failed: this datagram picks again.
            self.end(index, CloseReason::HostDown);
        }
        if !super::admission::allowed(client, &service.options) {
            counters.denied.fetch_add(1, Relaxed);
            return;
        }
        if self.sessions.by_client.len() >= service.options.max_sessions as usize
            || OPEN_SESSIONS.load(Relaxed) >= session_cap()
        {
            counters.dropped_limit.fetch_add(1, Relaxed);
            return;
        }
        let (place, stats, socket) = match self.open(&snapshot, client) {
            Ok(opened) => opened,
            Err(Unopened::NoHost) => {
                counters.dropped_no_host.fetch_add(1, Relaxed);
                return;
            }
            Err(Unopened::Local) => {
                counters.dropped_limit.fetch_add(1, Relaxed);
                return;
            }
        };
        let options = &service.options;
        let timeout = options.session_timeout;
        self.sweep_every = (timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let now = clock_ms();
        self.next_sweep = self
            .next_sweep
            .min(now + self.sweep_every.as_millis() as u64);
        stats.record_session();
        counters.sessions_total.fetch_add(1, Relaxed);
        counters.sessions_open.fetch_add(1, Relaxed);
        OPEN_SESSIONS.fetch_add(1, Relaxed); // back in `end`
        let mut session = Session {
            socket,
            client,
            guard: ConnectionGuard::new(stats),
            place,
            last_ms: now,
            started_ms: now,
            bytes_in: 0,
            bytes_out: 0,
            replies: 0,
            responses: options.responses,
            timeout_ms: timeout.as_millis().min(u128::from(u32::MAX)) as u32,
        };
        match send(&session.socket, &self.buf[..n]) {
            Ok(_) => passed_in(counters, &mut session, n),
            Err(_) => {
                counters.dropped_limit.fetch_add(1, Relaxed);
            }
        }
        let fd = session.socket.as_raw_fd();
        let index = self.sessions.insert(session);
        if let Err(error) = self.watch(fd, self.sessions.key(index)) {
            tracing::debug!(service = %self.task.service, %error, "udp session socket");
            self.end(index, CloseReason::Error);
        }
    }

    /// Picks a host for a new session of `client` and connects a socket to
    /// it, passing over hosts whose address is unknown.
    fn open(
        &mut self,
        snapshot: &Snapshot,
        client: SocketAddr,
    ) -> Result<(Arc<Place>, Arc<HostStats>, std::net::UdpSocket), Unopened> {
        let service = snapshot
            .service(&self.task.service)
            .ok_or(Unopened::NoHost)?;
        // The enabled group, or the backup group standing in for it.
        let serving = service.serving_group().unwrap_or(service.enabled);
        let group = service.groups.get(serving).ok_or(Unopened::NoHost)?;
        let mut tried: Vec<HostId> = Vec::new();
        loop {
            let picked = group.pick(&tried, Some(client)).ok_or(Unopened::NoHost)?;
            let host = &group.hosts[picked];
            host.stats.record_pick();
            tried.push(host.id);
            let Some(addr) = host.socket_addr() else {
                continue;
            };
            let socket = connected_socket(addr).map_err(|error| {
                // Local (descriptors, memory): not the host's fault, and
                // every other host would fail the same way.
                tracing::debug!(service = %self.task.service, %addr, %error, "udp session socket");
                Unopened::Local
            })?;
            let key = (Arc::as_ptr(&host.stats) as usize, addr);
            let fail_limit = group.options.fail_limit;
            let fresh = |p: &Arc<Place>| p.fail_limit == fail_limit && p.group == group.name;
            let place = match self.places.get(&key) {
                Some(place) if fresh(place) => place.clone(),
                _ => {
                    let place = Arc::new(Place {
                        group: group.name.clone(),
                        host: host.name.clone(),
                        fail_limit,
                        addr,
                    });
                    self.places.insert(key, place.clone());
                    place
                }
            };
            return Ok((place, host.stats.clone(), socket));
        }
    }

    /// One event of a session's socket: a reply to pass back (one read; the
    /// set reports the socket again while it has more), or its host's
    /// refusal.
    fn read_host(&mut self, key: u64) {
        let Some(index) = self.sessions.index_of(key) else {
            return; // ended earlier in this batch
        };
        let session = self.sessions.get_mut(index);
        match session.socket.recv(&mut self.buf) {
            Ok(n) if n > MAX_DATAGRAM => {
                self.counters.dropped_oversize.fetch_add(1, Relaxed);
            }
            Ok(n) => {
                session.last_ms = clock_ms();
                session.replies = session.replies.saturating_add(1);
                let to = socket2::SockAddr::from(session.client);
                let sent = socket2::SockRef::from(&self.listener).send_to(&self.buf[..n], &to);
                let done = session.responses > 0 && session.replies >= session.responses;
                match sent {
                    Ok(_) => {
                        session.guard.stats().add_bytes_out(n as u64);
                        session.bytes_out += n as u64;
                        self.counters.datagrams_out.fetch_add(1, Relaxed);
                    }
                    Err(_) => {
                        self.counters.dropped_limit.fetch_add(1, Relaxed);
                    }
                }
                if done {
                    self.end(index, CloseReason::Responses);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                // ECONNREFUSED: the host's port is closed (ICMP).
                self.host_failed(index, &e);
                self.end(index, CloseReason::HostDown);
            }
        }
    }

    /// Ends the sessions quiet for their timeout.
    fn sweep(&mut self, now: u64) {
        let expired: Vec<u32> = self
            .sessions
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                let s = slot.session.as_ref()?;
                (now.saturating_sub(s.last_ms) >= u64::from(s.timeout_ms)).then_some(i as u32)
            })
            .collect();
        for index in expired {
            self.end(index, CloseReason::Timeout);
        }
        // Places no session holds any more.
        self.places.retain(|_, place| Arc::strong_count(place) > 1);
    }

    /// The session's host failed its client (a refusal): marked bad, or a
    /// failure under its group's `failLimit`, as a refused TCP connect.
    fn host_failed(&mut self, index: u32, error: &io::Error) {
        let session = self.sessions.get_mut(index);
        let place = &session.place;
        let reason = format!("udp: {error}");
        passive::host_failed(
            &self.task.data,
            (&self.task.service, &place.group, &place.host),
            session.guard.stats(),
            place.fail_limit,
            &reason,
        );
    }

    /// Ends the session in `index`: out of the table, its socket closed (and
    /// so out of the set), counted, and logged.
    fn end(&mut self, index: u32, ended: CloseReason) {
        let session = self.sessions.remove(index);
        OPEN_SESSIONS.fetch_sub(1, Relaxed);
        self.counters.sessions_open.fetch_sub(1, Relaxed);
        self.log(&session, ended);
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
            service: self.task.service.to_string(),
            host: session.place.host.to_string(),
            host_addr: session.place.addr,
            connect_seconds: 0.0,
            duration_seconds: lasted.as_secs_f64(),
            bytes_in: session.bytes_in,
            bytes_out: session.bytes_out,
            ended,
            failovers: 0,
            inspection: None,
        });
    }
}

/// Why no session was opened.
enum Unopened {
    /// No host of the service is in rotation.
    NoHost,
    /// No socket for it (descriptors or memory): a limit of this machine.
    Local,
}

/// Sends on a session's socket at once; a UDP send does not block but for a
/// full buffer (then `WouldBlock`, and the datagram is dropped).
fn send(socket: &std::net::UdpSocket, bytes: &[u8]) -> io::Result<usize> {
    socket.send(bytes)
}

fn passed_in(counters: &ServiceCounters, session: &mut Session, n: usize) {
    counters.datagrams_in.fetch_add(1, Relaxed);
    session.guard.stats().add_bytes_in(n as u64);
    session.bytes_in += n as u64;
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
