#!/usr/bin/env python3
"""Minimal NATS request client (the plain-text NATS protocol over TCP, standard library only).

    nats_req.py URL USER PASSWORD SUBJECT [PAYLOAD] [--timeout SECONDS]

Sends one request (PUB with a reply inbox) and prints the reply payload on stdout. Exit status:
0 reply received, 1 error (-ERR from the server, no responders, time-out). Enough to drive the
JetStream API ($JS.API.*) for tests and the demo without a `nats` CLI, e.g.

    nats_req.py nats://127.0.0.1:4222 app PASS '$JS.API.STREAM.CREATE.ORDERS' \
        '{"name":"ORDERS","subjects":["orders.>"],"num_replicas":3}'
    nats_req.py nats://127.0.0.1:4222 sys PASS '$JS.API.META.LEADER.STEPDOWN' ''
"""
import json
import os
import socket
import sys
import time


def fail(msg):
    print(f"nats_req.py: {msg}", file=sys.stderr)
    sys.exit(1)


def main(argv):
    timeout = 5.0
    if "--timeout" in argv:
        i = argv.index("--timeout")
        timeout = float(argv[i + 1])
        del argv[i : i + 2]
    if len(argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    url, user, password, subject = argv[:4]
    payload = (argv[4] if len(argv) == 5 else "").encode()
    hostport = url.split("://", 1)[-1].split(",")[0]
    host, _, port = hostport.rpartition(":")
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout)
    except OSError as e:
        fail(f"cannot connect to {url}: {e}")
    buf = b""

    def read_line():
        nonlocal buf
        while b"\r\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                fail(f"timed out after {timeout}s waiting for a reply on {subject}")
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                fail(f"timed out after {timeout}s waiting for a reply on {subject}")
            if not chunk:
                fail("connection closed by server")
            buf += chunk
        line, _, buf = buf.partition(b"\r\n")
        return line.decode()

    def read_exact(n):
        nonlocal buf
        while len(buf) < n + 2:
            left = deadline - time.monotonic()
            if left <= 0:
                fail("timed out reading a message body")
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                fail("connection closed by server")
            buf += chunk
        data, buf = buf[:n], buf[n + 2 :]
        return data

    info = read_line()
    if not info.startswith("INFO"):
        fail(f"unexpected greeting: {info[:80]}")
    connect = {
        "verbose": False, "pedantic": False, "lang": "python-raw", "version": "0",
        "protocol": 1, "headers": True, "no_responders": True,
        "user": user, "pass": password,
    }
    inbox = "_INBOX.testbeds." + os.urandom(8).hex()
    sock.sendall(
        b"CONNECT " + json.dumps(connect).encode() + b"\r\n"
        + f"SUB {inbox} 1\r\n".encode()
        + f"PUB {subject} {inbox} {len(payload)}\r\n".encode() + payload + b"\r\n"
        + b"PING\r\n"
    )
    while True:
        line = read_line()
        if line.startswith("-ERR"):
            fail(f"server error: {line}")
        if line in ("PONG", "+OK", ""):
            continue
        if line == "PING":
            sock.sendall(b"PONG\r\n")
            continue
        parts = line.split()
        if parts[0] == "MSG":
            body = read_exact(int(parts[-1]))
            sys.stdout.write(body.decode(errors="replace") + "\n")
            return 0
        if parts[0] == "HMSG":
            hdr_len, total = int(parts[-2]), int(parts[-1])
            data = read_exact(total)
            headers, body = data[:hdr_len].decode(errors="replace"), data[hdr_len:]
            status = headers.split("\r\n", 1)[0]
            if " 503" in status:
                fail(f"no responders for {subject}")
            if not body and status.strip() != "NATS/1.0":
                fail(f"reply status: {status.strip()}")
            sys.stdout.write(body.decode(errors="replace") + "\n")
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
