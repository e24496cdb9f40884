#!/usr/bin/env bash
# Runs every test of txlb on a fresh Debian machine: installs the system packages
# the end-to-end tests need, then `cargo test` (which also runs everything that
# needs only Rust).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages used by end-to-end tests. Installed only when missing.
# openssh-client: ssh, ssh-keygen, ssh-keyscan for the SSH console tests.
# systemd: `systemd-analyze verify` of the units; logrotate: checks the
# package's logrotate file (dpkg-deb, for the package test, is always there).
# chromium and chromium-driver: the browser test of the admin page
# (tests/admin_browser.rs), which skips itself where they are absent.
# etcd-server: the fleet tests (tests/fleet.rs) start their own etcd on
# loopback ports; they skip themselves where it is absent.
packages=(curl openssh-client systemd logrotate chromium chromium-driver etcd-server)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
fi

# cargo-deb, for the package test (tests/packaging.rs; about 2.5 minutes to
# install once, then cached in ~/.cargo/bin).
cargo deb --version >/dev/null 2>&1 || cargo install cargo-deb --locked

cargo test --all-targets "$@"
cargo test --doc

# The fuzz targets' properties run above on seeds, past crashes and random
# mutations (src/fuzzing/replay.rs). The libFuzzer smoke needs cargo-fuzz and an
# instrumented release build of everything (over ten minutes on two cores), so
# it is opt-in: TXLB_FUZZ_SMOKE=1 (seconds per target in TXLB_FUZZ_SECS).
if [ "${TXLB_FUZZ_SMOKE:-0}" = 1 ]; then
  scripts/fuzz.sh "${TXLB_FUZZ_SECS:-5}"
fi
