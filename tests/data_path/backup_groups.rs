//! Backup groups end to end: real backends on loopback that are killed and
//! brought back, the balancer failing over to its backup group and back, and the
//! state shown in the stats, the events, `/metrics`, `running.txt` and the page.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use txlb::admin::AdminSettings;
use txlb::config::{AdminConfig, GroupConfig, GroupOptions, ManagerTask};
use txlb::events::Event;
use txlb::scheduler::SchedulerKind;
use txlb::{Command, ControlError};

use common::admin::{Admin, users};
use common::{config, eventually, host, which_backend};

/// A backend that sends `NAME\n` and closes, until it is killed.
struct Backend {
    addr: SocketAddr,
    name: &'static str,
    task: JoinHandle<()>,
}

impl Backend {
    async fn start(name: &'static str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Backend::serve(name, listener)
    }

    fn serve(name: &'static str, listener: TcpListener) -> Backend {
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = stream.write_all(format!("{name}\n").as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Backend { addr, name, task }
    }

    /// Closes the listening socket: connections are refused from now on.
    async fn kill(&self) {
        self.task.abort();
        let aborted = eventually(Duration::from_secs(5), || async {
            tokio::net::TcpStream::connect(self.addr).await.is_err()
        })
        .await;
        assert!(aborted, "{} still accepts", self.name);
    }

    /// Listens again on the same port.
    async fn revive(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        *self = Backend::serve(self.name, listener);
    }
}

/// The backend names `count` clients reach.
async fn reached(balancer: SocketAddr, count: usize) -> Vec<String> {
    let mut names = Vec::with_capacity(count);
    for _ in 0..count {
        names.push(which_backend(balancer).await.0);
    }
    names
}

fn group(name: &str, hosts: &[&Backend], backup: bool) -> GroupConfig {
    GroupConfig {
        name: name.into(),
        scheduler: SchedulerKind::RoundRobin,
        hosts: hosts.iter().map(|b| host(b.name, b.addr, 1)).collect(),
        options: GroupOptions {
            backup,
            ..GroupOptions::default()
        },
        check: None,
        agent: None,
    }
}

#[tokio::test]
async fn backup_group_takes_over_when_every_primary_host_dies_and_hands_back() {
    let mut p1 = Backend::start("p1").await;
    let p2 = Backend::start("p2").await;
    let b1 = Backend::start("b1").await;
    let b2 = Backend::start("b2").await;
    let l1 = Backend::start("l1").await;
    let mut cfg = config(SchedulerKind::RoundRobin, Vec::new());
    cfg.services[0].groups = vec![
        group("g", &[&p1, &p2], false),
        // A plain standby group between them is never used automatically.
        group("standby", &[&l1], false),
        group("spare", &[&b1, &b2], true),
        group("last", &[&l1], true),
    ];
    // hostCheck re-probes bad hosts every 100 ms; no heartbeat: a host goes bad
    // when a client fails on it.
    cfg.manager.host_check = ManagerTask {
        enable: true,
        interval: Duration::from_millis(100),
    };
    cfg.admin = Some(AdminConfig {
        web: None,
        ssh: None,
        users: users(),
    });
    let admin = Admin::start(cfg, AdminSettings::default()).await;
    let lb = admin.listener();
    let mut events = admin.handle.events();

    // Healthy: only the enabled group serves.
    let names = reached(lb, 4).await;
    assert!(names.iter().all(|n| n == "p1" || n == "p2"), "{names:?}");
    let stats = admin.handle.stats();
    assert!(!stats.services[0].on_backup);
    assert_eq!(stats.services[0].serving_group.as_deref(), Some("g"));
    let (_, metrics) = admin.get("/metrics").await;
    assert!(
        metrics.contains("txlb_service_on_backup{service=\"svc\"} 0"),
        "{metrics}"
    );

    // Every primary host dies: clients fail over to the backup group without
    // noticing, and the backup group's own hosts share them.
    p1.kill().await;
    p2.kill().await;
    let names = reached(lb, 6).await;
    assert!(
        names.iter().all(|n| n == "b1" || n == "b2"),
        "backup group serves: {names:?}"
    );
    assert!(names.contains(&"b1".to_string()) && names.contains(&"b2".to_string()));
    let stats = admin.handle.stats();
    let svc = &stats.services[0];
    assert!(svc.on_backup);
    assert_eq!(svc.serving_group.as_deref(), Some("spare"));
    assert_eq!(svc.enabled_group, "g", "the enabled group does not change");
    assert!(svc.groups[2].backup && !svc.groups[0].backup);
    assert_eq!(svc.counters.no_host, 0, "no client was turned away");

    // Every view says so.
    let (_, metrics) = admin.get("/metrics").await;
    assert!(
        metrics.contains("txlb_service_on_backup{service=\"svc\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("txlb_group_serving{service=\"svc\",group=\"spare\"} 1"),
        "{metrics}"
    );
    let (_, api) = admin.get("/api/v1/services/svc").await;
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    assert_eq!(api["on_backup"], true, "{api}");
    assert_eq!(api["serving_group"], "spare", "{api}");
    let (_, text) = admin.get("/running.txt").await;
    assert!(
        text.contains("service svc enabled=g on_backup=true serving=spare"),
        "{text}"
    );
    assert!(text.contains("  group spare scheduler=roundr enabled=false backup=true"));
    let (_, page) = admin.get("/running").await;
    assert!(page.contains("on backup: spare"), "{page}");

    // The switch was told once.
    let active = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = events.next().await {
            if let Ok(event @ Event::BackupActive { .. }) = event {
                return event;
            }
        }
        panic!("event stream ended");
    })
    .await
    .expect("a backup-active event");
    assert_eq!(
        active,
        Event::BackupActive {
            service: "svc".into(),
            group: "spare".into()
        }
    );

