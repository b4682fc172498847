"""POST /login and /logout (docs/channels.md, "Password login") over real sockets: the password
buys a session token the channel socket accepts; guessing is slowed then banned through the
same login throttle as SASL; logout revokes the token. Guessers use 127.0.0.8, owners .9."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator

import pytest
from phx import Phx, http_post
from support import ServerProcess, run

BAN_AFTER, BAN_SECONDS = 4, 3
LOGIN = f"""
window = 60.0
slow_after = 2
delay = 0.2
max_delay = 0.4
ban_after = {BAN_AFTER}
ban_seconds = {BAN_SECONDS}
account_slow_after = 3
exempt = ["127.0.0.1"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("weblogin"), login_config=LOGIN)
    proc.add_user("alice", "alice-secret")
    proc.start()
    yield proc
    proc.stop()


def longpoll_status(server: ServerProcess, token: str) -> dict:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=20)
    query = urllib.parse.urlencode({"token": token, "vsn": "2.0.0"})
    conn.request("GET", f"/socket/longpoll?{query}")
    body = json.loads(conn.getresponse().read())
    conn.close()
    return body


def test_password_login_gives_a_token_the_socket_accepts(server: ServerProcess) -> None:
    status, headers, body = http_post(
        server, "/login", {"username": "alice", "password": "alice-secret"}, source="127.0.0.9"
    )
    assert status == 200 and headers["cache-control"] == "no-store"
    assert body["jid"] == "alice@localhost" and body["exp"] > time.time() + 3600
    token = body["token"]

    async def scenario() -> None:
        phx = await Phx.open(server, token)
        reply = await phx.join("user:alice@localhost")
        assert reply["jid"].startswith("alice@localhost/web-")
        await phx.close()

    run(scenario())
    # renew with the token itself, then log out: the token is refused from then on
    status, _, renewed = http_post(
        server, "/login", None, headers={"Authorization": f"Bearer {token}"}, source="127.0.0.9"
    )
    assert status == 200 and renewed["token"] != token
    status, _, _ = http_post(
        server, "/logout", None, headers={"Authorization": f"Bearer {token}"}, source="127.0.0.9"
    )
    assert status == 204
    assert longpoll_status(server, token)["status"] == 403
    assert longpoll_status(server, renewed["token"])["status"] == 410  # still good: a session


def test_bad_requests_get_the_standard_answer(server: ServerProcess) -> None:
    assert http_post(server, "/login", b"not json")[0] == 400
    assert http_post(server, "/login", {"jid": "alice@localhost"})[0] == 400
    assert http_post(server, "/login", {"jid": "a@elsewhere", "password": "x"})[0] == 400
    answer = http_post(server, "/logout", None)
    assert answer[0] == 401


def test_guessing_is_slowed_then_banned_and_the_owner_still_logs_in(server: ServerProcess) -> None:
    wrong = {"jid": "alice@localhost", "password": "guess"}
    answers = []
    started = time.monotonic()
    for _ in range(BAN_AFTER + 2):
        status, headers, body = http_post(server, "/login", wrong, source="127.0.0.8")
        answers.append((status, headers.get("retry-after"), body))
    took = time.monotonic() - started
    statuses = [a[0] for a in answers]
    assert statuses[:BAN_AFTER] == [401] * BAN_AFTER
    assert answers[0][2] == {"error": "not-authorized"}
    assert statuses[-1] == 429 and int(answers[-1][1]) >= 1
    assert took >= 0.2  # slowed before the ban
    # the right password from the banned address is refused too (no oracle) ...
    right = {"jid": "alice@localhost", "password": "alice-secret"}
    assert http_post(server, "/login", right, source="127.0.0.8")[0] == 429
    # ... but not from elsewhere: the owner is never locked out
    assert http_post(server, "/login", right, source="127.0.0.9")[0] == 200
    time.sleep(BAN_SECONDS + 0.5)
    assert http_post(server, "/login", right, source="127.0.0.8")[0] == 200
