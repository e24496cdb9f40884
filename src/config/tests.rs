//! Cross-format tests: fixtures, error locations, round trips, no panics.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::config::SchedulerKind;

const CONFEX_XML: &str = include_str!("../../tests/fixtures/txlb-confex.xml");
const CONFIG_XML: &str = include_str!("../../tests/fixtures/txlb-config.xml");

/// A small valid service; tests mutate copies of it.
const BASE: &str = r#"<config>
  <service name="web">
    <listen ip="*:8080"/>
    <group name="g" scheduler="roundr" enable="true">
      <host name="h1" ip="10.0.0.1:80"/>
    </group>
  </service>
</config>
"#;

fn listen(host: ListenHost, port: u16) -> ListenAddr {
    ListenAddr { host, port }
}

/// Loads `xml`, expecting an error at `line:col` whose message contains `needle`.
#[track_caller]
fn xml_err(xml: &str, line: u32, col: u32, needle: &str) {
    let err = Config::from_xml_str(xml).expect_err("expected an error");
    let loc = err.location().expect("a located error");
    let shown = err.to_string();
    assert_eq!((loc.line, loc.column), (line, col), "{shown}");
    assert!(
        shown.starts_with(&format!("<string>:{line}:{col}: ")),
        "{shown}"
    );
    assert!(shown.contains(needle), "{shown:?} lacks {needle:?}");
}

#[track_caller]
fn toml_err(text: &str, line: u32, col: u32, needle: &str) {
    let err = Config::from_toml_str(text).expect_err("expected an error");
    let loc = err.location().expect("a located error");
    let shown = err.to_string();
    assert_eq!((loc.line, loc.column), (line, col), "{shown}");
    assert!(shown.contains(needle), "{shown:?} lacks {needle:?}");
}

#[test]
fn base_loads() {
    let c = Config::from_xml_str(BASE).unwrap();
    assert_eq!(
        c.services[0].listeners,
        [listen(ListenHost::Any, 8080).into()]
    );
    assert_eq!(c.services[0].connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(c.manager, ManagerConfig::default());
    assert_eq!(c.admin, None);
    assert_eq!(c.logging.file, None);
}

#[test]
fn fixture_confex_loads() {
    let c = Config::from_xml_str(CONFEX_XML).unwrap();
    assert_eq!(c.services.len(), 2);
    let prod = &c.services[0];
    assert_eq!(prod.name, "prod-http");
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(prod.listeners, [listen(ListenHost::Ip(ip), 8000).into()]);
    // Given by <enable group="main"/>, no group has an enable attribute.
    assert_eq!(prod.enabled_group, "main");
    assert_eq!(prod.groups.len(), 2);
    assert_eq!(prod.groups[0].scheduler, SchedulerKind::LeastConns);
    assert_eq!(prod.groups[1].hosts[2].name, "seven");
    assert_eq!(
        prod.groups[1].hosts[2].address.to_string(),
        "127.0.0.1:8007"
    );
    assert_eq!(c.services[1].listeners[0].to_string(), "127.0.0.2:8000");
    let admin = c.admin.as_ref().unwrap();
    let web = admin.web.as_ref().unwrap();
    assert_eq!(
        web.listen,
        listen(ListenHost::Name("localhost".into()), 7001)
    );
    assert!(web.enable && !web.secure);
    assert_eq!(web.refresh, DEFAULT_ADMIN_REFRESH);
    assert_eq!(admin.ssh, None);
    assert_eq!(
        admin.users,
        [UserConfig {
            name: "fulluser".into(),
            password_hash: "iy9l0V1MkG1DE".into(),
            access: Access::Full,
        }]
    );
    assert_eq!(c.logging.file, Some(PathBuf::from("pydir.log")));
    assert_eq!(c.manager, ManagerConfig::default());
    assert_eq!(c.control, None);
}

#[test]
fn fixture_config_loads() {
    let c = Config::from_xml_str(CONFIG_XML).unwrap();
    assert_eq!(c.services.len(), 3);
    let lorien = &c.services[0];
    assert_eq!(
        lorien.listeners,
        [
            listen(ListenHost::Any, 8080).into(),
            listen(ListenHost::Any, 8081).into()
        ]
    );
    assert_eq!(lorien.enabled_group, "servers1");
    let servers1 = &lorien.groups[0];
    assert_eq!(servers1.scheduler, SchedulerKind::Weighted);
    let weights: Vec<u32> = servers1.hosts.iter().map(|h| h.weight).collect();
    assert_eq!(weights, [1, 5, 1, 20, 10]);
    assert_eq!(servers1.hosts[0].address.host, "lorien");
    assert_eq!(servers1.hosts[0].address.port, 1901);
    assert_eq!(lorien.groups[1].scheduler, SchedulerKind::LeastConns);
    assert!(lorien.groups[1].hosts.iter().all(|h| h.weight == 1));
    assert_eq!(c.services[1].enabled_group, "servers");
    assert_eq!(c.services[2].groups[0].scheduler, SchedulerKind::RoundRobin);
    let admin = c.admin.as_ref().unwrap();
    let web = admin.web.as_ref().unwrap();
    assert_eq!(web.listen, listen(ListenHost::Any, 7000));
    assert!(web.enable && web.secure);
    assert_eq!(web.refresh, Duration::from_secs(10));
    let ssh = admin.ssh.as_ref().unwrap();
    assert_eq!(
        ssh.listen,
        listen(ListenHost::Name("localhost".into()), 2222)
    );
    assert!(ssh.enable);
    assert_eq!(admin.users[0].name, "admin");
    assert_eq!(admin.users[0].password_hash, "..xpoEyRReGzk");
    assert_eq!(c.manager, ManagerConfig::default());
    assert_eq!(c.logging.file, None);
}

#[test]
fn from_path_sets_source_and_resolves_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.xml");
    let xml = CONFEX_XML.replace(
        "<logging file=\"pydir.log\"/>",
        "<logging file=\"pydir.log\"/><control socket=\"/run/txlb.sock\"/>",
    );
    std::fs::write(&path, xml).unwrap();
    let c = Config::from_path(&path).unwrap();
    assert_eq!(c.source.as_deref(), Some(path.as_path()));
    assert_eq!(c.logging.file, Some(dir.path().join("pydir.log")));
    assert_eq!(c.control.unwrap().socket, PathBuf::from("/run/txlb.sock"));

    // The extension picks the format; errors name the file.
    let toml_path = dir.path().join("txlb.toml");
    std::fs::write(&toml_path, "[[service]]\nname = 1\n").unwrap();
    let err = Config::from_path(&toml_path).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}:2:8: ", toml_path.display())),
        "{err}"
    );

    let missing = dir.path().join("nope.xml");
    let err = Config::from_path(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err}");
    assert!(err.to_string().contains("nope.xml"));
}

#[test]
fn malformed_xml_is_located() {
    // Mismatched end tag: quick-xml points at the offending end tag.
    xml_err(
        "<config>\n  <service name=\"a\">\n  </servic>\n</config>\n",
        3,
        3,
        "malformed XML",
    );
    // Unclosed element at end of input.
    xml_err(
        BASE.replace("</config>\n", "").as_str(),
        1,
        1,
        "<config> is not closed",
    );
    // Unclosed tag.
    xml_err("<config>\n  <service name=\"a\"", 2, 3, "malformed XML");
    // Attribute without a value.
    xml_err(
        "<config>\n  <service name>\n</config>",
        2,
        16,
        "malformed XML",
    );
    // Unquoted attribute value.
    xml_err(
        "<config>\n  <service name=a>\n</config>",
        2,
        17,
        "malformed XML",
    );
    // Duplicate attribute.
    xml_err(
        "<config>\n  <service name=\"a\" name=\"b\">\n</config>",
        2,
        21,
        "duplicate attribute",
    );
    // Unknown entity in an attribute value.
    xml_err(
        &BASE.replace("name=\"h1\"", "name=\"&nope;\""),
        5,
        19,
        "malformed XML",
    );
    // Nothing at all.
    xml_err("", 1, 1, "no <config> element");
    xml_err("<!-- only a comment -->", 1, 1, "no <config> element");
    // Two roots.
    xml_err(&format!("{BASE}<config/>"), 9, 1, "expected one root");
}

#[test]
fn unknown_scheduler() {
    xml_err(
        &BASE.replace("roundr", "fastest"),
        4,
        32,
        "unknown scheduler \"fastest\" (expected one of: rand, random, roundr",
    );
}

#[test]
fn missing_scheduler_defaults_to_roundr() {
    let c = Config::from_xml_str(&BASE.replace(" scheduler=\"roundr\"", "")).unwrap();
    assert_eq!(c.services[0].groups[0].scheduler, DEFAULT_SCHEDULER);
    assert_eq!(DEFAULT_SCHEDULER, SchedulerKind::RoundRobin);
}

#[test]
fn enabled_group_rules() {
    // None enabled: at the service element.
    xml_err(
        &BASE.replace(" enable=\"true\"", ""),
        2,
        3,
        "service \"web\" has no enabled group",
    );
    // enable="false" is not enabled either.
    xml_err(
        &BASE.replace(" enable=\"true\"", " enable=\"no\""),
        2,
        3,
        "no enabled group",
    );
    let two = r#"<config>
  <service name="web">
    <listen ip="*:8080"/>
    <group name="a" enable="yes"><host name="h" ip="h:1"/></group>
    <group name="b" enable="1"><host name="h" ip="h:1"/></group>
  </service>
</config>"#;
    xml_err(two, 5, 29, "more than one enabled group: \"a\" and \"b\"");
    // <enable> naming an unknown group: at its attribute.
    let nope = BASE.replace(
        "    </group>\n",
        "    </group>\n    <enable group=\"nope\"/>\n",
    );
    xml_err(
        &nope,
        7,
        20,
        "no group named \"nope\" to enable (groups: g)",
    );
    // <enable> disagreeing with an enable attribute.
    let disagree = two
        .replace(" enable=\"1\"", "")
        .replace("  </service>", "    <enable group=\"b\"/>\n  </service>");
    xml_err(&disagree, 4, 29, "enables group \"a\" here but group \"b\"");
    // Agreeing is fine.
    let agree = two
        .replace(" enable=\"1\"", "")
        .replace("  </service>", "    <enable group=\"a\"/>\n  </service>");
    assert_eq!(
        Config::from_xml_str(&agree).unwrap().services[0].enabled_group,
        "a"
    );
    // The enabled group needs a host; standby groups may be empty.
    let empty_standby = two.replace(" enable=\"1\"><host name=\"h\" ip=\"h:1\"/>", ">");
    assert!(
        Config::from_xml_str(&empty_standby).unwrap().services[0].groups[1]
            .hosts
            .is_empty()
    );
    let empty_enabled = two
        .replace(" enable=\"yes\"><host name=\"h\" ip=\"h:1\"/>", ">")
        .replace(
            " enable=\"1\"><host name=\"h\" ip=\"h:1\"/>",
            " enable=\"true\">",
        );
    // An enabled group without a host loads (a service newService made,
    // saved before its hosts came): its clients are closed meanwhile.
    let loaded = Config::from_xml_str(&empty_enabled).unwrap();
    let service = &loaded.services[0];
    assert_eq!(service.enabled_group, "b");
    assert!(
        service
            .groups
            .iter()
            .all(|g| g.name != "b" || g.hosts.is_empty())
    );
}

#[test]
fn bad_ips() {
    let with_ip = |ip: &str| BASE.replace("10.0.0.1:80", ip);
    // Line 5 is `      <host name="h1" ip="10.0.0.1:80"/>`; the value starts at col 27.
    xml_err(&with_ip("lorien"), 5, 27, "bad ip \"lorien\": no port");
    xml_err(
        &with_ip("lorien:70000"),
        5,
        27,
        "bad ip \"lorien:70000\": port 70000 out of range",
    );
    xml_err(&with_ip(":80"), 5, 27, "bad ip \":80\": empty host");
    xml_err(&with_ip("::1:80"), 5, 27, "need brackets");
    xml_err(
        &BASE.replace(" ip=\"10.0.0.1:80\"", ""),
        5,
        7,
        "ip of host \"h1\" is missing",
    );
    assert!(Config::from_xml_str(&with_ip("[::1]:80")).is_ok());
    assert!(Config::from_xml_str(&with_ip("unresolvable.invalid:80")).is_ok());
    // Listeners: bad port, and the same address twice across services.
    xml_err(
        &BASE.replace("*:8080", "*:http"),
        3,
        17,
        "bad listen address \"*:http\": bad port",
    );
    let twice = BASE.replace(
        "  </service>\n",
        "  </service>\n  <service name=\"b\">\n    <listen ip=\"0.0.0.0:8080\"/>\n    <group name=\"g\" enable=\"true\"><host name=\"h\" ip=\"h:1\"/></group>\n  </service>\n",
    );
    xml_err(
        &twice,
        9,
        17,
        "listen address *:8080 is already used by service \"web\"",
    );
    // Port 0 listeners never collide.
    let zeros = twice
        .replace("*:8080", "127.0.0.1:0")
        .replace("0.0.0.0:8080", "127.0.0.1:0");
    assert!(Config::from_xml_str(&zeros).is_ok());
}

#[test]
fn bad_weights() {
    let with_weight = |w: &str| {
        BASE.replace(
            "ip=\"10.0.0.1:80\"",
            &format!("ip=\"10.0.0.1:80\" weight=\"{w}\""),
        )
    };
    for w in ["0", "1.5", "-3", "heavy", ""] {
        xml_err(
            &with_weight(w),
            5,
            48,
            &format!("bad weight \"{w}\": expected an integer of at least 1"),
        );
    }
    assert_eq!(
        Config::from_xml_str(&with_weight("7")).unwrap().services[0].groups[0].hosts[0].weight,
        7
    );
}

#[test]
fn unknown_elements_and_attributes() {
    xml_err(
        &BASE.replace("    </group>", "      <hots name=\"x\"/>\n    </group>"),
        6,
        7,
        "unknown element <hots> in <group> (expected one of: check, agent, host)",
    );
    xml_err(
        &BASE.replace("</config>", "  <loging file=\"x\"/>\n</config>"),
        8,
        3,
        "unknown element <loging> in <config> (expected one of: service, admin, manager, logging, control, cluster, resolver, acme)",
    );
    xml_err(
        &BASE.replace("name=\"h1\"", "name=\"h1\" wieght=\"2\""),
        5,
        23,
        "unknown attribute \"wieght\" on <host> (expected one of: name, ip, weight, maxconn, proxyProtocol, expand, resolve, checkPort, agentPort, tls, tlsSni)",
    );
    xml_err(
        &BASE.replace(
            "<host name=\"h1\" ip=\"10.0.0.1:80\"/>",
            "<host name=\"h1\" ip=\"10.0.0.1:80\"><x/></host>",
        ),
        5,
        40,
        "unknown element <x> in <host> (it takes no child elements)",
    );
    xml_err("<pdconf/>", 1, 1, "unknown root element <pdconf>");
}

#[test]
fn duplicates() {
    xml_err(
        &BASE.replace(
            "      <host name=\"h1\" ip=\"10.0.0.1:80\"/>\n",
            "      <host name=\"h1\" ip=\"10.0.0.1:80\"/>\n      <host name=\"h1\" ip=\"10.0.0.2:80\"/>\n",
        ),
        6,
        19,
        "duplicate host name \"h1\" in group \"g\" of service \"web\"",
    );
    let two_services = format!(
        "{}{}",
        BASE.replace("</config>\n", ""),
        "  <service name=\"web\"><listen ip=\"*:1\"/><group name=\"g\" enable=\"1\"><host ip=\"h:1\"/></group></service>\n</config>"
    );
    xml_err(&two_services, 8, 18, "duplicate service name \"web\"");
    let users = BASE.replace(
        "</config>",
        "  <admin>\n    <user name=\"a\" password=\"x\"/>\n    <user name=\"a\" password=\"y\"/>\n  </admin>\n</config>",
    );
    xml_err(&users, 10, 17, "duplicate user name \"a\"");
    xml_err(
        &BASE.replace("</config>", "  <logging/>\n  <logging/>\n</config>"),
        9,
        3,
        "duplicate <logging> in <config>",
    );
}

