"""Message Carbons (XEP-0280) with three resources of one account and a real contact."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from support import Client, ServerProcess, connect, run

CARBONS = "urn:xmpp:carbons:2"
FORWARDED_MESSAGE = "{urn:xmpp:forward:0}forwarded/{jabber:client}message"
MESSAGE = "{jabber:client}message"
USERS = ["alice", "bob", "carol"]
INBOXES: dict[Client, asyncio.Queue[slixmpp.Message]] = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("carbons"))
    for user in USERS:
        proc.add_user(user, f"{user}-pw")
    proc.start()
    yield proc
    proc.stop()


async def login(server: ServerProcess, user: str, resource: str, priority: int = 0) -> Client:
    client = await connect(server, user, resource, password=f"{user}-pw", presence=False)
    client.register_plugin("xep_0280")
    # Every message, with or without a body (slixmpp's "message" event needs a body).
    inbox: asyncio.Queue[slixmpp.Message] = asyncio.Queue()
    client.register_handler(Callback("inbox", MatchXPath(MESSAGE), inbox.put_nowait))
    INBOXES[client] = inbox
    client.send_presence(ppriority=priority)
    await synced(client)
    return client


async def next_message(client: Client) -> slixmpp.Message:
    return await asyncio.wait_for(INBOXES[client].get(), 5)


async def synced(client: Client) -> None:
    """A round trip to the server: everything the client sent before has been processed."""
    await client.plugin["xep_0199"].ping(jid="localhost", timeout=5)


def carbon(msg: slixmpp.Message, direction: str) -> tuple[str, str]:
    """(to, body) of the message inside a carbon copy, after checking the wrapper."""
    wrapper = msg.xml.find(f"{{{CARBONS}}}{direction}")
    assert wrapper is not None, f"expected a {direction} carbon, got {msg}"
    assert msg["from"].full == msg["to"].bare  # §7/§8: from the user's bare JID
    inner = wrapper.find(FORWARDED_MESSAGE)
    assert inner is not None
    return inner.get("to"), inner.findtext("{jabber:client}body")


def plain(msg: slixmpp.Message) -> str:
    assert msg.xml.find(f"{{{CARBONS}}}received") is None
    assert msg.xml.find(f"{{{CARBONS}}}sent") is None
    return msg["body"]


async def close_all(*clients: Client) -> None:
    for client in clients:
        await client.close()


def test_received_and_sent_carbons_reach_other_enabled_resources(server: ServerProcess) -> None:
    async def scenario() -> None:
        a = await login(server, "alice", "a", priority=5)
        b = await login(server, "alice", "b")
        c = await login(server, "alice", "c")  # never enables carbons
        bob = await login(server, "bob", "x")
        await a.plugin["xep_0280"].enable()
        await b.plugin["xep_0280"].enable()

        # To a full JID: the addressed resource gets it, the other enabled one a copy.
        bob.send_message(mto="alice@localhost/a", mbody="to a", mtype="chat")
        assert plain(await next_message(a)) == "to a"
        assert carbon(await next_message(b), "received") == ("alice@localhost/a", "to a")

        # To the bare JID: delivered to the top-priority resource (a), copied to b.
        bob.send_message(mto="alice@localhost", mbody="to alice", mtype="chat")
        assert plain(await next_message(a)) == "to alice"
        assert carbon(await next_message(b), "received")[1] == "to alice"

        # Sent by a: b gets a sent copy, a none.
        a.send_message(mto="bob@localhost/x", mbody="from a", mtype="chat")
        assert plain(await next_message(bob)) == "from a"
        assert carbon(await next_message(b), "sent") == ("bob@localhost/x", "from a")

        # Sent by c, which has not enabled carbons: still copied to a and b (§8).
        c.send_message(mto="bob@localhost", mbody="from c", mtype="chat")
        assert plain(await next_message(bob)) == "from c"
        assert carbon(await next_message(a), "sent")[1] == "from c"
        assert carbon(await next_message(b), "sent")[1] == "from c"

        # c got nothing all along: the first thing it sees is this marker.
        bob.send_message(mto="alice@localhost/c", mbody="marker c", mtype="chat")
        assert plain(await next_message(c)) == "marker c"
        assert carbon(await next_message(a), "received")[1] == "marker c"
        assert carbon(await next_message(b), "received")[1] == "marker c"
        await close_all(a, b, c, bob)

    run(scenario())


def test_between_own_resources_one_copy_and_none_to_the_sender(server: ServerProcess) -> None:
    async def scenario() -> None:
        a = await login(server, "carol", "a")
        b = await login(server, "carol", "b")
        c = await login(server, "carol", "c")
        for client in (a, b, c):
            await client.plugin["xep_0280"].enable()
        a.send_message(mto="carol@localhost/b", mbody="note to b", mtype="chat")
        assert plain(await next_message(b)) == "note to b"
        assert carbon(await next_message(c), "received") == ("carol@localhost/b", "note to b")
        # a, the sender, got neither the message nor a copy: its first message is this one.
        b.send_message(mto="carol@localhost/a", mbody="reply to a", mtype="chat")
        assert plain(await next_message(a)) == "reply to a"
        assert carbon(await next_message(c), "received")[1] == "reply to a"
        await close_all(a, b, c)

    run(scenario())


def test_private_hint_ineligible_types_and_disable(server: ServerProcess) -> None:
    async def scenario() -> None:
        a = await login(server, "alice", "a2", priority=5)
        b = await login(server, "alice", "b2")
        bob = await login(server, "bob", "y")
        await a.plugin["xep_0280"].enable()
        await b.plugin["xep_0280"].enable()

        private = a.make_message(mto="bob@localhost/y", mbody="secret", mtype="chat")
        private.xml.append(slixmpp.xmlstream.ET.Element(f"{{{CARBONS}}}private"))
        private.xml.append(slixmpp.xmlstream.ET.Element("{urn:xmpp:hints}no-copy"))
        private.send()
        assert plain(await next_message(bob)) == "secret"
        # Inbound private and no-copy alone are not copied either.
        inbound = bob.make_message(mto="alice@localhost/a2", mbody="psst", mtype="chat")
        inbound.xml.append(slixmpp.xmlstream.ET.Element("{urn:xmpp:hints}no-copy"))
        inbound.send()
        assert plain(await next_message(a)) == "psst"
        # Headlines and bodiless normal messages are not instant messages (§6.1).
        bob.send_message(mto="alice@localhost/a2", mbody="news", mtype="headline")
        assert plain(await next_message(a)) == "news"
        bob.send_message(mto="alice@localhost/a2", mbody="normal one", mtype="normal")
        assert plain(await next_message(a)) == "normal one"
        # b saw only the eligible normal message with a body.
        assert carbon(await next_message(b), "received")[1] == "normal one"

        await b.plugin["xep_0280"].disable()
        await b.plugin["xep_0280"].disable()  # twice is not an error (§10.1)
        bob.send_message(mto="alice@localhost/a2", mbody="after disable", mtype="chat")
        assert plain(await next_message(a)) == "after disable"
        bob.send_message(mto="alice@localhost/b2", mbody="marker b", mtype="chat")
        assert plain(await next_message(b)) == "marker b"
        await close_all(a, b, bob)

    run(scenario())


def test_feature_is_advertised_and_enable_elsewhere_is_refused(server: ServerProcess) -> None:
    async def scenario() -> None:
        a = await login(server, "alice", "disco")
        info = await a.plugin["xep_0030"].get_info(jid="localhost")
        features = info["disco_info"]["features"]
        assert CARBONS in features and "urn:xmpp:carbons:rules:0" in features
        iq = a.make_iq_set(ito="bob@localhost")  # someone else's carbons: not ours to change
        iq.enable("carbon_enable")
        with pytest.raises(slixmpp.exceptions.IqError) as raised:
            await iq.send(timeout=5)
        assert raised.value.iq["error"]["condition"] == "service-unavailable"
        await a.close()

    run(scenario())


def test_no_copies_of_a_message_bounced_for_a_resource_that_is_gone(
    server: ServerProcess,
) -> None:
    async def scenario() -> None:
        a = await login(server, "alice", "a3")
        bob = await login(server, "bob", "z")
        await a.plugin["xep_0280"].enable()
        # RFC 6121 §8.5.3.2.1: a normal message to a gone resource bounces; it was delivered
        # to nobody, so nobody gets a copy of it (§7: copies follow delivery).
        bob.send_message(mto="alice@localhost/gone", mbody="normal to gone", mtype="normal")
        bounce = await next_message(bob)
        assert bounce["type"] == "error" and bounce["error"]["condition"] == "service-unavailable"
        bob.send_message(mto="alice@localhost/a3", mbody="marker", mtype="chat")
        assert plain(await next_message(a)) == "marker"
        await close_all(a, bob)

    run(scenario())
