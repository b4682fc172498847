"""A real coturn (Debian's `turnserver`) on loopback for the TURN tests, and a small TURN client
(RFC 5766 Allocate with RFC 5389 long-term credentials) that checks credentials against it.

Used by tests/xmppd/modules/test_turn.py (XEP-0215) and the web call tests (tests/web), which
also relay WebRTC media through it."""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support import free_port

COOKIE = 0x2112A442


def free_udp_port() -> int:
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


@contextmanager
def coturn(base: Path, secret: str) -> Iterator[int]:
    """coturn on 127.0.0.1 (UDP and TCP) checking TURN REST credentials made with `secret`;
    yields its port. Relayed addresses are on 127.0.0.1 too, and loopback peers are allowed,
    so two browsers on this machine can talk through it."""
    port = free_udp_port()
    proc = subprocess.Popen(
        ["turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip=127.0.0.1"]
        + [f"--listening-port={port}", "--relay-ip=127.0.0.1", "--realm=localhost"]
        + ["--use-auth-secret", f"--static-auth-secret={secret}", "--simple-log"]
        + [f"--log-file={base / 'turn.log'}", f"--pidfile={base / 'turn.pid'}"]
        + [f"--userdb={base / 'turndb'}", "--no-stdout-log", "--allow-loopback-peers"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while allocate(port, "probe", "wrong")[0] == "timeout":  # answers anything once up
            assert time.monotonic() < deadline and proc.poll() is None, "coturn did not start"
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def message(kind: int, txid: bytes, attrs: bytes, key: bytes | None = None) -> bytes:
    if key is None:
        return struct.pack("!HHI", kind, len(attrs), COOKIE) + txid + attrs
    header = struct.pack("!HHI", kind, len(attrs) + 24, COOKIE) + txid
    mac = hmac.new(key, header + attrs, hashlib.sha1).digest()
    return header + attrs + attribute(0x0008, mac)


def parse(data: bytes) -> tuple[int, dict[int, bytes]]:
    kind, length, _cookie = struct.unpack("!HHI", data[:8])
    attrs, pos = {}, 20
    while pos < 20 + length:
        a_kind, a_len = struct.unpack("!HH", data[pos : pos + 4])
        attrs[a_kind] = data[pos + 4 : pos + 4 + a_len]
        pos += 4 + a_len + (-a_len % 4)
    return kind, attrs


def allocate(port: int, username: str, password: str) -> tuple[str, int]:
    """("ok", 0) when the relay was allocated, ("error", code) or ("timeout", 0)."""
    transport = attribute(0x0019, bytes([17, 0, 0, 0]))  # REQUESTED-TRANSPORT: UDP
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        sock.connect(("127.0.0.1", port))
        try:
            sock.send(message(0x0003, os.urandom(12), transport))
            kind, attrs = parse(sock.recv(2048))
            # Our own request back: the probe got the port coturn will have (it is not up yet).
            if kind == 0x0003:
                return "timeout", 0
            assert kind == 0x0113, hex(kind)  # 401 with the realm and a nonce
            realm, nonce = attrs[0x0014], attrs[0x0015]
            key = hashlib.md5(f"{username}:".encode() + realm + f":{password}".encode()).digest()
            attrs_out = (
                transport
                + attribute(0x0006, username.encode())
                + attribute(0x0014, realm)
                + attribute(0x0015, nonce)
            )
            sock.send(message(0x0003, os.urandom(12), attrs_out, key))
            kind, attrs = parse(sock.recv(2048))
        except (TimeoutError, ConnectionRefusedError):  # not listening yet
            return "timeout", 0
    if kind == 0x0103:
        return "ok", 0
    code = attrs.get(0x0009, b"\0\0\0\0")
    return "error", code[2] * 100 + code[3]
