"""Bad input over real sockets gets the RFC's stream error and costs nobody else anything."""

from __future__ import annotations

import base64
import socket

import pytest
from support import HEADER, PASSWORDS, RawClient, ServerProcess, connect, run

STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"


def assert_healthy(server: ServerProcess) -> None:
    """After any bad input: the server is up and two clients can log in and chat."""
    assert server.alive()

    async def chat() -> None:
        alice = await connect(server, "alice", "healthy")
        bob = await connect(server, "bob", "healthy")
        alice.send_message(mto="bob@localhost/healthy", mbody="still fine", mtype="chat")
        assert (await bob.next_message())["body"] == "still fine"
        await alice.close()
        await bob.close()

    run(chat())


def stream_error(data: bytes) -> str:
    start = data.index(b"<stream:error>") + len(b"<stream:error><")
    return data[start:].split(b" ")[0].split(b"/")[0].decode()


HOSTILE_PREAUTH = {
    "doctype": (HEADER + "<!DOCTYPE foo [<!ENTITY x 'y'>]>", "restricted-xml"),
    "billion-laughs": (
        "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
        "<!ENTITY lol2 '&lol;&lol;&lol;&lol;'>]><stream:stream xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>&lol2;",
        "restricted-xml",
    ),
    "comment": (HEADER + "<!-- hello -->", "restricted-xml"),
    "processing-instruction": (HEADER + "<?evil data?>", "restricted-xml"),
    "not-well-formed": (HEADER + "<message><body></message>", "not-well-formed"),
    "wrong-namespace": (
        "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
        "to='localhost' version='1.0'>",
        "invalid-namespace",
    ),
    "unknown-host": (
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
        "to='elsewhere.example' version='1.0'>",
        "host-unknown",
    ),
    "no-version": (
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
        "to='localhost'>",
        "unsupported-version",
    ),
    "oversized-preauth": (HEADER + "<message><body>" + "x" * 100_000, "policy-violation"),
    "stanza-before-auth": (HEADER + "<message to='bob@localhost'><body>hi</body></message>", None),
    "invalid-utf8": (
        HEADER.encode() + b"<message><body>\xff\xfe</body></message>",
        "unsupported-encoding",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_PREAUTH))
def test_hostile_input_before_login(server: ServerProcess, case: str) -> None:
    data, expected = HOSTILE_PREAUTH[case]
    client = RawClient(server)
    try:
        client.send(data)
        reply = client.read_to_close()
    finally:
        client.close()
    assert b"<stream:error>" in reply, reply
    assert STREAM_ERRORS.encode() in reply
    if expected is not None:
        assert stream_error(reply) == expected, reply
    assert reply.rstrip().endswith(b"</stream:stream>")
    assert_healthy(server)


def test_auth_refused_before_starttls(server: ServerProcess, raw: RawClient) -> None:
    raw.send(HEADER)
    features = raw.read_until("</stream:features>")
    assert b"<required/>" in features and b"starttls" in features
    assert b"mechanisms" not in features  # nothing to authenticate with before TLS
    token = base64.b64encode(b"\0alice\0" + PASSWORDS["alice"].encode()).decode()
    raw.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    assert b"<encryption-required/>" in raw.read_until("</failure>")


def test_features_after_tls_offer_scram_plus_and_limits(
    server: ServerProcess, raw: RawClient
) -> None:
    raw.starttls()
    raw.send(HEADER)
    features = raw.read_until("</stream:features>").decode()
    for mechanism in (
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "SCRAM-SHA-512",
        "PLAIN",
    ):
        assert f"<mechanism>{mechanism}</mechanism>" in features
    assert "urn:xmpp:stream-limits:0" in features and "<max-bytes>" in features


def test_wrong_password_gets_not_authorized_then_too_many_attempts(
    server: ServerProcess, raw: RawClient
) -> None:
    raw.starttls()
    raw.send(HEADER)
    raw.read_until("</stream:features>")
    token = base64.b64encode(b"\0alice\0wrong").decode()
    for _attempt in range(4):
        raw.take()
        raw.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        assert b"<not-authorized/>" in raw.read_until("</failure>")
    raw.take()
    raw.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    reply = raw.read_to_close()
    assert b"<not-authorized/>" in reply
    assert stream_error(reply) == "policy-violation"
    assert_healthy(server)


HOSTILE_AFTER_LOGIN = {
    "oversized-stanza": (
        "<message to='bob@localhost'><body>" + "x" * 300_000 + "</body></message>",
        "policy-violation",
    ),
    "too-deep": ("<message>" + "<a xmlns='urn:x'>" * 200, "policy-violation"),
    "unbound-prefix": ("<foo:message xmlns='jabber:client'/>", "bad-namespace-prefix"),
    "spoofed-from": (
        "<message from='bob@localhost/x' to='carol@localhost'><body>hi</body></message>",
        "invalid-from",
    ),
    "unknown-stanza": ("<foo/>", "unsupported-stanza-type"),
    "entity": ("<message to='bob@localhost'><body>&xxe;</body></message>", "restricted-xml"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_AFTER_LOGIN))
def test_hostile_input_after_login(server: ServerProcess, case: str) -> None:
    data, expected = HOSTILE_AFTER_LOGIN[case]
    client = RawClient(server)
    try:
        client.login("carol", resource=f"hostile-{case}")
        client.send(data)
        reply = client.read_to_close()
    finally:
        client.close()
    assert stream_error(reply) == expected, reply
    assert_healthy(server)


def test_iq_without_id_gets_bad_request(server: ServerProcess, raw: RawClient) -> None:
    raw.login("carol", resource="bad-iq")
    raw.send(
        "<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq><iq type='get' id='x'/>"
    )
    reply = raw.read_until("</iq>").decode()
    assert "<bad-request" in reply


def test_malformed_to_gets_jid_malformed(server: ServerProcess, raw: RawClient) -> None:
    raw.login("carol", resource="bad-to")
    raw.send("<message to='a@b@c' id='m1'><body>x</body></message>")
    assert b"jid-malformed" in raw.read_until("</message>")


def test_abrupt_disconnect_mid_stanza(server: ServerProcess) -> None:
    client = RawClient(server)
    client.login("carol", resource="abrupt")
    client.send("<message to='bob@localhost'><body>half a sta")
    client.sock.shutdown(socket.SHUT_RDWR)
    client.close()
    assert_healthy(server)


def test_whitespace_keepalive_is_accepted(server: ServerProcess, raw: RawClient) -> None:
    raw.login("carol", resource="keepalive")
    raw.send("  \n  ")
    raw.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert b'type="result"' in raw.read_until('id="p1"')


def test_clean_close(server: ServerProcess, raw: RawClient) -> None:
    raw.login("carol", resource="closer")
    raw.send("</stream:stream>")
    assert raw.read_to_close().rstrip().endswith(b"</stream:stream>")
