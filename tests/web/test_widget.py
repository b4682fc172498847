"""widget.js (webclient/widget.js, docs/widget.md) on a plain HTML page served from another
origin, in headless Chromium, against a slixmpp colleague: live presence dots, chat both
ways, the user's status seen over XMPP, shadow-DOM isolation, and the long-poll fallback.
Screenshots go to tests/web/artifacts/."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from browser import Browser
from joserfc import jws
from joserfc.jwk import OctKey
from phx import Phx
from support import ServerProcess, connect, free_port, run

ROOT = Path(__file__).resolve().parents[2]
SECRET = "a-webmail-secret-of-at-least-32-bytes!"
ANN, BOB = "ann@localhost", "bob@localhost"
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Intranet</title>
<style>* {{ font-size: 22px !important; }} button {{ background: red !important; }}
.dot, .chat {{ outline: 3px solid lime; }}</style></head><body>
<h1>Team</h1>
<p id="bob">Bob Builder <span data-chat-address="bob@localhost">bob@localhost</span></p>
<p><a id="mail" href="mailto:bob@localhost">mail Bob</a></p>
<p class="dot" id="hostdot">a host element with class dot</p>
<div id="status"></div>
<script>window.xmppdWidget = {{ server: "{server}", tokenUrl: "/token", mailto: true,
  statusTarget: "#status", transport: "{transport}" }};</script>
<script src="{server}/widget.js" async></script>
</body></html>"""


def token(sub: str, lifetime: int = 600) -> str:
    claims = {"sub": sub, "aud": "localhost", "exp": int(time.time()) + lifetime}
    return jws.serialize_compact(
        {"alg": "HS256", "kid": "webmail"}, json.dumps(claims), OctKey.import_key(SECRET)
    )


class HostApp(BaseHTTPRequestHandler):
    """The host application: its page, and its token endpoint for the signed-in user."""

    server_url = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path, _, query = self.path.partition("?")
        if path == "/token":  # from the page of ?short: tokens of 8 s
            short = "short" in (self.headers.get("Referer") or "")
            self.answer(
                "application/json", json.dumps({"token": token("ann", 8 if short else 600)})
            )
        elif path == "/page.html":
            transport = "longpoll" if "longpoll" in query else "websocket"
            self.answer("text/html", PAGE.format(server=self.server_url, transport=transport))
        else:
            self.send_error(404)

    def answer(self, kind: str, body: str) -> None:
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    host_port = free_port()
    origin = f"http://127.0.0.1:{host_port}"
    server = ServerProcess(
        tmp_path_factory.mktemp("widget"),
        http_config=f'origins = ["{origin}"]\ncors_origins = ["{origin}"]',
        extra_config=f'[auth.tokens.apps.webmail]\nalgorithm = "HS256"\nkey = "{SECRET}"\n',
    )
    server.add_user("bob", "bob-secret")
    server.start()
    HostApp.server_url = f"http://127.0.0.1:{server.http_port}"
    httpd = ThreadingHTTPServer(("127.0.0.1", host_port), HostApp)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    run(befriend(server))
    yield server, origin
    httpd.shutdown()
    server.stop()


async def befriend(server: ServerProcess) -> None:
    """Ann (a token user) and Bob see each other's presence, as directory colleagues would."""
    bob = await connect(server, "bob", "setup", password="bob-secret")
    ann = await Phx.open(server, token("ann"))
    try:
        await ann.join(f"user:{ANN}")
        await ann.push(f"user:{ANN}", "approve", {"jid": BOB})  # pre-approves Bob's request
        await ann.push(f"user:{ANN}", "subscribe", {"jid": BOB})  # slixmpp approves, asks back
        await ann.event(f"user:{ANN}", "roster_push", lambda p: p["item"]["subscription"] == "both")
    finally:
        ann.proc.kill()
        await ann.proc.wait()
        await bob.close()


def test_widget_js_is_small_and_loadable_from_other_origins() -> None:
    files = ["widget.js", "js/widget.js", "js/widget-ui.js", "js/phx.js", "js/longpoll.js"]
    size = sum(len(gzip.compress((ROOT / "webclient" / f).read_bytes(), 9)) for f in files)
    print(f"widget gzipped: {size} bytes")
    assert size < 30_000


def test_presence_chat_both_ways_and_status_with_an_xmpp_colleague(
    setup: tuple[ServerProcess, str],
) -> None:
    server, origin = setup
    run(scenario(server, origin, "websocket"))


def test_the_long_poll_transport_carries_the_same_chat(setup: tuple[ServerProcess, str]) -> None:
    server, origin = setup
    run(scenario(server, origin, "longpoll"))


def test_tokens_are_refreshed_before_they_expire(setup: tuple[ServerProcess, str]) -> None:
    """Tokens of 8 s: the widget renews in place (refresh_token) and the session lives on."""
    server, origin = setup

    async def scenario() -> None:
        browser = await Browser.open()
        bob = await connect(server, "bob", "desk", password="bob-secret")
        try:
            await browser.do("goto", url=f"{origin}/page.html?short")
            await browser.do("wait", expr=JOINED)
            await browser.do("wait", expr="window.xmppdWidget.state().refreshed >= 3", ms=40000)
            state = await browser.do("eval", expr="window.xmppdWidget.state()")
            assert state["joined"] and state["connected"]  # 3 tokens later, the same session
            bob.send_message(mto=ANN, mbody="still with me?", mtype="chat")
            await browser.do(
                "wait",
                expr=f"{SHADOW}.querySelector('.log')?.textContent.includes('still with me?')",
            )
            assert await browser.do("errors") == []
        finally:
            await browser.close()
            await bob.close()

    run(scenario())


