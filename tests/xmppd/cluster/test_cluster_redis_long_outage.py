"""Redis stopped for 30 s under two nodes (a private redis-server) and started again.

Longer than every retry and down period: each node serves its own users throughout,
nothing crosses with a false success, and afterwards the cluster heals with no duplicate
or phantom session (a phantom resource of bob would get a copy of a message to his bare
JID, or make `xmppd check` count it).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

from support import ServerProcess, run
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

OUTAGE = 30.0


def test_redis_stopped_30s_then_healed_without_phantoms(
    tmp_path: Path, pg_url: str, prefix: str, redis: PrivateRedis
) -> None:
    n1, n2 = (make_node(tmp_path, pg_url, n, prefix, redis.url) for n in ("n1", "n2"))
    try:
        n1.start()
        n2.start()
        alice, bob, carol = users(n1, "alice", "bob", "carol")

        async def scenario() -> None:
            ca = await login(n1, alice, "desk")
            cc = await login(n1, carol, "c")
            cb = await login(n2, bob, "phone")
            await befriend(ca, cb)
            redis.stop()
            stopped = time.monotonic()
            await _next(ca, presence(f"{bob}@localhost/phone", "unavailable"), DOWN + 5)
            await _next(cb, presence(f"{alice}@localhost/desk", "unavailable"), DOWN + 5)
            n = 0
            while time.monotonic() - stopped < OUTAGE:  # local service all along
                ca.send_message(mto=f"{carol}@localhost/c", mbody=f"local {n}", mtype="chat")
                await _next(cc, body(f"local {n}"), 5)
                n += 1
                await asyncio.sleep(1)
            # Across: never delivered live, never lost: it waits in offline storage.
            ca.send_message(mto=f"{bob}@localhost", mbody="in the outage", mtype="chat")
            await barrier(ca)
            assert not await _seen(cb, body("in the outage"), 2)
            redis.start()
            await _next(ca, presence(f"{bob}@localhost/phone"), 20)
            await _next(cb, presence(f"{alice}@localhost/desk"), 20)
            await asyncio.sleep(1)  # a few gossip rounds
            # No phantom: one copy to bob's bare JID, none to anybody else.
            ca.send_message(mto=f"{bob}@localhost", mbody="once", mtype="chat")
            await _next(cb, body("once"))
            assert not await _seen(cb, body("once"), 1.5)
            await cb.close()
            cb = await login(n1, bob, "phone")
            await _next(cb, body("in the outage"))
            for client in (ca, cb, cc):
                await client.close()

        run(scenario())
        assert n1.alive() and n2.alive()
        # Every session closed: both nodes up, and neither counts a session left behind.
        deadline = time.monotonic() + 10
        while (seen := _sessions_seen(n1)) != {"n1": 0, "n2": 0}:
            assert time.monotonic() < deadline, seen
            time.sleep(0.5)
    finally:
        n1.stop()
        n2.stop()


def _sessions_seen(node: ServerProcess) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-m", "xmppd", "check", "-c", str(node.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return {m[1]: int(m[2]) for m in re.finditer(r"cluster node: (\S+) up .*sessions: (\d+)", out)}


async def _next(client, match, timeout: float = 10):
    while True:
        stanza = await asyncio.wait_for(client.inbox.get(), timeout)
        if match(stanza):
            return stanza


async def _seen(client, match, wait: float) -> bool:
    try:
        await _next(client, match, wait)
    except TimeoutError:
        return False
    return True
