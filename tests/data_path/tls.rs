//! TLS termination end to end through the `txlb` binary: certificates made
//! here (rcgen), real clients (`openssl s_client`, curl, Python's `ssl`,
//! rustls, `redis-cli --tls`) and plaintext hosts. The certificate is chosen
//! by SNI (wildcards, none, unknown: the first); ALPN routes; mutual TLS
//! accepted and refused; plain text, truncated and stalled handshakes closed
//! and counted; a reload swapping a certificate while 64 MiB flow (byte
//! exact, not dropped) and one refused for a key that is not its
//! certificate's; `txlb check` on missing, bad and mismatched files.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::admin::FULL;
use common::binary::Txlb;
use common::{Hold, echo_backend, named_backend};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use super::routing::{admin_base, admin_block, http_host, peer_subject, s_client, service};

/// A certificate and its key, as PEM, with its DER.
pub(super) struct Issued {
    pub der: CertificateDer<'static>,
    pub pem: String,
    pub key_pem: String,
}

/// A certificate for `names`, with common name `cn`: self-signed, or signed
/// by `ca`.
pub(super) fn issue(
    cn: &str,
    names: &[&str],
    ca: Option<&(rcgen::Issuer<'static, rcgen::KeyPair>, Issued)>,
) -> Issued {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = match ca {
        Some((issuer, _)) => params.signed_by(&key, issuer).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    Issued {
        der: cert.der().clone(),
        pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A CA that signs client certificates.
pub(super) fn client_ca() -> (rcgen::Issuer<'static, rcgen::KeyPair>, Issued) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "txlb test clients");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let issued = Issued {
        der: cert.der().clone(),
        pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    (rcgen::Issuer::new(params, key), issued)
}

/// Writes `issued` as `DIR/NAME.pem` and `DIR/NAME.key`.
pub(super) fn write_pair(dir: &Path, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, &issued.pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    (cert, key)
}

/// A running balancer with a terminating listener, its files' directory.
pub(super) struct Terminating {
    pub txlb: Txlb,
    pub addr: SocketAddr,
    base: String,
    dir: tempfile::TempDir,
}

impl Terminating {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The access log's lines so far.
    pub(super) fn access(&self) -> String {
        std::fs::read_to_string(self.path("access.log")).unwrap_or_default()
    }

    async fn metrics(&self) -> String {
        common::admin::get_as(&self.base, FULL, "/metrics").await.1
    }

    /// A metrics sample's value (0 when absent).
    async fn sample(&self, prefix: &str) -> u64 {
        let metrics = self.metrics().await;
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// Starts txlb with `listen` (a `<listen>` element on 127.0.0.1:0 whose
/// text may name files written beforehand into the directory by `files`),
/// the service's group of `hosts`, `extra` services, the admin web server
/// and an access log.
pub(super) async fn start(
    files: impl FnOnce(&Path),
    listen: &str,
    host: SocketAddr,
    extra: &str,
) -> Terminating {
    let dir = tempfile::tempdir().unwrap();
    files(dir.path());
    let xml = format!(
        "<config>\n  <service name=\"edge\">\n    {listen}\n    \
         <group name=\"g\" enable=\"true\">\n      <host name=\"h1\" ip=\"{host}\"/>\n    \
         </group>\n  </service>\n{extra}{}  <logging access=\"access.log\"/>\n</config>\n",
        admin_block()
    );
    let config = dir.path().join("lb.xml");
    std::fs::write(&config, xml).unwrap();
    let txlb = Txlb::start(&config, 2);
    let addr = txlb.listener();
    let base = admin_base(&txlb).await;
    Terminating {
        txlb,
        addr,
        base,
        dir,
    }
}

/// A rustls client to `addr` trusting `roots`, asking for `sni` and
/// offering `alpn`.
pub(super) async fn rustls_client(
    addr: SocketAddr,
    sni: &str,
    roots: &[CertificateDer<'static>],
    alpn: &[&str],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
}

#[tokio::test]
async fn terminates_and_picks_the_certificate_by_sni() {
    let first = issue("first.example.com", &["first.example.com"], None);
    let wild = issue("wild", &["*.b.example.org", "exact.example.net"], None);
    let echo = echo_backend().await;
    let app = http_host("app").await;
    let lb = start(
        |dir| {
            write_pair(dir, "first", &first);
            write_pair(dir, "wild", &wild);
        },
        "<listen ip=\"127.0.0.1:0\">\n      <tls cert=\"first.pem\" key=\"first.key\"/>\n      \
         <tls cert=\"wild.pem\" key=\"wild.key\"/>\n    </listen>",
        echo,
        "",
    )
    .await;
    // openssl: by SNI, verified against the certificate it should get.
    for (sni, cert, subject) in [
        (
            Some("first.example.com"),
            "first.pem",
            "CN = first.example.com",
        ),
        (Some("x.b.example.org"), "wild.pem", "CN = wild"),
        (Some("EXACT.example.net"), "wild.pem", "CN = wild"),
        // Two labels under the wildcard: no match, the first certificate.
        (
            Some("y.x.b.example.org"),
            "first.pem",
            "CN = first.example.com",
        ),
        (
            Some("unknown.example.com"),
            "first.pem",
            "CN = first.example.com",
        ),
        (None, "first.pem", "CN = first.example.com"),
    ] {
        let out = s_client(lb.addr, sni, None, &lb.path(cert)).await;
        assert!(
            peer_subject(&out).ends_with(subject),
            "{sni:?} should get {subject}:\n{out}"
        );
    }
    // rustls verifies the name and echoes through the terminated stream.
    let mut tls = rustls_client(
        lb.addr,
        "a.b.example.org",
        std::slice::from_ref(&wild.der),
        &[],
    )
    .await
    .unwrap();
    tls.write_all(b"plaintext to the host\n").await.unwrap();
    let mut back = [0u8; 22];
    tls.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"plaintext to the host\n");
    drop(tls);
    // Python's ssl, echo too.
    let script = format!(
        "import socket, ssl\n\
         ctx = ssl.create_default_context(cafile={ca:?})\n\
         s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port}), timeout=10), \
         server_hostname='first.example.com')\n\
         s.sendall(b'ping from python')\n\
         print(s.version(), s.recv(100).decode())\n",
        ca = lb.path("first.pem").display().to_string(),
        port = lb.addr.port()
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("TLSv1.3 ping from python"),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The access log carries what the handshake told; /metrics counts it.
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            lb.access().contains("sni=\"a.b.example.org\"")
        })
        .await,
        "{}",
        lb.access()
    );
    let line = lb
        .access()
        .lines()
        .find(|l| l.contains("sni=\"a.b.example.org\""))
        .unwrap()
        .to_string();
    assert!(line.contains("tls_version=1.3 cipher=TLS13_"), "{line}");
    assert!(line.contains("bytes_in=22 bytes_out=22"), "{line}");
    let handshakes = lb
        .sample("txlb_tls_handshakes_total{listener=\"127.0.0.1:0\",version=\"1.3\",result=\"ok\"}")
        .await;
    assert!(handshakes >= 8, "{}", lb.metrics().await);
    let metrics = lb.metrics().await;
    assert!(
        metrics.contains(
            "txlb_tls_certificate_expiry_seconds{listener=\"127.0.0.1:0\",name=\"*.b.example.org\"}"
        ),
        "{metrics}"
    );
    drop(lb);

    // curl over HTTPS to a plain HTTP host.
    let lb = start(
        |dir| {
            write_pair(dir, "first", &first);
        },
        "<listen ip=\"127.0.0.1:0\"><tls cert=\"first.pem\" key=\"first.key\" alpn=\"http/1.1\"/></listen>",
        app,
        "",
    )
    .await;
    let port = lb.addr.port();
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(lb.path("first.pem"))
        .args([
            "--resolve",
            &format!("first.example.com:{port}:127.0.0.1"),
            &format!("https://first.example.com:{port}/"),
        ])
        .output()
        .await
        .expect("curl runs");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "app",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            lb.access().contains("tls_alpn=\"http/1.1\"")
        })
        .await,
        "{}",
        lb.access()
    );
}

#[tokio::test]
async fn alpn_and_sni_routes_on_a_terminating_listener() {
    let cert = issue("edge.example.com", &["*.example.com"], None);
    let own = named_backend("own", Hold::Close).await;
    let h2 = named_backend("h2pool", Hold::Close).await;
    let api = named_backend("api", Hold::Close).await;
    let lb = start(
        |dir| {
            write_pair(dir, "edge", &cert);
        },
        "<listen ip=\"127.0.0.1:0\">\n      <tls cert=\"edge.pem\" key=\"edge.key\" alpn=\"h2,http/1.1\"/>\n      \
         <route sni=\"api.example.com\" service=\"api\"/>\n      \
         <route alpn=\"h2\" service=\"h2pool\"/>\n    </listen>",
        own,
        &format!("{}{}", service("api", api), service("h2pool", h2)),
    )
    .await;
    let first_line = |mut tls: tokio_rustls::client::TlsStream<TcpStream>| async move {
        let mut text = String::new();
        let _ = tls.read_to_string(&mut text).await;
        text
    };
    let roots = [cert.der.clone()];
    let got = |sni: &'static str, alpn: &'static [&'static str]| {
        let roots = roots.clone();
        async move {
            let tls = rustls_client(lb.addr, sni, &roots, alpn).await.unwrap();
            let chosen = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
            (first_line(tls).await, chosen)
        }
    };
    assert_eq!(got("api.example.com", &["h2"]).await.0, "api\n");
    let (text, chosen) = got("www.example.com", &["http/1.1", "h2"]).await;
    assert_eq!(text, "h2pool\n");
    // The listener's order wins: h2 first.
    assert_eq!(chosen.as_deref(), Some(&b"h2"[..]));
    let (text, chosen) = got("www.example.com", &["http/1.1"]).await;
    assert_eq!(text, "own\n");
    assert_eq!(chosen.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(got("www.example.com", &[]).await.0, "own\n");
    // Route hits counted as on any listener with routes.
    let metrics = lb.metrics().await;
    assert!(
        metrics.contains(
            "txlb_route_hits_total{listener=\"127.0.0.1:0\",route=\"alpn=h2\",service=\"h2pool\"} 1"
        ),
        "{metrics}"
    );
    // A client offering only a protocol the listener does not speak.
    let refused = rustls_client(lb.addr, "www.example.com", &roots, &["imap"]).await;
    assert!(refused.is_err());
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            lb.sample(
                "txlb_tls_handshake_errors_total{listener=\"127.0.0.1:0\",reason=\"incompatible\"}",
            )
            .await
                == 1
        })
        .await,
        "{}",
        lb.metrics().await
    );
}

