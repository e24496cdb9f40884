//! Listeners with routes under hostile clients and careless operators: clients
//! that stall in a partial ClientHello (memory per client bounded), dribble it
//! (the inspect timeout is total), half-close, or send random bytes; a PROXY
//! header before the hello; `retryEmpty` and access lists of the routed
//! service; routes changed and services removed while clients are inspected.

use crate::common;
use crate::routing::{client_hello, greeting_host, service};

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::binary::Txlb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use txlb::config::Config;
use txlb::{Balancer, BalancerHandle, Command};

/// A host that greets each client with `NAME\n`, then reports on `report`
/// its name and every byte the client sent until it closed (or 3 s passed).
async fn recording_host(
    name: &'static str,
    report: mpsc::UnboundedSender<(&'static str, Vec<u8>)>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let report = report.clone();
            tokio::spawn(async move {
                let _ = s.write_all(format!("{name}\n").as_bytes()).await;
                let mut got = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut got)).await;
                let _ = report.send((name, got));
            });
        }
    });
    addr
}

/// `edge` on 127.0.0.1:0 (listener attributes `listen_attrs`) routing SNI
/// `api.example.com` to `api`, its own group of one host at `own`; then the
/// services in `rest`.
fn edge_xml(listen_attrs: &str, own: SocketAddr, rest: &str) -> String {
    format!(
        "<config>\n  <service name=\"edge\">\n    <listen ip=\"127.0.0.1:0\" {listen_attrs}>\n      \
         <route sni=\"api.example.com\" service=\"api\"/>\n    </listen>\n    \
         <group name=\"g\" enable=\"true\">\n      <host name=\"own1\" ip=\"{own}\"/>\n    \
         </group>\n  </service>\n{rest}</config>\n"
    )
}

/// The in-process balancer on `xml`, and its `edge` listener's address.
async fn balancer(xml: &str) -> (BalancerHandle, SocketAddr) {
    let config = Config::from_xml_str(xml).unwrap();
    let balancer = Balancer::start(config).await.unwrap();
    let edge = balancer.local_addr("edge", None).unwrap();
    (balancer, edge)
}

/// The counters of service `name` now.
fn service_counters(balancer: &BalancerHandle, name: &str) -> txlb::ServiceCountersView {
    let stats = balancer.stats();
    stats
        .services
        .iter()
        .find(|s| s.name == name)
        .unwrap()
        .counters
}

/// The first line the balancer sends a client (a greeting host's name), or
/// what the client saw instead.
async fn greeting(client: &mut TcpStream, within: Duration) -> Result<String, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(within, async {
        while !line.ends_with(b"\n") {
            match client.read(&mut byte).await {
                Ok(1) => line.push(byte[0]),
                Ok(_) => return Err("closed".to_string()),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    })
    .await;
    match read {
        Err(_) => Err("no answer".into()),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => Ok(String::from_utf8_lossy(&line).trim_end().to_string()),
    }
}

/// The start of a ClientHello whose record and message say 16,128 bytes, cut
/// at `len` bytes: the sniffer can only wait for the rest.
fn partial_big_hello(len: usize) -> Vec<u8> {
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x3f, 0x00, 0x01, 0x00, 0x3e, 0xfc, 0x03, 0x03,
    ];
    hello.resize(len, 0);
    hello
}

