"""InternalAuth over a real SQLite keyval store."""

from __future__ import annotations

import time

import pytest
import trio
from passlib.hash import pbkdf2_sha256, sha512_crypt

from auth.base import AuthBackend, AuthError, NoSuchUser, UserExists
from auth.internal import ACCOUNTS_STORE, InternalAuth, prepare_password
from auth.scram import HASHES, verify_password
from xmppd.storage.sqlite import SQLiteDatabase

FAST = 1_000  # iterations for tests that do not measure anything


@pytest.fixture
async def db(tmp_path):
    database = await SQLiteDatabase.open(tmp_path / "auth.sqlite")
    yield database
    await database.close()


@pytest.fixture
def store(db):
    return db.for_host("example.org").keyval(ACCOUNTS_STORE)


@pytest.fixture
def backend(store):
    return InternalAuth(store, iterations=FAST)


async def test_is_a_scram_backend(backend):
    assert isinstance(backend, AuthBackend)
    assert backend.name == "internal"
    assert backend.supports_scram is True


async def test_lifecycle(backend, store):
    assert not await backend.user_exists("juliet")
    assert await backend.list_users() == []
    before = int(time.time())
    await backend.create_user("juliet", "s3cret")
    assert await backend.user_exists("juliet")
    assert await backend.check_password("juliet", "s3cret")
    assert not await backend.check_password("juliet", "S3cret")
    assert not await backend.check_password("juliet", "")
    assert not await backend.check_password("romeo", "s3cret")
    record = await store.get("juliet")
    assert set(record) == {"scram", "created"}
    assert before <= record["created"] <= int(time.time())
    assert "s3cret" not in repr(record)

    with pytest.raises(UserExists):
        await backend.create_user("juliet", "other")
    assert await backend.check_password("juliet", "s3cret")  # untouched by the refused create

    await backend.set_password("juliet", "n3w")
    assert await backend.check_password("juliet", "n3w")
    assert not await backend.check_password("juliet", "s3cret")
    assert (await store.get("juliet"))["created"] == record["created"]

    await backend.create_user("romeo", "pw")
    assert await backend.list_users() == ["juliet", "romeo"]
    await backend.delete_user("juliet")
    assert not await backend.user_exists("juliet")
    assert not await backend.check_password("juliet", "n3w")
    assert await backend.list_users() == ["romeo"]
    with pytest.raises(NoSuchUser):
        await backend.delete_user("juliet")
    with pytest.raises(NoSuchUser):
        await backend.set_password("juliet", "x")


async def test_hosts_are_separate(db):
    a = InternalAuth(db.for_host("a.example").keyval(ACCOUNTS_STORE), iterations=FAST)
    b = InternalAuth(db.for_host("b.example").keyval(ACCOUNTS_STORE), iterations=FAST)
    await a.create_user("user", "pw-a")
    assert not await b.user_exists("user")
    await b.create_user("user", "pw-b")
    assert await a.check_password("user", "pw-a")
    assert not await a.check_password("user", "pw-b")


async def test_scram_credentials_for_each_hash(backend):
    await backend.create_user("juliet", "s3cret")
    salts = set()
    for hash_name in HASHES:
        creds = await backend.get_scram_credentials("juliet", hash_name)
        assert creds is not None
        assert creds.iterations == FAST
        assert verify_password(hash_name, "s3cret", creds)
        assert not verify_password(hash_name, "wrong", creds)
        salts.add(creds.salt)
    assert len(salts) == len(HASHES)
    assert await backend.get_scram_credentials("romeo", "SHA-256") is None
    with pytest.raises(ValueError):
        await backend.get_scram_credentials("juliet", "MD5")


async def test_default_iterations(store):
    backend = InternalAuth(store)
    await backend.create_user("juliet", "pw")
    creds = await backend.get_scram_credentials("juliet", "SHA-1")
    assert creds is not None and creds.iterations == 10_000


async def test_refuses_bad_passwords(backend):
    with pytest.raises(ValueError, match="empty"):
        await backend.create_user("juliet", "")
    with pytest.raises(ValueError, match="controls"):
        await backend.create_user("juliet", "a\x00b")
    assert not await backend.user_exists("juliet")
    await backend.create_user("juliet", "ok")
    with pytest.raises(ValueError, match="empty"):
        await backend.set_password("juliet", "")
    assert await backend.check_password("juliet", "ok")
    assert not await backend.check_password("juliet", "a\x00b")