/// `openssl s_client` with a client certificate (or none), sending `line`;
/// returns what it printed.
async fn s_client_mtls(addr: SocketAddr, ca: &Path, client: Option<(&Path, &Path)>) -> String {
    let mut command = Command::new("openssl");
    command
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "mtls.example.com",
            "-CAfile",
        ])
        .arg(ca)
        .args(["-brief", "-verify_return_error"]);
    if let Some((cert, key)) = client {
        command.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    says_hello(command).await
}

/// Runs `s_client`, writes it a line and closes its input once the echo
/// (and a session ticket after it) has had time to come: what it printed.
async fn says_hello(mut command: Command) -> String {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello mtls\n").await.unwrap();
    let output = tokio::time::timeout(Duration::from_secs(20), async {
        // Closing stdin ends s_client once it has the echo (or the refusal).
        tokio::time::sleep(Duration::from_millis(700)).await;
        drop(stdin);
        child.wait_with_output().await
    })
    .await
    .expect("openssl s_client hangs")
    .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn mutual_tls_accepted_and_refused() {
    let server = issue("mtls.example.com", &["mtls.example.com"], None);
    let ca = client_ca();
    let alice = issue("alice", &[], Some(&ca));
    let stranger = issue("stranger", &[], None);
    let echo = echo_backend().await;
    let lb = start(
        |dir| {
            write_pair(dir, "server", &server);
            write_pair(dir, "alice", &alice);
            write_pair(dir, "stranger", &stranger);
            std::fs::write(dir.join("clients.pem"), &ca.1.pem).unwrap();
        },
        "<listen ip=\"127.0.0.1:0\"><tls cert=\"server.pem\" key=\"server.key\" \
         clientCa=\"clients.pem\" clientAuth=\"required\"/></listen>",
        echo,
        "",
    )
    .await;
    let ca_file = lb.path("server.pem");
    let out = s_client_mtls(
        lb.addr,
        &ca_file,
        Some((&lb.path("alice.pem"), &lb.path("alice.key"))),
    )
    .await;
    assert!(out.contains("hello mtls"), "{out}");
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            lb.access().contains("client_subject=\"CN=alice\"")
        })
        .await,
        "{}",
        lb.access()
    );
    // No certificate, or one the CA did not sign: refused, counted.
    let out = s_client_mtls(lb.addr, &ca_file, None).await;
    assert!(!out.contains("hello mtls"), "{out}");
    let out = s_client_mtls(
        lb.addr,
        &ca_file,
        Some((&lb.path("stranger.pem"), &lb.path("stranger.key"))),
    )
    .await;
    assert!(!out.contains("hello mtls"), "{out}");
    let counted = |reason: &'static str| {
        let lb = &lb;
        async move {
            lb.sample(&format!(
                "txlb_tls_handshake_errors_total{{listener=\"127.0.0.1:0\",reason=\"{reason}\"}}"
            ))
            .await
        }
    };
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            counted("no_client_cert").await == 1 && counted("bad_client_cert").await == 1
        })
        .await,
        "{}",
        lb.metrics().await
    );
    assert_eq!(lb.access().lines().count(), 1, "{}", lb.access());
}

