"""SQLite driver: one database file shared by all virtual hosts.

Theory of operation: the database owns one `sqlite3` connection and a `CapacityLimiter(1)`.
Every sqlite3 call goes through `_run`, i.e. `trio.to_thread.run_sync` under that limiter, so
the trio loop never blocks on disk and the connection is never used by two threads at once.
The connection is in autocommit mode (`isolation_level=None`): each write is one statement,
hence one transaction, committed (and fsynced, see `_configure`) before `set` returns.

The table shapes are shared with the future PostgreSQL driver, so column names that are
keywords there (`user`) are always quoted.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from xmppd.storage import StorageError
from xmppd.storage.base import Document

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5_000

# Numbered schema migrations, applied in order at open; index 0 is version 1. Never edit a
# released entry: append a new one.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE keyval (
            host TEXT NOT NULL, store TEXT NOT NULL, "user" TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (host, store, "user")
        ) WITHOUT ROWID""",
        """CREATE TABLE map (
            host TEXT NOT NULL, store TEXT NOT NULL, "user" TEXT NOT NULL, key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (host, store, "user", key)
        ) WITHOUT ROWID""",
    ],
]
LATEST_VERSION = len(MIGRATIONS)


def _encode(value: Document) -> str:
    if not isinstance(value, dict):
        raise TypeError(f"storage documents are JSON objects (dict), not {type(value).__name__}")
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _decode(text: str) -> Document:
    return json.loads(text)


