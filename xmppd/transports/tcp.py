"""c2s over TCP: STARTTLS on one port, direct TLS (XEP-0368) on another."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

import trio

from .. import metrics
from ..protocol.stream import ServerStream
from ..session import BANNED_TEXT, Session
from . import listen
from .connection import (
    ByteStreamConnection,
    ConnectionLost,
    Sweeper,
    drop_frames,
    is_transient_accept_error,
)
from .tls import HandshakeGate

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger("xmppd.c2s")


class PerAddressCap:
    """Counts open connections per client address."""

    __slots__ = ("limit", "_open", "name")

    def __init__(self, limit: int, name: str = "connections_per_ip") -> None:
        self.limit = limit
        self.name = name  # the limit's label in /metrics
        self._open: Counter[str] = Counter()

    def acquire(self, address: str) -> bool:
        if self._open[address] >= self.limit:
            metrics.refused(self.name)
            return False
        self._open[address] += 1
        return True

    def release(self, address: str) -> None:
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]


async def serve_c2s(
    server: Server, *, task_status: trio.TaskStatus[dict[str, int]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Listen on the configured ports; reports {"c2s": port, "c2s_direct_tls": port}."""
    c2s = server.config.c2s
    cap = PerAddressCap(server.config.limits["connections_per_ip"])
    sweeper = Sweeper()
    bound: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(sweeper.run)
        listeners = (("c2s", c2s["port"], False), ("c2s_direct_tls", c2s["direct_tls_port"], True))
        for name, port, direct in listeners:
            if not port:
                continue
            sockets = await _open_listeners(port, c2s["interfaces"], name, server.reuse_port)
            bound[name] = sockets[0].getsockname()[1]
            gate = HandshakeGate(server.config.limits["tls_handshakes"])
            for listener in sockets:
                handler = partial(_handle, server, cap, sweeper, direct, gate)
                nursery.start_soon(
                    _accept_loop, listener, handler, nursery, gate if direct else None
                )
            log.info(
                "listening for %s on %s port %d", name, ", ".join(c2s["interfaces"]), bound[name]
            )
        task_status.started(bound)


async def _open_listeners(
    port: int, interfaces: list[str], name: str, reuse_port: bool = False
) -> list[trio.socket.SocketType]:
    sockets: list[trio.socket.SocketType] = []
    for interface in interfaces:
        host = None if interface == "*" else interface
        try:
            listeners = await listen.open_tcp_listeners(port, host=host, reuse_port=reuse_port)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot listen for {name} on {interface} port {port}: {exc.strerror}"
            ) from exc
        sockets += [listener.socket for listener in listeners]
        port = port or sockets[0].getsockname()[1]  # port 0: same free port everywhere
    return sockets


async def _accept_loop(
    listener: trio.socket.SocketType,
    handler: Callable[..., Awaitable[None]],
    nursery: trio.Nursery,
    gate: HandshakeGate | None,
) -> None:
    """With a gate (direct TLS), a connection is accepted only when its handshake may start;
    until then it waits in the kernel's accept backlog."""
    while True:
        if gate:
            await gate.acquire()
        try:
            trio_sock, address = await listener.accept()
        except OSError as exc:
            if gate:
                gate.release()
            if not is_transient_accept_error(exc):
                raise
            log.error("accept failed (%s); pausing for 100 ms", exc.strerror)
            await trio.sleep(0.1)
            continue
        # Take the socket out of trio's wrapper: the connection drives it directly.
        sock = socket.socket(trio_sock.family, trio_sock.type, fileno=trio_sock.detach())
        nursery.start_soon(handler, sock, address[0])


async def _handle(
    server: Server,
    cap: PerAddressCap,
    sweeper: Sweeper,
    direct_tls: bool,
    gate: HandshakeGate,
    sock: socket.socket,
    address: str,
) -> None:
    if server.login_throttle.banned(address, time.monotonic()):
        log.debug("refused a connection from %s: banned for failed logins", address)
        # Direct TLS: plain bytes would be noise before a handshake, so just close.
        if direct_tls:
            gate.release()
        _refuse(server, sock, BANNED_TEXT, write=not direct_tls)
        return
    banned = server.bans.address_refusal(address)  # xmppd/bans.py
    if banned:
        log.info("refused a connection from %s: %s", address, banned)
        if direct_tls:
            gate.release()
        _refuse(server, sock, banned, write=not direct_tls)
        return
    if not cap.acquire(address):
        if direct_tls:
            gate.release()
        log.warning("refused a connection from %s: too many open connections", address)
        _refuse(server, sock, "too many connections from your address")
        return
    try:
        await _serve(server, sock, address, direct_tls, sweeper, gate)
    except Exception:
        # A bug in one connection must not take the listener (and everyone else) down.
        log.exception("connection from %s failed", address)
    finally:
        cap.release(address)


async def _serve(
    server: Server,
    sock: socket.socket,
    address: str,
    direct_tls: bool,
    sweeper: Sweeper,
    gate: HandshakeGate,
) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        limits = server.config.limits
        connection = ByteStreamConnection(
            sock, address, limits, server.ssl_context, server.cb_data, sweeper, gate
        )
        if direct_tls:
            try:
                await connection.handshake()
            except (ConnectionLost, OSError) as exc:
                log.info("direct TLS from %s: %s; closing", address, exc or type(exc).__name__)
                drop_frames(exc)
                sock.close()
                return
    finally:
        if direct_tls:
            gate.release()  # the slot the accept loop took for this handshake
    session = Session(server, connection, server.stream_settings(direct_tls=direct_tls))
    if direct_tls:
        session.stream.set_channel_binding(server.cb_data)
    log.info("%s connected from %s%s", session.id, address, " (direct TLS)" if direct_tls else "")
    await connection.serve(session)


def _refuse(server: Server, sock: socket.socket, text: str, *, write: bool = True) -> None:
    """A stream error `policy-violation` right away, then close."""
    if write:
        refusal = ServerStream(server.stream_settings(direct_tls=False))
        refusal.stream_error("policy-violation", text)
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.send(refusal.data_to_send())  # best effort: it fits in any socket buffer
    sock.close()
