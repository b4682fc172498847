"""An XMPP client over WebSocket (RFC 7395) in a few lines, as a browser client talks: for tests
that need that transport next to slixmpp's TCP sessions."""

from __future__ import annotations

import asyncio
import base64
import ssl
from typing import Any

import websockets
from lxml import etree
from support import ServerProcess

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
OPEN = f"<open xmlns='{FRAMING}' to='localhost' version='1.0'/>"


async def receive(ws: Any, timeout: float = 5) -> etree._Element:
    return etree.fromstring((await asyncio.wait_for(ws.recv(), timeout)).encode())


async def websocket_login(
    server: ServerProcess, user: str, password: str, resource: str = "ws"
) -> Any:
    """SASL PLAIN over wss and bind, as a browser client does (RFC 7395)."""
    context = ssl.create_default_context(cafile=server.ca_file)
    ws = await websockets.connect(
        f"wss://127.0.0.1:{server.https_port}/xmpp-websocket",
        subprotocols=["xmpp"],
        ssl=context,
        server_hostname="localhost",
    )
    await ws.send(OPEN)
    await receive(ws), await receive(ws)  # <open/>, features
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    await ws.send(
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
    )
    assert (await receive(ws)).tag.endswith("success")
    await ws.send(OPEN)
    await receive(ws), await receive(ws)
    await ws.send(
        "<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:"
        f"xmpp-bind'><resource>{resource}</resource></bind></iq>"
    )
    assert (await receive(ws)).get("type") == "result"
    return ws
