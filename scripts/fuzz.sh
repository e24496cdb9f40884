#!/usr/bin/env bash
# Runs each cargo-fuzz (libFuzzer) target for a bounded time.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60; targets default to all of fuzz/fuzz_targets/.
# Each run starts from the committed seeds (fuzz/seeds/TARGET/) plus the corpus
# grown by earlier runs (fuzz/corpus/TARGET/, not committed), with a dictionary
# from fuzz/dict/ when there is one.
#
# Only the stable toolchain is needed: cargo-fuzz passes nightly-only flags
# (-Zsanitizer=address and friends), which stable rustc accepts with
# RUSTC_BOOTSTRAP=1. cargo-fuzz is installed from crates.io when missing.
# FUZZ_SANITIZER=none skips AddressSanitizer (faster builds; txlb has almost no
# unsafe code). The first build takes several minutes (release, instrumented).
#
# A crash stops that target and leaves the input in fuzz/artifacts/TARGET/.
# Fix it, then copy the input to tests/fixtures/fuzz/TARGET/: src/fuzzing/replay.rs
# replays it in every `cargo test`. The script exits non-zero if any target
# found a crash.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in fuzz/fuzz_targets/*.rs; do
    targets+=("$(basename "$f" .rs)")
  done
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-address}"

cargo fuzz build -O -s "$sanitizer"

failed=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  args=(-max_total_time="$secs" -max_len=8192 -print_final_stats=1)
  if [ -f "fuzz/dict/$t.dict" ]; then
    args+=(-dict="fuzz/dict/$t.dict")
  fi
  echo "== $t: ${secs}s"
  set +e
  cargo fuzz run -O -s "$sanitizer" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- "${args[@]}" 2>&1 |
    grep -E '^(==|INFO: seed corpus|Done|stat::number_of_executed_units|stat::new_units_added|SUMMARY|thread|.*panicked|.*Test unit written)'
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${secs}s each, no crash"
