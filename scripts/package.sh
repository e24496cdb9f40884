#!/usr/bin/env bash
# Builds the Debian package target/debian/txlb_VERSION_ARCH.deb (under
# $CARGO_TARGET_DIR when set): a release build, the man page and shell completions
# generated from the CLI (`cargo xtask assets`), a stripped copy of the binary,
# then `cargo deb`. Installs cargo-deb when missing. TXLB_BIN=PATH packages that
# binary instead of building.
# Prints the package's path as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
  echo "package.sh: installing cargo-deb" >&2
  cargo install cargo-deb --locked
fi

target_dir="${CARGO_TARGET_DIR:-target}"
if [ -n "${TXLB_BIN:-}" ]; then
  # A binary already built: the package test packages the one its test build
  # made (a second build of every dependency would double CI's build time).
  bin=$TXLB_BIN
else
  cargo build --release --locked
  bin="$target_dir/release/txlb"
fi
assets="$target_dir/release/pkg"
mkdir -p "$assets"
# The packaged binary without symbols or debug information (about half the size).
strip --strip-all -o "$assets/txlb" "$bin"
cargo xtask assets "$assets"
gzip -9nf "$assets/txlb.1"

cargo deb --no-build --locked "$@" | tail -n 1
