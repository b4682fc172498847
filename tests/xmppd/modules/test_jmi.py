"""XEP-0353 Jingle Message Initiation: a call rings on every client of the account, the answer
reaches every client of both accounts (XEP-0280), and a call to an offline account is kept
(XEP-0334 <store/>: offline storage and the archive)."""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from support import Client, ServerProcess, connect, run

JMI = "urn:xmpp:jingle-message:0"
CARBONS = "urn:xmpp:carbons:2"
MAM = "urn:xmpp:mam:2"
FORWARDED = "{urn:xmpp:forward:0}forwarded"
MESSAGE = "{jabber:client}message"
USERS = ["alice", "bob", "carol", "dave", "erin"]
INBOXES: dict[Client, asyncio.Queue[ET.Element]] = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("jmi"))
    for user in USERS:
        proc.add_user(user, f"{user}-pw")
    proc.start()
    yield proc
    proc.stop()


async def login(
    server: ServerProcess, user: str, resource: str, priority: int = 0, carbons: bool = True
) -> Client:
    client = await connect(server, user, resource, password=f"{user}-pw", presence=False)
    client.register_plugin("xep_0280")
    inbox: asyncio.Queue[ET.Element] = asyncio.Queue()
    client.register_handler(
        Callback("inbox", MatchXPath(MESSAGE), lambda m: inbox.put_nowait(m.xml))
    )
    INBOXES[client] = inbox
    if carbons:
        await client.plugin["xep_0280"].enable()
    client.send_presence(ppriority=priority)
    await client.plugin["xep_0199"].ping(jid="localhost", timeout=5)
    return client


def jmi(client: Client, to: str, action: str, sid: str) -> None:
    msg = client.make_message(mto=to, mtype="chat")
    el = ET.SubElement(msg.xml, f"{{{JMI}}}{action}", id=sid)
    if action == "propose":
        ET.SubElement(el, "{urn:xmpp:jingle:apps:rtp:1}description", media="audio")
    ET.SubElement(msg.xml, "{urn:xmpp:hints}store")
    msg.send()


async def received(client: Client, action: str, sid: str, wrapper: str | None = None) -> str:
    """The next message must carry `action` for `sid`, directly or inside a carbon `wrapper`;
    returns its from."""
    msg = await asyncio.wait_for(INBOXES[client].get(), 5)
    inner = msg
    if wrapper is not None:
        inner = msg.find(f"{{{CARBONS}}}{wrapper}/{FORWARDED}/{MESSAGE}")
        assert inner is not None, f"expected a {wrapper} carbon, got {ET.tostring(msg)!r}"
    else:
        assert msg.find(f"{{{CARBONS}}}received") is None, ET.tostring(msg)
    el = inner.find(f"{{{JMI}}}{action}")
    assert el is not None and el.get("id") == sid, ET.tostring(msg)
    return inner.get("from")


async def nothing_more(*clients: Client) -> None:
    await asyncio.sleep(0.3)
    for client in clients:
        assert INBOXES[client].empty(), ET.tostring(INBOXES[client].get_nowait())


async def close_all(*clients: Client) -> None:
    for client in clients:
        await client.close()


def test_a_call_rings_everywhere_and_the_answer_reaches_every_client(
    server: ServerProcess,
) -> None:
    async def scenario() -> None:
        alice = await login(server, "alice", "laptop")
        alice_phone = await login(server, "alice", "phone")
        phone = await login(server, "bob", "phone", priority=5)
        desk = await login(server, "bob", "desk", priority=0)
        tablet = await login(server, "bob", "tablet", priority=-1)  # "works with negative"
        sid = str(uuid.uuid4())
        jmi(alice, "bob@localhost", "propose", sid)
        # every non-negative resource gets the propose itself (rings), whatever its priority
        assert await received(phone, "propose", sid) == "alice@localhost/laptop"
        await received(desk, "propose", sid)
        await received(tablet, "propose", sid, wrapper="received")  # carbons: negative too
        await received(alice_phone, "propose", sid, wrapper="sent")
        # desk accepts: alice's clients get the proceed, bob's others see it was taken
        jmi(desk, "alice@localhost", "proceed", sid)
        await received(alice, "proceed", sid)
        await received(alice_phone, "proceed", sid)
        await received(phone, "proceed", sid, wrapper="sent")
        await received(tablet, "proceed", sid, wrapper="sent")
        jmi(alice, "bob@localhost", "finish", sid)
        for client in (phone, desk):
            await received(client, "finish", sid)
        await received(tablet, "finish", sid, wrapper="received")
        await received(alice_phone, "finish", sid, wrapper="sent")
        await nothing_more(alice, alice_phone, phone, desk, tablet)
        await close_all(alice, alice_phone, phone, desk, tablet)

    run(scenario())


def test_a_client_without_carbons_below_the_top_priority_still_rings(
    server: ServerProcess,
) -> None:
    async def scenario() -> None:
        carol = await login(server, "carol", "c")
        top = await login(server, "dave", "top", priority=10, carbons=False)
        low = await login(server, "dave", "low", priority=1, carbons=False)
        sid = str(uuid.uuid4())
        jmi(carol, "dave@localhost", "propose", sid)
        await received(top, "propose", sid)
        await received(low, "propose", sid)
        jmi(carol, "dave@localhost", "retract", sid)
        await received(top, "retract", sid)
        await received(low, "retract", sid)
        # a plain chat message still goes to the top-priority resource only (RFC 6121)
        carol.send_message(mto="dave@localhost", mbody="hi", mtype="chat")
        assert (await asyncio.wait_for(INBOXES[top].get(), 5)).findtext(
            "{jabber:client}body"
        ) == "hi"
        await nothing_more(top, low)
        await close_all(carol, top, low)

    run(scenario())


def test_a_missed_call_is_kept_offline_and_in_the_archive(server: ServerProcess) -> None:
    async def scenario() -> None:
        carol = await login(server, "carol", "c2")
        sid = str(uuid.uuid4())
        jmi(carol, "erin@localhost", "propose", sid)  # erin is offline
        jmi(carol, "erin@localhost", "retract", sid)
        await carol.plugin["xep_0199"].ping(jid="localhost", timeout=5)
        erin = await login(server, "erin", "later")
        await received(erin, "propose", sid)
        await received(erin, "retract", sid)
        # the archive has both, so that every device can show the missed call
        results: list[ET.Element] = []
        erin.register_handler(
            Callback(
                "mam", MatchXPath(f"{MESSAGE}/{{{MAM}}}result"), lambda m: results.append(m.xml)
            )
        )
        iq = erin.make_iq_set()
        ET.SubElement(iq.xml, f"{{{MAM}}}query", queryid="q1")
        await iq.send(timeout=5)
        kept = [
            child.tag
            for r in results
            for child in r.find(f"{{{MAM}}}result/{FORWARDED}/{MESSAGE}")
            if child.tag.startswith(f"{{{JMI}}}")
        ]
        assert kept[-2:] == [f"{{{JMI}}}propose", f"{{{JMI}}}retract"]
        await close_all(carol, erin)

    run(scenario())


_ = slixmpp  # the clients are slixmpp's
