//! One client connection: pick a host, connect (failing over), copy, account.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;

use super::copy::copy_bidirectional;
use crate::events::Events;
use crate::scheduler::Candidates;
use crate::state::{ConnectionGuard, HostId, HostStats, Snapshot};

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

/// Serves one client to completion. Errors end here: they are counted on the host
/// and logged, never propagated to the accept loop.
pub(crate) async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    service: &str,
    snapshots: &ArcSwap<Snapshot>,
    events: &Events,
) {
    let _ = client.set_nodelay(true);
    // Hosts that failed for this client; allocated only when one fails.
    let mut tried: Vec<HostId> = Vec::new();
    loop {
        let target = match pick(snapshots, service, peer, &tried) {
            Ok(target) => target,
            Err(why) => {
                log_no_host(service, peer, &why, tried.len());
                return; // dropping `client` closes it at once
            }
        };
        // Counted as open from now on, so leastc sees connections in progress.
        let guard = ConnectionGuard::new(target.stats.clone());
        match connect(&target).await {
            Ok(host) => {
                target.stats.record_connected();
                let stats = guard.stats();
                let result = copy_bidirectional(&client, &host, |to_host, n| {
                    if to_host {
                        stats.add_bytes_in(n as u64);
                    } else {
                        stats.add_bytes_out(n as u64);
                    }
                })
                .await;
                if let Err(error) = result {
                    tracing::debug!(service, host = %target.host, %peer, %error, "connection ended with an error");
                }
                return;
            }
            Err(reason) => {
                if target.stats.record_failure(reason.clone()) {
                    events.host_bad(service, &target.group, &target.host, &reason);
                }
                tried.push(target.id);
            }
        }
    }
}

/// Picks a host from the current snapshot and copies out what the connection needs,
/// so no snapshot is held across the connect.
fn pick(
    snapshots: &ArcSwap<Snapshot>,
    service: &str,
    peer: SocketAddr,
    tried: &[HostId],
) -> Result<Target, NoHost> {
    let snapshot = snapshots.load();
    let service = snapshot.service(service).ok_or(NoHost::UnknownService)?;
    let group = service.enabled_group();
    let index = group
        .scheduler
        .pick(&Candidates::new(&group.hosts, tried, Some(peer)))
        .ok_or(NoHost::NoneAvailable)?;
    let host = &group.hosts[index];
    Ok(Target {
        id: host.id,
        group: group.name.clone(),
        host: host.name.clone(),
        stats: host.stats.clone(),
        connect_timeout: service.connect_timeout,
    })
}

/// Connects to the target, or says why not (the reason a host is marked bad).
async fn connect(target: &Target) -> Result<TcpStream, String> {
    let addr = target
        .stats
        .resolved()
        .ok_or_else(|| "address not resolved".to_string())?;
    match tokio::time::timeout(target.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
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
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let now = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs();
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
