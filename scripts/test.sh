#!/usr/bin/env bash
# Runs every test of txlb on a fresh Debian machine: installs the system packages
# the end-to-end tests need, then `cargo test` (which also runs everything that
# needs only Rust).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages used by end-to-end tests. Only the missing ones are installed,
# without recommends (chromium alone pulls 133 packages with them, perl and
# systemd upgrades among them; 28 without). apt upgrades an installed package
# only when a new one needs a newer version of it: tests/cli/packaging.rs simulates
# this install and fails if it would upgrade anything.
# openssh-client: ssh, ssh-keygen, ssh-keyscan for the SSH console tests.
# systemd: `systemd-analyze verify` of the units; logrotate: checks the
# package's logrotate file (dpkg-deb, for the package test, is always there).
# chromium and chromium-driver: the browser test of the admin page
# (tests/admin/admin_browser.rs), which skips itself where they are absent.
# etcd-server: the fleet tests (tests/cli/fleet.rs) start their own etcd on
# loopback ports; they skip themselves where it is absent.
# redis-server, postgresql, mariadb-server, openssl: the protocol checks' tests
# (tests/data_path/check_protocols.rs) start their own servers on loopback
# ports; redis-server and redis-tools also serve a Redis behind a
# TLS-terminating listener, with `redis-cli --tls` (tests/data_path/tls.rs).
# python3: the TLS hosts of the origination tests (tests/data_path/tls_origination.rs).
# pebble: the ACME test server the certificates-from-ACME tests order from, on
# loopback ports (tests/data_path/acme.rs).
# dnsmasq-base and bind9-dnsutils: a DNS host (dnsmasq) behind a UDP service,
# queried with dig, and the dns check against it (tests/data_path/udp.rs).
# Each skips itself where a binary is absent unless TXLB_REQUIRE_HOSTS is set.
packages=(curl openssh-client systemd logrotate chromium chromium-driver etcd-server
  redis-server redis-tools postgresql mariadb-server openssl python3 pebble
  dnsmasq-base bind9-dnsutils)
missing=()
for p in "${packages[@]}"; do
  # "installed", not merely known to dpkg (removed but not purged).
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
apt_install=(apt-get install -y -qq --no-install-recommends --no-upgrade)
# `scripts/test.sh --print-install` prints the install command and the packages
# (all of them, missing or not) and exits: tests/cli/packaging.rs simulates it.
if [ "${1:-}" = --print-install ]; then
  echo "${apt_install[*]} ${packages[*]}"
  exit 0
fi
if [ ${#missing[@]} -gt 0 ]; then
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive "${apt_install[@]}" "${missing[@]}"
fi

# cargo-deb, for the package test (tests/cli/packaging.rs; about 2.5 minutes to
# install once, then cached in ~/.cargo/bin).
cargo deb --version >/dev/null 2>&1 || cargo install cargo-deb --locked

# Four test threads on any machine: the end-to-end tests mostly wait on
# sockets and timers, so two threads on two cores left the CPU idle (the data
# path's tests took 147 s, 126 s with four; the console's 43 s, 31 s). The
# heaviest are serialised among themselves (tests/common/mod.rs, `heavy`).
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}

# The default targets: unit and integration tests, the doc tests, and the
# examples built as programs (tests/cli/examples.rs runs them; --all-targets
# would build them as tests instead). --locked: Cargo.lock is up to date.
cargo test --locked "$@"
# The benchmarks, once each as a test (`--benches` would run the unit tests
# again: the library is a bench target too).
cargo test --locked --bench '*'

# The fuzz targets' properties run above on seeds, past crashes and random
# mutations (src/fuzzing/replay.rs). The libFuzzer smoke needs cargo-fuzz and an
# instrumented release build of everything (over ten minutes on two cores), so
# it is opt-in: TXLB_FUZZ_SMOKE=1 (seconds per target in TXLB_FUZZ_SECS).
if [ "${TXLB_FUZZ_SMOKE:-0}" = 1 ]; then
  scripts/fuzz.sh "${TXLB_FUZZ_SECS:-5}"
fi
