//! TLS origination end to end through the `txlb` binary: plain clients,
//! hosts speaking TLS (Python's `ssl` echo servers, OpenSSL underneath),
//! certificates made here (rcgen). Verified against a CA file and the
//! system's store (SSL_CERT_FILE), byte-exact; a wrong name refused with the
//! verification error as the host's reason and the client failed over;
//! `tlsVerify="none"`; a host's own `tls` in a plain group; a host that
//! requires a client certificate, TLS on both sides, the certificates listed
//! by the JSON API; `txlb check` and a refused reload on a missing key; a
//! reload re-reading a CA file; a TLS check verifying as connections do.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command as StdCommand;
use std::time::{Duration, Instant};

use common::admin::FULL;
use common::binary::Txlb;
use common::servers::{Server, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::routing::{admin_base, admin_block};
use super::tls::{client_ca, issue, write_pair};

/// A TLS echo server: `PORT CERT KEY [CLIENT_CA]` (with a client CA, a
/// client certificate is required; its CN is printed).
const ECHO: &str = r#"
import socket, ssl, sys, threading
port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
if len(sys.argv) > 4:
    ctx.load_verify_locations(sys.argv[4])
    ctx.verify_mode = ssl.CERT_REQUIRED
srv = socket.create_server(("127.0.0.1", port))
def serve(conn):
    try:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            peer = tls.getpeercert()
            if peer:
                cn = dict(x[0] for x in peer["subject"]).get("commonName", "")
                print("client", cn, flush=True)
            while True:
                data = tls.recv(65536)
                if not data:
                    break
                tls.sendall(data)
    except Exception as e:
        print("error", e, flush=True)
    finally:
        conn.close()
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;

/// `python3`, unless absent and allowed to be.
fn python_missing() -> bool {
    let found = StdCommand::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found && std::env::var_os("TXLB_REQUIRE_HOSTS").is_none() {
        eprintln!("skipped: python3 not installed (set TXLB_REQUIRE_HOSTS to fail instead)");
        return true;
    }
    assert!(found, "python3 is required (TXLB_REQUIRE_HOSTS is set)");
    false
}

/// A TLS echo host serving `cert`/`key` from `dir`, requiring a client
/// certificate signed by `client_ca` if given.
fn echo_host(dir: &Path, cert: &Path, key: &Path, client_ca: Option<&Path>) -> Server {
    let script = dir.join("echo.py");
    std::fs::write(&script, ECHO).unwrap();
    let port = free_port();
    let mut command = StdCommand::new("python3");
    command
        .arg(&script)
        .arg(port.to_string())
        .arg(cert)
        .arg(key);
    if let Some(ca) = client_ca {
        command.arg(ca);
    }
    let log = dir.join(format!("echo-{port}.log"));
    Server::start(command, SocketAddr::from(([127, 0, 0, 1], port)), &log)
}

/// The address of `service`'s listener, from its "listener up" line.
async fn listener_of(txlb: &Txlb, service: &str) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    let wanted = format!("service={service} ");
    let quoted = format!("service=\"{service}\"");
    loop {
        let found = txlb
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("listener up") && (l.contains(&wanted) || l.contains(&quoted)))
            .cloned();
        if let Some(line) = found {
            let local = line.split("local=").nth(1).unwrap();
            let local = local.split_whitespace().next().unwrap();
            return local.trim_matches('"').parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no listener for {service}:\n{}",
            txlb.log_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `data` through `addr`, half-closes, and reads the answer to its end.
async fn round_trip(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.split();
    let mut got = Vec::new();
    let send = async {
        write.write_all(data).await.unwrap();
        write.shutdown().await.unwrap();
    };
    let receive = tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut got));
    let ((), received) = tokio::join!(send, receive);
    let _ = received.expect("answer within 20 s");
    got
}

/// Bytes no two runs share a pattern of (a mix-up of chunks shows).
fn payload(len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(22);
    (0..len).map(|_| rng.u8(..)).collect()
}

