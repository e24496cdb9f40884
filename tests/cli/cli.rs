//! The real `txlb` binary: `check` on the sample configurations and on broken ones,
//! `run` serving traffic, reloading on SIGHUP and stopping on SIGTERM, and `demo`.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::binary::Txlb;
use common::*;

const TXLB: &str = env!("CARGO_BIN_EXE_txlb");

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn check(path: &Path) -> (bool, String, String) {
    let out = Command::new(TXLB)
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn both_sample_configs_pass_check_with_unresolvable_names_as_warnings() {
    let (ok, out, err) = check(Path::new(&fixture("txlb-config.xml")));
    assert!(ok, "{out}{err}");
    for expected in [
        "service twisted-lorien: listen *:8080, *:8081",
        "group servers1 (weightr, enabled): 5 hosts",
        "group servers2 (leastc): 4 hosts",
        "server3 rivendel:7001 weight 20",
        // Why depends on the machine's resolver: no such name, no answer, …
        "warning: name \"lorien\" ",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in\n{out}");
    }
    let (ok, out, err) = check(Path::new(&fixture("txlb-confex.xml")));
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("group main (leastc, enabled): 3 hosts"),
        "{out}"
    );
    assert!(
        out.contains("service backup-http: listen 127.0.0.2:8000"),
        "{out}"
    );
}

/// Writes `text` to a temporary config and checks it: it must fail with exactly
/// `FILE:LINE:COL: …message…`.
fn assert_check_error(text: &str, line: u32, column: u32, message: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.xml");
    std::fs::write(&path, text).unwrap();
    let (ok, out, err) = check(&path);
    assert!(!ok, "accepted:\n{text}\n{out}");
    let prefix = format!("{}:{line}:{column}: ", path.display());
    assert!(err.contains(&prefix), "expected {prefix:?} in {err:?}");
    assert!(err.contains(message), "expected {message:?} in {err:?}");
}

const HEAD: &str = "<config>\n  <service name=\"s\">\n    <listen ip=\"127.0.0.1:0\"/>\n";

#[test]
fn broken_configs_give_file_line_column_errors() {
    // Malformed XML: the end tag does not match.
    assert_check_error(
        &format!(
            "{HEAD}    <group name=\"g\" enable=\"true\">\n      <host name=\"h\" ip=\"127.0.0.1:1\"/>\n    </grop>\n  </service>\n</config>\n"
        ),
        6,
        5,
        "",
    );
    assert_check_error(
        &format!(
            "{HEAD}    <group name=\"g\" scheduler=\"fastest\" enable=\"true\">\n      <host name=\"h\" ip=\"127.0.0.1:1\"/>\n    </group>\n  </service>\n</config>\n"
        ),
        4,
        32,
        "unknown scheduler \"fastest\"",
    );
    assert_check_error(
        &format!(
            "{HEAD}    <group name=\"g\">\n      <host name=\"h\" ip=\"127.0.0.1:1\"/>\n    </group>\n  </service>\n</config>\n"
        ),
        2,
        3,
        "no enabled group",
    );
    assert_check_error(
        &format!(
            "{HEAD}    <group name=\"g\" enable=\"true\">\n      <host name=\"h\" ip=\"lorien\"/>\n    </group>\n  </service>\n</config>\n"
        ),
        5,
        26,
        "bad ip \"lorien\"",
    );
    assert_check_error(
        &format!(
            "{HEAD}    <group name=\"g\" enable=\"true\">\n      <host name=\"h\" ip=\"10.0.0.1:70000\"/>\n    </group>\n  </service>\n</config>\n"
        ),
        5,
        26,
        "bad ip",
    );
}

fn xml_config(hosts: &[(&str, SocketAddr)]) -> String {
    let hosts = common::host_lines(hosts);
    format!(
        "<config>\n  <service name=\"svc\">\n    <listen ip=\"127.0.0.1:0\"/>\n    <group name=\"g\" scheduler=\"roundr\" enable=\"true\">\n{hosts}    </group>\n  </service>\n</config>\n"
    )
}

fn names_seen(balancer: SocketAddr, n: usize, rt: &tokio::runtime::Runtime) -> Vec<String> {
    rt.block_on(async {
        let mut names = Vec::new();
        for _ in 0..n {
            names.push(which_backend(balancer).await.0);
        }
        names.sort();
        names.dedup();
        names
    })
}

