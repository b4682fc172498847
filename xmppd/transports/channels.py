"""JSON channels over HTTP: the trio shell around `ChannelSession` (xmppd/channels/session.py).

Endpoints, as `phoenix.js` calls them (docs/channels.md):

* `GET /socket/websocket?vsn=2.0.0&token=...`: one WebSocket, one text message per V2 frame.
* `GET|POST /socket/longpoll?vsn=2.0.0&token=...`: Phoenix's long-poll fallback. The first GET
  opens a session and answers `{"status": 410, "token": <session token>}`; later GETs carry
  that token and wait up to `LONGPOLL_WINDOW` for frames (`{"status": 200, "messages": [...]}`
  or `204`); POSTs carry client frames, one per line (ndjson). An unknown or ended session
  token gets 410 (the client reconnects), a refused host-app token 403. Every answer is HTTP
  200 with the status in the JSON body, as Phoenix's client reads it.
* `GET|POST /credentials`: a host-app token (Authorization: Bearer, or `token=`) buys a
  one-time XMPP password: `{"jid": ..., "password": ...}` (Converse.js `credentials_url`).

The host-app token comes from the `X-Phoenix-AuthToken` header, the `base64url.bearer.phx.`
WebSocket subprotocol (phoenix.js `authToken`), or the `token` query parameter (`params`).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import h11
import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage

from auth.tokens import Claims, TokenError

from .. import metrics
from ..channels.session import ChannelError, ChannelSession
from ..protocol.channels import FrameError
from ..protocol.websocket import accept_key
from ..ratelimit import TokenBucket
from ..tokens import EXPIRED, REVOKED
from .http import HttpError, Request
from .login import refuse_disabled
from .wswriter import FrameWriter, WriteFailed

if TYPE_CHECKING:
    from .http import HttpConnection, Web

log = logging.getLogger("xmppd.channels")
WEBSOCKET_PATH = "/socket/websocket"
LONGPOLL_PATH = "/socket/longpoll"
CREDENTIALS_PATH = "/credentials"
LOGIN_PATH, LOGOUT_PATH = "/login", "/logout"  # transports/login.py
PATHS = (WEBSOCKET_PATH, LONGPOLL_PATH, CREDENTIALS_PATH, LOGIN_PATH, LOGOUT_PATH)
LONGPOLL_WINDOW = 10.0  # seconds a poll is held, and twice that ends an unpolled session
BEARER_PROTOCOL = "base64url.bearer.phx."
_SESSION_PREFIX = "lp."
RECEIVE_SIZE = 16 * 1024
# Application close codes (RFC 6455 §7.4.2) for a session its token no longer covers.
TOKEN_CLOSE_CODES = {EXPIRED: 4001, REVOKED: 4003}
_ECHOED = frozenset({1002, 1007, 1009})  # wsproto's answers to a broken frame
_MAX_REASON = 120


async def handle(conn: HttpConnection, request: Request) -> tuple[int, list, bytes]:
    web = conn.web
    if request.method == "OPTIONS":
        return _preflight(web, request)
    web.check_encryption(request)  # a token is as good as a password
    if request.path in (LOGIN_PATH, LOGOUT_PATH):
        from . import login

        return await (login.login if request.path == LOGIN_PATH else login.logout)(web, request)
    if request.path == WEBSOCKET_PATH:
        await _websocket(conn, request)
        return 101, [], b""
    manager = _manager(web)
    if request.path == LONGPOLL_PATH:
        return await manager.longpoll(request)
    return await manager.credentials(request)


def _preflight(web: Web, request: Request) -> tuple[int, list, bytes]:
    cors = web.cors_headers(request)
    if not cors:
        raise HttpError(403, "cross-origin requests from this origin are not allowed")
    allow = "Content-Type, Authorization, X-Phoenix-AuthToken"
    methods = "GET, POST, OPTIONS"
    return (
        204,
        [*cors, ("Access-Control-Allow-Methods", methods)]
        + [
            ("Access-Control-Allow-Headers", allow),
            ("Access-Control-Max-Age", "86400"),
        ],
        b"",
    )


def _params(request: Request) -> list[tuple[str, str]]:
    return parse_qsl(request.query, keep_blank_values=True)


def app_token(request: Request) -> str | None:
    """The host app's token; a long-poll session token is not one."""
    header = request.headers.get("x-phoenix-authtoken")
    if header:
        return header
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    for offered in request.headers.get("sec-websocket-protocol", "").split(","):
        offered = offered.strip()
        if offered.startswith(BEARER_PROTOCOL):
            encoded = offered[len(BEARER_PROTOCOL) :]
            try:
                return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except ValueError:
                return None
    for key, value in _params(request):
        if key == "token" and value != "null" and not value.startswith(_SESSION_PREFIX):
            return value
    return None


