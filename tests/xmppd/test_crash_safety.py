"""Crash safety: under a steady message load the server is killed with SIGKILL; after a restart
on the same data every message a sender saw acknowledged (XEP-0198 `<a h/>`) is present exactly
once: in the offline storage of an offline recipient (delivered at its next login) and in the
MAM archives of both ends. Messages sent but not acknowledged may be lost, never duplicated.

Runs on SQLite and on PostgreSQL (a database created for the test and dropped after it;
XMPPD_TEST_PG_ADMIN names the server, XMPPD_TEST_NO_POSTGRES=1 skips that half).
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import slixmpp
from psycopg import sql
from support import Client, ServerProcess, run

ADMIN_DSN = os.environ.get(
    "XMPPD_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres?connect_timeout=5"
)
SENDERS = ("s0", "s1", "s2")
OFFLINE = ("off0", "off1")  # never online before the crash: messages go to offline storage
ONLINE = ("on0",)  # online during the load: messages are delivered and archived
RECIPIENTS = OFFLINE + ONLINE
PER_SENDER = 300  # at most; keeps each offline queue far below the default quota (1000)
KILL_AFTER_ACKS = 40  # per sender: the load is well under way
IN_FLIGHT = 20  # per sender: messages sent and not yet acknowledged, at most
BODY = re.compile(r"crash (s\d) (\d+)$")

Key = tuple[str, int]  # (sender, message number)


def password(user: str) -> str:
    return f"pw-{user}"


def recipient_of(n: int) -> str:
    return RECIPIENTS[n % len(RECIPIENTS)]


@pytest.fixture(params=["sqlite", "postgres"])
def storage_config(request: pytest.FixtureRequest) -> Iterator[str]:
    """The `[storage]` table for the server: SQLite in its data dir, or a fresh PG database."""
    if request.param == "sqlite":
        yield ""
        return
    if os.environ.get("XMPPD_TEST_NO_POSTGRES") == "1":
        pytest.skip("XMPPD_TEST_NO_POSTGRES=1")
    name = f"xmppd_crash_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        info = admin.info
        dsn = f"postgresql://{quote(info.user)}@{info.host}:{info.port}/{name}"
    try:
        yield f'[storage]\ndriver = "postgres"\ndsn = "{dsn}"\n'
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


async def login(
    server: ServerProcess, user: str, *, sm: bool = False, presence: bool = False
) -> Client:
    """A logged-in client; with `sm`, stream management is enabled before this returns."""
    client = Client(f"{user}@localhost/crash", password(user), "SCRAM-SHA-256", server.ca_file)
    client.enable_direct_tls = False
    client.enable_starttls = True
    client.register_plugin("xep_0059")
    client.register_plugin("xep_0313")
    enabled = asyncio.get_running_loop().create_future()
    if sm:
        # window=1: an <r/> after every stanza, so acknowledgements follow the load closely.
        client.register_plugin("xep_0198", pconfig={"window": 1, "allow_resume": False})
        client.add_event_handler("sm_enabled", lambda _e: enabled.done() or enabled.set_result(1))
    client.connect("127.0.0.1", server.port)
    try:
        await asyncio.wait_for(client.started, 10)
        if sm:
            await asyncio.wait_for(enabled, 10)
    except BaseException:
        client.abort()
        raise
    if presence:
        client.send_presence()
    return client


def parse_body(body: str) -> Key | None:
    match = BODY.match(body or "")
    return (match[1], int(match[2])) if match else None


class Sender:
    """Sends numbered chat messages steadily and records which ones the server acknowledged."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name
        self.sent = 0
        self.acked: set[int] = set()
        self.strays: list[str] = []  # acknowledged messages that are not ours (must stay empty)
        self.enough = asyncio.Event()
        self.progress = asyncio.Event()
        client.add_event_handler("stanza_acked", self.on_acked)

    def on_acked(self, stanza: object) -> None:
        if isinstance(stanza, slixmpp.Message):
            key = parse_body(stanza["body"])
            if key is None or key[0] != self.name:
                self.strays.append(str(stanza))
                return
            self.acked.add(key[1])
            self.progress.set()
            if len(self.acked) >= KILL_AFTER_ACKS:
                self.enough.set()

    async def run(self) -> None:
        for n in range(PER_SENDER):
            while n - len(self.acked) >= IN_FLIGHT:  # a steady load, not one burst
                self.progress.clear()
                await self.progress.wait()
            self.client.send_message(
                mto=f"{recipient_of(n)}@localhost", mbody=f"crash {self.name} {n}", mtype="chat"
            )
            self.sent = n + 1
            await asyncio.sleep(0.004)


