//! What sits at the configuration's path cannot stall the control plane: a FIFO
//! (whose open would block until someone writes) or an oversized file is refused
//! at once by `check`, a SIGHUP reload and `saveConfig`, while the admin answers
//! and SIGTERM still stops the process.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::binary::Txlb;
use common::*;

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

fn config(host: std::net::SocketAddr) -> String {
    let hosts = host_lines(&[("a", host)]);
    format!(
        "<config>\n  <service name=\"svc\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
         <group name=\"g\" enable=\"true\">\n{hosts}    </group>\n  </service>\n  \
         <admin><web listen=\"127.0.0.1:0\"/></admin>\n</config>\n"
    )
}

/// One plain HTTP/1.0 GET with a loopback Host; the status line.
async fn get(base: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap();
    let request = format!("GET /{path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(3), stream.read_to_string(&mut answer))
        .await
        .expect("the admin answers while the file is a FIFO")
        .unwrap();
    answer.lines().next().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_or_huge_file_at_the_config_path_never_stalls_the_control_plane() {
    let a = named_backend("a", Hold::Close).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");

    // txlb check refuses a FIFO at once (it used to wait for a writer).
    mkfifo(&path);
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_txlb"))
        .arg("check")
        .arg(&path)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(5), out)
        .await
        .expect("check of a FIFO returns")
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lb.xml: cannot read configuration: not a regular file"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    std::fs::remove_file(&path).unwrap();

    std::fs::write(&path, config(a)).unwrap();
    let mut txlb = Txlb::start(&path, 1);
    let base = txlb.logged("admin web server up", "url").await;
    let listener = txlb.listener();

    // A FIFO: the reload is refused with the reason, the admin answers meanwhile.
    std::fs::remove_file(&path).unwrap();
    mkfifo(&path);
    let mark = txlb.log_len();
    txlb.signal("HUP");
    let line = txlb.wait_for_async("reload refused", mark).await;
    assert!(line.contains("not a regular file"), "{line}");
    assert!(get(&base, "running").await.contains("200"));
    // saveConfig has nothing it may read: refused, answered at once.
    let status = get(&base, "saveConfig").await;
    assert!(!status.contains("200"), "{status}");
    assert_eq!(which_backend(listener).await.0, "a");

    // A file past the size limit: refused, the running configuration stays.
    std::fs::remove_file(&path).unwrap();
    let big = std::fs::File::create(&path).unwrap();
    big.set_len(txlb::config::MAX_FILE_BYTES + 1).unwrap();
    let mark = txlb.log_len();
    txlb.signal("HUP");
    let line = txlb.wait_for_async("reload refused", mark).await;
    assert!(line.contains("larger than 64 MiB"), "{line}");
    assert_eq!(which_backend(listener).await.0, "a");

    // SIGTERM is heard at once.
    assert!(txlb.terminate().success());
}
