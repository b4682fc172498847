"""Configurable limits of the MUC service: each breach gets a stanza error, the service and the
other rooms carry on."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError
from support import run

STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
SERVER_CONFIG = """
[modules.muc]
max_rooms_per_user = 2
max_occupants = 3
max_history = 5
max_affiliations = 2
message_rate = 0.5
message_burst = 3
"""


def test_rooms_per_user(muc) -> None:
    (alice,) = muc.users("alice")

    async def scenario() -> None:
        a = await muc.login(alice)
        first, second, third = muc.room(), muc.room(), muc.room()
        await muc.create(a, first, "A")
        await muc.create(a, second, "A")
        got = await muc.join(a, third, "A")
        assert muc.error_condition(got[-1]) == "policy-violation"
        # Destroying one frees a place.
        a.send_presence(pto=f"{second}/A", ptype="unavailable")
        await muc.next(a, muc.from_nick("A", "unavailable"))
        got = await muc.join(a, third, "A")
        assert muc.codes(muc.self_presence(got)) == {"110", "201"}
        await a.close()

    run(scenario())


def test_occupants_per_room(muc) -> None:
    users = muc.users("u", "u", "u", "u", "u")
    room = muc.room()

    async def scenario() -> None:
        clients = [await muc.login(u) for u in users]
        await muc.create(clients[0], room, "n0", maxusers="3")
        with pytest.raises(IqError) as info:
            await muc.configure(clients[0], room, maxusers="4")
        assert info.value.condition == "not-acceptable"
        for n in (1, 2):
            await muc.join(clients[n], room, f"n{n}")
        got = await muc.join(clients[3], room, "n3")
        assert muc.error_condition(got[-1]) == "service-unavailable"
        # The owner may still bring a second account in as admin, beyond the limit.
        await muc.admin(clients[0], room, jid=clients[4].boundjid.bare, affiliation="admin")
        got = await muc.join(clients[4], room, "n4")
        assert muc.item(muc.self_presence(got))["affiliation"] == "admin"
        for client in clients:
            await client.close()

    run(scenario())


def test_message_rate_and_history_size(muc) -> None:
    alice, bob = muc.users("alice", "bob")
    room = muc.room()

    async def scenario() -> None:
        a, b = await muc.login(alice), await muc.login(bob)
        await muc.create(a, room, "Alice")
        with pytest.raises(IqError) as info:
            await muc.configure(a, room, **{"muc#maxhistoryfetch": "6"})
        assert info.value.condition == "not-acceptable"
        for n in range(4):
            muc.groupchat(a, room, f"m{n}")
        got = [await muc.next(a, lambda s: s.name == "message") for _ in range(4)]
        assert [m["body"] for m in got[:3]] == ["m0", "m1", "m2"]
        assert got[3].xml.get("type") == "error"
        assert muc.error_condition(got[3]) == "resource-constraint"
        # The room still works for others.
        await muc.join(b, room, "Bob")
        muc.groupchat(b, room, "still here")
        msg = await muc.next(a, lambda s: s.name == "message" and s["body"] == "still here")
        assert msg["from"].resource == "Bob"
        await a.close()
        await b.close()

    run(scenario())


def test_affiliations_per_room(muc) -> None:
    (alice,) = muc.users("alice")
    room = muc.room()

    async def scenario() -> None:
        a = await muc.login(alice)
        await muc.create(a, room, "Alice")  # the owner is the first affiliation
        await muc.admin(a, room, jid="one@localhost", affiliation="member")
        iq = ET.Element("{jabber:client}iq", type="set", to=room)
        query = ET.SubElement(iq, "{http://jabber.org/protocol/muc#admin}query")
        ET.SubElement(query, "{http://jabber.org/protocol/muc#admin}item", jid="two@localhost")
        query[0].set("affiliation", "outcast")
        answer = await muc.raw_iq(a, iq)
        assert answer.get("type") == "error"
        assert answer.find(f"{{jabber:client}}error/{{{STANZAS}}}policy-violation") is not None
        # Changing an existing affiliation is no new entry; removing one frees a place.
        await muc.admin(a, room, jid="one@localhost", affiliation="outcast")
        await muc.admin(a, room, jid="one@localhost", affiliation="none")
        await muc.admin(a, room, jid="two@localhost", affiliation="member")
        await a.close()

    run(scenario())
