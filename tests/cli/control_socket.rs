//! The control socket: a host asks who is behind the connection that reached it.
//! A socket another process serves at the configured path is refused, never
//! taken over; a stale one is replaced; anything else at the path is kept.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::binary::Txlb;
use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};
use txlb::Balancer;
use txlb::config::ControlConfig;
use txlb::scheduler::SchedulerKind;

async fn ask(socket: &std::path::Path, request: &str) -> serde_json::Value {
    let stream = UnixStream::connect(socket).await.unwrap();
    let (read, mut write) = stream.into_split();
    write.write_all(request.as_bytes()).await.unwrap();
    write.write_all(b"\n").await.unwrap();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await.unwrap();
    serde_json::from_str(&line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_learns_the_real_client_of_a_live_connection() {
    // The backend reports the peer address it sees (txlb's side) and holds on.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let (peer_tx, mut peer_rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while let Ok((mut s, peer)) = listener.accept().await {
            peer_tx.send(peer).await.unwrap();
            tokio::spawn(async move {
                let mut sink = [0u8; 16];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let mut cfg = config(SchedulerKind::RoundRobin, vec![host("h", backend, 1)]);
    cfg.control = Some(ControlConfig {
        socket: socket.clone(),
    });
    let balancer = Balancer::start(cfg).await.unwrap();
    let addr = balancer.local_addr("svc", None).unwrap();

    let client = TcpStream::connect(addr).await.unwrap();
    let seen_by_host = tokio::time::timeout(Duration::from_secs(5), peer_rx.recv())
        .await
        .unwrap()
        .unwrap();
    // The host can see the connection a moment before txlb has registered it.
    let request = format!("{{\"peer\": \"{seen_by_host}\"}}");
    let mut answer = ask(&socket, &request).await;
    let found = eventually(Duration::from_secs(2), || {
        let (socket, request) = (socket.clone(), request.clone());
        async move { ask(&socket, &request).await["client"].is_string() }
    })
    .await;
    if found {
        answer = ask(&socket, &request).await;
    }
    assert_eq!(
        answer["client"],
        client.local_addr().unwrap().to_string(),
        "{answer}"
    );
    assert_eq!(answer["listener"], addr.to_string());
    assert_eq!(answer["service"], "svc");
    assert_eq!(answer["host"], "h");

    // Bad requests get a reason; finished connections vanish.
    assert!(
        ask(&socket, "{\"peer\": \"nonsense\"}").await["error"]
            .as_str()
            .unwrap()
            .contains("bad peer")
    );
    assert!(
        ask(&socket, "hello").await["error"]
            .as_str()
            .unwrap()
            .contains("bad request")
    );
    drop(client);
    let gone = eventually(Duration::from_secs(3), || {
        let socket = socket.clone();
        async move {
            ask(&socket, &format!("{{\"peer\": \"{seen_by_host}\"}}")).await["error"].is_string()
        }
    })
    .await;
    assert!(gone, "entry outlived its connection");
    balancer.shutdown(Duration::from_secs(1)).await;
    assert!(eventually(Duration::from_secs(2), || async { !socket.exists() }).await);
}

/// A configuration file in `dir` with a control socket at `socket` and one
/// listener on 127.0.0.1:0 over a host at `host`.
fn write_config(dir: &Path, name: &str, socket: &Path, host: SocketAddr) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "<config>\n  <service name=\"svc\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
             <group name=\"g\" enable=\"true\">\n{}    </group>\n  </service>\n  \
             <control socket=\"{}\"/>\n</config>\n",
            host_lines(&[("a", host)]),
            socket.display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn a_second_instance_refuses_a_control_socket_in_use_and_leaves_it() {
    let dir = tempfile::tempdir().unwrap();
    let host = named_backend("a", Hold::Close).await;
    let socket = dir.path().join("control.sock");
    let first = Txlb::start(&write_config(dir.path(), "first.xml", &socket, host), 1);
    first.wait_for_async("control socket up", 0).await;

    let mut second = Txlb::start(&write_config(dir.path(), "second.xml", &socket, host), 1);
    let refused = second.refused("control socket").await;
    assert!(
        refused.contains(&format!("control socket {}", socket.display()))
            && refused.contains("in use by another process"),
        "{refused}"
    );
    // The first instance still answers on its socket.
    let answer = ask(&socket, "{\"peer\": \"127.0.0.1:1\"}").await;
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("no open connection")),
        "{answer}"
    );
}

#[tokio::test]
async fn a_control_socket_path_that_is_not_a_socket_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let host = named_backend("a", Hold::Close).await;
    let socket = dir.path().join("control.sock");
    std::fs::write(&socket, "precious\n").unwrap();
    let mut txlb = Txlb::start(&write_config(dir.path(), "c.xml", &socket, host), 1);
    let refused = txlb.refused("control socket").await;
    assert!(
        refused.contains(&socket.display().to_string()) && refused.contains("not a socket"),
        "{refused}"
    );
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "precious\n");
}

#[tokio::test]
async fn a_stale_control_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let host = named_backend("a", Hold::Close).await;
    let socket = dir.path().join("control.sock");
    // Left by a process that is gone: the file stays, nobody accepts.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let txlb = Txlb::start(&write_config(dir.path(), "c.xml", &socket, host), 1);
    txlb.wait_for_async("control socket up", 0).await;
    let answer = ask(&socket, "{\"peer\": \"127.0.0.1:1\"}").await;
    assert!(answer["error"].is_string(), "{answer}");
}
