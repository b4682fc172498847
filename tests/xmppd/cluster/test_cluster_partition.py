"""A network partition between two nodes, then healed: presence converges on both sides.

n2 reaches the (real, shared) Redis through a `Proxy` the test cuts: n1 keeps Redis, n2 loses
it, so each node stops hearing the other while both keep serving their own users: n2's TCP
connections to Redis drop and new ones are refused. test_cluster_netns.py makes the silent
kind of partition (packets dropped on a veth link set down between network namespaces).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import run
from support_cluster import DOWN, barrier, befriend, body, login, make_node, presence, users
from support_proxy import Proxy


@pytest.fixture
def redis_link() -> Iterator[Proxy]:
    proxy = Proxy("127.0.0.1", 6379)
    yield proxy
    proxy.close()


def test_partition_then_heal_presence_converges(
    tmp_path: Path, pg_url: str, prefix: str, redis_link: Proxy
) -> None:
    n1 = make_node(tmp_path, pg_url, "n1", prefix)
    n2 = make_node(tmp_path, pg_url, "n2", prefix, f"redis://127.0.0.1:{redis_link.port}/0")
    try:
        n1.start()
        n2.start()
        alice, bob, carol, dave = users(n1, "alice", "bob", "carol", "dave")

        async def scenario() -> None:
            ca = await login(n1, alice, "desk")
            cc = await login(n1, carol, "c")
            cb = await login(n2, bob, "phone")
            cd = await login(n2, dave, "d")
            await befriend(ca, cb)
            await befriend(cc, cd)
            redis_link.cut()
            # Each side sees the other side's users go, within the down period.
            await _next(ca, presence(f"{bob}@localhost/phone", "unavailable"), DOWN + 5)
            await _next(cd, presence(f"{carol}@localhost/c", "unavailable"), DOWN + 5)
            # Each side keeps serving its own users.
            ca.send_message(mto=f"{carol}@localhost/c", mbody="n1 side", mtype="chat")
            await _next(cc, body("n1 side"))
            cb.send_message(mto=f"{dave}@localhost/d", mbody="n2 side", mtype="chat")
            await _next(cd, body("n2 side"))
            # Across the cut: stored offline on both sides (PostgreSQL is reachable).
            ca.send_message(mto=f"{bob}@localhost", mbody="across 1", mtype="chat")
            cb.send_message(mto=f"{alice}@localhost", mbody="across 2", mtype="chat")
            await barrier(ca)
            await barrier(cb)
            await asyncio.sleep(1)
            redis_link.restore()
            # Healed: both sides see the others available again, by themselves.
            await _next(ca, presence(f"{bob}@localhost/phone"), 20)
            await _next(cd, presence(f"{carol}@localhost/c"), 20)
            await _next(cb, presence(f"{alice}@localhost/desk"), 20)
            # Live traffic crosses again, once.
            ca.send_message(mto=f"{bob}@localhost/phone", mbody="healed", mtype="chat")
            await _next(cb, body("healed"))
            cb.send_message(mto=f"{alice}@localhost/desk", mbody="healed too", mtype="chat")
            await _next(ca, body("healed too"))
            # Nothing was lost across the cut: each waited offline for the next login.
            for client in (ca, cb):
                await client.close()
            ca = await login(n2, alice, "desk")  # the other side this time
            cb = await login(n1, bob, "phone")
            await _next(ca, body("across 2"))
            await _next(cb, body("across 1"))
            for client in (ca, cb, cc, cd):
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
