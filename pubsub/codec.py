"""The wire codec for messages between nodes: pickle, restricted to plain data.

Pickle (protocol 5, in C) is the fastest encoder of the tuples, dicts, sets and
`state.Delta` objects the Tracker sends. Decoding is restricted: `find_class` accepts only
the few classes listed here, so a message on the cluster channel cannot name arbitrary
callables (a writable Redis must not mean code execution on every node).

Types the bus does not know (lxml stanzas from the XMPP core, which `pubsub` never
imports) are registered as *extensions*: ``codec.register(cls, tag, to_bytes,
from_bytes)``. They travel as ``(tag, bytes)`` and are rebuilt by ``from_bytes`` on the
other side.
"""

from __future__ import annotations

import copyreg
import io
import pickle
from collections.abc import Callable
from typing import Any

from .state import Delta
from .wire import Envelope

__all__ = ["Codec", "CodecError"]


class CodecError(ValueError):
    """A message could not be encoded, or a received one is malformed or not allowed."""


_BUILTINS = frozenset({"set", "frozenset", "bytearray", "complex", "slice"})


def _ext(tag: str, data: bytes) -> Any:  # placeholder resolved per-codec in find_class
    raise CodecError("extension decoded outside a codec")


class Codec:
    """Encode/decode cross-node messages. One per adapter; extensions per codec."""

    def __init__(self) -> None:
        self._encoders: dict[type, tuple[str, Callable[[Any], bytes]]] = {}
        self._decoders: dict[str, Callable[[bytes], Any]] = {}
        self._classes: dict[tuple[str, str], Any] = {
            ("pubsub.state", "Delta"): Delta,
            ("pubsub.wire", "Envelope"): Envelope,
            ("pubsub.codec", "_ext"): self._decode_ext,
        }
        self._table: dict[type, Callable[[Any], tuple]] = dict(copyreg.dispatch_table)
        self._table[Envelope] = lambda env: (Envelope, (env.payload,))

    def register(
        self,
        cls: type,
        tag: str,
        to_bytes: Callable[[Any], bytes],
        from_bytes: Callable[[bytes], Any],
    ) -> None:
        """Ship instances of ``cls`` as ``to_bytes(obj)``; rebuild with ``from_bytes``."""
        self._encoders[cls] = (tag, to_bytes)
        self._decoders[tag] = from_bytes
        self._table[cls] = lambda obj: (_ext, (tag, to_bytes(obj)))

    def encode(self, message: object) -> bytes:
        buf = io.BytesIO()
        pickler = pickle.Pickler(buf, protocol=5)
        pickler.dispatch_table = self._table
        try:
            pickler.dump(message)
        except Exception as exc:  # unpicklable payloads: the caller logs and drops
            raise CodecError(f"cannot encode {type(message).__name__}: {exc}") from exc
        return buf.getvalue()

    def decode(self, data: bytes) -> object:
        try:
            return _Restricted(io.BytesIO(data), self._classes).load()
        except CodecError:
            raise
        except Exception as exc:
            raise CodecError(f"malformed message: {exc}") from exc

    def _decode_ext(self, tag: str, data: bytes) -> Any:
        decoder = self._decoders.get(tag)
        if decoder is None:
            raise CodecError(f"unknown extension {tag!r}")
        return decoder(data)


class _Restricted(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, classes: dict[tuple[str, str], Any]) -> None:
        super().__init__(file)
        self._classes = classes

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _BUILTINS:
            return super().find_class(module, name)
        found = self._classes.get((module, name))
        if found is None:
            raise CodecError(f"class {module}.{name} not allowed on the cluster wire")
        return found
