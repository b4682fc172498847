"""Three real nodes behind one real HAProxy (Debian `haproxy`), configured by conf/haproxy.cfg
with only its addresses, ports and certificate swapped: c2s clients (TCP mode), WebSocket and
BOSH clients (HTTP mode, TLS ended by HAProxy) are spread over the nodes by HAProxy and chat
across them. BOSH works because HAProxy's cookie keeps a session's requests on one node; a
client that drops the cookie is sent elsewhere and its session is not found there."""

from __future__ import annotations

import asyncio
import base64
import http.client
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import websockets
from lxml import etree
from support import ServerProcess, free_port, run
from support_cluster import barrier, body, cluster_config, login, users, wait_for

REPO = Path(__file__).resolve().parents[3]
BOSH = "http://jabber.org/protocol/httpbind"
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
OPEN = f"<open xmlns='{FRAMING}' to='localhost' version='1.0'/>"


def haproxy_config(nodes: list[ServerProcess], ports: dict[str, int], pem: Path) -> str:
    """conf/haproxy.cfg with test addresses: node i's ports instead of 10.0.0.i's."""
    text = (REPO / "conf" / "haproxy.cfg").read_text()
    for i, node in enumerate(nodes, 1):
        for standard, port in ((5222, node.port), (5223, node.tls_port), (5280, node.http_port)):
            text = text.replace(f"10.0.0.{i}:{standard}", f"127.0.0.1:{port}")
    for name, port in ports.items():
        text = text.replace(f"bind :{name}", f"bind 127.0.0.1:{port}")
    text = text.replace("/etc/haproxy/chat.pem", str(pem))
    assert "10.0.0." not in text and "bind :" not in text, text
    return text


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[tuple[list[ServerProcess], SimpleNamespace]]:
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is missing: apt-get install haproxy (scripts/test does)")
    prefix = f"xmppd-test-{uuid.uuid4().hex}"
    nodes = []
    for name in ("n1", "n2", "n3"):
        (tmp_path / name).mkdir()
        nodes.append(
            ServerProcess(
                tmp_path / name,
                extra_config=cluster_config(pg_url, name, prefix),
                http_config='trusted_proxies = ["127.0.0.1"]',
            )
        )
    proxy = None
    try:
        nodes[0].start()  # migrates the database and makes the certificate the others share
        for node in nodes[1:]:
            shutil.copytree(nodes[0].data_dir / "certs", node.data_dir / "certs")
            node.start()
        certs = nodes[0].data_dir / "certs"
        pem = tmp_path / "chat.pem"
        pem.write_bytes(
            (certs / "self-signed.crt").read_bytes() + (certs / "self-signed.key").read_bytes()
        )
        ports = {"5222": free_port(), "5223": free_port(), "5443": free_port()}
        config = tmp_path / "haproxy.cfg"
        config.write_text(haproxy_config(nodes, ports, pem))
        log = (tmp_path / "haproxy.log").open("wb")
        proxy = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", ports["5443"]), timeout=0.2).close()
                break
            except OSError:
                assert proxy.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "haproxy.log"
                ).read_text()
                time.sleep(0.05)
        front = SimpleNamespace(
            host="127.0.0.1",
            port=ports["5222"],
            tls_port=ports["5223"],
            https_port=ports["5443"],
            ca_file=nodes[0].ca_file,
        )
        yield nodes, front
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=10)
        for node in nodes:
            node.stop()


# ---- WebSocket and BOSH clients, through the proxy -----------------------------------------


def tls_context(front: SimpleNamespace) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=front.ca_file)


async def ws_login(front: SimpleNamespace, user: str, resource: str) -> websockets.ClientConnection:
    ws = await websockets.connect(
        f"wss://localhost:{front.https_port}/xmpp-websocket",
        subprotocols=["xmpp"],
        ssl=tls_context(front),
    )

    async def recv() -> etree._Element:
        return etree.fromstring((await asyncio.wait_for(ws.recv(), 5)).encode())

    await ws.send(OPEN)
    await recv(), await recv()  # <open/>, features
    token = base64.b64encode(f"\0{user}\0pw".encode()).decode()
    await ws.send(
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
    )
    assert (await recv()).tag.endswith("}success")
    await ws.send(OPEN)
    await recv(), await recv()
    await ws.send(
        "<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:"
        f"xmpp-bind'><resource>{resource}</resource></bind></iq>"
    )
    assert (await recv()).get("type") == "result"
    await ws.send("<presence xmlns='jabber:client'/>")
    return ws


async def ws_body(ws: websockets.ClientConnection, text: str) -> etree._Element:
    async def look() -> etree._Element:
        while True:
            el = etree.fromstring((await ws.recv()).encode())
            if el.findtext("{jabber:client}body") == text:
                return el

    return await asyncio.wait_for(look(), 10)


