//! `txlb upgrade` and SIGUSR2 with real processes: the running txlb starts a
//! new one and hands it its sockets and state. No client is refused through an
//! upgrade, host states, unsaved changes and counters carry over, the old
//! process drains and exits, and a new binary that fails or never serves
//! leaves the old one serving.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::admin::{FULL, client, get_as, user_lines};
use crate::common::binary::Txlb;
use crate::common::{closed_port, echo_backend, eventually};

/// Processes started by upgrades (not the harness's children): stopped at the
/// end of the test whatever happens.
struct Adopted(Vec<u32>);

impl Drop for Adopted {
    fn drop(&mut self) {
        for pid in &self.0 {
            // SAFETY: kill with a pid this test learnt from txlb itself.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
    }
}

/// `txlb` once it says it runs: its upgrade socket is bound by then (the
/// "listener up" line comes before it; an upgrade asked in between finds no
/// process).
async fn running(txlb: Txlb) -> Txlb {
    txlb.wait_for_async("txlb running", 0).await;
    txlb
}

/// Whether `count` connections are parked and quiet for a second (the JSON
/// API's list: what an upgrade moves) within `wait`.
async fn parked_within(base: &str, count: usize, wait: Duration) -> bool {
    eventually(wait, || async move {
        let list = api(base, "api/v1/connections").await;
        list.as_array()
            .unwrap()
            .iter()
            .filter(|c| c["parked"] == true && c["idle_seconds"].as_f64() >= Some(1.0))
            .count()
            == count
    })
    .await
}

/// Whether process `pid` is gone (or a zombie waiting for its parent).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// A configuration with service `svc` on 127.0.0.1:0 (group `g`, least
/// connections, `hosts`), the admin web server on 127.0.0.1:0 with the test
/// users, and a control socket in `dir`.
fn write_config(dir: &Path, hosts: &[(&str, SocketAddr)]) -> PathBuf {
    let hosts: String = hosts
        .iter()
        .map(|(name, addr)| format!("      <host name=\"{name}\" ip=\"{addr}\"/>\n"))
        .collect();
    let xml = format!(
        "<config>\n  <service name=\"svc\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
         <group name=\"g\" scheduler=\"roundr\" enable=\"true\">\n{hosts}    </group>\n  \
         </service>\n  <admin>\n    <web listen=\"127.0.0.1:0\" enable=\"true\"/>\n{}  </admin>\n  \
         <control socket=\"{}\"/>\n</config>\n",
        user_lines(),
        dir.join("control.sock").display()
    );
    let path = dir.join("lb.xml");
    std::fs::write(&path, xml).unwrap();
    path
}

/// `txlb upgrade --config CONFIG ARGS…`.
fn upgrade(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_txlb"))
        .arg("upgrade")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

/// The new process's id from `txlb upgrade`'s success line.
fn new_pid(output: &Output) -> u32 {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "txlb upgrade failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .split("PID ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no PID in {stdout:?}"))
}

/// One byte through the balancer to an echo backend and back.
fn echo_once(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"x")?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    assert_eq!(&byte, b"x");
    Ok(())
}

async fn api(base: &str, path: &str) -> Value {
    let response = client()
        .get(format!("{base}{path}"))
        .basic_auth(FULL.0, Some(FULL.1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

/// [`api`], or `None` while no process answers (the admin port changes hands
/// during an upgrade).
async fn try_api(base: &str, path: &str) -> Option<Value> {
    let response = client()
        .get(format!("{base}{path}"))
        .basic_auth(FULL.0, Some(FULL.1))
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

async fn api_post(base: &str, path: &str, body: Value) -> u16 {
    client()
        .post(format!("{base}{path}"))
        .basic_auth(FULL.0, Some(FULL.1))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn host<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["services"][0]["groups"][0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("no host {name} in {stats}"))
}

/// A client connecting every millisecond (one byte echoed each time) until
/// stopped, at most 30,000 times or 30 s: (served, failed, first failure).
struct EveryMillisecond {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<(u64, Option<String>)>,
}

impl EveryMillisecond {
    fn start(addr: SocketAddr) -> EveryMillisecond {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let (stop2, served2) = (stop.clone(), served.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let (mut failed, mut first) = (0u64, None);
            for _ in 0..30_000 {
                if stop2.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(30) {
                    break;
                }
                match echo_once(addr) {
                    Ok(()) => drop(served2.fetch_add(1, Ordering::Relaxed)),
                    Err(error) => {
                        failed += 1;
                        first.get_or_insert(error.to_string());
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            (failed, first)
        });
        EveryMillisecond {
            stop,
            served,
            thread,
        }
    }

    fn stop(self) -> (u64, u64, Option<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (failed, first) = self.thread.join().unwrap();
        (self.served.load(Ordering::Relaxed), failed, first)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_under_a_client_every_millisecond_refuses_nobody_and_keeps_the_state() {
    let (a, b, c) = (
        echo_backend().await,
        echo_backend().await,
        echo_backend().await,
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", a), ("b", b)]);
    let mut txlb = running(Txlb::start_workers(&config, 5, 2)).await;
    let listener = txlb.listener();
    let base = txlb.logged("admin web server up", "url").await;
    let old_pid = txlb.pid();
    let mut adopted = Adopted(Vec::new());

    // Traffic on both hosts, then b admin-down and host c added (not saved).
    tokio::task::spawn_blocking(move || (0..20).for_each(|_| echo_once(listener).unwrap()))
        .await
        .unwrap();
    let hosts = "api/v1/services/svc/groups/g/hosts";
    assert_eq!(
        api_post(&base, &format!("{hosts}/b/admin-down"), Value::Null).await,
        200
    );
    let added = serde_json::json!({"name": "c", "ip": c.to_string(), "weight": 1});
    assert_eq!(api_post(&base, hosts, added).await, 201);
    let before = api(&base, "api/v1/stats").await;
    assert_eq!(host(&before, "b")["health"], "admin-down");
    let b_total = host(&before, "b")["total"].as_u64().unwrap();
    let a_total = host(&before, "a")["total"].as_u64().unwrap();
    assert!(a_total >= 10 && b_total >= 10, "{before}");

    let clients = EveryMillisecond::start(listener);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let config2 = config.clone();
    let output = tokio::task::spawn_blocking(move || upgrade(&config2, &[]))
        .await
        .unwrap();
    let pid = new_pid(&output);
    adopted.0.push(pid);
    assert_ne!(pid, old_pid);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (served, failed, first) = tokio::task::spawn_blocking(move || clients.stop())
        .await
        .unwrap();
    assert_eq!(failed, 0, "{failed} clients failed, the first: {first:?}");
    assert!(served > 100, "only {served} clients served");

    // The old process drained and exited on its own.
    let status = tokio::task::spawn_blocking(move || txlb.exit_status(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the old process did not exit after the upgrade");
    assert!(status.success(), "{status}");

    // The new one serves the same address, with the state as it was.
    tokio::task::spawn_blocking(move || echo_once(listener).unwrap())
        .await
        .unwrap();
    let status = api(&base, "api/v1/status").await;
    assert_eq!(status["pid"], pid, "{status}");
    assert_eq!(status["started"]["how"], "upgraded", "{status}");
    assert_eq!(status["started"]["from_pid"], old_pid, "{status}");
    let after = api(&base, "api/v1/stats").await;
    assert_eq!(host(&after, "b")["health"], "admin-down", "{after}");
    assert_eq!(host(&after, "b")["total"], b_total, "{after}");
    assert!(host(&after, "a")["total"].as_u64().unwrap() >= a_total);
    assert_eq!(
        host(&after, "c")["address"],
        c.to_string(),
        "unsaved host lost: {after}"
    );
    let accepted = |s: &Value| s["services"][0]["counters"]["accepted"].as_u64().unwrap();
    // Every client counted once, by one process or the other: the old one
    // sends what it counted after the hand-over once it is done.
    let totals = |s: &Value| -> u64 {
        ["a", "b", "c"]
            .iter()
            .map(|h| host(s, h)["total"].as_u64().unwrap())
            .sum()
    };
    let expected = (accepted(&before) + served, totals(&before) + served);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = api(&base, "api/v1/stats").await;
    // The one client after the upgrade counts too.
    let counted = loop {
        if (accepted(&last), totals(&last)) == (expected.0 + 1, expected.1 + 1) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        last = api(&base, "api/v1/stats").await;
    };
    assert!(counted, "expected {expected:?} (+1): {last}");
    // The page says how the process started.
    let page = get_as(&base, FULL, "running").await.1;
    assert!(
        page.contains(&format!("upgraded from PID {old_pid}")),
        "{page}"
    );

    // The control socket moved with its file (the old process left it).
    let socket = dir.path().join("control.sock");
    let mut control = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    control.write_all(b"{\"peer\": \"127.0.0.1:1\"}\n").unwrap();
    let mut answer = [0u8; 64];
    let n = control.read(&mut answer).unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).contains("no open connection"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_that_exits_or_never_serves_leaves_the_old_one_serving() {
    let a = echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", a)]);
    let mut txlb = running(Txlb::start_workers(&config, 5, 1)).await;
    let listener = txlb.listener();
    let mut adopted = Adopted(Vec::new());
    let script = dir.path().join("silent");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let config2 = config.clone();
    let (exits, silent, later) = tokio::task::spawn_blocking(move || {
        let exits = upgrade(&config2, &["--binary", "/bin/false"]);
        echo_once(listener).unwrap();
        let started = Instant::now();
        let silent = upgrade(
            &config2,
            &["--binary", script.to_str().unwrap(), "--ready-timeout", "1"],
        );
        let took = started.elapsed();
        echo_once(listener).unwrap();
        (exits, (silent, took), upgrade(&config2, &[]))
    })
    .await
    .unwrap();
    assert!(!exits.status.success());
    let stderr = String::from_utf8_lossy(&exits.stderr);
    assert!(stderr.contains("exited before it was ready"), "{stderr}");
    assert!(stderr.contains("serves on"), "{stderr}");
    let (silent, took) = silent;
    assert!(!silent.status.success());
    let stderr = String::from_utf8_lossy(&silent.stderr);
    assert!(stderr.contains("not ready within 1 s"), "{stderr}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    // Both failures left the old process whole: it still upgrades.
    assert!(txlb.count("upgrade failed; serving on") >= 2);
    let pid = new_pid(&later);
    adopted.0.push(pid);
    tokio::task::spawn_blocking(move || {
        assert!(txlb.exit_status(Duration::from_secs(10)).is_some());
        echo_once(listener).unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_upgrades_in_a_row_the_second_by_sigusr2_keep_a_bad_host_bad() {
    let a = echo_backend().await;
    let refused = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", a), ("b", refused)]);
    // The SSH console too: its socket moves with the others.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "  <admin>\n",
        "  <admin>\n    <ssh listen=\"127.0.0.1:0\" enable=\"true\"/>\n",
    );
    std::fs::write(&config, text).unwrap();
    let mut txlb = running(Txlb::start_workers(&config, 5, 2)).await;
    let listener = txlb.listener();
    let base = txlb.logged("admin web server up", "url").await;
    let ssh: SocketAddr = txlb
        .logged("SSH console up", "local")
        .await
        .parse()
        .unwrap();
    let mut adopted = Adopted(Vec::new());
    // Round robin reaches b, whose refusal marks it bad (the client fails
    // over to a).
    tokio::task::spawn_blocking(move || (0..4).for_each(|_| echo_once(listener).unwrap()))
        .await
        .unwrap();
    let before = api(&base, "api/v1/stats").await;
    let bad = host(&before, "b")["bad"].clone();
    assert_eq!(host(&before, "b")["health"], "bad", "{before}");

    let config2 = config.clone();
    let second = tokio::task::spawn_blocking(move || new_pid(&upgrade(&config2, &[])))
        .await
        .unwrap();
    adopted.0.push(second);
    // SAFETY: kill with the pid txlb upgrade printed.
    assert_eq!(unsafe { libc::kill(second as i32, libc::SIGUSR2) }, 0);
    assert!(
        eventually(Duration::from_secs(20), || {
            let base = base.clone();
            async move {
                let status = client()
                    .get(format!("{base}api/v1/status"))
                    .basic_auth(FULL.0, Some(FULL.1))
                    .send()
                    .await;
                match status {
                    Ok(response) => {
                        let status: Value = response.json().await.unwrap_or_default();
                        status["started"]["from_pid"] == second
                    }
                    Err(_) => false,
                }
            }
        })
        .await,
        "the second upgrade did not happen:\n{}",
        txlb.log_text()
    );
    let status = api(&base, "api/v1/status").await;
    let third = status["pid"].as_u64().unwrap() as u32;
    adopted.0.push(third);
    assert!(third != second && third != txlb.pid());
    assert!(eventually(Duration::from_secs(10), || async { gone(second) }).await);
    assert!(txlb.exit_status(Duration::from_secs(10)).is_some());
    tokio::task::spawn_blocking(move || echo_once(listener).unwrap())
        .await
        .unwrap();
    // The third process's console answers on the first one's port.
    let banner = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect_timeout(&ssh, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut banner = [0u8; 8];
        stream.read_exact(&mut banner).unwrap();
        banner
    })
    .await
    .unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    let after = api(&base, "api/v1/stats").await;
    assert_eq!(host(&after, "b")["health"], "bad", "{after}");
    assert_eq!(
        host(&after, "b")["bad"],
        bad,
        "reason or time changed: {after}"
    );
    // No client was served meanwhile but the last one: the counters are
    // exactly those of the first process, plus it.
    for (name, plus) in [("a", 1), ("b", 0)] {
        for counter in ["total", "picks", "failures", "bytes_in", "bytes_out"] {
            let was = host(&before, name)[counter].as_u64().unwrap();
            let plus = if counter == "failures" { 0 } else { plus };
            assert_eq!(
                host(&after, name)[counter],
                was + plus,
                "{name} {counter}: {after}"
            );
        }
    }
}

/// A stream's bytes: a pseudo-random sequence from `seed`, so any loss or
/// reordering shows.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends `data` through `stream` to an echo backend and checks every byte
/// that comes back.
async fn echo_exact(stream: &mut tokio::net::TcpStream, data: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut reader, mut writer) = stream.split();
    let write = async {
        for chunk in data.chunks(64 * 1024) {
            writer.write_all(chunk).await.unwrap();
        }
    };
    let read = async {
        let mut back = vec![0u8; data.len()];
        reader.read_exact(&mut back).await.unwrap();
        assert!(back == data, "bytes lost or reordered");
    };
    tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(write, read) })
        .await
        .expect("a stream stalled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_streams_move_to_the_new_process_as_they_go_quiet() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const IDLE: usize = 1000;
    const STREAMS: usize = 3;
    const STREAM_BYTES: usize = 4 << 20;
    let _heavy = crate::common::heavy().await;
    crate::common::binary::raise_nofile();
    let a = echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", a)]);
    let mut txlb = running(Txlb::start_workers(&config, 20, 2)).await;
    let listener = txlb.listener();
    let base = txlb.logged("admin web server up", "url").await;
    let mut adopted = Adopted(Vec::new());

    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let mut stream = tokio::net::TcpStream::connect(listener).await.unwrap();
        let token = format!("{i:06}");
        stream.write_all(token.as_bytes()).await.unwrap();
        let mut back = [0u8; 6];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, token.as_bytes());
        idle.push(stream);
    }
    // Streams: half their bytes, then quiet (they park and move), then the
    // other half once the new process serves.
    let mut streams = Vec::new();
    for s in 0..STREAMS {
        let mut stream = tokio::net::TcpStream::connect(listener).await.unwrap();
        let data = pattern(s as u64 + 7, STREAM_BYTES);
        echo_exact(&mut stream, &data[..STREAM_BYTES / 2]).await;
        streams.push((stream, data));
    }
    // One stream busy through the upgrade (a chunk every 50 ms): it stays in
    // the old process until it goes quiet, then moves within the handoff
    // deadline.
    let busy_stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let stop = busy_stop.clone();
        let mut stream = tokio::net::TcpStream::connect(listener).await.unwrap();
        tokio::spawn(async move {
            let data = pattern(99, 64 << 10);
            let mut sent = 0;
            for chunk in data.chunks(1024) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                echo_exact(&mut stream, chunk).await;
                sent += chunk.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (stream, data, sent)
        })
    };
    let all = (IDLE + STREAMS) as u64;
    assert!(
        parked_within(&base, IDLE + STREAMS, Duration::from_secs(10)).await,
        "not every connection parked"
    );
    let before = api(&base, "api/v1/connections").await;
    assert_eq!(before.as_array().unwrap().len(), IDLE + STREAMS + 1);
    let mut ids: Vec<u64> = before
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();

    let config2 = config.clone();
    let output = tokio::task::spawn_blocking(move || upgrade(&config2, &[]))
        .await
        .unwrap();
    let pid = new_pid(&output);
    adopted.0.push(pid);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("{all} connections moved")),
        "{stdout}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    busy_stop.store(true, Ordering::Relaxed);
    let (mut busy, busy_data, busy_sent) = busy.await.unwrap();
    assert!(busy_sent > 0);
    // Nothing stayed: the old process exits once the busy stream moved too,
    // not at its 20 s grace.
    let exited = tokio::task::spawn_blocking(move || {
        let status = txlb.exit_status(Duration::from_secs(8));
        (status, txlb)
    })
    .await
    .unwrap();
    let (status, txlb) = exited;
    assert!(
        status.is_some(),
        "the old process kept connections:\n{}",
        txlb.log_text()
    );
    // Both sides say what moved.
    let handed = txlb
        .wait_for_async("upgrade: handed over to the new process", 0)
        .await;
    assert!(
        handed.contains(&format!("connections_moved={all}")),
        "{handed}"
    );
    let took = txlb
        .wait_for_async("upgrade: took over; connections taken on", 0)
        .await;
    assert!(took.contains(&format!("connections={}", all + 1)), "{took}");

    // In the new process: the same connections (ids, counts), counted open on
    // their host, and they all work.
    let after = api(&base, "api/v1/connections").await;
    let mut moved: Vec<u64> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    moved.sort_unstable();
    assert_eq!(moved, ids);
    let first = &after.as_array().unwrap()[0];
    let was = before
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == first["id"])
        .unwrap();
    for key in ["since", "bytes_in", "bytes_out", "client", "host"] {
        assert_eq!(first[key], was[key], "{key}");
    }
    let stats = api(&base, "api/v1/stats").await;
    assert_eq!(host(&stats, "a")["open"], all + 1, "{stats}");
    let status = api(&base, "api/v1/status").await;
    assert_eq!(status["started"]["connections_moved"], all + 1, "{status}");
    echo_exact(&mut busy, &busy_data[busy_sent..]).await;
    for (i, stream) in idle.iter_mut().enumerate() {
        let token = format!("{:06}", IDLE - i);
        stream.write_all(token.as_bytes()).await.unwrap();
        let mut back = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back))
            .await
            .expect("a moved connection does not answer")
            .unwrap();
        assert_eq!(&back, token.as_bytes());
    }
    for (stream, data) in &mut streams {
        echo_exact(stream, &data[STREAM_BYTES / 2..]).await;
    }
    drop(idle);
    drop(streams);
    drop(busy);
    assert!(
        eventually(Duration::from_secs(10), || {
            let base = base.clone();
            async move { host(&api(&base, "api/v1/stats").await, "a")["open"] == 0 }
        })
        .await,
        "the host's open count did not come back to 0"
    );
    drop(txlb);
}

#[test]
fn upgrade_without_a_running_txlb_or_with_a_stray_variable_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", closed_port())]);
    let output = upgrade(&config, &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no txlb runs"), "{stderr}");
    let output = upgrade(&dir.path().join("missing.xml"), &[]);
    assert!(!output.status.success());
    let output = upgrade(&config, &["--ready-timeout", "-1"]);
    assert!(!output.status.success());
    // A stray variable does not make `txlb run` take its stdout for the
    // upgrade's socket.
    let output = Command::new(env!("CARGO_BIN_EXE_txlb"))
        .args(["run", "--config"])
        .arg(&config)
        .env(txlb::upgrade::UPGRADE_FD_VAR, "1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("does not name the upgrade's socket"),
        "{stderr}"
    );
}

/// A UDP echo host on 127.0.0.1: every datagram comes back as it came.
fn udp_echo() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    addr
}

/// One datagram through the UDP service at `addr` and its echo, from a new
/// client address (a new session).
fn udp_round_trip(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    client.send_to(data, addr)?;
    let mut buf = [0u8; 2048];
    let (n, _) = client.recv_from(&mut buf)?;
    Ok(buf[..n].to_vec())
}

/// The bound address of the UDP service `dns`, from its "listener up" line.
async fn udp_listener(txlb: &Txlb) -> SocketAddr {
    txlb.wait_for_async("listener up", 0).await;
    let started = Instant::now();
    loop {
        let line = txlb
            .log_text()
            .lines()
            .find(|l| l.contains("listener up") && l.contains("service=\"dns\""))
            .map(str::to_string);
        if let Some(line) = line {
            let local = line.split("local=").nth(1).unwrap();
            return local.split_whitespace().next().unwrap().parse().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            txlb.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `config` with a UDP service `dns` (`attrs` on it) on 127.0.0.1:0 before
/// the admin section, its group `r` of `hosts` by round robin.
fn add_udp_service(config: &Path, attrs: &str, hosts: &[(&str, SocketAddr)]) {
    let hosts: String = hosts
        .iter()
        .map(|(name, addr)| format!("      <host name=\"{name}\" ip=\"{addr}\"/>\n"))
        .collect();
    let text = std::fs::read_to_string(config).unwrap().replace(
        "  <admin>\n",
        &format!(
            "  <service name=\"dns\" protocol=\"udp\" {attrs}>\n    <listen ip=\"127.0.0.1:0\"/>\n    \
             <group name=\"r\" scheduler=\"roundr\" enable=\"true\">\n{hosts}    </group>\n  \
             </service>\n  <admin>\n"
        ),
    );
    std::fs::write(config, text).unwrap();
}

/// A UDP host that keeps state per client address: it answers each datagram
/// with its name, the datagram and how many that address sent it so far.
fn counting_udp_host(name: &'static str) -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut seen = std::collections::HashMap::<SocketAddr, u64>::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let count = seen.entry(from).or_default();
            *count += 1;
            let reply = format!("{name} {} {count}", String::from_utf8_lossy(&buf[..n]));
            let _ = socket.send_to(reply.as_bytes(), from);
        }
    });
    addr
}

/// One datagram from `client` to `addr` and its reply, as text.
fn ask(client: &std::net::UdpSocket, addr: SocketAddr, what: &str) -> String {
    client.send_to(what.as_bytes(), addr).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = client.recv_from(&mut buf).expect("no reply");
    assert_eq!(from, addr, "the reply came from another address");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// UDP sessions move in an upgrade: a client mid-session reaches the same
/// host from the new process through the same host-side socket (the host's
/// count for it goes on) and replies come back. The connections list shows
/// the moved sessions under their ids with their counts (what `responses`
/// counts), and closes one by its id there; that client's next datagram
/// opens a session numbered after the moved ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_sessions_move_with_their_sockets_and_go_on_in_the_new_process() {
    let a = echo_backend().await;
    let (h1, h2) = (counting_udp_host("h1"), counting_udp_host("h2"));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", a)]);
    add_udp_service(&config, "sessionTimeout=\"60\"", &[("h1", h1), ("h2", h2)]);
    let mut txlb = running(Txlb::start_workers(&config, 5, 2)).await;
    let udp = udp_listener(&txlb).await;
    let base = txlb.logged("admin web server up", "url").await;
    let mut adopted = Adopted(Vec::new());
    let client = |_| {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket
    };
    let (first, second) = (client(0), client(1));
    let (one, two) = tokio::task::spawn_blocking(move || {
        let one = ask(&first, udp, "a");
        assert!(one.ends_with(" a 1"), "{one}");
        let again = ask(&first, udp, "b");
        assert_eq!(again, one.replace(" a 1", " b 2"));
        let two = ask(&second, udp, "x");
        assert!(two.ends_with(" x 1"), "{two}");
        ((first, one), (second, two))
    })
    .await
    .unwrap();
    let dns = |stats: &Value| {
        stats["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "dns")
            .cloned()
            .unwrap_or_else(|| panic!("no service dns: {stats}"))
    };
    let before = dns(&api(&base, "api/v1/stats").await);
    assert_eq!(before["counters"]["sessions_open"], 2, "{before}");
    // The list's view of a session: id, client, host, datagrams each way.
    let sessions = |list: Value| {
        let mut seen: Vec<(u64, String, String, u64, u64)> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["transport"] == "udp")
            .map(|c| {
                let text = |k: &str| c[k].as_str().unwrap().to_string();
                let count = |k: &str| c[k].as_u64().unwrap();
                let (id, ins, outs) = (count("id"), count("datagrams_in"), count("datagrams_out"));
                (id, text("client"), text("host"), ins, outs)
            })
            .collect();
        seen.sort();
        seen
    };
    let listed_before = sessions(api(&base, "api/v1/connections?service=dns").await);
    assert_eq!(listed_before.len(), 2, "{listed_before:?}");

    let config2 = config.clone();
    let pid = tokio::task::spawn_blocking(move || new_pid(&upgrade(&config2, &[])))
        .await
        .unwrap();
    adopted.0.push(pid);
    let status = tokio::task::spawn_blocking(move || {
        let status = txlb.exit_status(Duration::from_secs(10));
        (status, txlb)
    })
    .await
    .unwrap();
    assert!(status.0.is_some(), "the old process did not exit");
    let txlb = status.1;
    let moved = txlb
        .wait_for_async("upgrade: UDP sessions moved to the new process", 0)
        .await;
    assert!(moved.contains("sessions=2"), "{moved}\n{}", txlb.log_text());

    // In the new process: the same host, whose count for the client goes on.
    let ((first, one), (second, two)) = (one, two);
    let host_of = |reply: &str| reply.split(' ').next().unwrap().to_string();
    let (h_one, h_two) = (host_of(&one), host_of(&two));
    let after = dns(&api(&base, "api/v1/stats").await);
    assert_eq!(after["counters"]["sessions_open"], 2, "{after}");
    assert_eq!(
        after["counters"]["sessions_total"], before["counters"]["sessions_total"],
        "a moved session counted again: {after}"
    );
    let open: u64 = after["groups"][0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["open"].as_u64().unwrap())
        .sum();
    assert_eq!(open, 2, "{after}");
    let listed_after = sessions(api(&base, "api/v1/connections?service=dns").await);
    assert_eq!(listed_after, listed_before, "the same ids and counts");
    let second_addr = second.local_addr().unwrap().to_string();
    let (second_id, ..) = listed_after
        .iter()
        .find(|s| s.1 == second_addr)
        .cloned()
        .unwrap();
    let second = tokio::task::spawn_blocking(move || {
        assert_eq!(ask(&first, udp, "c"), format!("{h_one} c 3"));
        assert_eq!(ask(&second, udp, "y"), format!("{h_two} y 2"));
        assert_eq!(ask(&first, udp, "d"), format!("{h_one} d 4"));
        second
    })
    .await
    .unwrap();
    // The second's session, moved, is closed by its id in the new process;
    // its next datagram opens a session on a new socket, numbered after the
    // moved ones.
    let closed = crate::common::admin::client()
        .delete(format!("{base}api/v1/connections/{second_id}"))
        .basic_auth(FULL.0, Some(FULL.1))
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 204);
    let fresh = tokio::task::spawn_blocking(move || ask(&second, udp, "z"))
        .await
        .unwrap();
    assert!(fresh.ends_with(" z 1"), "{fresh}");
    let listed = sessions(api(&base, "api/v1/connections?service=dns").await);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let moved_last = listed_before.iter().map(|s| s.0).max().unwrap();
    let renewed = listed.iter().find(|s| s.1 == second_addr).unwrap();
    assert!(renewed.0 > moved_last, "{listed:?}");
    drop(txlb);
}

/// A moved UDP session keeps its idle time and its age: idle 6 s of a 10 s
/// `sessionTimeout` when it moves, it ends 4 s later, not 10 s after the
/// upgrade, and the connections list shows it opened when it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_udp_session_keeps_its_idle_time_and_age() {
    let a = echo_backend().await;
    let h1 = counting_udp_host("h1");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", a)]);
    add_udp_service(&config, "sessionTimeout=\"10\"", &[("h1", h1)]);
    let txlb = running(Txlb::start_workers(&config, 5, 2)).await;
    let udp = udp_listener(&txlb).await;
    let base = txlb.logged("admin web server up", "url").await;
    let mut adopted = Adopted(Vec::new());
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let last = Instant::now();
    let socket = tokio::task::spawn_blocking(move || {
        assert_eq!(ask(&socket, udp, "a"), "h1 a 1");
        socket
    })
    .await
    .unwrap();
    let since = |list: Value| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|c| c["transport"] == "udp")
            .map(|c| c["since"].as_f64().unwrap())
    };
    let opened = since(api(&base, "api/v1/connections?service=dns").await).expect("listed");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let config2 = config.clone();
    let pid = tokio::task::spawn_blocking(move || new_pid(&upgrade(&config2, &[])))
        .await
        .unwrap();
    adopted.0.push(pid);
    let moved = txlb
        .wait_for_async("upgrade: UDP sessions moved to the new process", 0)
        .await;
    assert!(moved.contains("sessions=1"), "{moved}");
    // Listed by the new process (the old one may still answer a moment).
    let mut listed = None;
    for _ in 0..40 {
        listed = try_api(&base, "api/v1/connections?service=dns")
            .await
            .and_then(since);
        if listed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let moved_since = listed.expect("the moved session is listed");
    assert!(
        (moved_since - opened).abs() < 0.5,
        "{opened} then {moved_since}"
    );
    let (status, txlb) = tokio::task::spawn_blocking(move || {
        let mut txlb = txlb;
        (txlb.exit_status(Duration::from_secs(10)), txlb)
    })
    .await
    .unwrap();
    assert!(status.is_some(), "the old process did not exit");
    // It ends at its timeout from its last datagram (the sweep runs a tenth
    // of it apart), not from the upgrade.
    let open = |stats: Value| {
        stats["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "dns")
            .map(|s| s["counters"]["sessions_open"].as_u64().unwrap())
    };
    let ended = eventually(Duration::from_secs(8), || {
        let base = base.clone();
        async move { open(api(&base, "api/v1/stats").await) == Some(0) }
    })
    .await;
    assert!(ended, "still open");
    let lasted = last.elapsed();
    assert!(
        lasted < Duration::from_secs(13),
        "ended {lasted:?} after its last datagram"
    );
    drop(socket);
    drop(txlb);
}

/// A UDP service's socket is handed over like a TCP listener's: the upgrade
/// succeeds (the new process does not find its port taken), the new process
/// answers on the very address, and the old one exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_service_keeps_its_address_through_an_upgrade() {
    let a = echo_backend().await;
    let dns = udp_echo();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", a)]);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "  <admin>\n",
        &format!(
            "  <service name=\"dns\" protocol=\"udp\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
             <group name=\"r\" enable=\"true\">\n      <host name=\"r1\" ip=\"{dns}\"/>\n    \
             </group>\n  </service>\n  <admin>\n"
        ),
    );
    std::fs::write(&config, text).unwrap();
    let mut txlb = running(Txlb::start_workers(&config, 5, 1)).await;
    let udp = udp_listener(&txlb).await;
    let mut adopted = Adopted(Vec::new());
    let config2 = config.clone();
    let pid = tokio::task::spawn_blocking(move || {
        assert_eq!(udp_round_trip(udp, b"before").unwrap(), b"before");
        new_pid(&upgrade(&config2, &[]))
    })
    .await
    .unwrap();
    adopted.0.push(pid);
    tokio::task::spawn_blocking(move || {
        assert!(
            txlb.exit_status(Duration::from_secs(20)).is_some(),
            "the old process exits"
        );
        assert_eq!(udp_round_trip(udp, b"after").unwrap(), b"after");
    })
    .await
    .unwrap();
}

/// Bytes of each of the five streams, each way.
const BIG_STREAM: u64 = 256 << 20;

/// A TCP echo host for bulk streams: a thread per connection and a 256 KiB
/// buffer, so the test's own side is not what limits the rate.
fn bulk_echo() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut back = stream.try_clone().unwrap();
                let mut buf = vec![0u8; 256 << 10];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || back.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = back.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

/// A stream's bytes at any offset without holding them all: a pseudo-random
/// block of odd length (not a divisor of any chunk), repeated. A byte lost,
/// doubled or moved shifts everything after it out of step.
struct Cyclic {
    /// The block, followed by its first [`CHUNK`] bytes again, so any
    /// offset's next chunk is one slice.
    doubled: Vec<u8>,
}

const CHUNK: usize = 256 << 10;
const BLOCK: usize = (1 << 20) - 3;

impl Cyclic {
    fn new(seed: u64) -> Cyclic {
        let mut doubled = pattern(seed, BLOCK);
        doubled.extend_from_within(..CHUNK);
        Cyclic { doubled }
    }

