//! What operators install: the Debian package (built by `scripts/package.sh`,
//! unpacked into a scratch root, its binary checking its own configuration), the
//! systemd units (`systemd-analyze verify`), the man page, shell completions and
//! the Grafana dashboard. Tests that need a tool this machine lacks say so and
//! skip; `scripts/test.sh` installs them all.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TXLB: &str = env!("CARGO_BIN_EXE_txlb");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `tool` runs; prints why the test skips when it does not.
fn have(tool: &str, args: &[&str], test: &str) -> bool {
    let found = Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        // Straight to stderr: the test harness captures println! of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: `{tool}` is not installed (scripts/test.sh installs it)"
        );
    }
    found
}

fn run(command: &mut Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(command: &mut Command) -> String {
    String::from_utf8(run(command).stdout).unwrap()
}

/// `cargo xtask ARGS`: the build-time artefacts (xtask/src/main.rs).
fn xtask(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(repo()).arg("xtask").args(args);
    command
}

#[test]
fn completions_and_man_page_generate() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout(&mut xtask(&["completions", shell]));
        assert!(
            script.contains("txlb") && script.contains("passwd"),
            "{shell}"
        );
    }
    // The bash script at least parses.
    let dir = tempfile::tempdir().unwrap();
    let bash = dir.path().join("txlb.bash");
    std::fs::write(&bash, stdout(&mut xtask(&["completions", "bash"]))).unwrap();
    run(Command::new("bash").arg("-n").arg(&bash));

    let man = stdout(&mut xtask(&["man"]));
    assert!(man.contains(".TH txlb 1"), "{man}");
    let version = concat!("txlb ", env!("CARGO_PKG_VERSION"));
    assert!(man.contains(version), "no {version} in:\n{man}");
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH COMMANDS",
        ".SH SIGNALS",
        ".SH FILES",
    ] {
        assert!(man.contains(section), "no {section} in:\n{man}");
    }
    assert!(man.contains("txlb run") && man.contains("\\-\\-config"));
    // groff (man's formatter) reads it without warnings, when present.
    if have("groff", &["--version"], "man page formatting") {
        let page = dir.path().join("txlb.1");
        std::fs::write(&page, &man).unwrap();
        let out = run(Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&page));
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Copies the units into `dir` with `/usr/bin/txlb` replaced by `binary`, as
/// `systemd-analyze verify` checks that the commands exist.
fn units_for(binary: &Path, units: &Path, dir: &Path) -> Vec<PathBuf> {
    ["txlb.service", "txlb.socket"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(units.join(name)).unwrap();
            let path = dir.join(name);
            let text = text.replace("/usr/bin/txlb", binary.to_str().unwrap());
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

/// `systemd-analyze verify` of the units, quiet: warnings are failures too.
fn verify_units(binary: &Path, units: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let files = units_for(binary, units, dir.path());
    // --man=no: Documentation=man:txlb(1) is checked by the package test's file
    // list; this machine's man database does not know the page.
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&files));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}

#[test]
fn systemd_analyze_verifies_the_units() {
    if !have(
        "systemd-analyze",
        &["--version"],
        "systemd_analyze_verifies_the_units",
    ) {
        return;
    }
    verify_units(Path::new(TXLB), &repo().join("pkg"));
    let unit = std::fs::read_to_string(repo().join("pkg/txlb.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecStartPre=/usr/bin/txlb check",
        "ExecReload=/usr/bin/txlb check --config ${TXLB_CONFIG}\nExecReload=/bin/kill -HUP $MAINPID",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "User=txlb",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/etc/txlb",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "WatchdogSec=",
    ] {
        assert!(unit.contains(line), "txlb.service lacks {line:?}");
    }
}

#[test]
fn grafana_dashboard_queries_txlb_metrics() {
    let text = std::fs::read_to_string(repo().join("contrib/grafana/txlb.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dashboard["uid"], "txlb");
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["targets"].as_array())
        .flatten()
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    let all = exprs.join("\n");
    // The families of the admin plane's /metrics that the issue asks to show.
    for metric in [
        "txlb_service_connections_open",
        "txlb_host_connections_open",
        "txlb_host_bytes_in_total",
        "txlb_host_bytes_out_total",
        "txlb_host_connections_failed_total",
        "txlb_host_state",
        "txlb_host_connect_latency_seconds_bucket",
    ] {
        assert!(all.contains(metric), "no panel shows {metric}");
    }
    for expr in exprs {
        assert_eq!(
            expr.matches('(').count(),
            expr.matches(')').count(),
            "{expr}"
        );
    }
}

/// The number after `key` in `text` (`--grace 20`, `TimeoutStopSec=30`,
/// `TXLB_GRACE=20`).
fn number_after(text: &str, key: &str) -> u64 {
    let rest = &text[text
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in:\n{text}"))
        + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {key:?}"))
}

#[test]
fn the_units_grace_leaves_systemd_a_margin_and_the_readme_says_so() {
    let unit = std::fs::read_to_string(repo().join("pkg/txlb.service")).unwrap();
    let exec = unit
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart");
    // The grace must reach txlb: the command line passes it.
    assert!(exec.contains("--grace ${TXLB_GRACE}"), "{exec}");
    let grace = number_after(&unit, "Environment=TXLB_GRACE=");
    let stop = number_after(&unit, "TimeoutStopSec=");
    assert!(
        grace > 0 && grace + 10 <= stop,
        "grace {grace} s leaves TimeoutStopSec={stop} less than 10 s to close the rest"
    );
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!(
            "`systemctl stop` lets open connections finish for {grace} s"
        )),
        "README.md does not state the unit's grace of {grace} s"
    );
    assert!(readme.contains(&format!("`TimeoutStopSec={stop}`")));
}

#[test]
fn test_script_installs_only_whats_missing_without_recommends_or_upgrades() {
    let test = "test_script_installs_only_whats_missing_without_recommends_or_upgrades";
    let line = stdout(Command::new(repo().join("scripts/test.sh")).arg("--print-install"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[..2], ["apt-get", "install"], "{line}");
    for flag in ["--no-install-recommends", "--no-upgrade"] {
        assert!(
            words.contains(&flag),
            "scripts/test.sh installs without {flag}: {line}"
        );
    }
    if !have("apt-get", &["--version"], test) {
        return;
    }
    // Simulate the install of every package, present or not: nothing already on
    // the machine may be upgraded. A machine without package lists cannot tell.
    let out = Command::new("apt-get")
        .args(&words[1..])
        .arg("--simulate")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED part of {test}: apt-get --simulate failed"
        );
        return;
    }
    let upgrades: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("Inst ")
                && l.split_whitespace()
                    .nth(2)
                    .is_some_and(|v| v.starts_with('['))
        })
        .collect();
    assert!(
        upgrades.is_empty(),
        "scripts/test.sh would upgrade:\n{}",
        upgrades.join("\n")
    );
}

