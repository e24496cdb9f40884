//! UDP sessions in the connections list and closed by id, end to end
//! through the real binary: the JSON API, the page and the legacy call list
//! and close them as they do TCP connections, with ids from the same
//! numbering, and a list asked for during a flood of datagrams answers at
//! once without holding the flood up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::udp::{ask, client, config, metric, udp_host};
use crate::common::{self, admin::FULL, binary::Txlb};

/// The admin web's base URL, without the trailing slash.
async fn admin_base(txlb: &Txlb) -> String {
    let base = txlb.logged("admin web server up", "url").await;
    base.trim_end_matches('/').to_string()
}

/// `method` on the JSON API as the full user: status and body.
async fn api(base: &str, method: reqwest::Method, path: &str) -> (u16, String) {
    let response = common::admin::client()
        .request(method, format!("{base}{path}"))
        .basic_auth(FULL.0, Some(FULL.1))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The connections list from the JSON API (`query`: its filter).
async fn listed(base: &str, query: &str) -> Vec<Value> {
    let (status, body) = api(
        base,
        reqwest::Method::GET,
        &format!("/api/v1/connections{query}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The entry of `client`'s UDP session in `list`.
fn session_of(list: &[Value], client: SocketAddr) -> Option<&Value> {
    list.iter()
        .find(|c| c["transport"] == "udp" && c["client"] == client.to_string())
}

/// A client's session is listed with its host, listener, age, idle time,
/// datagrams and bytes each way, beside a TCP connection numbered apart;
/// closing it by id ends it at once (counted, logged `closed-by-admin`) and
/// the client's next datagram opens a new session with a new id. A closed
/// or bogus id is a 404 that says so, a malformed one a 400; the legacy call
/// closes a session too.
#[tokio::test]
async fn a_udp_session_is_listed_with_its_counts_and_closed_by_its_id() {
    let (h1, _) = udp_host("127.0.0.1", "h1:").await;
    let echo = common::echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    let tcp_service = format!(
        "<service name=\"t\"><listen ip=\"127.0.0.1:0\"/><group name=\"g\" enable=\"true\">\
         <host name=\"e\" ip=\"{echo}\"/></group></service>"
    );
    let xml = config("127.0.0.1:0", "", "roundr", &[("h1", h1)]).replace(
        "<admin>",
        &format!(
            "{tcp_service}<logging access=\"{}\"/><admin>",
            access.display()
        ),
    );
    let txlb = Txlb::start_xml(&xml, None);
    let lb = txlb.listener();
    let base = admin_base(&txlb).await;

    // A TCP connection first: its id comes from the same numbering.
    let tcp_listener: SocketAddr = {
        let log = txlb.log_text();
        log.lines()
            .filter(|l| l.contains("listener up"))
            .filter_map(|l| {
                l.split("local=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .find(|a: &SocketAddr| *a != lb)
            .expect("the TCP service's listener")
    };
    let mut tcp = tokio::net::TcpStream::connect(tcp_listener).await.unwrap();
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tcp.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        tcp.read_exact(&mut back).await.unwrap();
    }

    let a = client("127.0.0.1").await;
    let sent: [&[u8]; 3] = [b"a", b"bb", b"ccc"];
    for bytes in sent {
        let reply = ask(&a, lb, bytes).await.expect("a reply");
        assert_eq!(reply, [b"h1:", bytes].concat());
    }
    let opened = Instant::now();
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    let list = listed(&base, "").await;
    assert_eq!(list.len(), 2, "{list:?}");
    let tcp_entry = list
        .iter()
        .find(|c| c["transport"] == "tcp")
        .expect("the TCP connection");
    let session = session_of(&list, a.local_addr().unwrap()).expect("the session");
    assert_ne!(session["id"], tcp_entry["id"]);
    assert_eq!(session["service"], "u");
    assert_eq!(session["group"], "g");
    assert_eq!(session["host"], "h1");
    assert_eq!(session["host_addr"], h1.to_string());
    assert_eq!(session["listener"], lb.to_string());
    assert_eq!(session["datagrams_in"], 3, "{session}");
    assert_eq!(session["datagrams_out"], 3, "{session}");
    assert_eq!(session["bytes_in"], 6, "{session}");
    assert_eq!(session["bytes_out"], 6 + 3 * 3, "{session}");
    let idle = session["idle_seconds"].as_f64().unwrap();
    let lived = opened.elapsed().as_secs_f64();
    assert!(
        (1.0..lived + 0.5).contains(&idle),
        "idle {idle} s: {session}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let age = now - session["since"].as_f64().unwrap();
    assert!((1.0..lived + 2.0).contains(&age), "age {age} s: {session}");
    assert!(tcp_entry.get("datagrams_in").is_none(), "{tcp_entry}");
    // Filters apply to sessions as to connections.
    assert_eq!(listed(&base, "?service=u").await.len(), 1);
    assert_eq!(listed(&base, "?service=u&host=h1").await.len(), 1);
    assert!(
        listed(&base, "?host=e")
            .await
            .iter()
            .all(|c| c["transport"] == "tcp")
    );
    // The page shows it, with a close button.
    let id = session["id"].as_u64().unwrap();
    let (status, page) = common::admin::get_as(&base, FULL, "/connections?service=u").await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!("<td class=\"n\">{id}</td><td>udp</td>")),
        "{page}"
    );
    assert!(page.contains("action=\"closeConnection\""), "{page}");

    // Closed by its id: gone when the call returns, counted and logged.
    let (status, body) = api(
        &base,
        reqwest::Method::DELETE,
        &format!("/api/v1/connections/{id}"),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert!(session_of(&listed(&base, "").await, a.local_addr().unwrap()).is_none());
    assert_eq!(metric(&txlb, "txlb_service_sessions_open").await, 0);
    let client_addr = a.local_addr().unwrap().to_string();
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            std::fs::read_to_string(&access)
                .unwrap_or_default()
                .lines()
                .any(|l| {
                    l.contains(&format!("client={client_addr} "))
                        && l.contains("bytes_in=6 bytes_out=15 ended=closed-by-admin")
                })
        })
        .await,
        "{}",
        std::fs::read_to_string(&access).unwrap_or_default()
    );
    let (status, body) = api(
        &base,
        reqwest::Method::DELETE,
        &format!("/api/v1/connections/{id}"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains(&format!("no open connection {id}")), "{body}");
    for bogus in ["999999999", "18446744073709551615", "0"] {
        let (status, body) = api(
            &base,
            reqwest::Method::DELETE,
            &format!("/api/v1/connections/{bogus}"),
        )
        .await;
        assert_eq!(status, 404, "{bogus}: {body}");
        assert!(body.contains("no open connection"), "{body}");
    }
    let (status, body) = api(&base, reqwest::Method::DELETE, "/api/v1/connections/x1").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("connection id"), "{body}");
    // The TCP connection was not touched.
    assert_eq!(listed(&base, "?service=t").await.len(), 1);

    // The client's next datagram opens a new session, with a new id.
    assert_eq!(
        ask(&a, lb, b"again").await.as_deref(),
        Some(&b"h1:again"[..])
    );
    assert_eq!(metric(&txlb, "txlb_service_sessions_total").await, 2);
    let list = listed(&base, "?service=u").await;
    let again = session_of(&list, a.local_addr().unwrap()).expect("a new session");
    let new_id = again["id"].as_u64().unwrap();
    assert!(new_id > id, "{again}");
    assert_eq!(again["datagrams_in"], 1, "{again}");
    // The legacy call closes it too.
    let (status, text) =
        common::admin::get_as(&base, FULL, &format!("/closeConnection?id={new_id}")).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(&format!("OK connection {new_id}")), "{text}");
    assert!(listed(&base, "?service=u").await.is_empty());
    assert_eq!(metric(&txlb, "txlb_service_sessions_open").await, 0);
}

/// While clients flood the service, list calls made six at a time with
/// three filters answer within a fraction of a second with every client's
/// session (so each time the relay answered, not the wait's bound), and the
/// flood's replies keep coming: no gap near the length of a call. Bounded:
/// 3 s of flood at most.
#[tokio::test]
async fn a_list_during_a_flood_answers_at_once_and_the_flood_goes_on() {
    const CLIENTS: usize = 8;
    let (echo, _) = udp_host("127.0.0.1", "").await;
    let txlb = Txlb::start_xml(&config("127.0.0.1:0", "", "roundr", &[("e", echo)]), None);
    let lb = txlb.listener();
    let base = admin_base(&txlb).await;
    let stop = Arc::new(AtomicBool::new(false));
    let replies = Arc::new(AtomicU64::new(0));
    // The longest time between two replies, in µs, while `watching`.
    let watching = Arc::new(AtomicBool::new(false));
    let longest_gap = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..CLIENTS {
        let socket = client("127.0.0.1").await;
        addrs.push(socket.local_addr().unwrap());
        let (stop, replies) = (stop.clone(), replies.clone());
        let (watching, longest_gap) = (watching.clone(), longest_gap.clone());
        clients.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(3);
            let payload = [7u8; 100];
            let mut buf = [0u8; 512];
            let mut last = Instant::now();
            while !stop.load(Relaxed) && Instant::now() < deadline {
                // A burst, then what came back of it.
                for _ in 0..16 {
                    let _ = socket.send_to(&payload, lb).await;
                }
                for _ in 0..16 {
                    match tokio::time::timeout(
                        Duration::from_millis(200),
                        socket.recv_from(&mut buf),
                    )
                    .await
                    {
                        Ok(Ok(_)) => {
                            replies.fetch_add(1, Relaxed);
                            let gap = last.elapsed().as_micros() as u64;
                            if watching.load(Relaxed) {
                                longest_gap.fetch_max(gap, Relaxed);
                            }
                            last = Instant::now();
                        }
                        _ => break,
                    }
                }
            }
        }));
    }
    // Every client has its session before the lists are asked for.
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            metric(&txlb, "txlb_service_sessions_open").await == CLIENTS as u64
        })
        .await
    );
    watching.store(true, Relaxed);
    let before = replies.load(Relaxed);
    let mut slowest = Duration::ZERO;
    // Ten rounds of six calls at once, with three filters (a relay makes
    // one list per turn, shared by the calls with its filter).
    for _ in 0..10 {
        let asked = Instant::now();
        let queries: [&'static str; 6] = ["", "?service=u", "?host=e", "", "?service=u", "?host=e"];
        let calls: Vec<_> = queries
            .iter()
            .map(|&q| {
                let base = base.clone();
                tokio::spawn(async move { listed(&base, q).await })
            })
            .collect();
        let mut lists = Vec::new();
        for call in calls {
            lists.push(call.await.unwrap());
        }
        slowest = slowest.max(asked.elapsed());
        for list in lists {
            for addr in &addrs {
                assert!(
                    session_of(&list, *addr).is_some(),
                    "{addr} missing from {list:?}"
                );
            }
            let moved: u64 = list
                .iter()
                .map(|c| c["datagrams_in"].as_u64().unwrap())
                .sum();
            assert!(moved > 0, "{list:?}");
        }
    }
    let during = replies.load(Relaxed) - before;
    watching.store(false, Relaxed);
    stop.store(true, Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let gap = Duration::from_micros(longest_gap.load(Relaxed));
    assert!(slowest < Duration::from_secs(1), "a list took {slowest:?}");
    assert!(during > 0, "no reply while the lists were asked for");
    assert!(
        gap < Duration::from_millis(500),
        "replies stalled for {gap:?}"
    );
    eprintln!(
        "slowest list {slowest:?}, longest gap between replies {gap:?}, {during} replies meanwhile"
    );
}

/// One look-up on the control socket at `socket`: the answer's JSON.
async fn look_up(socket: &std::path::Path, peer: SocketAddr) -> Value {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (read, mut write) = stream.into_split();
    let request = format!("{{\"peer\": \"{peer}\"}}\n");
    write.write_all(request.as_bytes()).await.unwrap();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await.unwrap();
    serde_json::from_str(&line).unwrap()
}

/// A host asks the control socket who is behind a datagram, by the address
/// it came from (txlb's socket to the host), and learns the real client, as
/// for a TCP connection; another address is not found. A drain with a
/// deadline ends the session left on the host at the deadline (logged
/// `closed-by-admin`), not at its 30 s session timeout.
#[tokio::test]
async fn a_udp_session_is_looked_up_by_its_host_side_address_and_ends_at_a_drain_deadline() {
    // A host that answers each datagram with the address it came from.
    let host = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let h1 = host.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((_, from)) = host.recv_from(&mut buf).await {
            let _ = host.send_to(from.to_string().as_bytes(), from).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let access = dir.path().join("access.log");
    let xml = config(
        "127.0.0.1:0",
        "sessionTimeout=\"30\"",
        "roundr",
        &[("h1", h1)],
    )
    .replace(
        "<admin>",
        &format!(
            "<control socket=\"{}\"/><logging access=\"{}\"/><admin>",
            socket.display(),
            access.display()
        ),
    );
    let txlb = Txlb::start_xml(&xml, None);
    let lb = txlb.listener();
    let base = admin_base(&txlb).await;
    txlb.wait_for_async("control socket up", 0).await;

    let a = client("127.0.0.1").await;
    let reply = ask(&a, lb, b"who am I").await.expect("a reply");
    let host_side: SocketAddr = String::from_utf8(reply).unwrap().parse().unwrap();
    let found = look_up(&socket, host_side).await;
    assert_eq!(
        found["client"],
        a.local_addr().unwrap().to_string(),
        "{found}"
    );
    assert_eq!(found["listener"], lb.to_string(), "{found}");
    assert_eq!(
        (&found["service"], &found["group"], &found["host"]),
        (&Value::from("u"), &Value::from("g"), &Value::from("h1")),
        "{found}"
    );
    // Asked again: the same answer (the port is known by now).
    assert_eq!(look_up(&socket, host_side).await, found);
    let elsewhere = SocketAddr::new(host_side.ip(), 1);
    let missing = look_up(&socket, elsewhere).await;
    assert!(
        missing["error"]
            .as_str()
            .is_some_and(|e| e.contains("no open connection")),
        "{missing}"
    );

    // Drained with a 0.3 s deadline: the silent session is there until it,
    // then ended.
    let (status, body) = api(
        &base,
        reqwest::Method::POST,
        "/api/v1/services/u/groups/g/hosts/h1/drain?deadline=0.3",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let client_addr = a.local_addr().unwrap();
    assert!(session_of(&listed(&base, "").await, client_addr).is_some());
    let drained = Instant::now();
    let mut ended = false;
    while drained.elapsed() < Duration::from_secs(5) {
        if session_of(&listed(&base, "").await, client_addr).is_none() {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ended, "the session outlived the drain's deadline");
    assert!(drained.elapsed() >= Duration::from_millis(200));
    let missing = look_up(&socket, host_side).await;
    assert!(missing["error"].is_string(), "{missing}");
    let logged = common::eventually(Duration::from_secs(3), || {
        let access = access.clone();
        async move {
            std::fs::read_to_string(&access)
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains(&client_addr.to_string()) && l.contains("closed-by-admin"))
        }
    })
    .await;
    assert!(logged, "no access log line ending closed-by-admin");
}
