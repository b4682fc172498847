"""BOSH (XEP-0124/0206): the trio shell that turns HTTP requests into a c2s `Session` transport.

Each BOSH session is a `BoshConnection`, the `Transport` of one `Session` (the same class TCP and
WebSocket clients use). The session writes into the connection's mailbox; a request is held
(at most `hold` = 1 of them) until there is output, `wait` seconds pass, or a newer request
arrives, and is answered with what the mailbox holds. Requests are processed in rid order; a
repeated rid gets its answer again (XEP-0124 §14), also when it repeats a request still held
(§14.3: a proxy gave up on it early). A session with no request for `inactivity` seconds has
lost its "connection": the session then ends, or hibernates when stream management (XEP-0198)
made it resumable, exactly as when a TCP connection breaks.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

import trio

from pubsub import Mailbox

from ..protocol import bosh as proto
from ..protocol.bosh import BoshError
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import Element
from ..ratelimit import TokenBucket
from ..session import Session
from .connection import ConnectionLost
from .http import HttpError, Request

if TYPE_CHECKING:
    from .http import Web

log = logging.getLogger("xmppd.web")
_HEADERS = [("Content-Type", "text/xml; charset=utf-8")]


class BoshConnection:
    """The transport of one BOSH session."""

    __slots__ = (
        "sid",
        "peer",
        "mailbox",
        "limits",
        "window",
        "wait",
        "hold",
        "polling",
        "inactivity",
        "lang",
        "to",
        "ack",
        "open_requests",
        "last_request",
        "last_empty",
        "opened_at",
        "aborted",
        "terminated",
        "done",
        "session",
        "_held",
        "_held_rid",
        "_due",
        "_copies",
        "_turn",
        "_bucket",
    )

    def __init__(self, web: Web, peer: str, body: Element, rid: int) -> None:
        cfg = web.config
        self.sid = secrets.token_urlsafe(18)
        self.peer = peer
        self.limits = web.limits
        self.wait = min(proto.integer(body, "wait", 60), int(cfg["bosh_max_wait"]))
        self.hold = min(proto.integer(body, "hold", 1), 1)  # §7.1: the server may lower it
        self.polling = int(cfg["bosh_polling"])
        self.inactivity = int(cfg["bosh_max_inactivity"])
        self.window = proto.RidWindow(rid, self.hold + 1)
        self.lang = body.get(proto.XML_LANG, "en")
        self.to = body.get("to") or ""
        self.ack = body.get("ack") == "1"
        self.open_requests = 0
        self.opened_at = self.last_request = trio.current_time()
        self.last_empty = -1e9
        self.aborted = False  # the session closed the stream; answer with what is left
        self.terminated = False  # the terminate body was sent
        self.done = trio.Event()  # the "connection" is over
        self.session: Session | None = None
        self._held: trio.CancelScope | None = None
        self._held_rid = -1
        self._due: dict[int, _Due] = {}  # rids received and not yet answered
        self._copies = 0  # retransmissions waiting for their first copy's answer
        self._turn = trio.Condition()  # wakes requests waiting for their rid
        rate = cfg["messages_per_second"]
        self._bucket = TokenBucket(rate, rate, trio.current_time(), "bosh_requests")
        self.mailbox = Mailbox(
            max_items=self.limits["queued_stanzas"],
            max_bytes=self.limits["queued_bytes"],
            on_overflow=self._overflowed,
        )

    def _overflowed(self, _mailbox: Mailbox) -> None:
        if self.session is not None:
            self.session.overflowed()

    # ---- Transport ----------------------------------------------------------------------------

    async def start_tls(self) -> bytes | None:
        raise ConnectionLost("no STARTTLS over BOSH")  # never offered

    def write_nowait(self, data: bytes) -> bool:
        return False

    def abort(self) -> None:
        self.aborted = True
        self._release_held()

    def rebind(self, session: Session) -> None:
        self.session = session

    def _release_held(self) -> None:
        if self._held is not None:
            self._held.cancel()

    # ---- the session's life -------------------------------------------------------------------

    async def serve(self, web: Web) -> None:
        try:
            await self.done.wait()
        finally:
            with trio.CancelScope(shield=True):
                if self.session is not None:
                    await self.session.closed_by_transport()
            web.bosh.sessions.pop(self.sid, None)
            web.release_session(self.peer)

    def check(self, now: float) -> None:
        """Once a second: inactivity (§8) and the login deadline."""
        session = self.session
        if self.open_requests == 0 and now - self.last_request > self.inactivity:
            log.info("%s BOSH session %s inactive; closing", session and session.id, self.sid)
            self.done.set()
        elif (
            session is not None
            and not session.established
            and now - self.opened_at > self.limits["login_timeout"]
        ):
            session.kill("connection-timeout", "login took too long")

    # ---- requests -----------------------------------------------------------------------------

    async def request(self, body: Element, rid: int, *, first: bool = False) -> bytes:
        """Process one request in rid order, then hold it until there is something to say."""
        kind = "next" if first else self.window.classify(rid)
        if kind == "repeat":
            return self.window.answer(rid)  # type: ignore[return-value]
        if kind == "pending":
            return await self._retransmitted(rid)
        self.window.received(rid)
        due = self._due[rid] = _Due()
        self.open_requests += 1
        try:
            if self.open_requests > self.hold + 1:
                raise BoshError("policy-violation", "too many simultaneous requests")
            await self._pace()
            if not first:
                await self._wait_turn(rid)
            self.last_request = trio.current_time()
            items = await self._process(body, rid, first)
            due.answer = self._answer(rid, items, first)
        finally:
            self.open_requests -= 1
            self.last_request = trio.current_time()
            del self._due[rid]
            if due.answer is None:
                self.window.failed(rid)
            else:
                self.window.answered(rid, due.answer)
            due.event.set()
        return due.answer

    async def _retransmitted(self, rid: int) -> bytes:
        """XEP-0124 §14.3: a copy of a request still in progress (a proxy or browser gave up on
        the first before `wait`). A held first copy is answered now, with what is queued (often
        an empty body), as a newer request would make it (§10); both copies get that answer.
        A copy of a request waiting for its turn waits with it."""
        if self._copies > self.hold:
            raise BoshError("policy-violation", "too many retransmissions at once")
        due = self._due[rid]
        self._copies += 1
        self.last_request = trio.current_time()
        try:
            if self._held_rid == rid:
                self._release_held()
            await due.event.wait()
        finally:
            self._copies -= 1
            self.last_request = trio.current_time()
        if due.answer is None:
            raise BoshError("item-not-found", f"rid {rid} was refused")
        log.info("%s BOSH rid %d retransmitted; answered again", self.sid, rid)
        return due.answer

    async def _pace(self) -> None:
        """`messages_per_second` for requests: faster clients are slowed down, not refused."""
        pause = self._bucket.spend(1, trio.current_time())
        if pause:
            await trio.sleep(pause)

    async def _wait_turn(self, rid: int) -> None:
        async with self._turn:
            with trio.move_on_after(self.wait) as scope:
                while rid != self.window.last + 1 and not self.aborted:
                    await self._turn.wait()
            if scope.cancelled_caught:
                raise BoshError("item-not-found", f"the requests before rid {rid} never came")

    async def _process(self, body: Element, rid: int, first: bool) -> list[object]:
        if not first:
            self.window.processed(rid)
            async with self._turn:
                self._turn.notify_all()
        session = self.session
        assert session is not None
        messages = proto.payload(body)
        if first or body.get(proto.RESTART) == "true":
            to = body.get("to") or self.to
            messages.insert(0, proto.open_message(to, body.get(proto.XML_LANG, self.lang)))
        if body.get("type") == "terminate":
            messages.append(proto.CLOSE)
        if not messages and self.hold == 0:
            self._check_polling()
        for message in messages:
            if session.closed or self.aborted:
                break
            await session.data_received(message)
            session = self.session  # <resume/> may have handed us to another session
            assert session is not None
        return await self._hold(rid, first or bool(self.mailbox.queued_items))

    def _check_polling(self) -> None:
        now = trio.current_time()
        if now - self.last_empty < self.polling:
            raise BoshError("policy-violation", f"poll at most every {self.polling} seconds")
        self.last_empty = now

    async def _hold(self, rid: int, ready: bool) -> list[object]:
        """Answer at once with what is queued, or wait for output (§10: hold and wait)."""
        self._release_held()  # the older held request answers now: this one takes its place
        if ready or self.aborted or self.hold == 0:
            return self.mailbox.drain()
        scope = self._held = trio.CancelScope(deadline=trio.current_time() + self.wait)
        self._held_rid = rid
        items: list[object] = []
        with scope:
            items = await self.mailbox.get_batch()
        if self._held is scope:
            self._held = None
            self._held_rid = -1
        return items + self.mailbox.drain()

    def _answer(self, rid: int, items: list[object], first: bool) -> bytes:
        data = [item[0] if type(item) is tuple else item for item in items]
        out = proto.split_output([d for d in data if type(d) is bytes])
        attrs: dict[str, str] = {}
        if first:
            attrs = self._creation_attrs(rid, out.authid)
        elif rid < self.window.last:
            attrs["ack"] = str(self.window.last)  # §9.1: newer requests were processed
        terminate = out.terminate or self.aborted
        if terminate:
            self.terminated = True
            self.done.set()
        return proto.response(
            out.payload, attrs=attrs, terminate=terminate, condition=out.condition
        )

    def _creation_attrs(self, rid: int, authid: str | None) -> dict[str, str]:
        """XEP-0124 §7.1 and XEP-0206 §3: the session's parameters."""
        session = self.session
        attrs = {
            "sid": self.sid,
            "wait": str(self.wait),
            "requests": str(self.hold + 1),
            "hold": str(self.hold),
            "inactivity": str(self.inactivity),
            "polling": str(self.polling),
            "ver": proto.VERSION,
            "from": session.stream.domain if session is not None else self.to,
            "xmpp:version": "1.0",
            "xmpp:restartlogic": "true",
        }
        if authid:
            attrs["authid"] = authid
        if self.ack:
            attrs["ack"] = str(rid)
        return attrs


