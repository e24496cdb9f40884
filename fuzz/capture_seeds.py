#!/usr/bin/env python3
"""Seeds of the sniffer fuzz targets (fuzz/seeds/client_hello/, fuzz/seeds/http_request/).

Captured: listens on 127.0.0.1, runs real clients against it (openssl s_client,
curl, Python ssl, headless Chromium, wget, ssh) and keeps the first bytes each
sends: a ClientHello up to its last byte, an HTTP request up to the end of its
headers. Nothing is answered, so the clients fail after sending; no network
beyond loopback.

Made here: hellos no client in this sandbox sends (an ECH outer hello, a
Firefox-like hello, an SSLv2-compatible hello, a hello over three records, one
declaring a huge length) and an HTTP request without Host.

    python3 fuzz/capture_seeds.py            # both, into fuzz/seeds/
    python3 fuzz/capture_seeds.py --made     # only the hand-made ones

The seeds are committed: tests never run this (nor need the browser).
"""

import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading

ROOT = os.path.dirname(os.path.abspath(__file__))
HELLOS = os.path.join(ROOT, "seeds", "client_hello")
REQUESTS = os.path.join(ROOT, "seeds", "http_request")


def hello_complete(data):
    """Whether `data` (TLS records) holds a whole handshake message."""
    handshake = b""
    rest = data
    while len(rest) >= 5:
        length = struct.unpack(">H", rest[3:5])[0]
        handshake += rest[5 : 5 + length]
        rest = rest[5 + length :]
    if len(handshake) < 4:
        return False
    return len(handshake) >= 4 + int.from_bytes(handshake[1:4], "big")


def request_complete(data):
    return b"\r\n\r\n" in data or b"\n\n" in data


