//! QUIC passthrough routing on UDP listeners with routes: a new client's
//! datagrams wait here until their Initial packets tell the ClientHello's SNI
//! and ALPN ([`crate::routing::sniff_initials`]), then go, in order, to the
//! session the listener opens on the route's service.
//!
//! Bounded: a client waits with at most four datagrams (what
//! [`sniff_initials`] reads) and
//! [`MAX_WAITING_BYTES_PER_CLIENT`] bytes, at most [`MAX_WAITING_CLIENTS`]
//! clients wait per listener, and none longer than the listener's
//! `inspectTimeout`. Past a bound the client is decided on what came (a hello
//! cut short routes by its SNI if that was in, else by the default route).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::inspect::{Routing, choose};
use crate::routing::{Seen, Sniffed, sniff_initials};

/// Clients of one listener whose ClientHello is still incomplete. Real
/// clients send a hello's datagrams back to back: they wait microseconds.
pub(crate) const MAX_WAITING_CLIENTS: usize = 1024;
/// Bytes of datagrams one client may have waiting: four full-size Initials.
pub(crate) const MAX_WAITING_BYTES_PER_CLIENT: usize = 4 * 1500;
/// How often waiting clients are checked for their `inspectTimeout`.
pub(crate) const WAITING_CHECK: Duration = Duration::from_millis(50);

/// A client's datagrams so far.
struct Waiting {
    datagrams: Vec<Box<[u8]>>,
    bytes: usize,
    since: Instant,
}

/// Clients waiting for their ClientHello, owned by the listener's task.
#[derive(Default)]
pub(crate) struct Pending {
    clients: HashMap<SocketAddr, Waiting>,
}

/// What became of a client's datagram.
pub(crate) enum Offer {
    /// Kept: its hello is incomplete.
    Wait,
    /// Its route is chosen: a session for the client may open.
    Decided(Decided),
}

/// A client whose route is chosen.
pub(crate) struct Decided {
    pub client: SocketAddr,
    /// The route's service; `None`: the listener's own.
    pub target: Option<Arc<str>>,
    /// Every datagram it sent so far, in order.
    pub datagrams: Vec<Box<[u8]>>,
}

impl Pending {
    /// Whether no client waits (the listener's timer sleeps then).
    pub(crate) fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// A datagram of `client`, which has no session: waits with the
    /// client's others, or decides its route.
    pub(crate) fn offer(&mut self, client: SocketAddr, bytes: &[u8], routing: &Routing) -> Offer {
        let full = self.clients.len() >= MAX_WAITING_CLIENTS;
        let mut waiting = self.clients.remove(&client).unwrap_or_else(|| Waiting {
            datagrams: Vec::with_capacity(2),
            bytes: 0,
            since: Instant::now(),
        });
        waiting.datagrams.push(bytes.into());
        waiting.bytes += bytes.len();
        // No room to wait: decided on what came.
        let last = full || waiting.bytes > MAX_WAITING_BYTES_PER_CLIENT;
        match sniff_initials(&waiting.datagrams, last) {
            Sniffed::NeedMore => {
                self.clients.insert(client, waiting);
                Offer::Wait
            }
            Sniffed::Done(seen) => Offer::Decided(decide(client, seen, waiting, Some(routing))),
        }
    }

    /// Clients that waited `timeout` or longer, decided on what they sent
    /// (by `routing`, or by the listener's own service when its routes are
    /// gone).
    pub(crate) fn expired(&mut self, timeout: Duration, routing: Option<&Routing>) -> Vec<Decided> {
        let now = Instant::now();
        let gone: Vec<SocketAddr> = self
            .clients
            .iter()
            .filter(|(_, w)| now.duration_since(w.since) >= timeout)
            .map(|(client, _)| *client)
            .collect();
        gone.into_iter()
            .filter_map(|client| {
                let waiting = self.clients.remove(&client)?;
                let seen = match sniff_initials(&waiting.datagrams, true) {
                    Sniffed::Done(seen) => seen,
                    Sniffed::NeedMore => return None, // not with `last`
                };
                Some(decide(client, seen, waiting, routing))
            })
            .collect()
    }
}

/// The route `seen` takes (counted with its anomaly, if any).
fn decide(client: SocketAddr, seen: Seen, waiting: Waiting, routing: Option<&Routing>) -> Decided {
    let target = routing.and_then(|routing| {
        if let Some(anomaly) = seen.anomaly {
            routing.anomalies[anomaly as usize].fetch_add(1, Relaxed);
        }
        let route = choose(seen, routing).route?;
        Some(routing.targets[route].service.clone())
    });
    Decided {
        client,
        target,
        datagrams: waiting.datagrams,
    }
}
