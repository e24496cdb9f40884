#!/usr/bin/env bash
# bench/compare.sh: compare txlb with no proxy ("direct"), HAProxy (TCP mode, with and
# without splice), nginx stream and pen on loopback. See BENCHMARKS.md.
#
#   bench/compare.sh            full run: 3 interleaved repeats, ~16 minutes
#   bench/compare.sh --quick    smoke test: 1 repeat, short runs, < 1 minute
#
# Options: --repeats N   --only LIST (comma-separated: direct,floor,txlb,haproxy,haproxy-splice,
#          nginx,pen, and txlb-w2: txlb with two workers on the same CPU, for the workers' flatness;
#          txlb-cf: txlb with clientFirst="true" on the HTTP service (deferred accept, no quick ACK);
#          floor is tcpbench's minimal C relay, what the kernel costs any proxy; floor-uring is
#          its io_uring counterpart, bench/urelay.c, not run by default, needs liburing-dev)
#          --scenarios LIST (comma-separated: idle,http,bulk,tls,steady; default all; tls is TLS
#          passthrough routed by SNI, run for direct, floor, txlb, haproxy and nginx; steady is
#          10,000 connections each asking once a second: latency percentiles, CPU per request)
#          --out FILE (JSON, default bench/results/latest.json)   --build (cargo build txlb first)
#          --keep (keep the work directory with configs and logs)
# Environment: TXLB_BIN (default ${CARGO_TARGET_DIR:-target}/release/txlb), CARGO_TARGET_DIR,
#          BENCH_NO_INSTALL=1 (never call apt-get), TXLB_BIN_B (a second txlb for the variant
#          txlb-b, run beside txlb for an A/B in one invocation; not run by default),
#          STEADY_CONNS, STEADY_PERIOD (s between one connection's requests), STEADY_SECS.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")

QUICK=0 REPEATS="" ONLY="" OUT="" BUILD=0 KEEP=0 SCENARIOS=idle,http,bulk,tls,steady
ARGS=("$@")   # kept for the re-run in a network namespace of its own (below)
usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --repeats) REPEATS=${2:?--repeats needs a number}; shift ;;
        --only) ONLY=${2:?--only needs a list}; shift ;;
        --scenarios) SCENARIOS=${2:?--scenarios needs a list}; shift ;;
        --out) OUT=${2:?--out needs a file}; shift ;;
        --build) BUILD=1 ;;
        --keep) KEEP=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

# ------------------------------------------------------------------ settings
HTTP_CONNS=50          # wrk connections (both request/response scenarios)
if [ "$QUICK" = 1 ]; then
    MODE=quick; REPEATS=${REPEATS:-1}
    HTTP_SECS=1; BULK1_BYTES=$((256 << 20)); BULK8_BYTES=$((256 << 20)); BULK_SECS=10
    IDLE_CONNS=1000; IDLE_SECS=20; IDLE_REST=1.5   # txlb parks idle connections after 1 s
    # a few seconds in all: txlb's three listeners, HAProxy and nginx routed only
    TLS_SECS=0.3; TLS_WARM=0.1; TLS_VARIANTS=" txlb haproxy nginx "
    STEADY_CONNS=${STEADY_CONNS:-200} STEADY_PERIOD=${STEADY_PERIOD:-0.5} STEADY_SECS=${STEADY_SECS:-1}
else
    MODE=full; REPEATS=${REPEATS:-3}
    HTTP_SECS=5; BULK1_BYTES=$((4 << 30)); BULK8_BYTES=$((4 << 30)); BULK_SECS=30
    IDLE_CONNS=10000; IDLE_SECS=30; IDLE_REST=3
    TLS_SECS=5; TLS_WARM=0.5; TLS_VARIANTS=" direct floor txlb txlb-b haproxy nginx "
    STEADY_CONNS=${STEADY_CONNS:-10000} STEADY_PERIOD=${STEADY_PERIOD:-1} STEADY_SECS=${STEADY_SECS:-10}
fi
# steady: STEADY_CONNS connections held open, each sending one small request every
# STEADY_PERIOD seconds (spread evenly: STEADY_CONNS / STEADY_PERIOD requests a second in all),
# after a warm-up round; STEADY_SECS measured
# TLS passthrough: new connections, each sending a ClientHello whose SNI alternates between
# these two names, routed to one service each; txlb also with 1,000 routes (998 decoys first)
TLS_CONNS=50 TLS_NAMES=api.example.com,www.example.org TLS_ROUTES_MANY=1000
ALL_VARIANTS=(direct floor txlb haproxy haproxy-splice nginx pen)
OUT=${OUT:-$BENCH_DIR/results/latest.json}

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
have() { local p; p=$(command -v "$1" 2>/dev/null) && [ -f "$p" ] && [ -x "$p" ]; }
# add sbin dirs: haproxy and nginx live there and a non-root PATH may lack them
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

# CPU pinning: the proxy on CPU 0, everything else on CPU 1.
if [ "$(nproc 2>/dev/null || echo 1)" -ge 2 ]; then PROXY_CPU=0 LOAD_CPU=1
else PROXY_CPU=0 LOAD_CPU=0; log "only one CPU: proxy and load share CPU 0 (numbers not meaningful)"; fi
have taskset || die "taskset (util-linux) is required"

