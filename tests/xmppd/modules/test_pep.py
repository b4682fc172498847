"""PEP (XEP-0163 on XEP-0060) with real slixmpp clients: OMEMO device lists and bundles,
+notify filtering, access models, last item on login, avatars, nicknames, bookmarks (XEP-0402
and its XEP-0048 private-storage compat), publish-options preconditions and limits."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from support import Client, run

SERVER_CONFIG = "[modules.pep]\nmax_nodes = 4\nmax_items = 5\nmax_item_size = 2048\n"

PUBSUB = "http://jabber.org/protocol/pubsub"
OWNER = "http://jabber.org/protocol/pubsub#owner"
EVENT = "http://jabber.org/protocol/pubsub#event"
ERRORS = "http://jabber.org/protocol/pubsub#errors"
DATA = "jabber:x:data"
DEVICELIST = "eu.siacs.conversations.axolotl.devicelist"
AXOLOTL = "eu.siacs.conversations.axolotl"
BUNDLE = "eu.siacs.conversations.axolotl.bundles:31415"
NICK = "http://jabber.org/protocol/nick"
BOOKMARKS = "urn:xmpp:bookmarks:1"
PRIVATE = "jabber:iq:private"
LEGACY = "storage:bookmarks"


async def pep_login(im: Any, user: str, *interests: str, resource: str = "r") -> Client:
    """Log in announcing `<ns>+notify` for each interest in caps, and wait until the server
    asked for those caps (the feature list differs per client, so its hash is new)."""
    client = await im.login(user, resource, presence=False)
    for plugin in ("xep_0060", "xep_0163", "xep_0115"):
        client.register_plugin(plugin)
    asked = asyncio.Event()

    def watch(stanza: Any) -> Any:
        query = stanza.xml.find("{http://jabber.org/protocol/disco#info}query")
        if stanza.name == "iq" and stanza["type"] == "result" and query is not None:
            asked.set()
        return stanza

    client.add_filter("out", watch)
    # slixmpp's "message" event is for messages with a body: collect events as well.
    match = MatchXPath(f"{{jabber:client}}message/{{{EVENT}}}event")
    client.register_handler(Callback("pep events", match, client.inbox.put_nowait))
    disco = client.plugin["xep_0030"]
    disco.add_feature(f"urn:x-test:{user}:{resource}")  # a caps hash of its own
    for namespace in interests:
        disco.add_feature(f"{namespace}+notify")
    await client.plugin["xep_0115"].update_caps(broadcast=False)
    client.send_presence()
    await asyncio.wait_for(asked.wait(), 5)
    await im.barrier(client)  # the answer was handled before this ping
    return client


def parse(text: str) -> ET.Element:
    return ET.fromstring(text)


def options_form(form_type: str, **fields: str) -> str:
    body = "".join(f"<field var='pubsub#{k}'><value>{v}</value></field>" for k, v in fields.items())
    return (
        f"<x xmlns='{DATA}' type='submit'><field var='FORM_TYPE' type='hidden'>"
        f"<value>{form_type}</value></field>{body}</x>"
    )


async def iq(client: Client, type_: str, payload: str, to: str | None = None) -> ET.Element:
    """Send one iq with `payload` as its child; the result stanza's XML."""
    stanza = client.make_iq_get(ito=to) if type_ == "get" else client.make_iq_set(ito=to)
    stanza.xml.append(parse(payload))
    return (await stanza.send(timeout=5)).xml


async def publish(
    client: Client, node: str, item_id: str, payload: str, **options: str
) -> ET.Element:
    extra = ""
    if options:
        form = options_form("http://jabber.org/protocol/pubsub#publish-options", **options)
        extra = f"<publish-options>{form}</publish-options>"
    return await iq(
        client,
        "set",
        f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='{item_id}'>{payload}"
        f"</item></publish>{extra}</pubsub>",
    )


