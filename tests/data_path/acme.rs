//! Certificates from ACME end to end: the `txlb` binary against Debian's
//! `pebble` (an ACME test server) on loopback ports, validating for real —
//! `tls-alpn-01` on txlb's terminating listener, `http-01` on a plain
//! listener with `acmeHttp` — the names resolved to 127.0.0.1 by the tests'
//! in-memory name server (pebble's `-dnsserver`). Pebble's validator
//! connects to the ports of its configuration, so txlb starts first (its
//! listeners on port 0), pebble is pointed at them, and a reload gives the
//! listener its `<tls acme>`. Each test skips where pebble is absent, unless
//! `TXLB_REQUIRE_HOSTS` is set.

use crate::common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::time::{Duration, Instant};

use common::binary::Txlb;
use common::servers::{Server, binary, free_port};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::dns::Zone;
use super::routing::{admin_base, admin_block};
use super::tls::{client_ca, issue, rustls_client, write_pair};

/// Longest wait for an order (pebble validates at once: seconds at most).
const ORDER_WAIT: Duration = Duration::from_secs(60);

/// The log line of an issued certificate, and of a failed order.
const ISSUED: &str = "certificate issued by ACME";
const FAILED: &str = "ordering a certificate from ACME failed";

/// A running pebble: its directory URL, the CA its own HTTPS certificate
/// is signed by (txlb's `caBundle`), its management address.
struct Pebble {
    server: Option<Server>,
    directory: String,
    listen: u16,
    ca: PathBuf,
    management: SocketAddr,
    dir: tempfile::TempDir,
    /// Pebble's two ports, bound here until it starts: a port only picked
    /// could be taken by another test meanwhile (pebble then exits, and
    /// txlb's orders reach whatever took it).
    hold: Vec<std::net::TcpListener>,
}

impl Pebble {
    /// Pebble's files and ports, not started yet (its directory URL can go
    /// in txlb's configuration first). `None` (having said why) where pebble
    /// is not installed.
    fn prepare() -> Option<Pebble> {
        binary(&["/usr/bin/pebble"], "pebble")?;
        let dir = tempfile::tempdir().unwrap();
        let ca = client_ca();
        let own = issue("pebble", &["127.0.0.1", "localhost"], Some(&ca));
        write_pair(dir.path(), "pebble", &own);
        let ca_file = dir.path().join("pebble-ca.pem");
        std::fs::write(&ca_file, &ca.1.pem).unwrap();
        let hold: Vec<std::net::TcpListener> = (0..2)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let port = |i: usize| hold[i].local_addr().unwrap().port();
        let (listen, management) = (port(0), port(1));
        Some(Pebble {
            hold,
            server: None,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            listen,
            ca: ca_file,
            management: SocketAddr::from(([127, 0, 0, 1], management)),
            dir,
        })
    }

    /// Starts pebble validating `http-01` on `http_port` and `tls-alpn-01` on
    /// `tls_port`, resolving names with `dns`, issuing certificates valid
    /// `validity` seconds if given.
    fn start(&mut self, dns: SocketAddr, http_port: u16, tls_port: u16, validity: Option<u64>) {
        let validity = validity
            .map(|s| format!(", \"certificateValidityPeriod\": {s}"))
            .unwrap_or_default();
        let config = format!(
            "{{\"pebble\": {{\"listenAddress\": \"127.0.0.1:{}\", \
             \"managementListenAddress\": \"{}\", \
             \"certificate\": \"{}\", \"privateKey\": \"{}\", \
             \"httpPort\": {http_port}, \"tlsPort\": {tls_port}, \
             \"ocspResponderURL\": \"\", \"externalAccountBindingRequired\": false{validity}}}}}",
            self.listen,
            self.management,
            self.dir.path().join("pebble.pem").display(),
            self.dir.path().join("pebble.key").display()
        );
        let config_file = self.dir.path().join("pebble.json");
        std::fs::write(&config_file, config).unwrap();
        self.hold.clear();
        let mut command = StdCommand::new("/usr/bin/pebble");
        command
            .args(["-config"])
            .arg(&config_file)
            .args(["-dnsserver", &dns.to_string()])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0");
        let addr = SocketAddr::from(([127, 0, 0, 1], self.listen));
        let mut server = Server::start(command, addr, &self.dir.path().join("pebble.log"));
        // Pebble binds its management port beside the directory's and
        // exits if it cannot: up only once both answer and it still runs
        // (a CI run once saw every order refused with nothing said why).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up =
                std::net::TcpStream::connect_timeout(&self.management, Duration::from_millis(200))
                    .is_ok();
            std::thread::sleep(Duration::from_millis(50));
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("pebble ended ({status}):\n{}", server.log_text());
            }
            if up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pebble does not listen on {}:\n{}",
                self.management,
                server.log_text()
            );
        }
        self.server = Some(server);
    }

    /// Stops pebble.
    fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
    }

    /// The root of the certificates pebble issues (new at each start of
    /// pebble), from its management interface.
    fn root(&self) -> CertificateDer<'static> {
        let out = StdCommand::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&self.ca)
            .arg(format!("https://{}/roots/0", self.management))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        CertificateDer::from_pem_slice(&out.stdout).expect("a PEM root")
    }

    /// Accounts pebble created so far.
    fn accounts(&self) -> usize {
        self.log().matches("POST /sign-me-up").count()
    }

    fn log(&self) -> String {
        self.server
            .as_ref()
            .map(|s| s.log_text())
            .unwrap_or_default()
    }

    /// New orders pebble took so far.
    fn orders(&self) -> usize {
        self.server
            .as_ref()
            .map(|s| s.log_text())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("POST /order-plz"))
            .count()
    }
}