#[tokio::test]
async fn two_thousand_stalled_hellos_hold_at_most_inspect_bytes_each() {
    const CLIENTS: usize = 2000;
    let _heavy = common::heavy().await;
    common::binary::raise_nofile();
    let own = greeting_host("own", None).await;
    let api = greeting_host("api", None).await;
    let xml = edge_xml(
        "inspectTimeout=\"25\" inspectBytes=\"16384\"",
        own,
        &service("api", api),
    );
    let txlb = Txlb::start_xml(&xml, None);
    let edge = txlb.listener();
    // The allocator and runtime warmed by a few of the same.
    let mut warm = Vec::new();
    for _ in 0..50 {
        let mut c = TcpStream::connect(edge).await.unwrap();
        c.write_all(&partial_big_hello(15_000)).await.unwrap();
        warm.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = txlb.rss_kib();
    let started = Instant::now();
    let hello = partial_big_hello(15_000);
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut c = TcpStream::connect(edge).await.unwrap();
        c.write_all(&hello).await.unwrap();
        clients.push(c);
    }
    // Read by txlb once its memory stops growing.
    let mut last = txlb.rss_kib();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = txlb.rss_kib();
        if now.abs_diff(last) < 256 || started.elapsed() > Duration::from_secs(8) {
            last = now;
            break;
        }
        last = now;
    }
    let per_client = (last.saturating_sub(before)) * 1024 / CLIENTS as u64;
    eprintln!("RSS {before} KiB -> {last} KiB: {per_client} bytes per stalled client");
    assert!(
        per_client <= 16384 + 4096,
        "{per_client} bytes per stalled client (RSS {before} KiB -> {last} KiB)"
    );
    // Still waiting, all of them: none was served or closed.
    let mut probe = [0u8; 1];
    for c in clients.iter().step_by(100) {
        assert!(
            matches!(c.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        );
    }
}

