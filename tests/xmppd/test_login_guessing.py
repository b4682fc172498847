"""Password guessing over real sockets (issue 11 item 2; rules in xmppd/throttle.py).

Guessers and owners connect from different loopback addresses (Linux routes all of 127/8 to
lo): 127.0.0.2/.3 over TCP, .4/.5 over BOSH and WebSocket, .6/.7 for host-app tokens. The
throttle is configured small so the whole story (slowed, banned, ban over) takes seconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import re
import time
from collections.abc import Iterator

import pytest
from joserfc import jws
from joserfc.jwk import OctKey
from support import HEADER, RawClient, ServerProcess

SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BOSH = "http://jabber.org/protocol/httpbind"
DELAY, MAX_DELAY, BAN_AFTER, BAN_SECONDS = 0.4, 0.8, 5, 3
SECRET = "the-webmail-shares-this-32-byte-secret"
USERS = {"alice": "alice-secret", "bob": "bob-secret"}
LOGIN = f"""
window = 60.0
slow_after = 2
delay = {DELAY}
max_delay = {MAX_DELAY}
ban_after = {BAN_AFTER}
ban_seconds = {BAN_SECONDS}
account_slow_after = 3
exempt = ["127.0.0.1"]
"""
TOKENS = f"""
[auth.tokens]
[auth.tokens.apps.webmail]
algorithm = "HS256"
key = "{SECRET}"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("guessing"), TOKENS, login_config=LOGIN)
    for user, password in USERS.items():
        proc.add_user(user, password)
    proc.start()
    yield proc
    proc.stop()


# ---- clients ------------------------------------------------------------------------------


def ready_for_auth(server: ServerProcess, source: str) -> RawClient:
    client = RawClient(server, source=source)
    client.starttls()
    client.send(HEADER)
    client.read_until("</stream:features>")
    client.take()
    return client


def read_any(client: RawClient, *markers: bytes, timeout: float = 10) -> bytes:
    """Read until one of the markers arrives; returns (and takes) what was read."""
    deadline = time.monotonic() + timeout
    while not any(marker in client.buffer for marker in markers):
        client.sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = client.sock.recv(65536)
        assert chunk, f"closed before {markers}: {client.buffer!r}"
        client.buffer += chunk
    return client.take()


def plain(client: RawClient, user: str, password: str) -> tuple[bytes, float]:
    """One SASL PLAIN attempt: the answer and how long it took."""
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    started = time.monotonic()
    client.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    answer = read_any(client, b"</failure>", b"<success")
    return answer, time.monotonic() - started


def scram(client: RawClient, user: str, password: str) -> tuple[bytes, float]:
    """One SCRAM-SHA-256 exchange (RFC 5802) as a client: the last answer and the time taken."""
    first_bare = f"n={user},r=guessing-test-nonce"
    started = time.monotonic()
    client.send(
        f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256'>"
        f"{base64.b64encode(b'n,,' + first_bare.encode()).decode()}</auth>"
    )
    out = read_any(client, b"</challenge>", b"</failure>")
    if b"<failure" in out:
        return out, time.monotonic() - started
    server_first = base64.b64decode(re.search(rb"<challenge[^>]*>([^<]+)<", out)[1]).decode()
    fields = dict(part.split("=", 1) for part in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(fields["s"]), int(fields["i"])
    )
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    final_bare = f"c={base64.b64encode(b'n,,').decode()},r={fields['r']}"
    message = f"{first_bare},{server_first},{final_bare}".encode()
    signature = hmac.new(hashlib.sha256(client_key).digest(), message, hashlib.sha256).digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True)))
    final = f"{final_bare},p={proof.decode()}".encode()
    client.send(f"<response xmlns='{SASL}'>{base64.b64encode(final).decode()}</response>")
    answer = read_any(client, b"</failure>", b"</success>")
    return answer, time.monotonic() - started


