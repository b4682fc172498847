"""sd_notify on a real server: READY=1 once the ports are open, RELOADING=1/READY=1 around a
SIGHUP, STOPPING=1 on SIGTERM, received on a unix datagram socket the test owns."""

from __future__ import annotations

import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ServerProcess

from xmppd import systemd


@pytest.fixture()
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    folder = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")  # AF_UNIX paths are short
    path = str(Path(folder) / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(15)
    yield sock, path
    sock.close()
    os.unlink(path)
    os.rmdir(folder)


def message(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n") if line)


def test_ready_reloading_and_stopping_reach_the_notify_socket(
    tmp_path: Path, notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    server = ServerProcess(tmp_path)
    server.start()
    try:
        assert server.proc is not None
        ready = message(sock)
        assert ready == {"READY": "1", "STATUS": "serving localhost"}
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()  # ports open

        os.kill(server.proc.pid, signal.SIGHUP)  # READY came first: the receiver is on
        reloading = message(sock)
        assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
        assert message(sock)["READY"] == "1"

        server.proc.send_signal(signal.SIGTERM)
        assert message(sock)["STOPPING"] == "1"
        assert server.proc.wait(timeout=10) == 0
    finally:
        server.stop()


def test_abstract_socket_names_and_no_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"xmppd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("STATUS=hello")
        assert message(sock) == {"STATUS": "hello"}
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not systemd.ready("serving")  # not under systemd: nothing sent, no error
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify")
    assert not systemd.stopping()  # a wrong socket is logged once, never raised
