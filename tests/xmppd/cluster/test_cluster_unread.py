"""`unread` events of the JSON channels across nodes (xmppd/modules/unread.py): a count
changed on one node reaches the account's JSON sessions on the other. Two real nodes, the
stock `phoenix` client (tests/phx.py) on each, a slixmpp sender."""

from __future__ import annotations

import shutil

from phx import HERE, Phx, login
from support import run
from support_cluster import login as xmpp_login
from support_cluster import users


def test_unread_counts_reach_the_sessions_on_every_node(nodes) -> None:
    assert shutil.which("node"), "node is needed for the JSON channel client"
    assert (HERE / "node_modules" / "phoenix").is_dir(), "run `npm ci` in tests/web"
    n1, n2 = nodes
    alice, bob = users(n1, "alice", "bob")
    me, peer = f"{alice}@localhost", f"{bob}@localhost"
    topic = f"user:{me}"

    async def scenario() -> None:
        near = await Phx.open(n1, login(n1, alice, "pw"))
        far = await Phx.open(n2, login(n2, alice, "pw"))
        try:
            await near.join(topic)
            await far.join(topic)
            sender = await xmpp_login(n1, bob, "desk")
            for n in range(3):
                sender.send_message(mto=me, mbody=f"m{n}", mtype="chat")
            for tab in (near, far):
                await tab.event(
                    topic, "unread", lambda u: u == {"with": peer, "count": 3, "read": None}
                )
            # Read on node 1: the tab on node 2 hears it (exactly the same count and mark).
            last = await near.event(topic, "new_msg", lambda m: m["body"] == "m2")
            answer = await near.push(topic, "displayed", {"with": peer, "id": last["id"]})
            assert answer == {"unread": 0}
            await far.event(
                topic, "unread", lambda u: u == {"with": peer, "count": 0, "read": last["id"]}
            )
            assert (await far.push(topic, "unread"))["unread"] == {}
            # Counted once, whichever nodes hold the account's sessions.
            assert max(u["count"] for u in far.events(topic, "unread")) == 3
            await sender.close()
        finally:
            await near.close()
            await far.close()

    run(scenario())
