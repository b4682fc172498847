"""Hostile input: every case is fed in one chunk and byte by byte and must give the condition."""

from __future__ import annotations

import sys
import time

import pytest
from lxml import etree

from xmppd.protocol.parser import ParseError, StanzaReceived, StreamOpened, StreamParser

STREAM = (
    b"<stream:stream to='example.com' version='1.0' xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams'>"
)
DECL = b"<?xml version='1.0'?>"

BILLION_LAUGHS = (
    b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol0 'lol'>"
    + b"".join(b"<!ENTITY lol%d '%s'>" % (i, b"&lol%d;" % (i - 1) * 10) for i in range(1, 10))
    + b"]>"
    + STREAM
    + b"<message><body>&lol9;</body></message>"
)

HOSTILE = {
    # RFC 6120 §11.1: DTDs, comments, PIs, entity references
    "billion laughs": (BILLION_LAUGHS, "restricted-xml"),
    "doctype external entity": (
        b"<!DOCTYPE stream [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>"
        + STREAM
        + b"<message><body>&xxe;</body></message>",
        "restricted-xml",
    ),
    "doctype inside the stream": (STREAM + b"<!DOCTYPE x>", "restricted-xml"),
    "comment in stanza": (
        STREAM + b"<message><body>hi<!-- x --></body></message>",
        "restricted-xml",
    ),
    "comment between stanzas": (STREAM + b"<presence/><!-- x --><presence/>", "restricted-xml"),
    "comment before root": (DECL + b"<!-- x -->" + STREAM, "restricted-xml"),
    "pi in stanza": (STREAM + b"<message><?php evil() ?></message>", "restricted-xml"),
    "pi between stanzas": (STREAM + b"<?foo bar?>", "restricted-xml"),
    "pi before root": (b"<?xml-stylesheet href='x'?>" + STREAM, "restricted-xml"),
    "xml declaration not at start": (b" " + DECL + STREAM, "restricted-xml"),
    "xml declaration after root": (STREAM + DECL, "restricted-xml"),
    "entity in text": (STREAM + b"<message><body>&nbsp;</body></message>", "restricted-xml"),
    "entity in attribute": (STREAM + b"<message id='&foo;'/>", "restricted-xml"),
    "entity between stanzas": (STREAM + b"&foo;", "restricted-xml"),
    "entity in stream header": (b"<stream:stream to='&foo;'" + STREAM[14:], "restricted-xml"),
    # RFC 6120 §11.6: UTF-8 only
    "invalid utf-8 in stanza": (
        STREAM + b"<message><body>\xff\xfe</body></message>",
        "unsupported-encoding",
    ),
    "invalid utf-8 between stanzas": (STREAM + b"\xc3(", "unsupported-encoding"),
    "truncated utf-8 sequence": (
        STREAM + b"<message><body>\xe2\x82</body></message>",
        "unsupported-encoding",
    ),
    "overlong utf-8": (
        STREAM + b"<message><body>\xc0\xbc</body></message>",
        "unsupported-encoding",
    ),
    "utf-8 surrogate": (
        STREAM + b"<message><body>\xed\xa0\x80</body></message>",
        "unsupported-encoding",
    ),
    "beyond U+10FFFF": (
        STREAM + b"<message><body>\xf4\x90\x80\x80</body></message>",
        "unsupported-encoding",
    ),
    "declared latin-1": (
        b"<?xml version='1.0' encoding='ISO-8859-1'?>"
        + STREAM
        + b"<message><body>\xe9</body></message>",
        "unsupported-encoding",
    ),
    "declared utf-16": (
        b"<?xml version='1.0' encoding='UTF-16'?>" + STREAM,
        "unsupported-encoding",
    ),
    "utf-16 with bom": ((DECL + STREAM).decode().encode("utf-16"), "unsupported-encoding"),
    "utf-16le without bom": ((DECL + STREAM).decode().encode("utf-16-le"), "unsupported-encoding"),
    "utf-32": (STREAM.decode().encode("utf-32-be"), "unsupported-encoding"),
    "utf-8 bom": (b"\xef\xbb\xbf" + DECL + STREAM, "unsupported-encoding"),
    # RFC 6120 §11.8: XML 1.0 only
    "xml 1.1": (b"<?xml version='1.1'?>" + STREAM, "bad-format"),
    "xml 2.0": (b"<?xml version='2.0'?>" + STREAM, "not-well-formed"),
    # namespaces
    "unbound element prefix": (STREAM + b"<foo:message/>", "bad-namespace-prefix"),
    "unbound attribute prefix": (STREAM + b"<message foo:type='chat'/>", "bad-namespace-prefix"),
    "unbound prefix deep inside": (
        STREAM + b"<iq><query><x:y/></query></iq>",
        "bad-namespace-prefix",
    ),
    "unbound stream prefix": (
        b"<stream:stream xmlns='jabber:client' version='1.0'>",
        "bad-namespace-prefix",
    ),
    "rebinding xml": (STREAM + b"<message xmlns:xml='urn:evil'/>", "bad-namespace-prefix"),
    "rebinding xmlns": (STREAM + b"<message xmlns:xmlns='urn:evil'/>", "bad-namespace-prefix"),
    "xml namespace to another prefix": (
        STREAM + b"<message xmlns:x='http://www.w3.org/XML/1998/namespace'/>",
        "bad-namespace-prefix",
    ),
    "xmlns namespace declared": (
        STREAM + b"<message xmlns:x='http://www.w3.org/2000/xmlns/'/>",
        "bad-namespace-prefix",
    ),
    "undeclaring a prefix": (STREAM + b"<message xmlns:x=''/>", "bad-namespace-prefix"),
    "namespace uri containing }": (STREAM + b"<message xmlns='urn:a}b'/>", "invalid-namespace"),
    "namespace uri containing } by reference": (
        STREAM + b"<message><x xmlns='urn:a&#x7D;b'/></message>",
        "invalid-namespace",
    ),
    "root in the wrong namespace": (
        b"<stream:stream xmlns:stream='urn:not-streams' xmlns='jabber:client'>",
        "invalid-namespace",
    ),
    "root not a stream": (b"<message xmlns='jabber:client'>", "invalid-namespace"),
    # limits
    "deep nesting": (STREAM + b"<message>" + b"<a>" * 100, "policy-violation"),
    "oversized stanza": (STREAM + b"<message><body>" + b"A" * 20000, "policy-violation"),
    "oversized start tag": (STREAM + b"<message a='" + b"A" * 20000, "policy-violation"),
    "oversized cdata": (STREAM + b"<message><![CDATA[" + b"A" * 20000, "policy-violation"),
    "oversized stream header": (b"<stream:stream a='" + b"A" * 20000, "policy-violation"),
    "20000 attributes": (
        STREAM + b"<message " + b" ".join(b"a%d='1'" % i for i in range(2000)) + b"/>",
        "policy-violation",
    ),
    # structure
    "text between stanzas": (STREAM + b"<presence/>hello<presence/>", "bad-format"),
    "reference between stanzas": (STREAM + b"&amp;", "bad-format"),
    "cdata between stanzas": (STREAM + b"<![CDATA[x]]>", "bad-format"),
    "text before root": (b"hello" + STREAM, "not-well-formed"),
    "mismatched tags": (STREAM + b"<message><body></message></body>", "not-well-formed"),
    "mismatched end tag leaves nothing open": (
        STREAM + b"<message><body>No closing tag!</message>",
        "not-well-formed",
    ),
    "mismatched end tag split": (
        STREAM + b"<message><body>x</body\n><a></b >",
        "not-well-formed",
    ),
    "stream close inside stanza": (STREAM + b"<message></stream:stream>", "not-well-formed"),
    "wrong root end tag": (STREAM + b"</stream:streams>", "not-well-formed"),
    "end tag before root": (b"</stream:stream>", "not-well-formed"),
    "second root": (STREAM + b"</stream:stream>" + STREAM, "not-well-formed"),
    "control character": (STREAM + b"<message><body>\x01</body></message>", "not-well-formed"),
    "nul character": (STREAM + b"<message><body>\x00</body></message>", "not-well-formed"),
    "invalid character reference": (
        STREAM + b"<message><body>&#0;</body></message>",
        "not-well-formed",
    ),
    "cdata end in text": (STREAM + b"<message><body>]]></body></message>", "not-well-formed"),
    "lt in attribute": (STREAM + b"<message id='<'/>", "not-well-formed"),
    "unquoted attribute": (STREAM + b"<message id=1/>", "not-well-formed"),
    "duplicate attribute": (STREAM + b"<message id='1' id='2'/>", "not-well-formed"),
    "duplicate expanded attribute": (
        STREAM + b"<message xmlns:a='urn:x' xmlns:b='urn:x' a:t='1' b:t='2'/>",
        "not-well-formed",
    ),
    "malformed stream header": (b"<stream:stream to='a' to>", "not-well-formed"),
    "bad end tag at depth 1": (STREAM + b"</stream:stream x='1'>", "not-well-formed"),
}


