#!/usr/bin/env bash
# bench/udp.sh: DNS-like request/response over UDP through txlb, nginx stream
# (`listen ... udp`) and dnsdist, beside the clients talking to the host directly.
# See BENCHMARKS.md, "UDP".
#
#   bench/udp.sh [--secs S] [--repeats R] [--conc C] [--sessions N] [--only LIST] [--build]
#
# Per variant and repeat: the proxy pinned to CPU 0, the host (bench/udpbench.c echo,
# answering each query with itself marked as a response) and the clients on CPU 1.
# - saturation: C client sockets (default 64; each one session) send a query and the
#   next once answered, for S seconds (default 5): answers/s, p50/p99 round trip, and
#   the proxy's CPU (user + system, /proc/PID/stat, all threads) per answer and per
#   datagram (two per answer: the query in, the answer out).
# - sessions: N client sockets (default 4000) one query each, held open: the proxy's
#   VmRSS after minus before, per session.
# Environment: TXLB_BIN (default ${CARGO_TARGET_DIR:-target}/release/txlb),
#              TXLB_BIN_B (another txlb binary: variant "txlb-b", added to the
#              default list when set, for an A/B in one run),
#              BENCH_NO_INSTALL=1 (never call apt-get for nginx's stream module or dnsdist).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
SECS=5 REPEATS=3 CONC=64 SESSIONS=4000 ONLY=direct,txlb,nginx,dnsdist BUILD=0
while [ $# -gt 0 ]; do
    case "$1" in
        --secs) SECS=${2:?}; shift ;;
        --repeats) REPEATS=${2:?}; shift ;;
        --conc) CONC=${2:?}; shift ;;
        --sessions) SESSIONS=${2:?}; shift ;;
        --only) ONLY=${2:?}; shift ;;
        --build) BUILD=1 ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "udp.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
export PATH=$PATH:/usr/sbin:/sbin
log() { printf '[udp %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
[ "$(nproc)" -ge 2 ] || die "needs two CPUs (the proxy on CPU 0, host and clients on CPU 1)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/txlb-udp.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

stream_module() {  # the load_module line nginx needs for stream ("" if built in)
    local v
    v=$(nginx -V 2>&1) || return 1
    if grep -q -- '--with-stream\( \|$\)' <<<"$v"; then echo ""; return 0; fi
    for f in /usr/lib/nginx/modules/ngx_stream_module.so /usr/share/nginx/modules/ngx_stream_module.so; do
        [ -e "$f" ] && { echo "load_module $f;"; return 0; }
    done
    return 1
}
install_peers() {
    local missing=()
    case ",$ONLY," in *,nginx,*) { have nginx && stream_module >/dev/null; } || missing+=(nginx libnginx-mod-stream) ;; esac
    case ",$ONLY," in *,dnsdist,*) have dnsdist || missing+=(dnsdist) ;; esac
    [ ${#missing[@]} -eq 0 ] && return 0
    [ -z "${BENCH_NO_INSTALL:-}" ] && [ "$(id -u)" = 0 ] && have apt-get || return 0
    log "installing from Debian: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -y -qq -o Dpkg::Use-Pty=0 install --no-install-recommends \
        "${missing[@]}" >"$WORK/apt.log" 2>&1 || log "could not install ${missing[*]} (see apt's log)"
}
install_peers

UB=$WORK/udpbench
cc -O2 -o "$UB" "$BENCH_DIR/udpbench.c" || die "compiling bench/udpbench.c failed"
if [ "$BUILD" = 1 ]; then (cd "$ROOT" && cargo build --release) >&2; fi
TXLB_BIN=${TXLB_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/txlb}
[ -x "$TXLB_BIN" ] || die "no txlb at $TXLB_BIN (cargo build --release, or --build)"
if [ -n "${TXLB_BIN_B:-}" ]; then
    [ -x "$TXLB_BIN_B" ] || die "no txlb at TXLB_BIN_B=$TXLB_BIN_B"
    case ",$ONLY," in *,txlb-b,*) ;; *) ONLY=$ONLY,txlb-b ;; esac
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

taskset -c 1 "$UB" echo 0 >"$WORK/echo.port" 2>"$WORK/echo.log" &
PIDS+=("$!")
for _ in $(seq 1 50); do [ -s "$WORK/echo.port" ] && break; sleep 0.1; done
ECHO=$(cat "$WORK/echo.port")
[ -n "$ECHO" ] || die "the echo host did not start"
free_port() {  # a port free for UDP and TCP both (dnsdist binds both)
    python3 - <<'PY'
import socket
for _ in range(100):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    port = u.getsockname()[1]
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        t.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(port)
    break
PY
}
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
TICK=$(getconf CLK_TCK)

# start VARIANT PORT: starts the proxy on CPU 0 listening on PORT; prints the PID whose
# CPU and memory count (nginx: its worker).
start() {
    local v=$1 port=$2 pid
    case $v in
        txlb|txlb-b)
            local bin=$TXLB_BIN
            [ "$v" = txlb-b ] && bin=$TXLB_BIN_B
            cat >"$WORK/txlb.xml" <<EOF
<config><service name="dns" protocol="udp" sessionTimeout="60" maxSessions="100000">
  <listen ip="127.0.0.1:$port"/>
  <group name="g" scheduler="roundr" enable="true"><host name="h" ip="127.0.0.1:$ECHO"/></group>
</service></config>
EOF
            TXLB_LOG=warn taskset -c 0 "$bin" run --config "$WORK/txlb.xml" --grace 1 >"$WORK/$v.log" 2>&1 &
            pid=$! ;;
        nginx)
            cat >"$WORK/nginx.conf" <<EOF
