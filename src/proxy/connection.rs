//! One client connection: pick a host, connect (failing over), copy, account.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::net::TcpStream;

use tokio::io::AsyncWriteExt;

use super::ListenerTask;
use super::admission::{Rejected, admit, allowed, read_proxy};
use super::copy::{Carried, Progress, Side, copy_bidirectional};
use super::inspect::{Inspected, choose, inspect};
use super::passive;
use super::proxy_protocol::{self, Version as ProxyVersion};
use super::retry_empty::{FirstByte, Replay};
use super::terminate::{self, TlsClient, handshake, log_failure};
use crate::config::{AllBad, ServiceOptions};
use crate::snapshot::Snapshot;
use crate::state::{
    Admission, CloseRequest, ConnectionEntry, ConnectionGuard, HostId, HostPlace, HostStats,
    Inspection, Limiter, Registered, ServiceCounters, clock_ms,
};
use crate::tls::origin::OriginResult;

/// How a proxied connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloseReason {
    /// The client closed first; the host finished its side.
    ClientClosed,
    /// The host closed first; the client finished its side.
    HostClosed,
    /// A reset or another error on either side.
    Error,
    /// Closed from the admin plane (close action or drain deadline).
    ClosedByAdmin,
    /// Closed at the end of the shutdown grace period.
    Shutdown,
    /// Idle, or half-closed, for longer than the service allows.
    Timeout,
    /// Its host was marked bad by a check, in a group with
    /// `onMarkedDown="close"`; for a UDP session, its host was bad (or
    /// refused a datagram) when the client sent again.
    HostDown,
    /// A UDP session got the `responses` replies its service allows.
    Responses,
}

/// One finished connection, for the access log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionRecord {
    /// When the client was accepted, seconds since the Unix epoch.
    pub start: f64,
    /// Client address.
    pub client: SocketAddr,
    /// Balancer address the client reached.
    pub listener: SocketAddr,
    /// Service name.
    pub service: String,
    /// Host name.
    pub host: String,
    /// Host address.
    pub host_addr: SocketAddr,
    /// Time to connect to the host that served, in seconds.
    pub connect_seconds: f64,
    /// Time from accept to close, in seconds.
    pub duration_seconds: f64,
    /// Bytes from client to host.
    pub bytes_in: u64,
    /// Bytes from host to client.
    pub bytes_out: u64,
    /// How it ended.
    pub ended: CloseReason,
    /// Hosts that failed this client before one served it.
    pub failovers: u32,
    /// On a listener with routes: what the client's first bytes told, and the
    /// route taken.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub inspection: Option<Inspection>,
}

/// What a connection keeps of the snapshot once it has picked: only its host.
struct Target {
    id: HostId,
    /// Its service, group and name.
    place: Arc<HostPlace>,
    stats: Arc<HostStats>,
    connect_timeout: Duration,
    proxy_protocol: Option<ProxyVersion>,
    /// The group's `retryEmpty` bounds (bytes, wait), when it replays.
    retry_empty: Option<(usize, Duration)>,
    /// The group's `failLimit` (0: a failed connect marks the host bad).
    fail_limit: u32,
    /// TLS towards the host (origination): the group's settings and the
    /// host's server name. Boxed: most hosts are plain.
    tls: Option<Box<Originate>>,
    /// The service's `clientFirst`, or the client's first bytes already
    /// read (a routed client): bytes to send once connected, so the
    /// handshake's last ACK can wait for them.
    client_first: bool,
}

/// What a connect to a host that speaks TLS needs.
struct Originate {
    /// The group's client settings (`None`: the group has none, a
    /// configuration the controller does not build).
    client: Option<Arc<rustls::ClientConfig>>,
    /// The name sent and checked.
    name: rustls::pki_types::ServerName<'static>,
    /// The group's handshake counters.
    counters: Option<Arc<crate::tls::origin::OriginCounters>>,
}

/// What the service asks of a new client, read once from the snapshot.
struct ServicePlan {
    options: Arc<ServiceOptions>,
    limiter: Arc<Limiter>,
    counters: Arc<ServiceCounters>,
    /// Whether the service has a group: one without is reached only through
    /// routes, and serves none of its own listeners' clients.
    has_groups: bool,
}

/// The client side of a new connection.
pub(crate) struct Accepted {
    pub client: TcpStream,
    pub peer: SocketAddr,
    pub listener: SocketAddr,
    pub accepted_at: SystemTime,
}

/// A connection with its host: what the copy phase needs, and no more. Boxed,
/// so the futures that pass it along each hold a pointer rather than their own
/// copy.
struct Established {
    client: Client,
    host: Host,
    session: Session,
    /// Bytes read and not written yet: the client's, read before the host
    /// was connected (behind a PROXY header, a route's), or what the parking
    /// lot's relay could not write whole; taken as the copy starts, so a
    /// parked connection does not carry them.
    carried: Carried,
}

