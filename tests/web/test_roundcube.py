"""The Roundcube plugin (integrations/roundcube/xmppd_chat, docs/roundcube.md) in a real
Roundcube (Debian's package, SQLite) with a local Dovecot, in headless Chromium: log in, the
toolbar status, a colleague's mail with his live presence, chat both ways with him (slixmpp),
the status seen over XMPP, and presence in the address book. Screenshots go to
tests/web/artifacts/ (roundcube-chat.png and roundcube-addressbook.png are in
docs/screenshots/)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import Browser
from joserfc import jws
from joserfc.jwk import OctKey
from phx import Phx
from roundcube import Dovecot, Roundcube, install
from support import ServerProcess, connect, run

SECRET = "a-roundcube-secret-of-at-least-32-bytes"
ANN, BOB = "ann@localhost", "bob@localhost"
MAIL = """From: Bob Builder <bob@localhost>
To: Ann <ann@localhost>
Cc: Carol <carol@localhost>
Subject: Budget review
Date: Tue, 08 Dec 2026 09:00:00 +0000
Message-ID: <budget-1@localhost>
Content-Type: text/plain; charset=utf-8

Ann, can we talk about the budget today?
"""
PREVIEW = "messagecontframe"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Roundcube]]:
    if gone := install():
        pytest.fail(f"could not apt-get install {' '.join(gone)} (scripts/test does)")
    base = Path(tempfile.mkdtemp(prefix="xmppd-roundcube-"))
    base.chmod(0o755)  # Dovecot's processes run as `dovecot`
    dovecot = Dovecot(base / "dovecot", {ANN: "ann-mail", BOB: "bob-mail"})
    dovecot.deliver(ANN, MAIL)
    roundcube = Roundcube(base / "roundcube", dovecot.port, "")
    server = ServerProcess(
        tmp_path_factory.mktemp("roundcube"),
        http_config=f'origins = ["{roundcube.url}"]\ncors_origins = ["{roundcube.url}"]',
        extra_config=f'[auth.tokens.apps.roundcube]\nalgorithm = "HS256"\nkey = "{SECRET}"\n',
    )
    config = roundcube.root / "config" / "config.inc.php"
    config.write_text(
        config.read_text()
        + f"$config['xmppd_chat_url'] = 'http://127.0.0.1:{server.http_port}';\n"
        + f"$config['xmppd_chat_secret'] = '{SECRET}';\n"
    )
    server.add_user("bob", "bob-secret")
    server.start()
    dovecot.start()
    roundcube.start()
    try:
        run(befriend(server))
        yield server, roundcube
    finally:
        roundcube.stop()
        dovecot.stop()
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def token(sub: str) -> str:
    claims = {"sub": sub, "aud": "localhost", "exp": int(time.time()) + 600}
    return jws.serialize_compact(
        {"alg": "HS256", "kid": "roundcube"}, json.dumps(claims), OctKey.import_key(SECRET)
    )


async def befriend(server: ServerProcess) -> None:
    """Ann and Bob see each other's presence (in a deployment: shared directory groups)."""
    bob = await connect(server, "bob", "setup", password="bob-secret")
    ann = await Phx.open(server, token(ANN))
    try:
        await ann.join(f"user:{ANN}")
        await ann.push(f"user:{ANN}", "approve", {"jid": BOB})
        await ann.push(f"user:{ANN}", "subscribe", {"jid": BOB})
        await ann.event(f"user:{ANN}", "roster_push", lambda p: p["item"]["subscription"] == "both")
    finally:
        ann.proc.kill()
        await ann.proc.wait()
        await bob.close()


def test_roundcube_shows_presence_and_chats_with_an_xmpp_colleague(
    stack: tuple[ServerProcess, Roundcube],
) -> None:
    server, roundcube = stack
    try:
        run(scenario(server, roundcube))
    except BaseException:
        print(roundcube.logs())
        raise


