//! Routing by what the client says first, end to end through the `txlb`
//! binary: real TLS servers as hosts (each with its own certificate, made
//! here), real clients (`openssl s_client`, curl, Python's `ssl`, OpenSSH,
//! rustls), on one port. The client always sees the chosen host's own
//! certificate: nothing is terminated. Also: a 64 MiB byte-exact transfer after
//! routing, a ClientHello written one byte at a time, the inspect timeout, a
//! client no route matches on a service without groups, and the counters
//! (`/metrics`, the JSON API, the access log).

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::admin::{FULL, users};
use common::binary::Txlb;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

/// A certificate for `name`, self-signed: its DER and PEM, and the key.
struct Cert {
    der: CertificateDer<'static>,
    pem: String,
    key: PrivatePkcs8KeyDer<'static>,
}

fn cert(name: &str) -> Cert {
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Cert {
        der: cert.der().clone(),
        pem: cert.pem(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    }
}

/// What a TLS host does once the handshake is done.
#[derive(Clone, Copy)]
enum Serve {
    /// Answers an HTTP/1.x request with `NAME` as the body, then closes.
    Http,
    /// Echoes every byte until the client closes.
    Echo,
}

/// A TLS server for `name` with its own certificate (ALPN: http/1.1 only, so
/// curl speaks HTTP/1.1 whatever it offers). Returns its address and
/// certificate.
async fn tls_host(name: &'static str, serve: Serve) -> (SocketAddr, Cert) {
    let cert = cert(name);
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der.clone()],
        PrivateKeyDer::Pkcs8(cert.key.clone_key()),
    )
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                match serve {
                    Serve::Http => {
                        let _ = read_request_head(&mut tls).await;
                        let response = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                            name.len()
                        );
                        let _ = tls.write_all(response.as_bytes()).await;
                        let _ = tls.shutdown().await;
                    }
                    Serve::Echo => {
                        let (mut r, mut w) = tokio::io::split(tls);
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                        let _ = w.shutdown().await;
                    }
                }
            });
        }
    });
    (addr, cert)
}

/// Reads up to the end of an HTTP request head (or 16 KiB).
async fn read_request_head<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match s.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    head
}

/// A plain HTTP host answering `NAME` to any request, then closing.
pub(super) async fn http_host(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = read_request_head(&mut s).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                    name.len()
                );
                let _ = s.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

