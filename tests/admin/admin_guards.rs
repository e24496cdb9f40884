//! The real `txlb` binary's admin plane against hostile clients: a page whose
//! name was re-pointed at 127.0.0.1 (DNS rebinding), a user name that would
//! forge log lines, read-only users and the password hashes (pages, API and the
//! SSH console with the real OpenSSH client), changing calls sent as GET when the
//! server asks for POST, and idle admin and control connections under a low
//! descriptor limit while the data path keeps proxying.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use common::admin::{FULL, READONLY, client, get_as, user_lines};
use common::binary::Txlb;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Service `svc` over `hosts`, the admin web server on 127.0.0.1:0 with
/// `web_attrs` added to `<web>`, and `users` (`<user>` lines).
fn xml(hosts: &[(&str, SocketAddr)], web_attrs: &str, users: &str, extra: &str) -> String {
    let hosts = common::host_lines(hosts);
    format!(
        "<config>\n  <service name=\"svc\">\n    \
         <listen ip=\"127.0.0.1:0\"/>\n    <group name=\"g\" scheduler=\"roundr\" enable=\"true\">\n\
         {hosts}    </group>\n  </service>\n  <admin>\n    \
         <web listen=\"127.0.0.1:0\" enable=\"true\"{web_attrs}/>\n{users}  </admin>\n{extra}</config>\n"
    )
}

