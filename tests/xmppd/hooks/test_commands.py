"""Slash commands from slixmpp (in a room and to the server's bot) and from the `phoenix` npm
client (same code path): /watch, /follow, /mute, /status, /help; unknown ones answer with
help; commands are neither archived nor seen by the other occupants; only a room owner sends
the room elsewhere; `/me` stays a message. Then an incoming webhook posts as a named bot."""

from __future__ import annotations

import asyncio
import shutil

from hooksupport import join
from phx import Phx, http_post, login
from support import PASSWORDS, ServerProcess, connect, run

from xmppd.protocol import namespaces as ns

ROOM = "cmds@conference.localhost"


async def _answer(client_: object, timeout: float = 5) -> str:
    """The next message that carries a command answer (JSON container `command`)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = max(0.01, deadline - asyncio.get_running_loop().time())
        message = await asyncio.wait_for(client_.messages.get(), left)  # type: ignore[attr-defined]
        if message.xml.find(f"{{{ns.JSON}}}json") is not None:
            return message["body"]


def test_commands_from_slixmpp(hook_server: ServerProcess, ops) -> None:  # noqa: ANN001
    assert ops.post("/rooms", json={"jid": ROOM}).status_code == 201
    owner = {"jid": "alice@localhost", "affiliation": "owner"}
    assert ops.put(f"/rooms/{ROOM}/affiliations", json=owner).status_code == 200

    async def scenario() -> None:
        alice = await join(hook_server, "alice", ROOM, "Alice")
        bob = await join(hook_server, "bob", ROOM, "Bob")
        try:
            await asyncio.sleep(0.3)
            while not bob.messages.empty():
                bob.messages.get_nowait()
            bob.send_message(mto=ROOM, mbody="/frobnicate", mtype="groupchat")
            assert "Commands: /watch" in await _answer(bob)
            bob.send_message(mto=ROOM, mbody="/watch https://127.0.0.1:9/x", mtype="groupchat")
            assert "only a room owner" in await _answer(bob)
            bob.send_message(mto=ROOM, mbody="/watch deploy #ops", mtype="groupchat")
            made = await _answer(bob)
            assert made.startswith("Subscribed ") and "bob@localhost" in made
            bob.send_message(mto=ROOM, mbody="/status", mtype="groupchat")
            assert "watch deploy #ops -> xmpp bob@localhost" in await _answer(bob)
            # The bridge brings matching room messages to bob 1:1, from the server.
            alice.send_message(mto=ROOM, mbody="lunch?", mtype="groupchat")
            alice.send_message(mto=ROOM, mbody="deploy at 5", mtype="groupchat")
            while True:
                got = await bob.next_message(10)
                if got["type"] == "chat":
                    break
            assert got["body"] == f"[{ROOM}] Alice: deploy at 5"
            bob.send_message(mto=ROOM, mbody="/mute", mtype="groupchat")
            assert (await _answer(bob)).startswith("Muted 1")
            bob.send_message(mto=ROOM, mbody="/me waves", mtype="groupchat")  # a message
            # The owner manages the room's subscriptions, webhook targets included.
            alice.send_message(mto=ROOM, mbody="/follow https://127.0.0.1:9/x", mtype="groupchat")
            assert (await _answer(alice)).startswith("Subscribed ")
            alice.send_message(mto=ROOM, mbody="/status", mtype="groupchat")
            status = await _answer(alice)
            assert "follow every message -> webhook" in status and "mute deploy" in status
            # To the server's bot, naming the room.
            bob.send_message(mto="localhost", mbody=f"/watch {ROOM} lunch", mtype="chat")
            assert "lunch -> bob@localhost" in await _answer(bob)
            bob.send_message(mto="localhost", mbody="/nope", mtype="chat")
            assert "Commands:" in await _answer(bob)
            bob.send_message(mto=ROOM, mbody="/", mtype="groupchat")
            assert "Commands:" in await _answer(bob)
            closed = {"config": {"members_only": True}}
            assert ops.patch(f"/rooms/{ROOM}", json=closed["config"]).status_code == 200
            bob.send_message(mto="localhost", mbody=f"/watch {ROOM}", mtype="chat")
            assert "You may not read that room" in await _answer(bob)
            await asyncio.sleep(0.5)
        finally:
            await alice.close()
            await bob.close()

    run(scenario())
    history = ops.get(f"/rooms/{ROOM}/messages").json()
    bodies = [m["body"] for m in history["messages"]]
    assert "/me waves" in bodies and "deploy at 5" in bodies
    assert not [b for b in bodies if b.startswith(("/watch", "/status", "/mute", "/frob"))]
    for sub in ops.get("/subscriptions", params={"room": ROOM}).json()["items"]:
        ops.delete(f"/subscriptions/{sub['id']}")


def test_commands_from_phoenix(hook_server: ServerProcess, ops) -> None:  # noqa: ANN001
    assert shutil.which("node"), "node is needed for the phoenix client"
    room = "phx-cmds@conference.localhost"
    assert ops.post("/rooms", json={"jid": room}).status_code == 201

    async def scenario() -> None:
        phx = await Phx.open(hook_server, login(hook_server, "carol", PASSWORDS["carol"]))
        try:
            topic = f"room:{room}"
            await phx.join(topic, {"nick": "Carol"})
            sent = await phx.push(topic, "new_msg", {"body": "/watch #release"})
            assert sent["id"] is None  # nothing archived
            answer = await phx.event(topic, "command")
            assert answer["command"] == "watch" and answer["text"].startswith("Subscribed ")
            await phx.push(topic, "new_msg", {"body": "/status"})
            answer = await phx.event(topic, "command", lambda p: p["command"] == "status")
            assert "#release -> xmpp carol@localhost" in answer["text"]
            await phx.push(topic, "new_msg", {"body": "/what"})
            answer = await phx.event(topic, "command", lambda p: p["command"] == "help")
            assert "/follow" in answer["text"]
            assert phx.events(topic, "new_msg") == []  # commands never come back as text
        finally:
            await phx.close()

    run(scenario())
    subs = ops.get("/subscriptions", params={"room": room}).json()["items"]
    assert [(s["owner"], s["tags"]) for s in subs] == [("carol@localhost", ["release"])]


def test_incoming_webhook_posts_into_a_room(hook_server: ServerProcess, ops) -> None:  # noqa: ANN001
    room = "inbox@conference.localhost"
    assert ops.post("/rooms", json={"jid": room}).status_code == 201
    made = ops.post("/incoming-hooks", json={"room": room, "name": "CI"})
    assert made.status_code == 201, made.text
    path = made.json()["path"]
    assert "secret" not in ops.get("/incoming-hooks").json()["items"][0]

    async def scenario() -> None:
        bob = await join(hook_server, "bob", room, "Bob", resource="inbox")
        try:
            status, _, answer = http_post(hook_server, path, {"body": "build 42 passed"})
            assert status == 200, answer
            got = await bob.next_message(5)
            while got["type"] != "groupchat" or not got["body"]:
                got = await bob.next_message(5)
            assert got["body"] == "build 42 passed"
            assert str(got["from"]) == f"{room}/CI"
        finally:
            await bob.close()

    run(scenario())
    wrong = path.rsplit("/", 1)[0] + "/not-the-secret"
    assert http_post(hook_server, wrong, {"body": "x"})[0] == 404
    assert http_post(hook_server, path, {"nope": 1})[0] == 422
    assert http_post(hook_server, path, b"{" * 10)[0] == 400
    assert http_post(hook_server, path, {"body": "x" * 20000})[0] == 413
    statuses = [http_post(hook_server, path, {"body": "spam"})[0] for _ in range(30)]
    assert 429 in statuses  # incoming_per_minute = 60: a burst of 15 then refusals


def test_incoming_webhook_to_a_user(hook_server: ServerProcess, ops) -> None:  # noqa: ANN001
    made = ops.post("/incoming-hooks", json={"user": "alice@localhost", "name": "Pager"})
    assert made.status_code == 201, made.text
    assert ops.post("/incoming-hooks", json={"name": "x"}).status_code == 422
    assert ops.post("/incoming-hooks", json={"room": "no@conference.localhost",
                                             "name": "x"}).status_code == 404  # fmt: skip

    async def scenario() -> None:
        alice = await connect(hook_server, "alice", "pager")
        try:
            status, _, answer = http_post(hook_server, made.json()["path"], {"body": "disk full"})
            assert status == 200, answer
            got = await alice.next_message(5)
            assert (got["body"], str(got["from"]), got["type"]) == (
                "disk full", "localhost/Pager", "chat")  # fmt: skip
        finally:
            await alice.close()

    run(scenario())
    assert ops.delete(f"/incoming-hooks/{made.json()['id']}").status_code == 200
    assert http_post(hook_server, made.json()["path"], {"body": "x"})[0] == 404
