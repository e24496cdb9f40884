//! The real `txlb` binary with `<admin><web>` in its XML configuration: the admin
//! server comes up with the balancer, answers the legacy API with the configured
//! users (a DES hash, as in txLoadBalancer's files), saves the configuration, serves
//! HTTPS with a certificate kept next to the file, and stops on SIGTERM.

use crate::common;

use std::collections::HashSet;
use std::net::SocketAddr;

use common::admin::{FULL, READONLY, client, client_trusting};
use common::binary::Txlb;
use common::*;
use rustls::pki_types::pem::PemObject as _;

/// A configuration with service `svc` over `hosts`, the admin web server on
/// 127.0.0.1:0 and the two test users (`viewer` has a DES hash).
fn xml(hosts: &[(&str, SocketAddr)], secure: bool) -> String {
    let hosts = common::host_lines(hosts);
    let user_lines: String = common::admin::user_lines();
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
    let mut txlb = Txlb::start(&path, 5);
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
        let mut txlb = Txlb::start(&path, 5);
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
