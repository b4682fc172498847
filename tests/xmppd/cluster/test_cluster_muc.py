"""MUC across cluster nodes (xmppd/muc/placement.py): three nodes as processes on the real Redis
and PostgreSQL, slixmpp occupants spread over them; the room's owner node killed."""

from __future__ import annotations

import asyncio
import signal
import time
import xml.etree.ElementTree as ET
from typing import Any

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from support import ServerProcess, connect, run
from support_cluster import DOWN, HEARTBEAT, ROOM_LEASE, users

MUC = "http://jabber.org/protocol/muc"
USER = "http://jabber.org/protocol/muc#user"
OWNER = "http://jabber.org/protocol/muc#owner"
DATA = "jabber:x:data"
MAM = "urn:xmpp:mam:2"
FORWARD = "urn:xmpp:forward:0"
ROOM = "lobby@conference.localhost"


async def login(node: ServerProcess, user: str) -> Any:
    client = await connect(node, user, "r", password="pw", presence=False)
    client.register_plugin("xep_0045")
    client.inbox = asyncio.Queue()
    for kind in ("presence", "message"):
        client.register_handler(
            Callback(
                f"inbox-{kind}", MatchXPath(f"{{jabber:client}}{kind}"), client.inbox.put_nowait
            )
        )
    client.send_presence()
    await client.plugin["xep_0199"].ping(jid="localhost", timeout=5)
    await asyncio.sleep(0.2)  # the other nodes learn of this session
    while not client.inbox.empty():
        client.inbox.get_nowait()
    return client


async def next_stanza(client: Any, match: Any, timeout: float = 10) -> Any:
    async def look() -> Any:
        while True:
            stanza = await client.inbox.get()
            if match(stanza):
                return stanza

    return await asyncio.wait_for(look(), timeout)


def codes(stanza: Any) -> set[str]:
    return {s.get("code") for s in stanza.xml.iter(f"{{{USER}}}status")}


def self_presence(nick: str, type_: str | None = None) -> Any:
    def match(s: Any) -> bool:
        return (
            s.name == "presence"
            and s["from"].full == f"{ROOM}/{nick}"
            and s.xml.get("type") == type_
            and "110" in codes(s)
        )

    return match


def groupchat(s: Any) -> bool:
    return s.name == "message" and s.xml.get("type") == "groupchat" and bool(s["body"])


async def join(client: Any, nick: str) -> set[str]:
    """Join; the self-presence's status codes (after the subject ends the join)."""
    presence = ET.Element("{jabber:client}presence", to=f"{ROOM}/{nick}")
    ET.SubElement(presence, f"{{{MUC}}}x")
    client.send_raw(ET.tostring(presence, encoding="unicode"))
    own = await next_stanza(client, self_presence(nick))
    await next_stanza(client, lambda s: s.xml.find("{jabber:client}subject") is not None)
    return codes(own)


async def configure(client: Any, **fields: str) -> None:
    iq = client.make_iq_set(ito=ROOM)
    x = ET.SubElement(ET.SubElement(iq.xml, f"{{{OWNER}}}query"), f"{{{DATA}}}x", type="submit")
    for var, value in fields.items():
        field = ET.SubElement(x, f"{{{DATA}}}field", var=f"muc#roomconfig_{var}")
        ET.SubElement(field, f"{{{DATA}}}value").text = value
    await iq.send(timeout=10)


async def archive(client: Any) -> list[str]:
    """The room's archive (XEP-0313), bodies in order, asked through the client's node."""
    iq = client.make_iq_set(ito=ROOM)
    ET.SubElement(iq.xml, f"{{{MAM}}}query", queryid="q")
    bodies: list[str] = []

    def take(stanza: Any) -> None:
        result = stanza.xml.find(f"{{{MAM}}}result")
        if result is not None:
            body = result.find(
                f".//{{{FORWARD}}}forwarded/{{jabber:client}}message/{{jabber:client}}body"
            )
            if body is not None:
                bodies.append(body.text or "")

    client.register_handler(
        Callback("mam", MatchXPath(f"{{jabber:client}}message/{{{MAM}}}result"), take)
    )
    try:
        await iq.send(timeout=10)
    finally:
        client.remove_handler("mam")
    return bodies


async def room_name(client: Any) -> str:
    info = await client.plugin["xep_0030"].get_info(jid=ROOM, timeout=10)
    identity = info.xml.find("{http://jabber.org/protocol/disco#info}query/{*}identity")
    return identity.get("name")


def test_occupants_on_three_nodes_see_every_message_once_in_one_order(three_nodes) -> None:
    n1, n2, n3 = three_nodes
    names = users(n1, "ann", "bob", "cat")

    async def scenario() -> None:
        clients = [await login(node, name) for node, name in zip(three_nodes, names, strict=True)]
        ann, bob, cat = clients
        assert await join(ann, "ann") == {"110", "201"}  # created on n1: n1 serves it
        await configure(ann)
        assert await join(bob, "bob") == {"110"}  # through n2, forwarded to n1
        assert await join(cat, "cat") == {"110"}
        # Everyone hears the others join, whatever the node.
        await next_stanza(ann, lambda s: s["from"].full == f"{ROOM}/cat")
        await next_stanza(bob, lambda s: s["from"].full == f"{ROOM}/cat")
        sent = []
        for round_ in range(5):  # all three talk at once
            for client, name in zip(clients, ("ann", "bob", "cat"), strict=True):
                text = f"{name} {round_}"
                client.send_message(mto=ROOM, mbody=text, mtype="groupchat")
                sent.append(text)
        seen = []
        for client in clients:
            got = [(await next_stanza(client, groupchat))["body"] for _ in sent]
            seen.append(got)
        assert sorted(seen[0]) == sorted(sent)  # each one once
        assert seen[0] == seen[1] == seen[2]  # in one order
        for client in clients:  # and nothing more
            await client.plugin["xep_0199"].ping(jid="localhost", timeout=5)
            assert not [s for s in _drain(client) if groupchat(s)]
        # The archive, asked through a node that does not serve the room: the same order.
        assert await archive(cat) == seen[0]
        # A private message between occupants on two other nodes than the room's.
        cat.send_message(mto=f"{ROOM}/bob", mbody="psst", mtype="chat")
        whisper = await next_stanza(bob, lambda s: s.name == "message" and s["body"] == "psst")
        assert whisper["from"].full == f"{ROOM}/cat"
        # Bob goes offline on n2: the others see him leave.
        await bob.disconnect()
        for client in (ann, cat):
            await next_stanza(
                client,
                lambda s: s["from"].full == f"{ROOM}/bob" and s.xml.get("type") == "unavailable",
            )
        for client in (ann, cat):
            await client.disconnect()

    run(scenario())


