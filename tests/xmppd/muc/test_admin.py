"""Moderator, admin and owner use cases: kick, ban, voice, member and owner lists, members-only
and password-protected rooms, max occupants (XEP-0045 §7.2.5-7.2.10, §8, §9, §10.3-10.8)."""

from __future__ import annotations

import pytest
from slixmpp.exceptions import IqError
from support import run


async def _refused(coro: object) -> str:
    with pytest.raises(IqError) as info:
        await coro  # type: ignore[misc]
    return info.value.condition


def test_kick_and_ban(muc) -> None:
    alice, bob, carol = muc.users("alice", "bob", "carol")
    room = muc.room()

    async def scenario() -> None:
        a, b, c = [await muc.login(u) for u in (alice, bob, carol)]
        await muc.create(a, room, "Alice")
        await muc.join(b, room, "Bob")
        await muc.join(c, room, "Carol")
        for client in (a, b, c):
            await muc.drain(client)
        # A participant cannot kick.
        assert await _refused(muc.admin(b, room, nick="Carol", role="none")) == "forbidden"
        await muc.admin(a, room, nick="Carol", role="none", reason="calm down")
        own = await muc.next(c, muc.from_nick("Carol", "unavailable"))
        assert muc.codes(own) == {"110", "307"}
        x = muc.x_user(own)
        item = x.find("{http://jabber.org/protocol/muc#user}item")
        assert item.get("role") == "none"
        assert item.find("{http://jabber.org/protocol/muc#user}actor").get("nick") == "Alice"
        assert item.findtext("{http://jabber.org/protocol/muc#user}reason") == "calm down"
        for other in (a, b):
            seen = await muc.next(other, muc.from_nick("Carol", "unavailable"))
            assert muc.codes(seen) == {"307"}
        # A kicked user may come back.
        got = await muc.join(c, room, "Carol")
        assert muc.codes(muc.self_presence(got)) == {"110"}
        await muc.drain(a)
        await muc.drain(b)
        # Ban by bare JID: removed with 301, cannot rejoin, listed as outcast.
        await muc.admin(a, room, jid=f"{carol}@localhost", affiliation="outcast", reason="out")
        own = await muc.next(c, muc.from_nick("Carol", "unavailable"))
        assert muc.codes(own) == {"110", "301"}
        assert muc.item(own)["affiliation"] == "outcast"
        seen = await muc.next(b, muc.from_nick("Carol", "unavailable"))
        assert muc.codes(seen) == {"301"}
        got = await muc.join(c, room, "Carol")
        assert muc.error_condition(got[-1]) == "forbidden"
        got = await muc.join(c, room, "Other")
        assert muc.error_condition(got[-1]) == "forbidden"
        bans = await muc.admin_list(a, room, affiliation="outcast")
        assert bans == [{"affiliation": "outcast", "jid": f"{carol}@localhost"}]
        assert await _refused(muc.admin_list(b, room, affiliation="outcast")) == "forbidden"
        # Lifting the ban lets Carol in again.
        await muc.admin(a, room, jid=f"{carol}@localhost", affiliation="none")
        got = await muc.join(c, room, "Carol")
        assert muc.codes(muc.self_presence(got)) == {"110"}
        for client in (a, b, c):
            await client.close()

    run(scenario())


def test_admins_and_owners_are_protected(muc) -> None:
    alice, bob = muc.users("alice", "bob")
    room = muc.room()

    async def scenario() -> None:
        a, b = await muc.login(alice), await muc.login(bob)
        await muc.create(a, room, "Alice")
        await muc.join(b, room, "Bob")
        await muc.drain(a)
        # The last owner cannot step down.
        refused = muc.admin(a, room, jid=f"{alice}@localhost", affiliation="admin")
        assert await _refused(refused) == "conflict"
        # Make Bob admin: his presence changes to admin/moderator for everyone.
        await muc.admin(a, room, jid=f"{bob}@localhost", affiliation="admin")
        for client in (a, b):
            seen = await muc.next(client, muc.from_nick("Bob"))
            assert muc.item(seen)["affiliation"] == "admin"
            assert muc.item(seen)["role"] == "moderator"
        # An admin cannot kick or ban the owner, nor grant ownership.
        assert await _refused(muc.admin(b, room, nick="Alice", role="none")) == "not-allowed"
        refused = muc.admin(b, room, jid=f"{alice}@localhost", affiliation="outcast")
        assert await _refused(refused) == "not-allowed"
        refused = muc.admin(b, room, jid="x@localhost", affiliation="owner")
        assert await _refused(refused) == "not-allowed"
        admins = await muc.admin_list(a, room, affiliation="admin")
        assert admins == [{"affiliation": "admin", "jid": f"{bob}@localhost"}]
        owners = await muc.admin_list(b, room, affiliation="owner")
        assert owners == [{"affiliation": "owner", "jid": f"{alice}@localhost"}]
        # Only owners get the configuration form.
        iq = b.make_iq_get(ito=room, queryxmlns="http://jabber.org/protocol/muc#owner")
        assert await _refused(iq.send(timeout=5)) == "forbidden"
        await a.close()
        await b.close()

    run(scenario())