    /// The bytes at stream offset `at`, at most `len` (≤ [`CHUNK`]).
    fn at(&self, at: u64, len: usize) -> &[u8] {
        let start = (at % BLOCK as u64) as usize;
        &self.doubled[start..start + len]
    }
}

/// One bulk stream through the balancer: a writer and a reader thread with
/// blocking sockets. The writer sends bytes `from..to` of the pattern, pacing
/// itself when `pace` says over how long; the reader checks every byte that
/// comes back up to `to`. Returns once both are done (panics on a mismatch,
/// an error or 60 s without progress).
fn run_stream(
    stream: &TcpStream,
    pattern: &Arc<Cyclic>,
    (from, to): (u64, u64),
    pace: Option<Duration>,
) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = stream.try_clone().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let sending = pattern.clone();
    let write = std::thread::spawn(move || {
        let started = Instant::now();
        let chunks = (to - from).div_ceil(CHUNK as u64);
        let mut at = from;
        let mut sent = 0u64;
        while at < to {
            if let Some(over) = pace {
                // Chunk k not before k/chunks of the way: never quiet for long.
                let due = over.mul_f64(sent as f64 / chunks as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            let len = CHUNK.min((to - at) as usize);
            writer.write_all(sending.at(at, len)).unwrap();
            at += len as u64;
            sent += 1;
        }
    });
    let mut buf = vec![0u8; CHUNK];
    let mut at = from;
    while at < to {
        let want = CHUNK.min((to - at) as usize);
        let n = reader.read(&mut buf[..want]).unwrap();
        assert!(n > 0, "the stream ended at byte {at} of {to}");
        assert!(
            buf[..n] == *pattern.at(at, n),
            "bytes lost or reordered at byte {at}"
        );
        at += n as u64;
    }
    write.join().unwrap();
}

/// The sizes: five streams of 256 MiB, both directions at once (an
/// echo host), byte-exact through an upgrade. Four send half, go quiet and
/// move, then send the rest through the new process; the fifth stays busy
/// past the handoff deadline, drains in the old process, which exits once it
/// ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_streams_of_256_mib_move_or_drain_byte_exact_through_an_upgrade() {
    const QUIET: usize = 4;
    let _heavy = crate::common::heavy().await;
    let started = Instant::now();
    let echo = bulk_echo();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", echo)]);
    let mut txlb = running(Txlb::start_workers(&config, 60, 2)).await;
    let listener = txlb.listener();
    let base = txlb.logged("admin web server up", "url").await;
    let mut adopted = Adopted(Vec::new());
    let before = api(&base, "api/v1/stats").await;

    // The quiet ones: their first halves at once, then nothing in flight.
    let half = BIG_STREAM / 2;
    let mut quiet = Vec::new();
    for s in 0..QUIET {
        let stream = TcpStream::connect(listener).unwrap();
        stream.set_nodelay(true).unwrap();
        quiet.push((stream, Arc::new(Cyclic::new(s as u64 + 11))));
    }
    let firsts: Vec<_> = quiet
        .iter()
        .map(|(stream, pattern)| {
            let (stream, pattern) = (stream.try_clone().unwrap(), pattern.clone());
            tokio::task::spawn_blocking(move || run_stream(&stream, &pattern, (0, half), None))
        })
        .collect();
    for first in firsts {
        first.await.unwrap();
    }
    let halves = started.elapsed();
    assert!(
        parked_within(&base, QUIET, Duration::from_secs(10)).await,
        "the quiet streams did not park"
    );

    // The busy one: 256 MiB paced over 8 s, through the upgrade and past its
    // 2 s handoff deadline.
    let busy = TcpStream::connect(listener).unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let busy_pattern = Arc::new(Cyclic::new(5));
    let busy_run = tokio::task::spawn_blocking(move || {
        run_stream(
            &busy,
            &busy_pattern,
            (0, BIG_STREAM),
            Some(Duration::from_secs(8)),
        )
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let config2 = config.clone();
    let output =
        tokio::task::spawn_blocking(move || upgrade(&config2, &["--handoff-deadline", "2"]))
            .await
            .unwrap();
    let pid = new_pid(&output);
    adopted.0.push(pid);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("{QUIET} connections moved")),
        "{stdout}"
    );
    // The quiet ones send the rest through the new process while the busy
    // one still streams through the old one.
    let seconds: Vec<_> = quiet
        .iter()
        .map(|(stream, pattern)| {
            let (stream, pattern) = (stream.try_clone().unwrap(), pattern.clone());
            tokio::task::spawn_blocking(move || {
                run_stream(&stream, &pattern, (half, BIG_STREAM), None)
            })
        })
        .collect();
    // At the deadline the busy one stayed: one connection left to drain.
    let moved = txlb
        .wait_for_async("upgrade: connections moved to the new process", 0)
        .await;
    assert!(
        moved.contains(&format!("moved={QUIET}")) && moved.contains("left=1"),
        "{moved}"
    );
    assert!(txlb.alive(), "the old process left its busy stream");
    // The new process has the quiet ones and lists the busy one as draining
    // in the old process.
    let list = api(&base, "api/v1/connections").await;
    let (draining, here): (Vec<&Value>, Vec<&Value>) = list
        .as_array()
        .unwrap()
        .iter()
        .partition(|c| c.get("draining_in").is_some());
    assert_eq!(here.len(), QUIET, "{list}");
    assert_eq!(draining.len(), 1, "{list}");
    assert_eq!(draining[0]["client"], busy_addr, "{list}");
    assert_eq!(draining[0]["draining_in"], txlb.pid(), "{list}");
    for second in seconds {
        second.await.unwrap();
    }
    busy_run.await.unwrap();
    drop(quiet);
    let exited = tokio::task::spawn_blocking(move || {
        let status = txlb.exit_status(Duration::from_secs(10));
        (status, txlb)
    })
    .await
    .unwrap();
    assert!(
        exited.0.is_some(),
        "the old process did not exit once its stream ended:\n{}",
        exited.1.log_text()
    );
    let moved_bytes = 2 * half * QUIET as u64;
    eprintln!(
        "five 256 MiB streams: first halves in {halves:?}, all in {:?} ({} MiB each way)",
        started.elapsed(),
        (moved_bytes + BIG_STREAM) >> 20,
    );
    // Every byte counted once on the host, by one process or the other: the
    // busy stream's, counted in the old process after the hand-over, reach
    // the new one's totals.
    let bytes = |s: &Value, key: &str| host(s, "a")[key].as_u64().unwrap();
    let all = (QUIET as u64 + 1) * BIG_STREAM;
    let expected = (
        bytes(&before, "bytes_in") + all,
        bytes(&before, "bytes_out") + all,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let counted = loop {
        let last = api(&base, "api/v1/stats").await;
        let now = (bytes(&last, "bytes_in"), bytes(&last, "bytes_out"));
        if now == expected || Instant::now() > deadline {
            break (now, last);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(counted.0, expected, "bytes on the host: {}", counted.1);
}

/// Whether a client at `addr` is served (its byte echoed) or turned away
/// (closed without an answer).
fn served(addr: SocketAddr) -> bool {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    if stream.write_all(b"x").is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(1))
}

/// Moved connections hold their place under the new process's limits: with
/// `maxconn="2"` (no queue) and two connections moved, a third client is
/// turned away until one of them ends.
/// `n` connections to `listener`, each having had a byte echoed.
async fn echoed_connections(listener: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut held = Vec::new();
    for _ in 0..n {
        let mut stream = tokio::net::TcpStream::connect(listener).await.unwrap();
        stream.write_all(b"h").await.unwrap();
        let mut back = [0u8; 1];
        stream.read_exact(&mut back).await.unwrap();
        held.push(stream);
    }
    held
}

/// Once `parked` connections are parked, upgrades `txlb` (its new process
/// noted in `adopted`), which says they all moved, and waits for the old
/// process to exit.
async fn upgrade_parked(
    txlb: Txlb,
    base: &str,
    config: &Path,
    parked: usize,
    adopted: &mut Adopted,
) {
    assert!(
        parked_within(base, parked, Duration::from_secs(12)).await,
        "the {parked} connections did not park"
    );
    let config = config.to_path_buf();
    let output = tokio::task::spawn_blocking(move || upgrade(&config, &[]))
        .await
        .unwrap();
    adopted.0.push(new_pid(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("{parked} connections moved")),
        "{stdout}"
    );
    let mut txlb = txlb;
    tokio::task::spawn_blocking(move || {
        assert!(txlb.exit_status(Duration::from_secs(10)).is_some());
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_connections_count_under_the_new_process_maxconn() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", a)]);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "<service name=\"svc\">",
        "<service name=\"svc\" maxconn=\"2\" queue=\"0\">",
    );
    std::fs::write(&config, text).unwrap();
    let txlb = running(Txlb::start_workers(&config, 5, 2)).await;
    let listener = txlb.listener();
    let base = txlb.logged("admin web server up", "url").await;
    let mut adopted = Adopted(Vec::new());
    let mut held = echoed_connections(listener, 2).await;
    assert!(
        !tokio::task::spawn_blocking(move || served(listener))
            .await
            .unwrap()
    );
    upgrade_parked(txlb, &base, &config, 2, &mut adopted).await;

    // The new process is full with the two it took on.
    assert!(
        !tokio::task::spawn_blocking(move || served(listener))
            .await
            .unwrap()
    );
    let stats = api(&base, "api/v1/stats").await;
    assert_eq!(stats["services"][0]["counters"]["over_limit"], 2, "{stats}");
    // They still work; once one ends its place is free.
    for stream in &mut held {
        stream.write_all(b"m").await.unwrap();
        let mut back = [0u8; 1];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"m");
    }
    drop(held.pop());
    assert!(
        eventually(Duration::from_secs(10), || async {
            tokio::task::spawn_blocking(move || served(listener))
                .await
                .unwrap()
        })
        .await,
        "no place freed when a moved connection ended"
    );
}

/// A TCP echo host that tells, in order of accept, each connection's peer:
/// txlb's address on the host side.
async fn echo_telling_peers() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<SocketAddr>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            let _ = tx.send(peer);
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, rx)
}

/// The control socket's answer about `peer`.
fn control_lookup(socket: &Path, peer: SocketAddr) -> Value {
    let mut control = std::os::unix::net::UnixStream::connect(socket).unwrap();
    control
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    control
        .write_all(format!("{{\"peer\": \"{peer}\"}}\n").as_bytes())
        .unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while control.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        answer.push(byte[0]);
    }
    serde_json::from_slice(&answer).unwrap()
}

