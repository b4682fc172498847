"""JSON-channel rooms in a cluster (xmppd/muc/api.py): a room made or joined over the JSON
channels is served by that node (it takes the room's lease), so XMPP occupants on other nodes
reach it through the forwarding; a JSON session joins a room another node serves with the
stanzas an XMPP client would send (channels/remote_rooms.py); creating one is refused.
Two real nodes, the stock `phoenix` client (tests/phx.py), a slixmpp occupant."""

from __future__ import annotations

import asyncio
import shutil
import signal
import xml.etree.ElementTree as ET
from typing import Any

from phx import HERE, Phx, login
from support import ServerProcess, connect, run
from support_cluster import DOWN, ROOM_LEASE, users

MUC, OWNER = "http://jabber.org/protocol/muc", "http://jabber.org/protocol/muc#owner"
DATA = "jabber:x:data"
FRESH, LOBBY = "fresh@conference.localhost", "lobby@conference.localhost"
FAR = "far@conference.localhost"


async def occupant(node: ServerProcess, user: str, room: str, nick: str) -> Any:
    """An XMPP occupant of `room`; its groupchat bodies arrive on `.bodies`, the presences
    of the room's occupants on `.presences` as (nick, type)."""
    client = await connect(node, user, nick, password="pw")
    client.bodies, client.presences = asyncio.Queue(), asyncio.Queue()
    entered = asyncio.get_running_loop().create_future()

    def on_presence(presence: Any) -> None:
        if presence["from"].bare == room:
            client.presences.put_nowait((presence["from"].resource, presence["type"]))
        if presence["from"].full == f"{room}/{nick}" and not entered.done():
            entered.set_result(True)

    client.add_event_handler("presence", on_presence)
    client.add_event_handler(
        "message",
        lambda m: m["type"] == "groupchat" and m["body"] and client.bodies.put_nowait(m["body"]),
    )

    client.send_raw(f"<presence to='{room}/{nick}'><x xmlns='{MUC}'/></presence>")
    await asyncio.wait_for(entered, 10)
    return client


async def body(client: Any, text: str) -> None:
    while await asyncio.wait_for(client.bodies.get(), 10) != text:
        pass


async def seen(client: Any, nick: str, type_: str) -> None:
    while await asyncio.wait_for(client.presences.get(), 10) != (nick, type_):
        pass


async def persist(client: Any, room: str) -> None:
    """The owner's configuration form: the room is unlocked and stored."""
    iq = client.make_iq_set(ito=room)
    form = ET.SubElement(ET.SubElement(iq.xml, f"{{{OWNER}}}query"), f"{{{DATA}}}x")
    form.set("type", "submit")
    field = ET.SubElement(form, f"{{{DATA}}}field", var="muc#roomconfig_persistentroom")
    ET.SubElement(field, f"{{{DATA}}}value").text = "1"
    await iq.send(timeout=10)


def test_json_rooms_are_served_where_they_are_made(nodes) -> None:
    assert shutil.which("node"), "node is needed for the JSON channel client"
    assert (HERE / "node_modules" / "phoenix").is_dir(), "run `npm ci` in tests/web"
    n1, n2 = nodes
    ann, carol = users(n1, "ann", "carol")
    me = f"user:{carol}@localhost"

    async def scenario() -> None:
        tab = await Phx.open(n2, login(n2, carol, "pw"))
        try:
            await tab.join(me)
            made = await tab.push(me, "room_create", {"jid": FRESH, "name": "Fresh"})
            assert made == {"jid": FRESH}
            await tab.join(f"room:{FRESH}", {"nick": "carol"})  # node 2 serves it
            await tab.push(f"room:{FRESH}", "new_msg", {"body": "from json"})
            # An XMPP occupant on node 1: forwarded to node 2, it gets the history and chats.
            a = await occupant(n1, ann, FRESH, "ann")
            await body(a, "from json")
            a.send_message(mto=FRESH, mbody="from xmpp", mtype="groupchat")
            got = await tab.event(f"room:{FRESH}", "new_msg", lambda m: m["body"] == "from xmpp")
            assert "ann" in str(got.get("from")), got

            # A room node 1 serves: listed on node 2 (stored, public), its occupant counted
            # cluster-wide; node 2 cannot create it.
            lobby = await occupant(n1, ann, LOBBY, "boss")
            await persist(lobby, LOBBY)
            listed = {r["jid"]: r for r in (await tab.push(me, "rooms"))["rooms"]}
            assert set(listed) == {FRESH, LOBBY}, listed
            assert listed[LOBBY]["occupants"] == 1 and listed[FRESH]["occupants"] == 2, listed
            again = await tab.request(me, "room_create", {"jid": LOBBY, "name": "Mine"})
            assert again["error"]["reason"] == "conflict", again
            await lobby.close()
            await a.close()
        finally:
            await tab.close()

    run(scenario())


