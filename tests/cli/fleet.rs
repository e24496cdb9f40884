//! Fleet mode end to end: a real etcd (Debian's `etcd-server`, started here on
//! loopback ports with a temporary data directory) and real `txlb run`
//! children sharing their configuration through it. Every wait is bounded.
//!
//! Without `/usr/bin/etcd` (or `etcd` on PATH) each test prints why and skips;
//! `scripts/test.sh` installs it.

use crate::common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::admin::{FULL, client};
use common::binary::Txlb;
use common::etcd::{Etcd, etcd_binary};
use common::*;
use serde_json::{Value, json};

const PREFIX: &str = "/txlb/test";

macro_rules! etcd_or_skip {
    () => {
        match etcd_binary() {
            Some(binary) => binary,
            None => {
                eprintln!(
                    "SKIPPED: etcd is not installed (Debian: apt-get install etcd-server; \
                     scripts/test.sh does)"
                );
                return;
            }
        }
    };
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A configuration of service `svc` over `hosts` (round robin), the admin web
/// server on 127.0.0.1:0 with the test users, and `<cluster>` naming `name`.
fn xml(etcd: &str, name: &str, hosts: &[(&str, SocketAddr)]) -> String {
    let hosts = common::host_lines(hosts);
    let users: String = common::admin::user_lines();
    format!(
        "<config>\n  <service name=\"svc\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
         <group name=\"g\" scheduler=\"roundr\" enable=\"true\">\n{hosts}    </group>\n  </service>\n  \
         <admin>\n    <web listen=\"127.0.0.1:0\" enable=\"true\"/>\n{users}  </admin>\n  \
         <cluster etcd=\"{etcd}\" prefix=\"{PREFIX}\" name=\"{name}\"/>\n</config>\n"
    )
}

/// `txlb fleet push --config FILE`: its output, and whether it succeeded.
fn push(file: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_txlb"))
        .args(["fleet", "push", "--config"])
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// One running instance: the process, its admin URL and its listener.
struct Instance {
    txlb: Txlb,
    admin: String,
    listener: SocketAddr,
}

impl Instance {
    async fn start(file: &Path) -> Instance {
        let txlb = Txlb::start(file, 1);
        let admin = txlb
            .logged("admin web server up", "url")
            .await
            .trim_end_matches('/')
            .to_string();
        let listener = txlb.logged("listener up", "local").await.parse().unwrap();
        Instance {
            txlb,
            admin,
            listener,
        }
    }

    /// A JSON API call as the full user: status and body.
    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = client()
            .request(method, format!("{}{path}", self.admin))
            .basic_auth(FULL.0, Some(FULL.1));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn add_host(&self, name: &str, addr: SocketAddr) -> (u16, Value) {
        self.api(
            reqwest::Method::POST,
            "/api/v1/services/svc/groups/g/hosts",
            Some(json!({ "name": name, "ip": addr.to_string() })),
        )
        .await
    }

    async fn fleet(&self) -> Value {
        self.api(reqwest::Method::GET, "/api/v1/fleet", None)
            .await
            .1
    }

    /// Whether a connection through this instance reaches backend `name` within
    /// `within` (round robin: a few connections see every host).
    async fn reaches(&self, name: &str, within: Duration) -> bool {
        let listener = self.listener;
        eventually(within, || async move {
            match tokio::time::timeout(Duration::from_millis(500), which_backend(listener)).await {
                Ok((seen, _)) => seen == name,
                Err(_) => false,
            }
        })
        .await
    }
}

/// etcd, and a configuration file per instance name pushed to it: `a` serves
/// through host `a`.
struct Fleet {
    etcd: Etcd,
    dir: tempfile::TempDir,
    a: SocketAddr,
}

impl Fleet {
    async fn start(binary: PathBuf) -> Fleet {
        let etcd = Etcd::start(binary);
        let a = named_backend("a", Hold::Close).await;
        let fleet = Fleet {
            etcd,
            dir: tempfile::tempdir().unwrap(),
            a,
        };
        let (ok, out) = push(&fleet.file("seed"));
        assert!(ok, "{out}");
        fleet
    }

    /// The configuration file of instance `name` (written on first use).
    fn file(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.xml"));
        if !path.exists() {
            std::fs::write(&path, xml(&self.etcd.url(), name, &[("a", self.a)])).unwrap();
        }
        path
    }
}

#[tokio::test]
async fn fleet_push_seeds_etcd_and_running_instances_follow() {
    let binary = etcd_or_skip!();
    let fleet = Fleet::start(binary).await;
    // An instance whose own file lists host `a` only serves the pushed config.
    let b = named_backend("b", Hold::Close).await;
    let lb1 = Instance::start(&fleet.file("lb1")).await;
    assert!(lb1.reaches("a", Duration::from_secs(5)).await);
    // Push a file with host `b` instead: the running instance follows.
    let other = fleet.dir.path().join("other.xml");
    std::fs::write(&other, xml(&fleet.etcd.url(), "seed", &[("b", b)])).unwrap();
    let (ok, out) = push(&other);
    assert!(ok && out.contains("pushed to the fleet"), "{out}");
    assert!(
        lb1.reaches("b", Duration::from_secs(2)).await,
        "{}",
        lb1.txlb.log_text()
    );
    // A file without <cluster> is refused with a clear message.
    let plain = fleet.dir.path().join("plain.xml");
    let text = std::fs::read_to_string(&other).unwrap();
    let start = text.find("  <cluster").unwrap();
    let end = text[start..].find('\n').unwrap() + start + 1;
    std::fs::write(&plain, format!("{}{}", &text[..start], &text[end..])).unwrap();
    let (ok, out) = push(&plain);
    assert!(!ok && out.contains("no <cluster> element"), "{out}");
    // etcd unreachable: a clear error, not a hang.
    let mut etcd_gone = fleet.etcd;
    etcd_gone.stop();
    let (ok, out) = push(&other);
    assert!(!ok && out.contains("etcd unreachable"), "{out}");
}

#[tokio::test]
async fn host_added_on_one_instance_serves_through_another_within_a_second() {
    let binary = etcd_or_skip!();
    let fleet = Fleet::start(binary).await;
    let lb1 = Instance::start(&fleet.file("lb1")).await;
    let lb2 = Instance::start(&fleet.file("lb2")).await;
    let b = named_backend("b", Hold::Close).await;
    let (status, body) = lb1.add_host("b", b).await;
    assert_eq!(status, 201, "{body}");
    let added = Instant::now();
    assert!(
        lb2.reaches("b", Duration::from_secs(1)).await,
        "lb2 did not serve the new host within 1 s:\n{}",
        lb2.txlb.log_text()
    );
    assert!(added.elapsed() < Duration::from_millis(1500));
    // Both instances show up in the fleet view, with the same revision.
    let ok = eventually(Duration::from_secs(5), || async {
        let view = lb2.fleet().await;
        let names: Vec<&str> = view["instances"]
            .as_array()
            .map(|a| a.iter().filter_map(|i| i["name"].as_str()).collect())
            .unwrap_or_default();
        view["reachable"] == true && names.contains(&"lb1") && names.contains(&"lb2")
    })
    .await;
    assert!(ok, "{}", lb2.fleet().await);
    let (v1, v2) = (lb1.fleet().await, lb2.fleet().await);
    assert_eq!(v1["revision"], v2["revision"], "{v1} {v2}");
    // A host one instance sees bad is listed with who sees it so.
    let gone = closed_port();
    let (status, body) = lb1.add_host("gone", gone).await;
    assert_eq!(status, 201, "{body}");
    // Clients of lb2 keep coming until lb2 has the new host, tries it, sees it
    // bad and publishes that (a fixed number of clients could all come before
    // the host reached lb2).
    let ok = eventually(Duration::from_secs(10), || async {
        let _ = tokio::time::timeout(Duration::from_millis(500), which_backend(lb2.listener)).await;
        let view = lb1.fleet().await;
        view["hosts_down"]
            .as_array()
            .is_some_and(|hosts| hosts.iter().any(|h| h["host"] == "gone"))
    })
    .await;
    assert!(ok, "{}", lb1.fleet().await);
    // The admin page shows the fleet.
    let page = client()
        .get(format!("{}/", lb1.admin))
        .basic_auth(FULL.0, Some(FULL.1))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Fleet") && page.contains("lb2"), "{page}");
}

#[tokio::test]
async fn concurrent_conflicting_edits_one_succeeds_one_conflicts() {
    let binary = etcd_or_skip!();
    let fleet = Fleet::start(binary).await;
    let lb1 = Instance::start(&fleet.file("lb1")).await;
    let lb2 = Instance::start(&fleet.file("lb2")).await;
    let x = named_backend("x1", Hold::Close).await;
    let y = named_backend("x2", Hold::Close).await;
    // The same new host name, with a different address on each instance, at
    // the same time: exactly one wins.
    let ((s1, b1), (s2, b2)) = tokio::join!(lb1.add_host("x", x), lb2.add_host("x", y));
    let mut statuses = [s1, s2];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409], "{b1} {b2}");
    let loser = if s1 == 409 { &b1 } else { &b2 };
    assert_eq!(loser["error"]["code"], "conflict", "{loser}");
    eprintln!("conflict answer: {loser}");
    // Both instances end up with the winner's address.
    let winner = if s1 == 201 { "x1" } else { "x2" };
    for lb in [&lb1, &lb2] {
        let ok = eventually(Duration::from_secs(2), || async {
            let (_, host) = lb
                .api(
                    reqwest::Method::GET,
                    "/api/v1/services/svc/groups/g/hosts/x",
                    None,
                )
                .await;
            let expected = if winner == "x1" { x } else { y };
            host["address"] == expected.to_string()
        })
        .await;
        assert!(ok, "{}", lb.txlb.log_text());
    }
}

