"""A WebSocket client that keeps the server's writer busy (issue 18, item 1).

It connects with a small receive buffer and a short client-side queue, sends a flood of messages
addressed to itself without reading them, so the server's writer blocks on a full socket, and
then pings. A server that answers the ping from its reader while the writer is sending tears
the session down (trio's BusyResourceError) or splices the answer into a half-sent frame.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import websockets

RECEIVE_BUFFER = 4096


def small_buffer_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)  # before connect
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def connect_slow_reader(url: str, port: int, **kwargs: object) -> websockets.ClientConnection:
    """A client that stops reading after a couple of frames until `recv()` is called."""
    return await websockets.connect(
        url,
        sock=small_buffer_socket(port),
        max_queue=2,
        ping_interval=None,
        max_size=None,
        **kwargs,  # type: ignore[arg-type]
    )


async def flood_then_ping(
    ws: websockets.ClientConnection,
    messages: list[str],
    is_echo: Callable[[str], bool],
    settle: float = 1.0,
) -> tuple[list[str], int]:
    """Send `messages` without reading, ping, then read every echo and the pong.

    Returns the echoes and how many of them came before the pong; fails if the pong or an echo
    does not come. `settle` gives the server time to route the flood and fill the socket.
    """
    for message in messages:
        await ws.send(message)
    await asyncio.sleep(settle)
    pong = await ws.ping()
    echoes: list[str] = []
    before_pong = -1
    while len(echoes) < len(messages):
        frame = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(frame, str)
        if pong.done() and before_pong < 0:
            before_pong = len(echoes)
        if is_echo(frame):
            echoes.append(frame)
    await asyncio.wait_for(pong, 10)
    return echoes, len(echoes) if before_pong < 0 else before_pong
