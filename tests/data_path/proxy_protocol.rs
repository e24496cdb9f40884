//! The PROXY protocol end to end: headers txlb sends to hosts (v1, v2, per group
//! and per host) parsed by a test backend with txlb's own parser; headers txlb
//! accepts from a balancer in front (whole, followed by data, split across
//! writes, through a chain of two balancers); and the malformed, missing and
//! untrusted ones, each closed and counted; and listeners of one service that
//! differ: one behind another balancer, one for direct clients, changed by a
//! reload without rebinding.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use txlb::config::{Config, Listener, parse_listen_addr, parse_net};
use txlb::proxy_protocol::{self, ProxyHeader, Version, encode_v1, encode_v2};
use txlb::scheduler::SchedulerKind;
use txlb::{Balancer, BalancerHandle, Command};

/// A backend that requires a PROXY header (parsed with txlb's parser), answers
/// `v1|v2 SOURCE DESTINATION\n`, or `none\n` when the bytes do not start with a
/// header, then echoes the rest of the stream.
async fn header_reporting_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 512];
                let (report, rest) = loop {
                    let n = s.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    match proxy_protocol::parse(&buf) {
                        Ok(Some((
                            ProxyHeader::Proxy {
                                source,
                                destination,
                            },
                            len,
                        ))) => {
                            let version = if buf[0] == b'P' { "v1" } else { "v2" };
                            break (format!("{version} {source} {destination}\n"), len);
                        }
                        Ok(Some((ProxyHeader::Local, len))) => break ("local\n".into(), len),
                        Ok(None) if n > 0 => continue,
                        _ => break ("none\n".into(), 0),
                    }
                };
                s.write_all(report.as_bytes()).await.unwrap();
                s.write_all(&buf[rest..]).await.unwrap();
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Sends `hello`, half-closes, and returns everything the balancer sends back.
async fn exchange(balancer: SocketAddr) -> (String, SocketAddr) {
    let mut client = TcpStream::connect(balancer).await.unwrap();
    let me = client.local_addr().unwrap();
    client.write_all(b"hello").await.unwrap();
    client.shutdown().await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    (reply, me)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_get_the_header_of_their_group_or_their_own() {
    let backend = header_reporting_backend().await;
    let mut v2 = host("v2", backend, 1);
    v2.options.proxy_protocol = Some(Some(Version::V2));
    let mut plain = host("plain", backend, 1);
    plain.options.proxy_protocol = Some(None);
    let mut cfg = config(
        SchedulerKind::RoundRobin,
        vec![host("group", backend, 1), v2, plain],
    );
    cfg.services[0].groups[0].options.proxy_protocol = Some(Version::V1);
    let balancer = Balancer::start(cfg).await.unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (reply, me) = exchange(addr).await;
        let (report, echoed) = reply.split_once('\n').unwrap();
        assert_eq!(echoed, "hello", "the client's bytes follow the header");
        if report == "none" {
            seen.push("none".to_string());
            continue;
        }
        let fields: Vec<&str> = report.split(' ').collect();
        assert_eq!(fields[1], me.to_string(), "the host sees the real client");
        assert_eq!(fields[2], addr.to_string(), "and the address it reached");
        seen.push(fields[0].to_string());
    }
    seen.sort();
    assert_eq!(seen, ["none", "v1", "v2"]);
}

/// A balancer whose service takes PROXY headers (from `trusted`, or anyone),
/// in front of an echo backend.
async fn accepting(trusted: &[&str], deny: &[&str]) -> (BalancerHandle, SocketAddr) {
    let mut cfg: Config = config(
        SchedulerKind::RoundRobin,
        vec![host("e", echo_backend().await, 1)],
    );
    let o = &mut cfg.services[0].options;
    o.accept_proxy = true;
    o.trusted_proxies = trusted.iter().map(|n| parse_net(n).unwrap()).collect();
    o.deny = deny.iter().map(|n| parse_net(n).unwrap()).collect();
    let balancer = Balancer::start(cfg).await.unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();
    (balancer, addr)
}

