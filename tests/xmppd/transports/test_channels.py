"""JSON channels over a real server: WebSocket frames with the `websockets` library, long-poll
with plain HTTP, and slixmpp users on the XMPP side."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import websockets
from joserfc import jws
from joserfc.jwk import OctKey
from support import NO_ACCOUNT_RATE, ServerProcess, connect, run
from websockets.exceptions import ConnectionClosed, InvalidStatus
from wsflood import connect_slow_reader, flood_then_ping

SECRET = "channels-test-secret-of-32-bytes-or-more"
MUC = "http://jabber.org/protocol/muc"
CONFIG = f"""
[auth.tokens.apps.app]
algorithm = "HS256"
key = "{SECRET}"
[modules.muc]
lock_new_rooms = false
{NO_ACCOUNT_RATE}"""


def token(sub: str, **extra: object) -> str:
    claims = {"sub": sub, "aud": "localhost", "exp": int(time.time()) + 300, **extra}
    key = OctKey.import_key(SECRET)
    return jws.serialize_compact({"alg": "HS256", "kid": "app"}, json.dumps(claims), key)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("channels"), extra_config=CONFIG)
    server.add_user("xmppuser", "xmpp-secret")
    server.start()
    yield server
    server.stop()


class Channel:
    """A hand-driven V2 client over one WebSocket."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.ref = 0

    async def send(self, join_ref: str | None, topic: str, event: str, payload: dict) -> str:
        self.ref += 1
        await self.ws.send(json.dumps([join_ref, str(self.ref), topic, event, payload]))
        return str(self.ref)

    async def expect(self, topic: str, event: str, timeout: float = 5) -> list:
        async def look() -> list:
            while True:
                frame = json.loads(await self.ws.recv())
                if frame[2] == topic and frame[3] == event:
                    return frame

        return await asyncio.wait_for(look(), timeout)

    async def join(self, topic: str, payload: dict | None = None) -> tuple[str, dict]:
        ref = await self.send(None, topic, "phx_join", payload or {})
        frame = await self.expect(topic, "phx_reply")
        assert frame[0] == ref and frame[1] == ref
        return ref, frame[4]


async def open_channel(web: ServerProcess, tok: str, **kwargs: object) -> Channel:
    url = f"ws://127.0.0.1:{web.http_port}/socket/websocket?vsn=2.0.0&token={tok}"
    return Channel(await websockets.connect(url, **kwargs))


def test_heartbeat_bad_frames_and_refused_tokens(web: ServerProcess) -> None:
    async def scenario() -> None:
        chan = await open_channel(web, token("beat"))
        ref = await chan.send(None, "phoenix", "heartbeat", {})
        assert await chan.expect("phoenix", "phx_reply") == [
            None,
            ref,
            "phoenix",
            "phx_reply",
            {"status": "ok", "response": {}},
        ]
        await chan.ws.send('["1","1","room:x@conference.localhost","phx_join"]')
        with pytest.raises(ConnectionClosed) as closed:
            await chan.ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
        chan = await open_channel(web, token("binary"))
        await chan.ws.send(b"\x00\x01")
        with pytest.raises(ConnectionClosed) as closed:
            await chan.ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
        for bad in (token("late", exp=int(time.time()) - 1), "nonsense"):
            with pytest.raises(InvalidStatus) as refused:
                await open_channel(web, bad)
            assert refused.value.response.status_code == 403
        # phoenix.js `authToken`: the token in a WebSocket subprotocol, no query parameter.
        encoded = base64.urlsafe_b64encode(token("sub").encode()).decode().rstrip("=")
        url = f"ws://127.0.0.1:{web.http_port}/socket/websocket?vsn=2.0.0"
        ws = await websockets.connect(
            url, subprotocols=["phoenix", f"base64url.bearer.phx.{encoded}"]
        )
        assert ws.subprotocol == "phoenix"
        await Channel(ws).join("user:sub@localhost")
        await ws.close()

    run(scenario())


def test_topics_the_token_does_not_open_are_refused(web: ServerProcess) -> None:
    async def scenario() -> None:
        chan = await open_channel(web, token("limited", rooms=["open@conference.localhost"]))
        _ref, reply = await chan.join("room:closed@conference.localhost")
        assert reply == {
            "status": "error",
            "response": {"reason": "this token does not open that topic"},
        }
        _ref, reply = await chan.join("user:someoneelse@localhost")
        assert reply["status"] == "error"
        ref = await chan.send("9", "room:open@conference.localhost", "new_msg", {"body": "x"})
        frame = await chan.expect("room:open@conference.localhost", "phx_reply")
        assert frame[1] == ref and frame[4]["response"] == {"reason": "unmatched topic"}
        await chan.ws.close()

    run(scenario())


