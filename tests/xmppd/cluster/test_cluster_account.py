"""One account with sessions on two real nodes: carbons, subscription answers, the other
resources at login, blocking lists, concurrent roster edits (shared Redis + PostgreSQL)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from support import run
from support_cluster import barrier, befriend, body, login, nothing, presence, users, wait_for

CARBONS = "urn:xmpp:carbons:2"
BLOCKING = "urn:xmpp:blocking"
ROSTER = "jabber:iq:roster"


async def iq_set(client, ns: str, name: str, *items: str) -> None:
    iq = client.make_iq_set()
    child = ET.Element(f"{{{ns}}}{name}")
    for jid in items:
        ET.SubElement(child, f"{{{ns}}}item", jid=jid)
    iq.append(child)
    await iq.send(timeout=5)


def every_message(client) -> None:
    """slixmpp's "message" event skips bodiless stanzas such as carbons: take them all."""
    client.register_handler(
        Callback("all", MatchXPath("{jabber:client}message"), client.inbox.put_nowait)
    )


def carbon(direction: str, text: str):
    def match(s) -> bool:
        if s.name != "message":
            return False
        found = s.xml.find(f"{{{CARBONS}}}{direction}")
        if found is None:
            return False
        inner = found.find(".//{jabber:client}body")
        return inner is not None and inner.text == text

    return match


def test_carbons_reach_resources_on_other_nodes(nodes) -> None:
    n1, n2 = nodes
    alice, bob = users(n1, "alice", "bob")

    async def scenario() -> None:
        desk = await login(n1, alice, "desk")
        phone = await login(n2, alice, "phone")
        every_message(phone)
        cb = await login(n1, bob, "b")
        await iq_set(phone, CARBONS, "enable")
        await asyncio.sleep(0.3)  # the carbons state is gossiped
        # Received copy: bob (node 1) writes to alice's desk (node 1); her phone is on node 2.
        cb.send_message(mto=f"{alice}@localhost/desk", mbody="to the desk", mtype="chat")
        await wait_for(desk, body("to the desk"))
        await wait_for(phone, carbon("received", "to the desk"))
        # Sent copy: the desk (node 1) writes to bob; the phone (node 2) sees it.
        desk.send_message(mto=f"{bob}@localhost", mbody="from the desk", mtype="chat")
        await wait_for(cb, body("from the desk"))
        await wait_for(phone, carbon("sent", "from the desk"))
        # Carbons off on node 2: no more copies there.
        await iq_set(phone, CARBONS, "disable")
        await asyncio.sleep(0.3)
        desk.send_message(mto=f"{bob}@localhost", mbody="no copy", mtype="chat")
        await wait_for(cb, body("no copy"))
        assert await nothing(phone, carbon("sent", "no copy"))
        for c in (desk, phone, cb):
            await c.close()

    run(scenario())


def test_subscribed_reaches_every_node_and_own_resources_meet(nodes) -> None:
    n1, n2 = nodes
    alice, bob = users(n1, "alice", "bob")

    async def scenario() -> None:
        desk = await login(n1, alice, "desk")
        phone = await login(n2, alice, "phone")
        # §4.2.2: the phone, logging in on node 2, got the desk's presence from node 1.
        await wait_for(phone, presence(f"{alice}@localhost/desk"))
        await wait_for(desk, presence(f"{alice}@localhost/phone"))
        cb = await login(n2, bob, "b")
        desk.send_presence(pto=f"{bob}@localhost", ptype="subscribe")
        await barrier(desk)
        await wait_for(cb, presence(f"{alice}@localhost", "subscribe"))
        cb.send_presence(pto=f"{alice}@localhost", ptype="subscribed")
        await barrier(cb)
        # §3.1.6: both of alice's resources get the answer, on both nodes.
        for session in (desk, phone):
            await wait_for(session, presence(f"{bob}@localhost", "subscribed"))
        cb.send_presence(pto=f"{alice}@localhost", ptype="unsubscribed")
        await barrier(cb)
        for session in (desk, phone):
            await wait_for(session, presence(f"{bob}@localhost", "unsubscribed"))
        # A third resource on node 1 hears of both others, on both nodes.
        await asyncio.sleep(0.3)
        tablet = await login(n1, alice, "tablet")
        await wait_for(tablet, presence(f"{alice}@localhost/desk"))
        await wait_for(tablet, presence(f"{alice}@localhost/phone"))
        for c in (desk, phone, cb, tablet):
            await c.close()

    run(scenario())


def test_blocking_list_changes_on_every_node(nodes) -> None:
    n1, n2 = nodes
    alice, bob = users(n1, "alice", "bob")

    async def scenario() -> None:
        desk = await login(n1, alice, "desk")
        phone = await login(n2, alice, "phone")
        cb = await login(n2, bob, "b")
        await befriend(desk, cb)
        # Both nodes have loaded the (empty) list; node 1 stores a block.
        cb.send_message(mto=f"{alice}@localhost/phone", mbody="before", mtype="chat")
        await wait_for(phone, body("before"))
        await iq_set(desk, BLOCKING, "block", f"{bob}@localhost")
        await asyncio.sleep(0.3)
        # Node 2 enforces it for its own user (bob) writing to alice's session on node 2.
        cb.send_message(mto=f"{alice}@localhost/phone", mbody="blocked", mtype="chat")
        await barrier(cb)
        assert await nothing(phone, body("blocked"))
        await iq_set(desk, BLOCKING, "unblock", f"{bob}@localhost")
        await asyncio.sleep(0.3)
        cb.send_message(mto=f"{alice}@localhost/phone", mbody="after", mtype="chat")
        await wait_for(phone, body("after"))
        for c in (desk, phone, cb):
            await c.close()

    run(scenario())
