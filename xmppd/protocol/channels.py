"""Phoenix channels, V2 JSON wire format, sans-IO: frames in, events and frames out.

A frame is a JSON array `[join_ref, ref, topic, event, payload]` (Phoenix's V2 serializer, the
one `phoenix.js` speaks with `vsn=2.0.0`). The client joins a topic with `phx_join` (its `ref`
becomes the channel's `join_ref`), pushes events on it, leaves with `phx_leave`, and sends
`heartbeat` on the `phoenix` topic. The server answers every push carrying a `ref` with
`phx_reply` `{"status": "ok"|"error", "response": {...}}`, pushes its own events with
`ref = null`, ends a channel with `phx_close` and reports a failed one with `phx_error`.

`ChannelProtocol` keeps which topics are joined under which join_ref, answers heartbeats, and
turns the rest into `Join`, `Leave` and `Push` events for the application; what the server
says goes out through `frames_to_send()`. Nothing here does I/O. Our one extension:
`refresh_token` on the `phoenix` topic (a new host-app token) becomes a `Refresh` event.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

PHOENIX = "phoenix"  # the socket's own topic (heartbeats)
JOIN, LEAVE, REPLY = "phx_join", "phx_leave", "phx_reply"
ERROR, CLOSE, HEARTBEAT = "phx_error", "phx_close", "heartbeat"
REFRESH = "refresh_token"  # on the phoenix topic: a new host-app token for the open socket
_RESERVED = frozenset({JOIN, LEAVE, REPLY, ERROR, CLOSE})
MAX_TOPIC = 3072  # a room JID (3 x 1023 bytes) plus its kind
MAX_DEPTH = 32  # arrays/objects within arrays/objects; the frame itself is level 1
MAX_CONTAINERS = 4096  # arrays and objects in one frame (keeps the depth check cheap)


class FrameError(ValueError):
    """Not a V2 frame: the transport closes the socket (Phoenix does the same)."""


@dataclass(slots=True, frozen=True)
class Frame:
    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: dict[str, Any]


@dataclass(slots=True, frozen=True)
class Join:
    topic: str
    join_ref: str
    payload: dict[str, Any]


@dataclass(slots=True, frozen=True)
class Leave:
    topic: str
    join_ref: str
    ref: str | None  # None: the server ends it (a duplicate join replaced it)


@dataclass(slots=True, frozen=True)
class Push:
    topic: str
    event: str
    ref: str | None
    join_ref: str
    payload: dict[str, Any]


@dataclass(slots=True, frozen=True)
class Refresh:
    ref: str | None
    payload: dict[str, Any]


Event = Join | Leave | Push | Refresh


def decode(text: str | bytes) -> Frame:
    """Parse and validate one V2 frame; FrameError says what is wrong."""
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError:
            raise FrameError("not UTF-8") from None
    check_nesting(text)
    check_characters(text)
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: check_nesting stops it
        raise FrameError(f"not JSON: {exc}") from None
    if not isinstance(data, list) or len(data) != 5:
        raise FrameError("a frame is [join_ref, ref, topic, event, payload]")
    join_ref, ref, topic, event, payload = data
    for name, value in (("join_ref", join_ref), ("ref", ref)):
        if value is not None and not isinstance(value, str):
            raise FrameError(f"{name} must be a string or null")
        if value is not None and len(value) > 64:
            raise FrameError(f"{name} is longer than 64 characters")
    if not isinstance(topic, str) or not topic or len(topic) > MAX_TOPIC:
        raise FrameError("topic must be a non-empty string")
    if not isinstance(event, str) or not event or len(event) > 256:
        raise FrameError("event must be a non-empty string")
    if not isinstance(payload, dict):
        raise FrameError("payload must be a JSON object")
    return Frame(join_ref, ref, topic, event, payload)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 §6)")


_BRACES = str.maketrans("{}", "[]")
_NOT_BRACKET = re.compile(r"[^\[\]]+")


def check_nesting(text: str) -> None:
    """FrameError past MAX_DEPTH levels of arrays/objects or MAX_CONTAINERS of them.

    `json` recurses once per level, and a few hundred levels raise RecursionError, so this runs
    first, at about the cost of `json.loads` itself: escapes out, then (with no escaped quote
    left) every other piece between quotes is a string; brackets outside strings are counted,
    and only frames with more than MAX_DEPTH of them are measured: each `replace("[]", "")`
    removes the innermost level of every nesting, so what is left after MAX_DEPTH rounds is
    deeper (or unbalanced, which the parser refuses too). A quote or backslash outside a
    string is a parse error at that point, and the parser never gets past it.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return  # the usual frame: too few brackets to nest that deep
    if "\\" in text:
        text = text.replace("\\\\", "").replace('\\"', "")
    outside = "".join(text.split('"')[::2])
    containers = outside.count("[") + outside.count("{")
    if containers <= MAX_DEPTH:
        return
    if containers > MAX_CONTAINERS:
        raise FrameError(f"more than {MAX_CONTAINERS} arrays and objects in one frame")
    brackets = _NOT_BRACKET.sub("", outside.translate(_BRACES))
    for _ in range(MAX_DEPTH):
        shorter = brackets.replace("[]", "")
        if not shorter:
            return
        if len(shorter) == len(brackets):
            raise FrameError("brackets do not pair up")
        brackets = shorter
    raise FrameError(f"arrays and objects nested deeper than {MAX_DEPTH} levels")