def run_whole(data: bytes) -> list:
    return StreamParser().feed(data)


def run_bytewise(data: bytes) -> list:
    parser = StreamParser()
    events: list = []
    for i in range(len(data)):
        events += parser.feed(data[i : i + 1])
    return events


@pytest.mark.parametrize("feed", [run_whole, run_bytewise], ids=["whole", "bytewise"])
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_is_refused(name: str, feed) -> None:
    data, condition = HOSTILE[name]
    events = feed(data)
    errors = [e for e in events if isinstance(e, ParseError)]
    assert errors, f"accepted: {events!r}"
    assert events[-1] is errors[0], "events after the error"
    assert errors[0].condition == condition, errors[0].text


def test_invalid_utf8_split_across_every_chunk_boundary() -> None:
    good = "<message><body>\u20ac\U0001f600</body></message>".encode()
    bad = good.replace(b"\xe2\x82\xac", b"\xe2\x82\x41")
    for cut in range(len(bad)):
        parser = StreamParser()
        parser.feed(STREAM)
        events = parser.feed(bad[:cut]) + parser.feed(bad[cut:])
        assert events and events[-1].condition == "unsupported-encoding", cut
        parser = StreamParser()
        parser.feed(STREAM)
        (event,) = parser.feed(good[:cut]) + parser.feed(good[cut:])
        assert event.element[0].text == "\u20ac\U0001f600"


