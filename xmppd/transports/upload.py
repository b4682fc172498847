"""The web listener's `/upload/<service domain>/<slot>/<name>` path (XEP-0363 files).

`PUT` streams the body into the data directory (never whole into memory; `http.max_body_bytes`
does not apply, the slot's exact size does); `GET`/`HEAD` stream the file back, one byte range
when asked (RFC 9110 §14). The slot rules live in xmppd/modules/upload.py; this file moves
bytes. Every file is served with `X-Content-Type-Options: nosniff` and a sandboxing CSP, and
types a browser would run (HTML, SVG, XML, ...) as attachments, so an uploaded page cannot
script the server's origin.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

import h11
import trio

from ..modules.upload import UploadRefused, UploadService, disposition
from ..protocol.websocket import normalize_origin

if TYPE_CHECKING:
    from .http import HttpConnection, Request

PREFIX = "/upload/"
CHUNK = 64 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
SAFETY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'; sandbox"),
    ("Referrer-Policy", "no-referrer"),
]
_CORS = [
    ("Access-Control-Allow-Methods", "GET, HEAD, PUT, OPTIONS"),
    ("Access-Control-Allow-Headers", "Content-Type, Range, Authorization"),
    ("Access-Control-Expose-Headers", "Content-Length, Content-Range, Accept-Ranges"),
    ("Access-Control-Max-Age", "86400"),
]


def attach(server: object, tls_port: int | None) -> None:
    """Tell each host's upload service where files live and which URL reaches them."""
    from ..server import Server

    assert isinstance(server, Server)
    public = server.config.http["public_url"].rstrip("/")
    for host in server.hosts.values():
        service = host.services.get("upload")
        if not isinstance(service, UploadService):
            continue
        if public:
            base = public + "/upload"
        elif tls_port:
            base = f"https://{host.domain}:{tls_port}/upload"
        else:
            base = f"http://{host.domain}:{server.config.http['port']}/upload"
        root = server.config.data_dir / "upload" / service.domain
        service.attach(root, server._secret(), base)
        server.nursery_soon(service.sweep_forever)


def origins(server: object) -> tuple[str, ...]:
    """The origins of the upload services' URLs (for the web client's CSP)."""
    from ..server import Server

    assert isinstance(server, Server)
    found = set()
    for host in server.hosts.values():
        service = host.services.get("upload")
        if isinstance(service, UploadService) and service.base_url:
            origin = normalize_origin(_origin_of(service.base_url))
            if origin:
                found.add(origin)
    return tuple(sorted(found))


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _cors(conn: HttpConnection, request: Request) -> list[tuple[str, str]]:
    """CORS for the configured origins (http.cors_origins), and for pages this server serves
    itself: the web client loaded from another of the server's names than the upload URL's
    (an address, the plain port) uploads and shows files too."""
    cors = conn.web.cors_headers(request)
    origin = request.headers.get("origin")
    if cors or origin is None or normalize_origin(origin) not in conn.web.own_origins:
        return cors
    return [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]


def _locate(conn: HttpConnection, path: str) -> tuple[UploadService, str, str]:
    parts = path[len(PREFIX) :].split("/")
    if len(parts) == 3:
        for host in conn.web.server.hosts.values():
            service = host.services.get("upload")
            if isinstance(service, UploadService) and service.domain == parts[0]:
                return service, parts[1], unquote(parts[2])
    raise UploadRefused(404, "not found")


async def serve(conn: HttpConnection, event: h11.Request, headers: dict[str, str]) -> bool:
    """One request under /upload/; True when the connection may carry the next one."""
    from .http import HttpError, Request

    target = event.target.decode("latin-1")
    path, _, query = target.partition("?")
    method = event.method.decode()
    secure = conn.tls or conn.web.config["plain_is_encrypted"]
    scheme = "https" if conn.tls else "http"
    request = Request(method, path, headers, b"", conn.peer, secure, scheme, query)
    cors = _cors(conn, request)
    try:
        service, slot_id, name = _locate(conn, path)
        if method != "PUT":
            await _drain(conn)
        if method == "OPTIONS":
            await conn._respond(204, cors + _CORS if cors else [], b"")
        elif method == "PUT":
            conn.web.check_encryption(request)
            token = parse_qs(query).get("token", [""])[0]
            await _put(conn, service, slot_id, name, token, headers, cors)
        elif method in ("GET", "HEAD"):
            await _get(conn, service, slot_id, name, headers, cors, method == "HEAD")
        else:
            allow = [("Allow", "GET, HEAD, PUT, OPTIONS")]
            raise HttpError(405, "use GET or PUT", allow)
    except UploadRefused as exc:
        await conn._respond(exc.status, cors, exc.text.encode(), text=True)
    except HttpError as exc:
        await conn._respond(exc.status, exc.headers + cors, exc.text.encode(), text=True)
    return conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE


