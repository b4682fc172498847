"""At-least-once delivery: retries through receiver failures (same idempotency key each time),
dead letters after hooks.max_attempts visible and retryable through the API, permanent 4xx
answers not retried, and a server restart with deliveries pending: none lost, duplicates only
with the same idempotency key."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from apisupport import client, start_server
from hooksupport import Receiver, join
from pgtest import fresh_database
from support import ServerProcess, free_port, run

ROOM = "outbox@conference.localhost"


def _subscribe(ops, url: str) -> dict:  # noqa: ANN001
    body = {"source": "room", "room": ROOM, "events": ["message"], "provider": "webhook",
            "target": {"url": url}}  # fmt: skip
    answer = ops.post("/subscriptions", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def _say(server: ServerProcess, *bodies: str) -> None:
    async def scenario() -> None:
        alice = await join(server, "alice", ROOM, "Alice")
        try:
            for body in bodies:
                alice.send_message(mto=ROOM, mbody=body, mtype="groupchat")
            await asyncio.sleep(0.5)  # the room echoes; the outbox rows are written by then
        finally:
            await alice.close()

    run(scenario())


def _wait_empty(ops, state: str = "pending", timeout: float = 15) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while ops.get("/deliveries", params={"state": state}).json()["items"]:
        assert time.monotonic() < deadline, ops.get("/deliveries").json()
        time.sleep(0.05)


def test_retries_then_dead_letters(hook_server: ServerProcess, ops) -> None:  # noqa: ANN001
    assert ops.post("/rooms", json={"jid": ROOM}).status_code == 201
    with Receiver(answers=[500, 503, 429]) as flaky, Receiver(answers=[500] * 4) as dead, \
            Receiver(answers=[410]) as gone:  # fmt: skip
        subs = [_subscribe(ops, r.url) for r in (flaky, dead, gone)]
        _say(hook_server, "one")
        requests = flaky.wait(4)
        assert len({r.headers["idempotency-key"] for r in requests}) == 1  # the same delivery
        assert len({r.body for r in requests}) == 1
        dead.wait(4)  # max_attempts = 4 in the fixture
        gone.wait(1)
        _wait_empty(ops)
        letters = ops.get("/deliveries", params={"state": "dead"}).json()["items"]
        by_sub = {row["subscription"]: row for row in letters}
        assert set(by_sub) == {subs[1]["id"], subs[2]["id"]}
        assert by_sub[subs[1]["id"]]["attempts"] == 4
        assert "500" in by_sub[subs[1]["id"]]["last_error"]
        assert by_sub[subs[2]["id"]]["attempts"] == 1  # 410 will not change: no retry
        time.sleep(0.5)
        assert len(dead.requests) == 4 and len(gone.requests) == 1 and len(flaky.requests) == 4
        # The receiver is fixed: the dead letter goes out again with its idempotency key.
        key = by_sub[subs[1]["id"]]["key"]
        assert ops.post(f"/deliveries/{key}/retry").status_code == 200
        assert dead.wait(5)[-1].headers["idempotency-key"] == key
        _wait_empty(ops)
        assert ops.post(f"/deliveries/{key}/retry").status_code == 404
        other = by_sub[subs[2]["id"]]["key"]
        assert ops.delete(f"/deliveries/{other}").status_code == 200
        assert ops.get("/deliveries", params={"state": "dead"}).json()["items"] == []
    for sub in subs:
        ops.delete(f"/subscriptions/{sub['id']}")


@pytest.mark.parametrize("driver", ["sqlite", "postgres"])
def test_restart_with_deliveries_pending(tmp_path, driver: str) -> None:  # noqa: ANN001
    config = "[hooks]\nretry_base = 0.2\nretry_max = 0.4\ntimeout = 1.0\nmax_attempts = 1000\n"
    with contextlib.ExitStack() as stack:
        if driver == "postgres":
            url = stack.enter_context(fresh_database("xmppd_hooks"))
            config += f'[storage]\ndriver = "postgres"\ndsn = "{url}"\n'
        _restart_scenario(start_server(tmp_path, config))


def _restart_scenario(server: ServerProcess) -> None:
    port = free_port()  # nobody listens yet: every attempt is refused
    try:
        with client(server) as ops:
            assert ops.post("/rooms", json={"jid": ROOM}).status_code == 201
            sub = _subscribe(ops, f"http://127.0.0.1:{port}/in")
            _say(server, *[f"m{i}" for i in range(5)])
            pending = ops.get("/deliveries").json()["items"]
            assert len(pending) == 5 and all(row["attempts"] >= 0 for row in pending)
        server.stop()  # SIGTERM with five deliveries in the outbox
        with Receiver(port=port) as receiver:
            server.start()
            requests = receiver.wait(5)
            with client(server) as ops:
                _wait_empty(ops)
                assert ops.get(f"/subscriptions/{sub['id']}").status_code == 200
            time.sleep(0.5)
            bodies = {}
            for request in receiver.requests:
                key = request.headers["idempotency-key"]
                bodies.setdefault(key, set()).add(request.json()["event"]["text"])
            assert len(bodies) == 5 and all(len(texts) == 1 for texts in bodies.values())
            assert {t for texts in bodies.values() for t in texts} == {f"m{i}" for i in range(5)}
            assert len(requests) >= 5
    finally:
        server.stop()


def test_a_hanging_receiver_holds_only_its_own_slots(hook_server: ServerProcess, ops) -> None:  # noqa: ANN001
    room = "hang@conference.localhost"
    assert ops.post("/rooms", json={"jid": room}).status_code == 201
    with Receiver(hang=True) as hang:
        body = {"source": "room", "room": room, "events": ["message"], "provider": "webhook",
                "target": {"url": hang.url}}  # fmt: skip
        sub = ops.post("/subscriptions", json=body).json()

        async def scenario() -> tuple[float, int]:
            bob = await join(hook_server, "bob", room, "Bob", resource="hang")
            alice = await join(hook_server, "alice", room, "Alice", resource="hang")
            try:
                await asyncio.sleep(0.3)
                while not bob.messages.empty():
                    bob.messages.get_nowait()
                start = time.monotonic()
                for i in range(10):
                    alice.send_message(mto=room, mbody=f"h{i}", mtype="groupchat")
                seen = 0
                while seen < 10:
                    if (await bob.next_message(5))["body"].startswith("h"):
                        seen += 1
                return time.monotonic() - start, len(hang.requests)
            finally:
                await alice.close()
                await bob.close()

        elapsed, hung = run(scenario())
        assert elapsed < 3, elapsed  # chat went on while the receiver hung
        if elapsed < 0.9:  # before the first attempt's timeout: only per_target = 4 went out
            assert hung <= 4, hung
        time.sleep(1.5)  # hooks.timeout = 1 in the fixture: the first attempts gave up
        rows = ops.get("/deliveries").json()["items"]
        assert len([r for r in rows if r["subscription"] == sub["id"]]) == 10
        assert any("no answer within" in (r["last_error"] or "") for r in rows)
        assert len(hang.requests) >= 4
        ops.delete(f"/subscriptions/{sub['id']}")
    _wait_empty(ops)  # unsubscribing drops its pending deliveries
