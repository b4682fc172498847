"""1:1 routing across two real xmppd nodes (shared Redis + PostgreSQL), slixmpp clients."""

from __future__ import annotations

import asyncio

import pytest
from support import BindRefused, RawClient, run
from support_cluster import (
    barrier,
    befriend,
    body,
    login,
    make_node,
    nothing,
    presence,
    users,
    wait_for,
)


def test_chat_and_presence_across_nodes(nodes) -> None:
    n1, n2 = nodes
    alice, bob = users(n1, "alice", "bob")

    async def scenario() -> None:
        ca = await login(n1, alice, "desk")
        cb = await login(n2, bob, "phone")
        await befriend(ca, cb)
        a_full, b_full = f"{alice}@localhost/desk", f"{bob}@localhost/phone"
        # Chat both ways: to a full JID on the other node, and to a bare JID.
        ca.send_message(mto=b_full, mbody="hi bob", mtype="chat")
        got = await wait_for(cb, body("hi bob"))
        assert got["from"].full == a_full
        cb.send_message(mto=f"{alice}@localhost", mbody="hi alice", mtype="chat")
        got = await wait_for(ca, body("hi alice"))
        assert got["from"].full == b_full
        # iq across nodes (a ping to a full JID is answered by the client).
        await ca.plugin["xep_0199"].ping(jid=b_full, timeout=5)

        # Presence: bob leaves and comes back on node 2; alice on node 1 sees both.
        await cb.close()
        await wait_for(ca, presence(b_full, "unavailable"))
        cb = await login(n2, bob, "phone")
        await wait_for(ca, presence(b_full))
        # ...and bob's login probed alice (her session is on node 1): he sees her.
        await wait_for(cb, presence(a_full))
        for c in (ca, cb):
            await c.close()

    run(scenario())


def test_bare_jid_with_resources_on_both_nodes(nodes) -> None:
    n1, n2 = nodes
    alice, bob = users(n1, "alice", "bob")

    async def scenario() -> None:
        one = await login(n1, alice, "one", priority=1)
        two = await login(n2, alice, "two", priority=5)
        cb = await login(n1, bob, "b")
        await asyncio.sleep(0.6)  # a few heartbeats: every node knows both resources
        # §8.5.2.1.1: the highest priority only, wherever it is.
        cb.send_message(mto=f"{alice}@localhost", mbody="to the top", mtype="chat")
        await wait_for(two, body("to the top"))
        assert await nothing(one, body("to the top"))
        # Equal priorities: both get it, one on each node.
        one.send_presence(ppriority=5)
        await barrier(one)
        await asyncio.sleep(0.6)
        cb.send_message(mto=f"{alice}@localhost", mbody="to both", mtype="chat")
        await wait_for(one, body("to both"))
        await wait_for(two, body("to both"))
        # A negative priority never gets bare-JID messages, even as the only resource left.
        for c in (one, cb):
            await c.close()
        two.send_presence(ppriority=-1)
        await barrier(two)
        await asyncio.sleep(0.6)
        cb = await login(n1, bob, "b")
        cb.send_message(mto=f"{alice}@localhost", mbody="stored", mtype="chat")
        assert await nothing(two, body("stored"))
        await two.close()
        await asyncio.sleep(0.6)
        # Stored offline (shared storage): delivered at the next login, on the other node.
        one = await login(n1, alice, "again")
        await wait_for(one, body("stored"))
        for c in (one, cb):
            await c.close()

    run(scenario())


def test_offline_when_no_resource_anywhere(nodes) -> None:
    n1, n2 = nodes
    alice, bob = users(n1, "alice", "bob")

    async def scenario() -> None:
        ca = await login(n2, alice, "r")
        await ca.close()
        await asyncio.sleep(0.6)
        cb = await login(n1, bob, "b")
        cb.send_message(mto=f"{alice}@localhost/r", mbody="later", mtype="chat")
        await barrier(cb)
        ca = await login(n1, alice, "r")
        await wait_for(ca, body("later"))
        for c in (ca, cb):
            await c.close()

    run(scenario())


def test_one_session_per_full_jid_cluster_wide(nodes) -> None:
    n1, n2 = nodes
    (alice,) = users(n1, "alice")

    async def scenario() -> None:
        first = await login(n1, alice, "same")
        await asyncio.sleep(0.4)
        second = await login(n2, alice, "same")
        await asyncio.wait_for(first.disconnected_event.wait(), 5)
        assert first.stream_errors == ["conflict"]
        assert not second.disconnected_event.is_set()
        await barrier(second)  # the newer session lives on
        await second.close()

    run(scenario())


def test_sessions_per_account_are_counted_cluster_wide(tmp_path, pg_url, prefix) -> None:
    limits = "\n[limits]\nresources_per_account = 2\n"
    n1, n2 = (make_node(tmp_path, pg_url, n, prefix, extra=limits) for n in ("n1", "n2"))
    try:
        n1.start()
        n2.start()
        (alice,) = users(n1, "alice")

        async def scenario() -> None:
            one = await login(n1, alice, "one")
            two = await login(n2, alice, "two")
            raw = RawClient(n1)
            try:
                with pytest.raises(BindRefused) as refused:
                    raw.login(alice, "pw", resource="three")
                assert b"resource-constraint" in refused.value.args[0]
            finally:
                raw.close()
            # Rebinding an existing resource is no new session: allowed (and takes over).
            again = await login(n1, alice, "two")
            for c in (one, again):
                await c.close()
            two.abort()

        run(scenario())
    finally:
        n1.stop()
        n2.stop()
