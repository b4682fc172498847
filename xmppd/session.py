"""A client session, independent of the transport (TCP now; WebSocket and BOSH reuse it).

The transport feeds bytes into `data_received()` and writes what its `mailbox` yields. The
session drives the sans-IO `ServerStream`, talks to auth for SASL and to its host for binding and
routing, and is a pubsub subscriber: stanzas for it arrive through `deliver()`.

Lifecycle: negotiating -> established -> ended (`end()`: unbound, `session-closed` fired, what
the client did not get routed again). With XEP-0198 resumption (`sm`, modules/sm.py) a session
whose connection breaks without a closing tag hibernates instead: still bound and available,
stanzas queue in `sm`, until a new stream resumes it (`take_over()`) or the window ends.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from lxml import etree

from auth.base import AuthError
from pubsub import Mailbox

from . import metrics, router
from .protocol import stream as st
from .protocol.jid import JID
from .protocol.stanza import PRESENCE, Element, local_name

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("xmppd.c2s")
BANNED_TEXT = "too many failed logins from your address; try again later"
_ids = itertools.count(1)


class Transport(Protocol):
    """What a session needs from its connection."""

    peer: str
    mailbox: Mailbox  # what the writer sends, in order; bounded (slow readers overflow)

    async def start_tls(self) -> bytes | None:
        """Flush pending output, switch to TLS, return tls-server-end-point data."""

    def write_nowait(self, data: bytes) -> bool:
        """Write at once if nothing is queued; False: the caller queues it in the mailbox."""

    def label_partial(self, stanza: Element) -> None:
        """`write_nowait` returned True but only part of the bytes went out (transports whose
        `write_nowait` never returns True never get this call)."""

    def abort(self) -> None:
        """Stop reading and close as soon as queued output is written."""

    def rebind(self, session: Session) -> None:
        """Stream resumption: from now on this connection serves `session`."""


class StreamManagement(Protocol):
    """The `sm` slot: XEP-0198 state, owned by modules/sm.py. None means the fast path."""

    hibernating: bool
    resumable: bool

    async def inbound(self, session: Session, stanza: Element) -> None:
        """Route a stanza from the client and count it as handled."""

    def handled_here(self) -> None:
        """Count a stanza the stream answered itself."""

    def write(self, session: Session, stanza: Element) -> None:
        """Queue the stanza until acknowledged; transmit it unless hibernating."""

    def request_ack(self, session: Session) -> None:
        """Send <r/>."""

    def closing(self, session: Session) -> None:
        """The server closes the stream: a last <a/>."""

    def hibernate(self, session: Session) -> bool:
        """The connection broke: True when the session now waits for a resumption."""

    def finish(self, session: Session) -> list[Element]:
        """The session ends for real: the stanzas to route again (never acknowledged)."""


class Session:
    __slots__ = (
        "server",
        "transport",
        "stream",
        "id",
        "host",
        "jid",
        "full",
        "bare",
        "available",
        "priority",
        "presence",
        "interested",
        "carbons",
        "bound_at",
        "directed",
        "csi",
        "sm",
        "out_filters",
        "mailbox",
        "closed",
        "ended",
        "_corked",
        "__weakref__",
    )

    def __init__(self, server: Server, transport: Transport, settings: st.StreamSettings) -> None:
        self.server = server
        self.transport = transport
        self.stream = st.ServerStream(settings)
        self.id = f"c2s{next(_ids)}"
        self.host = None
        self.jid: JID | None = None
        self.full = ""
        self.bare = ""
        self.available = False
        self.priority = 0
        self.presence: Element | None = None  # last broadcast presence
        self.interested = False  # fetched the roster: gets roster pushes (RFC 6121 §2.1.6)
        self.carbons = 0.0  # XEP-0280: when enabled (time.time()); 0.0 while off
        self.bound_at = 0.0  # when the resource was bound (time.time())
        self.directed: set[str] | None = None  # JIDs sent directed presence (RFC 6121 §4.6)
        self.csi: Any = None  # XEP-0352 state, owned by modules/csi.py
        self.sm: StreamManagement | None = None  # XEP-0198 state, owned by modules/sm.py
        # Outbound filters, in order: each returns the stanza to send (maybe another one) or
        # None when it kept or dropped it. Empty on the fast path.
        self.out_filters: tuple[Callable[[Session, Element], Element | None], ...] = ()
        self.mailbox = transport.mailbox
        self.closed = False  # ending or ended: unbound, nothing more is delivered
        self.ended = False  # `session-closed` fired and leftovers routed again
        self._corked: list[bytes] | None = None  # presence bytes gathered by `corked()`

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.full or self.transport.peer}>"

    @property
    def established(self) -> bool:
        return self.stream.phase is st.Phase.ESTABLISHED

    # ---- input ------------------------------------------------------------------------------

    async def data_received(self, data: bytes) -> None:
        stream = self.stream
        if data:
            stream.receive_data(data)
        while True:
            event = stream.next_event()
            if event is st.NEED_DATA or event is st.PAUSED:
                break
            await self._handle(event)
            if self.closed:
                break  # closed, or <resume/> handed this stream to the resumed session
        self._flush()

    async def _handle(self, event: object) -> None:
        if isinstance(event, st.StanzaIn):
            stanza, started, sm = event.stanza, metrics.clock(), self.sm
            if sm is None:
                await self.host.route(self, stanza)  # type: ignore[union-attr]
            else:
                await sm.inbound(self, stanza)
            metrics.routed(stanza.tag, started)
        elif isinstance(event, st.LocalReply):
            self._flush()  # keep the stream's own output in order
            self.write_stanza(event.reply)
            if self.sm is not None:
                self.sm.handled_here()
        elif isinstance(event, (st.NeedScramCredentials, st.NeedPasswordCheck)):
            await self._sasl_check(event)
        elif isinstance(event, st.AuthFailed):
            self._auth_failed(event)
        elif isinstance(event, st.StartTLS):
            self._flush()
            cb_data = await self.transport.start_tls()  # the transport raises if this fails
            self.stream.tls_established(cb_data)
            log.info("%s tls established", self.id)
        elif isinstance(event, st.Authenticated):
            self.server.login_throttle.record_success(
                self.transport.peer, f"{event.username}@{self.stream.domain}", time.monotonic()
            )
            metrics.login(event.mechanism, True)
            log.info(
                "%s authenticated as %s@%s (%s)",
                self.id,
                event.username,
                self.stream.domain,
                event.mechanism,
            )
        elif isinstance(event, st.BindRequest):
            await self._bind(event)
        elif isinstance(event, st.NonzaIn):
            host = self.server.hosts[self.stream.domain]
            handler = host.nonza_handlers.get(event.element.tag)
            if handler is None:
                name = local_name(event.element)
                self.kill("unsupported-stanza-type", f"<{name}/> is not supported")
            else:
                self._flush()  # what the stream wrote before (a bind result) goes first
                await handler(self, event.element)
        elif isinstance(event, st.Closed):
            detail = f" ({event.text})" if event.text else ""
            log.info("%s stream closed: %s%s", self.id, event.reason, detail)
            self._close_transport()

    async def _sasl_check(self, need: st.NeedScramCredentials | st.NeedPasswordCheck) -> None:
        """Password guessing (xmppd/throttle.py): the gate waits as long as this address and
        account have earned before the backend is asked, and refuses banned addresses. A
        PLAIN failure is counted (AuthFailed, next event) before any other task runs: nothing
        between here and there is a checkpoint, so the next attempt in line sees it."""
        account = f"{need.username}@{self.stream.domain}"
        async with self.server.login_gate.attempt(self.transport.peer, account) as allowed:
            if self.stream.closed:
                return  # timed out or shut down while waiting
            # A banned or disabled account (xmppd/bans.py) fails with <account-disabled/> and
            # the reason only once its password is proven: no oracle for guessers.
            self.stream.refuse_success = self.server.bans.login_refusal(account)
            if not allowed:
                self.kill("policy-violation", BANNED_TEXT)
            elif isinstance(need, st.NeedScramCredentials):
                await self._scram_credentials(need)
            else:
                await self._check_password(need)

    def _auth_failed(self, event: st.AuthFailed) -> None:
        if event.condition != "not-authorized":
            return  # aborted, bad encoding, backend down...: no secret was tried
        account = f"{event.username}@{self.stream.domain}" if event.username else None
        peer = self.transport.peer
        log.info("%s authentication failed for %r from %s", self.id, event.username, peer)
        metrics.login(self.stream.sasl_mechanism, False)
        if self.server.login_throttle.record_failure(peer, account, time.monotonic()):
            self.kill("policy-violation", BANNED_TEXT)

    async def _scram_credentials(self, need: st.NeedScramCredentials) -> None:
        auth = self.server.hosts[self.stream.domain].auth
        await self._ask_auth(
            auth.get_scram_credentials(need.username, need.hash_name),
            self.stream.sasl_credentials,
        )

    async def _check_password(self, need: st.NeedPasswordCheck) -> None:
        auth = self.server.hosts[self.stream.domain].auth
        await self._ask_auth(
            auth.check_password(need.username, need.password),
            self.stream.sasl_password_checked,
        )

    async def _ask_auth(self, lookup: Awaitable[Any], answer: Callable) -> None:
        """Hand the backend's answer to the stream; unreachable means temporary-auth-failure."""
        try:
            result = await lookup
        except AuthError as exc:
            log.warning("%s account lookup failed: %s", self.id, exc)
            self.stream.sasl_unavailable()
            return
        answer(result)

    async def _bind(self, request: st.BindRequest) -> None:
        host = self.server.hosts[self.stream.domain]
        bare = f"{request.username}@{host.domain}"
        existing = host.resources_of(bare)
        limit = self.server.config.limits["resources_per_account"]
        names = host.all_resources(bare) if host.remote_delivery else existing  # cluster-wide
        if len(names) >= limit and request.resource not in names:
            self.stream.bind_failed("resource-constraint", f"at most {limit} sessions per account")
            return
        old = existing.get(request.resource) if request.resource is not None else None
        if old is not None:
            # RFC 6120 §7.7.2.2: the older session gets <conflict/> and ends before this one
            # binds, so contacts see its unavailable before the new session's presence.
            old.replaced()
            await old.end()
        self.host = host
        jid = host.bind(self, request.username, request.resource)
        self.bound_at = time.time()
        self.jid, self.full, self.bare = jid, str(jid), str(jid.bare)
        self.stream.bind_done(jid)
        log.info("%s bound %s", self.id, self.full)
        if host.events.has_handlers("session-bound"):  # no task per login for nobody
            self.server.nursery_soon(host.events.fire, "session-bound", self)

    # ---- output -----------------------------------------------------------------------------

    def _flush(self) -> None:
        data = self.stream.data_to_send()
        if data:
            self.send_raw(data)

    def send_raw(self, data: bytes) -> None:
        """Bytes for this client, in order: straight to the socket when possible."""
        if not self.transport.write_nowait(data):
            self.mailbox.put(data, len(data))

    def deliver(self, topic: str, message: object) -> None:
        """pubsub Subscriber: a stanza routed to this session."""
        if (self.closed or self.stream.closed) and not (self.sm and self.sm.hibernating):
            self.server.undeliverable(self, message)
            return
        for out_filter in self.out_filters:
            message = out_filter(self, message)  # type: ignore[arg-type]
            if message is None:
                return
        self.write_stanza(message)  # type: ignore[arg-type]

    def add_out_filter(self, out_filter: Callable[[Session, Element], Element | None]) -> None:
        self.out_filters = (*self.out_filters, out_filter)

    def remove_out_filter(self, out_filter: Callable[[Session, Element], Element | None]) -> None:
        self.out_filters = tuple(f for f in self.out_filters if f is not out_filter)

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """Presence written meanwhile leaves in one write at the end, not one each (a MUC
        join's n presences). Only on byte streams: a WebSocket frames each stanza."""
        if self._corked is not None or not getattr(self.transport, "coalesces", False):
            yield
            return
        self._corked = []
        try:
            yield
        finally:
            self._uncork()
            self._corked = None

    def _uncork(self) -> None:
        if self._corked:
            data = b"".join(self._corked)
            self._corked.clear()
            self.send_raw(data)

    def _gathered(self, message: Element, data: bytes) -> bool:
        """Corked: keep a presence for the one write; anything else flushes what is kept
        and goes on its own (a message keeps its element beside its bytes, see below)."""
        if message.tag == PRESENCE:
            self._corked.append(data)  # type: ignore[union-attr]
            return True
        self._uncork()
        return False

    def write_presence_bytes(self, data: bytes) -> bool:
        """A presence the caller serialized, for a session that would write it as it is (no
        out filters, no stream management, still open); False: deliver the element instead."""
        if self.out_filters or self.sm is not None or self.closed or self.stream.closed:
            return False
        if self._corked is not None:
            self._corked.append(data)
        else:
            self.send_raw(data)
        return True

    def write_stanza(self, message: Element) -> None:
        """Send a stanza past the filters (CSI flushes come through here): the one place that
        counts stanzas for stream management."""
        metrics.sent(message.tag)  # type: ignore[arg-type]
        sm = self.sm
        if sm is not None:
            sm.write(self, message)  # queued until acknowledged, then transmit()
            return
        data = etree.tostring(message)  # type: ignore[arg-type]
        if self._corked is not None and self._gathered(message, data):
            return
        if self.transport.write_nowait(data):
            if self.mailbox.queued_items:  # part of it waits for the socket: keep its stanza
                self.transport.label_partial(message)
            return
        # Keep the element beside its bytes so an overflow can bounce it, not lose it.
        if not self.mailbox.put((data, message), len(data)):
            self.server.undeliverable(self, message)

    def transmit(self, message: Element) -> bool:
        """Serialize and write without counting (SM: queued already); False: refused."""
        data = etree.tostring(message)  # type: ignore[arg-type]
        if self._corked is not None and self._gathered(message, data):
            return True
        return self.transport.write_nowait(data) or self.mailbox.put(data, len(data))

    def keepalive(self) -> None:
        """The connection is idle: with SM an <r/> (the answer proves the client alive)."""
        if self.sm is not None:
            self.sm.request_ack(self)
        else:
            self.send_raw(b" ")

    def overflowed(self) -> None:
        """The transport's mailbox is full: the client stopped reading."""
        log.warning(
            "%s %s stopped reading: %d bytes queued; disconnecting",
            self.id,
            self.full,
            self.mailbox.queued_bytes,
        )
        metrics.overflow(self.transport)
        self.kill("policy-violation", "too much unread data", queue=False)

    # ---- closing ----------------------------------------------------------------------------

    def kill(
        self,
        condition: str,
        text: str | None = None,
        *,
        queue: bool = True,
        app: Element | None = None,
    ) -> None:
        """Close with a stream error. Safe to call from any task."""
        if self.closed:
            return
        sm = self.sm
        if sm is not None:
            if sm.hibernating:  # no connection to tell: end the session now
                log.info("%s hibernating session ends: %s", self.id, condition)
                self._close_transport()
                self.server.nursery_soon(self.end)
                return
            sm.closing(self)
        self.stream.stream_error(condition, text, app)
        log.info("%s stream error %s%s", self.id, condition, f": {text}" if text else "")
        if queue:
            self._flush()
        self._close_transport()

    def timed_out(self) -> None:
        """Silent for too long. A resumable session keeps waiting without the connection: no
        stream error, so the stream stays unfinished (XEP-0198 §7) and it hibernates."""
        if self.sm is not None and self.sm.resumable:
            log.info("%s idle for too long; dropping the connection", self.id)
            self.transport.abort()
        else:
            self.kill("connection-timeout", "idle for too long")

    def replaced(self) -> None:
        self.kill("conflict", "replaced by a new session with the same resource")

    def _close_transport(self) -> None:
        if self.host is not None:
            self.host.unbind(self)  # stanzas re-routed from here on must not come back to us
        self.transport.abort()

    def take_over(self, shell: Session, *, old_alive: bool) -> None:
        """Stream resumption: carry on over the connection and stream of `shell` (the session
        that sent <resume/>). The shell gets ours: dead, or still open and closed here with
        <conflict/> (XEP-0198 §5); its stanzas in flight are in the unacked queue anyway."""
        shell._flush()
        self.transport, shell.transport = shell.transport, self.transport
        self.stream, shell.stream = shell.stream, self.stream
        self.mailbox, shell.mailbox = shell.mailbox, self.mailbox
        self.transport.rebind(self)
        shell.transport.rebind(shell)
        if old_alive:
            shell.kill("conflict", "the session was resumed on another connection")
        shell.closed = True  # it reads no more, and its end is nobody's session-closed
        log.info("%s %s resumed from %s (%s)", self.id, self.full, self.transport.peer, shell.id)

    async def closed_by_transport(self) -> None:
        """The connection is gone: hibernate (resumable SM session, no closing tag) or end."""
        if self.closed:
            return
        sm = self.sm
        if sm is not None and not self.stream.closed and sm.hibernate(self):
            self.mailbox.drain()  # written or not, each stanza waits in sm's unacked queue
            log.info("%s %s lost its connection; hibernating", self.id, self.full)
            return
        await self.end()

    async def end(self) -> None:
        """The session is over: unregister, tell modules, route again what the client did not
        get (unacknowledged with SM, else still queued for the socket)."""
        if self.closed:
            return
        self.closed = True
        sm = self.sm
        queued = self.mailbox.drain()
        host = self.host
        if sm is not None:
            leftovers = sm.finish(self)
        else:
            leftovers = [item[1] for item in queued if type(item) is tuple]
            if leftovers and host is not None:  # queued just now: routed to the others too
                now = time.time()
                leftovers = [
                    s
                    for s in leftovers
                    if local_name(s) != "message"
                    or not router.reached_elsewhere(host, self, s, now)
                ]
        try:
            if host is not None:
                host.unbind(self)
                with contextlib.suppress(Exception):  # logged by the bus; leftovers go on
                    await host.events.fire("session-closed", self)
                if leftovers:
                    await self.server.reroute(self, leftovers)
        finally:
            self.ended = True
        log.info("%s disconnected %s", self.id, self.full or self.transport.peer)
