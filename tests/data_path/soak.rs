//! Soak: the real `txlb` binary carries 5,000 concurrent connections for 60 s
//! (`TXLB_SOAK_SECS` overrides; `TXLB_SOAK_CONNS` the concurrency), each with a
//! random payload and a random ending: the client half-closes, the client closes
//! outright, the host closes first, or the client resets. Every byte is checked
//! (FNV-1a of what was sent against what came back), the hosts' open counts go
//! back to 0 (read from txlb's JSON admin API), and txlb's resident memory and
//! descriptors go back near where they started.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::admin::{FULL, users};
use common::binary::{Txlb, raise_nofile, xml};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOSTS: usize = 4;
/// Largest payload of one connection.
const MAX_PAYLOAD: usize = 48 * 1024;
/// Largest chunk written at once, and the pause range between chunks: a
/// connection lives about 0.5–6 s, so the 5,000 overlap and the connection
/// rate stays within what loopback ports allow.
const MAX_CHUNK: usize = 8 * 1024;
const PAUSE_MS: std::ops::Range<u64> = 100..1000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// 64-bit FNV-1a, fed in pieces.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// How a connection ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// The client sends, half-closes, and reads the echo to its end.
    HalfClose = b'H',
    /// The client sends, reads the whole echo back, and closes both ways.
    FullClose = b'F',
    /// The host sends `len` bytes from `seed`, then closes first.
    HostCloses = b'S',
    /// The client sends part of its payload and resets (SO_LINGER 0).
    Reset = b'R',
}

/// The 13-byte preamble each client sends first: mode, seed, length.
fn preamble(mode: Mode, seed: u64, len: u32) -> [u8; 13] {
    let mut p = [0u8; 13];
    p[0] = mode as u8;
    p[1..9].copy_from_slice(&seed.to_be_bytes());
    p[9..13].copy_from_slice(&len.to_be_bytes());
    p
}

fn random_bytes(rng: &mut fastrand::Rng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill(&mut v);
    v
}

/// A host: reads the preamble; echoes (H, F, R) or sends its own bytes and
/// closes first (S).
async fn soak_backend() -> SocketAddr {
    // A deep accept queue (the system's most): the test process shares two
    // cores with txlb, and a SYN dropped on a full queue makes txlb wait out its
    // connect timeout and mark the host bad.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(4096).unwrap();
    socket.set_nonblocking(true).unwrap();
    let listener = TcpListener::from_std(socket.into()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                // Out of descriptors for a moment: wait, don't spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            tokio::spawn(async move {
                let _ = serve(s).await;
            });
        }
    });
    addr
}

async fn serve(mut s: TcpStream) -> std::io::Result<()> {
    let mut p = [0u8; 13];
    s.read_exact(&mut p).await?;
    if p[0] == Mode::HostCloses as u8 {
        let seed = u64::from_be_bytes(p[1..9].try_into().unwrap());
        let mut left = u32::from_be_bytes(p[9..13].try_into().unwrap()) as usize;
        let data = random_bytes(&mut fastrand::Rng::with_seed(seed), left);
        let mut pace = fastrand::Rng::with_seed(!seed);
        while left > 0 {
            let n = pace.usize(1..=MAX_CHUNK).min(left);
            let at = data.len() - left;
            s.write_all(&data[at..at + n]).await?;
            left -= n;
            tokio::time::sleep(Duration::from_millis(pace.u64(PAUSE_MS))).await;
        }
        s.shutdown().await?;
        // Closes with the client's side possibly still open: host first.
        return Ok(());
    }
    let (mut r, mut w) = s.split();
    tokio::io::copy(&mut r, &mut w).await?;
    w.shutdown().await
}

#[derive(Default)]
struct Tally {
    connections: AtomicU64,
    by_mode: [AtomicU64; 4],
    bytes: AtomicU64,
    errors: AtomicU64,
    open: AtomicUsize,
    max_open: AtomicUsize,
    first_errors: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Relaxed);
        let mut first = self.first_errors.lock().unwrap();
        if first.len() < 10 {
            first.push(what);
        }
    }
}

