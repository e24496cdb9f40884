//! Write-back (configCheck, saveConfig): the running configuration goes back into
//! the operator's file, XML or TOML, keeping comments and untouched elements byte
//! for byte; files edited on disk are not overwritten; a crash mid-write never
//! leaves a truncated file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use txlb::config::writeback::{self, SaveOutcome, WriteBack, WriteBackError};
use txlb::config::{
    Access, Config, DEFAULT_CONNECT_TIMEOUT, GroupConfig, HostConfig, ServiceConfig, UserConfig,
    parse_host_address, parse_listen_addr,
};
use txlb::scheduler::SchedulerKind;

const XML: &str = include_str!("../fixtures/writeback/commented.xml");
const TOML: &str = include_str!("../fixtures/writeback/commented.toml");

/// A copy of `text` as `name` in a fresh directory, loaded.
fn setup(name: &str, text: &str) -> (tempfile::TempDir, PathBuf, Config) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let config = Config::from_path(&path).unwrap();
    (dir, path, config)
}

fn service<'a>(c: &'a mut Config, name: &str) -> &'a mut ServiceConfig {
    c.services.iter_mut().find(|s| s.name == name).unwrap()
}

fn group<'a>(c: &'a mut Config, s: &str, g: &str) -> &'a mut GroupConfig {
    service(c, s)
        .groups
        .iter_mut()
        .find(|x| x.name == g)
        .unwrap()
}

fn host(name: &str, ip: &str, weight: u32) -> HostConfig {
    HostConfig {
        name: name.into(),
        address: parse_host_address(ip).unwrap(),
        weight,
        options: Default::default(),
    }
}

/// Every kind of change the admin plane can make, to both fixtures (which hold
/// the same configuration).
fn change_everything(c: &mut Config) {
    // add host, remove host, change a weight
    group(c, "web", "main")
        .hosts
        .push(host("four", "127.0.0.1:8004", 1));
    group(c, "web", "main").hosts.retain(|h| h.name != "two");
    group(c, "web", "upgrade").hosts.edit(0).weight = 4;
    // change scheduler, switch enabled group
    group(c, "web", "upgrade").scheduler = SchedulerKind::RoundRobin;
    service(c, "web").enabled_group = "upgrade".into();
    // add group, remove group
    service(c, "web").groups.push(GroupConfig {
        name: "canary".into(),
        scheduler: SchedulerKind::Weighted,
        hosts: vec![
            host("c1", "10.0.0.9:80", 2),
            host("c2", "[2001:db8::9]:80", 1),
        ]
        .into(),
        options: txlb::config::GroupOptions {
            proxy_protocol: Some(txlb::proxy_protocol::Version::V2),
            ..Default::default()
        },
        check: None,
        agent: None,
    });
    // settings beyond txLoadBalancer's, on kept elements
    service(c, "web").options.client_timeout = std::time::Duration::from_secs(90);
    service(c, "web").options.deny = vec!["10.9.0.0/16".parse().unwrap()];
    group(c, "web", "upgrade").hosts.edit(0).options.maxconn = 50;
    service(c, "api").groups.retain(|g| g.name != "b");
    // add listener, add service
    service(c, "api")
        .listeners
        .push(parse_listen_addr("*:9001").unwrap().into());
    c.services.push(ServiceConfig {
        name: "new & improved".into(),
        listeners: vec![parse_listen_addr("127.0.0.1:7777").unwrap().into()],
        groups: vec![GroupConfig {
            name: "g1".into(),
            scheduler: SchedulerKind::LeastConns,
            hosts: vec![host("n1", "10.0.1.1:80", 1)].into(),
            options: Default::default(),
            check: None,
            agent: None,
        }],
        enabled_group: "g1".into(),
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        options: txlb::config::ServiceOptions {
            maxconn: 1000,
            accept_proxy: true,
            ..Default::default()
        },
    });
    // add user, remove user
    let admin = c.admin.as_mut().unwrap();
    admin.users.push(UserConfig {
        name: "ops".into(),
        password_hash: "$6$salt$hash".into(),
        access: Access::ReadOnly,
    });
    admin.users.retain(|u| u.name != "ro");
}

