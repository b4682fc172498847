"""XEP-0124/0206 body handling and the rid window, without sockets."""

from __future__ import annotations

import pytest
from lxml import etree

from xmppd.protocol import bosh

BODY = "<body xmlns='http://jabber.org/protocol/httpbind' rid='10' sid='s'>{}</body>"


def test_parse_body_and_payload() -> None:
    body = bosh.parse_body(
        BODY.format("<message xmlns='jabber:client' to='b@localhost'/>").encode(), 4096, 8
    )
    assert bosh.integer(body, "rid") == 10
    assert bosh.payload(body) == [b'<message xmlns="jabber:client" to="b@localhost"/>']


@pytest.mark.parametrize(
    "data",
    [
        b"<body xmlns='urn:other' rid='1'/>",
        b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1'>",
        b"<!DOCTYPE x><body xmlns='http://jabber.org/protocol/httpbind' rid='1'/>",
        b"<body xmlns='http://jabber.org/protocol/httpbind'/><body/>",
        b"",
    ],
)
def test_bad_bodies_are_bad_requests(data: bytes) -> None:
    with pytest.raises(bosh.BoshError) as caught:
        bosh.parse_body(data, 4096, 8)
    assert caught.value.condition == "bad-request"


def test_body_size_and_depth_limits() -> None:
    with pytest.raises(bosh.BoshError):
        bosh.parse_body(BODY.format("x" * 5000).encode(), 4096, 8)
    deep = "<a xmlns='x'>" * 10 + "</a>" * 10
    with pytest.raises(bosh.BoshError):
        bosh.parse_body(BODY.format(deep).encode(), 4096, 8)


@pytest.mark.parametrize("value", ["-1", "x", "1" * 20])
def test_rid_must_be_an_integer(value: str) -> None:
    body = etree.fromstring(f"<body rid='{value}'/>")
    with pytest.raises(bosh.BoshError):
        bosh.integer(body, "rid")


def test_rid_window_order_repeat_and_limits() -> None:
    window = bosh.RidWindow(100, 2)
    assert window.classify(101) == "next"
    assert window.classify(102) == "later"
    with pytest.raises(bosh.BoshError) as caught:
        window.classify(103)
    assert caught.value.condition == "item-not-found"
    window.processed(101)
    window.answered(101, b"<body/>")
    assert window.classify(101) == "repeat" and window.answer(101) == b"<body/>"
    for rid in (102, 103, 104):
        window.processed(rid)
        window.answered(rid, b"x")
    with pytest.raises(bosh.BoshError):  # too old to be kept
        window.classify(101)


def test_a_copy_of_a_request_in_progress_is_pending() -> None:
    """XEP-0124 §14.3: a rid received and not yet answered is a retransmission, not an error."""
    window = bosh.RidWindow(100, 2)
    window.received(101)
    window.processed(101)  # held: processed, not answered
    assert window.classify(101) == "pending"
    window.received(103)  # arrived early, waits for 102
    assert window.classify(103) == "pending"
    window.answered(101, b"<body/>")
    assert window.classify(101) == "repeat"
    window.failed(103)  # refused (the session ends with it): no longer pending
    assert window.classify(103) == "later"


def test_output_becomes_payload_or_terminate() -> None:
    out = bosh.split_output(
        [
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            b"xmlns:stream='http://etherx.jabber.org/streams' id='abc' from='localhost' "
            b"version='1.0' xml:lang='en'>",
            b"<stream:features xmlns:stream='http://etherx.jabber.org/streams'/>",
        ]
    )
    assert out.authid == "abc" and not out.terminate and len(out.payload) == 1
    out = bosh.split_output([b"<stream:error><x/></stream:error></stream:stream>"])
    assert out.terminate and out.condition == "remote-stream-error"
    body = bosh.response(out.payload, terminate=True, condition=out.condition)
    parsed = etree.fromstring(body)
    assert parsed.get("type") == "terminate" and parsed.get("condition") == "remote-stream-error"
    assert parsed[0].tag == "{http://etherx.jabber.org/streams}error"


def test_response_attributes_are_escaped() -> None:
    body = etree.fromstring(bosh.response([], attrs={"from": "a'b<c"}))
    assert body.get("from") == "a'b<c"
    assert body.tag == "{http://jabber.org/protocol/httpbind}body"