def capture(name, directory, command, complete, timeout=20.0):
    """Runs `command` (PORT replaced) and keeps the first bytes of its first
    connection once `complete` says so."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(timeout)
    port = server.getsockname()[1]
    if callable(command):
        client = threading.Thread(target=command, args=(port,), daemon=True)
        client.start()
        process = None
    else:
        argv = [a.replace("PORT", str(port)) for a in command]
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    data = b""
    try:
        conn, _ = server.accept()
        conn.settimeout(timeout)
        while not complete(data):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        conn.close()
    except socket.timeout:
        pass
    finally:
        server.close()
        if process is not None:
            process.kill()
            process.wait()
    if not complete(data):
        print(f"{name}: nothing complete captured ({len(data)} bytes)", file=sys.stderr)
        return
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)
    print(f"{name}: {len(data)} bytes")


def python_ssl(port):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            with context.wrap_socket(sock, server_hostname="python.example"):
                pass
    except OSError:
        pass


def captured():
    openssl = ["openssl", "s_client", "-connect", "127.0.0.1:PORT"]
    capture(
        "openssl-sni-alpn",
        HELLOS,
        openssl + ["-servername", "api.example.com", "-alpn", "h2,http/1.1"],
        hello_complete,
    )
    capture(
        "openssl-tls12",
        HELLOS,
        openssl + ["-tls1_2", "-servername", "Legacy.Example.COM"],
        hello_complete,
    )
    capture("openssl-no-sni", HELLOS, openssl + ["-noservername"], hello_complete)
    resolve = ["--resolve", "curl.example:PORT:127.0.0.1", "--max-time", "5", "-k"]
    capture("curl", HELLOS, ["curl", *resolve, "https://curl.example:PORT/"], hello_complete)
    capture("python-ssl", HELLOS, python_ssl, hello_complete)
    capture(
        "wget",
        HELLOS,
        ["wget", "-q", "-O-", "--no-check-certificate", "-t", "1", "-T", "5",
         "https://127.0.0.1:PORT/"],
        hello_complete,
    )
    if shutil.which("chromium"):
        profile = tempfile.mkdtemp(prefix="txlb-chromium-")
        try:
            capture(
                "chromium",
                HELLOS,
                [
                    "chromium", "--headless", "--disable-gpu", "--no-sandbox",
                    f"--user-data-dir={profile}", "--no-first-run",
                    "--host-resolver-rules=MAP chromium.example 127.0.0.1",
                    "--dump-dom", "https://chromium.example:PORT/",
                ],
                hello_complete,
                timeout=60.0,
            )
        finally:
            shutil.rmtree(profile, ignore_errors=True)
    capture(
        "curl",
        REQUESTS,
        ["curl", "--resolve", "curl.example:PORT:127.0.0.1", "--max-time", "5",
         "http://curl.example:PORT/path?q=1"],
        request_complete,
    )
    capture(
        "wget",
        REQUESTS,
        ["wget", "-q", "-O-", "-t", "1", "-T", "5", "http://[::ffff:127.0.0.1]:PORT/"],
        request_complete,
    )
    capture(
        "python-urllib",
        REQUESTS,
        [sys.executable, "-c",
         "import urllib.request as u; u.urlopen('http://127.0.0.1:PORT/', timeout=5)"],
        request_complete,
    )
    # Not HTTP, but told apart by the same sniffer.
    capture(
        "ssh",
        REQUESTS,
        ["ssh", "-p", "PORT", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "127.0.0.1"],
        lambda data: b"\n" in data,
    )


# ---- Hand-made ----


def u16(n):
    return struct.pack(">H", n)


def vec16(b):
    return u16(len(b)) + b


def vec8(b):
    return bytes([len(b)]) + b


def ext(kind, data):
    return u16(kind) + vec16(data)


def sni(name):
    return ext(0, vec16(b"\x00" + vec16(name)))


def alpn(*names):
    return ext(16, vec16(b"".join(vec8(n) for n in names)))


def message(extensions, suites=(0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F)):
    body = b"\x03\x03" + bytes(range(32)) + vec8(bytes(32 * [0xAB]))
    body += vec16(b"".join(u16(s) for s in suites)) + vec8(b"\x00")
    body += vec16(b"".join(extensions))
    return b"\x01" + len(body).to_bytes(3, "big") + body


def records(handshake, sizes):
    out = b""
    for size in sizes:
        part, handshake = handshake[:size], handshake[size:]
        out += b"\x16\x03\x01" + vec16(part)
    if handshake:
        out += b"\x16\x03\x01" + vec16(handshake)
    return out


def common():
    """Extensions every modern client sends (groups, versions, key share, ...)."""
    return [
        ext(23, b""),  # extended_master_secret
        ext(0xFF01, b"\x00"),  # renegotiation_info
        ext(10, vec16(u16(0x001D) + u16(0x0017) + u16(0x0018))),  # supported_groups
        ext(11, b"\x01\x00"),  # ec_point_formats
        ext(13, vec16(u16(0x0403) + u16(0x0804) + u16(0x0401))),  # signature_algorithms
        ext(51, vec16(u16(0x001D) + vec16(bytes(32)))),  # key_share
        ext(43, vec8(u16(0x0304) + u16(0x0303))),  # supported_versions
        ext(45, b"\x01\x01"),  # psk_key_exchange_modes
    ]


def made():
    os.makedirs(HELLOS, exist_ok=True)
    os.makedirs(REQUESTS, exist_ok=True)
    seeds = {}
    # ECH (draft 18+) outer hello: the public name in SNI, the inner hello
    # encrypted in extension 0xfe0d (outer type 0, HPKE suite, config id, enc,
    # payload).
    ech = b"\x00" + u16(0x0001) + u16(0x0001) + b"\x2a" + vec16(bytes(32)) + vec16(bytes(range(256)) * 2)
    seeds["ech-outer"] = records(
        message([sni(b"public.example.net"), alpn(b"h2", b"http/1.1"), *common(), ext(0xFE0D, ech)]),
        [],
    )
    # Firefox's extension order, with its record_size_limit and delegated
    # credentials, and GREASE-free (Firefox sends none).
    seeds["firefox-like"] = records(
        message(
            [
                sni(b"www.mozilla.example"),
                ext(23, b""),
                ext(0xFF01, b"\x00"),
                ext(10, vec16(u16(0x11EC) + u16(0x001D) + u16(0x0017))),
                ext(11, b"\x01\x00"),
                ext(35, b""),
                alpn(b"h2", b"http/1.1"),
                ext(5, b"\x01\x00\x00\x00\x00"),
                ext(34, vec16(u16(0x0403) + u16(0x0503))),
                ext(51, vec16(u16(0x001D) + vec16(bytes(32)))),
                ext(43, vec8(u16(0x0304) + u16(0x0303))),
                ext(13, vec16(u16(0x0403) + u16(0x0804))),
                ext(45, b"\x01\x01"),
                ext(28, u16(0x4001)),
                ext(0xFE0D, ech),
            ],
            suites=(0x1301, 0x1303, 0x1302, 0xC02B, 0xC02F, 0xCCA9),
        ),
        [],
    )
    # The same hello over three records.
    three = message([sni(b"split.example.org"), alpn(b"http/1.1", b"h2"), *common()])
    seeds["three-records"] = records(three, [5, 60])
    # Declares 100,000 bytes: never fits in what may be read.
    huge = bytearray(message([sni(b"huge.example")]))
    huge[1:4] = (100_000).to_bytes(3, "big")
    seeds["huge-length"] = records(bytes(huge), [])
    # SSLv2-compatible CLIENT-HELLO (old clients): version 3.1, 3 cipher specs.
    body = b"\x01\x03\x01" + u16(9) + u16(0) + u16(16)
    body += b"\x00\x00\x2f\x00\x00\x35\x00\x00\x0a" + bytes(range(16))
    seeds["sslv2-compatible"] = u16(0x8000 | len(body)) + body
    # GREASE values (RFC 8701) in suites, extensions, groups and ALPN.
    seeds["grease"] = records(
        message(
            [ext(0x1A1A, b""), sni(b"grease.example"), alpn(b"\x3a\x3a", b"h2"), *common(), ext(0x4A4A, b"\x00")],
            suites=(0x2A2A, 0x1301, 0x1302),
        ),
        [],
    )
    for name, data in seeds.items():
        with open(os.path.join(HELLOS, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes (made)")
    requests = {
        "no-host": b"GET /index.html HTTP/1.0\r\nUser-Agent: old\r\nAccept: */*\r\n\r\n",
        "ipv6-host": b"GET / HTTP/1.1\r\nUser-Agent: x\r\nHost: [2001:db8::1]:8080\r\n\r\n",
        "h2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    }
    for name, data in requests.items():
        with open(os.path.join(REQUESTS, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes (made)")


if __name__ == "__main__":
    made()
    if "--made" not in sys.argv[1:]:
        captured()
