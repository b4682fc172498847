"""Byte-level tokenizer that guards an XMPP stream before lxml sees any of it.

Theory of operation
-------------------
lxml's incremental parsers silently accept things RFC 6120 §11.1 forbids (DOCTYPE with
entity declarations, comments, processing instructions, declared non-UTF-8 encodings). So
no untrusted byte reaches a *streaming* lxml parser at all.  This guard cuts the stream into
the only token kinds XMPP needs -- tags, character data and CDATA sections -- and refuses
everything else:

* ``<!`` other than ``<![CDATA[`` (comments, DOCTYPE, markup declarations) -> restricted-xml
* ``<?`` other than the XML declaration at the very start of a stream      -> restricted-xml
* bytes that are not UTF-8, a BOM, UTF-16/32 signatures, encoding != UTF-8 -> unsupported-encoding
* character data directly inside the stream root that is not whitespace    -> bad-format
* stanzas larger than ``max_stanza_bytes`` (counted as bytes arrive, before the stanza is
  complete), deeper than ``max_depth`` or with more than ``max_attributes``  -> policy-violation

It tracks depth (stream root = 1, stanza = 2), so it knows the exact byte range of every
first-level child.  It calls three hooks that a subclass implements:

* ``_on_open(tag, qname, empty)``  -- the complete stream header start tag;
* ``_on_stanza(data, head, attrs)`` -- the exact bytes of one complete stanza, the offset just
  after its element name (where namespace declarations can be injected) and its raw attribute
  text;
* ``_on_close()``                  -- ``</stream:stream>``.

Two scanners produce the same boundaries.  The fast path (``_whole_stanza``) handles a stanza
that is complete in the current chunk with a handful of C-level ``find``/``count`` calls and
lets lxml confirm the guessed end; the exact path visits every tag, keeps state across chunks
and has the last word whenever the fast path declines or lxml disagrees.

The subclass hands each stanza to lxml's non-incremental parser, which does the full
well-formedness and namespace-well-formedness work (unlike the push parser, it raises on
unbound prefixes, rebinding ``xml``/``xmlns`` and invalid namespace URIs).  Entity references
inside stanzas are left to lxml too: with no DTD, anything but the five predefined entities is
an "undeclared entity" error, which the subclass maps to restricted-xml.

Every state survives arbitrary chunking, down to one byte per call, in linear time: tags that
span chunks are scanned quote-aware from where the last chunk stopped, CDATA sections keep only
two bytes of look-behind, and short undecided tokens (``<``, ``<![CDA``, an XML declaration)
are held back in a small tail.
"""

from __future__ import annotations

import codecs
import re

__all__ = ["Refused", "XmlGuard", "attribute_names"]

_WS = re.compile(rb"[ \t\r\n]*")
_NAME_RE = rb"[^ \t\r\n/>'\"=<&!?][^ \t\r\n/>'\"=<&]*"
# A complete start, end or empty-element tag; values may not contain '<' (XML 1.0 [10]).
_TAG = re.compile(
    rb"<(/?)("
    + _NAME_RE
    + rb")((?:[ \t\r\n]+"
    + _NAME_RE
    + rb"[ \t\r\n]*=[ \t\r\n]*(?:'[^'<]*'|\"[^\"<]*\"))*)[ \t\r\n]*(/?)>"
)
_ATTR_NAME = re.compile(
    rb"[ \t\r\n]+(" + _NAME_RE + rb")[ \t\r\n]*=[ \t\r\n]*(?:'[^']*'|\"[^\"]*\")"
)
_TAG_STOP = re.compile(rb"[>'\"]")
_NAME = re.compile(rb"[^ \t\r\n/>]*")
# Rest of a start tag after '<': up to the first '>' outside quotes (unrolled: no backtracking).
_TAG_BODY = re.compile(rb"[^>'\"]*(?:(?:'[^']*'|\"[^\"]*\")[^>'\"]*)*>")
_END_TAG = re.compile(rb"</(" + _NAME_RE + rb")[ \t\r\n]*>")
_CDATA_OPEN = b"<![CDATA["
_DECL_MAX = 256
_XML_DECL = re.compile(
    rb"<\?xml[ \t\r\n]+version[ \t\r\n]*=[ \t\r\n]*(?:'([^'<>?]*)'|\"([^\"<>?]*)\")"
    rb"(?:[ \t\r\n]+encoding[ \t\r\n]*=[ \t\r\n]*(?:'([^'<>?]*)'|\"([^\"<>?]*)\"))?"
    rb"(?:[ \t\r\n]+standalone[ \t\r\n]*=[ \t\r\n]*(?:'(?:yes|no)'|\"(?:yes|no)\"))?"
    rb"[ \t\r\n]*\?>"
)
_REF = re.compile(rb"&([^;&<> \t\r\n]*)(;?)")
_PREDEFINED = frozenset((b"amp", b"lt", b"gt", b"apos", b"quot"))
_REF_MAX = 64
_SLICE = 64 * 1024  # big feeds are scanned in slices so the size limit bites early
_utf8 = codecs.utf_8_decode

