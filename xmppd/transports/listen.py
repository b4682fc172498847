"""TCP listeners, optionally with SO_REUSEPORT (`xmppd serve --workers N`).

Like `trio.open_tcp_listeners`, plus SO_REUSEPORT when asked: every worker process binds
the same ports and the kernel spreads new connections over them (Linux hashes the
4-tuple), so one box uses all its cores without a proxy in front.
"""

from __future__ import annotations

import socket

import trio


async def open_tcp_listeners(
    port: int, *, host: str | None = None, reuse_port: bool = False
) -> list[trio.SocketListener]:
    if not reuse_port:
        return await trio.open_tcp_listeners(port, host=host)
    addresses = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    try:
        for family, type_, proto, _, sockaddr in addresses:
            sock = trio.socket.socket(family, type_, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                await sock.bind(sockaddr)
                sock.listen(socket.SOMAXCONN)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners
