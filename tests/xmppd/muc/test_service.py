"""MUC service discovery, room creation, joining and leaving (XEP-0045 §6, §7.1-7.2, §7.14)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from support import run

DISCO_INFO = "http://jabber.org/protocol/disco#info"
SERVICE = "conference.localhost"


def test_service_is_listed_and_discoverable(muc) -> None:
    (alice,) = muc.users("alice")

    async def scenario() -> None:
        a = await muc.login(alice)
        items = await a.plugin["xep_0030"].get_items(jid="localhost", timeout=5)
        jids = [i[0] for i in items["disco_items"]["items"]]
        assert SERVICE in jids
        info = await a.plugin["xep_0030"].get_info(jid=SERVICE, timeout=5)
        assert ("conference", "text") in [(i[0], i[1]) for i in info["disco_info"]["identities"]]
        assert "http://jabber.org/protocol/muc" in info["disco_info"]["features"]
        await a.close()

    run(scenario())


def test_create_join_leave_with_exact_presence(muc) -> None:
    alice, bob, carol = muc.users("alice", "bob", "carol")
    room = muc.room()

    async def scenario() -> None:
        a, b, c = [await muc.login(u) for u in (alice, bob, carol)]
        got = await muc.create(a, room, "Alice")
        own = muc.self_presence(got)
        assert own["from"].full == f"{room}/Alice"
        assert muc.item(own) == {
            "affiliation": "owner",
            "role": "moderator",
            "jid": f"{alice}@localhost/r",
        }
        # Bob joins: he sees Alice first, then himself with 110; no real JIDs (semi-anonymous).
        got = await muc.join(b, room, "Bob")
        pres = muc.presences(got)
        assert [p["from"].resource for p in pres] == ["Alice", "Bob"]
        assert muc.item(pres[0]) == {"affiliation": "owner", "role": "moderator"}
        assert muc.codes(pres[0]) == set()
        assert muc.codes(pres[1]) == {"110"}
        assert muc.item(pres[1]) == {"affiliation": "none", "role": "participant"}
        assert got[-1].xml.findtext("{jabber:client}subject") == ""
        assert got[-1]["from"].bare == room
        # Alice, a moderator, sees Bob's real JID.
        seen = await muc.next(a, muc.from_nick("Bob"))
        assert muc.item(seen) == {
            "affiliation": "none",
            "role": "participant",
            "jid": f"{bob}@localhost/r",
        }
        got = await muc.join(c, room, "Carol")
        assert [p["from"].resource for p in muc.presences(got)] == ["Alice", "Bob", "Carol"]
        seen = await muc.next(b, muc.from_nick("Carol"))
        assert muc.item(seen) == {"affiliation": "none", "role": "participant"}
        await muc.next(a, muc.from_nick("Carol"))
        # Carol leaves with a status: everyone gets unavailable, role none; she gets 110.
        c.send_presence(pto=f"{room}/Carol", ptype="unavailable", pstatus="bye")
        own = await muc.next(c, muc.from_nick("Carol", "unavailable"))
        assert muc.codes(own) == {"110"}
        assert muc.item(own)["role"] == "none"
        for other in (a, b):
            gone = await muc.next(other, muc.from_nick("Carol", "unavailable"))
            assert muc.codes(gone) == set()
            assert gone["status"] == "bye"
            assert muc.item(gone)["role"] == "none"
        for client in (a, b, c):
            await client.close()

    run(scenario())


def test_room_presence_meets_the_recipients_block_list(muc) -> None:
    """Room presence skips the router (service.send_presence), not XEP-0191: an occupant JID
    Carol blocks sends her no presence when she joins, nor later; the others still do."""
    alice, bob, carol = muc.users("alice", "bob", "carol")
    room = muc.room()

    async def scenario() -> None:
        a, b, c = [await muc.login(u) for u in (alice, bob, carol)]
        await muc.create(a, room, "Alice")
        await muc.join(b, room, "Bob")
        block = ET.Element("{jabber:client}iq", type="set")
        blocklist = ET.SubElement(block, "{urn:xmpp:blocking}block")
        ET.SubElement(blocklist, "{urn:xmpp:blocking}item", jid=f"{room}/Bob")
        assert (await muc.raw_iq(c, block)).get("type") == "result"
        await muc.drain(c)  # the block push
        got = await muc.join(c, room, "Carol")
        assert [p["from"].resource for p in muc.presences(got)] == ["Alice", "Carol"]
        b.send_presence(pto=f"{room}/Bob", pstatus="away for lunch")
        await muc.next(a, muc.from_nick("Bob"))
        assert [s for s in await muc.drain(c) if s["from"].resource == "Bob"] == []
        for client in (a, b, c):
            await client.close()

    run(scenario())


def test_join_errors(muc) -> None:
    alice, bob = muc.users("alice", "bob")
    room = muc.room()

    async def scenario() -> None:
        a, b = await muc.login(alice), await muc.login(bob)
        # A locked room (created, not configured) cannot be entered by others (§10.1.1).
        got = await muc.join(a, room, "Alice")
        assert muc.codes(muc.self_presence(got)) == {"110", "201"}
        got = await muc.join(b, room, "Bob")
        assert muc.error_condition(got[-1]) == "item-not-found"
        await muc.configure(a, room)
        # Nick taken by another user: conflict.
        got = await muc.join(b, room, "Alice")
        assert muc.error_condition(got[-1]) == "conflict"
        assert got[-1]["from"].full == f"{room}/Alice"
        # No nick at all: jid-malformed (§7.2.1).
        b.send_presence(pto=room)
        error = await muc.next(b, lambda s: s.name == "presence" and s.xml.get("type") == "error")
        assert muc.error_condition(error) == "jid-malformed"
        # Groupchat from a non-occupant: not-acceptable.
        muc.groupchat(b, room, "hi")
        error = await muc.next(b, lambda s: s.name == "message")
        assert error.xml.get("type") == "error"
        assert muc.error_condition(error) == "not-acceptable"
        await a.close()
        await b.close()

    run(scenario())


def test_temporary_room_vanishes_when_empty(muc) -> None:
    (alice,) = muc.users("alice")
    room = muc.room()

    async def scenario() -> None:
        a = await muc.login(alice)
        await muc.create(a, room, "Alice")
        items = await a.plugin["xep_0030"].get_items(jid=SERVICE, timeout=5)
        assert room in [i[0] for i in items["disco_items"]["items"]]
        a.send_presence(pto=f"{room}/Alice", ptype="unavailable")
        await muc.next(a, muc.from_nick("Alice", "unavailable"))
        items = await a.plugin["xep_0030"].get_items(jid=SERVICE, timeout=5)
        assert room not in [i[0] for i in items["disco_items"]["items"]]
        # Joining again creates it anew.
        got = await muc.join(a, room, "Alice")
        assert muc.codes(muc.self_presence(got)) == {"110", "201"}
        await a.close()

    run(scenario())


def test_room_disco_info(muc) -> None:
    (alice,) = muc.users("alice")
    room = muc.room()

    async def scenario() -> None:
        a = await muc.login(alice)
        await muc.create(a, room, "Alice", roomname="Lounge", membersonly="1")
        info = await a.plugin["xep_0030"].get_info(jid=room, timeout=5)
        features = info["disco_info"]["features"]
        for var in ("muc_membersonly", "muc_temporary", "muc_semianonymous", "muc_unsecured"):
            assert var in features
        assert [i[3] for i in info["disco_info"]["identities"]] == ["Lounge"]
        form = info.xml.find(f"{{{DISCO_INFO}}}query/{{jabber:x:data}}x")
        occupants = [
            f.findtext("{jabber:x:data}value")
            for f in form
            if f.get("var") == "muc#roominfo_occupants"
        ]
        assert occupants == ["1"]
        await a.close()

    run(scenario())
