//! UDP services end to end: the real binary between real UDP sockets on
//! loopback (IPv4 and IPv6), and Debian's dnsmasq as a DNS host queried by
//! `dig`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::common::{self, binary::Txlb};

/// How long a test waits for one reply.
const REPLY: Duration = Duration::from_secs(2);

/// A UDP host on `ip`: answers each datagram with `prefix` then the
/// datagram (an empty prefix: an echo). Counts what it received.
async fn udp_host(ip: &str, prefix: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind((ip.parse::<IpAddr>().unwrap(), 0))
        .await
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    let prefix = prefix.as_bytes().to_vec();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        let mut reply = Vec::with_capacity(65_536 + prefix.len());
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            count.fetch_add(1, Relaxed);
            reply.clear();
            reply.extend_from_slice(&prefix);
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, from).await;
        }
    });
    (addr, received)
}

/// A port on 127.0.0.1 where nothing listens: datagrams to it get ICMP port
/// unreachable.
fn closed_udp_port() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

/// A UDP service on `listen` with `attrs` on `<service>`, a group of
/// `hosts` under `scheduler`, and the admin web (for `/metrics`).
fn config(listen: &str, attrs: &str, scheduler: &str, hosts: &[(&str, SocketAddr)]) -> String {
    let user = &common::admin::users()[0];
    let hosts: String = hosts
        .iter()
        .map(|(name, addr)| format!("      <host name=\"{name}\" ip=\"{addr}\"/>\n"))
        .collect();
    format!(
        "<config>\n  <service name=\"u\" protocol=\"udp\" {attrs}>\n    <listen ip=\"{listen}\"/>\n    \
         <group name=\"g\" scheduler=\"{scheduler}\" enable=\"true\">\n{hosts}    </group>\n  </service>\n\
         <admin><web listen=\"127.0.0.1:0\" enable=\"true\"/>\
         <user name=\"{}\" password=\"{}\" access=\"full\"/></admin>\n</config>\n",
        user.name, user.password_hash
    )
}

/// A client socket on `ip`, port chosen by the kernel.
async fn client(ip: &str) -> UdpSocket {
    UdpSocket::bind((ip.parse::<IpAddr>().unwrap(), 0))
        .await
        .unwrap()
}

/// Sends `bytes` to `lb` and waits for one reply.
async fn ask(socket: &UdpSocket, lb: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    socket.send_to(bytes, lb).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    match tokio::time::timeout(REPLY, socket.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => {
            assert_eq!(from, lb, "replies come from the listener's address");
            Some(buf[..n].to_vec())
        }
        _ => None,
    }
}

/// The reply's host name (what comes before `:`).
async fn which(socket: &UdpSocket, lb: SocketAddr, bytes: &[u8]) -> String {
    let reply = ask(socket, lb, bytes).await.expect("a reply");
    let text = String::from_utf8(reply).unwrap();
    text.split(':').next().unwrap().to_string()
}

/// One service counter from `/metrics`.
async fn metric(txlb: &Txlb, name: &str) -> u64 {
    let base = txlb.logged("admin web server up", "url").await;
    let base = base.trim_end_matches('/');
    let text = common::admin::get_as(base, common::admin::FULL, "/metrics")
        .await
        .1;
    let prefix = format!("{name}{{service=\"u\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {text}"))
        .parse()
        .unwrap()
}

async fn echo_byte_exact(ip: &str, listen: &str) {
    let (echo, _) = udp_host(ip, "").await;
    let txlb = Txlb::start_xml(&config(listen, "", "roundr", &[("e", echo)]), None);
    let lb = txlb.listener();
    let socket = client(ip).await;
    let mut sizes = vec![0, 1, 2, 512, 1_472, 9_000, 65_507, 0];
    sizes.extend((0..200).map(|i| (i * 7_919) % 4_000));
    for (i, size) in sizes.iter().enumerate() {
        let bytes: Vec<u8> = (0..*size).map(|b| (b * 31 + i) as u8).collect();
        let reply = ask(&socket, lb, &bytes).await;
        assert_eq!(
            reply.as_deref(),
            Some(&bytes[..]),
            "datagram {i} of {size} bytes"
        );
    }
    // One session carried them all, both ways counted.
    assert_eq!(metric(&txlb, "txlb_service_sessions_total").await, 1);
    assert_eq!(metric(&txlb, "txlb_service_sessions_open").await, 1);
    let n = sizes.len() as u64;
    assert_eq!(metric(&txlb, "txlb_service_datagrams_in_total").await, n);
    assert_eq!(metric(&txlb, "txlb_service_datagrams_out_total").await, n);
    let bytes: u64 = sizes.iter().map(|s| *s as u64).sum();
    assert_eq!(metric(&txlb, "txlb_service_bytes_in_total").await, bytes);
    assert_eq!(metric(&txlb, "txlb_service_bytes_out_total").await, bytes);
}