/// A test that fails with pebble running shows pebble's side too.
impl Drop for Pebble {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("pebble's log:\n{}", self.log());
        }
    }
}

/// A configuration with service `edge` (its listener on 127.0.0.1:0, with
/// `edge_tls` inside) and service `web` (a plain listener with `acmeHttp`),
/// both in front of the echo host `host`, the admin web server, and `acme`.
fn config(host: SocketAddr, edge_tls: &str, acme: &str) -> String {
    format!(
        "<config>\n  <service name=\"edge\">\n    <listen ip=\"127.0.0.1:0\">{edge_tls}</listen>\n    \
         <group name=\"g\" enable=\"true\"><host name=\"h1\" ip=\"{host}\"/></group>\n  </service>\n  \
         <service name=\"web\">\n    <listen ip=\"127.0.0.1:0\" acmeHttp=\"true\"/>\n    \
         <group name=\"g\" enable=\"true\"><host name=\"h1\" ip=\"{host}\"/></group>\n  </service>\n\
         {}  {acme}\n</config>\n",
        admin_block()
    )
}

/// `<acme>` for `pebble`, storing under `storage`.
fn acme_element(pebble: &Pebble, storage: &Path, extra: &str) -> String {
    format!(
        "<acme directory=\"{}\" email=\"ops@a.test\" storage=\"{}\" caBundle=\"{}\"{extra}/>",
        pebble.directory,
        storage.display(),
        pebble.ca.display()
    )
}

/// The address of `service`'s listener, from its "listener up" line.
async fn listener_of(txlb: &Txlb, service: &str) -> SocketAddr {
    let (wanted, quoted) = (
        format!("service={service} "),
        format!("service=\"{service}\""),
    );
    let find = || {
        txlb.log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("listener up") && (l.contains(&wanted) || l.contains(&quoted)))
            .cloned()
    };
    let found = common::eventually(Duration::from_secs(10), || async { find().is_some() }).await;
    assert!(found, "no listener for {service}:\n{}", txlb.log_text());
    let line = find().unwrap();
    let local = line.split("local=").nth(1).unwrap();
    local
        .split_whitespace()
        .next()
        .unwrap()
        .trim_matches('"')
        .parse()
        .unwrap()
}

/// Waits until the log has `count` lines containing `needle`.
async fn logged(txlb: &Txlb, needle: &str, count: usize) {
    let found = common::eventually(ORDER_WAIT, || async { txlb.count(needle) >= count }).await;
    assert!(found, "not {count} {needle:?} in:\n{}", txlb.log_text());
}

/// The certificate `addr` serves to `name`, verified against `root`, and
/// that `data` goes through it and back unchanged (the echo host).
async fn served(
    addr: SocketAddr,
    name: &str,
    root: &CertificateDer<'static>,
) -> CertificateDer<'static> {
    let mut stream = rustls_client(addr, name, std::slice::from_ref(root), &[])
        .await
        .unwrap_or_else(|e| panic!("TLS to {addr} as {name}: {e}"));
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let data = b"through a certificate from ACME\n";
    stream.write_all(data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, data);
    leaf
}

