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

// --- QUIC passthrough by SNI ------------------------------------------------

/// A real QUIC client's first datagrams: the ClientHello rustls' QUIC
/// client writes for `sni` (offering `alpn`), in CRYPTO frames of Initial
/// packets (version 1) protected with the initial keys of `dcid`, one
/// Initial per datagram of `chunk` hello bytes at most, each datagram padded
/// to 1,200 bytes as clients pad theirs. Built here from RFC 9000/9001 with
/// rustls' keys, not with txlb's code.
fn quic_initials(sni: &str, alpn: &[&[u8]], dcid: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    use rustls::quic::{ClientConnection, Version};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut client =
        ClientConnection::new(std::sync::Arc::new(config), Version::V1, name, vec![]).unwrap();
    let mut hello = Vec::new();
    client.write_hs(&mut hello);
    let keys = client_initial_keys(dcid);
    let mut datagrams = Vec::new();
    for (number, piece) in hello.chunks(chunk).enumerate() {
        let offset = number * chunk;
        // CRYPTO frame: type 6, offset and length as 2-byte varints.
        let mut payload = vec![0x06];
        payload.extend_from_slice(&(0x4000 | offset as u16).to_be_bytes());
        payload.extend_from_slice(&(0x4000 | piece.len() as u16).to_be_bytes());
        payload.extend_from_slice(piece);
        // Long header, Initial, 2-byte packet number; no SCID, no token.
        let mut packet = vec![0xc1];
        packet.extend_from_slice(&1u32.to_be_bytes());
        packet.push(dcid.len() as u8);
        packet.extend_from_slice(dcid);
        packet.extend_from_slice(&[0, 0]);
        let header_len = packet.len() + 2 + 2;
        // PADDING frames (zeros) to a 1,200-byte datagram with the tag.
        payload.resize(1200 - header_len - 16, 0);
        let length = 2 + payload.len() + 16;
        packet.extend_from_slice(&(0x4000 | length as u16).to_be_bytes());
        let pn_at = packet.len();
        packet.extend_from_slice(&(number as u16).to_be_bytes());
        let tag = keys
            .packet
            .encrypt_in_place(number as u64, &packet, &mut payload)
            .unwrap();
        packet.extend_from_slice(&payload);
        packet.extend_from_slice(tag.as_ref());
        let sample: Vec<u8> = packet[pn_at + 4..pn_at + 20].to_vec();
        let (head, rest) = packet.split_at_mut(pn_at);
        keys.header
            .encrypt_in_place(&sample, &mut head[0], &mut rest[..2])
            .unwrap();
        assert_eq!(packet.len(), 1200);
        datagrams.push(packet);
    }
    datagrams
}

/// The routes of [`quic_routes`].
const ROUTES: &str = "<route sni=\"a.example\" service=\"qa\"/>\
                      <route sni=\"*.b.example\" service=\"qb\"/>\
                      <route alpn=\"b-proto\" service=\"qb\"/>";

/// Services `qa` and `qb` (a UDP host each, at `a` and `b`) and `u`,
/// listening on 127.0.0.1 with `routes` to them and, with `own`, a default
/// group of its own (a host at `own`).
fn quic_xml(
    listen_attrs: &str,
    routes: &str,
    own: Option<SocketAddr>,
    a: SocketAddr,
    b: SocketAddr,
) -> String {
    let user = &crate::common::admin::users()[0];
    let service = |name: &str, host: SocketAddr| {
        format!(
            "<service name=\"{name}\" protocol=\"udp\"><listen ip=\"127.0.0.1:0\"/>\
             <group name=\"g\" enable=\"true\"><host name=\"{name}1\" ip=\"{host}\"/></group></service>\n"
        )
    };
    let own = own.map_or(String::new(), |d| {
        format!("<group name=\"g\" enable=\"true\"><host name=\"d1\" ip=\"{d}\"/></group>")
    });
    format!(
        "<config>\n<service name=\"u\" protocol=\"udp\">\
         <listen ip=\"127.0.0.1:0\" {listen_attrs}>{routes}</listen>{own}</service>\n\
         {}{}\
         <admin><web listen=\"127.0.0.1:0\" enable=\"true\"/>\
         <user name=\"{}\" password=\"{}\" access=\"full\"/></admin>\n</config>\n",
        service("qa", a),
        service("qb", b),
        user.name,
        user.password_hash
    )
}

