#!/usr/bin/env bash
# bench/tls_term.sh: TLS termination, txlb beside HAProxy and nginx (stream) with
# Debian's OpenSSL. See BENCHMARKS.md, "TLS termination".
#
#   bench/tls_term.sh [--secs S] [--repeats R] [--only txlb,haproxy,nginx]
#                     [--scenarios newconn,keepalive,resumed,idle,bulk]
#
# Each proxy terminates TLS 1.3 with one ECDSA P-256 certificate on one listener and
# passes the plaintext to two HTTP hold servers (round robin). wrk (OpenSSL) sends
# small HTTP requests: "newconn" is one request per connection (a full handshake
# each: wrk does not resume sessions), "keepalive" many over 50 connections. The
# proxy runs on CPU 0, wrk and the hold servers on CPU 1; per run, the proxy's CPU
# (user + system, /proc/PID/stat) per connection or request. Variants run in turn,
# R times (default 3); medians are printed with the ratio to the best peer. Also:
# "resumed", bench/tlsclient.c resuming from the last ticket, one connection at a
# time, one request each (CPU per resumed handshake; a run that does not resume
# fails; openssl s_time -reuse never resumes TLS 1.3: it frees sessions unshut), and
# "idle", the proxy's memory per terminated connection held open (B, not us);
# "bulk", one client (bench/tlsclient.c, OpenSSL, on CPU 1) downloading BULK_BYTES
# (default 1 GiB) of zeros from tcpbench's "zero" backend through a second
# listener: the proxy's CPU per GiB (ms, not us) and "bulk_mibps", the stream's
# MiB/s (higher is better: its ratio is to the fastest other variant).
# Environment: TXLB_BIN (default ${CARGO_TARGET_DIR:-target}/release/txlb);
# TXLB_BIN_B, a second build run as variant "txlb-b" (--only txlb,txlb-b: A/B);
# PERF_OUT=FILE records a perf profile of txlb's new-connection runs.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
SECS=5 REPEATS=3 ONLY=txlb,haproxy,nginx CONNS=50 SCENARIOS=newconn,keepalive,resumed,idle,bulk
while [ $# -gt 0 ]; do
    case "$1" in
        --secs) SECS=${2:?}; shift ;;
        --repeats) REPEATS=${2:?}; shift ;;
        --only) ONLY=${2:?}; shift ;;
        --scenarios) SCENARIOS=${2:?}; shift ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "tls_term.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