# scanner states
_PROLOG, _MAIN, _TAGGING, _CDATA = range(4)


class Refused(Exception):
    """The peer sent something we must answer with a stream error."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(condition, text)
        self.condition = condition
        self.text = text


def attribute_names(attrs: bytes) -> list[bytes]:
    """Attribute names of the raw attribute text captured from a start tag."""
    return _ATTR_NAME.findall(attrs)


class XmlGuard:
    """Tokenizing guard; subclasses implement ``_on_open``, ``_on_stanza`` and ``_on_close``."""

    __slots__ = (
        "max_stanza_bytes",
        "max_depth",
        "max_attributes",
        "_st",
        "_depth",
        "_opened",
        "_tail",
        "_u8",
        "_pieces",
        "_quote",
        "_parts",
        "_flushed",
        "_head",
        "_names",
        "_root",
    )

    def __init__(self, max_stanza_bytes: int, max_depth: int, max_attributes: int) -> None:
        self.max_stanza_bytes = max_stanza_bytes
        self.max_depth = max_depth
        self.max_attributes = max_attributes
        self._guard_reset()

    def _guard_reset(self) -> None:
        self._st = _PROLOG
        self._depth = 0  # 0 outside the root, 1 between stanzas, >= 2 inside a stanza
        self._opened = False  # the root start tag has been seen
        self._tail = b""  # undecided bytes held back for the next chunk
        self._u8 = b""  # incomplete trailing UTF-8 sequence
        self._pieces: bytearray | None = None  # a tag spanning chunks
        self._quote = 0  # quote byte open inside a spanning tag, 0 if none
        # Flushed bytes of the stanza in flight. bytearrays, not lists of chunks: a peer
        # trickling one byte per packet must not cost ~40 bytes of object overhead per byte.
        self._parts: bytearray | None = None
        self._flushed = 0
        self._head: tuple[int, bytes] = (0, b"")  # stanza start tag: name end, attributes
        # open elements of the stanza in flight, so a mismatched end tag is refused at once
        # instead of leaving the stanza open forever
        self._names: list[bytes] = []
        self._root = b""  # qname of the stream root, to match its end tag

    # -- hooks ------------------------------------------------------------------------------
    def _on_open(self, tag: bytes, qname: bytes, empty: bool) -> None:
        raise NotImplementedError

    def _on_stanza(self, data: bytes, head: int, attrs: bytes) -> None:
        raise NotImplementedError

    def _on_close(self) -> None:
        raise NotImplementedError

    # -- input ------------------------------------------------------------------------------
    def _guard_feed(self, data: bytes) -> None:
        """Validate UTF-8, then scan; raises Refused."""
        if len(data) > _SLICE:
            for i in range(0, len(data), _SLICE):
                self._guard_feed(data[i : i + _SLICE])
            return
        if self._u8 or not data.isascii():
            data = self._u8 + data
            try:
                _, used = _utf8(data, "strict", False)
            except UnicodeDecodeError as exc:
                self._scan(data[: exc.start])
                raise Refused("unsupported-encoding", "the stream is not valid UTF-8") from None
            self._u8 = data[used:]
            data = data[:used]
        if data:
            self._scan(data)

    def _idle(self) -> bool:
        """Between stanzas (or outside the root) with nothing held back."""
        return self._depth <= 1 and self._st == _MAIN and not self._tail and not self._u8

    # -- the scanner ------------------------------------------------------------------------
    def _scan(self, data: bytes) -> None:  # noqa: C901 - one hot loop, kept flat for speed
        if self._tail:
            data = self._tail + data
            self._tail = b""
        st = self._st
        if st == _TAGGING:
            pieces = self._pieces
            assert pieces is not None
            pieces += data
            if self._scan_tag(data, 0) < 0:
                self._check_pending(self._flushed + len(pieces))
                return
            data = bytes(pieces)
            self._pieces = None
        n = len(data)
        p = 0
        cut = n
        if st == _PROLOG:
            p = self._prolog(data)
            if p < 0:
                self._tail = data
                return
        elif st == _CDATA:
            i = data.find(b"]]>")
            if i < 0:
                self._stash(data, 0, max(0, n - 2))
                return
            p = i + 3
        st = _MAIN
        depth = self._depth
        s0 = 0  # start of the stanza bytes in data not yet flushed to self._parts
        body_match = _TAG_BODY.match
        while p < n:
            if depth >= 2:
                p = data.find(b"<", p)
                if p < 0:
                    p = n
                    break
            elif data[p] != 60:  # 60 is '<'
                p = _WS.match(data, p).end()
                if p == n:
                    break
                if data[p] != 60 and self._text(data, p, depth):
                    cut = p
                    break
            if p + 1 == n:
                cut = p
                break
            c = data[p + 1]
            if c == 47:  # '/': end tag
                e = data.find(b">", p)
                if e < 0:
                    cut = p
                    break
                e += 1
                if depth >= 2:
                    if data[p + 2 : e - 1].rstrip(b" \t\r\n") != self._names.pop():
                        raise Refused("not-well-formed", "mismatched end tag")
                    depth -= 1
                    if depth == 1:
                        self._emit(data, s0, e)
                else:
                    depth = self._end_root(data, p, e, depth)
                p = e
                continue
            if c == 33 or c == 63:  # '!' or '?'
                if not data.startswith(_CDATA_OPEN, p):
                    if n - p < 9 and _CDATA_OPEN.startswith(data[p:]):
                        cut = p
                        break
                    self._refuse_markup(c)
                if depth < 2:
                    self._stray_text(depth)
                i = data.find(b"]]>", p + 9)
                if i < 0:
                    st = _CDATA
                    cut = max(p + 9, n - 2)
                    break
                p = i + 3
                continue
            if depth == 1:
                e = self._whole_stanza(data, p)
                if e:
                    p = e
                    continue
            m = body_match(data, p + 1)
            if m is None:  # the chunk ends inside this tag
                self._quote = 0
                self._scan_tag(data, p + 1)
                st = _TAGGING
                cut = p
                break
            e = m.end()
            if data.count(b"=", p, e) > self.max_attributes:
                self._check_attributes(data[p:e])
            if depth >= 2:
                if data[e - 2] != 47:  # not '/>'
                    depth += 1
                    if depth > self.max_depth:
                        raise Refused("policy-violation", "stanza nested too deeply")
                    name_end = _NAME.match(data, p + 1).end()  # type: ignore[union-attr]
                    self._names.append(data[p + 1 : name_end])
            elif depth == 1:
                s0 = p
                if self._start_stanza(data, p, e):
                    depth = 2
            else:
                depth = self._open(data, p, e)
            p = e
        self._depth = depth
        self._st = st
        if st == _TAGGING:
            self._pieces = bytearray(data[cut:])
        if depth >= 2:
            self._stash(data, s0, cut)
        elif cut < n:
            if st != _TAGGING:
                self._tail = data[cut:]
            self._check_pending(n - cut)

    def _whole_stanza(self, data: bytes, p: int) -> int:
        """Fast path for a stanza that is complete in data[p:]: returns its end, or 0.

        Instead of visiting every tag, take the first ``</name>`` after the start tag (or the
        start tag itself if it ends in '/>') as the candidate end and let lxml parse that
        range as a document.  If lxml accepts it, the range is one complete element starting
        at the stanza's '<', which can only be the stanza itself -- so a wrong guess cannot
        produce a wrong result, only an error.  On any error, and whenever a cheap check
        cannot rule out something the guard must refuse ('<!', '<?', nesting or attribute
        limits), this returns 0 and the exact tag-by-tag scanner re-reads the stanza and has
        the last word.
        """
        head = _NAME.match(data, p + 1).end()  # type: ignore[union-attr]
        gt = data.find(b">", head)
        if gt < 0:
            return 0
        attrs = data[head:gt]
        if b"xmlns" in attrs:  # namespace injection depends on the exact attributes
            m = _TAG_BODY.match(data, p + 1)
            if m is None:
                return 0
            gt = m.end() - 1
            attrs = data[head:gt]
        if data[gt - 1] == 47:  # '<presence/>'
            e = gt + 1
            stanza = data[p:e]
        else:
            close = b"</" + data[p + 1 : head] + b">"
            e = data.find(close, gt)
            if e < 0:
                return 0
            e += len(close)
            stanza = data[p:e]
            # fewer '<' than max_depth bounds the nesting; comments and PIs parse fine in
            # lxml, so they must be looked for here
            if stanza.count(b"<") >= self.max_depth or b"<!" in stanza or b"<?" in stanza:
                return 0
        if e - p > self.max_stanza_bytes or stanza.count(b"=") > self.max_attributes:
            return 0
        try:
            self._on_stanza(stanza, head - p, attrs)
        except Refused:
            return 0
        return e

    def _start_stanza(self, data: bytes, p: int, e: int) -> bool:
        """A first-level start tag at data[p:e]. Returns True if the stanza stays open."""
        self._parts = None
        self._flushed = 0
        head = _NAME.match(data, p + 1).end()  # type: ignore[union-attr]
        self._head = (head - p, data[head : e - 1])
        self._names = [data[p + 1 : head]]
        if data[e - 2] == 47:  # '<presence/>' is a whole stanza
            self._emit(data, p, e)
            return False
        if self.max_depth < 2:
            raise Refused("policy-violation", "stanza nested too deeply")
        return True

    def _end_root(self, data: bytes, p: int, e: int, depth: int) -> int:
        m = _END_TAG.fullmatch(data, p, e)
        if m is None:
            raise Refused("not-well-formed", "malformed end tag")
        if depth != 1:
            raise Refused("not-well-formed", "end tag outside the stream root")
        if m[1] != self._root:
            raise Refused("not-well-formed", "end tag does not match the stream root")
        self._depth = 0
        self._on_close()
        return 0

    def _refuse_markup(self, c: int) -> None:
        if c == 63:
            raise Refused("restricted-xml", "processing instructions are not allowed")
        raise Refused("restricted-xml", "comments, DTDs and markup declarations are not allowed")

    def _emit(self, data: bytes, s0: int, e: int) -> None:
        """A stanza ended at data[e]; its bytes are the flushed parts plus data[s0:e]."""
        size = self._flushed + e - s0
        if size > self.max_stanza_bytes:
            raise Refused("policy-violation", "stanza too large")
        parts = self._parts
        if parts:
            parts += data[s0:e]
            stanza = bytes(parts)
        else:
            stanza = data[s0:e]
        self._parts = None
        self._flushed = 0
        head, attrs = self._head
        self._on_stanza(stanza, head, attrs)

    def _stash(self, data: bytes, s0: int, cut: int) -> None:
        """Keep the in-flight stanza bytes data[s0:cut]; data[cut:] waits for more input."""
        if cut > s0:
            if self._parts is None:
                self._parts = bytearray()
            self._parts += data[s0:cut]
            self._flushed += cut - s0
        if self._st != _TAGGING and cut < len(data):
            self._tail = data[cut:]
        pieces = self._pieces
        self._check_pending(self._flushed + len(self._tail) + (len(pieces) if pieces else 0))

    def _check_pending(self, size: int) -> None:
        if size > self.max_stanza_bytes:
            raise Refused("policy-violation", "stanza too large")

    def _check_attributes(self, attrs: bytes) -> None:
        if len(_ATTR_NAME.findall(attrs)) > self.max_attributes:
            raise Refused("policy-violation", "too many attributes")

    def _scan_tag(self, data: bytes, p: int) -> int:
        """Find the '>' closing a tag, skipping quoted values; -1 if the chunk ends first."""
        q = self._quote
        while True:
            if q:
                i = data.find(b"'" if q == 39 else b'"', p)
                if i < 0:
                    self._quote = q
                    return -1
                p = i + 1
                q = 0
            else:
                m = _TAG_STOP.search(data, p)
                if m is None:
                    self._quote = 0
                    return -1
                q = data[m.start()]
                p = m.end()
                if q == 62:  # '>'
                    self._quote = 0
                    return p

    def _open(self, data: bytes, p: int, e: int) -> int:
        """The stream root's start tag at data[p:e]. Returns the new depth."""
        if self._opened:
            raise Refused("not-well-formed", "content after the stream was closed")
        if e - p > self.max_stanza_bytes:
            raise Refused("policy-violation", "stream header too large")
        m = _TAG.fullmatch(data, p, e)
        if m is None:
            raise Refused("not-well-formed", "malformed stream header")
        self._opened = True
        self._root = m[2]
        self._depth = 1
        empty = bool(m[4])
        self._on_open(data[p:e], m[2], empty)
        if empty:
            self._depth = 0
            self._on_close()
            return 0
        return 1

    def _text(self, data: bytes, p: int, depth: int) -> bool:
        """Non-whitespace outside stanzas. Returns True if it must wait for more bytes."""
        if data[p] == 38:  # '&': a disallowed entity reference outranks stray text
            m = _REF.match(data, p)
            assert m is not None
            name = m[1]
            if not m[2]:
                if m.end() == len(data) and len(name) < _REF_MAX:
                    return True
            elif name and name[0] != 35 and name not in _PREDEFINED:  # 35: '#', a char ref
                raise Refused("restricted-xml", "entity references are not allowed")
        self._stray_text(depth)
        return False

    def _stray_text(self, depth: int) -> None:
        if depth == 1:
            raise Refused("bad-format", "character data between stanzas")
        raise Refused("not-well-formed", "character data outside the stream root")

    def _prolog(self, data: bytes) -> int:
        """Start of a stream: optional XML declaration. Returns where content starts, or -1."""
        if b"\x00" in data[:4]:
            raise Refused("unsupported-encoding", "UTF-16/UTF-32 streams are not supported")
        if data.startswith(b"\xef\xbb\xbf"):
            raise Refused("unsupported-encoding", "a byte order mark is not allowed")
        if len(data) < 6 and b"<?xml".startswith(data[:5]):
            return -1
        if not (data.startswith(b"<?xml") and data[5] in b" \t\r\n"):
            return 0
        end = data.find(b"?>", 0, _DECL_MAX)
        if end < 0:
            if len(data) < _DECL_MAX:
                return -1
            raise Refused("not-well-formed", "XML declaration too long")
        m = _XML_DECL.fullmatch(data, 0, end + 2)
        if m is None:
            raise Refused("not-well-formed", "malformed XML declaration")
        version = m[1] if m[1] is not None else m[2]
        if version != b"1.0":
            if re.fullmatch(rb"1\.[0-9]+", version):
                raise Refused("bad-format", "only XML 1.0 is supported (RFC 6120 section 11.8)")
            raise Refused("not-well-formed", "bad XML version")
        encoding = m[3] if m[3] is not None else m[4]
        if encoding is not None and encoding.lower() != b"utf-8":
            raise Refused("unsupported-encoding", "only UTF-8 is supported")
        return end + 2
