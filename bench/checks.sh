#!/usr/bin/env bash
# bench/checks.sh: the CPU that txlb's active health checks cost, beside the least any
# checker can cost ("floor": tcpbench probe, one C thread with epoll doing the same
# connects). See BENCHMARKS.md, "Health checks".
#
#   bench/checks.sh [--hosts N] [--secs S] [--repeats R] [--types tcp,http,httpka] [--build]
#
# N hosts (default 1000) on N ports of one hold server, each checked once a second.
# Types: tcp (a connect), http (a new connection per probe: txlb's reuse="false"),
# httpka (one connection kept per host: txlb's default, the floor's keep-alive mode).
# Each variant runs pinned to CPU 0, the hold server on CPU 1, in turn, R times
# (default 3). Per run: the process's CPU (user + system, /proc/PID/stat, exited
# threads included) and CPU 0's busy time (/proc/stat, softirq included) over S
# seconds (default 20) after a warm-up, the probes (tcp: connections opened; http:
# requests the hold server answered) and the TCP segments per probe (both ends).
# Environment: TXLB_BIN (default ${CARGO_TARGET_DIR:-target}/release/txlb); with
# TXLB_BIN_B, a second txlb build runs beside it as variant "txlb-b" (A/B).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
HOSTS=1000 SECS=20 REPEATS=3 TYPES=tcp,http,httpka BUILD=0 WARM=4
while [ $# -gt 0 ]; do
    case "$1" in
        --hosts) HOSTS=${2:?}; shift ;;
        --secs) SECS=${2:?}; shift ;;
        --repeats) REPEATS=${2:?}; shift ;;
        --types) TYPES=${2:?}; shift ;;
        --build) BUILD=1 ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "checks.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
# The run gets a network namespace of its own where it can, so that the TCP
# counters it reads (/proc/net/snmp is per namespace) count its probes only.
if [ -z "${CHECKS_NETNS:-}" ] && unshare -n true 2>/dev/null; then
    exec env CHECKS_NETNS=1 unshare -n sh -c 'ip link set lo up && exec "$0" "$@"' "$0" "$@"
