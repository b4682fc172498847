"""RFC 7395 XMPP over WebSocket: the trio shell around wsproto and the c2s `Session`.

The HTTP layer (http.py) answers the upgrade and hands over the byte stream. From then on this
is a `Transport` like a TCP connection: one reader task feeds each complete text message to the
session (its stream parses it with `FramedParser`), one writer task turns what the session
writes into one WebSocket message per element (`protocol.websocket.messages`). Every write,
the reader's pongs and the close frame included, goes through one `FrameWriter` (wswriter.py).
Only the framing and the writing differ from TCP; binding, routing, stream management and
limits are the session's. There is no STARTTLS: the stream is as secure as the HTTP listener.

WebSocket close codes (RFC 6455 §7.4.1): 1000 after an XMPP close or stream error (RFC 7395
§3.6), 1003 for a binary message, 1009 for a message over the size limit, 1002 for a broken
frame and 1007 for a text message that is not UTF-8 (wsproto's answers); a stream error is
sent first where XMPP has one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import trio
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage

from pubsub import Mailbox

from ..protocol.websocket import messages
from ..ratelimit import TokenBucket
from .connection import ConnectionLost, Sweeper, check_timers
from .wswriter import FrameWriter, WriteFailed

if TYPE_CHECKING:
    from ..session import Session

log = logging.getLogger("xmppd.web")
RECEIVE_SIZE = 16 * 1024
_NORMAL, _UNSUPPORTED, _TOO_BIG = 1000, 1003, 1009
_ECHOED = frozenset({1002, 1007, 1009})


class WebSocketConnection:
    """One upgraded connection serving one session at a time (resumption may swap it)."""

    __slots__ = (
        "stream",
        "ws",
        "writer",
        "peer",
        "limits",
        "mailbox",
        "last_input",
        "opened_at",
        "keepalive_due",
        "close_code",
        "_session",
        "_sweeper",
        "_read_scope",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        ws: Connection,
        peer: str,
        limits: dict[str, Any],
        sweeper: Sweeper,
    ) -> None:
        self.stream = stream
        self.ws = ws
        self.writer = FrameWriter(stream, ws)
        self.peer = peer
        self.limits = limits  # [limits] merged with [http]
        self.opened_at = self.last_input = trio.current_time()
        self.keepalive_due = 0.0
        self.close_code = _NORMAL
        self._session: Session | None = None
        self._sweeper = sweeper
        self._read_scope = trio.CancelScope()
        self.mailbox = Mailbox(
            max_items=limits["queued_stanzas"],
            max_bytes=limits["queued_bytes"],
            on_overflow=self._overflowed,
        )

    def _overflowed(self, _mailbox: Mailbox) -> None:
        if self._session is not None:
            self._session.overflowed()

    # ---- Transport ----------------------------------------------------------------------------

    async def start_tls(self) -> bytes | None:
        raise ConnectionLost("no STARTTLS over WebSocket")  # never offered: see web settings

    def write_nowait(self, data: bytes) -> bool:
        return False  # every write is framed by the writer task, in order

    def abort(self) -> None:
        self._read_scope.cancel()

    def rebind(self, session: Session) -> None:
        if self._session is not None:
            self._session = session

    # ---- the two tasks ------------------------------------------------------------------------

    async def serve(self, session: Session) -> None:
        self._session = session
        self._sweeper.add(self)  # type: ignore[arg-type]
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer)
                with self._read_scope:
                    await self._reader()
                self.mailbox.close()  # the writer sends what is queued (<close/>), then stops
                nursery.cancel_scope.deadline = trio.current_time() + 5
        finally:
            self._sweeper.discard(self)  # type: ignore[arg-type]
            session = self._session  # type: ignore[assignment]
            self._session = None
            with trio.CancelScope(shield=True):
                await session.closed_by_transport()
                await self._close()

    async def _reader(self) -> None:
        limits = self.limits
        rate = limits["messages_per_second"]
        bucket = TokenBucket(rate, rate, trio.current_time(), "websocket_messages")
        pending: list[str] = []
        size = 0
        while True:
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                log.info("%s websocket lost: %s", self._id(), exc or type(exc).__name__)
                return
            self.ws.receive_data(data or None)
            if not data:
                return
            self.last_input = trio.current_time()
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    pending.append(event.data)
                    size += len(event.data)  # characters: at most 4 bytes each, checked below
                    if size > limits["max_message_bytes"]:
                        return self._refuse(_TOO_BIG, "policy-violation", "message too large")
                    if not event.message_finished:
                        continue
                    message = "".join(pending).encode()
                    pending.clear()
                    size = 0
                    if len(message) > limits["max_message_bytes"]:
                        return self._refuse(_TOO_BIG, "policy-violation", "message too large")
                    if not await self._deliver(message):
                        return
                    pause = bucket.spend(1, trio.current_time())
                    if pause:
                        await trio.sleep(pause)  # over the message rate: stop reading
                elif isinstance(event, BytesMessage):
                    return self._refuse(_UNSUPPORTED, "bad-format", "XMPP uses text messages")
                elif isinstance(event, Ping):
                    try:
                        await self.writer.pong(event.payload)
                    except WriteFailed as exc:
                        log.info("%s websocket lost while answering a ping: %s", self._id(), exc)
                        return
                elif isinstance(event, CloseConnection):
                    # a broken frame (wsproto's 1002/1007/1009) is answered with its code
                    self.close_code = event.code if event.code in _ECHOED else _NORMAL
                    log.info("%s websocket closed by peer (%s)", self._id(), event.code)
                    return

    async def _deliver(self, message: bytes) -> bool:
        session: Session = self._session  # type: ignore[assignment]
        try:
            await session.data_received(message)
            while self._session is not session:  # <resume/> handed us to another session
                session = self._session  # type: ignore[assignment]
                await session.data_received(b"")
        except ConnectionLost as exc:
            log.info("%s connection lost: %s", session.id, exc)
            return False
        return not session.closed

    def _refuse(self, code: int, condition: str, text: str) -> None:
        self.close_code = code
        if self._session is not None:
            self._session.kill(condition, text)

    async def _writer(self) -> None:
        try:
            while True:
                try:
                    batch = await self.mailbox.get_batch()
                except trio.EndOfChannel:
                    break
                await self.writer.send(_events(batch))
        except WriteFailed as exc:
            log.info("%s write failed: %s", self._id(), exc)
            self._read_scope.cancel()

    async def _close(self) -> None:
        """Closing handshake: our close frame, then the TCP connection (RFC 6455 §7.1.1)."""
        await self.writer.close_quietly(self.close_code)
        await trio.aclose_forcefully(self.stream)

    # ---- timers (the c2s Sweeper calls this once a second) ------------------------------------

    def check(self, now: float) -> None:
        check_timers(self, now)

    def _id(self) -> str:
        return self._session.id if self._session is not None else self.peer


def _events(batch: list[object]) -> Iterator[Message | Ping]:
    """What the session wrote -> one message per element (RFC 7395 §3.3.3)."""
    for item in batch:
        data = item[0] if type(item) is tuple else item  # (bytes, stanza) from deliver
        if type(data) is not bytes:
            continue
        if not data.strip():
            yield Ping()  # whitespace keepalive -> ping (RFC 7395 §3.3.3)
            continue
        for message in messages(data):
            yield Message(data=message.decode())
