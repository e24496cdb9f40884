//! Every example under `examples/` runs to completion and succeeds: they are the
//! embedding API's documentation, so they must keep working.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// `cargo test` builds the examples next to the test binaries' directory.
fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().expect("test binary path");
    let profile = deps
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    profile.join("examples").join(name)
}

fn run(name: &str, expect: &str) {
    let path = example(name);
    if !path.exists() {
        // Built by `cargo test` (scripts/test.sh); `--all-targets` or a
        // filtered `cargo test --test cli` does not.
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // Without the variables cargo sets for a test: build scripts watching
        // them (ring's) would rebuild half the dependencies, and again at the
        // next build.
        for (key, _) in std::env::vars() {
            let set_for_tests = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ]
            .iter()
            .any(|prefix| key.starts_with(prefix))
                || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"]
                    .contains(&key.as_str());
            if set_for_tests {
                build.env_remove(key);
            }
        }
        let status = build.status().expect("cargo build --example");
        assert!(status.success());
    }
    let started = Instant::now();
    let out = Command::new(&path).output().expect("example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(expect), "{name} printed:\n{stdout}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn embedded_web_balances_three_in_process_backends() {
    run("embedded_web", "through the balancer");
}

#[test]
fn custom_scheduler_is_honoured() {
    run("custom_scheduler", "custom scheduler honoured");
}

#[test]
fn live_changes_lose_no_client() {
    run("live_changes", "client failures: 0");
}