/// A host that greets first: writes `NAME\n` to every client, then echoes.
/// With `first_line`, sends each client's first line (up to 255 bytes) there.
pub(super) async fn greeting_host(
    name: &'static str,
    first_line: Option<tokio::sync::mpsc::Sender<String>>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let first_line = first_line.clone();
            tokio::spawn(async move {
                let _ = s.write_all(format!("{name}\n").as_bytes()).await;
                if let Some(report) = first_line {
                    let mut line = Vec::new();
                    let mut byte = [0u8; 1];
                    while line.len() < 255 && !line.ends_with(b"\n") {
                        match s.read(&mut byte).await {
                            Ok(1) => line.push(byte[0]),
                            _ => break,
                        }
                    }
                    let _ = report.send(String::from_utf8_lossy(&line).into()).await;
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// The admin block: the web server on a free port, one full user.
pub(super) fn admin_block() -> String {
    let user = &users()[0];
    format!(
        "  <admin>\n    <web listen=\"127.0.0.1:0\" enable=\"true\"/>\n    \
         <user name=\"{}\" password=\"{}\" access=\"full\"/>\n  </admin>\n",
        user.name, user.password_hash
    )
}

/// The admin web server's URL, without the final `/`.
pub(super) async fn admin_base(txlb: &Txlb) -> String {
    let url = txlb.logged("admin web server up", "url").await;
    url.trim_end_matches('/').to_string()
}

/// A service with one group of one host.
pub(super) fn service(name: &str, host: SocketAddr) -> String {
    format!(
        "  <service name=\"{name}\">\n    <group name=\"g\" enable=\"true\">\n      \
         <host name=\"{name}1\" ip=\"{host}\"/>\n    </group>\n  </service>\n"
    )
}

/// The hosts of the main scenario and their certificates' files.
struct Edge {
    _txlb: Txlb,
    addr: SocketAddr,
    base: String,
    /// PEM files of each TLS host's certificate, by host name.
    pems: tempfile::TempDir,
    ssh_lines: tokio::sync::mpsc::Receiver<String>,
}

impl Edge {
    fn pem(&self, name: &str) -> PathBuf {
        self.pems.path().join(format!("{name}.pem"))
    }
}

/// One listener routing to six services, its own group serving the rest.
async fn edge() -> Edge {
    let names = [
        "api.example.com",
        "org.example.org",
        "h2.example.net",
        "default.example.net",
        "echo.example.com",
    ];
    let pems = tempfile::tempdir().unwrap();
    let mut hosts = Vec::new();
    for name in names {
        let serve = if name.starts_with("echo") {
            Serve::Echo
        } else {
            Serve::Http
        };
        let (addr, cert) = tls_host(name, serve).await;
        std::fs::write(pems.path().join(format!("{name}.pem")), &cert.pem).unwrap();
        hosts.push(addr);
    }
    let app = http_host("app").await;
    let (ssh_tx, ssh_lines) = tokio::sync::mpsc::channel(4);
    let bastion = greeting_host("SSH-2.0-bastion", Some(ssh_tx)).await;
    let xml = format!(
        "<config>\n  <service name=\"edge\">\n    <listen ip=\"127.0.0.1:0\">\n      \
         <route sni=\"api.example.com\" service=\"api\"/>\n      \
         <route sni=\"echo.example.com\" service=\"echo\"/>\n      \
         <route sni=\"*.example.org\" service=\"org\"/>\n      \
         <route alpn=\"h2\" service=\"h2pool\"/>\n      \
         <route protocol=\"http\" host=\"app.example.com\" service=\"app\"/>\n      \
         <route protocol=\"ssh\" service=\"bastion\"/>\n    </listen>\n    \
         <group name=\"default\" enable=\"true\">\n      <host name=\"d1\" ip=\"{}\"/>\n    \
         </group>\n  </service>\n{}{}{}{}{}{}{}</config>\n",
        hosts[3],
        service("api", hosts[0]),
        service("org", hosts[1]),
        service("h2pool", hosts[2]),
        service("echo", hosts[4]),
        service("app", app),
        service("bastion", bastion),
        admin_block(),
    );
    let txlb = Txlb::start_xml(&xml, None);
    let addr = txlb.listener();
    let base = admin_base(&txlb).await;
    Edge {
        _txlb: txlb,
        addr,
        base,
        pems,
        ssh_lines,
    }
}

/// `openssl s_client` to `addr` asking for `sni` (none when `None`), trusting
/// `ca`, and verifying the host name when the name asked is the one `ca` is
/// for; returns its output.
pub(super) async fn s_client(
    addr: SocketAddr,
    sni: Option<&str>,
    alpn: Option<&str>,
    ca: &Path,
) -> String {
    let mut command = Command::new("openssl");
    command
        .args(["s_client", "-connect", &addr.to_string(), "-CAfile"])
        .arg(ca)
        .arg("-brief");
    match sni {
        Some(name) => command.args(["-servername", name]),
        None => command.arg("-noservername"),
    };
    let ca_name = ca.file_stem().and_then(|n| n.to_str()).unwrap_or_default();
    if sni.is_some_and(|name| name.eq_ignore_ascii_case(ca_name)) {
        command.args(["-verify_return_error", "-verify_hostname", ca_name]);
    }
    if let Some(alpn) = alpn {
        command.args(["-alpn", alpn]);
    }
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("openssl s_client hangs")
    .expect("openssl runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The host certificate's subject line `openssl s_client -brief` prints.
pub(super) fn peer_subject(output: &str) -> &str {
    output
        .lines()
        .find(|l| l.contains("Peer certificate:") || l.starts_with("depth=0 "))
        .unwrap_or_else(|| panic!("no peer certificate in:\n{output}"))
}

#[tokio::test]
async fn sni_routes_reach_each_hosts_own_certificate() {
    let edge = edge().await;
    // Exact names, a wildcard, and names no SNI route matches: each verifies
    // against the certificate of the host it should reach, by that host's name.
    for (sni, host) in [
        ("api.example.com", "api.example.com"),
        ("API.Example.COM", "api.example.com"),
        ("org.example.org", "org.example.org"),
        ("deep.org.example.org", "org.example.org"),
        ("default.example.net", "default.example.net"),
    ] {
        let out = s_client(edge.addr, Some(sni), None, &edge.pem(host)).await;
        // Verified (name and trust) when the name asked is the host's own.
        if sni.eq_ignore_ascii_case(host) {
            assert!(out.contains("Verification: OK"), "{sni}: {out}");
        }
        assert!(
            peer_subject(&out).ends_with(&format!("CN = {host}")),
            "{sni} should reach {host}:\n{out}"
        );
    }
    // `example.org` itself is not under `*.example.org`: the default group.
    let out = s_client(
        edge.addr,
        Some("example.org"),
        None,
        &edge.pem("default.example.net"),
    )
    .await;
    assert!(peer_subject(&out).contains("default.example.net"), "{out}");
    // No SNI at all: only routes without `sni` apply, none matches: default.
    let out = s_client(edge.addr, None, None, &edge.pem("default.example.net")).await;
    assert!(peer_subject(&out).contains("default.example.net"), "{out}");
}

#[tokio::test]
async fn alpn_routes_a_client_that_offers_it() {
    let edge = edge().await;
    let out = s_client(
        edge.addr,
        Some("h2.example.net"),
        Some("http/1.1,h2"),
        &edge.pem("h2.example.net"),
    )
    .await;
    assert!(out.contains("Verification: OK"), "{out}");
    assert!(peer_subject(&out).contains("h2.example.net"), "{out}");
    // Python's ssl, offering h2 and an SNI no route names.
    let script = format!(
        "import socket, ssl\n\
         ctx = ssl.create_default_context(cafile={ca:?})\n\
         ctx.set_alpn_protocols(['h2', 'http/1.1'])\n\
         s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port}), timeout=10), \
         server_hostname='h2.example.net')\n\
         print(s.getpeercert()['subject'])\n",
        ca = edge.pem("h2.example.net").display().to_string(),
        port = edge.addr.port()
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("h2.example.net"),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn curl_over_tls_http_and_ssh_share_the_port() {
    let mut edge = edge().await;
    let port = edge.addr.port();
    // HTTPS by SNI, the certificate verified by curl against the host's own.
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--http1.1", "--resolve"])
        .arg(format!("api.example.com:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(edge.pem("api.example.com"))
        .arg(format!("https://api.example.com:{port}/"))
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "api.example.com",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Plain HTTP on the same port, routed by its Host header.
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--resolve"])
        .arg(format!("app.example.com:{port}:127.0.0.1"))
        .arg(format!("http://app.example.com:{port}/"))
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "app",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The OpenSSH client: its identification string reaches the bastion.
    let ssh = Command::new("ssh")
        .args([
            "-p",
            &port.to_string(),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
            "nobody@127.0.0.1",
            "true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ssh runs");
    let line = tokio::time::timeout(Duration::from_secs(15), edge.ssh_lines.recv())
        .await
        .expect("the bastion hears from ssh")
        .unwrap();
    assert!(line.starts_with("SSH-2.0-OpenSSH"), "{line:?}");
    drop(ssh);

    // Counted per route, in /metrics and the JSON API.
    let http = common::admin::client();
    let metrics = common::admin::get_as(&edge.base, FULL, "/metrics").await.1;
    for (route, service) in [
        ("sni=api.example.com", "api"),
        ("protocol=http host=app.example.com", "app"),
        ("protocol=ssh", "bastion"),
    ] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("txlb_route_hits_total{")
                    && l.contains(&format!("route=\"{route}\""))
                    && l.contains(&format!("service=\"{service}\""))
            })
            .unwrap_or_else(|| panic!("no hits line for {route}:\n{metrics}"));
        assert!(line.ends_with(" 1"), "{line}");
    }
    drop(http);
}

/// An AsyncWrite that sends its first `slow` bytes one per write, a
/// millisecond apart, so each reaches txlb in its own segment.
struct Trickle {
    inner: TcpStream,
    slow: usize,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.slow == 0 {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        if let Some(pause) = self.pause.as_mut() {
            std::task::ready!(pause.as_mut().poll(cx));
            self.pause = None;
        }
        let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[..1]))?;
        self.slow -= n;
        self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(1))));
        Poll::Ready(Ok(n))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

use std::future::Future;

/// A rustls client to `addr` asking for `sni`, trusting `root`, over `io`.
async fn tls_connect<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    sni: &'static str,
    root: &Path,
) -> tokio_rustls::client::TlsStream<S> {
    let pem = std::fs::read_to_string(root).unwrap();
    let der = pem_to_der(&pem);
    let config = common::admin::tls_client_config(&[der]);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tokio::time::timeout(
        Duration::from_secs(20),
        connector.connect(ServerName::try_from(sni).unwrap(), io),
    )
    .await
    .expect("handshake in time")
    .expect("handshake with the host's own certificate")
}

fn pem_to_der(pem: &str) -> CertificateDer<'static> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    CertificateDer::from(
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap(),
    )
}

#[tokio::test]
async fn a_hello_in_one_byte_writes_is_still_routed() {
    let edge = edge().await;
    let tcp = TcpStream::connect(edge.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let trickle = Trickle {
        inner: tcp,
        slow: 600,
        pause: None,
    };
    let mut tls = tls_connect(trickle, "api.example.com", &edge.pem("api.example.com")).await;
    let request = b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n";
    tokio::time::timeout(Duration::from_secs(10), async {
        tls.write_all(request).await?;
        // What rustls could not hand the trickle yet goes out on a flush.
        tls.flush().await
    })
    .await
    .expect("request written in time")
    .unwrap();
    let mut body = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut body))
        .await
        .expect("answered in time");
    assert!(
        body.ends_with(b"api.example.com"),
        "{:?}",
        String::from_utf8_lossy(&body)
    );
}

#[tokio::test]
async fn sixty_four_mib_pass_byte_exact_after_routing() {
    let _heavy = common::heavy().await;
    let edge = edge().await;
    let tcp = TcpStream::connect(edge.addr).await.unwrap();
    let tls = tls_connect(tcp, "echo.example.com", &edge.pem("echo.example.com")).await;
    // The connection list tells what was seen and the route taken.
    let listed = common::admin::get_as(&edge.base, FULL, "/api/v1/connections")
        .await
        .1;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let ours = listed
        .as_array()
        .and_then(|all| all.iter().find(|c| c["service"] == "echo"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(ours["protocol"], "tls", "{ours}");
    assert_eq!(ours["sni"], "echo.example.com", "{ours}");
    assert_eq!(ours["route"], "sni=echo.example.com", "{ours}");
    let (mut r, mut w) = tokio::io::split(tls);
    const TOTAL: usize = 64 << 20;
    let writer = tokio::spawn(async move {
        let mut rng = fastrand::Rng::with_seed(21);
        let mut hash = xxhash_rust::xxh3::Xxh3::new();
        let mut chunk = vec![0u8; 256 * 1024];
        let mut sent = 0;
        while sent < TOTAL {
            rng.fill(&mut chunk);
            hash.update(&chunk);
            w.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        w.shutdown().await.unwrap();
        hash.digest()
    });
    let mut hash = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    let started = Instant::now();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(60), r.read(&mut buf))
            .await
            .expect("echo in time")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        got += n;
    }
    assert_eq!(got, TOTAL, "after {:?}", started.elapsed());
    assert_eq!(hash.digest(), writer.await.unwrap());
}

#[tokio::test]
async fn silent_clients_wait_inspect_timeout_then_go_to_the_own_group() {
    let greeter = greeting_host("own", None).await;
    let api = greeting_host("api", None).await;
    let xml = format!(
        "<config>\n  <service name=\"edge\">\n    \
         <listen ip=\"127.0.0.1:0\" inspectTimeout=\"0.5\">\n      \
         <route sni=\"api.example.com\" service=\"api\"/>\n    </listen>\n    \
         <group name=\"g\" enable=\"true\">\n      <host name=\"own1\" ip=\"{greeter}\"/>\n    \
         </group>\n  </service>\n{}  <service name=\"routes-only\">\n    \
         <listen ip=\"127.0.0.1:0\" inspectTimeout=\"0.5\">\n      \
         <route sni=\"api.example.com\" service=\"api\"/>\n    </listen>\n  </service>\n\
         {}</config>\n",
        service("api", api),
        admin_block()
    );
    let txlb = Txlb::start_xml(&xml, None);
    let edge = txlb.listener();
    let base = admin_base(&txlb).await;
    let started = Instant::now();
    let mut client = TcpStream::connect(edge).await.unwrap();
    let mut line = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut line))
        .await
        .expect("served after the inspect timeout")
        .unwrap();
    assert_eq!(&line, b"own\n");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(4),
        "{waited:?}"
    );

    // A service without groups closes what no route matches, and counts it.
    let listeners: serde_json::Value = common::admin::client()
        .get(format!("{base}/api/v1/services/routes-only"))
        .basic_auth(FULL.0, Some(FULL.1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let routes_only: SocketAddr = listeners["listeners"][0]["local"]
        .as_str()
        .unwrap_or_else(|| panic!("{listeners}"))
        .parse()
        .unwrap();
    let mut client = TcpStream::connect(routes_only).await.unwrap();
    client.write_all(b"garbage\r\n").await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
        .await
        .expect("closed");
    assert!(read.is_err() || rest.is_empty(), "{rest:?}");
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            let metrics = common::admin::get_as(&base, FULL, "/metrics").await.1;
            metrics
                .lines()
                .any(|l| l == "txlb_service_no_route_total{service=\"routes-only\"} 1")
        })
        .await
    );
}

