"""The web listener: one HTTP(S) port for XMPP over WebSocket, BOSH and XEP-0156 discovery.

HTTP/1.1 is parsed by h11 (sans-IO); this file only moves bytes and routes requests:

* `GET /xmpp-websocket` with an upgrade -> RFC 7395 (transports/websocket.py)
* `POST /http-bind` -> XEP-0124/0206 BOSH (transports/bosh.py)
* `GET /.well-known/host-meta` and `host-meta.json` -> XEP-0156 links to both, with CORS
* `OPTIONS` -> CORS preflight
* `/socket/websocket`, `/socket/longpoll`, `/credentials` -> JSON channels (transports/channels.py)

Two listeners: `tls_port` (HTTPS, the server's certificate) and `port` (plain, loopback by
default, meant for a TLS-terminating proxy on the same machine). Streams over HTTPS are
encrypted; streams over the plain port count as encrypted when `plain_is_encrypted` is true,
otherwise `c2s.require_encryption` refuses them with 403 (no STARTTLS exists over HTTP).

Limits: header and body size, the time to send a request, HTTP connections per address
(`limits.connections_per_ip`) and XMPP sessions per address (`http.sessions_per_ip`, WebSocket
and BOSH together). Bad requests get an HTTP status with a plain-text reason.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections import Counter
from typing import TYPE_CHECKING, Any

import h11
import trio
from wsproto.connection import Connection, ConnectionType

from ..protocol.stream import StreamSettings
from ..protocol.websocket import FramedParser, Refusal, check_upgrade
from ..session import Session
from . import listen
from .connection import Sweeper
from .tcp import PerAddressCap

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger("xmppd.web")
RECEIVE_SIZE = 16 * 1024
WEBSOCKET_PATH = "/xmpp-websocket"
BOSH_PATH = "/http-bind"
HOST_META = "/.well-known/host-meta"
CHANNEL_PATHS = ("/socket/websocket", "/socket/longpoll", "/credentials")
HOST_META_JSON = "/.well-known/host-meta.json"
XRD_NS = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
WEBSOCKET_REL = "urn:xmpp:alt-connections:websocket"
BOSH_REL = "urn:xmpp:alt-connections:xbosh"
_HOST_HEADER = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


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
        self.connections = PerAddressCap(server.config.limits["connections_per_ip"])
        self.sessions: Counter[str] = Counter()
        self.bosh = BoshManager(self)
        self.channels = ChannelManager(self)
        self._settings: dict[bool, StreamSettings] = {}

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
            raise HttpError(429, f"at most {limit} XMPP sessions per address")
        self.sessions[peer] += 1

    def release_session(self, peer: str) -> None:
        self.sessions[peer] -= 1
        if self.sessions[peer] <= 0:
            del self.sessions[peer]

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
            for listener in listeners:
                nursery.start_soon(_accept_loop, web, listener, name == "https", nursery)
            log.info(
                "listening for %s (WebSocket, BOSH) on %s port %d",
                name,
                ", ".join(interfaces),
                port,
            )
        task_status.started(bound)


async def _accept_loop(
    web: Web, listener: trio.SocketListener, tls: bool, nursery: trio.Nursery
) -> None:
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            log.error("accept failed (%s); pausing for 100 ms", exc)
            await trio.sleep(0.1)
            continue
        nursery.start_soon(_connection, web, stream, tls)


async def _connection(web: Web, stream: trio.SocketStream, tls: bool) -> None:
    peer = stream.socket.getpeername()[0]
    if not web.connections.acquire(peer):
        log.warning("refused an HTTP connection from %s: too many open", peer)
        await trio.aclose_forcefully(stream)
        return
    try:
        if tls:
            assert web.server.ssl_context is not None
            stream = trio.SSLStream(stream, web.server.ssl_context, server_side=True)
            with trio.fail_after(web.limits["tls_handshake_timeout"]):
                await stream.do_handshake()
        await HttpConnection(web, stream, peer, tls).run()
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError) as exc:
        log.debug("HTTP connection from %s ended: %s", peer, exc or type(exc).__name__)
    except Exception:
        log.exception("HTTP connection from %s failed", peer)
    finally:
        web.connections.release(peer)
        await trio.aclose_forcefully(stream)


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

    async def run(self) -> None:
        while True:
            try:
                with trio.fail_after(self.web.config["request_timeout"]):
                    request = await self._read_request()
            except HttpError as exc:
                await self._respond(exc.status, exc.headers, exc.text.encode(), text=True)
                return
            except trio.TooSlowError:
                if self.h11.their_state is h11.SEND_BODY:
                    await self._respond(408, [], b"request took too long", text=True)
                return
            if request is None:
                return
            try:
                status, headers, body = await self._dispatch(request)
            except HttpError as exc:
                status, headers, body = exc.status, exc.headers, exc.text.encode()
                headers = headers + self.web.cors_headers(request)
                await self._respond(status, headers, body, text=True)
                if self.h11.our_state is not h11.DONE:
                    return
            else:
                if status == 101:
                    return  # the WebSocket took the connection over and is finished with it
                await self._respond(status, headers, body)
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                return
            self.h11.start_next_cycle()

    async def _read_request(self) -> Request | None:
        event = await self._next_event()
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request)
        limit = self.web.config["max_header_bytes"]
        size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
        if size > limit:  # h11 only limits headers that arrive in pieces
            raise HttpError(431, f"the request line and headers are limited to {limit} bytes")
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        limit = self.web.config["max_body_bytes"]
        if int(headers.get("content-length", "0") or 0) > limit:
            raise HttpError(413, f"the body is limited to {limit} bytes")
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
            peer=self.peer,
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
                self.h11.receive_data(await self.stream.receive_some(RECEIVE_SIZE))
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
        if path == WEBSOCKET_PATH:
            await self._websocket(request)
            return 101, [], b""
        if path in CHANNEL_PATHS:  # JSON channels (Phoenix) and /credentials: docs/channels.md
            from .channels import handle

            return await handle(self, request)
        if path == BOSH_PATH:
            if method != "POST":
                raise HttpError(405, "BOSH requests are POSTs", [("Allow", "POST, OPTIONS")])
            return await web.bosh.handle(request)
        raise HttpError(404, "not found")

    async def _websocket(self, request: Request) -> None:
        from .websocket import WebSocketConnection

        web = self.web
        result = check_upgrade(
            request.method, request.headers, web.config["origins"], request.scheme
        )
        if isinstance(result, Refusal):
            raise HttpError(result.status, result.text, result.headers)
        web.check_encryption(request)
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
        headers = [*headers, ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
        if status >= 400 and self.h11.their_state is not h11.DONE:
            headers.append(("Connection", "close"))  # the rest of the request stays unread
        try:
            await self._send(h11.Response(status_code=status, headers=headers))
            await self._send(h11.Data(data=body))
            await self._send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            pass

    async def _send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            await self.stream.send_all(data)