/// [`quic_xml`] with [`ROUTES`], hosts answering `a:`, `b:` and (the
/// listener's own) `d:`, run.
async fn quic_routes(listen_attrs: &str) -> (Txlb, SocketAddr) {
    let (a, _) = super::udp::udp_host("127.0.0.1", "a:").await;
    let (b, _) = super::udp::udp_host("127.0.0.1", "b:").await;
    let (d, _) = super::udp::udp_host("127.0.0.1", "d:").await;
    let txlb = Txlb::start_xml(&quic_xml(listen_attrs, ROUTES, Some(d), a, b), None);
    let lb = txlb.listener();
    (txlb, lb)
}

/// Sends `datagrams` to `lb` from `socket`; the replies, in order.
async fn exchange(socket: &UdpSocket, lb: SocketAddr, datagrams: &[Vec<u8>]) -> Vec<Vec<u8>> {
    for d in datagrams {
        socket.send_to(d, lb).await.unwrap();
    }
    let mut replies = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while replies.len() < datagrams.len() {
        match tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => replies.push(buf[..n].to_vec()),
            _ => break,
        }
    }
    replies
}

/// `socket`, kept open in `kept` (its port not given to another client
/// while the test runs).
fn keep(kept: &mut Vec<std::sync::Arc<UdpSocket>>, socket: UdpSocket) -> std::sync::Arc<UdpSocket> {
    let socket = std::sync::Arc::new(socket);
    kept.push(socket.clone());
    socket
}

/// The host a reply came from: its prefix (`a`, `b` or `d`), and the rest.
fn from(reply: &[u8]) -> (String, &[u8]) {
    let at = reply
        .iter()
        .position(|&b| b == b':')
        .expect("a host's prefix");
    (
        String::from_utf8_lossy(&reply[..at]).into_owned(),
        &reply[at + 1..],
    )
}

/// A listener counter from `/metrics`: the line of `name` whose labels
/// contain `label` (0 when there is none; only `u`'s listener has routes).
async fn listener_metric(txlb: &Txlb, name: &str, label: &str) -> u64 {
    let base = txlb.logged("admin web server up", "url").await;
    let base = base.trim_end_matches('/');
    let text = crate::common::admin::get_as(base, crate::common::admin::FULL, "/metrics")
        .await
        .1;
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn quic_initials_of_a_real_client_hello_are_routed_by_sni_and_alpn() {
    let (txlb, lb) = quic_routes("").await;
    let mut kept = Vec::new();
    let dcid = [0x11u8, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
    // One Initial each: by SNI to qa, by a wildcard SNI to qb, by ALPN to
    // qb, and no route's: the listener's own group.
    for (sni, alpn, host) in [
        ("a.example", &[&b"h3"[..]][..], "a"),
        ("x.b.example", &[&b"h3"[..]][..], "b"),
        ("c.example", &[&b"h3"[..], &b"b-proto"[..]][..], "b"),
        ("c.example", &[&b"h3"[..]][..], "d"),
    ] {
        // Each client keeps its socket: a port freed could be the next
        // client's, and find the session of the last.
        let socket = keep(&mut kept, client("127.0.0.1").await);
        let initials = quic_initials(sni, alpn, &dcid, 2_000);
        assert_eq!(initials.len(), 1);
        let replies = exchange(&socket, lb, &initials).await;
        assert_eq!(replies.len(), 1, "{sni}");
        let (which, echoed) = from(&replies[0]);
        assert_eq!((which.as_str(), echoed), (host, &initials[0][..]), "{sni}");
        // Later datagrams (1-RTT, short header) stay on the session's host.
        for i in 0..3u8 {
            let short = [0x40 | i, 1, 2, 3, i];
            let reply = ask(&socket, lb, &short).await.expect("a reply");
            assert_eq!(from(&reply), (host.to_string(), &short[..]), "{sni}");
        }
    }
    // A hello over two datagrams (many ALPN names: about 2.4 KB, as with
    // post-quantum key shares): both reach qa, in order.
    let names: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("proto-{i:04}").into_bytes())
        .collect();
    let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let initials = quic_initials("a.example", &names, &dcid, 1_000);
    assert!(initials.len() >= 2, "{}", initials.len());
    let socket = client("127.0.0.1").await;
    let replies = exchange(&socket, lb, &initials).await;
    let echoed: Vec<(String, &[u8])> = replies.iter().map(|r| from(r)).collect();
    let expected: Vec<(String, &[u8])> =
        initials.iter().map(|d| ("a".to_string(), &d[..])).collect();
    assert_eq!(echoed, expected);
    assert_eq!(
        metric_of(&txlb, "qa", "txlb_service_sessions_total").await,
        2
    );
    assert_eq!(
        metric_of(&txlb, "qb", "txlb_service_sessions_total").await,
        2
    );
    assert_eq!(metric(&txlb, "txlb_service_sessions_total").await, 1);
    let hits = listener_metric(&txlb, "txlb_route_hits_total", "sni=a.example").await;
    assert_eq!(hits, 2);
}

/// One service counter of `service` from `/metrics`.
async fn metric_of(txlb: &Txlb, service: &str, name: &str) -> u64 {
    let base = txlb.logged("admin web server up", "url").await;
    let base = base.trim_end_matches('/');
    let text = crate::common::admin::get_as(base, crate::common::admin::FULL, "/metrics")
        .await
        .1;
    let prefix = format!("{name}{{service=\"{service}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix}"))
        .parse()
        .unwrap()
}

