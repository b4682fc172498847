"""Posting as the system and statistics: a custom event reaches a `phoenix` npm client (as its
own event name) and a slixmpp occupant (XEP-0335 JSON container with the fallback body); a
retraction through the API reaches both; posts to a user, announcements, statistics."""

from __future__ import annotations

import asyncio
import json
import shutil

from apisupport import client
from phx import Phx, login
from support import PASSWORDS, ServerProcess, connect, run

from xmppd.protocol import namespaces as ns

ROOM = "events@conference.localhost"
MUC = "http://jabber.org/protocol/muc"


def _json_of(message: object) -> dict:
    container = message.xml.find(f"{{{ns.JSON}}}json")  # type: ignore[attr-defined]
    assert container is not None, message
    return json.loads(container.text)


async def _next(client_: object, match: object, timeout: float = 5) -> object:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        message = await asyncio.wait_for(client_.messages.get(), max(0.01, left))  # type: ignore[attr-defined]
        if match(message):  # type: ignore[operator]
            return message


def test_room_event_and_retraction_reach_phoenix_and_slixmpp(api_server: ServerProcess) -> None:
    assert shutil.which("node"), "node is needed for the phoenix client"

    async def scenario() -> None:
        with client(api_server) as ops:
            assert ops.post("/rooms", json={"jid": ROOM}).status_code == 201
            gajim = await connect(api_server, "bob", "desk")
            gajim.send_raw(f"<presence to='{ROOM}/Bob'><x xmlns='{MUC}'/></presence>")
            phx = await Phx.open(api_server, login(api_server, "alice", PASSWORDS["alice"]))
            try:
                await phx.join(f"room:{ROOM}", {"nick": "Alice"})
                await asyncio.sleep(0.3)  # bob's join settles
                data = {"home": 2, "away": 1, "scorers": ["Ana", "Bo"]}
                posted = ops.post(
                    f"/rooms/{ROOM}/post", json={"ev": "score", "data": data, "body": "2-1"}
                )
                assert posted.status_code == 200, posted.text
                payload = await phx.event(f"room:{ROOM}", "score")
                assert payload == data
                got = await _next(gajim, lambda m: m.xml.find(f"{{{ns.JSON}}}json") is not None)
                assert str(got["from"]) == ROOM and got["type"] == "groupchat"
                assert got["body"] == "2-1"
                assert _json_of(got) == {"ev": "score", "data": data}
                # Not an object: the JSON client gets it wrapped.
                ops.post(f"/rooms/{ROOM}/post", json={"ev": "tick", "data": 7})
                assert await phx.event(f"room:{ROOM}", "tick") == {"data": 7}
                # A message by bob, retracted through the API (XEP-0425).
                gajim.send_message(mto=ROOM, mbody="a rude word", mtype="groupchat")
                said = await phx.event(
                    f"room:{ROOM}", "new_msg", lambda p: p["body"] == "a rude word"
                )
                retraction = ops.post(
                    f"/rooms/{ROOM}/messages/{said['id']}/retract", json={"reason": "rude"}
                )
                assert retraction.status_code == 200, retraction.text
                event = await phx.event(f"room:{ROOM}", "retract")
                assert event["id"] == said["id"] and event["moderated"] is True
                assert event["reason"] == "rude"
                xmpp = await _next(
                    gajim, lambda m: m.xml.find(f"{{{ns.RETRACT}}}retract") is not None
                )
                retract = xmpp.xml.find(f"{{{ns.RETRACT}}}retract")
                assert retract.get("id") == said["id"]
                assert retract.find(f"{{{ns.MODERATE}}}moderated") is not None
                history = ops.get(f"/rooms/{ROOM}/messages").json()["messages"]
                by_id = {m["id"]: m for m in history}
                assert by_id[said["id"]]["retracted"]["reason"] == "rude"
                assert by_id[posted.json()["id"]]["event"] == {"ev": "score", "data": data}
                reserved = ops.post(f"/rooms/{ROOM}/post", json={"ev": "new_msg", "data": {}})
                assert reserved.status_code == 422 and reserved.json()["field"] == "ev"
                empty = ops.post(f"/rooms/{ROOM}/post", json={})
                assert empty.status_code == 422
            finally:
                await phx.close()
                await gajim.close()

    run(scenario())


def test_post_to_a_user_and_announce(api_server: ServerProcess) -> None:
    async def scenario() -> None:
        with client(api_server, "poster") as poster:
            carol = await connect(api_server, "carol", "desk")
            phx = await Phx.open(api_server, login(api_server, "carol", PASSWORDS["carol"]))
            try:
                await phx.join("user:carol@localhost")
                data = {"invoice": 42}
                answer = poster.post(
                    "/users/carol@localhost/post",
                    json={"ev": "billing", "data": data, "body": "Invoice 42"},
                )
                assert answer.status_code == 200, answer.text
                assert await phx.event("user:carol@localhost", "billing") == data
                got = await _next(carol, lambda m: m.xml.find(f"{{{ns.JSON}}}json") is not None)
                assert str(got["from"]) == "localhost" and got["body"] == "Invoice 42"
                assert _json_of(got) == {"ev": "billing", "data": data}
                sent = poster.post("/announce", json={"subject": "Maintenance", "body": "at 22:00"})
                assert sent.json()["sent"] >= 2  # carol's XMPP and JSON sessions at least
                note = await _next(carol, lambda m: m["type"] == "headline")
                assert str(note["from"]) == "localhost"
                assert note["subject"] == "Maintenance" and note["body"] == "at 22:00"
                assert poster.delete("/users/carol@localhost").status_code == 403  # no users scope
            finally:
                await phx.close()
                await carol.close()

    run(scenario())


def test_stats(api_server: ServerProcess) -> None:
    async def scenario() -> None:
        with client(api_server, "reader") as reader:
            alice = await connect(api_server, "alice", "desk")
            for i in range(3):
                alice.send_message(mto="bob@localhost", mbody=f"hi {i}", mtype="chat")
            await asyncio.sleep(0.3)
            stats = reader.get("/stats").json()
            assert stats["sessions"]["by_transport"].get("tcp", 0) >= 1
            assert stats["sessions"]["total"] == sum(stats["sessions"]["by_transport"].values())
            assert stats["accounts"] >= 3 and stats["accounts_online"] >= 1
            assert stats["messages_per_minute"] >= 3
            assert stats["storage_bytes"] > 0
            await alice.close()

    run(scenario())