/// The address of the admin URL `http://IP:PORT/`.
fn addr_of(base: &str) -> SocketAddr {
    base.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// Sends one raw HTTP/1.1 request `METHOD target` with `headers` (each ending
/// in CRLF); returns the status and the body.
async fn raw(admin: SocketAddr, method: &str, target: &str, headers: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(admin).await.unwrap();
    let request = format!(
        "{method} {target} HTTP/1.1\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// The password hashes of `<user>` lines.
fn hashes_in(users: &str) -> Vec<String> {
    let hashes: Vec<String> = users
        .split("password=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect();
    assert!(!hashes.is_empty());
    hashes
}

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {token}\r\n")
}

/// Makes the legacy API call `call` as the full user, expecting success.
async fn change(base: &str, call: &str) {
    let (status, body) = get_as(base, FULL, call).await;
    assert_eq!(status, 200, "{call}: {body}");
}

/// GET /running.txt with `Host: host`: status and body.
async fn running_via(admin: SocketAddr, host: &str) -> (u16, String) {
    raw(admin, "GET", "/running.txt", &format!("Host: {host}\r\n")).await
}

#[tokio::test]
async fn a_rebound_name_is_refused_and_changes_without_users_need_a_loopback_host() {
    let a = named_backend("a", Hold::Close).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    // No <user>: the admin runs open on loopback, as `txlb demo` does.
    let config = xml(
        &[("a", a)],
        " allowedHosts=\"lb.test, other.test:9\"",
        "",
        "",
    );
    std::fs::write(&path, config).unwrap();
    let txlb = Txlb::start(&path, 1);
    let base = txlb.logged("admin web server up", "url").await;
    let admin = addr_of(&base);
    let port = admin.port();
    let add = |name: &str| format!("/addHost?service=svc&group=g&name={name}&ip=127.0.0.1:9");

    // The attack: evil.example now resolves to 127.0.0.1, so the browser sends
    // Host: evil.example:PORT and an Origin that matches it.
    let evil = format!("Host: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\n");
    let (status, body) = raw(admin, "GET", &add("x"), &evil).await;
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("not a name of this admin server"), "{body}");
    assert!(body.contains("allowedHosts"), "{body}");
    let (status, _) = raw(admin, "POST", "/api/v1/users", &evil).await;
    assert_eq!(status, 421);
    let (status, _) = raw(admin, "GET", "/running.txt", &evil).await;
    assert_eq!(status, 421, "even reading is refused");
    // The right name on another port is not this server either.
    let (status, _) = running_via(admin, "127.0.0.1:1").await;
    assert_eq!(status, 421);
    let (_, running) = running_via(admin, &format!("127.0.0.1:{port}")).await;
    assert!(!running.contains("host x "), "{running}");

    // Loopback names with the server's port read and change.
    for (host, name) in [
        (format!("127.0.0.1:{port}"), "l1"),
        (format!("localhost:{port}"), "l2"),
        (format!("LocalHost:{port}"), "l3"),
    ] {
        let (status, body) = raw(admin, "GET", &add(name), &format!("Host: {host}\r\n")).await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    // A listed name reads, but without users it may not change anything.
    for host in ["lb.test", &format!("lb.test:{port}"), "other.test:9"] {
        let (status, body) = running_via(admin, host).await;
        assert_eq!(status, 200, "{host}: {body}");
        let (status, body) = raw(admin, "GET", &add("y"), &format!("Host: {host}\r\n")).await;
        assert_eq!(status, 403, "{host}: {body}");
        assert!(body.contains("loopback Host"), "{body}");
    }
    let (status, _) = running_via(admin, "other.test:10").await;
    assert_eq!(status, 421);
    // The machine's own name with the port reads too.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let h = format!("{}:{port}", hostname.trim());
    let (status, body) = running_via(admin, &h).await;
    assert_eq!(status, 200, "{h}: {body}");
    let (_, running) = running_via(admin, &format!("[::1]:{port}")).await;
    assert!(
        running.contains("host l1 ") && !running.contains("host y "),
        "{running}"
    );
    let log = txlb.log_text();
    assert!(log.contains("foreign Host refused"), "{log}");
}

#[tokio::test]
async fn a_user_name_cannot_forge_log_lines() {
    let a = named_backend("a", Hold::Close).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    std::fs::write(&path, xml(&[("a", a)], "", &user_lines(), "")).unwrap();
    let txlb = Txlb::start(&path, 1);
    let base = txlb.logged("admin web server up", "url").await;
    let admin = addr_of(&base);
    // Basic auth ends the name at the first colon: a forged line without one.
    let forged = "x\n2026-01-01T00.00.00Z  INFO txlb admin change user=admin FORGED";
    let headers = format!("Host: {admin}\r\n{}", basic(forged, "wrong"));
    let (status, _) = raw(admin, "GET", "/running.txt", &headers).await;
    assert_eq!(status, 401);
    let line = txlb.wait_for_async("admin login failed", 0).await;
    assert!(
        line.contains("FORGED"),
        "the name is logged on its line: {line}"
    );
    assert!(line.contains("x\\n2026"), "escaped: {line}");
    let log = txlb.log_text();
    let own_lines = log.lines().filter(|l| l.contains("FORGED")).count();
    assert_eq!(own_lines, 1, "{log}");
}

#[tokio::test]
async fn read_only_users_see_no_password_hash() {
    let a = named_backend("a", Hold::Close).await;
    let b = named_backend("b", Hold::Close).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    let users = user_lines();
    std::fs::write(&path, xml(&[("a", a)], "", &users, "")).unwrap();
    let txlb = Txlb::start(&path, 1);
    let base = txlb.logged("admin web server up", "url").await;
    let hashes = hashes_in(&users);
    // A conflict whose differences hold user lines: a user added at run time,
    // and a user line edited on disk.
    change(&base, &format!("addHost?service=svc&group=g&name=b&ip={b}")).await;
    change(&base, "addUser?name=ops&password=pw-12345&access=full").await;
    let planted =
        "    <user name=\"hand\" password=\"$1$handsalt$planted.hash.in.file\" access=\"full\"/>\n";
    let edited = xml(&[("a", a)], "", &format!("{users}{planted}"), "");
    std::fs::write(&path, &edited).unwrap();
    let (status, _) = get_as(&base, FULL, "saveConfig").await;
    assert_eq!(status, 409);

    let pages = [
        "running.xml",
        "config.xml",
        "diff",
        "running",
        "api/v1/config/status",
    ];
    for page in pages {
        let (status, body) = get_as(&base, READONLY, page).await;
        assert_eq!(status, 200, "{page}: {body}");
        for hash in hashes
            .iter()
            .map(String::as_str)
            .chain(["$1$handsalt", "$6$"])
        {
            assert!(!body.contains(hash), "{page} shows {hash}: {body}");
        }
        assert!(body.contains('…'), "{page}: {body}");
    }
    // Full users still read them (to copy a user between files).
    let (_, xml) = get_as(&base, FULL, "running.xml").await;
    assert!(xml.contains(&hashes[0]), "{xml}");
    let (_, status) = get_as(&base, FULL, "api/v1/config/status").await;
    assert!(status.contains("$1$handsalt"), "{status}");
    let v: Value =
        serde_json::from_str(&get_as(&base, READONLY, "api/v1/config/status").await.1).unwrap();
    assert!(
        v["conflict"]["file_vs_boot"]
            .as_str()
            .unwrap()
            .contains("name=\"hand\" password=\"…\""),
        "{v}"
    );
}

/// The SSH console's `show config` (XML, TOML, JSON) and `show diff` for a
/// read-only key, with the real OpenSSH client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_console_users_see_no_password_hash() {
    if common::ssh::ssh_missing() {
        return;
    }
    let a = named_backend("a", Hold::Close).await;
    let keys = common::ssh::Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    let users = user_lines();
    let ssh = format!(
        "    <ssh listen=\"127.0.0.1:0\" authorizedKeys=\"{}\"/>\n{users}",
        keys.authorized.display()
    );
    std::fs::write(&path, xml(&[("a", a)], "", &ssh, "")).unwrap();
    let txlb = Txlb::start(&path, 1);
    let base = txlb.logged("admin web server up", "url").await;
    let port: SocketAddr = txlb
        .logged("SSH console up", "local")
        .await
        .parse()
        .unwrap();
    change(&base, "addUser?name=ops&password=pw-12345&access=full").await;
    // Each test key logs in as its own user (tests/common/ssh.rs: the read-only
    // key is ops's, the full one admin's).
    let run = |key: std::path::PathBuf, command: &'static str| {
        let known = keys.known_hosts.clone();
        let user = if key == keys.readonly { "ops" } else { "admin" };
        async move { common::ssh::ssh(port.port(), &key, &known, user, command, None).await }
    };
    for command in [
        "show config",
        "show config --toml",
        "show config --json",
        "show diff",
    ] {
        let ran = run(keys.readonly.clone(), command).await;
        assert_eq!(ran.status, 0, "{command}: {ran:?}");
        for hash in hashes_in(&users).iter().map(String::as_str).chain(["$6$"]) {
            assert!(
                !ran.stdout.contains(hash),
                "{command} shows {hash}: {}",
                ran.stdout
            );
        }
        assert!(ran.stdout.contains('…'), "{command}: {}", ran.stdout);
    }
    let ran = run(keys.full.clone(), "show config").await;
    assert!(
        ran.stdout.contains("$6$"),
        "full access still sees the hashes: {ran:?}"
    );
}

#[tokio::test]
async fn changes_require_post_when_the_server_says_so() {
    let a = named_backend("a", Hold::Close).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    std::fs::write(
        &path,
        xml(
            &[("a", a)],
            " changesRequirePost=\"true\"",
            &user_lines(),
            "",
        ),
    )
    .unwrap();
    let txlb = Txlb::start(&path, 1);
    let base = txlb.logged("admin web server up", "url").await;
    let add = "addHost?service=svc&group=g&name=c&ip=127.0.0.1:9";
    let (status, body) = get_as(&base, FULL, add).await;
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("send it as POST"), "{body}");
    let (_, running) = get_as(&base, FULL, "running.txt").await;
    assert!(!running.contains("host c "), "{running}");
    // Reading by GET and changing by POST still work.
    let response = client()
        .post(format!("{base}addHost"))
        .basic_auth(FULL.0, Some(FULL.1))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("service=svc&group=g&name=c&ip=127.0.0.1:9")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let (_, running) = get_as(&base, FULL, "running.txt").await;
    assert!(running.contains("host c "), "{running}");
}

