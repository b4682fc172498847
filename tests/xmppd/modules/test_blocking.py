"""Blocking Command (XEP-0191) with real clients: the list, pushes, bounces and presence."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import slixmpp
from slixmpp.exceptions import IqError
from support import Client, ServerProcess, connect, run

BLOCKING = "urn:xmpp:blocking"
SERVER_CONFIG = "[modules.blocking]\nmax_items = 3\n"  # read by the `im` fixture


IM = Any  # the `im` fixture of tests/xmppd/modules/conftest.py: a server and login helpers


def presence_of(stanza: Any, type_: str | None, frm: str) -> bool:
    """A presence of `type_` (None: available) from the full JID `frm`."""
    got = stanza.xml.get("type")  # slixmpp's ["type"] reports <show/> for available presence
    return stanza.name == "presence" and got == type_ and stanza["from"].full == frm


async def nothing_more(im: IM, marker_from: Client, client: Client) -> None:
    """Nothing but the client's own presence echoes arrives before a fresh marker."""
    seen = await im.until_marker(marker_from, client)
    assert [s for s in seen if s["from"].bare != client.boundjid.bare] == []


async def blocklist(client: Client) -> set[str]:
    return {str(jid) for jid in await client.plugin["xep_0191"].get_blocked_jids(timeout=5)}


async def error_of(request: asyncio.Future) -> str:
    with pytest.raises(IqError) as raised:
        await request
    return raised.value.iq["error"]["condition"]


def pushes_of(client: Client) -> asyncio.Queue[slixmpp.Iq]:
    client.register_plugin("xep_0191")
    queue: asyncio.Queue[slixmpp.Iq] = asyncio.Queue()
    client.add_event_handler("blocked", queue.put_nowait)
    client.add_event_handler("unblocked", queue.put_nowait)
    return queue


async def next_push(queue: asyncio.Queue[slixmpp.Iq]) -> tuple[str, list[str]]:
    iq = await asyncio.wait_for(queue.get(), 5)
    change = iq.xml[0]
    items = [item.get("jid") for item in change]
    return change.tag.split("}")[1], items


async def befriend(im: Any, a: Client, b: Client) -> None:
    """Mutual presence subscription (RFC 6121 §3.1), each step processed before the next."""
    steps = [(a, b, "subscribe"), (b, a, "subscribed"), (b, a, "subscribe"), (a, b, "subscribed")]
    for sender, receiver, type_ in steps:
        im.subscription(sender, receiver.boundjid.bare, type_)
        await im.barrier(sender)


def test_list_edits_pushes_and_errors(im: IM) -> None:
    async def scenario() -> None:
        (user,) = im.users("ann")
        one = await im.login(user, "one")
        two = await im.login(user, "two")
        three = await im.login(user, "three")  # never asks for the list: gets no pushes
        pushes_one, pushes_two, pushes_three = pushes_of(one), pushes_of(two), pushes_of(three)
        assert await blocklist(one) == set() and await blocklist(two) == set()

        await one.plugin["xep_0191"].block(["Spam@localhost", "example.net"], timeout=5)
        for queue in (pushes_one, pushes_two):  # §3.3: every resource that asked for the list
            assert await next_push(queue) == ("block", ["spam@localhost", "example.net"])
        assert await blocklist(two) == {"spam@localhost", "example.net"}

        await two.plugin["xep_0191"].unblock("example.net", timeout=5)
        for queue in (pushes_one, pushes_two):
            assert await next_push(queue) == ("unblock", ["example.net"])

        # Errors: no item, a malformed JID, more than max_items (3); nothing changes.
        empty = one.make_iq_set()
        empty.enable("block")
        assert await error_of(empty.send(timeout=5)) == "bad-request"
        bad = one.plugin["xep_0191"].block("a@b@c", timeout=5)
        assert await error_of(bad) == "jid-malformed"
        many = one.plugin["xep_0191"].block(["x@localhost", "y@localhost", "z@localhost"])
        assert await error_of(many) == "not-acceptable"
        assert await blocklist(one) == {"spam@localhost"}

        # Unblock all: an empty <unblock/>, pushed as such.
        everything = one.make_iq_set()
        everything.enable("unblock")
        await everything.send(timeout=5)
        for queue in (pushes_one, pushes_two):
            assert await next_push(queue) == ("unblock", [])
        assert await blocklist(one) == set()
        assert pushes_three.empty()
        await asyncio.gather(*(c.close() for c in (one, two, three)))

    run(scenario())