# With escaped backslashes masked, every backslash starts an escape, so these are exact: the
# escapes of characters XML 1.0 cannot carry (§2.2: C0 controls but tab, LF and CR; U+FFFE,
# U+FFFF) and of lone surrogates, which are no Unicode text at all (RFC 8259 §8.2).
_NOT_XML_ESCAPE = re.compile(
    r"\\(?:[bf]|u00(?:0[0-8bBcCeEfF]|1[0-9a-fA-F])|u[fF]{3}[eEfF])"
    r"|\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def check_characters(text: str) -> None:
    """FrameError for a string XMPP cannot carry: every string of a frame may end up in XML
    (bodies, nicks, JIDs), and lxml refuses such characters with an exception at that point.
    Raw control characters are JSON errors already; raw U+FFFE/U+FFFF and escapes are not."""
    if "\ufffe" in text or "\uffff" in text:
        raise FrameError("a string holds U+FFFE or U+FFFF, which XML cannot carry")
    if "\\" in text:
        found = _NOT_XML_ESCAPE.search(text.replace("\\\\", "__"))  # "\\" is no escape
        if found:
            raise FrameError(f"a string holds {found.group()}, which XML cannot carry")


def encode(frame: Frame) -> str:
    data = [frame.join_ref, frame.ref, frame.topic, frame.event, frame.payload]
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


@dataclass(slots=True)
class ChannelProtocol:
    """One socket's channels. `max_channels` bounds the joined topics."""

    max_channels: int = 100
    joined: dict[str, str] = field(default_factory=dict)  # topic -> join_ref
    _out: list[Frame] = field(default_factory=list)

    def receive(self, text: str | bytes) -> list[Event]:
        """One client frame -> events for the application (FrameError: close the socket)."""
        frame = decode(text)
        if frame.topic == PHOENIX and frame.event == HEARTBEAT:
            self._out.append(Frame(None, frame.ref, PHOENIX, REPLY, _status("ok", {})))
            return []
        if frame.topic == PHOENIX and frame.event == REFRESH:
            return [Refresh(frame.ref, frame.payload)]
        if frame.event == JOIN:
            return self._join(frame)
        current = self.joined.get(frame.topic)
        if current is None or (frame.join_ref is not None and frame.join_ref != current):
            self.reply(
                frame.join_ref, frame.ref, frame.topic, "error", {"reason": "unmatched topic"}
            )
            return []
        if frame.event == LEAVE:
            del self.joined[frame.topic]
            return [Leave(frame.topic, current, frame.ref)]
        if frame.event in _RESERVED:
            self.reply(current, frame.ref, frame.topic, "error", {"reason": "reserved event"})
            return []
        return [Push(frame.topic, frame.event, frame.ref, current, frame.payload)]

    def _join(self, frame: Frame) -> list[Event]:
        join_ref = frame.ref or frame.join_ref
        if join_ref is None:
            raise FrameError("phx_join needs a ref")
        events: list[Event] = []
        old = self.joined.pop(frame.topic, None)
        if old is not None:  # Phoenix: a duplicate join closes the existing channel first
            self._out.append(Frame(old, old, frame.topic, CLOSE, {}))
            events.append(Leave(frame.topic, old, None))
        elif len(self.joined) >= self.max_channels:
            reason = f"at most {self.max_channels} channels per socket"
            self.reply(join_ref, frame.ref, frame.topic, "error", {"reason": reason})
            return []
        self.joined[frame.topic] = join_ref
        events.append(Join(frame.topic, join_ref, frame.payload))
        return events

    # ---- what the application says -----------------------------------------------------------

    def reply(
        self,
        join_ref: str | None,
        ref: str | None,
        topic: str,
        status: str,
        response: dict[str, Any] | None = None,
    ) -> None:
        """Answer a request; requests without a ref expect no answer."""
        if ref is not None:
            self._out.append(Frame(join_ref, ref, topic, REPLY, _status(status, response or {})))

    def accept(self, join: Join, response: dict[str, Any] | None = None) -> None:
        self.reply(join.join_ref, join.join_ref, join.topic, "ok", response)

    def refuse(self, join: Join, reason: str, **extra: Any) -> None:
        """The join failed: the client's channel sees the error and retries later."""
        if self.joined.get(join.topic) == join.join_ref:
            del self.joined[join.topic]
        self.reply(join.join_ref, join.join_ref, join.topic, "error", {"reason": reason, **extra})

    def left(self, leave: Leave) -> None:
        """Confirm a client's phx_leave, then close the channel."""
        self.reply(leave.join_ref, leave.ref, leave.topic, "ok")
        self._out.append(Frame(leave.join_ref, leave.join_ref, leave.topic, CLOSE, {}))

    def push(self, topic: str, event: str, payload: dict[str, Any]) -> bool:
        """A server push on a joined topic; False if the topic is not joined."""
        join_ref = self.joined.get(topic)
        if join_ref is None:
            return False
        self._out.append(Frame(join_ref, None, topic, event, payload))
        return True

    def close(
        self, topic: str, *, error: bool = False, payload: dict[str, Any] | None = None
    ) -> None:
        """End a channel from the server side: phx_close (or phx_error: the client rejoins)."""
        join_ref = self.joined.pop(topic, None)
        if join_ref is not None:
            event = ERROR if error else CLOSE
            self._out.append(Frame(join_ref, join_ref, topic, event, payload or {}))

    def frames_to_send(self) -> list[str]:
        out, self._out = self._out, []
        return [encode(f) for f in out]


def _status(status: str, response: dict[str, Any]) -> dict[str, Any]:
    return {"status": status, "response": response}