#[tokio::test]
async fn datagrams_of_every_size_are_echoed_byte_exact_over_ipv4() {
    echo_byte_exact("127.0.0.1", "127.0.0.1:0").await;
}

#[tokio::test]
async fn datagrams_of_every_size_are_echoed_byte_exact_over_ipv6() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    echo_byte_exact("::1", "[::1]:0").await;
}

#[tokio::test]
async fn two_clients_go_to_two_hosts_and_each_stays_on_its_own() {
    let (h1, _) = udp_host("127.0.0.1", "h1:").await;
    let (h2, _) = udp_host("127.0.0.1", "h2:").await;
    let txlb = Txlb::start_xml(
        &config("127.0.0.1:0", "", "roundr", &[("h1", h1), ("h2", h2)]),
        None,
    );
    let lb = txlb.listener();
    let (a, b) = (client("127.0.0.1").await, client("127.0.0.1").await);
    let first = which(&a, lb, b"x").await;
    let second = which(&b, lb, b"x").await;
    assert_ne!(first, second, "roundr: one client on each host");
    for _ in 0..10 {
        assert_eq!(which(&a, lb, b"again").await, first);
        assert_eq!(which(&b, lb, b"again").await, second);
    }
    assert_eq!(metric(&txlb, "txlb_service_sessions_total").await, 2);
}

#[tokio::test]
async fn hash_keeps_a_client_address_on_one_host_across_sessions() {
    let (h1, _) = udp_host("127.0.0.1", "h1:").await;
    let (h2, _) = udp_host("127.0.0.1", "h2:").await;
    // responses="1": every datagram is a session of its own, picked afresh.
    let xml = config(
        "127.0.0.1:0",
        "responses=\"1\"",
        "hash",
        &[("h1", h1), ("h2", h2)],
    );
    let txlb = Txlb::start_xml(&xml, None);
    let lb = txlb.listener();
    let mut seen = std::collections::HashSet::new();
    for last in 2..18 {
        let ip = format!("127.0.0.{last}");
        let mut hosts = std::collections::HashSet::new();
        for _ in 0..3 {
            hosts.insert(which(&client(&ip).await, lb, b"q").await);
        }
        assert_eq!(hosts.len(), 1, "{ip} went to {hosts:?}");
        seen.extend(hosts);
    }
    assert_eq!(seen.len(), 2, "16 client addresses spread over both hosts");
    assert_eq!(metric(&txlb, "txlb_service_sessions_total").await, 48);
}

#[tokio::test]
async fn responses_one_ends_a_session_after_its_reply() {
    let (h1, _) = udp_host("127.0.0.1", "h1:").await;
    let (h2, _) = udp_host("127.0.0.1", "h2:").await;
    let xml = config(
        "127.0.0.1:0",
        "responses=\"1\"",
        "roundr",
        &[("h1", h1), ("h2", h2)],
    );
    let txlb = Txlb::start_xml(&xml, None);
    let lb = txlb.listener();
    let a = client("127.0.0.1").await;
    let first = which(&a, lb, b"1").await;
    // The same client again: a new session, and roundr's next host.
    let second = which(&a, lb, b"2").await;
    assert_ne!(first, second);
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            metric(&txlb, "txlb_service_sessions_open").await == 0
        })
        .await
    );
    assert_eq!(metric(&txlb, "txlb_service_sessions_total").await, 2);
}

#[tokio::test]
async fn an_idle_session_ends_after_its_timeout() {
    let (h1, _) = udp_host("127.0.0.1", "h1:").await;
    let (h2, _) = udp_host("127.0.0.1", "h2:").await;
    let xml = config(
        "127.0.0.1:0",
        "sessionTimeout=\"0.5\"",
        "roundr",
        &[("h1", h1), ("h2", h2)],
    );
    let txlb = Txlb::start_xml(&xml, None);
    let lb = txlb.listener();
    let a = client("127.0.0.1").await;
    let first = which(&a, lb, b"1").await;
    // Traffic keeps it open past its timeout.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(which(&a, lb, b"more").await, first);
    }
    assert_eq!(metric(&txlb, "txlb_service_sessions_open").await, 1);
    // Silence ends it; the next datagram opens another, on roundr's next host.
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            metric(&txlb, "txlb_service_sessions_open").await == 0
        })
        .await
    );
    assert_ne!(which(&a, lb, b"back").await, first);
    assert_eq!(metric(&txlb, "txlb_service_sessions_total").await, 2);
}