/// Lines of the original that the changes above may touch, per format.
const XML_TOUCHED: &[&str] = &[
    "<service name=\"web\"",
    "<host name=\"two\"",
    "<host name=\"five\"",
    "<group name=\"upgrade\"",
    "<enable group=",
    "<group name=\"b\"",
    "<user name=\"ro\"",
];
const TOML_TOUCHED: &[&str] = &[
    "{ name = \"two\"",
    "{ name = \"five\"",
    "scheduler = \"leastconns\"    # staged",
    "enabled_group = ",
    "listen = [ \"*:9000\" ]",
    // the removed group b and user ro, with the comment above it
    "# standby",
    "name = \"b\"",
    "scheduler = \"rand\"",
    "enable = false",
    "{ name = \"b1\"",
    "# auditors",
    "name = \"ro\"",
    "password = \"..xpoEyRReGzk\"",
    "access = \"readonly\"",
];

/// Every line of `original` not touched by a change is in `new`, in order.
#[track_caller]
fn assert_untouched_lines_kept(original: &str, new: &str, touched: &[&str]) {
    let mut rest = new.lines();
    for line in original.lines() {
        if touched.iter().any(|t| line.contains(t)) {
            continue;
        }
        assert!(
            rest.any(|l| l == line),
            "untouched line {line:?} missing or out of order in:\n{new}"
        );
    }
}

/// Every comment of `original` (XML `<!-- -->`, TOML `# …`) is still in `new`,
/// except those on `touched` lines.
#[track_caller]
fn assert_comments_kept(original: &str, new: &str, touched: &[&str]) {
    let mut rest = original;
    while let Some(start) = rest.find("<!--") {
        let end = rest[start..].find("-->").unwrap() + start + 3;
        let comment = &rest[start..end];
        if !touched.iter().any(|t| comment.contains(t)) {
            assert!(new.contains(comment), "lost {comment:?} in:\n{new}");
        }
        rest = &rest[end..];
    }
    for line in original.lines() {
        if let Some(at) = line.find('#')
            && !touched.iter().any(|t| line.contains(t))
            && !line.contains('"')
        {
            assert!(
                new.contains(&line[at..]),
                "lost {:?} in:\n{new}",
                &line[at..]
            );
        }
    }
}

fn write_back_everything(name: &str, text: &str, touched: &[&str]) {
    let (dir, path, boot) = setup(name, text);
    let mut running = boot.clone();
    change_everything(&mut running);
    let outcome = writeback::save(&path, text, &boot, &running).unwrap();
    assert_eq!(outcome, SaveOutcome::Written { preserved: true });
    let new = std::fs::read_to_string(&path).unwrap();
    eprintln!("{new}");
    // (a) the file re-loads into exactly the running configuration
    let reloaded = Config::from_path(&path).unwrap();
    assert!(writeback::same_config(&reloaded, &running));
    // (b) comments and untouched elements are byte-identical
    assert_untouched_lines_kept(text, &new, touched);
    assert_comments_kept(text, &new, touched);
    // (c) the previous text is kept
    let bak = std::fs::read_to_string(path.with_file_name(format!("{name}.bak"))).unwrap();
    assert_eq!(bak, text);
    // No temporary file is left.
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, [name.to_string(), format!("{name}.bak")]);
    // Saving again changes nothing.
    assert_eq!(
        writeback::save(&path, &new, &reloaded, &running).unwrap(),
        SaveOutcome::Unchanged
    );
}

#[test]
fn xml_changes_keep_comments_and_untouched_elements() {
    write_back_everything("txlb.xml", XML, XML_TOUCHED);
}

#[test]
fn toml_changes_keep_comments_and_untouched_elements() {
    write_back_everything("txlb.toml", TOML, TOML_TOUCHED);
}

#[test]
fn fixtures_hold_the_same_configuration() {
    let (_d1, _, xml) = setup("a.xml", XML);
    let (_d2, _, toml) = setup("a.toml", TOML);
    let strip = |mut c: Config| {
        c.source = None;
        c.logging.file = c.logging.file.map(|f| f.file_name().unwrap().into());
        c
    };
    assert_eq!(strip(xml), strip(toml));
}