/// Idle management connections past the descriptor budget: with a limit of 128
/// descriptors, 100 idle admin connections and 300 idle control connections
/// are opened; the data path still proxies, and the admin answers again once
/// they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_admin_and_control_connections_leave_the_data_path_its_descriptors() {
    let a = named_backend("a", Hold::Close).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    let socket = dir.path().join("control.sock");
    let control = format!("  <control socket=\"{}\"/>\n", socket.display());
    std::fs::write(&path, xml(&[("a", a)], "", &user_lines(), &control)).unwrap();
    let txlb = Txlb::spawn(Txlb::command_with_nofile(&path, 1, 1, "info", 128));
    let base = txlb.logged("admin web server up", "url").await;
    let admin = addr_of(&base);
    let listener = txlb.listener();
    txlb.wait_for_async("control socket up", 0).await;

    let mut idle_admin = Vec::new();
    let mut idle_control = Vec::new();
    // Admin connections past the cap wait in the listen backlog (128 here),
    // holding none of txlb's descriptors: 100 of them stay within it.
    for _ in 0..100 {
        idle_admin.push(TcpStream::connect(admin).await.unwrap());
    }
    for _ in 0..300 {
        if let Ok(s) = tokio::net::UnixStream::connect(&socket).await {
            idle_control.push(s);
        }
    }
    // Let the server accept (or refuse) every one of them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..20 {
        let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(listener))
            .await
            .unwrap_or_else(|_| panic!("proxied connection {i} not accepted"))
            .unwrap();
        let mut name = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut name))
            .await
            .unwrap_or_else(|_| panic!("proxied connection {i} got no answer"))
            .unwrap();
        assert_eq!(name.trim(), "a", "proxied connection {i}");
    }
    // Over the cap, a new admin request waits to be accepted: it is answered
    // once the idle connections are gone.
    let waiting = tokio::spawn({
        let base = base.clone();
        async move { get_as(&base, FULL, "running.txt").await.0 }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "answered past the cap");
    drop(idle_admin);
    drop(idle_control);
    let waited = tokio::time::timeout(Duration::from_secs(5), waiting).await;
    let waited = waited.expect("answered once the idle connections are gone");
    assert_eq!(waited.unwrap(), 200);
    // Many quick requests at once are all answered (connections past half
    // the cap are not kept alive, so they come and go).
    let many: Vec<_> = (0..100)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move { get_as(&base, FULL, "running.txt").await.0 })
        })
        .collect();
    for answer in many {
        assert_eq!(answer.await.unwrap(), 200);
    }
    let log = txlb.log_text();
    assert!(!log.contains("Too many open files"), "{log}");
}

