"""Groupchat, subject, nick changes, private messages, history and multi-session nicks
(XEP-0045 §7.2.14-16, §7.4-7.6, §8.1; XEP-0203 delay; XEP-0359 stanza-id)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
from slixmpp.exceptions import IqError
from support import run

SID = "urn:xmpp:sid:0"
DELAY = "urn:xmpp:delay"


def stanza_id(msg: object) -> ET.Element | None:
    return msg.xml.find(f"{{{SID}}}stanza-id")  # type: ignore[attr-defined]


def test_groupchat_reflected_once_to_everyone_with_stanza_id(muc) -> None:
    users = muc.users("alice", "bob", "carol")
    room = muc.room()

    async def scenario() -> None:
        a, b, c = [await muc.login(u) for u in users]
        await muc.create(a, room, "Alice")
        await muc.join(b, room, "Bob")
        await muc.join(c, room, "Carol")
        for client in (a, b, c):
            await muc.drain(client)
        b.send_message(mto=room, mbody="hello all", mtype="groupchat")
        received = [await muc.next(x, lambda s: s.name == "message") for x in (a, b, c)]
        ids = set()
        for client, msg in zip((a, b, c), received, strict=True):
            assert msg["from"].full == f"{room}/Bob"
            assert msg["to"].full == client.boundjid.full
            assert msg["body"] == "hello all"
            sid = stanza_id(msg)
            assert sid is not None and sid.get("by") == room
            ids.add(sid.get("id"))
        assert len(ids) == 1
        # Nothing else arrived (each got it once).
        for client in (a, b, c):
            assert await muc.drain(client) == []
        for client in (a, b, c):
            await client.close()

    run(scenario())


def test_subject_rules_and_subject_on_join(muc) -> None:
    alice, bob, carol = muc.users("alice", "bob", "carol")
    room = muc.room()

    async def scenario() -> None:
        a, b, c = [await muc.login(u) for u in (alice, bob, carol)]
        await muc.create(a, room, "Alice")
        await muc.join(b, room, "Bob")
        await muc.drain(a)
        # A participant may not change the subject by default (§8.1).
        b.send_message(mto=room, msubject="mine", mtype="groupchat")
        error = await muc.next(b, lambda s: s.name == "message")
        assert muc.error_condition(error) == "forbidden"
        a.send_message(mto=room, msubject="Plans", mtype="groupchat")
        for client in (a, b):
            msg = await muc.next(client, lambda s: s.name == "message")
            assert msg["from"].full == f"{room}/Alice" and msg["subject"] == "Plans"
        got = await muc.join(c, room, "Carol")
        assert got[-1]["subject"] == "Plans" and got[-1]["from"].full == f"{room}/Alice"
        for client in (a, b, c):
            await client.close()

    run(scenario())


def test_nick_change_and_conflict(muc) -> None:
    alice, bob = muc.users("alice", "bob")
    room = muc.room()

    async def scenario() -> None:
        a, b = await muc.login(alice), await muc.login(bob)
        await muc.create(a, room, "Alice")
        await muc.join(b, room, "Bob")
        await muc.drain(a)
        b.send_presence(pto=f"{room}/Alice")
        error = await muc.next(b, lambda s: s.name == "presence")
        assert error.xml.get("type") == "error" and muc.error_condition(error) == "conflict"
        b.send_presence(pto=f"{room}/Robert")
        for client, own in ((b, True), (a, False)):
            gone = await muc.next(client, lambda s: s.name == "presence")
            assert gone["from"].full == f"{room}/Bob" and gone.xml.get("type") == "unavailable"
            assert muc.codes(gone) == ({"303", "110"} if own else {"303"})
            assert muc.item(gone)["nick"] == "Robert"
            back = await muc.next(client, lambda s: s.name == "presence")
            assert back["from"].full == f"{room}/Robert" and back.xml.get("type") is None
            assert muc.codes(back) == ({"110"} if own else set())
        # Messages now come from the new nick.
        muc.groupchat(b, room, "renamed")
        msg = await muc.next(a, lambda s: s.name == "message")
        assert msg["from"].full == f"{room}/Robert"
        await a.close()
        await b.close()

    run(scenario())


def test_private_messages(muc) -> None:
    alice, bob, carol = muc.users("alice", "bob", "carol")
    room = muc.room()

    async def scenario() -> None:
        a, b, c = [await muc.login(u) for u in (alice, bob, carol)]
        await muc.create(a, room, "Alice")
        await muc.join(b, room, "Bob")
        await muc.drain(a)
        b.send_message(mto=f"{room}/Alice", mbody="psst", mtype="chat")
        msg = await muc.next(a, lambda s: s.name == "message")
        assert msg["from"].full == f"{room}/Bob" and msg["body"] == "psst"
        assert muc.x_user(msg) is not None
        # To a nick not in the room: item-not-found; from outside the room: not-acceptable.
        b.send_message(mto=f"{room}/Nobody", mbody="?", mtype="chat")
        error = await muc.next(b, lambda s: s.name == "message")
        assert muc.error_condition(error) == "item-not-found"
        c.send_message(mto=f"{room}/Alice", mbody="hi", mtype="chat")
        error = await muc.next(c, lambda s: s.name == "message")
        assert muc.error_condition(error) == "not-acceptable"
        # groupchat type to an occupant: bad-request.
        b.send_message(mto=f"{room}/Alice", mbody="?", mtype="groupchat")
        error = await muc.next(b, lambda s: s.name == "message")
        assert muc.error_condition(error) == "bad-request"
        for client in (a, b, c):
            await client.close()

    run(scenario())


def test_history_on_join(muc) -> None:
    alice, bob = muc.users("alice", "bob")
    room = muc.room()

    async def scenario() -> None:
        a, b = await muc.login(alice), await muc.login(bob)
        await muc.create(a, room, "Alice")
        for n in range(5):
            muc.groupchat(a, room, f"m{n}")
            await muc.next(a, lambda s: s.name == "message")
        middle = datetime.now(UTC)
        await asyncio.sleep(0.05)  # `since` must fall between two messages' stamps
        muc.groupchat(a, room, "m5")
        await muc.next(a, lambda s: s.name == "message")

        async def history(**limits: str) -> list[str]:
            got = await muc.join(b, room, "Bob", history=limits or None)
            b.send_presence(pto=f"{room}/Bob", ptype="unavailable")
            await muc.next(b, muc.from_nick("Bob", "unavailable"))
            for msg in got:
                if msg.name == "message" and msg["body"]:
                    delay = msg.xml.find(f"{{{DELAY}}}delay")
                    assert delay is not None and delay.get("from") == room
                    assert delay.get("stamp").endswith("Z")
                    assert msg["from"].full == f"{room}/Alice"
            return muc.bodies(got)

        assert await history() == [f"m{n}" for n in range(6)]
        assert await history(maxstanzas="2") == ["m4", "m5"]
        assert await history(maxstanzas="0") == []
        assert await history(since=middle.strftime("%Y-%m-%dT%H:%M:%S.%fZ")) == ["m5"]
        assert await history(seconds="3600") == [f"m{n}" for n in range(6)]
        assert len(await history(maxchars="600")) < 6
        await a.close()
        await b.close()

    run(scenario())


def test_multiple_sessions_under_one_nick(muc) -> None:
    alice, bob = muc.users("alice", "bob")
    room = muc.room()

    async def scenario() -> None:
        a = await muc.login(alice)
        b1, b2 = await muc.login(bob, "one"), await muc.login(bob, "two")
        await muc.create(a, room, "Alice")
        await muc.join(b1, room, "Bob")
        await muc.drain(a)
        got = await muc.join(b2, room, "Bob")
        assert muc.codes(muc.self_presence(got)) == {"110"}
        # Alice saw no second Bob.
        assert [s for s in await muc.drain(a) if s.name == "presence"] == []
        muc.groupchat(a, room, "to both")
        for client in (b1, b2):
            msg = await muc.next(client, lambda s: s.name == "message")
            assert msg["body"] == "to both" and msg["to"].full == client.boundjid.full
        a.send_message(mto=f"{room}/Bob", mbody="pm", mtype="chat")
        for client in (b1, b2):
            msg = await muc.next(client, lambda s: s.name == "message")
            assert msg["body"] == "pm"
        # One session leaves: Bob is still there for Alice.
        b2.send_presence(pto=f"{room}/Bob", ptype="unavailable")
        await muc.next(b2, muc.from_nick("Bob", "unavailable"))
        assert [s for s in await muc.drain(a) if s.name == "presence"] == []
        # Disconnecting the last session makes Bob leave (unavailable from the presence module).
        await b1.close()
        gone = await muc.next(a, muc.from_nick("Bob", "unavailable"))
        assert muc.item(gone)["role"] == "none"
        await a.close()
        await b2.close()

    run(scenario())


def test_iq_between_occupants_is_forwarded(muc) -> None:
    alice, bob, carol = muc.users("alice", "bob", "carol")
    room = muc.room()

    async def scenario() -> None:
        a, b, c = [await muc.login(u) for u in (alice, bob, carol)]
        await muc.create(a, room, "Alice")
        await muc.join(b, room, "Bob")
        # Bob asks Alice's client (through the room) what it supports; the answer comes back
        # from Alice's occupant JID, and Alice's client saw the request from Bob's.
        seen: list[str] = []
        a.add_event_handler("disco_info_query", lambda iq: seen.append(iq["from"].full))
        info = await b.plugin["xep_0030"].get_info(jid=f"{room}/Alice", timeout=5)
        assert info["from"].full == f"{room}/Alice"
        assert "http://jabber.org/protocol/disco#info" in info["disco_info"]["features"]
        # A vCard request is answered by Alice's server (an error here: she has none); it
        # still comes back from her occupant JID.
        iq = b.make_iq_get(ito=f"{room}/Alice", queryxmlns="vcard-temp")
        iq.xml.remove(iq.xml[0])
        iq.xml.append(ET.Element("{vcard-temp}vCard"))
        try:
            answer = await iq.send(timeout=5)
        except IqError as exc:
            answer = exc.iq
        assert answer["from"].full == f"{room}/Alice"
        # Pinging someone else's nick is forwarded too; from outside the room it is refused.
        await b.plugin["xep_0199"].ping(jid=f"{room}/Alice", timeout=5)
        with pytest.raises(IqError) as info_error:
            await c.plugin["xep_0030"].get_info(jid=f"{room}/Alice", timeout=5)
        assert info_error.value.condition == "not-acceptable"
        with pytest.raises(IqError) as info_error:
            await b.plugin["xep_0030"].get_info(jid=f"{room}/Nobody", timeout=5)
        assert info_error.value.condition == "item-not-found"
        for client in (a, b, c):
            await client.close()

    run(scenario())


def test_participants_may_change_subject_when_allowed(muc) -> None:
    alice, bob = muc.users("alice", "bob")
    room = muc.room()

    async def scenario() -> None:
        a, b = await muc.login(alice), await muc.login(bob)
        await muc.create(a, room, "Alice", changesubject="1")
        await muc.join(b, room, "Bob")
        await muc.drain(a)
        b.send_message(mto=room, msubject="Bob's topic", mtype="groupchat")
        msg = await muc.next(a, lambda s: s.name == "message")
        assert msg["subject"] == "Bob's topic" and msg["from"].full == f"{room}/Bob"
        await a.close()
        await b.close()

    run(scenario())