class Bosh:
    """A BOSH client that keeps HAProxy's cookie, as a browser does (unless told not to)."""

    def __init__(self, front: SimpleNamespace) -> None:
        self.front = front
        self.rid = 1000
        self.sid = ""
        self.cookie = ""

    def post(self, payload: str = "", **attrs: str) -> etree._Element:
        self.rid += 1
        extra = "".join(f" {k.replace('_', ':', 1)}='{v}'" for k, v in attrs.items())
        sid = f" sid='{self.sid}'" if self.sid else ""
        data = (
            f"<body xmlns='{BOSH}' xmlns:xmpp='urn:xmpp:xbosh' rid='{self.rid}'{sid}{extra}>"
            f"{payload}</body>"
        )
        conn = http.client.HTTPSConnection(
            "localhost", self.front.https_port, context=tls_context(self.front), timeout=30
        )
        headers = {"Content-Type": "text/xml; charset=utf-8"}
        if self.cookie:
            headers["Cookie"] = self.cookie
        try:
            conn.request("POST", "/http-bind", data.encode(), headers)
            response = conn.getresponse()
            assert response.status == 200, response.status
            cookie = response.getheader("Set-Cookie")
            if cookie:
                self.cookie = cookie.split(";")[0]
            return etree.fromstring(response.read())
        finally:
            conn.close()

    async def send(self, payload: str = "", **attrs: str) -> etree._Element:
        return await asyncio.to_thread(self.post, payload, **attrs)

    async def login(self, user: str, resource: str) -> None:
        created = await self.send(
            to="localhost", wait="10", hold="1", ver="1.11", xmpp_version="1.0"
        )
        self.sid = created.get("sid")
        assert self.cookie.startswith("XMPPDNODE="), self.cookie
        token = base64.b64encode(f"\0{user}\0pw".encode()).decode()
        reply = await self.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        )
        assert reply[0].tag.endswith("}success")
        await self.send(xmpp_restart="true", to="localhost")
        bound = await self.send(
            "<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:"
            f"xmpp-bind'><resource>{resource}</resource></bind></iq>"
        )
        assert bound.findtext(".//{*}jid") == f"{user}@localhost/{resource}"
        await self.send("<presence xmlns='jabber:client'/>")

    async def body_until(self, text: str) -> None:
        for _ in range(20):
            reply = await self.send()
            if text in [m.findtext("{jabber:client}body") for m in reply.iter("{*}message")]:
                return
        raise AssertionError(f"{text!r} never came over BOSH")


def chat(to: str, text: str) -> str:
    return f"<message xmlns='jabber:client' to='{to}' type='chat'><body>{text}</body></message>"


def nodes_of(node: ServerProcess) -> dict[str, str]:
    """resource -> node, from the cluster-wide `xmppd sessions`."""
    listed = node.cli("sessions")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    return {row[0].partition("/")[2]: row[-1] for row in rows}


def test_c2s_websocket_and_bosh_spread_by_haproxy_chat_across_nodes(cluster) -> None:
    nodes, front = cluster
    names = users(nodes[0], "tcp", "tcp", "tcp", "ws", "ws", "ws", "bosh")
    tcp, web, bosh_user = names[:3], names[3:6], names[6]

    async def scenario() -> None:
        c2s = [await login(front, user, f"c2s{i}") for i, user in enumerate(tcp)]  # type: ignore[arg-type]
        sockets = [await ws_login(front, user, f"ws{i}") for i, user in enumerate(web)]
        bosh = Bosh(front)
        await bosh.login(bosh_user, "bosh")
        await asyncio.sleep(0.5)

        where = await asyncio.to_thread(nodes_of, nodes[1])  # asked on any node: all of them
        assert {where[f"c2s{i}"] for i in range(3)} == {"n1", "n2", "n3"}, where  # leastconn
        assert {where[f"ws{i}"] for i in range(3)} == {"n1", "n2", "n3"}, where  # round robin
        assert where["bosh"] in ("n1", "n2", "n3")

        # c2s -> everyone, and everyone -> c2s, wherever each one landed.
        sender = c2s[0]
        for i, user in enumerate(web):
            sender.send_message(mto=f"{user}@localhost", mbody=f"to ws{i}", mtype="chat")
            await ws_body(sockets[i], f"to ws{i}")
            await sockets[i].send(chat(f"{tcp[0]}@localhost", f"from ws{i}"))
            await wait_for(sender, body(f"from ws{i}"))
        for i, client in enumerate(c2s[1:], 1):
            await bosh.send(chat(f"{tcp[i]}@localhost/c2s{i}", f"bosh to c2s{i}"))
            await wait_for(client, body(f"bosh to c2s{i}"))
            client.send_message(mto=f"{bosh_user}@localhost", mbody=f"c2s{i} to bosh", mtype="chat")
            await barrier(client)
            await bosh.body_until(f"c2s{i} to bosh")
        await sockets[1].send(chat(f"{bosh_user}@localhost/bosh", "ws to bosh"))
        await bosh.body_until("ws to bosh")

        # Without the cookie, round robin sends the next request to another node, which does
        # not know the session: the stickiness is what makes BOSH work.
        kept = bosh.cookie
        bosh.cookie = ""
        lost = await bosh.send()
        assert lost.get("type") == "terminate" and lost.get("condition") == "item-not-found"
        bosh.cookie = kept
        for client in c2s:
            await client.close()
        for ws in sockets:
            await ws.close()

    run(scenario())
