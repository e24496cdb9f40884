//! DNS re-resolution end to end: an in-memory name server on 127.0.0.1 (UDP and
//! TCP, an ephemeral port) whose records the tests change while the balancer
//! runs, backends on several loopback addresses (127.0.0.2, .3, .4) sharing one
//! port, and configurations written as an operator would (`<resolver>`,
//! `expand="true"`).

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use txlb::BalancerHandle;
use txlb::config::Config;

pub(super) use common::dns::Zone;
use common::{eventually, which_backend};

/// Longest wait for the balancer to follow a changed record: the TTL, a
/// look-up, a snapshot, with room for a loaded machine.
const FOLLOW: Duration = Duration::from_secs(10);

/// Backends named `names` on 127.0.0.2, 127.0.0.3, … all on one port: each sends
/// `NAME\n`, then echoes what it gets until the client closes.
async fn backends(names: &[&'static str]) -> (u16, Vec<SocketAddr>) {
    'again: loop {
        let first = TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for i in 1..names.len() {
            match TcpListener::bind(SocketAddr::from(([127, 0, 0, 2 + i as u8], port))).await {
                Ok(l) => listeners.push(l),
                Err(_) => continue 'again, // taken there: another port
            }
        }
        let mut addrs = Vec::new();
        for (listener, name) in listeners.into_iter().zip(names.iter().copied()) {
            addrs.push(listener.local_addr().unwrap());
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let _ = stream.write_all(format!("{name}\n").as_bytes()).await;
                        let (mut r, mut w) = stream.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    });
                }
            });
        }
        return (port, addrs);
    }
}

/// Which backends `count` new clients reach (each connection closed at once).
async fn reached(balancer: SocketAddr, count: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..count {
        names.push(which_backend(balancer).await.0);
    }
    names.sort();
    names.dedup();
    names
}

/// The configuration of service `svc`: one group, `hosts` (XML `<host>`
/// elements), the test's name server, answers used for at most a second.
fn config(nameserver: SocketAddr, hosts: &str) -> Config {
    let xml = format!(
        r#"<config>
  <service name="svc" connectTimeout="2">
    <listen ip="127.0.0.1:0"/>
    <group name="g" scheduler="roundr" enable="true">
      {hosts}
    </group>
  </service>
  <manager><hostCheck interval="0.2" enable="true"/></manager>
  <resolver nameserver="{nameserver}" minTtl="0.2" maxTtl="1"/>
</config>"#
    );
    Config::from_xml_str(&xml).unwrap()
}

/// The host names of group `g`, sorted.
fn hosts(handle: &BalancerHandle) -> Vec<String> {
    let mut names: Vec<String> = handle.stats().services[0].groups[0]
        .hosts
        .iter()
        .map(|h| h.name.clone())
        .collect();
    names.sort();
    names
}

