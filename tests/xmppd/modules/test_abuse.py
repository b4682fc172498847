"""Anti-abuse with real clients: the per-account message rate across two TCP sessions and a
JSON channel (phoenix over WebSocket), the word filter in 1:1 chats, rooms and JSON channels
(nothing delivered, nothing in the database), strangers refused by choice, and XEP-0377 spam
reports in the admin log."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
from phx import HERE, Phx, login
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from support import Client, ServerProcess, connect, run
from wssupport import receive, websocket_login

MUC = "http://jabber.org/protocol/muc"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
BURST = 6
CONFIG = f"""
[modules.abuse]
messages_per_second = 0.1
message_burst = {BURST}

[modules.muc]
lock_new_rooms = false

[filter]
rules = {{ spamlink = "buy-now\\\\.example", insult = "\\\\bnitwit\\\\b" }}
"""
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    assert shutil.which("node") and (HERE / "node_modules" / "phoenix").is_dir()
    proc = ServerProcess(tmp_path_factory.mktemp("abuse"), CONFIG)
    for user in USERS:
        proc.add_user(user, f"{user}-pw")
    proc.start()
    yield proc
    proc.stop()


async def login_xmpp(server: ServerProcess, user: str, resource: str = "r") -> Client:
    """A client whose `inbox` gets every message and presence stanza, in order."""
    client = await connect(server, user, resource, password=f"{user}-pw")
    client.inbox = asyncio.Queue()
    for kind in ("message", "presence"):
        client.register_handler(
            Callback(f"all-{kind}", MatchXPath(f"{{jabber:client}}{kind}"), client.inbox.put_nowait)
        )
    await client.plugin["xep_0199"].ping(jid="localhost", timeout=5)
    drain(client)
    return client


def drain(client: Client) -> list[Any]:
    got = []
    while not client.inbox.empty():
        got.append(client.inbox.get_nowait())
    return got


async def settle(*clients: Client) -> None:
    for client in clients:
        await client.plugin["xep_0199"].ping(jid="localhost", timeout=5)


async def next_where(client: Client, where: Any, timeout: float = 5) -> Any:
    async def find() -> Any:
        while True:
            stanza = await client.inbox.get()
            if where(stanza):
                return stanza

    return await asyncio.wait_for(find(), timeout)


def error_of(stanza: Any) -> tuple[str, str]:
    error = stanza.xml.find("{jabber:client}error")
    conditions = [c.tag.split("}")[1] for c in error if c.tag.startswith(f"{{{STANZAS}}}")]
    return [c for c in conditions if c != "text"][0], error.findtext(f"{{{STANZAS}}}text") or ""


def bodies(stanzas: list[Any]) -> list[str]:
    return [
        s["body"] for s in stanzas if s.name == "message" and s["type"] != "error" and s["body"]
    ]


def database_text(server: ServerProcess) -> str:
    """Every value of every table of the SQLite file, as one text."""
    db = sqlite3.connect(server.data_dir / "xmppd.sqlite")
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(
            repr(row) for table in tables for row in db.execute(f'SELECT * FROM "{table}"')
        )
    finally:
        db.close()


def test_rate_is_per_account_across_connections_and_json_channels(server: ServerProcess) -> None:
    async def main() -> None:
        phone, laptop = (
            await login_xmpp(server, "alice", "phone"),
            await login_xmpp(server, "alice", "laptop"),
        )
        bob = await login_xmpp(server, "bob")
        web = await Phx.open(server, login(server, "alice", "alice-pw"))
        await web.join("user:alice@localhost")
        for i in range(BURST // 2):
            phone.send_message(mto="bob@localhost", mbody=f"p{i}", mtype="chat")
            laptop.send_message(mto="bob@localhost", mbody=f"l{i}", mtype="chat")
        await settle(phone, laptop)
        # the burst is spent by both sessions together: the next one, from either, is refused
        laptop.send_message(mto="bob@localhost", mbody="one too many", mtype="chat")
        refused = await next_where(laptop, lambda s: s["type"] == "error")
        condition, text = error_of(refused)
        assert condition == "policy-violation"
        assert "messages_per_second" in text and f"more than {BURST} messages" in text
        answer = await web.request(
            "user:alice@localhost", "new_msg", {"to": "bob@localhost", "body": "web"}
        )
        assert answer["error"]["reason"] == "policy-violation", answer
        assert "messages_per_second" in answer["error"]["text"]
        await settle(bob)
        got = bodies(drain(bob))
        assert sorted(got) == sorted([f"p{i}" for i in range(3)] + [f"l{i}" for i in range(3)])
        # another account is not affected
        carol = await login_xmpp(server, "carol")
        carol.send_message(mto="bob@localhost", mbody="from carol", mtype="chat")
        assert (await next_where(bob, lambda s: s["body"] == "from carol"))["type"] == "chat"
        await web.close()
        await asyncio.gather(phone.close(), laptop.close(), bob.close(), carol.close())

    run(main())


def test_rate_is_shared_by_tcp_and_websocket_sessions(server: ServerProcess) -> None:
    async def main() -> None:
        tcp = await login_xmpp(server, "judy", "tcp")
        ws = await websocket_login(server, "judy", "judy-pw")
        try:
            for i in range(BURST):
                tcp.send_message(mto="bob@localhost", mbody=f"t{i}", mtype="chat")
            await settle(tcp)
            await ws.send(
                "<message xmlns='jabber:client' to='bob@localhost' type='chat' id='w1'>"
                "<body>from the browser</body></message>"
            )
            while (answer := await receive(ws)).tag != "{jabber:client}message":
                pass
            assert answer.get("type") == "error" and answer.get("id") == "w1"
            text = answer.findtext(f".//{{{STANZAS}}}text") or ""
            assert answer.find(f".//{{{STANZAS}}}policy-violation") is not None
            assert "messages_per_second" in text
        finally:
            await ws.close()
            await tcp.close()

    run(main())


def test_word_filter_in_chats_rooms_and_json_channels(server: ServerProcess) -> None:
    async def main() -> None:
        dave, erin = await login_xmpp(server, "dave"), await login_xmpp(server, "erin")
        dave.send_message(
            mto="erin@localhost", mbody="cheap pills at BUY-NOW.example", mtype="chat"
        )
        refused = await next_where(dave, lambda s: s["type"] == "error")
        assert error_of(refused) == (
            "policy-violation",
            "the message was refused by the word filter (rule 'spamlink')",
        )
        dave.send_message(mto="erin@localhost", mbody="hello erin", mtype="chat")
        assert (await next_where(erin, lambda s: s.name == "message"))["body"] == "hello erin"
        # a room: the filtered message reaches no occupant and no room history
        room = "filtered@conference.localhost"
        for client, nick in ((dave, "Dave"), (erin, "Erin")):
            client.send_raw(f"<presence to='{room}/{nick}'><x xmlns='{MUC}'/></presence>")
            await next_where(
                client, lambda s, n=nick: s.name == "presence" and s["from"] == f"{room}/{n}"
            )
        dave.send_message(mto=room, mbody="you nitwit", mtype="groupchat")
        refused = await next_where(dave, lambda s: s["type"] == "error")
        assert error_of(refused)[0] == "policy-violation" and "'insult'" in error_of(refused)[1]
        dave.send_message(mto=room, mbody="polite words", mtype="groupchat")
        assert (await next_where(erin, lambda s: s["type"] == "groupchat" and s["body"]))[
            "body"
        ] == "polite words"
        # the JSON channels, 1:1 and room
        web = await Phx.open(server, login(server, "frank", "frank-pw"))
        await web.join("user:frank@localhost")
        answer = await web.request(
            "user:frank@localhost", "new_msg", {"to": "erin@localhost", "body": "nitwit!"}
        )
        assert answer["error"] == {
            "reason": "policy-violation",
            "text": "the message was refused by the word filter (rule 'insult')",
        }
        await web.join(f"room:{room}", {"nick": "Frank"})
        answer = await web.request(f"room:{room}", "new_msg", {"body": "see buy-now.example"})
        assert (
            answer["error"]["reason"] == "policy-violation"
            and "'spamlink'" in answer["error"]["text"]
        )
        await web.push(f"room:{room}", "new_msg", {"body": "fine"})
        assert (await next_where(erin, lambda s: s["type"] == "groupchat" and s["body"]))[
            "body"
        ] == "fine"
        await settle(erin)
        assert not [
            b for b in bodies(drain(erin)) if "nitwit" in b.lower() or "buy-now" in b.lower()
        ]
        await web.close()
        await asyncio.gather(dave.close(), erin.close())
        text = database_text(server).lower()
        assert "hello erin" in text and "polite words" in text  # archives are on
        assert "nitwit" not in text and "buy-now" not in text

    run(main())


async def set_strangers(client: Client, block: bool) -> None:
    client.register_plugin("xep_0004")
    client.register_plugin("xep_0050")
    adhoc = client.plugin["xep_0050"]
    node = "urn:xmppd:commands:strangers"
    first = await adhoc.send_command("localhost", node)
    form = client.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="block", value=block)
    done = await adhoc.send_command(
        "localhost", node, action="complete", sessionid=first["command"]["sessionid"], payload=form
    )
    assert done["command"]["status"] == "completed"


def test_strangers_refused_by_choice(server: ServerProcess) -> None:
    async def main() -> None:
        grace, heidi, ivan = [await login_xmpp(server, u) for u in ("grace", "heidi", "ivan")]
        await set_strangers(grace, True)
        await grace.update_roster("heidi@localhost", name="Heidi")  # heidi is a contact
        ivan.send_message(mto="grace@localhost", mbody="hi stranger", mtype="chat")
        refused = await next_where(ivan, lambda s: s["type"] == "error")
        assert error_of(refused) == (
            "policy-violation",
            "grace@localhost accepts messages only from contacts",
        )
        ivan.send_presence(pto="grace@localhost", ptype="subscribe")
        refused = await next_where(ivan, lambda s: s.name == "presence" and s["type"] == "error")
        assert error_of(refused) == (
            "policy-violation",
            "grace@localhost accepts subscription requests only from contacts",
        )
        heidi.send_message(mto="grace@localhost", mbody="hi friend", mtype="chat")
        assert (await next_where(grace, lambda s: s.name == "message"))["body"] == "hi friend"
        await settle(grace)
        assert "hi stranger" not in bodies(drain(grace))
        # back to the default (a user role lets strangers write)
        await set_strangers(grace, False)
        ivan.send_message(mto="grace@localhost", mbody="hi again", mtype="chat")
        assert (await next_where(grace, lambda s: s.name == "message"))["body"] == "hi again"
        await asyncio.gather(grace.close(), heidi.close(), ivan.close())

    run(main())


def test_spam_report_reaches_the_admin_log(server: ServerProcess) -> None:
    async def main() -> None:
        alice = await login_xmpp(server, "alice", "reporter")
        info = await alice.plugin["xep_0030"].get_info(jid="localhost")
        assert "urn:xmpp:reporting:1" in info["disco_info"]["features"]
        iq = alice.make_iq_set()
        iq.xml.append(_block("spammer@localhost", "urn:xmpp:reporting:spam", "sold me pills"))
        await iq.send(timeout=5)
        listing = alice.make_iq_get()
        ET.SubElement(listing.xml, "{urn:xmpp:blocking}blocklist")
        items = (await listing.send(timeout=5)).xml.iter("{urn:xmpp:blocking}item")
        assert [i.get("jid") for i in items] == ["spammer@localhost"]  # the block happened too
        bad = alice.make_iq_set()
        bad.xml.append(_block("other@localhost", "urn:xmpp:reporting:rude", ""))
        with pytest.raises(IqError) as raised:
            await bad.send(timeout=5)
        assert raised.value.iq["error"]["condition"] == "bad-request"
        await alice.close()
        log = server.log_text()
        assert "spam report from alice@localhost about spammer@localhost: spam" in log
        assert "stanza ids s-1" in log and "'sold me pills'" in log
        assert "other@localhost" not in log.split("spam report from", 1)[1].split("\n", 1)[0]

    run(main())


def _block(jid: str, reason: str, text: str) -> Any:
    block = ET.Element("{urn:xmpp:blocking}block")
    item = ET.SubElement(block, "{urn:xmpp:blocking}item", jid=jid)
    report = ET.SubElement(item, "{urn:xmpp:reporting:1}report", reason=reason)
    ET.SubElement(report, "{urn:xmpp:sid:0}stanza-id", by=jid, id="s-1")
    if text:
        ET.SubElement(report, "{urn:xmpp:reporting:1}text").text = text
    return block