async def items(client: Client, owner: str | None, node: str, extra: str = "") -> list[Any]:
    result = await iq(
        client, "get", f"<pubsub xmlns='{PUBSUB}'><items node='{node}' {extra}/></pubsub>", owner
    )
    return [(i.get("id"), i[0] if len(i) else None) for i in result.iter(f"{{{PUBSUB}}}item")]


async def error_of(request: Any) -> tuple[str, str | None]:
    """(stanza condition, pubsub#errors condition) of a refused request."""
    with pytest.raises(IqError) as raised:
        await request
    error = raised.value.iq.xml.find("{jabber:client}error")
    app = [c.tag.split("}")[1] for c in error if c.tag.startswith(f"{{{ERRORS}}}")]
    return raised.value.iq["error"]["condition"], (app[0] if app else None)


def events(stanza: Any) -> ET.Element | None:
    if stanza.name != "message":
        return None
    return stanza.xml.find(f"{{{EVENT}}}event/{{{EVENT}}}items")


async def next_event(im: Any, client: Client, node: str) -> ET.Element:
    """The next pubsub event `<items/>` for `node` that `client` receives."""
    found = await im.wait_for(
        client, lambda s: events(s) is not None and events(s).get("node") == node
    )
    return events(found)


def devicelist(*ids: int) -> str:
    devices = "".join(f"<device id='{i}'/>" for i in ids)
    return f"<list xmlns='{AXOLOTL}'>{devices}</list>"


def bundle() -> str:
    return (
        f"<bundle xmlns='{AXOLOTL}'><signedPreKeyPublic signedPreKeyId='1'>BASE64</"
        "signedPreKeyPublic><signedPreKeySignature>SIG</signedPreKeySignature>"
        "<identityKey>IK</identityKey><prekeys><preKeyPublic preKeyId='1'>PK1</preKeyPublic>"
        "</prekeys></bundle>"
    )


async def friends(im: Any, *interests: str) -> tuple[Client, Client, str, str]:
    alice_name, bob_name = im.users("alice", "bob")
    alice = await pep_login(im, alice_name)
    bob = await pep_login(im, bob_name, *interests)
    await im.befriend(alice, bob)
    return alice, bob, alice.boundjid.bare, bob.boundjid.bare


def test_omemo_device_list_and_bundle(im: Any) -> None:
    async def scenario() -> None:
        alice, bob, alice_jid, _ = await friends(im, DEVICELIST)
        (stranger_name,) = im.users("eve")
        eve = await pep_login(im, stranger_name, DEVICELIST)

        result = await publish(alice, DEVICELIST, "current", devicelist(31415), access_model="open")
        published = result.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish/{{{PUBSUB}}}item")
        assert published is not None and published.get("id") == "current"
        await publish(alice, BUNDLE, "current", bundle(), access_model="open")

        # bob (a contact with +notify) is told; the payload comes with the event.
        event = await next_event(im, bob, DEVICELIST)
        device = event.find(f"{{{EVENT}}}item/{{{AXOLOTL}}}list/{{{AXOLOTL}}}device")
        assert device is not None and device.get("id") == "31415"
        # eve is not a contact: no notification, though she may fetch open nodes.
        assert not [s for s in await im.until_marker(alice, eve) if events(s) is not None]
        got = await items(eve, alice_jid, DEVICELIST)
        assert [i for i, _ in got] == ["current"]

        # bob fetches the bundle he has no +notify for.
        got = await items(bob, alice_jid, BUNDLE)
        assert got[0][0] == "current"
        assert got[0][1].find(f"{{{AXOLOTL}}}identityKey").text == "IK"

        # a new device list replaces "current" and is notified again
        await publish(alice, DEVICELIST, "current", devicelist(31415, 27183))
        event = await next_event(im, bob, DEVICELIST)
        assert len(event.findall(f".//{{{AXOLOTL}}}device")) == 2
        assert len(await items(bob, alice_jid, DEVICELIST)) == 1

    run(scenario())