async def scenario(server: ServerProcess, roundcube: Roundcube) -> None:
    browser = await Browser.open()
    bob = await connect(server, "bob", "gajim", password="bob-secret")
    try:
        await browser.do("goto", url=f"{roundcube.url}/")
        await browser.do("fill", selector="#rcmloginuser", text=ANN)
        await browser.do("fill", selector="#rcmloginpwd", text="ann-mail")
        await browser.do("click", selector="#rcmloginsubmit")
        joined = (
            "window.xmppdWidget && window.xmppdWidget.state && window.xmppdWidget.state().joined"
        )
        await browser.do("wait", expr=joined, ms=20000)
        assert (await browser.do("eval", expr="window.xmppdWidget.state()"))["jid"] == ANN
        await browser.do("visible", selector="#xmppd-chat-status select")
        assert await browser.do("eval", expr=STATUS_VALUE) == "available"

        # The colleague's mail: his address in the preview has a live dot (he is online).
        await open_first_message(browser, roundcube)
        dot = "span.xmppd-presence button.dot[data-jid='bob@localhost']"
        await browser.do("visible", frame=PREVIEW, selector=dot, ms=20000)
        await browser.do("wait", frame=PREVIEW, expr=DOT_STATE, arg="available")
        bob.send_presence(pshow="away", pstatus="at lunch")
        await browser.do("wait", frame=PREVIEW, expr=DOT_STATE, arg="away")
        bob.send_presence()
        await browser.do("wait", frame=PREVIEW, expr=DOT_STATE, arg="available")
        await browser.do("shot", name="roundcube-mail")

        # Click-to-chat on Bob's name: the popup docks in the main window; messages both ways.
        await browser.do("click", frame=PREVIEW, selector="[data-chat-address='bob@localhost']")
        chat = "section.chat[data-jid='bob@localhost']"
        await browser.do("visible", selector=f"{chat} input")
        await browser.do("fill", selector=f"{chat} input", text="Yes, at 3?")
        await browser.do("press", selector=f"{chat} input", key="Enter")
        heard = await _next(bob.messages, lambda m: m["body"] != "")
        assert heard["body"] == "Yes, at 3?" and heard["from"].bare == ANN
        bob.send_message(mto=ANN, mbody="3 is fine, see you", mtype="chat")
        await browser.do(
            "wait", expr=f"{SHADOW}.querySelector('.log').innerText.includes('3 is fine')"
        )
        await browser.do("shot", name="roundcube-chat")

        # Ann goes away from the toolbar: Bob's XMPP client sees it.
        await browser.do("select", selector="#xmppd-chat-status select", value="away")
        seen = await _next(bob.presences, lambda p: p["from"].bare == ANN and p["show"] == "away")
        assert seen["type"] == "away"
        await browser.do("shot", name="roundcube-away")

        # The address book: Bob's contact card has the dot too.
        add_contact(roundcube, ANN, "Bob Builder", BOB)
        await browser.do("goto", url=f"{roundcube.url}/?_task=addressbook")
        await browser.do("click", selector="#contacts-table tbody tr")
        await browser.do("visible", frame="contact-frame", selector=dot, ms=20000)
        await browser.do("wait", frame="contact-frame", expr=DOT_STATE, arg="available")
        await browser.do("shot", name="roundcube-addressbook")
    except BaseException:
        with contextlib.suppress(Exception):  # what the page had, for the failure report
            await browser.do("shot", name="roundcube-failure")
            print(await browser.do("eval", expr=DIAGNOSIS), await browser.do("errors"))
            print(await browser.do("eval", frame=PREVIEW, expr=FRAME_DIAGNOSIS))
        raise
    finally:
        await browser.close()
        await bob.close()


DIAGNOSIS = (
    "JSON.stringify({env: window.rcmail && rcmail.env.xmppd_chat, widget: window.xmppdWidget, "
    "state: window.xmppdWidget && window.xmppdWidget.state && window.xmppdWidget.state()})"
)
FRAME_DIAGNOSIS = (
    "JSON.stringify({marked: document.querySelectorAll('[data-chat-address]').length, bob: "
    "[...document.querySelectorAll('*')].filter(e => (e.title || '').includes('bob@') || "
    "(e.children.length < 3 && e.textContent.includes('bob@'))).map(e => e.outerHTML.slice(0, 300))})"
)
SHADOW = "document.querySelector('.xmppd-widget').shadowRoot"
STATUS_VALUE = (
    "document.querySelector('#xmppd-chat-status .xmppd-status').shadowRoot"
    ".querySelector('select').value"
)
DOT_STATE = (
    "(state) => [...document.querySelectorAll('span.xmppd-presence')].some(h => "
    "h.shadowRoot.querySelector('.dot[data-jid=\"bob@localhost\"]')?.dataset.state === state)"
)


async def open_first_message(browser: Browser, roundcube: Roundcube) -> None:
    """The list sometimes comes empty (1 unread in the folder) when Roundcube's first list
    request races the new mail's indexing: reload the folder then."""
    for _ in range(3):
        try:
            await browser.do("visible", selector="#messagelist tbody tr", ms=5000)
            break
        except AssertionError:
            await browser.do("goto", url=f"{roundcube.url}/?_task=mail&_mbox=INBOX")
    await browser.do("click", selector="#messagelist tbody tr")


def add_contact(roundcube: Roundcube, owner: str, name: str, email: str) -> None:
    """A contact in the owner's personal address book (Roundcube's own table)."""
    vcard = f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{name}\r\nEMAIL;TYPE=work:{email}\r\nEND:VCARD"
    with sqlite3.connect(roundcube.base / "roundcube.db") as db:
        (user_id,) = db.execute("SELECT user_id FROM users WHERE username = ?", (owner,)).fetchone()
        db.execute(
            "INSERT INTO contacts (user_id, changed, name, email, vcard, words) "
            "VALUES (?, datetime('now'), ?, ?, ?, ?)",
            (user_id, name, email, vcard, f" {name.lower()} {email} "),
        )


async def _next(queue: asyncio.Queue, match: object, timeout: float = 15) -> object:
    deadline = time.monotonic() + timeout
    while True:
        item = await asyncio.wait_for(queue.get(), max(0.1, deadline - time.monotonic()))
        if match(item):  # type: ignore[operator]
            return item
