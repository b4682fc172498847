"""The one writer of a WebSocket connection, shared by RFC 7395 (websocket.py) and the JSON
channels (channels.py).

DESIGN.md: one reader task and one locked writer per connection, like trio_websocket's `_send`
with its `StrictFIFOLock`. Every byte for the socket goes through `FrameWriter`, which holds the
lock for whole frames only: two frames never interleave on the wire and trio never sees two
tasks sending at once (its `BusyResourceError`). Data frames go out in chunks of whole frames;
a pong or close frame asked for meanwhile goes out between two chunks: it jumps the queued data
but never splits a frame already being sent. When the writer is idle, the reader's pong goes
out at once. Only the latest ping is answered (RFC 6455 §5.5.3 allows it), so the control
queue holds at most one pong and one close, whatever a client sends.

A write that fails or is cancelled may leave part of a frame on the wire; the writer is then
`broken` and sends nothing more (a close frame would be read as the rest of the cut frame):
the connection can only be dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import CloseConnection, Message, Ping, Pong

CHUNK = 64 * 1024  # bytes of whole frames per write: how long a pong may wait behind data
_OPEN = ConnectionState.OPEN
_CLOSABLE = (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING)


class WriteFailed(Exception):
    """The connection broke (or was reset) while we wrote: a normal end, logged at INFO."""


class FrameWriter:
    __slots__ = ("stream", "ws", "broken", "_lock", "_pong", "_close")

    def __init__(self, stream: trio.abc.SendStream, ws: Connection) -> None:
        self.stream = stream
        self.ws = ws
        self.broken = False
        self._lock = trio.StrictFIFOLock()
        self._pong: bytes | None = None
        self._close: CloseConnection | None = None

    async def send(self, events: Iterable[Message | Ping]) -> None:
        """Data messages (and keepalive pings) in order; nothing once a close is queued or
        the peer is closing. Frames are made chunk by chunk, so a close queued meanwhile stops
        the rest (wsproto refuses data after its close frame)."""
        ws = self.ws
        async with self._lock:
            await self._flush_control()
            out: list[bytes] = []
            size = 0
            for event in events:
                if ws.state is not _OPEN or self._close is not None:
                    break
                frame = ws.send(event)
                out.append(frame)
                size += len(frame)
                if size >= CHUNK:
                    await self._write(b"".join(out))
                    out.clear()
                    size = 0
                    await self._flush_control()
            if out and ws.state is _OPEN and self._close is None:
                await self._write(b"".join(out))
            await self._flush_control()

    async def pong(self, payload: bytes) -> None:
        """Answer a ping: now when the writer is idle, else right after its current chunk."""
        self._pong = bytes(payload)
        if not self._lock.locked():  # the holder flushes control frames before it lets go
            async with self._lock:
                await self._flush_control()

    async def close(self, code: int, reason: str | None = None) -> None:
        """Send the close frame before any data still queued (after the chunk being sent)."""
        if self._close is None:
            self._close = CloseConnection(code=code, reason=reason)
        async with self._lock:
            await self._flush_control()

    async def close_quietly(self, code: int, reason: str | None = None, wait: float = 2) -> None:
        """The closing handshake's first step when ending: a broken or stalled peer gets none."""
        with trio.move_on_after(wait), contextlib.suppress(WriteFailed):
            await self.close(code, reason)

    async def _flush_control(self) -> None:
        if self.broken:  # before wsproto makes a frame (and changes state) for nothing
            raise WriteFailed("an earlier write was cut off")
        ws = self.ws
        while self._pong is not None:  # a newer ping may come while the pong is being sent
            payload, self._pong = self._pong, None
            if ws.state is _OPEN:
                await self._write(ws.send(Pong(payload=payload)))
        if self._close is not None and ws.state in _CLOSABLE:
            await self._write(ws.send(self._close))

    async def _write(self, data: bytes) -> None:
        finished = False
        try:
            await self.stream.send_all(data)
            finished = True
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise WriteFailed(str(exc) or type(exc).__name__) from None
        finally:
            if not finished:
                self.broken = True  # failed or cancelled: maybe half a frame went out