/// One connection of `mode`; returns the bytes checked.
async fn one_connection(
    addr: SocketAddr,
    mode: Mode,
    rng: &mut fastrand::Rng,
) -> Result<u64, String> {
    let seed = rng.u64(..);
    let len = rng.usize(..=MAX_PAYLOAD);
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut r, mut w) = stream.into_split();
    w.write_all(&preamble(mode, seed, len as u32))
        .await
        .map_err(|e| format!("preamble: {e}"))?;
    match mode {
        Mode::HostCloses => {
            let mut expected = Fnv::new();
            expected.feed(&random_bytes(&mut fastrand::Rng::with_seed(seed), len));
            let mut got = Vec::with_capacity(len);
            r.read_to_end(&mut got)
                .await
                .map_err(|e| format!("host-closes read: {e}"))?;
            let mut hash = Fnv::new();
            hash.feed(&got);
            if got.len() != len || hash != expected {
                return Err(format!(
                    "host-closes: {} of {len} bytes or wrong checksum",
                    got.len()
                ));
            }
            Ok(len as u64)
        }
        Mode::HalfClose | Mode::FullClose | Mode::Reset => {
            let payload = random_bytes(&mut fastrand::Rng::with_seed(seed), len);
            let pace_seed = rng.u64(..);
            let send_len = if mode == Mode::Reset { len / 2 } else { len };
            let writer = async {
                let mut pace = fastrand::Rng::with_seed(pace_seed);
                let mut at = 0;
                while at < send_len {
                    let n = pace.usize(1..=MAX_CHUNK).min(send_len - at);
                    w.write_all(&payload[at..at + n]).await?;
                    at += n;
                    tokio::time::sleep(Duration::from_millis(pace.u64(PAUSE_MS))).await;
                }
                if mode == Mode::HalfClose {
                    w.shutdown().await?;
                }
                Ok::<_, std::io::Error>(w)
            };
            let reader = async {
                let mut got = vec![0u8; send_len];
                r.read_exact(&mut got).await?;
                if mode == Mode::HalfClose {
                    // Then the end of the stream.
                    let mut more = [0u8; 1];
                    if r.read(&mut more).await? != 0 {
                        return Err(std::io::Error::other("bytes after the echo"));
                    }
                }
                Ok(got)
            };
            let (w, got) =
                tokio::try_join!(writer, reader).map_err(|e| format!("{mode:?}: {e}"))?;
            let mut hash = Fnv::new();
            hash.feed(&got);
            let mut expected = Fnv::new();
            expected.feed(&payload[..send_len]);
            if hash != expected {
                return Err(format!("{mode:?}: wrong checksum over {send_len} bytes"));
            }
            let stream = r.reunite(w).unwrap();
            if mode == Mode::Reset {
                socket2::SockRef::from(&stream)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
            }
            drop(stream);
            Ok(send_len as u64)
        }
    }
}

/// `conns` clients, each running one connection after another until `secs`
/// have passed, counted in `tally`; returns txlb's peak RSS (KiB) and open
/// descriptors, sampled every 500 ms.
async fn round(txlb: &Txlb, conns: usize, secs: u64, tally: &Arc<Tally>) -> (u64, usize) {
    let addr = txlb.listener();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut clients = Vec::new();
    for c in 0..conns {
        let tally = tally.clone();
        clients.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(c as u64 * 7919 + 17);
            // Spread the first connects over 5 s (txlb's backlog is 1,024).
            tokio::time::sleep(Duration::from_millis(rng.u64(..5000))).await;
            while Instant::now() < deadline {
                let mode = [
                    Mode::HalfClose,
                    Mode::FullClose,
                    Mode::HostCloses,
                    Mode::Reset,
                ][rng.usize(..4)];
                let open = tally.open.fetch_add(1, Relaxed) + 1;
                tally.max_open.fetch_max(open, Relaxed);
                let result = tokio::time::timeout(
                    Duration::from_secs(60),
                    one_connection(addr, mode, &mut rng),
                )
                .await;
                tally.open.fetch_sub(1, Relaxed);
                match result {
                    Ok(Ok(bytes)) => {
                        tally.connections.fetch_add(1, Relaxed);
                        tally.by_mode[mode_index(mode)].fetch_add(1, Relaxed);
                        tally.bytes.fetch_add(bytes, Relaxed);
                    }
                    Ok(Err(e)) => tally.error(e),
                    Err(_) => tally.error(format!("{mode:?}: no end within 60 s")),
                }
            }
        }));
    }
    // Sample txlb while it runs.
    let mut peak_rss = 0;
    let mut peak_fds = 0;
    while clients.iter().any(|c| !c.is_finished()) {
        peak_rss = peak_rss.max(txlb.rss_kib());
        peak_fds = peak_fds.max(txlb.fds());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for c in clients {
        c.await.unwrap();
    }
    (peak_rss, peak_fds)
}