class _Due:
    """The answer to one rid, for its retransmitted copies to wait on."""

    __slots__ = ("event", "answer")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.answer: bytes | None = None


class BoshManager:
    """All BOSH sessions of the web listener, by sid."""

    def __init__(self, web: Web) -> None:
        self.web = web
        self.sessions: dict[str, BoshConnection] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            while True:
                await trio.sleep(1)
                now = trio.current_time()
                for connection in list(self.sessions.values()):
                    connection.check(now)

    async def handle(self, request: Request) -> tuple[int, list, bytes]:
        web = self.web
        cors = web.cors_headers(request)
        sid = None
        try:
            web.check_encryption(request)
            body = proto.parse_body(
                request.body, web.config["max_body_bytes"], web.limits["max_depth"]
            )
            rid = proto.integer(body, "rid")
            sid = body.get("sid")
            if sid is None:
                web.refuse_banned(request.peer)  # HTTP 429, not a BOSH error: no session yet
                answer = await self._create(request, body, rid)
            else:
                connection = self.sessions.get(sid)
                if connection is None or connection.terminated:
                    raise BoshError("item-not-found", "no such session")
                answer = await connection.request(body, rid)
        except BoshError as exc:
            log.info("BOSH request from %s refused: %s %s", request.peer, exc.condition, exc.text)
            answer = proto.error_response(exc)
            if sid in self.sessions:
                self._end(self.sessions[sid], exc)
        return 200, _HEADERS + cors, answer

    async def _create(self, request: Request, body: Element, rid: int) -> bytes:
        web = self.web
        to = body.get("to")
        if not to or _domain(to) not in web.server.hosts:
            raise BoshError("host-unknown", f"this server does not serve {to!r}")
        if body.get(proto.XMPP_VERSION, "1.0").split(".")[0] != "1":
            raise BoshError("bad-request", "xmpp:version 1.0 is required")
        connection = BoshConnection(web, request.peer, body, rid)  # may refuse the attributes
        try:
            web.acquire_session(request.peer)
        except HttpError as exc:
            raise BoshError("policy-violation", exc.text) from None
        session = Session(web.server, connection, web.settings(secure=request.secure))
        connection.session = session
        self.sessions[connection.sid] = connection
        assert self._nursery is not None
        self._nursery.start_soon(connection.serve, web)
        log.info(
            "%s connected from %s over BOSH (sid %s)", session.id, request.peer, connection.sid
        )
        return await connection.request(body, rid, first=True)

    def _end(self, connection: BoshConnection, exc: BoshError) -> None:
        if connection.session is not None:
            connection.session.kill("policy-violation", exc.text or exc.condition, queue=False)
        connection.terminated = True
        connection.done.set()


def _domain(to: str) -> str:
    try:
        return JID.parse(to).domain
    except JIDError:
        return ""
