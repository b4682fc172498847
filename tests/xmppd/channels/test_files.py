"""Files on the JSON channels (xmppd/channels/files.py, docs/channels.md "Files"): upload slots
with the XEP-0363 rules, and file messages mapped both ways to XEP-0066 out-of-band data, 1:1
and in rooms, live and from the archives. The stock `phoenix` npm client on one side, slixmpp
on the other, the bytes over real HTTPS."""

from __future__ import annotations

import asyncio
import http.client
import shutil
import socket
import ssl
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from phx import HERE, Phx, login
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from support import ServerProcess, connect, run

USERS = {u: f"{u}-secret" for u in ("alice", "bob", "carol", "dave")}
CONFIG = """
[modules.upload]
max_file_size = 200000
quota = 250000
daily_quota = 400000
[modules.muc]
lock_new_rooms = false
"""
OOB = "jabber:x:oob"
MUC = "http://jabber.org/protocol/muc"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    assert shutil.which("node"), "node is needed for the phoenix client"
    assert (HERE / "node_modules" / "phoenix").is_dir(), "run `npm ci` in tests/web"
    server = ServerProcess(
        tmp_path_factory.mktemp("files"),
        extra_config=CONFIG,
        http_config='cors_origins = ["https://webmail.example"]',
    )
    for user, password in USERS.items():
        server.add_user(user, password)
    server.start()
    yield server
    server.stop()


def https(
    server: ServerProcess, method: str, url: str, body: bytes | None = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    assert parts.scheme == "https" and parts.port == server.https_port, url
    context = ssl.create_default_context(cafile=server.ca_file)
    conn = http.client.HTTPSConnection("localhost", parts.port, context=context, timeout=10)
    conn.sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", parts.port)), server_hostname="localhost"
    )
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    conn.request(
        method, target, body=body, headers={k.replace("_", "-"): v for k, v in headers.items()}
    )
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


async def web_user(web: ServerProcess, user: str) -> tuple[Phx, dict]:
    phx = await Phx.open(web, login(web, user, USERS[user]))
    return phx, await phx.join(f"user:{user}@localhost")


async def xmpp(web: ServerProcess, user: str) -> object:
    client = await connect(web, user, "phone", password=USERS[user])
    client.stanzas = asyncio.Queue()
    match = MatchXPath("{jabber:client}message")
    client.register_handler(Callback("every message", match, client.stanzas.put_nowait))
    return client


async def next_where(queue: asyncio.Queue, where: object, timeout: float = 10) -> object:
    async def find() -> object:
        while True:
            item = await queue.get()
            if where(item):  # type: ignore[operator]
                return item

    return await asyncio.wait_for(find(), timeout)


async def upload(phx: Phx, topic: str, web: ServerProcess, name: str, data: bytes) -> str:
    slot = await phx.push(
        topic, "upload_slot", {"filename": name, "size": len(data), "content_type": "image/png"}
    )
    status, _, _ = https(web, "PUT", slot["put"], data, **slot["headers"])
    assert status == 201
    return slot["get"]


def oob_url(stanza: object) -> str | None:
    url = stanza.xml.find(f"{{{OOB}}}x/{{{OOB}}}url")  # type: ignore[attr-defined]
    return url.text if url is not None else None


