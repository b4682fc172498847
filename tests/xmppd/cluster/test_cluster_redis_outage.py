"""Redis stopped and started again under two nodes (a private redis-server, not the shared one)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from support import run
from support_cluster import (
    DOWN,
    PrivateRedis,
    barrier,
    befriend,
    body,
    login,
    make_node,
    presence,
    users,
)


def test_redis_outage_local_service_goes_on_and_the_cluster_heals(
    tmp_path: Path, pg_url: str, prefix: str, redis: PrivateRedis
) -> None:
    n1, n2 = (make_node(tmp_path, pg_url, n, prefix, redis.url) for n in ("n1", "n2"))
    try:
        n1.start()
        n2.start()
        alice, bob, carol = users(n1, "alice", "bob", "carol")

        async def scenario() -> None:
            ca = await login(n1, alice, "desk")
            cb = await login(n2, bob, "phone")
            cc = await login(n1, carol, "c")
            await befriend(ca, cb)
            redis.stop()
            # Local users are served as before.
            ca.send_message(mto=f"{carol}@localhost/c", mbody="local", mtype="chat")
            await _next(cc, body("local"))
            # Cross-node: never acknowledged, retried until bob's node is declared down,
            # then stored offline. Alice is told bob is unavailable meanwhile.
            ca.send_message(mto=f"{bob}@localhost", mbody="during the outage", mtype="chat")
            await barrier(ca)
            await _next(ca, presence(f"{bob}@localhost/phone", "unavailable"), DOWN + 5)
            await asyncio.sleep(2)  # the retries after the down period went to storage
            redis.start()
            # Healed: the nodes hear each other again and alice sees bob available again
            # without anyone doing anything.
            await _next(ca, presence(f"{bob}@localhost/phone"), 20)
            ca.send_message(mto=f"{bob}@localhost/phone", mbody="after", mtype="chat")
            await _next(cb, body("after"))
            # The message of the outage waited in offline storage: bob gets it at his next
            # login, not twice.
            await cb.close()
            cb = await login(n1, bob, "phone")
            await _next(cb, body("during the outage"))
            ca.send_message(mto=f"{bob}@localhost/phone", mbody="marker", mtype="chat")
            seen = await _collect_until(cb, body("marker"))
            assert not [s for s in seen if s.name == "message" and s["body"] == "during the outage"]
            for c in (ca, cb, cc):
                await c.close()

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


async def _collect_until(client, match, timeout: float = 10) -> list:
    seen = []
    while True:
        stanza = await asyncio.wait_for(client.inbox.get(), timeout)
        if match(stanza):
            return seen
        seen.append(stanza)