/// Truncated, altered and garbage Initials, each from its own client: every
/// one reaches the listener's own group unchanged (the default route), each
/// is counted as an anomaly, and txlb goes on routing real ones.
#[tokio::test]
async fn truncated_and_garbage_initials_take_the_default_route_and_are_counted() {
    let (txlb, lb) = quic_routes("").await;
    let dcid = [9u8; 12];
    let real = quic_initials("a.example", &[b"h3"], &dcid, 2_000).remove(0);
    let mut rng = fastrand::Rng::with_seed(26);
    let mut bad: Vec<Vec<u8>> = vec![Vec::new(), b"\x12\x34\x01\x00".to_vec(), vec![0xff; 1200]];
    for _ in 0..40 {
        let cut = rng.usize(1..real.len());
        bad.push(real[..cut].to_vec());
        let mut flipped = real.clone();
        // Past the first byte and the version: still a v1 Initial that
        // fails somewhere later (header, keys or tag).
        let at = rng.usize(5..real.len());
        flipped[at] ^= rng.u8(1..);
        bad.push(flipped);
        bad.push((0..rng.usize(1..1500)).map(|_| rng.u8(..)).collect());
    }
    let mut kept = Vec::new();
    for datagram in &bad {
        let socket = keep(&mut kept, client("127.0.0.1").await);
        let reply = ask(&socket, lb, datagram).await.expect("a reply");
        assert_eq!(from(&reply), ("d".to_string(), &datagram[..]));
    }
    let counted = listener_metric(&txlb, "txlb_inspect_anomalies_total", "bad_quic_initial").await;
    assert_eq!(counted, bad.len() as u64);
    let socket = client("127.0.0.1").await;
    let reply = ask(&socket, lb, &real).await.expect("a reply");
    assert_eq!(from(&reply).0, "a");
}

/// A hello whose second datagram never comes waits the listener's
/// `inspectTimeout`, then takes a route on what came.
#[tokio::test]
async fn a_hello_cut_short_is_routed_after_the_inspect_timeout() {
    let (txlb, lb) = quic_routes("inspectTimeout=\"0.4\"").await;
    let names: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("proto-{i:04}").into_bytes())
        .collect();
    let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let initials = quic_initials("a.example", &names, &[7u8; 8], 1_000);
    let socket = client("127.0.0.1").await;
    let sent = std::time::Instant::now();
    socket.send_to(&initials[0], lb).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf))
        .await
        .expect("a reply after the timeout")
        .unwrap();
    assert!(
        sent.elapsed() >= Duration::from_millis(400),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(from(&buf[..n]).1, &initials[0][..]);
    let cut = listener_metric(&txlb, "txlb_inspect_anomalies_total", "truncated_hello").await;
    assert_eq!(cut, 1);
}

