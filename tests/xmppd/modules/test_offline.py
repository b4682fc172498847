"""Offline messages (XEP-0160, XEP-0203, XEP-0359, XEP-0334) with real clients and a real server."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest
import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from support import ServerProcess, connect, run

DELAY = "{urn:xmpp:delay}delay"
STANZA_ID = "{urn:xmpp:sid:0}stanza-id"
USERS = [
    "alice",  # the sender
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
]


def password(user: str) -> str:
    return f"{user}-pw"


def make_server(base: Path, extra: str = "") -> ServerProcess:
    proc = ServerProcess(base, extra_config=extra)
    for user in USERS:
        proc.add_user(user, password(user))
    return proc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Small quotas so the limits can be reached: 3 messages, 4 KiB."""
    proc = make_server(
        tmp_path_factory.mktemp("offline"),
        "[modules.offline]\nmax_messages = 3\nmax_bytes = 4096\n",
    )
    proc.start()
    yield proc
    proc.stop()


async def login(
    server: ServerProcess, user: str, resource: str = "r", *, presence: bool = True
) -> slixmpp.ClientXMPP:
    client = await connect(server, user, resource, password=password(user), presence=presence)
    if presence:
        await processed(client)  # stored messages were handed over before the ping's answer
    return client


async def processed(client: slixmpp.ClientXMPP) -> None:
    """Everything the client sent before has been handled: the server answers in order."""
    await client.plugin["xep_0199"].send_ping(slixmpp.JID("localhost"), timeout=5)


async def send_and_sync(sender: slixmpp.ClientXMPP, to: str, bodies: list[str], mtype="chat"):
    for body in bodies:
        sender.send_message(mto=to, mbody=body, mtype=mtype)
    await processed(sender)


async def bodies(client: slixmpp.ClientXMPP, count: int) -> list[str]:
    return [(await client.next_message())["body"] for _ in range(count)]


async def marker_is_next(sender, receiver, to: str) -> None:
    """Nothing else is queued for `receiver`: a fresh marker is the next message it gets."""
    sender.send_message(mto=to, mbody="marker", mtype="chat")
    got = await receiver.next_message()
    assert got["body"] == "marker", got
    assert got.xml.find(DELAY) is None


def every_message(client: slixmpp.ClientXMPP) -> asyncio.Queue[slixmpp.Message]:
    """All messages, with a body or not (slixmpp's "message" event needs a body)."""
    queue: asyncio.Queue[slixmpp.Message] = asyncio.Queue()
    client.register_handler(
        Callback("every message", MatchXPath("{jabber:client}message"), queue.put_nowait)
    )
    return queue