/// One change at a time: each gives a file that reloads into the running
/// configuration, keeping comments.
#[test]
fn each_change_alone() {
    type Change = fn(&mut Config);
    let changes: &[(&str, Change)] = &[
        ("add host", |c| {
            group(c, "api", "a")
                .hosts
                .push(host("a2", "10.0.0.3:80", 7))
        }),
        ("remove only host of a standby group", |c| {
            group(c, "api", "b").hosts.clear()
        }),
        ("add host to emptied group", |c| {
            group(c, "api", "b").hosts = vec![host("b2", "10.0.0.4:80", 1)].into();
        }),
        ("remove first host", |c| {
            group(c, "web", "main").hosts.remove(0);
        }),
        ("remove last host", |c| {
            let hosts = &mut group(c, "web", "main").hosts;
            hosts.remove(hosts.len() - 1);
        }),
        ("change address", |c| {
            group(c, "web", "main").hosts.edit(1).address = parse_host_address("[::1]:1").unwrap();
        }),
        ("scheduler", |c| {
            group(c, "api", "b").scheduler = SchedulerKind::Weighted
        }),
        ("enable group by attribute", |c| {
            service(c, "api").enabled_group = "b".into()
        }),
        ("enable group by name", |c| {
            service(c, "web").enabled_group = "upgrade".into()
        }),
        ("remove service", |c| c.services.retain(|s| s.name != "web")),
        ("replace listener", |c| {
            service(c, "web").listeners = vec![parse_listen_addr("[::1]:8000").unwrap().into()];
        }),
        ("connect timeout", |c| {
            service(c, "web").connect_timeout = Duration::from_millis(1500)
        }),
        ("remove every user", |c| {
            c.admin.as_mut().unwrap().users.clear()
        }),
        ("change password", |c| {
            c.admin.as_mut().unwrap().users[0].password_hash = "$1$x$y".into()
        }),
        ("web admin", |c| {
            let web = c.admin.as_mut().unwrap().web.as_mut().unwrap();
            web.secure = true;
            web.refresh = Duration::from_secs(3);
        }),
        ("manager", |c| {
            c.manager.heartbeat.enable = true;
            c.manager.host_check.interval = Duration::from_millis(2500);
        }),
        ("no log file", |c| c.logging.file = None),
        ("control socket", |c| {
            c.control = Some(txlb::config::ControlConfig {
                socket: "/run/txlb.sock".into(),
            })
        }),
    ];
    for (name, text) in [("c.xml", XML), ("c.toml", TOML)] {
        for (what, change) in changes {
            let (_dir, path, boot) = setup(name, text);
            let mut running = boot.clone();
            change(&mut running);
            let rendered = writeback::render(&path, text, &boot, &running).unwrap();
            assert!(
                rendered.preserved,
                "{name}: {what}: fell back to full rendering"
            );
            let reloaded = Config::from_text(&path, &rendered.text).unwrap();
            assert!(
                writeback::same_config(&reloaded, &running),
                "{name}: {what}"
            );
            if *what != "remove service" {
                assert_comments_kept(text, &rendered.text, &["# auditors", "the old one"]);
            }
        }
    }
}

#[test]
fn sample_configurations_write_back() {
    for text in [
        include_str!("../fixtures/txlb-config.xml"),
        include_str!("../fixtures/txlb-confex.xml"),
    ] {
        let (_dir, path, boot) = setup("config.xml", text);
        let mut running = boot.clone();
        let s = &mut running.services[0];
        let standby = s.groups[1].name.clone();
        s.enabled_group = standby;
        s.groups[0].hosts.push(host("extra", "10.9.9.9:99", 3));
        let outcome = writeback::save(&path, text, &boot, &running).unwrap();
        assert_eq!(outcome, SaveOutcome::Written { preserved: true });
        let new = std::fs::read_to_string(&path).unwrap();
        let reloaded = Config::from_path(&path).unwrap();
        assert!(writeback::same_config(&reloaded, &running));
        // Two lines changed (the enabling), one added.
        let old_lines: Vec<&str> = text.lines().collect();
        let new_lines: Vec<&str> = new.lines().collect();
        assert_eq!(new_lines.len(), old_lines.len() + 1);
        let changed = old_lines.iter().filter(|l| !new_lines.contains(l)).count();
        assert!(changed <= 2, "{new}");
    }
}

