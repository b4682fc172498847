"""TLS on every listener: the cap on concurrent handshakes, what a stalled handshake logs, and
the self-signed certificate of a first start. Raw sockets sending a real ClientHello."""

from __future__ import annotations

import contextlib
import functools
import select
import socket
import ssl
import time
from collections.abc import Iterator

import pytest
from support import HEADER, ServerProcess

CAP = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("tls"),
        extra_config=f"[limits]\ntls_handshakes = {CAP}\ntls_handshake_timeout = 3\n",
    )
    server.start()
    yield server
    server.stop()


@functools.cache
def client_hello() -> bytes:  # once: a default context costs ~0.1 s to make
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO())
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def stalled(port: int, count: int) -> list[socket.socket]:
    """Connections that send a ClientHello and never answer the server's flight."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(client_hello())
        socks.append(sock)
    return socks


def answered(socks: list[socket.socket], wait: float) -> int:
    """How many got the server's first flight within `wait` seconds."""
    ready: set[socket.socket] = set()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        readable, _, _ = select.select([s for s in socks if s not in ready], [], [], 0.1)
        ready.update(readable)
    return len(ready)


def real_client(server: ServerProcess, port: int) -> str:
    context = ssl.create_default_context(cafile=server.ca_file)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        return tls.version() or ""


@pytest.mark.parametrize("listener", ["tls_port", "https_port"])
def test_concurrent_handshakes_stay_under_the_cap(server: ServerProcess, listener: str) -> None:
    port = getattr(server, listener)
    socks = stalled(port, CAP + 10)
    try:
        assert answered(socks, wait=1.0) == CAP  # the rest wait in the accept backlog
    finally:
        for sock in socks:
            sock.close()
    # Every slot comes back, after failures and after successes alike.
    for _ in range(CAP + 2):
        assert real_client(server, port).startswith("TLSv1")


def test_a_real_client_connects_once_stalled_handshakes_time_out(server: ServerProcess) -> None:
    socks = stalled(server.tls_port, CAP)
    try:
        assert real_client(server, server.tls_port).startswith("TLSv1")  # waits ~3 s
    finally:
        for sock in socks:
            sock.close()


def stalled_starttls(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(HEADER.encode() + b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    reply = b""
    while not (b"<proceed" in reply and reply.endswith(b"/>")):
        byte = sock.recv(1)  # byte by byte: nothing after <proceed/> may be read here
        assert byte, reply
        reply += byte
    sock.sendall(client_hello())
    return sock


def test_starttls_handshakes_wait_for_the_cap_too(server: ServerProcess) -> None:
    socks = [stalled_starttls(server) for _ in range(CAP + 2)]
    try:
        assert answered(socks, wait=1.0) == CAP
    finally:
        for sock in socks:
            sock.close()


def test_a_stalled_handshake_is_logged_in_words(server: ServerProcess) -> None:
    direct = stalled(server.tls_port, 1)[0]
    starttls = stalled_starttls(server)
    for sock in (direct, starttls):
        sock.settimeout(10)
        with contextlib.suppress(OSError):
            while sock.recv(4096):
                pass  # until the server gives up and closes
        sock.close()
    time.sleep(0.3)
    log = server.log_text()
    assert "TooSlowError" not in log
    assert log.count("TLS handshake not finished within 3 s (limits.tls_handshake_timeout)") >= 2


def test_a_first_start_logs_the_self_signed_certificate_as_info(server: ServerProcess) -> None:
    lines = [line for line in server.log_text().splitlines() if "self-signed certificate" in line]
    assert len(lines) == 1 and " INFO " in lines[0] and "tls.certificate" in lines[0]


def test_server_survives(server: ServerProcess) -> None:
    assert server.alive() and "Traceback" not in server.log_text()
