"""Receivers for the hook tests: a small HTTP server on loopback, in a thread, that records
every request and answers with a scripted status (or hangs), so a test checks exactly what a
provider put on the wire."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """`answers`: statuses for the first requests (then 200); `hang`: never answer."""

    answers: list[int] = field(default_factory=list)
    hang: bool = False
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    released: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.requests.append(Received(self.command, self.path, headers, body))
                if receiver.hang:
                    receiver.released.wait(60)
                    return
                status = receiver.answers.pop(0) if receiver.answers else 200
                answer = b'{"ok":true,"event_id":"$x"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_POST = do_PUT = _any

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    def wait(self, count: int, timeout: float = 15) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            assert time.monotonic() < deadline, f"{len(self.requests)} of {count} requests came"
            time.sleep(0.02)
        return self.requests


def verify(secret: str, request: Received, max_age: float = 300) -> None:
    """What a webhook receiver does (docs/hooks.md): fresh timestamp, HMAC over it and the body."""
    stamp = request.headers["x-xmppd-timestamp"]
    assert abs(time.time() - int(stamp)) < max_age, "stale timestamp: a replay"
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + request.body, hashlib.sha256)
    expected = "sha256=" + mac.hexdigest()
    assert hmac.compare_digest(request.headers["x-xmppd-signature"], expected)


MUC = "http://jabber.org/protocol/muc"


async def join(server: Any, user: str, room: str, nick: str, resource: str = "desk") -> Any:
    """A slixmpp client of `user` in `room` as `nick` (returns once the room said so)."""
    import asyncio

    from support import connect

    occupant = await connect(server, user, resource)
    joined = asyncio.get_running_loop().create_future()

    def on_presence(presence: Any) -> None:
        if str(presence["from"]) == f"{room}/{nick}" and not joined.done():
            joined.set_result(True)

    occupant.add_event_handler("presence", on_presence)
    occupant.send_raw(f"<presence to='{room}/{nick}'><x xmlns='{MUC}'/></presence>")
    await asyncio.wait_for(joined, 5)
    return occupant