async def verify(web: Web, request: Request) -> Claims:
    """The host-app token's claims. A refused token is a failed login from that address
    (xmppd/throttle.py): guessing tokens is slowed down and banned like guessing passwords."""
    token = app_token(request)
    if token is None:
        log.warning("refused a channel request from %s: no token", request.peer)
        raise HttpError(401, "a host-application token is required")
    throttle, peer = web.server.login_throttle, request.peer
    async with web.server.login_gate.attempt(peer, None) as allowed:
        if not allowed:
            web.refuse_banned(peer)
        try:
            claims = web.server.tokens.verify(token, peer=peer)
        except TokenError as exc:  # logged by the verifier
            throttle.record_failure(peer, None, time.monotonic())
            metrics.login("token", False)
            raise HttpError(403, f"token refused: {exc}") from None
    throttle.record_success(peer, claims.jid, time.monotonic())
    refuse_disabled(web.server, claims.jid)  # banned or disabled: no channel session
    metrics.login("token", True)
    return claims


# ---- WebSocket ----------------------------------------------------------------------------------


def _upgrade_headers(web: Web, request: Request) -> list[tuple[str, str]]:
    headers = request.headers
    if request.method != "GET" or "websocket" not in headers.get("upgrade", "").lower():
        raise HttpError(426, "this endpoint speaks WebSocket", [("Upgrade", "websocket")])
    if headers.get("sec-websocket-version", "").strip() != "13":
        raise HttpError(426, "WebSocket version 13 is required", [("Sec-WebSocket-Version", "13")])
    key = headers.get("sec-websocket-key", "").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        valid = False
    if not valid:
        raise HttpError(400, "Sec-WebSocket-Key is not a base64 16-byte nonce")
    web.check_origin(request)
    out = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    out.append(("Sec-WebSocket-Accept", accept_key(key)))
    if "phoenix" in [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]:
        out.append(("Sec-WebSocket-Protocol", "phoenix"))
    return out


async def _websocket(conn: HttpConnection, request: Request) -> None:
    web = conn.web
    upgrade = _upgrade_headers(web, request)
    claims = await verify(web, request)
    web.acquire_session(request.peer)
    try:
        session = _open(web, claims, request)
        await conn._send(h11.InformationalResponse(status_code=101, headers=upgrade))
        trailing, _closed = conn.h11.trailing_data
        ws = Connection(ConnectionType.SERVER, trailing_data=trailing)
        log.info("%s over WebSocket from %s", session.id, request.peer)
        await WebSocketChannel(conn.stream, ws, session, web.limits).serve()
    finally:
        web.release_session(request.peer)


def _open(web: Web, claims: Claims, request: Request) -> ChannelSession:
    try:
        return ChannelSession(web.server, claims, request.peer, web.limits)
    except ChannelError as exc:
        raise HttpError(403, str(exc)) from None