/// `openssl s_client` to `addr` asking for `mtls.example.com`, with a client
/// certificate or none, resuming the session in `sess_in` and saving its
/// own in `sess_out`: what it printed (`Reused, …` on a resumption).
async fn s_client_resuming(
    addr: SocketAddr,
    client: Option<(&Path, &Path)>,
    sess_in: Option<&Path>,
    sess_out: &Path,
) -> String {
    let mut command = Command::new("openssl");
    command.args(["s_client", "-connect", &addr.to_string()]);
    command.args(["-servername", "mtls.example.com", "-sess_out"]);
    command.arg(sess_out);
    if let Some(sess_in) = sess_in {
        command.arg("-sess_in").arg(sess_in);
    }
    if let Some((cert, key)) = client {
        command.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    says_hello(command).await
}

/// rustls resumes a session with the client certificate its ticket holds,
/// without checking it again: a ticket from a listener without mutual TLS,
/// or from one trusting another CA, must not open a listener that requires
/// a client certificate (each way of checking clients has its own ticket
/// key); one from the listener itself resumes.
#[tokio::test]
async fn a_ticket_from_another_listener_does_not_pass_mutual_tls() {
    let server = issue("mtls.example.com", &["mtls.example.com"], None);
    let (ca, other_ca) = (client_ca(), client_ca());
    let alice = issue("alice", &[], Some(&ca));
    let bob = issue("bob", &[], Some(&other_ca));
    let echo = echo_backend().await;
    let (secure, other) = (common::servers::free_port(), common::servers::free_port());
    let service = |name: &str, port: u16, clients: &str| {
        format!(
            "  <service name=\"{name}\">\n    <listen ip=\"127.0.0.1:{port}\"><tls \
             cert=\"server.pem\" key=\"server.key\" clientCa=\"{clients}\" \
             clientAuth=\"required\"/></listen>\n    <group name=\"g\" enable=\"true\">\n      \
             <host name=\"h1\" ip=\"{echo}\"/>\n    </group>\n  </service>\n"
        )
    };
    let extra = [
        service("secure", secure, "clients.pem"),
        service("other", other, "others.pem"),
    ]
    .concat();
    let lb = start(
        |dir| {
            write_pair(dir, "server", &server);
            write_pair(dir, "alice", &alice);
            write_pair(dir, "bob", &bob);
            std::fs::write(dir.join("clients.pem"), &ca.1.pem).unwrap();
            std::fs::write(dir.join("others.pem"), &other_ca.1.pem).unwrap();
        },
        "<listen ip=\"127.0.0.1:0\"><tls cert=\"server.pem\" key=\"server.key\"/></listen>",
        echo,
        &extra,
    )
    .await;
    let (secure, other) = (
        SocketAddr::from(([127, 0, 0, 1], secure)),
        SocketAddr::from(([127, 0, 0, 1], other)),
    );
    let sessions = tempfile::tempdir().unwrap();
    let at = |name: &str| sessions.path().join(name);
    let alice_pair = (lb.path("alice.pem"), lb.path("alice.key"));
    let alice_pair = Some((alice_pair.0.as_path(), alice_pair.1.as_path()));
    let bob_pair = (lb.path("bob.pem"), lb.path("bob.key"));
    let bob_pair = Some((bob_pair.0.as_path(), bob_pair.1.as_path()));

    // Tickets from the listener without client certificates, and from the
    // one trusting another CA (bob showed his certificate there).
    let out = s_client_resuming(lb.addr, None, None, &at("open")).await;
    assert!(out.contains("hello mtls"), "{out}");
    let out = s_client_resuming(other, bob_pair, None, &at("bob")).await;
    assert!(out.contains("hello mtls"), "{out}");
    for (ticket, from) in [("open", "the open listener"), ("bob", "another CA's")] {
        let out = s_client_resuming(secure, None, Some(&at(ticket)), &at("x")).await;
        assert!(
            !out.contains("hello mtls"),
            "a ticket from {from} passed: {out}"
        );
        assert!(
            !out.contains("Reused"),
            "a ticket from {from} resumed: {out}"
        );
    }
    // The listener's own ticket resumes, and the host is still told (in
    // the access log) who showed the certificate.
    let out = s_client_resuming(secure, alice_pair, None, &at("alice")).await;
    assert!(out.contains("hello mtls") && out.contains("New,"), "{out}");
    let out = s_client_resuming(secure, None, Some(&at("alice")), &at("y")).await;
    assert!(
        out.contains("hello mtls") && out.contains("Reused,"),
        "{out}"
    );
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            let access = lb.access();
            access.matches("client_subject=\"CN=alice\"").count() == 2
                && access.matches("tls_resumed=true").count() == 1
        })
        .await,
        "{}",
        lb.access()
    );
}

