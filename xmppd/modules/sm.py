"""XEP-0198 Stream Management: stanza acknowledgements and resumption of broken streams.

Counting. After `<enable/>` every stanza from the client is counted once its routing has
completed (the router awaits storage, so an acknowledgement means durable), and every stanza
written to it goes through `StreamManagement.write()` (called by `Session.write_stanza`, the
one place stanzas are written) into the unacknowledged queue until an `<a h/>` covers it.

Hibernation. When the connection of a resumable session breaks without a closing tag (§7), the
session hibernates: it stays bound and available and stanzas for it keep queueing, for `timeout`
seconds. A new stream of the same account sends `<resume/>` before binding; the session takes
over that stream and connection (`Session.take_over`) and re-sends what the client did not
acknowledge. If nobody resumes it, `Session.end()` closes it for real: `session-closed` fires
only then, and the unacknowledged stanzas are routed again (`Server.reroute`: other resources,
offline storage, or an error for the sender).
"""

from __future__ import annotations

import contextlib
import datetime
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio
from lxml import etree

from ..module import Implements, Module, ModuleSpec
from ..options import Option
from ..protocol import namespaces as ns
from ..protocol.stanza import Element, copy, element, local_name, qname, sub
from ..protocol.stream import Phase
from ..router import reached_elsewhere

if TYPE_CHECKING:
    from ..session import Session

MASK = 0xFFFFFFFF  # h and the send count are xs:unsignedInt, wrapping to 0 after 2^32 - 1 (§4)
_R = f"<r xmlns='{ns.SM}'/>".encode()
_DELAY = qname(ns.DELAY, "delay")
SETTLE_SECONDS = 10.0  # longest wait for the old connection's stanza in flight on a resume


def parse_count(value: str | None) -> int | None:
    """An xs:unsignedInt attribute value, or None when absent or not one."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    return number if number <= MASK else None


def state_of(session: Session) -> StreamManagement | None:
    return session.sm  # type: ignore[return-value]


def ack_element(h: int) -> bytes:
    return f"<a xmlns='{ns.SM}' h='{h}'/>".encode()


def failed_element(condition: str, text: str | None = None, h: int | None = None) -> bytes:
    """§6: <failed/> carries a stanza error condition; `h` when a known session has ended (§5)."""
    failed = element(ns.SM, "failed")
    if h is not None:
        failed.set("h", str(h))
    sub(failed, ns.STANZA_ERRORS, condition)
    if text:
        sub(failed, ns.STANZA_ERRORS, "text", text).set(qname(ns.XML, "lang"), "en")
    return etree.tostring(failed)


def utc_stamp(seconds: float) -> str:
    """XEP-0082 DateTime in UTC with milliseconds."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class Counters:
    """The §4 counters, sans-IO: stanzas handled from the client, stanzas sent to it, and the
    sent ones it has not acknowledged yet (each with the time it was sent)."""

    __slots__ = ("handled", "sent", "unacked")

    def __init__(self) -> None:
        self.handled = 0
        self.sent = 0
        self.unacked: deque[tuple[Element, float]] = deque()

    @property
    def acked(self) -> int:
        return (self.sent - len(self.unacked)) & MASK

    def received(self) -> None:
        self.handled = (self.handled + 1) & MASK

    def queued(self, stanza: Element, stamp: float) -> None:
        self.sent = (self.sent + 1) & MASK
        self.unacked.append((stanza, stamp))

    def ack_problem(self, h: int) -> str | None:
        """Why `h` cannot be right, or None: it may not exceed what was sent nor go back."""
        ahead = (h - self.acked) & MASK
        if ahead <= len(self.unacked):
            return None
        if (self.acked - h) & MASK < ahead:
            return "behind"
        return "too-high"

    def ack(self, h: int) -> bool:
        """The client handled every stanza up to `h`: forget those. False if `h` is wrong."""
        if self.ack_problem(h) is not None:
            return False
        for _ in range((h - self.acked) & MASK):
            self.unacked.popleft()
        return True


