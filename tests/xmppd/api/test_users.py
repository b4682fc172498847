"""`/users` on a running server, checked with real XMPP clients: password changes, disabling
(SASL refuses with a clear text, sessions end, the web login refuses too), deletion, kicks."""

from __future__ import annotations

import asyncio

from apisupport import client, sasl_answer
from phx import http_post
from support import ServerProcess, connect, run


def test_create_list_search_and_page(api_server: ServerProcess) -> None:
    with client(api_server) as ops:
        for i in range(5):
            answer = ops.post("/users", json={"jid": f"pager{i}@localhost", "password": f"pw-{i}"})
            assert answer.status_code == 201, answer.text
            assert answer.json() == {
                "jid": f"pager{i}@localhost",
                "role": "user",
                "disabled": False,
                "sessions": 0,
                "ban": None,
            }
        again = ops.post("/users", json={"jid": "pager0@localhost", "password": "x"})
        assert again.status_code == 409 and again.json()["error"] == "exists"
        seen, after = [], None
        while True:
            params = {"q": "pager", "limit": 2} | ({"after": after} if after else {})
            page = ops.get("/users", params=params).json()
            assert len(page["users"]) <= 2
            seen += [u["jid"] for u in page["users"]]
            after = page["next"]
            if after is None:
                break
        assert seen == [f"pager{i}@localhost" for i in range(5)]
        everyone = [u["jid"] for u in ops.get("/users", params={"limit": 500}).json()["users"]]
        assert {"alice@localhost", "bob@localhost", "pager3@localhost"} <= set(everyone)
        assert everyone == sorted(everyone)


def test_password_change_ends_sessions(api_server: ServerProcess) -> None:
    async def scenario() -> None:
        with client(api_server) as ops:
            ops.post("/users", json={"jid": "pw@localhost", "password": "old-secret"})
            session = await connect(api_server, "pw", "desk", password="old-secret")
            answer = ops.put("/users/pw@localhost/password", json={"password": "new-secret"})
            assert answer.json() == {"jid": "pw@localhost", "sessions_ended": 1}
            await asyncio.wait_for(session.disconnected_event.wait(), 5)
            assert "reset" in session.stream_errors
            assert "<success" in sasl_answer(api_server, "pw", "new-secret")
            assert "not-authorized" in sasl_answer(api_server, "pw", "old-secret")
            missing = ops.put("/users/ghost@localhost/password", json={"password": "x"})
            assert missing.status_code == 404

    run(scenario())


def test_disable_refuses_logins_with_a_clear_text(api_server: ServerProcess) -> None:
    async def scenario() -> None:
        with client(api_server) as ops:
            ops.post("/users", json={"jid": "troll@localhost", "password": "troll-secret"})
            session = await connect(api_server, "troll", "desk", password="troll-secret")
            answer = ops.post("/users/troll@localhost/disable", json={"reason": "spam"})
            assert answer.json() == {"jid": "troll@localhost", "sessions_ended": 1}
            await asyncio.wait_for(session.disconnected_event.wait(), 5)
            assert "not-authorized" in session.stream_errors  # disabled; a ban: policy-violation
            refused = sasl_answer(api_server, "troll", "troll-secret")
            assert "<account-disabled/>" in refused
            assert "the account is disabled: spam" in refused
            status, _h, body = http_post(
                api_server, "/login", {"jid": "troll@localhost", "password": "troll-secret"}
            )
            assert status == 403 and body == {
                "error": "account-disabled",
                "text": "the account is disabled: spam",
            }
            assert ops.get("/users/troll@localhost").json()["disabled"] is True
            enabled = ops.post("/users/troll@localhost/enable")
            assert enabled.json()["disabled"] is False
            assert "<success" in sasl_answer(api_server, "troll", "troll-secret")

    run(scenario())


def test_sessions_kick_and_delete(api_server: ServerProcess) -> None:
    async def scenario() -> None:
        with client(api_server) as ops:
            ops.post("/users", json={"jid": "leaver@localhost", "password": "leaver-secret"})
            desk = await connect(api_server, "leaver", "desk", password="leaver-secret")
            phone = await connect(api_server, "leaver", "phone", password="leaver-secret")
            sessions = ops.get("/users/leaver@localhost/sessions").json()["sessions"]
            assert [s["jid"] for s in sessions] == [
                "leaver@localhost/desk",
                "leaver@localhost/phone",
            ]
            assert {s["transport"] for s in sessions} == {"tcp"}
            kicked = ops.post(
                "/users/leaver@localhost/kick", json={"resource": "phone", "text": "bye"}
            )
            assert kicked.json() == {"jid": "leaver@localhost", "sessions_ended": 1}
            await asyncio.wait_for(phone.disconnected_event.wait(), 5)
            assert not desk.disconnected_event.is_set()
            nobody = ops.post("/users/leaver@localhost/kick", json={"resource": "tablet"})
            assert nobody.status_code == 404 and nobody.json()["error"] == "no-session"
            deleted = ops.delete("/users/leaver@localhost")
            assert deleted.json() == {"jid": "leaver@localhost", "sessions_ended": 1}
            await asyncio.wait_for(desk.disconnected_event.wait(), 5)
            assert "not-authorized" in desk.stream_errors
            assert ops.get("/users/leaver@localhost").status_code == 404
            assert ops.delete("/users/leaver@localhost").status_code == 404

    run(scenario())