/// A host that wants a PROXY v2 header: it answers each client with what the
/// header's TLVs say (`alpn=… sni=… version=… cn=… verify=…`) on one line,
/// then echoes. The TLVs are read here by the spec, not by txlb's parser.
async fn proxy_v2_reporter() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 16];
                s.read_exact(&mut head).await?;
                let mut rest = vec![0u8; u16::from_be_bytes([head[14], head[15]]) as usize];
                s.read_exact(&mut rest).await?;
                let mut said = Vec::new();
                let mut tlvs = &rest[12.min(rest.len())..]; // past the IPv4 addresses
                let mut ssl = Vec::new();
                while tlvs.len() >= 3 {
                    let len = u16::from_be_bytes([tlvs[1], tlvs[2]]) as usize;
                    let value = &tlvs[3..3 + len];
                    match tlvs[0] {
                        0x01 => said.push(format!("alpn={}", String::from_utf8_lossy(value))),
                        0x02 => said.push(format!("sni={}", String::from_utf8_lossy(value))),
                        0x20 => {
                            let verify = u32::from_be_bytes(value[1..5].try_into().unwrap());
                            said.push(format!("client={} verify={verify}", value[0]));
                            ssl = value[5..].to_vec();
                        }
                        _ => {}
                    }
                    tlvs = &tlvs[3 + len..];
                }
                let mut sub = &ssl[..];
                while sub.len() >= 3 {
                    let len = u16::from_be_bytes([sub[1], sub[2]]) as usize;
                    let value = String::from_utf8_lossy(&sub[3..3 + len]);
                    match sub[0] {
                        0x21 => said.push(format!("version={value}")),
                        0x22 => said.push(format!("cn={value}")),
                        0x23 => said.push(format!("cipher={value}")),
                        _ => {}
                    }
                    sub = &sub[3 + len..];
                }
                s.write_all(format!("{}\n", said.join(" ")).as_bytes())
                    .await?;
                let (mut r, mut w) = s.split();
                tokio::io::copy(&mut r, &mut w).await?;
                Ok::<_, std::io::Error>(())
            });
        }
    });
    addr
}

#[tokio::test]
async fn hosts_learn_the_clients_tls_and_certificate_from_proxy_v2_tlvs() {
    let server = issue("mtls.example.com", &["mtls.example.com"], None);
    let ca = client_ca();
    let alice = issue("alice", &[], Some(&ca));
    let reporter = proxy_v2_reporter().await;
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), "server", &server);
    let (alice_cert, alice_key) = write_pair(dir.path(), "alice", &alice);
    std::fs::write(dir.path().join("clients.pem"), &ca.1.pem).unwrap();
    let xml = format!(
        "<config>\n  <service name=\"edge\">\n    <listen ip=\"127.0.0.1:0\"><tls \
         cert=\"server.pem\" key=\"server.key\" clientCa=\"clients.pem\" \
         clientAuth=\"optional\"/></listen>\n    <group name=\"g\" enable=\"true\" \
         proxyProtocol=\"v2\">\n      <host name=\"h1\" ip=\"{reporter}\"/>\n    </group>\n  \
         </service>\n</config>\n"
    );
    let config = dir.path().join("lb.xml");
    std::fs::write(&config, xml).unwrap();
    let txlb = Txlb::start(&config, 2);
    let ca_file = dir.path().join("server.pem");
    let out = s_client_mtls(txlb.listener(), &ca_file, Some((&alice_cert, &alice_key))).await;
    // OpenSSL offers AES-256-GCM-SHA384 first; the listener's own order
    // chooses AES-128-GCM-SHA256 (`tls::server_provider`).
    assert!(
        out.contains(
            "sni=mtls.example.com client=7 verify=0 version=TLSv1.3 cn=alice \
             cipher=TLS_AES_128_GCM_SHA256"
        ),
        "{out}"
    );
    assert!(out.contains("hello mtls"), "then the client's bytes: {out}");
    // Without a certificate: TLS facts, no name, `verify` not 0.
    let out = s_client_mtls(txlb.listener(), &ca_file, None).await;
    assert!(
        out.contains("sni=mtls.example.com client=1 verify=1 version=TLSv1.3 cipher=TLS_"),
        "{out}"
    );
}