def test_room_presence_diffs_and_messages_with_an_xmpp_occupant(web: ServerProcess) -> None:
    room = "diffs@conference.localhost"
    topic = f"room:{room}"

    async def scenario() -> None:
        xmpp = await connect(web, "xmppuser", "laptop", password="xmpp-secret")
        seen: dict[str, asyncio.Future] = {
            nick: asyncio.get_running_loop().create_future() for nick in ("Xmpp", "Webby")
        }

        def on_presence(presence: object) -> None:
            nick = str(presence["from"]).partition("/")[2]
            if nick in seen and not seen[nick].done():
                seen[nick].set_result(presence)

        xmpp.add_event_handler("presence", on_presence)
        xmpp.send_raw(f"<presence to='{room}/Xmpp'><x xmlns='{MUC}'/></presence>")
        await asyncio.wait_for(seen["Xmpp"], 5)  # the XMPP user created the room
        chan = await open_channel(web, token("webby", name="Webby", rooms=[room]))
        join_ref, reply = await chan.join(topic)
        assert reply["status"] == "ok"
        assert (reply["response"]["nick"], reply["response"]["role"]) == ("Webby", "participant")
        state = await chan.expect(topic, "presence_state")
        assert state[0] == join_ref and sorted(state[4]) == ["Webby", "Xmpp"]
        meta = state[4]["Xmpp"]["metas"][0]
        assert meta["role"] == "moderator" and "jid" not in meta  # semi-anonymous room
        await asyncio.wait_for(seen["Webby"], 5)  # the XMPP user sees the JSON occupant
        xmpp.send_message(mto=room, mbody="from xmpp", mtype="groupchat")
        msg = await chan.expect(topic, "new_msg")
        assert msg[4]["from"] == "Xmpp" and msg[4]["body"] == "from xmpp" and msg[4]["id"]
        late = await open_channel(web, token("late", rooms=[room]))
        await late.send(None, topic, "phx_join", {})
        order = [json.loads(await asyncio.wait_for(late.ws.recv(), 5)) for _ in range(3)]
        assert [f[3] for f in order] == ["phx_reply", "presence_state", "new_msg"]
        assert order[2][4]["body"] == "from xmpp" and order[2][4]["stamp"]  # history
        await late.ws.close()
        came = await chan.expect(topic, "presence_diff")
        went = await chan.expect(topic, "presence_diff")
        assert list(came[4]["joins"]) == ["late"] and list(went[4]["leaves"]) == ["late"]
        ref = await chan.send(join_ref, topic, "new_msg", {"body": ""})
        frame = await chan.expect(topic, "phx_reply")
        assert frame[1] == ref and frame[4]["status"] == "error"
        xmpp.send_raw(f"<presence to='{room}/Xmpp' type='unavailable'/>")
        diff = await chan.expect(topic, "presence_diff")
        assert list(diff[4]["leaves"]) == ["Xmpp"] and diff[4]["joins"] == {}
        xmpp.send_raw(f"<presence to='{room}/Xmpp'><x xmlns='{MUC}'/></presence>")
        diff = await chan.expect(topic, "presence_diff")
        assert list(diff[4]["joins"]) == ["Xmpp"] and diff[4]["leaves"] == {}
        await xmpp.close()
        ref = await chan.send(join_ref, topic, "phx_leave", {})
        assert (await chan.expect(topic, "phx_reply"))[1] == ref
        assert (await chan.expect(topic, "phx_close"))[0] == join_ref
        await chan.ws.close()

    run(scenario())


def test_one_to_one_chat_on_the_user_topic(web: ServerProcess) -> None:
    async def scenario() -> None:
        chan = await open_channel(web, token("chatter"))
        join_ref, reply = await chan.join("user:chatter@localhost")
        full = reply["response"]["jid"]
        assert full.startswith("chatter@localhost/web-")
        xmpp = await connect(web, "xmppuser", "phone", password="xmpp-secret")
        xmpp.send_message(mto="chatter@localhost", mbody="to the bare JID", mtype="chat")
        msg = await chan.expect("user:chatter@localhost", "new_msg")
        assert {k: msg[4][k] for k in ("from", "with", "resource", "body", "type")} == {
            "from": "xmppuser@localhost",
            "with": "xmppuser@localhost",
            "resource": "phone",
            "body": "to the bare JID",
            "type": "chat",
        }
        assert msg[4]["id"] and msg[4]["msg_id"]  # the archive id and the message's own
        await chan.send("x", "user:chatter@localhost", "new_msg", {})  # stale join_ref
        payload = {"to": "xmppuser@localhost/phone", "body": "answer"}
        await chan.send(join_ref, "user:chatter@localhost", "new_msg", payload)
        got = await xmpp.next_message(timeout=5)
        assert got["body"] == "answer" and str(got["from"]) == full
        await xmpp.close()
        await chan.ws.close()

    run(scenario())


