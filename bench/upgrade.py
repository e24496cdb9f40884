#!/usr/bin/env python3
"""txlb upgrade with N idle connections: the time from `txlb upgrade` to the old
process's exit, and the CPU it costs per moved connection.

Decides: whether moving parked connections (two descriptors and a record each)
keeps an upgrade of a loaded balancer short, so that operators need not choose
between dropping connections and two generations running side by side.

    bench/upgrade.py [--connections 9900] [--txlb target/release/txlb]

txlb runs with one worker pinned to CPU 0 (`taskset`), this script and its echo
backend (a process of its own) on CPU 1. Every connection sends and reads back
one token, then rests until txlb parks it. The CPU time of both txlb processes
(utime + stime from /proc, exited threads included) is read before `txlb
upgrade` and at the old process's exit; an upgrade with no connection measures
what a new process costs by itself, which is taken off. 9,900 connections by
default: txlb holds two descriptors per connection, under a hard limit of
20,000 here. Bounded: a 60 s limit on each wait, connections capped at 30,000.
"""

import argparse
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time

def cpu_seconds(pid):
    """utime + stime of `pid` (exited threads included), or None once it is
    gone. In clock ticks (10 ms): runs long enough to be read so."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] == "Z":
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def echo_server():
    """An echo backend on 127.0.0.1 in a process of its own (its descriptors
    count apart from the clients'): its address."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--echo"], stdout=subprocess.PIPE, text=True
    )
    port = int(child.stdout.readline())
    return ("127.0.0.1", port), child


def serve_echo():
    """The echo backend (one thread, selectors); prints its port."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(4096)
    server.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ)

    def run():
        while True:
            for key, _ in sel.select():
                if key.fileobj is server:
                    try:
                        conn, _ = server.accept()
                    except BlockingIOError:
                        continue
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ)
                else:
                    conn = key.fileobj
                    try:
                        data = conn.recv(65536)
                    except BlockingIOError:
                        continue
                    except ConnectionError:
                        data = b""
                    if data:
                        conn.sendall(data)
                    else:
                        sel.unregister(conn)
                        conn.close()

    print(server.getsockname()[1], flush=True)
    run()


def wait(what, condition, limit=60.0):
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.01)


def one_run(txlb, connections, workdir):
    backend, echo = echo_server()
    config = os.path.join(workdir, f"lb{connections}.xml")
    with open(config, "w") as f:
        f.write(
            '<config>\n  <service name="svc">\n    <listen ip="127.0.0.1:0"/>\n'
            '    <group name="g" enable="true">\n'
            f'      <host name="a" ip="{backend[0]}:{backend[1]}"/>\n'
            "    </group>\n  </service>\n</config>\n"
        )
    log = open(os.path.join(workdir, f"txlb{connections}.log"), "w+")
    old = subprocess.Popen(
        ["taskset", "-c", "0", txlb, "run", "--workers", "1", "--grace", "30", "--config", config],
        stderr=log,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "TXLB_LOG": "info"},
    )
    try:
        def listener():
            log.seek(0)
            for line in log.read().splitlines():
                if "listener up" in line:
                    return line.split("local=")[1].split()[0]
            return None

        wait("the listener", lambda: listener() is not None)
        host, port = listener().rsplit(":", 1)
        clients = []
        for i in range(connections):
            c = socket.create_connection((host, int(port)))
            token = b"%08d" % i
            c.sendall(token)
            got = b""
            while len(got) < len(token):
                got += c.recv(16)
            clients.append(c)
        time.sleep(2.5)  # parked after 1 s without a byte
        cpu_old = cpu_seconds(old.pid)
        start = time.monotonic()
        upgrade = subprocess.Popen(
            [txlb, "upgrade", "--config", config],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # The old process's CPU is read until it exits (polled every 1 ms:
        # the last reading is at most that short of its end).
        answered = None
        last_old = cpu_old
        while True:
            if answered is None and upgrade.poll() is not None:
                answered = time.monotonic() - start
            now = cpu_seconds(old.pid)
            if now is None or old.poll() is not None:
                break
            last_old = now
            if time.monotonic() - start > 60:
                sys.exit("the old process did not exit")
            time.sleep(0.001)
        stdout, stderr = upgrade.communicate(timeout=60)
        if answered is None:
            answered = time.monotonic() - start
        if upgrade.returncode != 0:
            sys.exit(f"txlb upgrade failed: {stderr}")
        new_pid = int(stdout.split("PID ")[1].split()[0])
        exited = time.monotonic() - start
        # Let the new process finish parking what it received.
        time.sleep(0.5)
        cpu_new = cpu_seconds(new_pid)
        # Every moved connection still answers.
        for i, c in enumerate(clients[:: max(1, connections // 100)]):
            c.sendall(b"x")
            assert c.recv(1) == b"x"
        for c in clients:
            c.close()
        os.kill(new_pid, 15)
        wait("the new process to stop", lambda: cpu_seconds(new_pid) is None)
        return answered, exited, last_old - cpu_old, cpu_new
    finally:
        if old.poll() is None:
            old.kill()
        old.wait()
        echo.kill()
        echo.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=9900)
    parser.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--txlb", default="target/release/txlb")
    args = parser.parse_args()
    if args.echo:
        resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
        serve_echo()
        return
    n = min(args.connections, 30000)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as workdir:
        base = one_run(args.txlb, 0, workdir)
        run = one_run(args.txlb, n, workdir)
    answered, exited, cpu_old, cpu_new = run
    per = ((cpu_old - base[2]) + (cpu_new - base[3])) / n if n else 0.0
    print(f"connections moved: {n}")
    print(f"txlb upgrade answered after {answered * 1000:.0f} ms (no connection: {base[0] * 1000:.0f} ms)")
    print(f"old process exited after {exited * 1000:.0f} ms (no connection: {base[1] * 1000:.0f} ms)")
    print(f"CPU: old {cpu_old:.3f} s, new {cpu_new:.3f} s (no connection: {base[2]:.3f} s, {base[3]:.3f} s)")
    print(f"CPU per moved connection: {per * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