def wait_for_log(server: ServerProcess, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log_text():
        assert time.monotonic() < deadline, f"no {text!r} in the log"
        time.sleep(0.1)


def bans_logged(server: ServerProcess, address: str) -> tuple[int, int]:
    log = server.log_text()
    return log.count(f"login ban of {address} for"), log.count(f"login ban of {address} ends")


# ---- c2s over TCP -------------------------------------------------------------------------


def test_guesser_slowed_then_banned_while_the_owner_logs_in_at_once(
    server: ServerProcess,
) -> None:
    guesser, owner = "127.0.0.2", "127.0.0.3"
    timings = []
    for _connection in range(2):  # the counts survive reconnecting
        client = ready_for_auth(server, guesser)
        for _attempt in range(2):
            answer, took = plain(client, "alice", "guess")
            assert b"<not-authorized/>" in answer
            timings.append(took)
        client.close()
    # Two failures are free, then each attempt waits DELAY, doubling up to MAX_DELAY.
    assert timings[0] < DELAY and timings[1] < DELAY
    assert timings[2] >= DELAY and timings[3] >= MAX_DELAY
    assert timings[3] > timings[0] + MAX_DELAY / 2

    client = ready_for_auth(server, guesser)
    answer, took = scram(client, "alice", "guess")  # SCRAM counts the same: the fifth failure
    assert took >= MAX_DELAY
    assert b"<not-authorized/>" in answer
    rest = answer + client.read_to_close(timeout=5)  # then the stream error, and the end
    assert b"<policy-violation" in rest and b"too many failed logins" in rest
    client.close()

    refused = RawClient(server, source=guesser)  # new connections: refused at once
    started = time.monotonic()
    data = refused.read_to_close(timeout=5)
    assert b"<policy-violation" in data and b"too many failed logins from your address" in data
    assert time.monotonic() - started < DELAY
    refused.close()
    direct = RawClient(server, port=server.tls_port, source=guesser)
    assert direct.read_to_close(timeout=5) == b""  # direct TLS: closed, nothing to read
    direct.close()

    # The owner, from an address without failures, is not slowed by any of this.
    client = ready_for_auth(server, owner)
    answer, took = scram(client, "alice", USERS["alice"])
    assert b"<success" in answer
    assert took < DELAY, f"the owner waited {took:.2f} s"
    client.close()
    assert "login attempt from 127.0.0.3 waits" not in server.log_text()

    assert bans_logged(server, guesser) == (1, 0)
    wait_for_log(server, f"login ban of {guesser} ends", BAN_SECONDS + 3)
    assert bans_logged(server, guesser) == (1, 1)
    client = ready_for_auth(server, guesser)  # served again, with a fresh count
    answer, took = plain(client, "alice", "guess")
    assert b"<not-authorized/>" in answer and took < DELAY
    client.close()


def test_a_burst_of_parallel_guesses_is_answered_like_a_sequence(server: ServerProcess) -> None:
    """Twenty connections guess at the same moment: no more than about `ban_after` guesses are
    checked; the rest wait their turn and meet the ban."""
    clients = [ready_for_auth(server, "127.0.0.8") for _ in range(20)]
    token = base64.b64encode(b"\0carol\0guess").decode()
    for client in clients:
        client.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    answers = [read_any(c, b"</failure>", b"</stream:stream>") for c in clients]
    for client in clients:
        client.close()
    checked = sum(b"<not-authorized/>" in answer for answer in answers)
    refused = sum(
        b"too many failed logins" in answer and b"<failure" not in answer for answer in answers
    )
    assert checked <= BAN_AFTER + 1, f"{checked} guesses checked"
    assert checked + refused == len(clients)
    assert bans_logged(server, "127.0.0.8") == (1, 0)


def test_an_exempt_address_is_never_slowed_nor_banned(server: ServerProcess) -> None:
    for _connection in range(3):  # 127.0.0.1 is in `exempt`
        client = ready_for_auth(server, "127.0.0.1")
        for _attempt in range(4):
            answer, took = plain(client, "bob", "guess")
            assert b"<not-authorized/>" in answer and took < DELAY
        client.close()
    assert ready_for_auth(server, "127.0.0.1") is not None
    assert "login ban of 127.0.0.1" not in server.log_text()


# ---- the web listener: BOSH and WebSocket ---------------------------------------------------


def http_request(
    server: ServerProcess, source: str, method: str, path: str, body: bytes = b"", **headers: str
) -> tuple[int, dict[str, str], bytes, float]:
    conn = http.client.HTTPConnection(
        "127.0.0.1", server.http_port, timeout=20, source_address=(source, 0)
    )
    started = time.monotonic()
    try:
        conn.request(method, path, body, {k.replace("_", "-"): v for k, v in headers.items()})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    return response.status, dict(response.getheaders()), data, time.monotonic() - started


def bosh_attempt(server: ServerProcess, source: str, user: str, password: str, rid: int):
    """Open a BOSH session and try one PLAIN login in it."""
    created = (
        f"<body xmlns='{BOSH}' xmlns:xmpp='urn:xmpp:xbosh' rid='{rid}' to='localhost' "
        "wait='10' hold='1' ver='1.11' xmpp:version='1.0'/>"
    )
    status, headers, data, _ = http_request(server, source, "POST", "/http-bind", created.encode())
    if status != 200:
        return status, headers, data, 0.0
    sid = re.search(rb"sid='([^']+)'|sid=\"([^\"]+)\"", data)
    sid_text = (sid[1] or sid[2]).decode()
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    auth = (
        f"<body xmlns='{BOSH}' rid='{rid + 1}' sid='{sid_text}'>"
        f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth></body>"
    )
    return http_request(server, source, "POST", "/http-bind", auth.encode())


def test_web_guesser_slowed_then_refused_with_429_owner_logs_in(server: ServerProcess) -> None:
    guesser, owner = "127.0.0.4", "127.0.0.5"
    timings = []
    for n in range(BAN_AFTER):
        status, _, data, took = bosh_attempt(server, guesser, "bob", "guess", 1000 + 10 * n)
        assert status == 200 and b"<not-authorized/>" in data, data
        timings.append(took)
    assert timings[0] < DELAY and timings[-1] >= MAX_DELAY
    assert bans_logged(server, guesser) == (1, 0)

    status, headers, data, took = bosh_attempt(server, guesser, "bob", "guess", 2000)
    assert status == 429 and b"too many failed logins" in data
    assert 0 < int(headers["Retry-After"]) <= BAN_SECONDS
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec_WebSocket_Key": base64.b64encode(b"0123456789abcdef").decode(),
        "Sec_WebSocket_Version": "13",
        "Sec_WebSocket_Protocol": "xmpp",
    }
    status, _, data, _ = http_request(server, guesser, "GET", "/xmpp-websocket", **upgrade)
    assert status == 429 and b"too many failed logins" in data

    status, _, data, took = bosh_attempt(server, owner, "bob", USERS["bob"], 3000)
    assert status == 200 and b"<success" in data, data
    assert took < DELAY


