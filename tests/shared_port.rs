//! A listen address another process serves is refused, never shared: a second
//! `txlb run` on it exits with an error naming it, and a listener added live
//! (JSON API, SIGHUP reload) onto it is refused while the running ones stay.
//! Most instances here run two workers, so each binds with SO_REUSEPORT: the
//! case where the kernel would otherwise let the second one in. An "every
//! address" listener is refused too when another program holds only its IPv6
//! side, rather than falling back to IPv4 alone.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::admin::{FULL, client};
use common::binary::Txlb;
use common::*;
use serde_json::{Value, json};

/// `txlb run --workers 2` on `config`, its log collected.
fn start(config: &Path) -> Txlb {
    start_workers(config, 2)
}

/// `txlb run --workers WORKERS` on `config`, its log collected.
fn start_workers(config: &Path, workers: u32) -> Txlb {
    let mut child = Command::new(env!("CARGO_BIN_EXE_txlb"))
        .args(["run", "--workers", &workers.to_string(), "--grace", "1"])
        .arg("--config")
        .arg(config)
        .env("TXLB_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    Txlb { child, log }
}

/// A port free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Service `svc` listening on each of `listens`, over host `a`; with the admin
/// web server on 127.0.0.1:0 when `admin`.
fn write_config(dir: &Path, name: &str, listens: &[String], a: SocketAddr, admin: bool) -> PathBuf {
    let listens: String = listens
        .iter()
        .map(|l| format!("    <listen ip=\"{l}\"/>\n"))
        .collect();
    let admin = if admin {
        format!(
            "  <admin>\n    <web listen=\"127.0.0.1:0\" enable=\"true\"/>\n{}  </admin>\n",
            common::admin::user_lines()
        )
    } else {
        String::new()
    };
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "<config>\n  <service name=\"svc\">\n{listens}    <group name=\"g\" enable=\"true\">\n\
             {}    </group>\n  </service>\n{admin}</config>\n",
            common::host_lines(&[("a", a)])
        ),
    )
    .unwrap();
    path
}

/// The exit status of `txlb`, waiting at most 10 s.
fn exit_status(txlb: &mut Txlb) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = txlb.child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[tokio::test]
async fn a_second_instance_on_the_same_address_exits_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = named_backend("a", Hold::Close).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let first = start(&write_config(
        dir.path(),
        "first.xml",
        std::slice::from_ref(&listen),
        a,
        false,
    ));
    first.wait_for_async("listener up", 0).await;
    let mut second = start(&write_config(
        dir.path(),
        "second.xml",
        std::slice::from_ref(&listen),
        a,
        false,
    ));
    let status = exit_status(&mut second);
    assert!(
        status.is_some_and(|s| !s.success()),
        "the second instance did not refuse {listen}: {status:?}\n{}",
        second.log_text()
    );
    // The log is read by a thread that may not have reached the last line.
    let refused = second.wait_for_async("cannot listen on", 0).await;
    assert!(
        refused.contains(&format!("cannot listen on {listen}"))
            && refused.contains("in use by another program"),
        "{refused}"
    );
    // The first one still serves every client.
    let addr: SocketAddr = listen.parse().unwrap();
    for _ in 0..4 {
        let (seen, _) = tokio::time::timeout(Duration::from_secs(2), which_backend(addr))
            .await
            .unwrap();
        assert_eq!(seen, "a");
    }
}

#[tokio::test]
async fn a_listener_added_live_onto_an_address_another_process_serves_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = named_backend("a", Hold::Close).await;
    let taken = format!("127.0.0.1:{}", free_port());
    let first = start(&write_config(
        dir.path(),
        "first.xml",
        std::slice::from_ref(&taken),
        a,
        false,
    ));
    first.wait_for_async("listener up", 0).await;
    let own = "127.0.0.1:0".to_string();
    let file = write_config(
        dir.path(),
        "second.xml",
        std::slice::from_ref(&own),
        a,
        true,
    );
    let second = start(&file);
    let admin = value_after(
        &second.wait_for_async("admin web server up", 0).await,
        "url",
    );
    let admin = admin.trim_end_matches('/');
    let listeners_url = format!("{admin}/api/v1/services/svc/listeners");

    // The JSON API: refused, naming the address; nothing changed.
    let response = client()
        .post(&listeners_url)
        .basic_auth(FULL.0, Some(FULL.1))
        .json(&json!({ "listen": taken }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 409, "{body}\n{}", second.log_text());
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&taken) && message.contains("in use"),
        "{body}"
    );
    let listeners: Value = client()
        .get(&listeners_url)
        .basic_auth(FULL.0, Some(FULL.1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listeners.as_array().map(Vec::len), Some(1), "{listeners}");

    // A reload of a file that adds it: refused the same way.
    write_config(dir.path(), "second.xml", &[own, taken.clone()], a, true);
    let skip = second.log_len();
    second.signal("HUP");
    let refused = second.wait_for_async("reload refused", skip).await;
    assert!(refused.contains(&taken), "{refused}");

    // The first instance still serves every client on it.
    let addr: SocketAddr = taken.parse().unwrap();
    for _ in 0..4 {
        let (seen, _) = tokio::time::timeout(Duration::from_secs(2), which_backend(addr))
            .await
            .unwrap();
        assert_eq!(seen, "a");
    }
}