/// Names of the hosts of group `g` as an instance runs them.
async fn host_names(lb: &Instance) -> Vec<String> {
    let (_, hosts) = lb
        .api(
            reqwest::Method::GET,
            "/api/v1/services/svc/groups/g/hosts",
            None,
        )
        .await;
    let mut names: Vec<String> = hosts
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| Some(h["name"].as_str()?.to_string()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn bursts_of_edits_on_two_instances_never_overwrite_each_other() {
    let binary = etcd_or_skip!();
    let fleet = Fleet::start(binary).await;
    let lb1 = Instance::start(&fleet.file("lb1")).await;
    let lb2 = Instance::start(&fleet.file("lb2")).await;
    let backend = named_backend("n", Hold::Close).await;
    let mut expected = vec!["a".to_string()];
    let mut compare_and_swap_conflicts = 0;
    // Different hosts added on both instances at once: each write is based on
    // what its instance saw, so some lose the compare-and-swap. Every success
    // must stay, every refusal must leave nothing behind.
    for round in 0..5 {
        let adds = (0..8).map(|i| {
            let (lb, name) = if i % 2 == 0 {
                (&lb1, format!("r{round}-lb1-{i}"))
            } else {
                (&lb2, format!("r{round}-lb2-{i}"))
            };
            async move { (name.clone(), lb.add_host(&name, backend).await) }
        });
        for (name, (status, body)) in futures_join_all(adds).await {
            match status {
                201 => expected.push(name),
                409 => {
                    let message = body["error"]["message"].as_str().unwrap_or_default();
                    assert!(message.contains("changed elsewhere"), "{body}");
                    compare_and_swap_conflicts += 1;
                }
                other => panic!("{name}: {other} {body}"),
            }
        }
        expected.sort();
        for lb in [&lb1, &lb2] {
            let same = eventually(Duration::from_secs(2), || async {
                host_names(lb).await == expected
            })
            .await;
            assert!(same, "{:?} vs {expected:?}", host_names(lb).await);
        }
        if compare_and_swap_conflicts > 0 {
            break;
        }
    }
    assert!(
        compare_and_swap_conflicts > 0,
        "no write ever raced another"
    );
}

/// Runs futures concurrently on this task, outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in set.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.unwrap()).collect()
}

#[tokio::test]
async fn etcd_away_instances_keep_serving_and_changes_flow_again_when_back() {
    let binary = etcd_or_skip!();
    let mut fleet = Fleet::start(binary).await;
    let lb1 = Instance::start(&fleet.file("lb1")).await;
    let mut lb2 = Instance::start(&fleet.file("lb2")).await;
    let b = named_backend("b", Hold::Close).await;
    let (status, body) = lb1.add_host("b", b).await;
    assert_eq!(status, 201, "{body}");
    assert!(lb2.reaches("b", Duration::from_secs(1)).await);

    // etcd goes away: both keep serving their last configuration.
    fleet.etcd.stop();
    lb1.txlb.wait_for_async("fleet: lost the watch", 0).await;
    lb2.txlb.wait_for_async("fleet: lost the watch", 0).await;
    for lb in [&lb1, &lb2] {
        assert!(lb.reaches("a", Duration::from_secs(2)).await);
        assert!(lb.reaches("b", Duration::from_secs(2)).await);
    }
    // A change is refused, clearly, and nothing changes locally.
    let c = named_backend("c", Hold::Close).await;
    let (status, body) = lb1.add_host("c", c).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("etcd cannot be reached")),
        "{body}"
    );
    let (status, _) = lb1
        .api(
            reqwest::Method::GET,
            "/api/v1/services/svc/groups/g/hosts/c",
            None,
        )
        .await;
    assert_eq!(status, 404);
    // The legacy API says so in its error line too.
    let legacy = client()
        .get(format!(
            "{}/addHost?service=svc&group=g&name=c&ip={c}",
            lb1.admin
        ))
        .basic_auth(FULL.0, Some(FULL.1))
        .send()
        .await
        .unwrap();
    assert_eq!(legacy.status().as_u16(), 503);
    assert!(
        legacy
            .text()
            .await
            .unwrap()
            .contains("etcd cannot be reached")
    );

    // A restarted instance, etcd still away, serves the fleet's configuration
    // from its cache (its own file does not list `b`).
    lb2.txlb.terminate();
    let file = fleet.file("lb2");
    assert!(file.with_file_name("lb2.xml.fleet-cache").exists());
    lb2 = Instance::start(&file).await;
    lb2.txlb
        .wait_for_async("serving the last configuration from etcd (cached)", 0)
        .await;
    assert!(
        lb2.reaches("b", Duration::from_secs(2)).await,
        "{}",
        lb2.txlb.log_text()
    );

    // etcd comes back: changes flow again.
    fleet.etcd.resume();
    let back = eventually(Duration::from_secs(15), || async {
        lb1.add_host("c", c).await.0 == 201
    })
    .await;
    assert!(back, "{}", lb1.txlb.log_text());
    assert!(
        lb2.reaches("c", Duration::from_secs(10)).await,
        "{}",
        lb2.txlb.log_text()
    );
}