#[test]
fn run_serves_reloads_on_sighup_and_keeps_serving_after_a_broken_reload() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (b1, b2) = rt.block_on(async {
        (
            named_backend("b1", Hold::Close).await,
            named_backend("b2", Hold::Close).await,
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.xml");
    std::fs::write(&path, xml_config(&[("b1", b1)])).unwrap();
    let txlb = Txlb::start(&path, 5);
    let addr = txlb.listener();
    assert_eq!(names_seen(addr, 4, &rt), vec!["b1"]);

    // A host added in the file is in rotation after SIGHUP.
    std::fs::write(&path, xml_config(&[("b1", b1), ("b2", b2)])).unwrap();
    let mark = txlb.log_len();
    txlb.signal("HUP");
    // The log line says what the reload changed.
    let line = txlb.wait_for("configuration reloaded", mark);
    assert!(line.contains("changes=hosts +1"), "{line}");
    assert_eq!(names_seen(addr, 4, &rt), vec!["b1", "b2"]);

    // A broken file is refused with its location; the old configuration serves on.
    std::fs::write(&path, "<config>\n  <service name=\"svc\">\n").unwrap();
    let mark = txlb.log_len();
    txlb.signal("HUP");
    let line = txlb.wait_for("reload refused", mark);
    assert!(line.contains("config.xml:"), "{line}");
    assert_eq!(names_seen(addr, 4, &rt), vec!["b1", "b2"]);
}

#[test]
fn sigterm_lets_a_running_transfer_finish_then_exits_zero() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The backend sends 2 MiB slowly (in 64 KiB steps, 20 ms apart) then closes.
    let backend = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    for _ in 0..32 {
                        s.write_all(&[7u8; 64 * 1024]).await.unwrap();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                });
            }
        });
        addr
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.xml");
    std::fs::write(&path, xml_config(&[("slow", backend)])).unwrap();
    let mut txlb = Txlb::start(&path, 5);
    let addr = txlb.listener();
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    let mut first = [0u8; 1024];
    std::io::Read::read_exact(&mut client, &mut first).unwrap();
    txlb.signal("TERM");
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut client, &mut rest).unwrap();
    assert_eq!(first.len() + rest.len(), 2 * 1024 * 1024);
    let status = txlb.child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", txlb.log_text());
    // New clients were refused once shutdown began.
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn run_fails_clearly_when_a_port_is_taken_or_the_config_is_bad() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.xml");
    let text = xml_config(&[("h", "127.0.0.1:9".parse().unwrap())])
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&path, text).unwrap();
    let out = Command::new(TXLB)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );

    std::fs::write(&path, "<config>").unwrap();
    let out = Command::new(TXLB)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.xml:1:"));
}

#[test]
fn an_admin_port_in_use_is_said_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.xml");
    let text = xml_config(&[("h", "127.0.0.1:9".parse().unwrap())]).replace(
        "</config>",
        &format!("<admin><web listen=\"127.0.0.1:{port}\"/></admin></config>"),
    );
    std::fs::write(&path, text).unwrap();
    let out = Command::new(TXLB).arg("run").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with(&format!(
            "txlb: cannot listen on 127.0.0.1:{port} for the admin web server"
        )),
        "{err}"
    );
    assert_eq!(last.matches("in use").count(), 1, "{last}");
}

#[test]
fn check_takes_the_file_positionally_and_reports_the_admin_plane() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.xml");
    let text = xml_config(&[("h", "127.0.0.1:9".parse().unwrap())]).replace(
        "</config>",
        r#"<admin><web listen="127.0.0.1:9001" metricsPublic="true"/>
           <ssh listen="127.0.0.1:9002"/>
           <user name="ops" password="$6$rounds=5000$salt$x" access="full"/>
           <user name="viewer" password="$6$rounds=5000$salt$y" access="readonly"/></admin>
           <control socket="/run/txlb/control.sock"/></config>"#,
    );
    std::fs::write(&path, text).unwrap();
    let out = Command::new(TXLB).arg("check").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "admin web: http://127.0.0.1:9001/, /metrics without login",
        "admin ssh: 127.0.0.1:9002, passwords only",
        "users: ops (full), viewer (read-only)",
        "control socket: /run/txlb/control.sock",
        "managers: hostCheck every 10 s, heartbeat off, configCheck off",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
    // The same file with --config says the same; both at once, or none, is refused.
    let flag = Command::new(TXLB)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&flag.stdout), stdout);
    let both = Command::new(TXLB)
        .args(["check", "--config"])
        .arg(&path)
        .arg(&path)
        .output()
        .unwrap();
    assert!(!both.status.success());
    let none = Command::new(TXLB).arg("check").output().unwrap();
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("FILE"));

    // The two passwords above are no hashes: nobody could log in. A DES hash
    // counts 8 characters. A missing authorizedKeys file lets no key in.
    for expected in [
        "warning: user \"ops\": the password is not a crypt(3) hash",
        "warning: user \"viewer\": the password is not a crypt(3) hash",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
    let des = std::fs::read_to_string(&path)
        .unwrap()
        .replace("$6$rounds=5000$salt$x", "abJnggxhB/yWI")
        .replace("<ssh listen", "<ssh authorizedKeys=\"nowhere/keys\" listen");
    std::fs::write(&path, des).unwrap();
    let out = Command::new(TXLB).arg("check").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("warning: user \"ops\": a traditional DES hash"),
        "{stdout}"
    );
    assert!(stdout.contains("keys: no such file"), "{stdout}");

    // A reader that goes away ends check quietly, not with a panic.
    let mut child = Command::new(TXLB)
        .arg("check")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
}