/// Sends `text` on an open connection and expects it back.
async fn still_works(stream: &mut TcpStream, text: &str) {
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut back = vec![0u8; text.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("echo within 5 s")
        .unwrap();
    assert_eq!(back, text.as_bytes());
}

#[tokio::test]
async fn a_host_given_by_name_follows_its_record() {
    let zone = Zone::default();
    let nameserver = zone.serve().await;
    let (port, _) = backends(&["a", "b"]).await;
    zone.set("app.test", &["127.0.0.2"]);
    let cfg = config(
        nameserver,
        &format!(r#"<host name="h" ip="app.test:{port}"/>"#),
    );
    let handle = txlb::Balancer::start(cfg).await.unwrap();
    let lb = handle.local_addr("svc", None).unwrap();

    // The name resolves through the configured name server.
    assert_eq!(reached(lb, 3).await, ["a"]);
    let host = handle.stats().host("svc", "g", "h").unwrap().clone();
    assert_eq!(host.address, format!("app.test:{port}"));
    assert_eq!(
        host.stats.resolved,
        Some(SocketAddr::from(([127, 0, 0, 2], port)))
    );
    let (name, mut established) = which_backend(lb).await;
    assert_eq!(name, "a");

    // The record changes: new clients follow within the TTL; the established
    // connection is not disturbed.
    zone.set("app.test", &["127.0.0.3"]);
    let followed = eventually(FOLLOW, || async { reached(lb, 1).await == ["b"] }).await;
    assert!(followed, "traffic follows the record");
    assert_eq!(reached(lb, 3).await, ["b"]);
    still_works(&mut established, "still there").await;

    // Two addresses, the current one among them: the host stays where it is
    // (answers rotate; hosts should not).
    zone.set("app.test", &["127.0.0.2", "127.0.0.3"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(reached(lb, 3).await, ["b"]);

    // A broken name server: the last known address stays in use.
    zone.fail(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(reached(lb, 3).await, ["b"]);
    zone.fail(false);
    zone.set("app.test", &["127.0.0.2"]);
    let back = eventually(FOLLOW, || async { reached(lb, 1).await == ["a"] }).await;
    assert!(back, "look-ups resume once the name server answers");
    handle.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_host_added_by_name_follows_its_record() {
    // An added host's name joins the names followed without a walk over the
    // other hosts: it must still be followed.
    let zone = Zone::default();
    let nameserver = zone.serve().await;
    let (port, _) = backends(&["a", "b"]).await;
    zone.set("added.test", &["127.0.0.2"]);
    let cfg = config(nameserver, r#"<host name="h" ip="127.0.0.1:9"/>"#);
    let handle = txlb::Balancer::start(cfg).await.unwrap();
    let lb = handle.local_addr("svc", None).unwrap();
    let mut host = common::host("named", ([127, 0, 0, 2], port).into(), 1);
    host.address.host = "added.test".into();
    handle
        .apply(txlb::Command::AddHost {
            service: "svc".into(),
            group: "g".into(),
            host,
        })
        .await
        .unwrap();
    handle
        .apply(txlb::Command::RemoveHost {
            service: "svc".into(),
            group: "g".into(),
            host: "h".into(),
        })
        .await
        .unwrap();
    assert_eq!(reached(lb, 3).await, ["a"]);
    zone.set("added.test", &["127.0.0.3"]);
    let followed = eventually(FOLLOW, || async { reached(lb, 1).await == ["b"] }).await;
    assert!(followed, "traffic follows the added host's record");
    handle.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_name_that_resolves_later_brings_its_host_up() {
    let zone = Zone::default();
    let nameserver = zone.serve().await;
    let (port, _) = backends(&["a"]).await;
    let cfg = config(
        nameserver,
        &format!(r#"<host name="h" ip="late.test:{port}"/>"#),
    );
    let handle = txlb::Balancer::start(cfg).await.unwrap();
    let host = handle.stats().host("svc", "g", "h").unwrap().clone();
    let bad = host
        .stats
        .bad
        .expect("a name that does not resolve starts bad");
    assert!(bad.reason.contains("late.test"), "{}", bad.reason);

    zone.set("late.test", &["127.0.0.2"]);
    let up = eventually(FOLLOW, || async {
        handle
            .stats()
            .host("svc", "g", "h")
            .unwrap()
            .stats
            .bad
            .is_none()
    })
    .await;
    assert!(up, "the host comes up once its name resolves");
    let lb = handle.local_addr("svc", None).unwrap();
    assert_eq!(reached(lb, 2).await, ["a"]);
    handle.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn expand_gives_one_host_per_address_as_the_record_changes() {
    let zone = Zone::default();
    let nameserver = zone.serve().await;
    let (port, _) = backends(&["a", "b", "c"]).await;
    zone.set("pool.test", &["127.0.0.2", "127.0.0.3"]);
    let cfg = config(
        nameserver,
        &format!(r#"<host name="web" ip="pool.test:{port}" expand="true" weight="2"/>"#),
    );
    let handle = txlb::Balancer::start(cfg).await.unwrap();
    let lb = handle.local_addr("svc", None).unwrap();

    // Two addresses: two hosts, both serving.
    assert_eq!(hosts(&handle), ["web@127.0.0.2", "web@127.0.0.3"]);
    let entry = handle
        .stats()
        .host("svc", "g", "web@127.0.0.3")
        .unwrap()
        .clone();
    assert_eq!(entry.address, format!("127.0.0.3:{port}"));
    assert_eq!(entry.weight, 2, "each host has the configured weight");
    assert_eq!(reached(lb, 4).await, ["a", "b"]);
    let (name, on_a) = which_backend(lb).await;
    let mut on_a = if name == "a" {
        on_a
    } else {
        drop(on_a);
        which_backend(lb).await.1
    };

    // Three: a third host joins.
    zone.set("pool.test", &["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    let three = eventually(FOLLOW, || async { hosts(&handle).len() == 3 }).await;
    assert!(three, "{:?}", hosts(&handle));
    assert_eq!(
        hosts(&handle),
        ["web@127.0.0.2", "web@127.0.0.3", "web@127.0.0.4"]
    );
    assert_eq!(reached(lb, 6).await, ["a", "b", "c"]);

    // One: the others leave; the one with an open connection drains visibly,
    // and that connection goes on.
    zone.set("pool.test", &["127.0.0.4"]);
    let one = eventually(FOLLOW, || async { hosts(&handle) == ["web@127.0.0.4"] }).await;
    assert!(one, "{:?}", hosts(&handle));
    assert_eq!(reached(lb, 3).await, ["c"]);
    let stats = handle.stats();
    let draining: Vec<&str> = stats.services[0].groups[0]
        .draining
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(draining, ["web@127.0.0.2"]);
    still_works(&mut on_a, "draining but alive").await;

    // The configuration keeps the one host as written.
    let running = handle.config();
    let written = &running.services[0].groups[0].hosts;
    assert_eq!(written.len(), 1);
    assert!(written[0].options.expand);
    assert!(running.to_xml().contains(&format!(
        r#"<host name="web" ip="pool.test:{port}" weight="2" expand="true"/>"#
    )));
    handle.shutdown(Duration::from_secs(1)).await;
}

/// `txlb check` asks the configured name server: a name only it knows is no
/// warning, one it does not know is.
#[tokio::test]
async fn txlb_check_resolves_with_the_configured_name_server() {
    let zone = Zone::default();
    zone.set("app.test", &["127.0.0.2", "127.0.0.3"]);
    let nameserver = zone.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    let text = format!(
        r#"<config>
  <service name="svc">
    <listen ip="127.0.0.1:0"/>
    <group name="g" enable="true">
      <host name="known" ip="app.test:80"/>
      <host name="unknown" ip="nowhere.test:80"/>
    </group>
  </service>
  <resolver nameserver="{nameserver}"/>
</config>"#
    );
    std::fs::write(&path, text).unwrap();
    let config = Config::from_path(&path).unwrap();
    let known = txlb::config::parse_host_address("app.test:80").unwrap();
    assert_eq!(
        config.resolve_host(&known).await.unwrap(),
        [
            "127.0.0.2:80".parse::<SocketAddr>().unwrap(),
            "127.0.0.3:80".parse().unwrap()
        ]
    );
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_txlb"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
            .to_string()
    };
    assert!(!line("known").contains("warning"), "{stdout}");
    assert!(line("unknown").contains("warning"), "{stdout}");
    assert!(stdout.contains("1 warning(s)"), "{stdout}");
}
