"""`xmppd serve --workers N`: N server processes on one machine, each a cluster node.

The parent only supervises: it makes the shared files first (self-signed certificate,
installation secret) so workers never race to create them, starts worker 1 and waits
until it listens (it runs migrations and first-start work alone), then starts the others.
Every worker binds the same ports with SO_REUSEPORT, so the kernel spreads connections
over them, and joins the cluster as node ``<node>-w<i>`` on the configured Redis. A worker
that dies is started again after a second; SIGTERM/SIGINT stop them all.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from . import systemd
from .config import Config
from .options import ConfigError

log = logging.getLogger("xmppd.workers")


def worker_config(config: Config, index: int) -> None:
    """In a worker: its own node name (the rest of the config is the parent's)."""
    config.cluster["node"] = f"{config.cluster['node']}-w{index}"
    config.cluster["worker"] = index  # only worker 1 serves the admin socket (server.py)


def supervise(config: Config, count: int) -> int:
    if not config.cluster["enabled"]:
        raise ConfigError(
            "several workers share state through the cluster: set [cluster] enabled = true "
            "(and [storage] driver = 'postgres')",
            key="cluster.enabled",
        )
    from .server import Server
    from .transports import tls

    domains = [h.domain for h in config.hosts]
    tls.ensure_certificate(config.tls["certificate"], config.tls["key"], config.data_dir, domains)
    Server(config)._secret()
    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the workers are there to get it
    workers: dict[int, subprocess.Popen[bytes]] = {1: _spawn(config, 1)}
    _wait_listening(config, workers[1])
    for index in range(2, count + 1):
        workers[index] = _spawn(config, index)
    log.info("%d workers started", count)
    # systemd (NotifyAccess=main) hears the supervisor; a reload goes to every worker.
    signal.signal(signal.SIGHUP, lambda *_: _forward(workers, signal.SIGHUP))
    systemd.ready(f"serving with {count} workers")
    ping, next_ping = systemd.watchdog_interval(), 0.0
    while not stopping:
        time.sleep(0.2)
        if ping and time.monotonic() >= next_ping:
            systemd.notify("WATCHDOG=1")
            next_ping = time.monotonic() + ping
        for index, proc in list(workers.items()):
            if proc.poll() is not None and not stopping:
                log.error("worker %d exited (%s); starting it again", index, proc.returncode)
                time.sleep(1)
                workers[index] = _spawn(config, index)
    systemd.stopping()
    _forward(workers, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in workers.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


def _forward(workers: dict[int, subprocess.Popen[bytes]], signum: int) -> None:
    for proc in workers.values():
        if proc.poll() is None:
            proc.send_signal(signum)


def _spawn(config: Config, index: int) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "xmppd", "serve", "--worker", str(index)]
    if config.path:
        args += ["-c", config.path]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    return subprocess.Popen(args, env=env)  # systemd talks to the supervisor only


def _wait_listening(config: Config, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    port, interfaces = config.c2s["port"], config.c2s["interfaces"]
    if not port:
        time.sleep(2)
        return
    host = "127.0.0.1" if interfaces[0] == "*" else interfaces[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