log() { printf '[tls %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for tool in wrk openssl taskset cc python3; do command -v "$tool" >/dev/null || die "$tool is required"; done
[ "$(nproc)" -ge 2 ] || die "needs two CPUs"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/txlb-tls.XXXXXX")
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
TXLB_BIN=${TXLB_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/txlb}
TLSCLIENT=$WORK/tlsclient
cc -O2 -o "$TLSCLIENT" "$BENCH_DIR/tlsclient.c" -lssl -lcrypto || die "compiling bench/tlsclient.c failed (libssl-dev?)"
[ -x "$TXLB_BIN" ] || die "no txlb at $TXLB_BIN (cargo build --release)"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=bench.example.com -addext subjectAltName=DNS:bench.example.com \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null || die "openssl req failed"
cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/haproxy.pem"

read -r B1 B2 LP BZ LZ <<<"$("$TB" freeport 5)"
taskset -c 1 "$TB" zero "$BZ" >/dev/null 2>&1 &
PIDS+=("$!")
"$TB" waitlisten "$BZ" 10 || die "zero server on $BZ did not start"
for port in "$B1" "$B2"; do
    taskset -c 1 "$TB" hold "$port" >/dev/null 2>&1 &
    PIDS+=("$!")
    "$TB" waitlisten "$port" 10 || die "hold server on $port did not start"
done

cat >"$WORK/txlb.xml" <<EOF
<config>
  <service name="tls">
    <listen ip="127.0.0.1:$LP"><tls cert="$WORK/cert.pem" key="$WORK/key.pem" minVersion="1.3"/></listen>
    <group name="g" scheduler="roundr" enable="true">
      <host name="b1" ip="127.0.0.1:$B1"/>
      <host name="b2" ip="127.0.0.1:$B2"/>
    </group>
  </service>
  <service name="bulk">
    <listen ip="127.0.0.1:$LZ"><tls cert="$WORK/cert.pem" key="$WORK/key.pem" minVersion="1.3"/></listen>
    <group name="z" enable="true"><host name="zero" ip="127.0.0.1:$BZ"/></group>
  </service>
</config>
EOF
cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 20000
    no strict-limits
    ssl-default-bind-options ssl-min-ver TLSv1.3
defaults
    mode tcp
    balance roundrobin
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend tls
    bind 127.0.0.1:$LP ssl crt $WORK/haproxy.pem
    default_backend hold
backend hold
    server b1 127.0.0.1:$B1
    server b2 127.0.0.1:$B2
frontend bulk
    bind 127.0.0.1:$LZ ssl crt $WORK/haproxy.pem
    default_backend zero
backend zero
    server z 127.0.0.1:$BZ
EOF
NGX_STREAM=""
for m in /usr/lib/nginx/modules/ngx_stream_module.so /usr/share/nginx/modules/ngx_stream_module.so; do
    [ -f "$m" ] && NGX_STREAM="load_module $m;" && break
done
cat >"$WORK/nginx.conf" <<EOF
$NGX_STREAM
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err error;
events { worker_connections 20000; }
stream {
    access_log off;
    upstream hold { server 127.0.0.1:$B1; server 127.0.0.1:$B2; }
    server {
        listen 127.0.0.1:$LP ssl backlog=4096;
        ssl_protocols TLSv1.3;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        proxy_pass hold;
    }
    server {
        listen 127.0.0.1:$LZ ssl;
        ssl_protocols TLSv1.3;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        proxy_pass 127.0.0.1:$BZ;
    }
}
EOF

start() {  # start VARIANT: sets PID (the process whose CPU is read)
    case $1 in
        txlb | txlb-b)
            local bin=$TXLB_BIN
            [ "$1" = txlb ] || bin=${TXLB_BIN_B:?TXLB_BIN_B names the txlb-b build}
            TXLB_LOG=warn taskset -c 0 "$bin" run --config "$WORK/txlb.xml" --grace 1 >"$WORK/$1.log" 2>&1 & ;;
        haproxy) taskset -c 0 haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/$1.log" 2>&1 & ;;
        nginx) taskset -c 0 nginx -e "$WORK/nginx.err" -p "$WORK" -c "$WORK/nginx.conf" >"$WORK/$1.log" 2>&1 & ;;
        *) die "unknown variant $1" ;;
    esac
    PID=$!
    PIDS+=("$PID")
    "$TB" waitlisten "$LP" 15 || die "$1 did not listen: $(cat "$WORK/$1.log" "$WORK/nginx.err" 2>/dev/null)"
    if [ "$1" = nginx ]; then  # the worker does the work
        local i w=""
        for i in $(seq 1 100); do w=$(pgrep -P "$PID" | head -n 1 || true); [ -n "$w" ] && break; sleep 0.05; done
        [ -n "$w" ] || die "nginx: no worker"
        STOP=$PID PID=$w
    else
        STOP=$PID
    fi
    sleep 0.3
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK=$(getconf CLK_TCK)

# run VARIANT SCENARIO: prints "VARIANT SCENARIO us_per_op ops_per_s errors"
run() {
    local v=$1 s=$2 c0 c1 hdr=()
    [ "$s" = newconn ] && hdr=(-H "Connection: close")
    c0=$(ticks "$PID")
    timeout -k 5 $((SECS + 20)) taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 2s \
        "${hdr[@]+"${hdr[@]}"}" "https://127.0.0.1:$LP/" >"$WORK/wrk.out" 2>&1 || true
    c1=$(ticks "$PID")
    awk -v v="$v" -v s="$s" -v t=$((c1 - c0)) -v hz="$CLK" '
        /requests in/ { n = $1 }
        /Socket errors/ { e = $0 }
        /Non-2xx/ { e = e " " $0 }
        END {
            if (n == 0) { print "tls_term.sh: no requests for " v " " s > "/dev/stderr"; exit 1 }
            printf "%s %s %.2f %d %s\n", v, s, 1e6 * t / hz / n, n, (e == "" ? "0" : "errors")
        }' "$WORK/wrk.out"
}

# resumed VARIANT: one connection at a time for SECS, each resuming the session
# of the one before (TLS 1.3 ticket, PSK with ECDHE) and making one request; prints
# like run.
resumed() {
    local v=$1 c0 c1 out
    c0=$(ticks "$PID")
    out=$(timeout -k 5 $((SECS + 20)) taskset -c 1 "$TLSCLIENT" resume "127.0.0.1:$LP" "$SECS") ||
        die "$v resumed: the client failed ($out)"
    c1=$(ticks "$PID")
    awk -v v="$v" -v t=$((c1 - c0)) -v hz="$CLK" -v out="$out" 'BEGIN {
        split(out, r, " ")
        if (r[1] < 2 || r[2] < r[1] - 1) { print "tls_term.sh: " v " did not resume (" out ")" > "/dev/stderr"; exit 1 }
        printf "%s resumed %.2f %d 0\n", v, 1e6 * t / hz / r[1], r[1]
    }'
}