def test_only_interested_resources_are_notified(im: Any) -> None:
    async def scenario() -> None:
        alice, bob, _, bob_jid = await friends(im, NICK)
        other = await pep_login(im, bob_jid.split("@")[0], resource="other")  # no +notify
        own = await pep_login(im, alice.boundjid.user, NICK, resource="second")
        await publish(alice, NICK, "current", f"<nick xmlns='{NICK}'>Alice</nick>")
        for client in (bob, own):
            event = await next_event(im, client, NICK)
            assert event.findtext(f"{{{EVENT}}}item/{{{NICK}}}nick") == "Alice"
        assert not [s for s in await im.until_marker(alice, other) if events(s) is not None]

    run(scenario())


def test_access_models(im: Any) -> None:
    async def scenario() -> None:
        alice, bob, alice_jid, _ = await friends(im)
        (stranger_name,) = im.users("eve")
        eve = await pep_login(im, stranger_name)
        await publish(alice, NICK, "current", f"<nick xmlns='{NICK}'>Alice</nick>")
        await publish(
            alice, "private-notes", "1", "<note xmlns='urn:x-notes'/>", access_model="whitelist"
        )

        # presence (the default): contacts yes, strangers no (XEP-0060 §6.5.9.3).
        assert (await items(bob, alice_jid, NICK))[0][0] == "current"
        assert await error_of(items(eve, alice_jid, NICK)) == (
            "not-authorized",
            "presence-subscription-required",
        )
        # whitelist: the owner alone (§6.5.9.5).
        assert await error_of(items(bob, alice_jid, "private-notes")) == (
            "not-allowed",
            "closed-node",
        )
        assert [i for i, _ in await items(alice, None, "private-notes")] == ["1"]
        # nobody but the owner publishes; unknown nodes are item-not-found
        assert (
            await error_of(
                iq(
                    bob,
                    "set",
                    f"<pubsub xmlns='{PUBSUB}'><publish node='x'>"
                    "<item><a xmlns='urn:x'/></item></publish></pubsub>",
                    alice_jid,
                )
            )
        )[0] == "forbidden"
        assert (await error_of(items(bob, alice_jid, "nope")))[0] == "item-not-found"

    run(scenario())


def test_last_item_sent_on_login(im: Any) -> None:
    async def scenario() -> None:
        alice, bob, _, bob_jid = await friends(im)
        await publish(alice, NICK, "current", f"<nick xmlns='{NICK}'>Before</nick>")
        await publish(alice, "urn:x-other", "1", "<x xmlns='urn:x-other'/>")
        later = await pep_login(im, bob_jid.split("@")[0], NICK, resource="later")
        event = await next_event(im, later, NICK)
        assert event.findtext(f"{{{EVENT}}}item/{{{NICK}}}nick") == "Before"
        # only nodes it has +notify for
        seen = await im.until_marker(alice, later)
        assert not [s for s in seen if events(s) is not None]
        # own account's nodes too, on a second resource of alice
        mine = await pep_login(im, alice.boundjid.user, NICK, resource="mine")
        event = await next_event(im, mine, NICK)
        assert event.findtext(f"{{{EVENT}}}item/{{{NICK}}}nick") == "Before"

    run(scenario())


def test_avatar_and_nickname_plugins(im: Any) -> None:
    AVATAR_META = "urn:xmpp:avatar:metadata"

    async def scenario() -> None:
        alice, bob, alice_jid, _ = await friends(im, AVATAR_META, NICK)
        for plugin in ("xep_0084", "xep_0172"):
            alice.register_plugin(plugin)
            bob.register_plugin(plugin)
        avatar = b"\x89PNG-not-really" * 10
        avatar_id = alice.plugin["xep_0084"].generate_id(avatar)
        await alice.plugin["xep_0084"].publish_avatar(avatar)
        info = {"id": avatar_id, "type": "image/png", "bytes": len(avatar)}
        await alice.plugin["xep_0084"].publish_avatar_metadata(info)
        event = await next_event(im, bob, AVATAR_META)
        assert event.find(f"{{{EVENT}}}item").get("id") == avatar_id
        got = await bob.plugin["xep_0084"].retrieve_avatar(alice_jid, avatar_id)
        assert got["pubsub"]["items"]["item"]["avatar_data"]["value"] == avatar

        await alice.plugin["xep_0172"].publish_nick("Ally")
        event = await next_event(im, bob, NICK)
        assert event.findtext(f"{{{EVENT}}}item/{{{NICK}}}nick") == "Ally"

    run(scenario())


