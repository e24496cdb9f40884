//! Listeners: bind, accept with back-off on resource exhaustion, spawn connections.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::DataPlane;
use super::admission::AcceptProxy;
use super::connection::{self, Accepted};
use super::inspect::Routing;
use crate::config::{Listener, ServiceOptions};
use crate::tls::{Terminator, TlsCounters};

/// Pending connections the kernel queues before accept.
const LISTEN_BACKLOG: i32 = 1024;
/// First pause after an accept error such as EMFILE; doubles up to the maximum.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between accept attempts while errors continue.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Shortest time between two "accept failed" warnings of one listener: short of
/// descriptors, accepts can fail between every two that succeed (each success
/// resets the back-off), which would log a line every 10 ms.
const ACCEPT_WARNING_INTERVAL: Duration = Duration::from_secs(1);

/// Binds a listening socket on `addr` with SO_REUSEADDR (restarts don't wait for
/// TIME_WAIT), for `[::]` dual-stack, and with `reuse_port` SO_REUSEPORT so each
/// worker can have its own copy and the kernel spreads connections among them.
pub(crate) fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Seconds a client of a `clientFirst` service may take to send its first
/// bytes before it is accepted anyway (the kernel turns it into SYN-ACK
/// retransmissions: about this long, as nginx's `deferred`).
const DEFER_ACCEPT_SECS: libc::c_int = 1;

/// Sets the options accepted sockets inherit from the listening `socket`, once
/// here rather than once per connection: TCP_NODELAY, and for a service whose
/// clients speak first (`client_first`) deferred accept (the client is
/// accepted with its first bytes, one wake-up) and no quick ACK (its bytes are
/// acknowledged with the answer, not by a segment of their own). Linux only
/// (elsewhere connections set TCP_NODELAY themselves).
pub(crate) fn set_inherited_options(
    socket: std::os::fd::BorrowedFd<'_>,
    client_first: bool,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let options = socket2::SockRef::from(&socket);
        options.set_tcp_nodelay(true)?;
        options.set_tcp_quickack(!client_first)?;
        let defer: libc::c_int = if client_first { DEFER_ACCEPT_SECS } else { 0 };
        // SAFETY: an open socket, and a c_int option value that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&defer as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (socket, client_first);
    Ok(())
}

/// Fails with `AddrInUse` when any socket listens on `addr`, by binding a
/// socket there without SO_REUSEPORT (and closing it). With SO_REUSEPORT the
/// kernel lets a socket join those another process of the same user listens
/// with, and spreads that process's clients over both: the first socket of a
/// listener is probed this way before it is bound with SO_REUSEPORT. SO_REUSEADDR
/// keeps connections in TIME_WAIT from failing the probe. Two programs probing
/// the same free address in the same few microseconds could both pass; a
/// program that starts once the other listens cannot.
pub(crate) fn check_free(addr: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into()).map_err(|error| {
        if error.kind() == io::ErrorKind::AddrInUse {
            in_use_by_another()
        } else {
            error
        }
    })
}

/// The error for a listen address another program holds.
pub(crate) fn in_use_by_another() -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        "address already in use by another program (only a socket handed over by the \
         service manager is shared)",
    )
}

/// Whether `error`, from a dual-stack `[::]` socket, says the machine has no
/// IPv6 (a kernel without it, or no dual-stack sockets) rather than, say, that
/// another program holds the address: only then may "every address" fall back
/// to IPv4 alone.
pub(crate) fn ipv6_unavailable(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(
            libc::EAFNOSUPPORT
                | libc::EPFNOSUPPORT
                | libc::EPROTONOSUPPORT
                | libc::EADDRNOTAVAIL
                | libc::ENOPROTOOPT
        )
    )
}

/// What a listener does with each new client before a host is picked: its
/// PROXY protocol acceptance, its TLS termination and its routes. Built by the
/// controller from the configuration, swapped whole when a command changes it
/// or a reload re-reads its certificates (the socket stays).
#[derive(Debug, Default)]
pub(crate) struct ListenerSettings {
    /// PROXY protocol acceptance (`None`: its clients send no header).
    pub proxy: Option<AcceptProxy>,
    /// TLS termination (`None`: bytes pass as they come).
    pub tls: Option<Terminating>,
    /// Routes by the client's first bytes (`None`: every client is the
    /// listener's service's, and nothing is read before a host is picked);
    /// on a terminating listener, by its handshake's SNI and ALPN.
    pub routing: Option<Routing>,
    /// `acmeHttp`: answers ACME `http-01` validations, waiting this long at
    /// most for a request line (its `inspectTimeout`) while one is on.
    pub acme_http: Option<Duration>,
    /// Whether its clients speak first ([`clients_speak_first`]), as set on
    /// the listening sockets ([`set_inherited_options`]).
    pub client_first: bool,
}

