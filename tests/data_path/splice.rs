//! Streams move by `splice` once a read fills a 256 KiB buffer (Linux): the
//! bytes must still arrive exactly, both ways at once, through slow readers
//! and half-closes, and the pipes must go with the connection.

use crate::common;

use std::time::Duration;

use common::binary::Txlb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes each side sends: enough for many pipe-fulls each way.
const SIZE: usize = 24 << 20;

/// `SIZE` bytes from the seed, written in odd-sized chunks.
async fn send_random(mut to: impl AsyncWriteExt + Unpin, seed: u64) -> u64 {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut hash = xxhash_rust::xxh3::Xxh3::new();
    let mut chunk = vec![0u8; 100_003];
    let mut sent = 0;
    while sent < SIZE {
        let n = chunk.len().min(SIZE - sent);
        rng.fill(&mut chunk[..n]);
        hash.update(&chunk[..n]);
        to.write_all(&chunk[..n]).await.unwrap();
        sent += n;
    }
    to.shutdown().await.unwrap();
    hash.digest()
}

/// Reads to EOF after `pause` (the sender's pipe and buffers fill
/// meanwhile): the byte count and hash.
async fn receive_all(mut from: impl AsyncReadExt + Unpin, pause: Duration) -> (usize, u64) {
    tokio::time::sleep(pause).await;
    let mut hash = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 7919];
    let mut got = 0;
    loop {
        let n = from.read(&mut buf).await.unwrap();
        if n == 0 {
            return (got, hash.digest());
        }
        hash.update(&buf[..n]);
        got += n;
    }
}

/// The pipes among `pid`'s open descriptors.
fn pipes_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("pipe:"))
                .count()
        })
        .unwrap_or(0)
}

/// Whether this system splices (Linux, with `/proc` to see the pipes);
/// says so when it does not.
fn splice_here() -> bool {
    let here = std::path::Path::new("/proc/self/fd").exists();
    if !here {
        eprintln!("skipped: no /proc (splice is Linux only)");
    }
    here
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_both_ways_move_by_splice_byte_for_byte_and_half_close() {
    if !splice_here() {
        return;
    }
    let _heavy = common::heavy().await;
    // The host sends its stream and its FIN while it reads the client's,
    // slowly at first, and reports what it got.
    let host = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host_addr = host.local_addr().unwrap();
    let (report, reported) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = host.accept().await.unwrap();
        let (r, w) = stream.into_split();
        let sender = tokio::spawn(send_random(w, 2));
        let got = receive_all(r, Duration::from_millis(300)).await;
        let _ = report.send((got, sender.await.unwrap()));
    });
    let xml = format!(
        "<config>\n  <service name=\"svc\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
         <group name=\"g\" enable=\"true\">\n      <host name=\"h\" ip=\"{host_addr}\"/>\n    \
         </group>\n  </service>\n</config>\n"
    );
    let txlb = Txlb::start_xml(&xml, None);
    let addr = txlb.listener();
    let before = pipes_of(txlb.pid());

    let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
    let sender = tokio::spawn(send_random(w, 1));
    let watcher = {
        let pid = txlb.pid();
        tokio::spawn(async move {
            let mut most = 0;
            for _ in 0..200 {
                most = most.max(pipes_of(pid));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            most
        })
    };
    let (got, got_hash) = tokio::time::timeout(
        Duration::from_secs(60),
        receive_all(r, Duration::from_millis(500)),
    )
    .await
    .expect("the host's stream in time");
    let sent_hash = sender.await.unwrap();
    let ((host_got, host_got_hash), host_sent_hash) =
        tokio::time::timeout(Duration::from_secs(60), reported)
            .await
            .expect("the host's report in time")
            .unwrap();
    assert_eq!(got, SIZE, "host to client");
    assert_eq!(got_hash, host_sent_hash, "host to client");
    assert_eq!(host_got, SIZE, "client to host");
    assert_eq!(host_got_hash, sent_hash, "client to host");
    let most = watcher.await.unwrap();
    assert!(
        most >= before + 2,
        "no pipe was opened for the streams ({before} before, {most} at most)"
    );
    // The pipes close with the connection.
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            pipes_of(txlb.pid()) == before
        })
        .await,
        "{} pipes left, {before} before",
        pipes_of(txlb.pid())
    );
}

/// A client's urgent byte (`MSG_OOB`) in the middle of a stream that moves by
/// `splice`: the copy path's `recv` steps over it (the byte is out of band),
/// but `splice` stops at the urgent mark and returns 0, which must not be
/// taken for the client's FIN: every in-band byte after it still reaches the
/// host, and the host sees no early end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_urgent_byte_in_a_spliced_stream_is_no_fin() {
    if !splice_here() {
        return;
    }
    let _heavy = common::heavy().await;
    const HALF: usize = 4 << 20;
    let host = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host_addr = host.local_addr().unwrap();
    let (report, reported) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = host.accept().await.unwrap();
        // Reads fast, in large reads: txlb's receive buffer grows (autotuning)
        // until its reads fill 256 KiB, and it splices.
        let mut stream = stream;
        let mut hash = xxhash_rust::xxh3::Xxh3::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            got += n;
        }
        let _ = report.send((got, hash.digest()));
    });
    let xml = format!(
        "<config>\n  <service name=\"svc\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
         <group name=\"g\" enable=\"true\">\n      <host name=\"h\" ip=\"{host_addr}\"/>\n    \
         </group>\n  </service>\n</config>\n"
    );
    let txlb = Txlb::start_xml(&xml, None);
    let addr = txlb.listener();
    let pid = txlb.pid();
    let before = pipes_of(pid);
    // All of it made beforehand, written a MiB at a time: txlb's reads
    // fill 256 KiB soon (a client slower than txlb never streams).
    let mut data = vec![0u8; 2 * HALF];
    fastrand::Rng::with_seed(7).fill(&mut data[..]);
    let sent_hash = xxhash_rust::xxh3::xxh3_64(&data);
    let mut client = TcpStream::connect(addr).await.unwrap();
    let sending = async {
        for (i, chunk) in data.chunks(1 << 20).enumerate() {
            if i * chunk.len() == HALF {
                // The stream moves by splice by now (reads of 256 KiB filled).
                let spliced =
                    common::eventually(Duration::from_secs(5), || async { pipes_of(pid) > before })
                        .await;
                assert!(
                    spliced,
                    "the stream never moved by splice ({before} pipes before, {} now)",
                    pipes_of(pid)
                );
                client.writable().await.unwrap();
                socket2::SockRef::from(&client)
                    .send_out_of_band(b"U")
                    .unwrap();
            }
            client.write_all(chunk).await.unwrap();
        }
        client.shutdown().await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(30), sending)
        .await
        .expect("the client's stream sent in time");
    let (got, got_hash) = tokio::time::timeout(Duration::from_secs(30), reported)
        .await
        .expect("the host's report in time")
        .unwrap();
    assert_eq!(got, 2 * HALF, "in-band bytes the host got before its EOF");
    assert_eq!(got_hash, sent_hash, "client to host");
}
