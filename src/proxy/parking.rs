//! The parking lot: connections idle for [`PARK_AFTER`] leave the runtime.
//!
//! A parked connection has no task, no tokio I/O registrations and no copy state
//! (together ~1.3 KiB): its two sockets wait in one epoll set per thread, its
//! session (counters, guards, registry entry) in an 88-byte slot of the lot
//! (410-430 B of RSS in all, the registry entry's included). The first byte, FIN or
//! error on either socket hands it back to a new task, as does a close request
//! (timeout, admin close, shutdown), which the new task then carries out.
//! Parking and waking each cost four `epoll_ctl` calls, paid only by
//! connections that sat idle for a second; one woken soon after it parked (a
//! client with a steady beat a little slower than that) waits twice as long
//! before it parks again, up to 8 s (`ConnectionEntry::mark_unparked`).

use std::time::Duration;

/// How long a connection moves no byte before the idle sweeper asks its task to
/// park it.
pub(crate) const PARK_AFTER: Duration = Duration::from_secs(1);

#[cfg(target_os = "linux")]
pub(crate) use lot::{ParkedConnection, available, park, park_moved, take_all};

/// Parking needs epoll; elsewhere connections stay in their tasks.
#[cfg(not(target_os = "linux"))]
pub(crate) fn available() -> bool {
    false
}

#[cfg(target_os = "linux")]
mod lot {
    use std::cell::RefCell;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::io::unix::AsyncFd;
    use tokio_util::task::task_tracker::TaskTrackerToken;

    use crate::proxy::ListenerTask;
    use crate::proxy::connection::{Session, resume};
    use crate::proxy::copy::{Carried, Progress, Side};

    /// How often a lot looks for parked connections asked to close.
    const CLOSE_SCAN: Duration = Duration::from_millis(250);
    /// Events taken per `epoll_wait`.
    const EVENTS: usize = 64;
    /// The relay's buffer: one per lot.
    const RELAY_BUFFER: usize = 64 * 1024;
    /// Reads the relay makes for one event, at most: a stream's bytes wait
    /// for the next turn (the set is level-triggered) behind the others'.
    const READS_PER_EVENT: usize = 4;
    /// Bytes the relay moves in one turn before the worker's other tasks
    /// run.
    const TURN_BYTES: usize = 1 << 20;

    /// A connection waiting in a lot: what its task held, minus the task.
    pub(crate) struct ParkedConnection {
        /// The client socket (non-blocking, out of the runtime).
        pub client: std::net::TcpStream,
        /// The host socket.
        pub host: std::net::TcpStream,
        /// Counters, guards and the registry entry.
        pub session: Session,
        /// Where it was accepted: its task is spawned there again.
        pub listener: Arc<ListenerTask>,
        /// Keeps shutdown waiting for it, as its task did.
        pub _tracked: TaskTrackerToken,
    }

    impl ParkedConnection {
        /// No byte for [`PARK_AFTER`].
        fn quiet(&self) -> bool {
            let last = self.session.entry().last_activity.load(Relaxed);
            let quiet = super::PARK_AFTER.as_millis() as u64;
            crate::state::clock_ms().saturating_sub(last) >= quiet
        }

        /// Asked to close (timeout, admin, drain) or shut down: its task must run.
        fn must_wake(&self) -> bool {
            let entry = self.session.entry();
            entry.close_request().is_some() || self.listener.stop_connections.is_cancelled()
        }
    }

    /// One thread's lot: an epoll set of parked sockets, and who they belong to.
    struct Lot {
        epoll: AsyncFd<OwnedFd>,
        parked: Mutex<Slots>,
        /// Cleared when the lot's task ends (its runtime shut down): the thread
        /// then makes a new lot on its next runtime.
        alive: AtomicBool,
    }

    /// Parked connections by key (their index), in fixed chunks of [`CHUNK`]
    /// slots: a growing array of slots rather than a box each (boxes would
    /// land in the holes the parked tasks left, and keep every page of them
    /// from going back to the kernel), in chunks so that growing never copies
    /// the lot nor leaves up to half of a doubled array unused.
    #[derive(Default)]
    struct Slots {
        chunks: Vec<Box<[Option<ParkedConnection>]>>,
        /// Slots handed out so far (the next new one is at this index).
        used: usize,
        /// Slots freed since, reused first.
        free: Vec<u32>,
        /// Connections parked now; at 0 the chunks are freed.
        len: usize,
    }

    /// Slots per chunk: 32 KiB of them.
    const CHUNK: usize = 32 * 1024 / std::mem::size_of::<Option<ParkedConnection>>();

    impl Slots {
        fn slot(&mut self, at: usize) -> Option<&mut Option<ParkedConnection>> {
            self.chunks.get_mut(at / CHUNK)?.get_mut(at % CHUNK)
        }