def test_a_slot_over_the_channel_follows_the_xep_0363_rules(web: ServerProcess) -> None:
    async def scenario() -> None:
        alice, reply = await web_user(web, "alice")
        topic = "user:alice@localhost"
        base = f"https://localhost:{web.https_port}/upload/upload.localhost/"
        assert reply["upload"] == {"max_file_size": 200000, "url": base}
        slot = await alice.push(
            topic,
            "upload_slot",
            {"filename": "../holiday photo.png", "size": len(PNG), "content_type": "image/png"},
        )
        assert slot["headers"] == {"Content-Type": "image/png"}
        assert slot["name"] == "holiday photo.png" and slot["size"] == len(PNG)
        assert slot["get"].startswith(base) and slot["get"].endswith("/holiday%20photo.png")
        assert slot["put"].startswith(slot["get"] + "?token=")
        status, _, _ = https(web, "PUT", slot["put"], PNG, Content_Type="image/png")
        assert status == 201
        status, headers, body = https(web, "GET", slot["get"])
        assert (status, body, headers["content-type"]) == (200, PNG, "image/png")
        # The page the web client runs in may PUT from another of the server's own names.
        own = f"https://127.0.0.1:{web.https_port}"
        status, headers, _ = https(web, "OPTIONS", slot["put"], Origin=own)
        assert status == 204 and headers["access-control-allow-origin"] == own
        assert "PUT" in headers["access-control-allow-methods"]
        status, headers, _ = https(web, "OPTIONS", slot["put"], Origin="https://evil.example")
        assert "access-control-allow-origin" not in headers
        # Refusals: the same conditions and words as the XEP-0363 iq.
        big = await alice.request(topic, "upload_slot", {"filename": "big.bin", "size": 200001})
        assert big["error"]["reason"] == "not-acceptable"
        assert big["error"]["max_file_size"] == 200000
        assert "200000 bytes" in big["error"]["text"]
        for bad in (
            {"filename": "x", "size": 0},
            {"filename": "x", "size": "many"},
            {"filename": "x", "size": True},
            {"size": 10},
            {"filename": "x", "size": 10, "content_type": "not a type"},
        ):
            answer = await alice.request(topic, "upload_slot", bad)
            assert answer["error"]["reason"] == "bad-request", (bad, answer)
        # The stored quota (250000) is shared with what the account uploads over XMPP.
        await alice.push(topic, "upload_slot", {"filename": "a.bin", "size": 150000})
        full = await alice.request(topic, "upload_slot", {"filename": "b.bin", "size": 100000})
        assert full["error"]["reason"] == "resource-constraint"
        assert "quota of 250000 bytes" in full["error"]["text"]
        gajim = await connect(web, "alice", "gajim", password=USERS["alice"])
        gajim.register_plugin("xep_0363")
        with pytest.raises(IqError) as refused:
            await gajim.plugin["xep_0363"].request_slot(
                "upload.localhost", "b.bin", 100000, "application/octet-stream", timeout=5
            )
        error = refused.value.iq["error"]
        assert error["condition"] == "resource-constraint"
        assert error["text"] == full["error"]["text"]
        await gajim.close()
        await alice.close()

    run(scenario())