/// The host side of an established connection.
enum Host {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS originated towards it (the client's plaintext is encrypted).
    Tls(Box<HostTls>),
}

/// A host's stream with TLS originated towards it.
type HostTls = tokio_rustls::client::TlsStream<TcpStream>;

impl Host {
    /// The host's socket.
    fn socket(&self) -> &TcpStream {
        match self {
            Host::Plain(socket) => socket,
            Host::Tls(stream) => stream.get_ref().0,
        }
    }
}

/// The client side of an established connection.
enum Client {
    /// Bytes as they come: the readiness-driven copy loop, parking.
    Plain(TcpStream),
    /// Terminated TLS (the host gets the plaintext).
    Tls(TlsClient),
}

impl Client {
    /// The client's socket.
    fn socket(&self) -> &TcpStream {
        match self {
            Client::Plain(socket) => socket,
            Client::Tls(stream) => stream.socket(),
        }
    }
}

/// `time` in whole microseconds, saturating at `u32::MAX` (71 minutes).
fn micros(time: Duration) -> u32 {
    u32::try_from(time.as_micros()).unwrap_or(u32::MAX)
}

/// What a connection keeps besides its sockets: all that a parked connection
/// holds (see [`super::parking`]).
pub(crate) struct Session {
    /// Keeps the host's open count; its stats count the bytes.
    guard: ConnectionGuard,
    /// Keeps the connection listed; the entry has the addresses and names.
    registered: Registered,
    /// Keeps the client's place under the service's limits.
    _admission: Admission,
    counters: Arc<ServiceCounters>,
    started: Instant,
    /// How long its connect took, in microseconds (saturating): a parked
    /// connection's every byte counts.
    connect_us: u32,
    failovers: u32,
}

impl Session {
    /// The connection's registry entry.
    pub(crate) fn entry(&self) -> &ConnectionEntry {
        self.registered.entry()
    }

    /// The session of a connection handed over by the previous process (an
    /// upgrade): admitted there, it holds its place under this process's
    /// limits (`admission`).
    pub(super) fn moved(
        guard: ConnectionGuard,
        registered: Registered,
        admission: Admission,
        counters: Arc<ServiceCounters>,
        started: Instant,
        connect_time: Duration,
        failovers: u32,
    ) -> Session {
        Session {
            guard,
            registered,
            _admission: admission,
            counters,
            started,
            connect_us: micros(connect_time),
            failovers,
        }
    }

    /// When the connection was accepted (this process's clock).
    pub(super) fn started(&self) -> Instant {
        self.started
    }

    /// How long its connect took.
    pub(super) fn connect_time(&self) -> Duration {
        Duration::from_micros(u64::from(self.connect_us))
    }

    /// Hosts that failed it before this one.
    pub(super) fn failovers(&self) -> u32 {
        self.failovers
    }