def _drain(client: Any) -> list[Any]:
    got = []
    while not client.inbox.empty():
        got.append(client.inbox.get_nowait())
    return got


def test_owner_killed_room_taken_over(three_nodes) -> None:
    n1, n2, n3 = three_nodes
    ann_name, bob_name, cat_name = users(n1, "ann", "bob", "cat")

    async def scenario() -> None:
        ann, bob, cat = [
            await login(node, name)
            for node, name in ((n1, ann_name), (n2, bob_name), (n3, cat_name))
        ]
        await join(ann, "ann")  # n1 serves the room
        await configure(ann, persistentroom="1", roomname="Survives")
        await join(bob, "bob")
        await join(cat, "cat")
        bob.send_message(mto=ROOM, mbody="before", mtype="groupchat")
        await next_stanza(bob, lambda s: groupchat(s) and s["body"] == "before")  # acknowledged
        await next_stanza(cat, lambda s: groupchat(s) and s["body"] == "before")

        assert n1.proc is not None
        killed = time.monotonic()
        n1.proc.send_signal(signal.SIGKILL)
        n1.proc.wait()
        # Bob and cat are seated again on the node that took the room over: their own
        # presence again (status 110), no history replayed.
        for client, nick in ((bob, "bob"), (cat, "cat")):
            await next_stanza(client, self_presence(nick), timeout=ROOM_LEASE + 10)
        took = time.monotonic() - killed
        assert took <= ROOM_LEASE * 1.25 + 3, took  # lease, one poll, slack for a loaded box
        print(f"takeover: {took:.2f}s after SIGKILL (room_lease {ROOM_LEASE}s)")
        # Ann went with her node: the others are told she left (status 333).
        gone = await next_stanza(
            cat,
            lambda s: s["from"].full == f"{ROOM}/ann" and s.xml.get("type") == "unavailable",
            timeout=DOWN + ROOM_LEASE + 10,
        )
        assert "333" in codes(gone)
        # They keep talking, each message once.
        bob.send_message(mto=ROOM, mbody="after", mtype="groupchat")
        await next_stanza(bob, lambda s: groupchat(s) and s["body"] == "after")
        await next_stanza(cat, lambda s: groupchat(s) and s["body"] == "after")
        cat.send_message(mto=ROOM, mbody="still here", mtype="groupchat")
        await next_stanza(bob, lambda s: groupchat(s) and s["body"] == "still here")
        await bob.plugin["xep_0199"].ping(jid="localhost", timeout=5)
        assert not [s for s in _drain(bob) if groupchat(s) and s["body"] in ("before", "after")]
        # The archive has what was acknowledged before the kill, once; the config survived.
        assert await archive(cat) == ["before", "after", "still here"]
        assert await room_name(bob) == "Survives"
        for client in (bob, cat):
            await client.disconnect()
        ann.abort()

    run(scenario())


def test_old_owner_waking_up_after_the_takeover_writes_nothing(three_nodes) -> None:
    """The owner paused (SIGSTOP) past its lease: the room moves on; when it runs again it
    serves the room no more, and its user's message goes to the new owner, archived once."""
    n1, n2, n3 = three_nodes
    ann_name, bob_name, cat_name = users(n1, "ann", "bob", "cat")

    async def scenario() -> None:
        ann, bob, cat = [
            await login(node, name)
            for node, name in ((n1, ann_name), (n2, bob_name), (n3, cat_name))
        ]
        await join(ann, "ann")  # n1 serves the room
        await configure(ann, persistentroom="1")
        await join(bob, "bob")
        await join(cat, "cat")
        assert n1.proc is not None
        n1.proc.send_signal(signal.SIGSTOP)
        try:
            await next_stanza(bob, self_presence("bob"), timeout=ROOM_LEASE + 10)  # taken over
            await next_stanza(cat, self_presence("cat"), timeout=ROOM_LEASE + 10)
            bob.send_message(mto=ROOM, mbody="while n1 slept", mtype="groupchat")
            await next_stanza(cat, lambda s: groupchat(s) and s["body"] == "while n1 slept")
        finally:
            n1.proc.send_signal(signal.SIGCONT)
        await asyncio.sleep(2 * HEARTBEAT + 1)  # n1 is heard again
        ann.send_message(mto=ROOM, mbody="ann is back", mtype="groupchat")
        for client in (bob, cat):
            await next_stanza(client, lambda s: groupchat(s) and s["body"] == "ann is back")
        await next_stanza(ann, lambda s: groupchat(s) and s["body"] == "ann is back")
        assert await archive(bob) == ["while n1 slept", "ann is back"]
        assert "lost the lease of room" in n1.log_text()  # n1 knows it is not the owner
        for client in (ann, bob, cat):
            await client.disconnect()

    run(scenario())
