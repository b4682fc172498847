"""XEP-0198 stream management: the sans-IO counters, then a real server with slixmpp's own SM
client (plugin xep_0198, with resumption) and raw sockets for the error paths."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0198 import stanza as sm_stanza
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from support import HEADER, NO_ACCOUNT_RATE, Client, RawClient, ServerProcess, connect, run

from xmppd.modules.sm import MASK, Counters, failed_element, parse_count

SM = "urn:xmpp:sm:3"
DELAY = "{urn:xmpp:delay}delay"
RESUME_TIMEOUT = 3  # the server's default window; resuming tests ask for more with 'max'
CONFIG = f"""
[modules.sm]
resume_timeout = {RESUME_TIMEOUT}
max_resume_timeout = 60
max_unacked = 30
max_hibernating = 2
{NO_ACCOUNT_RATE}"""  # one sender floods 71 messages (the per-account rate is tested elsewhere)
USERS = [
    "acka", "ackb", "resa", "resb", "expa", "expb", "expw", "clsa", "clsb", "lima", "limb",
    "raw", "rawb", "half", "repl", "replb", "many", "gone", "downa", "downb", "dupa", "dupb",
    "csir", "csib",
]  # fmt: skip
PASSWORD = "sm-secret"


# ---- sans-IO ----------------------------------------------------------------------------------


def test_counters_ack_and_wrap_at_2_to_the_32() -> None:
    counters = Counters()
    counters.sent = MASK - 1  # two short of wrapping
    counters.handled = MASK
    counters.received()
    assert counters.handled == 0  # §4: back to zero after 2^32 - 1
    for n in range(4):
        counters.queued(etree.Element(f"s{n}"), 0.0)
    assert counters.sent == 2 and counters.acked == MASK - 1
    assert counters.ack(0)  # h wrapped too: the first two are handled
    assert [el.tag for el, _ in counters.unacked] == ["s2", "s3"]
    assert counters.ack(2) and not counters.unacked
    assert counters.ack(2)  # the same h again is fine


def test_counters_refuse_an_h_too_high_or_going_back() -> None:
    counters = Counters()
    for n in range(3):
        counters.queued(etree.Element(f"s{n}"), 0.0)
    assert counters.ack_problem(4) == "too-high" and not counters.ack(4)
    assert len(counters.unacked) == 3  # a refused ack changes nothing
    assert counters.ack(2)
    assert counters.ack_problem(1) == "behind"
    assert counters.ack_problem(MASK) == "behind"  # -1, not four billion ahead
    assert counters.ack_problem(3) is None


@pytest.mark.parametrize(
    "value, parsed",
    [("0", 0), ("4294967295", MASK), ("4294967296", None), ("-1", None), ("1e3", None),
     ("", None), (None, None), ("٣", None)],
)  # fmt: skip
def test_parse_count_is_xs_unsigned_int(value: str | None, parsed: int | None) -> None:
    assert parse_count(value) == parsed


def test_failed_element_carries_a_stanza_error_condition() -> None:
    failed = etree.fromstring(failed_element("item-not-found", "gone", h=7))
    assert failed.tag == f"{{{SM}}}failed" and failed.get("h") == "7"
    assert failed[0].tag == "{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found"


# ---- a server of our own ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("xmppd-sm"))
    yield proc
    proc.stop()


def start_server(base: Path) -> ServerProcess:
    proc = ServerProcess(base, CONFIG)
    for user in USERS:
        proc.add_user(user, PASSWORD)
    proc.start()
    return proc


def wait_for_log(server: ServerProcess, text: str, count: int = 1, timeout: float = 10) -> None:
    """The server's own account of a state no client can see (e.g. hibernation)."""
    deadline = time.monotonic() + timeout
    while server.log_text().count(text) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} not in the server log")
        time.sleep(0.05)


# ---- slixmpp clients --------------------------------------------------------------------------