    /// Counts what its copy did (whoever copies: its task, TLS or not, or
    /// the parking lot's relay): bytes on the host and the connection, the
    /// host's first byte as a passive success, a FIN passed on, and the
    /// idle clock.
    #[inline]
    pub(super) fn count(&self, progress: Progress) {
        let (entry, stats) = (self.entry(), self.guard.stats());
        match progress {
            Progress::Bytes(Side::Client, n) => {
                stats.add_bytes_in(n as u64);
                entry.bytes_in.fetch_add(n as u64, Relaxed);
            }
            Progress::Bytes(Side::Host, n) => {
                stats.add_bytes_out(n as u64);
                // The host's first byte to this client: not a failing host.
                if entry.bytes_out.fetch_add(n as u64, Relaxed) == 0 {
                    stats.record_passive_success();
                }
            }
            Progress::Finished(_) => entry.half_closed.store(true, Relaxed),
        }
        entry.last_activity.store(clock_ms(), Relaxed);
    }
}

/// Serves one client to completion. Errors end here: they are counted on the host
/// and logged, never propagated to the accept loop.
pub(crate) fn serve(accepted: Accepted, listener: Arc<ListenerTask>) -> impl Future<Output = ()> {
    // Boxed: the connect phase's state (timer, connect future, failover list) is
    // freed once the host answers instead of sitting in every idle task. Built
    // here, outside the async block, so the block does not keep `accepted`.
    let establish = Box::pin(establish(accepted, listener.clone()));
    async move {
        if let Some(established) = establish.await {
            relay(established, listener).await;
        }
    }
}

/// Reads the PROXY header the listener expects, chooses the service (a
/// listener with routes reads the client's first bytes), admits the client,
/// picks a host and connects, failing over to other hosts, until one answers or
/// none is left (then the client is closed). Each client is counted as
/// accepted by one service: the one that serves it, or that refused it.
async fn establish(accepted: Accepted, listener: Arc<ListenerTask>) -> Option<Box<Established>> {
    let data = &listener.data;
    let current = &listener.settings;
    let settings = current.load_full();
    // Its service, or the one its socket was lent to when a change (a
    // rename) has removed it and this accept loop has not stopped yet.
    let own = match listener.successor.get() {
        Some(next) if data.snapshots.load().service(&listener.service).is_none() => next.clone(),
        _ => listener.service.clone(),
    };
    let Accepted {
        mut client,
        peer,
        listener: local,
        accepted_at,
    } = accepted;
    let started = Instant::now();
    // Linux: inherited from the listener (set once there).
    #[cfg(not(target_os = "linux"))]
    let _ = client.set_nodelay(true);
    let (client_addr, reached, mut early) =
        match read_proxy(&mut client, peer, settings.proxy.as_ref()).await {
            Ok(real) => (real.client, real.reached, real.early),
            Err(rejected) => {
                if let Some(plan) = plan(&data.snapshots.load(), &own) {
                    plan.counters.accepted.fetch_add(1, Relaxed);
                    plan.counters.proxy_errors.fetch_add(1, Relaxed);
                }
                log_refused(&own, peer, &rejected.reason());
                return None;
            }
        };
    // An ACME server validating a certificate txlb orders (http-01): answered
    // here, before the service's rules, as its answer is public by design.
    if let Some(wait) = settings.acme_http
        && data.challenges.answers_http()
        && super::acme_http::answer(&mut client, &early, &data.challenges, wait).await
    {
        return None;
    }
    // The listener's own service owns the port: a client its access lists
    // refuse is closed before anything is read (a handshake, a route's
    // bytes), whatever it would have asked for.
    if (settings.routing.is_some() || settings.tls.is_some())
        && let Some(own_plan) = plan(&data.snapshots.load(), &own)
        && !allowed(client_addr, &own_plan.options)
    {
        own_plan.counters.accepted.fetch_add(1, Relaxed);
        own_plan.counters.denied.fetch_add(1, Relaxed);
        log_refused(&own, client_addr, &Rejected::Denied.reason());
        return None;
    }
    // What the client told (its handshake, or its first bytes on a listener
    // with routes), and the route it matched. The handshake's state and its
    // results live in a box of their own: a plain connection's future does
    // not carry them.
    let (client, inspected) = match &settings.tls {
        Some(tls) => {
            let early = std::mem::take(&mut early);
            let routing = settings.routing.as_ref();
            match Box::pin(terminate(client, early, tls, routing)).await {
                Ok((client, inspected)) => (Client::Tls(client), Some(inspected)),
                Err(why) => {
                    log_failure(why, client_addr, &own);
                    return None;
                }
            }
        }
        None => {
            let inspected = match &settings.routing {
                Some(routing) => Some(inspect(&mut client, &mut early, routing).await),
                None => None,
            };
            (Client::Plain(client), inspected)
        }
    };
    let (service_name, inspection, plan) = match inspected {
        None => {
            let plan = plan(&data.snapshots.load(), &own);
            (own, None, plan)
        }
        Some(mut inspected) => {
            let routing = settings.routing.as_ref();
            let snapshot = data.snapshots.load();
            let routed = inspected.route.zip(routing).and_then(|(at, routing)| {
                let service = &routing.targets[at].service;
                Some((service.clone(), plan(&snapshot, service)?))
            });
            // A route matched but a reload removed or renamed its service
            // while the client was read: the listener's routes as they are
            // now choose again (a route renamed with its service follows it).
            let again = (routed.is_none() && inspected.route.is_some())
                .then(|| {
                    let now = current.load();
                    let routing = now.routing.as_ref()?;
                    let chosen = choose(inspected.seen(), routing);
                    let service = routing.targets[chosen.route?].service.clone();
                    let plan = plan(&snapshot, &service)?;
                    Some((service, chosen.inspection, plan))
                })
                .flatten();
            match (routed, again) {
                (Some((service, plan)), _) => (service, Some(inspected.inspection), Some(plan)),
                (None, Some((service, mut inspection, plan))) => {
                    inspection.tls = inspected.inspection.tls.take();
                    (service, Some(inspection), Some(plan))
                }
                (None, None) => {
                    // No route matched (or none does now): the listener's
                    // own service serves it, as the listener now says.
                    inspected.inspection.route = None;
                    let plan = plan(&snapshot, &own);
                    (own, Some(inspected.inspection), plan)
                }
            }
        }
    };
    let service: &str = &service_name;
    let Some(plan) = plan else {
        log_refused(service, client_addr, "service no longer exists");
        return None;
    };
    plan.counters.accepted.fetch_add(1, Relaxed);
    if !plan.has_groups {
        // Only a listener's own service can lack groups: its listeners route,
        // and this client matched no route.
        plan.counters.no_route.fetch_add(1, Relaxed);
        log_refused(service, client_addr, "no route matched");
        return None;
    }
    let admission = match admit(client_addr, &plan.options, &plan.limiter).await {
        Ok(admission) => admission,
        Err(rejected) => {
            let counter = match rejected {
                Rejected::Proxy(_) => &plan.counters.proxy_errors,
                Rejected::Denied => &plan.counters.denied,
                Rejected::Limit(_) => &plan.counters.over_limit,
            };
            counter.fetch_add(1, Relaxed);
            log_refused(service, client_addr, &rejected.reason());
            return None;
        }
    };
    // Client bytes kept for a replay, once a group with `retryEmpty` is tried.
    let mut replay: Option<Replay> = None;
    // Hosts that failed for this client; allocated only when one fails.
    let mut tried: Vec<HostId> = Vec::new();
    let bytes_in_hand = !early.is_empty();
    loop {
        let Some(mut target) = pick(&data.snapshots.load(), service, client_addr, &tried) else {
            plan.counters.no_host.fetch_add(1, Relaxed);
            let reason = if tried.is_empty() {
                "no host available in the enabled group or its backups"
            } else {
                "every available host failed"
            };
            log_refused(service, client_addr, reason);
            return None; // dropping `client` closes it at once
        };
        // Bytes to send at once (the client's first, a PROXY header): the
        // handshake's last ACK can ride with them.
        target.client_first |= bytes_in_hand || target.proxy_protocol.is_some();
        // Counted as open from now on, so leastc sees connections in progress.
        let guard = ConnectionGuard::new(target.stats.clone());
        let connect_started = Instant::now();
        let connected = match connect(&target).await {
            Ok((host, host_addr)) => {
                let addresses = (client_addr, reached, client.socket());
                send_proxy_header(&target, host, addresses, inspection.as_deref())
                    .await
                    .map(|host| (host, host_addr))
            }
            Err(ConnectError::Host(reason)) => Err(reason),
            Err(ConnectError::Local(reason)) => {
                // Out of descriptors or memory here: the host is not to blame
                // (marking it bad would refuse everyone until hostCheck) and
                // every other host would fail the same way.
                plan.counters.no_host.fetch_add(1, Relaxed);
                log_refused(service, client_addr, &reason);
                return None;
            }
        };
        // TLS towards the host, within what is left of the connect timeout.
        let connected = match (connected, &target.tls) {
            (Ok((host, host_addr)), Some(tls)) => {
                let deadline =
                    tokio::time::Instant::from_std(connect_started) + target.connect_timeout;
                Box::pin(originate(host, tls, host_addr, deadline))
                    .await
                    .map(|host| (Host::Tls(Box::new(host)), host_addr))
            }
            (Ok((host, host_addr)), None) => Ok((Host::Plain(host), host_addr)),
            (Err(reason), _) => Err(reason),
        };
        // A terminated client's bytes are read through TLS, and a host's
        // through TLS too with origination: `retryEmpty` (which reads the
        // sockets) applies only between plain ones.
        let retry_empty = match (&client, &target.tls) {
            (Client::Plain(_), None) => target.retry_empty,
            _ => None,
        };
        let connected = match (connected, retry_empty) {
            (Ok((Host::Plain(mut host), host_addr)), Some((max_bytes, wait))) => {
                let socket = client.socket();
                let replay = replay.get_or_insert_with(|| Replay {
                    bytes: std::mem::take(&mut early),
                    ..Replay::default()
                });
                match retry_on_empty(replay, socket, &mut host, (max_bytes, wait)).await {
                    Ok(()) => Ok((Host::Plain(host), host_addr)),
                    Err(reason) => Err(reason),
                }
            }
            (Ok((mut host, host_addr)), _) => match &replay {
                // A replay started on a `retryEmpty` group: the new host gets it.
                Some(replay) if !replay.given_up => replay_to(replay, &mut host)
                    .await
                    .map(|()| (host, host_addr))
                    .map_err(|e| format!("replaying the client's bytes: {e}")),
                _ => Ok((host, host_addr)),
            },
            (Err(reason), _) => Err(reason),
        };
        let (host, host_addr) = match connected {
            Ok(connected) => connected,
            Err(reason) => {
                let place = &target.place;
                passive::host_failed(data, place, &target.stats, target.fail_limit, &reason);
                tried.push(target.id);
                continue;
            }
        };
        let connect_time = connect_started.elapsed();
        target.stats.record_connected(connect_time);
        if !tried.is_empty() {
            plan.counters.failovers.fetch_add(1, Relaxed);
        }
        let host_local = if data.index_host_side {
            host.socket().local_addr().ok()
        } else {
            None
        };
        let registered = data.registry.register(ConnectionEntry::new(
            data.registry.next_id(),
            target.place,
            target.stats,
            client_addr,
            local,
            host_addr,
            host_local,
            accepted_at,
            inspection,
        ));
        return Some(Box::new(Established {
            client,
            host,
            session: Session {
                guard,
                registered,
                _admission: admission,
                counters: plan.counters,
                started,
                connect_us: micros(connect_time),
                failovers: tried.len() as u32,
            },
            carried: Carried::Bytes(Side::Client, early),
        }));
    }
}

/// The TLS handshake of a terminating listener's client, then the route its
/// SNI and ALPN match (when the listener routes): the client, speaking TLS,
/// and what it told.
async fn terminate(
    client: TcpStream,
    early: Vec<u8>,
    tls: &super::listener::Terminating,
    routing: Option<&super::inspect::Routing>,
) -> Result<(TlsClient, Inspected), crate::tls::HandshakeFailure> {
    let done = handshake(client, early, tls).await?;
    let mut inspected = match routing {
        Some(routing) => choose(done.seen, routing),
        None => Inspected::unrouted(done.seen),
    };
    inspected.inspection.tls = Some(Box::new(done.session));
    Ok((done.stream, inspected))
}

/// Copies until both sides are done or the connection is asked to close, then
/// writes the access log record; or, asked to park while idle, parks it.
async fn relay(mut established: Box<Established>, listener: Arc<ListenerTask>) {
    let carried = std::mem::take(&mut established.carried);
    // Shutdown closes registered connections; one registering just after it
    // began sees the flag instead.
    if listener.stop_connections.is_cancelled() {
        established
            .session
            .entry()
            .request_close(CloseRequest::Shutdown);
    }
    let outcome = match (&established.client, &established.host) {
        (Client::Plain(_), Host::Plain(_)) => copy(&established, carried).await,
        // Boxed: a plain connection's task does not carry its state. Only
        // client bytes come with it (a TLS connection never parks).
        _ => {
            let early = match carried {
                Carried::Bytes(Side::Client, early) => early,
                _ => Vec::new(),
            };
            Outcome::Ended(Box::pin(copy_tls(&mut established, early)).await)
        }
    };
    let ended = match outcome {
        Outcome::Ended(ended) => ended,
        Outcome::Park => {
            #[cfg(target_os = "linux")]
            {
                let Established {
                    client: Client::Plain(client),
                    host: Host::Plain(host),
                    session,
                    ..
                } = *established
                else {
                    return; // only a plain connection parks
                };
                super::parking::park(client, host, session, listener);
                return;
            }
            #[cfg(not(target_os = "linux"))]
            unreachable!("parking is never available here");
        }
    };
    let Established { session, host, .. } = &*established;
    let entry = session.entry();
    if ended == CloseReason::Timeout {
        session.counters.timeouts.fetch_add(1, Relaxed);
    }
    // Ended by an error before the host said anything, and the host's side is
    // no longer connected: the host reset it (a client's reset leaves it
    // connected). A failure for the passive checks.
    if ended == CloseReason::Error
        && entry.bytes_out.load(Relaxed) == 0
        && host.socket().peer_addr().is_err()
    {
        passive::host_reset(&listener.data, &entry.place, session.guard.stats());
    }
    if let Some(log) = &listener.data.access_log {
        // try_send: a full channel drops the record rather than wait.
        let _ = log.try_send(ConnectionRecord {
            start: entry.since_secs(),
            client: entry.client,
            listener: entry.listener,
            service: entry.place.service.to_string(),
            host: entry.place.host.to_string(),
            host_addr: entry.host_addr,
            connect_seconds: session.connect_time().as_secs_f64(),
            duration_seconds: session.started.elapsed().as_secs_f64(),
            bytes_in: entry.bytes_in.load(Relaxed),
            bytes_out: entry.bytes_out.load(Relaxed),
            ended,
            failovers: session.failovers,
            inspection: entry.inspection.as_deref().cloned(),
        });
    }
}

/// How the copy phase ended.
enum Outcome {
    /// The connection is over.
    Ended(CloseReason),
    /// Idle and asked to park: nothing in flight, the copy can start over.
    Park,
}

/// Copies both ways, counting, until the connection ends or parks.
async fn copy(established: &Established, carried: Carried) -> Outcome {
    let Established {
        client: Client::Plain(client),
        host: Host::Plain(host),
        session,
        ..
    } = established
    else {
        return Outcome::Ended(CloseReason::Error); // one with TLS: copy_tls
    };
    let entry = session.entry();
    let copy = copy_bidirectional(client, host, carried, |progress| session.count(progress));
    let mut copy = std::pin::pin!(copy);
    loop {
        tokio::select! {
            biased;
            result = &mut copy => return Outcome::Ended(match result {
                Ok(copied) if copied.first_to_close == Side::Host => CloseReason::HostClosed,
                Ok(_) => CloseReason::ClientClosed,
                Err(error) => {
                    tracing::debug!(service = %entry.place.service, host = %entry.place.host, client = %entry.client, %error, "connection ended with an error");
                    CloseReason::Error
                }
            }),
            _ = entry.close.notified() => {
                if entry.park_requested() {
                    // `mark_parked` fails only if a close request came in
                    // meanwhile; its notification is next.
                    if copy.is_idle() && super::parking::available() && entry.mark_parked() {
                        return Outcome::Park;
                    }
                    entry.decline_park();
                    continue;
                }
                if let Some(ended) = close_requested(entry) {
                    return Outcome::Ended(ended);
                }
            }
        }
    }
}

/// Why the connection was asked to close, if it was.
fn close_requested(entry: &ConnectionEntry) -> Option<CloseReason> {
    match entry.close_request()? {
        CloseRequest::Shutdown => Some(CloseReason::Shutdown),
        CloseRequest::Timeout => Some(CloseReason::Timeout),
        CloseRequest::Admin => Some(CloseReason::ClosedByAdmin),
        CloseRequest::HostDown => Some(CloseReason::HostDown),
    }
}

/// Copies both ways between a client and a host one of which speaks TLS
/// (terminated, originated or both), counting, until the connection ends;
/// it never parks (its TLS state lives in the task). `early`, client bytes already
/// read, go to the host first.
async fn copy_tls(established: &mut Established, early: Vec<u8>) -> CloseReason {
    let Established {
        client,
        host,
        session,
        ..
    } = established;
    let client: &mut dyn terminate::Stream = match client {
        Client::Plain(socket) => socket,
        Client::Tls(stream) => stream.stream(),
    };
    let host: &mut dyn terminate::Stream = match host {
        Host::Plain(socket) => socket,
        Host::Tls(stream) => &mut **stream,
    };
    let entry = session.entry();
    if !early.is_empty()
        && let Err(error) = host.write_all(&early).await
    {
        tracing::debug!(service = %entry.place.service, host = %entry.place.host, client = %entry.client, %error, "connection ended with an error");
        return CloseReason::Error;
    }
    drop(early); // not held for the connection's life
    let copy = terminate::copy(client, host, |side, n| {
        session.count(Progress::Bytes(side, n))
    });
    let mut copy = std::pin::pin!(copy);
    loop {
        tokio::select! {
            biased;
            result = &mut copy => return match result {
                Ok(Side::Host) => CloseReason::HostClosed,
                Ok(Side::Client) => CloseReason::ClientClosed,
                Err(error) => {
                    tracing::debug!(service = %entry.place.service, host = %entry.place.host, client = %entry.client, %error, "connection ended with an error");
                    CloseReason::Error
                }
            },
            _ = entry.close.notified() => {
                if entry.park_requested() {
                    entry.decline_park_for_good();
                    continue;
                }
                if let Some(ended) = close_requested(entry) {
                    return ended;
                }
            }
        }
    }
}

/// Back from the parking lot: the connection gets a task again, on this
/// runtime, which writes first what the lot's relay `carried`.
#[cfg(target_os = "linux")]
pub(super) fn resume(parked: super::parking::ParkedConnection, carried: Carried) {
    let super::parking::ParkedConnection {
        client,
        host,
        session,
        listener,
        _tracked,
    } = parked;
    session.entry().mark_unparked(super::parking::PARK_AFTER);
    match (TcpStream::from_std(client), TcpStream::from_std(host)) {
        (Ok(client), Ok(host)) => {
            let established = Box::new(Established {
                client: Client::Plain(client),
                host: Host::Plain(host),
                session,
                carried,
            });
            let tracker = listener.tracker.clone();
            tracker.spawn(Box::pin(relay(established, listener)));
        }
        (Err(error), _) | (_, Err(error)) => {
            tracing::debug!(%error, "resuming a parked connection failed: closed");
        }
    }
}

/// Sends the host what the client sent so far, then waits for the host's first
/// byte while relaying and keeping more. `Err` means the host failed before
/// answering and the client can be replayed to another one.
async fn retry_on_empty(
    replay: &mut Replay,
    client: &TcpStream,
    host: &mut TcpStream,
    (max_bytes, wait): (usize, Duration),
) -> Result<(), String> {
    if replay.given_up {
        return Ok(());
    }
    replay
        .replay_to(host)
        .await
        .map_err(|e| format!("replaying the client's bytes: {e}"))?;
    match replay.await_first_byte(client, host, max_bytes, wait).await {
        FirstByte::Answered | FirstByte::GaveUp => Ok(()),
        FirstByte::Failed(reason) => Err(reason),
    }
}

/// Sends a new host everything the client sent so far (a replay started on
/// a `retryEmpty` group), through TLS if the host speaks it.
async fn replay_to(replay: &Replay, host: &mut Host) -> std::io::Result<()> {
    match host {
        Host::Plain(socket) => replay.replay_to(socket).await,
        Host::Tls(stream) => {
            stream.write_all(&replay.bytes).await?;
            if replay.client_done {
                stream.shutdown().await?;
            }
            Ok(())
        }
    }
}

/// The client side of a TLS handshake with a host over `host` (connected),
/// by `deadline` (the connect timeout's end). A certificate that does not
/// verify fails it, as a refused connect does; the reason says why.
async fn originate(
    host: TcpStream,
    tls: &Originate,
    addr: SocketAddr,
    deadline: tokio::time::Instant,
) -> Result<HostTls, String> {
    let Some(client) = &tls.client else {
        return Err(format!(
            "TLS handshake with {addr}: the group has no TLS settings"
        ));
    };
    let connector = tokio_rustls::TlsConnector::from(client.clone());
    let started = Instant::now();
    let (result, outcome) =
        match tokio::time::timeout_at(deadline, connector.connect(tls.name.clone(), host)).await {
            Ok(Ok(stream)) => (OriginResult::Ok, Ok(stream)),
            Ok(Err(error)) => (
                OriginResult::of(&error),
                Err(format!("TLS handshake with {addr}: {error}")),
            ),
            Err(_) => (
                OriginResult::Timeout,
                Err(format!(
                    "TLS handshake with {addr}: not done within the connect timeout"
                )),
            ),
        };
    if let Some(counters) = &tls.counters {
        counters.count(result, started.elapsed());
    }
    outcome
}

/// The service's admission settings, from the snapshot.
fn plan(snapshot: &Snapshot, service: &str) -> Option<ServicePlan> {
    let service = snapshot.service(service)?;
    Some(ServicePlan {
        options: service.options.clone(),
        limiter: service.limiter.clone(),
        counters: service.counters.clone(),
        has_groups: !service.groups.is_empty(),
    })
}

/// Writes the PROXY protocol header the host expects, if any, before any client
/// byte; version 2 carries a terminated client's TLS facts. A host that cannot
/// take it is a failed host.
async fn send_proxy_header(
    target: &Target,
    mut host: TcpStream,
    (client, reached, client_socket): (SocketAddr, Option<SocketAddr>, &TcpStream),
    inspection: Option<&Inspection>,
) -> Result<TcpStream, String> {
    let Some(version) = target.proxy_protocol else {
        return Ok(host);
    };
    // The address the client reached: a PROXY header's, passed on.
    let destination = match reached {
        Some(reached) => reached,
        None => client_socket.local_addr().map_err(|e| e.to_string())?,
    };
    let tls = inspection.and_then(|seen| {
        Some(proxy_protocol::TlsFacts {
            sni: seen.sni.as_deref(),
            session: seen.tls.as_deref()?,
        })
    });
    let header = proxy_protocol::encode(version, client, destination, tls);
    host.write_all(&header)
        .await
        .map_err(|e| format!("sending the PROXY header: {e}"))?;
    Ok(host)
}

/// Picks a host from the snapshot and copies out what the connection needs, so no
/// snapshot is held across the connect.
fn pick(
    snapshot: &Snapshot,
    service: &str,
    client: SocketAddr,
    tried: &[HostId],
) -> Option<Target> {
    let service = snapshot.service(service)?;
    let mut group = service.enabled_group()?;
    let mut picked = group.pick(tried, Some(client));
    // Nothing in the enabled group: its backup serves if no host of the enabled
    // group is usable at all (not merely full, nor just tried by this client and
    // still up). Only this rare path looks further; no lock, no allocation.
    if picked.is_none()
        && !service.backups.is_empty()
        && let Some(serving) = service.serving_group()
        && serving != service.enabled
    {
        group = &service.groups[serving];
        picked = group.pick(tried, Some(client));
    }
    // Still nothing, every host of the enabled group bad and no backup group
    // serving: `allBad="open"` tries them anyway. Only this rare path looks.
    if picked.is_none()
        && group.options.all_bad == AllBad::Open
        && service.serving_group().is_none()
    {
        picked = group.pick_forced(tried);
    }
    let host = &group.hosts[picked?];
    host.stats.record_pick();
    Some(Target {
        id: host.id,
        place: host.place.clone(),
        stats: host.stats.clone(),
        connect_timeout: service.connect_timeout,
        client_first: service.options.client_first,
        proxy_protocol: host.proxy_protocol,
        tls: host.tls.as_ref().map(|name| {
            Box::new(Originate {
                client: group.origin.as_ref().map(|o| o.client.clone()),
                name: name.clone(),
                counters: group.origin.as_ref().map(|o| o.counters.clone()),
            })
        }),
        retry_empty: group.options.retry_empty.then_some((
            group.options.retry_empty_bytes as usize,
            group.options.retry_empty_timeout,
        )),
        fail_limit: group.options.fail_limit,
    })
}

/// Connects to the target, or says why not (the host's reason when it is
/// marked bad or ejected).
async fn connect(target: &Target) -> Result<(TcpStream, SocketAddr), ConnectError> {
    let addr = target
        .stats
        .resolved()
        .ok_or_else(|| ConnectError::Host("address not resolved".to_string()))?;
    let connected = match start_connect(addr, target.client_first) {
        Ok(Started::Connected(stream)) => Ok(stream),
        Ok(Started::InProgress(stream)) => {
            match tokio::time::timeout(target.connect_timeout, finish_connect(stream)).await {
                Ok(result) => result,
                Err(_) => {
                    return Err(ConnectError::Host(format!(
                        "connect to {addr}: no answer within {:?}",
                        target.connect_timeout
                    )));
                }
            }
        }
        Err(error) => Err(error),
    };
    match connected {
        Ok(stream) => Ok((stream, addr)),
        // EMFILE, ENFILE (the same numbers on Linux, macOS and the BSDs), ENOMEM.
        Err(error)
            if matches!(error.raw_os_error(), Some(23 | 24))
                || error.kind() == std::io::ErrorKind::OutOfMemory =>
        {
            Err(ConnectError::Local(format!("connect to {addr}: {error}")))
        }
        Err(error) => Err(ConnectError::Host(format!("connect to {addr}: {error}"))),
    }
}

/// A connect just started.
enum Started {
    /// The handshake finished within the `connect` call, as it often does on a
    /// local network: no connect timer is armed.
    Connected(TcpStream),
    /// Still in progress: wait for the socket to turn writable.
    InProgress(TcpStream),
}

/// Opens a non-blocking socket (TCP_NODELAY) and starts connecting. A `poll`
/// with no timeout then tells whether the handshake already finished: one
/// system call in place of reading `SO_ERROR` once the socket turns writable,
/// and no connect timer. (The first write still waits for tokio to see the
/// socket writable: a new registration starts with no readiness.)
fn start_connect(addr: SocketAddr, client_first: bool) -> std::io::Result<Started> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::AsRawFd;

    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    let socket = {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        socket
    };
    let _ = socket.set_tcp_nodelay(true);
    // The handshake's last ACK leaves with the client's first bytes (a
    // segment saved; the kernel sends it alone within 200 ms if none come).
    #[cfg(target_os = "linux")]
    if client_first {
        let _ = socket.set_tcp_quickack(false);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = client_first;
    match socket.connect(&addr.into()) {
        Ok(()) => return Ok(Started::Connected(TcpStream::from_std(socket.into())?)),
        Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(error) => return Err(error),
    }
    let mut poll = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid, writable pollfd for an open descriptor; no waiting.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    if ready == 1 && poll.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
        return Err(socket
            .take_error()?
            .unwrap_or_else(|| std::io::ErrorKind::ConnectionRefused.into()));
    }
    let stream = TcpStream::from_std(socket.into())?;
    Ok(if ready == 1 && poll.revents & libc::POLLOUT != 0 {
        Started::Connected(stream)
    } else {
        Started::InProgress(stream)
    })
}