def test_stored_then_delivered_at_login_with_delay_and_stanza_id(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice = await login(server, "alice", "offline-1")
        before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        # The sender tries to plant an id "by" bob's account and a server delay: both replaced.
        alice.send_raw(
            "<message to='bob@localhost' type='chat'><body>first</body>"
            "<stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='forged'/>"
            "<delay xmlns='urn:xmpp:delay' from='localhost' stamp='2001-01-01T00:00:00Z'/>"
            "</message>"
        )
        await send_and_sync(alice, "bob@localhost", ["second"], mtype="normal")
        await send_and_sync(alice, "bob@localhost/gone", ["third"])  # full JID, no such resource

        bob = await login(server, "bob")
        got = [await bob.next_message() for _ in range(3)]
        assert [m["body"] for m in got] == ["first", "second", "third"]  # arrival order
        ids = set()
        for message in got:
            assert message["from"].full == "alice@localhost/offline-1"
            delays = message.xml.findall(DELAY)
            assert len(delays) == 1
            assert delays[0].get("from") == "localhost"
            stamp = delays[0].get("stamp")
            assert stamp.endswith("Z")
            when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            assert before <= when <= datetime.datetime.now(datetime.UTC)
            sids = [s for s in message.xml.findall(STANZA_ID) if s.get("by") == "bob@localhost"]
            assert len(sids) == 1 and sids[0].get("id") not in ("", "forged")
            ids.add(sids[0].get("id"))
        assert len(ids) == 3
        await marker_is_next(alice, bob, "bob@localhost")
        await bob.close()

        # Delivered once: the next login gets nothing stored.
        bob = await login(server, "bob", "again")
        await marker_is_next(alice, bob, "bob@localhost")
        await bob.close()
        await alice.close()

    run(scenario())


def test_what_is_not_stored(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice = await login(server, "alice", "offline-2")
        to = "carol@localhost"
        # XEP-0160 §3: headline is dropped silently (RFC 6121 §8.5.2.2.1), groupchat bounces.
        await send_and_sync(alice, to, ["news"], mtype="headline")
        alice.send_message(mto=to, mbody="room talk", mtype="groupchat")
        error = await alice.next_message()
        assert error["type"] == "error" and error["error"]["condition"] == "service-unavailable"
        assert error["body"] == "room talk"
        # Only a chat state, or a no-store hint (XEP-0334): not stored, so the sender is told.
        errors: asyncio.Queue[slixmpp.Message] = asyncio.Queue()
        alice.add_event_handler("message_error", errors.put_nowait)  # with or without a body
        for number, payload in enumerate(
            (
                "<active xmlns='http://jabber.org/protocol/chatstates'/>",
                "<no-store xmlns='urn:xmpp:hints'/><body>secret</body>",
            )
        ):
            alice.send_raw(f"<message to='{to}' type='chat' id='n{number}'>{payload}</message>")
            error = await asyncio.wait_for(errors.get(), 5)
            assert error["id"] == f"n{number}"
            assert error["error"]["condition"] == "service-unavailable"
        # A store hint keeps even a message that only holds a chat state.
        alice.send_raw(
            f"<message to='{to}' type='chat' id='kept'><store xmlns='urn:xmpp:hints'/>"
            "<active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )
        await processed(alice)
        carol = await login(server, "carol", presence=False)
        every = every_message(carol)
        carol.send_presence()
        kept = await asyncio.wait_for(every.get(), 5)
        assert kept["id"] == "kept" and kept.xml.find(DELAY) is not None
        await marker_is_next(alice, carol, to)
        await carol.close()
        await alice.close()

    run(scenario())


def test_quota_of_messages_bounces_resource_constraint(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice = await login(server, "alice", "offline-3")
        await send_and_sync(alice, "dave@localhost", ["m1", "m2", "m3"])
        alice.send_message(mto="dave@localhost", mbody="m4", mtype="chat")
        error = await alice.next_message()
        assert error["type"] == "error"
        assert error["error"]["condition"] == "resource-constraint"
        assert error["error"]["type"] == "wait"
        assert error["body"] == "m4" and error["from"].bare == "dave@localhost"
        dave = await login(server, "dave")
        assert await bodies(dave, 3) == ["m1", "m2", "m3"]
        await marker_is_next(alice, dave, "dave@localhost")
        await dave.close()
        # Delivery freed the space.
        await send_and_sync(alice, "dave@localhost", ["m5"])
        dave = await login(server, "dave")
        assert await bodies(dave, 1) == ["m5"]
        await dave.close()
        await alice.close()

    run(scenario())


def test_quota_of_bytes_bounces_resource_constraint(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice = await login(server, "alice", "offline-4")
        # The bounce of a 2.5 KB message carries no payload (MAX_ERROR_PAYLOAD): slixmpp
        # reports a message without a body as message_error only.
        alice.add_event_handler("message_error", alice.messages.put_nowait)
        await send_and_sync(alice, "erin@localhost", ["a" * 2500])
        alice.send_message(mto="erin@localhost", mbody="b" * 2500, mtype="chat")
        error = await alice.next_message()
        assert error["error"]["condition"] == "resource-constraint"
        erin = await login(server, "erin")
        assert await bodies(erin, 1) == ["a" * 2500]
        await marker_is_next(alice, erin, "erin@localhost")
        await erin.close()
        await alice.close()

    run(scenario())


def test_negative_priority_gets_nothing_until_non_negative(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice = await login(server, "alice", "offline-5")
        await send_and_sync(alice, "frank@localhost", ["before login"])
        frank = await login(server, "frank", "shy", presence=False)
        frank.send_presence(ppriority=-1)
        await processed(frank)
        # A bare message while only a negative resource is online is stored too (§8.5.2.1.1).
        await send_and_sync(alice, "frank@localhost", ["while negative"])
        # To the full JID it is delivered; nothing stored came before it.
        await marker_is_next(alice, frank, "frank@localhost/shy")
        frank.send_presence(ppriority=0)
        await processed(frank)
        assert await bodies(frank, 2) == ["before login", "while negative"]
        await marker_is_next(alice, frank, "frank@localhost")
        await frank.close()
        await alice.close()

    run(scenario())


def test_msgoffline_feature(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice = await login(server, "alice", "offline-6", presence=False)
        info = await alice.plugin["xep_0030"].get_info(jid="localhost", timeout=5)
        assert "msgoffline" in info["disco_info"]["features"]
        await alice.close()

    run(scenario())


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_stored_messages_survive_a_restart(tmp_path: Path, how: str) -> None:
    proc = make_server(tmp_path)
    proc.start()
    try:

        async def send() -> None:
            alice = await login(proc, "alice", "durable")
            # The ping result proves the server handled (and stored) the message before it.
            await send_and_sync(alice, "grace@localhost", [f"kept across {how}"])
            if how == "sigkill":
                assert proc.proc is not None
                proc.proc.kill()
                proc.proc.wait()
                alice.abort()
            else:
                await alice.close()

        run(send())
        proc.stop()
        proc.start()

        async def receive() -> None:
            # First negative (nothing yet), then non-negative: the message arrives.
            grace = await login(proc, "grace", presence=False)
            grace.send_presence(ppriority=-1)
            await processed(grace)
            sender = await login(proc, "alice", "marker")
            await marker_is_next(sender, grace, "grace@localhost/r")
            grace.send_presence(ppriority=1)
            message = await grace.next_message()
            assert message["body"] == f"kept across {how}"
            assert message.xml.find(DELAY) is not None
            await grace.close()
            await sender.close()

        run(receive())
    finally:
        proc.stop()


def test_a_resource_coming_online_gets_messages_once(server: ServerProcess) -> None:
    """Two resources log in at once: the stored messages go to one of them, not both."""

    async def scenario() -> None:
        alice = await login(server, "alice", "offline-7")
        await send_and_sync(alice, "heidi@localhost", ["only once"])
        one, two = await asyncio.gather(
            login(server, "heidi", "one"), login(server, "heidi", "two")
        )
        got = []
        for client in (one, two):
            await processed(client)
            while not client.messages.empty():
                got.append(client.messages.get_nowait()["body"])
        # Offline delivery happens while the initial presence is handled, before the ping.
        assert got == ["only once"]
        await one.close()
        await two.close()
        await alice.close()

    run(scenario())