class StreamManagement(Counters):
    """One session's XEP-0198 state (`Session.sm`)."""

    __slots__ = (
        "manager",
        "id",
        "resumable",
        "timeout",
        "hibernating",
        "timer",
        "since",
        "busy",
        "frozen",
        "idle",
        "awaiting",
        "requested_at",
    )

    def __init__(self, manager: Manager, sm_id: str | None, timeout: int) -> None:
        super().__init__()
        self.manager = manager
        self.id = sm_id
        self.resumable = sm_id is not None
        self.timeout = timeout
        self.hibernating = False
        self.timer: trio.CancelScope | None = None  # the hibernation window
        self.since = 0.0  # when hibernation began (trio clock)
        self.busy = False  # a stanza from the client is being routed
        self.frozen = False  # a resumption is taking the session over: count nothing more
        self.idle: trio.Event | None = None  # set when `busy` ends, for a waiting resumption
        self.awaiting = False  # our <r/> is unanswered
        self.requested_at = 0  # the send count when we last sent <r/>

    # ---- called by Session ------------------------------------------------------------------

    async def inbound(self, session: Session, stanza: Element) -> None:
        if self.frozen:
            return  # not handled, so not counted: the client sends it again after resuming
        stream = session.stream
        self.busy = True
        try:
            await session.host.route(session, stanza)  # type: ignore[union-attr]
        finally:
            self.busy = False
            if self.idle is not None:
                self.idle.set()
        if session.stream is stream:  # still the stream the stanza came from
            self.received()

    def handled_here(self) -> None:
        self.received()

    def write(self, session: Session, stanza: Element) -> None:
        self.queued(stanza, time.time())
        limit = self.manager.max_unacked
        if len(self.unacked) > limit:
            # The client does not acknowledge: end the session, the queue is routed again.
            session.kill("policy-violation", f"more than {limit} stanzas not acknowledged")
            return
        if self.hibernating:
            return  # kept for the resumption
        session.transmit(stanza)  # if refused (closing), it stays queued all the same
        if not self.awaiting and (self.sent - self.requested_at) & MASK >= self.manager.every:
            self.request_ack(session)

    def request_ack(self, session: Session) -> None:
        self.awaiting = True
        self.requested_at = self.sent
        session.send_raw(_R)

    def closing(self, session: Session) -> None:
        # The server closes the stream: tell the client what we handled (XEP-0198 1.5.2).
        session.send_raw(ack_element(self.handled))

    def hibernate(self, session: Session) -> bool:
        return self.manager.hibernate(session, self)

    def finish(self, session: Session) -> list[Element]:
        return self.manager.finish(session, self)


