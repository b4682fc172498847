"""SQLite driver against real database files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from xmppd.storage import StorageError, open_database
from xmppd.storage.sqlite import LATEST_VERSION, SQLiteDatabase

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
async def db(tmp_path):
    database = await SQLiteDatabase.open(tmp_path / "db" / "xmppd.sqlite")
    yield database
    await database.close()


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


async def test_keyval_refuses_non_documents(db):
    store = db.for_host("example.org").keyval("accounts")
    with pytest.raises(TypeError):
        await store.set("juliet", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await store.set("juliet", {"bytes": b"x"})


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
    await roster.set("juliet", "nurse@example.org", None)
    assert list(await roster.get_all("juliet")) == ["romeo@example.net"]
    await roster.delete_user("juliet")
    assert await roster.get_all("juliet") == {}
    assert await roster.get_all("romeo") == {"juliet@example.org": {"name": "J"}}


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


async def test_reopen_reads_back(tmp_path):
    path = tmp_path / "x.sqlite"
    db = await SQLiteDatabase.open(path)
    await db.for_host("h").keyval("s").set("u", {"v": "ünï"})
    await db.for_host("h").map("m").set("u", "k", {"v": 1})
    await db.close()
    db = await SQLiteDatabase.open(path)
    try:
        assert await db.for_host("h").keyval("s").get("u") == {"v": "ünï"}
        assert await db.for_host("h").map("m").get_all("u") == {"k": {"v": 1}}
    finally:
        await db.close()


async def test_durability_pragmas(db):
    def pragmas(conn: sqlite3.Connection) -> tuple[str, int, int]:
        return (
            conn.execute("PRAGMA journal_mode").fetchone()[0],
            conn.execute("PRAGMA synchronous").fetchone()[0],
            conn.execute("PRAGMA busy_timeout").fetchone()[0],
        )

    mode, sync, busy = await db._run("pragmas", pragmas)
    assert (mode, sync) == ("wal", 2)  # 2 = FULL
    assert busy > 0


async def test_closed_database_raises(tmp_path):
    db = await SQLiteDatabase.open(tmp_path / "c.sqlite")
    store = db.for_host("h").keyval("s")
    await db.close()
    await db.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        await store.get("u")


async def test_concurrent_writers_serialised(db):
    store = db.for_host("h").map("m")
    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(store.set, "u", f"k{i:02}", {"i": i})
    assert await store.get_all("u") == {f"k{i:02}": {"i": i} for i in range(50)}


CHILD = textwrap.dedent(
    """
    import sys, trio
    from xmppd.storage.sqlite import SQLiteDatabase

    async def main():
        db = await SQLiteDatabase.open(sys.argv[1])
        await db.for_host("h").keyval("s").set("u", {"v": "survives"})
        print("written", flush=True)
        await trio.sleep_forever()

    trio.run(main)
    """
)


def test_write_survives_sigkill(tmp_path):
    path = tmp_path / "k.sqlite"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, env=env
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
        db = await SQLiteDatabase.open(path)
        try:
            return await db.for_host("h").keyval("s").get("u")
        finally:
            await db.close()

    assert trio.run(read_back) == {"v": "survives"}


# -- migrations and errors ----------------------------------------------------------------------


def schema_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]


async def test_fresh_database_gets_latest_version(tmp_path):
    path = tmp_path / "fresh.sqlite"
    db = await SQLiteDatabase.open(path)
    await db.close()
    assert LATEST_VERSION >= 1
    assert schema_version(path) == LATEST_VERSION
    db = await SQLiteDatabase.open(path)  # reopening an up-to-date file changes nothing
    await db.close()
    assert schema_version(path) == LATEST_VERSION


async def test_newer_schema_refused(tmp_path):
    path = tmp_path / "newer.sqlite"
    db = await SQLiteDatabase.open(path)
    await db.for_host("h").keyval("s").set("u", {"keep": True})
    await db.close()
    newer = LATEST_VERSION + 5
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (newer,))
    conn.close()
    message = (
        f"database schema version {newer} is newer than this xmppd "
        f"(knows up to {LATEST_VERSION}); upgrade xmppd"
    )
    with pytest.raises(StorageError) as excinfo:
        await SQLiteDatabase.open(path)
    assert str(excinfo.value) == message
    assert schema_version(path) == newer  # left untouched


async def test_unwritable_path(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    path = blocker / "sub" / "db.sqlite"
    with pytest.raises(StorageError) as excinfo:
        await SQLiteDatabase.open(path)
    assert str(path) in str(excinfo.value)
    assert "Not a directory" in str(excinfo.value)


async def test_path_is_a_directory(tmp_path):
    with pytest.raises(StorageError) as excinfo:
        await SQLiteDatabase.open(tmp_path)
    assert str(tmp_path) in str(excinfo.value)
    assert "unable to open" in str(excinfo.value)


async def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.sqlite"
    path.write_bytes(b"this is certainly not an SQLite database file\n" * 100)
    with pytest.raises(StorageError) as excinfo:
        await SQLiteDatabase.open(path)
    assert str(path) in str(excinfo.value)
    assert "not a database" in str(excinfo.value)


async def test_read_only_database(tmp_path):
    path = tmp_path / "ro.sqlite"
    db = await SQLiteDatabase.open(path)
    await db.close()
    # Root ignores file modes, so make the connection itself read-only through a URI.
    ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    ro.isolation_level = None
    limiter = trio.CapacityLimiter(1)
    readonly = SQLiteDatabase(path, ro, limiter)
    try:
        with pytest.raises(StorageError) as excinfo:
            await readonly.for_host("h").keyval("s").set("u", {"v": 1})
        assert str(path) in str(excinfo.value)
        assert "readonly" in str(excinfo.value)
    finally:
        await readonly.close()


# -- factory ------------------------------------------------------------------------------------


async def test_open_database_factory(tmp_path):
    db = await open_database(tmp_path / "data")
    try:
        await db.for_host("h").keyval("s").set("u", {"v": 1})
    finally:
        await db.close()
    assert (tmp_path / "data" / "xmppd.sqlite").is_file()
    db = await open_database(tmp_path, dsn=str(tmp_path / "elsewhere.sqlite"))
    await db.close()
    assert (tmp_path / "elsewhere.sqlite").is_file()


async def test_open_database_unsupported_drivers(tmp_path):
    with pytest.raises(StorageError, match="not supported yet"):
        await open_database(tmp_path, driver="postgres", dsn="postgresql://localhost/test")
    with pytest.raises(StorageError, match="unknown storage driver"):
        await open_database(tmp_path, driver="mongo")
