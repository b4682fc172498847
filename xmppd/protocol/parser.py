"""Sans-IO XMPP XML stream parser: bytes in, stream events out.

Design (chosen by measurement, see ``bench/parser_bench.py``)
--------------------------------------------------------------
A byte-level guard (:mod:`xmppd.protocol.xmlguard`) tokenizes the stream, refuses what
RFC 6120 §11 forbids and cuts out each complete first-level element; lxml's *non-incremental*
parser then parses that one stanza as a small document of its own.  Nothing untrusted ever
reaches an incremental lxml parser, because lxml's push parser (``XMLPullParser`` and
``XMLParser.feed``) silently accepts a DOCTYPE with entities, unbound prefixes, rebinding
``xml``/``xmlns``, duplicate expanded attributes, Latin-1 or UTF-16 declared encodings and
XML 1.1 (all checked with lxml 6.1.3 / libxml2 2.14.6), whereas ``etree.fromstring`` raises
on every namespace error.

Before parsing, the stream's namespace declarations are written into the stanza's own start
tag (only those it uses), so every stanza is a self-contained root element: it serializes
as ``<message xmlns="jabber:client" ...>`` (a detached child of a stream root serializes with
``ns0:`` prefixes instead), it has no parent, and nothing accumulates per stream -- there is
no stream root holding children and no libxml2 parser context kept between stanzas.

Conditions (RFC 6120 §4.9.3), and why:

* ``restricted-xml``: DTD/DOCTYPE, comments, processing instructions (§11.1), entity
  references other than the five predefined ones; character references are allowed.
* ``unsupported-encoding``: bytes that are not UTF-8, a BOM, UTF-16/32, a declared encoding
  other than UTF-8 (§11.6).
* ``bad-format`` for XML 1.1: §11.8 defines XMPP over XML 1.0 only and names no condition;
  ``unsupported-version`` (§4.9.3.25) is about the XMPP ``version`` attribute of the stream
  header, and ``version='1.1'`` is well-formed under XML 1.0 5th edition, so neither
  ``unsupported-version`` nor ``not-well-formed`` fits; bad-format is the general "XML that
  cannot be processed".
* ``bad-format`` for non-whitespace character data directly inside the stream root: mixed
  content is well-formed XML, so ``not-well-formed`` would be wrong; §11.7 only lets
  whitespace sit between first-level elements.
* ``bad-namespace-prefix``: unbound prefixes, rebinding ``xml``/``xmlns``, binding a prefix to
  the reserved namespace names.
* ``invalid-namespace``: a root other than ``{http://etherx.jabber.org/streams}stream``, and
  namespace names that are not URIs (libxml2 checks them; this also refuses a ``}`` in a
  namespace name, which would make Clark notation ``{ns}name`` ambiguous).
* ``policy-violation``: a stanza over ``max_stanza_bytes`` (counted while it arrives, so a
  10 MiB stanza is refused after about ``max_stanza_bytes`` + one 64 KiB slice), deeper than
  ``max_depth`` (stream root = depth 1, stanza = depth 2) or with more than ``max_attributes``
  attributes on one element.
* ``not-well-formed``: everything else lxml or the guard finds malformed.

Measured with ``python bench/parser_bench.py`` (CPython 3.11.7, lxml 6.1.3, a shared 2-vCPU
VM whose speed drifts by up to 2x, so read the ratios): CPU per 179-byte
``<message><body>..</body></message>``, best of 40 interleaved rounds; idle RSS per parser
holding an open stream, 5,000 parsers in a fresh process.  Reference on the same run: bare
``etree.fromstring`` of that stanza, 3.6 us.

=====================================  ==========  ===========  ==========
candidate                              1 per feed  20 per feed  idle RSS
=====================================  ==========  ===========  ==========
(a) parser target + TreeBuilder         11.3 us     11.3 us     13.0 KiB
(b) guard + persistent XMLPullParser    10.4 us      8.5 us     16.0 KiB
(b) without the ns0: fix (deepcopy)      7.2 us      5.8 us     15.9 KiB
(c) guard + per-stanza parse (this)      9.4 us      9.5 us      0.8 KiB
(b) ``compact()`` after every feed      24.6 us                  5.1 KiB
=====================================  ==========  ===========  ==========

(a) accepts unbound prefixes, a rebound ``xml`` prefix, duplicate expanded attributes,
Latin-1 and XML 1.1; (b) accepts the same namespace errors plus ``}`` in a namespace name
(its push parser does not report namespace errors); (c) refuses all of them.  (b) is about
10% faster at 20 stanzas per feed, but fails those checks, holds 3.5x the idle memory, and its
push parser can sit on a complete stanza (seen with ``'>'`` inside an attribute value) until
more bytes arrive.

One parser for all streams: each stanza is parsed by one synchronous ``etree.fromstring``
call, so the streams of one thread can share a single lxml ``XMLParser`` (its libxml2 context
is reused and stays warm).  A parser per stream cost ~4 KiB per session (4.5 KiB idle RSS
instead of 0.8), and freeing it when idle cost a re-creation on nearly every stanza at 5,000
mostly-idle sessions: the benchmark's fixed-rate phase spent ~10% of its CPU there.

Known lxml limit (all candidates share it): libxml2 interns element and attribute names in a
per-thread dictionary that never shrinks, so a peer can grow the process by roughly 30 bytes
per never-before-seen name (measured: 300,000 unique names, +8.5 MiB; repeated names cost
nothing).  Per-session byte-rate limits bound how fast that can happen.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from lxml import etree

from xmppd.protocol.xmlguard import Refused, XmlGuard, attribute_names

__all__ = [
    "STREAMS_NS",
    "Event",
    "ParseError",
    "StanzaReceived",
    "StreamClosed",
    "StreamOpened",
    "StreamParser",
]

STREAMS_NS = "http://etherx.jabber.org/streams"
_STREAM_TAG = f"{{{STREAMS_NS}}}stream"


@dataclass(slots=True)
class StreamOpened:
    """The ``<stream:stream ...>`` header was read."""

    attrs: dict[str, str]
    default_ns: str | None
    tag: str
    prefix: str | None


@dataclass(slots=True)
class StanzaReceived:
    """One complete first-level child of the stream, as a parentless lxml element."""

    element: etree._Element
    size: int  # exact bytes on the wire


@dataclass(slots=True)
class StreamClosed:
    """``</stream:stream>`` was read."""


@dataclass(slots=True)
class ParseError:
    """The stream must be closed with this RFC 6120 §4.9.3 condition; the parser is dead."""

    condition: str
    text: str


Event = StreamOpened | StanzaReceived | StreamClosed | ParseError

_E = etree.ErrorTypes
_LXML_CONDITIONS = {
    _E.ERR_UNDECLARED_ENTITY: "restricted-xml",
    _E.WAR_UNDECLARED_ENTITY: "restricted-xml",
    _E.ERR_ENTITY_IS_EXTERNAL: "restricted-xml",
    _E.ERR_ENTITY_IS_PARAMETER: "restricted-xml",
    _E.NS_ERR_XML_NAMESPACE: "bad-namespace-prefix",
    _E.NS_ERR_UNDEFINED_NAMESPACE: "bad-namespace-prefix",
    _E.NS_ERR_QNAME: "bad-namespace-prefix",
    _E.NS_ERR_EMPTY: "bad-namespace-prefix",
    _E.NS_ERR_COLON: "bad-namespace-prefix",
    _E.WAR_NS_URI: "invalid-namespace",
    _E.ERR_INVALID_ENCODING: "unsupported-encoding",
    _E.ERR_UNSUPPORTED_ENCODING: "unsupported-encoding",
}


_per_thread = threading.local()


def _shared_parser() -> etree.XMLParser:
    """This thread's lxml parser, shared by every stream (see the module docstring)."""
    parser = getattr(_per_thread, "parser", None)
    if parser is None:
        parser = _per_thread.parser = _xml_parser()
    return parser