/// Writes `xml` over `path` and reloads `txlb` (SIGHUP), waiting for it.
async fn reload(txlb: &Txlb, path: &Path, xml: &str) {
    let before = txlb.count("configuration reloaded");
    std::fs::write(path, xml).unwrap();
    txlb.signal("HUP");
    logged(txlb, "configuration reloaded", before + 1).await;
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_orders_serves_and_a_restart_reuses_the_stored_certificate() {
    let zone = Zone::default();
    zone.set("a.test", &["127.0.0.1"]);
    zone.set("www.a.test", &["127.0.0.1"]);
    let dns = zone.serve().await;
    let host = common::echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("acme");
    let path = dir.path().join("lb.xml");
    let Some(mut pebble) = Pebble::prepare() else {
        return;
    };
    let acme = acme_element(&pebble, &storage, "");
    // Plain first: its port is what pebble validates on.
    std::fs::write(&path, config(host, "", &acme)).unwrap();
    let txlb = Txlb::start(&path, 1);
    let edge = listener_of(&txlb, "edge").await;
    pebble.start(dns, free_port(), edge.port(), None);
    let tls = "<tls acme=\"a.test www.a.test\"/>";
    reload(&txlb, &path, &config(host, tls, &acme)).await;
    logged(&txlb, ISSUED, 1).await;
    let root = pebble.root();
    let leaf = served(edge, "www.a.test", &root).await;
    served(edge, "a.test", &root).await;
    assert_eq!(txlb.count(FAILED), 0, "{}", txlb.log_text());
    // Listed as from ACME, with its names and issuer; in /metrics.
    let base = admin_base(&txlb).await;
    let (status, body) =
        common::admin::get_as(&base, common::admin::FULL, "/api/v1/certificates").await;
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["service"] == "edge")
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(entry["source"], "acme", "{body}");
    assert_eq!(
        entry["names"],
        serde_json::json!(["a.test", "www.a.test"]),
        "{body}"
    );
    assert!(
        entry["issuer"].as_str().unwrap().contains("Pebble"),
        "{body}"
    );
    assert!(entry["expires_in"].as_i64().unwrap() > 86_400, "{body}");
    let metrics = common::admin::get_as(&base, common::admin::FULL, "/metrics")
        .await
        .1;
    assert!(
        metrics.contains(
            "txlb_tls_certificate_expiry_seconds{listener=\"127.0.0.1:0\",name=\"a.test\"}"
        ),
        "{metrics}"
    );
    // Kept under storage, private.
    assert_eq!(mode(&storage), 0o700);
    let files: Vec<PathBuf> = std::fs::read_dir(&storage)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 3, "account, chain, key: {files:?}");
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    // A restart (on the same port, where pebble validates) serves the
    // stored certificate and orders nothing.
    let orders = pebble.orders();
    let account = std::fs::read(storage.join("account.json")).unwrap();
    drop(txlb);
    let same_port = config(host, tls, &acme).replacen("127.0.0.1:0", &edge.to_string(), 1);
    std::fs::write(&path, &same_port).unwrap();
    let txlb = Txlb::start(&path, 1);
    logged(&txlb, "serving the stored ACME certificate", 1).await;
    assert_eq!(listener_of(&txlb, "edge").await, edge);
    assert_eq!(served(edge, "a.test", &root).await, leaf);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(txlb.count(ISSUED), 0, "{}", txlb.log_text());
    assert_eq!(pebble.orders(), orders);
    // New names: a new order, from the stored account (no new one).
    zone.set("new.a.test", &["127.0.0.1"]);
    let more = same_port.replace("a.test www.a.test", "a.test new.a.test");
    reload(&txlb, &path, &more).await;
    logged(&txlb, ISSUED, 1).await;
    served(edge, "new.a.test", &root).await;
    assert_eq!(pebble.accounts(), 1);
    assert_eq!(
        std::fs::read(storage.join("account.json")).unwrap(),
        account
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_01_is_answered_on_a_listener_that_passes_its_other_clients_through() {
    let zone = Zone::default();
    zone.set("b.test", &["127.0.0.1"]);
    let dns = zone.serve().await;
    let host = common::echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    let Some(mut pebble) = Pebble::prepare() else {
        return;
    };
    let acme = acme_element(&pebble, &dir.path().join("acme"), " challenge=\"http-01\"");
    std::fs::write(&path, config(host, "", &acme)).unwrap();
    let txlb = Txlb::start(&path, 1);
    let (edge, web) = (
        listener_of(&txlb, "edge").await,
        listener_of(&txlb, "web").await,
    );
    pebble.start(dns, web.port(), free_port(), None);
    // Clients of the plain listener while the order runs, every one echoed
    // byte for byte: an HTTP request for another path, one for a challenge
    // txlb does not answer, binary bytes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = tokio::spawn({
        let stop = stop.clone();
        async move {
            let sends: [&[u8]; 3] = [
                b"GET / HTTP/1.1\r\nHost: b.test\r\n\r\n",
                b"GET /.well-known/acme-challenge/not-ours HTTP/1.1\r\n\r\n",
                &[0, 1, 2, 255, 254, b'\n'],
            ];
            let mut rounds = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && rounds < 2000 {
                let data = sends[rounds as usize % sends.len()];
                let mut stream = TcpStream::connect(web).await.unwrap();
                stream.write_all(data).await.unwrap();
                let mut back = vec![0u8; data.len()];
                tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back))
                    .await
                    .expect("echo in time")
                    .unwrap();
                assert_eq!(back, data);
                rounds += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            rounds
        }
    });
    reload(&txlb, &path, &config(host, "<tls acme=\"b.test\"/>", &acme)).await;
    logged(&txlb, ISSUED, 1).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = clients.await.unwrap();
    assert!(rounds > 0);
    assert!(
        txlb.count("answered an ACME http-01 validation") >= 1,
        "{}",
        txlb.log_text()
    );
    served(edge, "b.test", &pebble.root()).await;
    // After the order, the challenge path is the service's too.
    let data = b"GET /.well-known/acme-challenge/x HTTP/1.1\r\n\r\n";
    let mut stream = TcpStream::connect(web).await.unwrap();
    stream.write_all(data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_swaps_the_certificate_under_a_running_transfer_and_a_failure_backs_off() {
    let zone = Zone::default();
    zone.set("c.test", &["127.0.0.1"]);
    let dns = zone.serve().await;
    let host = common::echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    let Some(mut pebble) = Pebble::prepare() else {
        return;
    };
    let acme = acme_element(&pebble, &dir.path().join("acme"), " renewBefore=\"30\"");
    std::fs::write(&path, config(host, "", &acme)).unwrap();
    let txlb = Txlb::start(&path, 1);
    let edge = listener_of(&txlb, "edge").await;
    // Certificates of 40 s renewed 30 s before their end: every 10 s.
    pebble.start(dns, free_port(), edge.port(), Some(40));
    reload(&txlb, &path, &config(host, "<tls acme=\"c.test\"/>", &acme)).await;
    logged(&txlb, ISSUED, 1).await;
    let root = pebble.root();
    let first = served(edge, "c.test", &root).await;
    // A transfer that starts on the first certificate and runs across the
    // renewal: every byte echoed, in order.
    let stream = rustls_client(edge, "c.test", std::slice::from_ref(&root), &[])
        .await
        .unwrap();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let reading = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    });
    let started = Instant::now();
    let mut sent = 0usize;
    while txlb.count(ISSUED) < 2 && started.elapsed() < ORDER_WAIT {
        writer.write_all(&chunk).await.unwrap();
        sent += chunk.len();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(txlb.count(ISSUED) >= 2, "no renewal:\n{}", txlb.log_text());
    for _ in 0..4 {
        writer.write_all(&chunk).await.unwrap();
        sent += chunk.len();
    }
    writer.shutdown().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), reading)
        .await
        .expect("the transfer ends")
        .unwrap();
    assert_eq!(got.len(), sent);
    assert!(got.chunks(chunk.len()).all(|c| c == chunk.as_slice()));
    let renewed = served(edge, "c.test", &root).await;
    assert_ne!(renewed, first, "a new client gets the renewed certificate");
    // Pebble gone: the next renewal fails, is told, backs off (no second
    // try at once), and the listener keeps serving the certificate it has.
    let issued = txlb.count(ISSUED);
    pebble.stop();
    logged(&txlb, FAILED, 1).await;
    let failure = txlb.find(FAILED, 0).unwrap();
    assert!(failure.contains("retry_in=60"), "{failure}");
    assert!(failure.contains("c.test"), "{failure}");
    served(edge, "c.test", &root).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(txlb.count(FAILED), 1, "{}", txlb.log_text());
    assert_eq!(txlb.count(ISSUED), issued);
}

