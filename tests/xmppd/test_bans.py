"""Bans with expiry (xmppd/bans.py) on a running server, set through the admin API: sessions
end, logins and connections are refused with a clear text until the ban ends, room bans are
lifted at expiry, and all of it survives a restart (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from apisupport import client, sasl_answer, start_server
from pgtest import fresh_database
from phx import http_post
from support import RawClient, ServerProcess, connect, run

ROOM = "hall@conference.localhost"


def _wait_until(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_account_ban_ends_sessions_and_expires(tmp_path: Path) -> None:
    server = start_server(tmp_path)

    async def scenario() -> None:
        with client(server) as ops:
            bob = await connect(server, "bob", "desk")
            ban = ops.post(
                "/bans",
                json={
                    "kind": "account",
                    "target": "bob@localhost",
                    "duration": 3,
                    "reason": "flood",
                },
            )
            assert ban.status_code == 201, ban.text
            assert ban.json()["by"] == "ops"
            await asyncio.wait_for(bob.disconnected_event.wait(), 5)
            assert "policy-violation" in bob.stream_errors
            refused = sasl_answer(server, "bob", "bob-secret")
            assert "<account-disabled/>" in refused
            assert f"the account is banned until {ban.json()['until']}: flood" in refused
            status, _h, body = http_post(
                server, "/login", {"jid": "bob@localhost", "password": "bob-secret"}
            )
            assert status == 403 and "banned until" in body["text"]
            assert ops.get("/users/bob@localhost").json()["ban"]["id"] == ban.json()["id"]
            assert [b["target"] for b in ops.get("/bans").json()["bans"]] == ["bob@localhost"]
            await asyncio.sleep(3.2)
            assert "<success" in sasl_answer(server, "bob", "bob-secret")
            assert ops.get("/bans").json()["bans"] == []
            assert ops.get(f"/bans/{ban.json()['id']}").status_code == 404
            # Lifting by hand, and the refusals of a bad ban.
            again = ops.post("/bans", json={"kind": "account", "target": "bob@localhost"}).json()
            assert again["until"] is None
            assert ops.delete(f"/bans/{again['id']}").json()["id"] == again["id"]
            assert "<success" in sasl_answer(server, "bob", "bob-secret")
            past = ops.post(
                "/bans",
                json={
                    "kind": "account",
                    "target": "bob@localhost",
                    "until": "2001-01-01T00:00:00Z",
                },
            )
            assert past.status_code == 422 and past.json()["field"] == "until"
            both = ops.post(
                "/bans",
                json={
                    "kind": "ip",
                    "target": "10.0.0.1",
                    "until": "2099-01-01T00:00:00Z",
                    "duration": 5,
                },
            )
            assert both.status_code == 422
            cidr = ops.post("/bans", json={"kind": "ip", "target": "not-an-address"})
            assert cidr.status_code == 422 and cidr.json()["field"] == "target"
            room = ops.post("/bans", json={"kind": "room", "target": "bob@localhost"})
            assert room.status_code == 422 and room.json()["field"] == "room"
            missing = ops.post(
                "/bans",
                json={"kind": "room", "target": "bob@localhost", "room": "no@conference.localhost"},
            )
            assert missing.status_code == 404
            # The room's rules come first: its last owner cannot be banned, and nothing is stored.
            ops.post("/rooms", json={"jid": ROOM, "owners": ["alice@localhost"]})
            owner = ops.post(
                "/bans", json={"kind": "room", "target": "alice@localhost", "room": ROOM}
            )
            assert owner.status_code == 409 and owner.json()["error"] == "conflict"
            assert ops.get("/bans").json()["bans"] == []

    try:
        run(scenario())
    finally:
        server.stop()


def _restart_scenario(server: ServerProcess) -> None:
    with client(server) as ops:
        assert (
            ops.post("/rooms", json={"jid": ROOM, "owners": ["alice@localhost"]}).status_code == 201
        )
        long, short = 20, 2  # long outlives a slow restart on a loaded machine
        ops.post("/bans", json={"kind": "account", "target": "bob@localhost", "duration": long})
        ops.post("/bans", json={"kind": "ip", "target": "127.0.0.2/32", "duration": long})
        ops.post(
            "/bans",
            json={"kind": "room", "target": "carol@localhost", "room": ROOM, "duration": long},
        )
        ops.post(
            "/bans",
            json={"kind": "room", "target": "dave@localhost", "room": ROOM, "duration": short},
        )
        ops.post("/users/alice@localhost/disable", json={"reason": "on leave"})
        started = time.monotonic()
    server.stop()
    time.sleep(short + 0.5)  # the short ban expires while the server is stopped
    server.start()
    with client(server) as ops:
        _wait_until(lambda: ops.get("/stats").status_code == 200)
        affiliations = {
            a["jid"]: a["affiliation"]
            for a in ops.get(f"/rooms/{ROOM}/affiliations").json()["affiliations"]
        }
        # dave's ban ended while the server was stopped: lifted at start.
        assert affiliations == {"alice@localhost": "owner", "carol@localhost": "outcast"}
        assert sorted(b["kind"] for b in ops.get("/bans").json()["bans"]) == [
            "account",
            "ip",
            "room",
        ]
        assert "banned until" in sasl_answer(server, "bob", "bob-secret")
        assert "the account is disabled: on leave" in sasl_answer(server, "alice", "alice-secret")
        banned = RawClient(server, source="127.0.0.2")
        assert b"connections from your address are banned until" in banned.read_to_close()
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=transport) as other:
            web = other.get(f"http://127.0.0.1:{server.http_port}/")
        assert web.status_code == 403
        time.sleep(max(0.0, long - (time.monotonic() - started)) + 1.2)
        assert "<success" in sasl_answer(server, "bob", "bob-secret")
        assert "<success" in sasl_answer(server, "carol", "carol-secret", source="127.0.0.2")
        after = ops.get(f"/rooms/{ROOM}/affiliations").json()["affiliations"]
        assert after == [{"jid": "alice@localhost", "affiliation": "owner"}]
        assert ops.get("/bans").json()["bans"] == []
        assert "disabled" in sasl_answer(server, "alice", "alice-secret")  # no end by itself
        ops.post("/users/alice@localhost/enable")
        assert "<success" in sasl_answer(server, "alice", "alice-secret")


def test_bans_survive_a_restart_sqlite(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        _restart_scenario(server)
    finally:
        server.stop()


def test_bans_survive_a_restart_postgres(tmp_path: Path) -> None:
    try:
        database = fresh_database("xmppd_bans")
        url = database.__enter__()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL is needed on 127.0.0.1:5432: {exc}")
    try:
        server = start_server(tmp_path, extra=f'[storage]\ndriver = "postgres"\ndsn = "{url}"\n')
        try:
            _restart_scenario(server)
        finally:
            server.stop()
    finally:
        database.__exit__(None, None, None)


async def test_reload_picks_up_what_another_process_stored(tmp_path: Path) -> None:
    """Cluster nodes (and `serve --workers`) share the database: `reload` (every 5 s in
    cluster mode) makes a ban set by one process refuse logins in the others."""
    from xmppd.admin import maintenance
    from xmppd.config import parse

    config = parse(f'[server]\ndata_dir = "{tmp_path}"\ndemo_account = false\n')
    async with maintenance(config) as one, maintenance(config) as other:
        await one.bans.ban("account", "bob@localhost", until=time.time() + 60, by="test")
        await one.bans.disable("carol@localhost", reason="left")
        assert other.bans.login_refusal("bob@localhost") is None
        assert await other.bans.reload() == ["bob@localhost", "carol@localhost"]
        assert "banned until" in (other.bans.login_refusal("bob@localhost") or "")
        assert other.bans.login_refusal("carol@localhost") == "the account is disabled: left"
        ban = one.bans.list("account")[0]
        await one.bans.lift(ban.id)
        await one.bans.enable("carol@localhost")
        assert await other.bans.reload() == []
        assert other.bans.login_refusal("bob@localhost") is None
        assert other.bans.login_refusal("carol@localhost") is None
