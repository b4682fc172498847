"""A node killed with SIGKILL: its users go unavailable elsewhere, messages to them are stored."""

from __future__ import annotations

import asyncio
import signal
import time

from support import run
from support_cluster import DOWN, HEARTBEAT, barrier, befriend, body, login, presence, users


def test_killed_node_users_go_unavailable_and_messages_go_offline(nodes) -> None:
    n1, n2 = nodes
    alice, bob, carol = users(n1, "alice", "bob", "carol")

    async def scenario() -> None:
        ca = await login(n1, alice, "desk")
        cb = await login(n2, bob, "phone")
        await befriend(ca, cb)
        # Carol is on the node that dies: she is not bob's contact, and nobody else is hers.
        cc = await login(n2, carol, "c")
        assert n2.proc is not None
        killed = time.monotonic()
        n2.proc.send_signal(signal.SIGKILL)
        n2.proc.wait()
        # Alice, on the surviving node, sees bob go within the down period (plus one
        # heartbeat to notice and the time to tell her).
        gone = await asyncio.wait_for(
            _next(ca, presence(f"{bob}@localhost/phone", "unavailable")), DOWN + 3
        )
        took = time.monotonic() - killed
        assert DOWN - HEARTBEAT <= took <= DOWN + 3, took  # slack for a loaded machine
        assert gone["from"].full == f"{bob}@localhost/phone"
        # Messages to bob now go to offline storage, to the bare and to the full JID.
        ca.send_message(mto=f"{bob}@localhost", mbody="while you were out", mtype="chat")
        ca.send_message(mto=f"{bob}@localhost/phone", mbody="and this", mtype="chat")
        await barrier(ca)
        # Alice keeps chatting with someone on her own node meanwhile.
        cc2 = await login(n1, carol, "c2")
        ca.send_message(mto=f"{carol}@localhost/c2", mbody="still here", mtype="chat")
        await _next(cc2, body("still here"))
        # Bob reconnects to the surviving node and gets both.
        cb = await login(n1, bob, "phone")
        await _next(cb, body("while you were out"))
        await _next(cb, body("and this"))
        for c in (ca, cb, cc2):
            await c.close()
        cc.abort()

    run(scenario())


async def _next(client, match, timeout: float = 10):
    while True:
        stanza = await asyncio.wait_for(client.inbox.get(), timeout)
        if match(stanza):
            return stanza


def test_messages_sent_before_the_death_is_noticed_are_not_lost(nodes) -> None:
    """Between the kill and the down period the cluster still lists bob on the dead node.
    What is routed there meanwhile is never acknowledged, so it is routed again until the
    node is declared down, and then stored offline."""
    n1, n2 = nodes
    alice, bob = users(n1, "alice", "bob")

    async def scenario() -> None:
        ca = await login(n1, alice, "desk")
        cb = await login(n2, bob, "phone")
        assert n2.proc is not None
        n2.proc.send_signal(signal.SIGKILL)
        n2.proc.wait()
        ca.send_message(mto=f"{bob}@localhost/phone", mbody="into the void 1", mtype="chat")
        ca.send_message(mto=f"{bob}@localhost", mbody="into the void 2", mtype="chat")
        await barrier(ca)
        await asyncio.sleep(DOWN + 2)  # declared down; the retries found nobody: offline
        cb = await login(n1, bob, "phone")
        await _next(cb, body("into the void 1"))
        await _next(cb, body("into the void 2"))
        for c in (ca, cb):
            await c.close()

    run(scenario())