#[tokio::test]
async fn originates_tls_verified_by_a_ca_file_or_the_system_store() {
    if python_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = client_ca();
    std::fs::write(dir.path().join("ca.pem"), &ca.1.pem).unwrap();
    let host_cert = issue("db", &["db.test"], Some(&ca));
    let (cert, key) = write_pair(dir.path(), "db", &host_cert);
    let host = echo_host(dir.path(), &cert, &key, None);
    let h = host.addr;
    let plain = common::echo_backend().await;
    let xml = format!(
        "<config>\n\
  <service name=\"ca\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
    <group name=\"g\" enable=\"true\" tls=\"true\" tlsVerify=\"ca.pem\" tlsSni=\"db.test\">\n      \
      <host name=\"h\" ip=\"{h}\"/>\n    </group>\n  </service>\n\
  <service name=\"system\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
    <group name=\"g\" enable=\"true\" tls=\"true\" tlsSni=\"db.test\">\n      \
      <host name=\"h\" ip=\"{h}\"/>\n    </group>\n  </service>\n\
  <service name=\"wrong\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
    <group name=\"g\" enable=\"true\" tls=\"true\" tlsVerify=\"ca.pem\" tlsSni=\"wrong.test\">\n      \
      <host name=\"bad\" ip=\"{h}\"/>\n    </group>\n  </service>\n\
  <service name=\"failover\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
    <group name=\"g\" enable=\"true\" scheduler=\"roundr\" tls=\"true\" tlsVerify=\"ca.pem\" tlsSni=\"wrong.test\">\n      \
      <host name=\"misnamed\" ip=\"{h}\"/>\n      \
      <host name=\"right\" ip=\"{h}\" tlsSni=\"db.test\"/>\n    </group>\n  </service>\n\
  <service name=\"mixed\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
    <group name=\"g\" enable=\"true\" scheduler=\"roundr\" tlsVerify=\"ca.pem\" tlsSni=\"db.test\">\n      \
      <host name=\"tls\" ip=\"{h}\" tls=\"true\"/>\n      \
      <host name=\"plain\" ip=\"{plain}\"/>\n    </group>\n  </service>\n\
  <service name=\"unverified\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
    <group name=\"g\" enable=\"true\" tls=\"true\" tlsVerify=\"none\" tlsSni=\"wrong.test\">\n      \
      <host name=\"h\" ip=\"{h}\"/>\n    </group>\n  </service>\n\
{}</config>\n",
        admin_block()
    );
    let config = dir.path().join("lb.xml");
    std::fs::write(&config, xml).unwrap();
    // The system's store, as rustls-native-certs reads it, is this CA alone.
    let mut command = Txlb::command(&config, 1, 2, "info");
    command.env("SSL_CERT_FILE", dir.path().join("ca.pem"));
    let txlb = Txlb::spawn(command);
    let base = admin_base(&txlb).await;
    assert!(
        txlb.log_text().contains("tlsVerify=\\\"none\\\"")
            || txlb.log_text().contains("tlsVerify=\"none\""),
        "no warning for tlsVerify=none:\n{}",
        txlb.log_text()
    );

    let data = payload(1 << 20);
    for service in ["ca", "system", "unverified"] {
        let addr = listener_of(&txlb, service).await;
        let got = round_trip(addr, &data).await;
        assert!(
            got == data,
            "{service}: {} bytes back of {}:\n{}\n{}",
            got.len(),
            data.len(),
            txlb.log_text(),
            host.log_text()
        );
    }

    // A host's own `tls`: one host of a plain group reached with TLS, the
    // other plain (each answers only in its own way).
    let mixed = listener_of(&txlb, "mixed").await;
    for _ in 0..2 {
        assert_eq!(round_trip(mixed, b"either").await, b"either");
    }
    let (_, api) = common::admin::get_as(&base, FULL, "/api/v1/services/mixed").await;
    assert!(!api.contains("TLS handshake"), "{api}");

    // The certificate is not for wrong.test: refused, with the reason.
    let wrong = listener_of(&txlb, "wrong").await;
    let got = round_trip(wrong, b"hello").await;
    assert!(got.is_empty(), "served despite a wrong name: {got:?}");
    let (_, api) = common::admin::get_as(&base, FULL, "/api/v1/services/wrong").await;
    assert!(
        api.contains("TLS handshake with") && api.contains("not valid for name"),
        "{api}"
    );

    // The misnamed host fails, the next one serves the same client.
    let failover = listener_of(&txlb, "failover").await;
    for _ in 0..2 {
        let got = round_trip(failover, b"twice").await;
        assert_eq!(got, b"twice", "{}", txlb.log_text());
    }
    let (_, api) = common::admin::get_as(&base, FULL, "/api/v1/services/failover").await;
    assert!(api.contains("not valid for name"), "{api}");
}

