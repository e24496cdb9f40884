//! One health probe: (re-)resolve the host's name, then a TCP connect, and
//! the TLS handshake towards a host its group originates TLS to.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::HostAddress;
use crate::state::HostSnapshot;
use crate::tls::Originator;

/// Longest wait for the system resolver.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves a host address to one socket address (the first the system gives).
pub async fn resolve(address: &HostAddress) -> Result<SocketAddr, String> {
    if let Ok(ip) = address.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, address.port));
    }
    let lookup = tokio::net::lookup_host((address.host.as_str(), address.port));
    match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(mut addrs)) => addrs
            .next()
            .ok_or_else(|| format!("name {:?} has no address", address.host)),
        Ok(Err(error)) => Err(format!("name {:?} does not resolve: {error}", address.host)),
        Err(_) => Err(format!(
            "name {:?} did not resolve within {RESOLVE_TIMEOUT:?}",
            address.host
        )),
    }
}

impl HostAddress {
    /// Resolves the address with the system resolver: an IP literal as is, a
    /// name to its first address (what `txlb check` reports). The running
    /// balancer asks the `<resolver>`'s name servers (by default the system's)
    /// and asks again as answers expire. The error says why the name does not
    /// resolve.
    pub async fn resolve(&self) -> Result<SocketAddr, String> {
        resolve(self).await
    }
}

/// Where to probe `host`: the address its name resolved to (names are kept
/// fresh by the re-resolution task, with the configured resolver), else
/// resolved now by the system (recorded).
pub(crate) async fn address(host: &HostSnapshot) -> Result<SocketAddr, String> {
    match host.stats.resolved() {
        Some(addr) => Ok(addr),
        None => {
            let addr = resolve(&host.address).await?;
            if host.stats.set_resolved(Some(addr)) {
                tracing::info!(host = %host.name, address = %host.address, resolved = %addr, "host address resolved");
            }
            Ok(addr)
        }
    }
}

/// Checks that `host` accepts a TCP connection within `timeout` on its address:
/// the one its name resolved to (names are kept fresh by the re-resolution task,
/// with the configured resolver), else resolved now by the system (recorded).
/// A host reached with TLS (`host.tls`, with its group's `origin`) must also
/// complete a verified handshake within the same `timeout`: a certificate that
/// does not verify makes it bad, as it would fail every client. The probe
/// connection is closed at once.
pub async fn probe(
    host: &HostSnapshot,
    origin: Option<&Originator>,
    timeout: Duration,
) -> Result<(), String> {
    let addr = address(host).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    // Both kinds of probe speak first: a TLS hello, or a reset at once.
    let connect = super::exchange::connect(addr, true);
    let stream = match tokio::time::timeout_at(deadline, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(format!("connect to {addr}: {error}")),
        Err(_) => return Err(format!("connect to {addr}: no answer within {timeout:?}")),
    };
    let (Some(name), Some(origin)) = (&host.tls, origin) else {
        super::exchange::close_with_reset(&stream);
        return Ok(());
    };
    let connector = tokio_rustls::TlsConnector::from(origin.client.clone());
    match tokio::time::timeout_at(deadline, connector.connect(name.clone(), stream)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("TLS handshake with {addr}: {error}")),
        Err(_) => Err(format!(
            "TLS handshake with {addr}: not done within {timeout:?}"
        )),
    }
}

/// The managers' probe of a UDP service's host: an empty datagram from a
/// socket connected to its address, up unless the host's port refuses it
/// (ICMP port unreachable) within `timeout`; a silent host is up, since
/// UDP has no handshake to wait for. A reply is up too.
pub async fn probe_udp(host: &HostSnapshot, timeout: Duration) -> Result<(), String> {
    let addr = address(host).await?;
    let any: SocketAddr = match addr {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let local = |e: std::io::Error| format!("udp probe of {addr}: {e}");
    let socket = tokio::net::UdpSocket::bind(any).await.map_err(local)?;
    socket.connect(addr).await.map_err(local)?;
    let refused = |e: std::io::Error| format!("udp to {addr}: {e}");
    socket.send(&[]).await.map_err(refused)?;
    let mut reply = [0u8; 1];
    match tokio::time::timeout(timeout, socket.recv(&mut reply)).await {
        Ok(Err(error)) => Err(refused(error)),
        Ok(Ok(_)) | Err(_) => Ok(()),
    }
}
