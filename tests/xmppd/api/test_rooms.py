"""`/rooms` on a running server with a slixmpp occupant: creation with configuration, listing
with occupant counts, configuration, affiliations, occupants, the archive paged both ways by
id and time, and destruction."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from apisupport import client
from support import ServerProcess, connect, run

MUC = "http://jabber.org/protocol/muc"
ROOM = "plans@conference.localhost"


async def join(server: ServerProcess, user: str, room: str, nick: str):  # noqa: ANN201
    occupant = await connect(server, user, "desk")
    joined = asyncio.get_running_loop().create_future()

    def on_presence(presence: object) -> None:
        if str(presence["from"]) == f"{room}/{nick}" and not joined.done():
            joined.set_result(True)

    occupant.add_event_handler("presence", on_presence)
    occupant.send_raw(f"<presence to='{room}/{nick}'><x xmlns='{MUC}'/></presence>")
    await asyncio.wait_for(joined, 5)
    return occupant


def test_create_configure_list_and_destroy(api_server: ServerProcess) -> None:
    async def scenario() -> None:
        with client(api_server) as ops:
            config = {"name": "Plans", "description": "what next", "members_only": True}
            body = {"jid": ROOM, "config": config, "owners": ["alice@localhost"]}
            body["members"] = ["bob@localhost"]
            created = ops.post("/rooms", json=body)
            assert created.status_code == 201, created.text
            room = created.json()
            assert room["jid"] == ROOM and room["occupants"] == 0
            assert room["config"]["members_only"] and room["config"]["persistent"]
            assert room["config"]["description"] == "what next"
            assert ops.post("/rooms", json=body).status_code == 409
            assert ops.post("/rooms", json={"jid": "x@nowhere.localhost"}).status_code == 404
            bad = ops.post(
                "/rooms", json={"jid": "y@conference.localhost", "config": {"whois": "all"}}
            )
            assert bad.status_code == 422 and bad.json()["field"] == "config.whois"
            affiliations = ops.get(f"/rooms/{ROOM}/affiliations").json()["affiliations"]
            assert affiliations == [
                {"jid": "alice@localhost", "affiliation": "owner"},
                {"jid": "bob@localhost", "affiliation": "member"},
            ]
            bob = await join(api_server, "bob", ROOM, "Bob")
            listed = ops.get("/rooms", params={"q": "plans"}).json()
            assert [(r["jid"], r["occupants"]) for r in listed["rooms"]] == [(ROOM, 1)]
            occupants = ops.get(f"/rooms/{ROOM}/occupants").json()["occupants"]
            assert occupants == [
                {
                    "nick": "Bob",
                    "role": "participant",
                    "affiliation": "member",
                    "jid": "bob@localhost",
                }
            ]
            patched = ops.patch(f"/rooms/{ROOM}", json={"name": "Plans 2", "moderated": True})
            assert patched.json()["config"]["name"] == "Plans 2"
            assert ops.get(f"/rooms/{ROOM}").json()["config"]["moderated"] is True
            # An outcast is removed at once (XEP-0045 §9.1: status 301).
            ban = ops.put(
                f"/rooms/{ROOM}/affiliations",
                json={"jid": "bob@localhost", "affiliation": "outcast"},
            )
            assert ban.json() == {"jid": "bob@localhost", "affiliation": "outcast"}
            removed = await _presence_of(bob, f"{ROOM}/Bob", "unavailable")
            assert "301" in str(removed)
            lonely = ops.put(
                f"/rooms/{ROOM}/affiliations",
                json={"jid": "alice@localhost", "affiliation": "none"},
            )
            assert lonely.status_code == 409 and lonely.json()["error"] == "conflict"
            assert ops.delete(f"/rooms/{ROOM}", params={"reason": "done"}).json() == {"ok": True}
            assert ops.get(f"/rooms/{ROOM}").status_code == 404
            await bob.close()

    run(scenario())


async def _presence_of(client_: object, jid: str, type_: str) -> object:
    while True:
        presence = await asyncio.wait_for(client_.presences.get(), 5)  # type: ignore[attr-defined]
        if str(presence["from"]) == jid and presence["type"] == type_:
            return presence


def test_messages_paged_by_id_and_time(api_server: ServerProcess) -> None:
    room = "history@conference.localhost"

    async def scenario() -> None:
        with client(api_server) as ops:
            ops.post("/rooms", json={"jid": room, "owners": ["carol@localhost"]})
            carol = await join(api_server, "carol", room, "Carol")
            before_all = datetime.now(UTC)
            for i in range(6):
                carol.send_message(mto=room, mbody=f"m{i}", mtype="groupchat")
                await asyncio.sleep(0.05)
                if i == 2:
                    time.sleep(0.3)
                    middle = datetime.now(UTC)
                    time.sleep(0.3)
            for _ in range(50):
                page = ops.get(f"/rooms/{room}/messages", params={"limit": 100}).json()
                if len(page["messages"]) == 6:
                    break
                await asyncio.sleep(0.1)
            everything = page["messages"]
            assert [m["body"] for m in everything] == [f"m{i}" for i in range(6)]
            assert {m["from"] for m in everything} == {"Carol"}
            assert {m["jid"] for m in everything} == {"carol@localhost"}
            ids = [m["id"] for m in everything]

            def bodies(**params: object) -> tuple[list[str], bool]:
                answer = ops.get(f"/rooms/{room}/messages", params=params).json()
                return [m["body"] for m in answer["messages"]], answer["complete"]

            assert bodies(limit=2) == (["m4", "m5"], False)  # the newest page
            assert bodies(limit=2, before=ids[4]) == (["m2", "m3"], False)
            assert bodies(limit=3, before=ids[2]) == (["m0", "m1"], True)
            assert bodies(limit=2, after=ids[1]) == (["m2", "m3"], False)
            assert bodies(limit=5, after=ids[3]) == (["m4", "m5"], True)
            stamp = middle.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            assert bodies(start=stamp) == (["m3", "m4", "m5"], True)
            assert bodies(end=stamp) == (["m0", "m1", "m2"], True)
            first = before_all.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            assert bodies(start=first, limit=1) == (["m0"], False)
            unknown = ops.get(f"/rooms/{room}/messages", params={"after": "no-such-id"})
            assert unknown.status_code == 404
            assert (
                ops.get(f"/rooms/{room}/messages", params={"start": "yesterday"}).status_code == 422
            )
            await carol.close()

    run(scenario())