class WebSocketChannel:
    """One reader task and one writer task; every write goes through one `FrameWriter`."""

    def __init__(
        self, stream: Any, ws: Connection, session: ChannelSession, limits: dict[str, Any]
    ) -> None:
        self.stream, self.ws, self.session, self.limits = stream, ws, session, limits
        self.writer = FrameWriter(stream, ws)
        self.close_code = 1000
        self.close_reason: str | None = None
        self._closed = False

    async def serve(self) -> None:
        try:
            with trio.CancelScope(deadline=self.session.deadline) as lifetime:
                self.session.lifetime = lifetime  # end() cancels it, a refresh moves it
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer)
                    await self._reader()
                    await self._close()  # before queued frames, after the one being sent
                    nursery.cancel_scope.cancel()
            if lifetime.cancelled_caught:
                self.session.end(EXPIRED)  # unless it was revoked
                reason = self.session.end_reason or EXPIRED
                self._refuse(TOKEN_CLOSE_CODES.get(reason, 1001), reason)
        finally:
            with trio.CancelScope(shield=True):
                await self.session.close()
                await self._close()
                await trio.aclose_forcefully(self.stream)

    def _refuse(self, code: int, reason: str | None) -> None:
        # a close frame's reason must fit in 123 bytes of UTF-8 (RFC 6455 §5.5)
        short = (reason or "").encode()[:_MAX_REASON].decode(errors="ignore")
        self.close_code, self.close_reason = code, short or None

    async def _reader(self) -> None:
        limits = self.limits
        rate = limits["messages_per_second"]
        bucket = TokenBucket(rate, rate, trio.current_time(), "channel_messages")
        pending: list[str] = []
        while True:
            with trio.move_on_after(limits["idle_timeout"]) as idle:
                try:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return
            if idle.cancelled_caught:
                log.info("%s: no heartbeat for %ss", self.session.id, limits["idle_timeout"])
                return
            self.ws.receive_data(data or None)
            if not data:
                return
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    pending.append(event.data)
                    if sum(map(len, pending)) > limits["max_message_bytes"]:
                        return self._refuse(1009, "message too large")
                    if not event.message_finished:
                        continue
                    text = "".join(pending)
                    pending.clear()
                    try:
                        await self.session.receive(text)
                    except FrameError as exc:
                        log.info("%s: bad frame: %s", self.session.id, exc)
                        return self._refuse(1007, str(exc))
                    pause = bucket.spend(1, trio.current_time())
                    if pause:
                        await trio.sleep(pause)
                elif isinstance(event, BytesMessage):
                    return self._refuse(1003, "V2 frames are text messages")
                elif isinstance(event, Ping):
                    try:
                        await self.writer.pong(event.payload)
                    except WriteFailed as exc:
                        log.info("%s: lost while answering a ping: %s", self.session.id, exc)
                        return
                elif isinstance(event, CloseConnection):
                    # a broken frame (wsproto's 1002, 1007 for bad UTF-8, 1009) is answered
                    # with its own code; a client's close with a plain 1000
                    if event.code in _ECHOED:
                        self._refuse(event.code, event.reason)
                    return

    async def _writer(self) -> None:
        try:
            while True:
                try:
                    batch = await self.session.outbox.get_batch()
                except trio.EndOfChannel:
                    break
                await self.writer.send(Message(data=str(text)) for text in batch)
        except WriteFailed as exc:
            log.info("%s: write failed: %s", self.session.id, exc)
        # The outbox closed (overflow) or the socket broke: stop reading too.
        await trio.aclose_forcefully(self.stream)

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.writer.close_quietly(self.close_code, self.close_reason)


# ---- long-poll and credentials -------------------------------------------------------------------


class LongPollSession:
    __slots__ = ("session", "token", "peer", "last_seen", "lock")

    def __init__(self, session: ChannelSession, peer: str) -> None:
        self.session, self.peer = session, peer
        self.token = _SESSION_PREFIX + secrets.token_urlsafe(24)
        self.last_seen = trio.current_time()
        self.lock = trio.Lock()


