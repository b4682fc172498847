"""Retraction of room messages by their author (XEP-0424) and by moderators (XEP-0425): reflected
to everyone, gone from history, tombstones in the room archive."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from support import ServerProcess, run

SID = "urn:xmpp:sid:0"
RETRACT = "urn:xmpp:message-retract:1"
MODERATE = "urn:xmpp:message-moderate:1"


def stanza_id(msg: Any) -> str:
    return msg.xml.find(f"{{{SID}}}stanza-id").get("id")


def is_body(text: str):  # noqa: ANN201
    return lambda s: s.name == "message" and s["body"] == text


def is_retraction(s: Any) -> bool:
    return s.name == "message" and s.xml.find(f"{{{RETRACT}}}retract") is not None


async def say(muc: Any, sender: Any, room: str, text: str, *others: Any) -> str:
    """A groupchat message everyone receives; its stanza-id."""
    muc.groupchat(sender, room, text)
    got = [await muc.next(c, is_body(text)) for c in (sender, *others)]
    return stanza_id(got[0])


def texts(messages: list[ET.Element]) -> list[str | None]:
    return [m.findtext("{jabber:client}body") for m in messages]


def test_author_retracts_everywhere(muc) -> None:
    alice, bob, carol, dave = muc.users("alice", "bob", "carol", "dave")
    room = muc.room()

    async def scenario() -> None:
        a, b, c, d = [await muc.login(u) for u in (alice, bob, carol, dave)]
        b.register_plugin("xep_0424")
        await muc.create(a, room, "Alice")
        await muc.join(b, room, "Bob")
        await muc.join(c, room, "Carol")
        for client in (a, b, c):
            await muc.drain(client)
        await say(muc, a, room, "before", b, c)
        oops = await say(muc, b, room, "oops", a, c)
        await say(muc, c, room, "after", a, b)

        sent = b.plugin["xep_0424"].send_retraction(room, oops, mtype="groupchat")
        for client in (a, b, c):
            msg = await muc.next(client, is_retraction)
            assert msg["from"].full == f"{room}/Bob"
            assert msg["retract"]["id"] == oops
            assert msg["id"] == sent["id"]
            assert msg.xml.find(f"{{{SID}}}stanza-id").get("by") == room

        # Gone from the history a newcomer gets; the retraction itself is kept.
        got = await muc.join(d, room, "Dave")
        assert muc.bodies(got)[:2] == ["before", "after"]
        assert "oops" not in muc.bodies(got)
        assert [m["retract"]["id"] for m in got if is_retraction(m)] == [oops]

        # The archive holds a tombstone under the same id, then the retraction.
        results, answer = await muc.mam(d, room, max="10")
        assert answer.get("type") == "result"
        assert texts(results)[:3] == ["before", None, "after"]
        tombstone = results[1].find(f"{{{RETRACT}}}retracted")
        assert tombstone is not None and tombstone.get("id") == sent["id"]
        assert results[1].get("from") == f"{room}/Bob" and results[1].get("to") is None
        assert results[3].find(f"{{{RETRACT}}}retract").get("id") == oops
        for client in (a, b, c, d):
            await client.close()

    run(scenario())


def test_only_the_author_may_retract(muc) -> None:
    alice, bob, carol = muc.users("alice", "bob", "carol")
    room = muc.room()

    async def scenario() -> None:
        a, b, c = [await muc.login(u) for u in (alice, bob, carol)]
        await muc.create(a, room, "Alice")
        await muc.join(b, room, "Bob")
        await muc.join(c, room, "Carol")
        for client in (a, b, c):
            await muc.drain(client)
        mine = await say(muc, b, room, "mine", a, c)
        for target, condition in ((mine, "forbidden"), ("no-such-id", "item-not-found")):
            msg = c.make_message(mto=room, mtype="groupchat")
            ET.SubElement(msg.xml, f"{{{RETRACT}}}retract", id=target)
            msg.send()
            error = await muc.next(c, lambda s: s.name == "message")
            assert muc.error_condition(error) == condition
        # Nothing reached the others, and the message is still served.
        for client in (a, b):
            assert await muc.drain(client) == []
        results, _answer = await muc.mam(a, room)
        assert texts(results) == ["mine"]
        for client in (a, b, c):
            await client.close()

    run(scenario())


def test_moderator_retracts_with_reason(muc) -> None:
    alice, bob, carol, dave = muc.users("alice", "bob", "carol", "dave")
    room = muc.room()

    async def scenario() -> None:
        a, b, c, d = [await muc.login(u) for u in (alice, bob, carol, dave)]
        for client in (a, b):
            client.register_plugin("xep_0425")
        await muc.create(a, room, "Alice")
        await muc.join(b, room, "Bob")
        await muc.join(c, room, "Carol")
        for client in (a, b, c):
            await muc.drain(client)
        spam = await say(muc, c, room, "buy potions", a, b)

        # A participant may not moderate; unknown ids are item-not-found.
        with pytest.raises(IqError) as refused:
            await b.plugin["xep_0425"].moderate(b.boundjid.__class__(room), spam, "no")
        assert refused.value.condition == "forbidden"
        with pytest.raises(IqError) as unknown:
            await a.plugin["xep_0425"].moderate(a.boundjid.__class__(room), "nope", "x")
        assert unknown.value.condition == "item-not-found"

        await a.plugin["xep_0425"].moderate(a.boundjid.__class__(room), spam, "spam")
        for client in (a, b, c):
            msg = await muc.next(client, is_retraction)
            assert msg["from"].full == room
            retract = msg.xml.find(f"{{{RETRACT}}}retract")
            assert retract.get("id") == spam
            assert retract.find(f"{{{MODERATE}}}moderated").get("by") == f"{room}/Alice"
            assert retract.findtext(f"{{{RETRACT}}}reason") == "spam"
            assert msg["body"]  # a fallback for clients without XEP-0424
        for client in (a, b, c):  # the forbidden try reached nobody
            assert not [s for s in await muc.drain(client) if is_retraction(s)]

        got = await muc.join(d, room, "Dave")
        assert "buy potions" not in muc.bodies(got)
        results, _answer = await muc.mam(d, room)
        tombstone = results[0].find(f"{{{RETRACT}}}retracted")
        assert results[0].findtext("{jabber:client}body") is None
        assert tombstone.find(f"{{{MODERATE}}}moderated").get("by") == f"{room}/Alice"
        assert tombstone.findtext(f"{{{RETRACT}}}reason") == "spam"
        # A moderated message cannot be retracted again.
        with pytest.raises(IqError) as again:
            await a.plugin["xep_0425"].moderate(a.boundjid.__class__(room), spam, "again")
        assert again.value.condition == "item-not-found"
        for client in (a, b, c, d):
            await client.close()

    run(scenario())


def test_retractions_survive_a_restart(muc, tmp_path) -> None:
    """A server of its own: after a restart the history still lacks the retracted message, and
    authorship is still known (it is read from the archive)."""
    server = ServerProcess(tmp_path)
    server.start()
    helper = type(muc)(server)
    alice, bob, carol = helper.users("alice", "bob", "carol")
    room = "lasting@conference.localhost"
    ids: dict[str, str] = {}

    async def first() -> None:
        a, b = await helper.login(alice), await helper.login(bob)
        await helper.create(a, room, "Alice", persistentroom="1")
        await helper.join(b, room, "Bob")
        await helper.drain(a)
        ids["keep"] = await say(helper, b, room, "keep", a)
        ids["oops"] = await say(helper, b, room, "oops", a)
        msg = b.make_message(mto=room, mtype="groupchat")
        ET.SubElement(msg.xml, f"{{{RETRACT}}}retract", id=ids["oops"])
        msg.send()
        await helper.next(a, is_retraction)
        await a.close()
        await b.close()

    async def second() -> None:
        b, c = await helper.login(bob), await helper.login(carol)
        got = await helper.join(c, room, "Carol")
        assert helper.bodies(got) == ["keep"]
        await helper.join(b, room, "Bob")
        await helper.drain(c)
        msg = b.make_message(mto=room, mtype="groupchat")
        ET.SubElement(msg.xml, f"{{{RETRACT}}}retract", id=ids["keep"])
        msg.send()
        assert (await helper.next(c, is_retraction))["retract"]["id"] == ids["keep"]
        results, _answer = await helper.mam(c, room)
        tombstones = [m.find(f"{{{RETRACT}}}retracted") is not None for m in results]
        targets = [m.find(f"{{{RETRACT}}}retract").get("id") for m in results[2:]]
        assert tombstones == [True, True, False, False]
        assert targets == [ids["oops"], ids["keep"]]
        await b.close()
        await c.close()

    try:
        run(first())
        server.stop()
        server.start()
        run(second())
    finally:
        server.stop()


def test_bad_moderation_and_archive_requests(muc) -> None:
    (alice,) = muc.users("alice")
    room = muc.room()

    def condition(answer: ET.Element) -> str:
        error = answer.find("{jabber:client}error")
        return next(c.tag.split("}")[1] for c in error if not c.tag.endswith("}text"))

    async def scenario() -> None:
        a = await muc.login(alice)
        await muc.create(a, room, "Alice")
        cases = [
            ("moderate", {}, True, "bad-request"),  # no id
            ("moderate", {"id": "x"}, False, "feature-not-implemented"),  # not a retraction
        ]
        for name, attrs, retract, expected in cases:
            iq = ET.Element("{jabber:client}iq", type="set", to=room)
            el = ET.SubElement(iq, f"{{{MODERATE}}}{name}", **attrs)
            if retract:
                ET.SubElement(el, f"{{{RETRACT}}}retract")
            assert condition(await muc.raw_iq(a, iq)) == expected
        # A malformed archive query: an unknown field.
        iq = ET.Element("{jabber:client}iq", type="set", to=room)
        x = ET.SubElement(ET.SubElement(iq, "{urn:xmpp:mam:2}query"), "{jabber:x:data}x")
        x.set("type", "submit")
        field = ET.SubElement(x, "{jabber:x:data}field", var="FORM_TYPE")
        ET.SubElement(field, "{jabber:x:data}value").text = "urn:xmpp:mam:2"
        ET.SubElement(x, "{jabber:x:data}field", var="nonsense")
        assert condition(await muc.raw_iq(a, iq)) == "feature-not-implemented"
        # A retraction without an id.
        msg = a.make_message(mto=room, mtype="groupchat")
        ET.SubElement(msg.xml, f"{{{RETRACT}}}retract")
        msg.send()
        error = await muc.next(a, lambda s: s.name == "message" and s["type"] == "error")
        assert muc.error_condition(error) == "bad-request"
        await a.close()

    run(scenario())