#[tokio::test]
async fn until_a_certificate_is_issued_tls_clients_are_refused_with_a_log_line() {
    // An ACME server that is not there: the order fails at once.
    let dir = tempfile::tempdir().unwrap();
    let host = common::echo_backend().await;
    let ca = client_ca();
    std::fs::write(dir.path().join("ca.pem"), &ca.1.pem).unwrap();
    let acme = format!(
        "<acme directory=\"https://127.0.0.1:{}/dir\" storage=\"{}\" caBundle=\"{}\"/>",
        common::closed_port().port(),
        dir.path().join("acme").display(),
        dir.path().join("ca.pem").display()
    );
    let path = dir.path().join("lb.xml");
    std::fs::write(&path, config(host, "<tls acme=\"d.test\"/>", &acme)).unwrap();
    let txlb = Txlb::start(&path, 1);
    logged(&txlb, FAILED, 1).await;
    let failure = txlb.find(FAILED, 0).unwrap();
    assert!(
        failure.contains("retry_in=60") && failure.contains("d.test"),
        "{failure}"
    );
    let edge = listener_of(&txlb, "edge").await;
    let refused = rustls_client(edge, "d.test", std::slice::from_ref(&ca.1.der), &[]).await;
    assert!(
        refused.is_err(),
        "a TLS client was served without a certificate"
    );
    logged(&txlb, "not issued yet", 1).await;
    let base = admin_base(&txlb).await;
    let metrics = common::admin::get_as(&base, common::admin::FULL, "/metrics")
        .await
        .1;
    assert!(
        metrics.contains("reason=\"no_certificate\"} 1"),
        "{metrics}"
    );
    let page = common::admin::get_as(&base, common::admin::FULL, "/")
        .await
        .1;
    assert!(
        page.contains("certificate from ACME for d.test not issued yet"),
        "{page}"
    );
}

