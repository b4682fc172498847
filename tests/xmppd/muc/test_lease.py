"""Room leases and fencing (xmppd/muc/lease.py) on a real PostgreSQL: an owner that lost its
lease writes nothing, however late it wakes up."""

from __future__ import annotations

import trio
from pgtest import fresh_database

from xmppd.muc.lease import Fenced, FencedStores, Leases
from xmppd.storage.postgres import PostgresDatabase

ROOM = "lobby@conference.localhost"


def test_the_old_owner_cannot_write_after_a_takeover() -> None:
    with fresh_database("xmppd_lease") as url:
        trio.run(_scenario, url)


async def _scenario(url: str) -> None:
    db = await PostgresDatabase.open(url)
    try:
        old, new = Leases(db, "n1", 1.0), Leases(db, "n2", 1.0)
        await old.prepare()
        await new.prepare()
        first = await old.take(ROOM)
        assert (first.owner, first.token) == ("n1", 1)
        assert (await new.take(ROOM)).owner == "n1"  # held: nobody else gets it
        assert await old.renew({ROOM: 1}) == {ROOM}

        await trio.sleep(1.2)  # n1 stalls past its lease...
        second = await new.take(ROOM)
        assert (second.owner, second.token) == ("n2", 2)  # ...and n2 takes the room over

        tokens = {"n1": 1, "n2": 2}
        stores = {
            node: FencedStores(
                db.for_host("localhost"),
                "muc_rooms",
                "muc",
                "conference.localhost",
                lambda room, leases=leases, node=node: leases.fenced(room, tokens[node]),
            )
            for node, leases in (("n1", old), ("n2", new))
        }
        # n1 wakes up and tries to write under its old token: refused, nothing written.
        for write in (
            stores["n1"].archive.append(ROOM, with_jid=ROOM, stanza_xml="<m/>", stanza_id="a"),
            stores["n1"].keyval.set("lobby", {"config": {"title": "stale"}}),
            stores["n1"].archive.delete_owner(ROOM),
        ):
            try:
                await write
            except Fenced:
                pass
            else:
                raise AssertionError("a fenced write went through")
        assert await old.renew({ROOM: 1}) == set()  # and learns it lost the room
        # The new owner writes.
        await stores["n2"].archive.append(ROOM, with_jid=ROOM, stanza_xml="<m/>", stanza_id="b")
        await stores["n2"].keyval.set("lobby", {"config": {"title": "fresh"}})
        page = await stores["n2"].archive.query(ROOM, limit=10)
        assert [item.id for item in page.items] == ["b"]
        assert await stores["n1"].keyval.get("lobby") == {"config": {"title": "fresh"}}
        # A node restarted under the same name gives up what its previous run held.
        await Leases(db, "n2", 1.0).prepare()
        third = await old.take(ROOM)
        assert (third.owner, third.token) == ("n1", 3)
        # A lease let go is taken again under a greater token, never an old one.
        await old.release(ROOM, 3)
        assert (await new.take(ROOM)).token == 4
    finally:
        await db.close()
