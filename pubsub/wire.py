"""Encode-once envelopes ("fastlane").

A broadcast to N subscribers carries one `Envelope`; each subscriber asks for the bytes
in its own wire format (XML for c2s/websocket, JSON for channels). The first asker
encodes, everybody else reuses the bytes, so a room message to 500 occupants is
serialised once per format instead of 500 times. Formats are short strings chosen by
the transports ("xml", "json", ...); an encoder must be a pure function of the payload.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Envelope"]


class Envelope:
    """An immutable payload plus its cached encodings (one slot pair, then a dict)."""

    __slots__ = ("payload", "_fmt", "_data", "_more")

    def __init__(self, payload: object) -> None:
        self.payload = payload
        # Most broadcasts see one or two formats: keep the first without a dict.
        self._fmt: str | None = None
        self._data: bytes = b""
        self._more: dict[str, bytes] | None = None

    def encoded(self, fmt: str, encoder: Callable[[object], bytes]) -> bytes:
        """The payload in format ``fmt``, encoded by ``encoder`` on first use only."""
        if fmt == self._fmt:
            return self._data
        if self._fmt is None:
            data = encoder(self.payload)
            self._fmt = fmt
            self._data = data
            return data
        more = self._more
        if more is None:
            more = self._more = {}
        else:
            data = more.get(fmt)
            if data is not None:
                return data
        data = more[fmt] = encoder(self.payload)
        return data

    def cached_formats(self) -> tuple[str, ...]:
        first = () if self._fmt is None else (self._fmt,)
        return first + tuple(self._more or ())

    def __repr__(self) -> str:
        return f"<Envelope {self.payload!r} formats={self.cached_formats()}>"
