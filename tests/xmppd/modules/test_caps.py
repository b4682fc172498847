"""Client entity capabilities (XEP-0115) as the server learns them: one disco#info per new
verified hash, the cache for everyone else, and no cache for a hash that does not verify
(§5.4). What the server learned shows in which resources get PEP notifications."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from support import Client, run

PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = "http://jabber.org/protocol/pubsub#event"
DISCO = "http://jabber.org/protocol/disco#info"
CAPS = "http://jabber.org/protocol/caps"
FEED = "urn:x-feed"
SUBID = "http://jabber.org/protocol/shim#SubID"


async def login(im: Any, user: str, resource: str, caps: tuple[str, str] | None = None) -> Any:
    """Log in, with `FEED+notify` in disco; `caps` = (node, ver) announces that ver by hand
    instead of letting slixmpp compute it. Returns (client, queries asked of it)."""
    client = await im.login(user, resource, presence=False)
    client.register_plugin("xep_0060")
    asked: asyncio.Queue[Any] = asyncio.Queue()
    query = MatchXPath(f"{{jabber:client}}iq/{{{DISCO}}}query")
    client.register_handler(
        Callback("caps query", query, lambda iq: iq["type"] == "get" and asked.put_nowait(iq))
    )
    events = MatchXPath(f"{{jabber:client}}message/{{{EVENT}}}event")
    client.register_handler(Callback("events", events, client.inbox.put_nowait))
    disco = client.plugin["xep_0030"]
    if caps is None:
        client.register_plugin("xep_0115")
        disco.add_feature(f"{FEED}+notify")
        # slixmpp adds this one only from the second client of a process on: same for all.
        info = await disco.get_info(local=True)
        if SUBID not in info["features"]:
            disco.add_feature(SUBID)
        await client.plugin["xep_0115"].update_caps(broadcast=False)
        client.send_presence()
    else:
        node, ver = caps
        disco.add_feature(f"{FEED}+notify", node=f"{node}#{ver}")
        presence = client.make_presence()
        ET.SubElement(presence.xml, f"{{{CAPS}}}c", hash="sha-1", node=node, ver=ver)
        presence.send()
    await im.barrier(client)  # a query for new caps was sent before this ping's answer
    return client, asked


async def publish(client: Client, item_id: str) -> None:
    iq = client.make_iq_set()
    iq.xml.append(
        ET.fromstring(
            f"<pubsub xmlns='{PUBSUB}'><publish node='{FEED}'><item id='{item_id}'>"
            f"<entry xmlns='{FEED}'/></item></publish></pubsub>"
        )
    )
    await iq.send(timeout=5)


async def event_ids(im: Any, sender: Client, client: Client) -> list[str]:
    """Item ids of the events `client` got before a marker from `sender`."""
    seen = await im.until_marker(sender, client)
    return [i.get("id") for s in seen for i in s.xml.iter(f"{{{EVENT}}}item")]


def test_one_query_per_verified_hash(im: Any) -> None:
    async def scenario() -> None:
        (name,) = im.users("alice")
        first, asked_first = await login(im, name, "one")
        query = await asyncio.wait_for(asked_first.get(), 5)
        assert query["from"].full == "localhost"
        assert query.xml.find(f"{{{DISCO}}}query").get("node").startswith("http://slixmpp.com/ver/")
        await im.barrier(first)  # its answer has been handled
        await publish(first, "a")
        # Same features, same hash: answered from the cache, never asked, and the last item
        # comes with the initial presence.
        second, asked_second = await login(im, name, "two")
        assert await event_ids(im, first, second) == ["a"]
        assert asked_second.empty()
        await publish(first, "b")
        assert await event_ids(im, first, second) == ["b"]

    run(scenario())


def test_unverified_hash_is_not_shared(im: Any) -> None:
    async def scenario() -> None:
        (name,) = im.users("alice")
        owner, _ = await login(im, name, "owner")
        bogus = ("urn:x-liar", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        liar, asked_liar = await login(im, name, "liar", caps=bogus)
        await asyncio.wait_for(asked_liar.get(), 5)
        await im.barrier(liar)
        await publish(owner, "x")
        assert await event_ids(im, owner, liar) == ["x"]  # believed for itself...
        # ...but the hash did not verify, so the next resource announcing it is asked too.
        other, asked_other = await login(im, name, "other", caps=bogus)
        await asyncio.wait_for(asked_other.get(), 5)

    run(scenario())


def test_no_caps_no_notifications(im: Any) -> None:
    async def scenario() -> None:
        (name,) = im.users("alice")
        owner, _ = await login(im, name, "owner")
        plain = await im.login(name, "plain")
        events = MatchXPath(f"{{jabber:client}}message/{{{EVENT}}}event")
        plain.register_handler(Callback("events", events, plain.inbox.put_nowait))
        await publish(owner, "y")
        assert await event_ids(im, owner, plain) == []

    run(scenario())


def test_new_caps_take_effect_and_bring_the_last_item(im: Any) -> None:
    async def scenario() -> None:
        (name,) = im.users("alice")
        owner, _ = await login(im, name, "owner")
        await publish(owner, "first")
        late = await im.login(name, "late")  # available, no caps
        events = MatchXPath(f"{{jabber:client}}message/{{{EVENT}}}event")
        late.register_handler(Callback("events", events, late.inbox.put_nowait))
        assert await event_ids(im, owner, late) == []
        # It learns to want the feed: new caps in a presence update, asked, then the last item.
        late.register_plugin("xep_0115")
        late.plugin["xep_0030"].add_feature(f"{FEED}+notify")
        late.plugin["xep_0030"].add_feature("urn:x-test:late")  # a hash nobody else has
        await late.plugin["xep_0115"].update_caps(broadcast=False)
        late.send_presence(pstatus="interested now")
        found = await im.wait_for(late, lambda s: s.xml.find(f"{{{EVENT}}}event") is not None)
        assert [i.get("id") for i in found.xml.iter(f"{{{EVENT}}}item")] == ["first"]

    run(scenario())
