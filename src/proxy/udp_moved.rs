//! UDP sessions moving between processes (an upgrade). A session is a socket
//! connected to its host and a few facts, so it moves whole: the old process's
//! listener's relay stops receiving and gives each session up without a log
//! line, its socket with a [`MovedSession`]; the new process's relay, which
//! waits for them before its first datagram, puts each in its table and epoll
//! set. The host sees the same source address, so state it
//! keeps per client (a counter, a DNS transaction) carries on; replies it
//! sends meanwhile wait in the socket and go out from the new process.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// What a moved session keeps, beside its connected socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MovedSession {
    /// Its service.
    pub service: String,
    /// The listener's bound address (the same socket in both processes).
    pub listener: SocketAddr,
    /// The client's address and port.
    pub client: SocketAddr,
    /// Group and host names.
    pub group: String,
    pub host: String,
    /// The host's address.
    pub host_addr: SocketAddr,
    /// When it opened, in nanoseconds since the Unix epoch.
    pub since_ns: u64,
    /// How long it has been open, in microseconds.
    pub age_us: u64,
    /// Milliseconds since its last datagram either way (its timeout runs on).
    pub idle_ms: u64,
    /// Bytes each way so far.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Replies passed on so far (what `responses` still allows follows).
    pub replies: u32,
    /// Its id in the connections list, kept in the new process (0: sent by
    /// a process that numbered no sessions; a new id there).
    #[serde(default)]
    pub id: u64,
    /// Client datagrams passed on so far.
    #[serde(default)]
    pub datagrams_in: u32,
}

/// A session and its socket, on its way in or out.
pub(crate) type Moving = (MovedSession, OwnedFd);

/// The sessions' move, both sides; one per balancer.
#[derive(Debug)]
pub(crate) struct SessionMoves {
    /// Old side: the new process takes sessions, so a listener stopping after
    /// the hand-over gives them up rather than ending them. Set by the
    /// upgrade before it marks the sockets handed over.
    export: AtomicBool,
    /// Old side: UDP listener tasks still running; the upgrade sends the
    /// sessions once all have stopped.
    running: AtomicUsize,
    /// Old side: sessions given up, for the upgrade to send.
    outgoing: Mutex<Vec<Moving>>,
    /// New side: cancelled once the previous process's sessions are here (or
    /// none will come); listeners receive nothing before, so a client's next
    /// datagram finds its session.
    arrived: CancellationToken,
    /// New side: sessions handed over, each taken by its listener.
    incoming: Mutex<Vec<Moving>>,
}

/// Longest a new process's listener waits for the previous process's
/// sessions before it receives (the old process sends them within moments).
const ARRIVAL_WAIT: Duration = Duration::from_secs(2);

impl SessionMoves {
    /// Nothing to wait for (a fresh start).
    pub(crate) fn new() -> SessionMoves {
        let moves = SessionMoves::awaiting();
        moves.arrived.cancel();
        moves
    }

    /// A new process whose predecessor sends its sessions.
    pub(crate) fn awaiting() -> SessionMoves {
        SessionMoves {
            export: AtomicBool::new(false),
            running: AtomicUsize::new(0),
            outgoing: Mutex::new(Vec::new()),
            arrived: CancellationToken::new(),
            incoming: Mutex::new(Vec::new()),
        }
    }

    /// Old side: listeners stopping from now on give their sessions up.
    pub(crate) fn export(&self) {
        self.export.store(true, Relaxed);
    }

    /// Whether a stopping listener gives its sessions up.
    pub(crate) fn exporting(&self) -> bool {
        self.export.load(Relaxed)
    }

    /// A listener task started; the guard counts it until it ends.
    pub(crate) fn running(self: &std::sync::Arc<Self>) -> Running {
        self.running.fetch_add(1, Relaxed);
        Running(self.clone())
    }

    /// Sessions a stopped listener gave up.
    pub(crate) fn give_up(&self, sessions: Vec<Moving>) {
        lock(&self.outgoing).extend(sessions);
    }

    /// Old side: every session given up, once no listener runs (at most
    /// `within`).
    pub(crate) async fn take_outgoing(&self, within: Duration) -> Vec<Moving> {
        let until = tokio::time::Instant::now() + within;
        while self.running.load(Relaxed) > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        std::mem::take(&mut *lock(&self.outgoing))
    }

