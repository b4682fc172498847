"""One reader task and one locked writer per byte-stream connection (TCP, with or without TLS).

The socket is a plain non-blocking stdlib socket and TLS is an `ssl.SSLObject` over memory
BIOs, driven here directly: trio's `SocketStream`/`SSLStream` cost several hundred Python calls
per stanza, and this is the hot path of every message. Trio is used for what it is good at:
`wait_readable` / `wait_writable`, tasks and cancellation.

Writing has a fast path: when nothing is queued and no write is in progress, a stanza for this
client is written straight to the socket by whichever task routed it (`write_nowait`), without
waking the writer task. What the socket doesn't take at once, and everything after it, goes
through the connection's mailbox and the writer task, so order is kept and a slow reader only
ever costs its own bounded mailbox.

The connection serves one session at a time: XEP-0198 resumption hands it to the resumed
session (`rebind`), so the reader and the writer look the session up, never keep it.

Timeouts and keepalives are not per-read timers: one `Sweeper` task checks
every connection once a second.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import traceback
from typing import TYPE_CHECKING, Any

import trio

from pubsub import Mailbox

from ..ratelimit import TokenBucket

if TYPE_CHECKING:
    from ..session import Session
    from .tls import HandshakeGate

log = logging.getLogger("xmppd.c2s")
RECEIVE_SIZE = 16 * 1024

_BROKEN = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class ConnectionLost(Exception):
    """The peer went away or broke the TLS layer."""


class ByteStreamConnection:
    coalesces = True  # a byte stream: several stanzas may share one write (Session.corked)

    __slots__ = (
        "sock",
        "peer",
        "mailbox",
        "limits",
        "lock",
        "last_input",
        "opened_at",
        "keepalive_due",
        "_tls",
        "_tls_in",
        "_tls_out",
        "_read_scope",
        "_ssl_context",
        "_cb_data",
        "_session",
        "_writing",
        "_sweeper",
        "_drained",
        "_tls_gate",
        "_sent",
    )

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        limits: dict[str, Any],
        ssl_context: ssl.SSLContext | None,
        cb_data: bytes | None,
        sweeper: Sweeper,
        tls_gate: HandshakeGate | None = None,
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.peer = peer
        self.limits = limits
        self.lock = trio.StrictFIFOLock()
        self.opened_at = self.last_input = trio.current_time()
        self.keepalive_due = 0.0
        self._tls: ssl.SSLObject | None = None
        self._tls_in: ssl.MemoryBIO | None = None
        self._tls_out: ssl.MemoryBIO | None = None
        self._read_scope = trio.CancelScope()
        self._ssl_context = ssl_context
        self._cb_data = cb_data
        self._session: Session | None = None
        self._writing = False
        self._sweeper = sweeper
        self._drained = False
        self._tls_gate = tls_gate  # the listener's cap on concurrent STARTTLS handshakes
        self._sent = 0
        self.mailbox = Mailbox(
            max_items=limits["queued_stanzas"],
            max_bytes=limits["queued_bytes"],
            on_overflow=self._overflowed,
        )

    @property
    def tls_active(self) -> bool:
        return self._tls is not None

    def _overflowed(self, _mailbox: Mailbox) -> None:
        if self._session is not None:
            self._session.overflowed()

    def rebind(self, session: Session) -> None:
        """Stream resumption: the connection now serves `session` (only while serving)."""
        if self._session is not None:
            self._session = session

    # ---- TLS ------------------------------------------------------------------------------------

    async def handshake(self) -> None:
        """Server-side TLS handshake on the raw socket (direct TLS, or after <proceed/>)."""
        if self._ssl_context is None:
            raise ConnectionLost("TLS is not configured")
        self._tls_in, self._tls_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = self._ssl_context.wrap_bio(self._tls_in, self._tls_out, server_side=True)
        timeout = self.limits["tls_handshake_timeout"]
        try:
            with trio.fail_after(timeout):
                await self._handshake_steps()
        except trio.TooSlowError:
            self.drop_tls()
            raise ConnectionLost(
                f"TLS handshake not finished within {timeout:g} s (limits.tls_handshake_timeout)"
            ) from None
        except BaseException:
            self.drop_tls()
            raise

    def drop_tls(self) -> None:
        """Free the OpenSSL state now. The connection is in a reference cycle (its mailbox's
        overflow callback), so without this the state lives until a full garbage collection:
        thousands of failed handshakes held hundreds of MB (bench/tls_stall_bench.py)."""
        self._tls = self._tls_in = self._tls_out = None

    async def _handshake_steps(self) -> None:
        tls, tls_out = self._tls, self._tls_out
        assert tls is not None and tls_out is not None
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._send_raw(tls_out.read())
                await self._fill_tls_input()
            except ssl.SSLError as exc:
                await self._send_raw(tls_out.read())  # the alert, if any
                raise ConnectionLost(f"TLS handshake failed: {exc.reason or exc}") from exc
        await self._send_raw(tls_out.read())

    async def start_tls(self) -> bytes | None:
        """The session's Transport API: <proceed/> goes out in the clear, then TLS."""
        if self._ssl_context is None or self._session is None:
            raise ConnectionLost("TLS is not configured")
        marker = _Flushed()
        self.mailbox.put(marker, 0)
        await marker.written.wait()
        gate = self._tls_gate
        async with self.lock:
            if gate is not None:
                await gate.acquire()
            try:
                await self.handshake()
            except OSError as exc:
                raise ConnectionLost(str(exc) or type(exc).__name__) from exc
            finally:
                if gate is not None:
                    gate.release()
        return self._cb_data

    # ---- reading --------------------------------------------------------------------------------

    async def _recv_raw(self) -> bytes:
        if self._drained:
            # The last read took everything: wait for more instead of paying for an EAGAIN.
            await trio.lowlevel.wait_readable(self.sock)
        while True:
            try:
                data = self.sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.sock)
                continue
            except _BROKEN as exc:
                raise ConnectionLost(str(exc)) from exc
            self._drained = len(data) < RECEIVE_SIZE
            return data

    async def _fill_tls_input(self) -> None:
        data = await self._recv_raw()
        if not data:
            raise ConnectionLost("connection closed during TLS")
        self._tls_in.write(data)  # type: ignore[union-attr]

    async def receive(self) -> bytes:
        """Next chunk of application bytes; b"" at end of stream."""
        tls = self._tls
        if tls is None:
            return await self._recv_raw()
        while True:
            try:
                return tls.read(RECEIVE_SIZE)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLError as exc:
                raise ConnectionLost(f"TLS error: {exc.reason or exc}") from exc
            data = await self._recv_raw()
            if not data:
                return b""
            self._tls_in.write(data)  # type: ignore[union-attr]

    # ---- writing --------------------------------------------------------------------------------

    def _encrypt(self, data: bytes) -> bytes:
        if self._tls is None:
            return data
        self._tls.write(data)
        return self._tls_out.read()  # type: ignore[union-attr]

    async def _send_raw(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                sent = 0
            except _BROKEN as exc:
                raise ConnectionLost(str(exc)) from exc
            view = view[sent:]
            self._sent += sent  # how far a batch got, should the connection die (_write_items)
            if view:
                await trio.lowlevel.wait_writable(self.sock)

    def write_nowait(self, data: bytes) -> bool:
        """Write now if nothing is queued or being written; False means: use the mailbox."""
        session = self._session
        if self._writing or session is None or self.mailbox.queued_items or self.lock.locked():
            return False
        wire = self._encrypt(data)
        try:
            sent = self.sock.send(wire)
        except BlockingIOError:
            sent = 0
        except (OSError, ssl.SSLError):
            sent = 0  # the reader will notice the broken socket; keep the bytes in order
        if sent < len(wire):
            # The rest is already on the wire format (encrypted): the writer finishes it.
            self.mailbox.put(_Raw(wire[sent:]), len(wire) - sent)
        return True

    def label_partial(self, stanza: object) -> None:
        """The last `write_nowait` went out in part: if the rest is never written, `stanza` is
        routed again like any other stanza the client did not get."""
        items = self.mailbox.queued_items and self.mailbox.peek_last()
        if type(items) is _Raw:
            items.stanza = stanza

    async def _write_items(self, items: list[object]) -> None:
        """Write a batch in as few sends as markers allow. Each item is encrypted on its own
        (one TLS record each), so when the connection dies mid-batch the items whose bytes did
        not all reach the socket are known exactly: they go back to the mailbox, and the
        session routes them again (a client cannot use a partial stanza or record)."""
        pending = items
        while pending:
            cut = next((i for i, it in enumerate(pending) if type(it) is _Flushed), len(pending))
            segment = pending[:cut]
            parts: list[bytes] = []
            ends: list[int] = []
            total = 0
            for item in segment:
                kind = type(item)
                if kind is _Raw:
                    data = item.data  # type: ignore[attr-defined]
                else:  # bytes, or (bytes, stanza) from deliver
                    data = self._encrypt(item[0] if kind is tuple else item)  # type: ignore[index]
                parts.append(data)
                total += len(data)
                ends.append(total)
            self._sent = 0
            try:
                await self._send_raw(b"".join(parts))
            except BaseException:
                unsent = [it for it, end in zip(segment, ends, strict=True) if end > self._sent]
                self._give_back(unsent + pending[cut:])
                raise
            if cut < len(pending):
                pending[cut].written.set()  # type: ignore[attr-defined]
            pending = pending[cut + 1 :]

    def _give_back(self, items: list[object]) -> None:
        """Stanzas a dying connection did not write: back to the mailbox for `Session.end`."""
        back: list[object] = []
        for item in items:
            if type(item) is tuple:
                back.append(item)
            elif type(item) is _Raw and item.stanza is not None:  # type: ignore[attr-defined]
                back.append((b"", item.stanza))  # type: ignore[attr-defined]
        if back:
            self.mailbox.putback(back, sum(len(item[0]) for item in back))  # type: ignore[index]

    # ---- the two tasks --------------------------------------------------------------------------

    def abort(self) -> None:
        self._read_scope.cancel()

    async def serve(self, session: Session) -> None:
        self._session = session
        self._sweeper.add(self)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer)
                with self._read_scope:
                    await self._reader()
                # The writer finishes what is queued (a closing tag, a stream error), then stops;
                # a peer that doesn't read doesn't get to keep us waiting (one that stopped
                # reading not at all: what it did not get is routed again at once).
                grace = 0 if self.mailbox.overflowed else 5
                self.mailbox.close()
                nursery.cancel_scope.deadline = trio.current_time() + grace
        finally:
            self._sweeper.discard(self)
            session = self._session  # may differ from the first one after a resumption
            self._session = None  # no reference cycle left behind; rebind() is over
            with trio.CancelScope(shield=True):
                await session.closed_by_transport()  # type: ignore[union-attr]
            self.sock.close()
            self.drop_tls()

    async def _reader(self) -> None:
        session: Session = self._session  # type: ignore[assignment]
        limits = self.limits
        bucket = TokenBucket(
            limits["bytes_per_second"], limits["burst_bytes"], trio.current_time(), "c2s_bytes"
        )
        while True:
            try:
                data = await self.receive()
            except ConnectionLost as exc:
                log.info("%s connection lost: %s", session.id, exc)
                return
            if not data:
                log.info("%s connection closed by peer", session.id)
                return
            now = trio.current_time()
            self.last_input = now
            if bucket.rate != limits["bytes_per_second"] or bucket.burst != limits["burst_bytes"]:
                # changed by a reload (SIGHUP)
                bucket.rate, bucket.burst = limits["bytes_per_second"], limits["burst_bytes"]
            pause = bucket.spend(len(data), now)
            try:
                session = self._session  # type: ignore[assignment]
                await session.data_received(data)
                while self._session is not session:
                    # <resume/> handed the connection to another session mid-call: it goes on
                    # with what is left of the input.
                    session = self._session  # type: ignore[assignment]
                    await session.data_received(b"")
            except ConnectionLost as exc:
                log.info("%s connection lost: %s", session.id, exc)
                return
            if self.mailbox.loaded:
                # What the client sends makes answers and bounces for it: while it is slow to
                # read them, read no more of its input (TCP pushes back on it) rather than let
                # its own mailbox overflow and lose them.
                await self.mailbox.wait_for_room()
            if pause:
                await trio.sleep(pause)  # pause reading; TCP pushes back on the sender

    async def _writer(self) -> None:
        mailbox = self.mailbox
        try:
            while True:
                try:
                    batch = await mailbox.get_batch()
                except trio.EndOfChannel:
                    break
                self._writing = True
                async with self.lock:
                    await self._write_items(batch)
                self._writing = False
        except (ConnectionLost, ssl.SSLError, OSError) as exc:
            session_id = self._session.id if self._session is not None else self.peer
            log.info("%s write failed: %s", session_id, exc or type(exc).__name__)
            self._read_scope.cancel()

    # ---- called by the sweeper once a second ----------------------------------------------------

    def check(self, now: float) -> None:
        check_timers(self, now)