def conference(jid: str, name: str, nick: str) -> str:
    return f"<conference xmlns='{BOOKMARKS}' name='{name}' autojoin='true'><nick>{nick}</nick></conference>"


async def private_bookmarks(client: Client) -> ET.Element:
    result = await iq(
        client, "get", f"<query xmlns='{PRIVATE}'><storage xmlns='{LEGACY}'/></query>"
    )
    return result.find(f"{{{PRIVATE}}}query/{{{LEGACY}}}storage")


def test_bookmarks_2_and_private_storage_compat(im: Any) -> None:
    async def scenario() -> None:
        (name,) = im.users("alice")
        alice = await pep_login(im, name)
        watcher = await pep_login(im, name, BOOKMARKS, resource="watcher")
        options = {
            "persist_items": "true",
            "max_items": "max",
            "access_model": "whitelist",
            "send_last_published_item": "never",
        }
        await publish(
            alice, BOOKMARKS, "coven@chat.example", conference("", "Coven", "Macbeth"), **options
        )
        await next_event(im, watcher, BOOKMARKS)

        # XEP-0048 through XEP-0049: the same bookmarks
        storage = await private_bookmarks(alice)
        rooms = storage.findall(f"{{{LEGACY}}}conference")
        assert [(r.get("jid"), r.get("name"), r.get("autojoin")) for r in rooms] == [
            ("coven@chat.example", "Coven", "true")
        ]
        assert rooms[0].findtext(f"{{{LEGACY}}}nick") == "Macbeth"

        # an old client replaces the list: one added, the old one removed
        await iq(
            alice,
            "set",
            f"<query xmlns='{PRIVATE}'><storage xmlns='{LEGACY}'>"
            "<conference jid='globe@chat.example' name='Globe' autojoin='false'>"
            "<nick>Puck</nick></conference></storage></query>",
        )
        event = await next_event(im, watcher, BOOKMARKS)
        assert event.find(f"{{{EVENT}}}item").get("id") == "globe@chat.example"
        event = await next_event(im, watcher, BOOKMARKS)
        assert event.find(f"{{{EVENT}}}retract").get("id") == "coven@chat.example"
        got = await items(alice, None, BOOKMARKS)
        assert [i for i, _ in got] == ["globe@chat.example"]
        assert got[0][1].get("autojoin") == "false"
        assert got[0][1].findtext(f"{{{BOOKMARKS}}}nick") == "Puck"
        # other private namespaces still go to private storage
        await iq(alice, "set", f"<query xmlns='{PRIVATE}'><prefs xmlns='urn:x-prefs'/></query>")

    run(scenario())


def test_precondition_not_met(im: Any) -> None:
    async def scenario() -> None:
        (name,) = im.users("alice")
        alice = await pep_login(im, name)
        await publish(alice, DEVICELIST, "current", devicelist(1), access_model="open")
        # the same options again: accepted
        await publish(alice, DEVICELIST, "current", devicelist(2), access_model="open")
        refused = publish(alice, DEVICELIST, "current", devicelist(3), access_model="presence")
        assert await error_of(refused) == ("conflict", "precondition-not-met")
        refused = publish(alice, DEVICELIST, "current", devicelist(3), bogus_option="1")
        assert await error_of(refused) == ("conflict", "precondition-not-met")
        assert (await items(alice, None, DEVICELIST))[0][1][0].get("id") == "2"

    run(scenario())


