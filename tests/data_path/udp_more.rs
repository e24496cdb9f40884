//! UDP services past their first step, end to end through the real binary:
//! PROXY v2 headers on datagrams, QUIC Initials routed by their SNI, and
//! per-source limits.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::udp::{ask, client, config, metric};
use crate::common::binary::Txlb;

/// What a PROXY v2 header on a datagram said, and the datagram behind it.
#[derive(Debug, PartialEq, Eq)]
struct Proxied {
    source: SocketAddr,
    destination: SocketAddr,
    payload: Vec<u8>,
}

/// Reads a PROXY v2 header of a datagram by the specification (section
/// 2.2), written here rather than taken from txlb: command PROXY, family
/// UDP over IPv4 (0x12) or IPv6 (0x22), no TLVs.
fn parse_v2_datagram(bytes: &[u8]) -> Result<Proxied, String> {
    const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
    if bytes.len() < 16 || &bytes[..12] != SIGNATURE {
        return Err(format!("no v2 signature in {bytes:?}"));
    }
    if bytes[12] != 0x21 {
        return Err(format!("version/command {:#x}, expected 0x21", bytes[12]));
    }
    let len = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    let body = bytes.get(16..16 + len).ok_or("address block cut short")?;
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    let (source, destination) = match (bytes[13], len) {
        (0x12, 12) => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    body[at],
                    body[at + 1],
                    body[at + 2],
                    body[at + 3],
                ))
            };
            (
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            )
        }
        (0x22, 36) => {
            let ip = |at: usize| {
                IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(&body[at..at + 16]).unwrap(),
                ))
            };
            (
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            )
        }
        (family, len) => return Err(format!("family {family:#x} with {len} address bytes")),
    };
    Ok(Proxied {
        source,
        destination,
        payload: bytes[16 + len..].to_vec(),
    })
}

/// A UDP host behind `proxyProtocol="v2"` on `ip`: reports each datagram's
/// header and payload (or why it is not one), and echoes the payload.
async fn proxy_v2_host(ip: &str) -> (SocketAddr, mpsc::UnboundedReceiver<Result<Proxied, String>>) {
    let socket = UdpSocket::bind((ip.parse::<IpAddr>().unwrap(), 0))
        .await
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let parsed = parse_v2_datagram(&buf[..n]);
            if let Ok(p) = &parsed {
                let _ = socket.send_to(&p.payload, from).await;
            }
            if tx.send(parsed).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

/// Datagrams of many sizes from two clients through a service whose host
/// takes PROXY v2 (`on`: the group's or the host's setting): each reaches
/// the host behind a header naming its client and the listener, its payload
/// byte-exact, and comes back as sent. A datagram too long for its header
/// is dropped and counted, not sent cut.
async fn datagrams_carry_a_proxy_v2_header(ip: &str, listen: &str, on: &str) {
    let (host, mut seen) = proxy_v2_host(ip).await;
    let mut xml = config(listen, "", "roundr", &[("h1", host)]);
    xml = match on {
        "group" => xml.replace(r#"enable="true">"#, r#"enable="true" proxyProtocol="v2">"#),
        _ => xml.replace(
            r#"<host name="h1""#,
            r#"<host proxyProtocol="v2" name="h1""#,
        ),
    };
    assert!(xml.contains("proxyProtocol"), "{xml}");
    let txlb = Txlb::start_xml(&xml, None);
    let lb = txlb.listener();
    let (a, b) = (client(ip).await, client(ip).await);
    let mut sent = 0;
    for (i, size) in [0usize, 1, 100, 1_200, 1_472, 9_000, 60_000]
        .iter()
        .enumerate()
    {
        for socket in [&a, &b] {
            let bytes: Vec<u8> = (0..*size).map(|n| (n * 13 + i) as u8).collect();
            let reply = ask(socket, lb, &bytes).await;
            assert_eq!(reply.as_deref(), Some(&bytes[..]), "{size} bytes");
            let got = seen.recv().await.unwrap().unwrap();
            let expected = Proxied {
                source: socket.local_addr().unwrap(),
                destination: lb,
                payload: bytes,
            };
            assert_eq!(got, expected, "{size} bytes");
            sent += 1;
        }
    }
    assert_eq!(metric(&txlb, "txlb_service_sessions_total").await, 2);
    assert_eq!(metric(&txlb, "txlb_service_datagrams_in_total").await, sent);
    // The largest IPv4 datagram leaves no room for a header.
    let full = vec![7u8; 65_507];
    a.send_to(&full, lb).await.unwrap();
    assert!(
        crate::common::eventually(Duration::from_secs(5), || async {
            metric(&txlb, "txlb_service_dropped_oversize_total").await == 1
        })
        .await
    );
    assert!(seen.try_recv().is_err(), "nothing cut reached the host");
    assert_eq!(ask(&a, lb, b"after").await.as_deref(), Some(&b"after"[..]));
}

#[tokio::test]
async fn datagrams_carry_a_group_proxy_v2_header_over_ipv4() {
    datagrams_carry_a_proxy_v2_header("127.0.0.1", "127.0.0.1:0", "group").await;
}

#[tokio::test]
async fn datagrams_carry_a_host_proxy_v2_header_over_ipv6() {
    datagrams_carry_a_proxy_v2_header("::1", "[::1]:0", "host").await;
}
