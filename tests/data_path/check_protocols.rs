//! The protocol checks end to end, against real servers from Debian started
//! here (tests/common/servers.rs): Redis (a master, replicas, `DEBUG SLEEP`,
//! `-MASTERDOWN`), PostgreSQL (a standby refusing connections, then
//! promoted; a role that does not exist), MariaDB (a host it refuses, then
//! admits), openssl's TLS server (`type="tls"`, `http` with `tls`), and small
//! fakes where no server says what is tested (Redis `-LOADING`, PostgreSQL
//! "starting up", SMTP banners). Each host's reason is checked in the log
//! line of its transition.

use crate::checks::{redis_like, transition};
use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use common::binary::Txlb;
use common::servers;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A group: its name, its `<check>`, its hosts.
type Group<'a> = (&'a str, &'a str, &'a [(&'a str, SocketAddr)]);

/// A service of these groups, the first enabled.
fn groups(groups: &[Group<'_>]) -> String {
    let mut xml =
        String::from("<config>\n  <service name=\"svc\">\n    <listen ip=\"127.0.0.1:0\"/>\n");
    for (i, (name, check, hosts)) in groups.iter().enumerate() {
        let enable = if i == 0 { " enable=\"true\"" } else { "" };
        xml.push_str(&format!(
            "    <group name=\"{name}\" scheduler=\"roundr\"{enable}>\n      {check}\n{}    </group>\n",
            common::host_lines(hosts)
        ));
    }
    xml.push_str("  </service>\n</config>\n");
    xml
}

/// `host="NAME"` as log lines say it.
fn host(name: &str) -> String {
    format!("host=\"{name}\"")
}

/// The probes that passed a while: no transition of `names` in the log.
fn never_bad(txlb: &Txlb, names: &[&str]) {
    for name in names {
        let lines = txlb.log_text();
        assert!(
            !lines
                .lines()
                .any(|l| l.contains("host marked bad") && l.contains(&host(name))),
            "{name} went bad:\n{lines}"
        );
    }
}

const FAST: &str = r#"interval="0.2" timeout="0.4" rise="2" fall="2""#;

#[tokio::test]
async fn redis_checks_tell_a_ready_master_from_loading_stale_and_sleeping_servers() {
    let Some(redis) = servers::redis_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let master = servers::redis(&redis, dir.path(), &["--enable-debug-command", "yes"]);
    let replica = servers::redis(
        &redis,
        dir.path(),
        &["--replicaof", "127.0.0.1", &master.addr.port().to_string()],
    );
    // A replica of a master that is not there, told not to serve stale data:
    // it answers -MASTERDOWN.
    let orphan = servers::redis(
        &redis,
        dir.path(),
        &[
            "--replicaof",
            "127.0.0.1",
            &common::closed_port().port().to_string(),
            "--replica-serve-stale-data",
            "no",
        ],
    );
    let loading = Arc::new(AtomicBool::new(true));
    let fake = redis_like(loading.clone()).await;
    let any = format!(r#"<check type="redis" {FAST}/>"#);
    let master_only = format!(r#"<check type="redis" role="master" {FAST}/>"#);
    // expectRegex on a send check: the replication role, read from INFO.
    let regex = format!(
        r#"<check type="send" send="INFO replication\r\n" expectRegex="role:(master|slave)\r\n" {FAST}/>"#
    );
    let xml = groups(&[
        (
            "any",
            &any,
            &[
                ("r-master", master.addr),
                ("r-replica", replica.addr),
                ("r-orphan", orphan.addr),
                ("r-loading", fake),
            ],
        ),
        (
            "role",
            &master_only,
            &[("m-master", master.addr), ("m-replica", replica.addr)],
        ),
        (
            "regex",
            &regex,
            &[("x-master", master.addr), ("x-fake", fake)],
        ),
    ]);
    let txlb = Txlb::start_xml(&xml, None);
    txlb.listener();
    let line = transition(&txlb, "host marked bad", &host("r-orphan"), 0).await;
    assert!(
        line.contains(r#"check: expect +PONG, got \"-MASTERDOWN Link with MASTER is down"#),
        "{line}"
    );
    let line = transition(&txlb, "host marked bad", &host("r-loading"), 0).await;
    assert!(
        line.contains(r#"check: expect +PONG, got \"-LOADING Redis is loading"#),
        "{line}"
    );
    let line = transition(&txlb, "host marked bad", &host("m-replica"), 0).await;
    assert!(
        line.contains("check: role slave, expected master"),
        "{line}"
    );
    let line = transition(&txlb, "host marked bad", &host("x-fake"), 0).await;
    assert!(
        line.contains(r#"check: expect /role:(master|slave)\\r\\n/, got \"-LOADING"#),
        "{line}"
    );
    never_bad(&txlb, &["r-master", "r-replica", "m-master", "x-master"]);

    // Each comes back as the server does: the orphan and the replica
    // promoted to masters, the fake done loading.
    let skip = txlb.log_len();
    assert_eq!(
        servers::redis_command(orphan.addr, "REPLICAOF NO ONE"),
        "+OK"
    );
    assert_eq!(
        servers::redis_command(replica.addr, "REPLICAOF NO ONE"),
        "+OK"
    );
    loading.store(false, SeqCst);
    for name in ["r-orphan", "m-replica", "r-loading"] {
        transition(&txlb, "host back in rotation", &host(name), skip).await;
    }
    // A master asleep (DEBUG SLEEP blocks it) takes connections but answers
    // nothing by the timeout.
    let skip = txlb.log_len();
    let addr = master.addr;
    let sleeper = std::thread::spawn(move || servers::redis_command(addr, "DEBUG SLEEP 1.5"));
    let line = transition(&txlb, "host marked bad", &host("r-master"), skip).await;
    assert!(
        line.contains(r#"check: expect +PONG, got \"\" then timeout after 0.4 s"#),
        "{line}"
    );
    assert_eq!(sleeper.join().unwrap(), "+OK");
    transition(&txlb, "host back in rotation", &host("r-master"), skip).await;
}

/// A PostgreSQL-like host that answers every startup message with an
/// `ErrorResponse` saying it is starting up.
async fn starting_up() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut len = [0u8; 4];
                if s.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut rest = vec![0; (u32::from_be_bytes(len) as usize).clamp(4, 1024) - 4];
                if s.read_exact(&mut rest).await.is_err() {
                    return;
                }
                let fields = b"SFATAL\0VFATAL\0C57P03\0Mthe database system is starting up\0\0";
                let mut reply = vec![b'E'];
                reply.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
                reply.extend_from_slice(fields);
                let _ = s.write_all(&reply).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn postgres_checks_want_a_server_that_takes_sessions() {
    let Some(bin) = servers::postgres_bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let standby_dir = dir.path().join("standby");
    let primary_dir = dir.path().join("primary");
    std::fs::create_dir(&standby_dir).unwrap();
    std::fs::create_dir(&primary_dir).unwrap();
    let data = servers::postgres_initdb(&bin, &standby_dir);
    let primary_data = servers::postgres_initdb(&bin, &primary_dir);
    // A standby without hot standby: PostgreSQL itself refuses sessions.
    std::fs::write(data.join("standby.signal"), "").unwrap();
    servers::pg_ctl_chown(&data.join("standby.signal"));
    let pg = servers::postgres(&bin, &data, &standby_dir, &["-c", "hot_standby=off"]);
    let primary = servers::postgres(&bin, &primary_data, &primary_dir, &[]);
    let fake = starting_up().await;
    let check = format!(r#"<check type="postgres" {FAST}/>"#);
    let nobody = format!(r#"<check type="postgres" user="nobody-here" {FAST}/>"#);
    let xml = groups(&[
        (
            "pg",
            &check,
            &[
                ("pg-standby", pg.addr),
                ("pg-starting", fake),
                ("pg-primary", primary.addr),
            ],
        ),
        ("role", &nobody, &[("pg-norole", primary.addr)]),
    ]);
    let txlb = Txlb::start_xml(&xml, None);
    txlb.listener();
    let line = transition(&txlb, "host marked bad", &host("pg-standby"), 0).await;
    assert!(
        line.contains(
            "check: postgres: FATAL 57P03 the database system is not accepting connections"
        ),
        "{line}"
    );
    let line = transition(&txlb, "host marked bad", &host("pg-starting"), 0).await;
    assert!(
        line.contains("check: postgres: FATAL 57P03 the database system is starting up"),
        "{line}"
    );
    // A role that does not exist: PostgreSQL accepts the connection, then
    // refuses the session.
    let line = transition(&txlb, "host marked bad", &host("pg-norole"), 0).await;
    assert!(
        line.contains(r#"check: postgres: FATAL 28000 role \"nobody-here\" does not exist"#),
        "{line}"
    );
    never_bad(&txlb, &["pg-primary"]);
    // Promoted, the standby takes sessions.
    let skip = txlb.log_len();
    servers::pg_ctl(&bin, &data, &["promote", "-w"]);
    transition(&txlb, "host back in rotation", &host("pg-standby"), skip).await;
    assert_eq!(
        txlb.count("host back in rotation"),
        1,
        "{}",
        txlb.log_text()
    );
    // The checks end their sessions properly (Terminate): no "unexpected EOF".
    assert!(
        !primary.log_text().contains("unexpected EOF"),
        "{}",
        primary.log_text()
    );
}

#[tokio::test]
async fn mysql_checks_want_the_greeting_not_an_error_packet() {
    let Some((server, install)) = servers::mariadb_binaries() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = servers::mariadb_install(&install, dir.path());
    let db = servers::mariadb(&server, &data, dir.path(), &["--skip-name-resolve"]);
    let check = format!(r#"<check type="mysql" {FAST}/>"#);
    let xml = groups(&[("db", &check, &[("maria", db.addr)])]);
    let txlb = Txlb::start_xml(&xml, None);
    txlb.listener();
    tokio::time::sleep(Duration::from_millis(500)).await;
    never_bad(&txlb, &["maria"]);
    // Without name resolution 127.0.0.1 is not `localhost`: once no account
    // names it, MariaDB answers with error 1130 instead of a greeting.
    servers::mariadb_sql(
        dir.path(),
        "DROP USER 'root'@'127.0.0.1'; DROP USER 'root'@'::1'",
    );
    let line = transition(&txlb, "host marked bad", &host("maria"), 0).await;
    assert!(
        line.contains("check: mysql: error 1130: Host '127.0.0.1' is not allowed to connect"),
        "{line}\n{}",
        db.log_text()
    );
    // An account for 127.0.0.1: the greeting comes, the host is back.
    let skip = txlb.log_len();
    servers::mariadb_sql(dir.path(), "CREATE USER 'txlb'@'127.0.0.1'");
    transition(&txlb, "host back in rotation", &host("maria"), skip).await;
}

/// An SMTP-like host: its banner lines, then it counts the `QUIT`s it gets.
async fn smtp_like(banner: &'static str, quits: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let quits = quits.clone();
            tokio::spawn(async move {
                if s.write_all(banner.as_bytes()).await.is_err() {
                    return;
                }
                let mut got = Vec::new();
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || got.len() > 64 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if got.ends_with(b"\r\n") {
                        break;
                    }
                }
                if got == b"QUIT\r\n" {
                    quits.fetch_add(1, SeqCst);
                    let _ = s.write_all(b"221 bye\r\n").await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn smtp_checks_want_a_220_banner_and_say_quit() {
    let quits = Arc::new(AtomicUsize::new(0));
    let ready = smtp_like("220-mx.test ESMTP\r\n220 ready\r\n", quits.clone()).await;
    let refusing = smtp_like("554 mx.test no service\r\n", Arc::default()).await;
    let silent = smtp_like("", Arc::default()).await;
    let check = format!(r#"<check type="smtp" {FAST}/>"#);
    let xml = groups(&[(
        "mx",
        &check,
        &[
            ("mx-ready", ready),
            ("mx-refusing", refusing),
            ("mx-silent", silent),
        ],
    )]);
    let txlb = Txlb::start_xml(&xml, None);
    txlb.listener();
    let line = transition(&txlb, "host marked bad", &host("mx-refusing"), 0).await;
    assert!(
        line.contains(r#"check: expect a 220 banner, got \"554 mx.test no service\""#),
        "{line}"
    );
    let line = transition(&txlb, "host marked bad", &host("mx-silent"), 0).await;
    assert!(
        line.contains(r#"check: expect a 220 banner, got \"\" then timeout after 0.4 s"#),
        "{line}"
    );
    never_bad(&txlb, &["mx-ready"]);
    assert!(
        common::eventually(Duration::from_secs(2), || async { quits.load(SeqCst) >= 2 }).await,
        "the ready host hears QUIT"
    );
}

#[tokio::test]
async fn tls_checks_want_a_handshake_and_https_a_status() {
    let Some(openssl) = servers::openssl_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tls = servers::tls_server(&openssl, dir.path());
    // A plain host: the handshake fails on what it answers.
    let plain = common::named_backend("plain", common::Hold::Close).await;
    let handshake = format!(r#"<check type="tls" {FAST}/>"#);
    let https = format!(r#"<check type="http" tls="true" path="/" status="200" {FAST}/>"#);
    let xml = groups(&[
        (
            "tls",
            &handshake,
            &[("t-tls", tls.addr), ("t-plain", plain)],
        ),
        ("https", &https, &[("h-tls", tls.addr), ("h-plain", plain)]),
    ]);
    let txlb = Txlb::start_xml(&xml, None);
    txlb.listener();
    let line = transition(&txlb, "host marked bad", &host("t-plain"), 0).await;
    assert!(
        line.contains("check: TLS handshake with 127.0.0.1:"),
        "{line}"
    );
    let line = transition(&txlb, "host marked bad", &host("h-plain"), 0).await;
    assert!(
        line.contains("check: TLS handshake with 127.0.0.1:"),
        "{line}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    never_bad(&txlb, &["t-tls", "h-tls"]);
}
