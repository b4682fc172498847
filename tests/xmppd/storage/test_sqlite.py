"""SQLite-only behaviour: files, pragmas and the errors of a local database.

What both drivers share (the stores, migrations, durability across SIGKILL) is in the
parametrized suites beside this file.
"""

from __future__ import annotations

import sqlite3

import pytest
import trio

from xmppd.storage import StorageError, open_database
from xmppd.storage.sqlite import BUSY_TIMEOUT_MS, SQLiteDatabase


async def test_pragmas(tmp_path):
    db = await SQLiteDatabase.open(tmp_path / "p.sqlite")

    def pragmas(conn: sqlite3.Connection) -> tuple[str, int, int]:
        return (
            conn.execute("PRAGMA journal_mode").fetchone()[0],
            conn.execute("PRAGMA synchronous").fetchone()[0],
            conn.execute("PRAGMA busy_timeout").fetchone()[0],
        )

    try:
        assert await db._run("pragmas", pragmas) == ("wal", 2, BUSY_TIMEOUT_MS)  # 2 = FULL
    finally:
        await db.close()


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


async def test_open_database_unknown_driver(tmp_path):
    with pytest.raises(
        StorageError, match="unknown storage driver 'mongo'; known: sqlite, postgres"
    ):
        await open_database(tmp_path, driver="mongo")
