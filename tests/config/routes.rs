//! Listener routes in files, through the real binary: `txlb check` accepts a
//! file routing by SNI, ALPN, Host and protocol (services without listeners,
//! a service without groups), and refuses each broken rule with its
//! `FILE:LINE:COL`, in both formats.

use std::path::Path;
use std::process::{Command, Output};

/// `edge` routes to `api` (no listener) and `bastion`; `front` has no group,
/// its one listener routing everything with an SNI to `api`.
const ROUTES_XML: &str = r#"<config>
  <service name="edge">
    <listen ip="127.0.0.1:0" inspectTimeout="2">
      <route sni="api.example.com" service="api"/>
      <route sni="*.example.org" alpn="h2" service="api"/>
      <route protocol="http" host="app.example.com" service="api"/>
      <route protocol="ssh" service="bastion"/>
    </listen>
    <group name="default" enable="true"><host name="d" ip="127.0.0.1:9"/></group>
  </service>
  <service name="api">
    <group name="g" enable="true"><host name="a" ip="127.0.0.1:9"/></group>
  </service>
  <service name="bastion">
    <group name="g" enable="true"><host name="b" ip="127.0.0.1:9"/></group>
  </service>
  <service name="front">
    <listen ip="127.0.0.1:0"><route sni="*" service="api"/></listen>
  </service>
</config>
"#;

const ROUTES_TOML: &str = r#"[[service]]
name = "edge"
listen = [{ ip = "127.0.0.1:0", inspect_timeout = 2, routes = [
  { sni = "api.example.com", service = "api" },
  { protocol = "ssh", service = "bastion" },
] }]
group = [{ name = "default", enable = true, hosts = [{ name = "d", ip = "127.0.0.1:9" }] }]

[[service]]
name = "api"
group = [{ name = "g", enable = true, hosts = [{ name = "a", ip = "127.0.0.1:9" }] }]

[[service]]
name = "bastion"
group = [{ name = "g", enable = true, hosts = [{ name = "b", ip = "127.0.0.1:9" }] }]
"#;

fn check(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_txlb"))
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap()
}

/// Writes `text` as `name` in `dir` and asserts `txlb check` refuses it with
/// `name:LINE:COL: message`, the place being where `at` first occurs.
#[track_caller]
fn refused(dir: &Path, name: &str, text: &str, at: &str, message: &str) {
    let offset = text
        .find(at)
        .unwrap_or_else(|| panic!("{at:?} not in {text}"));
    let line = text[..offset].matches('\n').count() + 1;
    let column = text[..offset].rsplit('\n').next().unwrap().chars().count() + 1;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = format!("{name}:{line}:{column}: {message}");
    assert!(stderr.contains(&expected), "{expected}\n{stderr}");
}

#[test]
fn check_accepts_routes_and_refuses_broken_rules_with_their_location() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("routes.xml", ROUTES_XML), ("routes.toml", ROUTES_TOML)] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = check(&path);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("service edge"), "{stdout}");
    }

    let xml = |from: &str, to: &str| {
        assert!(ROUTES_XML.contains(from), "{from}");
        ROUTES_XML.replace(from, to)
    };
    let dir = dir.path();
    refused(
        dir,
        "unknown.xml",
        &xml("service=\"bastion\"/>", "service=\"bastoin\"/>"),
        "bastoin",
        "service \"edge\": route on 127.0.0.1:0 to unknown service \"bastoin\"",
    );
    refused(
        dir,
        "self.xml",
        &xml("service=\"bastion\"/>", "service=\"edge\"/>"),
        "edge\"/>",
        "service \"edge\" routes to itself on 127.0.0.1:0",
    );
    refused(
        dir,
        "sni.xml",
        &xml("*.example.org", "a.*.example.org"),
        "a.*.example.org",
        "bad sni \"a.*.example.org\": '*' only as the whole name or as the first label",
    );
    refused(
        dir,
        "host.xml",
        &xml("protocol=\"http\" host", "host"),
        "app.example.com",
        "route to \"api\": host needs protocol http",
    );
    refused(
        dir,
        "port.xml",
        &xml("app.example.com", "app.example.com:8080"),
        "app.example.com:8080",
        "bad host \"app.example.com:8080\": a port is not allowed",
    );
    refused(
        dir,
        "bare.xml",
        &xml(
            "<route protocol=\"ssh\" service=\"bastion\"/>",
            "<route service=\"bastion\"/>",
        ),
        "<route service=\"bastion\"/>",
        "route to \"bastion\" has no condition",
    );
    refused(
        dir,
        "bytes.xml",
        &xml("inspectTimeout=\"2\"", "inspectBytes=\"20000\""),
        "20000",
        "bad inspectBytes 20000: expected 1 to 16384",
    );
    refused(
        dir,
        "nogroup.xml",
        &xml("<route sni=\"*\" service=\"api\"/>", ""),
        "127.0.0.1:0\"></listen>",
        "service \"front\" has no group, and its listener 127.0.0.1:0 has no route",
    );
    refused(
        dir,
        "child.xml",
        &xml(
            "<route sni=\"*\" service=\"api\"/>",
            "<host name=\"x\" ip=\"127.0.0.1:9\"/>",
        ),
        "<host name=\"x\"",
        "unknown element <host> in <listen> (expected one of: route, tls)",
    );

    let toml = |from: &str, to: &str| {
        assert!(ROUTES_TOML.contains(from), "{from}");
        ROUTES_TOML.replace(from, to)
    };
    refused(
        dir,
        "unknown.toml",
        &toml("service = \"bastion\"", "service = \"bastoin\""),
        "bastoin",
        "service \"edge\": route on 127.0.0.1:0 to unknown service \"bastoin\"",
    );
    refused(
        dir,
        "alpn.toml",
        &toml("protocol = \"ssh\"", "protocol = \"ssh\", alpn = \"h2\""),
        "h2",
        "route to \"bastion\": alpn is only seen in TLS, not with protocol ssh",
    );
    refused(
        dir,
        "key.toml",
        &toml("protocol = \"ssh\"", "proto = \"ssh\""),
        "proto",
        "unknown field `proto`",
    );
}
