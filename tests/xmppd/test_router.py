"""Delivery rules of RFC 6121 §8.5 with real clients: every message type to an account with no,
one and several resources, to full JIDs that exist or are gone, to accounts that don't exist;
presence and iq to full and bare JIDs.

Not receiving is shown with a marker: after the stanza under test, the sender sends a marker to
the recipient's full JID on the same stream; whatever the recipient got before the marker is
what the stanza under test produced. Errors for the sender are in its queue once a ping it sent
afterwards is answered (the server handles a stream's stanzas in order).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import slixmpp
from support import ServerProcess, connect, run

TYPES = ["chat", "normal", "headline", "groupchat", "error"]
USERS = ["sender", "solo", "twins", "ranked", "shy", "mixed", "full", "gone", "away", "dir", "iq"]


def password(user: str) -> str:
    return f"{user}-pw"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = make_server(tmp_path_factory.mktemp("router"))
    proc.start()
    yield proc
    proc.stop()


def make_server(base: Path, extra: str = "") -> ServerProcess:
    proc = ServerProcess(base, extra_config=extra)
    for user in USERS:
        proc.add_user(user, password(user))
    return proc


async def online(
    server: ServerProcess, user: str, resource: str, priority: int | None = None
) -> slixmpp.ClientXMPP:
    client = await connect(server, user, resource, password=password(user), presence=False)
    client.send_presence(ppriority=priority)
    await processed(client)
    return client


async def processed(client: slixmpp.ClientXMPP) -> None:
    await client.plugin["xep_0199"].send_ping(slixmpp.JID("localhost"), timeout=5)


def drain(client: slixmpp.ClientXMPP) -> list[slixmpp.Message]:
    got = []
    while not client.messages.empty():
        got.append(client.messages.get_nowait())
    return got


async def before_marker(sender: slixmpp.ClientXMPP, client: slixmpp.ClientXMPP) -> list[str]:
    """Bodies `client` received before a marker sent now to its full JID."""
    sender.send_message(mto=client.boundjid.full, mbody="marker", mtype="chat")
    got = []
    while (message := await client.next_message())["body"] != "marker":
        got.append(message["body"])
    return got


async def send_each_type(sender: slixmpp.ClientXMPP, to: str) -> dict[str, str]:
    """One message of every type with a body naming it; returns the errors the sender got."""
    for type_ in TYPES:
        sender.send_message(mto=to, mbody=f"{type_} to {to}", mtype=type_)
    await processed(sender)
    errors = {}
    for message in drain(sender):
        assert message["type"] == "error", message
        errors[message["body"].split(" ")[0]] = message["error"]["condition"]
    return errors


async def close(*clients: slixmpp.ClientXMPP) -> None:
    for client in clients:
        await client.close()


def bodies(to: str, *types: str) -> list[str]:
    return [f"{type_} to {to}" for type_ in types]


# ---- §8.5.2: to the account's bare JID ---------------------------------------------------------


def test_bare_one_resource(server: ServerProcess) -> None:
    """§8.5.2.1.1: chat, normal and headline are delivered; groupchat bounces; error is dropped."""

    async def scenario() -> None:
        sender = await online(server, "sender", "one")
        solo = await online(server, "solo", "only", 0)
        errors = await send_each_type(sender, "solo@localhost")
        assert errors == {"groupchat": "service-unavailable"}
        expected = bodies("solo@localhost", "chat", "normal", "headline")
        assert await before_marker(sender, solo) == expected
        await close(sender, solo)

    run(scenario())


def test_bare_equal_priorities(server: ServerProcess) -> None:
    """Resources sharing the highest priority all get chat/normal; headline goes to all."""

    async def scenario() -> None:
        sender = await online(server, "sender", "equal")
        a = await online(server, "twins", "a", 1)
        b = await online(server, "twins", "b", 1)
        errors = await send_each_type(sender, "twins@localhost")
        assert errors == {"groupchat": "service-unavailable"}
        expected = bodies("twins@localhost", "chat", "normal", "headline")
        assert await before_marker(sender, a) == expected
        assert await before_marker(sender, b) == expected
        await close(sender, a, b)

    run(scenario())


def test_bare_different_priorities(server: ServerProcess) -> None:
    """chat/normal go to the highest priority only; headline to every non-negative resource."""

    async def scenario() -> None:
        sender = await online(server, "sender", "ranked")
        high = await online(server, "ranked", "high", 5)
        low = await online(server, "ranked", "low", 1)
        errors = await send_each_type(sender, "ranked@localhost")
        assert errors == {"groupchat": "service-unavailable"}
        to = "ranked@localhost"
        assert await before_marker(sender, high) == bodies(to, "chat", "normal", "headline")
        assert await before_marker(sender, low) == bodies(to, "headline")
        await close(sender, high, low)

    run(scenario())


def test_bare_negative_priority_gets_nothing(server: ServerProcess) -> None:
    """§8.5.2.1.1: never to a negative resource; with a non-negative one beside it, that one
    gets what the account gets."""

    async def scenario() -> None:
        sender = await online(server, "sender", "mixed")
        shy = await online(server, "mixed", "shy", -1)
        main = await online(server, "mixed", "main", 0)
        errors = await send_each_type(sender, "mixed@localhost")
        assert errors == {"groupchat": "service-unavailable"}
        to = "mixed@localhost"
        assert await before_marker(sender, main) == bodies(to, "chat", "normal", "headline")
        assert await before_marker(sender, shy) == []
        await close(sender, shy, main)

    run(scenario())


def test_bare_only_negative_is_like_offline(server: ServerProcess) -> None:
    """§8.5.2.2.1 applies: chat/normal are stored (offline module), headline and error dropped,
    groupchat bounces; the stored ones arrive once the resource is non-negative."""

    async def scenario() -> None:
        sender = await online(server, "sender", "shy")
        shy = await online(server, "shy", "neg", -1)
        errors = await send_each_type(sender, "shy@localhost")
        assert errors == {"groupchat": "service-unavailable"}
        assert await before_marker(sender, shy) == []
        shy.send_presence(ppriority=0)
        await processed(shy)
        assert await before_marker(sender, shy) == bodies("shy@localhost", "chat", "normal")
        await close(sender, shy)

    run(scenario())


def test_bare_no_resource(server: ServerProcess) -> None:
    """§8.5.2.2.1: chat/normal stored offline, headline/error dropped, groupchat bounces."""

    async def scenario() -> None:
        sender = await online(server, "sender", "away")
        errors = await send_each_type(sender, "away@localhost")
        assert errors == {"groupchat": "service-unavailable"}
        away = await online(server, "away", "back", 0)
        assert await before_marker(sender, away) == bodies("away@localhost", "chat", "normal")
        await close(sender, away)

    run(scenario())


def test_no_offline_storage_bounces(tmp_path: Path) -> None:
    """Without offline storage, chat and normal to an account with no resource bounce
    (RFC 6121 §8.5.2.2.1 (b))."""
    proc = make_server(tmp_path, '[modules]\nenabled = ["disco", "ping", "presence"]\n')
    proc.start()
    try:

        async def scenario() -> None:
            sender = await online(proc, "sender", "x")
            errors = await send_each_type(sender, "away@localhost")
            assert errors == {
                "chat": "service-unavailable",
                "normal": "service-unavailable",
                "groupchat": "service-unavailable",
            }
            await close(sender)

        run(scenario())
    finally:
        proc.stop()


def test_message_to_own_bare_jid(server: ServerProcess) -> None:
    async def scenario() -> None:
        sender = await online(server, "sender", "self-a", 1)
        other = await online(server, "sender", "self-b", 0)
        sender.send_message(mto="sender@localhost", mbody="note to self", mtype="chat")
        assert await before_marker(sender, sender) == ["note to self"]
        assert await before_marker(sender, other) == []
        await close(sender, other)

    run(scenario())


# ---- §8.5.3: to a full JID ----------------------------------------------------------------------


def test_full_jid_that_exists_gets_every_type(server: ServerProcess) -> None:
    """§8.5.3.1: delivered to that resource whatever the type, even with a negative priority."""

    async def scenario() -> None:
        sender = await online(server, "sender", "full")
        neg = await online(server, "full", "neg", -5)
        other = await online(server, "full", "other", 3)
        errors = await send_each_type(sender, "full@localhost/neg")
        assert errors == {}
        assert await before_marker(sender, neg) == bodies("full@localhost/neg", *TYPES)
        assert await before_marker(sender, other) == []
        await close(sender, neg, other)

    run(scenario())


def test_full_jid_whose_resource_is_gone(server: ServerProcess) -> None:
    """§8.5.3.2.1: chat is handled as if sent to the bare JID; normal and groupchat bounce with
    service-unavailable; headline and error are dropped."""

    async def scenario() -> None:
        sender = await online(server, "sender", "gone")
        left = await online(server, "gone", "left", 0)
        to = "gone@localhost/closed"
        errors = await send_each_type(sender, to)
        assert errors == {"normal": "service-unavailable", "groupchat": "service-unavailable"}
        assert await before_marker(sender, left) == bodies(to, "chat")
        await close(left)
        # With no resource at all, chat goes to offline storage like a bare message.
        errors = await send_each_type(sender, to)
        assert errors == {"normal": "service-unavailable", "groupchat": "service-unavailable"}
        back = await online(server, "gone", "back", 0)
        assert await before_marker(sender, back) == bodies(to, "chat")
        await close(sender, back)

    run(scenario())


@pytest.mark.parametrize("to", ["ghost@localhost", "ghost@localhost/res"])
def test_account_that_does_not_exist(server: ServerProcess, to: str) -> None:
    """§8.5.1: chat, normal and groupchat bounce with service-unavailable; headline and error
    are ignored (the RFC allows either for messages)."""

    async def scenario() -> None:
        sender = await online(server, "sender", "ghost")
        errors = await send_each_type(sender, to)
        assert errors == {
            "chat": "service-unavailable",
            "normal": "service-unavailable",
            "groupchat": "service-unavailable",
        }
        iq = sender.make_iq_get(queryxmlns="http://jabber.org/protocol/disco#info", ito=to)
        with pytest.raises(slixmpp.exceptions.IqError) as raised:
            await iq.send(timeout=5)
        assert raised.value.condition == "service-unavailable"
        await close(sender)

    run(scenario())


# ---- presence and iq -------------------------------------------------------------------------


def test_directed_presence(server: ServerProcess) -> None:
    """§8.5.2.1.2: to the bare JID, every available resource (negative ones too); to a full
    JID, that resource; to a gone resource or a missing account, nothing and no error."""

    async def scenario() -> None:
        sender = await online(server, "sender", "dir")
        a = await online(server, "dir", "a", 0)
        b = await online(server, "dir", "b", -1)
        for client in (a, b):
            drain_presences(client)
        for to, status in [
            ("dir@localhost", "to-bare"),
            ("dir@localhost/b", "to-b"),
            ("dir@localhost/gone", "to-gone"),
            ("ghost@localhost", "to-ghost"),
        ]:
            sender.send_presence(pto=to, pstatus=status)
        await processed(sender)
        assert drain(sender) == []
        for client, expected in ((a, ["to-bare"]), (b, ["to-bare", "to-b"])):
            await before_marker(sender, client)  # the presences came before the marker
            got = [
                p["status"] for p in drain_presences(client) if p["from"].bare != "dir@localhost"
            ]
            assert got == expected, client.boundjid
        await close(sender, a, b)

    run(scenario())


def drain_presences(client: slixmpp.ClientXMPP) -> list[slixmpp.Presence]:
    got = []
    while not client.presences.empty():
        got.append(client.presences.get_nowait())
    return got


def test_iq_to_full_and_bare(server: ServerProcess) -> None:
    """§8.5.3.1: an iq to a full JID reaches that client (it answers the ping itself);
    §8.5.3.2.3: to a gone resource it bounces; §8.5.2.1.3: to the bare JID the server answers
    on the account's behalf."""

    async def scenario() -> None:
        sender = await online(server, "sender", "iq")
        target = await online(server, "iq", "here", 0)
        result = await sender.plugin["xep_0199"].send_ping(
            slixmpp.JID("iq@localhost/here"), timeout=5
        )
        assert result["from"] == "iq@localhost/here" and result["type"] == "result"
        with pytest.raises(slixmpp.exceptions.IqError) as raised:
            await sender.plugin["xep_0199"].send_ping(slixmpp.JID("iq@localhost/gone"), timeout=5)
        assert raised.value.condition == "service-unavailable"
        # Bare JID: the server answers for the account, the client never sees the request.
        info = await sender.plugin["xep_0030"].get_info(jid="iq@localhost", timeout=5)
        assert ("account", "registered", None, None) in info["disco_info"]["identities"]
        with pytest.raises(slixmpp.exceptions.IqError) as raised:
            await sender.plugin["xep_0199"].send_ping(slixmpp.JID("iq@localhost"), timeout=5)
        assert raised.value.condition == "service-unavailable"
        # A result for a gone resource is dropped without an error.
        sender.send_raw("<iq type='result' id='stray' to='iq@localhost/gone'/>")
        await processed(sender)
        assert drain(sender) == []
        await close(sender, target)

    run(scenario())