# idle VARIANT: the proxy's RSS growth per terminated connection held open after one
# request (N = IDLE connections, from one Python client); prints "VARIANT idle BYTES N 0".
IDLE=${IDLE:-1000}
idle() {
    local v=$1
    taskset -c 1 python3 - "$LP" "$IDLE" "$PID" "$v" <<'PY'
import socket, ssl, sys, time
port, n, pid, v = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
time.sleep(1)
before = rss()
conns = []
for _ in range(n):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="bench.example.com")
    s.sendall(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
    conns.append(s)
for s in conns:
    s.settimeout(5)
    s.recv(4096)
time.sleep(2)
after = rss()
print(f"{v} idle {(after - before) / n:.0f} {n} 0")
for s in conns:
    s.close()
PY
}

# bulk VARIANT: one TLS stream of BULK_BYTES from the zero backend; prints
# "VARIANT bulk MS_PER_GIB MIB_PER_S 0" and "VARIANT bulk_mibps MIB_PER_S MS_PER_GIB 0".
BULK_BYTES=${BULK_BYTES:-1073741824}
bulk() {
    local v=$1 c0 c1 out
    c0=$(ticks "$PID")
    out=$(timeout -k 5 $((SECS + 60)) taskset -c 1 "$TLSCLIENT" bulk "127.0.0.1:$LZ" "$BULK_BYTES" $((SECS + 50))) ||
        die "$v bulk: short stream ($out)"
    c1=$(ticks "$PID")
    awk -v v="$v" -v t=$((c1 - c0)) -v hz="$CLK" -v out="$out" 'BEGIN {
        split(out, r, " "); gib = r[1] / 2^30; mibps = r[1] / 2^20 / r[2]; ms = 1e3 * t / hz / gib
        printf "%s bulk %.1f %.0f 0\n%s bulk_mibps %.0f %.1f 0\n", v, ms, mibps, v, mibps, ms
    }'
}

IFS=, read -r -a VARIANTS <<<"$ONLY"
: >"$WORK/results"
log "TLS 1.3, ECDSA P-256; wrk -t1 -c$CONNS, ${SECS}s per run, $REPEATS repeats"
for r in $(seq 1 "$REPEATS"); do
    for v in "${VARIANTS[@]}"; do
        start "$v"
        for s in newconn keepalive; do
            [[ ",$SCENARIOS," == *",$s,"* ]] || continue
            local_perf=""
            if [ -n "${PERF_OUT:-}" ] && [ "$v" = txlb ] && [ "$s" = newconn ]; then
                perf record -g -p "$PID" -o "$PERF_OUT" -- sleep "$SECS" >/dev/null 2>&1 &
                local_perf=$!
            fi
            run "$v" "$s" | tee -a "$WORK/results" >&2
            if [ -n "$local_perf" ]; then wait "$local_perf" 2>/dev/null || true; fi
        done
        for s in resumed idle bulk; do
            [[ ",$SCENARIOS," == *",$s,"* ]] || continue
            "$s" "$v" | tee -a "$WORK/results" >&2
        done
        kill "$STOP" 2>/dev/null || true
        wait "$STOP" 2>/dev/null || true
        sleep 0.5
    done
done
# Medians per variant and scenario, and each one's ratio to the best other variant.
awk '
    { key = $1 " " $2; vals[key] = vals[key] " " $3; ops[key] = ops[key] " " $4 }
    function median(list,   a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return a[int((n + 1) / 2)]
    }
    END {
        for (k in vals) med[k] = median(vals[k])
        for (k in med) {
            split(k, p, " "); best = ""; more = p[2] ~ /_mibps$/  # higher is better
            for (o in med) {
                split(o, q, " ")
                if (q[2] == p[2] && q[1] != p[1] && (best == "" || (more ? med[o] > best : med[o] < best))) best = med[o]
            }
            printf "%-8s %-10s %12.2f %14s\n", p[1], p[2], med[k], (best == "" ? "-" : sprintf("%.2f", med[k] / best))
        }
    }' "$WORK/results" | sort -k2,2 -k1,1 | sed "1i $(printf '%-8s %-10s %12s %14s' variant scenario 'median' 'x best other')"