/// Sends `parts` as separate writes (50 ms apart so they are separate
/// segments), then checks `data` comes back and the balancer lists the
/// connection under `client`.
async fn accepted_as(
    balancer: &BalancerHandle,
    addr: SocketAddr,
    parts: &[&[u8]],
    data: &[u8],
    client: SocketAddr,
) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s.write_all(part).await.unwrap();
    }
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .expect("echo within 5 s")
        .unwrap();
    assert_eq!(back, data);
    let listed: Vec<SocketAddr> = balancer
        .connections(Some("svc"), None)
        .iter()
        .map(|c| c.client)
        .collect();
    assert_eq!(listed, [client]);
    drop(s);
    assert!(
        eventually(Duration::from_secs(3), || async {
            balancer.connections(None, None).is_empty()
        })
        .await
    );
}

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_headers_give_the_real_client() {
    let (balancer, addr) = accepting(&["127.0.0.1"], &[]).await;
    let real = a("203.0.113.7:4321");
    let dst = a("198.51.100.1:80");
    let v1 = encode_v1(real, dst);
    let v2 = encode_v2(real, dst);

    // v1 alone, then the data in a second segment.
    accepted_as(&balancer, addr, &[v1.as_bytes(), b"one"], b"one", real).await;
    // v2 with the data in the same segment.
    let mut together = v2.clone();
    together.extend_from_slice(b"two");
    accepted_as(&balancer, addr, &[&together], b"two", real).await;
    // v1 followed by data in one segment.
    let mut together = v1.clone().into_bytes();
    together.extend_from_slice(b"three");
    accepted_as(&balancer, addr, &[&together], b"three", real).await;
    // Headers split across writes: inside the v2 signature, inside its
    // addresses, and in the middle of a v1 line; the data follows.
    accepted_as(
        &balancer,
        addr,
        &[&v2[..5], &v2[5..], b"four"],
        b"four",
        real,
    )
    .await;
    let mut tail = v2[20..].to_vec();
    tail.extend_from_slice(b"five");
    accepted_as(&balancer, addr, &[&v2[..20], &tail], b"five", real).await;
    let six = [&v1.as_bytes()[..9], &v1.as_bytes()[9..], b"six"];
    accepted_as(&balancer, addr, &six, b"six", real).await;
    // A header with 100 KiB behind it in one write: more than one read's worth.
    let data: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
    let mut big = v2.clone();
    big.extend_from_slice(&data);
    accepted_as(&balancer, addr, &[&big], &data, real).await;
    // An IPv6 client.
    let real6 = a("[2001:db8::7]:4321");
    let v6 = encode_v2(real6, a("[2001:db8::1]:80"));
    accepted_as(&balancer, addr, &[&v6, b"seven"], b"seven", real6).await;

    let c = balancer.stats().services[0].counters;
    assert_eq!((c.accepted, c.proxy_errors), (8, 0));
}