/// Whether `listener`'s clients speak first: its service says so
/// (`clientFirst`), or the listener routes by what they send (only
/// client-first protocols can be routed), so that a client is accepted with
/// its first bytes and they are acknowledged with the answer. Not for routes
/// with an `inspectTimeout` under the second a silent client then waits to
/// be accepted: so short a wait says silent clients are expected (a
/// server-first service behind the routes).
pub(crate) fn clients_speak_first(options: &ServiceOptions, listener: &Listener) -> bool {
    options.client_first
        || (!listener.routes.is_empty()
            && listener.options.inspect_timeout >= Duration::from_secs(DEFER_ACCEPT_SECS as u64))
}

/// A terminating listener's TLS as the data path uses it.
#[derive(Debug)]
pub(crate) struct Terminating {
    /// Certificates and rustls settings, from `tls::load`.
    pub terminator: Arc<Terminator>,
    /// Handshakes counted; kept across changes of the listener's settings.
    pub counters: Arc<TlsCounters>,
}

impl ListenerSettings {
    /// The settings `listener` of a service with `options` asks for, with
    /// `terminator` when it terminates TLS; counters of routes and handshakes
    /// `previous` had too carry over.
    pub(crate) fn new(
        options: &ServiceOptions,
        listener: &Listener,
        previous: Option<&ListenerSettings>,
        terminator: Option<Arc<Terminator>>,
    ) -> ListenerSettings {
        ListenerSettings {
            proxy: AcceptProxy::of(options, &listener.options),
            tls: terminator.map(|terminator| Terminating {
                terminator,
                counters: previous
                    .and_then(|p| p.tls.as_ref())
                    .map(|t| t.counters.clone())
                    .unwrap_or_default(),
            }),
            routing: Routing::new(listener, previous.and_then(|p| p.routing.as_ref())),
            acme_http: listener
                .options
                .acme_http
                .then_some(listener.options.inspect_timeout),
            client_first: clients_speak_first(options, listener),
        }
    }

    /// Whether a listener with these settings asks for `proxy`, `terminator`
    /// (the very one) and `listener`'s routes (their counters aside).
    pub(crate) fn same_as(
        &self,
        proxy: &Option<AcceptProxy>,
        terminator: Option<&Arc<Terminator>>,
        listener: &Listener,
    ) -> bool {
        self.proxy == *proxy
            && self.acme_http
                == listener
                    .options
                    .acme_http
                    .then_some(listener.options.inspect_timeout)
            && match (&self.tls, terminator) {
                (Some(t), Some(other)) => Arc::ptr_eq(&t.terminator, other),
                (None, None) => true,
                _ => false,
            }
            && match &self.routing {
                Some(routing) => routing.same_as(listener),
                None => listener.routes.is_empty(),
            }
    }
}

/// Everything an accept loop needs; cheap to clone per listener.
#[derive(Clone)]
pub(crate) struct ListenerTask {
    /// The service whose enabled group receives this listener's clients (those
    /// no route sends elsewhere).
    pub service: Arc<str>,
    /// This listener's settings. Written by the controller when a command
    /// changes them, read once per accepted client; shared by the listener's
    /// per-worker copies.
    pub settings: Arc<ArcSwap<ListenerSettings>>,
    /// What every connection shares.
    pub data: Arc<DataPlane>,
    /// Cancelled when this listener must stop accepting (removed or shutdown).
    pub stop_accepting: CancellationToken,
    /// Cancelled when open connections must be dropped (end of shutdown grace).
    pub stop_connections: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them to drain.
    pub tracker: TaskTracker,
    /// The service that takes this listener's socket over when a change
    /// moves its address to another (a service renamed): a client it
    /// accepts after its own service is gone, before it has stopped, is
    /// that one's.
    pub successor: Arc<std::sync::OnceLock<Arc<str>>>,
}

impl ListenerTask {
    /// Accepts until `stop_accepting` is cancelled. Its connections share it
    /// (one `Arc` each, not a copy: a parked connection keeps one).
    pub(crate) async fn run(self, listener: TcpListener) {
        let this = Arc::new(self);
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut backoff = ACCEPT_BACKOFF_MIN;
        let mut last_warning: Option<Instant> = None;
        let mut suppressed = 0u64;
        loop {
            let accepted = tokio::select! {
                _ = this.stop_accepting.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((client, peer)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    let task = this.clone();
                    let accepted = Accepted {
                        client,
                        peer,
                        listener: local,
                        accepted_at: SystemTime::now(),
                    };
                    // Boxed: tokio moves a spawned future by value through several
                    // calls (about ten copies of its state); a box moves as a pointer.
                    this.tracker
                        .spawn(Box::pin(connection::serve(accepted, task)));
                }
                Err(error) => {
                    // EMFILE/ENFILE and friends: the listener stays, we pause so the
                    // loop doesn't spin while descriptors are short.
                    if last_warning.is_none_or(|t| t.elapsed() >= ACCEPT_WARNING_INTERVAL) {
                        tracing::warn!(service = %this.service, listener = %local, %error, pause_ms = backoff.as_millis() as u64, suppressed, "accept failed");
                        last_warning = Some(Instant::now());
                        suppressed = 0;
                    } else {
                        suppressed += 1;
                    }
                    tokio::select! {
                        _ = this.stop_accepting.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
        tracing::info!(service = %this.service, listener = %local, "listener closed");
    }
}