def test_limits(im: Any) -> None:
    async def scenario() -> None:
        (name,) = im.users("alice")
        alice = await pep_login(im, name)
        big = f"<blob xmlns='urn:x-blob'>{'x' * 3000}</blob>"
        assert await error_of(publish(alice, "blob", "1", big)) == (
            "not-acceptable",
            "payload-too-big",
        )
        # max_items is clamped to the server's 5; "max" means 5
        for n in range(7):
            await publish(alice, "many", str(n), "<n xmlns='urn:x-n'/>", max_items="100")
        assert [i for i, _ in await items(alice, None, "many")] == ["2", "3", "4", "5", "6"]
        assert [i for i, _ in await items(alice, None, "many", "max_items='2'")] == ["5", "6"]
        await publish(alice, "many", "7", "<n xmlns='urn:x-n'/>", max_items="max")
        for node in ("b", "c", "d"):  # four nodes with "many": the limit
            await publish(alice, node, "1", "<n xmlns='urn:x-n'/>")
        assert await error_of(publish(alice, "e", "1", "<n xmlns='urn:x-n'/>")) == (
            "not-allowed",
            "max-nodes-exceeded",
        )

    run(scenario())


def test_retract_purge_delete_configure(im: Any) -> None:
    async def scenario() -> None:
        alice, bob, alice_jid, _ = await friends(im, "urn:x-feed")
        for n in ("1", "2"):
            await publish(alice, "urn:x-feed", n, "<e xmlns='urn:x-feed'/>", max_items="5")
            await next_event(im, bob, "urn:x-feed")
        await iq(
            alice,
            "set",
            f"<pubsub xmlns='{PUBSUB}'><retract node='urn:x-feed' "
            "notify='true'><item id='1'/></retract></pubsub>",
        )
        event = await next_event(im, bob, "urn:x-feed")
        assert event.find(f"{{{EVENT}}}retract").get("id") == "1"
        assert [i for i, _ in await items(bob, alice_jid, "urn:x-feed")] == ["2"]

        form = await iq(
            alice, "get", f"<pubsub xmlns='{OWNER}'><configure node='urn:x-feed'/></pubsub>"
        )
        fields = {
            f.get("var"): f.findtext(f"{{{DATA}}}value") for f in form.iter(f"{{{DATA}}}field")
        }
        assert fields["pubsub#access_model"] == "presence" and fields["pubsub#max_items"] == "5"
        await iq(
            alice,
            "set",
            f"<pubsub xmlns='{OWNER}'><configure node='urn:x-feed'>"
            + options_form(
                "http://jabber.org/protocol/pubsub#node_config", access_model="whitelist"
            )
            + "</configure></pubsub>",
        )
        assert (await error_of(items(bob, alice_jid, "urn:x-feed")))[0] == "not-allowed"

        await iq(alice, "set", f"<pubsub xmlns='{OWNER}'><purge node='urn:x-feed'/></pubsub>")
        assert await items(alice, None, "urn:x-feed") == []
        await iq(alice, "set", f"<pubsub xmlns='{OWNER}'><delete node='urn:x-feed'/></pubsub>")
        assert (await error_of(items(alice, None, "urn:x-feed")))[0] == "item-not-found"

    run(scenario())


def test_account_disco_lists_pep(im: Any) -> None:
    async def scenario() -> None:
        alice, bob, alice_jid, _ = await friends(im)
        info = await bob.plugin["xep_0030"].get_info(jid=alice_jid, timeout=5)
        identities = {(c, t) for c, t, _lang, _name in info["disco_info"]["identities"]}
        assert ("pubsub", "pep") in identities and ("account", "registered") in identities
        features = set(info["disco_info"]["features"])
        for name in (
            "publish",
            "publish-options",
            "auto-create",
            "access-whitelist",
            "filtered-notifications",
            "last-published",
            "persistent-items",
        ):
            assert f"{PUBSUB}#{name}" in features
        assert "urn:xmpp:bookmarks:1#compat" in features

    run(scenario())