async def test_unicode_password_normalisation(backend):
    composed, decomposed = "caf\u00e9-p\u00e4ss", "cafe\u0301-pa\u0308ss"
    await backend.create_user("juliet", decomposed)
    assert await backend.check_password("juliet", composed)
    assert await backend.check_password("juliet", decomposed)
    creds = await backend.get_scram_credentials("juliet", "SHA-256")
    # SCRAM keys are derived from the NFC form, which the SASL layer sends after preparing.
    assert verify_password("SHA-256", composed, creds)
    # Non-ASCII spaces map to ASCII space; fullwidth letters are NOT folded by OpaqueString.
    await backend.create_user("romeo", "correct horse")
    assert await backend.check_password("romeo", "correct\u00a0horse")
    await backend.create_user("nurse", "\uff50\uff57")  # fullwidth "pw"
    assert await backend.check_password("nurse", "\uff50\uff57")
    assert not await backend.check_password("nurse", "pw")
    assert prepare_password("\uff50\uff57") == "\uff50\uff57"


@pytest.mark.parametrize("hasher", [pbkdf2_sha256, sha512_crypt], ids=lambda h: h.name)
async def test_legacy_hash_login_upgrades(backend, store, hasher):
    await store.set("imported", {"password_hash": hasher.hash("l3gacy"), "created": 1})
    assert await backend.user_exists("imported")
    assert await backend.get_scram_credentials("imported", "SHA-256") is None  # no keys yet
    assert not await backend.check_password("imported", "wrong")
    assert "password_hash" in await store.get("imported")  # a failed login changes nothing

    assert await backend.check_password("imported", "l3gacy")
    record = await store.get("imported")
    assert "password_hash" not in record
    assert record["created"] == 1
    for hash_name in HASHES:
        creds = await backend.get_scram_credentials("imported", hash_name)
        assert creds is not None and verify_password(hash_name, "l3gacy", creds)
    assert await backend.check_password("imported", "l3gacy")
    assert not await backend.check_password("imported", "wrong")


async def test_unverifiable_legacy_hash_is_a_backend_error(backend, store):
    await store.set("imported", {"password_hash": "$unknown$scheme$abc"})
    with pytest.raises(AuthError, match="imported password hash"):
        await backend.check_password("imported", "pw")


async def test_storage_failure_is_auth_error(tmp_path):
    db = await SQLiteDatabase.open(tmp_path / "gone.sqlite")
    backend = InternalAuth(db.for_host("h").keyval(ACCOUNTS_STORE), iterations=FAST)
    await db.close()
    with pytest.raises(AuthError, match="account store unavailable"):
        await backend.user_exists("juliet")
    with pytest.raises(AuthError):
        await backend.get_scram_credentials("juliet", "SHA-1")


async def test_concurrent_creates_one_wins(backend):
    outcomes: list[str] = []

    async def create(password: str) -> None:
        try:
            await backend.create_user("juliet", password)
            outcomes.append(password)
        except UserExists:
            outcomes.append("exists")

    async with trio.open_nursery() as nursery:
        for pw in ("one", "two", "three"):
            nursery.start_soon(create, pw)
    winners = [o for o in outcomes if o != "exists"]
    assert len(winners) == 1
    assert await backend.check_password("juliet", winners[0])


async def test_slow_kdf_does_not_block_the_loop(store):
    backend = InternalAuth(store, iterations=200_000)
    gaps: list[float] = []
    done = trio.Event()

    async def ticker() -> None:
        last = trio.current_time()
        while not done.is_set():
            await trio.sleep(0.005)
            now = trio.current_time()
            gaps.append(now - last)
            last = now

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        start = trio.current_time()
        await backend.create_user("juliet", "slow")
        elapsed = trio.current_time() - start
        done.set()
    assert elapsed > 0.1  # it really was slow...
    assert len(gaps) > 10  # ...and the loop kept ticking meanwhile
    assert max(gaps) < 0.1
