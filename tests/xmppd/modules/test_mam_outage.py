"""A database outage during live chat (PostgreSQL behind a TCP proxy the test cuts).

The server's storage is a fresh PostgreSQL database reached through `Proxy`, a small trio TCP
forwarder running in a thread of the test: `cut()` closes the listener and every forwarded
connection (what clients see when PostgreSQL stops), `restore()` listens again. The machine's
PostgreSQL itself keeps running for the other tests.

SQLite has no counterpart here: it is a local file, so there is no connection to lose, and the
failures it can have (a read-only or full disk) cannot be produced without privileges the
suite does not assume; its archive writes fail at once anyway and take the same spool path.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest
from lxml import etree
from psycopg import sql
from slixmpp.exceptions import IqError
from support import RawClient, ServerProcess, connect, run
from support_proxy import Proxy

ADMIN_DSN = os.environ.get(
    "XMPPD_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres?connect_timeout=5"
)
LIVE = 10  # messages each way during the outage


@pytest.fixture
def pg_via_proxy() -> Iterator[tuple[Proxy, str]]:
    """A fresh database (dropped afterwards) and a DSN that reaches it through a Proxy."""
    if os.environ.get("XMPPD_TEST_NO_POSTGRES") == "1":
        pytest.skip("XMPPD_TEST_NO_POSTGRES=1")
    name = f"xmppd_outage_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        info = admin.info
        user, host, port = info.user, info.host, info.port
    proxy = Proxy(host, port)
    try:
        yield proxy, f"postgresql://{quote(user)}@127.0.0.1:{proxy.port}/{name}"
    finally:
        proxy.close()
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def mam_bodies(server: ServerProcess, user: str) -> dict[str, str]:
    """What `user`'s archive holds, through a real MAM query: {stanza-id: body}."""
    client = RawClient(server)
    try:
        client.login(user, f"{user}-secret", resource="mam")
        client.send(
            "<iq type='set' id='mam1'><query xmlns='urn:xmpp:mam:2' queryid='q'>"
            "<set xmlns='http://jabber.org/protocol/rsm'><max>200</max></set></query></iq>"
        )
        data = client.read_until("<fin").decode()
        data += client.read_until("</iq>").decode()
    finally:
        client.close()
    found = {}
    end = data.rindex("</iq>") + len("</iq>")
    for result in etree.fromstring(f"<r>{data[:end]}</r>").iter("{urn:xmpp:mam:2}result"):
        found[result.get("id")] = "".join(result.itertext())
    return found


def test_live_chat_survives_a_postgresql_outage(tmp_path, pg_via_proxy) -> None:
    proxy, dsn = pg_via_proxy
    server = ServerProcess(
        tmp_path, extra_config=f'[storage]\ndriver = "postgres"\ndsn = "{dsn}"\n'
    )
    for user in ("alice", "bob", "carol"):
        server.add_user(user, f"{user}-secret")
    server.start()

    async def scenario() -> tuple[list[float], float, str, dict[str, str]]:
        alice = await connect(server, "alice", "desk")
        bob = await connect(server, "bob", "phone")
        errors: asyncio.Queue = asyncio.Queue()
        alice.add_event_handler("message_error", errors.put_nowait)
        alice.send_message(mto="bob@localhost", mbody="before", mtype="chat")
        assert (await bob.next_message())["body"] == "before"

        proxy.cut()
        latencies = []
        ids = {}
        for n in range(LIVE):
            for sender, recipient in ((alice, bob), (bob, alice)):
                body = f"outage {sender.boundjid.user} {n}"
                start = time.monotonic()
                sender.send_message(mto=recipient.boundjid.bare, mbody=body, mtype="chat")
                got = await recipient.next_message(timeout=15)
                latencies.append(time.monotonic() - start)
                assert got["type"] == "chat" and got["body"] == body, got
                sid = got.xml.find("{urn:xmpp:sid:0}stanza-id")
                assert sid is not None and sid.get("by") == recipient.boundjid.bare
                ids[sid.get("id")] = body
        # A request that needs the database (an archive query) gets a temporary error, and
        # the session stays (it used to be dropped with a traceback).
        query = alice.make_iq_set()
        query.xml.append(ET.Element("{urn:xmpp:mam:2}query"))
        start = time.monotonic()
        with pytest.raises(IqError) as refused:
            await query.send(timeout=15)
        assert time.monotonic() - start < 1.0
        assert (refused.value.etype, refused.value.condition) == ("wait", "resource-constraint")
        alice.send_message(mto="bob@localhost", mbody="after the query", mtype="chat")
        assert (await bob.next_message(timeout=5))["body"] == "after the query"
        # carol is offline: storing needs the database, so a temporary error at once.
        start = time.monotonic()
        alice.send_message(mto="carol@localhost", mbody="for later", mtype="chat")
        error = await asyncio.wait_for(errors.get(), 15)
        bounced_after = time.monotonic() - start
        condition = f"{error['error']['type']}/{error['error']['condition']}"

        proxy.restore()
        bob_ids = {k: v for k, v in ids.items() if v.startswith("outage alice")}
        deadline = time.monotonic() + 20
        archived: dict[str, str] = {}
        while time.monotonic() < deadline:
            try:  # logins fail (temporary-auth-failure) until the server sees the database
                archived = await asyncio.to_thread(mam_bodies, server, "bob")
            except (AssertionError, TimeoutError, OSError):
                archived = {}
            if archived and all(k in archived for k in bob_ids):
                break
            await asyncio.sleep(0.5)
        await alice.close()
        await bob.close()
        return latencies, bounced_after, condition, {k: archived.get(k, "") for k in bob_ids}

    try:
        latencies, bounced_after, condition, archived = run(scenario())
    finally:
        server.stop()
    assert max(latencies) < 1.0, latencies
    assert bounced_after < 1.0 and condition == "wait/resource-constraint", (
        bounced_after,
        condition,
    )
    # Every message bob got during the outage is in his archive, under the id he saw.
    assert archived and all(v.startswith("outage alice") for v in archived.values()), archived
    assert len(archived) == LIVE
    log = server.log_text()
    assert log.count("storage calls fail at once") == 1  # once per outage, not per message
    assert log.count("storage calls refused meanwhile") == 1
    assert log.count("spooling to") == 1
    assert "spooled messages archived" in log
