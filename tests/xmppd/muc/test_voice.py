"""Voice requests in moderated rooms (XEP-0045 §7.13) and their approval (§8.6)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from support import run

DATA = "jabber:x:data"
REQUEST = "http://jabber.org/protocol/muc#request"


def voice_form(room: str, kind: str, **fields: str) -> ET.Element:
    message = ET.Element("{jabber:client}message", to=room)
    x = ET.SubElement(message, f"{{{DATA}}}x", type=kind)
    for var, value in {"FORM_TYPE": REQUEST, **fields}.items():
        field = ET.SubElement(x, f"{{{DATA}}}field", var=var)
        ET.SubElement(field, f"{{{DATA}}}value").text = value
    return message


def form_values(message: Any) -> dict[str, str]:
    x = message.xml.find(f"{{{DATA}}}x")
    fields = x.findall(f"{{{DATA}}}field")
    return {f.get("var"): f.findtext(f"{{{DATA}}}value") for f in fields}


def is_form(stanza: Any) -> bool:
    return stanza.name == "message" and stanza.xml.find(f"{{{DATA}}}x") is not None


def send(client: Any, stanza: ET.Element) -> None:
    client.send_raw(ET.tostring(stanza, encoding="unicode"))


def test_visitor_requests_voice_and_a_moderator_grants_it(muc) -> None:
    alice, bob, carol = muc.users("alice", "bob", "carol")
    room = muc.room()

    async def scenario() -> None:
        a, b, c = [await muc.login(u) for u in (alice, bob, carol)]
        await muc.create(a, room, "Alice", moderatedroom="1")
        for client, nick in ((b, "Bob"), (c, "Carol")):
            assert muc.item(muc.self_presence(await muc.join(client, room, nick)))["role"] == (
                "visitor"
            )
        for client in (a, b, c):
            await muc.drain(client)

        # A visitor's request reaches the moderator (only) as an approval form.
        send(b, voice_form(room, "submit", **{"muc#role": "participant"}))
        approval = await muc.next(a, is_form)
        assert approval["from"].full == room
        values = form_values(approval)
        assert values["FORM_TYPE"] == REQUEST
        assert values["muc#roomnick"] == "Bob" and values["muc#jid"] == b.boundjid.full
        assert values["muc#request_allow"] == "false"
        assert not [s for s in await muc.drain(c) if is_form(s)]

        # Another visitor cannot approve it.
        answer = {**values, "muc#request_allow": "true"}
        send(c, voice_form(room, "submit", **answer))
        error = await muc.next(c, lambda s: s.name == "message")
        assert muc.error_condition(error) == "forbidden"

        # The moderator approves: Bob becomes a participant, everyone sees it, he may speak.
        send(a, voice_form(room, "submit", **answer))
        for client in (a, b, c):
            presence = await muc.next(client, muc.from_nick("Bob"))
            assert muc.item(presence)["role"] == "participant"
        muc.groupchat(b, room, "thanks")
        assert (await muc.next(c, lambda s: s.name == "message"))["body"] == "thanks"

        # Asking again with voice is refused.
        send(b, voice_form(room, "submit", **{"muc#role": "participant"}))
        error = await muc.next(b, lambda s: s.name == "message" and s["type"] == "error")
        assert muc.error_condition(error) == "not-acceptable"
        for client in (a, b, c):
            await client.close()

    run(scenario())