# ---- host-app tokens: /credentials and the JSON channels -----------------------------------


def token_for(user: str, key: str = SECRET) -> str:
    claims = {"sub": user, "aud": "localhost", "exp": int(time.time()) + 60}
    header = {"alg": "HS256", "kid": "webmail"}
    return jws.serialize_compact(header, json.dumps(claims), OctKey.import_key(key), ["HS256"])


def test_refused_tokens_count_as_failures_and_ban_the_address(server: ServerProcess) -> None:
    guesser, owner = "127.0.0.6", "127.0.0.7"
    forged = token_for("alice", "x" * 40)
    timings = []
    for _ in range(BAN_AFTER):
        status, _, data, took = http_request(
            server, guesser, "GET", "/credentials", Authorization=f"Bearer {forged}"
        )
        assert status == 403 and b"token refused: forged" in data
        timings.append(took)
    assert timings[0] < DELAY and timings[-1] >= MAX_DELAY
    assert bans_logged(server, guesser) == (1, 0)

    good = token_for("alice")  # even a valid token is refused from a banned address
    status, headers, data, _ = http_request(
        server, guesser, "GET", "/credentials", Authorization=f"Bearer {good}"
    )
    assert status == 429 and b"too many failed logins" in data and "Retry-After" in headers
    status, _, data, _ = http_request(
        server, guesser, "GET", f"/socket/longpoll?vsn=2.0.0&token={good}"
    )
    assert json.loads(data)["status"] == 403 and "too many failed logins" in data.decode()

    status, _, data, took = http_request(
        server, owner, "GET", "/credentials", Authorization=f"Bearer {good}"
    )
    assert status == 200 and json.loads(data)["jid"] == "alice@localhost"
    assert took < DELAY