#[test]
fn file_edited_on_disk_is_not_overwritten() {
    for (name, text, edit) in [
        (
            "c.xml",
            XML,
            ("<!-- web front -->", "<!-- web front, edited -->"),
        ),
        (
            "c.toml",
            TOML,
            ("# the production group", "# edited by hand"),
        ),
    ] {
        let (_dir, path, boot) = setup(name, text);
        let wb = WriteBack::new(&path, text, boot.clone());
        let edited = text
            .replace(edit.0, edit.1)
            .replace("127.0.0.1:8003", "127.0.0.1:8033");
        std::fs::write(&path, &edited).unwrap();
        let mut running = boot.clone();
        group(&mut running, "web", "main")
            .hosts
            .push(host("four", "127.0.0.1:8004", 1));
        let err = wb.save(&running).unwrap_err();
        let WriteBackError::Conflict(conflict) = err else {
            panic!("expected a conflict, got {err:?}");
        };
        assert_eq!(std::fs::read_to_string(&path).unwrap(), edited);
        assert!(!path.with_file_name(format!("{name}.bak")).exists());
        // Both differences are shown, as unified diffs.
        assert!(
            conflict.file_vs_boot.contains(&format!(
                "-{}",
                text.lines().find(|l| l.contains(edit.0)).unwrap()
            )),
            "{}",
            conflict.file_vs_boot
        );
        assert!(conflict.file_vs_boot.contains(edit.1));
        assert!(conflict.file_vs_boot.contains("127.0.0.1:8033"));
        assert!(!conflict.file_vs_boot.contains("8004"));
        assert!(conflict.running_vs_boot.contains("+"));
        assert!(conflict.running_vs_boot.contains("127.0.0.1:8004"));
        assert!(!conflict.running_vs_boot.contains("8033"));
        assert_eq!(wb.conflict().as_ref(), Some(&*conflict));

        // Undoing the edit resolves it: the next save writes.
        std::fs::write(&path, text).unwrap();
        assert_eq!(
            wb.save(&running).unwrap(),
            SaveOutcome::Written { preserved: true }
        );
        assert_eq!(wb.conflict(), None);
        assert!(wb.is_saved(&running));
    }
}

#[test]
fn edit_on_disk_matching_the_running_config_is_adopted() {
    // The operator edits the file and reloads (SIGHUP): running = file.
    let (_dir, path, boot) = setup("c.xml", XML);
    let wb = WriteBack::new(&path, XML, boot);
    let edited = XML.replace("127.0.0.1:8003", "127.0.0.1:8033");
    std::fs::write(&path, &edited).unwrap();
    let reloaded = Config::from_path(&path).unwrap();
    assert_eq!(wb.save(&reloaded).unwrap(), SaveOutcome::Adopted);
    assert_eq!(wb.text(), edited);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), edited);
    // Later changes are written into the edited file.
    let mut running = reloaded.clone();
    group(&mut running, "web", "main")
        .hosts
        .push(host("four", "127.0.0.1:8004", 1));
    assert_eq!(
        wb.save(&running).unwrap(),
        SaveOutcome::Written { preserved: true }
    );
    let new = std::fs::read_to_string(&path).unwrap();
    assert!(new.contains("127.0.0.1:8033") && new.contains("127.0.0.1:8004"));
}

#[test]
fn successive_saves_use_the_last_written_text() {
    let (_dir, path, boot) = setup("c.toml", TOML);
    let wb = WriteBack::new(&path, TOML, boot.clone());
    let mut running = boot.clone();
    let mut previous = TOML.to_string();
    for i in 0..5u16 {
        group(&mut running, "api", "a").hosts.push(host(
            &format!("x{i}"),
            &format!("10.1.0.{i}:80"),
            1,
        ));
        assert_eq!(
            wb.save(&running).unwrap(),
            SaveOutcome::Written { preserved: true }
        );
        let bak = std::fs::read_to_string(path.with_file_name("c.toml.bak")).unwrap();
        assert_eq!(bak, previous);
        previous = std::fs::read_to_string(&path).unwrap();
        assert!(writeback::same_config(
            &Config::from_path(&path).unwrap(),
            &running
        ));
    }
    assert_untouched_lines_kept(TOML, &previous, &[]);
}

#[cfg(unix)]
#[test]
fn permissions_are_kept() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path, boot) = setup("c.xml", XML);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut running = boot.clone();
    service(&mut running, "web").enabled_group = "upgrade".into();
    writeback::save(&path, XML, &boot, &running).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
}

