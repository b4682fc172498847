"""A destroyed room takes its secrets with it: an emptied temporary room, an owner's destroy,
and whatever a restart finds of a room no longer there. A later room of the same name is a new
room: no join history, no archive, no affiliations or config of the old one. The storage is
read directly (the SQLite file) to check nothing of the destroyed room is left."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from contextlib import closing
from pathlib import Path
from typing import Any

from support import ServerProcess, run

OWNER = "http://jabber.org/protocol/muc#owner"
USER = "http://jabber.org/protocol/muc#user"


def rows(data_dir: Path, query: str, *args: str) -> list[tuple]:
    with closing(sqlite3.connect(data_dir / "xmppd.sqlite")) as db:
        return db.execute(query, args).fetchall()


def stored(data_dir: Path, room: str) -> dict[str, list[tuple]]:
    """Everything the database holds of the room named `room` (any creation of it)."""
    local = room.partition("@")[0]
    return {
        "archive": rows(
            data_dir,
            "SELECT owner, stanza FROM archive WHERE owner = ? OR owner LIKE ?",
            room,
            f"{room}/%",
        ),
        "room": rows(
            data_dir, "SELECT value FROM keyval WHERE store = 'muc_rooms' AND user = ?", local
        ),
    }


def holds(data_dir: Path, text: str) -> list[tuple]:
    return rows(data_dir, "SELECT owner FROM archive WHERE stanza LIKE ?", f"%{text}%")


def texts(messages: list[ET.Element]) -> list[str | None]:
    return [m.findtext("{jabber:client}body") for m in messages]


async def post(muc: Any, client: Any, room: str, text: str) -> None:
    muc.groupchat(client, room, text)
    await muc.next(client, lambda s: s.name == "message" and s["body"] == text)


async def leave(muc: Any, client: Any, room: str, nick: str) -> None:
    client.send_presence(pto=f"{room}/{nick}", ptype="unavailable")
    await muc.next(client, muc.from_nick(nick, "unavailable"))


async def destroy(client: Any, room: str, reason: str) -> None:
    iq = client.make_iq_set(ito=room)
    element = ET.SubElement(ET.SubElement(iq.xml, f"{{{OWNER}}}query"), f"{{{OWNER}}}destroy")
    ET.SubElement(element, f"{{{OWNER}}}reason").text = reason
    await iq.send(timeout=5)


def test_an_emptied_temporary_room_takes_its_messages_along(muc) -> None:
    alice, bob, carol = muc.users("alice", "bob", "carol")
    room = muc.room("plans")
    data = muc.server.data_dir

    async def scenario() -> None:
        a, b, c = [await muc.login(u) for u in (alice, bob, carol)]
        await muc.create(a, room, "Alice")
        await post(muc, a, room, "alice's secret plan")
        assert holds(data, "alice's secret plan")  # archived while the room lives
        await leave(muc, a, room, "Alice")
        await muc.barrier(a)  # the leave is handled in full
        assert stored(data, room) == {"archive": [], "room": []}

        # Another user creates a room of that name: a new room, nothing of the old one.
        got = await muc.join(b, room, "Bob")
        assert muc.codes(muc.self_presence(got)) == {"110", "201"}
        assert muc.bodies(got) == []
        await muc.configure(b, room)
        assert texts((await muc.mam(b, room))[0]) == []
        await post(muc, b, room, "bob's own words")
        got = await muc.join(c, room, "Carol")
        assert muc.bodies(got) == ["bob's own words"]
        assert texts((await muc.mam(c, room))[0]) == ["bob's own words"]
        assert holds(data, "alice's secret plan") == []
        for client in (a, b, c):
            await client.close()

    run(scenario())


def test_a_destroyed_persistent_room_leaves_nothing(muc) -> None:
    alice, bob, carol = muc.users("alice", "bob", "carol")
    room = muc.room("kept")
    data = muc.server.data_dir

    async def scenario() -> None:
        a, b, c = [await muc.login(u) for u in (alice, bob, carol)]
        await muc.create(a, room, "Alice", persistentroom="1", roomname="Plans")
        await muc.admin(a, room, jid=f"{bob}@localhost", affiliation="member")
        a.send_message(mto=room, msubject="the plan", mtype="groupchat")
        await muc.next(a, lambda s: s.name == "message" and s["subject"] == "the plan")
        await post(muc, a, room, "alice's secret plan")
        assert stored(data, room)["room"] and stored(data, room)["archive"]

        await destroy(a, room, "done")
        gone = await muc.next(a, lambda s: s.name == "presence")
        assert gone.xml.get("type") == "unavailable"
        assert (muc.item(gone)["affiliation"], muc.item(gone)["role"]) == ("none", "none")
        assert muc.x_user(gone).findtext(f"{{{USER}}}destroy/{{{USER}}}reason") == "done"
        # Acknowledged: deleted durably (another connection reads the file).
        assert stored(data, room) == {"archive": [], "room": []}

        got = await muc.join(c, room, "Carol")
        assert muc.codes(muc.self_presence(got)) == {"110", "201"}
        assert muc.bodies(got) == [] and not got[-1].xml.findtext("{jabber:client}subject")
        await muc.configure(c, room)
        assert texts((await muc.mam(c, room))[0]) == []
        assert await muc.admin_list(c, room, affiliation="member") == []
        owners = await muc.admin_list(c, room, affiliation="owner")
        assert owners == [{"affiliation": "owner", "jid": f"{carol}@localhost"}]
        # Alice and Bob are nobody in the new room.
        for client, nick in ((a, "Alice"), (b, "Bob")):
            got = await muc.join(client, room, nick)
            assert muc.item(muc.self_presence(got))["affiliation"] == "none"
        for client in (a, b, c):
            await client.close()

    run(scenario())


def test_nothing_comes_back_after_a_restart(muc, tmp_path) -> None:
    """A server of its own: a vanished temporary room, and one alive when the server stopped,
    leave nothing behind; a persistent room created later under the first name serves only
    its own history after a restart."""
    server = ServerProcess(tmp_path)
    server.start()
    helper = type(muc)(server)
    alice, bob, carol = helper.users("alice", "bob", "carol")
    first, second = "first@conference.localhost", "second@conference.localhost"
    data = server.data_dir

    async def before() -> None:
        a = await helper.login(alice)
        await helper.create(a, first, "Alice")
        await post(helper, a, first, "alice's secret plan")
        await leave(helper, a, first, "Alice")
        await helper.create(a, second, "Alice")
        await post(helper, a, second, "still in the room at shutdown")
        # A crash while alice is still in the room: closing her stream first would let the
        # room vanish (and take its archive) before the kill.
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait()
        a.abort()

    async def reuse() -> None:
        b = await helper.login(bob)
        await helper.create(b, first, "Bob", persistentroom="1")
        await post(helper, b, first, "bob's plan")
        # The room alive at shutdown was temporary: gone, its archive deleted at start.
        assert holds(data, "still in the room at shutdown") == []
        got = await helper.join(b, second, "Bob")
        assert helper.codes(helper.self_presence(got)) == {"110", "201"}
        await helper.configure(b, second)
        assert texts((await helper.mam(b, second))[0]) == []
        await b.close()

    async def after() -> None:
        c = await helper.login(carol)
        got = await helper.join(c, first, "Carol")
        assert helper.codes(helper.self_presence(got)) == {"110"}  # bob's room, restored
        assert helper.bodies(got) == ["bob's plan"]
        assert texts((await helper.mam(c, first))[0]) == ["bob's plan"]
        assert holds(data, "alice's secret plan") == []
        await c.close()

    try:
        run(before())  # ends with a crash: the second room never gets to vanish
        assert holds(data, "still in the room at shutdown")
        server.start()
        run(reuse())
        server.stop()
        server.start()
        run(after())
    finally:
        server.stop()
    assert "Traceback" not in server.log_text()
