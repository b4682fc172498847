"""BOSH (XEP-0124) with XMPP (XEP-0206), sans-IO: request bodies in, response bodies out.

A BOSH session carries the same c2s stream as a WebSocket, so it uses the same RFC 7395 framing
adapters (protocol/websocket.py): each child of a request `<body/>` is one framed message for
the session's `FramedParser`; session creation and `xmpp:restart` become `<open/>`, a terminate
request `<close/>`. What the stream writes is cut into elements by `websocket.messages()`:
`<open/>` gives the `authid`, `<close/>` ends the session with `type='terminate'`, a
`<stream:error/>` with `condition='remote-stream-error'` (XEP-0206 §7), the rest is payload.

`RidWindow` keeps the request-id rules of XEP-0124 §14: requests are processed in rid order,
a repeated rid gets the same response again (also while the first copy is still held: §14.3),
anything outside the window ends the session.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from . import namespaces as ns
from .parser import StanzaReceived, StreamParser
from .stanza import Element
from .websocket import CLOSE_MESSAGE, FRAMING, messages

BOSH = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"
VERSION = "1.11"
_BODY = f"{{{BOSH}}}body"
XML_LANG = f"{{{ns.XML}}}lang"
RESTART = f"{{{XBOSH}}}restart"
XMPP_VERSION = f"{{{XBOSH}}}version"
_ROOT = f"<stream:stream xmlns='{ns.CLIENT}' xmlns:stream='{ns.STREAMS}'>".encode()
_ID = re.compile(rb"\sid='([^']*)'")


class BoshError(Exception):
    """Ends the session with a terminal binding condition (XEP-0124 §17.2)."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(condition, text)
        self.condition = condition
        self.text = text


def parse_body(data: bytes, max_bytes: int, max_depth: int) -> Element:
    """One `<body/>` with the guard and lxml of the stream parser (RFC 6120 §11 rules)."""
    parser = StreamParser(max_stanza_bytes=max_bytes, max_depth=max_depth + 1)
    parser.feed(_ROOT)
    events = parser.feed(data)
    if len(events) == 1 and isinstance(events[0], StanzaReceived) and parser._idle():
        body = events[0].element
        if body.tag == _BODY:
            return body
        raise BoshError("bad-request", f"the root must be <body xmlns='{BOSH}'/>")
    problem = getattr(events[-1], "text", "") if events else "incomplete XML"
    raise BoshError("bad-request", f"the request is not one <body/> element: {problem}")


def integer(body: Element, name: str, default: int | None = None) -> int:
    value = body.get(name)
    if value is None:
        if default is None:
            raise BoshError("bad-request", f"the '{name}' attribute is required")
        return default
    if not value.isdigit() or len(value) > 16:
        raise BoshError("bad-request", f"'{name}' must be a non-negative integer")
    return int(value)


def payload(body: Element) -> list[bytes]:
    """The children of a request body, each as one framed message."""
    return [etree.tostring(child) for child in body if isinstance(child.tag, str)]


def open_message(to: str, lang: str) -> bytes:
    """The `<open/>` a session creation or restart stands for (XEP-0206 §3, §5)."""
    return (
        f"<open xmlns='{FRAMING}' to='{_attr(to)}' version='1.0' xml:lang='{_attr(lang)}'/>"
    ).encode()


CLOSE = CLOSE_MESSAGE


@dataclass(slots=True)
class Output:
    payload: list[bytes]
    terminate: bool = False
    condition: str = ""
    authid: str | None = None


def split_output(data: list[bytes]) -> Output:
    """What the session wrote -> body payload, and whether (and why) the stream ended."""
    out = Output([])
    for chunk in data:
        for message in messages(chunk):
            if message.startswith(b"<open "):
                found = _ID.search(message)
                out.authid = found.group(1).decode() if found else None
            elif message == CLOSE_MESSAGE:
                out.terminate = True
            else:
                if message.startswith(b"<stream:error"):
                    out.condition = "remote-stream-error"
                out.payload.append(message)
    return out


def response(
    payload: list[bytes],
    *,
    attrs: dict[str, str] | None = None,
    terminate: bool = False,
    condition: str = "",
) -> bytes:
    """A response `<body/>`; the stream namespace is declared for features and errors."""
    head = [f"<body xmlns='{BOSH}' xmlns:xmpp='{XBOSH}' xmlns:stream='{ns.STREAMS}'"]
    if terminate:
        head.append(" type='terminate'")
        if condition:
            head.append(f" condition='{_attr(condition)}'")
    for name, value in (attrs or {}).items():
        head.append(f" {name}='{_attr(value)}'")
    if not payload:
        return ("".join(head) + "/>").encode()
    return ("".join(head) + ">").encode() + b"".join(payload) + b"</body>"


def error_response(error: BoshError) -> bytes:
    return response([], terminate=True, condition=error.condition)


class RidWindow:
    """XEP-0124 §14: in-order processing, retransmission, and the window of open requests.

    A rid is "pending" from `received()` until `answered()` or `failed()`: a copy of it that
    arrives meanwhile is a retransmission (§14.3: a proxy or browser gave up on the first one
    before `wait`) and gets the same answer, not a second processing.
    """

    __slots__ = ("last", "size", "_answers", "_pending")

    def __init__(self, first_rid: int, size: int) -> None:
        self.last = first_rid  # highest rid processed
        self.size = size  # requests the client may have open at once
        self._answers: dict[int, bytes] = {}
        self._pending: set[int] = set()

    def classify(self, rid: int) -> str:
        """ "next", "later" (wait for the ones before it), "repeat" (answer again), or
        "pending" (a retransmission: wait for the first copy's answer)."""
        if rid in self._pending:
            return "pending"
        if rid <= self.last:
            if rid in self._answers:
                return "repeat"
            raise BoshError("item-not-found", f"rid {rid} is no longer available")
        if rid > self.last + self.size:
            raise BoshError("item-not-found", f"rid {rid} is outside the window")
        return "next" if rid == self.last + 1 else "later"

    def received(self, rid: int) -> None:
        self._pending.add(rid)

    def processed(self, rid: int) -> None:
        self.last = rid

    def answered(self, rid: int, body: bytes) -> None:
        self._pending.discard(rid)
        self._answers[rid] = body
        for old in [r for r in self._answers if r <= self.last - self.size]:
            del self._answers[old]

    def failed(self, rid: int) -> None:
        """No answer will come (the request was refused): copies get item-not-found."""
        self._pending.discard(rid)

    def answer(self, rid: int) -> bytes | None:
        return self._answers.get(rid)


def _attr(value: str) -> str:
    return (
        value.replace("&", "&amp;").replace("'", "&apos;").replace("<", "&lt;").replace(">", "&gt;")
    )