class ChannelManager:
    """Long-poll sessions by token, their sweeper, and the credentials endpoint."""

    def __init__(self, web: Web) -> None:
        self.web = web
        self.sessions: dict[str, LongPollSession] = {}

    async def run(self) -> None:
        while True:
            await trio.sleep(1)
            now = trio.current_time()
            for token, lp in list(self.sessions.items()):
                session = lp.session
                if now >= session.deadline:
                    session.end(EXPIRED)  # the next (or the held) poll learns why: _gone()
                idle = now - lp.last_seen > 2 * LONGPOLL_WINDOW and not lp.lock.locked()
                if idle or (session.outbox.closed and session.end_reason is None):
                    await self._end(token)
                elif session.end_reason is not None:
                    await session.close()  # out of its rooms now; the entry waits for a poll

    async def _end(self, token: str) -> None:
        lp = self.sessions.pop(token, None)
        if lp is not None:
            await lp.session.close()
            self.web.release_session(lp.peer)

    def _reply(
        self, request: Request, body: dict[str, Any], status: int = 200
    ) -> tuple[int, list, bytes]:
        headers = [("Content-Type", "application/json"), *self.web.cors_headers(request)]
        return status, headers, json.dumps(body).encode()

    def _session(self, request: Request) -> LongPollSession | None:
        for key, value in _params(request):
            if key == "token" and value.startswith(_SESSION_PREFIX):
                return self.sessions.get(value)
        return None

    async def longpoll(self, request: Request) -> tuple[int, list, bytes]:
        if request.method not in ("GET", "POST"):
            raise HttpError(405, "use GET or POST", [("Allow", "GET, POST, OPTIONS")])
        lp = self._session(request)
        if lp is not None and lp.peer != request.peer:
            lp = None  # a session token is only good from where it was opened
        if lp is not None and lp.session.end_reason is not None:
            return await self._gone(request, lp)
        if request.method == "POST":
            if lp is None:
                return self._reply(request, {"status": 410})
            return await self._post(request, lp)
        if lp is None:
            return await self._open(request)
        async with lp.lock:
            lp.last_seen = trio.current_time()
            messages: list[Any] = []
            with trio.move_on_after(LONGPOLL_WINDOW):
                try:
                    messages = await lp.session.outbox.get_batch()
                except trio.EndOfChannel:
                    if lp.session.end_reason is not None:
                        return await self._gone(request, lp)
                    await self._end(lp.token)
                    return self._reply(request, {"status": 410})
            lp.last_seen = trio.current_time()
        if not messages:
            return self._reply(request, {"status": 204, "token": lp.token})
        return self._reply(request, {"status": 200, "token": lp.token, "messages": messages})

    async def _gone(self, request: Request, lp: LongPollSession) -> tuple[int, list, bytes]:
        """A session its token no longer covers: 403 with the reason (phoenix.js closes the
        socket with 1008 and reconnects later, with a fresh token if `params` is a function)."""
        await self._end(lp.token)
        return self._reply(request, {"status": 403, "reason": lp.session.end_reason})

    async def _open(self, request: Request) -> tuple[int, list, bytes]:
        try:
            claims = await verify(self.web, request)
        except HttpError as exc:
            log.info("long-poll from %s refused: %s", request.peer, exc.text)
            return self._reply(request, {"status": 403, "reason": exc.text})
        self.web.acquire_session(request.peer)
        try:
            lp = LongPollSession(_open(self.web, claims, request), request.peer)
        except HttpError:
            self.web.release_session(request.peer)
            raise
        self.sessions[lp.token] = lp
        log.info("%s over long-poll from %s", lp.session.id, request.peer)
        return self._reply(request, {"status": 410, "token": lp.token})

    async def _post(self, request: Request, lp: LongPollSession) -> tuple[int, list, bytes]:
        """Client frames, one per line. A bad frame is this request's error (HTTP 400, and
        the frames after it are not read); the session lives on, as the socket's would not,
        because a request is the unit of failure here and the client may simply retry."""
        lp.last_seen = trio.current_time()
        try:
            text = request.body.decode()
        except UnicodeDecodeError:
            return self._bad_frame(request, lp, "the body is not UTF-8")
        for number, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                await lp.session.receive(line)
            except FrameError as exc:
                return self._bad_frame(request, lp, f"line {number}: {exc}")
        return self._reply(request, {"status": 200, "token": lp.token})

    def _bad_frame(
        self, request: Request, lp: LongPollSession, reason: str
    ) -> tuple[int, list, bytes]:
        log.info("%s: bad frame: %s", lp.session.id, reason)
        body = {"status": 400, "token": lp.token, "reason": reason}
        return self._reply(request, body, status=400)

    async def credentials(self, request: Request) -> tuple[int, list, bytes]:
        """A one-time XMPP password for the token's user (Converse.js `credentials_url`)."""
        if request.method not in ("GET", "POST"):
            raise HttpError(405, "use GET or POST", [("Allow", "GET, POST, OPTIONS")])
        claims = await verify(self.web, request)
        if claims.role == "guest":
            raise HttpError(403, "guest tokens cannot log in over XMPP")
        if claims.jid.partition("@")[2] not in self.web.server.hosts:
            raise HttpError(403, "that user's domain is not served here")
        password = self.web.server.tokens.issue_password(claims)
        log.info("issued a one-time XMPP password for %s (app %s)", claims.jid, claims.app)
        return self._reply(request, {"jid": claims.jid, "password": password})


def _manager(web: Web) -> ChannelManager:
    manager = getattr(web, "channels", None)
    if manager is None:
        raise HttpError(503, "channels are not running")
    return manager
