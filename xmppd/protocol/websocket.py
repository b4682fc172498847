"""RFC 7395 XMPP over WebSocket, sans-IO: framing in both directions and the handshake checks.

The c2s `ServerStream` speaks RFC 6120 framing (`<stream:stream>` ... `</stream:stream>`). Over
a WebSocket only the framing differs (RFC 7395 §3.3): every message is one complete XML element,
the stream opens and closes with `<open/>` and `<close/>` in the framing namespace, and every
message declares its own namespaces. So the stream machine stays as it is and two adapters
translate at its edges:

* inbound, `FramedParser` replaces the stream's parser: each `feed()` is one WebSocket message.
  It sits inside a synthetic `<stream:stream>` root, so every message is parsed as a
  first-level element by the same guard (RFC 6120 §11 restrictions, size/depth/attribute
  limits) and lxml; `<open/>` becomes the stream header event, `<close/>` the closing tag.
* outbound, `messages()` cuts what the stream writes into one element per message and rewrites
  the header into `<open/>`, `</stream:stream>` into `<close/>`, and declares the `stream:`
  prefix on `<stream:error>`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Collection
from dataclasses import dataclass, field

from . import namespaces as ns
from .parser import (
    ParseError,
    StanzaReceived,
    StreamClosed,
    StreamOpened,
    StreamParser,
)

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
SUBPROTOCOL = "xmpp"
_OPEN = f"{{{FRAMING}}}open"
_CLOSE = f"{{{FRAMING}}}close"
_STREAM_TAG = f"{{{ns.STREAMS}}}stream"
_ROOT = f"<stream:stream xmlns='{ns.CLIENT}' xmlns:stream='{ns.STREAMS}'>".encode()
CLOSE_MESSAGE = f"<close xmlns='{FRAMING}'/>".encode()
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


class FramedParser(StreamParser):
    """A `StreamParser` for RFC 7395: one `feed()` per WebSocket message (§3.3.3)."""

    __slots__ = ("_opened",)

    def __init__(self, **limits: int) -> None:
        super().__init__(**limits)
        self._opened = False
        self._enter_root()

    def _enter_root(self) -> None:
        # Messages are parsed as children of this synthetic root; its own event is dropped.
        super().feed(_ROOT)
        self._opened = False

    def reset(self) -> None:
        super().reset()
        self._enter_root()

    def feed(self, data: bytes) -> list:  # type: ignore[override]
        if self._dead:
            return []
        events = super().feed(data)
        if self._dead:
            return events  # a ParseError from the guard or lxml
        if not events and self._idle():
            return []  # whitespace only: nothing to do
        if len(events) != 1 or not self._idle() or not isinstance(events[0], StanzaReceived):
            return self._refuse(
                "not-well-formed", "a WebSocket message must hold exactly one complete element"
            )
        return [self._translate(events[0])]

    def _translate(self, event: StanzaReceived) -> object:
        el = event.element
        tag = el.tag
        if tag == _OPEN:
            if self._opened:
                return self._refuse("not-well-formed", "the stream is already open")[0]
            self._opened = True
            return StreamOpened(dict(el.attrib), ns.CLIENT, _STREAM_TAG, "stream")
        if tag == _CLOSE:
            return StreamClosed()
        if tag.endswith(("}open", "}close")) or tag in ("open", "close"):
            return self._refuse("invalid-namespace", f"<open/> and <close/> belong to {FRAMING}")[0]
        if not self._opened:
            return self._refuse("not-well-formed", "the stream must start with <open/>")[0]
        return event

    def _refuse(self, condition: str, text: str) -> list:
        self._dead = True
        return [ParseError(condition, text)]


# ---- outbound ---------------------------------------------------------------------------------

_XMLNS = re.compile(rb"\s+xmlns(?::stream)?='[^']*'")


def messages(data: bytes) -> list[bytes]:
    """Our stream's output -> WebSocket messages, one element each (RFC 7395 §3.3.3).

    `data` is what the stream or `etree.tostring` wrote, never peer input: every '<' starts a
    tag and every '>' ends one (lxml and the stream escape both in text and attributes), so
    counting start and end tags is enough to find the element boundaries.
    """
    out: list[bytes] = []
    depth = 0
    start = p = 0
    find = data.find
    while True:
        i = find(b"<", p)
        if i < 0:
            return out
        e = find(b">", i) + 1
        c = data[i + 1]
        p = e
        if c == 63:  # '<?xml ...?>' has no place in a message
            continue
        if depth == 0:
            if data.startswith(b"<stream:stream", i):
                out.append(_open_message(data[i:e]))
                continue
            if data.startswith(b"</stream:stream>", i):
                out.append(CLOSE_MESSAGE)
                continue
            start = i
        if c == 47:  # '</'
            depth -= 1
        elif data[e - 2] != 47:  # not '/>'
            depth += 1
        if depth == 0:
            out.append(_self_contained(data[start:e]))


def _open_message(header: bytes) -> bytes:
    """Our `<stream:stream ...>` header as `<open/>` (RFC 7395 §3.4): same attributes."""
    attrs = _XMLNS.sub(b"", header[len(b"<stream:stream") : -1])
    return f"<open xmlns='{FRAMING}'".encode() + attrs + b"/>"


def _self_contained(element: bytes) -> bytes:
    """Declare the `stream:` prefix where the element relies on the stream root for it."""
    if element.startswith(b"<stream:"):
        head = element.find(b">")
        if b"xmlns:stream=" not in element[:head]:
            name_end = len(b"<stream:") + re.match(rb"[^\s/>]*", element[8:]).end()  # type: ignore[union-attr]
            decl = f" xmlns:stream='{ns.STREAMS}'".encode()
            return element[:name_end] + decl + element[name_end:]
    return element


# ---- the opening handshake (RFC 6455 §4.2, RFC 7395 §3.3.1) ----------------------------------


@dataclass(slots=True)
class Refusal:
    """Answer the upgrade request with this HTTP status and text."""

    status: int
    text: str
    headers: list[tuple[str, str]] = field(default_factory=list)


def accept_key(key: str) -> str:
    digest = hashlib.sha1(key.encode() + _WS_GUID).digest()
    return base64.b64encode(digest).decode()


def check_upgrade(method: str, headers: dict[str, str]) -> Refusal | list[tuple[str, str]]:
    """Check an upgrade request; returns the 101 response headers or why not.

    `headers` has lowercase names. The Origin is checked by the caller (`origin_allowed`),
    against origins it knows from its configuration."""
    if method != "GET":
        return Refusal(405, "a WebSocket handshake is a GET", [("Allow", "GET")])
    if "websocket" not in _tokens(headers.get("upgrade", "")):
        return Refusal(426, "this endpoint speaks XMPP over WebSocket only", _UPGRADE_HINT)
    if "upgrade" not in _tokens(headers.get("connection", "")):
        return Refusal(400, "Connection: Upgrade is missing")
    if headers.get("sec-websocket-version", "").strip() != "13":
        return Refusal(426, "WebSocket version 13 is required", [("Sec-WebSocket-Version", "13")])
    key = headers.get("sec-websocket-key", "").strip()
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        valid_key = False
    if not valid_key:
        return Refusal(400, "Sec-WebSocket-Key is not a base64 16-byte nonce")
    if SUBPROTOCOL not in _tokens(headers.get("sec-websocket-protocol", ""), lower=False):
        return Refusal(400, "the 'xmpp' WebSocket subprotocol (RFC 7395) is required")
    return [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
        ("Sec-WebSocket-Protocol", SUBPROTOCOL),
    ]


_UPGRADE_HINT = [("Upgrade", "websocket"), ("Connection", "Upgrade")]


_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}
_ORIGIN = re.compile(r"([a-z][a-z0-9+.-]*)://(\[[0-9a-f:.]+\]|[^/:@\[\]]+)(?::([0-9]{1,5}))?/?")


def normalize_origin(origin: str) -> str | None:
    """`scheme://host[:port]` lowercased, default port dropped; None if it is not an origin
    (RFC 6454 §6.1 serialization; `null` and paths are not)."""
    match = _ORIGIN.fullmatch(origin.strip().lower())
    if match is None:
        return None
    scheme, host, port = match.groups()
    if port is None or _DEFAULT_PORTS.get(scheme) == port.lstrip("0"):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{int(port)}"


def origin_allowed(origin: str, allowed: Collection[str]) -> bool:
    """`allowed` holds normalized origins (`normalize_origin`) and maybe "*". The server's own
    origins must be among them: never derive them from the request (its Host header is the
    attacker's under DNS rebinding)."""
    if "*" in allowed:
        return True
    normalized = normalize_origin(origin)
    return normalized is not None and normalized in allowed


def _tokens(value: str, *, lower: bool = True) -> set[str]:
    return {t.strip().lower() if lower else t.strip() for t in value.split(",") if t.strip()}
