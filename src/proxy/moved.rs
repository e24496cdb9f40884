//! Established connections moving between processes (an upgrade): a parked
//! connection is two sockets and a small record, with nothing in flight, so
//! the old process takes it out of its parking lot ([`take_parked`]) and the
//! new one parks it in its own ([`adopt`]), where the first byte wakes it as
//! any parked connection. Only plain connections park (a TLS one keeps its
//! keys in rustls), so only they move.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::ListenerTask;
use crate::config::ClientProtocol;
use crate::state::{
    ConnectionEntry, ConnectionGuard, HostPlace, HostStats, Inspection, ServiceCounters, clock_ms,
    from_unix_nanos,
};

/// What a moved connection keeps: its identity, history and what its client
/// told, as the connections list shows them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MovedConnection {
    /// Its id (kept: the new process numbers its own connections after it).
    pub id: u64,
    /// Service, group and host names.
    pub service: String,
    pub group: String,
    pub host: String,
    /// The client (the real one, after a PROXY header).
    pub client: SocketAddr,
    /// The balancer address it reached.
    pub listener: SocketAddr,
    /// The host address connected to.
    pub host_addr: SocketAddr,
    /// txlb's address on the host side, when the control socket indexes it.
    #[serde(default)]
    pub host_local: Option<SocketAddr>,
    /// When it was accepted, in nanoseconds since the Unix epoch.
    pub since_ns: u64,
    /// Bytes client to host and host to client so far.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// How long it has been open, in microseconds (for the access log's duration).
    pub age_us: u64,
    /// How long it has moved no byte, in milliseconds: its idle timeout
    /// runs on in the new process (0 from a process that did not say).
    #[serde(default)]
    pub idle_ms: u64,
    /// How long its connect took, in microseconds.
    pub connect_us: u64,
    /// Hosts that failed it before this one.
    pub failovers: u32,
    /// One side already sent its FIN.
    #[serde(default)]
    pub half_closed: bool,
    /// What its first bytes told, on a listener with routes.
    #[serde(default)]
    pub inspection: Option<MovedInspection>,
}

/// [`Inspection`] of a moved connection (never a TLS-terminated one).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MovedInspection {
    pub protocol: String,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub alpn: Vec<String>,
    #[serde(default)]
    pub route: Option<String>,
}

/// A connection on its way out: its record and sockets. Dropping it (once
/// its sockets were sent) releases it here: the host's open count, the
/// registry entry and the shutdown's wait.
#[cfg(target_os = "linux")]
pub(crate) struct Outgoing {
    pub record: MovedConnection,
    pub parked: super::parking::ParkedConnection,
}

#[cfg(target_os = "linux")]
impl Outgoing {
    /// The client's and the host's sockets.
    pub(crate) fn sockets(&self) -> [std::os::fd::BorrowedFd<'_>; 2] {
        use std::os::fd::AsFd;
        [self.parked.client.as_fd(), self.parked.host.as_fd()]
    }
}

/// Every parked connection, taken out of the parking lots, with its record.
#[cfg(target_os = "linux")]
pub(crate) fn take_parked() -> Vec<Outgoing> {
    super::parking::take_all()
        .into_iter()
        .map(|parked| {
            let session = &parked.session;
            let entry = session.entry();
            let record = MovedConnection {
                id: entry.id,
                service: entry.place.service.to_string(),
                group: entry.place.group.to_string(),
                host: entry.place.host.to_string(),
                client: entry.client,
                listener: entry.listener,
                host_addr: entry.host_addr,
                host_local: entry.host_local.as_deref().copied(),
                since_ns: entry.since_ns,
                bytes_in: entry.bytes_in.load(Relaxed),
                bytes_out: entry.bytes_out.load(Relaxed),
                age_us: session.started().elapsed().as_micros() as u64,
                idle_ms: clock_ms().saturating_sub(entry.last_activity.load(Relaxed)),
                connect_us: session.connect_time().as_micros() as u64,
                failovers: session.failovers(),
                half_closed: entry.half_closed.load(Relaxed),
                inspection: entry.inspection.as_deref().map(|i| MovedInspection {
                    protocol: i.protocol.as_str().to_string(),
                    sni: i.sni.as_deref().map(str::to_string),
                    alpn: i.alpn.iter().map(|a| a.to_string()).collect(),
                    route: i.route.as_deref().map(str::to_string),
                }),
            };
            Outgoing { record, parked }
        })
        .collect()
}

/// Where a moved connection lands: its host's counters, its service's, its
/// place under the service's limits, and the listener that serves it from
/// now on.
pub(crate) struct Landing {
    pub stats: Arc<HostStats>,
    pub place: Arc<HostPlace>,
    pub counters: Arc<ServiceCounters>,
    pub admission: crate::state::Admission,
    pub listener: Arc<ListenerTask>,
}

/// Parks a connection handed over by the previous process in this thread's
/// lot, as it was there: registered under its id with its counts, counted
/// open on its host. Call on the worker that is to serve it.
#[cfg(target_os = "linux")]
pub(crate) fn adopt(
    record: MovedConnection,
    client: std::net::TcpStream,
    host: std::net::TcpStream,
    landing: Landing,
) {
    let Landing {
        stats,
        place,
        counters,
        admission,
        listener,
    } = landing;
    let data = &listener.data;
    data.registry.numbered_from(record.id);
    let inspection = record.inspection.as_ref().map(|i| {
        Box::new(Inspection {
            protocol: ClientProtocol::ALL
                .into_iter()
                .find(|p| p.as_str() == i.protocol)
                .unwrap_or(ClientProtocol::Other),
            sni: i.sni.as_deref().map(Box::from),
            alpn: i.alpn.iter().map(|a| Box::from(a.as_str())).collect(),
            route: i.route.as_deref().map(Arc::from),
            tls: None,
        })
    });
    let entry = ConnectionEntry::new(
        record.id,
        place,
        stats.clone(),
        record.client,
        record.listener,
        record.host_addr,
        record.host_local,
        from_unix_nanos(record.since_ns),
        inspection,
    );
    entry.bytes_in.store(record.bytes_in, Relaxed);
    entry.bytes_out.store(record.bytes_out, Relaxed);
    entry.half_closed.store(record.half_closed, Relaxed);
    let last = clock_ms().saturating_sub(record.idle_ms);
    entry.last_activity.store(last, Relaxed);
    entry.mark_moved_in_parked();
    let registered = data.registry.register(entry);
    let started = Instant::now()
        .checked_sub(Duration::from_micros(record.age_us))
        .unwrap_or_else(Instant::now);
    let session = super::connection::Session::moved(
        ConnectionGuard::new(stats),
        registered,
        admission,
        counters,
        started,
        Duration::from_micros(record.connect_us),
        record.failovers,
    );
    let _tracked = listener.tracker.token();
    super::parking::park_moved(super::parking::ParkedConnection {
        client,
        host,
        session,
        listener,
        _tracked,
    });
}
