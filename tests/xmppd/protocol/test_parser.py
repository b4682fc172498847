"""StreamParser: normal streams, chunking, serialization, restarts, shared parser, memory."""

from __future__ import annotations

import gc
import random

import pytest
from lxml import etree

from xmppd.protocol.parser import (
    STREAMS_NS,
    ParseError,
    StanzaReceived,
    StreamClosed,
    StreamOpened,
    StreamParser,
)

HEADER = (
    b"<?xml version='1.0' encoding='UTF-8'?>"
    b"<stream:stream to='example.com' version='1.0' xml:lang='en' xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams'>"
)
MESSAGE = (
    b"<message to='juliet@example.com/balcony' type='chat' id='m1'>"
    b"<body>Art thou not Romeo, and a Montague?</body>"
    b"<active xmlns='http://jabber.org/protocol/chatstates'/></message>"
)
XML_NS = "http://www.w3.org/XML/1998/namespace"


def feed_bytewise(parser: StreamParser, data: bytes) -> list:
    events: list = []
    for i in range(len(data)):
        events += parser.feed(data[i : i + 1])
    return events


def feed_random(parser: StreamParser, data: bytes, seed: int) -> list:
    rng = random.Random(seed)
    events: list = []
    i = 0
    while i < len(data):
        step = rng.randint(1, 40)
        events += parser.feed(data[i : i + step])
        i += step
    return events


def describe(events: list) -> list:
    """Comparable form of an event list (elements as their serialization)."""
    out = []
    for event in events:
        if isinstance(event, StanzaReceived):
            assert event.element.getparent() is None
            out.append(("stanza", etree.tostring(event.element), event.size))
        else:
            out.append(event)
    return out


CORPUS = (
    HEADER
    + b"\n  "
    + MESSAGE
    + b" \r\n\t"
    + b"<presence/>"
    + b"<iq type='get' id='a&amp;b' to='x&#x40;y'><query xmlns='jabber:iq:roster'/></iq>"
    + b"<message><body><![CDATA[<!-- not a comment --> & <?pi?> </message> <![CDATA[ ]]>"
    + b"</body></message>"
    + b"<message xmlns='jabber:client'><body>a/>/>b&gt;&#65;&#x42;\xc3\xa9\xe2\x82\xac"
    + b"</body></message>"
    + b"<message id='c' title='/>&quot;&apos;' a=\"'>'\"><body>x</body></message>"
    + b"<message><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
    + b"<message xmlns='jabber:client' type='chat'><body>inner</body></message>"
    + b"</forwarded></received></message>"
    + b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
    + b"<message><body>stream: is just text</body></message>"
    + b"</stream:stream>"
)


def test_corpus_events() -> None:
    events = StreamParser().feed(CORPUS)
    opened = events[0]
    assert opened == StreamOpened(
        attrs={"to": "example.com", "version": "1.0", f"{{{XML_NS}}}lang": "en"},
        default_ns="jabber:client",
        tag=f"{{{STREAMS_NS}}}stream",
        prefix="stream",
    )
    assert isinstance(events[-1], StreamClosed)
    stanzas = [e for e in events[1:-1]]
    assert all(isinstance(e, StanzaReceived) for e in stanzas)
    tags = [e.element.tag for e in stanzas]
    assert tags == [
        "{jabber:client}message",
        "{jabber:client}presence",
        "{jabber:client}iq",
        "{jabber:client}message",
        "{jabber:client}message",
        "{jabber:client}message",
        "{jabber:client}message",
        f"{{{STREAMS_NS}}}features",
        "{jabber:client}message",
    ]
    assert stanzas[0].size == len(MESSAGE)
    assert stanzas[1].size == len(b"<presence/>")
    assert stanzas[2].element.get("id") == "a&b"
    assert stanzas[2].element.get("to") == "x@y"
    assert stanzas[3].element[0].text == "<!-- not a comment --> & <?pi?> </message> <![CDATA[ "
    assert stanzas[4].element[0].text == "a/>/>b>AB\u00e9\u20ac"
    assert stanzas[5].element.get("title") == "/>\"'"
    assert stanzas[5].element.get("a") == "'>'"
    inner = stanzas[6].element.find(".//{urn:xmpp:forward:0}forwarded/{jabber:client}message")
    assert inner is not None and inner.findtext("{jabber:client}body") == "inner"
    assert stanzas[8].element.findtext("{jabber:client}body") == "stream: is just text"