/// Waits for a connect in progress to finish: writable, then `SO_ERROR` says
/// how it went.
async fn finish_connect(stream: TcpStream) -> std::io::Result<TcpStream> {
    stream.writable().await?;
    match stream.take_error()? {
        Some(error) => Err(error),
        None => Ok(stream),
    }
}

/// Why a connect failed: the host's doing, or short resources here.
enum ConnectError {
    /// The host refused, did not answer, or is unknown: a failure of the host
    /// (bad at once, or one more towards its group's `failLimit`), fail over.
    Host(String),
    /// txlb is out of descriptors or memory.
    Local(String),
}

/// Seconds (on a process clock) of the last "client refused" log line; limits
/// those lines to one per second however many clients are turned away.
static LAST_REFUSED_LOG: AtomicU64 = AtomicU64::new(u64::MAX);
static REFUSED_SUPPRESSED: AtomicU64 = AtomicU64::new(0);

fn log_refused(service: &str, client: SocketAddr, reason: &str) {
    let now = clock_ms() / 1000;
    let last = LAST_REFUSED_LOG.load(Relaxed);
    if last == now
        || LAST_REFUSED_LOG
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_err()
    {
        REFUSED_SUPPRESSED.fetch_add(1, Relaxed);
        return;
    }
    let suppressed = REFUSED_SUPPRESSED.swap(0, Relaxed);
    tracing::warn!(service, %client, reason, suppressed, "client closed");
}