def check_timers(connection: Any, now: float) -> None:
    """Login deadline, idle timeout and keepalives of one connection (any transport with
    `_session`, `limits`, `opened_at`, `last_input` and `keepalive_due`)."""
    session = connection._session
    if session is None:
        return
    limits = connection.limits
    if not session.established:
        if now - connection.opened_at > limits["login_timeout"]:
            log.info(
                "%s login not finished within %g s (limits.login_timeout); closing",
                session.id,
                limits["login_timeout"],
            )
            session.kill("connection-timeout", "login took too long")
        return
    idle = now - connection.last_input
    if idle >= limits["idle_timeout"]:
        session.timed_out()
    elif idle >= limits["keepalive_interval"] and now >= connection.keepalive_due:
        connection.keepalive_due = now + limits["keepalive_interval"]
        session.keepalive()


class Sweeper:
    """One task for every connection's timers: login deadline, idle timeout, keepalives."""

    __slots__ = ("_connections",)

    def __init__(self) -> None:
        self._connections: set[ByteStreamConnection] = set()

    def add(self, connection: ByteStreamConnection) -> None:
        self._connections.add(connection)

    def discard(self, connection: ByteStreamConnection) -> None:
        self._connections.discard(connection)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(1)
            now = trio.current_time()
            for connection in list(self._connections):
                connection.check(now)


class _Flushed:
    """A mailbox marker: its event is set once everything queued before it is written."""

    __slots__ = ("written",)

    def __init__(self) -> None:
        self.written = trio.Event()


class _Raw:
    """Bytes already in wire format (encrypted) that a direct write could not finish, and the
    stanza they belong to (see `label_partial`)."""

    __slots__ = ("data", "stanza")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.stanza: object = None


def drop_frames(exc: BaseException | None) -> None:
    """Clear the locals of the finished frames a caught exception holds. A frame that caught one
    exception and raised another (`raise X from exc`) refers to the first through its local,
    whose traceback refers back to the frame: a cycle that keeps every object of those frames
    (a TLS stream and its OpenSSL state) alive until a full garbage collection."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__


def is_transient_accept_error(exc: OSError) -> bool:
    """Out of file descriptors or memory: wait and accept again rather than stop listening."""
    return exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)