#[tokio::test]
async fn a_client_certificate_is_shown_to_a_host_that_requires_one() {
    if python_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = client_ca();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.1.pem).unwrap();
    let (cert, key) = write_pair(dir.path(), "db", &issue("db", &["db.test"], Some(&ca)));
    write_pair(dir.path(), "client", &issue("txlb-client", &[], Some(&ca)));
    let host = echo_host(dir.path(), &cert, &key, Some(&ca_file));
    let h = host.addr;
    let group = |name: &str, extra: &str| {
        format!(
            "  <service name=\"{name}\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
             <group name=\"g\" enable=\"true\" tls=\"true\" tlsVerify=\"ca.pem\" tlsSni=\"db.test\"{extra}>\n      \
             <host name=\"h\" ip=\"{h}\"/>\n    </group>\n  </service>\n"
        )
    };
    // TLS on both sides: terminated from the client, originated to the host.
    let edge = format!(
        "  <service name=\"edge\">\n    <listen ip=\"127.0.0.1:0\">\n      \
         <tls cert=\"db.pem\" key=\"db.key\"/>\n    </listen>\n    \
         <group name=\"g\" enable=\"true\" tls=\"true\" tlsVerify=\"ca.pem\" tlsSni=\"db.test\" \
         tlsCert=\"client.pem\" tlsKey=\"client.key\">\n      \
         <host name=\"h\" ip=\"{h}\"/>\n    </group>\n  </service>\n"
    );
    let xml = format!(
        "<config>\n{}{}{edge}{}</config>\n",
        group(
            "with",
            " tlsCert=\"client.pem\" tlsKey=\"client.key\" tlsAlpn=\"echo\""
        ),
        group("without", ""),
        admin_block()
    );
    let config = dir.path().join("lb.xml");
    std::fs::write(&config, &xml).unwrap();
    let txlb = Txlb::start(&config, 2);
    let base = admin_base(&txlb).await;
    let with = listener_of(&txlb, "with").await;
    let data = payload(200_000);
    assert!(round_trip(with, &data).await == data, "{}", host.log_text());
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            host.log_text().contains("client txlb-client")
        })
        .await,
        "{}",
        host.log_text()
    );
    // A TLS client through a terminating listener to the same host.
    let edge = listener_of(&txlb, "edge").await;
    let mut client =
        super::tls::rustls_client(edge, "db.test", std::slice::from_ref(&ca.1.der), &[])
            .await
            .unwrap();
    client.write_all(&data).await.unwrap();
    let mut back = vec![0; data.len()];
    client.read_exact(&mut back).await.unwrap();
    assert!(back == data, "TLS both ways: bytes differ");
    drop(client);

    // The certificates in use: the listener's, and the groups' client ones.
    let (status, body) = common::admin::get_as(&base, FULL, "/api/v1/certificates").await;
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3, "{body}");
    let server = &list[0];
    assert_eq!(server["service"], "edge", "{body}");
    assert_eq!(server["role"], "server", "{body}");
    assert_eq!(server["listener"], "127.0.0.1:0", "{body}");
    assert_eq!(server["names"], serde_json::json!(["db.test"]), "{body}");
    assert!(
        server["issuer"]
            .as_str()
            .unwrap()
            .contains("txlb test clients")
    );
    assert!(server["file"].as_str().unwrap().ends_with("db.pem"));
    assert!(server["not_after"].as_i64().unwrap() > 0);
    let clients: Vec<_> = list[1..]
        .iter()
        .map(|c| {
            (
                c["service"].as_str().unwrap(),
                c["group"].as_str().unwrap(),
                c["role"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        clients,
        [("with", "g", "client"), ("edge", "g", "client")],
        "{body}"
    );
    assert!(list[1]["file"].as_str().unwrap().ends_with("client.pem"));

    // Without a certificate the host refuses the handshake (in TLS 1.3 the
    // refusal comes after the client's Finished: the first read fails).
    let without = listener_of(&txlb, "without").await;
    let got = round_trip(without, b"hello").await;
    assert!(got.is_empty(), "served without a certificate: {got:?}");

    // `txlb check` reads the same files and says how each group verifies.
    let out = StdCommand::new(env!("CARGO_BIN_EXE_txlb"))
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("tls to the hosts of group g: verified against")
            && report.contains("ca.pem (1 CA certificates)")
            && report.contains("client certificate")
            && report.contains("client.pem"),
        "{report}"
    );
    // `txlb check` says which file is missing, and where it is named.
    std::fs::write(&config, xml.replace("client.key", "missing.key")).unwrap();
    let out = StdCommand::new(env!("CARGO_BIN_EXE_txlb"))
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("lb.xml:") && err.contains("missing.key") && err.contains("group \"g\""),
        "{err}"
    );
    // A reload with it refused; the running settings stay.
    let (status, _) = common::admin::get_as(&base, FULL, "/api/v1/services/with").await;
    assert_eq!(status, 200);
    txlb.signal("HUP");
    txlb.wait_for_async("missing.key", 0).await;
    assert!(round_trip(with, b"still").await == b"still");
}

