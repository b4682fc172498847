"""1:1 calls over the JSON channels (docs/channels.md "Calls"): two stock `phoenix` clients and
slixmpp clients of the same accounts, over real sockets. A web call rings the callee's XMPP
client too (XEP-0353), stops ringing there when answered in another tab or retracted, relays
SDP and ICE between the two web sessions only, and the ICE servers handed out open a TURN
allocation on a real coturn."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
from coturn import allocate, coturn
from joserfc import jws
from joserfc.jwk import OctKey
from phx import HERE, Phx, login
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from support import ServerProcess, connect, run

from xmppd.config import DEFAULT_MODULES

USERS = {u: f"{u}-secret" for u in ("alice", "bob", "carol", "dave", "erin")}
SECRET = "turn-" + secrets.token_hex(8)
APP_KEY = "a-webmail-secret-of-at-least-32-bytes!"
JMI = "urn:xmpp:jingle-message:0"
RTP = "urn:xmpp:jingle:apps:rtp:1"
CARBONS = "urn:xmpp:carbons:2"
MESSAGE = "{jabber:client}message"
FORWARDED = "{urn:xmpp:forward:0}forwarded"
# An SDP has CRLF line ends and must arrive byte for byte.
OFFER = (
    "v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    + ("a=x-filler:" + "y" * 70 + "\r\n") * 60
)
pytestmark = pytest.mark.skipif(not shutil.which("turnserver"), reason="coturn not installed")


@pytest.fixture(scope="module")
def turn_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with coturn(tmp_path_factory.mktemp("coturn"), SECRET) as port:
        yield port


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, turn_port: int) -> Iterator[ServerProcess]:
    assert (HERE / "node_modules" / "phoenix").is_dir(), "run `npm ci` in tests/web"
    enabled = ", ".join(f'"{m}"' for m in [*DEFAULT_MODULES, "turn"])
    extra = (
        f'[modules]\nenabled = [{enabled}]\n[modules.turn]\nhost = "127.0.0.1"\n'
        f'port = {turn_port}\nsecret = "{SECRET}"\nttl = 600\nrelay_only = true\n'
        f'[auth.tokens.apps.webmail]\nalgorithm = "HS256"\nkey = "{APP_KEY}"\n'
    )
    server = ServerProcess(tmp_path_factory.mktemp("calls"), extra_config=extra)
    for user, password in USERS.items():
        server.add_user(user, password)
    server.start()
    yield server
    server.stop()


async def web_user(web: ServerProcess, user: str) -> tuple[Phx, str, str]:
    """A joined user topic: (client, topic, the session's full JID)."""
    phx = await Phx.open(web, login(web, user, USERS[user]))
    topic = f"user:{user}@localhost"
    reply = await phx.join(topic)
    return phx, topic, reply["jid"]


async def xmpp(web: ServerProcess, user: str, resource: str = "phone") -> object:
    """A slixmpp client with carbons whose `stanzas` queue gets every message."""
    client = await connect(web, user, resource, password=USERS[user])
    client.register_plugin("xep_0280")
    client.register_plugin("xep_0191")
    await client.plugin["xep_0280"].enable()
    client.stanzas = asyncio.Queue()
    match = MatchXPath(MESSAGE)
    client.register_handler(Callback("messages", match, lambda m: client.stanzas.put_nowait(m.xml)))
    await client.plugin["xep_0199"].ping(jid="localhost", timeout=5)
    return client


async def jmi_in(
    client: object, action: str, call_id: str, carbon: str | None = None
) -> ET.Element:
    """The next JMI message for this call (skipping others): its signal element."""

    async def find() -> ET.Element:
        while True:
            msg = await client.stanzas.get()
            inner = msg
            if carbon is not None:
                inner = msg.find(f"{{{CARBONS}}}{carbon}/{FORWARDED}/{MESSAGE}")
                if inner is None:
                    continue
            el = inner.find(f"{{{JMI}}}{action}")
            if el is not None and el.get("id") == call_id:
                return el

    return await asyncio.wait_for(find(), 10)


def send_jmi(client: object, to: str, action: str, call_id: str, reason: str = "") -> None:
    msg = client.make_message(mto=to, mtype="chat")
    el = ET.SubElement(msg.xml, f"{{{JMI}}}{action}", id=call_id)
    if action == "propose":
        ET.SubElement(el, f"{{{RTP}}}description", media="audio")
    if reason:
        ET.SubElement(
            ET.SubElement(el, "{urn:xmpp:jingle:1}reason"), f"{{urn:xmpp:jingle:1}}{reason}"
        )
    ET.SubElement(msg.xml, "{urn:xmpp:hints}store")
    msg.send()


def test_a_web_call_rings_everywhere_relays_between_web_sessions_and_ends(
    web: ServerProcess, turn_port: int
) -> None:
    async def scenario() -> None:
        alice, a_topic, a_full = await web_user(web, "alice")
        bob1, b_topic, b1_full = await web_user(web, "bob")
        bob2, _, _ = await web_user(web, "bob")
        phone = await xmpp(web, "bob")
        # The ICE servers: STUN and TURN on coturn, credentials it accepts, relay only.
        ice = await alice.push(a_topic, "ice_servers")
        assert ice["relay_only"] is True
        stun, turn = ice["ice_servers"]
        assert stun == {"urls": [f"stun:127.0.0.1:{turn_port}"]}
        assert turn["urls"] == [
            f"turn:127.0.0.1:{turn_port}?transport=udp",
            f"turn:127.0.0.1:{turn_port}?transport=tcp",
        ]
        assert turn["username"].endswith(":alice@localhost")
        assert allocate(turn_port, turn["username"], turn["credential"]) == ("ok", 0)

        call = await alice.push(a_topic, "call_propose", {"to": "bob@localhost", "media": "video"})
        call_id = call["call_id"]
        for tab in (bob1, bob2):  # both web tabs ring ...
            ring = await tab.event(b_topic, "call_propose")
            assert ring["call_id"] == call_id and ring["media"] == "video" and ring["webrtc"]
            assert f"{ring['from']}/{ring['resource']}" == a_full
        proposed = await jmi_in(phone, "propose", call_id)  # ... and so does the XMPP client
        media = {d.get("media") for d in proposed.iter(f"{{{RTP}}}description")}
        assert media == {"audio", "video"}

        await bob1.push(b_topic, "call_ring", {"to": a_full, "call_id": call_id})
        ringing = await alice.event(a_topic, "call_ring")
        assert f"{ringing['from']}/{ringing['resource']}" == b1_full
        await bob1.push(b_topic, "call_accept", {"to": a_full, "call_id": call_id})
        accepted = await alice.event(a_topic, "call_accept")
        assert accepted["webrtc"] and f"{accepted['from']}/{accepted['resource']}" == b1_full
        # taken in tab 1: tab 2 and the phone learn it and stop ringing
        elsewhere = await bob2.event(b_topic, "call_accept")
        assert elsewhere["carbon"] and elsewhere["from"] == "bob@localhost"
        assert elsewhere["with"] == "alice@localhost" and elsewhere["call_id"] == call_id
        await jmi_in(phone, "proceed", call_id, carbon="sent")

        # SDP and ICE go to the one session in the call, exactly as sent
        offer = {"type": "offer", "sdp": OFFER}
        await alice.push(a_topic, "call_signal", {"to": b1_full, "call_id": call_id, "sdp": offer})
        got = await bob1.event(b_topic, "call_signal")
        assert got["sdp"] == offer and got["call_id"] == call_id
        candidate = {
            "candidate": "candidate:1 1 udp 41885439 127.0.0.1 50000 typ relay raddr 0.0.0.0 rport 0",
            "sdpMid": "0",
            "sdpMLineIndex": 0,
            "usernameFragment": "abcd",
        }
        signal = {"to": a_full, "call_id": call_id, "candidate": candidate}
        await bob1.push(b_topic, "call_signal", signal)
        assert (await alice.event(a_topic, "call_signal"))["candidate"] == candidate
        await bob1.push(b_topic, "call_signal", {**signal, "candidate": None})
        assert await alice.event(a_topic, "call_signal", lambda p: p["candidate"] is None)

        await alice.push(a_topic, "call_finish", {"to": b1_full, "call_id": call_id})
        finished = await bob1.event(b_topic, "call_finish")
        assert finished["reason"] == "success"
        await asyncio.sleep(0.3)
        assert bob2.events(b_topic, "call_signal") == []  # never relayed to the other tab

        # A call retracted before it is answered stops ringing everywhere.
        call_id = (
            await alice.push(a_topic, "call_propose", {"to": "bob@localhost", "media": "audio"})
        )["call_id"]
        await jmi_in(phone, "propose", call_id)
        ring = await bob1.event(b_topic, "call_propose", lambda p: p["call_id"] == call_id)
        assert ring["media"] == "audio"
        await alice.push(a_topic, "call_retract", {"to": "bob@localhost", "call_id": call_id})
        await jmi_in(phone, "retract", call_id)
        for tab in (bob1, bob2):
            gone = await tab.event(b_topic, "call_retract", lambda p: p["call_id"] == call_id)
            assert gone["reason"] == "cancel"
        for client in (alice, bob1, bob2):
            await client.close()
        await phone.close()

    run(scenario())


def test_an_xmpp_call_rings_in_the_browser_which_can_only_decline(web: ServerProcess) -> None:
    """Conversations/Gajim negotiate media with Jingle, which the web client does not speak:
    the web tab rings (webrtc false) and answers busy or declines."""

    async def scenario() -> None:
        carol, topic, _ = await web_user(web, "carol")
        phone = await xmpp(web, "dave")
        call_id = secrets.token_hex(6)
        send_jmi(phone, "carol@localhost", "propose", call_id)
        ring = await carol.event(topic, "call_propose")
        assert ring == {
            "call_id": call_id, "from": "dave@localhost", "resource": "phone",
            "with": "dave@localhost", "media": "audio", "webrtc": False,
        }  # fmt: skip
        to = "dave@localhost/phone"
        await carol.push(topic, "call_reject", {"to": to, "call_id": call_id, "reason": "busy"})
        rejected = await jmi_in(phone, "reject", call_id)
        assert rejected.find("{urn:xmpp:jingle:1}reason/{urn:xmpp:jingle:1}busy") is not None
        # the phone hangs up a call the web user had accepted
        call_id = secrets.token_hex(6)
        send_jmi(phone, "carol@localhost", "propose", call_id)
        await carol.event(topic, "call_propose", lambda p: p["call_id"] == call_id)
        await carol.push(topic, "call_accept", {"to": to, "call_id": call_id})
        await jmi_in(phone, "proceed", call_id)
        send_jmi(phone, "carol@localhost", "finish", call_id, reason="success")
        finished = await carol.event(topic, "call_finish", lambda p: p["call_id"] == call_id)
        assert finished["reason"] == "success" and finished["from"] == "dave@localhost"
        await carol.close()
        await phone.close()

    run(scenario())


def test_calls_follow_blocking_and_bad_or_too_many_requests_are_refused(
    web: ServerProcess,
) -> None:
    async def scenario() -> None:
        erin, topic, _ = await web_user(web, "erin")
        bob = await xmpp(web, "bob", "blocker")
        dave = await xmpp(web, "dave", "blocked")
        await bob.plugin["xep_0191"].block("erin@localhost", timeout=5)
        # the callee blocked the caller: the call bounces, said as call_error
        call_id = (
            await erin.push(topic, "call_propose", {"to": "bob@localhost", "media": "audio"})
        )["call_id"]
        error = await erin.event(topic, "call_error")
        assert error == {
            "call_id": call_id, "from": "bob@localhost", "resource": "", "with": "bob@localhost",
            "reason": "service-unavailable",
        }  # fmt: skip
        await asyncio.sleep(0.3)
        assert bob.stanzas.empty()
        # the caller blocked the callee: refused at once
        erin_xmpp = await xmpp(web, "erin", "desk")
        await erin_xmpp.plugin["xep_0191"].block("dave@localhost", timeout=5)
        refused = await erin.request(
            topic, "call_propose", {"to": "dave@localhost", "media": "audio"}
        )
        assert refused["error"]["reason"] == "not-acceptable", refused
        await erin_xmpp.plugin["xep_0191"].unblock("dave@localhost", timeout=5)

        bad = [
            ("call_propose", {"to": "carol@localhost", "media": "screen"}, "bad-request"),
            ("call_propose", {"to": "erin@localhost", "media": "audio"}, "bad-request"),
            ("call_propose", {"to": "not a jid@@", "media": "audio"}, "jid-malformed"),
            ("call_propose", {"to": "localhost", "media": "audio"}, "bad-request"),
            ("call_accept", {"to": "carol@localhost/x"}, "bad-request"),
            ("call_reject", {"to": "carol@localhost/x", "call_id": "c", "reason": "bored"}, "bad-request"),
            ("call_ring", {"to": "carol@localhost/x", "call_id": "c", "reason": "busy"}, "bad-request"),
            ("call_signal", {"to": "carol@localhost", "call_id": "c", "candidate": None}, "bad-request"),
            ("call_signal", {"to": "carol@localhost/x", "call_id": "c"}, "bad-request"),
            ("call_signal", {"to": "carol@localhost/x", "call_id": "c", "sdp": {"type": "pranswer", "sdp": "v=0"}}, "bad-request"),
            ("call_signal", {"to": "carol@localhost/x", "call_id": "c", "sdp": {"type": "offer", "sdp": "v" * 70000}}, "bad-request"),
            ("call_signal", {"to": "carol@localhost/x", "call_id": "c", "candidate": {"candidate": "x", "sdpMLineIndex": -1}}, "bad-request"),
            ("call_hold", {"to": "carol@localhost/x", "call_id": "c"}, "bad-request"),
        ]  # fmt: skip
        for event, payload, reason in bad:
            answer = await erin.request(topic, event, payload)
            assert answer.get("error", {}).get("reason") == reason, (event, payload, answer)
        # Ringing someone is rate limited: a burst of 5, then one every 5 s (one was spent on
        # bob above, and a few seconds may have given one back).
        sent = 0
        for sent in range(10):  # noqa: B007 (read after the loop)
            answer = await erin.request(
                topic, "call_propose", {"to": "carol@localhost", "media": "audio"}
            )
            if "error" in answer:
                break
        assert answer["error"]["reason"] == "resource-constraint", answer
        assert 4 <= sent <= 6, sent  # a slow machine may have earned one or two back
        for client in (bob, dave, erin_xmpp):
            await client.close()
        await erin.close()

    run(scenario())


def test_guests_get_no_turn_credentials(web: ServerProcess) -> None:
    """A host app's guest (role `guest`) may chat but gets no relay access, as XEP-0215 gives
    none to anyone but accounts."""

    def token(sub: str, role: str) -> str:
        claims = {"sub": sub, "aud": "localhost", "exp": int(time.time()) + 600, "role": role}
        key = OctKey.import_key(APP_KEY)
        return jws.serialize_compact({"alg": "HS256", "kid": "webmail"}, json.dumps(claims), key)

    async def scenario() -> None:
        for sub, role, expected in (("visitor", "guest", "forbidden"), ("member", "user", None)):
            phx = await Phx.open(web, token(sub, role))
            topic = f"user:{sub}@localhost"
            await phx.join(topic)
            answer = await phx.request(topic, "ice_servers")
            if expected is None:
                assert answer["ok"]["ice_servers"][1]["username"].endswith(f":{sub}@localhost")
            else:
                assert answer["error"]["reason"] == expected, answer
            await phx.close()

    run(scenario())
