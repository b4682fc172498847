"""The same use cases driven through slixmpp's own XEP-0045 plugin, as a client library
would: joining with history, reserved-room configuration, moderation, lists, destruction."""

from __future__ import annotations

import pytest
from slixmpp.exceptions import PresenceError
from support import run


def test_plugin_round_trip(muc) -> None:
    alice, bob, carol, dave = muc.users("alice", "bob", "carol", "dave")
    room = muc.room()

    async def scenario() -> None:
        a, b, c, d = [await muc.login(u) for u in (alice, bob, carol, dave)]
        pa, pb, pc, pd = (x.plugin["xep_0045"] for x in (a, b, c, d))
        own, _subject, _occupants, _history = await pa.join_muc_wait(room, "Alice", timeout=5)
        assert muc.codes(own) == {"110", "201"}
        # Reserved room: fetch the form, fill it in, submit it.
        form = await pa.get_room_config(room)
        assert "muc#roomconfig_roomname" in form.get_fields()
        form.reply()  # turns the form into a submission in place
        form.set_values(
            {"muc#roomconfig_roomname": "Plugin room", "muc#roomconfig_whois": "anyone"}
        )
        await pa.set_room_config(room, form)
        pa.set_subject(room, "Testing")
        await muc.next(a, lambda s: s.name == "message" and s["subject"] == "Testing")
        a.send_message(mto=room, mbody="first", mtype="groupchat")
        await muc.next(a, lambda s: s.name == "message" and s["body"] == "first")

        own, subject, occupants, history = await pb.join_muc_wait(
            room, "Bob", maxstanzas=5, timeout=5
        )
        assert subject["subject"] == "Testing"
        assert [m["body"] for m in history] == ["first"]
        assert "100" in muc.codes(own)  # non-anonymous now
        await pc.join_muc_wait(room, "Carol", timeout=5)
        await pd.join_muc_wait(room, "Dave", timeout=5)
        assert sorted(pa.get_roster(room)) == ["Alice", "Bob", "Carol", "Dave"]

        await pa.set_affiliation(room, "member", jid=b.boundjid.bare)
        assert await pa.get_affiliation_list(room, "member") == [b.boundjid.bare]
        await pa.set_role(room, "Carol", "none", reason="bye")
        kicked = await muc.next(c, muc.from_nick("Carol", "unavailable"))
        assert muc.codes(kicked) == {"110", "307"}
        await pa.set_affiliation(room, "outcast", jid=d.boundjid.bare, reason="spam")
        banned = await muc.next(d, muc.from_nick("Dave", "unavailable"))
        assert muc.codes(banned) == {"110", "301"}
        with pytest.raises(PresenceError) as refused:
            await pd.join_muc_wait(room, "Dave", timeout=5)
        assert refused.value.condition == "forbidden"
        assert await pa.get_roles_list(room, "participant") == ["Bob"]

        await pa.destroy(room, reason="done", altroom=f"next@{room.split('@')[1]}")
        gone = await muc.next(b, muc.from_nick("Bob", "unavailable"))
        destroy = muc.x_user(gone).find("{http://jabber.org/protocol/muc#user}destroy")
        assert destroy.get("jid") == f"next@{room.split('@')[1]}"
        for client in (a, b, c, d):
            await client.close()

    run(scenario())