#[test]
fn intervals_and_access() {
    let manager = |interval: &str| {
        BASE.replace(
            "</config>",
            &format!(
                "  <manager>\n    <heartbeat interval=\"{interval}\"/>\n  </manager>\n</config>"
            ),
        )
    };
    for bad in ["-1", "NaN", "soon", "0"] {
        xml_err(&manager(bad), 9, 26, &format!("bad interval \"{bad}\""));
    }
    let c = Config::from_xml_str(&manager("0.5")).unwrap();
    assert_eq!(c.manager.heartbeat.interval, Duration::from_millis(500));
    // Missing enable keeps the task's default (heartbeat: off).
    assert!(!c.manager.heartbeat.enable);
    assert_eq!(c.manager.host_check, ManagerConfig::default().host_check);

    let timeout = BASE.replace("name=\"web\"", "name=\"web\" connectTimeout=\"1.25\"");
    assert_eq!(
        Config::from_xml_str(&timeout).unwrap().services[0].connect_timeout,
        Duration::from_millis(1250)
    );
    xml_err(
        &BASE.replace("name=\"web\"", "name=\"web\" connectTimeout=\"x\""),
        2,
        39,
        "bad connect timeout \"x\"",
    );

    let slow = BASE.replace("enable=\"true\"", "enable=\"true\" slowStart=\"2.5\"");
    let c = Config::from_xml_str(&slow).unwrap();
    assert_eq!(
        c.services[0].groups[0].options.slow_start,
        Some(Duration::from_millis(2500))
    );
    // 0 means no slow start.
    let off =
        Config::from_xml_str(&BASE.replace("enable=\"true\"", "enable=\"true\" slowStart=\"0\""))
            .unwrap();
    assert_eq!(off.services[0].groups[0].options.slow_start, None);
    for bad in ["-3", "soon"] {
        xml_err(
            &BASE.replace(
                "enable=\"true\"",
                &format!("enable=\"true\" slowStart=\"{bad}\""),
            ),
            4,
            65,
            &format!("bad slowStart \"{bad}\""),
        );
    }
    // TOML: integer or float seconds, the same model as XML.
    let with_slow = |value: &str| {
        FULL_TOML.replace(
            "  scheduler = \"weightr\"",
            &format!("  scheduler = \"weightr\"\n  slow_start = {value}"),
        )
    };
    let t = Config::from_toml_str(&with_slow("30")).unwrap();
    let x = Config::from_xml_str(&FULL_XML.replace(
        "scheduler=\"weighted\"",
        "scheduler=\"weighted\" slowStart=\"30\"",
    ))
    .unwrap();
    assert_eq!(t, x);
    assert_eq!(t.services[0].groups[0].options.slow_start, None);
    assert_eq!(
        t.services[0].groups[1].options.slow_start,
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        Config::from_toml_str(&with_slow("0.25")).unwrap().services[0].groups[1]
            .options
            .slow_start,
        Some(Duration::from_millis(250))
    );
    assert_eq!(
        Config::from_toml_str(&with_slow("0")).unwrap().services[0].groups[1]
            .options
            .slow_start,
        None
    );
    toml_err(&with_slow("-1"), 20, 16, "bad slowStart -1");
    for kind in SchedulerKind::ALL {
        let xml = BASE.replace("roundr", kind.name());
        assert_eq!(
            Config::from_xml_str(&xml).unwrap().services[0].groups[0].scheduler,
            kind
        );
    }

    let user = BASE.replace(
        "</config>",
        "  <admin>\n    <user name=\"a\" password=\"x\" access=\"admin\"/>\n  </admin>\n</config>",
    );
    xml_err(
        &user,
        9,
        41,
        "bad access \"admin\": expected full or readonly",
    );
    let ro = user.replace("\"admin\"", "\"readonly\"");
    assert_eq!(
        Config::from_xml_str(&ro).unwrap().admin.unwrap().users[0].access,
        Access::ReadOnly
    );
}

#[test]
fn ignorable_content_is_ignored() {
    let noisy = r#"<?xml version="1.0"?>
<!DOCTYPE config>
<config>
  stray text &amp; more
  <!-- a comment with <service> inside -->
  <note>anything <at all="1"><service/></at> here</note>
  <service name="web"><![CDATA[ <bogus/> ]]>
    <note/>
    <listen ip="*:8080"><note>why</note></listen>
    text
    <group name="g" scheduler="roundr" enable="true">
      <note><nested><note>deep</note></nested></note>
      <host name="h1" ip="10.0.0.1:80"><!-- c --></host>
    </group>
  </service>
</config>
trailing text
"#;
    let c = Config::from_xml_str(noisy).unwrap();
    let mut base = Config::from_xml_str(BASE).unwrap();
    base.source = None;
    assert_eq!(c, base);
}

/// The TOML equivalent of the confex fixture plus the optional parts.
const FULL_TOML: &str = r#"
[[service]]
name = "web"
listen = ["0.0.0.0:8080", "[::1]:8081"]
enabled_group = "prod"
connect_timeout = 2.5

  [[service.group]]
  name = "prod"
  scheduler = "leastconns"
  enable = true
  hosts = [
    { name = "h1", ip = "10.0.0.1:80", weight = 5 },
    { name = "h2", ip = "lorien:80" },
  ]

  [[service.group]]
  name = "standby"
  scheduler = "weightr"
  hosts = [ { name = "h3", ip = "[2001:db8::3]:80", weight = 2 } ]

[admin.web]
listen = "localhost:7000"
secure = true
refresh = 0.5

[admin.ssh]
listen = "localhost:2222"
enable = false

[[admin.user]]
name = "admin"
password = "..xpoEyRReGzk"

[[admin.user]]
name = "viewer"
password = "$6$salt$hash"
access = "readonly"

[manager]
host_check = { interval = 5 }
heartbeat = { interval = 20, enable = true }

[logging]
file = "txlb.log"

[control]
socket = "/run/txlb.sock"
"#;

const FULL_XML: &str = r#"<config>
  <service name="web" connectTimeout="2.5">
    <listen ip="*:8080"/>
    <listen ip="[::1]:8081"/>
    <group name="prod" scheduler="leastc">
      <host name="h1" ip="10.0.0.1:80" weight="5"/>
      <host name="h2" ip="lorien:80"/>
    </group>
    <group name="standby" scheduler="weighted">
      <host name="h3" ip="[2001:db8::3]:80" weight="2"/>
    </group>
    <enable group="prod"/>
  </service>
  <admin>
    <web listen="localhost:7000" secure="on" refresh="0.5"/>
    <ssh listen="localhost:2222" enable="false"/>
    <user name="admin" password="..xpoEyRReGzk"/>
    <user name="viewer" password="$6$salt$hash" access="readonly"/>
  </admin>
  <manager>
    <hostCheck interval="5"/>
    <heartbeat interval="20" enable="TRUE"/>
  </manager>
  <logging file="txlb.log"/>
  <control socket="/run/txlb.sock"/>
</config>
"#;

#[test]
fn toml_and_xml_give_the_same_model() {
    let t = Config::from_toml_str(FULL_TOML).unwrap();
    let x = Config::from_xml_str(FULL_XML).unwrap();
    assert_eq!(t, x);
    assert_eq!(t.services[0].connect_timeout, Duration::from_millis(2500));
    assert_eq!(t.manager.host_check.interval, Duration::from_secs(5));
    assert!(t.manager.host_check.enable && t.manager.heartbeat.enable);
    assert!(!t.admin.as_ref().unwrap().ssh.as_ref().unwrap().enable);
}

#[test]
fn toml_errors_are_located() {
    // Syntax error.
    toml_err("[[service]]\nname = \"a\nlisten = []\n", 2, 10, "");
    // Unknown key.
    toml_err(
        &FULL_TOML.replace("  scheduler = \"weightr\"", "  schedular = \"weightr\""),
        19,
        3,
        "unknown key \"schedular\" in [[service.group]]",
    );
    // Wrong type: booleans are real booleans.
    toml_err(
        &FULL_TOML.replace("enable = true\n  hosts", "enable = \"yes\"\n  hosts"),
        11,
        12,
        "",
    );
    // Shared rules, shared messages.
    toml_err(
        &FULL_TOML.replace("\"leastconns\"", "\"fastest\""),
        10,
        16,
        "unknown scheduler \"fastest\"",
    );
    toml_err(
        &FULL_TOML.replace("\"lorien:80\"", "\"lorien\""),
        14,
        26,
        "bad ip \"lorien\": no port",
    );
    toml_err(
        &FULL_TOML.replace("weight = 5", "weight = 0"),
        13,
        49,
        "bad weight 0: expected an integer of at least 1",
    );
    toml_err(
        &FULL_TOML.replace("interval = 5", "interval = -1"),
        41,
        27,
        "bad interval -1",
    );
    let none = FULL_TOML
        .replace("enabled_group = \"prod\"\n", "")
        .replace("enable = true\n", "");
    toml_err(&none, 2, 1, "service \"web\" has no enabled group");
    toml_err(
        &FULL_TOML.replace("enabled_group = \"prod\"", "enabled_group = \"nope\""),
        5,
        18,
        "no group named \"nope\"",
    );
    toml_err(
        &FULL_TOML.replace("access = \"readonly\"", "access = \"root\""),
        38,
        11,
        "bad access \"root\"",
    );
    toml_err("", 1, 1, "no service defined");
}

/// Compares ignoring `source`.
#[track_caller]
fn same(a: &Config, b: &Config) {
    let (mut a, mut b) = (a.clone(), b.clone());
    a.source = None;
    b.source = None;
    assert_eq!(a, b);
}