def test_ping_while_the_writer_is_busy_keeps_the_session(web: ServerProcess) -> None:
    """Issue 18.1 on the channel socket: 90 pushes of 15 KB (bodies are limited to 16 KB) to
    our own JID, unread, then a WebSocket ping: the pong comes between whole frames, early,
    and the socket keeps working."""

    async def scenario() -> None:
        url = f"ws://127.0.0.1:{web.http_port}/socket/websocket?vsn=2.0.0&token={token('busy')}"
        chan = Channel(await connect_slow_reader(url, web.http_port))
        topic = "user:busy@localhost"
        join_ref, reply = await chan.join(topic)
        me = reply["response"]["jid"]
        flood = [
            json.dumps(
                [join_ref, None, topic, "new_msg", {"to": me, "body": f"{i:04d}" + "x" * 15_000}]
            )
            for i in range(90)
        ]
        echoes, before_pong = await flood_then_ping(chan.ws, flood, lambda f: '"new_msg"' in f)
        assert before_pong < len(flood)  # the pong jumped the queued frames
        bodies = [json.loads(e)[4]["body"] for e in echoes]  # every frame parses
        assert [b[:4] for b in bodies] == [f"{i:04d}" for i in range(90)]
        ref = await chan.send(None, "phoenix", "heartbeat", {})
        assert (await chan.expect("phoenix", "phx_reply"))[1] == ref  # the session survived
        await chan.ws.close()

    run(scenario())
    assert "Traceback" not in web.log_text()


DEEP = '[null,"1","phoenix","heartbeat",{"x":' + "[" * 100_000 + "]" * 100_000 + "}]"
NAN = '[null,"1","phoenix","heartbeat",{"x":NaN}]'
CONTROL = '[null,"1","user:x@localhost","new_msg",{"body":"\\u0001"}]'  # lxml refused it


@pytest.mark.parametrize(
    "frame, reason",
    [
        (DEEP, "nested|arrays and objects"),
        (NAN, "NaN"),
        (CONTROL, "XML cannot carry"),
        (b'["\xff"]', ""),
    ],
    ids=["deep", "nan", "control", "not-utf8"],
)
def test_a_bad_frame_closes_the_socket_with_1007(
    web: ServerProcess, frame: str | bytes, reason: str
) -> None:
    """Issue 18.3: deep JSON used to close with 1000 after a traceback, NaN was accepted,
    and a text message that is not UTF-8 closed with 1000."""

    async def scenario() -> None:
        chan = await open_channel(web, token("hostile"), max_size=None)
        await chan.ws.send(frame, text=True)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(chan.ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
        assert re.search(reason, closed.value.rcvd.reason)

    run(scenario())
    assert "Traceback" not in web.log_text()


def post(web: ServerProcess, query: str, body: str) -> dict:
    status, answer = post_status(web, query, body)
    assert status == 200
    return answer


def post_status(web: ServerProcess, query: str, body: str | bytes) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{web.http_port}/socket/longpoll?{query}"
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, method="POST")
    request.add_header("Content-Type", "application/x-ndjson")
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def get(web: ServerProcess, query: str) -> dict:
    url = f"http://127.0.0.1:{web.http_port}/socket/longpoll?{query}"
    with urllib.request.urlopen(url, timeout=15) as answer:
        return json.loads(answer.read())


def test_longpoll_session_lifecycle(web: ServerProcess) -> None:
    opened = get(web, f"token={token('poller')}&vsn=2.0.0&token=null")
    assert opened["status"] == 410 and opened["token"].startswith("lp.")
    session = f"token={token('poller')}&vsn=2.0.0&token={opened['token']}"
    frames = [
        '["1","1","user:poller@localhost","phx_join",{}]',
        '[null,"2","phoenix","heartbeat",{}]',
    ]
    assert post(web, session, "\n".join(frames)) == {"status": 200, "token": opened["token"]}
    answer = get(web, session)
    assert answer["status"] == 200
    replies = [json.loads(m) for m in answer["messages"]]
    assert [r[1] for r in replies if r[1] is not None] == ["1", "2"]
    assert post(web, "token=lp.unknown&vsn=2.0.0", frames[1]) == {"status": 410}


@pytest.mark.parametrize(
    "body, reason",
    [
        ("[not json", "not JSON"),
        (DEEP, "nested|arrays and objects"),
        (NAN, "NaN"),
        (CONTROL, "XML cannot carry"),
        (b"\xff\xfe", "UTF-8"),
        ('[null,"5","phoenix","heartbeat",{}]\n' + NAN, "line 2"),
    ],
    ids=["not-json", "deep", "nan", "control", "not-utf8", "second-line"],
)
def test_a_bad_longpoll_frame_is_that_requests_400(
    web: ServerProcess, body: str | bytes, reason: str
) -> None:
    """Issue 18.3: deep JSON used to drop the TCP connection with no answer. A bad frame is an
    HTTP 400 with the reason; the frames before it count and the session lives on."""
    opened = get(web, f"token={token('lpbad')}&vsn=2.0.0")
    session = f"token={token('lpbad')}&vsn=2.0.0&token={opened['token']}"
    status, answer = post_status(web, session, body)
    assert status == 400 and answer["status"] == 400 and re.search(reason, answer["reason"])
    assert post(web, session, '[null,"9","phoenix","heartbeat",{}]')["status"] == 200
    replies = [json.loads(m)[1] for m in get(web, session)["messages"]]
    assert replies == (["5", "9"] if "line 2" in reason else ["9"])
    assert "Traceback" not in web.log_text()
