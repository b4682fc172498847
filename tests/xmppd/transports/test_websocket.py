"""RFC 7395 XMPP over WebSocket against a real server, with the `websockets` client library."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Iterator

import pytest
import websockets
from lxml import etree
from support import PASSWORDS, ServerProcess, connect, run
from websockets.exceptions import ConnectionClosed, InvalidStatus
from wsflood import connect_slow_reader, flood_then_ping

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
OPEN = f"<open xmlns='{FRAMING}' to='localhost' version='1.0'/>"
CLOSE = f"<close xmlns='{FRAMING}'/>"
USERS = {"wsalice": "wsalice-secret", "wsbob": "wsbob-secret"}


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("websocket"),
        http_config='max_message_bytes = 2048\norigins = ["https://app.example"]',
    )
    for user, password in USERS.items():
        server.add_user(user, password)
    server.start()
    yield server
    server.stop()


def wss_url(server: ServerProcess) -> str:
    return f"wss://127.0.0.1:{server.https_port}/xmpp-websocket"


def tls(server: ServerProcess) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=server.ca_file)


async def open_ws(server: ServerProcess, **kwargs: object) -> websockets.ClientConnection:
    return await websockets.connect(
        wss_url(server),
        subprotocols=["xmpp"],
        ssl=tls(server),
        server_hostname="localhost",
        **kwargs,  # type: ignore[arg-type]
    )


async def recv(ws: websockets.ClientConnection) -> etree._Element:
    data = await asyncio.wait_for(ws.recv(), 5)
    return etree.fromstring(data.encode() if isinstance(data, str) else data)


async def login(
    server: ServerProcess,
    user: str,
    resource: str = "ws",
    ws: websockets.ClientConnection | None = None,
    password: str | None = None,
) -> websockets.ClientConnection:
    """PLAIN over wss (or over `ws`), restart, bind: what a browser client does."""
    ws = ws or await open_ws(server)
    assert ws.subprotocol == "xmpp"
    await ws.send(OPEN)
    opened = await recv(ws)
    assert opened.tag == f"{{{FRAMING}}}open" and opened.get("from") == "localhost"
    features = await recv(ws)
    assert features.tag == "{http://etherx.jabber.org/streams}features"
    mechanisms = [m.text for m in features.iter("{*}mechanism")]
    assert "PLAIN" in mechanisms and features.find("{*}starttls") is None  # TLS is HTTPS's
    secret = password or USERS[user]
    token = base64.b64encode(f"\0{user}\0{secret}".encode()).decode()
    await ws.send(
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
    )
    assert (await recv(ws)).tag == "{urn:ietf:params:xml:ns:xmpp-sasl}success"
    await ws.send(OPEN)
    assert (await recv(ws)).tag == f"{{{FRAMING}}}open"
    features = await recv(ws)
    assert features.find("{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None
    await ws.send(
        "<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:"
        f"xmpp-bind'><resource>{resource}</resource></bind></iq>"
    )
    bound = await recv(ws)
    assert bound.get("type") == "result"
    assert bound.findtext(".//{*}jid") == f"{user}@localhost/{resource}"
    return ws


async def stream_error(ws: websockets.ClientConnection) -> str:
    """The RFC 7395 §3.6 ending of a stream error: <stream:error/>, <close/>, close frame."""
    error = await recv(ws)
    assert error.tag == "{http://etherx.jabber.org/streams}error"
    assert (await recv(ws)).tag == f"{{{FRAMING}}}close"
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    return etree.QName(error[0]).localname


def test_login_and_message_round_trip_with_a_tcp_client(web: ServerProcess) -> None:
    async def scenario() -> None:
        ws = await login(web, "wsalice")
        bob = await connect(web, "wsbob", password=USERS["wsbob"])
        try:
            await ws.send("<presence xmlns='jabber:client'/>")
            await ws.send(
                "<message xmlns='jabber:client' to='wsbob@localhost' type='chat'>"
                "<body>over websocket</body></message>"
            )
            got = await bob.next_message()
            assert got["body"] == "over websocket" and str(got["from"]) == "wsalice@localhost/ws"
            bob.send_message(mto="wsalice@localhost/ws", mbody="over tcp", mtype="chat")
            while True:
                stanza = await recv(ws)
                if stanza.tag == "{jabber:client}message":
                    break
            assert stanza.findtext("{jabber:client}body") == "over tcp"
            assert stanza.get("from").startswith("wsbob@localhost/")
            await ws.send(CLOSE)
            assert (await recv(ws)).tag == f"{{{FRAMING}}}close"
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1000
        finally:
            await bob.close()
            await ws.close()

    run(scenario())


def test_stream_management_over_websocket(web: ServerProcess) -> None:
    async def scenario() -> None:
        ws = await login(web, "wsalice", "sm")
        try:
            await ws.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
            enabled = await recv(ws)
            assert enabled.tag == "{urn:xmpp:sm:3}enabled" and enabled.get("resume") == "true"
            await ws.send(
                "<iq xmlns='jabber:client' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"
            )
            assert (await recv(ws)).get("id") == "p1"
            await ws.send("<r xmlns='urn:xmpp:sm:3'/>")
            answer = await recv(ws)
            assert answer.tag == "{urn:xmpp:sm:3}a" and answer.get("h") == "1"
        finally:
            await ws.close()

    run(scenario())


def test_stream_management_resumes_on_a_new_websocket(web: ServerProcess) -> None:
    async def scenario() -> None:
        ws = await login(web, "wsalice", "resume")
        await ws.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        previd = (await recv(ws)).get("id")
        ws.transport.abort()  # the connection breaks: no <close/>, the session hibernates
        bob = await connect(web, "wsbob", password=USERS["wsbob"])
        try:
            bob.send_message(mto="wsalice@localhost/resume", mbody="while away", mtype="chat")
            await bob.plugin["xep_0199"].ping("localhost", timeout=5)  # the message went first
            again = await open_ws(web)
            await again.send(OPEN)
            await recv(again), await recv(again)
            token = base64.b64encode(b"\0wsalice\0" + USERS["wsalice"].encode()).decode()
            await again.send(
                f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
            )
            await recv(again)
            await again.send(OPEN)
            await recv(again), await recv(again)
            await again.send(f"<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='0'/>")
            resumed = await recv(again)
            assert resumed.tag == "{urn:xmpp:sm:3}resumed"
            while True:
                stanza = await recv(again)
                if stanza.tag == "{jabber:client}message":
                    break
            assert stanza.findtext("{jabber:client}body") == "while away"
            await again.close()
        finally:
            await bob.close()

    run(scenario())


@pytest.mark.parametrize(
    "message, condition",
    [
        ("<presence xmlns='jabber:client'/><presence xmlns='jabber:client'/>", "not-well-formed"),
        ("<presence xmlns='jabber:client'><!-- x --></presence>", "restricted-xml"),
        (OPEN, "not-well-formed"),
    ],
)
def test_bad_messages_end_with_the_stream_error(
    web: ServerProcess, message: str, condition: str
) -> None:
    async def scenario() -> None:
        ws = await login(web, "wsalice", "bad")
        await ws.send(message)
        assert await stream_error(ws) == condition
        assert ws.close_code == 1000

    run(scenario())


def test_binary_and_oversized_messages_get_their_close_codes(web: ServerProcess) -> None:
    async def scenario() -> None:
        ws = await open_ws(web)
        await ws.send(OPEN)
        await recv(ws), await recv(ws)
        await ws.send(b"<presence/>")
        assert await stream_error(ws) == "bad-format"
        assert ws.close_code == 1003
        ws = await open_ws(web)
        await ws.send(OPEN)
        await recv(ws), await recv(ws)
        await ws.send("<presence xmlns='jabber:client'>" + "x" * 3000 + "</presence>")
        assert await stream_error(ws) == "policy-violation"
        assert ws.close_code == 1009

    run(scenario())


def test_a_text_message_that_is_not_utf8_closes_with_1007(web: ServerProcess) -> None:
    async def scenario() -> None:
        ws = await open_ws(web)
        await ws.send(OPEN)
        await recv(ws), await recv(ws)
        await ws.send(b"<presence xmlns='jabber:client'>\xff</presence>", text=True)
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1007

    run(scenario())


def test_handshake_needs_the_xmpp_subprotocol_and_an_allowed_origin(web: ServerProcess) -> None:
    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as caught:
            await websockets.connect(wss_url(web), ssl=tls(web), server_hostname="localhost")
        assert caught.value.response.status_code == 400
        assert b"xmpp" in caught.value.response.body
        with pytest.raises(InvalidStatus) as caught:
            await open_ws(web, origin="https://evil.example")
        assert caught.value.response.status_code == 403
        ws = await open_ws(web, origin="https://app.example")
        await ws.send(OPEN)
        assert (await recv(ws)).tag == f"{{{FRAMING}}}open"
        await ws.close()

    run(scenario())


def test_plain_listener_on_loopback(web: ServerProcess) -> None:
    async def scenario() -> None:
        url = f"ws://127.0.0.1:{web.http_port}/xmpp-websocket"
        async with websockets.connect(url, subprotocols=["xmpp"]) as ws:
            await ws.send(OPEN)
            await recv(ws)
            features = await recv(ws)  # counted as encrypted (plain_is_encrypted): PLAIN offered
            assert "PLAIN" in [m.text for m in features.iter("{*}mechanism")]

    run(scenario())


def test_ping_while_the_writer_is_busy_keeps_the_session(server: ServerProcess) -> None:
    """Issue 18.1: the pong waits for the frame being sent, jumps the queued ones, and the
    session lives on (it used to die of trio's BusyResourceError with a spliced close frame)."""

    async def scenario() -> None:
        url = f"ws://127.0.0.1:{server.http_port}/xmpp-websocket"
        ws = await connect_slow_reader(url, server.http_port, subprotocols=["xmpp"])
        await login(server, "alice", "busy", ws=ws, password=PASSWORDS["alice"])
        me = "alice@localhost/busy"
        flood = [
            f"<message xmlns='jabber:client' to='{me}' type='chat' id='f{i}'>"
            f"<body>{i:04d}{'x' * 30_000}</body></message>"
            for i in range(45)
        ]
        echoes, before_pong = await flood_then_ping(ws, flood, lambda f: f.startswith("<message"))
        assert before_pong < len(flood)  # the pong jumped the queued messages
        bodies = [etree.fromstring(e.encode()).findtext("{jabber:client}body") for e in echoes]
        assert [b[:4] for b in bodies] == [f"{i:04d}" for i in range(45)]
        assert all(len(b) == 30_004 for b in bodies)
        await ws.send(
            "<iq xmlns='jabber:client' type='get' id='after'><ping xmlns='urn:xmpp:ping'/></iq>"
        )
        assert (await recv(ws)).get("id") == "after"  # the session survived
        await ws.send(CLOSE)
        assert (await recv(ws)).tag == f"{{{FRAMING}}}close"
        await ws.close()

    run(scenario())
    assert "Traceback" not in server.log_text()


def test_server_survives(web: ServerProcess) -> None:
    assert web.alive()
    assert "Traceback" not in web.log_text()