#[test]
fn txlb_check_reports_the_names_ordered_also_in_fleet_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    let host: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let acme = "<acme directory=\"https://acme.test/dir\" storage=\"acme\"/>";
    std::fs::write(
        &path,
        config(host, "<tls acme=\"e.test www.e.test\"/>", acme),
    )
    .unwrap();
    let check = |path: &Path| {
        StdCommand::new(env!("CARGO_BIN_EXE_txlb"))
            .arg("check")
            .arg(path)
            .output()
            .unwrap()
    };
    let out = check(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("from ACME: e.test www.e.test"), "{text}");
    // Fleet mode: accepted (the fleet shares the certificates through etcd).
    let fleet = config(host, "<tls acme=\"e.test\"/>", acme).replace(
        "</config>",
        "  <cluster etcd=\"http://127.0.0.1:2379\" prefix=\"/txlb\" name=\"a\"/>\n</config>",
    );
    std::fs::write(&path, &fleet).unwrap();
    let out = check(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The DNS names of a leaf certificate (its subject alternative names).
fn names_of(leaf: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        })
        .collect()
}

/// Service `edge` with `edge_tls` in its listener, service `api` with
/// `api_tls` in its own, both in front of `host`, the admin web server and
/// `acme`.
fn two_listeners(host: SocketAddr, edge_tls: &str, api_tls: &str, acme: &str) -> String {
    format!(
        "<config>\n  <service name=\"edge\">\n    <listen ip=\"127.0.0.1:0\">{edge_tls}</listen>\n    \
         <group name=\"g\" enable=\"true\"><host name=\"h1\" ip=\"{host}\"/></group>\n  </service>\n  \
         <service name=\"api\">\n    <listen ip=\"127.0.0.1:0\">{api_tls}</listen>\n    \
         <group name=\"g\" enable=\"true\"><host name=\"h1\" ip=\"{host}\"/></group>\n  </service>\n\
         {}  {acme}\n</config>\n",
        admin_block()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tls_acme_of_each_listener_gets_its_own_certificate_chosen_by_sni() {
    let zone = Zone::default();
    for name in ["m1.test", "www.m1.test", "m2.test", "m3.test"] {
        zone.set(name, &["127.0.0.1"]);
    }
    // nowhere.test is not in the zone: its order fails, the others' do not.
    let dns = zone.serve().await;
    let host = common::echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("acme");
    let path = dir.path().join("lb.xml");
    let Some(mut pebble) = Pebble::prepare() else {
        return;
    };
    let acme = acme_element(&pebble, &storage, "");
    std::fs::write(&path, two_listeners(host, "", "", &acme)).unwrap();
    let txlb = Txlb::start(&path, 1);
    let (edge, api) = (
        listener_of(&txlb, "edge").await,
        listener_of(&txlb, "api").await,
    );
    // Pebble validates on edge's port: api's names are answered there too
    // (as they would be on port 443 of every name).
    pebble.start(dns, free_port(), edge.port(), None);
    let edge_tls = "<tls acme=\"m1.test www.m1.test\"/><tls acme=\"m2.test\"/>\
                    <tls acme=\"nowhere.test\"/>";
    let api_tls = "<tls acme=\"m3.test\"/>";
    let both = two_listeners(host, edge_tls, api_tls, &acme);
    reload(&txlb, &path, &both).await;
    logged(&txlb, ISSUED, 3).await;
    logged(&txlb, FAILED, 1).await;
    assert!(
        txlb.find(FAILED, 0).unwrap().contains("nowhere.test"),
        "{}",
        txlb.log_text()
    );
    let root = pebble.root();
    let m1 = served(edge, "www.m1.test", &root).await;
    assert_eq!(names_of(&m1), ["m1.test", "www.m1.test"]);
    assert_eq!(served(edge, "m1.test", &root).await, m1);
    let m2 = served(edge, "m2.test", &root).await;
    assert_eq!(names_of(&m2), ["m2.test"]);
    let m3 = served(api, "m3.test", &root).await;
    assert_eq!(names_of(&m3), ["m3.test"]);
    // Each listener serves its own names only: another's SNI gets the
    // listener's first certificate, which does not verify for it.
    assert!(
        rustls_client(api, "m2.test", std::slice::from_ref(&root), &[])
            .await
            .is_err()
    );
    // The certificate that failed: its clients are refused and counted,
    // the listener's other clients served.
    let refused = rustls_client(edge, "nowhere.test", std::slice::from_ref(&root), &[]).await;
    assert!(refused.is_err(), "served without a certificate");
    served(edge, "m2.test", &root).await;
    assert_eq!(pebble.orders(), 4, "{}", pebble.log());
    let base = admin_base(&txlb).await;
    let (status, body) =
        common::admin::get_as(&base, common::admin::FULL, "/api/v1/certificates").await;
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let listed: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["source"], "acme", "{body}");
            (
                c["service"].as_str().unwrap().to_string(),
                c["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(s, n)| (s.to_string(), n.to_string()))
            .collect()
    };
    assert_eq!(
        listed,
        pairs(&[("edge", "m1.test"), ("edge", "m2.test"), ("api", "m3.test")]),
        "{body}"
    );
    let metrics = common::admin::get_as(&base, common::admin::FULL, "/metrics")
        .await
        .1;
    assert!(
        metrics.contains("reason=\"no_certificate\"} 1"),
        "{metrics}"
    );
    let page = common::admin::get_as(&base, common::admin::FULL, "/")
        .await
        .1;
    assert!(
        page.contains("certificate from ACME for nowhere.test not issued yet"),
        "{page}"
    );
    assert!(!page.contains("for m2.test not issued"), "{page}");
    // A restart on the same ports serves all three from storage.
    drop(txlb);
    let same_ports = both.replacen("127.0.0.1:0", &edge.to_string(), 1).replacen(
        "127.0.0.1:0",
        &api.to_string(),
        1,
    );
    std::fs::write(&path, &same_ports).unwrap();
    let txlb = Txlb::start(&path, 1);
    logged(&txlb, "serving the stored ACME certificate", 3).await;
    assert_eq!(served(edge, "m2.test", &root).await, m2);
    assert_eq!(served(api, "m3.test", &root).await, m3);
    assert_eq!(txlb.count(ISSUED), 0, "{}", txlb.log_text());
}

/// The serial number of a leaf certificate.
fn serial_of(leaf: &CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
    cert.raw_serial_as_string()
}

/// A fleet instance's file: service `edge` with `tls` in its listener, in
/// front of `host`, `acme`, and `<cluster>` naming `name`.
fn fleet_config(host: SocketAddr, tls: &str, acme: &str, etcd: &str, name: &str) -> String {
    format!(
        "<config>\n  <service name=\"edge\">\n    <listen ip=\"127.0.0.1:0\">{tls}</listen>\n    \
         <group name=\"g\" enable=\"true\"><host name=\"h1\" ip=\"{host}\"/></group>\n  </service>\n  \
         {acme}\n  <cluster etcd=\"{etcd}\" prefix=\"/txlb/acme-test\" name=\"{name}\"/>\n</config>\n"
    )
}

/// `txlb fleet push --config FILE`, which must succeed.
fn push(file: &Path) {
    let out = StdCommand::new(env!("CARGO_BIN_EXE_txlb"))
        .args(["fleet", "push", "--config"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_orders_each_certificate_once_and_every_instance_serves_it() {
    let Some(etcd_binary) = common::etcd::etcd_binary() else {
        eprintln!("SKIPPED: etcd is not installed (scripts/test.sh installs etcd-server)");
        return;
    };
    let Some(mut pebble) = Pebble::prepare() else {
        return;
    };
    let etcd = common::etcd::Etcd::start(etcd_binary);
    let zone = Zone::default();
    zone.set("f1.test", &["127.0.0.1"]);
    zone.set("f2.test", &["127.0.0.1"]);
    let dns = zone.serve().await;
    let host = common::echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("acme");
    let acme = acme_element(&pebble, &storage, "");
    let file = |name: &str, tls: &str| {
        let path = dir.path().join(format!("{name}.xml"));
        std::fs::write(&path, fleet_config(host, tls, &acme, &etcd.url(), name)).unwrap();
        path
    };
    push(&file("a", ""));
    let a = Txlb::start(&file("a", ""), 1);
    let b = Txlb::start(&file("b", ""), 1);
    let (a_edge, b_edge) = (listener_of(&a, "edge").await, listener_of(&b, "edge").await);
    // The ACME server validates on a's port only: what b orders, a must
    // answer (as with one address in front of the fleet).
    pebble.start(dns, free_port(), a_edge.port(), None);
    // Two certificates: while one instance orders the first, the other
    // takes the second.
    push(&file("a", "<tls acme=\"f1.test\"/><tls acme=\"f2.test\"/>"));
    let issued = || a.count(ISSUED) + b.count(ISSUED);
    let both = common::eventually(ORDER_WAIT, || async { issued() >= 2 }).await;
    assert!(
        both,
        "a:\n{}\nb:\n{}\npebble:\n{}",
        a.log_text(),
        b.log_text(),
        pebble.log()
    );
    assert_eq!(
        a.count(FAILED) + b.count(FAILED),
        0,
        "a (edge {a_edge}):\n{}\nb (edge {b_edge}):\n{}",
        a.log_text(),
        b.log_text()
    );
    assert!(
        b.count(ISSUED) >= 1,
        "b ordered nothing (its validations went to a):\n{}",
        b.log_text()
    );
    // Each certificate ordered once, from one account; both instances serve
    // the same ones (b's from etcd, or a's).
    let root = pebble.root();
    for name in ["f1.test", "f2.test"] {
        let mut same = false;
        for _ in 0..40 {
            let (x, y) = (
                rustls_client(a_edge, name, std::slice::from_ref(&root), &[]).await,
                rustls_client(b_edge, name, std::slice::from_ref(&root), &[]).await,
            );
            if let (Ok(x), Ok(y)) = (x, y) {
                let leaf = |s: &tokio_rustls::client::TlsStream<TcpStream>| {
                    s.get_ref().1.peer_certificates().unwrap()[0].clone()
                };
                if serial_of(&leaf(&x)) == serial_of(&leaf(&y)) {
                    same = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(
            same,
            "{name}: not the same certificate on both:\n{}\n{}",
            a.log_text(),
            b.log_text()
        );
    }
    assert_eq!(pebble.orders(), 2, "{}", pebble.log());
    assert_eq!(pebble.accounts(), 1, "{}", pebble.log());
    assert_eq!(issued(), 2);
    let f1 = served(b_edge, "f1.test", &root).await;
    let f2 = served(b_edge, "f2.test", &root).await;
    // A restart of b, without its local copies: served from etcd, nothing
    // ordered.
    drop(b);
    std::fs::remove_dir_all(&storage).unwrap();
    let b = Txlb::start(&file("b", ""), 1);
    let b_edge = listener_of(&b, "edge").await;
    logged(&b, "serving the stored ACME certificate", 2).await;
    assert_eq!(served(b_edge, "f1.test", &root).await, f1);
    assert_eq!(served(b_edge, "f2.test", &root).await, f2);
    assert!(
        b.find("serving the stored ACME certificate", 0)
            .unwrap()
            .contains("etcd:/txlb/acme-test/acme/certs/")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.count(ISSUED), 0, "{}", b.log_text());
    assert_eq!(pebble.orders(), 2);
    drop(etcd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_renews_once_and_every_instance_installs_the_renewed_certificate() {
    let Some(etcd_binary) = common::etcd::etcd_binary() else {
        eprintln!("SKIPPED: etcd is not installed (scripts/test.sh installs etcd-server)");
        return;
    };
    let Some(mut pebble) = Pebble::prepare() else {
        return;
    };
    let etcd = common::etcd::Etcd::start(etcd_binary);
    let zone = Zone::default();
    zone.set("r.test", &["127.0.0.1"]);
    let dns = zone.serve().await;
    let host = common::echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let acme = acme_element(&pebble, &dir.path().join("acme"), " renewBefore=\"30\"");
    let file = |name: &str, tls: &str| {
        let path = dir.path().join(format!("{name}.xml"));
        std::fs::write(&path, fleet_config(host, tls, &acme, &etcd.url(), name)).unwrap();
        path
    };
    push(&file("a", ""));
    let a = Txlb::start(&file("a", ""), 1);
    let b = Txlb::start(&file("b", ""), 1);
    let (a_edge, b_edge) = (listener_of(&a, "edge").await, listener_of(&b, "edge").await);
    // Certificates of 40 s renewed 30 s before their end: every 10 s.
    pebble.start(dns, free_port(), a_edge.port(), Some(40));
    push(&file("a", "<tls acme=\"r.test\"/>"));
    let issued = || a.count(ISSUED) + b.count(ISSUED);
    let root = pebble.root();
    // Both serve the same certificate, whoever ordered it.
    let serials = || async {
        let mut out = Vec::new();
        for edge in [a_edge, b_edge] {
            match rustls_client(edge, "r.test", std::slice::from_ref(&root), &[]).await {
                Ok(s) => out.push(serial_of(&s.get_ref().1.peer_certificates().unwrap()[0])),
                Err(_) => out.push(String::new()),
            }
        }
        out
    };
    // Both serve one certificate, other than `old`, after `min_issued` orders
    // (counted before the serials are read: an order logged in between must
    // not pass with both still serving the one before it).
    let agreed = |min_issued: usize, old: String| {
        let serials = &serials;
        let issued = &issued;
        async move {
            common::eventually(ORDER_WAIT, || async {
                let ordered = issued();
                let s = serials().await;
                ordered >= min_issued && !s[0].is_empty() && s[0] == s[1] && s[0] != old
            })
            .await
        }
    };
    assert!(
        agreed(1, String::new()).await,
        "{}\n{}",
        a.log_text(),
        b.log_text()
    );
    let first = serials().await[0].clone();
    // Renewed: one new order, and both move to the new certificate.
    assert!(
        agreed(2, first.clone()).await,
        "{}\n{}",
        a.log_text(),
        b.log_text()
    );
    let renewed = serials().await;
    assert_ne!(renewed[0], first, "{}\n{}", a.log_text(), b.log_text());
    assert!(
        b.count("serving the stored ACME certificate")
            + a.count("serving the stored ACME certificate")
            >= 1,
        "neither installed the other's renewal:\n{}\n{}",
        a.log_text(),
        b.log_text()
    );
    // Every order pebble took is one certificate issued to one instance:
    // none ordered twice.
    let (orders, issued_now) = (pebble.orders(), issued());
    assert!(
        orders == issued_now || orders == issued_now + 1,
        "{orders} orders, {issued_now} issued:\n{}\n{}",
        a.log_text(),
        b.log_text()
    );
    assert_eq!(a.count(FAILED) + b.count(FAILED), 0);
    drop(etcd);
}

/// A request to etcd's JSON gateway at `etcd` (curl): its answer.
fn etcd_call(etcd: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let out = StdCommand::new("curl")
        .args(["-sS", "--max-time", "5", "-X", "POST", "-d"])
        .arg(body.to_string())
        .arg(format!("{etcd}{path}"))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_waits_for_the_lock_of_a_dead_instance_and_skips_a_bad_stored_certificate() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let Some(etcd_binary) = common::etcd::etcd_binary() else {
        eprintln!("SKIPPED: etcd is not installed (scripts/test.sh installs etcd-server)");
        return;
    };
    let Some(mut pebble) = Pebble::prepare() else {
        return;
    };
    let etcd = common::etcd::Etcd::start(etcd_binary);
    let zone = Zone::default();
    zone.set("w.test", &["127.0.0.1"]);
    let dns = zone.serve().await;
    let host = common::echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let acme = acme_element(&pebble, &dir.path().join("acme"), "");
    let file = |name: &str, tls: &str| {
        let path = dir.path().join(format!("{name}.xml"));
        std::fs::write(&path, fleet_config(host, tls, &acme, &etcd.url(), name)).unwrap();
        path
    };
    push(&file("a", ""));
    let a = Txlb::start(&file("a", ""), 1);
    let b = Txlb::start(&file("b", ""), 1);
    let (a_edge, b_edge) = (listener_of(&a, "edge").await, listener_of(&b, "edge").await);
    pebble.start(dns, free_port(), a_edge.port(), None);
    // What an instance that died while ordering leaves: the lock, on a
    // lease nobody renews (4 s); and something in etcd that is not a
    // certificate where w.test's would be.
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let hash: String = sha2::Sha256::digest(b"w.test")[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let base = format!("/txlb/acme-test/acme/{{}}/w.test-{hash}");
    let lease = etcd_call(
        &etcd.url(),
        "/v3/lease/grant",
        serde_json::json!({ "TTL": "4" }),
    );
    let lease = lease["ID"].as_str().unwrap().to_string();
    etcd_call(
        &etcd.url(),
        "/v3/kv/put",
        serde_json::json!({
            "key": b64(&base.replace("{}", "locks")), "value": b64("dead"), "lease": lease,
        }),
    );
    etcd_call(
        &etcd.url(),
        "/v3/kv/put",
        serde_json::json!({ "key": b64(&base.replace("{}", "certs")), "value": b64("garbage") }),
    );
    let locked_at = Instant::now();
    push(&file("a", "<tls acme=\"w.test\"/>"));
    logged(&a, "stored ACME certificate does not load", 1).await;
    // Nobody orders while the lock is held.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pebble.orders(), 0, "{}\n{}", a.log_text(), b.log_text());
    // Once it is gone, one instance orders, and both serve the certificate.
    let issued = || a.count(ISSUED) + b.count(ISSUED);
    assert!(
        common::eventually(ORDER_WAIT, || async { issued() >= 1 }).await,
        "{}\n{}",
        a.log_text(),
        b.log_text()
    );
    assert!(locked_at.elapsed() >= Duration::from_secs(3));
    let root = pebble.root();
    let served_both = common::eventually(Duration::from_secs(10), || async {
        let (x, y) = (
            rustls_client(a_edge, "w.test", std::slice::from_ref(&root), &[]).await,
            rustls_client(b_edge, "w.test", std::slice::from_ref(&root), &[]).await,
        );
        match (x, y) {
            (Ok(x), Ok(y)) => {
                x.get_ref().1.peer_certificates().unwrap()[0]
                    == y.get_ref().1.peer_certificates().unwrap()[0]
            }
            _ => false,
        }
    })
    .await;
    assert!(served_both, "{}\n{}", a.log_text(), b.log_text());
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    assert_eq!(issued(), 1);
    drop(etcd);
}
