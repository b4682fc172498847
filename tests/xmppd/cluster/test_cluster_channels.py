"""JSON channel sessions across nodes: the `phoenix` npm client (tests/web/user_chat.mjs) on
node 1, a slixmpp user on node 2. Subscriptions both ways, presence seen on both sides, chat
both ways (to the bare JID, then to the full JID), all through the other node."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import pytest
from joserfc import jws
from joserfc.jwk import OctKey
from support import run
from support_cluster import barrier, body, login, make_node, presence, users, wait_for

WEB = Path(__file__).resolve().parents[2] / "web"
SECRET = "cluster-channels-secret-of-32-bytes-or-more"
TOKENS = f"""
[auth.tokens.apps.app]
algorithm = "HS256"
key = "{SECRET}"
"""


def token(sub: str) -> str:
    claims = {"sub": sub, "aud": "localhost", "exp": int(time.time()) + 300}
    return jws.serialize_compact(
        {"alg": "HS256", "kid": "app"}, json.dumps(claims), OctKey.import_key(SECRET)
    )


def test_phoenix_user_on_one_node_chats_with_an_xmpp_user_on_another(
    tmp_path, pg_url, prefix
) -> None:
    assert shutil.which("node"), "node is needed for the phoenix client"
    if not (WEB / "node_modules" / "phoenix").is_dir():
        pytest.fail("run `npm ci` in tests/web")
    n1, n2 = (make_node(tmp_path, pg_url, n, prefix, extra=TOKENS) for n in ("n1", "n2"))
    try:
        n1.start()
        n2.start()
        (bob,) = users(n1, "bob")
        web = "webby"

        async def scenario() -> None:
            cb = await login(n2, bob, "phone")
            proc = await asyncio.create_subprocess_exec(
                "node",
                str(WEB / "user_chat.mjs"),
                f"ws://127.0.0.1:{n1.http_port}/socket",
                token(web),
                f"{web}@localhost",
                f"{bob}@localhost",
                cwd=WEB,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            steps: list[dict] = []

            async def step(key: str) -> dict:
                """The client's step named `key` (its steps may come in any order)."""
                while not any(key in done for done in steps):
                    line = await asyncio.wait_for(proc.stdout.readline(), 30)  # type: ignore[union-attr]
                    stderr = proc.stderr.read() if not line else None  # type: ignore[union-attr]
                    assert line, (steps, (await stderr).decode())  # type: ignore[misc]
                    steps.append(json.loads(line))
                return next(done for done in steps if key in done)

            try:
                joined = await step("joined")
                assert joined["joined"].startswith(f"{web}@localhost/web-")
                # The phoenix user (node 1) asks bob (node 2); bob approves and asks back.
                await wait_for(cb, presence(f"{web}@localhost", "subscribe"), 10)
                cb.send_presence(pto=f"{web}@localhost", ptype="subscribed")
                cb.send_presence(pto=f"{web}@localhost", ptype="subscribe")
                await barrier(cb)
                assert (await step("approved"))["approved"] == f"{bob}@localhost"
                # Presence of the JSON user, seen on node 2.
                await wait_for(cb, presence(joined["joined"]), 10)
                # Chat: to the bare JID on node 2, delivered to the channel on node 1.
                cb.send_message(mto=f"{web}@localhost", mbody="hello phoenix", mtype="chat")
                got = await step("got")
                assert got == {"got": "hello phoenix", "resource": "phone"}
                answer = await wait_for(cb, body("answer from phoenix"), 10)
                assert answer["from"].full == joined["joined"]
                # ...and bob's presence reached the phoenix client through node 1.
                assert f"{bob}@localhost" in (await step("presence"))["presence"]
                assert await asyncio.wait_for(proc.wait(), 15) == 0
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            # The channel session left: node 2 sees it unavailable.
            await wait_for(cb, presence(joined["joined"], "unavailable"), 10)
            await cb.close()

        run(scenario())
    finally:
        n1.stop()
        n2.stop()