# ------------------------------------------------------------------ processes and cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/txlb-bench.XXXXXX")
PIDS=()
stop_pid() {  # stop one process we started (and its direct children), politely then firmly
    local pid=$1 kids i
    kill -0 "$pid" 2>/dev/null || return 0
    kids=$(pgrep -P "$pid" 2>/dev/null || true)
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    # shellcheck disable=SC2086
    kill -KILL "$pid" $kids 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$pid"; done
    if [ "$KEEP" = 1 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# start_bg LOGFILE CMD...: start CMD in the background, remember it; its pid is in $BG_PID
start_bg() {
    local logf=$1; shift
    "$@" >"$logf" 2>&1 &
    BG_PID=$!
    PIDS+=("$BG_PID")
}
forget_pid() {
    local keep=() p
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

# ------------------------------------------------------------------ tools
stream_module() {  # prints the load_module line nginx needs for stream, "" if built in; fails if absent
    local v dir
    v=$(nginx -V 2>&1) || return 1
    if grep -q -- '--with-stream\( \|$\)' <<<"$v"; then echo ""; return 0; fi
    dir=$(sed -n 's/.*--modules-path=\([^ ]*\).*/\1/p' <<<"$v"); dir=${dir:-/usr/lib/nginx/modules}
    for f in "$dir/ngx_stream_module.so" /usr/lib/nginx/modules/ngx_stream_module.so; do
        [ -e "$f" ] && { echo "load_module $f;"; return 0; }
    done
    return 1
}

install_tools() {
    local missing=() p sudo=()
    have haproxy || missing+=(haproxy)
    have nginx || missing+=(nginx)
    { have nginx && stream_module >/dev/null; } || missing+=(libnginx-mod-stream)
    have wrk || missing+=(wrk)
    have pen || missing+=(pen)
    case ",$ONLY," in *,floor-uring,*) [ -e /usr/include/liburing.h ] || missing+=(liburing-dev) ;; esac
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ -n "${BENCH_NO_INSTALL:-}" ]; then log "missing ${missing[*]}; BENCH_NO_INSTALL set, not installing"; return 0; fi
    have apt-get || { log "missing ${missing[*]} and no apt-get to install them"; return 0; }
    if [ "$(id -u)" != 0 ]; then
        if have sudo && sudo -n true 2>/dev/null; then sudo=(sudo -n); else
            log "missing ${missing[*]}: not root and no password-less sudo, not installing"; return 0; fi
    fi
    log "installing from Debian: ${missing[*]}"
    local apt=("${sudo[@]+"${sudo[@]}"}" env DEBIAN_FRONTEND=noninteractive apt-get -y -qq -o Dpkg::Use-Pty=0)
    if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$WORK/apt.log" 2>&1; then
        log "apt-get install failed; running apt-get update once"
        "${apt[@]}" update >>"$WORK/apt.log" 2>&1 || log "apt-get update failed (see below)"
        if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$WORK/apt.log" 2>&1; then
            for p in "${missing[@]}"; do  # one by one, so one unavailable package spares the others
                "${apt[@]}" install --no-install-recommends "$p" >>"$WORK/apt.log" 2>&1 || log "could not install $p"
            done
        fi
    fi
    tail -n 3 "$WORK/apt.log" >&2 || true
}

install_tools
# A network namespace of its own (root only): /proc/net/snmp's TCP counters are per namespace,
# so the segments counted per connection are this run's alone, not those of other programs'
# loopback traffic. The script runs again inside it, with everything installed.
# (Not where namespaces are not allowed, as in some containers: then the machine's counters.)
if [ -z "${BENCH_NETNS:-}" ] && [ "$(id -u)" = 0 ] && have unshare && have ip && unshare --net true 2>/dev/null; then
    rm -rf "$WORK"; trap - EXIT
    exec unshare --net -- env BENCH_NETNS=1 BENCH_NO_INSTALL=1 \
        bash -c 'ip link set lo up && exec "$@"' bash "${BASH_SOURCE[0]}" "${ARGS[@]+"${ARGS[@]}"}"
fi
have python3 || die "python3 is required (for the report)"
have cc || die "a C compiler (cc) is required for bench/tcpbench.c"
TB=$WORK/tcpbench
cc -O2 -pthread -o "$TB" "$BENCH_DIR/tcpbench.c" || die "compiling bench/tcpbench.c failed"
REPORT=(python3 "$BENCH_DIR/report.py")

# which scenarios
WANT_IDLE=0 WANT_HTTP=0 WANT_BULK=0 WANT_TLS=0 WANT_STEADY=0
IFS=, read -r -a _scen <<<"$SCENARIOS"
for s in "${_scen[@]}"; do
    case "$s" in
        idle) WANT_IDLE=1 ;; http) WANT_HTTP=1 ;; bulk) WANT_BULK=1 ;; tls) WANT_TLS=1 ;;
        steady) WANT_STEADY=1 ;;
        *) die "unknown scenario $s (known: idle,http,bulk,tls,steady)" ;;
    esac
done
WANT_CLASSIC=$(( WANT_IDLE || WANT_HTTP || WANT_BULK || WANT_STEADY ))

# which variants can run
NOTES=()
skip_or_die() {  # in quick mode a missing tool skips the variant; a full run fails
    if [ "$QUICK" = 1 ]; then log "SKIPPING $1: $2"; NOTES+=("$1 skipped: $2"); return 0; fi
    die "$1: $2 (the quick mode would skip it)"
}
if [ -z "${BENCH_NETNS:-}" ]; then
    NOTES+=("segments are counted over the whole machine's TCP (no network namespace of its own: not root, or not allowed), other programs' loopback traffic included")