/// One rustls handshake and echo through `addr` with `config` (whose session
/// store keeps tickets between calls): how the handshake went.
async fn handshake_kind(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> rustls::HandshakeKind {
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("first.example.com").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    // The echo's read also takes in the tickets sent after the handshake.
    tls.write_all(b"ping\n").await.unwrap();
    let mut back = [0u8; 5];
    tls.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping\n");
    tls.get_ref().1.handshake_kind().unwrap()
}

#[tokio::test]
async fn sessions_resume_from_tickets_also_after_a_reload() {
    let first = issue("first.example.com", &["first.example.com"], None);
    let echo = echo_backend().await;
    let lb = start(
        |dir| {
            write_pair(dir, "first", &first);
        },
        "<listen ip=\"127.0.0.1:0\"><tls cert=\"first.pem\" key=\"first.key\"/></listen>",
        echo,
        "",
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(first.der.clone()).unwrap();
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    assert_eq!(
        handshake_kind(lb.addr, &config).await,
        rustls::HandshakeKind::Full
    );
    assert_eq!(
        handshake_kind(lb.addr, &config).await,
        rustls::HandshakeKind::Resumed
    );
    // A reload rebuilds the listener's TLS; its tickets stay good.
    let skip = lb.txlb.log_len();
    lb.txlb.signal("HUP");
    lb.txlb.wait_for_async("configuration reloaded", skip).await;
    assert_eq!(
        handshake_kind(lb.addr, &config).await,
        rustls::HandshakeKind::Resumed
    );
}

#[tokio::test]
async fn plain_text_truncated_and_stalled_handshakes_are_closed_and_counted() {
    let cert = issue("t.example.com", &["t.example.com"], None);
    let echo = echo_backend().await;
    let lb = start(
        |dir| {
            write_pair(dir, "t", &cert);
        },
        "<listen ip=\"127.0.0.1:0\"><tls cert=\"t.pem\" key=\"t.key\" handshakeTimeout=\"1\"/></listen>",
        echo,
        "",
    )
    .await;
    // Closed: the client reads the end (or a reset, or an alert) soon.
    async fn closed_within(mut s: TcpStream, limit: Duration) -> Duration {
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(limit, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
                Ok(Ok(_)) => continue, // an alert
                Err(_) => panic!("still open after {limit:?}"),
            }
        }
    }
    // Plain text.
    let mut plain = TcpStream::connect(lb.addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: t.example.com\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(plain, Duration::from_secs(5)).await < Duration::from_millis(900));
    // A ClientHello cut short, then the client leaves.
    let hello = super::routing::client_hello("t.example.com");
    let mut cut = TcpStream::connect(lb.addr).await.unwrap();
    cut.write_all(&hello[..hello.len() / 2]).await.unwrap();
    cut.shutdown().await.unwrap();
    closed_within(cut, Duration::from_secs(5)).await;
    // Half a ClientHello, then silence: closed at the handshake timeout.
    let mut stalled = TcpStream::connect(lb.addr).await.unwrap();
    stalled.write_all(&hello[..10]).await.unwrap();
    let waited = closed_within(stalled, Duration::from_secs(5)).await;
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    // Nothing at all: the same.
    let silent = TcpStream::connect(lb.addr).await.unwrap();
    closed_within(silent, Duration::from_secs(5)).await;
    // Garbage of every byte value.
    let mut garbage = TcpStream::connect(lb.addr).await.unwrap();
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    let _ = garbage.write_all(&bytes).await;
    closed_within(garbage, Duration::from_secs(5)).await;
    let counted = |reason: &'static str| {
        let lb = &lb;
        async move {
            lb.sample(&format!(
                "txlb_tls_handshake_errors_total{{listener=\"127.0.0.1:0\",reason=\"{reason}\"}}"
            ))
            .await
        }
    };
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            counted("not_tls").await == 2
                && counted("closed").await == 1
                && counted("timeout").await == 2
        })
        .await,
        "{}",
        lb.metrics().await
    );
    assert!(lb.metrics().await.contains(
        "txlb_tls_handshakes_total{listener=\"127.0.0.1:0\",version=\"none\",result=\"failed\"} 5"
    ));
    // None reached the host, and a real client still gets through.
    assert_eq!(lb.access(), "");
    let mut tls = rustls_client(
        lb.addr,
        "t.example.com",
        std::slice::from_ref(&cert.der),
        &[],
    )
    .await
    .unwrap();
    tls.write_all(b"ok").await.unwrap();
    let mut back = [0u8; 2];
    tls.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ok");
    assert!(lb.txlb.count("TLS handshake failed") >= 1);
}

