"""Admin verbs on a running server (through its admin socket) and on a stopped one.

Every scenario runs `python3 -m xmppd <verb>` as an admin would, against real slixmpp sessions,
and reads the SQLite file afterwards: a deleted account must leave no row behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import stat
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from support import Client, RawClient, ServerProcess, connect, run

ROSTER = "jabber:iq:roster"
MUC = "http://jabber.org/protocol/muc"
OWNER = "http://jabber.org/protocol/muc#owner"
ADMIN = "http://jabber.org/protocol/muc#admin"
DATA = "jabber:x:data"
ROOM = "plans@conference.localhost"
# (table, store) pairs where alice's data lives once `populate` ran: the dump must see them all
# before the deletion, or the "nothing left" check proves nothing.
EXPECTED_STORES = {
    ("keyval", "accounts"),
    ("keyval", "roster_meta"),
    ("keyval", "vcard"),
    ("keyval", "blocklist"),
    ("keyval", "mam_prefs"),
    ("keyval", "pep_nodes"),
    ("keyval", "muc_rooms"),
    ("map", "roster"),
    ("map", "private"),
    ("map", "offline"),
    ("map", "pep_items"),
    ("archive", "mam"),
}


@pytest.fixture
def server(tmp_path: Path) -> Any:
    proc = ServerProcess(tmp_path)
    for user in ("alice", "bob", "carol"):
        proc.add_user(user, f"{user}-secret")
    yield proc
    proc.stop()


# ---- clients ------------------------------------------------------------------------------------


async def login(server: ServerProcess, user: str, resource: str = "r", priority: int = 0) -> Client:
    client = await connect(server, user, resource, presence=False)
    client.auto_authorize = None  # answer nothing by itself
    client.auto_subscribe = False
    client.inbox = asyncio.Queue()
    client.pushes = asyncio.Queue()
    client.add_event_handler("presence", client.inbox.put_nowait)
    client.add_event_handler(
        "roster_update", lambda iq: iq["type"] == "set" and client.pushes.put_nowait(iq)
    )
    await iq(client, "get", f"<query xmlns='{ROSTER}'/>")
    client.send_presence(ppriority=priority)
    await barrier(client)
    return client


async def barrier(client: Client) -> None:
    await client.plugin["xep_0199"].ping(jid="localhost", timeout=5)


async def iq(client: Client, type_: str, payload: str, to: str | None = None) -> Any:
    stanza = client.make_iq_set(ito=to) if type_ == "set" else client.make_iq_get(ito=to)
    stanza.xml.append(ET.fromstring(payload))
    return await stanza.send(timeout=5)


async def until(queue: asyncio.Queue, match: Any, timeout: float = 5) -> Any:
    skipped: list[Any] = []

    async def look() -> Any:
        while True:
            item = await queue.get()
            if match(item):
                return item
            skipped.append(item)

    try:
        return await asyncio.wait_for(look(), timeout)
    except TimeoutError:
        raise AssertionError(f"not received; got instead: {skipped}") from None


def pushed(push: Any) -> dict[str, str]:
    return dict(push.xml.find(f"{{{ROSTER}}}query/{{{ROSTER}}}item").attrib)


def form(fields: dict[str, str]) -> str:
    values = "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in fields.items())
    return f"<query xmlns='{OWNER}'><x xmlns='{DATA}' type='submit'>{values}</x></query>"


async def populate(server: ServerProcess) -> tuple[Client, Client]:
    """alice and bob are mutual contacts; alice has data in every module that keeps some, a
    request pending with carol, and affiliations in two persistent rooms."""
    bob = await login(server, "bob")
    alice = await login(server, "alice", "a", priority=-1)  # bare messages go offline
    for asker, approver in ((alice, bob), (bob, alice)):
        asker.send_presence(pto=approver.boundjid.bare, ptype="subscribe")
        await barrier(asker)
        approver.send_presence(pto=asker.boundjid.bare, ptype="subscribed")
        await barrier(approver)
    alice.send_presence(pto="carol@localhost", ptype="subscribe")  # carol never answers
    await iq(alice, "set", "<vCard xmlns='vcard-temp'><FN>Alice A.</FN></vCard>")
    await iq(alice, "set", "<query xmlns='jabber:iq:private'><n xmlns='x:notes'>hi</n></query>")
    await iq(
        alice, "set", "<block xmlns='urn:xmpp:blocking'><item jid='spam@example.org'/></block>"
    )
    await iq(alice, "set", "<prefs xmlns='urn:xmpp:mam:2' default='always'/>")
    tune = "<tune xmlns='http://jabber.org/protocol/tune'><title>song</title></tune>"
    pep = "http://jabber.org/protocol/pubsub"
    await iq(
        alice,
        "set",
        f"<pubsub xmlns='{pep}'><publish node='http://jabber.org/protocol/tune'>"
        f"<item id='current'>{tune}</item></publish></pubsub>",
    )
    alice.send_message(mto="bob@localhost", mbody="to bob", mtype="chat")
    bob.send_message(mto="alice@localhost", mbody="to alice, stored offline", mtype="chat")
    await barrier(bob)
    # A persistent room alice owns (bob in it), and bob's room where she is a member.
    for owner, room in ((alice, ROOM), (bob, "bobs@conference.localhost")):
        owner.send_presence(pto=f"{room}/{owner.boundjid.user}", pfrom=None)
        await barrier(owner)
        await iq(owner, "set", form({"muc#roomconfig_persistentroom": "1"}), to=room)
    await iq(
        bob,
        "set",
        f"<query xmlns='{ADMIN}'><item jid='alice@localhost' affiliation='member'/></query>",
        to="bobs@conference.localhost",
    )
    bob.send_presence(pto=f"{ROOM}/bob")
    await barrier(bob)
    return alice, bob


# ---- the storage dump ---------------------------------------------------------------------------


def dump(db: Path, user: str, domain: str = "localhost") -> list[tuple[str, dict[str, Any]]]:
    """Every row of every table that names the account: its localpart as a whole value, or its
    bare JID anywhere in a value. Other accounts' own message archives (their history of a
    conversation with it) are theirs and not listed."""
    bare = f"{user}@{domain}"
    found = []
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = [c[1] for c in conn.execute(f'PRAGMA table_info("{table}")')]
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                record = dict(zip(columns, row, strict=True))
                if table == "archive" and record["store"] == "mam" and record["owner"] != user:
                    continue
                if any(v == user or (isinstance(v, str) and bare in v) for v in row):
                    found.append((table, record))
    return found


def stores(rows: list[tuple[str, dict[str, Any]]]) -> set[tuple[str, str]]:
    return {(table, record.get("store", "")) for table, record in rows}


# ---- deletion -----------------------------------------------------------------------------------


def test_deluser_on_a_running_server_ends_everything_at_once(server: ServerProcess) -> None:
    server.start()
    db = server.data_dir / "xmppd.sqlite"

    async def scenario() -> None:
        alice, bob = await populate(server)
        before = dump(db, "alice")
        assert stores(before) >= EXPECTED_STORES, stores(before)
        result = await asyncio.to_thread(server.cli, "deluser", "alice@localhost")
        assert result.returncode == 0, result.stderr
        assert "via the running server" in result.stdout and "1 session(s) ended" in result.stdout
        # The session is over at once, with the condition that says why.
        await asyncio.wait_for(alice.disconnected_event.wait(), 2)
        assert alice.stream_errors == ["not-authorized"]
        # The contact: her leaving the room, `unsubscribed`, a push removing the item.
        # First the session ends (she leaves the room), then the account's data goes.
        left = await until(
            bob.inbox,
            lambda p: p.xml.get("type") == "unavailable" and p["from"].full == f"{ROOM}/alice",
        )
        assert left is not None
        gone = await until(
            bob.inbox,
            lambda p: p.xml.get("type") == "unsubscribed" and p["from"].bare == "alice@localhost",
        )
        assert gone is not None
        removal = {"jid": "alice@localhost", "subscription": "remove"}
        push = await until(bob.pushes, lambda p: pushed(p) == removal)
        assert push is not None
        items = (await iq(bob, "get", f"<query xmlns='{ROSTER}'/>")).xml.find(f"{{{ROSTER}}}query")
        assert [i.get("jid") for i in items] == []
        # She cannot log in again; bob's session goes on.
        with pytest.raises(PermissionError):
            await connect(server, "alice", "again")
        await barrier(bob)
        await bob.close()

    run(scenario())
    assert dump(db, "alice") == []
    assert "account alice@localhost deleted" in server.log_text()


def test_deluser_with_the_server_stopped_removes_the_same(server: ServerProcess) -> None:
    server.start()
    db = server.data_dir / "xmppd.sqlite"

    async def fill() -> None:
        alice, bob = await populate(server)
        await alice.close()
        await bob.close()

    run(fill())
    server.stop()
    assert stores(dump(db, "alice")) >= EXPECTED_STORES
    result = server.cli("deluser", "alice@localhost")
    assert result.returncode == 0, result.stderr
    assert "server not running: wrote the database directly" in result.stdout
    assert dump(db, "alice") == []
    # Bob's roster was cleaned too, and the server starts fine over the result.
    server.start()

    async def check() -> None:
        bob = await login(server, "bob")
        items = (await iq(bob, "get", f"<query xmlns='{ROSTER}'/>")).xml.find(f"{{{ROSTER}}}query")
        assert [i.get("jid") for i in items] == []
        await bob.close()

    run(check())


def test_account_verbs_say_where_they_ran(server: ServerProcess) -> None:
    stopped = server.cli("adduser", "dave@localhost", "--password", "one")
    assert stopped.returncode == 0 and "server not running" in stopped.stdout
    server.start()
    running = server.cli("adduser", "erin@localhost", "--password", "two")
    assert running.returncode == 0 and "via the running server" in running.stdout
    again = server.cli("adduser", "erin@localhost", "--password", "two")
    assert again.returncode != 0 and "already exists" in again.stderr
    missing = server.cli("deluser", "nobody@localhost")
    assert missing.returncode != 0 and "no account nobody@localhost" in missing.stderr

    async def logins() -> None:
        for user, password in (("dave", "one"), ("erin", "two")):
            client = await connect(server, user, password=password)
            await client.close()

    run(logins())


# ---- passwords ----------------------------------------------------------------------------------


def test_passwd_ends_the_other_sessions(server: ServerProcess) -> None:
    server.start()

    async def scenario() -> None:
        alice = await login(server, "alice")
        bob = await login(server, "bob")
        result = await asyncio.to_thread(
            server.cli, "passwd", "alice@localhost", "--password", "new-secret"
        )
        assert result.returncode == 0, result.stderr
        assert "via the running server, 1 session(s) ended" in result.stdout
        await asyncio.wait_for(alice.disconnected_event.wait(), 2)
        assert alice.stream_errors == ["reset"]
        with pytest.raises(PermissionError):
            await connect(server, "alice", "old")
        again = await connect(server, "alice", "new", password="new-secret")
        await barrier(bob)  # other accounts are untouched
        await again.close()
        await bob.close()

    run(scenario())


def test_passwd_keeps_sessions_when_configured(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path)
    text = proc.config_path.read_text().replace(
        "demo_account = false", "demo_account = false\npassword_change_ends_sessions = false"
    )
    proc.config_path.write_text(text)
    proc.add_user("alice", "alice-secret")
    proc.start()
    try:

        async def scenario() -> None:
            alice = await login(proc, "alice")
            result = await asyncio.to_thread(
                proc.cli, "passwd", "alice@localhost", "--password", "changed"
            )
            assert result.returncode == 0 and "session(s) ended" not in result.stdout
            await barrier(alice)
            await alice.close()

        run(scenario())
    finally:
        proc.stop()


# ---- sessions, kick, status ---------------------------------------------------------------------


def test_sessions_kick_and_status(server: ServerProcess) -> None:
    down = server.cli("status")
    assert down.returncode == 3 and "server not running" in down.stdout
    refused = server.cli("sessions")
    assert refused.returncode != 0 and "not running" in refused.stderr
    server.start()

    async def scenario() -> None:
        one = await login(server, "alice", "one")
        two = await login(server, "alice", "two")
        bob = await login(server, "bob")
        listed = await asyncio.to_thread(server.cli, "sessions")
        assert listed.returncode == 0, listed.stderr
        lines = sorted(listed.stdout.splitlines())
        assert [line.split("\t")[:3] for line in lines] == [
            ["alice@localhost/one", "tcp", "127.0.0.1"],
            ["alice@localhost/two", "tcp", "127.0.0.1"],
            ["bob@localhost/r", "tcp", "127.0.0.1"],
        ]
        only = await asyncio.to_thread(server.cli, "sessions", "alice@localhost")
        assert len(only.stdout.splitlines()) == 2
        status = await asyncio.to_thread(server.cli, "status")
        assert status.returncode == 0, status.stderr
        assert "sessions: 3 (2 account(s) online)" in status.stdout
        assert "rooms: 0" in status.stdout and "MiB resident" in status.stdout
        # A full JID ends that session only, with policy-violation and the text.
        kicked = await asyncio.to_thread(
            server.cli, "kick", "alice@localhost/one", "--text", "spam"
        )
        assert kicked.returncode == 0 and "ended 1 session(s)" in kicked.stdout
        await asyncio.wait_for(one.disconnected_event.wait(), 2)
        assert one.stream_errors == ["policy-violation"]
        await barrier(two)
        # A bare JID ends all of the account's.
        await asyncio.to_thread(server.cli, "kick", "alice@localhost")
        await asyncio.wait_for(two.disconnected_event.wait(), 2)
        nobody = await asyncio.to_thread(server.cli, "kick", "alice@localhost")
        assert nobody.returncode != 0 and "has no session" in nobody.stderr
        await barrier(bob)
        await bob.close()

    run(scenario())


# ---- the socket itself --------------------------------------------------------------------------


def admin_exchange(path: Path, *lines: bytes) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        for line in lines:
            sock.sendall(line)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_socket_is_owner_only_and_refuses_bad_requests(server: ServerProcess) -> None:
    server.start()
    path = server.data_dir / "admin.sock"
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    answers = admin_exchange(
        path,
        b"not json\n",
        b"[1, 2]\n",
        b'{"id": 7, "command": "nope"}\n',
        b'{"id": 8, "command": "deluser", "args": {"jid": 5}}\n',
        b'{"id": 9, "command": "status"}\n',
    )
    assert [a["ok"] for a in answers] == [False, False, False, False, True]
    assert [a["error"]["code"] for a in answers[:4]] == [
        "bad-json",
        "bad-request",
        "unknown-command",
        "bad-request",
    ]
    assert answers[2]["id"] == 7 and answers[4]["id"] == 9
    # A line over the limit is answered and the connection closed; the server goes on.
    big = admin_exchange(path, b'{"command": "status", "pad": "' + b"x" * 70_000)
    assert big[-1]["error"]["code"] == "too-big"
    assert admin_exchange(path, b'{"command": "status"}\n')[0]["ok"]


def test_a_stale_socket_counts_as_stopped(server: ServerProcess) -> None:
    server.start()
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGKILL)  # a crash leaves the socket file behind
    server.proc.wait()
    server.proc = None
    path = server.data_dir / "admin.sock"
    assert path.exists()
    result = server.cli("deluser", "carol@localhost")
    assert result.returncode == 0, result.stderr
    assert "server not running: wrote the database directly" in result.stdout
    server.start()  # the stale file does not stop the next start
    status = server.cli("status")
    assert status.returncode == 0 and "running" in status.stdout


def test_a_second_server_on_the_same_data_dir_is_refused(server: ServerProcess) -> None:
    server.start()
    (server.base / "second").mkdir()
    second = ServerProcess(server.base / "second")
    second.config_path.write_text(
        second.config_path.read_text().replace(str(second.data_dir), str(server.data_dir))
    )
    with pytest.raises(RuntimeError, match="another xmppd serves this data directory"):
        second.start()
    assert "Traceback" not in second.log_text()
    assert server.cli("status").returncode == 0


def test_deleting_ends_a_hibernating_session(server: ServerProcess) -> None:
    """XEP-0198 state is part of the account: a session waiting to be resumed ends too."""
    server.start()
    raw = RawClient(server)
    raw.login("alice", "alice-secret", "phone")
    raw.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/><presence/>")
    raw.read_until("enabled")
    raw.sock.close()  # no closing tag: the session hibernates
    wait_for_log(server, "lost its connection; hibernating")
    listed = server.cli("sessions", "alice@localhost")
    assert "alice@localhost/phone" in listed.stdout and "(hibernating)" in listed.stdout
    result = server.cli("deluser", "alice@localhost")
    assert result.returncode == 0 and "1 session(s) ended" in result.stdout
    wait_for_log(server, "hibernating session ends: not-authorized")
    assert server.cli("sessions").stdout == ""


def wait_for_log(server: ServerProcess, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log_text():
        assert time.monotonic() < deadline, f"{text!r} not in the server log"
        time.sleep(0.05)


def test_a_data_dir_others_may_write_is_refused(server: ServerProcess) -> None:
    """Whoever may write the directory could put their own socket in place of ours."""
    server.data_dir.chmod(0o777)
    with pytest.raises(RuntimeError, match="writable by others"):
        server.start()
    server.data_dir.chmod(0o700)
    server.start()
    assert server.cli("status").returncode == 0


# ---- disable / enable ---------------------------------------------------------------------------


def test_disable_and_enable_verbs(server: ServerProcess) -> None:
    from apisupport import sasl_answer

    stopped = server.cli("disable", "carol@localhost", "--reason", "audit")
    assert stopped.returncode == 0 and "wrote the database directly" in stopped.stdout
    server.start()
    assert "the account is disabled: audit" in sasl_answer(server, "carol", "carol-secret")

    async def scenario() -> None:
        bob = await login(server, "bob")
        done = await asyncio.to_thread(server.cli, "disable", "bob@localhost", "--reason", "spam")
        assert done.returncode == 0, done.stderr
        assert "disabled bob@localhost (via the running server), 1 session(s) ended" in done.stdout
        await asyncio.wait_for(bob.disconnected_event.wait(), 5)
        assert "<account-disabled/>" in sasl_answer(server, "bob", "bob-secret")
        again = await asyncio.to_thread(server.cli, "enable", "bob@localhost")
        assert again.returncode == 0 and "enabled bob@localhost" in again.stdout
        assert "<success" in sasl_answer(server, "bob", "bob-secret")
        twice = await asyncio.to_thread(server.cli, "enable", "bob@localhost")
        assert "was not disabled" in twice.stdout
        missing = await asyncio.to_thread(server.cli, "disable", "nobody@localhost")
        assert missing.returncode != 0 and "no account" in missing.stderr

    run(scenario())
    server.stop()
    enabled = server.cli("enable", "carol@localhost")
    assert enabled.returncode == 0 and "wrote the database directly" in enabled.stdout