    /// New side: sessions from the previous process; with `last`, the
    /// listeners may receive.
    pub(crate) fn arrive(&self, sessions: Vec<Moving>, last: bool) {
        if self.arrived.is_cancelled() {
            // Too late: the listeners receive already (closed here).
            tracing::info!(
                sessions = sessions.len(),
                "upgrade: UDP sessions came after the listeners started: closed"
            );
            return;
        }
        lock(&self.incoming).extend(sessions);
        if last {
            self.arrived.cancel();
        }
    }

    /// New side: no (more) sessions will come.
    pub(crate) fn none_to_come(&self) {
        self.arrived.cancel();
    }

    /// New side: waits (at most [`ARRIVAL_WAIT`]) for the previous process's
    /// sessions, then takes those of the listener bound to `listener`.
    pub(crate) async fn take_incoming(&self, listener: Option<SocketAddr>) -> Vec<Moving> {
        if tokio::time::timeout(ARRIVAL_WAIT, self.arrived.cancelled())
            .await
            .is_err()
        {
            self.arrived.cancel();
        }
        let Some(listener) = listener else {
            return Vec::new();
        };
        let mut incoming = lock(&self.incoming);
        let (mine, others) = std::mem::take(&mut *incoming)
            .into_iter()
            .partition(|(s, _)| s.listener == listener);
        *incoming = others;
        mine
    }
}

/// Counts a running listener task.
pub(crate) struct Running(std::sync::Arc<SessionMoves>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moving(listener: &str) -> Moving {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let record = MovedSession {
            service: "dns".into(),
            listener: listener.parse().unwrap(),
            client: "127.0.0.1:5000".parse().unwrap(),
            group: "g".into(),
            host: "h".into(),
            host_addr: "127.0.0.1:53".parse().unwrap(),
            since_ns: 0,
            age_us: 0,
            idle_ms: 0,
            bytes_in: 0,
            bytes_out: 0,
            replies: 0,
            id: 7,
            datagrams_in: 0,
        };
        (record, OwnedFd::from(socket))
    }

    #[tokio::test]
    async fn each_listener_takes_its_own_sessions_once_they_arrived() {
        let moves = SessionMoves::awaiting();
        moves.arrive(vec![moving("127.0.0.1:1"), moving("127.0.0.1:2")], false);
        moves.arrive(vec![moving("127.0.0.1:1")], true);
        let first = moves
            .take_incoming(Some("127.0.0.1:1".parse().unwrap()))
            .await;
        assert_eq!(first.len(), 2);
        let again = moves
            .take_incoming(Some("127.0.0.1:1".parse().unwrap()))
            .await;
        assert!(again.is_empty());
        let second = moves
            .take_incoming(Some("127.0.0.1:2".parse().unwrap()))
            .await;
        assert_eq!(second.len(), 1);
    }

    #[tokio::test]
    async fn a_listener_waits_for_sessions_at_most_a_moment_and_later_ones_are_closed() {
        let moves = SessionMoves::awaiting();
        let started = std::time::Instant::now();
        assert!(moves.take_incoming(None).await.is_empty());
        assert!(started.elapsed() >= ARRIVAL_WAIT);
        moves.arrive(vec![moving("127.0.0.1:1")], true);
        assert!(
            moves
                .take_incoming(Some("127.0.0.1:1".parse().unwrap()))
                .await
                .is_empty()
        );
        let fresh = SessionMoves::new();
        let started = std::time::Instant::now();
        fresh.take_incoming(None).await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn the_old_side_sends_once_no_listener_runs() {
        let moves = std::sync::Arc::new(SessionMoves::new());
        let running = moves.running();
        moves.give_up(vec![moving("127.0.0.1:1")]);
        let taking = {
            let moves = moves.clone();
            tokio::spawn(async move { moves.take_outgoing(Duration::from_secs(5)).await.len() })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!taking.is_finished());
        moves.give_up(vec![moving("127.0.0.1:2")]);
        drop(running);
        assert_eq!(taking.await.unwrap(), 2);
    }
}