#[test]
fn round_trips() {
    let slow = FULL_XML.replace(
        "scheduler=\"weighted\"",
        "scheduler=\"wrr\" slowStart=\"1.5\"",
    );
    for text in [CONFEX_XML, CONFIG_XML, FULL_XML, &slow] {
        let c = Config::from_xml_str(text).unwrap();
        let xml = c.to_xml();
        let back = Config::from_xml_str(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
        same(&c, &back);
        let toml = c.to_toml();
        let back = Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        same(&c, &back);
    }
    // An admin section with nothing in it survives too.
    let empty_admin =
        Config::from_xml_str(&BASE.replace("</config>", "<admin/></config>")).unwrap();
    same(
        &empty_admin,
        &Config::from_xml_str(&empty_admin.to_xml()).unwrap(),
    );
    same(
        &empty_admin,
        &Config::from_toml_str(&empty_admin.to_toml()).unwrap(),
    );
}

/// Random names, hashes and paths full of characters XML and TOML must escape.
#[test]
fn awkward_strings_survive_round_trips() {
    const ALPHABET: &[char] = &[
        'a',
        'Z',
        '0',
        ' ',
        '<',
        '>',
        '&',
        '"',
        '\'',
        '\\',
        '\t',
        '\n',
        '\r',
        ';',
        '#',
        '=',
        '[',
        ']',
        '{',
        '}',
        'é',
        '✓',
        '\u{7f}',
        '\u{1F600}',
        '$',
        '.',
        '/',
        '-',
    ];
    let mut rng = fastrand::Rng::with_seed(0x71b);
    let word = |rng: &mut fastrand::Rng| -> String {
        let len = rng.usize(1..12);
        (0..len)
            .map(|_| ALPHABET[rng.usize(..ALPHABET.len())])
            .collect()
    };
    // Names follow the name rule: the same awkward characters, less those it
    // refuses (controls, and for users spaces and ':').
    let name = |rng: &mut fastrand::Rng, kind: NameKind| -> String {
        loop {
            let name = word(rng);
            if check_name(kind, &name).is_ok() {
                return name;
            }
        }
    };
    for _ in 0..200 {
        let mut c = Config::from_xml_str(FULL_XML).unwrap();
        c.services[0].name = name(&mut rng, NameKind::Service);
        c.services[0].groups[1].name = name(&mut rng, NameKind::Group);
        c.services[0].groups[0].hosts.edit(1).name = name(&mut rng, NameKind::Host);
        c.services[0].connect_timeout =
            Duration::new(rng.u64(0..100_000), rng.u32(..1_000_000_000))
                .max(Duration::from_nanos(1));
        c.manager.config_check.interval = Duration::from_millis(rng.u64(1..10_000_000));
        let admin = c.admin.as_mut().unwrap();
        admin.users[0].name = name(&mut rng, NameKind::User);
        admin.users[0].password_hash = word(&mut rng);
        c.logging.file = Some(PathBuf::from(word(&mut rng)));
        if c.services[0].groups[0].name == c.services[0].groups[1].name
            || c.services[0].groups[0].hosts[0].name == c.services[0].groups[0].hosts[1].name
            || admin.users[0].name == admin.users[1].name
        {
            continue;
        }
        let xml = c.to_xml();
        let back = Config::from_xml_str(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
        same(&c, &back);
        let toml = c.to_toml();
        let back = Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        same(&c, &back);
    }
}

#[test]
fn truncated_input_never_panics() {
    for text in [CONFEX_XML, CONFIG_XML, FULL_XML] {
        for end in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            let _ = Config::from_xml_str(&text[..end]);
        }
    }
    for end in (0..=FULL_TOML.len()).filter(|&i| FULL_TOML.is_char_boundary(i)) {
        let _ = Config::from_toml_str(&FULL_TOML[..end]);
    }
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = fastrand::Rng::with_seed(42);
    let bytes = CONFIG_XML.as_bytes();
    for _ in 0..2000 {
        // Splice random markup characters into the fixture.
        let mut text = bytes.to_vec();
        for _ in 0..rng.usize(1..5) {
            let at = rng.usize(..text.len());
            text[at] = b"<>/=\"'&!?[]- x"[rng.usize(..14)];
        }
        if let Ok(text) = String::from_utf8(text) {
            let _ = Config::from_xml_str(&text);
        }
    }
}

#[test]
fn toml_doc_example_loads() {
    let doc: String = include_str!("toml.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .skip_while(|l| *l != "```toml")
        .skip(1)
        .take_while(|l| *l != "```")
        .map(|l| format!("{l}\n"))
        .collect();
    let c = Config::from_toml_str(&doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
    assert_eq!(c.services[0].enabled_group, "prod");
    assert_eq!(c.services[0].groups[1].scheduler, DEFAULT_SCHEDULER);
}

/// `allowedHosts` and `changesRequirePost`: read, round-tripped in both formats,
/// a bad name refused with its place.
#[test]
fn web_allowed_hosts_and_changes_require_post() {
    let xml = BASE.replace(
        "</config>",
        "<admin><web listen=\"127.0.0.1:7000\" allowedHosts=\"lb.example, [::1]:7000 10.0.0.5:7000\" \
         changesRequirePost=\"true\"/></admin></config>",
    );
    let c = Config::from_xml_str(&xml).unwrap();
    let web = c.admin.as_ref().unwrap().web.as_ref().unwrap();
    assert_eq!(
        web.allowed_hosts,
        ["lb.example", "[::1]:7000", "10.0.0.5:7000"]
    );
    assert!(web.changes_require_post);
    same(&c, &Config::from_xml_str(&c.to_xml()).unwrap());
    let toml = c.to_toml();
    assert!(toml.contains("allowed_hosts = [\"lb.example\""), "{toml}");
    same(&c, &Config::from_toml_str(&toml).unwrap());
    let bad = xml.replace("lb.example", "lb/evil");
    let error = Config::from_xml_str(&bad).unwrap_err().to_string();
    assert!(error.contains("bad allowed host \"lb/evil\""), "{error}");
}

/// `<ssh scriptTimeout>`: read from XML and TOML, written back only when not the
/// default, round-tripped, and refused when not a positive number of seconds.
#[test]
fn ssh_script_timeout() {
    let plain = BASE.replace(
        "</config>",
        "<admin><ssh listen=\"127.0.0.1:2222\"/></admin></config>",
    );
    let c = Config::from_xml_str(&plain).unwrap();
    let ssh = c.admin.as_ref().unwrap().ssh.as_ref().unwrap();
    assert_eq!(ssh.script_timeout, DEFAULT_SCRIPT_TIMEOUT);
    assert!(!c.to_xml().contains("scriptTimeout"));
    let xml = plain.replace("<ssh ", "<ssh scriptTimeout=\"2.5\" ");
    let c = Config::from_xml_str(&xml).unwrap();
    let ssh = c.admin.as_ref().unwrap().ssh.as_ref().unwrap();
    assert_eq!(ssh.script_timeout, Duration::from_millis(2500));
    same(&c, &Config::from_xml_str(&c.to_xml()).unwrap());
    let toml = c.to_toml();
    assert!(toml.contains("script_timeout = 2.5"), "{toml}");
    same(&c, &Config::from_toml_str(&toml).unwrap());
    let bad = xml.replace("2.5", "-1");
    let error = Config::from_xml_str(&bad).unwrap_err().to_string();
    assert!(error.contains("scriptTimeout"), "{error}");
}

/// txlb's own `<web>` attributes: read from XML and TOML, written back only when
/// set, and round-tripped.
#[test]
fn web_metrics_public_cert_and_key() {
    let xml = BASE.replace(
        "</config>",
        "<admin><web listen=\"127.0.0.1:7000\" secure=\"true\" metricsPublic=\"yes\" \
         cert=\"a.crt\" key=\"/etc/a.key\"/></admin></config>",
    );
    let c = Config::from_xml_str(&xml).unwrap();
    let web = c.admin.as_ref().unwrap().web.as_ref().unwrap();
    assert!(web.metrics_public);
    assert_eq!(web.cert.as_deref(), Some(std::path::Path::new("a.crt")));
    assert_eq!(web.key.as_deref(), Some(std::path::Path::new("/etc/a.key")));
    same(&c, &Config::from_xml_str(&c.to_xml()).unwrap());
    same(&c, &Config::from_toml_str(&c.to_toml()).unwrap());
    // Unset, they are not written (files stay readable by txLoadBalancer).
    let plain = Config::from_xml_str(&BASE.replace(
        "</config>",
        "<admin><web listen=\"127.0.0.1:7000\"/></admin></config>",
    ))
    .unwrap();
    let written = plain.to_xml();
    assert!(
        !written.contains("metricsPublic") && !written.contains("cert="),
        "{written}"
    );
    let web = plain.admin.as_ref().unwrap().web.as_ref().unwrap();
    assert!(!web.metrics_public && web.cert.is_none() && web.key.is_none());
    // Relative paths are resolved against the file's directory.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.xml");
    std::fs::write(&path, &xml).unwrap();
    let c = Config::from_path(&path).unwrap();
    let web = c.admin.as_ref().unwrap().web.as_ref().unwrap();
    assert_eq!(
        web.cert.as_deref(),
        Some(dir.path().join("a.crt").as_path())
    );
}

/// txlb's own `<ssh>` attributes: read from XML and TOML, written only when set,
/// round-tripped, relative paths resolved against the file's directory.
#[test]
fn ssh_authorized_keys_and_host_key() {
    let xml = BASE.replace(
        "</config>",
        "<admin><ssh listen=\"127.0.0.1:2222\" authorizedKeys=\"keys\" \
         hostKey=\"/etc/txlb/host.key\"/></admin></config>",
    );
    let c = Config::from_xml_str(&xml).unwrap();
    let ssh = c.admin.as_ref().unwrap().ssh.as_ref().unwrap();
    assert_eq!(ssh.authorized_keys.as_deref(), Some(Path::new("keys")));
    assert_eq!(
        ssh.host_key.as_deref(),
        Some(Path::new("/etc/txlb/host.key"))
    );
    same(&c, &Config::from_xml_str(&c.to_xml()).unwrap());
    same(&c, &Config::from_toml_str(&c.to_toml()).unwrap());
    let plain = Config::from_xml_str(&BASE.replace(
        "</config>",
        "<admin><ssh listen=\"127.0.0.1:2222\"/></admin></config>",
    ))
    .unwrap();
    let written = plain.to_xml();
    assert!(
        !written.contains("authorizedKeys") && !written.contains("hostKey"),
        "{written}"
    );
    assert!(!plain.to_toml().contains("host_key"));
    let toml = c.to_toml();
    assert!(toml.contains("authorized_keys = \"keys\""), "{toml}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.xml");
    std::fs::write(&path, &xml).unwrap();
    let c = Config::from_path(&path).unwrap();
    let ssh = c.admin.as_ref().unwrap().ssh.as_ref().unwrap();
    assert_eq!(
        ssh.authorized_keys.as_deref(),
        Some(dir.path().join("keys").as_path())
    );
    // Unknown attributes are still refused.
    let bad = BASE.replace(
        "</config>",
        "<admin><ssh listen=\"127.0.0.1:2222\" hostkey=\"x\"/></admin></config>",
    );
    assert!(Config::from_xml_str(&bad).is_err());
}

/// Per-listener PROXY settings: read from `<listen>` attributes and `listen`
/// tables, overriding the service's, written back, and round-tripped.
#[test]
fn listener_proxy_settings() {
    let xml = r#"<config>
  <service name="web" acceptProxy="true" trustedProxies="10.1.0.0/16">
    <listen ip="*:80" acceptProxy="false"/>
    <listen ip="*:8080" trustedProxies="10.0.0.0/8, 192.168.1.1"/>
    <listen ip="*:8081"/>
    <group name="g" scheduler="roundr" enable="true">
      <host name="h1" ip="10.0.0.1:80"/>
    </group>
  </service>
</config>
"#;
    let toml = r#"
[[service]]
name = "web"
accept_proxy = true
trusted_proxies = ["10.1.0.0/16"]
listen = [
  { ip = "*:80", accept_proxy = false },
  { ip = "*:8080", trusted_proxies = ["10.0.0.0/8", "192.168.1.1"] },
  "*:8081",
]
  [[service.group]]
  name = "g"
  enable = true
  hosts = [ { name = "h1", ip = "10.0.0.1:80" } ]
"#;
    let x = Config::from_xml_str(xml).unwrap();
    let t = Config::from_toml_str(toml).unwrap();
    assert_eq!(x, t);
    let s = &x.services[0];
    let [plain, behind, default] = &s.listeners[..] else {
        panic!("{:?}", s.listeners)
    };
    assert_eq!(plain.addr, listen(ListenHost::Any, 80));
    assert_eq!(plain.options.accept_proxy, Some(false));
    assert!(!plain.options.accepts_proxy(&s.options));
    assert!(behind.options.accepts_proxy(&s.options));
    let nets: Vec<String> = behind
        .options
        .trusted_proxies(&s.options)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.168.1.1/32"]);
    // Nothing of its own: the service's settings.
    assert_eq!(default.options, ListenOptions::default());
    assert!(default.options.accepts_proxy(&s.options));
    assert_eq!(
        default.options.trusted_proxies(&s.options),
        s.options.trusted_proxies
    );

    // Written back only where set, and loaded again unchanged.
    let written = x.to_xml();
    assert!(
        written.contains("<listen ip=\"*:80\" acceptProxy=\"false\"/>"),
        "{written}"
    );
    assert!(written.contains("<listen ip=\"*:8081\"/>"), "{written}");
    same(&x, &Config::from_xml_str(&written).unwrap());
    let written = x.to_toml();
    assert!(
        written.contains("{ ip = \"*:80\", accept_proxy = false }"),
        "{written}"
    );
    assert!(written.contains(", \"*:8081\"]"), "{written}");
    same(&x, &Config::from_toml_str(&written).unwrap());
    // An explicitly empty list ("any source") is kept apart from "not set".
    let mut any = x.clone();
    any.services[0].listeners[2].options.trusted_proxies = Some(Vec::new());
    same(&any, &Config::from_xml_str(&any.to_xml()).unwrap());
    same(&any, &Config::from_toml_str(&any.to_toml()).unwrap());
}

#[test]
fn listener_setting_errors_are_located() {
    let bad = BASE.replace(
        "<listen ip=\"*:8080\"/>",
        "<listen ip=\"*:8080\" trustedProxies=\"10.0.0.0/33\"/>",
    );
    xml_err(&bad, 3, 41, "bad trustedProxies \"10.0.0.0/33\"");
    let unknown = BASE.replace(
        "<listen ip=\"*:8080\"/>",
        "<listen ip=\"*:8080\" maxconn=\"3\"/>",
    );
    xml_err(&unknown, 3, 25, "maxconn");
    let toml = |listen: &str| {
        format!(
            "[[service]]\nname = \"web\"\nlisten = [{listen}]\n  [[service.group]]\n  name = \"g\"\n  enable = true\n  hosts = [ {{ name = \"h\", ip = \"10.0.0.1:80\" }} ]\n"
        )
    };
    toml_err(
        &toml("{ ip = \"*:80\", accept_proxy = \"yes\" }"),
        3,
        41,
        "bad acceptProxy \"yes\": expected true or false",
    );
    toml_err(
        &toml("\"*:81\", { ip = \"*:80\", trusted_proxies = [\"nope\"] }"),
        3,
        52,
        "not a network",
    );
    toml_err(
        &toml("{ ip = \"*:80\", acept_proxy = true }"),
        3,
        26,
        "unknown key \"acept_proxy\" in a listen table",
    );
    toml_err(&toml("{ accept_proxy = true }"), 3, 11, "listen address");
    toml_err(&toml("{ ip = \"*\" }"), 3, 19, "bad listen address \"*\"");
    toml_err(&toml("5"), 3, 11, "a listen address or a table with ip");
}

/// BASE with `line` (one element) inserted before `</config>`, on line 8.
fn with_cluster(line: &str) -> String {
    BASE.replace("</config>", &format!("{line}\n</config>"))
}

#[test]
fn cluster_loads_from_xml_and_toml() {
    let xml = with_cluster(
        r#"<cluster etcd="http://127.0.0.1:2379, http://10.0.0.2:2379/" prefix="/txlb/prod/" name="lb-1"/>"#,
    );
    let c = Config::from_xml_str(&xml).unwrap();
    let expected = ClusterConfig {
        endpoints: vec![
            "http://127.0.0.1:2379".to_string(),
            "http://10.0.0.2:2379".to_string(),
        ],
        prefix: "/txlb/prod".to_string(),
        name: "lb-1".to_string(),
    };
    assert_eq!(c.cluster.as_ref(), Some(&expected));
    // Both writers keep it, and both readers read it back.
    assert_eq!(
        Config::from_xml_str(&c.to_xml()).unwrap().cluster,
        c.cluster
    );
    assert_eq!(
        Config::from_toml_str(&c.to_toml()).unwrap().cluster,
        c.cluster
    );
    let toml = "[[service]]\nname = \"web\"\nlisten = [\"*:80\"]\n[[service.group]]\nname = \"g\"\nenable = true\n\
                hosts = [{ name = \"h\", ip = \"10.0.0.1:80\" }]\n\
                [cluster]\netcd = \"http://127.0.0.1:2379,http://10.0.0.2:2379\"\nprefix = \"/txlb/prod\"\nname = \"lb-1\"\n";
    assert_eq!(Config::from_toml_str(toml).unwrap().cluster, Some(expected));
    assert_eq!(Config::from_xml_str(BASE).unwrap().cluster, None);
}

#[test]
fn cluster_errors_are_located() {
    let ok = r#"etcd="http://127.0.0.1:2379" prefix="/txlb" name="lb1""#;
    xml_err(
        &with_cluster(&format!("<cluster {ok} nmae=\"x\"/>")),
        8,
        65,
        "unknown attribute \"nmae\" on <cluster> (expected one of: etcd, prefix, name)",
    );
    xml_err(
        &with_cluster(r#"<cluster prefix="/txlb" name="lb1"/>"#),
        8,
        1,
        "etcd endpoint (etcd=\"http://HOST:PORT\") is missing",
    );
    xml_err(
        &with_cluster(r#"<cluster etcd="127.0.0.1:2379" prefix="/txlb" name="lb1"/>"#),
        8,
        16,
        "bad etcd endpoint \"127.0.0.1:2379\": not an http:// URL",
    );
    xml_err(
        &with_cluster(r#"<cluster etcd="http://a:1,https://b:2" prefix="/txlb" name="lb1"/>"#),
        8,
        16,
        "bad etcd endpoint \"https://b:2\": TLS to etcd is not supported",
    );
    xml_err(
        &with_cluster(r#"<cluster etcd="http://a:0" prefix="/txlb" name="lb1"/>"#),
        8,
        16,
        "no host and port",
    );
    xml_err(
        &with_cluster(r#"<cluster etcd="http://a:1" prefix="txlb" name="lb1"/>"#),
        8,
        36,
        "bad key prefix \"txlb\": expected a path such as /txlb/prod",
    );
    xml_err(
        &with_cluster(r#"<cluster etcd="http://a:1" prefix="/txlb" name="lb 1"/>"#),
        8,
        49,
        "bad instance name \"lb 1\"",
    );
    xml_err(
        &with_cluster(r#"<cluster etcd="http://a:1" prefix="/txlb" name="lb1"><x/></cluster>"#),
        8,
        54,
        "unknown element <x> in <cluster>",
    );
    xml_err(
        &with_cluster(&format!("<cluster {ok}/><cluster {ok}/>")),
        8,
        66,
        "duplicate <cluster> in <config>",
    );
    let toml = "[[service]]\nname = \"web\"\nlisten = [\"*:80\"]\n[[service.group]]\nname = \"g\"\nenable = true\n\
                hosts = [{ name = \"h\", ip = \"10.0.0.1:80\" }]\n[cluster]\n";
    toml_err(
        &format!("{toml}etcd = \"http://a:1\"\nprefix = \"/p\"\nname = \"\"\n"),
        11,
        9,
        "bad instance name \"\": empty",
    );
    toml_err(
        &format!("{toml}etcd = \"\"\nprefix = \"/p\"\nname = \"n\"\n"),
        9,
        9,
        "bad etcd endpoint \"\": empty",
    );
    toml_err(
        &format!("{toml}etcd = \"http://a:1\"\nprefx = \"/p\"\nname = \"n\"\n"),
        10,
        1,
        "unknown field `prefx`",
    );
}

#[test]
fn write_back_keeps_the_cluster_element() {
    let text = with_cluster(
        r#"  <cluster etcd="http://127.0.0.1:2379" prefix="/txlb" name="lb1"/> <!-- mine -->"#,
    );
    let path = Path::new("/etc/txlb/config.xml");
    let boot = Config::from_text(path, &text).unwrap();
    let mut running = boot.clone();
    running.services[0].groups[0].hosts.edit(0).weight = 3;
    let rendered = writeback::render(path, &text, &boot, &running).unwrap();
    assert!(rendered.preserved);
    assert!(rendered.text.contains("<!-- mine -->"), "{}", rendered.text);
    let back = Config::from_text(path, &rendered.text).unwrap();
    assert_eq!(back.cluster, boot.cluster);
    // A changed <cluster> is written too (in full).
    running.cluster.as_mut().unwrap().name = "lb2".into();
    let rendered = writeback::render(path, &text, &boot, &running).unwrap();
    let back = Config::from_text(path, &rendered.text).unwrap();
    assert_eq!(back.cluster.unwrap().name, "lb2");
}
#[test]
fn backup_groups() {
    let xml = r#"<config>
  <service name="web">
    <listen ip="*:8080"/>
    <group name="a" enable="yes"><host name="h" ip="h:1"/></group>
    <group name="b" backup="true"><host name="h" ip="h:1"/></group>
  </service>
</config>"#;
    let c = Config::from_xml_str(xml).unwrap();
    assert!(!c.services[0].groups[0].options.backup);
    assert!(c.services[0].groups[1].options.backup);
    // The same in TOML.
    let toml = r#"
[[service]]
name = "web"
listen = ["*:8080"]
  [[service.group]]
  name = "a"
  enable = true
  hosts = [{ name = "h", ip = "h:1" }]
  [[service.group]]
  name = "b"
  backup = true
  hosts = [{ name = "h", ip = "h:1" }]
"#;
    assert_eq!(Config::from_toml_str(toml).unwrap().services, c.services);
    // The enabled group cannot be a backup group: at the backup attribute.
    let both = xml.replace("enable=\"yes\">", "enable=\"yes\" backup=\"on\">");
    xml_err(
        &both,
        4,
        34,
        "group \"a\" is both enabled and a backup group",
    );
    let named = xml
        .replace(" enable=\"yes\"", "")
        .replace("  </service>", "    <enable group=\"b\"/>\n  </service>");
    xml_err(
        &named,
        5,
        21,
        "group \"b\" is both enabled and a backup group",
    );
    let toml_both = toml.replace("  enable = true\n", "  enable = true\n  backup = true\n");
    toml_err(&toml_both, 8, 3, "is both enabled and a backup group");
    xml_err(
        &xml.replace("backup=\"true\"", "backup=\"true\" nonsense=\"1\""),
        5,
        35,
        "expected one of: name, scheduler, enable, slowStart, proxyProtocol, retryEmpty, retryEmptyBytes, retryEmptyTimeout, backup, onMarkedDown, failLimit, ejectTime, maxEjectPercent, allBad, tls, tlsVerify, tlsSni, tlsCert, tlsKey, tlsAlpn",
    );
}

#[test]
fn resolver_and_dns_host_settings() {
    let xml = BASE
        .replace(
            "<host name=\"h1\" ip=\"10.0.0.1:80\"/>",
            "<host name=\"h1\" ip=\"app.test:80\" expand=\"true\" resolve=\"2.5\"/>",
        )
        .replace(
            "</config>",
            "  <resolver nameserver=\"127.0.0.1:5353, ::1\" minTtl=\"1\" maxTtl=\"60\"/>\n</config>",
        );
    let c = Config::from_xml_str(&xml).unwrap();
    let host = &c.services[0].groups[0].hosts[0];
    assert!(host.options.expand);
    assert_eq!(host.options.resolve, Some(Duration::from_millis(2500)));
    assert_eq!(
        c.resolver.nameservers,
        [
            "127.0.0.1:5353".parse().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    assert_eq!(c.resolver.min_ttl, Duration::from_secs(1));
    assert_eq!(c.resolver.max_ttl, Duration::from_secs(60));
    // Both writers keep it, and it loads back the same.
    for text in [c.to_xml(), c.to_toml()] {
        let again = if text.starts_with('<') {
            Config::from_xml_str(&text)
        } else {
            Config::from_toml_str(&text)
        }
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(again.resolver, c.resolver, "{text}");
        assert_eq!(again.services, c.services, "{text}");
    }
    let toml =
        FULL_TOML.to_string() + "\n[resolver]\nnameserver = [\"127.0.0.1:5353\"]\nmin_ttl = 0.5\n";
    let t = Config::from_toml_str(&toml).unwrap();
    assert_eq!(t.resolver.nameservers, ["127.0.0.1:5353".parse().unwrap()]);
    assert_eq!(t.resolver.min_ttl, Duration::from_millis(500));
    assert_eq!(t.resolver.max_ttl, DEFAULT_MAX_TTL);
    // Defaults: the system's name servers.
    assert_eq!(
        Config::from_xml_str(BASE).unwrap().resolver,
        ResolverOptions::default()
    );
    // Errors, located.
    let bad = xml.replace("127.0.0.1:5353, ::1", "ns1.example");
    xml_err(
        &bad,
        8,
        25,
        "bad nameserver \"ns1.example\": \"ns1.example\" is not a name server address",
    );
    let swapped = xml.replace("maxTtl=\"60\"", "maxTtl=\"0.5\"");
    xml_err(
        &swapped,
        8,
        3,
        "resolver minTtl (1) is longer than maxTtl (0.5)",
    );
    xml_err(
        &xml.replace("minTtl=", "ttl="),
        8,
        46,
        "unknown attribute \"ttl\" on <resolver> (expected one of: nameserver, minTtl, maxTtl)",
    );
    let twice = xml.replace("</config>", "<resolver/></config>");
    xml_err(&twice, 9, 1, "duplicate <resolver>");
    toml_err(
        &(FULL_TOML.to_string() + "\n[resolver]\nmin_ttl = -1\n"),
        51,
        11,
        "bad minTtl -1",
    );
    toml_err(
        &(FULL_TOML.to_string() + "\n[resolver]\nttl = 1\n"),
        51,
        1,
        "unknown key \"ttl\" in [resolver]",
    );
}

/// Runs `f` on a thread with a 256 KiB stack (less than a blocking-pool or
/// worker thread has), so a reader that recurses with the nesting fails here.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .expect("the reader overflowed or panicked")
}

#[test]
fn deep_xml_is_refused_at_the_element_too_deep() {
    const N: usize = 200_000;
    // Nested anywhere: in the root, or inside a <note> (whose content is skipped).
    for note in [false, true] {
        let body = format!("{}{}", "<a>".repeat(N), "</a>".repeat(N));
        let body = if note {
            format!("<note>{body}</note>")
        } else {
            body
        };
        let xml = BASE.replace("</config>", &format!("{body}\n</config>"));
        let err = on_small_stack(move || Config::from_xml_str(&xml).unwrap_err().to_string());
        // <config> is level 1, so with the note the 63rd <a> is level 65, else
        // the 64th.
        let col = if note { 7 + 62 * 3 } else { 1 + 63 * 3 };
        assert!(
            err.starts_with(&format!("<string>:8:{col}: elements nested too deeply")),
            "{err}"
        );
    }
    // Nesting up to the limit inside a note is fine.
    let note = format!(
        "<note>{}{}</note>",
        "<a>".repeat(MAX_DEPTH - 2),
        "</a>".repeat(MAX_DEPTH - 2)
    );
    Config::from_xml_str(&BASE.replace("</config>", &format!("{note}</config>"))).unwrap();
}

#[test]
fn deep_toml_is_refused_where_it_gets_too_deep() {
    const N: usize = 200_000;
    let base = "[[service]]\nname = \"s\"\nlisten = [\"127.0.0.1:0\"]\nenabled_group = \"g\"\n\
                [[service.group]]\nname = \"g\"\nhosts = [{ name = \"h\", ip = \"127.0.0.1:9\" }]\n";
    // Each with the line and column of the first level past the limit.
    for (deep, line, col) in [
        (
            format!(
                "[resolver]\nnameserver = {}{}\n",
                "[".repeat(N),
                "]".repeat(N)
            ),
            9,
            77,
        ),
        (
            format!(
                "[resolver]\nnameserver = {}1{}\n",
                "{a=".repeat(N),
                "}".repeat(N)
            ),
            9,
            203,
        ),
        (
            format!("[resolver]\nnameserver{} = 1\n", ".a".repeat(N)),
            9,
            135,
        ),
        (format!("[resolver{}]\n", ".a".repeat(N)), 8, 1),
    ] {
        let text = format!("{base}{deep}");
        let err = on_small_stack(move || Config::from_toml_str(&text).unwrap_err());
        let loc = err.location().unwrap();
        assert_eq!((loc.line, loc.column), (line, col), "{err}");
        assert!(err.message().contains("nested too deeply"), "{err}");
    }
}

/// The model's rules hold a configuration built in code to what a file may
/// say, and say where in words (no file to point at).
#[test]
fn check_holds_code_built_configurations_to_the_file_rules() {
    let base = Config::from_xml_str(BASE).unwrap();
    assert_eq!(base.check(), Ok(()));
    let broken = |change: &dyn Fn(&mut Config)| {
        let mut c = base.clone();
        change(&mut c);
        c.check().unwrap_err().to_string()
    };
    let words = broken(&|c| c.services[0].groups[0].hosts.edit(0).name = "a\nb".into());
    assert!(
        words.starts_with("group \"g\" of service \"web\": bad host name \"a\\nb\""),
        "{words}"
    );
    let words = broken(&|c| c.services[0].groups[0].hosts.edit(0).weight = 0);
    assert!(words.contains("host \"h1\": bad weight 0"), "{words}");
    let words = broken(&|c| {
        c.services[0].groups[0].hosts.edit(0).address.host = "a@b".into();
    });
    assert!(words.contains("contains '@'"), "{words}");
    let words = broken(&|c| c.services[0].groups[0].options.slow_start = Some(Duration::ZERO));
    assert!(
        words.starts_with("service \"web\": group \"g\": bad slowStart 0: zero"),
        "{words}"
    );
    let words = broken(&|c| c.services[0].connect_timeout = Duration::from_secs(MAX_SECONDS + 1));
    assert!(words.contains("bad connect timeout"), "{words}");
    let words = broken(&|c| {
        let twin = c.services[0].groups[0].hosts[0].clone();
        c.services[0].groups[0].hosts.push(twin);
    });
    assert_eq!(
        words,
        "duplicate host name \"h1\" in group \"g\" of service \"web\""
    );
    let words = broken(&|c| c.services[0].enabled_group = "nope".into());
    assert!(
        words.contains("no group named \"nope\" to enable"),
        "{words}"
    );
    let words = broken(&|c| {
        c.services[0].listeners[0].addr.host = ListenHost::Name("10.0.0.1".into());
    });
    assert!(words.contains("is an address, not a name"), "{words}");
    let words = broken(&|c| c.resolver.min_ttl = Duration::from_secs(600));
    assert!(
        words.contains("minTtl (600) is longer than maxTtl"),
        "{words}"
    );
}

/// A file's broken model rule points at where the part was written, for the
/// admin plane as for services.
#[test]
fn check_errors_from_files_are_located() {
    let web = BASE.replace(
        "</config>",
        "  <admin>\n    <web listen=\"*:8080\"/>\n  </admin>\n</config>",
    );
    xml_err(
        &web,
        9,
        18,
        "listen address *:8080 is already used by service \"web\"",
    );
    let users = BASE.replace(
        "</config>",
        "  <admin>\n    <user name=\"a b\" password=\"x\"/>\n  </admin>\n</config>",
    );
    xml_err(&users, 9, 17, "bad user name \"a b\"");
    let resolver = BASE.replace(
        "</config>",
        "  <resolver minTtl=\"60\" maxTtl=\"10\"/>\n</config>",
    );
    xml_err(&resolver, 8, 3, "minTtl (60) is longer than maxTtl (10)");
}

/// What a command checks is the part it changes: a listen address against
/// every listener, a new service against the others.
#[test]
fn checks_of_one_part() {
    let mut c = Config::from_xml_str(BASE).unwrap();
    c.admin = Some(AdminConfig {
        web: Some(AdminWebConfig {
            listen: parse_listen_addr("127.0.0.1:9000").unwrap(),
            enable: true,
            secure: false,
            refresh: DEFAULT_ADMIN_REFRESH,
            metrics_public: false,
            cert: None,
            key: None,
            allowed_hosts: Vec::new(),
            changes_require_post: false,
        }),
        ..AdminConfig::default()
    });
    assert_eq!(c.check(), Ok(()));
    let taken = c
        .check_listen_free(&parse_listen_addr("127.0.0.1:9000").unwrap())
        .unwrap_err();
    assert_eq!(
        taken.to_string(),
        "listen address 127.0.0.1:9000 is already used by the admin web server"
    );
    assert_eq!(
        c.check_listen_free(&parse_listen_addr("127.0.0.1:0").unwrap()),
        Ok(())
    );
    let mut twin = c.services[0].clone();
    let e = c.check_new_service(&twin).unwrap_err();
    assert_eq!(e.to_string(), "duplicate service name \"web\"");
    twin.name = "other".into();
    let e = c.check_new_service(&twin).unwrap_err();
    assert!(
        e.to_string()
            .contains("*:8080 is already used by service \"web\""),
        "{e}"
    );
    twin.listeners[0].addr.port = 8081;
    assert_eq!(c.check_new_service(&twin), Ok(()));
    // A service may wait for its hosts (made by a command, or saved so):
    // enabling it, or emptying it, is what commands refuse.
    twin.groups[0].hosts.clear();
    assert_eq!(c.check_new_service(&twin), Ok(()));
    assert_eq!(twin.check(), Ok(()));
    let e = twin.check_enabled().unwrap_err();
    assert!(
        e.to_string().contains("enabled group \"g\" has no host"),
        "{e}"
    );
}

/// The issue's example: an edge service routing by SNI, ALPN, Host and
/// protocol, services reached only by routes, one with no listener.
const ROUTES_XML: &str = r#"<config>
  <service name="edge">
    <listen ip="0.0.0.0:443" inspectTimeout="2.5" inspectBytes="4096">
      <!-- by name -->
      <route sni="API.example.com" service="api"/>
      <route sni="*.example.org" service="org"/>
      <route alpn="h2" service="h2-pool"/>
      <note>ignored</note>
      <route protocol="HTTP" host="App.Example.com" service="app"/>
      <route protocol="ssh" service="bastion"/>
    </listen>
    <listen ip="127.0.0.1:8443"/>
    <group name="default" enable="true"><host name="d" ip="10.0.0.9:443"/></group>
  </service>
  <service name="api">
    <group name="g" enable="true"><host name="a1" ip="10.0.0.1:443"/></group>
  </service>
  <service name="org"><group name="g" enable="true"><host name="o" ip="10.0.0.2:443"/></group></service>
  <service name="h2-pool"><group name="g" enable="true"><host name="h" ip="10.0.0.3:443"/></group></service>
  <service name="app"><group name="g" enable="true"><host name="p" ip="10.0.0.4:80"/></group></service>
  <service name="bastion"><group name="g" enable="true"><host name="b" ip="10.0.0.5:22"/></group></service>
  <service name="front">
    <listen ip="*:8080"><route sni="*" service="api"/></listen>
  </service>
</config>
"#;

const ROUTES_TOML: &str = r#"
[[service]]
name = "edge"
listen = [
  { ip = "0.0.0.0:443", inspect_timeout = 2.5, inspect_bytes = 4096, routes = [
    { sni = "API.example.com", service = "api" },  # by name
    { sni = "*.example.org", service = "org" },
    { alpn = "h2", service = "h2-pool" },
    { protocol = "HTTP", host = "App.Example.com", service = "app" },
    { protocol = "ssh", service = "bastion" },
  ] },
  "127.0.0.1:8443",
]
  [[service.group]]
  name = "default"
  enable = true
  hosts = [ { name = "d", ip = "10.0.0.9:443" } ]

[[service]]
name = "api"
  [[service.group]]
  name = "g"
  enable = true
  hosts = [ { name = "a1", ip = "10.0.0.1:443" } ]

[[service]]
name = "org"
group = [ { name = "g", enable = true, hosts = [ { name = "o", ip = "10.0.0.2:443" } ] } ]

[[service]]
name = "h2-pool"
group = [ { name = "g", enable = true, hosts = [ { name = "h", ip = "10.0.0.3:443" } ] } ]

[[service]]
name = "app"
group = [ { name = "g", enable = true, hosts = [ { name = "p", ip = "10.0.0.4:80" } ] } ]

[[service]]
name = "bastion"
group = [ { name = "g", enable = true, hosts = [ { name = "b", ip = "10.0.0.5:22" } ] } ]

[[service]]
name = "front"

  [[service.listen]]
  ip = "*:8080"

    [[service.listen.routes]]
    sni = "*"
    service = "api"
"#;

/// Where `needle` first occurs in `text`, as (line, column).
fn position(text: &str, needle: &str) -> (u32, u32) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the text"));
    let loc = error::Source::new(STRING_SOURCE, text).locate(at);
    (loc.line, loc.column)
}

/// Loads `text` (XML, or TOML when `toml`), expecting an error where `needle`
/// first occurs in it, whose message contains `message`.
#[track_caller]
fn err_at(text: &str, toml: bool, needle: &str, message: &str) {
    let (line, col) = position(text, needle);
    if toml {
        toml_err(text, line, col, message);
    } else {
        xml_err(text, line, col, message);
    }
}

#[test]
fn routes_read_from_xml_and_toml() {
    let x = Config::from_xml_str(ROUTES_XML).unwrap();
    let t = Config::from_toml_str(ROUTES_TOML).unwrap();
    assert_eq!(x, t);
    let edge = &x.services[0];
    let listener = &edge.listeners[0];
    assert_eq!(
        listener.options.inspect_timeout,
        Duration::from_millis(2500)
    );
    assert_eq!(listener.options.inspect_bytes, 4096);
    let sni = |s: &str| Some(s.to_string());
    assert_eq!(
        listener.routes,
        [
            Route {
                sni: sni("api.example.com"),
                ..Route::to("api")
            },
            Route {
                sni: sni("*.example.org"),
                ..Route::to("org")
            },
            Route {
                alpn: sni("h2"),
                ..Route::to("h2-pool")
            },
            Route {
                protocol: Some(ClientProtocol::Http),
                host: sni("app.example.com"),
                ..Route::to("app")
            },
            Route {
                protocol: Some(ClientProtocol::Ssh),
                ..Route::to("bastion")
            },
        ]
    );
    assert_eq!(
        listener.routes[3].to_string(),
        "protocol=http host=app.example.com service=app"
    );
    assert!(edge.listeners[1].routes.is_empty());
    assert_eq!(edge.listeners[1].options, ListenOptions::default());
    // Reached by routes only: no listener.
    assert!(x.services[1].listeners.is_empty());
    // Every listener routes: no group needed, none enabled.
    let front = &x.services[6];
    assert!(front.groups.is_empty());
    assert_eq!(front.enabled_group, "");
    assert_eq!(
        front.listeners[0].routes,
        [Route {
            sni: sni("*"),
            ..Route::to("api")
        }]
    );

    // Written and read back the same, in both formats.
    for c in [&x, &t] {
        let xml = c.to_xml();
        assert!(
            xml.contains("<route protocol=\"http\" host=\"app.example.com\" service=\"app\"/>"),
            "{xml}"
        );
        same(
            c,
            &Config::from_xml_str(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}")),
        );
        let toml = c.to_toml();
        assert!(
            toml.contains("{ sni = \"api.example.com\", service = \"api\" },"),
            "{toml}"
        );
        assert!(!toml.contains("enabled_group = \"\""), "{toml}");
        same(
            c,
            &Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}")),
        );
    }
}

#[test]
fn route_values_are_read_and_refused_with_their_location() {
    // XML: each bad value is pointed at.
    let with = |route: &str| {
        ROUTES_XML.replace(
            "<route alpn=\"h2\" service=\"h2-pool\"/>",
            &format!("<route {route}/>"),
        )
    };
    for (route, needle, message) in [
        (
            "sni=\"a.*.b\" service=\"api\"",
            "a.*.b",
            "bad sni \"a.*.b\": '*' only as the whole name or as the first label",
        ),
        (
            "sni=\"*foo.com\" service=\"api\"",
            "*foo.com",
            "bad sni \"*foo.com\"",
        ),
        ("sni=\"a..b\" service=\"api\"", "a..b", "has an empty label"),
        (
            "sni=\"example.com.\" service=\"api\"",
            "example.com.",
            "has an empty label",
        ),
        ("sni=\"a b\" service=\"api\"", "a b", "contains ' '"),
        ("sni=\"\" service=\"api\"", "sni=\"\"", "empty server name"),
        (
            "alpn=\"h 2\" service=\"api\"",
            "h 2",
            "bad alpn \"h 2\": contains ' '",
        ),
        (
            "alpn=\"\" service=\"api\"",
            "alpn=\"\"",
            "bad alpn \"\": empty",
        ),
        (
            "protocol=\"quic\" service=\"api\"",
            "quic",
            "bad protocol \"quic\": expected one of: tls, http, ssh, other",
        ),
        (
            "protocol=\"http\" host=\"app.example.com:8080\" service=\"app\"",
            "app.example.com:8080",
            "a port is not allowed",
        ),
        (
            "protocol=\"http\" host=\"[::1]:80\" service=\"app\"",
            "[::1]:80",
            "a port is not allowed",
        ),
        (
            "protocol=\"http\" host=\"a/b\" service=\"app\"",
            "a/b",
            "contains '/'",
        ),
        (
            "sni=\"x.example.com\"",
            "<route sni=\"x",
            "route without a service",
        ),
        (
            "sni=\"x.example.com\" service=\"api\" port=\"1\"",
            "port=",
            "unknown attribute \"port\" on <route> (expected one of: service, sni, alpn, protocol, host)",
        ),
    ] {
        let text = with(route);
        let needle = if needle.starts_with("sni=\"\"") || needle.starts_with("alpn=\"\"") {
            // An empty value is located just past its opening quote.
            let (line, col) = position(&text, needle);
            xml_err(&text, line, col + needle.len() as u32 - 1, message);
            continue;
        } else {
            needle
        };
        err_at(&text, false, needle, message);
    }
    let alpn = "x".repeat(256);
    err_at(
        &with(&format!("alpn=\"{alpn}\" service=\"api\"")),
        false,
        &alpn,
        "256 bytes long (expected at most 255)",
    );
    let sni = format!("{}.com", "a.".repeat(125));
    err_at(
        &with(&format!("sni=\"{sni}\" service=\"api\"")),
        false,
        &sni,
        "server name of 254 characters (expected at most 253)",
    );
    // IPv6 hosts keep no brackets; a trailing-dot name stays as written.
    let c =
        Config::from_xml_str(&with("protocol=\"http\" host=\"[::1]\" service=\"app\"")).unwrap();
    assert_eq!(
        c.services[0].listeners[0].routes[2].host.as_deref(),
        Some("::1")
    );
    // Only <route> in <listen>.
    err_at(
        &with("sni=\"x.example.com\" service=\"api\"/><host name=\"h\" ip=\"1.2.3.4:5\""),
        false,
        "<host name=\"h\" ip=\"1.2",
        "unknown element <host> in <listen> (expected one of: route, tls)",
    );
    err_at(
        &ROUTES_XML.replace("<!-- by name -->", "<route sni=\"x.example.com\" service=\"api\"><route service=\"api\" sni=\"y\"/></route>"),
        false,
        "<route service=\"api\" sni=\"y\"/>",
        "unknown element <route> in <route> (it takes no child elements)",
    );

    // TOML: the same values, located alike.
    let with = |route: &str| {
        ROUTES_TOML.replace(
            "{ alpn = \"h2\", service = \"h2-pool\" }",
            &format!("{{ {route} }}"),
        )
    };
    for (route, needle, message) in [
        (
            "sni = \"a.*.b\", service = \"api\"",
            "a.*.b",
            "bad sni \"a.*.b\"",
        ),
        (
            "alpn = \"h\\t2\", service = \"api\"",
            "h\\t2",
            "bad alpn \"h\\t2\": contains '\\t'",
        ),
        (
            "protocol = \"quic\", service = \"api\"",
            "quic",
            "bad protocol \"quic\"",
        ),
        (
            "protocol = \"http\", host = \"a:80\", service = \"app\"",
            "a:80",
            "a port is not allowed",
        ),
        (
            "sni = \"x.example.com\"",
            "{ sni = \"x.example.com\" }",
            "route without a service",
        ),
        (
            "sni = \"x.example.com\", service = \"api\", port = 1",
            "port",
            "unknown field `port`",
        ),
        (
            "sni = 5, service = \"api\"",
            "5, service",
            "invalid type: integer `5`, expected a string",
        ),
    ] {
        err_at(&with(route), true, needle, message);
    }
    err_at(
        &ROUTES_TOML.replace(
            "inspect_bytes = 4096, ",
            "inspect_bytes = 4096, route = [], ",
        ),
        true,
        "route = []",
        "unknown key \"route\" in a listen table (expected one of: ip, routes, tls, accept_proxy",
    );
    err_at(
        &ROUTES_TOML.replace("    sni = \"*\"\n", "    sni = \"*\"\n    weight = 1\n"),
        true,
        "weight",
        "unknown field `weight`",
    );
}

/// The model's rules about routes and services without listeners or groups,
/// from a file: each error points at what broke the rule.
#[test]
fn route_rules_are_located() {
    let replace = |from: &str, to: &str| {
        assert!(ROUTES_XML.contains(from), "{from}");
        ROUTES_XML.replace(from, to)
    };
    let text = replace("service=\"h2-pool\"/>", "service=\"nope\"/>");
    err_at(
        &text,
        false,
        "nope",
        "service \"edge\": route on *:443 to unknown service \"nope\"",
    );
    let text = replace("service=\"h2-pool\"/>", "service=\"edge\"/>");
    err_at(
        &text,
        false,
        "edge\"/>",
        "service \"edge\" routes to itself on *:443 (expected another service",
    );
    let text = replace("alpn=\"h2\" service", "service");
    err_at(
        &text,
        false,
        "<route service=\"h2-pool\"/>",
        "route to \"h2-pool\" has no condition (expected one or more of sni, alpn, protocol, host)",
    );
    let text = replace("protocol=\"HTTP\" host", "host");
    err_at(
        &text,
        false,
        "App.Example",
        "route to \"app\": host needs protocol http",
    );
    let text = replace("alpn=\"h2\"", "protocol=\"ssh\" alpn=\"h2\"");
    err_at(
        &text,
        false,
        "h2\" service",
        "route to \"h2-pool\": alpn is only seen in TLS, not with protocol ssh",
    );
    let text = replace(
        "sni=\"*.example.org\"",
        "protocol=\"http\" sni=\"*.example.org\"",
    );
    err_at(
        &text,
        false,
        "*.example.org",
        "sni is only seen in TLS, not with protocol http",
    );
    // protocol="tls" with an SNI is fine.
    Config::from_xml_str(&replace(
        "sni=\"*.example.org\"",
        "protocol=\"TLS\" sni=\"*.example.org\"",
    ))
    .unwrap();
    // A route's target must have groups to serve its clients.
    let text = replace("service=\"h2-pool\"/>", "service=\"front\"/>");
    err_at(
        &text,
        false,
        "front\"/>",
        "route on *:443 to service \"front\", which has no group to serve the clients",
    );
    // A service without groups: every listener routes, and it has one.
    let text = replace(
        "<listen ip=\"*:8080\"><route sni=\"*\" service=\"api\"/></listen>",
        "<listen ip=\"*:8080\"><route sni=\"*\" service=\"api\"/></listen><listen ip=\"*:8081\"/>",
    );
    err_at(
        &text,
        false,
        "*:8081",
        "service \"front\" has no group, and its listener *:8081 has no route (expected a group, or routes on every listener)",
    );
    let text = replace(
        "<listen ip=\"*:8080\"><route sni=\"*\" service=\"api\"/></listen>",
        "",
    );
    err_at(
        &text,
        false,
        "<service name=\"front\">",
        "service \"front\" has no group and no listener",
    );
    // inspectBytes from 1 to 16 KiB; inspectTimeout as any duration.
    for bytes in ["0", "16385"] {
        let text = replace(
            "inspectBytes=\"4096\"",
            &format!("inspectBytes=\"{bytes}\""),
        );
        err_at(
            &text,
            false,
            &format!("{bytes}\">"),
            &format!("bad inspectBytes {bytes}: expected 1 to 16384"),
        );
    }
    let text = replace("inspectTimeout=\"2.5\"", "inspectTimeout=\"0\"");
    err_at(
        &text,
        false,
        "0\" inspectBytes",
        "bad inspectTimeout \"0\": zero",
    );
    // At most MAX_ROUTES routes on a listener: the first one too many is shown.
    let many: String = (0..=MAX_ROUTES)
        .map(|i| format!("<route sni=\"h{i}.example.com\" service=\"api\"/>\n"))
        .collect();
    let text = replace("<!-- by name -->", &many);
    err_at(
        &text,
        false,
        &format!("<route sni=\"h{MAX_ROUTES}."),
        &format!(
            "listener *:443 has {} routes (expected at most {MAX_ROUTES})",
            MAX_ROUTES + 6
        ),
    );
    let fine: String = (0..MAX_ROUTES - 5)
        .map(|i| format!("<route sni=\"h{i}.example.com\" service=\"api\"/>\n"))
        .collect();
    let c = Config::from_xml_str(&replace("<!-- by name -->", &fine)).unwrap();
    assert_eq!(c.services[0].listeners[0].routes.len(), MAX_ROUTES);
    // A route with the conditions of an earlier one (in effect: a server
    // name is only seen in TLS) would never match: the later one is shown.
    let text = replace(
        "<route protocol=\"ssh\" service=\"bastion\"/>",
        "<route protocol=\"ssh\" service=\"bastion\"/>\n<route sni=\"api.example.com\" protocol=\"tls\" service=\"org\"/>",
    );
    err_at(
        &text,
        false,
        "<route sni=\"api.example.com\" protocol",
        "route 6 on *:443 (protocol=tls sni=api.example.com) has the conditions of route 1: it would never match",
    );
    let text = ROUTES_TOML.replace(
        "    { protocol = \"ssh\", service = \"bastion\" },\n",
        "    { protocol = \"ssh\", service = \"bastion\" },\n    { protocol = \"ssh\", service = \"api\" },\n",
    );
    err_at(
        &text,
        true,
        "{ protocol = \"ssh\", service = \"api\" }",
        "route 6 on *:443 (protocol=ssh) has the conditions of route 5",
    );

    // TOML: the same rules, pointed at the same parts.
    let text = ROUTES_TOML.replace("service = \"h2-pool\"", "service = \"nope\"");
    err_at(
        &text,
        true,
        "nope",
        "route on *:443 to unknown service \"nope\"",
    );
    let text = ROUTES_TOML.replace("    sni = \"*\"\n", "");
    err_at(
        &text,
        true,
        "[[service.listen.routes]]",
        "route to \"api\" has no condition",
    );
    let text = ROUTES_TOML.replace("inspect_bytes = 4096", "inspect_bytes = 0");
    err_at(
        &text,
        true,
        "0, routes",
        "bad inspectBytes 0: expected 1 to 16384",
    );
}

/// Routes built in code obey the file's rules: values as a file would hold
/// them, targets that exist; a command's checks of one part.
#[test]
fn route_rules_hold_in_code_and_commands() {
    let base = Config::from_xml_str(ROUTES_XML).unwrap();
    let broken = |change: &dyn Fn(&mut Config)| {
        let mut c = base.clone();
        change(&mut c);
        c.check().unwrap_err().to_string()
    };
    let words =
        broken(&|c| c.services[0].listeners[0].routes[0].sni = Some("API.example.com".into()));
    assert_eq!(
        words,
        "service \"edge\", listener *:443: route to \"api\": bad sni \"API.example.com\": expected \"api.example.com\""
    );
    let words = broken(&|c| c.services[0].listeners[0].routes[3].host = Some("app:80".into()));
    assert!(
        words.contains("bad host \"app:80\": a port is not allowed"),
        "{words}"
    );
    let words = broken(&|c| c.services[0].listeners[0].routes[2].alpn = Some(String::new()));
    assert!(words.contains("bad alpn \"\": empty"), "{words}");
    let words = broken(&|c| c.services[0].listeners[0].routes[0].service = String::new());
    assert!(words.contains("empty service name"), "{words}");
    let words = broken(&|c| c.services[0].listeners[0].options.inspect_bytes = 0);
    assert_eq!(
        words,
        "service \"edge\", listener *:443: bad inspectBytes 0: expected 1 to 16384"
    );
    let words = broken(&|c| c.services[0].listeners[0].options.inspect_timeout = Duration::ZERO);
    assert!(words.contains("bad inspectTimeout 0: zero"), "{words}");
    let words = broken(&|c| c.services[6].enabled_group = "g".into());
    assert!(
        words.contains("has no group named \"g\" to enable"),
        "{words}"
    );
    // Removing a service a route names is refused; others may go.
    assert_eq!(
        base.check_unrouted("api").unwrap_err().to_string(),
        "service \"api\" is named by a route of service \"edge\" on *:443 (expected that route removed first)"
    );
    assert_eq!(base.check_unrouted("edge"), Ok(()));
    // A listener a command adds or changes: its rules and its targets.
    let mut listener = base.services[0].listeners[0].clone();
    assert_eq!(base.check_listener("edge", &listener), Ok(()));
    listener.routes.push(Route {
        protocol: Some(ClientProtocol::Other),
        ..Route::to("ghost")
    });
    let e = base.check_listener("edge", &listener).unwrap_err();
    assert_eq!(*e.rule(), Rule::UnknownService("ghost".into()));
    // A new service's routes name services that exist.
    let mut new = base.services[6].clone();
    new.name = "front2".into();
    new.listeners[0].addr.port = 8090;
    assert_eq!(base.check_new_service(&new), Ok(()));
    new.listeners[0].routes[0].service = "ghost".into();
    let e = base.check_new_service(&new).unwrap_err();
    assert!(e.to_string().contains("unknown service \"ghost\""), "{e}");
}

#[test]
fn services_without_listeners_or_groups_from_the_builder() {
    use crate::config::{GroupBuilder, RouteBuilder, ServiceBuilder};
    let group = || GroupBuilder::new("g", SchedulerKind::RoundRobin).host("h", "10.0.0.1:80");
    let c = Config::builder()
        .service(
            ServiceBuilder::new("edge").listen_with_routes(
                "*:443",
                [
                    RouteBuilder::to("api").sni("*.Example.org").alpn("h2"),
                    RouteBuilder::to("api")
                        .protocol(ClientProtocol::Http)
                        .host("WWW.example.org"),
                ],
            ),
        )
        .service(ServiceBuilder::new("api").group(group()))
        .build()
        .unwrap();
    let routes = &c.services[0].listeners[0].routes;
    assert_eq!(routes[0].sni.as_deref(), Some("*.example.org"));
    assert_eq!(routes[1].host.as_deref(), Some("www.example.org"));
    same(&c, &Config::from_xml_str(&c.to_xml()).unwrap());
    same(&c, &Config::from_toml_str(&c.to_toml()).unwrap());
    // Bad values and bad rules: the error a file would give, in words.
    let e = Config::builder()
        .service(
            ServiceBuilder::new("edge")
                .listen_with_routes("*:443", [RouteBuilder::to("api").sni("a.*")]),
        )
        .service(ServiceBuilder::new("api").group(group()))
        .build()
        .unwrap_err();
    assert!(
        e.to_string().starts_with(
            "<builder>:1:1: service \"edge\": listen \"*:443\": route to \"api\": bad sni \"a.*\""
        ),
        "{e}"
    );
    let e = Config::builder()
        .service(ServiceBuilder::new("edge").listen_with_routes("*:443", [RouteBuilder::to("api")]))
        .service(ServiceBuilder::new("api").group(group()))
        .build()
        .unwrap_err();
    assert!(
        e.to_string().contains("route to \"api\" has no condition"),
        "{e}"
    );
    let e = Config::builder()
        .service(ServiceBuilder::new("alone"))
        .build()
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("service \"alone\" has no group and no listener"),
        "{e}"
    );
}

/// The fuzz seeds with routes load (a seed that did not would test only the
/// error path) and give one configuration.
#[test]
fn route_fuzz_seeds_load() {
    let x = Config::from_xml_str(include_str!("../../fuzz/seeds/config_xml/routes.xml")).unwrap();
    let t =
        Config::from_toml_str(include_str!("../../fuzz/seeds/config_toml/routes.toml")).unwrap();
    assert_eq!(x.services[0].listeners[0].routes.len(), 8);
    assert_eq!(t.services[0].listeners[0].routes.len(), 5);
    assert_eq!(x.services[4], t.services[4]);
}

#[test]
fn protocol_checks_and_expect_regex_read_write_and_are_checked() {
    let xml = r#"<config>
  <service name="db">
    <listen ip="*:5432"/>
    <group name="pg" enable="yes"><check type="postgres" user="app"/><host name="h" ip="h:1"/></group>
    <group name="r"><check type="redis" role="master"/><host name="h" ip="h:1"/></group>
    <group name="s"><check type="send" send="INFO\r\n" expectRegex="role:(master|slave)\r"/><host name="h" ip="h:1"/></group>
    <group name="w"><check type="http" tls="true" reuse="false" path="/healthz"/><host name="h" ip="h:1"/></group>
    <group name="m"><check type="mysql"/><host name="h" ip="h:1"/></group>
  </service>
</config>"#;
    let c = Config::from_xml_str(xml).unwrap();
    let check = |g: usize| c.services[0].groups[g].check.clone().unwrap();
    assert_eq!(
        (check(0).kind, check(0).user.as_str()),
        (CheckKind::Postgres, "app")
    );
    assert_eq!(check(1).role, RedisRole::Master);
    assert_eq!(check(2).expect_regex.as_str(), "role:(master|slave)\\r");
    assert!(
        check(2)
            .expect_regex
            .is_match(b"# Replication\r\nrole:slave\r\n")
    );
    assert!(check(3).tls && !check(3).reuse);
    assert!(CheckConfig::of(CheckKind::Http).reuse, "kept by default");
    assert_eq!(check(4).kind, CheckKind::Mysql);
    let toml = r#"
[[service]]
name = "db"
listen = ["*:5432"]
  [[service.group]]
  name = "pg"
  enable = true
  check = { type = "postgres", user = "app" }
  hosts = [{ name = "h", ip = "h:1" }]
  [[service.group]]
  name = "r"
  check = { type = "redis", role = "master" }
  hosts = [{ name = "h", ip = "h:1" }]
  [[service.group]]
  name = "s"
  check = { type = "send", send = 'INFO\r\n', expect_regex = 'role:(master|slave)\r' }
  hosts = [{ name = "h", ip = "h:1" }]
  [[service.group]]
  name = "w"
  check = { type = "http", tls = true, reuse = false, path = "/healthz" }
  hosts = [{ name = "h", ip = "h:1" }]
  [[service.group]]
  name = "m"
  check = { type = "mysql" }
  hosts = [{ name = "h", ip = "h:1" }]
"#;
    assert_eq!(Config::from_toml_str(toml).unwrap().services, c.services);
    let xml_again = to_xml(&c);
    assert!(
        xml_again.contains(
            r#"<check type="send" send="INFO\r\n" expectRegex="role:(master|slave)\r"/>"#
        ),
        "{xml_again}"
    );
    assert_eq!(
        Config::from_xml_str(&xml_again).unwrap().services,
        c.services
    );
    assert!(xml_again.contains(r#"reuse="false""#), "{xml_again}");
    let toml_again = to_toml(&c);
    assert_eq!(
        Config::from_toml_str(&toml_again).unwrap().services,
        c.services,
        "{toml_again}"
    );
    // Bad settings, each at its value.
    let bad = |from: &str, to: &str, at: &str, needle: &str| {
        let text = xml.replacen(from, to, 1);
        let offset = text.find(at).unwrap();
        let line = text[..offset].matches('\n').count() as u32 + 1;
        let col = text[..offset].rsplit('\n').next().unwrap().chars().count() as u32 + 1;
        xml_err(&text, line, col, needle);
    };
    bad(
        "role:(master|slave)",
        "role:(master|slave",
        "role:(master|slave\\r",
        "unclosed group",
    );
    bad(
        "role:(master|slave)",
        "\\w{1000}{1000}",
        "\\w{1000}",
        "compiles to more than",
    );
    bad(
        "expectRegex=",
        "expect=\"x\" expectRegex=",
        "role:",
        "expect and expectRegex are set",
    );
    bad(
        "type=\"http\" tls",
        "type=\"tcp\" tls",
        "true",
        "tls is for type=\"http\"",
    );
    bad(
        "type=\"http\" tls=\"true\" reuse",
        "type=\"tcp\" reuse",
        "false",
        "reuse is for type=\"http\"",
    );
    bad(
        "role=\"master\"",
        "role=\"leader\"",
        "leader",
        "expected master or replica",
    );
    bad(
        "type=\"redis\" role",
        "type=\"tcp\" role",
        "master",
        "role is for type=\"redis\"",
    );
    bad(
        "user=\"app\"",
        "user=\"\"",
        "\"/><host",
        "user \"\" is empty",
    );
    let toml_bad = |from: &str, to: &str, needle: &str| {
        let err = Config::from_toml_str(&toml.replacen(from, to, 1))
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{err}");
    };
    toml_bad(
        "'role:(master|slave)",
        "'role:(master|slave",
        "unclosed group",
    );
    toml_bad("tls = true", "tls = 1", "bad tls");
}

#[test]
fn group_agents_read_write_and_are_checked() {
    let xml = r#"<config>
  <service name="web">
    <listen ip="*:8080"/>
    <group name="a" enable="yes">
      <agent port="9000" interval="5" timeout="0.5"/>
      <host name="h" ip="h:1" agentPort="9001"/>
      <host name="i" ip="i:1"/>
    </group>
  </service>
</config>"#;
    let c = Config::from_xml_str(xml).unwrap();
    let g = &c.services[0].groups[0];
    let a = g.agent.as_ref().unwrap();
    assert_eq!(
        (a.port, a.interval, a.timeout),
        (
            Some(9000),
            Duration::from_secs(5),
            Duration::from_millis(500)
        )
    );
    assert_eq!(g.hosts[0].options.agent_port, Some(9001));
    let toml = r#"
[[service]]
name = "web"
listen = ["*:8080"]
  [[service.group]]
  name = "a"
  enable = true
  agent = { port = 9000, interval = 5, timeout = 0.5 }
  hosts = [{ name = "h", ip = "h:1", agent_port = 9001 }, { name = "i", ip = "i:1" }]
"#;
    assert_eq!(Config::from_toml_str(toml).unwrap().services, c.services);
    let xml_again = to_xml(&c);
    assert!(
        xml_again.contains(r#"<agent port="9000" interval="5" timeout="0.5"/>"#),
        "{xml_again}"
    );
    assert_eq!(
        Config::from_xml_str(&xml_again).unwrap().services,
        c.services
    );
    assert_eq!(
        Config::from_toml_str(&to_toml(&c)).unwrap().services,
        c.services
    );
    let bad = |from: &str, to: &str, at: &str, needle: &str| {
        let text = xml.replacen(from, to, 1);
        let offset = text.find(at).unwrap();
        let line = text[..offset].matches('\n').count() as u32 + 1;
        let col = text[..offset].rsplit('\n').next().unwrap().chars().count() as u32 + 1;
        xml_err(&text, line, col, needle);
    };
    bad(
        "port=\"9000\" ",
        "",
        "<agent",
        "agent has no port and a host has no agentPort",
    );
    bad(
        "interval=\"5\"",
        "interval=\"0.01\"",
        "0.01",
        "interval 0.01 s is out of range",
    );
    bad(
        "port=\"9000\"",
        "port=\"0\"",
        "0\" interval",
        "expected a port",
    );
    bad(
        "agentPort=\"9001\"",
        "agentPort=\"x\"",
        "x\"",
        "bad agentPort",
    );
    bad(
        "<agent port",
        "<agent nonsense=\"1\" port",
        "nonsense",
        "unknown attribute \"nonsense\" on <agent>",
    );
    bad(
        "<host name=\"i\"",
        "<agent/><host name=\"i\"",
        "<agent/>",
        "duplicate <agent>",
    );
}

#[test]
fn group_checks_read_write_and_are_checked() {
    let xml = r#"<config>
  <service name="web">
    <listen ip="*:8080"/>
    <group name="a" enable="yes">
      <check type="http" interval="0.5" timeout="0.2" rise="1" fall="4" port="8081" path="/healthz" host="app" status="200-299,404"/>
      <host name="h" ip="h:1" checkPort="9000"/>
    </group>
    <group name="b"><check type="send" send="PING\r\n" expect="+PONG"/><host name="h" ip="h:1"/></group>
  </service>
</config>"#;
    let c = Config::from_xml_str(xml).unwrap();
    let a = c.services[0].groups[0].check.as_ref().unwrap();
    assert_eq!(a.kind, CheckKind::Http);
    assert_eq!(
        (a.interval, a.timeout, a.rise, a.fall, a.port),
        (
            Duration::from_millis(500),
            Duration::from_millis(200),
            1,
            4,
            Some(8081)
        )
    );
    assert_eq!((a.path.as_str(), a.host.as_str()), ("/healthz", "app"));
    assert!(a.status.contains(404) && !a.status.contains(300));
    assert_eq!(
        c.services[0].groups[0].hosts[0].options.check_port,
        Some(9000)
    );
    let b = c.services[0].groups[1].check.as_ref().unwrap();
    assert_eq!(
        (b.send.0.as_slice(), b.expect.0.as_slice()),
        (&b"PING\r\n"[..], &b"+PONG"[..])
    );
    assert_eq!((b.interval, b.rise, b.fall), (DEFAULT_CHECK_INTERVAL, 2, 3));
    // The same in TOML, and both writers read back.
    let toml = r#"
[[service]]
name = "web"
listen = ["*:8080"]
  [[service.group]]
  name = "a"
  enable = true
  check = { type = "http", interval = 0.5, timeout = 0.2, rise = 1, fall = 4, port = 8081, path = "/healthz", host = "app", status = ["200-299", 404] }
  hosts = [{ name = "h", ip = "h:1", check_port = 9000 }]
  [[service.group]]
  name = "b"
  check = { type = "send", send = 'PING\r\n', expect = "+PONG" }
  hosts = [{ name = "h", ip = "h:1" }]
"#;
    assert_eq!(Config::from_toml_str(toml).unwrap().services, c.services);
    let xml_again = to_xml(&c);
    assert!(
        xml_again.contains(r#"<check type="send" send="PING\r\n" expect="+PONG"/>"#),
        "{xml_again}"
    );
    assert_eq!(
        Config::from_xml_str(&xml_again).unwrap().services,
        c.services
    );
    let toml_again = to_toml(&c);
    assert_eq!(
        Config::from_toml_str(&toml_again).unwrap().services,
        c.services,
        "{toml_again}"
    );
    // A plain tcp check is written with its type.
    let mut plain = c.clone();
    plain.services[0].groups[1].check = Some(CheckConfig::default());
    assert!(to_xml(&plain).contains("<check type=\"tcp\"/>"));

    // Bad settings, each at its value (where `at` is in the text).
    let pos = |text: &str, at: &str| {
        let offset = text.find(at).unwrap();
        let line = text[..offset].matches('\n').count() as u32 + 1;
        let col = text[..offset].rsplit('\n').next().unwrap().chars().count() as u32 + 1;
        (line, col)
    };
    let bad = |from: &str, to: &str, at: &str, needle: &str| {
        let text = xml.replacen(from, to, 1);
        let (line, col) = pos(&text, at);
        xml_err(&text, line, col, needle);
    };
    bad(
        "type=\"http\"",
        "type=\"ldap\"",
        "ldap",
        "unknown check type",
    );
    bad(
        "rise=\"1\"",
        "rise=\"0\"",
        "0\" fall",
        "rise 0 is out of range",
    );
    bad(
        "fall=\"4\"",
        "fall=\"101\"",
        "101",
        "fall 101 is out of range",
    );
    bad(
        "interval=\"0.5\"",
        "interval=\"0.01\"",
        "0.01",
        "interval 0.01 s is out of range",
    );
    bad(
        "timeout=\"0.2\"",
        "timeout=\"120\"",
        "120",
        "timeout 120 s is out of range",
    );
    bad(
        "path=\"/healthz\"",
        "path=\"healthz\"",
        "healthz",
        "does not start with",
    );
    bad(
        "200-299,404",
        "200-299,4040",
        "200-299,4040",
        "not an HTTP status code",
    );
    bad("+PONG", "\\q", "\\q", "bad escape");
    bad(
        "type=\"send\"",
        "type=\"tcp\"",
        "PING",
        "send is for type=\"send\" checks",
    );
    bad(
        "<check type=\"send\" send=\"PING\\r\\n\" ",
        "<check type=\"tcp\" ",
        "+PONG",
        "expect is for type=\"send\"",
    );
    bad("port=\"8081\"", "port=\"0\"", "0\" path", "expected a port");
    bad(
        "checkPort=\"9000\"",
        "checkPort=\"x\"",
        "x\"",
        "bad checkPort",
    );
    bad(
        "<check type=\"send\"",
        "<check type=\"send\" nonsense=\"1\"",
        "nonsense",
        "unknown attribute \"nonsense\" on <check>",
    );
    bad(
        "<host name=\"h\" ip=\"h:1\"/></group>",
        "<check/><host name=\"h\" ip=\"h:1\"/></group>",
        "<check/>",
        "duplicate <check>",
    );
    let toml_bad = |from: &str, to: &str, at: &str, needle: &str| {
        let text = toml.replacen(from, to, 1);
        let (line, col) = pos(&text, at);
        toml_err(&text, line, col, needle);
    };
    toml_bad("rise = 1", "rise = 0", "0, fall", "rise 0 is out of range");
    toml_bad(
        "rise = 1",
        "rize = 1",
        "rize",
        "unknown key \"rize\" in a check table",
    );
    toml_bad("'PING\\r\\n'", "'\\x4'", "'\\x4'", "bad escape");
}

const TLS_LISTENER: &str = r#"<config>
  <service name="web">
    <listen ip="*:8443">
      <tls cert="a.pem" key="a.key" alpn="h2,http/1.1" minVersion="1.3" clientCa="ca.pem" clientAuth="optional" handshakeTimeout="2.5"/>
      <tls cert="/abs/b.pem" key="/abs/b.key"/>
    </listen>
    <group name="g" scheduler="roundr" enable="true">
      <host name="h1" ip="10.0.0.1:80"/>
    </group>
  </service>
</config>
"#;

#[test]
fn tls_listener_is_read_in_both_formats() {
    let c = Config::from_xml_str(TLS_LISTENER).unwrap();
    let tls = c.services[0].listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.certs.len(), 2);
    assert_eq!(tls.certs[0].cert, PathBuf::from("a.pem"));
    assert_eq!(tls.certs[1].key, PathBuf::from("/abs/b.key"));
    assert_eq!(
        tls.options.alpn,
        vec!["h2".to_string(), "http/1.1".to_string()]
    );
    assert_eq!(tls.options.min_version, TlsVersion::V1_3);
    assert_eq!(tls.options.client_ca, Some(PathBuf::from("ca.pem")));
    assert_eq!(tls.options.client_auth, ClientAuth::Optional);
    assert_eq!(tls.options.handshake_timeout, Duration::from_millis(2500));
    let at = tls.certs[0].written.cert.as_ref().unwrap();
    assert_eq!((at.line, at.column), (4, 18));
    // Both writers, read back: the same model.
    same(&Config::from_xml_str(&to_xml(&c)).unwrap(), &c);
    same(&Config::from_toml_str(&to_toml(&c)).unwrap(), &c);
    let toml = r#"[[service]]
name = "web"
listen = [{ ip = "*:8443", tls = [
  { cert = "a.pem", key = "a.key", alpn = ["h2", "http/1.1"], min_version = "1.3", client_ca = "ca.pem", client_auth = "optional", handshake_timeout = 2.5 },
  { cert = "/abs/b.pem", key = "/abs/b.key" },
] }]
  [[service.group]]
  name = "g"
  enable = true
  hosts = [{ name = "h1", ip = "10.0.0.1:80" }]
"#;
    same(&Config::from_toml_str(toml).unwrap(), &c);
}

#[test]
fn tls_mistakes_are_located() {
    let with =
        |tls: &str| TLS_LISTENER.replace(r#"<tls cert="/abs/b.pem" key="/abs/b.key"/>"#, tls);
    xml_err(&with(r#"<tls cert="b.pem"/>"#), 5, 7, "tls without key");
    xml_err(&with(r#"<tls cert="" key="k"/>"#), 5, 18, "empty cert");
    xml_err(
        &with(r#"<tls cert="b.pem" key="b.key" alpn="h2"/>"#),
        5,
        37,
        "on a listener's second or later tls",
    );
    xml_err(
        &with(r#"<tls cert="b.pem" key="b.key" color="red"/>"#),
        5,
        37,
        "color",
    );
    let first = |from: &str, to: &str| TLS_LISTENER.replace(from, to);
    xml_err(&first("\"1.3\"", "\"1.1\""), 4, 68, "expected 1.2 or 1.3");
    xml_err(
        &first("\"optional\"", "\"maybe\""),
        4,
        103,
        "expected required or optional",
    );
    xml_err(&first("\"2.5\"", "\"0\""), 4, 131, "handshakeTimeout");
    let long = "x".repeat(300);
    xml_err(&first("h2,http/1.1", &long), 4, 43, "alpn");
    // Routes a handshake cannot tell.
    let routed = TLS_LISTENER.replace(
        r#"<tls cert="/abs/b.pem" key="/abs/b.key"/>"#,
        r#"<route protocol="ssh" service="web2"/>"#,
    )
    .replace(
        "</config>",
        r#"<service name="web2"><group name="g" enable="true"><host name="h" ip="10.0.0.2:80"/></group></service></config>"#,
    );
    xml_err(
        &routed,
        5,
        7,
        "cannot match on a listener that terminates TLS",
    );
    toml_err(
        r#"[[service]]
name = "web"
listen = [{ ip = "*:8443", tls = [{ cert = "a.pem", key = "a.key", colour = 1 }] }]
  [[service.group]]
  name = "g"
  enable = true
  hosts = [{ name = "h1", ip = "10.0.0.1:80" }]
"#,
        3,
        68,
        "unknown key \"colour\" in a tls table",
    );
}

#[test]
fn passive_check_settings_read_write_and_are_located() {
    let attrs = r#"enable="true" failLimit="3" ejectTime="2.5" maxEjectPercent="25" allBad="open""#;
    let c = Config::from_xml_str(&BASE.replace("enable=\"true\"", attrs)).unwrap();
    let o = &c.services[0].groups[0].options;
    assert_eq!(o.fail_limit, 3);
    assert_eq!(o.eject_time, Duration::from_millis(2500));
    assert_eq!(o.max_eject_percent, Percent(25));
    assert_eq!(o.all_bad, AllBad::Open);
    // Defaults: off, 10 s, 50%, close.
    let d = Config::from_xml_str(BASE).unwrap();
    let o = &d.services[0].groups[0].options;
    assert_eq!(
        (o.fail_limit, o.eject_time, o.max_eject_percent, o.all_bad),
        (0, DEFAULT_EJECT_TIME, Percent(50), AllBad::Close)
    );
    // Both writers keep them, and TOML reads what XML says.
    let xml = c.to_xml();
    assert!(
        xml.contains(r#"failLimit="3""#) && xml.contains(r#"allBad="open""#),
        "{xml}"
    );
    same(&Config::from_xml_str(&xml).unwrap(), &c);
    let toml = c.to_toml();
    assert!(
        toml.contains("fail_limit = 3") && toml.contains("all_bad = \"open\""),
        "{toml}"
    );
    same(&Config::from_toml_str(&toml).unwrap(), &c);
    for (bad, needle) in [
        (r#"maxEjectPercent="150""#, "bad maxEjectPercent \"150\""),
        (r#"ejectTime="0""#, "bad ejectTime \"0\""),
        (r#"failLimit="-1""#, "bad failLimit \"-1\""),
        (
            r#"allBad="maybe""#,
            "bad allBad \"maybe\": expected close or open",
        ),
    ] {
        // The column of the value: after `name="`.
        let col = 56 + bad.find('=').unwrap() as u32;
        xml_err(
            &BASE.replace("enable=\"true\"", &format!("enable=\"true\" {bad}")),
            4,
            col,
            needle,
        );
    }
}

const TLS_GROUP: &str = r#"<config>
  <service name="db">
    <listen ip="*:5432"/>
    <group name="g" enable="true" tls="true" tlsVerify="ca.pem" tlsSni="DB.internal" tlsCert="c.pem" tlsKey="/abs/c.key" tlsAlpn="postgresql">
      <host name="h1" ip="10.0.0.1:5432"/>
      <host name="h2" ip="db2.internal:5432" tls="false" tlsSni="other.internal"/>
    </group>
  </service>
</config>
"#;

#[test]
fn tls_origination_is_read_in_both_formats_and_located() {
    let c = Config::from_xml_str(TLS_GROUP).unwrap();
    let group = &c.services[0].groups[0];
    let o = &group.options;
    assert!(o.tls);
    let TlsVerify::Ca(ca) = &o.tls_verify else {
        panic!("{:?}", o.tls_verify)
    };
    assert_eq!(ca.path, PathBuf::from("ca.pem"));
    let at = o.tls_cert.as_ref().unwrap().at.as_ref().unwrap();
    assert_eq!((at.line, at.column), (4, 95));
    assert_eq!(o.tls_sni.as_deref(), Some("db.internal"));
    assert_eq!(
        o.tls_key.as_ref().unwrap().path,
        PathBuf::from("/abs/c.key")
    );
    assert_eq!(o.tls_alpn, ["postgresql"]);
    assert_eq!(group.hosts[1].options.tls, Some(false));
    assert_eq!(
        group.hosts[1].options.tls_sni.as_deref(),
        Some("other.internal")
    );
    assert_eq!(GroupOptions::default().tls_verify, TlsVerify::System);
    same(&Config::from_xml_str(&to_xml(&c)).unwrap(), &c);
    same(&Config::from_toml_str(&to_toml(&c)).unwrap(), &c);
    let toml = r#"[[service]]
name = "db"
listen = ["*:5432"]
  [[service.group]]
  name = "g"
  enable = true
  tls = true
  tls_verify = "ca.pem"
  tls_sni = "db.internal"
  tls_cert = "c.pem"
  tls_key = "/abs/c.key"
  tls_alpn = ["postgresql"]
  hosts = [{ name = "h1", ip = "10.0.0.1:5432" }, { name = "h2", ip = "db2.internal:5432", tls = false, tls_sni = "other.internal" }]
"#;
    same(&Config::from_toml_str(toml).unwrap(), &c);
    xml_err(
        &TLS_GROUP.replace("tlsSni=\"DB.internal\"", "tlsSni=\"not a name\""),
        4,
        73,
        "bad tlsSni \"not a name\": expected a DNS name or an IP address",
    );
    xml_err(
        &TLS_GROUP.replace("tlsVerify=\"ca.pem\"", "tlsVerify=\"\""),
        4,
        57,
        "bad tlsVerify \"\": expected system, none or a CA file (PEM)",
    );
}

/// A listener with a certificate from ACME, a plain one answering http-01,
/// and `<acme>`.
const ACME_XML: &str = r#"<config>
  <service name="web">
    <listen ip="*:443"><tls acme="example.com WWW.example.com, example.com" alpn="h2"/></listen>
    <listen ip="*:80" acmeHttp="true"/>
    <group name="g" enable="true">
      <host name="h1" ip="10.0.0.1:80"/>
    </group>
  </service>
  <acme directory="https://acme.test/directory" email="ops@example.com" storage="acme" caBundle="/etc/ca.pem" challenge="http-01" renewBefore="86400"/>
</config>
"#;

#[test]
fn acme_is_read_in_both_formats_and_written_back() {
    let c = Config::from_xml_str(ACME_XML).unwrap();
    let tls = c.services[0].listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.acme.len(), 1);
    assert_eq!(tls.acme[0].names, ["example.com", "www.example.com"]);
    assert!(tls.certs.is_empty());
    assert_eq!(tls.options.alpn, ["h2"]);
    assert!(c.services[0].listeners[1].options.acme_http);
    let acme = c.acme.as_ref().unwrap();
    assert_eq!(acme.directory.0, "https://acme.test/directory");
    assert_eq!(acme.email.0, "ops@example.com");
    assert_eq!(acme.storage, Some(PathBuf::from("acme")));
    assert_eq!(acme.ca_bundle, Some(PathBuf::from("/etc/ca.pem")));
    assert_eq!(acme.challenge, AcmeChallenge::Http01);
    assert_eq!(acme.renew_before, Duration::from_secs(86_400));
    same(&Config::from_xml_str(&to_xml(&c)).unwrap(), &c);
    same(&Config::from_toml_str(&to_toml(&c)).unwrap(), &c);
    let toml = r#"[[service]]
name = "web"
listen = [
  { ip = "*:443", tls = [{ acme = "example.com www.example.com", alpn = ["h2"] }] },
  { ip = "*:80", acme_http = true },
]
  [[service.group]]
  name = "g"
  enable = true
  hosts = [{ name = "h1", ip = "10.0.0.1:80" }]

[acme]
directory = "https://acme.test/directory"
email = "ops@example.com"
storage = "acme"
ca_bundle = "/etc/ca.pem"
challenge = "http-01"
renew_before = 86400
"#;
    same(&Config::from_toml_str(toml).unwrap(), &c);
    // Defaults: tls-alpn-01, 30 days, the system's roots.
    let plain = Config::from_xml_str(
        &ACME_XML
            .replace(
                " caBundle=\"/etc/ca.pem\" challenge=\"http-01\" renewBefore=\"86400\"",
                "",
            )
            .replace(" acmeHttp=\"true\"", ""),
    )
    .unwrap();
    let acme = plain.acme.as_ref().unwrap();
    assert_eq!(acme.challenge, AcmeChallenge::TlsAlpn01);
    assert_eq!(acme.renew_before, DEFAULT_ACME_RENEW_BEFORE);
    assert_eq!(acme.ca_bundle, None);
    assert!(to_xml(&plain).contains("<acme directory=\"https://acme.test/directory\""));
}

#[test]
fn several_certificates_from_acme_on_a_listener_in_both_formats() {
    let xml = ACME_XML.replace(
        "alpn=\"h2\"/>",
        "alpn=\"h2\"/>\n      <tls acme=\"other.example.com\"/></listen>\n    <listen ip=\"*:8443\"><tls acme=\"third.example.com\"/>",
    );
    let c = Config::from_xml_str(&xml).unwrap();
    let tls = c.services[0].listeners[0].tls.as_ref().unwrap();
    let names: Vec<&[String]> = tls.acme.iter().map(|a| a.names.as_slice()).collect();
    assert_eq!(
        names,
        [
            &["example.com".to_string(), "www.example.com".into()][..],
            &["other.example.com".to_string()][..]
        ]
    );
    assert_eq!(tls.options.alpn, ["h2"]);
    let second = c.services[0].listeners[1].tls.as_ref().unwrap();
    assert_eq!(second.acme[0].names, ["third.example.com"]);
    let written = to_xml(&c);
    assert!(
        written.contains("<tls acme=\"other.example.com\"/>"),
        "{written}"
    );
    same(&Config::from_xml_str(&written).unwrap(), &c);
    let toml = to_toml(&c);
    assert!(toml.contains("{ acme = \"other.example.com\" }"), "{toml}");
    same(&Config::from_toml_str(&toml).unwrap(), &c);
}

#[test]
fn acme_mistakes_are_located() {
    let with = |from: &str, to: &str| ACME_XML.replace(from, to);
    err_at(
        &with("https://acme.test/directory", "ftp://x"),
        false,
        "ftp://x",
        "expected an https:// URL",
    );
    err_at(&with("ops@example.com", "ops"), false, "ops\"", "e-mail");
    err_at(
        &with("\"http-01\"", "\"dns-01\""),
        false,
        "dns-01",
        "expected tls-alpn-01 or http-01",
    );
    err_at(
        &with("\"86400\"", "\"0\""),
        false,
        "0\"/>\n</config>",
        "renewBefore",
    );
    err_at(
        &with(" storage=\"acme\"", ""),
        false,
        "<acme",
        "acme storage is missing",
    );
    err_at(
        &with(" directory=\"https://acme.test/directory\"", ""),
        false,
        "<acme",
        "acme directory is missing",
    );
    err_at(
        &with("example.com WWW", "*.example.com WWW"),
        false,
        "<tls",
        "wildcard names need the dns-01 challenge",
    );
    err_at(
        &with("example.com WWW", "10.0.0.1 WWW"),
        false,
        "<tls",
        "an IP address",
    );
    err_at(
        &with(
            "acme=\"example.com WWW.example.com, example.com\"",
            "acme=\" \"",
        ),
        false,
        " \"",
        "empty acme",
    );
    err_at(
        &with("alpn=\"h2\"/>", "cert=\"a.pem\"/>"),
        false,
        "a.pem",
        "cert or key on a listener whose certificates come from ACME",
    );
    err_at(
        &with("alpn=\"h2\"/>", "/><tls cert=\"a.pem\" key=\"a.key\"/>"),
        false,
        "a.pem",
        "cert or key on a listener whose certificates come from ACME",
    );
    err_at(
        &with("<tls acme", "<tls minVersion=\"1.3\"/><tls acme"),
        false,
        "<tls min",
        "tls without acme on a listener whose certificates come from ACME",
    );
    err_at(
        &with(
            "alpn=\"h2\"/>",
            "/><tls acme=\"b.example.com\" alpn=\"h2\"/>",
        ),
        false,
        "alpn=\"h2\"/></listen>",
        "second or later tls",
    );
    err_at(
        &with("alpn=\"h2\"/>", "/><tls acme=\"b..example.com\"/>"),
        false,
        "<tls acme=\"b..",
        "bad acme name \"b..example.com\"",
    );
    // Without <acme>, acmeHttp on a TLS listener, http-01 with no listener
    // to answer it. (With <cluster> it is fine: the fleet shares it.)
    let without: String = ACME_XML
        .lines()
        .filter(|l| !l.contains("<acme "))
        .collect::<Vec<_>>()
        .join("\n");
    err_at(&without, false, "<tls", "need an <acme> element");
    let fleet = with(
        "</config>",
        "<cluster etcd=\"http://127.0.0.1:2379\" prefix=\"/txlb\" name=\"a\"/></config>",
    );
    if cfg!(feature = "fleet") {
        assert!(Config::from_xml_str(&fleet).unwrap().acme.is_some());
    }
    err_at(
        &with(" acmeHttp=\"true\"", ""),
        false,
        "<acme",
        "challenge http-01 with no listener answering it",
    );
    err_at(
        &with(
            "<tls acme=\"example.com WWW.example.com, example.com\" alpn=\"h2\"/></listen>",
            "<tls acme=\"example.com\"/></listen><listen ip=\"*:8443\" acmeHttp=\"true\"><tls acme=\"b.example.com\"/></listen>",
        ),
        false,
        "true\"><tls",
        "which terminates TLS",
    );
    err_at(
        &with("<acme ", "<acme colour=\"red\" "),
        false,
        "colour",
        "colour",
    );
    toml_err(
        "[[service]]\nname = \"web\"\nlisten = [\"*:80\"]\n  [[service.group]]\n  name = \"g\"\n  enable = true\n  hosts = [{ name = \"h1\", ip = \"10.0.0.1:80\" }]\n[acme]\ndirectory = \"https://a.test/dir\"\ncolour = 1\n",
        10,
        1,
        "unknown key \"colour\" in [acme]",
    );
}

#[test]
fn udp_services_read_write_and_refuse_what_udp_lacks() {
    let udp = r#"<service name="web" protocol="udp" sessionTimeout="2.5" responses="1" maxSessions="50">"#;
    let c = Config::from_xml_str(&BASE.replace(r#"<service name="web">"#, udp)).unwrap();
    let o = &c.services[0].options;
    assert_eq!(o.protocol, Transport::Udp);
    assert_eq!(o.session_timeout, Duration::from_millis(2500));
    assert_eq!((o.responses, o.max_sessions), (1, 50));
    // Defaults: tcp, 30 s, unlimited, 100,000.
    let d = &Config::from_xml_str(BASE).unwrap().services[0].options;
    assert_eq!(
        (d.protocol, d.session_timeout, d.responses, d.max_sessions),
        (
            Transport::Tcp,
            DEFAULT_SESSION_TIMEOUT,
            0,
            DEFAULT_MAX_SESSIONS
        )
    );
    // Both writers keep them; TOML reads what XML says.
    let xml = c.to_xml();
    assert!(
        xml.contains(r#"protocol="udp""#) && xml.contains(r#"sessionTimeout="2.5""#),
        "{xml}"
    );
    same(&Config::from_xml_str(&xml).unwrap(), &c);
    let toml = c.to_toml();
    assert!(
        toml.contains("protocol = \"udp\"") && toml.contains("max_sessions = 50"),
        "{toml}"
    );
    same(&Config::from_toml_str(&toml).unwrap(), &c);
    // Bad values, located at the value.
    for (bad, needle) in [
        (
            r#"protocol="sctp""#,
            "bad protocol \"sctp\": expected tcp or udp",
        ),
        (r#"sessionTimeout="0""#, "bad sessionTimeout \"0\""),
        (r#"responses="-1""#, "bad responses \"-1\""),
    ] {
        let text = BASE.replace(
            r#"<service name="web">"#,
            &format!(r#"<service name="web" {bad}>"#),
        );
        let value = format!("{}\"", &bad[..bad.find('=').unwrap() + 1]);
        let (line, col) = position(&text, &value);
        xml_err(&text, line, col + value.len() as u32, needle);
    }
    let toml = "[[service]]\nname = \"web\"\nprotocol = 17\n[[service.listen]]\nip = \"*:53\"\n";
    toml_err(toml, 3, 12, "bad protocol 17");
    err_at(
        &BASE.replace(
            r#"<service name="web">"#,
            r#"<service name="web" maxSessions="0">"#,
        ),
        false,
        "<service",
        "bad maxSessions 0 (expected 1 to 1000000)",
    );
    // What UDP does not do yet is refused where it is written.
    let on_udp = |from: &str, to: &str| {
        BASE.replace(
            r#"<service name="web">"#,
            r#"<service name="web" protocol="udp">"#,
        )
        .replace(from, to)
    };
    let route = r#"<listen ip="*:8080"><route sni="a.example" service="x"/></listen>"#;
    let with_x = |text: String| {
        text.replace(
            "</service>",
            r#"</service><service name="x"><listen ip="*:9"/><group name="x" enable="true"><host name="h" ip="10.0.0.2:1"/></group></service>"#,
        )
    };
    for (text, at, needle) in [
        (
            on_udp(
                r#"<listen ip="*:8080"/>"#,
                r#"<listen ip="*:8080" acceptProxy="true"/>"#,
            ),
            "acceptProxy=\"true\"",
            "acceptProxy is not supported on UDP",
        ),
        (
            with_x(on_udp(r#"<listen ip="*:8080"/>"#, route)),
            "service=\"x\"",
            "to service \"x\", which is protocol=\"tcp\" (expected a udp service like this one)",
        ),
        (
            with_x(on_udp(
                r#"<listen ip="*:8080"/>"#,
                r#"<listen ip="*:8080"><route sni="a.example" service="x"/><route protocol="http" host="a" service="x"/></listen>"#,
            )),
            "<route protocol",
            "a route by protocol or host (expected sni or alpn: what a QUIC Initial tells) is not supported on UDP",
        ),
        (
            on_udp(
                r#"<listen ip="*:8080"/>"#,
                r#"<listen ip="*:8080"><tls cert="c.pem" key="k.pem"/></listen>"#,
            ),
            "<tls",
            "TLS on a listener is not supported on UDP",
        ),
        (
            on_udp(r#"enable="true""#, r#"enable="true" proxyProtocol="v1""#),
            "\"g\"",
            "proxyProtocol=\"v1\" (expected v2) is not supported on UDP",
        ),
        (
            on_udp(r#"<host name="h1""#, r#"<host proxyProtocol="1" name="h1""#),
            "<host proxyProtocol",
            "proxyProtocol=\"v1\" (expected v2) is not supported on UDP",
        ),
        (
            on_udp(
                r#"<service name="web" protocol="udp">"#,
                r#"<service name="web" protocol="udp" maxconn="10">"#,
            ),
            "<service",
            "maxconn is not supported on UDP",
        ),
        (
            on_udp(
                r#"<host name="h1""#,
                r#"<check type="http"/><host name="h1""#,
            ),
            "type=\"http\"",
            "a type=\"http\" check (expected udp or dns) is not supported on UDP",
        ),
    ] {
        let text = text.clone();
        let (line, col) = position(&text, at);
        let err = Config::from_xml_str(&text).expect_err(needle);
        let shown = err.to_string();
        assert!(shown.contains(needle), "{shown}");
        let loc = err.location().expect("located");
        assert_eq!(loc.line, line, "{shown}");
        assert!(loc.column >= col.saturating_sub(1), "{shown} vs {col}");
    }
    // Routes by SNI or ALPN on a UDP listener (QUIC) to a UDP service; a TCP
    // listener's route may not reach a UDP service.
    let udp_x = |text: String| {
        text.replace(
            "</service>",
            r#"</service><service name="x" protocol="udp"><listen ip="*:9"/><group name="x" enable="true"><host name="h" ip="10.0.0.2:1"/></group></service>"#,
        )
    };
    let quic = udp_x(on_udp(r#"<listen ip="*:8080"/>"#, route));
    let c = Config::from_xml_str(&quic).unwrap();
    assert_eq!(c.services[0].listeners[0].routes.len(), 1);
    same(&Config::from_xml_str(&c.to_xml()).unwrap(), &c);
    let tcp_to_udp = udp_x(BASE.replace(r#"<listen ip="*:8080"/>"#, route));
    let err = Config::from_xml_str(&tcp_to_udp).unwrap_err().to_string();
    assert!(
        err.contains("which is protocol=\"udp\" (expected a tcp service"),
        "{err}"
    );
    // Per-source limits, kept by both writers; TCP's are refused with a hint.
    let limits = on_udp(
        r#"<service name="web" protocol="udp">"#,
        r#"<service name="web" protocol="udp" maxSessionsPerSource="3" datagramRate="100">"#,
    );
    let c = Config::from_xml_str(&limits).unwrap();
    let o = &c.services[0].options;
    assert_eq!((o.max_sessions_per_source, o.datagram_rate), (3, 100));
    same(&Config::from_xml_str(&c.to_xml()).unwrap(), &c);
    let toml = c.to_toml();
    assert!(toml.contains("datagram_rate = 100"), "{toml}");
    same(&Config::from_toml_str(&toml).unwrap(), &c);
    let tcp_limit = on_udp(
        r#"<service name="web" protocol="udp">"#,
        r#"<service name="web" protocol="udp" sourceRate="5">"#,
    );
    let err = Config::from_xml_str(&tcp_limit).unwrap_err().to_string();
    assert!(
        err.contains("sourceRate (expected datagramRate) is not supported on UDP"),
        "{err}"
    );
    // PROXY v2 headers on datagrams, per group or host, kept by both writers.
    let v2 = on_udp(r#"enable="true""#, r#"enable="true" proxyProtocol="v2""#).replace(
        r#"<host name="h1""#,
        r#"<host proxyProtocol="v2" name="h1""#,
    );
    let c = Config::from_xml_str(&v2).unwrap();
    let xml = c.to_xml();
    assert_eq!(xml.matches(r#"proxyProtocol="v2""#).count(), 2, "{xml}");
    same(&Config::from_toml_str(&c.to_toml()).unwrap(), &c);
}

#[test]
fn udp_and_dns_checks_read_write_and_are_checked() {
    let with = |check: &str| {
        BASE.replace(
            "<host name=\"h1\"",
            &format!("{check}\n      <host name=\"h1\""),
        )
    };
    let c = Config::from_xml_str(&with(
        r#"<check type="dns" name="example.com" interval="2"/>"#,
    ))
    .unwrap();
    let check = c.services[0].groups[0].check.as_ref().unwrap();
    assert_eq!(
        (check.kind, check.name.as_str()),
        (CheckKind::Dns, "example.com")
    );
    same(&Config::from_xml_str(&c.to_xml()).unwrap(), &c);
    same(&Config::from_toml_str(&c.to_toml()).unwrap(), &c);
    let u =
        Config::from_xml_str(&with(r#"<check type="udp" send="ping" expect="pong"/>"#)).unwrap();
    let check = u.services[0].groups[0].check.as_ref().unwrap();
    assert_eq!(
        (check.kind, &check.send.0[..]),
        (CheckKind::Udp, &b"ping"[..])
    );
    same(&Config::from_toml_str(&u.to_toml()).unwrap(), &u);
    for (check, needle) in [
        (r#"<check type="dns"/>"#, "is not a DNS name"),
        (r#"<check type="dns" name="a..b"/>"#, "is not a DNS name"),
        (
            r#"<check type="tcp" name="example.com"/>"#,
            "name is for type=\"dns\" checks",
        ),
        (
            r#"<check type="dns" name="x" send="a"/>"#,
            "send is for type=\"send\" checks",
        ),
    ] {
        let err = Config::from_xml_str(&with(check)).expect_err(check);
        assert!(err.to_string().contains(needle), "{err}");
        assert!(err.location().is_some(), "{err}");
    }
}
