//! Unit tests of write-back: exact in-place edits, the fallback, and random
//! changes that must always give a file loading into the running configuration.

use std::path::Path;

use super::*;
use crate::config::SchedulerKind;
use crate::config::{
    AgentConfig, CheckConfig, CheckKind, Escaped, GroupConfig, HostConfig, LoggingConfig,
    parse_host_address, parse_listen_addr,
};

const XML_FIXTURE: &str = include_str!("../../../tests/fixtures/writeback/commented.xml");
const TOML_FIXTURE: &str = include_str!("../../../tests/fixtures/writeback/commented.toml");

fn host(name: &str, ip: &str) -> HostConfig {
    HostConfig {
        name: name.into(),
        address: parse_host_address(ip).unwrap(),
        weight: 1,
        options: Default::default(),
    }
}

/// Loads `text` as `path`, applies `change`, renders, and checks the result
/// loads into the changed configuration. Returns the new text.
#[track_caller]
fn rewrite(path: &str, text: &str, change: impl FnOnce(&mut Config)) -> Rendered {
    let path = Path::new(path);
    let boot = Config::from_text(path, text).unwrap();
    let mut running = boot.clone();
    change(&mut running);
    let rendered = render(path, text, &boot, &running).unwrap();
    let reloaded = Config::from_text(path, &rendered.text).unwrap();
    assert!(same_config(&reloaded, &running), "{}", rendered.text);
    rendered
}

#[track_caller]
fn in_place(path: &str, text: &str, change: impl FnOnce(&mut Config)) -> String {
    let rendered = rewrite(path, text, change);
    assert!(rendered.preserved, "fell back to a full rendering");
    rendered.text
}

const SMALL_XML: &str = "<config>
  <!-- one -->
  <service name='web'>
    <listen ip='*:80'/>
    <group name='g' scheduler='roundr' enable='yes'>
      <host name='h1' ip='10.0.0.1:80'/>
      <host name='h2' ip='10.0.0.2:80'/>  <!-- two -->
    </group>
    <group name=\"s\" scheduler=\"rand\"/>
  </service>
</config>
";

#[test]
fn xml_attribute_replaced_in_place_keeping_quotes() {
    let out = in_place("c.xml", SMALL_XML, |c| {
        c.services[0].groups[0].scheduler = SchedulerKind::LeastConns;
        c.services[0].groups[0].hosts.edit(1).weight = 3;
    });
    let expected = SMALL_XML
        .replace("scheduler='roundr'", "scheduler='leastc'")
        .replace("ip='10.0.0.2:80'/>", "ip='10.0.0.2:80' weight=\"3\"/>");
    assert_eq!(out, expected);
}

#[test]
fn xml_slow_start_set_and_removed_in_place() {
    let slow = in_place("c.xml", SMALL_XML, |c| {
        c.services[0].groups[0].scheduler = SchedulerKind::WeightedRoundRobin;
        c.services[0].groups[0].options.slow_start = Some(std::time::Duration::from_millis(2500));
    });
    let expected = SMALL_XML.replace(
        "scheduler='roundr' enable='yes'>",
        "scheduler='wrr' enable='yes' slowStart=\"2.5\">",
    );
    assert_eq!(slow, expected);
    let back = in_place("c.xml", &slow, |c| {
        c.services[0].groups[0].options.slow_start = None;
    });
    assert_eq!(
        back,
        SMALL_XML.replace("scheduler='roundr'", "scheduler='wrr'")
    );
}

#[test]
fn xml_check_added_edited_and_removed_in_place() {
    let added = in_place("c.xml", SMALL_XML, |c| {
        c.services[0].groups[0].check = Some(CheckConfig {
            path: "/healthz".into(),
            ..CheckConfig::of(CheckKind::Http)
        });
        c.services[0].groups[1].check = Some(CheckConfig::default());
    });
    let expected = SMALL_XML
        .replace(
            "      <host name='h1'",
            "      <check type=\"http\" path=\"/healthz\"/>\n      <host name='h1'",
        )
        .replace(
            "<group name=\"s\" scheduler=\"rand\"/>",
            "<group name=\"s\" scheduler=\"rand\">\n      <check type=\"tcp\"/>\n    </group>",
        );
    assert_eq!(added, expected);
    let edited = in_place("c.xml", &added, |c| {
        let check = c.services[0].groups[0].check.as_mut().unwrap();
        check.rise = 5;
        check.path = "/".into();
        c.services[0].groups[0].hosts.edit(0).options.check_port = Some(8081);
    });
    assert!(
        edited.contains("<check type=\"http\" rise=\"5\"/>")
            && edited.contains("ip='10.0.0.1:80' checkPort=\"8081\"/>"),
        "{edited}"
    );
    let removed = in_place("c.xml", &edited, |c| {
        c.services[0].groups[0].check = None;
    });
    assert!(!removed.contains("rise"), "{removed}");
    assert!(removed.contains("  <!-- two -->"), "{removed}");
}

#[test]
fn xml_agent_added_edited_and_removed_in_place() {
    let added = in_place("c.xml", SMALL_XML, |c| {
        c.services[0].groups[0].agent = Some(AgentConfig {
            port: Some(9000),
            ..AgentConfig::default()
        });
    });
    assert!(
        added.contains("      <agent port=\"9000\"/>\n      <host name='h1'"),
        "{added}"
    );
    let edited = in_place("c.xml", &added, |c| {
        let agent = c.services[0].groups[0].agent.as_mut().unwrap();
        agent.interval = std::time::Duration::from_secs(5);
        c.services[0].groups[0].hosts.edit(0).options.agent_port = Some(9001);
    });
    assert!(
        edited.contains("<agent port=\"9000\" interval=\"5\"/>")
            && edited.contains("ip='10.0.0.1:80' agentPort=\"9001\"/>"),
        "{edited}"
    );
    let removed = in_place("c.xml", &edited, |c| {
        c.services[0].groups[0].agent = None;
    });
    assert!(!removed.contains("<agent"), "{removed}");
    assert!(removed.contains("  <!-- two -->"), "{removed}");
}

