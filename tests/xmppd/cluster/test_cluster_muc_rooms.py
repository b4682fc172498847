"""The MUC service's room list across nodes (xmppd/muc/disco.py): disco#items on any node lists
every stored public room, wherever it is served. Two real nodes, slixmpp clients."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any

from support import ServerProcess, connect, run
from support_cluster import users

MUC, OWNER = "http://jabber.org/protocol/muc", "http://jabber.org/protocol/muc#owner"
DATA = "jabber:x:data"
ROOM = "lobby@conference.localhost"


async def login(node: ServerProcess, user: str) -> Any:
    client = await connect(node, user, "r", password="pw", presence=False)
    client.send_presence()
    await client.plugin["xep_0199"].ping(jid="localhost", timeout=5)
    return client


async def join(client: Any, nick: str) -> None:
    entered = asyncio.get_running_loop().create_future()

    def on_presence(presence: Any) -> None:
        if presence["from"].full == f"{ROOM}/{nick}" and not entered.done():
            entered.set_result(True)

    client.add_event_handler("presence", on_presence)
    client.send_raw(f"<presence to='{ROOM}/{nick}'><x xmlns='{MUC}'/></presence>")
    await asyncio.wait_for(entered, 10)


async def configure(client: Any, **fields: str) -> None:
    iq = client.make_iq_set(ito=ROOM)
    x = ET.SubElement(ET.SubElement(iq.xml, f"{{{OWNER}}}query"), f"{{{DATA}}}x", type="submit")
    for var, value in fields.items():
        field = ET.SubElement(x, f"{{{DATA}}}field", var=f"muc#roomconfig_{var}")
        ET.SubElement(field, f"{{{DATA}}}value").text = value
    await iq.send(timeout=10)


def test_disco_items_on_any_node_lists_every_stored_public_room(nodes) -> None:
    n1, n2 = nodes
    ann_name, bob_name = users(n1, "ann", "bob")

    async def scenario() -> None:
        ann, bob = await login(n1, ann_name), await login(n2, bob_name)
        await join(ann, "ann")  # n1 serves the room
        await configure(ann, persistentroom="1", roomname="Lobby of n1")
        for client in (ann, bob):  # asked on either node
            items = await client.plugin["xep_0030"].get_items(
                jid="conference.localhost", timeout=10
            )
            listed = {(i[0], i[2]) for i in items["disco_items"]["items"]}
            assert listed == {(ROOM, "Lobby of n1")}, listed
        await configure(ann, publicroom="0")  # hidden: gone from both lists
        for client in (ann, bob):
            items = await client.plugin["xep_0030"].get_items(
                jid="conference.localhost", timeout=10
            )
            assert not items["disco_items"]["items"], items
        await ann.close()
        await bob.close()

    run(scenario())
