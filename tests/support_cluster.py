"""Cluster nodes (tests/xmppd/cluster/) as real xmppd processes sharing the real Redis and a fresh PostgreSQL database.

`nodes` starts two nodes ("n1", "n2"; `three_nodes`: and "n3") with short gossip periods (heartbeat 0.2 s, down after
2 s) under a Redis prefix of their own, so parallel runs never meet. Accounts made through
either node's CLI land in the shared database.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pgtest import fresh_database
from support import ServerProcess, connect, free_port

REDIS = "redis://127.0.0.1:6379/0"
HEARTBEAT, DOWN = 0.2, 2.0
ROOM_LEASE = 3.0  # a dead node's MUC rooms are taken over after this


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL database made for one test, dropped afterwards."""
    with fresh_database("xmppd_cluster") as url:
        yield url


def cluster_config(pg_url: str, node: str, prefix: str, redis: str = REDIS) -> str:
    # ServerProcess appends this after its [c2s] keys: new tables from here on.
    return f"""
[storage]
driver = "postgres"
dsn = "{pg_url}"

[cluster]
enabled = true
node = "{node}"
redis = ["{redis}"]
prefix = "{prefix}"
heartbeat = {HEARTBEAT}
down_period = {DOWN}
permdown_period = 60
room_lease = {ROOM_LEASE}
"""


def make_node(
    base: Path, pg_url: str, node: str, prefix: str, redis: str = REDIS, extra: str = ""
) -> ServerProcess:
    (base / node).mkdir(exist_ok=True)
    config = cluster_config(pg_url, node, prefix, redis) + extra
    return ServerProcess(base / node, extra_config=config)


@pytest.fixture
def prefix() -> str:
    return f"xmppd-test-{uuid.uuid4().hex}"


@pytest.fixture
def nodes(tmp_path: Path, pg_url: str, prefix: str) -> Iterator[list[ServerProcess]]:
    yield from _started(tmp_path, pg_url, prefix, ("n1", "n2"))


@pytest.fixture
def three_nodes(tmp_path: Path, pg_url: str, prefix: str) -> Iterator[list[ServerProcess]]:
    yield from _started(tmp_path, pg_url, prefix, ("n1", "n2", "n3"))


def _started(
    base: Path, pg_url: str, prefix: str, names: tuple[str, ...]
) -> Iterator[list[ServerProcess]]:
    procs = [make_node(base, pg_url, name, prefix) for name in names]
    try:
        for proc in procs:  # one after the other: the first one migrates the database
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


# ---- a private Redis (tests that stop it) --------------------------------------------------


class PrivateRedis:
    def __init__(self, base: Path, bind: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.port = free_port()
        self.base = base
        self.bind = bind
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.bind[0]}:{self.port}/0"

    def start(self) -> None:
        redis = shutil.which("redis-server")
        assert redis, "redis-server is needed"
        self.proc = subprocess.Popen(
            [redis, "--port", str(self.port), "--save", "", "--bind", *self.bind]
            + ["--appendonly", "no", "--dir", str(self.base)]
            # Clients from other addresses (network namespaces) need it off; no password here.
            + ([] if self.bind == ("127.0.0.1",) else ["--protected-mode", "no"]),
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((self.bind[0], self.port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


# ---- clients -----------------------------------------------------------------------------

_numbers = itertools.count(1)
GOSSIP = 0.1


def users(node: ServerProcess, *names: str) -> list[str]:
    made = [f"{name}{next(_numbers)}" for name in names]
    for user in made:
        result = subprocess.run(
            [sys.executable, "-m", "xmppd", "adduser", f"{user}@localhost", "--password", "pw"]
            + ["-c", str(node.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    return made


async def login(node: ServerProcess, user: str, resource: str, priority: int = 0) -> Any:
    client = await connect(node, user, resource, password="pw", presence=False)
    client.auto_authorize = None
    client.auto_subscribe = False
    client.inbox = asyncio.Queue()
    client.add_event_handler("presence", client.inbox.put_nowait)
    client.add_event_handler("message", client.inbox.put_nowait)
    await client.get_roster()
    client.send_presence(ppriority=priority)
    await barrier(client)
    await asyncio.sleep(GOSSIP)  # the other node learns of this session (flush_delay + Redis)
    return client


async def barrier(client: Any) -> None:
    await client.plugin["xep_0199"].ping(jid="localhost", timeout=5)


async def wait_for(client: Any, match: Any, timeout: float = 5) -> Any:
    async def look() -> Any:
        while True:
            stanza = await client.inbox.get()
            if match(stanza):
                return stanza

    return await asyncio.wait_for(look(), timeout)


def body(text: str) -> Any:
    return lambda s: s.name == "message" and s["body"] == text


def presence(frm: str, type_: str | None = None) -> Any:
    def match(s: Any) -> bool:
        shown = s["from"].full if "/" in frm else s["from"].bare
        return s.name == "presence" and s.xml.get("type") == type_ and shown == frm

    return match


async def nothing(client: Any, match: Any, wait: float = 1.0) -> bool:
    try:
        await wait_for(client, match, wait)
    except TimeoutError:
        return True
    return False


async def befriend(a: Any, b: Any) -> None:
    for asker, approver in ((a, b), (b, a)):
        asker.send_presence(pto=approver.boundjid.bare, ptype="subscribe")
        await barrier(asker)
        await wait_for(approver, presence(asker.boundjid.bare, "subscribe"))
        approver.send_presence(pto=asker.boundjid.bare, ptype="subscribed")
        await barrier(approver)