/// After an upgrade the new process's control socket answers for a
/// connection still draining in the old process, saying so with its PID, as
/// for one that moved; its connections list shows it (`draining_in`) and
/// closing it there closes it in the old process, which then exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_draining_in_the_old_process_are_looked_up_listed_and_closed_from_the_new() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (echo, mut peers) = echo_telling_peers().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", echo)]);
    let socket = dir.path().join("control.sock");
    let txlb = running(Txlb::start_workers(&config, 20, 2)).await;
    let old_pid = txlb.pid();
    let listener = txlb.listener();
    let base = txlb.logged("admin web server up", "url").await;
    let mut adopted = Adopted(Vec::new());

    let mut quiet = tokio::net::TcpStream::connect(listener).await.unwrap();
    quiet.write_all(b"q").await.unwrap();
    let mut byte = [0u8; 1];
    quiet.read_exact(&mut byte).await.unwrap();
    let quiet_peer = peers.recv().await.unwrap();
    let busy_stop = Arc::new(AtomicBool::new(false));
    let mut busy = tokio::net::TcpStream::connect(listener).await.unwrap();
    let busy_client = busy.local_addr().unwrap();
    echo_exact(&mut busy, b"b").await;
    let busy_peer = peers.recv().await.unwrap();
    // A chunk every 50 ms for at most 20 s, until the balancer closes it:
    // whether it did.
    let busy = {
        let stop = busy_stop.clone();
        tokio::spawn(async move {
            let mut back = [0u8; 512];
            for _ in 0..400 {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                let echoed = async {
                    busy.write_all(&[7u8; 512]).await?;
                    busy.read_exact(&mut back).await
                };
                match tokio::time::timeout(Duration::from_secs(5), echoed).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => return true,
                    Err(_) => panic!("the busy connection stalled"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        })
    };
    assert!(
        parked_within(&base, 1, Duration::from_secs(10)).await,
        "the quiet connection did not park"
    );
    let config2 = config.clone();
    let output =
        tokio::task::spawn_blocking(move || upgrade(&config2, &["--handoff-deadline", "1"]))
            .await
            .unwrap();
    adopted.0.push(new_pid(&output));
    let moved = txlb
        .wait_for_async("upgrade: connections moved to the new process", 0)
        .await;
    assert!(
        moved.contains("moved=1") && moved.contains("left=1"),
        "{moved}"
    );

    let (socket2, quiet_client) = (socket.clone(), quiet.local_addr().unwrap());
    let (draining, here) = tokio::task::spawn_blocking(move || {
        (
            control_lookup(&socket2, busy_peer),
            control_lookup(&socket2, quiet_peer),
        )
    })
    .await
    .unwrap();
    assert_eq!(draining["client"], busy_client.to_string(), "{draining}");
    assert_eq!(draining["service"], "svc", "{draining}");
    assert_eq!(draining["draining_in"], old_pid, "{draining}");
    assert_eq!(here["client"], quiet_client.to_string(), "{here}");
    assert!(here.get("draining_in").is_none(), "{here}");

    // The new process lists it, saying where it drains, and closes it there.
    let list = api(&base, "api/v1/connections").await;
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client"] == busy_client.to_string())
        .unwrap_or_else(|| panic!("the draining connection is not listed: {list}"))
        .clone();
    assert_eq!(listed["draining_in"], old_pid, "{listed}");
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let page = get_as(&base, FULL, "connections").await.1;
    assert!(
        page.contains(&format!("draining in PID {old_pid}")),
        "{page}"
    );
    let id = listed["id"].as_u64().unwrap();
    let closed = client()
        .delete(format!("{base}api/v1/connections/{id}"))
        .basic_auth(FULL.0, Some(FULL.1))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(closed, 204);
    let by_balancer = tokio::time::timeout(Duration::from_secs(10), busy)
        .await
        .expect("the draining connection was not closed")
        .unwrap();
    assert!(by_balancer, "the busy client stopped on its own");
    busy_stop.store(true, Ordering::Relaxed);

    // It ended and the old process exited: no answer for it, not listed.
    let mut txlb = txlb;
    let exited = tokio::task::spawn_blocking(move || txlb.exit_status(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(exited.is_some(), "the old process did not exit");
    let gone = tokio::task::spawn_blocking(move || {
        // The new process hears that the old one is done a moment later.
        let started = Instant::now();
        loop {
            let answer = control_lookup(&socket, busy_peer);
            if answer.get("error").is_some() || started.elapsed() > Duration::from_secs(5) {
                break answer;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert!(
        gone["error"]
            .as_str()
            .unwrap_or("")
            .contains("no open connection"),
        "{gone}"
    );
    let list = api(&base, "api/v1/connections").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    drop(quiet);
}

/// The new process serves a host given by name with the address the old one
/// resolved, though the name server fails when it starts: the answers are
/// part of the hand-over. Without them its first look-up fails and the host
/// has no address until the name server answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolved_names_carry_over_so_a_name_server_down_at_the_upgrade_costs_nothing() {
    let zone = crate::common::dns::Zone::default();
    zone.set("app.test", &["127.0.0.1"]);
    let nameserver = zone.serve().await;
    let backend = echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[]);
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replace(
            "scheduler=\"roundr\" enable=\"true\">\n",
            &format!(
                "scheduler=\"roundr\" enable=\"true\">\n      <host name=\"app\" ip=\"app.test:{}\"/>\n",
                backend.port()
            ),
        )
        .replace(
            "  <admin>\n",
            &format!("  <resolver nameserver=\"{nameserver}\" minTtl=\"30\" maxTtl=\"60\"/>\n  <admin>\n"),
        );
    std::fs::write(&config, text).unwrap();
    let txlb = running(Txlb::start(&config, 5)).await;
    let listener = txlb.listener();
    let mut adopted = Adopted(Vec::new());
    tokio::task::spawn_blocking(move || echo_once(listener).unwrap())
        .await
        .unwrap();
    // The name server breaks: every query is answered SERVFAIL.
    zone.fail(true);
    let config2 = config.clone();
    let new = tokio::task::spawn_blocking(move || new_pid(&upgrade(&config2, &[])))
        .await
        .unwrap();
    adopted.0.push(new);
    // The new process serves the host at its carried address.
    let served = tokio::task::spawn_blocking(move || echo_once(listener))
        .await
        .unwrap();
    assert!(served.is_ok(), "{served:?}\n{}", txlb.log_text());
    let base = txlb.logged("admin web server up", "url").await;
    let stats = api(&base, "api/v1/stats").await;
    assert_eq!(host(&stats, "app")["health"], "up", "{stats}");
    assert_eq!(
        api(&base, "api/v1/status").await["pid"].as_u64(),
        Some(u64::from(new)),
        "the new process answers"
    );
}

/// The test in one upgrade: a client every millisecond, 1,000 idle
/// connections and five streams of 256 MiB both ways (an echo host), under
/// `--workers 2`. The streams send half, go quiet and move with the idle
/// ones; then everything works through the new process: the streams send the
/// rest byte-exact, every idle connection answers, nobody was refused, and
/// the old process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upgrade_moves_idle_connections_and_five_big_streams_under_a_client_every_millisecond()
{
    const IDLE: usize = 1000;
    const STREAMS: usize = 5;
    let _heavy = crate::common::heavy().await;
    crate::common::binary::raise_nofile();
    let started = Instant::now();
    let echo = bulk_echo();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", echo)]);
    let mut txlb = running(Txlb::start_workers(&config, 30, 2)).await;
    let listener = txlb.listener();
    let base = txlb.logged("admin web server up", "url").await;
    let mut adopted = Adopted(Vec::new());

    let idle = tokio::task::spawn_blocking(move || {
        (0..IDLE)
            .map(|i| {
                let mut stream = TcpStream::connect(listener).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let token = format!("{i:06}");
                stream.write_all(token.as_bytes()).unwrap();
                let mut back = [0u8; 6];
                stream.read_exact(&mut back).unwrap();
                assert_eq!(&back, token.as_bytes());
                stream
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let half = BIG_STREAM / 2;
    let streams: Vec<(TcpStream, Arc<Cyclic>)> = (0..STREAMS)
        .map(|s| {
            let stream = TcpStream::connect(listener).unwrap();
            stream.set_nodelay(true).unwrap();
            (stream, Arc::new(Cyclic::new(s as u64 + 31)))
        })
        .collect();
    let firsts: Vec<_> = streams
        .iter()
        .map(|(stream, pattern)| {
            let (stream, pattern) = (stream.try_clone().unwrap(), pattern.clone());
            tokio::task::spawn_blocking(move || run_stream(&stream, &pattern, (0, half), None))
        })
        .collect();
    for first in firsts {
        first.await.unwrap();
    }
    assert!(
        parked_within(&base, IDLE + STREAMS, Duration::from_secs(15)).await,
        "not every connection parked"
    );

    let clients = EveryMillisecond::start(listener);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let config2 = config.clone();
    let output = tokio::task::spawn_blocking(move || upgrade(&config2, &[]))
        .await
        .unwrap();
    adopted.0.push(new_pid(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("{} connections moved", IDLE + STREAMS)),
        "{stdout}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (served, failed, first) = tokio::task::spawn_blocking(move || clients.stop())
        .await
        .unwrap();
    assert_eq!(failed, 0, "{failed} clients failed, the first: {first:?}");
    assert!(served > 50, "only {served} clients served");

    // Everything goes on through the new process.
    let seconds: Vec<_> = streams
        .iter()
        .map(|(stream, pattern)| {
            let (stream, pattern) = (stream.try_clone().unwrap(), pattern.clone());
            tokio::task::spawn_blocking(move || {
                run_stream(&stream, &pattern, (half, BIG_STREAM), None)
            })
        })
        .collect();
    for second in seconds {
        second.await.unwrap();
    }
    let idle = tokio::task::spawn_blocking(move || {
        for (i, stream) in idle.iter().enumerate() {
            let mut stream = stream;
            let token = format!("{:06}", IDLE - i);
            stream.write_all(token.as_bytes()).unwrap();
            let mut back = [0u8; 6];
            stream.read_exact(&mut back).unwrap();
            assert_eq!(&back, token.as_bytes(), "idle connection {i}");
        }
        idle
    })
    .await
    .unwrap();
    let exited = tokio::task::spawn_blocking(move || {
        let status = txlb.exit_status(Duration::from_secs(15));
        (status, txlb)
    })
    .await
    .unwrap();
    assert!(
        exited.0.is_some(),
        "the old process did not exit:\n{}",
        exited.1.log_text()
    );
    drop((idle, streams));
    eprintln!(
        "one upgrade, {IDLE} idle connections, {STREAMS} streams of 256 MiB both ways: {:?}",
        started.elapsed()
    );
}

/// Connections to the upgrade socket that never send a request (a stray
/// process, or a client that hung) do not hold up `txlb upgrade`: each used
/// to be read in turn for its 5 s, so four of them made an upgrade wait 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_to_the_upgrade_socket_do_not_hold_up_an_upgrade() {
    use std::os::linux::net::SocketAddrExt as _;
    let a = echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", a)]);
    let mut txlb = running(Txlb::start_workers(&config, 5, 1)).await;
    let listener = txlb.listener();
    let mut adopted = Adopted(Vec::new());
    // The upgrade socket is bound before this line.
    txlb.wait_for("txlb running", 0);
    let name = txlb::upgrade::request::socket_name(&config).unwrap();
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let strays: Vec<_> = (0..4)
        .map(|_| std::os::unix::net::UnixStream::connect_addr(&address).unwrap())
        .collect();
    let config2 = config.clone();
    let (output, took) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        (upgrade(&config2, &[]), started.elapsed())
    })
    .await
    .unwrap();
    let pid = new_pid(&output);
    adopted.0.push(pid);
    assert!(took < Duration::from_secs(4), "the upgrade took {took:?}");
    drop(strays);
    tokio::task::spawn_blocking(move || {
        assert!(txlb.exit_status(Duration::from_secs(10)).is_some());
        echo_once(listener).unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_whose_host_a_reload_renamed_or_removed_move_on_through_an_upgrade() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, b) = (echo_backend().await, echo_backend().await);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", a), ("b", b)]);
    let txlb = running(Txlb::start(&config, 5)).await;
    let listener = txlb.listener();
    let base = txlb.logged("admin web server up", "url").await;
    let mut adopted = Adopted(Vec::new());
    // Four connections, two on each host (round robin).
    let mut held = echoed_connections(listener, 4).await;
    // A reload renames the group and host `a` (same address) and removes
    // `b`: the old process serves all four on, under the names they were
    // made with.
    let text = std::fs::read_to_string(&config).unwrap();
    let renamed = text
        .replace("<group name=\"g\"", "<group name=\"g2\"")
        .replace("<host name=\"a\"", "<host name=\"a2\"")
        .replace(&format!("      <host name=\"b\" ip=\"{b}\"/>\n"), "");
    assert_ne!(renamed, text);
    std::fs::write(&config, renamed).unwrap();
    let skip = txlb.log_len();
    txlb.signal("HUP");
    txlb.wait_for_async("configuration reloaded", skip).await;
    upgrade_parked(txlb, &base, &config, 4, &mut adopted).await;
    // All four go on in the new process: those to `a` under its new names,
    // those to the removed `b` under the service they landed in.
    for stream in &mut held {
        stream.write_all(b"m").await.unwrap();
        let mut back = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
            .await
            .expect("an answer through the new process")
            .unwrap();
        assert_eq!(&back, b"m");
    }
    let list = api(&base, "api/v1/connections").await;
    let mut places: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}/{}/{}", c["service"], c["group"], c["host"]).replace('"', ""))
        .collect();
    places.sort();
    assert_eq!(
        places,
        ["svc/g/b", "svc/g/b", "svc/g2/a2", "svc/g2/a2"],
        "{list}"
    );
}

/// A connection moved by an upgrade keeps its idle time: its idle timeout
/// runs on from its last byte, not from the move (an upgrade more often than
/// the timeout would otherwise keep idle connections forever), and the new
/// process lists it as idle that long.
#[tokio::test]
async fn a_moved_connection_keeps_its_idle_time() {
    use tokio::io::AsyncReadExt;
    let a = echo_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("a", a)]);
    let xml = std::fs::read_to_string(&config).unwrap().replace(
        "<service name=\"svc\">",
        "<service name=\"svc\" clientTimeout=\"6\" serverTimeout=\"6\">",
    );
    std::fs::write(&config, xml).unwrap();
    let txlb = running(Txlb::start_workers(&config, 5, 1)).await;
    let listener = txlb.listener();
    let base = txlb.logged("admin web server up", "url").await;
    let mut adopted = Adopted(Vec::new());
    let mut client = tokio::net::TcpStream::connect(listener).await.unwrap();
    echo_exact(&mut client, b"x").await;
    let last = Instant::now();
    assert!(parked_within(&base, 1, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(last.elapsed())).await;
    let config2 = config.clone();
    let pid = tokio::task::spawn_blocking(move || new_pid(&upgrade(&config2, &[])))
        .await
        .unwrap();
    adopted.0.push(pid);
    let idle = eventually(Duration::from_secs(2), || async {
        try_api(&base, "api/v1/connections")
            .await
            .and_then(|list| list.as_array()?.first()?["idle_seconds"].as_f64())
            .is_some_and(|idle| idle >= 3.5)
    });
    assert!(idle.await, "listed as idle since its last byte");
    // Closed about 6 s after its last byte (the sweeper looks every 1.5 s).
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(12), client.read(&mut byte)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    let lasted = last.elapsed();
    assert!(
        lasted < Duration::from_secs(9),
        "closed {lasted:?} after its last byte"
    );
    drop(txlb);
}