    // The first backup group dies too: the next one, in configuration order,
    // takes over (failing over within and across backup groups).
    b1.kill().await;
    b2.kill().await;
    let names = reached(lb, 3).await;
    assert_eq!(names, ["l1", "l1", "l1"]);
    assert_eq!(
        admin.handle.stats().services[0].serving_group.as_deref(),
        Some("last")
    );

    // One primary host comes back: hostCheck puts it back and traffic returns
    // to the enabled group.
    p1.revive().await;
    let back = eventually(Duration::from_secs(5), || async {
        !admin.handle.stats().services[0].on_backup
    })
    .await;
    assert!(back, "the enabled group serves again");
    assert_eq!(reached(lb, 4).await, ["p1", "p1", "p1", "p1"]);
    let (_, metrics) = admin.get("/metrics").await;
    assert!(
        metrics.contains("txlb_service_on_backup{service=\"svc\"} 0"),
        "{metrics}"
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = events.next().await {
            if let Ok(event @ Event::BackupEnded { .. }) = event {
                return event;
            }
        }
        panic!("event stream ended");
    })
    .await
    .expect("a backup-ended event");
    assert_eq!(
        ended,
        Event::BackupEnded {
            service: "svc".into(),
            group: Some("g".into())
        }
    );
    admin.handle.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn admin_down_primaries_hand_over_to_the_backup_and_a_backup_cannot_be_enabled() {
    let p1 = Backend::start("p1").await;
    let b1 = Backend::start("b1").await;
    let mut cfg = config(SchedulerKind::RoundRobin, Vec::new());
    cfg.services[0].groups = vec![group("g", &[&p1], false), group("spare", &[&b1], true)];
    let handle = txlb::Balancer::start(cfg.clone()).await.unwrap();
    let lb = handle.local_addr("svc", None).unwrap();
    assert_eq!(reached(lb, 2).await, ["p1", "p1"]);

    // Draining (admin-down) the last primary host is, for new clients, the same
    // as losing it: the backup group serves, as HAProxy's backup servers do.
    handle.drain_host("svc", "g", "p1", None).await.unwrap();
    assert_eq!(reached(lb, 2).await, ["b1", "b1"]);
    assert!(handle.stats().services[0].on_backup);
    handle
        .apply(Command::SetAdminDown {
            service: "svc".into(),
            group: "g".into(),
            host: "p1".into(),
            down: false,
        })
        .await
        .unwrap();
    assert_eq!(reached(lb, 2).await, ["p1", "p1"]);

    // A backup group cannot become the enabled group, by command or by reload.
    let refused = handle
        .apply(Command::EnableGroup {
            service: "svc".into(),
            group: "spare".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ControlError::BackupGroupEnabled { .. }),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("is a backup group"),
        "{refused}"
    );
    let mut both = cfg.clone();
    both.services[0].groups[0].options.backup = true;
    let refused = handle
        .apply(Command::Replace(Box::new(both)))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ControlError::BackupGroupEnabled { .. }),
        "{refused}"
    );
    assert_eq!(handle.config().services[0].enabled_group, "g");

    // Write-back keeps the attribute.
    let xml = handle.config().to_xml();
    assert!(
        xml.contains("<group name=\"spare\" scheduler=\"roundr\" backup=\"true\">"),
        "{xml}"
    );
    let toml = handle.config().to_toml();
    assert!(toml.contains("backup = true"), "{toml}");
    handle.shutdown(Duration::from_secs(1)).await;
}
