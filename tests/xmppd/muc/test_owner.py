"""Owner use cases: the configuration form, persistence across a restart, destruction with an
alternate venue (XEP-0045 §10.1-10.2, §10.9), invitations (§7.8, XEP-0249) and self-ping
(XEP-0410)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError
from support import ServerProcess, run

OWNER = "http://jabber.org/protocol/muc#owner"
DATA = "jabber:x:data"
USER = "http://jabber.org/protocol/muc#user"


async def config_values(client, room: str) -> dict[str, list[str]]:
    iq = client.make_iq_get(ito=room, queryxmlns=OWNER)
    result = await iq.send(timeout=5)
    form = result.xml.find(f"{{{OWNER}}}query/{{{DATA}}}x")
    assert form is not None and form.get("type") == "form"
    return {
        f.get("var"): [v.text or "" for v in f.findall(f"{{{DATA}}}value")]
        for f in form.findall(f"{{{DATA}}}field")
    }


def test_config_form_round_trip(muc) -> None:
    (alice,) = muc.users("alice")
    room = muc.room()

    async def scenario() -> None:
        a = await muc.login(alice)
        await muc.join(a, room, "Alice")
        values = await config_values(a, room)
        assert values["FORM_TYPE"] == ["http://jabber.org/protocol/muc#roomconfig"]
        assert values["muc#roomconfig_persistentroom"] == ["0"]
        await muc.configure(a, room, roomname="Kitchen", whois="anyone", allowpm="none")
        values = await config_values(a, room)
        assert values["muc#roomconfig_roomname"] == ["Kitchen"]
        assert values["muc#roomconfig_whois"] == ["anyone"]
        # Bad values are refused with not-acceptable; the config stays as it was.
        with pytest.raises(IqError) as info:
            await muc.configure(a, room, whois="everybody")
        assert info.value.condition == "not-acceptable"
        with pytest.raises(IqError) as info:
            await muc.configure(a, room, maxusers="100000")
        assert info.value.condition == "not-acceptable"
        assert (await config_values(a, room))["muc#roomconfig_whois"] == ["anyone"]
        await a.close()

    run(scenario())


def test_non_anonymous_room_shows_jids_and_status_100(muc) -> None:
    alice, bob = muc.users("alice", "bob")
    room = muc.room()

    async def scenario() -> None:
        a, b = await muc.login(alice), await muc.login(bob)
        await muc.create(a, room, "Alice", whois="anyone")
        got = await muc.join(b, room, "Bob")
        own = muc.self_presence(got)
        assert muc.codes(own) == {"110", "100"}
        assert muc.item(muc.presences(got)[0])["jid"] == f"{alice}@localhost/r"
        await a.close()
        await b.close()

    run(scenario())


def test_destroy_with_alternate_venue(muc) -> None:
    alice, bob = muc.users("alice", "bob")
    room, venue = muc.room(), muc.room("venue")

    async def scenario() -> None:
        a, b = await muc.login(alice), await muc.login(bob)
        await muc.create(a, room, "Alice", persistentroom="1")
        await muc.join(b, room, "Bob")
        await muc.drain(a)
        iq = b.make_iq_set(ito=room)
        ET.SubElement(ET.SubElement(iq.xml, f"{{{OWNER}}}query"), f"{{{OWNER}}}destroy")
        with pytest.raises(IqError) as info:
            await iq.send(timeout=5)
        assert info.value.condition == "forbidden"
        iq = a.make_iq_set(ito=room)
        destroy = ET.SubElement(
            ET.SubElement(iq.xml, f"{{{OWNER}}}query"), f"{{{OWNER}}}destroy", jid=venue
        )
        ET.SubElement(destroy, f"{{{OWNER}}}reason").text = "moving"
        await iq.send(timeout=5)
        for client in (a, b):
            gone = await muc.next(client, lambda s: s.name == "presence")
            assert gone.xml.get("type") == "unavailable"
            assert muc.item(gone)["role"] == "none"
            notice = muc.x_user(gone).find(f"{{{USER}}}destroy")
            assert notice.get("jid") == venue
            assert notice.findtext(f"{{{USER}}}reason") == "moving"
        info_items = await a.plugin["xep_0030"].get_items(jid="conference.localhost", timeout=5)
        assert room not in [i[0] for i in info_items["disco_items"]["items"]]
        await a.close()
        await b.close()

    run(scenario())


def test_mediated_and_direct_invitations(muc) -> None:
    alice, bob, carol = muc.users("alice", "bob", "carol")
    room = muc.room()

    async def scenario() -> None:
        a, b, c = [await muc.login(u) for u in (alice, bob, carol)]
        await muc.create(
            a, room, "Alice", membersonly="1", passwordprotectedroom="1", roomsecret="pw1"
        )
        a.plugin["xep_0045"].invite(room, f"{bob}@localhost", reason="join us")
        invite = await muc.next(b, lambda s: s.name == "message")
        assert invite["from"].full == room
        x = muc.x_user(invite)
        inv = x.find(f"{{{USER}}}invite")
        assert inv.get("from") == f"{alice}@localhost/r"
        assert inv.findtext(f"{{{USER}}}reason") == "join us"
        assert x.findtext(f"{{{USER}}}password") == "pw1"
        # The invitation made Bob a member: he can enter the members-only room.
        got = await muc.join(b, room, "Bob", password="pw1")
        assert muc.item(muc.self_presence(got))["affiliation"] == "member"
        # Bob (a member) may not invite in a members-only room without allowinvites.
        b.plugin["xep_0045"].invite(room, f"{carol}@localhost")
        error = await muc.next(b, lambda s: s.name == "message" and s.xml.get("type") == "error")
        assert muc.error_condition(error) == "forbidden"
        # Carol declines an invitation: Alice gets it from the room.
        c.plugin["xep_0045"].decline(room, f"{alice}@localhost", reason="busy")
        decline = await muc.next(
            a,
            lambda s: (
                s.name == "message"
                and muc.x_user(s) is not None
                and muc.x_user(s).find(f"{{{USER}}}decline") is not None
            ),
        )
        assert decline["from"].full == room
        assert decline.xml.find(f".//{{{USER}}}decline").get("from") == f"{carol}@localhost"
        # XEP-0249: a direct invitation goes from user to user untouched.
        msg = ET.Element("{jabber:client}message", to=f"{carol}@localhost")
        ET.SubElement(msg, "{jabber:x:conference}x", jid=room, password="pw1")
        a.send_raw(ET.tostring(msg, encoding="unicode"))
        direct = await muc.next(c, lambda s: s.name == "message")
        assert direct.xml.find("{jabber:x:conference}x").get("jid") == room
        for client in (a, b, c):
            await client.close()

    run(scenario())


def test_self_ping(muc) -> None:
    alice, bob = muc.users("alice", "bob")
    room = muc.room()

    async def scenario() -> None:
        a, b = await muc.login(alice), await muc.login(bob)
        await muc.create(a, room, "Alice")
        await a.plugin["xep_0199"].ping(jid=f"{room}/Alice", timeout=5)
        with pytest.raises(IqError) as info:
            await b.plugin["xep_0199"].ping(jid=f"{room}/Alice", timeout=5)
        assert info.value.condition == "not-acceptable"
        await a.close()
        await b.close()

    run(scenario())


def test_persistent_room_survives_restart(muc, tmp_path) -> None:
    """A server of its own, restarted: config, affiliations, subject and history are back."""
    server = ServerProcess(tmp_path)
    server.start()
    helper = type(muc)(server)
    alice, bob = helper.users("alice", "bob")
    room = "lasting@conference.localhost"

    async def first() -> None:
        a, b = await helper.login(alice), await helper.login(bob)
        fields = {"persistentroom": "1", "roomname": "Lasting", "moderatedroom": "1"}
        await helper.create(a, room, "Alice", **fields)
        await helper.admin(a, room, jid=f"{bob}@localhost", affiliation="member")
        a.send_message(mto=room, msubject="Kept", mtype="groupchat")
        await helper.next(a, lambda s: s.name == "message")
        helper.groupchat(a, room, "before restart")
        await helper.next(a, lambda s: s.name == "message")
        await a.close()
        await b.close()

    async def second() -> None:
        a, b = await helper.login(alice), await helper.login(bob)
        items = await a.plugin["xep_0030"].get_items(jid="conference.localhost", timeout=5)
        assert room in [i[0] for i in items["disco_items"]["items"]]
        values = await config_values(a, room)
        assert values["muc#roomconfig_roomname"] == ["Lasting"]
        assert values["muc#roomconfig_moderatedroom"] == ["1"]
        members = await helper.admin_list(a, room, affiliation="member")
        assert members == [{"affiliation": "member", "jid": f"{bob}@localhost"}]
        got = await helper.join(b, room, "Bob")
        own = helper.self_presence(got)
        assert helper.item(own) == {"affiliation": "member", "role": "participant"}
        assert helper.codes(own) == {"110"}  # not 201: the room exists
        assert helper.bodies(got) == ["before restart"]
        assert got[-1]["subject"] == "Kept"
        await a.close()
        await b.close()

    try:
        run(first())
        server.stop()
        server.start()
        run(second())
    finally:
        server.stop()


def test_cancelling_the_initial_configuration_destroys_the_room(muc) -> None:
    (alice,) = muc.users("alice")
    room = muc.room()

    async def scenario() -> None:
        a = await muc.login(alice)
        await muc.join(a, room, "Alice")
        iq = a.make_iq_set(ito=room)
        query = ET.SubElement(iq.xml, f"{{{OWNER}}}query")
        ET.SubElement(query, f"{{{DATA}}}x", type="cancel")
        await iq.send(timeout=5)
        gone = await muc.next(a, muc.from_nick("Alice", "unavailable"))
        assert muc.x_user(gone).find(f"{{{USER}}}destroy") is not None
        got = await muc.join(a, room, "Alice")  # created anew
        assert muc.codes(muc.self_presence(got)) == {"110", "201"}
        await a.close()

    run(scenario())
