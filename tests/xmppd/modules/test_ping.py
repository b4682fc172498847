"""XEP-0199 pings and RFC 6120 §10.3.3 (an iq with no `to` is handled for the account)."""

from __future__ import annotations

import re
import time

from support import RawClient, ServerProcess


def answer_to(client: RawClient, id_: str, timeout: float = 5) -> bytes:
    """The whole <iq/> answering `id_` (self-closing or not)."""
    pattern = re.compile(rb"<iq[^>]*id=[\"']" + id_.encode() + rb"[\"'][^>]*?(/>|>.*?</iq>)", re.S)
    deadline = time.monotonic() + timeout
    while (found := pattern.search(client.buffer)) is None:
        client.read_until(b">", timeout=max(0.01, deadline - time.monotonic()))
        if (found := pattern.search(client.buffer)) is None:
            client.sock.settimeout(max(0.01, deadline - time.monotonic()))
            client.buffer += client.sock.recv(65536)
    client.take()
    return found.group(0)


def test_ping_without_to_and_to_the_own_account_is_answered(server: ServerProcess) -> None:
    """§10.3.3: no `to` means the server answers on the account's behalf (a result, as Prosody
    and ejabberd do), not service-unavailable."""
    client = RawClient(server)
    try:
        client.login("alice", resource="ping-self")
        for to in ("", " to='alice@localhost'", " to='localhost'"):
            client.send(f"<iq type='get' id='p1'{to}><ping xmlns='urn:xmpp:ping'/></iq>")
            answer = answer_to(client, "p1")
            assert b"type='result'" in answer or b'type="result"' in answer, (to, answer)
            assert b"error" not in answer, (to, answer)
    finally:
        client.close()


def test_disco_info_without_to_describes_the_account(server: ServerProcess) -> None:
    """The general rule for iqs with no `to`: disco#info answers for the account (its
    identity), an unknown namespace is still service-unavailable."""
    client = RawClient(server)
    try:
        client.login("alice", resource="disco-self")
        client.send(
            "<iq type='get' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        )
        answer = answer_to(client, "d1")
        assert b"result" in answer and b"account" in answer, answer
        client.send("<iq type='get' id='u1'><query xmlns='urn:example:unknown'/></iq>")
        answer = answer_to(client, "u1")
        assert b"service-unavailable" in answer, answer
    finally:
        client.close()
