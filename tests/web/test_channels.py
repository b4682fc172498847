"""The `phoenix` npm client in node against JSON channels, with a slixmpp occupant in the room.

The node side is tests/web/channels.mjs; `phoenix` is pinned in tests/web/package.json.
Both Phoenix transports: WebSocket and the long-poll fallback.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from joserfc import jwe, jws
from joserfc.jwk import OctKey
from support import ServerProcess, connect, run

HERE = Path(__file__).resolve().parent
HS_SECRET = "a-webmail-secret-of-at-least-32-bytes!"
AES_KEY = "0123456789abcdef"
MUC = "http://jabber.org/protocol/muc"
TOKENS = f"""
[auth.tokens.apps.webmail]
algorithm = "HS256"
key = "{HS_SECRET}"
[auth.tokens.apps.planga]
algorithm = "A128GCMKW"
key = "{AES_KEY}"
[modules.muc]
lock_new_rooms = false
"""


def hs256(claims: dict) -> str:
    return jws.serialize_compact(
        {"alg": "HS256", "kid": "webmail"}, json.dumps(claims), OctKey.import_key(HS_SECRET)
    )


def a128gcmkw(claims: dict) -> str:
    header = {"alg": "A128GCMKW", "enc": "A128GCM"}
    key = OctKey.import_key(AES_KEY.encode())
    return jwe.encrypt_compact(header, json.dumps(claims), key, algorithms=["A128GCMKW", "A128GCM"])


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    assert shutil.which("node"), "node is needed for the web client tests"
    assert (HERE / "node_modules" / "phoenix").is_dir(), "run `npm ci` in tests/web"
    server = ServerProcess(tmp_path_factory.mktemp("channels"), extra_config=TOKENS)
    server.add_user("gajim", "gajim-secret")
    server.start()
    yield server
    server.stop()


async def _occupant(web: ServerProcess, room: str) -> object:
    client = await connect(web, "gajim", "desk", password="gajim-secret")
    joined = asyncio.get_running_loop().create_future()

    def on_presence(presence: object) -> None:
        if str(presence["from"]) == f"{room}/Gajim" and not joined.done():
            joined.set_result(True)

    client.add_event_handler("presence", on_presence)
    client.send_raw(f"<presence to='{room}/Gajim'><x xmlns='{MUC}'/></presence>")
    await asyncio.wait_for(joined, 5)
    return client


def _round_trip(web: ServerProcess, transport: str, token: str, room: str) -> None:
    async def scenario() -> None:
        gajim = await _occupant(web, room)
        node = await asyncio.create_subprocess_exec(
            "node",
            str(HERE / "channels.mjs"),
            f"ws://127.0.0.1:{web.http_port}/socket",
            token,
            room,
            "Gajim",
            transport,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=HERE,
        )
        try:
            while True:  # the subject and presences come first; wait for the web user's line
                got = await gajim.next_message(timeout=20)
                if got["body"]:
                    break
            assert got["type"] == "groupchat"
            assert str(got["from"]) == f"{room}/webuser"
            assert got["body"] == "hello from phoenix"
            gajim.send_message(mto=room, mbody="hi from gajim", mtype="groupchat")
            out, err = await asyncio.wait_for(node.communicate(), 20)
        finally:
            if node.returncode is None:
                node.kill()
                await node.wait()
            await gajim.close()
        assert node.returncode == 0, err.decode() + out.decode()
        lines = [json.loads(line) for line in out.decode().splitlines()]
        steps = [line for line in lines if "socket_error" not in line]
        joined = steps[0]["joined"]
        assert (joined["nick"], joined["role"], joined["affiliation"]) == (
            "webuser",
            "participant",
            "none",
        )
        assert steps[1] == {"presence": ["Gajim", "webuser"]}
        assert {"pushed": True} in steps
        assert steps[-1] == {"reply": "hi from gajim"}

    run(scenario())


def test_phoenix_websocket_joins_a_room_with_an_xmpp_occupant(web: ServerProcess) -> None:
    room = "lobby@conference.localhost"
    claims = {"sub": "webber", "name": "Web", "rooms": [room], "aud": "localhost"}
    token = hs256({**claims, "exp": int(time.time()) + 300})
    _round_trip(web, "websocket", token, room)
    assert "over WebSocket from" in web.log_text()


def test_phoenix_longpoll_with_a_planga_style_encrypted_token(web: ServerProcess) -> None:
    room = "poll@conference.localhost"
    claims = {"sub": "poller", "topics": ["room:*@conference.localhost"], "aud": "localhost"}
    token = a128gcmkw({**claims, "exp": int(time.time()) + 300})
    _round_trip(web, "longpoll", token, room)
    log = web.log_text()
    assert "opened for poller@localhost/web-" in log and "over long-poll from" in log