async def sm_client(
    server: ServerProcess, user: str, resource: str, *, max_seconds: int | None = None
) -> Client:
    """A logged-in slixmpp client that enabled resumable stream management."""
    client = Client(f"{user}@localhost/{resource}", PASSWORD, "SCRAM-SHA-256", server.ca_file)
    client.register_plugin("xep_0198")
    enabled: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    client.add_event_handler("sm_enabled", lambda e: enabled.done() or enabled.set_result(e))
    if max_seconds is not None:

        def ask_for_max(stanza: object) -> object:
            if isinstance(stanza, sm_stanza.Enable):
                stanza["max"] = str(max_seconds)
            return stanza

        client.add_filter("out", ask_for_max)
    client.enable_direct_tls, client.enable_starttls = False, True
    client.connect("127.0.0.1", server.port)
    await asyncio.wait_for(client.started, 10)
    await asyncio.wait_for(enabled, 10)
    client.send_presence()
    return client


async def plain(server: ServerProcess, user: str, resource: str) -> Client:
    return await connect(server, user, resource, password=PASSWORD)


async def server_ack(client: Client) -> int:
    """Ask the server for <a/> and return its h."""
    answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def got(ack: sm_stanza.Ack) -> None:
        if not answer.done():
            answer.set_result(ack["h"])

    client.register_handler(Callback("test ack", MatchXPath(sm_stanza.Ack.tag_name()), got))
    try:
        client.plugin["xep_0198"].request_ack()
        return await asyncio.wait_for(answer, 5)
    finally:
        client.remove_handler("test ack")


async def settle_acks(client: Client) -> None:
    """Acknowledge everything received, and know the server handled it (a ping comes back)."""
    client.plugin["xep_0198"].send_ack()
    await client.plugin["xep_0199"].ping(jid="localhost", timeout=5)


async def bodies(client: Client, until: str, timeout: float = 10) -> list[str]:
    got: list[str] = []
    while not got or got[-1] != until:
        got.append((await client.next_message(timeout))["body"])
    return got


def test_ack_counting_matches_what_the_client_sent(sm_server: ServerProcess) -> None:
    async def scenario() -> None:
        alice = await sm_client(sm_server, "acka", "phone")
        bob = await plain(sm_server, "ackb", "desk")
        for n in range(7):
            alice.send_message(mto="ackb@localhost/desk", mbody=f"hi {n}", mtype="chat")
        await alice.plugin["xep_0199"].ping(jid="localhost", timeout=5)
        assert await bodies(bob, "hi 6") == [f"hi {n}" for n in range(7)]
        sm = alice.plugin["xep_0198"]
        # Presence, seven messages and a ping: every one counted, none twice.
        assert sm.seq >= 9
        assert await server_ack(alice) == sm.seq
        assert sm.last_ack == sm.seq and not sm.unacked_queue
        # The other way: the server sends <r/> every 5 stanzas and slixmpp answers, so the
        # acknowledgements keep coming; the client's count is what it received.
        for n in range(12):
            bob.send_message(mto="acka@localhost/phone", mbody=f"back {n}", mtype="chat")
        assert (await bodies(alice, "back 11"))[-12:] == [f"back {n}" for n in range(12)]
        assert sm.handled >= 12
        await alice.close()
        await bob.close()

    run(scenario())


def test_abrupt_drop_then_resume_delivers_everything_once_in_order(
    sm_server: ServerProcess,
) -> None:
    async def scenario() -> None:
        alice = await sm_client(sm_server, "resa", "phone", max_seconds=60)
        bob = await plain(sm_server, "resb", "desk")
        full = "resa@localhost/phone"
        for n in range(1, 6):
            bob.send_message(mto=full, mbody=f"m{n}", mtype="chat")
        received = await bodies(alice, "m5")
        # Mid-conversation: more messages are on their way when the connection dies, with no
        # closing tag (as when a phone loses its network), and bob goes on writing.
        for n in range(6, 11):
            bob.send_message(mto=full, mbody=f"m{n}", mtype="chat")
        alice.transport.abort()
        await asyncio.wait_for(alice.disconnected_event.wait(), 5)
        await asyncio.to_thread(wait_for_log, sm_server, f"{full} lost its connection")
        for n in range(11, 21):
            bob.send_message(mto=full, mbody=f"m{n}", mtype="chat")
        await bob.plugin["xep_0199"].ping(jid="localhost", timeout=5)  # all 20 routed
        while not alice.messages.empty():  # what slixmpp read before the drop
            received.append(alice.messages.get_nowait()["body"])

        resumed: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        alice.add_event_handler("session_resumed", lambda e: resumed.set_result(e))
        alice.connect("127.0.0.1", sm_server.port)
        await asyncio.wait_for(resumed, 10)
        bob.send_message(mto=full, mbody="end", mtype="chat")
        received += await bodies(alice, "end")
        assert received == [f"m{n}" for n in range(1, 21)] + ["end"]
        # The counts agree after the resumption: nothing was lost or counted twice.
        sm = alice.plugin["xep_0198"]
        assert await server_ack(alice) == sm.seq
        # Still the same session: bound, available, reachable at its full JID.
        assert alice.boundjid.full == full
        await alice.close()
        await bob.close()

    run(scenario())


