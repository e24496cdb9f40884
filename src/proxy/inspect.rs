//! Listeners with routes: read the client's first bytes (kept, for the host to
//! receive exactly as sent), tell what the client speaks, and choose the route,
//! hence the service, that serves it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::{Listener, Route};
use crate::routing::{Anomaly, GiveUp, RouteTable, Seen, Sniffed, Sniffer, give_up};
use crate::state::{Inspection, clock_ms};

/// A listener's routes, ready for the data path: built by the controller when
/// they change, read once per client of the listener.
#[derive(Debug)]
pub(crate) struct Routing {
    /// The routes as configured (a change is told by comparing them).
    pub routes: Vec<Route>,
    /// `routes`, indexed for a look-up that does not grow with their number.
    table: RouteTable,
    /// Per route, in order: the service it sends to, its label, its hits.
    pub targets: Vec<RouteTarget>,
    /// Longest wait for enough bytes to decide.
    pub timeout: Duration,
    /// Most bytes read to decide.
    pub max_bytes: usize,
    /// Clients whose first bytes were odd, by kind ([`Anomaly::ALL`] order);
    /// kept across changes of the listener's routes.
    pub anomalies: Arc<[AtomicU64]>,
}

/// One route as the data path uses it.
#[derive(Debug)]
pub(crate) struct RouteTarget {
    /// The service serving the clients this route matches.
    pub service: Arc<str>,
    /// The route's conditions, for logs, metrics and connection lists
    /// (`sni=api.example.com alpn=h2`).
    pub label: Arc<str>,
    /// Clients this route matched; kept while the route stays the same.
    pub hits: Arc<AtomicU64>,
}

impl Routing {
    /// The routing of `listener`, or `None` when it has no routes. Counters of
    /// routes that `previous` had too (the same conditions and service) carry
    /// over.
    pub(crate) fn new(listener: &Listener, previous: Option<&Routing>) -> Option<Routing> {
        if listener.routes.is_empty() {
            return None;
        }
        // By route, its previous hits: one pass each, not a search per route
        // (quadratic at thousands of routes). The first of equal routes,
        // as the table matches it.
        let mut carried: HashMap<&Route, &Arc<AtomicU64>> = HashMap::new();
        if let Some(previous) = previous {
            for (route, target) in previous.routes.iter().zip(&previous.targets) {
                carried.entry(route).or_insert(&target.hits);
            }
        }
        let targets = listener
            .routes
            .iter()
            .map(|route| {
                let hits = carried
                    .get(route)
                    .map(|hits| Arc::clone(hits))
                    .unwrap_or_default();
                RouteTarget {
                    service: Arc::from(route.service.as_str()),
                    label: Arc::from(route.conditions()),
                    hits,
                }
            })
            .collect();
        Some(Routing {
            routes: listener.routes.clone(),
            table: RouteTable::new(&listener.routes),
            targets,
            timeout: listener.options.inspect_timeout,
            max_bytes: listener.options.inspect_bytes as usize,
            anomalies: previous
                .map(|p| p.anomalies.clone())
                .unwrap_or_else(|| Anomaly::ALL.iter().map(|_| AtomicU64::new(0)).collect()),
        })
    }

    /// Whether `listener` asks for this very routing (the counters aside).
    pub(crate) fn same_as(&self, listener: &Listener) -> bool {
        self.routes == listener.routes
            && self.timeout == listener.options.inspect_timeout
            && self.max_bytes == listener.options.inspect_bytes as usize
    }

    /// How many clients showed `anomaly`.
    pub(crate) fn anomaly_count(&self, anomaly: Anomaly) -> u64 {
        self.anomalies[anomaly as usize].load(Relaxed)
    }
}

/// What a client's first bytes told, and the route they matched.
pub(crate) struct Inspected {
    /// What was seen, for the connection list and the access log (boxed as
    /// the connection keeps it, and so that a connection's future holds a
    /// pointer while it waits).
    pub inspection: Box<Inspection>,
    /// Index of the route taken in [`Routing::targets`], if one matched.
    pub route: Option<usize>,
    /// The HTTP `Host` it sent (not kept with the connection): with the
    /// inspection, what [`choose`] needs to choose again.
    host: Option<Box<str>>,
}

