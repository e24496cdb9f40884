//! Hostile and careless configuration input against the real `txlb` binary:
//! files nested deeply enough to overflow a stack (`txlb check`, SIGHUP reload,
//! `saveConfig`), write-back into a directory with planted symbolic links, and
//! names or addresses no file, API or console may bring in.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::admin::{FULL, client, get_as};
use common::binary::Txlb;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Nesting far past any stack: what the 1.4 MB file held.
const DEEP: usize = 200_000;

/// Service `svc` on 127.0.0.1:0 over `backend`, the admin web server on
/// 127.0.0.1:0 with the test users.
fn xml(backend: SocketAddr) -> String {
    format!(
        "<config>\n  <service name=\"svc\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
         <group name=\"g\" scheduler=\"roundr\" enable=\"true\">\n{}    </group>\n  </service>\n  \
         <admin>\n    <web listen=\"127.0.0.1:0\"/>\n{}  </admin>\n</config>\n",
        host_lines(&[("a", backend)]),
        common::admin::user_lines()
    )
}

/// `text` with `DEEP` nested elements before its closing `</config>`, on the
/// last line.
fn deep_xml(text: &str) -> String {
    let nested = format!("{}{}", "<x>".repeat(DEEP), "</x>".repeat(DEEP));
    text.replace("</config>\n", &format!("{nested}</config>\n"))
}

/// Asserts that `txlb check --config PATH` exits with 1 and says `says`.
fn check_refuses(path: &Path, says: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_txlb"))
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(says), "{says}\n{stderr}");
}

/// `txlb` running [`xml`] over an echo backend from `lb.xml` in `dir`: the
/// backend, the file, the process and its admin URL.
async fn start_in(dir: &Path) -> (SocketAddr, PathBuf, Txlb, String) {
    let backend = echo_backend().await;
    let path = dir.join("lb.xml");
    std::fs::write(&path, xml(backend)).unwrap();
    let txlb = Txlb::start(&path, 1);
    let base = txlb.logged("admin web server up", "url").await;
    (backend, path, txlb, base)
}

/// Sends a line through the balancer and expects it echoed.
async fn proxies(listener: SocketAddr) {
    let mut stream = tokio::net::TcpStream::connect(listener).await.unwrap();
    stream.write_all(b"still here\n").await.unwrap();
    let mut buf = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut buf))
        .await
        .expect("echo within 10 s")
        .unwrap();
    assert_eq!(&buf, b"still here\n");
}

#[test]
fn check_refuses_deep_files_with_their_location() {
    let dir = tempfile::tempdir().unwrap();
    let base = xml(closed_port());
    let lines = base.lines().count();
    let path = dir.path().join("deep.xml");
    std::fs::write(&path, deep_xml(&base)).unwrap();
    // <config> is level 1: the 64th <x> is one too many.
    let at = format!(
        "deep.xml:{lines}:{}: elements nested too deeply",
        1 + 63 * 3
    );
    check_refuses(&path, &at);

    let toml = dir.path().join("deep.toml");
    let text = format!(
        "[[service]]\nname = \"s\"\nlisten = [\"127.0.0.1:0\"]\n[[service.group]]\nname = \"g\"\n\
         enable = true\nhosts = [{{ name = \"h\", ip = \"127.0.0.1:9\" }}]\n\
         [resolver]\nnameserver = {}{}\n",
        "[".repeat(DEEP),
        "]".repeat(DEEP)
    );
    std::fs::write(&toml, text).unwrap();
    check_refuses(
        &toml,
        "deep.toml:9:77: tables, arrays or dotted keys nested too deeply",
    );
}

#[tokio::test]
async fn a_deep_file_never_ends_the_running_balancer() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, path, mut txlb, base) = start_in(dir.path()).await;
    let listener: SocketAddr = txlb.logged("listener up", "local").await.parse().unwrap();
    proxies(listener).await;

    std::fs::write(&path, deep_xml(&xml(backend))).unwrap();
    let skip = txlb.log_len();
    txlb.signal("HUP");
    let refused = txlb.wait_for_async("reload refused", skip).await;
    assert!(refused.contains("elements nested too deeply"), "{refused}");
    assert!(refused.contains("lb.xml:"), "{refused}");
    assert!(txlb.child.try_wait().unwrap().is_none(), "txlb ended");
    proxies(listener).await;

    // saveConfig reads the file again before writing: the deep text is a
    // conflict, not a crash.
    let (status, body) = legacy(&base, "saveConfig").await;
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("edited on disk"), "{body}");
    assert!(txlb.child.try_wait().unwrap().is_none(), "txlb ended");
    proxies(listener).await;
    assert!(txlb.terminate().success());
}

/// A GET of the legacy API as the full user: status and body.
async fn legacy(base: &str, call: &str) -> (u16, String) {
    get_as(base, FULL, call).await
}

