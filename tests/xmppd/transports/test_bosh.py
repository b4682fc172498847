"""XEP-0124/0206 BOSH against a real server: HTTPS requests by hand, a slixmpp peer over TCP."""

from __future__ import annotations

import asyncio
import base64
import http.client
import socket
import ssl
from collections.abc import Iterator

import pytest
from lxml import etree
from slixmpp.exceptions import IqError
from support import ServerProcess, connect, run

BOSH = "http://jabber.org/protocol/httpbind"
USERS = {"bshalice": "bshalice-secret", "bshbob": "bshbob-secret"}


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("bosh"), http_config="bosh_polling = 2\nbosh_max_inactivity = 5"
    )
    for user, password in USERS.items():
        server.add_user(user, password)
    server.start()
    yield server
    server.stop()


class Bosh:
    """A minimal BOSH client: one HTTPS connection per request, rids counted here."""

    def __init__(self, server: ServerProcess, rid: int = 5000) -> None:
        self.server = server
        self.rid = rid
        self.sid = ""

    def post(self, body: bytes) -> tuple[etree._Element, bytes]:
        context = ssl.create_default_context(cafile=self.server.ca_file)
        context.check_hostname = False
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.server.https_port, context=context, timeout=30
        )
        try:
            conn.request("POST", "/http-bind", body, {"Content-Type": "text/xml; charset=utf-8"})
            response = conn.getresponse()
            assert response.status == 200
            raw = response.read()
        finally:
            conn.close()
        return etree.fromstring(raw), raw

    def body(self, payload: str = "", rid: int | None = None, **attrs: str) -> bytes:
        if rid is None:
            self.rid += 1
            rid = self.rid
        extra = "".join(
            f" {k.replace('_', ':', 1) if k.startswith('xmpp_') else k}='{v}'"
            for k, v in attrs.items()
        )
        sid = f" sid='{self.sid}'" if self.sid else ""
        return (
            f"<body xmlns='{BOSH}' xmlns:xmpp='urn:xmpp:xbosh' rid='{rid}'{sid}{extra}>"
            f"{payload}</body>"
        ).encode()

    async def send(self, payload: str = "", **attrs: str) -> etree._Element:
        element, _ = await asyncio.to_thread(self.post, self.body(payload, **attrs))
        return element

    async def create(self, hold: str = "1") -> etree._Element:
        created = await self.send(
            to="localhost", wait="10", hold=hold, ver="1.11", xmpp_version="1.0", ack="1"
        )
        self.sid = created.get("sid")
        return created

    async def login(self, user: str) -> etree._Element:
        created = await self.create()
        token = base64.b64encode(f"\0{user}\0{USERS[user]}".encode()).decode()
        reply = await self.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        )
        assert reply[0].tag == "{urn:ietf:params:xml:ns:xmpp-sasl}success"
        restarted = await self.send(xmpp_restart="true", to="localhost")
        assert restarted.find(".//{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None
        bound = await self.send(
            "<iq xmlns='jabber:client' type='set' id='b'>"
            "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>web</resource></bind></iq>"
        )
        assert bound.findtext(".//{*}jid") == f"{user}@localhost/web"
        return created


def test_session_creation_login_and_message_round_trip(web: ServerProcess) -> None:
    async def scenario() -> None:
        client = Bosh(web)
        created = await client.login("bshalice")
        assert created.get("hold") == "1" and created.get("requests") == "2"
        assert created.get("from") == "localhost" and created.get("authid")
        assert created.get("ack") == "5001" and created.get("ver") == "1.11"
        mechanisms = [m.text for m in created.iter("{*}mechanism")]
        assert "PLAIN" in mechanisms
        bob = await connect(web, "bshbob", password=USERS["bshbob"])
        try:
            echo = await client.send("<presence xmlns='jabber:client'/>")
            assert echo[0].tag == "{jabber:client}presence"  # held until there was output
            idle = asyncio.ensure_future(client.send())  # held: nothing to say yet
            await asyncio.sleep(0.3)
            assert not idle.done()
            held = asyncio.ensure_future(
                client.send(
                    "<message xmlns='jabber:client' to='bshbob@localhost' type='chat'>"
                    "<body>over bosh</body></message>"
                )
            )
            assert len(await asyncio.wait_for(idle, 5)) == 0  # a newer request released it
            got = await bob.next_message()
            assert got["body"] == "over bosh" and str(got["from"]) == "bshalice@localhost/web"
            assert not held.done()
            bob.send_message(mto="bshalice@localhost/web", mbody="over tcp", mtype="chat")
            reply = await asyncio.wait_for(held, 10)
            bodies = [
                m.findtext("{jabber:client}body") for m in reply.iter("{jabber:client}message")
            ]
            assert bodies == ["over tcp"]
            ended = await client.send(type="terminate")
            assert ended.get("type") == "terminate"
            gone = await client.send()
            assert gone.get("type") == "terminate" and gone.get("condition") == "item-not-found"
        finally:
            await bob.close()

    run(scenario())


def test_repeated_rid_gets_the_same_answer_and_bad_rids_end_the_session(web: ServerProcess) -> None:
    async def scenario() -> None:
        client = Bosh(web, rid=9000)
        await client.create()
        first = await asyncio.to_thread(client.post, client.body(rid=9001))  # the creation rid
        assert first[0].get("sid") == client.sid  # resent, not processed again
        far = await client.send(rid=99999)
        assert far.get("type") == "terminate" and far.get("condition") == "item-not-found"

    run(scenario())


@pytest.mark.parametrize(
    "body, condition",
    [
        (f"<body xmlns='{BOSH}' rid='1' to='elsewhere.example'/>", "host-unknown"),
        (f"<body xmlns='{BOSH}' to='localhost'/>", "bad-request"),
        (f"<body xmlns='{BOSH}' rid='1' sid='nope'/>", "item-not-found"),
        ("<body rid='1' to='localhost'/>", "bad-request"),
        (f"<body xmlns='{BOSH}' rid='1' to='localhost'><!-- c --></body>", "bad-request"),
    ],
)
def test_bad_requests_get_terminal_conditions(
    web: ServerProcess, body: str, condition: str
) -> None:
    element, _ = Bosh(web).post(body.encode())
    assert element.get("type") == "terminate" and element.get("condition") == condition


def test_stream_error_is_a_remote_stream_error(web: ServerProcess) -> None:
    async def scenario() -> None:
        client = Bosh(web, rid=7000)
        await client.create()
        reply = await client.send("<message xmlns='jabber:client'/>")  # before authentication
        assert reply.get("type") == "terminate"
        assert reply.get("condition") == "remote-stream-error"
        assert reply[0].tag == "{http://etherx.jabber.org/streams}error"

    run(scenario())


def test_polling_too_often_is_a_policy_violation(web: ServerProcess) -> None:
    async def scenario() -> None:
        client = Bosh(web, rid=8000)
        created = await client.create(hold="0")
        assert created.get("hold") == "0" and created.get("polling") == "2"
        assert (await client.send()).get("type") is None
        second = await client.send()
        assert second.get("type") == "terminate" and second.get("condition") == "policy-violation"

    run(scenario())


def test_inactive_session_ends(web: ServerProcess) -> None:
    async def scenario() -> None:
        client = Bosh(web, rid=6000)
        await client.login("bshalice")
        bob = await connect(web, "bshbob", password=USERS["bshbob"])
        try:
            await asyncio.sleep(6.5)  # bosh_max_inactivity = 5, checked once a second
            gone = await client.send()
            assert gone.get("type") == "terminate" and gone.get("condition") == "item-not-found"
            # the session is unbound: an iq to its full JID now bounces (RFC 6121 §8.5.3.2.2)
            with pytest.raises(IqError) as caught:
                await bob.plugin["xep_0199"].ping("bshalice@localhost/web", timeout=5)
            assert caught.value.condition == "service-unavailable"
        finally:
            await bob.close()
        assert f"BOSH session {client.sid} inactive" in web.log_text()

    run(scenario())


PING = "<iq xmlns='jabber:client' type='get' id='{0}'><ping xmlns='urn:xmpp:ping'/></iq>"


def chat(to: str, text: str) -> str:
    return f"<message xmlns='jabber:client' to='{to}' type='chat'><body>{text}</body></message>"


def test_a_retransmitted_held_request_gets_the_held_answer(web: ServerProcess) -> None:
    """Issue 18.2 (XEP-0124 §14.3): a copy of a request still held is answered like it, is
    not processed again, and the session lives on (it used to end with item-not-found)."""

    async def scenario() -> None:
        client = Bosh(web, rid=4000)
        await client.login("bshalice")
        bob = await connect(web, "bshbob", password=USERS["bshbob"])
        try:
            held = client.body(chat("bshbob@localhost", "once"))  # no output for us: held
            first = asyncio.ensure_future(asyncio.to_thread(client.post, held))
            assert (await bob.next_message())["body"] == "once"
            await asyncio.sleep(0.3)
            assert not first.done()
            again, raw = await asyncio.to_thread(client.post, held)  # the browser gave up
            assert again.get("type") is None
            _original, raw_first = await asyncio.wait_for(first, 5)
            assert raw_first == raw  # one answer for one rid
            reply = await client.send(chat("bshbob@localhost", "twice?") + PING.format("p1"))
            assert reply[0].get("id") == "p1"  # the session lives on
            assert (await bob.next_message())["body"] == "twice?"  # "once" came once
        finally:
            await bob.close()

    run(scenario())


def test_a_retransmission_after_the_first_connection_dropped(web: ServerProcess) -> None:
    """The first copy's connection is gone (a proxy timed out): its answer goes to the copy at
    once, without waiting for output or `wait`."""

    async def scenario() -> None:
        client = Bosh(web, rid=3000)
        await client.login("bshalice")
        held = client.body()
        context = ssl.create_default_context(cafile=web.ca_file)
        context.check_hostname = False
        raw = socket.create_connection(("127.0.0.1", web.https_port))
        tls = context.wrap_socket(raw)
        head = f"POST /http-bind HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(held)}"
        tls.sendall(head.encode() + b"\r\n\r\n" + held)
        await asyncio.sleep(0.3)  # now held
        tls.close()
        again, _ = await asyncio.wait_for(asyncio.to_thread(client.post, held), 5)  # wait=10
        assert again.get("type") is None and len(again) == 0
        reply = await client.send(PING.format("p2"))
        assert reply[0].get("id") == "p2"

    run(scenario())


def test_server_survives(web: ServerProcess) -> None:
    assert web.alive() and "Traceback" not in web.log_text()