/// A TLS group probed by `probes` (a `<check>` in the group, or `<manager>`
/// after the service) with two hosts on one TLS echo server: `good` asks for
/// the name its certificate has, `misnamed` for another. Waits until
/// `misnamed` is marked bad and returns that line; afterwards, through
/// several probe rounds, `good` was never marked bad and `misnamed` never put
/// back.
async fn only_the_misnamed_host_goes_bad(check: &str, managers: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let ca = client_ca();
    std::fs::write(dir.path().join("ca.pem"), &ca.1.pem).unwrap();
    let (cert, key) = write_pair(dir.path(), "db", &issue("db", &["db.test"], Some(&ca)));
    let host = echo_host(dir.path(), &cert, &key, None);
    let h = host.addr;
    let xml = format!(
        "<config>\n  <service name=\"svc\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
         <group name=\"g\" enable=\"true\" tls=\"true\" tlsVerify=\"ca.pem\">\n      {check}\n      \
         <host name=\"good\" ip=\"{h}\" tlsSni=\"db.test\"/>\n      \
         <host name=\"misnamed\" ip=\"{h}\" tlsSni=\"other.test\"/>\n    </group>\n  \
         </service>\n  {managers}\n</config>\n"
    );
    let config = dir.path().join("lb.xml");
    std::fs::write(&config, xml).unwrap();
    let txlb = Txlb::start(&config, 2);
    let bad = super::checks::transition(&txlb, "host marked bad", "misnamed", 0).await;
    assert!(bad.contains("not valid for name"), "{bad}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let log = txlb.log_text();
    let said = |what: &str, host: &str| log.lines().any(|l| l.contains(what) && l.contains(host));
    assert!(!said("host marked bad", "good"), "{log}");
    assert!(!said("host back in rotation", "misnamed"), "{log}");
    bad
}

#[tokio::test]
async fn a_tls_check_verifies_as_connections_do() {
    if python_missing() {
        return;
    }
    let check = r#"<check type="tls" interval="0.2" timeout="1" rise="1" fall="1"/>"#;
    only_the_misnamed_host_goes_bad(check, "").await;
}

/// Without a `<check>`, the txLoadBalancer managers probe a TLS group's hosts
/// with a verified handshake too: heartbeat marks a host whose certificate
/// does not verify bad (a plain connect would find it up), and hostCheck does
/// not put it back.
#[tokio::test]
async fn the_managers_probe_tls_hosts_with_a_verified_handshake() {
    if python_missing() {
        return;
    }
    let managers = r#"<manager><hostCheck interval="0.2" enable="true"/><heartbeat interval="0.2" enable="true"/></manager>"#;
    let bad = only_the_misnamed_host_goes_bad("", managers).await;
    assert!(bad.contains("heartbeat"), "{bad}");
}

#[tokio::test]
async fn a_reload_rereads_the_ca_file_of_an_unchanged_group() {
    if python_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (right, other) = (client_ca(), client_ca());
    let ca_file = dir.path().join("ca.pem");
    // At first the group trusts another CA: the host does not verify.
    std::fs::write(&ca_file, &other.1.pem).unwrap();
    let (cert, key) = write_pair(dir.path(), "db", &issue("db", &["db.test"], Some(&right)));
    let host = echo_host(dir.path(), &cert, &key, None);
    let h = host.addr;
    let xml = format!(
        "<config>\n  <service name=\"svc\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
         <group name=\"g\" enable=\"true\" tls=\"true\" tlsVerify=\"ca.pem\" tlsSni=\"db.test\">\n      \
         <check type=\"tcp\" interval=\"0.2\" timeout=\"1\" rise=\"1\" fall=\"1\"/>\n      \
         <host name=\"h\" ip=\"{h}\"/>\n    </group>\n  </service>\n</config>\n"
    );
    let config = dir.path().join("lb.xml");
    std::fs::write(&config, xml).unwrap();
    let txlb = Txlb::start(&config, 2);
    let addr = listener_of(&txlb, "svc").await;
    assert!(round_trip(addr, b"hello").await.is_empty());
    let bad = super::checks::transition(&txlb, "host marked bad", "h", 0).await;
    // Both CAs have the same name: the signature is what fails.
    assert!(bad.contains("invalid peer certificate"), "{bad}");
    // The same configuration, the file now the right CA: a reload re-reads
    // it, the check (a tcp check: over a verified handshake here) takes the
    // new settings and finds the host good again, and clients are served.
    std::fs::write(&ca_file, &right.1.pem).unwrap();
    let skip = txlb.log_len();
    txlb.signal("HUP");
    txlb.wait_for_async("reload", skip).await;
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            round_trip(addr, b"again").await == b"again"
        })
        .await,
        "{}",
        txlb.log_text()
    );
}

