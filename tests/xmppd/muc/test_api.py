"""The room's Python API, for transports without XML streams (the JSON channel gateway): an
in-process server, occupants that are plain pubsub subscribers of their session topics."""

from __future__ import annotations

import trio
from support import free_port

from pubsub.topics import room_topic, session_topic
from xmppd.config import parse
from xmppd.muc import messages
from xmppd.muc.room import MucError
from xmppd.protocol.jid import JID
from xmppd.server import Server


class Inbox:
    """What a gateway session would be: a subscriber of its session topic."""

    def __init__(self) -> None:
        self.stanzas: list = []

    def deliver(self, topic: str, message: object) -> None:
        self.stanzas.append(message)


def config_text(data_dir: str) -> str:
    return f"""
[server]
domain = "localhost"
data_dir = "{data_dir}"
demo_account = false
[c2s]
interfaces = ["127.0.0.1"]
port = {free_port()}
direct_tls_port = {free_port()}
[http]
tls_port = 0
port = 0
[modules.muc]
lock_new_rooms = false
"""


async def test_join_send_leave_without_xml_transport(tmp_path) -> None:
    server = Server(parse(config_text(str(tmp_path / "data"))))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        service = server.hosts["localhost"].services["muc"]
        web, tab = JID.parse("web@localhost/tab1"), JID.parse("other@localhost/tab2")
        inboxes = {str(j): Inbox() for j in (web, tab)}
        for jid, inbox in inboxes.items():
            server.pubsub.subscribe(session_topic(jid), inbox)
        room_jid = "api@conference.localhost"
        await service.join(room_jid, web, "Web")
        room = service.rooms["api"]
        await service.join(room_jid, tab, "Tab")
        try:
            await service.join(room_jid, JID.parse("third@localhost/x"), "Tab")
            raise AssertionError("a taken nick must be refused")
        except MucError as exc:
            assert exc.condition == "conflict"
        # Occupants are in the Tracker under their nicks.
        assert sorted(server.tracker.list(room_topic(room_jid))) == ["Tab", "Web"]
        seen = [s.get("from") for s in inboxes[str(web)].stanzas if s.tag.endswith("presence")]
        assert f"{room_jid}/Tab" in seen
        await messages.send(room, str(tab), "from the web")
        for jid, inbox in inboxes.items():
            last = inbox.stanzas[-1]
            assert last.get("to") == jid and last.get("from") == f"{room_jid}/Tab"
            assert last.findtext("{jabber:client}body") == "from the web"
        await room.leave(str(tab))
        assert list(server.tracker.list(room_topic(room_jid))) == ["Web"]
        await room.leave(str(web))
        assert "api" not in service.rooms  # temporary and empty: gone
        server.stop()


async def test_one_api_locks_events_and_destroy(tmp_path) -> None:
    """A locked room takes no messages through the API either, until its owner configures it;
    what the API does is told as room events (what unread counts follow)."""
    text = config_text(str(tmp_path / "data")).replace("lock_new_rooms = false", "")
    server = Server(parse(text))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        host = server.hosts["localhost"]
        api = host.services["muc"].api
        told: list[tuple[str, object]] = []
        for name in ("room-entered", "room-message", "room-read", "room-destroyed"):

            async def record(event: object, name: str = name) -> bool:
                told.append((name, event))
                return False

            host.events.hook(name, record)
        owner, guest = "owner@localhost/a", "guest@localhost/b"
        room_jid = "locked@conference.localhost"
        await api.join(room_jid, JID.parse(owner), "Owner")
        try:
            await api.send(room_jid, owner, "too early")
            raise AssertionError("a locked room takes no messages")
        except MucError as exc:
            assert exc.condition == "item-not-found"
        await api.configure(room_jid, owner, {"name": "Locked no more", "persistent": False})
        await api.join(room_jid, JID.parse(guest), "Guest")
        first = await api.send(room_jid, guest, "hello")
        await api.correct(room_jid, guest, first, "hello!")
        await api.displayed(room_jid, owner, first)
        await api.moderate(room_jid, owner, first)
        await api.destroy(room_jid, owner, "done")
        seen = [(n, e.bare, e.counts, e.retracts) for n, e in told]  # type: ignore[attr-defined]
        assert seen[:2] == [
            ("room-entered", "owner@localhost", False, ""),
            ("room-entered", "guest@localhost", False, ""),
        ]
        assert seen[2] == ("room-message", "guest@localhost", True, "")
        assert seen[3] == ("room-message", "guest@localhost", False, "")  # the correction
        assert seen[4] == ("room-read", "owner@localhost", False, "")
        assert told[4][1].stanza_id == first  # type: ignore[attr-defined]
        assert seen[5] == ("room-message", "", False, first)  # the moderation
        assert seen[6][0] == "room-destroyed" and len(seen) == 7
        assert not await api.exists(room_jid)
        server.stop()
