"""SQLite driver: one database file shared by all virtual hosts.

Theory of operation: the database owns one `sqlite3` connection and a `CapacityLimiter(1)`.
Every sqlite3 call goes through `run`, i.e. `trio.to_thread.run_sync` under that limiter, so
the trio loop never blocks on disk and the connection is never used by two threads at once.
The connection is in autocommit mode (`isolation_level=None`): each write is one statement,
hence one transaction, committed (and fsynced, see `_configure`) before `set` returns.
The stores themselves are shared with the PostgreSQL driver (`sql.py`).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import trio

from xmppd.storage.base import StorageError
from xmppd.storage.migrations import LATEST_VERSION, Executor, upgrade
from xmppd.storage.sql import SQLStorage

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5_000

__all__ = ["LATEST_VERSION", "SQLiteDatabase"]


class SQLiteExecutor:
    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def rows(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        return self.conn.execute(sql, args).fetchall()

    def write(self, sql: str, args: Sequence[object] = ()) -> int:
        return self.conn.execute(sql, args).rowcount


class SQLiteDatabase:
    """An open SQLite database; `for_host` gives the per-host `Storage`."""

    __slots__ = ("path", "migrated_from", "spool_dir", "_conn", "_limiter")

    def __init__(self, path: Path, conn: sqlite3.Connection, limiter: trio.CapacityLimiter):
        self.path = path
        self.migrated_from = LATEST_VERSION  # the schema version found at open
        self.spool_dir: Path | None = path.parent / "spool"  # see spool.py
        self._conn: sqlite3.Connection | None = conn
        self._limiter = limiter

    @property
    def where(self) -> str:
        return str(self.path)

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, target: int = LATEST_VERSION
    ) -> SQLiteDatabase:
        """Open or create the file, then bring its schema up to date (or to `target`).

        Raises StorageError naming the path and the cause if the file cannot be created, is not
        a database, is not writable, or was written by a newer xmppd.
        """
        db_path = Path(path)
        limiter = trio.CapacityLimiter(1)
        conn, found = await trio.to_thread.run_sync(
            _connect_and_migrate, db_path, target, limiter=limiter
        )
        db = cls(db_path, conn, limiter)
        db.migrated_from = found
        return db

    def for_host(self, host: str) -> SQLStorage:
        return SQLStorage(self, host)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Under the limiter: waits for the operation in flight, never closes beneath it.
            await trio.to_thread.run_sync(conn.close, limiter=self._limiter)

    async def run(self, what: str, fn: Callable[[Executor], T]) -> T:
        """Run `fn(executor)` in the database's worker thread; sqlite errors -> StorageError."""
        return await self._run(what, lambda conn: fn(SQLiteExecutor(conn)))

    async def _run(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`run` with the raw connection (also for tests and maintenance)."""

        def call() -> T:
            conn = self._conn
            if conn is None:
                raise StorageError(f"database {self.path} is closed")
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                raise StorageError(f"database {self.path}: {what} failed: {exc}") from exc

        return await trio.to_thread.run_sync(call, limiter=self._limiter)


def _connect_and_migrate(path: Path, target: int) -> tuple[sqlite3.Connection, int]:
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
        found = _migrate(conn, path, target)
    except sqlite3.Error as exc:
        conn.close()
        raise StorageError(f"cannot open database {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn, found


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


def _migrate(conn: sqlite3.Connection, path: Path, target: int) -> int:
    # IMMEDIATE takes the write lock first, so two processes opening a fresh file at once
    # cannot both apply the same migration.
    conn.execute("BEGIN IMMEDIATE")
    try:
        found, _ = upgrade(SQLiteExecutor(conn), "sqlite", str(path), target)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
            conn.execute("ROLLBACK")
        raise
    return found
