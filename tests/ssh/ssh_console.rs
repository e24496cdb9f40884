//! The SSH console through the real OpenSSH client: every command family in exec
//! mode checked against the balancer's own view, read-only keys refused every
//! change, wrong keys and passwords refused (passwords through an in-process
//! russh client), and an interactive session through a pty that takes a host
//! down and sees traffic avoid it.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::admin::{FULL, READONLY, two_group_config};
use common::ssh::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use txlb::BalancerHandle;
use txlb::HostHealth;
use txlb::config::Access;

/// A balancer (service `svc`, groups `g` with `a`, `b` and `spare` with `s1`, users
/// `admin` and `viewer`) and its SSH console on 127.0.0.1:0.
struct Console {
    handle: BalancerHandle,
    port: u16,
    keys: Keys,
}

impl Console {
    async fn start() -> Console {
        Console::start_with(two_group_config().await).await
    }

    async fn start_with(config: txlb::config::Config) -> Console {
        let handle = txlb::Balancer::start(config).await.unwrap();
        let keys = Keys::new();
        let mut settings =
            txlb::ssh::SshSettings::new(txlb::ssh::load_or_generate_host_key(None).unwrap());
        settings.authorized_keys = Some(keys.authorized.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = txlb::ssh::start(handle.clone(), settings, listener)
            .await
            .unwrap();
        Console {
            port: server.local_addr().port(),
            handle,
            keys,
        }
    }

    /// Only passwords (no key file, no OpenSSH needed): the balancer and the port.
    async fn start_without_keys() -> (BalancerHandle, u16) {
        let handle = txlb::Balancer::start(two_group_config().await)
            .await
            .unwrap();
        let settings =
            txlb::ssh::SshSettings::new(txlb::ssh::load_or_generate_host_key(None).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = txlb::ssh::start(handle.clone(), settings, listener)
            .await
            .unwrap();
        (handle, server.local_addr().port())
    }

    /// Runs `command` with the full key.
    async fn run(&self, command: &str) -> Ran {
        ssh(
            self.port,
            &self.keys.full,
            &self.keys.known_hosts,
            "admin",
            command,
            None,
        )
        .await
    }

    /// Runs `command` with the full key and expects exit status 0.
    async fn ok(&self, command: &str) -> String {
        let ran = self.run(command).await;
        assert_eq!(ran.status, 0, "{command}: {ran:?}");
        assert!(ran.stderr.is_empty(), "{command}: {ran:?}");
        ran.stdout
    }

    /// Runs `command` with the full key and expects `status` and `needle` on stderr.
    async fn fails(&self, command: &str, status: i32, needle: &str) {
        let ran = self.run(command).await;
        assert_eq!(ran.status, status, "{command}: {ran:?}");
        assert!(ran.stderr.contains(needle), "{command}: {ran:?}");
        assert!(ran.stdout.is_empty(), "{command}: {ran:?}");
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_mode_reads_match_the_balancer() {
    if ssh_missing() {
        return;
    }
    let c = Console::start().await;
    let stats = json(&c.ok("show stats --json").await);
    assert_eq!(stats, serde_json::to_value(c.handle.stats()).unwrap());
    let services = json(&c.ok("show services --json").await);
    assert_eq!(
        services,
        serde_json::to_value(c.handle.stats().services).unwrap()
    );
    let hosts = json(&c.ok("show hosts svc g --json").await);
    let names: Vec<&str> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let a = &c.handle.config().services[0].groups[0].hosts[0];
    assert_eq!(hosts[0]["address"], a.address.to_string());
    assert_eq!(hosts[0]["health"], "up");
    assert_eq!(hosts[0]["enabled_group"], true);
    // A host's checks, the same read as the legacy hostCheck call.
    assert_eq!(
        c.ok("show check svc g a").await,
        "OK host a state=up check=none fail_limit=0 ejections=0\n"
    );
    let check = json(&c.ok("show check svc g a --json").await);
    assert_eq!(check["health"], "up");
    assert_eq!(check["ejections"], 0);
    c.fails("show check svc g nope", 1, "nope").await;
    // Tables for people: aligned columns with the names.
    let table = c.ok("show hosts").await;
    assert!(table.starts_with("SERVICE  GROUP"), "{table}");
    assert!(table.contains("spare") && table.contains("s1"), "{table}");
    let table = c.ok("show services").await;
    let local = c.handle.local_addr("svc", None).unwrap();
    assert!(table.contains(&local.to_string()), "{table}");
    assert!(c.ok("show stats").await.contains("svc      g*"));
    let config = json(&c.ok("show config --json").await);
    assert_eq!(config["service"][0]["name"], "svc");
    let xml = c.ok("show config").await;
    assert!(txlb::config::Config::from_xml_str(&xml).is_ok(), "{xml}");
    assert!(c.ok("show config --toml").await.contains("[[service]]"));
    assert_eq!(
        json(&c.ok("show connections --json").await),
        serde_json::json!([])
    );
    let users = json(&c.ok("show users --json").await);
    assert_eq!(users[1]["name"], READONLY.0);
    assert_eq!(users[1]["access"], "readonly");
    assert_eq!(
        json(&c.ok("whoami --json").await),
        serde_json::json!({"name": "admin", "access": "full"})
    );
    assert_eq!(c.ok("show diff").await, "no change since start\n");
    assert!(c.ok("help").await.contains("host down SERVICE GROUP HOST"));
    assert!(c.ok("help host drain").await.contains("SECONDS"));
    // Errors: stderr and the documented exit statuses, nothing on stdout.
    c.fails("show hosts nope", 1, "no service \"nope\"").await;
    c.fails("frobnicate", 2, "unknown command").await;
    c.fails("host down svc g", 2, "usage: host down SERVICE GROUP HOST")
        .await;
    c.fails("show stats --yaml", 2, "unknown flag").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_mode_changes_apply_to_the_balancer() {
    if ssh_missing() {
        return;
    }
    let c = Console::start().await;
    let h = &c.handle;
    let health = |host: &str| h.stats().host("svc", "g", host).map(|e| e.stats.health);
    // host
    let extra = named_backend("x", Hold::Close).await;
    let out = c.ok(&format!("host add svc g x {extra} 3")).await;
    assert!(out.starts_with("OK host x"), "{out}");
    let added = h.config().services[0].groups[0].hosts[2].clone();
    assert_eq!((added.name.as_str(), added.weight), ("x", 3));
    assert_eq!(c.ok("host down svc g x").await, "OK host x is admin-down\n");
    assert_eq!(health("x"), Some(HostHealth::AdminDown));
    c.ok("host up svc g x").await;
    assert_eq!(health("x"), Some(HostHealth::Up));
    assert!(c.ok("host retry svc g x").await.contains("answered"));
    assert!(c.ok("host drain svc g x 1").await.contains("draining"));
    assert_eq!(health("x"), Some(HostHealth::AdminDown));
    c.ok("host del svc g x").await;
    assert!(h.stats().host("svc", "g", "x").is_none());
    c.fails("host del svc g x", 1, "has no host \"x\"").await;
    // group, scheduler
    c.ok("group add svc standby leastc").await;
    let groups = &h.config().services[0].groups;
    assert_eq!(groups[2].name, "standby");
    assert_eq!(groups[2].scheduler.name(), "leastc");
    c.ok("scheduler set svc standby weightr").await;
    assert_eq!(h.config().services[0].groups[2].scheduler.name(), "weightr");
    c.fails("group enable svc standby", 1, "has no hosts").await;
    c.ok("group enable svc spare").await;
    assert_eq!(h.config().services[0].enabled_group, "spare");
    c.ok("group enable svc g").await;
    c.ok("group clear svc spare").await;
    assert!(h.config().services[0].groups[1].hosts.is_empty());
    c.ok("group del svc standby; group del svc spare").await;
    assert_eq!(h.config().services[0].groups.len(), 1);
    c.fails("group del svc g", 1, "enabled group").await;
    // listen, service
    let out = c.ok("listen add svc 127.0.0.2:0").await;
    assert!(out.contains("now also listens on 127.0.0.2:"), "{out}");
    assert_eq!(h.listeners().len(), 2);
    c.ok("listen del svc 127.0.0.2:0").await;
    assert_eq!(h.listeners().len(), 1);
    // A listener with its own PROXY settings.
    c.ok("listen add svc 127.0.0.3:0 acceptProxy=true trustedProxies=10.0.0.0/8,::1")
        .await;
    let added = h.config().services[0].listeners[1].clone();
    assert_eq!(added.options.accept_proxy, Some(true));
    assert_eq!(
        added.options.trusted_proxies.as_ref().map(Vec::len),
        Some(2)
    );
    c.fails(
        "listen add svc 127.0.0.4:0 trustedProxies=10.0.0.0/99",
        2,
        "trustedProxies",
    )
    .await;
    c.fails(
        "listen add svc 127.0.0.4:0 proxy=true",
        2,
        "unknown setting",
    )
    .await;
    c.ok("listen del svc 127.0.0.3:0").await;
    c.ok("service add other 127.0.0.1:0 blue roundr").await;
    let other = h.config().services[1].clone();
    assert_eq!(
        (other.name.as_str(), other.enabled_group.as_str()),
        ("other", "blue")
    );
    c.ok("service del other").await;
    assert_eq!(h.config().services.len(), 1);
    // users: the password is the first line of stdin
    let ran = ssh(
        c.port,
        &c.keys.full,
        &c.keys.known_hosts,
        "admin",
        "user add bob readonly",
        Some("hunter2\n"),
    )
    .await;
    assert_eq!(ran.status, 0, "{ran:?}");
    let bob = h.config().admin.unwrap().users[2].clone();
    assert_eq!((bob.name.as_str(), bob.access), ("bob", Access::ReadOnly));
    assert!(txlb::admin::verify_password("hunter2", &bob.password_hash));
    c.fails("user add bob", 1, "exists already").await;
    c.ok("user del bob").await;
    assert_eq!(h.config().admin.unwrap().users.len(), 2);
    // connections
    let held = named_backend("held", Hold::UntilClientCloses).await;
    c.ok(&format!("host add svc g held {held}")).await;
    c.ok("host down svc g a; host down svc g b").await;
    let (name, _stream) = which_backend(h.local_addr("svc", None).unwrap()).await;
    assert_eq!(name, "held");
    let list = json(&c.ok("show connections --json").await);
    let id = list[0]["id"].as_u64().unwrap();
    assert_eq!(list[0]["host"], "held");
    assert!(c.ok("show connections").await.contains("held"));
    c.ok(&format!("connection close {id}")).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            h.connections(None, None).is_empty()
        })
        .await
    );
    c.fails(&format!("connection close {id}"), 1, "no open connection")
        .await;
    // config and log: no hooks and no file in this balancer
    c.fails("config save", 1, "not set up").await;
    c.fails("config reload", 1, "not started from a file").await;
    assert_eq!(
        c.ok("log reopen").await,
        "OK no log file: logging goes to stderr\n"
    );
    // What changed shows in the diff.
    let diff = c.ok("show diff").await;
    assert!(diff.contains("+") && diff.contains("held"), "{diff}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_key_is_refused_every_change() {
    if ssh_missing() {
        return;
    }
    let c = Console::start().await;
    let before = c.handle.config();
    let ro = |command: String| {
        let keys = &c.keys;
        async move {
            ssh(
                c.port,
                &keys.readonly,
                &keys.known_hosts,
                "ops",
                &command,
                Some("pw\n"),
            )
            .await
        }
    };
    for spec in txlb::ssh::COMMANDS.iter().filter(|s| s.changes) {
        // Plausible arguments for every argument, so only the access is wrong.
        let args: Vec<&str> = spec
            .args
            .iter()
            .take(spec.required)
            .map(|(name, _)| match *name {
                "SERVICE" => "svc",
                "GROUP" => "g",
                "HOST" | "NAME" => "a",
                "ADDRESS" | "LISTEN" => "127.0.0.1:0",
                "SCHEDULER" => "rand",
                "ID" => "1",
                _ => "x",
            })
            .collect();
        let command = format!("{} {}", spec.name(), args.join(" "));
        let ran = ro(command.clone()).await;
        assert_eq!(ran.status, 3, "{command}: {ran:?}");
        assert!(
            ran.stderr.contains("read-only access"),
            "{command}: {ran:?}"
        );
    }
    assert_eq!(c.handle.config(), before);
    assert_eq!(
        c.handle.stats().host("svc", "g", "a").unwrap().stats.health,
        HostHealth::Up
    );
    // Reads are allowed.
    let ran = ro("show stats --json; whoami".into()).await;
    assert_eq!(ran.status, 0, "{ran:?}");
    assert!(ran.stdout.contains("ops (readonly access)"), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_refused() {
    if ssh_missing() {
        return;
    }
    let c = Console::start().await;
    let ran = ssh(
        c.port,
        &c.keys.wrong,
        &c.keys.known_hosts,
        "admin",
        "whoami",
        None,
    )
    .await;
    assert_eq!(ran.status, 255, "{ran:?}");
    assert!(ran.stderr.contains("Permission denied"), "{ran:?}");
    assert!(ran.stdout.is_empty());
    // Removing a key from the file locks it out at once.
    std::fs::write(&c.keys.authorized, "").unwrap();
    let ran = ssh(
        c.port,
        &c.keys.full,
        &c.keys.known_hosts,
        "admin",
        "whoami",
        None,
    )
    .await;
    assert_eq!(ran.status, 255, "{ran:?}");
}

/// A russh client for password logins (OpenSSH only types passwords on a tty).
struct Client;

impl russh::client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Logs in with a password; on success runs `command` and returns its stdout.
async fn password_login(port: u16, user: &str, password: &str, command: &str) -> Option<String> {
    let config = Arc::new(russh::client::Config::default());
    let mut session = russh::client::connect(config, ("127.0.0.1", port), Client)
        .await
        .unwrap();
    let auth = session.authenticate_password(user, password).await.unwrap();
    if !auth.success() {
        return None;
    }
    let mut channel = session.channel_open_session().await.unwrap();
    channel.exec(true, command).await.unwrap();
    let mut out = Vec::new();
    while let Some(msg) = channel.wait().await {
        match msg {
            russh::ChannelMsg::Data { data } => out.extend_from_slice(&data),
            russh::ChannelMsg::Close => break,
            _ => {}
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_of_the_configured_users_and_throttling() {
    let (_handle, port) = Console::start_without_keys().await;
    let out = password_login(port, FULL.0, FULL.1, "whoami").await;
    assert_eq!(out.as_deref(), Some("admin (full access)\n"));
    // The read-only user's DES hash (txLoadBalancer's files) works too.
    let out = password_login(port, READONLY.0, READONLY.1, "whoami").await;
    assert_eq!(out.as_deref(), Some("viewer (readonly access)\n"));
    assert_eq!(password_login(port, FULL.0, "wrong", "whoami").await, None);
    assert_eq!(password_login(port, "nobody", FULL.1, "whoami").await, None);
    // After MAX_FAILURES failures the address is refused even the right password.
    for _ in 2..txlb::admin::MAX_FAILURES {
        assert_eq!(password_login(port, FULL.0, "wrong", "whoami").await, None);
    }
    assert_eq!(password_login(port, FULL.0, FULL.1, "whoami").await, None);
}

/// Issue 19 item 9: a connection that does not log in within the login
/// timeout is closed, and its place among those waiting is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_do_not_log_in_are_closed_at_the_deadline() {
    let handle = txlb::Balancer::start(two_group_config().await)
        .await
        .unwrap();
    let mut settings =
        txlb::ssh::SshSettings::new(txlb::ssh::load_or_generate_host_key(None).unwrap());
    settings.login_timeout = Duration::from_secs(1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = txlb::ssh::start(handle.clone(), settings, listener)
        .await
        .unwrap();
    let port = server.local_addr().port();
    let started = std::time::Instant::now();
    let mut idle = Vec::new();
    for _ in 0..txlb::ssh::MAX_UNAUTHENTICATED_PER_SOURCE {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    for stream in &mut idle {
        let mut buf = [0u8; 256];
        // The version line, then the end once the deadline has passed.
        while tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("closed within 5 s")
            .is_ok_and(|n| n > 0)
        {}
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // The places are free again: a password login works from the same address.
    let out = password_login(port, FULL.0, FULL.1, "whoami").await;
    assert_eq!(out.as_deref(), Some("admin (full access)\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_session_takes_a_host_down_and_traffic_avoids_it() {
    if ssh_missing() {
        return;
    }
    let c = Console::start().await;
    let balancer = c.handle.local_addr("svc", None).unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(which_backend(balancer).await.0);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    let mut child = ssh_session(c.port, &c.keys.full, &c.keys.known_hosts, true);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let screen = Arc::new(Mutex::new(String::new()));
    let sink = screen.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf).await {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let wait_for = |needle: &'static str, after: usize| {
        let screen = screen.clone();
        async move {
            let found = eventually(Duration::from_secs(15), || {
                let screen = screen.clone();
                async move { screen.lock().unwrap()[after..].contains(needle) }
            })
            .await;
            let text = screen.lock().unwrap().clone();
            assert!(found, "no {needle:?} on screen:\n{text}");
            // Later waits look past this occurrence only.
            after + text[after..].find(needle).unwrap() + needle.len()
        }
    };
    let at = wait_for("admin@txlb> ", 0).await;
    // Tab completion of a command word and names, then the command runs.
    stdin.write_all(b"host do\tsvc g \t").await.unwrap();
    let at = wait_for("host down svc g ", at).await;
    stdin.write_all(b"a\r").await.unwrap();
    let at = wait_for("OK host a is admin-down", at).await;
    let at = wait_for("admin@txlb> ", at).await;
    for _ in 0..4 {
        assert_eq!(which_backend(balancer).await.0, "b");
    }
    // History: Up recalls the command; Ctrl-U clears it; errors stay in the session.
    stdin
        .write_all(b"\x1b[A\x15show hosts svc g\r")
        .await
        .unwrap();
    let at = wait_for("admin-down", at).await;
    stdin.write_all(b"host down svc g nope\r").await.unwrap();
    let at = wait_for(
        "error: group \"g\" of service \"svc\" has no host \"nope\"",
        at,
    )
    .await;
    // watch stats refreshes until a key is pressed.
    stdin.write_all(b"watch stats 0.2\r").await.unwrap();
    let at = wait_for("Every 0.2 s: show stats", at).await;
    let at = wait_for("Every 0.2 s: show stats", at).await;
    stdin.write_all(b"q").await.unwrap();
    let at = wait_for("admin@txlb> ", at).await;
    stdin.write_all(b"help host\r").await.unwrap();
    let at = wait_for("host retry SERVICE GROUP HOST", at).await;
    // A script typed line by line, ended by a single dot.
    stdin
        .write_all(b"script\rlet n = show_hosts(\"svc\").len();\rprint(`${n} hosts`);\r.\r")
        .await
        .unwrap();
    let at = wait_for("3 hosts", at).await;
    let at = wait_for("admin@txlb> ", at).await;
    // Ctrl-C stops a running script at once (issue 19 item 1).
    stdin.write_all(b"script 'loop { }'\r").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let interrupted = std::time::Instant::now();
    stdin.write_all(b"\x03").await.unwrap();
    let at = wait_for("script interrupted", at).await;
    assert!(interrupted.elapsed() < Duration::from_secs(5));
    let at = wait_for("admin@txlb> ", at).await;
    stdin.write_all(b"exit\r").await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("ssh ends after exit")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let _ = at;
    assert_eq!(
        c.handle.stats().host("svc", "g", "a").unwrap().stats.health,
        HostHealth::AdminDown
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sessions_end_when_the_balancer_shuts_down() {
    if ssh_missing() {
        return;
    }
    let c = Console::start().await;
    let mut child = ssh_session(c.port, &c.keys.full, &c.keys.known_hosts, true);
    let _stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut screen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&screen).contains("admin@txlb> ") {
        let n = tokio::time::timeout(Duration::from_secs(15), stdout.read(&mut buf))
            .await
            .expect("a prompt within 15 s")
            .unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&screen));
        screen.extend_from_slice(&buf[..n]);
    }
    c.handle.shutdown(Duration::from_secs(1)).await;
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rest = Vec::new();
        let _ = stdout.read_to_end(&mut rest).await;
        rest
    })
    .await
    .expect("the session ends with the balancer");
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("the balancer is shutting down"), "{rest}");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    // And no new connection is accepted.
    let ran = c.run("whoami").await;
    assert_eq!(ran.status, 255, "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_call_the_commands_as_functions() {
    if ssh_missing() {
        return;
    }
    let c = Console::start().await;
    // A script on stdin: read the hosts as data, change one, catch an error.
    let script = r#"
        let hosts = show_hosts("svc", "g");
        print(`hosts: ${hosts.len()}`);
        for h in hosts {
            if h.name == "b" { print(host_down(h.service, h.group, h.name)); }
        }
        try { host_down("svc", "g", "nope"); } catch (e) { print(`caught: ${e}`); }
        print(run("whoami"));
        show_stats().services[0].groups[0].hosts[1].health
    "#;
    let ran = ssh(
        c.port,
        &c.keys.full,
        &c.keys.known_hosts,
        "admin",
        "script",
        Some(script),
    )
    .await;
    assert_eq!(ran.status, 0, "{ran:?}");
    assert!(ran.stdout.contains("hosts: 2"), "{ran:?}");
    assert!(ran.stdout.contains("OK host b is admin-down"), "{ran:?}");
    assert!(
        ran.stdout
            .contains("caught: group \"g\" of service \"svc\" has no host \"nope\""),
        "{ran:?}"
    );
    assert!(ran.stdout.contains("admin (full access)"), "{ran:?}");
    assert!(ran.stdout.trim_end().ends_with("admin-down"), "{ran:?}");
    assert_eq!(
        c.handle.stats().host("svc", "g", "b").unwrap().stats.health,
        HostHealth::AdminDown
    );
    // One-liner; an uncaught error is exit status 1 on stderr.
    assert_eq!(
        c.ok("script 'host_up(\"svc\", \"g\", \"b\")'").await,
        "OK host b is admin-up\n\n"
    );
    c.fails(
        "script 'group_enable(\"svc\", \"nope\")'",
        1,
        "has no group",
    )
    .await;
    // The longest function: a new service with its first host, as newService.
    let added = c
        .ok("script 'service_add(\"s7\", \"127.0.0.1:0\", \"g7\", \"rand\", \"h7\", \"127.0.0.1:9\", 3)'")
        .await;
    assert!(
        added.starts_with("OK service s7 listening on 127.0.0.1:"),
        "{added}"
    );
    assert_eq!(c.handle.stats().host("s7", "g7", "h7").unwrap().weight, 3);
    assert_eq!(c.ok("service del s7").await, "OK service s7 removed\n");
    c.fails("script 'loop {}'", 1, "script").await;
    // The read-only rule holds inside scripts.
    let ran = ssh(
        c.port,
        &c.keys.readonly,
        &c.keys.known_hosts,
        "ops",
        "script 'print(show_services().len()); host_down(\"svc\", \"g\", \"a\")'",
        None,
    )
    .await;
    assert_eq!(ran.status, 1, "{ran:?}");
    assert!(ran.stdout.contains('1'), "{ran:?}");
    assert!(ran.stderr.contains("read-only access"), "{ran:?}");
    assert_eq!(
        c.handle.stats().host("svc", "g", "a").unwrap().stats.health,
        HostHealth::Up
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_certs_lists_listener_and_client_certificates() {
    if ssh_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, names: &[&str]| {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            dir.path().join(format!("{name}.pem")),
            dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    };
    let (server_cert, server_key) = write("server", &["edge.test", "www.edge.test"]);
    let (client_cert, client_key) = write("client", &["client.test"]);
    let mut config = two_group_config().await;
    let mut listener =
        txlb::config::Listener::new(txlb::config::parse_listen_addr("127.0.0.1:0").unwrap());
    listener.tls = Some(txlb::config::ListenerTls {
        certs: vec![txlb::config::TlsCert::new(&server_cert, &server_key)],
        ..Default::default()
    });
    config.services[0].listeners.push(listener);
    let spare = &mut config.services[0].groups[1].options;
    spare.tls = true;
    spare.tls_verify = txlb::config::TlsVerify::None;
    spare.tls_cert = Some(txlb::config::NamedFile::new(&client_cert));
    spare.tls_key = Some(txlb::config::NamedFile::new(&client_key));
    let c = Console::start_with(config).await;
    let list = json(&c.ok("show certs --json").await);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["role"], "server");
    assert_eq!(list[0]["service"], "svc");
    assert_eq!(list[0]["listener"], "127.0.0.1:0");
    assert_eq!(
        list[0]["names"],
        serde_json::json!(["edge.test", "www.edge.test"])
    );
    assert_eq!(list[0]["file"], server_cert.display().to_string());
    assert_eq!(list[1]["role"], "client");
    assert_eq!(list[1]["group"], "spare");
    assert_eq!(list[1]["file"], client_cert.display().to_string());
    let table = c.ok("show certs").await;
    assert!(table.starts_with("SERVICE"), "{table}");
    assert!(
        table.contains("edge.test www.edge.test") && table.contains("group spare"),
        "{table}"
    );
    assert!(table.contains("client.pem"), "{table}");
    // A read: allowed to read-only users too.
    let viewer = ssh(
        c.port,
        &c.keys.readonly,
        &c.keys.known_hosts,
        "ops",
        "show certs --json",
        Some("pw\n"),
    )
    .await;
    assert_eq!(viewer.status, 0, "{viewer:?}");
}

/// `show udp` lists UDP services only, with their sessions and datagrams as
/// a client through the balancer made them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_udp_counts_a_clients_session_and_datagrams() {
    if ssh_missing() {
        return;
    }
    let host = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let host_addr = host.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = host.recv_from(&mut buf).await {
            let _ = host.send_to(&buf[..n], from).await;
        }
    });
    let xml = format!(
        "<config><service name=\"dns\" protocol=\"udp\"><listen ip=\"127.0.0.1:0\"/>\
         <group name=\"g\" enable=\"true\"><host name=\"r1\" ip=\"{host_addr}\"/></group>\
         </service><service name=\"web\"><listen ip=\"127.0.0.1:0\"/>\
         <group name=\"g\" enable=\"true\"><host name=\"w1\" ip=\"127.0.0.1:9\"/></group>\
         </service></config>"
    );
    let c = Console::start_with(txlb::config::Config::from_xml_str(&xml).unwrap()).await;
    let udp_listener = c
        .handle
        .listeners()
        .into_iter()
        .find(|l| l.service == "dns")
        .unwrap()
        .local;
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..3u8 {
        client.send_to(&[i; 10], udp_listener).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("a reply")
            .unwrap();
        assert_eq!(&buf[..n], &[i; 10]);
    }
    let list = json(&c.ok("show udp --json").await);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "only the UDP service: {list:?}");
    assert_eq!(list[0]["name"], "dns");
    assert_eq!(list[0]["protocol"], "udp");
    let counters = &list[0]["counters"];
    assert_eq!(counters["sessions_open"], 1, "{counters}");
    assert_eq!(counters["datagrams_in"], 3, "{counters}");
    assert_eq!(counters["datagrams_out"], 3, "{counters}");
    let table = c.ok("show udp").await;
    let row = table.lines().find(|l| l.starts_with("dns ")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[2..6], ["1", "1", "3", "3"], "{table}");
    assert!(!table.contains("web"), "{table}");
}

/// `show connections` lists a UDP session (`udp`, its datagrams and bytes
/// each way) and `connection close` ends it by its id: the client's next
/// datagram opens another session; the closed id is then unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_connections_lists_a_udp_session_and_connection_close_ends_it() {
    if ssh_missing() {
        return;
    }
    let host = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let host_addr = host.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = host.recv_from(&mut buf).await {
            let _ = host.send_to(&buf[..n], from).await;
        }
    });
    let xml = format!(
        "<config><service name=\"dns\" protocol=\"udp\"><listen ip=\"127.0.0.1:0\"/>\
         <group name=\"g\" enable=\"true\"><host name=\"r1\" ip=\"{host_addr}\"/></group>\
         </service></config>"
    );
    let c = Console::start_with(txlb::config::Config::from_xml_str(&xml).unwrap()).await;
    let listener = c.handle.listeners()[0].local;
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let exchange = |size: usize| {
        let client = &client;
        async move {
            client.send_to(&vec![1u8; size], listener).await.unwrap();
            let mut buf = [0u8; 64];
            tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
                .await
                .expect("a reply")
                .unwrap();
        }
    };
    exchange(10).await;
    exchange(20).await;
    let list = json(&c.ok("show connections --json").await);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let session = &list[0];
    assert_eq!(session["transport"], "udp", "{session}");
    assert_eq!(session["client"], client.local_addr().unwrap().to_string());
    assert_eq!(session["host"], "r1");
    assert_eq!(session["datagrams_in"], 2, "{session}");
    assert_eq!(session["bytes_out"], 30, "{session}");
    let id = session["id"].as_u64().unwrap();
    let table = c.ok("show connections").await;
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&id.to_string()))
        .unwrap_or_else(|| panic!("no row {id}: {table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1..5], ["udp", "dns", "g", "r1"], "{table}");
    assert_eq!(cells[cells.len() - 4..], ["2", "2", "30", "30"], "{table}");
    c.ok(&format!("connection close {id}")).await;
    assert!(c.handle.connections(None, None).is_empty());
    c.fails(&format!("connection close {id}"), 1, "no open connection")
        .await;
    exchange(5).await;
    let list = c.handle.connections(None, None);
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(list[0].id > id, "{list:?}");
    assert_eq!(list[0].datagrams_in, Some(1));
    let stats = c.handle.stats();
    let counters = &stats.services[0].counters;
    assert_eq!((counters.sessions_total, counters.sessions_open), (2, 1));
}
