//! The real `txlb` binary with `<admin><web>` in its XML configuration: the admin
//! server comes up with the balancer, answers the legacy API with the configured
//! users (a DES hash, as in txLoadBalancer's files), saves the configuration, serves
//! HTTPS with a certificate kept next to the file, and stops on SIGTERM.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::admin::{FULL, READONLY, client, client_trusting};
use common::*;
use rustls::pki_types::pem::PemObject as _;

const TXLB: &str = env!("CARGO_BIN_EXE_txlb");

/// A running `txlb run`, killed on drop, with its stderr collected.
struct Txlb {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Txlb {
    fn start(config: &Path) -> Txlb {
        let mut child = Command::new(TXLB)
            .args(["run", "--workers", "1", "--grace", "5", "--config"])
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

    /// The value after `key=` on the first log line containing `needle`.
    async fn logged(&self, needle: &str, key: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned();
            if let Some(line) = found {
                let value = line.split(&format!("{key}=")).nth(1).unwrap();
                return value.split_whitespace().next().unwrap().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in log:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "txlb did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Txlb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration with service `svc` over `hosts`, the admin web server on
/// 127.0.0.1:0 and the two test users (`viewer` has a DES hash).
fn xml(hosts: &[(&str, SocketAddr)], secure: bool) -> String {
    let users = common::admin::users();
    let hosts: String = hosts
        .iter()
        .map(|(name, addr)| format!("      <host name=\"{name}\" ip=\"{addr}\"/>\n"))
        .collect();
    let user_lines: String = users
        .iter()
        .map(|u| {
            format!(
                "    <user name=\"{}\" password=\"{}\" access=\"{}\"/>\n",
                u.name,
                u.password_hash,
                u.access.name()
            )
        })
        .collect();
    format!(
        "<config>\n  <!-- kept by tests -->\n  <service name=\"svc\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
         <group name=\"g\" scheduler=\"roundr\" enable=\"true\">\n{hosts}    </group>\n  </service>\n  \
         <admin>\n    <web listen=\"127.0.0.1:0\" enable=\"true\" secure=\"{secure}\" refresh=\"2\"/>\n\
         {user_lines}  </admin>\n</config>\n"
    )
}

#[tokio::test]
async fn binary_serves_the_admin_api_from_its_config() {
    let a = named_backend("a", Hold::Close).await;
    let b = named_backend("b", Hold::Close).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    std::fs::write(&path, xml(&[("a", a)], false)).unwrap();
    let mut txlb = Txlb::start(&path);
    let base = txlb.logged("admin web server up", "url").await;
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let listener: SocketAddr = txlb.logged("listener up", "local").await.parse().unwrap();
    let http = client();
    let call = |user: (&'static str, &'static str), path: String| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let r = http
                .get(url)
                .basic_auth(user.0, Some(user.1))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };

    let (status, text) = call(FULL, "running.txt".into()).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("host a ip="), "{text}");
    // The DES user reads, and may not change anything.
    let (status, _) = call(READONLY, "running".into()).await;
    assert_eq!(status, 200);
    let (status, _) = call(READONLY, "hostAdminDown?service=svc&group=g&name=a".into()).await;
    assert_eq!(status, 403);
    let unauthenticated = http.get(format!("{base}running")).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);

    let (status, text) = call(FULL, format!("addHost?service=svc&group=g&name=b&ip={b}")).await;
    assert_eq!(status, 200, "{text}");
    let mut seen = HashSet::new();
    for _ in 0..4 {
        seen.insert(which_backend(listener).await.0);
    }
    assert_eq!(seen, HashSet::from(["a".to_string(), "b".to_string()]));
    let (status, _) = call(FULL, "hostAdminDown?service=svc&group=g&name=a".into()).await;
    assert_eq!(status, 200);
    for _ in 0..4 {
        assert_eq!(which_backend(listener).await.0, "b");
    }
    let (status, text) = call(FULL, "closeLog".into()).await;
    assert_eq!(status, 200, "{text}");

    let (status, text) = call(FULL, "saveConfig".into()).await;
    assert_eq!(status, 200, "{text}");
    let saved = txlb::config::Config::from_path(&path).unwrap();
    let hosts: Vec<&str> = saved.services[0].groups[0]
        .hosts
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(hosts, vec!["a", "b"]);
    assert!(dir.path().join("lb.xml.bak").exists());

    let (status, metrics) = call(FULL, "metrics".into()).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("txlb_host_connections_total{service=\"svc\",group=\"g\",host=\"b\"}"),
        "{metrics}"
    );

    let status = txlb.terminate();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn binary_serves_https_with_a_certificate_kept_beside_the_config() {
    let a = named_backend("a", Hold::Close).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    std::fs::write(&path, xml(&[("a", a)], true)).unwrap();
    let mut pems = Vec::new();
    for _restart in 0..2 {
        let mut txlb = Txlb::start(&path);
        let base = txlb.logged("admin web server up", "url").await;
        assert!(base.starts_with("https://127.0.0.1:"), "{base}");
        let pem = std::fs::read(dir.path().join("lb-admin.crt")).unwrap();
        let cert = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
        let response = client_trusting(&[cert])
            .get(format!("{base}running.txt"))
            .basic_auth(FULL.0, Some(FULL.1))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        pems.push(pem);
        assert!(txlb.terminate().success());
    }
    assert_eq!(pems[0], pems[1], "the same certificate after a restart");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.path().join("lb-admin.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