/// A name server on loopback that answers every query with NXDOMAIN.
fn nxdomain_server() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        // Bounded: a check asks a handful of questions.
        for _ in 0..100 {
            let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                return;
            };
            if n < 12 {
                continue;
            }
            // The header and the question, without the query's EDNS record.
            let mut end = 12;
            while end < n && buf[end] != 0 {
                end += 1 + buf[end] as usize;
            }
            let end = (end + 5).min(n);
            let mut reply = buf[..end].to_vec();
            reply[2] = 0x81; // response, recursion desired
            reply[3] = 0x83; // recursion available, NXDOMAIN
            reply[6..12].fill(0); // no answers, authorities or additionals
            let _ = socket.send_to(&reply, peer);
        }
    });
    addr
}

#[test]
fn a_name_that_does_not_exist_is_said_in_words() {
    let ns = nxdomain_server();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.xml");
    let text = xml_config(&[("h", "127.0.0.1:9".parse().unwrap())])
        .replace("127.0.0.1:9", "nowhere.example:80")
        .replace(
            "</group>",
            "<host name=\"u\" ip=\"a_b.example:80\"/></group>",
        )
        .replace(
            "</config>",
            &format!("<resolver nameserver=\"{ns}\"/></config>"),
        );
    std::fs::write(&path, text).unwrap();
    let out = Command::new(TXLB).arg("check").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("warning: name \"nowhere.example\" does not exist (NXDOMAIN)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: name \"a_b.example\" is not a valid DNS name"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("Query {") && !stdout.contains("Err("),
        "{stdout}"
    );
}

#[test]
fn run_reads_toml_too() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let b1 = rt.block_on(named_backend("t1", Hold::Close));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[[service]]\nname = \"svc\"\nlisten = [\"127.0.0.1:0\"]\n\n  [[service.group]]\n  name = \"g\"\n  scheduler = \"rand\"\n  enable = true\n  hosts = [{{ name = \"t1\", ip = \"{b1}\" }}]\n"
        ),
    )
    .unwrap();
    let txlb = Txlb::start(&path, 5);
    assert_eq!(names_seen(txlb.listener(), 3, &rt), vec!["t1"]);
}

#[test]
fn demo_rotates_over_three_backends_seen_with_curl() {
    let mut demo = Command::new(TXLB)
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("demo printed its URL").unwrap();
        if let Some(rest) = line.strip_prefix("txlb demo: balancing ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let mut bodies = Vec::new();
    for _ in 0..6 {
        let out = match Command::new("curl")
            .args(["-s", "--max-time", "5", &url])
            .output()
        {
            Ok(out) => out,
            Err(_) => {
                eprintln!(
                    "curl not installed (scripts/test.sh installs it): skipping the curl check"
                );
                let _ = demo.kill();
                let _ = demo.wait();
                return;
            }
        };
        bodies.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let _ = demo.kill();
    let _ = demo.wait();
    assert_eq!(&bodies[..3], &bodies[3..], "{bodies:?}");
    let mut distinct = bodies.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct,
        vec![
            "Hello from demo-1",
            "Hello from demo-2",
            "Hello from demo-3"
        ]
    );
    let _ = std::io::stdout().flush();
}

#[test]
fn version_is_printed() {
    let out = Command::new(TXLB).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("txlb "));
}