fi
NGX_STREAM=""; HAVE_NGX=0; HAVE_WRK=0; HAVE_HAPROXY=0; HAVE_PEN=0
if have nginx; then HAVE_NGX=1; fi
if have wrk; then HAVE_WRK=1; fi
if have haproxy; then HAVE_HAPROXY=1; fi
if have pen; then HAVE_PEN=1; fi
WANT=()
if [ -n "$ONLY" ]; then IFS=, read -r -a WANT <<<"$ONLY"; else WANT=("${ALL_VARIANTS[@]}"); fi
VARIANTS=()
for v in "${WANT[@]}"; do
    case "$v" in
        direct|floor|txlb|txlb-w2|txlb-cf) VARIANTS+=("$v") ;;
        txlb-b)
            [ -x "${TXLB_BIN_B:-}" ] || die "txlb-b needs TXLB_BIN_B, another txlb binary (A/B)"
            case "$TXLB_BIN_B" in /*) ;; *) TXLB_BIN_B=$ROOT/$TXLB_BIN_B ;; esac
            VARIANTS+=("$v") ;;
        floor-uring)
            if cc -O2 -o "$WORK/urelay" "$BENCH_DIR/urelay.c" -luring 2>"$WORK/urelay-cc.log"; then VARIANTS+=("$v")
            else cat "$WORK/urelay-cc.log" >&2; skip_or_die floor-uring "bench/urelay.c does not build (liburing-dev missing?)"; fi ;;
        haproxy|haproxy-splice)
            if [ "$HAVE_HAPROXY" = 1 ]; then VARIANTS+=("$v"); else skip_or_die "$v" "haproxy is not installed"; fi ;;
        nginx)
            if [ "$HAVE_NGX" = 1 ] && NGX_STREAM=$(stream_module); then VARIANTS+=("$v")
            else skip_or_die nginx "nginx with the stream module (libnginx-mod-stream) is not installed"; fi ;;
        pen)
            if [ "$HAVE_PEN" = 1 ]; then VARIANTS+=("$v"); else skip_or_die pen "pen is not installed"; fi ;;
        *) die "unknown variant $v (known: ${ALL_VARIANTS[*]} txlb-w2 txlb-b txlb-cf floor-uring)" ;;
    esac
done
if [ "$HAVE_WRK" = 0 ] && [ "$WANT_HTTP" = 1 ]; then
    skip_or_die "the new-connection and keep-alive scenarios" "wrk is not installed"
fi
if [ "$HAVE_NGX" = 0 ]; then
    log "nginx is missing: the HTTP backends are bench/tcpbench 'hold' servers instead"
    NOTES+=("HTTP backends: tcpbench hold servers (nginx missing)")
fi

# ------------------------------------------------------------------ txlb binary
has_variant() { local v; for v in "${VARIANTS[@]}"; do [ "$v" = "$1" ] && return 0; done; return 1; }
if has_variant txlb || has_variant txlb-w2 || has_variant txlb-b || has_variant txlb-cf; then
    TARGET_DIR=${CARGO_TARGET_DIR:-target}
    case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
    if [ -n "${TXLB_BIN:-}" ]; then
        case "$TXLB_BIN" in /*) ;; *) TXLB_BIN=$ROOT/$TXLB_BIN ;; esac
        [ -x "$TXLB_BIN" ] || die "TXLB_BIN=$TXLB_BIN is not an executable"
    else
        TXLB_BIN=$TARGET_DIR/release/txlb
        if [ "$BUILD" = 1 ] || [ ! -x "$TXLB_BIN" ]; then
            log "building txlb: cargo build --release (target dir $TARGET_DIR)"
            (cd "$ROOT" && cargo build --release) >&2 || die "cargo build --release failed"
        fi
        [ -x "$TXLB_BIN" ] || die "no txlb binary at $TXLB_BIN after the build"
    fi
    log "txlb binary: $TXLB_BIN"
fi

# ------------------------------------------------------------------ limits and ports
# the proxy holds two descriptors per connection: 10,000 connections need more than the usual
# hard limit of 20,000 (raising it takes root with CAP_SYS_RESOURCE; where that fails, the
# idle and steady scenarios use fewer connections and say so)
ulimit -Hn 1048576 2>/dev/null || ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
# the proxy holds two descriptors per proxied connection
MAX_IDLE=$(( (NOFILE - 200) / 2 ))
if [ "$WANT_IDLE" = 1 ] && [ "$IDLE_CONNS" -gt "$MAX_IDLE" ]; then
    NOTES+=("idle: $MAX_IDLE connections, not $IDLE_CONNS: the open-files hard limit is $NOFILE and the proxy needs 2 per connection")
    log "open-files hard limit $NOFILE: idle test uses $MAX_IDLE connections instead of $IDLE_CONNS"
    IDLE_CONNS=$MAX_IDLE
fi
if [ "$WANT_STEADY" = 1 ] && [ "$STEADY_CONNS" -gt "$MAX_IDLE" ]; then
    NOTES+=("steady: $MAX_IDLE connections, not $STEADY_CONNS: the open-files hard limit is $NOFILE and the proxy needs 2 per connection")
    log "open-files hard limit $NOFILE: steady test uses $MAX_IDLE connections instead of $STEADY_CONNS"
    STEADY_CONNS=$MAX_IDLE
fi
STEADY_RATE=$(awk -v n="$STEADY_CONNS" -v p="$STEADY_PERIOD" 'BEGIN { printf "%.1f", n / p }')
MAXCONN=$(( NOFILE / 2 > 50000 ? 50000 : NOFILE / 2 ))   # haproxy maxconn, nginx worker_connections/2

read -r HB1 HB2 ZB1 ZB2 IB1 IB2 PH PZ PI TB1 TB2 PT PT1K PTP PS < <("$TB" freeport 15) || die "no free ports"
CLK=$(getconf CLK_TCK)

# ------------------------------------------------------------------ backends (all on the load CPU)
# HTTP: two nginx servers returning a small static body; bulk: two zero writers;
# idle: two "hold" servers that keep every connection open and answer tiny requests.
# TLS: two tcpbench "tlsback" servers (backend 1 for api.example.com, 2 for *.example.org).
start_backends() {
    local i port
    if [ "$WANT_TLS" = 1 ]; then
        start_bg "$WORK/tlsback1.log" taskset -c "$LOAD_CPU" "$TB" tlsback "$TB1" 1
        start_bg "$WORK/tlsback2.log" taskset -c "$LOAD_CPU" "$TB" tlsback "$TB2" 2
        for port in "$TB1" "$TB2"; do "$TB" waitlisten "$port" 10 || die "TLS backend on $port did not start"; done
    fi
    LOAD_PIDS=("${PIDS[@]+"${PIDS[@]}"}")
    [ "$WANT_CLASSIC" = 1 ] || return 0
    mkdir -p "$WORK/ngx-tmp"
    for i in 1 2; do
        port=$([ $i = 1 ] && echo "$HB1" || echo "$HB2")
        if [ "$HAVE_NGX" = 1 ]; then
            cat >"$WORK/backend$i.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
worker_rlimit_nofile $NOFILE;
pid $WORK/backend$i.pid;
error_log $WORK/backend$i.err error;
events { worker_connections $NOFILE; }
http {
    access_log off;
    client_body_temp_path $WORK/ngx-tmp/body;
    proxy_temp_path $WORK/ngx-tmp/proxy;
    fastcgi_temp_path $WORK/ngx-tmp/fastcgi;
    uwsgi_temp_path $WORK/ngx-tmp/uwsgi;
    scgi_temp_path $WORK/ngx-tmp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / { default_type text/plain; return 200 "hello from backend $i\n"; }
    }
}
EOF
            start_bg "$WORK/backend$i.log" taskset -c "$LOAD_CPU" nginx -e "$WORK/backend$i.err" -p "$WORK" -c "$WORK/backend$i.conf"
        else
            start_bg "$WORK/backend$i.log" taskset -c "$LOAD_CPU" "$TB" hold "$port"
        fi
        "$TB" waitlisten "$port" 10 || { cat "$WORK/backend$i.log" "$WORK/backend$i.err" >&2 2>/dev/null; die "HTTP backend $i did not start"; }
    done
    for port in "$ZB1" "$ZB2"; do start_bg "$WORK/zero-$port.log" taskset -c "$LOAD_CPU" "$TB" zero "$port"; done
    for port in "$IB1" "$IB2"; do start_bg "$WORK/hold-$port.log" taskset -c "$LOAD_CPU" "$TB" hold "$port"; done
    for port in "$ZB1" "$ZB2" "$IB1" "$IB2"; do "$TB" waitlisten "$port" 10 || die "backend on $port did not start"; done
    LOAD_PIDS=("${PIDS[@]}")
}

# ------------------------------------------------------------------ proxies (on the proxy CPU)
# Each proxy has three listeners, one per backend pair, round robin, no logging:
#   PH -> HTTP backends, PZ -> zero writers, PI -> hold servers.
listener_ports() {  # listener_ports http|bulk|idle: sets LPORT and its backends B1, B2
    case $1 in
        http) LPORT=$PH B1=$HB1 B2=$HB2 ;;
        bulk) LPORT=$PZ B1=$ZB1 B2=$ZB2 ;;
        idle) LPORT=$PI B1=$IB1 B2=$IB2 ;;
    esac
}
write_txlb_conf() {  # write_txlb_conf [cf]: cf sets clientFirst on the HTTP service (its clients speak first)
    local f=$WORK/txlb${1:+-$1}.xml
    {
        echo "<config>"
        local name attrs
        for name in http bulk idle; do
            listener_ports "$name"
            attrs=""
            [ "${1:-}" = cf ] && [ "$name" = http ] && attrs=' clientFirst="true"'
            cat <<EOF
  <service name="$name"$attrs>
    <listen ip="127.0.0.1:$LPORT"/>
    <group name="g" scheduler="roundr" enable="true">
      <host name="b1" ip="127.0.0.1:$B1"/>
      <host name="b2" ip="127.0.0.1:$B2"/>
    </group>
  </service>
EOF
        done
        echo '  <manager><hostCheck interval="10" enable="true"/></manager>'
        echo "</config>"
    } >"$f"
    echo "$f"
}

write_haproxy_conf() {  # $1: "splice" or ""
    local f=$WORK/haproxy-${1:-plain}.cfg
    cat >"$f" <<EOF
global
    nbthread 1
    maxconn $MAXCONN
    # the open-files hard limit may be below what maxconn asks for (splice pipes):
    # run anyway, the idle test stays within the limit
    no strict-limits
    # no "log" line: nothing is logged

defaults
    mode tcp
    balance roundrobin
    maxconn $MAXCONN
    timeout connect 5s
    timeout client 1h
    timeout server 1h
$([ "$1" = splice ] && echo "    option splice-auto")

frontend http
    bind 127.0.0.1:$PH
    default_backend http
backend http
    server b1 127.0.0.1:$HB1
    server b2 127.0.0.1:$HB2

frontend bulk
    bind 127.0.0.1:$PZ
    default_backend bulk
backend bulk
    server b1 127.0.0.1:$ZB1
    server b2 127.0.0.1:$ZB2

frontend idle
    bind 127.0.0.1:$PI
    default_backend idle
backend idle
    server b1 127.0.0.1:$IB1
    server b2 127.0.0.1:$IB2
EOF
    echo "$f"
}

write_nginx_conf() {
    local f=$WORK/nginx-proxy.conf
    cat >"$f" <<EOF
$NGX_STREAM
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $WORK/nginx-proxy.pid;
error_log $WORK/nginx-proxy.err error;
events { worker_connections $NOFILE; }
stream {
    access_log off;
    proxy_connect_timeout 5s;
    proxy_timeout 1h;
    upstream http { server 127.0.0.1:$HB1; server 127.0.0.1:$HB2; }
    upstream bulk { server 127.0.0.1:$ZB1; server 127.0.0.1:$ZB2; }
    upstream idle { server 127.0.0.1:$IB1; server 127.0.0.1:$IB2; }
    server { listen 127.0.0.1:$PH backlog=4096; proxy_pass http; }
    server { listen 127.0.0.1:$PZ backlog=4096; proxy_pass bulk; }
    server { listen 127.0.0.1:$PI backlog=4096; proxy_pass idle; }
}
EOF
    echo "$f"
}

PROXY_PIDS=()    # the processes we start and stop
LOAD_PIDS=()     # the backends (their CPU counts in every variant's "all CPU" figure)
# the process whose CPU and memory each listener's scenarios read (http, bulk, idle):
# the proxy, nginx's worker, or pen's process for that listener
declare -A MEASURE=()
start_proxy() {
    local v=$1 logf=$WORK/$1.log conf port i pid name
    PROXY_PIDS=()
    case "$v" in
        txlb|txlb-w2|txlb-b|txlb-cf)
            conf=$(write_txlb_conf "$([ "$v" = txlb-cf ] && echo cf)")
            start_bg "$logf" env TXLB_LOG=warn taskset -c "$PROXY_CPU" \
                "$([ "$v" = txlb-b ] && echo "$TXLB_BIN_B" || echo "$TXLB_BIN")" run --config "$conf" \
                --workers "$([ "$v" = txlb-w2 ] && echo 2 || echo 1)" --grace 1 ;;
        haproxy|haproxy-splice)
            conf=$(write_haproxy_conf "$([ "$v" = haproxy-splice ] && echo splice)")
            start_bg "$logf" taskset -c "$PROXY_CPU" haproxy -db -f "$conf" ;;
        floor)
            start_bg "$logf" taskset -c "$PROXY_CPU" "$TB" relay \
                "127.0.0.1:$PH=127.0.0.1:$HB1,127.0.0.1:$HB2" "127.0.0.1:$PZ=127.0.0.1:$ZB1,127.0.0.1:$ZB2" \
                "127.0.0.1:$PI=127.0.0.1:$IB1,127.0.0.1:$IB2" ;;
        floor-uring)
            start_bg "$logf" taskset -c "$PROXY_CPU" "$WORK/urelay" \
                "127.0.0.1:$PH=127.0.0.1:$HB1,127.0.0.1:$HB2" "127.0.0.1:$PZ=127.0.0.1:$ZB1,127.0.0.1:$ZB2" \
                "127.0.0.1:$PI=127.0.0.1:$IB1,127.0.0.1:$IB2" ;;
        nginx)
            conf=$(write_nginx_conf)
            start_bg "$logf" taskset -c "$PROXY_CPU" nginx -e "$WORK/nginx-proxy.err" -p "$WORK" -c "$conf" ;;
        pen)
            # one process per listener (pen serves one port); round robin without client
            # tracking, TCP_NODELAY like the others, accepting up to 64 at a time
            for name in http bulk idle; do
                listener_ports "$name"
                start_bg "$WORK/pen-$name.log" taskset -c "$PROXY_CPU" pen -f -r -m 64 -x "$MAXCONN" -c "$MAXCONN" \
                    -O tcp_nodelay "127.0.0.1:$LPORT" "127.0.0.1:$B1" "127.0.0.1:$B2"
                PROXY_PIDS+=("$BG_PID"); MEASURE[$name]=$BG_PID
            done ;;
    esac
    if [ "$v" != pen ]; then
        PROXY_PIDS=("$BG_PID")
        MEASURE=([http]=$BG_PID [bulk]=$BG_PID [idle]=$BG_PID)
    fi
    for port in "$PH" "$PZ" "$PI"; do
        local up=1
        "$TB" waitlisten "$port" 15 || up=0
        for pid in "${PROXY_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || up=0; done
        if [ "$up" = 0 ]; then
            log "$v did not start; its output:"
            cat "$logf" "$WORK"/pen-*.log >&2 2>/dev/null; [ -e "$WORK/nginx-proxy.err" ] && cat "$WORK/nginx-proxy.err" >&2
            return 1
        fi
    done
    if [ "$v" = nginx ]; then
        pid=""
        for i in $(seq 1 100); do
            pid=$(pgrep -P "${PROXY_PIDS[0]}" | head -n 1 || true)
            [ -n "$pid" ] && break; sleep 0.05
        done
        [ -n "$pid" ] || { log "nginx: no worker process"; return 1; }
        MEASURE=([http]=$pid [bulk]=$pid [idle]=$pid)
    fi
    sleep 0.3
}
stop_proxy() {
    local pid
    for pid in "${PROXY_PIDS[@]+"${PROXY_PIDS[@]}"}"; do stop_pid "$pid"; forget_pid "$pid"; done
    PROXY_PIDS=() MEASURE=()
}

# ------------------------------------------------------------------ measurements
cpu_ticks() {  # utime+stime of a process (all its threads), in clock ticks
    local s
    [ -n "$1" ] || { echo 0; return; }
    s=$(<"/proc/$1/stat") || { echo 0; return; }
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    echo $(( ${12} + ${13} ))
}
# TCP segments sent by every socket of the namespace (each loopback segment is sent once)
tcp_out_segs() { awk '/^Tcp:/ { if (n++) print $12 }' /proc/net/snmp; }
# The CPU of everything a scenario runs besides the proxy: the backends and the kernel's softirq
# threads (ticks), and the client (waited_ms). With the proxy's own CPU this is the work of both
# cores on the scenario, whatever the proxy moves to the other one (the peers' wake-ups, softirq),
# and not the work of other programs on the machine, which /proc/stat would count.
load_ticks() {
    local t=0 p
    for p in "${LOAD_PIDS[@]+"${LOAD_PIDS[@]}"}" $KSOFTIRQD; do t=$((t + $(cpu_ticks "$p"))); done
    echo "$t"
}
KSOFTIRQD=$(pgrep '^ksoftirqd/' | tr '\n' ' ' || true)
waited_ms() {  # waited_ms VAR: CPU ms of every child this shell has waited for (bash's times), into VAR
    times >"$WORK/times.txt"
    printf -v "$1" '%s' "$(awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60000 + a[2] * 1000 }
        printf "%d", t }' "$WORK/times.txt")"
}
RAW=$WORK/raw.jsonl
: >"$RAW"
record() { "${REPORT[@]}" record "$RAW" "$@"; }

run_http() {  # run_http VARIANT REP newconn|keepalive
    local v=$1 rep=$2 s=$3 url c0 c1 hdr=()
    if [ "$v" = direct ]; then url=http://127.0.0.1:$HB1/; else url=http://127.0.0.1:$PH/; fi
    [ "$s" = newconn ] && hdr=(-H "Connection: close")
    local pid=${MEASURE[http]:-} g0 g1 l0 l1 w0 w1
    c0=$(cpu_ticks "$pid") g0=$(tcp_out_segs) l0=$(load_ticks); waited_ms w0
    timeout -k 5 $((HTTP_SECS + 20)) taskset -c "$LOAD_CPU" wrk -t1 -c"$HTTP_CONNS" -d"${HTTP_SECS}s" --timeout 2s --latency \
        "${hdr[@]+"${hdr[@]}"}" "$url" >"$WORK/wrk.out" 2>&1 || true
    waited_ms w1; c1=$(cpu_ticks "$pid") g1=$(tcp_out_segs) l1=$(load_ticks)
    record --variant "$v" --rep "$rep" --scenario "$s" --wrk "$WORK/wrk.out" \
        "segs=$((g1 - g0))" "load_ticks=$((l1 - l0))" "client_ms=$((w1 - w0))" "clk_tck=$CLK" \
        $([ -n "$pid" ] && echo "cpu_ticks=$((c1 - c0))")
}

run_bulk() {  # run_bulk VARIANT REP STREAMS BYTES
    local v=$1 rep=$2 n=$3 bytes=$4 addrs c0 c1 t0 t1 out
    if [ "$v" = direct ]; then addrs=127.0.0.1:$ZB1,127.0.0.1:$ZB2; else addrs=127.0.0.1:$PZ; fi
    local pid=${MEASURE[bulk]:-}
    c0=$(cpu_ticks "$pid"); t0=$EPOCHREALTIME
    out=$(timeout -k 5 $((BULK_SECS + 10)) taskset -c "$LOAD_CPU" "$TB" bulk "$addrs" "$n" "$bytes" "$BULK_SECS" 2>&1) || true
    t1=$EPOCHREALTIME; c1=$(cpu_ticks "$pid")
    record --variant "$v" --rep "$rep" --scenario "bulk$n" --json "$out" \
        "wall_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')" \
        $([ -n "$pid" ] && echo "cpu_ticks=$((c1 - c0)) clk_tck=$CLK")
}

run_idle() {  # run_idle VARIANT REP (needs a proxy: memory is the proxy's)
    local v=$1 rep=$2 out
    out=$(timeout -k 5 $((2 * IDLE_SECS + 30)) taskset -c "$LOAD_CPU" "$TB" idle "127.0.0.1:$PI" "$IDLE_CONNS" "${MEASURE[idle]}" "$IDLE_SECS" "$IDLE_REST" 2>&1) || true
    record --variant "$v" --rep "$rep" --scenario idle --json "$out"
}

run_steady() {  # run_steady VARIANT REP: many connections, each asking at a steady rate
    local v=$1 rep=$2 addrs out pid=${MEASURE[idle]:-0} loadpids secs
    if [ "$v" = direct ]; then addrs=127.0.0.1:$IB1,127.0.0.1:$IB2; else addrs=127.0.0.1:$PI; fi
    # the backends and softirq threads: their CPU over the measured window, as load_ticks elsewhere
    loadpids=$(echo "${LOAD_PIDS[*]+"${LOAD_PIDS[*]}"} $KSOFTIRQD" | tr -s ' ' ',' | sed 's/^,//; s/,$//')
    secs=$(awk -v s="$STEADY_SECS" -v p="$STEADY_PERIOD" 'BEGIN { printf "%d", s + p + 100 }')
    out=$(timeout -k 5 "$secs" taskset -c "$LOAD_CPU" "$TB" steady "$addrs" "$STEADY_CONNS" "$STEADY_RATE" \
        "$STEADY_SECS" "$pid" "${loadpids:--}" 2>&1) || true
    record --variant "$v" --rep "$rep" --scenario steady --json "$out" "clk_tck=$CLK"
}

run_session() {  # one variant, all scenarios, on a freshly started proxy
    local v=$1 rep=$2
    if [ "$v" != direct ]; then
        if ! start_proxy "$v"; then
            stop_proxy
            case "$v" in txlb|txlb-w2|txlb-b|txlb-cf) die "txlb failed to start (it must run, also in --quick mode)" ;; esac
            [ "$QUICK" = 1 ] || die "$v failed to start"
            log "SKIPPING $v for this repeat: it failed to start"; NOTES+=("$v failed to start in repeat $rep")
            return 0
        fi
        # idle first: memory growth is measured on a fresh process
        if [ "$WANT_IDLE" = 1 ]; then run_idle "$v" "$rep"; fi
    fi
    if [ "$WANT_STEADY" = 1 ]; then run_steady "$v" "$rep"; fi
    if [ "$HAVE_WRK" = 1 ] && [ "$WANT_HTTP" = 1 ]; then
        run_http "$v" "$rep" newconn
        run_http "$v" "$rep" keepalive
    fi
    if [ "$WANT_BULK" = 1 ]; then
        run_bulk "$v" "$rep" 1 "$BULK1_BYTES"
        run_bulk "$v" "$rep" 8 "$BULK8_BYTES"
    fi
    stop_proxy
}

# ------------------------------------------------------------------ TLS passthrough
# Each proxy gets two listeners: PT routes by SNI (api.example.com -> backend 1,
# *.example.org -> backend 2), PTP has no routes (round robin over both, the plain-TCP
# cost of the same connections). txlb has a third, PT1K: the same two routes after 998
# decoys. The load is tcpbench tls: TLS_CONNS at a time, each a ClientHello and the
# backend's short answer (checked: right backend, hello received byte for byte).
write_txlb_tls_conf() {
    local f=$WORK/txlb-tls.xml i
    {
        echo "<config>"
        echo "  <service name=\"edge\">"
        echo "    <listen ip=\"127.0.0.1:$PT\">"
        echo "      <route sni=\"api.example.com\" service=\"api\"/>"
        echo "      <route sni=\"*.example.org\" service=\"org\"/>"
        echo "    </listen>"
        echo "  </service>"
        echo "  <service name=\"edge1k\">"
        echo "    <listen ip=\"127.0.0.1:$PT1K\">"
        # decoys, exact and wildcard, under the same domains as the real names: none matches them
        for i in $(seq 1 $((TLS_ROUTES_MANY - 2))); do
            case $((i % 4)) in
                0) echo "      <route sni=\"api$i.example.com\" service=\"api\"/>" ;;
                1) echo "      <route sni=\"*.d$i.example.org\" service=\"org\"/>" ;;
                2) echo "      <route sni=\"www$i.example.org\" service=\"org\"/>" ;;
                3) echo "      <route sni=\"*.d$i.example.com\" service=\"api\"/>" ;;
            esac
        done
        echo "      <route sni=\"api.example.com\" service=\"api\"/>"
        echo "      <route sni=\"*.example.org\" service=\"org\"/>"
        echo "    </listen>"
        echo "  </service>"
        cat <<XML
  <service name="plain">
    <listen ip="127.0.0.1:$PTP"/>
    <group name="g" scheduler="roundr" enable="true">
      <host name="a" ip="127.0.0.1:$TB1"/>
      <host name="b" ip="127.0.0.1:$TB2"/>
    </group>
  </service>
  <service name="api">
    <group name="g" enable="true"><host name="a" ip="127.0.0.1:$TB1"/></group>
  </service>
  <service name="org">
    <group name="g" enable="true"><host name="b" ip="127.0.0.1:$TB2"/></group>
  </service>
  <manager><hostCheck interval="10" enable="true"/></manager>
</config>
XML
    } >"$f"
    echo "$f"
}

write_haproxy_tls_conf() {
    local f=$WORK/haproxy-tls.cfg
    cat >"$f" <<EOF2
global
    nbthread 1
    maxconn $MAXCONN
    no strict-limits

defaults
    mode tcp
    maxconn $MAXCONN
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend tls
    bind 127.0.0.1:$PT
    tcp-request inspect-delay 5s
    tcp-request content accept if { req.ssl_hello_type 1 }
    use_backend tls_api if { req.ssl_sni -i api.example.com }
    use_backend tls_org if { req.ssl_sni -i -m end .example.org }
    # no default_backend: a client no route matched is closed

frontend tlsplain
    bind 127.0.0.1:$PTP
    default_backend tls_rr

backend tls_api
    server a 127.0.0.1:$TB1
backend tls_org
    server b 127.0.0.1:$TB2
backend tls_rr
    balance roundrobin
    server a 127.0.0.1:$TB1
    server b 127.0.0.1:$TB2
EOF2
    echo "$f"
}

write_nginx_tls_conf() {
    local f=$WORK/nginx-tls.conf
    cat >"$f" <<EOF2
$NGX_STREAM
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $WORK/nginx-tls.pid;
error_log $WORK/nginx-tls.err error;
events { worker_connections $NOFILE; }
stream {
    access_log off;
    proxy_connect_timeout 5s;
    proxy_timeout 1h;
    map \$ssl_preread_server_name \$tls_upstream {
        hostnames;
        api.example.com tls_api;
        *.example.org   tls_org;
        default         tls_none;
    }
    upstream tls_api { server 127.0.0.1:$TB1; }
    upstream tls_org { server 127.0.0.1:$TB2; }
    # no route matched: nothing listens on port 1, so the client is closed
    upstream tls_none { server 127.0.0.1:1; }
    upstream tls_rr { server 127.0.0.1:$TB1; server 127.0.0.1:$TB2; }
    server { listen 127.0.0.1:$PT backlog=4096; ssl_preread on; proxy_pass \$tls_upstream; }
    server { listen 127.0.0.1:$PTP backlog=4096; proxy_pass tls_rr; }
}
EOF2
    echo "$f"
}

TLS_TXLB=1   # 0 once txlb has refused the routed configuration (quick mode only)
start_tls_proxy() {  # sets PROXY_PIDS and TLS_PID (the process whose CPU is read)
    local v=$1 logf=$WORK/$1-tls.log conf port pid i
    PROXY_PIDS=()
    case "$v" in
        txlb|txlb-b)
            local bin=$TXLB_BIN
            [ "$v" = txlb-b ] && bin=$TXLB_BIN_B
            conf=$(write_txlb_tls_conf)
            if ! "$bin" check --config "$conf" >"$WORK/txlb-tls-check.log" 2>&1; then
                cat "$WORK/txlb-tls-check.log" >&2
                return 2
            fi
            start_bg "$logf" env TXLB_LOG=warn taskset -c "$PROXY_CPU" "$bin" run --config "$conf" \
                --workers 1 --grace 1 ;;
        haproxy)
            conf=$(write_haproxy_tls_conf)
            start_bg "$logf" taskset -c "$PROXY_CPU" haproxy -db -f "$conf" ;;
        nginx)
            conf=$(write_nginx_tls_conf)
            start_bg "$logf" taskset -c "$PROXY_CPU" nginx -e "$WORK/nginx-tls.err" -p "$WORK" -c "$conf" ;;
        floor)
            start_bg "$logf" taskset -c "$PROXY_CPU" "$TB" relay "127.0.0.1:$PTP=127.0.0.1:$TB1,127.0.0.1:$TB2" ;;
    esac
    PROXY_PIDS=("$BG_PID") TLS_PID=$BG_PID
    for port in $(tls_ports "$v"); do
        if ! "$TB" waitlisten "$port" 15 || ! kill -0 "$BG_PID" 2>/dev/null; then
            log "$v did not start; its output:"
            cat "$logf" >&2; [ -e "$WORK/nginx-tls.err" ] && cat "$WORK/nginx-tls.err" >&2
            return 1
        fi
    done
    if [ "$v" = nginx ]; then
        pid=""
        for i in $(seq 1 100); do
            pid=$(pgrep -P "$BG_PID" | head -n 1 || true)
            [ -n "$pid" ] && break; sleep 0.05
        done
        [ -n "$pid" ] || { log "nginx: no worker process"; return 1; }
        TLS_PID=$pid
    fi
    sleep 0.1
}
tls_ports() {  # the listeners a variant has in this scenario
    case "$1" in
        txlb) echo "$PT $PTP $PT1K" ;;
        haproxy|nginx|txlb-b) echo "$PT $PTP" ;;
        floor) echo "$PTP" ;;
    esac
}
tls_port_of() {  # tls_port_of SCENARIO: the listener each scenario loads
    case "$1" in tls) echo "$PT" ;; tlsplain) echo "$PTP" ;; tls1k) echo "$PT1K" ;; esac
}

run_tls() {  # run_tls VARIANT REP SCENARIO (tls, tlsplain or tls1k)
    local v=$1 rep=$2 s=$3 addrs mode=route c0 c1 out
    if [ "$v" = direct ]; then addrs=127.0.0.1:$TB1,127.0.0.1:$TB2; else addrs=127.0.0.1:$(tls_port_of "$s"); fi
    [ "$s" = tlsplain ] && mode=any   # round robin: either backend, but the bytes are still checked
    local pid=${TLS_PID:-} g0 g1 l0 l1 w0 w1
    c0=$(cpu_ticks "$pid") g0=$(tcp_out_segs) l0=$(load_ticks); waited_ms w0
    out=$(timeout -k 5 "$(awk -v s="$TLS_SECS" 'BEGIN { printf "%d", s + 15 }')" taskset -c "$LOAD_CPU" \
        "$TB" tls "$addrs" "$TLS_CONNS" "$TLS_SECS" "$TLS_NAMES" "$mode" 2>&1) || true
    waited_ms w1; c1=$(cpu_ticks "$pid") g1=$(tcp_out_segs) l1=$(load_ticks)
    record --variant "$v" --rep "$rep" --scenario "$s" --json "$out" \
        "segs=$((g1 - g0))" "load_ticks=$((l1 - l0))" "client_ms=$((w1 - w0))" "clk_tck=$CLK" \
        $([ -n "$pid" ] && echo "cpu_ticks=$((c1 - c0))")
}

run_tls_session() {  # one variant, its TLS scenarios, on a freshly started proxy
    local v=$1 rep=$2 scen=() s port rc=0 k
    case "$v" in
        direct) scen=(tls) ;;
        floor) scen=(tlsplain) ;;
        txlb) scen=(tls tlsplain tls1k) ;;
        *) if [ "$QUICK" = 1 ]; then scen=(tls); else scen=(tls tlsplain); fi ;;
    esac
    TLS_PID=""
    if [ "$v" != direct ]; then
        [ "$v" = txlb ] && [ "$TLS_TXLB" = 0 ] && return 0
        start_tls_proxy "$v" || rc=$?
        if [ "$rc" != 0 ]; then
            stop_proxy
            if [ "$v" = txlb ] && [ "$rc" = 2 ]; then
                [ "$QUICK" = 1 ] || die "txlb refused the TLS routing configuration (above)"
                log "SKIPPING txlb's TLS scenario: this txlb refuses listener routes (above)"
                NOTES+=("tls: txlb skipped, its binary refuses listener routes"); TLS_TXLB=0
                return 0
            fi
            [ "$v" = txlb ] && die "txlb failed to start with the TLS configuration"
            [ "$QUICK" = 1 ] || die "$v failed to start (TLS configuration)"
            log "SKIPPING $v's TLS scenario for this repeat: it failed to start"
            NOTES+=("$v failed to start (tls) in repeat $rep")
            return 0
        fi
        # warm up every listener (first connections pay for the process's lazy setup)
        for port in $(tls_ports "$v"); do
            taskset -c "$LOAD_CPU" "$TB" tls "127.0.0.1:$port" "$TLS_CONNS" "$TLS_WARM" "$TLS_NAMES" any >/dev/null 2>&1 || true
        done
    fi
    # the order turns with each repeat, so none of them always comes first
    for k in $(seq 0 $((${#scen[@]} - 1))); do
        run_tls "$v" "$rep" "${scen[$(( (k + rep - 1) % ${#scen[@]} ))]}"
    done
    stop_proxy
}

# ------------------------------------------------------------------ run
# The canned ClientHello must be one a real TLS server takes: openssl s_server answers it
# with a ServerHello (checked once, when openssl is there).
check_hello() {
    local name pid ok=1
    if ! have openssl; then NOTES+=("tls: openssl missing, the ClientHello was not checked against a TLS server"); return 0; fi
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=api.example.com \
        -keyout "$WORK/hello-key.pem" -out "$WORK/hello-cert.pem" >"$WORK/openssl-req.log" 2>&1 || die "openssl req failed"
    start_bg "$WORK/s_server.log" openssl s_server -accept "127.0.0.1:$PS" -cert "$WORK/hello-cert.pem" \
        -key "$WORK/hello-key.pem" -alpn h2 -quiet
    pid=$BG_PID
    "$TB" waitlisten "$PS" 10 || die "openssl s_server did not start"
    IFS=, read -r -a _names <<<"$TLS_NAMES"
    for name in "${_names[@]}"; do "$TB" hellocheck "127.0.0.1:$PS" "$name" >>"$WORK/hello-check.log" 2>&1 || ok=0; done
    stop_pid "$pid"; forget_pid "$pid"
    [ "$ok" = 1 ] || { cat "$WORK/hello-check.log" >&2; die "openssl s_server did not take tcpbench's ClientHello"; }
    log "ClientHello checked: $(tr '\n' ';' <"$WORK/hello-check.log")"
}

START=$EPOCHSECONDS
log "$MODE run: variants ${VARIANTS[*]}; scenarios $SCENARIOS; $REPEATS repeat(s); work dir $WORK"
if [ "$WANT_TLS" = 1 ]; then check_hello; fi
start_backends
for rep in $(seq 1 "$REPEATS"); do
    for v in "${VARIANTS[@]}"; do   # interleaved: A B C ... A B C ...
        log "repeat $rep/$REPEATS: $v"
        if [ "$WANT_CLASSIC" = 1 ]; then run_session "$v" "$rep"; fi
        if [ "$WANT_TLS" = 1 ] && [[ "$TLS_VARIANTS" == *" $v "* ]]; then run_tls_session "$v" "$rep"; fi
    done
done
log "measurements done in $((EPOCHSECONDS - START)) s"

# ------------------------------------------------------------------ report
versions() {
    [ "$HAVE_HAPROXY" = 1 ] && printf 'haproxy: %s\n' "$(haproxy -v 2>&1 | head -n 1)"
    [ "$HAVE_NGX" = 1 ] && printf 'nginx: %s\n' "$(nginx -v 2>&1 | head -n 1)"
    [ "$HAVE_WRK" = 1 ] && printf 'wrk: %s\n' "$(wrk -v 2>&1 | head -n 1)"
    # pen has no version option: ask the package manager
    [ "$HAVE_PEN" = 1 ] && printf 'pen: %s\n' "$(dpkg-query -W -f '${Version}' pen 2>/dev/null || echo unknown)"
    has_variant txlb && printf 'txlb: %s (%s)\n' "$("$TXLB_BIN" --version 2>&1 | head -n 1)" "$TXLB_BIN"
    has_variant txlb-b && printf 'txlb-b: %s (%s)\n' "$("$TXLB_BIN_B" --version 2>&1 | head -n 1)" "$TXLB_BIN_B"
    printf 'git: %s\n' "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
    return 0
}
META=$WORK/meta.json
NOTES_TEXT=$(printf '%s\n' "${NOTES[@]+"${NOTES[@]}"}")
VERSIONS_TEXT=$(versions)
MODE="$MODE" REPEATS="$REPEATS" PROXY_CPU="$PROXY_CPU" LOAD_CPU="$LOAD_CPU" NOTES_TEXT="$NOTES_TEXT" \
VERSIONS_TEXT="$VERSIONS_TEXT" HTTP_SECS="$HTTP_SECS" HTTP_CONNS="$HTTP_CONNS" BULK1_BYTES="$BULK1_BYTES" \
BULK8_BYTES="$BULK8_BYTES" IDLE_CONNS="$IDLE_CONNS" ELAPSED=$((EPOCHSECONDS - START)) \
STEADY_CONNS="$STEADY_CONNS" STEADY_RATE="$STEADY_RATE" STEADY_SECS="$STEADY_SECS" STEADY_PERIOD="$STEADY_PERIOD" \
TLS_SECS="$TLS_SECS" TLS_CONNS="$TLS_CONNS" TLS_NAMES="$TLS_NAMES" TLS_ROUTES_MANY="$TLS_ROUTES_MANY" \
HELLO_BYTES="$("$TB" hello "${TLS_NAMES%%,*}" | wc -c)" \
python3 - "$META" <<'EOF'
import json, os, platform, sys, time
e = os.environ
meta = {
    "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    "machine": "%s, %d CPUs, %s" % (platform.node() or "?", os.cpu_count() or 0, platform.release()),
    "mode": e["MODE"], "repeats": int(e["REPEATS"]),
    "proxy_cpu": e["PROXY_CPU"], "load_cpu": e["LOAD_CPU"],
    "notes": [n for n in e["NOTES_TEXT"].splitlines() if n],
    "versions": [v for v in e["VERSIONS_TEXT"].splitlines() if v],
    "elapsed_s": int(e["ELAPSED"]),
    "settings": {"http_secs": int(e["HTTP_SECS"]), "http_conns": int(e["HTTP_CONNS"]),
                 "bulk1_bytes": int(e["BULK1_BYTES"]), "bulk8_bytes": int(e["BULK8_BYTES"]),
                 "idle_conns": int(e["IDLE_CONNS"]), "tls_secs": float(e["TLS_SECS"]),
                 "tls_conns": int(e["TLS_CONNS"]), "tls_names": e["TLS_NAMES"].split(","),
                 "tls_routes_many": int(e["TLS_ROUTES_MANY"]),
                 "steady_conns": int(e["STEADY_CONNS"]), "steady_rate": float(e["STEADY_RATE"]),
                 "steady_secs": float(e["STEADY_SECS"])},
    "scenario_notes": {
        "newconn": "wrk -t1 -c%s, %ss" % (e["HTTP_CONNS"], e["HTTP_SECS"]),
        "keepalive": "wrk -t1 -c%s, %ss" % (e["HTTP_CONNS"], e["HTTP_SECS"]),
        "bulk1": "%.2f GiB" % (int(e["BULK1_BYTES"]) / 2**30),
        "bulk8": "%.2f GiB in all" % (int(e["BULK8_BYTES"]) / 2**30),
        "idle": "%s connections" % e["IDLE_CONNS"],
        "tls": "tcpbench tls -c%s, %ss, %s-byte ClientHello, SNI %s in turn"
               % (e["TLS_CONNS"], e["TLS_SECS"], e["HELLO_BYTES"], " / ".join(e["TLS_NAMES"].split(","))),
        "tlsplain": "the same hellos, round robin over both backends",
        "tls1k": "%s routes: the 2 real ones after %d decoys" % (e["TLS_ROUTES_MANY"], int(e["TLS_ROUTES_MANY"]) - 2),
        "steady": "%s connections, one request every %s s each (%.0f req/s), %s s measured"
                  % (e["STEADY_CONNS"], e["STEADY_PERIOD"], float(e["STEADY_RATE"]), e["STEADY_SECS"]),
    },
}
json.dump(meta, open(sys.argv[1], "w"), indent=2)
EOF
mkdir -p "$(dirname "$OUT")"
"${REPORT[@]}" summarize "$RAW" "$OUT" "$META"
echo
echo "JSON: $OUT"