/// Routes change with a reload: new clients follow the new ones, a session
/// keeps its host. A listener without a group of its own drops a client no
/// route matches, counted as `no_route`.
#[tokio::test]
async fn a_reload_of_quic_routes_moves_new_clients_and_keeps_sessions() {
    let (a, _) = super::udp::udp_host("127.0.0.1", "a:").await;
    let (b, _) = super::udp::udp_host("127.0.0.1", "b:").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    std::fs::write(&path, quic_xml("", ROUTES, None, a, b)).unwrap();
    let txlb = Txlb::start(&path, 2);
    let lb = txlb.listener();
    let dcid = [3u8; 8];
    let first = quic_initials("a.example", &[b"h3"], &dcid, 2_000);
    let open = client("127.0.0.1").await;
    assert_eq!(from(&exchange(&open, lb, &first).await[0]).0, "a");
    // No route matches, and `u` has no group: dropped and counted.
    let lost = client("127.0.0.1").await;
    let none = quic_initials("c.example", &[b"h3"], &dcid, 2_000);
    assert!(exchange(&lost, lb, &none).await.is_empty());
    assert_eq!(metric(&txlb, "txlb_service_no_route_total").await, 1);
    // a.example now goes to qb.
    let moved = "<route sni=\"a.example\" service=\"qb\"/>";
    std::fs::write(&path, quic_xml("", moved, None, a, b)).unwrap();
    let skip = txlb.log_len();
    txlb.signal("HUP");
    txlb.wait_for("reload", skip);
    let fresh = client("127.0.0.1").await;
    assert!(
        crate::common::eventually(Duration::from_secs(5), || async {
            let fresh = client("127.0.0.1").await;
            exchange(&fresh, lb, &first)
                .await
                .first()
                .map(|r| from(r).0)
                == Some("b".into())
        })
        .await
    );
    assert_eq!(from(&exchange(&fresh, lb, &first).await[0]).0, "b");
    // The session opened before the reload stays on qa's host.
    let reply = ask(&open, lb, &[0x40, 9]).await.expect("a reply");
    assert_eq!(from(&reply).0, "a");
}

/// A QUIC-like host on 127.0.0.1: answers each datagram with a long-header
/// packet (Handshake, version 1) whose Source Connection ID is `id` (the ID
/// its clients send to afterwards), then `name:` and the datagram.
async fn quic_host(name: &str, id: [u8; 8]) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let mut header = vec![0xe0, 0, 0, 0, 1, 8];
    header.extend_from_slice(&[0x11; 8]);
    header.push(8);
    header.extend_from_slice(&id);
    header.extend_from_slice(format!("{name}:").as_bytes());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let mut reply = header.clone();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, from).await;
        }
    });
    addr
}

/// Which [`quic_host`] answered, by the name after its header.
fn quic_host_name(reply: &[u8]) -> String {
    let text = &reply[23..];
    let at = text.iter().position(|&b| b == b':').unwrap();
    String::from_utf8_lossy(&text[..at]).into_owned()
}