def test_whitelist_members_and_node_discovery(im: Any) -> None:
    async def scenario() -> None:
        alice, bob, alice_jid, bob_jid = await friends(im, "urn:x-secret")
        await publish(
            alice,
            "urn:x-secret",
            "1",
            "<s xmlns='urn:x-secret'/>",
            access_model="whitelist",
            max_items="5",
        )
        await publish(alice, NICK, "current", f"<nick xmlns='{NICK}'>Alice</nick>")
        assert (await error_of(items(bob, alice_jid, "urn:x-secret")))[0] == "not-allowed"
        disco = await bob.plugin["xep_0030"].get_items(jid=alice_jid, timeout=5)
        assert [n for _j, n, _name in disco["disco_items"]["items"]] == [NICK]

        await iq(
            alice,
            "set",
            f"<pubsub xmlns='{OWNER}'><affiliations node='urn:x-secret'>"
            f"<affiliation jid='{bob_jid}' affiliation='member'/></affiliations></pubsub>",
        )
        result = await iq(
            alice, "get", f"<pubsub xmlns='{OWNER}'><affiliations node='urn:x-secret'/></pubsub>"
        )
        got = {a.get("jid"): a.get("affiliation") for a in result.iter(f"{{{OWNER}}}affiliation")}
        assert got == {alice_jid: "owner", bob_jid: "member"}
        assert [i for i, _ in await items(bob, alice_jid, "urn:x-secret")] == ["1"]
        await publish(alice, "urn:x-secret", "2", "<s xmlns='urn:x-secret'/>")
        event = await next_event(im, bob, "urn:x-secret")
        assert event.find(f"{{{EVENT}}}item").get("id") == "2"
        disco = await bob.plugin["xep_0030"].get_items(
            jid=alice_jid, node="urn:x-secret", timeout=5
        )
        assert sorted(name for _j, _n, name in disco["disco_items"]["items"]) == ["1", "2"]

        # explicit subscriptions are not offered: they are implicit in PEP
        refused = iq(
            bob,
            "set",
            f"<pubsub xmlns='{PUBSUB}'><subscribe node='{NICK}' jid='{bob_jid}'/></pubsub>",
            alice_jid,
        )
        assert (await error_of(refused))[0] == "forbidden"
        refused = iq(
            alice,
            "set",
            f"<pubsub xmlns='{PUBSUB}'><subscribe node='{NICK}' jid='{alice_jid}'/></pubsub>",
        )
        assert await error_of(refused) == ("feature-not-implemented", "unsupported")

    run(scenario())


def test_items_survive_a_crash(im: Any) -> None:
    async def before() -> str:
        alice, bob, _, _ = await friends(im)
        await publish(alice, NICK, "current", f"<nick xmlns='{NICK}'>Kept</nick>")
        await publish(alice, "urn:x-v", "1", "<v xmlns='urn:x-v'/>", persist_items="false")
        assert len(await items(alice, None, "urn:x-v")) == 1
        await alice.close()
        await bob.close()
        return alice.boundjid.user

    async def after(user: str) -> None:
        alice = await im.login(user)
        got = await items(alice, None, NICK)
        assert got[0][1].text == "Kept"  # acknowledged, so on disk
        assert await items(alice, None, "urn:x-v") == []  # the node is kept, not its items
        await alice.close()

    user = run(before())
    im.server.proc.kill()  # no clean shutdown
    im.server.proc.wait()
    im.server.start()
    run(after(user))


def test_concurrent_publishes_from_two_resources_all_kept(im: Any) -> None:
    async def scenario() -> None:
        (name,) = im.users("alice")
        one = await pep_login(im, name, resource="one")
        two = await pep_login(im, name, resource="two")
        await publish(one, "urn:x-log", "start", "<e xmlns='urn:x-log'/>", max_items="5")
        await asyncio.gather(
            *(
                publish(c, "urn:x-log", f"{c.boundjid.resource}{n}", "<e xmlns='urn:x-log'/>")
                for n in range(2)
                for c in (one, two)
            )
        )
        got = sorted(i for i, _ in await items(one, None, "urn:x-log"))
        assert got == ["one0", "one1", "start", "two0", "two1"]

    run(scenario())