/// The first bytes of a real ClientHello (rustls's, asking for `sni`).
pub(super) fn client_hello(sni: &'static str) -> Vec<u8> {
    let config = common::admin::tls_client_config(&[]);
    let mut client =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from(sni).unwrap())
            .unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    hello
}

#[tokio::test]
async fn odd_first_bytes_are_served_counted_and_logged_once_per_kind() {
    let own = greeting_host("own", None).await;
    let xml = format!(
        "<config>\n  <service name=\"edge\">\n    \
         <listen ip=\"127.0.0.1:0\" inspectTimeout=\"0.5\">\n      \
         <route sni=\"api.example.com\" service=\"api\"/>\n    </listen>\n    \
         <group name=\"g\" enable=\"true\">\n      <host name=\"own1\" ip=\"{own}\"/>\n    \
         </group>\n  </service>\n{}{}</config>\n",
        service("api", greeting_host("api", None).await),
        admin_block()
    );
    let mut txlb = Txlb::start_xml(&xml, None);
    let edge = txlb.listener();
    let base = admin_base(&txlb).await;
    let hello = client_hello("api.example.com");
    let mut oversized = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x01, 0x86, 0xa0];
    oversized.resize(64, 0);
    let mut endless_http = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
    endless_http.resize(20 * 1024, b'a');
    let sslv2 = [
        0x80u8, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
    ];
    // (bytes, close after sending, the kind counted)
    let cases: Vec<(Vec<u8>, bool, &str)> = vec![
        (oversized, false, "oversized_hello"),
        (hello[..hello.len() / 2].to_vec(), true, "truncated_hello"),
        (sslv2.to_vec(), false, "sslv2_hello"),
        (
            b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n".to_vec(),
            false,
            "http_without_host",
        ),
        (endless_http, false, "oversized_http"),
        (Vec::new(), false, "silent"),
        (Vec::new(), false, "silent"),
    ];
    for (bytes, close, kind) in &cases {
        let mut client = TcpStream::connect(edge).await.unwrap();
        client.write_all(bytes).await.unwrap();
        if *close {
            client.shutdown().await.unwrap();
        }
        // Each is served by the listener's own group (a client that sent
        // bytes, then closed, may see its host answer or the close).
        let mut greeting = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut greeting))
            .await
            .unwrap_or_else(|_| panic!("{kind}: no answer"));
        if !close {
            read.unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(&greeting, b"own\n", "{kind}");
        }
    }
    let counted = |metrics: &str, kind: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("txlb_inspect_anomalies_total{")
                    && l.contains(&format!("kind=\"{kind}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let metrics = common::admin::get_as(&base, FULL, "/metrics").await.1;
        if counted(&metrics, "silent") == 2 || Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(counted(&metrics, "silent"), 2, "{metrics}");
    for (_, _, kind) in &cases[..5] {
        assert_eq!(counted(&metrics, kind), 1, "{kind}:\n{metrics}");
    }
    // Logged once per kind, however many clients show it.
    assert_eq!(
        txlb.count_reaching("the client sent nothing", 1).await,
        1,
        "{}",
        txlb.log_text()
    );
    assert_eq!(txlb.count_reaching("TLS ClientHello too long", 1).await, 1);
    assert!(txlb.alive());
}