#[test]
fn debian_package_installs_into_a_scratch_root_and_checks_its_config() {
    let test = "debian_package_installs_into_a_scratch_root_and_checks_its_config";
    if !have("dpkg-deb", &["--version"], test) || !have("cargo", &["deb", "--version"], test) {
        return;
    }
    // This checks the packaging, not the code: the binary this test build
    // made is packaged (TXLB_BIN), in a directory of its own (so it never
    // waits on the test build's lock); a build of its own took minutes.
    let target = repo().join("target/package-test");
    let out = stdout(
        Command::new(repo().join("scripts/package.sh"))
            .env("CARGO_TARGET_DIR", &target)
            .env("TXLB_BIN", TXLB)
            .arg("--fast"),
    );
    let deb = PathBuf::from(out.lines().last().unwrap().trim());
    assert!(deb.exists(), "no package at {deb:?}");

    let fields = stdout(
        Command::new("dpkg-deb")
            .args(["--field"])
            .arg(&deb)
            .args(["Package", "Depends"]),
    );
    assert!(
        fields.contains("Package: txlb") && fields.contains("adduser"),
        "{fields}"
    );
    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(control.path()));
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).unwrap();
    assert!(conffiles.contains("/etc/txlb/config.xml"), "{conffiles}");
    assert!(conffiles.contains("/etc/logrotate.d/txlb"), "{conffiles}");
    for script in ["postinst", "prerm", "postrm"] {
        run(Command::new("sh")
            .arg("-n")
            .arg(control.path().join(script)));
    }
    let postinst = std::fs::read_to_string(control.path().join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system") && postinst.contains("txlb"));

    let root = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(root.path()));
    for file in [
        "usr/bin/txlb",
        "etc/txlb/config.xml",
        "etc/logrotate.d/txlb",
        "usr/lib/systemd/system/txlb.service",
        "usr/lib/systemd/system/txlb.socket",
        "usr/share/man/man1/txlb.1.gz",
        "usr/share/bash-completion/completions/txlb",
        "usr/share/zsh/vendor-completions/_txlb",
        "usr/share/fish/vendor_completions.d/txlb.fish",
        "usr/share/txlb/txlb.schema.json",
        "usr/share/txlb/grafana/txlb.json",
        "usr/share/doc/txlb/README.md",
    ] {
        assert!(
            root.path().join(file).is_file(),
            "the package lacks /{file}"
        );
    }

    // The installed binary accepts the shipped configuration, which listens on
    // the loopback only.
    let installed = root.path().join("usr/bin/txlb");
    let config = root.path().join("etc/txlb/config.xml");
    let summary = stdout(
        Command::new(&installed)
            .arg("check")
            .arg("--config")
            .arg(&config),
    );
    assert!(
        summary.contains("OK") && summary.contains("listen 127.0.0.1:"),
        "{summary}"
    );
    let shipped = std::fs::read_to_string(&config).unwrap();
    for listen in shipped.split("<listen ip=\"").skip(1) {
        assert!(listen.starts_with("127.0.0.1:"), "not loopback: {listen}");
    }
    let version = stdout(Command::new(&installed).arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    if have("readelf", &["--version"], "stripped binary check") {
        let sections = stdout(Command::new("readelf").arg("-SW").arg(&installed));
        for section in [".symtab", ".debug_info", ".debug_line"] {
            assert!(
                !sections.contains(section),
                "the packaged binary keeps {section}"
            );
        }
    }
    let copyright =
        std::fs::read_to_string(root.path().join("usr/share/doc/txlb/copyright")).unwrap();
    assert!(copyright.contains("MIT OR Apache-2.0"), "{copyright}");
    for license in ["LICENSE-MIT", "LICENSE-APACHE"] {
        assert!(
            root.path()
                .join("usr/share/doc/txlb")
                .join(license)
                .is_file(),
            "no {license}"
        );
    }

    if have(
        "systemd-analyze",
        &["--version"],
        "package unit verification",
    ) {
        verify_units(&installed, &root.path().join("usr/lib/systemd/system"));
    }
    if have("logrotate", &["--version"], "logrotate file check") {
        let state = root.path().join("logrotate.state");
        run(Command::new("logrotate")
            .arg("--debug")
            .arg("--state")
            .arg(&state)
            .arg(root.path().join("etc/logrotate.d/txlb")));
    }
}
