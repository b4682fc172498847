"""keyval and map stores (sql.py), run on both drivers through the `db` fixture."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from xmppd.storage import StorageError

REPO = Path(__file__).resolve().parents[3]


async def test_keyval_crud_and_unicode(db):
    store = db.for_host("example.org").keyval("accounts")
    assert await store.get("juliet") is None
    doc = {"name": "Jülïet ☃ 𝄞 中文", "n": [1, 2.5, None, True], "nested": {"é": "e\u0301"}}
    await store.set("juliet", doc)
    assert await store.get("juliet") == doc
    await store.set("juliet", {"v": 2})
    assert await store.get("juliet") == {"v": 2}
    await store.set("romeo", {"v": 3})
    assert await store.users() == ["juliet", "romeo"]
    await store.set("juliet", None)
    assert await store.get("juliet") is None
    assert await store.users() == ["romeo"]
    await store.set("nobody", None)  # deleting what is absent is not an error


async def test_keys_sort_by_code_point(db):
    # SQLite compares bytes; PostgreSQL columns are COLLATE "C" so both agree.
    store = db.for_host("h").keyval("s")
    names = ["zoë", "Zed", "émile", "adam", "Émile", "_x", "ß"]
    for name in names:
        await store.set(name, {})
    assert await store.users() == sorted(names)


async def test_keyval_refuses_non_documents(db):
    store = db.for_host("example.org").keyval("accounts")
    with pytest.raises(TypeError):
        await store.set("juliet", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await store.set("juliet", {"bytes": b"x"})
    assert await store.get("juliet") is None


async def test_map_crud(db):
    roster = db.for_host("example.org").map("roster")
    assert await roster.get("juliet", "romeo@example.net") is None
    assert await roster.get_all("juliet") == {}
    await roster.set("juliet", "romeo@example.net", {"name": "Roméo", "groups": ["Монтекки"]})
    await roster.set("juliet", "nurse@example.org", {"name": "Nurse"})
    await roster.set("romeo", "juliet@example.org", {"name": "J"})
    assert await roster.get("juliet", "romeo@example.net") == {
        "name": "Roméo",
        "groups": ["Монтекки"],
    }
    assert await roster.get_all("juliet") == {
        "nurse@example.org": {"name": "Nurse"},
        "romeo@example.net": {"name": "Roméo", "groups": ["Монтекки"]},
    }
    assert list(await roster.get_all("juliet")) == ["nurse@example.org", "romeo@example.net"]
    await roster.set("juliet", "nurse@example.org", None)
    assert list(await roster.get_all("juliet")) == ["romeo@example.net"]
    await roster.delete_user("juliet")
    assert await roster.get_all("juliet") == {}
    assert await roster.get_all("romeo") == {"juliet@example.org": {"name": "J"}}


async def test_map_update_reads_and_writes_in_one_call(db):
    counts = db.for_host("example.org").map("unread")

    def plus_one(old):
        return {"count": (old or {"count": 0})["count"] + 1}

    assert await counts.update("juliet", "romeo@example.net", plus_one) == (None, {"count": 1})
    assert await counts.update("juliet", "romeo@example.net", plus_one) == (
        {"count": 1},
        {"count": 2},
    )
    assert await counts.get("juliet", "romeo@example.net") == {"count": 2}
    # Concurrent updates of one key share commits but never lose an increment.
    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(counts.update, "juliet", "romeo@example.net", plus_one)
    assert await counts.get("juliet", "romeo@example.net") == {"count": 22}
    assert await counts.update("juliet", "romeo@example.net", lambda old: None) == (
        {"count": 22},
        None,
    )
    assert await counts.get_all("juliet") == {}
    with pytest.raises(TypeError):
        await counts.update("juliet", "x", lambda old: ["not", "a", "dict"])
    assert await counts.get_all("juliet") == {}


async def test_map_users_with_key(db):
    """Whose rosters name an account (deletion removes it from all of them): host and store
    scoped like everything else."""
    roster = db.for_host("example.org").map("roster")
    await roster.set("juliet", "romeo@example.net", {"name": "R"})
    await roster.set("nurse", "romeo@example.net", {"name": "R"})
    await roster.set("nurse", "tybalt@example.net", {})
    await db.for_host("other.example").map("roster").set("x", "romeo@example.net", {})
    await db.for_host("example.org").map("private").set("y", "romeo@example.net", {})
    assert await roster.users_with_key("romeo@example.net") == ["juliet", "nurse"]
    assert await roster.users_with_key("nobody@example.net") == []


async def test_host_and_store_isolation(db):
    a = db.for_host("a.example")
    b = db.for_host("b.example")
    await a.keyval("accounts").set("user", {"host": "a"})
    await b.keyval("accounts").set("user", {"host": "b"})
    await a.keyval("private").set("user", {"store": "private"})
    assert await a.keyval("accounts").get("user") == {"host": "a"}
    assert await b.keyval("accounts").get("user") == {"host": "b"}
    assert await a.keyval("private").get("user") == {"store": "private"}
    assert await b.keyval("private").get("user") is None
    assert await a.keyval("accounts").users() == ["user"]
    await a.keyval("accounts").set("user", None)
    assert await b.keyval("accounts").get("user") == {"host": "b"}

    await a.map("roster").set("user", "k", {"host": "a"})
    await b.map("roster").set("user", "k", {"host": "b"})
    await a.map("other").set("user", "k", {"store": "other"})
    await a.map("roster").delete_user("user")
    assert await a.map("roster").get_all("user") == {}
    assert await b.map("roster").get("user", "k") == {"host": "b"}
    assert await a.map("other").get("user", "k") == {"store": "other"}


async def test_reopen_reads_back(backend):
    db = await backend.open()
    await db.for_host("h").keyval("s").set("u", {"v": "ünï"})
    await db.for_host("h").map("m").set("u", "k", {"v": 1})
    await db.close()
    db = await backend.open()
    try:
        assert await db.for_host("h").keyval("s").get("u") == {"v": "ünï"}
        assert await db.for_host("h").map("m").get_all("u") == {"k": {"v": 1}}
    finally:
        await db.close()


async def test_closed_database_raises(backend):
    db = await backend.open()
    store = db.for_host("h").keyval("s")
    await db.close()
    await db.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        await store.get("u")


async def test_concurrent_writers(db):
    store = db.for_host("h").map("m")
    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(store.set, "u", f"k{i:02}", {"i": i})
    assert await store.get_all("u") == {f"k{i:02}": {"i": i} for i in range(50)}


async def test_durable_commit_settings(db, backend):
    if backend.driver == "sqlite":
        pragmas = await db.run(
            "pragmas",
            lambda tx: [
                tx.rows(f"PRAGMA {name}")[0][0] for name in ("journal_mode", "synchronous")
            ],
        )
        assert pragmas == ["wal", 2]  # 2 = FULL: the WAL is fsynced at every commit
    else:
        setting = await db.run("show", lambda tx: tx.rows("SHOW synchronous_commit")[0][0])
        fsync = await db.run("show", lambda tx: tx.rows("SHOW fsync")[0][0])
        assert (setting, fsync) == ("on", "on")


CHILD = textwrap.dedent(
    """
    import sys, trio
    from xmppd.storage import open_database

    async def main():
        db = await open_database(".", driver=sys.argv[1], dsn=sys.argv[2])
        await db.for_host("h").keyval("s").set("u", {"v": "survives"})
        print("written", flush=True)
        await trio.sleep_forever()

    trio.run(main)
    """
)


def test_write_survives_sigkill(backend):
    """Once `set` returned, killing the process loses nothing (nothing waits for a flush)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, backend.driver, backend.dsn],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "written"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL

    async def read_back():
        db = await backend.open()
        try:
            return await db.for_host("h").keyval("s").get("u")
        finally:
            await db.close()

    assert trio.run(read_back) == {"v": "survives"}