@pytest.mark.parametrize("mode", ["bytewise", "random1", "random2", "random3"])
def test_chunking_gives_identical_events(mode: str) -> None:
    expected = describe(StreamParser().feed(CORPUS))
    parser = StreamParser()
    if mode == "bytewise":
        events = feed_bytewise(parser, CORPUS)
    else:
        events = feed_random(parser, CORPUS, seed=int(mode[-1]))
    assert describe(events) == expected


def test_serialization_has_default_namespace_not_ns0() -> None:
    parser = StreamParser()
    parser.feed(HEADER)
    (event,) = parser.feed(MESSAGE)
    assert etree.tostring(event.element) == (
        b'<message xmlns="jabber:client" to="juliet@example.com/balcony" type="chat" id="m1">'
        b"<body>Art thou not Romeo, and a Montague?</body>"
        b'<active xmlns="http://jabber.org/protocol/chatstates"/></message>'
    )


def test_serialization_of_prefixed_stanza_keeps_only_used_declarations() -> None:
    parser = StreamParser()
    parser.feed(
        b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
        b" xmlns:db='jabber:server:dialback' xmlns:unused='urn:unused'>"
    )
    (a, b) = parser.feed(
        b"<db:result from='a.example' to='b.example'>key</db:result>"
        b"<message><body>db: in text only</body></message>"
    )
    assert etree.tostring(a.element) == (
        b'<db:result xmlns:db="jabber:server:dialback" from="a.example" to="b.example">'
        b"key</db:result>"
    )
    assert etree.tostring(b.element) == (
        b'<message xmlns="jabber:server"><body>db: in text only</body></message>'
    )


def test_stanza_redeclaring_namespaces_is_left_alone() -> None:
    parser = StreamParser()
    parser.feed(HEADER)
    events = parser.feed(
        b"<message xmlns='jabber:client' xmlns:stream='urn:other'><stream:x/></message>"
        b"<x xmlns=''><y/></x>"
    )
    assert etree.tostring(events[0].element) == (
        b'<message xmlns="jabber:client" xmlns:stream="urn:other"><stream:x/></message>'
    )
    assert events[1].element.tag == "x"
    assert events[1].element[0].tag == "y"


def test_stream_without_default_namespace_and_empty_root() -> None:
    events = StreamParser().feed(
        b"<s:stream xmlns:s='http://etherx.jabber.org/streams' version='1.0'/>"
    )
    assert events == [
        StreamOpened({"version": "1.0"}, None, f"{{{STREAMS_NS}}}stream", "s"),
        StreamClosed(),
    ]


def test_whitespace_keepalives_are_ignored() -> None:
    parser = StreamParser()
    parser.feed(HEADER)
    for _ in range(1000):
        assert parser.feed(b" ") == []
        assert parser.feed(b"\r\n\t") == []
    assert len(parser.feed(b"<presence/> ")) == 1


def test_whitespace_after_close_is_ignored_but_content_is_not() -> None:
    parser = StreamParser()
    assert isinstance(parser.feed(HEADER + b"</stream:stream>")[-1], StreamClosed)
    assert parser.feed(b" \n") == []
    (error,) = parser.feed(b"<presence/>")
    assert error.condition == "not-well-formed"


