"""`xmppd serve --workers N`: several processes share the ports, each a cluster node."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from support import run
from support_cluster import body, login, make_node, users, wait_for


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def tcp_sockets(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(fd).startswith("socket:")
    return count


def test_two_workers_share_the_ports_and_chat(tmp_path: Path, pg_url: str, prefix: str) -> None:
    node = make_node(tmp_path, pg_url, "box", prefix)
    alice, bob = users(node, "alice", "bob")
    log = node.log_path.open("ab")
    parent = subprocess.Popen(
        [sys.executable, "-m", "xmppd", "serve", "--workers", "2", "-c", str(node.config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=node.base,
    )
    try:
        deadline = time.monotonic() + 30
        while len(children(parent.pid)) < 2 and time.monotonic() < deadline:
            assert parent.poll() is None, node.log_text()[-3000:]
            time.sleep(0.1)
        workers = children(parent.pid)
        assert len(workers) == 2
        for port in (node.port, node.tls_port, node.https_port):  # every listener, both
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, node.log_text()[-3000:]
                    time.sleep(0.1)
        while node.log_text().count("xmppd serving") < 2:  # both workers took their ports
            assert time.monotonic() < deadline, node.log_text()[-3000:]
            time.sleep(0.1)
        check = subprocess.run(
            [sys.executable, "-m", "xmppd", "check", "-c", str(node.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "cluster node: box-w1 up" in check.stdout, check.stdout
        assert "cluster node: box-w2 up" in check.stdout, check.stdout
        before = {pid: tcp_sockets(pid) for pid in workers}

        async def scenario() -> None:
            # Ten sessions per account: the kernel spreads them over both workers.
            alices = [await login(node, alice, f"a{i}") for i in range(10)]
            b = await login(node, bob, "b")
            after = {pid: tcp_sockets(pid) for pid in workers}
            assert all(after[pid] > before[pid] for pid in workers), (before, after)
            for i, a in enumerate(alices):  # to each session, wherever it landed
                b.send_message(mto=a.boundjid.full, mbody=f"to {i}", mtype="chat")
                await wait_for(a, body(f"to {i}"))
                a.send_message(mto=f"{bob}@localhost", mbody=f"from {i}", mtype="chat")
                await wait_for(b, body(f"from {i}"))
            for c in (*alices, b):
                await c.close()

        run(scenario())
    finally:
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=20)
    assert parent.returncode == 0
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


def test_workers_need_cluster_mode(tmp_path: Path) -> None:
    from support import ServerProcess

    node = ServerProcess(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "xmppd", "serve", "--workers", "2", "-c", str(node.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 78
    assert "cluster.enabled" in result.stderr


def test_the_supervisor_notifies_systemd_and_forwards_sighup(
    tmp_path: Path, pg_url: str, prefix: str, monkeypatch: object
) -> None:
    """With `--workers`, systemd (NotifyAccess=main) hears the supervisor: READY=1 once the
    workers are started, STOPPING=1; `systemctl reload` (SIGHUP to it) reaches every worker."""
    node = make_node(tmp_path, pg_url, "hup", prefix)
    notify_path = f"/tmp/sdn-workers-{os.getpid()}"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": notify_path}
    log = node.log_path.open("ab")
    parent = subprocess.Popen(
        [sys.executable, "-m", "xmppd", "serve", "--workers", "2", "-c", str(node.config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=node.base,
        env=env,
    )
    try:
        assert notify.recv(4096).decode() == "READY=1\nSTATUS=serving with 2 workers"
        deadline = time.monotonic() + 30
        while node.log_text().count("xmppd serving") < 2:  # both workers took their ports
            assert time.monotonic() < deadline, node.log_text()[-3000:]
            time.sleep(0.1)
        parent.send_signal(signal.SIGHUP)
        while node.log_text().count("no live option changed") < 2:
            assert time.monotonic() < deadline, node.log_text()[-3000:]
            time.sleep(0.1)
        assert parent.poll() is None
        assert "needing a restart" not in node.log_text()  # the workers' own node names
        parent.send_signal(signal.SIGTERM)
        assert notify.recv(4096).decode().startswith("STOPPING=1")
        assert parent.wait(timeout=20) == 0
        notify.settimeout(0.5)
        with contextlib.suppress(TimeoutError):  # the workers never write to the socket
            extra = notify.recv(4096)
            raise AssertionError(f"a worker notified systemd: {extra!r}")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        notify.close()
        os.unlink(notify_path)
