"""Each provider's wire format, checked by a loopback receiver as the real service documents
it: the generic webhook (schema xmppd.hook/1, HMAC-SHA256 over timestamp + body), Slack-style
`{"text"}`, Matrix `PUT .../send/m.room.message/{txnId}` with a bearer token, Telegram
`sendMessage`; and the in-server XMPP bridge. A keyword filter lets only matching text out."""

from __future__ import annotations

from urllib.parse import quote

from apisupport import audit_lines
from hooksupport import Receiver, join, verify
from support import ServerProcess, connect, run

ROOM = "ops@conference.localhost"


def _subscribe(ops, provider: str, target: dict, **extra) -> dict:  # noqa: ANN001
    body = {"source": "room", "room": ROOM, "events": ["message"], "provider": provider,
            "target": target, **extra}  # fmt: skip
    answer = ops.post("/subscriptions", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_every_provider_format(hook_server: ServerProcess, ops) -> None:  # noqa: ANN001
    assert ops.post("/rooms", json={"jid": ROOM}).status_code == 201
    with Receiver() as web, Receiver() as slack, Receiver() as matrix, Receiver() as telegram:
        hook = _subscribe(ops, "webhook", {"url": web.url + "/in"}, keywords=["deploy"])
        _subscribe(ops, "slack", {"url": slack.url + "/services/T0/B0/x"}, tags=["ops"])
        _subscribe(ops, "matrix", {"homeserver": matrix.url, "room_id": "!abc:example.org",
                                   "access_token": "syt_secret"})  # fmt: skip
        _subscribe(ops, "telegram", {"api_base": telegram.url, "token": "123:ABC",
                                     "chat_id": -100})  # fmt: skip
        _subscribe(ops, "xmpp", {"jid": "bob@localhost"}, senders=["alice@localhost"])
        listed = ops.get("/subscriptions", params={"room": ROOM}).json()["items"]
        assert len(listed) == 5
        assert {s["target"].get("access_token") for s in listed} >= {"***"}  # masked

        async def scenario() -> None:
            bob = await connect(hook_server, "bob", "phone")
            alice = await join(hook_server, "alice", ROOM, "Alice")
            try:
                alice.send_message(mto=ROOM, mbody="coffee anyone?", mtype="groupchat")
                alice.send_message(mto=ROOM, mbody="deploy done #ops", mtype="groupchat")
                got = await bob.next_message(10)
                while "deploy" not in got["body"]:  # the bridge sends both (no text filter)
                    got = await bob.next_message(10)
                assert got["body"] == f"[{ROOM}] Alice: deploy done #ops"
                assert str(got["from"]) == "localhost"
            finally:
                await alice.close()
                await bob.close()

        run(scenario())
        [request] = web.wait(1)
        assert request.method == "POST" and request.path == "/in"
        verify(hook["secret"], request)
        document = request.json()
        assert document["schema"] == "xmppd.hook/1"
        assert document["subscription"] == hook["id"]
        assert request.headers["idempotency-key"] == document["id"]
        assert document["id"].endswith(":" + hook["id"])
        event = document["event"]
        assert (event["type"], event["room"], event["sender"], event["nick"], event["text"]) == (
            "message", ROOM, "alice@localhost", "Alice", "deploy done #ops")  # fmt: skip
        [request] = slack.wait(1)
        assert request.json() == {"text": f"[{ROOM}] Alice: deploy done #ops"}
        requests = matrix.wait(2)
        for request in requests:
            assert request.method == "PUT"
            assert request.headers["authorization"] == "Bearer syt_secret"
            prefix = f"/_matrix/client/v3/rooms/{quote('!abc:example.org', safe='')}/send/"
            assert request.path.startswith(prefix + "m.room.message/")
            assert request.path.rsplit("/", 1)[1] == quote(request.headers["idempotency-key"])
            assert request.json()["msgtype"] == "m.text"
        assert sorted(r.json()["body"] for r in requests) == sorted(
            [f"[{ROOM}] Alice: coffee anyone?", f"[{ROOM}] Alice: deploy done #ops"]
        )
        requests = telegram.wait(2)
        assert {r.path for r in requests} == {"/bot123:ABC/sendMessage"}
        assert {r.json()["chat_id"] for r in requests} == {-100}
        assert len(web.requests) == 1 and len(slack.requests) == 1  # filters held the rest
    for sub in ops.get("/subscriptions").json()["items"]:
        assert ops.delete(f"/subscriptions/{sub['id']}").status_code == 200
    lines = audit_lines(hook_server)
    assert any(f"subscribed {hook['id']}: room {ROOM} -> webhook" in line for line in lines)
    assert any(f"unsubscribed {hook['id']}" in line for line in lines)


def test_bad_subscriptions_are_refused(ops) -> None:  # noqa: ANN001
    base = {"source": "rooms", "events": ["message"], "provider": "webhook"}
    cases = [
        ({**base, "target": {"url": "http://example.com/x"}}, "target"),  # plain http, remote
        ({**base, "target": {}}, "target"),
        ({**base, "target": {"url": "https://e.org"}, "patterns": ["("]}, "patterns"),
        ({**base, "source": "room", "target": {"url": "https://e.org"}}, "room"),
    ]
    for body, field in cases:
        answer = ops.post("/subscriptions", json=body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == field
    assert ops.get("/subscriptions/nope").status_code == 404


def test_account_deleted_reaches_a_webhook(ops) -> None:  # noqa: ANN001
    with Receiver() as web:
        body = {"source": "accounts", "events": ["account-deleted"], "provider": "webhook",
                "target": {"url": web.url}}  # fmt: skip
        made = ops.post("/subscriptions", json=body).json()
        assert ops.delete("/users/carol@localhost").status_code == 200
        [request] = web.wait(1)
        verify(made["secret"], request)
        event = request.json()["event"]
        assert (event["type"], event["source"], event["sender"]) == (
            "account-deleted", "accounts", "carol@localhost")  # fmt: skip
        ops.delete(f"/subscriptions/{made['id']}")


def test_join_and_leave_reach_a_webhook(hook_server: ServerProcess, ops) -> None:  # noqa: ANN001
    room = "lobby@conference.localhost"
    assert ops.post("/rooms", json={"jid": room}).status_code == 201
    with Receiver() as web:
        body = {"source": "room", "room": room, "events": ["join", "leave"],
                "provider": "slack", "target": {"url": web.url}}  # fmt: skip
        made = ops.post("/subscriptions", json=body).json()

        async def scenario() -> None:
            bob = await join(hook_server, "bob", room, "Bob", resource="lobby")
            await bob.close()

        run(scenario())
        texts = sorted(r.json()["text"] for r in web.wait(2))
        assert texts == [f"[{room}] join: Bob", f"[{room}] leave: Bob"]
        ops.delete(f"/subscriptions/{made['id']}")
