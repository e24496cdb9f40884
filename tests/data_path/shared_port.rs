//! A listen address another process serves is refused, never shared: a second
//! `txlb run` on it exits with an error naming it, and a listener added live
//! (JSON API, SIGHUP reload) onto it is refused while the running ones stay.
//! Most instances here run two workers, so each binds with SO_REUSEPORT: the
//! case where the kernel would otherwise let the second one in. An "every
//! address" listener is refused too when another program holds only its IPv6
//! side, rather than falling back to IPv4 alone.

use crate::common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::admin::{FULL, client, get_as};
use common::binary::Txlb;
use common::*;
use serde_json::{Value, json};

/// `txlb run --workers 2` on `config`, its log collected.
fn start(config: &Path) -> Txlb {
    Txlb::start_workers(config, 1, 2)
}

/// A port free a moment ago.
fn free_port() -> u16 {
    closed_port().port()
}

/// Service `svc` listening on each of `listens`, over host `a`; with the admin
/// web server on 127.0.0.1:0 when `admin`.
fn write_config(dir: &Path, name: &str, listens: &[&str], a: SocketAddr, admin: bool) -> PathBuf {
    let listens: String = listens
        .iter()
        .map(|l| format!("    <listen ip=\"{l}\"/>\n"))
        .collect();
    let admin = if admin {
        format!(
            "  <admin>\n    <web listen=\"127.0.0.1:0\" enable=\"true\"/>\n{}  </admin>\n",
            common::admin::user_lines()
        )
    } else {
        String::new()
    };
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "<config>\n  <service name=\"svc\">\n{listens}    <group name=\"g\" enable=\"true\">\n\
             {}    </group>\n  </service>\n{admin}</config>\n",
            common::host_lines(&[("a", a)])
        ),
    )
    .unwrap();
    path
}

/// Asserts that the instance on `addr` still serves every client.
async fn still_serves(addr: SocketAddr) {
    for _ in 0..4 {
        let (seen, _) = tokio::time::timeout(Duration::from_secs(2), which_backend(addr))
            .await
            .unwrap();
        assert_eq!(seen, "a");
    }
}

/// How many listeners service `svc` has, by the JSON API under `admin`.
async fn listener_count(admin: &str) -> Option<usize> {
    let (_, body) = get_as(admin, FULL, "api/v1/services/svc/listeners").await;
    let listeners: Value = serde_json::from_str(&body).unwrap();
    listeners.as_array().map(Vec::len)
}

#[tokio::test]
async fn a_second_instance_on_the_same_address_exits_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = named_backend("a", Hold::Close).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let first = start(&write_config(dir.path(), "first.xml", &[&listen], a, false));
    first.wait_for_async("listener up", 0).await;
    let mut second = start(&write_config(
        dir.path(),
        "second.xml",
        &[&listen],
        a,
        false,
    ));
    let refused = second.refused("cannot listen on").await;
    assert!(
        refused.contains(&format!("cannot listen on {listen}"))
            && refused.contains("in use by another program"),
        "{refused}"
    );
    // The first one still serves every client.
    still_serves(listen.parse().unwrap()).await;
}

#[tokio::test]
async fn a_listener_added_live_onto_an_address_another_process_serves_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = named_backend("a", Hold::Close).await;
    let taken = format!("127.0.0.1:{}", free_port());
    let first = start(&write_config(dir.path(), "first.xml", &[&taken], a, false));
    first.wait_for_async("listener up", 0).await;
    let own = "127.0.0.1:0";
    let file = write_config(dir.path(), "second.xml", &[own], a, true);
    let second = start(&file);
    let admin = second.logged("admin web server up", "url").await;

    // The JSON API: refused, naming the address; nothing changed.
    let response = client()
        .post(format!("{admin}api/v1/services/svc/listeners"))
        .basic_auth(FULL.0, Some(FULL.1))
        .json(&json!({ "listen": taken }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 409, "{body}\n{}", second.log_text());
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&taken) && message.contains("in use"),
        "{body}"
    );
    assert_eq!(listener_count(&admin).await, Some(1));

    // A reload of a file that adds it: refused the same way.
    write_config(dir.path(), "second.xml", &[own, &taken], a, true);
    let skip = second.log_len();
    second.signal("HUP");
    let refused = second.wait_for_async("reload refused", skip).await;
    assert!(refused.contains(&taken), "{refused}");

    // The first instance still serves every client on it.
    still_serves(taken.parse().unwrap()).await;
}

