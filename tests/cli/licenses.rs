//! Every crate txlb builds with (from `cargo metadata`, dev-dependencies too) is
//! under a license that lets txlb be distributed as MIT OR Apache-2.0: permissive
//! licenses, or MPL-2.0's file-level copyleft for unmodified files (smartstring,
//! under rhai, is MPL-2.0+). A new
//! dependency under GPL, AGPL, SSPL or no declared license fails here.

use std::process::Command;

/// Licenses compatible with distributing txlb under MIT OR Apache-2.0.
const ALLOWED: &[&str] = &[
    "MIT",
    "MIT-0",
    "Apache-2.0",
    "Apache-2.0 WITH LLVM-exception",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "0BSD",
    "ISC",
    "Zlib",
    "BSL-1.0",
    "CC0-1.0",
    "Unlicense",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "CDLA-Permissive-2.0",
    "MPL-2.0",
];

/// Whether the SPDX expression can be satisfied with [`ALLOWED`] licenses:
/// `OR` needs one side, `AND` both; parentheses group; `WITH` binds to its
/// license. The old `/` separator means `OR`.
fn satisfiable(expr: &str) -> bool {
    let spaced = expr
        .replace('(', " ( ")
        .replace(')', " ) ")
        .replace('/', " OR ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let mut pos = 0;
    let ok = or_expr(&tokens, &mut pos);
    ok && pos == tokens.len()
}

fn or_expr(t: &[&str], pos: &mut usize) -> bool {
    let mut ok = and_expr(t, pos);
    while t.get(*pos) == Some(&"OR") {
        *pos += 1;
        ok |= and_expr(t, pos);
    }
    ok
}

fn and_expr(t: &[&str], pos: &mut usize) -> bool {
    let mut ok = atom(t, pos);
    while t.get(*pos) == Some(&"AND") {
        *pos += 1;
        ok &= atom(t, pos);
    }
    ok
}

fn atom(t: &[&str], pos: &mut usize) -> bool {
    match t.get(*pos) {
        Some(&"(") => {
            *pos += 1;
            let ok = or_expr(t, pos);
            if t.get(*pos) == Some(&")") {
                *pos += 1;
            }
            ok
        }
        Some(id) => {
            *pos += 1;
            // `MPL-2.0+`: that version or a later one, so that version will do.
            let mut name = id.trim_end_matches('+').to_string();
            if t.get(*pos) == Some(&"WITH") {
                name = format!("{name} WITH {}", t.get(*pos + 1).unwrap_or(&""));
                *pos += 2;
            }
            ALLOWED.contains(&name.as_str())
                || ALLOWED.contains(&name.split(" WITH ").next().unwrap_or(""))
        }
        None => false,
    }
}

#[test]
fn spdx_expressions_are_evaluated() {
    assert!(satisfiable("MIT OR Apache-2.0"));
    assert!(satisfiable("(MIT OR Apache-2.0) AND Unicode-3.0"));
    assert!(satisfiable(
        "Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT"
    ));
    assert!(satisfiable("MIT/Apache-2.0"));
    assert!(satisfiable("MPL-2.0+"));
    assert!(satisfiable("GPL-3.0 OR MIT"));
    assert!(!satisfiable("GPL-3.0"));
    assert!(!satisfiable("MIT AND GPL-2.0-only"));
    assert!(!satisfiable("(AGPL-3.0 OR SSPL-1.0) AND MIT"));
    assert!(!satisfiable(""));
}

#[test]
fn every_dependency_license_is_compatible() {
    // The crates built on this machine's platform: those of other platforms
    // (Windows, Android) are not in the registry cache of an offline machine.
    let rustc = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc runs");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host");
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    assert!(packages.len() > 50, "only {} packages", packages.len());
    let mut refused = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or("?");
        let version = package["version"].as_str().unwrap_or("?");
        match package["license"].as_str() {
            Some(license) if satisfiable(license) => {}
            Some(license) => refused.push(format!("{name} {version}: {license}")),
            None => refused.push(format!("{name} {version}: no SPDX license declared")),
        }
    }
    assert!(
        refused.is_empty(),
        "dependencies whose license is not known to be compatible:\n{}",
        refused.join("\n")
    );
}
