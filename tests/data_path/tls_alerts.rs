//! A terminated TLS client that breaks the record protocol after its
//! handshake hears why before it is closed: txlb's record layer answers each
//! refusal with its fatal alert (RFC 8446 §5, §5.1, §5.2, §4.6.3; §6.2),
//! sealed under its current key, once, then the end of the stream. The
//! clients are rustls, whose error names the alert it received (records
//! rustls will not make are sealed here under the client's key from its key
//! log), and OpenSSL through Python's `ssl`. TLS 1.2 stays with rustls,
//! which sends its alerts itself.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use rustls::AlertDescription::{self, *};
use rustls::pki_types::{CertificateDer, ServerName};

use super::tls::{issue, start, write_pair};
use crate::common::echo_backend;

/// The client's application traffic secret, from rustls' key log.
#[derive(Debug, Default)]
struct ClientSecret(Mutex<Vec<u8>>);

impl rustls::KeyLog for ClientSecret {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        if label == "CLIENT_TRAFFIC_SECRET_0" {
            *self.0.lock().unwrap() = secret.to_vec();
        }
    }
}

/// HKDF-Expand-Label with SHA-256 (RFC 8446 §7.1).
fn expand_label(secret: &[u8], label: &[u8], len: usize) -> Vec<u8> {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let length = (len as u16).to_be_bytes();
    let label_len = [(6 + label.len()) as u8];
    let info: [&[u8]; 5] = [&length, &label_len, b"tls13 ", label, &[0]];
    let mut out = vec![0; len];
    hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, secret)
        .expand(&info, Len(len))
        .unwrap()
        .fill(&mut out)
        .unwrap();
    out
}

/// The client's sending side of TLS_AES_128_GCM_SHA256, by hand: records
/// rustls would never make.
struct Sealer {
    secret: Vec<u8>,
    key: LessSafeKey,
    iv: Vec<u8>,
    seq: u64,
}

impl Sealer {
    fn new(secret: Vec<u8>, seq: u64) -> Sealer {
        let key = expand_label(&secret, b"key", 16);
        let iv = expand_label(&secret, b"iv", 12);
        Sealer {
            key: LessSafeKey::new(UnboundKey::new(&aead::AES_128_GCM, &key).unwrap()),
            iv,
            secret,
            seq,
        }
    }

    /// A record whose inner plaintext (content, type, padding) is `inner`.
    fn seal(&mut self, inner: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&self.iv);
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq += 1;
        let len = (inner.len() + 16) as u16;
        let header = [23, 3, 3, (len >> 8) as u8, len as u8];
        let mut body = inner.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(header),
                &mut body,
            )
            .unwrap();
        [&header[..], &body].concat()
    }

    /// A KeyUpdate (not asking for txlb's), then the next key.
    fn key_update(&mut self) -> Vec<u8> {
        let record = self.seal(&[24, 0, 0, 1, 0, 22]);
        *self = Sealer::new(expand_label(&self.secret, b"traffic upd", 32), 0);
        record
    }
}

/// A blocking client of a terminating listener: rustls agrees the keys and
/// reads what txlb sends; `ping` echoed once, so txlb runs the records.
struct Client {
    conn: rustls::ClientConnection,
    socket: std::net::TcpStream,
    secret: Arc<ClientSecret>,
}

impl Client {
    fn connect(
        addr: SocketAddr,
        der: &CertificateDer<'static>,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> Client {
        use std::io::{Read, Write};
        let mut client = Client::connect_with(addr, der, version);
        let Client { conn, socket, .. } = &mut client;
        conn.complete_io(socket).unwrap();
        assert!(!conn.is_handshaking());
        conn.writer().write_all(b"ping").unwrap();
        let mut echoed = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while echoed.len() < 4 && Instant::now() < deadline {
            conn.complete_io(socket).unwrap();
            let _ = conn.reader().read_to_end(&mut echoed);
        }
        assert!(echoed.starts_with(b"ping"), "ping echoed");
        client
    }