def test_huge_stanza_is_refused_after_about_the_limit_not_buffered() -> None:
    parser = StreamParser(max_stanza_bytes=16 * 1024)
    parser.feed(STREAM)
    start = time.perf_counter()
    (error,) = parser.feed(b"<message><body>" + b"A" * (10 * 1024 * 1024))
    assert error.condition == "policy-violation"
    assert time.perf_counter() - start < 0.5  # only the first 64 KiB slice was looked at
    parser = StreamParser(max_stanza_bytes=16 * 1024)
    parser.feed(STREAM + b"<message><body>")
    fed = 15
    chunk = b"A" * 1024
    while True:
        events = parser.feed(chunk)
        fed += len(chunk)
        if events:
            break
        assert parser._flushed <= 16 * 1024
    assert events[0].condition == "policy-violation"
    assert fed <= 16 * 1024 + len(chunk)


def test_many_small_cdata_and_tag_chunks_stay_linear() -> None:
    parser = StreamParser(max_stanza_bytes=256 * 1024)
    parser.feed(STREAM + b"<message a='")
    start = time.perf_counter()
    for _ in range(100_000):
        assert parser.feed(b">") == []
    assert parser.feed(b"'><![CDATA[") == []
    for _ in range(100_000):
        assert parser.feed(b"]") == []
    (event,) = parser.feed(b"]]></message>")
    assert len(event.element.get("a")) == 100_000
    assert event.element.text == "]" * 100_000
    assert time.perf_counter() - start < 5


def test_legal_tricky_stanzas_pass() -> None:
    events = run_bytewise(
        STREAM
        + b"<message id='&lt;&gt;&amp;&quot;&apos;&#x41;&#66;'><body><![CDATA[<!DOCTYPE &x; <?pi?>"
        + b"]]>&#x41;&amp;</body></message>"
        + b"<message xmlns:a='urn:x' xmlns:b='urn:y' a:t='1' b:t='2' xml:lang='de'/>"
    )
    assert isinstance(events[0], StreamOpened)
    first, second = events[1:]
    assert isinstance(first, StanzaReceived) and isinstance(second, StanzaReceived)
    assert first.element.get("id") == "<>&\"'AB"
    assert first.element[0].text == "<!DOCTYPE &x; <?pi?>A&"
    assert second.element.get("{urn:x}t") == "1"
    assert second.element.get("{http://www.w3.org/XML/1998/namespace}lang") == "de"
    assert etree.tostring(second.element).startswith(b'<message xmlns="jabber:client"')


def test_trickled_bytes_are_buffered_compactly() -> None:
    """One byte per feed() must not cost an object per byte while a stanza is in flight."""
    parser = StreamParser(max_stanza_bytes=256 * 1024)
    parser.feed(STREAM + b"<message><body>")
    for _ in range(50_000):
        parser.feed(b"x")
    assert parser._parts is not None
    assert sys.getsizeof(parser._parts) < 2 * 50_000
    parser.feed(b"</body><x a='")
    for _ in range(50_000):
        parser.feed(b"y")
    assert parser._pieces is not None
    assert sys.getsizeof(parser._pieces) < 2 * 50_000
    (event,) = parser.feed(b"'/></message>")
    assert event.size == len(b"<message><body></body><x a=''/></message>") + 100_000