/// Issue 19 item 3: an absolute-form request target names the host (RFC 9112:
/// it overrides `Host`), so its authority is checked too; a request with two
/// `Host` headers is refused with 400 (RFC 9112), whichever comes first.
#[tokio::test]
async fn absolute_form_targets_and_repeated_hosts_are_checked() {
    let a = named_backend("a", Hold::Close).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    // No <user>: the admin runs open on loopback, as `txlb demo` does.
    std::fs::write(&path, xml(&[("a", a)], "", "", "")).unwrap();
    let txlb = Txlb::start(&path, 1);
    let base = txlb.logged("admin web server up", "url").await;
    let admin = addr_of(&base);
    let port = admin.port();
    let own = format!("Host: 127.0.0.1:{port}\r\n");
    let add = |name: &str| format!("/addHost?service=svc&group=g&name={name}&ip=127.0.0.1:9");

    let evil = format!("http://evil.com:{port}{}", add("x"));
    let (status, body) = raw(admin, "GET", &evil, &own).await;
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("evil.com"), "{body}");
    for twice in [
        format!("{own}Host: evil.com:{port}\r\n"),
        format!("Host: evil.com:{port}\r\n{own}"),
        format!("{own}{own}"),
    ] {
        let (status, body) = raw(admin, "GET", &add("y"), &twice).await;
        assert_eq!(status, 400, "{twice}: {body}");
        assert!(body.contains("more than one Host"), "{body}");
    }
    // An absolute-form target naming this server is served as usual.
    let (status, body) = raw(
        admin,
        "GET",
        &format!("http://127.0.0.1:{port}{}", add("z")),
        &own,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, running) = raw(admin, "GET", "/running.txt", &own).await;
    assert!(running.contains("host z "), "{running}");
    assert!(
        !running.contains("host x ") && !running.contains("host y "),
        "{running}"
    );
}
