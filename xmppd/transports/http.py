"""The web listener: one HTTP(S) port for XMPP over WebSocket, BOSH and XEP-0156 discovery.

HTTP/1.1 is parsed by h11 (sans-IO); this file only moves bytes and routes requests:

* `GET /xmpp-websocket` with an upgrade -> RFC 7395 (transports/websocket.py)
* `POST /http-bind` -> XEP-0124/0206 BOSH (transports/bosh.py)
* `GET /.well-known/host-meta` and `host-meta.json` -> XEP-0156 links to both, with CORS
* `OPTIONS` -> CORS preflight
* `GET /` and its files -> the web client (transports/webclient.py)
* `/socket/websocket`, `/socket/longpoll`, `/credentials` -> JSON channels (transports/channels.py)
* `GET /metrics` -> Prometheus metrics, to `metrics.allow` addresses only (transports/scrape.py)

Two listeners: `tls_port` (HTTPS, the server's certificate) and `port` (plain, loopback by
default, meant for a TLS-terminating proxy on the same machine). Streams over HTTPS are
encrypted; streams over the plain port count as encrypted when `plain_is_encrypted` is true,
otherwise `c2s.require_encryption` refuses them with 403 (no STARTTLS exists over HTTP).

Limits: header and body size; connections still in their TLS handshake or request head per
address (`http.pending_per_ip`, the oldest dropped for a newcomer, `http.header_timeout`);
requests and sessions past their head per client address (`limits.connections_per_ip`); XMPP
sessions per client address (`http.sessions_per_ip`, WebSocket and BOSH together); concurrent
TLS handshakes per listener (`limits.tls_handshakes`). Behind `http.trusted_proxies` the
client address comes from `Forwarded`/`X-Forwarded-For` (transports/httpguard.py). Bad
requests get an HTTP status with its reason phrase and a plain-text reason.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import time
from collections import Counter
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import h11
import trio
from wsproto.connection import Connection, ConnectionType

from .. import metrics
from ..api.service import AdminApi
from ..protocol.stream import StreamSettings
from ..protocol.websocket import (
    FramedParser,
    Refusal,
    check_upgrade,
    normalize_origin,
    origin_allowed,
)
from ..session import BANNED_TEXT, Session
from . import listen, scrape
from .connection import Sweeper, drop_frames
from .httpguard import Pending, client_address, framing_problem, own_origins, parse_networks
from .tcp import PerAddressCap
from .tls import HandshakeGate
from .webclient import StaticFiles, find_root

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger("xmppd.web")
RECEIVE_SIZE = 16 * 1024
WEBSOCKET_PATH = "/xmpp-websocket"
BOSH_PATH = "/http-bind"
HOST_META = "/.well-known/host-meta"
CHANNEL_PATHS = ("/socket/websocket", "/socket/longpoll", "/credentials", "/login", "/logout")
HOST_META_JSON = "/.well-known/host-meta.json"
XRD_NS = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
WEBSOCKET_REL = "urn:xmpp:alt-connections:websocket"
BOSH_REL = "urn:xmpp:alt-connections:xbosh"
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_HOST_HEADER = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


class HttpError(Exception):
    def __init__(self, status: int, text: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(status, text)
        self.status, self.text, self.headers = status, text, headers or []


@dataclasses.dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lowercase names; repeated headers joined with ", "
    body: bytes
    peer: str
    secure: bool  # arrived over TLS, or over the plain port counted as encrypted
    scheme: str  # "https" or "http": how the client reached us
    query: str = ""  # what follows "?" in the target (JSON channels read their token there)


class Web:
    """Shared state of the web listeners: limits, settings, the BOSH sessions."""

    def __init__(self, server: Server) -> None:
        from .bosh import BoshManager  # bosh imports this module for Request/HttpError
        from .channels import ChannelManager  # so does channels

        self.server = server
        self.config = server.config.http
        self.limits = {**server.config.limits, **server.config.http}
        self.sweeper = Sweeper()
        self.trusted = parse_networks(self.config["trusted_proxies"])
        # Requests and sessions past their head, per client address; heads have their own budget.
        self.connections = PerAddressCap(server.config.limits["connections_per_ip"])
        self.pending = Pending(self.config["pending_per_ip"], self.trusted)
        origins = self.config["origins"]
        self.own_origins = own_origins(server.config)
        self.allowed_origins = self.own_origins | {
            "*" if o == "*" else normalize_origin(o) or o for o in origins
        }
        self._refused_origins: set[str] = set()
        self.sessions: Counter[str] = Counter()
        self.bosh = BoshManager(self)
        self.channels = ChannelManager(self)
        self._settings: dict[bool, StreamSettings] = {}
        self.static = StaticFiles(find_root())
        self.api = AdminApi(server)  # /api/ (xmppd/api/, docs/api.md)
        self.scrape = scrape.Endpoint(self)  # GET /metrics (Prometheus)
        server.events.hook("config-reloaded", self._reloaded)

    async def _reloaded(self, event: Any) -> None:
        """SIGHUP: new web sessions get the new message rate; /metrics its new allow list."""
        self.limits["messages_per_second"] = self.config["messages_per_second"]
        self.scrape.reload(self.server.config.metrics["allow"])

    def settings(self, *, secure: bool) -> StreamSettings:
        """c2s stream settings without STARTTLS, parsing one framed message per feed (WebSocket
        messages, children of BOSH bodies)."""
        if secure not in self._settings:
            base = self.server.stream_settings(direct_tls=secure)
            self._settings[secure] = dataclasses.replace(
                base, tls_available=False, direct_tls=secure, parser=FramedParser
            )
        return self._settings[secure]

    def acquire_session(self, peer: str) -> None:
        limit = self.config["sessions_per_ip"]
        if self.sessions[peer] >= limit:
            log.warning("refused a web session from %s: %d open", peer, limit)
            metrics.refused("sessions_per_ip")
            raise HttpError(429, f"at most {limit} XMPP sessions per address")
        self.sessions[peer] += 1

    def release_session(self, peer: str) -> None:
        self.sessions[peer] -= 1
        if self.sessions[peer] <= 0:
            del self.sessions[peer]

    def check_origin(self, request: Request) -> None:
        """Browser WebSockets (XMPP, JSON channels): the page's Origin is ours or listed."""
        origin = request.headers.get("origin")
        if origin is None or origin_allowed(origin, self.allowed_origins):
            return
        if origin not in self._refused_origins and len(self._refused_origins) < 1000:
            self._refused_origins.add(origin)  # once per origin: a page retries in a loop
            log.warning(
                "refused a WebSocket from a page at %s (client %s): to allow it, add it to "
                "http.origins",
                origin,
                request.peer,
            )
        raise HttpError(403, f"origin {origin} is not allowed (server option http.origins)")

    def refuse_banned(self, peer: str) -> None:
        """An address banned for failed logins opens no session (xmppd/throttle.py)."""
        left = self.server.login_throttle.banned(peer, time.monotonic())
        if left:
            log.debug("refused a web login from %s: banned for failed logins", peer)
            raise HttpError(429, BANNED_TEXT, [("Retry-After", str(math.ceil(left)))])

    def check_encryption(self, request: Request) -> None:
        if not request.secure and self.server.config.c2s["require_encryption"]:
            raise HttpError(403, "encryption is required: use HTTPS")

    # ---- CORS and discovery -------------------------------------------------------------------

    def cors_headers(self, request: Request) -> list[tuple[str, str]]:
        origin = request.headers.get("origin")
        allowed = self.config["cors_origins"]
        if origin is None or not allowed:
            return []
        if "*" in allowed:
            return [("Access-Control-Allow-Origin", "*")]
        if origin.rstrip("/").lower() in (a.rstrip("/").lower() for a in allowed):
            return [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        return []

    def preflight(self, request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        cors = self.cors_headers(request)
        if not cors:
            raise HttpError(403, "cross-origin requests from this origin are not allowed")
        return (
            204,
            cors
            + [
                ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
                ("Access-Control-Allow-Headers", "Content-Type"),
                ("Access-Control-Max-Age", "86400"),
            ],
            b"",
        )

    def base_url(self, request: Request) -> str:
        public = self.config["public_url"].rstrip("/")
        if public:
            return public
        host = request.headers.get("host", "")
        if not _HOST_HEADER.fullmatch(host):
            raise HttpError(400, "a valid Host header is required")
        return f"{request.scheme}://{host}"

    def host_meta(self, request: Request, as_json: bool) -> tuple[int, list, bytes]:
        """XEP-0156 §3: where the WebSocket and BOSH endpoints are."""
        base = self.base_url(request)
        ws_base = "wss" + base[5:] if base.startswith("https") else "ws" + base[4:]
        links = [(WEBSOCKET_REL, ws_base + WEBSOCKET_PATH), (BOSH_REL, base + BOSH_PATH)]
        if as_json:
            body = json.dumps({"links": [{"rel": r, "href": h} for r, h in links]}).encode()
            kind = "application/json"
        else:
            rows = "".join(f"<Link rel='{r}' href='{_attr(h)}'/>" for r, h in links)
            body = f"<?xml version='1.0' encoding='utf-8'?><XRD xmlns='{XRD_NS}'>{rows}</XRD>"
            body, kind = body.encode(), "application/xrd+xml"
        return 200, [("Content-Type", kind), *self.cors_headers(request)], body


def _head_only(raw: bytes) -> bytes:
    """The request line and headers of `raw` (what follows the blank line is body)."""
    match = _BLANK_LINE.search(raw)
    return raw[: match.start()] if match else raw


def _attr(value: str) -> str:
    return value.replace("&", "&amp;").replace("'", "&apos;").replace("<", "&lt;")


# ---- listeners ----------------------------------------------------------------------------------


async def serve_http(
    server: Server, *, task_status: trio.TaskStatus[dict[str, int]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Listen on the configured ports; reports {"http": port, "https": port}."""
    cfg = server.config.http
    web = Web(server)
    bound: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(web.sweeper.run)
        nursery.start_soon(web.bosh.run)
        nursery.start_soon(web.channels.run)
        plan = (
            ("https", cfg["tls_port"], cfg["interfaces"]),
            ("http", cfg["port"], cfg["plain_interfaces"]),
        )
        for name, port, interfaces in plan:
            if not port:
                continue
            listeners = []
            for interface in interfaces:
                host = None if interface == "*" else interface
                try:
                    listeners += await listen.open_tcp_listeners(
                        port, host=host, reuse_port=server.reuse_port
                    )
                except OSError as exc:
                    raise OSError(
                        exc.errno, f"cannot listen for {name} on {interface} port {port}: {exc}"
                    ) from exc
                port = port or listeners[0].socket.getsockname()[1]
            bound[name] = port
            gate = HandshakeGate(web.limits["tls_handshakes"]) if name == "https" else None
            for listener in listeners:
                nursery.start_soon(_accept_loop, web, listener, gate, nursery)
            log.info(
                "listening for %s (WebSocket, BOSH) on %s port %d",
                name,
                ", ".join(interfaces),
                port,
            )
        if server.config.metrics.get("port"):
            bound["metrics"] = await nursery.start(scrape.serve_port, web)
        from . import upload  # XEP-0363 services learn their URL and folder

        upload.attach(server, bound.get("https"))
        web.static.file_origins = upload.origins(server)  # the client shows and uploads files
        task_status.started(bound)


async def _accept_loop(
    web: Web, listener: trio.SocketListener, gate: HandshakeGate | None, nursery: trio.Nursery
) -> None:
    while True:
        if gate is not None:
            await gate.acquire()  # past the cap, new connections wait in the accept backlog
        try:
            stream = await listener.accept()
        except OSError as exc:
            if gate is not None:
                gate.release()
            log.error("accept failed (%s); pausing for 100 ms", exc)
            await trio.sleep(0.1)
            continue
        nursery.start_soon(_connection, web, stream, gate)


async def _connection(web: Web, stream: trio.abc.Stream, gate: HandshakeGate | None) -> None:
    try:
        peer = stream.socket.getpeername()[0]  # type: ignore[attr-defined]
    except OSError:  # reset before we got to it
        if gate is not None:
            gate.release()
        await trio.aclose_forcefully(stream)
        return
    try:
        with web.pending.waiting(peer) as pending:  # the TLS handshake is part of the head
            if gate is not None:
                assert web.server.ssl_context is not None
                stream = trio.SSLStream(stream, web.server.ssl_context, server_side=True)
                await _handshake(web, stream, gate)
        if pending.cancelled_caught:
            log.debug("dropped a TLS handshake from %s: that address opened newer ones", peer)
            return
        await HttpConnection(web, stream, peer, gate is not None).run()
    except trio.TooSlowError as exc:
        timeout = web.limits["tls_handshake_timeout"]
        log.debug(
            "TLS handshake from %s not finished within %g s (limits.tls_handshake_timeout); "
            "closing",
            peer,
            timeout,
        )
        drop_frames(exc)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        log.debug("HTTP connection from %s ended: %s", peer, exc or type(exc).__name__)
        drop_frames(exc)
    except Exception:
        log.exception("HTTP connection from %s failed", peer)
    finally:
        await trio.aclose_forcefully(stream)
        _break_ssl_cycle(stream)


async def _handshake(web: Web, stream: trio.SSLStream, gate: HandshakeGate) -> None:
    try:
        with trio.fail_after(web.limits["tls_handshake_timeout"]):
            await stream.do_handshake()
    finally:
        gate.release()


def _break_ssl_cycle(stream: trio.abc.Stream) -> None:
    """trio's SSLStream holds a bound method of itself (`_handshook = _Once(self._do_handshake)`):
    every stream is a reference cycle, and its OpenSSL state (tens of KiB) waited for a full
    garbage collection; 3,000 stalled handshakes a round grew the process by ~130 MB a round
    (bench/tls_stall_bench.py). Dropping that attribute of a closed stream frees it at once."""
    if isinstance(stream, trio.SSLStream) and "_handshook" in vars(stream):
        del stream._handshook


class HttpConnection:
    """Requests one after another on one connection (keep-alive), until an upgrade or close."""

    def __init__(self, web: Web, stream: trio.abc.Stream, peer: str, tls: bool) -> None:
        self.web = web
        self.stream = stream
        self.peer = peer
        self.tls = tls
        self.h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=web.config["max_header_bytes"]
        )
        self._head: bytearray | None = None  # raw bytes of the request head being read

    async def run(self) -> None:
        web = self.web
        while True:
            with web.pending.waiting(self.peer) as pending:
                try:
                    with trio.fail_after(web.config["header_timeout"]):
                        head = await self._read_head()
                except HttpError as exc:
                    await self._respond(exc.status, exc.headers, exc.text.encode(), text=True)
                    return
                except trio.TooSlowError:
                    return  # no request, or half a head: nothing to answer
            if pending.cancelled_caught:
                log.debug(
                    "dropped a slow HTTP request head from %s: it opened newer ones", self.peer
                )
                return
            if head is None:
                return
            client = client_address(self.peer, head[1], web.trusted)
            banned = web.server.bans.address_refusal(client)  # xmppd/bans.py
            if banned and not head[0].target.startswith(b"/api/"):  # api.allow rules there
                await self._respond(403, [], banned.encode(), text=True)
                return
            if not web.connections.acquire(client):
                log.warning("refused an HTTP request from %s: too many open", client)
                text = b"too many connections from your address"
                await self._respond(429, [], text, text=True)
                return
            try:
                if not await self._serve_request(*head, client):
                    return
            finally:
                web.connections.release(client)
            self.h11.start_next_cycle()

    async def _serve_request(
        self, event: h11.Request, headers: dict[str, str], client: str
    ) -> bool:
        """One request after its head; True when the connection may carry the next one."""
        if event.target.startswith(b"/upload/"):  # XEP-0363 files: transports/upload.py
            from . import upload

            return await upload.serve(self, event, headers)
        try:
            with trio.fail_after(self.web.config["request_timeout"]):
                request = await self._read_body(event, headers, client)
        except HttpError as exc:
            await self._respond(exc.status, exc.headers, exc.text.encode(), text=True)
            return False
        except trio.TooSlowError:
            await self._respond(408, [], b"request took too long", text=True)
            return False
        if request is None:
            return False
        try:
            status, response_headers, body = await self._dispatch(request)
        except HttpError as exc:
            status, response_headers, body = exc.status, exc.headers, exc.text.encode()
            response_headers = response_headers + self.web.cors_headers(request)
            await self._respond(status, response_headers, body, text=True)
            if self.h11.our_state is not h11.DONE:
                return False
        else:
            if status == 101:
                return False  # the WebSocket took the connection over and is finished with it
            await self._respond(status, response_headers, body)
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    async def _read_head(self) -> tuple[h11.Request, dict[str, str]] | None:
        self._head = bytearray(self.h11.trailing_data[0])  # a pipelined request's first bytes
        try:
            event = await self._next_event()
        finally:
            raw, self._head = bytes(self._head), None
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request)
        limit = self.web.config["max_header_bytes"]
        size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
        if size > limit:  # h11 only limits headers that arrive in pieces
            raise HttpError(431, f"the request line and headers are limited to {limit} bytes")
        problem = framing_problem(_head_only(raw), list(event.headers))
        if problem is not None:
            raise HttpError(400, problem)  # answered with Connection: close (RFC 9112 §6.1)
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        limit = self.web.config["max_body_bytes"]
        uploading = event.target.startswith(b"/upload/")  # streamed: the slot sets the size
        if not uploading and int(headers.get("content-length", "0") or 0) > limit:
            raise HttpError(413, f"the body is limited to {limit} bytes")
        return event, headers

    async def _read_body(
        self, event: h11.Request, headers: dict[str, str], client: str
    ) -> Request | None:
        limit = self.web.config["max_body_bytes"]
        chunks: list[bytes] = []
        size = 0
        while True:
            part = await self._next_event()
            if isinstance(part, h11.EndOfMessage):
                break
            if isinstance(part, h11.Data):
                size += len(part.data)
                if size > limit:
                    raise HttpError(413, f"the body is limited to {limit} bytes")
                chunks.append(part.data)
            elif isinstance(part, h11.ConnectionClosed):
                return None
        secure = self.tls or self.web.config["plain_is_encrypted"]
        path, _, query = event.target.decode("latin-1").partition("?")
        return Request(
            method=event.method.decode(),
            path=path,
            query=query,
            headers=headers,
            body=b"".join(chunks),
            peer=client,
            secure=secure,
            scheme="https" if self.tls else "http",
        )

    async def _next_event(self) -> Any:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                raise HttpError(status, f"bad request: {exc}") from None
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(RECEIVE_SIZE)
                if self._head is not None and len(self._head) < 2 * RECEIVE_SIZE:
                    self._head += data
                self.h11.receive_data(data)
                continue
            if event is h11.PAUSED:
                return h11.ConnectionClosed()
            return event

    async def _dispatch(self, request: Request) -> tuple[int, list, bytes]:
        web, method, path = self.web, request.method, request.path
        if method == "OPTIONS" and path in (BOSH_PATH, HOST_META, HOST_META_JSON):
            return web.preflight(request)
        if path in (HOST_META, HOST_META_JSON):
            if method != "GET":
                raise HttpError(405, "use GET", [("Allow", "GET, OPTIONS")])
            return web.host_meta(request, path == HOST_META_JSON)
        if path == scrape.PATH:
            return web.scrape.respond(request)
        if path == WEBSOCKET_PATH:
            await self._websocket(request)
            return 101, [], b""
        if path.startswith("/api/"):  # the admin HTTP API (xmppd/api/, docs/api.md)
            return await web.api.handle(request)
        if path.startswith("/hooks/"):  # incoming webhooks (xmppd/hooks/incoming.py)
            return await self.web.server.hooks.incoming.handle(request)
        if path in CHANNEL_PATHS:  # JSON channels (Phoenix) and /credentials: docs/channels.md
            from .channels import handle

            return await handle(self, request)
        if path == BOSH_PATH:
            if method != "POST":
                raise HttpError(405, "BOSH requests are POSTs", [("Allow", "POST, OPTIONS")])
            return await web.bosh.handle(request)
        if method in ("GET", "HEAD"):  # the web client (transports/webclient.py)
            answer = web.static.respond(method, path, request.headers)
            if answer is not None:
                return answer
        raise HttpError(404, "not found")

    async def _websocket(self, request: Request) -> None:
        from .websocket import WebSocketConnection

        web = self.web
        result = check_upgrade(request.method, request.headers)
        if isinstance(result, Refusal):
            raise HttpError(result.status, result.text, result.headers)
        web.check_origin(request)
        web.check_encryption(request)
        web.refuse_banned(request.peer)
        web.acquire_session(request.peer)
        try:
            await self._send(h11.InformationalResponse(status_code=101, headers=result))
            trailing, _closed = self.h11.trailing_data
            ws = Connection(ConnectionType.SERVER, trailing_data=trailing)
            transport = WebSocketConnection(self.stream, ws, request.peer, web.limits, web.sweeper)
            settings = web.settings(secure=request.secure)
            session = Session(web.server, transport, settings)
            log.info("%s connected from %s over WebSocket", session.id, request.peer)
            await transport.serve(session)
        finally:
            web.release_session(request.peer)

    async def _respond(
        self, status: int, headers: list[tuple[str, str]], body: bytes, *, text: bool = False
    ) -> None:
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # IDLE: a request h11 could not parse still gets its 400
        if text:
            body += b"\n"
            headers = [("Content-Type", "text/plain; charset=utf-8"), *headers]
        headers = [*headers, ("Content-Length", str(len(body)))]
        if not any(name == "Cache-Control" for name, _ in headers):
            headers.append(("Cache-Control", "no-store"))
        if status >= 400 and self.h11.their_state is not h11.DONE:
            headers.append(("Connection", "close"))  # the rest of the request stays unread
        try:
            await self._send(h11.Response(status_code=status, headers=headers))
            await self._send(h11.Data(data=body))
            await self._send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            pass

    async def _send(self, event: Any) -> None:
        if isinstance(event, h11.Response | h11.InformationalResponse) and not event.reason:
            reason = _REASONS.get(event.status_code, b"")
            event = type(event)(status_code=event.status_code, headers=event.headers, reason=reason)
        data = self.h11.send(event)
        if data:
            await self.stream.send_all(data)