def test_stanzas_from_and_to_a_blocked_jid(im: IM) -> None:
    async def scenario() -> None:
        ann, bob, cat = im.users("ann", "bob", "cat")
        a, b, c = await im.login(ann), await im.login(bob), await im.login(cat)
        a.register_plugin("xep_0191")
        await a.plugin["xep_0191"].block(f"{bob}@localhost", timeout=5)

        # Inbound message: bounced with service-unavailable, never delivered.
        b.send_message(mto=a.boundjid.full, mbody="let me in", mtype="chat")
        bounce = await im.wait_for(b, lambda s: s.name == "message" and s["type"] == "error")
        assert bounce["error"]["condition"] == "service-unavailable"
        await nothing_more(im, c, a)
        # Inbound iq get: service-unavailable (§3.3), even to the account's bare JID.
        ping = b.plugin["xep_0199"].send_ping(slixmpp.JID(a.boundjid.full), timeout=5)
        assert await error_of(ping) == "service-unavailable"
        vcard = b.make_iq_get(ito=f"{ann}@localhost")
        vcard.append(ET.Element("{vcard-temp}vCard"))
        assert await error_of(vcard.send(timeout=5)) == "service-unavailable"

        # Outbound: not-acceptable with <blocked/>, and nothing reaches the blocked JID.
        a.send_message(mto=f"{bob}@localhost", mbody="psst", mtype="chat")
        refused = await im.wait_for(a, lambda s: s.name == "message" and s["type"] == "error")
        assert refused["error"]["condition"] == "not-acceptable"
        assert (
            refused.xml.find("{jabber:client}error/{urn:xmpp:blocking:errors}blocked") is not None
        )
        assert refused["body"] == "psst"
        await nothing_more(im, c, b)

        await a.plugin["xep_0191"].unblock(f"{bob}@localhost", timeout=5)
        b.send_message(mto=a.boundjid.full, mbody="hello again", mtype="chat")
        got = await im.wait_for(a, lambda s: s.name == "message")
        assert got["body"] == "hello again"
        await asyncio.gather(*(x.close() for x in (a, b, c)))

    run(scenario())


def test_domain_and_full_jid_items_match_as_the_xep_says(im: IM) -> None:
    async def scenario() -> None:
        ann, bob, cat = im.users("ann", "bob", "cat")
        a = await im.login(ann)
        phone, desk, c = (
            await im.login(bob, "phone"),
            await im.login(bob, "desk"),
            await im.login(cat),
        )
        a.register_plugin("xep_0191")
        await a.plugin["xep_0191"].block(f"{bob}@localhost/phone", timeout=5)
        phone.send_message(mto=a.boundjid.full, mbody="from phone", mtype="chat")
        await im.wait_for(phone, lambda s: s.name == "message" and s["type"] == "error")
        desk.send_message(mto=a.boundjid.full, mbody="from desk", mtype="chat")
        got = await im.wait_for(a, lambda s: s.name == "message")
        assert got["body"] == "from desk"  # only that resource is blocked

        await a.plugin["xep_0191"].block("localhost", timeout=5)  # the whole domain...
        c.send_message(mto=a.boundjid.full, mbody="from cat", mtype="chat")
        await im.wait_for(c, lambda s: s.name == "message" and s["type"] == "error")
        # ...but never the user's own resources or own server.
        other = await im.login(ann, "other")
        other.send_message(mto=a.boundjid.full, mbody="from myself", mtype="chat")
        got = await im.wait_for(a, lambda s: s.name == "message")
        assert got["body"] == "from myself"
        await a.plugin["xep_0199"].ping(jid="localhost", timeout=5)
        await asyncio.gather(*(x.close() for x in (a, phone, desk, c, other)))

    run(scenario())