        fn insert(&mut self, parked: ParkedConnection) -> u64 {
            let at = match self.free.pop() {
                Some(at) => at as usize,
                None => {
                    if self.used == self.chunks.len() * CHUNK {
                        self.chunks
                            .push(std::iter::repeat_with(|| None).take(CHUNK).collect());
                    }
                    self.used += 1;
                    self.used - 1
                }
            };
            if let Some(slot) = self.slot(at) {
                *slot = Some(parked);
            }
            self.len += 1;
            at as u64
        }

        fn remove(&mut self, key: u64) -> Option<ParkedConnection> {
            let at = usize::try_from(key).ok()?;
            let parked = self.slot(at)?.take()?;
            self.len -= 1;
            if self.len == 0 {
                // The lot is empty: give its memory back.
                *self = Slots::default();
            } else if let Ok(at) = u32::try_from(at) {
                self.free.push(at);
            }
            Some(parked)
        }

        fn keys_where(&self, wanted: impl Fn(&ParkedConnection) -> bool) -> Vec<u64> {
            self.chunks
                .iter()
                .flat_map(|chunk| chunk.iter())
                .enumerate()
                .filter(|(_, p)| p.as_ref().is_some_and(&wanted))
                .map(|(at, _)| at as u64)
                .collect()
        }
    }

    thread_local! {
        static LOT: RefCell<Option<Arc<Lot>>> = const { RefCell::new(None) };
    }

    /// Every thread's lot, for an upgrade to take the parked connections out
    /// of: written when a lot is made, read by [`take_all`]; never on a
    /// connection's way.
    static LOTS: Mutex<Vec<std::sync::Weak<Lot>>> = Mutex::new(Vec::new());

    /// Takes every parked connection that has been quiet for [`PARK_AFTER`]
    /// out of every lot (an upgrade hands them to the new process): their
    /// sockets leave the epoll sets, so nothing here wakes them again. A
    /// busy one (the lot relays its bytes) moves once it goes quiet: a move
    /// is a pause its client would feel.
    pub(crate) fn take_all() -> Vec<ParkedConnection> {
        let lots: Vec<Arc<Lot>> = {
            let mut lots = LOTS.lock().unwrap_or_else(|p| p.into_inner());
            lots.retain(|l| l.strong_count() > 0);
            lots.iter().filter_map(std::sync::Weak::upgrade).collect()
        };
        let mut taken = Vec::new();
        for lot in lots {
            // Chosen and taken under one lock: a slot freed and filled again
            // in between cannot give another connection.
            let mut parked = lot.parked.lock().unwrap_or_else(|p| p.into_inner());
            let keys = parked.keys_where(|p| !p.must_wake() && p.quiet());
            let from = taken.len();
            taken.extend(keys.into_iter().filter_map(|key| parked.remove(key)));
            drop(parked);
            for connection in &taken[from..] {
                lot.unwatch(connection.client.as_raw_fd());
                lot.unwatch(connection.host.as_raw_fd());
            }
        }
        taken
    }

