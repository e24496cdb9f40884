//! One client connection: pick a host, connect (failing over), copy, account.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::DataPlane;
use super::copy::{Side, copy_bidirectional};
use crate::scheduler::Candidates;
use crate::state::{
    CloseRequest, ConnectionEntry, ConnectionGuard, HostId, HostStats, ServiceCounters, Snapshot,
};

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
}

/// What a connection keeps of the snapshot once it has picked: only its host.
struct Target {
    id: HostId,
    group: Arc<str>,
    host: Arc<str>,
    stats: Arc<HostStats>,
    connect_timeout: Duration,
}

/// Why a client could not be given a host.
#[derive(Debug)]
enum NoHost {
    UnknownService,
    NoneAvailable,
}

/// The client side of a new connection.
pub(crate) struct Accepted {
    pub client: TcpStream,
    pub peer: SocketAddr,
    pub listener: SocketAddr,
    pub accepted_at: SystemTime,
}

/// Serves one client to completion. Errors end here: they are counted on the host
/// and logged, never propagated to the accept loop.
pub(crate) async fn serve(
    accepted: Accepted,
    service_name: &Arc<str>,
    data: &DataPlane,
    shutdown: &CancellationToken,
) {
    let service: &str = service_name;
    let Accepted {
        client,
        peer,
        listener,
        accepted_at,
    } = accepted;
    let started = Instant::now();
    let _ = client.set_nodelay(true);
    let mut counters: Option<Arc<ServiceCounters>> = None;
    // Hosts that failed for this client; allocated only when one fails.
    let mut tried: Vec<HostId> = Vec::new();
    loop {
        let target = match pick(&data.snapshots.load(), service, peer, &tried, &mut counters) {
            Ok(target) => target,
            Err(why) => {
                if let Some(c) = &counters {
                    c.no_host.fetch_add(1, Relaxed);
                }
                log_no_host(service, peer, &why, tried.len());
                return; // dropping `client` closes it at once
            }
        };
        // Counted as open from now on, so leastc sees connections in progress.
        let guard = ConnectionGuard::new(target.stats.clone());
        let connect_started = Instant::now();
        let (host, host_addr) = match connect(&target).await {
            Ok(connected) => connected,
            Err(reason) => {
                if target.stats.record_failure(reason.clone()) {
                    data.events
                        .host_bad(service, &target.group, &target.host, &reason);
                }
                tried.push(target.id);
                continue;
            }
        };
        let connect_time = connect_started.elapsed();
        target.stats.record_connected(connect_time);
        if !tried.is_empty()
            && let Some(c) = &counters
        {
            c.failovers.fetch_add(1, Relaxed);
        }
        let host_local = if data.index_host_side {
            host.local_addr().ok()
        } else {
            None
        };
        let registered = data.registry.register(ConnectionEntry::new(
            data.registry.next_id(),
            service_name.clone(),
            target.group.clone(),
            target.host.clone(),
            target.stats.clone(),
            peer,
            listener,
            host_addr,
            host_local,
            accepted_at,
        ));
        let entry = registered.entry();
        // Shutdown closes registered connections; one registering just after it
        // began sees the flag instead.
        if shutdown.is_cancelled() {
            entry.request_close(CloseRequest::Shutdown);
        }
        let stats = guard.stats();
        let copy = copy_bidirectional(&client, &host, |from, n| {
            let n = n as u64;
            match from {
                Side::Client => {
                    stats.add_bytes_in(n);
                    entry.bytes_in.fetch_add(n, Relaxed);
                }
                Side::Host => {
                    stats.add_bytes_out(n);
                    entry.bytes_out.fetch_add(n, Relaxed);
                }
            }
        });
        let ended = tokio::select! {
            result = copy => match result {
                Ok(copied) if copied.first_to_close == Side::Host => CloseReason::HostClosed,
                Ok(_) => CloseReason::ClientClosed,
                Err(error) => {
                    tracing::debug!(service, host = %target.host, %peer, %error, "connection ended with an error");
                    CloseReason::Error
                }
            },
            _ = entry.close.notified() => match entry.close_request() {
                Some(CloseRequest::Shutdown) => CloseReason::Shutdown,
                _ => CloseReason::ClosedByAdmin,
            },
        };
        if let Some(log) = &data.access_log {
            // try_send: a full channel drops the record rather than wait.
            let _ = log.try_send(ConnectionRecord {
                start: accepted_at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
                client: peer,
                listener,
                service: service.to_string(),
                host: target.host.to_string(),
                host_addr,
                connect_seconds: connect_time.as_secs_f64(),
                duration_seconds: started.elapsed().as_secs_f64(),
                bytes_in: entry.bytes_in.load(Relaxed),
                bytes_out: entry.bytes_out.load(Relaxed),
                ended,
                failovers: tried.len() as u32,
            });
        }
        return;
    }
}

/// Picks a host from the snapshot and copies out what the connection needs, so no
/// snapshot is held across the connect.
fn pick(
    snapshot: &Snapshot,
    service: &str,
    peer: SocketAddr,
    tried: &[HostId],
    counters: &mut Option<Arc<ServiceCounters>>,
) -> Result<Target, NoHost> {
    let service = snapshot.service(service).ok_or(NoHost::UnknownService)?;
    if counters.is_none() {
        service.counters.accepted.fetch_add(1, Relaxed);
        *counters = Some(service.counters.clone());
    }
    let group = service.enabled_group();
    let index = group
        .scheduler
        .pick(&Candidates::new(&group.hosts, tried, Some(peer)))
        .ok_or(NoHost::NoneAvailable)?;
    let host = &group.hosts[index];
    host.stats.record_pick();
    Ok(Target {
        id: host.id,
        group: group.name.clone(),
        host: host.name.clone(),
        stats: host.stats.clone(),
        connect_timeout: service.connect_timeout,
    })
}

/// Connects to the target, or says why not (the reason a host is marked bad).
async fn connect(target: &Target) -> Result<(TcpStream, SocketAddr), String> {
    let addr = target
        .stats
        .resolved()
        .ok_or_else(|| "address not resolved".to_string())?;
    match tokio::time::timeout(target.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok((stream, addr))
        }
        Ok(Err(error)) => Err(format!("connect to {addr}: {error}")),
        Err(_) => Err(format!(
            "connect to {addr}: no answer within {:?}",
            target.connect_timeout
        )),
    }
}

/// Seconds (on a process clock) of the last "no host" log line; limits those lines
/// to one per second however many clients are turned away.
static LAST_NO_HOST_LOG: AtomicU64 = AtomicU64::new(u64::MAX);
static NO_HOST_SUPPRESSED: AtomicU64 = AtomicU64::new(0);

fn log_no_host(service: &str, peer: SocketAddr, why: &NoHost, tried: usize) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let now = START.get_or_init(Instant::now).elapsed().as_secs();
    let last = LAST_NO_HOST_LOG.load(Relaxed);
    if last == now
        || LAST_NO_HOST_LOG
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_err()
    {
        NO_HOST_SUPPRESSED.fetch_add(1, Relaxed);
        return;
    }
    let suppressed = NO_HOST_SUPPRESSED.swap(0, Relaxed);
    let reason = match why {
        NoHost::UnknownService => "service no longer exists",
        NoHost::NoneAvailable if tried > 0 => "every available host failed",
        NoHost::NoneAvailable => "no host available in the enabled group",
    };
    tracing::warn!(service, client = %peer, reason, tried, suppressed, "client closed: no host");
}