#[test]
fn toml_check_added_edited_and_removed_in_place() {
    let text = "[[service]]
name = \"web\"
listen = [\"*:80\"]

  [[service.group]]
  name = \"g\"   # the group
  enable = true
  hosts = [ { name = \"h1\", ip = \"10.0.0.1:80\" } ]
";
    let added = in_place("c.toml", text, |c| {
        c.services[0].groups[0].check = Some(CheckConfig {
            send: Escaped(b"PING\r\n".to_vec()),
            ..CheckConfig::of(CheckKind::Send)
        });
    });
    assert!(
        added.contains(r#"check = { type = "send", send = "PING\\r\\n" }"#),
        "{added}"
    );
    let edited = in_place("c.toml", &added, |c| {
        let check = c.services[0].groups[0].check.as_mut().unwrap();
        check.kind = CheckKind::Tcp;
        check.send = Escaped::default();
        check.fall = 7;
    });
    assert!(
        edited.contains(r#"check = { type = "tcp", fall = 7 }"#),
        "{edited}"
    );
    assert!(edited.contains("name = \"g\"   # the group"), "{edited}");
    let removed = in_place("c.toml", &edited, |c| {
        c.services[0].groups[0].check = None;
    });
    assert!(!removed.contains("check"), "{removed}");
}

#[test]
fn toml_slow_start_set_and_removed_in_place() {
    let text = "[[service]]
name = \"web\"
listen = [\"*:80\"]

  [[service.group]]
  name = \"g\"   # the group
  scheduler = \"wleastc\"
  enable = true
  hosts = [ { name = \"h1\", ip = \"10.0.0.1:80\" } ]
";
    let slow = in_place("c.toml", text, |c| {
        c.services[0].groups[0].options.slow_start = Some(std::time::Duration::from_secs(20));
    });
    assert!(slow.contains("slow_start = 20"), "{slow}");
    assert!(slow.contains("name = \"g\"   # the group"), "{slow}");
    let back = in_place("c.toml", &slow, |c| {
        c.services[0].groups[0].options.slow_start = None;
    });
    assert!(!back.contains("slow_start"), "{back}");
}

#[test]
fn xml_removed_host_goes_with_its_line_and_comments_stay() {
    let out = in_place("c.xml", SMALL_XML, |c| {
        c.services[0].groups[0].hosts.remove(0);
    });
    assert_eq!(
        out,
        SMALL_XML.replace("      <host name='h1' ip='10.0.0.1:80'/>\n", "")
    );
    let out = in_place("c.xml", SMALL_XML, |c| {
        c.services[0].groups[0].hosts.remove(1);
    });
    assert_eq!(
        out,
        SMALL_XML.replace(
            "<host name='h2' ip='10.0.0.2:80'/>  <!-- two -->",
            "<!-- two -->"
        )
    );
}

#[test]
fn xml_new_hosts_go_where_the_running_config_has_them() {
    let out = in_place("c.xml", SMALL_XML, |c| {
        let hosts = &mut c.services[0].groups[0].hosts;
        hosts.insert(0, host("first", "10.0.0.9:1"));
        hosts.insert(2, host("middle", "10.0.0.9:2"));
        hosts.push(host("last", "10.0.0.9:3"));
    });
    let expected = SMALL_XML.replace(
        "      <host name='h1' ip='10.0.0.1:80'/>\n      <host name='h2' ip='10.0.0.2:80'/>  <!-- two -->\n",
        "      <host name=\"first\" ip=\"10.0.0.9:1\" weight=\"1\"/>
      <host name='h1' ip='10.0.0.1:80'/>
      <host name=\"middle\" ip=\"10.0.0.9:2\" weight=\"1\"/>
      <host name='h2' ip='10.0.0.2:80'/>  <!-- two -->
      <host name=\"last\" ip=\"10.0.0.9:3\" weight=\"1\"/>
",
    );
    assert_eq!(out, expected);
}

#[test]
fn xml_empty_element_opens_for_children() {
    let out = in_place("c.xml", SMALL_XML, |c| {
        c.services[0].groups[1]
            .hosts
            .push(host("s1", "10.0.1.1:80"));
    });
    let expected = SMALL_XML.replace(
        "    <group name=\"s\" scheduler=\"rand\"/>\n",
        "    <group name=\"s\" scheduler=\"rand\">
      <host name=\"s1\" ip=\"10.0.1.1:80\" weight=\"1\"/>
    </group>
",
    );
    assert_eq!(out, expected);
}

#[test]
fn xml_enabled_group_switched_by_flags() {
    let out = in_place("c.xml", SMALL_XML, |c| {
        c.services[0].groups[1]
            .hosts
            .push(host("s1", "10.0.1.1:80"));
        c.services[0].enabled_group = "s".into();
    });
    assert!(
        out.contains("<group name='g' scheduler='roundr' enable='false'>"),
        "{out}"
    );
    assert!(
        out.contains("<group name=\"s\" scheduler=\"rand\" enable=\"true\">"),
        "{out}"
    );
}

#[test]
fn xml_enabled_group_switched_by_name() {
    let out = in_place("c.xml", XML_FIXTURE, |c| {
        c.services[0].enabled_group = "upgrade".into();
    });
    assert_eq!(
        out,
        XML_FIXTURE.replace("<enable group=\"main\" />", "<enable group=\"upgrade\" />")
    );
}

#[test]
fn xml_new_group_in_empty_parent_uses_the_file_step() {
    let text = "<config>\n\t<service name=\"w\">\n\t\t<listen ip=\"*:1\"/>\n\t\t<group name=\"g\" enable=\"1\"><host name=\"h\" ip=\"a:1\"/></group>\n\t</service>\n</config>\n";
    let out = in_place("c.xml", text, |c| {
        c.services[0].groups.push(GroupConfig {
            name: "n".into(),
            scheduler: SchedulerKind::Random,
            hosts: Vec::new().into(),
            options: Default::default(),
            check: None,
            agent: None,
        });
    });
    assert!(
        out.contains(
            "</group>\n\t\t<group name=\"n\" scheduler=\"rand\">\n\t\t</group>\n\t</service>"
        ),
        "{out:?}"
    );
}

#[test]
fn xml_crlf_files_get_crlf_lines() {
    let text = SMALL_XML.replace('\n', "\r\n");
    let out = in_place("c.xml", &text, |c| {
        c.services[0].groups[0].hosts.remove(0);
        c.services[0].groups[0]
            .hosts
            .push(host("h3", "10.0.0.3:80"));
        c.services[0].groups[1]
            .hosts
            .push(host("s1", "10.0.1.1:80"));
    });
    assert_eq!(
        out.matches('\n').count(),
        out.matches("\r\n").count(),
        "{out:?}"
    );
    assert!(!out.contains("h1"));
}

const SMALL_TOML: &str = r#"# one
[[service]]
name = "web"  # the site
listen = [ "*:80" ]

[[service.group]]
name = "g"
scheduler = "roundr"   # was rand
enable = true
hosts = [
  { name = "h1", ip = "10.0.0.1:80" },  # first
  { name = "h2", ip = "10.0.0.2:80" },  # second
]
"#;

#[test]
fn toml_values_replaced_keeping_comments() {
    let out = in_place("c.toml", SMALL_TOML, |c| {
        c.services[0].groups[0].scheduler = SchedulerKind::LeastConns;
        c.services[0].groups[0].hosts.edit(0).address = parse_host_address("[::1]:81").unwrap();
    });
    let expected = SMALL_TOML
        .replace("scheduler = \"roundr\"", "scheduler = \"leastc\"")
        .replace("\"10.0.0.1:80\"", "\"[::1]:81\"");
    assert_eq!(out, expected);
}

#[test]
fn toml_array_entries_removed_and_inserted_by_line() {
    let out = in_place("c.toml", SMALL_TOML, |c| {
        let hosts = &mut c.services[0].groups[0].hosts;
        hosts.remove(0);
        hosts.insert(0, host("new", "10.0.0.3:80"));
        hosts.push(host("last", "10.0.0.4:80"));
    });
    let expected = SMALL_TOML.replace(
        "  { name = \"h1\", ip = \"10.0.0.1:80\" },  # first\n  { name = \"h2\", ip = \"10.0.0.2:80\" },  # second\n",
        "  { name = \"new\", ip = \"10.0.0.3:80\", weight = 1 },\n  { name = \"h2\", ip = \"10.0.0.2:80\" },  # second\n  { name = \"last\", ip = \"10.0.0.4:80\", weight = 1 },\n",
    );
    assert_eq!(out, expected);
    let out = in_place("c.toml", SMALL_TOML, |c| {
        let hosts = &mut c.services[0].groups[0].hosts;
        hosts.remove(hosts.len() - 1);
    });
    assert_eq!(
        out,
        SMALL_TOML.replace("  { name = \"h2\", ip = \"10.0.0.2:80\" },  # second\n", "")
    );
}

#[test]
fn toml_listeners_in_one_line_array() {
    let out = in_place("c.toml", SMALL_TOML, |c| {
        c.services[0]
            .listeners
            .push(parse_listen_addr("*:81").unwrap().into());
    });
    assert!(out.contains("listen = [ \"*:80\", \"*:81\" ]"), "{out}");
    let out = in_place("c.toml", &out, |c| {
        c.services[0].listeners.remove(0);
    });
    assert!(out.contains("listen = [ \"*:81\" ]"), "{out}");
}

#[test]
fn unexpressible_changes_fall_back_to_a_full_rendering() {
    for (path, text) in [("c.xml", SMALL_XML), ("c.toml", SMALL_TOML)] {
        let rendered = rewrite(path, text, |c| {
            let hosts = &mut c.services[0].groups[0].hosts;
            *hosts = hosts.iter().rev().cloned().collect();
        });
        assert!(!rendered.preserved);
        assert!(!rendered.text.contains("one"));
    }
}

#[test]
fn unchanged_config_renders_the_original() {
    for (path, text) in [("c.xml", XML_FIXTURE), ("c.toml", TOML_FIXTURE)] {
        let rendered = rewrite(path, text, |c| c.source = Some("elsewhere".into()));
        assert_eq!(rendered.text, text);
    }
}

#[test]
fn relative_paths_stay_relative() {
    for (path, text) in [("conf/c.xml", XML_FIXTURE), ("conf/c.toml", TOML_FIXTURE)] {
        let out = in_place(path, text, |c| {
            c.logging.file = Some("conf/other.log".into());
        });
        assert!(out.contains("\"other.log\""), "{out}");
        // The full rendering does the same.
        let rendered = rewrite(path, text, |c| {
            c.logging = LoggingConfig {
                file: Some("conf/logs/x.log".into()),
                ..LoggingConfig::default()
            };
            c.services.reverse();
        });
        assert!(!rendered.preserved);
        assert!(
            rendered.text.contains("\"logs/x.log\""),
            "{}",
            rendered.text
        );
    }
}

#[test]
fn paths_outside_the_directory_are_written_whole() {
    assert_eq!(
        written_path(Path::new("/var/log/x"), Some(Path::new("conf"))),
        "/var/log/x"
    );
    assert_eq!(
        written_path(Path::new("conf/x"), Some(Path::new("conf"))),
        "x"
    );
    assert_eq!(written_path(Path::new("x"), None), "x");
}

#[test]
fn same_config_ignores_the_source() {
    let a = Config::from_text(Path::new("a.xml"), SMALL_XML).unwrap();
    let mut b = a.clone();
    b.source = None;
    assert!(same_config(&a, &b));
    b.services[0].name = "other".into();
    assert!(!same_config(&a, &b));
}

#[test]
fn diffs_are_unified() {
    assert_eq!(unified_diff("a", "x\n", "b", "x\n"), "");
    let d = unified_diff("a", "x\ny\n", "b", "x\nz\n");
    assert!(d.starts_with("--- a\n+++ b\n@@"), "{d}");
    assert!(d.contains("-y\n+z\n"), "{d}");
}

#[test]
fn missing_file_is_a_read_error() {
    let boot = Config::from_text(Path::new("c.xml"), SMALL_XML).unwrap();
    let err = save(Path::new("/nonexistent/dir/c.xml"), SMALL_XML, &boot, &boot).unwrap_err();
    assert!(matches!(err, WriteBackError::Read { .. }), "{err}");
}

/// A random change of the kinds the admin plane makes.
fn random_change(c: &mut Config, rng: &mut fastrand::Rng, n: usize) {
    let s = rng.usize(..c.services.len());
    if rng.u8(..4) == 0 {
        random_route_change(c, s, rng, n);
        return;
    }
    let removable = c.services.len() > 1 && c.check_unrouted(&c.services[s].name).is_ok();
    let service = &mut c.services[s];
    if service.groups.is_empty() {
        return;
    }
    let g = rng.usize(..service.groups.len());
    match rng.u8(..11) {
        0 => {
            let at = rng.usize(..=service.groups[g].hosts.len());
            let new = host(
                &format!("r{n}"),
                &format!("10.9.{}.{}:80", n / 200, n % 200),
            );
            service.groups[g].hosts.insert(at, new);
        }
        1 if service.groups[g].hosts.len() > 1
            || service.groups[g].name != service.enabled_group =>
        {
            let len = service.groups[g].hosts.len();
            if len > 0 {
                service.groups[g].hosts.remove(rng.usize(..len));
            }
        }
        2 => {
            let group = &mut service.groups[g];
            group.scheduler = SchedulerKind::ALL[rng.usize(..SchedulerKind::ALL.len())];
            group.options.slow_start = match rng.u8(..3) {
                0 => None,
                1 => Some(std::time::Duration::from_millis(1500 + 500 * rng.u64(..4))),
                _ => group.options.slow_start,
            };
            group.check = match rng.u8(..4) {
                0 => None,
                1 => Some(CheckConfig {
                    rise: 1 + rng.u32(..5),
                    path: "/healthz".into(),
                    ..CheckConfig::of(CheckKind::Http)
                }),
                2 => Some(CheckConfig {
                    send: Escaped(b"PING\r\n".to_vec()),
                    expect: Escaped(b"+PONG".to_vec()),
                    ..CheckConfig::of(CheckKind::Send)
                }),
                _ => group.check.clone(),
            };
        }
        3 if !service.groups[g].hosts.is_empty() => {
            service.enabled_group = service.groups[g].name.clone();
        }
        4 => service.groups.push(GroupConfig {
            name: format!("rg{n}"),
            scheduler: SchedulerKind::Weighted,
            hosts: (0..rng.usize(..3))
                .map(|i| {
                    let ip = format!("10.{}.{}.{i}:80", n / 256, n % 256);
                    host(&format!("h{i}"), &ip)
                })
                .collect(),
            options: Default::default(),
            check: None,
            agent: None,
        }),
        5 if service.groups[g].name != service.enabled_group => {
            service.groups.remove(g);
        }
        6 => service.listeners.push(
            parse_listen_addr(&format!("127.0.0.2:{}", 30000 + n))
                .unwrap()
                .into(),
        ),
        7 => {
            let mut new = service.clone();
            new.name = format!("copy{n}");
            new.listeners = vec![
                parse_listen_addr(&format!("127.0.0.3:{}", 30000 + n))
                    .unwrap()
                    .into(),
            ];
            c.services.push(new);
        }
        8 if removable => {
            c.services.remove(s);
        }
        10 => {
            // Reached by routes only: no listener.
            let mut new = service.clone();
            new.name = format!("bare{n}");
            new.listeners.clear();
            c.services.push(new);
        }
        9 => {
            let admin = c.admin.get_or_insert_with(Default::default);
            if admin.users.is_empty() || rng.bool() {
                admin.users.push(crate::config::UserConfig {
                    name: format!("u{n}"),
                    password_hash: "x".into(),
                    access: crate::config::Access::Full,
                });
            } else {
                let i = rng.usize(..admin.users.len());
                admin.users.remove(i);
            }
        }
        _ => {}
    }
}

/// A random change of a listener's routes (added, removed, changed, moved)
/// or its inspection settings, on service `s`.
fn random_route_change(c: &mut Config, s: usize, rng: &mut fastrand::Rng, n: usize) {
    let name = c.services[s].name.clone();
    let targets: Vec<String> = c
        .services
        .iter()
        .filter(|t| t.name != name && !t.groups.is_empty())
        .map(|t| t.name.clone())
        .collect();
    let service = &mut c.services[s];
    if service.listeners.is_empty() {
        return;
    }
    let l = rng.usize(..service.listeners.len());
    let listener = &mut service.listeners[l];
    let len = listener.routes.len();
    // A service without groups keeps a route on every listener.
    let removable = len > 1 || !service.groups.is_empty();
    match rng.u8(..5) {
        0 | 1 if !targets.is_empty() => {
            let mut route = crate::config::Route::to(&targets[rng.usize(..targets.len())]);
            match rng.u8(..3) {
                0 => route.sni = Some(format!("r{n}.example.com")),
                1 => {
                    route.protocol = Some(crate::config::ClientProtocol::Http);
                    route.host = Some(format!("h{n}.example.com"));
                }
                _ => route.alpn = Some(format!("a{n}")),
            }
            listener.routes.insert(rng.usize(..=len), route);
        }
        2 if len > 0 && removable => {
            listener.routes.remove(rng.usize(..len));
        }
        3 if len > 0 => {
            let i = rng.usize(..len);
            listener.routes[i].sni = Some(format!("*.c{n}.example.org"));
            listener.routes[i].protocol = None;
            listener.routes[i].host = None;
            if len > 1 {
                let moved = listener.routes.remove(i);
                listener.routes.insert(rng.usize(..len), moved);
            }
        }
        _ => {
            listener.options.inspect_timeout =
                std::time::Duration::from_millis(500 * rng.u64(1..10));
            listener.options.inspect_bytes = rng.u32(1..=crate::config::MAX_INSPECT_BYTES);
        }
    }
}

#[test]
fn random_changes_always_round_trip() {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut kept = 0;
    let mut total = 0;
    for (path, fixture) in [
        ("c.xml", XML_FIXTURE),
        ("c.toml", TOML_FIXTURE),
        ("s.xml", SMALL_XML),
        ("s.toml", SMALL_TOML),
        (
            "x.xml",
            include_str!("../../../tests/fixtures/txlb-confex.xml"),
        ),
        ("r.xml", ROUTES_XML),
        ("r.toml", ROUTES_TOML),
    ] {
        let path = Path::new(path);
        let mut text = fixture.to_string();
        let mut boot = Config::from_text(path, &text).unwrap();
        for round in 0..40 {
            let mut running = boot.clone();
            for k in 0..rng.usize(1..4) {
                random_change(&mut running, &mut rng, round * 10 + k);
            }
            let rendered = render(path, &text, &boot, &running)
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()));
            let reloaded = Config::from_text(path, &rendered.text).unwrap();
            assert!(same_config(&reloaded, &running));
            total += 1;
            kept += usize::from(rendered.preserved);
            text = rendered.text;
            boot = reloaded;
        }
    }
    // Changes the admin plane makes are (nearly) always made in place.
    assert!(
        kept * 10 >= total * 9,
        "only {kept} of {total} kept the file"
    );
}

#[test]
fn inconsistent_originals_never_panic() {
    for (path, fixture, other) in [
        ("c.xml", XML_FIXTURE, SMALL_XML),
        ("c.toml", TOML_FIXTURE, SMALL_TOML),
    ] {
        let path = Path::new(path);
        let boot = Config::from_text(path, fixture).unwrap();
        let mut running = boot.clone();
        running.services[0].groups[0]
            .hosts
            .push(host("n", "10.0.0.1:1"));
        running.services.remove(1);
        let mut originals: Vec<&str> = vec![other, ""];
        originals.extend(
            (0..fixture.len())
                .step_by(7)
                .filter_map(|i| fixture.get(..i)),
        );
        for original in originals {
            // Whatever the text, the result is a file loading into `running`.
            if let Ok(rendered) = render(path, original, &boot, &running) {
                let reloaded = Config::from_text(path, &rendered.text).unwrap();
                assert!(same_config(&reloaded, &running));
            }
        }
    }
}

#[test]
fn ssh_key_paths_written_back_relative() {
    const XML: &str = "<config>
  <service name='web'>
    <listen ip='*:80'/>
    <group name='g' scheduler='roundr' enable='yes'>
      <host name='h1' ip='10.0.0.1:80'/>
    </group>
  </service>
  <admin>
    <ssh listen='127.0.0.1:2222'/>
  </admin>
</config>
";
    let out = in_place("conf/c.xml", XML, |c| {
        let ssh = c.admin.as_mut().unwrap().ssh.as_mut().unwrap();
        ssh.authorized_keys = Some("conf/keys".into());
        ssh.host_key = Some("/etc/host.key".into());
    });
    assert!(out.contains("authorizedKeys=\"keys\""), "{out}");
    assert!(out.contains("hostKey=\"/etc/host.key\""), "{out}");
    // Removing one falls back to the full rendering, which still says it right.
    let with = Config::from_text(Path::new("conf/c.xml"), &out).unwrap();
    let mut running = with.clone();
    running
        .admin
        .as_mut()
        .unwrap()
        .ssh
        .as_mut()
        .unwrap()
        .host_key = None;
    let rendered = render(Path::new("conf/c.xml"), &out, &with, &running).unwrap();
    assert!(!rendered.preserved);
    assert!(rendered.text.contains("authorizedKeys=\"keys\""));
    assert!(!rendered.text.contains("hostKey"));
    let toml = "[[service]]
name = \"web\"
listen = [\"*:80\"]
[[service.group]]
name = \"g\"
enable = true
hosts = [{ name = \"h1\", ip = \"10.0.0.1:80\" }]

[admin.ssh]
listen = \"127.0.0.1:2222\"  # the console
";
    let boot = Config::from_text(Path::new("conf/c.toml"), toml).unwrap();
    let mut running = boot.clone();
    running
        .admin
        .as_mut()
        .unwrap()
        .ssh
        .as_mut()
        .unwrap()
        .authorized_keys = Some("conf/keys".into());
    let rendered = render(Path::new("conf/c.toml"), toml, &boot, &running).unwrap();
    assert!(rendered.preserved, "{}", rendered.text);
    assert!(
        rendered.text.contains("authorized_keys = \"keys\""),
        "{}",
        rendered.text
    );
    assert!(rendered.text.contains("# the console"), "{}", rendered.text);
}

#[test]
fn access_log_settings_are_written_back_in_place() {
    for (path, text) in [
        (
            "c.xml",
            "<config>\n  <!-- keep -->\n  <service name=\"s\"><listen ip=\"*:1\"/><group name=\"g\" enable=\"1\"><host name=\"h\" ip=\"a:1\"/></group></service>\n  <logging file=\"main.log\"/>\n</config>\n",
        ),
        (
            "c.toml",
            "# keep\n[[service]]\nname = \"s\"\nlisten = [\"*:1\"]\n[[service.group]]\nname = \"g\"\nenable = true\nhosts = [{ name = \"h\", ip = \"a:1\" }]\n\n[logging]\nfile = \"main.log\" # main\n",
        ),
    ] {
        let out = in_place(path, text, |c| {
            c.logging.access = Some(
                c.logging
                    .file
                    .as_ref()
                    .unwrap()
                    .with_file_name("access.log"),
            );
            c.logging.access_format = crate::config::AccessFormat::Json;
        });
        assert!(out.contains("keep"), "{out}");
        assert!(out.contains("access.log"), "{out}");
        assert!(out.contains("json"), "{out}");
    }
}

/// A listener's own settings: kept byte for byte by unrelated changes, set,
/// changed and removed in place, and written with a new listener.
#[test]
fn xml_listener_settings_in_place() {
    let text = SMALL_XML.replace(
        "<listen ip='*:80'/>",
        "<listen ip='*:80'/>\n    <listen ip='*:8080'  acceptProxy='true' trustedProxies='10.0.0.0/8, 192.168.1.1'/>  <!-- lb -->",
    );
    let line = "<listen ip='*:8080'  acceptProxy='true' trustedProxies='10.0.0.0/8, 192.168.1.1'/>  <!-- lb -->";
    // Unrelated change: the listen lines stay as written.
    let out = in_place("c.xml", &text, |c| {
        c.services[0].groups[0].hosts.edit(1).weight = 3;
    });
    assert!(out.contains(line), "{out}");
    assert!(out.contains("<listen ip='*:80'/>\n"), "{out}");
    // One setting changed, one set on a plain listener, one added with a new listener.
    let out = in_place("c.xml", &text, |c| {
        let l = &mut c.services[0].listeners;
        l[1].options.accept_proxy = Some(false);
        l[0].options.trusted_proxies = Some(vec![crate::config::parse_net("::1").unwrap()]);
        let mut new = crate::config::Listener::new(parse_listen_addr("*:81").unwrap());
        new.options.accept_proxy = Some(true);
        l.push(new);
    });
    assert!(
        out.contains("<listen ip='*:8080'  acceptProxy='false' trustedProxies='10.0.0.0/8, 192.168.1.1'/>  <!-- lb -->"),
        "{out}"
    );
    assert!(
        out.contains("<listen ip='*:80' trustedProxies=\"::1/128\"/>"),
        "{out}"
    );
    assert!(
        out.contains("<listen ip=\"*:81\" acceptProxy=\"true\"/>"),
        "{out}"
    );
    // Back to the service's settings: the attributes go.
    let out = in_place("c.xml", &text, |c| {
        c.services[0].listeners[1].options = Default::default();
    });
    assert!(out.contains("<listen ip='*:8080'/>  <!-- lb -->"), "{out}");
}

#[test]
fn toml_listener_settings_in_place() {
    let text = "[[service]]
name = \"web\"
listen = [
  \"*:80\",   # direct
  { ip = \"*:8080\", accept_proxy = true, trusted_proxies = [\"10.0.0.0/8\"] },  # behind the lb
]

  [[service.group]]
  name = \"g\"
  enable = true
  hosts = [ { name = \"h1\", ip = \"10.0.0.1:80\" } ]
";
    let unrelated = in_place("c.toml", text, |c| {
        c.services[0].groups[0].hosts.edit(0).weight = 2;
    });
    let (head, _) = text.split_once("\n\n").unwrap();
    assert!(unrelated.starts_with(head), "{unrelated}");
    let out = in_place("c.toml", text, |c| {
        let l = &mut c.services[0].listeners;
        l[1].options.accept_proxy = None;
        l[0].options.accept_proxy = Some(true);
    });
    assert!(
        out.contains("  { ip = \"*:80\", accept_proxy = true },   # direct\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "  { ip = \"*:8080\", trusted_proxies = [\"10.0.0.0/8\"] },  # behind the lb\n"
        ),
        "{out}"
    );
    let out = in_place("c.toml", text, |c| {
        let mut new = crate::config::Listener::new(parse_listen_addr("*:81").unwrap());
        new.options.trusted_proxies = Some(Vec::new());
        c.services[0].listeners.push(new);
    });
    assert!(
        out.contains("{ ip = \"*:81\", trusted_proxies = [] }"),
        "{out}"
    );
}

#[test]
fn save_reply_writes_atomically_keeps_a_backup_and_refuses_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    let original = "<config>\n  <service name=\"s\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
         <group name=\"g\" enable=\"true\"><host name=\"h\" ip=\"127.0.0.1:1\"/></group>\n  \
         </service>\n</config>\n";
    fs::write(&path, original).unwrap();
    let (text, boot) = load(&path).unwrap();
    let writeback = WriteBack::new(&path, text, boot.clone());
    let mut running = boot;
    running.services[0].groups[0].hosts.edit(0).weight = 7;
    let reply = writeback.save_reply(&running).unwrap();
    assert!(reply.starts_with("configuration saved to "), "{reply}");
    assert!(
        reply.ends_with("lb.xml: written, comments and layout kept"),
        "{reply}"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("lb.xml.bak")).unwrap(),
        original
    );
    assert!(same_config(&Config::from_path(&path).unwrap(), &running));
    // No temporary file is left beside it.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // Edited on disk since: left alone, and the reply says why.
    fs::write(&path, original.replace("127.0.0.1:1", "127.0.0.1:2")).unwrap();
    running.services[0].groups[0].hosts.edit(0).weight = 8;
    let refused = writeback.save_reply(&running).unwrap_err();
    assert!(
        refused.contains("edited on disk since it was loaded"),
        "{refused}"
    );
    assert!(fs::read_to_string(&path).unwrap().contains("127.0.0.1:2"));
}

/// Routes on listeners, in both formats, with comments to keep.
const ROUTES_XML: &str = "<config>
  <service name='edge'>
    <listen ip='*:443'>
      <route sni='api.example.com' service='api'/>  <!-- the API -->
      <!-- ssh on 443 too -->
      <route protocol='ssh' service='api'/>
    </listen>
    <listen ip='*:80'/>
    <group name='g' enable='yes'><host name='e' ip='10.0.0.9:80'/></group>
  </service>
  <!-- reached by routes -->
  <service name='api'>
    <group name='g' enable='yes'><host name='a' ip='10.0.0.1:443'/></group>
  </service>
  <service name='front'>
    <listen ip='*:8443'>
      <route sni='*' service='api'/>
    </listen>
  </service>
</config>
";

const ROUTES_TOML: &str = r#"[[service]]
name = "edge"
listen = [
  { ip = "*:443", routes = [
    { sni = "api.example.com", service = "api" },  # the API
    # ssh on 443 too
    { protocol = "ssh", service = "api" },
  ] },
  "*:80",  # plain
]

  [[service.group]]
  name = "g"
  enable = true
  hosts = [ { name = "e", ip = "10.0.0.9:80" } ]

# reached by routes
[[service]]
name = "api"

  [[service.group]]
  name = "g"
  enable = true
  hosts = [ { name = "a", ip = "10.0.0.1:443" } ]

[[service]]
name = "front"

  [[service.listen]]   # the front door
  ip = "*:8443"

    [[service.listen.routes]]
    sni = "*"
    service = "api"
"#;

fn sni_route(sni: &str, service: &str) -> crate::config::Route {
    crate::config::Route {
        sni: Some(sni.into()),
        ..crate::config::Route::to(service)
    }
}

#[test]
fn xml_routes_added_removed_and_changed_in_place() {
    // Added between two routes, the comments stay where they were.
    let out = in_place("c.xml", ROUTES_XML, |c| {
        c.services[0].listeners[0]
            .routes
            .insert(1, sni_route("*.example.org", "api"));
    });
    assert_eq!(
        out,
        ROUTES_XML.replace(
            "<!-- the API -->\n",
            "<!-- the API -->\n      <route sni=\"*.example.org\" service=\"api\"/>\n"
        )
    );
    // Removed: its line goes, the comments stay.
    let out = in_place("c.xml", ROUTES_XML, |c| {
        c.services[0].listeners[0].routes.remove(1);
    });
    assert_eq!(
        out,
        ROUTES_XML.replace("      <route protocol='ssh' service='api'/>\n", "")
    );
    // Changed: that route's line only.
    let out = in_place("c.xml", ROUTES_XML, |c| {
        c.services[0].listeners[0].routes[0].sni = Some("api2.example.com".into());
    });
    assert_eq!(
        out,
        ROUTES_XML.replace(
            "<route sni='api.example.com' service='api'/>",
            "<route sni=\"api2.example.com\" service=\"api\"/>"
        )
    );
    // The first route on a plain listener opens its element; settings set.
    let out = in_place("c.xml", ROUTES_XML, |c| {
        let l = &mut c.services[0].listeners[1];
        l.routes.push(sni_route("web.example.com", "api"));
        l.options.inspect_timeout = std::time::Duration::from_secs(2);
    });
    assert!(
        out.contains(
            "    <listen ip='*:80' inspectTimeout=\"2\">\n      <route sni=\"web.example.com\" service=\"api\"/>\n    </listen>\n"
        ),
        "{out}"
    );
    assert!(out.contains("<!-- ssh on 443 too -->"), "{out}");
    // A service added with no listener, and one with no group.
    let out = in_place("c.xml", ROUTES_XML, |c| {
        let mut bare = c.services[1].clone();
        bare.name = "bare".into();
        c.services.push(bare);
        let mut front = c.services[2].clone();
        front.name = "front2".into();
        front.listeners[0].addr.port = 8444;
        c.services.push(front);
    });
    assert!(
        out.starts_with(&ROUTES_XML.replace("</config>\n", "")),
        "{out}"
    );
    assert!(
        out.contains(
            "  <service name=\"bare\">\n    <group name=\"g\" scheduler=\"roundr\" enable=\"true\">"
        ),
        "{out}"
    );
    assert!(
        out.contains("  <service name=\"front2\">\n    <listen ip=\"*:8444\">\n      <route sni=\"*\" service=\"api\"/>\n    </listen>\n  </service>"),
        "{out}"
    );
}

#[test]
fn toml_routes_added_removed_and_changed_in_place() {
    let out = in_place("c.toml", ROUTES_TOML, |c| {
        c.services[0].listeners[0]
            .routes
            .insert(1, sni_route("*.example.org", "api"));
    });
    assert!(
        out.contains("    { sni = \"api.example.com\", service = \"api\" },  # the API\n    { sni = \"*.example.org\", service = \"api\" },\n    # ssh on 443 too\n"),
        "{out}"
    );
    let out = in_place("c.toml", ROUTES_TOML, |c| {
        c.services[0].listeners[0].routes.remove(1);
    });
    assert!(!out.contains("ssh") && out.contains("# the API\n"), "{out}");
    // The plain entry becomes a table with its routes; its comment stays.
    let out = in_place("c.toml", ROUTES_TOML, |c| {
        let l = &mut c.services[0].listeners[1];
        l.routes.push(sni_route("web.example.com", "api"));
    });
    assert!(
        out.contains("{ ip = \"*:80\", routes = [\n    { sni = \"web.example.com\", service = \"api\" },\n  ] },  # plain\n"),
        "{out}"
    );
    // [[service.listen]] tables: a route added, a setting set.
    let out = in_place("c.toml", ROUTES_TOML, |c| {
        let l = &mut c.services[2].listeners[0];
        l.routes.insert(0, sni_route("first.example.com", "api"));
        l.options.inspect_bytes = 512;
    });
    assert!(
        out.contains("[[service.listen]]   # the front door\n  ip = \"*:8443\"\n"),
        "{out}"
    );
    assert!(out.contains("inspect_bytes = 512"), "{out}");
    assert!(out.contains("sni = \"first.example.com\""), "{out}");
    // A service added with no listener, and one with no group.
    let out = in_place("c.toml", ROUTES_TOML, |c| {
        let mut bare = c.services[1].clone();
        bare.name = "bare".into();
        c.services.push(bare);
        let mut front = c.services[2].clone();
        front.name = "front2".into();
        front.listeners[0].addr.port = 8444;
        c.services.push(front);
    });
    assert!(out.starts_with(ROUTES_TOML), "{out}");
    // Every route of a listener removed: its routes key goes.
    let out = in_place("c.toml", ROUTES_TOML, |c| {
        c.services[0].listeners[0].routes.clear();
    });
    assert!(
        out.contains("listen = [\n  \"*:443\",\n  \"*:80\",  # plain\n]"),
        "{out}"
    );
}

#[test]
fn routes_kept_when_a_service_without_groups_gets_one() {
    for (path, text) in [("c.xml", ROUTES_XML), ("c.toml", ROUTES_TOML)] {
        let out = in_place(path, text, |c| {
            c.services[2].groups.push(GroupConfig::new(
                "late",
                SchedulerKind::RoundRobin,
                vec![host("l", "10.0.0.7:443")],
            ));
            c.services[2].enabled_group = "late".into();
        });
        assert!(out.contains("late"), "{out}");
        assert!(
            out.contains("# the API") || out.contains("<!-- the API -->"),
            "{out}"
        );
    }
}

/// A terminating listener, in both formats, with comments to keep.
const TLS_XML: &str = "<config>
  <service name='redis'>
    <listen ip='127.0.0.1:6380'>
      <!-- the main name -->
      <tls cert='/etc/t/a.pem' key='/etc/t/a.key' alpn='redis' minVersion='1.3'/>
      <tls cert='/etc/t/b.pem' key='/etc/t/b.key'/>  <!-- other -->
      <route sni='b.example.com' service='other'/>
    </listen>
    <group name='g' enable='yes'><host name='r' ip='127.0.0.1:6379'/></group>
  </service>
  <service name='other'>
    <group name='g' enable='yes'><host name='o' ip='127.0.0.1:6381'/></group>
  </service>
</config>
";

const TLS_TOML: &str = r#"[[service]]
name = "redis"
listen = [
  { ip = "127.0.0.1:6380", tls = [
    # the main name
    { cert = "/etc/t/a.pem", key = "/etc/t/a.key", alpn = ["redis"], min_version = "1.3" },
    { cert = "/etc/t/b.pem", key = "/etc/t/b.key" },  # other
  ], routes = [{ sni = "b.example.com", service = "other" }] },
]

  [[service.group]]
  name = "g"
  enable = true
  hosts = [ { name = "r", ip = "127.0.0.1:6379" } ]

[[service]]
name = "other"

  [[service.group]]
  name = "g"
  enable = true
  hosts = [ { name = "o", ip = "127.0.0.1:6381" } ]
"#;

#[test]
fn tls_kept_when_something_else_changes_and_edited_in_place() {
    for (path, text) in [("c.xml", TLS_XML), ("c.toml", TLS_TOML)] {
        // A host added elsewhere: the tls entries and their comments stay.
        let out = in_place(path, text, |c| {
            let mut host = c.services[0].groups[0].hosts[0].clone();
            host.name = "r2".into();
            host.address.port = 6390;
            c.services[0].groups[0].hosts.push(host);
        });
        for kept in ["the main name", "other", "/etc/t/a.pem", "/etc/t/b.key"] {
            assert!(out.contains(kept), "{path}: {out}");
        }
        // The second certificate changed: its entry only; the first's
        // settings stay on the first.
        let out = in_place(path, text, |c| {
            let tls = c.services[0].listeners[0].tls.as_mut().unwrap();
            tls.certs[1].cert = "/etc/t/c.pem".into();
            tls.certs
                .push(crate::config::TlsCert::new("/etc/t/d.pem", "/etc/t/d.key"));
        });
        assert!(out.contains("# the main name") || out.contains("<!-- the main name -->"));
        assert!(
            out.contains("/etc/t/c.pem") && out.contains("/etc/t/d.key"),
            "{out}"
        );
        assert!(!out.contains("/etc/t/b.pem"), "{out}");
        let reread = match path.ends_with(".xml") {
            true => Config::from_xml_str(&out),
            false => Config::from_toml_str(&out),
        }
        .unwrap();
        let tls = reread.services[0].listeners[0].tls.as_ref().unwrap();
        assert_eq!(tls.certs.len(), 3, "{out}");
        assert_eq!(tls.options.alpn, vec!["redis".to_string()]);
        // TLS removed: the listener stays, its routes too.
        let out = in_place(path, text, |c| {
            c.services[0].listeners[0].tls = None;
            c.services[0].listeners[0].routes.clear();
        });
        assert!(!out.contains("a.pem"), "{out}");
        assert!(out.contains("127.0.0.1:6380"), "{out}");
    }
}

#[test]
fn tls_origination_settings_written_back_in_both_formats() {
    let xml = SMALL_XML.replace(
        "<group name='g' scheduler='roundr' enable='yes'>",
        "<group name='g' scheduler='roundr' enable='yes' tls='true' tlsVerify='ca.pem' tlsSni='db.test' tlsCert='c.pem' tlsKey='c.key' tlsAlpn='postgresql'>",
    );
    // In place: a host's override set, the group's SNI changed; the files
    // stay named as written.
    let out = in_place("conf/c.xml", &xml, |c| {
        let group = &mut c.services[0].groups[0];
        group.hosts.edit(1).options.tls_sni = Some("h2.test".into());
        group.hosts.edit(0).options.tls = Some(false);
        group.options.tls_sni = Some("other.test".into());
    });
    assert!(out.contains("tlsVerify='ca.pem'"), "{out}");
    assert!(out.contains("tlsSni='other.test'"), "{out}");
    assert!(out.contains("tlsSni=\"h2.test\""), "{out}");
    assert!(out.contains("tls=\"false\""), "{out}");
    // A full rendering, in XML and TOML, reads back the same.
    let boot = Config::from_text(Path::new("conf/c.xml"), &xml).unwrap();
    let toml = crate::config::to_toml(&boot);
    assert!(toml.contains("tls_verify = \"ca.pem\""), "{toml}");
    for (path, text) in [("conf/c.xml", &xml), ("conf/c.toml", &toml)] {
        let rendered = rewrite(path, text, |c| c.services[0].groups.reverse());
        assert!(!rendered.preserved);
        assert!(rendered.text.contains("db.test"), "{}", rendered.text);
    }
}

#[test]
fn acme_listeners_and_settings_written_back_in_both_formats() {
    let xml = TLS_XML.replace(
        "<tls cert='/etc/t/a.pem' key='/etc/t/a.key' alpn='redis' minVersion='1.3'/>\n      <tls cert='/etc/t/b.pem' key='/etc/t/b.key'/>  <!-- other -->",
        "<tls acme='a.example.com b.example.com' alpn='redis'/>  <!-- from ACME -->",
    )
    .replace(
        "</config>",
        "  <acme directory='https://acme.test/dir' storage='/var/lib/txlb/acme'/>\n</config>",
    );
    let toml = TLS_TOML
        .replace(
            "    { cert = \"/etc/t/a.pem\", key = \"/etc/t/a.key\", alpn = [\"redis\"], min_version = \"1.3\" },\n    { cert = \"/etc/t/b.pem\", key = \"/etc/t/b.key\" },  # other\n",
            "    { acme = \"a.example.com b.example.com\", alpn = [\"redis\"] },  # from ACME\n",
        )
        + "\n[acme]\ndirectory = \"https://acme.test/dir\"\nstorage = \"/var/lib/txlb/acme\"\n";
    for (path, text) in [("c.xml", xml.as_str()), ("c.toml", toml.as_str())] {
        // Something else changes: the <tls acme> and its comment stay.
        let out = in_place(path, text, |c| {
            c.services[0].groups[0]
                .hosts
                .push(host("r2", "127.0.0.1:6390"));
        });
        for kept in ["from ACME", "a.example.com b.example.com", "acme.test/dir"] {
            assert!(out.contains(kept), "{path}: {out}");
        }
        // The names change: that entry only.
        let out = in_place(path, text, |c| {
            let tls = c.services[0].listeners[0].tls.as_mut().unwrap();
            tls.acme = vec![crate::config::AcmeCert::new(["c.example.com"])];
        });
        assert!(
            out.contains("c.example.com") && !out.contains("b.example.com b"),
            "{out}"
        );
        // From ACME to files and back.
        rewrite(path, text, |c| {
            let tls = c.services[0].listeners[0].tls.as_mut().unwrap();
            tls.acme.clear();
            tls.certs
                .push(crate::config::TlsCert::new("/etc/t/d.pem", "/etc/t/d.key"));
        });
        // <acme> changed: rendered in full, and it reads back the same.
        let out = rewrite(path, text, |c| {
            c.acme.as_mut().unwrap().renew_before = Duration::from_secs(3600);
        })
        .text;
        assert!(out.contains("3600"), "{out}");
    }
}