JOINED = "window.xmppdWidget && window.xmppdWidget.state && window.xmppdWidget.state().joined"
SHADOW = "document.querySelector('.xmppd-widget').shadowRoot"


async def scenario(server: ServerProcess, origin: str, transport: str) -> None:
    browser = await Browser.open()
    bob = None
    dot = "span.xmppd-presence button.dot"
    try:
        await browser.do("goto", url=f"{origin}/page.html?{transport}")
        await browser.do(
            "wait",
            expr="window.xmppdWidget && window.xmppdWidget.state && window.xmppdWidget.state().joined",
        )
        state = await browser.do("eval", expr="window.xmppdWidget.state()")
        assert state["jid"] == ANN and state["longpoll"] == (transport == "longpoll")
        # Bob offline: grey; Bob online (away, then available): the dot follows, both dots.
        assert (
            await browser.do("eval", expr="document.querySelectorAll('span.xmppd-presence').length")
            == 2
        )
        await browser.do("wait", expr=_dot_state("offline"))
        bob = await connect(server, "bob", "gajim", password="bob-secret", presence=False)
        bob.register_plugin("xep_0085")  # slixmpp's `message` event is for bodies only
        states: asyncio.Queue = asyncio.Queue()
        bob.add_event_handler("chatstate_composing", states.put_nowait)
        bob.send_presence(pshow="away", pstatus="lunch")
        await browser.do("wait", expr=_dot_state("away"))
        bob.send_presence()
        await browser.do("wait", expr=_dot_state("available"))
        # Shadow DOM: the host page's CSS does not reach the dot, ours does not reach the page.
        colour = await browser.do(
            "eval",
            expr="getComputedStyle(document.querySelector('span.xmppd-presence').shadowRoot.querySelector('.dot')).backgroundColor",
        )
        assert colour == "rgb(47, 168, 79)", colour
        host = await browser.do(
            "eval", expr="getComputedStyle(document.getElementById('hostdot')).borderRadius"
        )
        assert host == "0px"
        await browser.do("shot", name=f"widget-presence-{transport}")

        # Click-to-chat: the popup opens; Ann writes, Bob (XMPP) reads and answers.
        await browser.do("click", selector=f"#bob {dot}")
        await browser.do("visible", selector="section.chat[data-jid='bob@localhost'] input")
        await browser.do("type", selector="section.chat input", text="Hi Bob, got a minute?")
        composing = await _next(states, lambda m: True)
        assert composing["from"].bare == ANN
        await browser.do("press", selector="section.chat input", key="Enter")
        heard = await _next(bob.messages, lambda m: m["body"] != "")
        assert heard["body"] == "Hi Bob, got a minute?" and heard["type"] == "chat"
        bob.send_message(mto=ANN, mbody="Sure, ring me", mtype="chat")
        await browser.do(
            "wait",
            expr="document.querySelector('.xmppd-widget').shadowRoot.querySelector('.log').innerText.includes('Sure, ring me')",
        )
        await browser.do("shot", name=f"widget-chat-{transport}")

        # Minimised, Bob's next message counts as unread; reopening reads it (in every client).
        await browser.do("click", selector="section.chat .head button[aria-label='Minimise']")
        bob.send_message(mto=ANN, mbody="Still there?", mtype="chat")
        await browser.do(
            "wait",
            expr="document.querySelector('.xmppd-widget').shadowRoot.querySelector('.badge').textContent === '1'",
        )
        await browser.do("click", selector="section.chat .head .name")
        await browser.do("wait", expr="!window.xmppdWidget.state().unread['bob@localhost']")

        # Ann's status, from the control in the host page's #status: seen by Bob over XMPP.
        await browser.do("select", selector="#status select", value="dnd")
        seen = await _next(bob.presences, lambda p: p["from"].bare == ANN and p["show"] == "dnd")
        assert seen["type"] == "dnd"
        await browser.do("select", selector="#status select", value="offline")
        await _next(bob.presences, lambda p: p["from"].bare == ANN and p["type"] == "unavailable")
        await browser.do("select", selector="#status select", value="away")
        await _next(bob.presences, lambda p: p["from"].bare == ANN and p["show"] == "away")
        assert await browser.do("errors") == []
    finally:
        await browser.close()
        if bob is not None:
            await bob.close()


def _dot_state(state: str) -> str:
    return (
        "[...document.querySelectorAll('span.xmppd-presence')].every(h => "
        f"h.shadowRoot.querySelector('.dot').dataset.state === '{state}')"
    )


async def _next(queue: asyncio.Queue, match: object, timeout: float = 15) -> object:
    deadline = time.monotonic() + timeout
    while True:
        item = await asyncio.wait_for(queue.get(), max(0.1, deadline - time.monotonic()))
        if match(item):  # type: ignore[operator]
            return item