class SQLiteDatabase:
    """An open SQLite database; `for_host` gives the per-host `Storage`."""

    __slots__ = ("path", "_conn", "_limiter")

    def __init__(self, path: Path, conn: sqlite3.Connection, limiter: trio.CapacityLimiter):
        self.path = path
        self._conn: sqlite3.Connection | None = conn
        self._limiter = limiter

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> SQLiteDatabase:
        """Open or create the file, then bring its schema up to date.

        Raises StorageError naming the path and the cause if the file cannot be created, is not
        a database, is not writable, or was written by a newer xmppd.
        """
        db_path = Path(path)
        limiter = trio.CapacityLimiter(1)
        conn = await trio.to_thread.run_sync(_connect_and_migrate, db_path, limiter=limiter)
        return cls(db_path, conn, limiter)

    def for_host(self, host: str) -> SQLiteStorage:
        return SQLiteStorage(self, host)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Under the limiter: waits for the operation in flight, never closes beneath it.
            await trio.to_thread.run_sync(conn.close, limiter=self._limiter)

    async def _run(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` in the database's worker thread; sqlite errors -> StorageError."""

        def call() -> T:
            conn = self._conn
            if conn is None:
                raise StorageError(f"database {self.path} is closed")
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                raise StorageError(f"database {self.path}: {what} failed: {exc}") from exc

        return await trio.to_thread.run_sync(call, limiter=self._limiter)


def _connect_and_migrate(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the directory for database {path}: {exc}") from exc
    try:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open database {path}: {exc}") from exc
    try:
        _configure(conn)
        _migrate(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise StorageError(f"cannot open database {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(conn: sqlite3.Connection) -> None:
    # Another process (e.g. `xmppd adduser` while the server runs) may hold the write lock
    # briefly: wait for it instead of failing at once.
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    # WAL: readers never block the writer and a commit is one sequential append.
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"cannot enable WAL journal mode (got {mode!r})")
    # In WAL mode synchronous=NORMAL only fsyncs at checkpoints, so a power loss can drop
    # commits we already acknowledged (a stored message, a changed password). FULL fsyncs the
    # WAL on every commit: once `set` returns, the write survives a crash or power loss.
    conn.execute("PRAGMA synchronous = FULL")


def _schema_version(conn: sqlite3.Connection) -> int:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def _migrate(conn: sqlite3.Connection) -> None:
    # IMMEDIATE takes the write lock first, so two processes opening a fresh file at once
    # cannot both apply the same migration.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _schema_version(conn)
        if version > LATEST_VERSION:
            raise StorageError(
                f"database schema version {version} is newer than this xmppd "
                f"(knows up to {LATEST_VERSION}); upgrade xmppd"
            )
        if version == 0:
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        for statements in MIGRATIONS[version:]:
            for sql in statements:
                conn.execute(sql)
        if version < LATEST_VERSION:
            conn.execute("UPDATE schema_version SET version = ?", (LATEST_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
            conn.execute("ROLLBACK")
        raise


class SQLiteStorage:
    """The `Storage` of one virtual host: every row it touches carries its host name."""

    __slots__ = ("db", "host")

    def __init__(self, db: SQLiteDatabase, host: str):
        self.db = db
        self.host = host

    def keyval(self, store: str) -> SQLiteKeyValueStore:
        return SQLiteKeyValueStore(self.db, self.host, store)

    def map(self, store: str) -> SQLiteMapStore:
        return SQLiteMapStore(self.db, self.host, store)

    async def close(self) -> None:
        """Nothing to release per host: the shared database is closed by its owner."""


class SQLiteKeyValueStore:
    __slots__ = ("_db", "_scope")

    def __init__(self, db: SQLiteDatabase, host: str, store: str):
        self._db = db
        self._scope = (host, store)

    async def get(self, user: str) -> Document | None:
        sql = 'SELECT value FROM keyval WHERE host = ? AND store = ? AND "user" = ?'
        args = (*self._scope, user)
        row = await self._db._run("keyval get", lambda c: c.execute(sql, args).fetchone())
        return None if row is None else _decode(row[0])

    async def set(self, user: str, value: Document | None) -> None:
        if value is None:
            sql = 'DELETE FROM keyval WHERE host = ? AND store = ? AND "user" = ?'
            args: tuple[str, ...] = (*self._scope, user)
        else:
            sql = (
                'INSERT INTO keyval (host, store, "user", value) VALUES (?, ?, ?, ?) '
                'ON CONFLICT (host, store, "user") DO UPDATE SET value = excluded.value'
            )
            args = (*self._scope, user, _encode(value))
        await self._db._run("keyval set", lambda c: c.execute(sql, args))

    async def users(self) -> list[str]:
        sql = 'SELECT "user" FROM keyval WHERE host = ? AND store = ? ORDER BY "user"'
        rows = await self._db._run("keyval users", lambda c: c.execute(sql, self._scope).fetchall())
        return [row[0] for row in rows]


class SQLiteMapStore:
    __slots__ = ("_db", "_scope")

    def __init__(self, db: SQLiteDatabase, host: str, store: str):
        self._db = db
        self._scope = (host, store)

    async def get(self, user: str, key: str) -> Document | None:
        sql = 'SELECT value FROM map WHERE host = ? AND store = ? AND "user" = ? AND key = ?'
        args = (*self._scope, user, key)
        row = await self._db._run("map get", lambda c: c.execute(sql, args).fetchone())
        return None if row is None else _decode(row[0])

    async def set(self, user: str, key: str, value: Document | None) -> None:
        if value is None:
            sql = 'DELETE FROM map WHERE host = ? AND store = ? AND "user" = ? AND key = ?'
            args: tuple[str, ...] = (*self._scope, user, key)
        else:
            sql = (
                'INSERT INTO map (host, store, "user", key, value) VALUES (?, ?, ?, ?, ?) '
                'ON CONFLICT (host, store, "user", key) DO UPDATE SET value = excluded.value'
            )
            args = (*self._scope, user, key, _encode(value))
        await self._db._run("map set", lambda c: c.execute(sql, args))

    async def get_all(self, user: str) -> dict[str, Document]:
        sql = 'SELECT key, value FROM map WHERE host = ? AND store = ? AND "user" = ? ORDER BY key'
        args = (*self._scope, user)
        rows: list[Any] = await self._db._run(
            "map get_all", lambda c: c.execute(sql, args).fetchall()
        )
        return {key: _decode(value) for key, value in rows}

    async def delete_user(self, user: str) -> None:
        sql = 'DELETE FROM map WHERE host = ? AND store = ? AND "user" = ?'
        args = (*self._scope, user)
        await self._db._run("map delete_user", lambda c: c.execute(sql, args))