    /// A client connected, its handshake not started.
    fn connect_with(
        addr: SocketAddr,
        der: &CertificateDer<'static>,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> Client {
        use rustls::crypto::ring::cipher_suite::*;
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![
            TLS13_AES_128_GCM_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let secret = Arc::new(ClientSecret::default());
        config.key_log = secret.clone();
        let name = ServerName::try_from("alerts.example.com").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let socket = std::net::TcpStream::connect(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Client {
            conn,
            socket,
            secret,
        }
    }

    /// A TLS 1.3 client whose Finished is not sent yet (`tampered` then
    /// sends it).
    fn connect_glued(addr: SocketAddr, der: &CertificateDer<'static>) -> Client {
        let mut client = Client::connect_with(addr, der, &rustls::version::TLS13);
        while client.conn.is_handshaking() {
            match client.conn.wants_write() {
                true => client.conn.write_tls(&mut client.socket).map(drop),
                false => client.conn.read_tls(&mut client.socket).map(drop),
            }
            .unwrap();
            client.conn.process_new_packets().unwrap();
        }
        assert!(client.conn.wants_write(), "the Finished waits");
        client
    }

    /// The client's key after the handshake, past its `ping` (one record).
    fn sealer(&self) -> Sealer {
        Sealer::new(self.secret.0.lock().unwrap().clone(), 1)
    }

    /// Sends `wire`, reads to the end of the stream: the records txlb sent
    /// (their lengths), and the error rustls makes of them.
    fn refused_after(mut self, wire: &[u8]) -> (Vec<usize>, rustls::Error) {
        use std::io::{Read, Write};
        self.socket.write_all(wire).unwrap();
        let mut got = Vec::new();
        self.socket
            .read_to_end(&mut got)
            .expect("txlb ends the stream (a FIN, not a reset or a wait)");
        let mut records = Vec::new();
        let mut at = 0;
        while got.len() - at >= 5 {
            let len = usize::from(u16::from_be_bytes([got[at + 3], got[at + 4]]));
            records.push(5 + len);
            at += 5 + len;
        }
        assert_eq!(at, got.len(), "whole records: {got:?}");
        let mut rest = &got[..];
        while !rest.is_empty() {
            self.conn.read_tls(&mut rest).unwrap();
            if let Err(e) = self.conn.process_new_packets() {
                return (records, e);
            }
        }
        panic!("no alert in {records:?}");
    }
}

/// Each refusal's alert reaches a rustls client as one record under txlb's
/// key, followed by the end of the stream: a record that does not decrypt
/// (bad_record_mac), one too long or padded past 2^14 + 1 bytes
/// (record_overflow), a plaintext record, a record with no content type or
/// more key updates in a row than txlb follows (unexpected_message), a
/// KeyUpdate asking for a value that does not exist (illegal_parameter) or
/// of a wrong length (decode_error). TLS 1.2 (rustls' records) alike.
#[tokio::test]
async fn a_client_breaking_the_records_gets_the_alert_that_says_why() {
    let cert = issue("alerts.example.com", &["alerts.example.com"], None);
    let echo = echo_backend().await;
    let lb = start(
        |dir| {
            write_pair(dir, "alerts", &cert);
        },
        "<listen ip=\"127.0.0.1:0\"><tls cert=\"alerts.pem\" key=\"alerts.key\"/></listen>",
        echo,
        "",
    )
    .await;
    let (addr, der) = (lb.addr, cert.der.clone());
    let run = tokio::task::spawn_blocking(move || {
        type Make = fn(&mut Client) -> Vec<u8>;
        let cases: [(&str, Make, AlertDescription); 8] = [
            ("tampered tag", tampered, BadRecordMac),
            ("too long", |_| vec![23, 3, 3, 0x41, 0x01], RecordOverflow),
            (
                "overlong padding",
                |c| {
                    let mut inner = vec![0u8; (1 << 14) + 2];
                    inner[..2].copy_from_slice(b"A\x17");
                    c.sealer().seal(&inner)
                },
                RecordOverflow,
            ),
            ("plaintext", |_| vec![22, 3, 3, 0, 1, 0], UnexpectedMessage),
            (
                "no content type",
                |c| c.sealer().seal(&[0, 0]),
                UnexpectedMessage,
            ),
            (
                "33 key updates",
                |c| {
                    let mut sealer = c.sealer();
                    (0..33).flat_map(|_| sealer.key_update()).collect()
                },
                UnexpectedMessage,
            ),
            (
                "key update request 7",
                |c| c.sealer().seal(&[24, 0, 0, 1, 7, 22]),
                IllegalParameter,
            ),
            (
                "key update of two bytes",
                |c| c.sealer().seal(&[24, 0, 0, 2, 0, 0, 22]),
                DecodeError,
            ),
        ];
        for (what, make, alert) in cases {
            let mut client = Client::connect(addr, &der, &rustls::version::TLS13);
            let wire = make(&mut client);
            let (records, error) = client.refused_after(&wire);
            assert_eq!(error, rustls::Error::AlertReceived(alert), "{what}");
            // One record: the alert (2 bytes sealed), nothing after it.
            assert_eq!(records, [5 + 2 + 1 + 16], "{what}");
        }
        // A bad record in the same write as the client's Finished: rustls
        // meets it still handshaking, and sends the alert.
        let mut glued = Client::connect_glued(addr, &der);
        let wire = tampered(&mut glued);
        let (_, error) = glued.refused_after(&wire);
        assert_eq!(error, rustls::Error::AlertReceived(BadRecordMac), "glued");
        let mut client = Client::connect(addr, &der, &rustls::version::TLS12);
        let wire = tampered(&mut client);
        let (records, error) = client.refused_after(&wire);
        assert_eq!(error, rustls::Error::AlertReceived(BadRecordMac), "TLS 1.2");
        // Explicit nonce, alert, tag.
        assert_eq!(records, [5 + 8 + 2 + 16], "TLS 1.2");
    });
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("every case ends")
        .unwrap();
}

/// `data` sealed by rustls, its tag's last byte flipped.
fn tampered(client: &mut Client) -> Vec<u8> {
    use std::io::Write;
    client.conn.writer().write_all(b"data").unwrap();
    let mut wire = Vec::new();
    while client.conn.wants_write() {
        client.conn.write_tls(&mut wire).unwrap();
    }
    *wire.last_mut().unwrap() ^= 1;
    wire
}

/// A client that stops reading while its host sends (txlb's socket to it
/// full, records queued) and then sends a bad record is closed at once: the
/// alert is tried, never waited for.
#[tokio::test]
async fn a_client_that_does_not_read_is_closed_without_waiting_for_its_alert() {
    let cert = issue("alerts.example.com", &["alerts.example.com"], None);
    // A host that echoes `ping`, then sends until the connection ends.
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = backend.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let Ok((mut stream, _)) = backend.accept() else {
            return;
        };
        let mut ping = [0u8; 4];
        if stream.read_exact(&mut ping).is_err() || stream.write_all(&ping).is_err() {
            return;
        }
        let chunk = [7u8; 64 * 1024];
        // At most 1 GiB: txlb's close ends it long before.
        for _ in 0..16 * 1024 {
            if stream.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let lb = start(
        |dir| {
            write_pair(dir, "alerts", &cert);
        },
        "<listen ip=\"127.0.0.1:0\"><tls cert=\"alerts.pem\" key=\"alerts.key\"/></listen>",
        host,
        "",
    )
    .await;
    let (addr, der) = (lb.addr, cert.der.clone());
    let client = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut client = Client::connect(addr, &der, &rustls::version::TLS13);
        // Buffers on both sides fill while the client reads nothing.
        std::thread::sleep(Duration::from_millis(500));
        let wire = tampered(&mut client);
        client.socket.write_all(&wire).unwrap();
        client
    })
    .await
    .unwrap();
    assert!(
        crate::common::eventually(Duration::from_secs(5), || async {
            lb.access().lines().count() == 1
        })
        .await,
        "the connection ended: {}",
        lb.access()
    );
    drop(client);
}

/// A Python `ssl` client (OpenSSL) over memory BIOs, so its records can be
/// damaged on the way: `ADDR PORT CASE`; prints `alert REASON` as OpenSSL
/// names the alert it read.
const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys
addr, port, case = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sock = socket.create_connection((addr, port), timeout=10)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out, server_hostname="alerts.example.com")
def pump():
    data = out.read()
    if data:
        sock.sendall(data)