def test_presence_is_hidden_both_ways_and_restored_on_unblock(im: IM) -> None:
    async def scenario() -> None:
        ann, bob, cat = im.users("ann", "bob", "cat")
        a, b, c = await im.login(ann), await im.login(bob), await im.login(cat)
        await befriend(im, a, b)
        a.send_presence(pstatus="here")
        await im.wait_for(b, lambda s: presence_of(s, None, a.boundjid.full))
        for client in (a, b):
            await im.until_marker(c, client)  # what the subscriptions left: not this test's
        a.register_plugin("xep_0191")

        await a.plugin["xep_0191"].block(f"{bob}@localhost", timeout=5)
        # §3.3: bob sees ann go offline, then nothing more of her.
        await im.wait_for(b, lambda s: presence_of(s, "unavailable", a.boundjid.full))
        a.send_presence(pstatus="busy")
        await im.barrier(a)
        await nothing_more(im, c, b)
        # Bob's presence does not reach ann either.
        b.send_presence(pstatus="bob changed")
        await im.barrier(b)
        await nothing_more(im, c, a)

        # Bob's new resource probes ann (he is subscribed): her server does not answer him.
        b2 = await im.login(bob, "second")
        assert all(s["from"].bare != a.boundjid.bare for s in await im.until_marker(c, b2))

        await a.plugin["xep_0191"].unblock(f"{bob}@localhost", timeout=5)
        # §3.4: her current presence goes to bob; a probe brings his back to her.
        seen = await im.wait_for(b, lambda s: presence_of(s, None, a.boundjid.full))
        assert seen["status"] == "busy"
        back = await im.wait_for(a, lambda s: presence_of(s, None, b.boundjid.full))
        assert back["status"] == "bob changed"
        await asyncio.gather(*(x.close() for x in (a, b, b2, c)))

    run(scenario())


def test_feature_and_durability(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    server.add_user("dora", "dora-pw")

    async def block_and_check(block: bool) -> None:
        client = await connect(server, "dora", "r", password="dora-pw", presence=False)
        client.register_plugin("xep_0191")
        info = await client.plugin["xep_0030"].get_info(jid="localhost", timeout=5)
        assert BLOCKING in info["disco_info"]["features"]
        if block:
            await client.plugin["xep_0191"].block("troll@example.org", timeout=5)
        assert await blocklist(client) == {"troll@example.org"}
        await client.close()

    server.start()
    try:
        run(block_and_check(True))
        server.stop()
        server.start()
        run(block_and_check(False))  # acknowledged means stored
    finally:
        server.stop()


def test_a_blocked_domain_covers_its_subdomains_and_their_presence(tmp_path: Path) -> None:
    """XEP-0191 §6: a <domain> item matches the domain "as does any ... address containing a
    subdomain"; §3.3/§3.4: a subscriber it covers sees the user go offline, then come back."""
    server = ServerProcess(tmp_path)
    config = server.config_path.read_text()
    extra = 'demo_account = false\nextra_domains = ["x.spam.localhost"]'
    server.config_path.write_text(config.replace("demo_account = false", extra))
    for jid in ("ann@localhost", "eve@x.spam.localhost"):
        assert server.cli("adduser", jid, "--password", "pw").returncode == 0

    async def seen_from(client: Client, type_: str | None, frm: str) -> None:
        while not presence_of(await asyncio.wait_for(client.presences.get(), 5), type_, frm):
            pass

    async def scenario() -> None:
        ann = await connect(server, "ann", "r", password="pw")
        eve = Client("eve@x.spam.localhost/r", "pw", "SCRAM-SHA-256", server.ca_file)
        eve.enable_direct_tls = False
        eve.connect("127.0.0.1", server.port)
        await asyncio.wait_for(eve.started, 10)
        eve.send_presence()
        for client in (ann, eve):
            client.auto_authorize, client.auto_subscribe = None, False
        steps = [(ann, eve, "subscribe"), (eve, ann, "subscribed")]
        steps += [(eve, ann, "subscribe"), (ann, eve, "subscribed")]
        for sender, receiver, type_ in steps:
            sender.send_presence(pto=receiver.boundjid.bare, ptype=type_)
            await sender.plugin["xep_0199"].ping(jid=sender.boundjid.domain, timeout=5)
        await seen_from(eve, None, ann.boundjid.full)

        ann.register_plugin("xep_0191")
        await ann.plugin["xep_0191"].block("spam.localhost", timeout=5)
        await seen_from(eve, "unavailable", ann.boundjid.full)
        eve.send_message(mto=ann.boundjid.full, mbody="buy now", mtype="chat")
        await eve.plugin["xep_0199"].ping(jid="x.spam.localhost", timeout=5)  # handled by now
        bounce = eve.messages.get_nowait()
        assert (bounce["type"], bounce["error"]["condition"]) == ("error", "service-unavailable")

        await ann.plugin["xep_0191"].unblock("spam.localhost", timeout=5)
        await seen_from(eve, None, ann.boundjid.full)
        await seen_from(ann, None, eve.boundjid.full)  # the probe brought eve's back
        await asyncio.gather(ann.close(), eve.close())

    server.start()
    try:
        run(scenario())
    finally:
        server.stop()