def test_json_session_joins_a_room_another_node_serves(nodes) -> None:
    """A JSON session on node 2 in a room node 1 serves: it joins with an XMPP join presence
    forwarded to node 1, sees the XMPP occupant and its messages, and the occupant sees its
    presence and messages; what needs the room's state on node 2 is refused."""
    assert shutil.which("node"), "node is needed for the JSON channel client"
    n1, n2 = nodes
    ann, carol, dave, eve = users(n1, "ann", "carol", "dave", "eve")
    topic = f"room:{FAR}"

    async def scenario() -> None:
        a = await occupant(n1, ann, FAR, "ann")
        await persist(a, FAR)  # node 1 serves it
        a.send_message(mto=FAR, mbody="before carol", mtype="groupchat")
        await body(a, "before carol")
        tab = await Phx.open(n2, login(n2, carol, "pw"))
        other = await Phx.open(n2, login(n2, dave, "pw"))
        third = await Phx.open(n2, login(n2, eve, "pw"))
        try:
            joined = await tab.join(topic, {"nick": "carol"})
            assert joined["nick"] == "carol" and joined["role"] == "participant", joined
            assert joined["affiliation"] == "none", joined
            old = await tab.event(topic, "new_msg", lambda m: m["body"] == "before carol")
            assert old.get("delayed"), old  # the room's history, sent by node 1
            await seen(a, "carol", "available")
            await tab.presence(topic, lambda s: {"ann", "carol"} <= set(s))

            sent = await tab.push(topic, "new_msg", {"body": "from json", "msg_id": "m1"})
            assert sent["msg_id"] == "m1" and sent["id"], sent  # node 1's stanza-id
            await body(a, "from json")
            mine = await tab.event(topic, "new_msg", lambda m: m["body"] == "from json")
            assert "carol" in str(mine.get("from")), mine
            a.send_message(mto=FAR, mbody="from xmpp", mtype="groupchat")
            got = await tab.event(topic, "new_msg", lambda m: m["body"] == "from xmpp")
            assert "ann" in str(got.get("from")), got

            listed = (await tab.push(topic, "occupants"))["occupants"]
            assert {o["nick"]: o["role"] for o in listed} == {
                "ann": "moderator",
                "carol": "participant",
            }, listed
            # The archive, read on node 1 with a XEP-0313 query.
            page = await tab.push(topic, "history")
            bodies = [m["body"] for m in page["messages"]]
            assert bodies == ["before carol", "from json", "from xmpp"], page
            assert page["complete"] and page["messages"][1]["id"] == sent["id"], page
            older = await tab.push(topic, "history", {"before": sent["id"], "limit": 5})
            assert [m["body"] for m in older["messages"]] == ["before carol"], older
            unknown = await tab.request(topic, "history", {"after": "nope"})
            assert unknown["error"]["reason"] == "item-not-found", unknown
            refused = await tab.request(topic, "correct", {"id": sent["id"], "body": "fixed"})
            assert refused["error"]["reason"] == "service-unavailable", refused
            await tab.push(topic, "chat_state", {"state": "composing"})
            # Reflected by node 1 to the occupants, the sender's session included.
            await tab.event(
                topic, "chat_state", lambda p: p == {"from": "carol", "state": "composing"}
            )
            # Catching up from an archive id: the archive after it, read on node 1.
            await third.join(topic, {"nick": "eve", "since": sent["id"]})
            synced = await third.event(topic, "synced")
            assert synced == {"last": got["id"], "complete": True}, synced
            caught = [m["body"] for m in third.events(topic, "new_msg")]
            assert caught == ["from xmpp"], third.lines[-10:]

            # The room's own refusals come back as join errors (a nick in use).
            other.send(op="join", topic=topic, payload={"nick": "ann"})
            taken = await other.wait(lambda x: x.get("join_error") == topic)
            assert taken["reply"]["reason"] == "conflict", taken

            tab.send(op="leave", topic=topic)
            await tab.wait(lambda x: x.get("left") == topic)
            await seen(a, "carol", "unavailable")
            await a.close()
        finally:
            await third.close()
            await other.close()
            await tab.close()

    run(scenario())


def test_json_session_stays_in_a_room_taken_over(three_nodes) -> None:
    """The room's node is killed: the JSON session on node 2 is seated again on the node that
    takes the room over, like the XMPP occupants, and goes on chatting."""
    n1, n2, n3 = three_nodes
    ann, bob, carol = users(n1, "ann", "bob", "carol")
    topic = f"room:{FAR}"

    async def scenario() -> None:
        a = await occupant(n1, ann, FAR, "ann")
        await persist(a, FAR)  # node 1 serves it
        b = await occupant(n3, bob, FAR, "bob")
        tab = await Phx.open(n2, login(n2, carol, "pw"))
        try:
            await tab.join(topic, {"nick": "carol"})
            await seen(b, "carol", "available")
            assert n1.proc is not None
            n1.proc.send_signal(signal.SIGKILL)
            n1.proc.wait()
            # Bob is seated again on the new owner: the room's presences again, carol's too.
            await asyncio.wait_for(seen(b, "carol", "available"), ROOM_LEASE + DOWN + 10)
            sent = await tab.push(topic, "new_msg", {"body": "after the takeover"})
            assert sent["id"], sent
            await body(b, "after the takeover")
            b.send_message(mto=FAR, mbody="still here", mtype="groupchat")
            await tab.event(topic, "new_msg", lambda m: m["body"] == "still here")
            await b.disconnect()
            a.abort()
        finally:
            await tab.close()

    run(scenario())
