"""RFC 7395 framing adapters and the RFC 6455 handshake checks, without sockets."""

from __future__ import annotations

import pytest

from xmppd.protocol.parser import ParseError, StanzaReceived, StreamClosed, StreamOpened
from xmppd.protocol.stream import Phase, ServerStream, StreamSettings
from xmppd.protocol.websocket import (
    FRAMING,
    FramedParser,
    Refusal,
    accept_key,
    check_upgrade,
    messages,
    normalize_origin,
    origin_allowed,
)

OPEN = f"<open xmlns='{FRAMING}' to='localhost' version='1.0'/>".encode()
CLOSE = f"<close xmlns='{FRAMING}'/>".encode()
MESSAGE = b"<message xmlns='jabber:client' to='a@localhost'><body>hi</body></message>"


def opened(parser: FramedParser) -> FramedParser:
    [event] = parser.feed(OPEN)
    assert isinstance(event, StreamOpened)
    return parser


def test_open_becomes_the_stream_header_and_close_the_closing_tag() -> None:
    parser = FramedParser()
    [event] = parser.feed(OPEN)
    assert isinstance(event, StreamOpened)
    assert event.attrs == {"to": "localhost", "version": "1.0"}
    assert event.default_ns == "jabber:client"
    [stanza] = parser.feed(MESSAGE)
    assert isinstance(stanza, StanzaReceived)
    assert stanza.element.tag == "{jabber:client}message"
    assert isinstance(parser.feed(CLOSE)[0], StreamClosed)


@pytest.mark.parametrize(
    "message, condition",
    [
        (MESSAGE + MESSAGE, "not-well-formed"),  # two elements in one message
        (MESSAGE[:30], "not-well-formed"),  # half an element
        (b"<!-- hi --><presence xmlns='jabber:client'/>", "restricted-xml"),
        (b"<?xml version='1.0'?><presence xmlns='jabber:client'/>", "restricted-xml"),
        (b"<presence xmlns='jabber:client'><x:y/></presence>", "bad-namespace-prefix"),
        (b"<open xmlns='jabber:client' to='localhost' version='1.0'/>", "invalid-namespace"),
        (OPEN, "not-well-formed"),  # a second <open/> without a restart
        (b"</stream:stream>", "not-well-formed"),
        (b"text", "bad-format"),
    ],
)
def test_bad_messages_get_the_stream_error(message: bytes, condition: str) -> None:
    parser = opened(FramedParser())
    [event] = parser.feed(message)
    assert isinstance(event, ParseError)
    assert event.condition == condition
    assert parser.feed(MESSAGE) == []  # dead after an error


def test_stanza_before_open_is_refused_and_limits_apply() -> None:
    [event] = FramedParser().feed(MESSAGE)
    assert isinstance(event, ParseError) and event.condition == "not-well-formed"
    parser = opened(FramedParser(max_stanza_bytes=200))
    big = b"<message xmlns='jabber:client'><body>" + b"x" * 300 + b"</body></message>"
    [event] = parser.feed(big)
    assert isinstance(event, ParseError) and event.condition == "policy-violation"


def test_whitespace_message_is_ignored_and_restart_expects_open_again() -> None:
    parser = opened(FramedParser())
    assert parser.feed(b"  \n") == []
    parser.reset()
    [event] = parser.feed(MESSAGE)
    assert isinstance(event, ParseError)
    parser.reset()
    assert isinstance(parser.feed(OPEN)[0], StreamOpened)


def test_outbound_header_features_error_and_close() -> None:
    stream = ServerStream(
        StreamSettings(
            domains=frozenset({"localhost"}),
            default_domain="localhost",
            tls_available=False,
            direct_tls=True,
            parser=FramedParser,
        )
    )
    stream.receive_data(OPEN)
    assert stream.next_event().__class__.__name__ == "_Sentinel"
    assert stream.phase is Phase.AUTH
    out = messages(stream.data_to_send())
    assert len(out) == 2
    assert out[0].startswith(f"<open xmlns='{FRAMING}' id='".encode())
    assert b"from='localhost'" in out[0] and out[0].endswith(b"/>") and b"stream" not in out[0]
    assert out[1].startswith(b'<stream:features xmlns:stream="http://etherx.jabber.org/streams">')
    stream.stream_error("policy-violation", "too <much>")
    error, close = messages(stream.data_to_send())
    assert error.startswith(b"<stream:error xmlns:stream='http://etherx.jabber.org/streams'>")
    assert b"too &lt;much&gt;" in error and error.endswith(b"</stream:error>")
    assert close == CLOSE


def test_outbound_splits_several_elements() -> None:
    data = b"<a xmlns='x'><b/><c>t&gt;</c></a><success xmlns='y'/>" + MESSAGE
    assert messages(data) == [
        b"<a xmlns='x'><b/><c>t&gt;</c></a>",
        b"<success xmlns='y'/>",
        MESSAGE,
    ]
    assert messages(b" ") == []


HEADERS = {
    "host": "localhost:5443",
    "upgrade": "websocket",
    "connection": "keep-alive, Upgrade",
    "sec-websocket-version": "13",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    "sec-websocket-protocol": "chat, xmpp",
}


def test_handshake_accepts_with_the_rfc_6455_key_and_subprotocol() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3
    result = check_upgrade("GET", HEADERS)
    assert ("Sec-WebSocket-Protocol", "xmpp") in result
    assert ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") in result


@pytest.mark.parametrize(
    "change, status",
    [
        ({"sec-websocket-protocol": "chat"}, 400),
        ({"sec-websocket-version": "8"}, 426),
        ({"upgrade": "h2c"}, 426),
        ({"sec-websocket-key": "short"}, 400),
    ],
)
def test_handshake_refusals(change: dict[str, str], status: int) -> None:
    result = check_upgrade("GET", {**HEADERS, **change})
    assert isinstance(result, Refusal) and result.status == status
    assert isinstance(check_upgrade("POST", HEADERS), Refusal)


def test_origins_are_normalized_and_matched_against_a_fixed_list() -> None:
    allowed = {"https://good.example", "https://localhost:5443"}
    assert origin_allowed("https://Good.example/", allowed)
    assert origin_allowed("https://good.example:443", allowed)
    assert origin_allowed("https://localhost:5443", allowed)
    assert not origin_allowed("http://good.example", allowed)
    assert not origin_allowed("https://good.example:8443", allowed)
    assert not origin_allowed("null", allowed)
    assert not origin_allowed("https://good.example.evil.example", allowed)
    assert origin_allowed("http://x.example", {"*"})
    assert normalize_origin("HTTP://[::1]:080") == "http://[::1]"
    assert normalize_origin("https://a.example/path") is None