/// Opens a connection from 127.0.0.`from`, sends `bytes`, and expects to be
/// closed without a byte.
async fn refused(addr: SocketAddr, from: u8, bytes: &[u8]) {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from(([127, 0, 0, from], 0)))
        .unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        other => panic!(
            "{:?}: expected a close, got {other:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_missing_and_untrusted_headers_are_closed_and_counted() {
    let (balancer, addr) = accepting(&["127.0.0.1", "127.0.0.3"], &["203.0.113.0/24"]).await;
    let good = encode_v1(a("192.0.2.1:1000"), a("192.0.2.2:80"));
    let mut bad_v2 = encode_v2(a("192.0.2.1:1000"), a("192.0.2.2:80"));
    bad_v2[12] = 0x31; // version 3
    let cases: [(&str, u8, Vec<u8>); 6] = [
        (
            "malformed v1",
            1,
            b"PROXY TCP4 1.2.3.4 nonsense\r\nhello".to_vec(),
        ),
        ("malformed v2", 1, bad_v2),
        (
            "v1 without CR",
            1,
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nhello".to_vec(),
        ),
        ("missing", 1, b"GET / HTTP/1.0\r\n\r\n".to_vec()),
        ("untrusted source", 2, good.clone().into_bytes()),
        ("closed inside the header", 3, b"PROXY TCP4 1.2".to_vec()),
    ];
    for (i, (what, from, bytes)) in cases.iter().enumerate() {
        if *what == "closed inside the header" {
            let socket = TcpSocket::new_v4().unwrap();
            socket
                .bind(SocketAddr::from(([127, 0, 0, *from], 0)))
                .unwrap();
            let mut s = socket.connect(addr).await.unwrap();
            s.write_all(bytes).await.unwrap();
            s.shutdown().await.unwrap();
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest)).await;
            assert!(rest.is_empty(), "{what}");
        } else {
            refused(addr, *from, bytes).await;
        }
        let counted = eventually(Duration::from_secs(2), || async {
            balancer.stats().services[0].counters.proxy_errors == i as u64 + 1
        })
        .await;
        assert!(
            counted,
            "{what} not counted: {:?}",
            balancer.stats().services[0].counters
        );
    }
    // The access lists apply to the client the header names.
    refused(
        addr,
        1,
        encode_v1(a("203.0.113.9:5"), a("192.0.2.2:80")).as_bytes(),
    )
    .await;
    let c = balancer.stats().services[0].counters;
    assert_eq!((c.proxy_errors, c.denied), (6, 1));
    assert_eq!(
        balancer.stats().host("svc", "g", "e").unwrap().stats.total,
        0
    );
    // A trusted source with a good header is still served.
    accepted_as(
        &balancer,
        addr,
        &[good.as_bytes(), b"ok"],
        b"ok",
        a("192.0.2.1:1000"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_balancers_in_a_row_pass_the_real_client_on() {
    for version in [Version::V1, Version::V2] {
        let backend = header_reporting_backend().await;
        // The back balancer takes headers from the front one and sends its own
        // (v1) to the host.
        let mut back_cfg = config(SchedulerKind::RoundRobin, vec![host("h", backend, 1)]);
        back_cfg.services[0].options.accept_proxy = true;
        back_cfg.services[0].options.trusted_proxies = vec![parse_net("127.0.0.1").unwrap()];
        back_cfg.services[0].groups[0].options.proxy_protocol = Some(Version::V1);
        let back = Balancer::start(back_cfg).await.unwrap();
        let back_addr = back.local_addr("svc", None).unwrap();
        let mut front_cfg = config(SchedulerKind::RoundRobin, vec![host("back", back_addr, 1)]);
        front_cfg.services[0].groups[0].options.proxy_protocol = Some(version);
        let front = Balancer::start(front_cfg).await.unwrap();
        let front_addr = front.local_addr("svc", None).unwrap();

        let (reply, me) = exchange(front_addr).await;
        // The host sees the client of the front balancer and the address
        // that client reached (the front's listener), as HAProxy passes a
        // received header's destination on; the back balancer's own
        // address is only the hop between them.
        assert_eq!(
            reply,
            format!("v1 {me} {front_addr}\nhello"),
            "{version:?}: the host sees the front balancer's client and listener"
        );
        let c = back.stats().services[0].counters;
        assert_eq!((c.accepted, c.proxy_errors), (1, 0));
        front.shutdown(Duration::from_secs(1)).await;
        back.shutdown(Duration::from_secs(1)).await;
    }
}

/// Sends `bytes`, half-closes, and returns everything the balancer sends back.
async fn send_all(addr: SocketAddr, bytes: &[u8]) -> (Vec<u8>, SocketAddr) {
    let mut client = TcpStream::connect(addr).await.unwrap();
    let me = client.local_addr().unwrap();
    client.write_all(bytes).await.unwrap();
    client.shutdown().await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut reply))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    (reply, me)
}

