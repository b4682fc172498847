"""Stanza helpers: error replies carry the original payload only while it is small."""

from __future__ import annotations

from lxml import etree

from xmppd.protocol.stanza import MAX_ERROR_PAYLOAD, error_reply


def message(body: str) -> etree._Element:
    return etree.fromstring(
        f"<message xmlns='jabber:client' from='a@x/r' to='b@x' id='m1' type='chat'>"
        f"<body>{body}</body></message>"
    )


def test_a_small_payload_comes_back_with_the_error() -> None:
    err = error_reply(message("hello"), "resource-constraint")
    assert err.get("type") == "error" and err.get("id") == "m1" and err.get("to") == "a@x/r"
    assert err.findtext("{jabber:client}body") == "hello"
    assert err.find("{jabber:client}error").get("type") == "wait"


def test_a_big_payload_does_not() -> None:
    """A bounce costs about its id, whatever was sent (a flood of big messages that bounces
    must not come back at full size)."""
    err = error_reply(message("x" * MAX_ERROR_PAYLOAD), "resource-constraint")
    assert err.find("{jabber:client}body") is None
    assert err.get("id") == "m1" and err.find("{jabber:client}error") is not None
    assert len(etree.tostring(err)) < 400