/// Files and links planted beside the configuration under the names a writer
/// might pick (`FILE.tmp`, `FILE.bak.tmp`, `FILE.bak`) are never opened or
/// followed: what they point to is untouched, and the file and its backup are
/// regular files with the file's mode and owner.
#[cfg(unix)]
#[test]
fn planted_links_are_never_written_through() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let (dir, path, boot) = setup("c.xml", XML);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    // Running as root, the file can belong to someone else: it must stay theirs.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        std::os::unix::fs::chown(&path, Some(4321), Some(4322)).unwrap();
    }
    let victims = tempfile::tempdir().unwrap();
    let mut planted = Vec::new();
    for name in ["c.xml.tmp", "c.xml.bak.tmp", "c.xml.bak"] {
        let victim = victims.path().join(format!("victim-{name}"));
        std::fs::write(&victim, "precious\n").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        planted.push(victim);
    }
    let mut running = boot.clone();
    service(&mut running, "web").enabled_group = "upgrade".into();
    let outcome = writeback::save(&path, XML, &boot, &running).unwrap();
    assert_eq!(outcome, SaveOutcome::Written { preserved: true });
    for victim in &planted {
        assert_eq!(std::fs::read_to_string(victim).unwrap(), "precious\n");
        let mode = std::fs::metadata(victim).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", victim.display());
    }
    for (file, text) in [
        (path.clone(), None),
        (path.with_file_name("c.xml.bak"), Some(XML)),
    ] {
        let meta = std::fs::symlink_metadata(&file).unwrap();
        assert!(
            meta.file_type().is_file(),
            "{} is not a regular file",
            file.display()
        );
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o640,
            "{}",
            file.display()
        );
        if root {
            assert_eq!((meta.uid(), meta.gid()), (4321, 4322), "{}", file.display());
        }
        if let Some(text) = text {
            assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
        }
    }
    assert!(writeback::same_config(
        &Config::from_path(&path).unwrap(),
        &running
    ));
}

/// A configuration big enough that writing it takes a while.
fn big_config(hosts_per_group: usize, marker: &str) -> String {
    let mut x = String::from("<config>\n  <!-- big: keep me -->\n");
    for s in 0..40 {
        x.push_str(&format!(
            "  <service name=\"s{s}\">\n    <listen ip=\"127.0.0.1:{}\"/>\n    <group name=\"g\" scheduler=\"roundr\" enable=\"true\">\n",
            20000 + s
        ));
        for h in 0..hosts_per_group {
            x.push_str(&format!(
                "      <host name=\"h{h}\" ip=\"10.{}.{}.1:80\"/> <!-- {marker} -->\n",
                h / 250,
                h % 250
            ));
        }
        x.push_str("    </group>\n  </service>\n");
    }
    x.push_str("</config>\n");
    x
}

const CHILD_ENV: &str = "TXLB_WRITEBACK_CRASH_CHILD";

/// Not a test on its own: the child of `kill_9_never_truncates`, which runs it
/// with the file to write in `TXLB_WRITEBACK_CRASH_CHILD`. It alternates the
/// file between two configurations forever.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let path = PathBuf::from(path);
    let (a, b) = crash_configs(&path);
    loop {
        let (text, current) = writeback::load(&path).unwrap();
        let next = if writeback::same_config(&current, &a) {
            &b
        } else {
            &a
        };
        writeback::save(&path, &text, &current, next).unwrap();
    }
}

/// The two configurations the crash child alternates between.
fn crash_configs(path: &Path) -> (Config, Config) {
    let a = Config::from_text(path, &big_config(50, "a")).unwrap();
    let mut b = a.clone();
    for s in &mut b.services {
        s.groups[0].hosts.retain(|h| !h.name.ends_with('7'));
        s.groups[0].hosts.push(host("added", "10.200.0.1:80", 2));
    }
    (a, b)
}