def _xml_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        collect_ids=False,
        encoding="utf-8",  # never sniff or honour a declared encoding
    )


def _xmlns(prefix: str | None, uri: str) -> bytes:
    """A namespace declaration attribute, escaped for double quotes."""
    value = uri.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    name = "xmlns" if prefix is None else "xmlns:" + prefix
    return f' {name}="{value}"'.encode()


class StreamParser(XmlGuard):
    """Feed it the bytes of one XML stream; get :data:`Event` objects back.

    ``max_stanza_bytes`` may be changed at any time (raised after authentication).
    """

    __slots__ = ("_out", "_dead", "_ns_default", "_ns_prefixed")

    def __init__(
        self,
        *,
        max_stanza_bytes: int = 16 * 1024,
        max_depth: int = 32,
        max_attributes: int = 64,
    ) -> None:
        super().__init__(max_stanza_bytes, max_depth, max_attributes)
        self._out: list[Event] = []
        self._dead = False
        self._ns_default = b""  # the stream's default namespace declaration, injected
        self._ns_prefixed: tuple[tuple[bytes, bytes, bytes], ...] = ()

    def feed(self, data: bytes) -> list[Event]:
        """Parse the next bytes (any chunking). After a ParseError this returns []."""
        if self._dead:
            return []
        out: list[Event] = []
        self._out = out
        try:
            self._guard_feed(data)
        except Refused as exc:
            self._dead = True
            out.append(ParseError(exc.condition, exc.text))
        self._out = []
        return out

    def reset(self) -> None:
        """Stream restart: the next bytes are a new stream header (XML declaration allowed)."""
        self._guard_reset()
        self._dead = False
        self._ns_default = b""
        self._ns_prefixed = ()

    # -- guard hooks --------------------------------------------------------------------------
    def _on_open(self, tag: bytes, qname: bytes, empty: bool) -> None:
        root = self._parse(tag if empty else tag + b"</" + qname + b">")
        if root.tag != _STREAM_TAG:
            raise Refused("invalid-namespace", f"the stream root must be {_STREAM_TAG}")
        nsmap = root.nsmap
        default = nsmap.get(None)
        self._ns_default = _xmlns(None, default) if default else b""
        self._ns_prefixed = tuple(
            (p.encode() + b":", _xmlns(p, uri), b"xmlns:" + p.encode())
            for p, uri in nsmap.items()
            if p is not None
        )
        self._out.append(StreamOpened(dict(root.attrib), default, root.tag, root.prefix))

    def _on_stanza(self, data: bytes, head: int, attrs: bytes) -> None:
        inject = self._ns_default
        if b"xmlns" in attrs:  # the stanza declares namespaces itself: inject only the rest
            declared = attribute_names(attrs)
            if b"xmlns" in declared:
                inject = b""
        else:
            declared = ()
        tidy = False
        for marker, decl, name in self._ns_prefixed:
            if marker in data and name not in declared:
                inject += decl
                tidy = True  # the marker may have been text: drop unused declarations
        try:
            element = etree.fromstring(
                data[:head] + inject + data[head:] if inject else data, _shared_parser()
            )
        except etree.XMLSyntaxError as exc:
            raise _refusal(exc) from None
        if tidy:
            etree.cleanup_namespaces(element)
        self._out.append(StanzaReceived(element, len(data)))

    def _on_close(self) -> None:
        self._out.append(StreamClosed())

    def _parse(self, data: bytes) -> etree._Element:
        try:
            return etree.fromstring(data, _shared_parser())
        except etree.XMLSyntaxError as exc:
            raise _refusal(exc) from None


def _refusal(exc: etree.XMLSyntaxError) -> Refused:
    condition = _LXML_CONDITIONS.get(exc.code, "not-well-formed")
    return Refused(condition, str(exc.msg).split(", line ")[0])
