"""Malformed or misdirected MUC requests get the standard stanza error and cost nothing else."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError
from support import run

ADMIN = "http://jabber.org/protocol/muc#admin"
OWNER = "http://jabber.org/protocol/muc#owner"
USER = "http://jabber.org/protocol/muc#user"
DATA = "jabber:x:data"


async def refused(client, to: str, type_: str, payload: ET.Element) -> str:
    iq = client.make_iq_set(ito=to) if type_ == "set" else client.make_iq_get(ito=to)
    iq.xml.append(payload)
    with pytest.raises(IqError) as info:
        await iq.send(timeout=5)
    return info.value.condition


def admin_query(**attrs: str) -> ET.Element:
    query = ET.Element(f"{{{ADMIN}}}query")
    if attrs:
        ET.SubElement(query, f"{{{ADMIN}}}item", **attrs)
    return query


def test_bad_requests_are_refused_and_the_room_goes_on(muc) -> None:
    alice, bob = muc.users("alice", "bob")
    room = muc.room()

    async def scenario() -> None:
        a, b = await muc.login(alice), await muc.login(bob)
        await muc.create(a, room, "Alice")
        assert await refused(a, room, "set", admin_query()) == "bad-request"
        assert await refused(a, room, "set", admin_query(nick="Alice")) == "bad-request"
        assert await refused(a, room, "set", admin_query(nick="Alice", role="king")) == (
            "bad-request"
        )
        assert await refused(a, room, "set", admin_query(jid="@@", affiliation="member")) == (
            "jid-malformed"
        )
        assert await refused(a, room, "get", admin_query(affiliation="pope")) == "bad-request"
        assert await refused(a, room, "set", ET.Element(f"{{{OWNER}}}query")) == "bad-request"
        owner = ET.Element(f"{{{OWNER}}}query")
        form = ET.SubElement(owner, f"{{{DATA}}}x", type="submit")
        for _ in range(2):
            ET.SubElement(form, f"{{{DATA}}}field", var="muc#roomconfig_roomname")
        assert await refused(a, room, "set", owner) == "not-acceptable"
        assert await refused(a, room, "get", ET.Element("{urn:x:unknown}q")) == (
            "service-unavailable"
        )
        missing = f"nothere@{room.split('@')[1]}"
        assert await refused(a, missing, "get", admin_query(affiliation="member")) == (
            "item-not-found"
        )
        muc.groupchat(a, missing, "hello?")
        error = await muc.next(a, lambda s: s.name == "message")
        assert muc.error_condition(error) == "item-not-found"
        # An invitation to a malformed address.
        msg = ET.Element("{jabber:client}message", to=room)
        x = ET.SubElement(msg, f"{{{USER}}}x")
        ET.SubElement(x, f"{{{USER}}}invite", to="@bad@")
        a.send_raw(ET.tostring(msg, encoding="unicode"))
        error = await muc.next(a, lambda s: s.name == "message")
        assert muc.error_condition(error) == "jid-malformed"
        # A join with nonsense history limits still works (they are ignored).
        got = await muc.join(b, room, "Bob", history={"maxstanzas": "lots", "since": "never"})
        assert muc.codes(muc.self_presence(got)) == {"110"}
        muc.groupchat(b, room, "all fine")
        msg = await muc.next(a, lambda s: s.name == "message" and s["body"] == "all fine")
        assert msg["from"].resource == "Bob"
        assert muc.server.alive()
        await a.close()
        await b.close()

    run(scenario())
