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
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::inspect::{Routing, choose};
use crate::routing::{Seen, Sniffed, sniff_initials};
use crate::state::{HostStats, Inspection};

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
    /// The address its first datagram was sent to (a wildcard listener's).
    local: Option<IpAddr>,
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
    /// The address it sent to, on a wildcard listener (replies come from it).
    pub local: Option<IpAddr>,
    /// The host to prefer: a client that came back from another address.
    pub host: Option<Arc<HostStats>>,
    /// What its hello told and the route it took, for the connections list
    /// and the access log (`None`: the listener's routes are gone).
    pub inspection: Option<Box<Inspection>>,
}

impl Pending {
    /// Whether no client waits (the listener's timer sleeps then).
    pub(crate) fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// A datagram of `client` (sent to `local` on a wildcard listener),
    /// which has no session: waits with the client's others, or decides its
    /// route.
    pub(crate) fn offer(
        &mut self,
        client: SocketAddr,
        local: Option<IpAddr>,
        bytes: &[u8],
        routing: &Routing,
    ) -> Offer {
        // Full for new clients only: one already waiting keeps its place.
        let full = !self.clients.contains_key(&client) && self.clients.len() >= MAX_WAITING_CLIENTS;
        let mut waiting = self.clients.remove(&client).unwrap_or_else(|| Waiting {
            datagrams: Vec::with_capacity(2),
            local,
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

    /// `client` has a session now (it came back to a connection ID its
    /// host chose): what it had waiting is dropped, so that no second
    /// session opens for it when its wait ends.
    pub(crate) fn forget(&mut self, client: SocketAddr) {
        self.clients.remove(&client);
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
    let mut target = None;
    let inspection = routing.map(|routing| {
        if let Some(anomaly) = seen.anomaly {
            routing.anomalies[anomaly as usize].fetch_add(1, Relaxed);
        }
        let chosen = choose(seen, routing);
        target = chosen
            .route
            .map(|route| routing.targets[route].service.clone());
        chosen.inspection
    });
    Decided {
        client,
        target,
        datagrams: waiting.datagrams,
        local: waiting.local,
        host: None,
        inspection,
    }
}

/// Longest connection ID of QUIC versions 1 and 2.
const MAX_CID: usize = 20;
/// Shortest connection ID followed: shorter ones (0 to 3 bytes) would match
/// a stranger's datagram too easily.
const MIN_CID: usize = 4;

/// The connection IDs a listener's hosts chose (the Source Connection ID of
/// their first long-header reply), each with the session it belongs to: a
/// QUIC client that comes back from another address (NAT rebinding,
/// migration) sends to that ID, and is sent to the same service and host.
/// One ID per session, forgotten with it: bounded by the table of sessions.
#[derive(Default)]
pub(crate) struct ConnectionIds {
    by_id: HashMap<Box<[u8]>, Owner>,
    /// The ID of each session that has one, to forget it with the session.
    by_session: HashMap<Owner, Box<[u8]>>,
    /// How many IDs of each length are followed: a short header does not
    /// say its ID's length, so each length in use is tried.
    lengths: [u32; MAX_CID + 1],
}

/// A session: its client and number (as the listener's table knows it).
pub(crate) type Owner = (SocketAddr, u64);

impl ConnectionIds {
    /// `session`'s host chose `id`.
    pub(crate) fn learned(&mut self, id: &[u8], session: Owner) {
        if !(MIN_CID..=MAX_CID).contains(&id.len()) || self.by_session.contains_key(&session) {
            return;
        }
        if let Some(previous) = self.by_id.insert(id.into(), session) {
            // Another session's ID (a stale one): it is this one's now.
            self.by_session.remove(&previous);
        } else {
            self.lengths[id.len()] += 1;
        }
        self.by_session.insert(session, id.into());
    }

    /// `session` ended (or moved): its ID is forgotten.
    pub(crate) fn forget(&mut self, session: Owner) -> Option<Box<[u8]>> {
        let id = self.by_session.remove(&session)?;
        if self.by_id.get(&id) == Some(&session) {
            self.by_id.remove(&id);
            self.lengths[id.len()] -= 1;
        }
        Some(id)
    }

    /// The session whose host chose the connection ID `datagram` is sent to,
    /// and that ID: the long header's Destination Connection ID, or the
    /// first bytes after a short header's first byte, for each length in use.
    pub(crate) fn find(&self, datagram: &[u8]) -> Option<(Owner, &[u8])> {
        if self.by_id.is_empty() {
            return None;
        }
        let first = *datagram.first()?;
        if first & 0x80 != 0 {
            let len = usize::from(*datagram.get(5)?);
            let id = datagram.get(6..6 + len)?;
            return self
                .by_id
                .get_key_value(id)
                .map(|(id, owner)| (*owner, &**id));
        }
        (MIN_CID..=MAX_CID)
            .filter(|&len| self.lengths[len] > 0)
            .find_map(|len| {
                let id = datagram.get(1..1 + len)?;
                self.by_id
                    .get_key_value(id)
                    .map(|(id, owner)| (*owner, &**id))
            })
    }
}

/// The Source Connection ID of a host's long-header packet (the ID its
/// client sends to afterwards), if `reply` starts with one.
pub(crate) fn source_id(reply: &[u8]) -> Option<&[u8]> {
    if reply.first()? & 0x80 == 0 {
        return None;
    }
    let dcid_len = usize::from(*reply.get(5)?);
    let at = 6 + dcid_len;
    let scid_len = usize::from(*reply.get(at)?);
    if scid_len > MAX_CID {
        return None;
    }
    reply.get(at + 1..at + 1 + scid_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::routing::{crypto_frame, protect_initial};

    /// A UDP listener's routing: `a.example` to service `a`.
    fn routing() -> Routing {
        let xml = r#"<config>
          <service name="u" protocol="udp"><listen ip="127.0.0.1:0" inspectTimeout="1">
            <route sni="a.example" service="a"/></listen>
            <group name="g" enable="true"><host name="h" ip="127.0.0.1:1"/></group></service>
          <service name="a" protocol="udp"><listen ip="127.0.0.1:0"/>
            <group name="g" enable="true"><host name="h" ip="127.0.0.1:2"/></group></service>
        </config>"#;
        let config = Config::from_xml_str(xml).unwrap();
        Routing::new(&config.services[0].listeners[0], None).unwrap()
    }

    /// The first of two Initials of a hello for `a.example` (its SNI is
    /// in the first: the extension comes early).
    fn first_half() -> Vec<u8> {
        let mut hello = vec![1, 0, 0x10, 0, 3, 3];
        hello.extend_from_slice(&[0; 32]);
        hello.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        let name = b"a.example";
        let mut sni = vec![0, 0];
        sni.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
        sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni.extend_from_slice(name);
        hello.extend_from_slice(&[0x0f, 0xf0]); // extensions' length: more to come
        hello.extend_from_slice(&sni);
        protect_initial(false, &[1; 8], 0, &crypto_frame(0, &hello))
    }

    fn client(n: u32) -> SocketAddr {
        SocketAddr::from((n.to_be_bytes(), 1000))
    }

    #[test]
    fn waiting_clients_are_bounded_in_number_datagrams_and_time() {
        let routing = routing();
        let half = first_half();
        let mut pending = Pending::default();
        for n in 0..MAX_WAITING_CLIENTS as u32 {
            assert!(matches!(
                pending.offer(client(n), None, &half, &routing),
                Offer::Wait
            ));
        }
        // No room: decided at once, by the SNI that came.
        let Offer::Decided(d) = pending.offer(client(u32::MAX), None, &half, &routing) else {
            panic!("no room to wait");
        };
        assert_eq!(d.target.as_deref(), Some("a"));
        assert_eq!(d.datagrams.len(), 1);
        // A waiting client's fourth datagram decides it.
        let first = client(0);
        for _ in 0..2 {
            assert!(matches!(
                pending.offer(first, None, &half, &routing),
                Offer::Wait
            ));
        }
        let Offer::Decided(d) = pending.offer(first, None, &half, &routing) else {
            panic!("four datagrams read");
        };
        assert_eq!(d.datagrams.len(), 4);
        // The others wait out `inspectTimeout` (1 s), then go by their SNI.
        assert!(pending.expired(routing.timeout, Some(&routing)).is_empty());
        let all = pending.expired(Duration::ZERO, Some(&routing));
        assert_eq!(all.len(), MAX_WAITING_CLIENTS - 1);
        assert!(all.iter().all(|d| d.target.as_deref() == Some("a")));
        assert!(pending.is_empty());
        // Truncated hellos counted: every decision on a cut-short hello.
        let cut = routing.anomaly_count(crate::routing::Anomaly::TruncatedHello);
        assert_eq!(cut, MAX_WAITING_CLIENTS as u64 + 1);
        // Routes gone with a reload: the listener's own service.
        pending.offer(client(7), None, &half, &routing);
        let gone = pending.expired(Duration::ZERO, None);
        assert_eq!(gone[0].target, None);
    }

    fn owner(port: u16, number: u64) -> Owner {
        (SocketAddr::from(([127, 0, 0, 1], port)), number)
    }

    #[test]
    fn a_hosts_connection_id_finds_its_session_from_any_header() {
        let mut ids = ConnectionIds::default();
        // A host's Handshake packet: DCID (the client's), SCID (its own).
        let mut reply = vec![0xe0, 0, 0, 0, 1, 4, 1, 2, 3, 4, 8];
        reply.extend_from_slice(&[0xab; 8]);
        reply.extend_from_slice(b"rest");
        let scid = source_id(&reply).unwrap().to_vec();
        assert_eq!(scid, [0xab; 8]);
        ids.learned(&scid, owner(1, 0));
        ids.learned(&[0xcd; 8], owner(1, 0)); // one per session
        // A short header to it, and a long one.
        let mut short = vec![0x41];
        short.extend_from_slice(&[0xab; 8]);
        short.extend_from_slice(b"payload");
        assert_eq!(ids.find(&short), Some((owner(1, 0), &scid[..])));
        let mut long = vec![0xc0, 0, 0, 0, 1, 8];
        long.extend_from_slice(&[0xab; 8]);
        assert_eq!(ids.find(&long).map(|f| f.0), Some(owner(1, 0)));
        assert_eq!(ids.find(&[0x41, 0xcd, 0xcd, 0xcd, 0xcd, 0xcd]), None);
        assert_eq!(ids.find(b""), None);
        // Moved to another session, then forgotten with it.
        assert_eq!(ids.forget(owner(1, 0)).as_deref(), Some(&scid[..]));
        ids.learned(&scid, owner(2, 1));
        assert_eq!(ids.find(&short).map(|f| f.0), Some(owner(2, 1)));
        ids.forget(owner(2, 1));
        assert_eq!(ids.find(&short), None);
        assert_eq!(ids.lengths.iter().sum::<u32>(), 0);
        // Too short an ID, and broken replies, are not followed.
        ids.learned(&[1, 2], owner(3, 0));
        assert!(ids.by_id.is_empty());
        for broken in [
            &b""[..],
            &[0xe0, 0, 0],
            &[0xe0, 0, 0, 0, 1, 30],
            &[0x40; 30],
        ] {
            assert_eq!(source_id(broken), None);
        }
    }
}