#[test]
fn kill_9_never_truncates() {
    let _heavy = crate::common::heavy_blocking();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.xml");
    let original = big_config(50, "a");
    std::fs::write(&path, &original).unwrap();
    let (a, b) = crash_configs(&path);
    let exe = std::env::current_exe().unwrap();
    // The test's name in this binary: its module path without the crate's name.
    let crash_child = module_path!()
        .split_once("::")
        .map_or("", |(_, m)| m)
        .to_string()
        + "::crash_child";
    let mut kills = 0;
    let mut wrote = false;
    let started = Instant::now();
    while kills < 30 && started.elapsed() < Duration::from_secs(60) {
        let mut child = Command::new(&exe)
            .args(["--exact", &crash_child, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(fastrand::u64(10..400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        for file in [path.clone(), path.with_file_name("big.xml.bak")] {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue; // no backup before the first write
            };
            let loaded = Config::from_text(&path, &text)
                .unwrap_or_else(|e| panic!("{} after kill {kills}: {e}", file.display()));
            assert!(
                writeback::same_config(&loaded, &a) || writeback::same_config(&loaded, &b),
                "{} is neither version after kill {kills}",
                file.display()
            );
            assert!(text.contains("<!-- big: keep me -->"));
        }
        wrote |= std::fs::read_to_string(&path).unwrap() != original;
    }
    assert_eq!(kills, 30);
    assert!(wrote, "the child never got to write");
}

#[tokio::test]
async fn config_check_writes_back_changes() {
    let (_dir, path, boot) = setup("c.xml", XML);
    // Listen on free ports; hosts need not answer.
    let text = XML
        .replace("127.0.0.1:8000", "127.0.0.1:0")
        .replace("*:9000", "127.0.0.1:0")
        .replace("localhost:7001", "127.0.0.1:0");
    std::fs::write(&path, &text).unwrap();
    let mut boot_config = Config::from_text(&path, &text).unwrap();
    drop(boot);
    // Off at start: a reload turns it on, with a short interval.
    boot_config.manager.config_check.enable = false;
    let handle = txlb::Balancer::start(boot_config.clone()).await.unwrap();
    let wb = Arc::new(WriteBack::new(&path, text.clone(), boot_config));
    let stop = tokio_util::sync::CancellationToken::new();
    let running = handle.clone();
    tokio::spawn(writeback::run_config_check(
        wb.clone(),
        move || Arc::new(running.config()),
        stop.clone(),
    ));
    handle
        .apply(txlb::Command::AddHost {
            service: "web".into(),
            group: "main".into(),
            host: host("four", "127.0.0.1:8004", 1),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "written back while configCheck is disabled"
    );
    let mut enabled = handle.config();
    enabled.manager.config_check.enable = true;
    enabled.manager.config_check.interval = Duration::from_millis(50);
    handle
        .apply(txlb::Command::Replace(Box::new(enabled)))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = std::fs::read_to_string(&path).unwrap();
        if now.contains("127.0.0.1:8004") {
            assert!(writeback::same_config(
                &Config::from_text(&path, &now).unwrap(),
                &handle.config()
            ));
            // The reload changed configCheck itself: its line is rewritten.
            assert!(
                now.contains("<configCheck interval=\"0.05\" enable=\"true\""),
                "{now}"
            );
            assert_untouched_lines_kept(&text, &now, &["<configCheck"]);
            break;
        }
        assert!(Instant::now() < deadline, "not written back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An edit on disk is then left alone, and reported.
    let edited = std::fs::read_to_string(&path)
        .unwrap()
        .replace("web front", "edited");
    std::fs::write(&path, &edited).unwrap();
    handle
        .apply(txlb::Command::SetScheduler {
            service: "api".into(),
            group: "a".into(),
            scheduler: SchedulerKind::Random,
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while wb.conflict().is_none() {
        assert!(Instant::now() < deadline, "conflict not found");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), edited);
    stop.cancel();
    handle.shutdown(Duration::from_secs(1)).await;
}

/// Kills the child when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits up to 10 s for `needle` in the file at `path`.
#[track_caller]
fn wait_for_text(path: &Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The real binary with configCheck on: an unchanged configuration is never
/// rewritten, and a file edited and reloaded (SIGHUP) is taken as the new base,
/// not overwritten. (Changing the running configuration from outside needs the
/// admin API, which is not part of this test.)
#[test]
fn txlb_binary_config_check_leaves_operator_edits_alone() {
    let text = r#"<config>
  <!-- e2e: keep me -->
  <service name="web">
    <listen ip="127.0.0.1:0"/>
    <group name="g" scheduler="roundr" enable="true">
      <host name="h1" ip="127.0.0.1:9"/>
    </group>
  </service>
  <manager>
    <configCheck interval="0.1" enable="true"/>
  </manager>
  <logging file="txlb.log"/>
</config>
"#;
    let (dir, path, _) = setup("txlb.xml", text);
    let log = dir.path().join("txlb.log");
    let bak = dir.path().join("txlb.xml.bak");
    let child = Command::new(env!("CARGO_BIN_EXE_txlb"))
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut txlb = Running(child);
    let pid = txlb.0.id();
    wait_for_text(&log, "txlb running");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert!(!bak.exists());

    let edited = text.replace(
        "      <host name=\"h1\" ip=\"127.0.0.1:9\"/>\n",
        "      <host name=\"h1\" ip=\"127.0.0.1:9\"/>\n      <!-- added by hand -->\n      <host name=\"h2\" ip=\"127.0.0.1:19\"/>\n",
    );
    std::fs::write(&path, &edited).unwrap();
    signal(pid, "-HUP");
    wait_for_text(&log, "configuration reloaded");
    // The reload takes the file as write-back's base: configCheck's rounds
    // (every 0.1 s) find nothing to write.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), edited);
    assert!(!bak.exists());
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(!log_text.contains("not overwritten"), "{log_text}");

    signal(pid, "-TERM");
    let status = txlb.0.wait().unwrap();
    assert!(status.success());
}