def test_voice_in_moderated_room(muc) -> None:
    alice, bob = muc.users("alice", "bob")
    room = muc.room()

    async def scenario() -> None:
        a, b = await muc.login(alice), await muc.login(bob)
        await muc.create(a, room, "Alice", moderatedroom="1")
        got = await muc.join(b, room, "Bob")
        assert muc.item(muc.self_presence(got))["role"] == "visitor"
        await muc.drain(a)
        muc.groupchat(b, room, "may I?")
        error = await muc.next(b, lambda s: s.name == "message")
        assert muc.error_condition(error) == "forbidden"
        await muc.admin(a, room, nick="Bob", role="participant")
        seen = await muc.next(b, muc.from_nick("Bob"))
        assert muc.item(seen)["role"] == "participant" and muc.codes(seen) == {"110"}
        participants = await muc.admin_list(a, room, role="participant")
        assert [p["nick"] for p in participants] == ["Bob"]
        muc.groupchat(b, room, "thanks")
        msg = await muc.next(a, lambda s: s.name == "message")
        assert msg["body"] == "thanks"
        await muc.admin(a, room, nick="Bob", role="visitor")
        seen = await muc.next(a, muc.from_nick("Bob"))
        assert muc.item(seen)["role"] == "visitor"
        await a.close()
        await b.close()

    run(scenario())


def test_members_only_password_and_max_occupants(muc) -> None:
    alice, bob, carol, dave = muc.users("alice", "bob", "carol", "dave")
    closed, secret, small = muc.room(), muc.room(), muc.room()

    async def scenario() -> None:
        a, b, c, d = [await muc.login(u) for u in (alice, bob, carol, dave)]
        await muc.create(a, closed, "Alice", membersonly="1")
        got = await muc.join(b, closed, "Bob")
        assert muc.error_condition(got[-1]) == "registration-required"
        await muc.admin(a, closed, jid=f"{bob}@localhost", affiliation="member")
        assert await muc.admin_list(a, closed, affiliation="member") == [
            {"affiliation": "member", "jid": f"{bob}@localhost"}
        ]
        got = await muc.join(b, closed, "Bob")
        assert muc.item(muc.self_presence(got)) == {"affiliation": "member", "role": "participant"}
        await muc.drain(a)
        # Taking membership away removes Bob with 321.
        await muc.admin(a, closed, jid=f"{bob}@localhost", affiliation="none")
        own = await muc.next(b, muc.from_nick("Bob", "unavailable"))
        assert muc.codes(own) == {"110", "321"}

        fields = {"passwordprotectedroom": "1", "roomsecret": "s3cret"}
        await muc.create(a, secret, "Alice", **fields)
        got = await muc.join(b, secret, "Bob")
        assert muc.error_condition(got[-1]) == "not-authorized"
        got = await muc.join(b, secret, "Bob", password="wrong")
        assert muc.error_condition(got[-1]) == "not-authorized"
        got = await muc.join(b, secret, "Bob", password="s3cret")
        assert muc.codes(muc.self_presence(got)) == {"110"}

        await muc.create(a, small, "Alice", maxusers="2")
        await muc.join(b, small, "Bob")
        got = await muc.join(c, small, "Carol")
        assert muc.error_condition(got[-1]) == "service-unavailable"
        assert got[-1].xml.find("{jabber:client}error").get("type") == "wait"
        # A room that becomes members-only sends non-members away with 322.
        await muc.configure(a, small, membersonly="1")
        own = await muc.next(b, muc.from_nick("Bob", "unavailable"))
        assert muc.codes(own) == {"110", "322"}
        for client in (a, b, c, d):
            await client.close()

    run(scenario())