async def offline_delivery(server: ServerProcess, user: str) -> Counter[Key]:
    """Log in with presence and collect what offline storage hands over, up to a marker sent
    to our own account after the presence (the server delivers offline messages first)."""
    client = await login(server, user, presence=True)
    try:
        client.send_message(mto=f"{user}@localhost", mbody="marker", mtype="chat")
        got: Counter[Key] = Counter()
        while True:
            msg = await client.next_message(timeout=10)
            if msg["body"] == "marker":
                return got
            key = parse_body(msg["body"])
            assert key is not None, f"unexpected message: {msg}"
            assert msg["to"].bare == f"{user}@localhost"
            got[key] += 1
    finally:
        await client.close()


async def archive(server: ServerProcess, user: str) -> Counter[Key]:
    """Every numbered message in the user's MAM archive, counted."""
    client = await login(server, user)
    try:
        got: Counter[Key] = Counter()
        async for result in client.plugin["xep_0313"].iterate(rsm={"max": 250}):
            key = parse_body(result["mam_result"]["forwarded"]["stanza"]["body"])
            if key is not None:
                got[key] += 1
        return got
    finally:
        await client.close()


async def load_and_crash(server: ServerProcess) -> tuple[dict[str, set[int]], int]:
    """Run the load, SIGKILL the server mid-way; the acknowledged numbers per sender."""
    online = [await login(server, user, presence=True) for user in ONLINE]
    senders = [Sender(await login(server, name, sm=True), name) for name in SENDERS]
    tasks = [asyncio.create_task(s.run()) for s in senders]
    try:
        waits = [s.enough.wait() for s in senders]
        await asyncio.wait_for(asyncio.gather(*waits), 30)
        assert not any(t.done() for t in tasks), "the load ended before the crash"
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait()
        # What the senders saw is frozen from here: acks can no longer arrive.
        acked = {s.name: set(s.acked) for s in senders}
        assert not any(s.strays for s in senders), [s.strays for s in senders]
        in_flight = sum(s.sent for s in senders) - sum(len(a) for a in acked.values())
    finally:
        for task in tasks:
            task.cancel()
        for client in online + [s.client for s in senders]:
            client.abort()
    return acked, in_flight


def test_acknowledged_messages_survive_sigkill(tmp_path: Path, storage_config: str) -> None:
    server = ServerProcess(tmp_path, extra_config=storage_config)
    for user in SENDERS + RECIPIENTS:
        server.add_user(user, password(user))
    server.start()
    try:
        acked, in_flight = run(load_and_crash(server))
        assert in_flight > 0, "every sent message was acknowledged: the kill was not mid-load"
        server.start()  # same config, same data

        async def check() -> None:
            delivered = {user: await offline_delivery(server, user) for user in OFFLINE}
            archives = {user: await archive(server, user) for user in SENDERS + RECIPIENTS}
            for user, counts in [*delivered.items(), *archives.items()]:
                dups = {key: c for key, c in counts.items() if c > 1}
                assert not dups, f"duplicated for {user}: {dups}"
            for sender, numbers in acked.items():
                for n in sorted(numbers):
                    key, to = (sender, n), recipient_of(n)
                    assert archives[sender][key] == 1, f"{key} missing in {sender}'s archive"
                    assert archives[to][key] == 1, f"{key} missing in {to}'s archive"
                    if to in OFFLINE:
                        assert delivered[to][key] == 1, f"{key} not delivered offline to {to}"

        run(check())
    finally:
        server.stop()
