"""The web listener: XEP-0156 host-meta, CORS, HTTP limits and refusals, over real sockets."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Iterator

import pytest
import websockets
from lxml import etree
from support import ServerProcess, run
from websockets.exceptions import InvalidStatus

XRD = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("http"),
        http_config=(
            'cors_origins = ["https://app.example"]\n'
            "plain_is_encrypted = false\n"
            "max_body_bytes = 2048\n"
            "max_header_bytes = 1024\n"
            "sessions_per_ip = 1\n"
            "request_timeout = 2\n"
        ),
    )
    server.start()
    yield server
    server.stop()


def https(server: ServerProcess) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=server.ca_file)
    context.check_hostname = False  # the certificate names localhost; we dial 127.0.0.1
    return http.client.HTTPSConnection("127.0.0.1", server.https_port, context=context, timeout=5)


def request(
    server: ServerProcess, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    conn = https(server)
    try:
        conn.request(
            method, path, body=body, headers={k.replace("_", "-"): v for k, v in headers.items()}
        )
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_host_meta_links_both_endpoints(web: ServerProcess) -> None:
    status, headers, body = request(
        web, "GET", "/.well-known/host-meta", Origin="https://app.example"
    )
    assert status == 200 and headers["content-type"] == "application/xrd+xml"
    assert headers["access-control-allow-origin"] == "https://app.example"
    links = {
        link.get("rel"): link.get("href") for link in etree.fromstring(body).iter(f"{XRD}Link")
    }
    assert links == {
        "urn:xmpp:alt-connections:websocket": f"wss://127.0.0.1:{web.https_port}/xmpp-websocket",
        "urn:xmpp:alt-connections:xbosh": f"https://127.0.0.1:{web.https_port}/http-bind",
    }


def test_host_meta_json_and_cors(web: ServerProcess) -> None:
    status, headers, body = request(
        web, "GET", "/.well-known/host-meta.json", Origin="https://evil.example"
    )
    assert status == 200 and headers["content-type"] == "application/json"
    assert "access-control-allow-origin" not in headers  # not an allowed origin
    rels = {link["rel"] for link in json.loads(body)["links"]}
    assert rels == {"urn:xmpp:alt-connections:websocket", "urn:xmpp:alt-connections:xbosh"}
    status, headers, _ = request(
        web,
        "OPTIONS",
        "/http-bind",
        Origin="https://app.example",
        Access_Control_Request_Method="POST",
    )
    assert status == 204 and "POST" in headers["access-control-allow-methods"]
    status, _, text = request(web, "OPTIONS", "/http-bind", Origin="https://evil.example")
    assert status == 403 and b"origin" in text


def test_plain_port_host_meta_uses_ws(web: ServerProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", web.http_port, timeout=5)
    conn.request("GET", "/.well-known/host-meta.json")
    links = json.loads(conn.getresponse().read())["links"]
    assert links[0]["href"] == f"ws://127.0.0.1:{web.http_port}/xmpp-websocket"
    conn.close()


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/nothing", 404),
        ("POST", "/.well-known/host-meta", 405),
        ("GET", "/http-bind", 405),
        ("GET", "/xmpp-websocket", 426),
    ],
)
def test_wrong_requests_get_a_status_and_a_reason(
    web: ServerProcess, method: str, path: str, status: int
) -> None:
    got, headers, body = request(web, method, path)
    assert got == status and headers["content-type"].startswith("text/plain") and body.strip()


def test_body_and_header_limits(web: ServerProcess) -> None:
    status, _, body = request(web, "POST", "/http-bind", b"x" * 3000)
    assert status == 413 and b"2048" in body
    status, _, _ = request(web, "GET", "/.well-known/host-meta", X_Filler="y" * 2000)
    assert status == 431


def test_slow_request_is_cut_off(web: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", web.http_port), timeout=10) as sock:
        sock.sendall(b"POST /http-bind HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 408")


def test_bad_http_gets_400(web: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", web.http_port), timeout=5) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400")


def test_plain_port_refused_when_not_counted_as_encrypted(web: ServerProcess) -> None:
    async def scenario() -> None:
        url = f"ws://127.0.0.1:{web.http_port}/xmpp-websocket"
        with pytest.raises(InvalidStatus) as caught:
            await websockets.connect(url, subprotocols=["xmpp"])
        assert caught.value.response.status_code == 403
        assert b"HTTPS" in caught.value.response.body

    run(scenario())


def test_sessions_per_address(web: ServerProcess) -> None:
    async def scenario() -> None:
        context = ssl.create_default_context(cafile=web.ca_file)
        url = f"wss://127.0.0.1:{web.https_port}/xmpp-websocket"
        kwargs = {"subprotocols": ["xmpp"], "ssl": context, "server_hostname": "localhost"}
        first = await websockets.connect(url, **kwargs)  # type: ignore[arg-type]
        try:
            with pytest.raises(InvalidStatus) as caught:
                await websockets.connect(url, **kwargs)  # type: ignore[arg-type]
            assert caught.value.response.status_code == 429
        finally:
            await first.close()

    run(scenario())


def test_server_survives(web: ServerProcess) -> None:
    assert web.alive() and "Traceback" not in web.log_text()


def raw_exchange(port: int, data: bytes, timeout: float = 5) -> bytes:
    """Send `data` on a fresh plain connection; everything the server sends until it closes."""
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except TimeoutError:
            reply += b"<still open>"
    return reply


SMUGGLED = b"GET /.well-known/host-meta.json HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    "framing",
    [
        # RFC 9112 §6.1: both headers is the request-smuggling shape; refused, not read chunked.
        f"Content-Length: {5 + len(SMUGGLED)}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n\r\n<b/>\n",
        "Content-Length: 5, 5\r\n\r\n<b/>\n",
        "Content-Length: 5\r\nContent-Length: 7\r\n\r\n<b/>\n",
        "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    ],
)
def test_ambiguous_framing_is_refused_and_the_hidden_request_never_answered(
    web: ServerProcess, framing: str
) -> None:
    head = b"POST /http-bind HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
    reply = raw_exchange(web.http_port, head + framing.encode() + SMUGGLED)
    assert reply.split(b" ", 2)[1] in (b"400", b"501"), reply[:200]
    assert reply.count(b"HTTP/1.1 ") == 1, reply  # nothing answered the smuggled GET
    assert b"Connection: close" in reply and not reply.endswith(b"<still open>")


def test_responses_carry_reason_phrases(web: ServerProcess) -> None:
    reply = raw_exchange(web.http_port, b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", timeout=3)
    assert reply.startswith(b"HTTP/1.1 404 Not Found\r\n")
    reply = raw_exchange(
        web.http_port, b"GET /.well-known/host-meta HTTP/1.1\r\nHost: x\r\n\r\n", 3
    )
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")


def test_root_serves_the_web_client_on_both_ports(web: ServerProcess) -> None:
    status, headers, body = request(web, "GET", "/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert b'<script type="module" src="js/app.js">' in body
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-cache" and headers["etag"]
    conn = http.client.HTTPConnection("127.0.0.1", web.http_port, timeout=5)
    conn.request("GET", "/js/app.js")
    response = conn.getresponse()
    assert response.status == 200 and response.reason == "OK"
    assert response.getheader("content-type") == "text/javascript; charset=utf-8"
    etag = response.getheader("etag")
    assert b"import" in response.read()
    conn.request("GET", "/js/app.js", headers={"If-None-Match": etag})
    response = conn.getresponse()
    assert response.status == 304 and response.read() == b""
    for path in ("/js/../../pyproject.toml", "/.git/config", "/js/", "/nothing.html", "/app.py"):
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 404, path
        response.read()
    conn.close()