/// A socket of "another program" listening on `[::]:PORT` for IPv6 only
/// (IPV6_V6ONLY), on a port whose IPv4 side is free.
fn ipv6_only_listener() -> (socket2::Socket, u16) {
    use socket2::{Domain, Socket, Type};
    for _ in 0..20 {
        let socket = Socket::new(Domain::IPV6, Type::STREAM, None).unwrap();
        socket.set_only_v6(true).unwrap();
        let any: SocketAddr = "[::]:0".parse().unwrap();
        socket.bind(&any.into()).unwrap();
        socket.listen(16).unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return (socket, port);
        }
    }
    panic!("no port free on IPv4 beside an IPv6-only one");
}

#[tokio::test]
async fn every_address_is_refused_when_another_program_holds_its_ipv6_side() {
    let dir = tempfile::tempdir().unwrap();
    let a = named_backend("a", Hold::Close).await;
    let (_other, port) = ipv6_only_listener();
    // Every way of writing "every address", with SO_REUSEPORT (two workers)
    // and without (one).
    for (form, workers) in [("*", 2), ("[::]", 2), ("0.0.0.0", 2), ("*", 1)] {
        let listen = format!("{form}:{port}");
        let mut txlb = start_workers(
            &write_config(
                dir.path(),
                "every.xml",
                std::slice::from_ref(&listen),
                a,
                false,
            ),
            workers,
        );
        let status = exit_status(&mut txlb);
        assert!(
            status.is_some_and(|s| !s.success()),
            "{listen} with {workers} worker(s) was not refused: {status:?}\n{}",
            txlb.log_text()
        );
        // The log is read by a thread that may not have reached the last line.
        let refused = txlb.wait_for_async("cannot listen on", 0).await;
        assert!(
            refused.contains(&format!("cannot listen on *:{port}"))
                && refused.contains("in use by another program"),
            "{listen} with {workers} worker(s):\n{refused}"
        );
    }
}

#[tokio::test]
async fn every_address_added_live_is_refused_when_another_program_holds_its_ipv6_side() {
    let dir = tempfile::tempdir().unwrap();
    let a = named_backend("a", Hold::Close).await;
    let (_other, port) = ipv6_only_listener();
    let own = "127.0.0.1:0".to_string();
    let txlb = start(&write_config(
        dir.path(),
        "own.xml",
        std::slice::from_ref(&own),
        a,
        true,
    ));
    let admin = value_after(&txlb.wait_for_async("admin web server up", 0).await, "url");
    let admin = admin.trim_end_matches('/');
    // The legacy API, as txLoadBalancer's scripts call it.
    let response = client()
        .get(format!("{admin}/addListener?service=svc&listen=*:{port}"))
        .basic_auth(FULL.0, Some(FULL.1))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 409, "{text}\n{}", txlb.log_text());
    assert!(
        text.contains(&format!("*:{port}")) && text.contains("in use"),
        "{text}"
    );
    let listeners: Value = client()
        .get(format!("{admin}/api/v1/services/svc/listeners"))
        .basic_auth(FULL.0, Some(FULL.1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listeners.as_array().map(Vec::len), Some(1), "{listeners}");
    // Nothing of txlb's listens on the port's IPv4 side.
    assert!(TcpListener::bind(("0.0.0.0", port)).is_ok());
}

#[tokio::test]
async fn an_admin_plane_on_every_address_is_refused_when_another_program_holds_its_ipv6_side() {
    let dir = tempfile::tempdir().unwrap();
    let a = named_backend("a", Hold::Close).await;
    let (_other, port) = ipv6_only_listener();
    let file = write_config(dir.path(), "admin.xml", &["127.0.0.1:0".into()], a, true);
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("127.0.0.1:0\" enable", &format!("*:{port}\" enable")),
    )
    .unwrap();
    let mut txlb = start(&file);
    let status = exit_status(&mut txlb);
    assert!(
        status.is_some_and(|s| !s.success()),
        "the admin web server on *:{port} was not refused: {status:?}\n{}",
        txlb.log_text()
    );
    let refused = txlb.wait_for_async("cannot listen on", 0).await;
    assert!(
        refused.contains(&format!("*:{port}")) && refused.contains("in use"),
        "{refused}"
    );
}

/// The value after `key=` on `line`.
fn value_after(line: &str, key: &str) -> String {
    let rest = line
        .split(&format!("{key}="))
        .nth(1)
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"));
    rest.split_whitespace().next().unwrap().to_string()
}