    /// This thread's lot, made (with its task on the current runtime) on first use.
    fn lot() -> Option<Arc<Lot>> {
        LOT.try_with(|slot| {
            let mut slot = slot.borrow_mut();
            if let Some(lot) = slot.as_ref().filter(|l| l.alive.load(Relaxed)) {
                return Some(lot.clone());
            }
            let lot = match Lot::new() {
                Ok(lot) => Arc::new(lot),
                Err(error) => {
                    tracing::debug!(%error, "no parking lot: idle connections keep their tasks");
                    return None;
                }
            };
            tokio::spawn(drive(lot.clone()));
            LOTS.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Arc::downgrade(&lot));
            *slot = Some(lot.clone());
            Some(lot)
        })
        .ok()
        .flatten()
    }

    /// Whether this thread can park connections.
    pub(crate) fn available() -> bool {
        tokio::runtime::Handle::try_current().is_ok() && lot().is_some()
    }

    /// Parks a connection; if it cannot (a socket will not leave the runtime or
    /// join the lot), it is woken at once.
    pub(crate) fn park(
        client: tokio::net::TcpStream,
        host: tokio::net::TcpStream,
        session: Session,
        listener: Arc<ListenerTask>,
    ) {
        let (client, host) = match (client.into_std(), host.into_std()) {
            (Ok(client), Ok(host)) => (client, host),
            (Err(error), _) | (_, Err(error)) => {
                // The sockets are closed; the session's guards drop with it.
                tracing::debug!(%error, "parking failed: connection closed");
                return;
            }
        };
        let _tracked = listener.tracker.token();
        park_moved(ParkedConnection {
            client,
            host,
            session,
            listener,
            _tracked,
        });
    }

    /// Parks a connection in this thread's lot (one parked here, or handed
    /// over by the previous process); if it cannot, it is woken at once.
    pub(crate) fn park_moved(parked: ParkedConnection) {
        let Some(lot) = lot() else {
            resume(parked, Carried::default());
            return;
        };
        let fds = [parked.client.as_raw_fd(), parked.host.as_raw_fd()];
        let mut map = lot.parked.lock().unwrap_or_else(|p| p.into_inner());
        let key = map.insert(parked);
        for (i, fd) in fds.into_iter().enumerate() {
            // The event's data: the key, and which socket (0 the client).
            if let Err(error) = lot.watch(fd, key << 1 | i as u64) {
                tracing::debug!(%error, "parking failed: connection resumed");
                for &fd in &fds[..i] {
                    lot.unwatch(fd);
                }
                if let Some(parked) = map.remove(key) {
                    drop(map);
                    resume(parked, Carried::default());
                }
                return;
            }
        }
    }

    impl Lot {
        fn new() -> io::Result<Lot> {
            // SAFETY: epoll_create1 returns a new descriptor or -1.
            let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is ours alone.
            let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: the AsyncFd owns the descriptor, open until it drops.
            let epoll =
                unsafe { AsyncFd::register_with_interest(epoll, tokio::io::Interest::READABLE) }
                    .map_err(|e| e.into_parts().1)?;
            Ok(Lot {
                epoll,
                parked: Mutex::new(Slots::default()),
                alive: AtomicBool::new(true),
            })
        }

        /// Level-triggered: bytes that came before the socket joined are seen.
        fn watch(&self, fd: RawFd, data: u64) -> io::Result<()> {
            let mut event = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
                u64: data,
            };
            // SAFETY: both descriptors are open; `event` outlives the call.
            let rc = unsafe {
                libc::epoll_ctl(
                    self.epoll.get_ref().as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    fd,
                    &mut event,
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }

        fn unwatch(&self, fd: RawFd) {
            // SAFETY: as in `watch`; a null event is allowed for DEL.
            unsafe {
                libc::epoll_ctl(
                    self.epoll.get_ref().as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    fd,
                    std::ptr::null_mut(),
                );
            }
        }

        /// Takes the connection under `key` out of the lot, if still there.
        fn take(&self, key: u64) -> Option<ParkedConnection> {
            let parked = self
                .parked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(key)?;
            self.unwatch(parked.client.as_raw_fd());
            self.unwatch(parked.host.as_raw_fd());
            Some(parked)
        }

        /// Events (their data and flags), without waiting; WouldBlock when
        /// there are none.
        fn ready_events(&self, ready: &mut Vec<(u64, u32)>) -> io::Result<()> {
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
            // SAFETY: `events` has room for EVENTS entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.get_ref().as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS as i32,
                    0,
                )
            };
            match n {
                n if n < 0 => Err(io::Error::last_os_error()),
                0 => Err(io::ErrorKind::WouldBlock.into()),
                n => {
                    ready.extend(events[..n as usize].iter().map(|e| (e.u64, e.events)));
                    Ok(())
                }
            }
        }
    }

    /// Clears `alive` when the lot's task is dropped with its runtime.
    struct Alive(Arc<Lot>);

    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.alive.store(false, Relaxed);
        }
    }

    /// Relays the bytes of parked connections as they come, and wakes those
    /// it cannot serve (a FIN, an error, a write that would block) and,
    /// every [`CLOSE_SCAN`], those asked to close.
    async fn drive(lot: Arc<Lot>) {
        let _alive = Alive(lot.clone());
        let mut scan = tokio::time::interval(CLOSE_SCAN);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut events = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        // Bytes relayed since the worker's other tasks last ran.
        let mut relayed = 0;
        loop {
            tokio::select! {
                ready = lot.epoll.readable() => {
                    let Ok(mut ready) = ready else { return };
                    loop {
                        match ready.try_io(|_| lot.ready_events(&mut events)) {
                            Ok(Ok(())) => {}
                            Ok(Err(error)) => {
                                tracing::warn!(%error, "parking lot: epoll_wait failed");
                                break;
                            }
                            Err(_would_block) => break,
                        }
                        // Fewer than asked for: every event is taken. The
                        // readiness stays, so the next turn looks again (a
                        // socket left with bytes, even after a short read,
                        // at an urgent mark say, is reported only when
                        // looked for) and finds none, which clears it.
                        let all = events.len() < EVENTS;
                        relayed += serve(&lot, &mut events, &mut buf);
                        if all || relayed >= TURN_BYTES {
                            break;
                        }
                    }
                }
                _ = scan.tick() => {
                    let due = lot
                        .parked
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .keys_where(ParkedConnection::must_wake);
                    for key in due {
                        if let Some(parked) = lot.take(key) {
                            resume(parked, Carried::default());
                        }
                    }
                }
            }
            if relayed >= TURN_BYTES {
                // The worker's other tasks run before the lot relays more
                // (the set is level-triggered: nothing is missed).
                tokio::task::yield_now().await;
                relayed = 0;
            }
        }
    }

    /// Serves `events`: relays what can be relayed without waiting, wakes
    /// the rest; the bytes relayed.
    fn serve(lot: &Lot, events: &mut Vec<(u64, u32)>, buf: &mut Vec<u8>) -> usize {
        const ENDS: u32 = (libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32;
        let mut relayed = 0;
        for (data, flags) in events.drain(..) {
            let (key, from_host) = (data >> 1, data & 1 == 1);
            let mut parked = lot.parked.lock().unwrap_or_else(|p| p.into_inner());
            // Both sockets of one connection can report in one batch.
            let Some(Some(connection)) = parked.slot(key as usize) else {
                continue;
            };
            let carried = match flags & ENDS == 0 && !connection.must_wake() {
                true => {
                    if buf.is_empty() {
                        buf.resize(RELAY_BUFFER, 0);
                    }
                    match relay(connection, from_host, buf) {
                        Relayed::Stays(moved) => {
                            relayed += moved;
                            continue;
                        }
                        Relayed::HandOver(moved, carried) => {
                            relayed += moved;
                            carried
                        }
                    }
                }
                // A FIN or an error, or a close request: its task sees to it.
                false => Carried::default(),
            };
            let Some(connection) = parked.remove(key) else {
                continue;
            };
            drop(parked);
            lot.unwatch(connection.client.as_raw_fd());
            lot.unwatch(connection.host.as_raw_fd());
            resume(connection, carried);
        }
        relayed
    }

    /// What the relay did with one readable socket.
    enum Relayed {
        /// Moved these bytes; the connection stays parked.
        Stays(usize),
        /// Moved these bytes, then met what its task must see to: a FIN, an
        /// error, a write that would block (with the bytes it left).
        HandOver(usize, Carried),
    }

    /// Moves what the client (or, `from_host`, the host) sent to the other
    /// side, as long as it is written whole. Otherwise its task takes over,
    /// first writing what is `Carried` (bytes not written, or the error a
    /// read met), or reading the FIN that came.
    fn relay(connection: &ParkedConnection, from_host: bool, buf: &mut [u8]) -> Relayed {
        use std::io::{Read, Write};
        let (mut from, mut to, side) = match from_host {
            false => (&connection.client, &connection.host, Side::Client),
            true => (&connection.host, &connection.client, Side::Host),
        };
        let mut moved = 0;
        for _ in 0..READS_PER_EVENT {
            let n = match from.read(buf) {
                Ok(0) => return Relayed::HandOver(moved, Carried::default()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Relayed::Stays(moved),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Relayed::HandOver(moved, Carried::Failed(side, error)),
            };
            let mut written = 0;
            while written < n {
                match to.write(&buf[written..n]) {
                    Ok(m) if m > 0 => written += m,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // Full, or failed: the task writes the rest (and meets
                    // the error again).
                    _ => break,
                }
            }
            if written > 0 {
                connection.session.count(Progress::Bytes(side, written));
                moved += written;
            }
            if written < n {
                let rest = buf[written..n].to_vec();
                return Relayed::HandOver(moved, Carried::Bytes(side, rest));
            }
            if n < buf.len() {
                return Relayed::Stays(moved); // drained, most likely
            }
        }
        Relayed::Stays(moved)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// What a parked connection keeps besides its sockets: its slot in the
    /// lot (88 B: the client's early bytes live beside the session, not in
    /// it, and the connect time is four bytes; 128 B before, 576 against 533
    /// B of RSS per parked connection) and its registry entry, whose `Arc`
    /// fits mimalloc's 224-byte size class: the names are the host's shared
    /// `HostPlace`. That class matters as much as the bytes: a connection
    /// allocates and frees nothing else there (heaptrack: it churns 128,
    /// 160, 256, 384, 448 and 2,560 B blocks), so the entries fill whole
    /// pages, provided the allocator asks by size (the binary's `alloc.rs`:
    /// mimalloc's aligned call put them one class up). Entries in 256-byte
    /// blocks measured worse than in 320 (830 against 588 B of RSS per
    /// parked connection): four 256-byte blocks freed per connection as it
    /// parks left holes between them.
    #[test]
    fn a_parked_connection_stays_small() {
        use std::mem::size_of;
        assert!(size_of::<Option<super::ParkedConnection>>() <= 88);
        // An `Arc`'s two counts come first.
        assert!(2 * size_of::<usize>() + size_of::<crate::state::ConnectionEntry>() <= 224);
    }
}
