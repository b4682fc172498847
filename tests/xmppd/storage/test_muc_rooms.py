"""What the MUC service keeps of a room, on both drivers: `MucService.destroy_room` (the call an
admin API makes) leaves nothing stored, a join for the name waits for the deletion, and archives
of rooms that vanished with the process are deleted at the next start. An in-process server;
occupants are pubsub subscribers of their session topics (the JSON-channel gateway's way)."""

from __future__ import annotations

import trio
from support import free_port

from pubsub.topics import session_topic
from xmppd.config import parse
from xmppd.muc import messages
from xmppd.protocol.jid import JID
from xmppd.server import Server

ROOM = "plans@conference.localhost"
USER = "{http://jabber.org/protocol/muc#user}"


class Inbox:
    def __init__(self) -> None:
        self.stanzas: list = []

    def deliver(self, topic: str, message: object) -> None:
        self.stanzas.append(message)


def make_server(backend, data_dir: str) -> Server:
    storage = f'path = "{backend.dsn}"' if backend.driver == "sqlite" else f'dsn = "{backend.dsn}"'
    return Server(
        parse(f"""
[server]
domain = "localhost"
data_dir = "{data_dir}"
demo_account = false
[storage]
driver = "{backend.driver}"
{storage}
[c2s]
interfaces = ["127.0.0.1"]
port = {free_port()}
direct_tls_port = {free_port()}
[http]
tls_port = 0
port = 0
[modules.muc]
lock_new_rooms = false
""")
    )


def stored(backend, local: str) -> tuple[list, list]:
    room = f"{local}@conference.localhost"
    archive = backend.execute(
        "SELECT owner FROM archive WHERE store = 'muc' AND (owner = ? OR owner LIKE ?)",
        (room, f"{room}/%"),
    )
    doc = backend.execute(
        "SELECT value FROM keyval WHERE store = 'muc_rooms' AND \"user\" = ?", (local,)
    )
    return archive, doc


async def test_destroy_room_leaves_nothing_stored(backend, tmp_path) -> None:
    server = make_server(backend, str(tmp_path / "data"))
    web, other = JID.parse("web@localhost/tab"), JID.parse("other@localhost/tab")
    inbox = Inbox()
    server.pubsub.subscribe(session_topic(str(web)), inbox)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        service = server.hosts["localhost"].services["muc"]
        await service.join(ROOM, web, "Web")
        room = service.rooms["plans"]
        room.config.persistent = True
        room.affiliations["member@localhost"] = "member"
        await room.save()
        await messages.send(room, str(web), "the secret plan")
        archive, doc = stored(backend, "plans")
        assert archive == [(room.archive_owner,)] and len(doc) == 1

        # A join for the name during the destruction waits for it, then makes a new room.
        async with trio.open_nursery() as both:
            both.start_soon(lambda: service.destroy_room(ROOM, reason="closed"))
            both.start_soon(lambda: service.join(ROOM, other, "Other"))
        gone = [s for s in inbox.stanzas if s.get("type") == "unavailable"][-1]
        assert gone.findtext(f"{USER}x/{USER}destroy/{USER}reason") == "closed"
        new = service.rooms["plans"]
        assert new is not room and new.creation != room.creation
        assert new.affiliations == {"other@localhost": "owner"}
        assert not new.config.persistent and list(new.history.entries) == []
        assert stored(backend, "plans") == ([], [])
        page = await service.archive.query(new.archive_owner)
        assert page.items == []

        assert await service.destroy_room(ROOM) is True  # by JID; the occupant leaves
        assert "plans" not in service.rooms
        assert await service.destroy_room("nosuch") is False
        server.stop()


async def test_archives_of_vanished_rooms_are_deleted_at_start(backend, tmp_path) -> None:
    web = JID.parse("web@localhost/tab")
    server = make_server(backend, str(tmp_path / "data"))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        service = server.hosts["localhost"].services["muc"]
        await service.join(ROOM, web, "Web")  # temporary, alive when the process ends
        await messages.send(service.rooms["plans"], str(web), "said before the end")
        await service.join("kept@conference.localhost", web, "Web")
        kept = service.rooms["kept"]
        kept.config.persistent = True
        await kept.save()
        await messages.send(kept, str(web), "kept words")
        server.stop()
    assert stored(backend, "plans")[0]

    server = make_server(backend, str(tmp_path / "data"))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        service = server.hosts["localhost"].services["muc"]
        await service.ready()
        assert stored(backend, "plans") == ([], [])
        assert [e.author for e in service.rooms["kept"].history.entries] == ["web@localhost"]
        assert len(stored(backend, "kept")[0]) == 1
        server.stop()
