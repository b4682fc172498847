"""The server events a subscription can ask for, each driven the way a user or admin causes it
and received by a loopback webhook: rooms created (by a join, by the API) and destroyed,
occupants removed by a kick and a room ban, accounts created and banned, a user's 1:1 messages
to the server's bot (source `user`), and an account deleted while the server is stopped."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

from apisupport import client, start_server
from hooksupport import Receiver, join, verify
from support import ServerProcess, connect, free_port, run

MUC_ADMIN = "http://jabber.org/protocol/muc#admin"


def _subscribe(ops, url: str, **fields) -> dict:  # noqa: ANN001
    body = {"provider": "webhook", "target": {"url": url}, **fields}
    answer = ops.post("/subscriptions", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def _events(web: Receiver, sub: dict, count: int) -> list[dict]:
    requests = web.wait(count)
    for request in requests:
        verify(sub["secret"], request)
    return [r.json()["event"] for r in requests]


def test_rooms_created_and_destroyed(hook_server: ServerProcess, ops) -> None:  # noqa: ANN001
    with Receiver() as web:
        sub = _subscribe(ops, web.url, source="rooms", events=["room-created", "room-destroyed"])
        room = "made-by-api@conference.localhost"
        assert ops.post("/rooms", json={"jid": room}).status_code == 201
        assert ops.delete(f"/rooms/{room}").status_code == 200

        async def scenario() -> None:
            alice = await join(hook_server, "alice", "made-by-join@conference.localhost", "A")
            await alice.close()

        run(scenario())
        events = _events(web, sub, 3)
        seen = [(e["type"], e["room"], e["source"]) for e in events]
        assert seen[:2] == [("room-created", room, "room"), ("room-destroyed", room, "room")]
        joined = next(e for e in events[2:] if e["room"].startswith("made-by-join"))
        assert (joined["type"], joined["sender"]) == ("room-created", "alice@localhost")
        ops.delete(f"/subscriptions/{sub['id']}")


def test_kick_and_room_ban_are_reported(hook_server: ServerProcess, ops) -> None:  # noqa: ANN001
    room = "moderated@conference.localhost"
    made = ops.post("/rooms", json={"jid": room, "owners": ["alice@localhost"]})
    assert made.status_code == 201, made.text
    with Receiver() as web:
        sub = _subscribe(ops, web.url, source="room", room=room, events=["leave"])

        async def scenario() -> None:
            alice = await join(hook_server, "alice", room, "Alice")
            bob = await join(hook_server, "bob", room, "Bob")
            kick = alice.make_iq_set(ito=room)
            query = ET.SubElement(kick.xml, f"{{{MUC_ADMIN}}}query")
            ET.SubElement(query, f"{{{MUC_ADMIN}}}item", nick="Bob", role="none")
            await kick.send(timeout=5)
            await bob.close()
            bob = await join(hook_server, "bob", room, "Bob", resource="again")
            ban = {"kind": "room", "target": "bob@localhost", "room": room, "reason": "spam"}
            assert ops.post("/bans", json=ban).status_code == 201
            await asyncio.sleep(0.3)
            await bob.close()
            await alice.close()

        run(scenario())
        events = _events(web, sub, 3)
        removals = [(e["sender"], e["removal"]) for e in events]
        assert removals[:2] == [("bob@localhost", "kick"), ("bob@localhost", "ban")]
        assert ("alice@localhost", None) in removals[2:]  # an ordinary leave stays one
        ops.delete(f"/subscriptions/{sub['id']}")


def test_accounts_created_and_banned(ops) -> None:  # noqa: ANN001
    with Receiver() as web:
        sub = _subscribe(ops, web.url, source="accounts",
                         events=["account-created", "account-banned"])  # fmt: skip
        body = {"jid": "dave@localhost", "password": "dave-secret-1"}
        assert ops.post("/users", json=body).status_code == 201
        ban = {"kind": "account", "target": "dave@localhost", "duration": 600, "reason": "spam"}
        assert ops.post("/bans", json=ban).status_code == 201
        created, banned = _events(web, sub, 2)
        assert (created["type"], created["sender"]) == ("account-created", "dave@localhost")
        assert (banned["type"], banned["sender"], banned["text"]) == (
            "account-banned", "dave@localhost", "spam")  # fmt: skip
        assert banned["until"] is not None and banned["until"] > banned["time"]
        ops.delete(f"/subscriptions/{sub['id']}")


def test_messages_to_the_bot(hook_server: ServerProcess, ops) -> None:  # noqa: ANN001
    with Receiver() as web:
        sub = _subscribe(ops, web.url, source="user", user="carol@localhost", events=["message"])
        errors: list[str] = []

        async def scenario() -> None:
            carol = await connect(hook_server, "carol", "bot")
            carol.add_event_handler("message_error", lambda m: errors.append(str(m)))
            carol.send_message(mto="localhost", mbody="/help", mtype="chat")  # a command
            carol.send_message(mto="localhost", mbody="deploy please", mtype="chat")
            bob = await connect(hook_server, "bob", "bot")  # not subscribed: bounced as before
            bob.send_message(mto="localhost", mbody="hello?", mtype="chat")
            await asyncio.sleep(0.5)
            await carol.close()
            await bob.close()

        run(scenario())
        [event] = _events(web, sub, 1)
        assert (event["source"], event["sender"], event["text"]) == (
            "user", "carol@localhost", "deploy please")  # fmt: skip
        assert errors == []  # taken by the subscription: no service-unavailable bounce
        ops.delete(f"/subscriptions/{sub['id']}")


def test_account_deleted_while_stopped(tmp_path) -> None:  # noqa: ANN001
    server = start_server(tmp_path, "[hooks]\nretry_base = 0.2\nretry_max = 0.4\n")
    port = free_port()
    try:
        with client(server) as ops:
            sub = _subscribe(ops, f"http://127.0.0.1:{port}/in", source="accounts",
                             events=["account-deleted"])  # fmt: skip
        server.stop()
        result = server.cli("deluser", "bob@localhost")
        assert result.returncode == 0, result.stderr
        with Receiver(port=port) as web:
            server.start()
            [event] = _events(web, sub, 1)
            assert (event["type"], event["sender"]) == ("account-deleted", "bob@localhost")
    finally:
        server.stop()
