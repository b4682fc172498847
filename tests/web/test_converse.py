"""Converse.js in headless Debian Chromium (playwright-core, `apt-get install chromium`): it
discovers the WebSocket endpoint through XEP-0156 host-meta, logs in, and exchanges a message
with a slixmpp client; the same over BOSH. Screenshots go to the server's test directory."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ServerProcess, connect, run

HERE = Path(__file__).resolve().parent
USERS = {"conalice": "conalice-secret", "conbob": "conbob-secret"}
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    assert shutil.which("node"), "node is needed for the web client tests"
    assert Path(CHROMIUM).exists(), "apt-get install chromium (scripts/test does)"
    assert (HERE / "node_modules" / "converse.js").is_dir(), "run `npm ci` in tests/web"
    base = tmp_path_factory.mktemp("converse")
    server = ServerProcess(base)
    # Host-meta must name the HTTPS endpoint (Converse only takes wss:// from discovery), and
    # the page's origin must be allowed to open the WebSocket.
    server.config_path.write_text(
        server.config_path.read_text().replace(
            "[c2s]",
            f'public_url = "https://127.0.0.1:{server.https_port}"\n'
            'origins = ["https://app.test"]\n\n[c2s]',
            1,
        )
    )
    for user, password in USERS.items():
        server.add_user(user, password)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("transport", ["websocket", "bosh"])
def test_converse_logs_in_and_chats(web: ServerProcess, transport: str) -> None:
    """WebSocket: discovered through host-meta. BOSH: Converse is given the endpoint."""
    screenshot = web.base / f"converse-{transport}.png"
    bosh = [f"https://127.0.0.1:{web.https_port}/http-bind"] if transport == "bosh" else []

    async def scenario() -> list[dict[str, str]]:
        bob = await connect(web, "conbob", password=USERS["conbob"])
        browser = await asyncio.create_subprocess_exec(
            "node",
            str(HERE / "converse.mjs"),
            f"https://127.0.0.1:{web.https_port}/.well-known/host-meta",
            "conalice@localhost",
            USERS["conalice"],
            "conbob@localhost",
            str(screenshot),
            *bosh,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=HERE,
            env={**os.environ, "CHROMIUM": CHROMIUM},
        )
        try:
            got = await bob.next_message(timeout=60)
            assert got["body"] == "hello from converse"
            assert str(got["from"]).startswith("conalice@localhost/")
            bob.send_message(mto=got["from"], mbody="hello from slixmpp", mtype="chat")
            out, err = await asyncio.wait_for(browser.communicate(), 60)
        finally:
            if browser.returncode is None:
                browser.kill()
                await browser.wait()
            await bob.close()
        assert browser.returncode == 0, err.decode()[-3000:]
        return [json.loads(line) for line in out.decode().splitlines()]

    lines = run(scenario())
    connected = next(line for line in lines if "connected" in line)
    assert connected["connected"].startswith("conalice@localhost/")
    assert connected["transport"] == transport
    if transport == "websocket":
        assert lines[0] == {"host_meta": 200}
        assert connected["websocket_url"] == f"wss://127.0.0.1:{web.https_port}/xmpp-websocket"
    assert lines[-1] == {"reply": "hello from slixmpp"}
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = web.log_text()
    assert ("over WebSocket" if transport == "websocket" else "over BOSH") in log
    assert "Traceback" not in log