$(stream_module)
worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err error;
events { worker_connections 65536; }
stream { server { listen 127.0.0.1:$port udp; proxy_pass 127.0.0.1:$ECHO; proxy_timeout 60s; } }
EOF
            taskset -c 0 nginx -e "$WORK/nginx.err" -p "$WORK" -c "$WORK/nginx.conf" >"$WORK/nginx.log" 2>&1 &
            local master=$!
            PIDS+=("$master")
            for _ in $(seq 1 50); do pid=$(pgrep -P "$master" | head -n 1 || true); [ -n "$pid" ] && break; sleep 0.1; done
            [ -n "$pid" ] || die "nginx did not start a worker: $(cat "$WORK/nginx.err" 2>/dev/null)" ;;
        dnsdist)
            cat >"$WORK/dnsdist.conf" <<EOF
setLocal("127.0.0.1:$port")
newServer({address="127.0.0.1:$ECHO", checkInterval=3600})
setSecurityPollSuffix("")
EOF
            taskset -c 0 dnsdist --supervised --disable-syslog -C "$WORK/dnsdist.conf" >"$WORK/dnsdist.log" 2>&1 &
            pid=$! ;;
    esac
    PIDS+=("$pid")
    echo "$pid"
}
stop() {  # stop PID VARIANT
    if [ "$2" = nginx ]; then kill "$(cat "$WORK/nginx.pid" 2>/dev/null)" 2>/dev/null || true; fi
    kill "$1" 2>/dev/null || true
    sleep 0.3
}

# answers ADDR: whether a proxy just started answers, trying for up to 10 s
answers() {
    local _
    for _ in $(seq 1 20); do
        taskset -c 1 "$UB" load "$1" 1 0.3 >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

# saturation VARIANT: prints "variant answers/s p50 p99 cpu_us/answer cpu_us/datagram"
saturation() {
    local v=$1 port pid t0 t1 out addr
    if [ "$v" = direct ]; then
        addr=127.0.0.1:$ECHO pid=
    else
        port=$(free_port); addr=127.0.0.1:$port
        pid=$(start "$v" "$port"); sleep 1
        kill -0 "$pid" 2>/dev/null || die "$v did not start: $(tail -n 5 "$WORK/$v.log" 2>/dev/null)"
        answers "$addr" || die "$v answers no query: $(tail -n 5 "$WORK/$v.log" 2>/dev/null)"
    fi
    [ -n "$pid" ] && t0=$(proc_ticks "$pid")
    out=$(taskset -c 1 "$UB" load "$addr" "$CONC" "$SECS") || die "$v: load failed: $out"
    [ -n "$pid" ] && t1=$(proc_ticks "$pid")
    [ -n "$pid" ] && stop "$pid" "$v"
    python3 - "$v" "$out" "${t0:-0}" "${t1:-0}" "$TICK" <<'PY'
import json, sys
v, out, t0, t1, hz = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
cpu = (t1 - t0) / hz
n = max(out["answers"], 1)
per = 1e6 * cpu / n
print(f"{v:8} {out['rps']:10.0f} {out['p50_us']:8.1f} {out['p99_us']:8.1f} {per:10.2f} {per / 2:10.2f} {out['lost']:6}")
PY
}

# memory VARIANT: prints "variant sessions bytes/session"
memory() {
    local v=$1 port pid before after ready
    port=$(free_port)
    pid=$(start "$v" "$port"); sleep 1
    answers "127.0.0.1:$port" || die "$v answers no query: $(tail -n 5 "$WORK/$v.log" 2>/dev/null)"
    sleep 1
    before=$(rss_kib "$pid")
    taskset -c 1 "$UB" sessions "127.0.0.1:$port" "$SESSIONS" 20 >"$WORK/sessions.out" 2>&1 &
    local clients=$!
    for _ in $(seq 1 300); do grep -q ready "$WORK/sessions.out" && break; sleep 0.1; done
    ready=$(awk '/ready/ {print $2}' "$WORK/sessions.out")
    sleep 2
    after=$(rss_kib "$pid")
    kill "$clients" 2>/dev/null || true
    wait "$clients" 2>/dev/null || true
    stop "$pid" "$v"
    awk -v v="$v" -v n="${ready:-0}" -v b="$before" -v a="$after" \
        'BEGIN { printf "%-8s %9d %10.0f\n", v, n, n ? (a - b) * 1024 / n : 0 }'
}

VARIANTS=()
IFS=, read -r -a WANT <<<"$ONLY"
for v in "${WANT[@]}"; do
    case $v in
        direct|txlb|txlb-b) VARIANTS+=("$v") ;;
        nginx) if have nginx && stream_module >/dev/null; then VARIANTS+=(nginx); else log "skipping nginx: no stream module"; fi ;;
        dnsdist) if have dnsdist; then VARIANTS+=(dnsdist); else log "skipping dnsdist: not installed"; fi ;;
        *) die "unknown variant $v" ;;
    esac
done
log "${VARIANTS[*]}: $CONC client sockets for $SECS s, $REPEATS repeats; $SESSIONS sessions held"
printf '%-8s %10s %8s %8s %10s %10s %6s\n' variant answers/s p50us p99us cpu/ans cpu/dgram lost
for r in $(seq 1 "$REPEATS"); do
    for v in "${VARIANTS[@]}"; do saturation "$v"; done
done
printf '%-8s %9s %10s\n' variant sessions B/session
for v in "${VARIANTS[@]}"; do [ "$v" = direct ] || memory "$v"; done