while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        pump()
        inc.write(sock.recv(65536))
tls.write(b"ping")
pump()
echoed = b""
while echoed != b"ping":
    try:
        echoed += tls.read(4)
    except ssl.SSLWantReadError:
        inc.write(sock.recv(65536))
if case == "tampered":
    tls.write(b"data")
    record = bytearray(out.read())
    record[-1] ^= 1
    sock.sendall(bytes(record))
elif case == "too long":
    sock.sendall(bytes([23, 3, 3, 0x41, 0x01]))
else:
    sock.sendall(bytes([22, 3, 3, 0, 1, 0]))
while True:
    data = sock.recv(65536)
    if not data:
        break
    inc.write(data)
inc.write_eof()
try:
    print("read", tls.read(100))
except ssl.SSLError as e:
    print("alert", e.reason)
"#;

/// OpenSSL reads each alert and names it: a record whose tag was flipped,
/// a header longer than any record, a plaintext handshake record.
#[tokio::test]
async fn openssl_names_each_alert_it_gets() {
    let cert = issue("alerts.example.com", &["alerts.example.com"], None);
    let echo = echo_backend().await;
    let lb = start(
        |dir| {
            write_pair(dir, "alerts", &cert);
        },
        "<listen ip=\"127.0.0.1:0\"><tls cert=\"alerts.pem\" key=\"alerts.key\"/></listen>",
        echo,
        "",
    )
    .await;
    for (case, alert) in [
        ("tampered", "SSLV3_ALERT_BAD_RECORD_MAC"),
        ("too long", "TLSV1_ALERT_RECORD_OVERFLOW"),
        ("plaintext", "SSLV3_ALERT_UNEXPECTED_MESSAGE"),
    ] {
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new("python3")
                .args(["-c", PYTHON_CLIENT])
                .arg(lb.addr.ip().to_string())
                .arg(lb.addr.port().to_string())
                .arg(case)
                .output(),
        )
        .await
        .expect("the client ends")
        .expect("python3 runs");
        let text = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            text.trim(),
            format!("alert {alert}"),
            "{case}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A TLS 1.2 client asking to renegotiate hears rustls' refusal (a
/// `no_renegotiation` warning) at once, though the host behind says nothing:
/// what reading queues for the client is sent without waiting for the
/// host's next bytes. The client is `openssl s_client`, whose `R` command
/// renegotiates.
#[tokio::test]
async fn a_renegotiation_is_refused_at_once_though_the_host_is_silent() {
    use tokio::io::AsyncWriteExt;
    let cert = issue("r.example.com", &["r.example.com"], None);
    let lb = start(
        |dir| {
            write_pair(dir, "r", &cert);
        },
        "<listen ip=\"127.0.0.1:0\"><tls cert=\"r.pem\" key=\"r.key\"/></listen>",
        echo_backend().await,
        "",
    )
    .await;
    let mut child = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-tls1_2",
            "-msg",
            "-connect",
            &lb.addr.to_string(),
        ])
        .args(["-servername", "r.example.com"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    let mut stdin = child.stdin.take().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stdin.write_all(b"R\n").await.unwrap();
    // Well within the idle timeout: the alert comes now or never.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("s_client ends when its input does")
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    let asked = said.rfind("ClientHello").expect("a second ClientHello");
    assert!(
        said[asked..].contains("warning no_renegotiation"),
        "no refusal heard: {said}"
    );
}