#[tokio::test]
async fn save_config_never_writes_through_planted_links() {
    use std::os::unix::fs::PermissionsExt as _;
    let backend = echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.xml");
    std::fs::write(&path, xml(backend)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let txlb = Txlb::start(&path, 1);
    let base = txlb.logged("admin web server up", "url").await;
    // Links where a writer might put its temporary files, to files it must
    // not touch.
    let victims = tempfile::tempdir().unwrap();
    let mut planted = Vec::new();
    for name in ["config.xml.tmp", "config.xml.bak.tmp"] {
        let victim = victims.path().join(name);
        std::fs::write(&victim, "precious\n").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        planted.push(victim);
    }
    let (status, body) = legacy(
        &base,
        &format!("addHost?service=svc&group=g&name=b&ip={backend}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = legacy(&base, "saveConfig").await;
    assert_eq!(status, 200, "{body}");

    for victim in &planted {
        assert_eq!(std::fs::read_to_string(victim).unwrap(), "precious\n");
        let mode = std::fs::metadata(victim).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    for file in [path.clone(), dir.path().join("config.xml.bak")] {
        let meta = std::fs::symlink_metadata(&file).unwrap();
        assert!(meta.file_type().is_file(), "{}", file.display());
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o640,
            "{}",
            file.display()
        );
    }
    let saved = std::fs::read_to_string(&path).unwrap();
    assert!(saved.contains("name=\"b\""), "{saved}");
}

/// A one-service XML file with `host` as the `<host>` element and `user` as a
/// `<user>` (empty: none).
fn xml_with(service: &str, host: &str, user: &str) -> String {
    format!(
        "<config>\n<service name=\"{service}\">\n<listen ip=\"127.0.0.1:0\"/>\n\
         <group name=\"g\" enable=\"true\">\n{host}\n</group>\n</service>\n\
         <admin>\n{user}\n</admin>\n</config>\n"
    )
}

#[test]
fn files_with_bad_names_or_addresses_are_refused_with_their_location() {
    let dir = tempfile::tempdir().unwrap();
    let ok_host = "<host name=\"h\" ip=\"127.0.0.1:9\"/>";
    let long = "s".repeat(300);
    let cases = [
        // (service, host, user, expected "LINE:COL: message" start)
        (
            "svc",
            "<host name=\"a\u{1b}[31m\" ip=\"127.0.0.1:9\"/>",
            "",
            "5:13: bad host name \"a\\u{1b}[31m\": contains U+001B (a control character)",
        ),
        (
            "svc",
            "<host name=\"a\u{7f}\" ip=\"127.0.0.1:9\"/>",
            "",
            "5:13: bad host name",
        ),
        (
            "svc",
            "<host name=\"a\u{fffe}\" ip=\"127.0.0.1:9\"/>",
            "",
            "5:13: bad host name",
        ),
        (&long, ok_host, "", "2:16: bad service name \"sss"),
        (
            "svc",
            ok_host,
            "<user name=\"a:b\" password=\"x\"/>",
            "9:13: bad user name \"a:b\": contains ':'",
        ),
        (
            "svc",
            "<host name=\"h\" ip=\"a@127.0.0.1:9\"/>",
            "",
            "5:20: bad ip \"a@127.0.0.1:9\": host \"a@127.0.0.1\" contains '@'",
        ),
    ];
    for (i, (service, host, user, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.xml"));
        std::fs::write(&path, xml_with(service, host, user)).unwrap();
        check_refuses(&path, &format!("bad{i}.xml:{expected}"));
    }
    // TOML escapes reach the same rule, located at the value.
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[service]]\nname = \"s\"\nlisten = [\"127.0.0.1:0\"]\n[[service.group]]\n\
         name = \"g\\u0000\"\nenable = true\nhosts = [{ name = \"h\", ip = \"127.0.0.1:9\" }]\n",
    )
    .unwrap();
    check_refuses(
        &path,
        "bad.toml:5:9: bad group name \"g\\0\": contains U+0000",
    );
}

#[tokio::test]
async fn apis_refuse_bad_names_and_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, _txlb, base) = start_in(dir.path()).await;

    // The legacy API: (call, what the refusal says).
    for (call, says) in [
        (
            "addHost?service=svc&group=g&name=a%1B%5B2J&ip=127.0.0.1:9",
            "bad host name",
        ),
        (
            "addHost?service=svc&group=g&name=a%0D%0Ab&ip=127.0.0.1:9",
            "bad host name",
        ),
        (
            "addHost?service=svc&group=g&name=a%EF%BF%BE&ip=127.0.0.1:9",
            "noncharacter",
        ),
        (
            "addHost?service=svc&group=g&name=ok&ip=a@127.0.0.1:9",
            "contains '@'",
        ),
        ("newGroup?service=svc&group=g%00", "bad group name"),
        ("addUser?name=a:b&password=pw", "bad user name"),
        // (Parameters are trimmed: spaces are no password at all.)
        ("addUser?name=ok&password=%20%20%20", "\"password\""),
        (
            &format!("addUser?name={}&password=pw", "u".repeat(300)),
            "300 characters long",
        ),
    ] {
        let (status, body) = legacy(&base, call).await;
        assert_eq!(status, 400, "{call}: {body}");
        assert!(body.contains(says), "{call}: {body}");
    }

    // The JSON API.
    let json = |path: &str, body: serde_json::Value| {
        client()
            .post(format!("{base}api/v1/{path}"))
            .basic_auth(FULL.0, Some(FULL.1))
            .json(&body)
            .send()
    };
    for (path, body, says) in [
        (
            "services/svc/groups/g/hosts",
            serde_json::json!({"name": "a\u{1b}]0;owned\u{7}", "ip": "127.0.0.1:9"}),
            "bad host name",
        ),
        (
            "services/svc/groups/g/hosts",
            serde_json::json!({"name": "ok", "ip": "a@127.0.0.1:9"}),
            "contains '@'",
        ),
        (
            "services/svc/groups",
            serde_json::json!({"name": "g\u{202e}"}),
            "bad group name",
        ),
        (
            "users",
            serde_json::json!({"name": "a b", "password": "pw"}),
            "bad user name",
        ),
        (
            "users",
            serde_json::json!({"name": "ok", "password": "  "}),
            "empty or only spaces",
        ),
    ] {
        let response = json(path, body.clone()).await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, 400, "{path} {body}: {text}");
        assert!(text.contains(says), "{path} {body}: {text}");
    }

    // Nothing of it reached the running configuration.
    let (status, running) = legacy(&base, "running.txt").await;
    assert_eq!(status, 200);
    assert!(!running.contains("ok"), "{running}");
    assert!(!running.contains('\u{1b}'), "{running}");
}

