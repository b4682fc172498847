"""@xmpp/client (npm) in node over WebSocket: login and a message round trip with slixmpp.

The node side is tests/web/xmpp_client.mjs; its packages are pinned in tests/web/package.json
and installed by scripts/test (`npm ci`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ServerProcess, connect, run

HERE = Path(__file__).resolve().parent
USERS = {"nodealice": "nodealice-secret", "nodebob": "nodebob-secret"}


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    assert shutil.which("node"), "node is needed for the web client tests"
    assert (HERE / "node_modules" / "@xmpp" / "client").is_dir(), (
        "run `npm ci` in tests/web (scripts/test does)"
    )
    server = ServerProcess(tmp_path_factory.mktemp("xmppjs"))
    for user, password in USERS.items():
        server.add_user(user, password)
    server.start()
    yield server
    server.stop()


def test_xmpp_client_logs_in_over_websocket_and_exchanges_messages(web: ServerProcess) -> None:
    async def scenario() -> None:
        bob = await connect(web, "nodebob", password=USERS["nodebob"])
        node = await asyncio.create_subprocess_exec(
            "node",
            str(HERE / "xmpp_client.mjs"),
            f"ws://127.0.0.1:{web.http_port}/xmpp-websocket",
            "localhost",
            "nodealice",
            USERS["nodealice"],
            "nodebob@localhost",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=HERE,
        )
        try:
            got = await bob.next_message(timeout=20)
            assert got["body"] == "ping from node"
            assert str(got["from"]) == "nodealice@localhost/node"
            bob.send_message(mto=got["from"], mbody="pong from bob", mtype="chat")
            out, err = await asyncio.wait_for(node.communicate(), 20)
        finally:
            if node.returncode is None:
                node.kill()
                await node.wait()
            await bob.close()
        assert node.returncode == 0, err.decode()
        lines = [json.loads(line) for line in out.decode().splitlines()]
        assert lines == [{"online": "nodealice@localhost/node"}, {"reply": "pong from bob"}]

    run(scenario())
    assert "over WebSocket" in web.log_text()
