//! Replays the fuzz targets' properties (`fuzz/checks.rs`) in a normal
//! `cargo test`, as unit tests of the library (the parsers are internal): on the
//! seeds (`fuzz/seeds/TARGET/`), on every input a fuzzer once found a bug with
//! (`tests/fixtures/fuzz/TARGET/`), and on a few thousand cheap random mutations
//! of the seeds, so CI checks the same properties without libFuzzer. `scripts/fuzz.sh` runs the real fuzzers.

#[path = "../../fuzz/checks.rs"]
mod checks;

use std::path::Path;

/// Files of `dir` (none if it does not exist), sorted.
fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

/// Seeds and regression inputs of `target`, each through `check`, then
/// `mutations` random byte-level mutations of the seeds.
fn replay(target: &str, check: fn(&[u8]), mutations: usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = inputs(&root.join("fuzz/seeds").join(target));
    let regressions = inputs(&root.join("tests/fixtures/fuzz").join(target));
    assert!(!seeds.is_empty(), "no seeds for {target}");
    for (name, bytes) in seeds.iter().chain(&regressions) {
        let caught = std::panic::catch_unwind(|| check(bytes));
        assert!(caught.is_ok(), "{target}: {name} fails");
    }
    let mut rng = fastrand::Rng::with_seed(0x7a1b_u64.wrapping_add(target.len() as u64));
    for _ in 0..mutations {
        let mut bytes = seeds[rng.usize(..seeds.len())].1.clone();
        for _ in 0..rng.usize(1..8) {
            if bytes.is_empty() {
                bytes.push(rng.u8(..));
                continue;
            }
            let at = rng.usize(..bytes.len());
            match rng.u8(..4) {
                0 => bytes[at] = rng.u8(..),
                1 => {
                    bytes.remove(at);
                }
                2 => bytes.insert(at, rng.u8(..)),
                _ => {
                    // Duplicate or drop a run, as a crude splice.
                    let end = (at + rng.usize(1..32)).min(bytes.len());
                    if rng.bool() {
                        let run = bytes[at..end].to_vec();
                        bytes.splice(at..at, run);
                    } else {
                        bytes.drain(at..end);
                    }
                }
            }
        }
        let copy = bytes.clone();
        let caught = std::panic::catch_unwind(move || check(&copy));
        assert!(
            caught.is_ok(),
            "{target}: mutated input fails; keep it in tests/fixtures/fuzz/{target}/: {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

#[test]
fn proxy_header() {
    replay("proxy_header", checks::proxy_header, 20_000);
}

#[test]
fn config_xml() {
    replay("config_xml", checks::config_xml, 2_000);
}

#[test]
fn config_toml() {
    replay("config_toml", checks::config_toml, 2_000);
}

/// Nesting far past any stack (as deep as a 1.4 MB file allows) in every
/// place each format nests, through the targets' properties on a thread with a
/// small stack: the readers must refuse it by depth, never recurse into it.
#[test]
fn deep_nesting() {
    const N: usize = 200_000;
    let xml = |open: &str, close: &str| {
        let seed = include_str!("../../fuzz/seeds/config_xml/deep-note.xml");
        let nested = format!("{}{}", open.repeat(N), close.repeat(N));
        seed.replace("</config>", &format!("{nested}</config>"))
    };
    let toml = |tail: String| {
        let seed = include_str!("../../fuzz/seeds/config_toml/options.toml");
        format!("{seed}\n{tail}\n")
    };
    type Check = fn(&[u8]);
    let inputs: Vec<(Check, String)> = vec![
        (checks::config_xml, xml("<x>", "</x>")),
        (checks::config_xml, xml("<note>", "</note>")),
        (checks::config_xml, xml("<service>", "</service>")),
        (
            checks::config_toml,
            toml(format!("x = {}{}", "[".repeat(N), "]".repeat(N))),
        ),
        (
            checks::config_toml,
            toml(format!("x = {}1{}", "{a=".repeat(N), "}".repeat(N))),
        ),
        (
            checks::config_toml,
            toml(format!("x{} = 1", ".a".repeat(N))),
        ),
        (checks::config_toml, toml(format!("[x{}]", ".a".repeat(N)))),
        (
            checks::config_toml,
            toml(format!("[[x{}]]", ".a".repeat(N))),
        ),
    ];
    for (check, input) in inputs {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || check(input.as_bytes()))
            .unwrap()
            .join()
            .expect("a deep input overflowed or panicked");
    }
}

#[test]
fn legacy_params() {
    replay("legacy_params", checks::legacy_params, 20_000);
}

#[test]
fn quic_initial() {
    replay("quic_initial", checks::quic_initial, 1_000);
}

#[test]
fn client_hello() {
    replay("client_hello", checks::client_hello, 3_000);
}

#[test]
fn http_request() {
    replay("http_request", checks::http_request, 3_000);
}