#[tokio::test]
async fn a_host_answering_port_unreachable_is_marked_bad_and_skipped() {
    let closed = closed_udp_port();
    let (h2, received) = udp_host("127.0.0.1", "h2:").await;
    let xml = config(
        "127.0.0.1:0",
        "",
        "roundr",
        &[("closed", closed), ("h2", h2)],
    );
    let txlb = Txlb::start_xml(&xml, None);
    let lb = txlb.listener();
    // Clients until one lands on the closed port (roundr: the first or the
    // second); its datagram is refused, the host marked bad, and the client's
    // next datagram (a DNS client's retry) reaches h2.
    let mut refused_client = None;
    for _ in 0..2 {
        let c = client("127.0.0.1").await;
        match ask(&c, lb, b"q").await {
            Some(reply) => assert_eq!(reply, b"h2:q"),
            None => refused_client = Some(c),
        }
    }
    let c = refused_client.expect("one client went to the closed port");
    let line = txlb.wait_for("host marked bad", 0);
    assert!(line.contains("host=\"closed\""), "{line}");
    let before = received.load(Relaxed);
    assert_eq!(
        ask(&c, lb, b"retry").await.as_deref(),
        Some(&b"h2:retry"[..])
    );
    assert_eq!(received.load(Relaxed), before + 1);
    // New clients skip the bad host.
    for _ in 0..5 {
        assert_eq!(which(&client("127.0.0.1").await, lb, b"n").await, "h2");
    }
}

#[tokio::test]
async fn sessions_beyond_max_sessions_are_dropped_and_counted() {
    let (h1, _) = udp_host("127.0.0.1", "h1:").await;
    let xml = config("127.0.0.1:0", "maxSessions=\"2\"", "roundr", &[("h1", h1)]);
    let txlb = Txlb::start_xml(&xml, None);
    let lb = txlb.listener();
    let (a, b, c) = (
        client("127.0.0.1").await,
        client("127.0.0.1").await,
        client("127.0.0.1").await,
    );
    assert!(ask(&a, lb, b"a").await.is_some());
    assert!(ask(&b, lb, b"b").await.is_some());
    assert!(
        ask(&c, lb, b"c").await.is_none(),
        "a third session is one too many"
    );
    assert_eq!(metric(&txlb, "txlb_service_dropped_limit_total").await, 1);
    // The open ones go on.
    assert!(ask(&a, lb, b"a").await.is_some());
    assert_eq!(metric(&txlb, "txlb_service_sessions_open").await, 2);
}

#[tokio::test]
async fn a_reload_that_changes_the_hosts_keeps_open_sessions() {
    let (h1, _) = udp_host("127.0.0.1", "h1:").await;
    let (h2, _) = udp_host("127.0.0.1", "h2:").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    std::fs::write(&path, config("127.0.0.1:0", "", "roundr", &[("h1", h1)])).unwrap();
    let txlb = Txlb::start(&path, 2);
    let lb = txlb.listener();
    let a = client("127.0.0.1").await;
    assert_eq!(which(&a, lb, b"1").await, "h1");
    // h2 joins, h1 gets a new weight: the session stays on h1.
    let changed = config("127.0.0.1:0", "", "roundr", &[("h2", h2), ("h1", h1)]);
    std::fs::write(&path, changed).unwrap();
    let skip = txlb.log_len();
    txlb.signal("HUP");
    txlb.wait_for("configuration reloaded", skip);
    for _ in 0..5 {
        assert_eq!(which(&a, lb, b"again").await, "h1");
    }
    assert_eq!(metric(&txlb, "txlb_service_sessions_total").await, 1);
    // New clients see the new hosts.
    let mut hosts = std::collections::HashSet::new();
    for _ in 0..4 {
        hosts.insert(which(&client("127.0.0.1").await, lb, b"n").await);
    }
    assert!(hosts.contains("h2"), "{hosts:?}");
}