#[tokio::test]
async fn handshakes_with_hosts_are_counted_by_result_and_timed_in_metrics_and_stats() {
    if python_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = client_ca();
    std::fs::write(dir.path().join("ca.pem"), &ca.1.pem).unwrap();
    let (cert, key) = write_pair(dir.path(), "db", &issue("db", &["db.test"], Some(&ca)));
    let host = echo_host(dir.path(), &cert, &key, None);
    let h = host.addr;
    // A plain host (it echoes the ClientHello back) and one that accepts
    // and never answers (the kernel accepts it into the backlog).
    let plain = common::echo_backend().await;
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let service = |name: &str, host: SocketAddr, sni: &str| {
        format!(
            "  <service name=\"{name}\" connectTimeout=\"0.5\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
             <group name=\"g\" enable=\"true\" tls=\"true\" tlsVerify=\"ca.pem\" tlsSni=\"{sni}\">\n      \
             <host name=\"h\" ip=\"{host}\"/>\n    </group>\n  </service>\n"
        )
    };
    let xml = format!(
        "<config>\n{}{}{}{}  <service name=\"plain\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
         <group name=\"g\" enable=\"true\"><host name=\"h\" ip=\"{plain}\"/></group>\n  </service>\n{}</config>\n",
        service("good", h, "db.test"),
        service("misnamed", h, "wrong.test"),
        service("nottls", plain, "db.test"),
        service("stalls", silent_addr, "db.test"),
        admin_block()
    );
    let config = dir.path().join("lb.xml");
    std::fs::write(&config, xml).unwrap();
    let txlb = Txlb::start(&config, 1);
    let base = admin_base(&txlb).await;
    let good = listener_of(&txlb, "good").await;
    for _ in 0..3 {
        assert_eq!(round_trip(good, b"counted").await, b"counted");
    }
    // One client each: the failure marks the one host bad, and the next
    // client would find no host to shake hands with.
    for service in ["misnamed", "nottls", "stalls"] {
        let addr = listener_of(&txlb, service).await;
        assert!(round_trip(addr, b"refused").await.is_empty(), "{service}");
    }
    let sample = |metrics: &str, service: &str, result: &str| -> u64 {
        let wanted = format!(
            "txlb_group_tls_handshakes_total{{service=\"{service}\",group=\"g\",result=\"{result}\"}} "
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&wanted))
            .unwrap_or_else(|| panic!("no {wanted}in:\n{metrics}"))
            .parse()
            .unwrap()
    };
    let metrics = common::admin::get_as(&base, FULL, "/metrics").await.1;
    for (service, wanted) in [
        ("good", [3, 0, 0, 0]),
        ("misnamed", [0, 1, 0, 0]),
        ("nottls", [0, 0, 1, 0]),
        ("stalls", [0, 0, 0, 1]),
    ] {
        let got: Vec<u64> = ["ok", "verify_failed", "handshake_error", "timeout"]
            .iter()
            .map(|result| sample(&metrics, service, result))
            .collect();
        assert_eq!(got, wanted, "{service}:\n{metrics}");
    }
    // Only groups that originate have the families.
    assert!(!metrics.contains("service=\"plain\",group=\"g\",result="));
    assert!(
        metrics.contains("txlb_group_tls_handshake_seconds_count{service=\"good\",group=\"g\"} 3"),
        "{metrics}"
    );
    let sum: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("txlb_group_tls_handshake_seconds_sum{service=\"good\",group=\"g\"} ")
        })
        .unwrap()
        .parse()
        .unwrap();
    assert!(sum > 0.0 && sum < 3.0, "{sum}");
    // The same in the JSON stats of the group; a reload keeps the counts.
    let skip = txlb.log_len();
    txlb.signal("HUP");
    txlb.wait_for_async("reload", skip).await;
    assert_eq!(round_trip(good, b"after").await, b"after");
    let (status, body) = common::admin::get_as(&base, FULL, "/api/v1/services/good").await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let tls = &json["groups"][0]["tls"];
    assert_eq!(
        tls["handshakes"],
        serde_json::json!([
            ["ok", 4],
            ["verify_failed", 0],
            ["handshake_error", 0],
            ["timeout", 0]
        ]),
        "{body}"
    );
    let latency = &tls["handshake_latency"];
    let counts: u64 = latency["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(counts, 4, "{body}");
    let (_, plain) = common::admin::get_as(&base, FULL, "/api/v1/services/plain").await;
    assert!(!plain.contains("handshakes"), "{plain}");
    drop(silent);
}