def test_reset_starts_a_new_stream_with_optional_xml_declaration() -> None:
    parser = StreamParser()
    assert len(parser.feed(HEADER + b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")) == 2
    parser.feed(b"<partial")  # discarded by the restart
    parser.reset()
    events = parser.feed(HEADER + MESSAGE)
    assert isinstance(events[0], StreamOpened)
    assert isinstance(events[1], StanzaReceived)
    parser.reset()
    events = parser.feed(HEADER.split(b"?>", 1)[1] + b"<presence/>")
    assert [type(e) for e in events] == [StreamOpened, StanzaReceived]


def test_parser_is_dead_after_an_error_until_reset() -> None:
    parser = StreamParser()
    parser.feed(HEADER)
    (error,) = parser.feed(b"<message><!-- x --></message>")
    assert error == ParseError("restricted-xml", error.text)
    assert error.text
    assert parser.feed(b"<presence/>") == []
    assert parser.feed(MESSAGE) == []
    parser.reset()
    assert len(parser.feed(HEADER + b"<presence/>")) == 2


def test_events_before_an_error_in_the_same_chunk_are_kept() -> None:
    parser = StreamParser()
    events = parser.feed(HEADER + b"<presence/><presence><!--x--></presence>")
    assert [type(e) for e in events] == [StreamOpened, StanzaReceived, ParseError]


def test_max_stanza_bytes_can_be_raised_at_any_time() -> None:
    parser = StreamParser(max_stanza_bytes=1000)
    parser.feed(HEADER)
    big = b"<message><body>" + b"x" * 5000 + b"</body></message>"
    parser.feed(big[:500])
    parser.max_stanza_bytes = 256 * 1024  # e.g. authentication finished meanwhile
    (event,) = parser.feed(big[500:])
    assert event.size == len(big)
    parser.max_stanza_bytes = 1000
    (error,) = parser.feed(big)
    assert error.condition == "policy-violation"


def test_limits_are_exact() -> None:
    stanza = b"<message><body>" + b"x" * 100 + b"</body></message>"
    parser = StreamParser(max_stanza_bytes=len(stanza))
    parser.feed(HEADER)
    assert len(parser.feed(stanza)) == 1
    assert len(feed_bytewise(parser, stanza)) == 1
    (error,) = parser.feed(stanza.replace(b"x", b"xx", 1))
    assert error.condition == "policy-violation"

    nested = b"<a>" * 30 + b"</a>" * 30  # depth 31 with the root
    parser = StreamParser(max_depth=31)
    parser.feed(HEADER)
    assert len(parser.feed(nested)) == 1
    (error,) = parser.feed(b"<b>" + nested + b"</b>")
    assert error.condition == "policy-violation"

    attrs = b" ".join(b"a%d='=='" % i for i in range(64))
    parser = StreamParser(max_attributes=64)
    parser.feed(HEADER)
    assert len(parser.feed(b"<message " + attrs + b"/>")) == 1
    assert len(parser.feed(b"<message><x " + attrs + b"/></message>")) == 1
    (error,) = parser.feed(b"<message><x " + attrs + b" b='1'/></message>")
    assert error.condition == "policy-violation"


def test_streams_sharing_the_parser_do_not_mix() -> None:
    """Interleaved byte-by-byte feeds of two streams give each its own events."""
    expected = describe(feed_bytewise(StreamParser(), CORPUS))
    first, second = StreamParser(), StreamParser()
    events_first: list = []
    events_second: list = []
    for i in range(len(CORPUS)):
        events_first += first.feed(CORPUS[i : i + 1])
        events_second += second.feed(CORPUS[i : i + 1])
    assert describe(events_first) == describe(events_second) == expected


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def test_memory_is_flat_over_100000_stanzas() -> None:
    parser = StreamParser()
    parser.feed(HEADER)
    batch = MESSAGE * 100
    for _ in range(100):  # warm up allocator pools
        parser.feed(batch)
    gc.collect()
    before = _rss()
    count = 0
    for _ in range(1000):
        for event in parser.feed(batch):
            assert event.element.getparent() is None
            count += 1
    gc.collect()
    assert count == 100_000
    grown = _rss() - before
    assert grown < 1024 * 1024, f"grew {grown} bytes over 100,000 stanzas"
    assert parser._parts is None and parser._tail == b""
