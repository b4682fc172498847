"""Roles on the JSON channels, with the `phoenix` npm client (tests/web/channels_roles.mjs):
a service admin moderates every room from the web too (kicks an XMPP occupant of a room it does
not own), and a `limited` account may not create a room by joining it nor ask a stranger for a
subscription (xmppd/roles.py)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

from joserfc import jws
from joserfc.jwk import OctKey
from phx import Phx, login
from support import ServerProcess, connect, run

HERE = Path(__file__).resolve().parent
SECRET = "a-webmail-secret-of-at-least-32-bytes!"
MUC = "http://jabber.org/protocol/muc"
ROOM = "owned@conference.localhost"
CONFIG = f"""
[auth.tokens.apps.webmail]
algorithm = "HS256"
key = "{SECRET}"
[modules.muc]
lock_new_rooms = false
"""


def token(user: str, room: str) -> str:
    claims = {"sub": user, "rooms": [room], "aud": "localhost", "exp": int(time.time()) + 300}
    return jws.serialize_compact(
        {"alg": "HS256", "kid": "webmail"}, json.dumps(claims), OctKey.import_key(SECRET)
    )


async def phoenix(server: ServerProcess, *args: str) -> list[dict]:
    node = await asyncio.create_subprocess_exec(
        "node",
        str(HERE / "channels_roles.mjs"),
        f"ws://127.0.0.1:{server.http_port}/socket",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=HERE,
    )
    out, err = await asyncio.wait_for(node.communicate(), 25)
    assert node.returncode == 0, err.decode() + out.decode()
    return [json.loads(line) for line in out.decode().splitlines()]


def test_admins_moderate_every_room_and_limited_users_create_none(tmp_path: Path) -> None:
    assert shutil.which("node") and (HERE / "node_modules" / "phoenix").is_dir()
    server = ServerProcess(tmp_path, extra_config=CONFIG)
    text = server.config_path.read_text().replace(
        "demo_account = false",
        'demo_account = false\nadmins = ["boss@localhost"]\nlimited = ["tiny@localhost"]',
    )
    server.config_path.write_text(text)
    for user in ("gajim", "carol", "tiny"):
        server.add_user(user, f"{user}-secret")
    server.start()

    async def scenario() -> None:
        gajim = await connect(server, "gajim", "desk", password="gajim-secret")
        carol = await connect(server, "carol", "desk", password="carol-secret")
        kicked = asyncio.get_running_loop().create_future()

        def on_presence(presence: object) -> None:
            gone = presence["type"] == "unavailable" and not kicked.done()
            if gone and str(presence["from"]) == f"{ROOM}/Carol":
                kicked.set_result(presence.xml)

        carol.add_event_handler("presence", on_presence)
        for client, nick in ((gajim, "Gajim"), (carol, "Carol")):  # gajim creates and owns it
            client.send_raw(f"<presence to='{ROOM}/{nick}'><x xmlns='{MUC}'/></presence>")
            await asyncio.sleep(0.5)
        lines = await phoenix(server, token("boss", ROOM), ROOM, "Carol")
        joined = lines[0]["joined"]
        assert (joined["role"], joined["affiliation"]) == ("moderator", "owner"), lines
        assert "kicked" in lines[-1], lines
        gone = await asyncio.wait_for(kicked, 5)
        codes = {s.get("code") for s in gone.iter("{http://jabber.org/protocol/muc#user}status")}
        assert "307" in codes
        # A limited account joins existing rooms, and creates none.
        fresh = "fresh@conference.localhost"
        refused = await phoenix(server, token("tiny", fresh), fresh)
        assert "join_error" in refused[0] and "not-allowed" in json.dumps(refused[0]), refused
        other = await phoenix(server, token("webber", fresh), fresh)  # a plain user may
        assert other[0]["joined"]["affiliation"] == "owner", other
        joined = await phoenix(server, token("tiny", ROOM), ROOM)
        assert joined[0]["joined"]["affiliation"] == "none"
        # ... and asks no stranger for a subscription: the push is refused, nothing is sent.
        web = await Phx.open(server, await asyncio.to_thread(login, server, "tiny", "tiny-secret"))
        try:
            await web.join("user:tiny@localhost")
            answer = await web.request(
                "user:tiny@localhost", "subscribe", {"jid": "carol@localhost"}
            )
            assert answer["error"]["reason"] == "not-allowed", answer
            assert "may not ask strangers" in answer["error"]["text"]
        finally:
            await web.close()
        await asyncio.gather(gajim.close(), carol.close())

    try:
        run(scenario())
    finally:
        server.stop()