def test_window_expires_unacked_go_offline_and_contacts_see_unavailable_then(
    sm_server: ServerProcess,
) -> None:
    async def scenario() -> None:
        alice = await sm_client(sm_server, "expa", "phone")
        watcher = await plain(sm_server, "expw", "eyes")
        bob = await plain(sm_server, "expb", "desk")
        # The watcher subscribes (alice's slixmpp approves) and sees alice available.
        watcher.send_presence(pto="expa@localhost", ptype="subscribe")
        while True:
            presence = await asyncio.wait_for(watcher.presences.get(), 10)
            if presence["from"].full == "expa@localhost/phone" and presence["type"] in (
                "available",
                "",
            ):
                break
        bob.send_message(mto="expa@localhost/phone", mbody="seen", mtype="chat")
        assert (await alice.next_message())["body"] == "seen"
        await settle_acks(alice)  # "seen" was acknowledged: it must not come back

        alice.transport.abort()
        dropped = time.monotonic()
        await asyncio.to_thread(wait_for_log, sm_server, "expa@localhost/phone lost its")
        for n in range(3):
            bob.send_message(mto="expa@localhost/phone", mbody=f"while away {n}", mtype="chat")
        # An iq request waits in the queue too; at the end it bounces.
        ping = asyncio.ensure_future(
            bob.plugin["xep_0199"].send_ping("expa@localhost/phone", timeout=RESUME_TIMEOUT + 10)
        )
        # Hibernating is invisible to contacts: a marker overtakes any unavailable presence.
        bob.send_message(mto="expw@localhost/eyes", mbody="marker", mtype="chat")
        assert (await watcher.next_message())["body"] == "marker"
        while not watcher.presences.empty():
            assert watcher.presences.get_nowait()["type"] != "unavailable"

        while True:
            presence = await asyncio.wait_for(watcher.presences.get(), RESUME_TIMEOUT + 10)
            if presence["type"] == "unavailable":
                break
        assert presence["from"].full == "expa@localhost/phone"
        assert time.monotonic() - dropped >= RESUME_TIMEOUT - 0.5  # only once the window ended
        with pytest.raises(IqError) as bounced:
            await ping
        assert bounced.value.condition == "service-unavailable"

        # The unacknowledged messages went to offline storage: delivered at the next login,
        # oldest first, with the time they were first sent, and nothing else.
        again = await plain(sm_server, "expa", "laptop")
        got = [await again.next_message() for _ in range(3)]
        assert [m["body"] for m in got] == [f"while away {n}" for n in range(3)]
        assert all(m.xml.find(DELAY) is not None for m in got)
        bob.send_message(mto="expa@localhost", mbody="after", mtype="chat")
        assert (await again.next_message())["body"] == "after"
        for client in (again, watcher, bob):
            await client.close()

    run(scenario())


