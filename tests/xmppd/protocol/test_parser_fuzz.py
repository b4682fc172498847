"""Mutated streams: chunking never changes the outcome, and whatever we accept lxml accepts."""

from __future__ import annotations

import random

import pytest
from lxml import etree

from xmppd.protocol.parser import ParseError, StanzaReceived, StreamClosed, StreamParser

STREAM = (
    b"<?xml version='1.0'?><stream:stream to='example.com' version='1.0' xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback'>\n"
    b"<message to='a@b/c' type='chat' id='m1'><body>Hi &amp; bye &#x41;</body>"
    b"<active xmlns='http://jabber.org/protocol/chatstates'/></message> "
    b"<presence/><iq type='get' id='x'><query xmlns='jabber:iq:roster'/></iq>"
    b"<message><body><![CDATA[<!-- & --> </message>]]></body></message>"
    b"<message id='q' title='/>&quot;' a=\"'>'\"><body>a/>b</body></message>"
    b"<message><forwarded xmlns='urn:xmpp:forward:0'><message><body>in</body></message>"
    b"</forwarded></message><db:result to='x'>k</db:result>"
    b"<stream:features><x xmlns:p='urn:p'><p:y p:z='1'/></x></stream:features>"
    b"</stream:stream>"
)
SNIPPETS = [
    b"<", b">", b"/", b"'", b'"', b"&", b";", b"<!--", b"-->", b"<![CDATA[", b"]]>", b"<?",
    b"?>", b"&amp;", b"&foo;", b"xmlns='u'", b"xmlns:x='v'", b"x:", b"\xff", b"\xc3", b" ",
    b"</message>", b"<message>", b"/>", b"=", b"\x00", b"<!DOCTYPE x>", b"db:", b"<a>",
]  # fmt: skip


def mutate(rng: random.Random, edits: int = 3) -> bytes:
    data = bytearray(STREAM)
    for _ in range(rng.randint(1, edits)):
        pos = rng.randrange(len(data))
        roll = rng.random()
        if roll < 0.4:
            data[pos:pos] = rng.choice(SNIPPETS)
        elif roll < 0.7:
            del data[pos : pos + rng.randint(1, 5)]
        else:
            data[pos] = rng.randrange(256)
    return bytes(data)


def shape(el: etree._Element) -> tuple:
    """Tag, attributes, text and children: what a consumer sees, independent of ns order."""
    children = tuple((shape(child), child.tail) for child in el)
    return (el.tag, tuple(sorted(el.attrib.items())), el.text, children)


def outcome(data: bytes, step: int | None, rng: random.Random) -> list:
    parser = StreamParser()
    events: list = []
    i = 0
    while i < len(data):
        size = len(data) if step is None else step or rng.randint(1, 30)
        events += parser.feed(data[i : i + size])
        i += size
    out = []
    for event in events:
        if isinstance(event, StanzaReceived):
            out.append((shape(event.element), event.size))
        elif isinstance(event, ParseError):
            out.append(("error", event.condition))
        else:
            out.append(event)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_chunking_never_changes_the_outcome(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(150):
        data = mutate(rng)
        whole = outcome(data, None, rng)
        assert outcome(data, 1, rng) == whole, data
        assert outcome(data, 0, rng) == whole, data


def test_accepted_streams_match_a_strict_whole_document_parse() -> None:
    rng = random.Random(99)
    strict = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    accepted = 0
    for _ in range(1000):
        data = mutate(rng, edits=1)
        events = StreamParser().feed(data)
        if not events or not isinstance(events[-1], StreamClosed):
            continue
        accepted += 1
        root = etree.fromstring(data, strict)  # must not raise
        assert not any(isinstance(node.tag, str) is False for node in root.iter()), data
        expected = [shape(child) for child in root]
        ours = [shape(e.element) for e in events if isinstance(e, StanzaReceived)]
        assert ours == expected, data
    assert accepted > 100