class Manager:
    """Stream management for one host: the protocol handlers and the resumable sessions."""

    def __init__(self, module: Module) -> None:
        self.host = module.host
        self.log = module.log
        options = module.options
        self.max_resume_timeout: int = options["max_resume_timeout"]
        self.resume_timeout: int = min(options["resume_timeout"], self.max_resume_timeout)
        self.max_unacked: int = options["max_unacked"]
        self.max_hibernating: int = options["max_hibernating"]
        self.every: int = options["request_every"]
        self.remember: int = options["remember_expired"]
        self.resumable: dict[str, Session] = {}  # SM-ID -> session, until it ends
        # Per account: SM-IDs of sessions that ended -> their final h, for <failed h/> (§5).
        self.ended: dict[str, OrderedDict[str, int]] = {}
        # Cluster mode (xmppd/cluster_admin.py): (bare, SM-ID) -> the final h of that session
        # on another node, which it ends (its unacknowledged stanzas routed again) first.
        self.resume_elsewhere: Callable[[str, str], Awaitable[int | None]] | None = None

    # ---- <enable/>, <r/>, <a/> ----------------------------------------------------------------

    async def enable(self, session: Session, el: Element) -> None:
        if session.sm is not None:
            # §3: at most one attempt; answered as the XEP's example shows, the stream goes on.
            session.send_raw(failed_element("unexpected-request", "already enabled"))
            return
        if not session.established:
            session.send_raw(failed_element("unexpected-request", "bind a resource first"))
            return
        timeout = self.resume_timeout
        if (asked := el.get("max")) is not None:
            seconds = parse_count(asked)
            if not seconds:
                session.send_raw(failed_element("bad-request", "max is a positive integer"))
                return
            timeout = min(seconds, self.max_resume_timeout)
        sm_id = secrets.token_urlsafe(24) if el.get("resume") in ("true", "1") else None
        enabled = element(ns.SM, "enabled")
        if sm_id is not None:
            enabled.set("id", sm_id)
            enabled.set("resume", "true")
            enabled.set("max", str(timeout))
            self.resumable[sm_id] = session
        session.send_raw(etree.tostring(enabled))
        session.sm = StreamManagement(self, sm_id, timeout)  # counting starts now (§4 note)

    async def request(self, session: Session, el: Element) -> None:
        sm = state_of(session)
        if sm is None:
            session.kill("unsupported-stanza-type", "stream management is not enabled")
            return
        session.send_raw(ack_element(sm.handled))

    async def ack(self, session: Session, el: Element) -> None:
        sm = state_of(session)
        if sm is None:
            session.kill("unsupported-stanza-type", "stream management is not enabled")
            return
        h = parse_count(el.get("h"))
        if h is None:
            session.kill("invalid-xml", "<a/> needs an 'h' attribute (an unsignedInt)")
            return
        if not sm.ack(h):
            self.bad_ack(session, sm, h)
            return
        sm.awaiting = False
        if sm.unacked and (sm.sent - sm.requested_at) & MASK >= self.every:
            sm.request_ack(session)

    def bad_ack(self, session: Session, sm: StreamManagement, h: int) -> None:
        if sm.ack_problem(h) == "behind":
            text = f"h={h} is below the {sm.acked} stanzas you acknowledged before"
            session.kill("undefined-condition", text)
            return
        # §6: an 'h' above what was sent is a stream error naming both counts.
        app = element(ns.SM, "handled-count-too-high", h=str(h), **{"send-count": str(sm.sent)})
        text = f"you acknowledged {h} stanzas, but only {sm.sent} were sent"
        session.kill("undefined-condition", text, app=app)

    # ---- <resume/> ------------------------------------------------------------------------------

    async def resume(self, shell: Session, el: Element) -> None:
        """§5, on the new stream (`shell`), before binding."""
        stream = shell.stream
        if stream.phase is not Phase.BIND:
            shell.send_raw(failed_element("unexpected-request", "resume before binding"))
            return
        previd, h = el.get("previd") or "", parse_count(el.get("h"))
        if not previd or h is None:
            shell.send_raw(failed_element("bad-request", "previd and an unsignedInt h needed"))
            return
        bare = f"{stream.username}@{stream.domain}"
        old = self.resumable.get(previd)
        sm = state_of(old) if old is not None and old.bare == bare and not old.closed else None
        if old is None or sm is None or sm.frozen:
            # Another account's session is as unknown as an expired one.
            known = self.ended.get(bare, {}).pop(previd, None)
            if old is None and known is None and self.resume_elsewhere is not None:
                # On another node: not resumable here, but it ends now, so what the client
                # did not acknowledge is routed again before this stream binds anew.
                known = await self.resume_elsewhere(bare, previd)
            shell.send_raw(failed_element("item-not-found", "no session to resume", known))
            return
        if sm.ack_problem(h) is not None:
            text = f"h={h} does not match the {sm.sent} stanzas sent"
            shell.send_raw(failed_element("undefined-condition", text))
            return
        sm.frozen = True
        try:
            await self.settle(sm)
        finally:
            sm.frozen = False
        if old.closed or shell.closed or shell.stream is not stream or not sm.ack(h):
            shell.send_raw(failed_element("item-not-found", "the session ended meanwhile"))
            return
        self.resumed(old, shell, sm, previd)
        # Before the next element from the client (XEP-0352 §5.1-5.2: the resumed stream is
        # active, and an <inactive/> right behind <resume/> must not be undone afterwards).
        with contextlib.suppress(Exception):  # logged by the bus; the session goes on
            await self.host.events.fire("session-resumed", old)

    async def end_for_peer(self, bare: str, previd: str) -> int | None:
        """Another node was asked to resume this session: it ends here, what it holds is
        routed again (other resources, offline storage), and its final h is returned."""
        old = self.resumable.get(previd)
        sm = state_of(old) if old is not None and old.bare == bare else None
        if old is None or sm is None:
            return self.ended.get(bare, {}).pop(previd, None)
        handled = sm.handled
        old.kill("conflict", "the session was resumed on another node")
        with trio.move_on_after(SETTLE_SECONDS):
            while not old.ended:
                await trio.sleep(0.02)
        self.ended.get(bare, {}).pop(previd, None)
        return handled

    @staticmethod
    async def settle(sm: StreamManagement) -> None:
        """Let a stanza still being routed from the old connection finish (and be counted)."""
        with trio.move_on_after(SETTLE_SECONDS):
            while sm.busy:
                sm.idle = trio.Event()
                await sm.idle.wait()
        sm.idle = None

    def resumed(self, old: Session, shell: Session, sm: StreamManagement, previd: str) -> None:
        old_alive = not sm.hibernating
        if sm.timer is not None:
            sm.timer.cancel()
            sm.timer = None
        sm.hibernating = False
        old.take_over(shell, old_alive=old_alive)
        old.stream.resumed(old.jid)  # type: ignore[arg-type]
        old.send_raw(f"<resumed xmlns='{ns.SM}' previd='{previd}' h='{sm.handled}'/>".encode())
        for stanza, stamp in sm.unacked:  # re-sent, not counted again
            old.transmit(self.delayed(stanza, stamp))
        sm.awaiting = False
        if sm.unacked:
            sm.request_ack(old)

    def delayed(self, stanza: Element, stamp: float) -> Element:
        """A message sent again carries the time it was first sent (§4, XEP-0203)."""
        if local_name(stanza) != "message" or stanza.find(_DELAY) is not None:
            return stanza
        out = copy(stanza)
        sub(out, ns.DELAY, "delay", **{"from": self.host.domain, "stamp": utc_stamp(stamp)})
        return out

    # ---- hibernation and the end ------------------------------------------------------------

    def hibernate(self, session: Session, sm: StreamManagement) -> bool:
        if not sm.resumable or sm.id not in self.resumable:
            return False
        sm.hibernating = True
        sm.awaiting = False
        sm.since = trio.current_time()
        sm.timer = trio.CancelScope(deadline=sm.since + sm.timeout)
        session.server.nursery_soon(self.expire_later, session, sm, sm.timer)
        self.limit_hibernating(session.bare)
        if self.host.events.has_handlers("session-hibernated"):
            session.server.nursery_soon(self.host.events.fire, "session-hibernated", session)
        return True

    def limit_hibernating(self, bare: str) -> None:
        sleeping = [
            s
            for s in self.host.resources_of(bare).values()
            if s.sm is not None and s.sm.hibernating and not s.closed
        ]
        sleeping.sort(key=lambda s: s.sm.since)  # type: ignore[union-attr]
        for session in sleeping[: max(0, len(sleeping) - self.max_hibernating)]:
            session.kill("resource-constraint", "too many sessions waiting to be resumed")

    async def expire_later(
        self, session: Session, sm: StreamManagement, timer: trio.CancelScope
    ) -> None:
        with timer:
            await trio.sleep_forever()
        if sm.timer is timer and sm.hibernating and not session.closed:
            self.log.info("%s %s was not resumed in %ds", session.id, session.full, sm.timeout)
            await session.end()

    def finish(self, session: Session, sm: StreamManagement) -> list[Element]:
        """The session ends for real: forget it, return what the client never acknowledged
        and no other resource of the account got either (to be routed again)."""
        if sm.timer is not None:
            sm.timer.cancel()
            sm.timer = None
        sm.hibernating = False
        session.sm = None
        if sm.id is not None and self.resumable.get(sm.id) is session:
            del self.resumable[sm.id]
            if self.remember:
                ended = self.ended.setdefault(session.bare, OrderedDict())
                ended[sm.id] = sm.handled
                while len(ended) > self.remember:
                    ended.popitem(last=False)
        leftovers = [
            self.delayed(stanza, stamp)
            for stanza, stamp in sm.unacked
            if local_name(stanza) != "message"
            or not reached_elsewhere(self.host, session, stanza, stamp)
        ]
        sm.unacked.clear()
        return leftovers


