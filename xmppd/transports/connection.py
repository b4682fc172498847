"""One reader task and one locked writer per byte-stream connection (TCP, TLS).

The reader feeds bytes to the session with limits: a login deadline, an idle timeout with
whitespace keepalives, and a token bucket that pauses reading (never kills) a fast sender.
The writer drains the session's mailbox in batches: one socket write per burst of stanzas.
Both share `lock`, so a STARTTLS switch never interleaves with a write.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from ..session import Session

log = logging.getLogger("xmppd.c2s")
RECEIVE_SIZE = 16 * 1024
KEEPALIVE = b" "
COMPACT_AFTER = 5.0  # seconds of silence before an established stream frees its parser context


class ByteStreamConnection:
    __slots__ = (
        "stream",
        "peer",
        "limits",
        "lock",
        "_read_scope",
        "_ssl_context",
        "_cb_data",
        "_session",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        peer: str,
        limits: dict[str, Any],
        ssl_context: ssl.SSLContext | None,
        cb_data: bytes | None,
    ) -> None:
        self.stream = stream
        self.peer = peer
        self.limits = limits
        self.lock = trio.StrictFIFOLock()
        self._read_scope = trio.CancelScope()
        self._ssl_context = ssl_context
        self._cb_data = cb_data
        self._session: Session | None = None

    # ---- Transport API used by the session --------------------------------------------------

    async def start_tls(self) -> bytes | None:
        if self._ssl_context is None or self._session is None:
            raise trio.BrokenResourceError("TLS is not configured")
        # Everything queued so far (features, <proceed/>) goes out in the clear first: the
        # writer sets the marker's event once it has written what came before it.
        marker = _Flushed()
        self._session.mailbox.put(marker, 0)
        await marker.written.wait()
        async with self.lock:
            tls = trio.SSLStream(self.stream, self._ssl_context, server_side=True)
            with trio.fail_after(self.limits["tls_handshake_timeout"]):
                await tls.do_handshake()
            self.stream = tls
        return self._cb_data

    def abort(self) -> None:
        self._read_scope.cancel()

    # ---- the two tasks ----------------------------------------------------------------------

    async def serve(self, session: Session) -> None:
        self._session = session
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, session)
                with self._read_scope:
                    await self._reader(session)
                # The writer finishes what is queued (a closing tag, a stream error), then stops;
                # a peer that doesn't read doesn't get to keep us waiting.
                session.mailbox.close()
                nursery.cancel_scope.deadline = trio.current_time() + 5
        finally:
            with trio.CancelScope(shield=True):
                await session.closed_by_transport()
                with trio.move_on_after(2):
                    await _close(self.stream)

    async def _reader(self, session: Session) -> None:
        limits = self.limits
        rate, burst = limits["bytes_per_second"], limits["burst_bytes"]
        tokens, stamp = float(burst), trio.current_time()
        login_deadline = stamp + limits["login_timeout"]
        last_input = stamp
        compacted = False
        while True:
            if not session.established:
                timeout = login_deadline - trio.current_time()
            elif compacted:
                timeout = limits["keepalive_interval"]
            else:
                timeout = min(COMPACT_AFTER, limits["keepalive_interval"])
            try:
                with trio.move_on_after(max(timeout, 0)) as waited:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError) as exc:
                log.info("%s connection lost: %s", session.id, exc or type(exc).__name__)
                return
            now = trio.current_time()
            if waited.cancelled_caught:
                if not session.established:
                    session.kill("connection-timeout", "login took too long")
                    return
                if not compacted:
                    session.stream.compact()  # most sessions are idle most of the time
                    compacted = True
                idle = now - last_input
                if idle >= limits["idle_timeout"]:
                    session.kill("connection-timeout", "idle for too long")
                    return
                if idle >= limits["keepalive_interval"]:
                    session.mailbox.put(KEEPALIVE, 1)
                continue
            if not data:
                log.info("%s connection closed by peer", session.id)
                return
            last_input = now
            compacted = False
            tokens = min(burst, tokens + (now - stamp) * rate) - len(data)
            stamp = now
            await session.data_received(data)
            if tokens < 0:
                await trio.sleep(-tokens / rate)  # pause reading; TCP pushes back on the sender

    async def _writer(self, session: Session) -> None:
        mailbox = session.mailbox
        try:
            while True:
                try:
                    batch = await mailbox.get_batch()
                except trio.EndOfChannel:
                    break
                async with self.lock:
                    await self._write_items(batch)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError) as exc:
            log.info("%s write failed: %s", session.id, exc or type(exc).__name__)
            self._read_scope.cancel()

    async def _write_items(self, items: list[object]) -> None:
        chunks: list[bytes] = []
        for item in items:
            if type(item) is bytes:
                chunks.append(item)
            elif type(item) is tuple:
                chunks.append(item[0])  # (bytes, stanza) from Session.deliver
            else:
                assert isinstance(item, _Flushed)
                if chunks:
                    await self.stream.send_all(b"".join(chunks))
                    chunks.clear()
                item.written.set()
        if chunks:
            await self.stream.send_all(b"".join(chunks))


class _Flushed:
    """A mailbox marker: its event is set once everything queued before it is written."""

    __slots__ = ("written",)

    def __init__(self) -> None:
        self.written = trio.Event()


async def _close(stream: trio.abc.Stream) -> None:
    try:
        if isinstance(stream, trio.SSLStream):
            # No close_notify round trip: the XMPP closing tag already ended the conversation.
            await stream.transport_stream.aclose()
        else:
            await stream.aclose()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