/// A QUIC client that comes back from another address (NAT rebinding,
/// migration) sends to the connection ID its host chose: it reaches the same
/// service and host, not the default route, however often it moves; an ID
/// no host chose takes the default route.
#[tokio::test]
async fn a_client_from_a_new_address_follows_its_hosts_connection_id() {
    let a1 = quic_host("a1", [0xa1; 8]).await;
    let a2 = quic_host("a2", [0xa2; 8]).await;
    let (b, _) = super::udp::udp_host("127.0.0.1", "b:").await;
    let (d, _) = super::udp::udp_host("127.0.0.1", "d:").await;
    // qa has two hosts, in turn: the host must be the client's, not the
    // next one.
    let xml = quic_xml("", ROUTES, Some(d), a1, b).replace(
        &format!("<host name=\"qa1\" ip=\"{a1}\"/>"),
        &format!("<host name=\"qa1\" ip=\"{a1}\"/><host name=\"qa2\" ip=\"{a2}\"/>"),
    );
    assert!(xml.contains("qa2"));
    let txlb = Txlb::start_xml(&xml, None);
    let lb = txlb.listener();
    let mut kept = Vec::new();
    let mut first_hosts = Vec::new();
    for n in 0..2u8 {
        let socket = keep(&mut kept, client("127.0.0.1").await);
        let initial = quic_initials("a.example", &[b"h3"], &[n; 8], 2_000);
        let reply = exchange(&socket, lb, &initial).await.remove(0);
        first_hosts.push(quic_host_name(&reply));
    }
    first_hosts.sort();
    assert_eq!(first_hosts, ["a1", "a2"]);
    for (host, id) in [("a1", [0xa1u8; 8]), ("a2", [0xa2; 8])] {
        // Three moves: a short header, a long one (a Handshake packet to
        // the ID), a short one again.
        let mut short = vec![0x41];
        short.extend_from_slice(&id);
        short.extend_from_slice(b"moved");
        let mut long = vec![0xe0, 0, 0, 0, 1, 8];
        long.extend_from_slice(&id);
        long.extend_from_slice(&[0, 0x40, 4, 1, 2, 3, 4]);
        for datagram in [&short, &long, &short] {
            let socket = keep(&mut kept, client("127.0.0.1").await);
            let reply = ask(&socket, lb, datagram).await.expect("a reply");
            assert_eq!(quic_host_name(&reply), host);
            assert_eq!(&reply[23 + 3..], &datagram[..]);
        }
    }
    let mut stranger = vec![0x41];
    stranger.extend_from_slice(&[0xee; 8]);
    let socket = keep(&mut kept, client("127.0.0.1").await);
    let reply = ask(&socket, lb, &stranger).await.expect("a reply");
    assert_eq!(from(&reply).0, "d");
}

/// A client whose hello waits (half of it came) and which then sends to a
/// connection ID its host chose gets one session, on that host: its wait
/// ending opens no second one.
#[tokio::test]
async fn a_waiting_client_that_comes_back_to_a_connection_id_gets_one_session() {
    let a1 = quic_host("a1", [0xa1; 8]).await;
    let (b, _) = super::udp::udp_host("127.0.0.1", "b:").await;
    let (d, _) = super::udp::udp_host("127.0.0.1", "d:").await;
    let xml = quic_xml("inspectTimeout=\"0.3\"", ROUTES, Some(d), a1, b);
    let txlb = Txlb::start_xml(&xml, None);
    let lb = txlb.listener();
    let first = client("127.0.0.1").await;
    let initial = quic_initials("a.example", &[b"h3"], &[1; 8], 2_000);
    let reply = exchange(&first, lb, &initial).await.remove(0);
    assert_eq!(quic_host_name(&reply), "a1");
    // Half a hello (many ALPN names: two datagrams), then a short header
    // to a1's ID from the same port.
    let names: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("proto-{i:04}").into_bytes())
        .collect();
    let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let half = quic_initials("a.example", &names, &[2; 8], 1_000);
    let mover = client("127.0.0.1").await;
    mover.send_to(&half[0], lb).await.unwrap();
    let mut short = vec![0x41];
    short.extend_from_slice(&[0xa1; 8]);
    short.extend_from_slice(b"moved");
    let reply = ask(&mover, lb, &short).await.expect("a reply");
    assert_eq!(quic_host_name(&reply), "a1");
    // Past the inspect timeout: no other reply, one session for the port.
    let mut buf = vec![0u8; 2048];
    let late = tokio::time::timeout(Duration::from_secs(1), mover.recv_from(&mut buf)).await;
    assert!(late.is_err(), "a second session answered");
    assert_eq!(
        metric_of(&txlb, "qa", "txlb_service_sessions_total").await,
        2
    );
    assert_eq!(
        metric_of(&txlb, "qa", "txlb_service_sessions_open").await,
        2
    );
}

