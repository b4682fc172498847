"""Room unread counts (xmppd/modules/unread_rooms.py) on a real server: two JSON tabs (the
stock `phoenix` client) and an XMPP client (slixmpp) of one account agree; others' messages
count, one's own do not; XMPP `<displayed/>` markers and JSON `displayed` clear them, never
backwards; retractions and moderations take their message out; counts survive a restart; they
go with the room and with the account."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import pytest
from phx import HERE, Phx, login
from support import ServerProcess, connect, run

USERS = {u: f"{u}-secret" for u in ("alice", "carol", "dave")}
CONFIG = """
[modules.muc]
lock_new_rooms = false
"""
MUC, MARKERS = "http://jabber.org/protocol/muc", "urn:xmpp:chat-markers:0"
RETRACT = "urn:xmpp:message-retract:1"
ME = "user:alice@localhost"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    assert shutil.which("node"), "node is needed for the JSON channel client"
    assert (HERE / "node_modules" / "phoenix").is_dir(), "run `npm ci` in tests/web"
    proc = ServerProcess(tmp_path_factory.mktemp("unread-rooms"), extra_config=CONFIG)
    for user, password in USERS.items():
        proc.add_user(user, password)
    proc.start()
    yield proc
    proc.stop()


async def tab(server: ServerProcess, user: str = "alice") -> tuple[Phx, dict]:
    phx = await Phx.open(server, login(server, user, USERS[user]))
    return phx, await phx.join(f"user:{user}@localhost")


async def occupant(server: ServerProcess, user: str, room: str, nick: str) -> object:
    client = await connect(server, user, nick.lower(), password=USERS[user])
    entered = asyncio.get_running_loop().create_future()

    def on_presence(presence: object) -> None:
        if str(presence["from"]) == f"{room}/{nick}" and not entered.done():
            entered.set_result(True)

    client.add_event_handler("presence", on_presence)
    client.send_raw(f"<presence to='{room}/{nick}'><x xmlns='{MUC}'/></presence>")
    await asyncio.wait_for(entered, 10)
    return client


def unread(room: str, count: int) -> object:
    return lambda u: u["with"] == room and u["count"] == count


def test_room_unread_two_tabs_an_xmpp_client_retractions_restart(server: ServerProcess) -> None:
    async def before_restart() -> tuple[str, str]:
        tab1, reply = await tab(server)
        assert reply["unread"] == {}
        tab2, _ = await tab(server)
        made = await tab1.push(ME, "room_create", {"name": "Counted"})
        room = made["jid"]
        topic = f"room:{room}"
        await tab1.join(topic, {"nick": "Alice"})  # alice is counted from here on
        carol = await occupant(server, "carol", room, "Carol")
        for n in range(3):
            carol.send_message(mto=room, mbody=f"c{n}", mtype="groupchat")
        for t in (tab1, tab2):
            await t.event(ME, "unread", unread(room, 3))
        ids = [
            (await tab1.event(topic, "new_msg", lambda m, n=n: m["body"] == f"c{n}"))["id"]
            for n in range(3)
        ]
        # her own message does not count; her XMPP client's marker counts for both tabs
        await tab1.push(topic, "new_msg", {"body": "mine"})
        phone = await occupant(server, "alice", room, "AlicePhone")
        phone.send_raw(
            f"<message to='{room}' type='groupchat'>"
            f"<displayed xmlns='{MARKERS}' id='{ids[1]}'/></message>"
        )
        for t in (tab1, tab2):
            await t.event(ME, "unread", lambda u: u["count"] == 1 and u["read"] == ids[1])
        # the JSON room topic reads everything; an older marker does not go back
        assert await tab1.push(topic, "displayed", {"id": ids[2]}) == {"unread": 0}
        await tab2.event(ME, "unread", lambda u: u["count"] == 0 and u["read"] == ids[2])
        assert await tab2.push(ME, "displayed", {"with": room, "id": ids[0]}) == {"unread": 0}
        unknown = await tab1.request(topic, "displayed", {"id": "no-such-id"})
        assert unknown["error"]["reason"] == "item-not-found"
        # retractions by the author and by a moderator take their message out of the count
        carol.send_message(mto=room, mbody="r1", mtype="groupchat")
        carol.send_message(mto=room, mbody="r2", mtype="groupchat")
        await tab2.event(ME, "unread", unread(room, 2))
        r1 = (await tab1.event(topic, "new_msg", lambda m: m["body"] == "r1"))["id"]
        r2 = (await tab1.event(topic, "new_msg", lambda m: m["body"] == "r2"))["id"]
        carol.send_raw(
            f"<message to='{room}' type='groupchat' id='x1'><retract xmlns='{RETRACT}' "
            f"id='{r2}'/><body>retracted</body></message>"
        )
        await tab2.event(ME, "unread", unread(room, 1))
        await tab1.push(topic, "moderate", {"id": r1})
        await tab2.event(ME, "unread", unread(room, 0))
        # away: nobody of alice's in the room, carol goes on
        await phone.close()
        for t in (tab1, tab2):
            await t.close()
        carol.send_message(mto=room, mbody="while you were out", mtype="groupchat")
        carol.send_message(mto=room, mbody="and again", mtype="groupchat")
        await asyncio.sleep(0.5)
        await carol.close()
        return room, ids[2]

    room, _read = run(before_restart())
    server.stop()
    server.start()

    async def after_restart() -> None:
        tab1, reply = await tab(server)
        assert reply["unread"] == {room: 2}
        assert await tab1.push(ME, "unread") == {"unread": {room: 2}}
        # a new message while a tab watches (not in the room), then the room goes away
        carol = await occupant(server, "carol", room, "Carol")
        carol.send_message(mto=room, mbody="one more", mtype="groupchat")
        await tab1.event(ME, "unread", unread(room, 3))
        await carol.close()
        topic = f"room:{room}"
        await tab1.join(topic, {"nick": "Alice"})
        assert await tab1.push(topic, "destroy", {"reason": "done"}) == {}  # answered, then
        assert (await tab1.event(topic, "phx_close"))["reason"] == "destroyed"  # closed
        await tab1.event(ME, "unread", lambda u: u == {"with": room, "count": 0, "read": None})
        again, reply = await tab(server)
        assert reply["unread"] == {}
        for t in (tab1, again):
            await t.close()

    run(after_restart())


def test_room_unread_goes_with_the_account(server: ServerProcess) -> None:
    async def counted() -> str:
        alice, _ = await tab(server)
        room = (await alice.push(ME, "room_create", {"name": "Gone soon"}))["jid"]
        await alice.join(f"room:{room}", {"nick": "Alice"})
        dave = await occupant(server, "dave", room, "Dave")
        await dave.close()  # dave is counted in the room now
        await asyncio.sleep(0.2)
        alice_topic = f"room:{room}"
        await alice.push(alice_topic, "new_msg", {"body": "for dave"})
        await alice.close()
        davetab, reply = await tab(server, "dave")
        assert reply["unread"] == {room: 1}
        await davetab.close()
        return room

    room = run(counted())
    assert server.cli("deluser", "dave@localhost").returncode == 0
    server.add_user("dave", USERS["dave"])

    async def fresh() -> None:
        davetab, reply = await tab(server, "dave")
        assert room not in reply["unread"]
        await davetab.close()

    run(fresh())


def test_removing_the_bookmark_stops_counting_the_room(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice, _ = await tab(server)
        room = (await alice.push(ME, "room_create", {"name": "Let go"}))["jid"]
        await alice.join(f"room:{room}", {"nick": "Alice"})
        carol = await occupant(server, "carol", room, "Carol")
        carol.send_message(mto=room, mbody="still there?", mtype="groupchat")
        await alice.event(ME, "unread", unread(room, 1))
        await alice.push(ME, "bookmark_remove", {"jid": room})
        await alice.event(ME, "unread", lambda u: u == {"with": room, "count": 0, "read": None})
        carol.send_message(mto=room, mbody="hello?", mtype="groupchat")
        await asyncio.sleep(0.5)
        again, reply = await tab(server)
        assert room not in reply["unread"]
        for client in (alice, again):
            await client.close()
        await carol.close()

    run(scenario())
