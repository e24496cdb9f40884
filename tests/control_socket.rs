//! The control socket: a host asks who is behind the connection that reached it.

mod common;

use std::time::Duration;

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
    let answer = ask(&socket, &format!("{{\"peer\": \"{seen_by_host}\"}}")).await;
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
