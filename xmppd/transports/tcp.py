"""c2s over TCP: STARTTLS on one port, direct TLS (XEP-0368) on another."""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections import Counter
from functools import partial
from typing import TYPE_CHECKING

import trio

from ..protocol.stream import ServerStream
from ..session import Session
from .connection import ByteStreamConnection

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger("xmppd.c2s")


class PerAddressCap:
    """Counts open connections per client address."""

    __slots__ = ("limit", "_open")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def acquire(self, address: str) -> bool:
        if self._open[address] >= self.limit:
            return False
        self._open[address] += 1
        return True

    def release(self, address: str) -> None:
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]


async def serve_c2s(
    server: Server, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED
) -> None:
    """Listen on the configured ports; reports {"c2s": port, "c2s_direct_tls": port}."""
    c2s = server.config.c2s
    cap = PerAddressCap(server.config.limits["connections_per_ip"])
    bound: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        for name, port, direct in (
            ("c2s", c2s["port"], False),
            ("c2s_direct_tls", c2s["direct_tls_port"], True),
        ):
            if not port:
                continue
            listeners = await _open_listeners(port, c2s["interfaces"], name)
            bound[name] = listeners[0].socket.getsockname()[1]
            handler = partial(_handle, server, cap, direct)
            nursery.start_soon(partial(trio.serve_listeners, handler, listeners))
            log.info(
                "listening for %s on %s port %d", name, ", ".join(c2s["interfaces"]), bound[name]
            )
        task_status.started(bound)


async def _open_listeners(port: int, interfaces: list[str], name: str) -> list[trio.SocketListener]:
    listeners: list[trio.SocketListener] = []
    for interface in interfaces:
        host = None if interface == "*" else interface
        try:
            listeners += await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot listen for {name} on {interface} port {port}: {exc.strerror}"
            ) from exc
        port = port or listeners[0].socket.getsockname()[1]  # port 0: same free port everywhere
    return listeners


async def _handle(
    server: Server, cap: PerAddressCap, direct_tls: bool, stream: trio.SocketStream
) -> None:
    try:
        address = stream.socket.getpeername()[0]
    except OSError:
        await stream.aclose()
        return
    if not cap.acquire(address):
        await _refuse(server, stream, address)
        return
    try:
        await _serve(server, stream, address, direct_tls)
    except Exception:
        # A bug in one connection must not take the listener (and everyone else) down.
        log.exception("connection from %s failed", address)
    finally:
        cap.release(address)


async def _serve(server: Server, stream: trio.SocketStream, address: str, direct_tls: bool) -> None:
    limits = server.config.limits
    transport: trio.abc.Stream = stream
    if direct_tls:
        tls = trio.SSLStream(stream, server.ssl_context, server_side=True)
        try:
            with trio.fail_after(limits["tls_handshake_timeout"]):
                await tls.do_handshake()
        except (trio.TooSlowError, trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
            log.info("direct TLS handshake from %s failed: %s", address, exc or type(exc).__name__)
            await trio.aclose_forcefully(stream)
            return
        transport = tls
    connection = ByteStreamConnection(
        transport, address, limits, server.ssl_context, server.cb_data
    )
    session = Session(server, connection, server.stream_settings(direct_tls=direct_tls))
    if direct_tls:
        session.stream.set_channel_binding(server.cb_data)
    log.info("%s connected from %s%s", session.id, address, " (direct TLS)" if direct_tls else "")
    await connection.serve(session)


async def _refuse(server: Server, stream: trio.SocketStream, address: str) -> None:
    log.warning("refused a connection from %s: too many open connections", address)
    refusal = ServerStream(server.stream_settings(direct_tls=False))
    refusal.stream_error("policy-violation", "too many connections from your address")
    with trio.move_on_after(2), contextlib.suppress(trio.BrokenResourceError, OSError):
        await stream.send_all(refusal.data_to_send())
    await trio.aclose_forcefully(stream)
