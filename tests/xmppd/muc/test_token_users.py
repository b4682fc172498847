"""Users of a host application (token users, no local account) are users: with
`hide_deleted_accounts_history` on, what they said in a room stays in join history and in the
room archive after they go offline, while a deleted account's messages are still hidden."""

from __future__ import annotations

import asyncio
import json
import time
import xml.etree.ElementTree as ET
from typing import Any

import websockets
from joserfc import jws
from joserfc.jwk import OctKey
from support import run

SECRET = "token-users-test-secret-of-32-bytes-or-more"
SERVER_CONFIG = f"""
[auth.tokens.apps.app]
algorithm = "HS256"
key = "{SECRET}"
[modules.muc]
hide_deleted_accounts_history = true
"""


def token(sub: str, room: str) -> str:
    claims = {"sub": sub, "aud": "localhost", "exp": int(time.time()) + 300, "rooms": [room]}
    return jws.serialize_compact(
        {"alg": "HS256", "kid": "app"}, json.dumps(claims), OctKey.import_key(SECRET)
    )


async def frame(ws: Any, event: str) -> list:
    while True:
        got = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if got[3] == event:
            return got


async def say_from_the_app(muc: Any, sub: str, room: str, text: str) -> None:
    """The app's user joins the room over a JSON channel, says `text`, and goes away."""
    url = f"ws://127.0.0.1:{muc.server.http_port}/socket/websocket?vsn=2.0.0"
    async with websockets.connect(f"{url}&token={token(sub, room)}") as ws:
        topic = f"room:{room}"
        await ws.send(json.dumps(["1", "1", topic, "phx_join", {"nick": sub.capitalize()}]))
        assert (await frame(ws, "phx_reply"))[4]["status"] == "ok"
        await ws.send(json.dumps(["1", "2", topic, "new_msg", {"body": text}]))
        assert (await frame(ws, "phx_reply"))[4]["status"] == "ok"


def texts(messages: list[ET.Element]) -> list[str | None]:
    return [m.findtext("{jabber:client}body") for m in messages]


def test_token_users_history_stays_after_they_leave(muc) -> None:
    alice, gone, carol = muc.users("alice", "gone", "carol")
    room = muc.room()

    async def scenario() -> None:
        a, g, c = [await muc.login(u) for u in (alice, gone, carol)]
        await muc.create(a, room, "Alice")
        await muc.join(g, room, "Gone")
        await say_from_the_app(muc, "tom", room, "from the host app")
        await muc.next(a, lambda s: s.name == "message" and s["body"] == "from the host app")
        await muc.next(a, muc.from_nick("Tom", "unavailable"))  # Tom is offline now
        muc.groupchat(g, room, "my secret")
        await muc.next(a, lambda s: s.name == "message" and s["body"] == "my secret")
        await g.close()
        result = muc.server.cli("deluser", f"{gone}@localhost")
        assert result.returncode == 0, result.stderr

        got = await muc.join(c, room, "Carol")
        assert muc.bodies(got) == ["from the host app"]
        assert texts((await muc.mam(c, room))[0]) == ["from the host app"]
        for client in (a, c):
            await client.close()

    run(scenario())
