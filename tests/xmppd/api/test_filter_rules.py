"""`/filter/rules` and `/spam-reports` (xmppd/api/filter.py) with httpx against a running server
and slixmpp senders: a rule set through the API refuses messages at once, is audited, outlives a
restart and a reload, and needs the `moderation` scope; reports sent with XEP-0377 are listed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from apisupport import KEYS, audit_lines, client, start_server, wait_for_http
from support import Client, ServerProcess, connect, run

REFUSED = "the message was refused by the word filter (rule 'pills')"


async def chat(sender: Client, receiver: Client, body: str) -> str:
    """Send a chat message; what came back: the body received, or the sender's error text."""
    got: asyncio.Queue = asyncio.Queue()
    receiver.add_event_handler("message", lambda m: got.put_nowait(m["body"]))
    sender.add_event_handler("message_error", lambda m: got.put_nowait(m["error"]["text"]))
    sender.send_message(mto="bob@localhost", mbody=body, mtype="chat")
    return await asyncio.wait_for(got.get(), 5)


def hup(server: ServerProcess) -> None:
    """SIGHUP, then wait for the reload's log line."""
    assert server.proc is not None
    seen = server.log_text().count("configuration reloaded")
    os.kill(server.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while server.log_text().count("configuration reloaded") == seen:
        assert time.monotonic() < deadline, server.log_text()[-2000:]
        time.sleep(0.05)


def test_rules_edited_through_the_api(tmp_path: Path) -> None:
    server = start_server(tmp_path, extra='[filter]\nrules = { link = "https?://" }\n')
    try:
        with client(server) as ops, client(server, "reader") as reader:
            listed = reader.get("/filter/rules").json()["rules"]
            assert listed == [{"name": "link", "pattern": "https?://", "configured": True}]
            refused = reader.put("/filter/rules/pills", json={"pattern": "cheap pills"})
            assert refused.status_code == 403
            bad = ops.put("/filter/rules/pills", json={"pattern": "(unclosed"})
            assert bad.status_code == 422 and bad.json()["field"] == "pattern"
            assert "not a regular expression" in bad.json()["message"]
            badname = ops.put("/filter/rules/bad%20name", json={"pattern": "x"})
            assert badname.status_code == 422 and badname.json()["field"] == "name"
            made = ops.put("/filter/rules/pills", json={"pattern": "cheap\\s+pills"})
            assert made.status_code == 200, made.text
            assert made.json() == {
                "name": "pills",
                "pattern": "cheap\\s+pills",
                "configured": False,
            }
            assert ops.delete("/filter/rules/link").json()["configured"] is True
            assert ops.delete("/filter/rules/link").status_code == 404

        async def scenario() -> None:
            alice, bob = await connect(server, "alice", "a"), await connect(server, "bob", "b")
            assert await chat(alice, bob, "CHEAP   pills here") == REFUSED
            assert await chat(alice, bob, "see https://example.org") == "see https://example.org"
            await asyncio.gather(alice.close(), bob.close())

        run(scenario())
        lines = [line for line in audit_lines(server) if "word filter" in line]
        assert len(lines) == 2, lines
        assert "key=ops PUT /api/v1/filter/rules/pills: set word filter rule 'pills'" in lines[0]
        assert "key=ops DELETE /api/v1/filter/rules/link: removed" in lines[1]

        # The edits outlive a restart and a reload that re-reads [filter] rules.
        server.stop()
        server.start()
        wait_for_http(server)
        with client(server) as ops:
            assert [r["name"] for r in ops.get("/filter/rules").json()["rules"]] == ["pills"]
            text = server.config_path.read_text()
            server.config_path.write_text(text.replace('link = "https?://"', 'link = "ftp://"'))
            hup(server)
            names = [r["name"] for r in ops.get("/filter/rules").json()["rules"]]
            assert names == ["pills"]
            assert ops.delete("/filter/rules/pills").status_code == 200
            assert ops.get("/filter/rules").json()["rules"] == []

        async def after() -> None:
            alice, bob = await connect(server, "alice", "a"), await connect(server, "bob", "b")
            assert await chat(alice, bob, "cheap pills") == "cheap pills"
            await asyncio.gather(alice.close(), bob.close())

        run(after())
    finally:
        server.stop()


def test_spam_reports_are_listed(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:

        async def report() -> None:
            alice = await connect(server, "alice", "a")
            iq = alice.make_iq_set()
            block = ET.Element("{urn:xmpp:blocking}block")
            item = ET.SubElement(block, "{urn:xmpp:blocking}item", jid="spammer@localhost")
            found = ET.SubElement(
                item, "{urn:xmpp:reporting:1}report", reason="urn:xmpp:reporting:spam"
            )
            ET.SubElement(found, "{urn:xmpp:sid:0}stanza-id", by="spammer@localhost", id="s-9")
            ET.SubElement(found, "{urn:xmpp:reporting:1}text").text = "pills again"
            iq.xml.append(block)
            await iq.send(timeout=5)
            await alice.close()

        run(report())
        with client(server, "reader") as reader:
            (entry,) = reader.get("/spam-reports").json()["reports"]
            assert entry["reporter"] == "alice@localhost" and entry["jid"] == "spammer@localhost"
            assert entry["reason"] == "urn:xmpp:reporting:spam"
            assert entry["stanza_ids"] == ["s-9"] and entry["text"] == "pills again"
            assert reader.get("/spam-reports", params={"limit": 0}).status_code == 422
        assert KEYS["reader"][1] == ["read"]
    finally:
        server.stop()
