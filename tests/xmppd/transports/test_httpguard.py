"""What the web listener trusts and how much one address may hold: own origins from the
configuration, slow request heads against real sessions, trusted proxies. Raw sockets from
several loopback addresses (127.0.0.x) against a real server."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator

import pytest
import websockets
from joserfc import jws
from joserfc.jwk import OctKey
from support import ServerProcess, run

from xmppd.transports.httpguard import client_address, framing_problem, parse_networks

SECRET = "guard-test-secret-of-32-bytes-or-more!"
KEY = base64.b64encode(b"k" * 16).decode()


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("guard"),
        extra_config=f'[auth.tokens.apps.app]\nalgorithm = "HS256"\nkey = "{SECRET}"\n',
        http_config='sessions_per_ip = 1\ntrusted_proxies = ["127.0.0.3"]\n',
    )
    server.start()
    yield server
    server.stop()


def token(sub: str) -> str:
    claims = {"sub": sub, "aud": "localhost", "exp": int(time.time()) + 300}
    return jws.serialize_compact(
        {"alg": "HS256", "kid": "app"}, json.dumps(claims), OctKey.import_key(SECRET)
    )


def upgrade(
    port: int, path: str = "/xmpp-websocket", source: str = "127.0.0.1", **headers: str
) -> tuple[int, socket.socket]:
    """A WebSocket handshake by hand; the status and the still-open socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    fields = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Protocol": "xmpp",
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    head = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    sock.sendall(head.encode() + b"\r\n")
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0
    return status, sock


def status_of(port: int, path: str = "/xmpp-websocket", **headers: str) -> int:
    status, sock = upgrade(port, path, **headers)
    sock.close()
    return status


# ---- 18.7: own origins come from the configuration ----------------------------------------------


def test_a_rebound_host_header_does_not_make_an_origin_ours(web: ServerProcess) -> None:
    evil = {"Origin": "http://evil.example", "Host": "evil.example"}
    assert status_of(web.http_port, **evil) == 403
    channel = f"/socket/websocket?vsn=2.0.0&token={token('mallory')}"
    assert status_of(web.http_port, channel, **evil) == 403
    # DNS rebinding with the listener's port in the Host header changes nothing.
    port_host = {"Origin": f"http://evil.example:{web.http_port}"}
    assert status_of(web.http_port, Host=f"evil.example:{web.http_port}", **port_host) == 403


def test_configured_origins_are_ours(web: ServerProcess) -> None:
    for origin in (
        "https://localhost",  # the domain's port 443, through a reverse proxy
        f"https://localhost:{web.https_port}",
        f"http://127.0.0.1:{web.http_port}",  # a listener address
    ):
        assert status_of(web.http_port, Origin=origin, Host="anything.example") == 101, origin
        time.sleep(0.2)  # sessions_per_ip = 1: let the server see the close
    channel = f"/socket/websocket?vsn=2.0.0&token={token('alice')}"
    assert status_of(web.http_port, channel, Origin="https://localhost") == 101


def test_a_refused_origin_is_logged_once_with_the_option_to_change(web: ServerProcess) -> None:
    for _ in range(3):
        assert status_of(web.http_port, Origin="https://once.example") == 403
    lines = [
        line
        for line in web.log_text().splitlines()
        if "https://once.example" in line and "WARN" in line
    ]
    assert len(lines) == 1 and "http.origins" in lines[0]


# ---- 18.8: slow heads cannot lock out an address's real sessions --------------------------------


def test_slowloris_from_one_address_does_not_stop_its_real_websocket(web: ServerProcess) -> None:
    slow = []
    try:
        for _ in range(150):  # more than limits.connections_per_ip (100)
            sock = socket.create_connection(
                ("127.0.0.1", web.http_port), timeout=5, source_address=("127.0.0.2", 0)
            )
            sock.sendall(b"GET /xmpp-websocket HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never ends
            slow.append(sock)

        async def real_client() -> None:
            url = f"ws://127.0.0.1:{web.http_port}/xmpp-websocket"
            async with websockets.connect(
                url, subprotocols=["xmpp"], local_addr=("127.0.0.2", 0), open_timeout=5
            ) as ws:
                await ws.send("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost'/>")
                assert "<open" in await ws.recv()

        run(real_client())
    finally:
        for sock in slow:
            sock.close()


# ---- 18.8: X-Forwarded-For / Forwarded only from trusted proxies --------------------------------


def test_forwarded_for_is_ignored_from_an_untrusted_peer(web: ServerProcess) -> None:
    first, held = upgrade(web.http_port, source="127.0.0.4", X_Forwarded_For="10.0.0.1")
    try:
        assert first == 101
        # Same peer, another claimed client: still the peer's one session (sessions_per_ip = 1).
        assert upgrade(web.http_port, source="127.0.0.4", X_Forwarded_For="10.0.0.2")[0] == 429
    finally:
        held.close()


def test_forwarded_for_from_a_trusted_proxy_names_the_client(web: ServerProcess) -> None:
    held = []
    try:
        for xff, expected in (
            ("10.0.0.5", 101),
            ("10.0.0.6, 127.0.0.3", 101),  # the proxy's own hop is skipped
            ("10.0.0.5", 429),  # 10.0.0.5 has its one session
            ("10.0.0.5, 10.0.0.9", 101),  # the client forged 10.0.0.5; the proxy saw 10.0.0.9
        ):
            status, sock = upgrade(web.http_port, source="127.0.0.3", X_Forwarded_For=xff)
            held.append(sock)
            assert status == expected, xff
        status, sock = upgrade(web.http_port, source="127.0.0.3", Forwarded='for="[2001:db8::7]"')
        held.append(sock)
        assert status == 101
        time.sleep(0.3)
        assert "from 10.0.0.6 over WebSocket" in web.log_text()
        assert "from 2001:db8::7 over WebSocket" in web.log_text()
    finally:
        for sock in held:
            sock.close()


def test_server_survives(web: ServerProcess) -> None:
    assert web.alive() and "Traceback" not in web.log_text()


# ---- the sans-IO parts --------------------------------------------------------------------------


def test_client_address_rules() -> None:
    trusted = parse_networks(["10.0.0.0/8", "::1"])
    xff = {"x-forwarded-for": "203.0.113.9, 198.51.100.2, 10.1.1.1"}
    assert client_address("192.0.2.1", xff, trusted) == "192.0.2.1"  # untrusted peer
    assert client_address("10.0.0.2", xff, trusted) == "198.51.100.2"
    assert client_address("::1", {"x-forwarded-for": "10.2.2.2"}, trusted) == "::1"  # all trusted
    assert client_address("::1", {"x-forwarded-for": "garbage"}, trusted) == "::1"
    forwarded = {"forwarded": 'for=192.0.2.60;proto=http, for="[2001:db8::1]:4711"'}
    assert client_address("10.0.0.2", forwarded, trusted) == "2001:db8::1"
    assert client_address("10.0.0.2", {}, []) == "10.0.0.2"


def test_framing_problems() -> None:
    te = [(b"transfer-encoding", b"chunked")]
    assert framing_problem(b"", te + [(b"content-length", b"5")])
    assert framing_problem(b"POST / HTTP/1.1\r\ncontent-length: 5\r\nContent-Length:5", [])
    assert framing_problem(b"POST / HTTP/1.1\r\nContent-Length: 5, 5", [])
    assert (
        framing_problem(b"POST / HTTP/1.1\r\nContent-Length: 5", [(b"content-length", b"5")])
        is None
    )