/// `maxSessionsPerSource` is checked before a QUIC client's Initials are
/// read: a source at its limit costs no decryption (its datagram is not
/// inspected, so no anomaly is counted).
#[tokio::test]
async fn a_source_at_its_limit_is_dropped_before_its_initials_are_read() {
    let (a, _) = super::udp::udp_host("127.0.0.1", "a:").await;
    let (b, _) = super::udp::udp_host("127.0.0.1", "b:").await;
    let (d, _) = super::udp::udp_host("127.0.0.1", "d:").await;
    let xml = quic_xml("", ROUTES, Some(d), a, b).replace(
        "<service name=\"u\" protocol=\"udp\">",
        "<service name=\"u\" protocol=\"udp\" maxSessionsPerSource=\"1\">",
    );
    let txlb = Txlb::start_xml(&xml, None);
    let lb = txlb.listener();
    let first = client("127.0.0.1").await;
    let initial = quic_initials("a.example", &[b"h3"], &[1; 8], 2_000);
    assert_eq!(from(&exchange(&first, lb, &initial).await[0]).0, "a");
    let second = client("127.0.0.1").await;
    assert!(!answered(&second, lb, b"not an Initial").await);
    assert_eq!(
        metric(&txlb, "txlb_service_dropped_source_limit_total").await,
        1
    );
    let bad = listener_metric(&txlb, "txlb_inspect_anomalies_total", "bad_quic_initial").await;
    assert_eq!(bad, 0, "the datagram was inspected");
}

/// A QUIC-routed session shows what its hello told and the route it took
/// in the connections list, as a TCP connection does.
#[tokio::test]
async fn a_quic_routed_session_is_listed_with_its_sni_alpn_and_route() {
    let (txlb, lb) = quic_routes("").await;
    let socket = client("127.0.0.1").await;
    let initial = quic_initials("a.example", &[b"h3"], &[5; 8], 2_000);
    assert_eq!(from(&exchange(&socket, lb, &initial).await[0]).0, "a");
    let base = txlb.logged("admin web server up", "url").await;
    let base = base.trim_end_matches('/');
    let (status, body) =
        crate::common::admin::get_as(base, crate::common::admin::FULL, "/api/v1/connections").await;
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let me = socket.local_addr().unwrap().to_string();
    let session = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client"] == me.as_str())
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(session["service"], "qa", "{session}");
    assert_eq!(session["sni"], "a.example", "{session}");
    assert_eq!(session["alpn"], serde_json::json!(["h3"]), "{session}");
    assert_eq!(session["route"], "sni=a.example", "{session}");
}

// --- Per-source limits --------------------------------------------------------

/// Sends `bytes` and waits briefly for a reply: whether one came.
async fn answered(socket: &UdpSocket, lb: SocketAddr, bytes: &[u8]) -> bool {
    socket.send_to(bytes, lb).await.unwrap();
    let mut buf = [0u8; 256];
    tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf))
        .await
        .is_ok()
}

#[tokio::test]
async fn sessions_past_max_sessions_per_source_are_dropped_and_counted() {
    let (h1, _) = super::udp::udp_host("127.0.0.1", "h1:").await;
    let attrs = r#"maxSessionsPerSource="2" sessionTimeout="1""#;
    let txlb = Txlb::start_xml(&config("127.0.0.1:0", attrs, "roundr", &[("h1", h1)]), None);
    let lb = txlb.listener();
    let sockets = [
        client("127.0.0.1").await,
        client("127.0.0.1").await,
        client("127.0.0.1").await,
    ];
    assert!(answered(&sockets[0], lb, b"a").await);
    assert!(answered(&sockets[1], lb, b"b").await);
    // A third port of the same address: no session.
    assert!(!answered(&sockets[2], lb, b"c").await);
    assert_eq!(
        metric(&txlb, "txlb_service_dropped_source_limit_total").await,
        1
    );
    // Open sessions keep passing; another address has its own two.
    assert!(answered(&sockets[0], lb, b"a2").await);
    assert!(answered(&client("127.0.0.2").await, lb, b"d").await);
    // Once the address's sessions end (sessionTimeout), the third opens one.
    assert!(
        crate::common::eventually(Duration::from_secs(5), || async {
            metric(&txlb, "txlb_service_sessions_open").await == 0
        })
        .await
    );
    assert!(answered(&sockets[2], lb, b"c2").await);
    assert_eq!(metric(&txlb, "txlb_service_sessions_total").await, 4);
}

