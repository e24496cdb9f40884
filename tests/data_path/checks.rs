//! Active checks (`<check>`) end to end through the `txlb` binary, against
//! small servers written here: an HTTP host answering 503 then 200 (clients
//! avoid it meanwhile), a TCP host that goes away and comes back (exactly
//! `fall` failures and `rise` passes, timed against its own probes), a
//! Redis-like host answering `-LOADING` then `+PONG`, and hostile hosts (an
//! endless line, garbage, silence) that fail by the read limit or the timeout
//! while the balancer's memory stays flat, and an HTTP/1.1 host whose
//! connection an http check keeps between probes.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::binary::Txlb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A one-service configuration whose group has `check` and `hosts`, with
/// `extra` in `<config>`.
pub(super) fn config_with(check: &str, hosts: &[(&str, SocketAddr)], extra: &str) -> String {
    format!(
        "<config>\n  <service name=\"svc\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
         <group name=\"g\" scheduler=\"roundr\" enable=\"true\">\n      {check}\n{}    </group>\n  \
         </service>\n{extra}</config>\n",
        common::host_lines(hosts)
    )
}

pub(super) fn config(check: &str, hosts: &[(&str, SocketAddr)]) -> String {
    config_with(check, hosts, "")
}

/// `/metrics` of the admin web server at `base` (`http://ADDR/`), public.
async fn metrics(base: &str) -> String {
    let addr = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// The first log line after `skip` lines saying `what` ("host marked bad",
/// "host back in rotation") about host `name`.
pub(super) async fn transition(txlb: &Txlb, what: &str, name: &str, skip: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let found = txlb
            .log
            .lock()
            .unwrap()
            .iter()
            .skip(skip)
            .find(|l| l.contains(what) && l.contains(name))
            .cloned();
        if let Some(line) = found {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no {what:?} for {name}:\n{}",
            txlb.log_text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Which host served a client: each host answers its name.
async fn served_by(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"hello\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// An HTTP host: `GET /healthz` gets the status in `code`, anything else the
/// host's name.
async fn http_host(name: &'static str, code: Arc<AtomicU16>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let code = code.clone();
            tokio::spawn(async move {
                let mut buf = vec![0; 1024];
                let mut len = 0;
                while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
                    match s.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => len += n,
                    }
                }
                let answer = if buf.starts_with(b"GET /healthz HTTP/1.") {
                    format!(
                        "HTTP/1.1 {} X\r\nContent-Length: 0\r\n\r\n",
                        code.load(SeqCst)
                    )
                } else {
                    name.to_string()
                };
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_http_host_answering_503_goes_bad_after_fall_checks_and_back_after_rise() {
    let sick = Arc::new(AtomicU16::new(200));
    let h1 = http_host("h1", sick.clone()).await;
    let h2 = http_host("h2", Arc::new(AtomicU16::new(200))).await;
    let check = r#"<check type="http" interval="0.2" timeout="0.5" rise="2" fall="2" path="/healthz" status="200-299"/>"#;
    let user = &common::admin::users()[0];
    let admin = format!(
        "  <admin><web listen=\"127.0.0.1:0\" enable=\"true\" metricsPublic=\"true\"/>\
         <user name=\"{}\" password=\"{}\" access=\"full\"/></admin>\n",
        user.name, user.password_hash
    );
    let txlb = Txlb::start_xml(&config_with(check, &[("h1", h1), ("h2", h2)], &admin), None);
    let lb = txlb.listener();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(served_by(lb).await);
    }
    assert_eq!(seen.len(), 2, "both hosts serve: {seen:?}");

    sick.store(503, SeqCst);
    let bad = transition(&txlb, "host marked bad", "h1", 0).await;
    assert!(bad.contains("check: HTTP 503"), "{bad}");
    for _ in 0..6 {
        assert_eq!(served_by(lb).await, "h2", "clients avoid the bad host");
    }
    // The check's progress shows in running.txt and on the page.
    let base = txlb.logged("admin web server up", "url").await;
    let base = base.trim_end_matches('/');
    let full = common::admin::FULL;
    let running = common::admin::get_as(base, full, "/running.txt").await.1;
    let h1_line = running.lines().find(|l| l.contains("host h1 ")).unwrap();
    assert!(
        h1_line.contains(" state=bad ") && h1_line.contains(" check_failures="),
        "{running}"
    );
    let page = common::admin::get_as(base, full, "/").await.1;
    assert!(page.contains("failed: HTTP 503 in "), "{page}");
    // The hostCheck read (legacy call; `name` as the other calls take it).
    let read = "/hostCheck?service=svc&group=g&name=h1";
    let text = common::admin::get_as(base, full, read).await.1;
    assert!(
        text.starts_with("OK host h1 state=bad reason=\"check: HTTP 503\" check=http rise=2 fall=2 passes=0 fails=")
            && text.contains(" last_failure=\"HTTP 503\""),
        "{text}"
    );
    let skip = txlb.log_len();
    sick.store(200, SeqCst);
    transition(&txlb, "host back in rotation", "h1", skip).await;
    let mut back = false;
    for _ in 0..4 {
        back |= served_by(lb).await == "h1";
    }
    assert!(back, "h1 serves again");
    assert_eq!(txlb.count("host marked bad"), 1, "{}", txlb.log_text());
    // The probes show in /metrics: h1 failed at least `fall` of them, h2 none.
    let text = metrics(&txlb.logged("admin web server up", "url").await).await;
    let sample = |name: &str, host: &str| -> f64 {
        let series = format!("{name}{{service=\"svc\",group=\"g\",host=\"{host}\"}} ");
        let line = text.lines().find(|l| l.starts_with(&series));
        line.unwrap_or_else(|| panic!("no {series} in {text}"))[series.len()..]
            .parse()
            .unwrap()
    };
    assert!(
        sample("txlb_host_check_failures_total", "h1") >= 2.0,
        "{text}"
    );
    assert_eq!(
        sample("txlb_host_check_failures_total", "h2"),
        0.0,
        "{text}"
    );
    let latency = sample("txlb_host_check_seconds", "h2");
    assert!(latency > 0.0 && latency < 0.5, "{text}");
}

#[tokio::test]
async fn a_host_takes_exactly_fall_failures_and_rise_passes() {
    // The host counts the probes it accepts and when the last came, and
    // answers each. (An http check: a tcp probe never reaches the host's
    // accept queue, see the test below.)
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(std::sync::Mutex::new(Instant::now()));
    let serving = Arc::new(AtomicBool::new(true));
    let serve = |listener: std::net::TcpListener| {
        let (accepted, last, serving) = (accepted.clone(), last.clone(), serving.clone());
        listener.set_nonblocking(true).unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        tokio::spawn(async move {
            while serving.load(SeqCst) {
                if let Ok(Ok((probe, _))) =
                    tokio::time::timeout(Duration::from_millis(20), listener.accept()).await
                {
                    *last.lock().unwrap() = Instant::now();
                    accepted.fetch_add(1, SeqCst);
                    let _ = probe.try_write(b"HTTP/1.0 200 OK\r\n\r\n");
                }
            }
        })
    };
    let check = r#"<check type="http" interval="0.2" timeout="0.1" rise="2" fall="3"/>"#;
    let task = serve(listener);
    let txlb = Txlb::start_xml(&config(check, &[("flappy", addr)]), None);
    txlb.listener();
    // Stop listening right after a probe: the next probes fail at about
    // +0.2, +0.4 and +0.6 s (±10% each); the host goes bad at the third.
    let before = accepted.load(SeqCst);
    assert!(
        common::eventually(Duration::from_secs(3), || async {
            accepted.load(SeqCst) >= before + 2
        })
        .await
    );
    let seen = accepted.load(SeqCst);
    assert!(
        common::eventually(Duration::from_secs(2), || async {
            accepted.load(SeqCst) > seen
        })
        .await
    );
    serving.store(false, SeqCst);
    task.await.unwrap();
    let probed = *last.lock().unwrap();
    let skip = txlb.log_len();
    let bad = transition(&txlb, "host marked bad", "flappy", skip).await;
    let after = probed.elapsed();
    assert!(bad.contains("check: connect to"), "{bad}");
    assert!(
        after >= Duration::from_millis(500) && after < Duration::from_millis(1500),
        "bad {after:?} after the last pass: not 3 failures"
    );
    // Listen again: exactly two passes put the host back.
    let listener = std::net::TcpListener::bind(addr).unwrap();
    accepted.store(0, SeqCst);
    serving.store(true, SeqCst);
    let skip = txlb.log_len();
    let _task = serve(listener);
    transition(&txlb, "host back in rotation", "flappy", skip).await;
    // The kernel completes a probe's connect before the accept loop counts
    // it; the next probe is at least 0.18 s away.
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(accepted.load(SeqCst), 2, "back after exactly rise passes");
}

/// A Redis-like host: `-LOADING` to every `PING` while `loading`, then `+PONG`.
pub(super) async fn redis_like(loading: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let loading = loading.clone();
            tokio::spawn(async move {
                let mut buf = [0; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let answer: &[u8] = if loading.load(SeqCst) {
                        b"-LOADING Redis is loading the dataset in memory\r\n"
                    } else {
                        b"+PONG\r\n"
                    };
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_send_expect_check_waits_for_pong_not_loading() {
    let loading = Arc::new(AtomicBool::new(true));
    let redis = redis_like(loading.clone()).await;
    let check = r#"<check type="send" send="PING\r\n" expect="+PONG" interval="0.2" timeout="0.5" rise="2" fall="2"/>"#;
    let txlb = Txlb::start_xml(&config(check, &[("redis", redis)]), None);
    txlb.listener();
    let bad = transition(&txlb, "host marked bad", "redis", 0).await;
    // The host keeps the connection open: the reason says what it got by the
    // timeout.
    assert!(
        bad.contains(r#"expect \"+PONG\", got \"-LOADING Redis is loading"#),
        "{bad}"
    );
    assert!(bad.contains("then timeout after 0.5 s"), "{bad}");
    let skip = txlb.log_len();
    loading.store(false, SeqCst);
    transition(&txlb, "host back in rotation", "redis", skip).await;
}

/// Hosts that misbehave: one sends an endless line, one garbage then
/// closes, one accepts and says nothing.
async fn hostile(kind: u8) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut silent = Vec::new();
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            match kind {
                0 => {
                    tokio::spawn(async move {
                        let chunk = vec![b'a'; 64 * 1024];
                        while s.write_all(&chunk).await.is_ok() {}
                    });
                }
                1 => {
                    let garbage: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
                    let _ = s.write_all(&garbage).await;
                }
                _ => silent.push(s),
            }
        }
    });
    addr
}

#[tokio::test]
async fn hostile_hosts_fail_by_the_read_limit_or_the_timeout_in_flat_memory() {
    let endless = hostile(0).await;
    let garbage = hostile(1).await;
    let silent = hostile(2).await;
    let check = r#"<check type="http" interval="0.1" timeout="0.3" rise="1" fall="1"/>"#;
    let hosts = [
        ("endless", endless),
        ("garbage", garbage),
        ("silent", silent),
    ];
    let txlb = Txlb::start_xml(&config(check, &hosts), None);
    txlb.listener();
    let line = transition(&txlb, "host marked bad", "endless", 0).await;
    assert!(line.contains("4096 bytes without it"), "{line}");
    let line = transition(&txlb, "host marked bad", "garbage", 0).await;
    assert!(
        line.contains("not an HTTP status line") || line.contains("then EOF"),
        "{line}"
    );
    let line = transition(&txlb, "host marked bad", "silent", 0).await;
    assert!(line.contains("then timeout after 0.3 s"), "{line}");
    // Dozens of probes later, the balancer holds no more memory.
    let rss = txlb.rss_kib();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grown = txlb.rss_kib().saturating_sub(rss);
    assert!(grown < 2048, "RSS grew {grown} KiB");
    assert_eq!(
        txlb.count("host back in rotation"),
        0,
        "{}",
        txlb.log_text()
    );
}

#[tokio::test]
async fn a_check_added_by_a_reload_starts_probing() {
    let h1 = http_host("h1", Arc::new(AtomicU16::new(503))).await;
    let h2 = http_host("h2", Arc::new(AtomicU16::new(200))).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    let hosts = [("h1", h1), ("h2", h2)];
    // Without a check, a host answering 503 is up: its connects succeed.
    std::fs::write(&path, config("", &hosts)).unwrap();
    let txlb = Txlb::start(&path, 2);
    txlb.listener();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(txlb.count("host marked bad"), 0, "{}", txlb.log_text());
    let check = r#"<check type="http" interval="0.2" timeout="0.5" fall="1" path="/healthz"/>"#;
    std::fs::write(&path, config(check, &hosts)).unwrap();
    let skip = txlb.log_len();
    txlb.signal("HUP");
    let bad = transition(&txlb, "host marked bad", "h1", skip).await;
    assert!(bad.contains("check: HTTP 503"), "{bad}");
    assert_eq!(txlb.count("host marked bad"), 1, "{}", txlb.log_text());
}

/// `onMarkedDown="close"` closes the open connections of a host the check
/// marks bad, within the probes that take to fail; without it they continue.
/// A host a reload renamed meanwhile (same address) is the same host: its
/// connections made under the old name are closed too.
#[tokio::test]
async fn on_marked_down_close_ends_the_hosts_open_connections() {
    for close in [true, false] {
        let loading = Arc::new(AtomicBool::new(false));
        let redis = redis_like(loading.clone()).await;
        let check = r#"<check type="send" send="PING\r\n" expect="+PONG" interval="0.2" timeout="0.3" rise="2" fall="2"/>"#;
        let mut xml = config(check, &[("redis", redis)]);
        if close {
            xml = xml.replace("enable=\"true\"", "enable=\"true\" onMarkedDown=\"close\"");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.xml");
        std::fs::write(&path, &xml).unwrap();
        let txlb = Txlb::start(&path, 2);
        let mut client = TcpStream::connect(txlb.listener()).await.unwrap();
        let mut answer = [0u8; 7];
        client.write_all(b"PING\r\n").await.unwrap();
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"+PONG\r\n");
        let name = match close {
            true => {
                std::fs::write(&path, xml.replace("name=\"redis\"", "name=\"cache\"")).unwrap();
                let skip = txlb.log_len();
                txlb.signal("HUP");
                txlb.wait_for_async("configuration reloaded", skip).await;
                "cache"
            }
            false => "redis",
        };
        loading.store(true, SeqCst);
        transition(&txlb, "host marked bad", name, 0).await;
        let mut rest = [0u8; 64];
        if close {
            // Closed: a read sees the end (or an error) soon, whatever
            // answers came before.
            let ended = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = client.write_all(b"PING\r\n").await;
                loop {
                    match client.read(&mut rest).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(ended.is_ok(), "closed on marked down");
            // The line is written once the close is done: the client may see
            // the end first.
            txlb.wait_for_async("closed=1", 0).await;
            assert_eq!(txlb.count("closed=1"), 1, "{}", txlb.log_text());
        } else {
            let after = tokio::time::timeout(Duration::from_secs(2), async {
                client.write_all(b"PING\r\n").await?;
                client.read(&mut rest).await
            })
            .await;
            let n = after.expect("kept open").expect("kept open");
            assert!(rest[..n].starts_with(b"-LOADING"), "{:?}", &rest[..n]);
        }
    }
}

/// How the next probe connection to a fresh host listening at its port ends,
/// after the host answered `reply`: "reset" or "eof".
async fn how_a_probe_ends(check: &str, reply: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _txlb = Txlb::start_xml(&config(check, &[("h1", addr)]), None);
    let (mut probe, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("a probe within 10 s")
        .unwrap();
    // Read the request (if any) before answering, so the reply is its answer.
    let mut buf = [0u8; 1024];
    if !reply.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(2), probe.read(&mut buf)).await;
        probe.write_all(reply).await.unwrap();
    }
    let mut end = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while end.is_empty() && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), probe.read(&mut buf)).await {
            Ok(Ok(0)) => end = "eof".into(),
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => end = "reset".into(),
            Ok(Err(e)) => end = format!("error {e}"),
            Err(_) => end = "open".into(),
        }
    }
    end
}

#[tokio::test]
async fn http_probes_end_with_a_reset_and_conversations_with_a_fin() {
    // A reset spares the host a TIME_WAIT socket per probe, as HAProxy's
    // checks do; hosts that log a reset (databases) get a FIN.
    let http = r#"<check type="http" path="/" interval="0.2" timeout="1"/>"#;
    let send = r#"<check type="send" send="PING\r\n" expect="PONG" interval="0.2" timeout="1"/>"#;
    assert_eq!(
        how_a_probe_ends(http, b"HTTP/1.0 200 OK\r\n\r\n").await,
        "reset"
    );
    assert_eq!(how_a_probe_ends(send, b"+PONG\r\n").await, "eof");
}

#[tokio::test]
async fn a_tcp_probe_is_answered_by_the_hosts_kernel_and_never_reaches_its_accept_queue() {
    // The probe resets the connection where it would have sent the last ACK
    // of the handshake: the SYN-ACK proved the port listens, and the host's
    // program never sees (accepts, logs, closes) a probe.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let check = r#"<check type="tcp" interval="0.2" timeout="1" rise="1" fall="1"/>"#;
    let txlb = Txlb::start_xml(&config(check, &[("h1", addr)]), None);
    txlb.listener();
    let accepted = tokio::time::timeout(Duration::from_millis(1500), listener.accept()).await;
    assert!(accepted.is_err(), "a probe reached the accept queue");
    assert_eq!(txlb.count("host marked bad"), 0, "{}", txlb.log_text());
    // The probes did run: the port closed, the next one fails.
    drop(listener);
    transition(&txlb, "host marked bad", "h1", 0).await;
}

/// An HTTP/1.1 host that keeps connections open: it counts the connections
/// it accepts and the requests it answers (with `code` and a 5-byte body),
/// closes a connection when a request comes after `close_after` answers on
/// it (0: never; its keep-alive timeout ending it as the request came), says `Connection: close` while `say_close`, and
/// keeps the request lines it read.
#[derive(Clone, Default)]
struct KeepAliveHost {
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    code: Arc<AtomicU16>,
    close_after: Arc<AtomicUsize>,
    say_close: Arc<AtomicBool>,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl KeepAliveHost {
    async fn start(&self) -> SocketAddr {
        self.code.store(200, SeqCst);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let host = self.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                host.accepted.fetch_add(1, SeqCst);
                tokio::spawn(host.clone().serve(s));
            }
        });
        addr
    }

    async fn serve(self, mut s: TcpStream) {
        let (mut buf, mut len, mut answered) = (vec![0u8; 4096], 0, 0);
        loop {
            let Some(end) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") else {
                match s.read(&mut buf[len..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => len += n,
                }
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            self.lines
                .lock()
                .unwrap()
                .push(head.lines().next().unwrap_or("").to_string());
            buf.copy_within(end + 4..len, 0);
            len -= end + 4;
            let limit = self.close_after.load(SeqCst);
            if limit > 0 && answered >= limit {
                return;
            }
            let close = self.say_close.load(SeqCst);
            let answer = format!(
                "HTTP/1.1 {} X\r\nContent-Length: 5\r\n{}\r\nhello",
                self.code.load(SeqCst),
                if close { "Connection: close\r\n" } else { "" }
            );
            self.requests.fetch_add(1, SeqCst);
            answered += 1;
            if s.write_all(answer.as_bytes()).await.is_err() || close {
                return;
            }
        }
    }

    /// Waits for `more` requests beyond those answered so far.
    async fn answers(&self, more: usize) {
        let want = self.requests.load(SeqCst) + more;
        assert!(
            common::eventually(Duration::from_secs(5), || async {
                self.requests.load(SeqCst) >= want
            })
            .await,
            "{more} more probes"
        );
    }
}

#[tokio::test]
async fn an_http_check_keeps_its_connection_while_the_host_allows_it() {
    let host = KeepAliveHost::default();
    let addr = host.start().await;
    // fall="1": a single failed probe would mark the host bad.
    let check =
        r#"<check type="http" path="/healthz" interval="0.1" timeout="0.5" rise="1" fall="1"/>"#;
    let txlb = Txlb::start_xml(&config(check, &[("ka", addr)]), None);
    txlb.listener();
    // Probes in a row on one connection, each answer (and its body) read
    // through, an HTTP/1.1 request without `Connection: close`.
    host.answers(6).await;
    assert_eq!(
        host.accepted.load(SeqCst),
        1,
        "one connection for every probe"
    );
    let first = host.lines.lock().unwrap()[0].clone();
    assert_eq!(first, "GET /healthz HTTP/1.1");
    // A 503 on the kept connection fails the check (and keeps it).
    host.code.store(503, SeqCst);
    let line = transition(&txlb, "host marked bad", "ka", 0).await;
    assert!(line.contains("check: HTTP 503"), "{line}");
    host.code.store(200, SeqCst);
    transition(&txlb, "host back in rotation", "ka", 0).await;
    assert_eq!(host.accepted.load(SeqCst), 1);
    // The host closes its connections at the request after two answers (its
    // keep-alive timeout, as the request came): the probe asks again on a
    // new connection, which is not a failure.
    host.close_after.store(2, SeqCst);
    let (accepted, bad) = (host.accepted.load(SeqCst), txlb.count("host marked bad"));
    host.answers(8).await;
    assert!(
        host.accepted.load(SeqCst) >= accepted + 3,
        "new connections"
    );
    assert_eq!(txlb.count("host marked bad"), bad, "{}", txlb.log_text());
    // `Connection: close`: a new connection for every probe.
    host.close_after.store(0, SeqCst);
    host.say_close.store(true, SeqCst);
    host.answers(2).await;
    let (accepted, requests) = (host.accepted.load(SeqCst), host.requests.load(SeqCst));
    host.answers(4).await;
    let (more_accepted, more_requests) = (
        host.accepted.load(SeqCst) - accepted,
        host.requests.load(SeqCst) - requests,
    );
    assert!(
        more_accepted + 1 >= more_requests,
        "{more_accepted} for {more_requests}"
    );
    assert_eq!(txlb.count("host marked bad"), bad, "{}", txlb.log_text());
}

#[tokio::test]
async fn an_http_check_with_reuse_false_connects_for_every_probe() {
    let host = KeepAliveHost::default();
    let addr = host.start().await;
    let check =
        r#"<check type="http" reuse="false" interval="0.1" timeout="0.5" rise="1" fall="1"/>"#;
    let txlb = Txlb::start_xml(&config(check, &[("nr", addr)]), None);
    txlb.listener();
    host.answers(5).await;
    // The kernel may accept the next probe's connection before its request.
    let (accepted, requests) = (host.accepted.load(SeqCst), host.requests.load(SeqCst));
    assert!(
        accepted >= requests,
        "{accepted} connections, {requests} requests"
    );
    assert_eq!(host.lines.lock().unwrap()[0], "GET / HTTP/1.0");
    assert_eq!(txlb.count("host marked bad"), 0, "{}", txlb.log_text());
}