#[tokio::test]
async fn reload_swaps_a_certificate_while_64_mib_flow() {
    let _heavy = common::heavy().await;
    let old = issue("old", &["swap.example.com"], None);
    let new = issue("new", &["swap.example.com"], None);
    let echo = echo_backend().await;
    let mut lb = start(
        |dir| {
            write_pair(dir, "swap", &old);
        },
        "<listen ip=\"127.0.0.1:0\"><tls cert=\"swap.pem\" key=\"swap.key\"/></listen>",
        echo,
        "",
    )
    .await;
    let roots = [old.der.clone(), new.der.clone()];
    let peer = |tls: &tokio_rustls::client::TlsStream<TcpStream>| {
        tls.get_ref().1.peer_certificates().unwrap()[0].clone()
    };
    let tls = rustls_client(lb.addr, "swap.example.com", &roots, &[])
        .await
        .unwrap();
    assert_eq!(peer(&tls), old.der);
    // 64 MiB of a pattern through the echo host, read back and compared
    // while the reload happens.
    const TOTAL: usize = 64 * 1024 * 1024;
    let pattern = |i: usize| (i.wrapping_mul(2654435761) >> 13) as u8;
    let (mut r, mut w) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        let chunk: Vec<u8> = (0..64 * 1024)
            .collect::<Vec<usize>>()
            .into_iter()
            .map(|_| 0)
            .collect();
        let mut sent = 0;
        let mut buf = chunk;
        while sent < TOTAL {
            for (j, b) in buf.iter_mut().enumerate() {
                *b = pattern(sent + j);
            }
            w.write_all(&buf).await.unwrap();
            sent += buf.len();
        }
        w.shutdown().await.unwrap();
    });
    let reader = tokio::spawn(async move {
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        let mut mismatch = None;
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            for (j, b) in buf[..n].iter().enumerate() {
                if mismatch.is_none() && *b != pattern(got + j) {
                    mismatch = Some(got + j);
                }
            }
            got += n;
        }
        (got, mismatch)
    });
    // Mid-transfer: the files replaced, SIGHUP.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let skip = lb.txlb.log_len();
    write_pair(lb.dir.path(), "swap", &new);
    lb.txlb.signal("HUP");
    lb.txlb.wait_for_async("configuration reloaded", skip).await;
    let fresh = rustls_client(lb.addr, "swap.example.com", &roots, &[])
        .await
        .unwrap();
    assert_eq!(
        peer(&fresh),
        new.der,
        "a new client gets the new certificate"
    );
    drop(fresh);
    writer.await.unwrap();
    let (got, mismatch) = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the transfer stalls")
        .unwrap();
    assert_eq!((got, mismatch), (TOTAL, None));
    // A key that is not the certificate's: refused with where it is named,
    // the running certificate stays.
    let skip = lb.txlb.log_len();
    std::fs::write(lb.path("swap.key"), &old.key_pem).unwrap();
    lb.txlb.signal("HUP");
    let refused = lb.txlb.wait_for_async("reload refused", skip).await;
    assert!(refused.contains("lb.xml:3:"), "{refused}");
    assert!(refused.contains("is not the private key of"), "{refused}");
    let still = rustls_client(lb.addr, "swap.example.com", &roots, &[])
        .await
        .unwrap();
    assert_eq!(peer(&still), new.der);
    // A missing file: the same.
    let skip = lb.txlb.log_len();
    std::fs::remove_file(lb.path("swap.pem")).unwrap();
    lb.txlb.signal("HUP");
    let refused = lb.txlb.wait_for_async("reload refused", skip).await;
    assert!(refused.contains("cannot read"), "{refused}");
    assert!(lb.txlb.alive());
}

/// Whether `redis-server` and a TLS-capable `redis-cli` are missing (then the
/// test returns, saying so, unless `TXLB_REQUIRE_HOSTS` is set).
fn redis_missing() -> bool {
    let found = |tool: &str| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if found("redis-server") && found("redis-cli") {
        return false;
    }
    assert!(
        std::env::var_os("TXLB_REQUIRE_HOSTS").is_none(),
        "TXLB_REQUIRE_HOSTS is set but redis-server or redis-cli is missing"
    );
    eprintln!("skipped: redis-server or redis-cli is not installed; scripts/test.sh installs them");
    true
}

#[tokio::test]
async fn redis_behind_a_terminating_listener() {
    if redis_missing() {
        return;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server runs");
    let host = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            TcpStream::connect(host).await.is_ok()
        })
        .await
    );
    let cert = issue("redis.example.com", &["redis.example.com"], None);
    let lb = start(
        |dir| {
            write_pair(dir, "redis", &cert);
        },
        "<listen ip=\"127.0.0.1:0\"><tls cert=\"redis.pem\" key=\"redis.key\"/></listen>",
        host,
        "",
    )
    .await;
    let cli = |args: &[&str]| {
        let mut command = Command::new("redis-cli");
        command
            .args(["--tls", "--cacert"])
            .arg(lb.path("redis.pem"))
            .args([
                "--sni",
                "redis.example.com",
                "-h",
                "127.0.0.1",
                "-p",
                &lb.addr.port().to_string(),
            ])
            .args(args);
        async move {
            let out = tokio::time::timeout(Duration::from_secs(20), command.output())
                .await
                .expect("redis-cli hangs")
                .expect("redis-cli runs");
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        }
    };
    assert_eq!(cli(&["SET", "greeting", "over tls"]).await.trim(), "OK");
    assert_eq!(cli(&["GET", "greeting"]).await.trim(), "over tls");
    // A value of 100 KB (an argument of redis-cli), both ways.
    let big = "x".repeat(100_000);
    assert_eq!(cli(&["SET", "big", &big]).await.trim(), "OK");
    assert_eq!(cli(&["GET", "big"]).await.trim(), big);
    let _ = redis.kill().await;
}