/// `GET path` on an instance's admin as the full user: status and text.
async fn get_text(lb: &Instance, path: &str) -> (u16, String) {
    let response = client()
        .get(format!("{}{path}", lb.admin))
        .basic_auth(FULL.0, Some(FULL.1))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Addresses of service `svc`'s listeners as an instance runs them.
async fn listener_addresses(lb: &Instance) -> Vec<String> {
    let (_, listeners) = lb
        .api(reqwest::Method::GET, "/api/v1/services/svc/listeners", None)
        .await;
    listeners
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| Some(l["configured"].as_str()?.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn an_instance_that_cannot_apply_the_fleets_change_is_out_of_step_and_cannot_undo_it() {
    let binary = etcd_or_skip!();
    let fleet = Fleet::start(binary).await;
    let lb1 = Instance::start(&fleet.file("lb1")).await;
    let lb2 = Instance::start(&fleet.file("lb2")).await;
    let before = lb1.fleet().await["revision"].as_i64().unwrap();
    assert!(before > 0);
    assert_eq!(lb2.fleet().await["revision"], before);

    // lb2 adds a listener. Both instances run on this machine, so whichever
    // binds the port first runs the fleet's new configuration and on the other
    // the port is taken: usually lb2 (its own change) wins, and lb1 is stuck.
    let listen = format!("127.0.0.1:{}", free_port());
    let (status, body) = lb2
        .api(
            reqwest::Method::POST,
            "/api/v1/services/svc/listeners",
            Some(json!({ "listen": listen })),
        )
        .await;
    let ((fine, _), (stuck, stuck_name)) = if status == 201 {
        ((&lb2, "lb2"), (&lb1, "lb1"))
    } else {
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("saved in the fleet"), "{status} {body}");
        ((&lb1, "lb1"), (&lb2, "lb2"))
    };

    // The stuck one runs, and says it runs, the revision it applied; it is out
    // of step, with the reason, on the API ...
    let out = eventually(Duration::from_secs(5), || async {
        stuck.fleet().await["in_step"] == false
    })
    .await;
    assert!(out, "{}\n{}", stuck.fleet().await, stuck.txlb.log_text());
    let view = stuck.fleet().await;
    assert_eq!(view["revision"], before, "{view}");
    let latest = view["latest_revision"].as_i64().unwrap_or_default();
    assert!(latest > before, "{view}");
    let reason = view["out_of_step"].as_str().unwrap_or_default();
    assert!(reason.contains(&listen), "{view}");
    assert!(!listener_addresses(stuck).await.contains(&listen));
    assert!(listener_addresses(fine).await.contains(&listen));
    // ... in the log, as an event ...
    let line = stuck.txlb.wait_for_async("fleet: out of step", 0).await;
    assert!(line.contains(&listen), "{line}");
    // ... on /metrics ...
    let (_, metrics) = get_text(stuck, "/metrics").await;
    for expected in [
        "txlb_fleet_in_step 0".to_string(),
        format!("txlb_fleet_applied_revision {before}"),
        format!("txlb_fleet_latest_revision {latest}"),
    ] {
        assert!(metrics.contains(&expected), "no {expected:?} in\n{metrics}");
    }
    // ... on the page ...
    let (_, page) = get_text(stuck, "/").await;
    assert!(page.contains("out of step"), "{page}");
    // ... and to the other instances.
    let seen = eventually(Duration::from_secs(5), || async {
        fine.fleet().await["instances"]
            .as_array()
            .and_then(|all| all.iter().find(|i| i["name"] == stuck_name).cloned())
            .is_some_and(|i| i["revision"] == before && i["in_step"] == false)
    })
    .await;
    assert!(seen, "{}", fine.fleet().await);
    let (_, metrics) = get_text(fine, "/metrics").await;
    assert!(metrics.contains("txlb_fleet_in_step 1"), "{metrics}");

    // A change made on the stuck one is refused, clearly, and cannot undo the
    // fleet's newer configuration.
    let c = named_backend("c", Hold::Close).await;
    let (status, body) = stuck.add_host("c", c).await;
    assert_eq!(status, 409, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("out of step"), "{body}");
    eprintln!("out-of-step answer: {body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(listener_addresses(fine).await.contains(&listen));
    assert_eq!(host_names(fine).await, ["a"]);
    assert_eq!(host_names(stuck).await, ["a"]);

    // Once the fleet drops the listener, the stuck one catches up and changes
    // flow from it again.
    let (status, body) = fine
        .api(
            reqwest::Method::DELETE,
            &format!("/api/v1/services/svc/listeners/{listen}"),
            None,
        )
        .await;
    assert!(status < 300, "{status} {body}");
    let back = eventually(Duration::from_secs(5), || async {
        let view = stuck.fleet().await;
        view["in_step"] == true && view["revision"] == view["latest_revision"]
    })
    .await;
    assert!(back, "{}\n{}", stuck.fleet().await, stuck.txlb.log_text());
    stuck.txlb.wait_for_async("fleet: back in step", 0).await;
    let (status, body) = stuck.add_host("c", c).await;
    assert_eq!(status, 201, "{body}");
    assert!(fine.reaches("c", Duration::from_secs(2)).await);
}

/// A UDP host on 127.0.0.1 answering each datagram with `name:` then the
/// datagram.
async fn udp_named_host(name: &str) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let prefix = format!("{name}:").into_bytes();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let reply = [&prefix[..], &buf[..n]].concat();
            let _ = socket.send_to(&reply, from).await;
        }
    });
    addr
}