/// One service on two listeners: 127.0.0.1 behind another balancer (PROXY
/// headers from 127.0.0.1 only), 127.0.0.2 for direct clients. Its host gets a
/// v1 header, so the backend reports which client txlb saw.
fn two_listeners(backend: SocketAddr) -> Config {
    let mut cfg = config(SchedulerKind::RoundRobin, vec![host("h", backend, 1)]);
    let mut behind = Listener::new(parse_listen_addr("127.0.0.1:0").unwrap());
    behind.options.accept_proxy = Some(true);
    behind.options.trusted_proxies = Some(vec![parse_net("127.0.0.1").unwrap()]);
    let direct = Listener::new(parse_listen_addr("127.0.0.2:0").unwrap());
    cfg.services[0].listeners = vec![behind, direct];
    cfg.services[0].groups[0].options.proxy_protocol = Some(Version::V1);
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_accepts_proxy_headers_or_not() {
    let backend = header_reporting_backend().await;
    let balancer = Balancer::start(two_listeners(backend)).await.unwrap();
    let behind_listen = parse_listen_addr("127.0.0.1:0").unwrap();
    let direct_listen = parse_listen_addr("127.0.0.2:0").unwrap();
    let behind = balancer.local_addr("svc", Some(&behind_listen)).unwrap();
    let direct = balancer.local_addr("svc", Some(&direct_listen)).unwrap();
    let flags: Vec<(SocketAddr, bool)> = balancer
        .listeners()
        .iter()
        .map(|l| (l.local, l.accept_proxy))
        .collect();
    assert_eq!(flags, [(behind, true), (direct, false)]);

    // Behind the other balancer: v1 and v2 headers name the client, and the
    // address it reached, which the host is told.
    let (real, reached) = (a("203.0.113.7:4321"), a("198.51.100.1:80"));
    for header in [
        encode_v1(real, reached).into_bytes(),
        encode_v2(real, reached),
    ] {
        let mut bytes = header;
        bytes.extend_from_slice(b"data");
        let (reply, _) = send_all(behind, &bytes).await;
        assert_eq!(
            String::from_utf8(reply).unwrap(),
            format!("v1 {real} {reached}\ndata")
        );
    }
    // Direct: a plain client is served as itself...
    let (reply, me) = exchange(direct).await;
    assert_eq!(reply, format!("v1 {me} {direct}\nhello"));
    // ...and a PROXY header is only data, passed on untouched.
    let header = encode_v2(real, a("198.51.100.1:80"));
    let mut bytes = header.clone();
    bytes.extend_from_slice(b"data");
    let (reply, me) = send_all(direct, &bytes).await;
    let mut expected = format!("v1 {me} {direct}\n").into_bytes();
    expected.extend_from_slice(&bytes);
    assert_eq!(reply, expected);
    let c = balancer.stats().services[0].counters;
    assert_eq!((c.accepted, c.proxy_errors), (4, 0));

    // Behind: an untrusted source and a client without a header are refused
    // and counted, and never reach the host.
    let good = encode_v1(real, a("198.51.100.1:80"));
    refused(behind, 2, good.as_bytes()).await;
    refused(behind, 1, b"hello").await;
    assert!(
        eventually(Duration::from_secs(2), || async {
            balancer.stats().services[0].counters.proxy_errors == 2
        })
        .await,
        "{:?}",
        balancer.stats().services[0].counters
    );
    assert_eq!(
        balancer.stats().host("svc", "g", "h").unwrap().stats.total,
        4
    );
    balancer.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_a_listeners_proxy_acceptance_in_place() {
    let backend = header_reporting_backend().await;
    let balancer = Balancer::start(two_listeners(backend)).await.unwrap();
    let before = balancer.listeners();
    let [behind, direct] = [before[0].local, before[1].local];

    // The reload swaps the two roles; both addresses stay.
    let mut next = balancer.config();
    let listeners = &mut next.services[0].listeners;
    listeners[0].options = Default::default();
    listeners[1].options.accept_proxy = Some(true);
    balancer
        .apply(Command::Replace(Box::new(next.clone())))
        .await
        .unwrap();
    let after = balancer.listeners();
    let flags: Vec<(SocketAddr, bool)> = after.iter().map(|l| (l.local, l.accept_proxy)).collect();
    assert_eq!(flags, [(behind, false), (direct, true)], "same sockets");

    let (reply, me) = exchange(behind).await;
    assert_eq!(reply, format!("v1 {me} {behind}\nhello"));
    let (real, reached) = (a("203.0.113.8:999"), a("198.51.100.1:80"));
    let mut bytes = encode_v2(real, reached);
    bytes.extend_from_slice(b"data");
    let (reply, _) = send_all(direct, &bytes).await;
    assert_eq!(
        String::from_utf8(reply).unwrap(),
        format!("v1 {real} {reached}\ndata")
    );

    // A listener without settings of its own follows its service's.
    next.services[0].listeners[1].options = Default::default();
    next.services[0].options.accept_proxy = true;
    balancer
        .apply(Command::Replace(Box::new(next)))
        .await
        .unwrap();
    let flags: Vec<bool> = balancer
        .listeners()
        .iter()
        .map(|l| l.accept_proxy)
        .collect();
    assert_eq!(flags, [true, true]);
    refused(behind, 1, b"hello").await;
    balancer.shutdown(Duration::from_secs(1)).await;
}