#[tokio::test]
async fn check_reports_missing_bad_and_mismatched_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = issue("good.example.com", &["good.example.com"], None);
    let other = issue("other", &["other"], None);
    write_pair(dir.path(), "good", &good);
    std::fs::write(dir.path().join("other.key"), &other.key_pem).unwrap();
    std::fs::write(
        dir.path().join("bad.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let check = |tls: &str| {
        let xml = format!(
            "<config>\n  <service name=\"s\">\n    <listen ip=\"127.0.0.1:0\">\n      {tls}\n    </listen>\n    \
             <group name=\"g\" enable=\"true\"><host name=\"h\" ip=\"127.0.0.1:1\"/></group>\n  \
             </service>\n</config>\n"
        );
        let path = dir.path().join("check.xml");
        std::fs::write(&path, xml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_txlb"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = check(r#"<tls cert="good.pem" key="good.key"/>"#);
    assert!(ok, "{out}");
    assert!(
        out.contains("good.pem (good.example.com), expires in"),
        "{out}"
    );
    let (ok, out) = check(r#"<tls cert="missing.pem" key="good.key"/>"#);
    assert!(!ok && out.contains("check.xml:4:18: cannot read"), "{out}");
    let (ok, out) = check(r#"<tls cert="bad.pem" key="good.key"/>"#);
    assert!(
        !ok && out.contains("check.xml:4:18:") && out.contains("bad PEM"),
        "{out}"
    );
    let (ok, out) = check(r#"<tls cert="good.pem" key="other.key"/>"#);
    assert!(
        !ok && out.contains("check.xml:4:33:") && out.contains("is not the private key of"),
        "{out}"
    );
    let (ok, out) = check(r#"<tls cert="good.pem" key="good.pem"/>"#);
    assert!(
        !ok && out.contains("check.xml:4:33:") && out.contains("no private key"),
        "{out}"
    );
}

/// PUT `body` (JSON) to `base` + `path` as `user`: status and body.
async fn put_json(
    base: &str,
    user: (&str, &str),
    path: &str,
    body: serde_json::Value,
) -> (u16, String) {
    let response = common::admin::client()
        .put(format!("{base}{path}"))
        .basic_auth(user.0, Some(user.1))
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_certificate_replaced_through_the_api_is_checked_then_served() {
    let a = issue("a", &["a.test"], None);
    let b = issue("b", &["b.test"], None);
    let echo = echo_backend().await;
    let lb = start(
        |dir| {
            write_pair(dir, "site", &a);
        },
        "<listen ip=\"127.0.0.1:0\">\n      <tls cert=\"site.pem\" key=\"site.key\"/>\n    </listen>",
        echo,
        "",
    )
    .await;
    let path = "/api/v1/services/edge/listeners/127.0.0.1:0/certificates/0";
    let body =
        |cert: &Issued, key: &Issued| serde_json::json!({"cert": cert.pem, "key": key.key_pem});
    // A key that is not the certificate's: refused, nothing written, the
    // running certificate stays.
    let (status, text) = put_json(&lb.base, FULL, path, body(&b, &a)).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("is not the private key"), "{text}");
    let (status, text) = put_json(
        &lb.base,
        FULL,
        path,
        serde_json::json!({"cert": "junk", "key": ""}),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("no certificate in it"), "{text}");
    assert_eq!(
        std::fs::read_dir(lb.dir.path()).unwrap().count(),
        4,
        "files written"
    );
    let mut old = rustls_client(lb.addr, "a.test", std::slice::from_ref(&a.der), &[])
        .await
        .unwrap();
    // A good pair: written beside the old one, served from the next handshake.
    let (status, text) = put_json(&lb.base, FULL, path, body(&b, &b)).await;
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["names"], serde_json::json!(["b.test"]), "{text}");
    let file = PathBuf::from(answer["file"].as_str().unwrap());
    assert_eq!(file.parent(), Some(lb.dir.path()), "{text}");
    assert!(
        file.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("site.")
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), b.pem);
    let key_file = file.with_extension("key");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut new = rustls_client(lb.addr, "b.test", std::slice::from_ref(&b.der), &[])
        .await
        .unwrap();
    assert!(
        rustls_client(lb.addr, "a.test", std::slice::from_ref(&a.der), &[])
            .await
            .is_err()
    );
    // The connection made before goes on; the running configuration names
    // the new files.
    for stream in [&mut old, &mut new] {
        stream.write_all(b"ping").await.unwrap();
        let mut got = [0; 4];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
    }
    let (_, running) = common::admin::get_as(&lb.base, FULL, "/running.xml").await;
    assert!(
        running.contains(file.file_name().unwrap().to_str().unwrap()),
        "{running}"
    );
    let (status, text) = put_json(
        &lb.base,
        FULL,
        "/api/v1/services/edge/listeners/127.0.0.1:0/certificates/1",
        body(&b, &b),
    )
    .await;
    assert_eq!(status, 404, "{text}");
}

/// A pattern that shows where bytes were lost, doubled or reordered.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed ^ (i >> 13) as u8)
        .collect()
}

/// After a TLS 1.3 handshake txlb runs the records itself (rustls only
/// agrees the keys): key updates the client makes (each asking for txlb's
/// too) are followed both ways in the middle of 4 MiB echoed, byte exact;
/// the client's close_notify and FIN reach the host as its end, the host's
/// end comes back as close_notify; a client that sends a record txlb cannot
/// open is cut off without harming the next.
#[tokio::test]
async fn tls13_streams_follow_key_updates_and_pass_half_close() {
    const LEN: usize = 4 << 20;
    let cert = issue("keys.example.com", &["keys.example.com"], None);
    let echo = echo_backend().await;
    let lb = start(
        |dir| {
            write_pair(dir, "keys", &cert);
        },
        "<listen ip=\"127.0.0.1:0\"><tls cert=\"keys.pem\" key=\"keys.key\"/></listen>",
        echo,
        "",
    )
    .await;
    let tls = rustls_client(
        lb.addr,
        "keys.example.com",
        std::slice::from_ref(&cert.der),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let mut tls = tls;
    let sent = pattern(7, LEN);
    let echo_all = async {
        let mut echoed = vec![0u8; LEN];
        for (i, (chunk, back)) in sent
            .chunks(64 * 1024)
            .zip(echoed.chunks_mut(64 * 1024))
            .enumerate()
        {
            tls.write_all(chunk).await.unwrap();
            tls.flush().await.unwrap();
            tls.read_exact(back).await.unwrap();
            if i % 8 == 3 {
                // The next records under new keys, and txlb's answers too.
                tls.get_mut().1.refresh_traffic_keys().unwrap();
            }
        }
        tls.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let end = tls.read_to_end(&mut rest).await;
        (echoed, end.map(|_| rest))
    };
    let (echoed, end) = tokio::time::timeout(Duration::from_secs(60), echo_all)
        .await
        .expect("the echo ends");
    assert!(echoed == sent, "echoed byte exact");
    assert_eq!(end.expect("the host's end comes back as close_notify"), b"");
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            lb.access()
                .contains(&format!("bytes_in={LEN} bytes_out={LEN}"))
        })
        .await,
        "{}",
        lb.access()
    );

    // A record that does not decrypt: that client is closed, not the next.
    let mut bad = rustls_client(
        lb.addr,
        "keys.example.com",
        std::slice::from_ref(&cert.der),
        &[],
    )
    .await
    .unwrap();
    bad.get_mut()
        .0
        .write_all(&[
            23, 3, 3, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
        ])
        .await
        .unwrap();
    let mut rest = Vec::new();
    // Closed (an EOF or a reset), not left hanging.
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        bad.get_mut().0.read_to_end(&mut rest),
    )
    .await
    .expect("the client is closed");
    let mut good = rustls_client(
        lb.addr,
        "keys.example.com",
        std::slice::from_ref(&cert.der),
        &[],
    )
    .await
    .unwrap();
    good.write_all(b"still here").await.unwrap();
    let mut back = [0u8; 10];
    good.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"still here");
}

