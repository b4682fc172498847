"""Admin verbs on a cluster (xmppd/cluster_admin.py): asked on one node, they act on every
node. Two real nodes, the real CLI over each node's admin socket, slixmpp clients."""

from __future__ import annotations

import asyncio

from support import run
from support_cluster import login, users


def test_status_sessions_and_kick_act_on_every_node(nodes) -> None:
    n1, n2 = nodes
    alice, bob = users(n1, "alice", "bob")

    async def scenario() -> None:
        ca = await login(n1, alice, "desk")
        cb = await login(n2, bob, "phone")
        cb2 = await login(n2, bob, "tablet")
        await asyncio.sleep(0.5)  # both nodes up in each other's view

        status = await asyncio.to_thread(n1.cli, "status")
        assert status.returncode == 0, status.stderr
        assert "cluster node: n1 (this node) up, sessions: 1" in status.stdout, status.stdout
        assert "cluster node: n2 up, sessions: 2" in status.stdout, status.stdout

        listed = await asyncio.to_thread(n1.cli, "sessions")
        assert listed.returncode == 0, listed.stderr
        rows = {line.split("\t")[0]: line.split("\t")[-1] for line in listed.stdout.splitlines()}
        assert rows == {
            f"{alice}@localhost/desk": "n1",
            f"{bob}@localhost/phone": "n2",
            f"{bob}@localhost/tablet": "n2",
        }, listed.stdout
        one = await asyncio.to_thread(n2.cli, "sessions", f"{alice}@localhost")
        assert one.stdout.startswith(f"{alice}@localhost/desk\t"), one.stdout

        # Kick one resource on the other node, then the whole account.
        kicked = await asyncio.to_thread(n1.cli, "kick", f"{bob}@localhost/phone", "--text", "bye")
        assert kicked.returncode == 0, kicked.stderr
        assert "ended 1 session(s)" in kicked.stdout
        await asyncio.wait_for(cb.disconnected_event.wait(), 5)
        assert cb.stream_errors == ["policy-violation"]
        assert not cb2.disconnected_event.is_set()
        kicked = await asyncio.to_thread(n1.cli, "kick", f"{bob}@localhost")
        assert "ended 1 session(s)" in kicked.stdout, kicked.stdout + kicked.stderr
        await asyncio.wait_for(cb2.disconnected_event.wait(), 5)
        # Nobody left anywhere: a clear refusal.
        again = await asyncio.to_thread(n1.cli, "kick", f"{bob}@localhost")
        assert again.returncode != 0 and "has no session" in again.stderr, again.stderr
        assert not ca.disconnected_event.is_set()
        await ca.close()

    run(scenario())


def test_deluser_ends_sessions_on_every_node(nodes) -> None:
    n1, n2 = nodes
    (alice,) = users(n1, "alice")

    async def scenario() -> None:
        far = await login(n2, alice, "far")
        await asyncio.sleep(0.5)
        deleted = await asyncio.to_thread(n1.cli, "deluser", f"{alice}@localhost")
        assert deleted.returncode == 0, deleted.stderr
        assert "1 session" in deleted.stdout, deleted.stdout
        await asyncio.wait_for(far.disconnected_event.wait(), 5)
        assert far.stream_errors == ["not-authorized"]

    run(scenario())
