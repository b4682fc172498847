"""Host-application tokens: every refusal, each algorithm, and the credentials exchange with a
real XMPP login afterwards."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from joserfc import jwe, jws
from joserfc.jwk import OctKey, OKPKey, RSAKey
from support import ServerProcess, connect, run

from auth.base import NoSuchUser
from auth.internal import InternalAuth
from auth.tokens import CredentialStore, TokenAuth, TokenError, TokenVerifier
from xmppd.storage import open_database

SECRET = "the-webmail-shares-this-32-byte-secret"
AES = "fedcba9876543210"
RSA = RSAKey.generate_key(2048)
ED = OKPKey.generate_key("Ed25519")
NOW = 1_700_000_000


def settings(tmp_path) -> dict:
    rsa_pem, ed_pem = tmp_path / "rsa.pem", tmp_path / "ed.pem"
    rsa_pem.write_bytes(RSA.as_pem(private=False))
    ed_pem.write_bytes(ED.as_pem(private=False))
    return {
        "leeway": 0,
        "max_lifetime": 3600,
        "apps": {
            "webmail": {"algorithm": "HS256", "key": SECRET},
            "planga": {"algorithm": "A128GCMKW", "key": AES, "audience": "chat"},
            "intranet": {"algorithm": "RS256", "key_file": str(rsa_pem)},
            "edge": {"algorithm": "EdDSA", "key_file": str(ed_pem), "domain": "example.org"},
        },
    }


def claims(**extra: object) -> dict:
    return {"sub": "alice", "aud": "localhost", "exp": NOW + 60, **extra}


def signed(body: dict, key: object = None, alg: str = "HS256", kid: str | None = "webmail") -> str:
    header = {"alg": alg, **({"kid": kid} if kid else {})}
    key = key or OctKey.import_key(SECRET)
    return jws.serialize_compact(header, json.dumps(body), key, algorithms=[alg])


def encrypted(body: dict, key: str = AES) -> str:
    header = {"alg": "A128GCMKW", "enc": "A128GCM"}
    octets = OctKey.import_key(key.encode())
    return jwe.encrypt_compact(
        header, json.dumps(body), octets, algorithms=["A128GCMKW", "A128GCM"]
    )


@pytest.fixture
def verifier(tmp_path) -> TokenVerifier:
    return TokenVerifier(settings(tmp_path), "localhost")


def refused(verifier: TokenVerifier, token: str, now: float = NOW) -> str:
    with pytest.raises(TokenError) as info:
        verifier.verify(token, now=now)
    return info.value.reason


def test_each_algorithm_opens_a_session(verifier: TokenVerifier) -> None:
    got = verifier.verify(signed(claims(name="Alice", rooms=["r@conference.localhost"])), now=NOW)
    assert (got.app, got.jid, got.name, got.role) == ("webmail", "alice@localhost", "Alice", "user")
    assert got.allows("room:r@conference.localhost") and got.allows("user:alice@localhost")
    assert not got.allows("room:other@conference.localhost")
    assert not got.allows("user:bob@localhost")
    planga = verifier.verify(encrypted(claims(aud="chat")), now=NOW)
    assert planga.app == "planga"
    rsa = verifier.verify(signed(claims(), RSA, "RS256", kid=None), now=NOW)
    assert rsa.app == "intranet"
    with pytest.warns(Warning):  # joserfc warns when signing with the name EdDSA
        ed_token = signed(claims(sub="bo"), ED, "EdDSA", "edge")
    ed = verifier.verify(ed_token, now=NOW)
    assert ed.jid == "bo@example.org"
    ed25519 = signed(claims(aud="localhost"), ED, "Ed25519", "edge")  # RFC 9864's name
    assert verifier.verify(ed25519, now=NOW).app == "edge"


def test_expired_and_replayed_after_expiry(verifier: TokenVerifier, caplog) -> None:
    token = signed(claims())
    assert verifier.verify(token, now=NOW + 59).jid == "alice@localhost"  # used once, in time
    with caplog.at_level(logging.WARNING, "xmppd.tokens"):
        assert refused(verifier, token, now=NOW + 61) == "expired"  # replayed afterwards
    assert "refused a host-app token: expired" in caplog.text
    assert refused(verifier, signed({"sub": "alice", "aud": "localhost"})) == "bad-claims"


def test_forged_tokens(verifier: TokenVerifier) -> None:
    forged = signed(claims(), OctKey.import_key("not-the-webmail-secret-but-as-long!!"))
    assert refused(verifier, forged) == "forged"
    header, payload, signature = signed(claims()).split(".")
    tampered = signed(claims(sub="admin")).split(".")[1]
    assert refused(verifier, f"{header}.{tampered}.{signature}") in ("forged",)
    assert refused(verifier, encrypted(claims(aud="chat"), key="0000000000000000")) == (
        "unknown-key"
    )
    none_alg = signed(claims()).split(".")
    assert refused(verifier, "eyJhbGciOiJub25lIn0." + none_alg[1] + ".") == "unknown-key"


def test_wrong_audience_and_unknown_key(verifier: TokenVerifier) -> None:
    assert refused(verifier, signed(claims(aud="someone-else"))) == "wrong-audience"
    assert refused(verifier, encrypted(claims())) == "wrong-audience"  # planga's aud is "chat"
    assert refused(verifier, signed(claims(), kid="stranger")) == "unknown-key"
    other = RSAKey.generate_key(2048)
    assert refused(verifier, signed(claims(), other, "RS256", kid=None)) == "unknown-key"
    assert refused(verifier, "not.a.token.at.all.really") == "malformed"
    assert refused(verifier, "garbage") == "malformed"


def test_claim_checks(verifier: TokenVerifier) -> None:
    assert refused(verifier, signed(claims(exp=NOW + 7200))) == "too-long-lived"
    assert refused(verifier, signed(claims(nbf=NOW + 30))) == "not-yet-valid"
    assert refused(verifier, signed(claims(sub="alice@elsewhere.org"))) == "bad-claims"
    assert refused(verifier, signed(claims(role="admin"))) == "bad-claims"
    assert refused(verifier, signed(claims(topics="room:*"))) == "bad-claims"


def raw_signed(payload: str) -> str:
    """A token whose payload is this exact text (JSON that json.dumps would never write)."""
    key = OctKey.import_key(SECRET)
    return jws.serialize_compact({"alg": "HS256", "kid": "webmail"}, payload, key)


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
def test_non_finite_numeric_dates(verifier: TokenVerifier, claim: str, value: str) -> None:
    body = json.dumps({**claims(), claim: 12345}).replace(": 12345", f": {value}")
    reason = "malformed" if value.strip("-") in ("NaN", "Infinity") else "bad-claims"
    assert refused(verifier, raw_signed(body)) == reason  # JSON has no NaN; 1e400 is inf


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
@pytest.mark.parametrize(
    "value",
    [True, "1700000060", 10**400, 1e300, -(10**20), -1, [NOW], None],
    ids=["bool", "string", "huge-int", "huge-float", "very-negative", "negative", "list", "null"],
)
def test_numeric_dates_must_be_plausible_numbers(
    verifier: TokenVerifier, claim: str, value: object
) -> None:
    body = json.dumps({**claims(), claim: value})
    assert refused(verifier, raw_signed(body)) == "bad-claims"


def test_nan_exp_never_expires_no_more(verifier: TokenVerifier) -> None:
    body = json.dumps(claims()).replace(f'"exp": {NOW + 60}', '"exp": NaN')
    assert "NaN" in body
    assert refused(verifier, raw_signed(body), now=NOW + 10**9) == "malformed"


def test_iat_cannot_stretch_the_lifetime(verifier: TokenVerifier) -> None:
    ten_years = NOW + 10 * 365 * 86400
    assert refused(verifier, signed(claims(exp=ten_years, iat=ten_years - 10))) == "not-yet-valid"
    # max_lifetime counts from now, whatever iat says
    assert refused(verifier, signed(claims(exp=NOW + 3600 + 30, iat=NOW + 30))) == (
        "too-long-lived"
    )
    assert refused(verifier, signed(claims(exp=NOW + 3601))) == "too-long-lived"
    assert verifier.verify(signed(claims(exp=NOW + 3590, iat=NOW - 10)), now=NOW).exp == NOW + 3590
    # nor does a past iat: a token lives at most max_lifetime from its iat too, so revoking what
    # was issued before a moment is over max_lifetime later
    assert refused(verifier, signed(claims(exp=NOW + 60, iat=NOW - 3600))) == "too-long-lived"


def test_iat_in_the_future_within_the_leeway(tmp_path) -> None:
    verifier = TokenVerifier({**settings(tmp_path), "iat_leeway": 60}, "localhost")
    assert verifier.verify(signed(claims(iat=NOW + 59)), now=NOW).jid == "alice@localhost"
    assert refused(verifier, signed(claims(iat=NOW + 61))) == "not-yet-valid"
    strict = TokenVerifier({**settings(tmp_path), "iat_leeway": 0}, "localhost")
    assert refused(strict, signed(claims(iat=NOW + 1))) == "not-yet-valid"


def test_one_time_passwords_expire_and_work_once() -> None:
    store = CredentialStore(lifetime=60)
    first = store.issue("alice@localhost", now=0)
    second = store.issue("alice@localhost", now=0)
    assert not store.consume("alice@localhost", "guess", now=1)
    assert store.consume("alice@localhost", first, now=1)
    assert not store.consume("alice@localhost", first, now=2)  # one login only
    assert not store.consume("alice@localhost", second, now=61)  # expired


def test_revoked_by_jti_or_user(verifier: TokenVerifier) -> None:
    one, two = signed(claims(jti="t-1")), signed(claims(jti="t-2"))
    verifier.revocations.add_jti("t-1", until=NOW + 60)
    assert refused(verifier, one) == "revoked"
    assert verifier.verify(two, now=NOW).jti == "t-2"
    assert verifier.verify(one, now=NOW + 60).jti == "t-1"  # the entry is over at its until
    # every token of the user issued before the moment, with iat or without (then issued counts
    # as exp - max_lifetime: it may have been); later ones and other users' pass
    verifier.revocations.add_user("alice@localhost", before=NOW, until=NOW + 3600)
    assert refused(verifier, signed(claims(iat=NOW - 1))) == "revoked"
    assert refused(verifier, signed(claims())) == "revoked"
    assert verifier.verify(signed(claims(iat=NOW)), now=NOW).jid == "alice@localhost"
    assert verifier.verify(signed(claims(sub="bob")), now=NOW).jid == "bob@localhost"
    assert verifier.revocations.prune(NOW + 3600) == (["t-1"], ["alice@localhost"])
    assert verifier.verify(signed(claims(iat=NOW - 1)), now=NOW).jid == "alice@localhost"


def test_one_time_passwords_live_no_longer_than_their_token() -> None:
    store = CredentialStore(lifetime=60)
    short = store.issue("alice@localhost", now=0, ttl=5, jti="a")
    assert not store.consume("alice@localhost", short, now=6)
    first = store.issue("alice@localhost", now=0, jti="a")
    second = store.issue("alice@localhost", now=0, jti="b")
    third = store.issue("bob@localhost", now=0, jti="a")
    assert store.revoke(jti="a") == 2
    assert not store.consume("alice@localhost", first, now=1)
    assert not store.consume("bob@localhost", third, now=1)
    assert store.revoke(user="alice@localhost") == 1
    assert not store.consume("alice@localhost", second, now=1)


async def test_users_the_apps_vouch_for_exist_until_deleted(tmp_path) -> None:
    db = await open_database(tmp_path)
    storage = db.for_host("localhost")
    inner = InternalAuth(storage.keyval("accounts"), iterations=4096)

    def token_auth() -> TokenAuth:  # a fresh one: as after a restart
        return TokenAuth(inner, CredentialStore(), "localhost", storage.keyval("token_users"))

    try:
        auth = token_auth()
        assert not await auth.user_exists("tom")
        await auth.vouch("tom")
        assert await auth.user_exists("tom")
        auth = token_auth()
        assert await auth.user_exists("tom")  # durable
        await auth.delete_user("tom")
        assert not await auth.user_exists("tom") and not await token_auth().user_exists("tom")
        with pytest.raises(NoSuchUser):
            await auth.delete_user("tom")
        # A token-issued password logging in vouches for its user too.
        secret = auth.store.issue("ann@localhost")
        assert await auth.check_password("ann", secret)
        assert await token_auth().user_exists("ann")
        # An account of a vouched-for name goes with it.
        await inner.create_user("bea", "a-password")
        await auth.vouch("bea")
        await auth.delete_user("bea")
        assert not await token_auth().user_exists("bea")
    finally:
        await db.close()


def test_revoked_one_time_passwords_stop_working() -> None:
    store = CredentialStore(lifetime=60)
    issued = store.issue("alice@localhost", now=0)
    other = store.issue("bob@localhost", now=0)
    store.revoke(user="alice@localhost")
    assert not store.consume("alice@localhost", issued, now=1)
    assert store.consume("bob@localhost", other, now=1)


# ---- over HTTP, against a real server ---------------------------------------------------------


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    extra = f"""
[auth.tokens]
leeway = 0.0
[auth.tokens.apps.webmail]
algorithm = "HS256"
key = "{SECRET}"
"""
    server = ServerProcess(tmp_path_factory.mktemp("tokens"), extra_config=extra)
    server.add_user("mailuser", "the-real-password")
    server.start()
    yield server
    server.stop()


def fetch(web: ServerProcess, path: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{web.http_port}{path}")
    request.add_header("Accept", "application/json, text/javascript")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def live(**extra: object) -> dict:
    return {"sub": "mailuser", "aud": "localhost", "exp": int(time.time()) + 60, **extra}


def test_refusals_over_http_are_clear_and_logged(web: ServerProcess) -> None:
    cases = {
        "expired": signed({**live(), "exp": int(time.time()) - 5}),
        "forged": signed(live(), OctKey.import_key("x" * 40)),
        "wrong-audience": signed(live(aud="evil.example")),
        "unknown-key": signed(live(), kid="nobody"),
    }
    for reason, token in cases.items():
        status, text = fetch(web, "/credentials", token)
        assert status == 403 and f"token refused: {reason}" in text, (reason, text)
        status, text = fetch(web, f"/socket/longpoll?vsn=2.0.0&token={token}")
        assert status == 200 and json.loads(text)["status"] == 403
    assert fetch(web, "/credentials")[0] == 401
    log = web.log_text()
    for reason in cases:
        assert f"refused a host-app token from 127.0.0.1: {reason}" in log


def test_a_token_replayed_after_expiry_is_refused(web: ServerProcess) -> None:
    token = signed({**live(), "exp": int(time.time()) + 2})
    assert fetch(web, "/credentials", token)[0] == 200
    time.sleep(3.1)  # nothing to await: the token's own clock runs out
    status, text = fetch(web, "/credentials", token)
    assert status == 403 and "expired" in text


def test_credentials_exchange_then_a_real_xmpp_login(web: ServerProcess) -> None:
    status, text = fetch(web, "/credentials?token=" + signed(live()))  # Converse.js: a plain GET
    assert status == 200
    answer = json.loads(text)
    assert answer["jid"] == "mailuser@localhost" and answer["password"] != "the-real-password"

    async def scenario() -> None:
        client = await connect(
            web, "mailuser", "webmail", password=answer["password"], mech="PLAIN"
        )
        assert str(client.boundjid) == "mailuser@localhost/webmail"
        await client.close()
        with pytest.raises(PermissionError):  # one login per password
            await connect(web, "mailuser", "again", password=answer["password"], mech="PLAIN")
        real = await connect(web, "mailuser", "desk", password="the-real-password")
        await real.close()

    run(scenario())
    assert "issued a one-time XMPP password for mailuser@localhost" in web.log_text()
    guest = signed(live(role="guest"))
    assert fetch(web, "/credentials", guest)[0] == 403


def test_a_password_change_or_a_deletion_voids_one_time_passwords(web: ServerProcess) -> None:
    web.add_user("otpuser", "first-password")  # through the running server's admin socket

    def issue() -> str:
        status, text = fetch(web, "/credentials", signed(live(sub="otpuser")))
        assert status == 200, text
        return json.loads(text)["password"]

    async def refused(password: str) -> None:
        with pytest.raises(PermissionError):
            await connect(web, "otpuser", "otp", password=password, mech="PLAIN")

    issued = issue()
    changed = web.cli("passwd", "otpuser@localhost", "--password", "second-password")
    assert changed.returncode == 0 and "via the running server" in changed.stdout
    run(refused(issued))
    issued = issue()
    assert web.cli("deluser", "otpuser@localhost").returncode == 0
    run(refused(issued))