async def _put(
    conn: HttpConnection,
    service: UploadService,
    slot_id: str,
    name: str,
    token: str,
    headers: dict[str, str],
    cors: list[tuple[str, str]],
) -> None:
    content_type = headers.get("content-type", "")
    slot = await service.begin_put(
        slot_id, name, token, headers.get("content-length"), content_type
    )
    ok = False
    try:
        if conn.h11.client_is_waiting_for_100_continue:
            await conn._send(h11.InformationalResponse(status_code=100, headers=[]))
        received = 0
        async with await trio.open_file(service.part_path(slot_id), "wb") as out:
            while True:
                with trio.fail_after(conn.web.config["request_timeout"]):
                    part = await conn._next_event()
                if isinstance(part, h11.Data):
                    received += len(part.data)
                    await out.write(part.data)
                elif isinstance(part, h11.EndOfMessage):
                    break
                else:
                    return  # the client went away: nothing stored
        if received != slot.size:
            raise UploadRefused(400, f"expected {slot.size} bytes, got {received}")
        await service.finish_put(slot, True)
        ok = True
    except trio.TooSlowError:
        raise UploadRefused(408, "the upload stalled") from None
    finally:
        if not ok:
            await service.finish_put(slot, False)
    await conn._respond(201, cors, b"")


async def _drain(conn: HttpConnection) -> None:
    """Read a bodiless request to its end so the connection can carry the next one."""
    from .http import HttpError

    while True:
        with trio.fail_after(conn.web.config["request_timeout"]):
            part = await conn._next_event()
        if isinstance(part, h11.Data):
            raise HttpError(400, "this request takes no body")
        if not isinstance(part, h11.EndOfMessage):
            raise UploadRefused(400, "the request ended early")
        return


def byte_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """(first, last) of a single `Range: bytes=...`; None: whole file; False: unsatisfiable."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None  # another unit or several ranges: RFC 9110 lets us send it all
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        n = int(last)
        return (max(0, size - n), size - 1) if n > 0 and size > 0 else False
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return False
    return start, end


async def _get(
    conn: HttpConnection,
    service: UploadService,
    slot_id: str,
    name: str,
    headers: dict[str, str],
    cors: list[tuple[str, str]],
    head_only: bool,
) -> None:
    slot = await service.lookup(slot_id, name)
    content_type = slot.type or "application/octet-stream"
    size = slot.size
    out = [
        ("Content-Type", content_type),
        ("Content-Disposition", disposition(content_type, slot.name)),
        *SAFETY_HEADERS,
        ("Accept-Ranges", "bytes"),
        ("ETag", f'"{slot.id}"'),
        ("Cache-Control", "private, max-age=86400"),
        *cors,
    ]
    wanted = byte_range(headers.get("range"), size)
    if wanted is False:
        out.append(("Content-Range", f"bytes */{size}"))
        await conn._respond(416, out, b"")
        return
    status, (first, last) = (200, (0, size - 1)) if wanted is None else (206, wanted)
    if status == 206:
        out.append(("Content-Range", f"bytes {first}-{last}/{size}"))
    length = max(0, last - first + 1)
    out.append(("Content-Length", str(length)))
    await conn._send(h11.Response(status_code=status, headers=out))
    if not head_only and length:
        async with await trio.open_file(service.path(slot_id), "rb") as src:
            await src.seek(first)
            left = length
            while left > 0:
                data = await src.read(min(CHUNK, left))
                if not data:
                    raise trio.BrokenResourceError("the file shrank while being sent")
                left -= len(data)
                await conn._send(h11.Data(data=data))
    await conn._send(h11.EndOfMessage())
