//! Hostile and careless configuration input against the real `txlb` binary:
//! files nested deeply enough to overflow a stack (`txlb check`, SIGHUP reload,
//! `saveConfig`), write-back into a directory with planted symbolic links, and
//! names or addresses no file, API or console may bring in.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::admin::{FULL, client};
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

/// `txlb check --config PATH`: exit code and stderr.
fn check(path: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_txlb"))
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    let (code, stderr) = check(&path);
    assert_eq!(code, Some(1), "{stderr}");
    // <config> is level 1: the 64th <x> is one too many.
    let at = format!(
        "deep.xml:{lines}:{}: elements nested too deeply",
        1 + 63 * 3
    );
    assert!(stderr.contains(&at), "{stderr}");

    let toml = dir.path().join("deep.toml");
    let text = format!(
        "[[service]]\nname = \"s\"\nlisten = [\"127.0.0.1:0\"]\n[[service.group]]\nname = \"g\"\n\
         enable = true\nhosts = [{{ name = \"h\", ip = \"127.0.0.1:9\" }}]\n\
         [resolver]\nnameserver = {}{}\n",
        "[".repeat(DEEP),
        "]".repeat(DEEP)
    );
    std::fs::write(&toml, text).unwrap();
    let (code, stderr) = check(&toml);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("deep.toml:9:77: tables, arrays or dotted keys nested too deeply"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_deep_file_never_ends_the_running_balancer() {
    let backend = echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    let text = xml(backend);
    std::fs::write(&path, &text).unwrap();
    let mut txlb = Txlb::start(&path, 1);
    let listener: SocketAddr = txlb.logged("listener up", "local").await.parse().unwrap();
    let base = txlb.logged("admin web server up", "url").await;
    proxies(listener).await;

    std::fs::write(&path, deep_xml(&text)).unwrap();
    let skip = txlb.log_len();
    txlb.signal("HUP");
    let refused = txlb.wait_for_async("reload refused", skip).await;
    assert!(refused.contains("elements nested too deeply"), "{refused}");
    assert!(refused.contains("lb.xml:"), "{refused}");
    assert!(txlb.child.try_wait().unwrap().is_none(), "txlb ended");
    proxies(listener).await;

    // saveConfig reads the file again before writing: the deep text is a
    // conflict, not a crash.
    let response = client()
        .get(format!("{base}saveConfig"))
        .basic_auth(FULL.0, Some(FULL.1))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("edited on disk"), "{body}");
    assert!(txlb.child.try_wait().unwrap().is_none(), "txlb ended");
    proxies(listener).await;
    assert!(txlb.terminate().success());
}

/// A GET of the legacy API as the full user: status and body.
async fn legacy(base: &str, call: &str) -> (u16, String) {
    let response = client()
        .get(format!("{base}{call}"))
        .basic_auth(FULL.0, Some(FULL.1))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
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