def load(module: Module) -> None:
    manager = Manager(module)
    module.host.services["sm"] = manager
    module.host.events.declare(
        "session-hibernated",  # Session: its connection broke; it waits to be resumed
        "session-resumed",  # Session: a new stream resumed it
    )
    module.add_stream_feature(element(ns.SM, "sm"))
    module.hook_nonza(ns.SM, "enable", manager.enable)
    module.hook_nonza(ns.SM, "r", manager.request)
    module.hook_nonza(ns.SM, "a", manager.ack)
    module.hook_nonza(ns.SM, "resume", manager.resume)


spec = ModuleSpec(
    name="sm",
    summary="stream management: acknowledgements, resumption of broken streams",
    load=load,
    options={
        "resume_timeout": Option(int, 300, "seconds a broken session waits to be resumed", min=1),
        "max_resume_timeout": Option(
            int, 3600, "longest resumption window a client may ask for ('max')", min=1
        ),
        "max_unacked": Option(
            int, 500, "unacknowledged stanzas per session; more closes the session", min=1
        ),
        "max_hibernating": Option(
            int, 5, "sessions per account waiting to be resumed; the oldest ends first", min=1
        ),
        "request_every": Option(int, 5, "stanzas sent between the server's <r/>", min=1),
        "remember_expired": Option(
            int, 10, "ended sessions per account whose final h a failed resume reports", min=0
        ),
    },
    implements=(
        Implements("XEP-0198", "1.6.3", note="c2s acks and resumption; no SASL2/BIND2 inlining"),
    ),
)
