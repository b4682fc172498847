"""XEP-0198 resumption on another node (two real nodes, raw sockets and slixmpp): the resume
fails cleanly (`<failed/>` with item-not-found and the old session's h), the old node ends
the session at once, and every message the client had not acknowledged reaches the new
session (from offline storage): none lost, none twice."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import socket
import struct

from support import HEADER, RawClient, run
from support_cluster import barrier, login, users

SM = "urn:xmpp:sm:3"


def authenticated(node, user: str) -> RawClient:
    raw = RawClient(node)
    raw.starttls()
    raw.send(HEADER)
    raw.read_until("</stream:features>")
    raw.take()
    token = base64.b64encode(f"\0{user}\0pw".encode()).decode()
    raw.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    assert b"<success" in raw.read_until("success")
    raw.take()
    raw.send(HEADER)
    raw.read_until("</stream:features>")
    raw.take()
    return raw


def bind(raw: RawClient, resource: str) -> None:
    raw.send(
        "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        f"<resource>{resource}</resource></bind></iq>"
    )
    assert b"<jid>" in raw.read_until("</iq>")
    raw.take()


def bodies(data: bytes) -> list[str]:
    return [b.decode() for b in re.findall(rb"<body>([^<]*)</body>", data)]


def drop(raw: RawClient) -> None:
    """The connection dies: a reset, no closing tag."""
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.sock.close()


def test_resume_on_another_node_fails_cleanly_and_loses_nothing(nodes) -> None:
    n1, n2 = nodes
    alice, bob = users(n1, "alice", "bob")
    sent = [f"unacked {i}" for i in range(5)]

    async def scenario() -> None:
        first = await asyncio.to_thread(authenticated, n1, alice)
        bind(first, "phone")
        first.send(f"<enable xmlns='{SM}' resume='true'/>")
        enabled = first.read_until("<enabled")
        first.read_until("/>")
        previd = re.search(rb"<enabled[^>]* id=['\"]([^'\"]+)", enabled).group(1).decode()
        first.take()
        await asyncio.sleep(0.3)  # node 2 knows where alice/phone is bound

        cb = await login(n2, bob, "b")
        for text in sent:
            cb.send_message(mto=f"{alice}@localhost/phone", mbody=text, mtype="chat")
        await barrier(cb)
        got = await asyncio.to_thread(first.read_until, sent[-1])
        assert bodies(got) == sent  # delivered, never acknowledged
        drop(first)
        await asyncio.sleep(0.5)  # node 1 sees the reset: the session hibernates

        # The client comes back through node 2 (a load balancer chose it).
        second = await asyncio.to_thread(authenticated, n2, alice)
        second.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
        failed = await asyncio.to_thread(second.read_until, "</failed>")
        assert b"<item-not-found" in failed, failed
        assert b"h='0'" in failed or b'h="0"' in failed, failed  # the old session's count
        second.take()
        bind(second, "phone")
        second.send("<presence/>")
        got = await asyncio.to_thread(second.read_until, sent[-1])
        await asyncio.sleep(0.5)  # a duplicate would come now
        second.sock.settimeout(0.2)
        with contextlib.suppress(TimeoutError, OSError):
            got += second.sock.recv(65536)
        assert sorted(bodies(got)) == sorted(sent), got  # each one, once
        assert b"urn:xmpp:delay" in got  # from storage, stamped with the time it was sent
        second.close()
        await cb.close()

    run(scenario())


def test_resume_of_an_unknown_id_fails_at_once(nodes) -> None:
    n1, _n2 = nodes
    (alice,) = users(n1, "alice")

    async def scenario() -> None:
        raw = await asyncio.to_thread(authenticated, n1, alice)
        raw.send(f"<resume xmlns='{SM}' previd='nosuchsession' h='3'/>")
        failed = await asyncio.to_thread(raw.read_until, "</failed>")
        assert b"<item-not-found" in failed and b" h=" not in failed, failed
        bind(raw, "fresh")  # the stream goes on
        raw.close()

    run(scenario())