/// The name of the UDP host a new client of `lb` reaches (a new client
/// address: a new session), or nothing within half a second.
async fn udp_reached(lb: SocketAddr) -> Option<String> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(b"ping", lb).await.ok()?;
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    let reply = std::str::from_utf8(&buf[..n]).ok()?;
    let (name, echoed) = reply.split_once(':')?;
    (echoed == "ping").then(|| name.to_string())
}

#[tokio::test]
async fn udp_host_added_on_one_instance_serves_through_another() {
    let binary = etcd_or_skip!();
    let etcd = Etcd::start(binary);
    let dir = tempfile::tempdir().unwrap();
    let ua = udp_named_host("ua").await;
    // The fleet's configuration: one UDP service over host `ua`, round robin
    // (each new client address goes to the next host).
    let file = |name: &str| {
        let text = xml(&etcd.url(), name, &[("ua", ua)]).replace(
            "<service name=\"svc\">",
            "<service name=\"svc\" protocol=\"udp\" sessionTimeout=\"5\">",
        );
        let path = dir.path().join(format!("{name}.xml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let (ok, out) = push(&file("seed"));
    assert!(ok, "{out}");
    let lb1 = Instance::start(&file("lb1")).await;
    let lb2 = Instance::start(&file("lb2")).await;
    assert_eq!(udp_reached(lb2.listener).await.as_deref(), Some("ua"));

    let ub = udp_named_host("ub").await;
    let (status, body) = lb1.add_host("ub", ub).await;
    assert_eq!(status, 201, "{body}");
    // New clients of lb2 reach the host added on lb1, and the first one still.
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    let both = eventually(Duration::from_secs(3), || async {
        if let Some(name) = udp_reached(lb2.listener).await {
            seen.lock().unwrap().insert(name);
        }
        let seen = seen.lock().unwrap();
        seen.contains("ua") && seen.contains("ub")
    })
    .await;
    assert!(
        both,
        "lb2 reached {:?}:\n{}",
        seen.lock().unwrap(),
        lb2.txlb.log_text()
    );
    // lb1 serves it too, and both list it.
    assert!(
        eventually(Duration::from_secs(2), || async {
            udp_reached(lb1.listener).await.as_deref() == Some("ub")
        })
        .await
    );
    assert_eq!(host_names(&lb2).await, ["ua", "ub"]);
}