#[tokio::test]
async fn a_hello_dribbled_a_byte_at_a_time_is_cut_at_the_inspect_timeout() {
    let own = greeting_host("own", None).await;
    let api = greeting_host("api", None).await;
    let xml = edge_xml("inspectTimeout=\"1\"", own, &service("api", api));
    let (balancer, edge) = balancer(&xml).await;
    let hello = client_hello("api.example.com");
    let started = Instant::now();
    let client = TcpStream::connect(edge).await.unwrap();
    let (mut read, mut write) = client.into_split();
    // A byte every 300 ms: each read well within the timeout.
    let dribble = tokio::spawn(async move {
        for byte in hello {
            if write.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut line = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), read.read_exact(&mut line))
        .await
        .expect("served after the inspect timeout, not at the end of the hello")
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(&line, b"own\n");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    dribble.abort();
    let anomalies = &balancer.listeners()[0].anomalies;
    assert_eq!(anomalies, &[("truncated_hello", 1)]);
    balancer.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_client_half_closing_after_a_partial_hello_is_decided_at_once() {
    let (report, mut reports) = mpsc::unbounded_channel();
    let own = recording_host("own", report.clone()).await;
    let api = recording_host("api", report).await;
    let xml = edge_xml("inspectTimeout=\"5\"", own, &service("api", api));
    let (balancer, edge) = balancer(&xml).await;
    let hello = client_hello("api.example.com");
    for cut in [1, 3, 5, 9, hello.len() / 2, hello.len() - 1] {
        let started = Instant::now();
        let mut client = TcpStream::connect(edge).await.unwrap();
        client.write_all(&hello[..cut]).await.unwrap();
        client.shutdown().await.unwrap();
        let (host, got) = tokio::time::timeout(Duration::from_secs(4), reports.recv())
            .await
            .unwrap_or_else(|_| panic!("cut at {cut}: no host got the client"))
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "cut at {cut}: waited {:?}",
            started.elapsed()
        );
        assert_eq!(got, hello[..cut], "cut at {cut}: host {host}");
        // The client still hears its host.
        assert_eq!(
            greeting(&mut client, Duration::from_secs(2)).await,
            Ok(host.to_string())
        );
    }
    balancer.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_proxy_header_before_the_hello_is_not_given_to_the_routed_host() {
    let (report, mut reports) = mpsc::unbounded_channel();
    let own = recording_host("own", report.clone()).await;
    let api = recording_host("api", report.clone()).await;
    let pp = recording_host("pp", report).await;
    let xml = format!(
        "<config>\n  <service name=\"edge\">\n    <listen ip=\"127.0.0.1:0\" acceptProxy=\"true\">\n      \
         <route sni=\"api.example.com\" service=\"api\"/>\n      \
         <route sni=\"pp.example.com\" service=\"pp\"/>\n    </listen>\n    \
         <group name=\"g\" enable=\"true\">\n      <host name=\"own1\" ip=\"{own}\"/>\n    \
         </group>\n  </service>\n{}  <service name=\"pp\">\n    <group name=\"g\" enable=\"true\">\n      \
         <host name=\"pp1\" ip=\"{pp}\" proxyProtocol=\"v1\"/>\n    </group>\n  </service>\n</config>\n",
        service("api", api),
    );
    let (balancer, edge) = balancer(&xml).await;
    let header = b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 443\r\n";
    let hello = client_hello("api.example.com");
    // The header and the hello in one write, then in several.
    for pieces in [1, 4] {
        let mut client = TcpStream::connect(edge).await.unwrap();
        if pieces == 1 {
            client
                .write_all(&[&header[..], &hello].concat())
                .await
                .unwrap();
        } else {
            client.write_all(header).await.unwrap();
            for chunk in hello.chunks(hello.len() / 3) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                client.write_all(chunk).await.unwrap();
            }
        }
        assert_eq!(
            greeting(&mut client, Duration::from_secs(3)).await,
            Ok("api".into())
        );
        client.shutdown().await.unwrap();
        let (host, got) = reports.recv().await.unwrap();
        assert_eq!(host, "api");
        assert_eq!(got, hello, "in {pieces} pieces");
    }
    // A host that asks for a PROXY header gets one of its own: the client's
    // real address and the one it reached (the received header's), then
    // the hello.
    let hello = client_hello("pp.example.com");
    let mut client = TcpStream::connect(edge).await.unwrap();
    client
        .write_all(&[&header[..], &hello].concat())
        .await
        .unwrap();
    assert_eq!(
        greeting(&mut client, Duration::from_secs(3)).await,
        Ok("pp".into())
    );
    client.shutdown().await.unwrap();
    let (host, got) = reports.recv().await.unwrap();
    assert_eq!(host, "pp");
    let line_end = got.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let line = String::from_utf8_lossy(&got[..line_end]);
    assert_eq!(line, "PROXY TCP4 192.0.2.7 127.0.0.1 5555 443\r\n");
    assert_eq!(&got[line_end..], hello);
    balancer.shutdown(Duration::from_secs(1)).await;
}

/// A host that accepts, reads a little, then closes without a byte.
async fn empty_host() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 100];
                let _ = tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn retry_empty_behind_a_route_replays_the_hello() {
    let (report, mut reports) = mpsc::unbounded_channel();
    let own = recording_host("own", report.clone()).await;
    let api = recording_host("api", report).await;
    let xml = edge_xml(
        "",
        own,
        &format!(
            "  <service name=\"api\">\n    <group name=\"g\" enable=\"true\" retryEmpty=\"true\">\n      \
             <host name=\"empty\" ip=\"{}\"/>\n      <host name=\"api1\" ip=\"{api}\"/>\n    \
             </group>\n  </service>\n",
            empty_host().await
        ),
    );
    let (balancer, edge) = balancer(&xml).await;
    let hello = client_hello("api.example.com");
    for round in 0..2 {
        let mut client = TcpStream::connect(edge).await.unwrap();
        client.write_all(&hello).await.unwrap();
        assert_eq!(
            greeting(&mut client, Duration::from_secs(3)).await,
            Ok("api".into()),
            "round {round}"
        );
        client.write_all(b"after").await.unwrap();
        client.shutdown().await.unwrap();
        let (host, got) = reports.recv().await.unwrap();
        assert_eq!(host, "api");
        assert_eq!(got, [&hello[..], b"after"].concat(), "round {round}");
    }
    let stats = balancer.stats();
    let api = stats.services.iter().find(|s| s.name == "api").unwrap();
    assert_eq!(api.counters.failovers, 1, "{:?}", api.counters);
    balancer.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_routed_services_access_lists_decide() {
    let own = greeting_host("own", None).await;
    let api = greeting_host("api", None).await;
    let xml = edge_xml(
        "",
        own,
        &service("api", api).replace(
            "<service name=\"api\">",
            "<service name=\"api\" deny=\"127.0.0.0/8\">",
        ),
    );
    let (balancer, edge) = balancer(&xml).await;
    let mut routed = TcpStream::connect(edge).await.unwrap();
    routed
        .write_all(&client_hello("api.example.com"))
        .await
        .unwrap();
    assert_eq!(
        greeting(&mut routed, Duration::from_secs(3)).await,
        Err("closed".into())
    );
    let mut other = TcpStream::connect(edge).await.unwrap();
    other
        .write_all(&client_hello("else.example.com"))
        .await
        .unwrap();
    assert_eq!(
        greeting(&mut other, Duration::from_secs(3)).await,
        Ok("own".into())
    );
    let counters = |name: &str| service_counters(&balancer, name);
    assert_eq!((counters("api").accepted, counters("api").denied), (1, 1));
    assert_eq!((counters("edge").accepted, counters("edge").denied), (1, 0));
    balancer.shutdown(Duration::from_secs(1)).await;
}

/// The listener's own service owns the port: its access lists close a client
/// before a byte is read, even one a route would send elsewhere.
#[tokio::test]
async fn the_listeners_own_access_lists_refuse_before_inspection() {
    let own = greeting_host("own", None).await;
    let api = greeting_host("api", None).await;
    let xml = edge_xml("", own, &service("api", api)).replace(
        "<service name=\"edge\">",
        "<service name=\"edge\" deny=\"127.0.0.0/8\">",
    );
    let (balancer, edge) = balancer(&xml).await;
    let started = std::time::Instant::now();
    // Sends nothing: closed at once, not after the inspect timeout.
    let mut silent = TcpStream::connect(edge).await.unwrap();
    assert_eq!(
        greeting(&mut silent, Duration::from_secs(3)).await,
        Err("closed".into())
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let mut routed = TcpStream::connect(edge).await.unwrap();
    let _ = routed.write_all(&client_hello("api.example.com")).await;
    assert!(greeting(&mut routed, Duration::from_secs(3)).await.is_err());
    let counters = |name: &str| service_counters(&balancer, name);
    assert_eq!((counters("edge").accepted, counters("edge").denied), (2, 2));
    assert_eq!(counters("api").accepted, 0);
    balancer.shutdown(Duration::from_secs(1)).await;
}

/// A client of the edge (whose own group answers "own") routed to
/// service `api` (whose host answers "api") by its hello, of which it has
/// sent a part when `change` is applied to the running configuration; the
/// rest comes after.
async fn inspected_across(change: impl FnOnce(&mut Config)) -> (BalancerHandle, TcpStream) {
    let own = greeting_host("own", None).await;
    let api = greeting_host("api", None).await;
    let xml = edge_xml("inspectTimeout=\"5\"", own, &service("api", api));
    let (balancer, edge) = balancer(&xml).await;
    let hello = client_hello("api.example.com");
    let mut client = TcpStream::connect(edge).await.unwrap();
    client.write_all(&hello[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut next = balancer.config();
    change(&mut next);
    balancer
        .apply(Command::Replace(Box::new(next)))
        .await
        .unwrap();
    client.write_all(&hello[10..]).await.unwrap();
    (balancer, client)
}

#[tokio::test]
async fn a_routed_service_removed_while_its_client_is_inspected() {
    // The reload drops the route and the service it sent to.
    let (balancer, mut client) = inspected_across(|next| {
        next.services.retain(|s| s.name != "api");
        next.services[0].listeners[0].routes.clear();
    })
    .await;
    // Served as the listener now says: by its own group.
    assert_eq!(
        greeting(&mut client, Duration::from_secs(3)).await,
        Ok("own".into())
    );
    balancer.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_routed_service_renamed_while_its_client_is_inspected_still_serves_it() {
    // The reload renames the service, and its route with it.
    let (balancer, mut client) = inspected_across(|next| {
        for service in &mut next.services {
            if service.name == "api" {
                service.name = "api2".into();
            }
        }
        for route in &mut next.services[0].listeners[0].routes {
            if route.service == "api" {
                route.service = "api2".into();
            }
        }
    })
    .await;
    // The route as it is now sends it on: not to the listener's own group.
    assert_eq!(
        greeting(&mut client, Duration::from_secs(3)).await,
        Ok("api".into())
    );
    assert_eq!(service_counters(&balancer, "api2").accepted, 1);
    balancer.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn routes_added_and_removed_under_load_lose_no_client_and_keep_their_hits() {
    const CLIENTS: usize = 4;
    const ROUNDS: usize = 40;
    let own = greeting_host("own", None).await;
    let api = greeting_host("api", None).await;
    let other = greeting_host("other", None).await;
    let xml = edge_xml(
        "",
        own,
        &format!("{}{}", service("api", api), service("other", other)),
    );
    let (balancer, edge) = balancer(&xml).await;
    let hello = client_hello("api.example.com");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..CLIENTS {
        let (stop, hello) = (stop.clone(), hello.clone());
        load.push(tokio::spawn(async move {
            let mut served = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut client = TcpStream::connect(edge).await.unwrap();
                client.write_all(&hello).await.unwrap();
                assert_eq!(
                    greeting(&mut client, Duration::from_secs(3)).await,
                    Ok("api".into()),
                    "client {served}"
                );
                served += 1;
            }
            served
        }));
    }
    let listen = txlb::config::parse_listen_addr("127.0.0.1:0").unwrap();
    let mut route = txlb::config::Route::to("other");
    route.sni = Some("other.example.com".into());
    for _ in 0..ROUNDS {
        // First, so the api route moves down and back up.
        balancer
            .apply(Command::AddRoute {
                service: "edge".into(),
                listen: listen.clone(),
                route: route.clone(),
                position: Some(0),
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        balancer
            .apply(Command::RemoveRoute {
                service: "edge".into(),
                listen: listen.clone(),
                route: route.clone(),
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut served = 0;
    for task in load {
        served += task.await.unwrap();
    }
    assert!(served > 0);
    let routes = &balancer.listeners()[0].routes;
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0].hits, served, "{routes:?}");
    let stats = balancer.stats();
    let api = stats.services.iter().find(|s| s.name == "api").unwrap();
    assert_eq!(api.counters.accepted, served);
    balancer.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn random_first_bytes_never_break_the_binary() {
    const CLIENTS: u64 = 300;
    let own = greeting_host("own", None).await;
    let api = greeting_host("api", None).await;
    let xml = format!(
        "<config>\n  <service name=\"edge\">\n    <listen ip=\"127.0.0.1:0\" inspectTimeout=\"0.3\">\n      \
         <route sni=\"api.example.com\" service=\"api\"/>\n      \
         <route sni=\"*.example.org\" alpn=\"h2\" service=\"api\"/>\n      \
         <route protocol=\"http\" host=\"app.example.com\" service=\"api\"/>\n      \
         <route protocol=\"ssh\" service=\"api\"/>\n    </listen>\n    \
         <group name=\"g\" enable=\"true\">\n      <host name=\"own1\" ip=\"{own}\"/>\n    \
         </group>\n  </service>\n{}</config>\n",
        service("api", api)
    );
    let mut txlb = Txlb::start_xml(&xml, None);
    let edge = txlb.listener();
    let hello = client_hello("api.example.com");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for seed in 0..CLIENTS {
        if tasks.len() >= 32 {
            tasks.join_next().await.unwrap().unwrap();
        }
        let hello = hello.clone();
        tasks.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut bytes = match seed % 4 {
                // A real hello with a few bytes changed.
                0 => {
                    let mut h = hello;
                    for _ in 0..rng.usize(1..8) {
                        let at = rng.usize(..h.len());
                        h[at] = rng.u8(..);
                    }
                    h
                }
                1 => b"GET / HTTP/1.1\r\nHost: ".to_vec(),
                2 => vec![0x16, 0x03, rng.u8(0..5)],
                _ => Vec::new(),
            };
            let cut = rng.usize(..=bytes.len());
            bytes.truncate(cut);
            let extra = rng.usize(..2000);
            bytes.extend((0..extra).map(|_| rng.u8(..)));
            let Ok(mut client) = TcpStream::connect(edge).await else {
                return;
            };
            let _ = client.write_all(&bytes).await;
            if rng.bool() {
                // Past the inspect timeout: the sniffer gives up, not the client.
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            let _ = client.shutdown().await;
            let mut sink = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut sink)).await;
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(txlb.alive(), "{}", txlb.log_text());
    assert_eq!(txlb.count("panicked"), 0, "{}", txlb.log_text());
    // Still routing.
    let mut client = TcpStream::connect(edge).await.unwrap();
    client.write_all(&hello).await.unwrap();
    assert_eq!(
        greeting(&mut client, Duration::from_secs(3)).await,
        Ok("api".into())
    );
}

#[tokio::test]
async fn a_route_added_beside_ten_thousand_costs_little() {
    let own = greeting_host("own", None).await;
    let api = greeting_host("api", None).await;
    let routes: String = (0..txlb::config::MAX_ROUTES - 1)
        .map(|i| format!("      <route sni=\"h{i}.example.com\" service=\"api\"/>\n"))
        .collect();
    let xml = format!(
        "<config>\n  <service name=\"edge\">\n    <listen ip=\"127.0.0.1:0\">\n{routes}    \
         </listen>\n    <group name=\"g\" enable=\"true\">\n      <host name=\"own1\" ip=\"{own}\"/>\n    \
         </group>\n  </service>\n{}</config>\n",
        service("api", api)
    );
    // The yardstick, linear in the routes: reading and checking the file.
    let started = Instant::now();
    Config::from_xml_str(&xml).unwrap();
    let linear = started.elapsed().max(Duration::from_millis(20));
    let (balancer, edge) = balancer(&xml).await;
    let listen = txlb::config::parse_listen_addr("127.0.0.1:0").unwrap();
    let mut route = txlb::config::Route::to("api");
    route.sni = Some("api.example.com".into());
    let started = Instant::now();
    balancer
        .apply(Command::AddRoute {
            service: "edge".into(),
            listen: listen.clone(),
            route: route.clone(),
            position: Some(0),
        })
        .await
        .unwrap();
    let took = started.elapsed();
    eprintln!("adding the 10,000th route took {took:?} (reading the file {linear:?})");
    // Quadratic, it took 15 times the file's reading.
    assert!(took < 4 * linear, "{took:?} against {linear:?}");
    // A reload changing one of them, too.
    let mut next = balancer.config();
    next.services[0].listeners[0].routes[5000].sni = Some("changed.example.com".into());
    let started = Instant::now();
    balancer
        .apply(Command::Replace(Box::new(next)))
        .await
        .unwrap();
    let took = started.elapsed();
    eprintln!("a reload changing one of 10,000 routes took {took:?}");
    assert!(took < 4 * linear, "{took:?} against {linear:?}");
    // One more is refused, and nothing changed.
    route.sni = Some("more.example.com".into());
    let refused = balancer
        .apply(Command::AddRoute {
            service: "edge".into(),
            listen,
            route,
            position: None,
        })
        .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("at most 10000")),
        "{refused:?}"
    );
    let mut client = TcpStream::connect(edge).await.unwrap();
    client
        .write_all(&client_hello("api.example.com"))
        .await
        .unwrap();
    assert_eq!(
        greeting(&mut client, Duration::from_secs(3)).await,
        Ok("api".into())
    );
    assert_eq!(balancer.listeners()[0].routes[0].hits, 1);
    balancer.shutdown(Duration::from_secs(1)).await;
}