impl Inspected {
    /// What a client of a listener without routes told (its handshake).
    pub(crate) fn unrouted(seen: Seen) -> Inspected {
        Inspected {
            inspection: Box::new(Inspection {
                protocol: seen.protocol,
                sni: seen.sni,
                alpn: seen.alpn,
                route: None,
                tls: None,
            }),
            route: None,
            host: seen.host,
        }
    }

    /// What was seen, to choose again (a reload changed the routes while
    /// the client was read).
    pub(crate) fn seen(&self) -> Seen {
        Seen {
            protocol: self.inspection.protocol,
            sni: self.inspection.sni.clone(),
            alpn: self.inspection.alpn.clone(),
            host: self.host.clone(),
            anomaly: None,
        }
    }
}

/// Reads the client's first bytes into `received` (which may already hold
/// bytes that came behind a PROXY header) until they tell enough to choose a
/// route, `routing.max_bytes` are in, `routing.timeout` passes or the client
/// stops sending; then chooses. Every byte read stays in `received`, for the
/// host.
pub(crate) async fn inspect(
    client: &mut TcpStream,
    received: &mut Vec<u8>,
    routing: &Routing,
) -> Inspected {
    let seen = match tokio::time::timeout(
        routing.timeout,
        read_until_decided(client, received, routing.max_bytes),
    )
    .await
    {
        Ok(seen) => seen,
        Err(_) => give_up(received, GiveUp::Timeout),
    };
    if let Some(anomaly) = seen.anomaly {
        routing.anomalies[anomaly as usize].fetch_add(1, Relaxed);
        log_anomaly(anomaly, client);
    }
    choose(seen, routing)
}

/// Chooses the route `seen` matches (what a client's first bytes, or its TLS
/// handshake, told), counting the hit.
pub(crate) fn choose(seen: Seen, routing: &Routing) -> Inspected {
    let route = routing.table.find(&seen);
    if let Some(at) = route {
        routing.targets[at].hits.fetch_add(1, Relaxed);
    }
    Inspected {
        inspection: Box::new(Inspection {
            protocol: seen.protocol,
            sni: seen.sni,
            alpn: seen.alpn,
            route: route.map(|at| routing.targets[at].label.clone()),
            tls: None,
        }),
        route,
        host: seen.host,
    }
}

/// Reads until the sniffer decides or a bound is reached.
async fn read_until_decided(client: &mut TcpStream, received: &mut Vec<u8>, max: usize) -> Seen {
    // Keeps its progress: a client sending a byte at a time costs linear time.
    let mut sniffer = Sniffer::new();
    loop {
        if let Sniffed::Done(seen) = sniffer.sniff(received) {
            return seen;
        }
        let room = max.saturating_sub(received.len());
        if room == 0 {
            return give_up(received, GiveUp::Limit);
        }
        // A ClientHello is usually a few hundred bytes: grow as bytes come.
        received.reserve(room.min(2048));
        match (&mut *client).take(room as u64).read_buf(received).await {
            Ok(0) | Err(_) => return give_up(received, GiveUp::Closed),
            Ok(_) => {}
        }
    }
}

/// Seconds (process clock) each anomaly was last logged: one line per kind
/// and minute, however many clients show it.
static LAST_LOGGED: [AtomicU64; Anomaly::ALL.len()] =
    [const { AtomicU64::new(u64::MAX) }; Anomaly::ALL.len()];
const ANOMALY_LOG_INTERVAL_SECS: u64 = 60;

fn log_anomaly(anomaly: Anomaly, client: &TcpStream) {
    let now = clock_ms() / 1000;
    let last = &LAST_LOGGED[anomaly as usize];
    let previous = last.load(Relaxed);
    if previous != u64::MAX && now.saturating_sub(previous) < ANOMALY_LOG_INTERVAL_SECS {
        return;
    }
    if last
        .compare_exchange(previous, now, Relaxed, Relaxed)
        .is_ok()
    {
        let peer = client.peer_addr().ok();
        tracing::warn!(
            kind = anomaly.as_str(),
            client = ?peer,
            "{anomaly} (logged once a minute per kind; counted in txlb_inspect_anomalies_total)"
        );
    }
}