/// Idle terminated TLS 1.3 connections hold their keys and little else:
/// no record buffer, no rustls state (with rustls' stream each held ~10 KB).
#[test]
fn an_idle_tls13_connection_holds_little_memory() {
    let _heavy = common::heavy_blocking();
    const CLIENTS: usize = 1000;
    common::binary::raise_nofile();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cert = issue("idle.example.com", &["idle.example.com"], None);
    // A host that answers each connection once and then holds it.
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in backend.incoming().map_while(Result::ok) {
            let _ = std::io::Write::write_all(&mut stream, b"hello");
            held.push(stream);
        }
    });
    let lb = runtime.block_on(start(
        |dir| {
            write_pair(dir, "idle", &cert);
        },
        "<listen ip=\"127.0.0.1:0\"><tls cert=\"idle.pem\" key=\"idle.key\"/></listen>",
        backend_addr,
        "",
    ));
    let connect = |n: usize| {
        runtime.block_on(async {
            let mut clients = Vec::new();
            for _ in 0..n {
                let mut tls = rustls_client(
                    lb.addr,
                    "idle.example.com",
                    std::slice::from_ref(&cert.der),
                    &[],
                )
                .await
                .unwrap();
                let mut hello = [0u8; 5];
                tls.read_exact(&mut hello).await.unwrap();
                clients.push(tls);
            }
            clients
        })
    };
    // Baseline after a first round, so the runtime and tables have their sizes.
    drop(connect(100));
    std::thread::sleep(Duration::from_secs(1));
    let baseline = lb.txlb.rss_kib();
    let clients = connect(CLIENTS);
    std::thread::sleep(Duration::from_secs(1));
    let per_connection = (lb.txlb.rss_kib().saturating_sub(baseline) * 1024) / CLIENTS as u64;
    eprintln!("{CLIENTS} idle TLS 1.3 connections: {per_connection} B of RSS each");
    assert!(
        per_connection <= 6 * 1024,
        "{per_connection} B per idle TLS connection"
    );
    drop(clients);
}

/// A client that sends a key update (asking for ours) together with its
/// Finished, and its first bytes in the same write: rustls takes the update
/// while still handshaking, so the keys it hands over are a generation past
/// its key log's. The connection is served all the same (its records
/// followed from the keys' own generation, never from a stale secret,
/// which once reused AES-GCM nonces); a client that waits is served too.
#[tokio::test]
async fn a_key_update_sent_with_the_finished_is_followed() {
    let cert = issue("keys.example.com", &["keys.example.com"], None);
    let echo = echo_backend().await;
    let lb = start(
        |dir| {
            write_pair(dir, "keys", &cert);
        },
        "<listen ip=\"127.0.0.1:0\"><tls cert=\"keys.pem\" key=\"keys.key\"/></listen>",
        echo,
        "",
    )
    .await;
    for glued in [true, false, true] {
        let (addr, der) = (lb.addr, cert.der.clone());
        let outcome = tokio::task::spawn_blocking(move || key_update_client(addr, der, glued))
            .await
            .unwrap();
        assert_eq!(outcome, "echo ping", "glued: {glued}");
    }
}

/// A blocking TLS 1.3 client of `addr`: its key update sent in one write
/// with its Finished when `glued`, then `ping`; what came back: "echo
/// ping", "closed", or the error.
fn key_update_client(addr: SocketAddr, der: CertificateDer<'static>, glued: bool) -> String {
    use std::io::{Read, Write};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("keys.example.com").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut glue = glued;
    let mut pinged = false;
    let mut got = Vec::new();
    for _ in 0..100 {
        if !conn.is_handshaking() && glue {
            conn.refresh_traffic_keys().unwrap();
            glue = false;
        }
        if !conn.is_handshaking() && !pinged && !glue {
            conn.writer().write_all(b"ping").unwrap();
            pinged = true;
        }
        if conn.wants_write() {
            let mut wire = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut wire).unwrap();
            }
            if socket.write_all(&wire).is_err() {
                return "closed".into();
            }
            continue;
        }
        match conn.read_tls(&mut socket) {
            Ok(0) => return "closed".into(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return "closed".into(),
            Err(e) => return format!("read error {e}"),
        }
        if let Err(e) = conn.process_new_packets() {
            return format!("TLS error {e}");
        }
        let _ = conn.reader().read_to_end(&mut got);
        if got.len() >= 4 {
            return format!("echo {}", String::from_utf8_lossy(&got));
        }
    }
    "no end".into()
}