async fn admin_stats(http: &reqwest::Client, base: &str) -> serde_json::Value {
    http.get(format!("{base}api/v1/stats"))
        .basic_auth(FULL.0, Some(FULL.1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// (open, total) summed over every host, from the admin API.
async fn host_counts(http: &reqwest::Client, base: &str) -> (u64, u64) {
    let stats = admin_stats(http, base).await;
    let mut open = 0;
    let mut total = 0;
    for group in stats["services"][0]["groups"].as_array().unwrap() {
        for host in group["hosts"].as_array().unwrap() {
            open += host["open"].as_u64().unwrap();
            total += host["total"].as_u64().unwrap();
        }
    }
    (open, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_connections_for_a_minute() {
    let _heavy = common::heavy().await;
    let secs = env_or("TXLB_SOAK_SECS", 60);
    let conns = env_or("TXLB_SOAK_CONNS", 5000) as usize;
    let nofile = raise_nofile();
    assert!(
        nofile as usize > 2 * conns + 500,
        "descriptor limit {nofile} too low for {conns} connections on each side"
    );
    let mut hosts = Vec::new();
    for _ in 0..HOSTS {
        hosts.push(soak_backend().await);
    }
    let names: Vec<String> = (0..HOSTS).map(|i| format!("h{i}")).collect();
    let host_list: Vec<(&str, SocketAddr, &str)> = names
        .iter()
        .zip(&hosts)
        .map(|(n, a)| (n.as_str(), *a, ""))
        .collect();
    let user = &users()[0];
    let admin = format!(
        "  <admin>\n    <web listen=\"127.0.0.1:0\" enable=\"true\"/>\n    \
         <user name=\"{}\" password=\"{}\" access=\"full\"/>\n  </admin>\n",
        user.name, user.password_hash
    );
    let txlb = Txlb::start_xml(&xml("", "", &host_list, &admin), Some(nofile));
    let addr = txlb.listener();
    let base = txlb.logged("admin web server up", "url").await;
    let http = common::admin::client();

    // Baseline once a few connections have gone through every path.
    let mut warm = Vec::new();
    for (i, mode) in [
        Mode::HalfClose,
        Mode::FullClose,
        Mode::HostCloses,
        Mode::Reset,
    ]
    .into_iter()
    .cycle()
    .take(4 * HOSTS)
    .enumerate()
    {
        warm.push(tokio::spawn(async move {
            one_connection(addr, mode, &mut fastrand::Rng::with_seed(i as u64)).await
        }));
    }
    for w in warm {
        w.await.unwrap().unwrap();
    }
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            host_counts(&http, &base).await.0 == 0
        })
        .await
    );
    let base_rss = txlb.rss_kib();
    let base_fds = txlb.fds();

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let (peak_rss, peak_fds) = round(&txlb, conns, secs, &tally).await;
    let ran = started.elapsed();

    // Everything closed: counts back to 0, descriptors and memory back down.
    let drained = common::eventually(Duration::from_secs(10), || async {
        host_counts(&http, &base).await.0 == 0
    })
    .await;
    let (open, total) = host_counts(&http, &base).await;
    // Memory back near the baseline: once the burst has ended the workers free
    // their pooled copy buffers and txlb hands the freed heap back; allow a fifth
    // of the growth to stay (measured: 8-13% stays: fragmentation, tables sized
    // for the peak; 26% once in CI while the pools still kept their buffers).
    let mut end_rss = txlb.rss_kib();
    let settled = common::eventually(Duration::from_secs(10), || {
        end_rss = txlb.rss_kib();
        let back = end_rss <= base_rss + (peak_rss.saturating_sub(base_rss) / 5).max(2048);
        async move { back }
    })
    .await;
    let end_fds = txlb.fds();
    let t = &tally;
    eprintln!(
        "soak: {conns} concurrent clients for {secs} s (ran {ran:.1?}): {} connections \
         ({} half-close, {} full close, {} host closes, {} reset), {} MiB checked, \
         {} errors, at most {} open at once; txlb: {} connections served, \
         RSS {base_rss} -> peak {peak_rss} -> {end_rss} KiB, fds {base_fds} -> peak \
         {peak_fds} -> {end_fds}",
        t.connections.load(Relaxed),
        t.by_mode[0].load(Relaxed),
        t.by_mode[1].load(Relaxed),
        t.by_mode[2].load(Relaxed),
        t.by_mode[3].load(Relaxed),
        t.bytes.load(Relaxed) >> 20,
        t.errors.load(Relaxed),
        t.max_open.load(Relaxed),
        total,
    );
    if t.errors.load(Relaxed) > 0 {
        // What txlb had to say, one line per kind.
        let log = txlb.log_text();
        let mut kinds: Vec<String> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(|l| {
                l.split(" txlb")
                    .nth(1)
                    .unwrap_or(l)
                    .chars()
                    .take(200)
                    .collect()
            })
            .collect();
        kinds.dedup_by(|a, b| a.get(..60) == b.get(..60));
        eprintln!("txlb warnings:\n{}", kinds.join("\n"));
    }
    assert_eq!(
        t.errors.load(Relaxed),
        0,
        "first errors: {:#?}",
        t.first_errors.lock().unwrap()
    );
    assert!(drained, "hosts still have {open} open connections");
    assert!(
        t.max_open.load(Relaxed) >= conns * 9 / 10,
        "only {} concurrent",
        t.max_open.load(Relaxed)
    );
    assert!(
        end_fds <= base_fds + 5,
        "descriptors {base_fds} -> {end_fds}"
    );
    assert!(
        settled,
        "RSS {base_rss} -> peak {peak_rss} -> {end_rss} KiB: not back near the baseline"
    );
    // And it does not grow with the number of connections served: a second
    // round at the same concurrency ends where the first did. A leak of even
    // 64 bytes a connection would show as several MiB.
    let again = Arc::new(Tally::default());
    let again_secs = (secs / 4).max(5);
    let (again_peak, _) = round(&txlb, conns, again_secs, &again).await;
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            host_counts(&http, &base).await.0 == 0
        })
        .await
    );
    let mut again_rss = txlb.rss_kib();
    common::eventually(Duration::from_secs(10), || {
        again_rss = txlb.rss_kib();
        let back = again_rss <= end_rss + 1024;
        async move { back }
    })
    .await;
    eprintln!(
        "soak, second round of {again_secs} s: {} more connections, {} errors; \
         RSS peak {again_peak} -> {again_rss} KiB (first round ended at {end_rss} KiB), \
         fds {}",
        again.connections.load(Relaxed),
        again.errors.load(Relaxed),
        txlb.fds(),
    );
    assert_eq!(
        again.errors.load(Relaxed),
        0,
        "{:#?}",
        again.first_errors.lock().unwrap()
    );
    assert!(
        again_rss <= end_rss + 2 * 1024,
        "RSS grew from {end_rss} to {again_rss} KiB over a second round: a leak?"
    );
    assert!(txlb.fds() <= base_fds + 5);
    let mut txlb = txlb;
    assert!(txlb.alive());
}

fn mode_index(mode: Mode) -> usize {
    match mode {
        Mode::HalfClose => 0,
        Mode::FullClose => 1,
        Mode::HostCloses => 2,
        Mode::Reset => 3,
    }
}