#[tokio::test]
async fn max_sessions_per_source_counts_only_sessions_opened_under_it_across_reloads() {
    let (h1, _) = super::udp::udp_host("127.0.0.1", "h1:").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    let with = |attrs: &str| config("127.0.0.1:0", attrs, "roundr", &[("h1", h1)]);
    std::fs::write(&path, with(r#"sessionTimeout="30""#)).unwrap();
    let txlb = Txlb::start(&path, 2);
    let lb = txlb.listener();
    let reload = |attrs: &str| {
        std::fs::write(&path, with(attrs)).unwrap();
        let skip = txlb.log_len();
        txlb.signal("HUP");
        txlb.wait_for("configuration reloaded", skip);
    };
    // Without the limit nothing is counted per address.
    let before = [client("127.0.0.1").await, client("127.0.0.1").await];
    for socket in &before {
        assert!(answered(socket, lb, b"a").await);
    }
    reload(r#"sessionTimeout="30" maxSessionsPerSource="1""#);
    let counted = client("127.0.0.1").await;
    assert!(
        answered(&counted, lb, b"b").await,
        "the two before do not count"
    );
    assert!(!answered(&client("127.0.0.1").await, lb, b"c").await);
    assert_eq!(
        metric(&txlb, "txlb_service_dropped_source_limit_total").await,
        1
    );
    // Lifted, and set again at two: the one opened under it still counts.
    reload(r#"sessionTimeout="30""#);
    assert!(answered(&client("127.0.0.1").await, lb, b"d").await);
    reload(r#"sessionTimeout="30" maxSessionsPerSource="2""#);
    assert!(answered(&client("127.0.0.1").await, lb, b"e").await);
    assert!(!answered(&client("127.0.0.1").await, lb, b"f").await);
    assert_eq!(
        metric(&txlb, "txlb_service_dropped_source_limit_total").await,
        2
    );
    for socket in before.iter().chain([&counted]) {
        assert!(answered(socket, lb, b"again").await);
    }
    assert_eq!(metric(&txlb, "txlb_service_sessions_open").await, 5);
}

#[tokio::test]
async fn datagrams_past_the_rate_of_a_source_are_dropped_and_counted() {
    let (h1, received) = super::udp::udp_host("127.0.0.1", "h1:").await;
    let attrs = r#"datagramRate="5""#;
    let txlb = Txlb::start_xml(&config("127.0.0.1:0", attrs, "roundr", &[("h1", h1)]), None);
    let lb = txlb.listener();
    // Two sockets of one address share its rate: 30 datagrams at once.
    let (a, b) = (client("127.0.0.1").await, client("127.0.0.1").await);
    for i in 0..15u8 {
        a.send_to(&[i], lb).await.unwrap();
        b.send_to(&[i], lb).await.unwrap();
    }
    assert!(
        crate::common::eventually(Duration::from_secs(5), || async {
            let passed = metric(&txlb, "txlb_service_datagrams_in_total").await;
            let dropped = metric(&txlb, "txlb_service_dropped_rate_total").await;
            passed + dropped == 30
        })
        .await
    );
    // Five a second (ten if the burst crossed a second's edge).
    let passed = metric(&txlb, "txlb_service_datagrams_in_total").await;
    assert!((5..=10).contains(&passed), "{passed} passed");
    let at_host = || received.load(std::sync::atomic::Ordering::Relaxed) as u64;
    assert!(
        crate::common::eventually(Duration::from_secs(5), || async { at_host() == passed }).await,
        "{} reached the host, {passed} passed",
        at_host()
    );
    // Another address is not held back; the first passes again next second.
    assert!(answered(&client("127.0.0.2").await, lb, b"x").await);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(answered(&a, lb, b"again").await);
}

/// CPU seconds (user and system) process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// The keys a client protects its version 1 Initials to `dcid` with.
fn client_initial_keys(dcid: &[u8]) -> rustls::quic::DirectionalKeys {
    let rustls::SupportedCipherSuite::Tls13(suite) =
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
    else {
        unreachable!()
    };
    suite
        .quic_suite()
        .unwrap()
        .keys(dcid, rustls::Side::Client, rustls::quic::Version::V1)
        .local
}

/// One client Initial (version 1) for `dcid` carrying `payload` as is (no
/// padding), protected with rustls' initial keys; a 1-byte packet number.
fn initial_packet(dcid: &[u8], number: u8, payload: &[u8]) -> Vec<u8> {
    let keys = client_initial_keys(dcid);
    let mut payload = payload.to_vec();
    let mut packet = vec![0xc0];
    packet.extend_from_slice(&1u32.to_be_bytes());
    packet.push(dcid.len() as u8);
    packet.extend_from_slice(dcid);
    packet.extend_from_slice(&[0, 0]);
    let length = 1 + payload.len() + 16;
    packet.extend_from_slice(&(0x4000 | length as u16).to_be_bytes());
    let pn_at = packet.len();
    packet.push(number);
    let tag = keys
        .packet
        .encrypt_in_place(u64::from(number), &packet, &mut payload)
        .unwrap();
    packet.extend_from_slice(&payload);
    packet.extend_from_slice(tag.as_ref());
    let sample: Vec<u8> = packet[pn_at + 4..pn_at + 20].to_vec();
    let (head, rest) = packet.split_at_mut(pn_at);
    keys.header
        .encrypt_in_place(&sample, &mut head[0], &mut rest[..1])
        .unwrap();
    packet
}

/// Datagrams of 65,000 bytes: a real Initial with the start of a hello,
/// then some 1,700 tiny Initials of the same connection coalesced behind
/// it, which cost txlb no more to read than any other datagram of that size
/// (each packet would be a decryption: a CPU amplifier for a flood of new
/// client addresses).
#[tokio::test]
async fn a_datagram_of_many_coalesced_initials_costs_no_more_than_another() {
    let (txlb, lb) = quic_routes("").await;
    let dcid = [7u8; 8];
    let mut coalesced = initial_packet(&dcid, 0, &crypto_of_a_hello_start());
    let mut tiny = vec![0xc0];
    tiny.extend_from_slice(&1u32.to_be_bytes());
    tiny.push(dcid.len() as u8);
    tiny.extend_from_slice(&dcid);
    tiny.extend_from_slice(&[0, 0, 20]);
    tiny.extend_from_slice(&[0x5a; 20]);
    while coalesced.len() + tiny.len() <= 65_000 {
        coalesced.extend_from_slice(&tiny);
    }
    let mut plain = vec![0x11u8; coalesced.len()];
    plain[0] = 0x40; // a short header: no Initial, decided at once
    let cost = |datagram: Vec<u8>| {
        let pid = txlb.pid();
        async move {
            let before = cpu_seconds(pid);
            let mut kept = Vec::new();
            for _ in 0..150 {
                let socket = keep(&mut kept, client("127.0.0.1").await);
                assert!(ask(&socket, lb, &datagram).await.is_some(), "a reply");
            }
            cpu_seconds(pid) - before
        }
    };
    let plain_cost = cost(plain).await;
    let coalesced_cost = cost(coalesced).await;
    eprintln!("CPU: 150 plain datagrams {plain_cost:.2} s, 150 coalesced {coalesced_cost:.2} s");
    assert!(
        coalesced_cost < 3.0 * plain_cost + 0.3,
        "coalesced Initials cost {coalesced_cost:.2} s of CPU, plain datagrams {plain_cost:.2} s"
    );
}

/// A CRYPTO frame at offset 0 with the first 200 bytes of a ClientHello
/// of 4 KiB (the rest never comes).
fn crypto_of_a_hello_start() -> Vec<u8> {
    let mut frame = vec![0x06, 0x00, 0x40, 200];
    frame.extend_from_slice(&[0x01, 0x00, 0x10, 0x00]);
    frame.resize(4 + 200, 0);
    frame
}
