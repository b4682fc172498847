"""JSON-channel rooms in a cluster (xmppd/muc/api.py): a room made or joined over the JSON
channels is served by that node (it takes the room's lease), so XMPP occupants on other nodes
reach it through the forwarding; a room another node serves is refused with a clear answer.
Two real nodes, the stock `phoenix` client (tests/phx.py), a slixmpp occupant."""

from __future__ import annotations

import asyncio
import shutil
import xml.etree.ElementTree as ET
from typing import Any

from phx import HERE, Phx, login
from support import ServerProcess, connect, run
from support_cluster import users

MUC, OWNER = "http://jabber.org/protocol/muc", "http://jabber.org/protocol/muc#owner"
DATA = "jabber:x:data"
FRESH, LOBBY = "fresh@conference.localhost", "lobby@conference.localhost"


async def occupant(node: ServerProcess, user: str, room: str, nick: str) -> Any:
    """An XMPP occupant of `room`; its groupchat bodies arrive on `.bodies`."""
    client = await connect(node, user, nick, password="pw")
    client.bodies = asyncio.Queue()
    entered = asyncio.get_running_loop().create_future()

    def on_presence(presence: Any) -> None:
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


def test_json_rooms_are_served_where_they_are_made_and_refused_elsewhere(nodes) -> None:
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

            # A room node 1 serves: refused on node 2, saying where it is served.
            lobby = await occupant(n1, ann, LOBBY, "boss")
            iq = lobby.make_iq_set(ito=LOBBY)
            form = ET.SubElement(ET.SubElement(iq.xml, f"{{{OWNER}}}query"), f"{{{DATA}}}x")
            form.set("type", "submit")
            field = ET.SubElement(form, f"{{{DATA}}}field", var="muc#roomconfig_persistentroom")
            ET.SubElement(field, f"{{{DATA}}}value").text = "1"
            await iq.send(timeout=10)  # unlocked, stored
            tab.send(op="join", topic=f"room:{LOBBY}", payload={"nick": "carol"})
            refused = await tab.wait(lambda x: x.get("join_error") == f"room:{LOBBY}")
            assert refused["reply"]["reason"] == "service-unavailable", refused
            assert "cluster node n1" in refused["reply"]["text"], refused
            # ...but listed on node 2 (stored, public), its occupant counted cluster-wide.
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