def test_clean_close_ends_stream_management_and_reroutes_unacked(
    sm_server: ServerProcess,
) -> None:
    raw = Raw.logged_in(sm_server, "clsa", "phone")
    enabled = raw.enable()
    raw.send("<presence><priority>1</priority></presence>")

    async def send_two() -> None:
        bob = await plain(sm_server, "clsb", "desk")
        for n in range(2):
            bob.send_message(mto="clsa@localhost/phone", mbody=f"unacked {n}", mtype="chat")
        await bob.plugin["xep_0199"].ping(jid="localhost", timeout=5)
        await bob.close()

    run(send_two())
    assert [m.findtext("{jabber:client}body") for m in raw.messages(2)] == [
        "unacked 0",
        "unacked 1",
    ]
    raw.send("</stream:stream>")  # clean: no hibernation, but nothing acknowledged either
    assert raw.read_to_close().endswith(b"</stream:stream>")

    async def login_again() -> None:
        again = await plain(sm_server, "clsa", "laptop")
        got = [(await again.next_message())["body"] for _ in range(2)]
        assert got == ["unacked 0", "unacked 1"]
        await again.close()

    run(login_again())
    # The ended session cannot be resumed; the server still knows what it handled (§5).
    retry = Raw.authenticated(sm_server, "clsa")
    retry.send(f"<resume xmlns='{SM}' previd='{enabled.get('id')}' h='0'/>")
    failed = retry.expect("failed")
    assert failed[0].tag.endswith("item-not-found") and failed.get("h") == "1"
    retry.close()


def test_acks_trim_the_queue_and_a_client_that_never_acks_is_closed(
    sm_server: ServerProcess,
) -> None:
    raw = Raw.logged_in(sm_server, "lima", "phone")
    raw.enable("")  # acks without resumption
    raw.send("<presence/>")

    async def send(count: int, prefix: str) -> None:
        bob = await plain(sm_server, "limb", "desk")
        for n in range(count):
            bob.send_message(mto="lima@localhost/phone", mbody=f"{prefix}{n}", mtype="chat")
        await bob.plugin["xep_0199"].ping(jid="localhost", timeout=5)
        await bob.close()

    # 40 stanzas in all (more than max_unacked = 30), acknowledged as they come.
    for batch in range(4):
        run(send(10, f"b{batch}-"))
        raw.skipped = b""
        raw.messages(10)
        assert b"<r xmlns" in raw.skipped + raw.buffer  # the server asks every 5 stanzas
        raw.send(f"<a xmlns='{SM}' h='{(batch + 1) * 10 + 1}'/>")  # + the presence echo
        raw.take()
    # Now it stops acknowledging: the 31st unacknowledged stanza ends the session.
    run(send(31, "x"))
    closing = raw.read_to_close()
    assert b"<policy-violation" in closing
    assert b"<a xmlns=" in closing  # a last <a/> before the stream error

    async def offline() -> None:
        again = await plain(sm_server, "lima", "laptop")
        got = await bodies(again, "x30")
        assert got == [f"x{n}" for n in range(31)]  # every unacknowledged one, and only those
        await again.close()

    run(offline())


# ---- raw sockets ------------------------------------------------------------------------------