def test_file_messages_map_to_out_of_band_data_both_ways_and_keep_in_history(
    web: ServerProcess,
) -> None:
    async def scenario() -> None:
        bob, _ = await web_user(web, "bob")
        topic = "user:bob@localhost"
        carol = await xmpp(web, "carol")
        url = await upload(bob, topic, web, "cat.png", PNG)
        # JSON -> XMPP: the URL as the body plus <x xmlns="jabber:x:oob"><url/></x>.
        sent = await bob.push(topic, "new_msg", {"to": "carol@localhost", "file": {"url": url}})
        got = await next_where(carol.stanzas, lambda m: m["body"])
        assert got["body"] == url and oob_url(got) == url
        echo = await bob.event(topic, "new_msg", lambda m: m.get("id") == sent["id"])
        assert echo["file"] == {
            "url": url,
            "name": "cat.png",
            "type": "image/png",
            "size": len(PNG),
        }
        # XMPP -> JSON: what Conversations sends; a body that is just our URL; a foreign link.
        carol.send_raw(
            f"<message to='bob@localhost' type='chat' id='c1'><body>{url}</body>"
            f"<x xmlns='{OOB}'><url>{url}</url></x></message>"
        )
        shared = await bob.event(topic, "new_msg", lambda m: m.get("msg_id") == "c1")
        assert shared["file"] == echo["file"] and shared["body"] == url
        carol.send_message(mto="bob@localhost", mbody=url, mtype="chat")
        bare = await bob.event(
            topic,
            "new_msg",
            lambda m: m["body"] == url and m["from"] != "bob@localhost" and m.get("msg_id") != "c1",
        )
        assert bare["file"]["size"] == len(PNG)
        foreign = "https://files.example.org/a1/report%20Q3.pdf"
        carol.send_raw(
            f"<message to='bob@localhost' type='chat' id='c3'><body>see {foreign}</body>"
            f"<x xmlns='{OOB}'><url>{foreign}</url></x></message>"
        )
        other = await bob.event(topic, "new_msg", lambda m: m.get("msg_id") == "c3")
        assert other["file"] == {"url": foreign, "name": "report Q3.pdf", "type": "application/pdf"}
        # Not files: a link in a sentence, a script URL in out-of-band data.
        carol.send_message(mto="bob@localhost", mbody=f"look: {url}", mtype="chat")
        carol.send_raw(
            "<message to='bob@localhost' type='chat' id='c5'><body>click</body>"
            f"<x xmlns='{OOB}'><url>javascript:alert(1)</url></x></message>"
        )
        for msg_id_or_body in ("c5",):
            plain = await bob.event(
                topic, "new_msg", lambda m, k=msg_id_or_body: m.get("msg_id") == k
            )
            assert "file" not in plain
        assert all(
            "file" not in m for m in bob.events(topic, "new_msg") if m["body"].startswith("look")
        )
        # A refused file payload.
        for bad in ({"url": "javascript:alert(1)"}, {"url": 5}, "x"):
            answer = await bob.request(topic, "new_msg", {"to": "carol@localhost", "file": bad})
            assert answer["error"]["reason"] == "bad-request", answer
        answer = await bob.request(
            topic, "new_msg", {"to": "carol@localhost", "body": "other", "file": {"url": url}}
        )
        assert answer["error"]["reason"] == "bad-request"
        await carol.close()
        await bob.close()

    run(scenario())
    # From the archive after a restart: the sizes come from storage, not from memory.
    web.stop()
    web.start()

    async def history() -> None:
        bob, _ = await web_user(web, "bob")
        page = await bob.push("user:bob@localhost", "history", {"with": "carol@localhost"})
        files = [m["file"] for m in page["messages"] if "file" in m]
        assert len(files) == 4, page
        ours = [f for f in files if "size" in f]
        assert len(ours) == 3 and all(
            f["name"] == "cat.png" and f["size"] == len(PNG) for f in ours
        )
        await bob.close()

    run(history())


def test_files_in_a_room_both_ways_and_in_room_history(web: ServerProcess) -> None:
    room = "photos@conference.localhost"

    async def scenario() -> None:
        dave, _ = await web_user(web, "dave")
        topic = f"room:{room}"
        await dave.join(topic, {"nick": "Dave"})
        carol = await xmpp(web, "carol")
        carol.send_raw(f"<presence to='{room}/Carol'><x xmlns='{MUC}'/></presence>")
        await dave.presence(topic, lambda s: "Carol" in s)
        url = await upload(dave, "user:dave@localhost", web, "room.png", PNG)
        sent = await dave.push(topic, "new_msg", {"file": {"url": url}})
        got = await next_where(
            carol.stanzas, lambda m: m["type"] == "groupchat" and m["body"] == url
        )
        assert oob_url(got) == url
        mine = await dave.event(topic, "new_msg", lambda m: m.get("id") == sent["id"])
        assert mine["file"]["size"] == len(PNG) and mine["file"]["type"] == "image/png"
        carol.send_raw(
            f"<message to='{room}' type='groupchat' id='r2'><body>{url}</body>"
            f"<x xmlns='{OOB}'><url>{url}</url></x></message>"
        )
        theirs = await dave.event(topic, "new_msg", lambda m: m.get("msg_id") == "r2")
        assert theirs["from"] == "Carol" and theirs["file"]["name"] == "room.png"
        page = await dave.push(topic, "history", {})
        assert [m["file"]["url"] for m in page["messages"] if "file" in m] == [url, url]
        await carol.close()
        await dave.close()

    run(scenario())
