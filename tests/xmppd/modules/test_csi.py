"""Client State Indication (XEP-0352): what an inactive client is sent, and when."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from support import Client, ServerProcess, connect, run

DELAY = "{urn:xmpp:delay}delay"
CHATSTATES = "http://jabber.org/protocol/chatstates"
USERS = ["alice", "bob", "carol"]
INBOXES: dict[Client, asyncio.Queue[slixmpp.ElementBase]] = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("csi"), "[modules.csi]\nqueue_size = 3\n")
    for user in USERS:
        proc.add_user(user, f"{user}-pw")
    proc.start()
    yield proc
    proc.stop()


async def login_csi(server: ServerProcess, user: str) -> Client:
    """A client with the CSI plugin (registered before connecting: it reads stream features)
    that collects every presence and message, in arrival order."""
    client = Client(f"{user}@localhost/csi", f"{user}-pw", "SCRAM-SHA-256", server.ca_file)
    client.register_plugin("xep_0352")
    client.enable_direct_tls, client.enable_starttls = False, True
    inbox: asyncio.Queue[slixmpp.ElementBase] = asyncio.Queue()
    for kind in ("message", "presence"):
        client.register_handler(
            Callback(kind, MatchXPath(f"{{jabber:client}}{kind}"), inbox.put_nowait)
        )
    INBOXES[client] = inbox
    client.connect("127.0.0.1", server.port)
    await asyncio.wait_for(client.started, 10)
    return client


async def login(server: ServerProcess, user: str, resource: str = "r") -> Client:
    return await connect(server, user, resource, password=f"{user}-pw", presence=False)


async def synced(client: Client) -> None:
    await client.plugin["xep_0199"].ping(jid="localhost", timeout=5)


def presence(sender: Client, to: Client, status: str) -> None:
    sender.send_presence(pto=to.boundjid.full, pstatus=status)


def chat_state(sender: Client, to: Client, state: str) -> None:
    msg = sender.make_message(mto=to.boundjid.full, mtype="chat")
    msg.append(ET.Element(f"{{{CHATSTATES}}}{state}"))
    msg.send()


def describe(stanza: slixmpp.ElementBase) -> str:
    """A short name for what arrived: "p:<status>", "cs:<state>" or "m:<body>"."""
    if stanza.name == "presence":
        return f"p:{stanza['status']}"
    if stanza["body"]:
        return f"m:{stanza['body']}"
    state = next(iter(child.tag for child in stanza.xml if CHATSTATES in child.tag))
    return f"cs:{state.split('}')[1]}"


async def receive(client: Client, count: int) -> list[slixmpp.ElementBase]:
    return [await asyncio.wait_for(INBOXES[client].get(), 5) for _ in range(count)]


async def go_inactive(client: Client) -> None:
    client.plugin["xep_0352"].send_inactive()
    await synced(client)  # in-order processing: the nonza is handled before the ping


def test_inactive_holds_presence_and_chat_states_until_a_message(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice = await login_csi(server, "alice")
        assert alice.plugin["xep_0352"].enabled  # the stream feature was offered
        bob = await login(server, "bob")
        await go_inactive(alice)

        presence(bob, alice, "p1")
        presence(bob, alice, "p2")
        chat_state(bob, alice, "composing")
        presence(bob, alice, "p3")
        await synced(bob)
        assert INBOXES[alice].empty()  # all held (bob's stanzas were all handled)

        bob.send_message(mto=alice.boundjid.full, mbody="hello", mtype="chat")
        got = await receive(alice, 3)
        # Only the latest presence of a sender is kept; order is preserved; the message last.
        assert [describe(s) for s in got] == ["cs:composing", "p:p3", "m:hello"]
        assert all(s.xml.find(DELAY) is not None for s in got[:2])  # held: stamped (XEP-0203)
        assert got[2].xml.find(DELAY) is None

        # An iq is important too: what is held arrives before its answer.
        presence(bob, alice, "p4")
        await synced(bob)
        await synced(alice)
        assert [describe(s) for s in await receive(alice, 1)] == ["p:p4"]
        await asyncio.gather(alice.close(), bob.close())

    run(scenario())


def test_active_flushes_and_stops_holding(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice = await login_csi(server, "alice")
        bob = await login(server, "bob", "r2")
        await go_inactive(alice)
        chat_state(bob, alice, "composing")
        presence(bob, alice, "away")
        await synced(bob)
        assert INBOXES[alice].empty()

        alice.plugin["xep_0352"].send_active()
        got = await receive(alice, 2)
        assert [describe(s) for s in got] == ["cs:composing", "p:away"]
        assert all(s.xml.find(DELAY) is not None for s in got)  # they were held
        presence(bob, alice, "back")  # active again: delivered at once, not held
        got = await receive(alice, 1)
        assert describe(got[0]) == "p:back" and got[0].xml.find(DELAY) is None
        await asyncio.gather(alice.close(), bob.close())

    run(scenario())


def test_a_full_buffer_is_flushed(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice = await login_csi(server, "alice")
        bob, carol = await login(server, "bob", "r3"), await login(server, "carol")
        await go_inactive(alice)
        for state in ("composing", "paused", "active"):  # queue_size = 3: all held
            chat_state(bob, alice, state)
        presence(carol, alice, "carol here")  # one more: everything goes out, in order
        got = await receive(alice, 4)
        assert [describe(s) for s in got] == [
            "cs:composing",
            "cs:paused",
            "cs:active",
            "p:carol here",
        ]
        assert [s.xml.find(DELAY) is not None for s in got] == [True, True, True, False]
        await asyncio.gather(alice.close(), bob.close(), carol.close())

    run(scenario())


def test_a_call_proposal_is_not_held(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice = await login_csi(server, "alice")
        bob = await login(server, "bob", "r4")
        await go_inactive(alice)
        chat_state(bob, alice, "composing")
        # XEP-0353: a call rings with a bodiless message; holding it would delay the call.
        call = bob.make_message(mto=alice.boundjid.full, mtype="chat")
        propose = ET.SubElement(call.xml, "{urn:xmpp:jingle-message:0}propose", id="call1")
        ET.SubElement(propose, "{urn:xmpp:jingle:apps:rtp:1}description", media="audio")
        call.send()
        got = await receive(alice, 2)
        assert describe(got[0]) == "cs:composing"  # flushed first: order is kept
        assert got[1].xml.find("{urn:xmpp:jingle-message:0}propose") is not None
        assert got[1].xml.find(DELAY) is None
        await asyncio.gather(alice.close(), bob.close())

    run(scenario())