class Raw(RawClient):
    def __init__(self, server: ServerProcess) -> None:
        super().__init__(server)
        self.skipped = b""  # what expect() passed over

    @classmethod
    def authenticated(cls, server: ServerProcess, user: str) -> Raw:
        """STARTTLS, SASL PLAIN, the restart: ready to bind or resume."""
        raw = cls(server)
        raw.starttls()
        raw.send(HEADER)
        raw.read_until("</stream:features>")
        raw.take()
        token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
        raw.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        assert b"<success" in raw.read_until("success")
        raw.take()
        raw.send(HEADER)
        features = raw.read_until("</stream:features>")
        assert f'<sm xmlns="{SM}"/>'.encode() in features  # offered once authenticated
        raw.take()
        return raw

    @classmethod
    def logged_in(cls, server: ServerProcess, user: str, resource: str) -> Raw:
        raw = cls.authenticated(server, user)
        raw.bind(resource)
        return raw

    def bind(self, resource: str) -> None:
        self.send(
            "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        assert b"<jid>" in self.expect_bytes("</iq>")

    def enable(self, attrs: str = "resume='true'") -> etree._Element:
        self.send(f"<enable xmlns='{SM}' {attrs}/>")
        return self.expect("enabled")

    def expect_bytes(self, marker: str) -> bytes:
        data = self.read_until(marker)
        self.take()
        return data

    def expect(self, name: str, timeout: float = 10) -> etree._Element:
        """The next top-level element called `name`; what came before it is dropped."""
        pattern = re.compile(rb"<" + name.encode() + rb"[\s/>]")
        deadline = time.monotonic() + timeout
        while True:
            found = pattern.search(self.buffer)
            if found:
                start = found.start()
                end = self.buffer.find(b">", start) + 1
                if end and self.buffer[end - 2 : end] != b"/>":
                    close = self.buffer.find(f"</{name}>".encode(), start)
                    end = close + len(name) + 3 if close >= 0 else 0
                if end > 0:
                    el = etree.fromstring(self.buffer[start:end])
                    self.skipped += self.buffer[:start]
                    self.buffer = self.buffer[end:]
                    return el
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no <{name}/> in {self.buffer[-1000:]!r}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before <{name}/>: {self.buffer[-1000:]!r}")
            self.buffer += chunk

    def messages(self, count: int) -> list[etree._Element]:
        return [self.expect("message") for _ in range(count)]

    def drop(self) -> None:
        """The connection dies: no closing tag, not even a TLS close_notify."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()  # linger 0: a reset, as from a dead network


@pytest.fixture
def raw(sm_server: ServerProcess) -> Iterator[Raw]:
    client = Raw.logged_in(sm_server, "raw", "r1")
    yield client
    client.close()


def test_enabled_answers_with_an_unguessable_id_and_capped_max(raw: Raw) -> None:
    enabled = raw.enable("resume='1' max='99999'")
    assert enabled.get("resume") == "true" and enabled.get("max") == "60"
    assert len(enabled.get("id", "")) >= 32


def test_r_before_enable_is_a_stream_error(raw: Raw) -> None:
    raw.send(f"<r xmlns='{SM}'/>")
    assert b"<unsupported-stanza-type" in raw.read_to_close()


def test_enable_twice_fails_and_the_stream_goes_on(raw: Raw) -> None:
    raw.enable()
    raw.send(f"<enable xmlns='{SM}' resume='true'/>")
    failed = raw.expect("failed")
    assert failed[0].tag == "{urn:ietf:params:xml:ns:xmpp-stanzas}unexpected-request"
    raw.send(
        f"<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq><r xmlns='{SM}'/>"
    )
    assert raw.expect("a").get("h") == "1"  # the ping was counted; the nonzas were not


def test_legacy_session_request_counts_both_ways(raw: Raw) -> None:
    raw.enable()
    raw.send(
        "<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"
        f"<r xmlns='{SM}'/>"
    )
    assert raw.expect("iq").get("id") == "s1"
    assert raw.expect("a").get("h") == "1"
    # The result was counted as sent: acknowledging it is no "h too high".
    raw.send(f"<a xmlns='{SM}' h='1'/>")
    raw.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert raw.expect("iq").get("id") == "p1"


def test_enable_before_bind_fails_then_binding_works(sm_server: ServerProcess) -> None:
    raw = Raw.authenticated(sm_server, "raw")
    raw.send(f"<enable xmlns='{SM}'/>")
    assert raw.expect("failed")[0].tag.endswith("unexpected-request")
    raw.bind("after-failed-enable")
    assert raw.enable("").get("id") is None  # no resumption asked, none offered
    raw.close()


def test_enable_pipelined_behind_bind_is_answered_after_the_bind_result(
    sm_server: ServerProcess,
) -> None:
    raw = Raw.authenticated(sm_server, "raw")
    raw.send(
        "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        f"<resource>pipelined</resource></bind></iq><enable xmlns='{SM}'/>"
    )
    data = raw.read_until("<enabled")
    # The bind result precedes <enabled/>: the client does not count it, nor does the server.
    assert b"<jid>" in data and data.index(b"<jid>") < data.index(b"<enabled")
    raw.expect("enabled")
    raw.send(
        f"<a xmlns='{SM}' h='0'/><iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    )
    assert raw.expect("iq").get("id") == "p1"
    raw.close()


@pytest.mark.parametrize(
    "h, condition",
    [("5", b"<undefined-condition"), ("many", b"<invalid-xml"), ("4294967296", b"<invalid-xml")],
)
def test_bad_h_is_a_stream_error(raw: Raw, h: str, condition: bytes) -> None:
    raw.enable()
    raw.send(
        f"<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq><a xmlns='{SM}' h='{h}'/>"
    )
    closing = raw.read_to_close()
    assert condition in closing
    if h == "5":  # one stanza (the ping's result) was sent, five acknowledged
        assert b'<handled-count-too-high xmlns="urn:xmpp:sm:3" h="5" send-count="1"/>' in closing


def test_resume_with_an_unknown_id_fails_and_binding_still_works(sm_server: ServerProcess) -> None:
    raw = Raw.authenticated(sm_server, "rawb")
    raw.send(f"<resume xmlns='{SM}' previd='no-such-session' h='0'/>")
    failed = raw.expect("failed")
    assert failed[0].tag.endswith("item-not-found") and failed.get("h") is None
    raw.bind("after-failed-resume")  # §5: the client may bind at this point
    raw.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert raw.expect("iq").get("type") == "result"
    raw.close()


def test_resume_after_bind_is_unexpected(raw: Raw) -> None:
    enabled = raw.enable()
    raw.send(f"<resume xmlns='{SM}' previd='{enabled.get('id')}' h='0'/>")
    assert raw.expect("failed")[0].tag.endswith("unexpected-request")


def test_resume_by_another_account_fails_and_the_session_waits_on(
    sm_server: ServerProcess,
) -> None:
    owner = Raw.logged_in(sm_server, "raw", "victim")
    previd = owner.enable("resume='true' max='30'").get("id")
    owner.drop()
    wait_for_log(sm_server, "raw@localhost/victim lost its connection")
    thief = Raw.authenticated(sm_server, "rawb")
    thief.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
    assert thief.expect("failed")[0].tag.endswith("item-not-found")
    thief.close()
    again = Raw.authenticated(sm_server, "raw")
    # Pipelined: the stanza right behind <resume/> belongs to the resumed session.
    again.send(
        f"<resume xmlns='{SM}' previd='{previd}' h='0'/>"
        "<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    )
    resumed = again.expect("resumed")
    assert resumed.get("previd") == previd and resumed.get("h") == "0"
    assert again.expect("iq").get("to") == "raw@localhost/victim"  # the same session
    again.send(f"<r xmlns='{SM}'/>")
    assert again.expect("a").get("h") == "1"  # counted on from the old stream's count
    again.close()


def test_resume_over_a_half_open_connection_closes_the_old_one(sm_server: ServerProcess) -> None:
    old = Raw.logged_in(sm_server, "half", "phone")
    previd = old.enable("resume='true' max='30'").get("id")
    old.send("<presence/>")
    old.expect("presence")  # the echo: the server sent one stanza
    # The old connection looks alive to the server; the client gave up on it.
    new = Raw.authenticated(sm_server, "half")
    new.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
    resumed = new.expect("resumed")
    assert resumed.get("h") == "1"  # the presence was handled
    assert new.expect("presence").get("from") == "half@localhost/phone"  # re-sent, unacked
    closing = old.read_to_close()
    assert b"<conflict" in closing and closing.endswith(b"</stream:stream>")
    new.send(
        f"<a xmlns='{SM}' h='1'/><iq type='get' id='p2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    )
    assert new.expect("iq").get("id") == "p2"
    new.close()
    old.close()


def test_binding_the_same_resource_replaces_a_hibernating_session(
    sm_server: ServerProcess,
) -> None:
    old = Raw.logged_in(sm_server, "repl", "phone")
    previd = old.enable("resume='true' max='30'").get("id")
    old.send("<presence/>")
    old.expect("presence")
    old.drop()
    wait_for_log(sm_server, "repl@localhost/phone lost its connection")

    async def send() -> None:
        bob = await plain(sm_server, "replb", "desk")
        bob.send_message(mto="repl@localhost/phone", mbody="queued", mtype="chat")
        await bob.plugin["xep_0199"].ping(jid="localhost", timeout=5)
        await bob.close()

    run(send())
    new = Raw.logged_in(sm_server, "repl", "phone")  # conflict: the newer session wins
    new.send("<presence/>")
    # What the hibernating session never delivered is routed again: to the same full JID,
    # now this session.
    message = new.expect("message")
    assert message.findtext("{jabber:client}body") == "queued"
    assert message.find(DELAY) is not None
    retry = Raw.authenticated(sm_server, "repl")
    retry.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
    assert retry.expect("failed")[0].tag.endswith("item-not-found")
    for client in (retry, new):
        client.close()


def test_hibernating_sessions_per_account_are_limited(sm_server: ServerProcess) -> None:
    previds = []
    for n in range(3):  # max_hibernating = 2: the third sends the oldest away
        client = Raw.logged_in(sm_server, "many", f"r{n}")
        previds.append(client.enable("resume='true' max='30'").get("id"))
        client.drop()
        wait_for_log(sm_server, f"many@localhost/r{n} lost its connection")
    probe = Raw.authenticated(sm_server, "many")
    probe.send(f"<resume xmlns='{SM}' previd='{previds[0]}' h='0'/>")
    failed = probe.expect("failed")
    assert failed[0].tag.endswith("item-not-found") and failed.get("h") == "0"
    probe.close()
    for previd in previds[1:]:
        client = Raw.authenticated(sm_server, "many")
        client.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
        assert client.expect("resumed").get("previd") == previd
        client.close()


def test_expired_id_fails_with_the_final_h(sm_server: ServerProcess) -> None:
    client = Raw.logged_in(sm_server, "gone", "phone")
    previd = client.enable("resume='true' max='1'").get("id")
    client.send(
        "<presence/><iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    )
    client.expect("iq")
    client.drop()
    wait_for_log(sm_server, "gone@localhost/phone was not resumed in 1s")
    late = Raw.authenticated(sm_server, "gone")
    late.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
    failed = late.expect("failed")
    assert failed[0].tag.endswith("item-not-found")
    assert failed.get("h") == "2"  # §5: the presence and the ping were handled
    late.close()


def test_expired_unacked_messages_another_resource_got_are_not_routed_to_it_again(
    sm_server: ServerProcess,
) -> None:
    phone = Raw.logged_in(sm_server, "dupa", "phone")
    phone.enable("resume='true' max='1'")
    phone.send("<presence/>")
    phone.expect("presence")

    async def scenario() -> None:
        desk = await plain(sm_server, "dupa", "desk")
        desk.register_plugin("xep_0280")
        await desk.plugin["xep_0280"].enable()
        bob = await plain(sm_server, "dupb", "x")
        # To the bare JID both resources (priority 0) get it; to the phone the desk gets a
        # carbon; a private one to the phone the desk never sees.
        bob.send_message(mto="dupa@localhost", mbody="to both", mtype="chat")
        assert (await desk.next_message())["body"] == "to both"
        bob.send_message(mto="dupa@localhost/phone", mbody="to phone", mtype="chat")
        private = bob.make_message(mto="dupa@localhost/phone", mbody="private", mtype="chat")
        private.xml.append(ET.Element("{urn:xmpp:carbons:2}private"))
        private.send()
        bodies = [
            m.findtext("{jabber:client}body") for m in await asyncio.to_thread(phone.messages, 3)
        ]
        assert bodies == ["to both", "to phone", "private"]
        phone.drop()  # none acknowledged; the window (1 s) ends
        await asyncio.to_thread(wait_for_log, sm_server, "disconnected dupa@localhost/phone")
        # Routed again: only what the desk had not seen in any form (RFC 6121 §8.5.3.2.1).
        bob.send_message(mto="dupa@localhost/desk", mbody="marker", mtype="chat")
        assert [(await desk.next_message())["body"] for _ in range(2)] == ["private", "marker"]
        await desk.close()
        await bob.close()

    run(scenario())


def test_inactive_right_behind_resume_is_not_undone_by_the_resumption(
    sm_server: ServerProcess,
) -> None:
    old = Raw.logged_in(sm_server, "csir", "phone")
    previd = old.enable("resume='true' max='30'").get("id")
    old.send("<presence/>")
    old.expect("presence")
    old.drop()
    wait_for_log(sm_server, "csir@localhost/phone lost its connection")
    new = Raw.authenticated(sm_server, "csir")
    # XEP-0352 §5.2: resumed streams start active; a client going inactive at once says so
    # right behind <resume/>, and that must hold (in-order processing, §5.1).
    new.send(f"<resume xmlns='{SM}' previd='{previd}' h='1'/><inactive xmlns='urn:xmpp:csi:0'/>")
    new.expect("resumed")

    async def send() -> None:
        bob = await plain(sm_server, "csib", "x")
        typing = bob.make_message(mto="csir@localhost/phone", mtype="chat")
        typing.xml.append(ET.Element("{http://jabber.org/protocol/chatstates}composing"))
        typing.send()
        bob.send_message(mto="csir@localhost/phone", mbody="wake", mtype="chat")
        await bob.plugin["xep_0199"].ping(jid="localhost", timeout=5)
        await bob.close()

    run(send())
    typing, wake = new.messages(2)
    assert typing.find(DELAY) is not None  # held while inactive, flushed by the body
    assert wake.findtext("{jabber:client}body") == "wake"
    new.close()


def test_shutdown_puts_hibernating_sessions_unacked_messages_in_offline_storage(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path)
    try:

        async def before() -> None:
            alice = await sm_client(server, "downa", "phone", max_seconds=60)
            await settle_acks(alice)
            alice.transport.abort()
            await asyncio.to_thread(wait_for_log, server, "downa@localhost/phone lost its")
            bob = await plain(server, "downb", "desk")
            for n in range(2):
                bob.send_message(mto="downa@localhost/phone", mbody=f"kept {n}", mtype="chat")
            await bob.plugin["xep_0199"].ping(jid="localhost", timeout=5)
            await bob.close()

        run(before())
        server.stop()  # SIGTERM while the session hibernates
        server.start()

        async def after() -> None:
            alice = await plain(server, "downa", "laptop")
            got = [await alice.next_message() for _ in range(2)]
            assert [m["body"] for m in got] == ["kept 0", "kept 1"]
            assert all(m.xml.find(DELAY) is not None for m in got)
            await alice.close()

        run(after())
    finally:
        server.stop()


def test_silent_client_gets_r_then_its_session_hibernates(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, "[limits]\nidle_timeout = 3.0\nkeepalive_interval = 1.0\n")
    server.add_user("quiet", PASSWORD)
    server.start()
    try:
        client = Raw.logged_in(server, "quiet", "phone")
        previd = client.enable("resume='true' max='30'").get("id")
        client.expect("r", timeout=5)  # idle: an ack request instead of a whitespace keepalive
        # It never answers: the connection is dropped without a stream error, so the stream
        # stays unfinished and the session waits to be resumed.
        rest = client.read_to_close(timeout=10)
        assert b"<stream:error" not in rest and b"</stream:stream>" not in rest
        wait_for_log(server, "quiet@localhost/phone lost its connection")
        again = Raw.authenticated(server, "quiet")
        again.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
        assert again.expect("resumed").get("previd") == previd
        again.close()
    finally:
        server.stop()


def test_an_acknowledged_message_survives_a_crash(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        sender = Raw.logged_in(server, "downb", "desk")
        sender.enable("")
        sender.send(
            "<message to='downa@localhost' type='chat'><body>durable</body></message>"
            f"<r xmlns='{SM}'/>"
        )
        assert sender.expect("a").get("h") == "1"  # handled: stored for the offline account
        server.proc.kill()  # SIGKILL right after the acknowledgement: no clean shutdown
        server.proc.wait()
        sender.close()
        server.start()

        async def receive() -> None:
            alice = await plain(server, "downa", "laptop")
            assert (await alice.next_message())["body"] == "durable"
            await alice.close()

        run(receive())
    finally:
        server.stop()
