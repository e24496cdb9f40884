//! The core's module order, checked on the source: each top-level module may use
//! only modules of earlier ranks (see docs/ARCHITECTURE.md, "Module order"). Run
//! with `cargo test --lib module_order -- --nocapture` to see every module's uses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Ranks, first to last; modules of one rank do not use each other, but for the
/// surfaces of the last rank (without a cycle). Leaves that use nothing of the
/// crate (events, logging) and the binary's files are not ranked.
const ORDER: &[&[&str]] = &[
    &["config"],
    &["routing", "tls"],
    &["state"],
    &["scheduler"],
    &["snapshot"],
    &["proxy", "health", "dns", "lookup"],
    &["control"],
    // Fleet mode routes changes through etcd before the controller applies
    // them: beside the controller, below the handle that sends changes to it.
    &["fleet"],
    &["balancer"],
    // The upgrade hands a running balancer's sockets and state to a new
    // process, and starts one from them.
    &["upgrade"],
    &["ops"],
    &["admin", "ssh"],
];

fn rank(module: &str) -> Option<usize> {
    ORDER.iter().position(|group| group.contains(&module))
}

/// Every `.rs` file under `path`.
fn files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The names after `crate::` in `text`, comments left out.
fn crate_paths(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .flat_map(|code| {
            code.match_indices("crate::")
                .map(move |(i, _)| &code[i + 7..])
        })
        .map(|rest| {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
}

/// Item name → its module, for lib.rs's `pub use module::{…};` re-exports.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for part in lib.split("pub use ").skip(1) {
        let Some(statement) = part.split(';').next() else {
            continue;
        };
        let Some((module, items)) = statement.split_once("::") else {
            continue;
        };
        for item in items.trim_matches(|c| "{} \n".contains(c)).split(',') {
            let name = item.rsplit(" as ").next().unwrap_or("").trim();
            if !name.is_empty() {
                out.insert(name.to_string(), module.trim().to_string());
            }
        }
    }
    out
}

#[test]
fn no_module_uses_a_later_one() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let items = reexports(&lib);
    let mut uses: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let Some(module) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if module == "lib" || module == "bin" || rank(&module).is_none() {
            continue;
        }
        let mut sources = Vec::new();
        files(&path, &mut sources);
        for file in sources {
            let text = std::fs::read_to_string(&file).unwrap();
            for name in crate_paths(&text) {
                let target = items.get(name).map_or(name, String::as_str);
                if target != module && rank(target).is_some() {
                    uses.entry(module.clone())
                        .or_default()
                        .entry(target.to_string())
                        .or_default()
                        .insert(file.strip_prefix(&src).unwrap().display().to_string());
                }
            }
        }
    }
    let mut wrong = Vec::new();
    for (module, targets) in &uses {
        let here = rank(module).unwrap();
        println!(
            "{module}: {}",
            targets.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        for (target, files) in targets {
            let there = rank(target).unwrap();
            let same_rank_allowed = here == ORDER.len() - 1
                && !uses.get(target).is_some_and(|t| t.contains_key(module));
            if there > here || (there == here && !same_rank_allowed) {
                wrong.push(format!("{module} uses {target} (in {files:?})"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "against the module order:\n{}",
        wrong.join("\n")
    );
}
