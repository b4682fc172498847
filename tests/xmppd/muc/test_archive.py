"""Room archives (XEP-0313 §6.1.2), hiding deleted accounts' history, and occupants in a
room's disco#items (XEP-0045 §6.5)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from support import run

SERVER_CONFIG = """
[modules.muc]
hide_deleted_accounts_history = true
list_occupants = true
archive_page_size = 3
"""

SID = "urn:xmpp:sid:0"
RETRACT = "urn:xmpp:message-retract:1"
MODERATE = "urn:xmpp:message-moderate:1"
MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
USER = "http://jabber.org/protocol/muc#user"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def stanza_id(msg: Any) -> str:
    return msg.xml.find(f"{{{SID}}}stanza-id").get("id")


def is_body(text: str):  # noqa: ANN201
    return lambda s: s.name == "message" and s["body"] == text


def iq_error(answer: ET.Element) -> str | None:
    error = answer.find("{jabber:client}error")
    if error is None:
        return None
    return next(c.tag.split("}")[1] for c in error if c.tag != f"{{{STANZAS}}}text")


async def say(muc: Any, sender: Any, room: str, text: str, *others: Any) -> str:
    """A groupchat message everyone receives; its stanza-id."""
    muc.groupchat(sender, room, text)
    got = [await muc.next(c, is_body(text)) for c in (sender, *others)]
    return stanza_id(got[0])


def texts(messages: list[ET.Element]) -> list[str | None]:
    return [m.findtext("{jabber:client}body") for m in messages]


def test_room_archive_paging_and_access(muc) -> None:
    alice, bob, carol, eve = muc.users("alice", "bob", "carol", "eve")
    room, members_only = muc.room(), muc.room("club")

    async def scenario() -> None:
        a, b, c, e = [await muc.login(u) for u in (alice, bob, carol, eve)]
        a.register_plugin("xep_0313")
        await muc.create(a, room, "Alice")
        await muc.join(b, room, "Bob")
        for client in (a, b):
            await muc.drain(client)
        words = [f"w{i}" for i in range(7)]
        for word in words:
            await say(muc, b, room, word, a)

        # The room advertises its archive and retraction support.
        info = await c.plugin["xep_0030"].get_info(jid=room, timeout=5)
        features = set(info["disco_info"]["features"])
        assert {MAM, RETRACT, f"{RETRACT}#tombstone", MODERATE} <= features

        # slixmpp's MAM client walks every page (3 per page by the room's default).
        got = [
            m["mam_result"]["forwarded"]["stanza"]["body"]
            async for m in a.plugin["xep_0313"].iterate(jid=room, rsm={"max": 3})
        ]
        assert got == words
        await muc.drain(a)

        # A non-occupant reads an open room; by hand: pages, fin, no real JIDs.
        first, answer = await muc.mam(c, room, max="4")
        fin = answer.find(f"{{{MAM}}}fin")
        assert texts(first) == words[:4] and fin.get("complete") is None
        last = fin.findtext(f"{{{RSM}}}set/{{{RSM}}}last")
        rest, answer = await muc.mam(c, room, max="4", after=last)
        assert texts(rest) == words[4:]
        assert answer.find(f"{{{MAM}}}fin").get("complete") == "true"
        assert all(m.find(f"{{{USER}}}x") is None for m in first + rest)
        # The owner (a moderator) sees the real JID of the sender.
        owned, _answer = await muc.mam(a, room, max="1")
        item = owned[0].find(f"{{{USER}}}x/{{{USER}}}item")
        assert item.get("jid") == b.boundjid.full

        # Members-only: non-members and outcasts are refused.
        await muc.create(a, members_only, "Alice", membersonly="1")
        await muc.admin(a, members_only, jid=e.boundjid.bare, affiliation="outcast")
        for client in (c, e):
            _results, answer = await muc.mam(client, members_only)
            assert iq_error(answer) == "forbidden"
        await muc.admin(a, members_only, jid=c.boundjid.bare, affiliation="member")
        _results, answer = await muc.mam(c, members_only)
        assert answer.get("type") == "result"
        for client in (a, b, c, e):
            await client.close()

    run(scenario())


def test_deleted_accounts_history_is_hidden(muc) -> None:
    alice, gone, carol = muc.users("alice", "gone", "carol")
    room = muc.room()

    async def scenario() -> None:
        a, g, c = [await muc.login(u) for u in (alice, gone, carol)]
        await muc.create(a, room, "Alice")
        await muc.join(g, room, "Gone")
        await muc.drain(a)
        await say(muc, a, room, "hello", g)
        await say(muc, g, room, "my secret", a)
        await say(muc, a, room, "bye", g)
        await g.close()
        result = muc.server.cli("deluser", f"{gone}@localhost")
        assert result.returncode == 0, result.stderr

        got = await muc.join(c, room, "Carol")
        assert muc.bodies(got) == ["hello", "bye"]
        results, answer = await muc.mam(c, room)
        assert texts(results) == ["hello", "bye"]
        assert answer.get("type") == "result"
        for client in (a, c):
            await client.close()

    run(scenario())


def test_occupants_in_disco_items(muc) -> None:
    alice, bob, carol = muc.users("alice", "bob", "carol")
    public, members_only = muc.room(), muc.room("club")

    async def scenario() -> None:
        a, b, c = [await muc.login(u) for u in (alice, bob, carol)]
        await muc.create(a, public, "Alice")
        await muc.join(b, public, "Bob")
        await muc.create(a, members_only, "Alice", membersonly="1")

        async def items(client: Any, room: str) -> list[str]:
            answer = await client.plugin["xep_0030"].get_items(jid=room, timeout=5)
            return sorted(i[0] for i in answer["disco_items"]["items"])

        expected = [f"{public}/Alice", f"{public}/Bob"]
        assert await items(c, public) == expected  # a non-occupant of a public, open room
        assert await items(c, members_only) == []  # kept private
        assert await items(a, members_only) == [f"{members_only}/Alice"]  # to occupants
        for client in (a, b, c):
            await client.close()

    run(scenario())