fi
log() { printf '[checks %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(nproc)" -ge 2 ] || die "needs two CPUs (the checker on CPU 0, the hosts on CPU 1)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/txlb-checks.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

TB=$WORK/tcpbench
cc -O2 -pthread -o "$TB" "$BENCH_DIR/tcpbench.c" || die "compiling bench/tcpbench.c failed"
if [ "$BUILD" = 1 ]; then (cd "$ROOT" && cargo build --release) >&2; fi
TXLB_BIN=${TXLB_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/txlb}
[ -x "$TXLB_BIN" ] || die "no txlb at $TXLB_BIN (cargo build --release, or --build)"

# The hosts: one hold server (answers HTTP) on N ephemeral ports, on CPU 1.
taskset -c 1 "$TB" holdmany "$HOSTS" >"$WORK/ports" 2>"$WORK/hold.log" &
HOLD=$!
PIDS+=("$HOLD")
for _ in $(seq 1 50); do [ -s "$WORK/ports" ] && break; sleep 0.1; done
read -r -a PORTS <"$WORK/ports"
[ "${#PORTS[@]}" = "$HOSTS" ] || die "the hold server did not listen on $HOSTS ports"
PORT_LIST=$(IFS=,; echo "${PORTS[*]}")
LISTEN_PORT=$("$TB" freeport 1)

proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu0_busy() { awk '$1 == "cpu0" {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
# TCP segments sent on this machine so far (both ends of every loopback probe),
# and connections opened (a probe's connect; a tcp probe of txlb's never reaches
# the hold server's accept: it resets the connection before its handshake ends).
segments() { awk '$1 == "Tcp:" && $2 ~ /^[0-9]/ {print $12}' /proc/net/snmp; }
opened() { awk '$1 == "Tcp:" && $2 ~ /^[0-9]/ {print $6}' /proc/net/snmp; }
# Requests the hold server has answered (it says on SIGUSR1).
answered() {
    local before
    before=$(wc -l <"$WORK/hold.log")
    kill -USR1 "$HOLD"
    for _ in $(seq 1 200); do [ "$(wc -l <"$WORK/hold.log")" -gt "$before" ] && break; sleep 0.01; done
    tail -n 1 "$WORK/hold.log" | awk '$3 == "requests" {print $4}'
}
# Probes so far: connections opened (tcp), requests answered (http, httpka).
probes() { if [ "$1" = tcp ]; then opened; else answered; fi; }
TICK=$(getconf CLK_TCK)

write_conf() {  # write_conf TYPE: txlb's configuration, N hosts checked every second
    local i f=$WORK/txlb-$1.xml
    {
        echo "<config>"
        echo "  <service name=\"s\"><listen ip=\"127.0.0.1:$LISTEN_PORT\"/>"
        echo "    <group name=\"g\" scheduler=\"roundr\" enable=\"true\">"
        if [ "$1" = http ]; then
            echo '      <check type="http" path="/healthz" reuse="false" interval="1" timeout="1"/>'
        elif [ "$1" = httpka ]; then
            echo '      <check type="http" path="/healthz" interval="1" timeout="1"/>'
        else
            echo '      <check type="tcp" interval="1" timeout="1"/>'
        fi
        for i in "${!PORTS[@]}"; do echo "      <host name=\"h$i\" ip=\"127.0.0.1:${PORTS[$i]}\"/>"; done
        echo "    </group></service>"
        echo "</config>"
    } >"$f"
    echo "$f"
}

# measure VARIANT TYPE: start it on CPU 0, warm up, measure SECS, stop it; prints
# "variant type process% cpu0% probes/s segments/probe".
measure() {
    local v=$1 type=$2 pid a0 a1 p0 p1 c0 c1 s0 s1
    case $v in
        txlb | txlb-b)
            local conf bin=$TXLB_BIN
            [ "$v" = txlb ] || bin=$TXLB_BIN_B
            conf=$(write_conf "$type")
            TXLB_LOG=warn taskset -c 0 "$bin" run --config "$conf" --grace 1 >"$WORK/$v.log" 2>&1 &
            ;;
        floor)
            taskset -c 0 "$TB" probe "$PORT_LIST" 1 $((SECS + WARM + 2)) "$type" >"$WORK/floor.log" 2>&1 &
            ;;
    esac
    pid=$!
    PIDS+=("$pid")
    sleep "$WARM"
    kill -0 "$pid" 2>/dev/null || die "$v exited early: $(cat "$WORK/$v.log")"
    a0=$(probes "$type") p0=$(proc_ticks "$pid") c0=$(cpu0_busy) s0=$(segments)
    sleep "$SECS"
    a1=$(probes "$type") p1=$(proc_ticks "$pid") c1=$(cpu0_busy) s1=$(segments)
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    awk -v v="$v" -v t="$type" -v p=$((p1 - p0)) -v c=$((c1 - c0)) -v a=$((a1 - a0)) \
        -v s="$SECS" -v hz="$TICK" -v n="$HOSTS" -v g=$((s1 - s0)) 'BEGIN {
        printf "%-6s %-5s %7.2f %7.2f %9.1f %8.2f\n", v, t, 100 * p / hz / s, 100 * c / hz / s, a / s, a ? g / a : 0
        if (a / s < 0.9 * n) { print "checks.sh: too few probes: " a / s "/s for " n " hosts" > "/dev/stderr"; exit 1 }
    }'
}

log "$HOSTS hosts, each checked every second; $SECS s per run after $WARM s, $REPEATS repeats"
printf '%-6s %-5s %7s %7s %9s %8s\n' variant type "proc%" "cpu0%" "probes/s" "segs/pr"
IFS=, read -r -a TYPE_LIST <<<"$TYPES"
for r in $(seq 1 "$REPEATS"); do
    for type in "${TYPE_LIST[@]}"; do
        for v in floor txlb ${TXLB_BIN_B:+txlb-b}; do measure "$v" "$type"; done
    done
done