/// One service over `n` hosts (the first `backend`, the others on addresses
/// nothing listens on, in a standby group), the admin web server on
/// 127.0.0.1:0.
fn big_xml(backend: SocketAddr, n: usize) -> String {
    let mut hosts = String::with_capacity(48 * n);
    for i in 0..n {
        hosts.push_str(&format!(
            "<host name=\"h{i}\" ip=\"10.{}.{}.{}:80\"/>\n",
            i >> 16 & 255,
            i >> 8 & 255,
            i & 255
        ));
    }
    xml(backend).replace(
        "  </service>",
        &format!("<group name=\"standby\">\n{hosts}</group>\n  </service>"),
    )
}

#[tokio::test]
async fn the_admin_plane_answers_while_a_big_reload_runs() {
    let _heavy = common::heavy().await;
    let dir = tempfile::tempdir().unwrap();
    let (backend, path, txlb, base) = start_in(dir.path()).await;
    let listener: SocketAddr = txlb.logged("listener up", "local").await.parse().unwrap();
    let http = client();
    let ask = || async {
        let start = std::time::Instant::now();
        let response = http
            .get(format!("{base}api/v1/openapi.json"))
            .basic_auth(FULL.0, Some(FULL.1))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        start.elapsed()
    };
    ask().await;

    // 100,000 hosts to read, check and apply, and a new listener on a port
    // taken (without SO_REUSEPORT) at the very end of the apply: the reload is
    // refused after all the work, and the running configuration (small, so
    // nothing else about the admin plane changes) stays.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = big_xml(backend, 100_000).replace(
        "<listen ip=\"127.0.0.1:0\"/>",
        &format!(
            "<listen ip=\"127.0.0.1:0\"/><listen ip=\"{}\"/>",
            taken.local_addr().unwrap()
        ),
    );
    std::fs::write(&path, text).unwrap();
    let skip = txlb.log_len();
    txlb.signal("HUP");
    // Ask all along the reload: reading, checking and applying 100,000 hosts
    // ran on the admin plane's thread and stalled it for seconds.
    let mut slowest = Duration::ZERO;
    let mut asked = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let refused = loop {
        slowest = slowest.max(ask().await);
        asked += 1;
        let log = txlb.log.lock().unwrap()[skip..].join("\n");
        if log.contains("reload refused") {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reload not done in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(refused.contains("cannot listen on"), "{refused}");
    assert!(asked > 5, "the reload took only {asked} answers");
    assert!(
        slowest < Duration::from_millis(750),
        "an answer took {slowest:?}"
    );
    proxies(listener).await;
}

#[tokio::test]
async fn embedding_applications_are_held_to_the_same_name_rule() {
    use txlb::config::HostAddress;
    let backend = echo_backend().await;
    let mut bad = config(
        txlb::scheduler::SchedulerKind::RoundRobin,
        vec![host("a\nforged line", backend, 1)],
    );
    let error = txlb::Balancer::start(bad.clone()).await.unwrap_err();
    assert!(error.to_string().contains("bad host name"), "{error}");
    bad.services[0].groups[0].hosts.edit(0).name = "a".into();
    let balancer = txlb::Balancer::start(bad).await.unwrap();
    let mut odd = host("b", backend, 1);
    odd.address = HostAddress {
        host: "a@127.0.0.1".into(),
        port: 9,
    };
    let error = balancer
        .apply(txlb::Command::AddHost {
            service: "svc".into(),
            group: "g".into(),
            host: odd,
        })
        .await
        .unwrap_err();
    assert!(error.to_string().contains("contains '@'"), "{error}");
    balancer.shutdown(Duration::ZERO).await;
}
