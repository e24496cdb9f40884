//! What happens between accept and the first host pick: the PROXY header of a
//! balancer in front (when the listener accepts one), then, once the service is
//! known, its access lists and connection limits.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::proxy_protocol::{self, ProxyHeader, V2_MAX};
use crate::config::{ListenOptions, ServiceOptions};
use crate::state::{Admission, Limiter, Refusal};

/// Longest wait for a client's PROXY header.
pub const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a client was turned away before any host was tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// A PROXY header was required and was missing, malformed, late or from a
    /// source not in `trustedProxies`.
    Proxy(String),
    /// The access lists refuse the client.
    Denied,
    /// A connection limit.
    Limit(Refusal),
}

impl Rejected {
    pub(crate) fn reason(&self) -> String {
        match self {
            Rejected::Proxy(why) => format!("PROXY header: {why}"),
            Rejected::Denied => "refused by the access lists".into(),
            Rejected::Limit(r) => r.reason().into(),
        }
    }
}

/// A listener's PROXY protocol acceptance: its own `acceptProxy` and
/// `trustedProxies`, or its service's. Present only on listeners that take
/// PROXY headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AcceptProxy {
    /// Sources allowed to send the header (empty: any).
    pub trusted: Vec<IpNet>,
}

impl AcceptProxy {
    /// The effective setting of `listener` of `service`: `None` when its clients
    /// send no PROXY header.
    pub(crate) fn of(service: &ServiceOptions, listener: &ListenOptions) -> Option<AcceptProxy> {
        listener.accepts_proxy(service).then(|| AcceptProxy {
            trusted: listener.trusted_proxies(service).to_vec(),
        })
    }
}

/// Who a client really is, as a PROXY header the listener takes says (else
/// as its socket does).
pub(crate) struct Real {
    /// The client's address.
    pub client: SocketAddr,
    /// The address the client reached, from the header: a PROXY header
    /// sent on to a host passes it on, as HAProxy does (`None`: this
    /// listener's own address).
    pub reached: Option<SocketAddr>,
    /// Client bytes that came behind the header, for the host first.
    pub early: Vec<u8>,
}

/// Reads the PROXY header the listener expects, if it takes them.
pub(crate) async fn read_proxy(
    client: &mut TcpStream,
    peer: SocketAddr,
    proxy: Option<&AcceptProxy>,
) -> Result<Real, Rejected> {
    let direct = |early| Real {
        client: peer,
        reached: None,
        early,
    };
    let Some(proxy) = proxy else {
        return Ok(direct(Vec::new()));
    };
    if !proxy.trusted.is_empty() && !contains(&proxy.trusted, peer.ip()) {
        return Err(Rejected::Proxy(format!(
            "{} is not a trusted proxy",
            peer.ip()
        )));
    }
    match tokio::time::timeout(PROXY_HEADER_TIMEOUT, read_proxy_header(client)).await {
        Ok(Ok((header, rest))) => Ok(match header {
            ProxyHeader::Proxy {
                source,
                destination,
            } => Real {
                client: source,
                reached: Some(destination),
                early: rest,
            },
            ProxyHeader::Local => direct(rest),
        }),
        Ok(Err(why)) => Err(Rejected::Proxy(why)),
        Err(_) => Err(Rejected::Proxy(format!(
            "none within {PROXY_HEADER_TIMEOUT:?}"
        ))),
    }
}

/// Lets the client at `client` (its real address) into the service, or says
/// why not: the access lists, then the limits.
pub(crate) async fn admit(
    client: SocketAddr,
    options: &ServiceOptions,
    limiter: &Arc<Limiter>,
) -> Result<Admission, Rejected> {
    if !allowed(client, options) {
        return Err(Rejected::Denied);
    }
    let ip = canonical(client.ip());
    limiter
        .admit(
            ip,
            (options.source_maxconn, options.source_rate),
            options.queue,
            options.queue_timeout,
        )
        .await
        .map_err(Rejected::Limit)
}

/// The place under its service's limits of a connection the previous process
/// admitted (an upgrade): it counts as [`admit`] would have counted it, but
/// is never refused.
pub(crate) fn hold(
    client: SocketAddr,
    options: &ServiceOptions,
    limiter: &Arc<Limiter>,
) -> Admission {
    let per_source = options.source_maxconn > 0 || options.source_rate > 0;
    limiter.hold(canonical(client.ip()), per_source)
}

/// Whether the access lists of a service with `options` let `client` in.
pub(crate) fn allowed(client: SocketAddr, options: &ServiceOptions) -> bool {
    let ip = canonical(client.ip());
    !(contains(&options.deny, ip) || (!options.allow.is_empty() && !contains(&options.allow, ip)))
}

/// IPv4 clients of a dual-stack listener arrive as `::ffff:a.b.c.d`: match them
/// against IPv4 networks as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|net| net.contains(&ip))
}

/// Reads the PROXY header. Returns it with any client bytes that arrived behind
/// it in the same reads (to be sent to the host first).
async fn read_proxy_header(client: &mut TcpStream) -> Result<(ProxyHeader, Vec<u8>), String> {
    let mut buf = vec![0u8; V2_MAX];
    let mut filled = 0;
    loop {
        let n = client
            .read(&mut buf[filled..])
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the header".into());
        }
        filled += n;
        match proxy_protocol::parse(&buf[..filled]) {
            Ok(Some((header, len))) => {
                buf.truncate(filled);
                buf.drain(..len);
                return Ok((header, buf));
            }
            Ok(None) if filled < buf.len() => {}
            Ok(None) => return Err("header too long".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}