async def test_map_replace_is_compare_and_set(db):
    store = db.for_host("h").map("roster")
    absent = lambda stored: stored is None  # noqa: E731
    assert await store.replace("u", "k", absent, {"n": 1})
    assert not await store.replace("u", "k", absent, {"n": 99})  # there now: refused
    assert await store.get("u", "k") == {"n": 1}
    assert not await store.replace("u", "k", lambda s: s == {"n": 0}, {"n": 2})
    assert await store.replace("u", "k", lambda s: s == {"n": 1}, {"n": 2})
    assert await store.replace("u", "k", lambda s: s == {"n": 2}, None)  # a delete
    assert await store.get("u", "k") is None


async def test_map_replace_loses_no_concurrent_change(db):
    """Read-modify-write from many tasks at once (on PostgreSQL: several connections, the
    way several nodes write): every increment survives."""
    store = db.for_host("h").map("counters")
    await store.set("u", "k", {"n": 0})
    retries = 0

    async def increment() -> None:
        nonlocal retries
        while True:
            seen = await store.get("u", "k")
            await trio.sleep(0)  # let the others read the same value
            if await store.replace("u", "k", lambda s, seen=seen: s == seen, {"n": seen["n"] + 1}):
                return
            retries += 1

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(increment)
    assert await store.get("u", "k") == {"n": 20}
    assert retries > 0  # the race happened, and was caught


async def test_map_update_loses_no_concurrent_first_write(backend, db):
    """First writes of one absent key from two nodes at once: the row lock cannot hold a row
    that is not there yet, so the losing insert must read the winner's row and change that."""
    other = await backend.open()  # a second node on the same database

    def plus_one(old):
        return {"count": (old or {"count": 0})["count"] + 1}

    try:
        for round_no in range(10):
            key = f"fresh{round_no}"
            async with trio.open_nursery() as nursery:
                for node in (db, other) * 3:
                    nursery.start_soon(node.for_host("h").map("unread").update, "u", key, plus_one)
            assert await db.for_host("h").map("unread").get("u", key) == {"count": 6}
    finally:
        await other.close()
