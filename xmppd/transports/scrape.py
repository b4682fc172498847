"""`GET /metrics`: the Prometheus scrape endpoint (xmppd/metrics.py holds the metrics).

Served on the HTTP listeners and, with `metrics.port`, on a plain-HTTP port of its own that
answers nothing else. Only client addresses in `metrics.allow` (loopback by default) may read
it; others get 403. Behind `http.trusted_proxies` the client is the forwarded address, so a
proxy in front cannot make the world loopback. The allow list changes on SIGHUP (reload).
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

import trio

from .. import metrics
from ..throttle import exempt_networks
from . import listen

if TYPE_CHECKING:
    from .http import Request, Web

log = logging.getLogger("xmppd.web")
PATH = "/metrics"


class Endpoint:
    def __init__(self, web: Web) -> None:
        self.server = web.server
        self.allowed = exempt_networks(web.server.config.metrics.get("allow", []))
        hosts = web.server.hosts  # the same dict for the server's life
        metrics.SESSIONS.source("hosts", lambda: metrics.sessions_by_transport(hosts))

    def allows(self, peer: str) -> bool:
        try:
            ip = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.allowed)

    def reload(self, allow: list[str]) -> None:
        self.allowed = exempt_networks(allow)

    def respond(self, request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        from .http import HttpError

        if request.method not in ("GET", "HEAD"):
            raise HttpError(405, "use GET", [("Allow", "GET, HEAD")])
        if not self.allows(request.peer):
            log.info("refused /metrics to %s (not in metrics.allow)", request.peer)
            raise HttpError(403, "metrics are not served to this address (metrics.allow)")
        if not metrics.enabled:
            raise HttpError(404, "metrics are off (metrics.enabled = false)")
        body = b"" if request.method == "HEAD" else metrics.exposition()
        return 200, [("Content-Type", metrics.CONTENT_TYPE)], body


async def serve_port(
    web: Web, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """`metrics.port`: plain HTTP with the web listener's limits, `/metrics` only."""
    from .http import HttpConnection, HttpError

    class MetricsOnly(HttpConnection):
        async def _dispatch(self, request: Request) -> tuple[int, list, bytes]:
            if request.path != PATH:
                raise HttpError(404, "only /metrics is served on this port")
            return web.scrape.respond(request)

    async def connection(stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()[0]
            await MetricsOnly(web, stream, peer, False).run()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    cfg = web.server.config.metrics
    port, listeners = cfg["port"], []
    for interface in cfg["interfaces"]:
        host = None if interface == "*" else interface
        try:
            listeners += await listen.open_tcp_listeners(
                port, host=host, reuse_port=web.server.reuse_port
            )
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot listen for metrics on {interface} port {port}: {exc}"
            ) from exc
        port = port or listeners[0].socket.getsockname()[1]
    log.info("serving /metrics on %s port %d", ", ".join(cfg["interfaces"]), port)
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(trio.serve_listeners, connection, [listener])
        task_status.started(port)