/// A socket of "another program" listening on `[::]:PORT` for IPv6 only
/// (IPV6_V6ONLY), on a port whose IPv4 side is free.
fn ipv6_only_listener() -> (socket2::Socket, u16) {
    use socket2::{Domain, Socket, Type};
    for _ in 0..20 {
        let socket = Socket::new(Domain::IPV6, Type::STREAM, None).unwrap();
        socket.set_only_v6(true).unwrap();
        let any: SocketAddr = "[::]:0".parse().unwrap();
        socket.bind(&any.into()).unwrap();
        socket.listen(16).unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return (socket, port);
        }
    }
    panic!("no port free on IPv4 beside an IPv6-only one");
}

#[tokio::test]
async fn every_address_is_refused_when_another_program_holds_its_ipv6_side() {
    let dir = tempfile::tempdir().unwrap();
    let a = named_backend("a", Hold::Close).await;
    let (_other, port) = ipv6_only_listener();
    // Every way of writing "every address", with SO_REUSEPORT (two workers)
    // and without (one).
    for (form, workers) in [("*", 2), ("[::]", 2), ("0.0.0.0", 2), ("*", 1)] {
        let listen = format!("{form}:{port}");
        let mut txlb = Txlb::start_workers(
            &write_config(dir.path(), "every.xml", &[&listen], a, false),
            1,
            workers,
        );
        let refused = txlb.refused("cannot listen on").await;
        assert!(
            refused.contains(&format!("cannot listen on *:{port}"))
                && refused.contains("in use by another program"),
            "{listen} with {workers} worker(s):\n{refused}"
        );
    }
}

#[tokio::test]
async fn every_address_added_live_is_refused_when_another_program_holds_its_ipv6_side() {
    let dir = tempfile::tempdir().unwrap();
    let a = named_backend("a", Hold::Close).await;
    let (_other, port) = ipv6_only_listener();
    let own = "127.0.0.1:0";
    let txlb = start(&write_config(dir.path(), "own.xml", &[own], a, true));
    let admin = txlb.logged("admin web server up", "url").await;
    // The legacy API, as txLoadBalancer's scripts call it.
    let (status, text) = get_as(
        &admin,
        FULL,
        &format!("addListener?service=svc&listen=*:{port}"),
    )
    .await;
    assert_eq!(status, 409, "{text}\n{}", txlb.log_text());
    assert!(
        text.contains(&format!("*:{port}")) && text.contains("in use"),
        "{text}"
    );
    assert_eq!(listener_count(&admin).await, Some(1));
    // Nothing of txlb's listens on the port's IPv4 side.
    assert!(TcpListener::bind(("0.0.0.0", port)).is_ok());
}

#[tokio::test]
async fn an_admin_plane_on_every_address_is_refused_when_another_program_holds_its_ipv6_side() {
    let dir = tempfile::tempdir().unwrap();
    let a = named_backend("a", Hold::Close).await;
    let (_other, port) = ipv6_only_listener();
    let file = write_config(dir.path(), "admin.xml", &["127.0.0.1:0"], a, true);
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("127.0.0.1:0\" enable", &format!("*:{port}\" enable")),
    )
    .unwrap();
    let mut txlb = start(&file);
    let refused = txlb.refused("cannot listen on").await;
    assert!(
        refused.contains(&format!("*:{port}")) && refused.contains("in use"),
        "{refused}"
    );
}
