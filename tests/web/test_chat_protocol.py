"""The JSON chat protocol (docs/channels.md) with the stock `phoenix` npm client on one side and
slixmpp on the other, over real sockets: contacts and presence, 1:1 chat with its XEPs mapped
both ways, history by archive id, unread counts, resuming, rooms (create with a config,
bookmarks, invitations, occupants, moderation, retractions, corrections, kicks). Web users log
in with their password (POST /login)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import pytest
from phx import HERE, Phx, login
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from support import ServerProcess, connect, run

USERS = {u: f"{u}-secret" for u in ("alice", "bob", "carol", "dave", "erin", "frank")}
CONFIG = """
[modules.muc]
lock_new_rooms = false
"""
RECEIPTS, MARKERS = "urn:xmpp:receipts", "urn:xmpp:chat-markers:0"
RETRACT, CORRECT = "urn:xmpp:message-retract:1", "urn:xmpp:message-correct:0"
STATES = "http://jabber.org/protocol/chatstates"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    assert shutil.which("node"), "node is needed for the web client tests"
    assert (HERE / "node_modules" / "phoenix").is_dir(), "run `npm ci` in tests/web"
    server = ServerProcess(tmp_path_factory.mktemp("chat"), extra_config=CONFIG)
    for user, password in USERS.items():
        server.add_user(user, password)
    server.start()
    yield server
    server.stop()


async def xmpp(web: ServerProcess, user: str, resource: str = "phone") -> object:
    """A slixmpp client whose `stanzas` queue gets every message, body or not (its own
    `message` event only fires for messages with a body)."""
    client = await connect(web, user, resource, password=USERS[user])
    client.stanzas = asyncio.Queue()
    match = MatchXPath("{jabber:client}message")
    client.register_handler(Callback("every message", match, client.stanzas.put_nowait))
    return client


async def web_user(web: ServerProcess, user: str, payload: dict | None = None) -> tuple[Phx, dict]:
    phx = await Phx.open(web, login(web, user, USERS[user]))
    reply = await phx.join(f"user:{user}@localhost", payload)
    return phx, reply


async def next_where(queue: asyncio.Queue, where: object, timeout: float = 10) -> object:
    async def find() -> object:
        while True:
            item = await queue.get()
            if where(item):  # type: ignore[operator]
                return item

    return await asyncio.wait_for(find(), timeout)


def raw(stanza: object) -> str:
    return str(stanza)


def test_contacts_presence_and_subscriptions_both_ways(web: ServerProcess) -> None:
    async def scenario() -> None:
        alice, reply = await web_user(web, "alice", {"show": "away", "status": "lunch"})
        topic = "user:alice@localhost"
        assert reply["jid"].startswith("alice@localhost/web-") and reply["show"] == "away"
        assert await alice.event(topic, "roster") == {"items": []}
        bob = await xmpp(web, "bob")
        bob.auto_authorize, bob.auto_subscribe = None, False  # this test answers by hand
        await alice.push(topic, "subscribe", {"jid": "bob@localhost", "name": "Bob"})
        asked = await next_where(bob.presences, lambda p: p["type"] == "subscribe")
        assert str(asked["from"]) == "alice@localhost"
        bob.send_presence(pto="alice@localhost", ptype="subscribed")
        await alice.event(topic, "roster_push", lambda p: p["item"]["subscription"] == "to")
        bob.send_raw(
            "<presence to='alice@localhost' type='subscribe'><status>me too</status></presence>"
        )
        request = await alice.event(topic, "subscribe_request")
        assert request == {"from": "bob@localhost", "status": "me too"}
        await alice.push(topic, "approve", {"jid": "bob@localhost"})
        item = await alice.event(
            topic, "roster_push", lambda p: p["item"]["subscription"] == "both"
        )
        assert item["item"]["name"] == "Bob" and item["item"]["source"] == "roster"
        # bob (XMPP) sees the web user's availability as presence: show and status
        seen = await next_where(
            bob.presences, lambda p: str(p["from"]).startswith("alice@localhost/web-")
        )
        assert (seen["show"], seen["status"]) == ("away", "lunch")
        bob.send_presence(pshow="xa", pstatus="gone fishing")
        await alice.presence(topic, lambda s: "bob@localhost" in s)  # online (the probe)
        state = await alice.presence(topic, lambda s: s.get("bob@localhost", [{}])[0].get("show"))
        (meta,) = state["bob@localhost"]
        assert (meta["resource"], meta["show"], meta["status"]) == ("phone", "xa", "gone fishing")
        await alice.push(topic, "presence", {"show": "dnd", "status": "busy"})
        seen = await next_where(bob.presences, lambda p: p["show"] == "dnd")
        assert seen["status"] == "busy"
        await bob.close()
        await alice.presence(topic, lambda s: "bob@localhost" not in s)
        await alice.close()

    run(scenario())


def test_one_to_one_chat_maps_markers_corrections_retractions_both_ways(web: ServerProcess) -> None:
    async def scenario() -> None:
        carol, _ = await web_user(web, "carol")
        topic = "user:carol@localhost"
        dave = await xmpp(web, "dave")
        # JSON -> XMPP: body with origin-id, markable, receipt request
        sent = await carol.push(topic, "new_msg", {"to": "dave@localhost", "body": "hi dave"})
        assert sent["id"] and sent["msg_id"] and sent["stamp"]
        got = await dave.next_message()
        assert got["body"] == "hi dave" and got["id"] == sent["msg_id"]
        xml = raw(got)
        assert f'<request xmlns="{RECEIPTS}"' in xml and f'<markable xmlns="{MARKERS}"' in xml
        echo = await carol.event(topic, "new_msg", lambda m: m["body"] == "hi dave")
        assert echo["id"] == sent["id"] and echo["from"] == "carol@localhost"
        # XMPP -> JSON: receipts and markers, chat state, message, correction, retraction
        for element in (
            f"<received xmlns='{RECEIPTS}' id='{sent['msg_id']}'/>",
            f"<displayed xmlns='{MARKERS}' id='{sent['msg_id']}'/>",
            f"<composing xmlns='{STATES}'/>",
        ):
            dave.send_raw(f"<message to='carol@localhost' type='chat'>{element}</message>")
        marker = await carol.event(topic, "marker", lambda m: m["type"] == "displayed")
        assert marker == {
            "from": "dave@localhost",
            "with": "dave@localhost",
            "type": "displayed",
            "msg_id": sent["msg_id"],
        }
        await carol.event(topic, "marker", lambda m: m["type"] == "received")
        state = await carol.event(topic, "chat_state")
        assert (state["from"], state["state"]) == ("dave@localhost", "composing")
        dave.send_raw(
            "<message to='carol@localhost' type='chat' id='d1'><body>helo</body>"
            f"<request xmlns='{RECEIPTS}'/><markable xmlns='{MARKERS}'/></message>"
        )
        first = await carol.event(topic, "new_msg", lambda m: m["body"] == "helo")
        assert first["msg_id"] == "d1" and first["id"] and first["with"] == "dave@localhost"
        receipt = await next_where(
            dave.stanzas, lambda m: f'<received xmlns="{RECEIPTS}"' in raw(m)
        )
        assert "d1" in raw(receipt)
        dave.send_raw(
            "<message to='carol@localhost' type='chat' id='d2'><body>hello</body>"
            f"<replace xmlns='{CORRECT}' id='d1'/></message>"
        )
        fixed = await carol.event(topic, "new_msg", lambda m: m.get("replace") == "d1")
        assert fixed["body"] == "hello" and fixed["id"] != first["id"]
        dave.send_raw(
            "<message to='carol@localhost' type='chat' id='d3'>"
            f"<retract xmlns='{RETRACT}' id='d1'/><body>fallback</body></message>"
        )
        gone = await carol.event(topic, "retract")
        assert (gone["from"], gone["msg_id"]) == ("dave@localhost", "d1")
        # JSON -> XMPP: chat state, correction, retraction
        await carol.push(topic, "chat_state", {"to": "dave@localhost", "state": "composing"})
        got = await next_where(dave.stanzas, lambda m: "composing" in raw(m))
        assert f'<composing xmlns="{STATES}"' in raw(got)
        fix = {"to": "dave@localhost", "replace": sent["msg_id"], "body": "hi Dave"}
        fixed = await carol.push(topic, "correct", fix)
        got = await next_where(dave.stanzas, lambda m: m["body"] == "hi Dave")
        assert f'<replace xmlns="{CORRECT}" id="{sent["msg_id"]}"' in raw(got)
        await carol.push(topic, "retract", {"to": "dave@localhost", "msg_id": sent["msg_id"]})
        got = await next_where(dave.stanzas, lambda m: "retract" in raw(m))
        assert f'<retract xmlns="{RETRACT}" id="{sent["msg_id"]}"' in raw(got)
        await dave.close()
        await carol.close()

    run(scenario())


def test_history_pages_by_archive_id_and_resume_with_since(web: ServerProcess) -> None:
    async def scenario() -> None:
        erin, _ = await web_user(web, "erin")
        topic = "user:erin@localhost"
        frank = await xmpp(web, "frank")
        for n in range(7):
            frank.send_message(mto="erin@localhost", mbody=f"m{n}", mtype="chat")
        await erin.event(topic, "new_msg", lambda m: m["body"] == "m6")
        newest = await erin.push(topic, "history", {"with": "frank@localhost", "limit": 3})
        assert [m["body"] for m in newest["messages"]] == ["m4", "m5", "m6"]
        assert not newest["complete"] and all(m["delayed"] for m in newest["messages"])
        older = await erin.push(
            topic,
            "history",
            {"with": "frank@localhost", "before": newest["messages"][0]["id"], "limit": 3},
        )
        assert [m["body"] for m in older["messages"]] == ["m1", "m2", "m3"]
        rest = await erin.push(
            topic, "history", {"with": "frank@localhost", "before": older["messages"][0]["id"]}
        )
        assert [m["body"] for m in rest["messages"]] == ["m0"] and rest["complete"]
        after = await erin.push(
            topic,
            "history",
            {"with": "frank@localhost", "after": rest["messages"][0]["id"], "limit": 2},
        )
        assert [m["body"] for m in after["messages"]] == ["m1", "m2"]
        bad = await erin.request(topic, "history", {"before": "no-such-id"})
        assert bad["error"]["reason"] == "item-not-found"
        mark = newest["messages"][0]["id"]  # m4 seen; the tab closes; m7 arrives meanwhile
        await erin.close()
        frank.send_message(mto="erin@localhost", mbody="m7", mtype="chat")
        await asyncio.sleep(0.3)  # slixmpp's raw sends may overtake its queued ones
        frank.send_raw(
            "<message to='erin@localhost' type='chat' id='x1'><body>oops</body></message>"
        )
        frank.send_raw(
            f"<message to='erin@localhost' type='chat'><retract xmlns='{RETRACT}' id='x1'/>"
            "<body>fallback</body></message>"
        )
        await asyncio.sleep(0.5)
        again, _ = await web_user(web, "erin", {"since": mark})
        synced = await again.event(topic, "synced")
        assert synced["complete"]
        replayed = [m["body"] for m in again.events(topic, "new_msg")]
        assert replayed == ["m5", "m6", "m7", "oops"]  # no gap, no duplicate
        (retracted,) = again.events(topic, "retract")  # shown as a retraction, not a message
        assert (retracted["msg_id"], retracted["from"]) == ("x1", "frank@localhost")
        assert synced["last"] == retracted["id"]
        page = await again.push(topic, "history", {"with": "frank@localhost", "limit": 2})
        assert page["messages"][0]["body"] == "oops" and page["messages"][1]["retract"] == "x1"
        assert "body" not in page["messages"][1]
        await frank.close()
        await again.close()

    run(scenario())


def test_unread_counts_agree_across_two_tabs_and_an_xmpp_client(web: ServerProcess) -> None:
    async def scenario() -> None:
        topic = "user:dave@localhost"
        tab1, _ = await web_user(web, "dave")
        tab2, _ = await web_user(web, "dave")
        phone = await xmpp(web, "dave", "mobile")
        erin = await xmpp(web, "erin")
        for n in range(3):
            erin.send_raw(
                f"<message to='dave@localhost' type='chat' id='u{n}'><body>u{n}</body>"
                f"<markable xmlns='{MARKERS}'/></message>"
            )
        for tab in (tab1, tab2):
            await tab.event(
                topic, "unread", lambda u: u == {"with": "erin@localhost", "count": 3, "read": None}
            )
        # the XMPP client displays u1: both tabs drop to one unread
        phone.send_raw(
            f"<message to='erin@localhost' type='chat'><displayed xmlns='{MARKERS}' id='u1'/></message>"
        )
        for tab in (tab1, tab2):
            await tab.event(topic, "unread", lambda u: u["count"] == 1)
        # tab 1 reads everything: tab 2 hears, erin gets the marker, a new tab starts at zero
        last = await tab1.event(topic, "new_msg", lambda m: m["body"] == "u2")
        answer = await tab1.push(topic, "displayed", {"with": "erin@localhost", "id": last["id"]})
        assert answer == {"unread": 0}
        await tab2.event(topic, "unread", lambda u: u["count"] == 0 and u["read"] == last["id"])
        marker = await next_where(
            erin.stanzas, lambda m: "web-" in raw(m) and "<displayed" in raw(m)
        )
        assert f'<displayed xmlns="{MARKERS}" id="u2"' in raw(marker)
        tab3, reply = await web_user(web, "dave")
        assert reply["unread"] == {}
        assert (await tab3.push(topic, "unread")) == {"unread": {}}
        for client in (phone, erin):
            await client.close()
        for tab in (tab1, tab2, tab3):
            await tab.close()

    run(scenario())


MUC = "http://jabber.org/protocol/muc"
RETRACT, MODERATE = "urn:xmpp:message-retract:1", "urn:xmpp:message-moderate:1"


def test_room_create_invite_moderate_retract_kick(web: ServerProcess) -> None:
    async def scenario() -> None:
        alice, _ = await web_user(web, "alice")
        carol, _ = await web_user(web, "carol")
        me, you = "user:alice@localhost", "user:carol@localhost"
        bob = await xmpp(web, "bob", "desk")
        config = {"members_only": True, "members": ["bob@localhost"]}
        created = await alice.push(me, "room_create", {"name": "Team", "config": config})
        room = created["jid"]
        assert room == "team@conference.localhost"
        marks = await alice.push(me, "bookmarks")
        assert {"jid": room, "name": "Team", "autojoin": True} in marks["bookmarks"]
        direct = await next_where(bob.stanzas, lambda m: "jabber:x:conference" in raw(m))
        assert f'jid="{room}"' in raw(direct)
        topic = f"room:{room}"
        joined = await alice.join(topic, {"nick": "Alice"})
        assert (joined["role"], joined["affiliation"]) == ("moderator", "owner")
        assert joined["config"]["members_only"] and joined["config"]["whois"] == "anyone"
        bob.send_raw(f"<presence to='{room}/Bob'><x xmlns='{MUC}'/></presence>")
        await alice.presence(topic, lambda s: "Bob" in s)
        # mediated invitation: carol becomes a member and may enter
        refused = await carol.request(you, "noop")  # unknown events are refused
        assert refused["error"]["reason"] == "bad-request"
        await alice.push(topic, "invite", {"jid": "carol@localhost", "reason": "standup"})
        invite = await carol.event(you, "invite")
        assert invite == {
            "room": room,
            "from": "alice@localhost",
            "mediated": True,
            "reason": "standup",
        }
        await carol.join(topic, {"nick": "Carol"})
        occupants = (await alice.push(topic, "occupants"))["occupants"]
        assert [(o["nick"], o["role"], o["affiliation"], o["jid"]) for o in occupants] == [
            ("Alice", "moderator", "owner", "alice@localhost"),
            ("Bob", "participant", "member", "bob@localhost"),
            ("Carol", "participant", "member", "carol@localhost"),
        ]
        # a moderator retracts bob's message: a retraction, not a new message with fallback
        bob.send_message(mto=room, mbody="spam spam", mtype="groupchat")
        spam = await alice.event(topic, "new_msg", lambda m: m["body"] == "spam spam")
        assert spam["from"] == "Bob" and spam["id"]
        denied = await carol.request(topic, "moderate", {"id": spam["id"]})
        assert denied["error"]["reason"] == "forbidden"
        await alice.push(topic, "moderate", {"id": spam["id"], "reason": "spam"})
        gone = await carol.event(topic, "retract")
        assert gone == {"id": spam["id"], "moderated": True, "by": "Alice", "reason": "spam"}
        seen = await next_where(bob.stanzas, lambda m: "<retract" in raw(m))
        assert f'<moderated xmlns="{MODERATE}"' in raw(seen)
        assert not [m for m in carol.events(topic, "new_msg") if "retracted" in m["body"]]
        # the author corrects, then retracts, her own message
        sent = await carol.push(topic, "new_msg", {"body": "tpyo", "msg_id": "c-1"})
        first = await alice.event(topic, "new_msg", lambda m: m["body"] == "tpyo")
        assert first["id"] == sent["id"] and first["msg_id"] == "c-1"
        await carol.push(topic, "correct", {"id": sent["id"], "body": "typo"})
        fixed = await alice.event(topic, "new_msg", lambda m: m["body"] == "typo")
        assert fixed["replace"] == "c-1"
        not_hers = await carol.request(topic, "retract", {"id": spam["id"]})
        assert not_hers["error"]["reason"] in ("forbidden", "item-not-found")
        await carol.push(topic, "retract", {"id": sent["id"]})
        own = await alice.event(topic, "retract", lambda r: r["id"] == sent["id"])
        assert own == {"id": sent["id"], "moderated": False, "from": "Carol"}
        # the archive shows tombstones
        history = await alice.push(topic, "history", {"limit": 20})
        by_id = {m["id"]: m for m in history["messages"]}
        assert by_id[spam["id"]]["retracted"]["by"] == "Alice"
        assert by_id[spam["id"]]["body"] == ""
        # kick: the channel closes with the reason
        await alice.push(topic, "kick", {"nick": "Carol", "reason": "bye"})
        closed = await carol.event(topic, "phx_close")
        assert closed == {"reason": "kicked", "by": "Alice", "text": "bye"}
        await alice.presence(topic, lambda s: "Carol" not in s)
        # carol comes back where she left off: what came after, retractions as retractions
        carol2, _ = await web_user(web, "carol")
        await carol2.join(topic, {"nick": "Carol", "since": sent["id"]})
        synced = await carol2.event(topic, "synced")
        assert [m["body"] for m in carol2.events(topic, "new_msg")] == ["typo"]
        assert [r["id"] for r in carol2.events(topic, "retract")] == [sent["id"]]
        assert synced["complete"]
        await carol2.close()
        # an open room is listed
        await alice.push(me, "room_create", {"name": "Open talk"})
        rooms = (await alice.push(me, "rooms"))["rooms"]
        assert [r["jid"] for r in rooms] == ["open-talk@conference.localhost"]
        await bob.close()
        await alice.close()
        await carol.close()
        await asyncio.sleep(0)

    run(scenario())
