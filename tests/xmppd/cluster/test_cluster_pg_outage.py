"""PostgreSQL unreachable under two nodes (through a `Proxy` the test cuts), then back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from support import run
from support_cluster import barrier, befriend, body, login, make_node, users
from support_proxy import Proxy


@pytest.fixture
def pg_link(pg_url: str) -> Iterator[tuple[Proxy, str]]:
    parts = urlsplit(pg_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    yield proxy, parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
    proxy.close()


def test_postgresql_outage_errors_no_false_ack_and_recovery(
    tmp_path: Path, pg_url: str, prefix: str, pg_link: tuple[Proxy, str]
) -> None:
    proxy, dsn = pg_link
    n1, n2 = (make_node(tmp_path, dsn, n, prefix) for n in ("n1", "n2"))
    try:
        n1.start()
        n2.start()
        alice, bob, carol = users(n1, "alice", "bob", "carol")

        async def scenario() -> None:
            ca = await login(n1, alice, "desk")
            cb = await login(n2, bob, "phone")
            await befriend(ca, cb)
            errors: asyncio.Queue = asyncio.Queue()
            ca.add_event_handler("message_error", errors.put_nowait)
            proxy.cut()
            # Live chat across nodes goes on: it needs Redis, not the database.
            for n in range(5):
                ca.send_message(mto=f"{bob}@localhost", mbody=f"live {n}", mtype="chat")
                await _next(cb, body(f"live {n}"), 15)
                cb.send_message(mto=f"{alice}@localhost", mbody=f"back {n}", mtype="chat")
                await _next(ca, body(f"back {n}"), 15)
            # Carol is offline everywhere: storing needs the database, so an error, no ack.
            start = time.monotonic()
            ca.send_message(mto=f"{carol}@localhost", mbody="for later", mtype="chat")
            error = await asyncio.wait_for(errors.get(), 15)
            assert time.monotonic() - start < 5
            assert error["error"]["type"] == "wait", error
            proxy.restore()
            # Recovery by itself: carol can log in again (logins need the database) and
            # a message stored now waits for her.
            deadline = time.monotonic() + 30
            while True:
                try:
                    cc = await login(n2, carol, "c")
                    break
                except Exception:
                    assert time.monotonic() < deadline, "no login after PostgreSQL came back"
                    await asyncio.sleep(0.5)
            await cc.close()
            await asyncio.sleep(1)  # n1 has heard that carol left
            # Stored by n1, delivered by n2, which counted carol's messages (none) at her
            # login above: it must look again (it used to trust that zero, so the message
            # waited until n2 restarted).
            ca.send_message(mto=f"{carol}@localhost", mbody="stored now", mtype="chat")
            await barrier(ca)
            await asyncio.sleep(0.5)
            cc = await login(n2, carol, "c")
            assert errors.empty(), errors.get_nowait()
            seen = await _collect_until(cc, body("stored now"))
            # The message refused during the outage was never stored (no false success).
            assert not [s for s in seen if s.name == "message" and s["body"] == "for later"]
            for client in (ca, cb, cc):
                await client.close()

        run(scenario())
        assert n1.alive() and n2.alive()
    finally:
        n1.stop()
        n2.stop()


async def _next(client, match, timeout: float = 10):
    while True:
        stanza = await asyncio.wait_for(client.inbox.get(), timeout)
        if match(stanza):
            return stanza


async def _collect_until(client, match, timeout: float = 15) -> list:
    seen = []
    while True:
        stanza = await asyncio.wait_for(client.inbox.get(), timeout)
        if match(stanza):
            return seen
        seen.append(stanza)
